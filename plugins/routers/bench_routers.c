/*
 * bench_routers: times rank() of each built-in router over 10 candidates.
 * 200,000 calls per router in 20 batches of 10,000; prints the median batch's time per call:
 *   router=<name> median_ns=<n>
 * Usage: bench_routers [plugin_dir]   (default: the build's plugin directory)
 * Not a test: the bench script runs it. A router whose .so is missing is reported and skipped.
 */
#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_CANDS 10
#define BATCHES 20
#define PER_BATCH 10000

static const char *const routers[] = {"priority", "round_robin", "weighted", "least_latency",
                                      "least_busy", "cost", "tiered"};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void make_candidates(compass_candidate *c)
{
    static const char *const ids[N_CANDS] = {
        "openai/gpt-4o",        "openai/gpt-4o-mini",      "anthropic/claude-sonnet",
        "anthropic/claude-haiku", "gemini/gemini-pro",     "gemini/gemini-flash",
        "groq/llama-70b",       "together/mixtral",        "azure/gpt-4o",
        "mistral/codestral"};
    for (int i = 0; i < N_CANDS; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].size = sizeof(c[i]);
        c[i].id = compass_str_c(ids[i]);
        c[i].provider = compass_str_c(ids[i]);
        c[i].model = compass_str_c(ids[i]);
        c[i].tier = i == 9 ? 4 : 1 + i % 3;
        c[i].weight = 1 + i % 4;
        c[i].price_in = 0.1 + 0.7 * (double)((i * 7) % 10);
        c[i].price_out = 0.4 + 2.1 * (double)((i * 3) % 10);
        c[i].latency_ewma_ms = 200 + 97 * ((i * 5) % 10);
        c[i].ttft_ewma_ms = 40 + 23 * ((i * 9) % 10);
        c[i].in_flight = (i * 13) % 17;
        c[i].capacity = i % 3 ? 32 : 0;
        c[i].breaker = i == 4 ? COMPASS_BREAKER_OPEN : i == 6 ? COMPASS_BREAKER_HALF_OPEN : 0;
        c[i].caps = COMPASS_CAP_TOOLS | COMPASS_CAP_STREAM | (i % 2 ? 0 : COMPASS_CAP_VISION);
        c[i].context_window = 128000;
    }
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : COMPASS_PLUGIN_DIR;
    compass_candidate cands[N_CANDS];
    const compass_candidate *cand_ptrs[N_CANDS]; /* what rank() takes */
    compass_message msgs[2];
    compass_chat_request chat;
    compass_route_request rr;
    int failures = 0;

    make_candidates(cands);
    for (size_t i = 0; i < N_CANDS; i++)
        cand_ptrs[i] = &cands[i];
    memset(msgs, 0, sizeof(msgs));
    msgs[0].role = COMPASS_ROLE_SYSTEM;
    msgs[0].has_content = 1;
    msgs[0].content = compass_str_c("You are a helpful assistant.");
    msgs[1].role = COMPASS_ROLE_USER;
    msgs[1].has_content = 1;
    msgs[1].content = compass_str_c(
        "Can you summarize the attached quarterly report in three bullet points and then "
        "suggest one follow-up question for the finance team?");
    memset(&chat, 0, sizeof(chat));
    chat.size = sizeof(chat);
    chat.model = compass_str_c("auto");
    chat.messages = msgs;
    chat.n_messages = 2;
    memset(&rr, 0, sizeof(rr));
    rr.size = sizeof(rr);
    rr.route = compass_str_c("auto");
    rr.n_messages = 2;
    rr.n_chars = msgs[0].content.len + msgs[1].content.len;
    rr.est_prompt_tokens = (int64_t)(rr.n_chars / 4) + 8;
    rr.chat = &chat;

    for (size_t r = 0; r < sizeof(routers) / sizeof(routers[0]); r++) {
        char path[1024];
        compass_err err;
        compass_fakehost *fh = compass_fakehost_new(routers[r]);
        const compass_plugin_desc *d;
        void *inst;
        uint64_t batch[BATCHES];
        size_t order[N_CANDS], m;
        unsigned long sink = 0;

        memset(&err, 0, sizeof(err));
        snprintf(path, sizeof(path), "%s/%s.so", dir, routers[r]);
        if (!fh || !(d = compass_fakehost_load(fh, path, &err)) ||
            !(inst = compass_fakehost_instance(fh, "bench", NULL, NULL, NULL, &err))) {
            fprintf(stderr, "bench_routers: %s: %s\n", routers[r], err.msg);
            compass_fakehost_free(fh);
            failures++;
            continue;
        }
        for (int i = 0; i < 1000; i++) { /* warm up */
            m = N_CANDS;
            d->ops.router->rank(inst, NULL, &rr, cand_ptrs, N_CANDS, order, &m, &err);
        }
        for (int b = 0; b < BATCHES; b++) {
            uint64_t t0 = now_ns();
            for (int i = 0; i < PER_BATCH; i++) {
                m = N_CANDS;
                if (d->ops.router->rank(inst, NULL, &rr, cand_ptrs, N_CANDS, order, &m,
                                        &err) != 0) {
                    fprintf(stderr, "bench_routers: %s: rank failed: %s\n", routers[r], err.msg);
                    return 1;
                }
                sink += order[0];
            }
            batch[b] = (now_ns() - t0) / PER_BATCH;
        }
        qsort(batch, BATCHES, sizeof(batch[0]), cmp_u64);
        printf("router=%s median_ns=%llu\n", routers[r],
               (unsigned long long)((batch[BATCHES / 2 - 1] + batch[BATCHES / 2]) / 2));
        fflush(stdout);
        if (sink == 0xFFFFFFFFul)
            putchar('\n');
        compass_fakehost_free(fh);
    }
    return failures ? 2 : 0;
}
