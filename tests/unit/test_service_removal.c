/* lib/service/removal.c against the scripted engine of fake_engine.h and a state directory in a
 * temporary directory: which engine calls a removal makes (inspect, unpause when paused, remove
 * with force and volumes), that the workspace goes only once the container has, what a refusal
 * costs (the error, the counters, the connection dropped), and the queue: no queue without a
 * remover thread, one entry per sandbox, retries after a refusal, the bounded wait for a removal,
 * and the drain at stop. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "service/removal.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000b1"
#define ID_B "sb-00000000000000b2"
#define API "/v1.41/containers/clearing-"
#define INSPECT_A "GET " API ID_A "/json"
#define DELETE_A "DELETE " API ID_A
#define DELETE_B "DELETE " API ID_B

struct fixture {
    struct test_env *e;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "removal") != 0)
        return -1;
    fx->e->svc.cfg = (clr_service_config){0}; /* these tests configure nothing */
    test_env_make_workspace(fx->e, ID_A);
    test_env_make_workspace(fx->e, ID_B);
    /* Both containers exist and are not paused, unless a test says otherwise. */
    test_env_all_running(fx->e);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->e->svc.rm_started)
        svc_removals_drain(&fx->e->svc);
    test_env_teardown(fx->e);
    free(fx);
    return 0;
}

/* The requests the fake saw, after the first `from` of them, joined by "; ". */
static void requests_since(struct fake *f, size_t from, char *out, size_t len)
{
    out[0] = '\0';
    pthread_mutex_lock(&f->lock);
    for (size_t i = from; i < f->n_requests; i++) {
        size_t n = strlen(out);
        snprintf(out + n, len - n, "%s%s", n ? "; " : "", f->requests[i]);
    }
    pthread_mutex_unlock(&f->lock);
}

static size_t n_requests(struct fake *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->n_requests;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void start_remover(clr_service *svc)
{
    assert_int_equal(pthread_create(&svc->rm_thread, NULL, svc_remover_main, svc), 0);
}

static void await_removed(clr_service *svc, const char *id)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_await_removal(svc, id, 60000, &err) != 0)
        fail_msg("await %s: %s", id, err.message);
}

/* Waits (60 s at most) until nothing is queued, being removed or waiting to be retried, the
 * ones given up included. */
static void await_settled(clr_service *svc)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    pthread_mutex_lock(&svc->rm_lock);
    while (svc->rm_pending > 0)
        if (pthread_cond_timedwait(&svc->rm_done, &svc->rm_lock, &ts) == ETIMEDOUT)
            break;
    unsigned left = svc->rm_pending;
    pthread_mutex_unlock(&svc->rm_lock);
    if (left)
        fail_msg("%u removals still pending after 60 s", left);
}

static void test_remove_now(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    assert_true(test_env_workspace_exists(fx->e, ID_A));
    clr_error err = CLR_ERROR_INIT;
    size_t from = n_requests(fx->e->f);
    assert_int_equal(svc_remove_now(svc, ID_A, "client", &err), 0);
    char seen[1024];
    requests_since(fx->e->f, from, seen, sizeof(seen));
    /* A new connection, the container looked at, removed with its volumes, nothing else. */
    assert_string_equal(seen, "GET /version; " INSPECT_A "; " DELETE_A "?force=1&v=1");
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_true(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(atomic_load(&svc->removed), 1);
    assert_int_equal(atomic_load(&svc->removal_failures), 0);
    assert_int_equal(atomic_load(&svc->h_remove.n), 1);
    /* The connection went back to the pool: the next removal opens none. */
    assert_int_equal(svc->pool_n, 1);
    from = n_requests(fx->e->f);
    assert_int_equal(svc_remove_now(svc, ID_B, "expired", &err), 0);
    requests_since(fx->e->f, from, seen, sizeof(seen));
    assert_string_equal(seen, "GET " API ID_B "/json; " DELETE_B "?force=1&v=1");
    assert_false(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(atomic_load(&svc->removed), 2);
}

static void test_remove_paused_and_gone(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* A paused container is thawed first (runsc cannot kill a paused sandbox). */
    fake_answer(fx->e->f, INSPECT_A, 200, "{\"State\":{\"Running\":true,\"Paused\":true}}");
    fake_answer(fx->e->f, "POST " API ID_A "/unpause", 204, NULL);
    clr_error err = CLR_ERROR_INIT;
    size_t from = n_requests(fx->e->f);
    assert_int_equal(svc_remove_now(svc, ID_A, "client", &err), 0);
    char seen[1024];
    requests_since(fx->e->f, from, seen, sizeof(seen));
    assert_string_equal(seen, "GET /version; " INSPECT_A "; POST " API ID_A "/unpause; " DELETE_A
                              "?force=1&v=1");
    assert_false(test_env_workspace_exists(fx->e, ID_A));

    /* A container the engine no longer has is removed: its workspace goes all the same. */
    fake_answer(fx->e->f, "GET " API ID_B, 404, "{\"message\":\"No such container\"}");
    fake_answer(fx->e->f, DELETE_B, 404, "{\"message\":\"No such container\"}");
    assert_true(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(svc_remove_now(svc, ID_B, "lost", &err), 0);
    assert_false(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(fake_count(fx->e->f, "POST " API ID_B "/unpause"), 0);
    assert_int_equal(atomic_load(&svc->removed), 2);
    assert_int_equal(atomic_load(&svc->removal_failures), 0);
}

static void test_remove_refused(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* A conflict that is not another removal under way (that one is waited for: below). */
    fake_answer(fx->e->f, DELETE_A, 409,
                "{\"message\":\"cannot remove container clearing-" ID_A ": could not kill: "
                "tried to kill container, but did not receive an exit event\"}");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_remove_now(svc, ID_A, "client", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    if (!strstr(err.message, "409") || !strstr(err.message, "did not receive an exit event"))
        fail_msg("message \"%s\" does not carry the engine's answer", err.message);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 1);
    /* The workspace stays while the container may still use it; counted as a failure. */
    assert_true(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removed), 0);
    assert_int_equal(atomic_load(&svc->removal_failures), 1);
    assert_int_equal(atomic_load(&svc->h_remove.n), 0);
    /* The connection is not reused: the next removal opens a new one. */
    assert_int_equal(svc->pool_n, 0);
    assert_int_equal(fake_count(fx->e->f, "GET /version"), 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_remove_now(svc, ID_B, "client", &err), 0);
    assert_int_equal(fake_count(fx->e->f, "GET /version"), 2);
    assert_false(test_env_workspace_exists(fx->e, ID_B));

    /* The engine down: the error, and nothing removed. */
    fake_answer(fx->e->f, DELETE_A, 500, "{\"message\":\"engine is shutting down\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_remove_now(svc, ID_A, "client", &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_non_null(strstr(err.message, "engine is shutting down"));
    assert_true(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removal_failures), 2);

    /* Not an id: refused before anything is removed. */
    size_t deletes = fake_count(fx->e->f, "DELETE ");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_remove_now(svc, "sb-../../etc", "client", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fake_count(fx->e->f, "DELETE "), deletes);
}

#define IN_PROGRESS_A \
    "{\"message\":\"removal of container clearing-" ID_A " is already in progress\"}"

/* The engine is removing the container already (a DELETE of ours that timed out goes on in the
 * engine): not a failure. The container is looked at until it is gone, then the workspace goes,
 * and the removal counts as done. */
static void test_removal_in_progress_is_awaited(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fake_answer(fx->e->f, INSPECT_A, 404, "{\"message\":\"No such container\"}");
    /* Still there at the first look (before the DELETE) and at two looks after it. */
    fake_answer_n(fx->e->f, INSPECT_A, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}", 3);
    fake_answer_n(fx->e->f, DELETE_A, 409, IN_PROGRESS_A, 1);
    clr_error err = CLR_ERROR_INIT;
    size_t from = n_requests(fx->e->f);
    if (svc_remove_now(svc, ID_A, "client", &err) != 0)
        fail_msg("a removal in progress in the engine was not awaited: %s", err.message);
    char seen[1024];
    requests_since(fx->e->f, from, seen, sizeof(seen));
    /* One DELETE (refused 409), then looks until the engine no longer has it. */
    assert_string_equal(seen, "GET /version; " INSPECT_A "; " DELETE_A "?force=1&v=1; " INSPECT_A
                              "; " INSPECT_A "; " INSPECT_A);
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removed), 1);
    assert_int_equal(atomic_load(&svc->removal_failures), 0);
}

/* The same through the remover: done at the first attempt, not retried, not given up. */
static void test_queue_removal_in_progress_not_a_failure(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    fake_answer(fx->e->f, INSPECT_A, 404, "{\"message\":\"No such container\"}");
    fake_answer_n(fx->e->f, INSPECT_A, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}", 1);
    fake_answer_n(fx->e->f, DELETE_A, 409, IN_PROGRESS_A, 1);
    svc->rm_started = true;
    start_remover(svc);
    assert_true(svc_removal_queue(svc, ID_A, "client", 0));
    await_removed(svc, ID_A); /* fails the test if it was given up */
    await_settled(svc);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 1); /* the engine's 409 was seen */
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removed), 1);
    assert_int_equal(atomic_load(&svc->removal_failures), 0);
    pthread_mutex_lock(&svc->rm_lock);
    for (size_t i = 0; i < sizeof(svc->rm_failed) / sizeof(svc->rm_failed[0]); i++)
        assert_string_not_equal(svc->rm_failed[i].id, ID_A);
    pthread_mutex_unlock(&svc->rm_lock);
}

static void test_queue_needs_remover(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* Not started: the caller is told to remove it itself. */
    assert_false(svc_removal_queue(svc, ID_A, "client", 0));
    assert_int_equal(svc->rm_pending, 0);
    assert_null(svc->rm_head);
    /* Started: queued once; the same sandbox again is refused, another one queued. */
    svc->rm_started = true;
    assert_true(svc_removal_queue(svc, ID_A, "client", 0));
    assert_false(svc_removal_queue(svc, ID_A, "client", 0));
    assert_true(svc_removal_queue(svc, ID_B, "expired", 0));
    assert_int_equal(svc->rm_pending, 2);

    /* Nobody removes yet: a bounded wait ends with what is left to do. */
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_await_removal(svc, ID_A, 50, &err), -1);
    assert_int_equal(err.code, CLR_E_TIMEOUT);
    assert_non_null(strstr(err.message, "sandbox " ID_A " is destroyed but its container was "
                                        "not removed within 50 ms"));
    assert_true(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
    /* A sandbox not queued has nothing to wait for; not an id is refused. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_await_removal(svc, "sb-00000000000000c1", 50, &err), 0);
    assert_int_equal(clr_service_await_removal(svc, "nope", 50, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);

    /* The remover takes both, each once. */
    start_remover(svc);
    await_removed(svc, ID_A);
    await_removed(svc, ID_B);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 1);
    assert_int_equal(fake_count(fx->e->f, DELETE_B), 1);
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_false(test_env_workspace_exists(fx->e, ID_B));
    pthread_mutex_lock(&svc->rm_lock);
    assert_int_equal(svc->rm_pending, 0);
    pthread_mutex_unlock(&svc->rm_lock);
    assert_int_equal(atomic_load(&svc->removed), 2);
}

static void test_queue_retries(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    svc->rm_started = true;
    start_remover(svc);
    /* Refused once, then removed on the retry. */
    fake_answer_n(fx->e->f, DELETE_A, 500, "{\"message\":\"engine is restarting\"}", 1);
    assert_true(svc_removal_queue(svc, ID_A, "client", 0));
    await_settled(svc);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 2);
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removal_failures), 1);
    assert_int_equal(atomic_load(&svc->removed), 1);

    /* Refused every time: tried until its attempts run out (the last two of five here), then
     * dropped, its workspace kept for the next reconcile. */
    fake_answer(fx->e->f, DELETE_B, 409, "{\"message\":\"container is busy\"}");
    assert_true(svc_removal_queue(svc, ID_B, "client", 3));
    await_settled(svc);
    assert_int_equal(fake_count(fx->e->f, DELETE_B), 2);
    assert_true(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(atomic_load(&svc->removal_failures), 3);
    assert_int_equal(atomic_load(&svc->removed), 1);
    pthread_mutex_lock(&svc->rm_lock);
    assert_int_equal(svc->rm_pending, 0);
    assert_null(svc->rm_head);
    pthread_mutex_unlock(&svc->rm_lock);
    /* A caller waiting for it hears that it was given up, with the engine's answer. */
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_await_removal(svc, ID_B, 60000, &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_non_null(strstr(err.message, "container is busy"));
    assert_non_null(strstr(err.message, ID_B));
    /* Dropped, so it can be queued again; that clears the failure. */
    fake_answer(fx->e->f, DELETE_B, 204, NULL);
    assert_true(svc_removal_queue(svc, ID_B, "client", 0));
    await_removed(svc, ID_B);
    assert_false(test_env_workspace_exists(fx->e, ID_B));
    assert_int_equal(fake_count(fx->e->f, DELETE_B), 3);
}

/* A removal backing off before its retry is still under way: whoever waits for it (a destroy
 * with wait) hears of it only once the retry removed the container. */
static void test_await_covers_the_retry(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    svc->rm_started = true;
    start_remover(svc);
    fake_answer_n(fx->e->f, DELETE_A, 500, "{\"message\":\"engine is restarting\"}", 1);
    assert_true(svc_removal_queue(svc, ID_A, "client", 0));
    /* The first attempt failed (positive control): the remover now backs off for 1 s. */
    for (int i = 0; i < 6000 && atomic_load(&svc->removal_failures) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&svc->removal_failures), 1);
    await_removed(svc, ID_A);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 2);
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_int_equal(atomic_load(&svc->removed), 1);
}

static void test_drain(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    svc->rm_started = true;
    assert_true(svc_removal_queue(svc, ID_A, "client", 0));
    assert_true(svc_removal_queue(svc, ID_B, "client", 0));
    start_remover(svc);
    /* At stop, what is queued is removed before the thread ends. */
    svc_removals_drain(svc);
    assert_false(svc->rm_started);
    assert_true(svc->rm_stopping);
    assert_int_equal(svc->rm_pending, 0);
    assert_int_equal(fake_count(fx->e->f, DELETE_A), 1);
    assert_int_equal(fake_count(fx->e->f, DELETE_B), 1);
    assert_false(test_env_workspace_exists(fx->e, ID_A));
    assert_false(test_env_workspace_exists(fx->e, ID_B));
    /* Stopped: nothing more is queued; the caller removes it. */
    assert_false(svc_removal_queue(svc, ID_A, "client", 0));
    assert_null(svc->rm_head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_remove_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_paused_and_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removal_in_progress_is_awaited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_removal_in_progress_not_a_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_needs_remover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_covers_the_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
