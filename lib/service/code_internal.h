/* The code interpreter's internals shared by code.c (sessions, bridges, cells) and code_adopt.c
 * (a kernel a fork or restore takes over from a snapshot): the session, its lock, and the
 * bridge's and the turn's primitives. Not for other modules: see code.h. */
#ifndef CLR_SERVICE_CODE_INTERNAL_H
#define CLR_SERVICE_CODE_INTERNAL_H

#include <pthread.h>

#include "service_int.h"

#define CODE_MAX_SESSIONS CLR_SERVICE_CODE_SESSIONS_MAX
#define CODE_MAX_QUEUED 16          /* cells waiting for one session */
#define BRIDGE_BUDGET (64 * CLR_MIB) /* all the bridge may print (the exec stdout cap) */
#define BRIDGE_ERR_KEEP (64 * 1024)
/* Over the live channel the bridge's output is a stream: how much of it may wait unread in the
 * daemon (a line's bound and a frame: its reader parses each line as it comes). */
#define BRIDGE_QUEUE (LINE_MAX + CLR_MIB)
#define CELL_CAP_DEFAULT CLR_MIB
#define CELL_CAP_MAX (4 * CLR_MIB)
#define CELL_TIMEOUT_DEFAULT_MS 30000
#define CELL_TIMEOUT_MAX_MS (3600 * 1000)
/* A line of the bridge: at most its cell's text escaped as JSON, and the fields around it. */
#define LINE_MAX (8 * CELL_CAP_MAX + 64 * 1024)
#define READY_WAIT_MS 330000 /* a kernel's start under gVisor, many side by side on a busy host */
#define ANSWER_GRACE_MS 60000 /* past a cell's timeout: its interrupt, or a kernel's restart */

struct code_session {
    clr_service *svc;
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    char tenant[CLR_TENANT_MAX + 1]; /* the sandbox's: whose max_code_sessions it counts in */
    /* It holds one of its tenant's max_code_sessions, from its admission
     * (svc_code_session_admit) until its kernel is ended (svc_code_bridge_end); one whose
     * bridge ended on its own (ended) counts no longer (svc_code_lock). */
    bool kernel;
    /* The bridge: a background command of the sandbox, on its live channel (lv holds a
     * reference while it runs; chan is its id there, 0 over a docker exec). Only the cell
     * holding the session's turn (or stop) touches these; the thread waits for the command and
     * sets ended. */
    clr_engine *eng;
    struct live_sb *lv;
    uint32_t chan; /* written under svc_code_lock: a snapshot reads it (svc_code_on_channel) */
    clr_exec *h;
    pthread_t thread;
    bool thread_started;
    bool ended;                 /* the bridge's command is over (svc_code_lock) */
    clr_exec_status end_status; /* how (svc_code_lock) */
    char end_message[256];
    uint64_t used;              /* bytes the bridge printed (svc_code_lock) */
    struct code_lines *lines;   /* svc_code_lock */
    uint64_t next_ticket, serving; /* cells in the order they came (svc_code_lock) */
    /* Why the last kernel ended with its state: said by the next cell's answer that has a
     * kernel, kept until then (session_ready). Only the turn's holder touches it. */
    char lost[200];
    bool stopping;  /* the daemon stops: no cell waits any longer (svc_code_lock) */
    bool start_refused; /* the last start failed in the engine: nothing ran (bridge_start) */
    struct code_session *next;
};

/* Guards what struct code_session marks (svc_code_lock); svc_code_cond is broadcast on each
 * change. */
extern pthread_mutex_t svc_code_lock;
extern pthread_cond_t svc_code_cond;

/* A request's nonce: 32 random hex digits. */
void svc_code_nonce(char nonce[33]);
/* The bridge command's output callback (ctx: the session) and its waiting thread. */
void svc_code_bridge_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len);
void *svc_code_bridge_main(void *arg);
/* Kills the bridge and frees what it held (the session keeps its place in the quota); and that
 * with the place given back. The caller holds the session's turn. */
void svc_code_bridge_kill(struct code_session *s);
void svc_code_bridge_end(struct code_session *s);
/* Sends one request line to the bridge. */
int svc_code_bridge_send(struct code_session *s, json_t *req, clr_error *err);
/* The sandbox's session with the caller's turn (made when make; NULL with err when refused,
 * with err untouched when there is none and make is false). */
struct code_session *svc_code_session_take(clr_service *svc, const char *id, const char *tenant,
                                  bool make, clr_error *err);
/* Takes (CLR_E_LIMIT when full) or gives back one of the tenant's max_code_sessions. */
int svc_code_session_admit(struct code_session *s, clr_error *err);
void svc_code_session_release(struct code_session *s);
/* Gives the turn back; frees the session when it keeps nothing. */
void svc_code_session_give_or_free(struct code_session *s);

#endif
