/* Unit tests for the mock provider, run on the fake host. */
#include <compass_fakehost.h>
#include <criterion/criterion.h>
#include <json-c/json.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0, ""};
    fh = compass_fakehost_new("mock");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/mock.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_PROVIDER);
}

static void teardown(void)
{
    compass_fakehost_free(fh);
    fh = NULL;
    desc = NULL;
}

TestSuite(mock, .init = setup, .fini = teardown);

static void *inst_with(const char *const *opts)
{
    compass_err err = {0, ""};
    void *inst = compass_fakehost_instance(fh, "mock-test", NULL, NULL, opts, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
    return inst;
}

/* Starts a fresh request, parses json into *chat and runs local_call. */
static int call_with(void *inst, const char *json, compass_chat_request *chat,
                     compass_local_result *out, compass_err *err)
{
    compass_req *req = compass_fakehost_req(fh);
    int rc = compass_fakehost_parse_chat(fh, json, chat, err);
    cr_assert_eq(rc, 0, "parse: %s", err->msg);
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    return desc->ops.provider->local_call(inst, req, chat, out, err);
}

static void call_ok(void *inst, const char *json, compass_local_result *out)
{
    compass_chat_request chat;
    compass_err err = {0, ""};
    int rc = call_with(inst, json, &chat, out, &err);
    cr_assert_eq(rc, 0, "local_call: %d %s", rc, err.msg);
}

static char *str_dup(compass_str s)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    size_t n = s.len < 4095 ? s.len : 4095;
    if (n)
        memcpy(b, s.ptr, n);
    b[n] = '\0';
    return b;
}

/* Joins the content fragments of out->deltas into a static buffer. */
static const char *join_content(const compass_local_result *out)
{
    static char buf[8192];
    size_t n = 0, i;
    for (i = 0; i < out->n_deltas; i++) {
        const compass_str *c = &out->deltas[i].content;
        cr_assert_lt(n + c->len, sizeof(buf));
        if (c->len)
            memcpy(buf + n, c->ptr, c->len);
        n += c->len;
    }
    buf[n] = '\0';
    return buf;
}

static const char *join_args(const compass_local_result *out)
{
    static char buf[4096];
    size_t n = 0, i;
    for (i = 0; i < out->n_deltas; i++) {
        const compass_str *c = &out->deltas[i].tool_arguments;
        if (out->deltas[i].tool_index != 0)
            continue;
        cr_assert_lt(n + c->len, sizeof(buf));
        if (c->len)
            memcpy(buf + n, c->ptr, c->len);
        n += c->len;
    }
    buf[n] = '\0';
    return buf;
}

#define HELLO                                                                                 \
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"You are "       \
    "helpful.\"},{\"role\":\"user\",\"content\":\"Hello there, world\"}]"

static const char *req_plain = HELLO "}";
static const char *req_stream = HELLO ",\"stream\":true}";

Test(mock, reply_is_derived_deterministically_from_last_user_message)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, req_plain, &out);
    cr_assert_eq(out.failed, 0);
    cr_assert_eq(out.n_deltas, 0);
    cr_assert(out.response.has_content);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: Hello there, world");
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_STOP);
    cr_assert_str_eq(str_dup(out.response.id), "chatcmpl-mock-1");
    cr_assert_str_eq(str_dup(out.response.model), "gpt-4o");
    cr_assert_gt(out.response.created, 1700000000);
    cr_assert_eq(out.first_delay_ms, 0);
    cr_assert_eq(out.chunk_delay_ms, 0);

    call_ok(inst, req_plain, &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: Hello there, world");
    cr_assert_str_eq(str_dup(out.response.id), "chatcmpl-mock-2");
}

Test(mock, last_user_message_wins_and_no_user_gives_plain_reply)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"first\"},"
            "{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":"
            "\"second\"}]}",
            &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: second");
    call_ok(inst, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
            &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply");
}

Test(mock, long_user_text_is_cut_at_64_bytes_on_a_utf8_boundary)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    char json[512];
    /* 63 ASCII bytes then a 2-byte e-acute: byte 64 would split it */
    snprintf(json, sizeof(json),
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\xc3\xa9 more\"}]}",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    call_ok(inst, json, &out);
    cr_assert_str_eq(str_dup(out.response.content),
                     "mock reply to: "
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");

    snprintf(json, sizeof(json),
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\xc3\xa9 more\"}]}",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); /* 62 */
    call_ok(inst, json, &out);
    cr_assert_str_eq(str_dup(out.response.content),
                     "mock reply to: "
                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9");
}

Test(mock, max_tokens_cuts_to_words_with_finish_length)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, HELLO ",\"max_tokens\":3}", &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to:");
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_LENGTH);
    cr_assert_eq(out.response.usage.completion_tokens, 3);

    call_ok(inst, HELLO ",\"max_completion_tokens\":5}", &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: Hello there,");
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_LENGTH);

    /* exactly enough words: no cut */
    call_ok(inst, HELLO ",\"max_tokens\":6}", &out);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: Hello there, world");
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_STOP);
}

Test(mock, usage_counts_bytes_messages_and_reply_words)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, req_plain, &out);
    /* "You are helpful." 16 + "Hello there, world" 18 = 34 bytes -> 9, + 2 * 3 */
    cr_assert_eq(out.response.usage.present, 1);
    cr_assert_eq(out.response.usage.prompt_tokens, 15);
    cr_assert_eq(out.response.usage.completion_tokens, 6);
    cr_assert_eq(out.response.usage.total_tokens, 21);
}

Test(mock, stream_deltas_concatenate_to_content_and_end_with_finish_and_usage)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    size_t i, n;
    call_ok(inst, req_stream, &out);
    n = out.n_deltas;
    cr_assert_eq(n, 1 + 6 + 2, "n_deltas %zu", n);
    cr_assert_eq(out.deltas[0].role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(out.deltas[0].content.len, 0);
    cr_assert_str_eq(join_content(&out), "mock reply to: Hello there, world");
    cr_assert_str_eq(str_dup(out.deltas[1].content), "mock ");
    cr_assert_str_eq(str_dup(out.deltas[6].content), "world");
    for (i = 0; i < n; i++) {
        cr_assert_eq(out.deltas[i].tool_index, -1);
        cr_assert_str_eq(str_dup(out.deltas[i].id), "chatcmpl-mock-1");
        cr_assert_str_eq(str_dup(out.deltas[i].model), "gpt-4o");
    }
    cr_assert_eq(out.deltas[n - 2].finish_reason, COMPASS_FINISH_STOP);
    cr_assert_eq(out.deltas[n - 2].usage.present, 0);
    cr_assert_eq(out.deltas[n - 1].usage.present, 1);
    cr_assert_eq(out.deltas[n - 1].usage.prompt_tokens, 15);
    cr_assert_eq(out.deltas[n - 1].usage.completion_tokens, 6);
    cr_assert_eq(out.deltas[n - 1].finish_reason, 0);

    /* the same request without stream gives the same text */
    {
        compass_local_result ns;
        call_ok(inst, req_plain, &ns);
        cr_assert_str_eq(str_dup(ns.response.content), "mock reply to: Hello there, world");
    }
}

Test(mock, stream_honours_max_tokens)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, HELLO ",\"stream\":true,\"max_tokens\":2}", &out);
    cr_assert_str_eq(join_content(&out), "mock reply");
    cr_assert_eq(out.n_deltas, 1 + 2 + 2);
    cr_assert_eq(out.deltas[out.n_deltas - 2].finish_reason, COMPASS_FINISH_LENGTH);
    cr_assert_eq(out.deltas[out.n_deltas - 1].usage.completion_tokens, 2);
}

Test(mock, chunk_words_groups_words_per_delta)
{
    static const char *const opts[] = {"chunk_words=3", NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    /* reply "mock reply to: one two three four" has 7 words -> 3 content deltas */
    call_ok(inst,
            "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
            "\"one two  three\\nfour\"}]}",
            &out);
    cr_assert_eq(out.n_deltas, 1 + 3 + 2, "n_deltas %zu", out.n_deltas);
    cr_assert_str_eq(str_dup(out.deltas[1].content), "mock reply to: ");
    cr_assert_str_eq(str_dup(out.deltas[2].content), "one two  three\n");
    cr_assert_str_eq(str_dup(out.deltas[3].content), "four");
    cr_assert_str_eq(join_content(&out), "mock reply to: one two  three\nfour");

    /* 6 words -> exactly 2 */
    call_ok(inst, req_stream, &out);
    cr_assert_eq(out.n_deltas, 1 + 2 + 2);
    cr_assert_str_eq(join_content(&out), "mock reply to: Hello there, world");
}

Test(mock, latency_options_land_in_the_result_delays)
{
    static const char *const opts[] = {"latency_ms=120", "chunk_delay_ms=15", NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    call_ok(inst, req_stream, &out);
    cr_assert_eq(out.first_delay_ms, 120);
    cr_assert_eq(out.chunk_delay_ms, 15);
    call_ok(inst, req_plain, &out);
    cr_assert_eq(out.first_delay_ms, 120);
}

Test(mock, reply_and_model_name_options)
{
    static const char *const opts[] = {"reply=fixed answer here", "model_name=mock-large",
                                       NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    call_ok(inst, req_plain, &out);
    cr_assert_str_eq(str_dup(out.response.content), "fixed answer here");
    cr_assert_str_eq(str_dup(out.response.model), "mock-large");
    cr_assert_eq(out.response.usage.completion_tokens, 3);
}

#define USER_SAYS(text)                                                                       \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" text "\"}]}"

Test(mock, directives_override_delays)
{
    static const char *const opts[] = {"latency_ms=120", "chunk_delay_ms=15", NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    call_ok(inst, USER_SAYS("hi #mock{latency_ms: 250, chunk_delay_ms=7}"), &out);
    cr_assert_eq(out.failed, 0);
    cr_assert_eq(out.first_delay_ms, 250);
    cr_assert_eq(out.chunk_delay_ms, 7);
    call_ok(inst, USER_SAYS("hi #mock{\\\"latency_ms\\\":5}"), &out);
    cr_assert_eq(out.first_delay_ms, 5);
    cr_assert_eq(out.chunk_delay_ms, 15);
}

Test(mock, directive_fail_injects_a_retryable_error)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, USER_SAYS("#mock{fail: true}"), &out);
    cr_assert_eq(out.failed, 1);
    cr_assert_eq(out.error.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert_eq(out.error.http_status, 503);
    cr_assert_str_eq(out.error.type, "server_error");
    cr_assert_str_eq(out.error.message, "mock: injected failure");
    cr_assert_eq(out.error.retry_after_ms, -1);
    cr_assert_eq(out.n_deltas, 0);
}

Test(mock, directive_status_429_is_rate_limited_with_retry_after)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, USER_SAYS("#mock{\\\"fail\\\": true, \\\"status\\\": 429, "
                            "\\\"message\\\": \\\"slow down, \\\\\\\"please\\\\\\\"\\\"}"),
            &out);
    cr_assert_eq(out.failed, 1);
    cr_assert_eq(out.error.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_eq(out.error.http_status, 429);
    cr_assert_eq(out.error.retry_after_ms, 1000);
    cr_assert_str_eq(out.error.type, "rate_limit_error");
    cr_assert_str_eq(out.error.message, "slow down, \"please\"");

    /* a status alone (>= 400) implies fail */
    call_ok(inst, USER_SAYS("#mock{status: 500}"), &out);
    cr_assert_eq(out.failed, 1);
    cr_assert_eq(out.error.http_status, 500);
    cr_assert_eq(out.error.outcome, COMPASS_OUTCOME_RETRYABLE);
}

Test(mock, directive_fail_false_beats_fail_rate)
{
    static const char *const opts[] = {"fail_rate=1", NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    call_ok(inst, req_plain, &out);
    cr_assert_eq(out.failed, 1);
    call_ok(inst, USER_SAYS("#mock{fail:false}"), &out);
    cr_assert_eq(out.failed, 0);
}

Test(mock, malformed_directives_are_ignored)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, USER_SAYS("#mock{"), &out);
    cr_assert_eq(out.failed, 0);
    call_ok(inst, USER_SAYS("#mock{:::,,, latency_ms: abc, fail: maybe, \\\"unterminated"), &out);
    cr_assert_eq(out.failed, 0);
    cr_assert_eq(out.first_delay_ms, 0);
    call_ok(inst, USER_SAYS("#mock{latency_ms: 99999999999999999999999}"), &out);
    cr_assert_eq(out.first_delay_ms, 0);
    call_ok(inst, USER_SAYS("#mock{latency_ms: -5}"), &out);
    cr_assert_eq(out.first_delay_ms, 0);
}

Test(mock, fail_rate_is_statistically_right_and_uses_fail_status)
{
    static const char *const opts[] = {"fail_rate=0.3", "fail_status=502", NULL};
    void *inst = inst_with(opts);
    compass_local_result out;
    int i, failures = 0;
    for (i = 0; i < 1000; i++) {
        call_ok(inst, req_plain, &out);
        if (out.failed) {
            failures++;
            cr_assert_eq(out.error.http_status, 502);
            cr_assert_eq(out.error.outcome, COMPASS_OUTCOME_RETRYABLE);
        }
    }
    cr_assert(failures >= 260 && failures <= 340, "failures %d", failures);
}

Test(mock, fail_rate_is_deterministic_per_instance_sequence)
{
    static const char *const opts[] = {"fail_rate=0.5", NULL};
    void *a = inst_with(opts), *b = inst_with(opts);
    compass_local_result out;
    int i, fa, fb;
    for (i = 0; i < 50; i++) {
        call_ok(a, req_plain, &out);
        fa = out.failed;
        call_ok(b, req_plain, &out);
        fb = out.failed;
        cr_assert_eq(fa, fb, "call %d", i);
    }
}

#define TOOLS                                                                                 \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","               \
    "\"description\":\"the properties of weather\",\"parameters\":{\"type\":\"object\","     \
    "\"properties\":{\"location\":{\"type\":\"string\"},\"unit\":{\"type\":\"string\"}}}}},"  \
    "{\"type\":\"function\",\"function\":{\"name\":\"ping\"}}]"

Test(mock, tool_choice_required_answers_with_a_call_to_the_first_tool)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    json_object *j;
    call_ok(inst, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]," TOOLS
                  ",\"tool_choice\":\"required\"}",
            &out);
    cr_assert_eq(out.failed, 0);
    cr_assert_eq(out.response.has_content, 0);
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_eq(out.response.n_tool_calls, 1);
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].id), "call_mock_1");
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].name), "get_weather");
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].arguments), "{\"location\":\"mock\"}");
    j = json_tokener_parse(str_dup(out.response.tool_calls[0].arguments));
    cr_assert_not_null(j);
    json_object_put(j);
    cr_assert_eq(out.response.usage.completion_tokens, 10);
    cr_assert_eq(out.response.usage.total_tokens, out.response.usage.prompt_tokens + 10);
}

Test(mock, named_function_is_called_with_empty_arguments_when_schemaless)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]," TOOLS
                  ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"ping\"}}}",
            &out);
    cr_assert_eq(out.response.n_tool_calls, 1);
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].name), "ping");
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].arguments), "{}");
}

Test(mock, word_tool_triggers_a_call_only_under_auto)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    call_ok(inst,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"use a Tool please\"}],"
            TOOLS "}",
            &out);
    cr_assert_eq(out.response.n_tool_calls, 1);
    cr_assert_str_eq(str_dup(out.response.tool_calls[0].name), "get_weather");

    call_ok(inst,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"use a tool\"}],"
            TOOLS ",\"tool_choice\":\"auto\"}",
            &out);
    cr_assert_eq(out.response.n_tool_calls, 1);

    call_ok(inst,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"use a tool\"}],"
            TOOLS ",\"tool_choice\":\"none\"}",
            &out);
    cr_assert_eq(out.response.n_tool_calls, 0);
    cr_assert_str_eq(str_dup(out.response.content), "mock reply to: use a tool");

    call_ok(inst,
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"toolbox stool\"}],"
            TOOLS "}",
            &out);
    cr_assert_eq(out.response.n_tool_calls, 0);

    /* the word without tools in the request: plain text */
    call_ok(inst, USER_SAYS("use a tool"), &out);
    cr_assert_eq(out.response.n_tool_calls, 0);
    cr_assert_eq(out.response.finish_reason, COMPASS_FINISH_STOP);
}

Test(mock, streamed_tool_call_arguments_reassemble_to_valid_json)
{
    void *inst = inst_with(NULL);
    compass_local_result out;
    size_t i, n, frags = 0;
    json_object *j, *v;
    call_ok(inst,
            "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
            "\"hi\"}]," TOOLS ",\"tool_choice\":\"required\"}",
            &out);
    n = out.n_deltas;
    cr_assert_eq(out.deltas[0].role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(out.deltas[1].tool_index, 0);
    cr_assert_str_eq(str_dup(out.deltas[1].tool_id), "call_mock_1");
    cr_assert_str_eq(str_dup(out.deltas[1].tool_name), "get_weather");
    for (i = 2; i < n; i++)
        if (out.deltas[i].tool_index == 0 && out.deltas[i].tool_arguments.len)
            frags++;
    cr_assert(frags >= 2 && frags <= 3, "fragments %zu", frags);
    cr_assert_str_eq(join_args(&out), "{\"location\":\"mock\"}");
    j = json_tokener_parse(join_args(&out));
    cr_assert_not_null(j);
    cr_assert(json_object_object_get_ex(j, "location", &v));
    cr_assert_str_eq(json_object_get_string(v), "mock");
    json_object_put(j);
    cr_assert_eq(out.deltas[n - 2].finish_reason, COMPASS_FINISH_TOOL_CALLS);
    cr_assert_eq(out.deltas[n - 1].usage.present, 1);
    cr_assert_eq(out.deltas[n - 1].usage.completion_tokens, 10);
    cr_assert_str_eq(join_content(&out), "");

    /* "{}" streams as two fragments */
    call_ok(inst,
            "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
            "\"hi\"}]," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":"
            "{\"name\":\"ping\"}}}",
            &out);
    cr_assert_str_eq(join_args(&out), "{}");
    cr_assert_eq(out.n_deltas, 6);
}

Test(mock, invalid_options_are_refused_with_a_message_naming_them)
{
    static const char *const bad_rate[] = {"fail_rate=1.5", NULL};
    static const char *const neg_rate[] = {"fail_rate=-0.1", NULL};
    static const char *const bad_words[] = {"chunk_words=0", NULL};
    static const char *const bad_latency[] = {"latency_ms=-1", NULL};
    static const char *const bad_status[] = {"fail_status=200", NULL};
    compass_err err = {0, ""};
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, bad_rate, &err));
    cr_assert_eq(err.code, COMPASS_ECONFIG);
    cr_assert(strstr(err.msg, "fail_rate") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "dep") != NULL, "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, neg_rate, &err));
    cr_assert(strstr(err.msg, "fail_rate") != NULL, "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, bad_words, &err));
    cr_assert(strstr(err.msg, "chunk_words") != NULL, "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, bad_latency, &err));
    cr_assert(strstr(err.msg, "latency_ms") != NULL, "%s", err.msg);
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, bad_status, &err));
    cr_assert(strstr(err.msg, "fail_status") != NULL, "%s", err.msg);
}

Test(mock, options_table_is_declared)
{
    const compass_option *o;
    int n = 0;
    for (o = desc->options; o && o->name; o++)
        n++;
    cr_assert_eq(n, 7);
    cr_assert_not_null(desc->ops.provider->local_call);
    cr_assert_null(desc->ops.provider->build_request);
}

/* Fails the Nth host allocation for each N and checks a clean COMPASS_ENOMEM. */
static void oom_loop(void *inst, const char *json)
{
    int n, saw_oom = 0, saw_ok = 0;
    for (n = 1; n <= 30; n++) {
        compass_chat_request chat;
        compass_local_result out;
        compass_err err = {0, ""};
        compass_req *req = compass_fakehost_req(fh);
        int rc = compass_fakehost_parse_chat(fh, json, &chat, &err);
        cr_assert_eq(rc, 0, "parse: %s", err.msg);
        memset(&out, 0, sizeof(out));
        out.size = sizeof(out);
        compass_fakehost_fail_alloc_at(fh, n);
        rc = desc->ops.provider->local_call(inst, req, &chat, &out, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (rc == COMPASS_ENOMEM) {
            saw_oom = 1;
            cr_assert_eq(err.code, COMPASS_ENOMEM);
            cr_assert(strstr(err.msg, "mock") != NULL, "%s", err.msg);
        } else {
            cr_assert_eq(rc, 0, "n=%d rc=%d", n, rc);
            saw_ok = 1;
            cr_assert_eq(out.failed, 0);
        }
    }
    cr_assert(saw_oom && saw_ok);
}

Test(mock, out_of_memory_fails_cleanly_at_every_allocation)
{
    static const char *const opts[] = {"model_name=mm", NULL};
    void *inst = inst_with(opts);
    compass_err err = {0, ""};

    oom_loop(inst, req_plain);
    oom_loop(inst, req_stream);
    oom_loop(inst, HELLO ",\"stream\":true,\"max_tokens\":2}");
    oom_loop(inst, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]," TOOLS
                   ",\"tool_choice\":\"required\"}");
    oom_loop(inst, "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                   "\"content\":\"hi\"}]," TOOLS ",\"tool_choice\":\"required\"}");

    compass_fakehost_fail_alloc_at(fh, 1);
    cr_assert_null(compass_fakehost_instance(fh, "dep", NULL, NULL, NULL, &err));
    compass_fakehost_fail_alloc_at(fh, 0);
    cr_assert_eq(err.code, COMPASS_ENOMEM);
}

/* local_call on one instance from several threads: each thread has its own request (from its
 * own fake host, used only for its arena); the call counter hands out every id exactly once. */
#define THREADS 4
#define CALLS_PER_THREAD 250

struct worker {
    void *inst;
    compass_fakehost *own;
    unsigned long long ids[CALLS_PER_THREAD];
    int rc;
};

static void *worker_main(void *arg)
{
    struct worker *w = (struct worker *)arg;
    int i;
    for (i = 0; i < CALLS_PER_THREAD; i++) {
        compass_chat_request chat;
        compass_local_result out;
        compass_err err = {0, ""};
        compass_req *req = compass_fakehost_req(w->own);
        const char *id;
        if (compass_fakehost_parse_chat(w->own, req_stream, &chat, &err) != 0) {
            w->rc = -100;
            return NULL;
        }
        memset(&out, 0, sizeof(out));
        out.size = sizeof(out);
        w->rc = desc->ops.provider->local_call(w->inst, req, &chat, &out, &err);
        if (w->rc != 0 || out.n_deltas != 9)
            return NULL;
        id = out.deltas[0].id.ptr;
        if (strncmp(id, "chatcmpl-mock-", 14) != 0) {
            w->rc = -101;
            return NULL;
        }
        w->ids[i] = strtoull(id + 14, NULL, 10);
    }
    return NULL;
}

Test(mock, local_call_is_safe_across_threads_on_one_instance)
{
    static struct worker ws[THREADS];
    static unsigned char seen[THREADS * CALLS_PER_THREAD + 1];
    pthread_t th[THREADS];
    void *inst = inst_with(NULL);
    int t, i;
    memset(seen, 0, sizeof(seen));
    for (t = 0; t < THREADS; t++) {
        memset(&ws[t], 0, sizeof(ws[t]));
        ws[t].inst = inst;
        ws[t].own = compass_fakehost_new("mock");
        cr_assert_not_null(ws[t].own);
    }
    for (t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, worker_main, &ws[t]), 0);
    for (t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (t = 0; t < THREADS; t++) {
        cr_assert_eq(ws[t].rc, 0, "thread %d rc %d", t, ws[t].rc);
        for (i = 0; i < CALLS_PER_THREAD; i++) {
            unsigned long long id = ws[t].ids[i];
            cr_assert(id >= 1 && id <= THREADS * CALLS_PER_THREAD, "id %llu", id);
            cr_assert_eq(seen[id], 0, "id %llu twice", id);
            seen[id] = 1;
        }
        compass_fakehost_free(ws[t].own);
    }
}
