/*
 * openai_wire: OpenAI chat completions wire code shared by the openai and azure provider
 * plugins. Compiled into each plugin (a plugin may not link another plugin); with hidden
 * visibility nothing here is exported from either .so.
 *
 * What lives here is everything that is the same on both sides of the wire: the request body
 * writer (canonical request -> chat completions JSON, passthrough of unnamed fields), the
 * headers (auth, organization, extra), the readers of chat.completion, chat.completion.chunk
 * and embeddings bodies, and the error classifier with its retry-delay parsing. What differs
 * per plugin (URLs, option tables, auth forms) stays in the plugin.
 *
 * Memory: the request body is written into a scratch buffer from h->alloc/h->realloc and
 * copied into the request arena; everything handed back to the host is request-owned.
 * json-c is used for reading only (its allocations are its own and short-lived).
 */
#include "openai_wire.h"

#include "../common/json_scan.h"

#include <inttypes.h>
#include <math.h> /* isfinite and signbit only, macros: no libm */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAI_MAX_DEPTH 512  /* nesting the request-side scanner accepts */
#define OAI_JSON_DEPTH 128 /* nesting json-c accepts in upstream bodies (its default is 32) */

typedef struct oai_stream_state {
    int next_tool;          /* the index for the next call that has no "index" */
    int last_tool;          /* the index the last tool call fragment went to */
} oai_stream_state;

/* Short names inside this file for the helpers the header exports. */
#define err_fmt oai_wire_err
#define inst_strndup oai_wire_strndup
#define has_ctl oai_wire_has_ctl
#define is_token oai_wire_is_token
#define join_url oai_wire_join_url
#define parse_json oai_wire_parse_json
#define jget oai_wire_jget
#define jstr oai_wire_jstr
#define outcome_name oai_wire_outcome_name
#define parse_duration oai_wire_parse_duration

#define PLUGIN_OF(w) ((w) ? (w)->plugin : "openai_wire")

int oai_wire_err(compass_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

char *inst_strndup(const compass_host *h, const char *s, size_t n)
{
    char *p = h->alloc(h, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int is_tchar(char c)
{
    /* RFC 9110 token characters */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int is_token(const char *s, size_t n)
{
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!is_tchar(s[i]))
            return 0;
    return 1;
}

int has_ctl(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static compass_str str_trim(const char *p, size_t n)
{
    compass_str r;
    while (n && is_space(*p)) {
        p++;
        n--;
    }
    while (n && is_space(p[n - 1]))
        n--;
    r.ptr = p;
    r.len = n;
    return r;
}

char *join_url(const compass_host *h, const char *base, size_t base_len, const char *path)
{
    size_t pl = strlen(path), n;
    char *p;
    if (!strncmp(path, "http://", 7) || !strncmp(path, "https://", 8))
        return inst_strndup(h, path, pl);
    n = base_len + (pl && path[0] != '/' ? 1 : 0) + pl;
    p = h->alloc(h, n + 1);
    if (!p)
        return NULL;
    memcpy(p, base, base_len);
    n = base_len;
    if (pl && path[0] != '/')
        p[n++] = '/';
    memcpy(p + n, path, pl);
    p[n + pl] = '\0';
    return p;
}

/* Parses "Name: value; Name2: value2" into inst->extra. */
int oai_wire_set_extra_headers(oai_wire *inst, const char *spec, compass_err *err)
{
    const compass_host *h = inst->h;
    size_t n, i = 0;
    char *buf;
    if (!spec || !spec[0])
        return COMPASS_OK;
    n = strlen(spec);
    buf = inst_strndup(h, spec, n);
    if (!buf)
        return err_fmt(err, COMPASS_ENOMEM, "%s: deployment %s: out of memory",
                       inst->plugin, inst->name);
    inst->extra_buf = buf;
    while (i < n) {
        size_t start = i, end, colon;
        compass_str name, value;
        while (i < n && buf[i] != ';')
            i++;
        end = i;
        i++; /* past ';' */
        if (str_trim(buf + start, end - start).len == 0)
            continue;
        for (colon = start; colon < end && buf[colon] != ':'; colon++)
            ;
        name = str_trim(buf + start, colon - start);
        if (colon == end || !is_token(name.ptr, name.len))
            return err_fmt(err, COMPASS_ECONFIG,
                           "%s: deployment %s: extra_headers: '%.*s' is not 'Name: value' "
                           "with a valid header name", inst->plugin,
                           inst->name, (int)(end - start), buf + start);
        value = str_trim(buf + colon + 1, end - colon - 1);
        if (has_ctl(value.ptr, value.len))
            return err_fmt(err, COMPASS_ECONFIG,
                           "%s: deployment %s: extra_headers: the value of '%.*s' holds a "
                           "control character", inst->plugin,
                           inst->name, (int)name.len, name.ptr);
        if (inst->n_extra == OAI_WIRE_MAX_EXTRA_HEADERS)
            return err_fmt(err, COMPASS_ECONFIG,
                           "%s: deployment %s: extra_headers: more than %d headers", inst->plugin,
                           inst->name, OAI_WIRE_MAX_EXTRA_HEADERS);
        /* NUL-terminate both in place: the separators are no longer needed */
        ((char *)name.ptr)[name.len] = '\0';
        ((char *)value.ptr)[value.len] = '\0';
        inst->extra[inst->n_extra].name = name;
        inst->extra[inst->n_extra].value = value;
        inst->n_extra++;
    }
    return COMPASS_OK;
}

int oai_wire_init(oai_wire *w, const compass_host *h, const char *plugin, const char *name,
                  compass_err *err)
{
    const char *nm = name ? name : plugin;
    memset(w, 0, sizeof(*w));
    w->h = h;
    w->plugin = plugin;
    w->stream_options = 1;
    w->name = inst_strndup(h, nm, strlen(nm));
    if (!w->name)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", plugin);
    return COMPASS_OK;
}

void oai_wire_release(oai_wire *w)
{
    const compass_host *h = w->h;
    if (!h)
        return;
    if (w->auth_value) {
        volatile char *v = w->auth_value;
        size_t i;
        for (i = 0; i < w->auth_cap; i++)
            v[i] = '\0';
    }
    h->free(h, w->name);
    h->free(h, w->auth_name);
    h->free(h, w->auth_value);
    h->free(h, w->organization);
    h->free(h, w->extra_buf);
    w->name = w->auth_name = w->auth_value = w->organization = w->extra_buf = NULL;
    w->n_extra = 0;
}

/* Auth: "<header>: <scheme><key>"; no key or an empty header name sends none. */
int oai_wire_set_auth(oai_wire *w, const char *header, const char *scheme, const char *key,
                      compass_err *err)
{
    const compass_host *h = w->h;
    size_t hl, sl, kl;
    int add_space;
    if (!scheme)
        scheme = "";
    if (!key || !header || !header[0])
        return COMPASS_OK;
    hl = strlen(header);
    sl = strlen(scheme);
    kl = strlen(key);
    add_space = sl && ((scheme[sl - 1] >= 'a' && scheme[sl - 1] <= 'z') ||
                       (scheme[sl - 1] >= 'A' && scheme[sl - 1] <= 'Z') ||
                       (scheme[sl - 1] >= '0' && scheme[sl - 1] <= '9'));
    if (!is_token(header, hl))
        return err_fmt(err, COMPASS_ECONFIG,
                       "%s: deployment %s: auth_header '%s' is not a valid header name",
                       w->plugin, w->name, header);
    if (has_ctl(scheme, sl) || has_ctl(key, kl))
        return err_fmt(err, COMPASS_ECONFIG,
                       "%s: deployment %s: auth_scheme or the api key holds a control "
                       "character (a stray newline in the environment variable?)",
                       w->plugin, w->name);
    w->auth_name = inst_strndup(h, header, hl);
    w->auth_value = h->alloc(h, sl + (size_t)add_space + kl + 1);
    if (w->auth_value)
        w->auth_cap = sl + (size_t)add_space + kl + 1;
    if (!w->auth_name || !w->auth_value)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", w->plugin);
    memcpy(w->auth_value, scheme, sl);
    if (add_space)
        w->auth_value[sl] = ' ';
    memcpy(w->auth_value + sl + add_space, key, kl);
    w->auth_value[sl + (size_t)add_space + kl] = '\0';
    return COMPASS_OK;
}

int oai_wire_set_organization(oai_wire *w, const char *org, compass_err *err)
{
    size_t ol;
    if (!org || !org[0])
        return COMPASS_OK;
    ol = strlen(org);
    if (has_ctl(org, ol))
        return err_fmt(err, COMPASS_ECONFIG,
                       "%s: deployment %s: organization holds a control character", w->plugin,
                       w->name);
    w->organization = inst_strndup(w->h, org, ol);
    if (!w->organization)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", w->plugin);
    return COMPASS_OK;
}

int oai_wire_set_max_tokens_field(oai_wire *w, const char *value, compass_err *err)
{
    if (!value || !value[0] || !strcmp(value, "keep"))
        w->max_tokens_field = OAI_MTF_KEEP;
    else if (!strcmp(value, "max_tokens"))
        w->max_tokens_field = OAI_MTF_MAX_TOKENS;
    else if (!strcmp(value, "max_completion_tokens"))
        w->max_tokens_field = OAI_MTF_MAX_COMPLETION_TOKENS;
    else
        return err_fmt(err, COMPASS_ECONFIG,
                       "%s: deployment %s: max_tokens_field '%s' is not one of max_tokens, "
                       "max_completion_tokens (or empty to keep the client's field)",
                       w->plugin, w->name, value);
    return COMPASS_OK;
}
/* ---------------------------------------------------------------------------------------- */
/* JSON writing                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct jw {
    const compass_host *h;
    char *p;
    size_t len, cap;
    int failed;
} jw;

/* Grows the buffer for n more bytes: 0, or -1 with w->failed set. */
static int jw_grow(jw *w, size_t n)
{
    size_t cap = w->cap ? w->cap : 1024;
    char *np;
    while (cap - w->len < n) {
        if (cap > SIZE_MAX / 2) {
            w->failed = 1;
            return -1;
        }
        cap *= 2;
    }
    np = w->p ? w->h->realloc(w->h, w->p, cap) : w->h->alloc(w->h, cap);
    if (!np) {
        w->failed = 1;
        return -1;
    }
    w->p = np;
    w->cap = cap;
    return 0;
}

/* Room for n more bytes: 0, or -1 once writing has failed. */
static inline int jw_room(jw *w, size_t n)
{
    if (w->failed)
        return -1;
    return n <= w->cap - w->len ? 0 : jw_grow(w, n);
}

static void jw_put(jw *w, const char *s, size_t n)
{
    if (jw_room(w, n))
        return;
    if (n)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void jw_lit(jw *w, const char *s)
{
    jw_put(w, s, strlen(s));
}

/* Whether a ',' goes before the next member or element: not when one just opened (or a key
 * was written). */
static inline int jw_needs_sep(const jw *w)
{
    char c;
    if (w->len == 0)
        return 0;
    c = w->p[w->len - 1];
    return c != '{' && c != '[' && c != ':';
}

static void jw_sep(jw *w)
{
    if (!w->failed && jw_needs_sep(w))
        jw_put(w, ",", 1);
}

static void jw_open(jw *w, char c)
{
    jw_sep(w);
    jw_put(w, &c, 1);
}

static void jw_close(jw *w, char c)
{
    jw_put(w, &c, 1);
}

static void jw_strval(jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    if (jw_room(w, n + 2)) /* the common case, nothing to escape, grows once */
        return;
    w->p[w->len++] = '"';
    for (;;) {
        size_t run = js_plain_run(s, n, i, 1); /* DEL too, which JSON allows raw */
        unsigned char c;
        char u[6];
        const char *esc = NULL;
        jw_put(w, s + i, run - i);
        if (run == n)
            break;
        c = (unsigned char)s[run];
        i = run + 1;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc) {
            jw_put(w, esc, 2);
        } else {
            u[0] = '\\';
            u[1] = 'u';
            u[2] = '0';
            u[3] = '0';
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            jw_put(w, u, 6);
        }
    }
    jw_put(w, "\"", 1);
}

/* A key as a string literal and its length, for the jw_k* writers: "" k "" does not compile
 * for a pointer, whose sizeof would not be the length. */
#define JW_K(k) "" k "", sizeof(k) - 1

/* A member's key and its colon (the ',' before it too when one is due), in one write. */
static void jw_key(jw *w, const char *k, size_t kn)
{
    char *o;
    if (jw_room(w, kn + 4))
        return;
    o = w->p + w->len;
    if (jw_needs_sep(w))
        *o++ = ',';
    *o++ = '"';
    memcpy(o, k, kn);
    o += kn;
    *o++ = '"';
    *o++ = ':';
    w->len = (size_t)(o - w->p);
}

static void jw_str(jw *w, compass_str s)
{
    jw_sep(w);
    jw_strval(w, s.ptr ? s.ptr : "", s.ptr ? s.len : 0);
}

static void jw_kstr(jw *w, const char *k, size_t kn, compass_str s)
{
    jw_key(w, k, kn);
    jw_strval(w, s.ptr ? s.ptr : "", s.ptr ? s.len : 0);
}

static void jw_kcstr(jw *w, const char *k, size_t kn, const char *s)
{
    jw_key(w, k, kn);
    jw_strval(w, s, strlen(s));
}

static void jw_kint(jw *w, const char *k, size_t kn, int64_t v)
{
    char buf[24], *o = buf + sizeof(buf);
    /* through uint64_t: -INT64_MIN does not fit an int64_t */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--o = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--o = '-';
    jw_key(w, k, kn);
    jw_put(w, o, (size_t)(buf + sizeof(buf) - o));
}

/* Powers of ten a double holds exactly, for oai_wire_double_fast. */
static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};

size_t oai_wire_double_fast(double d, char *buf)
{
    double a = d < 0 ? -d : d;
    char digits[20];
    size_t nd = 0, o = 0, m;
    int64_t k = 0;
    if (d == 0) { /* %.15g keeps the sign of -0.0 */
        if (signbit(d))
            buf[o++] = '-';
        buf[o++] = '0';
        buf[o] = '\0';
        return o;
    }
    /* there %.15g prints no exponent (NaN fails this too) */
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    /* The smallest m with k / 10^m == a exactly: k and 10^m are exact doubles and division
     * rounds correctly, so a is the double nearest the decimal k / 10^m, which has at most 15
     * significant digits and so is what %.15g prints (and strtod reads back as a). */
    for (m = 0;; m++) {
        double x;
        if (m == sizeof(p10) / sizeof(p10[0]))
            return 0;
        x = a * p10[m];
        if (x >= 1e15)
            return 0;
        k = (int64_t)(x + 0.5);
        if ((double)k / p10[m] == a)
            break;
    }
    /* k has no trailing zero unless m is 0: a smaller m would have been found */
    do {
        digits[nd++] = (char)('0' + k % 10);
        k /= 10;
    } while (k);
    if (d < 0)
        buf[o++] = '-';
    if (nd <= m) {
        size_t z;
        buf[o++] = '0';
        buf[o++] = '.';
        for (z = nd; z < m; z++)
            buf[o++] = '0';
    }
    while (nd) {
        buf[o++] = digits[--nd];
        if (nd == m && m) /* only when an integer part came first */
            buf[o++] = '.';
    }
    buf[o] = '\0';
    return o;
}

size_t oai_wire_double_text(double d, char *buf)
{
    size_t n = oai_wire_double_fast(d, buf), i;
    if (n)
        return n;
    /* the shortest of %.15g / %.17g that reads back exactly: 0.7 stays "0.7" */
    n = (size_t)snprintf(buf, OAI_WIRE_DOUBLE_CAP, "%.15g", d);
    if (strtod(buf, NULL) != d)
        n = (size_t)snprintf(buf, OAI_WIRE_DOUBLE_CAP, "%.17g", d);
    for (i = 0; i < n; i++)
        if (buf[i] == ',')
            buf[i] = '.'; /* a locale with a decimal comma */
    return n;
}

static void jw_kdouble(jw *w, const char *k, size_t kn, double d)
{
    char buf[OAI_WIRE_DOUBLE_CAP];
    jw_key(w, k, kn);
    if (!isfinite(d)) {
        jw_lit(w, "null");
        return;
    }
    jw_put(w, buf, oai_wire_double_text(d, buf));
}

static void jw_kbool(jw *w, const char *k, size_t kn, int v)
{
    jw_key(w, k, kn);
    jw_lit(w, v ? "true" : "false");
}

/* Fields of the request body that build_request writes from the canonical model. */
static const js_key oai_named[] = {
    JS_KEY("model"), JS_KEY("messages"), JS_KEY("tools"), JS_KEY("tool_choice"),
    JS_KEY("parallel_tool_calls"), JS_KEY("temperature"), JS_KEY("top_p"),
    JS_KEY("presence_penalty"), JS_KEY("frequency_penalty"), JS_KEY("max_tokens"),
    JS_KEY("max_completion_tokens"), JS_KEY("seed"), JS_KEY("n"), JS_KEY("stop"),
    JS_KEY("response_format"), JS_KEY("reasoning_effort"), JS_KEY("user"), JS_KEY("stream"),
    JS_KEY("stream_options")};

/* Whether the raw key k is a field the canonical model names (and build_request writes). */
static int is_named(const js_val *k, const compass_chat_request *in)
{
    size_t n = sizeof(oai_named) / sizeof(oai_named[0]);
    if (js_key_index(k, oai_named, n) < n)
        return 1;
    /* the legacy function-calling fields would duplicate tools/tool_choice */
    if (js_key_is(k, "functions") && in->n_tools)
        return 1;
    if (js_key_is(k, "function_call") && in->tool_choice)
        return 1;
    return 0;
}

/* Copies the top-level members of the client's body that the canonical model does not name
 * (up to the first byte that is not strict JSON). */
static void write_passthrough(jw *w, const compass_chat_request *in, size_t *n_passed)
{
    json_scan s;
    js_val k, v;
    *n_passed = 0;
    if (!in->raw.ptr || !in->raw.len)
        return;
    js_init(&s, in->raw.ptr, in->raw.len, OAI_MAX_DEPTH);
    if (js_begin(&s, '{'))
        return;
    while (js_member(&s, &k) > 0 && !js_value(&s, &v)) {
        /* keys with escapes never match a named field: drop them rather than guess */
        if (!k.escaped && !is_named(&k, in)) {
            jw_sep(w);
            jw_put(w, k.ptr, k.len);
            jw_put(w, ":", 1);
            jw_put(w, v.ptr, v.len);
            (*n_passed)++;
        }
    }
}

static const char *role_name(int role)
{
    switch (role) {
    case COMPASS_ROLE_SYSTEM: return "system";
    case COMPASS_ROLE_USER: return "user";
    case COMPASS_ROLE_ASSISTANT: return "assistant";
    case COMPASS_ROLE_TOOL: return "tool";
    case COMPASS_ROLE_DEVELOPER: return "developer";
    default: return NULL;
    }
}

static int write_message(jw *w, const char *pl, const compass_message *m, size_t idx,
                         compass_err *err)
{
    const char *role = role_name(m->role);
    size_t j;
    if (!role)
        return err_fmt(err, COMPASS_EINVAL, "%s: messages[%zu]: unknown role %d", pl, idx,
                       m->role);
    jw_open(w, '{');
    jw_kcstr(w, JW_K("role"), role);
    jw_key(w, JW_K("content"));
    if (m->parts) {
        jw_open(w, '[');
        for (j = 0; j < m->n_parts; j++) {
            const compass_content_part *pt = &m->parts[j];
            jw_open(w, '{');
            if (pt->type == COMPASS_PART_TEXT) {
                jw_kcstr(w, JW_K("type"), "text");
                jw_kstr(w, JW_K("text"), pt->text);
            } else if (pt->type == COMPASS_PART_IMAGE_URL) {
                jw_kcstr(w, JW_K("type"), "image_url");
                jw_key(w, JW_K("image_url"));
                jw_open(w, '{');
                jw_kstr(w, JW_K("url"), pt->url);
                if (pt->detail.len)
                    jw_kstr(w, JW_K("detail"), pt->detail);
                jw_close(w, '}');
            } else {
                return err_fmt(err, COMPASS_EUNSUPPORTED,
                               "%s: messages[%zu].content[%zu]: unsupported part type %d", pl,
                               idx, j, pt->type);
            }
            jw_close(w, '}');
        }
        jw_close(w, ']');
    } else if (m->has_content) {
        jw_strval(w, m->content.ptr ? m->content.ptr : "", m->content.ptr ? m->content.len : 0);
    } else {
        jw_lit(w, "null");
    }
    if (m->name.len)
        jw_kstr(w, JW_K("name"), m->name);
    if (m->n_tool_calls) {
        jw_key(w, JW_K("tool_calls"));
        jw_open(w, '[');
        for (j = 0; j < m->n_tool_calls; j++) {
            const compass_tool_call *tc = &m->tool_calls[j];
            jw_open(w, '{');
            jw_kstr(w, JW_K("id"), tc->id);
            jw_kcstr(w, JW_K("type"), "function");
            jw_key(w, JW_K("function"));
            jw_open(w, '{');
            jw_kstr(w, JW_K("name"), tc->name);
            /* arguments is a JSON text in a string; servers that parse it choke on "" */
            if (tc->arguments.len)
                jw_kstr(w, JW_K("arguments"), tc->arguments);
            else
                jw_kcstr(w, JW_K("arguments"), "{}");
            jw_close(w, '}');
            jw_close(w, '}');
        }
        jw_close(w, ']');
    }
    if (m->role == COMPASS_ROLE_TOOL || m->tool_call_id.len)
        jw_kstr(w, JW_K("tool_call_id"), m->tool_call_id);
    jw_close(w, '}');
    return COMPASS_OK;
}

/* Writes a member whose value is the client's JSON text raw (nothing when it is empty); -1
 * when that is not valid JSON (the caller words the error: naming the member costs a
 * snprintf, paid only then). */
static int write_raw_member(jw *w, const char *key, size_t key_len, compass_str raw)
{
    compass_str t = str_trim(raw.ptr ? raw.ptr : "", raw.ptr ? raw.len : 0);
    if (!t.len)
        return 0;
    if (!js_is_json(t.ptr, t.len, OAI_MAX_DEPTH))
        return -1;
    jw_key(w, key, key_len);
    jw_put(w, t.ptr, t.len);
    return 0;
}

static int write_body(const oai_wire *inst, const compass_chat_request *in, jw *w,
                      size_t *n_passed, compass_err *err)
{
    size_t i;
    int rc;

    jw_open(w, '{');
    jw_kstr(w, JW_K("model"), in->model);
    jw_key(w, JW_K("messages"));
    jw_open(w, '[');
    for (i = 0; i < in->n_messages; i++)
        if ((rc = write_message(w, inst->plugin, &in->messages[i], i, err)))
            return rc;
    jw_close(w, ']');

    if (in->n_tools) {
        jw_key(w, JW_K("tools"));
        jw_open(w, '[');
        for (i = 0; i < in->n_tools; i++) {
            const compass_tool *t = &in->tools[i];
            jw_open(w, '{');
            jw_kcstr(w, JW_K("type"), "function");
            jw_key(w, JW_K("function"));
            jw_open(w, '{');
            jw_kstr(w, JW_K("name"), t->name);
            if (t->description.len)
                jw_kstr(w, JW_K("description"), t->description);
            if (write_raw_member(w, JW_K("parameters"), t->parameters))
                return err_fmt(err, COMPASS_EINVAL,
                               "%s: tools[%zu].function.parameters is not valid JSON",
                               inst->plugin, i);
            if (t->strict >= 0)
                jw_kbool(w, JW_K("strict"), t->strict);
            jw_close(w, '}');
            jw_close(w, '}');
        }
        jw_close(w, ']');
    }
    switch (in->tool_choice) {
    case COMPASS_TOOL_CHOICE_AUTO: jw_kcstr(w, JW_K("tool_choice"), "auto"); break;
    case COMPASS_TOOL_CHOICE_NONE: jw_kcstr(w, JW_K("tool_choice"), "none"); break;
    case COMPASS_TOOL_CHOICE_REQUIRED: jw_kcstr(w, JW_K("tool_choice"), "required"); break;
    case COMPASS_TOOL_CHOICE_FUNCTION:
        jw_key(w, JW_K("tool_choice"));
        jw_open(w, '{');
        jw_kcstr(w, JW_K("type"), "function");
        jw_key(w, JW_K("function"));
        jw_open(w, '{');
        jw_kstr(w, JW_K("name"), in->tool_choice_name);
        jw_close(w, '}');
        jw_close(w, '}');
        break;
    default: break;
    }
    if (in->set & COMPASS_SET_PARALLEL_TOOL_CALLS)
        jw_kbool(w, JW_K("parallel_tool_calls"), in->parallel_tool_calls);
    if (in->set & COMPASS_SET_TEMPERATURE)
        jw_kdouble(w, JW_K("temperature"), in->temperature);
    if (in->set & COMPASS_SET_TOP_P)
        jw_kdouble(w, JW_K("top_p"), in->top_p);
    if (in->set & COMPASS_SET_PRESENCE_PENALTY)
        jw_kdouble(w, JW_K("presence_penalty"), in->presence_penalty);
    if (in->set & COMPASS_SET_FREQUENCY_PENALTY)
        jw_kdouble(w, JW_K("frequency_penalty"), in->frequency_penalty);

    /* The output cap: by default each field the client gave goes out under its own name;
     * max_tokens_field renames them for upstreams that take only one of the two. */
    {
        int has_mt = (in->set & COMPASS_SET_MAX_TOKENS) != 0;
        int has_mct = (in->set & COMPASS_SET_MAX_COMPLETION_TOKENS) != 0;
        if (inst->max_tokens_field == OAI_MTF_KEEP) {
            if (has_mt)
                jw_kint(w, JW_K("max_tokens"), in->max_tokens);
            if (has_mct)
                jw_kint(w, JW_K("max_completion_tokens"), in->max_completion_tokens);
        } else if (has_mt || has_mct) {
            int64_t v = has_mct ? in->max_completion_tokens : in->max_tokens;
            if (inst->max_tokens_field == OAI_MTF_MAX_TOKENS)
                jw_kint(w, JW_K("max_tokens"), v);
            else
                jw_kint(w, JW_K("max_completion_tokens"), v);
        }
    }
    if (in->set & COMPASS_SET_SEED)
        jw_kint(w, JW_K("seed"), in->seed);
    if (in->set & COMPASS_SET_N)
        jw_kint(w, JW_K("n"), in->n);
    if (in->n_stop) {
        jw_key(w, JW_K("stop"));
        jw_open(w, '[');
        for (i = 0; i < in->n_stop; i++)
            jw_str(w, in->stop[i]);
        jw_close(w, ']');
    }
    if (write_raw_member(w, JW_K("response_format"), in->response_format))
        return err_fmt(err, COMPASS_EINVAL, "%s: response_format is not valid JSON",
                       inst->plugin);
    if (in->reasoning_effort.len)
        jw_kstr(w, JW_K("reasoning_effort"), in->reasoning_effort);
    if (in->user.len)
        jw_kstr(w, JW_K("user"), in->user);
    write_passthrough(w, in, n_passed);
    if (in->stream) {
        jw_kbool(w, JW_K("stream"), 1);
        /* The gateway counts tokens, so ask for the usage chunk whatever the client said,
         * unless this upstream refuses stream_options. */
        if (inst->stream_options) {
            jw_key(w, JW_K("stream_options"));
            jw_open(w, '{');
            jw_kbool(w, JW_K("include_usage"), 1);
            jw_close(w, '}');
        }
    }
    jw_close(w, '}');
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                             */
/* ---------------------------------------------------------------------------------------- */

static int set_header(compass_req *req, const compass_host *h, compass_header *hd,
                      const char *name, const char *value)
{
    /* names are static literals or copied; values are copied into the request arena */
    hd->name = h->req_strdup(req, name, strlen(name));
    hd->value = h->req_strdup(req, value, strlen(value));
    return hd->name.ptr && hd->value.ptr ? COMPASS_OK : COMPASS_ENOMEM;
}

/* Content-Type, auth, organization and extra headers, in the request arena. */
static int build_headers(const oai_wire *inst, compass_req *req, compass_header **out,
                         size_t *n_out, compass_err *err)
{
    const compass_host *h = inst->h;
    size_t n_hs = 1 + (inst->auth_name ? 1 : 0) + (inst->organization ? 1 : 0) + inst->n_extra;
    size_t k = 0, i;
    compass_header *hs = h->req_alloc(req, n_hs * sizeof(*hs));
    int rc;
    if (!hs)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
    rc = set_header(req, h, &hs[k++], "Content-Type", "application/json");
    if (!rc && inst->auth_name)
        rc = set_header(req, h, &hs[k++], inst->auth_name, inst->auth_value);
    if (!rc && inst->organization)
        rc = set_header(req, h, &hs[k++], "OpenAI-Organization", inst->organization);
    for (i = 0; !rc && i < inst->n_extra; i++)
        rc = set_header(req, h, &hs[k++], inst->extra[i].name.ptr, inst->extra[i].value.ptr);
    if (rc)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
    *out = hs;
    *n_out = n_hs;
    return COMPASS_OK;
}

int oai_wire_build_chat(const oai_wire *inst, compass_req *req, const compass_chat_request *in,
                        const char *chat_url, compass_http_request *out, compass_err *err)
{
    const compass_host *h;
    compass_header *hs;
    size_t n_hs, n_passed = 0, ulen;
    compass_str body, url;
    jw w;
    int rc;

    if (!inst || !req || !in || !chat_url || !out)
        return err_fmt(err, COMPASS_EINVAL, "%s: build_request: NULL argument", PLUGIN_OF(inst));
    h = inst->h;
    if (!in->model.len)
        return err_fmt(err, COMPASS_EINVAL, "%s: deployment %s: request has no model", inst->plugin,
                       inst->name);

    memset(&w, 0, sizeof(w));
    w.h = h;
    rc = write_body(inst, in, &w, &n_passed, err);
    if (!rc && w.failed)
        rc = err_fmt(err, COMPASS_ENOMEM, "%s: out of memory writing the request body",
                     inst->plugin);
    if (rc) {
        h->free(h, w.p);
        return rc;
    }
    body = h->req_strdup(req, w.p, w.len);
    h->free(h, w.p);
    if (!body.ptr)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory copying the request body",
                       inst->plugin);

    url = h->req_strdup(req, chat_url, strlen(chat_url));
    if (!url.ptr)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);

    if ((rc = build_headers(inst, req, &hs, &n_hs, err)))
        return rc;

    out->method = COMPASS_HTTP_POST;
    out->url = url;
    out->headers = hs;
    out->n_headers = n_hs;
    out->body = body;
    out->stream_format = in->stream ? COMPASS_STREAM_SSE : COMPASS_STREAM_NONE;

    /* log the URL without a query string, which some hosts use for keys */
    for (ulen = 0; ulen < url.len && url.ptr[ulen] != '?'; ulen++)
        ;
    h->log(h, COMPASS_LOG_DEBUG,
           "deployment %s: POST %.*s model=%.*s messages=%zu tools=%zu stream=%d "
           "passthrough=%zu body=%zu bytes",
           inst->name, (int)ulen, url.ptr, (int)in->model.len, in->model.ptr, in->n_messages,
           in->n_tools, in->stream ? 1 : 0, n_passed, body.len);
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading JSON                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Parses exactly one JSON value from p[0..n). NULL with why filled when it is not JSON. */
json_object *parse_json(const char *p, size_t n, char *why, size_t why_cap)
{
    json_tokener *tok;
    json_object *o;
    enum json_tokener_error e;
    size_t end;

    if (!p || !n || n > (size_t)INT32_MAX) {
        snprintf(why, why_cap, "%s", !n ? "empty body" : "body too large");
        return NULL;
    }
    tok = json_tokener_new_ex(OAI_JSON_DEPTH);
    if (!tok) {
        snprintf(why, why_cap, "out of memory");
        return NULL;
    }
    o = js_tokener_parse(tok, p, n, &end);
    e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        /* complete values such as a bare number need the end signalled */
        o = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
        end = n;
    }
    json_tokener_free(tok);
    if (e != json_tokener_success) {
        json_object_put(o);
        if (e == json_tokener_continue)
            snprintf(why, why_cap, "truncated JSON (the body ends at byte %zu)", n);
        else
            snprintf(why, why_cap, "%s at byte %zu", json_tokener_error_desc(e), end);
        return NULL;
    }
    if (js_skip_ws(p, n, end) != n) {
        json_object_put(o);
        snprintf(why, why_cap, "trailing bytes after the JSON value at byte %zu", end);
        return NULL;
    }
    return o;
}

json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return v; /* NULL for a JSON null */
}

/* A borrowed view of a string member (empty when absent, null or not a string). */
compass_str jstr(json_object *o, const char *key)
{
    compass_str r = {NULL, 0};
    json_object *v = jget(o, key);
    if (v && json_object_is_type(v, json_type_string)) {
        r.ptr = json_object_get_string(v);
        r.len = (size_t)json_object_get_string_len(v);
    }
    return r;
}

static int64_t jint(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    if (v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return json_object_get_int64(v);
    return 0;
}

/* Copies s into the request arena (empty stays empty, with no allocation). */
static int dup_str(const compass_host *h, compass_req *req, compass_str s, compass_str *out)
{
    if (!s.len) {
        out->ptr = NULL;
        out->len = 0;
        return COMPASS_OK;
    }
    *out = h->req_strdup(req, s.ptr, s.len);
    return out->ptr ? COMPASS_OK : COMPASS_ENOMEM;
}

static int role_from(compass_str s)
{
    if (compass_str_eq(s, "assistant"))
        return COMPASS_ROLE_ASSISTANT;
    if (compass_str_eq(s, "user"))
        return COMPASS_ROLE_USER;
    if (compass_str_eq(s, "system"))
        return COMPASS_ROLE_SYSTEM;
    if (compass_str_eq(s, "tool"))
        return COMPASS_ROLE_TOOL;
    if (compass_str_eq(s, "developer"))
        return COMPASS_ROLE_DEVELOPER;
    return COMPASS_ROLE_NONE;
}

static int finish_from(compass_str s)
{
    if (!s.len)
        return COMPASS_FINISH_NONE;
    if (compass_str_eq(s, "stop"))
        return COMPASS_FINISH_STOP;
    if (compass_str_eq(s, "length"))
        return COMPASS_FINISH_LENGTH;
    if (compass_str_eq(s, "tool_calls") || compass_str_eq(s, "function_call"))
        return COMPASS_FINISH_TOOL_CALLS;
    if (compass_str_eq(s, "content_filter"))
        return COMPASS_FINISH_CONTENT_FILTER;
    if (compass_str_eq(s, "error"))
        return COMPASS_FINISH_ERROR;
    /* "eos", "end_turn" and other dialects of compatible servers: the model stopped */
    return COMPASS_FINISH_STOP;
}

/* Completes a usage object's numbers as either reader found them (each 0 when absent or not a
 * number), cache_hit being prompt_cache_hit_tokens. */
static void usage_finish(compass_usage *out, int64_t cache_hit)
{
    out->present = 1;
    if (!out->total_tokens)
        out->total_tokens = js_add_sat(out->prompt_tokens, out->completion_tokens);
    if (!out->cached_tokens) /* DeepSeek reports its cache this way */
        out->cached_tokens = cache_hit;
}

static void read_usage(json_object *u, compass_usage *out)
{
    memset(out, 0, sizeof(*out));
    if (!u || !json_object_is_type(u, json_type_object))
        return;
    out->prompt_tokens = jint(u, "prompt_tokens");
    out->completion_tokens = jint(u, "completion_tokens");
    out->total_tokens = jint(u, "total_tokens");
    out->cached_tokens = jint(jget(u, "prompt_tokens_details"), "cached_tokens");
    out->reasoning_tokens = jint(jget(u, "completion_tokens_details"), "reasoning_tokens");
    usage_finish(out, jint(u, "prompt_cache_hit_tokens"));
}

/* The choice with index 0 (or the first one when none says). */
static json_object *choice0(json_object *choices)
{
    size_t i, n = json_object_array_length(choices);
    for (i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(choices, i);
        json_object *ix = jget(c, "index");
        if (!ix || json_object_get_int64(ix) == 0)
            return json_object_is_type(c, json_type_object) ? c : NULL;
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static int any_eq(compass_str a, compass_str b, const char *const *names)
{
    size_t i;
    for (i = 0; names[i]; i++)
        if (compass_str_eq(a, names[i]) || compass_str_eq(b, names[i]))
            return 1;
    return 0;
}

/* The outcome of an error reported inside a 2xx body or a stream, from its type and code. */
static int outcome_from_body(compass_str type, compass_str code, int64_t num_code)
{
    static const char *const rate[] = {"rate_limit_exceeded", "rate_limit_error",
                                       "insufficient_quota", "requests", "tokens", NULL};
    static const char *const auth[] = {"invalid_api_key", "authentication_error",
                                       "permission_error", "invalid_authentication", NULL};
    static const char *const notfound[] = {"model_not_found", "not_found_error", NULL};
    static const char *const bad[] = {"invalid_request_error", "context_length_exceeded",
                                      "invalid_value", NULL};
    if (num_code >= 400 && num_code < 600)
        return compass_outcome_from_status((int)num_code);
    if (any_eq(type, code, rate))
        return COMPASS_OUTCOME_RATE_LIMITED;
    if (any_eq(type, code, auth))
        return COMPASS_OUTCOME_AUTH;
    if (any_eq(type, code, notfound))
        return COMPASS_OUTCOME_NOT_FOUND;
    if (any_eq(type, code, bad))
        return COMPASS_OUTCOME_BAD_REQUEST;
    return COMPASS_OUTCOME_RETRYABLE; /* server_error and the unknown: try elsewhere */
}

static int is_content_filter(compass_str type, compass_str code)
{
    static const char *const cf[] = {"content_filter", "content_policy_violation", NULL};
    return any_eq(type, code, cf);
}

static const char *type_from_status(int status)
{
    if (status == 400 || status == 413 || status == 422)
        return "invalid_request_error";
    if (status == 401)
        return "authentication_error";
    if (status == 403)
        return "permission_error";
    if (status == 402)
        return "insufficient_quota";
    if (status == 404)
        return "not_found_error";
    if (status == 429)
        return "rate_limit_error";
    if (status >= 500 || status == 408 || status == 0)
        return "server_error";
    return "upstream_error";
}

/*
 * Reads an error out of a parsed body into u (texts only; the caller sets the outcome).
 * Knows OpenAI's {"error":{message,type,param,code}}, TGI's {"error":"...","error_type"},
 * vLLM's older top-level {"object":"error",...} and FastAPI's {"detail":...}.
 * Returns 1 when the body held an error, 0 when not. *num_code receives an integer code.
 */
static int read_error(json_object *root, compass_upstream_error *u, int64_t *num_code)
{
    json_object *e = jget(root, "error"), *code, *param;
    compass_str msg = {NULL, 0};
    *num_code = 0;
    if (!root || !json_object_is_type(root, json_type_object))
        return 0;
    if (e && json_object_is_type(e, json_type_string)) {
        compass_copy_fixed(u->message, sizeof(u->message), jstr(root, "error"));
        compass_copy_fixed(u->type, sizeof(u->type), jstr(root, "error_type"));
        return 1;
    }
    if (!e || !json_object_is_type(e, json_type_object)) {
        json_object *detail = jget(root, "detail");
        if (compass_str_eq(jstr(root, "object"), "error")) {
            e = root;
        } else if (detail) {
            const char *d = json_object_is_type(detail, json_type_string)
                                ? json_object_get_string(detail)
                                : json_object_to_json_string_ext(detail, JSON_C_TO_STRING_PLAIN);
            compass_copy_fixed(u->message, sizeof(u->message), compass_str_c(d));
            return 1;
        } else {
            return 0;
        }
    }
    msg = jstr(e, "message");
    if (!msg.len && jget(e, "message")) /* Mistral: a validation detail object */
        msg = compass_str_c(
            json_object_to_json_string_ext(jget(e, "message"), JSON_C_TO_STRING_PLAIN));
    compass_copy_fixed(u->message, sizeof(u->message), msg);
    compass_copy_fixed(u->type, sizeof(u->type), jstr(e, "type"));
    code = jget(e, "code");
    if (code && json_object_is_type(code, json_type_string)) {
        compass_copy_fixed(u->code, sizeof(u->code), jstr(e, "code"));
    } else if (code && json_object_is_type(code, json_type_int)) {
        *num_code = json_object_get_int64(code);
        snprintf(u->code, sizeof(u->code), "%" PRId64, *num_code);
    }
    /* the SDK's upstream error has no param field: keep it in the message */
    param = jget(e, "param");
    if (param && json_object_is_type(param, json_type_string)) {
        size_t ml = strlen(u->message);
        if (ml + 16 < sizeof(u->message))
            snprintf(u->message + ml, sizeof(u->message) - ml, "%s(param: %s)", ml ? " " : "",
                     json_object_get_string(param));
    }
    return 1;
}

/* Fills u for an error found inside a 2xx body or a stream event. */
static void body_error_to_uerr(json_object *root, int status, compass_upstream_error *u)
{
    int64_t num_code = 0;
    compass_uerr_init(u, COMPASS_OUTCOME_RETRYABLE, status);
    read_error(root, u, &num_code);
    u->outcome = is_content_filter(compass_str_c(u->type), compass_str_c(u->code))
                     ? COMPASS_OUTCOME_CONTENT_FILTER
                     : outcome_from_body(compass_str_c(u->type), compass_str_c(u->code),
                                         num_code);
    if (!u->message[0])
        snprintf(u->message, sizeof(u->message), "upstream reported an error without a message");
    if (!u->type[0])
        snprintf(u->type, sizeof(u->type), "%s", "server_error");
}

const char *outcome_name(int o)
{
    switch (o) {
    case COMPASS_OUTCOME_OK: return "ok";
    case COMPASS_OUTCOME_RETRYABLE: return "retryable";
    case COMPASS_OUTCOME_RATE_LIMITED: return "rate_limited";
    case COMPASS_OUTCOME_AUTH: return "auth";
    case COMPASS_OUTCOME_BAD_REQUEST: return "bad_request";
    case COMPASS_OUTCOME_CONTENT_FILTER: return "content_filter";
    case COMPASS_OUTCOME_NOT_FOUND: return "not_found";
    default: return "fatal";
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Retry delays                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* A non-negative decimal number at p[*i]: "12", "1.5". -1 when there is none. */
static double read_number(const char *p, size_t n, size_t *i)
{
    double v = 0, scale = 0.1;
    size_t k = *i, start = *i;
    while (k < n && p[k] >= '0' && p[k] <= '9')
        v = v * 10 + (p[k++] - '0');
    if (k < n && p[k] == '.' && k + 1 < n && p[k + 1] >= '0' && p[k + 1] <= '9') {
        for (k++; k < n && p[k] >= '0' && p[k] <= '9'; k++) {
            v += (p[k] - '0') * scale;
            scale /= 10;
        }
    }
    if (k == start)
        return -1;
    *i = k;
    return v;
}

static int64_t ms_ceil(double ms)
{
    if (ms <= 0)
        return 0;
    if (ms > 9.0e15)
        return (int64_t)9.0e15;
    {
        int64_t t = (int64_t)ms; /* ceil without libm */
        return (double)t < ms ? t + 1 : t;
    }
}

/* A whole string that is a number ("120", "1.5") times ms_per_unit, rounded up to whole
 * milliseconds. -1 when it is not a number. */
static int64_t parse_number_ms(compass_str s, double ms_per_unit)
{
    size_t i = 0;
    double v;
    s = str_trim(s.ptr ? s.ptr : "", s.len);
    v = read_number(s.ptr, s.len, &i);
    if (v < 0 || i != s.len)
        return -1;
    return ms_ceil(v * ms_per_unit);
}

/* A Go-style duration such as "1s", "6m0s", "12ms", "1h2m3.5s" at the start of p.
 * Returns milliseconds, or -1 when p does not start with one. */
int64_t parse_duration(const char *p, size_t n)
{
    size_t i = 0;
    double total = 0;
    int parts = 0;
    while (i < n) {
        size_t save = i;
        double v = read_number(p, n, &i), mult;
        if (v < 0)
            break;
        if (i + 1 < n && p[i] == 'm' && p[i + 1] == 's') {
            mult = 1;
            i += 2;
        } else if (i + 1 < n && p[i] == 'u' && p[i + 1] == 's') {
            mult = 0.001;
            i += 2;
        } else if (i + 1 < n && p[i] == 'n' && p[i + 1] == 's') {
            mult = 0.000001;
            i += 2;
        } else if (i < n && p[i] == 'h') {
            mult = 3600000;
            i++;
        } else if (i < n && p[i] == 'm') {
            mult = 60000;
            i++;
        } else if (i < n && p[i] == 's') {
            mult = 1000;
            i++;
        } else {
            i = save;
            break;
        }
        total += v * mult;
        parts++;
    }
    return parts ? ms_ceil(total) : -1;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as Unix milliseconds; -1 if not one. */
static int64_t parse_http_date(compass_str s)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char buf[64];
    int day, year, hh, mm, ss, m;
    char mon[4];
    size_t k;
    if (s.len >= sizeof(buf))
        return -1;
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    k = 0;
    while (buf[k] && buf[k] != ',')
        k++;
    if (!buf[k])
        return -1;
    if (sscanf(buf + k + 1, " %2d %3s %4d %2d:%2d:%2d", &day, mon, &year, &hh, &mm, &ss) != 6)
        return -1;
    for (m = 0; m < 12; m++)
        if (!strncmp(months + 3 * m, mon, 3))
            break;
    if (m == 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    return (days_from_civil(year, m + 1, day) * 86400 + hh * 3600 + mm * 60 + ss) * 1000;
}

/* The delay the upstream asked for, from its headers or its message; -1 when none. */
static int64_t retry_after(const oai_wire *inst, const compass_http_response *resp,
                           const char *message)
{
    compass_str v;
    int64_t ms, best = -1;
    const char *p;

    v = compass_header_get(resp->headers, resp->n_headers, "retry-after-ms");
    if (v.len && (ms = parse_number_ms(v, 1.0)) >= 0)
        return ms;
    v = compass_header_get(resp->headers, resp->n_headers, "retry-after");
    if (v.len) {
        if ((ms = parse_number_ms(v, 1000.0)) >= 0)
            return ms;
        if ((ms = parse_http_date(str_trim(v.ptr, v.len))) >= 0) {
            int64_t now = inst && inst->h->now_ms ? inst->h->now_ms(inst->h) : 0;
            return ms > now ? ms - now : 0;
        }
    }
    v = compass_header_get(resp->headers, resp->n_headers, "x-ratelimit-reset-requests");
    if (v.len) {
        v = str_trim(v.ptr, v.len);
        best = parse_duration(v.ptr, v.len);
    }
    v = compass_header_get(resp->headers, resp->n_headers, "x-ratelimit-reset-tokens");
    if (v.len && resp->status == 429) {
        v = str_trim(v.ptr, v.len);
        ms = parse_duration(v.ptr, v.len);
        if (ms > best)
            best = ms;
    }
    if (best >= 0)
        return best;
    /* "Rate limit reached ... Please try again in 120ms." */
    p = message ? strstr(message, "try again in ") : NULL;
    if (p) {
        p += 13;
        return parse_duration(p, strlen(p));
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* classify_error                                                                            */
/* ---------------------------------------------------------------------------------------- */

void oai_wire_classify_error(const oai_wire *inst, compass_req *req,
                             const compass_http_response *resp, compass_upstream_error *u)
{
    int status = resp ? resp->status : 0;
    int64_t num_code = 0;
    json_object *root = NULL;
    char why[128];
    int found = 0;

    (void)req;
    if (!u)
        return;
    compass_uerr_init(u, compass_outcome_from_status(status), status);
    /* 402 (OpenRouter, DeepSeek: out of credits) is the deployment's account, like a bad key:
     * another deployment can serve, this one cannot until someone pays */
    if (status == 402)
        u->outcome = COMPASS_OUTCOME_AUTH;
    if (!resp)
        return;
    if (resp->body.len)
        root = parse_json(resp->body.ptr, resp->body.len, why, sizeof(why));
    if (root)
        found = read_error(root, u, &num_code);
    if (status >= 200 && status < 300) {
        u->outcome = found ? outcome_from_body(compass_str_c(u->type), compass_str_c(u->code),
                                               num_code)
                           : COMPASS_OUTCOME_RETRYABLE;
    }
    if (found && is_content_filter(compass_str_c(u->type), compass_str_c(u->code)) &&
        (status < 500))
        u->outcome = COMPASS_OUTCOME_CONTENT_FILTER;
    if (!u->message[0])
        snprintf(u->message, sizeof(u->message), "upstream returned HTTP %d", status);
    if (!u->type[0])
        snprintf(u->type, sizeof(u->type), "%s", type_from_status(status));
    u->retry_after_ms = retry_after(inst, resp, found ? u->message : NULL);
    json_object_put(root);

    if (inst) {
        inst->h->log(inst->h,
                     u->outcome == COMPASS_OUTCOME_BAD_REQUEST ? COMPASS_LOG_INFO
                                                               : COMPASS_LOG_WARN,
                     "deployment %s: upstream HTTP %d -> %s (type %s%s%s, retry after %" PRId64
                     " ms): %.200s%s",
                     inst->name, status, outcome_name(u->outcome), u->type,
                     u->code[0] ? ", code " : "", u->code, u->retry_after_ms, u->message,
                     found ? "" : " [body is not an OpenAI error]");
        if (!strcmp(u->code, "insufficient_quota"))
            inst->h->log(inst->h, COMPASS_LOG_WARN,
                         "deployment %s: quota exhausted; waiting will not help until billing "
                         "is fixed",
                         inst->name);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                            */
/* ---------------------------------------------------------------------------------------- */

/* What a chat.completion says, as either reader found it. The views borrow the body or json-c
 * objects that live until the response has been filled (which copies what it keeps). */
typedef struct oai_reply {
    compass_str id, model;
    int64_t created;
    size_t n_choices;
    /* choice 0 and its message */
    int has_content;            /* content is a string or an array of parts */
    compass_str content;        /* content, when a string */
    json_object *parts;         /* content, when an array of parts (some compatible servers) */
    compass_str refusal, finish;
    json_object *tool_calls;    /* tool_calls, when an array */
    json_object *function_call; /* function_call, when an object */
    compass_usage usage;
} oai_reply;

/* Message content: a string, or the text of its parts joined. */
static int read_content(const compass_host *h, compass_req *req, const oai_reply *r,
                        compass_chat_response *out)
{
    json_object *c = r->parts;
    out->has_content = r->has_content;
    if (c) {
        size_t i, n = json_object_array_length(c), total = 0, off = 0;
        char *buf;
        for (i = 0; i < n; i++)
            total += jstr(json_object_array_get_idx(c, i), "text").len;
        if (!total)
            return COMPASS_OK;
        buf = h->req_alloc(req, total + 1);
        if (!buf)
            return COMPASS_ENOMEM;
        for (i = 0; i < n; i++) {
            compass_str t = jstr(json_object_array_get_idx(c, i), "text");
            if (t.len)
                memcpy(buf + off, t.ptr, t.len);
            off += t.len;
        }
        buf[off] = '\0';
        out->content.ptr = buf;
        out->content.len = off;
        return COMPASS_OK;
    }
    return dup_str(h, req, r->content, &out->content);
}

/* function.arguments is a string; some servers send an object: keep its JSON text. */
static compass_str args_of(json_object *fn)
{
    json_object *a = jget(fn, "arguments");
    compass_str r = {NULL, 0};
    if (!a)
        return r;
    if (json_object_is_type(a, json_type_string))
        return jstr(fn, "arguments");
    r.ptr = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN);
    r.len = r.ptr ? strlen(r.ptr) : 0;
    return r;
}

static int read_tool_calls(const compass_host *h, compass_req *req, const oai_reply *r,
                           compass_chat_response *out)
{
    json_object *tcs = r->tool_calls, *fc = r->function_call;
    size_t i, n;
    int rc;
    if (tcs && json_object_array_length(tcs)) {
        n = json_object_array_length(tcs);
        out->tool_calls = h->req_alloc(req, n * sizeof(*out->tool_calls));
        if (!out->tool_calls)
            return COMPASS_ENOMEM;
        memset(out->tool_calls, 0, n * sizeof(*out->tool_calls));
        for (i = 0; i < n; i++) {
            json_object *tc = json_object_array_get_idx(tcs, i);
            json_object *fn = jget(tc, "function");
            compass_tool_call *d = &out->tool_calls[i];
            if ((rc = dup_str(h, req, jstr(tc, "id"), &d->id)) ||
                (rc = dup_str(h, req, jstr(fn, "name"), &d->name)) ||
                (rc = dup_str(h, req, args_of(fn), &d->arguments)))
                return rc;
        }
        out->n_tool_calls = n;
    } else if (fc) {
        /* the legacy single function_call */
        out->tool_calls = h->req_alloc(req, sizeof(*out->tool_calls));
        if (!out->tool_calls)
            return COMPASS_ENOMEM;
        memset(out->tool_calls, 0, sizeof(*out->tool_calls));
        if ((rc = dup_str(h, req, jstr(fc, "name"), &out->tool_calls[0].name)) ||
            (rc = dup_str(h, req, args_of(fc), &out->tool_calls[0].arguments)))
            return rc;
        out->n_tool_calls = 1;
    }
    return COMPASS_OK;
}

/* Fills out from r, copying its strings into the request arena. */
static int fill_response(const oai_wire *inst, compass_req *req, const oai_reply *r,
                         compass_chat_response *out, compass_err *err)
{
    const compass_host *h = inst->h;
    int rc;
    memset(&out->id, 0, sizeof(*out) - offsetof(compass_chat_response, id));
    rc = dup_str(h, req, r->id, &out->id);
    if (!rc)
        rc = dup_str(h, req, r->model, &out->model);
    out->created = r->created;
    if (!rc)
        rc = read_content(h, req, r, out);
    if (!rc)
        rc = dup_str(h, req, r->refusal, &out->refusal);
    if (!rc)
        rc = read_tool_calls(h, req, r, out);
    out->finish_reason = finish_from(r->finish);
    out->usage = r->usage;
    if (rc)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory reading the response", inst->plugin);
    if (r->n_choices > 1)
        h->log(h, COMPASS_LOG_DEBUG, "deployment %s: %zu choices; only choice 0 is kept",
               inst->name, r->n_choices);
    return COMPASS_OK;
}

static int response_args_bad(const oai_wire *inst, compass_req *req,
                             const compass_http_response *resp, compass_chat_response *out,
                             compass_err *err)
{
    if (inst && req && resp && out)
        return 0;
    return err_fmt(err, COMPASS_EINVAL, "%s: parse_response: NULL argument", PLUGIN_OF(inst));
}

/* ---- the tree reader: json-c parses the whole body, and words every error */

static int response_tree(const oai_wire *inst, compass_req *req,
                         const compass_http_response *resp, compass_chat_response *out,
                         compass_upstream_error *uerr, compass_err *err)
{
    const compass_host *h = inst->h;
    json_object *root, *choices, *c0, *msg, *v;
    oai_reply r;
    char why[128];
    int rc;

    root = parse_json(resp->body.ptr, resp->body.len, why, sizeof(why));
    if (!root) {
        h->log(h, COMPASS_LOG_WARN, "deployment %s: HTTP %d response is not JSON: %s",
               inst->name, resp->status, why);
        return err_fmt(err, COMPASS_EPARSE, "%s: deployment %s: response is not JSON: %s",
                       inst->plugin, inst->name, why);
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return err_fmt(err, COMPASS_EPARSE,
                       "%s: deployment %s: response is JSON but not an object",
                       inst->plugin, inst->name);
    }
    if (jget(root, "error") || compass_str_eq(jstr(root, "object"), "error")) {
        compass_upstream_error tmp;
        body_error_to_uerr(root, resp->status, uerr ? uerr : &tmp);
        json_object_put(root);
        h->log(h, COMPASS_LOG_WARN, "deployment %s: HTTP %d body carries an error: %.200s",
               inst->name, resp->status, uerr ? uerr->message : tmp.message);
        return err_fmt(err, COMPASS_EUPSTREAM,
                       "%s: deployment %s: upstream returned an error in a %d body", inst->plugin,
                       inst->name, resp->status);
    }
    choices = jget(root, "choices");
    if (!choices || !json_object_is_type(choices, json_type_array) ||
        !json_object_array_length(choices)) {
        const char *what = !choices ? "has no 'choices'"
                           : !json_object_is_type(choices, json_type_array)
                               ? "has 'choices' that is not an array"
                               : "has an empty 'choices' array";
        json_object_put(root);
        h->log(h, COMPASS_LOG_WARN, "deployment %s: response %s", inst->name, what);
        return err_fmt(err, COMPASS_EPARSE, "%s: deployment %s: response %s",
                       inst->plugin, inst->name, what);
    }
    c0 = choice0(choices);
    msg = jget(c0, "message");
    if (!c0 || !msg || !json_object_is_type(msg, json_type_object)) {
        json_object_put(root);
        return err_fmt(err, COMPASS_EPARSE,
                       "%s: deployment %s: response choice 0 has no 'message' object", inst->plugin,
                       inst->name);
    }

    memset(&r, 0, sizeof(r));
    r.id = jstr(root, "id");
    r.model = jstr(root, "model");
    r.created = jint(root, "created");
    r.n_choices = json_object_array_length(choices);
    v = jget(msg, "content");
    if (v && json_object_is_type(v, json_type_string)) {
        r.has_content = 1;
        r.content = jstr(msg, "content");
    } else if (v && json_object_is_type(v, json_type_array)) {
        r.has_content = 1;
        r.parts = v;
    }
    r.refusal = jstr(msg, "refusal");
    r.finish = jstr(c0, "finish_reason");
    v = jget(msg, "tool_calls");
    if (v && json_object_is_type(v, json_type_array))
        r.tool_calls = v;
    v = jget(msg, "function_call");
    if (v && json_object_is_type(v, json_type_object))
        r.function_call = v;
    read_usage(jget(root, "usage"), &r.usage);
    rc = fill_response(inst, req, &r, out, err);
    json_object_put(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event                                                                        */
/* ---------------------------------------------------------------------------------------- */

static oai_stream_state *stream_state(const compass_host *h, compass_req *req)
{
    void **slot;
    if (!COMPASS_HOST_HAS(h, req_data))
        return NULL;
    slot = h->req_data(req);
    if (!slot)
        return NULL;
    if (!*slot) {
        oai_stream_state *s = h->req_alloc(req, sizeof(*s));
        if (!s)
            return NULL;
        s->next_tool = 0;
        s->last_tool = 0;
        *slot = s;
    }
    return *slot;
}

static int emit_tool_deltas(const oai_wire *inst, compass_req *req, json_object *tcs,
                            const compass_chat_delta *base)
{
    const compass_host *h = inst->h;
    size_t i, n = json_object_array_length(tcs);
    int rc;
    for (i = 0; i < n; i++) {
        json_object *tc = json_object_array_get_idx(tcs, i);
        json_object *ix = jget(tc, "index"), *fn = jget(tc, "function");
        compass_chat_delta d = *base;
        int idx;
        if (!tc || !json_object_is_type(tc, json_type_object))
            continue;
        d.tool_id = jstr(tc, "id");
        d.tool_name = jstr(fn, "name");
        d.tool_arguments = args_of(fn);
        if (ix) {
            idx = (int)json_object_get_int64(ix);
        } else {
            /* servers without "index" (whole calls per chunk): number them ourselves */
            oai_stream_state *s = stream_state(h, req);
            if (!s)
                return COMPASS_ENOMEM;
            if (d.tool_id.len || d.tool_name.len)
                s->last_tool = s->next_tool++;
            idx = s->last_tool;
        }
        if (idx < 0)
            idx = 0;
        d.tool_index = idx;
        if ((rc = h->stream_emit(req, &d)))
            return rc;
    }
    return COMPASS_OK;
}

/* What one chat.completion.chunk says, as either reader found it. The views borrow the
 * event's data or json-c objects that live until the chunk has been emitted. */
typedef struct oai_chunk {
    compass_str id, model;
    int has_choice; /* choice 0 is there (an object) */
    compass_str role, content, refusal, finish;
    json_object *tool_calls;    /* the delta's tool_calls, when an array */
    json_object *function_call; /* the delta's function_call, when an object */
    json_object *usage;         /* usage (or Groq's x_groq.usage), when an object */
} oai_chunk;

/* Emits the deltas of a chunk; 0 or the host's refusal. */
static int emit_chunk(const oai_wire *inst, compass_req *req, const oai_chunk *c)
{
    const compass_host *h = inst->h;
    compass_chat_delta base, d;
    int rc = COMPASS_OK;

    compass_delta_init(&base);
    base.id = c->id;
    base.model = c->model;
    if (c->has_choice) {
        int finish = finish_from(c->finish);
        d = base;
        d.role = role_from(c->role);
        d.content = c->content;
        d.refusal = c->refusal;
        if (d.role || d.content.len || d.refusal.len)
            rc = h->stream_emit(req, &d);
        if (!rc && c->tool_calls)
            rc = emit_tool_deltas(inst, req, c->tool_calls, &base);
        else if (!rc && c->function_call) {
            d = base;
            d.tool_index = 0;
            d.tool_name = jstr(c->function_call, "name");
            d.tool_arguments = args_of(c->function_call);
            rc = h->stream_emit(req, &d);
        }
        if (!rc && finish) {
            d = base;
            d.finish_reason = finish;
            rc = h->stream_emit(req, &d);
        }
    }
    if (!rc && c->usage) {
        d = base;
        read_usage(c->usage, &d.usage);
        rc = h->stream_emit(req, &d);
    }
    return rc;
}

static int emit_failed(const oai_wire *inst, int rc, compass_err *err)
{
    return err_fmt(err, rc, "%s: deployment %s: the host refused a stream delta (%d)",
                   inst->plugin, inst->name, rc);
}

/* The event's JSON text, trimmed. Returns 1 when there is JSON to read, else 0 with *rc the
 * answer (a NULL argument, a keep-alive, the [DONE] marker). */
static int event_json(const oai_wire *inst, compass_req *req, const compass_stream_event *ev,
                      compass_err *err, compass_str *data, int *rc)
{
    if (!inst || !req || !ev) {
        *rc = err_fmt(err, COMPASS_EINVAL, "%s: parse_stream_event: NULL argument",
                      PLUGIN_OF(inst));
        return 0;
    }
    *data = str_trim(ev->data.ptr ? ev->data.ptr : "", ev->data.ptr ? ev->data.len : 0);
    *rc = !data->len ? COMPASS_OK /* comments, keep-alives, bare "event:" lines */
          : compass_str_eq(*data, "[DONE]") ? COMPASS_STREAM_END
                                            : COMPASS_OK;
    return data->len && *rc == COMPASS_OK;
}

/* ---- the tree reader: json-c parses the whole event */

static int stream_event_tree(const oai_wire *inst, compass_req *req,
                             const compass_stream_event *ev, compass_str data,
                             compass_upstream_error *uerr, compass_err *err)
{
    const compass_host *h = inst->h;
    json_object *root, *choices, *c0, *usage;
    oai_chunk c;
    char why[128];
    int rc;

    root = parse_json(data.ptr, data.len, why, sizeof(why));
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        if (compass_str_eq(ev->event, "error")) {
            if (uerr) {
                compass_uerr_init(uerr, COMPASS_OUTCOME_RETRYABLE, 200);
                compass_copy_fixed(uerr->message, sizeof(uerr->message), data);
                snprintf(uerr->type, sizeof(uerr->type), "%s", "server_error");
            }
            return err_fmt(err, COMPASS_EUPSTREAM,
                           "%s: deployment %s: upstream sent an error event",
                           inst->plugin, inst->name);
        }
        h->log(h, COMPASS_LOG_WARN, "deployment %s: stream event is not a JSON object: %s",
               inst->name, root ? "not an object" : why);
        return err_fmt(err, COMPASS_EPARSE,
                       "%s: deployment %s: stream event is not a JSON object (%s)", inst->plugin,
                       inst->name, root ? "another JSON value" : why);
    }
    if (jget(root, "error") || compass_str_eq(jstr(root, "object"), "error") ||
        compass_str_eq(ev->event, "error")) {
        compass_upstream_error tmp;
        compass_upstream_error *u = uerr ? uerr : &tmp;
        body_error_to_uerr(root, 200, u);
        json_object_put(root);
        h->log(h, COMPASS_LOG_WARN, "deployment %s: error in stream -> %s: %.200s", inst->name,
               outcome_name(u->outcome), u->message);
        return err_fmt(err, COMPASS_EUPSTREAM, "%s: deployment %s: error event in stream",
                       inst->plugin, inst->name);
    }

    memset(&c, 0, sizeof(c));
    c.id = jstr(root, "id");
    c.model = jstr(root, "model");
    choices = jget(root, "choices");
    c0 = choices && json_object_is_type(choices, json_type_array) ? choice0(choices) : NULL;
    if (c0) {
        json_object *delta = jget(c0, "delta"), *tcs = jget(delta, "tool_calls"),
                    *fc = jget(delta, "function_call");
        c.has_choice = 1;
        c.role = jstr(delta, "role");
        c.content = jstr(delta, "content");
        c.refusal = jstr(delta, "refusal");
        c.finish = jstr(c0, "finish_reason");
        if (tcs && json_object_is_type(tcs, json_type_array))
            c.tool_calls = tcs;
        if (fc && json_object_is_type(fc, json_type_object))
            c.function_call = fc;
    }
    usage = jget(root, "usage");
    if (!usage) /* Groq puts the final usage under x_groq */
        usage = jget(jget(root, "x_groq"), "usage");
    if (usage && json_object_is_type(usage, json_type_object))
        c.usage = usage;
    rc = emit_chunk(inst, req, &c);
    json_object_put(root);
    return rc ? emit_failed(inst, rc, err) : COMPASS_OK;
}

/* ---- the scanner reader: walks the event in place, decodes only what a chunk keeps */

/* The members of a choice's delta (a chunk) or message (a response) that the readers keep. */
enum { CM_ROLE, CM_CONTENT, CM_REFUSAL, CM_TOOL_CALLS, CM_FUNCTION_CALL, CM_N };
static const js_key choice_keys[CM_N] = {JS_KEY("role"), JS_KEY("content"), JS_KEY("refusal"),
                                         JS_KEY("tool_calls"), JS_KEY("function_call")};

/* The top-level members of a chunk or a response that the readers look at. TM_EXTRA is the
 * one member only one of them reads (a chunk's x_groq, a response's created). */
enum { TM_ID, TM_MODEL, TM_OBJECT, TM_ERROR, TM_USAGE, TM_EXTRA, TM_N };
/* The members of a choice the readers look at; CH_INNER is its delta or message. */
enum { CH_INNER, CH_INDEX, CH_FINISH, CH_N };

/* The keys the scanner reader looks for in a chunk or in a response. */
typedef struct scan_shape {
    js_key top[TM_N + 1]; /* TM_*, then choices */
    js_key choice[CH_N];
} scan_shape;

static const scan_shape chunk_shape = {
    {JS_KEY("id"), JS_KEY("model"), JS_KEY("object"), JS_KEY("error"), JS_KEY("usage"),
     JS_KEY("x_groq"), JS_KEY("choices")},
    {JS_KEY("delta"), JS_KEY("index"), JS_KEY("finish_reason")}};

static const scan_shape response_shape = {
    {JS_KEY("id"), JS_KEY("model"), JS_KEY("object"), JS_KEY("error"), JS_KEY("usage"),
     JS_KEY("created"), JS_KEY("choices")},
    {JS_KEY("message"), JS_KEY("index"), JS_KEY("finish_reason")}};

/* Members of a choice as the scanner found them; JS_NONE when absent. */
typedef struct scan_choice {
    js_val index, finish;
    js_val inner;     /* the delta or the message (only its type when it is an object) */
    js_val m[CM_N];   /* the members of inner, when it is an object */
} scan_choice;

/* A choice object, whose members keys (CH_*) names. */
static int scan_choice_obj(json_scan *s, const js_key *keys, scan_choice *c)
{
    size_t ki;
    int r;
    memset(c, 0, sizeof(*c));
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member_key(s, keys, CH_N, &ki)) > 0) {
        switch (ki) {
        case CH_INNER:
            if (c->inner.type != JS_NONE)
                return -1;
            if (js_peek(s) == JS_OBJECT) {
                c->inner.type = JS_OBJECT;
                if (js_members_k(s, choice_keys, c->m, CM_N))
                    return -1;
            } else if (js_value(s, &c->inner)) {
                return -1;
            }
            break;
        case CH_INDEX:
            if (js_take(s, &c->index))
                return -1;
            break;
        case CH_FINISH:
            if (js_take(s, &c->finish))
                return -1;
            break;
        default:
            if (js_skip(s))
                return -1;
            break;
        }
    }
    return r;
}

/* choices: finds choice 0 as choice0() does (the first element whose index is 0 or absent;
 * none when an element before it is not an object). *found says whether c0 was filled;
 * *count is the number of elements. */
static int scan_choices(json_scan *s, js_keep *keep, const js_key *keys, scan_choice *c0,
                        int *found, size_t *count)
{
    int r, stop = 0;
    *found = 0;
    *count = 0;
    if (js_begin(s, '['))
        return -1;
    while ((r = js_elem(s)) > 0) {
        int64_t ix = 0;
        ++*count;
        if (stop) {
            if (js_skip(s))
                return -1;
            continue;
        }
        if (js_peek(s) != JS_OBJECT) {
            stop = 1;
            if (js_skip(s))
                return -1;
            continue;
        }
        if (scan_choice_obj(s, keys, c0))
            return -1;
        if (c0->index.type == JS_NUMBER) {
            if (js_int64(keep, &c0->index, &ix))
                return -1;
        } else if (c0->index.type != JS_NONE && c0->index.type != JS_NULL) {
            return -1; /* json-c's reading of a string or a bool as an index: leave it */
        }
        if (ix == 0)
            stop = *found = 1;
    }
    return r;
}

typedef struct scan_top {
    js_val m[TM_N];
    js_type choices;  /* the type of choices (JS_NONE when absent) */
    size_t n_choices; /* its elements, when an array */
    int found;        /* choice 0 is there (an object): c0 holds it */
    scan_choice c0;
} scan_top;

static int scan_usage_in(json_scan *s, js_keep *keep, compass_usage *out);

/* Walks a whole chunk or response body in place, each byte once: the members of TM_* and
 * choices, for choice 0, as shape names them. With usage (a response), a usage object is read
 * in place into *usage (zeroed when there is none), leaving only its type in t; without (a
 * chunk, whose usage json-c decodes), its span is kept like the others. -1 when the tree
 * reader must take the body: not strict JSON, a duplicate or escaped key, an error (a
 * non-null error member or object "error"). */
static int scan_body(compass_str data, js_keep *keep, const scan_shape *shape,
                     compass_usage *usage, scan_top *t)
{
    const js_val *object = &t->m[TM_OBJECT], *error = &t->m[TM_ERROR];
    json_scan s;
    size_t i;
    int r;

    memset(t, 0, sizeof(*t));
    if (usage)
        memset(usage, 0, sizeof(*usage));
    if (data.len > (size_t)INT32_MAX)
        return -1;
    js_init(&s, data.ptr, data.len, OAI_JSON_DEPTH);
    if (js_begin(&s, '{'))
        return -1;
    while ((r = js_member_key(&s, shape->top, TM_N + 1, &i)) > 0) {
        if (i == TM_N) { /* choices */
            if (t->choices != JS_NONE)
                return -1;
            t->choices = js_peek(&s);
            if (t->choices == JS_ARRAY ? scan_choices(&s, keep, shape->choice, &t->c0, &t->found,
                                                      &t->n_choices)
                                       : js_skip(&s))
                return -1;
        } else if (i == TM_USAGE && usage && js_peek(&s) == JS_OBJECT) {
            /* entered here rather than taken whole and walked again */
            if (t->m[TM_USAGE].type != JS_NONE)
                return -1;
            t->m[TM_USAGE].type = JS_OBJECT;
            if (scan_usage_in(&s, keep, usage))
                return -1;
        } else if (i < TM_N ? js_take(&s, &t->m[i]) : js_skip(&s)) {
            return -1;
        }
    }
    if (r < 0 || js_end(&s))
        return -1;
    /* an error: the tree reader words and classifies it */
    if ((error->type != JS_NONE && error->type != JS_NULL) ||
        (object->type == JS_STRING && (object->escaped || js_key_is(object, "error"))))
        return -1;
    return 0;
}

/* A string member as jstr() reads it: empty unless it is a string. */
static int scan_str(js_keep *keep, const js_val *v, compass_str *out)
{
    out->ptr = NULL;
    out->len = 0;
    return v->type == JS_STRING ? js_string(keep, v, out) : 0;
}

/* A member decoded by json-c when it has type t (else left NULL). */
static int scan_tree(js_keep *keep, const js_val *v, js_type t, json_object **out)
{
    *out = NULL;
    return v->type == t ? js_decode(keep, v, out) : 0;
}

/* Reads data into c; -1 when the tree reader must take the event (not strict JSON, an error,
 * a duplicate or escaped key, a shape the scanner reader does not follow). */
static int scan_chunk(compass_str data, js_keep *keep, oai_chunk *c)
{
    scan_top t;
    const scan_choice *c0 = &t.c0;
    const js_val *usage = &t.m[TM_USAGE];

    memset(c, 0, sizeof(*c));
    if (scan_body(data, keep, &chunk_shape, NULL, &t))
        return -1;
    if (scan_str(keep, &t.m[TM_ID], &c->id) || scan_str(keep, &t.m[TM_MODEL], &c->model))
        return -1;
    if (t.found) {
        c->has_choice = 1;
        if (scan_str(keep, &c0->m[CM_ROLE], &c->role) ||
            scan_str(keep, &c0->m[CM_CONTENT], &c->content) ||
            scan_str(keep, &c0->m[CM_REFUSAL], &c->refusal) ||
            scan_str(keep, &c0->finish, &c->finish) ||
            scan_tree(keep, &c0->m[CM_TOOL_CALLS], JS_ARRAY, &c->tool_calls) ||
            scan_tree(keep, &c0->m[CM_FUNCTION_CALL], JS_OBJECT, &c->function_call))
            return -1;
    }
    if (usage->type == JS_NONE || usage->type == JS_NULL) {
        json_object *g;
        if (scan_tree(keep, &t.m[TM_EXTRA], JS_OBJECT, &g))
            return -1;
        c->usage = jget(g, "usage");
        if (c->usage && !json_object_is_type(c->usage, json_type_object))
            c->usage = NULL;
    } else if (scan_tree(keep, usage, JS_OBJECT, &c->usage)) {
        return -1;
    }
    return 0;
}

static int stream_event_scan(const oai_wire *inst, compass_req *req,
                             const compass_stream_event *ev, compass_str data, compass_err *err)
{
    js_keep keep;
    oai_chunk c;
    int rc;
    if (compass_str_eq(ev->event, "error"))
        return OAI_WIRE_DECLINED;
    js_keep_init(&keep, OAI_JSON_DEPTH);
    if (scan_chunk(data, &keep, &c)) {
        js_keep_release(&keep);
        return OAI_WIRE_DECLINED;
    }
    rc = emit_chunk(inst, req, &c);
    js_keep_release(&keep);
    return rc ? emit_failed(inst, rc, err) : COMPASS_OK;
}

int oai_wire_parse_stream_event(const oai_wire *inst, compass_req *req,
                                const compass_stream_event *ev, compass_upstream_error *uerr,
                                compass_err *err)
{
    compass_str data;
    int rc;
    if (!event_json(inst, req, ev, err, &data, &rc))
        return rc;
    rc = stream_event_scan(inst, req, ev, data, err);
    if (rc != OAI_WIRE_DECLINED)
        return rc;
    return stream_event_tree(inst, req, ev, data, uerr, err);
}

int oai_wire_parse_stream_event_full(const oai_wire *inst, compass_req *req,
                                     const compass_stream_event *ev,
                                     compass_upstream_error *uerr, compass_err *err)
{
    compass_str data;
    int rc;
    if (!event_json(inst, req, ev, err, &data, &rc))
        return rc;
    return stream_event_tree(inst, req, ev, data, uerr, err);
}

int oai_wire_parse_stream_event_fast(const oai_wire *inst, compass_req *req,
                                     const compass_stream_event *ev, compass_err *err)
{
    compass_str data;
    int rc;
    if (!event_json(inst, req, ev, err, &data, &rc))
        return rc;
    return stream_event_scan(inst, req, ev, data, err);
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response: the scanner reader first, the tree reader for what it leaves             */
/* ---------------------------------------------------------------------------------------- */

/* A number member as jint() reads it: 0 unless it is a number. */
static int scan_int(js_keep *keep, const js_val *v, int64_t *out)
{
    *out = 0;
    return v->type == JS_NUMBER ? js_int64(keep, v, out) : 0;
}

/* jint(jget(o, key->name)) for the object o that comes next in s, entered in place. */
static int scan_sub_int_in(json_scan *s, js_keep *keep, const js_key *key, int64_t *out)
{
    js_val m = {0};
    *out = 0;
    return js_members_k(s, key, &m, 1) || scan_int(keep, &m, out) ? -1 : 0;
}

/* read_usage() for the usage object that comes next in s, entered in place: each byte of it
 * is walked once. */
static int scan_usage_in(json_scan *s, js_keep *keep, compass_usage *out)
{
    enum { U_PROMPT, U_COMPLETION, U_TOTAL, U_CACHE_HIT, U_PROMPT_DETAILS, U_COMPLETION_DETAILS,
           U_N };
    static const js_key keys[U_N] = {
        JS_KEY("prompt_tokens"),           JS_KEY("completion_tokens"),
        JS_KEY("total_tokens"),            JS_KEY("prompt_cache_hit_tokens"),
        JS_KEY("prompt_tokens_details"),   JS_KEY("completion_tokens_details")};
    static const js_key cached = JS_KEY("cached_tokens"), reasoning = JS_KEY("reasoning_tokens");
    js_val m[U_N];
    int64_t cache_hit = 0;
    size_t i;
    int r;
    memset(out, 0, sizeof(*out));
    memset(m, 0, sizeof(m));
    if (js_begin(s, '{'))
        return -1;
    while ((r = js_member_key(s, keys, U_N, &i)) > 0) {
        if (i == U_N) {
            if (js_skip(s))
                return -1;
        } else if (m[i].type != JS_NONE) {
            return -1; /* json-c keeps the last one */
        } else if ((i == U_PROMPT_DETAILS || i == U_COMPLETION_DETAILS) &&
                   js_peek(s) == JS_OBJECT) {
            m[i].type = JS_OBJECT;
            if (i == U_PROMPT_DETAILS
                    ? scan_sub_int_in(s, keep, &cached, &out->cached_tokens)
                    : scan_sub_int_in(s, keep, &reasoning, &out->reasoning_tokens))
                return -1;
        } else if (js_value(s, &m[i])) {
            return -1;
        }
    }
    if (r < 0 || scan_int(keep, &m[U_PROMPT], &out->prompt_tokens) ||
        scan_int(keep, &m[U_COMPLETION], &out->completion_tokens) ||
        scan_int(keep, &m[U_TOTAL], &out->total_tokens) ||
        scan_int(keep, &m[U_CACHE_HIT], &cache_hit))
        return -1;
    usage_finish(out, cache_hit);
    return 0;
}

/* Reads a chat.completion body into r; -1 when the tree reader must take it (not strict
 * JSON, an error, a duplicate or escaped key, no choice 0 with a message object). */
static int scan_response(compass_str body, js_keep *keep, oai_reply *r)
{
    scan_top t;
    const scan_choice *c0 = &t.c0;
    const js_val *content = &t.c0.m[CM_CONTENT];

    memset(r, 0, sizeof(*r));
    if (scan_body(body, keep, &response_shape, &r->usage, &t) || !t.found ||
        c0->inner.type != JS_OBJECT)
        return -1;
    r->n_choices = t.n_choices;
    r->has_content = content->type == JS_STRING || content->type == JS_ARRAY;
    if (scan_str(keep, &t.m[TM_ID], &r->id) || scan_str(keep, &t.m[TM_MODEL], &r->model) ||
        scan_int(keep, &t.m[TM_EXTRA], &r->created) || scan_str(keep, content, &r->content) ||
        scan_tree(keep, content, JS_ARRAY, &r->parts) ||
        scan_str(keep, &c0->m[CM_REFUSAL], &r->refusal) ||
        scan_str(keep, &c0->finish, &r->finish) ||
        scan_tree(keep, &c0->m[CM_TOOL_CALLS], JS_ARRAY, &r->tool_calls) ||
        scan_tree(keep, &c0->m[CM_FUNCTION_CALL], JS_OBJECT, &r->function_call))
        return -1;
    return 0;
}

static int response_scan(const oai_wire *inst, compass_req *req,
                         const compass_http_response *resp, compass_chat_response *out,
                         compass_err *err)
{
    js_keep keep;
    oai_reply r;
    int rc;
    js_keep_init(&keep, OAI_JSON_DEPTH);
    if (scan_response(resp->body, &keep, &r)) {
        js_keep_release(&keep);
        return OAI_WIRE_DECLINED;
    }
    rc = fill_response(inst, req, &r, out, err);
    js_keep_release(&keep);
    return rc;
}

int oai_wire_parse_response(const oai_wire *inst, compass_req *req,
                            const compass_http_response *resp, compass_chat_response *out,
                            compass_upstream_error *uerr, compass_err *err)
{
    int rc = response_args_bad(inst, req, resp, out, err);
    if (!rc)
        rc = response_scan(inst, req, resp, out, err);
    return rc == OAI_WIRE_DECLINED ? response_tree(inst, req, resp, out, uerr, err) : rc;
}

int oai_wire_parse_response_full(const oai_wire *inst, compass_req *req,
                                 const compass_http_response *resp, compass_chat_response *out,
                                 compass_upstream_error *uerr, compass_err *err)
{
    int rc = response_args_bad(inst, req, resp, out, err);
    return rc ? rc : response_tree(inst, req, resp, out, uerr, err);
}

int oai_wire_parse_response_fast(const oai_wire *inst, compass_req *req,
                                 const compass_http_response *resp, compass_chat_response *out,
                                 compass_err *err)
{
    int rc = response_args_bad(inst, req, resp, out, err);
    return rc ? rc : response_scan(inst, req, resp, out, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Embeddings                                                                                */
/* ---------------------------------------------------------------------------------------- */

int oai_wire_build_embed(const oai_wire *inst, compass_req *req, const compass_embed_request *in,
                         const char *embeddings_url, compass_http_request *out, compass_err *err)
{
    const compass_host *h;
    compass_header *hs;
    size_t n_hs, i;
    compass_str body, url;
    jw w;
    int rc;

    if (!inst || !req || !in || !embeddings_url || !out)
        return err_fmt(err, COMPASS_EINVAL, "%s: build_embed_request: NULL argument",
                       PLUGIN_OF(inst));
    h = inst->h;
    memset(&w, 0, sizeof(w));
    w.h = h;
    jw_open(&w, '{');
    jw_kstr(&w, JW_K("model"), in->model);
    jw_key(&w, JW_K("input"));
    jw_open(&w, '[');
    for (i = 0; i < in->n_inputs; i++)
        jw_str(&w, in->inputs[i]);
    jw_close(&w, ']');
    if (in->dimensions > 0)
        jw_kint(&w, JW_K("dimensions"), in->dimensions);
    /* floats from upstream; the host re-encodes when the client asked for base64 */
    jw_kcstr(&w, JW_K("encoding_format"), "float");
    if (in->user.len)
        jw_kstr(&w, JW_K("user"), in->user);
    jw_close(&w, '}');
    if (w.failed) {
        h->free(h, w.p);
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory writing the request body",
                       inst->plugin);
    }
    body = h->req_strdup(req, w.p, w.len);
    h->free(h, w.p);
    url = h->req_strdup(req, embeddings_url, strlen(embeddings_url));
    if (!body.ptr || !url.ptr)
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
    if ((rc = build_headers(inst, req, &hs, &n_hs, err)))
        return rc;
    out->method = COMPASS_HTTP_POST;
    out->url = url;
    out->headers = hs;
    out->n_headers = n_hs;
    out->body = body;
    out->stream_format = COMPASS_STREAM_NONE;
    return COMPASS_OK;
}

int oai_wire_parse_embed_response(const oai_wire *inst, compass_req *req,
                                  const compass_http_response *resp,
                                  compass_embed_response *out, compass_upstream_error *uerr,
                                  compass_err *err)
{
    const compass_host *h = inst->h;
    char why[160];
    json_object *root = parse_json(resp->body.ptr, resp->body.len, why, sizeof(why));
    json_object *data, *e, *vec;
    size_t n, i, k, dim;
    int rc = COMPASS_OK;

    if (!root)
        return err_fmt(err, COMPASS_EPARSE, "%s: embeddings response is not JSON: %s",
                       inst->plugin, why);
    if (jget(root, "error")) {
        compass_http_response r2 = *resp;
        oai_wire_classify_error(inst, req, &r2, uerr);
        json_object_put(root);
        return COMPASS_EUPSTREAM;
    }
    data = jget(root, "data");
    if (!data || !json_object_is_type(data, json_type_array)) {
        json_object_put(root);
        return err_fmt(err, COMPASS_EPARSE, "%s: embeddings response has no data array",
                       inst->plugin);
    }
    n = json_object_array_length(data);
    out->data = h->req_alloc(req, (n ? n : 1) * sizeof(*out->data));
    if (!out->data) {
        json_object_put(root);
        return err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
    }
    memset(out->data, 0, (n ? n : 1) * sizeof(*out->data));
    for (i = 0; i < n && !rc; i++) {
        int64_t idx;
        float *vals;
        e = json_object_array_get_idx(data, i);
        vec = jget(e, "embedding");
        idx = jget(e, "index") ? jint(e, "index") : (int64_t)i;
        if (!vec || !json_object_is_type(vec, json_type_array) || idx < 0 || (size_t)idx >= n) {
            rc = err_fmt(err, COMPASS_EPARSE, "%s: data[%zu] has no float embedding",
                         inst->plugin, i);
            break;
        }
        dim = json_object_array_length(vec);
        vals = h->req_alloc(req, (dim ? dim : 1) * sizeof(*vals));
        if (!vals) {
            rc = err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
            break;
        }
        for (k = 0; k < dim; k++)
            vals[k] = (float)json_object_get_double(json_object_array_get_idx(vec, k));
        out->data[idx].values = vals;
        out->data[idx].n = dim;
    }
    if (!rc) {
        out->n_data = n;
        if (dup_str(h, req, jstr(root, "model"), &out->model))
            rc = err_fmt(err, COMPASS_ENOMEM, "%s: out of memory", inst->plugin);
        read_usage(jget(root, "usage"), &out->usage);
    }
    json_object_put(root);
    return rc;
}

