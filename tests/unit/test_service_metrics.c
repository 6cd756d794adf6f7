/* lib/service/metrics.c on a state database and an audit log in a temporary directory, with the
 * scripted engine of fake_engine.h: the health answer (ok; degraded by the engine or by the audit
 * log, each with its reason; unavailable when the state directory cannot be checked), the
 * anonymous callers' shared answer, and the lines of /metrics (gauges from the database,
 * counters and histograms from the service's figures). */
#include <pthread.h>
#include <setjmp.h>
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
#include "service/service_int.h"
#include "test_service_env.h"

#define PING "GET /v1.41/_ping"

struct fixture {
    struct test_env *e;
    char moved[128], missing[128];
};

static void add_row(clr_store *st, const char *id, const char *state)
{
    clr_store_sandbox s;
    test_row_init(&s, id, "", state);
    test_row_insert(st, &s);
}

/* Two running sandboxes (default limits: 512 MiB, 1 CPU each) and a destroyed one. */
static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "metrics") != 0)
        return -1;
    clr_service *svc = &fx->e->svc;
    svc->cfg = (clr_service_config){0}; /* these tests configure nothing */
    snprintf(fx->moved, sizeof(fx->moved), "%s/audit.log.moved", fx->e->dir);
    snprintf(fx->missing, sizeof(fx->missing), "%s/missing", fx->e->dir);
    add_row(svc->store, "sb-00000000000000d1", CLR_STATE_RUNNING);
    add_row(svc->store, "sb-00000000000000d2", CLR_STATE_RUNNING);
    add_row(svc->store, "sb-00000000000000d3", CLR_STATE_DESTROYED);
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

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string \"%s\"", key);
    return s;
}

/* The health answer; rc is what clr_service_health() returned. */
static json_t *health(clr_service *svc, bool fresh, int rc)
{
    json_t *h = NULL;
    assert_int_equal(clr_service_health(svc, fresh, &h), rc);
    assert_non_null(h);
    return h;
}

static void expect_reason(json_t *h, size_t i, const char *want)
{
    const char *r = json_string_value(json_array_get(json_object_get(h, "reasons"), i));
    if (!r || !strstr(r, want))
        fail_msg("reason %zu is \"%s\", expected it to say \"%s\"", i, r ? r : "(none)", want);
}

static void test_health_ok(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fake_answer(fx->e->f, PING, 200, "OK");
    svc->rm_pending = 3;
    atomic_store(&svc->running_execs, 2);
    json_t *h = health(svc, true, 0);
    assert_int_equal(fake_count(fx->e->f, PING), 1);
    assert_string_equal(str(h, "status"), "ok");
    assert_int_equal(json_array_size(json_object_get(h, "reasons")), 0);
    assert_string_equal(str(h, "engine"), "ok");
    assert_string_equal(str(h, "version"), clr_version());
    assert_int_equal(json_integer_value(json_object_get(h, "sandboxes")), 2);
    assert_int_equal(json_integer_value(json_object_get(h, "running_execs")), 2);
    assert_int_equal(json_integer_value(json_object_get(h, "removals_pending")), 3);
    /* A caller who sees details gets the audit log's disk figures. */
    json_t *audit = json_object_get(h, "audit");
    assert_true(json_is_object(audit));
    assert_true(json_integer_value(json_object_get(audit, "free_bytes")) > 0);
    assert_int_equal(json_integer_value(json_object_get(audit, "disk_budget")), 0);
    assert_true(json_is_null(json_object_get(audit, "warning")));
    json_decref(h);
    /* The ping's connection went back to the pool. */
    assert_int_equal(svc->pool_n, 1);
    /* An anonymous caller: the status, without the audit log's figures. */
    h = health(svc, false, 0);
    assert_string_equal(str(h, "status"), "ok");
    assert_null(json_object_get(h, "audit"));
    json_decref(h);
}

static void test_health_engine(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fake_answer(fx->e->f, PING, 200, "OK");
    json_decref(health(svc, true, 0));
    /* The engine answers, but not well: degraded, with its message. */
    fake_answer(fx->e->f, PING, 500, "{\"message\":\"engine overloaded\"}");
    json_t *h = health(svc, true, -1);
    assert_string_equal(str(h, "status"), "degraded");
    assert_int_equal(json_array_size(json_object_get(h, "reasons")), 1);
    expect_reason(h, 0, "the Docker engine: ");
    expect_reason(h, 0, "engine overloaded");
    assert_non_null(strstr(str(h, "engine"), "engine overloaded"));
    json_decref(h);
    /* Its connection is not kept. */
    assert_int_equal(svc->pool_n, 0);

    /* No engine at all: degraded, naming where it was looked for. */
    char host[128];
    snprintf(host, sizeof(host), "%s/no-such.sock", fx->e->f->dir);
    svc->docker_host = host;
    h = health(svc, true, -1);
    assert_string_equal(str(h, "status"), "degraded");
    expect_reason(h, 0, "the Docker engine: ");
    expect_reason(h, 0, "no-such.sock");
    json_decref(h);
    svc->docker_host = fx->e->f->sock;

    /* Back: ok again. */
    fake_answer(fx->e->f, PING, 200, "OK");
    h = health(svc, true, 0);
    assert_string_equal(str(h, "status"), "ok");
    json_decref(h);
}

static void test_health_audit_and_disk(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fake_answer(fx->e->f, PING, 200, "OK");
    json_decref(health(svc, true, 0));
    /* The audit log moved away: every action would be refused; degraded, saying why. */
    assert_int_equal(rename(fx->e->log, fx->moved), 0);
    json_t *h = health(svc, true, -1);
    assert_string_equal(str(h, "status"), "degraded");
    assert_int_equal(json_array_size(json_object_get(h, "reasons")), 1);
    expect_reason(h, 0, "the audit log ");
    expect_reason(h, 0, "is not writable");
    assert_string_equal(str(h, "engine"), "ok");
    json_decref(h);
    assert_int_equal(rename(fx->moved, fx->e->log), 0);
    json_decref(health(svc, true, 0));

    /* A state directory whose free space cannot be known: unavailable. */
    svc->state_dir = fx->missing;
    h = health(svc, true, -1);
    assert_string_equal(str(h, "status"), "unavailable");
    assert_int_equal(json_array_size(json_object_get(h, "reasons")), 1);
    expect_reason(h, 0, "cannot check the free space of ");
    expect_reason(h, 0, "/missing: No such file or directory");
    json_decref(h);

    /* With the engine down as well, both are said, and unavailable wins. */
    fake_answer(fx->e->f, PING, 500, "{\"message\":\"engine overloaded\"}");
    h = health(svc, true, -1);
    assert_string_equal(str(h, "status"), "unavailable");
    assert_int_equal(json_array_size(json_object_get(h, "reasons")), 2);
    expect_reason(h, 0, "the Docker engine: ");
    expect_reason(h, 1, "cannot check the free space of ");
    json_decref(h);
    svc->state_dir = fx->e->dir;
}

static void test_health_anonymous_shared(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* The first anonymous caller pings (nothing known yet). */
    fake_answer(fx->e->f, PING, 200, "OK");
    json_t *h = health(svc, false, 0);
    assert_int_equal(fake_count(fx->e->f, PING), 1);
    json_decref(h);
    /* The last answer is recent (its time set ahead: no clock in this test): anonymous callers
     * share it, the engine is not asked, even though it would now say otherwise. */
    fake_answer(fx->e->f, PING, 500, "{\"message\":\"engine overloaded\"}");
    pthread_mutex_lock(&svc->health_lock);
    clock_gettime(CLOCK_MONOTONIC, &svc->health_at);
    svc->health_at.tv_sec += 3600;
    pthread_mutex_unlock(&svc->health_lock);
    for (int i = 0; i < 3; i++) {
        h = health(svc, false, 0);
        assert_string_equal(str(h, "status"), "ok");
        json_decref(h);
    }
    assert_int_equal(fake_count(fx->e->f, PING), 1);
    /* A fresh caller asks the engine, and its answer is the one shared from then on. */
    h = health(svc, true, -1);
    assert_int_equal(fake_count(fx->e->f, PING), 2);
    json_decref(h);
    pthread_mutex_lock(&svc->health_lock);
    clock_gettime(CLOCK_MONOTONIC, &svc->health_at);
    svc->health_at.tv_sec += 3600;
    pthread_mutex_unlock(&svc->health_lock);
    h = health(svc, false, -1);
    assert_string_equal(str(h, "status"), "degraded");
    expect_reason(h, 0, "engine overloaded");
    json_decref(h);
    assert_int_equal(fake_count(fx->e->f, PING), 2);
    /* An old answer (its time long past) is renewed by the next anonymous caller. */
    fake_answer(fx->e->f, PING, 200, "OK");
    pthread_mutex_lock(&svc->health_lock);
    svc->health_at.tv_sec -= 2 * 3600;
    pthread_mutex_unlock(&svc->health_lock);
    h = health(svc, false, 0);
    assert_string_equal(str(h, "status"), "ok");
    json_decref(h);
    assert_int_equal(fake_count(fx->e->f, PING), 3);
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want))
        fail_msg("no line \"%s\" in the metrics", line);
}

static void test_metrics_lines(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    atomic_store(&svc->created, 5);
    atomic_store(&svc->destroyed_client, 2);
    atomic_store(&svc->destroyed_expired, 1);
    atomic_store(&svc->lost, 4);
    atomic_store(&svc->removed, 7);
    atomic_store(&svc->removal_failures, 6);
    atomic_store(&svc->running_execs, 1);
    atomic_store(&svc->egress.denied, 9);
    svc->rm_pending = 2;
    svc->warm_ready = 3;
    svc_observe(&svc->h_create, 7000);    /* 0.007 s: the 0.01 bucket */
    svc_observe(&svc->h_create, 2000000); /* 2 s: the 2.5 bucket */
    svc_observe(&svc->h_exec, 90000000);  /* 90 s: past the last bucket */
    char *text = clr_service_metrics(svc, NULL);
    assert_non_null(text);
    expect_line(text, "# TYPE clearing_sandboxes gauge");
    expect_line(text, "clearing_sandboxes{state=\"running\"} 2");
    expect_line(text, "clearing_execs_running 1");
    expect_line(text, "clearing_sandboxes_created_total 5");
    expect_line(text, "clearing_sandbox_create_failures_total 0");
    expect_line(text, "clearing_sandboxes_destroyed_total{reason=\"client\"} 2");
    expect_line(text, "clearing_sandboxes_destroyed_total{reason=\"expired\"} 1");
    expect_line(text, "clearing_sandboxes_destroyed_total{reason=\"idle\"} 0");
    expect_line(text, "clearing_sandboxes_lost_total 4");
    expect_line(text, "clearing_pool_ready 3");
    expect_line(text, "clearing_egress_connections_total{outcome=\"denied\"} 9");
    expect_line(text, "clearing_sandboxes_removed_total 7");
    expect_line(text, "clearing_removal_failures_total 6");
    expect_line(text, "clearing_removals_pending 2");
    expect_line(text, "clearing_audit_disk_budget_bytes 0");
    expect_line(text, "clearing_audit_disk_warning 0");
    /* Histograms: cumulative buckets, the sum in seconds, the count. */
    expect_line(text, "# TYPE clearing_create_seconds histogram");
    expect_line(text, "clearing_create_seconds_bucket{le=\"0.005\"} 0");
    expect_line(text, "clearing_create_seconds_bucket{le=\"0.01\"} 1");
    expect_line(text, "clearing_create_seconds_bucket{le=\"1\"} 1");
    expect_line(text, "clearing_create_seconds_bucket{le=\"2.5\"} 2");
    expect_line(text, "clearing_create_seconds_bucket{le=\"+Inf\"} 2");
    expect_line(text, "clearing_create_seconds_sum 2.007000");
    expect_line(text, "clearing_create_seconds_count 2");
    expect_line(text, "clearing_exec_seconds_bucket{le=\"60\"} 0");
    expect_line(text, "clearing_exec_seconds_bucket{le=\"+Inf\"} 1");
    expect_line(text, "clearing_exec_seconds_sum 90.000000");
    expect_line(text, "clearing_removal_seconds_count 0");
    /* The operator's view includes every tenant with live sandboxes. */
    expect_line(text, "clearing_tenant_sandboxes{tenant=\"default\"} 2");
    expect_line(text, "clearing_tenant_memory_bytes{tenant=\"default\"} 1073741824");
    expect_line(text, "clearing_tenant_cpus{tenant=\"default\"} 2.000");
    /* Every sample line has its metric's TYPE line before it. */
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len && p[0] != '#') {
            char name[128];
            size_t n = strcspn(p, "{ ");
            snprintf(name, sizeof(name), "# TYPE %.*s ", (int)n, p);
            const char *type = strstr(text, name);
            if (!type) {
                /* A histogram's lines belong to its base name. */
                const char *sfx[] = {"_bucket", "_sum", "_count"};
                for (size_t i = 0; i < 3 && !type; i++) {
                    size_t sl = strlen(sfx[i]);
                    if (n > sl && strncmp(p + n - sl, sfx[i], sl) == 0) {
                        snprintf(name, sizeof(name), "# TYPE %.*s histogram", (int)(n - sl), p);
                        type = strstr(text, name);
                    }
                }
            }
            if (!type || type > p)
                fail_msg("no TYPE line before \"%.*s\"", (int)len, p);
        }
        p += len + (nl ? 1 : 0);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_audit_and_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_anonymous_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_lines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
