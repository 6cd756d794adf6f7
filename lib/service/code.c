/* code: see code.h. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "clearing/cleanup_json.h"
#include "internal.h"

#include "channels.h"
#include "code.h"
#include "code_internal.h"
#include "engines.h"
#include "execs.h"
#include "rows.h"
#include "service_int.h"
#include "tenants.h"
#include "validate.h"

#include "code_bridge.h" /* CODE_BRIDGE_SOURCE: code_bridge.py as a string (generated) */

pthread_mutex_t svc_code_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t svc_code_cond = PTHREAD_COND_INITIALIZER;

/* ---- the bridge ---- */

/* A request's nonce: 32 random hex digits. */
void svc_code_nonce(char nonce[33])
{
    uint8_t r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        memset(r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(nonce + 2 * i, 3, "%02x", r[i]);
}

void svc_code_bridge_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len)
{
    struct code_session *s = ctx;
    if (stream != CLR_STDOUT)
        return; /* the bridge's own complaints: not part of any answer */
    pthread_mutex_lock(&svc_code_lock);
    /* Its output is a stream, with no cap in the agent: past what any run of cells may print
     * (each is admitted with room for its answer in the budget, session_ready), the kernel
     * writes on the bridge's stdout itself, and the bridge is killed (once). */
    bool flood = s->used <= BRIDGE_BUDGET + LINE_MAX && s->used + len > BRIDGE_BUDGET + LINE_MAX;
    s->used += len;
    if (s->used <= BRIDGE_BUDGET + LINE_MAX)
        svc_code_lines_feed(s->lines, data, len);
    pthread_cond_broadcast(&svc_code_cond);
    pthread_mutex_unlock(&svc_code_lock);
    if (flood)
        clr_exec_signal(s->h, 9, NULL);
}

void *svc_code_bridge_main(void *arg)
{
    struct code_session *s = arg;
    clr_exec_result res;
    memset(&res, 0, sizeof(res));
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_exec_wait(s->h, &res, &err);
    pthread_mutex_lock(&svc_code_lock);
    s->ended = true;
    s->end_status = rc < 0 ? CLR_EXEC_SANDBOX_FAILED : res.status;
    if (rc < 0)
        snprintf(s->end_message, sizeof(s->end_message), "%.200s", err.message);
    else if (res.status == CLR_EXEC_EXITED)
        snprintf(s->end_message, sizeof(s->end_message), "the bridge exited with status %d",
                 res.exit_code);
    else
        snprintf(s->end_message, sizeof(s->end_message), "the bridge ended (%s)%s%.200s",
                 clr_exec_status_name(res.status), res.message[0] ? ": " : "", res.message);
    clr_utf8_trim_cut(s->end_message);
    pthread_cond_broadcast(&svc_code_cond);
    pthread_mutex_unlock(&svc_code_lock);
    clr_exec_result_clear(&res);
    return NULL;
}

/* Kills the bridge (if it runs) and frees what it held; the session can start a new one. The
 * caller holds the session's turn (or the daemon is stopping). The session keeps its place in
 * its tenant's max_code_sessions (a start tried again keeps it): svc_code_bridge_end gives it
 * back. */
void svc_code_bridge_kill(struct code_session *s)
{
    if (s->h) {
        pthread_mutex_lock(&svc_code_lock);
        bool ended = s->ended;
        pthread_mutex_unlock(&svc_code_lock);
        if (!ended)
            clr_exec_signal(s->h, 9, NULL);
    }
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    s->thread_started = false;
    clr_exec_free(s->h);
    s->h = NULL;
    svc_live_put(s->svc, s->lv);
    s->lv = NULL;
    if (s->eng)
        svc_engine_put(s->svc, s->eng, false);
    s->eng = NULL;
    pthread_mutex_lock(&svc_code_lock);
    svc_code_lines_free(s->lines);
    s->lines = NULL;
    s->chan = 0;
    s->ended = false;
    s->used = 0;
    pthread_mutex_unlock(&svc_code_lock);
}

/* Gives back the session's place in its tenant's max_code_sessions. */
void svc_code_session_release(struct code_session *s)
{
    pthread_mutex_lock(&svc_code_lock);
    s->kernel = false;
    pthread_mutex_unlock(&svc_code_lock);
}

/* The session's kernel is over: the bridge killed, its place given back. */
void svc_code_bridge_end(struct code_session *s)
{
    svc_code_bridge_kill(s);
    svc_code_session_release(s);
}

/* Waits for the bridge's next answer until deadline (monotonic us). 0 with *line; -1 when the
 * bridge ended or broke its protocol (*why says which), -2 at the deadline. */
static int bridge_answer(struct code_session *s, const char *nonce, uint64_t deadline,
                         json_t **line, char *why, size_t whylen, bool *oom)
{
    *oom = false;
    unsigned stale = 0;
    pthread_mutex_lock(&svc_code_lock);
    for (;;) {
        const char *broken = "";
        json_t *j = svc_code_lines_take(s->lines, &broken);
        /* An answer to another request (a cell wrote a forged one, and the real one came
         * after it): dropped, so that it never passes for a later cell's. */
        if (j && nonce &&
            strcmp(svc_code_str_or(json_object_get(j, "nonce"), ""), nonce) != 0 && ++stale <= 64) {
            json_decref(j);
            continue;
        }
        if (j && stale > 64) {
            json_decref(j);
            j = NULL;
            broken = "the bridge wrote answers to no request";
        }
        if (j) {
            pthread_mutex_unlock(&svc_code_lock);
            *line = j;
            return 0;
        }
        if (s->stopping && !broken[0] && !s->ended)
            broken = "the daemon is stopping";
        if (broken[0] || s->ended) {
            snprintf(why, whylen, "%s", broken[0] ? broken : s->end_message);
            clr_utf8_trim_cut(why);
            *oom = !broken[0] && s->end_status == CLR_EXEC_OOM;
            pthread_mutex_unlock(&svc_code_lock);
            return -1;
        }
        uint64_t now = svc_mono_us();
        if (now >= deadline) {
            pthread_mutex_unlock(&svc_code_lock);
            return -2;
        }
        uint64_t wait = deadline - now < 1000000 ? deadline - now : 1000000;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + wait * 1000;
        until.tv_sec += (time_t)(ns / 1000000000ull);
        until.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&svc_code_cond, &svc_code_lock, &until);
    }
}

/* Starts the session's bridge and waits until its kernel answers. */
static int bridge_start_once(struct code_session *s, clr_error *err)
{
    static const char *const argv[] = {"python3", "-c", CODE_BRIDGE_SOURCE, NULL};
    _cleanup_command_ struct command cmd = {.argv = NULL};
    cmd.o = (clr_exec_options)CLR_EXEC_OPTIONS_INIT;
    cmd.o.argv = argv;
    if (svc_command_bind(s->svc, &cmd, s->sandbox_id, err) < 0)
        return -1;
    cmd.o.background = true;
    cmd.o.keep_stdin_open = true;
    cmd.o.limits.stdout_cap = BRIDGE_BUDGET;
    cmd.o.limits.stderr_cap = BRIDGE_ERR_KEEP;
    cmd.o.on_output = svc_code_bridge_output;
    cmd.o.ctx = s;
    struct code_lines *lines = svc_code_lines_new(LINE_MAX);
    if (!lines)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    pthread_mutex_lock(&svc_code_lock);
    s->lines = lines;
    pthread_mutex_unlock(&svc_code_lock);
    int rc = svc_engine_get(s->svc, &s->eng, err);
    /* On the sandbox's live channel, as an exec: a cell is a line on an open stream (no
     * docker exec's hops), and a snapshot taken while the kernel runs can be forked and
     * restored with it. Its output is a stream: the agent keeps only the newest for a replay.
     * An agent without a channel gets a docker exec of its own. */
    if (rc == 0)
        rc = svc_live_get(s->svc, s->eng, s->sandbox_id, &s->lv, err);
    if (rc == 0) {
        cmd.o.stream = s->lv->ch != NULL;
        if (cmd.o.stream)
            cmd.o.limits.stdout_cap = BRIDGE_QUEUE; /* not a cap: the queue's bound */
        cmd.o.channel = s->lv->ch;
        cmd.o.channel_id = s->lv->ch ? clr_channel_new_id() : 0;
        rc = clr_exec_start(&s->h, s->eng, s->lv->sb, &cmd.o, err);
        pthread_mutex_lock(&svc_code_lock);
        s->chan = rc == 0 ? cmd.o.channel_id : 0;
        pthread_mutex_unlock(&svc_code_lock);
    }
    if (rc == 0 && pthread_create(&s->thread, NULL, svc_code_bridge_main, s) != 0)
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, EAGAIN, "cannot start a thread");
    else if (rc == 0)
        s->thread_started = true;
    if (rc < 0) {
        svc_code_bridge_kill(s);
        return -1;
    }
    json_t *line = NULL;
    char why[256] = "";
    bool oom;
    rc = bridge_answer(s, NULL, svc_mono_us() + (uint64_t)READY_WAIT_MS * 1000, &line, why,
                       sizeof(why), &oom);
    const char *ev = json_string_value(json_object_get(line, "event"));
    if (rc == 0 && ev && strcmp(ev, "ready") == 0) {
        json_decref(line);
        return 0;
    }
    if (rc == 0 && ev && strcmp(ev, "fatal") == 0) {
        char fatal[401];
        snprintf(fatal, sizeof(fatal), "%s",
                 svc_code_str_or(json_object_get(line, "message"), "the bridge failed"));
        clr_utf8_trim_cut(fatal);
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "%s", fatal);
    } else if (rc == 0)
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the bridge's first line was not 'ready'");
    else if (rc == -2)
        clr_error_set(err, CLR_E_UNAVAILABLE, ETIMEDOUT,
                      "the code session's kernel did not start within %d s", READY_WAIT_MS / 1000);
    else
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the code session could not start: %s%s", why,
                      oom ? " (the sandbox's memory limit)" : "");
    json_decref(line);
    pthread_mutex_lock(&svc_code_lock);
    s->start_refused = rc == -1 && s->ended && s->end_status == CLR_EXEC_START_FAILED;
    pthread_mutex_unlock(&svc_code_lock);
    svc_code_bridge_kill(s);
    return -1;
}

/* The engine's runtime fails an exec now and then on a loaded host (runsc exiting 128 under
 * `docker exec`): nothing ran in the sandbox then, so the start is tried again, up to
 * BRIDGE_START_TRIES in all, a little later each time. Any other failure is final. */
#define BRIDGE_START_TRIES 3
/* Kernels starting at once, daemon-wide: a kernel's start is seconds of CPU under gVisor, and
 * twenty begun together on a busy two-core host each took over two minutes (the bridge gives up
 * at 300 s); in turns of four, each start is short and the last one is sooner. */
#define CODE_STARTS_AT_ONCE 4
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static unsigned starting;

static int bridge_start_tries(struct code_session *s, clr_error *err);

static int bridge_start(struct code_session *s, clr_error *err)
{
    pthread_mutex_lock(&start_lock);
    while (starting >= CODE_STARTS_AT_ONCE)
        pthread_cond_wait(&start_cond, &start_lock);
    starting++;
    pthread_mutex_unlock(&start_lock);
    int rc = bridge_start_tries(s, err);
    pthread_mutex_lock(&start_lock);
    starting--;
    pthread_cond_signal(&start_cond);
    pthread_mutex_unlock(&start_lock);
    return rc;
}

static int bridge_start_tries(struct code_session *s, clr_error *err)
{
    for (int attempt = 1;; attempt++) {
        s->start_refused = false;
        if (bridge_start_once(s, err) == 0)
            return 0;
        if (!s->start_refused || attempt >= BRIDGE_START_TRIES)
            return -1;
        clr_log(CLR_LOG_WARN, "service.code_retry", "sandbox", s->sandbox_id, "error",
                err->message, NULL);
        *err = (clr_error)CLR_ERROR_INIT;
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000000L * attempt};
        nanosleep(&pause, NULL);
    }
}

/* Sends one request line to the bridge. */
int svc_code_bridge_send(struct code_session *s, json_t *req, clr_error *err)
{
    _cleanup_free_ char *text = json_dumps(req, JSON_COMPACT);
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t n = strlen(text);
    text[n] = '\n';
    return clr_exec_write_stdin(s->h, text, n + 1, err);
}

/* ---- sessions and their turns ---- */

/* A tenant's sessions that hold a kernel, other than except (svc_code_lock held). */
static unsigned tenant_kernels_locked(clr_service *svc, const char *tenant,
                                      const struct code_session *except)
{
    unsigned n = 0;
    for (const struct code_session *c = svc->codes; c; c = c->next)
        n += c != except && c->kernel && !c->ended && strcmp(c->tenant, tenant) == 0;
    return n;
}

static int code_sessions_full(clr_service *svc, const char *tenant, unsigned running,
                              unsigned max, clr_error *err)
{
    atomic_fetch_add(&svc->refused, 1);
    return clr_error_set(err, CLR_E_LIMIT, 0,
                         "tenant %s is at its quota: %u code sessions are running in its "
                         "sandboxes (max_code_sessions %u for tenant %s); end one (DELETE "
                         "/v1/sandboxes/ID/code, or destroy a sandbox whose code session is no "
                         "longer needed) or ask the operator to raise "
                         "tenants.%s.max_code_sessions",
                         tenant, running, max, tenant, tenant);
}

/* Room for the sandbox's session to hold a kernel: it holds one already, or its tenant is below
 * its max_code_sessions. The check a cell makes before it is recorded or streamed (a tenant at
 * its quota gets its 429 at once); svc_code_session_admit decides. */
static int session_room(clr_service *svc, const char *id, const char *tenant, clr_error *err)
{
    unsigned max = svc_code_sessions_max(svc, tenant);
    pthread_mutex_lock(&svc_code_lock);
    const struct code_session *s = svc->codes;
    while (s && strcmp(s->sandbox_id, id) != 0)
        s = s->next;
    unsigned running = tenant_kernels_locked(svc, tenant, s);
    bool room = (s && s->kernel && !s->ended) || running < max;
    pthread_mutex_unlock(&svc_code_lock);
    return room ? 0 : code_sessions_full(svc, tenant, running, max, err);
}

/* The session, holding its turn, takes one of its tenant's max_code_sessions for the kernel it
 * is about to start: counted and taken under svc_code_lock, so that two starts cannot both take the
 * last one, and held from here (a kernel's start is seconds) until svc_code_bridge_end. CLR_E_LIMIT
 * naming the quota when it is full (counted in refused). */
int svc_code_session_admit(struct code_session *s, clr_error *err)
{
    unsigned max = svc_code_sessions_max(s->svc, s->tenant);
    pthread_mutex_lock(&svc_code_lock);
    unsigned running = tenant_kernels_locked(s->svc, s->tenant, s);
    bool room = running < max;
    if (room)
        s->kernel = true;
    pthread_mutex_unlock(&svc_code_lock);
    return room ? 0 : code_sessions_full(s->svc, s->tenant, running, max, err);
}

/* Whether a session holds one of the daemon's CODE_MAX_SESSIONS: while its kernel runs or
 * starts, or a call holds or waits for its turn (svc_code_lock held). One that only keeps a notice
 * for its next cell (its kernel ended, or was ended on request) holds none. */
static bool session_in_use_locked(const struct code_session *c)
{
    return (c->kernel && !c->ended) || c->next_ticket != c->serving;
}

/* The sandbox's session (made on first use when make, counting in tenant's max_code_sessions)
 * with the caller's turn taken: cells run in the order they came. NULL with err when the queue
 * or the daemon is full; NULL with err untouched when there is none and make is false. */
struct code_session *svc_code_session_take(clr_service *svc, const char *id, const char *tenant,
                                         bool make, clr_error *err)
{
    pthread_mutex_lock(&svc_code_lock);
    struct code_session *s = NULL;
    size_t n = 0; /* the other sessions in use */
    for (struct code_session *c = svc->codes; c; c = c->next) {
        if (!s && strcmp(c->sandbox_id, id) == 0)
            s = c;
        else
            n += session_in_use_locked(c);
    }
    if (!s && !make) {
        pthread_mutex_unlock(&svc_code_lock);
        return NULL;
    }
    /* A call that would bring a session into use (a new one, or one that only keeps a notice:
     * its next cell starts a kernel) is refused at capacity as a new one is; an end never is. */
    size_t cap = svc->code_sessions_cap ? svc->code_sessions_cap : CODE_MAX_SESSIONS;
    if (make && (!s || !session_in_use_locked(s)) && n >= cap) {
        pthread_mutex_unlock(&svc_code_lock);
        clr_error_set(err, CLR_E_LIMIT, 0,
                      "at capacity: the daemon keeps at most %d code sessions and all are in "
                      "use; try again once one ends (DELETE /v1/sandboxes/ID/code, or a sandbox "
                      "destroyed, ends its session), or spread the work over another daemon",
                      (int)cap);
        return NULL;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            pthread_mutex_unlock(&svc_code_lock);
            clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
            return NULL;
        }
        s->svc = svc;
        snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", id);
        snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
        s->next = svc->codes;
        svc->codes = s;
    }
    if (s->next_ticket - s->serving >= CODE_MAX_QUEUED) {
        pthread_mutex_unlock(&svc_code_lock);
        clr_error_set(err, CLR_E_LIMIT, 0,
                      "at capacity: %d cells are queued for this sandbox's code session",
                      CODE_MAX_QUEUED);
        return NULL;
    }
    uint64_t ticket = s->next_ticket++;
    while (s->serving != ticket)
        pthread_cond_wait(&svc_code_cond, &svc_code_lock);
    if (s->stopping) {
        s->serving++;
        pthread_cond_broadcast(&svc_code_cond);
        pthread_mutex_unlock(&svc_code_lock);
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the daemon is stopping");
        return NULL;
    }
    pthread_mutex_unlock(&svc_code_lock);
    return s;
}

static void session_give(struct code_session *s)
{
    pthread_mutex_lock(&svc_code_lock);
    if (s->lines)
        svc_code_lines_on_event(s->lines, NULL, NULL, 0);
    s->serving++;
    pthread_cond_broadcast(&svc_code_cond);
    pthread_mutex_unlock(&svc_code_lock);
}

/* Unlinks the session of id if no cell holds or waits for it (svc_code_lock held). */
static struct code_session *session_unlink_idle_locked(clr_service *svc, const char *id)
{
    struct code_session **pp = &svc->codes;
    while (*pp && strcmp((*pp)->sandbox_id, id) != 0)
        pp = &(*pp)->next;
    struct code_session *s = *pp;
    if (!s || s->next_ticket != s->serving)
        return NULL;
    *pp = s->next;
    return s;
}

/* Gives the turn back, and frees the session when it keeps nothing: no kernel (its bridge was
 * ended), no notice for a next cell, no call waiting for its turn. */
void svc_code_session_give_or_free(struct code_session *s)
{
    bool keeps = s->h || s->lost[0]; /* read while the turn is still held */
    pthread_mutex_lock(&svc_code_lock);
    s->serving++;
    struct code_session *gone = keeps ? NULL : session_unlink_idle_locked(s->svc, s->sandbox_id);
    pthread_cond_broadcast(&svc_code_cond);
    pthread_mutex_unlock(&svc_code_lock);
    free(gone);
}

/* A running bridge with room for a cell's answer: one that ended (or cannot print another
 * answer within its budget) is replaced. A session without a running kernel is admitted to its
 * tenant's max_code_sessions first (CLR_E_LIMIT when it is full; a replaced kernel's place is
 * given back before, so it is counted again). *fresh: a new kernel was started;
 * *why_restarted: why an old one was replaced ("" when it was not); *killed: whether a running
 * kernel was ended for it (its output budget spent), so that a failure after it is an error,
 * not a refusal that changed nothing. */
static int session_ready(struct code_session *s, size_t line_max, bool *fresh,
                         char *why_restarted, size_t len, bool *killed, clr_error *err)
{
    *fresh = false;
    *killed = false;
    why_restarted[0] = '\0';
    if (s->h) {
        pthread_mutex_lock(&svc_code_lock);
        bool ended = s->ended, full = s->used + line_max > BRIDGE_BUDGET;
        pthread_mutex_unlock(&svc_code_lock);
        *killed = full && !ended;
        if (ended || full) {
            snprintf(s->lost, sizeof(s->lost), "%s",
                     !full ? "the code session had ended: a fresh kernel was started (its state "
                             "is gone)"
                           : "the code session's output budget was spent: a fresh kernel was "
                             "started (its state is gone)");
            svc_code_bridge_end(s);
        }
    }
    if (!s->h) {
        if (svc_code_adopting(s->sandbox_id))
            return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                                 "sandbox %s is being forked or restored from a snapshot, whose "
                                 "code session's kernel it takes over: send the cell again once "
                                 "that is done",
                                 s->sandbox_id);
        if (svc_code_session_admit(s, err) < 0)
            return -1;
        if (bridge_start(s, err) < 0) {
            svc_code_session_release(s);
            return -1;
        }
        *fresh = true;
    }
    /* Said only now, by the answer of a cell that has a kernel: a cell refused on the way (its
     * tenant's max_code_sessions full, a kernel that would not start) leaves it for the next
     * one, which would otherwise answer as if nothing had been lost. */
    snprintf(why_restarted, len, "%s", s->lost);
    s->lost[0] = '\0';
    return 0;
}

/* ---- cells ---- */

struct cell {
    const char *code;
    size_t code_len;
    uint64_t timeout_ms, cap;
};

static int cell_parse(json_t *req, struct cell *c, clr_error *err)
{
    static const char *const fields[] = {"code", "timeout", "output_cap", NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *v = json_object_get(req, "code");
    if (!json_is_string(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "code must be a string (the cell's source)");
    c->code = json_string_value(v);
    c->code_len = json_string_length(v);
    if (strlen(c->code) != c->code_len)
        return clr_error_set(err, CLR_E_INVALID, 0, "code must not contain NUL characters");
    c->timeout_ms = CELL_TIMEOUT_DEFAULT_MS;
    v = json_object_get(req, "timeout");
    if (json_is_string(v) && clr_parse_duration_ms(&c->timeout_ms, json_string_value(v), err) < 0)
        return -1;
    if (json_is_integer(v))
        c->timeout_ms = json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) * 1000 : 0;
    if ((v && !json_is_string(v) && !json_is_integer(v)) || c->timeout_ms < 1000 ||
        c->timeout_ms > CELL_TIMEOUT_MAX_MS)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "timeout must be between 1s and 1h (\"30s\", or seconds)");
    c->cap = CELL_CAP_DEFAULT;
    v = json_object_get(req, "output_cap");
    if (json_is_string(v) && clr_parse_size(&c->cap, json_string_value(v), err) < 0)
        return -1;
    if (json_is_integer(v))
        c->cap = json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    if ((v && !json_is_string(v) && !json_is_integer(v)) || c->cap < 1024 || c->cap > CELL_CAP_MAX)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "output_cap must be between 1k and 4m (\"1m\", or bytes)");
    return 0;
}

/* The tenant of a running sandbox, into tenant (CLR_TENANT_MAX + 1 bytes). */
static int running_tenant(clr_service *svc, const char *id, char *tenant, clr_error *err)
{
    if (svc_require_running(svc, id, err) < 0)
        return -1;
    return svc_row_tenant(svc, id, tenant, err);
}

/* A tenant at its max_code_sessions is refused before the cell is recorded, and the refusal
 * recorded ("code", refused): the same whether the stream's check (clr_service_code_check) or
 * the cell itself (clr_service_code_run) refuses it. */
static int cell_room(clr_service *svc, const char *id, const char *tenant, const char *actor,
                     clr_error *err)
{
    if (session_room(svc, id, tenant, err) == 0)
        return 0;
    svc_audit_failure(svc, actor, id, "code", err);
    return -1;
}

int clr_service_code_check(clr_service *svc, const char *id, json_t *req, const char *actor,
                           clr_error *err)
{
    struct cell c;
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_valid_id(id, err) < 0 || cell_parse(req, &c, err) < 0 ||
        running_tenant(svc, id, tenant, err) < 0)
        return -1;
    return cell_room(svc, id, tenant, actor, err);
}

/* A bridge taken over from a snapshot answers its sync after the cell it ran at the checkpoint
 * ends (the bridge interrupts that one at its own timeout, at most CELL_TIMEOUT_MAX_MS): a cell
 * waits for the sync's answer before its own deadline starts. The bridge's end or a broken line
 * ends the wait, as does the daemon's stop; past the longest cell, bridge_answer judges. */
static void bridge_synced(struct code_session *s)
{
    uint64_t deadline = svc_mono_us() + (uint64_t)(CELL_TIMEOUT_MAX_MS + ANSWER_GRACE_MS) * 1000;
    pthread_mutex_lock(&svc_code_lock);
    while (s->lines && svc_code_lines_resyncing(s->lines) && !s->ended && !s->stopping) {
        uint64_t now = svc_mono_us();
        if (now >= deadline)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&svc_code_cond, &svc_code_lock, &until);
    }
    pthread_mutex_unlock(&svc_code_lock);
}

/* Sends the cell and waits for its answer: the bridge's, or the daemon's own when the bridge
 * ended (oom, died), broke its protocol or did not answer in time (its session is then ended). */
static json_t *cell_exchange(struct code_session *s, const struct cell *c, bool stream,
                             clr_error *err)
{
    /* The answer must name this request's nonce: the cell's code can write to the bridge's
     * stdout, but does not know the nonce (it is only in the bridge's stdin and memory). */
    char nonce[33];
    svc_code_nonce(nonce);
    json_t *req = json_pack("{s:s, s:s%, s:I, s:I, s:b, s:s}", "op", "run", "code", c->code,
                            c->code_len, "timeout_ms", (json_int_t)c->timeout_ms, "cap",
                            (json_int_t)c->cap, "stream", stream, "nonce", nonce);
    int rc = svc_code_bridge_send(s, req, err);
    json_decref(req);
    char why[256] = "";
    json_t *line = NULL, *a = NULL;
    bool oom = false;
    if (rc == 0)
        bridge_synced(s);
    if (rc == 0)
        rc = bridge_answer(s, nonce, svc_mono_us() + (c->timeout_ms + ANSWER_GRACE_MS) * 1000,
                           &line, why, sizeof(why), &oom);
    else
        snprintf(why, sizeof(why), "%.200s", err->message);
    clr_utf8_trim_cut(why);
    if (rc == 0 && !(a = svc_code_answer(line, c->cap)))
        snprintf(why, sizeof(why), "the bridge's answer was not a cell's result");
    json_decref(line);
    /* Output events the cap cut on their way to a streamed cell's client: the answer says so
     * too, whatever the bridge's answer claims. */
    pthread_mutex_lock(&svc_code_lock);
    bool events_cut = s->lines && svc_code_lines_truncated(s->lines);
    pthread_mutex_unlock(&svc_code_lock);
    if (a) {
        if (events_cut)
            json_object_set_new(a, "truncated", json_true());
        return a;
    }
    if (oom)
        a = svc_code_own_answer("oom", true,
                                "the cell went past the sandbox's memory limit: the kernel was "
                                "killed (its state is gone); the next call starts a fresh one");
    /* The bridge ended because its sandbox did (destroyed or lost under the cell): said as an
     * exec's command is told, never as a kernel that died. */
    else if ((a = svc_code_sandbox_gone(s->svc, s->sandbox_id)))
        ;
    else if (rc == -2)
        a = svc_code_own_answer("timeout", true,
                                "the kernel did not answer after the cell's timeout: the code "
                                "session was ended (its state is gone)");
    else {
        char msg[400];
        snprintf(msg, sizeof(msg), "the code session ended: %s; the next call starts a fresh "
                                   "kernel", why);
        a = svc_code_own_answer("died", true, msg);
    }
    snprintf(s->lost, sizeof(s->lost), "%s",
             oom ? "the last kernel went past the sandbox's memory limit: this is a fresh one "
                   "(its state is gone)"
                 : "the last kernel ended: this is a fresh one (its state is gone)");
    if (events_cut)
        json_object_set_new(a, "truncated", json_true());
    svc_code_bridge_end(s);
    return a;
}

/* The cell's records: "code.start" (durable before anything runs; fail closed) and "code". */
static int cell_audit(clr_service *svc, const char *actor, const char *id, const char *action,
                      const char *outcome, const char *sha, json_t *extra, clr_error *err)
{
    json_t *d = json_pack("{s:s}", "code_sha256", sha);
    if (extra)
        json_object_update(d, extra);
    int rc = clr_audit_append(svc->audit, actor, id, action, outcome, d, err);
    json_decref(d);
    return rc;
}

static int code_run_admitted(clr_service *svc, const char *id, const char *tenant,
                             const struct cell *cp, const char *actor,
                             clr_service_event_cb on_event, void *ctx, json_t **out,
                             clr_error *err);

/* A cell is a command like an exec: while it waits for its turn and runs it holds a slot of
 * max_execs and of its sandbox's tenant's max_execs (CLR_E_LIMIT, audited, when either is full).
 * Its session's kernel holds one of the tenant's max_code_sessions (the same). */
int clr_service_code_run(clr_service *svc, const char *id, json_t *req, const char *actor,
                         clr_service_event_cb on_event, void *ctx, json_t **out, clr_error *err)
{
    struct cell c;
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_valid_id(id, err) < 0 || cell_parse(req, &c, err) < 0 ||
        running_tenant(svc, id, tenant, err) < 0)
        return -1;
    if (cell_room(svc, id, tenant, actor, err) < 0)
        return -1;
    unsigned one = 1;
    if (svc_exec_admit(svc, tenant, &one, err) < 0) {
        svc_audit_failure(svc, actor, id, "code", err);
        return -1;
    }
    int rc = code_run_admitted(svc, id, tenant, &c, actor, on_event, ctx, out, err);
    svc_exec_release(svc, tenant, 1);
    return rc;
}

static int code_run_admitted(clr_service *svc, const char *id, const char *tenant,
                             const struct cell *cp, const char *actor,
                             clr_service_event_cb on_event, void *ctx, json_t **out,
                             clr_error *err)
{
    struct cell c = *cp;
    char sha[65];
    clr_sha256_hex(sha, c.code, c.code_len);
    uint64_t t0 = svc_mono_us();
    json_t *size = json_pack("{s:I}", "code_bytes", (json_int_t)c.code_len);
    int rc = cell_audit(svc, actor, id, "code.start", "ok", sha, size, err);
    json_decref(size);
    if (rc < 0)
        return -1;
    struct code_session *s = svc_code_session_take(svc, id, tenant, true, err);
    if (!s) {
        svc_audit_failure(svc, actor, id, "code", err);
        return -1;
    }
    bool fresh, killed, held = false;
    char why[200];
    json_t *a = NULL;
    if (session_ready(s, 8 * c.cap + 64 * 1024, &fresh, why, sizeof(why), &killed, err) < 0) {
        session_give(s);
        /* Its sandbox was destroyed while its kernel started: the cell's answer says so, as
         * one destroyed under a running cell. */
        a = svc_code_sandbox_gone(svc, id);
        if (!a) {
            /* A kernel ended for this cell (its budget spent) is something done: an error,
             * said, not a refusal (the notice stays for the next cell). */
            json_t *d = killed ? json_pack("{s:b}", "kernel_ended", true) : NULL;
            if (killed)
                clr_error_prefix(err, "the code session's output budget was spent and its "
                                      "kernel ended (its state is gone), but no fresh one "
                                      "started");
            svc_audit_failure_with(svc, actor, id, "code", err, killed ? "error" : NULL, d);
            json_decref(d);
            return -1;
        }
        *err = (clr_error)CLR_ERROR_INIT;
        why[0] = '\0';
    } else {
        pthread_mutex_lock(&svc_code_lock);
        svc_code_lines_on_event(s->lines, on_event, ctx, c.cap);
        pthread_mutex_unlock(&svc_code_lock);
        /* Active from its start, as an exec: the idle reaper leaves a long cell's sandbox
         * alone. */
        clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
        a = cell_exchange(s, &c, on_event != NULL, err);
        /* The cell's output ends with its answer (a kernel's stray output after it goes to no
         * cell); its turn is given back after its record, as a restart's. */
        pthread_mutex_lock(&svc_code_lock);
        if (s->lines) /* none when the cell ended its bridge */
            svc_code_lines_on_event(s->lines, NULL, NULL, 0);
        pthread_mutex_unlock(&svc_code_lock);
        held = true;
    }
    /* A kernel replaced before the cell: said, unless the sandbox itself is gone (no kernel of
     * it runs again). */
    const char *said = svc_code_str_or(json_object_get(a, "status"), "");
    if (why[0] && strcmp(said, "sandbox_failed") != 0) {
        json_object_set_new(a, "restarted", json_true());
        if (!json_is_string(json_object_get(a, "message")))
            json_object_set_new(a, "message", json_string(why));
    }
    uint64_t ms = (svc_mono_us() - t0) / 1000;
    json_object_set_new(a, "duration_ms", json_integer((json_int_t)ms));
    const char *status = json_string_value(json_object_get(a, "status"));
    json_t *d = json_pack("{s:s, s:I, s:O, s:b}", "status", status, "duration_ms",
                          (json_int_t)ms, "execution_count",
                          json_object_get(a, "execution_count"), "restarted",
                          json_is_true(json_object_get(a, "restarted")));
    rc = cell_audit(svc, actor, id, "code", status, sha, d, err);
    json_decref(d);
    /* The client is told the cell failed, not what its answer said: a fresh kernel the answer
     * announced is said again by the next cell (the turn still held: no cell comes between). */
    if (rc < 0 && held && why[0] && !s->lost[0])
        snprintf(s->lost, sizeof(s->lost), "%s", why);
    if (held)
        session_give(s);
    clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
    if (rc < 0) {
        json_decref(a);
        return -1;
    }
    *out = a;
    return 0;
}

/* The one record of a restart or an end (action "code.restart", "code.end"), written once its
 * outcome is known: never an "ok" before it (a call then refused would leave a record saying
 * it was done). kernel_ended: whether it ended a running kernel (its state is gone). A failure
 * is recorded as every refusal is (svc_audit_failure), except one that came after it ended the
 * kernel: an error, never "refused", since something was done. */
static int kernel_audit(clr_service *svc, const char *actor, const char *id, const char *action,
                        bool kernel_ended, const clr_error *failed, clr_error *err)
{
    json_t *d = json_pack("{s:b}", "kernel_ended", kernel_ended);
    int rc = 0;
    if (failed)
        svc_audit_failure_with(svc, actor, id, action, failed, kernel_ended ? "error" : NULL, d);
    else
        rc = clr_audit_append(svc->audit, actor, id, action, "ok", d, err);
    json_decref(d);
    return rc;
}

int clr_service_code_restart(clr_service *svc, const char *id, const char *actor, json_t **out,
                             clr_error *err)
{
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_valid_id(id, err) < 0 || running_tenant(svc, id, tenant, err) < 0)
        return -1;
    if (session_room(svc, id, tenant, err) < 0) {
        kernel_audit(svc, actor, id, "code.restart", false, err, NULL);
        return -1;
    }
    struct code_session *s = svc_code_session_take(svc, id, tenant, true, err);
    if (!s) {
        kernel_audit(svc, actor, id, "code.restart", false, err, NULL);
        return -1;
    }
    /* Fail closed, as a commit (whose record also names its outcome): a log that cannot take
     * the record refuses the restart before the kernel is touched. */
    char why[sizeof(err->message)];
    bool writable = clr_audit_writable(svc->audit, why, sizeof(why));
    if (!writable || svc_code_adopting(id)) { /* the adoption would end the fresh kernel */
        session_give(s);
        if (writable)
            snprintf(why, sizeof(why), "sandbox %s is being forked or restored from a snapshot: "
                                       "restart its code session once that is done", id);
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "%s", why);
        kernel_audit(svc, actor, id, "code.restart", false, err, NULL);
        return -1;
    }
    pthread_mutex_lock(&svc_code_lock);
    bool kernel_ended = s->h && !s->ended;
    pthread_mutex_unlock(&svc_code_lock);
    /* A fresh bridge is a fresh kernel, however the old one was; its place in the tenant's
     * max_code_sessions is taken again (another sandbox's start may have taken it). */
    bool had_kernel = s->h != NULL;
    svc_code_bridge_end(s);
    int rc = svc_code_session_admit(s, err);
    if (rc == 0 && (rc = bridge_start(s, err)) < 0)
        svc_code_session_release(s);
    /* The old kernel is gone and no new one came: the next cell's fresh kernel says so (its
     * client saw this restart fail, and may take the old state to be still there). A notice
     * already waiting is older and says more (an oom): it stands. */
    if (rc < 0 && had_kernel && !s->lost[0])
        snprintf(s->lost, sizeof(s->lost), "%s",
                 kernel_ended ? "the last kernel was ended by a restart that could not start a "
                                "new one: this is a fresh one (its state is gone)"
                              : "the last kernel had ended and a restart could not start a new "
                                "one: this is a fresh one (its state is gone)");
    /* The record is written while the turn is held: a cell queued behind the restart records
     * after it. */
    if (rc < 0) {
        kernel_audit(svc, actor, id, "code.restart", kernel_ended, err, NULL);
        session_give(s);
        return -1;
    }
    if (kernel_audit(svc, actor, id, "code.restart", kernel_ended, NULL, err) < 0) {
        /* The log failed after the kernel was replaced: the client is told the restart failed,
         * so the next cell must say its kernel is fresh. */
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", id, "action", "code.restart", "error",
                err->message, NULL);
        snprintf(s->lost, sizeof(s->lost), "%s",
                 "the kernel was replaced by a restart whose audit record could not be written: "
                 "this is a fresh one (its state is gone)");
        session_give(s);
        return -1;
    }
    /* The restart's answer is the notice: an older one waiting is about a kernel already gone. */
    s->lost[0] = '\0';
    session_give(s);
    *out = json_pack("{s:s}", "status", "restarted");
    return 0;
}

/* Said by the first cell after an end, whose kernel is fresh (session_ready). */
#define ENDED_NOTICE                                                                         \
    "the code session was ended (DELETE .../code): this is a fresh kernel (its state is gone)"

/* An end that found a session: its kernel ended and its place given back, the notice left for
 * its next cell, then its record. The caller holds the session's turn; this gives it back. */
static int session_end(struct code_session *s, const char *actor, clr_error *err)
{
    pthread_mutex_lock(&svc_code_lock);
    bool kernel_ended = s->h && !s->ended;
    pthread_mutex_unlock(&svc_code_lock);
    /* A kernel whose state is gone, however: the next cell says it was ended on request (a
     * notice already waiting, of a kernel that ended on its own, is about the same state). A
     * session that never had one says nothing: its next kernel is its first. */
    if (s->h || s->lost[0])
        snprintf(s->lost, sizeof(s->lost), "%s", ENDED_NOTICE);
    svc_code_bridge_end(s);
    /* The record is written while the turn is held: a cell queued behind the end records after
     * it. */
    int rc = kernel_audit(s->svc, actor, s->sandbox_id, "code.end", kernel_ended, NULL, err);
    if (rc < 0) {
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "id", s->sandbox_id, "action", "code.end",
                "error", err->message, NULL);
        /* The client is told the end failed: it must not take the kernel to be still there. */
        if (kernel_ended)
            clr_error_prefix(err, "the code session's kernel was ended, but its audit record "
                                  "could not be written");
    }
    svc_code_session_give_or_free(s);
    return rc;
}

int clr_service_code_end(clr_service *svc, const char *id, const char *actor, clr_error *err)
{
    char tenant[CLR_TENANT_MAX + 1];
    if (svc_valid_id(id, err) < 0 || running_tenant(svc, id, tenant, err) < 0)
        return -1;
    /* Its turn after the calls already in flight, as a restart's: a cell that runs ends first
     * (the end never cuts it), a cell sent after the end runs in a fresh kernel. */
    struct code_session *s = svc_code_session_take(svc, id, tenant, false, err);
    if (!s && err->code != CLR_E_NONE) {
        kernel_audit(svc, actor, id, "code.end", false, err, NULL);
        return -1;
    }
    /* Fail closed, as a restart: a log that cannot take the record refuses the end before the
     * kernel is touched. */
    char why[sizeof(err->message)];
    if (!clr_audit_writable(svc->audit, why, sizeof(why))) {
        if (s)
            session_give(s);
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "%s", why);
        kernel_audit(svc, actor, id, "code.end", false, err, NULL);
        return -1;
    }
    if (!s) /* no session: nothing to end, and its record says so */
        return kernel_audit(svc, actor, id, "code.end", false, NULL, err);
    return session_end(s, actor, err);
}

/* ---- the daemon's side ---- */

/* Moves the session of id to the end of the list (svc_code_lock held). */
static void session_to_tail_locked(clr_service *svc, const char *id)
{
    struct code_session **pp = &svc->codes;
    while (*pp && strcmp((*pp)->sandbox_id, id) != 0)
        pp = &(*pp)->next;
    struct code_session *s = *pp;
    if (!s || !s->next)
        return;
    *pp = s->next;
    struct code_session **tail = pp;
    while (*tail)
        tail = &(*tail)->next;
    s->next = NULL;
    *tail = s;
}

size_t svc_code_prune(clr_service *svc)
{
    /* Candidates first (at most 64 a pass), then the store is asked without the lock. */
    char ids[64][CLR_SANDBOX_ID_MAX + 1];
    size_t n = 0, freed = 0;
    pthread_mutex_lock(&svc_code_lock);
    for (struct code_session *s = svc->codes; s && n < 64; s = s->next) {
        if (s->next_ticket == s->serving && (!s->h || s->ended))
            snprintf(ids[n++], sizeof(ids[0]), "%s", s->sandbox_id);
    }
    pthread_mutex_unlock(&svc_code_lock);
    for (size_t i = 0; i < n; i++) {
        bool running = true;
        clr_error err = CLR_ERROR_INIT;
        int rc = svc_row_running(svc, ids[i], &running, &err);
        if ((rc < 0 && err.code != CLR_E_NOT_FOUND) || (rc == 0 && running)) {
            /* Kept, and moved behind the rest: 64 sessions of running sandboxes that keep only
             * a notice would otherwise be the candidates of every pass, and a destroyed
             * sandbox's session behind them never freed. */
            pthread_mutex_lock(&svc_code_lock);
            session_to_tail_locked(svc, ids[i]);
            pthread_mutex_unlock(&svc_code_lock);
            continue;
        }
        pthread_mutex_lock(&svc_code_lock);
        struct code_session *s = session_unlink_idle_locked(svc, ids[i]);
        pthread_mutex_unlock(&svc_code_lock);
        if (s) {
            svc_code_bridge_end(s);
            free(s);
            freed++;
        }
    }
    return freed;
}

bool svc_code_busy(clr_service *svc, const char *id)
{
    bool busy = false;
    pthread_mutex_lock(&svc_code_lock);
    for (struct code_session *s = svc->codes; s && !busy; s = s->next)
        busy = s->next_ticket != s->serving && strcmp(s->sandbox_id, id) == 0;
    pthread_mutex_unlock(&svc_code_lock);
    return busy;
}

void svc_code_stop(clr_service *svc)
{
    /* Cells still in flight (a stream's thread outlives its connection) end first: each sees
     * the daemon stopping within a second and gives its turn back; only then are the sessions
     * freed. Sessions still held after a minute are left (never freed under a cell). */
    pthread_mutex_lock(&svc_code_lock);
    for (struct code_session *c = svc->codes; c; c = c->next)
        c->stopping = true;
    pthread_cond_broadcast(&svc_code_cond);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    bool held = true;
    while (held) {
        held = false;
        for (struct code_session *c = svc->codes; c; c = c->next)
            held = held || c->next_ticket != c->serving;
        if (held && pthread_cond_timedwait(&svc_code_cond, &svc_code_lock, &until) != 0)
            break;
    }
    /* Taken under the lock: the reaper's prune may still run. */
    struct code_session *s = held ? NULL : svc->codes;
    if (!held)
        svc->codes = NULL;
    pthread_mutex_unlock(&svc_code_lock);
    if (held)
        clr_log(CLR_LOG_ERROR, "service.code_stop", "error",
                "cells of the code interpreter still held their sessions after 60 s: left",
                NULL);
    while (s) {
        struct code_session *n = s->next;
        svc_code_bridge_end(s);
        free(s);
        s = n;
    }
}
