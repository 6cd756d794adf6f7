/* lib/service/lifecycle.c against the scripted engine of fake_engine.h, with a state database,
 * an audit log and workspaces (tmpfs mounts: as root, else the create tests are skipped) in a
 * temporary directory: a create's way (the engine's checks, the container made and started,
 * the row, the audit record, the answer; the pool asked first), what a create refuses before
 * the engine is asked (fields, images, capacity, egress, repositories) and what it undoes when
 * the engine, the database or the audit log fails; extend (only running sandboxes, never past
 * max_lifetime); egress (only tightened); destroy (audited first, then marked, then removed now
 * or queued; idempotent; nothing done when the audit log cannot be written). */
#include <dirent.h>
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "fake_engine.h"
#include "service/channels.h"
#include "service/lifecycle.h"
#include "service/removal.h"
#include "test_service_agent.h"
#include "test_service_env.h"

#define RUN_ID "sb-00000000000000c1"  /* running: expires 2000, at most 5000 */
#define PLAN_ID "sb-00000000000000c2" /* a plan's */
#define GONE_ID "sb-00000000000000c3" /* destroyed */
#define LOST_ID "sb-00000000000000c4" /* lost */
#define NO_ROW "sb-00000000000000ff"
#define API "/v1.41/containers/"
#define CREATE "POST " API "create"
#define DELETE "DELETE " API "clearing-"

static const char *const allowed[] = {"clearing/*", NULL};

struct fixture {
    struct test_env *e;
};

static void add_row(clr_store *st, const char *id, const char *state, const char *reason)
{
    clr_store_sandbox s;
    test_row_init(&s, id, "", CLR_STATE_RUNNING);
    test_row_insert(st, &s);
    if (strcmp(state, CLR_STATE_RUNNING) != 0) {
        clr_error err = CLR_ERROR_INIT;
        if (clr_store_sandbox_set_state(st, id, state, reason, 1500, &err) != 0)
            fail_msg("set_state %s: %s", id, err.message);
    }
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "lifecycle") != 0)
        return -1;
    clr_service *svc = &fx->e->svc;
    svc->cfg.allowed_images = allowed;
    svc->cfg.max_sandboxes = 8;
    svc->image = "clearing/default:latest";
    snprintf(svc->owner, sizeof(svc->owner), "test-lifecycle");
    add_row(svc->store, RUN_ID, CLR_STATE_RUNNING, "");
    add_row(svc->store, PLAN_ID, CLR_STATE_PLAN, "");
    add_row(svc->store, GONE_ID, CLR_STATE_DESTROYED, "client");
    add_row(svc->store, LOST_ID, CLR_STATE_LOST, "runtime died");
    /* An engine with runsc and the image, which creates and starts containers and removes
     * them, unless a test says otherwise. */
    fake_answer(fx->e->f, "GET /v1.41/info", 200,
                "{\"Runtimes\":{\"runsc\":{\"path\":\"/x/runsc\"}}}");
    fake_answer(fx->e->f, "GET /v1.41/images/", 200, "{\"Config\":{}}");
    fake_answer(fx->e->f, CREATE, 201, "{\"Id\":\"c0ffee\"}");
    fake_answer(fx->e->f, "POST " API "c0ffee/start", 204, NULL);
    fake_answer(fx->e->f, "GET " API "clearing-", 200,
                "{\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(fx->e->f, "DELETE " API, 204, NULL);
    fake_answer(fx->e->f, "POST " API "c0ffee/attach", 500, "{\"message\":\"attach refused\"}");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->e->svc.rm_started)
        svc_removals_drain(&fx->e->svc);
    test_env_teardown(fx->e); /* also unmounts the workspaces a test left mounted */
    free(fx);
    return 0;
}

/* ---- helpers ---- */

static json_t *req_of(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("bad test request %s: %s", text, je.text);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("no string \"%s\"", key);
    return s;
}

static void expect_audit_holds(struct fixture *fx, const char *what)
{
    char *text = test_env_audit_text(fx->e);
    if (!strstr(text, what))
        fail_msg("the audit log does not hold %s:\n%s", what, text);
    free(text);
}

/* The database refuses this statement on a table (as a full disk would). */
static void break_table(struct fixture *fx, const char *when, const char *table)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 30000);
    char sql[256], *msg = NULL;
    snprintf(sql, sizeof(sql),
             "CREATE TRIGGER broken_%s_%s BEFORE %s ON %s "
             "BEGIN SELECT RAISE(FAIL, 'disk I/O error (test)'); END;",
             when, table, when, table);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("trigger: %s", msg ? msg : "?");
    sqlite3_close(db);
}

static void row_of(clr_service *svc, const char *id, clr_store_sandbox *row)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(svc->store, id, row, &err) != 0)
        fail_msg("row %s: %s", id, err.message);
}

static void expect_state(clr_service *svc, const char *id, const char *state, const char *reason)
{
    clr_store_sandbox row;
    row_of(svc, id, &row);
    assert_string_equal(row.info.state, state);
    assert_string_equal(row.destroy_reason, reason);
    clr_store_sandbox_clear(&row);
}

static int row_count(clr_service *svc)
{
    clr_store_sandbox *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_list(svc->store, NULL, &v, &n, &err) != 0)
        fail_msg("list: %s", err.message);
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&v[i]);
    free(v);
    return (int)n;
}

static bool ws_mounted(struct fixture *fx, const char *id)
{
    char p[256], parent[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->e->dir, id);
    snprintf(parent, sizeof(parent), "%s/workspaces", fx->e->dir);
    struct stat a, b;
    return stat(p, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static bool ws_exists(struct fixture *fx, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->e->dir, id);
    struct stat a;
    return stat(p, &a) == 0;
}

static size_t count_with(struct fake *f, const char *prefix, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s%s", prefix, id);
    return fake_count(f, p);
}

/* Creates are made on tmpfs workspaces: root only. */
static bool can_mount(void)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "not root: workspaces cannot be mounted, create tests skipped\n");
    return false;
}

static json_t *create_ok(clr_service *svc, const char *text, const char *tenant)
{
    json_t *req = req_of(text);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_create(svc, req, tenant, "alice", &out, &err) != 0)
        fail_msg("create %s: %s", text, err.message);
    json_decref(req);
    assert_non_null(out);
    return out;
}

static void create_fails(clr_service *svc, const char *text, clr_error_code code,
                         const char *says)
{
    json_t *req = req_of(text);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_create(svc, req, NULL, "alice", &out, &err), -1);
    if (err.code != code || !strstr(err.message, says))
        fail_msg("create %s: code %d \"%s\", expected %d saying \"%s\"", text, err.code,
                 err.message, code, says);
    assert_null(out);
    json_decref(req);
}

/* ---- create ---- */

static void test_create_and_destroy(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    svc->cfg.pool_size = 1; /* asked first: empty, so a miss */
    json_t *out = create_ok(svc, "{\"metadata\":{\"team\":\"red\"},\"env\":{\"K\":\"v\"}}", NULL);
    const char *id = str(out, "id");
    assert_true(clr_sandbox_id_valid(id));
    assert_string_equal(str(out, "state"), CLR_STATE_RUNNING);
    assert_string_equal(str(out, "tenant"), CLR_TENANT_DEFAULT);
    assert_string_equal(str(out, "image"), "clearing/default:latest");
    assert_string_equal(str(out, "runtime"), "runsc");
    json_int_t created = json_integer_value(json_object_get(out, "created_at"));
    assert_int_equal(json_integer_value(json_object_get(out, "expires_at")),
                     created + svc->cfg.limits.lifetime_s);
    assert_int_equal(json_integer_value(json_object_get(out, "idle_timeout")), 300);
    /* Extensions reach max_lifetime from its creation at most (never past its labels). */
    json_int_t max = json_integer_value(json_object_get(out, "max_expires_at"));
    assert_true(max <= created + (json_int_t)svc->cfg.max_lifetime_s);
    assert_true(max >= created + (json_int_t)svc->cfg.max_lifetime_s - 1);
    assert_string_equal(str(json_object_get(out, "metadata"), "team"), "red");
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "env"), 0)), "K");
    /* The engine: runtimes, image, the container made and started. */
    assert_int_equal(fake_count(fx->e->f, "GET /v1.41/info"), 1);
    assert_int_equal(fake_count(fx->e->f, "GET /v1.41/images/clearing/default:latest/json"), 1);
    assert_int_equal(count_with(fx->e->f, CREATE "?name=clearing-", id), 1);
    assert_int_equal(fake_count(fx->e->f, "POST " API "c0ffee/start"), 1);
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
    assert_true(ws_mounted(fx, id));
    /* The row: running, with the request's metadata and environment. */
    clr_store_sandbox row;
    row_of(svc, id, &row);
    assert_string_equal(row.info.state, CLR_STATE_RUNNING);
    assert_string_equal(row.info.container_id, "c0ffee");
    assert_string_equal(json_string_value(json_array_get(row.env, 0)), "K=v");
    assert_string_equal(json_string_value(json_object_get(row.metadata, "team")), "red");
    assert_int_equal(row.idle_timeout_s, 300);
    clr_store_sandbox_clear(&row);
    /* Audited, counted; the pool was asked and had none; the handle went back. */
    expect_audit_holds(fx, "\"action\":\"sandbox.create\"");
    expect_audit_holds(fx, "\"tenant\":\"default\"");
    assert_int_equal(atomic_load(&svc->created), 1);
    assert_int_equal(atomic_load(&svc->h_create.n), 1);
    assert_int_equal(atomic_load(&svc->warm_misses), 1);
    assert_int_equal(atomic_load(&svc->create_failed), 0);
    assert_int_equal(svc->pool_n, 1);

    /* Destroyed: audited, marked, removed now (no remover thread), counted. */
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, id, "client", "alice", &err), 0);
    expect_state(svc, id, CLR_STATE_DESTROYED, "client");
    expect_audit_holds(fx, "\"action\":\"sandbox.destroy\"");
    assert_int_equal(count_with(fx->e->f, DELETE, id), 1);
    assert_false(ws_exists(fx, id));
    assert_int_equal(atomic_load(&svc->destroyed_client), 1);
    assert_int_equal(atomic_load(&svc->h_destroy.n), 1);
    /* Again: nothing to do, nothing done. */
    assert_int_equal(clr_service_destroy(svc, id, "client", "alice", &err), 0);
    assert_int_equal(count_with(fx->e->f, DELETE, id), 1);
    assert_int_equal(atomic_load(&svc->destroyed_client), 1);
    json_decref(out);
}

static void test_create_refused_before_the_engine(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    static const char *const roots[] = {"/nonexistent-root", NULL};
    svc->cfg.repo_roots = roots;
    create_fails(svc, "{\"user\":\"root\"}", CLR_E_INVALID, "user");
    create_fails(svc, "{\"image\":\"evil/miner:latest\"}", CLR_E_DENIED, "is not allowed");
    create_fails(svc, "{\"egress\":{\"allow\":5}}", CLR_E_INVALID, "egress.allow");
    create_fails(svc, "{\"repo\":{\"path\":\"/etc\"}}", CLR_E_DENIED, "");
    /* At capacity: the running row and the plan's are live. Three refusals: the first
     * recorded at once, the two after it counted in one record (at the log's next tick past
     * the interval, or at its close). */
    svc->cfg.max_sandboxes = 2;
    const char *full = "at capacity: 2 sandboxes are live (max_sandboxes 2); destroy one or "
                       "retry later";
    for (int i = 0; i < 3; i++)
        create_fails(svc, "{}", CLR_E_LIMIT, full);
    /* None reached the engine, none made a row; each refusal is audited. */
    assert_int_equal(fake_count(fx->e->f, "GET /version"), 0);
    assert_int_equal(row_count(svc), 4);
    char *text = test_env_audit_text(fx->e);
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, "\"action\":\"sandbox.create\"")); p++)
        n++;
    assert_int_equal(n, 5);
    free(text);
    test_env_flush_counts(fx->e);
    json_t *last = expect_audit(fx->e, "sandbox.create", "refused", NULL, "alice");
    expect_refusal_details(last, "limit", full, "alice", 2, false);
    json_decref(last);
    assert_int_equal(atomic_load(&svc->created), 0);
}

static void test_create_engine_fails(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    /* runsc not registered: refused, counted, and the engine handle is not kept. */
    fake_answer(fx->e->f, "GET /v1.41/info", 200, "{\"Runtimes\":{\"runc\":{}}}");
    create_fails(svc, "{}", CLR_E_UNAVAILABLE, "'runsc' is not registered");
    assert_int_equal(atomic_load(&svc->create_failed), 1);
    assert_int_equal(svc->pool_n, 0);
    assert_int_equal(fake_count(fx->e->f, CREATE), 0);
    assert_int_equal(row_count(svc), 4);
    /* The engine cannot be reached at all. */
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such.sock", fx->e->f->dir);
    svc->docker_host = missing;
    create_fails(svc, "{}", CLR_E_UNAVAILABLE, "no-such.sock");
    assert_int_equal(atomic_load(&svc->create_failed), 2);
    assert_int_equal(row_count(svc), 4);
    assert_int_equal(atomic_load(&svc->created), 0);
}

static void test_create_unaudited_is_undone(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    test_env_break_audit(fx->e, true);
    create_fails(svc, "{}", CLR_E_UNAVAILABLE, "audit");
    /* It was made, recorded, then removed and its row marked: it must not run unaudited. */
    assert_int_equal(fake_count(fx->e->f, CREATE), 1);
    assert_int_equal(fake_count(fx->e->f, "DELETE " API "clearing-sb-"), 1);
    assert_int_equal(row_count(svc), 5);
    clr_store_sandbox *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_list(svc->store, CLR_STATE_DESTROYED, &v, &n, &err), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].destroy_reason, "unaudited") == 0) {
            found = true;
            assert_false(ws_exists(fx, v[i].info.id));
        }
        clr_store_sandbox_clear(&v[i]);
    }
    free(v);
    assert_true(found);
    assert_int_equal(atomic_load(&svc->created), 0);
    test_env_break_audit(fx->e, false);
}

static void test_create_unrecorded_is_undone(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    break_table(fx, "INSERT", "sandboxes");
    create_fails(svc, "{}", CLR_E_INTERNAL, "insert sandbox: disk I/O error (test)");
    /* Made, not recorded: removed, no row. */
    assert_int_equal(fake_count(fx->e->f, CREATE), 1);
    assert_int_equal(fake_count(fx->e->f, "DELETE " API "clearing-sb-"), 1);
    assert_int_equal(row_count(svc), 4);
    assert_int_equal(atomic_load(&svc->created), 0);
    expect_audit_holds(fx, "\"outcome\":\"error\"");
}

static void test_create_with_egress(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    svc->cfg.pool_size = 1;
    json_t *out = create_ok(svc, "{\"egress\":{\"allow\":[\"example.com:443\"]}}", "acme");
    const char *id = str(out, "id");
    assert_string_equal(str(out, "tenant"), "acme");
    json_t *eg = json_object_get(out, "egress");
    assert_string_equal(json_string_value(json_array_get(json_object_get(eg, "allow"), 0)),
                        "example.com:443");
    /* Stored with the sandbox, and its commands find the proxy. */
    json_t *stored = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get_egress(svc->store, id, &stored, &err), 0);
    assert_true(json_equal(stored, eg));
    json_decref(stored);
    clr_store_sandbox row;
    row_of(svc, id, &row);
    bool proxy = false;
    size_t i;
    json_t *e;
    json_array_foreach(row.env, i, e) {
        proxy |= strncmp(json_string_value(e), "HTTPS_PROXY=", 12) == 0;
    }
    assert_true(proxy);
    assert_string_equal(row.info.tenant, "acme");
    clr_store_sandbox_clear(&row);
    expect_audit_holds(fx, "\"egress\":{\"allow\":[\"example.com:443\"]");
    /* The proxy inside listens once a host attached: the sandbox was opened at once (the
     * scripted engine's container has no labels of this id, so it goes no further). */
    assert_int_equal(count_with(fx->e->f, "GET " API "clearing-", id), 1);
    /* Another tenant's create does not come from the pool, even with one configured. */
    assert_int_equal(atomic_load(&svc->warm_misses), 0);
    json_decref(out);
}

static void test_create_from_an_admitted_repo(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    if (!can_mount())
        skip();
    if (system("git --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "no git: the repository test is skipped\n");
        skip();
    }
    /* A repository under the operator's repo_roots, one commit with one file. */
    char roots_dir[128], repo[160], cmd[1024];
    snprintf(roots_dir, sizeof(roots_dir), "%s/repos", fx->e->dir);
    snprintf(repo, sizeof(repo), "%s/r", roots_dir);
    snprintf(cmd, sizeof(cmd),
             "git init -q '%s' && echo hello > '%s/README' && git -C '%s' add README && "
             "git -C '%s' -c user.name=t -c user.email=t@example.invalid commit -q -m init",
             repo, repo, repo, repo);
    assert_int_equal(system(cmd), 0);
    const char *roots[] = {roots_dir, NULL};
    svc->cfg.repo_roots = roots;
    svc->cfg.pool_size = 1;
    char text[256];
    snprintf(text, sizeof(text), "{\"repo\":{\"path\":\"%s\"}}", repo);
    json_t *out = create_ok(svc, text, NULL);
    const char *id = str(out, "id");
    /* Its own branch in the repository (the branch lives in the container's labels, not the
     * row), the commit's files in its workspace. */
    snprintf(cmd, sizeof(cmd),
             "git -C '%s' rev-parse -q --verify refs/heads/clearing/%s >/dev/null", repo, id);
    assert_int_equal(system(cmd), 0);
    char file[256];
    snprintf(file, sizeof(file), "%s/workspaces/%s/README", fx->e->dir, id);
    FILE *fp = fopen(file, "r");
    assert_non_null(fp);
    char line[16] = "";
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_string_equal(line, "hello\n");
    /* A repository requested is not a pooled sandbox's default profile. */
    assert_int_equal(atomic_load(&svc->warm_misses), 0);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, id, "client", "alice", &err), 0);
    json_decref(out);
    svc->cfg.repo_roots = NULL;
}

/* ---- extend ---- */

static void test_extend(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    json_t *req = req_of("{\"by\":\"10m\"}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_extend(svc, RUN_ID, req, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "expires_at")), 2600);
    json_decref(out);
    clr_store_sandbox row;
    row_of(svc, RUN_ID, &row);
    assert_int_equal(row.info.expires_at, 2600);
    clr_store_sandbox_clear(&row);
    json_decref(req);

    /* Past max_expires_at (5000): refused, saying how much is left. */
    req = req_of("{\"by\":\"1h\"}");
    out = NULL;
    assert_int_equal(clr_service_extend(svc, RUN_ID, req, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_string_equal(err.message, "sandbox " RUN_ID " cannot live past 5000 (max_lifetime "
                                     "from creation); it may be extended by at most 2400 s");
    assert_null(out);
    row_of(svc, RUN_ID, &row);
    assert_int_equal(row.info.expires_at, 2600);
    clr_store_sandbox_clear(&row);
    /* Exactly to the bound: allowed. */
    json_decref(req);
    req = req_of("{\"by\":\"40m\"}");
    assert_int_equal(clr_service_extend(svc, RUN_ID, req, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "expires_at")), 5000);
    json_decref(out);
    /* And not a second past it. */
    json_t *one = req_of("{\"by\":\"1s\"}");
    err = (clr_error)CLR_ERROR_INIT;
    out = NULL;
    assert_int_equal(clr_service_extend(svc, RUN_ID, one, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "it may be extended by at most 0 s"));
    assert_null(out);
    json_decref(one);

    /* Not running, not there, not an id, not a duration. */
    static const struct {
        const char *id;
        clr_error_code code;
        const char *says;
    } cases[] = {
        {GONE_ID, CLR_E_CONFLICT, "sandbox " GONE_ID " is destroyed, not running"},
        {LOST_ID, CLR_E_CONFLICT, "sandbox " LOST_ID " is lost, not running"},
        {PLAN_ID, CLR_E_CONFLICT, "belongs to a running plan"},
        {NO_ROW, CLR_E_NOT_FOUND, NO_ROW},
        {"nope", CLR_E_INVALID, "nope"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err = (clr_error)CLR_ERROR_INIT;
        out = NULL;
        assert_int_equal(clr_service_extend(svc, cases[i].id, req, &out, &err), -1);
        if (err.code != cases[i].code || !strstr(err.message, cases[i].says))
            fail_msg("extend %s: code %d \"%s\"", cases[i].id, err.code, err.message);
        assert_null(out);
    }
    json_decref(req);
    req = req_of("{\"by\":\"soon\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_extend(svc, RUN_ID, req, &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_decref(req);
    /* The database failing: the error, the expiry unchanged. */
    add_row(svc->store, "sb-00000000000000c6", CLR_STATE_RUNNING, "");
    break_table(fx, "UPDATE", "sandboxes");
    req = req_of("{\"by\":\"1s\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_extend(svc, "sb-00000000000000c6", req, &out, &err), -1);
    assert_non_null(strstr(err.message, "disk I/O error (test)"));
    json_decref(req);
}

/* ---- egress ---- */

static void test_egress_only_tightened(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    json_t *have = req_of("{\"allow\":[\"example.com:443\",\"*.example.invalid\"]}");
    assert_int_equal(clr_store_sandbox_set_egress(svc->store, RUN_ID, have, &err), 0);
    json_decref(have);
    /* The sandbox is live, its proxy's connections decided by the policy it has now. */
    char *body = test_inspect_body(RUN_ID);
    fake_answer(fx->e->f, "GET " API "clearing-" RUN_ID, 200, body);
    clr_engine *eng = fake_open(fx->e->f);
    clr_sandbox *sb = NULL;
    assert_int_equal(clr_sandbox_open_at(&sb, eng, RUN_ID, fx->e->dir, &err), 0);
    clr_channel *ch = NULL;
    struct test_agent *agent = test_agent_start(&ch, RUN_ID);
    struct live_sb *lv = NULL;
    assert_int_equal(svc_live_new(svc, eng, RUN_ID, sb, ch, &lv, &err), 0);
    svc_live_put(svc, lv);
    clr_engine_free(eng);
    /* Tighter: stored, audited, answered with the sandbox. */
    json_t *req = req_of("{\"allow\":[\"example.com:443\"]}");
    json_t *out = NULL;
    assert_int_equal(clr_service_egress(svc, RUN_ID, req, "alice", &out, &err), 0);
    assert_string_equal(str(out, "id"), RUN_ID);
    json_decref(out);
    json_t *stored = NULL;
    assert_int_equal(clr_store_sandbox_get_egress(svc->store, RUN_ID, &stored, &err), 0);
    assert_int_equal(json_array_size(json_object_get(stored, "allow")), 1);
    json_decref(stored);
    expect_audit_holds(fx, "\"action\":\"sandbox.egress\"");
    json_decref(req);
    /* The live sandbox's proxy follows at once: a name the old policy allowed is denied. */
    static const char open[] = "C\0www.example.invalid\0" "443";
    test_agent_send(agent->fd, 3, CLR_FRAME_NET_OPEN, open, sizeof(open) - 1);
    test_agent_await(agent, CLR_FRAME_NET_DENY, 1);
    assert_int_equal(test_agent_last(agent, CLR_FRAME_NET_DENY), 3);
    pthread_mutex_lock(&agent->lock);
    if (!strstr(agent->deny, "not on the sandbox's allow-list"))
        fail_msg("denied as \"%s\", not by the new policy", agent->deny);
    pthread_mutex_unlock(&agent->lock);
    assert_int_equal(atomic_load(&svc->egress.denied), 1);
    assert_int_equal(atomic_load(&svc->egress.allowed), 0);
    svc_live_drop(svc, RUN_ID);
    test_agent_stop(agent);
    free(body);

    /* Wider than what it has now: denied, the stored policy unchanged, the refusal audited. */
    req = req_of("{\"allow\":[\"example.com:443\",\"evil.example.net\"]}");
    out = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_egress(svc, RUN_ID, req, "alice", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_DENIED);
    assert_non_null(strstr(err.message, "can only be tightened"));
    assert_null(out);
    assert_int_equal(clr_store_sandbox_get_egress(svc->store, RUN_ID, &stored, &err), 0);
    assert_int_equal(json_array_size(json_object_get(stored, "allow")), 1);
    json_decref(stored);
    expect_audit_holds(fx, "\"outcome\":\"refused\"");
    expect_audit_holds(fx, "\"code\":\"denied\"");
    json_decref(req);

    /* Not a policy; not a running sandbox. */
    req = req_of("{\"allow\":\"everything\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_egress(svc, RUN_ID, req, "alice", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_decref(req);
    req = req_of("{\"allow\":[]}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_egress(svc, GONE_ID, req, "alice", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    /* A sandbox with no policy allows nothing: nothing is tighter than that but nothing. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_egress(svc, LOST_ID, req, "alice", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    json_decref(req);

    /* The audit log failing: the change is refused as a whole answer (fail closed). */
    test_env_break_audit(fx->e, true);
    req = req_of("{\"allow\":[]}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_egress(svc, RUN_ID, req, "alice", &out, &err), -1);
    assert_non_null(strstr(err.message, "audit"));
    json_decref(req);
    test_env_break_audit(fx->e, false);
}

/* How many times the audit log holds what. */
static size_t audit_count_of(struct fixture *fx, const char *what)
{
    char *text = test_env_audit_text(fx->e);
    size_t n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    free(text);
    return n;
}

/* The newest audit record must be action's, with outcome, about sandbox (NULL: none). */
static void expect_last_record(struct fixture *fx, const char *action, const char *outcome,
                               const char *sandbox)
{
    char *text = test_env_audit_text(fx->e);
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    const char *line = strrchr(text, '\n');
    json_t *r = json_loads(line ? line + 1 : text, 0, NULL);
    if (!r)
        fail_msg("no audit record to read in:\n%s", text);
    const char *a = json_string_value(json_object_get(r, "action"));
    const char *o = json_string_value(json_object_get(r, "outcome"));
    const char *sb = json_string_value(json_object_get(r, "sandbox"));
    if (!a || strcmp(a, action) != 0 || !o || strcmp(o, outcome) != 0 ||
        (sandbox ? !sb || strcmp(sb, sandbox) != 0 : sb != NULL))
        fail_msg("the newest record is not %s %s about %s: %s", action, outcome,
                 sandbox ? sandbox : "no sandbox", line ? line + 1 : text);
    json_decref(r);
    free(text);
}

/* Each refusal of an egress change is recorded, like any route's: a bad request, an id that is
 * not one, an unknown or stopped sandbox. */
static void test_egress_refusals_audited(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    struct {
        const char *id, *body;
        clr_error_code code;
        const char *outcome, *sandbox; /* of the refusal's record */
    } cases[] = {
        {RUN_ID, "{\"allow\":\"everything\"}", CLR_E_INVALID, "refused", RUN_ID},
        {"sb-../x", "{\"allow\":[]}", CLR_E_INVALID, "refused", NULL},
        {NO_ROW, "{\"allow\":[]}", CLR_E_NOT_FOUND, "error", NO_ROW},
        {GONE_ID, "{\"allow\":[]}", CLR_E_CONFLICT, "error", GONE_ID},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t before = audit_count_of(fx, "\"action\":\"sandbox.egress\"");
        json_t *req = req_of(cases[i].body);
        json_t *out = NULL;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_service_egress(svc, cases[i].id, req, "alice", &out, &err), -1);
        json_decref(req);
        if (err.code != cases[i].code)
            fail_msg("case %zu: %s \"%s\"", i, clr_error_code_name(err.code), err.message);
        assert_null(out);
        if (audit_count_of(fx, "\"action\":\"sandbox.egress\"") != before + 1)
            fail_msg("case %zu (%s) was not recorded once", i, err.message);
        expect_last_record(fx, "sandbox.egress", cases[i].outcome, cases[i].sandbox);
    }
}

/* Audit before act: with a log that cannot take the record, the change is refused (503) and
 * nothing changes; the stored policy is what it was. */
static void test_egress_unaudited_changes_nothing(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    json_t *have = req_of("{\"allow\":[\"example.com:443\",\"*.example.invalid\"]}");
    assert_int_equal(clr_store_sandbox_set_egress(svc->store, RUN_ID, have, &err), 0);
    json_decref(have);
    test_env_break_audit(fx->e, true);
    json_t *req = req_of("{\"allow\":[\"example.com:443\"]}");
    json_t *out = NULL;
    assert_int_equal(clr_service_egress(svc, RUN_ID, req, "alice", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "audit"));
    assert_null(out);
    json_t *stored = NULL;
    assert_int_equal(clr_store_sandbox_get_egress(svc->store, RUN_ID, &stored, &err), 0);
    if (json_array_size(json_object_get(stored, "allow")) != 2)
        fail_msg("the policy changed without its record: %s",
                 json_dumps(stored, JSON_COMPACT));
    json_decref(stored);
    /* The log back: the same change is made, and recorded (positive control). */
    test_env_break_audit(fx->e, false);
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_service_egress(svc, RUN_ID, req, "alice", &out, &err) != 0) {
        /* The log remembers its failure until a record is written: the refusal's record. */
        assert_int_equal(err.code, CLR_E_UNAVAILABLE);
        err = (clr_error)CLR_ERROR_INIT;
        if (clr_service_egress(svc, RUN_ID, req, "alice", &out, &err) != 0)
            fail_msg("egress with the log back: %s", err.message);
    }
    json_decref(out);
    json_decref(req);
    assert_int_equal(clr_store_sandbox_get_egress(svc->store, RUN_ID, &stored, &err), 0);
    assert_int_equal(json_array_size(json_object_get(stored, "allow")), 1);
    json_decref(stored);
    expect_last_record(fx, "sandbox.egress", "ok", RUN_ID);
}

/* ---- destroy ---- */

static void test_destroy_refusals(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, "sb-../x", "client", "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, NO_ROW, "client", "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    /* A plan's sandbox goes with its plan. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, PLAN_ID, "client", "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "belongs to a running plan"));
    expect_state(svc, PLAN_ID, CLR_STATE_PLAN, "");
    /* A sandbox a restore in place is replacing is not destroyed in its gap: 409, still
     * running; once the restore is over the destroy may go on. */
    svc_set_restoring(svc, RUN_ID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, RUN_ID, "client", "alice", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "is being restored"));
    expect_state(svc, RUN_ID, CLR_STATE_RUNNING, "");
    svc_set_restoring(svc, NULL);
    /* Each refusal is audited. */
    expect_audit_holds(fx, "\"sandbox\":\"" PLAN_ID "\"");
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);

    /* The audit log cannot be written: nothing is destroyed (fail closed). */
    test_env_break_audit(fx->e, true);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, RUN_ID, "client", "alice", &err), -1);
    assert_non_null(strstr(err.message, "audit"));
    expect_state(svc, RUN_ID, CLR_STATE_RUNNING, "");
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
    assert_int_equal(atomic_load(&svc->destroyed_client), 0);
    test_env_break_audit(fx->e, false);

    /* The database cannot mark it: recorded, but not destroyed; the failure follows. */
    break_table(fx, "UPDATE", "sandboxes");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_destroy(svc, RUN_ID, "client", "alice", &err), -1);
    assert_non_null(strstr(err.message, "disk I/O error (test)"));
    assert_int_equal(fake_count(fx->e->f, "DELETE "), 0);
    expect_audit_holds(fx, "\"outcome\":\"error\"");
    assert_int_equal(atomic_load(&svc->destroyed_client), 0);
}

static void test_destroy_reasons_and_removal(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error err = CLR_ERROR_INIT;
    /* A lost sandbox's remains go with its destroy; counted by reason. */
    assert_int_equal(clr_service_destroy(svc, LOST_ID, "idle", "reaper", &err), 0);
    expect_state(svc, LOST_ID, CLR_STATE_DESTROYED, "idle");
    assert_int_equal(count_with(fx->e->f, DELETE, LOST_ID), 1);
    assert_int_equal(atomic_load(&svc->destroyed_idle), 1);
    /* An already destroyed one: nothing (idempotent). */
    assert_int_equal(clr_service_destroy(svc, GONE_ID, "client", "alice", &err), 0);
    assert_int_equal(count_with(fx->e->f, DELETE, GONE_ID), 0);
    /* The engine refuses the removal: the destroy stands (the sandbox is gone for its
     * callers; the reaper's reconcile removes the container). */
    fake_answer(fx->e->f, DELETE RUN_ID, 500, "{\"message\":\"engine is restarting\"}");
    assert_int_equal(clr_service_destroy(svc, RUN_ID, "expired", "reaper", &err), 0);
    expect_state(svc, RUN_ID, CLR_STATE_DESTROYED, "expired");
    assert_int_equal(count_with(fx->e->f, DELETE, RUN_ID), 1);
    assert_int_equal(atomic_load(&svc->destroyed_expired), 1);
    assert_int_equal(atomic_load(&svc->removal_failures), 1);
    assert_int_equal(atomic_load(&svc->destroyed_client), 0);

    /* With the remover thread: queued, the caller waits only if it asks to. */
    add_row(svc->store, "sb-00000000000000c5", CLR_STATE_RUNNING, "");
    svc->rm_started = true;
    assert_int_equal(pthread_create(&svc->rm_thread, NULL, svc_remover_main, svc), 0);
    assert_int_equal(clr_service_destroy(svc, "sb-00000000000000c5", "client", "alice", &err), 0);
    expect_state(svc, "sb-00000000000000c5", CLR_STATE_DESTROYED, "client");
    assert_int_equal(clr_service_await_removal(svc, "sb-00000000000000c5", 60000, &err), 0);
    assert_int_equal(count_with(fx->e->f, DELETE, "sb-00000000000000c5"), 1);
    assert_int_equal(atomic_load(&svc->destroyed_client), 1);
}

static void test_destroy_drops_the_live_channel(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    /* The sandbox is live (opened by an earlier command). */
    char *body = NULL;
    {
        clr_sandbox_info info;
        memset(&info, 0, sizeof(info));
        snprintf(info.id, sizeof(info.id), RUN_ID);
        snprintf(info.image, sizeof(info.image), "clearing/default:latest");
        snprintf(info.runtime, sizeof(info.runtime), "runsc");
        info.created_at = 1000;
        info.expires_at = 2000;
        info.max_expires_at = 5000;
        info.limits = (clr_limits)CLR_LIMITS_INIT;
        json_t *j = json_pack("{s:s, s:{s:o}, s:{s:s, s:b, s:b}}", "Id", "c0ffee", "Config",
                              "Labels", clr_sandbox_labels(&info), "State", "Status", "running",
                              "Running", 1, "Paused", 0);
        body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
    }
    fake_answer(fx->e->f, "GET " API "clearing-" RUN_ID, 200, body);
    clr_engine *eng = fake_open(fx->e->f);
    struct live_sb *lv = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_live_get(svc, eng, RUN_ID, &lv, &err), 0);
    svc_live_put(svc, lv);
    assert_non_null(svc->live);
    assert_int_equal(clr_service_destroy(svc, RUN_ID, "client", "alice", &err), 0);
    /* Gone from the registry: no command reaches it through a channel any more. */
    assert_null(svc->live);
    clr_engine_free(eng);
    free(body);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon: a peer that went away is an error, not a signal */
    /* The agent is bind-mounted into containers the scripted engine never starts: any
     * executable passes the create's check. */
    setenv("CLEARING_AGENT", "/bin/true", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refused_before_the_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_engine_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_unaudited_is_undone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_unrecorded_is_undone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_with_egress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_from_an_admitted_repo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_only_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_refusals_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_unaudited_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_reasons_and_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_drops_the_live_channel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
