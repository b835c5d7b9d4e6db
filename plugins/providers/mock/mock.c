/*
 * mock: an in-process provider. It answers every request itself (no network), with a reply
 * derived deterministically from the request, optional delays the host applies on its event
 * loop, deterministic injected failures (fail_rate, #mock{...} directives) and tool calls.
 * The default configuration serves it when no API keys are set; tests and demos use it.
 *
 * Only local_call is implemented: the host applies first_delay_ms / chunk_delay_ms without
 * blocking a thread. local_call may run on several threads for one instance; the only shared
 * mutable state is an atomic counter.
 */
#include <compass/plugin.h>

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MOCK_PREFIX_MAX 64          /* bytes of the user's text echoed in the reply */
#define MOCK_DELAY_MAX 3600000      /* 1 hour, in ms */
#define MOCK_CHUNK_WORDS_MAX 1000000
#define MOCK_TOOL_COMPLETION_TOKENS 10

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                   */
/* ---------------------------------------------------------------------------------------- */

typedef struct mock_options {
    int64_t latency_ms;
    int64_t chunk_delay_ms;
    int64_t chunk_words;
    double fail_rate;
    int64_t fail_status;
    const char *reply;
    const char *model_name;
} mock_options;

static const compass_option mock_option_table[] = {
    {"latency_ms", COMPASS_OPT_INT, "0", 0, offsetof(mock_options, latency_ms),
     "delay in ms before the answer or the first streamed delta (0..3600000)"},
    {"chunk_delay_ms", COMPASS_OPT_INT, "0", 0, offsetof(mock_options, chunk_delay_ms),
     "delay in ms between streamed deltas (0..3600000)"},
    {"chunk_words", COMPASS_OPT_INT, "1", 0, offsetof(mock_options, chunk_words),
     "words per streamed content delta (>= 1)"},
    {"fail_rate", COMPASS_OPT_DOUBLE, "0", 0, offsetof(mock_options, fail_rate),
     "fraction of requests (0..1) answered with an injected error; deterministic"},
    {"fail_status", COMPASS_OPT_INT, "503", 0, offsetof(mock_options, fail_status),
     "HTTP status of injected errors (400..599)"},
    {"reply", COMPASS_OPT_STRING, NULL, 0, offsetof(mock_options, reply),
     "fixed reply text instead of the one derived from the request"},
    {"model_name", COMPASS_OPT_STRING, NULL, 0, offsetof(mock_options, model_name),
     "model name to report instead of the requested one"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct mock_inst {
    const compass_host *h;
    mock_options opt;
    _Atomic uint64_t counter;
} mock_inst;

static int opt_fail(compass_err *err, const compass_instance_info *info, const char *what)
{
    if (err) {
        err->code = COMPASS_ECONFIG;
        snprintf(err->msg, sizeof(err->msg), "mock deployment '%s': option %s",
                 info && info->name ? info->name : "?", what);
    }
    return COMPASS_ECONFIG;
}

static int mock_instance_new(const compass_host *h, const compass_instance_info *info,
                             void **inst, compass_err *err)
{
    mock_options o;
    mock_inst *m;

    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "mock: instance_new: NULL argument");
    *inst = NULL;
    memset(&o, 0, sizeof(o));
    o.chunk_words = 1;
    o.fail_status = 503;
    if (info && info->options)
        memcpy(&o, info->options, sizeof(o));

    if (o.latency_ms < 0 || o.latency_ms > MOCK_DELAY_MAX)
        return opt_fail(err, info, "latency_ms must be between 0 and 3600000");
    if (o.chunk_delay_ms < 0 || o.chunk_delay_ms > MOCK_DELAY_MAX)
        return opt_fail(err, info, "chunk_delay_ms must be between 0 and 3600000");
    if (o.chunk_words < 1 || o.chunk_words > MOCK_CHUNK_WORDS_MAX)
        return opt_fail(err, info, "chunk_words must be between 1 and 1000000");
    if (!(o.fail_rate >= 0.0 && o.fail_rate <= 1.0)) /* also refuses NaN */
        return opt_fail(err, info, "fail_rate must be between 0 and 1");
    if (o.fail_status < 400 || o.fail_status > 599)
        return opt_fail(err, info, "fail_status must be an HTTP error status (400..599)");

    m = (mock_inst *)h->alloc(h, sizeof(*m));
    if (!m)
        return compass_err_set(err, COMPASS_ENOMEM, "mock: out of memory creating instance");
    memset(m, 0, sizeof(*m));
    m->h = h;
    m->opt = o;
    atomic_init(&m->counter, 0);
    *inst = m;
    return COMPASS_OK;
}

static void mock_instance_free(void *inst)
{
    mock_inst *m = (mock_inst *)inst;
    if (m)
        m->h->free(m->h, m);
}

/* ---------------------------------------------------------------------------------------- */
/* Small text helpers                                                                        */
/* ---------------------------------------------------------------------------------------- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(char c)
{
    return is_alpha(c) || (c >= '0' && c <= '9');
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static size_t count_words(compass_str s)
{
    size_t i, n = 0;
    for (i = 0; i < s.len; i++)
        if (!is_space(s.ptr[i]) && (i == 0 || is_space(s.ptr[i - 1])))
            n++;
    return n;
}

/* Offset just past the end of the first k words (k >= 1, k <= count_words(s)); 0 for k 0. */
static size_t words_end(compass_str s, size_t k)
{
    size_t i, seen = 0;
    if (k == 0)
        return 0;
    for (i = 0; i < s.len; i++) {
        if (!is_space(s.ptr[i]) && (i + 1 == s.len || is_space(s.ptr[i + 1]))) {
            if (++seen == k)
                return i + 1;
        }
    }
    return s.len;
}

/* Case-insensitive: does s contain "tool" or "tools" as a word? */
static int has_word_tool(compass_str s)
{
    size_t i;
    for (i = 0; i + 4 <= s.len; i++) {
        size_t e = i + 4;
        if (lower(s.ptr[i]) != 't' || lower(s.ptr[i + 1]) != 'o' || lower(s.ptr[i + 2]) != 'o' ||
            lower(s.ptr[i + 3]) != 'l')
            continue;
        if (i > 0 && is_alnum(s.ptr[i - 1]))
            continue;
        if (e < s.len && lower(s.ptr[e]) == 's')
            e++;
        if (e < s.len && is_alnum(s.ptr[e]))
            continue;
        return 1;
    }
    return 0;
}

static int str_ieq(compass_str a, const char *b)
{
    size_t n = strlen(b), i;
    if (a.len != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower(a.ptr[i]) != lower(b[i]))
            return 0;
    return 1;
}

/* Parses an optionally signed decimal integer that fills s; 0 on success. */
static int parse_i64(compass_str s, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0;
    if (i < s.len && (s.ptr[i] == '-' || s.ptr[i] == '+'))
        neg = s.ptr[i++] == '-';
    if (i == s.len)
        return -1;
    for (; i < s.len; i++) {
        char c = s.ptr[i];
        if (c < '0' || c > '9')
            return -1;
        if (v > (uint64_t)INT64_MAX / 10)
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
        if (v > (uint64_t)INT64_MAX)
            return -1;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---------------------------------------------------------------------------------------- */
/* #mock{...} directives                                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct mock_directive {
    int has_latency;
    int64_t latency_ms;
    int has_chunk_delay;
    int64_t chunk_delay_ms;
    int fail;                 /* -1 unset, 0, 1 */
    int has_status;
    int64_t status;
    int has_message;
    char message[512];
} mock_directive;

/* Copies a directive's quoted value into dst, dropping backslashes before escaped chars. */
static void copy_unescaped(char *dst, size_t cap, compass_str v)
{
    size_t i, o = 0;
    for (i = 0; i < v.len && o + 1 < cap; i++) {
        char c = v.ptr[i];
        if (c == '\\' && i + 1 < v.len) {
            c = v.ptr[++i];
            if (c == 'n')
                c = '\n';
            else if (c == 't')
                c = '\t';
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
}

/* Reads a quoted (' or ") or bare token at *pos within [0, n); never reads past n. */
static compass_str scan_token(const char *s, size_t n, size_t *pos, int *quoted)
{
    compass_str t = {NULL, 0};
    size_t i = *pos;
    *quoted = 0;
    if (i < n && (s[i] == '"' || s[i] == '\'')) {
        char q = s[i++];
        size_t start = i;
        while (i < n && s[i] != q) {
            if (s[i] == '\\' && i + 1 < n)
                i++;
            i++;
        }
        t.ptr = s + start;
        t.len = (i < n ? i : n) - start;
        if (i < n)
            i++; /* closing quote */
        *quoted = 1;
    } else {
        size_t start = i;
        while (i < n && !is_space(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ':' &&
               s[i] != '=')
            i++;
        t.ptr = s + start;
        t.len = i - start;
    }
    *pos = i;
    return t;
}

/* A tolerant scanner for `#mock{key: value, ...}` in the text (JSON-ish: keys and string
 * values may be quoted; ':' or '=' separates). Unknown keys and bad values are ignored. */
static void parse_directive(compass_str text, mock_directive *d)
{
    static const char tag[] = "#mock{";
    const size_t tl = sizeof(tag) - 1;
    const char *s = NULL;
    size_t n = 0, i, pos;

    memset(d, 0, sizeof(*d));
    d->fail = -1;
    for (i = 0; i + tl <= text.len; i++) {
        if (memcmp(text.ptr + i, tag, tl) == 0) {
            s = text.ptr + i + tl;
            n = text.len - i - tl;
            break;
        }
    }
    if (!s)
        return;

    pos = 0;
    for (;;) {
        compass_str key, val;
        int quoted, vquoted;
        int64_t iv;

        while (pos < n && (is_space(s[pos]) || s[pos] == ','))
            pos++;
        if (pos >= n || s[pos] == '}')
            return;
        key = scan_token(s, n, &pos, &quoted);
        if (key.len == 0)
            return; /* not something we understand: stop quietly */
        while (pos < n && is_space(s[pos]))
            pos++;
        if (pos < n && (s[pos] == ':' || s[pos] == '='))
            pos++;
        while (pos < n && is_space(s[pos]))
            pos++;
        val = scan_token(s, n, &pos, &vquoted);

        if (str_ieq(key, "latency_ms") && parse_i64(val, &iv) == 0) {
            d->has_latency = 1;
            d->latency_ms = clamp64(iv, 0, MOCK_DELAY_MAX);
        } else if (str_ieq(key, "chunk_delay_ms") && parse_i64(val, &iv) == 0) {
            d->has_chunk_delay = 1;
            d->chunk_delay_ms = clamp64(iv, 0, MOCK_DELAY_MAX);
        } else if (str_ieq(key, "fail")) {
            if (str_ieq(val, "true") || str_ieq(val, "1") || str_ieq(val, "yes"))
                d->fail = 1;
            else if (str_ieq(val, "false") || str_ieq(val, "0") || str_ieq(val, "no"))
                d->fail = 0;
        } else if (str_ieq(key, "status") && parse_i64(val, &iv) == 0) {
            d->has_status = 1;
            d->status = iv;
        } else if (str_ieq(key, "message") && val.len > 0) {
            d->has_message = 1;
            copy_unescaped(d->message, sizeof(d->message), val);
        }
        if (val.len == 0 && !vquoted && pos < n && s[pos] != ',' && s[pos] != '}')
            pos++; /* guarantee progress over stray characters */
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Deterministic failure                                                                     */
/* ---------------------------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A number in [0, 1) from the request's messages and the instance's call counter. */
static double request_unit(const compass_chat_request *in, uint64_t counter)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    for (i = 0; i < in->n_messages; i++) {
        unsigned char role = (unsigned char)in->messages[i].role;
        h = fnv1a(h, &role, 1);
        h = fnv1a(h, in->messages[i].content.ptr, in->messages[i].content.len);
        h = fnv1a(h, "\0", 1);
    }
    h = mix64(h ^ mix64(counter));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

static const char *error_type(int status)
{
    switch (status) {
    case 400:
    case 413:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return "server_error";
    }
}

static void fill_error(compass_local_result *out, int status, const char *message)
{
    const char *type = error_type(status);
    compass_uerr_init(&out->error, compass_outcome_from_status(status), status);
    compass_copy_fixed(out->error.type, sizeof(out->error.type), compass_str_c(type));
    if (status == 429) {
        out->error.retry_after_ms = 1000;
        compass_copy_fixed(out->error.code, sizeof(out->error.code),
                           compass_str_c("rate_limit_exceeded"));
    }
    compass_copy_fixed(out->error.message, sizeof(out->error.message), compass_str_c(message));
    out->failed = 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Answer building (all memory in the request arena)                                         */
/* ---------------------------------------------------------------------------------------- */

typedef struct mock_call {
    const compass_host *h;
    compass_req *req;
    compass_err *err;
    compass_str id;
    compass_str model;
    int64_t created;
} mock_call;

static int oom(mock_call *c)
{
    return compass_err_set(c->err, COMPASS_ENOMEM, "mock: out of memory in the request arena");
}

/* Concatenates up to three strings into the arena (NUL-terminated). */
static int arena_cat(mock_call *c, compass_str a, compass_str b, compass_str d, compass_str *out)
{
    size_t n = a.len + b.len + d.len;
    char *p = (char *)c->h->req_alloc(c->req, n + 1);
    if (!p)
        return oom(c);
    if (a.len)
        memcpy(p, a.ptr, a.len);
    if (b.len)
        memcpy(p + a.len, b.ptr, b.len);
    if (d.len)
        memcpy(p + a.len + b.len, d.ptr, d.len);
    p[n] = '\0';
    out->ptr = p;
    out->len = n;
    return COMPASS_OK;
}

static compass_chat_delta *new_deltas(mock_call *c, size_t n)
{
    compass_chat_delta *d = (compass_chat_delta *)c->h->req_alloc(c->req, n * sizeof(*d));
    size_t i;
    if (!d)
        return NULL;
    for (i = 0; i < n; i++) {
        compass_delta_init(&d[i]);
        d[i].id = c->id;
        d[i].model = c->model;
    }
    return d;
}

/* The first property name in a JSON Schema's text: a plain scan for "properties": { "name".
 * Gives up (empty) on anything unusual, such as escapes in the name. */
static compass_str first_property(compass_str params)
{
    static const char pat[] = "\"properties\"";
    const size_t pl = sizeof(pat) - 1;
    const char *s = params.ptr;
    size_t n = params.len, i, j, k;
    compass_str none = {NULL, 0};

    for (i = 0; i + pl <= n; i++) {
        if (memcmp(s + i, pat, pl) != 0)
            continue;
        j = i + pl;
        while (j < n && is_space(s[j]))
            j++;
        if (j >= n || s[j] != ':')
            continue;
        j++;
        while (j < n && is_space(s[j]))
            j++;
        if (j >= n || s[j] != '{')
            continue;
        j++;
        while (j < n && is_space(s[j]))
            j++;
        if (j >= n || s[j] != '"')
            return none;
        k = ++j;
        while (k < n && s[k] != '"') {
            if (s[k] == '\\' || (unsigned char)s[k] < 0x20)
                return none;
            k++;
        }
        if (k >= n || k == j)
            return none;
        none.ptr = s + j;
        none.len = k - j;
        return none;
    }
    return none;
}

static void fill_usage(compass_usage *u, const compass_chat_request *in, int64_t completion)
{
    uint64_t bytes = 0;
    size_t i;
    for (i = 0; i < in->n_messages; i++)
        bytes += in->messages[i].content.len;
    memset(u, 0, sizeof(*u));
    u->present = 1;
    u->prompt_tokens = (int64_t)((bytes + 3) / 4) + 3 * (int64_t)in->n_messages;
    u->completion_tokens = completion;
    u->total_tokens = u->prompt_tokens + u->completion_tokens;
}

static int answer_tool(mock_call *c, const compass_chat_request *in, const compass_tool *tool,
                       uint64_t counter, compass_local_result *out)
{
    char idbuf[48];
    compass_str id, args, prop;
    compass_usage usage;
    int rc;

    snprintf(idbuf, sizeof(idbuf), "call_mock_%llu", (unsigned long long)counter);
    id = c->h->req_strdup(c->req, idbuf, strlen(idbuf));
    if (!id.ptr)
        return oom(c);
    prop = first_property(tool->parameters);
    if (prop.len)
        rc = arena_cat(c, compass_str_c("{\""), prop, compass_str_c("\":\"mock\"}"), &args);
    else
        rc = arena_cat(c, compass_str_c("{}"), compass_str_c(NULL), compass_str_c(NULL),
                       &args);
    if (rc)
        return rc;
    fill_usage(&usage, in, MOCK_TOOL_COMPLETION_TOKENS);

    if (!in->stream) {
        compass_tool_call *tc = (compass_tool_call *)c->h->req_alloc(c->req, sizeof(*tc));
        if (!tc)
            return oom(c);
        tc->id = id;
        tc->name = tool->name;
        tc->arguments = args;
        out->response.tool_calls = tc;
        out->response.n_tool_calls = 1;
        out->response.has_content = 0;
        out->response.finish_reason = COMPASS_FINISH_TOOL_CALLS;
        out->response.usage = usage;
        return COMPASS_OK;
    } else {
        /* role, id+name, 2 or 3 argument fragments, finish, usage */
        size_t nfrag = args.len >= 3 ? 3 : 2, n = 4 + nfrag, i, at = 0;
        compass_chat_delta *d = new_deltas(c, n);
        if (!d)
            return oom(c);
        d[0].role = COMPASS_ROLE_ASSISTANT;
        d[0].content = compass_str_c("");
        d[1].tool_index = 0;
        d[1].tool_id = id;
        d[1].tool_name = tool->name;
        for (i = 0; i < nfrag; i++) {
            size_t end = (i + 1 == nfrag) ? args.len : args.len * (i + 1) / nfrag;
            d[2 + i].tool_index = 0;
            d[2 + i].tool_arguments.ptr = args.ptr + at;
            d[2 + i].tool_arguments.len = end - at;
            at = end;
        }
        d[2 + nfrag].finish_reason = COMPASS_FINISH_TOOL_CALLS;
        d[3 + nfrag].usage = usage;
        out->deltas = d;
        out->n_deltas = n;
        return COMPASS_OK;
    }
}

static int answer_text(mock_call *c, const compass_chat_request *in, const mock_inst *m,
                       const compass_message *user, compass_local_result *out)
{
    compass_str text;
    size_t words;
    int finish = COMPASS_FINISH_STOP, rc;
    int64_t limit = -1;
    compass_usage usage;

    if (m->opt.reply && m->opt.reply[0]) {
        rc = arena_cat(c, compass_str_c(m->opt.reply), compass_str_c(NULL), compass_str_c(NULL),
                       &text);
    } else if (user && user->content.len) {
        compass_str pre = user->content;
        if (pre.len > MOCK_PREFIX_MAX) {
            pre.len = MOCK_PREFIX_MAX;
            while (pre.len > 0 && ((unsigned char)pre.ptr[pre.len] & 0xC0) == 0x80)
                pre.len--;
        }
        rc = arena_cat(c, compass_str_c("mock reply to: "), pre, compass_str_c(NULL), &text);
    } else {
        rc = arena_cat(c, compass_str_c("mock reply"), compass_str_c(NULL), compass_str_c(NULL),
                       &text);
    }
    if (rc)
        return rc;

    if (in->set & COMPASS_SET_MAX_COMPLETION_TOKENS)
        limit = in->max_completion_tokens;
    if ((in->set & COMPASS_SET_MAX_TOKENS) && (limit < 0 || in->max_tokens < limit))
        limit = in->max_tokens;
    if ((in->set & (COMPASS_SET_MAX_TOKENS | COMPASS_SET_MAX_COMPLETION_TOKENS)) && limit < 0)
        limit = 0;
    words = count_words(text);
    if (limit >= 0 && (uint64_t)words > (uint64_t)limit) {
        words = (size_t)limit;
        text.len = words_end(text, words);
        ((char *)text.ptr)[text.len] = '\0'; /* our arena copy: keep it a C string */
        finish = COMPASS_FINISH_LENGTH;
    }
    fill_usage(&usage, in, (int64_t)words);

    if (!in->stream) {
        out->response.has_content = 1;
        out->response.content = text;
        out->response.finish_reason = finish;
        out->response.usage = usage;
        return COMPASS_OK;
    } else {
        size_t cw = (size_t)m->opt.chunk_words;
        size_t ncontent = words ? (words + cw - 1) / cw : (text.len ? 1 : 0);
        size_t n = ncontent + 3, k = 1, i, seen = 0, start = 0;
        compass_chat_delta *d = new_deltas(c, n);
        if (!d)
            return oom(c);
        d[0].role = COMPASS_ROLE_ASSISTANT;
        d[0].content = compass_str_c("");
        /* A chunk runs from one group's first word to the next group's first word, so the
         * fragments (words plus the whitespace after them) concatenate to the text. */
        for (i = 0; i < text.len; i++) {
            if (is_space(text.ptr[i]) || (i > 0 && !is_space(text.ptr[i - 1])))
                continue;
            if (seen > 0 && seen % cw == 0) {
                d[k].content.ptr = text.ptr + start;
                d[k].content.len = i - start;
                k++;
                start = i;
            }
            seen++;
        }
        if (ncontent) {
            d[k].content.ptr = text.ptr + start;
            d[k].content.len = text.len - start;
            k++;
        }
        d[k++].finish_reason = finish;
        d[k++].usage = usage;
        out->deltas = d;
        out->n_deltas = k;
        return COMPASS_OK;
    }
}

static int mock_local_call(void *inst, compass_req *req, const compass_chat_request *in,
                           compass_local_result *out, compass_err *err)
{
    mock_inst *m = (mock_inst *)inst;
    const compass_message *user = NULL;
    const compass_tool *tool = NULL;
    mock_directive dir;
    mock_call c;
    compass_str utext = {NULL, 0};
    uint64_t counter;
    size_t i;
    int fail;
    char idbuf[48];

    if (!m || !req || !in || !out)
        return compass_err_set(err, COMPASS_EINVAL, "mock: local_call: NULL argument");

    counter = atomic_fetch_add_explicit(&m->counter, 1, memory_order_relaxed) + 1;
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->error.size = sizeof(out->error);
    out->error.retry_after_ms = -1;
    out->response.size = sizeof(out->response);

    for (i = in->n_messages; i > 0; i--) {
        if (in->messages[i - 1].role == COMPASS_ROLE_USER) {
            user = &in->messages[i - 1];
            utext = user->content;
            break;
        }
    }

    parse_directive(utext, &dir);
    out->first_delay_ms = dir.has_latency ? dir.latency_ms : m->opt.latency_ms;
    out->chunk_delay_ms = dir.has_chunk_delay ? dir.chunk_delay_ms : m->opt.chunk_delay_ms;

    if (dir.fail >= 0)
        fail = dir.fail;
    else if (dir.has_status && dir.status >= 400 && dir.status <= 599)
        fail = 1;
    else
        fail = m->opt.fail_rate > 0.0 && request_unit(in, counter) < m->opt.fail_rate;
    if (fail) {
        int status = (int)m->opt.fail_status;
        if (dir.has_status && dir.status >= 400 && dir.status <= 599)
            status = (int)dir.status;
        fill_error(out, status, dir.has_message ? dir.message : "mock: injected failure");
        return COMPASS_OK;
    }

    if (in->n_tools > 0) {
        if (in->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION) {
            for (i = 0; i < in->n_tools && !tool; i++)
                if (in->tools[i].name.len == in->tool_choice_name.len &&
                    (in->tool_choice_name.len == 0 ||
                     memcmp(in->tools[i].name.ptr, in->tool_choice_name.ptr,
                            in->tool_choice_name.len) == 0))
                    tool = &in->tools[i];
            if (!tool) {
                fill_error(out, 400, "mock: tool_choice names a function not in tools");
                return COMPASS_OK;
            }
        } else if (in->tool_choice == COMPASS_TOOL_CHOICE_REQUIRED ||
                   ((in->tool_choice == COMPASS_TOOL_CHOICE_AUTO ||
                     in->tool_choice == COMPASS_TOOL_CHOICE_UNSET) &&
                    has_word_tool(utext))) {
            tool = &in->tools[0];
        }
    }

    c.h = m->h;
    c.req = req;
    c.err = err;
    snprintf(idbuf, sizeof(idbuf), "chatcmpl-mock-%llu", (unsigned long long)counter);
    c.id = m->h->req_strdup(req, idbuf, strlen(idbuf));
    if (!c.id.ptr)
        return oom(&c);
    if (m->opt.model_name && m->opt.model_name[0]) {
        /* copied: a reload may free the instance while this request is in flight */
        c.model = m->h->req_strdup(req, m->opt.model_name, strlen(m->opt.model_name));
        if (!c.model.ptr)
            return oom(&c);
    } else {
        c.model = in->model;
    }
    c.created = m->h->now_ms(m->h) / 1000;
    out->response.id = c.id;
    out->response.model = c.model;
    out->response.created = c.created;

    if (tool)
        return answer_tool(&c, in, tool, counter, out);
    return answer_text(&c, in, m, user, out);
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */
/* ---------------------------------------------------------------------------------------- */

static const compass_provider_ops mock_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = mock_instance_new,
    .instance_free = mock_instance_free,
    .local_call = mock_local_call,
};

static const compass_plugin_desc mock_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "mock",
    .version = "1.0.0",
    .summary = "in-process provider with deterministic replies, delays, failures and tools",
    .options = mock_option_table,
    .options_size = sizeof(mock_options),
    .ops.provider = &mock_ops,
};

COMPASS_PLUGIN_DEFINE(mock, mock_desc)
