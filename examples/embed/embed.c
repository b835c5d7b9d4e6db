/*
 * embed: a host program that runs compass in-process through libcompass.
 *
 *   embed CONFIG [MODEL [PROMPT]]
 *
 * Opens an engine from CONFIG (a compassd.conf), sends one plain and one streamed chat
 * completion for MODEL (default "mock-1") and prints what came back:
 *
 *   chat: status 200
 *   chat: content: <the assistant's answer>
 *   stream: deltas: <each delta's content, printed as it arrives>
 *   stream: status 200
 *   stream: content: <the deltas joined>
 *
 * Exits 0 when both calls answered 200, 1 otherwise, 2 on a usage or setup error.
 */
#include <compass/compass.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growable byte buffer ------------------------------------------------------------ */

typedef struct buf {
    char *p;
    size_t len, cap;
    int failed;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Appends s as a JSON string literal, quotes included. */
static void buf_json_str(buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_add(b, esc, 6);
        } else {
            buf_add(b, s, 1);
        }
    }
    buf_add(b, "\"", 1);
}

/* ---- reading the answer's content out of a chat.completion body -------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the JSON string literal starting at s (at its opening quote) into out. A real host
 * would use its JSON library; this keeps the example free of dependencies. */
static int json_str_decode(const char *s, buf *out)
{
    if (*s++ != '"')
        return -1;
    while (*s && *s != '"') {
        if (*s != '\\') {
            buf_add(out, s++, 1);
            continue;
        }
        s++;
        switch (*s) {
        case 'n': buf_add(out, "\n", 1); break;
        case 't': buf_add(out, "\t", 1); break;
        case 'r': buf_add(out, "\r", 1); break;
        case 'b': buf_add(out, "\b", 1); break;
        case 'f': buf_add(out, "\f", 1); break;
        case 'u': {
            unsigned v = 0;
            int i;
            char u8[3];
            for (i = 1; i <= 4; i++) {
                int h = hexval(s[i]);
                if (h < 0)
                    return -1;
                v = v * 16 + (unsigned)h;
            }
            s += 4;
            if (v < 0x80) {
                u8[0] = (char)v;
                buf_add(out, u8, 1);
            } else if (v < 0x800) {
                u8[0] = (char)(0xC0 | (v >> 6));
                u8[1] = (char)(0x80 | (v & 0x3F));
                buf_add(out, u8, 2);
            } else { /* surrogate pairs are left as two 3-byte sequences: fine for a demo */
                u8[0] = (char)(0xE0 | (v >> 12));
                u8[1] = (char)(0x80 | ((v >> 6) & 0x3F));
                u8[2] = (char)(0x80 | (v & 0x3F));
                buf_add(out, u8, 3);
            }
            break;
        }
        case '\0': return -1;
        default: buf_add(out, s, 1); break; /* \" \\ \/ */
        }
        s++;
    }
    return *s == '"' ? 0 : -1;
}

/* The first choice's message.content from a chat.completion JSON body. */
static int message_content(const char *body, buf *out)
{
    const char *p = strstr(body, "\"message\"");
    if (!p || !(p = strstr(p, "\"content\"")))
        return -1;
    p += strlen("\"content\"");
    while (*p == ' ' || *p == ':' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return json_str_decode(p, out);
}

/* ---- the streamed call's delta callback -------------------------------------------------- */

static void on_delta(void *ud, const compass_chat_delta *d)
{
    buf *joined = (buf *)ud;
    if (d->content.len == 0)
        return;
    fwrite(d->content.ptr, 1, d->content.len, stdout);
    fputc('|', stdout); /* shows where one delta ends */
    fflush(stdout);
    buf_add(joined, d->content.ptr, d->content.len);
}

/* ---- main ---------------------------------------------------------------------------------- */

static buf make_body(const char *model, const char *prompt, int stream)
{
    buf b = {0};
    buf_puts(&b, "{\"model\":");
    buf_json_str(&b, model);
    buf_puts(&b, ",\"messages\":[{\"role\":\"user\",\"content\":");
    buf_json_str(&b, prompt);
    buf_puts(&b, stream ? "}],\"stream\":true}" : "}]}");
    return b;
}

int main(int argc, char **argv)
{
    const char *model = argc > 2 ? argv[2] : "mock-1";
    const char *prompt = argc > 3 ? argv[3] : "hello from embed";
    compass_engine *e = NULL;
    compass_engine_opts opts;
    compass_err err;
    buf body, joined = {0}, content = {0};
    char *answer = NULL;
    int status = 0, rc, ok = 1;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s CONFIG [MODEL [PROMPT]]\n", argv[0]);
        return 2;
    }
    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.log_level = COMPASS_LOG_WARN;
    memset(&err, 0, sizeof(err));
    rc = compass_engine_open(&e, argv[1], &opts, &err);
    if (rc) {
        fprintf(stderr, "embed: %s: %s (%s)\n", argv[1], err.msg, compass_errname(rc));
        return 2;
    }
    printf("libcompass %s\n", compass_version());

    /* 1. a plain call: wait for the whole answer */
    body = make_body(model, prompt, 0);
    if (body.failed) {
        fprintf(stderr, "embed: out of memory\n");
        compass_engine_close(e, 0);
        return 2;
    }
    rc = compass_engine_chat(e, body.p, body.len, NULL, NULL, &status, &answer);
    free(body.p);
    if (rc) {
        printf("chat: failed: %s\n", compass_strerror(rc));
        ok = 0;
    } else {
        printf("chat: status %d\n", status);
        if (status == 200 && message_content(answer, &content) == 0 && !content.failed)
            printf("chat: content: %s\n", content.p ? content.p : "");
        else
            printf("chat: body: %s\n", answer ? answer : "");
        ok = ok && status == 200;
    }
    compass_free(answer);
    answer = NULL;
    free(content.p);

    /* 2. a streamed call: deltas are printed while the call runs */
    body = make_body(model, prompt, 1);
    if (body.failed) {
        fprintf(stderr, "embed: out of memory\n");
        compass_engine_close(e, 0);
        return 2;
    }
    printf("stream: deltas: ");
    fflush(stdout);
    status = 0;
    rc = compass_engine_chat(e, body.p, body.len, on_delta, &joined, &status, &answer);
    free(body.p);
    printf("\n");
    if (rc) {
        printf("stream: failed: %s\n", compass_strerror(rc));
        ok = 0;
    } else {
        printf("stream: status %d\n", status);
        if (answer && answer[0])
            printf("stream: error: %s\n", answer);
        printf("stream: content: %s\n", joined.p ? joined.p : "");
        ok = ok && status == 200;
    }
    compass_free(answer);
    free(joined.p);

    compass_engine_close(e, 1000);
    return ok ? 0 : 1;
}
