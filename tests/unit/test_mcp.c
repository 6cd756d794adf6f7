/* The MCP protocol (src/mcp.c) and its tools' checks, with a scripted backend in place of the
 * REST API: version negotiation, JSON-RPC's errors and batches, the lifecycle, tools/list's
 * schemas, arguments refused naming the field, a failing command as isError with its exit code,
 * a cancelled call (its command killed, no response), and the session's end destroying the
 * sandboxes it created but the kept one. tests/integration/mcp_stdio.mjs does the same with the
 * official SDK against a real daemon. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "mcp.h"

/* What the session sent, and what the backend was asked. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static json_t *sent;     /* every message emitted */
static json_t *requests; /* "METHOD PATH" of every backend call */
static json_t *bodies;   /* the JSON body of every backend call (null for none) */
static int sandboxes_made;
static bool process_exits; /* the scripted process: exits at once (code 3), or runs */

static void emit(void *ctx, json_t *msg, const json_t *related)
{
    (void)ctx;
    (void)related;
    pthread_mutex_lock(&lock);
    json_array_append_new(sent, json_deep_copy(msg));
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

/* The scripted files of GET .../files/NAME: their bytes (a malloc'd copy) and length, or NULL. */
static const unsigned char png[] = {0x89, 'P',  'N',  'G',  '\r', '\n', 0x1a, '\n', 0, 0,   0,
                                    13,   'I',  'H',  'D',  'R',  0,    0,    0,    1,    0, 0,
                                    0,    1,    8,    6,    0,    0,    0,    0x1f, 0x15, 0xc4,
                                    0x89};
#define BIG (1024u * 1024)

static char *scripted_file(const char *path, size_t *len)
{
    const char *name = strstr(path, "/files/");
    if (!name)
        return NULL;
    name += 7;
    char *d = NULL;
    if (strcmp(name, "text.txt") == 0) {
        *len = 6;
        d = strdup("h\xc3\xa9llo");
    } else if (strcmp(name, "nul.bin") == 0) {
        *len = 5;
        d = malloc(6);
        memcpy(d, "a\0b\xff\xfe", 6);
    } else if (strcmp(name, "img.png") == 0) {
        *len = sizeof(png);
        d = calloc(1, sizeof(png) + 1);
        memcpy(d, png, sizeof(png));
    } else if (strcmp(name, "big.bin") == 0) {
        *len = BIG + 1;
        d = calloc(1, BIG + 2);
    } else if (strcmp(name, "big.txt") == 0) {
        /* 'a's, then a two-byte character across the 1 MiB bound. */
        *len = BIG + 10;
        d = malloc(BIG + 11);
        memset(d, 'a', BIG + 10);
        d[BIG - 1] = '\xc3';
        d[BIG] = '\xa9';
        d[BIG + 10] = '\0';
    }
    return d;
}

static int call_bytes(void *ctx, const char *method, const char *path, const json_t *body,
                      json_t **answer, char **data, size_t *len, clr_error *err)
{
    (void)ctx;
    (void)method;
    (void)body;
    (void)err;
    *answer = NULL;
    *len = 0;
    *data = scripted_file(path, len);
    if (!*data) {
        *answer = json_pack("{s:{s:s, s:s}}", "error", "code", "not_found", "message", "no file");
        return 404;
    }
    return 200;
}

static int call(void *ctx, const char *method, const char *path, const json_t *body,
                json_t **answer, char **text, clr_error *err)
{
    (void)ctx;
    (void)body;
    (void)err;
    char line[512];
    snprintf(line, sizeof(line), "%s %s", method, path);
    pthread_mutex_lock(&lock);
    json_array_append_new(requests, json_string(line));
    json_array_append_new(bodies, body ? json_deep_copy(body) : json_null());
    pthread_cond_broadcast(&changed);
    int n = ++sandboxes_made;
    pthread_mutex_unlock(&lock);
    json_t *a = NULL;
    int st = 200;
    if (strstr(path, "sb-00000000000000ab")) {
        a = json_pack("{s:{s:s, s:s}}", "error", "code", "not_found", "message",
                      "no sandbox sb-00000000000000ab");
        st = 404;
    } else if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/sandboxes") == 0) {
        char id[32];
        snprintf(id, sizeof(id), "sb-%016x", n);
        a = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "state", "running", "limits", "cpus",
                      "1.000", "memory", "512m");
        st = 201;
    } else if (strstr(path, "/snapshots") && strcmp(method, "POST") == 0) {
        a = json_pack("{s:s, s:s, s:n, s:i, s:s, s:i, s:i, s:b, s:b}", "id",
                      "snap-00000000000000c1", "sandbox", "sb-0000000000000001", "parent", "size",
                      4096, "sha256", "ab", "created_at", 100, "expires_at", 86500, "keep", 0,
                      "held", 0);
        st = 201;
    } else if (strstr(path, "/snapshots") && strcmp(method, "GET") == 0) {
        /* The second held by a restore (its keep false): a hold is shown apart from keep. */
        a = json_pack("{s:[{s:s, s:s, s:n, s:i, s:s, s:i, s:i, s:b, s:b}, "
                      "{s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:b, s:b}]}",
                      "snapshots", "id", "snap-00000000000000c1", "sandbox",
                      "sb-0000000000000001", "parent", "size", 4096, "sha256", "ab", "created_at",
                      100, "expires_at", 86500, "keep", 1, "held", 0, "id",
                      "snap-00000000000000c2", "sandbox", "sb-0000000000000001", "parent",
                      "snap-00000000000000c1", "size", 8192, "sha256", "cd", "created_at", 200,
                      "expires_at", 86600, "keep", 0, "held", 1);
    } else if (strstr(path, "/code/restart") && strcmp(method, "POST") == 0) {
        a = json_pack("{s:s}", "status", "restarted");
    } else if (strstr(path, "/restore") && strcmp(method, "POST") == 0) {
        a = json_pack("{s:s, s:s}", "id", "sb-0000000000000001", "state", "running");
    } else if (strstr(path, "/processes") && strcmp(method, "POST") == 0 &&
               !strstr(path, "signal")) {
        a = json_pack("{s:s, s:s}", "id", "pr-00000000000000aa", "state", "running");
        st = 201;
    } else if (strstr(path, "/output")) {
        if (!process_exits)
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        a = json_pack("{s:s, s:{s:s, s:s, s:i, s:i}, s:{s:s, s:s, s:i, s:i}}", "state",
                      process_exits ? "exited" : "running", "stdout", "data", "out\n", "encoding",
                      "utf-8", "next_offset", 4, "dropped", 0, "stderr", "data", "", "encoding",
                      "utf-8", "next_offset", 0, "dropped", 0);
        if (process_exits)
            json_object_set_new(
                a, "result",
                json_pack("{s:s, s:i, s:i}", "status", "exited", "exit_code", 3, "wall_us", 1000));
    } else if (strcmp(method, "DELETE") == 0 || strstr(path, "/signal")) {
        st = 204;
    }
    if (answer)
        *answer = a;
    else
        json_decref(a);
    if (text)
        *text = NULL;
    if (text && strstr(path, "/diff"))
        *text = strdup("+caf\xe9\n"); /* a Latin-1 file's line: not UTF-8 */
    size_t flen = 0;
    char *file = strcmp(method, "GET") == 0 ? scripted_file(path, &flen) : NULL;
    if (file && text)
        *text = file; /* a backend without call_bytes: the bytes up to the first NUL */
    else
        free(file);
    return st;
}

static const struct mcp_backend backend = {.call = call};
static const struct mcp_backend bytes_backend = {.call = call, .call_bytes = call_bytes};

static int setup(void **state)
{
    (void)state;
    sent = json_array();
    requests = json_array();
    bodies = json_array();
    sandboxes_made = 0;
    process_exits = true;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(sent);
    json_decref(requests);
    json_decref(bodies);
    return 0;
}

static void handle(struct mcp_session *s, const char *text)
{
    json_error_t e;
    json_t *m = json_loads(text, 0, &e);
    assert_non_null(m);
    mcp_session_handle(s, m);
    json_decref(m);
}

/* The response with id (an integer), waited for up to 30 s; NULL if none came. */
static json_t *response(json_int_t id)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&lock);
    for (;;) {
        size_t i;
        json_t *m;
        json_array_foreach (sent, i, m) {
            json_t *mid = json_object_get(m, "id");
            if (json_is_integer(mid) && json_integer_value(mid) == id) {
                pthread_mutex_unlock(&lock);
                return m;
            }
        }
        if (pthread_cond_timedwait(&changed, &lock, &until) != 0) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
    }
}

static int error_code(json_t *m)
{
    return (int)json_integer_value(json_object_get(json_object_get(m, "error"), "code"));
}

static struct mcp_session *ready_session_on(const struct mcp_backend *be)
{
    struct mcp_session *s = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(mcp_session_new(&s, be, emit, NULL, &err), 0);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
              "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{}}}");
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    assert_true(mcp_session_ready(s));
    return s;
}

static struct mcp_session *ready_session(void)
{
    return ready_session_on(&backend);
}

static void test_negotiation(void **state)
{
    (void)state;
    struct mcp_session *s = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(mcp_session_new(&s, &backend, emit, NULL, &err), 0);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/list\"}");
    assert_int_equal(error_code(response(9)), -32600);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
              "{\"protocolVersion\":\"1999-01-01\"}}");
    json_t *r = json_object_get(response(1), "result");
    assert_string_equal(json_string_value(json_object_get(r, "protocolVersion")), "2025-11-25");
    assert_non_null(json_object_get(json_object_get(r, "capabilities"), "tools"));
    assert_non_null(json_object_get(json_object_get(r, "capabilities"), "logging"));
    assert_false(mcp_session_ready(s));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":"
              "{\"protocolVersion\":\"2024-11-05\"}}");
    assert_int_equal(error_code(response(2)), -32600); /* a second initialize */
    mcp_session_end(s);
    s = ready_session();
    r = json_object_get(response(1), "result");
    mcp_session_end(s);
}

static void test_jsonrpc_errors(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"no/such\"}");
    assert_int_equal(error_code(response(2)), -32601);
    handle(s, "{\"jsonrpc\":\"1.0\",\"id\":3,\"method\":\"ping\"}");
    assert_int_equal(error_code(response(3)), -32600);
    handle(s,
           "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}");
    assert_int_equal(error_code(response(4)), -32602);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"logging/setLevel\",\"params\":"
              "{\"level\":\"loud\"}}");
    assert_int_equal(error_code(response(5)), -32602);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"logging/setLevel\",\"params\":"
              "{\"level\":\"debug\"}}");
    assert_non_null(json_object_get(response(6), "result"));
    /* A batch: the ping's answer and the bad element's error come back as one array. */
    size_t before = json_array_size(sent);
    handle(s, "[{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/whatever\"},42]");
    assert_int_equal(json_array_size(sent), before + 1);
    json_t *batch = json_array_get(sent, before);
    assert_true(json_is_array(batch));
    assert_int_equal(json_array_size(batch), 2);
    assert_int_equal(error_code(json_array_get(batch, 1)), -32600);
    handle(s, "[]");
    assert_int_equal(error_code(json_array_get(sent, json_array_size(sent) - 1)), -32600);
    mcp_session_parse_error(s, "not JSON");
    assert_int_equal(error_code(json_array_get(sent, json_array_size(sent) - 1)), -32700);
    mcp_session_end(s);
}

static void test_tools_list(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
    json_t *tools = json_object_get(json_object_get(response(2), "result"), "tools");
    assert_int_equal(json_array_size(tools), 24);
    size_t i;
    json_t *t;
    json_array_foreach (tools, i, t) {
        json_t *in = json_object_get(t, "inputSchema");
        assert_string_equal(json_string_value(json_object_get(in, "type")), "object");
        assert_true(json_is_false(json_object_get(in, "additionalProperties")));
        assert_non_null(json_string_value(json_object_get(t, "description")));
    }
    mcp_session_end(s);
}

/* The text of a tools/call response with id, and whether it is an error. */
static const char *call_text(json_int_t id, bool *is_error)
{
    json_t *r = json_object_get(response(id), "result");
    assert_non_null(r);
    *is_error = json_is_true(json_object_get(r, "isError"));
    return json_string_value(
        json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    bool e = false;
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\",\"argv\":\"x\"}}}");
    assert_non_null(strstr(call_text(2, &e), "argv must be an array, not a string"));
    assert_true(e);
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"command\":\"true\"}}}");
    assert_non_null(strstr(call_text(3, &e), "'sandbox_id' is missing"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"create_sandbox\",\"arguments\":{\"limits\":{\"pids\":2}}}}");
    assert_non_null(strstr(call_text(4, &e), "limits.pids must be 8..4096"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"write_file\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\",\"path\":"
              "\"a\",\"content\":\"b\",\"encoding\":\"rot13\"}}}");
    assert_non_null(strstr(call_text(5, &e), "encoding must be one of: utf-8, base64"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-1\",\"command\":\"true\"}}}");
    assert_non_null(strstr(call_text(6, &e), "not a sandbox id"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-00000000000000ab\",\"command\":"
              "\"true\"}}}");
    assert_non_null(
        strstr(call_text(7, &e), "no sandbox sb-00000000000000ab (not_found, HTTP 404)"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\",\"bogus\":1}}}");
    assert_non_null(strstr(call_text(8, &e), "unknown field 'bogus'"));
    assert_true(e);
    mcp_session_end(s);
}

static void test_failing_command(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\",\"command\":"
              "\"exit 3\"}}}");
    json_t *r = json_object_get(response(2), "result");
    assert_true(json_is_true(json_object_get(r, "isError")));
    json_t *sc = json_object_get(r, "structuredContent");
    assert_int_equal(json_integer_value(json_object_get(sc, "exit_code")), 3);
    assert_string_equal(json_string_value(json_object_get(sc, "stdout")), "out\n");
    mcp_session_end(s);
}

static bool asked(const char *prefix)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    size_t i;
    json_t *r;
    json_array_foreach (requests, i, r) {
        if (strncmp(json_string_value(r), prefix, strlen(prefix)) == 0)
            found = true;
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static void test_cancel(void **state)
{
    (void)state;
    process_exits = false;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"exec\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\",\"command\":"
              "\"sleep 600\"},\"_meta\":{\"progressToken\":\"t\"}}}");
    /* Positive control: the command was started and is being followed. */
    for (int i = 0; i < 3000 && !asked("GET /v1/sandboxes/sb-0000000000000001/processes/"); i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    assert_true(
        asked("GET /v1/sandboxes/sb-0000000000000001/processes/pr-00000000000000aa/output"));
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":"
              "{\"requestId\":2}}");
    mcp_session_end(s); /* waits for the call */
    assert_true(
        asked("POST /v1/sandboxes/sb-0000000000000001/processes/pr-00000000000000aa/signal"));
    size_t i;
    json_t *m;
    json_array_foreach (sent, i, m) {
        json_t *id = json_object_get(m, "id");
        assert_false(json_is_integer(id) && json_integer_value(id) == 2); /* no response */
    }
}

static void test_session_end(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"create_sandbox\",\"arguments\":{\"keep\":true}}}");
    json_t *kept = json_object_get(json_object_get(response(2), "result"), "structuredContent");
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"create_sandbox\",\"arguments\":{}}}");
    json_t *gone = json_object_get(json_object_get(response(3), "result"), "structuredContent");
    char kpath[64], gpath[64];
    snprintf(kpath, sizeof(kpath), "DELETE /v1/sandboxes/%s",
             json_string_value(json_object_get(kept, "id")));
    snprintf(gpath, sizeof(gpath), "DELETE /v1/sandboxes/%s",
             json_string_value(json_object_get(gone, "id")));
    assert_false(asked(gpath));
    mcp_session_end(s);
    assert_true(asked(gpath));
    assert_false(asked(kpath));
}

/* read_file's result for file name in sandbox sb-0000000000000001, as request id. */
static json_t *read_file(struct mcp_session *s, json_int_t id, const char *name)
{
    char req[256];
    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"tools/call\",\"params\":{"
             "\"name\":\"read_file\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\","
             "\"path\":\"%s\"}}}",
             (long long)id, name);
    handle(s, req);
    json_t *r = json_object_get(response(id), "result");
    assert_non_null(r);
    return r;
}

static const char *sc_string(json_t *r, const char *key)
{
    return json_string_value(json_object_get(json_object_get(r, "structuredContent"), key));
}

static json_int_t sc_int(json_t *r, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(r, "structuredContent"), key));
}

static void test_read_file(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session_on(&bytes_backend);
    /* UTF-8 text: as text. */
    json_t *r = read_file(s, 2, "text.txt");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "content"), "h\xc3\xa9llo");
    assert_string_equal(sc_string(r, "encoding"), "utf-8");
    assert_int_equal(sc_int(r, "size"), 6);
    /* NUL and bytes that are not UTF-8: all of them, base64-encoded ("a\0b\xff\xfe"). */
    r = read_file(s, 3, "nul.bin");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "encoding"), "base64");
    assert_string_equal(sc_string(r, "content"), "YQBi//4=");
    assert_int_equal(sc_int(r, "size"), 5);
    assert_non_null(strstr(json_string_value(json_object_get(
                               json_array_get(json_object_get(r, "content"), 0), "text")),
                           "YQBi//4="));
    /* A PNG: image content first, with its type, and the bytes in structuredContent. */
    r = read_file(s, 4, "img.png");
    json_t *img = json_array_get(json_object_get(r, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(img, "type")), "image");
    assert_string_equal(json_string_value(json_object_get(img, "mimeType")), "image/png");
    assert_string_equal(json_string_value(json_object_get(img, "data")),
                        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ");
    assert_string_equal(sc_string(r, "content"), "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ");
    assert_string_equal(sc_string(r, "mime_type"), "image/png");
    /* Binary over 1 MiB: an error saying how to read it in parts. */
    r = read_file(s, 5, "big.bin");
    assert_true(json_is_true(json_object_get(r, "isError")));
    const char *why = json_string_value(
        json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
    assert_non_null(strstr(why, "1048577 bytes"));
    assert_non_null(strstr(why, "offset and length: offset 0, 1048576, 2097152, ... with "
                                "length 1048576"));
    /* Text over 1 MiB: cut before the character that crosses the bound, not inside it. */
    r = read_file(s, 6, "big.txt");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_true(json_is_true(json_object_get(json_object_get(r, "structuredContent"), "truncated")));
    assert_int_equal(strlen(sc_string(r, "content")), BIG - 1);
    assert_int_equal(sc_int(r, "size"), BIG + 10);
    /* An API error is the tool's error. */
    r = read_file(s, 7, "none");
    assert_true(json_is_true(json_object_get(r, "isError")));
    mcp_session_end(s);
}

/* A backend that serves byte ranges as the daemon does (206 with the file's size; 416 for an
 * offset past the end), recording the range it was asked for. */
static uint64_t asked_first, asked_last;

static int call_range(void *ctx, const char *path, uint64_t first, uint64_t last,
                      json_t **answer, char **data, size_t *len, uint64_t *total,
                      clr_error *err)
{
    (void)ctx;
    (void)err;
    asked_first = first;
    asked_last = last;
    size_t n = 0;
    char *d = scripted_file(path, &n);
    *answer = NULL;
    *data = NULL;
    *len = 0;
    *total = 0;
    if (!d || first >= n) {
        free(d);
        *answer = json_pack("{s:{s:s, s:s}}", "error", "code", "invalid", "message",
                            "range: the file has 6 bytes");
        return d ? 416 : 404;
    }
    size_t k = (last >= n ? n - 1 : (size_t)last) - (size_t)first + 1;
    memmove(d, d + first, k);
    d[k] = '\0';
    *data = d;
    *len = k;
    *total = n;
    return 206;
}

static const struct mcp_backend range_backend = {
    .call = call, .call_bytes = call_bytes, .call_range = call_range};

static json_t *read_range(struct mcp_session *s, json_int_t id, const char *name,
                          const char *range)
{
    char req[320];
    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"tools/call\",\"params\":{"
             "\"name\":\"read_file\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\","
             "\"path\":\"%s\"%s}}}",
             (long long)id, name, range);
    handle(s, req);
    json_t *r = json_object_get(response(id), "result");
    assert_non_null(r);
    return r;
}

static const char *first_text(json_t *r)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
}

/* read_file with offset and length: only those bytes are asked for (a byte range), as text when
 * they are UTF-8, else base64; size is the whole file's; past the end is the API's error. */
static void test_read_file_range(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session_on(&range_backend);
    json_t *r = read_range(s, 2, "text.txt", ",\"offset\":1,\"length\":2");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_int_equal(asked_first, 1);
    assert_int_equal(asked_last, 2);
    assert_string_equal(sc_string(r, "content"), "\xc3\xa9");
    assert_string_equal(sc_string(r, "encoding"), "utf-8");
    assert_int_equal(sc_int(r, "size"), 6);
    assert_int_equal(sc_int(r, "offset"), 1);
    assert_int_equal(sc_int(r, "length"), 2);
    assert_true(json_is_true(json_object_get(json_object_get(r, "structuredContent"),
                                             "truncated")));
    assert_non_null(strstr(first_text(r), "bytes 1 to 2 of 6 of text.txt"));
    /* An offset alone: up to 1 MiB from it; NUL and bytes that are not UTF-8 as base64. */
    r = read_range(s, 3, "nul.bin", ",\"offset\":1");
    assert_int_equal(asked_first, 1);
    assert_int_equal(asked_last, BIG);
    assert_string_equal(sc_string(r, "encoding"), "base64");
    assert_string_equal(sc_string(r, "content"), "AGL//g==");
    assert_int_equal(sc_int(r, "length"), 4);
    assert_false(json_is_true(json_object_get(json_object_get(r, "structuredContent"),
                                              "truncated")));
    /* The part past 1 MiB of a binary file too large to read at once. */
    r = read_range(s, 4, "big.bin", ",\"offset\":1048576,\"length\":1048576");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "content"), "AA==");
    assert_int_equal(sc_int(r, "size"), BIG + 1);
    /* Past the end: the API's answer (416) as the tool's error. */
    r = read_range(s, 5, "text.txt", ",\"offset\":6");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "the file has 6 bytes"));
    assert_non_null(strstr(first_text(r), "416"));
    /* A length of 0 or over 1 MiB, a negative offset: refused by the tool's schema. */
    r = read_range(s, 6, "text.txt", ",\"length\":0");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "length"));
    r = read_range(s, 7, "text.txt", ",\"length\":1048577");
    assert_true(json_is_true(json_object_get(r, "isError")));
    r = read_range(s, 8, "text.txt", ",\"offset\":-1");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "offset"));
    mcp_session_end(s);
    /* A backend without call_range: the whole file, the range cut from it. */
    s = ready_session_on(&bytes_backend);
    r = read_range(s, 12, "text.txt", ",\"offset\":1,\"length\":2");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "content"), "\xc3\xa9");
    assert_int_equal(sc_int(r, "size"), 6);
    assert_int_equal(sc_int(r, "length"), 2);
    r = read_range(s, 13, "text.txt", ",\"offset\":6");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "offset 6 is past the file's end: it has 6 bytes"));
    mcp_session_end(s);
}

/* A backend without call_bytes: read_file falls back on call (bytes up to the first NUL). */
static void test_read_file_without_call_bytes(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    json_t *r = read_file(s, 2, "text.txt");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "content"), "h\xc3\xa9llo");
    r = read_file(s, 3, "nul.bin");
    assert_string_equal(sc_string(r, "content"), "a");
    assert_int_equal(sc_int(r, "size"), 1);
    mcp_session_end(s);
}

/* A diff that is not UTF-8 still answers: its bytes shown as U+FFFD (not a call left
 * without a response). */
static void test_diff_not_utf8(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
              "\"diff\",\"arguments\":{\"sandbox_id\":\"sb-0000000000000001\"}}}");
    json_t *r = json_object_get(response(2), "result");
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "diff"), "+caf\xef\xbf\xbd\n");
    mcp_session_end(s);
}

/* The body of the last backend call whose "METHOD PATH" is line (a new reference), or NULL. */
static json_t *body_of(const char *line)
{
    json_t *found = NULL;
    pthread_mutex_lock(&lock);
    size_t i;
    json_t *r;
    json_array_foreach (requests, i, r) {
        if (strcmp(json_string_value(r), line) == 0) {
            json_decref(found);
            found = json_incref(json_array_get(bodies, i));
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static json_t *tool_call_result(struct mcp_session *s, json_int_t id, const char *name,
                                const char *args)
{
    char req[512];
    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"tools/call\",\"params\":{"
             "\"name\":\"%s\",\"arguments\":%s}}",
             (long long)id, name, args);
    handle(s, req);
    json_t *r = json_object_get(response(id), "result");
    assert_non_null(r);
    return r;
}

/* The snapshot tools: each one REST call with the request the API takes; a fork is this
 * session's sandbox (destroyed at its end unless kept); ids are checked before any call. */
static void test_snapshot_tools(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    json_t *r = tool_call_result(s, 2, "snapshot_sandbox",
                                 "{\"sandbox_id\":\"sb-0000000000000001\",\"keep\":true}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "id"), "snap-00000000000000c1");
    assert_non_null(strstr(first_text(r), "snapshot snap-00000000000000c1 of sandbox "
                                          "sb-0000000000000001 taken (4096 bytes"));
    json_t *b = body_of("POST /v1/sandboxes/sb-0000000000000001/snapshots");
    assert_non_null(b);
    assert_true(json_is_true(json_object_get(b, "keep")));
    assert_null(json_object_get(b, "ttl"));
    json_decref(b);
    r = tool_call_result(s, 3, "list_snapshots", "{\"sandbox_id\":\"sb-0000000000000001\"}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(r, "structuredContent"),
                                                     "snapshots")),
                     2);
    assert_non_null(strstr(first_text(r), "snap-00000000000000c1 4096 bytes, created 100, "
                                          "expires 86500, kept\n"));
    assert_non_null(strstr(first_text(r), "snap-00000000000000c2 8192 bytes, created 200, "
                                          "expires 86600, held by a restore\n"));
    r = tool_call_result(s, 4, "fork_sandbox",
                         "{\"snapshot_id\":\"snap-00000000000000c1\",\"limits\":"
                         "{\"memory\":\"256m\"}}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    const char *fork = sc_string(r, "id");
    assert_non_null(fork);
    char fork_delete[64];
    snprintf(fork_delete, sizeof(fork_delete), "DELETE /v1/sandboxes/%s", fork);
    b = body_of("POST /v1/sandboxes");
    assert_string_equal(json_string_value(json_object_get(b, "snapshot")),
                        "snap-00000000000000c1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(b, "limits"), "memory")), "256m");
    json_decref(b);
    r = tool_call_result(s, 5, "restore_sandbox",
                         "{\"sandbox_id\":\"sb-0000000000000001\",\"snapshot_id\":"
                         "\"snap-00000000000000c1\"}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    b = body_of("POST /v1/sandboxes/sb-0000000000000001/restore");
    assert_string_equal(json_string_value(json_object_get(b, "snapshot")),
                        "snap-00000000000000c1");
    json_decref(b);
    r = tool_call_result(s, 6, "delete_snapshot",
                         "{\"sandbox_id\":\"sb-0000000000000001\",\"snapshot_id\":"
                         "\"snap-00000000000000c1\"}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_true(
        asked("DELETE /v1/sandboxes/sb-0000000000000001/snapshots/snap-00000000000000c1"));
    /* Refused before any call: a bad snapshot id, a missing one, a bad ttl, a bad sandbox. */
    size_t before = json_array_size(requests);
    r = tool_call_result(s, 7, "fork_sandbox", "{\"snapshot_id\":\"snap-1\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "'snap-1' is not a snapshot id"));
    r = tool_call_result(s, 8, "restore_sandbox", "{\"sandbox_id\":\"sb-0000000000000001\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "'snapshot_id' is missing"));
    r = tool_call_result(s, 9, "snapshot_sandbox",
                         "{\"sandbox_id\":\"sb-0000000000000001\",\"ttl\":5}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "ttl"));
    r = tool_call_result(s, 10, "delete_snapshot",
                         "{\"sandbox_id\":\"sb-1\",\"snapshot_id\":\"snap-00000000000000c1\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "not a sandbox id"));
    r = tool_call_result(s, 11, "list_snapshots", "{}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_int_equal(json_array_size(requests), before);
    /* An API refusal is the tool's error, in words. */
    r = tool_call_result(s, 12, "snapshot_sandbox", "{\"sandbox_id\":\"sb-00000000000000ab\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "snapshot_sandbox failed: no sandbox"));
    assert_false(asked(fork_delete));
    mcp_session_end(s);
    assert_true(asked(fork_delete)); /* the fork was this session's */
}

/* restart_code and end_code: the API's calls (no body), their answers in words and as
 * structuredContent; a bad or missing sandbox id refused before any call; the API's refusal is
 * the tool's error. */
static void test_code_session_tools(void **state)
{
    (void)state;
    struct mcp_session *s = ready_session();
    json_t *r = tool_call_result(s, 2, "restart_code", "{\"sandbox_id\":\"sb-0000000000000001\"}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_string_equal(sc_string(r, "status"), "restarted");
    assert_string_equal(sc_string(r, "sandbox_id"), "sb-0000000000000001");
    assert_non_null(strstr(first_text(r), "sandbox sb-0000000000000001 has a fresh kernel"));
    assert_true(asked("POST /v1/sandboxes/sb-0000000000000001/code/restart"));
    json_t *b = body_of("POST /v1/sandboxes/sb-0000000000000001/code/restart");
    assert_true(json_is_null(b));
    json_decref(b);
    r = tool_call_result(s, 3, "end_code", "{\"sandbox_id\":\"sb-0000000000000001\"}");
    assert_false(json_is_true(json_object_get(r, "isError")));
    assert_true(json_is_true(json_object_get(json_object_get(r, "structuredContent"), "ended")));
    assert_non_null(strstr(first_text(r), "code session of sandbox sb-0000000000000001 is ended"));
    assert_true(asked("DELETE /v1/sandboxes/sb-0000000000000001/code"));
    size_t before = json_array_size(requests);
    r = tool_call_result(s, 4, "end_code", "{\"sandbox_id\":\"sb-1\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "not a sandbox id"));
    r = tool_call_result(s, 5, "restart_code", "{}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_int_equal(json_array_size(requests), before);
    r = tool_call_result(s, 6, "restart_code", "{\"sandbox_id\":\"sb-00000000000000ab\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "restart_code failed: no sandbox"));
    r = tool_call_result(s, 7, "end_code", "{\"sandbox_id\":\"sb-00000000000000ab\"}");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_non_null(strstr(first_text(r), "end_code failed: no sandbox"));
    mcp_session_end(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonrpc_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tools_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file_without_call_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diff_not_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_tools, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_session_tools, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
