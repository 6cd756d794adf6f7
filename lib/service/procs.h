/* Background processes: commands without a timeout that live until they end, are signalled, or
 * the daemon stops; their output is kept in memory (the last 1 MiB of each stream). */
#ifndef CLR_SERVICE_PROCS_H
#define CLR_SERVICE_PROCS_H

#include "service_int.h"

/* At stop: every process is killed (a KILL on its channel or stream) and its thread joined. */
void svc_procs_stop(clr_service *svc);

/* Forgets exited processes whose sandbox is destroyed, lost or gone from the store (a sandbox
 * keeps its newest 16 exited ones while it lives); the reaper calls it each pass. Returns how
 * many were freed. */
size_t svc_procs_prune(clr_service *svc);

/* Whether a background process or a command holds the sandbox now (the reaper's idle check). */
bool clr_service_sandbox_busy(clr_service *svc, const char *id);

/* Sends signal sig to a background process, recorded first as actor's. */
int clr_service_proc_signal_num(clr_service *svc, const char *id, const char *proc_id, int sig,
                                const char *actor, clr_error *err);

/* A snapshot's record of sandbox id's background processes on its live channel (a command
 * there, not a docker exec): the running ones, and those that ended at or after since (a
 * snapshot's first look, in seconds: one may have ended after its checkpoint). Each is
 * {"process", "channel", "request", "started_at"}; the fork or restore takes them over. */
json_t *svc_procs_on_channel(clr_service *svc, const char *id, int64_t since);

/* Before sandbox id's channel first opens from its snapshot: the results its agent replays for
 * the processes listed (svc_procs_on_channel's) are held for svc_procs_adopt. */
void svc_procs_adopt_begin(const char *id, const json_t *procs);
/* Ends what svc_procs_adopt_begin began when nothing is to be taken over (a fork that failed,
 * or whose snapshot had no process). */
void svc_procs_adopt_cancel(const char *id);

/* Takes over in sandbox id the processes of its snapshot (procs, as svc_procs_on_channel
 * recorded them) that its agent still runs, or ended without their result being taken: each
 * becomes a process of the sandbox with an id of its own and "from" naming the snapshot and the
 * process it was, counted against the caps and its tenant's commands like one started here, and
 * recorded ("process.adopt"). One that cannot be (refused for want of a slot) is killed: it
 * would run unlisted and uncounted. Ends what svc_procs_adopt_begin began. Returns how many
 * were taken over, or -1 when the channel could not be opened (they then run on unlisted, as
 * before their adoption; logged). procs NULL or empty: only ends the hold (eng is not used).
 * The code session's bridge, listed with them ("code": true), becomes the sandbox's code
 * session instead (svc_code_adopt); procs that has none (empty too) ends a kernel the sandbox
 * ran (a restore to a snapshot taken before its session). */
int svc_procs_adopt(clr_service *svc, clr_engine *eng, const char *id, const char *snapshot,
                    const json_t *procs, const char *actor);

#endif
