/* What a unit test's process has spent, for bounds that hold on a loaded machine. */
#ifndef CLR_TEST_COST_H
#define CLR_TEST_COST_H

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>

/* What this process has spent: CPU time (all its threads, user and system) and the bytes it
 * moved through read and write calls (/proc/self/io). Unlike wall time, none of them grows when
 * other work loads the host, and all are exact: a bound on them neither fails on a busy machine
 * nor passes by rounding. */
struct cost {
    uint64_t cpu_ns;
    uint64_t rchar;
    uint64_t wchar;
};

static inline struct cost cost_now(void)
{
    struct cost c = {0};
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    c.cpu_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    FILE *f = fopen("/proc/self/io", "re");
    assert_non_null(f);
    char line[128];
    bool r = false, w = false;
    while (fgets(line, sizeof(line), f)) {
        r |= sscanf(line, "rchar: %" SCNu64, &c.rchar) == 1;
        w |= sscanf(line, "wchar: %" SCNu64, &c.wchar) == 1;
    }
    fclose(f);
    assert_true(r && w);
    return c;
}

#endif
