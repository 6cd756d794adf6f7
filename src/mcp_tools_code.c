/* The MCP tools of a sandbox's code session (a Jupyter kernel whose state lives from one call to
 * the next): run_code, a cell (POST /v1/sandboxes/ID/code; the API's CodeResult as
 * structuredContent, its output, value and traceback as text, each image display as MCP image
 * content); restart_code, a fresh kernel (POST .../code/restart); end_code, the session ended
 * (DELETE .../code). */
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools.h"
#include "mcp_tools_int.h"

/* The answer in words: status, output, the value, the error. */
static char *code_summary(const json_t *a)
{
    const char *status = str_or(json_string_value(json_object_get(a, "status")), "?");
    const char *out = str_or(json_string_value(json_object_get(a, "stdout")), "");
    const char *err = str_or(json_string_value(json_object_get(a, "stderr")), "");
    const char *value = json_string_value(
        json_object_get(json_object_get(a, "result"), "text/plain"));
    const json_t *e = json_object_get(a, "error");
    const char *tb = json_string_value(json_object_get(e, "traceback"));
    const char *msg = json_string_value(json_object_get(a, "message"));
    /* No In [n] when the kernel did not answer (a sandbox destroyed under the cell, a kernel
     * that died): the message says what happened. */
    char count[32] = "";
    const json_t *n = json_object_get(a, "execution_count");
    if (json_is_integer(n))
        snprintf(count, sizeof(count), ", In [%lld]", (long long)json_integer_value(n));
    char *s = NULL;
    if (asprintf(&s, "status %s%s%s%s%s%s%s%s%s%s%s%s", status, count,
                 *out ? "\nstdout:\n" : "", out, *err ? "\nstderr:\n" : "", err,
                 value ? "\nvalue: " : "", value ? value : "", tb ? "\nerror:\n" : "",
                 tb ? tb : "", msg ? "\n" : "", msg ? msg : "") < 0)
        return NULL;
    return s;
}

json_t *tool_run_code(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    const char *sid = tool_sandbox_id(args, &fail);
    if (!sid)
        return fail;
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/code", sid);
    _cleanup_json_ json_t *req = json_pack("{s:O}", "code", json_object_get(args, "code"));
    const json_t *t = json_object_get(args, "timeout");
    if (t)
        json_object_set_new(req, "timeout", json_integer(json_integer_value(t)));
    json_t *a = NULL;
    if (tool_call(c, "POST", path, req, &a, NULL, &fail, "run_code") < 0)
        return fail;
    _cleanup_free_ char *text = code_summary(a);
    const char *status = str_or(json_string_value(json_object_get(a, "status")), "");
    json_t *images = json_array(), *d;
    size_t i;
    json_array_foreach(json_object_get(a, "displays"), i, d)
    {
        static const char *const kinds[] = {"image/png", "image/jpeg"};
        for (size_t k = 0; k < 2; k++) {
            const char *data = json_string_value(json_object_get(d, kinds[k]));
            if (data)
                json_array_append_new(images, json_pack("{s:s, s:s, s:s}", "type", "image",
                                                        "data", data, "mimeType", kinds[k]));
        }
    }
    json_t *r = tool_result(a, strcmp(status, "ok") != 0, "%s", text ? text : status);
    json_array_extend(json_object_get(r, "content"), images);
    json_decref(images);
    return r;
}

/* restart_code (POST .../code/restart) or end_code (DELETE .../code): both wait for the cells
 * before them, so either may take as long as a cell and a kernel's start. */
static json_t *code_session_call(struct mcp_call *c, const json_t *args, bool end)
{
    json_t *fail = NULL;
    char path[128];
    const char *sid =
        tool_sandbox_path(args, end ? "/code" : "/code/restart", path, sizeof(path), &fail);
    if (!sid)
        return fail;
    if (tool_call(c, end ? "DELETE" : "POST", path, NULL, NULL, NULL, &fail,
                  end ? "end_code" : "restart_code") < 0)
        return fail;
    if (end)
        return tool_result(json_pack("{s:s, s:b}", "sandbox_id", sid, "ended", 1), false,
                           "the code session of sandbox %s is ended (or there was none): its "
                           "kernel and variables are gone, its files stay; the next run_code "
                           "starts a fresh kernel",
                           sid);
    return tool_result(json_pack("{s:s, s:s}", "sandbox_id", sid, "status", "restarted"), false,
                       "the code session of sandbox %s has a fresh kernel: the old one's "
                       "variables, imports and open files are gone, its files stay",
                       sid);
}

json_t *tool_restart_code(struct mcp_call *c, const json_t *args)
{
    return code_session_call(c, args, false);
}

json_t *tool_end_code(struct mcp_call *c, const json_t *args)
{
    return code_session_call(c, args, true);
}
