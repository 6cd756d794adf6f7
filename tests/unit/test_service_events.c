/* lib/service/events.c against the scripted engine of fake_engine.h, a state database and an
 * audit log in a temporary directory: the engine's events turned into row changes (an oom event
 * at once: lost "oom"; a die: lost "runtime died" once its settling time passed; a destroy whose
 * container is gone: "container removed"; a kill by the engine: left to the reconcile pass),
 * the events that must change nothing (another daemon's sandbox, a sandbox not running, an
 * action not watched, an id that is not one), an inspect that fails (judged again later), and
 * the watcher's reconnects and stop.
 *
 * The module's only entry is the watcher thread (svc_watch_main): it has no step function and
 * reads the monotonic clock itself (a die is judged 1 s after it came). The scripted engine ends
 * each event stream after its answer, so the tests script a sequence of answers per connect:
 * the events, then refusals (the watcher backs off 100, 200, 400, 800 ms: more than the 1 s a
 * death settles), then a quiet stream whose tick judges what is due. Each test waits for the
 * rows to change (60 s at most), never a fixed time. */
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
#include "service/events.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000e1"
#define ID_B "sb-00000000000000e2"
#define ID_C "sb-00000000000000e3"
#define ID_D "sb-00000000000000e4"
#define ID_E "sb-00000000000000e5"
#define ID_F "sb-00000000000000e6"
#define ID_G "sb-00000000000000e7"
#define ID_H "sb-00000000000000e8"
#define EVENTS "GET /v1.41/events"
#define INSPECT(id) "GET " TEST_API "clearing-" id "/json"
#define EVENT(action, id, owner)                                                                  \
    "{\"Type\":\"container\",\"Action\":\"" action "\",\"Actor\":{\"Attributes\":{"              \
    "\"" CLR_LABEL_PREFIX "sandbox-id\":\"" id "\",\"" CLR_LABEL_PREFIX "owner\":\"" owner      \
    "\"}}}\n"
/* An event the watcher does not act on: each connect's tick runs after it. */
#define QUIET EVENT("start", ID_H, TEST_OWNER)
#define REFUSED "{\"message\":\"engine is restarting\"}"

struct fixture {
    struct test_env *e;
    pthread_t thread;
    bool started;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "events") != 0)
        return -1;
    test_env_all_running(fx->e);
    clr_error err = CLR_ERROR_INIT;
    if (clr_engine_cancel_new(&fx->e->svc.watch_cancel, &err) != 0)
        return -1;
    *state = fx;
    return 0;
}

static void stop_watcher(struct fixture *fx)
{
    if (!fx->started)
        return;
    clr_service *svc = &fx->e->svc;
    pthread_mutex_lock(&svc->reaper_lock);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->reaper_cond);
    pthread_mutex_unlock(&svc->reaper_lock);
    clr_engine_cancel_fire(svc->watch_cancel);
    assert_int_equal(pthread_join(fx->thread, NULL), 0);
    fx->started = false;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    stop_watcher(fx);
    clr_engine_cancel_free(fx->e->svc.watch_cancel);
    test_env_teardown(fx->e);
    free(fx);
    return 0;
}

static void start_watcher(struct fixture *fx)
{
    assert_int_equal(pthread_create(&fx->thread, NULL, svc_watch_main, &fx->e->svc), 0);
    fx->started = true;
}

static bool row_is(struct test_env *e, const char *id, const char *state, const char *reason)
{
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(e->svc.store, id, &row, &err) != 0)
        fail_msg("no row %s: %s", id, err.message);
    bool is = strcmp(row.info.state, state) == 0 && strcmp(row.destroy_reason, reason) == 0;
    clr_store_sandbox_clear(&row);
    return is;
}

/* Waits (60 s at most) until the row is in this state for this reason. */
static void await_row(struct test_env *e, const char *id, const char *state, const char *reason)
{
    for (int i = 0; i < 6000; i++) {
        if (row_is(e, id, state, reason))
            return;
        usleep(10000);
    }
    test_env_expect_row(e, id, state, reason);
}

/* Rows A..G running (created long ago, expiring in 10 h), and their containers all running as
 * the engine's list has them, so that the reconcile pass after each connect leaves them to the
 * events. */
static void running_rows(struct test_env *e)
{
    const char *ids[] = {ID_A, ID_B, ID_C, ID_D, ID_E, ID_F, ID_G};
    struct test_container c[7];
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < 7; i++) {
        test_env_row(e, ids[i], now + 36000, now, 0);
        c[i] = (struct test_container){ids[i], TEST_OWNER, "running"};
    }
    test_env_containers(e, c, 7);
}

static void test_events_become_row_changes(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    clr_service *svc = &e->svc;
    running_rows(e);
    test_env_set_state(e, ID_D, CLR_STATE_DESTROYED, "client");
    /* The engine's account: A stopped (its oom came as an event), E stopped on its own, G is
     * gone, F was stopped by the engine. */
    test_env_inspect(e, ID_A, false, false);
    test_env_inspect(e, ID_E, false, false);
    fake_answer(e->f, INSPECT(ID_G), 404, "{\"message\":\"No such container\"}");
    test_env_inspect(e, ID_F, false, false);
    /* The connects, oldest answer first: events; four refusals; then quiet streams. */
    fake_answer(e->f, EVENTS, 200, QUIET);
    fake_answer_n(e->f, EVENTS, 500, REFUSED, 4);
    fake_answer_n(e->f, EVENTS, 200,
                  EVENT("oom", ID_A, TEST_OWNER)          /* lost at once */
                  EVENT("die", ID_A, TEST_OWNER)          /* the same death */
                  EVENT("die", ID_B, "another-daemon")    /* not ours */
                  EVENT("restart", ID_C, TEST_OWNER)      /* not watched */
                  EVENT("oom", ID_D, TEST_OWNER)          /* destroyed: its death is ours */
                  EVENT("die", "sb-nothex", TEST_OWNER)   /* not an id */
                  EVENT("die", ID_E, TEST_OWNER)          /* lost once it settled */
                  EVENT("kill", ID_F, TEST_OWNER)         /* the engine stopped it */
                  EVENT("die", ID_F, TEST_OWNER)
                  EVENT("destroy", ID_G, TEST_OWNER)      /* removed behind our back */
                  "{\"Action\":\"die\"}\n",               /* no actor */
                  1);
    start_watcher(fx);
    await_row(e, ID_A, CLR_STATE_LOST, "oom");
    await_row(e, ID_E, CLR_STATE_LOST, "runtime died");
    await_row(e, ID_G, CLR_STATE_LOST, "container removed");
    stop_watcher(fx);

    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_A, "engine", "oom"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_E, "engine", "runtime died"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_G, "engine",
                                          "container removed"), 1);
    assert_int_equal(atomic_load(&svc->lost), 3);
    /* A's two events were one death, judged once. */
    assert_int_equal(fake_count(e->f, INSPECT(ID_A)), 1);
    /* Unchanged, and never inspected: another daemon's, an unwatched action, a destroyed one,
     * and one the engine stopped (left to the reconcile pass, which sees it running). */
    const char *kept[] = {ID_B, ID_C, ID_F};
    for (size_t i = 0; i < 3; i++) {
        test_env_expect_row(e, kept[i], CLR_STATE_RUNNING, "");
        char inspect[128];
        snprintf(inspect, sizeof(inspect), "GET " TEST_API "clearing-%s/json", kept[i]);
        assert_int_equal(fake_count(e->f, inspect), 0);
    }
    test_env_expect_row(e, ID_D, CLR_STATE_DESTROYED, "client");
    assert_int_equal(fake_count(e->f, INSPECT(ID_D)), 0);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_D, NULL, NULL), 0);
    /* The watcher asked for this daemon's container events only. */
    assert_true(fake_count(e->f, EVENTS "?filters=") >= 2);
    /* It compared with the engine after connecting. */
    assert_true(fake_count(e->f, TEST_LIST) >= 1);
}

/* An engine that cannot say what became of a container: the death is judged again a second
 * later, and then counts. */
static void test_inspect_failure_is_retried(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    running_rows(e);
    test_env_inspect(e, ID_E, false, true); /* the engine has it OOM-killed */
    fake_answer_n(e->f, INSPECT(ID_E), 500, REFUSED, 1);
    fake_answer(e->f, EVENTS, 200, QUIET);
    fake_answer_n(e->f, EVENTS, 500, REFUSED, 4);
    fake_answer_n(e->f, EVENTS, 200, QUIET, 1);
    fake_answer_n(e->f, EVENTS, 500, REFUSED, 4);
    fake_answer_n(e->f, EVENTS, 200, EVENT("die", ID_E, TEST_OWNER), 1);
    start_watcher(fx);
    await_row(e, ID_E, CLR_STATE_LOST, "oom");
    stop_watcher(fx);
    assert_int_equal(fake_count(e->f, INSPECT(ID_E)), 2);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_E, "engine", "oom"), 1);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
}

/* A death whose container still runs (an OOM kill inside that it survived) is no loss. */
static void test_survivor_is_not_lost(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    running_rows(e);
    test_env_inspect(e, ID_A, true, true);
    test_env_inspect(e, ID_B, false, true);
    fake_answer(e->f, EVENTS, 200, QUIET);
    fake_answer_n(e->f, EVENTS, 200,
                  EVENT("oom", ID_A, TEST_OWNER) EVENT("oom", ID_B, TEST_OWNER), 1);
    start_watcher(fx);
    /* B (positive control: its oom was judged) is lost; A, judged the same way, is not. */
    await_row(e, ID_B, CLR_STATE_LOST, "oom");
    for (int i = 0; i < 6000 && fake_count(e->f, INSPECT(ID_A)) == 0; i++)
        usleep(10000);
    stop_watcher(fx);
    assert_int_equal(fake_count(e->f, INSPECT(ID_A)), 1);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_A, NULL, NULL), 0);
}

/* A death while a snapshot or restore holds the snapshot gate for writing (issue #22: a
 * checkpoint freezes the container, a restore runs none between its two): not judged, the
 * engine not even asked, and the reconcile after each connect skipped, however many ticks pass;
 * judged once the gate is released (positive control: the same death is then lost). */
static void test_death_waits_for_snapshot_gate(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    running_rows(e);
    test_env_inspect(e, ID_A, false, true);
    fake_answer(e->f, EVENTS, 200, QUIET);
    fake_answer_n(e->f, EVENTS, 200, EVENT("oom", ID_A, TEST_OWNER), 1);
    svc_snapshot_gate_write(&e->svc);
    start_watcher(fx);
    /* The oom's stream, then quiet ones, each with a tick that tries to judge the death. */
    for (int i = 0; i < 6000 && fake_count(e->f, EVENTS) < 5; i++)
        usleep(10000);
    assert_true(fake_count(e->f, EVENTS) >= 5);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    assert_int_equal(fake_count(e->f, INSPECT(ID_A)), 0);
    assert_int_equal(fake_count(e->f, TEST_LIST), 0);
    svc_snapshot_gate_write_done(&e->svc);
    await_row(e, ID_A, CLR_STATE_LOST, "oom");
    stop_watcher(fx);
    assert_int_equal(fake_count(e->f, INSPECT(ID_A)), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_A, "engine", "oom"), 1);
}

/* The engine cannot list its containers: the reconcile after a connect fails (B, which has no
 * container, is not judged by it), and the events are judged all the same. */
static void test_events_without_reconcile(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    running_rows(e);
    fake_answer(e->f, TEST_LIST, 500, "{\"message\":\"engine is starting\"}");
    test_env_inspect(e, ID_A, false, true);
    fake_answer(e->f, EVENTS, 200, QUIET);
    fake_answer_n(e->f, EVENTS, 200, EVENT("oom", ID_A, TEST_OWNER), 1);
    start_watcher(fx);
    await_row(e, ID_A, CLR_STATE_LOST, "oom");
    stop_watcher(fx);
    assert_true(fake_count(e->f, TEST_LIST) >= 1);
    test_env_expect_row(e, ID_B, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&e->svc.lost), 1);
}

/* The engine refuses the stream: the watcher tries again (backing off) until the daemon stops,
 * and the stop ends it while it waits; nothing changes meanwhile. A stream that is not events is
 * a broken stream, not a crash. */
static void test_reconnects_until_stopped(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    running_rows(e);
    fake_answer(e->f, EVENTS, 500, REFUSED);
    fake_answer_n(e->f, EVENTS, 200, "[\"not an event\"]\n", 1);
    start_watcher(fx);
    for (int i = 0; i < 6000 && fake_count(e->f, EVENTS) < 3; i++)
        usleep(10000);
    assert_true(fake_count(e->f, EVENTS) >= 3);
    stop_watcher(fx);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&e->svc.lost), 0);
}

/* Stopping before it connects: the thread ends without asking the engine for events. */
static void test_stopped_before_start(void **state)
{
    struct fixture *fx = *state;
    struct test_env *e = fx->e;
    e->svc.stopping = true;
    start_watcher(fx);
    stop_watcher(fx);
    assert_int_equal(fake_count(e->f, EVENTS), 0);
}

int main(void)
{
    /* As `clearing serve` does: a peer that closed its end (the scripted engine writing an
     * answer the client stopped reading) is an error on that connection, not the end of the
     * process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_become_row_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inspect_failure_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survivor_is_not_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death_waits_for_snapshot_gate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_without_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_until_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_before_start, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
