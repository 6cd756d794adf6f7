/* lib/service/git.c on a real git repository and a real state directory (SQLite rows, an audit
 * log), with the scripted engine of fake_engine.h answering the container's inspect with the
 * labels a create would have given it: a commit of the workspace lands on the sandbox's branch
 * with the right files, message, author and trailers, and is recorded; a diff shows the
 * workspace against the base; and what is refused before anything is written: malformed and
 * unknown ids (no engine call), sandboxes that are not running (a lost one may be diffed, not
 * committed), requests with bad fields or trailers that claim to be clearing's, a container
 * whose labels disagree or name no repository, an engine that does not answer, an audit log
 * that cannot take the record. Symlinks and special files the sandbox made are committed as
 * links or skipped, never followed. */
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

#include "clearing/clearing.h"
#include "test_service_env.h"

#define ID_RUN "sb-00000000000000c1"
#define ID_LOST "sb-00000000000000c2"
#define ID_GONE "sb-00000000000000c3"
#define ID_NONE "sb-00000000000000c9"
#define ACTOR "tenant=default token=ci"
#define API "/v1.41/containers/clearing-"
#define INSPECT(id) "GET " API id "/json"

struct fixture {
    struct test_env *e;
    char repo[128], ws[128], ws_lost[128];
    clr_git_workspace gw, gw_lost;
    char *inspect_run, *inspect_lost; /* the scripted answers (the fake keeps the pointers) */
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

/* A command's standard output, without its last newline; the caller frees it. */
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
    if (pclose(p) != 0)
        fail_msg("command failed: %s", cmd);
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = '\0';
    return buf;
}

static void put(const char *dir, const char *rel, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

/* The sandbox's workspace on its branch of the repository, as a create prepares it. */
static void prepare(struct fixture *fx, const char *id, const char *ws, clr_git_workspace *gw)
{
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = fx->repo;
    o.workspace_dir = ws;
    o.sandbox_id = id;
    o.uid = getuid();
    o.gid = getgid();
    clr_error err = CLR_ERROR_INIT;
    if (clr_git_prepare(gw, &o, &err) < 0)
        fail_msg("prepare: %s", err.message);
}

/* The engine's inspect answer for a container made from info (its labels as a create writes
 * them); the caller frees it. */
static char *inspect_answer(const clr_sandbox_info *info)
{
    json_t *labels = clr_sandbox_labels(info);
    assert_non_null(labels);
    json_t *j = json_pack("{s:s, s:{s:s, s:b}, s:{s:o}}", "Id", "c0ffee", "State", "Status",
                          "running", "Paused", 0, "Config", "Labels", labels);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    return s;
}

static void sandbox_info(clr_sandbox_info *info, const char *id, const struct fixture *fx,
                         const clr_git_workspace *gw)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->id, sizeof(info->id), "%s", id);
    snprintf(info->image, sizeof(info->image), "clearing/default:latest");
    snprintf(info->runtime, sizeof(info->runtime), "runsc");
    snprintf(info->tenant, sizeof(info->tenant), "default");
    info->created_at = 1000;
    info->expires_at = 2000;
    info->limits = (clr_limits)CLR_LIMITS_INIT;
    snprintf(info->repo, sizeof(info->repo), "%s", fx->repo);
    snprintf(info->branch, sizeof(info->branch), "%s", gw->branch);
    snprintf(info->base_commit, sizeof(info->base_commit), "%s", gw->base_commit);
    info->repo_id = gw->repo_id;
}

/* A repository with a base commit; a running sandbox and a lost one, each with its workspace on
 * a branch of its own, and a destroyed one; the engine knows both containers. */
static int setup(void **state)
{
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
    setenv("GIT_AUTHOR_NAME", "Base Author", 1);
    setenv("GIT_AUTHOR_EMAIL", "base@example.com", 1);
    setenv("GIT_COMMITTER_NAME", "Base Author", 1);
    setenv("GIT_COMMITTER_EMAIL", "base@example.com", 1);
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "svcgit") != 0)
        return -1;
    struct test_env *s = fx->e;
    snprintf(fx->repo, sizeof(fx->repo), "%s/repo", s->dir);
    sh("git init -q -b main %s", fx->repo);
    put(fx->repo, "README.md", "hello\nworld\n");
    put(fx->repo, "delete_me.txt", "bye\n");
    sh("mkdir %s/src", fx->repo);
    put(fx->repo, "src/main.c", "int main(void) { return 0; }\n");
    sh("git -C %s add -A && git -C %s commit -q -m base", fx->repo, fx->repo);
    test_env_add_row(s, ID_RUN, "", CLR_STATE_RUNNING, NULL);
    test_env_add_row(s, ID_LOST, "", CLR_STATE_LOST, "runtime died");
    test_env_add_row(s, ID_GONE, "", CLR_STATE_DESTROYED, "client");
    test_env_workspace(s, ID_RUN, fx->ws, sizeof(fx->ws), 0755);
    test_env_workspace(s, ID_LOST, fx->ws_lost, sizeof(fx->ws_lost), 0755);
    prepare(fx, ID_RUN, fx->ws, &fx->gw);
    prepare(fx, ID_LOST, fx->ws_lost, &fx->gw_lost);
    clr_sandbox_info info;
    sandbox_info(&info, ID_RUN, fx, &fx->gw);
    fx->inspect_run = inspect_answer(&info);
    sandbox_info(&info, ID_LOST, fx, &fx->gw_lost);
    fx->inspect_lost = inspect_answer(&info);
    /* Newest first: any other container is unknown to the engine. */
    fake_answer(s->f, "GET " API, 404, "{\"message\":\"No such container\"}");
    fake_answer(s->f, INSPECT(ID_RUN), 200, fx->inspect_run);
    fake_answer(s->f, INSPECT(ID_LOST), 200, fx->inspect_lost);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_env_teardown(fx->e);
    free(fx->inspect_run);
    free(fx->inspect_lost);
    free(fx);
    return 0;
}

static json_t *req(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad JSON in the test: %s", e.text);
    return j;
}

static const char *str_of(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v)
        fail_msg("no string \"%s\"", key);
    return v;
}

static int64_t last_active(struct test_env *s, const char *id)
{
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(s->svc.store, id, &row, &err), 0);
    int64_t t = row.last_active_at;
    clr_store_sandbox_clear(&row);
    return t;
}

/* ---- tests ---- */

static void test_commit(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char *base = sh_out("git -C %s rev-parse main", fx->repo);
    assert_string_equal(fx->gw.base_commit, base);
    put(fx->ws, "README.md", "hello\nthere\nworld\n");
    put(fx->ws, "src/new.c", "int added(void) { return 2; }\n");
    char p[256];
    snprintf(p, sizeof(p), "%s/delete_me.txt", fx->ws);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(last_active(s, ID_RUN), 1000);

    json_t *r = req("{\"message\": \"Teach the greeting a word\", \"author_name\": \"Ada\","
                    " \"author_email\": \"ada@example.com\","
                    " \"trailers\": [\"Reviewed-by: Bob <bob@example.com>\"]}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    /* The answer names the commit now at the tip of the sandbox's branch, and what it changed. */
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(str_of(out, "commit"), tip);
    assert_string_equal(str_of(out, "branch"), fx->gw.branch);
    assert_true(json_is_true(json_object_get(out, "changed")));
    assert_int_equal(json_integer_value(json_object_get(out, "files_changed")), 3);
    assert_int_equal(json_integer_value(json_object_get(out, "insertions")), 2);
    assert_int_equal(json_integer_value(json_object_get(out, "deletions")), 1);
    assert_non_null(strstr(str_of(out, "diffstat"), "3 files changed"));
    assert_int_equal(json_array_size(json_object_get(out, "skipped")), 0);
    /* The repository agrees: parent, files, message, author, trailers. */
    char *parent = sh_out("git -C %s rev-parse '%s^'", fx->repo, tip);
    assert_string_equal(parent, base);
    char *names = sh_out("git -C %s diff --name-status %s %s | sort", fx->repo, base, tip);
    assert_string_equal(names, "A\tsrc/new.c\nD\tdelete_me.txt\nM\tREADME.md");
    char *readme = sh_out("git -C %s show %s:README.md", fx->repo, tip);
    assert_string_equal(readme, "hello\nthere\nworld");
    char *author = sh_out("git -C %s log -1 --format='%%an <%%ae>' %s", fx->repo, tip);
    assert_string_equal(author, "Ada <ada@example.com>");
    char *subject = sh_out("git -C %s log -1 --format=%%s %s", fx->repo, tip);
    assert_string_equal(subject, "Teach the greeting a word");
    char *trailers = sh_out("git -C %s log -1 --format='%%(trailers:only,unfold)' %s", fx->repo,
                            tip);
    assert_non_null(strstr(trailers, "Clearing-Sandbox: " ID_RUN "\n"));
    assert_non_null(strstr(trailers, "Clearing-Image: clearing/default:latest\n"));
    assert_non_null(strstr(trailers, "Clearing-Runtime: runsc\n"));
    char want[128];
    snprintf(want, sizeof(want), "Clearing-Base: %s\n", base);
    assert_non_null(strstr(trailers, want));
    assert_non_null(strstr(trailers, "Reviewed-by: Bob <bob@example.com>"));
    /* main is where it was: only the sandbox's branch moved. */
    char *main_now = sh_out("git -C %s rev-parse main", fx->repo);
    assert_string_equal(main_now, base);
    /* Recorded without the diffstat text; the sandbox counts as active. */
    json_t *a = expect_audit(s, "commit", "ok", ID_RUN, ACTOR);
    json_t *d = json_object_get(a, "details");
    assert_string_equal(str_of(d, "commit"), tip);
    assert_string_equal(str_of(d, "branch"), fx->gw.branch);
    assert_int_equal(json_integer_value(json_object_get(d, "files_changed")), 3);
    assert_null(json_object_get(d, "diffstat"));
    json_decref(a);
    assert_true(last_active(s, ID_RUN) > 1000);
    assert_int_equal(fake_count(s->f, INSPECT(ID_RUN)), 1);
    /* The engine handle went back to the pool. */
    assert_int_equal(svc->pool_n, 1);
    json_decref(out);

    /* Nothing changed since: no new commit, the tip unchanged; no message means the default. */
    r = req("{}");
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), 0);
    json_decref(r);
    assert_false(json_is_true(json_object_get(out, "changed")));
    assert_string_equal(str_of(out, "commit"), tip);
    json_decref(out);
    put(fx->ws, "README.md", "again\n");
    r = req("{}");
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), 0);
    json_decref(r);
    char *tip2 = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(str_of(out, "commit"), tip2);
    char *subject2 = sh_out("git -C %s log -1 --format=%%s %s", fx->repo, tip2);
    assert_string_equal(subject2, "Changes made in a clearing sandbox");
    char *parent2 = sh_out("git -C %s rev-parse '%s^'", fx->repo, tip2);
    assert_string_equal(parent2, tip);
    json_decref(out);
    assert_int_equal(audit_count(s, "commit"), 3);
    free(base);
    free(tip);
    free(parent);
    free(names);
    free(readme);
    free(author);
    free(subject);
    free(trailers);
    free(main_now);
    free(tip2);
    free(subject2);
    free(parent2);
}

static void test_diff(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    /* Nothing changed: an empty diff. */
    char *text = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), 0);
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
    put(fx->ws, "README.md", "hello\nworld\nand more\n");
    put(fx->ws, "fresh.txt", "fresh\n");
    text = NULL;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), 0);
    assert_non_null(strstr(text, "diff --git a/README.md b/README.md"));
    assert_non_null(strstr(text, "+and more\n"));
    assert_non_null(strstr(text, "diff --git a/fresh.txt b/fresh.txt"));
    assert_null(strstr(text, "delete_me.txt"));
    free(text);
    /* A diff writes nothing: the branch is still at the base, nothing recorded. */
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(tip, fx->gw.base_commit);
    free(tip);
    assert_int_equal(audit_count(s, "commit"), 0);
    /* A lost sandbox's workspace can still be diffed (what it did before it died)... */
    put(fx->ws_lost, "src/main.c", "int main(void) { return 1; }\n");
    text = NULL;
    assert_int_equal(clr_service_diff(svc, ID_LOST, &text, &err), 0);
    assert_non_null(strstr(text, "-int main(void) { return 0; }\n+int main(void) { return 1; }"));
    free(text);
    /* ...but not committed. */
    json_t *r = req("{}");
    json_t *out = NULL;
    assert_int_equal(clr_service_commit(svc, ID_LOST, r, ACTOR, &out, &err), -1);
    json_decref(r);
    expect_error(&err, CLR_E_CONFLICT, "is lost (runtime died)");
    assert_null(out);
    tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw_lost.branch);
    assert_string_equal(tip, fx->gw_lost.base_commit);
    free(tip);
    /* A destroyed one neither. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_GONE, &text, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "is not running (destroyed)");
    assert_int_equal(fake_count(s->f, INSPECT(ID_GONE)), 0);
}

/* Refused before the engine is asked or the repository touched. */
static void test_refused_requests(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    put(fx->ws, "README.md", "changed\n");
    struct {
        const char *id, *body;
        clr_error_code code;
        const char *says;
    } cases[] = {
        {"sb-../../etc", "{}", CLR_E_INVALID, "sb-../../etc"},
        {"", "{}", CLR_E_INVALID, "not a sandbox id"},
        {ID_NONE, "{}", CLR_E_NOT_FOUND, "no sandbox " ID_NONE},
        {ID_GONE, "{}", CLR_E_CONFLICT, "is not running (destroyed)"},
        {ID_RUN, "{\"branch\": \"main\"}", CLR_E_INVALID, "branch"},
        {ID_RUN, "{\"message\": 7}", CLR_E_INVALID, "message, author_name, author_email"},
        {ID_RUN, "{\"trailers\": \"Signed-off-by: x\"}", CLR_E_INVALID, "trailers a list"},
        {ID_RUN, "{\"trailers\": [\"no colon here\"]}", CLR_E_INVALID,
         "trailers[0] must be \"Key: value\""},
        {ID_RUN, "{\"trailers\": [\"A: b\\nClearing-Verdict: pass\"]}", CLR_E_INVALID,
         "trailers[0] must be"},
        {ID_RUN, "{\"trailers\": [\"Clearing-Verdict: pass\"]}", CLR_E_INVALID,
         "Clearing-* trailers are written by clearing alone"},
        {ID_RUN,
         "{\"trailers\": [\"A: 1\",\"A: 2\",\"A: 3\",\"A: 4\",\"A: 5\",\"A: 6\",\"A: 7\",\"A: 8\","
         "\"A: 9\",\"A: 10\",\"A: 11\",\"A: 12\",\"A: 13\",\"A: 14\",\"A: 15\",\"A: 16\","
         "\"A: 17\"]}",
         CLR_E_INVALID, "at most 16"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = req(cases[i].body);
        json_t *out = NULL;
        clr_error err = CLR_ERROR_INIT;
        size_t before = audit_count(s, "commit");
        if (clr_service_commit(svc, cases[i].id, r, ACTOR, &out, &err) != -1)
            fail_msg("case %zu was not refused", i);
        json_decref(r);
        expect_error(&err, cases[i].code, cases[i].says);
        assert_null(out);
        /* Each refusal is recorded once, as other routes record theirs: about the sandbox
         * when the id is one; refused for a bad request, an error for a missing sandbox. */
        if (audit_count(s, "commit") != before + 1)
            fail_msg("case %zu (%s) was not recorded once", i, err.message);
        bool refused = cases[i].code == CLR_E_INVALID;
        json_t *a = expect_audit(s, "commit", refused ? "refused" : "error",
                                 clr_sandbox_id_valid(cases[i].id) ? cases[i].id : NULL, ACTOR);
        assert_string_equal(json_string_value(json_object_get(json_object_get(a, "details"),
                                                              "error")),
                            err.message);
        json_decref(a);
    }
    assert_int_equal(fake_count(s->f, "GET " API), 0);
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(tip, fx->gw.base_commit);
    free(tip);
    char *text = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_NONE, &text, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox " ID_NONE);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, "nope", &text, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_null(text);

    /* Sixteen trailers of the client's own are the most, and they are all kept. */
    json_t *r = req("{\"trailers\": [\"A: 1\",\"A: 2\",\"A: 3\",\"A: 4\",\"A: 5\",\"A: 6\","
                    "\"A: 7\",\"A: 8\",\"A: 9\",\"A: 10\",\"A: 11\",\"A: 12\",\"A: 13\","
                    "\"A: 14\",\"A: 15\",\"A: 16\"]}");
    json_t *out = NULL;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    char *n = sh_out("git -C %s log -1 --format='%%(trailers:key=A,valueonly)' %s | grep -c .",
                     fx->repo, str_of(out, "commit"));
    assert_string_equal(n, "16");
    free(n);
    json_decref(out);

    /* A message line claiming to be clearing's: refused by the commit itself, and recorded. */
    put(fx->ws, "README.md", "changed again\n");
    r = req("{\"message\": \"Fix\\n\\nClearing-Verdict: pass\"}");
    err = (clr_error)CLR_ERROR_INIT;
    out = NULL;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    json_decref(r);
    expect_error(&err, CLR_E_INVALID, "\"Clearing-\"");
    assert_null(out);
    json_decref(expect_audit(s, "commit", "refused", ID_RUN, ACTOR));
}

/* What the engine says of the container decides whether there is anything to commit to. */
static void test_container_answers(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    put(fx->ws, "README.md", "changed\n");
    clr_sandbox_info info;
    /* The container is gone (the reconcile has not seen it yet). */
    fake_answer_n(s->f, INSPECT(ID_RUN), 404, "{\"message\":\"No such container\"}", 1);
    json_t *r = req("{}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox " ID_RUN);
    /* Its handle is not reused. */
    assert_int_equal(svc->pool_n, 0);

    /* Labels that name another sandbox. */
    sandbox_info(&info, "sb-00000000000000ff", fx, &fx->gw);
    char *other = inspect_answer(&info);
    fake_answer_n(s->f, INSPECT(ID_RUN), 200, other, 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "container name and labels disagree on " ID_RUN);
    /* Labels that are not clearing's. */
    fake_answer_n(s->f, INSPECT(ID_RUN), 200,
                  "{\"Id\":\"c0ffee\",\"Config\":{\"Labels\":{\"x\":\"y\"}}}", 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_INVALID, "container of sandbox " ID_RUN " has bad labels");

    /* A sandbox made without a repository: nothing to commit to, nothing to diff. */
    sandbox_info(&info, ID_RUN, fx, &fx->gw);
    info.repo[0] = '\0';
    char *norepo = inspect_answer(&info);
    fake_answer_n(s->f, INSPECT(ID_RUN), 200, norepo, 2);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "was not created from a repository");
    json_decref(expect_audit(s, "commit", "error", ID_RUN, ACTOR));
    char *text = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "nothing to diff");
    assert_null(text);

    /* One made by an older clearing, which did not record the repository's identity. */
    sandbox_info(&info, ID_RUN, fx, &fx->gw);
    memset(&info.repo_id, 0, sizeof(info.repo_id));
    char *noid = inspect_answer(&info);
    fake_answer_n(s->f, INSPECT(ID_RUN), 200, noid, 2);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "did not record which repository it checked");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "did not record which repository it checked");

    /* A repository that is no longer the one the sandbox was made from (moved, replaced). */
    sandbox_info(&info, ID_RUN, fx, &fx->gw);
    info.repo_id.ino += 1;
    char *moved = inspect_answer(&info);
    fake_answer_n(s->f, INSPECT(ID_RUN), 200, moved, 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    assert_int_not_equal(err.code, CLR_E_NONE);

    /* No engine at all. */
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-engine.sock", s->dir);
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    svc->docker_host = missing;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, "no-engine.sock");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, "no-engine.sock");
    json_decref(r);
    assert_null(out);
    /* Through all of it the branch never moved. */
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(tip, fx->gw.base_commit);
    free(tip);
    /* Positive control: the engine back, the same request commits. */
    svc->docker_host = s->f->sock;
    r = req("{}");
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    assert_true(json_is_true(json_object_get(out, "changed")));
    json_decref(out);
    free(other);
    free(norepo);
    free(noid);
    free(moved);
}

/* What the sandbox left in its workspace that is not a plain file: a symlink (to a host file) is
 * committed as a link, its target as text; a FIFO and a .git directory are skipped and named. */
static void test_hostile_workspace(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char secret[160], p[256];
    snprintf(secret, sizeof(secret), "%s/host-secret", s->dir);
    put(s->dir, "host-secret", "the host's secret\n");
    snprintf(p, sizeof(p), "%s/leak", fx->ws);
    assert_int_equal(symlink(secret, p), 0);
    snprintf(p, sizeof(p), "%s/pipe", fx->ws);
    assert_int_equal(mkfifo(p, 0644), 0);
    snprintf(p, sizeof(p), "%s/.git", fx->ws);
    assert_int_equal(mkdir(p, 0755), 0);
    put(fx->ws, ".git/config", "[core]\n\thooksPath = /tmp\n");
    put(fx->ws, "ok.txt", "ok\n");
    json_t *r = req("{\"message\": \"odd things\"}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    const char *tip = str_of(out, "commit");
    char *tree = sh_out("git -C %s ls-tree -r --format='%%(objectmode) %%(path)' %s | sort",
                        fx->repo, tip);
    assert_string_equal(tree, "100644 README.md\n100644 delete_me.txt\n100644 ok.txt\n"
                              "100644 src/main.c\n120000 leak");
    char *link = sh_out("git -C %s cat-file -p %s:leak", fx->repo, tip);
    assert_string_equal(link, secret);
    char *grep = sh_out("git -C %s grep -c 'the host' %s -- . | wc -l", fx->repo, tip);
    assert_string_equal(grep, "0");
    json_t *skipped = json_object_get(out, "skipped");
    assert_int_equal(json_array_size(skipped), 2);
    bool fifo = false, dotgit = false;
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(skipped, i);
        fifo |= !strcmp(str_of(e, "path"), "pipe") && !strcmp(str_of(e, "kind"), "fifo");
        dotgit |= !strcmp(str_of(e, "path"), ".git") && !strcmp(str_of(e, "kind"), ".git");
    }
    assert_true(fifo);
    assert_true(dotgit);
    /* The record names them too. */
    json_t *a = expect_audit(s, "commit", "ok", ID_RUN, ACTOR);
    assert_int_equal(json_array_size(json_object_get(json_object_get(a, "details"), "skipped")),
                     2);
    json_decref(a);
    json_decref(out);
    free(tree);
    free(link);
    free(grep);
}

/* Fail closed: with an audit log that cannot take the record, no commit is made. */
static void test_audit_unwritable(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    put(fx->ws, "README.md", "unrecorded\n");
    char moved[160];
    snprintf(moved, sizeof(moved), "%s.moved", s->log);
    assert_int_equal(rename(s->log, moved), 0);
    assert_int_equal(mkdir(s->log, 0700), 0);
    json_t *r = req("{}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    assert_null(out);
    char *tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(tip, fx->gw.base_commit);
    free(tip);
    /* A diff changes nothing and writes no record: it is answered. */
    char *text = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_diff(svc, ID_RUN, &text, &err), 0);
    assert_non_null(strstr(text, "+unrecorded"));
    free(text);
    /* The log back: the first commit's refusal is recorded (clearing the remembered failure),
     * the next one is made. */
    assert_int_equal(rmdir(s->log), 0);
    assert_int_equal(rename(moved, s->log), 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    json_decref(expect_audit(s, "commit", "refused", ID_RUN, ACTOR));
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    tip = sh_out("git -C %s rev-parse 'refs/heads/%s'", fx->repo, fx->gw.branch);
    assert_string_equal(str_of(out, "commit"), tip);
    free(tip);
    json_decref(out);
    json_decref(expect_audit(s, "commit", "ok", ID_RUN, ACTOR));
}

/* File names that are not UTF-8 (a sandbox may make any bytes a name): the commit is made, its
 * answer and record carry the names with those bytes as \xNN, and the log still verifies.
 * Before, the answer was NULL (a committed file's name in the diffstat) or the record could not
 * be written (a skipped one's), with the commit already on the branch. */
static void test_name_not_utf8(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char p[256];
    snprintf(p, sizeof(p), "%s/bad-\xff\xfe-pipe", fx->ws);
    assert_int_equal(mkfifo(p, 0644), 0);
    put(fx->ws, "ok.txt", "ok\n");
    put(fx->ws, "file-\xff.txt", "a file whose name is not UTF-8\n");
    json_t *r = req("{}");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_commit(svc, ID_RUN, r, ACTOR, &out, &err) != 0)
        fail_msg("commit: %s", err.message);
    json_decref(r);
    assert_non_null(out);
    assert_true(json_is_true(json_object_get(out, "changed")));
    assert_int_equal(json_integer_value(json_object_get(out, "files_changed")), 2);
    json_t *skipped = json_object_get(out, "skipped");
    assert_int_equal(json_array_size(skipped), 1);
    assert_string_equal(str_of(json_array_get(skipped, 0), "kind"), "fifo");
    /* The bytes that are not UTF-8 are shown as \xNN, the rest as it is. */
    assert_string_equal(str_of(json_array_get(skipped, 0), "path"), "bad-\\xff\\xfe-pipe");
    assert_non_null(strstr(str_of(out, "diffstat"), " file-\\xff.txt | 1 +\n"));
    /* The file itself is committed under its own name, bytes as they are. */
    char *names = sh_out("git -C %s ls-tree --name-only -z %s | tr '\\0' '\\n' | grep -c '^file-'",
                         fx->repo, str_of(out, "commit"));
    assert_string_equal(names, "1");
    free(names);
    char *text = json_dumps(out, JSON_COMPACT);
    if (!text)
        fail_msg("the answer does not serialise");
    free(text);
    json_decref(out);
    json_t *a = expect_audit(s, "commit", "ok", ID_RUN, ACTOR);
    assert_int_equal(json_array_size(json_object_get(json_object_get(a, "details"), "skipped")),
                     1);
    json_decref(a);
    clr_audit_verify_report rep;
    memset(&rep, 0, sizeof(rep));
    assert_int_equal(clr_audit_verify_log(&rep, s->log, NULL, false, &err), 0);
    assert_true(rep.ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_container_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_workspace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_not_utf8, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
