/* An engine the host runs from its own event loop (external_loop): a call submitted on the
 * loop's own thread wakes the loop's descriptor, unless the host opened the engine with
 * run_pending and asks compass_engine_loop_pending itself (as compassd's workers do); a call
 * from any other thread always wakes it. Each case serves a real answer from the mock
 * provider, run only by the host's compass_engine_loop_run. */
#include <criterion/criterion.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compass/compass.h>

#define CFG                                                                                  \
    "plugins = { paths = [\"" COMPASS_PLUGIN_DIR "\"]; };\n"                                 \
    "deployments = ( { name = \"local\"; plugin = \"mock\"; models = [\"m\"];\n"             \
    "  options = { reply = \"from the host's loop\"; latency_ms = 0; }; } );\n"

#define CHAT "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

typedef struct answer {
    int done, status;
    char body[4096];
} answer;

static void on_done(void *ud, const compass_engine_result *r)
{
    answer *a = ud;
    a->status = r->status;
    snprintf(a->body, sizeof(a->body), "%.*s", (int)r->body_len, r->body ? r->body : "");
    a->done = 1;
}

static const compass_engine_callbacks cbs = {sizeof(compass_engine_callbacks), NULL, NULL,
                                             NULL, on_done};

static compass_engine *open_external(int run_pending)
{
    compass_engine_opts o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.external_loop = 1;
    o.run_pending = run_pending;
    compass_engine *e = NULL;
    compass_err err;
    memset(&err, 0, sizeof(err));
    int rc = compass_engine_open_string(&e, CFG, &o, &err);
    cr_assert_eq(rc, 0, "open: %d %s", rc, err.msg);
    /* the first run marks this thread as the loop's own */
    compass_engine_loop_run(e, 0);
    return e;
}

static void submit(compass_engine *e, answer *a)
{
    compass_engine_request req;
    memset(&req, 0, sizeof(req));
    req.size = sizeof(req);
    req.body = CHAT;
    req.body_len = strlen(CHAT);
    memset(a, 0, sizeof(*a));
    cr_assert_eq(compass_engine_submit(e, &req, &cbs, a, NULL), 0);
}

static int readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* What a host does: run while there is pending work, else wait for the fd or the timeout. */
static void serve_until_done(compass_engine *e, answer *a)
{
    for (int i = 0; i < 2000 && !a->done; i++) {
        int next = compass_engine_loop_run(e, 0);
        if (a->done || compass_engine_loop_pending(e, 0))
            continue;
        readable(compass_engine_loop_fd(e, 0), next < 0 || next > 10 ? 10 : next);
    }
    cr_assert(a->done, "the call never finished");
    cr_assert_eq(a->status, 200, "%d %s", a->status, a->body);
    cr_assert(strstr(a->body, "from the host's loop"), "%s", a->body);
}

Test(external_loop, run_pending_call_from_the_loops_thread_waits_for_the_hosts_next_run)
{
    compass_engine *e = open_external(1);
    answer a;
    submit(e, &a);
    cr_assert_not(a.done);
    cr_assert_eq(compass_engine_loop_pending(e, 0), 1, "the call is not reported as pending");
    cr_assert_not(readable(compass_engine_loop_fd(e, 0), 0),
                  "with run_pending the loop's own submit still woke its descriptor");
    compass_engine_loop_run(e, 0);
    cr_assert_eq(compass_engine_loop_pending(e, 0), 0, "a run left the call queued");
    serve_until_done(e, &a);
    compass_engine_close(e, 0);
}

Test(external_loop, without_run_pending_a_call_from_the_loops_thread_wakes_its_descriptor)
{
    compass_engine *e = open_external(0);
    answer a;
    submit(e, &a);
    cr_assert(readable(compass_engine_loop_fd(e, 0), 0),
              "a host that only waits for the descriptor was not told of the new call");
    serve_until_done(e, &a);
    compass_engine_close(e, 0);
}

struct other {
    compass_engine *e;
    answer *a;
};

static void *submit_elsewhere(void *arg)
{
    struct other *o = arg;
    submit(o->e, o->a);
    return NULL;
}

Test(external_loop, run_pending_call_from_another_thread_wakes_the_descriptor)
{
    compass_engine *e = open_external(1);
    answer a;
    struct other o = {e, &a};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, submit_elsewhere, &o), 0);
    pthread_join(t, NULL);
    cr_assert(readable(compass_engine_loop_fd(e, 0), 1000),
              "a call from another thread did not wake the host's loop");
    serve_until_done(e, &a);
    compass_engine_close(e, 0);
}

Test(external_loop, pending_is_0_for_engines_that_run_their_own_threads_and_bad_loops)
{
    compass_engine_opts o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    compass_engine *e = NULL;
    compass_err err;
    cr_assert_eq(compass_engine_open_string(&e, CFG, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(compass_engine_loop_pending(e, 0), 0);
    compass_engine_close(e, 0);
    e = open_external(1);
    cr_assert_eq(compass_engine_loop_pending(e, 1), 0);
    cr_assert_eq(compass_engine_loop_pending(e, -1), 0);
    cr_assert_eq(compass_engine_loop_pending(NULL, 0), 0);
    compass_engine_close(e, 0);
}
