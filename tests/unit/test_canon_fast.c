/* The chat request parser's two paths (core/src/canon.c): the fast path, which reads the body
 * in place, must give exactly what the general json-c path gives for every body it answers,
 * and must leave every other body (errors included) to the general path. Each corpus body
 * says which path answers it, so a fast path that always declined would fail. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canon.h"
#include "pair_cases.h"

TestSuite(canon_fast);

enum { FAST, GENERAL };

/* Corpus bodies are written with ' for " (JSON has no single quotes) unless raw is set. */
typedef struct entry {
    const char *name;
    int path; /* which path must answer: FAST or GENERAL */
    const char *body;
    int raw;
} entry;

#define M "'model':'m'"
#define USER "{'role':'user','content':'hi'}"
#define REQ(extra) "{" M ",'messages':[" USER "]" extra "}"
#define MSGS(...) "{" M ",'messages':[" __VA_ARGS__ "]}"

#define BENCH                                                                                  \
    "{'model':'gpt-4o-mini','temperature':0.2,'max_tokens':256,'messages':["                  \
    "{'role':'system','content':'You are a helpful assistant for an online bookshop. "        \
    "Answer in two sentences at most, be polite, and never invent titles.'},"                  \
    "{'role':'user','content':'Hello! I am looking for a gift for my father, who loves "       \
    "naval history and long biographies. He has already read most of the classics about "      \
    "Nelson. What would you suggest, and roughly how much would it cost me?'}]}"

#define RICH                                                                                   \
    "{'model':'gpt-4o','messages':["                                                          \
    "{'role':'system','content':'Be brief.'},"                                                 \
    "{'role':'developer','content':'dev','name':'ops'},"                                       \
    "{'role':'user','content':[{'type':'text','text':'What is '},"                             \
    "{'type':'image_url','image_url':{'url':'https://x/cat.png','detail':'low'}},"             \
    "{'type':'text','text':'this?'}]},"                                                        \
    "{'role':'assistant','content':null,'tool_calls':[{'id':'call_1',"                         \
    "'type':'function','function':{'name':'lookup','arguments':'{\\'q\\':1}'}}]},"             \
    "{'role':'tool','tool_call_id':'call_1','content':'cat'}],"                                \
    "'tools':[{'type':'function','function':{'name':'lookup','description':'find',"            \
    "'parameters':{'type':'object'},'strict':true}},"                                          \
    "{'type':'function','function':{'name':'noop'}}],"                                         \
    "'tool_choice':{'type':'function','function':{'name':'lookup'}},"                          \
    "'stream':true,'stream_options':{'include_usage':true},"                                   \
    "'temperature':0.5,'top_p':0.9,'presence_penalty':-1,'frequency_penalty':1.5,"             \
    "'max_tokens':100,'max_completion_tokens':200,'seed':-7,'n':1,"                            \
    "'parallel_tool_calls':false,'stop':['END','\\n\\n'],"                                     \
    "'response_format':{'type':'json_object'},'reasoning_effort':'low',"                       \
    "'user':'u-1','metadata':{'ignored':true}}"

#define TOOL_CALLS                                                                             \
    MSGS(USER ",{'role':'assistant','content':'let me see','tool_calls':["                     \
         "{'id':'c1','type':'function','function':{'name':'a','arguments':'{\\'q\\':\\'x\\'}'}},"  \
         "{'id':'c2','function':{'arguments':{ 'q' : [1, 2.50, {'x':null}], 'b':true },"       \
         "'name':'b'}},"                                                                        \
         "{'id':3,'function':{'name':'c','arguments':null}},"                                   \
         "{'function':{'name':'d','arguments':1.0}},"                                           \
         "{'function':{'name':'e'},'extra':{'k':[1]}}]},"                                        \
         "{'role':'tool','tool_call_id':'c1','name':'a','content':'42'},"                        \
         "{'role':'tool','tool_call_id':'c2','content':[{'type':'text','text':'ok'}]}")

#define TOOLS                                                                                  \
    REQ(",'tools':[{'type':'function','function':{'name':'lookup',"                            \
        "'description':'find \\u00e9','parameters':{ 'type' : 'object', 'properties':"          \
        "{'q':{'type':'string','description':'a \\/ b \\'c\\''}}, 'required':['q'],"            \
        "'x':1.50, 'y':1e2, 'z':-0, 'w':'\\u0000\\ud83d\\ude00', 'v':[], 'u':{}},"              \
        "'strict':true}},"                                                                      \
        "{'function':{'name':'noop','parameters':null,'strict':'yes'}},"                       \
        "{'type':'function','function':{'name':'f3','strict':false,'description':7},"          \
        "'extra':[{'name':'x'}]}],'tool_choice':{'type':'function','function':"                 \
        "{'name':'f3','extra':1}}")

#define NUMBERS                                                                                \
    REQ(",'temperature':1E0,'top_p':0.000001,'presence_penalty':-0.0,"                         \
        "'frequency_penalty':1.9999999,'max_tokens':1.0e+2,'max_completion_tokens':2.5e1,"      \
        "'seed':99999999999999999999,'n':256.0")

#define ESCAPES                                                                                \
    "{'model':'gpt\\u002d4o','messages':[{'role':'user','name':'\\u00e9\\n',"                  \
    "'content':'a\\nb\\'c\\\\d\\/e\\b\\f\\r\\t \\u00e9 \\u20ac \\u07ff \\u0800 \\uffff "         \
    "\\ud83d\\ude00 \\uD83D\\uDE00 \\u0000 \\u001f \\u007f end\\\\'}],"                          \
    "'stop':['\\n\\n','\\u0000'],'user':'\\\\u0041'}"

static const entry corpus[] = {
    {"bench", FAST, BENCH, 0},
    {"minimal", FAST, REQ(""), 0},
    {"rich", FAST, RICH, 0},
    {"multi_turn", FAST,
     MSGS("{'role':'system','content':'s'},{'role':'user','content':'u1','name':'ann'},"
          "{'role':'assistant','content':'a1'},{'role':'user','content':'u2'},"
          "{'role':'assistant','content':''},{'role':'developer','content':'d','name':''},"
          "{'role':'user','content':'u3'},{'role':'assistant','content':'a3'},"
          "{'role':'user','content':'u4'}"), 0},
    {"content_parts", FAST,
     MSGS("{'role':'user','content':[{'type':'text','text':'What is '},"
          "{'type':'image_url','image_url':'https://x/a.png'},"
          "{'type':'image_url','image_url':{'url':'data:image/png;base64,AAAA','detail':'high'}},"
          "{'image_url':{'detail':5,'url':'u','x':[1]},'type':'image_url','text':'ignored'},"
          "{'type':'text','text':'','extra':[1,2]},{'text':'this?','type':'text'}]}"), 0},
    {"content_parts_empty", FAST, MSGS("{'role':'user','content':[]}"), 0},
    {"content_null_on_assistant", FAST, MSGS(USER ",{'role':'assistant','content':null}"), 0},
    {"assistant_without_content", FAST, MSGS(USER ",{'role':'assistant'}"), 0},
    {"tool_calls", FAST, TOOL_CALLS, 0},
    {"tool_calls_empty_and_null", FAST,
     MSGS(USER ",{'role':'assistant','tool_calls':[]},{'role':'assistant','tool_calls':null}"),
     0},
    {"tools", FAST, TOOLS, 0},
    {"tools_null", FAST, REQ(",'tools':null"), 0},
    {"tools_empty", FAST, REQ(",'tools':[]"), 0},
    {"tool_choice_auto", FAST, REQ(",'tool_choice':'auto'"), 0},
    {"tool_choice_none", FAST, REQ(",'tool_choice':'none'"), 0},
    {"tool_choice_required", FAST, REQ(",'tool_choice':'required'"), 0},
    {"tool_choice_null", FAST, REQ(",'tool_choice':null"), 0},
    {"tool_choice_before_tools", FAST,
     "{'tool_choice':{'function':{'name':'t'}}," M ",'messages':[" USER "],"
     "'tools':[{'function':{'name':'t'}}]}", 0},
    {"stop_string", FAST, REQ(",'stop':'STOP'"), 0},
    {"stop_array_empty", FAST, REQ(",'stop':[]"), 0},
    {"stop_array_four", FAST, REQ(",'stop':['a','','\\n','d']"), 0},
    {"stop_null", FAST, REQ(",'stop':null"), 0},
    {"response_format_json_schema", FAST,
     REQ(",'response_format':{ 'type' : 'json_schema', 'json_schema' : { 'name':'x',"
         " 'schema':{'type':'object','properties':{'a':{'type':'number','minimum':0.5,"
         "'maximum':1e3}}}, 'strict':true, 'd':'\\/\\u00e9' } }"), 0},
    {"response_format_text", FAST, REQ(",'response_format':{'type':'text'}"), 0},
    {"response_format_null", FAST, REQ(",'response_format':null"), 0},
    {"stream_with_usage", FAST, REQ(",'stream':true,'stream_options':{'include_usage':true}"),
     0},
    {"stream_options_empty", FAST, REQ(",'stream':false,'stream_options':{'x':1}"), 0},
    {"stream_and_options_null", FAST, REQ(",'stream':null,'stream_options':null"), 0},
    {"numbers_every_field", FAST,
     REQ(",'temperature':0.2,'top_p':1,'presence_penalty':-2,'frequency_penalty':2,"
         "'max_tokens':256.0,'max_completion_tokens':1e2,'seed':-0,'n':1"), 0},
    {"numbers_forms", FAST, NUMBERS, 0},
    {"numbers_zero_and_edges", FAST,
     REQ(",'temperature':0,'top_p':0.0,'presence_penalty':-0,'frequency_penalty':-2.0,"
         "'max_tokens':8999999999999999.0,'max_completion_tokens':1234567890123456789,"
         "'seed':-99999999999999999999,'n':123456789012345678"), 0},
    {"numbers_int64_bounds", FAST,
     REQ(",'seed':9223372036854775807,'max_tokens':9223372036854775808,"
         "'max_completion_tokens':18446744073709551616"), 0},
    {"numbers_int64_min", FAST, REQ(",'seed':-9223372036854775808"), 0},
    {"numbers_int64_below_min", FAST, REQ(",'seed':-9223372036854775809"), 0},
    {"numbers_read_by_json_c", FAST,
     REQ(",'temperature':0.12345678901234567890,'top_p':5e-324,"
         "'presence_penalty':1.5e-30,'frequency_penalty':-1.00000000000000000001,"
         "'seed':1.5e3,'max_tokens':250E-1,'max_completion_tokens':1000000000000000000000e-20,"
         "'n':1e-0,'stop':'\\u00e9'"), 0},
    /* exponents of 5 digits are read by json-c */
    {"numbers_long_exponent", FAST, REQ(",'n':1e00000,'temperature':10000e-00004"), 0},
    {"numbers_null", FAST,
     REQ(",'temperature':null,'top_p':null,'presence_penalty':null,'frequency_penalty':null,"
         "'max_tokens':null,'max_completion_tokens':null,'seed':null,'n':null,"
         "'parallel_tool_calls':null"), 0},
    {"parallel_tool_calls_true", FAST, REQ(",'parallel_tool_calls':true"), 0},
    {"parallel_tool_calls_false", FAST, REQ(",'parallel_tool_calls':false"), 0},
    {"reasoning_effort_and_user", FAST, REQ(",'reasoning_effort':'high','user':'u'"), 0},
    {"escapes", FAST, ESCAPES, 0},
    {"lone_surrogates", FAST,
     MSGS("{'role':'user','content':'x\\ud800y','name':'\\udc00'},"
          "{'role':'assistant','content':'\\ud83d\\u0041 \\ud83d\\ud83d\\ude00 \\ud83d'},"
          "{'role':'user','content':'\\ud800\\\\u0041 \\udbff\\udfff \\ud83d'}"), 0},
    {"pairs_json_c_would_replace", FAST,
     "{" M ",'user':'\\uD877\\uDFFF','messages':[{'role':'user','content':'a\\uD836\\uDC00b "
     "\\\\uD836'}],'tools':[{'function':{'name':'f','parameters':{'d':'\\uDBF7\\uDC00'}}}]}", 0},
    {"raw_utf8", FAST,
     MSGS("{'role':'user','content':'caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac \x7f "
          "bad \xff\xfe\xc3" " end','name':'\xe6\x97\xa5'}"), 0},
    {"whitespace_everywhere", FAST,
     " \n\t{ \r\n 'model' : 'm' , 'messages' : [ { 'role' : 'user' , 'content' : [ { 'type' "
     ": 'text' , 'text' : 'x' } ] } , { 'role' :'assistant','tool_calls' : [ { 'function' : {"
     " 'name' : 'f' , 'arguments' : { 'a' : [ 1 , 2 ] } } } ] } ] , 'temperature' : 1 , "
     "'stop' : [ 'a' , 'b' ] , 'tools' : [ { 'function' : { 'name' : 'f' , 'parameters' : "
     "{ 'p' : { } } } } ] , 'response_format' : { 'type' : 'text' } } \n\r\t ", 0},
    {"unknown_fields", FAST,
     "{'metadata':{'a':[1,{'b':null,'b':2}],'k\\u0041':'\\ud800','deep':[[[[[[1]]]]]]},"
     "'logit_bias':{'50256':-100},'logprobs':true,'top_logprobs':2,'service_tier':'auto',"
     "'x':[{},[],'',0,-1.5e-3,1E+400,true,false,null]," M ",'messages':["
     "{'role':'user','x':{'role':'system','y':[{'z':'\\u00e9'}]},'content':[{'type':'text',"
     "'text':'t','cache_control':{'type':'ephemeral'}}],'audio':null},"
     "{'role':'assistant','refusal':null,'tool_calls':[{'id':'i','type':'function','index':0,"
     "'function':{'name':'n','arguments':'{}','extra':{'a':[]}}}]}],"
     "'tools':[{'type':'function','function':{'name':'n','x':{'y':1}},'z':[]}],"
     "'stream_options':{'include_usage':false,'other':{'a':1}},"
     "'response_format':{'type':'json_object','x':{'y':[1,2,{'z':null}]}},'modalities':['text']}",
     0},
    {"null_optionals", FAST,
     "{" M ",'messages':[{'role':'user','content':'x','name':null},"
     "{'role':'assistant','content':null,'tool_calls':null,'name':null}],'tools':null,"
     "'tool_choice':null,'stream':null,'stream_options':null,'temperature':null,"
     "'top_p':null,'presence_penalty':null,'frequency_penalty':null,'max_tokens':null,"
     "'max_completion_tokens':null,'seed':null,'n':null,'parallel_tool_calls':null,"
     "'stop':null,'response_format':null,'reasoning_effort':null,'user':null}", 0},
    {"non_string_optionals_ignored", FAST,
     "{" M ",'user':5,'reasoning_effort':{},'messages':[{'role':'user','content':'x',"
     "'name':1,'tool_call_id':7},{'role':'assistant','tool_calls':[{'id':3,'function':"
     "{'name':'f'}}]}],'tools':[{'function':{'name':'f','description':7,'strict':'yes'}}]}",
     0},
    {"tool_message_tool_call_id_escaped", FAST,
     MSGS(USER ",{'role':'tool','tool_call_id':'c\\u00e9','content':'r'}"), 0},
    {"leading_and_trailing_whitespace", FAST, " \r\n\t" REQ("") " \r\n\t", 0},

    /* shapes the fast path leaves to json-c */
    {"duplicate_root_key", GENERAL, "{'model':'a','messages':[" USER "],'model':'b'}", 0},
    {"duplicate_message_key", GENERAL,
     MSGS("{'role':'user','content':'a','content':'b'}"), 0},
    {"duplicate_part_key", GENERAL,
     MSGS("{'role':'user','content':[{'type':'text','text':'a','text':'b'}]}"), 0},
    {"duplicate_function_name", GENERAL,
     REQ(",'tools':[{'function':{'name':'a','name':'b'}}]"), 0},
    {"duplicate_include_usage", GENERAL,
     REQ(",'stream_options':{'include_usage':true,'include_usage':false}"), 0},
    {"duplicate_response_format_type", GENERAL,
     REQ(",'response_format':{'type':'xml','type':'text'}"), 0},
    {"escaped_root_key", GENERAL, "{'mod\\u0065l':'m','messages':[" USER "]}", 0},
    {"escaped_unknown_message_key", GENERAL,
     MSGS("{'role':'user','content':'x','x\\u0041':1}"), 0},
    {"escaped_role", GENERAL, MSGS("{'role':'\\u0075ser','content':'x'}"), 0},
    {"role_with_nul", GENERAL, MSGS("{'role':'user\\u0000x','content':'x'}"), 0},
    {"escaped_part_type", GENERAL,
     MSGS("{'role':'user','content':[{'type':'t\\u0065xt','text':'a'}]}"), 0},
    {"escaped_tool_choice", GENERAL, REQ(",'tool_choice':'\\u0061uto'"), 0},
    {"escaped_response_format_type", GENERAL,
     REQ(",'response_format':{'type':'te\\u0078t'}"), 0},
    {"deep_unknown_field", GENERAL,
     REQ(",'x':[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
     0},
    {"nesting_too_deep", GENERAL,
     REQ(",'x':[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1"
         "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"), 0},
    {"comment", GENERAL, "{/* c */" M ",'messages':[" USER "]}", 0},
    {"trailing_comma", GENERAL, REQ(",'stop':['a',]"), 0},
    {"single_quotes", GENERAL, "{'model':'m','messages':[{'role':'user','content':'hi'}]}", 1},
    {"nan", GENERAL, REQ(",'temperature':NaN"), 0},
    {"raw_control_character", GENERAL, MSGS("{'role':'user','content':'a\tb'}"), 0},
    {"not_an_object", GENERAL, "[1,2]", 0},
    {"string_body", GENERAL, "'x'", 0},

    /* client mistakes: the general path writes the message */
    {"model_missing", GENERAL, "{'messages':[" USER "]}", 0},
    {"model_empty", GENERAL, "{'model':'','messages':[" USER "]}", 0},
    {"model_number", GENERAL, "{'model':1,'messages':[" USER "]}", 0},
    {"messages_missing", GENERAL, "{" M "}", 0},
    {"messages_empty", GENERAL, "{" M ",'messages':[]}", 0},
    {"messages_not_an_array", GENERAL, "{" M ",'messages':{}}", 0},
    {"messages_null", GENERAL, "{" M ",'messages':null}", 0},
    {"message_not_an_object", GENERAL, MSGS(USER ",'x'"), 0},
    {"role_bad", GENERAL, MSGS(USER ",{'role':'robot','content':'x'}"), 0},
    {"role_missing", GENERAL, MSGS(USER ",{'content':'x'}"), 0},
    {"role_not_a_string", GENERAL, MSGS("{'role':1,'content':'x'}"), 0},
    {"user_without_content", GENERAL, MSGS("{'role':'user'}"), 0},
    {"user_with_null_content", GENERAL, MSGS("{'role':'user','content':null}"), 0},
    {"part_type_unsupported", GENERAL,
     MSGS("{'role':'user','content':[{'type':'text','text':'a'},{'type':'input_audio'}]}"), 0},
    {"part_without_type", GENERAL, MSGS("{'role':'user','content':[{'text':'a'}]}"), 0},
    {"part_not_an_object", GENERAL, MSGS("{'role':'user','content':['a']}"), 0},
    {"text_part_without_text", GENERAL, MSGS("{'role':'user','content':[{'type':'text'}]}"),
     0},
    {"text_part_text_number", GENERAL,
     MSGS("{'role':'user','content':[{'type':'text','text':1}]}"), 0},
    {"image_part_without_image_url", GENERAL,
     MSGS("{'role':'user','content':[{'type':'image_url'}]}"), 0},
    {"image_part_without_url", GENERAL,
     MSGS("{'role':'user','content':[{'type':'image_url','image_url':{'detail':'low'}}]}"), 0},
    {"image_part_url_number", GENERAL,
     MSGS("{'role':'user','content':[{'type':'image_url','image_url':5}]}"), 0},
    {"content_number", GENERAL, MSGS("{'role':'user','content':5}"), 0},
    {"tool_calls_on_user", GENERAL, MSGS("{'role':'user','content':'x','tool_calls':[]}"), 0},
    {"tool_calls_null_on_user", GENERAL,
     MSGS("{'role':'user','content':'x','tool_calls':null}"), 0},
    {"tool_calls_not_an_array", GENERAL, MSGS("{'role':'assistant','tool_calls':{}}"), 0},
    {"tool_call_without_name", GENERAL,
     MSGS("{'role':'assistant','tool_calls':[{'function':{'arguments':'{}'}}]}"), 0},
    {"tool_call_function_not_an_object", GENERAL,
     MSGS("{'role':'assistant','tool_calls':[{'function':'f'}]}"), 0},
    {"tool_without_tool_call_id", GENERAL, MSGS(USER ",{'role':'tool','content':'42'}"), 0},
    {"tools_not_an_array", GENERAL, REQ(",'tools':{}"), 0},
    {"tool_not_an_object", GENERAL, REQ(",'tools':[1]"), 0},
    {"tool_of_unsupported_type", GENERAL, REQ(",'tools':[{'type':'retrieval'}]"), 0},
    {"tool_type_null", GENERAL, REQ(",'tools':[{'type':null,'function':{'name':'f'}}]"), 0},
    {"tool_without_function", GENERAL, REQ(",'tools':[{'type':'function'}]"), 0},
    {"tool_name_empty", GENERAL, REQ(",'tools':[{'function':{'name':''}}]"), 0},
    {"tool_parameters_array", GENERAL,
     REQ(",'tools':[{'function':{'name':'f','parameters':[]}}]"), 0},
    {"tool_choice_not_in_tools", GENERAL,
     REQ(",'tools':[{'function':{'name':'search'}}],'tool_choice':{'type':'function',"
         "'function':{'name':'lookup'}}"), 0},
    {"tool_choice_without_tools", GENERAL, REQ(",'tool_choice':{'function':{'name':'x'}}"), 0},
    {"tool_choice_unknown_word", GENERAL, REQ(",'tool_choice':'always'"), 0},
    {"tool_choice_object_without_name", GENERAL,
     REQ(",'tools':[{'function':{'name':'f'}}],'tool_choice':{'type':'function'}"), 0},
    {"tool_choice_number", GENERAL, REQ(",'tool_choice':1"), 0},
    {"temperature_out_of_range", GENERAL, REQ(",'temperature':2.5"), 0},
    {"temperature_not_a_number", GENERAL, REQ(",'temperature':'hot'"), 0},
    {"temperature_infinite", GENERAL, REQ(",'temperature':1E400"), 0},
    {"top_p_negative", GENERAL, REQ(",'top_p':-0.1"), 0},
    {"presence_penalty_high", GENERAL, REQ(",'presence_penalty':3"), 0},
    {"frequency_penalty_low", GENERAL, REQ(",'frequency_penalty':-2.5"), 0},
    {"max_tokens_zero", GENERAL, REQ(",'max_tokens':0"), 0},
    {"max_tokens_fractional", GENERAL, REQ(",'max_tokens':1.5"), 0},
    {"max_tokens_9e15", GENERAL, REQ(",'max_tokens':9e15"), 0},
    {"max_tokens_string", GENERAL, REQ(",'max_tokens':'1'"), 0},
    {"seed_infinite", GENERAL, REQ(",'seed':1e400"), 0},
    {"n_negative", GENERAL, REQ(",'n':-1"), 0},
    {"n_huge_negative", GENERAL, REQ(",'n':-99999999999999999999"), 0},
    {"stop_five", GENERAL, REQ(",'stop':['a','b','c','d','e']"), 0},
    {"stop_number_entry", GENERAL, REQ(",'stop':['a',1]"), 0},
    {"stop_object", GENERAL, REQ(",'stop':{}"), 0},
    {"stream_not_a_boolean", GENERAL, REQ(",'stream':'yes'"), 0},
    {"stream_options_not_an_object", GENERAL, REQ(",'stream_options':true"), 0},
    {"include_usage_null", GENERAL, REQ(",'stream_options':{'include_usage':null}"), 0},
    {"include_usage_string", GENERAL, REQ(",'stream_options':{'include_usage':'x'}"), 0},
    {"parallel_tool_calls_number", GENERAL, REQ(",'parallel_tool_calls':1"), 0},
    {"response_format_bad_type", GENERAL, REQ(",'response_format':{'type':'xml'}"), 0},
    {"response_format_string", GENERAL, REQ(",'response_format':'json'"), 0},
    {"response_format_type_number", GENERAL, REQ(",'response_format':{'type':1}"), 0},
    {"invalid_json", GENERAL, "{'model':x}", 0},
    {"truncated", GENERAL, "{'model':'m'", 0},
    {"empty_body", GENERAL, "", 0},
    {"trailing_garbage", GENERAL, REQ("") " x", 0},
    {"two_objects", GENERAL, REQ("") REQ(""), 0},
};

/* Entry e's body as JSON (a malloc'd copy, its ' turned into " unless raw). */
static char *expand(const entry *e, size_t *len)
{
    size_t n = strlen(e->body);
    char *b = malloc(n + 1);
    cr_assert_not_null(b);
    memcpy(b, e->body, n + 1);
    if (!e->raw)
        for (size_t i = 0; i < n; i++)
            if (b[i] == '\'')
                b[i] = '"';
    *len = n;
    return b;
}

/* ---- comparing two requests field by field ---- */

typedef struct cmp {
    const char *ctx;        /* which body */
    const char *body;       /* the body: no string may point into it */
    size_t len;
} cmp;

static void same_str(const cmp *c, compass_str x, compass_str y, const char *what)
{
    cr_assert_eq(x.ptr == NULL, y.ptr == NULL, "%s: %s: given by one path only", c->ctx, what);
    cr_assert_eq(x.len, y.len, "%s: %s: length %zu, json-c %zu", c->ctx, what, x.len, y.len);
    if (!x.ptr)
        return;
    cr_assert(!memcmp(x.ptr, y.ptr, x.len), "%s: %s: '%.*s', json-c '%.*s'", c->ctx, what,
              (int)x.len, x.ptr, (int)y.len, y.ptr);
    cr_assert_eq(x.ptr[x.len], '\0', "%s: %s: not NUL-terminated", c->ctx, what);
    cr_assert(x.ptr + x.len < c->body || x.ptr >= c->body + c->len,
              "%s: %s: borrows the body instead of copying it", c->ctx, what);
}

static void same_double(const cmp *c, double x, double y, const char *what)
{
    cr_assert(!memcmp(&x, &y, sizeof(x)), "%s: %s: %.17g, json-c %.17g", c->ctx, what, x, y);
}

static void same_msg(const cmp *c, const compass_message *x, const compass_message *y,
                     size_t i)
{
    char w[96];
#define W(...) (snprintf(w, sizeof(w), __VA_ARGS__), w)
    cr_assert_eq(x->role, y->role, "%s: messages[%zu].role", c->ctx, i);
    same_str(c, x->name, y->name, W("messages[%zu].name", i));
    cr_assert_eq(x->has_content, y->has_content, "%s: messages[%zu].has_content", c->ctx, i);
    same_str(c, x->content, y->content, W("messages[%zu].content", i));
    cr_assert_eq(x->parts == NULL, y->parts == NULL, "%s: messages[%zu].parts", c->ctx, i);
    cr_assert_eq(x->n_parts, y->n_parts, "%s: messages[%zu].n_parts", c->ctx, i);
    for (size_t j = 0; j < x->n_parts; j++) {
        const compass_content_part *p = &x->parts[j], *q = &y->parts[j];
        cr_assert_eq(p->type, q->type, "%s: messages[%zu].parts[%zu].type", c->ctx, i, j);
        same_str(c, p->text, q->text, W("messages[%zu].parts[%zu].text", i, j));
        same_str(c, p->url, q->url, W("messages[%zu].parts[%zu].url", i, j));
        same_str(c, p->detail, q->detail, W("messages[%zu].parts[%zu].detail", i, j));
    }
    cr_assert_eq(x->tool_calls == NULL, y->tool_calls == NULL, "%s: messages[%zu].tool_calls",
                 c->ctx, i);
    cr_assert_eq(x->n_tool_calls, y->n_tool_calls, "%s: messages[%zu].n_tool_calls", c->ctx,
                 i);
    for (size_t j = 0; j < x->n_tool_calls; j++) {
        const compass_tool_call *p = &x->tool_calls[j], *q = &y->tool_calls[j];
        same_str(c, p->id, q->id, W("messages[%zu].tool_calls[%zu].id", i, j));
        same_str(c, p->name, q->name, W("messages[%zu].tool_calls[%zu].name", i, j));
        same_str(c, p->arguments, q->arguments,
                 W("messages[%zu].tool_calls[%zu].arguments", i, j));
    }
    same_str(c, x->tool_call_id, y->tool_call_id, W("messages[%zu].tool_call_id", i));
}

static void same_req(const cmp *c, const compass_chat_request *x, const compass_chat_request *y)
{
    char w[96];
    cr_assert_eq(x->size, y->size, "%s: size", c->ctx);
    same_str(c, x->model, y->model, "model");
    cr_assert_eq(x->messages == NULL, y->messages == NULL, "%s: messages", c->ctx);
    cr_assert_eq(x->n_messages, y->n_messages, "%s: n_messages", c->ctx);
    for (size_t i = 0; i < x->n_messages; i++)
        same_msg(c, &x->messages[i], &y->messages[i], i);
    cr_assert_eq(x->tools == NULL, y->tools == NULL, "%s: tools", c->ctx);
    cr_assert_eq(x->n_tools, y->n_tools, "%s: n_tools", c->ctx);
    for (size_t i = 0; i < x->n_tools; i++) {
        const compass_tool *p = &x->tools[i], *q = &y->tools[i];
        same_str(c, p->name, q->name, W("tools[%zu].name", i));
        same_str(c, p->description, q->description, W("tools[%zu].description", i));
        same_str(c, p->parameters, q->parameters, W("tools[%zu].parameters", i));
        cr_assert_eq(p->strict, q->strict, "%s: tools[%zu].strict", c->ctx, i);
    }
    cr_assert_eq(x->tool_choice, y->tool_choice, "%s: tool_choice", c->ctx);
    same_str(c, x->tool_choice_name, y->tool_choice_name, "tool_choice_name");
    cr_assert_eq(x->stream, y->stream, "%s: stream", c->ctx);
    cr_assert_eq(x->include_usage, y->include_usage, "%s: include_usage", c->ctx);
    cr_assert_eq(x->set, y->set, "%s: set %#x, json-c %#x", c->ctx, x->set, y->set);
    same_double(c, x->temperature, y->temperature, "temperature");
    same_double(c, x->top_p, y->top_p, "top_p");
    same_double(c, x->presence_penalty, y->presence_penalty, "presence_penalty");
    same_double(c, x->frequency_penalty, y->frequency_penalty, "frequency_penalty");
    cr_assert_eq(x->max_tokens, y->max_tokens, "%s: max_tokens", c->ctx);
    cr_assert_eq(x->max_completion_tokens, y->max_completion_tokens,
                 "%s: max_completion_tokens", c->ctx);
    cr_assert_eq(x->seed, y->seed, "%s: seed %lld, json-c %lld", c->ctx, (long long)x->seed,
                 (long long)y->seed);
    cr_assert_eq(x->n, y->n, "%s: n", c->ctx);
    cr_assert_eq(x->parallel_tool_calls, y->parallel_tool_calls, "%s: parallel_tool_calls",
                 c->ctx);
    cr_assert_eq(x->stop == NULL, y->stop == NULL, "%s: stop", c->ctx);
    cr_assert_eq(x->n_stop, y->n_stop, "%s: n_stop", c->ctx);
    for (size_t i = 0; i < x->n_stop; i++)
        same_str(c, x->stop[i], y->stop[i], W("stop[%zu]", i));
    same_str(c, x->response_format, y->response_format, "response_format");
    same_str(c, x->reasoning_effort, y->reasoning_effort, "reasoning_effort");
    same_str(c, x->user, y->user, "user");
    cr_assert_eq(x->raw.ptr, c->body, "%s: raw.ptr", c->ctx);
    cr_assert_eq(y->raw.ptr, c->body, "%s: raw.ptr (json-c)", c->ctx);
    cr_assert_eq(x->raw.len, y->raw.len, "%s: raw.len", c->ctx);
#undef W
}

/* Runs body through the fast path, the general path and cps_canon_parse_chat. want: FAST or
 * GENERAL (which path must answer), or -1 (either). Returns whether the fast path answered.
 * Whatever it answers must equal the general path's request; what it declines must leave
 * out reset, and cps_canon_parse_chat must then give the general path's rc and message. */
static int check_body(const char *ctx, const char *body, size_t len, int want)
{
    cmp c = {ctx, body, len};
    compass_chat_request f, g, all, zero;
    compass_err eg, eall;
    cps_arena *af = cps_arena_new(1024), *ag = cps_arena_new(1024), *aa = cps_arena_new(1024);
    cr_assert(af && ag && aa);
    memset(&eg, 0, sizeof(eg));
    memset(&eall, 0, sizeof(eall));
    memset(&zero, 0, sizeof(zero));
    zero.size = sizeof(zero);

    int rf = cps_canon_parse_chat_fast(af, body, len, &f);
    int rg = cps_canon_parse_chat_general(ag, body, len, &g, &eg);
    int ra = cps_canon_parse_chat(aa, body, len, &all, &eall);
    cr_assert(rf == 0 || rf == 1, "%s: fast path rc %d", ctx, rf);
    if (want >= 0)
        cr_assert_eq(rf, want == FAST ? 0 : 1, "%s: the %s path should answer (json-c: %d %s)",
                     ctx, want == FAST ? "fast" : "general", rg, rg ? eg.msg : "ok");
    if (rf == 0) {
        cr_assert_eq(rg, 0, "%s: fast path answered a body json-c refuses: %s", ctx, eg.msg);
        same_req(&c, &f, &g);
    } else {
        cr_assert(!memcmp(&f, &zero, sizeof(f)), "%s: a decline must reset out", ctx);
    }
    cr_assert_eq(ra, rg, "%s: rc %d, json-c %d (%s)", ctx, ra, rg, eg.msg);
    if (rg) {
        cr_assert_eq(eall.code, eg.code, "%s: err.code", ctx);
        cr_assert_str_eq(eall.msg, eg.msg, "%s: err.msg", ctx);
    } else {
        same_req(&c, &all, &g);
    }
    cps_arena_free(af);
    cps_arena_free(ag);
    cps_arena_free(aa);
    return rf == 0;
}

#define N_CORPUS (sizeof(corpus) / sizeof(corpus[0]))

static const entry *find(const char *name)
{
    for (size_t i = 0; i < N_CORPUS; i++)
        if (!strcmp(corpus[i].name, name))
            return &corpus[i];
    cr_assert_fail("no corpus entry %s", name);
    return NULL;
}

/* ---- tests ---- */

Test(canon_fast, answers_like_json_c_on_corpus)
{
    for (size_t i = 0; i < N_CORPUS; i++) {
        size_t len;
        char *b = expand(&corpus[i], &len);
        check_body(corpus[i].name, b, len, corpus[i].path);
        free(b);
    }
}

Test(canon_fast, general_path_still_writes_every_error)
{
    /* a sample of the messages test_canon.c pins, through the combined entry point */
    static const struct {
        const char *body, *msg;
    } cases[] = {
        {"{'messages':[" USER "]}", "model: required string"},
        {MSGS(USER ",{'role':'robot','content':'x'}"),
         "messages[1].role: 'robot' is not one of system, user, assistant, tool, developer"},
        {REQ(",'temperature':2.5"), "temperature: 2.5 is out of range [0, 2]"},
        {REQ(",'max_tokens':1.5"), "max_tokens: expected an integer"},
        {REQ(",'stop':['a','b','c','d','e']"), "stop: at most 4 sequences"},
        {"{'model':'m'", "request body is not valid JSON: unexpected end of input (at byte 12)"},
        {REQ("") " x", "request body is not valid JSON: trailing data at byte 58"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        entry e = {"error", GENERAL, cases[i].body, 0};
        size_t len;
        char *b = expand(&e, &len);
        cps_arena *a = cps_arena_new(1024);
        compass_chat_request r;
        compass_err err;
        memset(&err, 0, sizeof(err));
        cr_assert_neq(cps_canon_parse_chat(a, b, len, &r, &err), 0, "%s", b);
        cr_assert_str_eq(err.msg, cases[i].msg);
        cps_arena_free(a);
        free(b);
    }
}

Test(canon_fast, fails_every_truncated_prefix_like_json_c)
{
    static const char *const names[] = {"bench", "rich", "tool_calls", "tools", "escapes",
                                        "lone_surrogates", "numbers_forms", "unknown_fields",
                                        "whitespace_everywhere", "content_parts",
                                        "pairs_json_c_would_replace"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t len;
        char *b = expand(find(names[i]), &len);
        for (size_t n = 0; n <= len; n++) {
            char ctx[96];
            snprintf(ctx, sizeof(ctx), "%s[0..%zu)", names[i], n);
            /* a copy of just n bytes, so reading past the prefix is caught by ASan */
            char *p = malloc(n ? n : 1);
            cr_assert_not_null(p);
            memcpy(p, b, n);
            check_body(ctx, p, n, n == len ? FAST : -1);
            free(p);
        }
        free(b);
    }
}

Test(canon_fast, answers_mutated_bodies_like_json_c)
{
    static const char *const names[] = {"bench", "rich", "tool_calls", "tools", "escapes",
                                        "numbers_every_field"};
    static const char subst[] = "\"\\,:{}[]0-.eE u/\x01\0"; /* the NUL is a substitute too */
    size_t answered = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t len;
        char *b = expand(find(names[i]), &len);
        char *p = malloc(len + 1);
        cr_assert_not_null(p);
        for (size_t k = 0; k < len; k++) {
            char ctx[96];
            /* every byte replaced by each of subst, then deleted */
            for (size_t s = 0; s <= sizeof(subst) - 1; s++) {
                size_t n = len;
                memcpy(p, b, len);
                if (s < sizeof(subst) - 1) {
                    if (b[k] == subst[s])
                        continue;
                    p[k] = subst[s];
                } else {
                    memmove(p + k, p + k + 1, len - k - 1);
                    n--;
                }
                snprintf(ctx, sizeof(ctx), "%s, byte %zu %s", names[i], k,
                         s < sizeof(subst) - 1 ? "replaced" : "deleted");
                answered += (size_t)check_body(ctx, p, n, -1);
            }
        }
        free(p);
        free(b);
    }
    cr_assert_gt(answered, 1000, "the fast path should answer the harmless mutations");
}

Test(canon_fast, declines_cleanly_when_the_arena_runs_out)
{
    /* with every arena cap, the fast path answers exactly or declines with out reset; then
     * cps_canon_parse_chat answers exactly or says out of memory */
    static const char *const names[] = {"rich", "tool_calls", "tools", "escapes",
                                        "lone_surrogates", "content_parts", "stop_array_four",
                                        "numbers_read_by_json_c"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t len;
        char *b = expand(find(names[i]), &len);
        compass_chat_request g, f, all, zero;
        compass_err eg, eall;
        cps_arena *ag = cps_arena_new(1024);
        cr_assert_not_null(ag);
        cr_assert_eq(cps_canon_parse_chat_general(ag, b, len, &g, &eg), 0, "%s", eg.msg);
        memset(&zero, 0, sizeof(zero));
        zero.size = sizeof(zero);
        cmp c = {names[i], b, len};
        int answered = 0;
        for (size_t cap = 16; !answered; cap += 16) {
            cps_arena *a = cps_arena_new(1024);
            cr_assert_not_null(a);
            cps_arena_set_cap(a, cap);
            if (cps_canon_parse_chat_fast(a, b, len, &f) == 0) {
                same_req(&c, &f, &g);
                answered = 1;
            } else {
                cr_assert(!memcmp(&f, &zero, sizeof(f)), "%s: cap %zu: out not reset",
                          names[i], cap);
            }
            cps_arena_free(a);
            a = cps_arena_new(1024);
            cr_assert_not_null(a);
            cps_arena_set_cap(a, cap);
            memset(&eall, 0, sizeof(eall));
            int rc = cps_canon_parse_chat(a, b, len, &all, &eall);
            if (rc == 0)
                same_req(&c, &all, &g);
            else
                cr_assert(rc == COMPASS_ENOMEM && !strcmp(eall.msg, "out of memory"),
                          "%s: cap %zu: %d %s", names[i], cap, rc, eall.msg);
            cps_arena_free(a);
            cr_assert_lt(cap, 1u << 20, "%s: never answered", names[i]);
        }
        cps_arena_free(ag);
        free(b);
    }
}

/* A small deterministic generator for the number tests. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static unsigned rnd(unsigned n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (unsigned)(rng_state >> 33) % n;
}

static size_t put_digits(char *p, unsigned n, int lead_nonzero)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (char)('0' + (i == 0 && lead_nonzero ? 1 + rnd(9) : rnd(10)));
    return n;
}

/* A random JSON number: sign, integer part, fraction and exponent of varied lengths. */
static void random_number(char *out, size_t cap)
{
    char b[96];
    size_t n = 0;
    if (rnd(4) == 0)
        b[n++] = '-';
    unsigned int_digits = rnd(3) ? 1 : 1 + rnd(20);
    if (int_digits == 1 && rnd(2))
        b[n++] = '0';
    else
        n += put_digits(b + n, int_digits, 1);
    if (rnd(3)) {
        b[n++] = '.';
        n += put_digits(b + n, 1 + rnd(rnd(4) ? 8 : 22), 0);
    }
    if (rnd(3) == 0) {
        b[n++] = rnd(2) ? 'e' : 'E';
        unsigned r = rnd(3);
        if (r)
            b[n++] = r == 1 ? '+' : '-';
        n += put_digits(b + n, 1 + rnd(rnd(8) ? 2 : 4), 0);
    }
    b[n] = '\0';
    cr_assert_lt(n, cap);
    memcpy(out, b, n + 1);
}

Test(canon_fast, reads_numbers_like_json_c)
{
    static const char *const fields[] = {"temperature", "top_p", "presence_penalty",
                                         "frequency_penalty", "max_tokens",
                                         "max_completion_tokens", "seed", "n"};
    size_t answered = 0;
    for (int i = 0; i < 20000; i++) {
        char num[100], body[256], ctx[160];
        random_number(num, sizeof(num));
        const char *field = fields[rnd(8)];
        int len = snprintf(body, sizeof(body), "{\"model\":\"m\",\"messages\":[{\"role\":"
                           "\"user\",\"content\":\"x\"}],\"%s\":%s}", field, num);
        cr_assert(len > 0 && (size_t)len < sizeof(body));
        snprintf(ctx, sizeof(ctx), "%s: %s", field, num);
        /* a number json-c takes in range is one the fast path answers, the others go to json-c
         * for their message */
        compass_chat_request g;
        compass_err eg;
        cps_arena *a = cps_arena_new(1024);
        int rg = cps_canon_parse_chat_general(a, body, (size_t)len, &g, &eg);
        cps_arena_free(a);
        answered += (size_t)check_body(ctx, body, (size_t)len, rg ? GENERAL : FAST);
    }
    cr_assert_gt(answered, 5000);
}

Test(canon_fast, answers_many_messages_and_tools_like_json_c)
{
    /* more values decoded with json-c than one js_keep holds, and arrays that grow */
    size_t cap = 64 * 1024, n = 0;
    char *b = malloc(cap);
    cr_assert_not_null(b);
#define PUT(...) (n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__))
    PUT("{\"model\":\"m\",\"messages\":[");
    for (int i = 0; i < 40; i++)
        PUT("%s{\"role\":\"%s\",\"content\":\"turn %d \\ud83d\\ude00 \\ud800 \\\"q\\\"\"}",
            i ? "," : "", i % 2 ? "assistant" : "user", i);
    PUT(",{\"role\":\"assistant\",\"tool_calls\":[");
    for (int i = 0; i < 30; i++)
        PUT("%s{\"id\":\"c%d\",\"function\":{\"name\":\"t%d\",\"arguments\":{\"i\":%d.50}}}",
            i ? "," : "", i, i, i);
    PUT("]}],\"tools\":[");
    for (int i = 0; i < 30; i++)
        PUT("%s{\"type\":\"function\",\"function\":{\"name\":\"t%d\",\"parameters\":"
            "{\"type\":\"object\",\"n\":%d.0,\"s\":\"\\u00e9\"},\"strict\":%s}}",
            i ? "," : "", i, i, i % 2 ? "true" : "false");
    PUT("],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"t29\"}}}");
#undef PUT
    cr_assert_lt(n, cap);
    check_body("many", b, n, FAST);
    free(b);
}

/* Surrogate pairs whose code point has its low 16 bits in D800..DFFF (U+1D800..U+1DFFF, the
 * SignWriting block; U+2D800..U+2DFFF, CJK Extension F...) are real characters, sent escaped
 * by any client that escapes non-ASCII (Python's json.dumps does). json-c 0.16 alone writes
 * U+FFFD for them; both paths keep them, in every string a user's text reaches. */

/* A request with case i in each such string; head picks the path. */
#define PAIRS_BODY                                                                             \
    "{^\"model\":\"m\",\"user\":\"u@\",\"messages\":[{\"role\":\"system\",\"content\":\"s@\"},"   \
    "{\"role\":\"user\",\"name\":\"n@\",\"content\":[{\"type\":\"text\",\"text\":\"t@\"}]},"     \
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":"          \
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"q\\\":\\\"a@\\\"}\"}}]},"  \
    "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"r@\"}],\"tools\":[{\"type\":"      \
    "\"function\",\"function\":{\"name\":\"f\",\"description\":\"d@\",\"parameters\":"          \
    "{\"q\":\"p@\"}}}],\"stop\":[\"z@\"]}"

static void pairs_check(const compass_chat_request *r, size_t i)
{
    const compass_message *m = r->messages;
    cr_assert_eq(r->n_messages, 4);
    cr_assert(pair_is(r->user, "u", i, ""));
    cr_assert(pair_is(m[0].content, "s", i, ""));
    cr_assert(pair_is(m[1].name, "n", i, ""));
    cr_assert(pair_is(m[1].content, "t", i, ""));
    cr_assert(pair_is(m[1].parts[0].text, "t", i, ""));
    cr_assert(pair_is(m[2].tool_calls[0].arguments, "{\"q\":\"a", i, "\"}"));
    cr_assert(pair_is(m[3].content, "r", i, ""));
    cr_assert(pair_is(r->tools[0].description, "d", i, ""));
    cr_assert(pair_is(r->stop[0], "z", i, ""));
    cr_assert(pair_q_is(r->tools[0].parameters.ptr, "p", i), "%s", r->tools[0].parameters.ptr);
}

/* Parses the body after head for each case; fast says whether the fast path answers it. */
static void pairs_parse(const char *head, int fast)
{
    for (size_t i = 0; i < N_PAIR_CASES; i++) {
        char body[1024];
        cps_arena *a = cps_arena_new(4096);
        compass_chat_request r;
        compass_err err;
        memset(&err, 0, sizeof(err));
        pair_fill(body, sizeof(body), PAIRS_BODY, head, i);
        cr_assert_eq(cps_canon_parse_chat_fast(a, body, strlen(body), &r), !fast, "%s", body);
        cr_assert_eq(cps_canon_parse_chat(a, body, strlen(body), &r, &err), 0, "%s", err.msg);
        pairs_check(&r, i);
        cps_arena_free(a);
    }
}

Test(canon_fast, keeps_characters_json_c_would_replace)
{
    pairs_parse(PAIR_HEADS[0], 1);
}

/* The general path (json-c), on the same body with an escaped key the fast path declines. */
Test(canon_fast, general_path_keeps_characters_json_c_would_replace)
{
    pairs_parse(PAIR_HEADS[1], 0);
}
