/* lib/service/engines.c against the scripted engine of fake_engine.h: a handle given back whole
 * is handed out again without a new connection (no second GET /version), one given back broken
 * is dropped and the next caller opens a new one, the pool keeps at most ENGINE_POOL_MAX, and an
 * engine that cannot be reached is an error naming it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "service/engines.h"

struct fixture {
    struct fake *f;
    clr_service svc;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    fx->f = f;
    fx->svc.docker_host = fx->f->sock;
    pthread_mutex_init(&fx->svc.pool_lock, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < fx->svc.pool_n; i++)
        clr_engine_free(fx->svc.pool[i]);
    pthread_mutex_destroy(&fx->svc.pool_lock);
    void *f = fx->f;
    fake_teardown(&f);
    free(fx);
    return 0;
}

static clr_engine *get(clr_service *svc)
{
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (svc_engine_get(svc, &eng, &err) != 0)
        fail_msg("svc_engine_get: %s", err.message);
    assert_non_null(eng);
    return eng;
}

static void test_reused_then_dropped(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->svc;
    /* An empty pool: a new connection, which asks the engine its version. */
    clr_engine *a = get(svc);
    assert_int_equal(fake_count(fx->f, "GET /version"), 1);
    assert_int_equal(svc->pool_n, 0);
    /* The handle answers (the connection is the fake's). */
    clr_error err = CLR_ERROR_INIT;
    fake_answer(fx->f, "GET /v1.41/_ping", 200, "OK");
    assert_int_equal(clr_engine_ping(a, &err), 0);
    assert_int_equal(fake_count(fx->f, "GET /v1.41/_ping"), 1);

    /* Given back whole: kept, and the next caller gets the same handle, no new connection. */
    svc_engine_put(svc, a, false);
    assert_int_equal(svc->pool_n, 1);
    clr_engine *b = get(svc);
    assert_ptr_equal(b, a);
    assert_int_equal(svc->pool_n, 0);
    assert_int_equal(fake_count(fx->f, "GET /version"), 1);
    assert_int_equal(clr_engine_ping(b, &err), 0);
    assert_int_equal(fake_count(fx->f, "GET /v1.41/_ping"), 2);

    /* Given back broken: dropped; the next caller opens a new connection. */
    svc_engine_put(svc, b, true);
    assert_int_equal(svc->pool_n, 0);
    clr_engine *c = get(svc);
    assert_int_equal(fake_count(fx->f, "GET /version"), 2);
    assert_int_equal(clr_engine_ping(c, &err), 0);
    svc_engine_put(svc, c, false);
    assert_int_equal(svc->pool_n, 1);

    /* Nothing to give back is nothing. */
    svc_engine_put(svc, NULL, false);
    svc_engine_put(svc, NULL, true);
    assert_int_equal(svc->pool_n, 1);
}

static void test_pool_bound(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->svc;
    clr_engine *held[ENGINE_POOL_MAX + 2];
    size_t n = sizeof(held) / sizeof(held[0]);
    for (size_t i = 0; i < n; i++)
        held[i] = get(svc);
    assert_int_equal(fake_count(fx->f, "GET /version"), n);
    for (size_t i = 0; i < n; i++)
        svc_engine_put(svc, held[i], false);
    /* The pool keeps ENGINE_POOL_MAX; the ones past it are closed. */
    assert_int_equal(svc->pool_n, ENGINE_POOL_MAX);
    /* Handed out again, newest first, without a connection being opened. */
    clr_engine *again[ENGINE_POOL_MAX];
    for (int i = 0; i < ENGINE_POOL_MAX; i++) {
        again[i] = get(svc);
        assert_ptr_equal(again[i], held[ENGINE_POOL_MAX - 1 - i]);
    }
    assert_int_equal(svc->pool_n, 0);
    assert_int_equal(fake_count(fx->f, "GET /version"), n);
    /* The next one is new. */
    clr_engine *extra = get(svc);
    assert_int_equal(fake_count(fx->f, "GET /version"), n + 1);
    svc_engine_put(svc, extra, false);
    for (int i = 0; i < ENGINE_POOL_MAX; i++)
        svc_engine_put(svc, again[i], i % 2 == 0);
    /* The broken ones (every other) were dropped, the whole ones kept. */
    assert_int_equal(svc->pool_n, 1 + ENGINE_POOL_MAX / 2);
}

static void test_unreachable(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->svc;
    /* Positive control: the fake is reachable. */
    svc_engine_put(svc, get(svc), false);
    assert_int_equal(svc->pool_n, 1);
    /* With a handle in the pool, the pool answers, whatever the host now says. */
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such.sock", fx->f->dir);
    svc->docker_host = missing;
    svc_engine_put(svc, get(svc), true);
    assert_int_equal(svc->pool_n, 0);
    /* An empty pool and no engine at the host: an error, and no handle. */
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_engine_get(svc, &eng, &err), -1);
    assert_null(eng);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    if (!strstr(err.message, "no-such.sock"))
        fail_msg("message \"%s\" does not name the socket", err.message);
    assert_int_equal(svc->pool_n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reused_then_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
