/* Coverage builds only: the agent's line counters, out of its sandbox.
 *
 * In a build configured with -Db_coverage=true (meson defines CLR_COVERAGE), the daemon mounts a
 * host directory into each sandbox and sets GCOV_PREFIX / GCOV_PREFIX_STRIP in its environment
 * when CLEARING_COVERAGE_DIR is set (lib/coverage.h). gVisor sandboxes are killed rather than
 * stopped, so nothing flushes the counters at exit: the agent dumps them after each command. The
 * two variables are the agent's, never a user command's.
 *
 * In every other build agent/coverage.c is not compiled and both calls are no-ops. */
#ifndef CLR_AGENT_COVERAGE_H
#define CLR_AGENT_COVERAGE_H

#include <stdbool.h>

#ifdef CLR_COVERAGE
/* True when the environment entry kv ("NAME=value") is one of the coverage variables that a
 * command's environment must not inherit from the agent's. */
bool agent_coverage_env(const char *kv);
/* Writes this process's counters (merged into the files under GCOV_PREFIX) and zeroes them, so
 * the next dump adds only what ran since. Does nothing when GCOV_PREFIX is unset: without the
 * mount the build paths are not writable in the sandbox. */
void agent_coverage_flush(void);
#else
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
