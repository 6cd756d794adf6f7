/* Coverage builds only: the agent's line counters, out of its sandbox.
 *
 * In a build configured with -Db_coverage=true (meson defines CLR_COVERAGE), the daemon mounts a
 * host directory of the sandbox's own at AGENT_COVERAGE_DIR when CLEARING_COVERAGE_DIR is set
 * (lib/coverage.h). The agent then points libgcov there (GCOV_PREFIX, GCOV_PREFIX_STRIP=0, set in
 * its own environment with setenv: not in the container's, which /proc/PID/environ shows and
 * every command inherits) and, since gVisor sandboxes are killed rather than stopped, dumps its
 * counters after each command. The two variables are the agent's, never a user command's.
 *
 * In every other build agent/coverage.c is not compiled and the calls are no-ops. */
#ifndef CLR_AGENT_COVERAGE_H
#define CLR_AGENT_COVERAGE_H

#include <stdbool.h>

/* Where the daemon mounts the directory (CLR_COVERAGE_TARGET in lib/coverage.h: the same). */
#define AGENT_COVERAGE_DIR "/clearing-coverage"

#ifdef CLR_COVERAGE
/* At start: when AGENT_COVERAGE_DIR is a directory (the daemon's mount), sets GCOV_PREFIX and
 * GCOV_PREFIX_STRIP=0 in this process's environment, inherited by the supervisors it forks. */
void agent_coverage_init(void);
/* True when the environment entry kv ("NAME=value") is one of the coverage variables that a
 * command's environment must not inherit from the agent's. */
bool agent_coverage_env(const char *kv);
/* Writes this process's counters (merged into the files under GCOV_PREFIX) and zeroes them, so
 * the next dump adds only what ran since. Does nothing when GCOV_PREFIX is unset: without the
 * mount the build paths are not writable in the sandbox. */
void agent_coverage_flush(void);
#else
static inline void agent_coverage_init(void)
{
}
static inline bool agent_coverage_env(const char *kv)
{
    (void)kv;
    return false;
}
static inline void agent_coverage_flush(void)
{
}
#endif

#endif
