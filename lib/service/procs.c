/* procs: see procs.h. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "clearing/plan.h"

#include "channels.h"
#include "code.h"
#include "engines.h"
#include "execs.h"
#include "procs.h"
#include "proto.h"
#include "ring.h"
#include "rows.h"
#include "service_int.h"
#include "tenants.h"

#define PROC_OUTPUT_KEEP (1024 * 1024)
#define MAX_PROCS_PER_SANDBOX 16
#define MAX_PROCS 256
/* Exited processes are kept for their output and result: the newest this many per sandbox, and
 * none once their sandbox is gone (svc_procs_prune). */
#define MAX_EXITED_PER_SANDBOX 16

struct proc {
    char id[32];
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    char tenant[CLR_TENANT_MAX + 1]; /* its sandbox's: whose max_execs slot it holds */
    clr_service *svc;
    clr_engine *eng;
    struct live_sb *lv; /* its sandbox's live state: the channel it runs on, held while it runs */
    clr_exec *h;
    pthread_t thread;
    struct svc_ring out, err; /* the newest PROC_OUTPUT_KEEP bytes of each */
    bool done;      /* no new user may take h; it is being freed */
    json_t *result; /* set once h is freed: only then is the process answered as exited */
    json_t *request;
    int64_t started_at, finished_at;
    uint32_t chan; /* its id on the live channel (0: a docker exec of its own) */
    json_t *from;  /* a fork's or restore's: {"snapshot", "process"} it was taken over from */
    int users; /* requests using h right now; h is freed only when none is */
    struct proc *next;
};

static pthread_mutex_t procs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t procs_cond = PTHREAD_COND_INITIALIZER;

static void proc_on_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len)
{
    struct proc *p = ctx;
    pthread_mutex_lock(&procs_lock);
    svc_ring_append(stream == CLR_STDOUT ? &p->out : &p->err, data, len);
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
    struct live_sb *lv = p->lv;
    clr_engine *eng = p->eng;
    p->h = NULL;
    p->lv = NULL;
    p->eng = NULL;
    pthread_mutex_unlock(&procs_lock);
    clr_exec_free(h);
    svc_live_put(p->svc, lv);
    svc_engine_put(p->svc, eng, false);
    /* Its command slot is free before it is answered as exited. */
    svc_exec_release(p->svc, p->tenant, 1);
    pthread_mutex_lock(&procs_lock);
    p->result = result;
    p->done = true;
    p->finished_at = svc_now_s();
    pthread_cond_broadcast(&procs_cond);
    pthread_mutex_unlock(&procs_lock);
    clr_store_sandbox_touch(p->svc->store, p->sandbox_id, svc_now_s(), NULL);
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
    json_t *o = json_pack("{s:s, s:s, s:s, s:O, s:I, s:I, s:I, s:I, s:O}", "id", p->id,
                          "sandbox_id", p->sandbox_id, "state", p->result ? "exited" : "running",
                          "request", p->request, "started_at", (json_int_t)p->started_at,
                          "finished_at", (json_int_t)p->finished_at, "stdout_offset",
                          (json_int_t)(svc_ring_end(&p->out)), "stderr_offset",
                          (json_int_t)(svc_ring_end(&p->err)), "result",
                          p->result ? p->result : json_null());
    if (o && p->from)
        json_object_set(o, "from", p->from);
    return o;
}

/* Frees an exited process's entry, already unlinked: its thread is joined first (it may still be
 * touching the sandbox's row after it set the result). */
static void proc_free(struct proc *p)
{
    pthread_join(p->thread, NULL);
    json_decref(p->result);
    json_decref(p->request);
    json_decref(p->from);
    svc_ring_free(&p->out);
    svc_ring_free(&p->err);
    free(p);
}

/* Per-sandbox tallies for one pass over the process list: an open-addressing table keyed by
 * sandbox id, at most half full, so that a pass under procs_lock is linear in the list's length
 * (it was quadratic: each exited entry counted the ones before it). The ids are borrowed. */
struct tally {
    const char *id; /* NULL: a free slot */
    unsigned exited;
    bool gone;
};

struct tallies {
    struct tally *slot;
    size_t mask;
};

/* Room for n ids; -1 when out of memory. */
static int tallies_init(struct tallies *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->slot = calloc(cap, sizeof(*t->slot));
    t->mask = cap - 1;
    return t->slot ? 0 : -1;
}

/* The tally of id, made (zeroed) on its first use. */
static struct tally *tally_of(struct tallies *t, const char *id)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)id; *c; c++)
        h = (h ^ *c) * 1099511628211ull;
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        if (!t->slot[i].id) {
            t->slot[i].id = id;
            return &t->slot[i];
        }
        if (strcmp(t->slot[i].id, id) == 0)
            return &t->slot[i];
    }
}

/* Unlinks the exited entries past the newest MAX_EXITED_PER_SANDBOX (or procs_exited_keep) of
 * each sandbox, and every exited entry of a sandbox whose id is in gone (n of them), onto *out
 * (procs_lock held). Out of memory: nothing is unlinked this time (the next start or prune
 * tries again). */
static void procs_unlink_exited_locked(clr_service *svc, char (*gone)[CLR_SANDBOX_ID_MAX + 1],
                                       size_t n, struct proc **out)
{
    size_t len = 0;
    for (struct proc *p = svc->procs; p; p = p->next)
        len++;
    struct tallies t;
    if (tallies_init(&t, len + n) < 0)
        return;
    for (size_t i = 0; i < n; i++)
        tally_of(&t, gone[i])->gone = true;
    unsigned keep = svc->procs_exited_keep ? svc->procs_exited_keep : MAX_EXITED_PER_SANDBOX;
    /* The list is newest first: an exited entry is dropped once its sandbox's newer exited
     * entries reach keep. */
    for (struct proc **pp = &svc->procs; *pp;) {
        struct proc *p = *pp;
        bool drop = false;
        if (p->result) {
            struct tally *c = tally_of(&t, p->sandbox_id);
            drop = c->gone || c->exited >= keep;
            c->exited++;
        }
        if (drop) {
            *pp = p->next;
            p->next = *out;
            *out = p;
        } else {
            pp = &p->next;
        }
    }
    free(t.slot);
}

static void procs_free_list(struct proc *p)
{
    while (p) {
        struct proc *n = p->next;
        proc_free(p);
        p = n;
    }
}

size_t svc_procs_prune(clr_service *svc)
{
    /* The sandboxes that have exited entries, then which of them are no longer running (asked
     * of the store without the lock). */
    char(*ids)[CLR_SANDBOX_ID_MAX + 1] = NULL;
    size_t n = 0, cap = 0, len = 0;
    pthread_mutex_lock(&procs_lock);
    for (struct proc *p = svc->procs; p; p = p->next)
        len++;
    struct tallies seen;
    if (tallies_init(&seen, len) < 0) {
        pthread_mutex_unlock(&procs_lock);
        return 0; /* out of memory: the next pass tries again */
    }
    for (struct proc *p = svc->procs; p; p = p->next) {
        if (!p->result || tally_of(&seen, p->sandbox_id)->exited++ > 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *m = realloc(ids, ncap * sizeof(*ids));
            if (!m)
                break;
            ids = m;
            cap = ncap;
        }
        memcpy(ids[n++], p->sandbox_id, sizeof(ids[0]));
    }
    free(seen.slot);
    pthread_mutex_unlock(&procs_lock);
    size_t gone = 0;
    for (size_t i = 0; i < n; i++) {
        clr_store_sandbox row;
        clr_error err = CLR_ERROR_INIT;
        int rc = clr_store_sandbox_get(svc->store, ids[i], &row, &err);
        bool alive = rc == 0 && strcmp(row.info.state, CLR_STATE_DESTROYED) != 0 &&
                     strcmp(row.info.state, CLR_STATE_LOST) != 0;
        if (rc == 0)
            clr_store_sandbox_clear(&row);
        if (!alive && (rc == 0 || err.code == CLR_E_NOT_FOUND))
            memmove(ids[gone++], ids[i], sizeof(ids[0]));
    }
    struct proc *out = NULL;
    pthread_mutex_lock(&procs_lock);
    procs_unlink_exited_locked(svc, ids, gone, &out);
    pthread_mutex_unlock(&procs_lock);
    free(ids);
    size_t freed = 0;
    for (struct proc *p = out; p; p = p->next)
        freed++;
    procs_free_list(out);
    return freed;
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
        struct live_sb *lv = *svc_live_find_locked(svc, id);
        busy = lv && lv->refs > 1;
        pthread_mutex_unlock(&svc->live_lock);
    }
    if (!busy)
        busy = svc_code_busy(svc, id); /* a cell of the code interpreter runs or waits */
    return busy;
}

/* A process refused for want of a slot (the per-sandbox or total cap of background processes,
 * max_execs or its tenant's) is recorded ("process.start", refused, the error naming the limit)
 * before its 429, and counted as a refused exec is (execs.c's exec_refused, svc_audit_refusal:
 * the first at once, the rest one record per audit_aggregate_ms). It never got a process id, and
 * its record names no command: only an admitted process's "process.start" carries its request.
 * A record that cannot be written changes nothing: the process is refused all the same, and the
 * failure logged (audit.write_failed). */
static int proc_refused(clr_service *svc, const char *actor, const char *id, clr_error *err)
{
    svc_audit_refusal(svc, actor, id, "process.start", err);
    return -1;
}

/* A new entry's own id (pr- and 16 random hex digits), its sandbox's, and its empty rings. */
static void proc_name(struct proc *p, const char *sandbox_id)
{
    svc_ring_init(&p->out, PROC_OUTPUT_KEEP);
    svc_ring_init(&p->err, PROC_OUTPUT_KEEP);
    uint8_t r[8];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        memset(r, 0, sizeof(r));
    snprintf(p->id, sizeof(p->id), "pr-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
    snprintf(p->sandbox_id, sizeof(p->sandbox_id), "%s", sandbox_id);
}

/* Room for one more running process in sandbox id (its cap and the daemon's) and a command
 * slot of tenant's; 0, or -1 with err (CLR_E_LIMIT) and the refusal counted. */
static int proc_admit(clr_service *svc, const char *id, const char *tenant, clr_error *err)
{
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
        atomic_fetch_add(&svc->refused, 1);
        return clr_error_set(err, CLR_E_LIMIT, 0,
                             "at capacity: %d background processes in this sandbox (max %d), "
                             "%d in all (max %d)",
                             here, MAX_PROCS_PER_SANDBOX, total, MAX_PROCS);
    }
    /* While it runs it is a command like an exec: a slot of max_execs and of its tenant's. */
    unsigned one = 1;
    return svc_exec_admit(svc, tenant, &one, err);
}

/* Links a running process into the list (and lets go of exited ones past what is kept). */
static void proc_link(clr_service *svc, struct proc *p, json_t **out)
{
    struct proc *old = NULL;
    pthread_mutex_lock(&procs_lock);
    p->next = svc->procs;
    svc->procs = p;
    if (out)
        *out = proc_json(p);
    procs_unlink_exited_locked(svc, NULL, 0, &old);
    pthread_mutex_unlock(&procs_lock);
    procs_free_list(old);
}

int clr_service_proc_start(clr_service *svc, const char *id, json_t *req, const char *actor,
                           json_t **out, clr_error *err)
{
    if (svc_valid_id(id, err) < 0 || svc_check_fields(req, "request", svc_process_fields, err) < 0)
        return -1;
    struct command cmd;
    if (svc_parse_command(&cmd, req, err) < 0 || svc_command_bind(svc, &cmd, id, err) < 0) {
        svc_command_clear(&cmd);
        return -1;
    }
    cmd.o.background = true;
    cmd.o.stream = true; /* no caps: the ring keeps the newest */
    cmd.o.keep_stdin_open = true;
    if (proc_admit(svc, id, cmd.tenant, err) < 0) {
        svc_command_clear(&cmd);
        return proc_refused(svc, actor, id, err);
    }
    struct proc *p = calloc(1, sizeof(*p));
    if (!p) {
        svc_exec_release(svc, cmd.tenant, 1);
        svc_command_clear(&cmd);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    snprintf(p->tenant, sizeof(p->tenant), "%s", cmd.tenant);
    proc_name(p, id);
    p->svc = svc;
    p->request = svc_redacted(req);
    p->started_at = svc_now_s();
    cmd.o.on_output = proc_on_output;
    cmd.o.ctx = p;
    /* Durable before it runs: the record names the process id it is about to get. */
    json_t *ad = json_deep_copy(p->request);
    json_object_set_new(ad, "process_id", json_string(p->id));
    int rc = clr_audit_append(svc->audit, actor, id, "process.start", "ok", ad, err);
    json_decref(ad);
    if (rc == 0)
        rc = svc_engine_get(svc, &p->eng, err);
    /* On the sandbox's live channel, as an exec: no docker exec (whose descriptors this runsc
     * cannot restore), so a snapshot taken while it runs can be forked and restored. An agent
     * without a channel gets a docker exec of its own. */
    if (rc == 0)
        rc = svc_live_get(svc, p->eng, id, &p->lv, err);
    if (rc == 0) {
        cmd.o.channel = p->lv->ch;
        cmd.o.channel_id = p->lv->ch ? clr_channel_new_id() : 0;
        rc = clr_exec_start(&p->h, p->eng, p->lv->sb, &cmd.o, err);
        p->chan = cmd.o.channel_id;
    }
    svc_command_clear(&cmd);
    if (rc == 0 && pthread_create(&p->thread, NULL, proc_main, p) != 0) {
        clr_exec_signal(p->h, 9, NULL);
        clr_exec_free(p->h);
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, EAGAIN, "cannot start a thread");
    }
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "process.start", err);
        svc_exec_release(svc, p->tenant, 1);
        svc_live_put(svc, p->lv);
        svc_engine_put(svc, p->eng, true);
        json_decref(p->request);
        free(p);
        return -1;
    }
    proc_link(svc, p, out);
    clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
    clr_log(CLR_LOG_INFO, "service.process_started", "id", id, "process", p->id, "actor", actor,
            NULL);

    return 0;
}

/* ---- processes a fork or a restore brings back ---- */

json_t *svc_procs_on_channel(clr_service *svc, const char *id, int64_t since)
{
    json_t *a = json_array();
    pthread_mutex_lock(&procs_lock);
    for (struct proc *p = svc->procs; a && p; p = p->next) {
        if (p->chan && strcmp(p->sandbox_id, id) == 0 && (!p->result || p->finished_at >= since))
            json_array_append_new(a, json_pack("{s:s, s:I, s:o, s:I}", "process", p->id,
                                               "channel", (json_int_t)p->chan, "request",
                                               json_deep_copy(p->request), "started_at",
                                               (json_int_t)p->started_at));
    }
    pthread_mutex_unlock(&procs_lock);
    return a;
}

static uint32_t entry_channel(const json_t *e)
{
    json_int_t c = json_integer_value(json_object_get(e, "channel"));
    return c > 0 && c <= UINT32_MAX ? (uint32_t)c : 0;
}

void svc_procs_adopt_begin(const char *id, const json_t *procs)
{
    svc_code_adopt_begin(id);
    size_t n = json_array_size(procs);
    uint32_t *chans = n ? calloc(n, sizeof(*chans)) : NULL;
    for (size_t i = 0; chans && i < n; i++)
        chans[i] = entry_channel(json_array_get(procs, i));
    if (chans)
        svc_live_hold(id, chans, n); /* out of memory: a result replayed before its claim is lost */
    free(chans);
}

void svc_procs_adopt_cancel(const char *id)
{
    svc_live_unhold(id);
    svc_code_adopt_end(id);
}

/* Whether the agent named chan at its channel's open (running, or ended and not acknowledged;
 * results replayed at the open are left out, unless held for a claim). */
static bool agent_runs(const struct live_sb *lv, uint32_t chan)
{
    for (size_t i = 0; chan && i < lv->nlisted; i++) {
        if (lv->listed[i] == chan)
            return true;
    }
    return false;
}

/* One process of the snapshot's list e, taken over as a new entry of sandbox id (recorded first,
 * "process.adopt"); 0, or -1 with err (refused for want of a slot, or it could not be taken). */
static int adopt_one(clr_service *svc, const char *id, const char *tenant, const char *snapshot,
                     const json_t *e, const char *actor, clr_error *err)
{
    if (proc_admit(svc, id, tenant, err) < 0) {
        svc_audit_refusal(svc, actor, id, "process.adopt", err);
        return -1;
    }
    struct proc *p = calloc(1, sizeof(*p));
    if (!p) {
        svc_exec_release(svc, tenant, 1);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    proc_name(p, id);
    p->svc = svc;
    p->chan = entry_channel(e);
    json_t *req = json_object_get(e, "request");
    p->request = json_is_object(req) ? json_deep_copy(req) : json_object();
    json_int_t at = json_integer_value(json_object_get(e, "started_at"));
    p->started_at = at > 0 ? (int64_t)at : svc_now_s();
    const char *was = json_string_value(json_object_get(e, "process"));
    p->from = json_pack("{s:s, s:s}", "snapshot", snapshot, "process", was ? was : "");
    json_t *ad = json_deep_copy(p->request);
    json_object_set_new(ad, "process_id", json_string(p->id));
    json_object_set(ad, "from", p->from);
    json_object_set_new(ad, "channel", json_integer(p->chan));
    int rc = clr_audit_append(svc->audit, actor, id, "process.adopt", "ok", ad, err);
    json_decref(ad);
    if (rc == 0)
        rc = svc_engine_get(svc, &p->eng, err);
    if (rc == 0)
        rc = svc_live_get(svc, p->eng, id, &p->lv, err);
    if (rc == 0 && !p->lv->ch)
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the sandbox's live channel is closed");
    if (rc == 0) {
        clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
        o.background = true;
        o.stream = true;
        o.keep_stdin_open = true;
        o.on_output = proc_on_output;
        o.ctx = p;
        o.channel = p->lv->ch;
        o.channel_id = p->chan;
        rc = clr_exec_adopt(&p->h, p->eng, p->lv->sb, &o, err);
    }
    if (rc == 0 && pthread_create(&p->thread, NULL, proc_main, p) != 0) {
        clr_exec_free(p->h);
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, EAGAIN, "cannot start a thread");
    }
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "process.adopt", err);
        svc_exec_release(svc, tenant, 1);
        svc_live_put(svc, p->lv);
        svc_engine_put(svc, p->eng, true);
        json_decref(p->request);
        json_decref(p->from);
        free(p);
        return -1;
    }
    proc_link(svc, p, NULL);
    clr_log(CLR_LOG_INFO, "service.process_adopted", "id", id, "process", p->id, "from",
            was ? was : "", NULL);
    return 0;
}

/* Whether entry i's channel is an earlier entry's too: the list is newest first, and a sandbox
 * restored in place keeps the entry its process had before (ended with the old container) beside
 * the one that took it over. */
static bool named_before(const json_t *procs, size_t i)
{
    uint32_t chan = entry_channel(json_array_get(procs, i));
    for (size_t j = 0; j < i; j++) {
        if (entry_channel(json_array_get(procs, j)) == chan)
            return true;
    }
    return false;
}

int svc_procs_adopt(clr_service *svc, clr_engine *eng, const char *id, const char *snapshot,
                    const json_t *procs, const char *actor)
{
    size_t n = json_array_size(procs);
    char tenant[CLR_TENANT_MAX + 1];
    if (n == 0) {
        svc_live_unhold(id);
        /* A restore to a snapshot without a code session still ends the kernel it ran (NULL:
         * the restore or fork failed, or it is an older snapshot's: nothing said). */
        clr_error cerr = CLR_ERROR_INIT;
        if (procs && svc_row_tenant(svc, id, tenant, &cerr) == 0)
            svc_code_adopt(svc, id, svc_tenant_or_default(tenant), snapshot, 0, actor, &cerr);
        svc_code_adopt_end(id);
        return 0;
    }
    struct live_sb *lv = NULL;
    clr_error err = CLR_ERROR_INIT;
    int rc = svc_row_tenant(svc, id, tenant, &err);
    if (rc == 0)
        rc = svc_live_get(svc, eng, id, &lv, &err);
    if (rc == 0 && !lv->ch)
        rc = clr_error_set(&err, CLR_E_UNAVAILABLE, 0, "its live channel did not open");
    uint32_t *refused = calloc(n, sizeof(*refused));
    size_t nrefused = 0, taken = 0;
    uint32_t code = 0; /* the code session's bridge, taken over as the sandbox's session */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const json_t *e = json_array_get(procs, i);
        if (!agent_runs(lv, entry_channel(e)) || named_before(procs, i))
            continue; /* it had ended (and been acknowledged) before the checkpoint */
        clr_error aerr = CLR_ERROR_INIT;
        /* The snapshot may name two bridges (the session's, seen before and after the
         * checkpoint): the first its agent runs is the session's, another one is killed. */
        bool is_code = json_is_true(json_object_get(e, "code"));
        int arc = -1;
        if (is_code && !code) {
            code = entry_channel(e);
            arc = svc_code_adopt(svc, id, svc_tenant_or_default(tenant), snapshot, code, actor,
                                 &aerr);
        } else if (!is_code) {
            arc = adopt_one(svc, id, svc_tenant_or_default(tenant), snapshot, e, actor, &aerr);
            taken += arc == 0;
        }
        if (arc < 0 && refused)
            refused[nrefused++] = entry_channel(e);
    }
    if (rc == 0 && !code) { /* none, or it had ended: a kernel the sandbox ran is ended */
        clr_error cerr = CLR_ERROR_INIT;
        svc_code_adopt(svc, id, svc_tenant_or_default(tenant), snapshot, 0, actor, &cerr);
    }
    svc_code_adopt_end(id);
    svc_live_unhold(id);
    /* Not taken over, it would run on unlisted and uncounted: killed (its result, from now on
     * not held, is acknowledged as any replayed one), or, when it had ended, its held result let
     * go. After a failure to open, whatever the channel holds for them goes the same way. */
    for (size_t i = 0; lv && lv->ch && rc < 0 && i < n; i++)
        clr_channel_release(lv->ch, entry_channel(json_array_get(procs, i)));
    for (size_t i = 0; i < nrefused; i++) {
        clr_channel_release(lv->ch, refused[i]);
        clr_channel_send(lv->ch, refused[i], CLR_FRAME_KILL, NULL, 0, NULL);
    }
    free(refused);
    if (rc < 0)
        clr_log(CLR_LOG_WARN, "process.adopt_failed", "id", id, "error", err.message, "detail",
                "the snapshot's background processes run on unlisted in this sandbox", NULL);
    else if (nrefused)
        clr_log(CLR_LOG_WARN, "process.adopt_refused", "id", id, "detail",
                "background processes of the snapshot that could not be taken over were killed",
                NULL);
    svc_live_put(svc, lv);
    return rc < 0 ? -1 : (int)taken;
}

int clr_service_proc_list(clr_service *svc, const char *id, json_t **out, clr_error *err)
{
    /* A sandbox the daemon never had is a 404, not an empty list: `clearing ps` of a mistyped
     * id must not read as "no processes". */
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    if (svc_valid_id(id, err) < 0 || svc_row_state(svc, id, state, reason, err) < 0)
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
    if (svc_valid_id(id, err) < 0)
        return -1;
    pthread_mutex_lock(&procs_lock);
    struct proc *p = proc_find(svc, id, proc_id);
    if (p)
        *out = proc_json(p);
    pthread_mutex_unlock(&procs_lock);
    return p ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no process %.64s in sandbox %s",
                                 proc_id, id);
}

static json_t *ring_json(const struct svc_ring *r, uint64_t from)
{
    clr_exec_result tmp;
    memset(&tmp, 0, sizeof(tmp));
    uint64_t dropped = 0;
    tmp.out.data = svc_ring_read(r, from, &tmp.out.len, &dropped);
    json_t *j = clr_exec_result_to_json(&tmp);
    free(tmp.out.data);
    json_t *o = json_pack("{s:O, s:O, s:I, s:I}", "data", json_object_get(j, "stdout"),
                          "encoding", json_object_get(j, "stdout_encoding"), "next_offset",
                          (json_int_t)svc_ring_end(r), "dropped", (json_int_t)dropped);
    json_decref(j);
    return o;
}

int clr_service_proc_output(clr_service *svc, const char *id, const char *proc_id,
                            uint64_t out_off, uint64_t err_off, uint32_t wait_ms, json_t **out,
                            clr_error *err)
{
    if (svc_valid_id(id, err) < 0)
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
    /* "exited" goes with the result: between done and result a reader would see an exited
     * process without its status (`clearing logs -f` exited 122 for a command's 0). */
    while (p && wait_ms && !p->result && svc_ring_end(&p->out) <= out_off &&
           svc_ring_end(&p->err) <= err_off) {
        if (pthread_cond_timedwait(&procs_cond, &procs_lock, &until) != 0)
            break;
        p = proc_find(svc, id, proc_id);
    }
    if (p)
        *out = json_pack("{s:s, s:s, s:o, s:o, s:O}", "id", p->id, "state",
                         p->result ? "exited" : "running", "stdout", ring_json(&p->out, out_off),
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

int clr_service_proc_stdin(clr_service *svc, const char *id, const char *proc_id, json_t *req,
                           clr_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (svc_valid_id(id, err) < 0 || svc_parse_stdin(req, &buf, &len, err) < 0)
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

int clr_service_proc_signal(clr_service *svc, const char *id, const char *proc_id, json_t *req,
                            const char *actor, clr_error *err)
{
    int sig = 0;
    if (svc_valid_id(id, err) < 0 || svc_parse_signal(req, &sig, err) < 0)
        return -1;
    return clr_service_proc_signal_num(svc, id, proc_id, sig, actor, err);
}

/* At stop: every process is killed (a KILL on its channel or stream) and its thread joined. */
void svc_procs_stop(clr_service *svc)
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
    procs_free_list(svc->procs);
    svc->procs = NULL;
}
