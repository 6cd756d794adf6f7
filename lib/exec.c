/* Exec: one command through the agent.
 *
 * The engine starts `clearing-agent exec` in the sandbox (a docker exec, as root with the
 * sandbox's three capabilities); over the hijacked stream the library sends the EXEC request,
 * the stdin bytes and STDIN_EOF as agent frames, and reads back the engine's multiplexed stream:
 * the agent's stdout carries agent frames (the command's output and the result), the agent's
 * stderr its own diagnostics. Over a live channel (channel.c, below this file) the same frames
 * travel on the sandbox's attach stream instead.
 *
 * Backstop: if no result arrives within timeout + grace, the agent itself is stuck or dead, and
 * the whole sandbox is killed. A command can therefore never outlive its timeout by more than the
 * grace, whatever happens inside the sandbox.
 *
 * The decisions that need no engine (request, frames, deadlines, the result when none came) are
 * functions of their inputs, declared in exec_internal.h and tested by tests/unit/test_exec.c. */
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clearing/cleanup_json.h"
#include "exec_internal.h"

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- pure parts (exec_internal.h) ---- */

int clr_exec_collect_frame(struct clr_exec_collect *c, const struct clr_frame *f)
{
    clr_exec_result *r = c->res;
    if (c->have_result)
        return clr_error_set(c->err, CLR_E_INTERNAL, EPROTO, "agent sent data after its result");
    switch (f->type) {
    case CLR_FRAME_STDOUT:
    case CLR_FRAME_STDERR: {
        clr_buffer *b = f->type == CLR_FRAME_STDOUT ? &r->out : &r->err;
        uint64_t cap = f->type == CLR_FRAME_STDOUT ? c->opts->limits.stdout_cap
                                                   : c->opts->limits.stderr_cap;
        if (c->opts->stream) {
            /* All of it goes to on_output, none is kept here: the caller keeps what it wants. */
            if (f->length && c->opts->on_output)
                c->opts->on_output(c->opts->ctx,
                                   f->type == CLR_FRAME_STDOUT ? CLR_STDOUT : CLR_STDERR,
                                   f->payload, f->length);
            return 0;
        }
        /* The agent enforces the cap; this is the host's own bound, in case it does not. */
        ssize_t kept = clr_buffer_append_capped(b, f->payload, f->length, cap);
        size_t len = kept > 0 ? (size_t)kept : 0;
        if (kept < 0)
            return clr_error_set(c->err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        if (len < f->length)
            *(f->type == CLR_FRAME_STDOUT ? &c->dropped_out : &c->dropped_err) = true;
        if (len && c->opts->on_output)
            c->opts->on_output(c->opts->ctx,
                               f->type == CLR_FRAME_STDOUT ? CLR_STDOUT : CLR_STDERR, f->payload,
                               len);
        return 0;
    }
    case CLR_FRAME_RESULT:
        if (clr_exec_result_decode(r, f->payload, f->length, c->err) < 0)
            return -1;
        c->have_result = true;
        return 0;
    default:
        return clr_error_set(c->err, CLR_E_INTERNAL, EPROTO,
                             "agent sent an unexpected frame of type %u", f->type);
    }
}

static int collect_frame_cb(void *p, const struct clr_frame *f)
{
    struct clr_exec_collect *c = p;
    c->framed = true;
    return clr_exec_collect_frame(c, f);
}

static int malformed(struct clr_exec_collect *c)
{
    return clr_error_set(c->err, CLR_E_INTERNAL, EPROTO, "malformed frame from the agent");
}

/* A byte of an error line of the engine's: printable ASCII, a tab, CR or LF. */
static bool text_byte(uint8_t b)
{
    return (b >= 0x20 && b < 0x7f) || b == '\t' || b == '\r' || b == '\n';
}

static bool head_is_line(const struct clr_exec_collect *c)
{
    return c->head_len >= 2 && c->head[c->head_len - 2] == '\r' &&
           c->head[c->head_len - 1] == '\n';
}

/* Stream 1 began with text: more of it. -1 with c->err when it cannot be the engine's line (a
 * byte that is not text, anything after the line's end, a line too long); -1 with c->err unset
 * once the line is whole (the stream is done); 0 while it may still become one. */
static int engine_text_more(struct clr_exec_collect *c, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (head_is_line(c) || c->head_len == sizeof(c->head) || !text_byte(data[i]))
            return malformed(c);
        c->head[c->head_len++] = data[i];
    }
    c->engine_line = head_is_line(c);
    return c->engine_line ? -1 : 0;
}

/* The frame reader refused stream 1 before its first whole frame: when every byte of it so far is
 * in head, it may be the engine's error line rather than the agent's. */
static int engine_text_start(struct clr_exec_collect *c)
{
    if (c->framed || c->stream1_bytes > sizeof(c->head))
        return malformed(c);
    c->engine_text = true;
    size_t n = c->head_len;
    c->head_len = 0;
    return engine_text_more(c, c->head, n); /* byte i is read before it is written back */
}

int clr_exec_collect_end(struct clr_exec_collect *c)
{
    if (c->engine_line || c->framed || c->have_result)
        return 0;
    if (c->engine_text)
        return malformed(c); /* text that never became a whole line */
    /* A line shorter than a frame header never made the reader fail: it is the engine's only
     * when it is all text and whole; else the stream just ended (as before: no verdict here). */
    if (c->stream1_bytes == 0 || c->stream1_bytes > c->head_len)
        return 0;
    for (size_t i = 0; i < c->head_len; i++) {
        if (!text_byte(c->head[i]))
            return 0;
    }
    c->engine_line = head_is_line(c);
    return 0;
}

int clr_exec_collect_stream(struct clr_exec_collect *c, int stream, const uint8_t *data,
                            size_t len)
{
    if (stream == 1) {
        if (c->engine_text)
            return engine_text_more(c, data, len);
        if (!c->framed && c->head_len < sizeof(c->head)) {
            size_t n = sizeof(c->head) - c->head_len < len ? sizeof(c->head) - c->head_len : len;
            memcpy(c->head + c->head_len, data, n);
            c->head_len += n;
        }
        c->stream1_bytes += len;
        int rc = clr_frame_reader_feed(&c->frames, data, len, collect_frame_cb, c);
        if (rc == -1 && c->err->code == CLR_E_NONE)
            return engine_text_start(c);
        return rc ? -1 : 0;
    }
    /* The agent's own diagnostics: keep the start for the error message. */
    size_t room = sizeof(c->agent_log) - 1 - c->agent_log_len;
    size_t n = len < room ? len : room;
    memcpy(c->agent_log + c->agent_log_len, data, n);
    c->agent_log_len += n;
    c->agent_log[c->agent_log_len] = '\0';
    return 0;
}

static int collect_stream_cb(void *p, int stream, const uint8_t *data, size_t len)
{
    return clr_exec_collect_stream(p, stream, data, len);
}

int clr_exec_check_options(const clr_exec_options *opts, clr_error *err)
{
    if (!opts->shell && (!opts->argv || !opts->argv[0]))
        return clr_error_set(err, CLR_E_INVALID, 0, "no command given");
    if (opts->shell && opts->argv)
        return clr_error_set(err, CLR_E_INVALID, 0, "give either argv or a shell string, not both");
    if (opts->stream && !opts->background)
        return clr_error_set(err, CLR_E_INVALID, 0, "only a background command's output is a stream");
    clr_exec_limits lim = opts->limits;
    if (opts->background)
        lim.timeout_ms = 1; /* no timeout at all: validate the rest */
    if (clr_exec_limits_validate(&lim, err) < 0)
        return -1;
    if (opts->cwd && opts->cwd[0] != '/')
        return clr_error_set(err, CLR_E_INVALID, 0, "working directory '%s' must be absolute",
                             opts->cwd);
    return 0;
}

int clr_exec_build_request(struct clr_tlv_builder *b, const clr_sandbox_info *info,
                           const char *const *sandbox_env, const clr_exec_options *o,
                           clr_error *err)
{
    clr_tlv_init(b);
    if (o->shell) {
        clr_tlv_put_str(b, CLR_REQ_ARG, "/bin/sh");
        clr_tlv_put_str(b, CLR_REQ_ARG, "-c");
        clr_tlv_put_str(b, CLR_REQ_ARG, o->shell);
    } else {
        for (const char *const *a = o->argv; *a; a++)
            clr_tlv_put_str(b, CLR_REQ_ARG, *a);
    }
    for (const char *const *e = sandbox_env; e && *e; e++)
        clr_tlv_put_str(b, CLR_REQ_ENV, *e);
    for (const char *const *e = o->env; e && *e; e++) {
        if (!strchr(*e, '=') || **e == '=')
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "environment entry '%s' is not KEY=VALUE", *e);
        clr_tlv_put_str(b, CLR_REQ_ENV, *e);
    }
    clr_tlv_put_str(b, CLR_REQ_CWD, o->cwd ? o->cwd : "/workspace");
    clr_tlv_put_u64(b, CLR_REQ_TIMEOUT_MS, o->background ? 0 : o->limits.timeout_ms);
    clr_tlv_put_u64(b, CLR_REQ_STDOUT_CAP, o->limits.stdout_cap);
    clr_tlv_put_u64(b, CLR_REQ_STDERR_CAP, o->limits.stderr_cap);
    clr_tlv_put_u64(b, CLR_REQ_UID, CLR_SANDBOX_UID);
    clr_tlv_put_u64(b, CLR_REQ_GID, CLR_SANDBOX_GID);
    clr_tlv_put_u64(b, CLR_REQ_NPROC, info->limits.pids);
    clr_tlv_put_u64(b, CLR_REQ_MEMORY, clr_exec_memory_cap(info->limits.memory_bytes));
    clr_tlv_put_u64(b, CLR_REQ_NOFILE, info->limits.nofile);
    clr_tlv_put_u64(b, CLR_REQ_FSIZE, info->limits.fsize_bytes);
    clr_tlv_put_u64(b, CLR_REQ_MEMORY_SOURCE,
                    strcmp(info->runtime, "runsc") == 0 ? CLR_MEMORY_MEMINFO : CLR_MEMORY_TREE_RSS);
    if (o->stream)
        clr_tlv_put_u64(b, CLR_REQ_STREAM, 1);
    if (b->overflow)
        return clr_error_set(err, CLR_E_LIMIT, E2BIG,
                             "command, environment and working directory exceed %d bytes",
                             CLR_PROTO_MAX_PAYLOAD);
    return 0;
}

uint64_t clr_exec_deadline(const clr_exec_options *opts, uint64_t now)
{
    if (opts->background)
        return CLR_EXEC_FOREVER;
    return now + opts->limits.timeout_ms + opts->grace_ms;
}

uint64_t clr_exec_cancel_deadline(uint64_t deadline, uint64_t now, uint32_t grace_ms)
{
    return deadline > now + grace_ms ? now + grace_ms : deadline;
}

uint64_t clr_exec_wait_slice(uint64_t deadline, uint64_t now)
{
    if (now >= deadline)
        return 0;
    return deadline - now < 1000 ? deadline - now : 1000;
}

void clr_exec_result_cut(clr_exec_result *r, const clr_exec_limits *limits, uint64_t started_ms,
                         uint64_t cut_ms)
{
    /* The agent enforces the caps, so at a cap there may have been more than reached us. */
    r->stdout_bytes = r->out.len;
    r->stderr_bytes = r->err.len;
    r->stdout_truncated = r->out.len && r->out.len >= limits->stdout_cap;
    r->stderr_truncated = r->err.len && r->err.len >= limits->stderr_cap;
    r->wall_us = (cut_ms - started_ms) * 1000;
}

void clr_exec_result_backstop(clr_exec_result *r, bool killed, const char *kill_error)
{
    r->status = CLR_EXEC_TIMED_OUT;
    r->sandbox_killed = killed;
    if (killed)
        snprintf(r->message, sizeof(r->message),
                 "the agent did not answer within the timeout and grace period; the sandbox "
                 "was killed");
    else
        snprintf(r->message, sizeof(r->message),
                 "the agent did not answer within the timeout and grace period; killing the "
                 "sandbox failed: %.300s",
                 kill_error);
}

void clr_exec_result_engine(clr_exec_result *r, const uint8_t *text, size_t len)
{
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    r->status = CLR_EXEC_START_FAILED;
    r->sandbox_killed = false;
    snprintf(r->message, sizeof(r->message),
             "the engine could not start the command's agent in the sandbox: %.*s",
             (int)(len < 300 ? len : 300), (const char *)text);
}

void clr_exec_result_protocol(clr_exec_result *r, const char *what, bool killed,
                              const char *kill_error)
{
    r->status = CLR_EXEC_SANDBOX_FAILED;
    r->sandbox_killed = killed;
    if (killed)
        snprintf(r->message, sizeof(r->message),
                 "protocol error from the sandbox's agent (%.300s); the sandbox was killed", what);
    else
        snprintf(r->message, sizeof(r->message),
                 "protocol error from the sandbox's agent (%.200s); killing the sandbox "
                 "failed: %.200s",
                 what, kill_error);
}

int clr_exec_diagnose_step(clr_exec_result *r, const struct clr_exec_seen *seen, uint64_t now,
                           uint64_t stop_by, uint64_t *oom_by)
{
    bool ok = seen->answer == CLR_EXEC_SEEN_OK;
    bool oom = ok && seen->oom_killed, stopped = ok && seen->stopped;
    r->status = CLR_EXEC_SANDBOX_FAILED;
    if (oom) {
        r->status = CLR_EXEC_OOM;
        r->sandbox_killed = true;
        snprintf(r->message, sizeof(r->message),
                 "the sandbox ran out of memory and was killed by the kernel");
        return 1;
    }
    if (seen->answer == CLR_EXEC_SEEN_GONE) {
        snprintf(r->message, sizeof(r->message), "the sandbox was removed while the command ran");
        return 1;
    }
    if (stopped && !*oom_by)
        *oom_by = now + CLR_EXEC_DIAGNOSE_OOM_MS;
    if (stopped && now >= *oom_by) {
        /* Its runtime (runsc) died under it, killed or crashed: the daemon records the sandbox
         * as lost, reason "runtime died". */
        snprintf(r->message, sizeof(r->message),
                 "the sandbox's runtime died while the command ran (its container stopped with "
                 "exit code %lld)",
                 seen->exit_code);
        return 1;
    }
    if (!stopped && (!ok || now >= stop_by)) {
        snprintf(r->message, sizeof(r->message), "the agent ended without a result");
        return 1;
    }
    return 0;
}

/* ---- the engine's side ---- */

static int send_frame(clr_engine_stream *s, uint8_t type, const void *data, size_t len,
                      clr_error *err)
{
    /* One write for header and payload: the stream's writes are each atomic, and two threads
     * may send on one exec stream (stdin beside a signal or a KILL); two writes could
     * interleave their frames, which the agent rejects as malformed. */
    if (len > CLR_PROTO_MAX_PAYLOAD)
        return clr_error_set(err, CLR_E_INTERNAL, EMSGSIZE, "frame payload too large");
    _cleanup_free_ uint8_t *buf = malloc(CLR_PROTO_HEADER_SIZE + len);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_frame_header(buf, 1, type, (uint32_t)len);
    if (len)
        memcpy(buf + CLR_PROTO_HEADER_SIZE, data, len);
    return clr_engine_stream_write(s, buf, CLR_PROTO_HEADER_SIZE + len, err);
}

/* Kills the whole sandbox: true only when the engine accepted the kill. A sandbox the engine
 * did not kill may still run whatever its agent (or a command posing as it) left behind, so the
 * record must never claim it was killed when it was not; *kerr says why not. */
static bool kill_sandbox(clr_engine *eng, const clr_sandbox_info *info, clr_error *kerr)
{
    if (clr_engine_container_kill(eng, info->container_id, "KILL", kerr) == 0)
        return true;
    clr_log(CLR_LOG_ERROR, "exec.backstop_kill_failed", "id", info->id, "error", kerr->message,
            NULL);
    return false;
}

/* Called when no result came: tells apart an OOM-killed sandbox, a dead one and a stuck agent.
 * The engine's account trails the kernel's: the agent's stream can end while the container
 * still shows as running, and dockerd marks OOMKilled from containerd's OOM event, which may
 * come after the exit event. So the state is read until the container has stopped (at most
 * CLR_EXEC_DIAGNOSE_STOP_MS), and a stop without the OOM mark is read again for
 * CLR_EXEC_DIAGNOSE_OOM_MS before it counts as a plain stop: one read misnamed a sandbox the
 * memory limit killed as sandbox_failed, 2 runs in 20 under load. Only a failed command waits. */
static void diagnose(clr_engine *eng, const clr_sandbox *sb, clr_exec_result *r, bool timed_out)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    clr_error lerr = CLR_ERROR_INIT;
    if (timed_out) {
        /* The agent did not answer within timeout + grace: kill the sandbox, it cannot be
         * trusted to have contained the command. */
        bool killed = kill_sandbox(eng, info, &lerr);
        clr_exec_result_backstop(r, killed, lerr.message);
        clr_log(CLR_LOG_WARN, "exec.backstop", "id", info->id, NULL);
        return;
    }
    uint64_t stop_by = mono_ms() + CLR_EXEC_DIAGNOSE_STOP_MS, oom_by = 0;
    for (;;) {
        _cleanup_json_ json_t *j = NULL;
        lerr = (clr_error)CLR_ERROR_INIT;
        struct clr_exec_seen seen = {.answer = CLR_EXEC_SEEN_OK};
        if (clr_engine_container_inspect(eng, info->container_id, &j, &lerr) < 0)
            seen.answer = lerr.code == CLR_E_NOT_FOUND ? CLR_EXEC_SEEN_GONE
                                                       : CLR_EXEC_SEEN_NO_ANSWER;
        json_t *state = json_object_get(j, "State");
        seen.oom_killed = json_is_true(json_object_get(state, "OOMKilled"));
        seen.stopped = !json_is_true(json_object_get(state, "Running"));
        seen.exit_code = json_integer_value(json_object_get(state, "ExitCode"));
        if (clr_exec_diagnose_step(r, &seen, mono_ms(), stop_by, &oom_by))
            return;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* false only when the engine positively says the container is not running. */
static bool sandbox_running(clr_engine *eng, const char *container_id)
{
    clr_error lerr = CLR_ERROR_INIT;
    _cleanup_json_ json_t *j = NULL;
    if (clr_engine_container_inspect(eng, container_id, &j, &lerr) < 0)
        return lerr.code != CLR_E_NOT_FOUND;
    return json_is_true(json_object_get(json_object_get(j, "State"), "Running"));
}

CLR_DEFINE_CLEANUP(clr_exec *, clr_exec_free)
#define _cleanup_exec_ __attribute__((cleanup(clr_exec_freep)))

struct clr_exec {
    clr_engine *eng;
    const clr_sandbox *sb;
    clr_exec_options opts; /* argv/env pointers are only used during start */
    clr_engine_stream *stream; /* a docker exec of its own, or: */
    clr_channel *chan;         /* the live channel (a reference), with */
    struct clr_channel_slot *slot;
    uint32_t chan_id;
    bool stdin_closed;
    atomic_bool kill_requested;
    uint64_t started_ms; /* when the request was made: a cut result's wall time runs from here */
};

static int exec_send(clr_exec *h, uint8_t type, const void *data, size_t len, clr_error *err)
{
    if (h->chan)
        return clr_channel_send(h->chan, h->chan_id, type, data, len, err);
    return send_frame(h->stream, type, data, len, err);
}

uint32_t clr_exec_channel_id(const clr_exec *h)
{
    return h->chan_id;
}

/* A handle; argv/env/shell/cwd are not kept (they are in the request already). */
static clr_exec *exec_new(clr_engine *eng, const clr_sandbox *sb, const clr_exec_options *opts)
{
    clr_exec *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->eng = eng;
    h->sb = sb;
    h->opts = *opts;
    h->opts.argv = NULL;
    h->opts.env = NULL;
    h->opts.shell = NULL;
    h->opts.cwd = NULL;
    h->started_ms = mono_ms();
    return h;
}

/* Sends the request, the stdin bytes and (unless kept open) end-of-file. */
static int exec_send_request(clr_exec *h, const clr_exec_options *opts,
                             const struct clr_tlv_builder *req, clr_error *err)
{
    int rc = exec_send(h, CLR_FRAME_EXEC, req->buf, req->len, err);
    if (rc == 0 && opts->stdin_data && opts->stdin_len)
        rc = clr_exec_write_stdin(h, opts->stdin_data, opts->stdin_len, err);
    if (rc == 0 && !opts->keep_stdin_open)
        rc = clr_exec_close_stdin(h, err);
    if (rc < 0)
        return clr_error_prefix(err, "sending the command to sandbox %s",
                                clr_sandbox_get_info(h->sb)->id);
    h->opts.stdin_data = NULL;
    return 0;
}

/* Over the live channel: no engine round trip at all, one frame on the open stream. req NULL:
 * the command runs already (clr_exec_adopt): its slot claims its id and nothing is sent. */
static int start_on_channel(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                            const clr_exec_options *opts, const struct clr_tlv_builder *req,
                            clr_error *err)
{
    _cleanup_exec_ clr_exec *h = exec_new(eng, sb, opts);
    if (!h)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    h->slot = req ? clr_channel_slot_new(opts->channel, opts->channel_id, err)
                  : clr_channel_slot_claim(opts->channel, opts->channel_id, err);
    if (!h->slot)
        return -1;
    h->chan = opts->channel;
    h->chan_id = clr_channel_slot_id(h->slot);
    /* Queued output beyond the caps could never be kept: the queue holds no more than they do
     * (plus a frame's worth; each frame counts 32 bytes beside its payload, so output in frames
     * of a few bytes can be dropped short of the caps when this side falls far behind),
     * whatever the agent sends and however late this side reads. */
    uint64_t oc = opts->limits.stdout_cap, ec = opts->limits.stderr_cap;
    if (opts->stream) {
        /* No caps: a reader more than this far behind loses the newest (or more than its
         * caps, where a caller gives larger ones to say how far behind it may fall). */
        oc = oc > CLR_EXEC_STREAM_QUEUE / 2 ? oc : CLR_EXEC_STREAM_QUEUE / 2;
        ec = ec > CLR_EXEC_STREAM_QUEUE / 2 ? ec : CLR_EXEC_STREAM_QUEUE / 2;
    }
    clr_channel_slot_bound(h->chan, h->slot,
                           oc > UINT32_MAX || ec > UINT32_MAX ? 0 /* not a cap: no bound */
                                                              : oc + ec + CLR_PROTO_MAX_PAYLOAD);
    if (req && exec_send_request(h, opts, req, err) < 0)
        return -1;
    if (!req) {
        h->opts.stdin_data = NULL;
        h->stdin_closed = !opts->keep_stdin_open;
    }
    *out = steal_pointer(&h);
    return 0;
}

int clr_exec_adopt(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                   const clr_exec_options *opts, clr_error *err)
{
    if (!opts->channel || !opts->channel_id)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "a command is adopted on a live channel, by its id there");
    return start_on_channel(out, eng, sb, opts, NULL, err);
}

/* Starts through docker exec (readers) and snapshots' holds (the writer): see
 * clr_exec_engine_starts_hold. */
static pthread_rwlock_t engine_starts;
static pthread_once_t engine_starts_once = PTHREAD_ONCE_INIT;

static void engine_starts_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&engine_starts, &a);
    pthread_rwlockattr_destroy(&a);
}

void clr_exec_engine_starts_hold(bool hold)
{
    pthread_once(&engine_starts_once, engine_starts_init);
    if (hold)
        pthread_rwlock_wrlock(&engine_starts);
    else
        pthread_rwlock_unlock(&engine_starts);
}

/* Through a `docker exec` of its own: the engine starts the agent's exec mode, and its
 * hijacked stream carries the frames. *out: clr_exec_free(); 404 and 409 name the sandbox. */
static int start_engine_exec(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                             const clr_exec_options *opts, const struct clr_tlv_builder *req,
                             clr_error *err)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    _cleanup_exec_ clr_exec *h = exec_new(eng, sb, opts);
    if (!h)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    const char *const argv[] = {CLR_AGENT_TARGET, "exec", NULL};
    const clr_engine_exec_spec spec = {.argv = argv, .user = "0:0", .workdir = "/"};
    pthread_once(&engine_starts_once, engine_starts_init);
    pthread_rwlock_rdlock(&engine_starts);
    int rc = clr_engine_exec(&h->stream, eng, info->container_id, &spec, err);
    pthread_rwlock_unlock(&engine_starts);
    if (rc < 0) {
        if (err->code == CLR_E_NOT_FOUND)
            clr_error_set(err, CLR_E_NOT_FOUND, 0, "sandbox %s does not exist", info->id);
        else if (err->code == CLR_E_CONFLICT)
            clr_error_set(err, CLR_E_CONFLICT, 0, "sandbox %s is not running", info->id);
        return -1;
    }
    if (exec_send_request(h, opts, req, err) < 0)
        return -1;
    *out = steal_pointer(&h);
    return 0;
}

int clr_exec_start(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                   const clr_exec_options *opts, clr_error *err)
{
    if (clr_exec_check_options(opts, err) < 0)
        return -1;
    _cleanup_free_ struct clr_tlv_builder *req = malloc(sizeof(*req));
    if (!req)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (clr_exec_build_request(req, clr_sandbox_get_info(sb), clr_sandbox_env(sb), opts, err) < 0)
        return -1;
    if (opts->channel)
        return start_on_channel(out, eng, sb, opts, req, err);
    return start_engine_exec(out, eng, sb, opts, req, err);
}

int clr_exec_write_stdin(clr_exec *h, const void *data, size_t len, clr_error *err)
{
    if (h->stdin_closed)
        return clr_error_set(err, CLR_E_CONFLICT, EPIPE, "the command's stdin is closed");
    const uint8_t *in = data;
    while (len > 0) {
        size_t n = len < CLR_PROTO_MAX_PAYLOAD ? len : CLR_PROTO_MAX_PAYLOAD;
        if (exec_send(h, CLR_FRAME_STDIN, in, n, err) < 0)
            return -1;
        in += n;
        len -= n;
    }
    return 0;
}

int clr_exec_close_stdin(clr_exec *h, clr_error *err)
{
    if (h->stdin_closed)
        return 0;
    h->stdin_closed = true;
    return exec_send(h, CLR_FRAME_STDIN_EOF, NULL, 0, err);
}

int clr_exec_signal(clr_exec *h, int sig, clr_error *err)
{
    if (sig <= 0 || sig >= 65)
        return clr_error_set(err, CLR_E_INVALID, 0, "signal %d is not a signal number", sig);
    if (sig == 9) {
        /* SIGKILL means the whole tree, now. */
        atomic_store(&h->kill_requested, true);
        return exec_send(h, CLR_FRAME_KILL, NULL, 0, err);
    }
    uint8_t v[8];
    clr_be64_write(v, (uint64_t)sig);
    return exec_send(h, CLR_FRAME_SIGNAL, v, sizeof(v), err);
}

/* Where the agent's frames come from: the exec's own stream (bytes through the engine's
 * demultiplexer), or the live channel (whole frames queued by its reader thread). */
struct source {
    clr_demux demux;
    uint8_t *buf; /* stream reads; NULL over a channel */
};

/* Waits up to wait_ms for what the agent sends and hands it to clr_exec_collect_frame: 1 when
 * something came, -2 when nothing did, 0 when the stream or channel ended or broke (*failed and
 * perr say how). */
static int receive(clr_exec *h, struct clr_exec_collect *c, struct source *src, int wait_ms,
                   int *failed, clr_error *perr)
{
    if (h->chan) {
        uint8_t type = 0, *payload = NULL;
        uint32_t len = 0;
        bool protocol = false;
        int rc = clr_channel_slot_take(h->chan, h->slot, wait_ms, &type, &payload, &len,
                                       &protocol);
        if (rc == -2)
            return -2;
        if (rc == 0) {
            *failed = 1;
            if (protocol)
                clr_error_set(perr, CLR_E_INTERNAL, EPROTO, "malformed frame from the agent");
            return 0;
        }
        struct clr_frame f = {.channel = h->chan_id, .type = type, .payload = payload,
                              .length = len};
        int frc = clr_exec_collect_frame(c, &f);
        clr_channel_frame_free(payload);
        if (frc < 0) {
            *failed = 1;
            return 0;
        }
        return 1;
    }
    if (!src->buf)
        return 0;
    ssize_t n = clr_engine_stream_read(h->stream, src->buf, 65536, wait_ms, perr);
    if (n == -2)
        return -2;
    if (n <= 0) {
        *failed = n < 0;
        return 0;
    }
    if (clr_demux_feed(&src->demux, src->buf, (size_t)n, collect_stream_cb, c) != 0) {
        *failed = 1;
        return 0;
    }
    return 1;
}

/* Output dropped on this side, past the caps (an agent that does not keep to them) or by the
 * channel before this side read it (clr_channel_slot_bound): the result does not hold it whole,
 * whatever the agent's result says. */
static void mark_dropped(clr_exec *h, const struct clr_exec_collect *c, clr_exec_result *result)
{
    bool out = c->dropped_out, err = c->dropped_err;
    if (h->chan) {
        bool qout = false, qerr = false;
        clr_channel_slot_dropped(h->chan, h->slot, &qout, &qerr);
        out |= qout;
        err |= qerr;
    }
    result->stdout_truncated |= out;
    result->stderr_truncated |= err;
}

/* Reads until the result, the end of the stream or channel, the sandbox's death or the
 * deadline: true when the deadline (the backstop) ended it. */
static bool wait_loop(clr_exec *h, struct clr_exec_collect *c, struct source *src, int *failed,
                      clr_error *perr)
{
    const clr_exec_options *opts = &h->opts;
    uint64_t deadline = clr_exec_deadline(opts, mono_ms());
    bool kill_sent = false;
    uint64_t last_check = mono_ms();
    while (!c->have_result) {
        uint64_t now = mono_ms();
        bool cancel = (opts->cancel && *opts->cancel) || atomic_load(&h->kill_requested);
        if (cancel && !kill_sent) {
            kill_sent = true;
            exec_send(h, CLR_FRAME_KILL, NULL, 0, perr);
            /* The agent answers at once; do not wait out the whole timeout for it. */
            deadline = clr_exec_cancel_deadline(deadline, now, opts->grace_ms);
        }
        if (now >= deadline)
            return true;
        /* Wake up now and then to look at the cancel flag. */
        int r = receive(h, c, src, (int)clr_exec_wait_slice(deadline, now), failed, perr);
        if (r == 0)
            break;
        /* A sandbox killed by the kernel (the cgroup's OOM killer) leaves the exec stream open:
         * after a quiet second, ask the engine whether the sandbox still runs. */
        if (r == -2 && mono_ms() - last_check >= 1000) {
            last_check = mono_ms();
            if (!sandbox_running(h->eng, clr_sandbox_get_info(h->sb)->container_id))
                break;
        }
    }
    return false;
}

/* The result when the agent's did not come: a protocol violation kills the sandbox (the agent,
 * or something pretending to be it, cannot be trusted); else diagnose() says what happened. */
static void result_without_agent(clr_exec *h, const struct clr_exec_collect *c, int failed,
                                 bool timed_out, const clr_error *perr)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(h->sb);
    clr_exec_result *result = c->res;
    if (c->engine_line) {
        /* Not the sandbox's fault: the engine's own error in place of the agent's frames. */
        clr_exec_result_engine(result, c->head, c->head_len);
        clr_log(CLR_LOG_WARN, "exec.engine_failed", "id", info->id, "error", result->message,
                NULL);
        return;
    }
    if (failed && perr->code != CLR_E_NONE && perr->code != CLR_E_UNAVAILABLE) {
        clr_log(CLR_LOG_ERROR, "exec.protocol_error", "id", info->id, "error", perr->message,
                NULL);
        clr_error kerr = CLR_ERROR_INIT;
        bool killed = kill_sandbox(h->eng, info, &kerr);
        clr_exec_result_protocol(result, perr->message, killed, kerr.message);
        return;
    }
    diagnose(h->eng, h->sb, result, timed_out);
    if (c->agent_log_len && !timed_out) {
        size_t l = strlen(result->message);
        snprintf(result->message + l, sizeof(result->message) - l, " (agent: %.200s)",
                 c->agent_log);
    }
}

int clr_exec_wait(clr_exec *h, clr_exec_result *result, clr_error *err)
{
    memset(result, 0, sizeof(*result));
    const clr_exec_options *opts = &h->opts;
    /* Errors of the stream phase are kept apart: most of them become a result, not a failure. */
    clr_error perr = CLR_ERROR_INIT;
    struct clr_exec_collect c = {.res = result, .opts = opts, .err = &perr};
    _cleanup_free_ uint8_t *frame_buf = malloc(CLR_PROTO_MAX_PAYLOAD);
    if (!frame_buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    c.frame_buf = frame_buf;
    clr_frame_reader_init(&c.frames, c.frame_buf);
    _cleanup_free_ uint8_t *stream_buf = h->chan ? NULL : malloc(65536);
    struct source src = {.buf = stream_buf};
    clr_demux_init(&src.demux);
    int failed = 0;
    bool timed_out = wait_loop(h, &c, &src, &failed, &perr);
    if (!c.have_result && !timed_out && perr.code == CLR_E_NONE && clr_exec_collect_end(&c) < 0)
        failed = 1;
    uint64_t cut_ms = mono_ms();
    if (c.have_result) {
        mark_dropped(h, &c, result);
        if (h->chan)
            clr_channel_ack(h->chan, h->chan_id);
        if (c.agent_log_len)
            clr_log(CLR_LOG_DEBUG, "agent.stderr", "id", clr_sandbox_get_info(h->sb)->id,
                    "text", c.agent_log, NULL);
        return 0;
    }
    /* Cut before the agent's result (the sandbox died, the backstop fired, the agent broke the
     * protocol): the record must still add up, and its wall time runs until the cut, not
     * through the diagnosis. */
    clr_exec_result_cut(result, &opts->limits, h->started_ms, cut_ms);
    mark_dropped(h, &c, result);
    result_without_agent(h, &c, failed, timed_out, &perr);
    return 0;
}

void clr_exec_free(clr_exec *h)
{
    if (!h)
        return;
    if (h->slot)
        clr_channel_slot_free(h->chan, h->slot);
    clr_engine_stream_free(h->stream);
    free(h);
}

int clr_exec_run(clr_exec_result *result, clr_engine *eng, const clr_sandbox *sb,
                 const clr_exec_options *opts, clr_error *err)
{
    memset(result, 0, sizeof(*result));
    if (opts->background || opts->keep_stdin_open)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "background and keep_stdin_open need clr_exec_start");
    clr_exec *h = NULL;
    if (clr_exec_start(&h, eng, sb, opts, err) < 0)
        return -1;
    int rc = clr_exec_wait(h, result, err);
    clr_exec_free(h);
    return rc;
}
