/*
 * mockllm: the Azure OpenAI wire format. Azure serves OpenAI's chat completions and
 * embeddings bodies under per-deployment paths with an api-version query parameter:
 *
 *   POST /openai/deployments/{deployment}/chat/completions?api-version=...
 *   POST /openai/deployments/{deployment}/embeddings?api-version=...
 *
 * A request without api-version gets Azure's 404 {"error":{"code":"404","message":"Resource
 * not found"}}; one without an api-key header (or Authorization: Bearer, an Entra ID token)
 * gets Azure's 401. Everything else is the OpenAI handler's (openai.c, through mockllm.h);
 * a body without "model" is answered as the deployment's model, as Azure does.
 *
 * The api-version and key checks run in the route handlers, after mockllm.c has applied the
 * chat knobs (status, hang, body...), so error injection works on any request.
 */
#include "mockllm.h"
#include "ml_util.h"

#include <stdio.h>
#include <string.h>

#define DEPLOYMENTS "/openai/deployments/"

/* The deployment segment of path when it is DEPLOYMENTS{dep}/{op} exactly; else NULL. */
static const char *deployment_of(const char *path, const char *op, size_t *len)
{
    size_t pl = sizeof(DEPLOYMENTS) - 1, n;
    const char *dep, *slash;
    if (strncmp(path, DEPLOYMENTS, pl) != 0)
        return NULL;
    dep = path + pl;
    slash = strchr(dep, '/');
    if (!slash || slash == dep || strcmp(slash + 1, op) != 0)
        return NULL;
    n = (size_t)(slash - dep);
    if (len)
        *len = n;
    return dep;
}

static bool match_chat(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && deployment_of(path, "chat/completions", NULL);
}

static bool match_embeddings(const char *method, const char *path)
{
    return strcmp(method, "POST") == 0 && deployment_of(path, "embeddings", NULL);
}

static void az_error(ml_reply *rep, unsigned status, const char *code, const char *message)
{
    json_object *o = json_object_new_object(), *e = json_object_new_object();
    if (!o || !e || json_object_object_add(e, "code", json_object_new_string(code)) ||
        json_object_object_add(e, "message", json_object_new_string(message)) ||
        json_object_object_add(o, "error", e)) {
        json_object_put(e);
        json_object_put(o);
        ml_reply_status(rep, status);
        ml_reply_body(rep, NULL, NULL, 0);
        return;
    }
    ml_reply_json(rep, status, o);
    json_object_put(o);
}

static void unauthorized(ml_reply *rep)
{
    az_error(rep, 401, "401",
             "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
             "provide a valid key for an active subscription and use a correct regional API "
             "endpoint for your resource.");
}

/* api-key: KEY, or Authorization: Bearer KEY. */
static bool az_authorize(const ml_request *req, const char *key, ml_reply *rep)
{
    const char *k = ml_request_header(req, "api-key");
    const char *a = ml_request_header(req, "authorization");
    if ((k && strcmp(k, key) == 0) ||
        (a && strncmp(a, "Bearer ", 7) == 0 && strcmp(a + 7, key) == 0))
        return true;
    unauthorized(rep);
    return false;
}

/* Azure's own checks; false with the reply built when the request fails them. */
static bool az_check(const ml_request *req, const char *op, ml_reply *rep)
{
    const char *v = ml_request_arg(req, "api-version");
    const char *k = ml_request_header(req, "api-key");
    const char *a = ml_request_header(req, "authorization");
    size_t dl = 0;
    const char *dep = deployment_of(req->path, op, &dl);
    if (!v || !*v) {
        az_error(rep, 404, "404", "Resource not found");
        return false;
    }
    if (!(k && *k) && !(a && strncmp(a, "Bearer ", 7) == 0 && a[7])) {
        unauthorized(rep);
        return false;
    }
    /* Azure picks the model by deployment: answer a body without "model" as that model */
    if (dep && req->json && json_object_is_type(req->json, json_type_object) &&
        !json_object_object_get_ex(req->json, "model", NULL)) {
        json_object *m = json_object_new_string_len(dep, (int)dl);
        if (m && json_object_object_add(req->json, "model", m) != 0)
            json_object_put(m);
    }
    return true;
}

static void handle_chat(const ml_request *req, ml_reply *rep)
{
    if (az_check(req, "chat/completions", rep))
        ml_openai_chat(req, rep);
}

static void handle_embeddings(const ml_request *req, ml_reply *rep)
{
    if (az_check(req, "embeddings", rep))
        ml_openai_embeddings(req, rep);
}

static const ml_route routes[] = {
    {.match = match_chat, .handle = handle_chat, .is_chat = true},
    {.match = match_embeddings, .handle = handle_embeddings},
};

const ml_provider ml_azure_provider = {
    .name = "azure",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .authorize = az_authorize,
    .error = ml_openai_error,
    .stream_error = ml_openai_stream_error,
    .last_user_text = ml_openai_last_user_text,
};
