/* Coverage builds only (agent/meson.build compiles this file when -Db_coverage=true): the
 * agent's counters dumped onto the mount the daemon made. The contract is in coverage.h. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coverage.h"

/* libgcov's (GCC >= 11), linked in by --coverage. */
void __gcov_dump(void);
void __gcov_reset(void);

void agent_coverage_init(void)
{
    struct stat st;
    if (stat(AGENT_COVERAGE_DIR, &st) < 0 || !S_ISDIR(st.st_mode))
        return;
    /* The counters keep their build paths under the mount: scripts/coverage.sh maps them back. */
    setenv("GCOV_PREFIX", AGENT_COVERAGE_DIR, 1);
    setenv("GCOV_PREFIX_STRIP", "0", 1);
}

bool agent_coverage_env(const char *kv)
{
    return strncmp(kv, "GCOV_PREFIX=", strlen("GCOV_PREFIX=")) == 0 ||
           strncmp(kv, "GCOV_PREFIX_STRIP=", strlen("GCOV_PREFIX_STRIP=")) == 0;
}

void agent_coverage_flush(void)
{
    const char *prefix = getenv("GCOV_PREFIX");
    if (!prefix || !*prefix)
        return;
    __gcov_dump();
    __gcov_reset();
}
