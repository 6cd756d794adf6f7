/* Library-internal declarations shared between modules. */
#ifndef CLR_INTERNAL_H
#define CLR_INTERNAL_H

#include "clearing/clearing.h"
#include "clearing/cleanup.h"

/* The uid/gid commands run as inside every sandbox. */
#define CLR_SANDBOX_UID 1000
#define CLR_SANDBOX_GID 1000
#define CLR_AGENT_TARGET "/opt/clearing/agent"
#define CLR_CONTAINER_PREFIX "clearing-"

/* Resolves the state directory: explicit, else $CLEARING_STATE_DIR, else the built-in one. */
const char *clr_state_dir(const char *explicit_dir);

/* Workspaces: <state_dir>/workspaces/<id>, a tmpfs of bounded size and inode count owned by
 * the sandbox user. */
int clr_workspace_path(char *out, size_t len, const char *state_dir, const char *id);
int clr_workspace_create(const char *state_dir, const char *id, const clr_limits *limits,
                         const char *copy_from, clr_error *err);
/* Unmounts and removes; succeeds when it is already gone. */
int clr_workspace_remove(const char *state_dir, const char *id, clr_error *err);

/* The bytes a command's process tree may hold, given the sandbox's memory limit: the rest is
 * kept for the agent and the gVisor kernel, so a memory bomb ends as an OOM result instead of
 * killing the sandbox. */
uint64_t clr_exec_memory_cap(uint64_t sandbox_memory);

#endif
