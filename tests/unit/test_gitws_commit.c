/* lib/gitws_commit.c: the workspace as the branch's next commit, the caller's checkout
 * untouched, a branch moved meanwhile a conflict. */
#include "test_gitws_fixture.h"

/* ---- commit ---- */

static void commit_every_kind_of_change(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-2", &w);
    char path[256];
    put(f->ws, "README.md", "hello\nworld\nand more\n");
    sh("mkdir -p %s/new/dir/deep %s/empty_dir/also_empty", f->ws, f->ws);
    put(f->ws, "new/dir/deep/file.txt", "deep\n");
    snprintf(path, sizeof(path), "%s/delete_me.txt", f->ws);
    assert_int_equal(unlink(path), 0);
    sh("mv %s/old_name.txt %s/new_name.txt", f->ws, f->ws);
    snprintf(path, sizeof(path), "%s/tool.sh", f->ws);
    assert_int_equal(chmod(path, 0755), 0);
    static const char binary[] = "\x7f" "ELF\0\0\x01\x02\0binary\0data";
    write_file(f->ws, "bin.dat", binary, sizeof(binary) - 1, 0644);

    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    const char *trailers[] = {"Sandbox-Id: sb-2", "Co-authored-by: Agent <agent@example.com>",
                              NULL};
    co.message = "Agent work\n\n";
    co.trailers = trailers;
    co.author_name = "Agent";
    co.author_email = "agent@example.com";
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    assert_string_equal(r.branch, "clearing/sb-2");
    char *tip = rev(f, "clearing/sb-2");
    char *parent = rev(f, "clearing/sb-2^");
    assert_string_equal(r.commit, tip);
    assert_string_equal(parent, w.start_commit);
    char *author = sh_out(NULL, "git -C %s log -1 --format='%%an <%%ae>|%%cn' %s", f->repo, tip);
    assert_string_equal(author, "Agent <agent@example.com>|Agent\n");
    char *raw = sh_out(NULL, "git -C %s cat-file commit %s", f->repo, tip);
    const char *msg = strstr(raw, "\n\n");
    assert_non_null(msg);
    assert_string_equal(msg + 2, "Agent work\n\nSandbox-Id: sb-2\n"
                                 "Co-authored-by: Agent <agent@example.com>\n");

    char *tree = tree_listing(f, tip);
    assert_non_null(strstr(tree, "100644 README.md\n"));
    assert_non_null(strstr(tree, "100644 bin.dat\n"));
    assert_non_null(strstr(tree, "100644 new/dir/deep/file.txt\n"));
    assert_non_null(strstr(tree, "100644 new_name.txt\n"));
    assert_non_null(strstr(tree, "100755 tool.sh\n"));
    assert_non_null(strstr(tree, "120000 link\n"));
    assert_null(strstr(tree, "delete_me.txt"));
    assert_null(strstr(tree, "old_name.txt"));
    assert_null(strstr(tree, "empty_dir"));
    size_t len;
    char *blob = sh_out(&len, "git -C %s cat-file -p %s:bin.dat", f->repo, tip);
    assert_int_equal(len, sizeof(binary) - 1);
    assert_memory_equal(blob, binary, len);

    /* README +1, new file +1, delete -1, rename, mode change, binary: six files. */
    assert_int_equal(r.files_changed, 6);
    assert_int_equal(r.insertions, 2);
    assert_int_equal(r.deletions, 1);
    assert_non_null(strstr(r.stat_text, "old_name.txt => new_name.txt"));
    assert_non_null(strstr(r.stat_text, "bin.dat"));
    assert_non_null(strstr(r.stat_text, "Bin"));
    assert_non_null(strstr(r.stat_text, "6 files changed, 2 insertions(+), 1 deletion(-)"));
    assert_non_null(strstr(r.stat_text, "mode change 100644 => 100755 tool.sh"));
    assert_int_equal(r.n_skipped, 0);
    /* git agrees with the stat. */
    char *git_stat = sh_out(NULL, "git -C %s diff --shortstat -M %s %s", f->repo, parent, tip);
    assert_non_null(strstr(git_stat, "6 files changed, 2 insertions(+), 1 deletion(-)"));
    free(git_stat);
    free(blob);
    free(tree);
    free(raw);
    free(author);
    free(tip);
    free(parent);
    clr_git_commit_result_clear(&r);
}

static void commit_without_changes(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-3", &w);
    sh("mkdir -p %s/only/empty/dirs", f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_false(r.changed);
    assert_string_equal(r.commit, w.start_commit);
    assert_string_equal(r.stat_text, "");
    assert_int_equal(r.files_changed, 0);
    char *tip = rev(f, "clearing/sb-3");
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

static void commit_large_file_streams(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-4", &w);
    size_t n = 3 * 1024 * 1024 + 17;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 4096);
    write_file(f->ws, "big.bin", big, n, 0755);
    free(big);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    sh("git -C %s cat-file -p clearing/sb-4:big.bin | cmp -s - %s/big.bin", f->repo, f->ws);
    char *tree = tree_listing(f, "clearing/sb-4");
    assert_non_null(strstr(tree, "100755 big.bin\n"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

/* HEAD, the index file's bytes, every work-tree file's bytes and mode, every ref but ours. */
static char *snapshot(const fixture *f)
{
    return sh_out(NULL,
                  "cd %s && cat .git/HEAD && sha256sum .git/index && "
                  "find . -path ./.git -prune -o -printf '%%p %%M %%s %%l\\n' | sort && "
                  "find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum && "
                  "git for-each-ref --format='%%(refname) %%(objectname)' | "
                  "grep -v '^refs/heads/clearing/' ; git status --porcelain=v2",
                  f->repo);
}

static void caller_checkout_untouched(void **state)
{
    fixture *f = *state;
    /* A caller mid-work: a staged change, an unstaged one, an untracked file, another branch. */
    sh("cd %s && git branch other && echo staged >> README.md && git add README.md && "
       "echo unstaged >> src/main.c && echo new > untracked.txt",
       f->repo);
    char *before = snapshot(f);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-5", &w);
    put(f->ws, "README.md", "rewritten by the agent\n");
    put(f->ws, "agent.txt", "agent\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, "HEAD", f->ws, NULL, &err), 0);
    char *after = snapshot(f);
    assert_string_equal(before, after);
    free(diff);
    free(before);
    free(after);
    clr_git_commit_result_clear(&r);
}

static void two_workspaces_commit_independently(void **state)
{
    fixture *f = *state;
    clr_git_workspace a, b;
    prepare(f, f->ws, "sb-a", &a);
    prepare(f, f->ws2, "sb-b", &b);
    put(f->ws, "a.txt", "from a\n");
    put(f->ws2, "b.txt", "from b\n");
    put(f->ws2, "README.md", "b's readme\n");
    clr_git_commit_options ca = commit_options(f, f->ws, a.branch);
    clr_git_commit_options cb = commit_options(f, f->ws2, b.branch);
    clr_git_commit_result ra, rb;
    commit_ok(&ca, &ra);
    commit_ok(&cb, &rb);
    assert_string_not_equal(ra.commit, rb.commit);
    char *ta = tree_listing(f, "clearing/sb-a");
    char *tb = tree_listing(f, "clearing/sb-b");
    assert_non_null(strstr(ta, " a.txt\n"));
    assert_null(strstr(ta, " b.txt\n"));
    assert_non_null(strstr(tb, " b.txt\n"));
    assert_null(strstr(tb, " a.txt\n"));
    char *pa = rev(f, "clearing/sb-a^"), *pb = rev(f, "clearing/sb-b^"), *head = rev(f, "HEAD");
    assert_string_equal(pa, head);
    assert_string_equal(pb, head);
    char *readme = sh_out(NULL, "git -C %s cat-file -p clearing/sb-a:README.md", f->repo);
    assert_string_equal(readme, "hello\nworld\n");
    free(readme);
    free(pa);
    free(pb);
    free(head);
    free(ta);
    free(tb);
    clr_git_commit_result_clear(&ra);
    clr_git_commit_result_clear(&rb);
}

typedef struct race_plan {
    const fixture *f;
    int fired;
    char *moved_to;
} race_plan;

static void move_branch_meanwhile(int dirfd, const char *name, const char *path, void *data)
{
    race_plan *p = data;
    (void)dirfd, (void)name, (void)path;
    if (p->fired++)
        return;
    p->moved_to = sh_out(NULL,
                         "cd %s && c=$(git commit-tree HEAD^{tree} -p clearing/sb-13 -m racer) "
                         "&& git update-ref refs/heads/clearing/sb-13 $c && echo $c",
                         p->f->repo);
    p->moved_to[strcspn(p->moved_to, "\n")] = '\0';
}

static void concurrent_branch_move_is_a_conflict(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-13", &w);
    put(f->ws, "mine.txt", "mine\n");
    race_plan plan = {.f = f};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = move_branch_meanwhile;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "moved"));
    char *tip = rev(f, "clearing/sb-13");
    assert_string_equal(tip, plan.moved_to); /* the other commit was not lost */
    /* Committing again builds on the new tip. */
    co.test_hook = NULL;
    commit_ok(&co, &r);
    char *parent = rev(f, "clearing/sb-13^");
    assert_string_equal(parent, plan.moved_to);
    free(parent);
    free(tip);
    free(plan.moved_to);
    clr_git_commit_result_clear(&r);
}

static void commit_options_validated(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-16", &w);
    put(f->ws, "x.txt", "x\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    co.message = " \n";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    co.message = "ok";
    const char *bad[] = {"no colon here", NULL};
    co.trailers = bad;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    const char *injected[] = {"Key: value\nSigned-off-by: someone", NULL};
    co.trailers = injected;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    co.trailers = NULL;
    co.workspace_dir = "/nonexistent/clearing/ws";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    char *tip = rev(f, w.branch);
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(commit_every_kind_of_change, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_without_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_large_file_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(caller_checkout_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(two_workspaces_commit_independently, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_branch_move_is_a_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_options_validated, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_commit", tests, NULL, NULL);
}
