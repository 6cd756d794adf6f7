/* lib/service/procs.c against the scripted engine of fake_engine.h, a state database and an
 * audit log in a temporary directory: what a background process's start refuses before it
 * reaches the engine (not an id, unknown fields, no row, a sandbox not running, the audit log
 * unwritable, the per-sandbox limit and max_execs: audited), what it records (the request
 * redacted, the audit record naming the process id, the sandbox's activity), the table's
 * bookkeeping (list, get, output offsets, busy), and what a process that has exited refuses
 * (stdin, signals) next to one that runs.
 *
 * The scripted engine cannot speak the agent's protocol (its streams echo, and its answers are
 * text): a process whose exec stream echoes ends at once (the echoed request is not a frame of
 * the engine's multiplexing), and one whose exec start is answered 200 with no body runs until
 * it is killed (its stream stays open, silent). So the output ring (ring_append, offsets past
 * what was kept) is not reached here; the integration suites run real processes. The limit of
 * 256 processes in all is not reached either (the limit per sandbox, 16, is): each running
 * process holds a connection of its own, and each process here gets an engine of its own. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "service/procs.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000c1"
#define ID_B "sb-00000000000000c2"
#define ID_L "sb-00000000000000c3"
#define NO_ROW "sb-00000000000000cf"
#define MISSING "pr-0000000000000000"
#define N_ENGINES 18

struct fixture {
    struct test_env *e;
    struct fake *engines[N_ENGINES]; /* one per running process */
    size_t n_engines;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "procs") != 0)
        return -1;
    test_env_all_running(fx->e);
    int64_t now = (int64_t)time(NULL);
    test_env_row(fx->e, ID_A, now + 36000, 1000, 0);
    test_env_row(fx->e, ID_B, now + 36000, 1000, 0);
    test_env_row(fx->e, ID_L, now + 36000, 1000, 0);
    test_env_set_state(fx->e, ID_L, CLR_STATE_LOST, "oom");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    /* The processes end first (their streams close), then the engines they used. */
    svc_procs_stop(&fx->e->svc);
    clr_service *svc = &fx->e->svc;
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    test_env_teardown(fx->e);
    for (size_t i = 0; i < fx->n_engines; i++) {
        void *f = fx->engines[i];
        fake_teardown(&f);
    }
    free(fx);
    return 0;
}

/* Scripts engine f for processes of sandbox id: the container's inspect, the exec's create,
 * and its start: a stream that echoes (the process ends at once) or one that stays open and
 * silent (it runs until killed); the exec's look at whether the sandbox still runs says yes. */
static void script_engine(struct test_env *e, struct fake *f, const char *id, bool runs)
{
    clr_sandbox_info info;
    test_env_info(&info, id, TEST_OWNER);
    char cid[80], match[160];
    snprintf(cid, sizeof(cid), "cid-%s", id);
    json_t *j = json_pack("{s:s, s:{s:s, s:b, s:b, s:b}, s:{s:o}}", "Id", cid, "State",
                          "Status", "running", "Running", 1, "Paused", 0, "OOMKilled", 0,
                          "Config", "Labels", clr_sandbox_labels(&info));
    snprintf(match, sizeof(match), "GET " TEST_API "clearing-%s/json", id);
    fake_answer(f, test_env_keep(e, strdup(match)), 200,
                test_env_keep(e, json_dumps(j, JSON_COMPACT)));
    json_decref(j);
    fake_answer(f, "GET " TEST_API "cid-", 200, "{\"State\":{\"Running\":true}}");
    fake_answer(f, "POST " TEST_API "cid-", 201, "{\"Id\":\"exec-1\"}");
    snprintf(match, sizeof(match), "POST " TEST_API "%s/kill", cid);
    fake_answer(f, test_env_keep(e, strdup(match)), 204, NULL); /* the exec's backstop */
    fake_answer(f, "POST /v1.41/exec/exec-1/start", runs ? 200 : 101, runs ? "" : NULL);
}

/* Points the service at a new engine of its own for the next process. */
static struct fake *own_engine(struct fixture *fx, const char *id)
{
    assert_true(fx->n_engines < N_ENGINES);
    void *f = NULL;
    assert_int_equal(fake_setup(&f), 0);
    fx->engines[fx->n_engines++] = f;
    script_engine(fx->e, f, id, true);
    fx->e->svc.docker_host = ((struct fake *)f)->sock;
    return f;
}

static json_t *start(clr_service *svc, const char *id, const char *json)
{
    json_t *req = json_loads(json, 0, NULL);
    assert_non_null(req);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_proc_start(svc, id, req, "alice", &out, &err) != 0)
        fail_msg("start %s: %s", json, err.message);
    json_decref(req);
    assert_non_null(out);
    return out;
}

static void expect_refused(clr_service *svc, const char *id, const char *json,
                           clr_error_code code, const char *says)
{
    json_t *req = json_loads(json, 0, NULL);
    assert_non_null(req);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_start(svc, id, req, "alice", &out, &err), -1);
    json_decref(req);
    assert_null(out);
    if (err.code != code || !strstr(err.message, says))
        fail_msg("start %s on %s: code %d \"%s\", expected %d saying \"%s\"", json, id,
                 (int)err.code, err.message, (int)code, says);
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string \"%s\"", key);
    return s;
}

static size_t listed(clr_service *svc, const char *id)
{
    json_t *l = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_list(svc, id, &l, &err), 0);
    size_t n = json_array_size(json_object_get(l, "processes"));
    json_decref(l);
    return n;
}

static int audit_process_records(struct test_env *e, const char *action, const char *outcome)
{
    return audit_count_where(e, action, "outcome", outcome, NULL, NULL, NULL, NULL);
}

/* A process refused for want of a slot, the first of actor's on sandbox id: the newest
 * "process.start" record says refused, by actor, about sandbox id, with details exactly {code
 * limit, error says, source actor, count 1} (no process id, no command); and the log holds no
 * process.start naming the refused request's marker argument. */
static void expect_refusal_record(struct test_env *e, const char *id, const char *actor,
                                  const char *says, const char *marker)
{
    json_t *r = expect_audit(e, "process.start", "refused", id, actor);
    expect_refusal_details(r, "limit", says, actor, 1, true);
    json_decref(r);
    char *text = test_env_audit_text(e);
    assert_null(strstr(text, marker));
    free(text);
}

static void test_start_refused(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    script_engine(e, e->f, ID_A, false);
    expect_refused(svc, "sb-../etc", "{\"argv\":[\"true\"]}", CLR_E_INVALID,
                   "is not a sandbox id");
    expect_refused(svc, ID_A, "{\"argv\":[\"true\"],\"timeout\":5}", CLR_E_INVALID, "timeout");
    expect_refused(svc, ID_A, "{\"cwd\":\"/\"}", CLR_E_INVALID, "exactly one of argv or shell");
    expect_refused(svc, ID_A, "{\"argv\":[\"true\"],\"shell\":\"true\"}", CLR_E_INVALID,
                   "exactly one of argv or shell");
    expect_refused(svc, NO_ROW, "{\"argv\":[\"true\"]}", CLR_E_NOT_FOUND, "no sandbox");
    expect_refused(svc, ID_L, "{\"argv\":[\"true\"]}", CLR_E_CONFLICT, "it is lost (oom)");
    /* None of them reached the engine or the log. */
    assert_int_equal(fake_count(e->f, "POST "), 0);
    assert_int_equal(fake_count(e->f, "GET "), 0);
    assert_int_equal(audit_process_records(e, "process.start", "ok"), 0);

    /* Not recorded, not run: the audit log refuses, the engine is not asked. */
    test_env_break_audit(e, true);
    json_t *req = json_pack("{s:[s]}", "argv", "true");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_start(svc, ID_A, req, "alice", &out, &err), -1);
    assert_non_null(strstr(err.message, "audit log"));
    assert_int_equal(fake_count(e->f, "POST "), 0);
    test_env_break_audit(e, false);

    /* The engine refuses the exec: recorded as started, then as failed; nothing listed, and
     * the engine's connection is not kept. */
    fake_answer(e->f, "POST " TEST_API "cid-", 404, "{\"message\":\"No such container\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_start(svc, ID_A, req, "alice", &out, &err), -1);
    json_decref(req);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "sandbox " ID_A " does not exist"));
    /* Two calls: the live channel's attach (refused: the process falls back to a docker exec),
     * then that exec's create, refused too. */
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-"), 2);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-" ID_A "/attach"), 1);
    assert_int_equal(fake_count(e->f, "POST /v1.41/exec/"), 0);
    assert_int_equal(audit_process_records(e, "process.start", "ok"), 1);
    assert_int_equal(audit_process_records(e, "process.start", "error"), 1);
    assert_int_equal(listed(svc, ID_A), 0);
    assert_int_equal(svc->pool_n, 0);
    assert_false(clr_service_sandbox_busy(svc, ID_A));
}

/* Polls (60 s at most) until the process has exited; its output answer. */
static json_t *await_exit(clr_service *svc, const char *id, const char *pid)
{
    for (int i = 0; i < 600; i++) {
        json_t *o = NULL;
        clr_error err = CLR_ERROR_INIT;
        if (clr_service_proc_output(svc, id, pid, 0, 0, 100, &o, &err) != 0)
            fail_msg("output %s: %s", pid, err.message);
        if (strcmp(str(o, "state"), "exited") == 0)
            return o;
        json_decref(o);
    }
    fail_msg("process %s still runs after 60 s", pid);
    return NULL;
}

static void test_process_that_ends(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    script_engine(e, e->f, ID_A, false);
    int64_t t0 = (int64_t)time(NULL);
    json_t *p = start(svc, ID_A,
                      "{\"argv\":[\"cat\"],\"env\":{\"TOKEN\":\"s3cret\"},\"stdin\":\"hello\"}");
    int64_t t1 = (int64_t)time(NULL);
    /* Its id, its sandbox, the request without the secret or the stdin. */
    const char *pid = str(p, "id");
    assert_int_equal(strlen(pid), 19);
    assert_memory_equal(pid, "pr-", 3);
    assert_int_equal(strspn(pid + 3, "0123456789abcdef"), 16);
    char id[32];
    snprintf(id, sizeof(id), "%s", pid);
    assert_string_equal(str(p, "sandbox_id"), ID_A);
    json_t *r = json_object_get(p, "request");
    assert_string_equal(str(json_object_get(r, "env"), "TOKEN"), "(redacted)");
    assert_null(json_object_get(r, "stdin"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "argv"), 0)), "cat");
    json_int_t started = json_integer_value(json_object_get(p, "started_at"));
    assert_true(started >= t0 && started <= t1);
    json_decref(p);
    /* Recorded before it ran, naming the id it got, without the secret. */
    assert_int_equal(audit_process_records(e, "process.start", "ok"), 1);
    FILE *fp = fopen(e->log, "r");
    char log[16384];
    size_t n = fread(log, 1, sizeof(log) - 1, fp);
    fclose(fp);
    log[n] = '\0';
    char want[64];
    snprintf(want, sizeof(want), "\"process_id\":\"%s\"", id);
    assert_non_null(strstr(log, want));
    assert_null(strstr(log, "s3cret"));
    /* The engine ran the agent's exec mode as root in the sandbox's container. */
    json_t *body = fake_body_of(e->f, "POST " TEST_API "cid-" ID_A "/exec");
    assert_non_null(body);
    assert_string_equal(str(body, "User"), "0:0");
    assert_string_equal(json_string_value(json_array_get(json_object_get(body, "Cmd"), 1)),
                        "exec");
    json_decref(body);

    json_t *o = await_exit(svc, ID_A, id);
    assert_string_equal(str(o, "id"), id);
    /* Its figures only: the output is in the ring, which holds nothing here. */
    json_t *res = json_object_get(o, "result");
    assert_true(json_is_object(res));
    assert_non_null(json_object_get(res, "status"));
    assert_null(json_object_get(res, "stdout"));
    json_t *out = json_object_get(o, "stdout");
    assert_int_equal(json_integer_value(json_object_get(out, "next_offset")), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "dropped")), 0);
    assert_string_equal(str(out, "data"), "");
    json_decref(o);

    /* The table: it is listed under its sandbox only, with its end. */
    assert_int_equal(listed(svc, ID_A), 1);
    assert_int_equal(listed(svc, ID_B), 0);
    json_t *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_get(svc, ID_A, id, &g, &err), 0);
    assert_string_equal(str(g, "state"), "exited");
    assert_true(json_integer_value(json_object_get(g, "finished_at")) >= started);
    json_decref(g);
    /* Its start and end count as the sandbox's activity (the idle reaper reads it). */
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
    assert_true(row.last_active_at >= t0);
    clr_store_sandbox_clear(&row);
    assert_false(clr_service_sandbox_busy(svc, ID_A));

    /* An exited process takes no stdin and no signal; nothing is recorded for them. */
    json_t *in = json_pack("{s:s}", "data", "more");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, in, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "has exited"));
    json_t *sig = json_pack("{s:s}", "signal", "TERM");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, sig, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_int_equal(audit_process_records(e, "process.signal", "ok"), 0);

    /* Unknown ids: in this sandbox, or a process of another sandbox. */
    const char *sandboxes[] = {ID_A, ID_B};
    const char *pids[] = {MISSING, id};
    for (size_t i = 0; i < 2; i++) {
        const char *sb = sandboxes[i], *pr = pids[i];
        err = (clr_error)CLR_ERROR_INIT;
        json_t *x = NULL;
        assert_int_equal(clr_service_proc_get(svc, sb, pr, &x, &err), -1);
        assert_int_equal(err.code, CLR_E_NOT_FOUND);
        assert_non_null(strstr(err.message, "no process"));
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_proc_output(svc, sb, pr, 0, 0, 0, &x, &err), -1);
        assert_int_equal(err.code, CLR_E_NOT_FOUND);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_proc_stdin(svc, sb, pr, in, &err), -1);
        assert_int_equal(err.code, CLR_E_NOT_FOUND);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_proc_signal(svc, sb, pr, sig, "alice", &err), -1);
        assert_int_equal(err.code, CLR_E_NOT_FOUND);
    }
    if (strcmp(id, MISSING) == 0)
        fail_msg("the process got the id used as missing");

    /* Bad requests: not an id, a wait past 60 s, a signal that is none, stdin not a string. */
    json_t *x = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_list(svc, "nope", &x, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_get(svc, "nope", id, &x, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_output(svc, ID_A, id, 0, 0, 60001, &x, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "at most 60 s"));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_output(svc, "nope", id, 0, 0, 0, &x, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_t *bad_sig = json_pack("{s:s}", "signal", "BOGUS");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, bad_sig, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_signal(svc, "nope", id, sig, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_t *bad_in = json_pack("{s:i}", "data", 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, bad_in, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_stdin(svc, "nope", id, in, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_decref(in);
    json_decref(sig);
    json_decref(bad_sig);
    json_decref(bad_in);
}

static void test_process_that_runs(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    own_engine(fx, ID_A);
    assert_false(clr_service_sandbox_busy(svc, ID_A));
    json_t *p = start(svc, ID_A, "{\"shell\":\"cat\"}");
    char id[32];
    snprintf(id, sizeof(id), "%s", str(p, "id"));
    assert_string_equal(str(p, "state"), "running");
    assert_true(json_is_null(json_object_get(p, "result")));
    json_decref(p);
    /* It holds its sandbox (the idle reaper leaves it); another sandbox is not held. */
    assert_true(clr_service_sandbox_busy(svc, ID_A));
    assert_false(clr_service_sandbox_busy(svc, ID_B));
    /* Its start counted as activity; set that back, to see its end count too. */
    int64_t t0 = (int64_t)time(NULL);
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
    assert_true(row.last_active_at > 1000);
    clr_store_sandbox_clear(&row);
    assert_int_equal(clr_store_sandbox_touch(svc->store, ID_A, 1000, &err), 0);

    /* Stdin, then its end; after the end, no more. */
    json_t *in = json_pack("{s:s, s:s}", "data", "abc", "data_base64", "ZGVm");
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, in, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_decref(in);
    in = json_pack("{s:s}", "data", "abc");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, in, &err), 0);
    json_decref(in);
    in = json_pack("{s:s, s:b}", "data_base64", "ZGVm", "eof", 1);
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, in, &err), 0);
    json_decref(in);
    in = json_pack("{s:s}", "data", "late");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_stdin(svc, ID_A, id, in, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "stdin is closed"));
    json_decref(in);

    /* A bounded wait on a quiet process answers it still runs. */
    json_t *o = NULL;
    assert_int_equal(clr_service_proc_output(svc, ID_A, id, 0, 0, 50, &o, &err), 0);
    assert_string_equal(str(o, "state"), "running");
    json_decref(o);

    /* Signals: recorded as the caller's, by number, before they are sent. */
    json_t *sig = json_pack("{s:s}", "signal", "TERM");
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, sig, "alice", &err), 0);
    json_decref(sig);
    assert_int_equal(audit_process_records(e, "process.signal", "ok"), 1);
    /* Not recorded, not sent. */
    test_env_break_audit(e, true);
    sig = json_pack("{s:i}", "signal", 9);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, sig, "alice", &err), -1);
    test_env_break_audit(e, false);
    o = NULL;
    assert_int_equal(clr_service_proc_output(svc, ID_A, id, 0, 0, 0, &o, &err), 0);
    assert_string_equal(str(o, "state"), "running");
    json_decref(o);
    /* KILL ends it (the agent would answer at once; here the grace period runs out). */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, sig, "alice", &err), 0);
    json_decref(sig);
    assert_int_equal(audit_process_records(e, "process.signal", "ok"), 2);
    o = await_exit(svc, ID_A, id);
    assert_true(json_is_object(json_object_get(o, "result")));
    json_decref(o);
    assert_false(clr_service_sandbox_busy(svc, ID_A));
    /* Its end is the sandbox's latest activity (the idle reaper counts from there). The row is
     * touched just after the state turns to exited: wait for it (60 s at most). */
    for (int i = 0; i < 6000; i++) {
        assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
        int64_t last = row.last_active_at;
        clr_store_sandbox_clear(&row);
        if (last >= t0)
            break;
        usleep(10000);
    }
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
    assert_true(row.last_active_at >= t0);
    clr_store_sandbox_clear(&row);
}

static void test_limit_per_sandbox(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    char ids[16][32];
    for (int i = 0; i < 16; i++) {
        own_engine(fx, ID_A);
        json_t *p = start(svc, ID_A, "{\"argv\":[\"sleep\",\"1000\"]}");
        snprintf(ids[i], sizeof(ids[i]), "%s", str(p, "id"));
        json_decref(p);
    }
    /* Sixteen distinct ids, all running. */
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    assert_int_equal(listed(svc, ID_A), 16);
    /* The seventeenth is refused before it is started or reaches an engine; its refusal is
     * recorded (by bob), naming the limit and not the command. Control first: the sixteen
     * admitted ones are recorded as started, none as refused. */
    struct fake *spare = own_engine(fx, ID_A);
    int records = audit_process_records(e, "process.start", "ok");
    assert_int_equal(records, 16);
    assert_int_equal(audit_process_records(e, "process.start", "refused"), 0);
    json_t *marked = json_pack("{s:[s,s]}", "argv", "echo", "marker-refused");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_start(svc, ID_A, marked, "bob", &out, &err), -1);
    const char *full = "at capacity: 16 background processes in this sandbox "
                       "(max 16), 16 in all (max 256)";
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, full);
    assert_int_equal(atomic_load(&svc->refused), 1);
    assert_int_equal(fake_count(spare, "GET /version"), 0);
    assert_int_equal(fake_count(spare, "POST "), 0);
    assert_int_equal(audit_process_records(e, "process.start", "ok"), records);
    assert_int_equal(audit_process_records(e, "process.start", "refused"), 1);
    expect_refusal_record(e, ID_A, "bob", full, "marker-refused");
    assert_int_equal(listed(svc, ID_A), 16);
    /* The log cannot take the record (carol's first, written at once): refused all the same,
     * with the limit's error. */
    test_env_break_audit(e, true);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_start(svc, ID_A, marked, "carol", &out, &err), -1);
    test_env_break_audit(e, false);
    json_decref(marked);
    assert_null(out);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, full);
    assert_int_equal(fake_count(spare, "POST "), 0);
    assert_int_equal(audit_process_records(e, "process.start", "refused"), 1);
    assert_int_equal(listed(svc, ID_A), 16);
    json_t *req = json_pack("{s:[s]}", "argv", "true");
    /* The limit is per sandbox: another one starts. */
    script_engine(e, spare, ID_B, true);
    assert_int_equal(clr_service_proc_start(svc, ID_B, req, "alice", &out, &err), 0);
    json_decref(req);
    assert_string_equal(str(out, "sandbox_id"), ID_B);
    json_decref(out);
    assert_int_equal(listed(svc, ID_B), 1);

    /* At stop each running process is killed, recorded as the daemon's, and waited for. */
    svc_procs_stop(svc);
    assert_null(svc->procs);
    assert_int_equal(test_env_audit_count(e, "process.signal", ID_A, "daemon (stopping)", NULL),
                     16);
    assert_int_equal(test_env_audit_count(e, "process.signal", ID_B, "daemon (stopping)", NULL),
                     1);
    assert_int_equal(listed(svc, ID_A), 0);
    assert_false(clr_service_sandbox_busy(svc, ID_A));
}

/* Starts a process in sandbox id on an engine of its own and waits for it to end; its id. */
static void run_to_exit(struct fixture *fx, const char *id, char pid[32])
{
    clr_service *svc = &fx->e->svc;
    /* The engines earlier processes gave back are let go: this one opens on its own. */
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    struct fake *f = own_engine(fx, id);
    script_engine(fx->e, f, id, false); /* its exec's stream echoes: it ends at once */
    json_t *p = start(&fx->e->svc, id, "{\"argv\":[\"true\"]}");
    snprintf(pid, 32, "%s", str(p, "id"));
    json_decref(p);
    json_decref(await_exit(&fx->e->svc, id, pid));
}

/* Exited processes are kept for their output and result, but not for ever: the newest few of a
 * sandbox (16; 2 here, through procs_exited_keep), and none once the sandbox is destroyed. */
static void test_exited_are_pruned(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    svc->procs_exited_keep = 2;
    char ids[4][32], other[32];
    for (int i = 0; i < 3; i++)
        run_to_exit(fx, ID_A, ids[i]);
    /* 3 exited in A: none dropped yet (only a start or a prune drops), all answered. */
    assert_int_equal(listed(svc, ID_A), 3);
    json_t *o = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_proc_get(svc, ID_A, ids[0], &o, &err), 0);
    json_decref(o);
    /* Any start drops the oldest exited ones past 2, in every sandbox. */
    run_to_exit(fx, ID_B, other);
    assert_int_equal(listed(svc, ID_A), 2);
    assert_int_equal(listed(svc, ID_B), 1);
    assert_int_equal(clr_service_proc_get(svc, ID_A, ids[0], &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(clr_service_proc_get(svc, ID_A, ids[1], &o, &err), 0);
    json_decref(o);
    /* A third in A after them; then the reaper's prune keeps the newest 2, and B's one. */
    run_to_exit(fx, ID_A, ids[3]);
    assert_int_equal(listed(svc, ID_A), 3);
    assert_int_equal(svc_procs_prune(svc), 1);
    assert_int_equal(listed(svc, ID_A), 2);
    assert_int_equal(clr_service_proc_get(svc, ID_A, ids[1], &o, &err), -1);
    assert_int_equal(listed(svc, ID_B), 1);
    assert_int_equal(svc_procs_prune(svc), 0);
    /* A destroyed: its 2 go; B's stays. */
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "client");
    assert_int_equal(svc_procs_prune(svc), 2);
    assert_int_equal(clr_service_proc_get(svc, ID_A, ids[3], &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(svc_procs_prune(svc), 0);
    assert_int_equal(listed(svc, ID_B), 1);
    svc->procs_exited_keep = 0;
}

/* A command holds its sandbox from before it starts until its record is finished: its live
 * state's second reference is what the reaper sees. */
static void test_busy_while_a_command_holds_it(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct live_sb *lv = calloc(1, sizeof(*lv));
    assert_non_null(lv);
    lv->svc = svc;
    snprintf(lv->id, sizeof(lv->id), "%s", ID_B);
    lv->refs = 2;
    svc->live = lv;
    assert_true(clr_service_sandbox_busy(svc, ID_B));
    assert_false(clr_service_sandbox_busy(svc, ID_A));
    lv->refs = 1; /* only the registry's: no command */
    assert_false(clr_service_sandbox_busy(svc, ID_B));
}

/* A running background process is a command like an exec: it holds a slot of max_execs and of
 * its sandbox's tenant's max_execs until it ends. With the default tenant's quota at 1, a
 * second process (another sandbox of the tenant) and an exec are refused naming the quota,
 * before anything is recorded or reaches an engine; once the first has ended, both have room. */
static void test_process_holds_a_command_slot(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    const clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_execs = 1}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 1;
    /* Positive control: nothing runs, a process starts and takes one slot of each. */
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    own_engine(fx, ID_A);
    json_t *p = start(svc, ID_A, "{\"argv\":[\"sleep\",\"1000\"]}");
    char id[32];
    snprintf(id, sizeof(id), "%s", str(p, "id"));
    json_decref(p);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 1);
    const char *full = "tenant default is at its quota: 1 commands are running in its sandboxes "
                       "(max_execs 1 for tenant default); retry later";
    struct fake *spare = own_engine(fx, ID_B);
    int records = audit_process_records(e, "process.start", "ok");
    assert_int_equal(records, 1); /* control: the admitted one's */
    expect_refused(svc, ID_B, "{\"argv\":[\"echo\",\"marker-refused\"]}", CLR_E_LIMIT, full);
    assert_int_equal(atomic_load(&svc->refused), 1);
    assert_int_equal(fake_count(spare, "POST "), 0);
    assert_int_equal(audit_process_records(e, "process.start", "ok"), records);
    /* Its refusal recorded, exactly once, naming the tenant's quota and not the command. */
    assert_int_equal(audit_process_records(e, "process.start", "refused"), 1);
    expect_refusal_record(e, ID_B, "alice", full, "marker-refused");
    json_t *req = json_pack("{s:[s]}", "argv", "true");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_B, req, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, full);
    /* Its end gives the slots back. */
    json_t *sig = json_pack("{s:i}", "signal", 9);
    assert_int_equal(clr_service_proc_signal(svc, ID_A, id, sig, "alice", &err), 0);
    json_decref(sig);
    json_decref(await_exit(svc, ID_A, id));
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_B, req, "alice", &err), 0);
    json_decref(req);
    /* The engine the first gave back is let go: this one opens on the spare, scripted for B. */
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    p = start(svc, ID_B, "{\"argv\":[\"sleep\",\"1000\"]}");
    assert_string_equal(str(p, "sandbox_id"), ID_B);
    json_decref(p);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    svc_procs_stop(svc);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

/* The engine's own error on the exec stream: Docker answers an exec start whose runsc `exec`
 * failed (as 3 of 20 code sessions' bridges did on a loaded host) with its error as stdout text,
 * "OCI runtime exec failed: ...\r\n", in its multiplexing. That is the engine's failure: the
 * process ends start_failed with the engine's words, and the sandbox is not killed. Next to it,
 * the control: a stream that is not frames and not such a line is the agent's protocol error,
 * and its sandbox is killed. Before the fix the first read as the second (killed, 503). */
static const uint8_t docker_line[] =
    "\x01\x00\x00\x00\x00\x00\x00\x72"
    "OCI runtime exec failed: /var/lib/docker/runtimes/runsc did not terminate successfully: "
    "exit status 128: unknown\r\n";
static const uint8_t garbage[] = {1, 0, 0, 0, 0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static json_t *ended_with_stream(struct fixture *fx, struct fake *f, const char *id,
                                 const uint8_t *stream, size_t len, size_t *kills)
{
    fake_answer_bytes(f, "POST /v1.41/exec/exec-1/start", 200, stream, len);
    json_t *p = start(&fx->e->svc, id, "{\"argv\":[\"python3\"]}");
    char pid[32];
    snprintf(pid, sizeof(pid), "%s", str(p, "id"));
    json_decref(p);
    json_t *o = await_exit(&fx->e->svc, id, pid);
    char kill[160];
    snprintf(kill, sizeof(kill), "POST " TEST_API "cid-%s/kill", id);
    *kills = fake_count(f, kill);
    assert_true(fake_count(f, "POST /v1.41/exec/exec-1/start") >= 1); /* it was started */
    return o;
}

static void test_engine_error_spares_the_sandbox(void **state)
{
    struct fixture *fx = *state;
    struct fake *f = own_engine(fx, ID_A);
    script_engine(fx->e, f, ID_B, true); /* last: its kill is answered as its own */
    size_t kills = 99;
    /* The control: the agent's broken stream kills its sandbox. */
    json_t *o = ended_with_stream(fx, f, ID_B, garbage, sizeof(garbage), &kills);
    json_t *res = json_object_get(o, "result");
    assert_string_equal(str(res, "status"), "sandbox_failed");
    assert_non_null(strstr(str(res, "message"), "malformed frame from the agent"));
    assert_true(json_is_true(json_object_get(res, "sandbox_killed")));
    assert_int_equal(kills, 1);
    json_decref(o);
    /* The engine's line: start_failed, its words, no kill. */
    kills = 99;
    o = ended_with_stream(fx, f, ID_A, docker_line, sizeof(docker_line) - 1, &kills);
    res = json_object_get(o, "result");
    const char *msg = str(res, "message");
    if (strcmp(str(res, "status"), "start_failed") != 0 || kills != 0)
        fail_msg("status %s, %zu kill(s): %s", str(res, "status"), kills, msg);
    assert_non_null(strstr(msg, "the engine could not start"));
    assert_non_null(strstr(msg, "OCI runtime exec failed"));
    assert_false(json_is_true(json_object_get(res, "sandbox_killed")));
    json_decref(o);
}

int main(void)
{
    /* As `clearing serve` does: a peer that closed its end (the scripted engine writing an
     * answer the client stopped reading) is an error on that connection, not the end of the
     * process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_that_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_that_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_per_sandbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exited_are_pruned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_while_a_command_holds_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_holds_a_command_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_error_spares_the_sandbox, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
