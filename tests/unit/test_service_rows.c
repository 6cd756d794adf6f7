/* lib/service/rows.c on a state database in a temporary directory (no engine): the state and
 * reason read from a row, the 409 a client gets for each state that is not running (and the 400
 * and 404 before it), the JSON of a row (environment names without values, limits as sizes), the
 * destroyed and lost predicates, and what the list filters keep and refuse. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "service/rows.h"
#include "test_service_env.h"

#define RUNNING_ID "sb-00000000000000a1"
#define PLAN_ID "sb-00000000000000a2"
#define LOST_ID "sb-00000000000000a3"
#define GONE_ID "sb-00000000000000a4"
#define NO_ROW_ID "sb-00000000000000ff"

struct fixture {
    struct test_env *e;
};

static void add_row(clr_store *st, const char *id, const char *tenant, const char *label)
{
    clr_store_sandbox s;
    test_row_init(&s, id, tenant, CLR_STATE_RUNNING);
    s.info.expires_at = 1600;
    s.info.limits.cpu_millis = 1500;
    s.info.limits.memory_bytes = 256ull * 1024 * 1024;
    s.info.limits.tmp_bytes = 1000; /* not a whole number of KiB: printed as bytes */
    s.idle_timeout_s = 300;
    s.metadata = json_pack("{s:s}", "team", label);
    s.env = json_pack("[s,s]", "TOKEN=secret-value", "MODE=fast");
    test_row_insert(st, &s);
}

static void set_state(clr_store *st, const char *id, const char *state, const char *reason)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_set_state(st, id, state, reason, 2000, &err) != 0)
        fail_msg("set_state %s %s: %s", id, state, err.message);
}

/* One sandbox in each state: running (acme), plan, lost (oom-killed), destroyed (client); the
 * last three belong to the default tenant. */
static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "rows") != 0)
        return -1;
    fx->e->svc.cfg = (clr_service_config){0}; /* these tests configure nothing */
    add_row(fx->e->svc.store, RUNNING_ID, "acme", "red");
    add_row(fx->e->svc.store, PLAN_ID, "", "blue");
    add_row(fx->e->svc.store, LOST_ID, "", "red");
    add_row(fx->e->svc.store, GONE_ID, "", "red");
    set_state(fx->e->svc.store, PLAN_ID, CLR_STATE_PLAN, "");
    set_state(fx->e->svc.store, LOST_ID, CLR_STATE_LOST, "oom-killed");
    set_state(fx->e->svc.store, GONE_ID, CLR_STATE_DESTROYED, "client");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_env_teardown(fx->e);
    free(fx);
    return 0;
}

static void expect_message(const clr_error *err, const char *want)
{
    if (strcmp(err->message, want) != 0)
        fail_msg("message \"%s\", expected \"%s\"", err->message, want);
}

static void test_row_state(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    char st[32], reason[CLR_STORE_REASON_MAX + 1];
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_row_state(svc, RUNNING_ID, st, reason, &err), 0);
    assert_string_equal(st, CLR_STATE_RUNNING);
    assert_string_equal(reason, "");
    assert_int_equal(svc_row_state(svc, LOST_ID, st, reason, &err), 0);
    assert_string_equal(st, CLR_STATE_LOST);
    assert_string_equal(reason, "oom-killed");
    assert_int_equal(svc_row_state(svc, GONE_ID, st, reason, &err), 0);
    assert_string_equal(st, CLR_STATE_DESTROYED);
    assert_string_equal(reason, "client");
    assert_int_equal(svc_row_state(svc, NO_ROW_ID, st, reason, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);

    bool running = false;
    assert_int_equal(svc_row_running(svc, RUNNING_ID, &running, &err), 0);
    assert_true(running);
    running = true;
    assert_int_equal(svc_row_running(svc, PLAN_ID, &running, &err), 0);
    assert_false(running);
    running = true;
    assert_int_equal(svc_row_running(svc, LOST_ID, &running, &err), 0);
    assert_false(running);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_row_running(svc, NO_ROW_ID, &running, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);

    /* A state change is read back at once (the row is the truth, not a cache). */
    set_state(svc->store, RUNNING_ID, CLR_STATE_LOST, "engine-restart");
    assert_int_equal(svc_row_running(svc, RUNNING_ID, &running, &err), 0);
    assert_false(running);
    assert_int_equal(svc_row_state(svc, RUNNING_ID, st, reason, &err), 0);
    assert_string_equal(reason, "engine-restart");
}

static void test_require_running(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, RUNNING_ID, &err), 0);
    assert_int_equal(err.code, CLR_E_NONE);

    /* A restore in place replacing it: 409 until it is over; another sandbox is not held. */
    svc_set_restoring(svc, RUNNING_ID);
    assert_true(svc_restoring(svc, RUNNING_ID));
    assert_false(svc_restoring(svc, PLAN_ID));
    assert_int_equal(svc_require_running(svc, RUNNING_ID, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    expect_message(&err, "sandbox " RUNNING_ID " is being restored from a snapshot: try again "
                         "once the restore has answered");
    svc_set_restoring(svc, NULL);
    assert_false(svc_restoring(svc, RUNNING_ID));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, RUNNING_ID, &err), 0);

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, PLAN_ID, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    expect_message(&err, "sandbox " PLAN_ID " belongs to a running plan: only the plan uses it, "
                         "and it is destroyed when the plan ends");

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, LOST_ID, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    expect_message(&err, "sandbox " LOST_ID " is not running: it is lost (oom-killed); its "
                         "workspace can still be read (files, diff) until it is destroyed");

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, GONE_ID, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    expect_message(&err, "sandbox " GONE_ID " is not running (destroyed)");

    /* No row: 404; not an id at all: 400, before the database is asked. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, NO_ROW_ID, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    expect_message(&err, "no sandbox " NO_ROW_ID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_require_running(svc, "sb-xyz", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    expect_message(&err, "'sb-xyz' is not a sandbox id (expected sb- and 16 hex digits)");

    /* A lost row without a recorded cause says so. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_not_running(&err, LOST_ID, CLR_STATE_LOST, ""), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "it is lost (unknown cause)"));
}

static void test_workspace(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    char want[256], path[256] = "";
    clr_error err = CLR_ERROR_INIT;

    /* Running: writable and readable; the read counts as activity. */
    snprintf(want, sizeof(want), "%s/workspaces/" RUNNING_ID, fx->e->dir);
    assert_int_equal(clr_service_workspace(svc, RUNNING_ID, path, sizeof(path), &err), 0);
    assert_string_equal(path, want);
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, RUNNING_ID, &row, &err), 0);
    assert_true(row.last_active_at > 1000);
    clr_store_sandbox_clear(&row);
    path[0] = '\0';
    assert_int_equal(svc_workspace_to_read(svc, RUNNING_ID, path, sizeof(path), &err), 0);
    assert_string_equal(path, want);

    /* Lost: readable only. */
    snprintf(want, sizeof(want), "%s/workspaces/" LOST_ID, fx->e->dir);
    path[0] = '\0';
    assert_int_equal(svc_workspace_to_read(svc, LOST_ID, path, sizeof(path), &err), 0);
    assert_string_equal(path, want);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_workspace(svc, LOST_ID, path, sizeof(path), &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);

    /* Destroyed and plan: neither. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_workspace_to_read(svc, GONE_ID, path, sizeof(path), &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    expect_message(&err, "sandbox " GONE_ID " is not running (destroyed)");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_workspace_to_read(svc, PLAN_ID, path, sizeof(path), &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "belongs to a running plan"));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_workspace_to_read(svc, NO_ROW_ID, path, sizeof(path), &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

static void test_destroyed_lost(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    assert_true(svc_destroyed_row(svc, GONE_ID));
    assert_false(svc_destroyed_row(svc, LOST_ID));
    assert_false(svc_destroyed_row(svc, PLAN_ID));
    assert_false(svc_destroyed_row(svc, RUNNING_ID));
    assert_false(svc_destroyed_row(svc, NO_ROW_ID));
    assert_true(svc_lost_row(svc, LOST_ID));
    assert_false(svc_lost_row(svc, GONE_ID));
    assert_false(svc_lost_row(svc, RUNNING_ID));
    assert_false(svc_lost_row(svc, NO_ROW_ID));
    /* A lost sandbox's destroy turns one predicate into the other. */
    set_state(svc->store, LOST_ID, CLR_STATE_DESTROYED, "client");
    assert_true(svc_destroyed_row(svc, LOST_ID));
    assert_false(svc_lost_row(svc, LOST_ID));
}

static void test_sandbox_json(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->e->svc.store, LOST_ID, &row, &err), 0);
    json_t *j = svc_sandbox_json(&row);
    clr_store_sandbox_clear(&row);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), LOST_ID);
    /* A row without a tenant is the default tenant's. */
    assert_string_equal(json_string_value(json_object_get(j, "tenant")), CLR_TENANT_DEFAULT);
    assert_string_equal(json_string_value(json_object_get(j, "state")), CLR_STATE_LOST);
    assert_string_equal(json_string_value(json_object_get(j, "destroy_reason")), "oom-killed");
    assert_int_equal(json_integer_value(json_object_get(j, "destroyed_at")), 2000);
    assert_int_equal(json_integer_value(json_object_get(j, "created_at")), 1000);
    assert_int_equal(json_integer_value(json_object_get(j, "expires_at")), 1600);
    assert_int_equal(json_integer_value(json_object_get(j, "max_expires_at")), 5000);
    assert_int_equal(json_integer_value(json_object_get(j, "idle_timeout")), 300);
    assert_string_equal(json_string_value(json_object_get(j, "image")), "clearing/default:latest");
    assert_string_equal(json_string_value(json_object_get(j, "runtime")), "runsc");
    assert_true(json_is_false(json_object_get(j, "insecure")));
    assert_true(json_is_false(json_object_get(j, "recovered")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "metadata"), "team")),
                        "red");
    /* The environment's names, never its values. */
    json_t *env = json_object_get(j, "env");
    assert_int_equal(json_array_size(env), 2);
    assert_string_equal(json_string_value(json_array_get(env, 0)), "TOKEN");
    assert_string_equal(json_string_value(json_array_get(env, 1)), "MODE");
    char *text = json_dumps(j, 0);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"TOKEN\""));
    assert_null(strstr(text, "secret-value"));
    free(text);
    json_t *l = json_object_get(j, "limits");
    assert_string_equal(json_string_value(json_object_get(l, "cpus")), "1.500");
    assert_string_equal(json_string_value(json_object_get(l, "memory")), "256m");
    assert_string_equal(json_string_value(json_object_get(l, "tmp_size")), "1000");
    assert_string_equal(json_string_value(json_object_get(l, "workspace_size")), "1g");
    assert_string_equal(json_string_value(json_object_get(l, "file_size")), "1g");
    assert_int_equal(json_integer_value(json_object_get(l, "pids")), 256);
    assert_int_equal(json_integer_value(json_object_get(l, "lifetime")), 600);
    assert_int_equal(json_integer_value(json_object_get(l, "workspace_inodes")), 100000);
    assert_int_equal(json_integer_value(json_object_get(l, "nofile")), 1024);
    json_decref(j);

    /* The tenant of a row that names one. */
    assert_int_equal(clr_store_sandbox_get(fx->e->svc.store, RUNNING_ID, &row, &err), 0);
    j = svc_sandbox_json(&row);
    clr_store_sandbox_clear(&row);
    assert_string_equal(json_string_value(json_object_get(j, "tenant")), "acme");
    assert_string_equal(json_string_value(json_object_get(j, "destroy_reason")), "");
    json_decref(j);
}

/* The ids listed in *out ({"sandboxes": [...]}), comma-separated, in order. */
static void listed(clr_service *svc, const char *tenant, const char *state, const char *label,
                   char *ids, size_t len)
{
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_list(svc, tenant, state, label, &out, &err) != 0)
        fail_msg("list: %s", err.message);
    ids[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(out, "sandboxes"), i, e) {
        size_t n = strlen(ids);
        snprintf(ids + n, len - n, "%s%s", n ? "," : "",
                 json_string_value(json_object_get(e, "id")));
    }
    json_decref(out);
}

static void test_list_and_ownership(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    char ids[256];
    listed(svc, NULL, NULL, NULL, ids, sizeof(ids));
    assert_string_equal(ids, RUNNING_ID "," PLAN_ID "," LOST_ID "," GONE_ID);
    listed(svc, NULL, CLR_STATE_LOST, NULL, ids, sizeof(ids));
    assert_string_equal(ids, LOST_ID);
    listed(svc, "acme", NULL, NULL, ids, sizeof(ids));
    assert_string_equal(ids, RUNNING_ID);
    listed(svc, CLR_TENANT_DEFAULT, NULL, "team=red", ids, sizeof(ids));
    assert_string_equal(ids, LOST_ID "," GONE_ID);
    listed(svc, NULL, NULL, "team=green", ids, sizeof(ids));
    assert_string_equal(ids, "");

    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_list(svc, NULL, "paused", NULL, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    expect_message(&err, "state filter 'paused' is not running, plan, destroyed or lost");
    assert_null(out);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_list(svc, NULL, NULL, "=red", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    expect_message(&err, "label filter must be key=value");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_list(svc, NULL, NULL, "team", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);

    /* Another tenant's sandbox is a 404 worded as for an unknown id. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_sandbox_of(svc, RUNNING_ID, "acme", &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, RUNNING_ID, NULL, &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, LOST_ID, CLR_TENANT_DEFAULT, &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, RUNNING_ID, CLR_TENANT_DEFAULT, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    expect_message(&err, "no sandbox " RUNNING_ID);

    /* get: the row's JSON, and 400 / 404 for what is not one. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_get(svc, GONE_ID, &out, &err), 0);
    assert_string_equal(json_string_value(json_object_get(out, "state")), CLR_STATE_DESTROYED);
    json_decref(out);
    out = NULL;
    assert_int_equal(clr_service_get(svc, NO_ROW_ID, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_get(svc, "../etc", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_null(out);
}

/* The last record whose action is `action`. */
static json_t *last_of(json_t *records, const char *action)
{
    json_t *found = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r) {
        const char *a = json_string_value(json_object_get(r, "action"));
        if (a && strcmp(a, action) == 0)
            found = r;
    }
    if (!found)
        fail_msg("no audit record of %s", action);
    return found;
}

static void test_audit_failure(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* What a refusal is (the caller's input, a limit, a denial, unavailable) and what an error
     * is (the daemon's or the engine's failure). */
    struct {
        const char *action;
        clr_error_code code;
        const char *outcome;
    } cases[] = {
        {"t.invalid", CLR_E_INVALID, "refused"},     {"t.limit", CLR_E_LIMIT, "refused"},
        {"t.denied", CLR_E_DENIED, "refused"},       {"t.unavailable", CLR_E_UNAVAILABLE, "refused"},
        {"t.internal", CLR_E_INTERNAL, "error"},     {"t.engine", CLR_E_ENGINE, "error"},
        {"t.conflict", CLR_E_CONFLICT, "error"},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < n; i++) {
        clr_error why = CLR_ERROR_INIT;
        clr_error_set(&why, cases[i].code, 0, "because %zu", i);
        svc_audit_failure(svc, "uid=0", RUNNING_ID, cases[i].action, &why);
    }
    json_t *records = audit_records(fx->e);
    for (size_t i = 0; i < n; i++) {
        json_t *r = last_of(records, cases[i].action);
        const char *outcome = json_string_value(json_object_get(r, "outcome"));
        if (!outcome || strcmp(outcome, cases[i].outcome) != 0)
            fail_msg("%s: outcome %s, expected %s", cases[i].action, outcome ? outcome : "(none)",
                     cases[i].outcome);
        assert_string_equal(json_string_value(json_object_get(r, "actor")), "uid=0");
        assert_string_equal(json_string_value(json_object_get(r, "sandbox")), RUNNING_ID);
        json_t *d = json_object_get(r, "details");
        assert_string_equal(json_string_value(json_object_get(d, "code")),
                            clr_error_code_name(cases[i].code));
        char want[32];
        snprintf(want, sizeof(want), "because %zu", i);
        assert_string_equal(json_string_value(json_object_get(d, "error")), want);
    }
    json_decref(records);

    /* clr_service_audit() appends what it is given. */
    clr_error err = CLR_ERROR_INIT;
    json_t *details = json_pack("{s:s}", "k", "v");
    assert_int_equal(clr_service_audit(svc, "uid=1", NULL, "t.plain", "ok", details, &err), 0);
    json_decref(details);
    records = audit_records(fx->e);
    json_t *r = last_of(records, "t.plain");
    assert_string_equal(json_string_value(json_object_get(r, "outcome")), "ok");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "details"), "k")),
                        "v");
    json_decref(records);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_row_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_require_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workspace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroyed_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_ownership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
