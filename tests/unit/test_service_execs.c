/* lib/service/execs.c against the scripted engine of fake_engine.h, a state database and an
 * audit log in a temporary directory, and an agent at the end of a socketpair
 * (test_service_agent.h) serving the sandbox's live channel: a command's way through (admitted,
 * audited, sent on the channel, recorded, its output streamed, its result stored and audited,
 * counted), the environment it gets (the sandbox's, then its own), what is refused before
 * anything runs (not an id, unknown fields, no sandbox, a sandbox not running, at max_execs:
 * audited), and the failures: the audit log unwritable (nothing sent; the record says
 * start_failed), the record not written (the command killed, no output to the client), the
 * engine refusing a docker exec (sandbox_failed), the sandbox killed by the kernel (oom), the
 * end's record or audit failing (the client told). An exec record read back only through its
 * own sandbox. */
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

#include "clearing/plan.h"
#include "fake_engine.h"
#include "service/channels.h"
#include "service/execs.h"
#include "test_service_agent.h"
#include "test_service_env.h"

#define ID_A "sb-00000000000000f1" /* running, environment A=1 */
#define ID_B "sb-00000000000000f2" /* destroyed */
#define ID_C "sb-00000000000000f3" /* lost */
#define NO_ROW "sb-00000000000000ff"
#define API "/v1.41/containers/"
#define CID_A "c00000000000000f1"

struct fixture {
    struct test_env *e;
    char *inspect_a;
    struct test_agent *agent;
    struct live_sb *lv;
};

static void add_row(clr_store *st, const char *id, const char *state, const char *reason)
{
    clr_store_sandbox s;
    test_row_init(&s, id, "", CLR_STATE_RUNNING);
    s.env = json_pack("[s]", "A=1");
    test_row_insert(st, &s);
    if (strcmp(state, CLR_STATE_RUNNING) != 0) {
        clr_error err = CLR_ERROR_INIT;
        if (clr_store_sandbox_set_state(st, id, state, reason, 1500, &err) != 0)
            fail_msg("set_state %s: %s", id, err.message);
    }
}

/* The live state of ID_A over a channel to fx->agent, registered as a create or an earlier
 * command would have left it. */
static void attach_agent(struct fixture *fx)
{
    clr_engine *eng = fake_open(fx->e->f);
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_open_at(&sb, eng, ID_A, fx->e->dir, &err) < 0)
        fail_msg("open: %s", err.message);
    clr_channel *ch = NULL;
    fx->agent = test_agent_start(&ch, ID_A);
    if (svc_live_new(&fx->e->svc, eng, ID_A, sb, ch, &fx->lv, &err) != 0)
        fail_msg("svc_live_new: %s", err.message);
    svc_live_put(&fx->e->svc, fx->lv); /* the registry's reference stays */
    clr_engine_free(eng);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "execs") != 0)
        return -1;
    clr_service *svc = &fx->e->svc;
    svc->cfg = (clr_service_config){0}; /* only what these tests configure */
    svc->cfg.max_execs = 4;
    add_row(svc->store, ID_A, CLR_STATE_RUNNING, "");
    add_row(svc->store, ID_B, CLR_STATE_DESTROYED, "client");
    add_row(svc->store, ID_C, CLR_STATE_LOST, "oom-killed");
    fx->inspect_a = test_inspect_body(ID_A);
    fake_answer(fx->e->f, "GET " API "clearing-" ID_A, 200, fx->inspect_a);
    fake_answer(fx->e->f, "GET " API CID_A, 200, fx->inspect_a);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_env_drop_live(fx->e);
    test_agent_stop(fx->agent);
    test_env_teardown(fx->e);
    free(fx->inspect_a);
    free(fx);
    return 0;
}

/* ---- helpers ---- */

struct events {
    char seen[512]; /* "started ex-...; stdout hi" */
    unsigned n;
};

static void on_event(void *ctx, json_t *ev)
{
    struct events *e = ctx;
    size_t l = strlen(e->seen);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    const char *arg = json_string_value(json_object_get(ev, strcmp(kind, "started") == 0
                                                               ? "exec_id"
                                                               : "data"));
    snprintf(e->seen + l, sizeof(e->seen) - l, "%s%s %s", l ? "; " : "", kind, arg ? arg : "");
    e->n++;
}

static json_t *req_of(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("bad test request %s: %s", text, je.text);
    return j;
}

/* How many exec records the database holds (for the sandbox, or all with NULL). */
static int exec_rows(struct fixture *fx, const char *id)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000); /* the daemon's own writes may hold the lock */
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        id ? "SELECT count(*) FROM execs WHERE sandbox_id = ?"
                                           : "SELECT count(*) FROM execs",
                                        -1, &st, NULL),
                     SQLITE_OK);
    if (id)
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The database refuses this statement on exec records (as a full disk would). */
static void break_execs(struct fixture *fx, const char *when)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000); /* the daemon's own writes may hold the lock */
    char sql[256], *msg = NULL;
    snprintf(sql, sizeof(sql),
             "CREATE TRIGGER broken_%s BEFORE %s ON execs "
             "BEGIN SELECT RAISE(FAIL, 'disk I/O error (test)'); END;",
             when, when);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("trigger: %s", msg ? msg : "?");
    sqlite3_close(db);
}

/* The audit log cannot be written (the breaker run_and_break_meanwhile takes). */
static void break_audit(struct fixture *fx)
{
    test_env_break_audit(fx->e, true);
}

static size_t count_of(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string \"%s\"", key);
    return s;
}

static int64_t last_active(clr_service *svc, const char *id)
{
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(svc->store, id, &row, &err) != 0)
        fail_msg("get %s: %s", id, err.message);
    int64_t t = row.last_active_at;
    clr_store_sandbox_clear(&row);
    return t;
}

/* ---- tests ---- */

static void test_bind_environment(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    char *env[] = {"X=2", "A=3", NULL};
    struct command c = {.env = env};
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_command_bind(svc, &c, ID_A, &err), 0);
    /* The sandbox's first, then the command's own (which win: they come later). */
    assert_non_null(c.all_env);
    assert_string_equal(c.all_env[0], "A=1");
    assert_string_equal(c.all_env[1], "X=2");
    assert_string_equal(c.all_env[2], "A=3");
    assert_null(c.all_env[3]);
    assert_ptr_equal(c.o.env, c.all_env);
    c.env = NULL;
    svc_command_clear(&c);

    /* Not running: 409 naming the state (a lost one its cause); no row: 404. */
    struct command d = {.env = NULL};
    assert_int_equal(svc_command_bind(svc, &d, ID_B, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_string_equal(err.message, "sandbox " ID_B " is not running (destroyed)");
    svc_command_clear(&d);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_command_bind(svc, &d, ID_C, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "it is lost (oom-killed)"));
    svc_command_clear(&d);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(svc_command_bind(svc, &d, NO_ROW, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_null(d.all_env);
    svc_command_clear(&d);
}

static void test_exec_on_the_channel(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    test_agent_script(fx->agent, TEST_AGENT_ANSWER, "hi\n", CLR_WIRE_EXITED, 0);
    json_t *req = req_of("{\"argv\":[\"echo\",\"hi\"],\"env\":{\"TOKEN\":\"s3cret\"}}");
    json_t *out = NULL;
    struct events ev = {.n = 0};
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_exec(svc, ID_A, req, "alice", on_event, &ev, &out, &err) != 0)
        fail_msg("exec: %s", err.message);
    /* The answer: the record, done, with the agent's result. */
    const char *exec_id = str(out, "id");
    assert_int_equal(strncmp(exec_id, "ex-", 3), 0);
    assert_int_equal(strlen(exec_id), 19);
    assert_string_equal(str(out, "sandbox_id"), ID_A);
    assert_string_equal(str(out, "state"), CLR_EXEC_STATE_DONE);
    json_t *result = json_object_get(out, "result");
    assert_string_equal(str(result, "status"), "exited");
    assert_int_equal(json_integer_value(json_object_get(result, "exit_code")), 0);
    assert_string_equal(str(result, "stdout"), "hi\n");
    /* The client heard of the record, then the output. */
    char want[256];
    snprintf(want, sizeof(want), "started %s; stdout hi\n", exec_id);
    assert_string_equal(ev.seen, want);
    /* One EXEC frame on the channel, no engine call for it (no docker exec). */
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_true(test_agent_last(fx->agent, CLR_FRAME_EXEC) != 0);
    assert_int_equal(fake_count(fx->e->f, "POST "), 0);
    /* Stored: the same result, the request with the environment's values redacted. */
    json_t *rec = NULL;
    assert_int_equal(clr_service_exec_get(svc, ID_A, exec_id, &rec, &err), 0);
    assert_string_equal(str(rec, "state"), CLR_EXEC_STATE_DONE);
    assert_true(json_equal(json_object_get(rec, "result"), result));
    json_t *logged = json_object_get(rec, "request");
    assert_string_equal(str(json_object_get(logged, "env"), "TOKEN"), "(redacted)");
    json_decref(rec);
    /* Audited before and after, under the same id; the secret is in neither. */
    char *text = test_env_audit_text(fx->e);
    char idq[64];
    snprintf(idq, sizeof(idq), "\"exec_id\":\"%s\"", exec_id);
    assert_int_equal(count_of(text, idq), 2);
    assert_non_null(strstr(text, "\"action\":\"exec.start\""));
    assert_non_null(strstr(text, "\"outcome\":\"exited\""));
    assert_null(strstr(text, "s3cret"));
    free(text);
    /* Counted, and everything it held given back. */
    assert_int_equal(atomic_load(&svc->execs), 1);
    assert_int_equal(atomic_load(&svc->channel_execs), 1);
    assert_int_equal(atomic_load(&svc->exec_failures), 0);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(atomic_load(&svc->h_exec.n), 1);
    assert_int_equal(fx->lv->refs, 1);
    assert_int_equal(svc->pool_n, 1);
    assert_true(last_active(svc, ID_A) > 1000);
    json_decref(out);

    /* Without a listener, and a timed-out result: counted as such. */
    test_agent_script(fx->agent, TEST_AGENT_ANSWER, "", CLR_WIRE_TIMED_OUT, 0);
    out = NULL;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    assert_string_equal(str(json_object_get(out, "result"), "status"), "timed_out");
    assert_int_equal(atomic_load(&svc->exec_timeouts), 1);
    assert_int_equal(atomic_load(&svc->execs), 2);
    assert_int_equal(exec_rows(fx, ID_A), 2);
    json_decref(out);
    /* An agent that could not start it: a failure. */
    test_agent_script(fx->agent, TEST_AGENT_ANSWER, "", CLR_WIRE_START_FAILED, 0);
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    assert_string_equal(str(json_object_get(out, "result"), "status"), "start_failed");
    assert_int_equal(atomic_load(&svc->exec_failures), 1);
    json_decref(out);
    json_decref(req);
}

static void test_refused_before_anything_runs(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    size_t connections = fake_count(fx->e->f, "GET /version");
    static const struct {
        const char *id, *req;
        clr_error_code code;
        const char *says;
    } cases[] = {
        {"sb-../../etc", "{\"argv\":[\"true\"]}", CLR_E_INVALID, "not a sandbox id"},
        {ID_A, "{\"argv\":[\"true\"],\"user\":\"root\"}", CLR_E_INVALID, "user"},
        {ID_A, "{\"cwd\":\"/\"}", CLR_E_INVALID, "argv"},
        {NO_ROW, "{\"argv\":[\"true\"]}", CLR_E_NOT_FOUND, NO_ROW},
        {ID_B, "{\"argv\":[\"true\"]}", CLR_E_CONFLICT, "is not running (destroyed)"},
        {ID_C, "{\"argv\":[\"true\"]}", CLR_E_CONFLICT, "lost (oom-killed)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *req = req_of(cases[i].req);
        json_t *out = NULL;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_service_exec(svc, cases[i].id, req, "alice", NULL, NULL, &out, &err),
                         -1);
        if (err.code != cases[i].code || !strstr(err.message, cases[i].says))
            fail_msg("case %zu: code %d \"%s\", expected %d saying \"%s\"", i, err.code,
                     err.message, cases[i].code, cases[i].says);
        assert_null(out);
        /* The same answer from the check a server makes before it streams. */
        clr_error cerr = CLR_ERROR_INIT;
        assert_int_equal(clr_service_exec_check(svc, cases[i].id, req, "alice", &cerr), -1);
        assert_int_equal(cerr.code, cases[i].code);
        json_decref(req);
    }
    /* Nothing reached the agent, the engine, the database or the audit log. */
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 0);
    assert_int_equal(fake_count(fx->e->f, "GET /version"), connections);
    assert_int_equal(exec_rows(fx, NULL), 0);
    char *text = test_env_audit_text(fx->e);
    assert_null(strstr(text, "exec"));
    free(text);
    assert_int_equal(atomic_load(&svc->execs), 0);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    /* Positive control: a well-formed request passes the check. */
    json_t *ok = req_of("{\"argv\":[\"true\"]}");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, ok, "alice", &err), 0);
    json_decref(ok);
}

static void test_at_capacity(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    svc->cfg.max_execs = 2;
    atomic_store(&svc->running_execs, 2);
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message,
                        "at capacity: 2 commands are running (max_execs); retry later");
    assert_int_equal(atomic_load(&svc->refused), 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message,
                        "at capacity: 2 commands are running (max_execs); retry later");
    assert_int_equal(atomic_load(&svc->refused), 2);
    /* The refused one took no slot, sent nothing, stored no exec record (its refusal is
     * audited: test_refusal_audited). */
    assert_int_equal(atomic_load(&svc->running_execs), 2);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 0);
    assert_int_equal(exec_rows(fx, NULL), 0);
    /* One slot free: it runs. */
    atomic_store(&svc->running_execs, 1);
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "alice", &err), 0);
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    assert_int_equal(atomic_load(&svc->refused), 2);
    json_decref(out);
    json_decref(req);
}

/* A tenant's max_execs: the default tenant's (ID_A's) one slot held, another of its commands is
 * refused naming its limit though max_execs has room, also the check before a stream; another
 * tenant's full quota does not hold it, and the command that runs gives back what it took. */
static void test_tenant_at_quota(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    const clr_tenant_quota quotas[2] = {{.name = "beta", .max_execs = 1},
                                        {.name = CLR_TENANT_DEFAULT, .max_execs = 1}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 2;
    svc->cfg.max_execs = 8;
    atomic_store(&svc->running_execs, 1);
    atomic_store(&svc->tenant_execs[1], 1);
    const char *full = "tenant default is at its quota: 1 commands are running in its sandboxes "
                       "(max_execs 1 for tenant default); retry later";
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, full);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, full);
    assert_int_equal(atomic_load(&svc->refused), 2);
    /* Both refusals recorded, naming the tenant's quota: the first at once, the second counted
     * (written at the log's next tick after the interval, or at its close). */
    assert_int_equal(audit_count_where(fx->e, "exec", "sandbox", ID_A, "outcome", "refused",
                                       "details.error", full),
                     1);
    test_env_flush_counts(fx->e);
    assert_int_equal(audit_count_where(fx->e, "exec", "sandbox", ID_A, "outcome", "refused",
                                       "details.error", full),
                     2);
    json_t *last = expect_audit(fx->e, "exec", "refused", ID_A, "alice");
    expect_refusal_details(last, "limit", full, "alice", 1, false);
    json_decref(last);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[1]), 1);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 0);
    assert_int_equal(exec_rows(fx, NULL), 0);
    /* beta at its quota holds nothing of the default tenant's: ID_A's command runs, and gives
     * back the slot of each it took. */
    atomic_store(&svc->running_execs, 1);
    atomic_store(&svc->tenant_execs[0], 1);
    atomic_store(&svc->tenant_execs[1], 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "alice", &err), 0);
    if (clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err) != 0)
        fail_msg("exec: %s", err.message);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[1]), 0);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 1);
    assert_int_equal(atomic_load(&svc->refused), 2);
    json_decref(out);
    json_decref(req);
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

/* A command refused for want of a slot is audited: one "exec" record, refused, by its actor,
 * about its sandbox, the error's code and message naming max_execs, and nothing of the command
 * (no exec id, no exec.start, no argv); the same for the stream's check. A check that passes
 * records nothing. A log that cannot take the record changes nothing of the answer: still the
 * 429's limit, nothing sent, no slot held. The control first: an admitted command's records. */
static void test_refusal_audited(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    svc->cfg.max_execs = 2;
    atomic_store(&svc->running_execs, 1);
    json_t *req = req_of("{\"argv\":[\"echo\",\"marker-argv\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err) != 0)
        fail_msg("exec: %s", err.message);
    json_decref(out);
    out = NULL;
    assert_int_equal((int)audit_count(fx->e, "exec.start"), 1);
    assert_int_equal(audit_count_where(fx->e, "exec", "sandbox", ID_A, "actor", "alice",
                                       "outcome", "exited"),
                     1);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);

    /* Both slots held: refused, and recorded by bob. */
    atomic_store(&svc->running_execs, 2);
    const char *full = "at capacity: 2 commands are running (max_execs); retry later";
    assert_int_equal(clr_service_exec(svc, ID_A, req, "bob", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, full);
    assert_null(out);
    json_t *r = expect_audit(fx->e, "exec", "refused", ID_A, "bob");
    expect_refusal_details(r, "limit", full, "bob", 1, true); /* no exec id, no command */
    json_decref(r);
    /* The stream's check: the same refusal, counted with bob's first (refusals come at the
     * client's rate while the daemon is full): its record is written with the count. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "bob", &err), -1);
    expect_error(&err, CLR_E_LIMIT, full);
    assert_int_equal(audit_count_where(fx->e, "exec", "actor", "bob", "outcome", "refused",
                                       "details.error", full),
                     1);
    test_env_flush_counts(fx->e);
    assert_int_equal(audit_count_where(fx->e, "exec", "actor", "bob", "outcome", "refused",
                                       "details.error", full),
                     2);
    r = expect_audit(fx->e, "exec", "refused", ID_A, "bob");
    expect_refusal_details(r, "limit", full, "bob", 1, false);
    json_decref(r);
    /* Nothing of the command: no exec.start, no argv, nothing sent, no slot taken. */
    assert_int_equal((int)audit_count(fx->e, "exec.start"), 1);
    char *text = test_env_audit_text(fx->e);
    assert_int_equal(count_of(text, "marker-argv"), 1); /* the admitted one's exec.start */
    free(text);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_int_equal(atomic_load(&svc->running_execs), 2);

    /* The log cannot take the record (carol's first, written at once): refused all the same,
     * with the limit's error. */
    break_audit(fx);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "carol", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, full);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "carol", &err), -1);
    expect_error(&err, CLR_E_LIMIT, full);
    test_env_break_audit(fx->e, false);
    assert_null(out);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_int_equal(atomic_load(&svc->running_execs), 2);
    assert_int_equal(audit_count_where(fx->e, "exec", "outcome", "refused", NULL, NULL, NULL,
                                       NULL),
                     2);

    /* A slot free: the check passes and records nothing. */
    atomic_store(&svc->running_execs, 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_check(svc, ID_A, req, "bob", &err), 0);
    assert_int_equal((int)audit_count(fx->e, "exec"), 3);
    json_decref(req);
}

static void test_unaudited_is_not_sent(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    break_audit(fx);
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    struct events ev = {.n = 0};
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", on_event, &ev, &out, &err), -1);
    assert_non_null(strstr(err.message, "audit"));
    assert_null(out);
    assert_int_equal(ev.n, 0);
    /* Nothing sent; the record says it was refused, and why. */
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 0);
    assert_int_equal(exec_rows(fx, ID_A), 1);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000); /* the daemon's own writes may hold the lock */
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id FROM execs", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char exec_id[32];
    snprintf(exec_id, sizeof(exec_id), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    json_t *rec = NULL;
    clr_error gerr = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_get(svc, ID_A, exec_id, &rec, &gerr), 0);
    assert_string_equal(str(rec, "state"), CLR_EXEC_STATE_DONE);
    json_t *result = json_object_get(rec, "result");
    assert_string_equal(str(result, "status"), "start_failed");
    assert_string_equal(str(result, "message"), err.message);
    json_decref(rec);
    /* What it held is back: its slot, its reference to the live state, the engine handle. */
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(fx->lv->refs, 1);
    assert_int_equal(svc->pool_n, 1);
    assert_int_equal(atomic_load(&svc->execs), 0);
    /* The log back: the same request runs (positive control). */
    test_env_break_audit(fx->e, false);
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    json_decref(out);
    json_decref(req);
}

static void test_unrecorded_is_killed(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    test_agent_script(fx->agent, TEST_AGENT_ANSWER, "must not reach the client", CLR_WIRE_EXITED,
                      0);
    break_execs(fx, "INSERT");
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    struct events ev = {.n = 0};
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", on_event, &ev, &out, &err), -1);
    assert_non_null(strstr(err.message, "disk I/O error (test)"));
    assert_null(out);
    /* It was sent (the record follows the send), then killed; the client heard nothing of it. */
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    test_agent_await(fx->agent, CLR_FRAME_KILL, 1);
    assert_int_equal(test_agent_last(fx->agent, CLR_FRAME_KILL),
                     test_agent_last(fx->agent, CLR_FRAME_EXEC));
    assert_int_equal(ev.n, 0);
    assert_int_equal(exec_rows(fx, NULL), 0);
    /* The audit log says it ended in an error, under its id. */
    char *text = test_env_audit_text(fx->e);
    assert_non_null(strstr(text, "\"action\":\"exec\""));
    assert_non_null(strstr(text, "\"outcome\":\"error\""));
    assert_non_null(strstr(text, "disk I/O error (test)"));
    free(text);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(fx->lv->refs, 1);
    assert_int_equal(atomic_load(&svc->execs), 0);
    json_decref(req);
}

static void test_engine_refuses_docker_exec(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* The agent serves no channel: commands go through docker exec, which the engine refuses
     * (the container stopped under the daemon). */
    fake_answer(fx->e->f, "POST " API CID_A "/attach", 500, "{\"message\":\"attach refused\"}");
    fake_answer(fx->e->f, "POST " API CID_A "/exec", 409,
                "{\"message\":\"container " CID_A " is not running\"}");
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err) != 0)
        fail_msg("exec: %s", err.message);
    assert_int_equal(fake_count(fx->e->f, "POST " API CID_A "/attach"), 1);
    assert_int_equal(fake_count(fx->e->f, "POST " API CID_A "/exec"), 1);
    /* A record of a sandbox that failed, not an error of the request. */
    assert_string_equal(str(out, "state"), CLR_EXEC_STATE_DONE);
    json_t *result = json_object_get(out, "result");
    assert_string_equal(str(result, "status"), "sandbox_failed");
    assert_string_equal(str(result, "message"), "sandbox " ID_A " is not running");
    json_t *rec = NULL;
    assert_int_equal(clr_service_exec_get(svc, ID_A, str(out, "id"), &rec, &err), 0);
    assert_true(json_equal(json_object_get(rec, "result"), result));
    json_decref(rec);
    assert_int_equal(atomic_load(&svc->exec_failures), 1);
    assert_int_equal(atomic_load(&svc->channel_execs), 0);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    /* Its engine handle is not reused. */
    assert_int_equal(svc->pool_n, 0);
    char *text = test_env_audit_text(fx->e);
    assert_non_null(strstr(text, "\"outcome\":\"error\""));
    free(text);
    json_decref(out);

    /* The engine does not know the sandbox at all: no live state, nothing recorded. */
    svc_live_drop(svc, ID_A);
    fake_answer(fx->e->f, "GET " API "clearing-" ID_A, 404, "{\"message\":\"No such container\"}");
    int rows = exec_rows(fx, NULL);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(exec_rows(fx, NULL), rows);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    json_decref(req);
}

static void test_sandbox_killed_by_the_kernel(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    /* The command's sandbox dies (its stream ends); the engine says the kernel killed it. */
    fake_answer(fx->e->f, "GET " API CID_A, 200,
                "{\"State\":{\"Running\":false,\"OOMKilled\":true,\"ExitCode\":137}}");
    test_agent_script(fx->agent, TEST_AGENT_HANG_UP, "", 0, 0);
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err) != 0)
        fail_msg("exec: %s", err.message);
    assert_int_equal(test_agent_frames(fx->agent, CLR_FRAME_EXEC), 1);
    assert_true(fake_count(fx->e->f, "GET " API CID_A) >= 1);
    json_t *result = json_object_get(out, "result");
    assert_string_equal(str(result, "status"), "oom");
    assert_int_equal(atomic_load(&svc->exec_ooms), 1);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    json_decref(out);
    json_decref(req);
}

struct exec_call {
    clr_service *svc;
    json_t *req, *out;
    clr_error err;
    int rc;
};

static void *exec_thread(void *p)
{
    struct exec_call *c = p;
    c->rc = clr_service_exec(c->svc, ID_A, c->req, "alice", NULL, NULL, &c->out, &c->err);
    return NULL;
}

/* The command runs (the agent keeps it running); meanwhile `breaker` breaks something; then
 * the agent's result arrives. Returns the call. */
static void run_and_break_meanwhile(struct fixture *fx, struct exec_call *c,
                                    void (*breaker)(struct fixture *))
{
    test_agent_script(fx->agent, TEST_AGENT_SILENT, "", 0, 0);
    unsigned before = test_agent_frames(fx->agent, CLR_FRAME_EXEC);
    c->svc = &fx->e->svc;
    c->req = req_of("{\"argv\":[\"sleep\",\"1\"]}");
    c->err = (clr_error)CLR_ERROR_INIT;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exec_thread, c), 0);
    test_agent_await(fx->agent, CLR_FRAME_EXEC, before + 1);
    /* Its record is made while it runs: wait for it before breaking the database. */
    for (int i = 0; i < 3000 && exec_rows(fx, ID_A) == 0; i++)
        usleep(10000);
    assert_int_equal(exec_rows(fx, ID_A), 1);
    breaker(fx);
    test_agent_send_exited(fx->agent->fd, test_agent_last(fx->agent, CLR_FRAME_EXEC), 0);
    pthread_join(t, NULL);
    json_decref(c->req);
}

static void break_updates(struct fixture *fx)
{
    break_execs(fx, "UPDATE");
}

static void test_end_not_recorded(void **state)
{
    struct fixture *fx = *state;
    attach_agent(fx);
    struct exec_call c;
    run_and_break_meanwhile(fx, &c, break_updates);
    /* The result could not be stored: the client is told, and gets no record. */
    assert_int_equal(c.rc, -1);
    assert_null(c.out);
    assert_non_null(strstr(c.err.message, "disk I/O error (test)"));
    assert_int_equal(atomic_load(&fx->e->svc.running_execs), 0);
    /* Audited all the same. */
    char *text = test_env_audit_text(fx->e);
    assert_non_null(strstr(text, "\"outcome\":\"exited\""));
    free(text);
}

static void test_end_not_audited(void **state)
{
    struct fixture *fx = *state;
    attach_agent(fx);
    struct exec_call c;
    run_and_break_meanwhile(fx, &c, break_audit);
    /* The end's audit record failed: the client is told; the result is stored all the same. */
    assert_int_equal(c.rc, -1);
    assert_null(c.out);
    assert_non_null(strstr(c.err.message, "audit"));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000); /* the daemon's own writes may hold the lock */
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT state FROM execs", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), CLR_EXEC_STATE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    test_env_break_audit(fx->e, false);
}

static void test_exec_get(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    attach_agent(fx);
    json_t *req = req_of("{\"argv\":[\"true\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    const char *exec_id = str(out, "id");
    json_t *rec = NULL;
    assert_int_equal(clr_service_exec_get(svc, ID_A, exec_id, &rec, &err), 0);
    assert_string_equal(str(rec, "id"), exec_id);
    assert_string_equal(str(rec, "sandbox_id"), ID_A);
    /* The run's answer is the record GET answers, field for field: the request (as recorded)
     * and the times too, not only id, sandbox_id, state and result. */
    assert_true(json_is_array(json_object_get(json_object_get(out, "request"), "argv")));
    assert_true(json_integer_value(json_object_get(out, "created_at")) > 0);
    assert_true(json_integer_value(json_object_get(out, "finished_at")) >=
                json_integer_value(json_object_get(out, "created_at")));
    if (!json_equal(out, rec)) {
        char *a = json_dumps(out, JSON_SORT_KEYS), *b = json_dumps(rec, JSON_SORT_KEYS);
        fail_msg("the answer %s is not the record %s", a, b);
    }
    json_decref(rec);
    /* Through another sandbox: not found (an exec id does not open another's records). */
    rec = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_get(svc, ID_B, exec_id, &rec, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    char want[128];
    snprintf(want, sizeof(want), "no exec %s in sandbox " ID_B, exec_id);
    assert_string_equal(err.message, want);
    assert_null(rec);
    /* An exec that does not exist; a sandbox id that is not one. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_get(svc, ID_A, "ex-0000000000000000", &rec, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_exec_get(svc, "nope", exec_id, &rec, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_null(rec);
    json_decref(out);
    json_decref(req);
}

int main(void)
{
    /* As the daemon: a peer that went away is an error to handle, not a signal (the scripted
     * engine writes to connections libcurl may have closed). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bind_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_on_the_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_before_anything_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_at_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenant_at_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unaudited_is_not_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrecorded_is_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_refuses_docker_exec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_killed_by_the_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_not_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_not_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_get, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
