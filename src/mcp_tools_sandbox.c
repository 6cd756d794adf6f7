/* The MCP tools on sandboxes, their files and their repositories: create,
 * destroy, list, write/read/list/delete files, diff, commit, the gauntlet and
 * plans. Each is one or two REST calls (docs/openapi.yaml). */
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools.h"
#include "mcp_tools_int.h"

#define READ_CAP (1024u * 1024) /* bytes of a file or a diff given to the model */

int mcp_tools_destroy(const struct mcp_backend *be, const char *id, clr_error *err)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
    json_t *a = NULL;
    int st = be->call(be->ctx, "DELETE", path, NULL, &a, NULL, err);
    if (st >= 400) {
        const char *m = json_string_value(json_object_get(json_object_get(a, "error"), "message"));
        clr_error_set(err, CLR_E_INTERNAL, 0, "%s (HTTP %d)", m ? m : "refused", st);
        st = -1;
    }
    json_decref(a);
    return st < 0 ? -1 : 0;
}

/* The CreateRequest from a tool's arguments. */
static json_t *create_request(const json_t *args)
{
    json_t *req = json_pack("{s:{s:s}}", "metadata", "created_by", "mcp");
    const char *same[] = {"image", "limits", "env", "idle_timeout"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(args, same[i]);
        if (v)
            json_object_set(req, same[i], v);
    }
    json_t *repo = json_object_get(args, "repo");
    if (repo) {
        json_t *r = json_pack("{s:O}", "path", repo);
        const char *rk[] = {"base", "branch"};
        for (size_t i = 0; i < 2; i++) {
            json_t *v = json_object_get(args, rk[i]);
            if (v)
                json_object_set(r, rk[i], v);
        }
        json_object_set_new(req, "repo", r);
    }
    json_t *egress = json_object_get(args, "egress");
    if (egress)
        json_object_set_new(req, "egress", json_pack("{s:O}", "allow", egress));
    return req;
}

char *tool_sandbox_create(struct mcp_call *c, const json_t *args, bool keep, json_t **sandbox,
                          json_t **fail)
{
    _cleanup_json_ json_t *req = create_request(args);
    _cleanup_json_ json_t *sb = NULL;
    mcp_call_progress(c, "creating the sandbox");
    if (tool_call(c, "POST", "/v1/sandboxes", req, &sb, NULL, fail, "create_sandbox") < 0)
        return NULL;
    const char *id = json_string_value(json_object_get(sb, "id"));
    if (!id) {
        *fail = tool_error("create_sandbox: the daemon's answer has no sandbox id");
        return NULL;
    }
    /* Recorded before anything else can fail, so the session's end destroys it.
     */
    mcp_sandboxes_add(c->boxes, id, keep);
    mcp_call_log(c, 1, "sandbox %s created%s", id, keep ? " (kept after the session)" : "");
    if (mcp_call_cancelled(c)) {
        *fail = tool_error("cancelled");
        return NULL; /* the session destroys it (or keeps it) as for any other */
    }
    char *out = strdup(id);
    if (sandbox)
        *sandbox = json_incref(sb);
    return out;
}

json_t *tool_create_sandbox(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL, *sb = NULL;
    bool keep = json_is_true(json_object_get(args, "keep"));
    _cleanup_free_ char *id = tool_sandbox_create(c, args, keep, &sb, &fail);
    if (!id)
        return fail;
    json_t *l = json_object_get(sb, "limits");
    json_object_set_new(sb, "kept", json_boolean(keep));
    return tool_result(sb, false,
                       "sandbox %s is running (image %s, %s CPUs, memory %s, expires at %lld); "
                       "%s. Use its id with exec, write_file, read_file, diff, commit.",
                       id, json_string_value(json_object_get(sb, "image")),
                       json_string_value(json_object_get(l, "cpus")),
                       json_string_value(json_object_get(l, "memory")),
                       (long long)json_integer_value(json_object_get(sb, "expires_at")),
                       keep ? "it is kept after this session ends"
                            : "it is destroyed when this session ends (keep: true keeps one)");
}

json_t *tool_destroy_sandbox(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    const char *sid = tool_sandbox_path(args, "", path, sizeof(path), &fail);
    if (!sid)
        return fail;
    if (tool_call(c, "DELETE", path, NULL, NULL, NULL, &fail, "destroy_sandbox") < 0)
        return fail;
    mcp_sandboxes_remove(c->boxes, sid);
    return tool_result(json_pack("{s:s, s:b}", "sandbox_id", sid, "destroyed", 1), false,
                       "sandbox %s destroyed", sid);
}

json_t *tool_list_sandboxes(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    _cleanup_json_ json_t *all = NULL;
    if (tool_call(c, "GET", "/v1/sandboxes?state=running", NULL, &all, NULL, &fail,
                  "list_sandboxes") < 0)
        return fail;
    bool every = json_is_true(json_object_get(args, "all"));
    json_t *list = json_array();
    _cleanup_free_ char *text = strdup("");
    size_t i;
    json_t *sb;
    json_array_foreach (json_object_get(all, "sandboxes"), i, sb) {
        const char *id = json_string_value(json_object_get(sb, "id"));
        bool keep = false, mine = id && mcp_sandboxes_has(c->boxes, id, &keep);
        if (!id || (!mine && !every))
            continue;
        json_array_append_new(
            list, json_pack("{s:s, s:O, s:O, s:O, s:O, s:b, s:b}", "id", id, "state",
                            json_object_get(sb, "state"), "image", json_object_get(sb, "image"),
                            "created_at", json_object_get(sb, "created_at"), "expires_at",
                            json_object_get(sb, "expires_at"), "this_session", mine, "kept", keep));
        char *t = NULL;
        if (asprintf(&t, "%s%s %s%s\n", text, id, json_string_value(json_object_get(sb, "image")),
                     mine ? (keep ? " (this session, kept)" : " (this session)") : "") >= 0) {
            free(text);
            text = t;
        }
    }
    return tool_result(json_pack("{s:o}", "sandboxes", list), false, "%s",
                       text && *text ? text : "no running sandboxes\n");
}

/* write_file without an upload in the backend: a command in the sandbox writes
 * stdin. */
static int write_by_command(struct mcp_call *c, const char *sid, const json_t *args, json_t **fail)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", sid);
    const char *enc = json_string_value(json_object_get(args, "encoding"));
    _cleanup_json_ json_t *req = json_pack(
        "{s:[s, s, s, s, O], s:O, s:s}", "argv", "sh", "-c",
        "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"", "sh", json_object_get(args, "path"),
        enc && strcmp(enc, "base64") == 0 ? "stdin_base64" : "stdin",
        json_object_get(args, "content"), "cwd", "/workspace");
    _cleanup_json_ json_t *ex = NULL;
    if (tool_call(c, "POST", path, req, &ex, NULL, fail, "write_file") < 0)
        return -1;
    json_t *r = json_object_get(ex, "result");
    if (json_integer_value(json_object_get(r, "exit_code")) != 0 ||
        strcmp(str_or(json_string_value(json_object_get(r, "status")), ""), "exited") != 0) {
        *fail = tool_error("write_file failed: %s",
                           str_or(json_string_value(json_object_get(r, "stderr")), ""));
        return -1;
    }
    return 0;
}

json_t *tool_write_file(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[4300];
    const char *sid = tool_sandbox_file(args, path, sizeof(path), &fail);
    if (!sid)
        return fail;
    const char *content = json_string_value(json_object_get(args, "content"));
    const char *enc = json_string_value(json_object_get(args, "encoding"));
    size_t len = json_string_length(json_object_get(args, "content"));
    if (!c->be->upload || (enc && strcmp(enc, "base64") == 0)) {
        if (write_by_command(c, sid, args, &fail) < 0)
            return fail;
        return tool_result(json_pack("{s:O}", "path", json_object_get(args, "path")), false,
                           "wrote %s", json_string_value(json_object_get(args, "path")));
    }
    clr_error err = CLR_ERROR_INIT;
    json_t *a = NULL;
    int st = c->be->upload(c->be->ctx, path, content, len, &a, &err);
    if (st < 0 || st >= 400) {
        const char *m = json_string_value(json_object_get(json_object_get(a, "error"), "message"));
        json_t *r = tool_error("write_file failed: %s%s", m ? m : err.message,
                               st == 507 ? " (the workspace is full: delete files)" : "");
        json_decref(a);
        return r;
    }
    return tool_result(a ? a : json_object(), false, "wrote %zu bytes to %s", len,
                       json_string_value(json_object_get(args, "path")));
}

json_t *tool_list_files(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char enc[4096] = "", path[4300];
    if (!tool_sandbox_path(args, "/files", path, sizeof(path), &fail))
        return fail;
    const char *p = json_string_value(json_object_get(args, "path"));
    tool_urlencode(enc, sizeof(enc), p ? p : "", false);
    size_t at = strlen(path);
    snprintf(path + at, sizeof(path) - at, "%s%s", p ? "?path=" : "", enc);
    json_t *ls = NULL;
    if (tool_call(c, "GET", path, NULL, &ls, NULL, &fail, "list_files") < 0)
        return fail;
    _cleanup_free_ char *text = strdup("");
    size_t i;
    json_t *e;
    json_array_foreach (json_object_get(ls, "entries"), i, e) {
        char *t = NULL;
        if (asprintf(&t, "%s%s %s %lld\n", text, json_string_value(json_object_get(e, "type")),
                     json_string_value(json_object_get(e, "name")),
                     (long long)json_integer_value(json_object_get(e, "size"))) >= 0) {
            free(text);
            text = t;
        }
    }
    return tool_result(ls, false, "%s", text && *text ? text : "(empty directory)\n");
}

json_t *tool_delete_file(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[4320];
    if (!tool_sandbox_file(args, path, sizeof(path) - 20, &fail))
        return fail;
    if (json_is_true(json_object_get(args, "recursive")))
        strcat(path, "?recursive=true");
    if (tool_call(c, "DELETE", path, NULL, NULL, NULL, &fail, "delete_file") < 0)
        return fail;
    return tool_result(json_pack("{s:O, s:b}", "path", json_object_get(args, "path"), "deleted", 1),
                       false, "deleted %s", json_string_value(json_object_get(args, "path")));
}

json_t *tool_diff(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    const char *sid = tool_sandbox_path(args, "/diff", path, sizeof(path), &fail);
    if (!sid)
        return fail;
    _cleanup_free_ char *text = NULL;
    if (tool_call(c, "GET", path, NULL, NULL, &text, &fail, "diff") < 0)
        return fail;
    size_t n = text ? strlen(text) : 0;
    bool cut = n > READ_CAP;
    /* Cut between characters; bytes that are not UTF-8 (a Latin-1 file) shown as U+FFFD. */
    _cleanup_free_ char *shown = tool_utf8(text ? text : "", cut ? tool_utf8_cut(text, READ_CAP) : n);
    if (!shown)
        return tool_error("diff: out of memory");
    return tool_result(
        json_pack("{s:s, s:s, s:b}", "sandbox_id", sid, "diff", shown, "truncated", cut), false,
        "%s", n ? shown : "(no changes against the base commit)");
}

json_t *tool_commit(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[128];
    if (!tool_sandbox_path(args, "/commit", path, sizeof(path), &fail))
        return fail;
    _cleanup_json_ json_t *req = json_deep_copy(args);
    json_object_del(req, "sandbox_id");
    json_t *cm = NULL;
    if (tool_call(c, "POST", path, req, &cm, NULL, &fail, "commit") < 0)
        return fail;
    if (!json_is_true(json_object_get(cm, "changed")))
        return tool_result(cm, false, "nothing to commit: the workspace equals branch %s",
                           json_string_value(json_object_get(cm, "branch")));
    return tool_result(cm, false, "committed %s on branch %s\n%s",
                       json_string_value(json_object_get(cm, "commit")),
                       json_string_value(json_object_get(cm, "branch")),
                       str_or(json_string_value(json_object_get(cm, "diffstat")), ""));
}

struct plan_follow {
    struct mcp_call *c;
    json_t *report;
    json_t *error;
};

static bool plan_line(void *ctx, json_t *line)
{
    struct plan_follow *f = ctx;
    const char *ev = json_string_value(json_object_get(line, "event"));
    if (!ev || strcmp(ev, "heartbeat") == 0)
        return !mcp_call_cancelled(f->c);
    if (strcmp(ev, "result") == 0) {
        json_decref(f->report);
        f->report = json_deep_copy(line);
        json_object_del(f->report, "event");
    } else if (strcmp(ev, "error") == 0) {
        json_decref(f->error);
        f->error = json_incref(json_object_get(line, "error"));
    } else {
        const char *name = json_string_value(json_object_get(line, "name"));
        char msg[256];
        snprintf(msg, sizeof(msg), "%s%s%s", ev, name ? " " : "", name ? name : "");
        mcp_call_progress(f->c, msg);
    }
    return !mcp_call_cancelled(f->c);
}

/* POST /v1/plans with body, streamed when the backend can (progress per event; a cancelled
 * call stops following within about a second, and the daemon cancels a streamed plan whose
 * client went away: its command killed, nothing committed, its sandbox destroyed), else in one
 * answer. */
static json_t *plan_run(struct mcp_call *c, json_t *body, const char *what)
{
    json_t *fail = NULL;
    struct plan_follow f = {.c = c};
    if (!c->be->stream) {
        if (tool_call(c, "POST", "/v1/plans", body, &f.report, NULL, &fail, what) < 0)
            return fail;
    } else {
        clr_error err = CLR_ERROR_INIT;
        int st =
            c->be->stream(c->be->ctx, "POST", "/v1/plans?stream=true", body, plan_line, &f, &err);
        if (st < 0 || st >= 400 || f.error) {
            const char *m = json_string_value(json_object_get(f.error, "message"));
            json_t *r = tool_error("%s failed: %s%s", what, m ? m : err.message,
                                   st == 403 ? " (the repository must be under the daemon's "
                                               "repo_roots)"
                                             : "");
            json_decref(f.error);
            json_decref(f.report);
            return r;
        }
    }
    if (!f.report)
        return tool_error("%s: the daemon's answer ended without a report", what);
    const char *verdict = json_string_value(json_object_get(f.report, "verdict"));
    const char *summary = json_string_value(json_object_get(f.report, "summary"));
    const char *commit = json_string_value(json_object_get(f.report, "commit"));
    bool pass = verdict && strcmp(verdict, "pass") == 0;
    return tool_result(f.report, !pass, "verdict %s%s%s\n%s", verdict ? verdict : "(none)",
                       commit ? ", commit " : "", commit ? commit : "", summary ? summary : "");
}

/* The plan request's common fields: repo, profile, base. */
static json_t *plan_body(const json_t *args)
{
    json_t *b = json_object();
    const char *keys[] = {"repo", "profile", "base", "plan"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(args, keys[i]);
        if (v)
            json_object_set(b, keys[i], v);
    }
    return b;
}

json_t *tool_run_gauntlet(struct mcp_call *c, const json_t *args)
{
    _cleanup_json_ json_t *b = plan_body(args);
    json_object_set_new(b, "gauntlet_only", json_true());
    return plan_run(c, b, "run_gauntlet");
}

json_t *tool_run_plan(struct mcp_call *c, const json_t *args)
{
    _cleanup_json_ json_t *b = plan_body(args);
    return plan_run(c, b, "run_plan");
}
