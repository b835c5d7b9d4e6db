/*
 * bench_translate: CPU cost of translating a provider's stream into canonical deltas.
 *
 * For each provider plugin .so found in the plugins dir (openai, azure, anthropic, gemini,
 * replicate) it builds, in memory, a recorded 1,000-chunk stream in that provider's real wire
 * format, makes an instance on the fake host, prepares a streaming request the way the host
 * does (parse the client's OpenAI body, build_request), then times feeding the whole body
 * through compass_fakehost_feed_sse: SSE framing (the core's own splitter, as in compassd),
 * the plugin's parse_stream_event, and stream_emit.
 *
 * Note: the fake host's stream_emit copies every emitted delta (7 strings into the request
 * arena, plus a growing delta array), which compassd does not do in the same way (it encodes
 * the delta to the client instead). That copy is part of the figure, so the figure is an
 * upper bound for the plugin's own share.
 *
 * CPU time (CLOCK_PROCESS_CPUTIME_ID) per whole stream, REPS runs after WARMUP runs; prints
 *   translate=<plugin> ns_per_chunk=<median> min_ns_per_chunk=<min> chunks=1000 bytes=<n>
 * Usage: bench_translate [plugins-dir] [reps]
 */
#include <compass/plugin.h>
#include <compass_fakehost.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef COMPASS_PLUGIN_DIR
#define COMPASS_PLUGIN_DIR "plugins"
#endif

#define CHUNKS 1000
#define WARMUP 5
#define DEFAULT_REPS 50

/* ---- a growable text buffer */
typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void bputf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bputf(buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            fprintf(stderr, "bench_translate: vsnprintf failed\n");
            exit(2);
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            fprintf(stderr, "bench_translate: out of memory\n");
            exit(2);
        }
        b->p = np;
        b->cap = cap;
    }
}

/* The text of chunk i (" word<i>"; the first without the leading space). The expected
 * content is the concatenation. */
static void word(char *out, size_t cap, int i)
{
    snprintf(out, cap, "%sword%d", i ? " " : "", i);
}

/* ---- recorded streams, one per wire format */

/* OpenAI chat.completion.chunk SSE, as api.openai.com sends it with include_usage: the first
 * chunk carries the role, then one chunk per token, a finish chunk, a usage chunk, [DONE]. */
static void stream_openai(buf *b)
{
    char w[32];
    const char *head = "data: {\"id\":\"chatcmpl-AvBench0000000000000000001\","
                       "\"object\":\"chat.completion.chunk\",\"created\":1732240000,"
                       "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","
                       "\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[";
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        if (i == 0)
            bputf(b,
                  "%s{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"%s\","
                  "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],"
                  "\"usage\":null}\n\n",
                  head, w);
        else
            bputf(b,
                  "%s{\"index\":0,\"delta\":{\"content\":\"%s\"},\"logprobs\":null,"
                  "\"finish_reason\":null}],\"usage\":null}\n\n",
                  head, w);
    }
    bputf(b,
          "%s{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
          "\"usage\":null}\n\n",
          head);
    bputf(b,
          "%s],\"usage\":{\"prompt_tokens\":62,\"completion_tokens\":%d,\"total_tokens\":%d,"
          "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
          "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
          "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
          head, CHUNKS, CHUNKS + 62);
    bputf(b, "data: [DONE]\n\n");
}

/* Azure OpenAI: OpenAI's chunks, preceded by the prompt-filter chunk (empty choices) and with
 * content_filter_results on each choice, as Azure sends them. */
static void stream_azure(buf *b)
{
    char w[32];
    const char *head = "data: {\"id\":\"chatcmpl-AvBench0000000000000000002\","
                       "\"object\":\"chat.completion.chunk\",\"created\":1732240000,"
                       "\"model\":\"gpt-4o-mini-2024-07-18\","
                       "\"system_fingerprint\":\"fp_04751d0b65\",\"choices\":[";
    const char *filt = "\"content_filter_results\":{\"hate\":{\"filtered\":false,"
                       "\"severity\":\"safe\"},\"self_harm\":{\"filtered\":false,\"severity\":"
                       "\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":\"safe\"},"
                       "\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}";
    bputf(b,
          "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
          "\"prompt_filter_results\":[{\"prompt_index\":0,%s}]}\n\n",
          filt);
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        bputf(b,
              "%s{%s,\"delta\":{%s\"content\":\"%s\"},\"finish_reason\":null,\"index\":0,"
              "\"logprobs\":null}],\"usage\":null}\n\n",
              head, filt, i == 0 ? "\"role\":\"assistant\"," : "", w);
    }
    bputf(b,
          "%s{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\","
          "\"index\":0,\"logprobs\":null}],\"usage\":null}\n\n",
          head);
    bputf(b,
          "%s],\"usage\":{\"completion_tokens\":%d,\"prompt_tokens\":62,\"total_tokens\":%d}}"
          "\n\n",
          head, CHUNKS, CHUNKS + 62);
    bputf(b, "data: [DONE]\n\n");
}

/* Anthropic Messages: message_start, content_block_start, ping, 1,000 content_block_delta
 * text_delta events, content_block_stop, message_delta, message_stop. */
static void stream_anthropic(buf *b)
{
    char w[32];
    bputf(b, "event: message_start\n"
             "data: {\"type\":\"message_start\",\"message\":{\"id\":"
             "\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\","
             "\"model\":\"claude-3-5-haiku-20241022\",\"content\":[],\"stop_reason\":null,"
             "\"stop_sequence\":null,\"usage\":{\"input_tokens\":62,"
             "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
             "\"output_tokens\":1}}}\n\n");
    bputf(b, "event: content_block_start\n"
             "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
             "{\"type\":\"text\",\"text\":\"\"}}\n\n");
    bputf(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        bputf(b,
              "event: content_block_delta\n"
              "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
              "{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
              w);
    }
    bputf(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}"
             "\n\n");
    bputf(b,
          "event: message_delta\n"
          "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
          "\"stop_sequence\":null},\"usage\":{\"output_tokens\":%d}}\n\n",
          CHUNKS);
    bputf(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

/* Gemini streamGenerateContent?alt=sse: one GenerateContentResponse per event, the last with
 * finishReason and full usageMetadata; no end marker. */
static void stream_gemini(buf *b)
{
    char w[32];
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        if (i < CHUNKS - 1)
            bputf(b,
                  "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"%s\"}],"
                  "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": "
                  "{\"promptTokenCount\": 62,\"totalTokenCount\": 62},\"modelVersion\": "
                  "\"gemini-2.0-flash\",\"responseId\": \"r-bench-1\"}\r\n\r\n",
                  w);
        else
            bputf(b,
                  "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"%s\"}],"
                  "\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],"
                  "\"usageMetadata\": {\"promptTokenCount\": 62,\"candidatesTokenCount\": %d,"
                  "\"totalTokenCount\": %d},\"modelVersion\": \"gemini-2.0-flash\","
                  "\"responseId\": \"r-bench-1\"}\r\n\r\n",
                  w, CHUNKS, CHUNKS + 62);
    }
}

/* Replicate prediction stream: `event: output` per token (raw text data), then `event: done`. */
static void stream_replicate(buf *b)
{
    char w[32];
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        bputf(b, "event: output\nid: 1732240000:%d\ndata: %s\n\n", i, w);
    }
    bputf(b, "event: done\ndata: {}\n\n");
}

/* ---- the plugins */
typedef struct {
    const char *name;
    void (*make)(buf *b);
    const char *base_url;
    const char *model; /* the upstream model in the client's request */
    int expect_end;    /* whether the stream has an end marker (COMPASS_STREAM_END) */
} target;

static const target targets[] = {
    {"openai", stream_openai, "http://127.0.0.1:9/v1", "gpt-4o-mini", 1},
    {"azure", stream_azure, "http://127.0.0.1:9", "gpt-4o-mini", 1},
    {"anthropic", stream_anthropic, "http://127.0.0.1:9", "claude-3-5-haiku-latest", 1},
    {"gemini", stream_gemini, "http://127.0.0.1:9", "gemini-2.0-flash", 0},
    {"replicate", stream_replicate, "http://127.0.0.1:9", "meta/meta-llama-3-8b-instruct", 1},
};

static long long cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* A fresh request, prepared like the host does before the stream: parse the client's body,
 * build_request (which is where replicate and others set their per-request stream state). */
static int prepare(compass_fakehost *fh, const compass_provider_ops *ops, void *inst,
                   const char *chat, compass_err *err)
{
    compass_chat_request in;
    compass_http_request out;
    compass_req *req = compass_fakehost_req(fh);
    memset(&in, 0, sizeof(in));
    memset(&out, 0, sizeof(out));
    int rc = compass_fakehost_parse_chat(fh, chat, &in, err);
    if (rc)
        return rc;
    return ops->build_request(inst, req, &in, &out, err);
}

/* Returns 0, or 1 when the plugin was there but the run failed. */
static int bench_one(const char *dir, const target *t, int reps)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.so", dir, t->name);
    if (access(path, R_OK) != 0) {
        printf("translate=%s skipped (no %s)\n", t->name, path);
        return 0;
    }
    compass_err err;
    memset(&err, 0, sizeof(err));
    compass_fakehost *fh = compass_fakehost_new(t->name);
    if (!fh) {
        fprintf(stderr, "bench_translate: out of memory\n");
        return 1;
    }
    const compass_plugin_desc *d = compass_fakehost_load(fh, path, &err);
    if (!d || d->kind != COMPASS_PLUGIN_PROVIDER) {
        printf("translate=%s error: load: %s\n", t->name, d ? "not a provider" : err.msg);
        compass_fakehost_free(fh);
        return 1;
    }
    const compass_provider_ops *ops = d->ops.provider;
    void *inst = compass_fakehost_instance(fh, "bench", t->base_url, "bench-key", NULL, &err);
    if (!inst) {
        printf("translate=%s error: instance: %s\n", t->name, err.msg);
        compass_fakehost_free(fh);
        return 1;
    }

    buf body = {0}, want = {0};
    char w[32];
    t->make(&body);
    for (int i = 0; i < CHUNKS; i++) {
        word(w, sizeof(w), i);
        bputf(&want, "%s", w);
    }
    char chat[512];
    snprintf(chat, sizeof(chat),
             "{\"model\":\"%s\",\"stream\":true,\"max_tokens\":2000,\"messages\":["
             "{\"role\":\"system\",\"content\":\"Be brief.\"},"
             "{\"role\":\"user\",\"content\":\"Count to a thousand.\"}]}",
             t->model);

    long long *ns = calloc((size_t)reps, sizeof(*ns));
    int failed = 0;
    compass_str s = {body.p, body.len};
    for (int r = -WARMUP; r < reps && !failed; r++) {
        compass_upstream_error u;
        int rc = prepare(fh, ops, inst, chat, &err);
        if (rc) {
            printf("translate=%s error: build_request: %d %s\n", t->name, rc, err.msg);
            failed = 1;
            break;
        }
        compass_uerr_init(&u, COMPASS_OUTCOME_OK, 0);
        memset(&err, 0, sizeof(err));
        long long t0 = cpu_ns();
        rc = compass_fakehost_feed_sse(fh, inst, s, &u, &err);
        long long t1 = cpu_ns();
        if (rc != (t->expect_end ? COMPASS_STREAM_END : COMPASS_OK)) {
            printf("translate=%s error: feed returned %d: %s\n", t->name, rc, err.msg);
            failed = 1;
            break;
        }
        if (r < 0) { /* check the translation once, while warming up */
            const char *got = compass_fakehost_content(fh);
            if (strcmp(got, want.p) != 0 || compass_fakehost_n_deltas(fh) < CHUNKS) {
                printf("translate=%s error: content mismatch (%zu deltas, %zu of %zu bytes)\n",
                       t->name, compass_fakehost_n_deltas(fh), strlen(got), want.len);
                failed = 1;
            }
            continue;
        }
        ns[r] = t1 - t0;
    }
    if (!failed) {
        qsort(ns, (size_t)reps, sizeof(*ns), cmp_ll);
        long long med = reps % 2 ? ns[reps / 2] : (ns[reps / 2 - 1] + ns[reps / 2]) / 2;
        printf("translate=%s ns_per_chunk=%lld min_ns_per_chunk=%lld chunks=%d bytes=%zu "
               "deltas=%zu\n",
               t->name, med / CHUNKS, ns[0] / CHUNKS, CHUNKS, body.len,
               compass_fakehost_n_deltas(fh));
    }
    free(ns);
    free(body.p);
    free(want.p);
    compass_fakehost_free(fh);
    return failed;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : COMPASS_PLUGIN_DIR;
    int reps = argc > 2 ? atoi(argv[2]) : DEFAULT_REPS;
    if (reps < 1)
        reps = DEFAULT_REPS;
    int bad = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
        bad += bench_one(dir, &targets[i], reps);
    return bad ? 1 : 0;
}
