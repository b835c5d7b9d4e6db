/*
 * compass plugin SDK: the one header a compass plugin includes.
 *
 * A plugin is a shared object exporting one function, compass_plugin_entry(), written by
 * COMPASS_PLUGIN_DEFINE(). It returns a pointer to a static const compass_plugin_desc that
 * says which ABI the plugin was built against, what kind of plugin it is (provider, router,
 * pattern) and where its hooks are. The host checks the descriptor before any plugin code
 * runs, then calls init() with a table of host services (compass_host).
 *
 * Plugins never include core headers and never link against core symbols: everything they
 * need from the host arrives through compass_host. Build them with -Wl,-z,defs.
 *
 * Ownership notes on every pointer:
 *   borrowed          valid until the call returns; copy what you keep.
 *   request-owned     lives in the request arena until the request ends.
 *   host-owned until  valid until the named event.
 *   transferred       the receiver releases it with the named function.
 *
 * This header is self-contained C99 and compiles as C++.
 *
 * ABI changelog (COMPASS_ABI_MAJOR.COMPASS_ABI_MINOR):
 *   1.0  2026-11-22  first stable ABI: descriptor, options, host services (log, alloc, request
 *                    arena, clock, config, metrics, stream emit, pattern complete), provider,
 *                    router and pattern ops, per-request plugin state (req_data), provider
 *                    follow-up calls (follow) and embeddings (build_embed_request,
 *                    parse_embed_response).
 *
 * Rules: appending a field, a host service or an enum value bumps the minor; removing,
 * reordering, retyping or redefining anything bumps the major. A plugin loads when its major
 * equals the host's and its minor is not newer than the host's. Enum values are never reused.
 */
#ifndef COMPASS_PLUGIN_H
#define COMPASS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COMPASS_ABI_MAJOR 1
#define COMPASS_ABI_MINOR 0

#if defined(__GNUC__) || defined(__clang__)
#define COMPASS_PLUGIN_VISIBLE __attribute__((visibility("default")))
#define COMPASS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define COMPASS_PLUGIN_VISIBLE
#define COMPASS_PRINTF(fmt, args)
#endif

#ifdef __cplusplus
#define COMPASS_PLUGIN_EXTERN extern "C" COMPASS_PLUGIN_VISIBLE
#else
#define COMPASS_PLUGIN_EXTERN COMPASS_PLUGIN_VISIBLE
#endif

/* ---------------------------------------------------------------------------------------- */
/* Return codes. 0 is success; failures are negative and never reused.                      */
/* ---------------------------------------------------------------------------------------- */

#define COMPASS_OK 0
#define COMPASS_EINVAL (-1)      /* an argument is invalid (NULL where not allowed, ...) */
#define COMPASS_ENOMEM (-2)      /* an allocation failed or a memory cap was reached */
#define COMPASS_EPHASE (-3)      /* a service was called in the wrong phase */
#define COMPASS_EPARSE (-4)      /* bytes could not be parsed (JSON, SSE, config) */
#define COMPASS_EUNSUPPORTED (-5) /* the request asks for something this plugin cannot honour */
#define COMPASS_ENOTFOUND (-6)   /* a named thing (model, route, file, key) does not exist */
#define COMPASS_EIO (-7)         /* an I/O error (socket, file) */
#define COMPASS_EUPSTREAM (-8)   /* the upstream reported an error; see compass_upstream_error */
#define COMPASS_EABI (-9)        /* the plugin was built against an incompatible ABI */
#define COMPASS_ECONFIG (-10)    /* configuration is invalid */
#define COMPASS_ETIMEDOUT (-11)  /* a deadline passed */
#define COMPASS_ECANCELED (-12)  /* the request was cancelled (client went away, shutdown) */
#define COMPASS_ELIMIT (-13)     /* a size or rate limit was exceeded */
#define COMPASS_EEXIST (-14)     /* a name is already taken */
#define COMPASS_EPLUGIN (-15)    /* a plugin misbehaved or refused to initialise */

/* ---------------------------------------------------------------------------------------- */
/* Strings                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/** A byte string: ptr may be NULL when len is 0. Not NUL-terminated unless a call says so. */
typedef struct compass_str {
    const char *ptr;
    size_t len;
} compass_str;

/** A compass_str over a NUL-terminated C string (NULL gives the empty string). Borrowed. */
static inline compass_str compass_str_c(const char *s)
{
    compass_str r;
    r.ptr = s;
    r.len = s ? strlen(s) : 0;
    return r;
}

/** Whether a holds exactly the bytes of the C string b. */
static inline int compass_str_eq(compass_str a, const char *b)
{
    size_t n = b ? strlen(b) : 0;
    return a.len == n && (n == 0 || memcmp(a.ptr, b, n) == 0);
}

/** Whether a is empty (no bytes). */
static inline int compass_str_is_empty(compass_str a)
{
    return a.len == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Error detail                                                                              */
/* ---------------------------------------------------------------------------------------- */

/** Caller-provided error detail: filling it never allocates. */
typedef struct compass_err {
    int code;       /* a COMPASS_E* code */
    char msg[512];  /* NUL-terminated; names the thing (field, file:line, plugin, symbol) */
} compass_err;

/** What an upstream outcome means for failover. Not a return code. */
typedef enum compass_outcome {
    COMPASS_OUTCOME_OK = 0,
    COMPASS_OUTCOME_RETRYABLE = 1,      /* 5xx, overloaded, connection trouble: try another */
    COMPASS_OUTCOME_RATE_LIMITED = 2,   /* 429: try another; honour retry_after_ms */
    COMPASS_OUTCOME_AUTH = 3,           /* 401/403: the deployment's credentials are wrong */
    COMPASS_OUTCOME_BAD_REQUEST = 4,    /* 400/422: the client's request is at fault */
    COMPASS_OUTCOME_CONTENT_FILTER = 5, /* the provider refused the content */
    COMPASS_OUTCOME_NOT_FOUND = 6,      /* unknown model or path upstream */
    COMPASS_OUTCOME_FATAL = 7           /* anything else that retrying will not fix */
} compass_outcome;

/** An upstream error, classified. Fixed buffers: filling it never allocates. */
typedef struct compass_upstream_error {
    size_t size;            /* sizeof(compass_upstream_error) as the filler knew it */
    int outcome;            /* compass_outcome */
    int http_status;        /* the status the upstream sent (0 when none) */
    int64_t retry_after_ms; /* from Retry-After or the body; -1 when not given */
    char type[64];          /* OpenAI error type, e.g. "invalid_request_error" */
    char code[64];          /* OpenAI error code, e.g. "rate_limit_exceeded"; may be empty */
    char message[512];      /* the upstream's message, NUL-terminated */
} compass_upstream_error;

/* ---------------------------------------------------------------------------------------- */
/* The canonical chat model (OpenAI chat completions), as plugins see it                      */
/* ---------------------------------------------------------------------------------------- */

typedef enum compass_role {
    COMPASS_ROLE_NONE = 0,
    COMPASS_ROLE_SYSTEM = 1,
    COMPASS_ROLE_USER = 2,
    COMPASS_ROLE_ASSISTANT = 3,
    COMPASS_ROLE_TOOL = 4,
    COMPASS_ROLE_DEVELOPER = 5
} compass_role;

typedef enum compass_part_type {
    COMPASS_PART_TEXT = 1,
    COMPASS_PART_IMAGE_URL = 2 /* image_url: an https URL or a data: URL with base64 */
} compass_part_type;

typedef struct compass_content_part {
    int type;             /* compass_part_type */
    compass_str text;     /* COMPASS_PART_TEXT */
    compass_str url;      /* COMPASS_PART_IMAGE_URL */
    compass_str detail;   /* COMPASS_PART_IMAGE_URL: "auto", "low", "high" or empty */
} compass_content_part;

typedef struct compass_tool_call {
    compass_str id;
    compass_str name;
    compass_str arguments; /* JSON text, as the model produced it */
} compass_tool_call;

typedef struct compass_message {
    int role;                           /* compass_role */
    compass_str name;                   /* optional participant name */
    int has_content;                    /* 0 when content was null or absent */
    compass_str content;                /* all text of the message, parts concatenated */
    const compass_content_part *parts;  /* when content was an array; else NULL */
    size_t n_parts;
    const compass_tool_call *tool_calls; /* assistant tool calls */
    size_t n_tool_calls;
    compass_str tool_call_id;           /* role tool: the call this answers */
} compass_message;

typedef struct compass_tool {
    compass_str name;
    compass_str description;
    compass_str parameters; /* JSON Schema as JSON text; empty when none */
    int strict;             /* -1 unset, 0, 1 */
} compass_tool;

typedef enum compass_tool_choice {
    COMPASS_TOOL_CHOICE_UNSET = 0,
    COMPASS_TOOL_CHOICE_AUTO = 1,
    COMPASS_TOOL_CHOICE_NONE = 2,
    COMPASS_TOOL_CHOICE_REQUIRED = 3,
    COMPASS_TOOL_CHOICE_FUNCTION = 4 /* tool_choice_name names it */
} compass_tool_choice;

/* Bits of compass_chat_request.set: which optional scalars the client gave. */
#define COMPASS_SET_TEMPERATURE (1u << 0)
#define COMPASS_SET_TOP_P (1u << 1)
#define COMPASS_SET_MAX_TOKENS (1u << 2)
#define COMPASS_SET_MAX_COMPLETION_TOKENS (1u << 3)
#define COMPASS_SET_SEED (1u << 4)
#define COMPASS_SET_PRESENCE_PENALTY (1u << 5)
#define COMPASS_SET_FREQUENCY_PENALTY (1u << 6)
#define COMPASS_SET_N (1u << 7)
#define COMPASS_SET_PARALLEL_TOOL_CALLS (1u << 8)

/**
 * A canonical chat request. All pointers are request-owned (valid until the request ends).
 * model is the upstream model name for this attempt (the deployment's, not the route's).
 * raw is the whole body the client sent, as OpenAI-format JSON text, for adapters that pass
 * through fields the canonical model does not name.
 */
typedef struct compass_chat_request {
    size_t size;
    compass_str model;
    const compass_message *messages;
    size_t n_messages;
    const compass_tool *tools;
    size_t n_tools;
    int tool_choice;           /* compass_tool_choice */
    compass_str tool_choice_name;
    int stream;                /* 1 when the client asked for a stream */
    int include_usage;         /* stream_options.include_usage */
    unsigned set;              /* COMPASS_SET_* bits */
    double temperature;
    double top_p;
    double presence_penalty;
    double frequency_penalty;
    int64_t max_tokens;
    int64_t max_completion_tokens;
    int64_t seed;
    int64_t n;
    int parallel_tool_calls;
    const compass_str *stop;   /* stop sequences */
    size_t n_stop;
    compass_str response_format; /* JSON text of response_format; empty when unset */
    compass_str reasoning_effort;
    compass_str user;
    compass_str raw;
} compass_chat_request;

typedef enum compass_finish {
    COMPASS_FINISH_NONE = 0,
    COMPASS_FINISH_STOP = 1,
    COMPASS_FINISH_LENGTH = 2,
    COMPASS_FINISH_TOOL_CALLS = 3,
    COMPASS_FINISH_CONTENT_FILTER = 4,
    COMPASS_FINISH_ERROR = 5
} compass_finish;

typedef struct compass_usage {
    int present;               /* 1 when the provider reported usage */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    int64_t cached_tokens;     /* prompt_tokens_details.cached_tokens */
    int64_t reasoning_tokens;  /* completion_tokens_details.reasoning_tokens */
} compass_usage;

/** A complete (non-streamed) answer. Strings are request-owned; fill via the request arena. */
typedef struct compass_chat_response {
    size_t size;
    compass_str id;            /* the upstream's id; the host makes one when empty */
    compass_str model;         /* the model that answered */
    int64_t created;           /* unix seconds; 0 lets the host fill it */
    int has_content;
    compass_str content;
    compass_str refusal;
    compass_tool_call *tool_calls;
    size_t n_tool_calls;
    int finish_reason;         /* compass_finish */
    compass_usage usage;
} compass_chat_response;

/**
 * One streamed delta, emitted through compass_host.stream_emit. Any field may be empty.
 * A tool-call delta has tool_index >= 0; id and name usually come only on its first delta,
 * arguments arrive in fragments.
 */
typedef struct compass_chat_delta {
    size_t size;
    compass_str id;
    compass_str model;
    int role;                  /* compass_role, or 0 */
    compass_str content;
    compass_str refusal;
    int tool_index;            /* -1 when this delta carries no tool call */
    compass_str tool_id;
    compass_str tool_name;
    compass_str tool_arguments;
    int finish_reason;         /* compass_finish, or 0 */
    compass_usage usage;       /* usage.present when this delta reports usage */
} compass_chat_delta;

/** Initialises a delta to "empty" (no role, no tool call, no finish, no usage). */
static inline void compass_delta_init(compass_chat_delta *d)
{
    memset(d, 0, sizeof(*d));
    d->size = sizeof(*d);
    d->tool_index = -1;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP descriptions (providers build and parse them; the host owns all I/O)                  */
/* ---------------------------------------------------------------------------------------- */

typedef struct compass_header {
    compass_str name;
    compass_str value;
} compass_header;

typedef enum compass_http_method {
    COMPASS_HTTP_POST = 1,
    COMPASS_HTTP_GET = 2,
    COMPASS_HTTP_DELETE = 3
} compass_http_method;

typedef enum compass_stream_format {
    COMPASS_STREAM_NONE = 0,   /* one body, parsed by parse_response */
    COMPASS_STREAM_SSE = 1,    /* text/event-stream: the host splits events */
    COMPASS_STREAM_NDJSON = 2  /* one JSON value per line: each line is an event's data */
} compass_stream_format;

/** The upstream call a provider wants made. Every pointer is request-owned. */
typedef struct compass_http_request {
    size_t size;
    int method;                /* compass_http_method */
    compass_str url;
    compass_header *headers;
    size_t n_headers;
    compass_str body;
    int stream_format;         /* compass_stream_format */
} compass_http_request;

/** What came back. Borrowed for the duration of the hook. */
typedef struct compass_http_response {
    int status;
    const compass_header *headers;
    size_t n_headers;
    compass_str body;
} compass_http_response;

/** One stream event: SSE fields, or for NDJSON a line in data. Borrowed. */
typedef struct compass_stream_event {
    compass_str event;         /* SSE "event:"; empty when absent */
    compass_str data;          /* SSE "data:" lines joined with '\n' */
    compass_str id;
} compass_stream_event;

/* ---------------------------------------------------------------------------------------- */
/* Options: declared by the plugin, read and checked by the host                              */
/* ---------------------------------------------------------------------------------------- */

typedef enum compass_opt_type {
    COMPASS_OPT_STRING = 1, /* stored as const char *; host-owned until instance_free */
    COMPASS_OPT_INT = 2,    /* stored as int64_t */
    COMPASS_OPT_BOOL = 3,   /* stored as int (0 or 1) */
    COMPASS_OPT_DOUBLE = 4  /* stored as double */
} compass_opt_type;

/**
 * One option a plugin instance takes, from the deployment's (or route's) "options" group in
 * the config. The host checks types (file:line errors), applies defaults, refuses unknown
 * names, and writes the value at offset into an options struct of options_size bytes.
 * A table ends with a row whose name is NULL.
 */
typedef struct compass_option {
    const char *name;
    int type;                  /* compass_opt_type */
    const char *default_value; /* as text ("30", "true", "0.5", "x"); NULL for none */
    int required;
    size_t offset;             /* offsetof(your_options_struct, field) */
    const char *help;
} compass_option;

/* ---------------------------------------------------------------------------------------- */
/* Host services                                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct compass_host compass_host;
typedef struct compass_req compass_req; /* one request in flight; opaque */
typedef struct compass_run compass_run; /* one pattern run (workflow); opaque */

typedef enum compass_log_level {
    COMPASS_LOG_ERROR = 0,
    COMPASS_LOG_WARN = 1,
    COMPASS_LOG_INFO = 2,
    COMPASS_LOG_DEBUG = 3
} compass_log_level;

/** The result of one step a pattern asked for through compass_host.complete. Borrowed. */
typedef struct compass_step_result {
    size_t size;
    uint64_t step_id;
    int ok;                            /* 1: response is set; 0: error is set */
    const compass_chat_response *response;
    const compass_upstream_error *error;
} compass_step_result;

/**
 * The services the host gives a plugin. Each plugin receives its own table (host_ctx tells
 * the host which plugin calls). The table only grows at its end; guard services newer than
 * the ABI you build against with COMPASS_HOST_HAS(h, field).
 */
struct compass_host {
    size_t size;               /* sizeof(compass_host) as the host knows it */
    uint32_t abi_major;
    uint32_t abi_minor;
    void *host_ctx;            /* the host's; do not touch */
    const char *plugin_name;   /* host-owned until fini */

    /** Logs one line tagged with the plugin name. Never pass secrets. Any thread. */
    void (*log)(const compass_host *h, int level, const char *fmt, ...) COMPASS_PRINTF(3, 4);

    /** Counted allocation. Returns NULL on failure or past the memory cap. Any thread. */
    void *(*alloc)(const compass_host *h, size_t n);
    /** Resizes memory from alloc; NULL on failure (the old block stays valid). */
    void *(*realloc)(const compass_host *h, void *p, size_t n);
    /** Frees memory from alloc or realloc. NULL is fine. */
    void (*free)(const compass_host *h, void *p);

    /** Allocates n bytes in the request arena, released when the request ends. NULL on
     *  failure. Memory is aligned for any type and not zeroed. Request phase only. */
    void *(*req_alloc)(compass_req *req, size_t n);
    /** Copies n bytes into the request arena and NUL-terminates the copy (not counted in
     *  len). Returns an empty string with ptr NULL on failure. */
    compass_str (*req_strdup)(compass_req *req, const char *s, size_t n);
    /** The request's id (x-request-id). Request-owned. */
    compass_str (*req_id)(compass_req *req);

    /** Wall-clock time in milliseconds since the Unix epoch. */
    int64_t (*now_ms)(const compass_host *h);
    /** Monotonic time in nanoseconds, for durations. */
    uint64_t (*monotonic_ns)(const compass_host *h);

    /** Reads key from this plugin's global config group (plugins.<name>.<key>), as text.
     *  out is host-owned until fini. COMPASS_ENOTFOUND when absent. */
    int (*config_get)(const compass_host *h, const char *key, compass_str *out);

    /** Adds delta to a counter. name: [a-z_]+; labels: Prometheus label text without braces
     *  (e.g. "reason=\"x\""), or NULL. The host prefixes nothing. Any thread. */
    int (*metric_add)(const compass_host *h, const char *name, const char *labels,
                      double delta);
    /** Sets a gauge. */
    int (*metric_set)(const compass_host *h, const char *name, const char *labels,
                      double value);

    /** Provider streaming: hands one canonical delta to the host. The delta is borrowed
     *  (copied by the host). Only from inside parse_stream_event. */
    int (*stream_emit)(compass_req *req, const compass_chat_delta *d);

    /** Pattern: starts one chat completion on behalf of a run. The request is borrowed. The
     *  result arrives later through the pattern's on_step with *step_id. Never blocks. */
    int (*complete)(compass_run *run, const compass_chat_request *req, compass_str route,
                    uint64_t *step_id);
    /** Pattern: ends a run with its output (borrowed, copied) or an error (NULL on success). */
    int (*run_finish)(compass_run *run, compass_str output, const compass_upstream_error *err);
    /** Pattern: the run's state pointer, which the pattern sets and owns. */
    void **(*run_data)(compass_run *run);

    /** Provider: a per-request slot for the plugin's own state across hooks of one request
     *  (e.g. stream parsing state kept between events of one upstream attempt). Starts NULL
     *  for every attempt; point it at request-arena memory (h->req_alloc), which is released
     *  with the request. */
    void **(*req_data)(compass_req *req);
};

/** Whether the host table h has service f (it may be older than this header). */
#define COMPASS_HOST_HAS(h, f)                                                                \
    ((h)->size >= offsetof(compass_host, f) + sizeof((h)->f) && (h)->f != NULL)

/* ---------------------------------------------------------------------------------------- */
/* Instances                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/**
 * What an instance (a deployment for providers, a route for routers and patterns) is made
 * from. Every pointer is host-owned until instance_free.
 */
typedef struct compass_instance_info {
    size_t size;
    const char *name;          /* deployment or route name */
    const char *base_url;      /* from config; NULL lets the plugin use its default */
    const char *api_key;       /* the secret from api_key_env; NULL when unset. Never log */
    const char *const *models; /* the upstream models this deployment serves */
    size_t n_models;
    const void *options;       /* the plugin's options struct, filled per its option table */
} compass_instance_info;

/* ---------------------------------------------------------------------------------------- */
/* Provider ops: pure translation, no I/O                                                    */
/* ---------------------------------------------------------------------------------------- */

/** Returned by parse_stream_event when the stream's end marker arrived. */
#define COMPASS_STREAM_END 1

/** A canonical embeddings request (OpenAI /v1/embeddings). Request-owned. */
typedef struct compass_embed_request {
    size_t size;
    compass_str model;          /* the upstream model for this attempt */
    const compass_str *inputs;  /* one or more texts */
    size_t n_inputs;
    int64_t dimensions;         /* 0 when unset */
    compass_str encoding_format; /* "float" (default) or "base64"; empty when unset */
    compass_str user;
    compass_str raw;            /* the client's body */
} compass_embed_request;

typedef struct compass_embedding {
    const float *values;        /* request-owned */
    size_t n;
} compass_embedding;

/** A canonical embeddings answer, data[i] for inputs[i]. Fill via the request arena. */
typedef struct compass_embed_response {
    size_t size;
    compass_str model;
    compass_embedding *data;
    size_t n_data;
    compass_usage usage;        /* prompt_tokens and total_tokens */
} compass_embed_response;

/** What an in-process provider (no network, like mock) answers. */
typedef struct compass_local_result {
    size_t size;
    int64_t first_delay_ms;    /* delay before the answer or the first delta */
    int64_t chunk_delay_ms;    /* delay between deltas when streaming */
    int failed;                /* 1: error is the answer */
    compass_upstream_error error;
    compass_chat_response response;       /* non-streaming answer */
    const compass_chat_delta *deltas;     /* streaming answer, request-owned */
    size_t n_deltas;
} compass_local_result;

typedef struct compass_provider_ops {
    size_t size; /* sizeof(compass_provider_ops) as the plugin knows it */

    /** Makes an instance for one deployment. *inst is transferred (instance_free). */
    int (*instance_new)(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err);
    void (*instance_free)(void *inst);

    /** Translates a canonical request into the upstream call. All of out is request-owned.
     *  COMPASS_EUNSUPPORTED (with a message naming the parameter) when the request cannot
     *  be honoured. Required unless local_call is set. */
    int (*build_request)(void *inst, compass_req *req, const compass_chat_request *in,
                         compass_http_request *out, compass_err *err);

    /** Parses a successful (2xx) non-streamed body. COMPASS_EPARSE on garbage;
     *  COMPASS_EUPSTREAM with uerr filled when a 2xx body carries an error. */
    int (*parse_response)(void *inst, compass_req *req, const compass_http_response *resp,
                          compass_chat_response *out, compass_upstream_error *uerr,
                          compass_err *err);

    /** Parses one stream event and emits zero or more deltas through h->stream_emit.
     *  Returns COMPASS_OK, COMPASS_STREAM_END at the stream's end marker, COMPASS_EPARSE on
     *  garbage, or COMPASS_EUPSTREAM with uerr filled for an error event. */
    int (*parse_stream_event)(void *inst, compass_req *req, const compass_stream_event *ev,
                              compass_upstream_error *uerr, compass_err *err);

    /** Classifies a non-2xx answer (or a 2xx error body) into uerr. Must not fail: an
     *  unreadable body still yields an outcome from the status. */
    void (*classify_error)(void *inst, compass_req *req, const compass_http_response *resp,
                           compass_upstream_error *uerr);

    /** Optional: answers in-process instead of over HTTP (the host applies the delays
     *  without blocking a thread). When set, build_request and the parsers may be NULL. */
    int (*local_call)(void *inst, compass_req *req, const compass_chat_request *in,
                      compass_local_result *out, compass_err *err);

    /** Optional: called after each 2xx answer, before it is parsed. A provider that needs a
     *  second call (e.g. a prediction's stream URL) fills out and returns COMPASS_OK; the host
     *  makes that call within the same attempt and parses its answer instead (its
     *  stream_format applies). Returning COMPASS_ENOTFOUND means "no further call". Any other
     *  code fails the attempt with err. */
    int (*follow)(void *inst, compass_req *req, const compass_http_response *resp,
                  compass_http_request *out, compass_err *err);

    /** Optional: embeddings. Both set, or neither. */
    int (*build_embed_request)(void *inst, compass_req *req, const compass_embed_request *in,
                               compass_http_request *out, compass_err *err);
    int (*parse_embed_response)(void *inst, compass_req *req, const compass_http_response *resp,
                                compass_embed_response *out, compass_upstream_error *uerr,
                                compass_err *err);
} compass_provider_ops;

/** Whether a provider ops table (of any age) has op f set. */
#define COMPASS_OPS_HAS(o, f)                                                                 \
    ((o)->size >= offsetof(compass_provider_ops, f) + sizeof((o)->f) && (o)->f != NULL)

/* ---------------------------------------------------------------------------------------- */
/* Router ops: rank candidates                                                               */
/* ---------------------------------------------------------------------------------------- */

typedef enum compass_breaker_state {
    COMPASS_BREAKER_CLOSED = 0,
    COMPASS_BREAKER_OPEN = 1,
    COMPASS_BREAKER_HALF_OPEN = 2
} compass_breaker_state;

#define COMPASS_CAP_TOOLS (1u << 0)
#define COMPASS_CAP_VISION (1u << 1)
#define COMPASS_CAP_JSON (1u << 2)
#define COMPASS_CAP_STREAM (1u << 3)

/** One candidate deployment with the live stats the core keeps. Borrowed. */
typedef struct compass_candidate {
    size_t size;
    compass_str id;             /* "deployment/model" */
    compass_str provider;       /* deployment name */
    compass_str model;          /* upstream model */
    int tier;                   /* 1 premium, 2 balanced, 3 fast, 4 specialised; 0 unset */
    double weight;              /* from config; 1 when unset */
    double price_in;            /* USD per 1M input tokens */
    double price_out;           /* USD per 1M output tokens */
    double latency_ewma_ms;     /* total latency */
    double ttft_ewma_ms;        /* time to first token */
    double error_rate;          /* failures / attempts over the window, 0..1 */
    int64_t in_flight;
    int64_t capacity;           /* configured concurrent capacity; 0 unlimited */
    int breaker;                /* compass_breaker_state */
    unsigned caps;              /* COMPASS_CAP_* */
    int64_t context_window;     /* tokens; 0 unknown */
} compass_candidate;

/** What a router sees of the request. Borrowed. */
typedef struct compass_route_request {
    size_t size;
    compass_str route;          /* the model name the client asked for */
    size_t n_messages;
    size_t n_chars;
    int64_t est_prompt_tokens;
    int has_tools;
    int has_images;
    int stream;
    compass_str key_id;
    const compass_header *metadata; /* caller metadata, name/value */
    size_t n_metadata;
    int64_t now_ms;
    const compass_chat_request *chat;
} compass_route_request;

typedef struct compass_router_ops {
    size_t size;
    int (*instance_new)(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err);
    void (*instance_free)(void *inst);
    /** Writes into order[] the indexes of the candidates to try, best first; *n_order holds
     *  the capacity (n) on entry and the count written on return. cands is an array of n
     *  pointers (so compass_candidate can grow without breaking built routers); all borrowed.
     *  May be called from several threads at once for one instance. */
    int (*rank)(void *inst, compass_req *req, const compass_route_request *rr,
                const compass_candidate *const *cands, size_t n, size_t *order,
                size_t *n_order, compass_err *err);
} compass_router_ops;

/* ---------------------------------------------------------------------------------------- */
/* Pattern ops: multi-step workflows driven through host->complete                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct compass_pattern_input {
    size_t size;
    compass_str input;          /* the task text */
    compass_str params;         /* JSON text of the workflow's parameters; may be empty */
} compass_pattern_input;

typedef struct compass_pattern_ops {
    size_t size;
    int (*instance_new)(const compass_host *h, const compass_instance_info *info, void **inst,
                        compass_err *err);
    void (*instance_free)(void *inst);
    /** Starts a run: issue steps with h->complete, or finish at once with h->run_finish. */
    int (*on_start)(void *inst, compass_run *run, const compass_pattern_input *in,
                    compass_err *err);
    /** A step finished. Issue more steps or finish the run. */
    int (*on_step)(void *inst, compass_run *run, const compass_step_result *res,
                   compass_err *err);
    /** The run was cancelled; release what *run_data holds. */
    void (*on_cancel)(void *inst, compass_run *run);
} compass_pattern_ops;

/* ---------------------------------------------------------------------------------------- */
/* The descriptor                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef enum compass_plugin_kind {
    COMPASS_PLUGIN_PROVIDER = 1,
    COMPASS_PLUGIN_ROUTER = 2,
    COMPASS_PLUGIN_PATTERN = 3
} compass_plugin_kind;

typedef struct compass_plugin_desc {
    /* These three never move. */
    uint32_t abi_major;
    uint32_t abi_minor;
    size_t size;

    int kind;                  /* compass_plugin_kind */
    const char *name;          /* unique; [a-z0-9_-]+; matches the config's plugin name */
    const char *version;
    const char *summary;
    const compass_option *options; /* per-instance options, ending in a NULL name; or NULL */
    size_t options_size;           /* sizeof the struct the options are written into */

    /** Plugin lifetime: called once after the descriptor passed the host's checks. h is
     *  host-owned until fini. Optional. */
    int (*init)(const compass_host *h, compass_err *err);
    /** Called once before the plugin is unloaded. Optional. */
    void (*fini)(void);

    union {
        const void *any;
        const compass_provider_ops *provider;
        const compass_router_ops *router;
        const compass_pattern_ops *pattern;
    } ops;
} compass_plugin_desc;

/** The first fields of every descriptor: `COMPASS_PLUGIN_DESC_INIT, .kind = ...`. */
#define COMPASS_PLUGIN_DESC_INIT                                                              \
    .abi_major = COMPASS_ABI_MAJOR, .abi_minor = COMPASS_ABI_MINOR,                           \
    .size = sizeof(compass_plugin_desc)

/** The entry symbol's type. It takes nothing, does nothing else, and returns the descriptor. */
typedef const compass_plugin_desc *(*compass_plugin_entry_fn)(void);

#define COMPASS_PLUGIN_ENTRY_SYMBOL "compass_plugin_entry"

/**
 * Exports the plugin's entry points for descriptor `desc` (a static const
 * compass_plugin_desc): compass_plugin_entry for dlopen, and compass_plugin_entry_<name> for
 * static linking into a host.
 */
#define COMPASS_PLUGIN_DEFINE(name, desc)                                                     \
    COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry_##name(void);       \
    COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry_##name(void)        \
    {                                                                                         \
        return &(desc);                                                                       \
    }                                                                                         \
    COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry(void);              \
    COMPASS_PLUGIN_EXTERN const compass_plugin_desc *compass_plugin_entry(void)               \
    {                                                                                         \
        return &(desc);                                                                       \
    }

/* ---------------------------------------------------------------------------------------- */
/* Short, type-checked wrappers                                                              */
/* ---------------------------------------------------------------------------------------- */

/** Fills err (may be NULL) with code and a message; returns code. */
static inline int compass_err_set(compass_err *err, int code, const char *msg)
{
    if (err) {
        size_t n = msg ? strlen(msg) : 0;
        if (n >= sizeof(err->msg))
            n = sizeof(err->msg) - 1;
        err->code = code;
        if (n)
            memcpy(err->msg, msg, n);
        err->msg[n] = '\0';
    }
    return code;
}

/** Copies at most cap-1 bytes of s into a fixed buffer and NUL-terminates it. */
static inline void compass_copy_fixed(char *dst, size_t cap, compass_str s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/** Initialises an upstream error with an outcome and status; texts empty, no retry delay. */
static inline void compass_uerr_init(compass_upstream_error *u, int outcome, int http_status)
{
    memset(u, 0, sizeof(*u));
    u->size = sizeof(*u);
    u->outcome = outcome;
    u->http_status = http_status;
    u->retry_after_ms = -1;
}

/** The outcome a plain HTTP status implies, for classify_error fallbacks. */
static inline int compass_outcome_from_status(int status)
{
    if (status >= 200 && status < 300)
        return COMPASS_OUTCOME_OK;
    if (status == 429)
        return COMPASS_OUTCOME_RATE_LIMITED;
    if (status == 401 || status == 403)
        return COMPASS_OUTCOME_AUTH;
    if (status == 404)
        return COMPASS_OUTCOME_NOT_FOUND;
    if (status == 400 || status == 413 || status == 422)
        return COMPASS_OUTCOME_BAD_REQUEST;
    if (status == 408 || status == 409 || status >= 500 || status == 0)
        return COMPASS_OUTCOME_RETRYABLE;
    return COMPASS_OUTCOME_FATAL;
}

/** Finds a header by case-insensitive name; returns its value or an empty string. */
static inline compass_str compass_header_get(const compass_header *hs, size_t n,
                                             const char *name)
{
    size_t want = strlen(name), i, k;
    compass_str none = {NULL, 0};
    for (i = 0; i < n; i++) {
        if (hs[i].name.len != want)
            continue;
        for (k = 0; k < want; k++) {
            char a = hs[i].name.ptr[k], b = name[k];
            if (a >= 'A' && a <= 'Z')
                a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z')
                b = (char)(b - 'A' + 'a');
            if (a != b)
                break;
        }
        if (k == want)
            return hs[i].value;
    }
    return none;
}

#ifdef __cplusplus
}
#endif

#endif /* COMPASS_PLUGIN_H */
