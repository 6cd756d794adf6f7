/* lib/service/warm.c against the scripted engine of fake_engine.h and workspaces (tmpfs mounts:
 * as root, else the pool thread's tests are skipped) in a temporary directory: an empty pool
 * hands out nothing and counts the miss; a discarded sandbox has its channel closed and its
 * container and workspace removed (and is only freed when no engine answers); the pool's thread
 * makes a sandbox with the daemon's default profile and checks that its agent answers before
 * it may be handed out (one that does not is removed at once, one the engine would not make
 * leaves nothing), waits after a hand-out before it refills, and ends at stop. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "service/warm.h"
#include "test_service_agent.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000d1"
#define API "/v1.41/containers/"
#define CREATE "POST " API "create"

struct fixture {
    struct test_env *e;
    char *inspect_a;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "warm") != 0)
        return -1;
    clr_service *svc = &fx->e->svc;
    svc->cfg.pool_size = 1;
    svc->image = "clearing/default:latest";
    snprintf(svc->owner, sizeof(svc->owner), "test-warm");
    fx->inspect_a = test_inspect_body(ID_A);
    /* An engine with runsc and the image, which makes, starts and removes containers, whose
     * sandboxes' agents serve no channel; unless a test says otherwise. */
    fake_answer(fx->e->f, "GET /v1.41/info", 200,
                "{\"Runtimes\":{\"runsc\":{\"path\":\"/x/runsc\"}}}");
    fake_answer(fx->e->f, "GET /v1.41/images/", 200, "{\"Config\":{}}");
    fake_answer(fx->e->f, CREATE, 201, "{\"Id\":\"c0ffee\"}");
    fake_answer(fx->e->f, "POST " API "c0ffee/start", 204, NULL);
    fake_answer(fx->e->f, "POST " API "c0ffee/attach", 500, "{\"message\":\"attach refused\"}");
    fake_answer(fx->e->f, "GET " API, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(fx->e->f, "GET " API "clearing-" ID_A, 200, fx->inspect_a);
    fake_answer(fx->e->f, "DELETE " API, 204, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    svc_warm_stop(&fx->e->svc);
    test_env_teardown(fx->e);
    free(fx->inspect_a);
    free(fx);
    return 0;
}

static bool ws_exists(struct fixture *fx, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->e->dir, id);
    struct stat st;
    return stat(p, &st) == 0;
}

/* How many workspaces the state directory holds. */
static int workspaces(struct fixture *fx)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "ls -A '%s/workspaces' 2>/dev/null | wc -l", fx->e->dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = -1;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* Waits (60 s at most) until the scripted engine saw n requests starting with prefix. */
static void await_requests(struct fake *f, const char *prefix, size_t n)
{
    for (int i = 0; i < 6000 && fake_count(f, prefix) < n; i++)
        usleep(10000);
    if (fake_count(f, prefix) < n)
        fail_msg("%zu requests \"%s\" after 60 s, expected %zu", fake_count(f, prefix), prefix,
                 n);
}

static bool can_mount(void)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "not root: workspaces cannot be mounted, pool tests skipped\n");
    return false;
}

static void start_pool(clr_service *svc)
{
    svc->warm_started = true;
    assert_int_equal(pthread_create(&svc->warm_thread, NULL, svc_warm_main, svc), 0);
}

static void test_take_from_an_empty_pool(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_channel *ch = (clr_channel *)&ch; /* not NULL: the take must set it */
    assert_null(svc_warm_take(svc, &ch));
    assert_null(ch);
    assert_int_equal(atomic_load(&svc->warm_misses), 1);
    assert_int_equal(atomic_load(&svc->warm_hits), 0);
    assert_int_equal(svc->warm_ready, 0);
    /* A miss is no hand-out: the refill is not held back. */
    assert_int_equal(svc->warm_taken_us, 0);
    /* Nothing was asked of the engine. */
    assert_int_equal(fake_count(fx->e->f, "GET /version"), 0);
    /* Stopping a pool that never started: nothing to join, nothing to remove. */
    svc_warm_stop(svc);
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
}

static void test_discard(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    test_env_make_workspace(fx->e, ID_A);
    clr_engine *eng = fake_open(fx->e->f);
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_open_at(&sb, eng, ID_A, fx->e->dir, &err), 0);
    clr_engine_free(eng);
    clr_channel *ch = NULL;
    struct test_agent *agent = test_agent_start(&ch, ID_A);
    assert_true(clr_channel_alive(ch));
    assert_true(ws_exists(fx, ID_A));
    svc_warm_discard(svc, sb, ch, "pool-recycled");
    /* Its container removed (with its volumes), its workspace gone, its channel closed. */
    assert_int_equal(fake_count(fx->e->f, "DELETE " API "clearing-" ID_A "?force=1&v=1"), 1);
    assert_false(ws_exists(fx, ID_A));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    assert_int_equal(pthread_timedjoin_np(agent->thread, NULL, &ts), 0);
    close(agent->fd);
    pthread_mutex_destroy(&agent->lock);
    free(agent);
    /* The engine handle went back whole. */
    assert_int_equal(svc->pool_n, 1);

    /* No engine to remove it with: the handle is freed, nothing else (recovery or gc removes
     * the container later). */
    clr_engine_free(svc->pool[0]);
    svc->pool_n = 0;
    eng = fake_open(fx->e->f);
    assert_int_equal(clr_sandbox_open_at(&sb, eng, ID_A, fx->e->dir, &err), 0);
    clr_engine_free(eng);
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such.sock", fx->e->f->dir);
    svc->docker_host = missing;
    size_t deletes = fake_count(fx->e->f, "DELETE ");
    svc_warm_discard(svc, sb, NULL, "pool-stop");
    assert_int_equal(fake_count(fx->e->f, "DELETE "), deletes);
    assert_int_equal(svc->pool_n, 0);
}

static void test_not_ready_is_removed(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    /* Made and started, but its agent does not run the check: the engine refuses the exec. */
    fake_answer(fx->e->f, "POST " API "c0ffee/exec", 404, "{\"message\":\"No such container\"}");
    start_pool(svc);
    await_requests(fx->e->f, "DELETE " API "clearing-sb-", 1);
    /* The pool's sandbox: the daemon's default profile, the runtime and image checked, made,
     * started, its channel tried, its check tried, then removed. */
    assert_int_equal(fake_count(fx->e->f, "GET /v1.41/info"), 1);
    assert_int_equal(fake_count(fx->e->f, "GET /v1.41/images/clearing/default:latest/json"), 1);
    assert_int_equal(fake_count(fx->e->f, CREATE "?name=clearing-sb-"), 1);
    assert_int_equal(fake_count(fx->e->f, "POST " API "c0ffee/start"), 1);
    assert_int_equal(fake_count(fx->e->f, "POST " API "c0ffee/attach"), 1);
    assert_int_equal(fake_count(fx->e->f, "POST " API "c0ffee/exec"), 1);
    /* Never handed out. */
    pthread_mutex_lock(&svc->warm_lock);
    assert_int_equal(svc->warm_ready, 0);
    assert_null(svc->warm);
    pthread_mutex_unlock(&svc->warm_lock);
    /* Stopped: the thread ended (it retries every 5 s, or at a hand-out, until then); every
     * sandbox it made was removed, with its workspace. */
    svc_warm_stop(svc);
    svc->warm_started = false;
    assert_int_equal(fake_count(fx->e->f, "DELETE " API "clearing-sb-"), fake_count(fx->e->f, CREATE));
    assert_int_equal(svc->warm_ready, 0);
    assert_null(svc->warm);
    assert_int_equal(workspaces(fx), 0);
}

static void test_unmade_leaves_nothing(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    /* The engine will not make it. A hand-out happened just now: the thread first waits for it
     * to grow old, then tries. */
    fake_answer(fx->e->f, CREATE, 500, "{\"message\":\"no space left on device\"}");
    svc->warm_taken_us = svc_mono_us();
    start_pool(svc);
    await_requests(fx->e->f, CREATE, 1);
    /* Stop wakes the thread from its wait for the retry (5 s). */
    svc_warm_stop(svc);
    svc->warm_started = false;
    assert_int_equal(fake_count(fx->e->f, "POST " API "c0ffee/start"), 0);
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
    assert_int_equal(svc->warm_ready, 0);
    assert_int_equal(workspaces(fx), 0);
    /* The engine handle of a failed create is not kept. */
    assert_int_equal(svc->pool_n, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon: a peer that went away is an error, not a signal */
    /* The agent is bind-mounted into containers the scripted engine never starts: any
     * executable passes the create's check. */
    setenv("CLEARING_AGENT", "/bin/true", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_take_from_an_empty_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_ready_is_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmade_leaves_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
