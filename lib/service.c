/* The daemon's logic: durable sandboxes, exec records, reaper, crash recovery, metrics.
 *
 * Ordering rule: a row is written (and synced by SQLite) before the client hears of the thing it
 * records, and before the engine is asked to do anything the row would have to explain after a
 * crash. A sandbox row is inserted right after its container started; if the daemon dies between
 * the two, the container carries our owner label and is removed at the next start. */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>

#include "clearing/audit.h"
#include "clearing/files.h"
#include "clearing/gitws.h"
#include "clearing/repoadmit.h"
#include "clearing/verdict.h"
#include "clearing/plan.h"
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "clearing/service.h"
#include "clearing/store.h"
#include "internal.h"

#define ENGINE_POOL_MAX 16
#define NBUCKETS 13
static const double buckets[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                         1,     2.5,  5,     10,   30,  60};

struct histogram {
    atomic_uint_fast64_t counts[NBUCKETS + 1];
    atomic_uint_fast64_t total_us;
    atomic_uint_fast64_t n;
};

struct clr_service {
    clr_service_config cfg;
    char *state_dir, *db_path, *docker_host, *image, *insecure_runtime;
    char owner[128];
    clr_store *store;
    clr_verdict_key *verdict_key;

    pthread_mutex_t pool_lock;
    clr_engine *pool[ENGINE_POOL_MAX];
    int pool_n;

    pthread_mutex_t create_lock; /* serialises the capacity check with the insert */
    unsigned plans_pending;      /* plans admitted whose sandbox has no row yet (create_lock) */
    struct pending_plan *pending_plans; /* the same plans: their tenants and limits (create_lock) */
    atomic_int running_execs;

    pthread_t reaper;
    pthread_mutex_t reaper_lock;
    pthread_cond_t reaper_cond;
    bool stopping;
    bool reaper_started;
    /* The engine's event stream: a sandbox whose container dies is lost at once (the reaper's
     * reconcile is the backstop). */
    pthread_t watch_thread;
    bool watch_started;
    clr_engine_cancel *watch_cancel; /* ends its stream at once when the daemon stops */

    atomic_uint_fast64_t created, create_failed, destroyed_client, destroyed_expired,
        destroyed_idle, lost, adopted, orphans_removed, execs, exec_timeouts, exec_ooms,
        exec_failures, refused;
    struct histogram h_create, h_exec, h_destroy;
    struct proc *procs; /* background processes; guarded by procs_lock */
    clr_audit *audit;

    /* The warm pool: started, checked sandboxes of the default profile, handed out once each. */
    pthread_mutex_t warm_lock;
    pthread_cond_t warm_cond;
    struct warm *warm;
    unsigned warm_ready;
    uint64_t warm_taken_us; /* mono_us of the last hand-out (under warm_lock) */
    int lock_fd;            /* <state>/daemon.lock, flock()ed for the daemon's life; -1: none */
    pthread_t warm_thread;
    bool warm_started;
    atomic_uint_fast64_t warm_hits, warm_misses;

    /* Removal off the caller's path: destroyed sandboxes whose containers and workspaces the
     * remover thread has yet to remove. rm_current is the one being removed now. */
    pthread_mutex_t rm_lock;
    /* The engine's state as the last ping saw it (clr_service_health). */
    pthread_mutex_t health_lock;
    bool health_checked, health_ok;
    bool health_pinging; /* an anonymous caller's ping is under way */
    struct timespec health_at;
    char health_err[sizeof(((clr_error *)0)->message)];
    pthread_cond_t rm_cond, rm_done;
    struct removal *rm_head, *rm_tail;
    char rm_current[CLR_SANDBOX_ID_MAX + 1];
    unsigned rm_pending;
    bool rm_stopping, rm_started;
    pthread_t rm_thread;
    atomic_uint_fast64_t removed, removal_failures;
    struct histogram h_remove;

    /* Live channels: per sandbox, the opened sandbox and its agent's channel, so an exec is one
     * frame on an open stream (no engine round trip). */
    pthread_mutex_t live_lock;
    struct live_sb *live;
    atomic_uint_fast64_t channel_execs, channel_replayed;
    clr_egress_totals egress;
};

struct live_sb {
    clr_service *svc;
    char id[CLR_SANDBOX_ID_MAX + 1];
    clr_sandbox *sb;
    clr_channel *ch; /* NULL: its agent serves no channel (an older sandbox): docker exec */
    clr_egress *egress; /* its proxy's connections (over ch) */
    int refs;        /* guarded by live_lock */
    struct live_sb *next;
};

struct removal {
    char id[CLR_SANDBOX_ID_MAX + 1];
    char reason[32];
    unsigned attempts;
    struct removal *next;
};

#define REMOVAL_MAX_ATTEMPTS 5    /* then the next reconcile pass queues it again */
#define REMOVAL_DRAIN_TIMEOUT_S 30 /* at stop; what is left is resumed at the next start */

struct warm {
    clr_sandbox *sb;
    /* Its live channel, attached and answered while it waits (NULL: none could be had, the
     * first command attaches), so the first command of a pooled sandbox does not pay for it. */
    clr_channel *ch;
    int64_t made_at;
    struct warm *next;
};

#define WARM_MAX_AGE_S 1800 /* pooled sandboxes are remade after this, so none grows stale */

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
static void audit_failure(clr_service *svc, const char *actor, const char *sandbox,
                          const char *action, const clr_error *why)
{
    json_t *d = json_pack("{s:s, s:s}", "code", clr_error_code_name(why->code), "error",
                          why->message);
    const char *outcome = why->code == CLR_E_INVALID || why->code == CLR_E_LIMIT ||
                                  why->code == CLR_E_DENIED || why->code == CLR_E_UNAVAILABLE
                              ? "refused"
                              : "error";
    clr_error aerr = CLR_ERROR_INIT;
    if (clr_audit_append(svc->audit, actor, sandbox, action, outcome, d, &aerr) < 0)
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "action", action, "error", aerr.message,
                NULL);
    json_decref(d);
}

struct proc;
static void procs_stop(clr_service *svc);
static void live_drop(clr_service *svc, const char *id);
struct live_sb;
static int live_get(clr_service *svc, clr_engine *eng, const char *id, struct live_sb **out,
                    clr_error *err);
static int live_new(clr_service *svc, clr_engine *eng, const char *id, clr_sandbox *sb,
                    clr_channel *ch, struct live_sb **out, clr_error *err);
static void live_put(clr_service *svc, struct live_sb *lv);
static struct live_sb **live_find_locked(clr_service *svc, const char *id);
bool clr_service_sandbox_busy(clr_service *svc, const char *id);
int clr_service_proc_signal_num(clr_service *svc, const char *id, const char *proc_id, int sig,
                                const char *actor, clr_error *err);

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void observe(struct histogram *h, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < NBUCKETS && s > buckets[i])
        i++;
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->total_us, us);
    atomic_fetch_add(&h->n, 1);
}

/* ---- engines: one per concurrent caller, reused ---- */

static int engine_get(clr_service *svc, clr_engine **out, clr_error *err)
{
    pthread_mutex_lock(&svc->pool_lock);
    if (svc->pool_n > 0) {
        *out = svc->pool[--svc->pool_n];
        pthread_mutex_unlock(&svc->pool_lock);
        return 0;
    }
    pthread_mutex_unlock(&svc->pool_lock);
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = svc->docker_host;
    return clr_engine_open(out, &o, err);
}

/* broken: the engine failed mid-call; do not reuse its connection. */
static void engine_put(clr_service *svc, clr_engine *eng, bool broken)
{
    if (!eng)
        return;
    pthread_mutex_lock(&svc->pool_lock);
    if (!broken && svc->pool_n < ENGINE_POOL_MAX) {
        svc->pool[svc->pool_n++] = eng;
        eng = NULL;
    }
    pthread_mutex_unlock(&svc->pool_lock);
    clr_engine_free(eng);
}

/* ---- request validation ---- */

static int check_fields(json_t *obj, const char *what, const char *const *allowed, clr_error *err)
{
    if (!json_is_object(obj))
        return clr_error_set(err, CLR_E_INVALID, 0, "%s must be a JSON object", what);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            return clr_error_set(err, CLR_E_INVALID, 0, "%s: unknown field '%s'", what, key);
    }
    return 0;
}

/* A size given as a string ("512m") or as a whole number of bytes. */
static int json_size(json_t *v, const char *name, uint64_t *out, clr_error *err)
{
    if (json_is_string(v)) {
        if (clr_parse_size(out, json_string_value(v), err) < 0)
            return clr_error_prefix(err, "%s", name);
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    return clr_error_set(err, CLR_E_INVALID, 0,
                         "%s must be a size: a string such as \"512m\" or a number of bytes", name);
}

/* A duration given as a string ("30s", "500ms") or as a whole number of seconds. */
static int json_duration_ms(json_t *v, const char *name, uint64_t *out, clr_error *err)
{
    if (json_is_string(v)) {
        if (clr_parse_duration_ms(out, json_string_value(v), err) < 0)
            return clr_error_prefix(err, "%s", name);
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0 &&
        json_integer_value(v) <= (json_int_t)UINT32_MAX) {
        *out = (uint64_t)json_integer_value(v) * 1000;
        return 0;
    }
    return clr_error_set(err, CLR_E_INVALID, 0,
                         "%s must be a duration: a string such as \"30s\" or a number of seconds",
                         name);
}

static int json_uint(json_t *v, const char *name, uint64_t max, uint64_t *out, clr_error *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "%s must be a whole number between 0 and %" PRIu64, name, max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_limits(json_t *o, clr_limits *l, clr_error *err)
{
    static const char *const fields[] = {"cpus",   "memory",         "pids",
                                         "lifetime", "tmp_size",     "workspace_size",
                                         "workspace_inodes", "nofile", "file_size", NULL};
    if (check_fields(o, "limits", fields, err) < 0)
        return -1;
    json_t *v;
    uint64_t n;
    if ((v = json_object_get(o, "cpus"))) {
        if (json_is_string(v)) {
            if (clr_parse_cpus(&l->cpu_millis, json_string_value(v), err) < 0)
                return clr_error_prefix(err, "limits.cpus");
        } else if (json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) <= 1e6) {
            double m = json_number_value(v) * 1000.0;
            if (fabs(m - round(m)) > 1e-6)
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "limits.cpus: at most three decimals");
            l->cpu_millis = (uint32_t)llround(m);
        } else {
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "limits.cpus must be a number of cores such as 0.5 or \"2\"");
        }
    }
    if ((v = json_object_get(o, "memory")) && json_size(v, "limits.memory", &l->memory_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "tmp_size")) && json_size(v, "limits.tmp_size", &l->tmp_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "workspace_size")) &&
        json_size(v, "limits.workspace_size", &l->workspace_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "file_size")) &&
        json_size(v, "limits.file_size", &l->fsize_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "lifetime"))) {
        if (json_duration_ms(v, "limits.lifetime", &n, err) < 0)
            return -1;
        if (n % 1000 || n / 1000 > UINT32_MAX)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "limits.lifetime must be a whole number of seconds");
        l->lifetime_s = (uint32_t)(n / 1000);
    }
    if ((v = json_object_get(o, "pids"))) {
        if (json_uint(v, "limits.pids", UINT32_MAX, &n, err) < 0)
            return -1;
        l->pids = (uint32_t)n;
    }
    if ((v = json_object_get(o, "nofile"))) {
        if (json_uint(v, "limits.nofile", UINT32_MAX, &n, err) < 0)
            return -1;
        l->nofile = (uint32_t)n;
    }
    if ((v = json_object_get(o, "workspace_inodes")) &&
        json_uint(v, "limits.workspace_inodes", UINT64_MAX / 2, &l->workspace_inodes, err) < 0)
        return -1;
    return clr_limits_validate(l, err);
}

/* {"KEY": "VALUE"} -> NULL-terminated "KEY=VALUE" array (caller frees with free_strv). */
static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static int env_from_json(json_t *o, char ***out, clr_error *err)
{
    *out = NULL;
    if (!o)
        return 0;
    if (!json_is_object(o))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "env must be an object of strings: {\"NAME\": \"value\"}");
    if (json_object_size(o) > 1024)
        return clr_error_set(err, CLR_E_LIMIT, 0, "env: more than 1024 variables");
    char **v = calloc(json_object_size(o) + 1, sizeof(char *));
    if (!v)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        const char *s = json_string_value(val);
        bool name_ok = *key && !strchr(key, '=') && strlen(key) < 1024;
        if (!s || !name_ok || memchr(s, '\0', json_string_length(val))) {
            free_strv(v);
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "env: '%.100s' must be a name without '=' with a string value",
                                 key);
        }
        if (asprintf(&v[i], "%s=%s", key, s) < 0) {
            v[i] = NULL;
            free_strv(v);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
        i++;
    }
    *out = v;
    return 0;
}

static json_t *sandbox_json(const clr_store_sandbox *s)
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

/* ---- lifecycle ---- */

static const char *const default_allowed_images[] = {CLR_SERVICE_DEFAULT_ALLOWED_IMAGES, NULL};

static const char *const *allowed_images(const clr_service *svc)
{
    return svc->cfg.allowed_images ? svc->cfg.allowed_images : default_allowed_images;
}

/* The patterns of allowed_images as one string for messages and the log. */
static void allowed_images_text(const clr_service *svc, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (const char *const *p = allowed_images(svc); *p && at < len; p++) {
        int n = snprintf(buf + at, len - at, "%s%s", at ? ", " : "", *p);
        if (n < 0)
            break;
        at += (size_t)n;
    }
}

/* Only images the operator allowed: a client's image is code and a filesystem the operator never
 * looked at (setuid helpers, a VOLUME, whatever its entrypoint would do under another runtime). */
static int image_allowed(const clr_service *svc, const char *image, clr_error *err)
{
    if (!image)
        image = svc->image ? svc->image : CLR_DEFAULT_IMAGE;
    for (const char *const *p = allowed_images(svc); *p; p++) {
        if (fnmatch(*p, image, 0) == 0)
            return 0;
    }
    char list[512];
    allowed_images_text(svc, list, sizeof(list));
    return clr_error_set(err, CLR_E_DENIED, 0,
                         "image '%.255s' is not allowed: the operator's allowed_images setting "
                         "(%s) lists the images sandboxes may use; use one of those or ask the "
                         "operator to allow it",
                         image, list);
}

/* Takes a pooled sandbox out of service: its channel (NULL: none) closed, its container and
 * workspace removed. */
static void warm_discard(clr_service *svc, clr_sandbox *sb, clr_channel *ch, const char *why)
{
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    clr_channel_close(ch);
    if (engine_get(svc, &eng, &err) == 0)
        clr_sandbox_destroy(eng, clr_sandbox_get_info(sb)->id, why, svc->state_dir, &err);
    engine_put(svc, eng, false);
    clr_sandbox_free(sb);
}

/* Makes one pooled sandbox, attaches its live channel, and checks that its agent answers a
 * command over it before it may be handed out. */
static struct warm *warm_make(clr_service *svc)
{
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.limits = svc->cfg.limits;
    o.state_dir = svc->state_dir;
    o.insecure_runtime = svc->insecure_runtime;
    o.owner = svc->owner;
    /* Its labels must outlive the time it waits in the pool plus a full lifetime after. */
    o.max_lifetime_s = svc->cfg.max_lifetime_s + WARM_MAX_AGE_S;
    o.image = svc->image;
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    struct warm *w = calloc(1, sizeof(*w));
    if (!w || engine_get(svc, &eng, &err) < 0 || clr_sandbox_create(&w->sb, eng, &o, &err) < 0) {
        engine_put(svc, eng, true);
        clr_log(CLR_LOG_WARN, "pool.create_failed", "error", w ? err.message : "out of memory",
                NULL);
        free(w);
        return NULL;
    }
    /* No hooks yet: nothing runs in it but the check below until it has a record. */
    clr_error cerr = CLR_ERROR_INIT;
    if (clr_channel_open(&w->ch, eng, w->sb, NULL, &cerr) < 0) {
        w->ch = NULL;
        clr_log(CLR_LOG_WARN, "pool.channel_unavailable", "id", clr_sandbox_get_info(w->sb)->id,
                "error", cerr.message, NULL);
    }
    const char *argv[] = {"true", NULL};
    clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
    eo.argv = argv;
    eo.limits.timeout_ms = 10000;
    eo.channel = w->ch;
    clr_exec_result r;
    bool ready = clr_exec_run(&r, eng, w->sb, &eo, &err) == 0 && r.status == CLR_EXEC_EXITED &&
                 r.exit_code == 0;
    if (ready || err.code == CLR_E_NONE)
        clr_exec_result_clear(&r);
    engine_put(svc, eng, false);
    if (!ready) {
        clr_log(CLR_LOG_WARN, "pool.not_ready", "id", clr_sandbox_get_info(w->sb)->id, NULL);
        warm_discard(svc, w->sb, w->ch, "pool-not-ready");
        free(w);
        return NULL;
    }
    w->made_at = now_s();
    return w;
}

#define REFILL_QUIET_MS 500 /* no refill before a hand-out is this old */

static void *warm_main(void *p)
{
    clr_service *svc = p;
    pthread_mutex_lock(&svc->warm_lock);
    while (!svc->stopping) {
        /* Remake the oldest when it is too old; fill up to the size. */
        struct warm **pp = &svc->warm;
        while (*pp && (*pp)->next)
            pp = &(*pp)->next;
        if (*pp && now_s() - (*pp)->made_at > WARM_MAX_AGE_S) {
            struct warm *old = *pp;
            *pp = NULL;
            svc->warm_ready--;
            pthread_mutex_unlock(&svc->warm_lock);
            warm_discard(svc, old->sb, old->ch, "pool-recycled");
            free(old);
            pthread_mutex_lock(&svc->warm_lock);
            continue;
        }
        /* A refill right after a hand-out would start a container (hundreds of milliseconds of
         * dockerd, containerd and runsc on every core) under the first commands of the sandbox
         * just handed out, which is what the pool is there to make fast: it waits until the
         * hand-out is REFILL_QUIET_MS old. */
        uint64_t since = mono_us() - svc->warm_taken_us;
        if (svc->warm_ready < svc->cfg.pool_size && svc->warm_taken_us &&
            since < REFILL_QUIET_MS * 1000) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (REFILL_QUIET_MS * 1000 - since) * 1000;
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&svc->warm_cond, &svc->warm_lock, &ts);
            continue;
        }
        if (svc->warm_ready < svc->cfg.pool_size) {
            pthread_mutex_unlock(&svc->warm_lock);
            struct warm *w = warm_make(svc);
            pthread_mutex_lock(&svc->warm_lock);
            if (w) {
                w->next = svc->warm;
                svc->warm = w;
                svc->warm_ready++;
                continue;
            }
        }
        /* Full, or creating failed: wait for a hand-out or retry in a while. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        pthread_cond_timedwait(&svc->warm_cond, &svc->warm_lock, &ts);
    }
    pthread_mutex_unlock(&svc->warm_lock);
    return NULL;
}

/* Takes a pooled sandbox (and its open channel, or NULL), or NULL when the pool is empty. */
static clr_sandbox *warm_take(clr_service *svc, clr_channel **ch)
{
    pthread_mutex_lock(&svc->warm_lock);
    struct warm *w = svc->warm;
    if (w) {
        svc->warm = w->next;
        svc->warm_ready--;
        svc->warm_taken_us = mono_us();
    }
    pthread_cond_signal(&svc->warm_cond);
    pthread_mutex_unlock(&svc->warm_lock);
    clr_sandbox *sb = w ? w->sb : NULL;
    *ch = w ? w->ch : NULL;
    free(w);
    atomic_fetch_add(sb ? &svc->warm_hits : &svc->warm_misses, 1);
    return sb;
}

/* The checks of a create request that need no daemon state: its fields, image, limits (over the
 * defaults in o->limits), idle timeout (over the default in *idle_ms), metadata, env and the
 * shape of repo. *repo_path is the repository asked for (NULL: none), still to be checked
 * against repo_roots. On success *env is the caller's (free_strv). */
static int parse_create(json_t *req, clr_sandbox_options *o, uint64_t *idle_ms,
                        const char **repo_path, char ***env, clr_error *err)
{
    static const char *const fields[] = {"image", "limits", "idle_timeout", "env", "metadata",
                                         "repo", "egress", NULL};
    *repo_path = NULL;
    *env = NULL;
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *v;
    if ((v = json_object_get(req, "image"))) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 255)
            return clr_error_set(err, CLR_E_INVALID, 0, "image must be a non-empty string");
        o->image = json_string_value(v);
    }
    if ((v = json_object_get(req, "limits")) && parse_limits(v, &o->limits, err) < 0)
        return -1;
    if ((v = json_object_get(req, "idle_timeout"))) {
        if (json_duration_ms(v, "idle_timeout", idle_ms, err) < 0)
            return -1;
        if (*idle_ms % 1000 || (*idle_ms != 0 && (*idle_ms < 10000 || *idle_ms > 86400000)))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "idle_timeout must be 0 (none) or whole seconds in 10s..24h");
    }
    json_t *meta = json_object_get(req, "metadata");
    if (meta) {
        if (!json_is_object(meta) || json_object_size(meta) > 64)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "metadata must be an object of at most 64 strings");
        const char *k;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v) || strlen(k) > 128 || json_string_length(v) > 1024)
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "metadata '%.100s' must be a string (keys up to 128 bytes, "
                                     "values up to 1024)",
                                     k);
        }
    }
    json_t *repo = json_object_get(req, "repo");
    if (repo) {
        static const char *const rfields[] = {"path", "base", "branch", "reuse_branch", NULL};
        if (check_fields(repo, "repo", rfields, err) < 0)
            return -1;
        const char *path = json_string_value(json_object_get(repo, "path"));
        json_t *base = json_object_get(repo, "base"), *branch = json_object_get(repo, "branch"),
               *reuse = json_object_get(repo, "reuse_branch");
        if (!path || (base && !json_is_string(base)) || (branch && !json_is_string(branch)) ||
            (reuse && !json_is_boolean(reuse)))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "repo needs path (string); base and branch are strings, "
                                 "reuse_branch a boolean");
        *repo_path = path;
        o->base_ref = json_string_value(base);
        o->branch = json_string_value(branch);
        o->reuse_branch = json_is_true(reuse);
    }
    if (env_from_json(json_object_get(req, "env"), env, err) < 0)
        return -1;
    o->env = (const char *const *)*env;
    return 0;
}

/* Commands of a sandbox whose policy allows anything find the agent's proxy through these. */
static int add_proxy_env(char ***env)
{
    size_t n = 0;
    while (*env && (*env)[n])
        n++;
    char **v = realloc(*env, (n + CLR_EGRESS_PROXY_ENV_N + 1) * sizeof(char *));
    if (!v)
        return -1;
    for (size_t i = 0; i < CLR_EGRESS_PROXY_ENV_N; i++)
        v[n + i] = strdup(clr_egress_proxy_env[i]);
    v[n + CLR_EGRESS_PROXY_ENV_N] = NULL;
    *env = v;
    return 0;
}

static int create_with(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       const clr_egress_policy *egress, json_t **out, clr_error *err);

/* ---- tenants ---- */

/* A plan admitted whose sandbox has no row yet: what it will hold of its tenant's quota. */
struct pending_plan {
    char tenant[CLR_TENANT_MAX + 1];
    clr_limits limits;
    struct pending_plan *next;
};

/* What one tenant's live sandboxes (running and plans') hold. */
struct tenant_usage {
    char tenant[CLR_TENANT_MAX + 1];
    unsigned sandboxes;
    uint64_t memory_bytes;
    uint64_t cpu_millis;
};

static const char *tenant_or_default(const char *tenant)
{
    return tenant && *tenant ? tenant : CLR_TENANT_DEFAULT;
}

static const clr_tenant_quota *tenant_quota(const clr_service *svc, const char *tenant)
{
    for (size_t i = 0; i < svc->cfg.ntenants; i++) {
        if (strcmp(svc->cfg.tenants[i].name, tenant) == 0)
            return &svc->cfg.tenants[i];
    }
    return NULL;
}

static struct tenant_usage *usage_entry(struct tenant_usage **v, size_t *n, const char *tenant)
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
        struct tenant_usage *u = rc == 0 ? usage_entry(v, n, tenant_or_default(rows[i].info.tenant))
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
static int usage_collect(clr_service *svc, struct tenant_usage **v, size_t *n, clr_error *err)
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
    if (usage_collect(svc, &v, &n, err) < 0)
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

int clr_service_sandbox_of(clr_service *svc, const char *id, const char *tenant,
                           clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    bool theirs = !tenant || strcmp(tenant_or_default(row.info.tenant), tenant) == 0;
    clr_store_sandbox_clear(&row);
    if (theirs)
        return 0;
    /* Word for word what clr_store_sandbox_get() says of an id it has no row for. */
    return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id);
}

/* Room for one more sandbox: the live rows (sandboxes and plans') and the plans admitted whose
 * sandbox is still being made, against max_sandboxes, then against the tenant's quota.
 * create_lock held, so the count and the insert (or the plan's admission) are one step. */
static int sandbox_room_locked(clr_service *svc, const char *tenant, const clr_limits *want,
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

static int create_with(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       const clr_egress_policy *egress, json_t **out, clr_error *err)
{
    uint64_t t0 = mono_us();
    tenant = tenant_or_default(tenant);
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
    if (parse_create(req, &o, &idle_ms, &repo_path, &env, err) < 0)
        return -1;
    if (image_allowed(svc, o.image, err) < 0) {
        free_strv(env);
        return -1;
    }
    if (egress && egress->n) {
        if (add_proxy_env(&env) < 0) {
            free_strv(env);
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
            free_strv(env);
            return -1;
        }
        o.repo_path = admitted.path;
        o.repo_id = &admitted.id;
    }
    pthread_mutex_lock(&svc->create_lock);
    if (sandbox_room_locked(svc, tenant, &o.limits, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        free_strv(env);
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
        sb = warm_take(svc, &ch);
    int rc = engine_get(svc, &eng, err);
    if (rc == 0 && !sb)
        rc = clr_sandbox_create(&sb, eng, &o, err);
    if (rc < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        engine_put(svc, eng, true);
        free_strv(env);
        atomic_fetch_add(&svc->create_failed, 1);
        /* Pooled, but no engine handle to record it with: it goes (recovery or gc removes
         * the container if this cannot). */
        if (sb)
            warm_discard(svc, sb, ch, "pool-unrecorded");
        return -1;
    }
    clr_store_sandbox row;
    memset(&row, 0, sizeof(row));
    row.info = *clr_sandbox_get_info(sb);
    /* A pooled sandbox's life starts when it is handed out. */
    row.info.created_at = now_s();
    row.info.expires_at = row.info.created_at + o.limits.lifetime_s;
    snprintf(row.info.state, sizeof(row.info.state), CLR_STATE_RUNNING);
    row.max_expires_at = row.info.max_expires_at;
    row.idle_timeout_s = (uint32_t)(idle_ms / 1000);
    row.last_active_at = now_s();
    row.metadata = meta ? json_incref(meta) : json_object();
    row.env = json_array();
    for (char **e = env; e && *e; e++)
        json_array_append_new(row.env, json_string(*e));
    free_strv(env);
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
        engine_put(svc, eng, false);
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
                                    now_s(), &derr);
        clr_sandbox_free(sb);
        clr_store_sandbox_clear(&row);
        engine_put(svc, eng, false);
        return -1;
    }
    if (ch) {
        /* A pooled sandbox brings its attached channel: its first command does not attach. */
        struct live_sb *lv = NULL;
        clr_error lerr = CLR_ERROR_INIT;
        if (live_new(svc, eng, row.info.id, sb, ch, &lv, &lerr) == 0)
            live_put(svc, lv);
        else
            clr_log(CLR_LOG_WARN, "pool.channel_lost", "id", row.info.id, "error", lerr.message,
                    NULL);
    } else {
        clr_sandbox_free(sb);
    }
    engine_put(svc, eng, false);
    atomic_fetch_add(&svc->created, 1);
    observe(&svc->h_create, mono_us() - t0);
    clr_log(CLR_LOG_INFO, "service.created", "id", row.info.id, "actor", actor, NULL);
    *out = sandbox_json(&row);
    if (jpolicy)
        json_object_set_new(*out, "egress", jpolicy);
    clr_store_sandbox_clear(&row);
    if (egress && egress->n) {
        /* The proxy inside listens once a host attached: attach now, not at the first exec. */
        struct live_sb *lv = NULL;
        clr_engine *leng = NULL;
        clr_error lerr = CLR_ERROR_INIT;
        if (engine_get(svc, &leng, &lerr) == 0 &&
            live_get(svc, leng, json_string_value(json_object_get(*out, "id")), &lv, &lerr) == 0)
            live_put(svc, lv);
        engine_put(svc, leng, false);
    }
    return 0;
}

int clr_service_create(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                       json_t **out, clr_error *err)
{
    int rc = create_impl(svc, req, tenant, actor, out, err);
    if (rc < 0)
        audit_failure(svc, actor, NULL, "sandbox.create", err);
    return rc;
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
        bool theirs = !tenant || strcmp(tenant_or_default(rows[i].info.tenant), tenant) == 0;
        if (theirs && (!want || (have && strcmp(have, want) == 0)))
            json_array_append_new(a, sandbox_json(&rows[i]));
        clr_store_sandbox_clear(&rows[i]);
    }
    free(rows);
    *out = json_pack("{s:o}", "sandboxes", a);
    return 0;
}

static int valid_id(const char *id, clr_error *err)
{
    if (!clr_sandbox_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%.64s' is not a sandbox id (expected sb- and 16 hex digits)", id);
    return 0;
}

int clr_service_get(clr_service *svc, const char *id, json_t **out, clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    *out = sandbox_json(&row);
    clr_store_sandbox_clear(&row);
    json_t *egress = NULL;
    if (clr_store_sandbox_get_egress(svc->store, id, &egress, NULL) == 0 && egress)
        json_object_set_new(*out, "egress", egress);
    return 0;
}

/* The database's state of the sandbox (a CLR_STATE_*) and why it left running ("" while it
 * runs); -1 when it has no row for it (404). */
static int row_state(clr_service *svc, const char *id, char state[32], char reason[CLR_STORE_REASON_MAX + 1],
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

/* Whether the database has the sandbox as running; -1 when it has no row for it (404). */
static int row_running(clr_service *svc, const char *id, bool *running, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (row_state(svc, id, state, reason, err) < 0)
        return -1;
    *running = strcmp(state, CLR_STATE_RUNNING) == 0;
    return 0;
}

/* The 409 for a sandbox that is not running: a lost one names its cause, and that its files
 * can still be read. */
static int not_running(clr_error *err, const char *id, const char *state, const char *reason)
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
static int require_running(clr_service *svc, const char *id, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (valid_id(id, err) < 0 || row_state(svc, id, state, reason, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_RUNNING) != 0)
        return not_running(err, id, state, reason);
    return 0;
}

/* A valid id of a sandbox whose workspace may be read: a running one, or a lost one (its
 * workspace is kept until it is destroyed, so that what it wrote before it died can be
 * fetched). */
static int require_readable(clr_service *svc, const char *id, clr_error *err)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (valid_id(id, err) < 0 || row_state(svc, id, state, reason, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_RUNNING) != 0 && strcmp(state, CLR_STATE_LOST) != 0)
        return not_running(err, id, state, reason);
    return 0;
}

int clr_service_egress(clr_service *svc, const char *id, json_t *req, const char *actor,
                       json_t **out, clr_error *err)
{
    if (require_running(svc, id, err) < 0)
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
        struct live_sb *lv = *live_find_locked(svc, id);
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
        audit_failure(svc, actor, id, "sandbox.egress", err);
        return -1;
    }
    return clr_service_get(svc, id, out, err);
}

int clr_service_workspace(clr_service *svc, const char *id, char *out, size_t len,
                          clr_error *err)
{
    if (require_running(svc, id, err) < 0)
        return -1;
    if (clr_workspace_path(out, len, svc->state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, ENAMETOOLONG, "workspace path too long");
    clr_store_sandbox_touch(svc->store, id, now_s(), NULL);
    return 0;
}

/* The workspace of a running or lost sandbox, for reading. */
static int workspace_to_read(clr_service *svc, const char *id, char *out, size_t len,
                             clr_error *err)
{
    if (require_readable(svc, id, err) < 0)
        return -1;
    if (clr_workspace_path(out, len, svc->state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, ENAMETOOLONG, "workspace path too long");
    clr_store_sandbox_touch(svc->store, id, now_s(), NULL);
    return 0;
}

/* {"by": "10m"} -> *ms, a positive whole number of seconds. */
static int parse_extend(json_t *req, uint64_t *ms, clr_error *err)
{
    static const char *const fields[] = {"by", NULL};
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *by = json_object_get(req, "by");
    if (!by)
        return clr_error_set(err, CLR_E_INVALID, 0, "give \"by\": how much longer, e.g. \"10m\"");
    if (json_duration_ms(by, "by", ms, err) < 0)
        return -1;
    if (*ms % 1000 || *ms == 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "by must be a positive whole number of seconds");
    return 0;
}

int clr_service_extend(clr_service *svc, const char *id, json_t *req, json_t **out,
                       clr_error *err)
{
    uint64_t ms = 0;
    if (valid_id(id, err) < 0 || parse_extend(req, &ms, err) < 0)
        return -1;
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    if (strcmp(row.info.state, CLR_STATE_RUNNING) != 0) {
        if (strcmp(row.info.state, CLR_STATE_PLAN) == 0)
            not_running(err, id, row.info.state, row.destroy_reason);
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

static bool removal_queued_locked(clr_service *svc, const char *id)
{
    if (strcmp(svc->rm_current, id) == 0)
        return true;
    for (struct removal *r = svc->rm_head; r; r = r->next) {
        if (strcmp(r->id, id) == 0)
            return true;
    }
    return false;
}

static void removal_append_locked(clr_service *svc, struct removal *r)
{
    r->next = NULL;
    if (svc->rm_tail)
        svc->rm_tail->next = r;
    else
        svc->rm_head = r;
    svc->rm_tail = r;
}

/* Queues the removal of a destroyed sandbox's container and workspace; false when it is already
 * queued. Without a remover thread (not started yet, or stopping) the caller removes it. */
static bool removal_queue(clr_service *svc, const char *id, const char *reason, unsigned attempts)
{
    struct removal *r = calloc(1, sizeof(*r));
    if (!r)
        return false;
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
    r->attempts = attempts;
    pthread_mutex_lock(&svc->rm_lock);
    bool ok = svc->rm_started && !svc->rm_stopping && !removal_queued_locked(svc, id);
    if (ok) {
        removal_append_locked(svc, r);
        svc->rm_pending++;
        pthread_cond_signal(&svc->rm_cond);
    }
    pthread_mutex_unlock(&svc->rm_lock);
    if (!ok)
        free(r);
    return ok;
}

/* Removes one sandbox's container and workspace now. */
static int remove_now(clr_service *svc, const char *id, const char *reason, clr_error *err)
{
    uint64_t t0 = mono_us();
    clr_engine *eng = NULL;
    if (engine_get(svc, &eng, err) < 0)
        return -1;
    int rc = clr_sandbox_destroy(eng, id, reason, svc->state_dir, err);
    engine_put(svc, eng, rc < 0);
    if (rc == 0) {
        observe(&svc->h_remove, mono_us() - t0);
        atomic_fetch_add(&svc->removed, 1);
    } else {
        atomic_fetch_add(&svc->removal_failures, 1);
    }
    return rc;
}

static void *remover_main(void *p)
{
    clr_service *svc = p;
    pthread_mutex_lock(&svc->rm_lock);
    for (;;) {
        while (!svc->rm_head && !svc->rm_stopping)
            pthread_cond_wait(&svc->rm_cond, &svc->rm_lock);
        if (!svc->rm_head)
            break; /* stopping, and nothing left */
        struct removal *r = svc->rm_head;
        svc->rm_head = r->next;
        if (!svc->rm_head)
            svc->rm_tail = NULL;
        snprintf(svc->rm_current, sizeof(svc->rm_current), "%s", r->id);
        pthread_mutex_unlock(&svc->rm_lock);

        clr_error err = CLR_ERROR_INIT;
        bool done = remove_now(svc, r->id, r->reason, &err) == 0;
        if (!done)
            clr_log(CLR_LOG_WARN, "sandbox.removal_failed", "id", r->id, "attempt",
                    r->attempts + 1 >= REMOVAL_MAX_ATTEMPTS ? "last" : "retrying", "error",
                    err.message, NULL);

        pthread_mutex_lock(&svc->rm_lock);
        svc->rm_current[0] = '\0';
        if (!done && ++r->attempts < REMOVAL_MAX_ATTEMPTS && !svc->rm_stopping) {
            /* Back off (the engine may be restarting), then retry from the tail. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)r->attempts;
            pthread_cond_timedwait(&svc->rm_cond, &svc->rm_lock, &ts);
            removal_append_locked(svc, r);
        } else {
            svc->rm_pending--;
            free(r);
        }
        pthread_cond_broadcast(&svc->rm_done);
    }
    pthread_mutex_unlock(&svc->rm_lock);
    return NULL;
}

int clr_service_await_removal(clr_service *svc, const char *id, unsigned timeout_ms,
                              clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    int rc = 0;
    pthread_mutex_lock(&svc->rm_lock);
    while (removal_queued_locked(svc, id)) {
        if (pthread_cond_timedwait(&svc->rm_done, &svc->rm_lock, &ts) == ETIMEDOUT) {
            rc = removal_queued_locked(svc, id) ? -1 : 0;
            break;
        }
    }
    pthread_mutex_unlock(&svc->rm_lock);
    if (rc < 0)
        return clr_error_set(err, CLR_E_TIMEOUT, 0,
                             "sandbox %s is destroyed but its container was not removed within "
                             "%u ms (the engine may be slow or down): removal continues in the "
                             "background",
                             id, timeout_ms);
    return 0;
}

/* Destroy for the caller: recorded, then marked destroyed (no command, file or commit reaches
 * it from now on); its container and workspace are removed by the remover thread, off the
 * caller's path. The record comes first: when the audit log cannot be written, nothing is
 * destroyed (the client gets 503, the reaper tries again at its next pass). */
static int destroy_locked(clr_service *svc, const char *id, const char *reason, const char *actor,
                          clr_error *err)
{
    uint64_t t0 = mono_us();
    json_t *d = json_pack("{s:s}", "reason", reason);
    int arc = clr_audit_append(svc->audit, actor, id, "sandbox.destroy", "ok", d, err);
    json_decref(d);
    if (arc < 0)
        return -1;
    /* Recorded but not marked (the database failed): the sandbox still runs, and the caller's
     * failure record (clr_service_destroy) follows this one in the log. */
    if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, reason, now_s(), err) < 0)
        return -1;
    live_drop(svc, id);
    if (!removal_queue(svc, id, reason, 0)) {
        clr_error rerr = CLR_ERROR_INIT;
        if (remove_now(svc, id, reason, &rerr) < 0)
            clr_log(CLR_LOG_WARN, "sandbox.removal_failed", "id", id, "error", rerr.message,
                    NULL);
    }
    observe(&svc->h_destroy, mono_us() - t0);
    if (strcmp(reason, "expired") == 0)
        atomic_fetch_add(&svc->destroyed_expired, 1);
    else if (strcmp(reason, "idle") == 0)
        atomic_fetch_add(&svc->destroyed_idle, 1);
    else
        atomic_fetch_add(&svc->destroyed_client, 1);
    return 0;
}

static int destroy_impl(clr_service *svc, const char *id, const char *reason, const char *actor,
                        clr_error *err);

int clr_service_destroy(clr_service *svc, const char *id, const char *reason, const char *actor,
                        clr_error *err)
{
    int rc = destroy_impl(svc, id, reason, actor, err);
    if (rc < 0)
        audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "sandbox.destroy", err);
    return rc;
}

static int destroy_impl(clr_service *svc, const char *id, const char *reason, const char *actor,
                        clr_error *err)
{
    char state[32], why[CLR_STORE_REASON_MAX + 1];
    if (valid_id(id, err) < 0 || row_state(svc, id, state, why, err) < 0)
        return -1;
    if (strcmp(state, CLR_STATE_PLAN) == 0)
        return not_running(err, id, state, why);
    /* A lost sandbox keeps its workspace and stopped container until it is destroyed. */
    if (strcmp(state, CLR_STATE_RUNNING) != 0 && strcmp(state, CLR_STATE_LOST) != 0)
        return 0; /* idempotent */
    int rc = destroy_locked(svc, id, reason, actor, err);
    if (rc == 0)
        clr_log(CLR_LOG_INFO, "service.destroyed", "id", id, "reason", reason, "actor", actor,
                NULL);
    return rc;
}

/* ---- live channels ---- */

/* The registry's link to the sandbox's entry (*result NULL: none). live_lock held. */
static struct live_sb **live_find_locked(clr_service *svc, const char *id)
{
    struct live_sb **pp = &svc->live;
    while (*pp && strcmp((*pp)->id, id) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void live_put(clr_service *svc, struct live_sb *lv)
{
    if (!lv)
        return;
    pthread_mutex_lock(&svc->live_lock);
    bool last = --lv->refs == 0;
    pthread_mutex_unlock(&svc->live_lock);
    if (last) {
        clr_channel_close(lv->ch); /* no NET frame arrives after this */
        clr_egress_free(lv->egress);
        clr_sandbox_free(lv->sb);
        free(lv);
    }
}

/* A result the agent replays after the daemon was away: it completes its exec record. */
static int live_on_result(void *ctx, clr_channel *ch, uint32_t chan_id,
                          const clr_exec_result *r)
{
    (void)ch;
    struct live_sb *lv = ctx;
    clr_service *svc = lv->svc;
    json_t *result = clr_exec_result_to_json(r);
    char exec_id[64] = "";
    clr_error err = CLR_ERROR_INIT;
    int found = clr_store_exec_finish_channel(svc->store, lv->id, chan_id, result, now_s(),
                                              exec_id, sizeof(exec_id), &err);
    json_decref(result);
    if (found < 0) {
        clr_log(CLR_LOG_WARN, "exec.replay_store_failed", "id", lv->id, "error", err.message,
                NULL);
        return -1; /* not acknowledged: the agent keeps it for the next attach */
    }
    if (found == 1) {
        atomic_fetch_add(&svc->channel_replayed, 1);
        json_t *ad = clr_audit_exec_result(r);
        json_object_set_new(ad, "exec_id", json_string(exec_id));
        json_object_set_new(ad, "replayed", json_true());
        if (clr_audit_append(svc->audit, "recovery", lv->id, "exec",
                             clr_exec_status_name(r->status), ad, &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", err.message, NULL);
        json_decref(ad);
        clr_log(CLR_LOG_INFO, "exec.result_replayed", "id", lv->id, "exec_id", exec_id, NULL);
    }
    return 0;
}

static void live_on_net(void *ctx, clr_channel *ch, uint8_t type, uint32_t id,
                        const uint8_t *payload, uint32_t len)
{
    struct live_sb *lv = ctx;
    clr_egress_on_frame(lv->egress, ch, type, id, payload, len);
}

/* After the replay of an open: records of commands the agent no longer knows are lost. */
static void live_on_channels(void *ctx, clr_channel *ch, const uint32_t *ids, size_t n)
{
    (void)ch;
    struct live_sb *lv = ctx;
    clr_error err = CLR_ERROR_INIT;
    clr_store_exec_mark_lost_sandbox(lv->svc->store, lv->id, ids, n, now_s(), &err);
}

/* The sandbox, opened, with its live channel when its agent serves one. *out holds a reference
 * (live_put). A channel that ended (dockerd restarted, the sandbox stopped) is opened again. */
/* The live state of a running sandbox, made from its handle and, when the caller has one, its
 * attached channel (a pooled sandbox's; NULL: attached here), both taken over whatever the
 * outcome, and registered. */
static int live_new(clr_service *svc, clr_engine *eng, const char *id, clr_sandbox *sb,
                    clr_channel *ch, struct live_sb **out, clr_error *err)
{
    struct live_sb *lv = calloc(1, sizeof(*lv));
    if (!lv) {
        clr_channel_close(ch);
        clr_sandbox_free(sb);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    lv->svc = svc;
    snprintf(lv->id, sizeof(lv->id), "%s", id);
    lv->refs = 2; /* the registry's and the caller's */
    lv->sb = sb;
    /* The sandbox's egress policy (none: every proxy connection is refused). */
    json_t *jpolicy = NULL;
    clr_egress_policy *policy = NULL;
    clr_error perr = CLR_ERROR_INIT;
    clr_store_sandbox_get_egress(svc->store, id, &jpolicy, &perr);
    if (clr_egress_policy_parse(&policy, jpolicy, &perr) == 0) {
        lv->egress = clr_egress_new(policy, svc->audit, id, &svc->egress);
        clr_egress_policy_free(policy);
    }
    json_decref(jpolicy);
    if (!lv->egress) {
        clr_channel_close(ch);
        clr_sandbox_free(lv->sb);
        free(lv);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "sandbox %s: egress: %s", id,
                             perr.message[0] ? perr.message : "out of memory");
    }
    clr_channel_hooks hooks = {.ctx = lv, .on_result = live_on_result,
                               .on_channels = live_on_channels, .on_net = live_on_net};
    if (ch) {
        clr_channel_set_hooks(ch, &hooks);
        lv->ch = ch;
    } else {
        clr_error cerr = CLR_ERROR_INIT;
        if (clr_channel_open(&lv->ch, eng, lv->sb, &hooks, &cerr) < 0) {
            lv->ch = NULL;
            clr_log(CLR_LOG_WARN, "channel.unavailable", "id", id, "error", cerr.message,
                    "detail", "commands of this sandbox use docker exec", NULL);
        }
    }
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb *other = *live_find_locked(svc, id);
    if (other) {
        /* Another request opened it meanwhile: use that one. */
        other->refs++;
        pthread_mutex_unlock(&svc->live_lock);
        lv->refs = 1;
        live_put(svc, lv);
        *out = other;
        return 0;
    }
    lv->next = svc->live;
    svc->live = lv;
    pthread_mutex_unlock(&svc->live_lock);
    *out = lv;
    return 0;
}

static int live_get(clr_service *svc, clr_engine *eng, const char *id, struct live_sb **out,
                    clr_error *err)
{
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb **pp = live_find_locked(svc, id), *stale = *pp;
    if (stale && (!stale->ch || clr_channel_alive(stale->ch))) {
        stale->refs++;
        *out = stale;
        pthread_mutex_unlock(&svc->live_lock);
        return 0;
    }
    if (stale)
        *pp = stale->next; /* its channel ended: replaced below */
    pthread_mutex_unlock(&svc->live_lock);
    live_put(svc, stale);

    clr_sandbox *sb = NULL;
    if (clr_sandbox_open_at(&sb, eng, id, svc->state_dir, err) < 0)
        return -1;
    return live_new(svc, eng, id, sb, NULL, out, err);
}

/* The sandbox is gone for its callers: its channel closes (commands waiting on it end). */
static void live_drop(clr_service *svc, const char *id)
{
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb **pp = live_find_locked(svc, id), *lv = *pp;
    if (lv)
        *pp = lv->next;
    pthread_mutex_unlock(&svc->live_lock);
    live_put(svc, lv);
}

/* ---- exec ---- */

static int new_exec_id(char *out, size_t len)
{
    uint8_t r[8];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -1;
    snprintf(out, len, "ex-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
    return 0;
}

static char **strv_from_json(json_t *a, const char *name, size_t max, clr_error *err)
{
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > max) {
        clr_error_set(err, CLR_E_INVALID, 0, "%s must be a non-empty array of at most %zu strings",
                      name, max);
        return NULL;
    }
    char **v = calloc(json_array_size(a) + 1, sizeof(char *));
    if (!v) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        if (!json_is_string(e) || memchr(json_string_value(e), '\0', json_string_length(e))) {
            free_strv(v);
            clr_error_set(err, CLR_E_INVALID, 0, "%s[%zu] must be a string without NUL bytes",
                          name, i);
            return NULL;
        }
        v[i] = strdup(json_string_value(e));
    }
    return v;
}

struct stream_ctx {
    clr_service_event_cb cb;
    void *ctx;
};

static void on_output(void *p, clr_stream stream, const uint8_t *data, size_t len)
{
    struct stream_ctx *s = p;
    if (!s->cb)
        return;
    clr_buffer b = {(uint8_t *)data, len};
    clr_exec_result tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.out = b;
    json_t *j = clr_exec_result_to_json(&tmp);
    json_t *ev = json_pack("{s:s, s:O, s:O}", "event", stream == CLR_STDOUT ? "stdout" : "stderr",
                           "data", json_object_get(j, "stdout"), "encoding",
                           json_object_get(j, "stdout_encoding"));
    json_decref(j);
    s->cb(s->ctx, ev);
    json_decref(ev);
}

static int decode_base64(json_t *v, uint8_t **out, size_t *len, clr_error *err);

/* The parts of a command request shared by execs and background processes. */
struct command {
    clr_exec_options o;
    char **argv, **env, **all_env;
    uint8_t *stdin_buf;
};

static void command_clear(struct command *c)
{
    free_strv(c->argv);
    free_strv(c->env);
    free_strv(c->all_env);
    free(c->stdin_buf);
    memset(c, 0, sizeof(*c));
}

static int parse_command(struct command *c, json_t *req, clr_error *err)
{
    clr_exec_options init = CLR_EXEC_OPTIONS_INIT;
    memset(c, 0, sizeof(*c));
    c->o = init;
    clr_exec_options *o = &c->o;
    json_t *v;
    json_t *jargv = json_object_get(req, "argv"), *jshell = json_object_get(req, "shell");
    if (!!jargv == !!jshell)
        return clr_error_set(err, CLR_E_INVALID, 0, "give exactly one of argv or shell");
    if (jargv && !(c->argv = strv_from_json(jargv, "argv", 4096, err)))
        return -1;
    if (jshell) {
        if (!json_is_string(jshell) || json_string_length(jshell) == 0)
            return clr_error_set(err, CLR_E_INVALID, 0, "shell must be a non-empty string");
        o->shell = json_string_value(jshell);
    }
    o->argv = (const char *const *)c->argv;
    if (env_from_json(json_object_get(req, "env"), &c->env, err) < 0)
        return -1;
    o->env = (const char *const *)c->env;
    if ((v = json_object_get(req, "cwd"))) {
        if (!json_is_string(v) || json_string_value(v)[0] != '/')
            return clr_error_set(err, CLR_E_INVALID, 0, "cwd must be an absolute path");
        o->cwd = json_string_value(v);
    }
    if ((v = json_object_get(req, "stdin"))) {
        if (!json_is_string(v) || json_object_get(req, "stdin_base64"))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "stdin must be a string (or give stdin_base64, not both)");
        o->stdin_data = json_string_value(v);
        o->stdin_len = json_string_length(v);
    } else if ((v = json_object_get(req, "stdin_base64"))) {
        if (decode_base64(v, &c->stdin_buf, &o->stdin_len, err) < 0)
            return -1;
        o->stdin_data = c->stdin_buf;
    }
    uint64_t n;
    if ((v = json_object_get(req, "timeout"))) {
        if (json_duration_ms(v, "timeout", &n, err) < 0)
            return -1;
        if (n == 0 || n > UINT32_MAX)
            return clr_error_set(err, CLR_E_INVALID, 0, "timeout must be between 1ms and 24h");
        o->limits.timeout_ms = (uint32_t)n;
    }
    if ((v = json_object_get(req, "stdout_cap")) &&
        json_size(v, "stdout_cap", &o->limits.stdout_cap, err) < 0)
        return -1;
    if ((v = json_object_get(req, "stderr_cap")) &&
        json_size(v, "stderr_cap", &o->limits.stderr_cap, err) < 0)
        return -1;
    return clr_exec_limits_validate(&o->limits, err);
}

/* Checks the sandbox is running and puts its environment before the command's own. */
static int command_bind(clr_service *svc, struct command *c, const char *id, clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    bool live = strcmp(row.info.state, CLR_STATE_RUNNING) == 0;
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    snprintf(state, sizeof(state), "%s", row.info.state);
    snprintf(reason, sizeof(reason), "%s", row.destroy_reason);
    size_t nrow = json_array_size(row.env), nreq = 0;
    while (c->env && c->env[nreq])
        nreq++;
    c->all_env = calloc(nrow + nreq + 1, sizeof(char *));
    if (c->all_env) {
        size_t k = 0, i;
        json_t *e;
        json_array_foreach(row.env, i, e) c->all_env[k++] = strdup(json_string_value(e));
        for (i = 0; i < nreq; i++)
            c->all_env[k++] = strdup(c->env[i]);
    }
    clr_store_sandbox_clear(&row);
    if (!c->all_env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    c->o.env = (const char *const *)c->all_env;
    if (!live)
        return not_running(err, id, state, reason);
    return 0;
}

/* The request as it is recorded: environment values may be secrets, stdin is left out. */
static json_t *redacted(json_t *req)
{
    json_t *logged = json_deep_copy(req);
    json_t *jenv = json_object_get(logged, "env");
    if (json_is_object(jenv)) {
        const char *k;
        json_t *ev;
        json_object_foreach(jenv, k, ev) json_object_set_new(jenv, k, json_string("(redacted)"));
    }
    json_object_del(logged, "stdin");
    json_object_del(logged, "stdin_base64");
    return logged;
}

static const char *const exec_fields[] = {"argv",  "shell",        "env",     "cwd",
                                           "stdin", "stdin_base64", "timeout", "stdout_cap",
                                           "stderr_cap", NULL};
/* A background process has no timeout and no output caps: its output is kept in a ring. */
static const char *const process_fields[] = {"argv",  "shell",        "env", "cwd",
                                             "stdin", "stdin_base64", NULL};

int clr_service_exec_check(clr_service *svc, const char *id, json_t *req, clr_error *err)
{
    if (valid_id(id, err) < 0 || check_fields(req, "request", exec_fields, err) < 0)
        return -1;
    struct command cmd;
    int rc = parse_command(&cmd, req, err) < 0 || command_bind(svc, &cmd, id, err) < 0 ? -1 : 0;
    command_clear(&cmd);
    if (rc == 0 && atomic_load(&svc->running_execs) >= (int)svc->cfg.max_execs) {
        atomic_fetch_add(&svc->refused, 1);
        rc = clr_error_set(err, CLR_E_LIMIT, 0,
                           "at capacity: %u commands are running (max_execs); retry later",
                           svc->cfg.max_execs);
    }
    return rc;
}

/* Build option `trace` (meson -Dtrace=true, never in production): an exec's result carries the
 * wall-clock time of each step, the daemon's and its supervisor's (which sends them in its
 * message; gVisor keeps the sandbox's wall clock in step with the host's), in microseconds. */
struct exec_trace {
    uint64_t rx, audited, sent, recorded, waited;
};
#ifdef CLR_TRACE
#define TRACE_AT(t, step) ((t).step = trace_now_us())
static uint64_t trace_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Moves the supervisor's stamps out of the result's message into a trace object. */
static void trace_attach(json_t *result, const struct exec_trace *t, clr_exec_result *res)
{
    unsigned long long a[5] = {0};
    char *m = strstr(res->message, "trace=");
    if (m && sscanf(m, "trace=%llu,%llu,%llu,%llu,%llu", &a[0], &a[1], &a[2], &a[3], &a[4]) == 5) {
        if (m > res->message && m[-1] == ' ')
            m--;
        *m = '\0';
        if (res->message[0])
            json_object_set_new(result, "message", json_string(res->message));
        else
            json_object_set_new(result, "message", json_null());
    }
    json_object_set_new(result, "trace",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                                  "daemon_rx", (json_int_t)t->rx, "audited", (json_int_t)t->audited,
                                  "sent", (json_int_t)t->sent, "agent_rx", (json_int_t)a[0],
                                  "spawn", (json_int_t)a[1], "spawned", (json_int_t)a[2],
                                  "exited", (json_int_t)a[3], "agent_tx", (json_int_t)a[4],
                                  "recorded", (json_int_t)t->recorded,
                                  "waited", (json_int_t)t->waited, "done",
                                  (json_int_t)trace_now_us()));
}
#else
#define TRACE_AT(t, step) ((void)(t))
#endif

int clr_service_exec(clr_service *svc, const char *id, json_t *req, const char *actor,
                     clr_service_event_cb on_event, void *ctx, json_t **out, clr_error *err)
{
    if (valid_id(id, err) < 0 || check_fields(req, "request", exec_fields, err) < 0)
        return -1;
    struct command cmd;
    int rc = -1;
    if (parse_command(&cmd, req, err) < 0 || command_bind(svc, &cmd, id, err) < 0)
        goto out;
    clr_exec_options o = cmd.o;
    struct exec_trace tr = {0};
    TRACE_AT(tr, rx);
    if (atomic_fetch_add(&svc->running_execs, 1) >= (int)svc->cfg.max_execs) {
        atomic_fetch_sub(&svc->running_execs, 1);
        atomic_fetch_add(&svc->refused, 1);
        clr_error_set(err, CLR_E_LIMIT, 0,
                      "at capacity: %u commands are running (max_execs); retry later",
                      svc->cfg.max_execs);
        goto out;
    }
    char exec_id[32];
    new_exec_id(exec_id, sizeof(exec_id));
    /* The sandbox and its live channel first: the record names the channel the command will
     * run on, so a result replayed after a restart finds it. */
    uint64_t t0 = mono_us();
    clr_engine *eng = NULL;
    struct live_sb *lv = NULL;
    int erc = engine_get(svc, &eng, err);
    if (erc == 0)
        erc = live_get(svc, eng, id, &lv, err);
    if (erc < 0) {
        engine_put(svc, eng, true);
        atomic_fetch_sub(&svc->running_execs, 1);
        goto out;
    }
    o.channel = lv->ch;
    o.channel_id = lv->ch ? clr_channel_new_id() : 0;
    json_t *logged = redacted(req);
    int64_t t = now_s();
    /* No command runs unaudited: its start record is durable before the command is sent. */
    json_t *ad = clr_audit_exec_request(&o);
    json_object_set_new(ad, "exec_id", json_string(exec_id));
    int arc = clr_audit_append(svc->audit, actor, id, "exec.start", "ok", ad, err);
    json_decref(ad);
    TRACE_AT(tr, audited);
    if (arc < 0) {
        /* Refused: the record says so, for whoever lists the sandbox's commands. */
        json_t *refused = json_pack("{s:s, s:s}", "status", "start_failed", "message",
                                    err->message);
        if (clr_store_exec_insert_on(svc->store, exec_id, id, o.channel_id, logged, t, NULL) == 0)
            clr_store_exec_finish(svc->store, exec_id, CLR_EXEC_STATE_DONE, refused, now_s(),
                                  NULL);
        json_decref(refused);
        json_decref(logged);
        live_put(svc, lv);
        engine_put(svc, eng, false);
        atomic_fetch_sub(&svc->running_execs, 1);
        goto out;
    }
    struct stream_ctx sc = {on_event, ctx};
    if (on_event) {
        o.on_output = on_output;
        o.ctx = &sc;
    }
    /* The command is sent first and its record committed while it runs: the commit's fsync is
     * off the command's path. The record names the channel, so a result the agent replays after
     * a restart finds it; a client learns the exec id only once the record is durable (the
     * started event, or the response). Output is delivered by clr_exec_wait, after both. */
    clr_exec *h = NULL;
    erc = clr_exec_start(&h, eng, lv->sb, &o, err);
    TRACE_AT(tr, sent);
    clr_error ierr = CLR_ERROR_INIT;
    int irc = clr_store_exec_insert_on(svc->store, exec_id, id, o.channel_id, logged, t, &ierr);
    TRACE_AT(tr, recorded);
    json_decref(logged);
    clr_exec_result res;
    memset(&res, 0, sizeof(res));
    if (irc < 0) {
        /* No record, no command: it is ended at once, and the client told why; none of its
         * output reaches the client. */
        sc.cb = NULL;
        if (h) {
            clr_error kerr = CLR_ERROR_INIT;
            clr_exec_signal(h, 9, &kerr);
            clr_exec_wait(h, &res, &kerr);
            clr_exec_result_clear(&res);
            clr_exec_free(h);
        }
        json_t *fd = json_pack("{s:s, s:s}", "exec_id", exec_id, "error", ierr.message);
        clr_error aerr = CLR_ERROR_INIT;
        clr_audit_append(svc->audit, actor, id, "exec", "error", fd, &aerr);
        json_decref(fd);
        *err = ierr;
        atomic_fetch_sub(&svc->running_execs, 1);
        live_put(svc, lv);
        engine_put(svc, eng, erc < 0);
        goto out;
    }
    clr_store_sandbox_touch(svc->store, id, t, NULL);
    clr_log(CLR_LOG_INFO, "service.exec", "id", id, "exec_id", exec_id, "actor", actor, NULL);
    if (on_event) {
        json_t *ev = json_pack("{s:s, s:s}", "event", "started", "exec_id", exec_id);
        on_event(ctx, ev);
        json_decref(ev);
    }
    if (erc == 0) {
        erc = clr_exec_wait(h, &res, err);
        clr_exec_free(h);
        TRACE_AT(tr, waited);
    }
    if (lv->ch)
        atomic_fetch_add(&svc->channel_execs, 1);
    atomic_fetch_sub(&svc->running_execs, 1);
    live_put(svc, lv);
    engine_put(svc, eng, erc < 0);
    clr_store_sandbox_touch(svc->store, id, now_s(), NULL);
    json_t *result;
    if (erc < 0) {
        result = json_pack("{s:s, s:s}", "status", "sandbox_failed", "message", err->message);
        atomic_fetch_add(&svc->exec_failures, 1);
        ad = json_pack("{s:s, s:s}", "exec_id", exec_id, "error", err->message);
    } else {
        result = clr_exec_result_to_json(&res);
#ifdef CLR_TRACE
        trace_attach(result, &tr, &res);
#endif
        ad = clr_audit_exec_result(&res);
        json_object_set_new(ad, "exec_id", json_string(exec_id));
        if (res.status == CLR_EXEC_TIMED_OUT)
            atomic_fetch_add(&svc->exec_timeouts, 1);
        else if (res.status == CLR_EXEC_OOM)
            atomic_fetch_add(&svc->exec_ooms, 1);
        else if (res.status == CLR_EXEC_SANDBOX_FAILED || res.status == CLR_EXEC_START_FAILED)
            atomic_fetch_add(&svc->exec_failures, 1);
    }
    const char *outcome = erc < 0 ? "error" : clr_exec_status_name(res.status);
    clr_exec_result_clear(&res);
    atomic_fetch_add(&svc->execs, 1);
    observe(&svc->h_exec, mono_us() - t0);
    clr_error serr = CLR_ERROR_INIT;
    arc = clr_audit_append(svc->audit, actor, id, "exec", outcome, ad, &serr);
    json_decref(ad);
    if (clr_store_exec_finish(svc->store, exec_id, CLR_EXEC_STATE_DONE, result, now_s(),
                              arc < 0 ? NULL : &serr) < 0 || arc < 0) {
        /* The result is stored if it could be; the client is told the record failed. */
        json_decref(result);
        *err = serr;
        goto out;
    }
    *out = json_pack("{s:s, s:s, s:s, s:o}", "id", exec_id, "sandbox_id", id, "state",
                     CLR_EXEC_STATE_DONE, "result", result);
    rc = 0;
out:
    command_clear(&cmd);
    return rc;
}

static int decode_base64(json_t *v, uint8_t **out, size_t *len, clr_error *err)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!json_is_string(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "stdin_base64 must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint32_t acc = 0;
    int bits = 0;
    size_t m = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            pad++;
            continue;
        }
        const char *p = pad ? NULL : memchr(alphabet, s[i], 64);
        if (!p || !s[i]) {
            free(buf);
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "stdin_base64 is not valid base64 (at offset %zu)", i);
        }
        acc = (acc << 6) | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[m++] = (uint8_t)(acc >> bits);
        }
    }
    if (pad > 2 || (n % 4) != 0) {
        free(buf);
        return clr_error_set(err, CLR_E_INVALID, 0, "stdin_base64 is not valid base64 (length)");
    }
    *out = buf;
    *len = m;
    return 0;
}

int clr_service_exec_get(clr_service *svc, const char *id, const char *exec_id, json_t **out,
                         clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    json_t *rec = NULL;
    if (clr_store_exec_get(svc->store, exec_id, &rec, err) < 0)
        return -1;
    const char *owner = json_string_value(json_object_get(rec, "sandbox_id"));
    if (!owner || strcmp(owner, id) != 0) {
        json_decref(rec);
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no exec %.64s in sandbox %s", exec_id, id);
    }
    *out = rec;
    return 0;
}

/* ---- reaper and recovery ---- */

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
            destroy_locked(svc, rows[i].info.id, "expired", "reaper", &lerr) == 0) {
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
    int64_t now = now_s();
    int removed = reap_lost(svc, now, err);
    if (removed < 0 ||
        clr_store_sandbox_list(svc->store, CLR_STATE_RUNNING, &rows, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        clr_store_sandbox *s = &rows[i];
        const char *why = NULL;
        if (now >= s->info.expires_at) {
            why = "expired";
        } else if (s->idle_timeout_s && now - s->last_active_at >= s->idle_timeout_s) {
            int busy = 0;
            clr_store_sandbox_running_execs(svc->store, s->info.id, &busy, NULL);
            if (busy == 0 && !clr_service_sandbox_busy(svc, s->info.id))
                why = "idle";
        }
        if (why) {
            clr_error lerr = CLR_ERROR_INIT;
            if (destroy_locked(svc, s->info.id, why, "reaper", &lerr) == 0) {
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
    if (engine_get(svc, &sn->eng, err) < 0)
        return -1;
    if (clr_sandbox_list(&sn->live, &sn->nlive, sn->eng, err) < 0) {
        engine_put(svc, sn->eng, true);
        return -1;
    }
    if (clr_store_sandbox_list(svc->store, CLR_STATE_RUNNING, &sn->rows, &sn->n, err) < 0) {
        free(sn->live);
        engine_put(svc, sn->eng, false);
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
    engine_put(svc, sn->eng, false);
}

static bool snapshot_running(const struct snapshot *sn, const char *id)
{
    for (size_t j = 0; j < sn->nlive; j++) {
        if (strcmp(sn->live[j].id, id) == 0 && strcmp(sn->live[j].state, "running") == 0)
            return true;
    }
    return false;
}

/* A running row without a running container becomes lost, once, whoever sees it first (the
 * event watcher, the reconcile pass, the recovery): recorded in the database, the log and the
 * audit log. Its remains (stopped container, workspace) stay until it is destroyed (by a client,
 * or the reaper at its expiry): what it wrote before it died can still be read, and a command
 * that was running in it can still read the engine's account of its end (OOMKilled). The state
 * changes only with its record: when the audit log cannot take it, the row goes back to running
 * and the next look (reconcile pass, start) tries again. */
static bool mark_lost(clr_service *svc, const char *id, const char *actor, const char *reason)
{
    clr_error lerr = CLR_ERROR_INIT;
    int changed = clr_store_sandbox_set_state_from(svc->store, id, CLR_STATE_RUNNING,
                                                   CLR_STATE_LOST, reason, now_s(), &lerr);
    if (changed < 0)
        clr_log(CLR_LOG_ERROR, "sandbox.lost_unrecorded", "id", id, "reason", reason, "error",
                lerr.message, NULL);
    if (changed <= 0)
        return false;
    json_t *d = json_pack("{s:s}", "reason", reason);
    int arc = clr_audit_append(svc->audit, actor, id, "sandbox.lost", "ok", d, &lerr);
    json_decref(d);
    if (arc < 0) {
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", id, "action", "sandbox.lost",
                "error", lerr.message, "detail", "kept as running; retried later", NULL);
        clr_store_sandbox_set_state_from(svc->store, id, CLR_STATE_LOST, CLR_STATE_RUNNING, "",
                                         0, &lerr);
        return false;
    }
    live_drop(svc, id);
    atomic_fetch_add(&svc->lost, 1);
    clr_log(CLR_LOG_WARN, "sandbox.lost", "id", id, "reason", reason, "actor", actor, NULL);
    return true;
}

/* Whether the database knows this sandbox as destroyed (not merely unknown, nor lost: a lost
 * one's remains wait for its destroy; nor a running plan's). */
static bool destroyed_row(clr_service *svc, const char *id)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    clr_error err = CLR_ERROR_INIT;
    return row_state(svc, id, state, reason, &err) == 0 && strcmp(state, CLR_STATE_DESTROYED) == 0;
}

/* Whether the database knows this sandbox as lost. */
static bool lost_row(clr_service *svc, const char *id)
{
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    clr_error err = CLR_ERROR_INIT;
    return row_state(svc, id, state, reason, &err) == 0 && strcmp(state, CLR_STATE_LOST) == 0;
}

/* Sandboxes whose container stopped or vanished behind our back (dockerd restarted, someone
 * removed it, the kernel killed it) become lost, and what is left of them is removed. */
int clr_service_reconcile(clr_service *svc, clr_error *err)
{
    struct snapshot sn;
    if (snapshot_load(svc, &sn, err) < 0)
        return -1;
    int lost = 0;
    int64_t now = now_s();
    for (size_t i = 0; i < sn.n; i++) {
        /* A row younger than a few seconds may be a create whose container is still starting. */
        if (snapshot_running(&sn, sn.rows[i].info.id) || now - sn.rows[i].info.created_at < 5)
            continue;
        if (mark_lost(svc, sn.rows[i].info.id, "reaper", "container stopped or vanished"))
            lost++;
    }
    /* A container of ours whose sandbox the database has as destroyed: its removal failed
     * every attempt (the engine was down): queue it again. Containers the database does not
     * know at all are left to the recovery at start (they may be pooled ones). */
    for (size_t j = 0; j < sn.nlive; j++) {
        const char *id = sn.live[j].id;
        if (strcmp(sn.live[j].owner, svc->owner) != 0 || !id[0] || !destroyed_row(svc, id))
            continue;
        if (removal_queue(svc, id, "leftover", 0))
            clr_log(CLR_LOG_WARN, "reconcile.removal_requeued", "id", id, NULL);
    }
    snapshot_free(svc, &sn);
    return lost;
}

static void *reaper_main(void *p)
{
    clr_service *svc = p;
    unsigned pass = 0;
    uint64_t reconciled_us = mono_us();
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
        bool due = every_ms ? mono_us() - reconciled_us >= every_ms * 1000
                            : ++pass % 10 == 0 || svc->cfg.reaper_interval_ms >= 10000;
        if (due) {
            reconciled_us = mono_us();
            clr_error rerr = CLR_ERROR_INIT;
            if (clr_service_reconcile(svc, &rerr) < 0)
                clr_log(CLR_LOG_WARN, "reconcile.failed", "error", rerr.message, NULL);
        }
        pthread_mutex_lock(&svc->reaper_lock);
    }
    pthread_mutex_unlock(&svc->reaper_lock);
    return NULL;
}

/* ---- the engine's events: a sandbox whose container dies is lost at once ---- */

#define WATCH_BACKOFF_MIN_MS 100
#define WATCH_BACKOFF_MAX_MS 5000
/* After a die or destroy event, how long before the container's state is read: dockerd marks
 * OOMKilled from containerd's OOM event, which may come after the exit event (see diagnose() in
 * lib/exec.c). An oom event ends the wait at once. */
#define DEATH_SETTLE_MS 1000
#define DEATHS_MAX 64
/* The reconcile pass leaves rows younger than 5 s alone (a create may be between its container
 * and its row): a second pass this long after a connect looks at those too. */
#define RESYNC_SECOND_LOOK_MS 6000

struct death {
    char id[CLR_SANDBOX_ID_MAX + 1];
    uint64_t due_us;
    bool oom; /* an oom event came */
    /* A kill event came: someone asked the engine to stop it (docker stop or kill, docker rm -f,
     * dockerd itself shutting down, which stops every container). Not a death of the sandbox's
     * own: the reconcile pass judges it once the engine answers again ("container stopped or
     * vanished"), so a dockerd that is stopping is told apart from a runtime that died. */
    bool by_engine;
};

struct watch {
    clr_service *svc;
    struct death deaths[DEATHS_MAX]; /* events whose sandbox is yet to be judged */
    size_t n;
    bool resync;   /* (re)connected: compare with the engine, for what was missed */
    uint64_t second_look_us; /* when to compare once more after a connect (0: done) */
    bool streamed; /* the engine answered since the last back-off */
};

static bool watch_stopping(clr_service *svc)
{
    pthread_mutex_lock(&svc->reaper_lock);
    bool stop = svc->stopping;
    pthread_mutex_unlock(&svc->reaper_lock);
    return stop;
}

/* Judges one death from the engine's account of the container: "oom" when an oom event came or
 * the engine has it OOMKilled, "runtime died" when it stopped otherwise, "container removed"
 * when it is gone. A container that still runs (an OOM kill inside it that it survived) is left
 * alone. False: the engine could not be asked; the death is judged again later. */
static bool death_judge(clr_service *svc, const struct death *d)
{
    bool live = false;
    clr_error err = CLR_ERROR_INIT;
    if (row_running(svc, d->id, &live, &err) < 0 || !live)
        return true; /* destroyed meanwhile, or already lost */
    if (d->by_engine && !d->oom) {
        clr_log(CLR_LOG_INFO, "events.stopped_by_engine", "id", d->id, "detail",
                "left to the reconcile pass", NULL);
        return true;
    }
    clr_engine *eng = NULL;
    if (engine_get(svc, &eng, &err) < 0)
        return false;
    char path[256];
    snprintf(path, sizeof(path), "/containers/" CLR_CONTAINER_PREFIX "%s/json", d->id);
    json_t *j = NULL;
    int st = clr_engine_call(eng, "GET", path, NULL, &j, &err);
    engine_put(svc, eng, st < 0);
    json_t *state = json_object_get(j, "State");
    bool running = st == 200 && json_is_true(json_object_get(state, "Running"));
    bool oom = d->oom || (st == 200 && json_is_true(json_object_get(state, "OOMKilled")));
    json_decref(j);
    if (st != 200 && st != 404) {
        clr_log(CLR_LOG_WARN, "events.inspect_failed", "id", d->id, "error", err.message, NULL);
        return false;
    }
    if (running)
        return true;
    const char *reason = oom ? "oom" : st == 404 ? "container removed" : "runtime died";
    mark_lost(svc, d->id, "engine", reason);
    return true;
}

/* Judges the deaths whose time has come (all of them: every). */
static void deaths_settle(struct watch *w, bool every)
{
    uint64_t now = mono_us();
    size_t k = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct death *d = &w->deaths[i];
        if ((every || now >= d->due_us) && !watch_stopping(w->svc) && death_judge(w->svc, d))
            continue;
        if (now >= d->due_us)
            d->due_us = now + DEATH_SETTLE_MS * 1000ull; /* the engine did not answer */
        w->deaths[k++] = *d;
    }
    w->n = k;
}

static int watch_on_event(void *ctx, json_t *ev)
{
    struct watch *w = ctx;
    clr_service *svc = w->svc;
    const char *action = json_string_value(json_object_get(ev, "Action"));
    json_t *attrs = json_object_get(json_object_get(ev, "Actor"), "Attributes");
    const char *id = json_string_value(json_object_get(attrs, CLR_LABEL_PREFIX "sandbox-id"));
    const char *owner = json_string_value(json_object_get(attrs, CLR_LABEL_PREFIX "owner"));
    bool oom = action && strcmp(action, "oom") == 0;
    bool kill = action && strcmp(action, "kill") == 0;
    if (!action ||
        (!oom && !kill && strcmp(action, "die") != 0 && strcmp(action, "destroy") != 0) ||
        !id || !clr_sandbox_id_valid(id) || !owner || strcmp(owner, svc->owner) != 0)
        return 0;
    /* Only a sandbox the database has as running can be lost: a destroyed one's container dies
     * by our hand, a pooled one has no row yet. */
    bool running = false;
    clr_error err = CLR_ERROR_INIT;
    if (row_running(svc, id, &running, &err) < 0 || !running)
        return 0;
    clr_log(CLR_LOG_INFO, "events.container", "id", id, "action", action, NULL);
    struct death *d = NULL;
    for (size_t i = 0; i < w->n && !d; i++)
        if (strcmp(w->deaths[i].id, id) == 0)
            d = &w->deaths[i];
    if (!d) {
        if (w->n == DEATHS_MAX)
            deaths_settle(w, true); /* a burst: judge what waits now rather than drop any */
        if (w->n == DEATHS_MAX)
            return 0; /* the engine does not answer: the reconcile pass sees it */
        d = &w->deaths[w->n++];
        memset(d, 0, sizeof(*d));
        snprintf(d->id, sizeof(d->id), "%s", id);
        d->due_us = mono_us() + DEATH_SETTLE_MS * 1000ull;
    }
    d->oom |= oom;
    d->by_engine |= kill;
    if (d->oom)
        d->due_us = mono_us();
    return 0;
}

static void watch_on_connected(void *ctx)
{
    struct watch *w = ctx;
    w->resync = true;
    w->second_look_us = mono_us() + RESYNC_SECOND_LOOK_MS * 1000ull;
    w->streamed = true;
    clr_log(CLR_LOG_INFO, "events.connected", NULL);
}

static bool watch_tick(void *ctx)
{
    struct watch *w = ctx;
    if (watch_stopping(w->svc))
        return true;
    if (w->second_look_us && mono_us() >= w->second_look_us) {
        w->second_look_us = 0;
        w->resync = true;
    }
    if (w->resync) {
        /* Deaths while the stream was down came as no event: compare with the engine now (and
         * once more a few seconds later). */
        w->resync = false;
        clr_error err = CLR_ERROR_INIT;
        if (clr_service_reconcile(w->svc, &err) < 0)
            clr_log(CLR_LOG_WARN, "reconcile.failed", "error", err.message, NULL);
    }
    deaths_settle(w, false);
    return watch_stopping(w->svc);
}

/* Waits ms, or until the daemon stops; false when it stops. */
static bool watch_wait(clr_service *svc, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&svc->reaper_lock);
    while (!svc->stopping && pthread_cond_timedwait(&svc->reaper_cond, &svc->reaper_lock, &ts) == 0)
        ;
    bool go_on = !svc->stopping;
    pthread_mutex_unlock(&svc->reaper_lock);
    return go_on;
}

/* Reads the engine's die, oom and destroy events of this daemon's containers for the daemon's
 * life. When the stream breaks (dockerd stops or restarts) it connects again, waiting 100 ms,
 * then twice as long each failure up to 5 s; after each connect one reconcile pass catches what
 * happened while it was away. */
static void *watch_main(void *p)
{
    clr_service *svc = p;
    struct watch *w = calloc(1, sizeof(*w));
    if (!w) {
        clr_log(CLR_LOG_ERROR, "events.not_started", "error", "out of memory", NULL);
        return NULL;
    }
    w->svc = svc;
    char label[sizeof(svc->owner) + 32];
    snprintf(label, sizeof(label), CLR_LABEL_PREFIX "owner=%s", svc->owner);
    json_t *filters = json_pack("{s:[s], s:[s,s,s,s], s:[s]}", "type", "container", "event",
                                "kill", "die", "oom", "destroy", "label", label);
    clr_engine_events_handler h = {.on_event = watch_on_event,
                                   .on_connected = watch_on_connected,
                                   .tick = watch_tick,
                                   .ctx = w,
                                   .cancel = svc->watch_cancel};
    unsigned backoff = WATCH_BACKOFF_MIN_MS;
    bool warned = false;
    while (filters && !watch_stopping(svc)) {
        clr_engine *eng = NULL;
        clr_error err = CLR_ERROR_INIT;
        clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
        o.host = svc->docker_host;
        w->streamed = false;
        int rc = clr_engine_open(&eng, &o, &err);
        if (rc == 0)
            rc = clr_engine_events(eng, filters, &h, &err);
        clr_engine_free(eng);
        if (rc == 0 || watch_stopping(svc))
            break;
        if (w->streamed) {
            backoff = WATCH_BACKOFF_MIN_MS;
            warned = false;
        }
        if (!warned) /* one warning per outage, not one per attempt */
            clr_log(CLR_LOG_WARN, "events.disconnected", "error", err.message, NULL);
        warned = true;
        if (!watch_wait(svc, backoff))
            break;
        backoff = backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : backoff * 2;
    }
    json_decref(filters);
    free(w);
    return NULL;
}

/* Workspaces of sandboxes the database has as destroyed or lost, with no container left: a
 * removal that the daemon's death cut between the container and the workspace. */
static void recover_workspaces(clr_service *svc, const struct snapshot *sn)
{
    char wsdir[4096];
    snprintf(wsdir, sizeof(wsdir), "%s/workspaces", svc->state_dir);
    DIR *d = opendir(wsdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *id = e->d_name;
        if (!clr_sandbox_id_valid(id) || !destroyed_row(svc, id))
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
    closedir(d);
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
    row.last_active_at = now_s();
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
    json_object_set_new(d, "tenant", json_string(tenant_or_default(live->tenant)));
    rc = clr_audit_append(svc->audit, "recovery", live->id, "sandbox.recovered", "ok", d, &lerr);
    json_decref(d);
    if (rc < 0) {
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", lerr.message, NULL);
        clr_error derr = CLR_ERROR_INIT;
        clr_sandbox_destroy(sn->eng, live->id, "unaudited", svc->state_dir, &derr);
        clr_store_sandbox_set_state(svc->store, live->id, CLR_STATE_DESTROYED, "unaudited",
                                    now_s(), &derr);
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
        if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, "plan-interrupted",
                                        now_s(), &lerr) < 0) {
            clr_log(CLR_LOG_WARN, "recover.plan_failed", "id", id, "error", lerr.message, NULL);
            continue;
        }
        clr_log(CLR_LOG_WARN, "recover.plan_interrupted", "id", id, "branch",
                rows[i].info.branch, NULL);
        json_t *d = json_pack("{s:s, s:s, s:s}", "reason", "plan-interrupted", "branch",
                              rows[i].info.branch, "tenant",
                              tenant_or_default(rows[i].info.tenant));
        if (clr_audit_append(svc->audit, "recovery", id, "sandbox.destroy", "ok", d, &lerr) < 0)
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", lerr.message, NULL);
        json_decref(d);
    }
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&rows[i]);
    free(rows);
}

/* After a restart: keep what still runs, mark what vanished, remove what we do not know (but
 * adopt what runs when the database is new: see adopt_recovered). */
static int recover(clr_service *svc, clr_error *err)
{
    struct snapshot sn;
    if (snapshot_load(svc, &sn, err) < 0)
        return -1;
    for (size_t i = 0; i < sn.n; i++) {
        if (snapshot_running(&sn, sn.rows[i].info.id)) {
            atomic_fetch_add(&svc->adopted, 1);
            clr_log(CLR_LOG_INFO, "recover.adopted", "id", sn.rows[i].info.id, NULL);
            /* Attach again: the agent replays the results of commands that ended while the
             * daemon was away (live_on_result) and names those still running; the records of
             * any other command of this sandbox become lost (live_on_channels). */
            struct live_sb *lv = NULL;
            clr_error lerr = CLR_ERROR_INIT;
            if (live_get(svc, sn.eng, sn.rows[i].info.id, &lv, &lerr) < 0 || !lv->ch)
                clr_store_exec_mark_lost_sandbox(svc->store, sn.rows[i].info.id, NULL, 0,
                                                 now_s(), &lerr);
            live_put(svc, lv);
        } else {
            mark_lost(svc, sn.rows[i].info.id, "recovery",
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
        if (known || lost_row(svc, sn.live[j].id))
            continue;
        clr_error lerr = CLR_ERROR_INIT;
        if (destroyed_row(svc, sn.live[j].id)) {
            /* Destroyed (and audited) before the stop; its removal had not finished. The
             * engine may still be busy with it (a removal the stop cut mid-way answers 409
             * "already in progress"): then the remover retries, with back-off. */
            if (clr_sandbox_destroy(sn.eng, sn.live[j].id, "destroyed", svc->state_dir,
                                    &lerr) == 0) {
                atomic_fetch_add(&svc->removed, 1);
                clr_log(CLR_LOG_INFO, "recover.removal_resumed", "id", sn.live[j].id, NULL);
            } else {
                clr_log(CLR_LOG_WARN, "recover.removal_deferred", "id", sn.live[j].id, "error",
                        lerr.message, NULL);
                removal_queue(svc, sn.live[j].id, "leftover", 0);
            }
            continue;
        }
        if (clr_store_created(svc->store) && strcmp(sn.live[j].state, "running") == 0 &&
            adopt_recovered(svc, &sn, &sn.live[j]))
            continue;
        /* Recorded before it is removed; without a record it is left to the next start. */
        json_t *d = json_pack("{s:s}", "reason", "orphan");
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
    /* Commands of sandboxes that are gone cannot have finished anywhere. */
    clr_error uerr = CLR_ERROR_INIT;
    clr_store_exec_mark_lost_unowned(svc->store, now_s(), &uerr);
    snapshot_free(svc, &sn);
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

#define STATE_LOCK_WAIT_MS 10000 /* how long a start waits for a daemon that is stopping */

/* One daemon owns a state directory: a second one's reaper, knowing nothing of the first's
 * background processes, would destroy its sandboxes as idle, and two recoveries would fight over
 * the same containers. The lock is an flock() held for the daemon's life and released by the
 * kernel when it dies, however it dies; the file names the holder's pid. A start waits a little
 * for the lock, so that a restart does not race the previous daemon's last moments. */
static int state_lock(clr_service *svc, clr_error *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/daemon.lock", svc->state_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == ENOENT && mkdir(svc->state_dir, 0700) == 0)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot open %s: %s; check that the state directory exists and is "
                             "writable by the daemon", path, strerror(errno));
    uint64_t until = mono_us() + STATE_LOCK_WAIT_MS * 1000ull;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if ((errno != EWOULDBLOCK && errno != EINTR) || mono_us() >= until) {
            int e = errno;
            char holder[32] = "";
            ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
            holder[n > 0 ? n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
            close(fd);
            if (e != EWOULDBLOCK)
                return clr_error_set(err, CLR_E_UNAVAILABLE, e, "cannot lock %s: %s", path,
                                     strerror(e));
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "state directory %s is in use by another clearing daemon (pid "
                                 "%s): stop it, or give this one --state-dir of its own",
                                 svc->state_dir, holder[0] ? holder : "unknown");
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        clr_log(CLR_LOG_WARN, "service.lock_unwritten", "path", path, "error", strerror(errno),
                NULL);
    svc->lock_fd = fd;
    return 0;
}

/* The key that signs plans' verdicts: loaded, or made at the first start (and recorded). A key
 * that cannot be read or is readable by others stops the start: plans would run unsigned. */
static int open_verdict_key(clr_service *svc, const clr_service_config *cfg, clr_error *err)
{
    char path[PATH_MAX];
    if (cfg->verdict_key)
        snprintf(path, sizeof(path), "%s", cfg->verdict_key);
    else
        snprintf(path, sizeof(path), "%s/verdict.key", svc->state_dir);
    bool created = false;
    if (clr_verdict_key_load(&svc->verdict_key, path, true, &created, err) < 0)
        return -1;
    if (created) {
        json_t *d = json_pack("{s:s, s:s, s:s+}", "key_id", clr_verdict_key_id(svc->verdict_key),
                              "path", path, "public", path, ".pub");
        int rc = clr_audit_append(svc->audit, "daemon", NULL, "verdict_key.create", "ok", d, err);
        json_decref(d);
        if (rc < 0)
            return -1;
        clr_log(CLR_LOG_INFO, "verdict_key.created", "key_id",
                clr_verdict_key_id(svc->verdict_key), "path", path, NULL);
    }
    return 0;
}

int clr_service_start(clr_service **out, const clr_service_config *cfg, clr_error *err)
{
    if (clr_limits_validate(&cfg->limits, err) < 0)
        return clr_error_prefix(err, "default limits");
    if (cfg->max_sandboxes == 0 || cfg->max_execs == 0 || cfg->reaper_interval_ms == 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "max_sandboxes, max_execs and reaper_interval must be positive");
    clr_service *svc = calloc(1, sizeof(*svc));
    if (!svc)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    svc->cfg = *cfg;
    svc->lock_fd = -1;
    svc->state_dir = strdup(clr_state_dir(cfg->state_dir));
    if (cfg->db_path)
        svc->db_path = strdup(cfg->db_path);
    else if (asprintf(&svc->db_path, "%s/clearing.db", svc->state_dir) < 0)
        svc->db_path = NULL;
    svc->docker_host = dup_or_null(cfg->docker_host);
    svc->image = dup_or_null(cfg->image);
    svc->insecure_runtime = dup_or_null(cfg->insecure_runtime);
    svc->cfg.allowed_images = NULL; /* until checked below */
    pthread_mutex_init(&svc->pool_lock, NULL);
    pthread_mutex_init(&svc->create_lock, NULL);
    pthread_mutex_init(&svc->reaper_lock, NULL);
    pthread_cond_init(&svc->reaper_cond, NULL);
    pthread_mutex_init(&svc->warm_lock, NULL);
    pthread_cond_init(&svc->warm_cond, NULL);
    pthread_mutex_init(&svc->rm_lock, NULL);
    pthread_mutex_init(&svc->health_lock, NULL);
    pthread_mutex_init(&svc->live_lock, NULL);
    pthread_cond_init(&svc->rm_cond, NULL);
    pthread_cond_init(&svc->rm_done, NULL);
    if (!svc->state_dir || !svc->db_path) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    if (cfg->allowed_images && (!cfg->allowed_images[0] || !cfg->allowed_images[0][0])) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "allowed_images must list at least one non-empty pattern");
    }
    svc->cfg.allowed_images = cfg->allowed_images;
    if (image_allowed(svc, NULL, err) < 0) {
        clr_service_stop(svc);
        return clr_error_prefix(err, "the default image (setting image)");
    }
    if (cfg->allowed_images) {
        /* A weakening is the operator's explicit choice, and it is on record. */
        char list[512];
        allowed_images_text(svc, list, sizeof(list));
        bool any = false;
        for (const char *const *p = cfg->allowed_images; *p; p++)
            any |= fnmatch(*p, "any/image:at-all", 0) == 0;
        clr_log(CLR_LOG_WARN, "service.allowed_images", "patterns", list, "detail",
                any ? "ANY image may be used: isolation weakened by operator setting"
                    : "images allowed by operator setting",
                NULL);
    }
    /* The owner label ties containers to this database: after a restart we adopt or remove
     * exactly these, and leave CLI runs and other daemons' sandboxes alone. */
    snprintf(svc->owner, sizeof(svc->owner), "daemon:%s", svc->db_path);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", svc->state_dir);
    if (state_lock(svc, err) < 0) {
        clr_service_stop(svc);
        return -1;
    }
    if (clr_store_open(&svc->store, svc->db_path, err) < 0) {
        clr_service_stop(svc);
        return -1;
    }
    clr_audit_options ao = CLR_AUDIT_OPTIONS_INIT;
    char *audit_path = NULL;
    if (cfg->audit_path)
        audit_path = strdup(cfg->audit_path);
    else if (asprintf(&audit_path, "%s/" CLR_AUDIT_DEFAULT_FILE, svc->state_dir) < 0)
        audit_path = NULL;
    ao.path = audit_path;
    ao.rotate_bytes = cfg->audit_rotate_bytes;
    ao.syslog = cfg->audit_syslog;
    ao.keep = cfg->audit_keep;
    ao.disk_budget = cfg->audit_disk_budget;
    ao.aggregate_ms = cfg->audit_aggregate_ms;
    ao.checkpoint_ms = cfg->audit_checkpoint_ms;
    int arc = audit_path ? clr_audit_open(&svc->audit, &ao, err)
                         : clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    free(audit_path);
    if (arc < 0) {
        clr_service_stop(svc);
        return -1;
    }
    if (open_verdict_key(svc, cfg, err) < 0) {
        clr_service_stop(svc);
        return -1;
    }
    clr_engine *eng = NULL;
    bool runsc = false;
    if (engine_get(svc, &eng, err) < 0 ||
        clr_engine_has_runtime(eng, svc->insecure_runtime ? svc->insecure_runtime : "runsc",
                               &runsc, err) < 0) {
        engine_put(svc, eng, true);
        clr_service_stop(svc);
        return -1;
    }
    engine_put(svc, eng, false);
    if (!runsc) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the gVisor runtime 'runsc' is not registered with the Docker "
                             "engine: run scripts/setup.sh; the daemon does not start without it");
    }
    if (svc->insecure_runtime)
        clr_log(CLR_LOG_WARN, "service.insecure_runtime", "runtime", svc->insecure_runtime,
                "detail", "every sandbox of this daemon runs WITHOUT gVisor", NULL);
    /* The remover first: recovery hands it the removals it cannot finish at once. */
    if (pthread_create(&svc->rm_thread, NULL, remover_main, svc) != 0) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the remover thread");
    }
    svc->rm_started = true;
    if (recover(svc, err) < 0) {
        clr_service_stop(svc);
        return clr_error_prefix(err, "recovering state");
    }
    if (pthread_create(&svc->reaper, NULL, reaper_main, svc) != 0) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the reaper thread");
    }
    svc->reaper_started = true;
    if (clr_engine_cancel_new(&svc->watch_cancel, err) < 0) {
        clr_service_stop(svc);
        return -1;
    }
    if (pthread_create(&svc->watch_thread, NULL, watch_main, svc) != 0) {
        clr_service_stop(svc);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the event watcher thread");
    }
    svc->watch_started = true;
    if (cfg->pool_size) {
        if (pthread_create(&svc->warm_thread, NULL, warm_main, svc) == 0)
            svc->warm_started = true;
        else
            clr_log(CLR_LOG_WARN, "pool.not_started", NULL);
    }
    *out = svc;
    return 0;
}

/* At stop: the remover finishes what is queued, for a bounded time; what is left (the engine is
 * down, or slow) is removed by the recovery at the next start. */
static void removals_drain(clr_service *svc)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += REMOVAL_DRAIN_TIMEOUT_S;
    pthread_mutex_lock(&svc->rm_lock);
    while (svc->rm_pending > 0) {
        if (pthread_cond_timedwait(&svc->rm_done, &svc->rm_lock, &ts) == ETIMEDOUT)
            break;
    }
    unsigned left = svc->rm_pending;
    svc->rm_stopping = true;
    /* Whatever is still queued is dropped (its rows say destroyed: the next start resumes). */
    while (svc->rm_head) {
        struct removal *r = svc->rm_head;
        svc->rm_head = r->next;
        free(r);
    }
    svc->rm_tail = NULL;
    pthread_cond_broadcast(&svc->rm_cond);
    pthread_mutex_unlock(&svc->rm_lock);
    pthread_join(svc->rm_thread, NULL);
    svc->rm_started = false;
    if (left) {
        char count[16];
        snprintf(count, sizeof(count), "%u", left);
        clr_log(CLR_LOG_WARN, "service.removals_left", "count", count, "detail",
                "resumed at the next start", NULL);
    }
}

void clr_service_stop(clr_service *svc)
{
    if (!svc)
        return;
    procs_stop(svc);
    /* Channels close; commands on them go on inside their sandboxes, and their results wait in
     * the agent for the next start. */
    for (;;) {
        pthread_mutex_lock(&svc->live_lock);
        struct live_sb *lv = svc->live;
        if (lv)
            svc->live = lv->next;
        pthread_mutex_unlock(&svc->live_lock);
        if (!lv)
            break;
        live_put(svc, lv);
    }
    if (svc->reaper_started) {
        pthread_mutex_lock(&svc->reaper_lock);
        svc->stopping = true;
        pthread_cond_broadcast(&svc->reaper_cond);
        pthread_mutex_unlock(&svc->reaper_lock);
        pthread_join(svc->reaper, NULL);
    }
    if (svc->watch_started) {
        /* The watcher's stream ends at once (its socket is shut down), so does its back-off
         * wait; an engine call it is making (an inspect, a connect) ends first. */
        pthread_mutex_lock(&svc->reaper_lock);
        svc->stopping = true;
        pthread_cond_broadcast(&svc->reaper_cond);
        pthread_mutex_unlock(&svc->reaper_lock);
        clr_engine_cancel_fire(svc->watch_cancel);
        pthread_join(svc->watch_thread, NULL);
    }
    clr_engine_cancel_free(svc->watch_cancel);
    if (svc->rm_started)
        removals_drain(svc);
    if (svc->warm_started) {
        pthread_mutex_lock(&svc->warm_lock);
        svc->stopping = true;
        pthread_cond_broadcast(&svc->warm_cond);
        pthread_mutex_unlock(&svc->warm_lock);
        pthread_join(svc->warm_thread, NULL);
    }
    /* Pooled sandboxes were never handed out: they go with the daemon. */
    while (svc->warm) {
        struct warm *w = svc->warm;
        svc->warm = w->next;
        warm_discard(svc, w->sb, w->ch, "pool-stop");
        free(w);
    }
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    clr_store_close(svc->store);
    clr_audit_close(svc->audit);
    clr_verdict_key_free(svc->verdict_key);
    free(svc->state_dir);
    if (svc->lock_fd >= 0)
        close(svc->lock_fd); /* the lock goes with the last descriptor */
    free(svc->db_path);
    free(svc->docker_host);
    free(svc->image);
    free(svc->insecure_runtime);
    pthread_mutex_destroy(&svc->pool_lock);
    pthread_mutex_destroy(&svc->create_lock);
    pthread_mutex_destroy(&svc->reaper_lock);
    pthread_cond_destroy(&svc->reaper_cond);
    pthread_mutex_destroy(&svc->warm_lock);
    pthread_cond_destroy(&svc->warm_cond);
    pthread_mutex_destroy(&svc->rm_lock);
    pthread_mutex_destroy(&svc->health_lock);
    pthread_mutex_destroy(&svc->live_lock);
    pthread_cond_destroy(&svc->rm_cond);
    pthread_cond_destroy(&svc->rm_done);
    free(svc);
}

/* ---- health and metrics ---- */

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
    bool ok = engine_get(svc, &eng, &err) == 0;
    json_t *info = NULL;
    if (ok && clr_engine_call(eng, "GET", "/_ping", NULL, &info, &err) != 200)
        ok = false;
    json_decref(info);
    engine_put(svc, eng, !ok);
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
        emit(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, buckets[i], cum);
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
    if (usage_collect(svc, &v, &n, &lerr) < 0) {
        clr_log(CLR_LOG_WARN, "metrics.tenants_failed", "error", lerr.message, NULL);
        return;
    }
    /* A tenant with nothing live still gets its (zero) lines: the caller's own, and the
     * operator's view of every tenant with a quota. */
    if (only)
        usage_entry(&v, &n, only);
    else
        for (size_t i = 0; i < svc->cfg.ntenants; i++)
            usage_entry(&v, &n, svc->cfg.tenants[i].name);
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

/* ---- background processes ---- */

#define PROC_OUTPUT_KEEP (1024 * 1024)
#define MAX_PROCS_PER_SANDBOX 16
#define MAX_PROCS 256

struct ring {
    uint8_t *data;
    size_t len;     /* bytes held */
    uint64_t base;  /* offset of data[0] in the whole stream */
};

struct proc {
    char id[32];
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    clr_service *svc;
    clr_engine *eng;
    clr_sandbox *sb;
    clr_exec *h;
    pthread_t thread;
    struct ring out, err;
    bool done;
    json_t *result;
    json_t *request;
    int64_t started_at, finished_at;
    int users; /* requests using h right now; h is freed only when none is */
    struct proc *next;
};

static pthread_mutex_t procs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t procs_cond = PTHREAD_COND_INITIALIZER;

static void ring_append(struct ring *r, const uint8_t *d, size_t n)
{
    if (n >= PROC_OUTPUT_KEEP) {
        r->base += r->len + (n - PROC_OUTPUT_KEEP);
        d += n - PROC_OUTPUT_KEEP;
        n = PROC_OUTPUT_KEEP;
        r->len = 0;
    }
    if (r->len + n > PROC_OUTPUT_KEEP) {
        size_t drop = r->len + n - PROC_OUTPUT_KEEP;
        memmove(r->data, r->data + drop, r->len - drop);
        r->len -= drop;
        r->base += drop;
    }
    if (!r->data)
        r->data = malloc(PROC_OUTPUT_KEEP);
    if (!r->data)
        return;
    memcpy(r->data + r->len, d, n);
    r->len += n;
}

static void proc_on_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len)
{
    struct proc *p = ctx;
    pthread_mutex_lock(&procs_lock);
    ring_append(stream == CLR_STDOUT ? &p->out : &p->err, data, len);
    pthread_cond_broadcast(&procs_cond);
    pthread_mutex_unlock(&procs_lock);
}

static void *proc_main(void *arg)
{
    struct proc *p = arg;
    clr_exec_result res;
    clr_error err = CLR_ERROR_INIT;
    json_t *result;
    if (clr_exec_wait(p->h, &res, &err) < 0) {
        result = json_pack("{s:s, s:s}", "status", "sandbox_failed", "message", err.message);
    } else {
        /* Output went to the ring; the record carries only the figures. */
        result = clr_exec_result_to_json(&res);
        json_object_del(result, "stdout");
        json_object_del(result, "stderr");
        json_object_del(result, "stdout_encoding");
        json_object_del(result, "stderr_encoding");
        clr_exec_result_clear(&res);
    }
    pthread_mutex_lock(&procs_lock);
    p->done = true;
    while (p->users > 0)
        pthread_cond_wait(&procs_cond, &procs_lock);
    clr_exec *h = p->h;
    clr_sandbox *sb = p->sb;
    clr_engine *eng = p->eng;
    p->h = NULL;
    p->sb = NULL;
    p->eng = NULL;
    pthread_mutex_unlock(&procs_lock);
    clr_exec_free(h);
    clr_sandbox_free(sb);
    engine_put(p->svc, eng, false);
    pthread_mutex_lock(&procs_lock);
    p->result = result;
    p->done = true;
    p->finished_at = now_s();
    pthread_cond_broadcast(&procs_cond);
    pthread_mutex_unlock(&procs_lock);
    clr_store_sandbox_touch(p->svc->store, p->sandbox_id, now_s(), NULL);
    return NULL;
}

/* The process list hangs off the service; this finds one (procs_lock held). */
static struct proc *proc_find(clr_service *svc, const char *id, const char *proc_id)
{
    for (struct proc *p = svc->procs; p; p = p->next) {
        if (strcmp(p->id, proc_id) == 0 && strcmp(p->sandbox_id, id) == 0)
            return p;
    }
    return NULL;
}

static json_t *proc_json(const struct proc *p)
{
    return json_pack("{s:s, s:s, s:s, s:O, s:I, s:I, s:I, s:I, s:O}", "id", p->id, "sandbox_id",
                     p->sandbox_id, "state", p->done ? "exited" : "running", "request",
                     p->request, "started_at", (json_int_t)p->started_at, "finished_at",
                     (json_int_t)p->finished_at, "stdout_offset",
                     (json_int_t)(p->out.base + p->out.len), "stderr_offset",
                     (json_int_t)(p->err.base + p->err.len), "result",
                     p->result ? p->result : json_null());
}

bool clr_service_sandbox_busy(clr_service *svc, const char *id)
{
    bool busy = false;
    pthread_mutex_lock(&procs_lock);
    for (struct proc *p = svc->procs; p && !busy; p = p->next)
        busy = !p->done && strcmp(p->sandbox_id, id) == 0;
    pthread_mutex_unlock(&procs_lock);
    if (!busy) {
        /* A command holds the sandbox's live state from before it starts until its record is
         * finished: its exec row is written only once it runs, so the row alone leaves the
         * reaper a window at the start. */
        pthread_mutex_lock(&svc->live_lock);
        struct live_sb *lv = *live_find_locked(svc, id);
        busy = lv && lv->refs > 1;
        pthread_mutex_unlock(&svc->live_lock);
    }
    return busy;
}

int clr_service_proc_start(clr_service *svc, const char *id, json_t *req, const char *actor,
                           json_t **out, clr_error *err)
{
    if (valid_id(id, err) < 0 || check_fields(req, "request", process_fields, err) < 0)
        return -1;
    struct command cmd;
    if (parse_command(&cmd, req, err) < 0 || command_bind(svc, &cmd, id, err) < 0) {
        command_clear(&cmd);
        return -1;
    }
    cmd.o.background = true;
    cmd.o.keep_stdin_open = true;
    pthread_mutex_lock(&procs_lock);
    int total = 0, here = 0;
    for (struct proc *p = svc->procs; p; p = p->next) {
        if (!p->done) {
            total++;
            here += strcmp(p->sandbox_id, id) == 0;
        }
    }
    pthread_mutex_unlock(&procs_lock);
    if (here >= MAX_PROCS_PER_SANDBOX || total >= MAX_PROCS) {
        command_clear(&cmd);
        atomic_fetch_add(&svc->refused, 1);
        return clr_error_set(err, CLR_E_LIMIT, 0,
                             "at capacity: %d background processes in this sandbox (max %d), "
                             "%d in all (max %d)",
                             here, MAX_PROCS_PER_SANDBOX, total, MAX_PROCS);
    }
    struct proc *p = calloc(1, sizeof(*p));
    if (!p) {
        command_clear(&cmd);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    uint8_t r[8];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        memset(r, 0, sizeof(r));
    snprintf(p->id, sizeof(p->id), "pr-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
    snprintf(p->sandbox_id, sizeof(p->sandbox_id), "%s", id);
    p->svc = svc;
    p->request = redacted(req);
    p->started_at = now_s();
    cmd.o.on_output = proc_on_output;
    cmd.o.ctx = p;
    /* Durable before it runs: the record names the process id it is about to get. */
    json_t *ad = json_deep_copy(p->request);
    json_object_set_new(ad, "process_id", json_string(p->id));
    int rc = clr_audit_append(svc->audit, actor, id, "process.start", "ok", ad, err);
    json_decref(ad);
    if (rc == 0)
        rc = engine_get(svc, &p->eng, err);
    if (rc == 0)
        rc = clr_sandbox_open_at(&p->sb, p->eng, id, svc->state_dir, err);
    if (rc == 0)
        rc = clr_exec_start(&p->h, p->eng, p->sb, &cmd.o, err);
    command_clear(&cmd);
    if (rc == 0 && pthread_create(&p->thread, NULL, proc_main, p) != 0) {
        clr_exec_signal(p->h, 9, NULL);
        clr_exec_free(p->h);
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, EAGAIN, "cannot start a thread");
    }
    if (rc < 0) {
        audit_failure(svc, actor, id, "process.start", err);
        clr_sandbox_free(p->sb);
        engine_put(svc, p->eng, true);
        json_decref(p->request);
        free(p);
        return -1;
    }
    pthread_mutex_lock(&procs_lock);
    p->next = svc->procs;
    svc->procs = p;
    *out = proc_json(p);
    pthread_mutex_unlock(&procs_lock);
    clr_store_sandbox_touch(svc->store, id, now_s(), NULL);
    clr_log(CLR_LOG_INFO, "service.process_started", "id", id, "process", p->id, "actor", actor,
            NULL);

    return 0;
}

int clr_service_proc_list(clr_service *svc, const char *id, json_t **out, clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    json_t *a = json_array();
    pthread_mutex_lock(&procs_lock);
    for (struct proc *p = svc->procs; p; p = p->next) {
        if (strcmp(p->sandbox_id, id) == 0)
            json_array_append_new(a, proc_json(p));
    }
    pthread_mutex_unlock(&procs_lock);
    *out = json_pack("{s:o}", "processes", a);
    return 0;
}

int clr_service_proc_get(clr_service *svc, const char *id, const char *proc_id, json_t **out,
                         clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    pthread_mutex_lock(&procs_lock);
    struct proc *p = proc_find(svc, id, proc_id);
    if (p)
        *out = proc_json(p);
    pthread_mutex_unlock(&procs_lock);
    return p ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no process %.64s in sandbox %s",
                                 proc_id, id);
}

static json_t *ring_json(const struct ring *r, uint64_t from)
{
    uint64_t end = r->base + r->len;
    uint64_t dropped = from < r->base ? r->base - from : 0;
    if (from < r->base)
        from = r->base;
    if (from > end)
        from = end;
    clr_exec_result tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.out.data = r->data ? r->data + (from - r->base) : NULL;
    tmp.out.len = (size_t)(end - from);
    json_t *j = clr_exec_result_to_json(&tmp);
    json_t *o = json_pack("{s:O, s:O, s:I, s:I}", "data", json_object_get(j, "stdout"),
                          "encoding", json_object_get(j, "stdout_encoding"), "next_offset",
                          (json_int_t)end, "dropped", (json_int_t)dropped);
    json_decref(j);
    return o;
}

int clr_service_proc_output(clr_service *svc, const char *id, const char *proc_id,
                            uint64_t out_off, uint64_t err_off, uint32_t wait_ms, json_t **out,
                            clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    if (wait_ms > 60000)
        return clr_error_set(err, CLR_E_INVALID, 0, "wait is at most 60 s");
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + (uint64_t)wait_ms * 1000000ull;
    until.tv_sec += (time_t)(ns / 1000000000ull);
    until.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&procs_lock);
    struct proc *p = proc_find(svc, id, proc_id);
    while (p && wait_ms && !p->done && p->out.base + p->out.len <= out_off &&
           p->err.base + p->err.len <= err_off) {
        if (pthread_cond_timedwait(&procs_cond, &procs_lock, &until) != 0)
            break;
        p = proc_find(svc, id, proc_id);
    }
    if (p)
        *out = json_pack("{s:s, s:s, s:o, s:o, s:O}", "id", p->id, "state",
                         p->done ? "exited" : "running", "stdout", ring_json(&p->out, out_off),
                         "stderr", ring_json(&p->err, err_off), "result",
                         p->result ? p->result : json_null());
    pthread_mutex_unlock(&procs_lock);
    return p ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no process %.64s in sandbox %s",
                                 proc_id, id);
}

/* Takes a live process's exec handle for one request; proc_release() gives it back. The
 * handle is not freed while taken, and procs_lock is not held while it is used, so a slow
 * stdin write never stalls the process's output. */
static struct proc *proc_take(clr_service *svc, const char *id, const char *proc_id,
                              clr_error *err)
{
    pthread_mutex_lock(&procs_lock);
    struct proc *p = proc_find(svc, id, proc_id);
    bool ok = p && !p->done && p->h;
    if (ok)
        p->users++;
    pthread_mutex_unlock(&procs_lock);
    if (!p) {
        clr_error_set(err, CLR_E_NOT_FOUND, 0, "no process %.64s in sandbox %s", proc_id, id);
        return NULL;
    }
    if (!ok) {
        clr_error_set(err, CLR_E_CONFLICT, 0, "process %s has exited", proc_id);
        return NULL;
    }
    return p;
}

static void proc_release(struct proc *p)
{
    pthread_mutex_lock(&procs_lock);
    p->users--;
    pthread_cond_broadcast(&procs_cond);
    pthread_mutex_unlock(&procs_lock);
}

/* {"data": "..."} or {"data_base64": "..."}, and "eof": a boolean. *buf (the decoded
 * data_base64, NULL if none) is the caller's to free. */
static int parse_stdin(json_t *req, uint8_t **buf, size_t *len, clr_error *err)
{
    static const char *const fields[] = {"data", "data_base64", "eof", NULL};
    *buf = NULL;
    *len = 0;
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *d = json_object_get(req, "data"), *b = json_object_get(req, "data_base64"),
           *eof = json_object_get(req, "eof");
    if ((d && !json_is_string(d)) || (d && b) || (eof && !json_is_boolean(eof)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "give data (a string) or data_base64, and eof (a boolean)");
    return b ? decode_base64(b, buf, len, err) : 0;
}

int clr_service_proc_stdin(clr_service *svc, const char *id, const char *proc_id, json_t *req,
                           clr_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (valid_id(id, err) < 0 || parse_stdin(req, &buf, &len, err) < 0)
        return -1;
    json_t *d = json_object_get(req, "data"), *eof = json_object_get(req, "eof");
    struct proc *p = proc_take(svc, id, proc_id, err);
    if (!p) {
        free(buf);
        return -1;
    }
    int rc = 0;
    if (d)
        rc = clr_exec_write_stdin(p->h, json_string_value(d), json_string_length(d), err);
    if (rc == 0 && buf)
        rc = clr_exec_write_stdin(p->h, buf, len, err);
    if (rc == 0 && json_is_true(eof))
        rc = clr_exec_close_stdin(p->h, err);
    proc_release(p);
    free(buf);
    return rc;
}

static int signal_number(json_t *v)
{
    static const struct {
        const char *name;
        int num;
    } names[] = {{"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"KILL", 9}, {"USR1", 10}, {"USR2", 12},
                 {"TERM", 15}, {"CONT", 18}, {"STOP", 19}};
    if (json_is_integer(v))
        return json_integer_value(v) > 0 && json_integer_value(v) < 65
                   ? (int)json_integer_value(v)
                   : -1;
    const char *s = json_string_value(v);
    if (!s)
        return -1;
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0)
            return names[i].num;
    }
    return -1;
}

int clr_service_proc_signal_num(clr_service *svc, const char *id, const char *proc_id, int sig,
                                const char *actor, clr_error *err)
{
    struct proc *p = proc_take(svc, id, proc_id, err);
    if (!p)
        return -1;
    /* Recorded before it is sent; the daemon's own kills at stop are recorded as such. */
    json_t *d = json_pack("{s:s, s:i}", "process_id", proc_id, "signal", sig);
    int rc = clr_audit_append(svc->audit, actor, id, "process.signal", "ok", d, err);
    json_decref(d);
    if (rc == 0)
        rc = clr_exec_signal(p->h, sig, err);
    proc_release(p);
    return rc;
}

static int parse_signal(json_t *req, int *sig, clr_error *err)
{
    static const char *const fields[] = {"signal", NULL};
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    *sig = signal_number(json_object_get(req, "signal"));
    if (*sig < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "signal must be a number 1..64 or a name such as \"TERM\"");
    return 0;
}

int clr_service_proc_signal(clr_service *svc, const char *id, const char *proc_id, json_t *req,
                            const char *actor, clr_error *err)
{
    int sig = 0;
    if (valid_id(id, err) < 0 || parse_signal(req, &sig, err) < 0)
        return -1;
    return clr_service_proc_signal_num(svc, id, proc_id, sig, actor, err);
}

/* At stop: the processes' streams are closed (their agents kill them), threads joined. */
static void procs_stop(clr_service *svc)
{
    for (struct proc *p = svc->procs; p; p = p->next) {
        struct proc *t = proc_take(svc, p->sandbox_id, p->id, NULL);
        if (t) {
            json_t *d = json_pack("{s:s, s:i}", "process_id", t->id, "signal", 9);
            clr_audit_append(svc->audit, "daemon (stopping)", t->sandbox_id, "process.signal",
                             "ok", d, NULL);
            json_decref(d);
            clr_exec_signal(t->h, 9, NULL);
            proc_release(t);
        }
    }
    for (struct proc *p = svc->procs; p;) {
        struct proc *n = p->next;
        pthread_join(p->thread, NULL);
        json_decref(p->result);
        json_decref(p->request);
        free(p->out.data);
        free(p->err.data);
        free(p);
        p = n;
    }
    svc->procs = NULL;
}

/* ---- files ---- */

static void sha256_fd(int fd, char out[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    char buf[65536];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    out[0] = '\0';
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) || lseek(fd, 0, SEEK_SET) < 0) {
        EVP_MD_CTX_free(ctx);
        return;
    }
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)r);
    if (r == 0 && EVP_DigestFinal_ex(ctx, d, &n)) {
        static const char hexd[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
            out[2 * i] = hexd[d[i] >> 4];
            out[2 * i + 1] = hexd[d[i] & 15];
        }
        out[64] = '\0';
    }
    EVP_MD_CTX_free(ctx);
    lseek(fd, 0, SEEK_SET);
}

/* read_only: a lost sandbox's workspace may be read too. */
static int open_workspace(clr_service *svc, const char *id, bool read_only, int *root,
                          clr_error *err)
{
    char dir[4096];
    if ((read_only ? workspace_to_read(svc, id, dir, sizeof(dir), err)
                   : clr_service_workspace(svc, id, dir, sizeof(dir), err)) < 0)
        return -1;
    return clr_files_open_root(root, dir, err);
}

/* Records a file action; the action already happened, so the error is the caller's to report. */
static int audit_file(clr_service *svc, const char *actor, const char *id, const char *action,
                      const char *path, int64_t size, const char *sha, clr_error *err)
{
    json_t *d = json_pack("{s:s, s:I, s:s?}", "path", path, "size", (json_int_t)size, "sha256",
                          sha && sha[0] ? sha : NULL);
    int rc = clr_audit_append(svc->audit, actor, id, action, "ok", d, err);
    json_decref(d);
    return rc;
}

int clr_service_file_put(clr_service *svc, const char *id, const char *rel, int src_fd,
                         const char *actor, json_t **out, clr_error *err)
{
    int root = -1;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, false, &root, err) < 0) {
        audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "file.upload", err);
        return -1;
    }
    char sha[65];
    sha256_fd(src_fd, sha);
    struct stat st;
    int64_t size = fstat(src_fd, &st) == 0 ? (int64_t)st.st_size : -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    int rc = clr_files_write(root, rel, src_fd, NULL, 0, 0644, &lim, err);
    close(root);
    if (rc < 0) {
        audit_failure(svc, actor, id, "file.upload", err);
        return -1;
    }
    if (audit_file(svc, actor, id, "file.upload", rel, size, sha, err) < 0)
        return -1;
    *out = json_pack("{s:s, s:I, s:s}", "path", rel, "size", (json_int_t)size, "sha256", sha);
    return 0;
}

int clr_service_file_get(clr_service *svc, const char *id, const char *rel, int out_fd,
                         clr_files_budget *budget, const char *actor, uint64_t *size,
                         uint64_t *charged, clr_error *err)
{
    int root = -1;
    *size = 0;
    *charged = 0;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = budget;
    clr_files_report rep;
    int rc = clr_files_read_ext(root, rel, out_fd, &lim, &rep, err);
    *size = rep.bytes;
    *charged = rep.charged;
    close(root);
    if (rc < 0) {
        audit_failure(svc, actor, id, "file.download", err);
        return -1;
    }
    char sha[65];
    sha256_fd(out_fd, sha);
    return audit_file(svc, actor, id, "file.download", rel, (int64_t)*size, sha, err);
}

int clr_service_file_list(clr_service *svc, const char *id, const char *rel, json_t **out,
                          clr_error *err)
{
    int root = -1;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) || open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_file_entry *e = NULL;
    size_t n = 0;
    int rc = clr_files_list(&e, &n, root, rel, 100000, err);
    close(root);
    if (rc < 0)
        return -1;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char mode[8];
        snprintf(mode, sizeof(mode), "%04o", e[i].mode & 07777);
        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:s, s:I, s:s?}", "name", e[i].name,
                                           "type", clr_files_type_name(e[i].type), "size",
                                           (json_int_t)e[i].size, "mode", mode, "mtime",
                                           (json_int_t)e[i].mtime, "target", e[i].link_target));
    }
    clr_files_entries_free(e, n);
    *out = json_pack("{s:s, s:o}", "path", rel, "entries", a);
    return 0;
}

int clr_service_file_delete(clr_service *svc, const char *id, const char *rel, bool recursive,
                            const char *actor, clr_error *err)
{
    int root = -1;
    if (clr_files_check_path(rel, err) < 0 || open_workspace(svc, id, false, &root, err) < 0)
        return -1;
    int rc = clr_files_delete(root, rel, recursive, err);
    close(root);
    if (rc < 0) {
        audit_failure(svc, actor, id, "file.delete", err);
        return -1;
    }
    return audit_file(svc, actor, id, "file.delete", rel, -1, NULL, err);
}

int clr_service_archive_put(clr_service *svc, const char *id, const char *rel, int tar_fd,
                            const char *actor, json_t **out, clr_error *err)
{
    int root = -1;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) || open_workspace(svc, id, false, &root, err) < 0) {
        audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "archive.upload", err);
        return -1;
    }
    char sha[65];
    sha256_fd(tar_fd, sha);
    clr_files_report rep;
    memset(&rep, 0, sizeof(rep));
    int rc = clr_files_extract_tar(root, rel, tar_fd, NULL, &rep, err);
    close(root);
    if (rc < 0) {
        audit_failure(svc, actor, id, "archive.upload", err);
        return -1;
    }
    json_t *d = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "path", rel, "entries",
                          (json_int_t)rep.entries, "files", (json_int_t)rep.files, "bytes",
                          (json_int_t)rep.bytes, "symlinks", (json_int_t)rep.symlinks, "sha256",
                          sha);
    rc = clr_audit_append(svc->audit, actor, id, "archive.upload", "ok", d, err);
    if (rc < 0) {
        json_decref(d);
        return -1;
    }
    *out = d;
    return 0;
}

int clr_service_archive_get(clr_service *svc, const char *id, const char *rel, int out_fd,
                            clr_files_budget *budget, const char *actor, uint64_t *charged,
                            clr_error *err)
{
    int root = -1;
    *charged = 0;
    if ((rel[0] && clr_files_check_path(rel, err) < 0) ||
        open_workspace(svc, id, true, &root, err) < 0)
        return -1;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = budget;
    clr_files_report rep;
    memset(&rep, 0, sizeof(rep));
    int rc = clr_files_create_tar(root, rel, out_fd, &lim, &rep, err);
    *charged = rep.charged;
    close(root);
    if (rc < 0) {
        audit_failure(svc, actor, id, "archive.download", err);
        return -1;
    }
    char sha[65];
    sha256_fd(out_fd, sha);
    json_t *d = json_pack("{s:s, s:I, s:I, s:I, s:s}", "path", rel, "entries",
                          (json_int_t)rep.entries, "bytes", (json_int_t)rep.bytes, "skipped",
                          (json_int_t)rep.skipped, "sha256", sha);
    rc = clr_audit_append(svc->audit, actor, id, "archive.download", "ok", d, err);
    json_decref(d);
    return rc;
}

/* ---- git ---- */

/* read_only: a lost sandbox too (while its stopped container, which names its repository, is
 * kept). */
static int open_sandbox(clr_service *svc, const char *id, bool read_only, clr_engine **eng,
                        clr_sandbox **sb, clr_error *err)
{
    char dir[4096];
    if ((read_only ? workspace_to_read(svc, id, dir, sizeof(dir), err)
                   : clr_service_workspace(svc, id, dir, sizeof(dir), err)) < 0)
        return -1;
    if (engine_get(svc, eng, err) < 0)
        return -1;
    if (clr_sandbox_open_at(sb, *eng, id, svc->state_dir, err) < 0) {
        engine_put(svc, *eng, true);
        *eng = NULL;
        return -1;
    }
    return 0;
}

/* message, author_name, author_email: strings; trailers: at most 16 "Key: value" strings, put
 * into trailers (NULL-terminated, borrowed from req). */
static int parse_commit(json_t *req, const char *trailers[17], clr_error *err)
{
    static const char *const fields[] = {"message", "author_name", "author_email", "trailers",
                                         NULL};
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *m = json_object_get(req, "message"), *an = json_object_get(req, "author_name"),
           *ae = json_object_get(req, "author_email"), *tr = json_object_get(req, "trailers");
    if ((m && !json_is_string(m)) || (an && !json_is_string(an)) || (ae && !json_is_string(ae)) ||
        (tr && (!json_is_array(tr) || json_array_size(tr) > 16)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "message, author_name, author_email are strings; trailers a list of "
                             "at most 16 \"Key: value\" strings");
    size_t i;
    json_t *t;
    json_array_foreach(tr, i, t) {
        const char *v = json_string_value(t);
        if (!v || !strchr(v, ':') || strchr(v, '\n'))
            return clr_error_set(err, CLR_E_INVALID, 0, "trailers[%zu] must be \"Key: value\"", i);
        if (clr_commit_claims_clearing(v))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "trailers[%zu]: Clearing-* trailers are written by clearing "
                                 "alone (the verdict, its signature); use another key",
                                 i);
        trailers[i] = v;
    }
    return 0;
}

int clr_service_commit(clr_service *svc, const char *id, json_t *req, const char *actor,
                       json_t **out, clr_error *err)
{
    const char *trailers[17] = {NULL};
    if (valid_id(id, err) < 0 || parse_commit(req, trailers, err) < 0)
        return -1;
    json_t *m = json_object_get(req, "message"), *an = json_object_get(req, "author_name"),
           *ae = json_object_get(req, "author_email");
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    if (open_sandbox(svc, id, false, &eng, &sb, err) < 0)
        return -1;
    clr_git_commit_result r;
    memset(&r, 0, sizeof(r));
    int rc = clr_sandbox_commit(&r, sb, json_string_value(m), json_string_value(an),
                                json_string_value(ae), trailers, NULL, err);
    clr_sandbox_free(sb);
    engine_put(svc, eng, false);
    if (rc < 0) {
        audit_failure(svc, actor, id, "commit", err);
        return -1;
    }
    json_t *skipped = json_array();
    for (size_t k = 0; k < r.n_skipped; k++)
        json_array_append_new(skipped, json_pack("{s:o, s:s}", "path",
                                                 json_stringn_nocheck(r.skipped[k].path,
                                                                      strlen(r.skipped[k].path)),
                                                 "kind", r.skipped[k].kind));
    json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:s, s:o}", "commit", r.commit, "branch",
                          r.branch, "changed", r.changed, "files_changed",
                          (json_int_t)r.files_changed, "insertions", (json_int_t)r.insertions,
                          "deletions", (json_int_t)r.deletions, "diffstat",
                          r.stat_text ? r.stat_text : "", "skipped", skipped);
    clr_git_commit_result_clear(&r);
    json_t *d = json_deep_copy(o);
    json_object_del(d, "diffstat");
    rc = clr_audit_append(svc->audit, actor, id, "commit", "ok", d, err);
    json_decref(d);
    if (rc < 0) {
        json_decref(o);
        return -1;
    }
    clr_store_sandbox_touch(svc->store, id, now_s(), NULL);
    *out = o;
    return 0;
}

int clr_service_diff(clr_service *svc, const char *id, char **out, clr_error *err)
{
    if (valid_id(id, err) < 0)
        return -1;
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    if (open_sandbox(svc, id, true, &eng, &sb, err) < 0)
        return -1;
    int rc = clr_sandbox_diff(out, sb, err);
    clr_sandbox_free(sb);
    engine_put(svc, eng, false);
    return rc;
}

/* ---- plans and gauntlets ---- */

struct plan_events {
    clr_service_event_cb cb;
    void *ctx;
};

static void plan_event(void *ctx, json_t *ev)
{
    struct plan_events *pe = ctx;
    if (pe->cb)
        pe->cb(pe->ctx, ev);
}

/* A plan is one of the daemon's sandboxes and runs its commands within max_execs: admitted
 * under the same lock and with the same refusal as a create, its sandbox a row of its own
 * (state "plan") from before anything runs in it until it is destroyed, so a restart finds
 * it (recover). */
struct plan_admission {
    clr_service *svc;
    unsigned execs;   /* slots of running_execs it holds */
    bool pending;     /* counted in plans_pending, listed in pending_plans */
    bool recorded;    /* its row exists */
    struct pending_plan node; /* its tenant and limits, for the tenant's quota */
};

/* Takes the plan off pending_plans. create_lock held. */
static void plan_unpend_locked(clr_service *svc, struct plan_admission *a)
{
    for (struct pending_plan **p = &svc->pending_plans; *p; p = &(*p)->next) {
        if (*p == &a->node) {
            *p = a->node.next;
            break;
        }
    }
    svc->plans_pending--;
    a->pending = false;
}

static int plan_admit(void *ctx, unsigned *execs, clr_error *err)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    pthread_mutex_lock(&svc->create_lock);
    if (sandbox_room_locked(svc, a->node.tenant, &a->node.limits, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        return -1;
    }
    /* One command slot at least (its steps run one by one), more for a parallel gauntlet as
     * far as there is room: it then runs no more checks at once than it holds. */
    unsigned got = 0;
    while (got < *execs) {
        if (atomic_fetch_add(&svc->running_execs, 1) >= (int)svc->cfg.max_execs) {
            atomic_fetch_sub(&svc->running_execs, 1);
            break;
        }
        got++;
    }
    if (got == 0) {
        pthread_mutex_unlock(&svc->create_lock);
        atomic_fetch_add(&svc->refused, 1);
        return clr_error_set(err, CLR_E_LIMIT, 0,
                             "at capacity: %u commands are running (max_execs); retry later",
                             svc->cfg.max_execs);
    }
    svc->plans_pending++;
    a->node.next = svc->pending_plans;
    svc->pending_plans = &a->node;
    pthread_mutex_unlock(&svc->create_lock);
    a->pending = true;
    a->execs = got;
    *execs = got;
    return 0;
}

static int plan_created(void *ctx, const clr_sandbox_info *info, clr_error *err)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    clr_store_sandbox row;
    memset(&row, 0, sizeof(row));
    row.info = *info;
    snprintf(row.info.state, sizeof(row.info.state), CLR_STATE_PLAN);
    row.max_expires_at = info->max_expires_at;
    row.last_active_at = now_s();
    row.metadata = json_object();
    row.env = json_array();
    pthread_mutex_lock(&svc->create_lock);
    int rc = clr_store_sandbox_insert(svc->store, &row, err);
    plan_unpend_locked(svc, a);
    pthread_mutex_unlock(&svc->create_lock);
    clr_store_sandbox_clear(&row);
    a->recorded = rc == 0;
    if (rc == 0)
        atomic_fetch_add(&svc->created, 1);
    return rc;
}

static void plan_release(void *ctx, const char *id)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    if (a->pending) {
        pthread_mutex_lock(&svc->create_lock);
        plan_unpend_locked(svc, a);
        pthread_mutex_unlock(&svc->create_lock);
    }
    if (a->recorded && id) {
        clr_error lerr = CLR_ERROR_INIT;
        if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, "plan-finished",
                                        now_s(), &lerr) < 0)
            clr_log(CLR_LOG_ERROR, "plan.unrecorded_destroy", "id", id, "error", lerr.message,
                    NULL);
        a->recorded = false;
    }
    atomic_fetch_sub(&svc->running_execs, (int)a->execs);
    a->execs = 0;
}

/* The plan request's fields and the plan itself (*plan: clr_plan_free); repo still to be checked
 * against repo_roots. */
static int parse_plan_request(json_t *req, clr_plan **plan, clr_error *err)
{
    *plan = NULL;
    static const char *const fields[] = {"plan", "repo", "profile", "gauntlet_only", "base",
                                         NULL};
    if (check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *jplan = json_object_get(req, "plan"), *jrepo = json_object_get(req, "repo"),
           *jprofile = json_object_get(req, "profile"), *jbase = json_object_get(req, "base");
    bool gauntlet_only = json_is_true(json_object_get(req, "gauntlet_only"));
    if (!json_is_string(jrepo) || (jprofile && !json_is_string(jprofile)) ||
        (jbase && !json_is_string(jbase)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "repo (a path under repo_roots) is required; profile and base are "
                             "strings");
    char *text = NULL;
    if (gauntlet_only) {
        /* A gauntlet on a repository is a plan without steps that commits nothing. */
        json_t *p = json_pack("{s:[], s:b}", "steps", "commit_on_failure", 0);
        if (jbase)
            json_object_set(p, "base", jbase);
        text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
    } else if (json_is_object(jplan)) {
        text = json_dumps(jplan, JSON_COMPACT);
    } else if (json_is_string(jplan)) {
        text = strdup(json_string_value(jplan));
    } else {
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "plan must be an object or a YAML/JSON string (or gauntlet_only)");
    }
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    int rc = clr_plan_parse(plan, text, strlen(text), "plan", err);
    free(text);
    return rc;
}

int clr_service_plan(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                     clr_service_event_cb on_event, void *ctx, json_t **out, clr_error *err)
{
    tenant = tenant_or_default(tenant);
    clr_plan *plan = NULL;
    if (parse_plan_request(req, &plan, err) < 0)
        return -1;
    json_t *jrepo = json_object_get(req, "repo"), *jprofile = json_object_get(req, "profile");
    clr_repo_admitted admitted;
    int rc = image_allowed(svc, clr_plan_image(plan, json_string_value(jprofile)), err);
    if (rc == 0)
        rc = clr_repo_admit(&admitted, svc->cfg.repo_roots, json_string_value(jrepo), err);
    if (rc < 0) {
        clr_plan_free(plan);
        return -1;
    }
    struct plan_admission adm_ctx = {.svc = svc};
    snprintf(adm_ctx.node.tenant, sizeof(adm_ctx.node.tenant), "%s", tenant);
    adm_ctx.node.limits = *clr_plan_limits(plan);
    const clr_plan_admission adm = {
        .admit = plan_admit, .created = plan_created, .release = plan_release, .ctx = &adm_ctx};
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    eo.host = svc->docker_host;
    struct plan_events pe = {on_event, ctx};
    clr_plan_run_options ro = {
        .repo_path = admitted.path,
        .repo_id = &admitted.id,
        .profile = json_string_value(jprofile),
        .state_dir = svc->state_dir,
        .insecure_runtime = svc->insecure_runtime,
        .engine = &eo,
        .audit = svc->audit,
        .gauntlet_ref = svc->cfg.gauntlet_ref,
        .verdict_key = svc->verdict_key,
        .actor = actor,
        .on_event = plan_event,
        .ctx = &pe,
        .owner = svc->owner,
        .tenant = tenant,
        .admission = &adm,
    };
    rc = clr_plan_run(out, plan, &ro, err);
    clr_plan_free(plan);
    return rc;
}

/* ---- request checks without side effects (the fuzzers' entry point) ---- */

/* The same parsers the handlers run, minus what needs the daemon (repo_roots, the database). */
int clr_service_check_request(const char *kind, json_t *req, clr_error *err)
{
    if (!json_is_object(req))
        return clr_error_set(err, CLR_E_INVALID, 0, "the request body must be a JSON object");
    if (strcmp(kind, "exec") == 0 || strcmp(kind, "process") == 0) {
        bool exec = kind[0] == 'e';
        if (check_fields(req, "request", exec ? exec_fields : process_fields, err) < 0)
            return -1;
        struct command cmd;
        int rc = parse_command(&cmd, req, err);
        command_clear(&cmd);
        return rc;
    }
    if (strcmp(kind, "create") == 0) {
        clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
        uint64_t idle_ms = 0;
        const char *repo_path = NULL;
        char **env = NULL;
        int rc = parse_create(req, &o, &idle_ms, &repo_path, &env, err);
        free_strv(env);
        return rc;
    }
    if (strcmp(kind, "extend") == 0) {
        uint64_t ms = 0;
        return parse_extend(req, &ms, err);
    }
    if (strcmp(kind, "stdin") == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = parse_stdin(req, &buf, &len, err);
        free(buf);
        return rc;
    }
    if (strcmp(kind, "signal") == 0) {
        int sig = 0;
        return parse_signal(req, &sig, err);
    }
    if (strcmp(kind, "commit") == 0) {
        const char *trailers[17] = {NULL};
        return parse_commit(req, trailers, err);
    }
    if (strcmp(kind, "plan") == 0) {
        clr_plan *plan = NULL;
        int rc = parse_plan_request(req, &plan, err);
        clr_plan_free(plan);
        return rc;
    }
    return clr_error_set(err, CLR_E_INVALID, 0, "unknown request kind '%.32s'", kind);
}
