/* A command's start: see command.h. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "command.h"
#include "coverage.h"
#include "util.h"

static bool env_has(char **vec, const char *kv)
{
    size_t n = strcspn(kv, "=");
    for (; vec && *vec; vec++) {
        if (strncmp(*vec, kv, n) == 0 && (*vec)[n] == '=')
            return true;
    }
    return false;
}

/* Built in the supervisor before the command's vfork: the child shares its memory and must not
 * allocate. */
char **agent_command_env(char **base, char **req)
{
    size_t nreq = 0, nenv = 0;
    while (req && req[nreq])
        nreq++;
    while (base && base[nenv])
        nenv++;
    char **v = calloc(nreq + nenv + 1, sizeof(char *));
    if (!v)
        return req;
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        if (!env_has(req, base[i]) && !agent_coverage_env(base[i]))
            v[k++] = base[i];
    }
    for (size_t i = 0; i < nreq; i++) {
        if (!env_has(req + i + 1, req[i]))
            v[k++] = req[i];
    }
    return v;
}

size_t agent_command_rlimits(const struct agent_request *req,
                             struct agent_rlimit out[AGENT_MAX_RLIMITS])
{
    size_t n = 0;
    if (req->nproc)
        out[n++] = (struct agent_rlimit){RLIMIT_NPROC, (rlim_t)req->nproc};
    if (req->nofile)
        out[n++] = (struct agent_rlimit){RLIMIT_NOFILE, (rlim_t)req->nofile};
    if (req->fsize)
        out[n++] = (struct agent_rlimit){RLIMIT_FSIZE, (rlim_t)req->fsize};
    return n;
}

/* Everything but the execve; 0, or the step that failed (enum agent_start_step) with errno. */
static int child_prepare(const struct agent_request *r, int in_r, int out_w, int err_w,
                         int report_w)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* A session of its own: terminal signals of the agent do not reach it and vice versa. */
    setsid();
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        return AGENT_START_SETUP;
    /* report_w is close-on-exec: it closes by itself when execve succeeds. Every other
     * descriptor is closed here so nothing of the agent's leaks into the command; before
     * RLIMIT_NOFILE is lowered, which would lower the bound of close()'s fallback loop. */
    agent_close_from(3, report_w);
    struct agent_rlimit lim[AGENT_MAX_RLIMITS];
    size_t nlim = agent_command_rlimits(r, lim);
    for (size_t i = 0; i < nlim; i++) {
        struct rlimit l = {lim[i].value, lim[i].value};
        if (setrlimit(lim[i].resource, &l) < 0)
            return AGENT_START_SETUP;
    }
    if (setgid(r->gid) < 0 || setuid(r->uid) < 0)
        return AGENT_START_SETUP;
    /* Losing root must be irreversible before any command byte runs. */
    if (setuid(0) == 0 || getuid() != r->uid || geteuid() != r->uid)
        return AGENT_START_SETUP;
    if (r->cwd && chdir(r->cwd) < 0)
        return AGENT_START_CWD;
    return 0;
}

/* Runs in the vfork child, in the supervisor's memory until execve: no allocation, no writes
 * to anything but its own stack and descriptors, and errno (shared with the parent, which reads
 * it after the vfork only when the vfork itself failed). What it changes (signal mask, session,
 * rlimits, credentials, cwd, descriptors, seccomp) belongs to the child process alone: vfork
 * shares the address space, not the signal handlers, files, fs or credentials. Every system call
 * here is on the command's path, and in a new gVisor process each costs up to tens of
 * microseconds: what can be done once per supervisor (signal dispositions, RLIMIT_CORE,
 * supplementary groups, the seccomp filter) is done in supervisor_init instead. */
__attribute__((noreturn)) static void child_setup(const struct agent_request *r, char **env,
                                                  int in_r, int out_w, int err_w, int report_w)
{
    struct agent_start_failure f = {child_prepare(r, in_r, out_w, err_w, report_w), 0};
    if (f.step == 0) {
        execvpe(r->argv[0], r->argv, env);
        f.step = AGENT_START_EXEC;
    }
    f.error = errno;
    (void)!write(report_w, &f, sizeof(f));
    _exit(127);
}

/* vfork: no copy of the supervisor's address space, which under gVisor is about half the cost
 * of starting a command. A function of its own, so that nothing the parent uses after it lives
 * in a register the child could clobber. */
__attribute__((noinline)) pid_t agent_command_spawn(const struct agent_request *req, char **env,
                                                    const int fds[CMD_NFDS])
{
    pid_t pid = vfork();
    if (pid == 0) {
        close(fds[CMD_IN_W]);
        close(fds[CMD_OUT_R]);
        close(fds[CMD_ERR_R]);
        close(fds[CMD_REP_R]);
        child_setup(req, env, fds[CMD_IN_R], fds[CMD_OUT_W], fds[CMD_ERR_W], fds[CMD_REP_W]);
    }
    return pid;
}
