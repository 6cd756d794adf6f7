/* Running one command in a sandbox, with a typed result. */
#ifndef CLEARING_EXEC_H
#define CLEARING_EXEC_H

#include "common.h"
#include "engine.h"
#include "limits.h"
#include "sandbox.h"

typedef enum {
    CLR_EXEC_EXITED = 1,     /* exit_code is set */
    CLR_EXEC_SIGNALED,       /* signal is set */
    CLR_EXEC_TIMED_OUT,      /* the whole process tree was killed at the timeout */
    CLR_EXEC_OOM,            /* the command's memory went past the sandbox's limit */
    CLR_EXEC_START_FAILED,   /* the command could not be started (message says why) */
    CLR_EXEC_SANDBOX_FAILED, /* the sandbox died or its agent stopped answering */
} clr_exec_status;

typedef enum { CLR_STDOUT = 1, CLR_STDERR = 2 } clr_stream;

/* The live channel to a sandbox's agent (see clr_channel_open below). */
typedef struct clr_channel clr_channel;

typedef struct clr_exec_options {
    const char *const *argv; /* NULL-terminated; or: */
    const char *shell;       /* a shell string, run as /bin/sh -c */
    const char *const *env;  /* "KEY=VALUE", NULL-terminated; added to the sandbox's */
    const char *cwd;         /* NULL: /workspace */
    const void *stdin_data;  /* bytes for the command's stdin (then EOF); may be NULL */
    size_t stdin_len;
    clr_exec_limits limits;
    /* Called with output as it arrives (within the caps); may be NULL. */
    void (*on_output)(void *ctx, clr_stream stream, const uint8_t *data, size_t len);
    void *ctx;
    /* When this becomes non-zero (a signal handler may set it), the command's process tree is
     * killed and the result is SIGNALED. May be NULL. */
    const volatile int *cancel;
    /* No timeout: the command runs until it ends, is signalled, or its sandbox goes
     * (background processes). Only with clr_exec_start(). */
    bool background;
    /* Only with background: the output is a stream, without the caps. The agent sends all of
     * it and keeps only the newest for a replay (an older agent caps as asked); on_output gets
     * all that arrives and the result keeps none (its counts say how much there was). Over a
     * live channel, the caps (where above 4 MiB) bound only how far on_output may fall
     * behind before the newest output is dropped. */
    bool stream;
    /* Do not send end-of-file after stdin_data: more comes through clr_exec_write_stdin(). */
    bool keep_stdin_open;
    /* How long past the timeout the agent may take to answer before the sandbox is killed. */
    uint32_t grace_ms;
    /* Run over this live channel instead of a `docker exec` of its own; may be NULL. */
    clr_channel *channel;
    /* The command's id on the channel (not 0): the caller records it before the command starts,
     * to find a replayed result later. 0: a random one (clr_exec_channel_id()). */
    uint32_t channel_id;
} clr_exec_options;

#define CLR_EXEC_OPTIONS_INIT {.limits = CLR_EXEC_LIMITS_INIT, .grace_ms = 5000}

typedef struct clr_buffer {
    uint8_t *data;
    size_t len;
} clr_buffer;

typedef struct clr_exec_result {
    clr_exec_status status;
    int exit_code;            /* for EXITED */
    int signal;               /* for SIGNALED */
    clr_buffer out, err;      /* captured output, at most the caps */
    uint64_t stdout_bytes;    /* all the command wrote, kept or not */
    uint64_t stderr_bytes;
    bool stdout_truncated;
    bool stderr_truncated;
    uint64_t wall_us;
    uint64_t user_us;
    uint64_t sys_us;
    uint64_t peak_memory_bytes;
    uint64_t killed_processes; /* processes of the command killed by the agent */
    bool sandbox_killed;      /* the backstop killed the whole sandbox */
    char message[512];        /* why, for anything but a plain exit */
} clr_exec_result;

/* Runs a command and fills *result. Returns 0 when a result was obtained, whatever it says
 * (check result->status), and -1 with err when the command could not be run at all (unknown
 * sandbox, bad options, engine down). result->out/err are owned by the caller:
 * clr_exec_result_clear(). */
CLR_PUBLIC int clr_exec_run(clr_exec_result *result, clr_engine *eng, const clr_sandbox *sb,
                            const clr_exec_options *opts, clr_error *err);
CLR_PUBLIC void clr_exec_result_clear(clr_exec_result *result);

/* A command started and not yet waited for. One thread waits (clr_exec_wait); others may write
 * its stdin and signal it at the same time. The engine handle given to clr_exec_start() must not
 * be used by anyone else until clr_exec_wait() returns. */
typedef struct clr_exec clr_exec;

/* Starts the command and sends stdin_data (and end-of-file unless keep_stdin_open). argv, env,
 * shell and cwd are copied into the request; they need not outlive this call. *out is owned by
 * the caller: clr_exec_free(). */
CLR_PUBLIC int clr_exec_start(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                              const clr_exec_options *opts, clr_error *err);
/* Holds (true) or lets go (false) of every start through `docker exec` (a command without a
 * live channel): clr_exec_start() waits meanwhile, before it asks the engine. A snapshot holds
 * them around its checkpoint, so that each such exec either was live when it looked before it or
 * starts after it looked again (lib/service/snapshots.c). Writer-preferring: a stream of starts
 * never keeps a hold waiting. Not reentrant. */
CLR_PUBLIC void clr_exec_engine_starts_hold(bool hold);
/* Takes over a command that runs already on the live channel opts->channel as opts->channel_id
 * (one a fork or restore brought back from its snapshot, with the agent's memory): no request is
 * sent; the output the channel kept for it since it opened comes first, then what follows.
 * opts gives the caps, on_output, background and keep_stdin_open (argv, shell, env, cwd and
 * stdin_data are not used). As clr_exec_start otherwise; a command the agent does not run
 * never answers (check its CHANNELS list first). */
CLR_PUBLIC int clr_exec_adopt(clr_exec **out, clr_engine *eng, const clr_sandbox *sb,
                              const clr_exec_options *opts, clr_error *err);
CLR_PUBLIC int clr_exec_write_stdin(clr_exec *h, const void *data, size_t len, clr_error *err);
CLR_PUBLIC int clr_exec_close_stdin(clr_exec *h, clr_error *err);
/* Sends a signal to the command's process group; 9 (SIGKILL) kills its whole tree. */
CLR_PUBLIC int clr_exec_signal(clr_exec *h, int sig, clr_error *err);
/* Waits for the result, passing output to on_output as it comes; as clr_exec_run(). */
CLR_PUBLIC int clr_exec_wait(clr_exec *h, clr_exec_result *result, clr_error *err);
CLR_PUBLIC void clr_exec_free(clr_exec *h);
/* The command's channel id on a live channel (0 for a `docker exec`). */
CLR_PUBLIC uint32_t clr_exec_channel_id(const clr_exec *h);

/* ---- the live channel ----
 * One attach connection to the sandbox's agent (PID 1) carries many commands at once: an exec
 * is one frame on an open stream instead of a `docker exec` of its own. The agent keeps each
 * command's frames until its result is acknowledged, so a host that attaches again (after a
 * daemon restart) gets the results it missed through the hooks. */
typedef struct clr_channel_hooks {
    void *ctx;
    /* A result of a command nobody waits for (replayed after a re-attach). Return 0 once it is
     * stored: the agent then forgets it; -1: not stored (the agent keeps it for the next open);
     * 1: held, with the command's output, for the caller that takes the command over
     * (clr_exec_adopt), which acknowledges it. Runs on the channel's reader thread with the
     * channel locked: it must not call clr_channel_* functions. */
    int (*on_result)(void *ctx, clr_channel *ch, uint32_t id, const clr_exec_result *result);
    /* The ids of every command the agent knows (running, or finished and not acknowledged),
     * after the replay of an open. Same rules as on_result. */
    void (*on_channels)(void *ctx, clr_channel *ch, const uint32_t *ids, size_t n);
    /* An egress frame (CLR_FRAME_NET_*) of the agent's proxy, on the reader thread but without
     * the channel locked (clr_egress_on_frame). */
    void (*on_net)(void *ctx, clr_channel *ch, uint8_t type, uint32_t id, const uint8_t *payload,
                   uint32_t len);
} clr_channel_hooks;

/* Attaches to the sandbox and checks that its agent answers (3 s at most). The engine handle is
 * only used during the call. hooks may be NULL. *out: clr_channel_close(). */
CLR_PUBLIC int clr_channel_open(clr_channel **out, clr_engine *eng, const clr_sandbox *sb,
                                const clr_channel_hooks *hooks, clr_error *err);
/* Ends the connection (commands waiting on it see the sandbox fail) and drops the opener's
 * reference. Commands in flight keep theirs until they end. */
CLR_PUBLIC void clr_channel_close(clr_channel *ch);
CLR_PUBLIC void clr_channel_ref(clr_channel *ch);
CLR_PUBLIC void clr_channel_unref(clr_channel *ch);
/* false once the connection ended (the sandbox stopped, the engine restarted, or closed). */
CLR_PUBLIC bool clr_channel_alive(clr_channel *ch);

/* "exited", "signaled", "timed_out", "oom", "start_failed", "sandbox_failed". */
CLR_PUBLIC const char *clr_exec_status_name(clr_exec_status status);

/* The result as a JSON object (caller owns it). Output that is valid UTF-8 is a string with
 * "stdout_encoding":"utf-8"; anything else is base64 with "stdout_encoding":"base64". */
CLR_PUBLIC json_t *clr_exec_result_to_json(const clr_exec_result *result);

/* Decodes the agent's RESULT frame payload into result (output buffers untouched). Exposed for
 * tests and fuzzing. */
CLR_PUBLIC int clr_exec_result_decode(clr_exec_result *result, const uint8_t *payload, size_t len,
                                      clr_error *err);

#endif
