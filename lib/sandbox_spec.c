/* Sandbox policy: options -> record -> container spec, with no I/O. See sandbox_spec.h. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "internal.h"
#include "sandbox_spec.h"

int clr_sandbox_spec_runtime(const clr_sandbox_options *opts, const char **runtime,
                             bool *insecure, clr_error *err)
{
    bool weak = opts->insecure_runtime && *opts->insecure_runtime;
    const char *rt = weak ? opts->insecure_runtime : "runsc";
    if (weak && strcmp(rt, "runsc") == 0)
        weak = false;
    if (weak && strcmp(rt, "runc") != 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "insecure runtime '%s' is not supported: the only alternative to "
                             "runsc is runc", rt);
    *runtime = rt;
    *insecure = weak;
    return 0;
}

int clr_sandbox_spec_check_image(const char *image, clr_error *err)
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
    return 0;
}

static int check_env(const char *const *env, clr_error *err)
{
    for (; env && *env; env++) {
        if (!strchr(*env, '=') || (*env)[0] == '=')
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "environment entry '%s' is not KEY=VALUE", *env);
    }
    return 0;
}

int clr_sandbox_spec_resolve(clr_sandbox_info *info, const clr_sandbox_options *opts,
                             const char *id, int64_t now, clr_error *err)
{
    memset(info, 0, sizeof(*info));
    if (clr_limits_validate(&opts->limits, err) < 0)
        return -1;
    const char *image = opts->image && *opts->image ? opts->image : CLR_DEFAULT_IMAGE;
    if (strlen(image) >= sizeof(info->image))
        return clr_error_set(err, CLR_E_INVALID, 0, "image name too long");
    const char *runtime = NULL;
    bool insecure = false;
    if (clr_sandbox_spec_runtime(opts, &runtime, &insecure, err) < 0 ||
        clr_sandbox_spec_check_image(image, err) < 0 || check_env(opts->env, err) < 0)
        return -1;
    if (opts->repo_path && opts->workspace_from)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "give a repository or a directory to copy, not both");
    snprintf(info->id, sizeof(info->id), "%s", id);
    snprintf(info->image, sizeof(info->image), "%s", image);
    snprintf(info->runtime, sizeof(info->runtime), "%s", runtime);
    info->insecure = insecure;
    info->limits = opts->limits;
    info->created_at = now;
    info->expires_at = now + opts->limits.lifetime_s;
    info->max_expires_at = now + (opts->max_lifetime_s > opts->limits.lifetime_s
                                      ? opts->max_lifetime_s
                                      : opts->limits.lifetime_s);
    snprintf(info->owner, sizeof(info->owner), "%s",
             opts->owner && *opts->owner ? opts->owner : "cli");
    snprintf(info->tenant, sizeof(info->tenant), "%s",
             opts->tenant && *opts->tenant ? opts->tenant : CLR_TENANT_DEFAULT);
    return 0;
}

uint64_t clr_sandbox_spec_pids_backstop(uint32_t pids)
{
    return CLR_PIDS_BACKSTOP_BASE + (uint64_t)pids * CLR_PIDS_BACKSTOP_PER_PROC;
}

static json_t *string_array(const char *const *v)
{
    _cleanup_json_ json_t *a = json_array();
    for (; a && v && *v; v++) {
        if (json_array_append_new(a, json_string(*v)) < 0)
            return NULL;
    }
    return steal_pointer(&a);
}

/* HostConfig: the runtime, the limits and everything taken away. */
static json_t *host_config(const clr_sandbox_info *info, const char *agent, const char *workspace)
{
    const clr_limits *l = &info->limits;
    char tmpfs_opts[128];
    snprintf(tmpfs_opts, sizeof(tmpfs_opts), "rw,nosuid,nodev,noexec,size=%" PRIu64 ",mode=1777",
             l->tmp_bytes);
    _cleanup_json_ json_t *host = json_pack(
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
        "PidsLimit", (json_int_t)clr_sandbox_spec_pids_backstop(l->pids),
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
    if (!host || json_object_set_new(host, "Mounts", mounts) < 0)
        return NULL;
    return steal_pointer(&host);
}

json_t *clr_sandbox_spec_build(const clr_sandbox_info *info, const char *agent,
                               const char *workspace, const char *const *env)
{
    _cleanup_json_ json_t *spec = json_pack("{s:s, s:[s], s:[s], s:s, s:s, s:b, s:b, s:b, s:b,"
                                            " s:b, s:b, s:b, s:s, s:i}",
                                            "Image", info->image,
                                            "Entrypoint", CLR_AGENT_TARGET,
                                            "Cmd", "init",
                                            "User", "0:0",
                                            "WorkingDir", "/workspace",
                                            "NetworkDisabled", 1,
                                            /* stdin stays open for the live channel
                                             * (agent/live.c). */
                                            "OpenStdin", 1,
                                            "StdinOnce", 0,
                                            "AttachStdin", 1,
                                            "AttachStdout", 1,
                                            "AttachStderr", 1,
                                            "Tty", 0,
                                            "StopSignal", "SIGTERM",
                                            "StopTimeout", 1);
    if (!spec || json_object_set_new(spec, "Env", string_array(env)) < 0 ||
        json_object_set_new(spec, "Labels", clr_sandbox_labels(info)) < 0 ||
        json_object_set_new(spec, "HostConfig", host_config(info, agent, workspace)) < 0)
        return NULL;
    return steal_pointer(&spec);
}
