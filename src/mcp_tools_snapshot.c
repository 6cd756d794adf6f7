/* The MCP tools on snapshots (issue #22): snapshot_sandbox, list_snapshots, fork_sandbox,
 * restore_sandbox and delete_snapshot. Each is one REST call (docs/API.md, "Snapshots and
 * forks"); a fork is recorded in the session as create_sandbox's sandboxes are, so the
 * session's end destroys it unless kept. */
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools.h"
#include "mcp_tools_int.h"

/* args.snapshot_id checked (snap- and 16 hex digits, as the API's pattern): it, or NULL with
 * *fail saying where to take one. */
static const char *snapshot_id(const json_t *args, json_t **fail)
{
    const char *id = json_string_value(json_object_get(args, "snapshot_id"));
    bool ok = id && strlen(id) == 21 && strncmp(id, "snap-", 5) == 0 &&
              strspn(id + 5, "0123456789abcdef") == 16;
    if (!ok) {
        *fail = tool_error("snapshot_id '%.64s' is not a snapshot id (snap- and 16 hex digits): "
                           "take it from snapshot_sandbox's answer or from list_snapshots",
                           id ? id : "");
        return NULL;
    }
    return id;
}

json_t *tool_snapshot_sandbox(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    const char *sid = tool_sandbox_path(args, "/snapshots", path, sizeof(path), &fail);
    if (!sid)
        return fail;
    _cleanup_json_ json_t *req = json_object();
    const char *fields[] = {"keep", "ttl"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(args, fields[i]);
        if (v)
            json_object_set(req, fields[i], v);
    }
    mcp_call_progress(c, "taking the snapshot");
    json_t *snap = NULL;
    if (tool_call(c, "POST", path, req, &snap, NULL, &fail, "snapshot_sandbox") < 0)
        return fail;
    return tool_result(snap, false,
                       "snapshot %s of sandbox %s taken (%lld bytes, expires at %lld%s). "
                       "fork_sandbox makes a new sandbox from it; restore_sandbox takes this "
                       "sandbox back to it.",
                       json_string_value(json_object_get(snap, "id")), sid,
                       (long long)json_integer_value(json_object_get(snap, "size")),
                       (long long)json_integer_value(json_object_get(snap, "expires_at")),
                       json_is_true(json_object_get(snap, "keep")) ? ", kept after its sandbox"
                                                                   : "");
}

json_t *tool_list_snapshots(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    if (!tool_sandbox_path(args, "/snapshots", path, sizeof(path), &fail))
        return fail;
    json_t *ls = NULL;
    if (tool_call(c, "GET", path, NULL, &ls, NULL, &fail, "list_snapshots") < 0)
        return fail;
    _cleanup_free_ char *text = strdup("");
    size_t i;
    json_t *s;
    json_array_foreach (json_object_get(ls, "snapshots"), i, s) {
        char *t = NULL;
        /* held apart from kept: a restore's hold (docs/openapi.yaml) also keeps the snapshot
         * past its sandbox, whatever its keep says. */
        if (asprintf(&t, "%s%s %lld bytes, created %lld, expires %lld%s%s\n", text,
                     json_string_value(json_object_get(s, "id")),
                     (long long)json_integer_value(json_object_get(s, "size")),
                     (long long)json_integer_value(json_object_get(s, "created_at")),
                     (long long)json_integer_value(json_object_get(s, "expires_at")),
                     json_is_true(json_object_get(s, "keep")) ? ", kept" : "",
                     json_is_true(json_object_get(s, "held")) ? ", held by a restore" : "") >=
            0) {
            free(text);
            text = t;
        }
    }
    return tool_result(ls, false, "%s", text && *text ? text : "no snapshots\n");
}

json_t *tool_fork_sandbox(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    const char *snap = snapshot_id(args, &fail);
    if (!snap)
        return fail;
    bool keep = json_is_true(json_object_get(args, "keep"));
    _cleanup_json_ json_t *req =
        json_pack("{s:s, s:{s:s}}", "snapshot", snap, "metadata", "created_by", "mcp");
    json_t *limits = json_object_get(args, "limits");
    if (limits)
        json_object_set(req, "limits", limits);
    mcp_call_progress(c, "forking the snapshot");
    _cleanup_json_ json_t *sb = NULL;
    if (tool_call(c, "POST", "/v1/sandboxes", req, &sb, NULL, &fail, "fork_sandbox") < 0)
        return fail;
    const char *id = json_string_value(json_object_get(sb, "id"));
    if (!id)
        return tool_error("fork_sandbox: the daemon's answer has no sandbox id");
    /* Recorded at once, as a created sandbox: the session's end destroys it unless kept. */
    mcp_sandboxes_add(c->boxes, id, keep);
    mcp_call_log(c, 1, "sandbox %s forked from %s%s", id, snap,
                 keep ? " (kept after the session)" : "");
    json_object_set_new(sb, "kept", json_boolean(keep));
    return tool_result(json_incref(sb), false,
                       "sandbox %s is running, forked from snapshot %s (its processes, memory, "
                       "/tmp and /workspace as they were); %s. Use its id with exec, read_file, "
                       "write_file.",
                       id, snap,
                       keep ? "it is kept after this session ends"
                            : "it is destroyed when this session ends (keep: true keeps one)");
}

json_t *tool_restore_sandbox(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    const char *sid = tool_sandbox_path(args, "/restore", path, sizeof(path), &fail);
    const char *snap = sid ? snapshot_id(args, &fail) : NULL;
    if (!snap)
        return fail;
    _cleanup_json_ json_t *req = json_pack("{s:s}", "snapshot", snap);
    mcp_call_progress(c, "restoring the snapshot");
    json_t *sb = NULL;
    if (tool_call(c, "POST", path, req, &sb, NULL, &fail, "restore_sandbox") < 0)
        return fail;
    return tool_result(sb ? sb : json_pack("{s:s}", "id", sid), false,
                       "sandbox %s is back in the state of snapshot %s (same id; what it did "
                       "since is undone)",
                       sid, snap);
}

json_t *tool_delete_snapshot(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[160];
    const char *sid = tool_sandbox_path(args, "/snapshots/", path, sizeof(path) - 32, &fail);
    const char *snap = sid ? snapshot_id(args, &fail) : NULL;
    if (!snap)
        return fail;
    strcat(path, snap);
    if (tool_call(c, "DELETE", path, NULL, NULL, NULL, &fail, "delete_snapshot") < 0)
        return fail;
    return tool_result(json_pack("{s:s, s:s, s:b}", "sandbox_id", sid, "snapshot_id", snap,
                                 "deleted", 1),
                       false, "snapshot %s of sandbox %s deleted", snap, sid);
}
