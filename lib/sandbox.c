/* Sandbox lifecycle: create, open, list, destroy, gc.
 *
 * The container spec is built here and nowhere else, so no caller can leave out a hardening
 * option: the only knobs are the validated limits, the image, and the explicit, logged
 * insecure_runtime override. */
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
#include "coverage.h"
#include "clearing/gitws.h"

#define PIDS_BACKSTOP_BASE 256
#define PIDS_BACKSTOP_PER_PROC 8

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

static const char *agent_path(const char *explicit_path)
{
    if (explicit_path && *explicit_path)
        return explicit_path;
    const char *e = getenv("CLEARING_AGENT");
    if (e && *e)
        return e;
    return CLR_AGENT_INSTALLED_PATH;
}

static int check_runtime(clr_engine *eng, const char *runtime, bool insecure, clr_error *err)
{
    bool have = false;
    if (clr_engine_has_runtime(eng, runtime, &have, err) < 0)
        return clr_error_prefix(err, "checking the engine's runtimes");
    if (have)
        return 0;
    if (!insecure)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the gVisor runtime 'runsc' is not registered with the Docker engine "
                             "at %s, so no sandbox can run: install and register it with "
                             "scripts/setup.sh (it adds runsc to /etc/docker/daemon.json). "
                             "clearing never falls back to a weaker runtime by itself.",
                             clr_engine_socket_path(eng));
    return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                         "runtime '%s' is not registered with the Docker engine", runtime);
}

/* The image as the engine has it. Its name goes into the request line of the engine's API, so
 * it may only hold the characters of a Docker image reference: a '?', '#', space or line break
 * from a client would otherwise change the request. An image that declares a VOLUME is refused:
 * Docker would give the container an anonymous volume there, writable host disk under
 * /var/lib/docker that no workspace_size, no cleanup and no audit of ours covers. */
static int check_image(clr_engine *eng, const char *image, clr_error *err)
{
    for (const char *c = image; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("._-/:@", *c)))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "image '%.255s' is not an image reference: only letters, digits "
                                 "and . _ - / : @ are allowed (e.g. clearing/default:latest)",
                                 image);
    }
    if (image[0] == '/' || strstr(image, ".."))
        return clr_error_set(err, CLR_E_INVALID, 0, "image '%.255s' is not an image reference",
                             image);
    char path[320];
    snprintf(path, sizeof(path), "/images/%s/json", image);
    json_t *resp = NULL;
    int st = clr_engine_call(eng, "GET", path, NULL, &resp, err);
    if (st == 404) {
        json_decref(resp);
        return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                             "image %s is not present in the Docker engine: build it with "
                             "images/build.sh (scripts/setup.sh does)",
                             image);
    }
    if (st != 200) {
        json_decref(resp);
        if (st > 0)
            clr_error_set(err, CLR_E_ENGINE, 0, "unexpected answer %d inspecting image %s", st,
                          image);
        return clr_error_prefix(err, "inspecting image %s", image);
    }
    json_t *volumes = json_object_get(json_object_get(resp, "Config"), "Volumes");
    if (json_is_object(volumes) && json_object_size(volumes) > 0) {
        const char *first = json_object_iter_key(json_object_iter(volumes));
        clr_error_set(err, CLR_E_DENIED, 0,
                      "image %s declares VOLUME %.200s: Docker would give the sandbox an "
                      "anonymous volume there, host disk outside every limit; build the image "
                      "without VOLUME",
                      image, first ? first : "?");
        json_decref(resp);
        return -1;
    }
    json_decref(resp);
    return 0;
}

static json_t *string_array(const char *const *v)
{
    json_t *a = json_array();
    for (; v && *v; v++)
        json_array_append_new(a, json_string(*v));
    return a;
}

static json_t *container_spec(const clr_sandbox_info *info, const char *agent,
                              const char *workspace, const char *const *env)
{
    const clr_limits *l = &info->limits;
    char tmpfs_opts[128];
    snprintf(tmpfs_opts, sizeof(tmpfs_opts), "rw,nosuid,nodev,noexec,size=%" PRIu64 ",mode=1777",
             l->tmp_bytes);
    /* runsc counts its own threads in the pids cgroup (about 8 per guest process), so the cgroup
     * limit is only a generous backstop; the real limit is RLIMIT_NPROC, which the agent sets
     * for every command inside the sandbox. */
    uint64_t pids_backstop = PIDS_BACKSTOP_BASE + (uint64_t)l->pids * PIDS_BACKSTOP_PER_PROC;

    json_t *host = json_pack(
        "{s:s, s:s, s:b, s:[s], s:[s,s,s], s:[s], s:I, s:I, s:I, s:I, s:{s:s}, s:{s:s},"
        " s:{s:s}, s:s, s:b}",
        "Runtime", info->runtime,
        "NetworkMode", "none",
        "ReadonlyRootfs", 1,
        "CapDrop", "ALL",
        /* Only what the agent needs to drop to the sandbox user and signal its processes. */
        "CapAdd", "CAP_SETUID", "CAP_SETGID", "CAP_KILL",
        "SecurityOpt", "no-new-privileges",
        "Memory", (json_int_t)l->memory_bytes,
        "MemorySwap", (json_int_t)l->memory_bytes,
        "NanoCpus", (json_int_t)l->cpu_millis * 1000000,
        "PidsLimit", (json_int_t)pids_backstop,
        "Tmpfs", "/tmp", tmpfs_opts,
        "RestartPolicy", "Name", "no",
        "LogConfig", "Type", "none",
        "IpcMode", "private",
        "Privileged", 0);
    json_t *mounts = json_pack("[{s:s, s:s, s:s, s:b}, {s:s, s:s, s:s, s:b}]",
                               "Type", "bind", "Source", agent, "Target", CLR_AGENT_TARGET,
                               "ReadOnly", 1,
                               "Type", "bind", "Source", workspace, "Target", "/workspace",
                               "ReadOnly", 0);
    json_object_set_new(host, "Mounts", mounts);
    json_t *spec = json_pack("{s:s, s:[s], s:[s], s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:b, s:b,"
                             " s:s, s:i}",
                             "Image", info->image,
                             "Entrypoint", CLR_AGENT_TARGET,
                             "Cmd", "init",
                             "User", "0:0",
                             "WorkingDir", "/workspace",
                             "NetworkDisabled", 1,
                             /* stdin stays open for the live channel (agent/live.c). */
                             "OpenStdin", 1,
                             "StdinOnce", 0,
                             "AttachStdin", 1,
                             "AttachStdout", 1,
                             "AttachStderr", 1,
                             "Tty", 0,
                             "StopSignal", "SIGTERM",
                             "StopTimeout", 1);
    json_object_set_new(spec, "Env", string_array(env));
    json_object_set_new(spec, "Labels", clr_sandbox_labels(info));
    json_object_set_new(spec, "HostConfig", host);
    return spec;
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
        if (!strchr(env[i], '=') || env[i][0] == '=')
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "environment entry '%s' is not KEY=VALUE", env[i]);
        sb->env[i] = strdup(env[i]);
        if (!sb->env[i])
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    return 0;
}

int clr_sandbox_create(clr_sandbox **out, clr_engine *eng, const clr_sandbox_options *opts,
                       clr_error *err)
{
    if (clr_limits_validate(&opts->limits, err) < 0)
        return -1;
    const char *image = opts->image && *opts->image ? opts->image : CLR_DEFAULT_IMAGE;
    if (strlen(image) >= sizeof(((clr_sandbox_info *)0)->image))
        return clr_error_set(err, CLR_E_INVALID, 0, "image name too long");
    bool insecure = opts->insecure_runtime && *opts->insecure_runtime;
    const char *runtime = insecure ? opts->insecure_runtime : "runsc";
    if (insecure && strcmp(runtime, "runsc") == 0)
        insecure = false;
    if (insecure && strcmp(runtime, "runc") != 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "insecure runtime '%s' is not supported: the only alternative to "
                             "runsc is runc", runtime);
    if (check_runtime(eng, runtime, insecure, err) < 0 || check_image(eng, image, err) < 0)
        return -1;
    const char *agent = agent_path(opts->agent_path);
    if (agent[0] != '/' || access(agent, X_OK) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "the in-sandbox agent %s is missing or not executable: install "
                             "clearing (meson install) or set CLEARING_AGENT to its path",
                             agent);

    _cleanup_free_ clr_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (copy_env(sb, opts->env, err) < 0) {
        clr_sandbox_free(steal_pointer(&sb));
        return -1;
    }
    clr_sandbox_info *info = &sb->info;
    if (new_id(info->id, sizeof(info->id), err) < 0) {
        clr_sandbox_free(steal_pointer(&sb));
        return -1;
    }
    snprintf(info->image, sizeof(info->image), "%s", image);
    snprintf(info->runtime, sizeof(info->runtime), "%s", runtime);
    info->insecure = insecure;
    info->limits = opts->limits;
    info->created_at = time(NULL);
    info->expires_at = info->created_at + opts->limits.lifetime_s;
    info->max_expires_at = info->created_at + (opts->max_lifetime_s > opts->limits.lifetime_s
                                                   ? opts->max_lifetime_s
                                                   : opts->limits.lifetime_s);
    snprintf(info->owner, sizeof(info->owner), "%s",
             opts->owner && *opts->owner ? opts->owner : "cli");
    snprintf(info->tenant, sizeof(info->tenant), "%s",
             opts->tenant && *opts->tenant ? opts->tenant : CLR_TENANT_DEFAULT);
    const char *state_dir = clr_state_dir(opts->state_dir);
    clr_workspace_path(sb->workspace, sizeof(sb->workspace), state_dir, info->id);

    if (insecure)
        clr_log(CLR_LOG_WARN, "sandbox.insecure_runtime", "id", info->id, "runtime", runtime,
                "detail", "isolation weakened by operator setting: not running under gVisor",
                NULL);

    if (opts->repo_path && opts->workspace_from) {
        clr_sandbox_free(steal_pointer(&sb));
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "give a repository or a directory to copy, not both");
    }
    if (clr_workspace_create(state_dir, info->id, &info->limits, opts->workspace_from, err) < 0) {
        clr_sandbox_free(steal_pointer(&sb));
        return -1;
    }
    if (opts->repo_path) {
        /* The branch and the files first: a sandbox never starts on a half-made workspace. */
        clr_git_prepare_options go = CLR_GIT_PREPARE_OPTIONS_INIT;
        clr_git_workspace gw;
        char real[4096];
        if (opts->repo_id) {
            /* Admitted: already canonical, and open_repo checks it still leads there. */
            snprintf(real, sizeof(real), "%s", opts->repo_path);
        } else if (!realpath(opts->repo_path, real)) {
            int e = errno;
            clr_workspace_remove(state_dir, info->id, NULL);
            clr_sandbox_free(steal_pointer(&sb));
            return clr_error_set(err, CLR_E_NOT_FOUND, e, "repository %s: %s", opts->repo_path,
                                 strerror(e));
        }
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
        if (strlen(real) >= sizeof(info->repo) || clr_git_prepare(&gw, &go, err) < 0) {
            if (strlen(real) >= sizeof(info->repo))
                clr_error_set(err, CLR_E_INVALID, 0, "repository path too long");
            clr_workspace_remove(state_dir, info->id, NULL);
            clr_sandbox_free(steal_pointer(&sb));
            return -1;
        }
        memcpy(info->repo, real, strlen(real) + 1); /* length checked above */
        snprintf(info->branch, sizeof(info->branch), "%s", gw.branch);
        snprintf(info->base_commit, sizeof(info->base_commit), "%s", gw.base_commit);
        info->repo_id = gw.repo_id;
    }

    char path[256];
    snprintf(path, sizeof(path), "/containers/create?name=" CLR_CONTAINER_PREFIX "%s", info->id);
    json_t *spec = container_spec(info, agent, sb->workspace, opts->env);
    json_t *resp = NULL;
    int st = clr_coverage_spec(spec, info->id, err) < 0 /* coverage builds only */
                 ? -1
                 : clr_engine_call(eng, "POST", path, spec, &resp, err);
    json_decref(spec);
    if (st != 201) {
        json_decref(resp);
        if (st == 404)
            clr_error_set(err, CLR_E_NOT_FOUND, 0,
                          "image %s is not present in the Docker engine: build it with "
                          "images/build.sh (scripts/setup.sh does)",
                          image);
        else if (st > 0 && st < 400)
            clr_error_set(err, CLR_E_ENGINE, 0, "unexpected answer %d creating container", st);
        clr_workspace_remove(state_dir, info->id, NULL);
        clr_sandbox_free(steal_pointer(&sb));
        return -1;
    }
    const char *cid = json_string_value(json_object_get(resp, "Id"));
    snprintf(info->container_id, sizeof(info->container_id), "%s", cid ? cid : "");
    json_decref(resp);

    snprintf(path, sizeof(path), "/containers/%s/start", info->container_id);
    st = clr_engine_call(eng, "POST", path, NULL, NULL, err);
    if (st != 204 && st != 304) {
        clr_error local = CLR_ERROR_INIT;
        if (st > 0 && st < 400)
            clr_error_set(err, CLR_E_ENGINE, 0, "unexpected answer %d starting container", st);
        clr_error_prefix(err, "starting sandbox %s", info->id);
        clr_sandbox_destroy(eng, info->id, "failed-start", state_dir, &local);
        clr_sandbox_free(steal_pointer(&sb));
        return -1;
    }
    snprintf(info->state, sizeof(info->state), "running");
    char created[32], expires[32];
    snprintf(created, sizeof(created), "%" PRId64, info->created_at);
    snprintf(expires, sizeof(expires), "%" PRId64, info->expires_at);
    clr_log(CLR_LOG_INFO, "sandbox.created", "id", info->id, "runtime", runtime, "image", image,
            "expires_at", expires, NULL);
    *out = steal_pointer(&sb);
    return 0;
}

static int inspect(clr_engine *eng, const char *id, json_t **out, clr_error *err)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/" CLR_CONTAINER_PREFIX "%s/json", id);
    int st = clr_engine_call(eng, "GET", path, NULL, out, err);
    if (st == 404)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id);
    if (st != 200)
        return -1;
    return 0;
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
    json_t *j = NULL;
    if (inspect(eng, id, &j, err) < 0) {
        json_decref(j);
        return -1;
    }
    _cleanup_free_ clr_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb) {
        json_decref(j);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    json_t *labels = json_object_get(json_object_get(j, "Config"), "Labels");
    if (clr_sandbox_info_from_labels(&sb->info, labels, err) < 0) {
        json_decref(j);
        return clr_error_prefix(err, "container of sandbox %s has bad labels", id);
    }
    if (strcmp(sb->info.id, id) != 0) {
        json_decref(j);
        return clr_error_set(err, CLR_E_CONFLICT, 0, "container name and labels disagree on %s",
                             id);
    }
    const char *cid = json_string_value(json_object_get(j, "Id"));
    const char *state = json_string_value(json_object_get(json_object_get(j, "State"), "Status"));
    snprintf(sb->info.container_id, sizeof(sb->info.container_id), "%s", cid ? cid : "");
    snprintf(sb->info.state, sizeof(sb->info.state), "%s", state ? state : "unknown");
    json_decref(j);
    sb->env = calloc(1, sizeof(char *));
    if (!sb->env)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_workspace_path(sb->workspace, sizeof(sb->workspace), state_dir, id);
    *out = steal_pointer(&sb);
    return 0;
}

int clr_sandbox_destroy(clr_engine *eng, const char *id, const char *reason,
                        const char *state_dir, clr_error *err)
{
    if (!clr_sandbox_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%s' is not a sandbox id (expected sb- and 16 hex digits)", id);
    char path[256];
    int st = 0;
    /* runsc cannot kill a paused sandbox (the engine waits 10 s, then reports a "zombie"):
     * thaw it first. */
    json_t *j = NULL;
    clr_error ierr = CLR_ERROR_INIT;
    snprintf(path, sizeof(path), "/containers/" CLR_CONTAINER_PREFIX "%s/json", id);
    if (clr_engine_call(eng, "GET", path, NULL, &j, &ierr) == 200 &&
        json_is_true(json_object_get(json_object_get(j, "State"), "Paused"))) {
        snprintf(path, sizeof(path), "/containers/" CLR_CONTAINER_PREFIX "%s/unpause", id);
        clr_engine_call(eng, "POST", path, NULL, NULL, &ierr);
    }
    json_decref(j);
    /* force=1 kills with SIGKILL and removes in one call: no grace period to wait out. */
    snprintf(path, sizeof(path), "/containers/" CLR_CONTAINER_PREFIX "%s?force=1&v=1", id);
    st = clr_engine_call(eng, "DELETE", path, NULL, NULL, err);
    if (st < 0 || (st >= 400 && st != 404))
        return -1;
    if (clr_workspace_remove(state_dir, id, err) < 0)
        return -1;
    clr_log(CLR_LOG_INFO, "sandbox.destroyed", "id", id, "reason", reason ? reason : "client",
            "existed", st == 404 ? "false" : "true", NULL);
    return 0;
}

static char *url_encode(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    char *p = o;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.')
            *p++ = (char)c;
        else
            p += sprintf(p, "%%%02X", c);
    }
    *p = '\0';
    return o;
}

int clr_sandbox_list(clr_sandbox_info **out, size_t *count, clr_engine *eng, clr_error *err)
{
    _cleanup_free_ char *filter =
        url_encode("{\"label\":[\"" CLR_LABEL_PREFIX "managed-by=clearing\"]}");
    if (!filter)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    char path[512];
    snprintf(path, sizeof(path), "/containers/json?all=1&filters=%s", filter);
    json_t *j = NULL;
    int st = clr_engine_call(eng, "GET", path, NULL, &j, err);
    if (st != 200 || !json_is_array(j)) {
        json_decref(j);
        return st == 200 ? clr_error_set(err, CLR_E_ENGINE, 0, "container list is not an array")
                         : -1;
    }
    size_t n = json_array_size(j);
    clr_sandbox_info *v = calloc(n ? n : 1, sizeof(*v));
    if (!v) {
        json_decref(j);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
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
    json_decref(j);
    *out = v;
    *count = m;
    return 0;
}

/* Containers in a state other than running that were created this recently may be in the middle
 * of another process's create: gc leaves them alone. */
#define GC_START_GRACE_S 60

static int remove_container(clr_engine *eng, const char *cid, clr_error *err)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1&v=1", cid);
    int st = clr_engine_call(eng, "DELETE", path, NULL, NULL, err);
    return (st == 204 || st == 404) ? 0 : -1;
}

int clr_sandbox_gc(clr_gc_report *report, clr_engine *eng, const char *state_dir, int64_t now,
                   clr_error *err)
{
    return clr_sandbox_gc_recorded(report, eng, state_dir, now, NULL, NULL, err);
}

int clr_sandbox_gc_recorded(clr_gc_report *report, clr_engine *eng, const char *state_dir,
                            int64_t now, clr_gc_record_fn record, void *ctx, clr_error *err)
{
    memset(report, 0, sizeof(*report));
    if (now == 0)
        now = time(NULL);
    state_dir = clr_state_dir(state_dir);
    clr_sandbox_info *list = NULL;
    size_t n = 0;
    if (clr_sandbox_list(&list, &n, eng, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        clr_sandbox_info *s = &list[i];
        const char *why = NULL;
        if (strcmp(s->state, "broken") == 0)
            why = "orphan";
        else if (strcmp(s->state, "running") != 0 && s->created_at + GC_START_GRACE_S <= now)
            why = "orphan";
        else if (strcmp(s->state, "running") == 0 && s->max_expires_at <= now)
            why = "expired";
        if (!why)
            continue;
        /* No record, no removal: the rest is kept too (the log will not take their records
         * either), for a later gc. */
        if (record && record(ctx, s, why, err) < 0) {
            free(list);
            return -1;
        }
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

    /* Workspaces whose sandbox no longer has a container. */
    char wsdir[4096];
    snprintf(wsdir, sizeof(wsdir), "%s/workspaces", state_dir);
    DIR *d = opendir(wsdir);
    if (d) {
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
        closedir(d);
    }
    free(list);
    return 0;
}
