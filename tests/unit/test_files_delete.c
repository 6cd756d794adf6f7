/* lib/files_delete.c: deletion never follows a link and is bounded in depth. */
#include "test_files_fixture.h"

static void test_delete_never_follows(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    /* A link to a host file: the link goes, the file stays. */
    WS(f, p, "decoy");
    assert_int_equal(symlink(f->secret, p), 0);
    assert_int_equal(clr_files_delete(f->root, "decoy", false, &err), 0);
    assert_false(exists(p));
    assert_outside_untouched(f);
    /* Through a linked directory: refused. */
    WS(f, p, "evil");
    assert_int_equal(symlink(f->outside, p), 0);
    assert_int_equal(clr_files_delete(f->root, "evil/secret", false, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_delete(f->root, "evil/secret", true, &err), -1);
    assert_outside_untouched(f);
    /* Recursive over a linked directory: the link itself goes. */
    assert_int_equal(clr_files_delete(f->root, "evil", true, &err), 0);
    assert_false(exists(p));
    assert_outside_untouched(f);
    /* Recursive over a tree holding links to host directories and files. */
    WS(f, p, "tree");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "tree/sub");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "tree/sub/file");
    put_file(p, "x", 0644);
    WS(f, p, "tree/sub/out");
    assert_int_equal(symlink(f->outside, p), 0);
    WS(f, p, "tree/sec");
    assert_int_equal(symlink(f->secret, p), 0);
    WS(f, p, "tree/fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(clr_files_delete(f->root, "tree", false, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_int_equal(clr_files_delete(f->root, "tree/", true, &err), 0);
    WS(f, p, "tree");
    assert_false(exists(p));
    assert_outside_untouched(f);

    assert_int_equal(clr_files_delete(f->root, "", true, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_delete(f->root, ".", true, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_delete(f->root, "gone", false, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_true(exists(f->ws));
}

static void test_delete_depth_is_bounded(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char rel[1024] = "deep";
    for (int i = 0; i < CLR_FILES_DELETE_MAX_DEPTH + 5; i++)
        strcat(rel, i % 2 ? "/b" : "/a");
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_depth = 1000;
    assert_int_equal(clr_files_write(f->root, rel, -1, "x", 1, 0644, &lim, &err), 0);
    assert_int_equal(clr_files_delete(f->root, "deep", true, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_delete_never_follows),
        T(test_delete_depth_is_bounded),
#undef T
    };
    return cmocka_run_group_tests_name("files_delete", tests, NULL, NULL);
}
