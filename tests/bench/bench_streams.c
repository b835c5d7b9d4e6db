/*
 * bench_streams: open N concurrent streaming chat requests (libcurl multi, socket API on one
 * epoll loop) against an OpenAI-compatible endpoint on 127.0.0.1 and count how they end.
 *
 * usage: bench_streams URL N RAMP_MS LIMIT_S [MODEL] [CHUNKS] [CHUNK_DELAY_MS]
 *   URL      e.g. http://127.0.0.1:8080/v1/chat/completions
 *   N        number of streams
 *   RAMP_MS  all N requests are started within this many milliseconds (evenly)
 *   LIMIT_S  hard limit for the whole run; unfinished streams count as failed
 *   MODEL    model name (default gpt-4o-mini)
 *   CHUNKS, CHUNK_DELAY_MS  mockllm knobs, sent as a #mock{...} directive inside the last
 *            user message so that they survive a gateway (default 100 and 100: ~10 s).
 *            mockllm echoes the message, and cannot split its reply in more pieces than it
 *            has characters: the message is ~170 characters, so CHUNKS up to ~180 hold.
 *
 * A stream is "ok" when it got HTTP 200, no transport error, and its body ends with
 * "data: [DONE]". Everything else is "failed" (curl error, non-200, missing [DONE]).
 * Prints one line:
 *   streams n=N ok=N failed=N max_open=N ramp_s=S max_s=S p50_s=S p99_s=S wall_s=S
 * and, on stderr, up to 10 grouped failure reasons. Exit 0 iff every stream was ok.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

typedef struct stream {
    CURL *easy;
    double t_start, t_end;
    bool started, done, ok;
    char tail[32];
    size_t tail_len;
    size_t bytes;
    long status;
    CURLcode rc;
} stream;

static int ep = -1;
static int tfd = -1;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "bench_streams: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    stream *s = ud;
    size_t r = sz * nm, keep = sizeof s->tail;
    s->bytes += r;
    if (r >= keep) {
        memcpy(s->tail, p + r - keep, keep);
        s->tail_len = keep;
    } else {
        size_t have = s->tail_len + r > keep ? keep - r : s->tail_len;
        memmove(s->tail, s->tail + s->tail_len - have, have);
        memcpy(s->tail + have, p, r);
        s->tail_len = have + r;
    }
    return r;
}

/* CURLMOPT_SOCKETFUNCTION: keep epoll in sync with what curl wants to watch. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *up, void *sp)
{
    (void)e;
    (void)up;
    struct epoll_event ev = {.data.fd = fd};
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (epoll_ctl(ep, sp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
        if (errno == ENOENT)
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        else if (errno == EEXIST)
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    }
    return 0;
}

static CURLM *multi_for_assign;
static int on_socket_wrap(CURL *e, curl_socket_t fd, int what, void *up, void *sp)
{
    if (what != CURL_POLL_REMOVE && !sp)
        curl_multi_assign(multi_for_assign, fd, (void *)1);
    return on_socket(e, fd, what, up, sp);
}

/* CURLMOPT_TIMERFUNCTION: arm the timerfd. */
static int on_timer(CURLM *m, long timeout_ms, void *up)
{
    (void)m;
    (void)up;
    struct itimerspec its = {0};
    if (timeout_ms > 0) {
        its.it_value.tv_sec = timeout_ms / 1000;
        its.it_value.tv_nsec = (timeout_ms % 1000) * 1000000;
    } else if (timeout_ms == 0) {
        its.it_value.tv_nsec = 1; /* as soon as possible */
    }
    timerfd_settime(tfd, 0, &its, NULL);
    return 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct reason {
    char text[160];
    long count;
};

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 8) {
        fprintf(stderr,
                "usage: bench_streams URL N RAMP_MS LIMIT_S [MODEL] [CHUNKS] [CHUNK_DELAY_MS]\n");
        return 2;
    }
    const char *url = argv[1];
    long n = num(argv[2], "N"), ramp_ms = num(argv[3], "RAMP_MS"),
         limit_s = num(argv[4], "LIMIT_S");
    const char *model = argc > 5 ? argv[5] : "gpt-4o-mini";
    long chunks = argc > 6 ? num(argv[6], "CHUNKS") : 100;
    long delay = argc > 7 ? num(argv[7], "CHUNK_DELAY_MS") : 100;
    if (n <= 0 || limit_s <= 0)
        return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64)
        fprintf(stderr, "bench_streams: warning: RLIMIT_NOFILE %llu < N+64\n",
                (unsigned long long)rl.rlim_cur);

    char body[1024];
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"stream\":true,\"messages\":["
                      "{\"role\":\"system\",\"content\":\"You are a concise assistant.\"},"
                      "{\"role\":\"user\",\"content\":\"Please write a short story about a lighthouse "
                      "keeper who finds a message in a bottle, in about two hundred words, with a "
                      "hopeful ending and no dialogue at all. "
                      "#mock{\\\"chunks\\\":%ld,\\\"chunk_delay_ms\\\":%ld}\"}]}",
                      model, chunks, delay);
    if (bl < 0 || (size_t)bl >= sizeof body)
        return 2;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return 2;
    CURLM *m = curl_multi_init();
    stream *ss = calloc((size_t)n, sizeof *ss);
    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!m || !ss || ep < 0 || tfd < 0) {
        perror("bench_streams: setup");
        return 2;
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.fd = tfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    multi_for_assign = m;
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket_wrap);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)n + 16);

    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
    hdrs = curl_slist_append(hdrs, "Expect:");

    for (long i = 0; i < n; i++) {
        CURL *e = curl_easy_init();
        if (!e) {
            fprintf(stderr, "bench_streams: curl_easy_init failed at %ld\n", i);
            return 2;
        }
        ss[i].easy = e;
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)bl);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &ss[i]);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &ss[i]);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, limit_s);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(e, CURLOPT_IPRESOLVE, CURL_IPRESOLVE_V4);
    }

    double t0 = now_s(), deadline = t0 + (double)limit_s, ramp_end = 0;
    long added = 0, finished = 0, open_now = 0, max_open = 0;
    int running = 0;
    struct epoll_event evs[512];

    while (finished < n && now_s() < deadline) {
        /* start the requests that are due by now on the ramp */
        double el = now_s() - t0;
        long due = ramp_ms > 0 ? (long)((double)n * el * 1000.0 / (double)ramp_ms) + 1 : n;
        if (due > n)
            due = n;
        while (added < due) {
            ss[added].t_start = now_s();
            ss[added].started = true;
            curl_multi_add_handle(m, ss[added].easy);
            added++;
            open_now++;
            if (added == n)
                ramp_end = now_s() - t0;
        }
        if (open_now > max_open)
            max_open = open_now;

        int wait_ms = added < n ? 5 : 100;
        int k = epoll_wait(ep, evs, 512, wait_ms);
        if (k < 0 && errno != EINTR) {
            perror("bench_streams: epoll_wait");
            break;
        }
        bool timer_fired = false;
        for (int i = 0; i < k; i++) {
            if (evs[i].data.fd == tfd) {
                uint64_t x;
                while (read(tfd, &x, sizeof x) > 0) {
                }
                timer_fired = true;
                continue;
            }
            int f = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(m, evs[i].data.fd, f, &running);
        }
        if (timer_fired || k == 0)
            curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);

        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            stream *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            s->rc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &s->status);
            s->t_end = now_s();
            s->done = true;
            s->ok = s->rc == CURLE_OK && s->status == 200 && s->tail_len > 0 &&
                    memmem(s->tail, s->tail_len, "data: [DONE]", 12) != NULL;
            curl_multi_remove_handle(m, msg->easy_handle);
            finished++;
            open_now--;
        }
    }
    double wall = now_s() - t0;
    if (added < n)
        ramp_end = wall;

    /* tally */
    long ok = 0;
    double *dur = calloc((size_t)n, sizeof *dur);
    long nd = 0;
    double max_s = 0;
    struct reason reasons[10];
    int n_reasons = 0;
    long other_reasons = 0;
    for (long i = 0; i < n; i++) {
        stream *s = &ss[i];
        double d = s->done ? s->t_end - s->t_start : (s->started ? now_s() - s->t_start : 0);
        if (s->started) {
            dur[nd++] = d;
            if (d > max_s)
                max_s = d;
        }
        if (s->ok) {
            ok++;
            continue;
        }
        char why[160];
        if (!s->started)
            snprintf(why, sizeof why, "never started (time limit)");
        else if (!s->done)
            snprintf(why, sizeof why, "unfinished at the time limit (%ld s)", limit_s);
        else if (s->rc != CURLE_OK)
            snprintf(why, sizeof why, "curl: %s", curl_easy_strerror(s->rc));
        else if (s->status != 200)
            snprintf(why, sizeof why, "HTTP %ld", s->status);
        else
            snprintf(why, sizeof why, "HTTP 200 without final data: [DONE]");
        int j;
        for (j = 0; j < n_reasons; j++)
            if (!strcmp(reasons[j].text, why))
                break;
        if (j < n_reasons)
            reasons[j].count++;
        else if (n_reasons < 10) {
            snprintf(reasons[n_reasons].text, sizeof reasons[n_reasons].text, "%s", why);
            reasons[n_reasons++].count = 1;
        } else
            other_reasons++;
    }
    qsort(dur, (size_t)nd, sizeof *dur, cmp_d);
    double p50 = nd ? dur[(size_t)((double)(nd - 1) * 0.50)] : 0;
    double p99 = nd ? dur[(size_t)((double)(nd - 1) * 0.99)] : 0;
    printf("streams n=%ld ok=%ld failed=%ld max_open=%ld ramp_s=%.2f max_s=%.2f p50_s=%.2f "
           "p99_s=%.2f wall_s=%.2f\n",
           n, ok, n - ok, max_open, ramp_end, max_s, p50, p99, wall);
    for (int j = 0; j < n_reasons; j++)
        fprintf(stderr, "bench_streams: failed %ld: %s\n", reasons[j].count, reasons[j].text);
    if (other_reasons)
        fprintf(stderr, "bench_streams: failed %ld: other reasons\n", other_reasons);
    fflush(stdout);

    /* tear down quickly: abandon what is left */
    for (long i = 0; i < n; i++) {
        if (ss[i].started && !ss[i].done)
            curl_multi_remove_handle(m, ss[i].easy);
        curl_easy_cleanup(ss[i].easy);
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    free(dur);
    free(ss);
    return ok == n ? 0 : 1;
}
