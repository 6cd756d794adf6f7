/* The fixture and helpers every files test shares: a workspace, a host directory next to it
 * with a decoy secret the workspace must never reach, and file helpers. Included by the
 * test_files_*.c files (one per lib/files_*.c module). */
#ifndef CLR_TEST_FILES_FIXTURE_H
#define CLR_TEST_FILES_FIXTURE_H

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

static inline void pathf(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void pathf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < len);
}

static inline void put_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* The whole file, NUL-terminated; the caller frees it. */
static inline char *slurp(const char *path, size_t *len)
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

static inline char *slurp_fd(int fd, size_t *len)
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

static inline int mem_fd(void)
{
    int fd = memfd_create("clr-test", MFD_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static inline off_t fd_size(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_size;
}

static inline bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static inline void assert_secret_intact(const fixture *f)
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
static inline void assert_outside_untouched(const fixture *f)
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
static inline void assert_no_leftovers(const fixture *f, const char *dir)
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

static inline size_t count_entries(const fixture *f, const char *dir)
{
    clr_error err = CLR_ERROR_INIT;
    clr_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(clr_files_list(&v, &n, f->root, dir, 100000, &err), 0);
    clr_files_entries_free(v, n);
    return n;
}

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static inline int setup(void **state)
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

static inline int teardown(void **state)
{
    fixture *f = *state;
    close(f->root);
    /* FTW_PHYS: the tree is full of symlinks to host files; never follow them. */
    nftw(f->base, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    free(f);
    return 0;
}

#define WS(f, buf, rel) pathf(buf, sizeof(buf), "%s/%s", (f)->ws, rel)

#endif
