/* The fixture the code interpreter's service tests share (test_service_code*.c): sandboxes
 * ID_A, ID_B (running) and ID_L (lost) on the service of test_service_env.h, the scripted
 * engine's running containers and bridges (a bridge answers only what its stream holds: a
 * cell's answer names the nonce, fixed while fixed_nonce is set), and the calls and checks of
 * cells and restarts. Include after <cmocka.h>, once per test binary (it defines getrandom). */
#ifndef CLR_TEST_SERVICE_CODE_FIXTURE_H
#define CLR_TEST_SERVICE_CODE_FIXTURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fake_engine.h"
#include "proto.h"
#include "service/code.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000d1"
#define ID_B "sb-00000000000000d2"
#define ID_L "sb-00000000000000d3"
#define ID_C "sb-00000000000000d4"
#define NO_ROW "sb-00000000000000df"

/* The nonces a cell sends its bridge (code.c cell_exchange) come from getrandom: in this binary
 * they are fixed (bytes of 0x5a) while fixed_nonce is set, so that a scripted bridge can answer
 * a cell. While it is set every call in this binary gets those bytes (ids and keys too: the test
 * that sets it makes none it compares); when it is not set, the kernel's. */
static atomic_bool fixed_nonce;
#define FIXED_NONCE "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
    if (atomic_load(&fixed_nonce)) {
        memset(buf, 0x5a, len);
        return (ssize_t)len;
    }
    return (ssize_t)syscall(SYS_getrandom, buf, len, flags);
}

static inline int setup(void **state)
{
    struct test_env *e = NULL;
    if (test_env_setup(&e, "code") != 0)
        return -1;
    test_env_all_running(e);
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_A, now + 36000, 1000, 0);
    test_env_row(e, ID_B, now + 36000, 1000, 0);
    test_env_row(e, ID_L, now + 36000, 1000, 0);
    test_env_set_state(e, ID_L, CLR_STATE_LOST, "oom");
    *state = e;
    return 0;
}

static inline int teardown(void **state)
{
    struct test_env *e = *state;
    svc_code_stop(&e->svc);
    atomic_store(&fixed_nonce, false); /* a test that failed half-way left it set */
    clr_service *svc = &e->svc;
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    test_env_teardown(e);
    return 0;
}

/* The engine knows sandbox id as a running container cid of this owner. */
static inline void script_running(struct test_env *e, const char *id, const char *cid)
{
    clr_sandbox_info info;
    test_env_info(&info, id, TEST_OWNER);
    json_t *j = json_pack("{s:s, s:{s:s, s:b, s:b, s:b}, s:{s:o}}", "Id", cid, "State",
                          "Status", "running", "Running", 1, "Paused", 0, "OOMKilled", 0,
                          "Config", "Labels", clr_sandbox_labels(&info));
    char match[128];
    snprintf(match, sizeof(match), "GET " TEST_API "clearing-%s/json", id);
    fake_answer(e->f, test_env_keep(e, strdup(match)), 200,
                test_env_keep(e, json_dumps(j, JSON_COMPACT)));
    json_decref(j);
    fake_answer(e->f, "GET " TEST_API "cid-", 200, "{\"State\":{\"Running\":true}}");
}

static inline void expect_restart(clr_service *svc, const char *id)
{
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_code_restart(svc, id, "alice", &out, &err) < 0)
        fail_msg("restart of %s: %s", id, err.message);
    assert_string_equal(json_string_value(json_object_get(out, "status")), "restarted");
    json_decref(out);
}

/* An exec stream in the engine's multiplexing: each line on the bridge's stdout, in an agent
 * STDOUT frame of the exec's channel 1; then silent (fake_engine.h). Kept until teardown. */
static inline void script_bridge(struct test_env *e, const char *cid, const char *exec_id,
                                 const char *const *lines)
{
    size_t len = 0;
    for (size_t i = 0; lines[i]; i++)
        len += 8 + CLR_PROTO_HEADER_SIZE + strlen(lines[i]);
    uint8_t *stream = malloc(len), *p = stream;
    assert_non_null(stream);
    for (size_t i = 0; lines[i]; i++) {
        uint32_t n = (uint32_t)strlen(lines[i]);
        memset(p, 0, 8);
        p[0] = 1;
        clr_be32_write(p + 4, CLR_PROTO_HEADER_SIZE + n);
        clr_frame_header(p + 8, 1, CLR_FRAME_STDOUT, n);
        memcpy(p + 8 + CLR_PROTO_HEADER_SIZE, lines[i], n);
        p += 8 + CLR_PROTO_HEADER_SIZE + n;
    }
    char match[128], body[64];
    snprintf(match, sizeof(match), "POST " TEST_API "%s/exec", cid);
    snprintf(body, sizeof(body), "{\"Id\":\"%s\"}", exec_id);
    fake_answer(e->f, test_env_keep(e, strdup(match)), 201, test_env_keep(e, strdup(body)));
    snprintf(match, sizeof(match), "POST /v1.41/exec/%s/start", exec_id);
    fake_answer_bytes(e->f, test_env_keep(e, strdup(match)), 200,
                      test_env_keep(e, (char *)stream), len);
}

/* A bridge that starts, then breaks its protocol: the cell sent to it ends its kernel (status
 * died), with its state. */
static const char *const breaking_bridge[] __attribute__((unused)) = {
    "{\"event\":\"ready\"}\n", "not a line of the bridge\n", NULL};
/* A bridge that starts and answers the cell sent to it (the fixed nonce), as the bridge does:
 * restarted false, no message (the kernel knows nothing of the one before it). */
static const char *const answering_bridge[] __attribute__((unused)) = {
    "{\"event\":\"ready\"}\n",
    "{\"event\":\"result\",\"nonce\":\"" FIXED_NONCE "\",\"status\":\"ok\","
    "\"execution_count\":1,\"stdout\":\"2\\n\",\"stderr\":\"\",\"result\":null,"
    "\"displays\":[],\"error\":null,\"truncated\":false,\"restarted\":false,"
    "\"message\":null}\n",
    NULL};

/* A cell of sandbox id that gets an answer (the test fails when it is refused). */
static inline json_t *cell_answer(clr_service *svc, const char *id)
{
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_code_run(svc, id, req, "alice", NULL, NULL, &out, &err) < 0)
        fail_msg("cell of %s refused: %s", id, err.message);
    json_decref(req);
    assert_non_null(out);
    return out;
}

/* A cell of sandbox id refused with code, its error saying says. */
static inline void cell_refused(clr_service *svc, const char *id, clr_error_code code,
                                const char *says)
{
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, id, req, "alice", NULL, NULL, &out, &err), -1);
    assert_null(out);
    expect_error(&err, code, says);
    json_decref(req);
}

static inline void expect_answer(json_t *a, const char *status, bool restarted,
                                 const char *message)
{
    const char *got = json_string_value(json_object_get(a, "message"));
    if (strcmp(json_string_value(json_object_get(a, "status")), status) != 0 ||
        json_is_true(json_object_get(a, "restarted")) != restarted ||
        (message && (!got || !strstr(got, message))) || (!message && got))
        fail_msg("answer %s, expected status %s, restarted %d, message %s",
                 json_dumps(a, JSON_COMPACT), status, restarted, message ? message : "none");
    json_decref(a);
}

#endif
