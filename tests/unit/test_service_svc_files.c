/* lib/service/svc_files.c on a real state directory (SQLite rows, an audit log, workspaces in
 * /tmp): what each file action does in the workspace and what it records (path, size, SHA-256),
 * and what is refused before anything is touched: a malformed or unknown sandbox id, a sandbox
 * that is not running (a lost one's workspace may still be read, not written), hostile paths
 * (.., absolute, a symlink in the workspace leading out), an archive with such entries (nothing
 * of it extracted), a download over its budget, an upload into a full workspace. Another
 * tenant's sandbox is refused by the gate every tenant's request passes first
 * (clr_service_sandbox_of), with the very error an unknown id gets. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "test_service_env.h"

#define ID_RUN "sb-00000000000000a1"
#define ID_LOST "sb-00000000000000a2"
#define ID_GONE "sb-00000000000000a3"
#define ID_PLAN "sb-00000000000000a4"
#define ID_BETA "sb-00000000000000a5"
#define ID_NONE "sb-00000000000000a9"
#define ACTOR "uid=1000 pid=42"
#define HELLO_SHA "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

struct fixture {
    struct test_env *e;
    char ws[128], ws_lost[128], ws_gone[128], outside[128];
};

/* A running sandbox, a lost one (its container died: "oom"), a destroyed one, a plan's, and
 * one of tenant beta; each but the plan's with a workspace. Next to the workspaces, a host
 * directory with a secret that no action may reach. */
static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx || test_env_setup(&fx->e, "svcfiles") != 0)
        return -1;
    struct test_env *s = fx->e;
    test_env_add_row(s, ID_RUN, "", CLR_STATE_RUNNING, NULL);
    test_env_add_row(s, ID_LOST, "", CLR_STATE_LOST, "oom");
    test_env_add_row(s, ID_GONE, "", CLR_STATE_DESTROYED, "client");
    test_env_add_row(s, ID_PLAN, "", CLR_STATE_PLAN, NULL);
    test_env_add_row(s, ID_BETA, "beta", CLR_STATE_RUNNING, NULL);
    test_env_workspace(s, ID_RUN, fx->ws, sizeof(fx->ws), 0755);
    test_env_workspace(s, ID_LOST, fx->ws_lost, sizeof(fx->ws_lost), 0755);
    test_env_workspace(s, ID_GONE, fx->ws_gone, sizeof(fx->ws_gone), 0755);
    snprintf(fx->outside, sizeof(fx->outside), "%s/outside", s->dir);
    if (mkdir(fx->outside, 0755) < 0)
        return -1;
    char p[256];
    snprintf(p, sizeof(p), "%s/secret", fx->outside);
    FILE *fp = fopen(p, "w");
    if (!fp)
        return -1;
    fputs("the host's secret\n", fp);
    fclose(fp);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    test_env_teardown(fx->e); /* also unmounts test_workspace_full's tmpfs if it failed */
    free(fx);
    return 0;
}

/* ---- helpers ---- */

static int mem_with(const char *content, size_t len)
{
    int fd = memfd_create("upload", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static char *read_all(int fd, size_t *len)
{
    off_t n = lseek(fd, 0, SEEK_END);
    assert_true(n >= 0);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
    if (len)
        *len = (size_t)n;
    return buf;
}

static char *slurp(const char *dir, const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *s = read_all(fd, NULL);
    close(fd);
    return s;
}

static void write_at(const char *dir, const char *rel, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static bool present(const char *dir, const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &st) == 0;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, d, &n, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Only the secret in the host directory next to the workspaces, unchanged. */
static void assert_outside_untouched(struct fixture *fx)
{
    char *s = slurp(fx->outside, "secret");
    assert_non_null(s);
    assert_string_equal(s, "the host's secret\n");
    free(s);
    DIR *d = opendir(fx->outside);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 1);
}

static json_int_t int_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("no integer \"%s\"", key);
    return json_integer_value(v);
}

static const char *str_of(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v)
        fail_msg("no string \"%s\"", key);
    return v;
}

/* A ustar archive, built by hand so that it can hold what no honest tar tool writes. */
struct tar {
    char buf[16384];
    size_t len;
};

static void tar_add(struct tar *t, const char *name, char type, const char *content,
                    const char *link)
{
    size_t n = content ? strlen(content) : 0;
    assert_true(t->len + 512 + ((n + 511) / 512) * 512 + 1024 <= sizeof(t->buf));
    char *h = t->buf + t->len;
    memset(h, 0, 512);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
    snprintf(h + 108, 8, "%07o", 1000);
    snprintf(h + 116, 8, "%07o", 1000);
    snprintf(h + 124, 12, "%011o", (unsigned)n);
    snprintf(h + 136, 12, "%011o", 1700000000);
    h[156] = type;
    if (link)
        snprintf(h + 157, 100, "%s", link);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    t->len += 512;
    if (n) {
        memset(t->buf + t->len, 0, ((n + 511) / 512) * 512);
        memcpy(t->buf + t->len, content, n);
        t->len += ((n + 511) / 512) * 512;
    }
}

static int tar_fd(struct tar *t)
{
    memset(t->buf + t->len, 0, 1024); /* the end: two zero blocks */
    return mem_with(t->buf, t->len + 1024);
}

/* The names of the regular files, directories and symlinks in a tar archive, "; "-joined (pax
 * extended headers skipped: the names they carry here are short enough for the ustar field). */
static void tar_names(const char *buf, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t off = 0; off + 512 <= len && buf[off];) {
        const char *h = buf + off;
        char name[101];
        snprintf(name, sizeof(name), "%.100s", h);
        unsigned long size = strtoul(h + 124, NULL, 8);
        char type = h[156];
        if (type == '0' || type == '\0' || type == '5' || type == '2') {
            size_t k = strlen(out);
            snprintf(out + k, cap - k, "%s%s%s", k ? "; " : "", name,
                     type == '2' ? " (link)" : "");
        }
        off += 512 + ((size + 511) / 512) * 512;
    }
}

/* ---- tests ---- */

static void test_put_then_get(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    clr_error err = CLR_ERROR_INIT;
    int in = mem_with("hello\n", 6);
    json_t *out = NULL;
    /* Missing parents are made; the answer says what was written. */
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "src/hello.txt", in, ACTOR, &out, &err), 0);
    close(in);
    assert_string_equal(str_of(out, "path"), "src/hello.txt");
    assert_int_equal(int_of(out, "size"), 6);
    assert_string_equal(str_of(out, "sha256"), HELLO_SHA);
    json_decref(out);
    char *got = slurp(fx->ws, "src/hello.txt");
    assert_non_null(got);
    assert_string_equal(got, "hello\n");
    free(got);
    struct stat st;
    char p[256];
    snprintf(p, sizeof(p), "%s/src/hello.txt", fx->ws);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    json_t *r = expect_audit(s, "file.upload", "ok", ID_RUN, ACTOR);
    json_t *d = json_object_get(r, "details");
    assert_string_equal(str_of(d, "path"), "src/hello.txt");
    assert_int_equal(int_of(d, "size"), 6);
    assert_string_equal(str_of(d, "sha256"), HELLO_SHA);
    json_decref(r);

    /* Read back into a spool file, charged to the daemon's download budget. */
    clr_files_budget budget = {.max = 1 << 20, .name = "max_download_total"};
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t size = 99, charged = 99;
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "src/hello.txt", sink, &budget, ACTOR,
                                          &size, &charged, &err),
                     0);
    assert_int_equal(size, 6);
    assert_int_equal(charged, 6);
    assert_int_equal(atomic_load(&budget.used), 6);
    got = read_all(sink, NULL);
    assert_string_equal(got, "hello\n");
    free(got);
    close(sink);
    clr_files_budget_release(&budget, charged);
    assert_int_equal(atomic_load(&budget.used), 0);
    r = expect_audit(s, "file.download", "ok", ID_RUN, ACTOR);
    d = json_object_get(r, "details");
    assert_string_equal(str_of(d, "path"), "src/hello.txt");
    assert_int_equal(int_of(d, "size"), 6);
    assert_string_equal(str_of(d, "sha256"), HELLO_SHA);
    json_decref(r);

    /* An upload replaces the file whole; a download without a budget is not charged. */
    in = mem_with("bye\n", 4);
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "src/hello.txt", in, ACTOR, &out, &err), 0);
    close(in);
    json_decref(out);
    sink = memfd_create("download", MFD_CLOEXEC);
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "src/hello.txt", sink, NULL, ACTOR, &size,
                                          &charged, &err),
                     0);
    assert_int_equal(size, 4);
    assert_int_equal(charged, 0);
    got = read_all(sink, NULL);
    assert_string_equal(got, "bye\n");
    free(got);
    close(sink);
    assert_int_equal(audit_count(s, "file.upload"), 2);
    assert_int_equal(audit_count(s, "file.download"), 2);

    /* A file that is not there: an error, recorded. */
    sink = memfd_create("download", MFD_CLOEXEC);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "src/nope.txt", sink, &budget, ACTOR,
                                          &size, &charged, &err),
                     -1);
    close(sink);
    expect_error(&err, CLR_E_NOT_FOUND, "nope.txt");
    assert_int_equal(size, 0);
    assert_int_equal(charged, 0);
    r = expect_audit(s, "file.download", "error", ID_RUN, ACTOR);
    assert_string_equal(str_of(json_object_get(r, "details"), "code"),
                        clr_error_code_name(CLR_E_NOT_FOUND));
    json_decref(r);
}

/* Paths that lead out of the workspace, or through a symlink the sandbox made there, are
 * refused by every action; the host directory the link points to is left as it was. */
static void test_hostile_paths(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char link[256];
    snprintf(link, sizeof(link), "%s/out", fx->ws);
    assert_int_equal(symlink(fx->outside, link), 0);
    write_at(fx->ws, "inside.txt", "inside\n");
    const char *bad[] = {"../outside/secret", "/etc/passwd", "a/../../outside/secret",
                         "out/secret", "out/new.txt", "out"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clr_error err = CLR_ERROR_INIT;
        json_t *out = NULL;
        int in = mem_with("pwned\n", 6);
        size_t before = audit_count(s, "file.upload");
        /* "out" itself is a symlink the upload replaces (a link is never followed): not here. */
        if (strcmp(bad[i], "out") != 0) {
            if (clr_service_file_put(svc, ID_RUN, bad[i], in, ACTOR, &out, &err) != -1)
                fail_msg("upload to %s was not refused", bad[i]);
            if (err.code != CLR_E_INVALID)
                fail_msg("upload to %s: %s %s", bad[i], clr_error_code_name(err.code),
                         err.message);
            assert_null(out);
            assert_int_equal(audit_count(s, "file.upload"), before + 1);
            json_decref(expect_audit(s, "file.upload", "refused", ID_RUN, ACTOR));
        }
        close(in);

        int sink = memfd_create("download", MFD_CLOEXEC);
        uint64_t size = 1, charged = 1;
        err = (clr_error)CLR_ERROR_INIT;
        if (clr_service_file_get(svc, ID_RUN, bad[i], sink, NULL, ACTOR, &size, &charged,
                                 &err) != -1 ||
            err.code != CLR_E_INVALID)
            fail_msg("download of %s: %s %s", bad[i], clr_error_code_name(err.code), err.message);
        assert_int_equal(lseek(sink, 0, SEEK_END), 0);
        close(sink);
        assert_int_equal(size, 0);

        err = (clr_error)CLR_ERROR_INIT;
        if (strcmp(bad[i], "out") != 0 &&
            (clr_service_file_delete(svc, ID_RUN, bad[i], true, ACTOR, &err) != -1 ||
             err.code != CLR_E_INVALID))
            fail_msg("delete of %s: %s %s", bad[i], clr_error_code_name(err.code), err.message);

        err = (clr_error)CLR_ERROR_INIT;
        out = NULL;
        if (clr_service_file_list(svc, ID_RUN, bad[i], &out, &err) != -1 ||
            err.code != CLR_E_INVALID)
            fail_msg("list of %s: %s %s", bad[i], clr_error_code_name(err.code), err.message);
        assert_null(out);

        struct tar t = {.len = 0};
        tar_add(&t, "x.txt", '0', "pwned\n", NULL);
        int tfd = tar_fd(&t);
        err = (clr_error)CLR_ERROR_INIT;
        if (clr_service_archive_put(svc, ID_RUN, bad[i], tfd, ACTOR, &out, &err) != -1 ||
            err.code != CLR_E_INVALID)
            fail_msg("archive into %s: %s %s", bad[i], clr_error_code_name(err.code),
                     err.message);
        close(tfd);
        json_decref(expect_audit(s, "archive.upload", "refused", ID_RUN, ACTOR));

        sink = memfd_create("download", MFD_CLOEXEC);
        err = (clr_error)CLR_ERROR_INIT;
        if (strcmp(bad[i], "out") == 0) {
            /* The link itself is archived, as a link: nothing of what it names goes out. */
            assert_int_equal(clr_service_archive_get(svc, ID_RUN, "out", sink, NULL, ACTOR,
                                                     &charged, &err),
                             0);
            size_t len = 0;
            char *tar = read_all(sink, &len);
            char names[256];
            tar_names(tar, len, names, sizeof(names));
            assert_string_equal(names, "out (link)");
            assert_null(memmem(tar, len, "the host's secret", 17));
            free(tar);
        } else if (clr_service_archive_get(svc, ID_RUN, bad[i], sink, NULL, ACTOR, &charged,
                                           &err) != -1 ||
                   err.code != CLR_E_INVALID) {
            fail_msg("archive of %s: %s %s", bad[i], clr_error_code_name(err.code), err.message);
        }
        close(sink);
        assert_outside_untouched(fx);
    }
    /* Positive control: the same actions on a path inside work. */
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t size = 0, charged = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "inside.txt", sink, NULL, ACTOR, &size,
                                          &charged, &err),
                     0);
    close(sink);
    assert_int_equal(size, 7);
    /* The link itself is listed as a link, with its target, and never followed. */
    json_t *out = NULL;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "", &out, &err), 0);
    json_t *e = json_array_get(json_object_get(out, "entries"), 1);
    assert_string_equal(str_of(e, "name"), "out");
    assert_string_equal(str_of(e, "type"), "symlink");
    assert_string_equal(str_of(e, "target"), fx->outside);
    json_decref(out);
    /* A file upload onto the link replaces the link; the directory it named stays. */
    int in = mem_with("mine\n", 5);
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "out", in, ACTOR, &out, &err), 0);
    close(in);
    json_decref(out);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_outside_untouched(fx);
}

/* Which sandboxes' workspaces may be written and read, and what an id that names none gets. */
static void test_sandbox_states(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    write_at(fx->ws_lost, "result.txt", "what it wrote before it died\n");
    write_at(fx->ws_gone, "left.txt", "left over\n");

    /* A malformed id: refused, recorded without a sandbox (it names none). */
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int in = mem_with("x", 1);
    assert_int_equal(clr_service_file_put(svc, "sb-../../etc", "a.txt", in, ACTOR, &out, &err),
                     -1);
    expect_error(&err, CLR_E_INVALID, "sb-../../etc");
    json_decref(expect_audit(s, "file.upload", "refused", NULL, ACTOR));
    /* The same for an archive. */
    struct tar t = {.len = 0};
    tar_add(&t, "a.txt", '0', "x", NULL);
    int tfd = tar_fd(&t);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, "../../etc", "", tfd, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_INVALID, "../../etc");
    json_decref(expect_audit(s, "archive.upload", "refused", NULL, ACTOR));

    /* A well-formed id without a row: 404, recorded against that id. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_put(svc, ID_NONE, "a.txt", in, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox " ID_NONE);
    json_decref(expect_audit(s, "file.upload", "error", ID_NONE, ACTOR));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_list(svc, ID_NONE, "", &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox " ID_NONE);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_NONE, "a.txt", false, ACTOR, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "no sandbox " ID_NONE);

    /* A lost sandbox: its workspace is read (what it wrote before it died), never written. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_put(svc, ID_LOST, "new.txt", in, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "is lost (oom)");
    assert_false(present(fx->ws_lost, "new.txt"));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_LOST, "result.txt", false, ACTOR, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "is lost");
    assert_true(present(fx->ws_lost, "result.txt"));
    assert_int_equal(lseek(tfd, 0, SEEK_SET), 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, ID_LOST, "", tfd, ACTOR, &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "is lost");
    assert_false(present(fx->ws_lost, "a.txt"));
    json_decref(expect_audit(s, "archive.upload", "error", ID_LOST, ACTOR));
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t size = 0, charged = 0;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_get(svc, ID_LOST, "result.txt", sink, NULL, ACTOR, &size,
                                          &charged, &err),
                     0);
    assert_int_equal(size, strlen("what it wrote before it died\n"));
    close(sink);
    assert_int_equal(clr_service_file_list(svc, ID_LOST, "", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "entries")), 1);
    json_decref(out);

    /* A destroyed sandbox and a plan's: neither read nor written, whatever is left on disk. */
    const char *closed[] = {ID_GONE, ID_PLAN};
    const char *why[] = {"is not running (destroyed)", "belongs to a running plan"};
    for (size_t i = 0; i < 2; i++) {
        sink = memfd_create("download", MFD_CLOEXEC);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_file_get(svc, closed[i], "left.txt", sink, NULL, ACTOR,
                                              &size, &charged, &err),
                         -1);
        expect_error(&err, CLR_E_CONFLICT, why[i]);
        assert_int_equal(lseek(sink, 0, SEEK_END), 0);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_archive_get(svc, closed[i], "", sink, NULL, ACTOR, &charged,
                                                 &err),
                         -1);
        expect_error(&err, CLR_E_CONFLICT, why[i]);
        assert_int_equal(lseek(sink, 0, SEEK_END), 0);
        close(sink);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_file_list(svc, closed[i], "", &out, &err), -1);
        expect_error(&err, CLR_E_CONFLICT, why[i]);
        assert_int_equal(lseek(in, 0, SEEK_SET), 0);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_service_file_put(svc, closed[i], "a.txt", in, ACTOR, &out, &err),
                         -1);
        expect_error(&err, CLR_E_CONFLICT, why[i]);
    }
    assert_false(present(fx->ws_gone, "a.txt"));
    assert_true(present(fx->ws_gone, "left.txt"));
    close(in);
    close(tfd);
}

/* Another tenant's sandbox: the gate a tenant's every per-sandbox request passes first answers
 * as for an id that does not exist; the operator (no tenant) and its own tenant get through. */
static void test_other_tenant(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    clr_error theirs = CLR_ERROR_INIT, unknown = CLR_ERROR_INIT, err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_sandbox_of(svc, ID_BETA, "beta", &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, ID_BETA, NULL, &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, ID_RUN, CLR_TENANT_DEFAULT, &err), 0);
    assert_int_equal(clr_service_sandbox_of(svc, ID_BETA, "acme", &theirs), -1);
    assert_int_equal(clr_service_sandbox_of(svc, ID_NONE, "acme", &unknown), -1);
    assert_int_equal(theirs.code, CLR_E_NOT_FOUND);
    assert_int_equal(unknown.code, CLR_E_NOT_FOUND);
    char want[128];
    snprintf(want, sizeof(want), "no sandbox %s", ID_BETA);
    assert_string_equal(theirs.message, want);
    /* The default tenant does not see beta's either. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_sandbox_of(svc, ID_BETA, CLR_TENANT_DEFAULT, &err), -1);
    assert_string_equal(err.message, want);
}

/* A download stops at the daemon's budget: refused (503), recorded, and what was charged is
 * given back; an upload stops at the workspace's size. */
static void test_over_budget(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    write_at(fx->ws, "big.txt", big);
    write_at(fx->ws, "small.txt", "ok\n");
    clr_files_budget budget = {.max = 4096, .name = "max_download_total"};
    /* Positive control: a small file fits. */
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t size = 0, charged = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "small.txt", sink, &budget, ACTOR, &size,
                                          &charged, &err),
                     0);
    close(sink);
    assert_int_equal(charged, 3);
    clr_files_budget_release(&budget, charged);
    /* Over it: refused, and the charge (up to the refusal) is reported for release. */
    sink = memfd_create("download", MFD_CLOEXEC);
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "big.txt", sink, &budget, ACTOR, &size,
                                          &charged, &err),
                     -1);
    close(sink);
    expect_error(&err, CLR_E_UNAVAILABLE, "max_download_total");
    assert_true(charged <= budget.max);
    assert_int_equal(atomic_load(&budget.used), charged);
    clr_files_budget_release(&budget, charged);
    assert_int_equal(atomic_load(&budget.used), 0);
    json_decref(expect_audit(s, "file.download", "refused", ID_RUN, ACTOR));
    /* The same for an archive. */
    sink = memfd_create("download", MFD_CLOEXEC);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_get(svc, ID_RUN, "", sink, &budget, ACTOR, &charged,
                                             &err),
                     -1);
    close(sink);
    expect_error(&err, CLR_E_UNAVAILABLE, "max_download_total");
    assert_int_equal(atomic_load(&budget.used), charged);
    clr_files_budget_release(&budget, charged);
    json_decref(expect_audit(s, "archive.download", "refused", ID_RUN, ACTOR));
}

/* An upload into a full workspace (a size-limited tmpfs, as the daemon mounts it): no space
 * (507), recorded, nothing left behind. */
static void test_workspace_full(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    if (geteuid() != 0)
        skip(); /* mounting a tmpfs needs root */
    char ws[160];
    test_env_workspace(s, ID_BETA, ws, sizeof(ws), 0755);
    assert_int_equal(mount("clr-test", ws, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k"), 0);
    /* Positive control: a small file fits. */
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int in = mem_with("fits\n", 5);
    assert_int_equal(clr_service_file_put(svc, ID_BETA, "fits.txt", in, ACTOR, &out, &err), 0);
    close(in);
    json_decref(out);
    static char big[256 * 1024];
    memset(big, 'y', sizeof(big));
    in = mem_with(big, sizeof(big));
    out = NULL;
    assert_int_equal(clr_service_file_put(svc, ID_BETA, "big.bin", in, ACTOR, &out, &err), -1);
    close(in);
    expect_error(&err, CLR_E_NO_SPACE, "no space left on the workspace");
    assert_null(out);
    json_decref(expect_audit(s, "file.upload", "error", ID_BETA, ACTOR));
    assert_false(present(ws, "big.bin"));
    json_t *listing = NULL;
    assert_int_equal(clr_service_file_list(svc, ID_BETA, "", &listing, &err), 0);
    assert_int_equal(json_array_size(json_object_get(listing, "entries")), 1);
    json_decref(listing);
    assert_int_equal(umount2(ws, MNT_DETACH), 0);
}

static void test_list(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    char p[256];
    snprintf(p, sizeof(p), "%s/dir", fx->ws);
    assert_int_equal(mkdir(p, 0750), 0);
    write_at(fx->ws, "dir/b.txt", "bb\n");
    write_at(fx->ws, "dir/a.sh", "#!/bin/sh\n");
    snprintf(p, sizeof(p), "%s/dir/a.sh", fx->ws);
    assert_int_equal(chmod(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/dir/c", fx->ws);
    assert_int_equal(symlink("b.txt", p), 0);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "dir", &out, &err), 0);
    assert_string_equal(str_of(out, "path"), "dir");
    json_t *e = json_object_get(out, "entries");
    assert_int_equal(json_array_size(e), 3);
    /* Sorted by name, each with its type, size and mode; a link with its target. */
    json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1), *c = json_array_get(e, 2);
    assert_string_equal(str_of(a, "name"), "a.sh");
    assert_string_equal(str_of(a, "type"), "file");
    assert_string_equal(str_of(a, "mode"), "0755");
    assert_int_equal(int_of(a, "size"), 10);
    assert_true(json_is_null(json_object_get(a, "target")));
    assert_true(int_of(a, "mtime") > 0);
    assert_string_equal(str_of(b, "name"), "b.txt");
    assert_string_equal(str_of(b, "mode"), "0644");
    assert_int_equal(int_of(b, "size"), 3);
    assert_string_equal(str_of(c, "name"), "c");
    assert_string_equal(str_of(c, "type"), "symlink");
    assert_string_equal(str_of(c, "target"), "b.txt");
    json_decref(out);
    /* The root: "" lists it. */
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "", &out, &err), 0);
    assert_string_equal(str_of(out, "path"), "");
    e = json_array_get(json_object_get(out, "entries"), 0);
    assert_string_equal(str_of(e, "name"), "dir");
    assert_string_equal(str_of(e, "type"), "dir");
    assert_string_equal(str_of(e, "mode"), "0750");
    json_decref(out);
    /* A file is not a directory; a missing directory is not found. */
    out = NULL;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "dir/b.txt", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "nowhere", &out, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_null(out);
}

static void test_delete(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char p[256];
    snprintf(p, sizeof(p), "%s/tree", fx->ws);
    assert_int_equal(mkdir(p, 0755), 0);
    write_at(fx->ws, "tree/one.txt", "1\n");
    write_at(fx->ws, "lone.txt", "lone\n");
    /* A link to the host directory is removed as a link. */
    snprintf(p, sizeof(p), "%s/tree/out", fx->ws);
    assert_int_equal(symlink(fx->outside, p), 0);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "lone.txt", false, ACTOR, &err), 0);
    assert_false(present(fx->ws, "lone.txt"));
    json_t *r = expect_audit(s, "file.delete", "ok", ID_RUN, ACTOR);
    json_t *d = json_object_get(r, "details");
    assert_string_equal(str_of(d, "path"), "lone.txt");
    assert_int_equal(int_of(d, "size"), -1);
    assert_true(json_is_null(json_object_get(d, "sha256")));
    json_decref(r);
    /* A directory that is not empty needs recursive. */
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "tree", false, ACTOR, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_true(present(fx->ws, "tree/one.txt"));
    json_decref(expect_audit(s, "file.delete", "error", ID_RUN, ACTOR));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "tree", true, ACTOR, &err), 0);
    assert_false(present(fx->ws, "tree"));
    assert_outside_untouched(fx);
    /* Gone already: not found, recorded. */
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "tree", true, ACTOR, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    json_decref(expect_audit(s, "file.delete", "error", ID_RUN, ACTOR));
    /* The root is never deleted. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "", true, ACTOR, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    struct stat st;
    assert_int_equal(stat(fx->ws, &st), 0);
    json_decref(expect_audit(s, "file.delete", "refused", ID_RUN, ACTOR));
    assert_int_equal(audit_count(s, "file.delete"), 5);
}

static void test_archive_put(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    struct tar t = {.len = 0};
    tar_add(&t, "pkg/", '5', NULL, NULL);
    tar_add(&t, "pkg/a.txt", '0', "hello\n", NULL);
    tar_add(&t, "pkg/b.txt", '0', "b\n", NULL);
    tar_add(&t, "pkg/link", '2', NULL, "a.txt");
    int tfd = tar_fd(&t);
    char sha[65];
    sha256_hex(t.buf, t.len + 1024, sha);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, ID_RUN, "into", tfd, ACTOR, &out, &err), 0);
    close(tfd);
    assert_string_equal(str_of(out, "path"), "into");
    assert_int_equal(int_of(out, "entries"), 4);
    assert_int_equal(int_of(out, "files"), 2);
    assert_int_equal(int_of(out, "bytes"), 8);
    assert_int_equal(int_of(out, "symlinks"), 1);
    assert_string_equal(str_of(out, "sha256"), sha);
    json_decref(out);
    char *got = slurp(fx->ws, "into/pkg/a.txt");
    assert_non_null(got);
    assert_string_equal(got, "hello\n");
    free(got);
    char target[64] = "";
    char p[256];
    snprintf(p, sizeof(p), "%s/into/pkg/link", fx->ws);
    assert_int_equal(readlink(p, target, sizeof(target) - 1), 5);
    assert_string_equal(target, "a.txt");
    json_t *r = expect_audit(s, "archive.upload", "ok", ID_RUN, ACTOR);
    assert_string_equal(str_of(json_object_get(r, "details"), "sha256"), sha);
    assert_int_equal(int_of(json_object_get(r, "details"), "entries"), 4);
    json_decref(r);

    /* Hostile entries: the whole archive is refused, its good entries with it. */
    const char *bad[] = {"../escaped.txt", "/tmp/abs.txt", "ok/../../escaped.txt",
                         "out/through-link.txt"};
    char link[256];
    snprintf(link, sizeof(link), "%s/out", fx->ws);
    assert_int_equal(symlink(fx->outside, link), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tar h = {.len = 0};
        tar_add(&h, "good.txt", '0', "good\n", NULL);
        tar_add(&h, bad[i], '0', "pwned\n", NULL);
        tfd = tar_fd(&h);
        err = (clr_error)CLR_ERROR_INIT;
        out = NULL;
        assert_int_equal(clr_service_archive_put(svc, ID_RUN, "", tfd, ACTOR, &out, &err), -1);
        close(tfd);
        if (err.code != CLR_E_INVALID && err.code != CLR_E_CONFLICT)
            fail_msg("entry %s: %s %s", bad[i], clr_error_code_name(err.code), err.message);
        assert_null(out);
        assert_false(present(fx->ws, "good.txt"));
        assert_false(present(s->dir, "escaped.txt"));
        assert_false(present("/tmp", "abs.txt"));
        assert_outside_untouched(fx);
        json_decref(expect_audit(s, "archive.upload",
                                 err.code == CLR_E_INVALID ? "refused" : "error", ID_RUN, ACTOR));
    }
    /* A hard link and a device are refused too. */
    struct tar h = {.len = 0};
    tar_add(&h, "hard", '1', NULL, "/etc/passwd");
    tfd = tar_fd(&h);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, ID_RUN, "", tfd, ACTOR, &out, &err), -1);
    close(tfd);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_false(present(fx->ws, "hard"));
    /* Not an archive at all. */
    tfd = mem_with("this is not a tar archive, not even close; it is text.\n", 55);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, ID_RUN, "", tfd, ACTOR, &out, &err), -1);
    close(tfd);
    assert_int_not_equal(err.code, CLR_E_NONE);
    json_decref(expect_audit(s, "archive.upload", err.code == CLR_E_INVALID ? "refused" : "error",
                             ID_RUN, ACTOR));
}

static void test_archive_get(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    char p[256];
    snprintf(p, sizeof(p), "%s/src", fx->ws);
    assert_int_equal(mkdir(p, 0755), 0);
    write_at(fx->ws, "src/main.c", "int main(void) { return 0; }\n");
    write_at(fx->ws, "src/util.h", "#pragma once\n");
    snprintf(p, sizeof(p), "%s/src/fifo", fx->ws);
    assert_int_equal(mkfifo(p, 0644), 0);
    clr_files_budget budget = {.max = 1 << 20, .name = "max_download_total"};
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t charged = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_get(svc, ID_RUN, "src", sink, &budget, ACTOR, &charged,
                                             &err),
                     0);
    size_t len = 0;
    char *tar = read_all(sink, &len);
    close(sink);
    assert_true(len >= 1024);
    assert_int_equal(charged, len);
    assert_int_equal(atomic_load(&budget.used), len);
    char names[512];
    tar_names(tar, len, names, sizeof(names));
    assert_string_equal(names, "main.c; util.h");
    char sha[65];
    sha256_hex(tar, len, sha);
    free(tar);
    /* Recorded with what went out: the FIFO skipped, the archive's hash. */
    json_t *r = expect_audit(s, "archive.download", "ok", ID_RUN, ACTOR);
    json_t *d = json_object_get(r, "details");
    assert_string_equal(str_of(d, "path"), "src");
    assert_int_equal(int_of(d, "skipped"), 1);
    assert_int_equal(int_of(d, "bytes"), strlen("int main(void) { return 0; }\n") + 13);
    assert_string_equal(str_of(d, "sha256"), sha);
    json_decref(r);
    /* A missing path: not found, recorded. */
    sink = memfd_create("download", MFD_CLOEXEC);
    assert_int_equal(clr_service_archive_get(svc, ID_RUN, "nope", sink, NULL, ACTOR, &charged,
                                             &err),
                     -1);
    close(sink);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    json_decref(expect_audit(s, "archive.download", "error", ID_RUN, ACTOR));
    /* The root of a lost sandbox may be archived. */
    write_at(fx->ws_lost, "out.log", "last words\n");
    sink = memfd_create("download", MFD_CLOEXEC);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_get(svc, ID_LOST, "", sink, NULL, ACTOR, &charged, &err),
                     0);
    tar = read_all(sink, &len);
    close(sink);
    tar_names(tar, len, names, sizeof(names));
    free(tar);
    assert_string_equal(names, "out.log");
}

/* Fail closed: with an audit log that cannot be written (here replaced by a directory), no
 * file action runs: uploads, deletes and archive uploads are refused (503) naming the log, and
 * the workspace is left as it was. */
static void test_audit_unwritable(void **state)
{
    struct fixture *fx = *state;
    struct test_env *s = fx->e;
    clr_service *svc = &s->svc;
    write_at(fx->ws, "keep.txt", "keep\n");
    /* Positive control: with the log in place, an upload is made and recorded. */
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int in = mem_with("hello\n", 6);
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "first.txt", in, ACTOR, &out, &err), 0);
    json_decref(out);
    assert_true(present(fx->ws, "first.txt"));
    char moved[160];
    snprintf(moved, sizeof(moved), "%s.moved", s->log);
    assert_int_equal(rename(s->log, moved), 0);
    assert_int_equal(mkdir(s->log, 0700), 0);

    assert_int_equal(lseek(in, 0, SEEK_SET), 0);
    out = NULL;
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "second.txt", in, ACTOR, &out, &err), -1);
    close(in);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    assert_null(out);
    assert_false(present(fx->ws, "second.txt"));

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "keep.txt", false, ACTOR, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    assert_true(present(fx->ws, "keep.txt"));

    struct tar t = {.len = 0};
    tar_add(&t, "unrecorded.txt", '0', "x\n", NULL);
    int tfd = tar_fd(&t);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_put(svc, ID_RUN, "", tfd, ACTOR, &out, &err), -1);
    close(tfd);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    assert_null(out);
    assert_false(present(fx->ws, "unrecorded.txt"));

    /* Reads write nothing to the workspace, but their records fail too: an error, no answer. */
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t size = 0, charged = 0;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_get(svc, ID_RUN, "keep.txt", sink, NULL, ACTOR, &size,
                                          &charged, &err),
                     -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_archive_get(svc, ID_RUN, "", sink, NULL, ACTOR, &charged, &err),
                     -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    close(sink);

    /* The log back. The failed appends are remembered until one succeeds: the first action is
     * still refused, and its refusal is the record that shows the log works; then actions run
     * and are recorded again. */
    assert_int_equal(rmdir(s->log), 0);
    assert_int_equal(rename(moved, s->log), 0);
    size_t deletes = audit_count(s, "file.delete");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "keep.txt", false, ACTOR, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, s->log);
    json_decref(expect_audit(s, "file.delete", "refused", ID_RUN, ACTOR));
    assert_int_equal(audit_count(s, "file.delete"), deletes + 1);
    assert_true(present(fx->ws, "keep.txt"));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "keep.txt", false, ACTOR, &err), 0);
    assert_false(present(fx->ws, "keep.txt"));
    json_decref(expect_audit(s, "file.delete", "ok", ID_RUN, ACTOR));
}

/* Names that are not UTF-8 (any bytes but '/' and NUL make a name): listed like any other,
 * those bytes as \xNN, never left out; a client's path of such a name answered and recorded the
 * same way. Before, the listing left such entries out (a sandbox could hide files from it) and
 * an action on such a path answered nothing and recorded no details. */
static void test_list_names_not_utf8(void **state)
{
    struct fixture *fx = *state;
    clr_service *svc = &fx->e->svc;
    write_at(fx->ws, "a.txt", "a\n");
    write_at(fx->ws, "b-\xff.txt", "hidden?\n");
    char p[256];
    snprintf(p, sizeof(p), "%s/c-link", fx->ws);
    assert_int_equal(symlink("target-\xfe", p), 0);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "", &out, &err), 0);
    json_t *e = json_object_get(out, "entries");
    assert_int_equal(json_array_size(e), 3);
    assert_string_equal(str_of(json_array_get(e, 0), "name"), "a.txt");
    assert_string_equal(str_of(json_array_get(e, 1), "name"), "b-\\xff.txt");
    assert_string_equal(str_of(json_array_get(e, 1), "type"), "file");
    assert_string_equal(str_of(json_array_get(e, 2), "name"), "c-link");
    assert_string_equal(str_of(json_array_get(e, 2), "target"), "target-\\xfe");
    char *text = json_dumps(out, JSON_COMPACT);
    assert_non_null(text);
    free(text);
    json_decref(out);

    /* Such a path named by the client: the action runs, its answer and record say so. */
    struct test_env *s = fx->e;
    int in = mem_with("up\n", 3);
    out = NULL;
    assert_int_equal(clr_service_file_put(svc, ID_RUN, "d-\xff/up.txt", in, ACTOR, &out, &err),
                     0);
    close(in);
    assert_non_null(out);
    assert_string_equal(str_of(out, "path"), "d-\\xff/up.txt");
    json_decref(out);
    json_t *r = expect_audit(s, "file.upload", "ok", ID_RUN, ACTOR);
    assert_string_equal(str_of(json_object_get(r, "details"), "path"), "d-\\xff/up.txt");
    json_decref(r);
    out = NULL;
    assert_int_equal(clr_service_file_list(svc, ID_RUN, "d-\xff", &out, &err), 0);
    assert_non_null(out);
    assert_string_equal(str_of(out, "path"), "d-\\xff");
    assert_int_equal(json_array_size(json_object_get(out, "entries")), 1);
    json_decref(out);
    int sink = memfd_create("download", MFD_CLOEXEC);
    uint64_t charged = 0;
    assert_int_equal(clr_service_archive_get(svc, ID_RUN, "d-\xff", sink, NULL, ACTOR, &charged,
                                             &err),
                     0);
    close(sink);
    r = expect_audit(s, "archive.download", "ok", ID_RUN, ACTOR);
    assert_string_equal(str_of(json_object_get(r, "details"), "path"), "d-\\xff");
    json_decref(r);
    struct tar t = {.len = 0};
    tar_add(&t, "x.txt", '0', "x\n", NULL);
    int tfd = tar_fd(&t);
    out = NULL;
    assert_int_equal(clr_service_archive_put(svc, ID_RUN, "d-\xff", tfd, ACTOR, &out, &err), 0);
    close(tfd);
    assert_non_null(out);
    assert_string_equal(str_of(out, "path"), "d-\\xff");
    json_decref(out);
    assert_int_equal(clr_service_file_delete(svc, ID_RUN, "d-\xff", true, ACTOR, &err), 0);
    r = expect_audit(s, "file.delete", "ok", ID_RUN, ACTOR);
    assert_string_equal(str_of(json_object_get(r, "details"), "path"), "d-\\xff");
    json_decref(r);
    assert_false(present(fx->ws, "d-\xff"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_then_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_over_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workspace_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_names_not_utf8, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
