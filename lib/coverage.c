/* Coverage builds only (lib/meson.build compiles this file when -Db_coverage=true): the mount
 * through which the agent's counters leave each sandbox. The contract is in coverage.h. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clearing/log.h"
#include "coverage.h"

int clr_coverage_spec(json_t *spec, const char *sandbox_id, clr_error *err)
{
    const char *dir = getenv("CLEARING_COVERAGE_DIR");
    if (!dir || !*dir)
        return 0;
    static atomic_bool announced;
    if (!atomic_exchange(&announced, true))
        clr_log(CLR_LOG_WARN, "coverage.collecting", "dir", dir, "detail",
                "coverage build: every sandbox gets a writable host mount for the agent's "
                "counters; for measuring tests only, never for untrusted code",
                NULL);
    if (dir[0] != '/')
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "CLEARING_COVERAGE_DIR '%.200s' is not an absolute path: give the "
                             "directory for the agent's coverage counters as /path",
                             dir);
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, sandbox_id) >= sizeof(path))
        return clr_error_set(err, CLR_E_INVALID, 0, "CLEARING_COVERAGE_DIR is too long");
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot make %s for the agent's coverage counters: %s "
                             "(CLEARING_COVERAGE_DIR must name an existing directory)",
                             path, strerror(errno));
    json_t *mounts = json_object_get(json_object_get(spec, "HostConfig"), "Mounts");
    if (!json_is_array(mounts))
        return clr_error_set(err, CLR_E_INTERNAL, 0, "container spec without HostConfig.Mounts");
    if (json_array_append_new(mounts, json_pack("{s:s, s:s, s:s, s:b}", "Type", "bind",
                                                "Source", path, "Target", CLR_COVERAGE_TARGET,
                                                "ReadOnly", 0)) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return 0;
}
