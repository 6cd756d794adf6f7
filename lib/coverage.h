/* Coverage builds only: the agent's line counters, out of its sandboxes.
 *
 * The agent runs as PID 1 of a gVisor sandbox, so the .gcda files a coverage build of it writes
 * land inside the sandbox and are lost with it. In a build configured with -Db_coverage=true
 * (meson then defines CLR_COVERAGE) and with CLEARING_COVERAGE_DIR naming an existing absolute
 * host directory, every sandbox gets its own subdirectory of it (<dir>/<sandbox id>/)
 * bind-mounted read-write at CLR_COVERAGE_TARGET. The agent (agent/coverage.h) finds the mount,
 * points libgcov at it in its own environment (never the container's: /proc/PID/environ shows
 * that one and every command inherits it) and dumps its counters there after each command,
 * under their build paths; scripts/coverage.sh merges them into the build's own before gcovr
 * reads them.
 *
 * In every other build this module is not compiled and clr_coverage_spec() does nothing: a
 * writable host mount in every sandbox would weaken isolation. */
#ifndef CLR_COVERAGE_H
#define CLR_COVERAGE_H

#include <jansson.h>

#include "clearing/common.h"

#define CLR_COVERAGE_TARGET "/clearing-coverage"

#ifdef CLR_COVERAGE
/* Adds the counters' mount to a container spec (HostConfig.Mounts must be an array) for the
 * sandbox sandbox_id, making <CLEARING_COVERAGE_DIR>/<sandbox_id>/ (mode 0700:
 * the agent is root in the sandbox). Announces the collection once per process with a warning.
 * Returns 0 (also when CLEARING_COVERAGE_DIR is unset or empty: nothing added), or -1 with err set
 * when the directory is not absolute or cannot be made. The caller keeps owning spec. */
int clr_coverage_spec(json_t *spec, const char *sandbox_id, clr_error *err);
#else
static inline int clr_coverage_spec(json_t *spec, const char *sandbox_id, clr_error *err)
{
    (void)spec;
    (void)sandbox_id;
    (void)err;
    return 0;
}
#endif

#endif
