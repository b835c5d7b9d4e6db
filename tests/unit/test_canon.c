/* The canonical model codec (core/src/canon.c): parse errors name the exact field, a rich
 * request lands in every canonical field, and the writers produce the OpenAI shapes. */
#include <criterion/criterion.h>

#include <json-c/json.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>

#include "canon.h"
#include "pair_cases.h"

static cps_arena *arena;

static void setup(void)
{
    arena = cps_arena_new(4096);
    cr_assert_not_null(arena);
}

static void teardown(void)
{
    cps_arena_free(arena);
}

TestSuite(canon, .init = setup, .fini = teardown);

static void refused(const char *body, int code, const char *want)
{
    compass_chat_request req;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_canon_parse_chat(arena, body, strlen(body), &req, &err);
    cr_assert_eq(rc, code, "rc %d (%s) for %s", rc, err.msg, body);
    cr_assert_eq(err.code, code);
    cr_assert_str_eq(err.msg, want);
}

#define USER "{\"role\":\"user\",\"content\":\"hi\"}"

/* ---- parse errors ---- */

Test(canon, model_missing)
{
    refused("{\"messages\":[" USER "]}", COMPASS_EINVAL, "model: required string");
}

Test(canon, model_empty)
{
    refused("{\"model\":\"\",\"messages\":[" USER "]}", COMPASS_EINVAL, "model: required string");
}

Test(canon, messages_missing)
{
    refused("{\"model\":\"m\"}", COMPASS_EINVAL, "messages: required");
}

Test(canon, messages_empty)
{
    refused("{\"model\":\"m\",\"messages\":[]}", COMPASS_EINVAL,
            "messages: must contain at least one message");
}

Test(canon, messages_not_an_array)
{
    refused("{\"model\":\"m\",\"messages\":{}}", COMPASS_EINVAL,
            "messages: expected an array of message objects");
}

Test(canon, second_message_role_bad)
{
    refused("{\"model\":\"m\",\"messages\":[" USER ",{\"role\":\"robot\",\"content\":\"x\"}]}",
            COMPASS_EINVAL,
            "messages[1].role: 'robot' is not one of system, user, assistant, tool, developer");
}

Test(canon, second_message_role_missing)
{
    refused("{\"model\":\"m\",\"messages\":[" USER ",{\"content\":\"x\"}]}", COMPASS_EINVAL,
            "messages[1].role: required string");
}

Test(canon, user_message_without_content)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", COMPASS_EINVAL,
            "messages[0].content: required for role user");
}

Test(canon, content_part_type_unsupported)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"input_audio\"}]}]}",
            COMPASS_EINVAL,
            "messages[0].content[1].type: unsupported content part type 'input_audio' "
            "(supported: text, image_url)");
}

Test(canon, content_text_part_without_text)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
            COMPASS_EINVAL, "messages[0].content[0].text: required string");
}

Test(canon, content_of_wrong_type)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", COMPASS_EINVAL,
            "messages[0].content: expected a string, an array of content parts or null");
}

Test(canon, tool_calls_on_a_user_message)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\","
            "\"tool_calls\":[]}]}",
            COMPASS_EINVAL, "messages[0].tool_calls: only assistant messages carry tool calls");
}

Test(canon, tool_message_without_tool_call_id)
{
    refused("{\"model\":\"m\",\"messages\":[" USER ",{\"role\":\"tool\",\"content\":\"42\"}]}",
            COMPASS_EINVAL, "messages[1].tool_call_id: required string for role tool");
}

Test(canon, tool_choice_naming_a_function_not_in_tools)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"tools\":[{\"type\":\"function\","
            "\"function\":{\"name\":\"search\"}}],\"tool_choice\":{\"type\":\"function\","
            "\"function\":{\"name\":\"lookup\"}}}",
            COMPASS_EINVAL, "tool_choice: function 'lookup' is not in tools");
}

Test(canon, tool_choice_unknown_word)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"tool_choice\":\"always\"}",
            COMPASS_EINVAL, "tool_choice: 'always' is not one of auto, none, required");
}

Test(canon, tool_of_unsupported_type)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"tools\":[{\"type\":\"retrieval\"}]}",
            COMPASS_EINVAL, "tools[0].type: only 'function' is supported");
}

Test(canon, temperature_out_of_range)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"temperature\":2.5}", COMPASS_EINVAL,
            "temperature: 2.5 is out of range [0, 2]");
}

Test(canon, temperature_not_a_number)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"temperature\":\"hot\"}", COMPASS_EINVAL,
            "temperature: expected a number");
}

Test(canon, top_p_out_of_range)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"top_p\":-0.1}", COMPASS_EINVAL,
            "top_p: -0.1 is out of range [0, 1]");
}

Test(canon, max_tokens_zero)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"max_tokens\":0}", COMPASS_EINVAL,
            "max_tokens: must be at least 1");
}

Test(canon, max_tokens_fractional)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"max_tokens\":1.5}", COMPASS_EINVAL,
            "max_tokens: expected an integer");
}

Test(canon, stop_with_five_entries)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
            COMPASS_EINVAL, "stop: at most 4 sequences");
}

Test(canon, stop_with_a_number_entry)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"stop\":[\"a\",1]}", COMPASS_EINVAL,
            "stop[1]: expected a string");
}

Test(canon, stream_not_a_boolean)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"stream\":\"yes\"}", COMPASS_EINVAL,
            "stream: expected a boolean");
}

Test(canon, response_format_bad_type)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"response_format\":{\"type\":\"xml\"}}",
            COMPASS_EINVAL,
            "response_format.type: 'xml' is not one of text, json_object, json_schema");
}

Test(canon, response_format_without_type)
{
    refused("{\"model\":\"m\",\"messages\":[" USER "],\"response_format\":\"json\"}",
            COMPASS_EINVAL, "response_format: expected an object with a 'type'");
}

Test(canon, invalid_json_reports_byte_offset)
{
    /* 'x' is byte 9 */
    refused("{\"model\":x}", COMPASS_EPARSE,
            "request body is not valid JSON: unexpected character (at byte 9)");
}

Test(canon, truncated_json_is_unexpected_end)
{
    refused("{\"model\":\"m\"", COMPASS_EPARSE,
            "request body is not valid JSON: unexpected end of input (at byte 12)");
}

Test(canon, empty_body_is_unexpected_end)
{
    refused("", COMPASS_EPARSE, "request body is not valid JSON: unexpected end of input (at "
                                "byte 0)");
}

Test(canon, trailing_garbage_after_the_object)
{
    /* the object is 57 bytes, then a space, then 'x' at byte 58 */
    refused("{\"model\":\"m\",\"messages\":[" USER "]} x", COMPASS_EPARSE,
            "request body is not valid JSON: trailing data at byte 58");
}

Test(canon, trailing_whitespace_is_fine)
{
    compass_chat_request req;
    compass_err err;
    const char *b = "{\"model\":\"m\",\"messages\":[" USER "]} \r\n\t";
    cr_assert_eq(cps_canon_parse_chat(arena, b, strlen(b), &req, &err), 0, "%s", err.msg);
}

Test(canon, body_must_be_an_object)
{
    refused("[1,2]", COMPASS_EINVAL, "request body must be a JSON object");
}

/* An escaped pair before the fault (read from a copy holding it as 4 bytes) moves no offset. */
Test(canon, errors_after_an_escaped_pair_keep_their_byte_offsets)
{
    /* 'x' is byte 39 */
    refused("{\"model\":\"m\",\"user\":\"\\uD836\\uDC00\",\"n\":x}", COMPASS_EPARSE,
            "request body is not valid JSON: unexpected character (at byte 39)");
    /* the object is 67 bytes, then a space, then 'x' at byte 68 */
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\uD877\\uDFFF\"}]} x",
            COMPASS_EPARSE, "request body is not valid JSON: trailing data at byte 68");
    refused("{\"model\":\"\\uD836\\uDC00\"", COMPASS_EPARSE,
            "request body is not valid JSON: unexpected end of input (at byte 23)");
}

Test(canon, embed_input_keeps_characters_json_c_would_replace)
{
    for (size_t i = 0; i < N_PAIR_CASES; i++) {
        char body[256];
        compass_embed_request r;
        compass_err err;
        memset(&err, 0, sizeof(err));
        pair_fill(body, sizeof(body), "{\"model\":\"m\",\"input\":[\"a@b\",\"@\"],\"user\":\"u@\"}",
                  "", i);
        cr_assert_eq(cps_canon_parse_embed(arena, body, strlen(body), &r, &err), 0, "%s",
                     err.msg);
        cr_assert_eq(r.n_inputs, 2);
        cr_assert(pair_is(r.inputs[0], "a", i, "b"), "%s", body);
        cr_assert(pair_is(r.inputs[1], "", i, ""), "%s", body);
        cr_assert(pair_is(r.user, "u", i, ""), "%s", body);
        /* a single string input too */
        pair_fill(body, sizeof(body), "{\"model\":\"m\",\"input\":\"@\"}", "", i);
        cr_assert_eq(cps_canon_parse_embed(arena, body, strlen(body), &r, &err), 0, "%s",
                     err.msg);
        cr_assert(pair_is(r.inputs[0], "", i, ""), "%s", body);
    }
}

/* ---- a rich request ---- */

static const char rich[] =
    "{\"model\":\"gpt-4o\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"developer\",\"content\":\"dev\",\"name\":\"ops\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is \"},"
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/cat.png\",\"detail\":\"low\"}},"
    "{\"type\":\"text\",\"text\":\"this?\"}]},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
    "\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"cat\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"description\":\"find\","
    "\"parameters\":{\"type\":\"object\"},\"strict\":true}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"noop\"}}],"
    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"lookup\"}},"
    "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
    "\"temperature\":0.5,\"top_p\":0.9,\"presence_penalty\":-1,\"frequency_penalty\":1.5,"
    "\"max_tokens\":100,\"max_completion_tokens\":200,\"seed\":-7,\"n\":1,"
    "\"parallel_tool_calls\":false,\"stop\":[\"END\",\"\\n\\n\"],"
    "\"response_format\":{\"type\":\"json_object\"},\"reasoning_effort\":\"low\","
    "\"user\":\"u-1\",\"metadata\":{\"ignored\":true}}";

static int str_is(compass_str s, const char *want)
{
    return compass_str_eq(s, want);
}

Test(canon, rich_request_fills_every_canonical_field)
{
    compass_chat_request r;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = cps_canon_parse_chat(arena, rich, strlen(rich), &r, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(r.size, sizeof(r));
    cr_assert(str_is(r.model, "gpt-4o"));
    cr_assert_eq(r.raw.ptr, rich);
    cr_assert_eq(r.raw.len, strlen(rich));

    cr_assert_eq(r.n_messages, 5);
    const compass_message *m = r.messages;
    cr_assert_eq(m[0].role, COMPASS_ROLE_SYSTEM);
    cr_assert(m[0].has_content);
    cr_assert(str_is(m[0].content, "Be brief."));
    cr_assert_null(m[0].parts);
    cr_assert_eq(m[1].role, COMPASS_ROLE_DEVELOPER);
    cr_assert(str_is(m[1].name, "ops"));
    cr_assert_eq(m[2].role, COMPASS_ROLE_USER);
    cr_assert_eq(m[2].n_parts, 3);
    cr_assert(str_is(m[2].content, "What is this?"), "parts' text joined");
    cr_assert_eq(m[2].parts[0].type, COMPASS_PART_TEXT);
    cr_assert(str_is(m[2].parts[0].text, "What is "));
    cr_assert_eq(m[2].parts[1].type, COMPASS_PART_IMAGE_URL);
    cr_assert(str_is(m[2].parts[1].url, "https://x/cat.png"));
    cr_assert(str_is(m[2].parts[1].detail, "low"));
    cr_assert(str_is(m[2].parts[2].text, "this?"));
    cr_assert_eq(m[3].role, COMPASS_ROLE_ASSISTANT);
    cr_assert_eq(m[3].has_content, 0);
    cr_assert_eq(m[3].n_tool_calls, 1);
    cr_assert(str_is(m[3].tool_calls[0].id, "call_1"));
    cr_assert(str_is(m[3].tool_calls[0].name, "lookup"));
    cr_assert(str_is(m[3].tool_calls[0].arguments, "{\"q\":1}"));
    cr_assert_eq(m[4].role, COMPASS_ROLE_TOOL);
    cr_assert(str_is(m[4].tool_call_id, "call_1"));
    cr_assert(str_is(m[4].content, "cat"));

    cr_assert_eq(r.n_tools, 2);
    cr_assert(str_is(r.tools[0].name, "lookup"));
    cr_assert(str_is(r.tools[0].description, "find"));
    cr_assert(str_is(r.tools[0].parameters, "{\"type\":\"object\"}"));
    cr_assert_eq(r.tools[0].strict, 1);
    cr_assert(str_is(r.tools[1].name, "noop"));
    cr_assert_eq(r.tools[1].parameters.len, 0);
    cr_assert_eq(r.tools[1].strict, -1);
    cr_assert_eq(r.tool_choice, COMPASS_TOOL_CHOICE_FUNCTION);
    cr_assert(str_is(r.tool_choice_name, "lookup"));

    cr_assert_eq(r.stream, 1);
    cr_assert_eq(r.include_usage, 1);
    cr_assert_eq(r.set, COMPASS_SET_TEMPERATURE | COMPASS_SET_TOP_P |
                            COMPASS_SET_PRESENCE_PENALTY | COMPASS_SET_FREQUENCY_PENALTY |
                            COMPASS_SET_MAX_TOKENS | COMPASS_SET_MAX_COMPLETION_TOKENS |
                            COMPASS_SET_SEED | COMPASS_SET_N | COMPASS_SET_PARALLEL_TOOL_CALLS);
    cr_assert_eq(r.temperature, 0.5);
    cr_assert_eq(r.top_p, 0.9);
    cr_assert_eq(r.presence_penalty, -1.0);
    cr_assert_eq(r.frequency_penalty, 1.5);
    cr_assert_eq(r.max_tokens, 100);
    cr_assert_eq(r.max_completion_tokens, 200);
    cr_assert_eq(r.seed, -7);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.parallel_tool_calls, 0);
    cr_assert_eq(r.n_stop, 2);
    cr_assert(str_is(r.stop[0], "END"));
    cr_assert(str_is(r.stop[1], "\n\n"));
    cr_assert(str_is(r.response_format, "{\"type\":\"json_object\"}"));
    cr_assert(str_is(r.reasoning_effort, "low"));
    cr_assert(str_is(r.user, "u-1"));
}

Test(canon, minimal_request_leaves_optional_fields_unset)
{
    compass_chat_request r;
    compass_err err;
    const char *b = "{\"model\":\"m\",\"messages\":[" USER "],\"stop\":\"STOP\"}";
    cr_assert_eq(cps_canon_parse_chat(arena, b, strlen(b), &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.set, 0);
    cr_assert_eq(r.stream, 0);
    cr_assert_eq(r.tool_choice, COMPASS_TOOL_CHOICE_UNSET);
    cr_assert_eq(r.n_tools, 0);
    cr_assert_eq(r.n_stop, 1);
    cr_assert(str_is(r.stop[0], "STOP"));
    cr_assert_eq(r.response_format.len, 0);
}

/* ---- writers ---- */

static json_object *parse_out(const cps_buf *b)
{
    json_object *o = json_tokener_parse(b->ptr);
    cr_assert_not_null(o, "not JSON: %s", b->ptr);
    return o;
}

static json_object *get(json_object *o, const char *path)
{
    /* dotted path; a numeric segment indexes an array */
    char seg[64];
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, ".");
        cr_assert_lt(n, sizeof(seg));
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (seg[0] >= '0' && seg[0] <= '9') {
            cr_assert(json_object_is_type(o, json_type_array), "%s: not an array", path);
            o = json_object_array_get_idx(o, (size_t)(seg[0] - '0'));
        } else {
            json_object *v = NULL;
            cr_assert(json_object_object_get_ex(o, seg, &v), "missing %s (in %s)", seg, path);
            o = v;
        }
        cr_assert(o || !p[n], "%s: null before the end", path);
        p += n + (p[n] == '.');
    }
    return o;
}

static const char *get_s(json_object *o, const char *path)
{
    json_object *v = get(o, path);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string", path);
    return json_object_get_string(v);
}

static int64_t get_i(json_object *o, const char *path)
{
    json_object *v = get(o, path);
    cr_assert(json_object_is_type(v, json_type_int), "%s is not an integer", path);
    return json_object_get_int64(v);
}

Test(canon, write_response_has_the_openai_fields)
{
    compass_tool_call tc = {compass_str_c("call_9"), compass_str_c("lookup"),
                            compass_str_c("{\"q\":\"x\"}")};
    compass_chat_response r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.has_content = 1;
    r.content = compass_str_c("Hello \"world\"\n");
    r.tool_calls = &tc;
    r.n_tool_calls = 1;
    r.finish_reason = COMPASS_FINISH_TOOL_CALLS;
    r.usage.present = 1;
    r.usage.prompt_tokens = 10;
    r.usage.completion_tokens = 5;
    r.usage.cached_tokens = 3;
    r.usage.reasoning_tokens = 2;
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_response(&b, &r, compass_str_c("chatcmpl-1"),
                                          compass_str_c("gpt-4o"), 1700000000), 0);
    json_object *o = parse_out(&b);
    cr_assert_str_eq(get_s(o, "id"), "chatcmpl-1");
    cr_assert_str_eq(get_s(o, "object"), "chat.completion");
    cr_assert_eq(get_i(o, "created"), 1700000000);
    cr_assert_str_eq(get_s(o, "model"), "gpt-4o");
    cr_assert_eq(get_i(o, "choices.0.index"), 0);
    cr_assert_str_eq(get_s(o, "choices.0.message.role"), "assistant");
    cr_assert_str_eq(get_s(o, "choices.0.message.content"), "Hello \"world\"\n");
    cr_assert_str_eq(get_s(o, "choices.0.message.tool_calls.0.id"), "call_9");
    cr_assert_str_eq(get_s(o, "choices.0.message.tool_calls.0.type"), "function");
    cr_assert_str_eq(get_s(o, "choices.0.message.tool_calls.0.function.name"), "lookup");
    cr_assert_str_eq(get_s(o, "choices.0.message.tool_calls.0.function.arguments"),
                     "{\"q\":\"x\"}");
    cr_assert_str_eq(get_s(o, "choices.0.finish_reason"), "tool_calls");
    cr_assert_eq(get_i(o, "usage.prompt_tokens"), 10);
    cr_assert_eq(get_i(o, "usage.completion_tokens"), 5);
    cr_assert_eq(get_i(o, "usage.total_tokens"), 15, "total derived when not given");
    cr_assert_eq(get_i(o, "usage.prompt_tokens_details.cached_tokens"), 3);
    cr_assert_eq(get_i(o, "usage.completion_tokens_details.reasoning_tokens"), 2);
    json_object_put(o);
    cps_buf_free(&b);
}

Test(canon, write_response_prefers_the_upstream_id_and_model_and_omits_absent_usage)
{
    compass_chat_response r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.id = compass_str_c("up-1");
    r.model = compass_str_c("up-model");
    r.created = 5;
    r.finish_reason = COMPASS_FINISH_LENGTH;
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_response(&b, &r, compass_str_c("ours"), compass_str_c("route"),
                                          9), 0);
    json_object *o = parse_out(&b);
    cr_assert_str_eq(get_s(o, "id"), "up-1");
    cr_assert_str_eq(get_s(o, "model"), "up-model");
    cr_assert_eq(get_i(o, "created"), 5);
    cr_assert(json_object_is_type(get(o, "choices.0.message.content"), json_type_null));
    cr_assert_str_eq(get_s(o, "choices.0.finish_reason"), "length");
    json_object *u = NULL;
    cr_assert_not(json_object_object_get_ex(o, "usage", &u));
    json_object_put(o);
    cps_buf_free(&b);
}

Test(canon, write_chunk_has_delta_and_finish_reason)
{
    compass_chat_delta d;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    d.content = compass_str_c("He");
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_chunk(&b, &d, compass_str_c("c1"), compass_str_c("m"), 7, 0), 0);
    json_object *o = parse_out(&b);
    cr_assert_str_eq(get_s(o, "object"), "chat.completion.chunk");
    cr_assert_str_eq(get_s(o, "id"), "c1");
    cr_assert_eq(get_i(o, "created"), 7);
    cr_assert_str_eq(get_s(o, "choices.0.delta.role"), "assistant");
    cr_assert_str_eq(get_s(o, "choices.0.delta.content"), "He");
    cr_assert(json_object_is_type(get(o, "choices.0.finish_reason"), json_type_null));
    json_object_put(o);

    compass_delta_init(&d);
    d.tool_index = 0;
    d.tool_id = compass_str_c("call_1");
    d.tool_name = compass_str_c("lookup");
    d.tool_arguments = compass_str_c("{\"q\"");
    d.finish_reason = COMPASS_FINISH_TOOL_CALLS;
    cps_buf_reset(&b);
    cr_assert_eq(cps_canon_write_chunk(&b, &d, compass_str_c("c1"), compass_str_c("m"), 7, 0), 0);
    o = parse_out(&b);
    cr_assert_eq(get_i(o, "choices.0.delta.tool_calls.0.index"), 0);
    cr_assert_str_eq(get_s(o, "choices.0.delta.tool_calls.0.id"), "call_1");
    cr_assert_str_eq(get_s(o, "choices.0.delta.tool_calls.0.function.name"), "lookup");
    cr_assert_str_eq(get_s(o, "choices.0.delta.tool_calls.0.function.arguments"), "{\"q\"");
    cr_assert_str_eq(get_s(o, "choices.0.finish_reason"), "tool_calls");
    json_object_put(o);
    cps_buf_free(&b);
}

Test(canon, write_usage_chunk_has_empty_choices_and_usage)
{
    compass_chat_delta d;
    compass_delta_init(&d);
    d.usage.present = 1;
    d.usage.prompt_tokens = 4;
    d.usage.completion_tokens = 6;
    d.usage.total_tokens = 10;
    d.usage.cached_tokens = 1;
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_chunk(&b, &d, compass_str_c("c1"), compass_str_c("m"), 7, 1), 0);
    json_object *o = parse_out(&b);
    cr_assert_eq(json_object_array_length(get(o, "choices")), 0);
    cr_assert_eq(get_i(o, "usage.total_tokens"), 10);
    cr_assert_eq(get_i(o, "usage.prompt_tokens_details.cached_tokens"), 1);
    json_object_put(o);
    cps_buf_free(&b);
}

Test(canon, write_error_shape)
{
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_canon_write_error(&b, "model: required string", "invalid_request_error",
                                       "model", NULL), 0);
    cr_assert_str_eq(b.ptr, "{\"error\":{\"message\":\"model: required string\",\"type\":"
                            "\"invalid_request_error\",\"param\":\"model\",\"code\":null}}");
    cps_buf_free(&b);
}

Test(canon, json_str_escapes_controls_quotes_backslashes_and_keeps_utf8)
{
    const char in[] = "a\"b\\c\n\r\t\b\f\x01\x1f\x7f é € 😀";
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_buf_json_str(&b, in, sizeof(in) - 1), 0);
    cr_assert_str_eq(b.ptr, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f é € 😀\"");
    /* and json-c reads it back to the same bytes */
    json_object *o = json_tokener_parse(b.ptr);
    cr_assert_not_null(o);
    cr_assert_str_eq(json_object_get_string(o), in);
    json_object_put(o);
    cps_buf_free(&b);
}

Test(canon, json_str_escapes_an_embedded_nul)
{
    cps_buf b;
    cps_buf_init(&b);
    cr_assert_eq(cps_buf_json_str(&b, "a\0b", 3), 0);
    cr_assert_str_eq(b.ptr, "\"a\\u0000b\"");
    cps_buf_free(&b);
}

/* The writers' integer and string helpers: what printf's %lld and "%s" into a buffer give. */
Test(canon, put_i64_writes_what_printf_writes)
{
    const long long vals[] = {0, 7, -7, 10, 99, 100, 1796312289, -1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char want[32];
        snprintf(want, sizeof(want), "x%lld", vals[i]);
        cps_buf b;
        cps_buf_init(&b);
        cps_buf_puts(&b, "x");
        cr_assert_eq(cps_buf_put_i64(&b, vals[i]), 0);
        cr_assert_str_eq(b.ptr, want);
        cps_buf_free(&b);
    }
}

Test(canon, str_copy_cuts_to_fit_like_snprintf)
{
    char d[6];
    cps_str_copy(d, sizeof(d), "abc");
    cr_assert_str_eq(d, "abc");
    cps_str_copy(d, sizeof(d), "abcdefgh");
    cr_assert_str_eq(d, "abcde");
    cps_str_copy(d, sizeof(d), NULL);
    cr_assert_str_eq(d, "");
    cps_str_copy(d, 1, "abc");
    cr_assert_str_eq(d, "");
}
