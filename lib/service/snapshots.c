/* Snapshots of running sandboxes and forks from them (issue #22): the engine's checkpoint and
 * the workspace written as one snapshot (lib/snapshot.c), recorded (a row, an audit record with
 * its manifest's sha256), listed per sandbox, deleted; a fork is a new sandbox started from a
 * verified snapshot (lifecycle.c's create). The sweep removes expired snapshots, those of
 * destroyed sandboxes that are not kept, and what a daemon killed mid-way left half-made. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "clearing/cleanup.h"
#include "clearing/cleanup_json.h"
#include "clearing/snapshot.h"

#include "channels.h"
#include "code.h"
#include "engines.h"
#include "lifecycle.h"
#include "procs.h"
#include "rows.h"
#include "service_int.h"
#include "snapshots.h"
#include "validate.h"

#define SNAP_BUDGET_DEFAULT (8ull << 30) /* bytes of all snapshots together */
#define SNAP_TTL_DEFAULT (24u * 3600)    /* seconds */
#define SNAP_TTL_MAX (30u * 24 * 3600)

static pthread_mutex_t snap_write_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t budget(const clr_service *svc)
{
    return svc->cfg.snapshot_budget_bytes ? svc->cfg.snapshot_budget_bytes : SNAP_BUDGET_DEFAULT;
}

static bool restorable(const json_t *row);

/* The answer's shape: the row without what only the daemon needs (its source), whether it can
 * be restored, how many background processes a fork takes over and whether it takes over a code
 * session's kernel (read from that source: the bridge is listed with the processes). */
static json_t *public_json(json_t *row)
{
    json_t *o = json_deep_copy(row);
    json_object_set_new(o, "restorable", json_boolean(restorable(row)));
    json_t *procs = json_object_get(json_object_get(row, "source"), "processes");
    size_t n = 0, i;
    json_t *e;
    bool code = false;
    json_array_foreach(procs, i, e) {
        bool c = json_is_true(json_object_get(e, "code"));
        code = code || c;
        n += !c;
    }
    json_object_set_new(o, "processes", json_integer((json_int_t)n));
    json_object_set_new(o, "code_session", json_boolean(code));
    json_object_del(o, "source");
    return o;
}

/* 501 with what to enable when this daemon's engine or runtime cannot checkpoint. */
static int require_supported(clr_service *svc, clr_engine *eng, const char *runtime,
                             clr_error *err)
{
    bool ok = false;
    char why[512] = "";
    if (clr_engine_checkpoint_supported(eng, runtime, &ok, why, sizeof(why), err) < 0)
        return -1;
    (void)svc;
    return ok ? 0 : clr_error_set(err, CLR_E_UNSUPPORTED, 0, "snapshots are not available: %s", why);
}

static int parse_request(json_t *req, bool *keep, uint32_t *ttl, clr_error *err)
{
    static const char *const fields[] = {"keep", "ttl", NULL};
    if (req && svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *v = json_object_get(req, "keep");
    if (v && !json_is_boolean(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "keep must be true or false");
    *keep = json_is_true(v);
    v = json_object_get(req, "ttl");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 60 ||
              json_integer_value(v) > SNAP_TTL_MAX))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "ttl must be whole seconds from 60 to %u (30 days)", SNAP_TTL_MAX);
    *ttl = v ? (uint32_t)json_integer_value(v) : SNAP_TTL_DEFAULT;
    return 0;
}

/* The engine's live execs of container cid (its ExecIDs: a `docker exec` is listed from its
 * create until its process ends), or -1 when the engine does not say. */
static int live_execs(clr_engine *eng, const char *cid)
{
    _cleanup_json_ json_t *j = NULL;
    clr_error ignored = CLR_ERROR_INIT;
    if (clr_engine_container_inspect(eng, cid, &j, &ignored) < 0)
        return -1;
    json_t *ids = json_object_get(j, "ExecIDs");
    if (json_is_null(ids))
        return 0;
    return json_is_array(ids) ? (int)json_array_size(ids) : -1;
}

/* The engine's checkpoint of the sandbox, then its workspace, written as the snapshot at dir.
 * The engine's own copy of the checkpoint goes whatever happens. *execs: the most `docker exec`
 * processes seen live just before and just after the checkpoint (-1: the engine did not say),
 * recorded in the snapshot's source for restorable(). */
static int take(clr_service *svc, clr_engine *eng, const clr_store_sandbox *sb, const char *id,
                const char *dir, uint64_t max_bytes, uint64_t *size, char *sha, int *execs,
                clr_error *err)
{
    const char *cid = sb->info.container_id;
    char cpdir[4096], ws[4096];
    if (clr_workspace_path(ws, sizeof(ws), svc->state_dir, sb->info.id) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "the workspace's path is too long");
    /* No docker exec starts from the first look to the second: one that started before was
     * live at the first look, or had ended (its descriptors gone with it). */
    clr_exec_engine_starts_hold(true);
    int before = live_execs(eng, cid);
    int rc = clr_engine_checkpoint_create(eng, cid, id, err);
    int after = rc == 0 ? live_execs(eng, cid) : -1;
    clr_exec_engine_starts_hold(false);
    if (rc < 0)
        return clr_error_prefix(err, "checkpointing sandbox %s", sb->info.id);
    *execs = before < 0 || after < 0 ? -1 : before > after ? before : after;
    rc = clr_engine_checkpoint_dir(eng, cid, id, cpdir, sizeof(cpdir), err);
    if (rc == 0)
        rc = clr_snapshot_write(dir, cpdir, ws, max_bytes, size, sha, err);
    clr_error ignored = CLR_ERROR_INIT;
    clr_engine_checkpoint_delete(eng, cid, id, &ignored);
    return rc;
}

/* Whether a snapshot can be restored (forked, or a sandbox put back to it). runsc
 * 0.0~20240729 saves the host descriptors of a `docker exec`'s process (its stdio, from the
 * engine) in the checkpoint, and a restore then fails: "no host FD available for :host:0" (the
 * exec's descriptors are keyed by no container; fixed in gVisor release-20250304). A command,
 * background process or code session's bridge of a sandbox without its live channel runs
 * through docker exec; over the live channel (the container's own stdio, which a restore hands
 * over) they do not. So a snapshot is restorable when the engine listed no live
 * exec of the container just before and just after the checkpoint (source.execs 0). One that
 * does not say (an older daemon's, which recorded only whether the channel was ever attached,
 * not the execs a background process or code session ran in) is not: fail closed. Refused with
 * what to do, before anything is made or removed (a restore that failed half-way would cost the
 * sandbox). */
static bool restorable(const json_t *row)
{
    const json_t *execs = json_object_get(json_object_get(row, "source"), "execs");
    return json_is_integer(execs) && json_integer_value(execs) == 0;
}

static int require_restorable(const json_t *row, clr_error *err)
{
    if (restorable(row))
        return 0;
    const json_t *src = json_object_get(row, "source");
    const json_t *execs = json_object_get(src, "execs");
    const char *id = json_string_value(json_object_get(row, "id"));
    const char *sb = json_string_value(json_object_get(row, "sandbox"));
    if (!execs)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "snapshot %s was taken by an older daemon, which did not record "
                             "whether a process started through docker exec ran in sandbox %s "
                             "(this gVisor cannot restore such a checkpoint): take a new "
                             "snapshot",
                             id, sb);
    if (json_integer_value(execs) < 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "snapshot %s cannot be restored: the engine did not say whether a "
                             "process started through docker exec ran in sandbox %s when it was "
                             "taken; take a new snapshot",
                             id, sb);
    return clr_error_set(err, CLR_E_CONFLICT, 0,
                         "snapshot %s was taken while %lld process%s started through docker exec "
                         "ran in sandbox %s (an operator's docker exec runs so, as do a "
                         "command, a background process and the code session's kernel of a "
                         "sandbox whose live channel is down), and this gVisor cannot restore "
                         "such a checkpoint: end those processes (DELETE .../code ends a code "
                         "session), then take a new snapshot (docs/OPERATIONS.md, "
                         "\"Snapshots\")",
                         id, (long long)json_integer_value(execs),
                         json_integer_value(execs) == 1 ? "" : "es", sb);
}

/* What a fork needs of the sandbox when it may be gone: image, limits, egress; whether it can
 * be restored at all; and its background processes on the live channel (procs, taken), which a
 * fork or restore takes over. */
static json_t *source_of(clr_service *svc, const clr_store_sandbox *sb, int execs, json_t *procs)
{
    json_t *pub = svc_sandbox_json(sb);
    json_t *egress = NULL;
    clr_error ignored = CLR_ERROR_INIT;
    clr_store_sandbox_get_egress(svc->store, sb->info.id, &egress, &ignored);
    json_t *src = json_pack("{s:s, s:O, s:o, s:b, s:i, s:o}", "image", sb->info.image, "limits",
                            json_object_get(pub, "limits"), "egress",
                            egress ? egress : json_null(), "attached", sb->attached, "execs",
                            execs, "processes", procs ? procs : json_array());
    json_decref(pub);
    return src;
}

/* Whether sandbox id's channel was attached before its checkpoint of container cid was taken:
 * the row's mark read before, or now. It is set before any attach (channels.c), so a read
 * after the checkpoint sees every attach that came before it, also one made while the snapshot
 * waited for the lock. A row that cannot be read, or that names another container than the one
 * checkpointed (replaced meanwhile): attached (fail closed). */
static bool attached_by_now(clr_service *svc, const char *id, const char *cid, bool before)
{
    clr_store_sandbox now;
    clr_error ignored = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(svc->store, id, &now, &ignored) < 0)
        return true;
    bool attached = before || now.attached || strcmp(now.info.container_id, cid) != 0;
    clr_store_sandbox_clear(&now);
    return attached;
}

static json_t *make_row(clr_service *svc, const clr_store_sandbox *sb, const char *id,
                        uint64_t size, const char *sha, bool keep, uint32_t ttl, int execs,
                        json_t *procs)
{
    json_t *prev = NULL;
    clr_error ignored = CLR_ERROR_INIT;
    clr_store_snapshot_list(svc->store, sb->info.id, NULL, &prev, &ignored);
    json_t *last = json_array_size(prev) ? json_array_get(prev, json_array_size(prev) - 1) : NULL;
    const char *parent = json_string_value(json_object_get(last, "id"));
    int64_t now = svc_now_s();
    json_t *row = json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:I, s:I, s:b, s:b, s:o}", "id", id,
                            "sandbox", sb->info.id, "tenant",
                            svc_tenant_or_default(sb->info.tenant), "parent",
                            parent ? json_string(parent) : json_null(), "size", (json_int_t)size, "sha256", sha,
                            "created_at", (json_int_t)now, "expires_at",
                            (json_int_t)(now + ttl), "keep", keep, "held", 0,
                            "source", source_of(svc, sb, execs, procs));
    json_decref(prev);
    return row;
}

/* Recorded (audit, then row) or removed: a snapshot nobody can account for does not stay. */
static int record(clr_service *svc, const char *actor, json_t *row, const char *dir,
                  clr_error *err)
{
    json_t *d = public_json(row);
    const char *sandbox = json_string_value(json_object_get(row, "sandbox"));
    int rc = clr_audit_append(svc->audit, actor, sandbox, "sandbox.snapshot", "ok", d, err);
    json_decref(d);
    if (rc == 0)
        rc = clr_store_snapshot_insert(svc->store, row, err);
    if (rc < 0)
        clr_snapshot_remove_dir(dir, NULL);
    return rc;
}

static int snapshot_impl(clr_service *svc, clr_engine *eng, const char *sandbox_id, json_t *req,
                         const char *actor, json_t **out, clr_error *err)
{
    bool keep = false;
    uint32_t ttl = 0;
    if (parse_request(req, &keep, &ttl, err) < 0)
        return -1;
    clr_store_sandbox sb;
    if (clr_store_sandbox_get(svc->store, sandbox_id, &sb, err) < 0)
        return -1;
    int rc = strcmp(sb.info.state, CLR_STATE_RUNNING) == 0
                 ? require_supported(svc, eng, sb.info.runtime, err)
                 : svc_not_running(err, sandbox_id, sb.info.state, sb.destroy_reason);
    uint64_t total = 0, size = 0;
    /* One snapshot is written at a time: the budget left is read once, and the copy stops there
     * (two at once would each see the same room). */
    pthread_mutex_lock(&snap_write_lock);
    if (rc == 0)
        rc = clr_store_snapshot_total(svc->store, &total, err);
    if (rc == 0 && total >= budget(svc))
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "the snapshots' disk budget (%llu bytes) is used up: delete "
                           "snapshots you no longer need",
                           (unsigned long long)budget(svc));
    char id[32], dir[4096], sha[65];
    int execs = -1;
    if (rc == 0 && (clr_snapshot_id_new(id, sizeof(id), err) < 0 ||
                    clr_snapshot_path(dir, sizeof(dir), svc->state_dir, id) < 0))
        rc = -1;
    /* The checkpoint freezes the container (the engine shows it not running): no reconcile
     * pass or death judgement looks meanwhile, nor acts on a look from before. */
    svc_snapshot_gate_write(svc);
    int64_t since = svc_now_s();
    /* The code session's bridge, before the checkpoint and after it (a cell may end it or
     * start another meanwhile): either may be in the image; the fork takes the one its agent
     * runs, and kills the other. */
    json_t *code_before = svc_code_on_channel(svc, sandbox_id);
    if (rc == 0)
        rc = take(svc, eng, &sb, id, dir, budget(svc) - total, &size, sha, &execs, err);
    /* Every process that ran at the checkpoint ran at its start or started since, and is
     * listed now (ended or not): those its agent no longer knows are left out at the fork. */
    json_t *procs = rc == 0 ? svc_procs_on_channel(svc, sandbox_id, since) : NULL;
    json_t *code = procs ? svc_code_on_channel(svc, sandbox_id) : NULL;
    if (code_before && procs)
        json_array_append(procs, code_before);
    if (code && !json_equal(code, code_before))
        json_array_append(procs, code);
    json_decref(code);
    json_decref(code_before);
    if (rc == 0)
        sb.attached = attached_by_now(svc, sandbox_id, sb.info.container_id, sb.attached);
    if (rc == 0 && total + size > budget(svc)) {
        clr_snapshot_remove_dir(dir, NULL);
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "the snapshot (%llu bytes) does not fit the snapshots' disk budget: "
                           "delete snapshots you no longer need",
                           (unsigned long long)size);
    }
    json_t *row = rc == 0 ? make_row(svc, &sb, id, size, sha, keep, ttl, execs, procs) : NULL;
    if (rc != 0)
        json_decref(procs);
    if (rc == 0)
        rc = row ? record(svc, actor, row, dir, err)
                 : clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    svc_snapshot_gate_write_done(svc);
    pthread_mutex_unlock(&snap_write_lock);
    clr_store_sandbox_clear(&sb);
    if (rc == 0)
        *out = public_json(row);
    json_decref(row);
    return rc;
}

int clr_service_snapshot(clr_service *svc, const char *sandbox_id, json_t *req,
                         const char *actor, json_t **out, clr_error *err)
{
    clr_engine *eng = NULL;
    if (svc_valid_id(sandbox_id, err) < 0 || svc_engine_get(svc, &eng, err) < 0)
        return -1;
    int rc = snapshot_impl(svc, eng, sandbox_id, req, actor, out, err);
    svc_engine_put(svc, eng, rc < 0 && (err->code == CLR_E_UNAVAILABLE ||
                                        err->code == CLR_E_TIMEOUT));
    if (rc < 0)
        svc_audit_failure(svc, actor, sandbox_id, "sandbox.snapshot", err);
    return rc;
}

int clr_service_snapshot_list(clr_service *svc, const char *sandbox_id, json_t **out,
                              clr_error *err)
{
    json_t *rows = NULL;
    if (svc_valid_id(sandbox_id, err) < 0 ||
        clr_store_snapshot_list(svc->store, sandbox_id, NULL, &rows, err) < 0)
        return -1;
    json_t *list = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
        json_array_append_new(list, public_json(r));
    json_decref(rows);
    *out = json_pack("{s:o}", "snapshots", list);
    return 0;
}

/* The row of snapshot id if it is sandbox_id's (NULL: any sandbox) and tenant's (NULL: any);
 * otherwise the same 404 as for no snapshot, so nobody learns of another's. */
static int row_of(clr_service *svc, const char *sandbox_id, const char *tenant, const char *id,
                  json_t **out, clr_error *err)
{
    if (!clr_snapshot_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%.40s' is not a snapshot id (expected snap- and 16 hex digits)",
                             id ? id : "");
    json_t *row = NULL;
    if (clr_store_snapshot_get(svc->store, id, &row, err) < 0)
        return -1;
    const char *sb = json_string_value(json_object_get(row, "sandbox"));
    const char *t = json_string_value(json_object_get(row, "tenant"));
    if ((sandbox_id && strcmp(sb, sandbox_id) != 0) || (tenant && strcmp(t, tenant) != 0)) {
        json_decref(row);
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no snapshot %s", id);
    }
    *out = row;
    return 0;
}

int clr_service_snapshot_get(clr_service *svc, const char *sandbox_id, const char *id,
                             json_t **out, clr_error *err)
{
    json_t *row = NULL;
    if (row_of(svc, sandbox_id, NULL, id, &row, err) < 0)
        return -1;
    *out = public_json(row);
    json_decref(row);
    return 0;
}

/* Files first (a row without files is what the sweep removes; files without a row too). */
static int remove_snapshot(clr_service *svc, const char *id, clr_error *err)
{
    char dir[4096];
    if (clr_snapshot_path(dir, sizeof(dir), svc->state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "not a snapshot id");
    if (clr_snapshot_remove_dir(dir, err) < 0)
        return -1;
    return clr_store_snapshot_delete(svc->store, id, err);
}

int clr_service_snapshot_delete(clr_service *svc, const char *sandbox_id, const char *id,
                                const char *actor, clr_error *err)
{
    json_t *row = NULL;
    if (row_of(svc, sandbox_id, NULL, id, &row, err) < 0)
        return -1;
    json_t *d = public_json(row);
    json_decref(row);
    /* Not while a restore or fork reads it, nor a snapshot is written (the lock they hold). */
    pthread_mutex_lock(&snap_write_lock);
    int rc = clr_audit_append(svc->audit, actor, sandbox_id, "snapshot.delete", "ok", d, err);
    json_decref(d);
    if (rc == 0)
        rc = remove_snapshot(svc, id, err);
    pthread_mutex_unlock(&snap_write_lock);
    return rc;
}

/* The fork's create request: the snapshot's image and limits under what the client asked
 * (limits only tightened: lifecycle.c checks), its egress policy narrowed by what the client
 * names (clr_egress_policy_narrow: a field left out is the source's, a looser one refused). */
static int fork_request(json_t *req, json_t *src, json_t **out, clr_error *err)
{
    static const char *const fields[] = {"snapshot", "limits", "egress", "metadata",
                                         "idle_timeout", NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *limits = json_deep_copy(json_object_get(src, "limits"));
    json_t *want = json_object_get(req, "limits");
    if (want && !json_is_object(want)) {
        json_decref(limits);
        return clr_error_set(err, CLR_E_INVALID, 0, "limits must be an object");
    }
    json_object_update(limits, want);
    json_t *f = json_pack("{s:O, s:o}", "image", json_object_get(src, "image"), "limits", limits);
    json_t *egress = json_object_get(req, "egress");
    json_t *had = json_object_get(src, "egress");
    if ((egress && !json_is_null(egress)) || (had && !json_is_null(had))) {
        json_t *policy = NULL;
        if (clr_egress_policy_narrow(&policy, egress, had, err) < 0) {
            json_decref(f);
            return -1;
        }
        json_object_set_new(f, "egress", policy);
    }
    if (json_object_get(req, "metadata"))
        json_object_set(f, "metadata", json_object_get(req, "metadata"));
    if (json_object_get(req, "idle_timeout"))
        json_object_set(f, "idle_timeout", json_object_get(req, "idle_timeout"));
    *out = f;
    return 0;
}

static int fork_impl(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                     json_t **out, clr_error *err)
{
    const char *id = json_string_value(json_object_get(req, "snapshot"));
    _cleanup_json_ json_t *row = NULL;
    if (row_of(svc, NULL, tenant ? svc_tenant_or_default(tenant) : NULL, id, &row, err) < 0 ||
        require_restorable(row, err) < 0)
        return -1;
    clr_engine *eng = NULL;
    if (svc_engine_get(svc, &eng, err) < 0)
        return -1;
    const char *rt = svc->insecure_runtime ? svc->insecure_runtime : "runsc";
    int rc = require_supported(svc, eng, rt, err);
    svc_engine_put(svc, eng, false);
    struct svc_fork fork = {0};
    char dir[4096], ws[4096];
    _cleanup_json_ json_t *freq = NULL;
    json_t *src = json_object_get(row, "source");
    if (rc < 0 || fork_request(req, src, &freq, err) < 0)
        return -1;
    /* The ceiling: the snapshot's sandbox's limits as the create would read them. */
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    uint64_t idle = 0;
    const char *repo = NULL;
    char **env = NULL;
    json_t *creq = json_pack("{s:O}", "limits", json_object_get(src, "limits"));
    rc = svc_parse_create(creq, &o, &idle, &repo, &env, err);
    json_decref(creq);
    svc_free_strv(env);
    if (rc < 0)
        return clr_error_prefix(err, "snapshot %s's limits", id);
    fork.ceiling = o.limits;
    if (clr_snapshot_path(dir, sizeof(dir), svc->state_dir, id) < 0 ||
        clr_snapshot_workspace_path(ws, sizeof(ws), dir) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "the snapshot's path is too long");
    if (clr_snapshot_verify(dir, json_string_value(json_object_get(row, "sha256")), err) < 0)
        return -1;
    fork.snapshot_id = id;
    fork.snapshot_dir = dir;
    fork.workspace_dir = ws;
    fork.processes = json_object_get(src, "processes");
    _cleanup_json_ json_t *d = json_pack("{s:s}", "snapshot", id);
    if (clr_audit_append(svc->audit, actor, json_string_value(json_object_get(row, "sandbox")),
                         "snapshot.fork", "ok", d, err) < 0)
        return -1;
    return svc_create_fork(svc, freq, tenant, actor, &fork, out, err);
}

int clr_service_fork(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                     json_t **out, clr_error *err)
{
    int rc = fork_impl(svc, req, tenant, actor, out, err);
    if (rc == 0)
        json_object_set(*out, "snapshot", json_object_get(req, "snapshot"));
    else
        svc_audit_failure(svc, actor, NULL, "snapshot.fork", err);
    return rc;
}

/* The snapshot's row, if it is one of sandbox id's own. Another tenant's is the 404 of no
 * snapshot (tenancy tells nobody of another's); another sandbox's of the same tenant is refused
 * by name: a restore takes the sandbox back to its own past, a fork starts from anyone's. */
static int restore_row(clr_service *svc, const char *id, const char *snapshot, json_t **out,
                       clr_error *err)
{
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_row_tenant(svc, id, tenant, err) < 0 ||
        row_of(svc, NULL, svc_tenant_or_default(tenant), snapshot, out, err) < 0)
        return -1;
    const char *of = json_string_value(json_object_get(*out, "sandbox"));
    if (of && strcmp(of, id) == 0)
        return 0;
    /* The message first: of lives in the row freed below. */
    clr_error_set(err, CLR_E_INVALID, 0,
                  "snapshot %s was taken of sandbox %s, not of %s: a sandbox is restored only "
                  "from its own snapshots (POST /v1/sandboxes {\"snapshot\": ID} forks another's "
                  "into a new sandbox)",
                  snapshot, of ? of : "?", id);
    json_decref(*out);
    *out = NULL;
    return -1;
}

static int restore_impl(clr_service *svc, clr_engine *eng, const char *id, json_t *req,
                        const char *actor, clr_error *err)
{
    const char *snapshot = NULL;
    if (svc_parse_restore(req, &snapshot, err) < 0)
        return -1;
    /* The sandbox first: one that is not running is refused as for every other operation,
     * whether or not its snapshots are still there. */
    clr_store_sandbox sb;
    if (clr_store_sandbox_get(svc->store, id, &sb, err) < 0)
        return -1;
    int rc = strcmp(sb.info.state, CLR_STATE_RUNNING) == 0
                 ? 0
                 : svc_not_running(err, id, sb.info.state, sb.destroy_reason);
    _cleanup_json_ json_t *row = NULL;
    if (rc == 0)
        rc = restore_row(svc, id, snapshot, &row, err);
    if (rc == 0)
        rc = require_restorable(row, err);
    if (rc == 0)
        rc = require_supported(svc, eng, sb.info.runtime, err);
    clr_store_sandbox_clear(&sb);
    if (rc < 0)
        return -1;
    /* Verified whole before anything is changed: a corrupt or truncated snapshot is refused
     * while the sandbox still runs as it was. */
    char dir[4096], ws[4096];
    if (clr_snapshot_path(dir, sizeof(dir), svc->state_dir, snapshot) < 0 ||
        clr_snapshot_workspace_path(ws, sizeof(ws), dir) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "the snapshot's path is too long");
    /* One restore or snapshot at a time: two restores of one sandbox would each remove the
     * container the other made, and a checkpoint of a container being replaced fails. */
    pthread_mutex_lock(&snap_write_lock);
    rc = clr_snapshot_verify(dir, json_string_value(json_object_get(row, "sha256")), err);
    _cleanup_json_ json_t *d = json_pack("{s:s, s:O}", "snapshot", snapshot, "sha256",
                                         json_object_get(row, "sha256"));
    if (rc == 0)
        rc = clr_audit_append(svc->audit, actor, id, "sandbox.restore", "ok", d, err);
    /* The restore holds the snapshot in the store whatever its row said before the lock (its
     * keep is the user's, and a hold seen then may be another restore's, released since). */
    struct svc_fork from = {.snapshot_id = snapshot, .snapshot_dir = dir, .workspace_dir = ws,
                            .processes = json_object_get(json_object_get(row, "source"),
                                                         "processes")};
    bool began = false;
    if (rc == 0)
        rc = svc_restore_in_place(svc, eng, id, &from, actor, &began, err);
    pthread_mutex_unlock(&snap_write_lock);
    /* Its snapshot's background processes, back with the agent's memory, are its own again
     * (under new ids), taken over outside the lock (it opens the channel); a failed restore only
     * ends the hold on their results (one refused before the hold holds nothing). */
    if (began)
        svc_procs_adopt(svc, eng, id, snapshot, rc == 0 ? from.processes : NULL, actor);
    return rc;
}

int clr_service_restore(clr_service *svc, const char *id, json_t *req, const char *actor,
                        json_t **out, clr_error *err)
{
    clr_engine *eng = NULL;
    int rc = svc_valid_id(id, err);
    if (rc == 0)
        rc = svc_engine_get(svc, &eng, err);
    if (rc == 0) {
        rc = restore_impl(svc, eng, id, req, actor, err);
        svc_engine_put(svc, eng, rc < 0 && (err->code == CLR_E_UNAVAILABLE ||
                                            err->code == CLR_E_TIMEOUT));
    }
    if (rc < 0) {
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "sandbox.restore",
                          err);
        return -1;
    }
    if (clr_service_get(svc, id, out, err) < 0)
        return -1;
    json_object_set(*out, "snapshot", json_object_get(req, "snapshot"));
    return 0;
}

/* A snapshot directory without a row (a daemon killed while writing it, or before its row), or
 * one whose row is gone, is removed; so are rows whose files are gone. */
static void sweep_dirs(clr_service *svc, json_t *rows)
{
    char base[4096];
    snprintf(base, sizeof(base), "%s/snapshots", svc->state_dir);
    _cleanup_closedir_ DIR *d = opendir(base);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        bool known = false;
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
            known = known || strcmp(json_string_value(json_object_get(r, "id")), e->d_name) == 0;
        char dir[4096];
        if (known || (size_t)snprintf(dir, sizeof(dir), "%s/%s", base, e->d_name) >= sizeof(dir))
            continue;
        clr_log(CLR_LOG_INFO, "snapshot.partial_removed", "snapshot", e->d_name, NULL);
        clr_snapshot_remove_dir(dir, NULL);
    }
}

void svc_snapshots_sweep(clr_service *svc)
{
    /* Only while no snapshot is written and no fork or restore reads one (holding the lock
     * without waiting for it): a snapshot a restore is starting from must not expire under it,
     * and a directory not yet recorded must not be taken for a leftover. Busy: the next pass. */
    if (pthread_mutex_trylock(&snap_write_lock) != 0)
        return;
    json_t *rows = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_snapshot_list(svc->store, NULL, NULL, &rows, &err) < 0) {
        clr_log(CLR_LOG_WARN, "snapshot.sweep_failed", "error", err.message, NULL);
        pthread_mutex_unlock(&snap_write_lock);
        return;
    }
    int64_t now = svc_now_s();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *id = json_string_value(json_object_get(r, "id"));
        const char *sb = json_string_value(json_object_get(r, "sandbox"));
        char dir[4096];
        bool expired = json_integer_value(json_object_get(r, "expires_at")) <= now;
        /* Held (by a restore under way, or one a crash cut short) is kept: what a retry or a
         * fork of the sandbox the restore cost needs. */
        bool orphan = !json_is_true(json_object_get(r, "keep")) &&
                      !json_is_true(json_object_get(r, "held")) && svc_destroyed_row(svc, sb);
        bool gone = clr_snapshot_path(dir, sizeof(dir), svc->state_dir, id) < 0 ||
                    !clr_snapshot_finished(dir);
        if (!expired && !orphan && !gone)
            continue;
        const char *why = expired ? "expired" : orphan ? "sandbox destroyed" : "files missing";
        json_t *d = json_pack("{s:s, s:s}", "snapshot", id, "reason", why);
        if (clr_audit_append(svc->audit, "daemon", sb, "snapshot.delete", "ok", d, &err) == 0)
            remove_snapshot(svc, id, &err);
        json_decref(d);
    }
    json_decref(rows);
    rows = NULL;
    /* Directories without a row: a snapshot daemon killed while it was written. */
    if (clr_store_snapshot_list(svc->store, NULL, NULL, &rows, &err) == 0)
        sweep_dirs(svc, rows);
    pthread_mutex_unlock(&snap_write_lock);
    json_decref(rows);
}
