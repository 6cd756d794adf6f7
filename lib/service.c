/* The daemon's wiring: the service's state set up and torn down (clr_service_start,
 * clr_service_stop), its threads started and joined, in the order the modules of lib/service/
 * need (see lib/service/service_int.h for their layers). */
#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "clearing/plan.h"
#include "sandbox_spec.h"

#include "service/channels.h"
#include "service/engines.h"
#include "service/events.h"
#include "service/code.h"
#include "service/procs.h"
#include "service/reaper.h"
#include "service/removal.h"
#include "service/service_int.h"
#include "service/snapshots.h"
#include "service/validate.h"
#include "service/warm.h"

CLR_DEFINE_CLEANUP(clr_service *, clr_service_stop)
#define _cleanup_service_ __attribute__((cleanup(clr_service_stopp)))

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
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == ENOENT && mkdir(svc->state_dir, 0700) == 0)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot open %s: %s; check that the state directory exists and is "
                             "writable by the daemon", path, strerror(errno));
    uint64_t until = svc_mono_us() + STATE_LOCK_WAIT_MS * 1000ull;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if ((errno != EWOULDBLOCK && errno != EINTR) || svc_mono_us() >= until) {
            int e = errno;
            char holder[32] = "";
            ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
            holder[n > 0 ? n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
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
    svc->lock_fd = steal_fd(&fd);
    return 0;
}

static void verdict_key_path(char path[PATH_MAX], const clr_service *svc,
                             const clr_service_config *cfg)
{
    if (cfg->verdict_key)
        snprintf(path, PATH_MAX, "%s", cfg->verdict_key);
    else
        snprintf(path, PATH_MAX, "%s/verdict.key", svc->state_dir);
}

/* The key that signs plans' verdicts and the audit log's checkpoints: loaded, or made at the
 * first start (*created), before the audit log is opened. A key that cannot be read or is
 * readable by others stops the start: plans would run unsigned. */
static int load_verdict_key(clr_service *svc, const clr_service_config *cfg, bool *created,
                            clr_error *err)
{
    char path[PATH_MAX];
    verdict_key_path(path, svc, cfg);
    return clr_verdict_key_load(&svc->verdict_key, path, true, created, err);
}

/* A key made at this start is on record, once the audit log is open. */
static int record_verdict_key(clr_service *svc, const clr_service_config *cfg, bool created,
                              clr_error *err)
{
    char path[PATH_MAX];
    verdict_key_path(path, svc, cfg);
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

/* The service's state, its strings copied and its locks made; nothing opened yet. *out is the
 * caller's (clr_service_stop), also after a failure. */
static int service_new(clr_service **out, const clr_service_config *cfg, clr_error *err)
{
    clr_service *svc = calloc(1, sizeof(*svc));
    *out = svc;
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
    svc->cfg.allowed_images = NULL; /* until checked (check_images) */
    pthread_mutex_init(&svc->pool_lock, NULL);
    pthread_mutex_init(&svc->create_lock, NULL);
    pthread_mutex_init(&svc->reaper_lock, NULL);
    pthread_cond_init(&svc->reaper_cond, NULL);
    pthread_mutex_init(&svc->warm_lock, NULL);
    pthread_cond_init(&svc->warm_cond, NULL);
    pthread_mutex_init(&svc->rm_lock, NULL);
    pthread_mutex_init(&svc->health_lock, NULL);
    pthread_mutex_init(&svc->live_lock, NULL);
    svc_snapshot_gate_init(svc);
    pthread_cond_init(&svc->rm_cond, NULL);
    pthread_cond_init(&svc->rm_done, NULL);
    if (!svc->state_dir || !svc->db_path)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    /* The owner label ties containers to this database: after a restart we adopt or remove
     * exactly these, and leave CLI runs and other daemons' sandboxes alone. */
    snprintf(svc->owner, sizeof(svc->owner), "daemon:%s", svc->db_path);
    return 0;
}

/* The operator's allowed_images: at least one pattern, the default image among them; a
 * weakening is the operator's explicit choice, and it is on record. */
static int check_images(clr_service *svc, const clr_service_config *cfg, clr_error *err)
{
    if (cfg->allowed_images && (!cfg->allowed_images[0] || !cfg->allowed_images[0][0]))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "allowed_images must list at least one non-empty pattern");
    svc->cfg.allowed_images = cfg->allowed_images;
    if (svc_image_allowed(svc, NULL, err) < 0)
        return clr_error_prefix(err, "the default image (setting image)");
    if (!cfg->allowed_images)
        return 0;
    char list[512];
    svc_allowed_images_text(svc, list, sizeof(list));
    bool any = false;
    for (const char *const *p = cfg->allowed_images; *p; p++)
        any |= fnmatch(*p, "any/image:at-all", 0) == 0;
    clr_log(CLR_LOG_WARN, "service.allowed_images", "patterns", list, "detail",
            any ? "ANY image may be used: isolation weakened by operator setting"
                : "images allowed by operator setting",
            NULL);
    return 0;
}

/* The audit log, at audit_path (default: in the state directory). */
static int open_audit(clr_service *svc, const clr_service_config *cfg, clr_error *err)
{
    clr_audit_options ao = CLR_AUDIT_OPTIONS_INIT;
    _cleanup_free_ char *audit_path = NULL;
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
    ao.checkpoint_key = svc->verdict_key;
    return audit_path ? clr_audit_open(&svc->audit, &ao, err)
                      : clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
}

/* The engine answers and has the runtime sandboxes run under (runsc, unless the operator chose
 * an insecure one, which is logged). */
static int check_runtime(clr_service *svc, clr_error *err)
{
    /* The sandboxes' own rule (only runc may replace runsc), before the engine is asked: a
     * daemon whose every create would be refused does not start. */
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    so.insecure_runtime = svc->insecure_runtime;
    const char *runtime = NULL;
    bool insecure = false;
    if (clr_sandbox_spec_runtime(&so, &runtime, &insecure, err) < 0)
        return clr_error_prefix(err, "setting insecure_runtime");
    clr_engine *eng = NULL;
    bool registered = false;
    if (svc_engine_get(svc, &eng, err) < 0 ||
        clr_engine_has_runtime(eng, runtime, &registered, err) < 0) {
        svc_engine_put(svc, eng, true);
        return -1;
    }
    svc_engine_put(svc, eng, false);
    if (!registered && insecure)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the runtime '%s' (setting insecure_runtime) is not registered with "
                             "the Docker engine; the daemon does not start without it",
                             runtime);
    if (!registered)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the gVisor runtime 'runsc' is not registered with the Docker "
                             "engine: run scripts/setup.sh; the daemon does not start without it");
    if (insecure)
        clr_log(CLR_LOG_WARN, "service.insecure_runtime", "runtime", svc->insecure_runtime,
                "detail", "every sandbox of this daemon runs WITHOUT gVisor", NULL);
    return 0;
}

/* The remover first: recovery hands it the removals it cannot finish at once. Then the
 * recovery, the reaper, the event watcher and the warm pool. */
static int start_threads(clr_service *svc, const clr_service_config *cfg, clr_error *err)
{
    if (pthread_create(&svc->rm_thread, NULL, svc_remover_main, svc) != 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the remover thread");
    svc->rm_started = true;
    if (svc_recover(svc, err) < 0)
        return clr_error_prefix(err, "recovering state");
    svc_snapshots_sweep(svc); /* what a killed daemon left half-made */
    if (pthread_create(&svc->reaper, NULL, svc_reaper_main, svc) != 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the reaper thread");
    svc->reaper_started = true;
    if (clr_engine_cancel_new(&svc->watch_cancel, err) < 0)
        return -1;
    if (pthread_create(&svc->watch_thread, NULL, svc_watch_main, svc) != 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the event watcher thread");
    svc->watch_started = true;
    if (cfg->pool_size) {
        if (pthread_create(&svc->warm_thread, NULL, svc_warm_main, svc) == 0)
            svc->warm_started = true;
        else
            clr_log(CLR_LOG_WARN, "pool.not_started", NULL);
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
    if (cfg->ntenants > CLR_SERVICE_TENANTS_MAX)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "%zu tenants have quotas: at most %d may", cfg->ntenants,
                             CLR_SERVICE_TENANTS_MAX);
    /* Stopped on every failure below: each step leaves what it made for clr_service_stop(). */
    _cleanup_service_ clr_service *svc = NULL;
    bool key_created = false;
    if (service_new(&svc, cfg, err) < 0 || check_images(svc, cfg, err) < 0 ||
        state_lock(svc, err) < 0 || clr_store_open(&svc->store, svc->db_path, err) < 0 ||
        load_verdict_key(svc, cfg, &key_created, err) < 0 || open_audit(svc, cfg, err) < 0 ||
        record_verdict_key(svc, cfg, key_created, err) < 0 || check_runtime(svc, err) < 0 ||
        start_threads(svc, cfg, err) < 0)
        return -1;
    *out = steal_pointer(&svc);
    return 0;
}

void clr_service_stop(clr_service *svc)
{
    if (!svc)
        return;
    svc_code_stop(svc);
    svc_procs_stop(svc);
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
        svc_live_put(svc, lv);
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
        svc_removals_drain(svc);
    svc_warm_stop(svc);
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
    pthread_rwlock_destroy(&svc->snapshot_gate);
    pthread_cond_destroy(&svc->rm_cond);
    pthread_cond_destroy(&svc->rm_done);
    free(svc);
}
