/* channels: see channels.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "channels.h"
#include "proto.h"
#include "service_int.h"

/* The most replayed results kept to leave out of the open's list: as many ids as one CHANNELS
 * frame can hold, which is all an agent can list. Past this bound a replayed command is at worst
 * killed as an orphan, in its own sandbox. */
#define LIVE_ENDED_MAX (CLR_PROTO_MAX_PAYLOAD / 4)

/* The registry's link to the sandbox's entry (*result NULL: none). live_lock held. */
struct live_sb **svc_live_find_locked(clr_service *svc, const char *id)
{
    struct live_sb **pp = &svc->live;
    while (*pp && strcmp((*pp)->id, id) != 0)
        pp = &(*pp)->next;
    return pp;
}

void svc_live_put(clr_service *svc, struct live_sb *lv)
{
    if (!lv)
        return;
    pthread_mutex_lock(&svc->live_lock);
    bool last = --lv->refs == 0;
    pthread_mutex_unlock(&svc->live_lock);
    if (last) {
        clr_channel_close(lv->ch); /* no NET frame arrives after this */
        clr_egress_free(lv->egress);
        free(lv->listed);
        free(lv->ended);
        clr_sandbox_free(lv->sb);
        free(lv);
    }
}

/* Sandboxes whose snapshot's processes are about to be taken over, with their channel ids
 * (svc_live_hold): the results their agent replays for those are held for the claim. */
struct holding {
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    size_t n;
    struct holding *next;
    uint32_t chan[];
};

static pthread_mutex_t holding_lock = PTHREAD_MUTEX_INITIALIZER;
static struct holding *holding;

void svc_live_hold(const char *id, const uint32_t *chans, size_t n)
{
    struct holding *h = n ? calloc(1, sizeof(*h) + n * sizeof(h->chan[0])) : NULL;
    if (!h)
        return;
    snprintf(h->sandbox_id, sizeof(h->sandbox_id), "%s", id);
    memcpy(h->chan, chans, n * sizeof(h->chan[0]));
    h->n = n;
    pthread_mutex_lock(&holding_lock);
    h->next = holding;
    holding = h;
    pthread_mutex_unlock(&holding_lock);
}

void svc_live_unhold(const char *id)
{
    pthread_mutex_lock(&holding_lock);
    for (struct holding **pp = &holding; *pp;) {
        struct holding *h = *pp;
        if (strcmp(h->sandbox_id, id) == 0) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
    pthread_mutex_unlock(&holding_lock);
}

static bool held(const char *id, uint32_t chan)
{
    bool yes = false;
    pthread_mutex_lock(&holding_lock);
    for (struct holding *h = holding; h && !yes; h = h->next) {
        for (size_t i = 0; i < h->n && !yes; i++)
            yes = h->chan[i] == chan && strcmp(h->sandbox_id, id) == 0;
    }
    pthread_mutex_unlock(&holding_lock);
    return yes;
}

/* A result the agent replays after the daemon was away: it completes its exec record. */
static int live_on_result(void *ctx, clr_channel *ch, uint32_t chan_id,
                          const clr_exec_result *r)
{
    (void)ch;
    struct live_sb *lv = ctx;
    clr_service *svc = lv->svc;
    /* A process of the sandbox's snapshot, about to be taken over (procs.c): its result waits
     * for it, and its command is not counted as ended at the open. */
    if (held(lv->id, chan_id))
        return 1;
    if (!lv->listed_set && lv->nended < LIVE_ENDED_MAX) {
        /* Replayed at the open: its command has ended, whatever its list will say. */
        if (lv->nended == lv->ended_cap) {
            size_t cap = lv->ended_cap ? 2 * lv->ended_cap : 16;
            uint32_t *m = realloc(lv->ended, cap * sizeof(*m));
            if (m) {
                lv->ended = m;
                lv->ended_cap = cap;
            }
        }
        if (lv->nended < lv->ended_cap)
            lv->ended[lv->nended++] = chan_id;
    }
    char why[256];
    if (!clr_audit_writable(svc->audit, why, sizeof(why))) {
        /* Fail closed: not acknowledged, so the agent keeps it until it can be recorded. */
        clr_log(CLR_LOG_WARN, "exec.replay_unaudited", "id", lv->id, "error", why, NULL);
        return -1;
    }
    json_t *result = clr_exec_result_to_json(r);
    char exec_id[64] = "";
    clr_error err = CLR_ERROR_INIT;
    int found = clr_store_exec_finish_channel(svc->store, lv->id, chan_id, result, svc_now_s(),
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* After the replay of an open: records of commands the agent no longer knows are lost; the
 * commands it does know are kept in lv for svc_live_end_orphans. */
static void live_on_channels(void *ctx, clr_channel *ch, const uint32_t *ids, size_t n)
{
    (void)ch;
    struct live_sb *lv = ctx;
    clr_error err = CLR_ERROR_INIT;
    clr_store_exec_mark_lost_sandbox(lv->svc->store, lv->id, ids, n, svc_now_s(), &err);
    if (lv->listed_set)
        return; /* only the answer to the open's HELLO: listed is read without a lock */
    lv->listed_set = true;
    lv->listed = n ? malloc(n * sizeof(*ids)) : NULL;
    if (lv->nended > 1) /* both lists come from the agent: no quadratic look-up */
        qsort(lv->ended, lv->nended, sizeof(*lv->ended), cmp_u32);
    for (size_t i = 0; lv->listed && i < n; i++) {
        if (!lv->nended ||
            !bsearch(&ids[i], lv->ended, lv->nended, sizeof(*lv->ended), cmp_u32))
            lv->listed[lv->nlisted++] = ids[i];
    }
    free(lv->ended);
    lv->ended = NULL;
    lv->nended = lv->ended_cap = 0;
}

int svc_live_end_orphans(clr_service *svc, struct live_sb *lv, const char *why)
{
    if (!lv || !lv->ch)
        return 0;
    json_t *ended = json_array();
    for (size_t i = 0; ended && i < lv->nlisted; i++) {
        clr_error err = CLR_ERROR_INIT;
        if (clr_store_exec_on_channel(svc->store, lv->id, lv->listed[i], &err) != 0)
            continue; /* an exec's, ended or awaited (or the store cannot say: left alone) */
        if (clr_channel_send(lv->ch, lv->listed[i], CLR_FRAME_KILL, NULL, 0, &err) == 0)
            json_array_append_new(ended, json_integer(lv->listed[i]));
    }
    size_t n = json_array_size(ended);
    if (n > 0) {
        clr_error err = CLR_ERROR_INIT;
        json_t *d = json_pack("{s:o, s:s}", "channels", ended, "reason", why);
        if (clr_audit_append(svc->audit, "recovery", lv->id, "sandbox.orphans_killed", "ok", d,
                             &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", err.message, NULL);
        json_decref(d);
        clr_log(CLR_LOG_INFO, "recover.orphans_killed", "id", lv->id, NULL);
    } else {
        json_decref(ended);
    }
    return (int)n;
}

/* The sandbox, opened, with its live channel when its agent serves one. *out holds a reference
 * (live_put). A channel that ended (dockerd restarted, the sandbox stopped) is opened again. */
/* The live state of a running sandbox, made from its handle and, when the caller has one, its
 * attached channel (a pooled sandbox's; NULL: attached here), both taken over whatever the
 * outcome, and registered. */
int svc_live_new(clr_service *svc, clr_engine *eng, const char *id, clr_sandbox *sb,
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
    /* Recorded on the row before it is attached, for good, naming the container attached
     * (snapshots.c reads it: runsc cannot restore a checkpoint taken since; a restore's swap
     * keeps a mark that names its new container); one that cannot be recorded is not
     * attached. A channel handed in attached already (a pooled sandbox's) whose mark cannot
     * be recorded is closed (fail closed): kept, a snapshot taken after it would read as
     * taken before any attach, and its restore fail in runsc after the old container is gone.
     * The sandbox's commands use docker exec, as for an agent without a channel. */
    clr_error cerr = CLR_ERROR_INIT;
    const char *cid = sb ? clr_sandbox_get_info(sb)->container_id : NULL;
    if (ch) {
        if (clr_store_sandbox_set_attached(svc->store, id, cid, &cerr) < 0) {
            clr_channel_close(ch);
            clr_log(CLR_LOG_WARN, "channel.unavailable", "id", id, "error", cerr.message,
                    "detail", "its attach could not be recorded: the channel is closed and "
                    "commands of this sandbox use docker exec", NULL);
        } else {
            clr_channel_set_hooks(ch, &hooks);
            lv->ch = ch;
        }
    } else {
        if (clr_store_sandbox_set_attached(svc->store, id, cid, &cerr) < 0 ||
            clr_channel_open(&lv->ch, eng, lv->sb, &hooks, &cerr) < 0) {
            lv->ch = NULL;
            clr_log(CLR_LOG_WARN, "channel.unavailable", "id", id, "error", cerr.message,
                    "detail", "commands of this sandbox use docker exec", NULL);
        }
    }
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb *other = *svc_live_find_locked(svc, id);
    if (other) {
        /* Another request opened it meanwhile: use that one. */
        other->refs++;
        pthread_mutex_unlock(&svc->live_lock);
        lv->refs = 1;
        svc_live_put(svc, lv);
        *out = other;
        return 0;
    }
    lv->next = svc->live;
    svc->live = lv;
    pthread_mutex_unlock(&svc->live_lock);
    *out = lv;
    return 0;
}

int svc_live_get(clr_service *svc, clr_engine *eng, const char *id, struct live_sb **out,
                 clr_error *err)
{
    if (svc_restoring(svc, id))
        return svc_restoring_error(err, id);
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb **pp = svc_live_find_locked(svc, id), *stale = *pp;
    if (stale && (!stale->ch || clr_channel_alive(stale->ch))) {
        stale->refs++;
        *out = stale;
        pthread_mutex_unlock(&svc->live_lock);
        return 0;
    }
    bool reopen = stale != NULL;
    if (stale)
        *pp = stale->next; /* its channel ended: replaced below */
    pthread_mutex_unlock(&svc->live_lock);
    svc_live_put(svc, stale);

    clr_sandbox *sb = NULL;
    if (clr_sandbox_open_at(&sb, eng, id, svc->state_dir, err) < 0)
        return -1;
    if (svc_live_new(svc, eng, id, sb, NULL, out, err) < 0)
        return -1;
    /* The channel had ended while the sandbox ran on (its attach stream broke): the background
     * processes on it were answered as ended, but the agent kept them running. */
    if (reopen)
        svc_live_end_orphans(svc, *out, "a command on a channel that had ended (a background "
                                        "process, answered as ended then)");
    return 0;
}

/* The sandbox is gone for its callers: see channels.h (a running process keeps the channel). */
void svc_live_drop(clr_service *svc, const char *id)
{
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb **pp = svc_live_find_locked(svc, id), *lv = *pp;
    if (lv)
        *pp = lv->next;
    pthread_mutex_unlock(&svc->live_lock);
    svc_live_put(svc, lv);
}
