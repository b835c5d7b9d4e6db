/* compassd: the compass daemon. The first program built on libcompass: it owns the process
 * (arguments, signals, logging to stderr) and puts an HTTP front door on an engine. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <compass/compass.h>
#include <json-c/json.h>

#include "buf.h"
#include "http.h"

#ifndef COMPASS_DEFAULT_PLUGIN_DIR
#define COMPASS_DEFAULT_PLUGIN_DIR "/usr/local/lib/compass/plugins"
#endif

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* The lines a worker logs during a turn of its loop (a line per request) wait in its buffer
 * and leave in one write() at the end of the turn: a write per line cost a fifth of the
 * throughput. Other threads write theirs at once. log_mu keeps lines whole. */
static _Thread_local cps_buf *tls_log;

static void write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void log_flush(void)
{
    if (!tls_log || !tls_log->len)
        return;
    pthread_mutex_lock(&log_mu);
    write_all(tls_log->ptr, tls_log->len);
    pthread_mutex_unlock(&log_mu);
    cps_buf_reset(tls_log);
}

static void log_line(const char *json)
{
    if (tls_log) {
        if (tls_log->len > 64 * 1024)
            log_flush();
        size_t mark = tls_log->len;
        if (!cps_buf_puts(tls_log, json) && !cps_buf_puts(tls_log, "\n"))
            return;
        tls_log->len = mark; /* out of memory: write this one now */
    }
    size_t n = strlen(json);
    char *line = malloc(n + 1);
    pthread_mutex_lock(&log_mu);
    if (line) {
        memcpy(line, json, n);
        line[n] = '\n';
        write_all(line, n + 1);
    } else {
        write_all(json, n);
        write_all("\n", 1);
    }
    pthread_mutex_unlock(&log_mu);
    free(line);
}

static void log_json(int level, const char *msg)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    cps_buf b;
    cps_buf_init(&b);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    cps_buf_printf(&b, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":", when,
                   ts.tv_nsec / 1000000, level >= 0 && level <= 3 ? names[level] : "info");
    cps_buf_json_str(&b, msg, strlen(msg));
    cps_buf_puts(&b, "}");
    if (!b.oom)
        log_line(b.ptr);
    cps_buf_free(&b);
}

static void engine_log(void *ud, int level, const char *msg)
{
    (void)ud;
    log_json(level, msg);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: compassd [--config FILE] [--listen HOST:PORT] [--port-file FILE]\n"
            "                [--plugin-dir DIR] [--log-level LEVEL]\n"
            "       compassd --check-config FILE\n"
            "       compassd [--config FILE] --explain-route REQUEST.json\n"
            "       compassd --version | --help\n"
            "\n"
            "  --config FILE       configuration (default: etc/compassd.conf)\n"
            "  --check-config FILE validate FILE and its plugins, print the first error as\n"
            "                      file:line, exit 0 when valid and 1 when not\n"
            "  --explain-route F   print how a chat request (JSON file) would be routed: each\n"
            "                      candidate, its live state, what the strategy chose and why\n"
            "  --listen HOST:PORT  override server.listen (port 0 picks a free port)\n"
            "  --port-file FILE    write the bound port to FILE once listening\n"
            "  --plugin-dir DIR    search DIR for plugins before the config's paths\n"
            "  --log-level LEVEL   error, warn, info (default) or debug\n"
            "\n"
            "Signals: SIGHUP reloads the configuration, plugins and Lua policies; SIGTERM and\n"
            "SIGINT stop taking connections, let requests in flight finish, then exit.\n");
}

static int parse_level(const char *s)
{
    if (!strcmp(s, "error"))
        return COMPASS_LOG_ERROR;
    if (!strcmp(s, "warn"))
        return COMPASS_LOG_WARN;
    if (!strcmp(s, "debug"))
        return COMPASS_LOG_DEBUG;
    return COMPASS_LOG_INFO;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_reload(compass_engine *e)
{
    compass_err err;
    if (compass_engine_reload(e, &err))
        log_json(COMPASS_LOG_ERROR, err.msg[0] ? err.msg : "reload failed");
}

static void log_drain(compass_engine *e, int drain)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "shutting down: draining %ld requests in flight (up to %d s)",
             compass_engine_in_flight(e), drain);
    log_json(COMPASS_LOG_INFO, msg);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether this worker's drain is over: nothing in flight and no client of its own left (idle
 * keep-alive clients hold it at most a second), or the drain time ran out. */
static int drained(compass_engine *e, cpd_http *h, double t0, int drain)
{
    double el = mono_s() - t0;
    if (el >= drain)
        return 1;
    if (compass_engine_in_flight(e) != 0)
        return 0;
    return cpd_http_open_connections(h) == 0 || el >= 1;
}

/* One worker per event loop: its own libmicrohttpd daemon and the engine's loop of the same
 * index share one epoll on one thread, so a request never crosses a thread. Worker 0 also
 * takes the signals and tells the others to drain through their eventfd.
 *
 * With several workers, worker 0 accepts every connection on the one listening socket and
 * hands each to the worker that holds the fewest (through that worker's eventfd). SO_REUSEPORT
 * listeners would let the kernel hash connections onto workers instead, which measured 45/55
 * splits of 64 keep-alive connections: the busier worker then sets the tail latency. */
struct worker {
    compass_engine *e;
    cpd_http *h;
    int index;
    int drain;
    int wake;                 /* eventfd: worker 0 -> this worker, "drain now" */
    int sfd;                  /* worker 0: the signalfd, else -1 */
    int lfd;                  /* worker 0 with several workers: the listening socket, else -1 */
    int next_pick;            /* worker 0: where the next tie-break starts */
    double accept_paused;     /* worker 0: when accepting stopped for want of descriptors */
    double accept_warned;     /* worker 0: when that was last logged */
    struct worker *all;
    int n_all;
    pthread_t th;
    int rc;
};

static atomic_int g_draining;
static _Atomic double g_drain_t0;

static void start_drain(struct worker *w)
{
    if (atomic_exchange(&g_draining, 1))
        return;
    atomic_store(&g_drain_t0, mono_s());
    log_drain(w->e, w->drain);
    uint64_t one = 1;
    for (int i = 0; i < w->n_all; i++)
        if (w->all[i].wake >= 0 && write(w->all[i].wake, &one, sizeof(one)) < 0)
            log_json(COMPASS_LOG_WARN, "cannot wake a worker to drain");
}

/* Worker 0: accepts what is waiting and hands each connection to the least loaded worker. */
static void accept_all(struct worker *w, int ep)
{
    for (int k = 0; k < 256; k++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(w->lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the connection stays in the backlog and the socket stays readable: stop
                 * watching it for a while rather than spin on it (run_worker resumes) */
                epoll_ctl(ep, EPOLL_CTL_DEL, w->lfd, NULL);
                w->accept_paused = mono_s();
                if (w->accept_paused - w->accept_warned >= 10) { /* a line per 10 s */
                    w->accept_warned = w->accept_paused;
                    log_json(COMPASS_LOG_WARN, "out of file descriptors: new connections wait "
                                               "in the backlog (retried every 100 ms)");
                }
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                       errno != ECONNABORTED) {
                log_json(COMPASS_LOG_WARN, "accept failed");
            }
            return;
        }
        /* the fewest connections wins; ties go round the workers, so that short
         * connections made one after another do not all land on one worker */
        struct worker *best = NULL;
        long least = 0;
        for (int i = 0; i < w->n_all; i++) {
            struct worker *x = &w->all[(w->next_pick + i) % w->n_all];
            long n = cpd_http_connections(x->h);
            if (!best || n < least) {
                least = n;
                best = x;
            }
        }
        w->next_pick = (w->next_pick + 1) % w->n_all;
        cpd_http_hand(best->h, fd, (struct sockaddr *)&sa, (unsigned)len);
        uint64_t one = 1;
        if (best == w)
            cpd_http_take_handed(w->h);
        else if (write(best->wake, &one, sizeof(one)) < 0)
            log_json(COMPASS_LOG_WARN, "cannot wake a worker for a new connection");
    }
}

static int run_worker(struct worker *w)
{
    compass_engine *e = w->e;
    cpd_http *h = w->h;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int hfd = cpd_http_fd(h), efd = compass_engine_loop_fd(e, w->index);
    if (ep < 0 || hfd < 0 || efd < 0) {
        log_json(COMPASS_LOG_ERROR, "cannot set up the event loop");
        if (ep >= 0)
            close(ep);
        return 1;
    }
    int fds[5] = {hfd, efd, w->wake, w->sfd, w->lfd};
    for (int i = 0; i < 5; i++) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.fd = fds[i];
        if (fds[i] >= 0)
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    cps_buf logbuf;
    cps_buf_init(&logbuf);
    tls_log = &logbuf;
    /* the first turn marks this thread as the loop's own: requests it submits stay here */
    int engine_next = compass_engine_loop_run(e, w->index), draining = 0;
    double engine_due = engine_next < 0 ? -1 : mono_s() + engine_next / 1000.0;
    for (;;) {
        int to = cpd_http_timeout_ms(h);
        if (engine_due >= 0) {
            int left = (int)((engine_due - mono_s()) * 1000 + 0.999);
            left = left < 0 ? 0 : left;
            if (to < 0 || left < to)
                to = left;
        }
        if (draining && (to < 0 || to > 20))
            to = 20;
        if (compass_engine_loop_pending(e, w->index) || cpd_http_resumed(h))
            to = 0; /* the rounds below stopped at their cap with work left */
        if (w->accept_paused > 0 && !draining) {
            int left = (int)((w->accept_paused + 0.1 - mono_s()) * 1000) + 1;
            if (left <= 0) {
                struct epoll_event lev;
                memset(&lev, 0, sizeof(lev));
                lev.events = EPOLLIN;
                lev.data.fd = w->lfd;
                epoll_ctl(ep, EPOLL_CTL_ADD, w->lfd, &lev);
                w->accept_paused = 0;
            } else if (to < 0 || to > left) {
                to = left;
            }
        }
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, to);
        /* a timeout (n == 0) runs only what is due: the engine's timer (below), or
         * libmicrohttpd's (cpd_http_run asks) */
        int engine_ready = n < 0 || draining, http_ready = n < 0 || draining;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == efd) {
                engine_ready = 1;
            } else if (fd == hfd) {
                http_ready = 1;
            } else if (fd == w->sfd) {
                struct signalfd_siginfo si;
                while (read(w->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                    if (si.ssi_signo == SIGHUP)
                        on_reload(e);
                    else
                        start_drain(w);
                }
            } else if (fd == w->wake && w->wake >= 0) {
                uint64_t v;
                if (read(w->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    log_json(COMPASS_LOG_WARN, "worker wakeup read failed");
                cpd_http_take_handed(h);
                http_ready = 1;
            } else if (fd == w->lfd && w->lfd >= 0 && !draining) {
                accept_all(w, ep);
                http_ready = 1;
            }
        }
        if (!draining && atomic_load(&g_draining)) {
            draining = 1;
            cpd_http_quiesce(h);
            if (w->lfd >= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, w->lfd, NULL); /* ENOENT while paused: fine */
                close(w->lfd);
                w->lfd = -1;
            }
        }
        /* the engine when its descriptor or its timer says so (its answers resume
         * connections), then the front door when its descriptor, a resumed connection or its
         * timeout says so (it sends the answers and submits new requests), and again while
         * one left work for the other: neither a resumed connection nor a request submitted
         * here wakes this epoll (the engine runs with run_pending). libmicrohttpd finishes an
         * answer over a few runs (its timeout says 0 meanwhile), so those runs stay here too */
        if (engine_due >= 0 && mono_s() >= engine_due)
            engine_ready = 1;
        for (int round = 0; round < 8; round++) {
            if (engine_ready || compass_engine_loop_pending(e, w->index)) {
                engine_next = compass_engine_loop_run(e, w->index);
                engine_due = engine_next < 0 ? -1 : mono_s() + engine_next / 1000.0;
            }
            cpd_http_run(h, http_ready);
            engine_ready = http_ready = 0;
            if (!compass_engine_loop_pending(e, w->index) && !cpd_http_resumed(h) &&
                cpd_http_timeout_ms(h) != 0)
                break;
        }
        log_flush();
        if (draining && drained(e, h, atomic_load(&g_drain_t0), w->drain))
            break;
    }
    log_flush();
    tls_log = NULL;
    cps_buf_free(&logbuf);
    close(ep);
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->rc = run_worker(w);
    return NULL;
}

/* Runs n workers (worker 0 on this thread) until a drain ends; stops their front doors. */
static int run_workers(struct worker *ws, int n, const sigset_t *set)
{
    int rc = 0, started = 0;
    ws[0].sfd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (ws[0].sfd < 0) {
        log_json(COMPASS_LOG_ERROR, "cannot set up the signal descriptor");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        ws[i].wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (ws[i].wake < 0)
            rc = 1;
    }
    for (int i = 1; i < n && !rc; i++) {
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i])) {
            log_json(COMPASS_LOG_ERROR, "cannot start a worker thread");
            rc = 1;
        } else {
            started++;
        }
    }
    if (rc)
        start_drain(&ws[0]); /* the started ones stop at once */
    else
        rc = run_worker(&ws[0]);
    for (int i = 1; i <= started; i++) {
        pthread_join(ws[i].th, NULL);
        rc |= ws[i].rc;
    }
    for (int i = 0; i < n; i++)
        if (ws[i].wake >= 0)
            close(ws[i].wake);
    close(ws[0].sfd);
    return rc;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *check = NULL, *listen = NULL, *port_file = NULL;
    const char *explain = NULL;
    const char *plugin_dirs[8];
    size_t n_dirs = 0;
    int level = COMPASS_LOG_INFO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("compassd %s (plugin ABI %d.%d)\n", compass_version(), COMPASS_ABI_MAJOR,
                   COMPASS_ABI_MINOR);
            return 0;
        } else if ((!strcmp(a, "--config") || !strcmp(a, "-c")) && next) {
            config = next;
            i++;
        } else if (!strcmp(a, "--check-config") && next) {
            check = next;
            i++;
        } else if (!strcmp(a, "--explain-route") && next) {
            explain = next;
            i++;
        } else if (!strcmp(a, "--listen") && next) {
            listen = next;
            i++;
        } else if (!strcmp(a, "--port-file") && next) {
            port_file = next;
            i++;
        } else if (!strcmp(a, "--plugin-dir") && next && n_dirs < 7) {
            plugin_dirs[n_dirs++] = next;
            i++;
        } else if (!strcmp(a, "--log-level") && next) {
            level = parse_level(next);
            i++;
        } else {
            fprintf(stderr, "compassd: unknown or incomplete argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    plugin_dirs[n_dirs++] = COMPASS_DEFAULT_PLUGIN_DIR;

    /* Signals are taken synchronously by the main thread; block them before any thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    compass_engine_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.log = engine_log;
    opts.log_level = check ? COMPASS_LOG_ERROR : level;
    opts.plugin_paths = plugin_dirs;
    opts.n_plugin_paths = n_dirs;
    compass_err err;
    compass_engine *e = NULL;

    if (check) {
        int rc = compass_engine_open(&e, check, &opts, &err);
        if (rc) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        compass_engine_close(e, 0);
        printf("%s: configuration OK\n", check);
        return 0;
    }
    if (!config)
        config = "etc/compassd.conf";
    if (explain) {
        FILE *f = fopen(explain, "rb");
        if (!f) {
            fprintf(stderr, "compassd: cannot open %s\n", explain);
            return 2;
        }
        cps_buf body;
        cps_buf_init(&body);
        char tmp[4096];
        size_t got;
        while ((got = fread(tmp, 1, sizeof(tmp), f)) > 0)
            cps_buf_append(&body, tmp, got);
        fclose(f);
        opts.log_level = COMPASS_LOG_ERROR;
        if (compass_engine_open(&e, config, &opts, &err)) {
            fprintf(stderr, "compassd: %s\n", err.msg);
            cps_buf_free(&body);
            return 1;
        }
        int status = 0;
        char *plan = compass_engine_explain(e, body.ptr ? body.ptr : "", body.len, &status);
        json_object *o = plan ? json_tokener_parse(plan) : NULL;
        printf("%s\n", o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE)
                         : (plan ? plan : "(no answer)"));
        json_object_put(o);
        compass_free(plan);
        cps_buf_free(&body);
        compass_engine_close(e, 0);
        return status == 200 ? 0 : 1;
    }
    raise_fd_limit();
    opts.external_loop = 1; /* compassd drives the engine's loops from its workers (above) */
    opts.loops = COMPASS_LOOPS_FROM_CONFIG; /* server.threads: one loop per worker */
    opts.run_pending = 1; /* the workers run their loop while it has calls queued (above) */
    int rc = compass_engine_open(&e, config, &opts, &err);
    if (rc) {
        fprintf(stderr, "compassd: %s\n", err.msg);
        return 1;
    }
    char host[256];
    int port, drain, log_requests;
    long max_body, max_conns;
    compass_engine_server_config(e, host, sizeof(host), &port, &max_body, NULL, &max_conns,
                                 &drain, &log_requests);
    if (listen) {
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen) {
            fprintf(stderr, "compassd: --listen '%s' is not HOST:PORT\n", listen);
            compass_engine_close(e, 0);
            return 2;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
        port = (int)strtol(colon + 1, NULL, 10);
    }
    /* one worker per engine loop, each with its own front door on the same port */
    int n = compass_engine_loops(e);
    /* A worker allocates and frees on its own thread: one malloc arena per worker, and no
     * more (glibc would make up to 8 per core; measured: one shared arena costs a third of
     * the throughput at 2 workers, and each extra arena adds RSS under thousands of streams) */
    mallopt(M_ARENA_MAX, n);
    struct worker *ws = calloc((size_t)n, sizeof(*ws));
    char msg[300];
    if (!ws) {
        fprintf(stderr, "compassd: out of memory\n");
        compass_engine_close(e, 0);
        return 1;
    }
    int lfd = -1;
    if (n > 1 && (lfd = cpd_http_listen(host, port, &port, msg, sizeof(msg))) < 0) {
        fprintf(stderr, "compassd: %s\n", msg);
        free(ws);
        compass_engine_close(e, 0);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        /* server.max_connections is the whole daemon's: each front door gets its share */
        cpd_http_opts ho = {host,      port,     max_body, (max_conns + n - 1) / n,
                            log_requests, log_line, n > 1};
        ws[i] = (struct worker){e, NULL, i, drain, -1, -1, i == 0 ? lfd : -1, 0, 0, -100, ws, n, 0, 0};
        ws[i].h = cpd_http_start(e, &ho, msg, sizeof(msg));
        if (!ws[i].h) {
            fprintf(stderr, "compassd: %s\n", msg);
            for (int j = 0; j < i; j++)
                cpd_http_stop(ws[j].h);
            if (lfd >= 0)
                close(lfd);
            free(ws);
            compass_engine_close(e, 0);
            return 1;
        }
        if (n == 1)
            port = cpd_http_port(ws[0].h);
    }
    snprintf(msg, sizeof(msg), "compassd %s listening on %s:%d (%d event loop%s)",
             compass_version(), host, port, n, n == 1 ? "" : "s");
    log_json(COMPASS_LOG_INFO, msg);
    if (port_file) {
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d\n", port);
            fclose(f);
            rename(tmp, port_file);
        }
    }

    rc = run_workers(ws, n, &set);
    if (ws[0].lfd >= 0)
        close(ws[0].lfd); /* a worker that failed to start ended the run before draining */
    for (int i = 0; i < n; i++)
        cpd_http_stop(ws[i].h);
    free(ws);
    compass_engine_close(e, 0);
    log_json(COMPASS_LOG_INFO, "stopped");
    return rc;
}
