/*
 * openai_wire: the OpenAI chat completions wire format, shared by the provider plugins that
 * speak it (openai, azure). A plugin may not link another plugin, so openai_wire.c is
 * compiled into each of them (list it in compass_add_plugin's SOURCES); plugins build with
 * hidden visibility, so none of these names leaves either .so.
 *
 * A plugin embeds an oai_wire in its instance, fills it at instance_new with the oai_wire_set_*
 * helpers, and calls the oai_wire_* ops with the URL it computed. Error messages start with
 * "<plugin>: deployment <name>: ..." and log lines name the deployment; the key is never
 * logged and is wiped when the wire is released.
 */
#ifndef COMPASS_PLUGINS_OPENAI_WIRE_H
#define COMPASS_PLUGINS_OPENAI_WIRE_H

#include <compass/plugin.h>

#include <json-c/json.h>

#define OAI_WIRE_MAX_EXTRA_HEADERS 32

/* How the output cap goes out (oai_wire.max_tokens_field). */
enum { OAI_MTF_KEEP = 0, OAI_MTF_MAX_TOKENS = 1, OAI_MTF_MAX_COMPLETION_TOKENS = 2 };

/** The per-deployment state the wire code needs. Strings are from h->alloc (oai_wire_release
 *  frees them); plugin is a static string. */
typedef struct oai_wire {
    const compass_host *h;
    const char *plugin;     /* "openai", "azure": the prefix of error messages */
    char *name;             /* deployment name, for messages and log lines */
    char *auth_name;        /* NULL: send no auth header */
    char *auth_value;       /* secret: never logged, wiped on release */
    size_t auth_cap;        /* bytes of auth_value to wipe */
    char *organization;     /* OpenAI-Organization; NULL when unset */
    char *extra_buf;        /* backing store of extra[] */
    compass_header extra[OAI_WIRE_MAX_EXTRA_HEADERS];
    size_t n_extra;
    int stream_options;     /* send stream_options.include_usage when streaming */
    int max_tokens_field;   /* OAI_MTF_* */
} oai_wire;

/* ---------------------------------------------------------------------------------------- */
/* Instance helpers (instance_new)                                                            */
/* ---------------------------------------------------------------------------------------- */

/** Zeroes w and copies the deployment name (NULL names it after the plugin). stream_options
 *  starts on. COMPASS_ENOMEM with err filled on failure; release w either way. */
int oai_wire_init(oai_wire *w, const compass_host *h, const char *plugin, const char *name,
                  compass_err *err);
/** Wipes the auth value and frees what w holds (not w itself). Safe on a zeroed w. */
void oai_wire_release(oai_wire *w);

/** Formats err (may be NULL) and returns code. */
int oai_wire_err(compass_err *err, int code, const char *fmt, ...) COMPASS_PRINTF(3, 4);
/** A NUL-terminated copy of s[0..n) from h->alloc; NULL on failure. */
char *oai_wire_strndup(const compass_host *h, const char *s, size_t n);
/** Whether s[0..n) holds a control character (CTL or DEL). */
int oai_wire_has_ctl(const char *s, size_t n);
/** Whether s[0..n) is a non-empty RFC 9110 token (a valid header name). */
int oai_wire_is_token(const char *s, size_t n);
/** base[0..base_len) + path (a '/' added when path lacks one); a path that is a whole
 *  http(s) URL replaces the base. From h->alloc; NULL on failure. */
char *oai_wire_join_url(const compass_host *h, const char *base, size_t base_len,
                        const char *path);

/** Sets the auth header to "<header>: <scheme><key>" (a scheme ending in a letter or digit
 *  gets a space). A NULL key or an empty header sends none. COMPASS_ECONFIG for a bad header
 *  name or a control character in scheme or key. */
int oai_wire_set_auth(oai_wire *w, const char *header, const char *scheme, const char *key,
                      compass_err *err);
/** Sets OpenAI-Organization (NULL or empty: none). */
int oai_wire_set_organization(oai_wire *w, const char *org, compass_err *err);
/** Parses "Name: value; Name2: value2" into w->extra (NULL or empty: none). */
int oai_wire_set_extra_headers(oai_wire *w, const char *spec, compass_err *err);
/** Sets max_tokens_field from NULL/""/"keep", "max_tokens" or "max_completion_tokens". */
int oai_wire_set_max_tokens_field(oai_wire *w, const char *value, compass_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Provider ops over a wire (the plugin checks its instance for NULL first)                   */
/* ---------------------------------------------------------------------------------------- */

/** build_request: POST url (NUL-terminated, copied) with the chat completions body. */
int oai_wire_build_chat(const oai_wire *w, compass_req *req, const compass_chat_request *in,
                        const char *url, compass_http_request *out, compass_err *err);
/** parse_response for a chat.completion body. The body is first read by the scanner reader
 *  (common/json_scan.h: only what the response keeps is decoded, by json-c); what it leaves
 *  (errors, bytes that are not strict JSON, duplicate or escaped keys, no choice 0 with a
 *  message object) goes to the json-c tree reader, which reads every body the same way. Both
 *  copy what they keep into the request arena. */
int oai_wire_parse_response(const oai_wire *w, compass_req *req,
                            const compass_http_response *resp, compass_chat_response *out,
                            compass_upstream_error *uerr, compass_err *err);
/** parse_stream_event for chat.completion.chunk events and [DONE]. A chunk is first read by
 *  the scanner reader (common/json_scan.h: only what a chunk keeps is decoded, by json-c);
 *  what it leaves (errors, bytes that are not strict JSON, duplicate or escaped keys, odd
 *  shapes) goes to the json-c tree reader, which reads every event the same way. */
int oai_wire_parse_stream_event(const oai_wire *w, compass_req *req,
                                const compass_stream_event *ev, compass_upstream_error *uerr,
                                compass_err *err);

/* The two readers behind oai_wire_parse_stream_event and oai_wire_parse_response, for the
 * tests that compare them. */

/** What a scanner reader (oai_wire_parse_stream_event_fast, oai_wire_parse_response_fast)
 *  returns for input it leaves to the tree reader (having emitted or filled nothing). */
#define OAI_WIRE_DECLINED 2
/** The json-c tree reader alone. */
int oai_wire_parse_stream_event_full(const oai_wire *w, compass_req *req,
                                     const compass_stream_event *ev,
                                     compass_upstream_error *uerr, compass_err *err);
/** The scanner reader alone: as oai_wire_parse_stream_event, or OAI_WIRE_DECLINED. */
int oai_wire_parse_stream_event_fast(const oai_wire *w, compass_req *req,
                                     const compass_stream_event *ev, compass_err *err);
/** parse_response's json-c tree reader alone. */
int oai_wire_parse_response_full(const oai_wire *w, compass_req *req,
                                 const compass_http_response *resp, compass_chat_response *out,
                                 compass_upstream_error *uerr, compass_err *err);
/** parse_response's scanner reader alone: as oai_wire_parse_response, or OAI_WIRE_DECLINED
 *  (out untouched, nothing logged) for a body it leaves to the tree reader. */
int oai_wire_parse_response_fast(const oai_wire *w, compass_req *req,
                                 const compass_http_response *resp, compass_chat_response *out,
                                 compass_err *err);
/** classify_error for OpenAI-shaped (and compatible servers') error bodies. w may be NULL. */
void oai_wire_classify_error(const oai_wire *w, compass_req *req,
                             const compass_http_response *resp, compass_upstream_error *u);
/** build_embed_request: POST url with an embeddings body (floats requested). */
int oai_wire_build_embed(const oai_wire *w, compass_req *req, const compass_embed_request *in,
                         const char *url, compass_http_request *out, compass_err *err);
/** parse_embed_response for an OpenAI embeddings list. */
int oai_wire_parse_embed_response(const oai_wire *w, compass_req *req,
                                  const compass_http_response *resp,
                                  compass_embed_response *out, compass_upstream_error *uerr,
                                  compass_err *err);

/** Room oai_wire_double_text needs. */
#define OAI_WIRE_DOUBLE_CAP 40
/** The text the request writer gives a finite double d: the shortest of %.15g and %.17g that
 *  reads back as d, with a '.' whatever the locale ("0.2", "-0", "1e-05"). Writes buf (at
 *  least OAI_WIRE_DOUBLE_CAP bytes, NUL-terminated) and returns its length. */
size_t oai_wire_double_text(double d, char *buf);
/** oai_wire_double_text's exact fast path, without snprintf or strtod: for 0 and for d the
 *  double nearest a decimal of at most 15 significant digits, at most 8 of them after the
 *  point, with 1e-4 <= |d| < 1e15 (temperatures, penalties, most numbers people write). The
 *  same text, or 0 (buf undefined) for any other d. */
size_t oai_wire_double_fast(double d, char *buf);

/* ---------------------------------------------------------------------------------------- */
/* Reading helpers for plugin-specific additions                                             */
/* ---------------------------------------------------------------------------------------- */

/** Parses exactly one JSON value from p[0..n); NULL with why filled when it is not JSON. */
json_object *oai_wire_parse_json(const char *p, size_t n, char *why, size_t why_cap);
/** Member key of object o, or NULL (also for a JSON null or when o is not an object). */
json_object *oai_wire_jget(json_object *o, const char *key);
/** A borrowed view of a string member; empty when absent or not a string. */
compass_str oai_wire_jstr(json_object *o, const char *key);
/** "ok", "retryable", "rate_limited", ... for log lines. */
const char *oai_wire_outcome_name(int outcome);
/** A Go-style duration ("1s", "6m0s", "12ms") at the start of p, in ms; -1 when none. */
int64_t oai_wire_parse_duration(const char *p, size_t n);

#endif /* COMPASS_PLUGINS_OPENAI_WIRE_H */
