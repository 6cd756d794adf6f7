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

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bare_repository, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_repo", tests, NULL, NULL);
}
