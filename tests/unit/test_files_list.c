/* lib/files_list.c: entries listed and described as lstat sees them, links never followed. */
#include "test_files_fixture.h"

/* ---- list, stat, delete ------------------------------------------------------------------- */

static void test_list_reports_symlinks_without_following(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "a.txt");
    put_file(p, "12345", 0640);
    WS(f, p, "d");
    assert_int_equal(mkdir(p, 0711), 0);
    WS(f, p, "shadow");
    assert_int_equal(symlink("/etc/shadow", p), 0);
    WS(f, p, "etc");
    assert_int_equal(symlink("/etc", p), 0);
    WS(f, p, "fifo");
    assert_int_equal(mkfifo(p, 0600), 0);

    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, f->root, "", 100, &err), 0);
    assert_int_equal(n, 5);
    /* Sorted by name. */
    assert_string_equal(v[0].name, "a.txt");
    assert_int_equal(v[0].type, CLR_FILE_REGULAR);
    assert_int_equal(v[0].size, 5);
    assert_int_equal(v[0].mode, 0640);
    assert_true(v[0].mtime > 1600000000);
    assert_null(v[0].link_target);
    assert_string_equal(v[1].name, "d");
    assert_int_equal(v[1].type, CLR_FILE_DIRECTORY);
    assert_int_equal(v[1].mode, 0711);
    assert_string_equal(v[2].name, "etc");
    assert_int_equal(v[2].type, CLR_FILE_SYMLINK);
    assert_string_equal(v[2].link_target, "/etc");
    assert_string_equal(v[3].name, "fifo");
    assert_int_equal(v[3].type, CLR_FILE_OTHER);
    assert_string_equal(v[4].name, "shadow");
    assert_int_equal(v[4].type, CLR_FILE_SYMLINK);
    assert_string_equal(v[4].link_target, "/etc/shadow");
    assert_int_equal(v[4].size, strlen("/etc/shadow"));
    clr_files_entries_free(v, n);

    /* Listing the links themselves, or through them, is refused. */
    const char *bad[] = {"shadow", "etc", "etc/", "etc/ssh"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(clr_files_list(&v, &n, f->root, bad[i], 100, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_null(v);
        assert_int_equal(n, 0);
    }
    assert_int_equal(clr_files_list(&v, &n, f->root, "a.txt", 100, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_list(&v, &n, f->root, "nope", 100, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    /* Capped. */
    assert_int_equal(clr_files_list(&v, &n, f->root, ".", 4, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_null(v);
    /* Empty. */
    assert_int_equal(clr_files_list(&v, &n, f->root, "d", 4, &err), 0);
    assert_int_equal(n, 0);
    assert_null(v);

    clr_file_entry *e = NULL;
    assert_int_equal(clr_files_stat(&e, f->root, "shadow", &err), 0);
    assert_int_equal(e->type, CLR_FILE_SYMLINK);
    assert_string_equal(e->name, "shadow");
    assert_string_equal(e->link_target, "/etc/shadow");
    clr_files_entries_free(e, 1);
    assert_int_equal(clr_files_stat(&e, f->root, "", &err), 0);
    assert_int_equal(e->type, CLR_FILE_DIRECTORY);
    clr_files_entries_free(e, 1);
    assert_int_equal(clr_files_stat(&e, f->root, "etc/passwd", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_null(e);
}

/* The values an entry carries: type names, the root described as ".", sizes, modes and times
 * as lstat gives them, and an empty directory listed as nothing. */
static void test_entry_values(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    assert_string_equal(clr_files_type_name(CLR_FILE_REGULAR), "file");
    assert_string_equal(clr_files_type_name(CLR_FILE_DIRECTORY), "dir");
    assert_string_equal(clr_files_type_name(CLR_FILE_SYMLINK), "symlink");
    assert_string_equal(clr_files_type_name(CLR_FILE_OTHER), "other");
    char p[256];
    WS(f, p, "data.bin");
    put_file(p, "12345", 0640);
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1234567890}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    WS(f, p, "empty");
    assert_int_equal(mkdir(p, 0750), 0);
    clr_file_entry *e = NULL;
    assert_int_equal(clr_files_stat(&e, f->root, "", &err), 0);
    assert_string_equal(e->name, ".");
    assert_int_equal(e->type, CLR_FILE_DIRECTORY);
    assert_null(e->link_target);
    clr_files_entries_free(e, 1);
    assert_int_equal(clr_files_stat(&e, f->root, "./data.bin", &err), 0);
    assert_string_equal(e->name, "data.bin");
    assert_int_equal(e->type, CLR_FILE_REGULAR);
    assert_int_equal(e->size, 5);
    assert_int_equal(e->mode, 0640);
    assert_int_equal(e->mtime, 1234567890);
    clr_files_entries_free(e, 1);
    clr_file_entry *v = (clr_file_entry *)&err; /* must be reset */
    size_t n = 99;
    assert_int_equal(clr_files_list(&v, &n, f->root, "empty", 10, &err), 0);
    assert_null(v);
    assert_int_equal(n, 0);
    /* Exactly max_entries is fine; the names come sorted. */
    assert_int_equal(clr_files_list(&v, &n, f->root, "", 2, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "data.bin");
    assert_string_equal(v[1].name, "empty");
    assert_int_equal(v[1].type, CLR_FILE_DIRECTORY);
    assert_int_equal(v[1].mode, 0750);
    clr_files_entries_free(v, n);
    clr_files_entries_free(NULL, 3);
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_list_reports_symlinks_without_following),
        T(test_entry_values),
#undef T
    };
    return cmocka_run_group_tests_name("files_list", tests, NULL, NULL);
}
