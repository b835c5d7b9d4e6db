/*
 * echo: an example out-of-tree provider for compass.
 *
 * It answers in-process (local_call, no network) with the last user message reversed,
 * after a configurable prefix. Multi-byte UTF-8 sequences are kept whole, so ASCII text is
 * reversed byte by byte and non-ASCII characters survive intact. When the client streams, the
 * answer arrives as one delta per word, then a finish delta, then a usage delta.
 *
 * It includes only <compass/plugin.h> and links against nothing from compass: everything it
 * needs (allocation, the request arena, the request id) comes through the compass_host table.
 */
#include <compass/plugin.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- options: declared here, parsed and checked by the host ---------------------------- */

typedef struct echo_options {
    const char *prefix; /* host-owned until instance_free */
} echo_options;

static const compass_option echo_option_table[] = {
    {"prefix", COMPASS_OPT_STRING, "echo: ", 0, offsetof(echo_options, prefix),
     "text put before the reversed message"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* ---- instances: one per deployment in the config --------------------------------------- */

typedef struct echo_inst {
    const compass_host *h;
    const char *prefix;
} echo_inst;

static int echo_instance_new(const compass_host *h, const compass_instance_info *info,
                             void **inst, compass_err *err)
{
    const echo_options *o = info ? (const echo_options *)info->options : NULL;
    echo_inst *e;

    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "echo: instance_new: NULL argument");
    e = (echo_inst *)h->alloc(h, sizeof(*e));
    if (!e)
        return compass_err_set(err, COMPASS_ENOMEM, "echo: out of memory");
    e->h = h;
    e->prefix = (o && o->prefix) ? o->prefix : "echo: ";
    *inst = e;
    return COMPASS_OK;
}

static void echo_instance_free(void *inst)
{
    echo_inst *e = (echo_inst *)inst;
    if (e)
        e->h->free(e->h, e);
}

/* ---- the answer -------------------------------------------------------------------------- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Writes s reversed into dst (s.len bytes), keeping each UTF-8 sequence (a lead byte and its
 * continuation bytes) in its original byte order. */
static void reverse_utf8(char *dst, compass_str s)
{
    size_t i = 0, out = s.len;
    while (i < s.len) {
        size_t n = 1;
        while (i + n < s.len && ((unsigned char)s.ptr[i + n] & 0xC0) == 0x80)
            n++;
        out -= n;
        memcpy(dst + out, s.ptr + i, n);
        i += n;
    }
}

static size_t count_words(compass_str s)
{
    size_t i, n = 0;
    for (i = 0; i < s.len; i++)
        if (!is_space(s.ptr[i]) && (i == 0 || is_space(s.ptr[i - 1])))
            n++;
    return n;
}

static void fill_usage(compass_usage *u, const compass_chat_request *in, size_t words)
{
    size_t i, bytes = 0;
    memset(u, 0, sizeof(*u));
    for (i = 0; i < in->n_messages; i++)
        bytes += in->messages[i].content.len;
    u->present = 1;
    u->prompt_tokens = (int64_t)((bytes + 3) / 4);
    u->completion_tokens = (int64_t)words;
    u->total_tokens = u->prompt_tokens + u->completion_tokens;
}

static int echo_local_call(void *inst, compass_req *req, const compass_chat_request *in,
                           compass_local_result *out, compass_err *err)
{
    echo_inst *e = (echo_inst *)inst;
    const compass_host *h;
    compass_str user = {NULL, 0}, text, id;
    size_t i, plen, words;
    char *buf;

    if (!e || !req || !in || !out)
        return compass_err_set(err, COMPASS_EINVAL, "echo: local_call: NULL argument");
    h = e->h;
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    out->response.size = sizeof(out->response);

    for (i = in->n_messages; i > 0; i--) {
        if (in->messages[i - 1].role == COMPASS_ROLE_USER) {
            user = in->messages[i - 1].content;
            break;
        }
    }

    /* prefix + reversed text, NUL-terminated, in the request arena */
    plen = strlen(e->prefix);
    buf = (char *)h->req_alloc(req, plen + user.len + 1);
    if (!buf)
        return compass_err_set(err, COMPASS_ENOMEM, "echo: out of memory");
    memcpy(buf, e->prefix, plen);
    reverse_utf8(buf + plen, user);
    buf[plen + user.len] = '\0';
    text.ptr = buf;
    text.len = plen + user.len;
    words = count_words(text);
    id = h->req_id(req);

    if (!in->stream) {
        out->response.id = id;
        out->response.model = in->model;
        out->response.has_content = 1;
        out->response.content = text;
        out->response.finish_reason = COMPASS_FINISH_STOP;
        fill_usage(&out->response.usage, in, words);
        return COMPASS_OK;
    } else {
        /* role, one delta per word (the word and the spaces after it), finish, usage */
        size_t n = (words ? words : 1) + 3, k = 1, start = 0, seen = 0;
        compass_chat_delta *d = (compass_chat_delta *)h->req_alloc(req, n * sizeof(*d));
        if (!d)
            return compass_err_set(err, COMPASS_ENOMEM, "echo: out of memory");
        for (i = 0; i < n; i++) {
            compass_delta_init(&d[i]);
            d[i].id = id;
            d[i].model = in->model;
        }
        d[0].role = COMPASS_ROLE_ASSISTANT;
        d[0].content = compass_str_c("");
        for (i = 0; i < text.len; i++) {
            if (is_space(text.ptr[i]) || (i > 0 && !is_space(text.ptr[i - 1])))
                continue; /* not the first byte of a word */
            if (seen++ > 0) {
                d[k].content.ptr = text.ptr + start;
                d[k].content.len = i - start;
                k++;
                start = i;
            }
        }
        if (text.len > start) {
            d[k].content.ptr = text.ptr + start;
            d[k].content.len = text.len - start;
            k++;
        }
        d[k++].finish_reason = COMPASS_FINISH_STOP;
        fill_usage(&d[k++].usage, in, words);
        out->deltas = d;
        out->n_deltas = k;
        return COMPASS_OK;
    }
}

/* ---- the descriptor: what the host reads before running any of the code above ------------ */

static const compass_provider_ops echo_ops = {
    .size = sizeof(compass_provider_ops),
    .instance_new = echo_instance_new,
    .instance_free = echo_instance_free,
    .local_call = echo_local_call,
};

static const compass_plugin_desc echo_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_PROVIDER,
    .name = "echo",
    .version = "1.0.0",
    .summary = "example in-process provider: answers with the last user message reversed",
    .options = echo_option_table,
    .options_size = sizeof(echo_options),
    .ops.provider = &echo_ops,
};

COMPASS_PLUGIN_DEFINE(echo, echo_desc)
