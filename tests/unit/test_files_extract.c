/* lib/files_extract.c: hostile archives are refused whole, before a byte lands; good ones
 * are extracted all or nothing. */
#include "test_files_fixture.h"

/* ---- extracting archives ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    unsigned int type; /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, ... */
    const char *data;  /* file content, or symlink target */
    const char *hardlink;
    unsigned int perm;
} tar_spec;

/* Writes an archive of the given entries into a fresh memfd, rewound. */
static int make_tar(const tar_spec *spec, size_t n, bool gzip)
{
    int fd = mem_fd();
    struct archive *a = archive_write_new();
    assert_non_null(a);
    assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    if (gzip)
        assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, spec[i].name);
        archive_entry_set_filetype(e, spec[i].type);
        archive_entry_set_perm(e, spec[i].perm ? spec[i].perm : 0644);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        archive_entry_set_mtime(e, 1700000000, 0);
        size_t len = 0;
        if (spec[i].type == AE_IFREG && spec[i].data && !spec[i].hardlink)
            len = strlen(spec[i].data);
        archive_entry_set_size(e, (la_int64_t)len);
        if (spec[i].type == AE_IFLNK)
            archive_entry_set_symlink(e, spec[i].data);
        if (spec[i].hardlink)
            archive_entry_set_hardlink(e, spec[i].hardlink);
        if (spec[i].type == AE_IFCHR || spec[i].type == AE_IFBLK)
            archive_entry_set_rdev(e, makedev(1, 3));
        assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
        if (len)
            assert_int_equal(archive_write_data(a, spec[i].data, len), (la_ssize_t)len);
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* Extracts spec into dir and expects a failure with code, naming what in the message. */
static void expect_refused(fixture *f, const tar_spec *spec, size_t n, const clr_files_limits *lim,
                           clr_error_code code, const char *what)
{
    _cleanup_close_ int tar = make_tar(spec, n, false);
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    size_t before = count_entries(f, "");
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, lim, &rep, &err), -1);
    if (err.code != code || (what && !strstr(err.message, what)))
        fail_msg("expected %s with '%s', got %s: %s", clr_error_code_name(code),
                 what ? what : "", clr_error_code_name(err.code), err.message);
    /* All or nothing: the workspace is as it was, with no staging directory left. */
    assert_int_equal(count_entries(f, ""), before);
    assert_no_leftovers(f, "");
    assert_outside_untouched(f);
}

static void test_tar_refuses_escapes(void **state)
{
    fixture *f = *state;
    const tar_spec dotdot[] = {{"ok.txt", AE_IFREG, "fine", NULL, 0},
                               {"../evil", AE_IFREG, "evil", NULL, 0}};
    expect_refused(f, dotdot, 2, NULL, CLR_E_INVALID, "../evil");
    char p[256];
    pathf(p, sizeof(p), "%s/evil", f->base);
    assert_false(exists(p));
    const tar_spec nested[] = {{"a/../../outside/secret", AE_IFREG, "evil", NULL, 0}};
    expect_refused(f, nested, 1, NULL, CLR_E_INVALID, "..");
    const tar_spec abs[] = {{"/abs", AE_IFREG, "evil", NULL, 0}};
    expect_refused(f, abs, 1, NULL, CLR_E_INVALID, "absolute");
    assert_false(exists("/abs"));
    const tar_spec abs2[] = {{"ok", AE_IFDIR, NULL, NULL, 0755},
                             {"/tmp/clr-test-abs-escape", AE_IFREG, "evil", NULL, 0}};
    expect_refused(f, abs2, 2, NULL, CLR_E_INVALID, "absolute");
    assert_false(exists("/tmp/clr-test-abs-escape"));
}

static void test_tar_refuses_hardlinks_and_special_files(void **state)
{
    fixture *f = *state;
    char target[256];
    pathf(target, sizeof(target), "%s", f->secret);
    const tar_spec hard[] = {{"a", AE_IFREG, "a", NULL, 0}, {"b", AE_IFREG, NULL, "a", 0}};
    expect_refused(f, hard, 2, NULL, CLR_E_INVALID, "hard link");
    const tar_spec hard_out[] = {{"b", AE_IFREG, NULL, target, 0}};
    expect_refused(f, hard_out, 1, NULL, CLR_E_INVALID, "hard link");
    const tar_spec chr[] = {{"a", AE_IFREG, "a", NULL, 0}, {"null", AE_IFCHR, NULL, NULL, 0666}};
    expect_refused(f, chr, 2, NULL, CLR_E_INVALID, "character device");
    const tar_spec blk[] = {{"sda", AE_IFBLK, NULL, NULL, 0666}};
    expect_refused(f, blk, 1, NULL, CLR_E_INVALID, "block device");
    const tar_spec fifo[] = {{"fifo", AE_IFIFO, NULL, NULL, 0666}};
    expect_refused(f, fifo, 1, NULL, CLR_E_INVALID, "FIFO");

    /* The refused entry is reported by name. */
    _cleanup_close_ int tar = make_tar(chr, 2, false);
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, NULL, &rep, &err), -1);
    assert_string_equal(rep.failed_entry, "null");
    assert_int_equal(rep.entries, 2);
}

static void test_tar_entry_through_symlink_fails(void **state)
{
    fixture *f = *state;
    const tar_spec spec[] = {{"link", AE_IFLNK, f->outside, NULL, 0777},
                             {"link/x", AE_IFREG, "pwned", NULL, 0}};
    expect_refused(f, spec, 2, NULL, CLR_E_INVALID, "symlink");
    const tar_spec spec2[] = {{"link", AE_IFLNK, f->outside, NULL, 0777},
                              {"link/new/x", AE_IFREG, "pwned", NULL, 0}};
    expect_refused(f, spec2, 2, NULL, CLR_E_INVALID, "symlink");
    const tar_spec spec3[] = {{"dir", AE_IFDIR, NULL, NULL, 0755},
                              {"dir/link", AE_IFLNK, "..", NULL, 0777},
                              {"dir/link/escape", AE_IFREG, "pwned", NULL, 0}};
    expect_refused(f, spec3, 3, NULL, CLR_E_INVALID, "symlink");
    /* A link already in the workspace is not followed either: the conflict is refused. */
    char p[256];
    WS(f, p, "wlink");
    assert_int_equal(symlink(f->outside, p), 0);
    const tar_spec spec4[] = {{"wlink/x", AE_IFREG, "pwned", NULL, 0}};
    expect_refused(f, spec4, 1, NULL, CLR_E_CONFLICT, "wlink");
}

static void test_tar_symlinks_extracted_as_symlinks(void **state)
{
    fixture *f = *state;
    const tar_spec spec[] = {{"shadow", AE_IFLNK, "/etc/shadow", NULL, 0777},
                             {"up", AE_IFLNK, "../../..", NULL, 0777}};
    _cleanup_close_ int tar = make_tar(spec, 2, false);
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, NULL, &rep, &err), 0);
    assert_int_equal(rep.symlinks, 2);
    char p[256], t[256];
    WS(f, p, "shadow");
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(st.st_uid, SANDBOX_UID);
    ssize_t n = readlink(p, t, sizeof(t) - 1);
    assert_true(n > 0);
    t[n] = '\0';
    assert_string_equal(t, "/etc/shadow");
    assert_no_leftovers(f, "");
}

/* An archive whose single entry declares size bytes, written with a sparse map so the archive
 * itself stays small (the real attack: a tiny upload claiming a giant file). */
static int make_sparse_tar(int64_t size)
{
    int fd = mem_fd();
    struct archive *a = archive_write_new();
    assert_int_equal(archive_write_set_format_pax(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "giant.img");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, size);
    archive_entry_sparse_add_entry(e, 0, 16);
    archive_entry_sparse_add_entry(e, size - 16, 16);
    assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
    /* The logical stream: pax drops what falls in holes. Only a few MiB are fed, the rest of
     * the logical size is declared; the writer pads what we do not give. */
    char block[4096];
    memset(block, 'S', sizeof(block));
    assert_true(archive_write_data(a, block, 16) == 16);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* Writes only the header of an entry declaring size bytes: the data never follows. */
struct cut_writer {
    int fd;
    bool cut;
};

static la_ssize_t cut_write(struct archive *a, void *p, const void *buf, size_t n)
{
    (void)a;
    struct cut_writer *w = p;
    if (w->cut)
        return -1;
    return write(w->fd, buf, n);
}

static int make_header_only_tar(int64_t size)
{
    struct cut_writer w = {.fd = mem_fd()};
    struct archive *a = archive_write_new();
    assert_int_equal(archive_write_set_format_pax(a), ARCHIVE_OK);
    assert_int_equal(archive_write_set_bytes_per_block(a, 0), ARCHIVE_OK);
    assert_int_equal(archive_write_open(a, &w, NULL, cut_write, NULL), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "huge.bin");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, size);
    assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
    archive_entry_free(e);
    w.cut = true; /* the 2 GiB of padding libarchive would now write go nowhere */
    archive_write_free(a);
    assert_int_equal(lseek(w.fd, 0, SEEK_SET), 0);
    return w.fd;
}

static void test_tar_giant_sparse_entry_refused_before_writing(void **state)
{
    fixture *f = *state;
    const int64_t two_gib = (int64_t)2 << 30;
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_file_bytes = 1 << 20;

    /* Positive control: a write of a mebibyte shows in what this process wrote. */
    struct cost start = cost_now();
    char written[256];
    pathf(written, sizeof(written), "%s/written", f->base);
    int wfd = open(written, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(wfd >= 0);
    static const char mib[1 << 20];
    assert_int_equal(write(wfd, mib, sizeof(mib)), sizeof(mib));
    close(wfd);
    unlink(written);
    assert_true(cost_now().wchar - start.wchar >= sizeof(mib));

    int tars[2] = {make_sparse_tar(two_gib), make_header_only_tar(two_gib)};
    for (int i = 0; i < 2; i++) {
        assert_true(fd_size(tars[i]) < 1 << 20); /* the upload is small... */
        clr_error err = CLR_ERROR_INIT;
        clr_files_report rep;
        struct cost before = cost_now();
        assert_int_equal(clr_files_extract_tar(f->root, "", tars[i], &lim, &rep, &err), -1);
        struct cost after = cost_now();
        assert_int_equal(err.code, CLR_E_LIMIT);
        assert_non_null(strstr(err.message, "2147483648"));
        assert_int_equal(rep.bytes, 0); /* ...and nothing of it was accepted */
        /* Refused on the header: no byte of the 2 GiB written, and no time spent skipping
         * through them (writing or zero-filling 2 GiB costs seconds of CPU). */
        double cpu = (double)(after.cpu_ns - before.cpu_ns) / 1e9;
        print_message("refusal: %.4f s of CPU, %" PRIu64 " bytes written\n", cpu,
                      after.wchar - before.wchar);
        assert_true(after.wchar - before.wchar < lim.max_file_bytes);
        assert_true(cpu < 1.0);
        assert_int_equal(count_entries(f, ""), 0);
        close(tars[i]);
    }

    /* Within the limits, the sparse file is extracted sparse: 2 GiB logical, little disk. */
    lim.max_file_bytes = (uint64_t)4 << 30;
    _cleanup_close_ int tar = make_sparse_tar(two_gib);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, &lim, NULL, &err), 0);
    char p[256];
    WS(f, p, "giant.img");
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_size, two_gib);
    assert_true(st.st_blocks * 512 < 16 << 20);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    char head[16];
    assert_int_equal(read(fd, head, 16), 16);
    assert_memory_equal(head, "SSSSSSSSSSSSSSSS", 16);
    close(fd);
}

static void test_tar_limits(void **state)
{
    fixture *f = *state;
    /* Entries: 11 against 10 (the same check stops 100001 against the default 100000). */
    tar_spec many[11];
    char names[11][16];
    for (int i = 0; i < 11; i++) {
        snprintf(names[i], sizeof(names[i]), "f%02d", i);
        many[i] = (tar_spec){names[i], AE_IFREG, "x", NULL, 0};
    }
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_entries = 10;
    expect_refused(f, many, 11, &lim, CLR_E_LIMIT, "10 entries");
    {
        _cleanup_close_ int tar = make_tar(many, 10, false);
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_files_extract_tar(f->root, "ten", tar, &lim, NULL, &err), 0);
        assert_int_equal(count_entries(f, "ten"), 10);
    }
    /* Total bytes. */
    char kb[401];
    memset(kb, 'k', 400);
    kb[400] = '\0';
    const tar_spec three[] = {{"a", AE_IFREG, kb, NULL, 0}, {"b", AE_IFREG, kb, NULL, 0},
                              {"c", AE_IFREG, kb, NULL, 0}};
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_total_bytes = 1000;
    expect_refused(f, three, 3, &lim, CLR_E_LIMIT, "in total");
    /* Per file. */
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_file_bytes = 399;
    expect_refused(f, three, 3, &lim, CLR_E_LIMIT, "per file");
    /* Depth. */
    const tar_spec deep[] = {{"1/2/3/4/5", AE_IFREG, "x", NULL, 0}};
    lim = (clr_files_limits)CLR_FILES_LIMITS_INIT;
    lim.max_depth = 4;
    expect_refused(f, deep, 1, &lim, CLR_E_LIMIT, "deep");
    lim.max_depth = 5;
    _cleanup_close_ int tar = make_tar(deep, 1, false);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, &lim, NULL, &err), 0);
}

static void test_tar_gzip_extracts(void **state)
{
    fixture *f = *state;
    const tar_spec spec[] = {{"./", AE_IFDIR, NULL, NULL, 0755},
                             {"./proj", AE_IFDIR, NULL, NULL, 0750},
                             {"./proj/main.c", AE_IFREG, "int main(void){return 0;}\n", NULL, 0644},
                             {"./proj/run.sh", AE_IFREG, "#!/bin/sh\necho hi\n", NULL, 06755},
                             {"./proj/link", AE_IFLNK, "main.c", NULL, 0777},
                             {"implicit/parent/file", AE_IFREG, "deep\n", NULL, 0600}};
    _cleanup_close_ int tar = make_tar(spec, 6, true);
    unsigned char magic[2];
    assert_int_equal(pread(tar, magic, 2, 0), 2);
    assert_true(magic[0] == 0x1f && magic[1] == 0x8b);
    clr_error err = CLR_ERROR_INIT;
    clr_files_report rep;
    if (clr_files_extract_tar(f->root, "into/here", tar, NULL, &rep, &err) != 0)
        fail_msg("%s", err.message);
    assert_int_equal(rep.entries, 6);
    assert_int_equal(rep.files, 3);
    assert_int_equal(rep.dirs, 1);
    assert_int_equal(rep.symlinks, 1);
    assert_string_equal(rep.failed_entry, "");

    char p[256];
    struct stat st;
    WS(f, p, "into/here/proj/main.c");
    _cleanup_free_ char *c = slurp(p, NULL);
    assert_string_equal(c, "int main(void){return 0;}\n");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_uid, SANDBOX_UID);
    assert_int_equal(st.st_gid, SANDBOX_GID);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_mtime, 1700000000);
    WS(f, p, "into/here/proj/run.sh");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755); /* set-id bits dropped */
    WS(f, p, "into/here/proj");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);
    assert_int_equal(st.st_uid, SANDBOX_UID);
    WS(f, p, "into/here/implicit/parent");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_uid, SANDBOX_UID);
    WS(f, p, "into/here/proj/link");
    char t[64];
    ssize_t n = readlink(p, t, sizeof(t) - 1);
    assert_int_equal(n, 6);
    t[n] = '\0';
    assert_string_equal(t, "main.c");
    assert_no_leftovers(f, "into/here");
}

static void test_tar_garbage_refused(void **state)
{
    fixture *f = *state;
    _cleanup_close_ int fd = mem_fd();
    char junk[3000];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 7919 % 251);
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_extract_tar(f->root, "", fd, NULL, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_no_leftovers(f, "");
    /* A truncated archive fails as a whole too: the first file is not left behind. */
    const tar_spec spec[] = {{"first", AE_IFREG, "complete", NULL, 0},
                             {"second", AE_IFREG, "cut short in the middle of its data", NULL, 0}};
    _cleanup_close_ int tar = make_tar(spec, 2, false);
    assert_int_equal(ftruncate(tar, 512 * 3 + 10), 0);
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, NULL, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(count_entries(f, ""), 0);
}

static void test_tar_merges_into_existing(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_write(f->root, "d/old", -1, "old", 3, 0644, NULL, &err), 0);
    assert_int_equal(clr_files_write(f->root, "top", -1, "before", 6, 0644, NULL, &err), 0);
    const tar_spec spec[] = {{"d/new", AE_IFREG, "new", NULL, 0},
                             {"top", AE_IFREG, "after", NULL, 0}};
    _cleanup_close_ int tar = make_tar(spec, 2, false);
    assert_int_equal(clr_files_extract_tar(f->root, "", tar, NULL, NULL, &err), 0);
    char p[256];
    WS(f, p, "d/old");
    assert_true(exists(p));
    WS(f, p, "d/new");
    _cleanup_free_ char *n = slurp(p, NULL);
    assert_string_equal(n, "new");
    WS(f, p, "top");
    _cleanup_free_ char *t = slurp(p, NULL);
    assert_string_equal(t, "after");
    assert_no_leftovers(f, "");
    assert_no_leftovers(f, "d");

    /* A type clash is found before anything moves: d/newer must not appear. */
    const tar_spec clash[] = {{"d/newer", AE_IFREG, "x", NULL, 0},
                              {"top/x", AE_IFREG, "x", NULL, 0}};
    expect_refused(f, clash, 2, NULL, CLR_E_CONFLICT, "top");
    WS(f, p, "d/newer");
    assert_false(exists(p));
}

int main(void)
{
    /* A FIFO that blocked us would end the run here, loudly. */
    signal(SIGALRM, SIG_DFL);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_tar_refuses_escapes),
        T(test_tar_refuses_hardlinks_and_special_files),
        T(test_tar_entry_through_symlink_fails),
        T(test_tar_symlinks_extracted_as_symlinks),
        T(test_tar_giant_sparse_entry_refused_before_writing),
        T(test_tar_limits),
        T(test_tar_gzip_extracts),
        T(test_tar_garbage_refused),
        T(test_tar_merges_into_existing),
#undef T
    };
    return cmocka_run_group_tests_name("files_extract", tests, NULL, NULL);
}
