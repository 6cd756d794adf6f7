/* lib/files_path.c: which paths are accepted, and that no path (also one swapped for a
 * symlink between or during calls) leads an operation out of the workspace. */
#include "test_files_fixture.h"

#include "files_path_internal.h"

/* ---- paths -------------------------------------------------------------------------------- */

static void test_check_path_accepts(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    const char *ok[] = {"a", "a/b", "a/b/", "", ".", "./", "./a", "a/./b", ".hidden", "..a", "a..",
                        "a b/ü"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (clr_files_check_path(ok[i], &err) != 0)
            fail_msg("'%s' refused: %s", ok[i], err.message);
    }
    char name[256];
    memset(name, 'n', 255);
    name[255] = '\0';
    assert_int_equal(clr_files_check_path(name, &err), 0);
    /* 4096 bytes exactly: 16 components of 254 and their separators, then 16 more bytes. */
    char longp[4097];
    size_t o = 0;
    for (int i = 0; i < 16; i++, o += 255) {
        memset(longp + o, 'x', 254);
        longp[o + 254] = '/';
    }
    memset(longp + o, 'y', 4096 - o);
    longp[4096] = '\0';
    assert_int_equal(strlen(longp), 4096);
    assert_int_equal(clr_files_check_path(longp, &err), 0);
}

static void test_check_path_refuses(void **state)
{
    (void)state;
    const char *bad[] = {"..", "../x", "a/..", "a/../../b", "a/../b", "/etc/passwd", "/",
                         "a//b", "//", "a//", "./../x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clr_error err = CLR_ERROR_INIT;
        if (clr_files_check_path(bad[i], &err) == 0)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_true(strlen(err.message) > 10);
    }
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_check_path("/etc/passwd", &err), -1);
    assert_non_null(strstr(err.message, "absolute"));
    assert_int_equal(clr_files_check_path("a/../../b", &err), -1);
    assert_non_null(strstr(err.message, ".."));
    assert_int_equal(clr_files_check_path_n("a\0/etc/passwd", 13, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "NUL"));
    assert_int_equal(clr_files_check_path(NULL, &err), -1);
    /* A length, not a string: the message quotes only the len bytes given (found by
     * fuzz/fuzz_files_path.c, where printing "%.512s" read past the buffer). */
    assert_int_equal(clr_files_check_path_n("/absXXXX", 4, &err), -1);
    assert_non_null(strstr(err.message, "'/abs'"));
    assert_int_equal(clr_files_check_path_n("a/../bXXXX", 6, &err), -1);
    assert_non_null(strstr(err.message, "'a/../b'"));

    char name[257];
    memset(name, 'n', 256);
    name[256] = '\0';
    assert_int_equal(clr_files_check_path(name, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    char *longp = malloc(5000);
    assert_non_null(longp);
    for (size_t i = 0; i < 4097; i++)
        longp[i] = i % 100 == 99 ? '/' : 'z';
    longp[4097] = '\0';
    assert_int_equal(clr_files_check_path(longp, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    free(longp);
}

static void test_operations_refuse_escaping_paths(void **state)
{
    fixture *f = *state;
    const char *bad[] = {"../outside/secret", "/etc/passwd", "a/../../outside/secret", ".."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clr_error err = CLR_ERROR_INIT;
        _cleanup_close_ int out = mem_fd();
        assert_int_equal(clr_files_read(f->root, bad[i], out, 1 << 20, NULL, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_int_equal(fd_size(out), 0);
        assert_int_equal(clr_files_write(f->root, bad[i], -1, "x", 1, 0644, NULL, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_int_equal(clr_files_delete(f->root, bad[i], true, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        clr_file_entry *v = NULL;
        size_t n = 0;
        assert_int_equal(clr_files_list(&v, &n, f->root, bad[i], 10, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_int_equal(clr_files_create_tar(f->root, bad[i], out, NULL, NULL, &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        assert_int_equal(fd_size(out), 0);
    }
    assert_outside_untouched(f);
}

/* ---- swaps -------------------------------------------------------------------------------- */

static void test_directory_swapped_for_symlink_between_calls(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_write(f->root, "d/f", -1, "ok", 2, 0644, NULL, &err), 0);
    _cleanup_close_ int out = mem_fd();
    assert_int_equal(clr_files_read(f->root, "d/f", out, 100, NULL, &err), 0);

    char d[256], old[256];
    WS(f, d, "d");
    WS(f, old, "d.old");
    assert_int_equal(rename(d, old), 0);
    assert_int_equal(symlink(f->outside, d), 0);

    _cleanup_close_ int out2 = mem_fd();
    assert_int_equal(clr_files_read(f->root, "d/secret", out2, 100, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fd_size(out2), 0);
    assert_int_equal(clr_files_write(f->root, "d/f", -1, "pwned", 5, 0644, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, f->root, "d", 100, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_delete(f->root, "d/secret", false, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_create_tar(f->root, "d/secret", out2, NULL, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_outside_untouched(f);
    assert_int_equal(clr_files_delete(f->root, "d", true, &err), 0);
    assert_false(exists(d));
    assert_outside_untouched(f);
}

struct flipper {
    const fixture *f;
    atomic_int stop;
    atomic_ulong flips;
    int error; /* errno of an exchange that failed */
};

/* Keeps swapping ws/flip between a real directory and a symlink to the host directory, in one
 * atomic exchange: there is always something at ws/flip, and an operation is as likely to meet
 * the link as the directory. */
static void *flip_loop(void *arg)
{
    struct flipper *fl = arg;
    char flip[256], other[256];
    pathf(flip, sizeof(flip), "%s/flip", fl->f->ws);
    pathf(other, sizeof(other), "%s/.flip-other", fl->f->ws);
    while (!atomic_load(&fl->stop)) {
        if (renameat2(AT_FDCWD, flip, AT_FDCWD, other, RENAME_EXCHANGE) < 0) {
            fl->error = errno;
            return NULL;
        }
        atomic_fetch_add(&fl->flips, 1);
    }
    return NULL;
}

static void test_concurrent_symlink_swaps_never_escape(void **state)
{
    fixture *f = *state;
    struct flipper fl = {.f = f};
    char p[256];
    WS(f, p, "flip");
    assert_int_equal(mkdir(p, 0777), 0);
    WS(f, p, ".flip-other");
    assert_int_equal(symlink(f->outside, p), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, flip_loop, &fl), 0);
    /* Until both sides of the race have run a while: the swapper has swapped many times, and
     * the operations have met both the real directory (writes landed) and the host's link
     * (writes refused). On a loaded host that takes longer, not differently. A swapper that
     * stopped (it cannot exchange here) fails the test by its count. */
    int ok_writes = 0, refused_writes = 0, i = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;; i++) {
        clr_error err = CLR_ERROR_INIT;
        if (clr_files_write(f->root, "flip/x", -1, "pwned", 5, 0644, NULL, &err) == 0)
            ok_writes++;
        else if (err.code == CLR_E_INVALID)
            refused_writes++;
        clr_files_write(f->root, "flip/secret", -1, "pwned", 5, 0644, NULL, &err);
        _cleanup_close_ int out = mem_fd();
        /* Only the host directory holds a "secret": reading it would be an escape. */
        assert_int_equal(clr_files_read(f->root, "flip/secret", out, 100, NULL, &err) == 0 &&
                             fd_size(out) == 12,
                         0);
        clr_files_delete(f->root, "flip/secret", false, &err);
        clr_file_entry *v = NULL;
        size_t n = 0;
        if (clr_files_list(&v, &n, f->root, "flip", 100, &err) == 0) {
            /* Our own "secret" is 5 bytes; the host's is 12. */
            for (size_t k = 0; k < n; k++)
                assert_false(strcmp(v[k].name, "secret") == 0 && v[k].size == 12);
            clr_files_entries_free(v, n);
        }
        if (i >= 200 && atomic_load(&fl.flips) >= 500 && ok_writes >= 50 && refused_writes >= 50)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 60)
            break;
    }
    atomic_store(&fl.stop, 1);
    pthread_join(t, NULL);
    print_message("%d rounds, %lu flips, %d writes landed in the real directory, %d refused\n", i,
                  atomic_load(&fl.flips), ok_writes, refused_writes);
    if (fl.error)
        fail_msg("exchanging the directory and the link: %s", strerror(fl.error));
    if (i < 200 || atomic_load(&fl.flips) < 500 || ok_writes < 50 || refused_writes < 50)
        fail_msg("the race did not run both ways within 60 s");
    assert_outside_untouched(f);
}

/* The confined lookup every files module and repository admission (repoadmit.c) use: a
 * directory beneath opens, "" is the directory itself, and a symlink anywhere, "..", or a file
 * where a directory is wanted are refused with the errno that says which. */
static void test_open_beneath_values(void **state)
{
    fixture *f = *state;
    char p[256];
    WS(f, p, "a");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "a/b");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "a/file");
    put_file(p, "x", 0644);
    WS(f, p, "a/up");
    assert_int_equal(symlink("..", p), 0);
    WS(f, p, "out");
    assert_int_equal(symlink(f->outside, p), 0);
    /* Positive controls: a directory two levels down, and "" as the root itself. */
    int fd = clr_files_open_beneath(f->root, "a/b", O_PATH | O_DIRECTORY);
    assert_true(fd >= 0);
    struct stat st, want;
    WS(f, p, "a/b");
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(stat(p, &want), 0);
    assert_int_equal(st.st_ino, want.st_ino);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(fd);
    fd = clr_files_open_beneath(f->root, "", O_PATH | O_DIRECTORY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(stat(f->ws, &want), 0);
    assert_int_equal(st.st_ino, want.st_ino);
    close(fd);
    /* A final symlink is never followed: with O_DIRECTORY the kernel says ENOTDIR, with O_PATH
     * alone the descriptor is the link itself (how clr_files_read_ext's probe sees one). */
    assert_int_equal(clr_files_open_beneath(f->root, "out", O_PATH | O_DIRECTORY), -ENOTDIR);
    fd = clr_files_open_beneath(f->root, "out", O_PATH);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    close(fd);
    assert_int_equal(clr_files_open_beneath(f->root, "out", O_RDONLY), -ELOOP);
    assert_int_equal(clr_files_open_beneath(f->root, "out/secret", O_RDONLY), -ELOOP);
    assert_int_equal(clr_files_open_beneath(f->root, "a/up/a", O_PATH | O_DIRECTORY), -ELOOP);
    assert_int_equal(clr_files_open_beneath(f->root, "..", O_PATH | O_DIRECTORY), -EXDEV);
    assert_int_equal(clr_files_open_beneath(f->root, "a/../../outside", O_PATH), -EXDEV);
    assert_int_equal(clr_files_open_beneath(f->root, "a/file", O_PATH | O_DIRECTORY), -ENOTDIR);
    assert_int_equal(clr_files_open_beneath(f->root, "a/none", O_PATH), -ENOENT);
    assert_secret_intact(f);
}

/* The root descriptor: a directory opens; what is missing, not a directory, or a symlink to a
 * directory is refused with the code that says which. */
static void test_open_root_refusals(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    int fd = -1;
    /* Positive control: the workspace itself opens, as a directory. */
    assert_int_equal(clr_files_open_root(&fd, f->ws, &err), 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    close(fd);
    char p[256];
    pathf(p, sizeof(p), "%s/missing", f->base);
    fd = 7;
    assert_int_equal(clr_files_open_root(&fd, p, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(fd, -1);
    assert_int_equal(clr_files_open_root(&fd, f->secret, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "not a directory"));
    pathf(p, sizeof(p), "%s/link-to-ws", f->base);
    assert_int_equal(symlink(f->ws, p), 0);
    assert_int_equal(clr_files_open_root(&fd, p, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fd, -1);
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        cmocka_unit_test(test_check_path_accepts),
        cmocka_unit_test(test_check_path_refuses),
        T(test_operations_refuse_escaping_paths),
        T(test_directory_swapped_for_symlink_between_calls),
        T(test_concurrent_symlink_swaps_never_escape),
        T(test_open_root_refusals),
        T(test_open_beneath_values),
#undef T
    };
    return cmocka_run_group_tests_name("files_path", tests, NULL, NULL);
}
