/* Files API against real directories: what the sandbox may have planted in its workspace
 * (symlinks to host files, FIFOs, directories swapped for links, hostile archives) must never
 * lead an operation outside the workspace, block it, or make it write more than its limits. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cost.h"

#include "clearing/cleanup.h"
#include "clearing/clearing.h"

#define SANDBOX_UID 1000
#define SANDBOX_GID 1000

typedef struct {
    char base[64];     /* mkdtemp'd, holds both of the following */
    char ws[96];       /* the workspace root */
    char outside[96];  /* a host directory the workspace must never reach */
    char secret[128];  /* outside/secret, a decoy for /etc/shadow */
    int root;
} fixture;

/* ---- helpers ------------------------------------------------------------------------------ */

static void pathf(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < len);
}

static void put_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* The whole file, NUL-terminated; the caller frees it. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    if (len)
        *len = got;
    return buf;
}

static char *slurp_fd(int fd, size_t *len)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    buf[st.st_size] = '\0';
    *len = (size_t)st.st_size;
    return buf;
}

static int mem_fd(void)
{
    int fd = memfd_create("clr-test", MFD_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static off_t fd_size(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_size;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void assert_secret_intact(const fixture *f)
{
    _cleanup_free_ char *s = slurp(f->secret, NULL);
    assert_non_null(s);
    assert_string_equal(s, "host secret\n");
    struct stat st;
    assert_int_equal(lstat(f->secret, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, 0);
}

/* Nothing but the decoy in the host directory next to the workspace. */
static void assert_outside_untouched(const fixture *f)
{
    assert_secret_intact(f);
    clr_error err = CLR_ERROR_INIT;
    int o = -1;
    assert_int_equal(clr_files_open_root(&o, f->outside, &err), 0);
    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, o, "", 100, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "secret");
    clr_files_entries_free(v, n);
    close(o);
}

/* No staging directory or temporary upload left behind anywhere in dir. */
static void assert_no_leftovers(const fixture *f, const char *dir)
{
    clr_error err = CLR_ERROR_INIT;
    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, f->root, dir, 1000, &err), 0);
    for (size_t i = 0; i < n; i++) {
        assert_null(strstr(v[i].name, ".clr-extract-"));
        assert_null(strstr(v[i].name, ".clr-upload-"));
    }
    clr_files_entries_free(v, n);
}

static size_t count_entries(const fixture *f, const char *dir)
{
    clr_error err = CLR_ERROR_INIT;
    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, f->root, dir, 100000, &err), 0);
    clr_files_entries_free(v, n);
    return n;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->base, "/tmp/clr-test-files-XXXXXX");
    assert_non_null(mkdtemp(f->base));
    pathf(f->ws, sizeof(f->ws), "%s/ws", f->base);
    pathf(f->outside, sizeof(f->outside), "%s/outside", f->base);
    pathf(f->secret, sizeof(f->secret), "%s/secret", f->outside);
    assert_int_equal(mkdir(f->ws, 0755), 0);
    assert_int_equal(chown(f->ws, SANDBOX_UID, SANDBOX_GID), 0);
    assert_int_equal(mkdir(f->outside, 0755), 0);
    put_file(f->secret, "host secret\n", 0600);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_files_open_root(&f->root, f->ws, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->root);
    /* FTW_PHYS: the tree is full of symlinks to host files; never follow them. */
    nftw(f->base, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    free(f);
    return 0;
}

#define WS(f, buf, rel) pathf(buf, sizeof(buf), "%s/%s", (f)->ws, rel)

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

/* Issue #16 item 9: a download's spool keeps a sparse file's holes (a file of holes costs the
 * host no disk) and charges only what it writes to a shared budget, which refuses past it. */
static void make_holey(const char *path, off_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "HEAD", 4), 4);
    assert_int_equal(ftruncate(fd, size - 4), 0);
    assert_int_equal(pwrite(fd, "TAIL", 4, size - 4), 4);
    close(fd);
}

static off_t fd_allocated(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_blocks * 512;
}

static void test_spool_keeps_holes_and_charges_budget(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    const off_t size = (off_t)64 << 20;
    char p[256];
    WS(f, p, "holey");
    make_holey(p, size);
    WS(f, p, "arch");
    assert_int_equal(mkdir(p, 0755), 0);
    WS(f, p, "arch/holey");
    make_holey(p, size);
    clr_files_budget budget = {.max = 1 << 20, .name = "max_download_total"};
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.output_budget = &budget;

    _cleanup_close_ int out = mem_fd();
    clr_files_report rep;
    assert_int_equal(clr_files_read_ext(f->root, "holey", out, &lim, &rep, &err), 0);
    assert_int_equal(rep.bytes, (uint64_t)size);
    assert_int_equal(fd_size(out), size);
    char ends[9] = {0};
    assert_int_equal(pread(out, ends, 4, 0), 4);
    assert_int_equal(pread(out, ends + 4, 4, size - 4), 4);
    assert_string_equal(ends, "HEADTAIL");
    char mid[4096], zeros[4096] = {0};
    assert_int_equal(pread(out, mid, sizeof(mid), size / 2), (ssize_t)sizeof(mid));
    assert_memory_equal(mid, zeros, sizeof(mid));
    print_message("read: %lld bytes, %lld allocated, %llu charged\n", (long long)size,
                  (long long)fd_allocated(out), (unsigned long long)rep.charged);
    assert_true(fd_allocated(out) <= 64 * 1024);
    assert_true(rep.charged > 0 && rep.charged <= 2 * 4096);
    assert_int_equal(atomic_load(&budget.used), rep.charged);
    uint64_t held = rep.charged;

    /* An archive of it: holes too, and the bytes extract back to the same file. */
    _cleanup_close_ int tar = mem_fd();
    assert_int_equal(clr_files_create_tar(f->root, "arch", tar, &lim, &rep, &err), 0);
    assert_true(fd_size(tar) > size);
    assert_true(fd_allocated(tar) <= 64 * 1024);
    assert_true(rep.charged > 0 && rep.charged <= 64 * 1024);
    held += rep.charged;
    assert_int_equal(atomic_load(&budget.used), held);
    assert_int_equal(lseek(tar, 0, SEEK_SET), 0);
    WS(f, p, "back");
    assert_int_equal(mkdir(p, 0755), 0);
    if (clr_files_extract_tar(f->root, "back", tar, NULL, NULL, &err) < 0)
        fail_msg("extract: %s", err.message);
    WS(f, p, "back/holey");
    int back = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(back >= 0);
    assert_int_equal(fd_size(back), size);
    memset(ends, 0, sizeof(ends));
    assert_int_equal(pread(back, ends, 4, 0), 4);
    assert_int_equal(pread(back, ends + 4, 4, size - 4), 4);
    assert_string_equal(ends, "HEADTAIL");
    close(back);

    /* Real bytes past what is left: refused, naming the setting; the charge is reported. */
    char dense[256 * 1024];
    memset(dense, 'd', sizeof(dense));
    WS(f, p, "dense");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(write(fd, dense, sizeof(dense)), (ssize_t)sizeof(dense));
    close(fd);
    _cleanup_close_ int out2 = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "dense", out2, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "max_download_total"));
    assert_true(held + rep.charged <= budget.max);
    assert_int_equal(atomic_load(&budget.used), held + rep.charged);
    assert_int_equal(fd_size(out2), (off_t)rep.charged);
    _cleanup_close_ int tar2 = mem_fd();
    uint64_t before = atomic_load(&budget.used);
    assert_int_equal(clr_files_create_tar(f->root, "", tar2, &lim, &rep, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "max_download_total"));
    assert_int_equal(atomic_load(&budget.used), before + rep.charged);

    /* Given back, the budget is whole again and the same read fits. */
    clr_files_budget_release(&budget, atomic_load(&budget.used));
    assert_int_equal(atomic_load(&budget.used), 0);
    budget.max = 4 << 20;
    _cleanup_close_ int out3 = mem_fd();
    assert_int_equal(clr_files_read_ext(f->root, "dense", out3, &lim, &rep, &err), 0);
    assert_int_equal(rep.charged, 2u << 20);
    assert_int_equal(fd_allocated(out3), 2 << 20);
}

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
        cmocka_unit_test(test_check_path_accepts),
        cmocka_unit_test(test_check_path_refuses),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_operations_refuse_escaping_paths),
        T(test_write_read_roundtrip),
        T(test_write_streams_from_fd_and_enforces_limit),
        T(test_write_refuses_directory_and_root),
        T(test_write_replaces_final_symlink_without_following),
        T(test_write_through_symlinked_directory_fails),
        T(test_read_refuses_symlinks),
        T(test_read_fifo_fails_fast),
        T(test_read_limits_and_types),
        T(test_spool_keeps_holes_and_charges_budget),
        T(test_list_reports_symlinks_without_following),
        T(test_delete_never_follows),
        T(test_delete_depth_is_bounded),
        T(test_directory_swapped_for_symlink_between_calls),
        T(test_concurrent_symlink_swaps_never_escape),
        T(test_tar_refuses_escapes),
        T(test_tar_refuses_hardlinks_and_special_files),
        T(test_tar_entry_through_symlink_fails),
        T(test_tar_symlinks_extracted_as_symlinks),
        T(test_tar_giant_sparse_entry_refused_before_writing),
        T(test_tar_limits),
        T(test_tar_gzip_extracts),
        T(test_tar_garbage_refused),
        T(test_tar_merges_into_existing),
        T(test_create_tar_round_trip),
        T(test_create_tar_refusals_and_limits),
#undef T
    };
    return cmocka_run_group_tests_name("files", tests, NULL, NULL);
}
