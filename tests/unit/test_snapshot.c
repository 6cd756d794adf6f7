/* Snapshots on disk (lib/snapshot.c): a snapshot written from a checkpoint directory and a
 * workspace verifies whole, and each kind of damage (a byte changed, a file cut short, a file
 * added or removed, a link re-pointed, the manifest replaced or missing) is refused naming what
 * is wrong. Temporary directories only: no engine. */
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
#include <unistd.h>

#include <cmocka.h>

#include "clearing/snapshot.h"

struct fx {
    char root[64], cp[128], ws[128], snap[128];
};

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    snprintf(x->root, sizeof(x->root), "/tmp/clr-snap-XXXXXX");
    assert_non_null(mkdtemp(x->root));
    snprintf(x->cp, sizeof(x->cp), "%s/cp", x->root);
    snprintf(x->ws, sizeof(x->ws), "%s/ws", x->root);
    snprintf(x->snap, sizeof(x->snap), "%s/state/snapshots/snap-0123456789abcdef", x->root);
    assert_int_equal(mkdir(x->cp, 0700), 0);
    assert_int_equal(mkdir(x->ws, 0755), 0);
    char p[256];
    snprintf(p, sizeof(p), "%s/checkpoint.img", x->cp);
    put(p, "gVisor memory image");
    snprintf(p, sizeof(p), "%s/a.txt", x->ws);
    put(p, "hello\n");
    snprintf(p, sizeof(p), "%s/sub", x->ws);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub/b.txt", x->ws);
    put(p, "world\n");
    snprintf(p, sizeof(p), "%s/link", x->ws);
    assert_int_equal(symlink("a.txt", p), 0);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    clr_snapshot_remove_dir(x->root, NULL);
    free(x);
    return 0;
}

static void write_one(struct fx *x, char *sha)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t size = 0;
    if (clr_snapshot_write(x->snap, x->cp, x->ws, UINT64_MAX, &size, sha, &err) < 0)
        fail_msg("write: %s", err.message);
    assert_true(size > strlen("gVisor memory image") + 12);
    assert_int_equal(strlen(sha), 64);
    assert_true(clr_snapshot_finished(x->snap));
    struct stat st;
    assert_int_equal(stat(x->snap, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

static void refused(struct fx *x, const char *sha, const char *words)
{
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    if (!strstr(err.message, words))
        fail_msg("'%s' does not say '%s'", err.message, words);
}

static void test_ids(void **state)
{
    (void)state;
    char id[32];
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_id_new(id, sizeof(id), &err), 0);
    assert_true(clr_snapshot_id_valid(id));
    assert_false(clr_snapshot_id_valid("snap-0123"));
    assert_false(clr_snapshot_id_valid("snap-0123456789abcdeg"));
    assert_false(clr_snapshot_id_valid("sb-0123456789abcdef"));
    assert_false(clr_snapshot_id_valid(NULL));
    char p[256];
    assert_int_equal(clr_snapshot_path(p, sizeof(p), "/st", "snap-0123456789abcdef"), 0);
    assert_string_equal(p, "/st/snapshots/snap-0123456789abcdef");
    assert_int_equal(clr_snapshot_path(p, sizeof(p), "/st", "../x"), -1);
}

static void test_write_verify_copy(void **state)
{
    struct fx *x = *state;
    char sha[65];
    write_one(x, sha);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    assert_int_equal(clr_snapshot_verify(x->snap, NULL, &err), 0);
    char p[512], dest[256];
    snprintf(p, sizeof(p), "%s/workspace/link", x->snap);
    char t[64] = "";
    assert_int_equal(readlink(p, t, sizeof(t) - 1), 5);
    assert_string_equal(t, "a.txt");
    snprintf(dest, sizeof(dest), "%s/engine/c1/checkpoints/snap-0123456789abcdef", x->root);
    assert_int_equal(clr_snapshot_copy_checkpoint(x->snap, dest, &err), 0);
    snprintf(p, sizeof(p), "%s/checkpoint.img", dest);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, (off_t)strlen("gVisor memory image"));
    /* Writing over an existing snapshot is refused and leaves it alone. */
    uint64_t size = 0;
    char sha2[65];
    assert_int_equal(clr_snapshot_write(x->snap, x->cp, x->ws, UINT64_MAX, &size, sha2, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    assert_int_equal(clr_snapshot_remove_dir(x->snap, &err), 0);
    assert_false(clr_snapshot_finished(x->snap));
    assert_int_equal(clr_snapshot_remove_dir(x->snap, &err), 0);
}

static void test_damage_refused(void **state)
{
    struct fx *x = *state;
    char sha[65], p[256], q[256];
    write_one(x, sha);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0); /* positive control */

    /* A byte changed, same size. */
    snprintf(p, sizeof(p), "%s/checkpoint/checkpoint.img", x->snap);
    put(p, "gVisor memory imagE");
    refused(x, sha, "checkpoint/checkpoint.img's sha256 differs");
    put(p, "gVisor memory image");
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    /* Cut short. */
    assert_int_equal(truncate(p, 5), 0);
    refused(x, sha, "truncated");
    put(p, "gVisor memory image");
    /* A file added. */
    snprintf(q, sizeof(q), "%s/workspace/extra", x->snap);
    put(q, "x");
    refused(x, sha, "workspace/extra is not in the snapshot's manifest");
    unlink(q);
    /* A file removed. */
    snprintf(q, sizeof(q), "%s/workspace/sub/b.txt", x->snap);
    unlink(q);
    refused(x, sha, "1 of the");
    put(q, "world\n");
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    /* A link re-pointed. */
    snprintf(q, sizeof(q), "%s/workspace/link", x->snap);
    unlink(q);
    assert_int_equal(symlink("/etc/shadow", q), 0);
    refused(x, sha, "points elsewhere");
    unlink(q);
    assert_int_equal(symlink("a.txt", q), 0);
    /* The manifest replaced: its sha256 is not the recorded one. */
    snprintf(q, sizeof(q), "%s/manifest.json", x->snap);
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    refused(x, "0000000000000000000000000000000000000000000000000000000000000000",
            "differs from the one recorded");
    /* No manifest: never finished. */
    unlink(q);
    assert_false(clr_snapshot_finished(x->snap));
    refused(x, sha, "no manifest");
    /* A missing snapshot directory is not found, not corrupt. */
    clr_snapshot_remove_dir(x->snap, NULL);
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

/* What the sandbox can put in its workspace while it runs cannot make the copy outgrow its
 * budget: a file past what is left, a sparse file whose holes would be written out in full, a
 * file hard-linked many times, or more entries than a manifest may list. Each is refused
 * (CLR_E_LIMIT) and nothing of the snapshot is left. The same workspace within the budget is the
 * positive control. */
static void refused_limit(struct fx *x, uint64_t max, const char *words)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t size = 0;
    char sha[65];
    assert_int_equal(clr_snapshot_write(x->snap, x->cp, x->ws, max, &size, sha, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    if (!strstr(err.message, words))
        fail_msg("'%s' does not say '%s'", err.message, words);
    struct stat st;
    assert_int_equal(stat(x->snap, &st), -1); /* nothing half-made */
}

static void test_budget(void **state)
{
    struct fx *x = *state;
    char p[256], q[256];
    /* Control: the workspace fits 4 KiB; its size is what was written. */
    clr_error err = CLR_ERROR_INIT;
    uint64_t size = 0;
    char sha[65];
    assert_int_equal(clr_snapshot_write(x->snap, x->cp, x->ws, 4096, &size, sha, &err), 0);
    assert_true(size > 0 && size <= 4096);
    clr_snapshot_remove_dir(x->snap, NULL);
    /* A budget smaller than the files. */
    refused_limit(x, 20, "disk budget");
    /* A sparse file of 1 GiB that holds no block. */
    snprintf(p, sizeof(p), "%s/sparse", x->ws);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)1 << 30), 0);
    close(fd);
    refused_limit(x, 64 << 20, "sparse");
    unlink(p);
    /* One 64 KiB file hard-linked 100 times: 6.4 MB written out, over a 1 MiB budget. */
    snprintf(p, sizeof(p), "%s/big", x->ws);
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    char block[65536];
    memset(block, 'x', sizeof(block));
    assert_int_equal(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
    close(fd);
    for (int i = 0; i < 100; i++) {
        snprintf(q, sizeof(q), "%s/sub/l%d", x->ws, i);
        assert_int_equal(link(p, q), 0);
    }
    refused_limit(x, 1 << 20, "does not fit the snapshots' disk budget");
}

static void test_fifo_left_out(void **state)
{
    struct fx *x = *state;
    char p[256], sha[65];
    /* A FIFO in the workspace is left out (a copy that opened it would block for ever), and
     * the snapshot still verifies. */
    snprintf(p, sizeof(p), "%s/pipe", x->ws);
    assert_int_equal(mkfifo(p, 0644), 0);
    write_one(x, sha);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_verify(x->snap, sha, &err), 0);
    snprintf(p, sizeof(p), "%s/workspace/pipe", x->snap);
    struct stat st;
    assert_int_equal(lstat(p, &st), -1);
}

static mode_t mode_of(const char *base, const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", base, rel);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode & 07777;
}

/* A fork's workspace copied from the snapshot's (0600 files, 0700 directories, as the workspace
 * copy keeps them) gets back the modes the manifest recorded, permission bits only. */
static void test_modes_restored(void **state)
{
    struct fx *x = *state;
    char p[512], dest[256], sha[65];
    snprintf(p, sizeof(p), "%s/run.sh", x->ws);
    put(p, "#!/bin/sh\necho hi\n");
    assert_int_equal(chmod(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub", x->ws);
    assert_int_equal(chmod(p, 02750), 0);
    snprintf(p, sizeof(p), "%s/sub/b.txt", x->ws);
    assert_int_equal(chmod(p, 04644), 0); /* setuid: never given back */
    write_one(x, sha);
    /* The snapshot's own copy has lost them (the positive control of what is restored). */
    char sws[256];
    snprintf(sws, sizeof(sws), "%s/workspace", x->snap);
    assert_int_equal(mode_of(sws, "run.sh"), 0600);
    assert_int_equal(mode_of(sws, "sub"), 0700);
    /* The fork's copy, as the workspace copy-in makes it from the snapshot's. */
    snprintf(dest, sizeof(dest), "%s/fork", x->root);
    assert_int_equal(mkdir(dest, 0755), 0);
    const char *files[] = {"run.sh", "a.txt", "sub/b.txt"};
    snprintf(p, sizeof(p), "%s/sub", dest);
    assert_int_equal(mkdir(p, 0700), 0);
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", dest, files[i]);
        put(p, "x");
        assert_int_equal(chmod(p, 0600), 0);
    }
    snprintf(p, sizeof(p), "%s/link", dest);
    assert_int_equal(symlink("a.txt", p), 0);
    clr_error err = CLR_ERROR_INIT;
    if (clr_snapshot_apply_modes(x->snap, dest, &err) < 0)
        fail_msg("apply: %s", err.message);
    assert_int_equal(mode_of(dest, "run.sh"), 0755);
    assert_int_equal(mode_of(dest, "a.txt"), 0644);
    assert_int_equal(mode_of(dest, "sub"), 0750);
    assert_int_equal(mode_of(dest, "sub/b.txt"), 0644);
    /* A directory that became a symbolic link is not followed: refused, its target unchanged. */
    char out[256];
    snprintf(out, sizeof(out), "%s/outside", x->root);
    assert_int_equal(mkdir(out, 0700), 0);
    snprintf(p, sizeof(p), "%s/b.txt", out);
    put(p, "x");
    assert_int_equal(chmod(p, 0600), 0);
    snprintf(p, sizeof(p), "%s/sub/b.txt", dest);
    assert_int_equal(unlink(p), 0);
    snprintf(p, sizeof(p), "%s/sub", dest);
    assert_int_equal(rmdir(p), 0);
    assert_int_equal(symlink(out, p), 0);
    assert_int_equal(clr_snapshot_apply_modes(x->snap, dest, &err), -1);
    assert_non_null(strstr(err.message, "sub"));
    assert_int_equal(mode_of(out, "b.txt"), 0600);
    assert_int_equal(mode_of(x->root, "outside"), 0700);
}

/* A workspace name that is not UTF-8 cannot go in the manifest: refused as the client's to
 * rename (400), naming it with its bytes escaped, and nothing of the snapshot is left. */
static void test_name_not_utf8(void **state)
{
    struct fx *x = *state;
    char p[512], sha[65];
    /* The positive control: a name that is UTF-8 (not ASCII) is taken. */
    snprintf(p, sizeof(p), "%s/caf\xc3\xa9.txt", x->ws);
    put(p, "ok");
    write_one(x, sha);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_snapshot_remove_dir(x->snap, &err), 0);
    /* A file, then a directory, named in Latin-1. */
    const char *bad[] = {"sub/caf\xe9.txt", "d\xff\\r"};
    const char *shown[] = {"(sub/caf\\xe9.txt)", "(d\\xff\\x5cr)"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", x->ws, bad[i]);
        if (i == 0)
            put(p, "latin-1");
        else
            assert_int_equal(mkdir(p, 0755), 0);
        uint64_t size = 0;
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_snapshot_write(x->snap, x->cp, x->ws, UINT64_MAX, &size, sha, &err),
                         -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        if (!strstr(err.message, "not UTF-8") || !strstr(err.message, shown[i]) ||
            !strstr(err.message, "rename it"))
            fail_msg("'%s' does not name %s", err.message, shown[i]);
        assert_false(clr_snapshot_finished(x->snap));
        struct stat st;
        assert_int_equal(lstat(x->snap, &st), -1);
        assert_int_equal(remove(p), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test_setup_teardown(test_write_verify_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes_restored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_not_utf8, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
