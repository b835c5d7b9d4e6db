#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const compass_option *cps_opt_find(const compass_option *tab, const char *name)
{
    for (; tab && tab->name; tab++)
        if (!strcmp(tab->name, name))
            return tab;
    return NULL;
}

size_t cps_opt_count(const compass_option *tab)
{
    size_t n = 0;
    for (; tab && tab->name; tab++)
        n++;
    return n;
}

const char *cps_opt_type_name(int type)
{
    switch (type) {
    case COMPASS_OPT_STRING: return "string";
    case COMPASS_OPT_INT: return "integer";
    case COMPASS_OPT_BOOL: return "boolean";
    case COMPASS_OPT_DOUBLE: return "number";
    default: return "unknown";
    }
}

int cps_opt_set_text(cps_arena *a, const compass_option *o, void *base, const char *text,
                     compass_err *err)
{
    char *dst = (char *)base + o->offset;
    char *end = NULL;
    switch (o->type) {
    case COMPASS_OPT_STRING: {
        char *s = cps_arena_strndup(a, text, strlen(text));
        if (!s)
            return compass_err_set(err, COMPASS_ENOMEM, "out of memory");
        memcpy(dst, &s, sizeof(s));
        return 0;
    }
    case COMPASS_OPT_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end) {
            if (err) {
                snprintf(err->msg, sizeof(err->msg), "option '%s': '%s' is not an integer",
                         o->name, text);
                err->code = COMPASS_ECONFIG;
            }
            return COMPASS_ECONFIG;
        }
        int64_t x = v;
        memcpy(dst, &x, sizeof(x));
        return 0;
    }
    case COMPASS_OPT_BOOL: {
        int x;
        if (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes"))
            x = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no"))
            x = 0;
        else {
            if (err) {
                snprintf(err->msg, sizeof(err->msg), "option '%s': '%s' is not a boolean",
                         o->name, text);
                err->code = COMPASS_ECONFIG;
            }
            return COMPASS_ECONFIG;
        }
        memcpy(dst, &x, sizeof(x));
        return 0;
    }
    case COMPASS_OPT_DOUBLE: {
        errno = 0;
        double d = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(d)) {
            if (err) {
                snprintf(err->msg, sizeof(err->msg), "option '%s': '%s' is not a number",
                         o->name, text);
                err->code = COMPASS_ECONFIG;
            }
            return COMPASS_ECONFIG;
        }
        memcpy(dst, &d, sizeof(d));
        return 0;
    }
    default:
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "option '%s' has an unknown type %d", o->name,
                     o->type);
            err->code = COMPASS_EPLUGIN;
        }
        return COMPASS_EPLUGIN;
    }
}

int cps_opt_apply_defaults(cps_arena *a, const compass_option *tab, void *base,
                           compass_err *err)
{
    for (; tab && tab->name; tab++) {
        if (!tab->default_value)
            continue;
        int rc = cps_opt_set_text(a, tab, base, tab->default_value, err);
        if (rc)
            return rc;
    }
    return 0;
}
