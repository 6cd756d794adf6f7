/* The baseline of the benchmarks: the bare Docker Engine API calls a plain `docker` user would
 * make, through the library's low-level client (clr_engine_call, clr_engine_hijack), so that
 * the difference from clearing is what clearing adds, not another HTTP client. See harness.h. */
#include "harness.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define RAW_EXEC_TIMEOUT_MS 30000
/* How long to wait for the engine to record the exit code once the exec stream has ended. */
#define RAW_EXEC_SETTLE_MS 2000

int bench_raw_call(clr_engine *eng, const char *method, const char *path, json_t *body,
                   json_t **resp, int expect, int also, char *why, size_t why_len)
{
    clr_error err = CLR_ERROR_INIT;
    int st = clr_engine_call(eng, method, path, body, resp, &err);
    if (st == expect || (also && st == also))
        return 0;
    if (st >= 0 && err.code == CLR_E_NONE)
        snprintf(why, why_len, "%s %s answered %d, expected %d", method, path, st, expect);
    else
        snprintf(why, why_len, "%s", err.message);
    return -1;
}

int bench_raw_remove(clr_engine *eng, const char *id_or_name, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1", id_or_name);
    return bench_raw_call(eng, "DELETE", path, NULL, NULL, 204, 404, why, why_len);
}

/* POST path with body (released here), which must answer 201 with an Id; the Id goes to id. */
static int post_for_id(clr_engine *eng, const char *path, json_t *body, char *id, size_t id_len,
                       char *why, size_t why_len)
{
    json_t *resp = NULL;
    int rc = bench_raw_call(eng, "POST", path, body, &resp, 201, 0, why, why_len);
    json_decref(body);
    const char *v = json_string_value(json_object_get(resp, "Id"));
    if (rc == 0 && !v) {
        snprintf(why, why_len, "POST %s answered without an Id", path);
        rc = -1;
    }
    if (rc == 0)
        snprintf(id, id_len, "%s", v);
    json_decref(resp);
    return rc;
}

int bench_raw_create(clr_engine *eng, const char *name, char *cid, size_t cid_len, char *why,
                     size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    /* NetworkDisabled as clearing sets it: without it the engine prepares networking even
     * for NetworkMode none, which costs 60-80 ms here and would flatter clearing. */
    json_t *body = json_pack("{s:s, s:[s,s], s:b, s:{s:s, s:s}}", "Image", CLR_DEFAULT_IMAGE,
                             "Cmd", "sleep", "infinity", "NetworkDisabled", 1, "HostConfig",
                             "Runtime", "runsc", "NetworkMode", "none");
    if (post_for_id(eng, path, body, cid, cid_len, why, why_len) < 0)
        return -1;
    snprintf(path, sizeof(path), "/containers/%s/start", cid);
    return bench_raw_call(eng, "POST", path, NULL, NULL, 204, 304, why, why_len);
}

int bench_raw_exec(clr_engine *eng, const char *cid, char *eid, size_t eid_len, char *why,
                   size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/exec", cid);
    json_t *body = json_pack("{s:b, s:b, s:[s]}", "AttachStdout", 1, "AttachStderr", 1, "Cmd",
                             "true");
    if (post_for_id(eng, path, body, eid, eid_len, why, why_len) < 0)
        return -1;

    clr_error err = CLR_ERROR_INIT;
    clr_engine_stream *s = NULL;
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    body = json_pack("{s:b, s:b}", "Detach", 0, "Tty", 0);
    int rc = clr_engine_hijack(&s, eng, path, body, &err);
    json_decref(body);
    if (rc < 0) {
        snprintf(why, why_len, "%s", err.message);
        return -1;
    }
    double deadline = bench_now_ms() + RAW_EXEC_TIMEOUT_MS;
    uint8_t buf[16384];
    for (;;) {
        double left = deadline - bench_now_ms();
        if (bench_interrupted || left <= 0) {
            snprintf(why, why_len, "%s",
                     bench_interrupted ? "interrupted" : "the exec stream did not end within 30 s");
            rc = -1;
            break;
        }
        ssize_t n = clr_engine_stream_read(s, buf, sizeof(buf), (int)left, &err);
        if (n == 0)
            break;
        if (n == -1) {
            snprintf(why, why_len, "%s", err.message);
            rc = -1;
            break;
        }
    }
    clr_engine_stream_free(s);
    return rc;
}

int bench_raw_exec_check(clr_engine *eng, const char *eid, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/exec/%s/json", eid);
    double deadline = bench_now_ms() + RAW_EXEC_SETTLE_MS;
    for (;;) {
        json_t *resp = NULL;
        if (bench_raw_call(eng, "GET", path, NULL, &resp, 200, 0, why, why_len) < 0) {
            json_decref(resp);
            return -1;
        }
        bool running = json_is_true(json_object_get(resp, "Running"));
        json_t *code = json_object_get(resp, "ExitCode");
        json_int_t exit_code = json_is_integer(code) ? json_integer_value(code) : -1;
        json_decref(resp);
        if (!running && exit_code == 0)
            return 0;
        if (!running || bench_now_ms() >= deadline) {
            snprintf(why, why_len, "`true` %s, exit code %" JSON_INTEGER_FORMAT,
                     running ? "was still running after its stream ended" : "failed", exit_code);
            return -1;
        }
        bench_sleep_ms(10);
    }
}

unsigned bench_remove_container(clr_engine *eng, const char *id_or_name)
{
    char why[1100];
    if (bench_raw_remove(eng, id_or_name, why, sizeof(why)) == 0)
        return 0;
    fprintf(stderr, "left behind: container %s (%s); remove it with `docker rm -f %s`\n",
            id_or_name, why, id_or_name);
    return 1;
}
