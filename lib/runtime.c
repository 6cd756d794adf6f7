/* The container runtime's identity: the version the engine's binary for a runtime reports, for
 * the record a signed verdict carries. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define VERSION_TIMEOUT_MS 10000

extern char **environ;

/* One runtime's answer, kept for the process's life: the binary does not change under a
 * running daemon without a dockerd restart, and asking costs a process start. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static char cache_path[PATH_MAX];
static char cache_version[128];

/* The first line "PATH --version" prints, within the timeout. */
static int ask_version(const char *path, char *out, size_t len, clr_error *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    char *argv[] = {(char *)path, (char *)"--version", NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return clr_error_set(err, CLR_E_NOT_FOUND, rc, "running %s --version: %s", path,
                             strerror(rc));
    }
    char buf[512];
    size_t n = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = VERSION_TIMEOUT_MS - ((now.tv_sec - start.tv_sec) * 1000 +
                                          (now.tv_nsec - start.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (left <= 0 || n == sizeof(buf) - 1 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t r = read(fds[0], buf + n, sizeof(buf) - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fds[0]);
    kill(pid, SIGKILL); /* done or too slow: either way it goes */
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0])
        return clr_error_set(err, CLR_E_INTERNAL, 0, "%s --version printed nothing", path);
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = '?';
    size_t l = strnlen(buf, len - 1);
    memcpy(out, buf, l);
    out[l] = '\0';
    return 0;
}

int clr_runtime_version(clr_engine *eng, const char *runtime, char *out, size_t len,
                        clr_error *err)
{
    char path[PATH_MAX];
    if (clr_engine_runtime_path(eng, runtime, path, sizeof(path), err) < 0)
        return -1;
    pthread_mutex_lock(&cache_lock);
    if (cache_version[0] && !strcmp(cache_path, path)) {
        snprintf(out, len, "%s", cache_version);
        pthread_mutex_unlock(&cache_lock);
        return 0;
    }
    pthread_mutex_unlock(&cache_lock);
    char v[sizeof(cache_version)];
    if (ask_version(path, v, sizeof(v), err) < 0)
        return -1;
    pthread_mutex_lock(&cache_lock);
    snprintf(cache_path, sizeof(cache_path), "%s", path);
    snprintf(cache_version, sizeof(cache_version), "%s", v);
    pthread_mutex_unlock(&cache_lock);
    snprintf(out, len, "%s", v);
    return 0;
}
