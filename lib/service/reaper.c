/* reaper: see reaper.h. */
#include <string.h>

#include "channels.h"
#include "code.h"
#include "engines.h"
#include "lifecycle.h"
#include "procs.h"
#include "reaper.h"
#include "removal.h"
#include "rows.h"
#include "service_int.h"
#include "snapshots.h"

/* Lost sandboxes past their expiry: their remains (workspace, stopped container) go. */
static int reap_lost(clr_service *svc, int64_t now, clr_error *err)
{
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    if (clr_store_sandbox_list(svc->store, CLR_STATE_LOST, &rows, &n, err) < 0)
        return -1;
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        clr_error lerr = CLR_ERROR_INIT;
        if (now >= rows[i].info.expires_at &&
            svc_destroy_locked(svc, rows[i].info.id, "expired", "reaper", &lerr) == 0) {
            removed++;
            clr_log(CLR_LOG_INFO, "reaper.destroyed", "id", rows[i].info.id, "reason", "expired",
                    "was", "lost", NULL);
        }
        clr_store_sandbox_clear(&rows[i]);
    }
    free(rows);
    return removed;
}

int clr_service_reap(clr_service *svc, clr_error *err)
{
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    int64_t now = svc_now_s();
    svc_procs_prune(svc);
    svc_code_prune(svc);
    svc_snapshots_sweep(svc);
    int removed = reap_lost(svc, now, err);
    if (removed < 0 ||
        clr_store_sandbox_list(svc->store, CLR_STATE_RUNNING, &rows, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        clr_store_sandbox *s = &rows[i];
        const char *why = NULL;
        if (svc_restoring(svc, s->info.id)) {
            continue; /* its next pass judges it (rows[i] is cleared below) */
        } else if (now >= s->info.expires_at) {
            why = "expired";
        } else if (s->idle_timeout_s && now - s->last_active_at >= s->idle_timeout_s) {
            int busy = 0;
            clr_store_sandbox_running_execs(svc->store, s->info.id, &busy, NULL);
            if (busy == 0 && !clr_service_sandbox_busy(svc, s->info.id))
                why = "idle";
        }
        if (why) {
            clr_error lerr = CLR_ERROR_INIT;
            if (svc_destroy_locked(svc, s->info.id, why, "reaper", &lerr) == 0) {
                removed++;
                clr_log(CLR_LOG_INFO, "reaper.destroyed", "id", s->info.id, "reason", why, NULL);
            } else {
                clr_log(CLR_LOG_WARN, "reaper.destroy_failed", "id", s->info.id, "error",
                        lerr.message, NULL);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&rows[i]);
    free(rows);
    return removed;
}

/* The engine's sandboxes next to the database's running rows: what reconcile and recovery
 * compare. */
struct snapshot {
    clr_engine *eng;
    clr_sandbox_info *live;
    size_t nlive;
    clr_store_sandbox *rows;
    size_t n;
};

static int snapshot_load(clr_service *svc, struct snapshot *sn, clr_error *err)
{
    memset(sn, 0, sizeof(*sn));
    if (svc_engine_get(svc, &sn->eng, err) < 0)
        return -1;
    if (clr_sandbox_list(&sn->live, &sn->nlive, sn->eng, err) < 0) {
        svc_engine_put(svc, sn->eng, true);
        return -1;
    }
    if (clr_store_sandbox_list(svc->store, CLR_STATE_RUNNING, &sn->rows, &sn->n, err) < 0) {
        free(sn->live);
        svc_engine_put(svc, sn->eng, false);
        return -1;
    }
    return 0;
}

static void snapshot_free(clr_service *svc, struct snapshot *sn)
{
    for (size_t i = 0; i < sn->n; i++)
        clr_store_sandbox_clear(&sn->rows[i]);
    free(sn->rows);
    free(sn->live);
    svc_engine_put(svc, sn->eng, false);
}

/* The engine's running container of sandbox id (found by its labels), or NULL. */
static const clr_sandbox_info *snapshot_running_info(const struct snapshot *sn, const char *id)
{
    for (size_t j = 0; j < sn->nlive; j++) {
        if (strcmp(sn->live[j].id, id) == 0 && strcmp(sn->live[j].state, "running") == 0)
            return &sn->live[j];
    }
    return NULL;
}

static bool snapshot_running(const struct snapshot *sn, const char *id)
{
    return snapshot_running_info(sn, id) != NULL;
}

/* A running row without a running container becomes lost, once, whoever sees it first (the
 * event watcher, the reconcile pass, the recovery): recorded in the database, the log and the
 * audit log. Its remains (stopped container, workspace) stay until it is destroyed (by a client,
 * or the reaper at its expiry): what it wrote before it died can still be read, and a command
 * that was running in it can still read the engine's account of its end (OOMKilled). The state
 * changes only with its record: when the audit log cannot take it, the row goes back to running
 * and the next look (reconcile pass, start) tries again. */
bool svc_mark_lost(clr_service *svc, const char *id, const char *actor, const char *reason)
{
    clr_error lerr = CLR_ERROR_INIT;
    char tenant[CLR_TENANT_MAX + 1];
    int changed = svc_row_tenant(svc, id, tenant, &lerr);
    if (changed < 0 && lerr.code == CLR_E_NOT_FOUND)
        return false; /* no row (a pooled sandbox's container): nothing to mark */
    if (changed == 0)
        changed = clr_store_sandbox_set_state_from(svc->store, id, CLR_STATE_RUNNING,
                                                   CLR_STATE_LOST, reason, svc_now_s(), &lerr);
    if (changed < 0)
        clr_log(CLR_LOG_ERROR, "sandbox.lost_unrecorded", "id", id, "reason", reason, "error",
                lerr.message, NULL);
    if (changed <= 0)
        return false;
    json_t *d = json_pack("{s:s, s:s}", "reason", reason, "tenant", tenant);
    int arc = clr_audit_append(svc->audit, actor, id, "sandbox.lost", "ok", d, &lerr);
    json_decref(d);
    if (arc < 0) {
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", id, "action", "sandbox.lost",
                "error", lerr.message, "detail", "kept as running; retried later", NULL);
        clr_store_sandbox_set_state_from(svc->store, id, CLR_STATE_LOST, CLR_STATE_RUNNING, "",
                                         0, &lerr);
        return false;
    }
    svc_live_drop(svc, id);
    atomic_fetch_add(&svc->lost, 1);
    clr_log(CLR_LOG_WARN, "sandbox.lost", "id", id, "reason", reason, "actor", actor, NULL);
    return true;
}

/* Sandboxes whose container stopped or vanished behind our back (dockerd restarted, someone
 * removed it, the kernel killed it) become lost, and what is left of them is removed. The
 * snapshot gate is held for reading. */
static int reconcile_gated(clr_service *svc, clr_error *err)
{
    struct snapshot sn;
    if (snapshot_load(svc, &sn, err) < 0)
        return -1;
    int lost = 0;
    int64_t now = svc_now_s();
    for (size_t i = 0; i < sn.n; i++) {
        /* A row younger than a few seconds may be a create whose container is still starting. */
        if (snapshot_running(&sn, sn.rows[i].info.id) || now - sn.rows[i].info.created_at < 5)
            continue;
        if (svc_mark_lost(svc, sn.rows[i].info.id, "reaper", "container stopped or vanished"))
            lost++;
    }
    /* A container of ours whose sandbox the database has as destroyed: its removal failed
     * every attempt (the engine was down): queue it again. Containers the database does not
     * know at all are left to the recovery at start (they may be pooled ones). */
    for (size_t j = 0; j < sn.nlive; j++) {
        const char *id = sn.live[j].id;
        if (strcmp(sn.live[j].owner, svc->owner) != 0 || !id[0] || !svc_destroyed_row(svc, id))
            continue;
        if (svc_removal_queue(svc, id, "leftover", 0))
            clr_log(CLR_LOG_WARN, "reconcile.removal_requeued", "id", id, NULL);
    }
    snapshot_free(svc, &sn);
    return lost;
}

int clr_service_reconcile(clr_service *svc, clr_error *err)
{
    /* The engine reports a container it is checkpointing as not running (it is frozen while its
     * memory is written), and a restore's as gone between its two: no pass while a snapshot or
     * restore (issue #22) is under way, the next one looks; and none begins until this pass has
     * acted on what it saw. */
    if (!svc_snapshot_gate_try_read(svc))
        return 0;
    int lost = reconcile_gated(svc, err);
    svc_snapshot_gate_read_done(svc);
    return lost;
}

void *svc_reaper_main(void *p)
{
    clr_service *svc = p;
    unsigned pass = 0;
    uint64_t reconciled_us = svc_mono_us();
    pthread_mutex_lock(&svc->reaper_lock);
    while (!svc->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)svc->cfg.reaper_interval_ms * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&svc->reaper_cond, &svc->reaper_lock, &ts);
        if (svc->stopping)
            break;
        pthread_mutex_unlock(&svc->reaper_lock);
        /* First the audit log's periodic work: aggregated denials whose interval passed,
         * and the signed checkpoint, neither waiting for the engine. */
        clr_audit_tick(svc->audit);
        clr_error err = CLR_ERROR_INIT;
        if (clr_service_reap(svc, &err) < 0)
            clr_log(CLR_LOG_WARN, "reaper.failed", "error", err.message, NULL);
        /* Compare with the engine: the backstop of the event watcher (events missed while the
         * engine restarted, or never sent). Every reconcile_interval_ms; by default every
         * tenth pass (and at least every 10 s). */
        uint64_t every_ms = svc->cfg.reconcile_interval_ms;
        bool due = every_ms ? svc_mono_us() - reconciled_us >= every_ms * 1000
                            : ++pass % 10 == 0 || svc->cfg.reaper_interval_ms >= 10000;
        if (due) {
            reconciled_us = svc_mono_us();
            clr_error rerr = CLR_ERROR_INIT;
            if (clr_service_reconcile(svc, &rerr) < 0)
                clr_log(CLR_LOG_WARN, "reconcile.failed", "error", rerr.message, NULL);
        }
        pthread_mutex_lock(&svc->reaper_lock);
    }
    pthread_mutex_unlock(&svc->reaper_lock);
    return NULL;
}

/* Workspaces of sandboxes the database has as destroyed or lost, with no container left: a
 * removal that the daemon's death cut between the container and the workspace. */
static void recover_workspaces(clr_service *svc, const struct snapshot *sn)
{
    char wsdir[4096];
    snprintf(wsdir, sizeof(wsdir), "%s/workspaces", svc->state_dir);
    _cleanup_closedir_ DIR *d = opendir(wsdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *id = e->d_name;
        if (!clr_sandbox_id_valid(id) || !svc_destroyed_row(svc, id))
            continue;
        bool has_container = false;
        for (size_t j = 0; j < sn->nlive && !has_container; j++)
            has_container = strcmp(sn->live[j].id, id) == 0;
        if (has_container)
            continue;
        clr_error lerr = CLR_ERROR_INIT;
        if (clr_workspace_remove(svc->state_dir, id, &lerr) == 0)
            clr_log(CLR_LOG_INFO, "recover.workspace_removed", "id", id, NULL);
        else
            clr_log(CLR_LOG_WARN, "recover.workspace_failed", "id", id, "error", lerr.message,
                    NULL);
    }
}

/* A running container of ours that an empty database does not know (the operator moved a corrupt
 * database aside): it becomes a sandbox again, from what its labels say (limits, lifetime, image,
 * runtime), marked recovered; what was only in the old database (metadata, environment, egress
 * policy) is gone, so its egress stays closed. Recorded in the audit log before it is served: if
 * that cannot be, the sandbox does not run on. Returns whether it was adopted. */
static bool adopt_recovered(clr_service *svc, struct snapshot *sn, const clr_sandbox_info *live)
{
    clr_store_sandbox row;
    memset(&row, 0, sizeof(row));
    row.info = *live;
    snprintf(row.info.state, sizeof(row.info.state), CLR_STATE_RUNNING);
    row.max_expires_at = live->max_expires_at;
    row.idle_timeout_s = svc->cfg.idle_timeout_s;
    row.last_active_at = svc_now_s();
    row.recovered = true;
    row.metadata = json_object();
    row.env = json_array();
    clr_error lerr = CLR_ERROR_INIT;
    int rc = clr_store_sandbox_insert(svc->store, &row, &lerr);
    clr_store_sandbox_clear(&row);
    if (rc < 0) {
        clr_log(CLR_LOG_WARN, "recover.adopt_failed", "id", live->id, "error", lerr.message,
                NULL);
        return false;
    }
    json_t *d = clr_audit_sandbox_details(live);
    json_object_set_new(d, "reason", json_string("empty state database: adopted from the "
                                                 "container's labels"));
    json_object_set_new(d, "container_owner", json_string(live->owner));
    json_object_set_new(d, "tenant", json_string(svc_tenant_or_default(live->tenant)));
    rc = clr_audit_append(svc->audit, "recovery", live->id, "sandbox.recovered", "ok", d, &lerr);
    json_decref(d);
    if (rc < 0) {
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", lerr.message, NULL);
        clr_error derr = CLR_ERROR_INIT;
        clr_sandbox_destroy(sn->eng, live->id, "unaudited", svc->state_dir, &derr);
        clr_store_sandbox_set_state(svc->store, live->id, CLR_STATE_DESTROYED, "unaudited",
                                    svc_now_s(), &derr);
        return false;
    }
    atomic_fetch_add(&svc->adopted, 1);
    clr_log(CLR_LOG_WARN, "recover.recovered", "id", live->id, "detail",
            "adopted from its labels into an empty state database", NULL);
    return true;
}

/* Plans' sandboxes left by a daemon that died mid-plan: their plan died with it, so nothing
 * may use them again. Each is recorded as destroyed (audited); the loop below then removes its
 * container like any other destroyed sandbox's, or recover_workspaces its workspace. */
static void recover_plans(clr_service *svc)
{
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    clr_error lerr = CLR_ERROR_INIT;
    if (clr_store_sandbox_list(svc->store, CLR_STATE_PLAN, &rows, &n, &lerr) < 0) {
        clr_log(CLR_LOG_WARN, "recover.plans_unlisted", "error", lerr.message, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *id = rows[i].info.id;
        /* Recorded before it is marked (and so before its container is removed below); without
         * a record it stays as it was, left to the next start. */
        json_t *d = json_pack("{s:s, s:s, s:s}", "reason", "plan-interrupted", "branch",
                              rows[i].info.branch, "tenant",
                              svc_tenant_or_default(rows[i].info.tenant));
        int arc = clr_audit_append(svc->audit, "recovery", id, "sandbox.destroy", "ok", d, &lerr);
        json_decref(d);
        if (arc < 0) {
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", id, "action", "sandbox.destroy",
                    "error", lerr.message, "detail", "the plan's sandbox is kept until the next "
                    "start", NULL);
            continue;
        }
        if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, "plan-interrupted",
                                        svc_now_s(), &lerr) < 0) {
            clr_log(CLR_LOG_WARN, "recover.plan_failed", "id", id, "error", lerr.message, NULL);
            continue;
        }
        clr_log(CLR_LOG_WARN, "recover.plan_interrupted", "id", id, "branch",
                rows[i].info.branch, NULL);
    }
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&rows[i]);
    free(rows);
}

/* The row names the container that runs as its sandbox (the engine's, found by its labels),
 * re-recorded when it names another: a daemon that died in a restore between the new
 * container's create and its record left the old container's id in the row (lifecycle.c's
 * restore_swap), which a snapshot would checkpoint. False when that cannot be recorded. */
static bool container_recorded(clr_service *svc, const clr_store_sandbox *row,
                               const clr_sandbox_info *run)
{
    if (strcmp(row->info.container_id, run->container_id) == 0)
        return true;
    clr_error lerr = CLR_ERROR_INIT;
    if (clr_store_sandbox_set_container(svc->store, row->info.id, run->container_id, &lerr) < 0) {
        clr_log(CLR_LOG_ERROR, "recover.container_unrecorded", "id", row->info.id, "container",
                run->container_id, "error", lerr.message, NULL);
        return false;
    }
    clr_log(CLR_LOG_WARN, "recover.container_rerecorded", "id", row->info.id, "was",
            row->info.container_id, "container", run->container_id, NULL);
    return true;
}

/* Holds a crash left on snapshots (a daemon killed mid-restore, or before a release it could
 * not record). No restore runs during recovery, so every hold found is one whose restore is
 * over: the hold of a sandbox that runs again (its old container, or its new one re-recorded
 * above) is released ("snapshot.release", reason recovered); the hold of a sandbox that is
 * lost or destroyed stays, as after a failed restore: the snapshot is what a retry (a fork)
 * needs, and it still expires at its ttl. Run after the sandboxes' states are settled. */
static void recover_snapshot_holds(clr_service *svc)
{
    json_t *rows = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_snapshot_list(svc->store, NULL, NULL, &rows, &err) < 0) {
        clr_log(CLR_LOG_WARN, "recover.snapshot_holds_unread", "error", err.message, "detail",
                "holds stay until the next start or their ttl", NULL);
        return;
    }
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        if (!json_is_true(json_object_get(r, "held")))
            continue;
        const char *snap = json_string_value(json_object_get(r, "id"));
        const char *sb = json_string_value(json_object_get(r, "sandbox"));
        bool running = false;
        clr_error rerr = CLR_ERROR_INIT;
        if (svc_row_running(svc, sb, &running, &rerr) == 0 && running && !svc_restoring(svc, sb))
            svc_release_snapshot(svc, sb, snap, "recovered", "recovery");
        else
            clr_log(CLR_LOG_INFO, "recover.snapshot_held", "snapshot", snap, "id", sb,
                    "detail", "its sandbox does not run: held until its ttl", NULL);
    }
    json_decref(rows);
}

/* After a restart: keep what still runs, mark what vanished, remove what we do not know (but
 * adopt what runs when the database is new: see adopt_recovered); release the holds of
 * restores a crash cut short whose sandbox runs (recover_snapshot_holds). */
int svc_recover(clr_service *svc, clr_error *err)
{
    struct snapshot sn;
    if (snapshot_load(svc, &sn, err) < 0)
        return -1;
    for (size_t i = 0; i < sn.n; i++) {
        const clr_sandbox_info *run = snapshot_running_info(&sn, sn.rows[i].info.id);
        if (run && !container_recorded(svc, &sn.rows[i], run)) {
            svc_mark_lost(svc, sn.rows[i].info.id, "recovery",
                          "its container could not be recorded after a restore");
        } else if (run) {
            atomic_fetch_add(&svc->adopted, 1);
            clr_log(CLR_LOG_INFO, "recover.adopted", "id", sn.rows[i].info.id, NULL);
            /* Attach again: the agent replays the results of commands that ended while the
             * daemon was away (live_on_result) and names those still running; the records of
             * any other command of this sandbox become lost (live_on_channels), and the
             * commands it names that no exec record names (background processes, which this
             * daemon does not know, and what a fork inherited) are killed. */
            struct live_sb *lv = NULL;
            clr_error lerr = CLR_ERROR_INIT;
            if (svc_live_get(svc, sn.eng, sn.rows[i].info.id, &lv, &lerr) < 0 || !lv->ch)
                clr_store_exec_mark_lost_sandbox(svc->store, sn.rows[i].info.id, NULL, 0,
                                                 svc_now_s(), &lerr);
            else
                svc_live_end_orphans(svc, lv, "a command no exec record names (a background "
                                              "process of the daemon before the restart)");
            svc_live_put(svc, lv);
        } else {
            svc_mark_lost(svc, sn.rows[i].info.id, "recovery",
                      "container vanished while the daemon was down");
        }
    }
    recover_plans(svc);
    for (size_t j = 0; j < sn.nlive; j++) {
        if (strcmp(sn.live[j].owner, svc->owner) != 0 || !sn.live[j].id[0])
            continue;
        bool known = false;
        for (size_t i = 0; i < sn.n && !known; i++)
            known = strcmp(sn.live[j].id, sn.rows[i].info.id) == 0;
        /* A lost sandbox's stopped container stays until the sandbox is destroyed. */
        if (known || svc_lost_row(svc, sn.live[j].id))
            continue;
        clr_error lerr = CLR_ERROR_INIT;
        if (svc_destroyed_row(svc, sn.live[j].id)) {
            /* Destroyed (and audited) before the stop; its removal had not finished. The
             * engine may still be busy with it (a removal the stop cut mid-way answers 409
             * "already in progress"): the destroy waits for that one, and when it outlasts the
             * wait the remover retries, with back-off. */
            if (clr_sandbox_destroy(sn.eng, sn.live[j].id, "destroyed", svc->state_dir,
                                    &lerr) == 0) {
                atomic_fetch_add(&svc->removed, 1);
                clr_log(CLR_LOG_INFO, "recover.removal_resumed", "id", sn.live[j].id, NULL);
            } else {
                clr_log(CLR_LOG_WARN, "recover.removal_deferred", "id", sn.live[j].id, "error",
                        lerr.message, NULL);
                svc_removal_queue(svc, sn.live[j].id, "leftover", 0);
            }
            continue;
        }
        if (clr_store_created(svc->store) && strcmp(sn.live[j].state, "running") == 0 &&
            adopt_recovered(svc, &sn, &sn.live[j]))
            continue;
        /* Recorded before it is removed; without a record it is left to the next start. */
        json_t *d = json_pack("{s:s, s:s}", "reason", "orphan", "tenant",
                              svc_tenant_or_default(sn.live[j].tenant));
        int arc = clr_audit_append(svc->audit, "recovery", sn.live[j].id, "sandbox.destroy", "ok",
                                   d, &lerr);
        json_decref(d);
        if (arc < 0) {
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", sn.live[j].id, "action",
                    "sandbox.destroy", "error", lerr.message, "detail",
                    "the orphan is kept until the next start", NULL);
        } else if (clr_sandbox_destroy(sn.eng, sn.live[j].id, "orphan", svc->state_dir, &lerr) <
                   0) {
            /* Left to `clearing gc` and the next start. */
            clr_log(CLR_LOG_WARN, "recover.orphan_failed", "id", sn.live[j].id, "error",
                    lerr.message, NULL);
        } else {
            atomic_fetch_add(&svc->orphans_removed, 1);
            clr_log(CLR_LOG_WARN, "recover.orphan_removed", "id", sn.live[j].id, NULL);
        }
    }
    recover_workspaces(svc, &sn);
    recover_snapshot_holds(svc);
    /* Commands of sandboxes that are gone cannot have finished anywhere. */
    clr_error uerr = CLR_ERROR_INIT;
    clr_store_exec_mark_lost_unowned(svc->store, svc_now_s(), &uerr);
    snapshot_free(svc, &sn);
    return 0;
}
