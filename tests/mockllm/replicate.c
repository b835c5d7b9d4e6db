/*
 * mockllm: Replicate's predictions API for language models.
 *
 *   POST /v1/models/{owner}/{name}/predictions  {"input": {...}, "stream"?: true}
 *   POST /v1/predictions                        {"version": "...", "input": {...}}
 *   GET  /v1/streams/{id}                       the stream URL of a "stream": true prediction
 *
 * Creation needs `Authorization: Bearer <key>` (with --require-key); a body without an
 * "input" object is a 422 problem-details answer ({"title","detail","status"}), as are the
 * other errors (the status knob picks the status). With `Prefer: wait` (or `wait=N`) the answer
 * is the finished prediction: status "succeeded", output an array of string pieces, metrics
 * with input_token_count/output_token_count. Without it the prediction comes back "starting"
 * (async mode). With "stream": true it comes back "starting" with urls.stream pointing here
 * (http://<Host>/v1/streams/<id>); that GET serves `event: output` events (plain text, one
 * per word, or `chunks` pieces) and then `event: done` with `data: {}`. The stream is served
 * once; its shaping knobs (chunks, chunk_delay_ms, drop_after, error_event_after,
 * garbage_after, error_*) are the creation request's. error_event_after queues
 * `event: error` with `{"detail": ...}`.
 *
 * Reply text: "mock reply to: " + the last user turn of the prompt ("User: ..." lines of a
 * transcript, a ChatML user block, or the whole prompt), #mock directives removed, first 64
 * characters; the content knob overrides it. max_tokens/max_new_tokens cut it to that many
 * words. Knob prediction_status (failed, canceled, starting, processing) makes the waited
 * answer end that way (error_message is the prediction's error). Model name
 * "does-not-exist" is a 404.
 */
#include "mockllm.h"
#include "ml_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RP_SLOTS 1024 /* stream predictions waiting for their GET; the oldest is dropped */

/* ---------------------------------------------------------------- json helpers */

static bool put(json_object *o, const char *k, json_object *v)
{
    if (!o || !v) {
        json_object_put(v);
        return false;
    }
    if (json_object_object_add(o, k, v) != 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, k, &v))
        return v;
    return NULL;
}

static const char *str_at(json_object *o, const char *k)
{
    json_object *v = get(o, k);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* ---------------------------------------------------------------- errors */

static void problem(ml_reply *rep, unsigned status, const char *title, const char *detail)
{
    json_object *o = json_object_new_object();
    bool ok = put(o, "title", str(title));
    ok &= put(o, "detail", str(detail));
    ok &= put(o, "status", json_object_new_int((int)status));
    if (ok) {
        ml_reply_json(rep, status, o);
    } else {
        ml_reply_status(rep, status);
        ml_reply_body(rep, NULL, NULL, 0);
    }
    json_object_put(o);
}

static void rp_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message)
{
    const char *t = "Internal server error", *d = "An internal error occurred (mock).";
    (void)code;
    switch (status) {
    case 400:
        t = "Bad request";
        d = "The request was malformed (mock).";
        break;
    case 401:
        t = "Unauthenticated";
        d = "You did not pass a valid authentication token (mock).";
        break;
    case 402:
        t = "Insufficient credit";
        d = "You have insufficient credit to run this model (mock).";
        break;
    case 403:
        t = "Forbidden";
        d = "You do not have permission to run this model (mock).";
        break;
    case 404:
        t = "Not found";
        d = "The requested resource could not be found (mock).";
        break;
    case 422:
        t = "Input validation failed";
        d = "- input: prompt is required (mock)";
        break;
    case 429:
        t = "Request was throttled";
        d = "Request was throttled. Expected available in 1 second. (mock)";
        break;
    case 503:
        t = "Service unavailable";
        d = "The service is temporarily unavailable (mock).";
        break;
    default:
        break;
    }
    problem(rep, status, type ? type : t, message ? message : d);
}

static void rp_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message)
{
    (void)type;
    (void)code;
    json_object *o = json_object_new_object();
    const char *j = NULL;
    if (put(o, "detail", str(message ? message : "Prediction failed (mock stream error).")))
        j = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "event: error\ndata: %s\n\n", j ? j : "{}");
    if (n > 0 && (size_t)n < sizeof buf)
        ml_reply_event(rep, buf, (size_t)n);
    else
        ml_reply_event(rep, "event: error\ndata: {}\n\n", 23);
    json_object_put(o);
}

static bool rp_authorize(const ml_request *req, const char *key, ml_reply *rep)
{
    const char *h = ml_request_header(req, "authorization");
    if (h && starts_with(h, "Bearer ") && strcmp(h + 7, key) == 0)
        return true;
    problem(rep, 401, "Unauthenticated", "You did not pass a valid authentication token");
    return false;
}

/* ---------------------------------------------------------------- prompt and reply text */

/* The prompt text of the input: "prompt", else the first string in input. */
static const char *prompt_of(const ml_request *req)
{
    json_object *input = get(req->json, "input");
    const char *p = str_at(input, "prompt");
    if (p)
        return p;
    if (input && json_object_is_type(input, json_type_object)) {
        json_object_object_foreach(input, k, v)
        {
            (void)k;
            if (json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        }
    }
    return NULL;
}

/* Finds the last occurrence of needle in s, or NULL. */
static const char *last_of(const char *s, const char *needle)
{
    const char *r = NULL, *p = s;
    while ((p = strstr(p, needle)) != NULL) {
        r = p;
        p++;
    }
    return r;
}

/* The last user turn of the prompt (malloc'd): a transcript's last "User: " line, a ChatML
 * user block, or the whole prompt. */
static char *rp_last_user_text(const ml_request *req)
{
    const char *p = prompt_of(req), *s, *e;
    if (!p)
        return NULL;
    if ((s = last_of(p, "<|im_start|>user\n")) != NULL) {
        s += strlen("<|im_start|>user\n");
        e = strstr(s, "<|im_end|>");
    } else if ((s = last_of(p, "User: ")) != NULL) {
        s += strlen("User: ");
        e = strstr(s, "\nAssistant:");
    } else {
        s = p;
        e = NULL;
    }
    size_t n = e ? (size_t)(e - s) : strlen(s);
    char *r = malloc(n + 1);
    if (!r)
        return NULL;
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

/* The reply text (malloc'd), cut to the max_tokens input. */
static char *compose(const ml_request *req)
{
    static const char prefix[] = "mock reply to: ";
    const char *knob = ml_knob_str(req, "content");
    char *c;
    if (knob) {
        c = strdup(knob);
    } else {
        char *last = rp_last_user_text(req);
        const char *t = "";
        if (last) {
            ml_strip_directives(last);
            t = last;
        }
        size_t cut = utf8_prefix(t, 64), len = sizeof prefix - 1 + cut;
        c = malloc(len + 1);
        if (c) {
            memcpy(c, prefix, sizeof prefix - 1);
            memcpy(c + sizeof prefix - 1, t, cut);
            c[len] = '\0';
        }
        free(last);
    }
    if (!c)
        return NULL;
    json_object *input = get(req->json, "input");
    json_object *mt = get(input, "max_tokens");
    if (!mt)
        mt = get(input, "max_new_tokens");
    if (mt && json_object_is_type(mt, json_type_int) && json_object_get_int64(mt) >= 0 &&
        (size_t)json_object_get_int64(mt) < count_words(c))
        cut_words(c, (size_t)json_object_get_int64(mt));
    return c;
}

/* ---------------------------------------------------------------- predictions */

static void make_id(uint64_t seq, char out[27])
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint64_t x = seq * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    for (int i = 0; i < 26; i++) {
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
        out[i] = alpha[(x >> 7) & 31];
    }
    out[26] = '\0';
}

static void iso_now(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%S.000000Z", &tm);
}

/* Splits text into pieces: one per word (with the whitespace after it), or `pieces` pieces
 * of about equal length. Returns a JSON array of strings. */
static json_object *split_output(const char *text, long long pieces)
{
    json_object *a = json_object_new_array();
    bool ok = a != NULL;
    if (pieces > 0) {
        size_t cps = utf8_len(text), start = 0;
        if ((size_t)pieces > cps && cps > 0)
            pieces = (long long)cps;
        for (long long i = 0; ok && i < pieces; i++) {
            size_t end = utf8_prefix(text, (size_t)(((unsigned long long)cps *
                                                     (unsigned long long)(i + 1)) /
                                                    (unsigned long long)pieces));
            ok = json_object_array_add(a, json_object_new_string_len(text + start,
                                                                     (int)(end - start))) == 0;
            start = end;
        }
    } else {
        const char *p = text;
        while (ok && *p) {
            const char *q = p;
            while (*q && is_space(*q))
                q++;
            while (*q && !is_space(*q))
                q++;
            while (*q && is_space(*q))
                q++;
            ok = json_object_array_add(a, json_object_new_string_len(p, (int)(q - p))) == 0;
            p = q;
        }
    }
    if (!ok) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

/* Stream predictions waiting for their GET. */
typedef struct rp_slot {
    char id[27];
    char *content;
    char *knobs; /* JSON text of the creation request's shaping knobs */
} rp_slot;

static pthread_mutex_t rp_lock = PTHREAD_MUTEX_INITIALIZER;
static rp_slot rp_slots[RP_SLOTS];
static size_t rp_next;

static bool slot_store(const char *id, char *content, char *knobs)
{
    pthread_mutex_lock(&rp_lock);
    rp_slot *s = &rp_slots[rp_next++ % RP_SLOTS];
    free(s->content);
    free(s->knobs);
    memcpy(s->id, id, sizeof s->id);
    s->content = content;
    s->knobs = knobs;
    pthread_mutex_unlock(&rp_lock);
    return true;
}

/* Takes the prediction id out of the table; false when unknown. */
static bool slot_take(const char *id, char **content, char **knobs)
{
    bool found = false;
    pthread_mutex_lock(&rp_lock);
    for (size_t i = 0; i < RP_SLOTS; i++) {
        if (rp_slots[i].content && strcmp(rp_slots[i].id, id) == 0) {
            *content = rp_slots[i].content;
            *knobs = rp_slots[i].knobs;
            rp_slots[i].content = NULL;
            rp_slots[i].knobs = NULL;
            rp_slots[i].id[0] = '\0';
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&rp_lock);
    return found;
}

/* Knobs that shape the stream, carried from the creation to the GET. */
static const char *const stream_knobs[] = {"chunks", "chunk_delay_ms", "drop_after",
                                           "error_event_after", "garbage_after", "error_type",
                                           "error_code", "error_message"};

static char *save_knobs(const ml_request *req)
{
    json_object *o = json_object_new_object();
    char *r = NULL;
    if (!o)
        return NULL;
    for (size_t i = 0; i < sizeof stream_knobs / sizeof stream_knobs[0]; i++) {
        json_object *v = get(req->knobs, stream_knobs[i]);
        if (v)
            json_object_object_add(o, stream_knobs[i], json_object_get(v));
    }
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    r = s ? strdup(s) : NULL;
    json_object_put(o);
    return r;
}

/* "Prefer: wait" or "wait=N" among the Prefer header's preferences. */
static bool prefers_wait(const ml_request *req)
{
    const char *p = ml_request_header(req, "prefer");
    if (!p)
        return false;
    for (const char *w = strstr(p, "wait"); w; w = strstr(w + 1, "wait")) {
        bool start = w == p || w[-1] == ' ' || w[-1] == ',' || w[-1] == ';';
        char after = w[4];
        if (start && (after == '\0' || after == '=' || after == ',' || after == ';' ||
                      after == ' '))
            return true;
    }
    return false;
}

/* http://<Host header>, pointed at 127.0.0.1 (the only address mockllm serves). */
static void self_base(const ml_request *req, char *buf, size_t cap)
{
    const char *host = ml_request_header(req, "host");
    const char *colon = host ? strrchr(host, ':') : NULL;
    if (host && starts_with(host, "127."))
        snprintf(buf, cap, "http://%.100s", host);
    else if (colon)
        snprintf(buf, cap, "http://127.0.0.1%.10s", colon);
    else
        snprintf(buf, cap, "http://127.0.0.1");
}

static void handle_create(const ml_request *req, ml_reply *rep, const char *model,
                          const char *version)
{
    if (!req->json || !json_object_is_type(req->json, json_type_object)) {
        problem(rep, 400, "Invalid JSON", "The request body is not valid JSON.");
        return;
    }
    json_object *input = get(req->json, "input");
    if (!input || !json_object_is_type(input, json_type_object)) {
        problem(rep, 422, "Input validation failed", "- input: input is required");
        return;
    }
    if (!model && !version) {
        problem(rep, 422, "Input validation failed", "- version: version is required");
        return;
    }
    if (model && strstr(model, "/does-not-exist")) {
        problem(rep, 404, "Not found", "The requested resource could not be found.");
        return;
    }
    json_object *sv = get(req->json, "stream");
    bool stream = sv && json_object_get_boolean(sv);
    char *content = compose(req);
    if (!content) {
        rp_error(rep, 500, NULL, NULL, "mockllm: out of memory");
        return;
    }

    char id[27], now[40], base[160], url[300];
    make_id(req->seq, id);
    iso_now(now, sizeof now);
    self_base(req, base, sizeof base);

    const char *status = "starting";
    const char *forced = ml_knob_str(req, "prediction_status");
    if (!stream && prefers_wait(req))
        status = forced ? forced : "succeeded";

    json_object *o = json_object_new_object();
    json_object *urls = json_object_new_object();
    bool ok = put(o, "id", str(id));
    ok &= put(o, "model", str(model ? model : "replicate-mock/model"));
    ok &= put(o, "version", str(version ? version : "hidden"));
    ok &= put(o, "input", json_object_get(input));
    ok &= put(o, "logs", str(""));
    if (strcmp(status, "succeeded") == 0) {
        ok &= put(o, "output", split_output(content, ml_knob_int(req, "chunks", 0)));
        ok &= put_null(o, "error");
    } else if (strcmp(status, "failed") == 0) {
        ok &= put_null(o, "output");
        const char *em = ml_knob_str(req, "error_message");
        ok &= put(o, "error", str(em ? em : "Prediction failed (mock)."));
    } else {
        ok &= put_null(o, "output");
        ok &= put_null(o, "error");
    }
    ok &= put(o, "status", str(status));
    ok &= put(o, "data_removed", json_object_new_boolean(0));
    ok &= put(o, "created_at", str(now));
    snprintf(url, sizeof url, "%s/v1/predictions/%s", base, id);
    ok &= put(urls, "get", str(url));
    snprintf(url, sizeof url, "%s/v1/predictions/%s/cancel", base, id);
    ok &= put(urls, "cancel", str(url));
    if (stream) {
        snprintf(url, sizeof url, "%s/v1/streams/%s", base, id);
        ok &= put(urls, "stream", str(url));
    }
    ok &= put(o, "urls", urls);
    if (strcmp(status, "succeeded") == 0) {
        json_object *m = json_object_new_object();
        const char *p = prompt_of(req);
        const char *sys = str_at(input, "system_prompt");
        size_t chars = (p ? strlen(p) : 0) + (sys ? strlen(sys) : 0);
        ok &= put(o, "started_at", str(now));
        ok &= put(o, "completed_at", str(now));
        ok &= put(m, "input_token_count", json_object_new_int64((int64_t)((chars + 3) / 4)));
        ok &= put(m, "output_token_count", json_object_new_int64((int64_t)count_words(content)));
        ok &= put(m, "predict_time", json_object_new_double(0.01));
        ok &= put(o, "metrics", m);
    } else {
        ok &= put(o, "metrics", json_object_new_object());
    }
    if (ok && stream) {
        char *knobs = save_knobs(req);
        ok = knobs != NULL && slot_store(id, content, knobs);
        if (ok)
            content = NULL;
        else
            free(knobs);
    }
    if (ok) {
        ml_reply_json(rep, 201, o);
        snprintf(url, sizeof url, "%s/v1/predictions/%s", base, id);
        ml_reply_header(rep, "Location", url);
        if (!stream && strcmp(status, "succeeded") == 0)
            ml_reply_header(rep, "Preference-Applied", "wait");
    } else {
        rp_error(rep, 500, NULL, NULL, "mockllm: out of memory");
    }
    json_object_put(o);
    free(content);
}

/* POST /v1/models/{owner}/{name}/predictions */
static void handle_model_create(const ml_request *req, ml_reply *rep)
{
    const char *s = req->path + strlen("/v1/models/");
    const char *e = strstr(s, "/predictions");
    char model[200];
    size_t n = e ? (size_t)(e - s) : 0;
    if (n == 0 || n >= sizeof model) {
        problem(rep, 404, "Not found", "The requested resource could not be found.");
        return;
    }
    memcpy(model, s, n);
    model[n] = '\0';
    handle_create(req, rep, model, NULL);
}

/* POST /v1/predictions {"version": ...} */
static void handle_version_create(const ml_request *req, ml_reply *rep)
{
    handle_create(req, rep, NULL, str_at(req->json, "version"));
}

/* Queues "event: output" with text as data lines (a newline starts another data line). */
static bool output_event(ml_reply *rep, const char *id, size_t i, const char *text, size_t n)
{
    size_t cap = n * 7 + 96, len;
    char *b = malloc(cap);
    if (!b)
        return false;
    int h = snprintf(b, cap, "event: output\nid: %s:%zu\ndata: ", id, i);
    len = h > 0 ? (size_t)h : 0;
    for (size_t k = 0; k < n; k++) {
        if (text[k] == '\n') {
            memcpy(b + len, "\ndata: ", 7);
            len += 7;
        } else if (text[k] != '\r') {
            b[len++] = text[k];
        }
    }
    memcpy(b + len, "\n\n", 2);
    len += 2;
    bool ok = ml_reply_event(rep, b, len) == 0;
    free(b);
    return ok;
}

/* GET /v1/streams/{id} */
static void handle_stream(const ml_request *req, ml_reply *rep)
{
    const char *id = req->path + strlen("/v1/streams/");
    char *content = NULL, *knobs = NULL;
    if (!slot_take(id, &content, &knobs)) {
        problem(rep, 404, "Not found", "No stream for this prediction (mock streams are served "
                                       "once).");
        return;
    }
    /* The creation's shaping knobs apply unless this request set its own. */
    json_object *saved = knobs ? json_tokener_parse(knobs) : NULL;
    if (saved && json_object_is_type(saved, json_type_object)) {
        json_object_object_foreach(saved, k, v)
        {
            if (!get(req->knobs, k))
                json_object_object_add(req->knobs, k, json_object_get(v));
        }
    }
    json_object_put(saved);
    free(knobs);

    json_object *pieces = split_output(content, ml_knob_int(req, "chunks", 0));
    bool ok = pieces != NULL;
    ml_reply_stream(rep, "text/event-stream");
    for (size_t i = 0; ok && i < json_object_array_length(pieces); i++) {
        json_object *p = json_object_array_get_idx(pieces, i);
        ok = output_event(rep, id, i, json_object_get_string(p),
                          (size_t)json_object_get_string_len(p));
    }
    if (ok)
        ok = ml_reply_event(rep, "event: done\ndata: {}\n\n", 22) == 0;
    if (!ok)
        rp_error(rep, 500, NULL, NULL, "mockllm: out of memory");
    json_object_put(pieces);
    free(content);
}

/* ---------------------------------------------------------------- routes */

static bool match_model_create(const char *method, const char *path)
{
    if (strcmp(method, "POST") != 0 || !starts_with(path, "/v1/models/"))
        return false;
    /* exactly /v1/models/<owner>/<name>/predictions */
    const char *s = path + strlen("/v1/models/");
    const char *a = strchr(s, '/');
    const char *b = a ? strchr(a + 1, '/') : NULL;
    return a && a > s && b && b > a + 1 && strcmp(b, "/predictions") == 0;
}

static bool match_version_create(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && strcmp(path, "/v1/predictions") == 0;
}

static bool match_stream(const char *method, const char *path)
{
    return strcmp(method, "GET") == 0 && starts_with(path, "/v1/streams/") &&
           path[strlen("/v1/streams/")] != '\0' && !strchr(path + strlen("/v1/streams/"), '/');
}

static const ml_route routes[] = {
    {.match = match_model_create, .handle = handle_model_create, .is_chat = true},
    {.match = match_version_create, .handle = handle_version_create, .is_chat = true},
    {.match = match_stream, .handle = handle_stream, .is_chat = false},
};

const ml_provider ml_replicate_provider = {
    .name = "replicate",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .authorize = rp_authorize,
    .error = rp_error,
    .stream_error = rp_stream_error,
    .last_user_text = rp_last_user_text,
};
