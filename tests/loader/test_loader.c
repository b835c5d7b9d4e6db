/* cps_plugin_load / cps_plugin_find against one fixture .so per defect: each refusal carries
 * the file path and its exact reason, nothing stays loaded, and no plugin code (init) runs
 * before the descriptor passed every check. */
#include <criterion/criterion.h>

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader.h"

#define FIX LOADER_FIXTURE_DIR

static char marker_dir[256];
static compass_host host_tmpl;

static void setup(void)
{
    snprintf(marker_dir, sizeof(marker_dir), "/tmp/compass-loader-XXXXXX");
    cr_assert_not_null(mkdtemp(marker_dir));
    setenv("COMPASS_TEST_MARKER_DIR", marker_dir, 1);
    memset(&host_tmpl, 0, sizeof(host_tmpl));
    host_tmpl.size = sizeof(host_tmpl);
    host_tmpl.abi_major = COMPASS_ABI_MAJOR;
    host_tmpl.abi_minor = COMPASS_ABI_MINOR;
}

static void marker_path(const char *fixture, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.marker", marker_dir, fixture);
}

static void teardown(void)
{
    static const char *const names[] = {
        "no_entry", "null_desc", "wrong_major", "newer_minor", "short_size", "unknown_kind",
        "bad_name", "other_name", "missing_op", "small_ops", "router_no_rank", "init_fails",
        "unresolved", "good_provider", "good_http_provider", "good_router", "no_ops",
        "options_no_size", "bad_option", NULL};
    char p[512];
    for (const char *const *n = names; *n; n++) {
        marker_path(*n, p, sizeof(p));
        unlink(p);
    }
    rmdir(marker_dir);
}

TestSuite(loader, .init = setup, .fini = teardown);

/* Whether the fixture's init ran (it writes a marker file). */
static int init_ran(const char *fixture)
{
    char p[512];
    marker_path(fixture, p, sizeof(p));
    return access(p, F_OK) == 0;
}

static void fixture_path(const char *fixture, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.so", FIX, fixture);
}

/* Whether the object is still mapped in this process. */
static int still_loaded(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

/* Loads a fixture that must be refused with code and exactly the message want (the path is
 * prepended as "<path>: "); checks that init never ran and nothing stays loaded. */
static void expect_refused(const char *fixture, int kind, int code, const char *want)
{
    char path[512], full[1024];
    cps_plugin *p = (cps_plugin *)0x1;
    compass_err err;
    memset(&err, 0, sizeof(err));
    fixture_path(fixture, path, sizeof(path));
    cr_assert_eq(access(path, R_OK), 0, "fixture %s was not built", path);
    int rc = cps_plugin_load(path, fixture, kind, &host_tmpl, NULL, &p, &err);
    cr_assert_eq(rc, code, "%s: rc %d, want %d (%s)", fixture, rc, code, err.msg);
    cr_assert_eq(err.code, code);
    cr_assert_null(p, "%s: *out must be NULL after a refusal", fixture);
    snprintf(full, sizeof(full), "%s: %s", path, want);
    cr_assert_str_eq(err.msg, full);
    cr_assert_not(init_ran(fixture), "%s: init ran although the descriptor was refused",
                  fixture);
    cr_assert_not(still_loaded(path), "%s: still loaded after the refusal", fixture);
}

Test(loader, refuses_object_without_entry_symbol)
{
    expect_refused("no_entry", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "no entry symbol 'compass_plugin_entry' (a compass plugin exports it with "
                   "COMPASS_PLUGIN_DEFINE)");
}

Test(loader, refuses_entry_returning_null)
{
    expect_refused("null_desc", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "compass_plugin_entry() returned NULL");
}

Test(loader, refuses_other_major_and_names_sdk_to_rebuild_against)
{
    char want[512];
    snprintf(want, sizeof(want),
             "built against plugin ABI %d.%d, this host speaks ABI %d.%d: rebuild the plugin "
             "against an SDK with ABI %d.x (sdk/compass/plugin.h)",
             COMPASS_ABI_MAJOR + 1, COMPASS_ABI_MINOR, COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR,
             COMPASS_ABI_MAJOR);
    expect_refused("wrong_major", COMPASS_PLUGIN_PROVIDER, COMPASS_EABI, want);
}

Test(loader, refuses_newer_minor)
{
    char want[512];
    snprintf(want, sizeof(want),
             "built against plugin ABI %d.%d, newer than this host's %d.%d: upgrade compass or "
             "rebuild the plugin against ABI %d.%d",
             COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR + 1, COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR,
             COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR);
    expect_refused("newer_minor", COMPASS_PLUGIN_PROVIDER, COMPASS_EABI, want);
}

Test(loader, refuses_descriptor_smaller_than_abi_1_0)
{
    char want[512];
    snprintf(want, sizeof(want), "descriptor size %zu is smaller than ABI %d.0's %zu",
             offsetof(compass_plugin_desc, kind), COMPASS_ABI_MAJOR,
             offsetof(compass_plugin_desc, ops) + sizeof(void *));
    expect_refused("short_size", COMPASS_PLUGIN_PROVIDER, COMPASS_EABI, want);
}

Test(loader, refuses_unknown_kind)
{
    expect_refused("unknown_kind", 0, COMPASS_EPLUGIN,
                   "unknown plugin kind 99 (expected provider, router or pattern)");
}

Test(loader, refuses_name_outside_charset)
{
    expect_refused("bad_name", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin name 'Bad Name' is not [a-z0-9_-]{1,64}");
}

Test(loader, refuses_name_differing_from_config_name)
{
    expect_refused("other_name", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "the plugin calls itself 'someone_else', but the config asks for "
                   "'other_name'");
}

Test(loader, refuses_provider_missing_required_op)
{
    expect_refused("missing_op", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin 'missing_op': required provider op 'parse_response' is NULL");
}

Test(loader, refuses_provider_ops_table_too_small)
{
    char want[512];
    snprintf(want, sizeof(want),
             "plugin 'small_ops': provider ops table size %zu is smaller than ABI %d.0's %zu",
             offsetof(compass_provider_ops, parse_response), COMPASS_ABI_MAJOR,
             offsetof(compass_provider_ops, classify_error) + sizeof(void (*)(void)));
    expect_refused("small_ops", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN, want);
}

Test(loader, refuses_router_without_rank)
{
    expect_refused("router_no_rank", COMPASS_PLUGIN_ROUTER, COMPASS_EPLUGIN,
                   "plugin 'router_no_rank': required router op 'rank' is NULL");
}

Test(loader, refuses_descriptor_without_ops_table)
{
    expect_refused("no_ops", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin 'no_ops' has no provider ops table");
}

Test(loader, refuses_options_without_options_size)
{
    expect_refused("options_no_size", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin 'options_no_size' declares options but options_size 0");
}

Test(loader, refuses_option_written_past_options_size)
{
    expect_refused("bad_option", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin 'bad_option': option 'label' has a bad type or offset");
}

Test(loader, refuses_router_requested_as_provider)
{
    expect_refused("good_router", COMPASS_PLUGIN_PROVIDER, COMPASS_EPLUGIN,
                   "plugin 'good_router' is a router plugin, but is used as a provider");
}

Test(loader, refuses_provider_requested_as_router)
{
    expect_refused("good_provider", COMPASS_PLUGIN_ROUTER, COMPASS_EPLUGIN,
                   "plugin 'good_provider' is a provider plugin, but is used as a router");
}

Test(loader, refuses_unresolved_symbol_at_load_time)
{
    char path[512], prefix[600];
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    fixture_path("unresolved", path, sizeof(path));
    cr_assert_eq(access(path, R_OK), 0, "fixture %s was not built", path);
    int rc = cps_plugin_load(path, "unresolved", COMPASS_PLUGIN_PROVIDER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "rc %d (%s)", rc, err.msg);
    cr_assert_null(p);
    snprintf(prefix, sizeof(prefix), "%s: cannot load: ", path);
    cr_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0, "message: %s", err.msg);
    cr_assert(strstr(err.msg, "undefined symbol: compass_fixture_no_such_function"),
              "message does not name the missing symbol: %s", err.msg);
    cr_assert_not(init_ran("unresolved"));
}

Test(loader, failing_init_is_reported_with_its_message_and_unloads)
{
    char path[512], want[700];
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    fixture_path("init_fails", path, sizeof(path));
    int rc = cps_plugin_load(path, "init_fails", COMPASS_PLUGIN_PROVIDER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "rc %d (%s)", rc, err.msg);
    cr_assert_eq(err.code, COMPASS_EPLUGIN);
    cr_assert_null(p);
    snprintf(want, sizeof(want), "%s: plugin 'init_fails' init failed: no license", path);
    cr_assert_str_eq(err.msg, want);
    /* init did run (the descriptor was fine): the refusal came from init itself */
    cr_assert(init_ran("init_fails"));
    cr_assert_not(still_loaded(path));
}

Test(loader, loads_good_provider_and_runs_init_with_its_own_host_table)
{
    char path[512], buf[128] = "";
    cps_plugin *p = NULL;
    compass_err err;
    int owner;
    memset(&err, 0, sizeof(err));
    fixture_path("good_provider", path, sizeof(path));
    int rc = cps_plugin_load(path, "good_provider", COMPASS_PLUGIN_PROVIDER, &host_tmpl, &owner,
                             &p, &err);
    cr_assert_eq(rc, 0, "rc %d (%s)", rc, err.msg);
    cr_assert_not_null(p);
    cr_assert_str_eq(p->name, "good_provider");
    cr_assert_str_eq(p->path, path);
    cr_assert_eq(p->desc->kind, COMPASS_PLUGIN_PROVIDER);
    cr_assert_eq(p->owner, &owner);
    cr_assert_eq(p->inited, 1);
    cr_assert_eq(p->host.host_ctx, p);
    cr_assert_str_eq(p->host.plugin_name, "good_provider");
    cr_assert_eq(p->host.size, sizeof(compass_host));
    /* init saw plugin_name and host_ctx set */
    char mp[512];
    marker_path("good_provider", mp, sizeof(mp));
    FILE *f = fopen(mp, "r");
    cr_assert_not_null(f, "init of an accepted plugin did not run");
    cr_assert_not_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    cr_assert_str_eq(buf, "good_provider ctx");
    cr_assert(still_loaded(path));
    cps_plugin_unload(p);
    cr_assert_not(still_loaded(path));
}

Test(loader, loads_http_provider_with_every_required_op)
{
    char path[512];
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    fixture_path("good_http_provider", path, sizeof(path));
    int rc = cps_plugin_load(path, NULL, 0, &host_tmpl, NULL, &p, &err);
    cr_assert_eq(rc, 0, "rc %d (%s)", rc, err.msg);
    cr_assert_str_eq(p->name, "good_http_provider");
    cr_assert(init_ran("good_http_provider"));
    cps_plugin_unload(p);
}

Test(loader, loads_good_router)
{
    char path[512];
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    fixture_path("good_router", path, sizeof(path));
    int rc = cps_plugin_load(path, "good_router", COMPASS_PLUGIN_ROUTER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, 0, "rc %d (%s)", rc, err.msg);
    cr_assert_eq(p->desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_not_null(p->desc->ops.router->rank);
    cr_assert(init_ran("good_router"));
    cps_plugin_unload(p);
}

Test(loader, missing_file_is_refused_with_path_and_dlerror)
{
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_load(FIX "/does_not_exist.so", NULL, 0, &host_tmpl, NULL, &p, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN);
    cr_assert_null(p);
    cr_assert(strncmp(err.msg, FIX "/does_not_exist.so: cannot load: ",
                      strlen(FIX "/does_not_exist.so: cannot load: ")) == 0,
              "message: %s", err.msg);
    cr_assert(strstr(err.msg, "No such file or directory"), "message: %s", err.msg);
}

Test(loader, find_reports_not_found_listing_every_dir)
{
    const char *dirs[] = {"/nonexistent/compass-a", FIX};
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_find(dirs, 2, "absent", COMPASS_PLUGIN_PROVIDER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, COMPASS_ENOTFOUND);
    cr_assert_eq(err.code, COMPASS_ENOTFOUND);
    cr_assert_null(p);
    cr_assert_str_eq(err.msg, "provider plugin 'absent' not found: no absent.so in "
                              "/nonexistent/compass-a, " FIX);
}

Test(loader, find_with_no_dirs_says_so)
{
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_find(NULL, 0, "absent", COMPASS_PLUGIN_ROUTER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, COMPASS_ENOTFOUND);
    cr_assert_str_eq(err.msg, "router plugin 'absent' not found: no absent.so in (no plugin "
                              "paths)");
}

Test(loader, find_refuses_name_that_could_escape_the_dirs)
{
    const char *dirs[] = {FIX};
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_find(dirs, 1, "../fixtures/good_router", COMPASS_PLUGIN_ROUTER,
                             &host_tmpl, NULL, &p, &err);
    cr_assert_eq(rc, COMPASS_ECONFIG);
    cr_assert_null(p);
    cr_assert_str_eq(err.msg, "plugin name '../fixtures/good_router' is not [a-z0-9_-]{1,64}");
}

Test(loader, find_loads_from_the_first_dir_that_has_it)
{
    const char *dirs[] = {"/nonexistent/compass-a", FIX};
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_find(dirs, 2, "good_router", COMPASS_PLUGIN_ROUTER, &host_tmpl, NULL, &p,
                             &err);
    cr_assert_eq(rc, 0, "rc %d (%s)", rc, err.msg);
    cr_assert_str_eq(p->path, FIX "/good_router.so");
    cps_plugin_unload(p);
}

Test(loader, find_passes_kind_mismatch_through)
{
    const char *dirs[] = {FIX};
    cps_plugin *p = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_plugin_find(dirs, 1, "good_router", COMPASS_PLUGIN_PROVIDER, &host_tmpl, NULL,
                             &p, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN);
    cr_assert_str_eq(err.msg, FIX "/good_router.so: plugin 'good_router' is a router plugin, "
                                  "but is used as a provider");
    cr_assert_not(init_ran("good_router"));
}

Test(loader, find_refuses_name_longer_than_64)
{
    const char *dirs[] = {FIX};
    char name[70];
    cps_plugin *p = NULL;
    compass_err err, want;
    memset(&err, 0, sizeof(err));
    memset(name, 'a', 65);
    name[65] = '\0';
    int rc = cps_plugin_find(dirs, 1, name, COMPASS_PLUGIN_PROVIDER, &host_tmpl, NULL, &p, &err);
    cr_assert_eq(rc, COMPASS_ECONFIG);
    snprintf(want.msg, sizeof(want.msg), "plugin name '%s' is not [a-z0-9_-]{1,64}", name);
    cr_assert_str_eq(err.msg, want.msg);
}

Test(loader, kind_names_read_provider_router_pattern_or_unknown)
{
    cr_assert_str_eq(cps_plugin_kind_name(COMPASS_PLUGIN_PROVIDER), "provider");
    cr_assert_str_eq(cps_plugin_kind_name(COMPASS_PLUGIN_ROUTER), "router");
    cr_assert_str_eq(cps_plugin_kind_name(COMPASS_PLUGIN_PATTERN), "pattern");
    cr_assert_str_eq(cps_plugin_kind_name(99), "unknown");
}
