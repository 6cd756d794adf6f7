/* rows: see rows.h. */
#include <errno.h>
#include <string.h>

#include "clearing/plan.h"

#include "rows.h"
#include "service_int.h"
#include "validate.h"

int clr_service_audit(clr_service *svc, const char *actor, const char *sandbox,
                      const char *action, const char *outcome, json_t *details, clr_error *err)
{
    return clr_audit_append(svc->audit, actor, sandbox, action, outcome, details, err);
}

int clr_service_audit_denied(clr_service *svc, const char *source, const char *actor,
                             const char *action, json_t *details, clr_error *err)
{
    return clr_audit_denied(svc->audit, source, actor, NULL, action, "denied", details, err);
}

/* Records a refused or failed request; the request has failed already, so a failure to write
 * the record is only logged. */
void svc_audit_failure(clr_service *svc, const char *actor, const char *sandbox,
                       const char *action, const clr_error *why)
{
    svc_audit_failure_with(svc, actor, sandbox, action, why, NULL, NULL);
}

/* A failure's details: the error's code name and message. */
static json_t *failure_details(const clr_error *why)
{
    json_t *d = json_pack("{s:s, s:s}", "code", clr_error_code_name(why->code), "error",
                          why->message);
    if (!d) {
        /* A message that is not UTF-8 (a client's bytes cut by a format's precision): the
         * record keeps it, with '?' for the bytes that are not ASCII. */
        char ascii[sizeof(why->message)];
        clr_text_ascii(ascii, sizeof(ascii), why->message);
        d = json_pack("{s:s, s:s}", "code", clr_error_code_name(why->code), "error", ascii);
    }
    return d;
}

void svc_audit_refusal(clr_service *svc, const char *actor, const char *sandbox,
                       const char *action, const clr_error *why)
{
    json_t *d = failure_details(why);
    clr_error aerr = CLR_ERROR_INIT;
    if (!d || clr_audit_denied(svc->audit, actor ? actor : "unknown", actor, sandbox, action,
                               "refused", d, &aerr) < 0)
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "action", action, "error",
                d ? aerr.message : "out of memory", NULL);
    json_decref(d);
}

void svc_audit_failure_with(clr_service *svc, const char *actor, const char *sandbox,
                            const char *action, const clr_error *why, const char *outcome,
                            json_t *extra)
{
    json_t *d = failure_details(why);
    if (d && extra)
        json_object_update_missing(d, extra);
    if (!outcome)
        outcome = why->code == CLR_E_INVALID || why->code == CLR_E_LIMIT ||
                          why->code == CLR_E_DENIED || why->code == CLR_E_UNAVAILABLE
                      ? "refused"
                      : "error";
    clr_error aerr = CLR_ERROR_INIT;
    if (clr_audit_append(svc->audit, actor, sandbox, action, outcome, d, &aerr) < 0)
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "action", action, "error", aerr.message,
                NULL);
    json_decref(d);
}

json_t *svc_sandbox_json(const clr_store_sandbox *s)
{
    const clr_limits *l = &s->info.limits;
    char cpus[32], mem[32], tmp[32], ws[32], fs[32];
    snprintf(cpus, sizeof(cpus), "%u.%03u", l->cpu_millis / 1000, l->cpu_millis % 1000);
    clr_format_size(mem, sizeof(mem), l->memory_bytes);
    clr_format_size(tmp, sizeof(tmp), l->tmp_bytes);
    clr_format_size(ws, sizeof(ws), l->workspace_bytes);
    clr_format_size(fs, sizeof(fs), l->fsize_bytes);
    json_t *env_names = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(s->env, i, e) {
        const char *kv = json_string_value(e);
        const char *eq = kv ? strchr(kv, '=') : NULL;
        if (eq)
            json_array_append_new(env_names, json_stringn(kv, (size_t)(eq - kv)));
    }
    return json_pack(
        "{s:s, s:s, s:s, s:b, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:O, s:o,"
        " s:{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:s}}",
        "id", s->info.id, "tenant", s->info.tenant[0] ? s->info.tenant : CLR_TENANT_DEFAULT,
        "state", s->info.state, "recovered", s->recovered, "image", s->info.image, "runtime",
        s->info.runtime, "insecure", s->info.insecure, "created_at", (json_int_t)s->info.created_at,
        "expires_at", (json_int_t)s->info.expires_at, "max_expires_at",
        (json_int_t)s->max_expires_at, "idle_timeout", (json_int_t)s->idle_timeout_s,
        "last_active_at", (json_int_t)s->last_active_at, "destroyed_at",
        (json_int_t)s->destroyed_at, "destroy_reason", s->destroy_reason, "metadata",
        s->metadata, "env", env_names, "limits", "cpus", cpus, "memory", mem, "pids",
        (json_int_t)l->pids, "lifetime", (json_int_t)l->lifetime_s, "tmp_size", tmp,
        "workspace_size", ws, "workspace_inodes", (json_int_t)l->workspace_inodes, "nofile",
        (json_int_t)l->nofile, "file_size", fs);
}

int clr_service_sandbox_of(clr_service *svc, const char *id, const char *tenant,
                           clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    bool theirs = !tenant || strcmp(svc_tenant_or_default(row.info.tenant), tenant) == 0;
    clr_store_sandbox_clear(&row);
    if (theirs)
        return 0;
    /* Word for word what clr_store_sandbox_get() says of an id it has no row for. */
    return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id);
}

int clr_service_list(clr_service *svc, const char *tenant, const char *state, const char *label,
                     json_t **out, clr_error *err)
{
    if (state && strcmp(state, CLR_STATE_RUNNING) && strcmp(state, CLR_STATE_DESTROYED) &&
        strcmp(state, CLR_STATE_LOST) && strcmp(state, CLR_STATE_PLAN))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "state filter '%.64s' is not running, plan, destroyed or lost",
                             state);
    char key[256] = "";
    const char *want = NULL;
    if (label) {
        const char *eq = strchr(label, '=');
        if (!eq || eq == label || (size_t)(eq - label) >= sizeof(key))
            return clr_error_set(err, CLR_E_INVALID, 0, "label filter must be key=value");
        memcpy(key, label, (size_t)(eq - label));
        key[eq - label] = '\0';
        want = eq + 1;
    }
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    if (clr_store_sandbox_list(svc->store, state, &rows, &n, err) < 0)
        return -1;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *have = want ? json_string_value(json_object_get(rows[i].metadata, key)) : NULL;
        bool theirs = !tenant || strcmp(svc_tenant_or_default(rows[i].info.tenant), tenant) == 0;
        if (theirs && (!want || (have && strcmp(have, want) == 0)))
            json_array_append_new(a, svc_sandbox_json(&rows[i]));
        clr_store_sandbox_clear(&rows[i]);
    }
    free(rows);
    *out = json_pack("{s:o}", "sandboxes", a);
    return 0;
}

int clr_service_get(clr_service *svc, const char *id, json_t **out, clr_error *err)
{
    if (svc_valid_id(id, err) < 0)
        return -1;
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    *out = svc_sandbox_json(&row);
    clr_store_sandbox_clear(&row);
    json_t *egress = NULL;
    if (clr_store_sandbox_get_egress(svc->store, id, &egress, NULL) == 0 && egress)
        json_object_set_new(*out, "egress", egress);
    return 0;
}

/* The database's state of the sandbox (a CLR_STATE_*) and why it left running ("" while it
 * runs); -1 when it has no row for it (404). */
int svc_row_state(clr_service *svc, const char *id, char state[32],
                  char reason[CLR_STORE_REASON_MAX + 1],
                  clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    snprintf(state, 32, "%s", row.info.state);
    snprintf(reason, CLR_STORE_REASON_MAX + 1, "%s", row.destroy_reason);
    clr_store_sandbox_clear(&row);
    return 0;
}

int svc_row_tenant(clr_service *svc, const char *id, char tenant[CLR_TENANT_MAX + 1],
                   clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    snprintf(tenant, CLR_TENANT_MAX + 1, "%s", svc_tenant_or_default(row.info.tenant));
    clr_store_sandbox_clear(&row);
    return 0;
}

/* Whether the database has the sandbox as running; -1 when it has no row for it (404). */
int svc_row_running(clr_service *svc, const char *id, bool *running, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (svc_row_state(svc, id, state, reason, err) < 0)
        return -1;
    *running = strcmp(state, CLR_STATE_RUNNING) == 0;
    return 0;
}

/* The 409 for a sandbox that is not running: a lost one names its cause, and that its files
 * can still be read. */
int svc_not_running(clr_error *err, const char *id, const char *state, const char *reason)
{
    if (strcmp(state, CLR_STATE_PLAN) == 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "sandbox %s belongs to a running plan: only the plan uses it, and "
                             "it is destroyed when the plan ends",
                             id);
    if (strcmp(state, CLR_STATE_LOST) == 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "sandbox %s is not running: it is lost (%s); its workspace can "
                             "still be read (files, diff) until it is destroyed",
                             id, reason[0] ? reason : "unknown cause");
    return clr_error_set(err, CLR_E_CONFLICT, 0, "sandbox %s is not running (%s)", id, state);
}

/* A valid id of a running sandbox, or -1 (400, 404 or 409). */
int svc_require_running(clr_service *svc, const char *id, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (svc_valid_id(id, err) < 0 || svc_row_state(svc, id, state, reason, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_RUNNING) != 0)
        return svc_not_running(err, id, state, reason);
    if (svc_restoring(svc, id))
        return svc_restoring_error(err, id);
    return 0;
}

/* A valid id of a sandbox whose workspace may be read: a running one, or a lost one (its
 * workspace is kept until it is destroyed, so that what it wrote before it died can be
 * fetched). */
static int require_readable(clr_service *svc, const char *id, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (svc_valid_id(id, err) < 0 || svc_row_state(svc, id, state, reason, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_RUNNING) != 0 && strcmp(state, CLR_STATE_LOST) != 0)
        return svc_not_running(err, id, state, reason);
    return 0;
}

int clr_service_workspace(clr_service *svc, const char *id, char *out, size_t len,
                          clr_error *err)
{
    if (svc_require_running(svc, id, err) < 0)
        return -1;
    if (clr_workspace_path(out, len, svc->state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, ENAMETOOLONG, "workspace path too long");
    clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
    return 0;
}

/* The workspace of a running or lost sandbox, for reading. */
int svc_workspace_to_read(clr_service *svc, const char *id, char *out, size_t len,
                          clr_error *err)
{
    if (require_readable(svc, id, err) < 0)
        return -1;
    if (clr_workspace_path(out, len, svc->state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, ENAMETOOLONG, "workspace path too long");
    clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
    return 0;
}

/* Whether the database knows this sandbox as destroyed (not merely unknown, nor lost: a lost
 * one's remains wait for its destroy; nor a running plan's). */
bool svc_destroyed_row(clr_service *svc, const char *id)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    clr_error err = CLR_ERROR_INIT;
    return svc_row_state(svc, id, state, reason, &err) == 0 &&
           strcmp(state, CLR_STATE_DESTROYED) == 0;
}

/* Whether the database knows this sandbox as lost. */
bool svc_lost_row(clr_service *svc, const char *id)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    clr_error err = CLR_ERROR_INIT;
    return svc_row_state(svc, id, state, reason, &err) == 0 && strcmp(state, CLR_STATE_LOST) == 0;
}

char **svc_row_env(const clr_store_sandbox *row, const char *const *extra)
{
    size_t nrow = json_array_size(row->env), nextra = 0;
    while (extra && extra[nextra])
        nextra++;
    char **v = calloc(nrow + nextra + 1, sizeof(char *));
    for (size_t i = 0; v && i < nrow + nextra; i++) {
        const char *e = i < nrow ? json_string_value(json_array_get(row->env, i))
                                 : extra[i - nrow];
        v[i] = strdup(e ? e : "");
        if (!v[i]) {
            svc_free_strv(v);
            return NULL;
        }
    }
    return v;
}
