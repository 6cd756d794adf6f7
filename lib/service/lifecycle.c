/* lifecycle: see lifecycle.h. */
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "clearing/plan.h"
#include "clearing/repoadmit.h"

#include "channels.h"
#include "engines.h"
#include "lifecycle.h"
#include "procs.h"
#include "removal.h"
#include "rows.h"
#include "service_int.h"
#include "tenants.h"
#include "validate.h"
#include "warm.h"

/* One create as it goes: what the request asked for, and what has been made so far. */
struct create {
    clr_sandbox_options o;
    uint64_t idle_ms;
    char **env; /* the sandbox's environment, "KEY=VALUE" (svc_free_strv) */
    clr_repo_admitted admitted;
    clr_engine *eng;
    clr_sandbox *sb;
    clr_channel *ch; /* a pooled sandbox's attached channel */
    clr_store_sandbox row;
};

/* Whether a sandbox under this egress policy has the proxy inside, which listens once a host
 * attached the live channel: the channel is attached at its create (or restore), not at its
 * first command. One answer for the create and the restore. */
static bool egress_needs_channel(const clr_egress_policy *policy)
{
    return policy && policy->n > 0;
}

/* The same for the policy stored on the sandbox's row (an unreadable one: no proxy). */
static bool stored_egress_needs_channel(clr_service *svc, const char *id)
{
    json_t *jpolicy = NULL;
    clr_egress_policy *policy = NULL;
    clr_error lerr = CLR_ERROR_INIT;
    clr_store_sandbox_get_egress(svc->store, id, &jpolicy, &lerr);
    bool need = jpolicy && clr_egress_policy_parse(&policy, jpolicy, &lerr) == 0 &&
                egress_needs_channel(policy);
    json_decref(jpolicy);
    clr_egress_policy_free(policy);
    return need;
}

/* The sandbox's options: the request over the daemon's defaults, checked against what the
 * operator allows (images, repo_roots). c->env is set even on failure (the caller frees it). */
static int create_options(clr_service *svc, json_t *req, const char *tenant,
                          const clr_egress_policy *egress, struct create *c, clr_error *err)
{
    clr_sandbox_options init = CLR_SANDBOX_OPTIONS_INIT;
    c->o = init;
    c->o.tenant = tenant;
    c->o.limits = svc->cfg.limits;
    c->o.state_dir = svc->state_dir;
    c->o.insecure_runtime = svc->insecure_runtime;
    c->o.owner = svc->owner;
    c->o.max_lifetime_s = svc->cfg.max_lifetime_s;
    c->o.image = svc->image;
    c->idle_ms = (uint64_t)svc->cfg.idle_timeout_s * 1000;
    const char *repo_path = NULL;
    if (svc_parse_create(req, &c->o, &c->idle_ms, &repo_path, &c->env, err) < 0)
        return -1;
    if (svc_image_allowed(svc, c->o.image, err) < 0)
        return -1;
    if (egress_needs_channel(egress)) {
        if (svc_add_proxy_env(&c->env) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        c->o.env = (const char *const *)c->env;
    }
    /* A client may name only repositories under the operator's repo_roots: the daemon runs
     * as root and would otherwise hand any repository on the host to whoever can reach it. */
    if (repo_path) {
        if (clr_repo_admit(&c->admitted, svc->cfg.repo_roots, repo_path, err) < 0)
            return -1;
        c->o.repo_path = c->admitted.path;
        c->o.repo_id = &c->admitted.id;
    }
    return 0;
}

/* Room for it, then the sandbox itself: from the warm pool when it has one ready, made
 * otherwise. create_lock held. On failure c->sb may hold a pooled sandbox, for the caller to
 * discard once the lock is released. */
static int create_sandbox_locked(clr_service *svc, json_t *req, const char *tenant,
                                 struct create *c, clr_error *err)
{
    if (svc_sandbox_room_locked(svc, tenant, &c->o.limits, err) < 0)
        return -1;
    /* The default profile comes from the warm pool when it has one ready. Pooled sandboxes are
     * made before anyone asks, with the default tenant's label, which an engine cannot change
     * later: other tenants' sandboxes are made for them. */
    bool pooled = svc->cfg.pool_size && !json_object_get(req, "repo") &&
                  !json_object_get(req, "image") && !json_object_get(req, "limits") &&
                  strcmp(tenant, CLR_TENANT_DEFAULT) == 0;
    if (pooled)
        c->sb = svc_warm_take(svc, &c->ch);
    int rc = svc_engine_get(svc, &c->eng, err);
    if (rc == 0 && !c->sb)
        rc = clr_sandbox_create(&c->sb, c->eng, &c->o, err);
    if (rc < 0) {
        svc_engine_put(svc, c->eng, true);
        c->eng = NULL;
        atomic_fetch_add(&svc->create_failed, 1);
    }
    return rc;
}

/* The sandbox's row. A pooled sandbox's life starts when it is handed out: now. */
static void create_row(struct create *c, json_t *meta)
{
    clr_store_sandbox *row = &c->row;
    memset(row, 0, sizeof(*row));
    row->info = *clr_sandbox_get_info(c->sb);
    row->info.created_at = svc_now_s();
    row->info.expires_at = row->info.created_at + c->o.limits.lifetime_s;
    snprintf(row->info.state, sizeof(row->info.state), CLR_STATE_RUNNING);
    /* A pooled sandbox's labels allow for its wait in the pool as well; its extensions count
     * from its hand-out, as another's from its creation (never past its labels: gc's bound). */
    int64_t span = c->o.max_lifetime_s > c->o.limits.lifetime_s ? c->o.max_lifetime_s
                                                                 : c->o.limits.lifetime_s;
    row->max_expires_at = row->info.max_expires_at;
    if (row->max_expires_at > row->info.created_at + span)
        row->max_expires_at = row->info.created_at + span;
    row->idle_timeout_s = (uint32_t)(c->idle_ms / 1000);
    row->last_active_at = svc_now_s();
    row->metadata = meta ? json_incref(meta) : json_object();
    row->env = json_array();
    for (char **e = c->env; e && *e; e++)
        json_array_append_new(row->env, json_string(*e));
}

/* The create's audit record: durable before the client hears of the sandbox. */
static int create_audit(clr_service *svc, const char *actor, const char *tenant,
                        const clr_store_sandbox *row, json_t *jpolicy, clr_error *err)
{
    json_t *d = clr_audit_sandbox_details(&row->info);
    json_object_set_new(d, "tenant", json_string(tenant));
    json_object_set(d, "metadata", row->metadata);
    if (jpolicy)
        json_object_set(d, "egress", jpolicy);
    int rc = clr_audit_append(svc->audit, actor, row->info.id, "sandbox.create", "ok", d, err);
    json_decref(d);
    return rc;
}

/* A sandbox whose record failed must not run: its channel closed, its container and workspace
 * removed; an unaudited one's row is marked destroyed. The engine handle goes back. */
static void create_undo(clr_service *svc, struct create *c, const char *why)
{
    clr_error derr = CLR_ERROR_INIT;
    clr_channel_close(c->ch);
    clr_sandbox_destroy(c->eng, c->row.info.id, why, svc->state_dir, &derr);
    if (strcmp(why, "unaudited") == 0)
        clr_store_sandbox_set_state(svc->store, c->row.info.id, CLR_STATE_DESTROYED, why,
                                    svc_now_s(), &derr);
    clr_sandbox_free(c->sb);
    svc_engine_put(svc, c->eng, false);
}

/* A pooled sandbox brings its attached channel: registered, its first command does not attach.
 * Takes c->sb and c->ch over. */
static void create_keep_channel(clr_service *svc, struct create *c)
{
    if (!c->ch) {
        clr_sandbox_free(c->sb);
        return;
    }
    struct live_sb *lv = NULL;
    clr_error lerr = CLR_ERROR_INIT;
    if (svc_live_new(svc, c->eng, c->row.info.id, c->sb, c->ch, &lv, &lerr) == 0)
        svc_live_put(svc, lv);
    else
        clr_log(CLR_LOG_WARN, "pool.channel_lost", "id", c->row.info.id, "error", lerr.message,
                NULL);
}

/* The proxy inside listens once a host attached: attach now, not at the first exec. */
static void create_attach_proxy(clr_service *svc, const char *id)
{
    struct live_sb *lv = NULL;
    clr_engine *leng = NULL;
    clr_error lerr = CLR_ERROR_INIT;
    if (svc_engine_get(svc, &leng, &lerr) == 0 && svc_live_get(svc, leng, id, &lv, &lerr) == 0)
        svc_live_put(svc, lv);
    svc_engine_put(svc, leng, false);
}

/* A fork takes over its snapshot's background processes: its channel is attached now, and
 * each one its agent still runs is listed and counted as the fork's own (procs.h). */
static void create_adopt(clr_service *svc, const char *id, const struct svc_fork *fork,
                         const char *actor)
{
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (svc_engine_get(svc, &eng, &err) == 0)
        svc_procs_adopt(svc, eng, id, fork->snapshot_id, fork->processes, actor);
    else
        svc_procs_adopt(svc, NULL, id, fork->snapshot_id, NULL, actor); /* ends the hold */
    svc_engine_put(svc, eng, false);
}

/* A fork's limits may be tightened, never loosened, against its snapshot's sandbox's. */
static int fork_limits_check(const clr_limits *l, const clr_limits *max, clr_error *err)
{
    const struct {
        const char *name;
        uint64_t have, ceiling;
    } v[] = {{"cpus", l->cpu_millis, max->cpu_millis},
             {"memory", l->memory_bytes, max->memory_bytes},
             {"pids", l->pids, max->pids},
             {"lifetime", l->lifetime_s, max->lifetime_s},
             {"tmp_size", l->tmp_bytes, max->tmp_bytes},
             {"workspace_size", l->workspace_bytes, max->workspace_bytes},
             {"workspace_inodes", l->workspace_inodes, max->workspace_inodes},
             {"nofile", l->nofile, max->nofile},
             {"file_size", l->fsize_bytes, max->fsize_bytes}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        if (v[i].have > v[i].ceiling)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "limits.%s is above the snapshot's sandbox's: a fork's limits "
                                 "may be tightened, not loosened",
                                 v[i].name);
    return 0;
}

static int create_with(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       const clr_egress_policy *egress, const struct svc_fork *fork,
                       json_t **out, clr_error *err)
{
    uint64_t t0 = svc_mono_us();
    tenant = svc_tenant_or_default(tenant);
    struct create c;
    memset(&c, 0, sizeof(c));
    if (create_options(svc, req, tenant, egress, &c, err) < 0 ||
        (fork && fork_limits_check(&c.o.limits, &fork->ceiling, err) < 0)) {
        svc_free_strv(c.env);
        return -1;
    }
    if (fork) {
        c.o.snapshot_dir = fork->snapshot_dir;
        c.o.workspace_from = fork->workspace_dir;
    }
    pthread_mutex_lock(&svc->create_lock);
    if (create_sandbox_locked(svc, req, tenant, &c, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        svc_free_strv(c.env);
        /* Pooled, but no engine handle to record it with: it goes (recovery or gc removes
         * the container if this cannot). */
        if (c.sb)
            svc_warm_discard(svc, c.sb, c.ch, "pool-unrecorded");
        return -1;
    }
    create_row(&c, json_object_get(req, "metadata"));
    c.row.attached = c.ch != NULL; /* a pooled sandbox's channel is attached already */
    /* Before anyone can name it: a request that opens its channel first must not store and
     * acknowledge the result of a process the fork is about to take over. */
    if (fork)
        svc_procs_adopt_begin(c.row.info.id, fork->processes);
    svc_free_strv(c.env);
    int rc = clr_store_sandbox_insert(svc->store, &c.row, err);
    json_t *jpolicy = egress ? clr_egress_policy_to_json(egress) : NULL;
    if (rc == 0 && jpolicy)
        rc = clr_store_sandbox_set_egress(svc->store, c.row.info.id, jpolicy, err);
    pthread_mutex_unlock(&svc->create_lock);
    /* Not recorded, or not audited: it must not run (durable before acknowledged). */
    const char *undo = rc < 0                                                     ? "unrecorded"
                       : create_audit(svc, actor, tenant, &c.row, jpolicy, err) < 0 ? "unaudited"
                                                                                    : NULL;
    if (undo) {
        if (fork)
            svc_procs_adopt_cancel(c.row.info.id);
        create_undo(svc, &c, undo);
        json_decref(jpolicy);
        clr_store_sandbox_clear(&c.row);
        return -1;
    }
    create_keep_channel(svc, &c);
    svc_engine_put(svc, c.eng, false);
    atomic_fetch_add(&svc->created, 1);
    svc_observe(&svc->h_create, svc_mono_us() - t0);
    clr_log(CLR_LOG_INFO, "service.created", "id", c.row.info.id, "actor", actor, NULL);
    *out = svc_sandbox_json(&c.row);
    if (jpolicy)
        json_object_set_new(*out, "egress", jpolicy);
    clr_store_sandbox_clear(&c.row);
    const char *id = json_string_value(json_object_get(*out, "id"));
    if (fork && json_array_size(fork->processes))
        create_adopt(svc, id, fork, actor); /* attaches the channel, which serves the proxy */
    else if (fork)
        svc_procs_adopt_cancel(id);
    if (!(fork && json_array_size(fork->processes)) && egress_needs_channel(egress))
        create_attach_proxy(svc, id);
    return 0;
}

static int create_impl(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       json_t **out, clr_error *err)
{
    clr_egress_policy *egress = NULL;
    json_t *jegress = json_object_get(req, "egress");
    if (jegress && clr_egress_policy_parse(&egress, jegress, err) < 0)
        return -1;
    int rc = create_with(svc, req, tenant, actor, egress, NULL, out, err);
    clr_egress_policy_free(egress);
    return rc;
}

int svc_create_fork(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                    const struct svc_fork *fork, json_t **out, clr_error *err)
{
    clr_egress_policy *egress = NULL;
    json_t *jegress = json_object_get(req, "egress");
    if (jegress && clr_egress_policy_parse(&egress, jegress, err) < 0)
        return -1;
    int rc = create_with(svc, req, tenant, actor, egress, fork, out, err);
    clr_egress_policy_free(egress);
    return rc;
}

int clr_service_create(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       json_t **out, clr_error *err)
{
    int rc = create_impl(svc, req, tenant, actor, out, err);
    /* A refusal for want of room (max_sandboxes, the tenant's quota) comes at its highest rate
     * exactly while the daemon is full: counted as an exec's is (the first recorded at once,
     * the rest one record per audit_aggregate_ms); every other failure is one record. */
    if (rc < 0 && err->code == CLR_E_LIMIT)
        svc_audit_refusal(svc, actor, NULL, "sandbox.create", err);
    else if (rc < 0)
        svc_audit_failure(svc, actor, NULL, "sandbox.create", err);
    return rc;
}

/* The old container removed, the new one made from the snapshot and recorded as the row's.
 * *gone: the old container is no longer there to fall back on. */
static int restore_swap(clr_service *svc, clr_engine *eng, const clr_sandbox_options *o,
                        bool *gone, clr_error *err)
{
    const char *id = o->in_place->id;
    /* Commands in flight end with the old container (its channel closes); their records are
     * lost now, before the new agent attaches: a result it replays from the checkpoint's
     * memory finds no running record to complete, so nothing is replayed twice. */
    svc_live_drop(svc, id);
    clr_error ignored = CLR_ERROR_INIT;
    clr_store_exec_mark_lost_sandbox(svc->store, id, NULL, 0, svc_now_s(), &ignored);
    int rc = clr_sandbox_destroy(eng, id, "restored", svc->state_dir, err);
    *gone = true; /* even a failed removal may have taken the container or the workspace */
    if (rc < 0)
        return clr_error_prefix(err, "removing the sandbox's container");
    clr_sandbox *sb = NULL;
    if (clr_sandbox_create(&sb, eng, o, err) < 0)
        return -1;
    /* A daemon that dies before this leaves the old id in the row: its recovery records the
     * container that runs under the sandbox's labels (reaper.c, container_recorded). */
    rc = clr_store_sandbox_set_container(svc->store, id, clr_sandbox_get_info(sb)->container_id,
                                         err);
    if (rc < 0) {
        clr_error derr = CLR_ERROR_INIT;
        clr_sandbox_destroy(eng, id, "unrecorded", svc->state_dir, &derr);
        clr_sandbox_free(sb);
        return -1;
    }
    /* A request that opened the sandbox in the gap holds a handle of no container: dropped.
     * As after a create, the channel is attached now only when the egress proxy needs it (it
     * listens once a host attached); otherwise the next command attaches it. */
    svc_live_drop(svc, id);
    bool proxy = stored_egress_needs_channel(svc, id);
    clr_error lerr = CLR_ERROR_INIT;
    struct live_sb *lv = NULL;
    if (!proxy)
        clr_sandbox_free(sb);
    else if (svc_live_new(svc, eng, id, sb, NULL, &lv, &lerr) == 0)
        svc_live_put(svc, lv);
    else
        clr_log(CLR_LOG_WARN, "restore.channel_lost", "id", id, "error", lerr.message, NULL);
    return 0;
}

/* The restore's hold on snapshot snap (of sandbox id): marked held in the store, recorded
 * first ("snapshot.hold", reason restore), before the old container is removed. The sweep
 * removes a destroyed or lost sandbox's snapshots unless they are kept or held, and a daemon
 * killed between the removal and the new container's record leaves the sandbox lost: the hold
 * is what keeps the snapshot a retry (a fork) needs through that, as through a failed restore.
 * Apart from the user's keep, and taken whatever keep says: nothing read before the restore's
 * lock decides it (another restore's hold on the same snapshot, read then, is released before
 * this one runs). */
static int hold_snapshot(clr_service *svc, const char *id, const char *snap, const char *actor,
                         clr_error *err)
{
    json_t *d = json_pack("{s:s, s:s}", "snapshot", snap, "reason", "restore");
    int rc = clr_audit_append(svc->audit, actor, id, "snapshot.hold", "ok", d, err);
    json_decref(d);
    if (rc == 0)
        rc = clr_store_snapshot_hold(svc->store, snap, err);
    return rc < 0 ? clr_error_prefix(err, "sandbox %s is not restored (it runs on as it "
                                          "was): snapshot %s cannot be held for the restore",
                                     id, snap)
                  : 0;
}

void svc_release_snapshot(clr_service *svc, const char *id, const char *snap, const char *why,
                          const char *actor)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *d = json_pack("{s:s, s:s}", "snapshot", snap, "reason", why);
    int rc = clr_audit_append(svc->audit, actor, id, "snapshot.release", "ok", d, &err);
    json_decref(d);
    if (rc == 0)
        rc = clr_store_snapshot_release(svc->store, snap, &err);
    if (rc < 0)
        clr_log(CLR_LOG_WARN, "restore.snapshot_not_released", "id", id, "snapshot", snap,
                "error", err.message, "detail",
                "it stays held until the next start's recovery or its ttl", NULL);
}

int svc_restore_in_place(clr_service *svc, clr_engine *eng, const char *id,
                         const struct svc_fork *from, const char *actor, bool *began,
                         clr_error *err)
{
    *began = false;
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    if (strcmp(row.info.state, CLR_STATE_RUNNING) != 0) {
        svc_not_running(err, id, row.info.state, row.destroy_reason);
        clr_store_sandbox_clear(&row);
        return -1;
    }
    char **env = svc_row_env(&row, NULL);
    clr_store_sandbox_clear(&row);
    if (!env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    /* Its labels as the engine has them: what the new container must carry again. */
    _cleanup_sandbox_ clr_sandbox *old = NULL;
    if (clr_sandbox_open_at(&old, eng, id, svc->state_dir, err) < 0) {
        svc_free_strv(env);
        return clr_error_prefix(err, "sandbox %s's container", id);
    }
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.in_place = clr_sandbox_get_info(old);
    o.limits = o.in_place->limits;
    o.state_dir = svc->state_dir;
    o.env = (const char *const *)env;
    o.snapshot_dir = from->snapshot_dir;
    o.workspace_from = from->workspace_dir;
    if (clr_sandbox_check_in_place(eng, &o, err) < 0) {
        svc_free_strv(env);
        return clr_error_prefix(err, "sandbox %s is not restored (it runs on as it was)", id);
    }
    /* Durable before anything is removed: a crash from here on leaves the snapshot held. */
    bool hold = from->snapshot_id != NULL;
    if (hold && hold_snapshot(svc, id, from->snapshot_id, actor, err) < 0) {
        svc_free_strv(env);
        return -1;
    }
    /* Between the two containers the engine runs none of this sandbox: the reconcile pass and
     * the event watcher must not take that for a death (they skip while the gate is held for
     * writing, and a look already under way ends before the swap begins). */
    svc_snapshot_gate_write(svc);
    svc_set_restoring(svc, id);
    svc_procs_adopt_begin(id, from->processes);
    *began = true;
    bool gone = false;
    int rc = restore_swap(svc, eng, &o, &gone, err);
    /* Its container is gone and no new one runs: the sandbox ends here, recorded, rather than
     * a row that claims a container it does not have; destroyed while the gate and the
     * restoring mark are still held, so that no reconcile pass or death judgement audits it
     * lost first and the reaper does not destroy it as expired or idle (it skips a sandbox
     * being restored). svc_destroy_locked does not look at the mark, nor takes the gate or the
     * snapshot lock: it takes the audit log's lock, the store's, live_lock, rm_lock and
     * pool_lock, none held while waiting for another. The gate's readers take those too, but
     * only ever try the gate, never wait for it: holding it here waits on nobody who waits on
     * it. The snapshot it was restored from stays held (above): the sweep would remove it
     * with the sandbox, and it is what a retry (a fork) needs. */
    if (rc < 0 && gone) {
        clr_error derr = CLR_ERROR_INIT;
        if (svc_destroy_locked(svc, id, "restore-failed", actor, &derr) < 0)
            clr_log(CLR_LOG_ERROR, "restore.destroy_failed", "id", id, "error", derr.message,
                    "detail", "the reconcile pass marks it lost", NULL);
    }
    svc_set_restoring(svc, NULL);
    svc_snapshot_gate_write_done(svc);
    svc_free_strv(env);
    if (rc == 0) {
        /* A restore is activity: the idle reaper counts from its end. */
        clr_error ignored = CLR_ERROR_INIT;
        clr_store_sandbox_touch(svc->store, id, svc_now_s(), &ignored);
    }
    if (hold && (rc == 0 || !gone))
        svc_release_snapshot(svc, id, from->snapshot_id,
                             rc == 0 ? "restored" : "not-restored", actor);
    if (rc == 0 || !gone)
        return rc;
    err->code = CLR_E_ENGINE; /* not the cause's (an image's 404): the sandbox is gone */
    return clr_error_prefix(err, "restoring sandbox %s failed after its old container was "
                                 "removed, so the sandbox is destroyed (it cannot run on half "
                                 "restored)",
                            id);
}

/* The policy checked (a running sandbox, only tightened), recorded, then set: audit before
 * act, as every change of the service. The record names the policy about to be set, so a log
 * that cannot take it refuses the change (503) and nothing is changed: not the stored policy,
 * not the live proxy's. */
static int egress_impl(clr_service *svc, const char *id, json_t *req, const char *actor,
                       clr_error *err)
{
    if (svc_require_running(svc, id, err) < 0)
        return -1;
    clr_egress_policy *want = NULL, *have = NULL;
    json_t *jhave = NULL;
    if (clr_egress_policy_parse(&want, req, err) < 0)
        return -1;
    int rc = clr_store_sandbox_get_egress(svc->store, id, &jhave, err);
    if (rc == 0)
        rc = clr_egress_policy_parse(&have, jhave, err);
    json_decref(jhave);
    if (rc == 0 && !clr_egress_policy_within(want, have))
        rc = clr_error_set(err, CLR_E_DENIED, 0,
                           "a live sandbox's egress policy can only be tightened: every rule "
                           "must be allowed by the current policy and no limit may grow");
    json_t *jwant = rc == 0 ? clr_egress_policy_to_json(want) : NULL;
    if (rc == 0) {
        json_t *d = json_pack("{s:O}", "egress", jwant);
        rc = clr_audit_append(svc->audit, actor, id, "sandbox.egress", "ok", d, err);
        json_decref(d);
    }
    if (rc == 0)
        rc = clr_store_sandbox_set_egress(svc->store, id, jwant, err);
    if (rc == 0) {
        pthread_mutex_lock(&svc->live_lock);
        struct live_sb *lv = *svc_live_find_locked(svc, id);
        if (lv && lv->egress)
            clr_egress_set_policy(lv->egress, want, NULL);
        pthread_mutex_unlock(&svc->live_lock);
    }
    json_decref(jwant);
    clr_egress_policy_free(want);
    clr_egress_policy_free(have);
    return rc;
}

int clr_service_egress(clr_service *svc, const char *id, json_t *req, const char *actor,
                       json_t **out, clr_error *err)
{
    /* Every refusal is recorded too: a bad request, an unknown sandbox, a widening. */
    if (egress_impl(svc, id, req, actor, err) < 0) {
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "sandbox.egress",
                          err);
        return -1;
    }
    return clr_service_get(svc, id, out, err);
}

int clr_service_extend(clr_service *svc, const char *id, json_t *req, json_t **out,
                       clr_error *err)
{
    uint64_t ms = 0;
    if (svc_valid_id(id, err) < 0 || svc_parse_extend(req, &ms, err) < 0)
        return -1;
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    if (strcmp(row.info.state, CLR_STATE_RUNNING) != 0) {
        if (strcmp(row.info.state, CLR_STATE_PLAN) == 0)
            svc_not_running(err, id, row.info.state, row.destroy_reason);
        else
            clr_error_set(err, CLR_E_CONFLICT, 0, "sandbox %s is %s, not running", id,
                          row.info.state);
        clr_store_sandbox_clear(&row);
        return -1;
    }
    int64_t want = row.info.expires_at + (int64_t)(ms / 1000);
    if (want > row.max_expires_at) {
        clr_error_set(err, CLR_E_LIMIT, 0,
                      "sandbox %s cannot live past %" PRId64 " (max_lifetime from creation); "
                      "it may be extended by at most %" PRId64 " s",
                      id, row.max_expires_at, row.max_expires_at - row.info.expires_at);
        clr_store_sandbox_clear(&row);
        return -1;
    }
    clr_store_sandbox_clear(&row);
    if (clr_store_sandbox_set_expiry(svc->store, id, want, err) < 0)
        return -1;
    return clr_service_get(svc, id, out, err);
}

/* Destroy for the caller: recorded, then marked destroyed (no command, file or commit reaches
 * it from now on); its container and workspace are removed by the remover thread, off the
 * caller's path. The record comes first: when the audit log cannot be written, nothing is
 * destroyed (the client gets 503, the reaper tries again at its next pass). */
int svc_destroy_locked(clr_service *svc, const char *id, const char *reason, const char *actor,
                       clr_error *err)
{
    uint64_t t0 = svc_mono_us();
    /* The record names whose sandbox it was, whoever destroys it (the reaper's actor names
     * no tenant). */
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_row_tenant(svc, id, tenant, err) < 0)
        return -1;
    json_t *d = json_pack("{s:s, s:s}", "reason", reason, "tenant", tenant);
    int arc = clr_audit_append(svc->audit, actor, id, "sandbox.destroy", "ok", d, err);
    json_decref(d);
    if (arc < 0)
        return -1;
    /* Recorded but not marked (the database failed): the sandbox still runs, and the caller's
     * failure record (clr_service_destroy) follows this one in the log. */
    if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, reason, svc_now_s(),
                                    err) < 0)
        return -1;
    svc_live_drop(svc, id);
    if (!svc_removal_queue(svc, id, reason, 0)) {
        clr_error rerr = CLR_ERROR_INIT;
        if (svc_remove_now(svc, id, reason, &rerr) < 0)
            clr_log(CLR_LOG_WARN, "sandbox.removal_failed", "id", id, "error", rerr.message,
                    NULL);
    }
    svc_observe(&svc->h_destroy, svc_mono_us() - t0);
    if (strcmp(reason, "expired") == 0)
        atomic_fetch_add(&svc->destroyed_expired, 1);
    else if (strcmp(reason, "idle") == 0)
        atomic_fetch_add(&svc->destroyed_idle, 1);
    else
        atomic_fetch_add(&svc->destroyed_client, 1);
    return 0;
}

static int destroy_impl(clr_service *svc, const char *id, const char *reason, const char *actor,
                        clr_error *err)
{
    char state[32], why[CLR_STORE_REASON_MAX + 1];
    if (svc_valid_id(id, err) < 0 || svc_row_state(svc, id, state, why, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_PLAN) == 0)
        return svc_not_running(err, id, state, why);
    /* A lost sandbox keeps its workspace and stopped container until it is destroyed. */
    if (strcmp(state, CLR_STATE_RUNNING) != 0 && strcmp(state, CLR_STATE_LOST) != 0)
        return 0; /* idempotent */
    if (svc_restoring(svc, id))
        return svc_restoring_error(err, id);
    int rc = svc_destroy_locked(svc, id, reason, actor, err);
    if (rc == 0)
        clr_log(CLR_LOG_INFO, "service.destroyed", "id", id, "reason", reason, "actor", actor,
                NULL);
    return rc;
}

int clr_service_destroy(clr_service *svc, const char *id, const char *reason, const char *actor,
                        clr_error *err)
{
    int rc = destroy_impl(svc, id, reason, actor, err);
    if (rc < 0)
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "sandbox.destroy", err);
    return rc;
}

