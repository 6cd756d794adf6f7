/* lib/files_rw.c: one file written (atomically, never through a link) and read (never a FIFO,
 * never a link, within its limit). */
#include "test_files_fixture.h"

/* ---- write and read ----------------------------------------------------------------------- */

static void test_write_read_roundtrip(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    const char *data = "hello, workspace\n";
    /* Set-id and sticky bits are dropped: nothing from the API becomes setuid. */
    assert_int_equal(clr_files_write(f->root, "dir/sub/file.txt", -1, data, strlen(data), 06755,
                                     NULL, &err),
                     0);
    char p[256];
    struct stat st;
    WS(f, p, "dir/sub/file.txt");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(st.st_uid, SANDBOX_UID);
    assert_int_equal(st.st_gid, SANDBOX_GID);
    WS(f, p, "dir/sub");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(st.st_uid, SANDBOX_UID);

    _cleanup_close_ int out = mem_fd();
    uint64_t size = 0;
    assert_int_equal(clr_files_read(f->root, "./dir/sub/file.txt", out, 1024, &size, &err), 0);
    assert_int_equal(size, strlen(data));
    size_t len;
    _cleanup_free_ char *got = slurp_fd(out, &len);
    assert_string_equal(got, data);

    /* Overwrite replaces atomically, with the new mode. */
    assert_int_equal(clr_files_write(f->root, "dir/sub/file.txt", -1, "v2", 2, 0600, NULL, &err),
                     0);
    WS(f, p, "dir/sub/file.txt");
    _cleanup_free_ char *v2 = slurp(p, NULL);
    assert_string_equal(v2, "v2");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    /* An empty file is a file. */
    assert_int_equal(clr_files_write(f->root, "empty", -1, NULL, 0, 0644, NULL, &err), 0);
    WS(f, p, "empty");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_no_leftovers(f, "dir/sub");
    assert_no_leftovers(f, "");
}

static void test_write_streams_from_fd_and_enforces_limit(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    _cleanup_close_ int src = mem_fd();
    size_t big = 3 * 1024 * 1024 + 17;
    _cleanup_free_ char *buf = malloc(big);
    assert_non_null(buf);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char)(i * 131 + 7);
    assert_int_equal(write(src, buf, big), (ssize_t)big);

    assert_int_equal(lseek(src, 0, SEEK_SET), 0);
    assert_int_equal(clr_files_write(f->root, "big.bin", src, NULL, 0, 0644, NULL, &err), 0);
    char p[256];
    WS(f, p, "big.bin");
    size_t len;
    _cleanup_free_ char *got = slurp(p, &len);
    assert_int_equal(len, big);
    assert_memory_equal(got, buf, big);

    /* Over the limit: refused, the old file is kept, no temporary left. */
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_file_bytes = 1024 * 1024;
    assert_int_equal(lseek(src, 0, SEEK_SET), 0);
    assert_int_equal(clr_files_write(f->root, "big.bin", src, NULL, 0, 0644, &lim, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    _cleanup_free_ char *still = slurp(p, &len);
    assert_int_equal(len, big);
    assert_memory_equal(still, buf, big);
    assert_int_equal(lseek(src, 0, SEEK_SET), 0);
    assert_int_equal(clr_files_write(f->root, "new.bin", src, NULL, 0, 0644, &lim, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    WS(f, p, "new.bin");
    assert_false(exists(p));
    /* From memory: refused before anything is created. */
    assert_int_equal(clr_files_write(f->root, "mem.bin", -1, buf, big, 0644, &lim, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_no_leftovers(f, "");
    assert_int_equal(count_entries(f, ""), 1);

    /* Depth is bounded too. */
    lim.max_depth = 3;
    assert_int_equal(clr_files_write(f->root, "a/b/c/d", -1, "x", 1, 0644, &lim, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
}

static void test_write_refuses_directory_and_root(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "d");
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(clr_files_write(f->root, "d", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "directory"));
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(clr_files_write(f->root, "", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_write(f->root, ".", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_write(f->root, "newdir/", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    /* A file where a directory is needed. */
    WS(f, p, "file");
    put_file(p, "f", 0644);
    assert_int_equal(clr_files_write(f->root, "file/x", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_no_leftovers(f, "");
}

static void test_write_replaces_final_symlink_without_following(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "link");
    assert_int_equal(symlink(f->secret, p), 0);
    assert_int_equal(clr_files_write(f->root, "link", -1, "pwned", 5, 0644, NULL, &err), 0);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* the link was replaced... */
    assert_outside_untouched(f);      /* ...and its target never touched */
}

static void test_write_through_symlinked_directory_fails(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "evil");
    assert_int_equal(symlink(f->outside, p), 0);
    WS(f, p, "etc");
    assert_int_equal(symlink("/etc", p), 0);
    const char *targets[] = {"evil/secret", "evil/new", "evil/new/deeper/x", "etc/clr-test-x"};
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        assert_int_equal(clr_files_write(f->root, targets[i], -1, "x", 1, 0644, NULL, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_non_null(strstr(err.message, "symbolic link"));
    }
    assert_false(exists("/etc/clr-test-x"));
    assert_outside_untouched(f);
    /* A relative link that points back inside is not followed either. */
    WS(f, p, "real");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "alias");
    assert_int_equal(symlink("real", p), 0);
    assert_int_equal(clr_files_write(f->root, "alias/x", -1, "x", 1, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
}

static void test_read_refuses_symlinks(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "shadow");
    assert_int_equal(symlink("/etc/shadow", p), 0);
    WS(f, p, "etc");
    assert_int_equal(symlink("/etc", p), 0);
    WS(f, p, "decoy");
    assert_int_equal(symlink(f->secret, p), 0);
    const char *bad[] = {"shadow", "etc/shadow", "etc/passwd", "decoy"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        _cleanup_close_ int out = mem_fd();
        uint64_t size = 99;
        assert_int_equal(clr_files_read(f->root, bad[i], out, 1 << 20, &size, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_int_equal(size, 0);
        assert_int_equal(fd_size(out), 0);
    }
    assert_outside_untouched(f);
}

static void test_read_fifo_fails_fast(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "fifo");
    assert_int_equal(mkfifo(p, 0666), 0);
    /* If the read blocked on the FIFO, SIGALRM would end the test run as a failure. */
    alarm(5);
    _cleanup_close_ int out = mem_fd();
    assert_int_equal(clr_files_read(f->root, "fifo", out, 1 << 20, NULL, &err), -1);
    alarm(0);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "FIFO"));
    clr_file_entry *e = NULL;
    assert_int_equal(clr_files_stat(&e, f->root, "fifo", &err), 0);
    assert_int_equal(e->type, CLR_FILE_OTHER);
    assert_string_equal(clr_files_type_name(e->type), "other");
    clr_files_entries_free(e, 1);
}

static void test_read_limits_and_types(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    char p[256];
    WS(f, p, "hundred");
    char hundred[101];
    memset(hundred, 'h', 100);
    hundred[100] = '\0';
    put_file(p, hundred, 0644);
    _cleanup_close_ int out = mem_fd();
    assert_int_equal(clr_files_read(f->root, "hundred", out, 10, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_int_equal(fd_size(out), 0);
    assert_int_equal(clr_files_read(f->root, "hundred", out, 100, NULL, &err), 0);
    assert_int_equal(fd_size(out), 100);

    WS(f, p, "d");
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(clr_files_read(f->root, "d", out, 100, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "directory"));
    assert_int_equal(clr_files_read(f->root, "", out, 100, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_read(f->root, "missing", out, 100, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(clr_files_read(f->root, "hundred/x", out, 100, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);

    /* A huge sparse file costs nothing to refuse. */
    WS(f, p, "sparse");
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)64 << 30), 0);
    close(fd);
    assert_int_equal(clr_files_read(f->root, "sparse", out, 1 << 20, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_write_read_roundtrip),
        T(test_write_streams_from_fd_and_enforces_limit),
        T(test_write_refuses_directory_and_root),
        T(test_write_replaces_final_symlink_without_following),
        T(test_write_through_symlinked_directory_fails),
        T(test_read_refuses_symlinks),
        T(test_read_fifo_fails_fast),
        T(test_read_limits_and_types),
#undef T
    };
    return cmocka_run_group_tests_name("files_rw", tests, NULL, NULL);
}
