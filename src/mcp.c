/* The Model Context Protocol server's protocol: JSON-RPC 2.0 messages, the
 * lifecycle, and tools/call on a thread per call (see mcp.h). The tools
 * themselves are in mcp_tools*.c. */
#include <pthread.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "clr-config.h"
#include "mcp_tools.h"

/* JSON-RPC 2.0's error codes. */
#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)

/* The protocol versions of the pinned SDK (tools/mcp-client:
 * @modelcontextprotocol/sdk 1.32.2, dist/esm/types.js LATEST_PROTOCOL_VERSION
 * and SUPPORTED_PROTOCOL_VERSIONS), newest first. A client asking for one of
 * them gets it; any other gets the newest. */
#define CLR_MCP_LATEST "2025-11-25"
static const char *const versions[] = {CLR_MCP_LATEST, "2025-06-18", "2025-03-26",
                                       "2024-11-05",   "2024-10-07", NULL};

enum state { NEW, INITIALIZING, READY };

struct call_entry {
    struct mcp_call call;
    struct mcp_session *s;
    char *tool;
    json_t *args;
    struct call_entry *next;
};

struct mcp_session {
    struct mcp_backend be;
    struct mcp_out out;
    struct mcp_sandboxes boxes;
    pthread_mutex_t lock; /* state, calls, running */
    pthread_cond_t idle;  /* running went to 0 */
    enum state state;
    struct call_entry *calls;
    unsigned running;
};

static json_t *rpc_error(const json_t *id, int code, const char *message)
{
    return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", message);
}

static json_t *rpc_result(const json_t *id, json_t *result)
{
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

int mcp_session_new(struct mcp_session **out, const struct mcp_backend *backend, mcp_emit_fn emit,
                    void *emit_ctx, clr_error *err)
{
    struct mcp_session *s = calloc(1, sizeof(*s));
    if (!s)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "out of memory");
    s->be = *backend;
    s->out.emit = emit;
    s->out.ctx = emit_ctx;
    atomic_init(&s->out.log_level, 1); /* info, until the client says otherwise */
    pthread_mutex_init(&s->out.lock, NULL);
    pthread_mutex_init(&s->boxes.lock, NULL);
    s->boxes.ids = json_object();
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    *out = s;
    return 0;
}

bool mcp_session_ready(const struct mcp_session *s)
{
    struct mcp_session *m = (struct mcp_session *)s;
    pthread_mutex_lock(&m->lock);
    bool ready = m->state == READY;
    pthread_mutex_unlock(&m->lock);
    return ready;
}

static json_t *initialize(struct mcp_session *s, const json_t *id, json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    if (!json_is_object(params) || !asked)
        return rpc_error(id, RPC_INVALID_PARAMS,
                         "initialize needs params.protocolVersion (a string such "
                         "as \"" CLR_MCP_LATEST "\")");
    pthread_mutex_lock(&s->lock);
    bool again = s->state != NEW;
    if (!again)
        s->state = INITIALIZING;
    pthread_mutex_unlock(&s->lock);
    if (again)
        return rpc_error(id, RPC_INVALID_REQUEST, "the session is already initialized");
    const char *v = versions[0];
    for (int i = 0; versions[i]; i++) {
        if (strcmp(asked, versions[i]) == 0)
            v = versions[i];
    }
    json_t *r =
        json_pack("{s:s, s:{s:{s:b}, s:{}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", v,
                  "capabilities", "tools", "listChanged", 0, "logging", "serverInfo", "name",
                  "clearing", "title", "clearing sandboxes", "version", CLR_VERSION, "instructions",
                  "Runs commands in hardened gVisor sandboxes. run_command runs "
                  "one command in a fresh "
                  "sandbox and destroys it; for several steps create_sandbox "
                  "once, then exec, write_file, "
                  "read_file, diff, commit on its id. Sandboxes created here are "
                  "destroyed when the "
                  "session ends unless created with keep: true.");
    return rpc_result(id, r);
}

/* Unlinks e from its session and frees it: the end of its call. */
static void call_done(struct call_entry *e)
{
    struct mcp_session *s = e->s;
    pthread_mutex_lock(&s->lock);
    for (struct call_entry **p = &s->calls; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    if (--s->running == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    json_decref(e->call.id);
    json_decref(e->call.progress_token);
    json_decref(e->args);
    free(e->tool);
    free(e);
}

static void *call_thread(void *arg)
{
    struct call_entry *e = arg;
    _cleanup_json_ json_t *result = mcp_tools_call(&e->call, e->tool, e->args);
    /* A cancelled call gets no response (the client has forgotten its id). */
    if (!mcp_call_cancelled(&e->call)) {
        _cleanup_json_ json_t *resp = rpc_result(e->call.id, json_incref(result));
        mcp_out_send(&e->s->out, resp, e->call.id);
    }
    call_done(e);
    return NULL;
}

/* tools/call: checked here, run on a thread of its own; NULL when the thread
 * answers. */
static json_t *tools_call(struct mcp_session *s, const json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    if (!name)
        return rpc_error(id, RPC_INVALID_PARAMS,
                         "tools/call needs params.name, a tool's name "
                         "from tools/list");
    if (!mcp_tools_exists(name)) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown tool '%.200s': tools/list names the tools", name);
        return rpc_error(id, RPC_INVALID_PARAMS, msg);
    }
    if (args && !json_is_object(args))
        return rpc_error(id, RPC_INVALID_PARAMS, "tools/call: params.arguments must be an object");
    struct call_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return rpc_error(id, RPC_INVALID_REQUEST, "out of memory");
    e->s = s;
    e->tool = strdup(name);
    e->args = args ? json_deep_copy(args) : json_object();
    e->call.be = &s->be;
    e->call.out = &s->out;
    e->call.boxes = &s->boxes;
    e->call.id = json_deep_copy(id);
    json_t *tok = json_object_get(json_object_get(params, "_meta"), "progressToken");
    e->call.progress_token = json_is_string(tok) || json_is_integer(tok) ? json_incref(tok) : NULL;
    atomic_init(&e->call.cancelled, false);
    pthread_mutex_lock(&s->lock);
    e->next = s->calls;
    s->calls = e;
    s->running++;
    pthread_mutex_unlock(&s->lock);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, call_thread, e);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        call_done(e);
        return rpc_error(id, RPC_INVALID_REQUEST,
                         "the server could not start a thread for this call: try again");
    }
    return NULL;
}

/* notifications/cancelled: the call's command is killed by its tool; no
 * response follows. */
static void cancel(struct mcp_session *s, json_t *params)
{
    json_t *rid = json_object_get(params, "requestId");
    if (!rid)
        return;
    pthread_mutex_lock(&s->lock);
    for (struct call_entry *e = s->calls; e; e = e->next) {
        if (json_equal(e->call.id, rid))
            atomic_store(&e->call.cancelled, true);
    }
    pthread_mutex_unlock(&s->lock);
}

static json_t *set_level(struct mcp_session *s, const json_t *id, json_t *params)
{
    int l = mcp_log_level_parse(json_string_value(json_object_get(params, "level")));
    if (l < 0)
        return rpc_error(id, RPC_INVALID_PARAMS,
                         "logging/setLevel: params.level must be one of debug, info, notice, "
                         "warning, error, critical, alert, emergency");
    atomic_store(&s->out.log_level, l);
    return rpc_result(id, json_object());
}

/* A request (id given): its response, or NULL when a thread will answer. */
static json_t *request(struct mcp_session *s, const char *method, const json_t *id, json_t *params)
{
    if (strcmp(method, "initialize") == 0)
        return initialize(s, id, params);
    if (strcmp(method, "ping") == 0)
        return rpc_result(id, json_object());
    pthread_mutex_lock(&s->lock);
    enum state st = s->state;
    pthread_mutex_unlock(&s->lock);
    if (st == NEW)
        return rpc_error(id, RPC_INVALID_REQUEST,
                         "the session is not initialized: send initialize first");
    if (params && !json_is_object(params))
        return rpc_error(id, RPC_INVALID_PARAMS, "params must be an object");
    if (strcmp(method, "tools/list") == 0)
        return rpc_result(id, json_pack("{s:o}", "tools", mcp_tools_list()));
    if (strcmp(method, "tools/call") == 0)
        return tools_call(s, id, params);
    if (strcmp(method, "logging/setLevel") == 0)
        return set_level(s, id, params);
    char msg[300];
    snprintf(msg, sizeof(msg), "method '%.200s' not found (this server has tools and logging)",
             method);
    return rpc_error(id, RPC_METHOD_NOT_FOUND, msg);
}

static void notification(struct mcp_session *s, const char *method, json_t *params)
{
    if (strcmp(method, "notifications/initialized") == 0) {
        pthread_mutex_lock(&s->lock);
        if (s->state == INITIALIZING)
            s->state = READY;
        pthread_mutex_unlock(&s->lock);
    } else if (strcmp(method, "notifications/cancelled") == 0) {
        cancel(s, params);
    }
    /* Any other notification is ignored, as the specification asks. */
}

/* One message of a batch or alone: its response, or NULL (a notification, a
 * response of the client, a call answered later). */
static json_t *one(struct mcp_session *s, json_t *msg)
{
    if (!json_is_object(msg))
        return rpc_error(NULL, RPC_INVALID_REQUEST, "a JSON-RPC message must be an object");
    json_t *id = json_object_get(msg, "id");
    bool id_ok = id && (json_is_string(id) || json_is_integer(id));
    const char *ver = json_string_value(json_object_get(msg, "jsonrpc"));
    json_t *m = json_object_get(msg, "method");
    if (!ver || strcmp(ver, "2.0") != 0)
        return rpc_error(id_ok ? id : NULL, RPC_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
    if (!m && id && (json_object_get(msg, "result") || json_object_get(msg, "error")))
        return NULL; /* a response: this server sends no requests, so there is none
                        to match */
    if (!json_is_string(m))
        return rpc_error(id_ok ? id : NULL, RPC_INVALID_REQUEST, "method must be a string");
    if (id && !id_ok)
        return rpc_error(NULL, RPC_INVALID_REQUEST, "id must be a string or an integer");
    json_t *params = json_object_get(msg, "params");
    if (!id) {
        notification(s, json_string_value(m), params);
        return NULL;
    }
    return request(s, json_string_value(m), id, params);
}

void mcp_session_handle(struct mcp_session *s, json_t *msg)
{
    if (!json_is_array(msg)) {
        _cleanup_json_ json_t *r = one(s, msg);
        mcp_out_send(&s->out, r, json_object_get(msg, "id"));
        return;
    }
    if (json_array_size(msg) == 0) {
        _cleanup_json_ json_t *r = rpc_error(NULL, RPC_INVALID_REQUEST, "an empty batch");
        mcp_out_send(&s->out, r, NULL);
        return;
    }
    /* A batch: the answers known at once go back together; a tools/call answers
     * on its own. */
    _cleanup_json_ json_t *answers = json_array();
    size_t i;
    json_t *m;
    json_array_foreach (msg, i, m) {
        json_t *r = one(s, m);
        if (r)
            json_array_append_new(answers, r);
    }
    if (json_array_size(answers))
        mcp_out_send(&s->out, answers, NULL);
}

void mcp_session_parse_error(struct mcp_session *s, const char *why)
{
    _cleanup_json_ json_t *r = rpc_error(NULL, RPC_PARSE_ERROR, why);
    mcp_out_send(&s->out, r, NULL);
}

void mcp_session_end(struct mcp_session *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    for (struct call_entry *e = s->calls; e; e = e->next)
        atomic_store(&e->call.cancelled, true);
    while (s->running)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    const char *id;
    json_t *keep;
    json_object_foreach (s->boxes.ids, id, keep) {
        clr_error err = CLR_ERROR_INIT;
        if (json_is_true(keep))
            continue;
        if (mcp_tools_destroy(&s->be, id, &err) < 0)
            clr_log(CLR_LOG_WARN, "mcp.destroy_failed", "sandbox", id, "error", err.message, NULL);
    }
    json_decref(s->boxes.ids);
    pthread_mutex_destroy(&s->boxes.lock);
    pthread_mutex_destroy(&s->out.lock);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}
