/* lib/files_archive.c: a tree archived and extracted again is the same tree; limits are
 * enforced before a byte is written. */
#include "test_files_fixture.h"

/* ---- creating archives -------------------------------------------------------------------- */

static void build_tree(fixture *f)
{
    char p[256];
    WS(f, p, "src");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "src/a.txt");
    put_file(p, "alpha\n", 0644);
    WS(f, p, "src/bin");
    assert_int_equal(mkdir(p, 0750), 0);
    WS(f, p, "src/bin/run.sh");
    put_file(p, "#!/bin/sh\nexit 0\n", 0755);
    WS(f, p, "src/sub");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "src/sub/deep");
    assert_int_equal(mkdir(p, 0700), 0);
    WS(f, p, "src/sub/deep/file");
    put_file(p, "deep data", 0600);
    WS(f, p, "src/empty");
    assert_int_equal(mkdir(p, 0711), 0);
    WS(f, p, "src/link");
    assert_int_equal(symlink("a.txt", p), 0);
    WS(f, p, "src/shadow");
    assert_int_equal(symlink("/etc/shadow", p), 0);
    WS(f, p, "src/outdir");
    assert_int_equal(symlink(f->outside, p), 0);
    WS(f, p, "src/fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
}

static void compare_node(fixture *f, const char *a_rel, const char *b_rel)
{
    char a[512], b[512];
    WS(f, a, a_rel);
    WS(f, b, b_rel);
    struct stat sa, sb;
    assert_int_equal(lstat(a, &sa), 0);
    if (lstat(b, &sb) != 0)
        fail_msg("%s missing after the round trip", b_rel);
    assert_int_equal(sa.st_mode & S_IFMT, sb.st_mode & S_IFMT);
    if (S_ISLNK(sa.st_mode)) {
        char ta[256], tb[256];
        ssize_t na = readlink(a, ta, sizeof(ta));
        ssize_t nb = readlink(b, tb, sizeof(tb));
        assert_int_equal(na, nb);
        assert_memory_equal(ta, tb, (size_t)na);
        return;
    }
    assert_int_equal(sa.st_mode & 07777, sb.st_mode & 07777);
    if (S_ISREG(sa.st_mode)) {
        size_t la, lb;
        _cleanup_free_ char *ca = slurp(a, &la);
        _cleanup_free_ char *cb = slurp(b, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(ca, cb, la);
        assert_int_equal(sa.st_mtime, sb.st_mtime);
    }
}

static void test_create_tar_round_trip(void **state)
{
    fixture *f = *state;
    build_tree(f);
    _cleanup_close_ int out = mem_fd();
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    alarm(10); /* the FIFO must be skipped, not opened for reading */
    if (clr_files_create_tar(f->root, "src", out, NULL, &rep, &err) != 0)
        fail_msg("%s", err.message);
    alarm(0);
    assert_int_equal(rep.skipped, 1); /* the FIFO */
    assert_int_equal(rep.files, 3);
    assert_int_equal(rep.dirs, 4);
    assert_int_equal(rep.symlinks, 3);
    assert_int_equal(rep.entries, 10);
    assert_int_equal(rep.bytes, 6 + 17 + 9);

    /* Names are relative to the directory asked for, and the format is pax. */
    assert_int_equal(lseek(out, 0, SEEK_SET), 0);
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    assert_int_equal(archive_read_open_fd(a, out, 10240), ARCHIVE_OK);
    struct archive_entry *e;
    int seen = 0;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        assert_true(strncmp(name, "src", 3) != 0);
        assert_true(strcmp(name, "fifo") != 0);
        assert_true(archive_format(a) == ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
        seen++;
    }
    archive_read_free(a);
    assert_int_equal(seen, 10);

    assert_int_equal(lseek(out, 0, SEEK_SET), 0);
    clr_files_report xrep;
    if (clr_files_extract_tar(f->root, "dst", out, NULL, &xrep, &err) != 0)
        fail_msg("%s", err.message);
    assert_int_equal(xrep.files, 3);
    assert_int_equal(xrep.symlinks, 3);
    const char *nodes[] = {"a.txt", "bin",   "bin/run.sh", "sub",    "sub/deep", "sub/deep/file",
                           "empty", "link", "shadow",     "outdir"};
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
        char ra[128], rb[128];
        pathf(ra, sizeof(ra), "src/%s", nodes[i]);
        pathf(rb, sizeof(rb), "dst/%s", nodes[i]);
        compare_node(f, ra, rb);
    }
    char p[256];
    WS(f, p, "dst/fifo");
    assert_false(exists(p));
    assert_int_equal(count_entries(f, "dst"), 7);
    assert_outside_untouched(f);

    /* A single file is archived under its own name. */
    _cleanup_close_ int one = mem_fd();
    assert_int_equal(clr_files_create_tar(f->root, "src/sub/deep/file", one, NULL, &rep, &err), 0);
    assert_int_equal(rep.entries, 1);
    assert_int_equal(lseek(one, 0, SEEK_SET), 0);
    assert_int_equal(clr_files_extract_tar(f->root, "single", one, NULL, NULL, &err), 0);
    compare_node(f, "src/sub/deep/file", "single/file");
    /* The whole workspace. */
    _cleanup_close_ int all = mem_fd();
    assert_int_equal(clr_files_create_tar(f->root, "", all, NULL, &rep, &err), 0);
    assert_true(rep.entries > 20);
}

static void test_create_tar_refusals_and_limits(void **state)
{
    fixture *f = *state;
    build_tree(f);
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    _cleanup_close_ int out = mem_fd();
    /* Over a limit: refused before a byte is written. */
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_entries = 3;
    assert_int_equal(clr_files_create_tar(f->root, "src", out, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_int_equal(fd_size(out), 0);
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_file_bytes = 8;
    assert_int_equal(clr_files_create_tar(f->root, "src", out, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_true(rep.failed_entry[0] != '\0');
    assert_int_equal(fd_size(out), 0);
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_total_bytes = 20;
    assert_int_equal(clr_files_create_tar(f->root, "src", out, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_depth = 2;
    assert_int_equal(clr_files_create_tar(f->root, "src", out, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_int_equal(fd_size(out), 0);
    /* Special files and links on the way. */
    assert_int_equal(clr_files_create_tar(f->root, "src/fifo", out, NULL, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "FIFO"));
    assert_int_equal(clr_files_create_tar(f->root, "src/outdir/secret", out, NULL, &rep, &err),
                     -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_files_create_tar(f->root, "nope", out, NULL, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(fd_size(out), 0);
    /* A link asked for by name is archived as the link, never its target. */
    assert_int_equal(clr_files_create_tar(f->root, "src/outdir", out, NULL, &rep, &err), 0);
    assert_int_equal(rep.symlinks, 1);
    assert_int_equal(rep.entries, 1);
    size_t len;
    _cleanup_free_ char *bytes = slurp_fd(out, &len);
    assert_true(len < 10240 * 2);
    assert_null(memmem(bytes, len, "host secret", 11));
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_create_tar_round_trip),
        T(test_create_tar_refusals_and_limits),
#undef T
    };
    return cmocka_run_group_tests_name("files_archive", tests, NULL, NULL);
}
