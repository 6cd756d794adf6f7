/* tenants: see tenants.h. */
#include <errno.h>
#include <string.h>

#include "service_int.h"
#include "tenants.h"

/* The index of the tenant's quota in cfg.tenants, or -1 when it has none. */
static int quota_index(const clr_service *svc, const char *tenant)
{
    for (size_t i = 0; i < svc->cfg.ntenants && i < CLR_SERVICE_TENANTS_MAX; i++) {
        if (strcmp(svc->cfg.tenants[i].name, tenant) == 0)
            return (int)i;
    }
    return -1;
}

static const clr_tenant_quota *tenant_quota(const clr_service *svc, const char *tenant)
{
    int i = quota_index(svc, tenant);
    return i < 0 ? NULL : &svc->cfg.tenants[i];
}

struct tenant_usage *svc_usage_entry(struct tenant_usage **v, size_t *n, const char *tenant)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*v)[i].tenant, tenant) == 0)
            return &(*v)[i];
    }
    struct tenant_usage *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return NULL;
    *v = nv;
    struct tenant_usage *u = &nv[(*n)++];
    memset(u, 0, sizeof(*u));
    snprintf(u->tenant, sizeof(u->tenant), "%s", tenant);
    return u;
}

static int usage_add_rows(clr_service *svc, const char *state, struct tenant_usage **v, size_t *n,
                          clr_error *err)
{
    clr_store_sandbox *rows = NULL;
    size_t m = 0;
    if (clr_store_sandbox_list(svc->store, state, &rows, &m, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < m; i++) {
        const char *tenant = svc_tenant_or_default(rows[i].info.tenant);
        struct tenant_usage *u = rc == 0 ? svc_usage_entry(v, n, tenant)
                                         : NULL;
        if (!u && rc == 0)
            rc = clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        if (u) {
            u->sandboxes++;
            u->memory_bytes += rows[i].info.limits.memory_bytes;
            u->cpu_millis += rows[i].info.limits.cpu_millis;
        }
        clr_store_sandbox_clear(&rows[i]);
    }
    free(rows);
    return rc;
}

/* Every tenant's live sandboxes, from the database (*v: free()). */
int svc_usage_collect(clr_service *svc, struct tenant_usage **v, size_t *n, clr_error *err)
{
    *v = NULL;
    *n = 0;
    if (usage_add_rows(svc, CLR_STATE_RUNNING, v, n, err) < 0 ||
        usage_add_rows(svc, CLR_STATE_PLAN, v, n, err) < 0) {
        free(*v);
        *v = NULL;
        return -1;
    }
    return 0;
}

/* Room in the tenant's quota for one more sandbox with these limits: its live sandboxes and its
 * plans still being made, plus this one. create_lock held. */
static int tenant_room_locked(clr_service *svc, const char *tenant, const clr_limits *want,
                              clr_error *err)
{
    const clr_tenant_quota *q = tenant_quota(svc, tenant);
    if (!q)
        return 0;
    struct tenant_usage *v = NULL;
    size_t n = 0;
    if (svc_usage_collect(svc, &v, &n, err) < 0)
        return -1;
    struct tenant_usage have = {.sandboxes = 0};
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].tenant, tenant) == 0)
            have = v[i];
    }
    free(v);
    for (const struct pending_plan *p = svc->pending_plans; p; p = p->next) {
        if (strcmp(p->tenant, tenant) == 0) {
            have.sandboxes++;
            have.memory_bytes += p->limits.memory_bytes;
            have.cpu_millis += p->limits.cpu_millis;
        }
    }
    int rc = 0;
    if (q->max_sandboxes && have.sandboxes + 1 > q->max_sandboxes) {
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "tenant %s is at its quota: %u sandboxes are live (max_sandboxes %u "
                           "for tenant %s); destroy one or retry later",
                           tenant, have.sandboxes, q->max_sandboxes, tenant);
    } else if (q->max_memory_bytes &&
               have.memory_bytes + want->memory_bytes > q->max_memory_bytes) {
        char h[32], w[32], m[32];
        clr_format_size(h, sizeof(h), have.memory_bytes);
        clr_format_size(w, sizeof(w), want->memory_bytes);
        clr_format_size(m, sizeof(m), q->max_memory_bytes);
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "tenant %s is at its quota: its sandboxes hold %s of memory, %s more "
                           "would pass max_memory %s for tenant %s; destroy one or ask for less",
                           tenant, h, w, m, tenant);
    } else if (q->max_cpu_millis && have.cpu_millis + want->cpu_millis > q->max_cpu_millis) {
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "tenant %s is at its quota: its sandboxes hold %llu.%03llu CPUs, "
                           "%u.%03u more would pass max_cpus %u.%03u for tenant %s; destroy one "
                           "or ask for less",
                           tenant, (unsigned long long)(have.cpu_millis / 1000),
                           (unsigned long long)(have.cpu_millis % 1000), want->cpu_millis / 1000,
                           want->cpu_millis % 1000, q->max_cpu_millis / 1000,
                           q->max_cpu_millis % 1000, tenant);
    }
    if (rc < 0)
        atomic_fetch_add(&svc->refused, 1);
    return rc;
}

/* Room for one more sandbox: the live rows (sandboxes and plans') and the plans admitted whose
 * sandbox is still being made, against max_sandboxes, then against the tenant's quota.
 * create_lock held, so the count and the insert (or the plan's admission) are one step. */
int svc_sandbox_room_locked(clr_service *svc, const char *tenant, const clr_limits *want,
                            clr_error *err)
{
    int running = 0;
    if (clr_store_count_running(svc->store, &running, err) < 0)
        return -1;
    running += (int)svc->plans_pending;
    if ((unsigned)running < svc->cfg.max_sandboxes)
        return tenant_room_locked(svc, tenant, want, err);
    atomic_fetch_add(&svc->refused, 1);
    return clr_error_set(err, CLR_E_LIMIT, 0,
                         "at capacity: %d sandboxes are live (max_sandboxes %u); destroy one "
                         "or retry later",
                         running, svc->cfg.max_sandboxes);
}

static int execs_full(clr_service *svc, clr_error *err)
{
    atomic_fetch_add(&svc->refused, 1);
    return clr_error_set(err, CLR_E_LIMIT, 0,
                         "at capacity: %u commands are running (max_execs); retry later",
                         svc->cfg.max_execs);
}

static int tenant_execs_full(clr_service *svc, const char *tenant, unsigned max, clr_error *err)
{
    atomic_fetch_add(&svc->refused, 1);
    return clr_error_set(err, CLR_E_LIMIT, 0,
                         "tenant %s is at its quota: %u commands are running in its sandboxes "
                         "(max_execs %u for tenant %s); retry later",
                         tenant, max, max, tenant);
}

/* One slot of max_execs, then one of the tenant's (q: its index, or -1): 1 when both were taken,
 * 0 when max_execs is full, -1 when the tenant's is (nothing held then). */
static int take_slot(clr_service *svc, int q)
{
    if (atomic_fetch_add(&svc->running_execs, 1) >= (int)svc->cfg.max_execs) {
        atomic_fetch_sub(&svc->running_execs, 1);
        return 0;
    }
    unsigned max = q < 0 ? 0 : svc->cfg.tenants[q].max_execs;
    if (max && atomic_fetch_add(&svc->tenant_execs[q], 1) >= (int)max) {
        atomic_fetch_sub(&svc->tenant_execs[q], 1);
        atomic_fetch_sub(&svc->running_execs, 1);
        return -1;
    }
    return 1;
}

int svc_exec_admit(clr_service *svc, const char *tenant, unsigned *n, clr_error *err)
{
    tenant = svc_tenant_or_default(tenant);
    int q = quota_index(svc, tenant);
    unsigned want = *n ? *n : 1, got = 0;
    int last = 1;
    while (got < want && (last = take_slot(svc, q)) == 1)
        got++;
    if (got == 0)
        return last == 0 ? execs_full(svc, err)
                         : tenant_execs_full(svc, tenant, svc->cfg.tenants[q].max_execs, err);
    *n = got;
    return 0;
}

void svc_exec_release(clr_service *svc, const char *tenant, unsigned n)
{
    int q = quota_index(svc, svc_tenant_or_default(tenant));
    if (q >= 0 && svc->cfg.tenants[q].max_execs)
        atomic_fetch_sub(&svc->tenant_execs[q], (int)n);
    atomic_fetch_sub(&svc->running_execs, (int)n);
}

int svc_exec_room(clr_service *svc, const char *tenant, clr_error *err)
{
    tenant = svc_tenant_or_default(tenant);
    if (atomic_load(&svc->running_execs) >= (int)svc->cfg.max_execs)
        return execs_full(svc, err);
    int q = quota_index(svc, tenant);
    unsigned max = q < 0 ? 0 : svc->cfg.tenants[q].max_execs;
    if (max && atomic_load(&svc->tenant_execs[q]) >= (int)max)
        return tenant_execs_full(svc, tenant, max, err);
    return 0;
}

unsigned svc_code_sessions_max(const clr_service *svc, const char *tenant)
{
    const clr_tenant_quota *q = tenant_quota(svc, svc_tenant_or_default(tenant));
    return q && q->max_code_sessions ? q->max_code_sessions : CLR_SERVICE_TENANT_CODE_SESSIONS;
}
