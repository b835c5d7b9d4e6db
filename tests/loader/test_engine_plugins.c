/* The engine's plugin cache: a plugin named by several deployments loads once and serves them
 * all; a plugin used as the wrong kind is refused with both kinds named, whether it was already
 * cached (mock, loaded for a deployment) or not (a fixture loaded first as a router). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compass/compass.h>

#define FIX LOADER_FIXTURE_DIR

typedef struct logs {
    int loaded_mock, loaded_good_router;
    char all[8192];
    size_t len;
} logs;

static void on_log(void *ud, int level, const char *msg)
{
    logs *l = ud;
    (void)level;
    if (strstr(msg, "loaded provider plugin 'mock'"))
        l->loaded_mock++;
    if (strstr(msg, "loaded router plugin 'good_router'"))
        l->loaded_good_router++;
    int n = snprintf(l->all + l->len, sizeof(l->all) - l->len, "%s\n", msg);
    if (n > 0 && l->len + (size_t)n < sizeof(l->all))
        l->len += (size_t)n;
}

static int open_with(const char *cfg, logs *l, compass_engine **e, compass_err *err)
{
    static const char *const extra[] = {FIX};
    compass_engine_opts o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.log = on_log;
    o.log_ud = l;
    o.log_level = COMPASS_LOG_INFO; /* the tests count "loaded ... plugin" lines */
    o.plugin_paths = extra;
    o.n_plugin_paths = 1;
    memset(err, 0, sizeof(*err));
    unsetenv("COMPASS_PLUGIN_PATH"); /* messages name the dir a plugin came from */
    return compass_engine_open_string(e, cfg, &o, err);
}

static int chat_status(compass_engine *e, const char *model, char **body)
{
    char req[256];
    int status = 0;
    snprintf(req, sizeof(req),
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", model);
    int rc = compass_engine_chat(e, req, strlen(req), NULL, NULL, &status, body);
    cr_assert_eq(rc, 0, "compass_engine_chat rc %d", rc);
    return status;
}

#define PLUGINS "plugins = { paths = [\"" COMPASS_PLUGIN_DIR "\"]; };\n"

Test(engine_plugins, one_plugin_for_two_deployments_loads_once_and_serves_both)
{
    const char *cfg = PLUGINS
        "deployments = (\n"
        "  { name = \"a\"; plugin = \"mock\"; models = [\"m1\"]; },\n"
        "  { name = \"b\"; plugin = \"mock\"; models = [\"m2\"];\n"
        "    options = { reply = \"from b\"; }; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, 0, "open: %d %s", rc, err.msg);
    cr_assert_eq(l.loaded_mock, 1, "mock loaded %d times; log:\n%s", l.loaded_mock, l.all);
    char *body = NULL;
    cr_assert_eq(chat_status(e, "m1", &body), 200, "m1: %s", body);
    cr_assert(strstr(body, "\"object\":\"chat.completion\""), "%s", body);
    compass_free(body);
    body = NULL;
    cr_assert_eq(chat_status(e, "m2", &body), 200, "m2: %s", body);
    cr_assert(strstr(body, "from b"), "deployment b's options not applied: %s", body);
    compass_free(body);
    compass_engine_close(e, 0);
}

Test(engine_plugins, one_router_for_two_routes_loads_once)
{
    const char *cfg = PLUGINS
        "deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m1\"]; } );\n"
        "routes = (\n"
        "  { name = \"r1\"; strategy = \"good_router\"; candidates = [\"a/m1\"]; },\n"
        "  { name = \"r2\"; strategy = \"good_router\"; candidates = [\"a/m1\"]; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, 0, "open: %d %s", rc, err.msg);
    cr_assert_eq(l.loaded_good_router, 1, "log:\n%s", l.all);
    char *body = NULL;
    cr_assert_eq(chat_status(e, "r2", &body), 200, "r2: %s", body);
    compass_free(body);
    compass_engine_close(e, 0);
}

Test(engine_plugins, route_strategy_naming_cached_provider_names_both_kinds)
{
    const char *cfg = PLUGINS
        "deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m1\"]; } );\n"
        "routes = (\n"
        "  { name = \"r1\"; strategy = \"mock\"; candidates = [\"a/m1\"]; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "rc %d: %s", rc, err.msg);
    cr_assert_str_eq(err.msg, "<string>:4: route 'r1': " COMPASS_PLUGIN_DIR
                              "/mock.so: plugin 'mock' is a provider plugin, but is used as a "
                              "router");
}

Test(engine_plugins, route_strategy_naming_uncached_provider_names_both_kinds)
{
    const char *cfg = PLUGINS
        "deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m1\"]; } );\n"
        "routes = (\n"
        "  { name = \"r1\"; strategy = \"good_provider\"; candidates = [\"a/m1\"]; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "rc %d: %s", rc, err.msg);
    cr_assert_str_eq(err.msg, "<string>:4: route 'r1': " FIX "/good_provider.so: plugin "
                              "'good_provider' is a provider plugin, but is used as a router");
}

Test(engine_plugins, deployment_naming_a_router_names_both_kinds)
{
    const char *cfg = PLUGINS
        "deployments = (\n"
        "  { name = \"a\"; plugin = \"good_router\"; models = [\"m1\"]; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, COMPASS_EPLUGIN, "rc %d: %s", rc, err.msg);
    cr_assert_str_eq(err.msg, "<string>:3: deployment 'a': " FIX "/good_router.so: plugin "
                              "'good_router' is a router plugin, but is used as a provider");
}

Test(engine_plugins, deployment_naming_missing_plugin_lists_search_dirs)
{
    const char *cfg = PLUGINS
        "deployments = (\n"
        "  { name = \"a\"; plugin = \"nosuch\"; models = [\"m1\"]; }\n"
        ");\n";
    logs l;
    memset(&l, 0, sizeof(l));
    compass_engine *e = NULL;
    compass_err err;
    int rc = open_with(cfg, &l, &e, &err);
    cr_assert_eq(rc, COMPASS_ENOTFOUND, "rc %d: %s", rc, err.msg);
    cr_assert_str_eq(err.msg, "<string>:3: deployment 'a': provider plugin 'nosuch' not found: "
                              "no nosuch.so in " FIX ", " COMPASS_PLUGIN_DIR);
}
