/* Sandbox lifecycle: create, open, list, destroy, gc.
 *
 * The container spec is built by lib/sandbox_spec.c and nowhere else, so no caller can leave out
 * a hardening option: the only knobs are the validated limits, the image, and the explicit,
 * logged insecure_runtime override. This file does the I/O around it: the engine's checks, the
 * workspace, the container's create and start, and undoing them when a step fails. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "clr-config.h"
#include "internal.h"
#include "clearing/snapshot.h"
#include "clearing/agent.h"
#include "clearing/cleanup_json.h"
#include "coverage.h"
#include "clearing/gitws.h"
#include "sandbox_spec.h"

struct clr_sandbox {
    clr_sandbox_info info;
    char workspace[4096];
    char **env; /* NULL-terminated */
};

const clr_sandbox_info *clr_sandbox_get_info(const clr_sandbox *sb)
{
    return &sb->info;
}

const char *clr_sandbox_workspace(const clr_sandbox *sb)
{
    return sb->workspace;
}

const char *const *clr_sandbox_env(const clr_sandbox *sb)
{
    return (const char *const *)sb->env;
}

void clr_sandbox_free(clr_sandbox *sb)
{
    if (!sb)
        return;
    for (char **e = sb->env; e && *e; e++)
        free(*e);
    free(sb->env);
    free(sb);
}

uint64_t clr_exec_memory_cap(uint64_t sandbox_memory)
{
    /* gVisor's own memory (about 40 MB for an idle sandbox here) is charged to the same cgroup
     * but does not show in the sandbox's /proc/meminfo, so the reserve must cover it. */
    uint64_t reserve = sandbox_memory / 8;
    if (reserve < 48 * CLR_MIB)
        reserve = 48 * CLR_MIB;
    if (reserve > sandbox_memory / 2)
        reserve = sandbox_memory / 2;
    return sandbox_memory - reserve;
}

static int new_id(char *out, size_t len, clr_error *err)
{
    uint8_t r[8];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return clr_error_set(err, CLR_E_INTERNAL, errno, "getrandom: %s", strerror(errno));
    snprintf(out, len, "sb-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
    return 0;
}

static int check_runtime(clr_engine *eng, const char *runtime, bool insecure, clr_error *err)
{
    bool have = false;
    if (clr_engine_has_runtime(eng, runtime, &have, err) < 0)
        return clr_error_prefix(err, "checking the engine's runtimes");
    if (have)
        return 0;
    char where[256];
    clr_engine_describe(eng, where, sizeof(where));
    if (!insecure)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the gVisor runtime 'runsc' is not registered with the engine "
                             "(%s), so no sandbox can run: install and register it with "
                             "scripts/setup.sh (it adds runsc to /etc/docker/daemon.json). "
                             "clearing never falls back to a weaker runtime by itself.",
                             where);
    return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                         "runtime '%s' is not registered with the Docker engine", runtime);
}

/* The image as the engine has it (its name was checked by clr_sandbox_spec_check_image). An
 * image that declares a VOLUME is refused: Docker would give the container an anonymous volume
 * there, writable host disk under /var/lib/docker that no workspace_size, no cleanup and no
 * audit of ours covers. */
static int check_image(clr_engine *eng, const char *image, clr_error *err)
{
    _cleanup_json_ json_t *resp = NULL;
    if (clr_engine_image_inspect(eng, image, &resp, err) < 0) {
        if (err->code == CLR_E_NOT_FOUND)
            return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                                 "image %s is not present in the Docker engine: build it with "
                                 "images/build.sh (scripts/setup.sh does)",
                                 image);
        return clr_error_prefix(err, "inspecting image %s", image);
    }
    json_t *volumes = json_object_get(json_object_get(resp, "Config"), "Volumes");
    if (json_is_object(volumes) && json_object_size(volumes) > 0) {
        const char *first = json_object_iter_key(json_object_iter(volumes));
        return clr_error_set(err, CLR_E_DENIED, 0,
                             "image %s declares VOLUME %.200s: Docker would give the sandbox an "
                             "anonymous volume there, host disk outside every limit; build the "
                             "image without VOLUME",
                             image, first ? first : "?");
    }
    return 0;
}

static int copy_env(clr_sandbox *sb, const char *const *env, clr_error *err)
{
    size_t n = 0;
    while (env && env[n])
        n++;
    sb->env = calloc(n + 1, sizeof(char *));
    if (!sb->env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        sb->env[i] = strdup(env[i]);
        if (!sb->env[i])
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    return 0;
}

/* A new sandbox record: its id, the options checked and resolved (clr_sandbox_spec_resolve),
 * its environment and its workspace's path. Nothing is made yet. *out: clr_sandbox_free().
 * Not inlined: inlined, GCC 12 takes *out for possibly NULL in the caller after a success
 * (-Wnull-dereference). */
__attribute__((noinline)) static int sandbox_new(clr_sandbox **out,
                                                 const clr_sandbox_options *opts,
                                                 const char *state_dir, clr_error *err)
{
    _cleanup_sandbox_ clr_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    char id[CLR_SANDBOX_ID_MAX + 1];
    if (opts->in_place) {
        /* The same sandbox again: its labels as they were, nothing of the old container's. */
        sb->info = *opts->in_place;
        sb->info.container_id[0] = '\0';
        snprintf(sb->info.state, sizeof(sb->info.state), "created");
        snprintf(id, sizeof(id), "%s", sb->info.id);
        if (copy_env(sb, opts->env, err) < 0)
            return -1;
    } else if (new_id(id, sizeof(id), err) < 0 ||
               clr_sandbox_spec_resolve(&sb->info, opts, id, time(NULL), err) < 0 ||
               copy_env(sb, opts->env, err) < 0) {
        return -1;
    }
    clr_workspace_path(sb->workspace, sizeof(sb->workspace), state_dir, id);
    *out = steal_pointer(&sb);
    return 0;
}

/* The sandbox's branch of opts->repo_path, its files in the (new, empty) workspace. */
static int prepare_repo(clr_sandbox *sb, const clr_sandbox_options *opts, clr_error *err)
{
    clr_sandbox_info *info = &sb->info;
    clr_git_prepare_options go = CLR_GIT_PREPARE_OPTIONS_INIT;
    clr_git_workspace gw;
    char real[4096];
    if (opts->repo_id) {
        /* Admitted: already canonical, and open_repo checks it still leads there. */
        snprintf(real, sizeof(real), "%s", opts->repo_path);
    } else if (!realpath(opts->repo_path, real)) {
        int e = errno;
        return clr_error_set(err, CLR_E_NOT_FOUND, e, "repository %s: %s", opts->repo_path,
                             strerror(e));
    }
    if (strlen(real) >= sizeof(info->repo))
        return clr_error_set(err, CLR_E_INVALID, 0, "repository path too long");
    go.repo_path = real;
    go.expect_id = opts->repo_id;
    go.base_ref = opts->base_ref;
    go.branch = opts->branch;
    go.sandbox_id = info->id;
    go.reuse_branch = opts->reuse_branch;
    go.protect_ref = opts->protect_ref;
    go.workspace_dir = sb->workspace;
    go.uid = CLR_SANDBOX_UID;
    go.gid = CLR_SANDBOX_GID;
    if (clr_git_prepare(&gw, &go, err) < 0)
        return -1;
    memcpy(info->repo, real, strlen(real) + 1); /* length checked above */
    snprintf(info->branch, sizeof(info->branch), "%s", gw.branch);
    snprintf(info->base_commit, sizeof(info->base_commit), "%s", gw.base_commit);
    info->repo_id = gw.repo_id;
    return 0;
}

/* The workspace, with the repository's files or a copy of workspace_from in it. Nothing is left
 * behind on failure. */
static int make_workspace(clr_sandbox *sb, const clr_sandbox_options *opts, const char *state_dir,
                          clr_error *err)
{
    const char *id = sb->info.id;
    if (clr_workspace_create(state_dir, id, &sb->info.limits, opts->workspace_from, err) < 0)
        return -1;
    /* A fork's copy has the snapshot's 0600/0700: the modes its manifest recorded come back. */
    char ws[4096];
    if (opts->snapshot_dir && opts->workspace_from &&
        (clr_workspace_path(ws, sizeof(ws), state_dir, id) < 0
             ? clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG, "state directory path too long")
             : clr_snapshot_apply_modes(opts->snapshot_dir, ws, err)) < 0) {
        clr_workspace_remove(state_dir, id, NULL);
        return clr_error_prefix(err, "the fork's workspace");
    }
    /* The branch and the files first: a sandbox never starts on a half-made workspace. */
    if (opts->repo_path && prepare_repo(sb, opts, err) < 0) {
        clr_workspace_remove(state_dir, id, NULL);
        return -1;
    }
    return 0;
}

/* A sandbox that never started gives back the branch it made (a new one only: a reused branch
 * holds someone's work), if nobody moved it meanwhile (clr_git_branch_discard's compare). */
static void discard_new_branch(const clr_sandbox *sb, const clr_sandbox_options *opts)
{
    const clr_sandbox_info *info = &sb->info;
    /* A sandbox restored in place keeps its branch: it is the sandbox's, made long before. */
    if (!info->repo[0] || opts->reuse_branch || opts->in_place)
        return;
    clr_error berr = CLR_ERROR_INIT;
    if (clr_git_branch_discard(info->repo, &info->repo_id, info->branch, info->base_commit,
                               &berr) < 0)
        clr_log(CLR_LOG_WARN, "sandbox.branch_kept", "id", info->id, "branch", info->branch,
                "error", berr.message, NULL);
}

/* POST /containers/create with the spec (clr_sandbox_spec_build); sets the container id. */
static int create_container(clr_engine *eng, clr_sandbox *sb, const char *agent,
                            const char *const *env, clr_error *err)
{
    clr_sandbox_info *info = &sb->info;
    char name[64];
    snprintf(name, sizeof(name), CLR_CONTAINER_PREFIX "%s", info->id);
    _cleanup_json_ json_t *spec = clr_sandbox_spec_build(info, agent, sb->workspace, env);
    if (!spec)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (clr_coverage_spec(spec, info->id, err) < 0) /* coverage builds only */
        return -1;
    if (clr_engine_container_create(eng, name, spec, info->container_id,
                                    sizeof(info->container_id), err) < 0) {
        if (err->code == CLR_E_NOT_FOUND)
            clr_error_set(err, CLR_E_NOT_FOUND, 0,
                          "image %s is not present in the Docker engine: build it with "
                          "images/build.sh (scripts/setup.sh does)",
                          info->image);
        return -1;
    }
    return 0;
}

/* The snapshot's checkpoint copied where the engine reads it, and the container started from
 * it; the copy goes once the sandbox runs (the engine has read it). */
static int start_from_snapshot(clr_engine *eng, const char *cid, const char *snapshot_dir,
                               clr_error *err)
{
    char dir[4096];
    if (clr_engine_checkpoint_dir(eng, cid, CLR_SNAPSHOT_CHECKPOINT, dir, sizeof(dir), err) < 0 ||
        clr_snapshot_copy_checkpoint(snapshot_dir, dir, err) < 0 ||
        clr_engine_container_start_checkpoint(eng, cid, CLR_SNAPSHOT_CHECKPOINT, err) < 0)
        return -1;
    clr_error ignored = CLR_ERROR_INIT;
    clr_engine_checkpoint_delete(eng, cid, CLR_SNAPSHOT_CHECKPOINT, &ignored);
    return 0;
}

/* Starts the created container; when the engine does not, the sandbox is destroyed. */
static int start_container(clr_engine *eng, clr_sandbox *sb, const char *state_dir,
                           const char *snapshot_dir, clr_error *err)
{
    clr_sandbox_info *info = &sb->info;
    if ((snapshot_dir ? start_from_snapshot(eng, info->container_id, snapshot_dir, err)
                      : clr_engine_container_start(eng, info->container_id, err)) < 0) {
        clr_error local = CLR_ERROR_INIT;
        clr_error_prefix(err, "starting sandbox %s", info->id);
        clr_sandbox_destroy(eng, info->id, "failed-start", state_dir, &local);
        return -1;
    }
    snprintf(info->state, sizeof(info->state), "running");
    return 0;
}

int clr_sandbox_check_in_place(clr_engine *eng, const clr_sandbox_options *opts, clr_error *err)
{
    const clr_sandbox_info *info = opts->in_place;
    char agent[4096];
    if (!info)
        return clr_error_set(err, CLR_E_INVALID, 0, "no sandbox to replace");
    if (check_runtime(eng, info->runtime, info->insecure, err) < 0 ||
        check_image(eng, info->image, err) < 0 ||
        clr_agent_locate(agent, sizeof(agent), opts->agent_path, NULL, err) < 0)
        return -1;
    return 0;
}

int clr_sandbox_create(clr_sandbox **out, clr_engine *eng, const clr_sandbox_options *opts,
                       clr_error *err)
{
    const char *state_dir = clr_state_dir(opts->state_dir);
    _cleanup_sandbox_ clr_sandbox *sb = NULL;
    if (sandbox_new(&sb, opts, state_dir, err) < 0)
        return -1;
    const clr_sandbox_info *info = &sb->info;
    char agent[4096];
    if (check_runtime(eng, info->runtime, info->insecure, err) < 0 ||
        check_image(eng, info->image, err) < 0 ||
        clr_agent_locate(agent, sizeof(agent), opts->agent_path, NULL, err) < 0)
        return -1;
    if (info->insecure)
        clr_log(CLR_LOG_WARN, "sandbox.insecure_runtime", "id", info->id, "runtime",
                info->runtime, "detail",
                "isolation weakened by operator setting: not running under gVisor", NULL);
    if (make_workspace(sb, opts, state_dir, err) < 0)
        return -1;
    if (create_container(eng, sb, agent, opts->env, err) < 0) {
        clr_workspace_remove(state_dir, info->id, NULL);
        discard_new_branch(sb, opts);
        return -1;
    }
    if (start_container(eng, sb, state_dir, opts->snapshot_dir, err) < 0) {
        discard_new_branch(sb, opts);
        return -1;
    }
    char expires[32];
    snprintf(expires, sizeof(expires), "%" PRId64, info->expires_at);
    clr_log(CLR_LOG_INFO, "sandbox.created", "id", info->id, "runtime", info->runtime, "image",
            info->image, "expires_at", expires, NULL);
    *out = steal_pointer(&sb);
    return 0;
}

static int inspect(clr_engine *eng, const char *id, json_t **out, clr_error *err)
{
    char name[64];
    snprintf(name, sizeof(name), CLR_CONTAINER_PREFIX "%s", id);
    if (clr_engine_container_inspect(eng, name, out, err) == 0)
        return 0;
    if (err->code == CLR_E_NOT_FOUND)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id);
    return -1;
}

int clr_sandbox_open(clr_sandbox **out, clr_engine *eng, const char *id, clr_error *err)
{
    return clr_sandbox_open_at(out, eng, id, NULL, err);
}

int clr_sandbox_open_at(clr_sandbox **out, clr_engine *eng, const char *id, const char *state_dir,
                        clr_error *err)
{
    if (!clr_sandbox_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a sandbox id (expected sb- and 16 hex digits)", id);
    _cleanup_json_ json_t *j = NULL;
    if (inspect(eng, id, &j, err) < 0)
        return -1;
    _cleanup_sandbox_ clr_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    json_t *labels = json_object_get(json_object_get(j, "Config"), "Labels");
    if (clr_sandbox_info_from_labels(&sb->info, labels, err) < 0)
        return clr_error_prefix(err, "container of sandbox %s has bad labels", id);
    if (strcmp(sb->info.id, id) != 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0, "container name and labels disagree on %s",
                             id);
    const char *cid = json_string_value(json_object_get(j, "Id"));
    const char *state = json_string_value(json_object_get(json_object_get(j, "State"), "Status"));
    snprintf(sb->info.container_id, sizeof(sb->info.container_id), "%s", cid ? cid : "");
    snprintf(sb->info.state, sizeof(sb->info.state), "%s", state ? state : "unknown");
    sb->env = calloc(1, sizeof(char *));
    if (!sb->env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_workspace_path(sb->workspace, sizeof(sb->workspace), state_dir, id);
    *out = steal_pointer(&sb);
    return 0;
}

/* How long a destroy waits for a removal that is someone else's (the engine answered 409
 * "removal ... is already in progress"): as long as its own DELETE may take (the engine's
 * default request deadline). */
#define REMOVAL_WAIT_MS 30000
#define REMOVAL_POLL_MS 200

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Removes the container by name. When the engine is removing it already (a DELETE of ours that
 * timed out goes on in the engine; another daemon's, or gc's), that is not a failure: the
 * container is looked at until it is gone (inspect answers 404), for REMOVAL_WAIT_MS at most;
 * then asked once more, and that answer stands. */
static int remove_or_await(clr_engine *eng, const char *name, clr_error *err)
{
    clr_error rerr = CLR_ERROR_INIT;
    if (clr_engine_container_remove(eng, name, &rerr) == 0)
        return 0;
    if (rerr.code != CLR_E_CONFLICT || !strstr(rerr.message, "already in progress")) {
        *err = rerr;
        return -1;
    }
    clr_log(CLR_LOG_INFO, "sandbox.removal_in_progress", "container", name, "detail",
            "the engine is removing it already: waiting for it to be gone", NULL);
    for (uint64_t until = mono_ms() + REMOVAL_WAIT_MS; mono_ms() < until;) {
        clr_error ierr = CLR_ERROR_INIT;
        _cleanup_json_ json_t *j = NULL;
        if (clr_engine_container_inspect(eng, name, &j, &ierr) < 0 && ierr.code == CLR_E_NOT_FOUND)
            return 0;
        struct timespec ts = {0, REMOVAL_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    return clr_engine_container_remove(eng, name, err);
}

int clr_sandbox_destroy(clr_engine *eng, const char *id, const char *reason,
                        const char *state_dir, clr_error *err)
{
    if (!clr_sandbox_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a sandbox id (expected sb- and 16 hex digits)", id);
    char name[64];
    snprintf(name, sizeof(name), CLR_CONTAINER_PREFIX "%s", id);
    /* runsc cannot kill a paused sandbox (the engine waits 10 s, then reports a "zombie"):
     * thaw it first. */
    _cleanup_json_ json_t *j = NULL;
    clr_error ierr = CLR_ERROR_INIT;
    bool existed = clr_engine_container_inspect(eng, name, &j, &ierr) == 0 ||
                   ierr.code != CLR_E_NOT_FOUND;
    if (json_is_true(json_object_get(json_object_get(j, "State"), "Paused")))
        clr_engine_container_pause(eng, name, false, &ierr);
    /* The removal kills (SIGKILL) and removes in one call: no grace period to wait out. */
    if (remove_or_await(eng, name, err) < 0)
        return -1;
    if (clr_workspace_remove(state_dir, id, err) < 0)
        return -1;
    clr_log(CLR_LOG_INFO, "sandbox.destroyed", "id", id, "reason", reason ? reason : "client",
            "existed", existed ? "true" : "false", NULL);
    return 0;
}

int clr_sandbox_list(clr_sandbox_info **out, size_t *count, clr_engine *eng, clr_error *err)
{
    _cleanup_json_ json_t *j = NULL;
    if (clr_engine_container_list(eng, CLR_LABEL_PREFIX "managed-by=clearing", &j, err) < 0)
        return -1;
    size_t n = json_array_size(j);
    clr_sandbox_info *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(j, i);
        clr_error lerr = CLR_ERROR_INIT;
        clr_sandbox_info *info = &v[m];
        if (clr_sandbox_info_from_labels(info, json_object_get(c, "Labels"), &lerr) < 0) {
            /* Labelled as ours but unreadable: still listed (as broken) so gc can remove it. */
            memset(info, 0, sizeof(*info));
            snprintf(info->state, sizeof(info->state), "broken");
        } else {
            const char *state = json_string_value(json_object_get(c, "State"));
            snprintf(info->state, sizeof(info->state), "%s", state ? state : "unknown");
        }
        const char *cid = json_string_value(json_object_get(c, "Id"));
        snprintf(info->container_id, sizeof(info->container_id), "%s", cid ? cid : "");
        m++;
    }
    *out = v;
    *count = m;
    return 0;
}

/* Containers in a state other than running that were created this recently may be in the middle
 * of another process's create: gc leaves them alone. */
#define GC_START_GRACE_S 60

static int remove_container(clr_engine *eng, const char *cid, clr_error *err)
{
    return clr_engine_container_remove(eng, cid, err);
}

int clr_sandbox_gc(clr_gc_report *report, clr_engine *eng, const char *state_dir, int64_t now,
                   clr_error *err)
{
    return clr_sandbox_gc_recorded(report, eng, state_dir, now, NULL, NULL, err);
}

/* Why gc removes a sandbox of the list ("expired", "orphan"), or NULL when it stays. */
static const char *gc_reason(const clr_sandbox_info *s, int64_t now)
{
    if (strcmp(s->state, "broken") == 0)
        return "orphan";
    if (strcmp(s->state, "running") != 0 && s->created_at + GC_START_GRACE_S <= now)
        return "orphan";
    if (strcmp(s->state, "running") == 0 && s->max_expires_at <= now)
        return "expired";
    return NULL;
}

/* Removes the containers of list that gc_reason names; a removed one's id is cleared (its
 * workspace went with it). -1 when record refused a record: that one and the rest are kept. */
static int gc_containers(clr_gc_report *report, clr_engine *eng, const char *state_dir,
                         int64_t now, clr_sandbox_info *list, size_t n, clr_gc_record_fn record,
                         void *ctx, clr_error *err)
{
    for (size_t i = 0; i < n; i++) {
        clr_sandbox_info *s = &list[i];
        const char *why = gc_reason(s, now);
        if (!why)
            continue;
        /* No record, no removal: the rest is kept too (the log will not take their records
         * either), for a later gc. */
        if (record && record(ctx, s, why, err) < 0)
            return -1;
        clr_error lerr = CLR_ERROR_INIT;
        int rc = s->id[0] ? clr_sandbox_destroy(eng, s->id, why, state_dir, &lerr)
                          : remove_container(eng, s->container_id, &lerr);
        if (rc < 0) {
            report->failed++;
            clr_log(CLR_LOG_WARN, "gc.remove_failed", "container", s->container_id, "error",
                    lerr.message, NULL);
            continue;
        }
        if (strcmp(why, "expired") == 0)
            report->expired++;
        else
            report->broken++;
        s->id[0] = '\0'; /* gone: its workspace is not an orphan below, it was removed */
    }
    return 0;
}

/* Removes the workspaces whose sandbox has no container in list (but young ones). */
static void gc_workspaces(clr_gc_report *report, const char *state_dir, int64_t now,
                          const clr_sandbox_info *list, size_t n)
{
    char wsdir[4096];
    snprintf(wsdir, sizeof(wsdir), "%s/workspaces", state_dir);
    _cleanup_closedir_ DIR *d = opendir(wsdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!clr_sandbox_id_valid(e->d_name))
            continue;
        bool live = false;
        for (size_t i = 0; i < n && !live; i++)
            live = strcmp(list[i].id, e->d_name) == 0;
        if (live)
            continue;
        /* A create in progress makes its workspace before its container: skip young ones. */
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            st.st_mtime + GC_START_GRACE_S > now)
            continue;
        clr_error lerr = CLR_ERROR_INIT;
        if (clr_workspace_remove(state_dir, e->d_name, &lerr) == 0) {
            report->workspaces++;
            clr_log(CLR_LOG_INFO, "gc.workspace_removed", "id", e->d_name, NULL);
        } else {
            report->failed++;
            clr_log(CLR_LOG_WARN, "gc.remove_failed", "workspace", e->d_name, "error",
                    lerr.message, NULL);
        }
    }
}

int clr_sandbox_gc_recorded(clr_gc_report *report, clr_engine *eng, const char *state_dir,
                            int64_t now, clr_gc_record_fn record, void *ctx, clr_error *err)
{
    memset(report, 0, sizeof(*report));
    if (now == 0)
        now = time(NULL);
    state_dir = clr_state_dir(state_dir);
    _cleanup_free_ clr_sandbox_info *list = NULL;
    size_t n = 0;
    if (clr_sandbox_list(&list, &n, eng, err) < 0 ||
        gc_containers(report, eng, state_dir, now, list, n, record, ctx, err) < 0)
        return -1;
    gc_workspaces(report, state_dir, now, list, n);
    return 0;
}
