/* One command under supervision.
 *
 * The supervisor is root inside the sandbox and holds only CAP_SETUID, CAP_SETGID and CAP_KILL;
 * the command runs as the unprivileged sandbox user, so it can neither ptrace nor signal the
 * supervisor, nor read its memory or descriptors (the supervisor is also non-dumpable).
 *
 * Process-tree kill: the supervisor is a child subreaper, so every descendant of the command that
 * loses its parent (double fork, setsid daemons) is re-parented to the supervisor rather than to
 * PID 1. The tree is therefore exactly the processes whose parent chain reaches the supervisor;
 * kill_tree() stops the tree first, then kills it: a process SIGKILLed frees its pid at once and
 * a fork bomb still running fills it again, while a stopped one holds its pid and forks nothing.
 * So each scan of /proc SIGSTOPs what is not stopped yet, until a scan finds nothing of the tree
 * running (or a bounded number of scans passed). That shrinks a bomb, it proves nothing (a
 * process of another command may SIGCONT one, a scan is not atomic): then every process each scan
 * finds is SIGKILLed, whatever its state (SIGKILL ends stopped processes too, cannot be ignored,
 * and ends a whole thread group whose leader is a zombie), and the scans go on until none is left.
 *
 * Flow control: frames for the host are queued and written when fd 1 is writable; while the queue
 * is full the command's pipes are not read, so a flood of output blocks the command, never the
 * supervisor, and the deadline always fires.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "clearing/cleanup.h"
#include "command.h"
#include "filter.h"
#include "output.h"
#include "procfs.h"
#include "request.h"
#include "supervise.h"
#include "util.h"
#include "coverage.h"

#define OUTQ_LIMIT (1024 * 1024)  /* bytes queued for the host before the pipes are paused */
#define STDIN_LIMIT (1024 * 1024) /* bytes queued for the command before fd 0 is paused */
#define MEM_SETTLE_MS 2000        /* a command waits this long at most for an earlier one's memory */
#define TICK_MS 25                /* memory sampling period */
#define FAST_TICK_MS 2            /* ... once memory in use passes half the limit */
#define DRAIN_MS 200              /* how long leftover writers may keep the pipes open */
#define CHANNEL 1

/* Build option `trace` (meson -Dtrace=true, never in production): the supervisor stamps each
 * step of a command with the wall clock, which gVisor keeps in step with the host's, and sends
 * the stamps in the result's message; the daemon of the same build adds its own and reports
 * them with the result (docs/PERFORMANCE.md, "Where an exec's time goes"). */
#ifdef CLR_TRACE
enum { TR_RX, TR_SPAWN, TR_SPAWNED, TR_EXITED, TR_TX, TR_N };
#define TRACE(s, step) ((s)->tr[step] = trace_now_us())
static uint64_t trace_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}
#else
#define TRACE(s, step) ((void)0)
#endif

struct sup {
    int in_fd, out_fd;
    struct agent_request req;
    bool have_req;
    bool host_eof;
    bool stdin_eof;
    struct bytes outq;
    struct bytes inq;
    int child_in; /* write end of the command's stdin, -1 when closed */
    struct stream out, err;
    pid_t child;
    bool child_done;
    int child_status;
    uint64_t start_ns, end_ns;
    uint64_t user_us, sys_us; /* of every process of the tree collected so far (wait4) */
#ifdef CLR_TRACE
    uint64_t tr[TR_N]; /* CLOCK_REALTIME, us: comparable with the host's clock */
#endif
    uint64_t peak_rss;
    uint64_t tree_rss; /* at the last /proc scan */
    uint64_t killed;
    int verdict; /* CLR_WIRE_*: set when the supervisor ends the command itself */
    /* SIGNAL frames read before the command was started (bit sig - 1): the host may send one
     * right after its EXEC, and both can arrive in one read; they are sent once it runs. */
    uint64_t early_signals;
    char message[256];
};

/* Appends to a queue; a supervisor without memory cannot supervise its command: it ends. */
static void bytes_append(struct bytes *b, const void *data, size_t len)
{
    if (bytes_add(b, data, len) < 0)
        agent_die_oom();
}

static void queue_frame(struct sup *s, uint8_t type, const void *payload, size_t len)
{
    if (bytes_add_frame(&s->outq, CHANNEL, type, payload, (uint32_t)len) < 0)
        agent_die_oom();
}

/* ---- the process tree ---- */

static uint64_t tv_us(struct timeval tv)
{
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

/* Collects one process of the tree: the command's status if it is the command, and its resource
 * use either way. wait4's figures per process, not RUSAGE_CHILDREN: a supervisor runs many
 * commands one after another, and the sum over the processes it collected during one command is
 * exactly that command's share (a process's figures include its own collected children). */
static pid_t collect(struct sup *s, int flags)
{
    int st;
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    pid_t p = wait4(-1, &st, flags | __WALL, &ru);
    if (p <= 0)
        return p;
    s->user_us += tv_us(ru.ru_utime);
    s->sys_us += tv_us(ru.ru_stime);
    uint64_t maxrss = (uint64_t)ru.ru_maxrss * 1024;
    if (maxrss > s->peak_rss)
        s->peak_rss = maxrss;
    if (p == s->child && !s->child_done) {
        s->child_done = true;
        s->child_status = st;
        s->end_ns = agent_now_ns();
        TRACE(s, TR_EXITED);
    }
    return p;
}

/* __WALL everywhere: a child cloned with no exit signal is invisible to a plain waitpid(-1). */
static void reap(struct sup *s)
{
    while (collect(s, WNOHANG) > 0)
        ;
}

#define KILL_ROUNDS 1000 /* scans of /proc at most */
#define STOP_ROUNDS 50   /* of them, at most this many stop before they kill regardless */

/* Whether a process in this state may still run the command's code: not stopped ('T', 't'), not
 * a zombie or dead ('Z', 'X') — a zombie leader whose other threads run is SIGKILLed all the same
 * below — and not in an uninterruptible sleep ('D': a vfork parent waits there for its child, and
 * takes the SIGSTOP sent to it when it leaves). */
static bool may_run(char state)
{
    return !agent_state_halted(state) && state != 'D';
}

/* Ends every descendant: stops the tree until a scan finds nothing in it running (at most
 * STOP_ROUNDS scans), then SIGKILLs every process each scan finds until none is left. */
static void kill_tree(struct sup *s)
{
    struct proc *procs = agent_tree_buffer();
    reap(s);
    if (agent_no_children())
        return;
    bool stopping = true;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        size_t n = agent_tree_scan(procs, AGENT_MAX_PROCS, NULL);
        if (n == 0)
            break;
        if (stopping) {
            size_t running = 0;
            for (size_t i = 0; i < n; i++) {
                if (agent_state_halted(procs[i].state))
                    continue;
                kill(procs[i].pid, SIGSTOP);
                running += may_run(procs[i].state);
            }
            stopping = running > 0 && round + 1 < STOP_ROUNDS;
        }
        if (!stopping) {
            for (size_t i = 0; i < n; i++) {
                if (kill(procs[i].pid, SIGKILL) == 0 && procs[i].state != 'Z')
                    s->killed++;
            }
            reap(s);
        }
        /* (a stop or a kill takes effect when its target next runs: let it) */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* Everything is dead; collect what is left so nothing remains a zombie. */
    while (collect(s, 0) > 0)
        ;
}

/* ---- starting the command ---- */

extern char **environ;

/* Closes each descriptor of a command's start still held and marks it closed (-1: handed on or
 * never made). */
static void close_fds(int (*fds)[CMD_NFDS])
{
    for (size_t i = 0; i < CMD_NFDS; i++) {
        if ((*fds)[i] >= 0)
            close(steal_fd(&(*fds)[i]));
    }
}

/* Starts the request's command: on success s->child and the pipes (child_in, out.fd, err.fd)
 * are set and owned by s; 0. -1 with the reason in s->message when it could not start; then no
 * descriptor of its start is left open (a supervisor runs many commands: the next one's would
 * carry it), and a child that could not exec is collected if it is gone already. */
static int start_command(struct sup *s)
{
    __attribute__((cleanup(close_fds))) int fds[CMD_NFDS] = {-1, -1, -1, -1, -1, -1, -1, -1};
    for (size_t i = 0; i < CMD_NFDS; i += 2) {
        if (pipe2(&fds[i], O_CLOEXEC) < 0) {
            snprintf(s->message, sizeof(s->message), "pipe: %s", strerror(errno));
            return -1;
        }
    }
    char **env = agent_command_env(environ, s->req.envp);
    s->start_ns = agent_now_ns();
    TRACE(s, TR_SPAWN);
    pid_t pid = agent_command_spawn(&s->req, env, fds);
    /* errno is the vfork's only when it failed: the child shares the parent's memory, errno
     * included, and its failing calls (each PATH entry execvpe tries) overwrite it. */
    int spawn_errno = errno;
    TRACE(s, TR_SPAWNED);
    if (env != s->req.envp)
        free(env);
    if (pid < 0) {
        snprintf(s->message, sizeof(s->message), "vfork: %s", strerror(spawn_errno));
        return -1;
    }
    s->child = pid;
    close(steal_fd(&fds[CMD_IN_R]));
    close(steal_fd(&fds[CMD_OUT_W]));
    close(steal_fd(&fds[CMD_ERR_W]));
    close(steal_fd(&fds[CMD_REP_W]));
    struct agent_start_failure f = {0, 0};
    ssize_t n;
    do
        n = read(fds[CMD_REP_R], &f, sizeof(f));
    while (n < 0 && errno == EINTR);
    close(steal_fd(&fds[CMD_REP_R]));
    if (n == (ssize_t)sizeof(f)) {
        if (f.step == AGENT_START_CWD)
            snprintf(s->message, sizeof(s->message),
                     "cannot start '%s': its working directory '%s': %s", s->req.argv[0],
                     s->req.cwd, strerror(f.error));
        else
            snprintf(s->message, sizeof(s->message), "cannot start '%s': %s%s",
                     s->req.argv[0], f.step == AGENT_START_SETUP ? "setting up its process: " : "",
                     strerror(f.error));
        close_fds(&fds);
        reap(s);
        return -1;
    }
    s->child_in = steal_fd(&fds[CMD_IN_W]);
    s->out.fd = steal_fd(&fds[CMD_OUT_R]);
    s->err.fd = steal_fd(&fds[CMD_ERR_R]);
    fcntl(s->child_in, F_SETFL, O_NONBLOCK);
    fcntl(s->out.fd, F_SETFL, O_NONBLOCK);
    fcntl(s->err.fd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* ---- I/O ---- */

/* The command leads its own session and process group: the signal goes to the group and to the
 * command itself (in case it left the group). Not once the command is collected: its pid may be
 * another process's by then. */
static void send_signal(struct sup *s, int sig)
{
    if (s->child > 0 && !s->child_done) {
        kill(-s->child, sig);
        kill(s->child, sig);
    }
}

/* Sends the signals that came before the command was started, in signal order. */
static void send_early_signals(struct sup *s)
{
    for (int sig = 1; sig <= 64; sig++) {
        if (s->early_signals & (1ull << (sig - 1)))
            send_signal(s, sig);
    }
    s->early_signals = 0;
}

static int on_host_frame(void *ctx, const struct clr_frame *f)
{
    struct sup *s = ctx;
    char err[200];
    /* Before its EXEC, nothing is for this command: a supervisor that runs one command after
     * another may still find the previous one's late STDIN, SIGNAL or KILL frames. */
    if (!s->have_req && f->type != CLR_FRAME_EXEC)
        return 0;
    switch (f->type) {
    case CLR_FRAME_EXEC:
        if (s->have_req) {
            snprintf(s->message, sizeof(s->message), "second EXEC frame on one channel");
            return -2;
        }
        if (agent_request_parse(&s->req, f->payload, f->length, err, sizeof(err)) < 0) {
            snprintf(s->message, sizeof(s->message), "bad request: %s", err);
            return -2;
        }
        s->have_req = true;
        TRACE(s, TR_RX);
        return 0;
    case CLR_FRAME_STDIN:
        if (s->stdin_eof)
            return 0;
        bytes_append(&s->inq, f->payload, f->length);
        return 0;
    case CLR_FRAME_STDIN_EOF:
        s->stdin_eof = true;
        return 0;
    case CLR_FRAME_SIGNAL: {
        uint64_t sig = 0;
        if (clr_tlv_u64(f->payload, f->length, &sig) < 0 || sig == 0 || sig >= 65) {
            snprintf(s->message, sizeof(s->message), "bad SIGNAL frame");
            return -2;
        }
        if (s->child == 0)
            s->early_signals |= 1ull << (sig - 1);
        else
            send_signal(s, (int)sig);
        return 0;
    }
    case CLR_FRAME_KILL:
        s->verdict = CLR_WIRE_SIGNALED;
        snprintf(s->message, sizeof(s->message), "killed on request");
        return 0;
    default:
        snprintf(s->message, sizeof(s->message), "unexpected frame type %u from host", f->type);
        return -2;
    }
}

static int read_host(struct sup *s, struct clr_frame_reader *rd)
{
    uint8_t buf[16384];
    ssize_t n = read(s->in_fd, buf, sizeof(buf));
    if (n < 0)
        return (errno == EINTR || errno == EAGAIN) ? 0 : -1;
    if (n == 0) {
        s->host_eof = true;
        return 0;
    }
    int rc = clr_frame_reader_feed(rd, buf, (size_t)n, on_host_frame, s);
    if (rc == -1)
        snprintf(s->message, sizeof(s->message), "malformed frame from host");
    return rc == 0 ? 0 : -1;
}

static void read_stream(struct sup *s, struct stream *st)
{
    uint8_t buf[CLR_PROTO_MAX_PAYLOAD];
    ssize_t n = read(st->fd, buf, sizeof(buf));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        n = 0;
    }
    if (n == 0) {
        close(st->fd);
        st->fd = -1;
        return;
    }
    size_t send = agent_stream_take(st, (size_t)n);
    if (send)
        queue_frame(s, st->type, buf, send);
}

static int flush_out(struct sup *s)
{
    while (bytes_pending(&s->outq) > 0) {
        ssize_t n = write(s->out_fd, s->outq.data + s->outq.off, bytes_pending(&s->outq));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        s->outq.off += (size_t)n;
    }
    return 0;
}

static void write_stdin(struct sup *s)
{
    while (bytes_pending(&s->inq) > 0) {
        ssize_t n = write(s->child_in, s->inq.data + s->inq.off, bytes_pending(&s->inq));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                /* The command closed its stdin; what it did not read is dropped. */
                s->inq.off = s->inq.len;
                close(s->child_in);
                s->child_in = -1;
            }
            return;
        }
        s->inq.off += (size_t)n;
    }
    if (s->stdin_eof && s->child_in >= 0) {
        close(s->child_in);
        s->child_in = -1;
    }
}

/* A command is not charged for memory an earlier one held. gVisor returns a killed command's
 * pages to the sandbox's account (its /proc/meminfo) some milliseconds after the process is
 * gone, and a supervisor starts the next command at once: it would read the sandbox as over the
 * limit and end a command that holds next to nothing as out of memory. So a command waits, for
 * MEM_SETTLE_MS at most, until the sandbox is back under the limit; memory that stays (files in
 * the sandbox's tmpfs, other commands) is still charged after that, as before. */
static void settle_memory(const struct sup *s)
{
    if (!s->req.memory || s->req.memory_source != CLR_MEMORY_MEMINFO)
        return;
    uint64_t until = agent_now_ns() + MEM_SETTLE_MS * 1000000ull;
    for (;;) {
        uint64_t used = agent_meminfo_used();
        if (!used || used <= s->req.memory || agent_now_ns() >= until)
            return;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Returns true when memory in use is past half the limit, so sampling should speed up: a
 * fast allocator must not jump from below the limit to gVisor's hard wall between two samples. */
static bool sample_memory(struct sup *s, bool scan)
{
    if (scan)
        agent_tree_scan(agent_tree_buffer(), AGENT_MAX_PROCS, &s->tree_rss);
    uint64_t rss = s->tree_rss;
    uint64_t used = rss;
    if (s->req.memory_source == CLR_MEMORY_MEMINFO) {
        /* Both are upper bounds of what the command holds: the tighter one is reported. */
        uint64_t sandbox = agent_meminfo_used();
        if (sandbox && sandbox < rss)
            rss = sandbox;
        used = sandbox ? sandbox : used;
    }
    if (rss > s->peak_rss)
        s->peak_rss = rss;
    if (s->req.memory && used > s->req.memory && !s->verdict) {
        s->verdict = CLR_WIRE_OOM;
        snprintf(s->message, sizeof(s->message),
                 "memory in use reached %llu bytes, over the limit of %llu for commands",
                 (unsigned long long)used, (unsigned long long)s->req.memory);
    }
    return s->req.memory && used > s->req.memory / 2;
}

static void write_result(struct sup *s, int status)
{
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    if (!b)
        agent_die_oom();
    clr_tlv_init(b);
    clr_tlv_put_u64(b, CLR_RES_STATUS, (uint64_t)status);
    if (s->child_done && WIFEXITED(s->child_status))
        clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, (uint64_t)WEXITSTATUS(s->child_status));
    if (s->child_done && WIFSIGNALED(s->child_status))
        clr_tlv_put_u64(b, CLR_RES_SIGNAL, (uint64_t)WTERMSIG(s->child_status));
    uint64_t end = s->end_ns ? s->end_ns : agent_now_ns();
    clr_tlv_put_u64(b, CLR_RES_WALL_US, s->start_ns ? (end - s->start_ns) / 1000 : 0);
    clr_tlv_put_u64(b, CLR_RES_USER_US, s->user_us);
    clr_tlv_put_u64(b, CLR_RES_SYS_US, s->sys_us);
    clr_tlv_put_u64(b, CLR_RES_PEAK_RSS, s->peak_rss);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_BYTES, s->out.total);
    clr_tlv_put_u64(b, CLR_RES_STDERR_BYTES, s->err.total);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_TRUNC, agent_stream_truncated(&s->out));
    clr_tlv_put_u64(b, CLR_RES_STDERR_TRUNC, agent_stream_truncated(&s->err));
    clr_tlv_put_u64(b, CLR_RES_KILLED_PROCS, s->killed);
#ifdef CLR_TRACE
    TRACE(s, TR_TX);
    size_t ml = strlen(s->message);
    snprintf(s->message + ml, sizeof(s->message) - ml, "%strace=%llu,%llu,%llu,%llu,%llu",
             ml ? " " : "", (unsigned long long)s->tr[TR_RX], (unsigned long long)s->tr[TR_SPAWN],
             (unsigned long long)s->tr[TR_SPAWNED], (unsigned long long)s->tr[TR_EXITED],
             (unsigned long long)s->tr[TR_TX]);
#endif
    if (s->message[0])
        clr_tlv_put_str(b, CLR_RES_MESSAGE, s->message);
    queue_frame(s, CLR_FRAME_RESULT, b->buf, b->len);
    free(b);
}

/* Ends a command: its result written (the host reads until the result; block until it has it
 * all), and what the command held released, so a supervisor that runs the next one starts
 * clean. */
static void finish(struct sup *s, int status)
{
    agent_coverage_flush(); /* coverage builds: before the host has the result and may kill us */
    write_result(s, status);
    fcntl(s->out_fd, F_SETFL, fcntl(s->out_fd, F_GETFL) & ~O_NONBLOCK);
    flush_out(s);
    agent_request_clear(&s->req);
    free(s->outq.data);
    free(s->inq.data);
    s->outq = s->inq = (struct bytes){0};
}

static int wire_status(struct sup *s)
{
    if (s->verdict)
        return s->verdict;
    if (WIFSIGNALED(s->child_status)) {
        /* gVisor answers a page fault it cannot back with SIGKILL/SIGBUS; so does a kernel. When
         * the tree was near its memory limit, that is an out-of-memory end, not a plain signal. */
        int sig = WTERMSIG(s->child_status);
        if (s->req.memory && (sig == SIGKILL || sig == SIGBUS) &&
            s->peak_rss >= s->req.memory / 10 * 9)
            return CLR_WIRE_OOM;
        return CLR_WIRE_SIGNALED;
    }
    return CLR_WIRE_EXITED;
}

/* What a supervisor keeps from one command to the next. */
struct supervisor {
    int in_fd, out_fd;
    int sfd; /* signalfd for SIGCHLD, -1 if it could not be made (then poll's timeout paces) */
    bool reuse;
    struct clr_frame_reader rd;
};

/* Once per supervisor process: the state every command starts from. When it cannot be had, the
 * host is answered with start_failed and the reason, and nothing runs. */
static int supervisor_init(struct supervisor *v, int in_fd, int out_fd, bool reuse)
{
    static uint8_t rbuf[CLR_PROTO_MAX_PAYLOAD];
    memset(v, 0, sizeof(*v));
    v->in_fd = in_fd;
    v->out_fd = out_fd;
    v->reuse = reuse;
    clr_frame_reader_init(&v->rd, rbuf);
    /* Commands start with default signal dispositions (a caught signal is reset by execve, an
     * ignored one is not), no core dumps and no supplementary groups: set here, inherited. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    const char *what = NULL;
    if (setgroups(0, NULL) < 0)
        what = "cannot drop supplementary groups";
    /* Without it a double-forked process could outlive its timeout: refuse to run. */
    else if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        what = "cannot become a child subreaper";
    /* Fail closed: commands that cannot be filtered are not started. */
    else if (agent_filter_install() < 0)
        what = "cannot install the command filter";
    if (what) {
        struct sup s;
        memset(&s, 0, sizeof(s));
        s.out_fd = out_fd;
        snprintf(s.message, sizeof(s.message), "%s: %s", what, strerror(errno));
        finish(&s, CLR_WIRE_START_FAILED);
        return -1;
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigaddset(&chld, SIGPIPE);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    sigdelset(&chld, SIGPIPE);
    v->sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    return 0;
}

/* One command's state, before its request. */
static void sup_init(struct sup *s, const struct supervisor *v)
{
    memset(s, 0, sizeof(*s));
    s->in_fd = v->in_fd;
    s->out_fd = v->out_fd;
    s->child_in = s->out.fd = s->err.fd = -1;
    s->out.type = CLR_FRAME_STDOUT;
    s->err.type = CLR_FRAME_STDERR;
}

/* Reads until the request is complete, fd 0 blocking. 0; -1 when the stream ended or broke
 * first (the host is answered with start_failed, unless a reused supervisor was let go). */
static int wait_request(struct sup *s, struct supervisor *v)
{
    while (!s->have_req) {
        if (read_host(s, &v->rd) < 0 || s->host_eof) {
            /* A reused supervisor that is let go between commands ends quietly. */
            if (v->reuse && s->host_eof && !s->message[0])
                return -1;
            if (!s->message[0])
                snprintf(s->message, sizeof(s->message), "host closed the stream before a request");
            finish(s, CLR_WIRE_START_FAILED);
            return -1;
        }
    }
    return 0;
}

/* The supervising loop's clocks, in agent_now_ns() nanoseconds. */
struct pace {
    uint64_t deadline;    /* the command's timeout; 0: none */
    uint64_t drain_until; /* leftover writers are killed after this; 0: the command runs */
    uint64_t next_tick;   /* the next memory sample */
    uint64_t next_scan;   /* the next /proc walk */
    int tick_ms;
};

static void pace_init(struct pace *pc, const struct sup *s)
{
    pc->deadline = s->req.timeout_ms ? s->start_ns + s->req.timeout_ms * 1000000ull : 0;
    pc->drain_until = 0;
    pc->next_tick = s->start_ns;
    pc->tick_ms = TICK_MS;
    /* The first /proc walk waits a tick: most commands are over before it would matter. */
    pc->next_scan = s->start_ns + TICK_MS * 1000000ull;
}

/* Samples memory when its tick is due, and sets the next tick. */
static void memory_tick(struct sup *s, struct pace *pc, uint64_t t)
{
    if (t < pc->next_tick)
        return;
    /* The /proc scan is the costly part: at most every TICK_MS, even in fast mode. */
    bool scan = t >= pc->next_scan;
    if (scan)
        pc->next_scan = t + TICK_MS * 1000000ull;
    bool near = !s->child_done && sample_memory(s, scan);
    pc->tick_ms = near && s->req.memory_source == CLR_MEMORY_MEMINFO ? FAST_TICK_MS : TICK_MS;
    pc->next_tick = t + (uint64_t)pc->tick_ms * 1000000ull;
}

/* The supervisor's own decisions, once per round: the timeout, memory, a host that went away,
 * leftover writers after the command's exit. True when the command is over, its pipes at EOF and
 * its tree gone. */
static bool enforce(struct sup *s, struct pace *pc)
{
    uint64_t t = agent_now_ns();
    if (!s->verdict && pc->deadline && t >= pc->deadline && !s->child_done) {
        s->verdict = CLR_WIRE_TIMED_OUT;
        snprintf(s->message, sizeof(s->message), "timed out after %llu ms",
                 (unsigned long long)s->req.timeout_ms);
    }
    memory_tick(s, pc, t);
    if (s->host_eof && !s->verdict) {
        s->verdict = CLR_WIRE_SIGNALED;
        snprintf(s->message, sizeof(s->message), "host went away; command killed");
    }
    if (s->verdict)
        kill_tree(s);
    if (s->child_done && !pc->drain_until)
        pc->drain_until = agent_now_ns() + DRAIN_MS * 1000000ull;
    if (pc->drain_until && agent_now_ns() >= pc->drain_until) {
        /* Leftover background processes still hold the pipes: the command is over, they go. */
        kill_tree(s);
    }
    if (s->child_done && s->out.fd < 0 && s->err.fd < 0) {
        kill_tree(s);
        return true;
    }
    return false;
}

/* What one round waits for; an index is -1 when its descriptor is not watched. */
struct watch {
    struct pollfd p[5];
    int np;
    int i_host, i_out, i_err, i_sig;
};

/* Flow control: the host is read only while the command's stdin queue has room, the command's
 * pipes only while the host's queue has room. */
static void watch_build(struct watch *w, const struct sup *s, int sfd)
{
    w->np = 0;
    w->i_host = w->i_out = w->i_err = w->i_sig = -1;
    bool room = bytes_pending(&s->outq) < OUTQ_LIMIT;
    if (!s->host_eof && bytes_pending(&s->inq) < STDIN_LIMIT) {
        w->i_host = w->np;
        w->p[w->np++] = (struct pollfd){.fd = s->in_fd, .events = POLLIN};
    }
    if (bytes_pending(&s->outq) > 0)
        w->p[w->np++] = (struct pollfd){.fd = s->out_fd, .events = POLLOUT};
    if (room && s->out.fd >= 0) {
        w->i_out = w->np;
        w->p[w->np++] = (struct pollfd){.fd = s->out.fd, .events = POLLIN};
    }
    if (room && s->err.fd >= 0) {
        w->i_err = w->np;
        w->p[w->np++] = (struct pollfd){.fd = s->err.fd, .events = POLLIN};
    }
    if (s->child_in >= 0 && (bytes_pending(&s->inq) > 0 || s->stdin_eof))
        w->p[w->np++] = (struct pollfd){.fd = s->child_in, .events = POLLOUT};
    if (sfd >= 0) {
        w->i_sig = w->np;
        w->p[w->np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    }
}

/* Milliseconds to wait: a tick, or less when the deadline comes first. */
static int wait_ms(const struct sup *s, const struct pace *pc)
{
    int timeout = pc->tick_ms;
    if (pc->deadline && !s->child_done) {
        uint64_t now = agent_now_ns();
        int64_t left = pc->deadline > now ? (int64_t)((pc->deadline - now) / 1000000) + 1 : 0;
        if (left < timeout)
            timeout = (int)left;
    }
    return timeout;
}

static bool ready(const struct watch *w, int i, short events)
{
    return i >= 0 && (w->p[i].revents & events);
}

/* One wait and what came of it: exits collected, the host's frames read, the command's output
 * queued, its stdin written, the host's queue flushed. 0, or -1 when the supervisor cannot wait
 * any more: the command is killed, and the supervisor is not reused with the command's pipes in
 * an unknown state. */
static int pump(struct sup *s, struct supervisor *v, const struct pace *pc)
{
    struct watch w;
    watch_build(&w, s, v->sfd);
    int r = poll(w.p, (nfds_t)w.np, wait_ms(s, pc));
    if (r < 0 && errno != EINTR) {
        snprintf(s->message, sizeof(s->message), "poll: %s", strerror(errno));
        kill_tree(s);
        return -1;
    }
    if (ready(&w, w.i_sig, POLLIN)) {
        struct signalfd_siginfo si;
        while (read(v->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            ;
    }
    reap(s);
    if (ready(&w, w.i_host, POLLIN | POLLHUP | POLLERR) && read_host(s, &v->rd) < 0)
        s->host_eof = true;
    if (ready(&w, w.i_out, POLLIN | POLLHUP | POLLERR))
        read_stream(s, &s->out);
    if (ready(&w, w.i_err, POLLIN | POLLHUP | POLLERR))
        read_stream(s, &s->err);
    if (s->child_in >= 0)
        write_stdin(s);
    if (flush_out(s) < 0)
        s->host_eof = true;
    return 0;
}

/* Runs one command: waits for its EXEC, supervises it, writes its result. 0 when the supervisor
 * may take another command; 1 when the host went away during the command; -1 when no command
 * could be read (the stream ended or broke first). */
static int supervise_one(struct supervisor *v)
{
    struct sup s;
    sup_init(&s, v);
    if (wait_request(&s, v) < 0)
        return -1;
    /* A stream is sent whole: PID 1 keeps only its newest output, and the host's ring its. */
    s.out.cap = s.req.stream == 1 ? UINT64_MAX : s.req.stdout_cap;
    s.err.cap = s.req.stream == 1 ? UINT64_MAX : s.req.stderr_cap;
    fcntl(s.in_fd, F_SETFL, fcntl(s.in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(s.out_fd, F_SETFL, fcntl(s.out_fd, F_GETFL) | O_NONBLOCK);

    settle_memory(&s);
    if (start_command(&s) < 0) {
        finish(&s, CLR_WIRE_START_FAILED);
        return 0;
    }
    send_early_signals(&s);
    struct pace pc;
    pace_init(&pc, &s);
    bool broken = false;
    while (!broken && !enforce(&s, &pc))
        broken = pump(&s, v, &pc) < 0;
    if (s.child_in >= 0)
        close(s.child_in);
    if (s.out.fd >= 0)
        close(s.out.fd);
    if (s.err.fd >= 0)
        close(s.err.fd);
    finish(&s, wire_status(&s));
    return s.host_eof || broken ? 1 : 0;
}

int agent_supervise(int in_fd, int out_fd)
{
    struct supervisor v;
    if (supervisor_init(&v, in_fd, out_fd, false) < 0)
        return -1;
    return supervise_one(&v) < 0 ? -1 : 0;
}

int agent_supervise_many(int fd)
{
    struct supervisor v;
    if (supervisor_init(&v, fd, fd, true) < 0)
        return -1;
    while (supervise_one(&v) == 0)
        ;
    return 0;
}
