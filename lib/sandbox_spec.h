/* Sandbox policy: what a sandbox is, as pure functions of its options (lib/sandbox_spec.c).
 *
 * This module owns the container spec, the body of the engine's POST /containers/create: every
 * hardening option of a sandbox is set here and nowhere else, so no caller can leave one out.
 * Nothing here does I/O (no engine, no files, no clock, no randomness): the lifecycle
 * (lib/sandbox.c) gives the id and the time, checks the engine and makes the workspace; this
 * turns options into the record and the record into the spec, and refuses bad options before
 * anything is made. tests/unit/test_sandbox.c checks its values. */
#ifndef CLR_SANDBOX_SPEC_H
#define CLR_SANDBOX_SPEC_H

#include "clearing/sandbox.h"

/* runsc counts its own threads in the pids cgroup (about 8 per guest process), so the cgroup
 * limit is only a generous backstop: 256 + 8 x pids. The real limit is RLIMIT_NPROC, which the
 * agent sets for every command inside the sandbox. */
#define CLR_PIDS_BACKSTOP_BASE 256
#define CLR_PIDS_BACKSTOP_PER_PROC 8

/* The runtime a sandbox runs under: "runsc" unless the operator set insecure_runtime to "runc"
 * (an explicit "runsc" there is no weakening). Refused with CLR_E_INVALID: any other runtime. */
int clr_sandbox_spec_runtime(const clr_sandbox_options *opts, const char **runtime,
                             bool *insecure, clr_error *err);

/* Whether image only holds the characters of a Docker image reference: its name goes into the
 * request line of the engine's API, so a '?', '#', space or line break would change the
 * request. 0, or -1 with CLR_E_INVALID naming the image. */
int clr_sandbox_spec_check_image(const char *image, clr_error *err);

/* Checks the options as a create would, before anything is made (limits, image, runtime,
 * environment entries, repository and copy source not both), and fills *info from them: id (as
 * given), image, runtime, insecure, limits, created_at = now, expires_at, max_expires_at, owner
 * and tenant. The state, container id and repository fields are left empty. 0, or -1 with err
 * (CLR_E_INVALID: it names the bad value). */
int clr_sandbox_spec_resolve(clr_sandbox_info *info, const clr_sandbox_options *opts,
                             const char *id, int64_t now, clr_error *err);

/* The pids cgroup limit for a sandbox whose commands may have pids processes. */
uint64_t clr_sandbox_spec_pids_backstop(uint32_t pids);

/* The create body for the sandbox *info describes (as clr_sandbox_spec_resolve fills it): the
 * agent binary at agent is mounted read-only as its PID 1, the host directory workspace at
 * /workspace, env ("KEY=VALUE", NULL-terminated, may be NULL) is its environment. New reference
 * (json_decref), NULL when out of memory. */
json_t *clr_sandbox_spec_build(const clr_sandbox_info *info, const char *agent,
                               const char *workspace, const char *const *env);

#endif
