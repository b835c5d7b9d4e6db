/*
 * libcompass: the compass AI gateway core as a C library.
 *
 * An engine reads a compassd.conf, loads the provider, router and pattern plugins it names,
 * and answers OpenAI-format chat requests through them: routing, failover, timeouts, usage and
 * metrics included, with no HTTP hop. compassd is one program built on this API.
 *
 * Threads: every function is thread-safe. An engine runs one event-loop thread of its own that
 * drives all upstream I/O (libcurl multi); callbacks run on that thread, or on the calling
 * thread when a request is answered at once (a malformed body, an unknown model). Callbacks
 * must not block.
 *
 * libcompass installs no signal handlers and never writes to stdout; log lines go to the
 * engine's log callback (stderr by default).
 */
#ifndef COMPASS_COMPASS_H
#define COMPASS_COMPASS_H

#include <compass/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(COMPASS_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define COMPASS_API __attribute__((visibility("default")))
#else
#define COMPASS_API
#endif

typedef struct compass_engine compass_engine;
typedef struct compass_engine_call compass_engine_call;

/** Options for opening an engine. Zero-initialise, set size, fill what you need. */
typedef struct compass_engine_opts {
    size_t size;
    /** Log sink (level, message without newline). NULL logs to stderr. Any thread. */
    void (*log)(void *ud, int level, const char *msg);
    void *log_ud;
    int log_level;                     /* compass_log_level: lines up to it are logged
                                          (COMPASS_LOG_ERROR, the zero value, is quietest);
                                          with opts NULL the level is WARN */
    const char *const *plugin_paths;   /* searched before the config's paths; may be NULL */
    size_t n_plugin_paths;
    /** 1: the engine starts no thread; the host runs it from its own event loop by waiting
     *  for compass_engine_fd() to be readable (or compass_engine_run()'s timeout to pass) and
     *  calling compass_engine_run(). Callbacks then run on the host's thread. */
    int external_loop;
    /** Event loops (Since 0.2). 0 or 1: one. N > 1: N loops, each with its own upstream
     *  connections and timers; a call stays on the loop it started on. A call submitted from a
     *  loop's own thread (a callback, or the thread that runs compass_engine_loop_run(e, i))
     *  goes to that loop, others are spread in turn. COMPASS_LOOPS_FROM_CONFIG: the config's
     *  server.threads (0 there: one per online CPU). With external_loop, the host runs each
     *  loop i with compass_engine_loop_fd / compass_engine_loop_run, each from one thread. */
    int loops;
    /** external_loop engines (Since 0.3): 1 when the host, before it waits again, runs
     *  compass_engine_loop_run(e, i) for as long as compass_engine_loop_pending(e, i) says 1.
     *  A call submitted on loop i's own thread then writes nothing to loop i's descriptor: the
     *  host starts it on its next run instead (a wakeup and two syscalls less per request). */
    int run_pending;
} compass_engine_opts;

#define COMPASS_LOOPS_FROM_CONFIG (-1)

/**
 * Opens an engine from a config file (or, with compass_engine_open_string, from config text).
 * Returns 0 and *out, or a COMPASS_E* code with err->msg ("file:line: what" for config
 * errors, the plugin path and reason for plugin errors). opts may be NULL.
 * Since: 0.1
 */
COMPASS_API int compass_engine_open(compass_engine **out, const char *config_path,
                                    const compass_engine_opts *opts, compass_err *err);
COMPASS_API int compass_engine_open_string(compass_engine **out, const char *config_text,
                                           const compass_engine_opts *opts, compass_err *err);

/**
 * Re-reads the config file and plugins (Lua policies included) and swaps them in. Requests in
 * flight finish on the old configuration; new ones see the new one. On error nothing changes.
 */
COMPASS_API int compass_engine_reload(compass_engine *e, compass_err *err);

/** Stops taking requests, waits up to drain_ms for those in flight, cancels the rest, frees.
 *  external_loop engines: call it once no host thread runs the loops any more (it runs them
 *  itself while it drains). */
COMPASS_API void compass_engine_close(compass_engine *e, int drain_ms);

/** external_loop engines: a descriptor that becomes readable when the engine has work. */
COMPASS_API int compass_engine_fd(compass_engine *e);

/** external_loop engines: does the work that is due without blocking; returns the number of
 *  milliseconds after which it should run again even if its fd stays quiet (-1: no timer). */
COMPASS_API int compass_engine_run(compass_engine *e);

/** The number of event loops (see compass_engine_opts.loops). */
COMPASS_API int compass_engine_loops(compass_engine *e);

/** external_loop engines: compass_engine_fd / compass_engine_run for loop i (0 <= i <
 *  compass_engine_loops(e)); those two are loop 0's. Run each loop from one thread only.
 *  Since: 0.2 */
COMPASS_API int compass_engine_loop_fd(compass_engine *e, int i);
COMPASS_API int compass_engine_loop_run(compass_engine *e, int i);

/** external_loop engines: 1 when loop i has calls queued that its next run starts, else 0.
 *  Any thread. Since: 0.3 */
COMPASS_API int compass_engine_loop_pending(compass_engine *e, int i);

/** Requests in flight right now. */
COMPASS_API long compass_engine_in_flight(compass_engine *e);

/* ---- one request, asynchronously --------------------------------------------------------- */

/** What the engine decided about a request, told once before any body byte. Borrowed. */
typedef struct compass_engine_head {
    size_t size;
    int status;               /* HTTP status to answer with */
    int stream;               /* 1: chunks follow, then on_done */
    const char *content_type; /* "application/json" or "text/event-stream" */
    const char *request_id;
    const char *route;        /* the name the client asked for; may be "" */
    const char *provider;     /* deployment that answered; "" when none */
    const char *model;        /* upstream model that answered; "" when none */
    int attempts;             /* upstream attempts made */
    double cost_usd;          /* estimated, from the deployment's prices; -1 when unknown */
} compass_engine_head;

/** How a request ended. Borrowed. */
typedef struct compass_engine_result {
    size_t size;
    int status;               /* the HTTP status the client saw */
    int rc;                   /* 0, or COMPASS_ECANCELED, COMPASS_EUPSTREAM, ... */
    const char *body;         /* the whole JSON body for non-streamed answers; "" for streams */
    size_t body_len;
    const char *request_id;
    const char *route, *provider, *model;
    const char *attempts_log; /* "dep/model:outcome[:status]" joined with ", " */
    int attempts;
    compass_usage usage;
    double latency_ms;
    double ttft_ms;           /* streams: time to first content; else equals latency_ms */
    double cost_usd;
} compass_engine_result;

typedef struct compass_engine_callbacks {
    size_t size;
    /** Once, before any body: the status and what answered. May be NULL. */
    void (*on_head)(void *ud, const compass_engine_head *head);
    /** Streams: one SSE event payload (an OpenAI chunk JSON, an error object, or "[DONE]"),
     *  without the "data: " framing. May be NULL. */
    void (*on_chunk)(void *ud, const char *data, size_t len);
    /** Streams: the canonical delta behind each chunk, for embedders. May be NULL. */
    void (*on_delta)(void *ud, const compass_chat_delta *d);
    /** Exactly once, last. Required. */
    void (*on_done)(void *ud, const compass_engine_result *res);
} compass_engine_callbacks;

typedef enum compass_engine_endpoint {
    COMPASS_ENDPOINT_CHAT = 0,       /* OpenAI /v1/chat/completions */
    COMPASS_ENDPOINT_EMBEDDINGS = 1  /* OpenAI /v1/embeddings */
} compass_engine_endpoint;

/** Per-request inputs besides the body. Zero-initialise and set size. */
typedef struct compass_engine_request {
    size_t size;
    const char *body;         /* OpenAI JSON for the endpoint; copied */
    size_t body_len;
    const char *request_id;   /* echoed; NULL generates one */
    const char *key_id;       /* the caller's key id, for routing and budgets; may be NULL */
    int endpoint;             /* compass_engine_endpoint */
    const compass_header *metadata; /* caller requirements for routers (e.g. latency=realtime,
                                       accuracy=critical); copied; may be NULL */
    size_t n_metadata;
    int explain;              /* 1: answer with the routing plan as JSON; call no upstream */
} compass_engine_request;

/**
 * Starts one chat completion. cb and ud must stay valid until on_done returns. *call (may be
 * NULL) identifies the request for compass_engine_cancel and is valid until on_done returns.
 * Returns 0 when the request was taken (on_done will be called exactly once, possibly before
 * this returns), or a COMPASS_E* code when it was not (no callback is called).
 */
COMPASS_API int compass_engine_submit(compass_engine *e, const compass_engine_request *req,
                                      const compass_engine_callbacks *cb, void *ud,
                                      compass_engine_call **call);

/**
 * Asks for a request to stop (its client went away). Asynchronous: the upstream transfer is
 * cancelled on the engine's thread and on_done follows with rc COMPASS_ECANCELED, unless the
 * request had already finished. Call it only before on_done has returned.
 */
COMPASS_API void compass_engine_cancel(compass_engine_call *call);

/* ---- one request, synchronously ---------------------------------------------------------- */

/**
 * Runs one chat completion and waits for it. Streams are delivered through on_delta (may be
 * NULL) while the call waits. On return *status_out holds the HTTP status and *body_out a
 * malloc'd JSON body (the chat.completion, or an OpenAI error object; for streams, the last
 * error or ""), to release with compass_free. Returns 0 when an answer (success or error) was
 * produced.
 */
COMPASS_API int compass_engine_chat(compass_engine *e, const char *body, size_t body_len,
                                    void (*on_delta)(void *ud, const compass_chat_delta *d),
                                    void *ud, int *status_out, char **body_out);

/* ---- introspection ----------------------------------------------------------------------- */

/**
 * How the engine would route this request body, as JSON: the route and its strategy, every
 * candidate with its live stats and breaker state, which ones cannot serve the request and
 * why, the order the strategy chose (or why it fell back to priority order). No upstream is
 * called. malloc'd; compass_free. *status_out (may be NULL) gets 200, or the error status
 * the request itself would get (the body is then that error).
 */
COMPASS_API char *compass_engine_explain(compass_engine *e, const char *body, size_t len,
                                         int *status_out);

/** GET /v1/models: routes and concrete models, OpenAI list JSON. malloc'd; compass_free. */
COMPASS_API char *compass_engine_models_json(compass_engine *e);
/** GET /api/v1/providers: deployments, their models and live state, JSON. */
COMPASS_API char *compass_engine_providers_json(compass_engine *e);
/** GET /metrics: Prometheus text exposition. */
COMPASS_API char *compass_engine_metrics_text(compass_engine *e);
/** The listen address and limits from the config, for a front door. */
COMPASS_API int compass_engine_server_config(compass_engine *e, char *host, size_t host_cap,
                                             int *port, long *max_body_bytes, int *threads,
                                             long *max_connections, int *drain_seconds,
                                             int *log_requests);

/** Releases memory libcompass returned. */
COMPASS_API void compass_free(void *p);

/** The text for a COMPASS_E* code ("invalid argument"), and its symbol ("COMPASS_EINVAL"). */
COMPASS_API const char *compass_strerror(int code);
COMPASS_API const char *compass_errname(int code);

/** libcompass's version, "MAJOR.MINOR.PATCH". */
COMPASS_API const char *compass_version(void);

#ifdef __cplusplus
}
#endif

#endif /* COMPASS_COMPASS_H */
