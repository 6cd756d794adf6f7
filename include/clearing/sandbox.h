/* Sandboxes: one container each, created with hardening the caller cannot weaken by accident.
 *
 * Every sandbox runs under gVisor (runsc), with no network, all capabilities dropped but the three
 * the agent needs to switch to the unprivileged sandbox user, no-new-privileges, a read-only root
 * filesystem, a size-limited noexec /tmp, a size- and inode-limited /workspace, memory without
 * extra swap, a CPU quota and a process limit. Running under another runtime needs an explicit
 * operator setting (insecure_runtime), is logged as a warning and is recorded on the sandbox. */
#ifndef CLEARING_SANDBOX_H
#define CLEARING_SANDBOX_H

#include <time.h>

#include "cleanup.h"
#include "common.h"
#include "engine.h"
#include "gitws.h"
#include "limits.h"

#define CLR_DEFAULT_IMAGE "clearing/default:latest"
#define CLR_SANDBOX_ID_MAX 40
#define CLR_LABEL_PREFIX "io.clearing."

/* Tenants: who a daemon's sandboxes belong to. A name is 1-63 of [a-z0-9_-]; sandboxes made
 * without one (the command line, the daemon's operator, old daemons) are the default tenant's. */
#define CLR_TENANT_MAX 63
#define CLR_TENANT_DEFAULT "default"

struct clr_sandbox_info;

typedef struct clr_sandbox_options {
    const char *image;            /* NULL: CLR_DEFAULT_IMAGE */
    clr_limits limits;
    /* NULL: runsc, verified against the engine. Anything else weakens isolation and must be an
     * explicit operator choice ("runc"). */
    const char *insecure_runtime;
    /* A host directory whose contents are copied into the new workspace (not written back). */
    const char *workspace_from;
    const char *const *env;       /* "KEY=VALUE" entries, NULL-terminated; may be NULL */
    const char *agent_path;       /* NULL: $CLEARING_AGENT, else the build tree's or the
                                   * installed agent (clearing/agent.h) */
    const char *state_dir;        /* NULL: $CLEARING_STATE_DIR, else the configured one */
    /* Who manages the sandbox: NULL means "cli" (gc and expiry only); a daemon puts its own
     * identity here so that after a restart it adopts or removes exactly its own sandboxes. */
    const char *owner;
    /* The tenant the sandbox belongs to (NULL: CLR_TENANT_DEFAULT): recorded as a label, so a
     * restarted daemon that adopts it from the engine keeps it the tenant's. */
    const char *tenant;
    /* A git repository on the host: the sandbox gets a branch of its own (branch, default
     * clearing/<id>; reuse_branch continues an existing one) created at base_ref (default HEAD),
     * and /workspace holds that commit's files (no .git). Exclusive with workspace_from. */
    const char *repo_path;
    /* What clr_repo_admit() found at repo_path (then repo_path is its canonical path, used as
     * it is); NULL for a local caller naming its own repository (resolved with realpath). */
    const clr_git_repo_id *repo_id;
    const char *base_ref;
    const char *branch;
    bool reuse_branch;
    const char *protect_ref; /* a ref the branch may not be (the gauntlet's); see gitws.h */
    /* How far the lifetime may later be extended, in seconds from creation (0: not at all).
     * Recorded as the max-expires-at label, which is what gc goes by. */
    uint32_t max_lifetime_s;
    /* A snapshot's directory (clr_snapshot_verify()ed by the caller; include/clearing/snapshot.h):
     * the container starts from its checkpoint instead of booting, its processes and memory as
     * they were (a fork). The caller sets workspace_from to its workspace copy. */
    const char *snapshot_dir;
    /* A restore in place (issue #22): the sandbox info describes (its id and its labels as they
     * are: lifetime, tenant, owner, limits, image, repository and branch) is made again from
     * snapshot_dir, under the same id. The caller removed its container and workspace first;
     * a failed start leaves nothing (and never discards the sandbox's branch). */
    const struct clr_sandbox_info *in_place;
} clr_sandbox_options;

#define CLR_SANDBOX_OPTIONS_INIT {.limits = CLR_LIMITS_INIT}

/* What the engine's labels say about a sandbox: enough to rebuild the picture of every sandbox
 * from the engine alone. */
typedef struct clr_sandbox_info {
    char id[CLR_SANDBOX_ID_MAX + 1];
    char container_id[65];
    char state[32];        /* the engine's: created, running, exited, dead, ... */
    char image[256];
    char runtime[32];
    bool insecure;         /* created with a weakening operator setting */
    int64_t created_at;    /* unix seconds */
    int64_t expires_at;
    int64_t max_expires_at; /* extensions never go past this; gc removes after it */
    char owner[128];
    char tenant[CLR_TENANT_MAX + 1]; /* CLR_TENANT_DEFAULT when its labels name none */
    char repo[1024];       /* "" when the sandbox has no repository */
    char branch[256];
    char base_commit[41];
    clr_git_repo_id repo_id; /* its git directory when created; zero: not recorded */
    clr_limits limits;
} clr_sandbox_info;

typedef struct clr_sandbox clr_sandbox;

/* Creates and starts a sandbox; it returns once the engine reports the container started, with
 * the agent as its PID 1 (each exec starts its own supervisor, so there is no further readiness
 * to wait for). Fails closed: when runsc is not
 * registered with the engine, when a limit is out of range, when the workspace cannot be made.
 * Nothing is left behind on failure. *out is owned by the caller (clr_sandbox_free); the sandbox
 * itself lives until clr_sandbox_destroy() or its expiry. */
CLR_PUBLIC int clr_sandbox_create(clr_sandbox **out, clr_engine *eng,
                                  const clr_sandbox_options *opts, clr_error *err);

/* Finds a live sandbox by id. CLR_E_NOT_FOUND if there is none. */
CLR_PUBLIC int clr_sandbox_open(clr_sandbox **out, clr_engine *eng, const char *id,
                                clr_error *err);

/* The same, for sandboxes whose workspaces live under another state directory than the default. */
CLR_PUBLIC int clr_sandbox_open_at(clr_sandbox **out, clr_engine *eng, const char *id,
                                   const char *state_dir, clr_error *err);

CLR_PUBLIC const clr_sandbox_info *clr_sandbox_get_info(const clr_sandbox *sb);
CLR_PUBLIC const char *clr_sandbox_workspace(const clr_sandbox *sb);
CLR_PUBLIC const char *const *clr_sandbox_env(const clr_sandbox *sb);
CLR_PUBLIC void clr_sandbox_free(clr_sandbox *sb);
/* A scope-owned handle: `_cleanup_sandbox_ clr_sandbox *sb = NULL;` is freed on every return
 * path (clr_sandbox_free); steal_pointer (&sb) hands it on. */
CLR_DEFINE_CLEANUP(clr_sandbox *, clr_sandbox_free)
#define _cleanup_sandbox_ __attribute__((cleanup(clr_sandbox_freep)))

/* Kills and removes the sandbox's container (no grace period) and its workspace. Idempotent:
 * destroying a sandbox that is already gone succeeds. A container the engine is removing
 * already (409 "already in progress") is waited for, up to 30 s, until it is gone: success
 * too. reason is logged ("client", "expired", "gc", "orphan"). */
CLR_PUBLIC int clr_sandbox_destroy(clr_engine *eng, const char *id, const char *reason,
                                   const char *state_dir, clr_error *err);

/* Lists every sandbox the engine knows (all states). *out is an array of *count entries owned by
 * the caller (free()). */
CLR_PUBLIC int clr_sandbox_list(clr_sandbox_info **out, size_t *count, clr_engine *eng,
                                clr_error *err);

typedef struct clr_gc_report {
    unsigned expired;     /* live sandboxes past their expiry, removed */
    unsigned broken;      /* containers of ours that are not running (failed starts, dead) */
    unsigned workspaces;  /* workspaces whose container is gone */
    unsigned failed;      /* removals that failed (see the log) */
} clr_gc_report;

/* Removes expired sandboxes, broken containers of ours and orphaned workspaces. now: unix
 * seconds (0: the current time). */
CLR_PUBLIC int clr_sandbox_gc(clr_gc_report *report, clr_engine *eng, const char *state_dir,
                              int64_t now, clr_error *err);

/* Records one removal before gc makes it: the sandbox (id "" for a container whose labels are
 * unreadable; its container_id is always set) and why ("expired", "orphan"). 0: recorded, go on;
 * -1 with err: not recorded, so it is not removed. */
typedef int (*clr_gc_record_fn)(void *ctx, const clr_sandbox_info *sandbox, const char *why,
                                clr_error *err);

/* clr_sandbox_gc with a record of every container removal written first (an audit log): when
 * record fails, that container and everything after it are kept, and gc returns -1 with the
 * record's error (what was removed before is in *report). record NULL: as clr_sandbox_gc. */
CLR_PUBLIC int clr_sandbox_gc_recorded(clr_gc_report *report, clr_engine *eng,
                                       const char *state_dir, int64_t now,
                                       clr_gc_record_fn record, void *ctx, clr_error *err);

/* ---- pure helpers, exposed for tests and tools ---- */

/* Labels for a sandbox (a JSON object of strings), and the inverse. */
CLR_PUBLIC json_t *clr_sandbox_labels(const clr_sandbox_info *info);
CLR_PUBLIC int clr_sandbox_info_from_labels(clr_sandbox_info *info, json_t *labels,
                                            clr_error *err);
/* A sandbox id is "sb-" and 16 lower-case hex digits. */
CLR_PUBLIC bool clr_sandbox_id_valid(const char *id);
/* A tenant (or token) name: 1-CLR_TENANT_MAX characters of [a-z0-9_-]. */
CLR_PUBLIC bool clr_tenant_name_valid(const char *name);

#endif
