/*
 * A fake host for plugin unit tests: hands a plugin a real compass_host table, a request
 * arena, captured log lines and captured stream deltas, so provider ops can be tested on
 * recorded wire bytes without compassd. Link the compass_fakehost static library.
 */
#ifndef COMPASS_FAKEHOST_H
#define COMPASS_FAKEHOST_H

#include <compass/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct compass_fakehost compass_fakehost;

/** A fake host whose plugin is called plugin_name. */
compass_fakehost *compass_fakehost_new(const char *plugin_name);
void compass_fakehost_free(compass_fakehost *fh);

/** The host table to give the plugin. Owned by fh. */
const compass_host *compass_fakehost_host(compass_fakehost *fh);

/** Loads the plugin .so at path (dlopen RTLD_NOW|RTLD_LOCAL), checks the ABI, calls init with
 *  this host. Returns the descriptor or NULL with err filled. The .so stays loaded until
 *  compass_fakehost_free (which calls fini). */
const compass_plugin_desc *compass_fakehost_load(compass_fakehost *fh, const char *path,
                                                 compass_err *err);

/** Makes an instance of the loaded plugin: options is a list of "name=value" strings (NULL
 *  terminated) applied over the plugin's option defaults; base_url/api_key may be NULL. */
void *compass_fakehost_instance(compass_fakehost *fh, const char *name, const char *base_url,
                                const char *api_key, const char *const *options,
                                compass_err *err);

/** Starts a fresh request: new arena, no captured deltas. The previous one is released. */
compass_req *compass_fakehost_req(compass_fakehost *fh);

/** Parses an OpenAI chat request body into a canonical request (in the current request's
 *  arena). Returns 0 or a COMPASS_E* code with err filled. */
int compass_fakehost_parse_chat(compass_fakehost *fh, const char *json,
                                compass_chat_request *out, compass_err *err);

/** Deltas captured from stream_emit since the request started (copies, request-owned). */
size_t compass_fakehost_n_deltas(compass_fakehost *fh);
const compass_chat_delta *compass_fakehost_delta(compass_fakehost *fh, size_t i);
/** All content fragments of the captured deltas joined, NUL-terminated. */
const char *compass_fakehost_content(compass_fakehost *fh);
/** All tool_arguments fragments for tool index idx joined, NUL-terminated. */
const char *compass_fakehost_tool_args(compass_fakehost *fh, int idx);

/** Everything the plugin logged, one line each, "LEVEL message\n". */
const char *compass_fakehost_log(compass_fakehost *fh);

/** Makes the nth host allocation from now (1-based) fail; 0 turns that off. Counts alloc,
 *  realloc, req_alloc and req_strdup. */
void compass_fakehost_fail_alloc_at(compass_fakehost *fh, long nth);
/** Allocations made through the host since the last call (for OOM loops). */
long compass_fakehost_alloc_count(compass_fakehost *fh);

/** Reads a whole file (e.g. a recorded wire fixture) into the request arena. */
compass_str compass_fakehost_read_file(compass_fakehost *fh, const char *path);

/** A compass_http_response over a status and body (no headers) for parse hooks. */
compass_http_response compass_fakehost_http(int status, const char *body);

/** Feeds a whole recorded SSE body through the plugin's parse_stream_event, splitting events
 *  like the host does. Returns the last hook's return code (COMPASS_STREAM_END, 0, or an
 *  error), stopping at the first error or end marker. */
int compass_fakehost_feed_sse(compass_fakehost *fh, void *inst, compass_str body,
                              compass_upstream_error *uerr, compass_err *err);

#ifdef __cplusplus
}
#endif

#endif
