/* lib/service/channels.c against the scripted engine of fake_engine.h, a state database and an
 * audit log in a temporary directory, and an agent at the end of a socketpair
 * (test_service_agent.h): the registry (one entry per sandbox, shared by reference, the second
 * of two racing opens dropped), opening through the engine (inspect, attach; an agent without a
 * channel means docker exec), a channel that ended is opened again, a stored egress policy that
 * does not parse refuses the live state, and the channel's hooks: a replayed result completes
 * its exec record and is audited (and is not acknowledged when it cannot be stored), the
 * agent's list of commands marks the others lost, what that list names without a record (results
 * replayed before it left out) is killed as orphans, a command's queue is bounded by its caps,
 * a proxy connection without a policy is denied. */
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
#include <sqlite3.h>

#include "fake_engine.h"
#include "service/channels.h"
#include "test_service_agent.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000e1"
#define ID_B "sb-00000000000000e2"
#define API "/v1.41/containers/"
#define INSPECT_A "GET " API "clearing-" ID_A "/json"
#define ATTACH_A "POST " API "c00000000000000e1/attach"

struct fixture {
    struct test_env *e;
    char *inspect_a, *inspect_b;
    clr_engine *eng;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "channels") != 0)
        return -1;
    clr_service *svc = &fx->e->svc;
    svc->cfg = (clr_service_config){0}; /* these tests configure nothing */
    clr_store_sandbox s;
    test_row_init(&s, ID_A, "", CLR_STATE_RUNNING);
    test_row_insert(svc->store, &s);
    test_row_init(&s, ID_B, "", CLR_STATE_RUNNING);
    test_row_insert(svc->store, &s);
    fx->inspect_a = test_inspect_body(ID_A);
    fx->inspect_b = test_inspect_body(ID_B);
    fake_answer(fx->e->f, "GET " API "clearing-" ID_A, 200, fx->inspect_a);
    fake_answer(fx->e->f, "GET " API "clearing-" ID_B, 200, fx->inspect_b);
    /* An agent that serves no channel, unless a test says otherwise. */
    fake_answer(fx->e->f, "POST " API, 500, "{\"message\":\"attach refused\"}");
    fx->eng = fake_open(fx->e->f);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_env_drop_live(fx->e);
    clr_engine_free(fx->eng);
    test_env_teardown(fx->e);
    free(fx->inspect_a);
    free(fx->inspect_b);
    free(fx);
    return 0;
}

/* The sandbox handle of id, opened through the engine as the daemon opens it. */
static clr_sandbox *open_sb(struct fixture *fx, const char *id)
{
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_open_at(&sb, fx->eng, id, fx->e->dir, &err) < 0)
        fail_msg("open %s: %s", id, err.message);
    return sb;
}

/* The live state of id over a channel to a new agent (*agent). */
/* Every frame the agent sent so far was handled: frames are handled in order, and a proxy request
 * sent after them is answered (denied: no policy). */
static void sync_agent(struct test_agent *agent)
{
    unsigned denied = test_agent_frames(agent, CLR_FRAME_NET_DENY);
    static const char open[] = "C\0example.com\0" "443";
    test_agent_send(agent->fd, 9, CLR_FRAME_NET_OPEN, open, sizeof(open) - 1);
    test_agent_await(agent, CLR_FRAME_NET_DENY, denied + 1);
}

static struct live_sb *live_with_agent(struct fixture *fx, const char *id,
                                       struct test_agent **agent)
{
    clr_channel *ch = NULL;
    *agent = test_agent_start(&ch, id);
    struct live_sb *lv = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (svc_live_new(&fx->e->svc, fx->eng, id, open_sb(fx, id), ch, &lv, &err) != 0)
        fail_msg("svc_live_new: %s", err.message);
    assert_non_null(lv);
    assert_ptr_equal(lv->ch, ch);
    return lv;
}

static int refs(clr_service *svc, struct live_sb *lv)
{
    pthread_mutex_lock(&svc->live_lock);
    int n = lv->refs;
    pthread_mutex_unlock(&svc->live_lock);
    return n;
}

static struct live_sb *registered(clr_service *svc, const char *id)
{
    pthread_mutex_lock(&svc->live_lock);
    struct live_sb *lv = *svc_live_find_locked(svc, id);
    pthread_mutex_unlock(&svc->live_lock);
    return lv;
}

/* Waits (30 s at most) until the agent's thread saw its stream end. */
static void await_agent_gone(struct test_agent *a)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    if (pthread_timedjoin_np(a->thread, NULL, &ts) != 0)
        fail_msg("the agent's stream did not end within 30 s");
    close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static void test_registry(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    assert_null(registered(svc, ID_A));
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    /* Registered, with the registry's reference and the caller's. */
    assert_ptr_equal(registered(svc, ID_A), lv);
    assert_null(registered(svc, ID_B));
    assert_int_equal(refs(svc, lv), 2);
    assert_string_equal(lv->id, ID_A);
    assert_non_null(lv->egress);
    assert_string_equal(clr_sandbox_get_info(lv->sb)->id, ID_A);
    assert_true(clr_channel_alive(lv->ch));

    /* Asked again: the same entry, no engine call (no inspect, no attach). */
    size_t inspects = fake_count(fx->e->f, INSPECT_A);
    struct live_sb *again = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &again, &err), 0);
    assert_ptr_equal(again, lv);
    assert_int_equal(refs(svc, lv), 3);
    assert_int_equal(fake_count(fx->e->f, INSPECT_A), inspects);
    assert_int_equal(fake_count(fx->e->f, "POST " API), 0);
    svc_live_put(svc, again);
    assert_int_equal(refs(svc, lv), 2);

    /* A second open of the same sandbox (another request raced this one): the first entry is
     * used, the second's channel closed. */
    struct test_agent *agent2 = NULL;
    clr_channel *ch2 = NULL;
    agent2 = test_agent_start(&ch2, ID_A);
    struct live_sb *other = NULL;
    assert_int_equal(svc_live_new(svc, fx->eng, ID_A, open_sb(fx, ID_A), ch2, &other, &err), 0);
    assert_ptr_equal(other, lv);
    assert_int_equal(refs(svc, lv), 3);
    await_agent_gone(agent2);
    assert_true(clr_channel_alive(lv->ch));
    svc_live_put(svc, other);

    /* Dropped: gone from the registry; the caller's reference still holds it. */
    svc_live_drop(svc, ID_A);
    assert_null(registered(svc, ID_A));
    assert_int_equal(refs(svc, lv), 1);
    assert_true(clr_channel_alive(lv->ch));
    /* The last reference closes the channel: the agent sees its stream end. */
    svc_live_put(svc, lv);
    await_agent_gone(agent);
    /* Dropping what is not there, or putting nothing, is nothing. */
    svc_live_drop(svc, ID_B);
    svc_live_put(svc, NULL);
    assert_null(svc->live);
}

static void test_get_through_the_engine(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct live_sb *lv = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &lv, &err), 0);
    /* Opened: the container inspected, its stdio attached; the agent serves no channel, so
     * commands go through docker exec (ch NULL), and the sandbox is registered all the same. */
    assert_int_equal(fake_count(fx->e->f, INSPECT_A), 1);
    assert_int_equal(fake_count(fx->e->f, ATTACH_A), 1);
    assert_null(lv->ch);
    assert_string_equal(clr_sandbox_get_info(lv->sb)->container_id, "c00000000000000e1");
    /* The row says so before the attach, for good (what a snapshot records). */
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, ID_A, &row, &err), 0);
    assert_true(row.attached);
    clr_store_sandbox_clear(&row);
    assert_ptr_equal(registered(svc, ID_A), lv);
    /* Again: no channel is not a channel that ended; no second attach. */
    struct live_sb *again = NULL;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &again, &err), 0);
    assert_ptr_equal(again, lv);
    assert_int_equal(fake_count(fx->e->f, INSPECT_A), 1);
    assert_int_equal(fake_count(fx->e->f, ATTACH_A), 1);
    svc_live_put(svc, again);
    svc_live_put(svc, lv);

    /* A sandbox the engine does not have: not found, nothing registered. */
    fake_answer(fx->e->f, "GET " API "clearing-" ID_B, 404, "{\"message\":\"No such container\"}");
    lv = NULL;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_B, &lv, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_string_equal(err.message, "no sandbox " ID_B);
    assert_null(lv);
    assert_null(registered(svc, ID_B));
    /* The engine failing: its error, nothing registered. */
    fake_answer(fx->e->f, "GET " API "clearing-" ID_B, 500, "{\"message\":\"engine is restarting\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_B, &lv, &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_non_null(strstr(err.message, "engine is restarting"));
    assert_null(registered(svc, ID_B));
    /* Not an id: refused before the engine is asked. */
    size_t calls = fake_count(fx->e->f, "GET " API);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, "sb-../../etc", &lv, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fake_count(fx->e->f, "GET " API), calls);
    assert_null(registered(svc, "sb-../../etc"));
}

static bool row_attached(clr_service *svc, const char *id, char *cid, size_t cidsz)
{
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(svc->store, id, &row, &err), 0);
    bool a = row.attached;
    if (cid)
        snprintf(cid, cidsz, "%s", row.info.container_id);
    clr_store_sandbox_clear(&row);
    return a;
}

/* A restore in place's race (issue #22): a request opens the sandbox while the restore swaps
 * its container, attaching the new container before the swap records it on the row. The mark
 * names the container attached, so the swap that records that container keeps it (a later
 * snapshot says attached, which runsc cannot restore); a swap to a container no attach named
 * clears it (positive control). */
static void test_attach_during_swap_kept(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    char cid[128];
    assert_false(row_attached(svc, ID_A, cid, sizeof(cid)));
    assert_string_equal(cid, ""); /* the row still names the old container (none here) */
    struct live_sb *lv = NULL;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &lv, &err), 0);
    assert_int_equal(fake_count(fx->e->f, ATTACH_A), 1);
    svc_live_put(svc, lv);
    assert_true(row_attached(svc, ID_A, NULL, 0));
    /* The restore's swap records the container the request attached. */
    assert_int_equal(clr_store_sandbox_set_container(svc->store, ID_A, "c00000000000000e1", &err),
                     0);
    assert_true(row_attached(svc, ID_A, cid, sizeof(cid)));
    assert_string_equal(cid, "c00000000000000e1");
    /* Another swap, to a container nothing attached: not attached. */
    assert_int_equal(clr_store_sandbox_set_container(svc->store, ID_A, "c-next", &err), 0);
    assert_false(row_attached(svc, ID_A, NULL, 0));
}

/* A pooled sandbox's channel is handed in attached already; its mark on the row is recorded
 * as for any attach. When the database refuses the mark, the channel is closed (fail closed:
 * kept without its mark, a later snapshot would read as taken before any attach) and the
 * sandbox's commands use docker exec. Positive control: with the database writing, a channel
 * handed in is kept and marked. */
static void test_handed_in_channel_closed_without_its_mark(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    struct test_agent *agent_b = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_B, &agent_b);
    assert_non_null(lv->ch);
    assert_true(row_attached(svc, ID_B, NULL, 0));
    svc_live_put(svc, lv);
    /* The database refuses the mark. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TRIGGER no_attach BEFORE UPDATE OF attached_to ON "
                                  "sandboxes BEGIN SELECT RAISE(FAIL, 'disk I/O error (test)');"
                                  " END;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    clr_channel *ch = NULL;
    struct test_agent *agent_a = test_agent_start(&ch, ID_A);
    lv = NULL;
    if (svc_live_new(svc, fx->eng, ID_A, open_sb(fx, ID_A), ch, &lv, &err) != 0)
        fail_msg("svc_live_new: %s", err.message);
    assert_null(lv->ch);   /* not kept */
    await_agent_gone(agent_a); /* closed: the agent saw its stream end */
    assert_false(row_attached(svc, ID_A, NULL, 0));
    assert_int_equal(fake_count(fx->e->f, ATTACH_A), 0); /* nor attached again here */
    svc_live_put(svc, lv);
    test_env_drop_live(fx->e);
    await_agent_gone(agent_b);
}

static void test_ended_channel_is_opened_again(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    assert_true(clr_channel_alive(lv->ch));
    /* The sandbox's stream ends (dockerd restarted, the sandbox stopped). */
    test_agent_stop(agent);
    for (int i = 0; i < 3000 && clr_channel_alive(lv->ch); i++)
        usleep(10000);
    assert_false(clr_channel_alive(lv->ch));
    /* The next caller gets a new entry, opened through the engine; the old one is out of the
     * registry and lives on only through the reference still held here. */
    struct live_sb *fresh = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &fresh, &err), 0);
    assert_ptr_not_equal(fresh, lv);
    assert_ptr_equal(registered(svc, ID_A), fresh);
    assert_int_equal(fake_count(fx->e->f, INSPECT_A), 2); /* once by open_sb, once now */
    assert_int_equal(fake_count(fx->e->f, ATTACH_A), 1);
    assert_int_equal(refs(svc, lv), 1);
    svc_live_put(svc, lv);
    svc_live_put(svc, fresh);
}

static void test_bad_stored_policy(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    /* A policy in the database that does not parse: no live state (every proxy connection of
     * a sandbox without one would be decided by nothing), and the channel handed in closed. */
    json_t *bad = json_pack("{s:i}", "allow", 5);
    assert_int_equal(clr_store_sandbox_set_egress(svc->store, ID_A, bad, &err), 0);
    json_decref(bad);
    clr_channel *ch = NULL;
    struct test_agent *agent = test_agent_start(&ch, ID_A);
    struct live_sb *lv = NULL;
    assert_int_equal(svc_live_new(svc, fx->eng, ID_A, open_sb(fx, ID_A), ch, &lv, &err), -1);
    assert_int_equal(err.code, CLR_E_INTERNAL);
    if (!strstr(err.message, "sandbox " ID_A ": egress: ") || !strstr(err.message, "egress.allow"))
        fail_msg("message \"%s\" does not say the stored policy is bad", err.message);
    assert_null(lv);
    assert_null(registered(svc, ID_A));
    await_agent_gone(agent);
    /* Through svc_live_get: the same refusal. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_A, &lv, &err), -1);
    assert_int_equal(err.code, CLR_E_INTERNAL);
    assert_null(registered(svc, ID_A));
    /* Another sandbox (no policy) is unaffected: positive control. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, fx->eng, ID_B, &lv, &err), 0);
    svc_live_put(svc, lv);
}

static json_t *exec_record(clr_service *svc, const char *exec_id)
{
    json_t *rec = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_exec_get(svc->store, exec_id, &rec, &err) != 0)
        fail_msg("exec %s: %s", exec_id, err.message);
    return rec;
}

static const char *exec_state(json_t *rec)
{
    return json_string_value(json_object_get(rec, "state"));
}

static void insert_exec(clr_service *svc, const char *exec_id, const char *id, uint32_t channel)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *req = json_pack("{s:[s]}", "argv", "true");
    if (clr_store_exec_insert_on(svc->store, exec_id, id, channel, req, 1000, &err) != 0)
        fail_msg("insert %s: %s", exec_id, err.message);
    json_decref(req);
}

/* The database refuses every change of exec records (as a full disk would). */
static void break_exec_updates(struct fixture *fx)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000); /* the daemon's own writes may hold the lock */
    char *msg = NULL;
    int rc = sqlite3_exec(db,
                          "CREATE TRIGGER no_update BEFORE UPDATE ON execs "
                          "BEGIN SELECT RAISE(FAIL, 'disk I/O error (test)'); END;",
                          NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("trigger: %s", msg ? msg : "?");
    sqlite3_close(db);
}

static void test_replayed_result(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    insert_exec(svc, "ex-00000000000000a1", ID_A, 77);
    insert_exec(svc, "ex-00000000000000a2", ID_A, 79);
    json_t *rec = exec_record(svc, "ex-00000000000000a1");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);

    /* The agent replays command 77's output and result (the daemon was away when it ended). */
    test_agent_send(agent->fd, 77, CLR_FRAME_STDOUT, "replayed", 8);
    test_agent_send_exited(agent->fd, 77, 3);
    test_agent_await(agent, CLR_FRAME_ACK, 1);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_ACK), 77);
    rec = exec_record(svc, "ex-00000000000000a1");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_DONE);
    json_t *result = json_object_get(rec, "result");
    assert_string_equal(json_string_value(json_object_get(result, "status")), "exited");
    assert_int_equal(json_integer_value(json_object_get(result, "exit_code")), 3);
    assert_string_equal(json_string_value(json_object_get(result, "stdout")), "replayed");
    json_decref(rec);
    assert_int_equal(atomic_load(&svc->channel_replayed), 1);
    char *text = test_env_audit_text(fx->e);
    if (!strstr(text, "\"exec_id\":\"ex-00000000000000a1\"") || !strstr(text, "\"replayed\":true"))
        fail_msg("no replayed exec record in the audit log:\n%s", text);
    free(text);
    /* Another command's record is untouched. */
    rec = exec_record(svc, "ex-00000000000000a2");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);

    /* A result without a record (the daemon never recorded it): acknowledged, nothing counted. */
    test_agent_send_exited(agent->fd, 78, 0);
    test_agent_await(agent, CLR_FRAME_ACK, 2);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_ACK), 78);
    assert_int_equal(atomic_load(&svc->channel_replayed), 1);

    /* The database failing: command 79's result is not acknowledged (the agent keeps it for
     * the next attach); the ACK that follows is the next command's. */
    break_exec_updates(fx);
    test_agent_send_exited(agent->fd, 79, 4);
    test_agent_send_exited(agent->fd, 80, 0);
    test_agent_await(agent, CLR_FRAME_ACK, 3);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_ACK), 80);
    assert_int_equal(test_agent_frames(agent, CLR_FRAME_ACK), 3);
    rec = exec_record(svc, "ex-00000000000000a2");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);
    assert_int_equal(atomic_load(&svc->channel_replayed), 1);
    svc_live_put(svc, lv);
    svc_live_drop(svc, ID_A);
    test_agent_stop(agent);
}

/* The audit log cannot be written: a replayed result is neither stored nor acknowledged (the
 * agent keeps it), so it is never completed unrecorded; once the log is back, the next replay
 * of it is stored, recorded and acknowledged. */
static void test_replay_unaudited(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    insert_exec(svc, "ex-00000000000000a3", ID_A, 81);
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    char moved[sizeof(fx->e->log) + 8];
    snprintf(moved, sizeof(moved), "%s.moved", fx->e->log);
    assert_int_equal(rename(fx->e->log, moved), 0);
    assert_int_equal(mkdir(fx->e->log, 0700), 0);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_append(svc->audit, "test", NULL, "probe", "ok", NULL, &err), -1);

    test_agent_send_exited(agent->fd, 81, 5);
    /* 81 was handled while the log was away (without the sync, the log could be back first). */
    sync_agent(agent);
    /* The log back (an append succeeds, which clears the failure it remembers); then a result
     * without a record: its ACK shows that 81, before it, was read and passed over. */
    assert_int_equal(rmdir(fx->e->log), 0);
    assert_int_equal(rename(moved, fx->e->log), 0);
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_audit_append(svc->audit, "test", NULL, "probe", "ok", NULL, &err) != 0)
        fail_msg("append: %s", err.message);
    test_agent_send_exited(agent->fd, 90, 0);
    test_agent_await(agent, CLR_FRAME_ACK, 1);
    assert_int_equal(test_agent_frames(agent, CLR_FRAME_ACK), 1);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_ACK), 90);
    json_t *rec = exec_record(svc, "ex-00000000000000a3");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);
    assert_int_equal(atomic_load(&svc->channel_replayed), 0);

    /* Replayed again (the next attach): completed and recorded. */
    test_agent_send_exited(agent->fd, 81, 5);
    test_agent_await(agent, CLR_FRAME_ACK, 2);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_ACK), 81);
    rec = exec_record(svc, "ex-00000000000000a3");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_DONE);
    json_decref(rec);
    assert_int_equal(atomic_load(&svc->channel_replayed), 1);
    char *text = test_env_audit_text(fx->e);
    if (!strstr(text, "\"exec_id\":\"ex-00000000000000a3\""))
        fail_msg("no replayed exec record in the audit log:\n%s", text);
    free(text);
    svc_live_put(svc, lv);
    svc_live_drop(svc, ID_A);
    test_agent_stop(agent);
}

static void test_agent_channels_mark_lost(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    insert_exec(svc, "ex-00000000000000b1", ID_A, 5);
    insert_exec(svc, "ex-00000000000000b2", ID_A, 6);
    insert_exec(svc, "ex-00000000000000b3", ID_B, 6);
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    /* The agent knows command 5 only: 6 of this sandbox is lost, the other sandbox's 6 not. */
    uint32_t ids[] = {5};
    test_agent_send_channels(agent->fd, ids, 1);
    json_t *rec = NULL;
    for (int i = 0; i < 3000; i++) {
        rec = exec_record(svc, "ex-00000000000000b2");
        if (strcmp(exec_state(rec), CLR_EXEC_STATE_RUNNING) != 0)
            break;
        json_decref(rec);
        rec = NULL;
        usleep(10000);
    }
    if (!rec)
        fail_msg("the command the agent does not know is still running after 30 s");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_LOST);
    json_decref(rec);
    rec = exec_record(svc, "ex-00000000000000b1");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);
    rec = exec_record(svc, "ex-00000000000000b3");
    assert_string_equal(exec_state(rec), CLR_EXEC_STATE_RUNNING);
    json_decref(rec);
    svc_live_put(svc, lv);
    svc_live_drop(svc, ID_A);
    test_agent_stop(agent);
}

/* The agent replays 21 results (one with the top bit set, the rest in descending order), then
 * lists what it runs: three of those it lists had just ended (replayed), two have no record.
 * Only those two are killed, once. */
static void test_orphans_killed_replayed_left_out(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    test_agent_send_exited(agent->fd, 0x90000000u, 0);
    for (uint32_t id = 60; id > 40; id--)
        test_agent_send_exited(agent->fd, id, 0);
    uint32_t listed[] = {0x90000000u, 45, 25, 99, 41};
    test_agent_send_channels(agent->fd, listed, 5);
    sync_agent(agent); /* control: the frames before it were all read */
    assert_int_equal(test_agent_frames(agent, CLR_FRAME_ACK), 21);
    assert_int_equal(svc_live_end_orphans(svc, lv, "test"), 2);
    test_agent_await(agent, CLR_FRAME_KILL, 2);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_KILL), 99);
    char *text = test_env_audit_text(fx->e);
    if (!strstr(text, "\"sandbox.orphans_killed\"") || !strstr(text, "\"channels\":[25,99]"))
        fail_msg("no record of the two orphans killed:\n%s", text);
    free(text);
    svc_live_put(svc, lv);
    svc_live_drop(svc, ID_A);
    test_agent_stop(agent);
}

/* Runs a command on lv's channel whose agent (silent: the test answers for it) sends out_bytes
 * of stdout and its result before the command is waited for; returns the result. */
static void exec_behind(struct fixture *fx, struct live_sb *lv, struct test_agent *agent,
                        size_t out_bytes, clr_exec_result *r)
{
    static const char *const argv[] = {"true", NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.channel = lv->ch;
    clr_exec *h = NULL;
    clr_error err = CLR_ERROR_INIT;
    unsigned before = test_agent_frames(agent, CLR_FRAME_EXEC);
    if (clr_exec_start(&h, fx->eng, lv->sb, &o, &err) < 0)
        fail_msg("exec start: %s", err.message);
    test_agent_await(agent, CLR_FRAME_EXEC, before + 1);
    uint32_t id = test_agent_last(agent, CLR_FRAME_EXEC);
    static uint8_t chunk[CLR_PROTO_MAX_PAYLOAD];
    memset(chunk, 'o', sizeof(chunk));
    for (size_t sent = 0; sent < out_bytes; sent += sizeof(chunk)) {
        size_t n = out_bytes - sent < sizeof(chunk) ? out_bytes - sent : sizeof(chunk);
        test_agent_send(agent->fd, id, CLR_FRAME_STDOUT, chunk, n);
    }
    test_agent_send_exited(agent->fd, id, 0);
    sync_agent(agent); /* all of it was read by the channel before the command's reader starts */
    if (clr_exec_wait(h, r, &err) < 0)
        fail_msg("exec wait: %s", err.message);
    clr_exec_free(h);
}

/* A command's reader that falls behind an agent sending past the caps: the channel queues no
 * more than the caps (1 MiB a stream here, and a frame), and the result says truncated. */
static void test_exec_queue_bounded_by_its_caps(void **state)
{
    struct fixture *fx = *state;
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    test_agent_script(agent, TEST_AGENT_SILENT, "", 0, 0);
    clr_exec_result r = {0};
    /* Control: 512 KiB, under the bound, all of it kept and not marked. */
    exec_behind(fx, lv, agent, 512u << 10, &r);
    assert_int_equal(r.status, CLR_EXEC_EXITED);
    assert_int_equal(r.out.len, 512u << 10);
    assert_false(r.stdout_truncated);
    clr_exec_result_clear(&r);
    /* 4 MiB queued before the reader starts: at most the bound kept, and marked. */
    exec_behind(fx, lv, agent, 4u << 20, &r);
    assert_int_equal(r.status, CLR_EXEC_EXITED);
    assert_true(r.out.len <= (2u << 20) + CLR_PROTO_MAX_PAYLOAD);
    assert_true(r.out.len > 0);
    assert_true(r.stdout_truncated);
    clr_exec_result_clear(&r);
    svc_live_put(&fx->e->svc, lv);
    svc_live_drop(&fx->e->svc, ID_A);
    test_agent_stop(agent);
}

static void test_proxy_without_policy_denied(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct test_agent *agent = NULL;
    struct live_sb *lv = live_with_agent(fx, ID_A, &agent);
    /* The sandbox's proxy asks for a connection; its sandbox has no policy: denied. */
    static const char open[] = "C\0example.com\0" "443";
    test_agent_send(agent->fd, 9, CLR_FRAME_NET_OPEN, open, sizeof(open) - 1);
    test_agent_await(agent, CLR_FRAME_NET_DENY, 1);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_NET_DENY), 9);
    pthread_mutex_lock(&agent->lock);
    if (!strstr(agent->deny, "example.com:443 is not on the sandbox's allow-list"))
        fail_msg("denied as \"%s\", not by the (empty) policy", agent->deny);
    pthread_mutex_unlock(&agent->lock);
    assert_int_equal(test_agent_frames(agent, CLR_FRAME_NET_ACCEPT), 0);
    assert_int_equal(atomic_load(&svc->egress.denied), 1);
    assert_int_equal(atomic_load(&svc->egress.allowed), 0);
    svc_live_put(svc, lv);
    svc_live_drop(svc, ID_A);
    test_agent_stop(agent);
}

int main(void)
{
    /* As the daemon: a peer that went away is an error to handle, not a signal (the scripted
     * engine writes to connections libcurl may have closed). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_through_the_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_during_swap_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handed_in_channel_closed_without_its_mark, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ended_channel_is_opened_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_stored_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replayed_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_unaudited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_channels_mark_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphans_killed_replayed_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_queue_bounded_by_its_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_without_policy_denied, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
