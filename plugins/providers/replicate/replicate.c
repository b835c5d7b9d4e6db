/*
 * replicate: a compass provider for language models on Replicate's predictions API.
 *
 * Pure translation: the canonical request (OpenAI chat completions) becomes a prediction's
 * "input" object (a flattened prompt, a system prompt and sampling fields named per model),
 * and a prediction, a stream event or a problem-details error body becomes the canonical
 * answer. The host owns all I/O. Wire facts follow Replicate's public HTTP API reference:
 *
 *   POST /v1/models/{owner}/{name}/predictions   official models ("owner/name")
 *   POST /v1/predictions {"version": id}          a model version ("owner/name:id" or "id")
 *   Prefer: wait=N                                hold the request up to N s (sync mode)
 *   prediction {id, model, version, status, output, error, urls{get,cancel,stream}, metrics}
 *   status starting | processing | succeeded | failed | canceled
 *   urls.stream: text/event-stream with events output (plain text), error (JSON {detail}),
 *                done (JSON {} or {"reason": "canceled" | "error"})
 *   errors: problem details {"title", "detail", "status"}
 *
 * Streaming takes two calls in one attempt: build_request creates the prediction with
 * "stream": true, and follow() turns the creation answer's urls.stream into a GET whose SSE
 * answer parse_stream_event reads.
 */
#include <compass/plugin.h>

#include <json-c/json.h>

#include "../common/json_util.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REPLICATE_DEFAULT_BASE_URL "https://api.replicate.com"
#define REPLICATE_JSON_DEPTH 128

/* ---------------------------------------------------------------------------------------- */
/* Options and instance                                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct replicate_options {
    int64_t wait_seconds;
    const char *prompt_field;
    const char *system_field;
    const char *max_tokens_field;
    const char *stop_field;
    const char *image_field;
    const char *template_name;
    const char *extra_input;
} replicate_options;

static const compass_option replicate_option_table[] = {
    {"wait_seconds", COMPASS_OPT_INT, "60", 0, offsetof(replicate_options, wait_seconds),
     "Prefer: wait=N on non-streamed calls: how long Replicate holds the request for the "
     "prediction to finish (1..60)"},
    {"prompt_field", COMPASS_OPT_STRING, "prompt", 0, offsetof(replicate_options, prompt_field),
     "input field that receives the flattened conversation"},
    {"system_field", COMPASS_OPT_STRING, "system_prompt", 0,
     offsetof(replicate_options, system_field),
     "input field for system/developer messages; empty puts them at the head of the prompt"},
    {"max_tokens_field", COMPASS_OPT_STRING, "max_tokens", 0,
     offsetof(replicate_options, max_tokens_field),
     "input field for max_tokens (some models use max_new_tokens); empty refuses max_tokens"},
    {"stop_field", COMPASS_OPT_STRING, "stop_sequences", 0,
     offsetof(replicate_options, stop_field),
     "input field for stop sequences, sent comma-joined; empty refuses stop"},
    {"image_field", COMPASS_OPT_STRING, NULL, 0, offsetof(replicate_options, image_field),
     "input field for one image URL (vision models); unset refuses images"},
    {"template", COMPASS_OPT_STRING, "transcript", 0, offsetof(replicate_options, template_name),
     "how messages become the prompt: transcript, single or chatml"},
    {"extra_input", COMPASS_OPT_STRING, NULL, 0, offsetof(replicate_options, extra_input),
     "JSON object merged into every input (mapped fields win), e.g. {\"prompt_template\":"
     "\"{prompt}\"}"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef enum tmpl {
    TMPL_TRANSCRIPT = 0, /* "User: ...\nAssistant: ...\nAssistant:" */
    TMPL_SINGLE = 1,     /* one user message, sent as is */
    TMPL_CHATML = 2      /* <|im_start|>role\n...<|im_end|> */
} tmpl;

typedef struct replicate {
    const compass_host *h;
    char *base;              /* base_url without a trailing '/'; h->alloc */
    const char *api_key;     /* NULL: no Authorization header. Never logged */
    int64_t wait_seconds;
    const char *prompt_field;
    const char *system_field;     /* NULL or empty: system text goes into the prompt */
    const char *max_tokens_field; /* NULL or empty: max_tokens refused */
    const char *stop_field;       /* NULL or empty: stop refused */
    const char *image_field;      /* NULL or empty: images refused */
    int tmpl;
    json_object *extra;      /* parsed extra_input, or NULL */
} replicate;

/* Per-attempt state in the request arena, found through h->req_data. */
typedef struct attempt_state {
    int stream;       /* build_request asked for a stream */
    int role_sent;    /* the role delta went out */
    int followed;     /* follow() described the stream call */
    int64_t max_tokens; /* the output cap asked for, 0 when none: tells a cut-off answer */
    char id[96];      /* the prediction's id */
} attempt_state;

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */
/* ---------------------------------------------------------------------------------------- */

static int oom(compass_err *err, const char *what)
{
    return fail(err, COMPASS_ENOMEM, "replicate: out of memory %s", what);
}

static int is_set(const char *s)
{
    return s && *s;
}

static void copy_cstr(char *dst, size_t cap, const char *s)
{
    compass_copy_fixed(dst, cap, compass_str_c(s));
}

static int dup_str(const replicate *r, compass_req *req, compass_str s, compass_str *out)
{
    if (s.len == 0) {
        out->ptr = NULL;
        out->len = 0;
        return 0;
    }
    *out = r->h->req_strdup(req, s.ptr, s.len);
    return out->ptr ? 0 : -1;
}

static compass_str req_dup(const replicate *r, compass_req *req, const char *s)
{
    return r->h->req_strdup(req, s, strlen(s));
}

/* The attempt's state; created on first use when create is set, else NULL when absent. */
static attempt_state *state_get(replicate *r, compass_req *req, int create, compass_err *err,
                                int *rc)
{
    void **slot;
    attempt_state *st;

    *rc = COMPASS_OK;
    if (!COMPASS_HOST_HAS(r->h, req_data)) {
        *rc = fail(err, COMPASS_EPLUGIN,
                   "replicate: the host has no req_data service for per-request state");
        return NULL;
    }
    slot = r->h->req_data(req);
    if (!slot) {
        *rc = fail(err, COMPASS_EINVAL, "replicate: req_data returned no slot");
        return NULL;
    }
    if (*slot || !create)
        return *slot;
    st = r->h->req_alloc(req, sizeof(*st));
    if (!st) {
        *rc = oom(err, "allocating request state");
        return NULL;
    }
    memset(st, 0, sizeof(*st));
    *slot = st;
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Error classification                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* The OpenAI error type and code a status implies. */
static void oa_type_code(int status, const char **type, const char **code)
{
    *code = "";
    switch (status) {
    case 400:
    case 413:
    case 422:
        *type = "invalid_request_error";
        break;
    case 401:
        *type = "authentication_error";
        *code = "invalid_api_key";
        break;
    case 402:
        *type = "insufficient_quota";
        *code = "billing_error";
        break;
    case 403:
        *type = "permission_error";
        break;
    case 404:
        *type = "not_found_error";
        *code = "model_not_found";
        break;
    case 429:
        *type = "rate_limit_error";
        *code = "rate_limit_exceeded";
        break;
    default:
        *type = status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
        break;
    }
}

static int outcome_of(int status)
{
    if (status == 402)
        return COMPASS_OUTCOME_AUTH; /* billing: this deployment cannot be used */
    return compass_outcome_from_status(status);
}

/* Replicate's throttling detail reads "... Expected available in N second(s)." */
static int64_t retry_from_detail(const char *detail)
{
    const char *p = detail ? strstr(detail, "available in ") : NULL;
    char *end;
    double secs;
    if (!p)
        return -1;
    p += strlen("available in ");
    if (*p < '0' || *p > '9')
        return -1;
    secs = strtod(p, &end);
    if (end == p || secs < 0 || secs > 86400.0)
        return -1;
    return (int64_t)(secs * 1000.0 + 0.5);
}

/* Fills u from a status and problem-details texts (title, detail may be NULL). */
static void uerr_fill(compass_upstream_error *u, int status, const char *title,
                      const char *detail)
{
    const char *type, *code;
    compass_uerr_init(u, outcome_of(status), status);
    oa_type_code(status, &type, &code);
    copy_cstr(u->type, sizeof(u->type), type);
    copy_cstr(u->code, sizeof(u->code), code);
    if (is_set(title) && is_set(detail) && strcmp(title, detail) != 0)
        snprintf(u->message, sizeof(u->message), "replicate: %s: %s", title, detail);
    else if (is_set(detail) || is_set(title))
        snprintf(u->message, sizeof(u->message), "replicate: %s", is_set(detail) ? detail : title);
    else
        snprintf(u->message, sizeof(u->message), "replicate: HTTP %d", status);
}

/* Fills u from a parsed problem-details body. Returns 0 when the body had that shape. */
static int uerr_from_problem(compass_upstream_error *u, int status, json_object *root)
{
    const char *detail = jgets(root, "detail"), *title = jgets(root, "title");
    int found, st;
    int64_t bst = jgeti(root, "status", &found);
    if (!detail && !title)
        return -1;
    st = status;
    if ((st == 0 || (st >= 200 && st < 300)) && found && bst >= 100 && bst <= 599)
        st = (int)bst; /* an error inside a 2xx answer: the body's status decides */
    uerr_fill(u, st, title, detail);
    if (st == 429)
        u->retry_after_ms = retry_from_detail(detail);
    return 0;
}

static void classify_error(void *inst, compass_req *req, const compass_http_response *resp,
                           compass_upstream_error *uerr)
{
    replicate *r = inst;
    json_object *root = NULL;
    compass_str ra;

    if (!uerr)
        return;
    if (!resp) {
        uerr_fill(uerr, 0, NULL, "no response");
        uerr->outcome = COMPASS_OUTCOME_RETRYABLE;
        return;
    }
    if (json_parse_n(resp->body.ptr, resp->body.len, REPLICATE_JSON_DEPTH, &root) != 0 ||
        uerr_from_problem(uerr, resp->status, root) != 0) {
        /* Not problem details (a proxy's HTML page, an empty 502): the status decides, and
         * a short piece of the body says what it was. */
        uerr_fill(uerr, resp->status, NULL, NULL);
        if (resp->body.len > 0 && !str_is_blank(resp->body))
            snprintf(uerr->message, sizeof(uerr->message), "replicate: HTTP %d: %.*s",
                     resp->status, STR_ARG(resp->body));
    }
    json_object_put(root);
    if (uerr->http_status == 0)
        uerr->outcome = COMPASS_OUTCOME_RETRYABLE;
    if (req && COMPASS_HOST_HAS(r->h, req_data)) {
        void **slot = r->h->req_data(req);
        attempt_state *st = slot ? *slot : NULL;
        if (st && st->followed) {
            /* The stream call failed, not the creation: a 404 there is a stream that is gone
             * (expired, served already), not an unknown model. */
            char m[sizeof(uerr->message)];
            if (uerr->outcome == COMPASS_OUTCOME_NOT_FOUND) {
                uerr->outcome = COMPASS_OUTCOME_RETRYABLE;
                copy_cstr(uerr->code, sizeof(uerr->code), "stream_unavailable");
            }
            snprintf(m, sizeof(m), "%s (the prediction's stream URL)", uerr->message);
            memcpy(uerr->message, m, sizeof(m));
        }
    }

    ra = compass_header_get(resp->headers, resp->n_headers, "retry-after");
    if (ra.len > 0) {
        int64_t ms = retry_after_ms(r ? r->h : NULL, ra);
        if (ms >= 0)
            uerr->retry_after_ms = ms;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Instances                                                                                */
/* ---------------------------------------------------------------------------------------- */

static int instance_new(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err)
{
    const replicate_options *o = info ? info->options : NULL;
    const char *base, *name, *tn;
    json_object *extra = NULL;
    replicate *r;
    size_t bl;
    int t;

    if (!h || !info || !inst)
        return fail(err, COMPASS_EINVAL, "replicate: instance_new: NULL argument");
    name = info->name ? info->name : "?";
    base = info->base_url && *info->base_url ? info->base_url : REPLICATE_DEFAULT_BASE_URL;
    if (strncasecmp(base, "https://", 8) != 0 && strncasecmp(base, "http://", 7) != 0)
        return fail(err, COMPASS_ECONFIG,
                    "replicate: deployment %s: base_url \"%s\" must start with https:// or "
                    "http://", name, base);
    if (o && (o->wait_seconds < 1 || o->wait_seconds > 60))
        return fail(err, COMPASS_ECONFIG,
                    "replicate: deployment %s: wait_seconds %lld is out of range: Replicate's "
                    "Prefer: wait takes 1 to 60 seconds", name, (long long)o->wait_seconds);
    if (o && !is_set(o->prompt_field))
        return fail(err, COMPASS_ECONFIG,
                    "replicate: deployment %s: prompt_field must not be empty", name);
    tn = o && is_set(o->template_name) ? o->template_name : "transcript";
    if (strcmp(tn, "transcript") == 0)
        t = TMPL_TRANSCRIPT;
    else if (strcmp(tn, "single") == 0)
        t = TMPL_SINGLE;
    else if (strcmp(tn, "chatml") == 0)
        t = TMPL_CHATML;
    else
        return fail(err, COMPASS_ECONFIG,
                    "replicate: deployment %s: template \"%s\" is unknown (transcript, single, "
                    "chatml)", name, tn);
    if (o && is_set(o->extra_input) &&
        (json_parse_n(o->extra_input, strlen(o->extra_input), REPLICATE_JSON_DEPTH, &extra) != 0 ||
         !json_object_is_type(extra, json_type_object))) {
        json_object_put(extra);
        return fail(err, COMPASS_ECONFIG,
                    "replicate: deployment %s: extra_input is not a JSON object", name);
    }

    r = h->alloc(h, sizeof(*r));
    if (!r) {
        json_object_put(extra);
        return oom(err, "creating the instance");
    }
    memset(r, 0, sizeof(*r));
    r->h = h;
    r->api_key = info->api_key;
    r->wait_seconds = o ? o->wait_seconds : 60;
    r->prompt_field = o ? o->prompt_field : "prompt";
    r->system_field = o ? o->system_field : "system_prompt";
    r->max_tokens_field = o ? o->max_tokens_field : "max_tokens";
    r->stop_field = o ? o->stop_field : "stop_sequences";
    r->image_field = o ? o->image_field : NULL;
    r->tmpl = t;
    r->extra = extra;

    bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    r->base = h->alloc(h, bl + 1);
    if (!r->base) {
        json_object_put(extra);
        h->free(h, r);
        return oom(err, "creating the instance");
    }
    memcpy(r->base, base, bl);
    r->base[bl] = '\0';
    *inst = r;
    return COMPASS_OK;
}

static void instance_free(void *inst)
{
    replicate *r = inst;
    if (!r)
        return;
    json_object_put(r->extra);
    r->h->free(r->h, r->base);
    r->h->free(r->h, r);
}

/* ---------------------------------------------------------------------------------------- */
/* build_request                                                                            */
/* ---------------------------------------------------------------------------------------- */

/* A growing text in the request arena. */
typedef struct tbuf {
    replicate *r;
    compass_req *req;
    char *p;
    size_t n, cap;
    int failed;
} tbuf;

static void tb_add(tbuf *b, const char *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        np = b->r->h->req_alloc(b->req, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        if (b->n)
            memcpy(np, b->p, b->n);
        b->p = np; /* the old block stays in the arena until the request ends */
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void tb_str(tbuf *b, compass_str s)
{
    tb_add(b, s.ptr, s.len);
}

static void tb_c(tbuf *b, const char *s)
{
    tb_add(b, s, strlen(s));
}

static compass_str tb_get(const tbuf *b)
{
    compass_str s;
    s.ptr = b->p ? b->p : "";
    s.len = b->n;
    return s;
}

static int is_system(const compass_message *m)
{
    return m->role == COMPASS_ROLE_SYSTEM || m->role == COMPASS_ROLE_DEVELOPER;
}

/* Checks the messages for what a prompt cannot carry and finds the one image, if any. */
static int check_messages(replicate *r, const compass_chat_request *in, compass_str *image,
                          compass_err *err)
{
    size_t i, k;
    image->ptr = NULL;
    image->len = 0;
    for (i = 0; i < in->n_messages; i++) {
        const compass_message *m = &in->messages[i];
        if (m->role == COMPASS_ROLE_TOOL)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "replicate: messages[%zu]: tool messages are not supported: language "
                        "models on Replicate have no tool calling", i);
        if (m->n_tool_calls > 0)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "replicate: messages[%zu].tool_calls is not supported: language models "
                        "on Replicate have no tool calling", i);
        if (!is_system(m) && m->role != COMPASS_ROLE_USER && m->role != COMPASS_ROLE_ASSISTANT)
            return fail(err, COMPASS_EUNSUPPORTED, "replicate: messages[%zu]: unsupported role %d",
                        i, m->role);
        for (k = 0; m->parts && k < m->n_parts; k++) {
            const compass_content_part *p = &m->parts[k];
            if (p->type == COMPASS_PART_TEXT)
                continue;
            if (p->type != COMPASS_PART_IMAGE_URL)
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: messages[%zu].content[%zu]: unsupported content part "
                            "type %d", i, k, p->type);
            if (!is_set(r->image_field))
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: messages[%zu].content[%zu]: image_url is not supported "
                            "by this deployment (set the image_field option for a vision "
                            "model)", i, k);
            if (m->role != COMPASS_ROLE_USER)
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: messages[%zu].content[%zu]: image_url only in user "
                            "messages", i, k);
            if (image->len)
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: messages[%zu].content[%zu]: image_url: only one image "
                            "per request fits the model's %s input", i, k, r->image_field);
            if (!str_has_prefix(p->url, "https://") && !str_has_prefix(p->url, "http://") &&
                !str_has_prefix(p->url, "data:"))
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: messages[%zu].content[%zu].image_url: only http(s) and "
                            "data: URLs are supported", i, k);
            *image = p->url;
        }
    }
    return COMPASS_OK;
}

/* The conversation as the prompt, per the template; system text into *sys when it has a
 * field of its own. */
static int build_prompt(replicate *r, compass_req *req, const compass_chat_request *in,
                        compass_str *prompt, compass_str *sys, compass_err *err)
{
    tbuf p = {r, req, NULL, 0, 0, 0}, s = {r, req, NULL, 0, 0, 0};
    int sys_own = is_set(r->system_field);
    size_t i, n_turns = 0, n_user = 0;

    for (i = 0; i < in->n_messages; i++) {
        const compass_message *m = &in->messages[i];
        if (is_system(m)) {
            if (m->content.len == 0)
                continue;
            if (s.n)
                tb_c(&s, "\n\n");
            tb_str(&s, m->content);
        } else {
            n_turns++;
            if (m->role == COMPASS_ROLE_USER)
                n_user++;
        }
    }
    if (n_turns == 0)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: messages: no user message to make a prompt from");

    switch (r->tmpl) {
    case TMPL_SINGLE:
        if (n_turns != 1 || n_user != 1)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "replicate: messages: the single template sends one user message, and "
                        "the request has %zu user/assistant turns", n_turns);
        if (!sys_own && s.n) {
            tb_str(&p, tb_get(&s));
            tb_c(&p, "\n\n");
        }
        for (i = 0; i < in->n_messages; i++)
            if (in->messages[i].role == COMPASS_ROLE_USER)
                tb_str(&p, in->messages[i].content);
        break;
    case TMPL_CHATML:
        if (!sys_own && s.n) {
            tb_c(&p, "<|im_start|>system\n");
            tb_str(&p, tb_get(&s));
            tb_c(&p, "<|im_end|>\n");
        }
        for (i = 0; i < in->n_messages; i++) {
            const compass_message *m = &in->messages[i];
            if (is_system(m))
                continue;
            tb_c(&p, m->role == COMPASS_ROLE_USER ? "<|im_start|>user\n"
                                                  : "<|im_start|>assistant\n");
            tb_str(&p, m->content);
            tb_c(&p, "<|im_end|>\n");
        }
        tb_c(&p, "<|im_start|>assistant\n");
        break;
    default:
        if (!sys_own && s.n) {
            tb_str(&p, tb_get(&s));
            tb_c(&p, "\n\n");
        }
        for (i = 0; i < in->n_messages; i++) {
            const compass_message *m = &in->messages[i];
            if (is_system(m))
                continue;
            tb_c(&p, m->role == COMPASS_ROLE_USER ? "User: " : "Assistant: ");
            tb_str(&p, m->content);
            tb_c(&p, "\n");
        }
        tb_c(&p, "Assistant:");
        break;
    }
    if (p.failed || s.failed)
        return oom(err, "building the prompt");
    *prompt = tb_get(&p);
    if (sys_own) {
        *sys = tb_get(&s);
    } else {
        sys->ptr = NULL;
        sys->len = 0;
    }
    return COMPASS_OK;
}

/* Parameters Replicate's language models cannot honour: refuse rather than silently drop. */
static int check_unsupported(replicate *r, const compass_chat_request *in, compass_err *err)
{
    if (in->n_tools > 0)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: tools are not supported: language models on Replicate have no "
                    "tool calling");
    if (in->tool_choice == COMPASS_TOOL_CHOICE_REQUIRED ||
        in->tool_choice == COMPASS_TOOL_CHOICE_FUNCTION)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: tool_choice is not supported: language models on Replicate "
                    "have no tool calling");
    if ((in->set & COMPASS_SET_N) && in->n > 1)
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: n=%lld is not supported: a prediction returns one output",
                    (long long)in->n);
    if (in->response_format.len > 0 && !str_is_blank(in->response_format)) {
        json_object *rf = NULL;
        const char *t;
        int rc = COMPASS_OK;
        if (json_parse_n(in->response_format.ptr, in->response_format.len, REPLICATE_JSON_DEPTH,
                         &rf) != 0)
            return fail(err, COMPASS_EUNSUPPORTED, "replicate: response_format: not valid JSON");
        t = jgets(rf, "type");
        if (streq(t, "json_schema"))
            rc = fail(err, COMPASS_EUNSUPPORTED,
                      "replicate: response_format json_schema is not supported: a prompt-only "
                      "model cannot guarantee output matching the schema");
        else if (!streq(t, "text") && !streq(t, "json_object"))
            rc = fail(err, COMPASS_EUNSUPPORTED,
                      "replicate: response_format type \"%s\" is not supported",
                      t ? t : "(none)");
        json_object_put(rf);
        if (rc)
            return rc;
    }
    if (in->reasoning_effort.len > 0 && !compass_str_eq(in->reasoning_effort, "none"))
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: reasoning_effort is not supported by prompt-based models");
    if ((in->set & (COMPASS_SET_MAX_TOKENS | COMPASS_SET_MAX_COMPLETION_TOKENS)) &&
        !is_set(r->max_tokens_field))
        return fail(err, COMPASS_EUNSUPPORTED,
                    "replicate: max_tokens is not supported by this deployment (no "
                    "max_tokens_field)");
    if (in->n_stop > 0) {
        size_t i;
        if (!is_set(r->stop_field))
            return fail(err, COMPASS_EUNSUPPORTED,
                        "replicate: stop is not supported by this deployment (no stop_field)");
        for (i = 0; i < in->n_stop; i++)
            if (memchr(in->stop[i].ptr, ',', in->stop[i].len))
                return fail(err, COMPASS_EUNSUPPORTED,
                            "replicate: stop[%zu] contains a comma, which the comma-joined %s "
                            "input cannot carry", i, r->stop_field);
    }
    return COMPASS_OK;
}

/* Where the prediction is created: "owner/name" → the model's endpoint; "owner/name:version"
 * or a bare version id → /v1/predictions with "version". */
static int model_target(replicate *r, compass_req *req, compass_str model, compass_str *url,
                        compass_str *version, compass_err *err)
{
    const char *colon = model.len ? memchr(model.ptr, ':', model.len) : NULL;
    const char *slash;
    tbuf u = {r, req, NULL, 0, 0, 0};
    size_t i;

    version->ptr = NULL;
    version->len = 0;
    for (i = 0; i < model.len; i++) {
        char c = model.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '/' || c == ':'))
            return fail(err, COMPASS_EINVAL,
                        "replicate: model \"%.*s\" has a character not allowed in a Replicate "
                        "model name", STR_ARG(model));
    }
    tb_c(&u, r->base);
    if (colon || !memchr(model.ptr, '/', model.len)) {
        version->ptr = colon ? colon + 1 : model.ptr;
        version->len = colon ? model.len - (size_t)(colon + 1 - model.ptr) : model.len;
        if (version->len == 0 || memchr(version->ptr, ':', version->len) ||
            memchr(version->ptr, '/', version->len))
            return fail(err, COMPASS_EINVAL,
                        "replicate: model \"%.*s\" is not owner/name, owner/name:version or a "
                        "version id", STR_ARG(model));
        tb_c(&u, "/v1/predictions");
    } else {
        slash = memchr(model.ptr, '/', model.len);
        if (slash == model.ptr || slash == model.ptr + model.len - 1 ||
            memchr(slash + 1, '/', model.len - (size_t)(slash + 1 - model.ptr)))
            return fail(err, COMPASS_EINVAL,
                        "replicate: model \"%.*s\" is not owner/name, owner/name:version or a "
                        "version id", STR_ARG(model));
        tb_c(&u, "/v1/models/");
        tb_str(&u, model);
        tb_c(&u, "/predictions");
    }
    if (u.failed)
        return oom(err, "building the URL");
    *url = tb_get(&u);
    return COMPASS_OK;
}

static int build_input(replicate *r, compass_req *req, const compass_chat_request *in,
                       json_object *input, compass_err *err)
{
    compass_str prompt = {NULL, 0}, sys = {NULL, 0}, image = {NULL, 0};
    int rc;

    rc = check_messages(r, in, &image, err);
    if (rc)
        return rc;
    rc = build_prompt(r, req, in, &prompt, &sys, err);
    if (rc)
        return rc;
    if (r->extra) {
        json_object_object_foreach(r->extra, k, v)
        {
            if (jset(input, k, json_object_get(v)))
                return oom(err, "building the input");
        }
    }
    if (jset(input, r->prompt_field, jstr(prompt)))
        return oom(err, "building the input");
    if (sys.len > 0 && jset(input, r->system_field, jstr(sys)))
        return oom(err, "building the input");
    if (image.len > 0 && jset(input, r->image_field, jstr(image)))
        return oom(err, "building the input");
    if (in->set & (COMPASS_SET_MAX_TOKENS | COMPASS_SET_MAX_COMPLETION_TOKENS)) {
        int64_t mt = (in->set & COMPASS_SET_MAX_COMPLETION_TOKENS) ? in->max_completion_tokens
                                                                   : in->max_tokens;
        if (mt < 1)
            return fail(err, COMPASS_EUNSUPPORTED,
                        "replicate: max_tokens %lld is not supported: it must be at least 1",
                        (long long)mt);
        if (jset(input, r->max_tokens_field, json_object_new_int64(mt)))
            return oom(err, "building the input");
    }
    if ((in->set & COMPASS_SET_TEMPERATURE) && jset(input, "temperature", jdouble(in->temperature)))
        return oom(err, "building the input");
    if ((in->set & COMPASS_SET_TOP_P) && jset(input, "top_p", jdouble(in->top_p)))
        return oom(err, "building the input");
    if ((in->set & COMPASS_SET_SEED) && jset(input, "seed", json_object_new_int64(in->seed)))
        return oom(err, "building the input");
    if ((in->set & COMPASS_SET_PRESENCE_PENALTY) && in->presence_penalty != 0.0 &&
        jset(input, "presence_penalty", jdouble(in->presence_penalty)))
        return oom(err, "building the input");
    if ((in->set & COMPASS_SET_FREQUENCY_PENALTY) && in->frequency_penalty != 0.0 &&
        jset(input, "frequency_penalty", jdouble(in->frequency_penalty)))
        return oom(err, "building the input");
    if (in->n_stop > 0) {
        tbuf s = {r, req, NULL, 0, 0, 0};
        size_t i;
        for (i = 0; i < in->n_stop; i++) {
            if (i)
                tb_c(&s, ",");
            tb_str(&s, in->stop[i]);
        }
        if (s.failed || jset(input, r->stop_field, jstr(tb_get(&s))))
            return oom(err, "building the input");
    }
    return COMPASS_OK;
}

static int set_header(compass_header *hd, const char *name, compass_str value)
{
    hd->name = compass_str_c(name);
    hd->value = value;
    return value.ptr ? 0 : -1;
}

/* "Bearer <token>" in the arena. */
static compass_str bearer(replicate *r, compass_req *req)
{
    tbuf b = {r, req, NULL, 0, 0, 0};
    compass_str none = {NULL, 0};
    tb_c(&b, "Bearer ");
    tb_c(&b, r->api_key);
    return b.failed ? none : tb_get(&b);
}

static int build_request(void *inst, compass_req *req, const compass_chat_request *in,
                         compass_http_request *out, compass_err *err)
{
    replicate *r = inst;
    json_object *root, *input;
    compass_str url, version, body;
    compass_header *hs;
    attempt_state *st;
    const char *text;
    char prefer[32];
    size_t n = 0;
    int rc;

    if (!r || !req || !in || !out)
        return fail(err, COMPASS_EINVAL, "replicate: build_request: NULL argument");
    if (in->model.len == 0)
        return fail(err, COMPASS_EINVAL, "replicate: build_request: no model");
    rc = check_unsupported(r, in, err);
    if (rc)
        return rc;
    rc = model_target(r, req, in->model, &url, &version, err);
    if (rc)
        return rc;

    root = json_object_new_object();
    input = json_object_new_object();
    if (!root || !input) {
        json_object_put(root);
        json_object_put(input);
        return oom(err, "building the request");
    }
    if (jset(root, "input", input)) {
        json_object_put(root);
        return oom(err, "building the request");
    }
    rc = build_input(r, req, in, input, err);
    if (!rc && version.len > 0 && jset(root, "version", jstr(version)))
        rc = oom(err, "building the request");
    if (!rc && in->stream && jset(root, "stream", json_object_new_boolean(1)))
        rc = oom(err, "building the request");
    if (rc) {
        json_object_put(root);
        return rc;
    }
    text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                    JSON_C_TO_STRING_NOSLASHESCAPE);
    body = text ? r->h->req_strdup(req, text, strlen(text)) : (compass_str){NULL, 0};
    json_object_put(root);
    if (!body.ptr)
        return oom(err, "building the request");

    /* Remember what this attempt asked for: follow() and the parsers read it. */
    st = state_get(r, req, 1, err, &rc);
    if (!st)
        return rc;
    st->stream = in->stream ? 1 : 0;
    st->max_tokens = (in->set & COMPASS_SET_MAX_COMPLETION_TOKENS) ? in->max_completion_tokens
                     : (in->set & COMPASS_SET_MAX_TOKENS)         ? in->max_tokens
                                                                  : 0;

    hs = r->h->req_alloc(req, 3 * sizeof(*hs));
    if (!hs)
        return oom(err, "building the request");
    if (set_header(&hs[n++], "content-type", compass_str_c("application/json")))
        return oom(err, "building the request");
    if (is_set(r->api_key) && set_header(&hs[n++], "authorization", bearer(r, req)))
        return oom(err, "building the request");
    if (!in->stream) {
        /* Sync mode: Replicate holds the request until the prediction ends or the wait runs
         * out. A stream is created without it, so the stream URL comes back at once. */
        snprintf(prefer, sizeof(prefer), "wait=%lld", (long long)r->wait_seconds);
        if (set_header(&hs[n++], "prefer", req_dup(r, req, prefer)))
            return oom(err, "building the request");
    }

    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->method = COMPASS_HTTP_POST;
    out->url = url;
    out->headers = hs;
    out->n_headers = n;
    out->body = body;
    /* The creation answer is one JSON body even for a stream; follow() reads it. */
    out->stream_format = COMPASS_STREAM_NONE;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_response                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Joins a prediction's output (a string, an array of strings, or null) into the arena. */
static int output_text(replicate *r, compass_req *req, json_object *output, compass_str *out,
                       int *has, compass_err *err)
{
    tbuf b = {r, req, NULL, 0, 0, 0};
    size_t i, n;

    *has = 0;
    out->ptr = NULL;
    out->len = 0;
    if (!output)
        return COMPASS_OK;
    if (json_object_is_type(output, json_type_string)) {
        *has = 1;
        tb_add(&b, json_object_get_string(output), (size_t)json_object_get_string_len(output));
    } else if (json_object_is_type(output, json_type_array)) {
        *has = 1;
        n = json_object_array_length(output);
        for (i = 0; i < n; i++) {
            json_object *v = json_object_array_get_idx(output, i);
            if (!v)
                continue;
            if (!json_object_is_type(v, json_type_string))
                return fail(err, COMPASS_EPARSE,
                            "replicate: output[%zu] is not text: this is not a language model's "
                            "output", i);
            tb_add(&b, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        }
    } else {
        return fail(err, COMPASS_EPARSE,
                    "replicate: output is neither text nor an array of text: this is not a "
                    "language model's output");
    }
    if (b.failed)
        return oom(err, "parsing the response");
    if (b.n)
        *out = tb_get(&b);
    return COMPASS_OK;
}

/* Fills u for a prediction that did not succeed. */
static void uerr_prediction(compass_upstream_error *u, const char *status, const char *id,
                            const char *error, int64_t wait_seconds, int stream)
{
    compass_uerr_init(u, COMPASS_OUTCOME_RETRYABLE, 502);
    copy_cstr(u->type, sizeof(u->type), "server_error");
    if (streq(status, "failed")) {
        copy_cstr(u->code, sizeof(u->code), "prediction_failed");
        snprintf(u->message, sizeof(u->message), "replicate: prediction %s failed: %s",
                 id ? id : "?", is_set(error) ? error : "(no error given)");
    } else if (streq(status, "canceled")) {
        copy_cstr(u->code, sizeof(u->code), "prediction_canceled");
        snprintf(u->message, sizeof(u->message), "replicate: prediction %s was canceled%s%s",
                 id ? id : "?", is_set(error) ? ": " : "", is_set(error) ? error : "");
    } else if (stream) {
        /* A stream was asked for, and the answer has no stream URL. */
        copy_cstr(u->code, sizeof(u->code), "stream_unavailable");
        snprintf(u->message, sizeof(u->message),
                 "replicate: prediction %s is %s and has no stream URL: the model does not "
                 "support streaming", id ? id : "?", status);
    } else {
        u->http_status = 504;
        copy_cstr(u->code, sizeof(u->code), "timeout");
        snprintf(u->message, sizeof(u->message),
                 "replicate: prediction %s is still %s: the Prefer: wait=%lld window ran out "
                 "before it finished", id ? id : "?", status, (long long)wait_seconds);
    }
}

static int parse_response(void *inst, compass_req *req, const compass_http_response *resp,
                          compass_chat_response *out, compass_upstream_error *uerr,
                          compass_err *err)
{
    replicate *r = inst;
    json_object *root = NULL, *metrics;
    compass_upstream_error tmp;
    compass_upstream_error *u = uerr ? uerr : &tmp;
    attempt_state *st;
    const char *status, *id;
    int rc, found_in, found_out, stream;
    int64_t tin, tout;

    if (!r || !req || !resp || !out)
        return fail(err, COMPASS_EINVAL, "replicate: parse_response: NULL argument");
    st = state_get(r, req, 0, err, &rc);
    if (rc)
        return rc;
    stream = st ? st->stream : 0;
    if (json_parse_n(resp->body.ptr, resp->body.len, REPLICATE_JSON_DEPTH, &root) != 0 ||
        !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return fail(err, COMPASS_EPARSE, "replicate: response body is not a JSON object");
    }
    status = jgets(root, "status");
    if (!status) {
        if (uerr_from_problem(u, resp->status, root) == 0) {
            rc = fail(err, COMPASS_EUPSTREAM, "%s", u->message);
            json_object_put(root);
            return rc;
        }
        json_object_put(root);
        return fail(err, COMPASS_EPARSE, "replicate: response is not a prediction (no status)");
    }
    id = jgets(root, "id");
    if (!streq(status, "succeeded")) {
        if (!streq(status, "failed") && !streq(status, "canceled") &&
            !streq(status, "starting") && !streq(status, "processing")) {
            rc = fail(err, COMPASS_EPARSE, "replicate: prediction status \"%s\" is unknown",
                      status);
            json_object_put(root);
            return rc;
        }
        uerr_prediction(u, status, id, jgets(root, "error"), r->wait_seconds, stream);
        rc = fail(err, COMPASS_EUPSTREAM, "%s", u->message);
        json_object_put(root);
        return rc;
    }

    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    rc = output_text(r, req, jget(root, "output"), &out->content, &out->has_content, err);
    if (rc) {
        json_object_put(root);
        return rc;
    }
    if (dup_str(r, req, jgetstr(root, "id"), &out->id) ||
        dup_str(r, req, jgetstr(root, "model"), &out->model)) {
        json_object_put(root);
        return oom(err, "parsing the response");
    }
    out->finish_reason = COMPASS_FINISH_STOP;
    metrics = jget(root, "metrics");
    tin = jgeti(metrics, "input_token_count", &found_in);
    tout = jgeti(metrics, "output_token_count", &found_out);
    if (found_in || found_out) {
        out->usage.present = 1;
        out->usage.prompt_tokens = tin;
        out->usage.completion_tokens = tout;
        out->usage.total_tokens = tin + tout;
    }
    {
        /* Replicate reports no stop reason: an answer as long as the cap was cut by it */
        int src;
        attempt_state *as = state_get(r, req, 0, err, &src);
        if (as && as->max_tokens > 0 && found_out && tout >= as->max_tokens)
            out->finish_reason = COMPASS_FINISH_LENGTH;
    }
    json_object_put(root);
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* follow: the stream URL                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* The scheme://host[:port] prefix length of url, or 0 when it has none. */
static size_t origin_len(compass_str url)
{
    size_t i = 0;
    if (str_has_prefix(url, "https://"))
        i = 8;
    else if (str_has_prefix(url, "http://"))
        i = 7;
    else
        return 0;
    while (i < url.len && url.ptr[i] != '/' && url.ptr[i] != '?' && url.ptr[i] != '#')
        i++;
    return i;
}

/* Whether the host of url is replicate.com or one of its subdomains (over https). */
static int is_replicate_host(compass_str url)
{
    static const char dom[] = "replicate.com";
    size_t end = origin_len(url), start, hl, dl = sizeof(dom) - 1, k;
    if (!end || !str_has_prefix(url, "https://"))
        return 0;
    start = 8;
    hl = end - start;
    for (k = start; k < end; k++)
        if (url.ptr[k] == ':' || url.ptr[k] == '@')
            return 0; /* a port or userinfo: not the plain public host */
    if (hl < dl || strncasecmp(url.ptr + end - dl, dom, dl) != 0)
        return 0;
    return hl == dl || url.ptr[end - dl - 1] == '.';
}

/* The token goes only where the creation call went, or to Replicate's own hosts. */
static int send_token_to(const replicate *r, compass_str url)
{
    compass_str base = compass_str_c(r->base);
    size_t ol = origin_len(url), bl = origin_len(base);
    if (ol && ol == bl && strncasecmp(url.ptr, base.ptr, ol) == 0)
        return 1;
    return is_replicate_host(url);
}

static int follow(void *inst, compass_req *req, const compass_http_response *resp,
                  compass_http_request *out, compass_err *err)
{
    replicate *r = inst;
    json_object *root = NULL;
    compass_header *hs;
    compass_str surl, url;
    attempt_state *st;
    const char *status, *id;
    size_t n = 0, i;
    int rc;

    if (!r || !req || !resp || !out)
        return fail(err, COMPASS_EINVAL, "replicate: follow: NULL argument");
    st = state_get(r, req, 0, err, &rc);
    if (rc)
        return rc;
    if (!st || !st->stream || st->followed)
        return COMPASS_ENOTFOUND; /* not a stream, or the stream call's answer itself */
    if (json_parse_n(resp->body.ptr, resp->body.len, REPLICATE_JSON_DEPTH, &root) != 0 ||
        !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return COMPASS_ENOTFOUND; /* parse_response says what is wrong with it */
    }
    status = jgets(root, "status");
    surl = jgetstr(jget(root, "urls"), "stream");
    if (!streq(status, "starting") && !streq(status, "processing")) {
        /* Already over (failed, canceled, or succeeded in one go): the body says it all. */
        json_object_put(root);
        return COMPASS_ENOTFOUND;
    }
    if (surl.len == 0) {
        json_object_put(root);
        return COMPASS_ENOTFOUND;
    }
    for (i = 0; i < surl.len; i++) {
        if ((unsigned char)surl.ptr[i] <= ' ' || surl.ptr[i] == 0x7f) {
            json_object_put(root);
            return fail(err, COMPASS_EPARSE,
                        "replicate: the prediction's stream URL has a control character or "
                        "space");
        }
    }
    if (!str_has_prefix(surl, "https://") &&
        !(str_has_prefix(surl, "http://") && strncasecmp(r->base, "http://", 7) == 0)) {
        rc = fail(err, COMPASS_EPARSE,
                  "replicate: the prediction's stream URL \"%.*s\" is not https:// (http:// is "
                  "only followed when base_url is http://)", STR_ARG(surl));
        json_object_put(root);
        return rc;
    }
    id = jgets(root, "id");
    if (id)
        copy_cstr(st->id, sizeof(st->id), id);
    url = r->h->req_strdup(req, surl.ptr, surl.len);
    json_object_put(root);
    if (!url.ptr)
        return oom(err, "describing the stream call");

    hs = r->h->req_alloc(req, 3 * sizeof(*hs));
    if (!hs)
        return oom(err, "describing the stream call");
    if (set_header(&hs[n++], "accept", compass_str_c("text/event-stream")) ||
        set_header(&hs[n++], "cache-control", compass_str_c("no-store")))
        return oom(err, "describing the stream call");
    if (is_set(r->api_key) && send_token_to(r, url) &&
        set_header(&hs[n++], "authorization", bearer(r, req)))
        return oom(err, "describing the stream call");

    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->method = COMPASS_HTTP_GET;
    out->url = url;
    out->headers = hs;
    out->n_headers = n;
    out->stream_format = COMPASS_STREAM_SSE;
    st->followed = 1;
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* parse_stream_event                                                                       */
/* ---------------------------------------------------------------------------------------- */

static int emit(replicate *r, compass_req *req, const compass_chat_delta *d, compass_err *err)
{
    int rc = r->h->stream_emit(req, d);
    if (rc < 0)
        return fail(err, rc, "replicate: stream_emit failed (%d)", rc);
    return COMPASS_OK;
}

/* The role delta, once per attempt. */
static int emit_role(replicate *r, compass_req *req, attempt_state *st, compass_err *err)
{
    compass_chat_delta d;
    int rc;
    if (st->role_sent)
        return COMPASS_OK;
    compass_delta_init(&d);
    d.role = COMPASS_ROLE_ASSISTANT;
    d.id = compass_str_c(st->id[0] ? st->id : NULL);
    rc = emit(r, req, &d, err);
    if (!rc)
        st->role_sent = 1;
    return rc;
}

static int on_error_event(replicate *r, const compass_stream_event *ev,
                          compass_upstream_error *uerr, compass_err *err)
{
    compass_upstream_error tmp;
    compass_upstream_error *u = uerr ? uerr : &tmp;
    json_object *root = NULL;
    const char *detail = NULL;
    (void)r;

    compass_uerr_init(u, COMPASS_OUTCOME_RETRYABLE, 502);
    copy_cstr(u->type, sizeof(u->type), "server_error");
    copy_cstr(u->code, sizeof(u->code), "prediction_failed");
    if (json_parse_n(ev->data.ptr, ev->data.len, REPLICATE_JSON_DEPTH, &root) == 0)
        detail = jgets(root, "detail");
    if (detail && *detail)
        snprintf(u->message, sizeof(u->message), "replicate: stream error: %s", detail);
    else if (!root && !str_is_blank(ev->data))
        snprintf(u->message, sizeof(u->message), "replicate: stream error: %.*s",
                 STR_ARG(ev->data));
    else
        snprintf(u->message, sizeof(u->message), "replicate: stream error without detail");
    json_object_put(root);
    return fail(err, COMPASS_EUPSTREAM, "%s", u->message);
}

static int on_done_event(replicate *r, compass_req *req, attempt_state *st,
                         const compass_stream_event *ev, compass_upstream_error *uerr,
                         compass_err *err)
{
    json_object *root = NULL;
    const char *reason = NULL;
    compass_chat_delta d;
    int rc;

    if (!str_is_blank(ev->data)) {
        if (json_parse_n(ev->data.ptr, ev->data.len, REPLICATE_JSON_DEPTH, &root) != 0 ||
            (root && !json_object_is_type(root, json_type_object))) {
            json_object_put(root);
            return fail(err, COMPASS_EPARSE, "replicate: done event: data is not a JSON object");
        }
        reason = jgets(root, "reason");
    }
    if (is_set(reason)) {
        compass_upstream_error tmp;
        uerr_prediction(uerr ? uerr : &tmp, streq(reason, "canceled") ? "canceled" : "failed",
                        st->id[0] ? st->id : NULL,
                        streq(reason, "canceled") ? NULL : reason, 0, 1);
        rc = fail(err, COMPASS_EUPSTREAM, "%s", (uerr ? uerr : &tmp)->message);
        json_object_put(root);
        return rc;
    }
    json_object_put(root);
    rc = emit_role(r, req, st, err);
    if (rc)
        return rc;
    compass_delta_init(&d);
    d.finish_reason = COMPASS_FINISH_STOP;
    rc = emit(r, req, &d, err);
    return rc ? rc : COMPASS_STREAM_END;
}

static int parse_stream_event(void *inst, compass_req *req, const compass_stream_event *ev,
                              compass_upstream_error *uerr, compass_err *err)
{
    replicate *r = inst;
    attempt_state *st;
    compass_chat_delta d;
    int rc;

    if (!r || !req || !ev)
        return fail(err, COMPASS_EINVAL, "replicate: parse_stream_event: NULL argument");
    st = state_get(r, req, 1, err, &rc);
    if (!st)
        return rc;
    if (compass_str_eq(ev->event, "output")) {
        /* Plain text, not JSON: a token or a chunk, newlines arrive as extra data lines. */
        rc = emit_role(r, req, st, err);
        if (rc || ev->data.len == 0)
            return rc;
        compass_delta_init(&d);
        d.content = ev->data;
        return emit(r, req, &d, err);
    }
    if (compass_str_eq(ev->event, "done"))
        return on_done_event(r, req, st, ev, uerr, err);
    if (compass_str_eq(ev->event, "error"))
        return on_error_event(r, ev, uerr, err);
    /* Replicate may add event types: skip what we do not know. */
    if (r->h->log)
        r->h->log(r->h, COMPASS_LOG_DEBUG, "ignoring stream event \"%.*s\"", STR_ARG(ev->event));
    return COMPASS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                               */
/* ---------------------------------------------------------------------------------------- */

static const compass_provider_ops replicate_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = instance_new,
    .instance_free = instance_free,
    .build_request = build_request,
    .parse_response = parse_response,
    .parse_stream_event = parse_stream_event,
    .classify_error = classify_error,
    .local_call = NULL,
    .follow = follow,
};

static const compass_plugin_desc replicate_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "replicate",
    .version = "1.0.0",
    .summary = "Replicate predictions API for language models, sync and SSE streaming",
    .options = replicate_option_table,
    .options_size = sizeof(replicate_options),
    .init = NULL,
    .fini = NULL,
    .ops = {.provider = &replicate_ops},
};

COMPASS_PLUGIN_DEFINE(replicate, replicate_desc)
