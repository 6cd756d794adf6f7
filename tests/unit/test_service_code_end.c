/* lib/service/code.c: the end of a code session on request (DELETE /v1/sandboxes/ID/code,
 * clr_service_code_end), against the scripted engine and bridges of
 * test_service_code_fixture.h: an end with no session is done (and recorded), an end after a
 * cell ends its kernel and the next cell says so, the tenant's max_code_sessions place comes
 * back, and a log that cannot take the record refuses the end before the kernel is touched.
 * What the kernel's processes do is the integration suite's (tests/integration/test_code.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "service/code.h"
#include "test_service_env.h"
#include "test_service_code_fixture.h"

#define ENDED "the code session was ended (DELETE .../code)"

static void expect_end(clr_service *svc, const char *id)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_code_end(svc, id, "alice", &err) < 0)
        fail_msg("end of %s: %s", id, err.message);
}

/* The newest code.end record: ok, of id, by alice, saying whether it ended a kernel. */
static void expect_end_record(struct test_env *e, const char *id, bool kernel_ended)
{
    json_t *r = expect_audit(e, "code.end", "ok", id, "alice");
    json_t *ended = json_object_get(json_object_get(r, "details"), "kernel_ended");
    if (!json_is_boolean(ended) || json_is_true(ended) != kernel_ended)
        fail_msg("kernel_ended is not %s", kernel_ended ? "true" : "false");
    json_decref(r);
}

/* No session: nothing to end, done all the same (idempotent), and one record says so; nothing
 * reaches the engine. Refused as a cell is: a bad id, an unknown sandbox, one not running. */
static void test_end_without_session(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, false);
    assert_int_equal((int)audit_count(e, "code.end"), 1);
    expect_end(svc, ID_A);
    assert_int_equal((int)audit_count(e, "code.end"), 2);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_end(svc, "sb-../etc", "alice", &err), -1);
    expect_error(&err, CLR_E_INVALID, "is not a sandbox id");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_end(svc, NO_ROW, "alice", &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_end(svc, ID_L, "alice", &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "lost (oom)");
    assert_int_equal(fake_count(e->f, "POST "), 0);
}

/* A cell's kernel, ended: its record says it ended one, and the next cell runs in a fresh
 * kernel (a second bridge) whose answer says the session was ended. A second end in a row finds
 * no kernel (kernel_ended false) and the notice stays for the next cell. The controls: the
 * first cell's answer says nothing, and a cell after the notice was said says nothing. */
static void test_end_after_cell(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    atomic_store(&fixed_nonce, true);
    script_running(e, ID_A, "cid-a");
    script_bridge(e, "cid-a", "exec-a1", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", false, NULL);
    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, true);
    script_bridge(e, "cid-a", "exec-a2", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", true, ENDED);
    json_t *r = expect_audit(e, "code", "ok", ID_A, "alice");
    assert_true(json_is_true(json_object_get(json_object_get(r, "details"), "restarted")));
    json_decref(r);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 2);

    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, true);
    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, false);
    assert_int_equal((int)audit_count(e, "code.end"), 3);
    script_bridge(e, "cid-a", "exec-a3", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", true, ENDED);
    /* The control: a restart that works says it itself; the next cell says nothing. */
    script_bridge(e, "cid-a", "exec-a4", answering_bridge);
    expect_restart(svc, ID_A);
    expect_answer(cell_answer(svc, ID_A), "ok", false, NULL);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 4);
    atomic_store(&fixed_nonce, false);
}

/* The default tenant's max_code_sessions at 1 (quotas, the caller's, live until
 * one_place_done), ID_A and ID_B running, and A's cell answered: A's kernel holds the place. */
static void a_holds_the_one_place(struct test_env *e, clr_tenant_quota quotas[1])
{
    clr_service *svc = &e->svc;
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 1;
    atomic_store(&fixed_nonce, true);
    script_running(e, ID_A, "cid-a");
    script_running(e, ID_B, "cid-b");
    script_bridge(e, "cid-a", "exec-a1", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", false, NULL);
}

/* The sessions stopped before the quota goes away. */
static void one_place_done(clr_service *svc)
{
    atomic_store(&fixed_nonce, false);
    svc_code_stop(svc);
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

/* With max_code_sessions 1, A's kernel holds the tenant's one place: B's cell is refused (the
 * control that the quota binds), then served once A's session is ended. */
static void test_end_gives_back_quota(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_code_sessions = 1}};
    a_holds_the_one_place(e, quotas);
    cell_refused(svc, ID_B, CLR_E_LIMIT, "max_code_sessions 1 for tenant default");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 0);
    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, true);
    script_bridge(e, "cid-b", "exec-b1", answering_bridge);
    expect_answer(cell_answer(svc, ID_B), "ok", false, NULL);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 1);
    /* Now B holds it: A's next cell is refused, its notice kept for the cell that gets one. */
    cell_refused(svc, ID_A, CLR_E_LIMIT, "max_code_sessions 1 for tenant default");
    one_place_done(svc);
}

/* An audit log that cannot take the record: the end is refused (unavailable, naming the log)
 * before the kernel is touched — it keeps the tenant's one place (B is still refused), no
 * bridge is started or ended, and no "ok" is written. The control: with the log back, the end
 * is done and B is served. */
static void test_end_audit_refused(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_code_sessions = 1}};
    a_holds_the_one_place(e, quotas);
    test_env_break_audit(e, true);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_end(svc, ID_A, "alice", &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, "audit log");
    /* And with no session at all (B's): refused the same way. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_end(svc, ID_B, "alice", &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, "audit log");
    test_env_break_audit(e, false);
    assert_int_equal(audit_count_where(e, "code.end", "outcome", "ok", NULL, NULL, NULL, NULL),
                     0);
    cell_refused(svc, ID_B, CLR_E_LIMIT, "max_code_sessions 1 for tenant default");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 1);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 0);

    expect_end(svc, ID_A);
    expect_end_record(e, ID_A, true);
    script_bridge(e, "cid-b", "exec-b1", answering_bridge);
    expect_answer(cell_answer(svc, ID_B), "ok", false, NULL);
    one_place_done(svc);
}

/* The daemon's cap on sessions in use (lowered to 2 here): a session that keeps only the
 * notice of its end holds no place, and its next cell, which would start a kernel, is held to
 * the cap as a new session is; an end is never refused by it. */
static void test_daemon_cap_after_end(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    svc->code_sessions_cap = 2;
    atomic_store(&fixed_nonce, true);
    test_env_row(e, ID_C, (int64_t)time(NULL) + 36000, 1000, 0);
    script_running(e, ID_A, "cid-a");
    script_running(e, ID_B, "cid-b");
    script_running(e, ID_C, "cid-c");
    script_bridge(e, "cid-a", "exec-a1", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", false, NULL);
    script_bridge(e, "cid-b", "exec-b1", answering_bridge);
    expect_answer(cell_answer(svc, ID_B), "ok", false, NULL);
    /* The control: the cap binds a new session. */
    cell_refused(svc, ID_C, CLR_E_LIMIT, "at most 2 code sessions");
    expect_end(svc, ID_A);
    script_bridge(e, "cid-c", "exec-c1", answering_bridge);
    expect_answer(cell_answer(svc, ID_C), "ok", false, NULL);
    /* A keeps only its notice: its next cell would be a third kernel. */
    cell_refused(svc, ID_A, CLR_E_LIMIT, "at most 2 code sessions");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 1);
    expect_end(svc, ID_B); /* at the cap all the same */
    script_bridge(e, "cid-a", "exec-a2", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", true, "was ended");
    atomic_store(&fixed_nonce, false);
    svc_code_stop(svc);
    svc->code_sessions_cap = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_end_without_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_after_cell, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_gives_back_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_audit_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daemon_cap_after_end, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
