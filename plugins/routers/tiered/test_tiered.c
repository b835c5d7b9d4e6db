#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <criterion/criterion.h>
#include <string.h>

static compass_fakehost *fh;
static const compass_plugin_desc *desc;

static void setup(void)
{
    compass_err err = {0};
    fh = compass_fakehost_new("tiered");
    cr_assert_not_null(fh);
    desc = compass_fakehost_load(fh, COMPASS_PLUGIN_DIR "/tiered.so", &err);
    cr_assert_not_null(desc, "load: %s", err.msg);
    cr_assert_eq(desc->kind, COMPASS_PLUGIN_ROUTER);
    cr_assert_str_eq(desc->name, "tiered");
}

static void teardown(void)
{
    compass_fakehost_free(fh);
}

/* An instance with options ("name=value", NULL-terminated list; NULL for defaults). */
static inline void *mk(const char *const *opts)
{
    compass_err err = {0};
    void *inst = compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err);
    cr_assert_not_null(inst, "instance: %s", err.msg);
    return inst;
}

static inline compass_candidate cand(const char *id, int breaker)
{
    compass_candidate c;
    memset(&c, 0, sizeof(c));
    c.size = sizeof(c);
    c.id = compass_str_c(id);
    c.provider = compass_str_c(id);
    c.model = compass_str_c(id);
    c.weight = 1;
    c.breaker = breaker;
    c.caps = COMPASS_CAP_TOOLS | COMPASS_CAP_VISION | COMPASS_CAP_STREAM;
    return c;
}

static inline compass_route_request req(void)
{
    compass_route_request r;
    memset(&r, 0, sizeof(r));
    r.size = sizeof(r);
    r.route = compass_str_c("auto");
    r.est_prompt_tokens = 100;
    return r;
}

/* rank() takes n pointers to candidates: points p[0..n) at c[0..n) and returns p. */
static inline const compass_candidate *const *ptrs(const compass_candidate **p,
                                                  const compass_candidate *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = &c[i];
    return p;
}

#define MAX_CANDS 128 /* the most any test ranks at once */

/* Ranks c[0..n) into order (capacity n); returns rank's code, *m the count. */
static inline int rank(void *inst, const compass_route_request *rr, const compass_candidate *c,
                size_t n, size_t *order, size_t *m)
{
    const compass_candidate *cp[MAX_CANDS];
    compass_err err = {0};
    int rc;
    cr_assert_leq(n, MAX_CANDS);
    *m = n;
    rc = desc->ops.router->rank(inst, NULL, rr, ptrs(cp, c, n), n, order, m, &err);
    if (rc == 0)
        cr_assert_leq(*m, n);
    return rc;
}

/* Ranks and asserts success; returns the first choice. */
static inline size_t first(void *inst, const compass_route_request *rr, const compass_candidate *c,
                    size_t n, size_t *order)
{
    size_t m;
    int rc = rank(inst, rr, c, n, order, &m);
    cr_assert_eq(rc, 0, "rank failed: %d", rc);
    cr_assert_gt(m, 0);
    return order[0];
}

#include <pthread.h>
#include <stdlib.h>

TestSuite(tiered, .init = setup, .fini = teardown);

enum { T1A, T1B, T2, T3A, T3B, T4, N };

static void fleet(compass_candidate *c)
{
    c[T1A] = cand("openai/gpt-4o", 0);
    c[T1A].tier = 1;
    c[T1A].price_in = 2.5;
    c[T1A].price_out = 10;
    c[T1B] = cand("anthropic/claude-opus", 0);
    c[T1B].tier = 1;
    c[T1B].price_in = 15;
    c[T1B].price_out = 75;
    c[T2] = cand("anthropic/claude-sonnet", 0);
    c[T2].tier = 2;
    c[T2].price_in = 3;
    c[T2].price_out = 15;
    c[T3A] = cand("groq/llama-3.1-8b", 0);
    c[T3A].tier = 3;
    c[T3A].price_in = 0.05;
    c[T3A].price_out = 0.08;
    c[T3B] = cand("openai/gpt-4o-mini", 0);
    c[T3B].tier = 3;
    c[T3B].price_in = 0.15;
    c[T3B].price_out = 0.6;
    c[T4] = cand("mistral/codestral-latest", 0);
    c[T4].tier = 4;
    c[T4].price_in = 0.3;
    c[T4].price_out = 0.9;
}

static const char *const logged[] = {"log_decisions=true", NULL};

/* One user message; md is name, value, name, value, ..., NULL. Returns the first pick. */
static size_t pick_md(void *inst, const compass_candidate *c, const char *text, int64_t tokens,
                      const char *const *md, size_t *order)
{
    compass_message msg;
    compass_chat_request chat;
    compass_route_request rr = req();
    compass_header h[8];
    size_t nh = 0;
    memset(&msg, 0, sizeof(msg));
    msg.role = COMPASS_ROLE_USER;
    msg.has_content = 1;
    msg.content = compass_str_c(text);
    memset(&chat, 0, sizeof(chat));
    chat.size = sizeof(chat);
    chat.messages = &msg;
    chat.n_messages = 1;
    for (; md && md[0] && nh < 8; md += 2, nh++) {
        h[nh].name = compass_str_c(md[0]);
        h[nh].value = compass_str_c(md[1]);
    }
    rr.chat = &chat;
    rr.n_messages = 1;
    rr.n_chars = msg.content.len;
    rr.est_prompt_tokens = tokens;
    rr.metadata = h;
    rr.n_metadata = nh;
    return first(inst, &rr, c, N, order);
}

static size_t pick(void *inst, const compass_candidate *c, const char *text, int64_t tokens,
                   size_t *order)
{
    return pick_md(inst, c, text, tokens, NULL, order);
}

/* The score of the last logged decision (needs log_decisions=true). */
static double last_score(void)
{
    const char *log = compass_fakehost_log(fh), *p = NULL, *q = log;
    while ((q = strstr(q, "score=")) != NULL)
        p = q++;
    cr_assert_not_null(p, "no decision logged: %s", log);
    return strtod(p + 6, NULL);
}

static const char *last_line(void)
{
    static char line[600];
    const char *log = compass_fakehost_log(fh), *p = NULL, *q = log;
    size_t n;
    while ((q = strstr(q, "tiered: route")) != NULL)
        p = q++;
    if (!p)
        return log;
    n = strcspn(p, "\n");
    if (n >= sizeof(line))
        n = sizeof(line) - 1;
    memcpy(line, p, n);
    line[n] = '\0';
    return line;
}

static const char greeting[] = "hi there!";

/* A task for a balanced model: some technical depth, short prompt (code attached). */
static const char medium[] =
    "First, debug this function: it deadlocks when two threads take the lock in a different "
    "order. Then refactor it to avoid the race and explain the tradeoffs.";

static const char *const blocks[] = {
    "First, analyze the distributed cache architecture and describe how each replica handles "
    "eviction under concurrent writes. ",
    "Then prove that the consistency protocol preserves the ordering invariant when a network "
    "partition heals, and state every assumption you rely on. ",
    "Next, compare the latency and throughput tradeoffs of the two sharding strategies across "
    "the cluster, with numbers where you can. ",
    "Step four: derive the asymptotic complexity of the rebalancing algorithm and explain where "
    "the bottleneck lies for large key spaces. ",
    "Finally, evaluate whether the transaction log can be compacted without losing durability, "
    "and analyse what happens if a node fails in the middle of compaction.\n",
};

/* About 2,000 words of multi-step analysis. */
static const char *long_analysis(size_t *words)
{
    static char buf[32768];
    size_t len = 0, w = 0, i = 0;
    while (w < 2000) {
        const char *b = blocks[i++ % 5];
        size_t n = strlen(b);
        cr_assert_lt(len + n, sizeof(buf));
        memcpy(buf + len, b, n);
        len += n;
        for (const char *p = b; *p; p++)
            w += (*p == ' ' || *p == '\n');
    }
    buf[len] = '\0';
    *words = w;
    return buf;
}

Test(tiered, short_greeting_goes_to_a_fast_tier)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    cr_assert_eq(pick(inst, c, greeting, 3, order), T3A, "%s", last_line());
}

Test(tiered, long_multi_step_analysis_goes_to_premium)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N], words;
    const char *text = long_analysis(&words);
    fleet(c);
    cr_assert_geq(words, 2000);
    /* cheapest premium first */
    cr_assert_eq(pick(inst, c, text, (int64_t)(words * 4 / 3), order), T1A, "%s", last_line());
    cr_assert_eq(order[1], T1B);
}

Test(tiered, medium_task_goes_to_balanced)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    cr_assert_eq(pick(inst, c, medium, 800, order), T2, "%s", last_line());
}

Test(tiered, chosen_tier_first_then_neighbours_cheapest_first)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N], m, want[N] = {T3A, T3B, T2, T1A, T1B, T4};
    compass_route_request rr = req();
    fleet(c);
    (void)pick(inst, c, greeting, 3, order);
    rr.est_prompt_tokens = 3;
    cr_assert_eq(rank(inst, &rr, c, N, order, &m), 0);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(order[i], want[i], "order[%zu]=%zu want %zu", i, order[i], want[i]);
}

Test(tiered, equal_price_in_tier_goes_to_the_faster)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    c[T3B].price_in = c[T3A].price_in;
    c[T3B].price_out = c[T3A].price_out;
    c[T3A].latency_ewma_ms = 900;
    c[T3B].latency_ewma_ms = 300;
    cr_assert_eq(pick(inst, c, greeting, 3, order), T3B);
}

Test(tiered, accuracy_critical_raises_the_tier)
{
    static const char *const critical[] = {"accuracy", "critical", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double base, raised;
    fleet(c);
    cr_assert_eq(pick(inst, c, medium, 800, order), T2, "%s", last_line());
    base = last_score();
    cr_assert_eq(c[pick_md(inst, c, medium, 800, critical, order)].tier, 1, "%s", last_line());
    raised = last_score();
    cr_assert_gt(raised, base);
    /* even a greeting never goes to the fast tier when accuracy is critical */
    cr_assert_eq(c[pick_md(inst, c, greeting, 3, critical, order)].tier, 2, "%s", last_line());
}

Test(tiered, accuracy_exploratory_lowers_the_score)
{
    static const char *const explore[] = {"accuracy", "exploratory", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double base;
    fleet(c);
    (void)pick(inst, c, medium, 800, order);
    base = last_score();
    (void)pick_md(inst, c, medium, 800, explore, order);
    cr_assert_lt(last_score(), base);
}

Test(tiered, latency_realtime_lowers_the_tier)
{
    static const char *const realtime[] = {"latency", "realtime", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N], words;
    const char *text = long_analysis(&words);
    fleet(c);
    cr_assert_eq(c[pick_md(inst, c, medium, 800, realtime, order)].tier, 3, "%s", last_line());
    cr_assert_eq(c[pick_md(inst, c, text, (int64_t)(words * 4 / 3), realtime, order)].tier, 2,
                 "%s", last_line());
}

Test(tiered, latency_batch_raises_the_score)
{
    static const char *const batch[] = {"latency", "batch", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double base;
    fleet(c);
    (void)pick(inst, c, medium, 800, order);
    base = last_score();
    cr_assert_eq(c[pick_md(inst, c, medium, 800, batch, order)].tier, 1, "%s", last_line());
    cr_assert_gt(last_score(), base);
}

Test(tiered, urgency_words_lower_the_score)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double base;
    fleet(c);
    (void)pick(inst, c, medium, 800, order);
    base = last_score();
    (void)pick(inst, c,
               "Urgent, I need this asap: first, debug this function: it deadlocks when two "
               "threads take the lock in a different order. Then refactor it now.",
               800, order);
    cr_assert_lt(last_score(), base, "%s", last_line());
}

Test(tiered, budget_shifts_the_cost_factor)
{
    static const char *const low[] = {"budget", "low", NULL};
    static const char *const high[] = {"budget", "high", NULL};
    static const char *const tiny[] = {"budget", "0.0001", NULL};
    static const char *const big[] = {"budget", "5", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    cr_assert_eq(c[pick_md(inst, c, medium, 800, low, order)].tier, 3, "%s", last_line());
    cr_assert_eq(c[pick_md(inst, c, medium, 800, high, order)].tier, 1, "%s", last_line());
    cr_assert_eq(c[pick_md(inst, c, medium, 800, tiny, order)].tier, 3, "%s", last_line());
    cr_assert_eq(c[pick_md(inst, c, medium, 800, big, order)].tier, 1, "%s", last_line());
}

Test(tiered, weights_from_options_change_the_outcome)
{
    /* Only the latency factor counts: a batch job is premium even when it is a greeting. */
    static const char *const latency_only[] = {"w_complexity=0", "w_tokens=0", "w_latency=1",
                                               "w_cost=0", "w_accuracy=0",
                                               "log_decisions=true", NULL};
    /* Only complexity counts: the medium task is no longer held back by its short prompt
     * and neutral latency/cost, so it goes premium. */
    static const char *const complexity_only[] = {"w_complexity=1", "w_tokens=0",
                                                  "w_latency=0", "w_cost=0", "w_accuracy=0",
                                                  "log_decisions=true", NULL};
    static const char *const batch[] = {"latency", "batch", NULL};
    compass_candidate c[N];
    size_t order[N];
    void *dflt = mk(logged), *lat = mk(latency_only), *cx = mk(complexity_only);
    fleet(c);
    cr_assert_neq(c[pick_md(dflt, c, greeting, 3, batch, order)].tier, 1, "%s", last_line());
    cr_assert_eq(c[pick_md(lat, c, greeting, 3, batch, order)].tier, 1, "%s", last_line());
    cr_assert_eq(c[pick(dflt, c, medium, 800, order)].tier, 2, "%s", last_line());
    cr_assert_eq(c[pick(cx, c, medium, 800, order)].tier, 1, "%s", last_line());
    cr_assert_eq(c[pick(cx, c, greeting, 3, order)].tier, 3, "%s", last_line());
}

Test(tiered, thresholds_from_options_change_the_outcome)
{
    static const char *const strict[] = {"tier1_at=0.9", "tier2_at=0.8", NULL};
    static const char *const lax[] = {"tier1_at=0.1", "tier2_at=0.05", NULL};
    compass_candidate c[N];
    size_t order[N];
    void *s = mk(strict), *l = mk(lax);
    fleet(c);
    cr_assert_eq(c[pick(s, c, medium, 800, order)].tier, 3);
    cr_assert_eq(c[pick(l, c, medium, 800, order)].tier, 1);
}

Test(tiered, huge_prompt_goes_to_premium)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    cr_assert_eq(c[pick(inst, c, "summarize this", 20000, order)].tier, 1, "%s", last_line());
    cr_assert_eq(c[pick(inst, c, "summarize this", 200, order)].tier, 3, "%s", last_line());
}

Test(tiered, task_metadata_picks_a_specialist)
{
    static const char *const code[] = {"task", "code", NULL};
    static const char *const poetry[] = {"task", "poetry", NULL};
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    cr_assert_eq(pick_md(inst, c, greeting, 3, code, order), T4, "%s", last_line());
    /* then the matrix tier */
    cr_assert_eq(order[1], T3A);
    /* no tier-4 candidate serves poetry: the specialist goes last */
    cr_assert_eq(pick_md(inst, c, greeting, 3, poetry, order), T3A, "%s", last_line());
    cr_assert_eq(order[N - 1], T4);
}

Test(tiered, specialties_option_maps_tasks_to_candidates)
{
    static const char *const opts[] = {"specialties=legal=lexi, code=nomatch", NULL};
    static const char *const legal[] = {"task", "legal", NULL};
    static const char *const code[] = {"task", "code", NULL};
    void *inst = mk(opts);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    c[T4].id = compass_str_c("lexi/lexi-law-7b");
    c[T4].model = compass_str_c("lexi-law-7b");
    cr_assert_eq(pick_md(inst, c, greeting, 3, legal, order), T4);
    cr_assert_neq(pick_md(inst, c, greeting, 3, code, order), T4);
}

Test(tiered, bad_specialties_option_is_refused)
{
    static const char *const opts[] = {"specialties=code", NULL};
    compass_err err = {0};
    cr_assert_null(compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err));
    cr_assert_not_null(strstr(err.msg, "specialties"), "%s", err.msg);
}

Test(tiered, zero_weights_are_refused)
{
    static const char *const opts[] = {"w_complexity=0", "w_tokens=0", "w_latency=0",
                                       "w_cost=0", "w_accuracy=0", NULL};
    compass_err err = {0};
    cr_assert_null(compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err));
    cr_assert_not_null(strstr(err.msg, "w_"), "%s", err.msg);
}

Test(tiered, open_breaker_in_the_chosen_tier_yields_to_its_peer)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    size_t order[N];
    fleet(c);
    c[T3A].breaker = COMPASS_BREAKER_OPEN;
    cr_assert_eq(pick(inst, c, greeting, 3, order), T3B);
    cr_assert_eq(order[N - 1], T3A);
    c[T3B].breaker = COMPASS_BREAKER_HALF_OPEN;
    cr_assert_eq(pick(inst, c, greeting, 3, order), T2, "closed neighbour before half-open");
}

Test(tiered, inflected_keywords_count)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double plain, inflected;
    fleet(c);
    (void)pick(inst, c, "Can you help me with this thing I have here?", 20, order);
    plain = last_score();
    (void)pick(inst, c, "Can you help me analyzing, debugging and proving this?", 20, order);
    inflected = last_score();
    cr_assert_gt(inflected, plain + 0.03, "plain %.3f inflected %.3f", plain, inflected);
}

Test(tiered, numbered_lists_and_code_raise_complexity)
{
    void *inst = mk(logged);
    compass_candidate c[N];
    size_t order[N];
    double plain, listed;
    fleet(c);
    (void)pick(inst, c, "Tell me about the weather in Paris in spring and what to pack.", 20,
               order);
    plain = last_score();
    (void)pick(inst, c,
               "1. Parse the config with parse_config().\n"
               "2. Validate each entry { key = value; }.\n"
               "3. Then write the merged result to disk.\n",
               20, order);
    listed = last_score();
    cr_assert_gt(listed, plain + 0.05, "plain %.3f listed %.3f", plain, listed);
}

/* ---- shared behaviour every router must have ---- */

#include "../common/contract_tests.h"

Test(tiered, out_of_memory_in_instance_new_fails_cleanly)
{
    static const char *const opts[] = {"specialties=code=codestral", NULL};
    for (long nth = 1; nth <= 3; nth++) {
        compass_err err = {0};
        void *inst;
        compass_fakehost_fail_alloc_at(fh, nth);
        inst = compass_fakehost_instance(fh, "route", NULL, NULL, opts, &err);
        compass_fakehost_fail_alloc_at(fh, 0);
        if (nth <= 2) {
            cr_assert_null(inst, "allocation %ld failed, yet an instance", nth);
            cr_assert_eq(err.code, COMPASS_ENOMEM);
        } else {
            cr_assert_not_null(inst, "%s", err.msg);
        }
    }
}

struct t_thread {
    void *inst;
    const compass_candidate *c;
    size_t firsts[N];
};

static void *t_worker(void *arg)
{
    struct t_thread *t = (struct t_thread *)arg;
    size_t order[N];
    for (int i = 0; i < 2000; i++) {
        t->firsts[pick(t->inst, t->c, i % 2 ? greeting : medium, i % 2 ? 3 : 800, order)]++;
    }
    return NULL;
}

Test(tiered, concurrent_calls_decide_alike)
{
    void *inst = mk(NULL);
    compass_candidate c[N];
    struct t_thread t[4];
    pthread_t th[4];
    fleet(c);
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 4; i++) {
        t[i].inst = inst;
        t[i].c = c;
        cr_assert_eq(pthread_create(&th[i], NULL, t_worker, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(t[i].firsts[T3A], 1000);
        cr_assert_eq(t[i].firsts[T2], 1000);
    }
}

Test(tiered, routes_with_many_candidates_rank_the_same_way)
{
    /* More than the 64 candidates whose sort keys are precomputed: the comparator path. */
    void *inst = mk(NULL);
    compass_candidate c[70];
    size_t order[70], m, best = 70;
    compass_route_request rr = req();
    for (size_t i = 0; i < 70; i++) {
        c[i] = cand("x", i % 11 == 0 ? COMPASS_BREAKER_OPEN : 0);
        c[i].tier = 1 + (int)(i % 3);
        c[i].price_in = (double)((i * 37) % 70) + 1;
        c[i].price_out = c[i].price_in;
        if (c[i].tier == 3 && c[i].breaker == 0 && (best == 70 || c[i].price_in < c[best].price_in))
            best = i;
    }
    rr.est_prompt_tokens = 3;
    cr_assert_eq(rank(inst, &rr, c, 70, order, &m), 0);
    cr_assert_eq(m, 70);
    cr_assert_eq(order[0], best);
    for (size_t i = 1; i < 70; i++) {
        const compass_candidate *a = &c[order[i - 1]], *b = &c[order[i]];
        int ha = health_of(a), hb = health_of(b);
        cr_assert_leq(ha, hb);
        if (ha == hb && a->tier == b->tier)
            cr_assert_leq(a->price_in, b->price_in, "cheapest first within a tier");
    }
}
