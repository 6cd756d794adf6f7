/* lib/gitws_diff.c: the workspace as a patch, nothing written to the repository. */
#include "test_gitws_fixture.h"

static void diff_text(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-15", &w);
    put(f->ws, "README.md", "hello\nthere\n");
    put(f->ws, "added.txt", "brand new\n");
    sh("mv %s/old_name.txt %s/renamed.txt && rm %s/delete_me.txt", f->ws, f->ws, f->ws);
    write_file(f->ws, "blob.bin", "\0\1\2\3binary", 10, 0644);
    char link[256];
    snprintf(link, sizeof(link), "%s/shadow", f->ws);
    assert_int_equal(symlink("/etc/shadow", link), 0);
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, w.branch, f->ws, NULL, &err), 0);
    assert_non_null(strstr(diff, "diff --git a/README.md b/README.md\n"));
    assert_non_null(strstr(diff, "@@ -1,2 +1,2 @@\n hello\n-world\n+there\n"));
    assert_non_null(strstr(diff, "diff --git a/added.txt b/added.txt\nnew file mode 100644\n"));
    assert_non_null(strstr(diff, "+brand new\n"));
    assert_non_null(strstr(diff, "deleted file mode 100644\n"));
    assert_non_null(strstr(diff, "-bye\n"));
    assert_non_null(strstr(diff, "rename from old_name.txt\nrename to renamed.txt\n"));
    assert_non_null(strstr(diff, "Binary files /dev/null and b/blob.bin differ\n"));
    assert_non_null(strstr(diff, "new file mode 120000\n"));
    assert_non_null(strstr(diff, "+/etc/shadow\n"));
    /* git applies it: the patch format is real. */
    char patch[256];
    snprintf(patch, sizeof(patch), "%s/p.diff", f->root);
    write_file(f->root, "p.diff", diff, strlen(diff), 0644);
    sh("cd %s && git apply --check --exclude=blob.bin %s", f->repo, patch);
    free(diff);
    /* Nothing moved: a diff commits nothing. */
    char *tip = rev(f, w.branch);
    assert_string_equal(tip, w.start_commit);
    free(tip);
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, "nope", f->ws, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

/* Every file and directory under the repository's objects/ (loose objects, packs, temporary
 * files) with its mtime (libgit2 touches an object it would write again), sorted: what a diff
 * must leave exactly as it found it. */
static char *object_store_listing(const fixture *f)
{
    return sh_out(NULL, "cd %s/.git/objects && find . -printf '%%p %%T@\\n' | sort", f->repo);
}

/* Issue #16: a diff stored every workspace blob in the host repository for good (up to the
 * walk's 1 GiB a call). Its objects now live in memory and die with the call; a commit still
 * writes them. */
static void diff_writes_nothing_to_repository(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-19", &w);
    put(f->ws, "README.md", "hello\nchanged by the sandbox\n");
    put(f->ws, "fresh.txt", "content no repository has seen 7f3a\n");
    sh("mkdir %s/newdir && echo nested-1c9e > %s/newdir/inner.txt", f->ws, f->ws);
    /* Over SMALL_FILE_BYTES: the path that streamed through a temporary file in objects/. */
    size_t n = 3 * 1024 * 1024 + 5;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 13 + i / 977) % 26);
    for (size_t i = 80; i < n; i += 81)
        big[i] = '\n';
    write_file(f->ws, "big.txt", big, n, 0644);
    free(big);
    char *before = object_store_listing(f);
    assert_non_null(strstr(before, "./pack ")); /* the listing sees the store */
    for (int i = 0; i < 3; i++) {
        char *diff = NULL;
        clr_error err = CLR_ERROR_INIT;
        if (clr_git_diff(&diff, f->repo, NULL, w.branch, f->ws, NULL, &err) < 0)
            fail_msg("diff: %s", err.message);
        /* Positive control: the diff did read the new content. */
        assert_non_null(strstr(diff, "+content no repository has seen 7f3a\n"));
        assert_non_null(strstr(diff, "+nested-1c9e\n"));
        assert_non_null(strstr(diff, "+++ b/big.txt\n"));
        assert_non_null(strstr(diff, "+changed by the sandbox\n"));
        free(diff);
        char *after = object_store_listing(f);
        assert_string_equal(before, after);
        free(after);
    }
    /* A commit writes its objects as before, and git reads them back. */
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    char *committed = object_store_listing(f);
    assert_string_not_equal(before, committed);
    char *fresh = sh_out(NULL, "git -C %s cat-file -p clearing/sb-19:fresh.txt", f->repo);
    assert_string_equal(fresh, "content no repository has seen 7f3a\n");
    sh("git -C %s cat-file -p clearing/sb-19:big.txt | cmp -s - %s/big.txt", f->repo, f->ws);
    free(fresh);
    free(committed);
    free(before);
    clr_git_commit_result_clear(&r);
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(diff_text, setup, teardown),
        cmocka_unit_test_setup_teardown(diff_writes_nothing_to_repository, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_diff", tests, NULL, NULL);
}
