/* One command under supervision.
 *
 * The supervisor is root inside the sandbox and holds only CAP_SETUID, CAP_SETGID and CAP_KILL;
 * the command runs as the unprivileged sandbox user, so it can neither ptrace nor signal the
 * supervisor, nor read its memory or descriptors (the supervisor is also non-dumpable).
 *
 * Process-tree kill: the supervisor is a child subreaper, so every descendant of the command that
 * loses its parent (double fork, setsid daemons) is re-parented to the supervisor rather than to
 * PID 1. The tree is therefore exactly the processes whose parent chain reaches the supervisor;
 * kill_tree() scans /proc, SIGKILLs all of them (SIGKILL also ends stopped processes and cannot be
 * ignored) and repeats until none is left, so a process that forks during the scan is caught on
 * the next pass.
 *
 * Flow control: frames for the host are queued and written when fd 1 is writable; while the queue
 * is full the command's pipes are not read, so a flood of output blocks the command, never the
 * supervisor, and the deadline always fires.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "coverage.h"

#define OUTQ_LIMIT (1024 * 1024)  /* bytes queued for the host before the pipes are paused */
#define STDIN_LIMIT (1024 * 1024) /* bytes queued for the command before fd 0 is paused */
#define MEM_SETTLE_MS 2000        /* a command waits this long at most for an earlier one's memory */
#define TICK_MS 25                /* memory sampling period */
#define FAST_TICK_MS 2            /* ... once memory in use passes half the limit */
#define DRAIN_MS 200              /* how long leftover writers may keep the pipes open */
#define MAX_PROCS 65536
#define CHANNEL 1

struct bytes {
    uint8_t *data;
    size_t len;
    size_t off;
};

struct stream {
    int fd; /* read end of the command's pipe, -1 once at EOF */
    uint8_t type;
    uint64_t cap;
    uint64_t total;
    uint64_t sent;
};

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
    char message[256];
};

static void die_oom(void)
{
    static const char msg[] = "clearing-agent: out of memory\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(3);
}

static void bytes_append(struct bytes *b, const void *data, size_t len)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    uint8_t *n = realloc(b->data, b->len + len);
    if (!n)
        die_oom();
    b->data = n;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static size_t bytes_pending(const struct bytes *b)
{
    return b->len - b->off;
}

static void queue_frame(struct sup *s, uint8_t type, const void *payload, size_t len)
{
    uint8_t hdr[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(hdr, CHANNEL, type, (uint32_t)len);
    bytes_append(&s->outq, hdr, sizeof(hdr));
    if (len)
        bytes_append(&s->outq, payload, len);
}

/* ---- request decoding ---- */

static char *dup_bytes(const uint8_t *v, uint32_t len)
{
    if (memchr(v, '\0', len))
        return NULL; /* an embedded NUL would silently cut an argument */
    char *s = malloc((size_t)len + 1);
    if (!s)
        die_oom();
    memcpy(s, v, len);
    s[len] = '\0';
    return s;
}

static int push_str(char ***vec, size_t *n, size_t max, char *s)
{
    if (*n >= max)
        return -1;
    char **v = realloc(*vec, (*n + 2) * sizeof(char *));
    if (!v)
        die_oom();
    v[(*n)++] = s;
    v[*n] = NULL;
    *vec = v;
    return 0;
}

void agent_request_clear(struct agent_request *req)
{
    for (size_t i = 0; i < req->argc; i++)
        free(req->argv[i]);
    for (size_t i = 0; i < req->envc; i++)
        free(req->envp[i]);
    free(req->argv);
    free(req->envp);
    free(req->cwd);
    memset(req, 0, sizeof(*req));
}

int agent_request_parse(struct agent_request *req, const uint8_t *payload, size_t len, char *err,
                        size_t errlen)
{
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t vlen;
    int rc;

    memset(req, 0, sizeof(*req));
    req->uid = 1000;
    req->gid = 1000;
    clr_tlv_iter_init(&it, payload, len);
    while ((rc = clr_tlv_next(&it, &tag, &v, &vlen)) == 1) {
        uint64_t n = 0;
        char *str;
        switch (tag) {
        case CLR_REQ_ARG:
        case CLR_REQ_ENV:
            str = dup_bytes(v, vlen);
            if (!str) {
                snprintf(err, errlen, "argument or environment entry contains a NUL byte");
                goto fail;
            }
            if (tag == CLR_REQ_ARG ? push_str(&req->argv, &req->argc, CLR_PROTO_MAX_ARGS, str)
                                   : push_str(&req->envp, &req->envc, CLR_PROTO_MAX_ENV, str)) {
                free(str);
                snprintf(err, errlen, "too many arguments or environment entries");
                goto fail;
            }
            break;
        case CLR_REQ_CWD:
            free(req->cwd);
            req->cwd = dup_bytes(v, vlen);
            if (!req->cwd) {
                snprintf(err, errlen, "working directory contains a NUL byte");
                goto fail;
            }
            break;
        default:
            if (clr_tlv_u64(v, vlen, &n) < 0) {
                snprintf(err, errlen, "field %u: expected an 8-byte integer", tag);
                goto fail;
            }
            switch (tag) {
            case CLR_REQ_TIMEOUT_MS: req->timeout_ms = n; break;
            case CLR_REQ_STDOUT_CAP: req->stdout_cap = n; break;
            case CLR_REQ_STDERR_CAP: req->stderr_cap = n; break;
            case CLR_REQ_UID: req->uid = (uid_t)n; break;
            case CLR_REQ_GID: req->gid = (gid_t)n; break;
            case CLR_REQ_NPROC: req->nproc = n; break;
            case CLR_REQ_MEMORY: req->memory = n; break;
            case CLR_REQ_NOFILE: req->nofile = n; break;
            case CLR_REQ_FSIZE: req->fsize = n; break;
            case CLR_REQ_MEMORY_SOURCE: req->memory_source = n; break;
            default: break; /* unknown integer fields are ignored, for forward compatibility */
            }
        }
    }
    if (rc < 0) {
        snprintf(err, errlen, "malformed request fields");
        goto fail;
    }
    if (req->argc == 0) {
        snprintf(err, errlen, "empty command");
        goto fail;
    }
    if (req->uid == 0 || req->gid == 0) {
        /* Commands never run as root: the result's integrity depends on it. */
        snprintf(err, errlen, "refusing to run a command as uid/gid 0");
        goto fail;
    }
    if (!req->envp) {
        /* An empty environment is a NULL-terminated array with no entries: envc stays 0. */
        size_t none = 0;
        push_str(&req->envp, &none, CLR_PROTO_MAX_ENV, NULL);
    }
    return 0;
fail:
    agent_request_clear(req);
    return -1;
}

/* ---- the process tree ---- */

struct proc {
    pid_t pid, ppid;
    uint64_t rss_pages;
    bool in_tree;
};

/* Reads ppid and resident pages from /proc/PID/stat. */
static int read_stat(pid_t pid, pid_t *ppid, uint64_t *rss_pages)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* comm may contain anything, including ')' and spaces: parse from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    /* Fields after ") " are numbered from 3 (state); ppid is 4, rss is 24. */
    char *field = p + 2;
    int pp = 0;
    long long rss = 0;
    for (int i = 3; i <= 24 && field; i++) {
        if (i == 4)
            pp = atoi(field);
        else if (i == 24)
            rss = atoll(field);
        field = strchr(field, ' ');
        if (field)
            field++;
    }
    *ppid = pp;
    *rss_pages = rss > 0 ? (uint64_t)rss : 0;
    return 0;
}

/* Lists the supervisor's descendants into procs; returns how many, and their total RSS. */
static size_t scan_tree(struct proc *procs, size_t max, uint64_t *rss_bytes)
{
    DIR *d = opendir("/proc");
    size_t n = 0;
    pid_t self = getpid();
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == self)
            continue;
        pid_t ppid;
        uint64_t pages = 0;
        if (read_stat((pid_t)pid, &ppid, &pages) < 0)
            continue;
        procs[n] = (struct proc){.pid = (pid_t)pid, .ppid = ppid, .rss_pages = pages,
                                 .in_tree = ppid == self};
        n++;
    }
    closedir(d);
    /* Propagate membership down the parent links until nothing changes. */
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            if (procs[i].in_tree)
                continue;
            for (size_t j = 0; j < n; j++) {
                if (procs[j].in_tree && procs[j].pid == procs[i].ppid) {
                    procs[i].in_tree = true;
                    changed = true;
                    break;
                }
            }
        }
    }
    size_t m = 0;
    uint64_t pages = 0;
    for (size_t i = 0; i < n; i++) {
        if (!procs[i].in_tree)
            continue;
        pages += procs[i].rss_pages;
        procs[m++] = procs[i];
    }
    if (rss_bytes)
        *rss_bytes = pages * (uint64_t)sysconf(_SC_PAGESIZE);
    return m;
}

static struct proc *proc_buf(void)
{
    static struct proc *buf;
    if (!buf) {
        buf = calloc(MAX_PROCS, sizeof(*buf));
        if (!buf)
            die_oom();
    }
    return buf;
}

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

/* True when the supervisor has no child at all, living, stopped or a zombie. Then it has no
 * descendant either: it is a subreaper, so the topmost living process of any branch of the tree
 * is its child. The kernel's (the Sentry's) own answer, so the /proc walk can be skipped. */
static bool no_children(void)
{
    siginfo_t si;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 &&
           errno == ECHILD;
}

/* SIGKILLs every descendant until none is left. */
static void kill_tree(struct sup *s)
{
    struct proc *procs = proc_buf();
    reap(s);
    if (no_children())
        return;
    for (int round = 0; round < 1000; round++) {
        size_t n = scan_tree(procs, MAX_PROCS, NULL);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            if (kill(procs[i].pid, SIGKILL) == 0)
                s->killed++;
        }
        reap(s);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* Everything is dead; collect what is left so nothing remains a zombie. */
    while (collect(s, 0) > 0)
        ;
}

/* ---- starting the command ---- */

extern char **environ;

static bool env_has(char **vec, const char *kv)
{
    size_t n = strcspn(kv, "=");
    for (; vec && *vec; vec++) {
        if (strncmp(*vec, kv, n) == 0 && (*vec)[n] == '=')
            return true;
    }
    return false;
}

/* The command's environment: the container's (the image's PATH, HOME, LANG...) with the
 * request's entries added or replacing; of duplicate request entries the last wins. Built in the
 * supervisor before the command's vfork (the child shares its memory and must not allocate);
 * the vector's strings belong to environ and the request, so only the vector is freed. */
static char **command_env(char **req)
{
    size_t nreq = 0, nenv = 0;
    while (req && req[nreq])
        nreq++;
    while (environ && environ[nenv])
        nenv++;
    char **v = calloc(nreq + nenv + 1, sizeof(char *));
    if (!v)
        return req;
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        if (!env_has(req, environ[i]) && !agent_coverage_env(environ[i]))
            v[k++] = environ[i];
    }
    for (size_t i = 0; i < nreq; i++) {
        if (!env_has(req + i + 1, req[i]))
            v[k++] = req[i];
    }
    return v;
}

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#else
#error "command filter: unknown architecture"
#endif

/* Namespaces a command may not create; CLONE_NEWTIME (0x80) only in unshare, where the low
 * byte is not clone's exit signal. */
#define FILTER_NS_FLAGS                                                                           \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |                \
     CLONE_NEWPID | CLONE_NEWNET)
#define FILTER_ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n)) /* little endian */
#define FILTER_LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define FILTER_RET(action) BPF_STMT(BPF_RET | BPF_K, (action))
#define FILTER_ERRNO(e) FILTER_RET(SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
/* nr == NR: EPERM if the flags argument has any of FLAGS, else allowed (5 instructions). */
#define FILTER_FLAGS(nr, arg, flags)                                                              \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4), FILTER_LD(FILTER_ARG_LO(arg)),              \
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (flags), 0, 1), FILTER_ERRNO(EPERM),                 \
        FILTER_RET(SECCOMP_RET_ALLOW)
/* nr == NR: EPERM if the mode argument makes a character or block device (7 instructions). */
#define FILTER_NODE(nr, arg)                                                                      \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 6), FILTER_LD(FILTER_ARG_LO(arg)),               \
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT),                                              \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 2, 0),                                       \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 1, 0), FILTER_RET(SECCOMP_RET_ALLOW),        \
        FILTER_ERRNO(EPERM)

/* The command's seccomp filter. gVisor does not load Docker's seccomp profile (runsc ignores it
 * without --oci-seccomp) and its own checks are weaker than Linux's in two places the escape
 * suite found: an unprivileged user may create user namespaces (and so get CAP_SYS_ADMIN over
 * new mount and network namespaces) and may mknod character and block devices on tmpfs,
 * ignoring CAP_MKNOD and nodev (gVisor's /dev/fuse and /dev/net/tun then open). Neither reaches
 * the host, but both widen the part of the Sentry a command can reach, so they are refused as
 * Docker's profile refuses them: namespace flags in clone/unshare, clone3 (its flags live in
 * memory a filter cannot read; glibc falls back to clone on ENOSYS), device nodes, keyrings.
 * Installed once by the supervisor itself, which needs none of these (it starts commands with
 * vfork), so every command inherits it through vfork and execve; no_new_privs makes it
 * irrevocable. Not per command: in gVisor, loading a filter costs a command's start about
 * 0.8 ms. */
static int install_command_filter(void)
{
    struct sock_filter f[] = {
        FILTER_LD(offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0),
        FILTER_RET(SECCOMP_RET_KILL_PROCESS),
        FILTER_LD(offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000 /* x32 ABI */, 0, 1),
        FILTER_ERRNO(ENOSYS),
        FILTER_NODE(__NR_mknod, 1),
#endif
        FILTER_NODE(__NR_mknodat, 2),
        FILTER_FLAGS(__NR_unshare, 0, FILTER_NS_FLAGS | 0x80 /* CLONE_NEWTIME */),
        FILTER_FLAGS(__NR_clone, 0, FILTER_NS_FLAGS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        FILTER_ERRNO(ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_keyctl, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_add_key, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_request_key, 0, 1),
        FILTER_ERRNO(EPERM),
        FILTER_RET(SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Runs in the vfork child, in the supervisor's memory until execve: no allocation, no writes
 * to anything but its own stack and descriptors, and errno (shared with the parent, which reads
 * it after the vfork only when the vfork itself failed). What it changes (signal mask, session, rlimits,
 * credentials, cwd, descriptors, seccomp) belongs to the child process alone: vfork shares the
 * address space, not the signal handlers, files, fs or credentials. Every system call here is
 * on the command's path, and in a new gVisor process each costs up to tens of microseconds:
 * what can be done once per supervisor (signal dispositions, RLIMIT_CORE, supplementary
 * groups, the seccomp filter) is done in supervisor_init instead. */
__attribute__((noreturn)) static void child_setup(struct sup *s, char **env, int in_r, int out_w,
                                                  int err_w, int report_w)
{
    struct agent_request *r = &s->req;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* A session of its own: terminal signals of the agent do not reach it and vice versa. */
    setsid();
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        goto fail;
    /* report_w is close-on-exec: it closes by itself when execve succeeds. Every other
     * descriptor is closed here so nothing of the agent's leaks into the command; before
     * RLIMIT_NOFILE is lowered, which would lower the bound of close()'s fallback loop. */
    agent_close_from(3, report_w);
    if (r->nproc) {
        struct rlimit l = {r->nproc, r->nproc};
        if (setrlimit(RLIMIT_NPROC, &l) < 0)
            goto fail;
    }
    if (r->nofile) {
        struct rlimit l = {r->nofile, r->nofile};
        if (setrlimit(RLIMIT_NOFILE, &l) < 0)
            goto fail;
    }
    if (r->fsize) {
        struct rlimit l = {r->fsize, r->fsize};
        if (setrlimit(RLIMIT_FSIZE, &l) < 0)
            goto fail;
    }
    if (setgid(r->gid) < 0 || setuid(r->uid) < 0)
        goto fail;
    /* Losing root must be irreversible before any command byte runs. */
    if (setuid(0) == 0 || getuid() != r->uid || geteuid() != r->uid)
        goto fail;
    if (r->cwd && chdir(r->cwd) < 0)
        goto fail;
    execvpe(r->argv[0], r->argv, env);
fail:;
    int e = errno;
    (void)!write(report_w, &e, sizeof(e));
    _exit(127);
}

static int make_pipe(int p[2])
{
    return pipe2(p, O_CLOEXEC);
}

/* vfork: no copy of the supervisor's address space, which under gVisor is about half the cost
 * of starting a command; returns once the child has exec'd or exited. A function of its own, so
 * that nothing the parent uses after it lives in a register the child could clobber. fds: the
 * pipes' read and write ends, stdin, stdout, stderr and the report pipe, in that order. */
__attribute__((noinline)) static pid_t spawn_command(struct sup *s, char **env, const int *fds)
{
    pid_t pid = vfork();
    if (pid == 0) {
        close(fds[1]);
        close(fds[2]);
        close(fds[4]);
        close(fds[6]);
        child_setup(s, env, fds[0], fds[3], fds[5], fds[7]);
    }
    return pid;
}

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static int start_command(struct sup *s)
{
    /* A supervisor runs many commands: on every failure, each descriptor made so far is closed,
     * or the next command's supervisor would carry it. */
    int fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    int *in = &fds[0], *out = &fds[2], *err = &fds[4], *rep = &fds[6];
    if (make_pipe(in) < 0 || make_pipe(out) < 0 || make_pipe(err) < 0 || make_pipe(rep) < 0) {
        snprintf(s->message, sizeof(s->message), "pipe: %s", strerror(errno));
        close_all(fds, 8);
        return -1;
    }
    char **env = command_env(s->req.envp);
    s->start_ns = agent_now_ns();
    TRACE(s, TR_SPAWN);
    pid_t pid = spawn_command(s, env, fds);
    /* errno is the vfork's only when it failed: the child shares the parent's memory, errno
     * included, and its failing calls (each PATH entry execvpe tries) overwrite it. */
    int spawn_errno = errno;
    TRACE(s, TR_SPAWNED);
    if (env != s->req.envp)
        free(env);
    if (pid < 0) {
        snprintf(s->message, sizeof(s->message), "vfork: %s", strerror(spawn_errno));
        close_all(fds, 8);
        return -1;
    }
    s->child = pid;
    close(in[0]);
    close(out[1]);
    close(err[1]);
    close(rep[1]);
    int e = 0;
    ssize_t n;
    do
        n = read(rep[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close(rep[0]);
    if (n == (ssize_t)sizeof(e)) {
        snprintf(s->message, sizeof(s->message), "cannot start '%s': %s", s->req.argv[0],
                 strerror(e));
        close(in[1]);
        close(out[0]);
        close(err[0]);
        reap(s);
        return -1;
    }
    s->child_in = in[1];
    s->out.fd = out[0];
    s->err.fd = err[0];
    fcntl(s->child_in, F_SETFL, O_NONBLOCK);
    fcntl(s->out.fd, F_SETFL, O_NONBLOCK);
    fcntl(s->err.fd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* ---- I/O ---- */

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
        /* The command leads its own session and process group. */
        if (s->child > 0 && !s->child_done) {
            kill(-s->child, (int)sig);
            kill(s->child, (int)sig);
        }
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
    st->total += (uint64_t)n;
    if (st->sent < st->cap) {
        uint64_t room = st->cap - st->sent;
        size_t send = (uint64_t)n < room ? (size_t)n : (size_t)room;
        queue_frame(s, st->type, buf, send);
        st->sent += send;
    }
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

/* Sandbox-wide memory in use, from the sandbox kernel's /proc/meminfo; 0 if unreadable. */
static uint64_t meminfo_used(void)
{
    char buf[4096];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *t = strstr(buf, "MemTotal:");
    const char *a = strstr(buf, "MemAvailable:");
    if (!t || !a)
        return 0;
    unsigned long long total = strtoull(t + 9, NULL, 10);
    unsigned long long avail = strtoull(a + 13, NULL, 10);
    return total > avail ? (total - avail) * 1024 : 0;
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
        uint64_t used = meminfo_used();
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
        scan_tree(proc_buf(), MAX_PROCS, &s->tree_rss);
    uint64_t rss = s->tree_rss;
    uint64_t used = rss;
    if (s->req.memory_source == CLR_MEMORY_MEMINFO) {
        /* Both are upper bounds of what the command holds: the tighter one is reported. */
        uint64_t sandbox = meminfo_used();
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
        die_oom();
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
    clr_tlv_put_u64(b, CLR_RES_STDOUT_TRUNC, s->out.total > s->out.sent);
    clr_tlv_put_u64(b, CLR_RES_STDERR_TRUNC, s->err.total > s->err.sent);
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
    else if (install_command_filter() < 0)
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

/* Runs one command: waits for its EXEC, supervises it, writes its result. 0 when the supervisor
 * may take another command; 1 when the host went away during the command; -1 when no command
 * could be read (the stream ended or broke first). */
static int supervise_one(struct supervisor *v)
{
    struct sup s;
    memset(&s, 0, sizeof(s));
    s.in_fd = v->in_fd;
    s.out_fd = v->out_fd;
    s.child_in = s.out.fd = s.err.fd = -1;
    s.out.type = CLR_FRAME_STDOUT;
    s.err.type = CLR_FRAME_STDERR;
    struct clr_frame_reader *rd = &v->rd;
    int sfd = v->sfd;

    /* Until the request is complete, fd 0 is read blocking. */
    while (!s.have_req) {
        if (read_host(&s, rd) < 0 || s.host_eof) {
            /* A reused supervisor that is let go between commands ends quietly. */
            if (v->reuse && s.host_eof && !s.message[0])
                return -1;
            if (!s.message[0])
                snprintf(s.message, sizeof(s.message), "host closed the stream before a request");
            finish(&s, CLR_WIRE_START_FAILED);
            return -1;
        }
    }
    s.out.cap = s.req.stdout_cap;
    s.err.cap = s.req.stderr_cap;
    fcntl(s.in_fd, F_SETFL, fcntl(s.in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(s.out_fd, F_SETFL, fcntl(s.out_fd, F_GETFL) | O_NONBLOCK);

    settle_memory(&s);
    if (start_command(&s) < 0) {
        finish(&s, CLR_WIRE_START_FAILED);
        return 0;
    }
    uint64_t deadline = s.req.timeout_ms ? s.start_ns + s.req.timeout_ms * 1000000ull : 0;
    uint64_t drain_until = 0;
    uint64_t next_tick = s.start_ns;
    int tick_ms = TICK_MS;
    /* The first /proc walk waits a tick: most commands are over before it would matter. */
    uint64_t next_scan = s.start_ns + TICK_MS * 1000000ull;
    bool broken = false;

    for (;;) {
        uint64_t t = agent_now_ns();
        if (!s.verdict && deadline && t >= deadline && !s.child_done) {
            s.verdict = CLR_WIRE_TIMED_OUT;
            snprintf(s.message, sizeof(s.message), "timed out after %llu ms",
                     (unsigned long long)s.req.timeout_ms);
        }
        if (t >= next_tick) {
            /* The /proc scan is the costly part: at most every TICK_MS, even in fast mode. */
            bool scan = t >= next_scan;
            if (scan)
                next_scan = t + TICK_MS * 1000000ull;
            bool near = !s.child_done && sample_memory(&s, scan);
            tick_ms = near && s.req.memory_source == CLR_MEMORY_MEMINFO ? FAST_TICK_MS : TICK_MS;
            next_tick = t + (uint64_t)tick_ms * 1000000ull;
        }
        if (s.host_eof && !s.verdict) {
            s.verdict = CLR_WIRE_SIGNALED;
            snprintf(s.message, sizeof(s.message), "host went away; command killed");
        }
        if (s.verdict) {
            kill_tree(&s);
        }
        if (s.child_done && !drain_until)
            drain_until = agent_now_ns() + DRAIN_MS * 1000000ull;
        if (drain_until && agent_now_ns() >= drain_until) {
            /* Leftover background processes still hold the pipes: the command is over, they go. */
            kill_tree(&s);
        }
        if (s.child_done && s.out.fd < 0 && s.err.fd < 0) {
            kill_tree(&s);
            break;
        }

        struct pollfd p[5];
        int np = 0;
        int i_host = -1, i_out = -1, i_err = -1, i_in = -1, i_sig = -1;
        bool room = bytes_pending(&s.outq) < OUTQ_LIMIT;
        if (!s.host_eof && bytes_pending(&s.inq) < STDIN_LIMIT) {
            i_host = np;
            p[np++] = (struct pollfd){.fd = s.in_fd, .events = POLLIN};
        }
        if (bytes_pending(&s.outq) > 0)
            p[np++] = (struct pollfd){.fd = s.out_fd, .events = POLLOUT};
        if (room && s.out.fd >= 0) {
            i_out = np;
            p[np++] = (struct pollfd){.fd = s.out.fd, .events = POLLIN};
        }
        if (room && s.err.fd >= 0) {
            i_err = np;
            p[np++] = (struct pollfd){.fd = s.err.fd, .events = POLLIN};
        }
        if (s.child_in >= 0 && (bytes_pending(&s.inq) > 0 || s.stdin_eof)) {
            i_in = np;
            p[np++] = (struct pollfd){.fd = s.child_in, .events = POLLOUT};
        }
        (void)i_in;
        if (sfd >= 0) {
            i_sig = np;
            p[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        }
        int timeout = tick_ms;
        if (deadline && !s.child_done) {
            uint64_t now = agent_now_ns();
            int64_t left = deadline > now ? (int64_t)((deadline - now) / 1000000) + 1 : 0;
            if (left < timeout)
                timeout = (int)left;
        }
        int r = poll(p, (nfds_t)np, timeout);
        if (r < 0 && errno != EINTR) {
            /* Cannot wait any more: the command goes, and so does this supervisor (it is not
             * reused with the command's pipes in an unknown state). */
            snprintf(s.message, sizeof(s.message), "poll: %s", strerror(errno));
            kill_tree(&s);
            broken = true;
            break;
        }
        if (i_sig >= 0 && (p[i_sig].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                ;
        }
        reap(&s);
        if (i_host >= 0 && (p[i_host].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (read_host(&s, rd) < 0) {
                s.host_eof = true;
            }
        }
        if (i_out >= 0 && (p[i_out].revents & (POLLIN | POLLHUP | POLLERR)))
            read_stream(&s, &s.out);
        if (i_err >= 0 && (p[i_err].revents & (POLLIN | POLLHUP | POLLERR)))
            read_stream(&s, &s.err);
        if (s.child_in >= 0)
            write_stdin(&s);
        if (flush_out(&s) < 0)
            s.host_eof = true;
    }
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
