/* execs: see execs.h. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "clearing/cleanup_json.h"
#include "clearing/plan.h"

#include "channels.h"
#include "engines.h"
#include "execs.h"
#include "rows.h"
#include "service_int.h"
#include "tenants.h"

static int new_exec_id(char *out, size_t len)
{
    uint8_t r[8];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -1;
    snprintf(out, len, "ex-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
    return 0;
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

/* Checks the sandbox is running and puts its environment before the command's own. */
int svc_command_bind(clr_service *svc, struct command *c, const char *id, clr_error *err)
{
    clr_store_sandbox row;
    if (clr_store_sandbox_get(svc->store, id, &row, err) < 0)
        return -1;
    snprintf(c->tenant, sizeof(c->tenant), "%s", svc_tenant_or_default(row.info.tenant));
    bool live = strcmp(row.info.state, CLR_STATE_RUNNING) == 0;
    char state[32], reason[CLR_STORE_REASON_MAX + 1];
    snprintf(state, sizeof(state), "%s", row.info.state);
    snprintf(reason, sizeof(reason), "%s", row.destroy_reason);
    c->all_env = svc_row_env(&row, (const char *const *)c->env);
    clr_store_sandbox_clear(&row);
    if (!c->all_env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    c->o.env = (const char *const *)c->all_env;
    if (!live)
        return svc_not_running(err, id, state, reason);
    return 0;
}

/* A command refused for want of a slot (max_execs, or its tenant's) is recorded ("exec",
 * refused, the error naming the limit) before its 429: the same whether the stream's check
 * (clr_service_exec_check) or the exec's admission refuses it. Refusals come at the client's
 * rate while the daemon is full, so they are counted (svc_audit_refusal): the first of an
 * actor's on a sandbox at once, the rest one record per audit_aggregate_ms with their count.
 * It never got an exec id nor an exec.start, and its record names no command (an exec's own
 * "exec" record names none either). A record that cannot be written changes nothing: the
 * command is refused all the same, and the failure logged (audit.write_failed). */
static int exec_refused(clr_service *svc, const char *actor, const char *id, clr_error *err)
{
    svc_audit_refusal(svc, actor, id, "exec", err);
    return -1;
}

int clr_service_exec_check(clr_service *svc, const char *id, json_t *req, const char *actor,
                           clr_error *err)
{
    if (svc_valid_id(id, err) < 0 || svc_check_fields(req, "request", svc_exec_fields, err) < 0)
        return -1;
    _cleanup_command_ struct command cmd = {.argv = NULL};
    if (svc_parse_command(&cmd, req, err) < 0 || svc_command_bind(svc, &cmd, id, err) < 0)
        return -1;
    if (svc_exec_room(svc, cmd.tenant, err) < 0)
        return exec_refused(svc, actor, id, err);
    return 0;
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

/* One exec as it runs: the command's options, and what it holds (an engine handle, its
 * sandbox's live state, a slot of running_execs and of its tenant's max_execs). */
struct exec_run {
    clr_service *svc;
    const char *id, *actor;
    const char *tenant; /* its sandbox's */
    char exec_id[32];
    clr_exec_options o;
    struct exec_trace tr;
    uint64_t t0;      /* mono_us at its start, for the latency */
    int64_t t;        /* when it started, as recorded */
    clr_engine *eng;
    struct live_sb *lv;
    json_t *logged;   /* the request as recorded (svc_redacted; exec_run's) */
};

/* A slot of running_execs and of the tenant's max_execs, or CLR_E_LIMIT (recorded) when either
 * is full. */
static int exec_admit(struct exec_run *x, clr_error *err)
{
    unsigned one = 1;
    if (svc_exec_admit(x->svc, x->tenant, &one, err) < 0)
        return exec_refused(x->svc, x->actor, x->id, err);
    return 0;
}

/* Gives back what the exec holds: its slot, its sandbox's live state, its engine handle
 * (broken: not to be reused). */
static void exec_release(struct exec_run *x, bool broken)
{
    svc_exec_release(x->svc, x->tenant, 1);
    svc_live_put(x->svc, x->lv);
    x->lv = NULL;
    svc_engine_put(x->svc, x->eng, broken);
    x->eng = NULL;
}

/* The sandbox and its live channel first: the record names the channel the command will run
 * on, so a result replayed after a restart finds it. On failure the slot is given back. */
static int exec_open(struct exec_run *x, clr_error *err)
{
    new_exec_id(x->exec_id, sizeof(x->exec_id));
    x->t0 = svc_mono_us();
    int rc = svc_engine_get(x->svc, &x->eng, err);
    if (rc == 0)
        rc = svc_live_get(x->svc, x->eng, x->id, &x->lv, err);
    if (rc < 0) {
        exec_release(x, true);
        return -1;
    }
    x->o.channel = x->lv->ch;
    x->o.channel_id = x->lv->ch ? clr_channel_new_id() : 0;
    return 0;
}

/* No command runs unaudited: its start record is durable before the command is sent. When it
 * cannot be written the exec's record says it was refused, and what it holds is given back. */
static int exec_audit_start(struct exec_run *x, clr_error *err)
{
    clr_service *svc = x->svc;
    json_t *ad = clr_audit_exec_request(&x->o);
    json_object_set_new(ad, "exec_id", json_string(x->exec_id));
    int arc = clr_audit_append(svc->audit, x->actor, x->id, "exec.start", "ok", ad, err);
    json_decref(ad);
    TRACE_AT(x->tr, audited);
    if (arc == 0)
        return 0;
    /* Refused: the record says so, for whoever lists the sandbox's commands. */
    json_t *refused = json_pack("{s:s, s:s}", "status", "start_failed", "message", err->message);
    if (clr_store_exec_insert_on(svc->store, x->exec_id, x->id, x->o.channel_id, x->logged, x->t,
                                 NULL) == 0)
        clr_store_exec_finish(svc->store, x->exec_id, CLR_EXEC_STATE_DONE, refused, svc_now_s(),
                              NULL);
    json_decref(refused);
    exec_release(x, false);
    return -1;
}

/* The command is sent first and its record committed while it runs: the commit's fsync is off
 * the command's path (the sandbox's last activity goes in the same commit). The record names the channel, so a result the agent replays after a
 * restart finds it; a client learns the exec id only once the record is durable (the started
 * event, or the response). Output is delivered by clr_exec_wait, after both. Returns the
 * start's outcome (*h: the running command, or NULL), or -2 when the record failed: then the
 * command was ended, none of its output reaches the client, and what the exec held is given
 * back (err says why). */
static int exec_launch(struct exec_run *x, clr_exec **h, struct stream_ctx *sc, clr_error *err)
{
    clr_service *svc = x->svc;
    int erc = clr_exec_start(h, x->eng, x->lv->sb, &x->o, err);
    TRACE_AT(x->tr, sent);
    clr_error ierr = CLR_ERROR_INIT;
    int irc = clr_store_exec_insert_touch(svc->store, x->exec_id, x->id, x->o.channel_id,
                                          x->logged, x->t, &ierr);
    TRACE_AT(x->tr, recorded);
    if (irc == 0)
        return erc;
    /* No record, no command: it is ended at once, and the client told why. */
    sc->cb = NULL;
    if (*h) {
        clr_error kerr = CLR_ERROR_INIT;
        clr_exec_result res;
        memset(&res, 0, sizeof(res));
        clr_exec_signal(*h, 9, &kerr);
        clr_exec_wait(*h, &res, &kerr);
        clr_exec_result_clear(&res);
        clr_exec_free(*h);
        *h = NULL;
    }
    json_t *fd = json_pack("{s:s, s:s}", "exec_id", x->exec_id, "error", ierr.message);
    clr_error aerr = CLR_ERROR_INIT;
    clr_audit_append(svc->audit, x->actor, x->id, "exec", "error", fd, &aerr);
    json_decref(fd);
    *err = ierr;
    exec_release(x, erc < 0);
    return -2;
}

/* The end of an exec: its result (erc < 0: the sandbox failed, err says how) counted, audited
 * and stored; *out (the caller's) is the exec record, as GET of it answers it. -1 when the
 * record could not be made:
 * the result is stored if it could be, and the client is told the record failed. */
static int exec_finish(struct exec_run *x, int erc, clr_exec_result *res, json_t **out,
                       clr_error *err)
{
    clr_service *svc = x->svc;
    json_t *result, *ad;
    if (erc < 0) {
        result = json_pack("{s:s, s:s}", "status", "sandbox_failed", "message", err->message);
        atomic_fetch_add(&svc->exec_failures, 1);
        ad = json_pack("{s:s, s:s}", "exec_id", x->exec_id, "error", err->message);
    } else {
        result = clr_exec_result_to_json(res);
#ifdef CLR_TRACE
        trace_attach(result, &x->tr, res);
#endif
        ad = clr_audit_exec_result(res);
        json_object_set_new(ad, "exec_id", json_string(x->exec_id));
        if (res->status == CLR_EXEC_TIMED_OUT)
            atomic_fetch_add(&svc->exec_timeouts, 1);
        else if (res->status == CLR_EXEC_OOM)
            atomic_fetch_add(&svc->exec_ooms, 1);
        else if (res->status == CLR_EXEC_SANDBOX_FAILED || res->status == CLR_EXEC_START_FAILED)
            atomic_fetch_add(&svc->exec_failures, 1);
    }
    const char *outcome = erc < 0 ? "error" : clr_exec_status_name(res->status);
    clr_exec_result_clear(res);
    atomic_fetch_add(&svc->execs, 1);
    svc_observe(&svc->h_exec, svc_mono_us() - x->t0);
    clr_error serr = CLR_ERROR_INIT;
    int arc = clr_audit_append(svc->audit, x->actor, x->id, "exec", outcome, ad, &serr);
    json_decref(ad);
    /* The record and the sandbox's last activity in one commit. */
    int64_t finished = svc_now_s();
    if (clr_store_exec_finish_touch(svc->store, x->exec_id, x->id, CLR_EXEC_STATE_DONE, result,
                                    finished, arc < 0 ? NULL : &serr) < 0 ||
        arc < 0) {
        json_decref(result);
        *err = serr;
        return -1;
    }
    *out = json_pack("{s:s, s:s, s:s, s:O, s:o, s:I, s:I}", "id", x->exec_id, "sandbox_id",
                     x->id, "state", CLR_EXEC_STATE_DONE, "request",
                     x->logged ? x->logged : json_null(), "result", result, "created_at",
                     (json_int_t)x->t, "finished_at", (json_int_t)finished);
    return 0;
}

/* Admitted, audited, sent, recorded, waited for, finished (the steps above). */
static int exec_run(struct exec_run *x, json_t *req, clr_service_event_cb on_event, void *ctx,
                    json_t **out, clr_error *err)
{
    clr_service *svc = x->svc;
    TRACE_AT(x->tr, rx);
    if (exec_admit(x, err) < 0 || exec_open(x, err) < 0)
        return -1;
    _cleanup_json_ json_t *logged = svc_redacted(req);
    x->logged = logged;
    x->t = svc_now_s();
    if (exec_audit_start(x, err) < 0)
        return -1;
    struct stream_ctx sc = {on_event, ctx};
    if (on_event) {
        x->o.on_output = on_output;
        x->o.ctx = &sc;
    }
    clr_exec *h = NULL;
    int erc = exec_launch(x, &h, &sc, err);
    if (erc == -2)
        return -1;
    clr_log(CLR_LOG_INFO, "service.exec", "id", x->id, "exec_id", x->exec_id, "actor", x->actor,
            NULL);
    if (on_event) {
        json_t *ev = json_pack("{s:s, s:s}", "event", "started", "exec_id", x->exec_id);
        on_event(ctx, ev);
        json_decref(ev);
    }
    clr_exec_result res;
    memset(&res, 0, sizeof(res));
    if (erc == 0) {
        erc = clr_exec_wait(h, &res, err);
        clr_exec_free(h);
        TRACE_AT(x->tr, waited);
    }
    if (x->lv->ch)
        atomic_fetch_add(&svc->channel_execs, 1);
    exec_release(x, erc < 0);
    return exec_finish(x, erc, &res, out, err);
}

int clr_service_exec(clr_service *svc, const char *id, json_t *req, const char *actor,
                     clr_service_event_cb on_event, void *ctx, json_t **out, clr_error *err)
{
    if (svc_valid_id(id, err) < 0 || svc_check_fields(req, "request", svc_exec_fields, err) < 0)
        return -1;
    _cleanup_command_ struct command cmd = {.argv = NULL};
    if (svc_parse_command(&cmd, req, err) < 0 || svc_command_bind(svc, &cmd, id, err) < 0)
        return -1;
    struct exec_run x = {.svc = svc, .id = id, .actor = actor, .tenant = cmd.tenant, .o = cmd.o};
    return exec_run(&x, req, on_event, ctx, out, err);
}

int clr_service_exec_get(clr_service *svc, const char *id, const char *exec_id, json_t **out,
                         clr_error *err)
{
    if (svc_valid_id(id, err) < 0)
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
