/* dlopen(RTLD_NOW | RTLD_LOCAL): a missing symbol fails here, not mid-request, and plugins
 * cannot see each other. The descriptor is checked field by field before init runs. */
#include "loader.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The descriptor size of ABI 1.0: a plugin claiming less is malformed. */
#define DESC_MIN_SIZE (offsetof(compass_plugin_desc, ops) + sizeof(void *))

static int lfail(compass_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lfail(compass_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *cps_plugin_kind_name(int kind)
{
    switch (kind) {
    case COMPASS_PLUGIN_PROVIDER: return "provider";
    case COMPASS_PLUGIN_ROUTER: return "router";
    case COMPASS_PLUGIN_PATTERN: return "pattern";
    default: return "unknown";
    }
}

static int valid_plugin_name(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Checks the kind's ops table: present, sized, with every required hook. */
static int check_ops(const char *path, const compass_plugin_desc *d, compass_err *err)
{
    const char *missing = NULL;
    size_t size = 0, min = 0;
    switch (d->kind) {
    case COMPASS_PLUGIN_PROVIDER: {
        const compass_provider_ops *o = d->ops.provider;
        if (!o)
            break;
        size = o->size;
        min = offsetof(compass_provider_ops, classify_error) + sizeof(o->classify_error);
        if (size < min)
            break;
        if (!o->instance_new)
            missing = "instance_new";
        else if (!o->instance_free)
            missing = "instance_free";
        else if (size >= offsetof(compass_provider_ops, local_call) + sizeof(o->local_call) &&
                 o->local_call)
            missing = NULL; /* in-process providers need no HTTP hooks */
        else if (!o->build_request)
            missing = "build_request";
        else if (!o->parse_response)
            missing = "parse_response";
        else if (!o->parse_stream_event)
            missing = "parse_stream_event";
        else if (!o->classify_error)
            missing = "classify_error";
        break;
    }
    case COMPASS_PLUGIN_ROUTER: {
        const compass_router_ops *o = d->ops.router;
        if (!o)
            break;
        size = o->size;
        min = sizeof(compass_router_ops);
        if (size < min)
            break;
        if (!o->instance_new)
            missing = "instance_new";
        else if (!o->instance_free)
            missing = "instance_free";
        else if (!o->rank)
            missing = "rank";
        break;
    }
    case COMPASS_PLUGIN_PATTERN: {
        const compass_pattern_ops *o = d->ops.pattern;
        if (!o)
            break;
        size = o->size;
        min = sizeof(compass_pattern_ops);
        if (size < min)
            break;
        if (!o->instance_new)
            missing = "instance_new";
        else if (!o->instance_free)
            missing = "instance_free";
        else if (!o->on_start)
            missing = "on_start";
        else if (!o->on_step)
            missing = "on_step";
        break;
    }
    }
    if (!d->ops.any)
        return lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s' has no %s ops table", path, d->name,
                     cps_plugin_kind_name(d->kind));
    if (size < min)
        return lfail(err, COMPASS_EPLUGIN,
                     "%s: plugin '%s': %s ops table size %zu is smaller than ABI %d.0's %zu",
                     path, d->name, cps_plugin_kind_name(d->kind), size, COMPASS_ABI_MAJOR, min);
    if (missing)
        return lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s': required %s op '%s' is NULL", path,
                     d->name, cps_plugin_kind_name(d->kind), missing);
    return 0;
}

int cps_plugin_load(const char *path, const char *expect_name, int kind,
                    const compass_host *host_tmpl, void *owner, cps_plugin **out,
                    compass_err *err)
{
    *out = NULL;
    dlerror();
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *e = dlerror();
        return lfail(err, COMPASS_EPLUGIN, "%s: cannot load: %s", path, e ? e : "unknown error");
    }
    compass_plugin_entry_fn entry = NULL;
    void *sym = dlsym(dl, COMPASS_PLUGIN_ENTRY_SYMBOL);
    memcpy(&entry, &sym, sizeof(entry));
    int rc;
    if (!entry) {
        rc = lfail(err, COMPASS_EPLUGIN,
                   "%s: no entry symbol '%s' (a compass plugin exports it with "
                   "COMPASS_PLUGIN_DEFINE)",
                   path, COMPASS_PLUGIN_ENTRY_SYMBOL);
        goto fail;
    }
    const compass_plugin_desc *d = entry();
    if (!d) {
        rc = lfail(err, COMPASS_EPLUGIN, "%s: %s() returned NULL", path,
                   COMPASS_PLUGIN_ENTRY_SYMBOL);
        goto fail;
    }
    if (d->abi_major != COMPASS_ABI_MAJOR) {
        rc = lfail(err, COMPASS_EABI,
                   "%s: built against plugin ABI %u.%u, this host speaks ABI %d.%d: rebuild the "
                   "plugin against an SDK with ABI %d.x (sdk/compass/plugin.h)",
                   path, d->abi_major, d->abi_minor, COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR,
                   COMPASS_ABI_MAJOR);
        goto fail;
    }
    if (d->abi_minor > COMPASS_ABI_MINOR) {
        rc = lfail(err, COMPASS_EABI,
                   "%s: built against plugin ABI %u.%u, newer than this host's %d.%d: upgrade "
                   "compass or rebuild the plugin against ABI %d.%d",
                   path, d->abi_major, d->abi_minor, COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR,
                   COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR);
        goto fail;
    }
    if (d->size < DESC_MIN_SIZE) {
        rc = lfail(err, COMPASS_EABI, "%s: descriptor size %zu is smaller than ABI %d.0's %zu",
                   path, d->size, COMPASS_ABI_MAJOR, (size_t)DESC_MIN_SIZE);
        goto fail;
    }
    if (d->kind != COMPASS_PLUGIN_PROVIDER && d->kind != COMPASS_PLUGIN_ROUTER &&
        d->kind != COMPASS_PLUGIN_PATTERN) {
        rc = lfail(err, COMPASS_EPLUGIN,
                   "%s: unknown plugin kind %d (expected provider, router or pattern)", path,
                   d->kind);
        goto fail;
    }
    if (!valid_plugin_name(d->name)) {
        rc = lfail(err, COMPASS_EPLUGIN, "%s: plugin name '%s' is not [a-z0-9_-]{1,64}", path,
                   d->name ? d->name : "(null)");
        goto fail;
    }
    if (expect_name && strcmp(expect_name, d->name)) {
        rc = lfail(err, COMPASS_EPLUGIN, "%s: the plugin calls itself '%s', but the config asks "
                   "for '%s'", path, d->name, expect_name);
        goto fail;
    }
    if (kind && d->kind != kind) {
        rc = lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s' is a %s plugin, but is used as a %s",
                   path, d->name, cps_plugin_kind_name(d->kind), cps_plugin_kind_name(kind));
        goto fail;
    }
    if (d->options_size == 0 && d->options && d->options->name) {
        rc = lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s' declares options but options_size 0",
                   path, d->name);
        goto fail;
    }
    for (const compass_option *o = d->options; o && o->name; o++) {
        size_t w = o->type == COMPASS_OPT_STRING ? sizeof(char *)
                   : o->type == COMPASS_OPT_INT  ? sizeof(int64_t)
                   : o->type == COMPASS_OPT_BOOL ? sizeof(int)
                                                 : sizeof(double);
        if (o->type < COMPASS_OPT_STRING || o->type > COMPASS_OPT_DOUBLE ||
            o->offset + w > d->options_size) {
            rc = lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s': option '%s' has a bad type or "
                       "offset", path, d->name, o->name);
            goto fail;
        }
    }
    if ((rc = check_ops(path, d, err)))
        goto fail;

    cps_plugin *p = calloc(1, sizeof(*p));
    if (!p) {
        rc = lfail(err, COMPASS_ENOMEM, "out of memory");
        goto fail;
    }
    p->name = strdup(d->name);
    p->path = strdup(path);
    if (!p->name || !p->path) {
        free(p->name);
        free(p->path);
        free(p);
        rc = lfail(err, COMPASS_ENOMEM, "out of memory");
        goto fail;
    }
    p->dl = dl;
    p->desc = d;
    p->owner = owner;
    p->host = *host_tmpl;
    p->host.host_ctx = p;
    p->host.plugin_name = p->name;
    p->refs = 1;
    if (d->init) {
        compass_err ierr;
        memset(&ierr, 0, sizeof(ierr));
        int irc = d->init(&p->host, &ierr);
        if (irc) {
            lfail(err, COMPASS_EPLUGIN, "%s: plugin '%s' init failed: %s", path, d->name,
                  ierr.msg[0] ? ierr.msg : "(no message)");
            free(p->name);
            free(p->path);
            free(p);
            dlclose(dl);
            return COMPASS_EPLUGIN;
        }
    }
    p->inited = 1;
    *out = p;
    return 0;
fail:
    dlclose(dl);
    return rc;
}

int cps_plugin_find(const char *const *dirs, size_t n_dirs, const char *name, int kind,
                    const compass_host *host_tmpl, void *owner, cps_plugin **out,
                    compass_err *err)
{
    char path[4096];
    struct stat st;
    if (!valid_plugin_name(name))
        return lfail(err, COMPASS_ECONFIG, "plugin name '%s' is not [a-z0-9_-]{1,64}", name);
    for (size_t i = 0; i < n_dirs; i++) {
        int n = snprintf(path, sizeof(path), "%s/%s.so", dirs[i], name);
        if (n < 0 || (size_t)n >= sizeof(path))
            continue;
        if (stat(path, &st) == 0)
            return cps_plugin_load(path, name, kind, host_tmpl, owner, out, err);
    }
    char list[400] = "";
    size_t off = 0;
    for (size_t i = 0; i < n_dirs && off < sizeof(list); i++) {
        int n = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "", dirs[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    return lfail(err, COMPASS_ENOTFOUND, "%s plugin '%s' not found: no %s.so in %s",
                 cps_plugin_kind_name(kind), name, name, n_dirs ? list : "(no plugin paths)");
}

void cps_plugin_unload(cps_plugin *p)
{
    if (!p)
        return;
    if (p->inited && p->desc->fini)
        p->desc->fini();
    dlclose(p->dl);
    free(p->name);
    free(p->path);
    free(p);
}
