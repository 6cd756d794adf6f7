/* events: see events.h. */
#include <string.h>

#include "engines.h"
#include "events.h"
#include "reaper.h"
#include "rows.h"
#include "service_int.h"

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
 * alone. False: the engine could not be asked; the death is judged again later. The snapshot
 * gate is held for reading (death_judge). */
static bool death_judge_gated(clr_service *svc, const struct death *d)
{
    bool live = false;
    clr_error err = CLR_ERROR_INIT;
    if (svc_row_running(svc, d->id, &live, &err) < 0 || !live)
        return true; /* destroyed meanwhile, or already lost */
    if (d->by_engine && !d->oom) {
        clr_log(CLR_LOG_INFO, "events.stopped_by_engine", "id", d->id, "detail",
                "left to the reconcile pass", NULL);
        return true;
    }
    clr_engine *eng = NULL;
    if (svc_engine_get(svc, &eng, &err) < 0)
        return false;
    char name[64];
    snprintf(name, sizeof(name), CLR_CONTAINER_PREFIX "%s", d->id);
    json_t *j = NULL;
    bool seen = clr_engine_container_inspect(eng, name, &j, &err) == 0;
    bool gone = !seen && err.code == CLR_E_NOT_FOUND;
    svc_engine_put(svc, eng, !seen && (err.code == CLR_E_UNAVAILABLE || err.code == CLR_E_TIMEOUT));
    json_t *state = json_object_get(j, "State");
    bool running = seen && json_is_true(json_object_get(state, "Running"));
    bool oom = d->oom || (seen && json_is_true(json_object_get(state, "OOMKilled")));
    json_decref(j);
    if (!seen && !gone) {
        clr_log(CLR_LOG_WARN, "events.inspect_failed", "id", d->id, "error", err.message, NULL);
        return false;
    }
    if (running)
        return true;
    const char *reason = oom ? "oom" : gone ? "container removed" : "runtime died";
    svc_mark_lost(svc, d->id, "engine", reason);
    return true;
}

static bool death_judge(clr_service *svc, const struct death *d)
{
    /* A restore in place (issue #22) removes the sandbox's container before its new one runs,
     * and a checkpoint freezes it: judged once that is over, not from the gap; and neither
     * begins between this judgement's look at the engine and its verdict. */
    if (!svc_snapshot_gate_try_read(svc))
        return false;
    bool judged = death_judge_gated(svc, d);
    svc_snapshot_gate_read_done(svc);
    return judged;
}

/* Judges the deaths whose time has come (all of them: every). */
static void deaths_settle(struct watch *w, bool every)
{
    uint64_t now = svc_mono_us();
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
    if (svc_row_running(svc, id, &running, &err) < 0 || !running)
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
        d->due_us = svc_mono_us() + DEATH_SETTLE_MS * 1000ull;
    }
    d->oom |= oom;
    d->by_engine |= kill;
    if (d->oom)
        d->due_us = svc_mono_us();
    return 0;
}

static void watch_on_connected(void *ctx)
{
    struct watch *w = ctx;
    w->resync = true;
    w->second_look_us = svc_mono_us() + RESYNC_SECOND_LOOK_MS * 1000ull;
    w->streamed = true;
    clr_log(CLR_LOG_INFO, "events.connected", NULL);
}

static bool watch_tick(void *ctx)
{
    struct watch *w = ctx;
    if (watch_stopping(w->svc))
        return true;
    if (w->second_look_us && svc_mono_us() >= w->second_look_us) {
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
void *svc_watch_main(void *p)
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
