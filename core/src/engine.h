/* Engine internals shared by engine.c (configuration generations, routing, public API),
 * loop.c (the event loop: upstream transfers, timers, the request state machine) and host.c
 * (the services table handed to plugins). */
#ifndef COMPASS_CORE_ENGINE_H
#define COMPASS_CORE_ENGINE_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>

#define COMPASS_BUILDING 1
#include <compass/compass.h>

#include "arena.h"
#include "buf.h"
#include "config.h"
#include "loader.h"
#include "metrics.h"
#include "sse.h"

#define CPS_MAX_ATTEMPTS 16

/* Live stats of one deployment/model; kept by the engine across reloads. */
typedef struct cps_stats {
    struct cps_stats *next;
    char *key; /* "deployment/model" */
    atomic_long in_flight;
    pthread_mutex_t mu;
    double ewma_ms, ewma_ttft_ms, err_ewma;
    unsigned long long ok, fail;
    int consecutive_fail;
    /* circuit breaker (guarded by mu) */
    int breaker;               /* compass_breaker_state */
    uint64_t opened_ns, cooldown_ns, closed_ns;
    int trips;                 /* openings in a row: picks the cooldown */
    int64_t half_ok;
    int probe;                 /* a half-open probe is in flight */
    uint64_t w_idx[10];
    uint32_t w_ok[10], w_fail[10];
    uint64_t next_check_ns;    /* active health checks: when the next probe is due */
    /* the last 64 times to first token, for hedging at p95 */
    float ttft_ring[64];
    unsigned ttft_n, ttft_pos;
    /* the metric series every answered request updates, made on first use */
    _Atomic(cps_metric *) m_ok, m_duration, m_prompt, m_completion;
} cps_stats;

typedef struct cps_deployment {
    const cps_cfg_deployment *cfg;
    cps_plugin *plugin;
    void *inst;
    char *api_key;
    int enabled;
    char disabled_reason[128];
    cps_arena *opt_arena;
} cps_deployment;

typedef struct cps_target {
    cps_deployment *dep;
    const char *model;
    char *id; /* "deployment/model" */
    cps_stats *stats;
} cps_target;

typedef struct cps_route {
    const char *name;
    const cps_cfg_route *cfg; /* NULL for implicit routes */
    cps_target **targets;
    size_t n;
    cps_plugin *router;
    void *router_inst;
    int max_attempts;
    int implicit; /* a concrete model name served by one or more deployments */
    cps_arena *opt_arena;
} cps_route;

typedef struct cps_gen {
    atomic_int refs;
    struct compass_engine *e;
    cps_config *cfg;
    cps_deployment *deps;
    size_t n_deps;
    cps_target *targets;
    size_t n_targets;
    cps_route *routes;
    size_t n_routes;
    cps_plugin **plugins;
    size_t n_plugins;
} cps_gen;

struct compass_req {
    struct compass_engine_call *call;
    cps_arena *arena;
    void *plugin_data;
};

typedef struct cps_attempt_log {
    const char *target;
    char what[24];
    int status;
    int kind;
} cps_attempt_log;

enum call_phase { PH_NEW, PH_UPSTREAM, PH_LOCAL_WAIT, PH_DONE };

struct compass_engine_call {
    struct compass_engine *e;
    struct cps_loop *loop;     /* set when the call reaches a loop; it stays there */
    cps_gen *gen;
    atomic_int refs;
    atomic_int cancel_requested;
    cps_arena *arena;
    compass_chat_request req;
    int kind;                  /* compass_engine_endpoint */
    compass_embed_request ereq;
    compass_header *metadata;
    size_t n_metadata;
    int follows;               /* follow-up calls made in this attempt */
    const char *route_name;
    char request_id[80];
    char key_id[80];
    compass_engine_callbacks cb;
    void *ud;
    uint64_t start_ns;
    int64_t created;

    /* the plan */
    cps_route *route;
    cps_target **order;       /* arena, or one_target; up to 64 */
    cps_target *one_target[1];
    size_t n_order, next;
    int max_attempts;

    /* the current attempt */
    enum call_phase phase;
    cps_target *target;
    struct compass_req preq;
    CURL *easy;
    struct curl_slist *slist;
    struct cps_url *url;      /* the loop's parsed form of the URL, while the transfer runs */
    compass_http_request hreq;
    long status;
    int status_checked;
    cps_buf body, hdrs;
    cps_sse sse;
    uint64_t attempt_start_ns, first_byte_ns, last_byte_ns;
    int stream_ended, saw_finish;
    int attempt_failed;
    compass_upstream_error *fail_uerr; /* arena, made when an attempt fails */
    const char *fail_what;
    int probe;              /* this attempt is its target's half-open probe */
    int round;              /* retry round over the candidates */
    int timer_kind;         /* 0: in-process delivery, 1: retry round */
    int64_t retry_after_ms; /* largest Retry-After seen this round */
    uint64_t deadline_ns;   /* 0: none */
    int skipped_open;       /* candidates skipped because their breaker was open */
    unsigned seed;          /* jitter */
    /* hedging: a primary call may start one hedge call; they share the client */
    struct compass_engine_call *peer; /* primary: its hedge while it runs; hedge: its primary */
    int is_hedge;
    int hedged;             /* primary: a hedge was started (or will not be) */
    int claimed;            /* primary: 0 undecided, 1 primary owns the client, 2 hedge owns */
    int silent;             /* finished without a word to the client (lost or failed first) */
    int in_all;
    int internal;           /* a health check: no client, not counted as a request */
    /* what planning did, for errors and --explain-route */
    int n_filtered;
    char *filter_msg;       /* arena */
    int router_fell_back;
    char *router_msg;       /* arena */
    struct compass_engine_call *act_prev, *act_next; /* active-transfer list */
    /* in-process providers */
    compass_local_result *local; /* arena; only for in-process providers */
    size_t local_next;
    uint64_t timer_due;
    unsigned timer_gen;
    int timer_pending;

    /* the answer */
    int committed;          /* head sent to the client */
    int role_pending;
    char chunk_id[96];
    const char *chunk_model;
    uint64_t first_content_ns;
    compass_usage usage;
    size_t out_chars;
    cps_buf chunk;
    cps_attempt_log *log;   /* arena, made on first use; cap_log entries */
    int cap_log;
    int n_log;
    int finished;

    struct compass_engine_call *q_next; /* loop queue */
    struct compass_engine_call *all_prev, *all_next; /* every live call, for close */
};

typedef struct cps_timer {
    uint64_t due;
    struct compass_engine_call *call;
    unsigned gen;
} cps_timer;

/* An upstream URL parsed once by libcurl's URL API and handed to each transfer to it
 * (CURLOPT_CURLU), so that curl neither parses it again nor prints it back per request. */
typedef struct cps_url {
    char *text;
    size_t len;
    CURLU *uh;
    unsigned users;    /* transfers holding it; only an unused entry is replaced */
    uint64_t used;     /* the loop's counter when last handed out (least recent goes first) */
} cps_url;

typedef struct cps_msg {
    struct cps_msg *next;
    int kind; /* 1 start, 2 cancel */
    struct compass_engine_call *call;
} cps_msg;

/* One event loop: an epoll set, a curl multi handle, a timer heap and the calls it runs.
 * Everything here is touched only by the loop's own thread, except the queue (q_mu) and the
 * wakeup. Health checks run on loop 0. */
typedef struct cps_loop {
    struct compass_engine *e;
    int index;
    char metric_label[24];     /* loop="<index>" */
    cps_metric *m_requests;    /* compass_loop_requests_total{loop} */
    pthread_t thread;
    int thread_started;
    CURLM *multi;
    pthread_mutex_t q_mu;
    cps_msg *q_head, *q_tail;
    int stop;
    cps_timer *timers;
    size_t n_timers, cap_timers;
    struct compass_engine_call *active;
    struct compass_engine_call *all;
    CURL *easy_pool[256];      /* idle easy handles, options kept (see launch) */
    size_t n_easy_pool;
    cps_url urls[16];
    uint64_t url_clock;
    uint8_t *fdstate;          /* per curl socket: what the loop's epoll watches (loop.c) */
    size_t n_fdstate;
    uint64_t last_scan_ns;
    int epfd, wakefd;          /* the loop waits on epoll; other threads wake it via eventfd */
    atomic_int wake_pending;
    int curl_timer_set;
    uint64_t curl_due;
    uint64_t next_health_scan_ns;
} cps_loop;

struct compass_engine {
    char *config_path;
    char *config_text;
    void (*log_fn)(void *ud, int level, const char *msg);
    void *log_ud;
    int log_level;
    char **extra_paths;
    size_t n_extra_paths;

    pthread_mutex_t gen_mu;
    cps_gen *gen;
    pthread_mutex_t reload_mu;

    pthread_mutex_t plugins_mu;
    cps_plugin **plugins; /* cache shared by generations, refcounted */
    size_t n_plugins, cap_plugins;

    pthread_mutex_t stats_mu;
    cps_stats *stats;

    cps_metrics *metrics;
    compass_host host_tmpl;
    atomic_long in_flight;
    atomic_ulong seq;
    atomic_int closing;

    /* the event loops: each runs its own calls (a call stays on the loop it started on) */
    struct cps_loop *loops;
    int n_loops;
    atomic_uint next_loop;     /* round robin for calls submitted from outside any loop */
    int want_loops;            /* compass_engine_opts.loops */
    unsigned long serial;      /* unique among the engines this process opened (from 1) */
    int external;              /* no threads: the host calls compass_engine_run / _loop_run */
    int run_pending;           /* external: the host runs a loop while it has calls queued, so
                                  its own thread's submits need no eventfd write */
    atomic_int has_checks;     /* some deployment has active health checks */
};

/* engine.c */
void cps_log(struct compass_engine *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t cps_now_ns(void);
void cps_gen_unref(cps_gen *g);
void cps_stats_record(cps_stats *s, int ok, double ms, double ttft_ms);
/** The p95 of the recent times to first token in ms, or -1 with fewer than 8 samples. */
double cps_stats_ttft_p95(cps_stats *s);

/* breaker.c: every function takes s->mu itself. */
enum { CPS_DENY = 0, CPS_ALLOW = 1, CPS_PROBE = 2 };
/** Whether a new attempt may go to s now; CPS_PROBE when it is the half-open probe. */
int cps_breaker_allow(cps_stats *s, const cps_breaker_cfg *b, uint64_t now);
/** Records an attempt's outcome; returns the new state when it changed, else -1. */
int cps_breaker_record(cps_stats *s, const cps_breaker_cfg *b, int ok, int probe, uint64_t now);
/** Releases a probe slot without an outcome (cancelled attempt). */
void cps_breaker_release(cps_stats *s, int probe);
/** The state as a router sees it now (open turns half-open once its cooldown is over). */
int cps_breaker_state(cps_stats *s, const cps_breaker_cfg *b, uint64_t now);
const char *cps_breaker_name(int state);
int64_t cps_estimate_prompt_tokens(const compass_chat_request *r, size_t *chars);

/* loop.c */
int cps_loop_start(struct compass_engine *e, int n_loops, compass_err *err);
void cps_loop_stop(struct compass_engine *e);
/* external_loop engines: one turn of every loop on the caller's thread. */
void cps_loop_pump(struct compass_engine *e, int wait_ms);
void cps_loop_post(struct compass_engine *e, int kind, struct compass_engine_call *call);
void cps_call_unref(struct compass_engine_call *c);
/* Answers a call at once with an error (caller's thread or loop). */
void cps_call_fail_now(struct compass_engine_call *c, int status, const char *type,
                       const char *param, const char *code, const char *msg);
int cps_call_emit(struct compass_engine_call *c, const compass_chat_delta *d);

/* host.c */
void cps_host_init(compass_host *h);

#endif
