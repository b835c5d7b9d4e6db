/*
 * bench_lua: times rank() of the lua router over 10 candidates for each example policy in
 * scripts/routing/: 20 batches of 20,000 calls each, and prints the median time per call
 * over the batches as "policy=<name> median_ns=<n>". Not a test; scripts/bench.sh runs it.
 *
 * Usage: bench_lua [--cpu] [--cands N] [--threads T] [plugin.so] [routing-dir]
 *   --cpu        time with the thread's CPU clock instead of the wall clock (steadier on a
 *                busy machine: time spent descheduled is not counted)
 *   --cands N    rank N candidates (1..64) instead of 10 (compassd's bench route has 2)
 *   --threads T  T threads call rank() on the same instance at once, as compassd's event
 *                loops do (1..8); the median is over all threads' batches
 */
#include <compass_fakehost.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCHES 20
#define CALLS 20000
#define MAX_CANDS 64
#define MAX_THREADS 8

static clockid_t bench_clock = CLOCK_MONOTONIC;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static const compass_plugin_desc *d;
static int n_cands = 10;
static const compass_candidate *cp[MAX_CANDS];
static compass_header md = {{"team", 4}, {"search", 6}};

typedef struct bench_thread {
    void *inst;
    uint64_t per[BATCHES];
    long failures;
    char msg[256];
} bench_thread;

static void *run_batches(void *arg)
{
    bench_thread *t = arg;
    compass_err err = {0, ""};
    for (int b = 0; b < BATCHES; b++) {
        uint64_t t0 = now_ns();
        for (int k = 0; k < CALLS; k++) {
            char key[24];
            compass_route_request rr;
            memset(&rr, 0, sizeof(rr));
            rr.size = sizeof(rr);
            rr.route = compass_str_c("auto");
            rr.n_messages = 3;
            rr.est_prompt_tokens = 50 + (k % 64) * 200;
            rr.n_chars = (size_t)rr.est_prompt_tokens * 4;
            snprintf(key, sizeof(key), "key-%d", k & 1023);
            rr.key_id = compass_str_c(key);
            rr.metadata = &md;
            rr.n_metadata = 1;
            rr.now_ms = 1795428000000LL + (int64_t)k * 1000;
            size_t order[MAX_CANDS], n_order = (size_t)n_cands;
            if (d->ops.router->rank(t->inst, NULL, &rr, cp, (size_t)n_cands, order, &n_order,
                                    &err)) {
                t->failures++;
                snprintf(t->msg, sizeof(t->msg), "%s", err.msg);
            }
        }
        t->per[b] = (now_ns() - t0) / CALLS;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n_threads = 1;
    for (;;) {
        if (argc > 1 && strcmp(argv[1], "--cpu") == 0) {
            bench_clock = CLOCK_THREAD_CPUTIME_ID;
            argc--;
            argv++;
        } else if (argc > 2 && strcmp(argv[1], "--cands") == 0) {
            n_cands = atoi(argv[2]);
            argc -= 2;
            argv += 2;
        } else if (argc > 2 && strcmp(argv[1], "--threads") == 0) {
            n_threads = atoi(argv[2]);
            argc -= 2;
            argv += 2;
        } else {
            break;
        }
    }
    if (n_cands < 1 || n_cands > MAX_CANDS || n_threads < 1 || n_threads > MAX_THREADS) {
        fprintf(stderr, "bench_lua: --cands 1..%d, --threads 1..%d\n", MAX_CANDS, MAX_THREADS);
        return 2;
    }
    const char *so = argc > 1 ? argv[1] : COMPASS_PLUGIN_DIR "/lua.so";
    const char *dir = argc > 2 ? argv[2] : COMPASS_SOURCE_DIR "/scripts/routing";
    static const char *const policies[] = {"cheapest_healthy", "tier_by_size", "ab_split",
                                           "office_hours"};
    compass_err err = {0, ""};
    compass_fakehost *fh = compass_fakehost_new("lua");
    d = fh ? compass_fakehost_load(fh, so, &err) : NULL;
    if (!d) {
        fprintf(stderr, "bench_lua: %s\n", err.msg);
        return 1;
    }

    static char ids[MAX_CANDS][32];
    static compass_candidate c[MAX_CANDS];
    for (int k = 0; k < n_cands; k++) {
        snprintf(ids[k], sizeof(ids[k]), "provider%d/model-%d", k, k);
        memset(&c[k], 0, sizeof(c[k]));
        c[k].size = sizeof(c[k]);
        c[k].id = compass_str_c(ids[k]);
        c[k].provider.ptr = ids[k];
        c[k].provider.len = (size_t)(strchr(ids[k], '/') - ids[k]);
        c[k].model = compass_str_c(strchr(ids[k], '/') + 1);
        c[k].tier = 1 + k % 4;
        c[k].weight = 1;
        c[k].price_in = 0.1 + 0.37 * ((k * 7) % 10);
        c[k].price_out = 4 * c[k].price_in;
        c[k].latency_ewma_ms = 200 + 50 * ((k * 3) % 10);
        c[k].ttft_ewma_ms = c[k].latency_ewma_ms / 4;
        c[k].error_rate = k == 3 ? 0.2 : 0.01;
        c[k].breaker = k == 5 ? COMPASS_BREAKER_OPEN : COMPASS_BREAKER_CLOSED;
        c[k].caps = COMPASS_CAP_TOOLS | COMPASS_CAP_JSON;
        c[k].context_window = 128000;
        cp[k] = &c[k];
    }

    for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
        char opt[1024];
        snprintf(opt, sizeof(opt), "policy=%s/%s.lua", dir, policies[p]);
        const char *opts[] = {opt, NULL};
        void *inst = compass_fakehost_instance(fh, policies[p], NULL, NULL, opts, &err);
        if (!inst) {
            fprintf(stderr, "bench_lua: %s: %s\n", policies[p], err.msg);
            return 1;
        }
        static bench_thread t[MAX_THREADS];
        pthread_t tid[MAX_THREADS];
        memset(t, 0, sizeof(t));
        for (int k = 0; k < n_threads; k++) {
            t[k].inst = inst;
            if (n_threads == 1)
                run_batches(&t[k]);
            else if (pthread_create(&tid[k], NULL, run_batches, &t[k]) != 0)
                return 1;
        }
        uint64_t per[BATCHES * MAX_THREADS];
        size_t np = 0;
        for (int k = 0; k < n_threads; k++) {
            if (n_threads > 1)
                pthread_join(tid[k], NULL);
            for (int b = 0; b < BATCHES; b++)
                per[np++] = t[k].per[b];
            if (t[k].failures)
                fprintf(stderr, "bench_lua: %s: %ld failed calls (%s)\n", policies[p],
                        t[k].failures, t[k].msg);
        }
        qsort(per, np, sizeof(per[0]), cmp_u64);
        printf("policy=%s median_ns=%llu\n", policies[p],
               (unsigned long long)((per[np / 2 - 1] + per[np / 2]) / 2));
    }
    compass_fakehost_free(fh);
    return 0;
}
