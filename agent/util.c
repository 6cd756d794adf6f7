/* Small helpers both halves of the agent use: see util.h. */
#include <limits.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* One close_range() call where the kernel (or gVisor) has it: a close() per descriptor costs
 * about 2 µs in gVisor, 2 ms for the 1024 a loop must try. The upper bound is INT_MAX, not ~0u
 * as in Linux's manual: gVisor takes the bound as a signed int and answers EINVAL to ~0u, which
 * silently sent every command's start down the loop. */
void agent_close_from(int low, int keep)
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

uint64_t agent_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void agent_die_oom(void)
{
    static const char msg[] = "clearing-agent: out of memory\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(3);
}
