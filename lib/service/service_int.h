/* The daemon's shared state: struct clr_service, which every module of lib/service/ reads, and
 * the few helpers they all use (clocks, latency histograms). Not installed: the public contract is
 * include/clearing/service.h, each module's own contract its header in this directory.
 *
 * Layers: a module calls only the modules below it (scripts/check-structure.py checks that no two
 * files call each other, directly or around a cycle):
 *   service.c    the wiring: start (checks, state lock, store, audit, key, threads) and stop
 *   events.c     -> reaper, rows, engines
 *   reaper.c     -> lifecycle, procs, removal, channels, rows, engines (reaper, reconcile, recovery)
 *   lifecycle.c  -> warm, removal, channels, tenants, rows, validate, engines
 *   procs.c      -> code, execs, channels, rows, validate, engines
 *   code.c       -> execs, rows, validate, engines (the code interpreter's sessions)
 *   execs.c      -> channels, tenants, rows, validate, engines
 *   plans.c, metrics.c, git.c, svc_files.c -> tenants, rows, validate, engines
 *   warm.c, removal.c -> engines (removal also validate)
 *   channels.c, rows.c, tenants.c, engines.c, validate.c: the bottom (rows -> validate)
 *
 * Ordering rule: a row is written (and synced by SQLite) before the client hears of the thing it
 * records, and before the engine is asked to do anything the row would have to explain after a
 * crash. A sandbox row is inserted right after its container started; if the daemon dies between
 * the two, the container carries our owner label and is removed at the next start. */
#ifndef CLR_SERVICE_INT_H
#define CLR_SERVICE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clearing/audit.h"
#include "clearing/egress.h"
#include "clearing/service.h"
#include "clearing/store.h"
#include "clearing/verdict.h"
#include "../internal.h"

#define ENGINE_POOL_MAX 16
#define NBUCKETS 13

/* The upper bound of histogram bucket i (seconds), i < NBUCKETS. */
static inline double svc_bucket_le(int i)
{
    static const double le[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60};
    return le[i];
}

struct pending_plan;
struct proc;
struct removal;
struct warm;

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
    /* Commands running in the sandboxes of each tenant with a quota (cfg.tenants[i]): its
     * share of running_execs, bound by its max_execs (tenants.c). */
    atomic_int tenant_execs[CLR_SERVICE_TENANTS_MAX];

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
    unsigned procs_exited_keep; /* exited ones kept per sandbox (0: the default, 16) */
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
    /* The newest removals given up after their last attempt, with the engine's last answer, so
     * that a caller waiting for one hears that it failed (a ring; queueing the id again clears
     * its entry). */
    struct {
        char id[CLR_SANDBOX_ID_MAX + 1];
        char message[160];
    } rm_failed[16];
    unsigned rm_failed_next;
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
    /* Code sessions (code.c): one per sandbox that ran a cell; guarded by code.c's lock. */
    struct code_session *codes;
    unsigned code_sessions_cap; /* sessions in use at most; 0: CLR_SERVICE_CODE_SESSIONS_MAX (the
                                 * unit tests lower it) */
    /* Snapshots being written and restores in place under way now (snapshots.c, lifecycle.c)
     * hold it for writing: the engine's picture of those sandboxes is in flux (a checkpoint
     * freezes the container, a restore runs none between its two). The reconcile pass and the
     * event watcher's judgement of a death hold it for reading across their whole look and act
     * (svc_snapshot_gate_try_read), never waiting for it: busy, they skip to their next turn. A
     * counter checked before the act let a writer start between the check and the act. */
    pthread_rwlock_t snapshot_gate;
    /* The sandbox a restore in place is replacing now ("": none; restores run one at a time),
     * guarded by live_lock: while it is set, its other operations, destroy and the reaper wait
     * their turn (409), so none of them acts on the gap between its two containers. */
    char restoring[CLR_SANDBOX_ID_MAX + 1];
};

struct live_sb {
    clr_service *svc;
    char id[CLR_SANDBOX_ID_MAX + 1];
    clr_sandbox *sb;
    clr_channel *ch; /* NULL: its agent serves no channel (an older sandbox): docker exec */
    clr_egress *egress; /* its proxy's connections (over ch) */
    /* The channels its agent named when ch was opened (commands it still knows, from before
     * the open), less those whose result it replayed then: written once, in the open, before
     * ch is set (by the channel's reader thread, as are ended and listed_set). */
    uint32_t *listed;
    size_t nlisted;
    uint32_t *ended; /* results replayed before the list came (at most LIVE_ENDED_MAX) */
    size_t nended, ended_cap;
    bool listed_set;
    int refs;        /* guarded by live_lock */
    struct live_sb *next;
};

/* Whether a restore in place is replacing sandbox id now (see clr_service.restoring). */
static inline bool svc_restoring(clr_service *svc, const char *id)
{
    pthread_mutex_lock(&svc->live_lock);
    bool r = svc->restoring[0] && strcmp(svc->restoring, id) == 0;
    pthread_mutex_unlock(&svc->live_lock);
    return r;
}

/* Marks sandbox id as being restored (NULL: the restore is over). */
static inline void svc_set_restoring(clr_service *svc, const char *id)
{
    pthread_mutex_lock(&svc->live_lock);
    snprintf(svc->restoring, sizeof(svc->restoring), "%s", id ? id : "");
    pthread_mutex_unlock(&svc->live_lock);
}

/* The gate prefers writers: glibc's default read-write lock lets a new reader in while a
 * writer waits, so back-to-back reconcile passes and death judgements could keep a snapshot or
 * restore waiting for ever; with a writer waiting, a try-read fails (skip to the next turn) and
 * the writer gets the lock once the look under way is done. */
static inline void svc_snapshot_gate_init(clr_service *svc)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&svc->snapshot_gate, &a);
    pthread_rwlockattr_destroy(&a);
}

/* A snapshot or restore begins to change what the engine shows of a sandbox: waits until no
 * reconcile pass or death judgement is looking (they do not wait in turn: no deadlock). */
static inline void svc_snapshot_gate_write(clr_service *svc)
{
    pthread_rwlock_wrlock(&svc->snapshot_gate);
}

static inline void svc_snapshot_gate_write_done(clr_service *svc)
{
    pthread_rwlock_unlock(&svc->snapshot_gate);
}

/* A look at the engine that may mark sandboxes lost: false while a snapshot or restore is under
 * way or waits to begin (skip, look again later); true holds off any that would begin, until
 * svc_snapshot_gate_read_done, so the act is on what was looked at. */
static inline bool svc_snapshot_gate_try_read(clr_service *svc)
{
    return pthread_rwlock_tryrdlock(&svc->snapshot_gate) == 0;
}

static inline void svc_snapshot_gate_read_done(clr_service *svc)
{
    pthread_rwlock_unlock(&svc->snapshot_gate);
}

/* The 409 of an operation on a sandbox a restore is replacing. */
static inline int svc_restoring_error(clr_error *err, const char *id)
{
    return clr_error_set(err, CLR_E_CONFLICT, 0,
                         "sandbox %s is being restored from a snapshot: try again once the "
                         "restore has answered", id);
}

/* Wall-clock seconds (what rows record). */
static inline int64_t svc_now_s(void)
{
    return (int64_t)time(NULL);
}

/* Monotonic microseconds (what latencies are measured with). */
static inline uint64_t svc_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Counts one latency of us microseconds into h. */
static inline void svc_observe(struct histogram *h, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < NBUCKETS && s > svc_bucket_le(i))
        i++;
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->total_us, us);
    atomic_fetch_add(&h->n, 1);
}

/* The tenant a row or request belongs to: CLR_TENANT_DEFAULT when it names none. */
static inline const char *svc_tenant_or_default(const char *tenant)
{
    return tenant && *tenant ? tenant : CLR_TENANT_DEFAULT;
}

#endif
