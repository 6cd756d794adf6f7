/* What a tool sees of its session: see mcp_call.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_call.h"

const char *const mcp_log_levels[] = {"debug",    "info",  "notice",    "warning", "error",
                                      "critical", "alert", "emergency", NULL};

int mcp_log_level_parse(const char *name)
{
    for (int i = 0; name && mcp_log_levels[i]; i++) {
        if (strcmp(name, mcp_log_levels[i]) == 0)
            return i;
    }
    return -1;
}

void mcp_out_send(struct mcp_out *o, json_t *msg, const json_t *related_id)
{
    if (!msg)
        return;
    pthread_mutex_lock(&o->lock);
    o->emit(o->ctx, msg, related_id);
    pthread_mutex_unlock(&o->lock);
}

void mcp_out_log(struct mcp_out *o, int level, json_t *data, const json_t *related_id)
{
    _cleanup_json_ json_t *d = data;
    if (level < atomic_load(&o->log_level))
        return;
    _cleanup_json_ json_t *msg = json_pack("{s:s, s:s, s:{s:s, s:s, s:O}}", "jsonrpc", "2.0",
                                           "method", "notifications/message", "params", "level",
                                           mcp_log_levels[level], "logger", "clearing", "data", d);
    mcp_out_send(o, msg, related_id);
}

bool mcp_call_cancelled(struct mcp_call *c)
{
    return atomic_load(&c->cancelled);
}

void mcp_call_progress(struct mcp_call *c, const char *message)
{
    if (!c->progress_token || mcp_call_cancelled(c))
        return;
    c->progress += 1;
    _cleanup_json_ json_t *msg = json_pack(
        "{s:s, s:s, s:{s:O, s:f, s:s?}}", "jsonrpc", "2.0", "method", "notifications/progress",
        "params", "progressToken", c->progress_token, "progress", c->progress, "message", message);
    mcp_out_send(c->out, msg, c->id);
}

void mcp_call_log(struct mcp_call *c, int level, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    mcp_out_log(c->out, level, json_pack("{s:s}", "message", text), c->id);
}

void mcp_sandboxes_add(struct mcp_sandboxes *b, const char *id, bool keep)
{
    pthread_mutex_lock(&b->lock);
    json_object_set_new(b->ids, id, json_boolean(keep));
    pthread_mutex_unlock(&b->lock);
}

void mcp_sandboxes_remove(struct mcp_sandboxes *b, const char *id)
{
    pthread_mutex_lock(&b->lock);
    json_object_del(b->ids, id);
    pthread_mutex_unlock(&b->lock);
}

bool mcp_sandboxes_has(struct mcp_sandboxes *b, const char *id, bool *keep)
{
    pthread_mutex_lock(&b->lock);
    json_t *v = json_object_get(b->ids, id);
    if (v && keep)
        *keep = json_is_true(v);
    pthread_mutex_unlock(&b->lock);
    return v != NULL;
}
