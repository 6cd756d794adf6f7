/* A helper program run to completion within a deadline, its output captured (spawn.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clearing/spawn.h"

extern char **environ;

static long ms_left(const struct timespec *start, int timeout_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return timeout_ms - ((now.tv_sec - start->tv_sec) * 1000 +
                         (now.tv_nsec - start->tv_nsec) / 1000000);
}

/* Reads fd until end of file or the deadline into out (cut at len - 1); false at the deadline. */
static bool read_all(int fd, char *out, size_t len, const struct timespec *start, int timeout_ms)
{
    size_t n = 0;
    for (;;) {
        long left = ms_left(start, timeout_ms);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            out[n] = '\0';
            return r == 0 ? false : true;
        }
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof(buf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        size_t take = (size_t)got < len - 1 - n ? (size_t)got : len - 1 - n;
        memcpy(out + n, buf, take);
        n += take;
    }
    out[n] = '\0';
    return true;
}

/* Reaps pid: waits for it until the deadline, then kills it. Its status as spawn.h says. */
static int reap(pid_t pid, const struct timespec *start, int timeout_ms)
{
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return 128 + SIGKILL;
        if (r == 0 && ms_left(start, timeout_ms) <= 0) {
            kill(pid, SIGKILL); /* too slow: it goes */
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        if (r == 0)
            nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int clr_spawn_capture(char *const argv[], bool with_stderr, int timeout_ms, char *out,
                      size_t len, int *status, clr_error *err)
{
    int fds[2];
    out[0] = '\0';
    if (pipe2(fds, O_CLOEXEC) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    if (with_stderr)
        posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    else
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return clr_error_set(err, CLR_E_NOT_FOUND, rc, "running %s: %s", argv[0], strerror(rc));
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (!read_all(fds[0], out, len, &start, timeout_ms))
        kill(pid, SIGKILL); /* still writing, or holding its output open, at the deadline */
    close(fds[0]);
    *status = reap(pid, &start, timeout_ms);
    return 0;
}
