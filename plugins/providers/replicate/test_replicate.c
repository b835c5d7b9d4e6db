/*
 * Tests for the replicate provider on the fake host, on wire bytes shaped as Replicate's HTTP
 * API reference documents them (prediction creation, prediction objects in each status, the
 * stream URL's SSE events, problem-details error bodies).
 */
#include <criterion/criterion.h>

#include <compass/plugin.h>
#include <compass_fakehost.h>
#include <json-c/json.h>

#include <stdio.h>
#include <string.h>

#include "../common/pair_cases.h"

static compass_fakehost *fh;
static const compass_plugin_desc *desc;
static const compass_provider_ops *ops;
static void *inst;
static compass_req *req;

static void *make_instance(const char *base_url, const char *const *options)
{
    compass_err err;
    void *i;
    memset(&err, 0, sizeof(err));
    i = compass_fakehost_instance(fh, "repl", base_url, "r8_test", options, &err);
    cr_assert(i, "instance: %s", err.msg);
    return i;
}

static void setup(void)
{
    compass_err err;
    memset(&err, 0, sizeof(err));
    fh = compass_fakehost_new("replicate");
    cr_assert(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/replicate.so", &err);
    cr_assert(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_PROVIDER);
    cr_assert_str_eq(desc->name, "replicate");
    ops = desc->ops.provider;
    cr_assert(COMPASS_OPS_HAS(ops, follow));
    inst = make_instance(NULL, NULL);
    req = compass_fakehost_req(fh);
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

TestSuite(replicate, .init = setup, .fini = teardown);

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Builds the upstream request for an OpenAI chat body on instance i (a fresh request). */
static int build_on(void *i, const char *chat, compass_http_request *out, compass_err *err)
{
    compass_chat_request in;
    int rc;
    req = compass_fakehost_req(fh);
    memset(&in, 0, sizeof(in));
    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    rc = compass_fakehost_parse_chat(fh, chat, &in, err);
    cr_assert_eq(rc, 0, "parse_chat: %s", err->msg);
    return ops->build_request(i, req, &in, out, err);
}

static json_object *body_on(void *i, const char *chat, compass_http_request *out)
{
    compass_err err;
    json_object *body;
    int rc = build_on(i, chat, out, &err);
    cr_assert_eq(rc, 0, "build_request: %d %s", rc, err.msg);
    cr_assert(out->body.ptr);
    body = json_tokener_parse(out->body.ptr);
    cr_assert(body, "body is not JSON: %s", out->body.ptr);
    return body;
}

static json_object *body_of(const char *chat, compass_http_request *out)
{
    return body_on(inst, chat, out);
}

static json_object *at(json_object *o, const char *path)
{
    char key[64];
    const char *p = path;
    while (o && *p) {
        size_t n = strcspn(p, ".");
        memcpy(key, p, n);
        key[n] = '\0';
        if (json_object_is_type(o, json_type_array)) {
            char *end;
            long idx = strtol(key, &end, 10);
            o = *end ? NULL : json_object_array_get_idx(o, (size_t)idx);
        } else if (!json_object_object_get_ex(o, key, &o)) {
            o = NULL;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return o;
}

static const char *at_s(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static compass_str header(const compass_http_request *r, const char *name)
{
    return compass_header_get(r->headers, r->n_headers, name);
}

static void refused_on(void *i, const char *chat, const char *needle)
{
    compass_http_request out;
    compass_err err;
    int rc = build_on(i, chat, &out, &err);
    cr_assert_eq(rc, COMPASS_EUNSUPPORTED, "rc %d for %s", rc, chat);
    cr_assert(strstr(err.msg, needle), "message \"%s\" does not name \"%s\"", err.msg, needle);
}

static void refused(const char *chat, const char *needle)
{
    refused_on(inst, chat, needle);
}

#define MODEL "\"model\":\"meta/meta-llama-3-8b-instruct\""
#define SIMPLE_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]"
#define SIMPLE "{" MODEL "," SIMPLE_MSGS "}"
#define SIMPLE_STREAM "{" MODEL ",\"stream\":true," SIMPLE_MSGS "}"

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                            */
/* ---------------------------------------------------------------------------------------- */

Test(replicate, official_model_uses_the_models_endpoint_with_prefer_wait)
{
    compass_http_request out;
    json_object *b = body_of(SIMPLE, &out);

    cr_assert_eq(out.method, COMPASS_HTTP_POST);
    cr_assert(compass_str_eq(out.url, "https://api.replicate.com/v1/models/meta/"
                                      "meta-llama-3-8b-instruct/predictions"),
              "%.*s", (int)out.url.len, out.url.ptr);
    cr_assert(compass_str_eq(header(&out, "authorization"), "Bearer r8_test"));
    cr_assert(compass_str_eq(header(&out, "prefer"), "wait=60"));
    cr_assert(compass_str_eq(header(&out, "content-type"), "application/json"));
    cr_assert_eq(out.stream_format, COMPASS_STREAM_NONE);

    cr_assert_str_eq(at_s(b, "input.prompt"), "User: Hello\nAssistant:");
    cr_assert_null(at(b, "version"));
    cr_assert_null(at(b, "stream"));
    cr_assert_null(at(b, "input.system_prompt"));
    cr_assert_null(at(b, "input.max_tokens"));
    cr_assert_null(at(b, "input.temperature"));
    json_object_put(b);
}

Test(replicate, version_ids_use_the_predictions_endpoint)
{
    compass_http_request out;
    json_object *b = body_of("{\"model\":\"meta/llama-2-7b-chat:13c3cdee13ee059ab779f0291d29f6"
                             "338d3b0e3384c7f16e450ecf369ba52b82\"," SIMPLE_MSGS "}",
                             &out);
    cr_assert(compass_str_eq(out.url, "https://api.replicate.com/v1/predictions"), "%.*s",
              (int)out.url.len, out.url.ptr);
    cr_assert_str_eq(at_s(b, "version"),
                     "13c3cdee13ee059ab779f0291d29f6338d3b0e3384c7f16e450ecf369ba52b82");
    cr_assert_str_eq(at_s(b, "input.prompt"), "User: Hello\nAssistant:");
    json_object_put(b);

    b = body_of("{\"model\":\"5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa\","
                SIMPLE_MSGS "}", &out);
    cr_assert(compass_str_eq(out.url, "https://api.replicate.com/v1/predictions"));
    cr_assert_str_eq(at_s(b, "version"),
                     "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa");
    json_object_put(b);
}

Test(replicate, malformed_model_names_are_refused)
{
    static const char *const bad[] = {"a/b/c", "/name", "owner/", "owner/name:", "a b/c",
                                      "o/n:v:w"};
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char chat[256];
        compass_http_request out;
        compass_err err;
        snprintf(chat, sizeof(chat), "{\"model\":\"%s\"," SIMPLE_MSGS "}", bad[i]);
        cr_assert_eq(build_on(inst, chat, &out, &err), COMPASS_EINVAL, "%s", bad[i]);
        cr_assert(strstr(err.msg, "model"), "%s", err.msg);
    }
}

Test(replicate, base_url_wait_and_no_key)
{
    static const char *const opts[] = {"wait_seconds=5", NULL};
    compass_http_request out;
    compass_err err;
    void *i = make_instance("http://127.0.0.1:9/", opts);
    cr_assert_eq(build_on(i, SIMPLE, &out, &err), 0, "%s", err.msg);
    cr_assert(compass_str_eq(out.url, "http://127.0.0.1:9/v1/models/meta/meta-llama-3-8b-"
                                      "instruct/predictions"),
              "%.*s", (int)out.url.len, out.url.ptr);
    cr_assert(compass_str_eq(header(&out, "prefer"), "wait=5"));

    memset(&err, 0, sizeof(err));
    i = compass_fakehost_instance(fh, "keyless", NULL, NULL, NULL, &err);
    cr_assert(i, "%s", err.msg);
    cr_assert_eq(build_on(i, SIMPLE, &out, &err), 0, "%s", err.msg);
    cr_assert_eq(header(&out, "authorization").len, 0);
}

Test(replicate, bad_options_are_refused)
{
    static const char *const w0[] = {"wait_seconds=0", NULL};
    static const char *const w61[] = {"wait_seconds=61", NULL};
    static const char *const tp[] = {"template=llama9", NULL};
    static const char *const pf[] = {"prompt_field=", NULL};
    static const char *const ex[] = {"extra_input=[1,2]", NULL};
    const char *const *all[] = {w0, w61, tp, pf, ex};
    size_t k;
    compass_err err;
    for (k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        memset(&err, 0, sizeof(err));
        cr_assert_null(compass_fakehost_instance(fh, "bad", NULL, NULL, all[k], &err), "%s",
                       all[k][0]);
        cr_assert_eq(err.code, COMPASS_ECONFIG, "%s: %d %s", all[k][0], err.code, err.msg);
    }
    memset(&err, 0, sizeof(err));
    cr_assert_null(compass_fakehost_instance(fh, "bad", "ftp://x", NULL, NULL, &err));
    cr_assert(strstr(err.msg, "base_url"), "%s", err.msg);
}

Test(replicate, history_becomes_a_transcript_and_system_its_own_field)
{
    compass_http_request out;
    json_object *b = body_of(
        "{" MODEL ",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":\"Use English.\"},"
        "{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello!\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"How are you?\"}]}]}",
        &out);
    cr_assert_str_eq(at_s(b, "input.prompt"),
                     "User: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant:");
    cr_assert_str_eq(at_s(b, "input.system_prompt"), "Be brief.\n\nUse English.");
    json_object_put(b);
}

Test(replicate, empty_system_field_puts_system_text_in_the_prompt)
{
    static const char *const opts[] = {"system_field=", NULL};
    void *i = make_instance(NULL, opts);
    compass_http_request out;
    json_object *b = body_on(i, "{" MODEL ",\"messages\":[{\"role\":\"system\",\"content\":"
                                "\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"}]}",
                             &out);
    cr_assert_str_eq(at_s(b, "input.prompt"), "Be brief.\n\nUser: Hi\nAssistant:");
    cr_assert_null(at(b, "input.system_prompt"));
    json_object_put(b);
}

Test(replicate, single_and_chatml_templates)
{
    static const char *const single[] = {"template=single", "prompt_field=text", NULL};
    static const char *const chatml[] = {"template=chatml", "system_field=", NULL};
    compass_http_request out;
    void *i = make_instance(NULL, single);
    json_object *b = body_on(i, "{" MODEL ",\"messages\":[{\"role\":\"system\",\"content\":"
                                "\"S\"},{\"role\":\"user\",\"content\":\"Hi there\"}]}",
                             &out);
    cr_assert_str_eq(at_s(b, "input.text"), "Hi there");
    cr_assert_str_eq(at_s(b, "input.system_prompt"), "S");
    cr_assert_null(at(b, "input.prompt"));
    json_object_put(b);
    refused_on(i, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
                  "{\"role\":\"assistant\",\"content\":\"b\"},{\"role\":\"user\",\"content\":"
                  "\"c\"}]}",
               "single template");

    i = make_instance(NULL, chatml);
    b = body_on(i, "{" MODEL ",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                   "{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":"
                   "\"b\"},{\"role\":\"user\",\"content\":\"c\"}]}",
                &out);
    cr_assert_str_eq(at_s(b, "input.prompt"),
                     "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
                     "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
                     "<|im_start|>assistant\n");
    json_object_put(b);
}

Test(replicate, sampling_fields_map_per_option)
{
    compass_http_request out;
    json_object *b = body_of("{" MODEL ",\"max_tokens\":300,\"temperature\":0.7,\"top_p\":0.9,"
                             "\"seed\":42,\"stop\":[\"###\",\"User:\"],\"presence_penalty\":0.5,"
                             "\"frequency_penalty\":0," SIMPLE_MSGS "}",
                             &out);
    cr_assert_eq(json_object_get_int64(at(b, "input.max_tokens")), 300);
    cr_assert_str_eq(json_object_to_json_string(at(b, "input.temperature")), "0.7");
    cr_assert_str_eq(json_object_to_json_string(at(b, "input.top_p")), "0.9");
    cr_assert_eq(json_object_get_int64(at(b, "input.seed")), 42);
    cr_assert_str_eq(at_s(b, "input.stop_sequences"), "###,User:");
    cr_assert_str_eq(json_object_to_json_string(at(b, "input.presence_penalty")), "0.5");
    cr_assert_null(at(b, "input.frequency_penalty"));
    json_object_put(b);

    /* max_completion_tokens wins over max_tokens */
    b = body_of("{" MODEL ",\"max_tokens\":300,\"max_completion_tokens\":77," SIMPLE_MSGS "}",
                &out);
    cr_assert_eq(json_object_get_int64(at(b, "input.max_tokens")), 77);
    json_object_put(b);
}

Test(replicate, field_names_and_extra_input_come_from_options)
{
    static const char *const opts[] = {"max_tokens_field=max_new_tokens", "stop_field=stop",
                                       "extra_input={\"prompt_template\":\"{prompt}\","
                                       "\"max_new_tokens\":1}",
                                       NULL};
    void *i = make_instance(NULL, opts);
    compass_http_request out;
    json_object *b = body_on(i, "{" MODEL ",\"max_tokens\":12,\"stop\":\"END\"," SIMPLE_MSGS "}",
                             &out);
    cr_assert_eq(json_object_get_int64(at(b, "input.max_new_tokens")), 12, "%s", out.body.ptr);
    cr_assert_null(at(b, "input.max_tokens"));
    cr_assert_str_eq(at_s(b, "input.stop"), "END");
    cr_assert_str_eq(at_s(b, "input.prompt_template"), "{prompt}");
    json_object_put(b);
}

Test(replicate, unanswerable_parameters_are_refused_naming_them)
{
    refused("{" MODEL ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
            SIMPLE_MSGS "}", "tools");
    refused("{" MODEL ",\"n\":2," SIMPLE_MSGS "}", "n=2");
    refused("{" MODEL ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
            "{\"name\":\"x\",\"schema\":{}}}," SIMPLE_MSGS "}", "json_schema");
    refused("{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"https://example.com/cat.png\"}}]}]}", "image_url");
    refused("{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
            "\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
            "{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":"
            "\"c1\",\"content\":\"r\"}]}", "tool_calls");
    refused("{" MODEL ",\"stop\":[\"a,b\"]," SIMPLE_MSGS "}", "stop[0]");
    refused("{" MODEL ",\"messages\":[{\"role\":\"system\",\"content\":\"only\"}]}",
            "no user message");
}

Test(replicate, harmless_defaults_are_accepted)
{
    compass_http_request out;
    json_object *b = body_of("{" MODEL ",\"n\":1,\"response_format\":{\"type\":\"text\"},"
                             "\"tool_choice\":\"none\"," SIMPLE_MSGS "}",
                             &out);
    json_object_put(b);
}

Test(replicate, image_goes_to_image_field_when_set)
{
    static const char *const opts[] = {"image_field=image", NULL};
    void *i = make_instance(NULL, opts);
    compass_http_request out;
    json_object *b = body_on(i, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":["
                                "{\"type\":\"text\",\"text\":\"What is this?\"},{\"type\":"
                                "\"image_url\",\"image_url\":{\"url\":"
                                "\"https://e.com/a.png\"}}]}]}",
                             &out);
    cr_assert_str_eq(at_s(b, "input.image"), "https://e.com/a.png");
    cr_assert_str_eq(at_s(b, "input.prompt"), "User: What is this?\nAssistant:");
    json_object_put(b);
    refused_on(i, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                  "\"image_url\",\"image_url\":{\"url\":\"https://e.com/a.png\"}},{\"type\":"
                  "\"image_url\",\"image_url\":{\"url\":\"https://e.com/b.png\"}}]}]}",
               "only one image");
}

Test(replicate, stream_creation_asks_for_stream_without_wait)
{
    compass_http_request out;
    json_object *b = body_of(SIMPLE_STREAM, &out);
    cr_assert_eq(json_object_get_boolean(at(b, "stream")), 1);
    cr_assert_eq(header(&out, "prefer").len, 0);
    cr_assert_eq(out.stream_format, COMPASS_STREAM_NONE, "the creation answer is one JSON body");
    json_object_put(b);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                           */
/* ---------------------------------------------------------------------------------------- */

static const char SUCCEEDED[] =
    "{\"id\":\"gm3qorzdhgbfurvjtvhg6dckhu\",\"model\":\"meta/meta-llama-3-8b-instruct\","
    "\"version\":\"hidden\",\"input\":{\"prompt\":\"User: Hello\\nAssistant:\"},\"logs\":\"\","
    "\"output\":[\"\",\" Hello\",\"!\",\" How\",\" can\",\" I\",\" help\",\"?\"],"
    "\"data_removed\":false,\"error\":null,\"status\":\"succeeded\","
    "\"created_at\":\"2024-04-18T16:19:34.765994Z\",\"started_at\":\"2024-04-18T16:19:34.779Z\","
    "\"completed_at\":\"2024-04-18T16:19:35.791Z\",\"urls\":{\"cancel\":"
    "\"https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu/cancel\",\"get\":"
    "\"https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu\",\"stream\":"
    "\"https://stream.replicate.com/v1/files/bcwr-3okdfv3o2wehstv5f2okyftwxy57hhypqsi6osiim5iq\"},"
    "\"metrics\":{\"batch_size\":1,\"input_token_count\":12,\"output_token_count\":7,"
    "\"predict_time\":0.3,\"time_to_first_token\":0.05,\"tokens_per_second\":80.1}}";

static int parse(const char *body, compass_chat_response *r, compass_upstream_error *u,
                 compass_err *err)
{
    compass_http_response resp = compass_fakehost_http(201, body);
    memset(r, 0, sizeof(*r));
    memset(u, 0, sizeof(*u));
    memset(err, 0, sizeof(*err));
    return ops->parse_response(inst, req, &resp, r, u, err);
}

Test(replicate, succeeded_prediction_joins_output_and_reads_token_counts)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse(SUCCEEDED, &r, &u, &err), 0, "%s", err.msg);
    cr_assert(r.has_content);
    cr_assert(compass_str_eq(r.content, " Hello! How can I help?"), "%.*s", (int)r.content.len,
              r.content.ptr);
    cr_assert(compass_str_eq(r.id, "gm3qorzdhgbfurvjtvhg6dckhu"));
    cr_assert(compass_str_eq(r.model, "meta/meta-llama-3-8b-instruct"));
    cr_assert_eq(r.finish_reason, COMPASS_FINISH_STOP);
    cr_assert(r.usage.present);
    cr_assert_eq(r.usage.prompt_tokens, 12);
    cr_assert_eq(r.usage.completion_tokens, 7);
    cr_assert_eq(r.usage.total_tokens, 19);
    cr_assert_eq(r.n_tool_calls, 0);
}

Test(replicate, string_output_and_no_metrics)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse("{\"id\":\"p1\",\"status\":\"succeeded\",\"output\":\"hello Alice\","
                       "\"metrics\":{\"predict_time\":0.012683}}",
                       &r, &u, &err),
                 0, "%s", err.msg);
    cr_assert(compass_str_eq(r.content, "hello Alice"));
    cr_assert_not(r.usage.present);
}

Test(replicate, failed_and_canceled_predictions_are_upstream_errors)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse("{\"id\":\"p2\",\"status\":\"failed\",\"output\":null,\"error\":"
                       "\"CUDA out of memory\"}",
                       &r, &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert(strstr(u.message, "CUDA out of memory"), "%s", u.message);
    cr_assert(strstr(u.message, "p2"), "%s", u.message);
    cr_assert_str_eq(u.code, "prediction_failed");

    cr_assert_eq(parse("{\"id\":\"p3\",\"status\":\"canceled\",\"error\":null}", &r, &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert(strstr(u.message, "canceled"), "%s", u.message);
    cr_assert_str_eq(u.code, "prediction_canceled");
}

Test(replicate, unfinished_prediction_says_the_wait_ran_out)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    const char *st[] = {"starting", "processing"};
    size_t k;
    for (k = 0; k < 2; k++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"id\":\"p4\",\"status\":\"%s\",\"output\":null,\"urls\":{\"get\":"
                 "\"https://api.replicate.com/v1/predictions/p4\"}}", st[k]);
        req = compass_fakehost_req(fh);
        cr_assert_eq(parse(body, &r, &u, &err), COMPASS_EUPSTREAM);
        cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
        cr_assert(strstr(u.message, "wait=60"), "%s", u.message);
        cr_assert(strstr(u.message, "ran out"), "%s", u.message);
        cr_assert(strstr(u.message, st[k]), "%s", u.message);
    }
}

Test(replicate, garbage_and_odd_outputs_are_parse_errors)
{
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(parse("<html>oops</html>", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse("{\"id\":\"x\"}", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse("{\"status\":\"queued_forever\"}", &r, &u, &err), COMPASS_EPARSE);
    cr_assert_eq(parse("{\"status\":\"succeeded\",\"output\":[\"a\",{\"url\":\"x\"}]}", &r, &u,
                       &err),
                 COMPASS_EPARSE);
    cr_assert_eq(parse("{\"status\":\"succeeded\",\"output\":42}", &r, &u, &err), COMPASS_EPARSE);
    /* problem details inside a 2xx: an upstream error */
    cr_assert_eq(parse("{\"title\":\"Invalid input\",\"detail\":\"prompt is required\","
                       "\"status\":422}",
                       &r, &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_BAD_REQUEST);
}

/* ---------------------------------------------------------------------------------------- */
/* follow and the stream                                                                    */
/* ---------------------------------------------------------------------------------------- */

static const char STARTING[] =
    "{\"id\":\"ufawqhfynnddngldkgtslldrkq\",\"model\":\"meta/meta-llama-3-8b-instruct\","
    "\"version\":\"hidden\",\"input\":{\"prompt\":\"User: Hello\\nAssistant:\"},\"logs\":\"\","
    "\"output\":null,\"error\":null,\"status\":\"starting\","
    "\"created_at\":\"2024-04-18T16:19:34.765994Z\",\"urls\":{"
    "\"cancel\":\"https://api.replicate.com/v1/predictions/ufawqhfynnddngldkgtslldrkq/cancel\","
    "\"get\":\"https://api.replicate.com/v1/predictions/ufawqhfynnddngldkgtslldrkq\","
    "\"stream\":\"https://stream.replicate.com/v1/files/qoxq-ogtlqmfsobyynbhfyxfyeg4uhtxqbhg\"}}";

/* Builds a stream request on instance i, then runs follow on the creation answer body. */
static int follow_on(void *i, const char *chat, const char *answer, compass_http_request *next,
                     compass_err *err)
{
    compass_http_request out;
    compass_http_response resp = compass_fakehost_http(201, answer);
    cr_assert_eq(build_on(i, chat, &out, err), 0, "%s", err->msg);
    memset(next, 0, sizeof(*next));
    return ops->follow(i, req, &resp, next, err);
}

Test(replicate, follow_describes_the_stream_get)
{
    compass_http_request next;
    compass_err err;
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM, STARTING, &next, &err), 0, "%s", err.msg);
    cr_assert_eq(next.method, COMPASS_HTTP_GET);
    cr_assert(compass_str_eq(next.url, "https://stream.replicate.com/v1/files/"
                                       "qoxq-ogtlqmfsobyynbhfyxfyeg4uhtxqbhg"));
    cr_assert_eq(next.stream_format, COMPASS_STREAM_SSE);
    cr_assert(compass_str_eq(header(&next, "accept"), "text/event-stream"));
    cr_assert(compass_str_eq(header(&next, "cache-control"), "no-store"));
    cr_assert(compass_str_eq(header(&next, "authorization"), "Bearer r8_test"));
    cr_assert_eq(next.body.len, 0);
}

Test(replicate, follow_declines_non_streams_and_answers_without_a_stream_url)
{
    compass_http_request next, out;
    compass_http_response resp = compass_fakehost_http(201, STARTING);
    compass_err err;

    /* a non-stream request */
    cr_assert_eq(build_on(inst, SIMPLE, &out, &err), 0);
    cr_assert_eq(ops->follow(inst, req, &resp, &next, &err), COMPASS_ENOTFOUND);
    /* a stream with no stream URL; parse_response then says the model cannot stream */
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM, "{\"id\":\"p9\",\"status\":\"starting\","
                                                "\"urls\":{\"get\":\"https://x/p9\"}}",
                           &next, &err),
                 COMPASS_ENOTFOUND);
    {
        compass_chat_response r;
        compass_upstream_error u;
        cr_assert_eq(parse("{\"id\":\"p9\",\"status\":\"starting\",\"urls\":{}}", &r, &u, &err),
                     COMPASS_EUPSTREAM);
        cr_assert(strstr(u.message, "does not support streaming"), "%s", u.message);
    }
    /* a stream that already finished in the creation answer: parsed as is */
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM, SUCCEEDED, &next, &err), COMPASS_ENOTFOUND);
    /* no request state at all (another host path): nothing to follow */
    req = compass_fakehost_req(fh);
    cr_assert_eq(ops->follow(inst, req, &resp, &next, &err), COMPASS_ENOTFOUND);
}

Test(replicate, follow_keeps_the_token_to_its_own_hosts)
{
    compass_http_request next;
    compass_err err;
    void *local = make_instance("http://127.0.0.1:8080", NULL);
    /* same origin as base_url: token sent, http allowed */
    cr_assert_eq(follow_on(local, SIMPLE_STREAM,
                           "{\"id\":\"a\",\"status\":\"starting\",\"urls\":{\"stream\":"
                           "\"http://127.0.0.1:8080/v1/streams/a\"}}",
                           &next, &err),
                 0, "%s", err.msg);
    cr_assert(compass_str_eq(header(&next, "authorization"), "Bearer r8_test"));
    /* another host: followed, without the token */
    cr_assert_eq(follow_on(local, SIMPLE_STREAM,
                           "{\"id\":\"a\",\"status\":\"starting\",\"urls\":{\"stream\":"
                           "\"https://cdn.example.com/s/a\"}}",
                           &next, &err),
                 0, "%s", err.msg);
    cr_assert_eq(header(&next, "authorization").len, 0);
    /* a look-alike of replicate.com gets no token */
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM,
                           "{\"id\":\"a\",\"status\":\"starting\",\"urls\":{\"stream\":"
                           "\"https://evilreplicate.com/s/a\"}}",
                           &next, &err),
                 0, "%s", err.msg);
    cr_assert_eq(header(&next, "authorization").len, 0);
    /* http:// from an https base is refused */
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM,
                           "{\"id\":\"a\",\"status\":\"starting\",\"urls\":{\"stream\":"
                           "\"http://stream.replicate.com/s/a\"}}",
                           &next, &err),
                 COMPASS_EPARSE);
    cr_assert(strstr(err.msg, "https"), "%s", err.msg);
}

static const char STREAM[] =
    "event: output\nid: 1690212292:0\ndata: Once upon\n\n"
    "event: output\nid: 1690212292:1\ndata:  a time\n\n"
    "event: output\nid: 1690212292:2\ndata: ,\ndata: there\n\n"
    "event: output\nid: 1690212292:3\ndata: \n\n"
    "event: done\ndata: {}\n\n";

static int feed(const char *sse, compass_upstream_error *u, compass_err *err)
{
    memset(u, 0, sizeof(*u));
    memset(err, 0, sizeof(*err));
    return compass_fakehost_feed_sse(fh, inst, compass_str_c(sse), u, err);
}

Test(replicate, stream_events_become_role_content_and_finish)
{
    compass_http_request next;
    compass_upstream_error u;
    compass_err err;
    size_t n, i, roles = 0, finishes = 0;

    cr_assert_eq(follow_on(inst, SIMPLE_STREAM, STARTING, &next, &err), 0, "%s", err.msg);
    cr_assert_eq(feed(STREAM, &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_str_eq(compass_fakehost_content(fh), "Once upon a time,\nthere");
    n = compass_fakehost_n_deltas(fh);
    for (i = 0; i < n; i++) {
        const compass_chat_delta *d = compass_fakehost_delta(fh, i);
        if (d->role) {
            roles++;
            cr_assert_eq(i, 0, "the role comes first");
            cr_assert_eq(d->role, COMPASS_ROLE_ASSISTANT);
            cr_assert(compass_str_eq(d->id, "ufawqhfynnddngldkgtslldrkq"));
        }
        if (d->finish_reason) {
            finishes++;
            cr_assert_eq(i, n - 1, "the finish comes last");
            cr_assert_eq(d->finish_reason, COMPASS_FINISH_STOP);
        }
    }
    cr_assert_eq(roles, 1);
    cr_assert_eq(finishes, 1);
}

Test(replicate, done_without_output_still_sends_role_and_finish)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed("event: done\ndata: {}\n\n", &u, &err), COMPASS_STREAM_END, "%s", err.msg);
    cr_assert_eq(compass_fakehost_n_deltas(fh), 2);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(compass_fakehost_delta(fh, 1)->finish_reason, COMPASS_FINISH_STOP);
}

Test(replicate, role_is_sent_once_per_request)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed("event: output\ndata: a\n\n", &u, &err), 0);
    cr_assert_eq(feed("event: output\ndata: b\n\nevent: done\ndata: {}\n\n", &u, &err),
                 COMPASS_STREAM_END);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(compass_fakehost_delta(fh, 2)->role, 0, "a second role delta");
    /* a new request starts again */
    req = compass_fakehost_req(fh);
    cr_assert_eq(feed("event: output\ndata: c\n\n", &u, &err), 0);
    cr_assert_eq(compass_fakehost_delta(fh, 0)->role, COMPASS_ROLE_ASSISTANT);
}

Test(replicate, done_with_a_reason_and_error_events_are_upstream_errors)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed("event: output\ndata: a\n\nevent: done\ndata: {\"reason\":\"canceled\"}\n\n",
                      &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert(strstr(u.message, "canceled"), "%s", u.message);

    req = compass_fakehost_req(fh);
    cr_assert_eq(feed("event: done\ndata: {\"reason\":\"error\"}\n\n", &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert(strstr(u.message, "failed"), "%s", u.message);

    req = compass_fakehost_req(fh);
    cr_assert_eq(feed("event: output\ndata: a\n\nevent: error\ndata: {\"detail\":\"Model "
                      "crashed: CUDA error\"}\n\n",
                      &u, &err),
                 COMPASS_EUPSTREAM);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert(strstr(u.message, "Model crashed: CUDA error"), "%s", u.message);

    req = compass_fakehost_req(fh);
    cr_assert_eq(feed("event: error\ndata: plain words\n\n", &u, &err), COMPASS_EUPSTREAM);
    cr_assert(strstr(u.message, "plain words"), "%s", u.message);
}

Test(replicate, unknown_events_are_ignored_and_bad_done_is_a_parse_error)
{
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(feed("event: logs\ndata: loading weights\n\n: comment\n\n", &u, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(compass_fakehost_n_deltas(fh), 0);
    cr_assert(strstr(compass_fakehost_log(fh), "logs"), "%s", compass_fakehost_log(fh));
    cr_assert_eq(feed("event: done\ndata: {not json\n\n", &u, &err), COMPASS_EPARSE);
}

/* ---------------------------------------------------------------------------------------- */
/* classify_error                                                                           */
/* ---------------------------------------------------------------------------------------- */

static void classify(int status, const char *body, const compass_header *hs, size_t n,
                     compass_upstream_error *u)
{
    compass_http_response resp = compass_fakehost_http(status, body);
    resp.headers = hs;
    resp.n_headers = n;
    memset(u, 0x55, sizeof(*u));
    compass_uerr_init(u, COMPASS_OUTCOME_FATAL, status);
    ops->classify_error(inst, req, &resp, u);
}

Test(replicate, classify_error_maps_problem_details)
{
    static const struct {
        int status;
        int outcome;
        const char *type;
    } cases[] = {
        {401, COMPASS_OUTCOME_AUTH, "authentication_error"},
        {402, COMPASS_OUTCOME_AUTH, "insufficient_quota"},
        {403, COMPASS_OUTCOME_AUTH, "permission_error"},
        {404, COMPASS_OUTCOME_NOT_FOUND, "not_found_error"},
        {422, COMPASS_OUTCOME_BAD_REQUEST, "invalid_request_error"},
        {400, COMPASS_OUTCOME_BAD_REQUEST, "invalid_request_error"},
        {429, COMPASS_OUTCOME_RATE_LIMITED, "rate_limit_error"},
        {500, COMPASS_OUTCOME_RETRYABLE, "server_error"},
        {503, COMPASS_OUTCOME_RETRYABLE, "server_error"},
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        compass_upstream_error u;
        snprintf(body, sizeof(body),
                 "{\"title\":\"Problem %d\",\"detail\":\"Detail for %d\",\"status\":%d}",
                 cases[i].status, cases[i].status, cases[i].status);
        classify(cases[i].status, body, NULL, 0, &u);
        cr_assert_eq(u.outcome, cases[i].outcome, "status %d", cases[i].status);
        cr_assert_eq(u.http_status, cases[i].status);
        cr_assert_str_eq(u.type, cases[i].type, "status %d", cases[i].status);
        cr_assert(strstr(u.message, "Detail for"), "%s", u.message);
        cr_assert(strstr(u.message, "Problem"), "%s", u.message);
    }
}

Test(replicate, a_failed_stream_call_is_retryable_and_says_so)
{
    compass_http_request next;
    compass_upstream_error u;
    compass_err err;
    cr_assert_eq(follow_on(inst, SIMPLE_STREAM, STARTING, &next, &err), 0, "%s", err.msg);
    classify(404, "{\"title\":\"Not found\",\"detail\":\"Not found.\",\"status\":404}", NULL, 0,
             &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert(strstr(u.message, "stream URL"), "%s", u.message);
    classify(401, "", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
}

Test(replicate, classify_error_reads_retry_after)
{
    compass_upstream_error u;
    compass_header hs[1];
    hs[0].name = compass_str_c("Retry-After");
    hs[0].value = compass_str_c("7");
    classify(429, "{\"title\":\"Request was throttled\",\"detail\":\"Request was throttled. "
                  "Expected available in 3 seconds.\",\"status\":429}",
             hs, 1, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RATE_LIMITED);
    cr_assert_eq(u.retry_after_ms, 7000, "the header wins");
    cr_assert_str_eq(u.code, "rate_limit_exceeded");

    classify(429, "{\"title\":\"Request was throttled\",\"detail\":\"Request was throttled. "
                  "Expected available in 3 seconds.\",\"status\":429}",
             NULL, 0, &u);
    cr_assert_eq(u.retry_after_ms, 3000, "from the detail");

    hs[0].value = compass_str_c("Wed, 21 Oct 2015 07:28:00 GMT");
    classify(503, "", hs, 1, &u);
    cr_assert_eq(u.retry_after_ms, 0);
}

Test(replicate, classify_error_without_problem_details_uses_the_status)
{
    compass_upstream_error u;
    classify(502, "<html>bad gateway</html>", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_RETRYABLE);
    cr_assert(strstr(u.message, "502"), "%s", u.message);
    classify(401, "", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_AUTH);
    cr_assert_eq(u.retry_after_ms, -1);
    classify(404, "{\"nope\":1}", NULL, 0, &u);
    cr_assert_eq(u.outcome, COMPASS_OUTCOME_NOT_FOUND);
}

/* ---------------------------------------------------------------------------------------- */
/* out of memory                                                                            */
/* ---------------------------------------------------------------------------------------- */

static const char RICH_CHAT[] =
    "{" MODEL ",\"max_tokens\":300,\"temperature\":0.5,\"seed\":1,\"stop\":[\"X\",\"Y\"],"
    "\"stream\":true,\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"Look\"},{\"role\":\"assistant\",\"content\":\"Yes\"},"
    "{\"role\":\"user\",\"content\":\"More\"}]}";

Test(replicate, every_failed_allocation_is_a_clean_enomem)
{
    long nth;
    int saw_oom = 0;
    for (nth = 1; nth <= 40; nth++) {
        compass_chat_request in;
        compass_http_request out, next;
        compass_chat_response r;
        compass_upstream_error u;
        compass_http_response resp = compass_fakehost_http(201, SUCCEEDED);
        compass_http_response start = compass_fakehost_http(201, STARTING);
        compass_err err;
        int rc;

        /* build_request then follow */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        cr_assert_eq(compass_fakehost_parse_chat(fh, RICH_CHAT, &in, &err), 0, "%s", err.msg);
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->build_request(inst, req, &in, &out, &err);
        cr_assert(rc == 0 || rc == COMPASS_ENOMEM, "build nth=%ld rc=%d %s", nth, rc, err.msg);
        if (rc) {
            cr_assert_eq(err.code, COMPASS_ENOMEM);
            saw_oom++;
        } else {
            memset(&err, 0, sizeof(err));
            rc = ops->follow(inst, req, &start, &next, &err);
            cr_assert(rc == 0 || rc == COMPASS_ENOMEM, "follow nth=%ld rc=%d %s", nth, rc,
                      err.msg);
        }

        /* parse_response */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = ops->parse_response(inst, req, &resp, &r, &u, &err);
        cr_assert(rc == 0 || rc == COMPASS_ENOMEM, "parse nth=%ld rc=%d %s", nth, rc, err.msg);
        if (rc)
            cr_assert_eq(err.code, COMPASS_ENOMEM);

        /* stream */
        req = compass_fakehost_req(fh);
        memset(&err, 0, sizeof(err));
        compass_fakehost_fail_alloc_at(fh, nth);
        rc = compass_fakehost_feed_sse(fh, inst, compass_str_c(STREAM), &u, &err);
        cr_assert(rc == COMPASS_STREAM_END || rc == COMPASS_ENOMEM, "stream nth=%ld rc=%d %s",
                  nth, rc, err.msg);
        if (rc == COMPASS_ENOMEM)
            cr_assert_eq(err.code, COMPASS_ENOMEM);

        /* instance_new */
        compass_fakehost_fail_alloc_at(fh, nth);
        {
            void *i;
            memset(&err, 0, sizeof(err));
            i = compass_fakehost_instance(fh, "oom", NULL, NULL, NULL, &err);
            if (!i)
                cr_assert_eq(err.code, COMPASS_ENOMEM, "instance nth=%ld: %s", nth, err.msg);
        }
    }
    compass_fakehost_fail_alloc_at(fh, 0);
    cr_assert(saw_oom > 3, "only %d build failures were injected", saw_oom);
}

/* ---------------------------------------------------------------------------------------- */
/* Characters json-c 0.16 alone would replace (pair_cases.h), as the user sees them          */
/* ---------------------------------------------------------------------------------------- */

static void output_pair(void *ctx, const char *head, size_t i)
{
    char b[256];
    compass_chat_response r;
    compass_upstream_error u;
    compass_err err;
    (void)ctx;
    pair_fill(b, sizeof(b), "{^\"id\":\"p1\",\"status\":\"succeeded\",\"output\":[\"a@\",\"b\"]}",
              head, i);
    cr_assert_eq(parse(b, &r, &u, &err), 0, "%s", err.msg);
    cr_assert(pair_is(r.content, "a", i, "b"), "%s", b);
}

Test(replicate, output_keeps_characters_json_c_would_replace)
{
    pair_each(output_pair, NULL);
}

/* An upstream's error detail reaches the client. */
static void classify_422(void *ctx, const char *body, compass_upstream_error *u)
{
    (void)ctx;
    classify(422, body, NULL, 0, u);
}

Test(replicate, error_detail_keeps_characters_json_c_would_replace)
{
    pair_error_each("{^\"title\":\"Bad\",\"detail\":\"bad @\",\"status\":422}", classify_422,
                    NULL);
}
