/* Sandbox lifecycle: create (from the warm pool or new; recorded and audited before it is
 * acknowledged), extend, egress tightening, destroy (audited, marked, removal queued). */
#ifndef CLR_SERVICE_LIFECYCLE_H
#define CLR_SERVICE_LIFECYCLE_H

#include "service_int.h"

/* Destroy for the caller: recorded, then marked destroyed (no command, file or commit reaches
 * it from now on); its container and workspace are removed by the remover thread, off the
 * caller's path. The record comes first: when the audit log cannot be written, nothing is
 * destroyed (the client gets 503, the reaper tries again at its next pass). */
int svc_destroy_locked(clr_service *svc, const char *id, const char *reason, const char *actor,
                       clr_error *err);

/* A fork (issue #22): a sandbox started from a verified snapshot, its workspace the snapshot's
 * copy, its limits at most ceiling (the snapshot's sandbox's). A restore names the snapshot's
 * id: a restore that costs the sandbox keeps that snapshot. */
struct svc_fork {
    const char *snapshot_id;
    const char *snapshot_dir;
    const char *workspace_dir;
    clr_limits ceiling;
    /* The snapshot's background processes on the live channel (its source's "processes"):
     * taken over by the new sandbox (procs.h, svc_procs_adopt). May be NULL. */
    const json_t *processes;
};
/* Create (as clr_service_create, req in its shape) from a snapshot. */
int svc_create_fork(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                    const struct svc_fork *fork, json_t **out, clr_error *err);

/* A restore in place (issue #22): the running sandbox id is made again from the verified
 * snapshot at from->snapshot_dir (processes and memory from its checkpoint, /workspace a copy of
 * from->workspace_dir), keeping its id, labels (lifetime, tenant, limits), row, egress policy and
 * branch. Its commands in flight end and their records are lost (never replayed); its old
 * container and workspace are removed before the new ones are made (they share the name and
 * path). A failure before the old container is gone leaves the sandbox as it was; one after is
 * the sandbox destroyed (recorded, "restore-failed") and said so in err: never a row that claims
 * a container which does not run. The snapshot from->snapshot_id is marked held in the store
 * (recorded, "snapshot.hold"; apart from the user's keep, which it leaves as it is) before the
 * old container is removed, so that neither a failure nor a daemon killed mid-way loses it with
 * the sandbox (it is what a retry or a fork needs); the hold is released (recorded,
 * "snapshot.release") once the sandbox runs again, restored or as it was, and stays after a
 * failure that cost the sandbox or a crash (the next start's recovery releases it if the
 * sandbox runs). A hold that cannot be recorded refuses the restore. The caller holds the
 * snapshot lock, verified the snapshot and recorded the restore. Results the agent replays
 * for the snapshot's processes (from->processes) are held from the swap on (svc_procs_adopt_begin); the caller takes them over, or ends the hold, with
 * svc_procs_adopt once this returns, if *began says the hold was taken (a restore refused
 * before it must not end another's). */
int svc_restore_in_place(clr_service *svc, clr_engine *eng, const char *id,
                         const struct svc_fork *from, const char *actor, bool *began,
                         clr_error *err);

/* A restore's hold on snapshot snap (of sandbox id) released, recorded first
 * ("snapshot.release", reason why, actor actor): the restore is over and the sandbox runs. A
 * failure is logged: the snapshot stays held, the safe side (it still expires). */
void svc_release_snapshot(clr_service *svc, const char *id, const char *snap, const char *why,
                          const char *actor);

#endif
