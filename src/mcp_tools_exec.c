/* The MCP tools that run commands: exec, run_command and the background
 * processes. A command runs as one of the sandbox's background processes (POST
 * .../processes) whose output is followed (GET .../output?wait=) and which is
 * killed (POST .../signal KILL, its whole tree) when the call is cancelled or
 * its timeout passes: the REST API's synchronous exec cannot be cancelled, a
 * process can. The result is the process's Result (docs/openapi.yaml). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools.h"
#include "mcp_tools_int.h"

/* Bytes of each stream kept for the result. */
#define OUTPUT_CAP (1024u * 1024)
#define DEFAULT_TIMEOUT_S 600
#define POLL_WAIT "2s" /* a follow's wait: how soon a cancellation is seen */
#define PROGRESS_EVERY_S 3.0

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The process request from a tool's arguments: command (shell) or argv, cwd,
 * env, stdin. NULL with *fail when neither or both are given. */
static json_t *process_request(const json_t *args, json_t **fail)
{
    const json_t *cmd = json_object_get(args, "command"), *argv = json_object_get(args, "argv");
    if (!!cmd == !!argv) {
        *fail = tool_error("give exactly one of command (a shell string, e.g. \"make test\") and "
                           "argv (an array, e.g. [\"python3\", \"-c\", \"print(1)\"])");
        return NULL;
    }
    json_t *req = json_object();
    if (cmd)
        json_object_set(req, "shell", (json_t *)cmd);
    else
        json_object_set(req, "argv", (json_t *)argv);
    const char *keys[] = {"cwd", "env", "stdin"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(args, keys[i]);
        if (v)
            json_object_set(req, keys[i], v);
    }
    return req;
}

struct follow {
    const char *sid, *pid;
    json_t *streams[2]; /* stdout, stderr: kept text */
    size_t bytes[2];
    json_int_t offset[2];
    bool truncated[2], binary[2];
    json_t *result;
    json_int_t wall_us; /* for a command this call killed: from the start to its end */
};

/* Adds one output window to f; returns the bytes it brought. */
static size_t take_window(struct follow *f, int k, const json_t *w)
{
    const char *data = json_string_value(json_object_get(w, "data"));
    const char *enc = json_string_value(json_object_get(w, "encoding"));
    json_int_t next = json_integer_value(json_object_get(w, "next_offset"));
    size_t n = (size_t)(next > f->offset[k] ? next - f->offset[k] : 0);
    if (json_integer_value(json_object_get(w, "dropped")) > 0)
        f->truncated[k] = true;
    f->offset[k] = next;
    f->bytes[k] += n;
    if (!data || !*data)
        return n;
    if (enc && strcmp(enc, "base64") == 0) {
        f->binary[k] = true;
        return n;
    }
    size_t have = json_string_length(f->streams[k]), add = strlen(data);
    if (have + add > OUTPUT_CAP) {
        f->truncated[k] = true;
        add = have < OUTPUT_CAP ? OUTPUT_CAP - have : 0;
    }
    if (add) {
        char *joined = malloc(have + add + 1);
        if (joined) {
            memcpy(joined, json_string_value(f->streams[k]), have);
            memcpy(joined + have, data, add);
            joined[have + add] = '\0';
            json_string_setn_nocheck(f->streams[k], joined, have + add);
            free(joined);
        }
    }
    return n;
}

/* Kills the process's tree; a process already gone is no failure. */
static void kill_process(struct mcp_call *c, const char *sid, const char *pid)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%s/signal", sid, pid);
    _cleanup_json_ json_t *body = json_pack("{s:s}", "signal", "KILL");
    json_t *fail = NULL;
    if (tool_call(c, "POST", path, body, NULL, NULL, &fail, "killing the command") < 0) {
        mcp_call_log(c, 3, "%s",
                     json_string_value(json_object_get(
                         json_array_get(json_object_get(fail, "content"), 0), "text")));
        json_decref(fail);
    }
}

/* A background process's stdin stays open for POST .../stdin; a command of exec reads what
 * it was given and then EOF, as with the REST API's exec. One that exited already is no
 * failure. */
static void close_stdin(struct mcp_call *c, const char *sid, const char *pid)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%s/stdin", sid, pid);
    _cleanup_json_ json_t *body = json_pack("{s:b}", "eof", 1);
    json_t *fail = NULL;
    if (tool_call(c, "POST", path, body, NULL, NULL, &fail, "closing the command's stdin") < 0)
        json_decref(fail);
}

/* One follow step: 1 when the process exited (f->result set), 0 when it runs
 * on, -1 with *fail. */
static int follow_step(struct mcp_call *c, struct follow *f, size_t *got, json_t **fail)
{
    char path[512];
    snprintf(path, sizeof(path),
             "/v1/sandboxes/%s/processes/%s/"
             "output?stdout_offset=%lld&stderr_offset=%lld&wait=%s",
             f->sid, f->pid, (long long)f->offset[0], (long long)f->offset[1], POLL_WAIT);
    _cleanup_json_ json_t *out = NULL;
    if (tool_call(c, "GET", path, NULL, &out, NULL, fail, "reading the command's output") < 0)
        return -1;
    *got = take_window(f, 0, json_object_get(out, "stdout")) +
           take_window(f, 1, json_object_get(out, "stderr"));
    json_t *r = json_object_get(out, "result");
    if (json_is_object(r) &&
        strcmp(str_or(json_string_value(json_object_get(out, "state")), ""), "exited") == 0) {
        f->result = json_incref(r);
        return 1;
    }
    return 0;
}

/* The structured exec result: the process's Result with the output this call
 * kept. */
static json_t *exec_structured(struct follow *f, const char *status)
{
    json_t *s = f->result ? json_deep_copy(f->result) : json_object();
    if (status) {
        json_object_set_new(s, "status", json_string(status));
        json_object_set_new(s, "exit_code", json_null());
        json_object_set_new(s, "wall_us", json_integer(f->wall_us));
    }
    json_object_set_new(s, "sandbox_id", json_string(f->sid));
    json_object_set_new(s, "process_id", json_string(f->pid));
    const char *names[2] = {"stdout", "stderr"};
    for (int k = 0; k < 2; k++) {
        char key[32];
        json_object_set(s, names[k], f->streams[k]);
        snprintf(key, sizeof(key), "%s_truncated", names[k]);
        json_object_set_new(s, key, json_boolean(f->truncated[k]));
        snprintf(key, sizeof(key), "%s_bytes", names[k]);
        json_object_set_new(s, key, json_integer((json_int_t)f->bytes[k]));
        snprintf(key, sizeof(key), "%s_binary", names[k]);
        json_object_set_new(s, key, json_boolean(f->binary[k]));
        snprintf(key, sizeof(key), "%s_encoding", names[k]);
        json_object_del(s, key);
    }
    return s;
}

/* Waits for the process, sending progress, killing it when cancelled or timed
 * out; *status is "timed_out" or "cancelled" then, else NULL. 0, or -1 with
 * *fail. */
static int follow_process(struct mcp_call *c, struct follow *f, double timeout_s,
                          const char **status, json_t **fail)
{
    double start = now_s(), last = start;
    *status = NULL;
    for (;;) {
        if (mcp_call_cancelled(c) || now_s() - start > timeout_s) {
            *status = mcp_call_cancelled(c) ? "cancelled" : "timed_out";
            kill_process(c, f->sid, f->pid);
            /* Its result (CPU, peak memory, the signal) once it is gone, for a timeout. */
            size_t got = 0;
            for (int i = 0; i < 15 && !mcp_call_cancelled(c); i++) {
                if (follow_step(c, f, &got, fail) != 0)
                    break;
            }
            json_decref(*fail);
            *fail = NULL;
            f->wall_us = (json_int_t)((now_s() - start) * 1e6);
            return 0;
        }
        size_t got = 0;
        int rc = follow_step(c, f, &got, fail);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
        if (got || now_s() - last >= PROGRESS_EVERY_S) {
            char msg[256];
            const char *o = json_string_value(f->streams[0]);
            size_t n = strlen(o);
            snprintf(msg, sizeof(msg), "running %.0f s; %zu bytes of output%s%.120s",
                     now_s() - start, f->bytes[0] + f->bytes[1], n ? ": " : "",
                     n > 120 ? o + n - 120 : o);
            mcp_call_progress(c, msg);
            last = now_s();
        }
    }
}

/* Runs args' command in sandbox sid and waits for it: the tool's result. */
static json_t *run_in(struct mcp_call *c, const char *sid, const json_t *args)
{
    json_t *fail = NULL;
    _cleanup_json_ json_t *req = process_request(args, &fail);
    if (!req)
        return fail;
    char path[256];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", sid);
    _cleanup_json_ json_t *proc = NULL;
    char what[128];
    snprintf(what, sizeof(what), "starting the command in %s", sid);
    if (tool_call(c, "POST", path, req, &proc, NULL, &fail, what) < 0)
        return fail;
    const json_t *to = json_object_get(args, "timeout");
    struct follow f = {.sid = sid, .pid = json_string_value(json_object_get(proc, "id"))};
    if (!f.pid)
        return tool_error("the daemon started the command but gave no process id");
    close_stdin(c, sid, f.pid);
    f.streams[0] = json_string("");
    f.streams[1] = json_string("");
    const char *status = NULL;
    int rc = follow_process(c, &f, to ? (double)json_integer_value(to) : DEFAULT_TIMEOUT_S, &status,
                            &fail);
    json_t *res = fail;
    if (rc == 0) {
        json_t *st = exec_structured(&f, status);
        _cleanup_free_ char *text =
            tool_exec_summary(st, json_string_value(f.streams[0]), json_string_value(f.streams[1]));
        const char *s = json_string_value(json_object_get(st, "status"));
        bool ok = s && strcmp(s, "exited") == 0 &&
                  json_integer_value(json_object_get(st, "exit_code")) == 0;
        res = tool_result(st, !ok, "%s", text ? text : "(no summary)");
    }
    json_decref(f.streams[0]);
    json_decref(f.streams[1]);
    json_decref(f.result);
    return res;
}

json_t *tool_exec(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    const char *sid = tool_sandbox_id(args, &fail);
    return sid ? run_in(c, sid, args) : fail;
}

json_t *tool_run_command(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    _cleanup_json_ json_t *req = process_request(args, &fail);
    if (!req)
        return fail;
    _cleanup_free_ char *sid = tool_sandbox_create(c, args, false, NULL, &fail);
    if (!sid)
        return fail;
    json_t *res = run_in(c, sid, args);
    clr_error err = CLR_ERROR_INIT;
    if (mcp_tools_destroy(c->be, sid, &err) < 0)
        mcp_call_log(c, 3, "destroying %s: %s", sid, err.message);
    else
        mcp_sandboxes_remove(c->boxes, sid);
    return res;
}

json_t *tool_start_process(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[256];
    const char *sid = tool_sandbox_path(args, "/processes", path, sizeof(path), &fail);
    if (!sid)
        return fail;
    _cleanup_json_ json_t *req = process_request(args, &fail);
    if (!req)
        return fail;
    json_t *proc = NULL;
    if (tool_call(c, "POST", path, req, &proc, NULL, &fail, "start_process") < 0)
        return fail;
    return tool_result(proc, false,
                       "process %s started in %s: read its output with read_process_output, "
                       "end it with stop_process",
                       json_string_value(json_object_get(proc, "id")), sid);
}

/* args.process_id checked: it, or NULL with *fail. */
static const char *process_id(const json_t *args, json_t **fail)
{
    const char *id = json_string_value(json_object_get(args, "process_id"));
    if (!id || strlen(id) != 19 || strncmp(id, "pr-", 3) != 0 ||
        strspn(id + 3, "0123456789abcdef") != 16) {
        *fail = tool_error("process_id '%.64s' is not a process id (pr- and 16 hex digits): take "
                           "it from start_process's answer",
                           id ? id : "");
        return NULL;
    }
    return id;
}

/* The prologue of a tool on one process: its sandbox's and its own id checked, and
 * "/v1/sandboxes/SID/processes/PID" in out: the process's id, or NULL with *fail. */
static const char *process_path(const json_t *args, char *out, size_t len, json_t **fail)
{
    const char *sid = tool_sandbox_path(args, "/processes/", out, len, fail);
    const char *pid = sid ? process_id(args, fail) : NULL;
    if (pid) {
        size_t at = strlen(out);
        snprintf(out + at, len - at, "%s", pid);
    }
    return pid;
}

json_t *tool_read_process_output(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[512];
    if (!process_path(args, path, sizeof(path), &fail))
        return fail;
    size_t at = strlen(path);
    snprintf(path + at, sizeof(path) - at,
             "/output?stdout_offset=%lld&stderr_offset=%lld&wait=%llds",
             (long long)json_integer_value(json_object_get(args, "stdout_offset")),
             (long long)json_integer_value(json_object_get(args, "stderr_offset")),
             (long long)json_integer_value(json_object_get(args, "wait")));
    json_t *out = NULL;
    if (tool_call(c, "GET", path, NULL, &out, NULL, &fail, "read_process_output") < 0)
        return fail;
    json_t *o = json_object_get(out, "stdout"), *e = json_object_get(out, "stderr");
    return tool_result(out, false,
                       "state %s; next offsets: stdout %lld, stderr %lld\n--- stdout ---\n%s\n"
                       "--- stderr ---\n%s",
                       json_string_value(json_object_get(out, "state")),
                       (long long)json_integer_value(json_object_get(o, "next_offset")),
                       (long long)json_integer_value(json_object_get(e, "next_offset")),
                       str_or(json_string_value(json_object_get(o, "data")), ""),
                       str_or(json_string_value(json_object_get(e, "data")), ""));
}

json_t *tool_stop_process(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[256], signal_path[300];
    const char *pid = process_path(args, path, sizeof(path), &fail);
    if (!pid)
        return fail;
    const json_t *sig = json_object_get(args, "signal");
    snprintf(signal_path, sizeof(signal_path), "%s/signal", path);
    _cleanup_json_ json_t *body =
        sig ? json_pack("{s:O}", "signal", sig) : json_pack("{s:s}", "signal", "KILL");
    if (tool_call(c, "POST", signal_path, body, NULL, NULL, &fail, "stop_process") < 0)
        return fail;
    json_t *proc = NULL;
    if (tool_call(c, "GET", path, NULL, &proc, NULL, &fail, "stop_process") < 0)
        return fail;
    return tool_result(proc, false, "signal sent to process %s; its state: %s", pid,
                       json_string_value(json_object_get(proc, "state")));
}
