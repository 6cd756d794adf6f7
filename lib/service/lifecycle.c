/* lifecycle: see lifecycle.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "clearing/audit.h"
#include "clearing/files.h"
#include "clearing/gitws.h"
#include "clearing/plan.h"
#include "clearing/repoadmit.h"
#include "clearing/service.h"
#include "clearing/store.h"
#include "clearing/verdict.h"
#include "internal.h"

#include "channels.h"
#include "engines.h"
#include "lifecycle.h"
#include "removal.h"
#include "rows.h"
#include "service_int.h"
#include "tenants.h"
#include "validate.h"
#include "warm.h"

static int create_with(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       const clr_egress_policy *egress, json_t **out, clr_error *err)
{
    uint64_t t0 = svc_mono_us();
    tenant = svc_tenant_or_default(tenant);
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.tenant = tenant;
    o.limits = svc->cfg.limits;
    o.state_dir = svc->state_dir;
    o.insecure_runtime = svc->insecure_runtime;
    o.owner = svc->owner;
    o.max_lifetime_s = svc->cfg.max_lifetime_s;
    o.image = svc->image;
    uint64_t idle_ms = (uint64_t)svc->cfg.idle_timeout_s * 1000;
    const char *repo_path = NULL;
    char **env = NULL;
    if (svc_parse_create(req, &o, &idle_ms, &repo_path, &env, err) < 0)
        return -1;
    if (svc_image_allowed(svc, o.image, err) < 0) {
        svc_free_strv(env);
        return -1;
    }
    if (egress && egress->n) {
        if (svc_add_proxy_env(&env) < 0) {
            svc_free_strv(env);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
        o.env = (const char *const *)env;
    }
    json_t *meta = json_object_get(req, "metadata");
    json_t *repo = json_object_get(req, "repo");
    /* A client may name only repositories under the operator's repo_roots: the daemon runs
     * as root and would otherwise hand any repository on the host to whoever can reach it. */
    clr_repo_admitted admitted;
    if (repo_path) {
        if (clr_repo_admit(&admitted, svc->cfg.repo_roots, repo_path,
                           err) < 0) {
            svc_free_strv(env);
            return -1;
        }
        o.repo_path = admitted.path;
        o.repo_id = &admitted.id;
    }
    pthread_mutex_lock(&svc->create_lock);
    if (svc_sandbox_room_locked(svc, tenant, &o.limits, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        svc_free_strv(env);
        return -1;
    }
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    clr_channel *ch = NULL; /* a pooled sandbox's attached channel */
    /* The default profile comes from the warm pool when it has one ready. Pooled sandboxes are
     * made before anyone asks, with the default tenant's label, which an engine cannot change
     * later: other tenants' sandboxes are made for them. */
    bool pooled = svc->cfg.pool_size && !repo && !json_object_get(req, "image") &&
                  !json_object_get(req, "limits") && strcmp(tenant, CLR_TENANT_DEFAULT) == 0;
    if (pooled)
        sb = svc_warm_take(svc, &ch);
    int rc = svc_engine_get(svc, &eng, err);
    if (rc == 0 && !sb)
        rc = clr_sandbox_create(&sb, eng, &o, err);
    if (rc < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        svc_engine_put(svc, eng, true);
        svc_free_strv(env);
        atomic_fetch_add(&svc->create_failed, 1);
        /* Pooled, but no engine handle to record it with: it goes (recovery or gc removes
         * the container if this cannot). */
        if (sb)
            svc_warm_discard(svc, sb, ch, "pool-unrecorded");
        return -1;
    }
    clr_store_sandbox row;
    memset(&row, 0, sizeof(row));
    row.info = *clr_sandbox_get_info(sb);
    /* A pooled sandbox's life starts when it is handed out. */
    row.info.created_at = svc_now_s();
    row.info.expires_at = row.info.created_at + o.limits.lifetime_s;
    snprintf(row.info.state, sizeof(row.info.state), CLR_STATE_RUNNING);
    row.max_expires_at = row.info.max_expires_at;
    row.idle_timeout_s = (uint32_t)(idle_ms / 1000);
    row.last_active_at = svc_now_s();
    row.metadata = meta ? json_incref(meta) : json_object();
    row.env = json_array();
    for (char **e = env; e && *e; e++)
        json_array_append_new(row.env, json_string(*e));
    svc_free_strv(env);
    rc = clr_store_sandbox_insert(svc->store, &row, err);
    json_t *jpolicy = egress ? clr_egress_policy_to_json(egress) : NULL;
    if (rc == 0 && jpolicy)
        rc = clr_store_sandbox_set_egress(svc->store, row.info.id, jpolicy, err);
    pthread_mutex_unlock(&svc->create_lock);
    if (rc < 0) {
        /* Not recorded: it must not run. */
        json_decref(jpolicy);
        clr_error derr = CLR_ERROR_INIT;
        clr_channel_close(ch);
        clr_sandbox_destroy(eng, row.info.id, "unrecorded", svc->state_dir, &derr);
        clr_sandbox_free(sb);
        clr_store_sandbox_clear(&row);
        svc_engine_put(svc, eng, false);
        return -1;
    }
    /* Durable before acknowledged: no record, no sandbox. */
    json_t *d = clr_audit_sandbox_details(&row.info);
    json_object_set_new(d, "tenant", json_string(tenant));
    json_object_set(d, "metadata", row.metadata);
    if (jpolicy)
        json_object_set(d, "egress", jpolicy);
    rc = clr_audit_append(svc->audit, actor, row.info.id, "sandbox.create", "ok", d, err);
    json_decref(d);
    if (rc < 0) {
        clr_error derr = CLR_ERROR_INIT;
        clr_channel_close(ch);
        clr_sandbox_destroy(eng, row.info.id, "unaudited", svc->state_dir, &derr);
        clr_store_sandbox_set_state(svc->store, row.info.id, CLR_STATE_DESTROYED, "unaudited",
                                    svc_now_s(), &derr);
        clr_sandbox_free(sb);
        clr_store_sandbox_clear(&row);
        svc_engine_put(svc, eng, false);
        return -1;
    }
    if (ch) {
        /* A pooled sandbox brings its attached channel: its first command does not attach. */
        struct live_sb *lv = NULL;
        clr_error lerr = CLR_ERROR_INIT;
        if (svc_live_new(svc, eng, row.info.id, sb, ch, &lv, &lerr) == 0)
            svc_live_put(svc, lv);
        else
            clr_log(CLR_LOG_WARN, "pool.channel_lost", "id", row.info.id, "error", lerr.message,
                    NULL);
    } else {
        clr_sandbox_free(sb);
    }
    svc_engine_put(svc, eng, false);
    atomic_fetch_add(&svc->created, 1);
    svc_observe(&svc->h_create, svc_mono_us() - t0);
    clr_log(CLR_LOG_INFO, "service.created", "id", row.info.id, "actor", actor, NULL);
    *out = svc_sandbox_json(&row);
    if (jpolicy)
        json_object_set_new(*out, "egress", jpolicy);
    clr_store_sandbox_clear(&row);
    if (egress && egress->n) {
        /* The proxy inside listens once a host attached: attach now, not at the first exec. */
        struct live_sb *lv = NULL;
        clr_engine *leng = NULL;
        clr_error lerr = CLR_ERROR_INIT;
        if (svc_engine_get(svc, &leng, &lerr) == 0 &&
            svc_live_get(svc, leng, json_string_value(json_object_get(*out, "id")), &lv,
                         &lerr) == 0)
            svc_live_put(svc, lv);
        svc_engine_put(svc, leng, false);
    }
    return 0;
}

static int create_impl(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       json_t **out, clr_error *err)
{
    clr_egress_policy *egress = NULL;
    json_t *jegress = json_object_get(req, "egress");
    if (jegress && clr_egress_policy_parse(&egress, jegress, err) < 0)
        return -1;
    int rc = create_with(svc, req, tenant, actor, egress, out, err);
    clr_egress_policy_free(egress);
    return rc;
}


int clr_service_create(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       json_t **out, clr_error *err)
{
    int rc = create_impl(svc, req, tenant, actor, out, err);
    if (rc < 0)
        svc_audit_failure(svc, actor, NULL, "sandbox.create", err);
    return rc;
}

int clr_service_egress(clr_service *svc, const char *id, json_t *req, const char *actor,
                       json_t **out, clr_error *err)
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
    if (rc == 0)
        rc = clr_store_sandbox_set_egress(svc->store, id, jwant, err);
    if (rc == 0) {
        pthread_mutex_lock(&svc->live_lock);
        struct live_sb *lv = *svc_live_find_locked(svc, id);
        if (lv && lv->egress)
            clr_egress_set_policy(lv->egress, want, NULL);
        pthread_mutex_unlock(&svc->live_lock);
        json_t *d = json_pack("{s:O}", "egress", jwant);
        rc = clr_audit_append(svc->audit, actor, id, "sandbox.egress", "ok", d, err);
        json_decref(d);
    }
    json_decref(jwant);
    clr_egress_policy_free(want);
    clr_egress_policy_free(have);
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "sandbox.egress", err);
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
    json_t *d = json_pack("{s:s}", "reason", reason);
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

