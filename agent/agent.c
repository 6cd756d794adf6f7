/* clearing-agent entry point.
 *
 *   clearing-agent init   PID 1 of a sandbox: reaps orphans, serves commands over the
 *                         container's attached stdio (live.c), exits at once on SIGTERM/SIGINT
 *                         (after killing every process), so destroying a sandbox never waits for
 *                         a grace period.
 *   clearing-agent exec   supervises one command: reads an EXEC request (and stdin frames) from
 *                         fd 0, writes output and the result as frames to fd 1.
 *
 * Linked statically against libc only; it must run in any image.
 */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "agent.h"
#include "coverage.h"

int main(int argc, char **argv)
{
    agent_coverage_init(); /* coverage builds only */
    if (argc < 2) {
        fprintf(stderr, "usage: clearing-agent init|exec\n");
        return 2;
    }
    if (strcmp(argv[1], "init") == 0)
        return agent_serve();
    if (strcmp(argv[1], "exec") == 0) {
        /* Nothing a command does may read this process's memory or descriptors. */
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        return agent_supervise(STDIN_FILENO, STDOUT_FILENO) == 0 ? 0 : 1;
    }
    fprintf(stderr, "clearing-agent: unknown mode '%s'\n", argv[1]);
    return 2;
}
