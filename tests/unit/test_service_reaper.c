/* lib/service/reaper.c against the scripted engine of fake_engine.h, a state database and an
 * audit log in a temporary directory: the reaper pass removes exactly the expired and idle rows
 * (not the live ones, nor an idle one a command or process holds), recorded before they go; the
 * reconcile pass marks lost the rows whose container stopped or vanished (once, and only when the
 * audit log takes it) and queues again the removal of a destroyed sandbox's leftover container;
 * the recovery at start keeps what runs, marks lost what vanished, ends interrupted plans,
 * resumes cut removals, removes orphans (or adopts them into an empty database) and leftover
 * workspaces. The pass reads the wall clock (svc_now_s()) and takes no time argument: the rows'
 * times are set relative to now, far enough either side that a slow machine does not matter.
 * The reaper thread is run for one test, which waits for its outcome (never a fixed sleep). */
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
#include "service/reaper.h"
#include "service/removal.h"
#include "service/snapshots.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000a1"
#define ID_B "sb-00000000000000a2"
#define ID_C "sb-00000000000000a3"
#define ID_D "sb-00000000000000a4"
#define ID_E "sb-00000000000000a5"
#define ID_F "sb-00000000000000a6"
#define ID_G "sb-00000000000000a7"
#define ID_H "sb-00000000000000a8"
#define ID_I "sb-00000000000000a9"
#define ID_J "sb-00000000000000b0"
#define DELETE(id) "DELETE " TEST_API "clearing-" id

static int setup(void **state)
{
    struct test_env *e = NULL;
    if (test_env_setup(&e, "reaper") != 0)
        return -1;
    test_env_all_running(e);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct test_env *e = *state;
    if (e->svc.rm_started)
        svc_removals_drain(&e->svc);
    test_env_teardown(e);
    return 0;
}

/* A command's live state holding the sandbox (refs 2: the registry's and the command's), as
 * execs.c keeps it while a command runs. */
static struct live_sb *hold_live(clr_service *svc, const char *id)
{
    struct live_sb *lv = calloc(1, sizeof(*lv));
    assert_non_null(lv);
    lv->svc = svc;
    snprintf(lv->id, sizeof(lv->id), "%s", id);
    lv->refs = 2;
    pthread_mutex_lock(&svc->live_lock);
    lv->next = svc->live;
    svc->live = lv;
    pthread_mutex_unlock(&svc->live_lock);
    return lv;
}

static int reap(clr_service *svc)
{
    clr_error err = CLR_ERROR_INIT;
    int n = clr_service_reap(svc, &err);
    if (n < 0)
        fail_msg("clr_service_reap: %s", err.message);
    return n;
}

static void test_reap_expired_and_idle(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    const int64_t later = now + 36000, long_ago = now - 36000;
    test_env_row(e, ID_A, now - 10, now, 0);          /* expired */
    test_env_row(e, ID_B, later, long_ago, 60);       /* idle */
    test_env_row(e, ID_C, later, long_ago, 60);       /* idle, but a command runs */
    test_env_row(e, ID_D, later, now + 600, 60);      /* active */
    test_env_row(e, ID_E, later, long_ago - 1e6, 0);  /* no idle timeout */
    test_env_row(e, ID_F, later, long_ago, 60);       /* idle, but its live state is held */
    test_env_row(e, ID_G, now - 10, now, 0);          /* lost, expired: its remains go */
    test_env_row(e, ID_H, later, now, 0);             /* lost, not expired */
    test_env_row(e, ID_I, now - 10, long_ago, 60);    /* destroyed already */
    test_env_set_state(e, ID_G, CLR_STATE_LOST, "oom");
    test_env_set_state(e, ID_H, CLR_STATE_LOST, "oom");
    test_env_set_state(e, ID_I, CLR_STATE_DESTROYED, "client");
    clr_error err = CLR_ERROR_INIT;
    json_t *req = json_object();
    assert_int_equal(clr_store_exec_insert(svc->store, "ex-c1", ID_C, req, now, &err), 0);
    json_decref(req);
    struct live_sb *held = hold_live(svc, ID_F);
    test_env_make_workspace(e, ID_A);
    test_env_make_workspace(e, ID_D);

    assert_int_equal(reap(svc), 3);
    /* Removed, each once: the expired, the idle, the expired lost one. */
    assert_int_equal(fake_count(e->f, DELETE(ID_A)), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_B)), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_G)), 1);
    assert_int_equal(fake_count(e->f, "DELETE "), 3);
    assert_false(test_env_workspace_exists(e, ID_A));
    assert_true(test_env_workspace_exists(e, ID_D));
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "expired");
    test_env_expect_row(e, ID_B, CLR_STATE_DESTROYED, "idle");
    test_env_expect_row(e, ID_G, CLR_STATE_DESTROYED, "expired");
    /* Kept as they were. */
    test_env_expect_row(e, ID_C, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_D, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_E, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_F, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_H, CLR_STATE_LOST, "oom");
    test_env_expect_row(e, ID_I, CLR_STATE_DESTROYED, "client");
    /* Recorded as the reaper's, with the reason. */
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_A, "reaper", "expired"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_B, "reaper", "idle"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_G, "reaper", "expired"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_C, NULL, NULL), 0);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_I, NULL, NULL), 0);
    assert_int_equal(atomic_load(&svc->destroyed_expired), 2);
    assert_int_equal(atomic_load(&svc->destroyed_idle), 1);
    assert_int_equal(atomic_load(&svc->destroyed_client), 0);
    assert_int_equal(atomic_load(&svc->removed), 3);

    /* A second pass has nothing to do. */
    assert_int_equal(reap(svc), 0);
    assert_int_equal(fake_count(e->f, "DELETE "), 3);

    /* C and F were kept only while held: once the command ends and the live state is let go,
     * they are idle like B. */
    json_t *res = json_object();
    assert_int_equal(clr_store_exec_finish(svc->store, "ex-c1", CLR_EXEC_STATE_DONE, res, now,
                                           &err), 0);
    json_decref(res);
    pthread_mutex_lock(&svc->live_lock);
    held->refs = 1;
    pthread_mutex_unlock(&svc->live_lock);
    assert_int_equal(reap(svc), 2);
    test_env_expect_row(e, ID_C, CLR_STATE_DESTROYED, "idle");
    test_env_expect_row(e, ID_F, CLR_STATE_DESTROYED, "idle");
    assert_null(svc->live); /* the destroy dropped F's live state */
    assert_int_equal(fake_count(e->f, DELETE(ID_C)), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_F)), 1);
    test_env_expect_row(e, ID_D, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_E, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&svc->destroyed_idle), 3);
}

/* Nothing is destroyed unrecorded: with the audit log unwritable the expired row runs on and
 * the engine is not asked; the next pass, with the log back, destroys it. */
static void test_reap_fails_closed(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_A, now - 10, now, 0);
    test_env_row(e, ID_G, now - 10, now, 0);
    test_env_set_state(e, ID_G, CLR_STATE_LOST, "oom");
    test_env_break_audit(e, true);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_append(svc->audit, "test", ID_A, "probe", "ok", NULL, &err), -1);
    assert_int_equal(reap(svc), 0);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_G, CLR_STATE_LOST, "oom");
    assert_int_equal(fake_count(e->f, "DELETE "), 0);
    assert_int_equal(atomic_load(&svc->destroyed_expired), 0);

    test_env_break_audit(e, false);
    assert_int_equal(reap(svc), 2);
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "expired");
    test_env_expect_row(e, ID_G, CLR_STATE_DESTROYED, "expired");
    assert_int_equal(fake_count(e->f, "DELETE "), 2);

    /* The engine refusing the removal does not undo the destroy: the row is destroyed (no
     * client reaches it), the failure counted, and the reconcile pass queues it again. */
    test_env_row(e, ID_B, now - 10, now, 0);
    fake_answer(e->f, DELETE(ID_B), 500, "{\"message\":\"engine is restarting\"}");
    assert_int_equal(reap(svc), 1);
    test_env_expect_row(e, ID_B, CLR_STATE_DESTROYED, "expired");
    assert_int_equal(atomic_load(&svc->removal_failures), 1);
}

static int reconcile(clr_service *svc)
{
    clr_error err = CLR_ERROR_INIT;
    int n = clr_service_reconcile(svc, &err);
    if (n < 0)
        fail_msg("clr_service_reconcile: %s", err.message);
    return n;
}

static void test_reconcile(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL), later = now + 36000;
    test_env_row(e, ID_A, later, now, 0); /* runs */
    test_env_row(e, ID_B, later, now, 0); /* its container exited */
    test_env_row(e, ID_C, later, now, 0); /* no container */
    clr_store_sandbox young;
    test_row_init(&young, ID_D, "", CLR_STATE_RUNNING); /* no container yet: being created */
    young.info.created_at = now;
    young.info.expires_at = later;
    test_row_insert(svc->store, &young);
    test_env_row(e, ID_E, later, now, 0); /* destroyed, its container still there */
    test_env_set_state(e, ID_E, CLR_STATE_DESTROYED, "client");
    test_env_row(e, ID_F, later, now, 0); /* destroyed; a container of another daemon's */
    test_env_set_state(e, ID_F, CLR_STATE_DESTROYED, "client");
    const struct test_container c[] = {
        {ID_A, TEST_OWNER, "running"}, {ID_B, TEST_OWNER, "exited"},
        {ID_E, TEST_OWNER, "running"}, {ID_F, "another-daemon", "running"},
        {ID_G, TEST_OWNER, "running"}, /* no row: left to the recovery at start */
    };
    test_env_containers(e, c, sizeof(c) / sizeof(c[0]));
    svc->rm_started = true; /* a remover thread takes what is queued */

    assert_int_equal(reconcile(svc), 2);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    test_env_expect_row(e, ID_C, CLR_STATE_LOST, "container stopped or vanished");
    test_env_expect_row(e, ID_D, CLR_STATE_RUNNING, "");
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_B, "reaper",
                                          "container stopped or vanished"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_C, "reaper", NULL), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_A, NULL, NULL), 0);
    assert_int_equal(atomic_load(&svc->lost), 2);
    /* Only the destroyed sandbox's own container is queued for removal, once. */
    pthread_mutex_lock(&svc->rm_lock);
    assert_int_equal(svc->rm_pending, 1);
    pthread_mutex_unlock(&svc->rm_lock);
    /* Nothing removed by the pass itself; the remover removes E. */
    assert_int_equal(fake_count(e->f, "DELETE "), 0);
    assert_int_equal(pthread_create(&svc->rm_thread, NULL, svc_remover_main, svc), 0);
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_await_removal(svc, ID_E, 60000, &err) != 0)
        fail_msg("await %s: %s", ID_E, err.message);
    assert_int_equal(fake_count(e->f, DELETE(ID_E)), 1);
    assert_int_equal(fake_count(e->f, "DELETE "), 1);

    /* Lost once: a second pass marks nothing, records nothing. */
    assert_int_equal(reconcile(svc), 0);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_B, NULL, NULL), 1);
    assert_int_equal(atomic_load(&svc->lost), 2);

    /* The engine down: an error naming it, and no row changes. */
    fake_answer(e->f, TEST_LIST, 500, "{\"message\":\"engine is shutting down\"}");
    test_env_row(e, ID_H, later, now, 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_reconcile(svc, &err), -1);
    assert_non_null(strstr(err.message, "engine is shutting down"));
    test_env_expect_row(e, ID_H, CLR_STATE_RUNNING, "");
}

/* The snapshot gate (issue #22): while a snapshot or restore holds it for writing the engine's
 * picture is in flux, and the pass neither looks nor marks (the engine is not even asked); once
 * released the same pass marks the row lost (positive control). A pass holds it for reading
 * across its look and act: a writer cannot begin meanwhile, and can once it is done. */
static void test_reconcile_waits_for_snapshot_gate(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_B, now + 36000, now, 0); /* no container: the engine shows none */
    test_env_containers(e, NULL, 0);
    svc_snapshot_gate_write(svc);
    assert_int_equal(reconcile(svc), 0);
    assert_int_equal(fake_count(e->f, TEST_LIST), 0); /* nothing looked at */
    test_env_expect_row(e, ID_B, CLR_STATE_RUNNING, "");
    svc_snapshot_gate_write_done(svc);
    assert_int_equal(reconcile(svc), 1);
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    /* A checker's hold keeps writers out until it is done; writers exclude checkers too. */
    assert_true(svc_snapshot_gate_try_read(svc));
    assert_int_equal(pthread_rwlock_trywrlock(&svc->snapshot_gate), EBUSY);
    svc_snapshot_gate_read_done(svc);
    assert_int_equal(pthread_rwlock_trywrlock(&svc->snapshot_gate), 0);
    assert_false(svc_snapshot_gate_try_read(svc));
    svc_snapshot_gate_write_done(svc);
    assert_true(svc_snapshot_gate_try_read(svc));
    svc_snapshot_gate_read_done(svc);
}

static void *gate_writer(void *p)
{
    clr_service *svc = p;
    svc_snapshot_gate_write(svc);
    svc_snapshot_gate_write_done(svc);
    return NULL;
}

/* The gate prefers writers: with a look under way, a snapshot or restore that asks for the
 * gate waits, and from then on a try-read fails (the pass skips without looking) rather than
 * letting passes hold the writer off for ever. Waited for as a condition: the try-read that
 * fails is the sign the writer waits. Once the look is done the writer runs, and a pass looks
 * again (positive control). */
static void test_snapshot_gate_prefers_writer(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    test_env_containers(e, NULL, 0);
    assert_true(svc_snapshot_gate_try_read(svc)); /* a look under way */
    pthread_t w;
    assert_int_equal(pthread_create(&w, NULL, gate_writer, svc), 0);
    bool refused = false;
    for (int i = 0; i < 300000 && !refused; i++) {
        refused = !svc_snapshot_gate_try_read(svc);
        if (!refused) {
            svc_snapshot_gate_read_done(svc);
            usleep(100);
        }
    }
    assert_true(refused); /* a writer waits: no new reader */
    size_t looked = fake_count(e->f, TEST_LIST);
    assert_int_equal(reconcile(svc), 0);
    assert_int_equal(fake_count(e->f, TEST_LIST), looked); /* the pass did not look */
    svc_snapshot_gate_read_done(svc); /* the look is done: the writer goes */
    assert_int_equal(pthread_join(w, NULL), 0);
    assert_true(svc_snapshot_gate_try_read(svc));
    svc_snapshot_gate_read_done(svc);
    assert_int_equal(reconcile(svc), 0);
    assert_true(fake_count(e->f, TEST_LIST) > looked); /* positive control: a pass looks */
}

/* A row is lost only with its record: while the audit log refuses, it stays running (and
 * reachable for destroy); the next pass, with the log back, marks it. */
static void test_lost_needs_its_record(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_B, now + 36000, now, 0);
    test_env_containers(e, NULL, 0);
    test_env_break_audit(e, true);
    assert_int_equal(reconcile(svc), 0);
    test_env_expect_row(e, ID_B, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&svc->lost), 0);
    test_env_break_audit(e, false);
    assert_int_equal(reconcile(svc), 1);
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    assert_int_equal(atomic_load(&svc->lost), 1);

    /* Marked by someone else meanwhile (the event watcher): the second look is a no-op. */
    assert_false(svc_mark_lost(svc, ID_B, "engine", "oom"));
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    /* No row at all: nothing to mark. */
    assert_false(svc_mark_lost(svc, ID_I, "engine", "oom"));
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_I, NULL, NULL), 0);
    assert_int_equal(atomic_load(&svc->lost), 1);
}

static void test_recover(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL), later = now + 36000;
    clr_error err = CLR_ERROR_INIT;
    test_env_row(e, ID_A, later, now, 0); /* runs on */
    /* ... in a container other than the row's: the daemon died in a restore between the new
     * container's create and its record. */
    assert_int_equal(clr_store_sandbox_set_container(svc->store, ID_A, "cid-old", &err), 0);
    test_env_row(e, ID_B, later, now, 0); /* vanished while the daemon was down */
    test_env_row(e, ID_C, later, now, 0); /* a plan's sandbox: its plan died with the daemon */
    test_env_set_state(e, ID_C, CLR_STATE_PLAN, "");
    test_env_row(e, ID_D, later, now, 0); /* destroyed; its removal was cut */
    test_env_set_state(e, ID_D, CLR_STATE_DESTROYED, "client");
    test_env_row(e, ID_E, later, now, 0); /* destroyed; the engine refuses its removal */
    test_env_set_state(e, ID_E, CLR_STATE_DESTROYED, "client");
    test_env_row(e, ID_F, later, now, 0); /* lost: its stopped container stays */
    test_env_set_state(e, ID_F, CLR_STATE_LOST, "oom");
    test_env_row(e, ID_I, later, now, 0); /* destroyed, container gone, workspace left */
    test_env_set_state(e, ID_I, CLR_STATE_DESTROYED, "client");
    const struct test_container c[] = {
        {ID_A, TEST_OWNER, "running"},      {ID_D, TEST_OWNER, "running"},
        {ID_E, TEST_OWNER, "running"},      {ID_F, TEST_OWNER, "exited"},
        {ID_G, TEST_OWNER, "running"},      /* no row: an orphan */
        {ID_H, "another-daemon", "running"}, /* not ours */
        {ID_J, TEST_OWNER, "exited"},       /* an orphan the engine will not remove */
    };
    test_env_containers(e, c, sizeof(c) / sizeof(c[0]));
    test_env_inspect(e, ID_A, true, false);
    fake_answer(e->f, DELETE(ID_E), 500, "{\"message\":\"engine is busy\"}");
    fake_answer(e->f, DELETE(ID_J), 500, "{\"message\":\"engine is busy\"}");
    /* Commands: one of A (its agent cannot be attached: its record becomes lost), one of the
     * destroyed D (no sandbox runs it: lost), one of A's that is done already (kept). */
    json_t *req = json_object();
    assert_int_equal(clr_store_exec_insert(svc->store, "ex-a1", ID_A, req, now, &err), 0);
    assert_int_equal(clr_store_exec_insert(svc->store, "ex-d1", ID_D, req, now, &err), 0);
    assert_int_equal(clr_store_exec_insert(svc->store, "ex-a2", ID_A, req, now, &err), 0);
    assert_int_equal(clr_store_exec_finish(svc->store, "ex-a2", CLR_EXEC_STATE_DONE, req, now,
                                           &err), 0);
    json_decref(req);
    test_env_make_workspace(e, ID_A);
    test_env_make_workspace(e, ID_E);
    test_env_make_workspace(e, ID_I);

    assert_int_equal(svc_recover(svc, &err), 0);
    /* A runs on, adopted, its live state registered (no channel: the attach was refused). */
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&svc->adopted), 1);
    assert_non_null(svc->live);
    assert_string_equal(svc->live->id, ID_A);
    assert_null(svc->live->ch);
    assert_int_equal(svc->live->refs, 1);
    assert_true(test_env_workspace_exists(e, ID_A));
    /* Its row names the container that runs now (found by its labels). */
    clr_store_sandbox a;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &a, &err), 0);
    assert_string_equal(a.info.container_id, "cid-" ID_A);
    clr_store_sandbox_clear(&a);
    /* B vanished: lost, recorded as the recovery's. */
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container vanished while the daemon was down");
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_B, "recovery", NULL), 1);
    /* The plan's sandbox: destroyed, recorded, and (no container) nothing to remove. */
    test_env_expect_row(e, ID_C, CLR_STATE_DESTROYED, "plan-interrupted");
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_C, "recovery",
                                          "plan-interrupted"), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_C)), 0);
    /* D's removal resumed; E's refused again, its workspace kept with its container. */
    assert_int_equal(fake_count(e->f, DELETE(ID_D)), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_E)), 1);
    assert_true(test_env_workspace_exists(e, ID_E));
    /* The lost one's stopped container stays; another daemon's is not touched. */
    assert_int_equal(fake_count(e->f, DELETE(ID_F)), 0);
    assert_int_equal(fake_count(e->f, DELETE(ID_H)), 0);
    test_env_expect_row(e, ID_F, CLR_STATE_LOST, "oom");
    /* The orphan: recorded, then removed; no row made for it (the database is not new). */
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_G, "recovery", "orphan"), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_G)), 1);
    assert_int_equal(atomic_load(&svc->orphans_removed), 1);
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_G, &row, &err), -1);
    /* The workspace of a sandbox whose removal the daemon's death cut. */
    assert_false(test_env_workspace_exists(e, ID_I));
    /* The orphan the engine would not remove: recorded, tried once, not counted (left to gc
     * and the next start). */
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_J, "recovery", "orphan"), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_J)), 1);
    /* D and G were removed, E and J tried; A, F and H never were. */
    assert_int_equal(fake_count(e->f, "DELETE "), 4);
    assert_int_equal(atomic_load(&svc->removed), 1);
    /* The commands: A's running one lost, D's lost, A's finished one as it was. */
    const char *want[][2] = {{"ex-a1", CLR_EXEC_STATE_LOST},
                             {"ex-d1", CLR_EXEC_STATE_LOST},
                             {"ex-a2", CLR_EXEC_STATE_DONE}};
    for (size_t i = 0; i < 3; i++) {
        json_t *x = NULL;
        assert_int_equal(clr_store_exec_get(svc->store, want[i][0], &x, &err), 0);
        const char *st = json_string_value(json_object_get(x, "state"));
        if (!st || strcmp(st, want[i][1]) != 0)
            fail_msg("exec %s is %s, expected %s", want[i][0], st ? st : "(none)", want[i][1]);
        json_decref(x);
    }
}

/* A container of ours that an empty database does not know (the old one was moved aside) is
 * adopted from its labels when it runs, removed when it does not. */
/* A whole snapshot of sandbox sb on disk (its manifest: what the sweep counts as finished)
 * and its row, kept or not, held by a restore or not. */
static void make_snapshot(struct test_env *e, const char *id, const char *sb, bool keep,
                          bool held)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/snapshots", e->dir);
    mkdir(dir, 0700);
    snprintf(dir, sizeof(dir), "%s/snapshots/%s", e->dir, id);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{}", f);
    fclose(f);
    int64_t now = (int64_t)time(NULL);
    json_t *row = json_pack("{s:s, s:s, s:s, s:n, s:i, s:s, s:I, s:I, s:b, s:{s:b}}", "id", id,
                            "sandbox", sb, "tenant", CLR_TENANT_DEFAULT, "parent", "size", 10,
                            "sha256", "ab", "created_at", (json_int_t)now, "expires_at",
                            (json_int_t)(now + 36000), "keep", keep, "source", "attached", 0);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_snapshot_insert(e->svc.store, row, &err), 0);
    json_decref(row);
    if (held)
        assert_int_equal(clr_store_snapshot_hold(e->svc.store, id, &err), 0);
}

static bool snapshot_flag(struct test_env *e, const char *id, const char *name)
{
    json_t *row = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_snapshot_get(e->svc.store, id, &row, &err), 0);
    bool b = json_is_true(json_object_get(row, name));
    json_decref(row);
    return b;
}

static bool snapshot_there(struct test_env *e, const char *id)
{
    json_t *row = NULL;
    clr_error err = CLR_ERROR_INIT;
    bool rowed = clr_store_snapshot_get(e->svc.store, id, &row, &err) == 0;
    json_decref(row);
    char path[4200];
    snprintf(path, sizeof(path), "%s/snapshots/%s/manifest.json", e->dir, id);
    struct stat st;
    return rowed && stat(path, &st) == 0;
}

/* A daemon killed in a restore between the old container's removal and the new one's record
 * (issue #22): the restore held its snapshot (in the store, apart from keep) before the
 * removal. The start's recovery marks the sandbox lost, keeps the hold (the sandbox does not
 * run) and its sweep leaves the snapshot whole; once the sandbox is destroyed the sweep still
 * leaves the held one, and removes one that is neither kept nor held (positive control: the
 * sweep did run on that sandbox). */
static void test_recover_keeps_held_snapshot(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL), later = now + 36000;
    test_env_row(e, ID_A, later, now, 0);
    make_snapshot(e, "snap-00000000000000a1", ID_A, false, true); /* held by the restore */
    make_snapshot(e, "snap-00000000000000a2", ID_A, false, false); /* another one */
    test_env_containers(e, NULL, 0); /* the old container removed, no new one yet */
    clr_error err = CLR_ERROR_INIT;
    if (svc_recover(svc, &err) != 0)
        fail_msg("svc_recover: %s", err.message);
    svc_snapshots_sweep(svc);
    test_env_expect_row(e, ID_A, CLR_STATE_LOST, "container vanished while the daemon was down");
    assert_true(snapshot_there(e, "snap-00000000000000a1"));
    assert_true(snapshot_there(e, "snap-00000000000000a2")); /* a lost sandbox's stay */
    /* The lost sandbox destroyed (its expiry, a client): only the held snapshot stays. */
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "expired");
    svc_snapshots_sweep(svc);
    assert_false(snapshot_there(e, "snap-00000000000000a2"));
    assert_int_equal(test_env_audit_count(e, "snapshot.delete", ID_A, "daemon",
                                          "sandbox destroyed"),
                     1);
    assert_true(snapshot_there(e, "snap-00000000000000a1"));
    assert_true(snapshot_flag(e, "snap-00000000000000a1", "held"));
    assert_false(snapshot_flag(e, "snap-00000000000000a1", "keep")); /* nobody asked keep */
    assert_int_equal(test_env_audit_count(e, "snapshot.release", ID_A, "recovery", NULL), 0);
}

/* Holds a crash left whose sandbox runs again (killed before the removal, or after the new
 * container ran: recovery re-records it) are released by the start's recovery, recorded
 * (snapshot.release, reason recovered) — the restore is over — and a user's keep on such a
 * snapshot stays; the sweep then removes the released one with its sandbox like any other.
 * The hold of a lost sandbox stays (positive control: recovery did look at holds). */
static void test_recover_releases_hold_of_running_sandbox(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL), later = now + 36000;
    test_env_row(e, ID_A, later, now, 0);
    test_env_row(e, ID_B, later, now, 0);
    make_snapshot(e, "snap-00000000000000b1", ID_A, false, true);
    make_snapshot(e, "snap-00000000000000b2", ID_A, true, true); /* kept by its user too */
    make_snapshot(e, "snap-00000000000000b3", ID_B, false, true);
    const struct test_container c[] = {{ID_A, TEST_OWNER, "running"}}; /* B's is gone */
    test_env_containers(e, c, 1);
    test_env_inspect(e, ID_A, true, false);
    clr_error err = CLR_ERROR_INIT;
    if (svc_recover(svc, &err) != 0)
        fail_msg("svc_recover: %s", err.message);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container vanished while the daemon was down");
    assert_false(snapshot_flag(e, "snap-00000000000000b1", "held"));
    assert_false(snapshot_flag(e, "snap-00000000000000b2", "held"));
    assert_true(snapshot_flag(e, "snap-00000000000000b2", "keep")); /* the user's keep stays */
    assert_true(snapshot_flag(e, "snap-00000000000000b3", "held")); /* lost: held */
    assert_int_equal(test_env_audit_count(e, "snapshot.release", ID_A, "recovery", "recovered"),
                     2);
    assert_int_equal(test_env_audit_count(e, "snapshot.release", ID_B, "recovery", NULL), 0);
    /* Released: removed with its sandbox; the kept one and the lost sandbox's held one stay. */
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "client");
    test_env_set_state(e, ID_B, CLR_STATE_DESTROYED, "client");
    svc_snapshots_sweep(svc);
    assert_false(snapshot_there(e, "snap-00000000000000b1"));
    assert_true(snapshot_there(e, "snap-00000000000000b2"));
    assert_true(snapshot_there(e, "snap-00000000000000b3"));
}

static void test_recover_adopts_into_empty_database(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    assert_int_equal(test_env_open_store(e, true), 0);
    assert_true(clr_store_created(svc->store));
    svc->cfg.idle_timeout_s = 123;
    const struct test_container c[] = {
        {ID_A, TEST_OWNER, "running"},
        {ID_B, TEST_OWNER, "exited"},
        {ID_H, "another-daemon", "running"},
    };
    test_env_containers(e, c, sizeof(c) / sizeof(c[0]));
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_recover(svc, &err), 0);

    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
    assert_string_equal(row.info.state, CLR_STATE_RUNNING);
    assert_true(row.recovered);
    assert_int_equal(row.idle_timeout_s, 123);
    assert_string_equal(row.info.image, "clearing/default:latest");
    assert_int_equal(row.info.created_at, 1000);
    assert_int_equal(json_object_size(row.metadata), 0);
    assert_int_equal(json_array_size(row.env), 0);
    clr_store_sandbox_clear(&row);
    assert_int_equal(test_env_audit_count(e, "sandbox.recovered", ID_A, "recovery", NULL), 1);
    assert_int_equal(atomic_load(&svc->adopted), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_A)), 0);
    /* The stopped one is an orphan: removed, no row. */
    assert_int_equal(fake_count(e->f, DELETE(ID_B)), 1);
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_B, &row, &err), -1);
    assert_int_equal(atomic_load(&svc->orphans_removed), 1);
    /* Not ours: neither adopted nor removed. */
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_H, &row, &err), -1);
    assert_int_equal(fake_count(e->f, DELETE(ID_H)), 0);
}

/* Without its record an orphan is neither adopted nor removed: an adopted one that cannot be
 * recorded is removed (it must not be served unrecorded), a stray one is left for the next
 * start. */
static void test_recover_fails_closed(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    assert_int_equal(test_env_open_store(e, true), 0);
    const struct test_container c[] = {
        {ID_A, TEST_OWNER, "running"},
        {ID_B, TEST_OWNER, "exited"},
    };
    test_env_containers(e, c, sizeof(c) / sizeof(c[0]));
    test_env_break_audit(e, true);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_recover(svc, &err), 0);
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "unaudited");
    assert_int_equal(fake_count(e->f, DELETE(ID_A)), 1);
    assert_int_equal(atomic_load(&svc->adopted), 0);
    assert_int_equal(fake_count(e->f, DELETE(ID_B)), 0);
    assert_int_equal(atomic_load(&svc->orphans_removed), 0);
    test_env_break_audit(e, false);

    /* The engine cannot list its containers: the recovery fails, nothing changes. */
    fake_answer(e->f, TEST_LIST, 500, "{\"message\":\"engine is starting\"}");
    test_env_row(e, ID_C, (int64_t)time(NULL) + 36000, 1000, 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_recover(svc, &err), -1);
    assert_non_null(strstr(err.message, "engine is starting"));
    test_env_expect_row(e, ID_C, CLR_STATE_RUNNING, "");
}

/* A plan's sandbox left by a daemon that died mid-plan is destroyed only with its record: while
 * the audit log refuses, it stays as it was (no state change, its container not removed) and the
 * next start tries again. */
static void test_recover_plan_needs_its_record(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_C, now + 36000, now, 0);
    test_env_set_state(e, ID_C, CLR_STATE_PLAN, "");
    const struct test_container c[] = {{ID_C, TEST_OWNER, "running"}};
    test_env_containers(e, c, 1);
    test_env_make_workspace(e, ID_C);
    test_env_break_audit(e, true);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_recover(svc, &err), 0);
    test_env_expect_row(e, ID_C, CLR_STATE_PLAN, "");
    assert_int_equal(fake_count(e->f, DELETE(ID_C)), 0);
    assert_true(test_env_workspace_exists(e, ID_C));
    test_env_break_audit(e, false);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_C, NULL, NULL), 0);

    /* The next start, with the log back: recorded, destroyed, its container removed. */
    assert_int_equal(svc_recover(svc, &err), 0);
    test_env_expect_row(e, ID_C, CLR_STATE_DESTROYED, "plan-interrupted");
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_C, "recovery",
                                          "plan-interrupted"), 1);
    assert_int_equal(fake_count(e->f, DELETE(ID_C)), 1);
    assert_false(test_env_workspace_exists(e, ID_C));
}

/* The reaper thread: its passes destroy what expired and, every tenth pass (or every
 * reconcile_interval_ms), mark lost what vanished; it ends when the daemon stops. */
static void run_reaper_until_done(struct test_env *e)
{
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_A, now - 10, now, 0);
    test_env_row(e, ID_B, now + 36000, now, 0);
    test_env_containers(e, NULL, 0);
    svc->cfg.reaper_interval_ms = 5;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, svc_reaper_main, svc), 0);
    /* Wait for both outcomes, 60 s at most. */
    bool done = false;
    for (int i = 0; i < 6000 && !done; i++) {
        clr_store_sandbox a, b;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &a, &err), 0);
        assert_int_equal(clr_store_sandbox_get(svc->store, ID_B, &b, &err), 0);
        done = strcmp(a.info.state, CLR_STATE_DESTROYED) == 0 &&
               strcmp(b.info.state, CLR_STATE_LOST) == 0;
        clr_store_sandbox_clear(&a);
        clr_store_sandbox_clear(&b);
        if (!done)
            usleep(10000);
    }
    pthread_mutex_lock(&svc->reaper_lock);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->reaper_cond);
    pthread_mutex_unlock(&svc->reaper_lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(done);
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "expired");
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    assert_int_equal(fake_count(e->f, DELETE(ID_A)), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_B, "reaper", NULL), 1);
}

/* How many records of action for sandbox id name this tenant in details.tenant. */
static int audit_tenant_count(struct test_env *e, const char *action, const char *id,
                              const char *tenant)
{
    return audit_count_where(e, action, "sandbox", id, "details.tenant", tenant, NULL, NULL);
}

/* The records of the reaper, the reconcile pass and the recovery name the sandbox's tenant (their
 * actor names none): an expired sandbox of acme's and one of the default tenant's destroyed, one
 * of acme's whose container vanished lost, an orphan container labelled globex's removed. */
static void test_records_name_the_tenant(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL), later = now + 36000;
    const struct {
        const char *id, *tenant;
        int64_t expires_at;
    } rows[] = {{ID_A, "acme", now - 10}, {ID_B, "acme", later}, {ID_C, "", now - 10}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        clr_store_sandbox s;
        test_row_init(&s, rows[i].id, rows[i].tenant, CLR_STATE_RUNNING);
        s.info.expires_at = rows[i].expires_at;
        s.max_expires_at = rows[i].expires_at + 3600;
        s.last_active_at = now;
        test_row_insert(svc->store, &s);
    }
    clr_sandbox_info orphan;
    test_env_info(&orphan, ID_G, TEST_OWNER);
    snprintf(orphan.tenant, sizeof(orphan.tenant), "globex");
    json_t *list = json_pack("[{s:s, s:s, s:o}]", "Id", "cid-" ID_G, "State", "running",
                             "Labels", clr_sandbox_labels(&orphan));
    fake_answer(e->f, TEST_LIST, 200, test_env_keep(e, json_dumps(list, JSON_COMPACT)));
    json_decref(list);

    assert_int_equal(reap(svc), 2);
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "expired");
    test_env_expect_row(e, ID_C, CLR_STATE_DESTROYED, "expired");
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_A, "reaper", "expired"), 1);
    assert_int_equal(audit_tenant_count(e, "sandbox.destroy", ID_A, "acme"), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_C, "reaper", "expired"), 1);
    assert_int_equal(audit_tenant_count(e, "sandbox.destroy", ID_C, CLR_TENANT_DEFAULT), 1);

    assert_int_equal(reconcile(svc), 1);
    test_env_expect_row(e, ID_B, CLR_STATE_LOST, "container stopped or vanished");
    assert_int_equal(test_env_audit_count(e, "sandbox.lost", ID_B, "reaper", NULL), 1);
    assert_int_equal(audit_tenant_count(e, "sandbox.lost", ID_B, "acme"), 1);

    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_recover(svc, &err), 0);
    assert_int_equal(fake_count(e->f, DELETE(ID_G)), 1);
    assert_int_equal(test_env_audit_count(e, "sandbox.destroy", ID_G, "recovery", "orphan"), 1);
    assert_int_equal(audit_tenant_count(e, "sandbox.destroy", ID_G, "globex"), 1);
}

static void test_reaper_thread(void **state)
{
    run_reaper_until_done(*state);
}

static void test_reaper_thread_reconcile_interval(void **state)
{
    struct test_env *e = *state;
    e->svc.cfg.reconcile_interval_ms = 20;
    run_reaper_until_done(e);
}

/* The engine cannot list its containers: each reconcile pass fails (and changes nothing), the
 * reaper's own passes go on. */
static void test_reaper_thread_reconcile_fails(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    int64_t now = (int64_t)time(NULL);
    test_env_row(e, ID_A, now - 10, now, 0);
    test_env_row(e, ID_B, now + 36000, now, 0); /* no container: lost, were the engine asked */
    fake_answer(e->f, TEST_LIST, 500, "{\"message\":\"engine is starting\"}");
    svc->cfg.reaper_interval_ms = 5;
    svc->cfg.reconcile_interval_ms = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, svc_reaper_main, svc), 0);
    bool done = false;
    for (int i = 0; i < 6000 && !done; i++) {
        clr_store_sandbox a;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &a, &err), 0);
        done = strcmp(a.info.state, CLR_STATE_DESTROYED) == 0 && fake_count(e->f, TEST_LIST) >= 2;
        clr_store_sandbox_clear(&a);
        if (!done)
            usleep(10000);
    }
    pthread_mutex_lock(&svc->reaper_lock);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->reaper_cond);
    pthread_mutex_unlock(&svc->reaper_lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(done);
    test_env_expect_row(e, ID_A, CLR_STATE_DESTROYED, "expired");
    test_env_expect_row(e, ID_B, CLR_STATE_RUNNING, "");
    assert_int_equal(atomic_load(&svc->lost), 0);
}

/* Stopping before the first pass: the thread ends without touching anything. */
static void test_reaper_thread_stops(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    test_env_row(e, ID_A, (int64_t)time(NULL) - 10, 1000, 0);
    svc->cfg.reaper_interval_ms = 600000;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, svc_reaper_main, svc), 0);
    pthread_mutex_lock(&svc->reaper_lock);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->reaper_cond);
    pthread_mutex_unlock(&svc->reaper_lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    test_env_expect_row(e, ID_A, CLR_STATE_RUNNING, "");
    assert_int_equal(fake_count(e->f, "DELETE "), 0);
}

int main(void)
{
    /* As `clearing serve` does: a peer that closed its end (the scripted engine writing an
     * answer the client stopped reading) is an error on that connection, not the end of the
     * process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reap_expired_and_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile_waits_for_snapshot_gate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_gate_prefers_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_needs_its_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_keeps_held_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_releases_hold_of_running_sandbox, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recover_adopts_into_empty_database, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recover_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_plan_needs_its_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_name_the_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_thread_reconcile_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_thread_reconcile_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_thread_stops, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
