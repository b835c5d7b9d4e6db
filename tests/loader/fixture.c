/* One loader fixture per defect, selected by FIX_* compile definitions (see CMakeLists.txt).
 * Every fixture's init writes "$COMPASS_TEST_MARKER_DIR/<FIX_NAME>.marker" holding the name the
 * host gave it, so a test can tell whether init ran: it must not for a rejected fixture. */
#include <compass/plugin.h>

#include <stdio.h>
#include <stdlib.h>

#ifndef FIX_NAME
#error "FIX_NAME must name the fixture"
#endif

#ifndef FIX_DESC_NAME
#define FIX_DESC_NAME FIX_NAME
#endif
#ifndef FIX_KIND
#ifdef FIX_ROUTER
#define FIX_KIND COMPASS_PLUGIN_ROUTER
#else
#define FIX_KIND COMPASS_PLUGIN_PROVIDER
#endif
#endif
#ifndef FIX_ABI_MAJOR
#define FIX_ABI_MAJOR COMPASS_ABI_MAJOR
#endif
#ifndef FIX_ABI_MINOR
#define FIX_ABI_MINOR COMPASS_ABI_MINOR
#endif
#ifndef FIX_DESC_SIZE
#define FIX_DESC_SIZE sizeof(compass_plugin_desc)
#endif

#ifdef FIX_UNRESOLVED
/* Defined nowhere: dlopen(RTLD_NOW) must refuse the object. */
extern int compass_fixture_no_such_function(void);
#endif

static int fix_init(const compass_host *h, compass_err *err)
{
    const char *dir = getenv("COMPASS_TEST_MARKER_DIR");
#ifdef FIX_UNRESOLVED
    if (compass_fixture_no_such_function())
        return COMPASS_EPLUGIN;
#endif
    if (dir) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s.marker", dir, FIX_NAME);
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(h && h->plugin_name ? h->plugin_name : "(no plugin_name)", f);
            fputs(h && h->host_ctx ? " ctx" : " noctx", f);
            fclose(f);
        }
    }
#ifdef FIX_INIT_FAILS
    return compass_err_set(err, COMPASS_EPLUGIN, "no license");
#else
    (void)err;
    return COMPASS_OK;
#endif
}

static int fix_instance_new(const compass_host *h, const compass_instance_info *info,
                            void **inst, compass_err *err)
{
    (void)h;
    (void)info;
    (void)err;
    *inst = NULL;
    return COMPASS_OK;
}

static void fix_instance_free(void *inst)
{
    (void)inst;
}

static int fix_build_request(void *inst, compass_req *req, const compass_chat_request *in,
                             compass_http_request *out, compass_err *err)
{
    (void)inst, (void)req, (void)in, (void)out, (void)err;
    return COMPASS_EUNSUPPORTED;
}

#ifndef FIX_NO_PARSE_RESPONSE
static int fix_parse_response(void *inst, compass_req *req, const compass_http_response *resp,
                              compass_chat_response *out, compass_upstream_error *uerr,
                              compass_err *err)
{
    (void)inst, (void)req, (void)resp, (void)out, (void)uerr, (void)err;
    return COMPASS_EPARSE;
}
#endif

static int fix_parse_stream_event(void *inst, compass_req *req, const compass_stream_event *ev,
                                  compass_upstream_error *uerr, compass_err *err)
{
    (void)inst, (void)req, (void)ev, (void)uerr, (void)err;
    return COMPASS_EPARSE;
}

static void fix_classify_error(void *inst, compass_req *req, const compass_http_response *resp,
                               compass_upstream_error *uerr)
{
    (void)inst, (void)req;
    compass_uerr_init(uerr, compass_outcome_from_status(resp->status), resp->status);
}

static int fix_local_call(void *inst, compass_req *req, const compass_chat_request *in,
                          compass_local_result *out, compass_err *err)
{
    (void)inst, (void)req, (void)in, (void)err;
    out->response.has_content = 1;
    out->response.content = compass_str_c("fixture");
    out->response.finish_reason = COMPASS_FINISH_STOP;
    return COMPASS_OK;
}

static int fix_rank(void *inst, compass_req *req, const compass_route_request *rr,
                    const compass_candidate *const *cands, size_t n, size_t *order,
                    size_t *n_order, compass_err *err)
{
    (void)inst, (void)req, (void)rr, (void)cands, (void)err;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    *n_order = n;
    return COMPASS_OK;
}

#ifndef FIX_PROVIDER_OPS_SIZE
#define FIX_PROVIDER_OPS_SIZE sizeof(compass_provider_ops)
#endif

static const compass_provider_ops fix_provider_ops = {
    .size = FIX_PROVIDER_OPS_SIZE,
    .instance_new = fix_instance_new,
    .instance_free = fix_instance_free,
#ifdef FIX_LOCAL_ONLY
    .local_call = fix_local_call,
#else
    .build_request = fix_build_request,
#ifndef FIX_NO_PARSE_RESPONSE
    .parse_response = fix_parse_response,
#endif
    .parse_stream_event = fix_parse_stream_event,
    .classify_error = fix_classify_error,
#endif
};

static const compass_router_ops fix_router_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = fix_instance_new,
    .instance_free = fix_instance_free,
#ifndef FIX_NO_RANK
    .rank = fix_rank,
#endif
};

typedef struct fix_options {
    int64_t level;
    const char *label;
} fix_options;

#ifndef FIX_OPTIONS_SIZE
#define FIX_OPTIONS_SIZE sizeof(fix_options)
#endif
#ifndef FIX_LABEL_OFFSET
#define FIX_LABEL_OFFSET offsetof(fix_options, label)
#endif

static const compass_option fix_option_table[] = {
    {"level", COMPASS_OPT_INT, "1", 0, offsetof(fix_options, level), "a number"},
    {"label", COMPASS_OPT_STRING, NULL, 0, FIX_LABEL_OFFSET, "a text"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const compass_plugin_desc fix_desc = {
    .abi_major = FIX_ABI_MAJOR,
    .abi_minor = FIX_ABI_MINOR,
    .size = FIX_DESC_SIZE,
    .kind = FIX_KIND,
    .name = FIX_DESC_NAME,
    .version = "0.0.1",
    .summary = "loader test fixture",
    .init = fix_init,
    .options = fix_option_table,
    .options_size = FIX_OPTIONS_SIZE,
#if defined(FIX_NO_OPS)
    .ops.any = NULL,
#elif defined(FIX_ROUTER)
    .ops.router = &fix_router_ops,
#else
    .ops.provider = &fix_provider_ops,
#endif
};

/* Every hook stays referenced, so each variant compiles without unused-function warnings. */
COMPASS_PLUGIN_VISIBLE const compass_provider_ops compass_fixture_all_provider_hooks = {
    .size = sizeof(compass_provider_ops),
    .build_request = fix_build_request,
#ifndef FIX_NO_PARSE_RESPONSE
    .parse_response = fix_parse_response,
#endif
    .parse_stream_event = fix_parse_stream_event,
    .classify_error = fix_classify_error,
    .local_call = fix_local_call,
};
COMPASS_PLUGIN_VISIBLE const compass_router_ops compass_fixture_all_router_hooks = {
    .size = sizeof(compass_router_ops),
    .rank = fix_rank,
};
COMPASS_PLUGIN_VISIBLE const compass_plugin_desc *const compass_fixture_desc = &fix_desc;
COMPASS_PLUGIN_VISIBLE const compass_provider_ops *const compass_fixture_provider_ops =
    &fix_provider_ops;
COMPASS_PLUGIN_VISIBLE const compass_router_ops *const compass_fixture_router_ops =
    &fix_router_ops;

#if defined(FIX_NO_ENTRY)
/* Exports something, but not compass_plugin_entry. */
COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry_typo(void);
COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry_typo(void)
{
    return &fix_desc;
}
#elif defined(FIX_NULL_DESC)
COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry(void);
COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry(void)
{
    return fix_desc.name ? NULL : &fix_desc;
}
#else
COMPASS_PLUGIN_DEFINE(fixture, fix_desc)
#endif
