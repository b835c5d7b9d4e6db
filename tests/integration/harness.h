/* Integration harness: start compassd and mockllm on free ports on 127.0.0.1, talk HTTP. */
#ifndef COMPASS_TEST_HARNESS_H
#define COMPASS_TEST_HARNESS_H

#include <json-c/json.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct th_proc {
    pid_t pid;
    int port;
    char port_file[256];
    char log_file[256];
} th_proc;

typedef struct th_resp {
    long status;
    char *headers; /* raw header block, lower-cased names */
    char *body;
    size_t body_len;
    double total_s;
} th_resp;

/** Starts mockllm; returns 0 and fills p. */
int th_mockllm_start(th_proc *p);
/** Writes conf text (with @MOCKLLM@ replaced by "http://127.0.0.1:<port>" of m, and
 *  @PLUGINS@ by the plugin build dir) to a temp file; returns its path (static buffer per slot). */
const char *th_write_config(int slot, const char *text, const th_proc *m, const th_proc *m2);
/** Starts compassd on conf with --listen 127.0.0.1:0; extra args may be NULL. */
int th_compassd_start(th_proc *p, const char *conf);
/** Sends sig and waits up to timeout_ms; returns the exit status, or -1 (then SIGKILLs). */
int th_stop(th_proc *p, int sig, int timeout_ms);
/** Sends a signal without waiting. */
void th_signal(th_proc *p, int sig);
/** Reads the process's stderr log so far (malloc'd). */
char *th_log(const th_proc *p);

/** One HTTP request to 127.0.0.1:port. body may be NULL (GET). headers: NULL-terminated
 *  "Name: value" list, may be NULL. timeout_ms 0 means 20 s. */
int th_http(int port, const char *method, const char *path, const char *body,
            const char *const *headers, long timeout_ms, th_resp *r);
void th_resp_free(th_resp *r);
/** POSTs bodies[0..n) as JSON to 127.0.0.1:port path, all at once. own_conn: a connection of
 *  its own each. codes[i]: each one's HTTP status, 0 when its transfer failed. outs (may be
 *  NULL): outs[i] each body, malloc'd. turn (may be NULL): called with ctx after every poll
 *  while some are running. */
void th_post_all(int port, const char *path, const char *const *bodies, int n, int own_conn,
                 long *codes, char **outs, void (*turn)(void *ctx), void *ctx);
/** A response header's value (malloc'd) or NULL. */
char *th_header(const th_resp *r, const char *name);

/** POST JSON to mockllm's control endpoint. */
int th_mock_next(const th_proc *m, const char *knobs_json);
/** GET mockllm's /_mock/stats parsed (json_object_put when done). */
json_object *th_mock_stats(const th_proc *m);
long th_json_int(json_object *o, const char *path); /* dotted path */
const char *th_json_str(json_object *o, const char *path);

/** Parses an SSE body: returns the number of data events; fills content (concatenated
 *  delta.content, malloc'd), saw_done, n_error (events with an "error" key), usage_total. */
int th_sse_parse(const char *body, char **content, int *saw_done, int *n_error,
                 long *usage_total, char **finish_reason);

void th_sleep_ms(long ms);

#endif
