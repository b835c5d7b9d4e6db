/* compassd.conf checking (core/src/config.c): every refusal reads
 * "<file>:<line>: <path>: <reason>", and a valid file's values land where the engine reads
 * them, with server defaults inherited per deployment unless overridden. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Loads text that must be refused with exactly want. */
static void refused(const char *text, const char *want)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_string(text, NULL, &err);
    if (c)
        cps_config_free(c);
    cr_assert_null(c, "accepted a config that should fail with: %s", want);
    cr_assert_eq(err.code, COMPASS_ECONFIG, "code %d for: %s", err.code, err.msg);
    cr_assert_str_eq(err.msg, want);
}

static cps_config *accepted(const char *text)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_string(text, NULL, &err);
    cr_assert_not_null(c, "refused a valid config: %s", err.msg);
    return c;
}

#define DEP_A "deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m1\", \"m2\"]; } );\n"

/* ---- keys ---- */

Test(config, unknown_top_level_key_suggests_the_near_one)
{
    refused("server = {};\nserverr = {};\n",
            "<string>:2: config: unknown key 'serverr' (did you mean 'server'?)");
}

Test(config, unknown_top_level_key_without_a_near_one)
{
    refused("listen_everywhere = 1;\n", "<string>:1: config: unknown key 'listen_everywhere'");
}

Test(config, unknown_deployment_key_suggests_models)
{
    refused("deployments = (\n"
            "  { name = \"a\"; plugin = \"mock\";\n"
            "    modles = [\"m1\"]; }\n"
            ");\n",
            "<string>:3: deployments[0]: unknown key 'modles' (did you mean 'models'?)");
}

Test(config, unknown_key_in_nested_timeouts_names_the_full_path)
{
    refused("server = {\n  timeouts = {\n    conect_ms = 5;\n  };\n};\n",
            "<string>:3: server.timeouts: unknown key 'conect_ms' (did you mean 'connect_ms'?)");
}

/* ---- types ---- */

Test(config, string_where_integer_expected)
{
    refused("server = { threads = \"4\"; };\n", "<string>:1: server.threads: expected an integer");
}

Test(config, integer_where_string_expected)
{
    refused("deployments = ( { name = 5; plugin = \"mock\"; models = [\"m\"]; } );\n",
            "<string>:1: deployments[0].name: expected a string");
}

Test(config, group_where_list_expected)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\";\n  models = { m = 1; }; } );\n",
            "<string>:2: deployments[0].models: expected a list of strings [\"a\", \"b\"]");
}

Test(config, group_where_deployment_list_expected)
{
    refused("deployments = { name = \"a\"; };\n",
            "<string>:1: deployments: expected a list ( {...}, {...} )");
}

Test(config, float_where_integer_expected_is_not_converted)
{
    refused("server = { max_body_bytes = 2048.5; };\n",
            "<string>:1: server.max_body_bytes: expected an integer");
}

Test(config, non_string_in_models_list_names_the_index)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = (\"m\", 7); } );\n",
            "<string>:1: deployments[0].models[1]: expected a string");
}

Test(config, boolean_expected)
{
    refused("server = { log_requests = 1; };\n",
            "<string>:1: server.log_requests: expected true or false");
}

Test(config, deployment_entry_must_be_a_group)
{
    refused("deployments = ( \"a\" );\n", "<string>:1: deployments[0]: expected a group { ... }");
}

/* ---- required fields ---- */

Test(config, deployment_without_name)
{
    refused("deployments = (\n  { plugin = \"mock\"; models = [\"m\"]; }\n);\n",
            "<string>:2: deployments[0].name: required");
}

Test(config, deployment_without_plugin)
{
    refused("deployments = (\n  { name = \"a\"; models = [\"m\"]; }\n);\n",
            "<string>:2: deployments[0].plugin: required");
}

Test(config, deployment_without_models)
{
    refused("deployments = (\n  { name = \"a\"; plugin = \"mock\"; }\n);\n",
            "<string>:2: deployments[0].models: required");
}

Test(config, deployment_with_empty_models)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = []; } );\n",
            "<string>:1: deployments[0].models: must not be empty");
}

Test(config, empty_deployment_name)
{
    refused("deployments = ( { name = \"\"; plugin = \"mock\"; models = [\"m\"]; } );\n",
            "<string>:1: deployments[0].name: must not be empty");
}

Test(config, deployment_name_with_a_space)
{
    refused("deployments = ( { name = \"a b\"; plugin = \"mock\"; models = [\"m\"]; } );\n",
            "<string>:1: deployments[0].name: 'a b' may only hold letters, digits, '-', '_', "
            "'.', ':'");
}

Test(config, route_without_candidates)
{
    refused(DEP_A "routes = (\n  { name = \"r\"; }\n);\n",
            "<string>:3: routes[0].candidates: required");
}

/* ---- duplicates ---- */

Test(config, duplicate_deployment_name)
{
    refused("deployments = (\n"
            "  { name = \"a\"; plugin = \"mock\"; models = [\"m1\"]; },\n"
            "  { name = \"a\"; plugin = \"mock\"; models = [\"m2\"]; }\n"
            ");\n",
            "<string>:3: deployments[1].name: 'a' is already used by deployments[0]");
}

Test(config, duplicate_route_name)
{
    refused(DEP_A "routes = (\n"
                  "  { name = \"r\"; candidates = [\"a/m1\"]; },\n"
                  "  { name = \"r\"; candidates = [\"a/m2\"]; }\n"
                  ");\n",
            "<string>:4: routes[1].name: 'r' is already used by routes[0]");
}

/* ---- values ---- */

Test(config, listen_without_port)
{
    refused("server = { listen = \"127.0.0.1\"; };\n",
            "<string>:1: server.listen: '127.0.0.1' is not host:port (e.g. \"127.0.0.1:8080\")");
}

Test(config, listen_with_port_out_of_range)
{
    refused("server = { listen = \"0.0.0.0:70000\"; };\n",
            "<string>:1: server.listen: '0.0.0.0:70000' is not host:port (e.g. "
            "\"127.0.0.1:8080\")");
}

Test(config, listen_with_non_numeric_port)
{
    refused("server = { listen = \"localhost:http\"; };\n",
            "<string>:1: server.listen: 'localhost:http' is not host:port (e.g. "
            "\"127.0.0.1:8080\")");
}

Test(config, listen_without_host)
{
    refused("server = { listen = \":8080\"; };\n",
            "<string>:1: server.listen: ':8080' is not host:port (e.g. \"127.0.0.1:8080\")");
}

/* Regression (was a bug in core/src/config.c read_server, the listen parse): "127.0.0.1:" has no port, but
 * strtol("") returns 0 with end pointing at the NUL, so it is accepted as port 0 instead of
 * refused like "127.0.0.1". */
Test(config, listen_with_empty_port)
{
    refused("server = { listen = \"127.0.0.1:\"; };\n",
            "<string>:1: server.listen: '127.0.0.1:' is not host:port (e.g. \"127.0.0.1:8080\")");
}

Test(config, bad_log_level)
{
    refused("server = {\n  log_level = \"verbose\";\n};\n",
            "<string>:2: server.log_level: 'verbose' is not one of error, warn, info, debug");
}

Test(config, base_url_without_scheme)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"
            "  base_url = \"api.example.com\"; } );\n",
            "<string>:2: deployments[0].base_url: 'api.example.com' must start with http:// or "
            "https://");
}

Test(config, candidate_without_slash)
{
    refused(DEP_A "routes = ( { name = \"r\";\n  candidates = [\"a/m1\",\n    \"a\"]; } );\n",
            "<string>:4: routes[0].candidates[1]: 'a' is not \"deployment/model\"");
}

Test(config, candidate_with_empty_model)
{
    refused(DEP_A "routes = ( { name = \"r\"; candidates = [\"a/\"]; } );\n",
            "<string>:2: routes[0].candidates[0]: 'a/' is not \"deployment/model\"");
}

Test(config, candidate_naming_unknown_deployment)
{
    refused(DEP_A "routes = ( { name = \"r\"; candidates = [\"b/m1\"]; } );\n",
            "<string>:2: routes[0].candidates[0]: no deployment named 'b'");
}

Test(config, candidate_naming_model_the_deployment_does_not_serve)
{
    refused(DEP_A "routes = ( { name = \"r\"; candidates = [\"a/m3\"]; } );\n",
            "<string>:2: routes[0].candidates[0]: deployment 'a' does not serve model 'm3'");
}

Test(config, route_name_shadowing_a_model_is_refused)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_string(
        DEP_A "routes = ( { name = \"m2\"; candidates = [\"a/m1\"]; } );\n", NULL, &err);
    cr_assert_null(c);
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "routes[0].name: 'm2' is also a model of deployment 'a'; a route "
                              "name must not shadow a model"),
              "%s", err.msg);
}

/* Regression (was a bug in core/src/config.c check(), the shadowing loop near the end): the error is built with
 * cfail(err, NULL, ...), so it carries line 0 ("<string>:0: routes[0].name: ...") instead of
 * the route's line (cps_cfg_route.line, here 2). */
Test(config, route_name_shadowing_a_model_gives_the_route_line)
{
    refused(DEP_A "routes = ( { name = \"m2\"; candidates = [\"a/m1\"]; } );\n",
            "<string>:2: routes[0].name: 'm2' is also a model of deployment 'a'; a route name "
            "must not shadow a model");
}

Test(config, bad_capability)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"
            "  capabilities = [\"tools\", \"telepathy\"]; } );\n",
            "<string>:2: deployments[0].capabilities: 'telepathy' is not one of tools, vision, "
            "json, stream");
}

Test(config, syntax_error_reports_its_line)
{
    refused("server = {\n  threads = 2;\n  listen = ;\n};\n", "<string>:3: syntax error");
}

Test(config, timeout_out_of_range_low)
{
    refused("server = { timeouts = { connect_ms = 0; }; };\n",
            "<string>:1: server.timeouts.connect_ms: 0 is out of range [1, 600000]");
}

Test(config, timeout_out_of_range_high_in_a_deployment)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"
            "  timeouts = { total_ms = 86400001; }; } );\n",
            "<string>:2: deployments[0].timeouts.total_ms: 86400001 is out of range [1, "
            "86400000]");
}

Test(config, threads_out_of_range)
{
    refused("server = { threads = 65; };\n",
            "<string>:1: server.threads: 65 is out of range [0, 64]");
}

Test(config, weight_out_of_range)
{
    refused("deployments = ( { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"
            "  weight = -1.5; } );\n",
            "<string>:2: deployments[0].weight: -1.5 is out of range [0, 1e+06]");
}

Test(config, breaker_cooldowns_list_too_long)
{
    refused("server = { breaker = { cooldowns_ms = [1, 2, 3, 4, 5, 6, 7, 8, 9]; }; };\n",
            "<string>:1: server.breaker.cooldowns_ms: expected a list of 1 to 8 integers, e.g. "
            "[60000, 300000, 900000, 3600000]");
}

/* ---- a valid config ---- */

Test(config, valid_config_values_and_timeout_inheritance)
{
    cps_config *c = accepted(
        "server = {\n"
        "  listen = \"0.0.0.0:9090\";\n"
        "  threads = 4;\n"
        "  log_level = \"debug\";\n"
        "  timeouts = { connect_ms = 1000; total_ms = 30000; };\n"
        "};\n"
        "plugins = { paths = [\"/opt/p1\", \"/opt/p2\"]; settings = { mock = { x = \"y\"; }; }; };\n"
        "deployments = (\n"
        "  { name = \"a\"; plugin = \"mock\"; models = [\"m1\", \"m2\"]; },\n"
        "  { name = \"b\"; plugin = \"openai\"; models = [\"gpt\"]; standby = true;\n"
        "    base_url = \"https://api.example.com/v1\"; api_key_env = \"B_KEY\";\n"
        "    weight = 2.5; tier = 3; price_in = 0.15; price_out = 0.6; capacity = 10;\n"
        "    capabilities = [\"stream\", \"json\"];\n"
        "    timeouts = { total_ms = 5000; idle_ms = 700; }; }\n"
        ");\n"
        "routes = (\n"
        "  { name = \"auto\"; strategy = \"least_latency\"; candidates = [\"a/m1\", \"b/gpt\"];\n"
        "    max_attempts = 2; retries = 1; deadline_ms = 9000; }\n"
        ");\n");
    cr_assert_str_eq(c->path, "<string>");
    cr_assert_str_eq(c->listen_host, "0.0.0.0");
    cr_assert_eq(c->listen_port, 9090);
    cr_assert_eq(c->threads, 4);
    cr_assert_str_eq(c->log_level, "debug");
    cr_assert_eq(c->timeouts.connect_ms, 1000);
    cr_assert_eq(c->timeouts.first_byte_ms, 60000, "built-in default");
    cr_assert_eq(c->timeouts.total_ms, 30000);
    cr_assert_eq(c->n_plugin_paths, 2);
    cr_assert_str_eq(c->plugin_paths[1], "/opt/p2");
    cr_assert_not_null(c->plugin_settings);

    cr_assert_eq(c->n_deployments, 2);
    const cps_cfg_deployment *a = &c->deployments[0], *b = &c->deployments[1];
    cr_assert_str_eq(a->name, "a");
    cr_assert_eq(a->n_models, 2);
    cr_assert_str_eq(a->models[1], "m2");
    cr_assert_eq(a->line, 9);
    /* a inherits every server timeout */
    cr_assert_eq(a->timeouts.connect_ms, 1000);
    cr_assert_eq(a->timeouts.first_byte_ms, 60000);
    cr_assert_eq(a->timeouts.idle_ms, 60000);
    cr_assert_eq(a->timeouts.total_ms, 30000);
    cr_assert_eq(a->weight, 1.0);
    cr_assert_eq(a->caps, COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_JSON |
                              COMPASS_CAP_STREAM);
    cr_assert_null(a->base_url);
    cr_assert_eq(a->standby, 0);
    /* b overrides two and inherits the others */
    cr_assert_eq(b->timeouts.connect_ms, 1000);
    cr_assert_eq(b->timeouts.first_byte_ms, 60000);
    cr_assert_eq(b->timeouts.idle_ms, 700);
    cr_assert_eq(b->timeouts.total_ms, 5000);
    cr_assert_str_eq(b->plugin, "openai");
    cr_assert_str_eq(b->base_url, "https://api.example.com/v1");
    cr_assert_str_eq(b->api_key_env, "B_KEY");
    cr_assert_eq(b->standby, 1);
    cr_assert_eq(b->weight, 2.5);
    cr_assert_eq(b->tier, 3);
    cr_assert_eq(b->price_in, 0.15);
    cr_assert_eq(b->price_out, 0.6);
    cr_assert_eq(b->capacity, 10);
    cr_assert_eq(b->caps, COMPASS_CAP_STREAM | COMPASS_CAP_JSON);
    cr_assert_eq(b->line, 10);
    /* breaker defaults from DESIGN.md */
    cr_assert_eq(b->breaker.failure_rate, 0.2);
    cr_assert_eq(b->breaker.consecutive, 5);
    cr_assert_eq(b->breaker.n_cooldowns, 4);
    cr_assert_eq(b->breaker.cooldowns_ms[3], 3600000);
    cr_assert_eq(b->breaker.half_open_successes, 3);

    cr_assert_eq(c->n_routes, 1);
    const cps_cfg_route *r = &c->routes[0];
    cr_assert_str_eq(r->name, "auto");
    cr_assert_str_eq(r->strategy, "least_latency");
    cr_assert_eq(r->n_candidates, 2);
    cr_assert_str_eq(r->candidates[1], "b/gpt");
    cr_assert_eq(r->max_attempts, 2);
    cr_assert_eq(r->retries, 1);
    cr_assert_eq(r->deadline_ms, 9000);
    cr_assert_eq(r->backoff_ms, 200);
    cr_assert_eq(r->backoff_max_ms, 10000);
    cps_config_free(c);
}

Test(config, empty_config_takes_defaults)
{
    cps_config *c = accepted("");
    cr_assert_str_eq(c->listen_host, "127.0.0.1");
    cr_assert_eq(c->listen_port, 8080);
    cr_assert_eq(c->max_body_bytes, 1 << 20);
    cr_assert_eq(c->threads, 0); /* one event loop per CPU */
    cr_assert_str_eq(c->log_level, "info");
    cr_assert_eq(c->n_deployments, 0);
    cr_assert_eq(c->n_routes, 0);
    cps_config_free(c);
}

Test(config, route_strategy_defaults_to_priority)
{
    cps_config *c = accepted(DEP_A "routes = ( { name = \"r\"; candidates = [\"a/m1\"]; } );\n");
    cr_assert_str_eq(c->routes[0].strategy, "priority");
    cps_config_free(c);
}

/* ---- files ---- */

static void write_file(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/compass-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

Test(config, file_errors_name_the_file_and_line)
{
    char path[64], want[256];
    write_file(path, sizeof(path), "server = {\n  threads = 2;\n  bogus = 1;\n};\n");
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_file(path, &err);
    unlink(path);
    cr_assert_null(c);
    snprintf(want, sizeof(want), "%s:3: server: unknown key 'bogus'", path);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(err.code, COMPASS_ECONFIG);
}

Test(config, file_syntax_error_names_the_file_and_line)
{
    char path[64], want[256];
    write_file(path, sizeof(path), "server = {\n  threads = 2;\n  listen = = \"x:1\";\n};\n");
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_file(path, &err);
    unlink(path);
    cr_assert_null(c);
    snprintf(want, sizeof(want), "%s:3: syntax error", path);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(err.code, COMPASS_ECONFIG);
}

Test(config, error_in_an_included_file_names_that_file)
{
    char inc[64], main_path[64], text[256], want[256];
    write_file(inc, sizeof(inc), "\n\nthreads = \"many\";\n");
    snprintf(text, sizeof(text), "server = {\n  @include \"%s\"\n};\n", inc);
    write_file(main_path, sizeof(main_path), text);
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_file(main_path, &err);
    unlink(inc);
    unlink(main_path);
    cr_assert_null(c);
    snprintf(want, sizeof(want), "%s:3: server.threads: expected an integer", inc);
    cr_assert_str_eq(err.msg, want);
}

Test(config, missing_file_is_not_found)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_file("/nonexistent/compassd.conf", &err);
    cr_assert_null(c);
    cr_assert_eq(err.code, COMPASS_ENOTFOUND);
    cr_assert_str_eq(err.msg, "/nonexistent/compassd.conf: cannot open config file");
}

Test(config, valid_file_records_its_path)
{
    char path[64];
    write_file(path, sizeof(path), DEP_A);
    compass_err err;
    memset(&err, 0, sizeof(err));
    cps_config *c = cps_config_load_file(path, &err);
    unlink(path);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_str_eq(c->path, path);
    cr_assert_str_eq(c->deployments[0].file, path);
    cr_assert_eq(c->deployments[0].line, 1);
    cps_config_free(c);
}
