/* What a tool sees of the MCP session it runs in: its backend, whether its call
 * was cancelled, progress and log notifications, and the session's record of
 * the sandboxes it created. It sits below both the protocol (mcp.c) and the
 * tools (mcp_tools*.c), so neither calls the other back. */
#ifndef CLR_MCP_CALL_H
#define CLR_MCP_CALL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "mcp.h"

/* The session's outgoing messages: one at a time, whatever the thread. */
struct mcp_out {
    mcp_emit_fn emit;
    void *ctx;
    pthread_mutex_t lock;
    atomic_int log_level; /* index into mcp_log_levels: messages below it are not sent */
};

/* The syslog levels of MCP's logging, least severe first; NULL-terminated. */
extern const char *const mcp_log_levels[];
/* Its index, or -1 for a name that is not a level. */
int mcp_log_level_parse(const char *name);

void mcp_out_send(struct mcp_out *o, json_t *msg, const json_t *related_id);
/* notifications/message at level (an index into mcp_log_levels) when the client
 * asked for it; data is taken over. */
void mcp_out_log(struct mcp_out *o, int level, json_t *data, const json_t *related_id);

/* The sandboxes a session created: id -> kept. */
struct mcp_sandboxes {
    pthread_mutex_t lock;
    json_t *ids;
};

/* One tools/call in flight. */
struct mcp_call {
    const struct mcp_backend *be;
    struct mcp_out *out;
    struct mcp_sandboxes *boxes;
    json_t *id;             /* the request's id */
    json_t *progress_token; /* or NULL: the client asked for no progress */
    atomic_bool cancelled;
    double progress;
};

bool mcp_call_cancelled(struct mcp_call *c);
/* notifications/progress with a progress that grows by one each time, when the
 * client sent a progressToken; message may be NULL. */
void mcp_call_progress(struct mcp_call *c, const char *message);
/* A log notification tied to the call: {"message": text} at level. */
void mcp_call_log(struct mcp_call *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void mcp_sandboxes_add(struct mcp_sandboxes *b, const char *id, bool keep);
void mcp_sandboxes_remove(struct mcp_sandboxes *b, const char *id);
/* Whether id was created in this session (*keep: whether it is kept). */
bool mcp_sandboxes_has(struct mcp_sandboxes *b, const char *id, bool *keep);

#endif
