/* clearing-agent: the helper that runs inside every sandbox. */
#ifndef CLR_AGENT_H
#define CLR_AGENT_H

#include <limits.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

struct agent_request {
    char **argv; /* NULL-terminated */
    size_t argc;
    char **envp; /* NULL-terminated */
    size_t envc;
    char *cwd;
    uint64_t timeout_ms;
    uint64_t stdout_cap;
    uint64_t stderr_cap;
    uid_t uid;
    gid_t gid;
    uint64_t nproc;   /* 0: leave as is */
    uint64_t memory;  /* bytes the command's process tree may hold; 0: unlimited */
    uint64_t memory_source; /* enum clr_memory_source */
    uint64_t nofile;  /* 0: leave as is */
    uint64_t fsize;   /* 0: leave as is */
};

/* Closes every descriptor from low up, but keep (-1: none). One close_range() call where the
 * kernel (or gVisor) has it: a close() per descriptor costs about 2 µs in gVisor, 2 ms for the
 * 1024 a loop must try. The upper bound is INT_MAX, not ~0u as in Linux's manual: gVisor takes
 * the bound as a signed int and answers EINVAL to ~0u, which silently sent every command's start
 * down the loop. */
static inline void agent_close_from(int low, int keep)
{
    if (keep >= low) {
        if (keep > low && syscall(SYS_close_range, (unsigned)low, (unsigned)keep - 1, 0) != 0)
            for (int fd = low; fd < keep; fd++)
                close(fd);
        low = keep + 1;
    }
    if (syscall(SYS_close_range, (unsigned)low, (unsigned)INT_MAX, 0) != 0) {
        struct rlimit l;
        int top = getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < 1u << 20 ? (int)l.rlim_cur
                                                                              : 1024;
        for (int fd = low; fd < top; fd++)
            close(fd);
    }
}

/* CLOCK_MONOTONIC in nanoseconds: the agent's one clock for deadlines and wall times. */
static inline uint64_t agent_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Decodes an EXEC payload. Returns 0, or -1 with a message in err. */
int agent_request_parse(struct agent_request *req, const uint8_t *payload, size_t len,
                        char *err, size_t errlen);
void agent_request_clear(struct agent_request *req);

/* Runs one command from the request frames on in_fd, writing frames to out_fd; returns when
 * the command and every process it started are gone and the result frame is written. */
int agent_supervise(int in_fd, int out_fd);

/* Runs commands one after another from the frames on fd, each as agent_supervise() runs one,
 * until the stream ends: the live channel's supervisors are kept and reused, so a command's
 * start does not wait for a fork. Every process of one command is gone before the next EXEC is
 * read. */
int agent_supervise_many(int fd);

/* PID 1: reaps orphans, and serves commands over the container's attached stdio (the live
 * channel) until SIGTERM; with no host on stdin it only reaps. */
int agent_serve(void);

#endif
