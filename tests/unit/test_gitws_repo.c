/* lib/gitws_repo.c: repositories opened as they are (bare too) and files read from a commit. */
#include "test_gitws_fixture.h"

static void bare_repository(void **state)
{
    fixture *f = *state;
    fixture b = *f;
    snprintf(b.repo, sizeof(b.repo), "%.64s/bare.git", f->root);
    sh("git clone -q --bare %s %s", f->repo, b.repo);
    clr_git_workspace w;
    prepare(&b, b.ws, "sb-17", &w);
    assert_true(exists(b.ws, "src/util/helper.c"));
    put(b.ws, "added.txt", "added\n");
    clr_git_commit_options co = commit_options(&b, b.ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    assert_int_equal(r.files_changed, 1);
    char *tip = rev(&b, "clearing/sb-17");
    assert_string_equal(tip, r.commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

/* A file of a commit, read from the object database: its bytes, their length and the commit the
 * rev resolved to; a missing path is 0, a directory, a link or a gitlink is not a file, a file
 * over max is refused, and so are a missing rev and a missing repository. */
static void read_file_values(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char *text = NULL;
    size_t len = 0;
    char hex[CLR_GIT_OID_HEX_SIZE];
    char *head = rev(f, "HEAD");
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, NULL, "README.md", 4096,
                                       &err),
                     1);
    assert_string_equal(text, "hello\nworld\n");
    assert_int_equal(len, 12);
    assert_string_equal(hex, head);
    free(text);
    text = NULL;
    /* Exactly max bytes is allowed; the working tree is never read. */
    put(f->repo, "README.md", "changed in the working tree\n");
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, "main",
                                       "src/util/helper.c", 31, &err),
                     1);
    assert_string_equal(text, "int helper(void) { return 1; }\n");
    assert_int_equal(len, 31);
    free(text);
    text = NULL;
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, NULL, "README.md", 11,
                                       &err),
                     -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, NULL, "nope.txt", 4096,
                                       &err),
                     0);
    assert_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(hex, head);
    const char *not_files[] = {"src", "link"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, NULL, not_files[i],
                                           4096, &err),
                         -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_non_null(strstr(err.message, "not a regular file"));
        assert_null(text);
    }
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, "no-such-branch",
                                       "README.md", 4096, &err),
                     -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    char missing[256];
    snprintf(missing, sizeof(missing), "%.128s/missing", f->root);
    assert_int_equal(clr_git_read_file(&text, &len, hex, missing, NULL, NULL, "README.md", 4096,
                                       &err),
                     -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    free(head);
}

/* Opening checks the git directory: another identity than the one expected is a conflict, and
 * a repository that borrows objects (alternates) is refused, whatever the caller asks. */
static void open_checks_identity_and_alternates(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char *text = NULL;
    size_t len = 0;
    char hex[CLR_GIT_OID_HEX_SIZE];
    char gitdir[256];
    snprintf(gitdir, sizeof(gitdir), "%.128s/.git", f->repo);
    struct stat st;
    assert_int_equal(stat(gitdir, &st), 0);
    clr_git_repo_id right = {.dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino};
    clr_git_repo_id wrong = {.dev = right.dev, .ino = right.ino + 1};
    /* Positive control: the right identity reads. */
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, &right, NULL, "README.md",
                                       4096, &err),
                     1);
    free(text);
    text = NULL;
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, &wrong, NULL, "README.md",
                                       4096, &err),
                     -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_null(text);
    sh("echo /nowhere/objects > %s/.git/objects/info/alternates", f->repo);
    assert_int_equal(clr_git_read_file(&text, &len, hex, f->repo, NULL, NULL, "README.md", 4096,
                                       &err),
                     -1);
    assert_int_equal(err.code, CLR_E_DENIED);
    assert_non_null(strstr(err.message, "alternates"));
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bare_repository, setup, teardown),
        cmocka_unit_test_setup_teardown(read_file_values, setup, teardown),
        cmocka_unit_test_setup_teardown(open_checks_identity_and_alternates, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_repo", tests, NULL, NULL);
}
