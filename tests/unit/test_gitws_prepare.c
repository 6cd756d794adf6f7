/* lib/gitws_prepare.c: a branch per sandbox and its tree written into the workspace; bad
 * input, existing and checked-out branches refused. */
#include "test_gitws_fixture.h"

/* ---- prepare ---- */

static int check_owner_uid = 4242, check_owner_gid = 4343;
static int owner_mismatches;

static int count_owner(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path, (void)flag, (void)ftw;
    if ((int)st->st_uid != check_owner_uid || (int)st->st_gid != check_owner_gid)
        owner_mismatches++;
    return 0;
}

static void prepare_from_head(void **state)
{
    fixture *f = *state;
    if (geteuid() != 0)
        skip();
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.sandbox_id = "sb-0000000000000001";
    o.uid = (uid_t)check_owner_uid;
    o.gid = (gid_t)check_owner_gid;
    assert_int_equal(clr_git_prepare(&w, &o, &err), 0);
    assert_string_equal(w.branch, "clearing/sb-0000000000000001");
    char *head = rev(f, "HEAD");
    assert_string_equal(w.base_commit, head);
    assert_string_equal(w.start_commit, head);
    char *tip = rev(f, "clearing/sb-0000000000000001");
    assert_string_equal(tip, head);
    /* The tree is there, byte for byte, with its link; no .git. */
    sh("cd %s && git archive HEAD | tar -x -C %s/.. --one-top-level=expect", f->repo, f->ws);
    sh("diff -r --no-dereference %s %s/expect", f->ws, f->root);
    assert_false(exists(f->ws, ".git"));
    char target[256] = "";
    snprintf(target, sizeof(target), "%s/link", f->ws);
    char buf[64] = "";
    assert_int_equal(readlink(target, buf, sizeof(buf)), 9);
    assert_memory_equal(buf, "README.md", 9);
    owner_mismatches = 0;
    assert_int_equal(nftw(f->ws, count_owner, 16, FTW_PHYS), 0);
    assert_int_equal(owner_mismatches, 0);
    free(head);
    free(tip);
}

static void prepare_from_ref(void **state)
{
    fixture *f = *state;
    sh("cd %s && git tag v1 && echo two > later.txt && git add later.txt && git commit -q -m two",
       f->repo);
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.base_ref = "v1";
    o.branch = "feature/agent";
    o.uid = getuid();
    o.gid = getgid();
    assert_int_equal(clr_git_prepare(&w, &o, &err), 0);
    char *v1 = rev(f, "v1^{commit}");
    assert_string_equal(w.base_commit, v1);
    assert_string_equal(w.branch, "feature/agent");
    char *tip = rev(f, "feature/agent");
    assert_string_equal(tip, v1);
    assert_true(exists(f->ws, "README.md"));
    assert_false(exists(f->ws, "later.txt"));
    free(v1);
    free(tip);
}

static void prepare_bad_input(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.sandbox_id = "sb-1";
    o.base_ref = "no-such-ref";
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "no-such-ref"));
    o.base_ref = NULL;
    o.branch = "bad..name";
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    o.branch = NULL;
    o.repo_path = f->ws; /* not a repository */
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    /* A workspace the sandbox could already have written to is refused. */
    o.repo_path = f->repo;
    put(f->ws, "stale", "x");
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    /* None of the failures left a branch behind. */
    char *refs = sh_out(NULL, "git -C %s for-each-ref refs/heads/clearing", f->repo);
    assert_string_equal(refs, "");
    free(refs);
}

static void prepare_existing_branch(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-1", &w);
    put(f->ws, "from-first-run.txt", "first\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w2;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws2;
    o.sandbox_id = "sb-1";
    o.uid = getuid();
    o.gid = getgid();
    assert_int_equal(clr_git_prepare(&w2, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "branch clearing/sb-1 exists"));
    assert_non_null(strstr(err.message, "pass reuse"));
    o.reuse_branch = true;
    assert_int_equal(clr_git_prepare(&w2, &o, &err), 0);
    assert_string_equal(w2.start_commit, r.commit);
    assert_string_equal(w2.base_commit, w.base_commit);
    assert_true(exists(f->ws2, "from-first-run.txt"));
    clr_git_commit_result_clear(&r);
}

static void checked_out_branch_refused(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.branch = "main";
    o.reuse_branch = true;
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "checked out"));
    clr_git_commit_options co = commit_options(f, f->ws, "main");
    clr_git_commit_result r;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    co.branch = "never-prepared";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    clr_git_commit_result_clear(&r);
}

/* The undo of prepare: a branch still at the commit it was made at is deleted (1), one that
 * moved or is gone is left alone (0), and a bad commit id is refused. */
static void branch_discard_values(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-discard", &w);
    char *tip = rev(f, "clearing/sb-discard");
    assert_string_equal(tip, w.start_commit);
    free(tip);
    const char *other = "0123456789abcdef0123456789abcdef01234567";
    assert_int_equal(clr_git_branch_discard(f->repo, NULL, w.branch, other, &err), 0);
    tip = rev(f, "clearing/sb-discard");
    assert_string_equal(tip, w.start_commit); /* kept: not where the caller thought */
    free(tip);
    assert_int_equal(clr_git_branch_discard(f->repo, NULL, w.branch, "not-hex", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_git_branch_discard(f->repo, NULL, w.branch, w.start_commit, &err), 1);
    char *gone = sh_out(NULL, "git -C %s branch --list clearing/sb-discard", f->repo);
    assert_string_equal(gone, "");
    free(gone);
    assert_int_equal(clr_git_branch_discard(f->repo, NULL, w.branch, w.start_commit, &err), 0);
    /* main, HEAD's branch, is where base was: still kept (checked out, refused by libgit2). */
    assert_int_equal(clr_git_branch_discard(f->repo, NULL, "main", w.base_commit, &err), -1);
    tip = rev(f, "main");
    assert_string_equal(tip, w.base_commit);
    free(tip);
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(prepare_from_head, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_from_ref, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_existing_branch, setup, teardown),
        cmocka_unit_test_setup_teardown(checked_out_branch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(branch_discard_values, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_prepare", tests, NULL, NULL);
}
