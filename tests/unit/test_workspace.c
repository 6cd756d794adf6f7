/* Workspaces (lib/workspace.c): the per-sandbox tmpfs and the copy into it. No engine: the
 * mount is made in a scratch state directory (the tests run as root, as the daemon does; not
 * root: skipped). What is checked is what the kernel reports of the mount (its byte and inode
 * bounds, nosuid, nodev, its owner) and what the copy made: files with their bytes and modes,
 * symlinks copied as links and never followed, special files left out, limits refused. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "clr-config.h"
#include "internal.h"

#define TMPFS_MAGIC_NUMBER 0x01021994

struct scratch {
    char state[128]; /* the state directory */
    char src[160];   /* a source tree to copy */
    char ws[256];    /* the workspace's path */
};

static void write_file(const char *dir, const char *name, const char *content, mode_t mode)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int setup(void **state)
{
    if (geteuid() != 0)
        return 0;
    struct scratch *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    snprintf(s->state, sizeof(s->state), "/tmp/clr-test-ws-XXXXXX");
    assert_non_null(mkdtemp(s->state));
    snprintf(s->src, sizeof(s->src), "%s/src", s->state);
    assert_int_equal(mkdir(s->src, 0755), 0);
    assert_int_equal(clr_workspace_path(s->ws, sizeof(s->ws), s->state, "sb-test"), 0);
    *state = s;
    return 0;
}

static void rm_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

static int teardown(void **state)
{
    struct scratch *s = *state;
    if (!s)
        return 0;
    clr_error err = CLR_ERROR_INIT;
    clr_workspace_remove(s->state, "sb-test", &err); /* a test that failed may leave it */
    rm_tree(s->state);
    free(s);
    return 0;
}

#define NEED_ROOT(state)                                                                          \
    do {                                                                                          \
        if (geteuid() != 0 || !*(state))                                                          \
            skip();                                                                               \
    } while (0)

static bool is_mounted(const char *path)
{
    struct statfs sf;
    return statfs(path, &sf) == 0 && (unsigned long)sf.f_type == TMPFS_MAGIC_NUMBER;
}

static void test_paths(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(clr_workspace_path(out, sizeof(out), "/srv/state", "sb-1"), 0);
    assert_string_equal(out, "/srv/state/workspaces/sb-1");
    /* exactly fits, and one byte short */
    assert_int_equal(clr_workspace_path(out, 27, "/srv/state", "sb-1"), 0);
    assert_int_equal(clr_workspace_path(out, 26, "/srv/state", "sb-1"), -1);

    /* the state directory: explicit, else $CLEARING_STATE_DIR, else the built-in one */
    const char *saved = getenv("CLEARING_STATE_DIR");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("CLEARING_STATE_DIR", "/from/env", 1);
    assert_string_equal(clr_state_dir("/explicit"), "/explicit");
    assert_string_equal(clr_state_dir(NULL), "/from/env");
    assert_string_equal(clr_state_dir(""), "/from/env");
    setenv("CLEARING_STATE_DIR", "", 1);
    assert_string_equal(clr_state_dir(NULL), CLR_STATE_DIR);
    unsetenv("CLEARING_STATE_DIR");
    assert_string_equal(clr_state_dir(NULL), CLR_STATE_DIR);
    assert_int_equal(clr_workspace_path(out, sizeof(out), NULL, "x"), 0);
    assert_string_equal(out, CLR_STATE_DIR "/workspaces/x");
    if (keep) {
        setenv("CLEARING_STATE_DIR", keep, 1);
        free(keep);
    }

    /* a state directory whose workspace path cannot be built: refused, nothing made */
    char longdir[5000];
    memset(longdir, 'd', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    clr_limits l = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_create(longdir, "sb", &l, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_string_equal(err.message, "state directory path too long");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_remove(longdir, "sb", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
}

/* The mount's bounds are the limits', enforced by the kernel: what statvfs reports. */
static void test_mount_bounds(void **state)
{
    NEED_ROOT(state);
    struct scratch *s = *state;
    clr_limits l = CLR_LIMITS_INIT;
    l.workspace_bytes = 8 * CLR_MIB;
    l.workspace_inodes = 200;
    clr_error err = CLR_ERROR_INIT;
    if (clr_workspace_create(s->state, "sb-test", &l, NULL, &err) != 0)
        fail_msg("create: %s", err.message);
    assert_true(is_mounted(s->ws));
    struct statvfs vfs;
    assert_int_equal(statvfs(s->ws, &vfs), 0);
    assert_int_equal((uint64_t)vfs.f_blocks * vfs.f_frsize, 8 * CLR_MIB);
    assert_int_equal(vfs.f_files, 200);
    assert_true(vfs.f_flag & ST_NOSUID);
    assert_true(vfs.f_flag & ST_NODEV);
    struct stat st;
    assert_int_equal(stat(s->ws, &st), 0);
    assert_int_equal(st.st_uid, CLR_SANDBOX_UID);
    assert_int_equal(st.st_gid, CLR_SANDBOX_GID);
    assert_int_equal(st.st_mode & 07777, 0755);

    /* the byte bound holds: a 9 MiB file does not fit */
    char big[300];
    snprintf(big, sizeof(big), "%s/big", s->ws);
    int fd = open(big, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    static char chunk[1 << 20];
    ssize_t w = 0;
    int e = 0;
    for (int i = 0; i < 9 && e == 0; i++) {
        w = write(fd, chunk, sizeof(chunk));
        if (w < 0)
            e = errno;
    }
    close(fd);
    assert_int_equal(e, ENOSPC);
    unlink(big);

    /* the inode bound holds */
    int made = 0;
    for (int i = 0; i < 300; i++) {
        char p[300];
        snprintf(p, sizeof(p), "%s/f%d", s->ws, i);
        fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            assert_int_equal(errno, ENOSPC);
            break;
        }
        close(fd);
        made++;
    }
    assert_true(made > 0 && made < 200);

    assert_int_equal(clr_workspace_remove(s->state, "sb-test", &err), 0);
    assert_false(is_mounted(s->ws));
    assert_int_equal(access(s->ws, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    /* already gone: still success */
    assert_int_equal(clr_workspace_remove(s->state, "sb-test", &err), 0);
}

static void read_file(const char *path, char *out, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    assert_true(fd >= 0);
    ssize_t n = read(fd, out, len - 1);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
}

/* The copy: regular files with their bytes and modes, directories, symlinks as symlinks (never
 * followed, even when they point out of the tree), special files left out; all owned by the
 * sandbox user. */
static void test_copy_in(void **state)
{
    NEED_ROOT(state);
    struct scratch *s = *state;
    write_file(s->src, "a.txt", "alpha\n", 0640);
    write_file(s->src, "run.sh", "#!/bin/sh\n", 0755);
    char sub[300], p[400];
    snprintf(sub, sizeof(sub), "%s/sub", s->src);
    assert_int_equal(mkdir(sub, 0750), 0);
    write_file(sub, "b.txt", "beta", 0600);
    snprintf(p, sizeof(p), "%s/secret", s->state);
    write_file(s->state, "secret", "host secret", 0600);
    snprintf(p, sizeof(p), "%s/out-link", s->src);
    char target[300];
    snprintf(target, sizeof(target), "%s/secret", s->state);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof(p), "%s/rel-link", s->src);
    assert_int_equal(symlink("sub/b.txt", p), 0);
    snprintf(p, sizeof(p), "%s/dir-link", s->src);
    assert_int_equal(symlink("/etc", p), 0);
    snprintf(p, sizeof(p), "%s/fifo", s->src);
    assert_int_equal(mkfifo(p, 0644), 0);

    clr_limits l = CLR_LIMITS_INIT;
    l.workspace_bytes = 16 * CLR_MIB;
    clr_error err = CLR_ERROR_INIT;
    if (clr_workspace_create(s->state, "sb-test", &l, s->src, &err) != 0)
        fail_msg("create: %s", err.message);

    char buf[256];
    struct stat st;
    snprintf(p, sizeof(p), "%s/a.txt", s->ws);
    read_file(p, buf, sizeof(buf));
    assert_string_equal(buf, "alpha\n");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(st.st_uid, CLR_SANDBOX_UID);
    assert_int_equal(st.st_gid, CLR_SANDBOX_GID);
    snprintf(p, sizeof(p), "%s/run.sh", s->ws);
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    snprintf(p, sizeof(p), "%s/sub", s->ws);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0750);
    assert_int_equal(st.st_uid, CLR_SANDBOX_UID);
    snprintf(p, sizeof(p), "%s/sub/b.txt", s->ws);
    read_file(p, buf, sizeof(buf));
    assert_string_equal(buf, "beta");

    /* symlinks: links in the workspace with the same target; the host file is not copied */
    snprintf(p, sizeof(p), "%s/out-link", s->ws);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(st.st_uid, CLR_SANDBOX_UID);
    ssize_t n = readlink(p, buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, target);
    snprintf(p, sizeof(p), "%s/rel-link", s->ws);
    n = readlink(p, buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "sub/b.txt");
    snprintf(p, sizeof(p), "%s/dir-link", s->ws);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* not a copy of /etc */
    snprintf(p, sizeof(p), "%s/secret", s->ws);
    assert_int_equal(access(p, F_OK), -1); /* nothing outside the tree came in */

    /* the FIFO is left out */
    snprintf(p, sizeof(p), "%s/fifo", s->ws);
    assert_int_equal(lstat(p, &st), -1);
    assert_int_equal(errno, ENOENT);

    assert_int_equal(clr_workspace_remove(s->state, "sb-test", &err), 0);
    assert_false(is_mounted(s->ws));
}

/* A source that is missing or not a directory, or more than fits: refused, and the workspace
 * is unmounted and removed again. */
static void test_copy_refusals(void **state)
{
    NEED_ROOT(state);
    struct scratch *s = *state;
    clr_limits l = CLR_LIMITS_INIT;
    l.workspace_bytes = 2 * CLR_MIB;
    clr_error err = CLR_ERROR_INIT;
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/nope", s->state);
    assert_int_equal(clr_workspace_create(s->state, "sb-test", &l, missing, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "workspace source"));
    assert_non_null(strstr(err.message, "nope"));
    assert_false(is_mounted(s->ws));
    assert_int_equal(access(s->ws, F_OK), -1);

    /* a file is not a directory */
    write_file(s->src, "file", "x", 0644);
    char file[300];
    snprintf(file, sizeof(file), "%s/file", s->src);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_create(s->state, "sb-test", &l, file, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_false(is_mounted(s->ws));

    /* more than fits: CLR_E_LIMIT that says what to raise, and nothing left behind */
    char *chunk = calloc(1, 3 * CLR_MIB);
    assert_non_null(chunk);
    memset(chunk, 'x', 3 * CLR_MIB - 1);
    write_file(s->src, "large", chunk, 0644);
    free(chunk);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_create(s->state, "sb-test", &l, s->src, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "does not fit in the workspace"));
    assert_non_null(strstr(err.message, "raise the workspace size limit"));
    assert_false(is_mounted(s->ws));
    assert_int_equal(access(s->ws, F_OK), -1);
}

/* Nesting deeper than 64 directories below the source is refused (a bound on the walk's
 * recursion); 64 are copied. */
static void test_copy_depth(void **state)
{
    NEED_ROOT(state);
    struct scratch *s = *state;
    char path[4096];
    size_t o = (size_t)snprintf(path, sizeof(path), "%s", s->src);
    for (int i = 0; i < 65; i++) {
        o += (size_t)snprintf(path + o, sizeof(path) - o, "/d");
        assert_int_equal(mkdir(path, 0755), 0);
    }
    clr_limits l = CLR_LIMITS_INIT;
    l.workspace_bytes = 4 * CLR_MIB;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_create(s->state, "sb-test", &l, s->src, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "directory nesting deeper than 64"));
    assert_false(is_mounted(s->ws));

    /* 64 levels below the source are fine */
    rm_tree(s->src);
    assert_int_equal(mkdir(s->src, 0755), 0);
    o = (size_t)snprintf(path, sizeof(path), "%s", s->src);
    for (int i = 0; i < 64; i++) {
        o += (size_t)snprintf(path + o, sizeof(path) - o, "/d");
        assert_int_equal(mkdir(path, 0755), 0);
    }
    write_file(path, "deep", "deep", 0644);
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_workspace_create(s->state, "sb-test", &l, s->src, &err) != 0)
        fail_msg("create: %s", err.message);
    o = (size_t)snprintf(path, sizeof(path), "%s", s->ws);
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(path + o, sizeof(path) - o, "/d");
    snprintf(path + o, sizeof(path) - o, "/deep");
    char buf[16];
    read_file(path, buf, sizeof(buf));
    assert_string_equal(buf, "deep");
    assert_int_equal(clr_workspace_remove(s->state, "sb-test", &err), 0);
}

/* The state directory cannot be made: CLR_E_UNAVAILABLE that names the path. */
static void test_unwritable_state(void **state)
{
    NEED_ROOT(state);
    struct scratch *s = *state;
    char blocker[300];
    snprintf(blocker, sizeof(blocker), "%s/blocker", s->state);
    write_file(s->state, "blocker", "", 0644); /* a file where a directory must go */
    clr_limits l = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_workspace_create(blocker, "sb", &l, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "cannot create workspace directory"));
    assert_non_null(strstr(err.message, "CLEARING_STATE_DIR"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test_setup_teardown(test_mount_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_state, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
