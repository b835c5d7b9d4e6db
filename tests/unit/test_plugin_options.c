/* Plugin options through the engine (core/src/engine.c apply_options, core/src/options.c) with
 * the mock provider: unknown names, wrong types and the plugin's own validation are refused
 * with "<file>:<line>: deployment '<name>'..." naming the option. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compass/compass.h>

#define PLUGINS "plugins = { paths = [\"" COMPASS_PLUGIN_DIR "\"]; };\n"

static void quiet(void *ud, int level, const char *msg)
{
    (void)ud, (void)level, (void)msg;
}

static int open_cfg(const char *cfg, compass_engine **e, compass_err *err)
{
    compass_engine_opts o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.log = quiet;
    memset(err, 0, sizeof(*err));
    *e = NULL;
    return compass_engine_open_string(e, cfg, &o, err);
}

static void refused(const char *cfg, int code, const char *want)
{
    compass_engine *e;
    compass_err err;
    int rc = open_cfg(cfg, &e, &err);
    if (!rc)
        compass_engine_close(e, 0);
    cr_assert_eq(rc, code, "rc %d (%s); want: %s", rc, err.msg, want);
    cr_assert_eq(err.code, code);
    cr_assert_str_eq(err.msg, want);
}

/* Deployment "a" on mock with the given options text on line 3. */
#define DEP_WITH(opts)                                                                        \
    PLUGINS "deployments = (\n"                                                               \
            "  { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"                        \
            "    options = { " opts " }; }\n"                                                 \
            ");\n"

Test(plugin_options, unknown_option_is_named_and_the_plugins_options_listed)
{
    refused(DEP_WITH("latency = 5;"), COMPASS_ECONFIG,
            "<string>:4: deployment 'a'.options: plugin 'mock' has no option 'latency' (it "
            "takes: latency_ms, chunk_delay_ms, chunk_words, fail_rate, fail_status, reply, "
            "model_name)");
}

Test(plugin_options, string_for_a_number_option)
{
    refused(DEP_WITH("fail_rate = \"high\";"), COMPASS_ECONFIG,
            "<string>:4: deployment 'a'.options.fail_rate: expected a number");
}

Test(plugin_options, number_for_a_string_option)
{
    refused(DEP_WITH("reply = 42;"), COMPASS_ECONFIG,
            "<string>:4: deployment 'a'.options.reply: expected a string");
}

Test(plugin_options, float_for_an_integer_option_names_option_and_type)
{
    compass_engine *e;
    compass_err err;
    int rc = open_cfg(DEP_WITH("latency_ms = 1.5;"), &e, &err);
    cr_assert_eq(rc, COMPASS_ECONFIG, "rc %d (%s)", rc, err.msg);
    cr_assert(strncmp(err.msg, "<string>:4: deployment 'a'.options.latency_ms: expected a",
                      strlen("<string>:4: deployment 'a'.options.latency_ms: expected a")) == 0,
              "%s", err.msg);
    cr_assert(strstr(err.msg, "integer"), "%s", err.msg);
}

/* Regression (was a bug in core/src/engine.c apply_options, "expected a %s" with cps_opt_type_name): for integer
 * options the message reads "expected a integer"; it should read "expected an integer", as
 * the config checker (config.c get_int) says. */
Test(plugin_options, float_for_an_integer_option_reads_an_integer)
{
    refused(DEP_WITH("latency_ms = 1.5;"), COMPASS_ECONFIG,
            "<string>:4: deployment 'a'.options.latency_ms: expected an integer");
}

Test(plugin_options, plugins_own_validation_names_option_and_config_line)
{
    refused(DEP_WITH("fail_rate = 2.0;"), COMPASS_ECONFIG,
            "<string>:3: deployment 'a': mock deployment 'a': option fail_rate must be between 0 "
            "and 1");
}

Test(plugin_options, integer_is_accepted_for_a_number_option_and_validated)
{
    refused(DEP_WITH("fail_rate = 2;"), COMPASS_ECONFIG,
            "<string>:3: deployment 'a': mock deployment 'a': option fail_rate must be between 0 "
            "and 1");
}

Test(plugin_options, valid_options_reach_the_instance)
{
    compass_engine *e;
    compass_err err;
    int rc = open_cfg(DEP_WITH("reply = \"configured reply\"; model_name = \"renamed\"; "
                               "fail_rate = 0.0; latency_ms = 0;"),
                      &e, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    int status = 0;
    char *out = NULL;
    cr_assert_eq(compass_engine_chat(e, body, strlen(body), NULL, NULL, &status, &out), 0);
    cr_assert_eq(status, 200, "%s", out);
    cr_assert(strstr(out, "\"content\":\"configured reply\""), "%s", out);
    cr_assert(strstr(out, "\"model\":\"renamed\""), "%s", out);
    compass_free(out);
    compass_engine_close(e, 0);
}

Test(plugin_options, error_in_second_deployment_names_it)
{
    refused(PLUGINS "deployments = (\n"
                    "  { name = \"a\"; plugin = \"mock\"; models = [\"m\"]; },\n"
                    "  { name = \"b\"; plugin = \"mock\"; models = [\"m2\"];\n"
                    "    options = { chunk_words = 0; }; }\n"
                    ");\n",
            COMPASS_ECONFIG,
            "<string>:4: deployment 'b': mock deployment 'b': option chunk_words must be "
            "between 1 and 1000000");
}

/* Regression (was a bug in core/src/engine.c gen_build, deployments loop): when api_key_env names an unset
 * variable the deployment is disabled with `continue` before apply_options runs, so its
 * options are never checked: a typo is accepted now and only fails later, on the reload after
 * the key is set. The options should be checked whether or not the key is present. */
Test(plugin_options, options_of_a_deployment_without_its_key_are_still_checked)
{
    unsetenv("COMPASS_TEST_NEVER_SET_KEY");
    refused(PLUGINS "deployments = (\n"
                    "  { name = \"a\"; plugin = \"mock\"; models = [\"m\"];\n"
                    "    api_key_env = \"COMPASS_TEST_NEVER_SET_KEY\";\n"
                    "    options = { latency = 5; }; }\n"
                    ");\n",
            COMPASS_ECONFIG,
            "<string>:5: deployment 'a'.options: plugin 'mock' has no option 'latency' (it "
            "takes: latency_ms, chunk_delay_ms, chunk_words, fail_rate, fail_status, reply, "
            "model_name)");
}

/* Regression (was a bug in core/src/engine.c gen_build, routes loop): options are applied only when the strategy
 * is a router plugin (strcmp(strategy, "priority") != 0); a route on the built-in priority
 * strategy with an options group is accepted with the options silently ignored. Unknown
 * options should be refused, as they are for plugins (the built-in strategy takes none). */
Test(plugin_options, options_on_a_builtin_priority_route_are_refused)
{
    compass_engine *e;
    compass_err err;
    int rc = open_cfg(PLUGINS "deployments = ( { name = \"a\"; plugin = \"mock\"; "
                              "models = [\"m\"]; } );\n"
                              "routes = (\n"
                              "  { name = \"r\"; candidates = [\"a/m\"];\n"
                              "    options = { bogus = 1; }; }\n"
                              ");\n",
                      &e, &err);
    if (!rc)
        compass_engine_close(e, 0);
    cr_assert_eq(rc, COMPASS_ECONFIG, "accepted options on a priority route");
    cr_assert(strncmp(err.msg, "<string>:5: route 'r'", strlen("<string>:5: route 'r'")) == 0,
              "%s", err.msg);
    cr_assert(strstr(err.msg, "'bogus'"), "%s", err.msg);
}
