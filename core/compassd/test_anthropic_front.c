/* Unit tests of the Anthropic-format front door's translation module. Every translated body is
 * re-parsed with json-c and checked field by field. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic_front.h"
#include "canon.h"
#include "pair_cases.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

/* Walks a dotted path ("messages.1.content.0.text"); array steps are decimal indexes. */
static json_object *at(json_object *o, const char *path)
{
    char key[128];
    const char *p = path;
    while (o && *p) {
        size_t n = 0;
        while (p[n] && p[n] != '.')
            n++;
        cr_assert_lt(n, sizeof(key));
        memcpy(key, p, n);
        key[n] = '\0';
        p += n;
        if (*p == '.')
            p++;
        if (json_object_is_type(o, json_type_array)) {
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                cr_assert(key[i] >= '0' && key[i] <= '9', "bad index '%s' in %s", key, path);
                idx = idx * 10 + (size_t)(key[i] - '0');
            }
            o = idx < json_object_array_length(o) ? json_object_array_get_idx(o, idx) : NULL;
        } else if (json_object_is_type(o, json_type_object)) {
            json_object *v = NULL;
            if (!json_object_object_get_ex(o, key, &v))
                return NULL;
            o = v;
        } else {
            return NULL;
        }
    }
    return o;
}

static int present(json_object *o, const char *path)
{
    /* distinguishes a JSON null (present) from absent: look the last step up by hand */
    const char *dot = strrchr(path, '.');
    json_object *parent = o;
    const char *last = path;
    if (dot) {
        char head[256];
        size_t n = (size_t)(dot - path);
        cr_assert_lt(n, sizeof(head));
        memcpy(head, path, n);
        head[n] = '\0';
        parent = at(o, head);
        last = dot + 1;
    }
    if (!parent || !json_object_is_type(parent, json_type_object))
        return at(o, path) != NULL;
    return json_object_object_get_ex(parent, last, NULL);
}

static const char *s_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    cr_assert(v != NULL, "missing %s", path);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string", path);
    return json_object_get_string(v);
}

static int64_t i_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    cr_assert(v != NULL, "missing %s", path);
    cr_assert(json_object_is_type(v, json_type_int), "%s is not an integer", path);
    return json_object_get_int64(v);
}

static double d_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    cr_assert(v != NULL, "missing %s", path);
    cr_assert(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int),
              "%s is not a number", path);
    return json_object_get_double(v);
}

static int b_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    cr_assert(v != NULL, "missing %s", path);
    cr_assert(json_object_is_type(v, json_type_boolean), "%s is not a boolean", path);
    return json_object_get_boolean(v);
}

static size_t len_at(json_object *o, const char *path)
{
    json_object *v = path && *path ? at(o, path) : o;
    cr_assert(v != NULL, "missing %s", path);
    if (json_object_is_type(v, json_type_array))
        return json_object_array_length(v);
    cr_assert(json_object_is_type(v, json_type_object), "%s is not a container", path);
    return (size_t)json_object_object_length(v);
}

static json_object *parse_or_die(const char *s, size_t n)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, s, (int)n);
    int ok = json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    cr_assert(ok && o, "not valid JSON: %.*s", (int)n, s);
    return o;
}

/* Translates an Anthropic request that must succeed; returns the OpenAI request parsed. */
static json_object *to_openai(const char *json, int *stream)
{
    cps_buf out;
    compass_err err = {0, ""};
    int st = -1;
    cps_buf_init(&out);
    int rc = cpd_anth_request_to_openai(json, strlen(json), &out, &st, &err);
    cr_assert_eq(rc, 0, "refused (%d): %s", rc, err.msg);
    cr_assert(st == 0 || st == 1);
    if (stream)
        *stream = st;
    json_object *o = parse_or_die(out.ptr, out.len);
    cps_buf_free(&out);
    return o;
}

/* A request that must be refused with exactly code and message; out stays untouched. */
static void refused(const char *json, int code, const char *msg)
{
    cps_buf out;
    compass_err err = {0, ""};
    int st = 7;
    cps_buf_init(&out);
    cps_buf_puts(&out, "keep");
    int rc = cpd_anth_request_to_openai(json, strlen(json), &out, &st, &err);
    cr_assert_eq(rc, code, "rc %d (want %d) for %s: %s", rc, code, json, err.msg);
    cr_assert_eq(err.code, code);
    if (msg)
        cr_assert_str_eq(err.msg, msg);
    cr_assert_str_eq(out.ptr, "keep", "output written on refusal");
    cr_assert_eq(st, 0);
    cps_buf_free(&out);
}

static json_object *from_openai(const char *json)
{
    cps_buf out;
    compass_err err = {0, ""};
    cps_buf_init(&out);
    int rc = cpd_anth_response_from_openai(json, strlen(json), &out, &err);
    cr_assert_eq(rc, 0, "failed (%d): %s", rc, err.msg);
    json_object *o = parse_or_die(out.ptr, out.len);
    cps_buf_free(&out);
    return o;
}

#define BASE "\"model\":\"claude-sonnet-4\",\"max_tokens\":256"

/* ---- request mapping -------------------------------------------------------------------------- */

Test(request, minimal_string_message)
{
    int st;
    json_object *o = to_openai("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                               &st);
    cr_assert_eq(st, 0);
    cr_assert_str_eq(s_at(o, "model"), "claude-sonnet-4");
    cr_assert_eq(i_at(o, "max_tokens"), 256);
    cr_assert_eq(len_at(o, "messages"), 1);
    cr_assert_str_eq(s_at(o, "messages.0.role"), "user");
    cr_assert_str_eq(s_at(o, "messages.0.content"), "Hi");
    cr_assert_eq(len_at(o, "messages.0"), 2);
    /* nothing else was invented */
    cr_assert_eq(len_at(o, ""), 3);
    cr_assert(!present(o, "stream"));
    json_object_put(o);
}

/* A client's text keeps the characters json-c 0.16 reads as U+FFFD (an escaped surrogate
 * pair, as Python's json.dumps sends them), in a message and in a tool's input. */
Test(request, keeps_characters_json_c_would_replace)
{
    for (size_t i = 0; i < N_PAIR_CASES; i++) {
        char body[512];
        pair_fill(body, sizeof(body),
                  "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a@b\"},"
                  "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
                  "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"q\":\"a@\"}}]},"
                  "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
                  "\"tool_use_id\":\"t1\",\"content\":\"ok\"}]}]}",
                  "", i);
        json_object *o = to_openai(body, NULL);
        const char *c = s_at(o, "messages.0.content");
        cr_assert(pair_is((compass_str){c, strlen(c)}, "a", i, "b"), "case %zu: %s", i, c);
        const char *args = s_at(o, "messages.1.tool_calls.0.function.arguments");
        cr_assert(pair_q_is(args, "a", i), "case %zu: %s", i, args);
        json_object_put(o);
    }
}

Test(request, model_passes_through_unchanged)
{
    json_object *o = to_openai("{\"model\":\"fast\",\"max_tokens\":1,\"messages\":[{\"role\":"
                               "\"user\",\"content\":\"x\"}]}",
                               NULL);
    cr_assert_str_eq(s_at(o, "model"), "fast");
    json_object_put(o);
}

Test(request, system_string_leads)
{
    json_object *o = to_openai("{" BASE ",\"system\":\"Be brief.\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"Hi\"}]}",
                               NULL);
    cr_assert_eq(len_at(o, "messages"), 2);
    cr_assert_str_eq(s_at(o, "messages.0.role"), "system");
    cr_assert_str_eq(s_at(o, "messages.0.content"), "Be brief.");
    cr_assert_str_eq(s_at(o, "messages.1.role"), "user");
    json_object_put(o);
}

Test(request, system_blocks_become_text_parts)
{
    json_object *o = to_openai(
        "{" BASE ",\"system\":[{\"type\":\"text\",\"text\":\"One.\"},{\"type\":\"text\",\"text\":"
        "\"Two.\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":\"user\","
        "\"content\":\"Hi\"}]}",
        NULL);
    cr_assert_str_eq(s_at(o, "messages.0.role"), "system");
    cr_assert_eq(len_at(o, "messages.0.content"), 2);
    cr_assert_str_eq(s_at(o, "messages.0.content.0.type"), "text");
    cr_assert_str_eq(s_at(o, "messages.0.content.0.text"), "One.");
    cr_assert_str_eq(s_at(o, "messages.0.content.1.text"), "Two.");
    cr_assert(!present(o, "messages.0.content.1.cache_control"));
    json_object_put(o);
}

Test(request, user_blocks_text_and_images)
{
    json_object *o = to_openai(
        "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"What is this?\"},"
        "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
        "\"data\":\"iVBORw0KGgo=\"}},"
        "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x.test/a.jpg\"}}]}]}",
        NULL);
    cr_assert_eq(len_at(o, "messages"), 1);
    cr_assert_str_eq(s_at(o, "messages.0.role"), "user");
    cr_assert_eq(len_at(o, "messages.0.content"), 3);
    cr_assert_str_eq(s_at(o, "messages.0.content.0.type"), "text");
    cr_assert_str_eq(s_at(o, "messages.0.content.0.text"), "What is this?");
    cr_assert_str_eq(s_at(o, "messages.0.content.1.type"), "image_url");
    cr_assert_str_eq(s_at(o, "messages.0.content.1.image_url.url"),
                     "data:image/png;base64,iVBORw0KGgo=");
    cr_assert_str_eq(s_at(o, "messages.0.content.2.type"), "image_url");
    cr_assert_str_eq(s_at(o, "messages.0.content.2.image_url.url"), "https://x.test/a.jpg");
    json_object_put(o);
}

Test(request, tool_use_and_tool_result_round_trip)
{
    json_object *o = to_openai(
        "{" BASE ",\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Checking.\"},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":"
        "{\"city\":\"Paris\",\"days\":2}},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_weather\",\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":["
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"18C\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_2\",\"is_error\":true,"
        "\"content\":[{\"type\":\"text\",\"text\":\"city missing\"}]},"
        "{\"type\":\"text\",\"text\":\"Thanks\"}]}]}",
        NULL);
    cr_assert_eq(len_at(o, "messages"), 5);
    cr_assert_str_eq(s_at(o, "messages.0.role"), "user");
    /* the assistant turn: text as parts, tool_use as tool_calls */
    cr_assert_str_eq(s_at(o, "messages.1.role"), "assistant");
    cr_assert_eq(len_at(o, "messages.1.content"), 1);
    cr_assert_str_eq(s_at(o, "messages.1.content.0.text"), "Checking.");
    cr_assert_eq(len_at(o, "messages.1.tool_calls"), 2);
    cr_assert_str_eq(s_at(o, "messages.1.tool_calls.0.id"), "toolu_1");
    cr_assert_str_eq(s_at(o, "messages.1.tool_calls.0.type"), "function");
    cr_assert_str_eq(s_at(o, "messages.1.tool_calls.0.function.name"), "get_weather");
    const char *args = s_at(o, "messages.1.tool_calls.0.function.arguments");
    json_object *a = parse_or_die(args, strlen(args));
    cr_assert_str_eq(s_at(a, "city"), "Paris");
    cr_assert_eq(i_at(a, "days"), 2);
    cr_assert_eq(len_at(a, ""), 2);
    json_object_put(a);
    cr_assert_str_eq(s_at(o, "messages.1.tool_calls.1.id"), "toolu_2");
    cr_assert_str_eq(s_at(o, "messages.1.tool_calls.1.function.arguments"), "{}");
    /* the user turn: tool messages first, in order, then the rest as a user message */
    cr_assert_str_eq(s_at(o, "messages.2.role"), "tool");
    cr_assert_str_eq(s_at(o, "messages.2.tool_call_id"), "toolu_1");
    cr_assert_str_eq(s_at(o, "messages.2.content"), "18C");
    cr_assert_str_eq(s_at(o, "messages.3.role"), "tool");
    cr_assert_str_eq(s_at(o, "messages.3.tool_call_id"), "toolu_2");
    cr_assert_eq(len_at(o, "messages.3.content"), 2);
    cr_assert_str_eq(s_at(o, "messages.3.content.0.text"), "Error: ");
    cr_assert_str_eq(s_at(o, "messages.3.content.1.text"), "city missing");
    cr_assert_str_eq(s_at(o, "messages.4.role"), "user");
    cr_assert_eq(len_at(o, "messages.4.content"), 1);
    cr_assert_str_eq(s_at(o, "messages.4.content.0.text"), "Thanks");
    json_object_put(o);
}

Test(request, tool_result_variants)
{
    json_object *o = to_openai(
        "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"go\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\","
        "\"input\":{\"q\":\"a\\\"b\"}},{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":\"f\","
        "\"input\":{}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"t2\",\"is_error\":true,\"content\":\"boom\"}"
        "]}]}",
        NULL);
    cr_assert_eq(len_at(o, "messages"), 4);
    cr_assert_str_eq(s_at(o, "messages.1.role"), "assistant");
    cr_assert(present(o, "messages.1.content"));
    cr_assert_null(at(o, "messages.1.content"));
    const char *args = s_at(o, "messages.1.tool_calls.0.function.arguments");
    json_object *a = parse_or_die(args, strlen(args));
    cr_assert_str_eq(s_at(a, "q"), "a\"b");
    json_object_put(a);
    cr_assert_str_eq(s_at(o, "messages.2.role"), "tool");
    cr_assert_str_eq(s_at(o, "messages.2.content"), "");
    cr_assert_str_eq(s_at(o, "messages.3.content"), "Error: boom");
    /* no user message for a turn of tool results only */
    json_object_put(o);
}

Test(request, scalars_stream_metadata)
{
    int st = 0;
    json_object *o = to_openai(
        "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0.25,"
        "\"top_p\":0.9,\"top_k\":40,\"stop_sequences\":[\"END\",\"\\n\\nHuman:\"],"
        "\"stream\":true,\"metadata\":{\"user_id\":\"u-42\"},\"thinking\":{\"type\":\"enabled\","
        "\"budget_tokens\":1024}}",
        &st);
    cr_assert_eq(st, 1);
    cr_assert_float_eq(d_at(o, "temperature"), 0.25, 1e-12);
    cr_assert_float_eq(d_at(o, "top_p"), 0.9, 1e-12);
    cr_assert(!present(o, "top_k"));
    cr_assert(!present(o, "thinking"));
    cr_assert_eq(len_at(o, "stop"), 2);
    cr_assert_str_eq(s_at(o, "stop.0"), "END");
    cr_assert_str_eq(s_at(o, "stop.1"), "\n\nHuman:");
    cr_assert(b_at(o, "stream"));
    cr_assert(b_at(o, "stream_options.include_usage"));
    cr_assert_str_eq(s_at(o, "user"), "u-42");
    cr_assert(!present(o, "metadata"));
    cr_assert(!present(o, "stop_sequences"));
    json_object_put(o);
}

Test(request, stream_false_and_nulls)
{
    int st = 1;
    json_object *o = to_openai("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                               "\"stream\":false,\"temperature\":null,\"system\":null,"
                               "\"metadata\":{\"user_id\":null}}",
                               &st);
    cr_assert_eq(st, 0);
    cr_assert(!present(o, "stream"));
    cr_assert(!present(o, "temperature"));
    cr_assert(!present(o, "user"));
    cr_assert_eq(len_at(o, "messages"), 1);
    json_object_put(o);
}

Test(request, tools_and_choices)
{
    static const char *tools =
        ",\"tools\":[{\"name\":\"get_weather\",\"description\":\"Weather for a city\","
        "\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
        "\"required\":[\"city\"]}},{\"name\":\"noop\",\"input_schema\":{\"type\":\"object\"},"
        "\"type\":\"custom\"}]";
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]%s,\"tool_choice\":"
             "{\"type\":\"auto\"}}",
             tools);
    json_object *o = to_openai(buf, NULL);
    cr_assert_eq(len_at(o, "tools"), 2);
    cr_assert_str_eq(s_at(o, "tools.0.type"), "function");
    cr_assert_str_eq(s_at(o, "tools.0.function.name"), "get_weather");
    cr_assert_str_eq(s_at(o, "tools.0.function.description"), "Weather for a city");
    cr_assert_str_eq(s_at(o, "tools.0.function.parameters.type"), "object");
    cr_assert_str_eq(s_at(o, "tools.0.function.parameters.properties.city.type"), "string");
    cr_assert_str_eq(s_at(o, "tools.0.function.parameters.required.0"), "city");
    cr_assert_str_eq(s_at(o, "tools.1.function.name"), "noop");
    cr_assert(!present(o, "tools.1.function.description"));
    cr_assert_str_eq(s_at(o, "tool_choice"), "auto");
    cr_assert(!present(o, "parallel_tool_calls"));
    json_object_put(o);

    snprintf(buf, sizeof(buf),
             "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]%s,\"tool_choice\":"
             "{\"type\":\"any\",\"disable_parallel_tool_use\":true}}",
             tools);
    o = to_openai(buf, NULL);
    cr_assert_str_eq(s_at(o, "tool_choice"), "required");
    cr_assert_eq(b_at(o, "parallel_tool_calls"), 0);
    json_object_put(o);

    snprintf(buf, sizeof(buf),
             "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]%s,\"tool_choice\":"
             "{\"type\":\"tool\",\"name\":\"get_weather\",\"disable_parallel_tool_use\":false}}",
             tools);
    o = to_openai(buf, NULL);
    cr_assert_str_eq(s_at(o, "tool_choice.type"), "function");
    cr_assert_str_eq(s_at(o, "tool_choice.function.name"), "get_weather");
    cr_assert(!present(o, "parallel_tool_calls"));
    json_object_put(o);

    snprintf(buf, sizeof(buf),
             "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]%s,\"tool_choice\":"
             "{\"type\":\"none\"}}",
             tools);
    o = to_openai(buf, NULL);
    cr_assert_str_eq(s_at(o, "tool_choice"), "none");
    json_object_put(o);
}

Test(request, thinking_blocks_dropped_and_prefill_kept)
{
    json_object *o = to_openai(
        "{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\","
        "\"signature\":\"sig\"},{\"type\":\"text\",\"text\":\"Hello\"}]},"
        "{\"role\":\"user\",\"content\":\"Go on\"},"
        "{\"role\":\"assistant\",\"content\":\"The answer is\"}]}",
        NULL);
    cr_assert_eq(len_at(o, "messages"), 4);
    cr_assert_eq(len_at(o, "messages.1.content"), 1);
    cr_assert_str_eq(s_at(o, "messages.1.content.0.text"), "Hello");
    cr_assert_str_eq(s_at(o, "messages.3.role"), "assistant");
    cr_assert_str_eq(s_at(o, "messages.3.content"), "The answer is");
    json_object_put(o);
    /* an empty final assistant turn is allowed too */
    o = to_openai("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                  "{\"role\":\"assistant\",\"content\":[]}]}",
                  NULL);
    cr_assert_str_eq(s_at(o, "messages.1.content"), "");
    json_object_put(o);
}

/* ---- refusals -------------------------------------------------------------------------------- */

#define USER_HI "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]"

Test(refusal, body_shape)
{
    refused("{\"model\":", COMPASS_EPARSE, NULL);
    refused("", COMPASS_EPARSE, "request body is not valid JSON: empty body");
    refused("[1]", COMPASS_EINVAL, "request body: Input should be a valid dictionary");
    refused("{\"model\":\"m\",\"max_tokens\":1," USER_HI "} x", COMPASS_EPARSE,
            "request body is not valid JSON: unexpected data after the JSON value");
}

Test(refusal, required_fields)
{
    refused("{\"model\":\"m\"," USER_HI "}", COMPASS_EINVAL, "max_tokens: Field required");
    refused("{\"model\":\"m\",\"max_tokens\":\"9\"," USER_HI "}", COMPASS_EINVAL,
            "max_tokens: Input should be a valid integer");
    refused("{\"model\":\"m\",\"max_tokens\":1.5," USER_HI "}", COMPASS_EINVAL,
            "max_tokens: Input should be a valid integer");
    refused("{\"model\":\"m\",\"max_tokens\":0," USER_HI "}", COMPASS_EINVAL,
            "max_tokens: Input should be greater than or equal to 1");
    refused("{\"max_tokens\":1," USER_HI "}", COMPASS_EINVAL, "model: Field required");
    refused("{\"model\":7,\"max_tokens\":1," USER_HI "}", COMPASS_EINVAL,
            "model: Input should be a valid string");
    refused("{\"model\":\"m\",\"max_tokens\":1}", COMPASS_EINVAL, "messages: Field required");
    refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":{}}", COMPASS_EINVAL,
            "messages: Input should be a valid list");
    refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}", COMPASS_EINVAL,
            "messages: at least one message is required");
}

Test(refusal, roles_and_content)
{
    refused("{" BASE ",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", COMPASS_EINVAL,
            "messages: Unexpected role \"system\". The Messages API accepts a top-level `system` "
            "parameter, not \"system\" as an input message role.");
    refused("{" BASE ",\"messages\":[{\"role\":\"ai\",\"content\":\"x\"}]}", COMPASS_EINVAL,
            "messages: Unexpected role \"ai\". Allowed roles are \"user\" or \"assistant\"");
    refused("{" BASE ",\"messages\":[{\"content\":\"x\"}]}", COMPASS_EINVAL,
            "messages.0.role: Field required");
    refused("{" BASE ",\"messages\":[\"x\"]}", COMPASS_EINVAL,
            "messages.0: Input should be a valid dictionary");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\"}]}", COMPASS_EINVAL,
            "messages.0.content: Field required");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":5}]}", COMPASS_EINVAL,
            "messages.0.content: Input should be a valid string or a list of content blocks");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"\"},{\"role\":\"assistant\","
            "\"content\":\"x\"}]}",
            COMPASS_EINVAL,
            "messages.0: all messages must have non-empty content except for the optional final "
            "assistant message");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[]}]}", COMPASS_EINVAL,
            "messages.0: all messages must have non-empty content except for the optional final "
            "assistant message");
}

Test(refusal, content_blocks)
{
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"foo\"}]}]}",
            COMPASS_EINVAL,
            "messages.1.content.0.type: Input tag 'foo' found using 'type' does not match any of "
            "the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', "
            "'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', "
            "'web_search_tool_result'");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}",
            COMPASS_EINVAL,
            "messages.0.content.0: Unable to extract tag using discriminator 'type'");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
            COMPASS_EINVAL, "messages.0.content.0.text: Field required");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":\"\"}]}]}",
            COMPASS_EINVAL, "messages: text content blocks must be non-empty");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
            "\"source\":{\"type\":\"base64\",\"media_type\":\"image/bmp\",\"data\":\"AA\"}}]}]}",
            COMPASS_EINVAL,
            "messages.0.content.0.source.base64.media_type: Input should be 'image/jpeg', "
            "'image/png', 'image/gif' or 'image/webp'");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]}",
            COMPASS_EINVAL, "messages.0.content.0.source: Field required");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
            "\"source\":{\"type\":\"file\",\"file_id\":\"f\"}}]}]}",
            COMPASS_EUNSUPPORTED,
            "messages.0.content.0.source.type: 'file' image sources (the Files API) are not "
            "supported by this gateway; send the image as base64 or url");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\","
            "\"source\":{}}]}]}",
            COMPASS_EUNSUPPORTED,
            "messages.0.content.0.type: 'document' blocks are not supported by this gateway");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_use\","
            "\"id\":\"t\",\"name\":\"f\",\"input\":{}}]}]}",
            COMPASS_EINVAL,
            "messages.0.content.0: tool_use blocks are only allowed in assistant messages");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":[]}]}]}",
            COMPASS_EINVAL, "messages.1.content.0.input: Input should be a valid dictionary");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"name\":\"f\",\"input\":{}}]}]}",
            COMPASS_EINVAL, "messages.1.content.0.id: Field required");
}

Test(refusal, tool_pairing)
{
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
            "\"tool_use_id\":\"toolu_9\",\"content\":\"x\"}]}]}",
            COMPASS_EINVAL,
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
            "toolu_9. Each `tool_result` block must have a corresponding `tool_use` block in the "
            "previous message.");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}},"
            "{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":\"f\",\"input\":{}}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t2\"}]}]}",
            COMPASS_EINVAL,
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: t1. Each `tool_use` block must have a corresponding `tool_result` block in "
            "the next message.");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]},"
            "{\"role\":\"user\",\"content\":\"never mind\"}]}",
            COMPASS_EINVAL,
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: t1. Each `tool_use` block must have a corresponding `tool_result` block in "
            "the next message.");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]}]}",
            COMPASS_EINVAL,
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: t1. Each `tool_use` block must have a corresponding `tool_result` block in "
            "the next message.");
    refused("{" BASE ",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\","
            "\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"u\"}}]}]}]}",
            COMPASS_EUNSUPPORTED,
            "messages.2.content.0.content.0.type: images inside tool_result are not supported "
            "by this gateway (OpenAI tool messages carry text only)");
}

Test(refusal, scalars)
{
    refused("{" BASE "," USER_HI ",\"temperature\":1.5}", COMPASS_EINVAL,
            "temperature: range: 0..1");
    refused("{" BASE "," USER_HI ",\"temperature\":\"hot\"}", COMPASS_EINVAL,
            "temperature: Input should be a valid number");
    refused("{" BASE "," USER_HI ",\"top_p\":-0.1}", COMPASS_EINVAL, "top_p: range: 0..1");
    refused("{" BASE "," USER_HI ",\"top_k\":\"x\"}", COMPASS_EINVAL,
            "top_k: Input should be a valid integer");
    refused("{" BASE "," USER_HI ",\"stop_sequences\":\"END\"}", COMPASS_EINVAL,
            "stop_sequences: Input should be a valid list");
    refused("{" BASE "," USER_HI ",\"stop_sequences\":[\"a\",3]}", COMPASS_EINVAL,
            "stop_sequences.1: Input should be a valid string");
    refused("{" BASE "," USER_HI ",\"stop_sequences\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
            COMPASS_EUNSUPPORTED,
            "stop_sequences: this gateway accepts at most 4 stop sequences, got 5");
    refused("{" BASE "," USER_HI ",\"stream\":\"yes\"}", COMPASS_EINVAL,
            "stream: Input should be a valid boolean");
    refused("{" BASE "," USER_HI ",\"metadata\":{\"user_id\":5}}", COMPASS_EINVAL,
            "metadata.user_id: Input should be a valid string");
    refused("{" BASE "," USER_HI ",\"system\":[{\"type\":\"image\"}]}", COMPASS_EINVAL,
            "system.0.type: Input tag 'image' found using 'type' does not match any of the "
            "expected tags: 'text'");
    refused("{" BASE "," USER_HI ",\"system\":[{\"type\":\"text\",\"text\":\"\"}]}",
            COMPASS_EINVAL, "system: text content blocks must be non-empty");
    refused("{" BASE "," USER_HI ",\"mcp_servers\":[{\"type\":\"url\",\"url\":\"u\"}]}",
            COMPASS_EUNSUPPORTED,
            "mcp_servers: the MCP connector is not supported by this gateway");
}

Test(refusal, tools)
{
    refused("{" BASE "," USER_HI ",\"tools\":{}}", COMPASS_EINVAL,
            "tools: Input should be a valid list");
    refused("{" BASE "," USER_HI ",\"tools\":[{\"name\":\"f\"}]}", COMPASS_EINVAL,
            "tools.0.input_schema: Field required");
    refused("{" BASE "," USER_HI ",\"tools\":[{\"input_schema\":{}}]}", COMPASS_EINVAL,
            "tools.0.name: Field required");
    refused("{" BASE "," USER_HI ",\"tools\":[{\"type\":\"web_search_20250305\",\"name\":"
            "\"web_search\"}]}",
            COMPASS_EUNSUPPORTED,
            "tools.0.type: server tool 'web_search_20250305' is not supported by this gateway; "
            "only client tools ({name, description, input_schema}) are");
    refused("{" BASE "," USER_HI ",\"tool_choice\":{\"type\":\"maybe\"}}", COMPASS_EINVAL,
            "tool_choice: Input tag 'maybe' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'");
    refused("{" BASE "," USER_HI ",\"tool_choice\":{\"type\":\"tool\"}}", COMPASS_EINVAL,
            "tool_choice.name: Field required");
    refused("{" BASE "," USER_HI ",\"tool_choice\":\"auto\"}", COMPASS_EINVAL,
            "tool_choice: Input should be a valid dictionary");
}

/* ---- response mapping ------------------------------------------------------------------------ */

Test(response, text_answer)
{
    json_object *o = from_openai(
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1,\"model\":"
        "\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        "\"Hello!\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":"
        "{\"prompt_tokens\":20,\"completion_tokens\":5,\"total_tokens\":25,"
        "\"prompt_tokens_details\":{\"cached_tokens\":8}}}");
    cr_assert_str_eq(s_at(o, "id"), "msg_chatcmpl-abc");
    cr_assert_str_eq(s_at(o, "type"), "message");
    cr_assert_str_eq(s_at(o, "role"), "assistant");
    cr_assert_str_eq(s_at(o, "model"), "gpt-4o");
    cr_assert_eq(len_at(o, "content"), 1);
    cr_assert_str_eq(s_at(o, "content.0.type"), "text");
    cr_assert_str_eq(s_at(o, "content.0.text"), "Hello!");
    cr_assert_str_eq(s_at(o, "stop_reason"), "end_turn");
    cr_assert(present(o, "stop_sequence"));
    cr_assert_null(at(o, "stop_sequence"));
    cr_assert_eq(i_at(o, "usage.input_tokens"), 12);
    cr_assert_eq(i_at(o, "usage.cache_read_input_tokens"), 8);
    cr_assert_eq(i_at(o, "usage.cache_creation_input_tokens"), 0);
    cr_assert_eq(i_at(o, "usage.output_tokens"), 5);
    json_object_put(o);
}

Test(response, tool_calls)
{
    json_object *o = from_openai(
        "{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"Let me check.\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"city\\\":\\\"Paris\\\",\\\"n\\\":[1,2]}\"}},{\"id\":\"call_2\",\"type\":\"function\","
        "\"function\":{\"name\":\"noop\",\"arguments\":\"\"}}]},\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}");
    cr_assert_eq(len_at(o, "content"), 3);
    cr_assert_str_eq(s_at(o, "content.0.type"), "text");
    cr_assert_str_eq(s_at(o, "content.0.text"), "Let me check.");
    cr_assert_str_eq(s_at(o, "content.1.type"), "tool_use");
    cr_assert_str_eq(s_at(o, "content.1.id"), "call_1");
    cr_assert_str_eq(s_at(o, "content.1.name"), "get_weather");
    cr_assert_str_eq(s_at(o, "content.1.input.city"), "Paris");
    cr_assert_eq(i_at(o, "content.1.input.n.1"), 2);
    cr_assert_str_eq(s_at(o, "content.2.name"), "noop");
    cr_assert_eq(len_at(o, "content.2.input"), 0);
    cr_assert_str_eq(s_at(o, "stop_reason"), "tool_use");
    cr_assert_eq(i_at(o, "usage.input_tokens"), 3);
    cr_assert_eq(i_at(o, "usage.output_tokens"), 4);
    cr_assert_eq(i_at(o, "usage.cache_read_input_tokens"), 0);
    json_object_put(o);
}

static void check_stop(const char *finish, int with_tool, const char *want)
{
    char buf[600];
    snprintf(buf, sizeof(buf),
             "{\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"message\":{\"role\":\"assistant\","
             "\"content\":\"t\"%s},\"finish_reason\":%s}]}",
             with_tool ? ",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\","
                         "\"arguments\":\"{}\"}}]"
                       : "",
             finish);
    json_object *o = from_openai(buf);
    cr_assert_str_eq(s_at(o, "stop_reason"), want, "finish %s", finish);
    json_object_put(o);
}

Test(response, stop_reasons)
{
    check_stop("\"stop\"", 0, "end_turn");
    check_stop("\"length\"", 0, "max_tokens");
    check_stop("\"tool_calls\"", 1, "tool_use");
    check_stop("\"content_filter\"", 0, "refusal");
    check_stop("\"stop\"", 1, "tool_use"); /* providers that say stop while calling tools */
    check_stop("null", 0, "end_turn");
}

Test(response, edge_cases)
{
    /* an Anthropic id is kept, empty content gives no block, a refusal is text + refusal */
    json_object *o = from_openai(
        "{\"id\":\"msg_01X\",\"model\":\"claude\",\"choices\":[{\"message\":{\"role\":"
        "\"assistant\",\"content\":null,\"refusal\":\"I can't help with that.\"},"
        "\"finish_reason\":\"stop\"}]}");
    cr_assert_str_eq(s_at(o, "id"), "msg_01X");
    cr_assert_eq(len_at(o, "content"), 1);
    cr_assert_str_eq(s_at(o, "content.0.text"), "I can't help with that.");
    cr_assert_str_eq(s_at(o, "stop_reason"), "refusal");
    cr_assert_eq(i_at(o, "usage.input_tokens"), 0);
    cr_assert_eq(i_at(o, "usage.output_tokens"), 0);
    json_object_put(o);
    o = from_openai("{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"message\":{\"content\":\"\"},"
                    "\"finish_reason\":\"length\"}]}");
    cr_assert_eq(len_at(o, "content"), 0);
    cr_assert_str_eq(s_at(o, "stop_reason"), "max_tokens");
    json_object_put(o);
}

Test(response, garbage)
{
    cps_buf out;
    compass_err err = {0, ""};
    cps_buf_init(&out);
    const char *bad_args = "{\"id\":\"c\",\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\","
                           "\"function\":{\"name\":\"f\",\"arguments\":\"{not json\"}}]},"
                           "\"finish_reason\":\"tool_calls\"}]}";
    cr_assert_eq(cpd_anth_response_from_openai(bad_args, strlen(bad_args), &out, &err),
                 COMPASS_EPARSE);
    cr_assert_str_eq(err.msg, "response: choices.0.message.tool_calls.0.function.arguments: the "
                              "model's arguments are not a JSON object");
    const char *err_body = "{\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}";
    cr_assert_eq(cpd_anth_response_from_openai(err_body, strlen(err_body), &out, &err),
                 COMPASS_EPARSE);
    cr_assert_eq(cpd_anth_response_from_openai("nope", 4, &out, &err), COMPASS_EPARSE);
    cr_assert_eq(out.len, 0);
    cps_buf_free(&out);
}

/* ---- error mapping --------------------------------------------------------------------------- */

static void check_error(int status, const char *body, const char *type, const char *message)
{
    cps_buf out;
    cps_buf_init(&out);
    cr_assert_eq(cpd_anth_error_from_openai(status, body, body ? strlen(body) : 0, &out), 0);
    json_object *o = parse_or_die(out.ptr, out.len);
    cr_assert_str_eq(s_at(o, "type"), "error");
    cr_assert_str_eq(s_at(o, "error.type"), type, "status %d", status);
    cr_assert_str_eq(s_at(o, "error.message"), message, "status %d", status);
    cr_assert_eq(len_at(o, ""), 2);
    cr_assert_eq(len_at(o, "error"), 2);
    json_object_put(o);
    cps_buf_free(&out);
}

Test(errors, per_status)
{
    static const struct {
        int status;
        const char *type;
    } cases[] = {{400, "invalid_request_error"}, {401, "authentication_error"},
                 {403, "permission_error"},      {404, "not_found_error"},
                 {413, "request_too_large"},     {429, "rate_limit_error"},
                 {500, "api_error"},             {502, "api_error"},
                 {503, "overloaded_error"},      {504, "api_error"},
                 {529, "overloaded_error"},      {405, "invalid_request_error"},
                 {422, "invalid_request_error"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[200];
        snprintf(body, sizeof(body),
                 "{\"error\":{\"message\":\"upstream said \\\"%d\\\"\",\"type\":\"x\",\"param\":"
                 "null,\"code\":null}}",
                 cases[i].status);
        char want[64];
        snprintf(want, sizeof(want), "upstream said \"%d\"", cases[i].status);
        check_error(cases[i].status, body, cases[i].type, want);
        cr_assert_str_eq(cpd_anth_error_type(cases[i].status), cases[i].type);
    }
}

Test(errors, unreadable_bodies_get_stock_messages)
{
    check_error(500, "<html>bad gateway</html>", "api_error", "Internal server error");
    check_error(429, NULL, "rate_limit_error", "Rate limit exceeded");
    check_error(529, "{}", "overloaded_error", "Overloaded");
    check_error(401, "{\"error\":\"bad key\"}", "authentication_error", "bad key");
}

Test(errors, own_refusals)
{
    cps_buf out;
    cps_buf_init(&out);
    cr_assert_eq(cpd_anth_error_json(400, "max_tokens: Field required", &out), 0);
    cr_assert_str_eq(out.ptr, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                              "\"message\":\"max_tokens: Field required\"}}");
    cps_buf_free(&out);
}

/* ---- streaming ------------------------------------------------------------------------------- */

typedef struct sse_event {
    char name[64];
    json_object *data;
} sse_event;

/* Splits SSE text into events; every event must be exactly "event: X\ndata: JSON\n\n". */
static size_t split_sse(const char *text, sse_event *evs, size_t cap)
{
    size_t n = 0;
    const char *p = text;
    while (*p) {
        cr_assert_lt(n, cap);
        cr_assert(!strncmp(p, "event: ", 7), "event line expected at: %.60s", p);
        p += 7;
        const char *nl = strchr(p, '\n');
        cr_assert(nl);
        size_t nn = (size_t)(nl - p);
        cr_assert_lt(nn, sizeof(evs[n].name));
        memcpy(evs[n].name, p, nn);
        evs[n].name[nn] = '\0';
        p = nl + 1;
        cr_assert(!strncmp(p, "data: ", 6), "data line expected at: %.60s", p);
        p += 6;
        const char *end = strstr(p, "\n\n");
        cr_assert(end, "event not terminated by a blank line");
        cr_assert(memchr(p, '\n', (size_t)(end - p)) == NULL, "multi-line data");
        evs[n].data = parse_or_die(p, (size_t)(end - p));
        cr_assert_str_eq(s_at(evs[n].data, "type"), evs[n].name,
                         "data.type must repeat the event name");
        n++;
        p = end + 2;
    }
    return n;
}

static void free_events(sse_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_object_put(evs[i].data);
}

static compass_chat_delta text_d(const char *s)
{
    compass_chat_delta d;
    compass_delta_init(&d);
    d.content = compass_str_c(s);
    return d;
}

static compass_chat_delta tool_d(int index, const char *id, const char *name, const char *args)
{
    compass_chat_delta d;
    compass_delta_init(&d);
    d.tool_index = index;
    d.tool_id = compass_str_c(id);
    d.tool_name = compass_str_c(name);
    d.tool_arguments = compass_str_c(args);
    return d;
}

Test(stream, full_answer_with_text_and_tool_call)
{
    cpd_anth_stream *s = cpd_anth_stream_new("claude-sonnet-4", "msg_req123");
    cr_assert(s);
    cpd_anth_stream_set_input_tokens(s, 42);
    cps_buf out;
    cps_buf_init(&out);

    compass_chat_delta d;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    d.model = compass_str_c("gpt-4o");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    const char *texts[] = {"Hello", ", \"world\"", "!\n"};
    for (int i = 0; i < 3; i++) {
        d = text_d(texts[i]);
        cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    }
    d = tool_d(0, "call_abc", "get_weather", "");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    const char *frags[] = {"{\"ci", "ty\": \"Par", "is\"}"};
    for (int i = 0; i < 3; i++) {
        d = tool_d(0, NULL, NULL, frags[i]);
        cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    }
    compass_delta_init(&d);
    d.finish_reason = COMPASS_FINISH_TOOL_CALLS;
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    compass_usage u = {1, 100, 17, 117, 30, 0};
    cr_assert_eq(cpd_anth_stream_usage(s, &u), 0);
    cr_assert_eq(cpd_anth_stream_finish(s, &out), 0);

    sse_event ev[32];
    size_t n = split_sse(out.ptr, ev, 32);
    static const char *const want[] = {
        "message_start",       "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop",  "message_delta",
        "message_stop"};
    cr_assert_eq(n, sizeof(want) / sizeof(want[0]), "got %zu events:\n%s", n, out.ptr);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(ev[i].name, want[i], "event %zu", i);

    json_object *m = ev[0].data;
    cr_assert_str_eq(s_at(m, "message.id"), "msg_req123");
    cr_assert_str_eq(s_at(m, "message.type"), "message");
    cr_assert_str_eq(s_at(m, "message.role"), "assistant");
    cr_assert_str_eq(s_at(m, "message.model"), "claude-sonnet-4");
    cr_assert_eq(len_at(m, "message.content"), 0);
    cr_assert_null(at(m, "message.stop_reason"));
    cr_assert(present(m, "message.stop_reason"));
    cr_assert_eq(i_at(m, "message.usage.input_tokens"), 42);
    cr_assert_eq(i_at(m, "message.usage.output_tokens"), 0);

    cr_assert_eq(i_at(ev[1].data, "index"), 0);
    cr_assert_str_eq(s_at(ev[1].data, "content_block.type"), "text");
    cr_assert_str_eq(s_at(ev[1].data, "content_block.text"), "");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(i_at(ev[2 + i].data, "index"), 0);
        cr_assert_str_eq(s_at(ev[2 + i].data, "delta.type"), "text_delta");
        cr_assert_str_eq(s_at(ev[2 + i].data, "delta.text"), texts[i]);
    }
    cr_assert_eq(i_at(ev[5].data, "index"), 0);

    cr_assert_eq(i_at(ev[6].data, "index"), 1);
    cr_assert_str_eq(s_at(ev[6].data, "content_block.type"), "tool_use");
    cr_assert_str_eq(s_at(ev[6].data, "content_block.id"), "call_abc");
    cr_assert_str_eq(s_at(ev[6].data, "content_block.name"), "get_weather");
    cr_assert_eq(len_at(ev[6].data, "content_block.input"), 0);
    char joined[64] = "";
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(i_at(ev[7 + i].data, "index"), 1);
        cr_assert_str_eq(s_at(ev[7 + i].data, "delta.type"), "input_json_delta");
        cr_assert_str_eq(s_at(ev[7 + i].data, "delta.partial_json"), frags[i]);
        strncat(joined, s_at(ev[7 + i].data, "delta.partial_json"),
                sizeof(joined) - strlen(joined) - 1);
    }
    json_object *input = parse_or_die(joined, strlen(joined));
    cr_assert_str_eq(s_at(input, "city"), "Paris");
    json_object_put(input);
    cr_assert_eq(i_at(ev[10].data, "index"), 1);

    json_object *md = ev[11].data;
    cr_assert_str_eq(s_at(md, "delta.stop_reason"), "tool_use");
    cr_assert_null(at(md, "delta.stop_sequence"));
    cr_assert(present(md, "delta.stop_sequence"));
    cr_assert_eq(i_at(md, "usage.output_tokens"), 17);
    cr_assert_eq(i_at(md, "usage.input_tokens"), 70);
    cr_assert_eq(i_at(md, "usage.cache_read_input_tokens"), 30);
    cr_assert_eq(len_at(ev[12].data, ""), 1);

    /* the stream is over */
    d = text_d("late");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), COMPASS_EPHASE);
    cr_assert_eq(cpd_anth_stream_finish(s, &out), COMPASS_EPHASE);
    cr_assert_eq(cpd_anth_stream_error(s, "x", &out), COMPASS_EPHASE);
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);
}

Test(stream, stop_reasons_and_usage_from_delta)
{
    static const struct {
        int finish;
        const char *want;
    } cases[] = {{COMPASS_FINISH_STOP, "end_turn"},
                 {COMPASS_FINISH_LENGTH, "max_tokens"},
                 {COMPASS_FINISH_CONTENT_FILTER, "refusal"},
                 {COMPASS_FINISH_NONE, "end_turn"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cpd_anth_stream *s = cpd_anth_stream_new("m", NULL);
        cps_buf out;
        cps_buf_init(&out);
        compass_chat_delta d = text_d("hi");
        d.finish_reason = cases[i].finish;
        cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
        compass_delta_init(&d);
        d.usage.present = 1;
        d.usage.prompt_tokens = 9;
        d.usage.completion_tokens = 2;
        cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
        cr_assert_eq(cpd_anth_stream_finish(s, &out), 0);
        sse_event ev[16];
        size_t n = split_sse(out.ptr, ev, 16);
        cr_assert_eq(n, 6);
        cr_assert_str_eq(s_at(ev[0].data, "message.id"), "msg_compass");
        cr_assert_str_eq(ev[4].name, "message_delta");
        cr_assert_str_eq(s_at(ev[4].data, "delta.stop_reason"), cases[i].want);
        cr_assert_eq(i_at(ev[4].data, "usage.output_tokens"), 2);
        cr_assert_eq(i_at(ev[4].data, "usage.input_tokens"), 9);
        free_events(ev, n);
        cps_buf_free(&out);
        cpd_anth_stream_free(s);
    }
}

Test(stream, tool_only_answer_and_late_name)
{
    cpd_anth_stream *s = cpd_anth_stream_new("m", "msg_1");
    cps_buf out;
    cps_buf_init(&out);
    compass_chat_delta d;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    d.content = compass_str_c(""); /* an empty role delta opens no block */
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    /* arguments before the name are held until the block can start */
    d = tool_d(0, "c0", NULL, "{\"a\":");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    d = tool_d(0, NULL, "f", "1}");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    /* a second call, with no id from the provider */
    d = tool_d(1, NULL, "g", "{}");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    compass_delta_init(&d);
    d.finish_reason = COMPASS_FINISH_STOP; /* said "stop" while calling tools */
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    cr_assert_eq(cpd_anth_stream_finish(s, &out), 0);

    sse_event ev[16];
    size_t n = split_sse(out.ptr, ev, 16);
    static const char *const want[] = {"message_start",       "content_block_start",
                                       "content_block_delta", "content_block_delta",
                                       "content_block_stop",  "content_block_start",
                                       "content_block_delta", "content_block_stop",
                                       "message_delta",       "message_stop"};
    cr_assert_eq(n, sizeof(want) / sizeof(want[0]), "got %zu events:\n%s", n, out.ptr);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(ev[i].name, want[i], "event %zu", i);
    cr_assert_eq(i_at(ev[1].data, "index"), 0);
    cr_assert_str_eq(s_at(ev[1].data, "content_block.id"), "c0");
    cr_assert_str_eq(s_at(ev[1].data, "content_block.name"), "f");
    cr_assert_str_eq(s_at(ev[2].data, "delta.partial_json"), "{\"a\":");
    cr_assert_str_eq(s_at(ev[3].data, "delta.partial_json"), "1}");
    cr_assert_eq(i_at(ev[4].data, "index"), 0);
    cr_assert_eq(i_at(ev[5].data, "index"), 1);
    cr_assert_str_eq(s_at(ev[5].data, "content_block.name"), "g");
    cr_assert(strncmp(s_at(ev[5].data, "content_block.id"), "toolu_", 6) == 0);
    cr_assert_eq(i_at(ev[7].data, "index"), 1);
    cr_assert_str_eq(s_at(ev[8].data, "delta.stop_reason"), "tool_use");
    cr_assert_eq(i_at(ev[8].data, "usage.output_tokens"), 0);
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);
}

Test(stream, ends_with_an_error)
{
    cpd_anth_stream *s = cpd_anth_stream_new("m", "msg_e");
    cps_buf out;
    cps_buf_init(&out);
    compass_chat_delta d = text_d("partial ");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    d = text_d("answer");
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    cr_assert_eq(cpd_anth_stream_error(s, "upstream \"timed\" out", &out), 0);
    sse_event ev[16];
    size_t n = split_sse(out.ptr, ev, 16);
    static const char *const want[] = {"message_start", "content_block_start",
                                       "content_block_delta", "content_block_delta", "error"};
    cr_assert_eq(n, 5, "got %zu events:\n%s", n, out.ptr);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(ev[i].name, want[i], "event %zu", i);
    cr_assert_str_eq(s_at(ev[4].data, "error.type"), "api_error");
    cr_assert_str_eq(s_at(ev[4].data, "error.message"), "upstream \"timed\" out");
    cr_assert_eq(cpd_anth_stream_finish(s, &out), COMPASS_EPHASE);
    cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), COMPASS_EPHASE);
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);

    /* typed, before any delta: the error event alone */
    s = cpd_anth_stream_new("m", "msg_e2");
    cps_buf_init(&out);
    cr_assert_eq(cpd_anth_stream_error_typed(s, cpd_anth_error_type(529), "Overloaded", &out), 0);
    n = split_sse(out.ptr, ev, 16);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(s_at(ev[0].data, "error.type"), "overloaded_error");
    cr_assert_str_eq(s_at(ev[0].data, "error.message"), "Overloaded");
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);
}

Test(stream, finish_without_deltas)
{
    cpd_anth_stream *s = cpd_anth_stream_new("m", "msg_z");
    cps_buf out;
    cps_buf_init(&out);
    cr_assert_eq(cpd_anth_stream_finish(s, &out), 0);
    sse_event ev[8];
    size_t n = split_sse(out.ptr, ev, 8);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(ev[0].name, "message_start");
    cr_assert_str_eq(ev[1].name, "message_delta");
    cr_assert_str_eq(s_at(ev[1].data, "delta.stop_reason"), "end_turn");
    cr_assert_str_eq(ev[2].name, "message_stop");
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);
}

Test(stream, many_tool_calls_grow_slots)
{
    cpd_anth_stream *s = cpd_anth_stream_new("m", "msg_g");
    cps_buf out;
    cps_buf_init(&out);
    for (int i = 0; i < 9; i++) {
        char id[16], args[16];
        snprintf(id, sizeof(id), "c%d", i);
        snprintf(args, sizeof(args), "{\"i\":%d}", i);
        compass_chat_delta d = tool_d(i, id, "f", args);
        cr_assert_eq(cpd_anth_stream_delta(s, &d, &out), 0);
    }
    cr_assert_eq(cpd_anth_stream_finish(s, &out), 0);
    sse_event ev[40];
    size_t n = split_sse(out.ptr, ev, 40);
    cr_assert_eq(n, 1 + 9 * 3 + 2);
    for (int i = 0; i < 9; i++) {
        json_object *st = ev[1 + i * 3].data;
        cr_assert_eq(i_at(st, "index"), i);
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        cr_assert_str_eq(s_at(st, "content_block.id"), id);
        cr_assert_eq(i_at(ev[2 + i * 3].data, "index"), i);
        cr_assert_eq(i_at(ev[3 + i * 3].data, "index"), i);
    }
    free_events(ev, n);
    cps_buf_free(&out);
    cpd_anth_stream_free(s);
}

/* ---- the engine accepts what the translator writes -------------------------------------------- */

Test(canon, engine_parses_translated_request)
{
    const char *req =
        "{\"model\":\"auto\",\"max_tokens\":300,\"system\":[{\"type\":\"text\",\"text\":\"S1\"},"
        "{\"type\":\"text\",\"text\":\"S2\"}],\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"image\","
        "\"source\":{\"type\":\"url\",\"url\":\"https://x.test/i.png\"}}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\","
        "\"input\":{\"a\":1}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\","
        "\"content\":[{\"type\":\"text\",\"text\":\"r1\"},{\"type\":\"text\",\"text\":\"r2\"}]},"
        "{\"type\":\"text\",\"text\":\"and?\"}]}],"
        "\"temperature\":0.5,\"top_p\":0.5,\"stop_sequences\":[\"X\"],\"stream\":true,"
        "\"metadata\":{\"user_id\":\"u1\"},\"tools\":[{\"name\":\"f\",\"description\":\"d\","
        "\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"f\","
        "\"disable_parallel_tool_use\":true}}";
    cps_buf out;
    compass_err err = {0, ""};
    int st = 0;
    cps_buf_init(&out);
    cr_assert_eq(cpd_anth_request_to_openai(req, strlen(req), &out, &st, &err), 0, "%s", err.msg);
    cps_arena *a = cps_arena_new(4096);
    compass_chat_request cr;
    int rc = cps_canon_parse_chat(a, out.ptr, out.len, &cr, &err);
    cr_assert_eq(rc, 0, "engine refused: %s\n%s", err.msg, out.ptr);
    cr_assert(compass_str_eq(cr.model, "auto"));
    cr_assert_eq(cr.n_messages, 5);
    cr_assert_eq(cr.messages[0].role, COMPASS_ROLE_SYSTEM);
    cr_assert(compass_str_eq(cr.messages[0].content, "S1S2"));
    cr_assert_eq(cr.messages[1].role, COMPASS_ROLE_USER);
    cr_assert_eq(cr.messages[1].n_parts, 2);
    cr_assert_eq(cr.messages[1].parts[1].type, COMPASS_PART_IMAGE_URL);
    cr_assert(compass_str_eq(cr.messages[1].parts[1].url, "https://x.test/i.png"));
    cr_assert_eq(cr.messages[2].role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(cr.messages[2].has_content, 0);
    cr_assert_eq(cr.messages[2].n_tool_calls, 1);
    cr_assert(compass_str_eq(cr.messages[2].tool_calls[0].id, "t1"));
    cr_assert(compass_str_eq(cr.messages[2].tool_calls[0].arguments, "{\"a\":1}"));
    cr_assert_eq(cr.messages[3].role, COMPASS_ROLE_TOOL);
    cr_assert(compass_str_eq(cr.messages[3].tool_call_id, "t1"));
    cr_assert(compass_str_eq(cr.messages[3].content, "r1r2"));
    cr_assert_eq(cr.messages[4].role, COMPASS_ROLE_USER);
    cr_assert(compass_str_eq(cr.messages[4].content, "and?"));
    cr_assert_eq(cr.n_tools, 1);
    cr_assert(compass_str_eq(cr.tools[0].parameters, "{\"type\":\"object\"}"));
    cr_assert_eq(cr.tool_choice, COMPASS_TOOL_CHOICE_FUNCTION);
    cr_assert(compass_str_eq(cr.tool_choice_name, "f"));
    cr_assert(cr.set & COMPASS_SET_PARALLEL_TOOL_CALLS);
    cr_assert_eq(cr.parallel_tool_calls, 0);
    cr_assert(cr.set & COMPASS_SET_MAX_TOKENS);
    cr_assert_eq(cr.max_tokens, 300);
    cr_assert(cr.set & COMPASS_SET_TEMPERATURE);
    cr_assert(cr.set & COMPASS_SET_TOP_P);
    cr_assert_eq(cr.n_stop, 1);
    cr_assert_eq(cr.stream, 1);
    cr_assert_eq(cr.include_usage, 1);
    cr_assert(compass_str_eq(cr.user, "u1"));
    cps_arena_free(a);
    cps_buf_free(&out);
}

Test(canon, engine_response_translates)
{
    compass_tool_call tc = {compass_str_c("call_9"), compass_str_c("f"),
                            compass_str_c("{\"k\":\"v\"}")};
    compass_chat_response r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.has_content = 1;
    r.content = compass_str_c("Sure.");
    r.tool_calls = &tc;
    r.n_tool_calls = 1;
    r.finish_reason = COMPASS_FINISH_TOOL_CALLS;
    r.usage.present = 1;
    r.usage.prompt_tokens = 11;
    r.usage.completion_tokens = 7;
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_response(&b, &r, compass_str_c("chatcmpl-1"),
                                          compass_str_c("gpt-4o-mini"), 1700000000),
                 0);
    json_object *o = from_openai(b.ptr);
    cr_assert_str_eq(s_at(o, "id"), "msg_chatcmpl-1");
    cr_assert_str_eq(s_at(o, "model"), "gpt-4o-mini");
    cr_assert_str_eq(s_at(o, "content.0.text"), "Sure.");
    cr_assert_str_eq(s_at(o, "content.1.id"), "call_9");
    cr_assert_str_eq(s_at(o, "content.1.input.k"), "v");
    cr_assert_str_eq(s_at(o, "stop_reason"), "tool_use");
    cr_assert_eq(i_at(o, "usage.input_tokens"), 11);
    cr_assert_eq(i_at(o, "usage.output_tokens"), 7);
    json_object_put(o);
    cps_buf_free(&b);
}
