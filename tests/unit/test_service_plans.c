/* lib/service/plans.c on a real state directory (SQLite rows, an audit log, a verdict key), a
 * real repository under the operator's repo_roots, and the scripted engine of fake_engine.h:
 * what is refused before a sandbox exists (bad requests, an image the operator did not allow,
 * a repository outside repo_roots, no room under max_sandboxes, max_execs or the tenant's
 * quota), and the bookkeeping of a plan that runs: its sandbox a row of its own in state "plan"
 * from before its first step until it is destroyed ("plan-finished"), the command slots it holds
 * given back, the pending count back to zero, and a sandbox the store cannot record destroyed
 * before anything runs in it. A plan's steps here are file steps and fail on purpose: a
 * gauntlet's checks and run steps need the in-sandbox agent, which only the integration suites
 * have (tests/integration: plans, gauntlets). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "clearing/clearing.h"
#include "test_service_env.h"

#define ACTOR "tenant=acme token=ci"
#define V "/v1.41"
#define CID "cafe0000"

struct fixture {
    struct test_env *e;
    char roots[128], repo[160], runsc[160], info[512];
    const char *root_list[2];
    clr_tenant_quota quota[2];
};

__attribute__((format(printf, 1, 2))) static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("command failed (%d): %s", rc, cmd);
}

/* A command's standard output without its last newline (NULL when it fails); free it. */
__attribute__((format(printf, 1, 2))) static char *sh_out(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 65536, n = 0;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    for (size_t r; n < cap - 1 && (r = fread(buf + n, 1, cap - 1 - n, p)) > 0;)
        n += r;
    if (pclose(p) != 0) {
        free(buf);
        return NULL;
    }
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = '\0';
    return buf;
}

static void put(const char *path, const char *content, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
}

/* The engine as a plan's sandbox needs it: runsc registered (its binary a script that prints
 * its version), the default image present, a container created and started, inspected (its
 * image id, for the verdict) and removed. */
static void script_engine(struct fixture *fx)
{
    struct fake *f = fx->e->f;
    fake_answer(f, "GET " V "/info", 200, fx->info);
    fake_answer(f, "GET " V "/images/", 200, "{\"Id\":\"sha256:1111\",\"Config\":{}}");
    fake_answer(f, "POST " V "/containers/create", 201, "{\"Id\":\"" CID "\",\"Warnings\":[]}");
    fake_answer(f, "POST " V "/containers/" CID "/start", 204, NULL);
    fake_answer(f, "GET " V "/containers/" CID "/json", 200,
                "{\"Id\":\"" CID "\",\"Image\":\"sha256:1111\",\"State\":{\"Paused\":false}}");
    fake_answer(f, "GET " V "/containers/clearing-", 200,
                "{\"Id\":\"" CID "\",\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(f, "DELETE " V "/containers/clearing-", 204, NULL);
}

static int setup(void **state)
{
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
    setenv("GIT_AUTHOR_NAME", "Base Author", 1);
    setenv("GIT_AUTHOR_EMAIL", "base@example.com", 1);
    setenv("GIT_COMMITTER_NAME", "Base Author", 1);
    setenv("GIT_COMMITTER_EMAIL", "base@example.com", 1);
    /* The agent is bind-mounted into the container, which the scripted engine never starts:
     * any executable passes the check that it is there. */
    setenv("CLEARING_AGENT", "/bin/true", 1);
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "svcplans") != 0)
        return -1;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    snprintf(fx->roots, sizeof(fx->roots), "%s/repos", s->dir);
    snprintf(fx->repo, sizeof(fx->repo), "%s/project", fx->roots);
    sh("mkdir -p %s/.clearing && git init -q -b main %s", fx->repo, fx->repo);
    char p[256];
    snprintf(p, sizeof(p), "%s/README.md", fx->repo);
    put(p, "hello\n", 0644);
    snprintf(p, sizeof(p), "%s/.clearing/gauntlet.yaml", fx->repo);
    put(p, "checks:\n  - name: unit\n    run: make test\n", 0644);
    sh("git -C %s add -A && git -C %s commit -q -m base", fx->repo, fx->repo);
    snprintf(fx->runsc, sizeof(fx->runsc), "%s/runsc", s->dir);
    put(fx->runsc, "#!/bin/sh\necho 'runsc version test-1'\n", 0755);
    snprintf(fx->info, sizeof(fx->info), "{\"Runtimes\":{\"runsc\":{\"path\":\"%s\"}}}",
             fx->runsc);
    fx->root_list[0] = fx->roots;
    fx->root_list[1] = NULL;
    svc->cfg.repo_roots = fx->root_list;
    char key[160];
    snprintf(key, sizeof(key), "%s/verdict.key", s->dir);
    clr_error err = CLR_ERROR_INIT;
    if (clr_verdict_key_load(&svc->verdict_key, key, true, NULL, &err) != 0) {
        fprintf(stderr, "verdict key: %s\n", err.message);
        return -1;
    }
    snprintf(svc->owner, sizeof(svc->owner), "test-daemon");
    script_engine(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    clr_verdict_key_free(fx->e->svc.verdict_key);
    test_env_teardown(fx->e);
    free(fx);
    return 0;
}

static json_t *plan_request(const struct fixture *fx, const char *plan_yaml)
{
    return json_pack("{s:s, s:s}", "plan", plan_yaml, "repo", fx->repo);
}

/* What a plan's events show of the service while it runs. */
struct seen {
    clr_service *svc;
    char sandbox[CLR_SANDBOX_ID_MAX + 1];
    char row_state[32], row_tenant[CLR_TENANT_MAX + 1];
    int running_execs;
    int tenant_execs[2]; /* the command slots of cfg.tenants[0] and [1] */
    unsigned plans_pending;
    bool pending_listed;
    char events[512];
};

static void on_event(void *ctx, json_t *ev)
{
    struct seen *w = ctx;
    const char *name = json_string_value(json_object_get(ev, "event"));
    size_t n = strlen(w->events);
    snprintf(w->events + n, sizeof(w->events) - n, "%s%s", n ? " " : "", name ? name : "?");
    if (!name || strcmp(name, "sandbox") != 0)
        return;
    /* The sandbox exists: the plan's row is there, the plan no longer pending. */
    snprintf(w->sandbox, sizeof(w->sandbox), "%s", json_string_value(json_object_get(ev, "id")));
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(w->svc->store, w->sandbox, &row, &err) == 0) {
        snprintf(w->row_state, sizeof(w->row_state), "%s", row.info.state);
        snprintf(w->row_tenant, sizeof(w->row_tenant), "%s", row.info.tenant);
        clr_store_sandbox_clear(&row);
    }
    w->running_execs = atomic_load(&w->svc->running_execs);
    w->tenant_execs[0] = atomic_load(&w->svc->tenant_execs[0]);
    w->tenant_execs[1] = atomic_load(&w->svc->tenant_execs[1]);
    pthread_mutex_lock(&w->svc->create_lock);
    w->plans_pending = w->svc->plans_pending;
    w->pending_listed = w->svc->pending_plans != NULL;
    pthread_mutex_unlock(&w->svc->create_lock);
}

/* Nothing held: no command slot, no pending plan. */
static void assert_nothing_held(clr_service *svc)
{
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    assert_int_equal(svc->plans_pending, 0);
    assert_null(svc->pending_plans);
}

static const char *str_of(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v)
        fail_msg("no string \"%s\"", key);
    return v;
}

/* ---- tests ---- */

/* Refused before the engine is asked anything. */
static void test_refused_requests(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char outside[160];
    snprintf(outside, sizeof(outside), "%s/elsewhere", s->dir);
    sh("git init -q -b main %s", outside);
    char dotdot[256];
    snprintf(dotdot, sizeof(dotdot), "%s/../elsewhere", fx->roots);
    struct {
        json_t *req;
        clr_error_code code;
        const char *says;
    } cases[] = {
        {json_pack("{s:s}", "plan", "steps: []"), CLR_E_INVALID, "repo (a path under repo_roots)"},
        {json_pack("{s:s, s:i}", "plan", "steps: []", "repo", 7), CLR_E_INVALID, "repo"},
        {json_pack("{s:i, s:s}", "plan", 7, "repo", fx->repo), CLR_E_INVALID,
         "plan must be an object"},
        {json_pack("{s:s, s:s, s:b}", "plan", "steps: []", "repo", fx->repo, "sudo", 1),
         CLR_E_INVALID, "sudo"},
        {json_pack("{s:s, s:s}", "plan", "steps: [", "repo", fx->repo), CLR_E_INVALID, "plan"},
        {json_pack("{s:s, s:s}", "plan", "steps:\n  - write: {path: ../x, content: x}\n", "repo",
                   fx->repo),
         CLR_E_INVALID, "../x"},
        {json_pack("{s:s, s:s}", "plan", "image: evil/miner:1\nsteps: []\n", "repo", fx->repo),
         CLR_E_DENIED, "image 'evil/miner:1' is not allowed"},
        {json_pack("{s:s, s:s}", "plan", "steps: []", "repo", outside), CLR_E_DENIED,
         "this repository is not allowed"},
        {json_pack("{s:s, s:s}", "plan", "steps: []", "repo", dotdot), CLR_E_DENIED,
         "this repository is not allowed"},
        {json_pack("{s:s, s:s}", "plan", "steps: []", "repo", "/etc"), CLR_E_DENIED,
         "this repository is not allowed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *out = NULL;
        clr_error err = CLR_ERROR_INIT;
        if (clr_service_plan(svc, cases[i].req, "acme", ACTOR, NULL, NULL, &out, &err) != -1)
            fail_msg("case %zu was not refused", i);
        json_decref(cases[i].req);
        if (err.code != cases[i].code || !strstr(err.message, cases[i].says))
            fail_msg("case %zu: %s \"%s\", expected %s saying \"%s\"", i,
                     clr_error_code_name(err.code), err.message,
                     clr_error_code_name(cases[i].code), cases[i].says);
        assert_null(out);
    }
    /* Without repo_roots no repository is allowed at all. */
    svc->cfg.repo_roots = NULL;
    json_t *r = plan_request(fx, "steps: []");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, NULL, ACTOR, NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_DENIED, "repositories are not enabled on this daemon");
    json_decref(r);
    assert_int_equal(fake_count(s->f, "GET /version"), 0);
    assert_int_equal(fake_count(s->f, "POST "), 0);
    assert_nothing_held(svc);
    assert_int_equal(atomic_load(&svc->created), 0);
}

/* No room: refused after the gauntlet that would judge it is read, before a sandbox exists;
 * the refusal is recorded and nothing is held. */
static void test_no_room(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    test_env_add_row(s, "sb-00000000000000e1", "acme", CLR_STATE_RUNNING, NULL);
    test_env_add_row(s, "sb-00000000000000e2", "", CLR_STATE_PLAN, NULL);
    test_env_add_row(s, "sb-00000000000000e3", "", CLR_STATE_DESTROYED, "client");
    const char *plan = "steps:\n  - write: {path: a.txt, content: a}\n";

    /* max_sandboxes: a running sandbox and a plan's are live, the destroyed one is not. */
    svc->cfg.max_sandboxes = 2;
    json_t *r = plan_request(fx, plan);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "acme", ACTOR, NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, "at capacity: 2 sandboxes are live (max_sandboxes 2)");
    assert_int_equal(atomic_load(&svc->refused), 1);
    assert_nothing_held(svc);
    json_t *a = expect_audit(s, "plan", "refused", NULL, ACTOR);
    assert_non_null(strstr(str_of(json_object_get(a, "details"), "error"), "max_sandboxes"));
    json_decref(a);

    /* max_execs: every command slot taken. */
    svc->cfg.max_sandboxes = 64;
    svc->cfg.max_execs = 3;
    atomic_store(&svc->running_execs, 3);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "acme", ACTOR, NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, "at capacity: 3 commands are running (max_execs)");
    assert_int_equal(atomic_load(&svc->running_execs), 3);
    assert_int_equal(atomic_load(&svc->refused), 2);
    atomic_store(&svc->running_execs, 0);

    /* The tenant's quota: acme may hold one sandbox and holds one; beta's room is its own. */
    fx->quota[0] = (clr_tenant_quota){.name = "acme", .max_sandboxes = 1};
    svc->cfg.tenants = fx->quota;
    svc->cfg.ntenants = 1;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "acme", ACTOR, NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, "acme");
    assert_null(out);
    assert_nothing_held(svc);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 0);
    assert_int_equal(audit_count(s, "plan"), 3);
    assert_int_equal(atomic_load(&svc->created), 0);

    /* beta's command slots (max_execs 1) all held by a command of its own: refused naming
     * beta's limit, though max_execs has room; nothing more is held. */
    fx->quota[1] = (clr_tenant_quota){.name = "beta", .max_execs = 1};
    svc->cfg.ntenants = 2;
    atomic_store(&svc->running_execs, 1);
    atomic_store(&svc->tenant_execs[1], 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "beta", ACTOR, NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT,
                 "tenant beta is at its quota: 1 commands are running in its sandboxes "
                 "(max_execs 1 for tenant beta)");
    assert_null(out);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[1]), 1);
    assert_int_equal(atomic_load(&svc->refused), 4);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 0);
    atomic_store(&svc->running_execs, 0);
    atomic_store(&svc->tenant_execs[1], 0);

    /* Positive control: the same plan for beta, its slot free, gets its sandbox; while it runs
     * its command slot is counted as beta's, and given back with the rest. */
    struct seen w = {.svc = svc};
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_service_plan(svc, r, "beta", ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 1);
    assert_string_equal(w.row_tenant, "beta");
    assert_int_equal(w.running_execs, 1);
    assert_int_equal(w.tenant_execs[1], 1);
    assert_int_equal(w.tenant_execs[0], 0);
    json_decref(out);
    assert_nothing_held(svc);
    assert_int_equal(atomic_load(&svc->tenant_execs[1]), 0);
}

/* A plan whose step fails, without commit_on_failure: its sandbox is recorded as the plan's
 * while it runs, destroyed with it, its branch removed, and everything it held given back. */
static void test_run_records(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip(); /* the sandbox's workspace is a size-limited tmpfs */
    svc->cfg.max_execs = 4;
    json_t *r = plan_request(fx, "commit_on_failure: false\n"
                                 "steps:\n"
                                 "  - write: {path: notes/a.txt, content: \"a\\n\"}\n"
                                 "  - delete: {path: missing.txt}\n");
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_plan(svc, r, NULL, ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    /* While it ran: a row of its own in state plan (the default tenant's), not pending any
     * more, one command slot held (its gauntlet runs one check at a time). */
    assert_true(clr_sandbox_id_valid(w.sandbox));
    assert_string_equal(w.row_state, CLR_STATE_PLAN);
    assert_string_equal(w.row_tenant, CLR_TENANT_DEFAULT);
    assert_int_equal(w.running_execs, 1);
    assert_int_equal(w.plans_pending, 0);
    assert_false(w.pending_listed);
    assert_string_equal(w.events, "sandbox step step done");
    /* The report: the steps (the second failed), the verdict, the branch gone again. */
    assert_string_equal(str_of(out, "sandbox"), w.sandbox);
    assert_string_equal(str_of(out, "verdict"), "fail");
    assert_true(json_is_true(json_object_get(out, "branch_removed")));
    assert_null(json_object_get(out, "commit"));
    json_t *steps = json_object_get(out, "steps");
    assert_int_equal(json_array_size(steps), 2);
    assert_string_equal(str_of(json_array_get(steps, 0), "status"), "ok");
    assert_string_equal(str_of(json_array_get(steps, 1), "status"), "failed");
    assert_non_null(strstr(str_of(json_array_get(steps, 1), "error"), "missing.txt"));
    assert_non_null(strstr(str_of(out, "summary"), "step 2 failed"));
    const char *branch = str_of(out, "branch");
    char *ref = sh_out("git -C %s show-ref --verify 'refs/heads/%s' 2>/dev/null", fx->repo, branch);
    assert_null(ref);
    /* Afterwards: the row says destroyed by the plan's end; nothing is held. */
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, w.sandbox, &row, &err), 0);
    assert_string_equal(row.info.state, CLR_STATE_DESTROYED);
    assert_string_equal(row.destroy_reason, "plan-finished");
    clr_store_sandbox_clear(&row);
    assert_nothing_held(svc);
    assert_int_equal(atomic_load(&svc->created), 1);
    /* The engine: created, started, removed; the workspace is gone. */
    char del[128];
    snprintf(del, sizeof(del), "DELETE " V "/containers/clearing-%s", w.sandbox);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 1);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/" CID "/start"), 1);
    assert_int_equal(fake_count(s->f, del), 1);
    char ws[160];
    test_env_workspace(s, w.sandbox, ws, sizeof(ws), 0);
    struct stat st;
    assert_int_equal(stat(ws, &st), -1);
    /* Recorded: its sandbox, its destruction, its verdict. */
    json_decref(expect_audit(s, "sandbox.create", "ok", w.sandbox, ACTOR));
    json_decref(expect_audit(s, "sandbox.destroy", "ok", w.sandbox, ACTOR));
    json_decref(expect_audit(s, "plan", "fail", w.sandbox, ACTOR));
    json_decref(out);
}

/* With commit_on_failure, a failed plan's work is committed with its verdict, signed. */
static void test_run_commits_verdict(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    json_t *r = plan_request(fx, "commit_on_failure: true\n"
                                 "message: Try the change\n"
                                 "steps:\n"
                                 "  - write: {path: notes/a.txt, content: \"a\\n\"}\n"
                                 "  - delete: {path: missing.txt}\n");
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_plan(svc, r, "acme", ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    assert_string_equal(w.row_tenant, "acme");
    assert_string_equal(str_of(out, "verdict"), "fail");
    const char *commit = str_of(out, "commit");
    const char *branch = str_of(out, "branch");
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, branch);
    assert_non_null(tip);
    assert_string_equal(tip, commit);
    char *files = sh_out("git -C %s show --format= --name-status %s", fx->repo, commit);
    assert_string_equal(files, "A\tnotes/a.txt");
    char *msg = sh_out("git -C %s log -1 --format=%%B %s", fx->repo, commit);
    assert_non_null(strstr(msg, "Try the change"));
    assert_non_null(strstr(msg, "Clearing-Verdict: fail"));
    assert_non_null(strstr(msg, "Clearing-Plan-Steps: 2"));
    assert_non_null(strstr(msg, "Clearing-Image-Id: sha256:1111"));
    assert_non_null(strstr(msg, "Clearing-Runtime-Version: runsc version test-1"));
    char want[64];
    snprintf(want, sizeof(want), "Clearing-Sandbox: %s", w.sandbox);
    assert_non_null(strstr(msg, want));
    assert_string_equal(str_of(out, "signed_by"), clr_verdict_key_id(svc->verdict_key));
    assert_string_equal(w.events, "sandbox step step commit done");
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, w.sandbox, &row, &err), 0);
    assert_string_equal(row.info.state, CLR_STATE_DESTROYED);
    clr_store_sandbox_clear(&row);
    assert_nothing_held(svc);
    json_decref(expect_audit(s, "commit", "ok", w.sandbox, ACTOR));
    free(tip);
    free(files);
    free(msg);
    json_decref(out);
}

/* A sandbox the store cannot record must not run: it is destroyed, its branch removed, the
 * plan refused, and nothing is held. */
static void test_unrecorded_sandbox(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->db, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db,
                          "CREATE TRIGGER no_plans BEFORE INSERT ON sandboxes "
                          "WHEN NEW.state = 'plan' BEGIN "
                          "SELECT RAISE(ABORT, 'plans are not recorded today'); END;",
                          NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("trigger: %s", msg);
    sqlite3_close(db);
    json_t *r = plan_request(fx, "steps:\n  - write: {path: must-not-exist.txt, content: x}\n");
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "acme", ACTOR, on_event, &w, &out, &err), -1);
    json_decref(r);
    assert_null(out);
    assert_string_equal(w.events, "");
    if (!strstr(err.message, "plans are not recorded today"))
        fail_msg("error \"%s\" does not carry the store's", err.message);
    /* Created (the positive control), then removed before any step. */
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 1);
    assert_int_equal(fake_count(s->f, "DELETE " V "/containers/clearing-"), 1);
    char *branches = sh_out("git -C %s for-each-ref --format='%%(refname)' refs/heads/", fx->repo);
    assert_string_equal(branches, "refs/heads/main");
    free(branches);
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    assert_int_equal(clr_store_sandbox_list(svc->store, NULL, &rows, &n, &err), 0);
    assert_int_equal(n, 0);
    free(rows);
    assert_nothing_held(svc);
    assert_int_equal(atomic_load(&svc->created), 0);
    json_t *a = expect_audit(s, "plan", "refused", NULL, ACTOR);
    assert_non_null(strstr(str_of(json_object_get(a, "details"), "error"), "not recorded"));
    json_decref(a);
}

/* A parallel gauntlet holds as many command slots as it may run checks at once, no more than
 * there is room for, and gives them all back. */
static void test_parallel_slots(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    char p[256];
    snprintf(p, sizeof(p), "%s/.clearing/gauntlet.yaml", fx->repo);
    put(p,
        "parallel: 3\nchecks:\n  - name: a\n    run: 'true'\n  - name: b\n    run: 'true'\n"
        "  - name: c\n    run: 'true'\n",
        0644);
    sh("git -C %s commit -q -am 'three checks at once'", fx->repo);
    const char *plan = "steps:\n  - delete: {path: missing.txt}\n";
    /* Room for all three. */
    svc->cfg.max_execs = 8;
    json_t *r = plan_request(fx, plan);
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_plan(svc, r, NULL, ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(out);
    assert_int_equal(w.running_execs, 3);
    assert_nothing_held(svc);
    /* Two slots free of max_execs 3: it takes the two. */
    svc->cfg.max_execs = 3;
    atomic_store(&svc->running_execs, 1);
    w = (struct seen){.svc = svc};
    if (clr_service_plan(svc, r, NULL, ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    json_decref(out);
    assert_int_equal(w.running_execs, 3);
    assert_int_equal(atomic_load(&svc->running_execs), 1);
    atomic_store(&svc->running_execs, 0);
    assert_nothing_held(svc);
}

/* The branches of fx's repository whose names start with prefix. */
static int count_branches(struct fixture *fx, const char *prefix)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "git -C %s for-each-ref --format='%%(refname:short)' refs/heads/",
             fx->repo);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[256];
    int n = 0;
    while (fgets(line, sizeof(line), p))
        n += strncmp(line, prefix, strlen(prefix)) == 0;
    assert_int_equal(pclose(p), 0);
    return n;
}

/* The engine refuses the container: the plan is refused, nothing recorded or held, and the
 * branch it made is gone again. */
static void test_engine_refuses(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    fake_answer(s->f, "POST " V "/containers/create", 500,
                "{\"message\":\"the engine has had enough\"}");
    json_t *r = plan_request(fx, "steps:\n  - write: {path: a.txt, content: a}\n");
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, "acme", ACTOR, on_event, &w, &out, &err), -1);
    json_decref(r);
    expect_error(&err, CLR_E_ENGINE, "the engine has had enough");
    assert_null(out);
    assert_string_equal(w.events, "");
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 1);
    clr_store_sandbox *rows = NULL;
    size_t n = 0;
    assert_int_equal(clr_store_sandbox_list(svc->store, NULL, &rows, &n, &err), 0);
    assert_int_equal(n, 0);
    free(rows);
    assert_nothing_held(svc);
    assert_int_equal(atomic_load(&svc->created), 0);
    json_decref(expect_audit(s, "plan", "refused", NULL, ACTOR));
    assert_int_equal(count_branches(fx, "main"), 1); /* positive control: branches are seen */
    assert_int_equal(count_branches(fx, "clearing/"), 0);
}

/* The store cannot record the sandbox's end: the plan still ends and gives back what it held;
 * its row stays a plan's, for the next start's recovery to find. */
static void test_end_unrecorded(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(s->db, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db,
                     "CREATE TRIGGER no_end BEFORE UPDATE OF state ON sandboxes "
                     "WHEN NEW.state = 'destroyed' BEGIN "
                     "SELECT RAISE(ABORT, 'the end is not recorded today'); END;",
                     NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("trigger: %s", msg);
    sqlite3_close(db);
    json_t *r = plan_request(fx, "steps:\n  - delete: {path: missing.txt}\n");
    struct seen w = {.svc = svc};
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_plan(svc, r, NULL, ACTOR, on_event, &w, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    assert_string_equal(str_of(out, "verdict"), "fail");
    json_decref(out);
    assert_string_equal(w.row_state, CLR_STATE_PLAN);
    clr_store_sandbox row;
    assert_int_equal(clr_store_sandbox_get(svc->store, w.sandbox, &row, &err), 0);
    assert_string_equal(row.info.state, CLR_STATE_PLAN);
    clr_store_sandbox_clear(&row);
    assert_nothing_held(svc);
}

/* The image a plan's sandbox is made from is the one checked against allowed_images: a plan
 * that names none runs CLR_DEFAULT_IMAGE (not the daemon's configured default), so that is the
 * one that must be allowed. */
/* A plan that names no image runs the daemon's configured image, as a sandbox made by create
 * does, and that image is the one allowed_images is checked against. */
static void test_default_image_checked(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip();
    static const char *const allowed[] = {"acme/*", NULL};
    char image[] = "acme/base:1";
    svc->cfg.allowed_images = allowed;
    /* Without a configured image the default one is checked, and it is not allowed here. */
    json_t *r = plan_request(fx, "steps:\n  - delete: {path: missing.txt}\n");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_plan(svc, r, NULL, ACTOR, NULL, NULL, &out, &err), -1);
    json_decref(r);
    expect_error(&err, CLR_E_DENIED, "image '" CLR_DEFAULT_IMAGE "' is not allowed");
    assert_null(out);
    assert_int_equal(fake_count(s->f, "GET " V "/images/"), 0);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 0);
    assert_nothing_held(svc);
    /* With one configured, a plan that names none gets its sandbox of that image. */
    svc->image = image;
    r = plan_request(fx, "steps:\n  - delete: {path: missing.txt}\n");
    if (clr_service_plan(svc, r, NULL, ACTOR, NULL, NULL, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    json_decref(out);
    out = NULL;
    assert_int_equal(fake_count(s->f, "GET " V "/images/acme"), 1);
    assert_int_equal(fake_count(s->f, "GET " V "/images/clearing"), 0);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 1);
    /* And one that names an allowed image gets that one. */
    r = plan_request(fx, "image: acme/other:2\nsteps:\n  - delete: {path: missing.txt}\n");
    if (clr_service_plan(svc, r, NULL, ACTOR, NULL, NULL, &out, &err) != 0)
        fail_msg("plan: %s", err.message);
    json_decref(r);
    json_decref(out);
    assert_int_equal(fake_count(s->f, "GET " V "/images/acme/other"), 1);
    assert_int_equal(fake_count(s->f, "POST " V "/containers/create"), 2);
    svc->image = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_commits_verdict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrecorded_sandbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_unrecorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_image_checked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
