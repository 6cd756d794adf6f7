/* lib/service/tenants.c and the tenants' gauges of lib/service/metrics.c, on a state database in
 * a temporary directory (no engine): what each tenant's live sandboxes hold, the room check of a
 * create against the daemon's max_sandboxes and the tenant's quota (with the figures in the
 * refusal), the command slots of max_execs and a tenant's max_execs, and the per-tenant lines of
 * the metrics. */
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

#include "service/tenants.h"
#include "test_service_env.h"

#define MIB (1024ull * 1024)

struct fixture {
    struct test_env *e;
    clr_tenant_quota quotas[2];
};

static void add_row(clr_store *st, const char *id, const char *tenant, const char *state,
                    uint64_t memory, uint32_t cpu_millis)
{
    clr_store_sandbox s;
    test_row_init(&s, id, tenant, state);
    s.info.limits.memory_bytes = memory;
    s.info.limits.cpu_millis = cpu_millis;
    test_row_insert(st, &s);
}

/* acme: a running sandbox and a plan's (768 MiB, 0.750 CPUs together), and a destroyed one that
 * counts for nothing; the default tenant: one running sandbox. */
static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "tenants") != 0)
        return -1;
    fx->quotas[0] = (clr_tenant_quota){.name = "acme", .max_sandboxes = 2,
                                       .max_memory_bytes = 1024 * MIB, .max_cpu_millis = 1500};
    fx->quotas[1] = (clr_tenant_quota){.name = "beta", .max_cpu_millis = 1000};
    fx->e->svc.cfg = (clr_service_config){0}; /* only what these tests configure */
    fx->e->svc.cfg.max_sandboxes = 10;
    fx->e->svc.cfg.tenants = fx->quotas;
    fx->e->svc.cfg.ntenants = 2;
    add_row(fx->e->svc.store, "sb-0000000000000001", "acme", CLR_STATE_RUNNING, 512 * MIB, 500);
    add_row(fx->e->svc.store, "sb-0000000000000002", "acme", CLR_STATE_PLAN, 256 * MIB, 250);
    add_row(fx->e->svc.store, "sb-0000000000000003", "acme", CLR_STATE_DESTROYED, 4096 * MIB, 4000);
    add_row(fx->e->svc.store, "sb-0000000000000004", "", CLR_STATE_RUNNING, 128 * MIB, 100);
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

static const struct tenant_usage *find(const struct tenant_usage *v, size_t n, const char *t)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].tenant, t) == 0)
            return &v[i];
    return NULL;
}

static void test_usage_collect(void **state)
{
    struct fixture *fx = *state;
    struct tenant_usage *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_usage_collect(&fx->e->svc, &v, &n, &err), 0);
    assert_int_equal(n, 2);
    const struct tenant_usage *acme = find(v, n, "acme");
    if (!acme) {
        fail_msg("no usage for acme");
        return;
    }
    assert_int_equal(acme->sandboxes, 2);
    assert_int_equal(acme->memory_bytes, 768 * MIB);
    assert_int_equal(acme->cpu_millis, 750);
    /* A row without a tenant is the default tenant's. */
    const struct tenant_usage *def = find(v, n, CLR_TENANT_DEFAULT);
    if (!def) {
        fail_msg("no usage for the default tenant");
        return;
    }
    assert_int_equal(def->sandboxes, 1);
    assert_int_equal(def->memory_bytes, 128 * MIB);
    /* An entry for a tenant with nothing live starts at zero. */
    struct tenant_usage *gamma = svc_usage_entry(&v, &n, "gamma");
    if (!gamma) {
        fail_msg("no entry for gamma");
        return;
    }
    assert_int_equal(n, 3);
    assert_string_equal(gamma->tenant, "gamma");
    assert_int_equal(gamma->sandboxes, 0);
    assert_int_equal(gamma->memory_bytes, 0);
    free(v);
}

static void expect_room(clr_service *svc, const char *tenant, uint64_t memory, uint32_t cpu)
{
    clr_limits want = CLR_LIMITS_INIT;
    want.memory_bytes = memory;
    want.cpu_millis = cpu;
    clr_error err = CLR_ERROR_INIT;
    if (svc_sandbox_room_locked(svc, tenant, &want, &err) != 0)
        fail_msg("no room for %s: %s", tenant, err.message);
}

static void expect_full(clr_service *svc, const char *tenant, uint64_t memory, uint32_t cpu,
                        const char *why)
{
    clr_limits want = CLR_LIMITS_INIT;
    want.memory_bytes = memory;
    want.cpu_millis = cpu;
    clr_error err = CLR_ERROR_INIT;
    uint64_t refused = atomic_load(&svc->refused);
    int rc = svc_sandbox_room_locked(svc, tenant, &want, &err);
    if (rc == 0)
        fail_msg("room for %s, expected: %s", tenant, why);
    assert_int_equal(err.code, CLR_E_LIMIT);
    if (!strstr(err.message, why))
        fail_msg("message \"%s\" does not say \"%s\"", err.message, why);
    assert_int_equal(atomic_load(&svc->refused), refused + 1);
}

static void test_room_quota(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* acme holds 2 of its 2 sandboxes. */
    expect_full(svc, "acme", 64 * MIB, 100,
                "tenant acme is at its quota: 2 sandboxes are live (max_sandboxes 2 for tenant "
                "acme)");
    /* With room for more sandboxes, memory is next: 768 MiB held of 1 GiB. */
    fx->quotas[0].max_sandboxes = 5;
    expect_room(svc, "acme", 256 * MIB, 100);
    expect_full(svc, "acme", 257 * MIB, 100, "would pass max_memory");
    /* Then CPUs: 0.750 held of 1.500. */
    expect_room(svc, "acme", 64 * MIB, 750);
    expect_full(svc, "acme", 64 * MIB, 751,
                "its sandboxes hold 0.750 CPUs, 0.751 more would pass max_cpus 1.500");
    /* beta has only a CPU bound, and nothing live. */
    expect_room(svc, "beta", 4096 * MIB, 1000);
    expect_full(svc, "beta", 64 * MIB, 1001, "0.000 CPUs, 1.001 more would pass max_cpus 1.000");
    /* A plan being made counts for its tenant before its row exists. */
    struct pending_plan plan = {.tenant = "beta", .limits = CLR_LIMITS_INIT};
    plan.limits.cpu_millis = 600;
    svc->pending_plans = &plan;
    expect_room(svc, "beta", 64 * MIB, 400);
    expect_full(svc, "beta", 64 * MIB, 401, "its sandboxes hold 0.600 CPUs");
    svc->pending_plans = NULL;
    /* A tenant without a quota has only the daemon's bound. */
    expect_room(svc, "gamma", 64 * 1024 * MIB, 64000);
}

static void test_room_daemon(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* Three live rows (a plan's included) of max_sandboxes 4: one more fits. */
    svc->cfg.max_sandboxes = 4;
    expect_room(svc, "gamma", 64 * MIB, 100);
    /* A plan admitted but not yet recorded takes the last place. */
    svc->plans_pending = 1;
    expect_full(svc, "gamma", 64 * MIB, 100,
                "at capacity: 4 sandboxes are live (max_sandboxes 4)");
    svc->plans_pending = 0;
}

/* Command slots: a plan asking for 3 gets what both max_execs and its tenant's max_execs leave
 * (acme: 2 of its 2); the next is refused naming acme's limit and holds nothing; a tenant
 * without a bound of its own is held by max_execs alone, refused naming it; 0 asked is 1. */
static void test_exec_slots(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fx->quotas[0].max_execs = 2;
    svc->cfg.max_execs = 4;
    unsigned n = 3;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_exec_admit(svc, "acme", &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(atomic_load(&svc->running_execs), 2);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 2);
    n = 1;
    assert_int_equal(svc_exec_admit(svc, "acme", &n, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message,
                        "tenant acme is at its quota: 2 commands are running in its sandboxes "
                        "(max_execs 2 for tenant acme); retry later");
    assert_int_equal(svc_exec_room(svc, "acme", &err), -1);
    assert_int_equal(atomic_load(&svc->running_execs), 2);
    /* beta (a quota without max_execs) and the default tenant (none) take the rest. */
    n = 0;
    assert_int_equal(svc_exec_room(svc, "beta", &err), 0);
    assert_int_equal(svc_exec_admit(svc, "beta", &n, &err), 0);
    assert_int_equal(n, 1);
    n = 5;
    assert_int_equal(svc_exec_admit(svc, NULL, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[1]), 0);
    n = 1;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_exec_admit(svc, "beta", &n, &err), -1);
    assert_string_equal(err.message,
                        "at capacity: 4 commands are running (max_execs); retry later");
    assert_int_equal(svc_exec_room(svc, "acme", &err), -1);
    assert_string_equal(err.message,
                        "at capacity: 4 commands are running (max_execs); retry later");
    assert_int_equal(atomic_load(&svc->refused), 4);
    /* Given back, acme has room again. */
    svc_exec_release(svc, "acme", 2);
    svc_exec_release(svc, "beta", 1);
    svc_exec_release(svc, CLR_TENANT_DEFAULT, 1);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 0);
    assert_int_equal(svc_exec_room(svc, "acme", &err), 0);
}

static void test_metrics_tenant(void **state)
{
    struct fixture *fx = *state;
    char *text = clr_service_metrics(&fx->e->svc, "acme");
    assert_non_null(text);
    assert_non_null(strstr(text, "clearing_tenant_sandboxes{tenant=\"acme\"} 2\n"));
    assert_non_null(strstr(text, "clearing_tenant_memory_bytes{tenant=\"acme\"} 805306368\n"));
    assert_non_null(strstr(text, "clearing_tenant_cpus{tenant=\"acme\"} 0.750\n"));
    assert_non_null(strstr(text, "# TYPE clearing_tenant_sandboxes gauge\n"));
    /* Its own figures only: nothing of other tenants or of the daemon. */
    assert_null(strstr(text, "tenant=\"default\""));
    assert_null(strstr(text, "tenant=\"beta\""));
    assert_null(strstr(text, "clearing_sandboxes{"));
    free(text);
    /* A tenant with nothing live gets its zero lines. */
    text = clr_service_metrics(&fx->e->svc, "nobody");
    assert_non_null(text);
    assert_non_null(strstr(text, "clearing_tenant_sandboxes{tenant=\"nobody\"} 0\n"));
    assert_non_null(strstr(text, "clearing_tenant_cpus{tenant=\"nobody\"} 0.000\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_usage_collect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_room_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_slots, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
