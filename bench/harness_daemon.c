/* A `clearing serve` child of a benchmark, in a temporary directory of its own. See harness.h. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clearing/cleanup.h"

#define DAEMON_START_TIMEOUT_MS 30000
#define DAEMON_STOP_TIMEOUT_MS 15000
#define MAX_ARGS 16

int bench_daemon_dir(struct bench_daemon *d, const char *prefix)
{
    snprintf(d->dir, sizeof(d->dir), "/tmp/%s.XXXXXX", prefix);
    if (!mkdtemp(d->dir)) {
        fprintf(stderr, "%s: cannot create a temporary directory: %s\n", bench_prog,
                strerror(errno));
        d->dir[0] = '\0';
        return -1;
    }
    snprintf(d->sock, sizeof(d->sock), "%s/clearing.sock", d->dir);
    snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
    return 0;
}

bool bench_daemon_gone(struct bench_daemon *d)
{
    if (d->pid <= 0 || d->reaped)
        return true;
    int st;
    if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
        d->reaped = true;
        d->status = st;
        return true;
    }
    return false;
}

void bench_describe_status(int st, char *out, size_t len)
{
    if (WIFEXITED(st))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(out, len, "ended (wait status %#x)", (unsigned)st);
}

void bench_daemon_print_log(struct bench_daemon *d)
{
    if (d->log_printed)
        return;
    d->log_printed = true;
    _cleanup_close_ int fd = open(d->log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > 4096 ? size - 4096 : 0;
    char buf[4097];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    if (n <= 0)
        return;
    buf[n] = '\0';
    fprintf(stderr, "--- the end of the daemon's log (%s) ---\n%s%s--- end of log ---\n", d->log,
            buf, buf[n - 1] == '\n' ? "" : "\n");
}

void bench_daemon_check(struct bench_daemon *d)
{
    if (d->failed || !bench_daemon_gone(d))
        return;
    char how[96];
    bench_describe_status(d->status, how, sizeof(how));
    fprintf(stderr, "the daemon (pid %ld) %s\n", (long)d->pid, how);
    bench_daemon_print_log(d);
    d->failed = true;
}

/* In the child: never returns. */
static void daemon_exec(const char *bin, char *const *argv, int nullfd, int logfd, pid_t parent)
{
    /* Its own process group, so that ^C reaches only the benchmark, which then removes the
     * sandboxes through the daemon before stopping it. If the benchmark dies without cleaning
     * up, the daemon is told to stop. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(127);
    signal(SIGPIPE, SIG_DFL);
    dup2(nullfd, STDIN_FILENO);
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    execv(bin, argv);
    dprintf(STDERR_FILENO, "%s: cannot run %s: %s\n", bench_prog, bin, strerror(errno));
    _exit(127);
}

int bench_daemon_start(struct bench_daemon *d, const char *bin, const char *agent,
                       const char *const *args, size_t nargs, char *why, size_t why_len)
{
    const char *argv[MAX_ARGS + 7] = {bin, "--state-dir", d->state, "serve", "--socket", d->sock};
    size_t argc = 6;
    for (size_t i = 0; i < nargs && i < MAX_ARGS; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    _cleanup_close_ int logfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0) {
        snprintf(why, why_len, "cannot create %s: %s", d->log, strerror(errno));
        return -1;
    }
    _cleanup_close_ int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* The daemon's agent is the one the caller named, from the same build. */
    if (setenv("CLEARING_AGENT", agent, 1) < 0 || nullfd < 0) {
        snprintf(why, why_len, "cannot prepare the daemon's environment: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_len, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0)
        daemon_exec(bin, (char *const *)argv, nullfd, logfd, parent);
    setpgid(pid, pid); /* also here: whichever runs first */
    d->pid = pid;
    return 0;
}

int bench_daemon_wait(struct bench_daemon *d, int (*ready)(void *ctx, char *last, size_t len),
                      void *ctx, char *why, size_t why_len)
{
    double deadline = bench_now_ms() + DAEMON_START_TIMEOUT_MS;
    char last[1100] = "no answer yet";
    while (!bench_interrupted) {
        if (bench_daemon_gone(d)) {
            char how[96];
            bench_describe_status(d->status, how, sizeof(how));
            snprintf(why, why_len, "the daemon %s before it answered", how);
            return -1;
        }
        if (access(d->sock, F_OK) == 0) {
            int r = ready(ctx, last, sizeof(last));
            if (r != 0) {
                if (r < 0)
                    snprintf(why, why_len, "%.300s", last);
                return r > 0 ? 0 : -1;
            }
        }
        if (bench_now_ms() >= deadline) {
            snprintf(why, why_len, "the daemon did not answer within %d s (%.300s)",
                     DAEMON_START_TIMEOUT_MS / 1000, last);
            return -1;
        }
        bench_sleep_ms(50);
    }
    snprintf(why, why_len, "interrupted");
    return -1;
}

int bench_daemon_stop(struct bench_daemon *d)
{
    if (d->pid <= 0)
        return 0;
    if (!bench_daemon_gone(d)) {
        kill(d->pid, SIGTERM);
        double deadline = bench_now_ms() + DAEMON_STOP_TIMEOUT_MS;
        while (!bench_daemon_gone(d) && bench_now_ms() < deadline)
            bench_sleep_ms(20);
        if (!bench_daemon_gone(d)) {
            fprintf(stderr, "the daemon (pid %ld) did not stop within %d s of SIGTERM; killing "
                            "it\n",
                    (long)d->pid, DAEMON_STOP_TIMEOUT_MS / 1000);
            kill(d->pid, SIGKILL);
            int st;
            if (waitpid(d->pid, &st, 0) == d->pid) {
                d->reaped = true;
                d->status = st;
            }
            return -1;
        }
        if (WIFEXITED(d->status) && WEXITSTATUS(d->status) == 0)
            return 0;
    }
    bench_daemon_check(d);
    return -1;
}

unsigned bench_daemon_remove_dir(struct bench_daemon *d)
{
    /* The log, the socket, the database, the (empty) workspaces directory. */
    if (!d->dir[0])
        return 0;
    if (d->failed)
        bench_daemon_print_log(d);
    return bench_remove_tree(d->dir);
}

int bench_find_program(char *out, const char *given, const char *env, const char *rel,
                       const char *what)
{
    char guess[PATH_MAX];
    const char *p = given ? given : getenv(env);
    if (!p || !*p) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            fprintf(stderr, "%s: no %s: set %s\n", bench_prog, what, env);
            return -1;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        int len = snprintf(guess, sizeof(guess), "%s/%s", self, rel);
        if (len < 0 || (size_t)len >= sizeof(guess)) {
            fprintf(stderr, "%s: no %s: set %s\n", bench_prog, what, env);
            return -1;
        }
        p = guess;
    }
    if (!realpath(p, out) || access(out, X_OK) < 0) {
        fprintf(stderr, "%s: %s %s: %s (give it with the option or %s)\n", bench_prog, what, p,
                strerror(errno), env);
        return -1;
    }
    return 0;
}
