/*
 * mockllm_streams: open N concurrent streaming chat requests to mockllm on 127.0.0.1 with one
 * epoll loop and check that every one ends with "data: [DONE]". While they run, sample the
 * server's thread count from /proc/PID/status.
 *
 * usage: mockllm_streams PORT SERVER_PID N CHUNK_DELAY_MS CHUNKS TIME_LIMIT_S
 * Prints one JSON line: {"ok":N,"failed":N,"max_open":N,"threads_min":N,"threads_max":N,
 *                        "secs":S}; exits 0 iff all N streams completed.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

typedef struct conn {
    int fd;
    size_t sent;
    bool done, ok;
    char tail[32]; /* last bytes received */
    size_t tail_len;
    bool status_seen, status_ok;
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long arg(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end) {
        fprintf(stderr, "bad number '%s'\n", s);
        exit(2);
    }
    return v;
}

static int threads_of(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) {
            n = (int)strtol(line + 8, NULL, 10);
            break;
        }
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: mockllm_streams PORT PID N CHUNK_DELAY_MS CHUNKS LIMIT_S\n");
        return 2;
    }
    long port = arg(argv[1]), pid = arg(argv[2]), n = arg(argv[3]), delay = arg(argv[4]),
         chunks = arg(argv[5]), limit = arg(argv[6]);
    if (n <= 0 || port <= 0 || port > 65535)
        return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    static const char body[] = "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":"
                               "\"user\",\"content\":\"one two three four five six seven\"}]}";
    /* 200 characters, so up to 200 chunks */
    static const char content[] =
        "The quick brown fox jumps over the lazy dog while the mock upstream streams this "
        "sentence one piece at a time to check that thousands of slow streams stay cheap "
        "and on time.";
    char req[1024];
    int rl_len = snprintf(req, sizeof req,
                          "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Content-Type: application/json\r\nx-mock-chunk-delay-ms: %ld\r\n"
                          "x-mock-chunks: %ld\r\nx-mock-content: %s\r\n"
                          "Connection: close\r\nContent-Length: %zu\r\n\r\n"
                          "%s",
                          delay, chunks, content, sizeof body - 1, body);
    if (rl_len < 0 || (size_t)rl_len >= sizeof req)
        return 2;

    conn *cs = calloc((size_t)n, sizeof *cs);
    int ep = epoll_create1(0);
    if (!cs || ep < 0) {
        perror("setup");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);

    double t0 = now_s(), last_sample = 0;
    long opened = 0, open_now = 0, max_open = 0, finished = 0;
    int tmin = 1 << 30, tmax = -1;
    struct epoll_event evs[256];

    while (finished < n && now_s() - t0 < (double)limit) {
        /* open up to 200 new connections per round */
        for (int k = 0; k < 200 && opened < n; k++, opened++) {
            conn *c = &cs[opened];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0 || (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
                              errno != EINPROGRESS)) {
                fprintf(stderr, "connect: %s\n", strerror(errno));
                if (c->fd >= 0)
                    close(c->fd);
                c->done = true;
                finished++;
                continue;
            }
            struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                                    .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
            open_now++;
            if (open_now > max_open)
                max_open = open_now;
        }
        int m = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < m; i++) {
            conn *c = evs[i].data.ptr;
            if (c->done)
                continue;
            if ((evs[i].events & EPOLLOUT) && c->sent < (size_t)rl_len) {
                ssize_t w = send(c->fd, req + c->sent, (size_t)rl_len - c->sent, MSG_NOSIGNAL);
                if (w > 0)
                    c->sent += (size_t)w;
                if (c->sent == (size_t)rl_len) {
                    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                char buf[16384];
                for (;;) {
                    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                    if (r > 0) {
                        if (!c->status_seen && r >= 12) {
                            c->status_seen = true;
                            c->status_ok = memcmp(buf, "HTTP/1.1 200", 12) == 0;
                        }
                        /* keep the last 32 bytes */
                        size_t keep = sizeof c->tail;
                        if ((size_t)r >= keep) {
                            memcpy(c->tail, buf + r - (ssize_t)keep, keep);
                            c->tail_len = keep;
                        } else {
                            size_t have = c->tail_len + (size_t)r > keep ? keep - (size_t)r
                                                                         : c->tail_len;
                            memmove(c->tail, c->tail + c->tail_len - have, have);
                            memcpy(c->tail + have, buf, (size_t)r);
                            c->tail_len = have + (size_t)r;
                        }
                        continue;
                    }
                    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                        /* chunked body ends "data: [DONE]\n\n" + "\r\n0\r\n\r\n" */
                        c->ok = c->status_ok && c->tail_len > 0 &&
                                memmem(c->tail, c->tail_len, "[DONE]", 6) != NULL;
                        c->done = true;
                        close(c->fd);
                        open_now--;
                        finished++;
                    }
                    break;
                }
            }
        }
        double t = now_s();
        if (t - last_sample > 0.2) {
            last_sample = t;
            int th = threads_of(pid);
            if (th < tmin)
                tmin = th;
            if (th > tmax)
                tmax = th;
        }
    }
    long ok = 0;
    for (long i = 0; i < n; i++) {
        if (cs[i].ok)
            ok++;
        else if (!cs[i].done && i < opened)
            close(cs[i].fd);
    }
    printf("{\"ok\":%ld,\"failed\":%ld,\"max_open\":%ld,\"threads_min\":%d,\"threads_max\":%d,"
           "\"secs\":%.2f}\n",
           ok, n - ok, max_open, tmin, tmax, now_s() - t0);
    free(cs);
    close(ep);
    return ok == n ? 0 : 1;
}
