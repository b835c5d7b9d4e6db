/*
 * mockllm: the mock LLM upstream used by compass's integration tests and benchmarks.
 *
 * Internal API between the server (mockllm.c: sockets, knobs, timers, reply delivery) and the
 * provider handlers (openai.c, later anthropic.c, gemini.c, ...). A handler is a pure function
 * from a parsed request to a reply description; it never touches sockets or sleeps. Delays,
 * hangs, drops, truncation and error injection that are the same for every wire format are
 * applied by mockllm.c around the handler; the provider only supplies its own error shapes.
 *
 * Adding a provider: write <name>.c exporting one `const ml_provider ml_<name>_provider`,
 * declare it below, add it to CMakeLists.txt and add one line to the provider table in
 * mockllm.c (earlier entries win, so put specific path matchers before OpenAI's catch-all).
 */
#ifndef COMPASS_TESTS_MOCKLLM_H
#define COMPASS_TESTS_MOCKLLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/** A request header or query argument. Header names are lowercased. Borrowed. */
typedef struct ml_pair {
    const char *name;
    const char *value;
} ml_pair;

/** One parsed request. Everything is borrowed: valid only during the handler call. */
typedef struct ml_request {
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* URL path without the query string */
    const ml_pair *headers; /* names lowercased */
    size_t n_headers;
    const ml_pair *args; /* decoded query arguments */
    size_t n_args;
    const char *body; /* NUL-terminated (the NUL is not counted in body_len) */
    size_t body_len;
    json_object *json;  /* body parsed as JSON, NULL if empty or invalid */
    json_object *knobs; /* merged knobs (directive < x-mock-* headers < queue); never NULL */
    uint64_t seq;       /* process-wide request number, from 1 */
} ml_request;

const char *ml_request_header(const ml_request *req, const char *lname);
const char *ml_request_arg(const ml_request *req, const char *name);

/* Knob accessors. A knob may arrive as a JSON number, bool or string ("5", "true"). */
bool ml_knob_has(const ml_request *req, const char *name);
long long ml_knob_int(const ml_request *req, const char *name, long long dflt);
bool ml_knob_bool(const ml_request *req, const char *name);
/** Knob as a string (numbers are rendered), or NULL if unset. Borrowed from req->knobs. */
const char *ml_knob_str(const ml_request *req, const char *name);

/*
 * The reply under construction. Every builder copies what it is given. On allocation failure a
 * builder returns -1 and marks the reply failed; the server then answers 500, so handlers may
 * ignore the return values.
 */
typedef struct ml_reply ml_reply;

int ml_reply_status(ml_reply *rep, unsigned status);
int ml_reply_header(ml_reply *rep, const char *name, const char *value);
/** Complete (non-streaming) body. content_type may be NULL (no Content-Type header). */
int ml_reply_body(ml_reply *rep, const char *content_type, const char *data, size_t len);
/** Status plus body serialized from obj with Content-Type application/json. obj is borrowed. */
int ml_reply_json(ml_reply *rep, unsigned status, json_object *obj);
/** Switch to streaming: status 200 unless set, chunked body made of queued events. */
int ml_reply_stream(ml_reply *rep, const char *content_type);
/** Queue one stream event (raw bytes, e.g. "data: {...}\n\n"). */
int ml_reply_event(ml_reply *rep, const char *data, size_t len);
/** Queue "data: <obj>\n\n". obj is borrowed. */
int ml_reply_sse_json(ml_reply *rep, json_object *obj);
/** End the stream by closing the connection abruptly after the queued events. */
void ml_reply_close_abruptly(ml_reply *rep);
/** Number of events queued so far. */
size_t ml_reply_event_count(const ml_reply *rep);

/** One endpoint of a provider. */
typedef struct ml_route {
    bool (*match)(const char *method, const char *path);
    void (*handle)(const ml_request *req, ml_reply *rep);
    bool is_chat; /* consumes a queued knob set; subject to error/hang/body knobs; "chat" stat */
} ml_route;

/** A wire format. All callbacks but routes may be NULL. */
typedef struct ml_provider {
    const char *name;
    const ml_route *routes;
    size_t n_routes;
    /** Return true if the request carries key; else build the provider's 401 and return false. */
    bool (*authorize)(const ml_request *req, const char *key, ml_reply *rep);
    /** Build this provider's error reply. type/code/message may be NULL (pick defaults). */
    void (*error)(ml_reply *rep, unsigned status, const char *type, const char *code,
                  const char *message);
    /** Queue one in-stream error event (error_event_after knob). */
    void (*stream_error)(ml_reply *rep, const char *type, const char *code, const char *message);
    /** Text of the last user message (malloc'd), or NULL: where #mock{...} directives live. */
    char *(*last_user_text)(const ml_request *req);
} ml_provider;

extern const ml_provider ml_openai_provider;
extern const ml_provider ml_azure_provider;
extern const ml_provider ml_anthropic_provider;
extern const ml_provider ml_gemini_provider;
extern const ml_provider ml_replicate_provider;

/* The OpenAI handlers (openai.c), for wire formats that are OpenAI's under other paths. */
void ml_openai_chat(const ml_request *req, ml_reply *rep);
void ml_openai_embeddings(const ml_request *req, ml_reply *rep);
void ml_openai_error(ml_reply *rep, unsigned status, const char *type, const char *code,
                     const char *message);
void ml_openai_stream_error(ml_reply *rep, const char *type, const char *code,
                            const char *message);
char *ml_openai_last_user_text(const ml_request *req);

/* Small helpers shared by providers. */
/** Remove every #mock{...} directive from text in place. */
void ml_strip_directives(char *text);
/** Deterministic 64-bit FNV-1a hash. */
uint64_t ml_hash(const void *data, size_t len);

#endif
