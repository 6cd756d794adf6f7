/* removal: see removal.h. */
#include <errno.h>
#include <string.h>

#include "clearing/plan.h"

#include "engines.h"
#include "removal.h"
#include "service_int.h"
#include "validate.h"

struct removal {
    char id[CLR_SANDBOX_ID_MAX + 1];
    char reason[32];
    unsigned attempts;
    struct removal *next;
};

#define REMOVAL_MAX_ATTEMPTS 5    /* then the next reconcile pass queues it again */
#define REMOVAL_DRAIN_TIMEOUT_S 30 /* at stop; what is left is resumed at the next start */

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

/* The entry of a removal given up for id, or NULL. */
static const char *removal_failure_locked(clr_service *svc, const char *id)
{
    for (size_t i = 0; i < sizeof(svc->rm_failed) / sizeof(svc->rm_failed[0]); i++) {
        if (svc->rm_failed[i].id[0] && strcmp(svc->rm_failed[i].id, id) == 0)
            return svc->rm_failed[i].message;
    }
    return NULL;
}

static void removal_failure_clear_locked(clr_service *svc, const char *id)
{
    for (size_t i = 0; i < sizeof(svc->rm_failed) / sizeof(svc->rm_failed[0]); i++) {
        if (strcmp(svc->rm_failed[i].id, id) == 0)
            svc->rm_failed[i].id[0] = '\0';
    }
}

static void removal_failure_record_locked(clr_service *svc, const char *id, const char *message)
{
    size_t n = sizeof(svc->rm_failed) / sizeof(svc->rm_failed[0]);
    removal_failure_clear_locked(svc, id);
    size_t i = svc->rm_failed_next++ % n;
    snprintf(svc->rm_failed[i].id, sizeof(svc->rm_failed[i].id), "%s", id);
    size_t len = strnlen(message, sizeof(svc->rm_failed[i].message) - 1); /* cut, not refused */
    memcpy(svc->rm_failed[i].message, message, len);
    svc->rm_failed[i].message[len] = '\0';
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
bool svc_removal_queue(clr_service *svc, const char *id, const char *reason, unsigned attempts)
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
        removal_failure_clear_locked(svc, id);
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
int svc_remove_now(clr_service *svc, const char *id, const char *reason, clr_error *err)
{
    uint64_t t0 = svc_mono_us();
    clr_engine *eng = NULL;
    if (svc_engine_get(svc, &eng, err) < 0)
        return -1;
    int rc = clr_sandbox_destroy(eng, id, reason, svc->state_dir, err);
    svc_engine_put(svc, eng, rc < 0);
    if (rc == 0) {
        svc_observe(&svc->h_remove, svc_mono_us() - t0);
        atomic_fetch_add(&svc->removed, 1);
    } else {
        atomic_fetch_add(&svc->removal_failures, 1);
    }
    return rc;
}

void *svc_remover_main(void *p)
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
        bool done = svc_remove_now(svc, r->id, r->reason, &err) == 0;
        if (!done)
            clr_log(CLR_LOG_WARN, "sandbox.removal_failed", "id", r->id, "attempt",
                    r->attempts + 1 >= REMOVAL_MAX_ATTEMPTS ? "last" : "retrying", "error",
                    err.message, NULL);

        pthread_mutex_lock(&svc->rm_lock);
        if (!done && ++r->attempts < REMOVAL_MAX_ATTEMPTS && !svc->rm_stopping) {
            /* Back off (the engine may be restarting), then retry from the tail. It stays
             * current meanwhile: a caller waiting for its removal must not see it as done. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)r->attempts;
            pthread_cond_timedwait(&svc->rm_cond, &svc->rm_lock, &ts);
            removal_append_locked(svc, r);
            svc->rm_current[0] = '\0';
        } else {
            if (!done)
                removal_failure_record_locked(svc, r->id, err.message);
            svc->rm_current[0] = '\0';
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
    if (svc_valid_id(id, err) < 0)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    int rc = 0;
    char failed[sizeof(svc->rm_failed[0].message)] = "";
    pthread_mutex_lock(&svc->rm_lock);
    while (removal_queued_locked(svc, id)) {
        if (pthread_cond_timedwait(&svc->rm_done, &svc->rm_lock, &ts) == ETIMEDOUT) {
            rc = removal_queued_locked(svc, id) ? -1 : 0;
            break;
        }
    }
    const char *why = rc == 0 ? removal_failure_locked(svc, id) : NULL;
    if (why)
        memcpy(failed, why, sizeof(failed));
    pthread_mutex_unlock(&svc->rm_lock);
    if (why)
        return clr_error_set(err, CLR_E_ENGINE, 0,
                             "sandbox %s is destroyed but the engine refused to remove its "
                             "container %d times (last: %s); the next reconcile pass (at the latest "
                             "the next daemon start) retries it",
                             id, REMOVAL_MAX_ATTEMPTS, failed);
    if (rc < 0)
        return clr_error_set(err, CLR_E_TIMEOUT, 0,
                             "sandbox %s is destroyed but its container was not removed within "
                             "%u ms (the engine may be slow or down): removal continues in the "
                             "background",
                             id, timeout_ms);
    return 0;
}

/* At stop: the remover finishes what is queued, for a bounded time; what is left (the engine is
 * down, or slow) is removed by the recovery at the next start. */
void svc_removals_drain(clr_service *svc)
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
