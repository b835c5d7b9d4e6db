#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void th_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static int wait_port(th_proc *p, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 20) {
        FILE *f = fopen(p->port_file, "r");
        if (f) {
            int port = 0;
            int ok = fscanf(f, "%d", &port) == 1;
            fclose(f);
            if (ok && port > 0) {
                p->port = port;
                return 0;
            }
        }
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = 0;
            return -1;
        }
        th_sleep_ms(20);
    }
    return -1;
}

int th_mockllm_start(th_proc *p)
{
    memset(p, 0, sizeof(*p));
    char *argv[] = {(char *)MOCKLLM_BIN, "--port", "0", "--port-file", p->port_file, "--quiet",
                    NULL};
    static int counter;
    snprintf(p->port_file, sizeof(p->port_file), "/tmp/compass-it-%d-ml%d.port", (int)getpid(),
             ++counter);
    snprintf(p->log_file, sizeof(p->log_file), "/tmp/compass-it-%d-ml%d.log", (int)getpid(),
             counter);
    unlink(p->port_file);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(p->log_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    p->pid = pid;
    return wait_port(p, 15000);
}

static char *replace_all(const char *s, const char *what, const char *with)
{
    size_t wl = strlen(what), nl = strlen(with), n = 0;
    for (const char *q = strstr(s, what); q; q = strstr(q + wl, what))
        n++;
    char *out = malloc(strlen(s) + n * (nl + 1) + 1), *o = out;
    if (!out)
        return NULL;
    while (*s) {
        if (!strncmp(s, what, wl)) {
            memcpy(o, with, nl);
            o += nl;
            s += wl;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

const char *th_write_config(int slot, const char *text, const th_proc *m, const th_proc *m2)
{
    static char paths[32][256];
    if (slot < 0 || slot >= 32)
        slot = 31; /* the harness's table is fixed; tests use small distinct slots */
    char url[64], url2[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", m ? m->port : 1);
    snprintf(url2, sizeof(url2), "http://127.0.0.1:%d", m2 ? m2->port : 1);
    char *a = replace_all(text, "@MOCKLLM@", url);
    char *b = replace_all(a, "@MOCKLLM2@", url2);
    char *c0 = replace_all(b, "@PLUGINS@", COMPASS_PLUGIN_DIR);
    /* COMPASS_IT_THREADS=N runs every case with N event loops (ctest's integration_loops) */
    const char *thr = getenv("COMPASS_IT_THREADS");
    char with[32];
    snprintf(with, sizeof(with), "threads = %d;", thr ? atoi(thr) : 1);
    char *c = replace_all(c0, "threads = 1;", with);
    free(c0);
    snprintf(paths[slot], sizeof(paths[slot]), "/tmp/compass-it-%d-%d.conf", (int)getpid(), slot);
    FILE *f = fopen(paths[slot], "w");
    if (f) {
        fputs(c, f);
        fclose(f);
    }
    free(a);
    free(b);
    free(c);
    return paths[slot];
}

int th_compassd_start(th_proc *p, const char *conf)
{
    memset(p, 0, sizeof(*p));
    char *argv[] = {(char *)COMPASSD_BIN, "--config", (char *)conf, "--listen", "127.0.0.1:0",
                    "--port-file", p->port_file, NULL};
    static int counter;
    snprintf(p->port_file, sizeof(p->port_file), "/tmp/compass-it-%d-cd%d.port", (int)getpid(),
             ++counter);
    snprintf(p->log_file, sizeof(p->log_file), "/tmp/compass-it-%d-cd%d.log", (int)getpid(),
             counter);
    unlink(p->port_file);
    argv[6] = p->port_file;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(p->log_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    p->pid = pid;
    return wait_port(p, 15000);
}

void th_signal(th_proc *p, int sig)
{
    if (p->pid > 0)
        kill(p->pid, sig);
}

int th_stop(th_proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    for (int t = 0; t < timeout_ms; t += 10) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            unlink(p->port_file);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        th_sleep_ms(10);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    return -1;
}

char *th_log(const th_proc *p)
{
    FILE *f = fopen(p->log_file, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

struct sink {
    char *p;
    size_t n;
};

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    char *np = realloc(s->p, s->n + n + 1);
    if (!np)
        return 0;
    memcpy(np + s->n, ptr, n);
    s->n += n;
    np[s->n] = '\0';
    s->p = np;
    return n;
}

int th_http(int port, const char *method, const char *path, const char *body,
            const char *const *headers, long timeout_ms, th_resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *h = curl_easy_init();
    if (!h)
        return -1;
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct sink hs = {NULL, 0}, bs = {NULL, 0};
    struct curl_slist *sl = curl_slist_append(NULL, "Content-Type: application/json");
    for (const char *const *x = headers; x && *x; x++)
        sl = curl_slist_append(sl, *x);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &bs);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, sink_write);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 20000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &r->total_s);
    curl_slist_free_all(sl);
    curl_easy_cleanup(h);
    /* lower-case header names */
    for (char *line = hs.p; line && *line;) {
        char *colon = strchr(line, ':'), *nl = strchr(line, '\n');
        if (colon && (!nl || colon < nl))
            for (char *c = line; c < colon; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
        line = nl ? nl + 1 : NULL;
    }
    r->headers = hs.p ? hs.p : strdup("");
    r->body = bs.p ? bs.p : strdup("");
    r->body_len = bs.n;
    return rc == CURLE_OK ? 0 : (int)rc;
}

void th_post_all(int port, const char *path, const char *const *bodies, int n, int own_conn,
                 long *codes, char **outs, void (*turn)(void *ctx), void *ctx)
{
    CURLM *multi = curl_multi_init();
    CURL **hs = calloc((size_t)n, sizeof(*hs));
    FILE **fs = calloc((size_t)n, sizeof(*fs));
    size_t *lens = calloc((size_t)n, sizeof(*lens));
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *sl = curl_slist_append(NULL, "Content-Type: application/json");
    FILE *devnull = fopen("/dev/null", "w");
    for (int i = 0; i < n; i++) {
        codes[i] = 0;
        if (outs)
            fs[i] = open_memstream(&outs[i], &lens[i]);
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_POSTFIELDS, bodies[i]);
        curl_easy_setopt(hs[i], CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, outs ? fs[i] : devnull);
        curl_easy_setopt(hs[i], CURLOPT_FORBID_REUSE, own_conn ? 1L : 0L);
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(hs[i], CURLOPT_PRIVATE, (void *)&codes[i]);
        curl_multi_add_handle(multi, hs[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 50, NULL);
        if (turn)
            turn(ctx);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)))
        if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK) {
            long *code = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&code);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, code);
        }
    for (int i = 0; i < n; i++) {
        if (outs)
            fclose(fs[i]);
        curl_multi_remove_handle(multi, hs[i]);
        curl_easy_cleanup(hs[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(sl);
    fclose(devnull);
    free(hs);
    free(fs);
    free(lens);
}

void th_resp_free(th_resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

char *th_header(const th_resp *r, const char *name)
{
    char key[128];
    snprintf(key, sizeof(key), "\n%s:", name);
    const char *p = strstr(r->headers, key);
    if (!p)
        return NULL;
    p += strlen(key);
    while (*p == ' ')
        p++;
    const char *e = p;
    while (*e && *e != '\r' && *e != '\n')
        e++;
    return strndup(p, (size_t)(e - p));
}

int th_mock_next(const th_proc *m, const char *knobs_json)
{
    th_resp r;
    int rc = th_http(m->port, "POST", "/_mock/next", knobs_json, NULL, 5000, &r);
    int ok = rc == 0 && r.status >= 200 && r.status < 300;
    th_resp_free(&r);
    return ok ? 0 : -1;
}

json_object *th_mock_stats(const th_proc *m)
{
    th_resp r;
    if (th_http(m->port, "GET", "/_mock/stats", NULL, NULL, 5000, &r)) {
        th_resp_free(&r);
        return NULL;
    }
    json_object *o = json_tokener_parse(r.body);
    th_resp_free(&r);
    return o;
}

static json_object *walk(json_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save)) {
        json_object *v = NULL;
        if (json_object_is_type(o, json_type_array)) {
            o = json_object_array_get_idx(o, (size_t)strtol(k, NULL, 10));
            continue;
        }
        if (!json_object_object_get_ex(o, k, &v))
            return NULL;
        o = v;
    }
    return o;
}

long th_json_int(json_object *o, const char *path)
{
    json_object *v = walk(o, path);
    return v ? (long)json_object_get_int64(v) : -1;
}

const char *th_json_str(json_object *o, const char *path)
{
    json_object *v = walk(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

int th_sse_parse(const char *body, char **content, int *saw_done, int *n_error,
                 long *usage_total, char **finish_reason)
{
    size_t cap = strlen(body) + 1;
    char *acc = calloc(1, cap);
    size_t al = 0;
    int n = 0;
    *saw_done = 0;
    *n_error = 0;
    *usage_total = -1;
    if (finish_reason)
        *finish_reason = NULL;
    for (const char *p = strstr(body, "data: "); p; p = strstr(p, "\ndata: ")) {
        if (*p == '\n')
            p++;
        p += 6;
        const char *e = strstr(p, "\n\n");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        n++;
        if (len == 6 && !strncmp(p, "[DONE]", 6)) {
            *saw_done = 1;
            p += len;
            continue;
        }
        char *ev = strndup(p, len);
        json_object *o = json_tokener_parse(ev);
        free(ev);
        if (o) {
            json_object *x;
            if (json_object_object_get_ex(o, "error", &x))
                (*n_error)++;
            const char *c = th_json_str(o, "choices.0.delta.content");
            if (c) {
                size_t cl = strlen(c);
                memcpy(acc + al, c, cl < cap - al - 1 ? cl : cap - al - 1);
                al += cl < cap - al - 1 ? cl : cap - al - 1;
            }
            const char *fr = th_json_str(o, "choices.0.finish_reason");
            if (fr && finish_reason) {
                free(*finish_reason);
                *finish_reason = strdup(fr);
            }
            long ut = th_json_int(o, "usage.total_tokens");
            if (ut >= 0)
                *usage_total = ut;
            json_object_put(o);
        }
        p += len;
    }
    acc[al] = '\0';
    *content = acc;
    return n;
}
