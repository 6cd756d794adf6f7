/* Exec's decisions that need no engine (lib/exec.c), exposed for tests/unit/test_exec.c: the
 * EXEC request built from the options, the agent's frames collected into a result, the backstop
 * arithmetic, and the result written when none came (a cut stream, a dead sandbox, a stuck
 * agent). exec.c does the I/O around them; nothing here blocks or calls the engine. */
#ifndef CLR_EXEC_INTERNAL_H
#define CLR_EXEC_INTERNAL_H

#include "internal.h"
#include "proto.h"

#define CLR_EXEC_AGENT_LOG_MAX 4096
/* How long a sandbox whose agent ended may still show as running. */
#define CLR_EXEC_DIAGNOSE_STOP_MS 10000
/* How long after its stop the engine may still mark it OOM-killed. */
#define CLR_EXEC_DIAGNOSE_OOM_MS 1000
/* A stream's frames queued on the host for its reader (clr_exec_options.stream): past this,
 * output is dropped and the result marked truncated. */
#define CLR_EXEC_STREAM_QUEUE (8u << 20)
/* No deadline (a background command): far enough that now + anything does not wrap. */
#define CLR_EXEC_FOREVER (UINT64_MAX / 2)
/* The longest error line of the engine's own on an exec stream that is told apart from a broken
 * agent (see clr_exec_collect_stream). */
#define CLR_EXEC_ENGINE_TEXT_MAX 4096

/* Checks the options a start needs (a command, not both argv and shell, the limits, an
 * absolute cwd): 0, or -1 with CLR_E_INVALID. */
int clr_exec_check_options(const clr_exec_options *opts, clr_error *err);

/* The EXEC frame's payload for opts in the sandbox *info whose environment is sandbox_env
 * (NULL-terminated, may be NULL): its argv (or /bin/sh -c shell), the sandbox's environment
 * and then the command's, cwd, the limits, the sandbox user, and how memory is measured
 * (runsc: /proc/meminfo). b is initialised here. 0, or -1 with err (CLR_E_INVALID: an
 * environment entry; CLR_E_LIMIT: it does not fit in one frame). */
int clr_exec_build_request(struct clr_tlv_builder *b, const clr_sandbox_info *info,
                           const char *const *sandbox_env, const clr_exec_options *opts,
                           clr_error *err);

/* What the agent's frames of one command add up to, as they come. */
struct clr_exec_collect {
    clr_exec_result *res;
    const clr_exec_options *opts; /* its caps and on_output */
    struct clr_frame_reader frames;
    uint8_t *frame_buf; /* CLR_PROTO_MAX_PAYLOAD bytes, owned by the caller */
    bool have_result;
    clr_error *err;
    char agent_log[CLR_EXEC_AGENT_LOG_MAX]; /* the start of the agent's own stderr */
    size_t agent_log_len;
    /* Stream 1 before its first whole frame: the engine's own error line, or a broken agent. */
    bool framed;      /* a whole frame came on stream 1 */
    bool engine_text; /* stream 1 began with text, not a frame header */
    bool engine_line; /* ... and that text is one whole line: the engine's error (in head) */
    uint8_t head[CLR_EXEC_ENGINE_TEXT_MAX]; /* the first bytes of stream 1, until framed */
    size_t head_len;
    uint64_t stream1_bytes; /* of stream 1 so far */
    bool dropped_out, dropped_err; /* the host's own bound dropped output: the result says so */
};

/* One frame of the command: output (kept within the caps, passed to on_output), or its result.
 * 0, or -1 with c->err: a frame after the result, a frame of another type, a malformed result,
 * out of memory. */
int clr_exec_collect_frame(struct clr_exec_collect *c, const struct clr_frame *f);

/* Bytes of the engine's exec stream: stream 1 carries agent frames, stream 2 the agent's own
 * diagnostics (the start is kept in agent_log). 0, or -1 with c->err.
 * The engine writes on stream 1 too, once: when it could not start the agent (under load runsc's
 * `exec` fails now and then), Docker sends its error as stdout text, "OCI runtime exec failed:
 * ...\r\n", and ends the stream. Such text cannot be the agent's (a frame's first byte, the
 * length's top byte, is 0): stream 1 that begins with printable ASCII and is one CRLF-ended line
 * of at most CLR_EXEC_ENGINE_TEXT_MAX bytes is the engine's failure (c->engine_line: -1 with
 * c->err unset, the stream is done), not a protocol error; anything else that is not a frame
 * is one. */
int clr_exec_collect_stream(struct clr_exec_collect *c, int stream, const uint8_t *data,
                            size_t len);

/* When the backstop fires for a command started at now: timeout + grace, never for a
 * background one (CLR_EXEC_FOREVER). */
uint64_t clr_exec_deadline(const clr_exec_options *opts, uint64_t now);
/* After a KILL is sent at now: the agent answers at once, so the deadline comes down to
 * now + grace (never up). */
uint64_t clr_exec_cancel_deadline(uint64_t deadline, uint64_t now, uint32_t grace_ms);
/* How long one wait may block: until the deadline, and at most a second, so the cancel flag is
 * looked at now and then. */
uint64_t clr_exec_wait_slice(uint64_t deadline, uint64_t now);

/* A result cut before the agent's (the stream ended, the backstop fired): its counts are the
 * output that reached us, truncated when a cap was reached, and its wall time runs from
 * started_ms to cut_ms. */
void clr_exec_result_cut(clr_exec_result *r, const clr_exec_limits *limits,
                         uint64_t started_ms, uint64_t cut_ms);

/* The engine could not start the agent (c->engine_line): START_FAILED with the engine's line
 * (text, len) as the reason; the sandbox is not blamed and not killed. */
void clr_exec_result_engine(clr_exec_result *r, const uint8_t *text, size_t len);

/* The stream ended: a start of stream 1 that was text but not a whole line of the engine's is
 * the agent's protocol error after all (c->err set, -1); else 0. */
int clr_exec_collect_end(struct clr_exec_collect *c);

/* The backstop fired: TIMED_OUT, and whether the sandbox was killed (kill_error says why not). */
void clr_exec_result_backstop(clr_exec_result *r, bool killed, const char *kill_error);
/* The agent broke the protocol (what): SANDBOX_FAILED, and whether the sandbox was killed. */
void clr_exec_result_protocol(clr_exec_result *r, const char *what, bool killed,
                              const char *kill_error);

/* One look at the container of a command whose agent ended without a result. */
enum clr_exec_seen_answer {
    CLR_EXEC_SEEN_NO_ANSWER = 0, /* the engine could not be asked, or refused */
    CLR_EXEC_SEEN_OK,            /* the engine described the container */
    CLR_EXEC_SEEN_GONE,          /* the engine has no such container */
};

struct clr_exec_seen {
    enum clr_exec_seen_answer answer; /* of the engine's inspect of the container */
    bool oom_killed;
    bool stopped;
    long long exit_code;
};

/* Diagnosis: 1 when *seen at now decides the result (status and message set), 0 to look again
 * (the engine's account trails the kernel's). *oom_by is 0 before the first stopped look; stop_by
 * is when a container still running counts as a stuck agent. */
int clr_exec_diagnose_step(clr_exec_result *r, const struct clr_exec_seen *seen, uint64_t now,
                           uint64_t stop_by, uint64_t *oom_by);

#endif
