/* The daemon's durable state: SQLite in WAL mode, schema migrations, one row per sandbox and per
 * exec. A clr_store may be used from many threads (SQLite serialized mode plus a busy timeout). */
#ifndef CLEARING_STORE_H
#define CLEARING_STORE_H

#include <jansson.h>

#include "common.h"
#include "sandbox.h"

typedef struct clr_store clr_store;

/* Sandbox states as the daemon sees them. */
#define CLR_STATE_RUNNING "running"
#define CLR_STATE_DESTROYED "destroyed"
/* Its container died (destroy_reason "oom", "runtime died") or vanished behind the daemon's
 * back; its workspace (and stopped container) stay, readable, until it is destroyed. */
#define CLR_STATE_LOST "lost"
/* The sandbox of a plan the daemon runs: live (it counts against max_sandboxes), but only the
 * plan uses it; destroyed when the plan ends, or by the recovery after a restart. */
#define CLR_STATE_PLAN "plan"

/* A destroy reason is kept whole up to this many bytes; a longer one is cut before the
 * character that would cross it, never inside a UTF-8 sequence. */
#define CLR_STORE_REASON_MAX 255

typedef struct clr_store_sandbox {
    clr_sandbox_info info;      /* info.state holds one of the CLR_STATE_* values */
    int64_t max_expires_at;     /* extensions never go past this */
    uint32_t idle_timeout_s;    /* 0: none */
    int64_t last_active_at;
    int64_t destroyed_at;
    char destroy_reason[CLR_STORE_REASON_MAX + 1]; /* whole, or cut at a UTF-8 boundary */
    json_t *metadata;           /* object of strings; owned by the struct */
    json_t *env;                /* array of "K=V"; owned by the struct */
    /* Adopted from its container's labels by a daemon that started on an empty database (the
     * old one was moved aside): its metadata, environment and egress policy were not on the
     * labels and are gone. */
    bool recovered;
    /* Its live channel was attached to its current container at some time: runsc cannot
     * restore a checkpoint taken since, so its snapshots say so (lib/service/snapshots.c).
     * Stored as the container the attach was for: only a new container that no attach named
     * clears it, and a mark naming another container than the row's reads as attached (fail
     * closed). */
    bool attached;
} clr_store_sandbox;

CLR_PUBLIC void clr_store_sandbox_clear(clr_store_sandbox *s);

/* Opens (creating if needed) the database at path, checks it (PRAGMA quick_check) and migrates it
 * to the current schema. A corrupt file is CLR_E_UNAVAILABLE naming it and what to do; a full
 * disk, here or in any later call, is CLR_E_UNAVAILABLE with errno ENOSPC, "no space left on
 * <directory>".
 * *out is owned by the caller: clr_store_close(). */
CLR_PUBLIC int clr_store_open(clr_store **out, const char *path, clr_error *err);
CLR_PUBLIC void clr_store_close(clr_store *st);
/* Whether clr_store_open() created the database (it had no schema): a first start, or a start
 * after the operator moved a corrupt database aside. */
CLR_PUBLIC bool clr_store_created(const clr_store *st);

CLR_PUBLIC int clr_store_sandbox_insert(clr_store *st, const clr_store_sandbox *s, clr_error *err);
/* CLR_E_NOT_FOUND if there is no such row. */
CLR_PUBLIC int clr_store_sandbox_get(clr_store *st, const char *id, clr_store_sandbox *out,
                                     clr_error *err);
/* Rows in a state (NULL: all), oldest first; *out is an array of *n, free each with
 * clr_store_sandbox_clear() and the array with free(). */
CLR_PUBLIC int clr_store_sandbox_list(clr_store *st, const char *state, clr_store_sandbox **out,
                                      size_t *n, clr_error *err);
CLR_PUBLIC int clr_store_sandbox_set_state(clr_store *st, const char *id, const char *state,
                                           const char *reason, int64_t when, clr_error *err);
/* The same, only from state `from`: 1 when the row changed, 0 when it was in another state (two
 * threads that both saw a sandbox die record its loss once), -1 with err on failure. */
CLR_PUBLIC int clr_store_sandbox_set_state_from(clr_store *st, const char *id, const char *from,
                                                const char *state, const char *reason,
                                                int64_t when, clr_error *err);
CLR_PUBLIC int clr_store_sandbox_touch(clr_store *st, const char *id, int64_t when,
                                       clr_error *err);
CLR_PUBLIC int clr_store_sandbox_set_expiry(clr_store *st, const char *id, int64_t expires_at,
                                            clr_error *err);
/* Marks the sandbox's live channel attached to container_id (the container the attach is for,
 * recorded before it): sticky until the row records another container that the mark does not
 * name (clr_store_sandbox_set_container). CLR_E_NOT_FOUND if there is no such row,
 * CLR_E_INVALID without a container id. */
CLR_PUBLIC int clr_store_sandbox_set_attached(clr_store *st, const char *id,
                                              const char *container_id, clr_error *err);
/* The sandbox's container is another now (a restore in place, issue #22; recovery re-recording
 * the container a crash left unrecorded). In the same statement its attached mark is cleared
 * unless it names this new container: a request may attach the new container between its
 * create and this record, and that attach must not be forgotten. */
CLR_PUBLIC int clr_store_sandbox_set_container(clr_store *st, const char *id,
                                               const char *container_id, clr_error *err);
/* Live sandboxes: running ones and plans' (CLR_STATE_PLAN). */
CLR_PUBLIC int clr_store_count_running(clr_store *st, int *out, clr_error *err);
/* The sandbox's egress policy as JSON (NULL: none). */
CLR_PUBLIC int clr_store_sandbox_set_egress(clr_store *st, const char *id, json_t *policy,
                                            clr_error *err);
CLR_PUBLIC int clr_store_sandbox_get_egress(clr_store *st, const char *id, json_t **out,
                                            clr_error *err);

/* Exec records: the request when it starts, the result when it ends. A client that lost its
 * connection fetches the result by id instead of running the command again. */
#define CLR_EXEC_STATE_RUNNING "running"
#define CLR_EXEC_STATE_DONE "done"
#define CLR_EXEC_STATE_LOST "lost"

CLR_PUBLIC int clr_store_exec_insert(clr_store *st, const char *exec_id, const char *sandbox_id,
                                     json_t *request, int64_t when, clr_error *err);
CLR_PUBLIC int clr_store_exec_finish(clr_store *st, const char *exec_id, const char *state,
                                     json_t *result, int64_t when, clr_error *err);
/* *out: {"id","sandbox_id","state","request","result","created_at","finished_at"}; caller owns. */
CLR_PUBLIC int clr_store_exec_get(clr_store *st, const char *exec_id, json_t **out,
                                  clr_error *err);
/* Marks every exec still "running" as lost (after a daemon restart); returns how many. */
CLR_PUBLIC int clr_store_exec_mark_lost(clr_store *st, int64_t when, clr_error *err);

/* Commands on a live channel: the record names the channel, so a result the agent replays
 * after a daemon restart finds its record. */
CLR_PUBLIC int clr_store_exec_insert_on(clr_store *st, const char *exec_id,
                                        const char *sandbox_id, uint32_t channel,
                                        json_t *request, int64_t when, clr_error *err);
/* clr_store_exec_insert_on and clr_store_sandbox_touch of its sandbox at `when`, in one
 * transaction: one commit (one sync) where the two took two. */
CLR_PUBLIC int clr_store_exec_insert_touch(clr_store *st, const char *exec_id,
                                           const char *sandbox_id, uint32_t channel,
                                           json_t *request, int64_t when, clr_error *err);
/* clr_store_exec_finish and clr_store_sandbox_touch of sandbox_id at `when`, in one
 * transaction; nothing is written when either fails. */
CLR_PUBLIC int clr_store_exec_finish_touch(clr_store *st, const char *exec_id,
                                           const char *sandbox_id, const char *state,
                                           json_t *result, int64_t when, clr_error *err);
/* Stores the result of the running exec on (sandbox, channel): 1 with its id in exec_id, 0 when
 * there is none. */
CLR_PUBLIC int clr_store_exec_finish_channel(clr_store *st, const char *sandbox_id,
                                             uint32_t channel, json_t *result, int64_t when,
                                             char *exec_id, size_t len, clr_error *err);
/* 1 when an exec record of sandbox_id names channel (running, or ended: a result replayed just
 * now), 0 when none does (a background process's: they have no exec record). */
CLR_PUBLIC int clr_store_exec_on_channel(clr_store *st, const char *sandbox_id, uint32_t channel,
                                         clr_error *err);
/* Marks the running execs of one sandbox lost, but those on a channel listed in keep; returns
 * how many. */
CLR_PUBLIC int clr_store_exec_mark_lost_sandbox(clr_store *st, const char *sandbox_id,
                                                const uint32_t *keep, size_t n, int64_t when,
                                                clr_error *err);
/* Marks lost the running execs of sandboxes that are not running; returns how many. */
CLR_PUBLIC int clr_store_exec_mark_lost_unowned(clr_store *st, int64_t when, clr_error *err);
/* Snapshot rows (issue #22), as JSON objects {"id", "sandbox", "tenant", "parent" (null or an
 * id), "size", "sha256" (of its manifest), "created_at", "expires_at", "keep", "source" (what a
 * fork needs of the sandbox: image, runtime, limits, egress, env, metadata)}. A row is written
 * only once the snapshot's files are whole. */
CLR_PUBLIC int clr_store_snapshot_insert(clr_store *st, json_t *row, clr_error *err);
/* CLR_E_NOT_FOUND if there is no such row; *out is the caller's. */
CLR_PUBLIC int clr_store_snapshot_get(clr_store *st, const char *id, json_t **out,
                                      clr_error *err);
/* Rows of one sandbox and/or tenant (NULL: any), oldest first, as an array (the caller's). */
CLR_PUBLIC int clr_store_snapshot_list(clr_store *st, const char *sandbox_id, const char *tenant,
                                       json_t **out, clr_error *err);
/* Deleting a row that is gone is not an error. */
CLR_PUBLIC int clr_store_snapshot_delete(clr_store *st, const char *id, clr_error *err);
/* Marks the snapshot kept (the sweep no longer removes it with its sandbox; it still expires).
 * CLR_E_NOT_FOUND if there is no such row. */
CLR_PUBLIC int clr_store_snapshot_keep(clr_store *st, const char *id, clr_error *err);
/* Marks the snapshot held by a restore (its row's "held"): the sweep does not remove it with
 * its sandbox, as if kept (it still expires), and its keep is left as it is. Idempotent: one
 * flag, not a count (restores of a snapshot run one at a time, and a hold a crash left is
 * taken over by the next restore's). CLR_E_NOT_FOUND if there is no such row. */
CLR_PUBLIC int clr_store_snapshot_hold(clr_store *st, const char *id, clr_error *err);
/* Clears the snapshot's hold (the restore is over and its sandbox runs): a keep asked for
 * stays. CLR_E_NOT_FOUND if there is no such row. */
CLR_PUBLIC int clr_store_snapshot_release(clr_store *st, const char *id, clr_error *err);
/* The bytes of every snapshot recorded: what the disk budget is checked against. */
CLR_PUBLIC int clr_store_snapshot_total(clr_store *st, uint64_t *bytes, clr_error *err);
CLR_PUBLIC int clr_store_sandbox_running_execs(clr_store *st, const char *sandbox_id, int *out,
                                               clr_error *err);

#endif
