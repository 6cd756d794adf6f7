/* warm: see warm.h. */

#include "engines.h"
#include "service_int.h"
#include "warm.h"

struct warm {
    clr_sandbox *sb;
    /* Its live channel, attached and answered while it waits (NULL: none could be had, the
     * first command attaches), so the first command of a pooled sandbox does not pay for it. */
    clr_channel *ch;
    int64_t made_at;
    struct warm *next;
};

#define WARM_MAX_AGE_S 1800 /* pooled sandboxes are remade after this, so none grows stale */

/* Takes a pooled sandbox out of service: its channel (NULL: none) closed, its container and
 * workspace removed. */
void svc_warm_discard(clr_service *svc, clr_sandbox *sb, clr_channel *ch, const char *why)
{
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    clr_channel_close(ch);
    if (svc_engine_get(svc, &eng, &err) == 0)
        clr_sandbox_destroy(eng, clr_sandbox_get_info(sb)->id, why, svc->state_dir, &err);
    svc_engine_put(svc, eng, false);
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
    if (!w || svc_engine_get(svc, &eng, &err) < 0 ||
        clr_sandbox_create(&w->sb, eng, &o, &err) < 0) {
        svc_engine_put(svc, eng, true);
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
    svc_engine_put(svc, eng, false);
    if (!ready) {
        clr_log(CLR_LOG_WARN, "pool.not_ready", "id", clr_sandbox_get_info(w->sb)->id, NULL);
        svc_warm_discard(svc, w->sb, w->ch, "pool-not-ready");
        free(w);
        return NULL;
    }
    w->made_at = svc_now_s();
    return w;
}

#define REFILL_QUIET_MS 500 /* no refill before a hand-out is this old */

void *svc_warm_main(void *p)
{
    clr_service *svc = p;
    pthread_mutex_lock(&svc->warm_lock);
    while (!svc->stopping) {
        /* Remake the oldest when it is too old; fill up to the size. */
        struct warm **pp = &svc->warm;
        while (*pp && (*pp)->next)
            pp = &(*pp)->next;
        if (*pp && svc_now_s() - (*pp)->made_at > WARM_MAX_AGE_S) {
            struct warm *old = *pp;
            *pp = NULL;
            svc->warm_ready--;
            pthread_mutex_unlock(&svc->warm_lock);
            svc_warm_discard(svc, old->sb, old->ch, "pool-recycled");
            free(old);
            pthread_mutex_lock(&svc->warm_lock);
            continue;
        }
        /* A refill right after a hand-out would start a container (hundreds of milliseconds of
         * dockerd, containerd and runsc on every core) under the first commands of the sandbox
         * just handed out, which is what the pool is there to make fast: it waits until the
         * hand-out is REFILL_QUIET_MS old. */
        uint64_t since = svc_mono_us() - svc->warm_taken_us;
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
clr_sandbox *svc_warm_take(clr_service *svc, clr_channel **ch)
{
    pthread_mutex_lock(&svc->warm_lock);
    struct warm *w = svc->warm;
    if (w) {
        svc->warm = w->next;
        svc->warm_ready--;
        svc->warm_taken_us = svc_mono_us();
    }
    pthread_cond_signal(&svc->warm_cond);
    pthread_mutex_unlock(&svc->warm_lock);
    clr_sandbox *sb = w ? w->sb : NULL;
    *ch = w ? w->ch : NULL;
    free(w);
    atomic_fetch_add(sb ? &svc->warm_hits : &svc->warm_misses, 1);
    return sb;
}

void svc_warm_stop(clr_service *svc)
{
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
        svc_warm_discard(svc, w->sb, w->ch, "pool-stop");
        free(w);
    }
}
