/* Health and metrics: clr_service_health() and clr_service_metrics(); the contract is in
 * include/clearing/service.h. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <openssl/evp.h>

#include "engines.h"
#include "service_int.h"
#include "tenants.h"

/* For anonymous callers the engine is pinged at most once per HEALTH_PING_INTERVAL_MS,
 * however often they ask: /v1/health needs no token on TCP, and must not hand anyone a way to
 * make the daemon call dockerd at the rate they choose. They share the last answer (and wait
 * for nobody: while one of them pings, the others take the last answer). An operator or
 * a client with a token (fresh) gets the engine's state as of now, and refreshes it for the
 * others: a health check that lags the engine by seconds misleads whoever acts on it. */
#define HEALTH_PING_INTERVAL_MS 3000

/* One ping of the engine; why: "ok" or the engine's error. Never under health_lock: a ping can
 * take as long as the engine's timeout, and nobody's health check waits behind another's. */
static bool ping_engine(clr_service *svc, char *why, size_t why_size)
{
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    bool ok = svc_engine_get(svc, &eng, &err) == 0;
    if (ok && clr_engine_ping(eng, &err) < 0)
        ok = false;
    svc_engine_put(svc, eng, !ok);
    snprintf(why, why_size, "%s", ok ? "ok" : err.message);
    return ok;
}

/* why: "ok" or the engine's error; at least sizeof(svc->health_err). A fresh caller pings. An
 * anonymous one pings only when the last answer is HEALTH_PING_INTERVAL_MS old and no other
 * anonymous ping is under way; otherwise it takes the last answer at once. */
static bool engine_healthy(clr_service *svc, bool fresh, char *why, size_t why_size)
{
    pthread_mutex_lock(&svc->health_lock);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t age_ms = (int64_t)(now.tv_sec - svc->health_at.tv_sec) * 1000 +
                     (now.tv_nsec - svc->health_at.tv_nsec) / 1000000;
    bool due = !svc->health_checked || age_ms >= HEALTH_PING_INTERVAL_MS;
    bool ping = fresh || (due && !svc->health_pinging);
    if (ping && !fresh)
        svc->health_pinging = true;
    pthread_mutex_unlock(&svc->health_lock);
    if (ping) {
        char err[sizeof(svc->health_err)];
        bool ok = ping_engine(svc, err, sizeof(err));
        pthread_mutex_lock(&svc->health_lock);
        svc->health_ok = ok;
        snprintf(svc->health_err, sizeof(svc->health_err), "%s", err);
        svc->health_checked = true;
        clock_gettime(CLOCK_MONOTONIC, &svc->health_at);
        if (!fresh)
            svc->health_pinging = false;
        pthread_mutex_unlock(&svc->health_lock);
        snprintf(why, why_size, "%s", err);
        return ok;
    }
    pthread_mutex_lock(&svc->health_lock);
    bool ok = svc->health_checked && svc->health_ok;
    snprintf(why, why_size, "%.*s", (int)sizeof(svc->health_err) - 1,
             svc->health_checked ? svc->health_err : "the engine is being checked");
    pthread_mutex_unlock(&svc->health_lock);
    return ok;
}

/* Below this much free space (or with no free inode) a filesystem the daemon writes to counts as
 * full: a transaction of SQLite (a few 4 KiB pages in the WAL) and an audit record need about
 * this much. Small, so that a small dedicated filesystem (a tmpfs for the audit log) is not
 * called full while it has room for thousands of records. */
#define HEALTH_DISK_RESERVE (64 * 1024)

/* Whether the filesystem of dir has room: a statvfs(), no write. why: the path and what is left.
 * dev (in/out) skips a filesystem already checked. */
static bool disk_has_room(const char *dir, dev_t *seen, char *why, size_t len)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (*seen && st.st_dev == *seen)
            return true;
        *seen = st.st_dev;
    }
    struct statvfs v;
    if (statvfs(dir, &v) < 0) {
        snprintf(why, len, "cannot check the free space of %s: %s", dir, strerror(errno));
        return false;
    }
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
    if (avail < HEALTH_DISK_RESERVE || (v.f_files && v.f_favail == 0)) {
        snprintf(why, len,
                 "no space left on %s: %" PRIu64 " KiB and %" PRIu64 " inodes free (reserve "
                 "%d KiB); actions that write state are refused until space is freed",
                 dir, avail / 1024, (uint64_t)v.f_favail, HEALTH_DISK_RESERVE / 1024);
        return false;
    }
    return true;
}

int clr_service_health(clr_service *svc, bool fresh, json_t **out)
{
    char engine[sizeof(svc->health_err)];
    bool engine_ok = engine_healthy(svc, fresh, engine, sizeof(engine));
    json_t *reasons = json_array();
    const char *status = "ok";
    if (!engine_ok) {
        status = "degraded";
        json_array_append_new(reasons, json_sprintf("the Docker engine: %s", engine));
    }
    char why[sizeof(((clr_error *)0)->message) + 64];
    if (!clr_audit_writable(svc->audit, why, sizeof(why))) {
        status = "degraded";
        json_array_append_new(reasons, json_string(why));
    }
    /* A full disk refuses every action that writes (every one: all are audited): unavailable. */
    char audit_dir[4096];
    snprintf(audit_dir, sizeof(audit_dir), "%s", clr_audit_path(svc->audit));
    char *slash = strrchr(audit_dir, '/');
    if (slash)
        *(slash == audit_dir ? slash + 1 : slash) = '\0';
    else
        snprintf(audit_dir, sizeof(audit_dir), ".");
    dev_t seen = 0;
    const char *dirs[] = {svc->state_dir, audit_dir};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        if (!disk_has_room(dirs[i], &seen, why, sizeof(why))) {
            status = "unavailable";
            json_array_append_new(reasons, json_string(why));
        }
    }
    int running = 0;
    clr_store_count_running(svc->store, &running, NULL);
    pthread_mutex_lock(&svc->rm_lock);
    unsigned pending = svc->rm_pending;
    pthread_mutex_unlock(&svc->rm_lock);
    *out = json_pack("{s:s, s:o, s:s, s:s, s:i, s:i, s:i}", "status", status, "reasons",
                     reasons, "engine", engine, "version", clr_version(), "sandboxes", running,
                     "running_execs", atomic_load(&svc->running_execs), "removals_pending",
                     (int)pending);
    int rc = strcmp(status, "ok") == 0 ? 0 : -1;
    /* A warning, not a failure: the log still takes records, but will not for long. Only for
     * callers who see it (the anonymous are told the status word): no directory listing at the
     * rate of whoever reaches the port. */
    if (!fresh)
        return rc;
    clr_audit_disk_status ds;
    clr_error derr = CLR_ERROR_INIT;
    if (clr_audit_disk(svc->audit, &ds, &derr) == 0)
        json_object_set_new(*out, "audit",
                            json_pack("{s:I, s:I, s:I, s:o}", "bytes", (json_int_t)ds.bytes,
                                      "free_bytes", (json_int_t)ds.free_bytes, "disk_budget",
                                      (json_int_t)ds.budget, "warning",
                                      ds.warning ? json_string(ds.reason) : json_null()));
    else
        json_object_set_new(*out, "audit", json_pack("{s:s}", "warning", derr.message));
    return rc;
}

struct text {
    char *buf;
    size_t len, cap;
};

static void emit(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (t->buf && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b)
            return;
        t->buf = b;
        t->cap = cap;
    }
}

static void emit_histogram(struct text *t, const char *name, const char *help,
                           struct histogram *h)
{
    emit(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&h->counts[i]);
        emit(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, svc_bucket_le(i), cum);
    }
    cum += atomic_load(&h->counts[NBUCKETS]);
    emit(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    emit(t, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
         (double)atomic_load(&h->total_us) / 1e6, name, (uint64_t)atomic_load(&h->n));
}

/* The per-tenant gauges: of one tenant (only), or of every tenant with live sandboxes or a
 * quota (NULL). */
static void emit_tenants(clr_service *svc, struct text *t, const char *only)
{
    struct tenant_usage *v = NULL;
    size_t n = 0;
    clr_error lerr = CLR_ERROR_INIT;
    if (svc_usage_collect(svc, &v, &n, &lerr) < 0) {
        clr_log(CLR_LOG_WARN, "metrics.tenants_failed", "error", lerr.message, NULL);
        return;
    }
    /* A tenant with nothing live still gets its (zero) lines: the caller's own, and the
     * operator's view of every tenant with a quota. */
    if (only)
        svc_usage_entry(&v, &n, only);
    else
        for (size_t i = 0; i < svc->cfg.ntenants; i++)
            svc_usage_entry(&v, &n, svc->cfg.tenants[i].name);
    emit(t, "# HELP clearing_tenant_sandboxes Live sandboxes of a tenant (plans' included).\n"
            "# TYPE clearing_tenant_sandboxes gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (!only || strcmp(v[i].tenant, only) == 0)
            emit(t, "clearing_tenant_sandboxes{tenant=\"%s\"} %u\n", v[i].tenant, v[i].sandboxes);
    }
    emit(t, "# HELP clearing_tenant_memory_bytes Memory limits of a tenant's live sandboxes, "
            "summed.\n# TYPE clearing_tenant_memory_bytes gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (!only || strcmp(v[i].tenant, only) == 0)
            emit(t, "clearing_tenant_memory_bytes{tenant=\"%s\"} %" PRIu64 "\n", v[i].tenant,
                 v[i].memory_bytes);
    }
    emit(t, "# HELP clearing_tenant_cpus CPU limits of a tenant's live sandboxes, summed.\n"
            "# TYPE clearing_tenant_cpus gauge\n");
    for (size_t i = 0; i < n; i++) {
        if (!only || strcmp(v[i].tenant, only) == 0)
            emit(t, "clearing_tenant_cpus{tenant=\"%s\"} %" PRIu64 ".%03" PRIu64 "\n",
                 v[i].tenant, v[i].cpu_millis / 1000, v[i].cpu_millis % 1000);
    }
    free(v);
}

char *clr_service_metrics(clr_service *svc, const char *tenant)
{
    struct text t = {0};
    if (tenant) {
        /* A tenant learns its own figures, nothing of the daemon's or other tenants'. */
        emit_tenants(svc, &t, tenant);
        return t.buf ? t.buf : strdup("");
    }
    int running = 0;
    clr_store_count_running(svc->store, &running, NULL);
    emit(&t, "# HELP clearing_sandboxes Live sandboxes.\n# TYPE clearing_sandboxes gauge\n"
             "clearing_sandboxes{state=\"running\"} %d\n", running);
    emit(&t, "# HELP clearing_execs_running Commands running now.\n"
             "# TYPE clearing_execs_running gauge\nclearing_execs_running %d\n",
         atomic_load(&svc->running_execs));
#define COUNTER(name, help, field)                                                               \
    emit(&t, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %" PRIu64 "\n",        \
         (uint64_t)atomic_load(&svc->field))
    COUNTER("clearing_sandboxes_created_total", "Sandboxes created.", created);
    COUNTER("clearing_sandbox_create_failures_total", "Sandbox creations that failed.",
            create_failed);
    emit(&t, "# HELP clearing_sandboxes_destroyed_total Sandboxes destroyed, by reason.\n"
             "# TYPE clearing_sandboxes_destroyed_total counter\n"
             "clearing_sandboxes_destroyed_total{reason=\"client\"} %" PRIu64 "\n"
             "clearing_sandboxes_destroyed_total{reason=\"expired\"} %" PRIu64 "\n"
             "clearing_sandboxes_destroyed_total{reason=\"idle\"} %" PRIu64 "\n",
         (uint64_t)atomic_load(&svc->destroyed_client),
         (uint64_t)atomic_load(&svc->destroyed_expired),
         (uint64_t)atomic_load(&svc->destroyed_idle));
    COUNTER("clearing_sandboxes_lost_total", "Sandboxes whose container vanished.", lost);
    COUNTER("clearing_sandboxes_adopted_total", "Live sandboxes adopted after a restart.", adopted);
    COUNTER("clearing_orphans_removed_total", "Unknown containers of ours removed at start.",
            orphans_removed);
    COUNTER("clearing_execs_total", "Commands run.", execs);
    COUNTER("clearing_exec_timeouts_total", "Commands that timed out.", exec_timeouts);
    COUNTER("clearing_exec_ooms_total", "Commands that ran out of memory.", exec_ooms);
    COUNTER("clearing_exec_failures_total", "Commands that could not run or whose sandbox failed.",
            exec_failures);
    COUNTER("clearing_requests_refused_total", "Requests refused at capacity (429).", refused);
    COUNTER("clearing_pool_hits_total", "Creates served from the warm pool.", warm_hits);
    COUNTER("clearing_pool_misses_total", "Default-profile creates the pool could not serve.",
            warm_misses);
    emit(&t, "# HELP clearing_pool_ready Started sandboxes waiting in the warm pool.\n"
             "# TYPE clearing_pool_ready gauge\nclearing_pool_ready %u\n",
         svc->warm_ready);
    COUNTER("clearing_channel_execs_total", "Commands run over a live channel to the agent.",
            channel_execs);
    COUNTER("clearing_channel_results_replayed_total",
            "Results of commands that ended while the daemon was away, replayed by the agent.",
            channel_replayed);
    clr_audit_disk_status ds;
    if (clr_audit_disk(svc->audit, &ds, NULL) == 0)
        emit(&t, "# HELP clearing_audit_bytes Bytes of the audit log's files.\n"
                 "# TYPE clearing_audit_bytes gauge\nclearing_audit_bytes %" PRIu64 "\n"
                 "# HELP clearing_audit_disk_free_bytes Free bytes beside the audit log.\n"
                 "# TYPE clearing_audit_disk_free_bytes gauge\n"
                 "clearing_audit_disk_free_bytes %" PRIu64 "\n"
                 "# HELP clearing_audit_disk_budget_bytes audit_disk_budget (0: none).\n"
                 "# TYPE clearing_audit_disk_budget_bytes gauge\n"
                 "clearing_audit_disk_budget_bytes %" PRIu64 "\n"
                 "# HELP clearing_audit_disk_warning 1 when the audit log is near its disk "
                 "budget.\n# TYPE clearing_audit_disk_warning gauge\n"
                 "clearing_audit_disk_warning %d\n",
             ds.bytes, ds.free_bytes, ds.budget, ds.warning ? 1 : 0);
    emit(&t, "# HELP clearing_egress_connections_total Proxy connections, by decision.\n"
             "# TYPE clearing_egress_connections_total counter\n"
             "clearing_egress_connections_total{outcome=\"allowed\"} %" PRIu64 "\n"
             "clearing_egress_connections_total{outcome=\"denied\"} %" PRIu64 "\n",
         (uint64_t)atomic_load(&svc->egress.allowed), (uint64_t)atomic_load(&svc->egress.denied));
    emit(&t, "# HELP clearing_egress_bytes_total Bytes carried for proxy connections.\n"
             "# TYPE clearing_egress_bytes_total counter\n"
             "clearing_egress_bytes_total{direction=\"out\"} %" PRIu64 "\n"
             "clearing_egress_bytes_total{direction=\"in\"} %" PRIu64 "\n",
         (uint64_t)atomic_load(&svc->egress.bytes_out),
         (uint64_t)atomic_load(&svc->egress.bytes_in));
    COUNTER("clearing_sandboxes_removed_total",
            "Containers and workspaces of destroyed sandboxes removed.", removed);
    COUNTER("clearing_removal_failures_total",
            "Removal attempts that failed (retried; then resumed by reconcile or restart).",
            removal_failures);
    pthread_mutex_lock(&svc->rm_lock);
    unsigned pending = svc->rm_pending;
    pthread_mutex_unlock(&svc->rm_lock);
    emit(&t, "# HELP clearing_removals_pending Destroyed sandboxes whose removal is queued.\n"
             "# TYPE clearing_removals_pending gauge\nclearing_removals_pending %u\n",
         pending);
#undef COUNTER
    emit_histogram(&t, "clearing_create_seconds", "Sandbox creation latency.", &svc->h_create);
    emit_histogram(&t, "clearing_exec_seconds", "Command latency, end to end.", &svc->h_exec);
    emit_histogram(&t, "clearing_destroy_seconds",
                   "Sandbox destruction latency as the caller sees it (marked, recorded, queued).",
                   &svc->h_destroy);
    emit_histogram(&t, "clearing_removal_seconds",
                   "Background removal of a destroyed sandbox's container and workspace.",
                   &svc->h_remove);
    emit_tenants(svc, &t, NULL);
    return t.buf;
}
