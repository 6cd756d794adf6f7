/* Sandbox labels: the engine's copy of everything we know about a sandbox, so that listing,
 * gc and a restarted daemon can rebuild the picture from the engine alone. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clearing/sandbox.h"

#define L(name) CLR_LABEL_PREFIX name

static void set_u64(json_t *o, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    json_object_set_new(o, key, json_string(buf));
}

json_t *clr_sandbox_labels(const clr_sandbox_info *info)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    const clr_limits *l = &info->limits;
    json_object_set_new(o, L("managed-by"), json_string("clearing"));
    json_object_set_new(o, L("sandbox-id"), json_string(info->id));
    json_object_set_new(o, L("image"), json_string(info->image));
    json_object_set_new(o, L("runtime"), json_string(info->runtime));
    json_object_set_new(o, L("insecure"), json_string(info->insecure ? "true" : "false"));
    set_u64(o, L("created-at"), (uint64_t)info->created_at);
    set_u64(o, L("expires-at"), (uint64_t)info->expires_at);
    set_u64(o, L("max-expires-at"), (uint64_t)(info->max_expires_at > info->expires_at
                                                    ? info->max_expires_at
                                                    : info->expires_at));
    json_object_set_new(o, L("owner"), json_string(info->owner[0] ? info->owner : "cli"));
    json_object_set_new(o, L("tenant"),
                        json_string(info->tenant[0] ? info->tenant : CLR_TENANT_DEFAULT));
    if (info->repo[0]) {
        json_object_set_new(o, L("repo"), json_string(info->repo));
        json_object_set_new(o, L("branch"), json_string(info->branch));
        json_object_set_new(o, L("base"), json_string(info->base_commit));
        if (info->repo_id.ino) {
            char id[48];
            snprintf(id, sizeof(id), "%" PRIu64 ":%" PRIu64, info->repo_id.dev,
                     info->repo_id.ino);
            json_object_set_new(o, L("repo-id"), json_string(id));
        }
    }
    set_u64(o, L("limits.cpu-millis"), l->cpu_millis);
    set_u64(o, L("limits.memory"), l->memory_bytes);
    set_u64(o, L("limits.pids"), l->pids);
    set_u64(o, L("limits.lifetime"), l->lifetime_s);
    set_u64(o, L("limits.tmp"), l->tmp_bytes);
    set_u64(o, L("limits.workspace"), l->workspace_bytes);
    set_u64(o, L("limits.workspace-inodes"), l->workspace_inodes);
    set_u64(o, L("limits.nofile"), l->nofile);
    set_u64(o, L("limits.fsize"), l->fsize_bytes);
    return o;
}

bool clr_sandbox_id_valid(const char *id)
{
    if (!id || strncmp(id, "sb-", 3) != 0 || strlen(id) != 19)
        return false;
    for (const char *p = id + 3; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    }
    return true;
}

bool clr_tenant_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CLR_TENANT_MAX)
        return false;
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    }
    return true;
}

static int get_str(json_t *labels, const char *key, char *out, size_t len, clr_error *err)
{
    const char *v = json_string_value(json_object_get(labels, key));
    if (!v)
        return clr_error_set(err, CLR_E_INVALID, 0, "label %s is missing", key);
    if (strlen(v) >= len)
        return clr_error_set(err, CLR_E_INVALID, 0, "label %s is too long", key);
    strcpy(out, v);
    return 0;
}

static int get_u64(json_t *labels, const char *key, uint64_t max, uint64_t *out, clr_error *err)
{
    const char *v = json_string_value(json_object_get(labels, key));
    if (!v)
        return clr_error_set(err, CLR_E_INVALID, 0, "label %s is missing", key);
    if (clr_parse_uint(out, v, err) < 0)
        return clr_error_prefix(err, "label %s", key);
    if (*out > max)
        return clr_error_set(err, CLR_E_INVALID, ERANGE, "label %s: %s is too large", key, v);
    return 0;
}

/* "DEV:INO" of the repository's git directory (optional: older sandboxes have none). */
static int parse_repo_id(json_t *labels, clr_git_repo_id *id, clr_error *err)
{
    char v[48];
    if (get_str(labels, L("repo-id"), v, sizeof(v), err) < 0)
        return -1;
    char *colon = strchr(v, ':');
    if (colon)
        *colon = '\0';
    if (!colon || clr_parse_uint(&id->dev, v, NULL) < 0 ||
        clr_parse_uint(&id->ino, colon + 1, NULL) < 0 || !id->ino)
        return clr_error_set(err, CLR_E_INVALID, 0, "label %s is not DEV:INO", L("repo-id"));
    return 0;
}

int clr_sandbox_info_from_labels(clr_sandbox_info *info, json_t *labels, clr_error *err)
{
    uint64_t v;
    char managed[32];
    char insecure[8];
    memset(info, 0, sizeof(*info));
    if (!json_is_object(labels))
        return clr_error_set(err, CLR_E_INVALID, 0, "no labels");
    if (get_str(labels, L("managed-by"), managed, sizeof(managed), err) < 0)
        return -1;
    if (strcmp(managed, "clearing") != 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "not managed by clearing");
    if (get_str(labels, L("sandbox-id"), info->id, sizeof(info->id), err) < 0 ||
        get_str(labels, L("image"), info->image, sizeof(info->image), err) < 0 ||
        get_str(labels, L("runtime"), info->runtime, sizeof(info->runtime), err) < 0 ||
        get_str(labels, L("insecure"), insecure, sizeof(insecure), err) < 0)
        return -1;
    if (!clr_sandbox_id_valid(info->id))
        return clr_error_set(err, CLR_E_INVALID, 0, "label sandbox-id '%s' is malformed",
                             info->id);
    if (strcmp(insecure, "true") != 0 && strcmp(insecure, "false") != 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "label insecure must be true or false");
    info->insecure = strcmp(insecure, "true") == 0;
    clr_limits *l = &info->limits;
    const uint64_t i64max = INT64_MAX;
#define GET(key, max, dst)                                                                        \
    do {                                                                                          \
        if (get_u64(labels, L(key), (max), &v, err) < 0)                                          \
            return -1;                                                                            \
        dst = v;                                                                                  \
    } while (0)
    GET("created-at", i64max, info->created_at);
    GET("expires-at", i64max, info->expires_at);
    /* Optional (older sandboxes): owner and max-expires-at. */
    if (json_object_get(labels, L("max-expires-at")))
        GET("max-expires-at", i64max, info->max_expires_at);
    if (info->max_expires_at < info->expires_at)
        info->max_expires_at = info->expires_at;
    if (json_object_get(labels, L("owner"))) {
        if (get_str(labels, L("owner"), info->owner, sizeof(info->owner), err) < 0)
            return -1;
    } else {
        snprintf(info->owner, sizeof(info->owner), "cli");
    }
    /* Optional (older sandboxes, made before tenants): the default tenant's. A malformed one
     * is refused rather than read as another tenant's. */
    if (json_object_get(labels, L("tenant"))) {
        if (get_str(labels, L("tenant"), info->tenant, sizeof(info->tenant), err) < 0)
            return -1;
        if (!clr_tenant_name_valid(info->tenant))
            return clr_error_set(err, CLR_E_INVALID, 0, "label %s is not a tenant name",
                                 L("tenant"));
    } else {
        snprintf(info->tenant, sizeof(info->tenant), CLR_TENANT_DEFAULT);
    }
    if (json_object_get(labels, L("repo")) &&
        (get_str(labels, L("repo"), info->repo, sizeof(info->repo), err) < 0 ||
         get_str(labels, L("branch"), info->branch, sizeof(info->branch), err) < 0 ||
         get_str(labels, L("base"), info->base_commit, sizeof(info->base_commit), err) < 0))
        return -1;
    if (json_object_get(labels, L("repo-id")) && parse_repo_id(labels, &info->repo_id, err) < 0)
        return -1;
    GET("limits.cpu-millis", UINT32_MAX, l->cpu_millis);
    GET("limits.memory", UINT64_MAX, l->memory_bytes);
    GET("limits.pids", UINT32_MAX, l->pids);
    GET("limits.lifetime", UINT32_MAX, l->lifetime_s);
    GET("limits.tmp", UINT64_MAX, l->tmp_bytes);
    GET("limits.workspace", UINT64_MAX, l->workspace_bytes);
    GET("limits.workspace-inodes", UINT64_MAX, l->workspace_inodes);
    GET("limits.nofile", UINT32_MAX, l->nofile);
    GET("limits.fsize", UINT64_MAX, l->fsize_bytes);
#undef GET
    return 0;
}
