/* The fixture and helpers every gitws test shares: a real repository made with the git command
 * line in a temporary directory, two empty workspaces, and helpers that prepare and commit
 * through the library and ask git what happened. Included by the test_gitws_*.c files (one
 * per lib/gitws_*.c module). */
#ifndef CLR_TEST_GITWS_FIXTURE_H
#define CLR_TEST_GITWS_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cost.h"
#include <git2.h>

#include "clearing/clearing.h"

typedef struct fixture {
    char root[64];
    char repo[128];
    char ws[128];
    char ws2[128];
} fixture;

/* ---- helpers ---- */

static inline double cpu_s_since(const struct cost *before)
{
    return (double)(cost_now().cpu_ns - before->cpu_ns) / 1e9;
}

__attribute__((format(printf, 1, 2))) static inline void sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("command failed (%d): %s", rc, cmd);
}

/* A command's standard output, NUL-terminated; *len (if given) counts embedded NULs too. */
__attribute__((format(printf, 2, 3))) static inline char *sh_out(size_t *len, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + n, 1, cap - n - 1, p)) > 0;) {
        n += r;
        if (cap - n < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    if (pclose(p) != 0)
        fail_msg("command failed: %s", cmd);
    if (len)
        *len = n;
    return buf;
}

static inline char *rev(const fixture *f, const char *spec)
{
    char *s = sh_out(NULL, "git -C %s rev-parse '%s'", f->repo, spec);
    s[strcspn(s, "\n")] = '\0';
    return s;
}

static inline void write_file(const char *dir, const char *rel, const char *content, size_t len,
                       mode_t mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    fchmod(fd, mode);
    close(fd);
}

static inline void put(const char *dir, const char *rel, const char *content)
{
    write_file(dir, rel, content, strlen(content), 0644);
}

static inline bool exists(const char *dir, const char *rel)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    return lstat(path, &st) == 0;
}

/* "mode path" lines of a revision's whole tree, sorted. */
static inline char *tree_listing(const fixture *f, const char *spec)
{
    return sh_out(NULL, "git -C %s ls-tree -r --format='%%(objectmode) %%(path)' '%s' | sort",
                  f->repo, spec);
}

static inline bool skipped_has(const clr_git_commit_result *r, const char *path, const char *kind)
{
    for (size_t i = 0; i < r->n_skipped; i++)
        if (strcmp(r->skipped[i].path, path) == 0 && strcmp(r->skipped[i].kind, kind) == 0)
            return true;
    return false;
}

static inline void prepare(const fixture *f, const char *ws, const char *sandbox_id,
                    clr_git_workspace *out)
{
    clr_error err = CLR_ERROR_INIT;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = ws;
    o.sandbox_id = sandbox_id;
    o.uid = getuid();
    o.gid = getgid();
    if (clr_git_prepare(out, &o, &err) < 0)
        fail_msg("prepare: %s", err.message);
}

static inline clr_git_commit_options commit_options(const fixture *f, const char *ws, const char *branch)
{
    clr_git_commit_options o = CLR_GIT_COMMIT_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = ws;
    o.branch = branch;
    o.message = "work from the sandbox";
    return o;
}

static inline void commit_ok(const clr_git_commit_options *o, clr_git_commit_result *r)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_git_commit(r, o, &err) < 0)
        fail_msg("commit: %s", err.message);
}

/* ---- fixtures ---- */

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->root, "/tmp/clr-gitws-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->repo, sizeof(f->repo), "%s/repo", f->root);
    snprintf(f->ws, sizeof(f->ws), "%s/ws", f->root);
    snprintf(f->ws2, sizeof(f->ws2), "%s/ws2", f->root);
    mkdir(f->ws, 0755);
    mkdir(f->ws2, 0755);
    sh("git init -q -b main %s", f->repo);
    put(f->repo, "README.md", "hello\nworld\n");
    sh("mkdir -p %s/src/util", f->repo);
    put(f->repo, "src/main.c", "int main(void) { return 0; }\n");
    put(f->repo, "src/util/helper.c", "int helper(void) { return 1; }\n");
    put(f->repo, "tool.sh", "#!/bin/sh\necho hi\n");
    put(f->repo, "delete_me.txt", "bye\n");
    char lines[2048] = "";
    for (int i = 0; i < 30; i++)
        snprintf(lines + strlen(lines), sizeof(lines) - strlen(lines), "line %d of the file\n", i);
    put(f->repo, "old_name.txt", lines);
    sh("cd %s && ln -s README.md link && git add -A && git commit -q -m base", f->repo);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    sh("rm -rf %s", f->root);
    free(f);
    return 0;
}

static inline void gitws_test_env(void)
{
    setenv("GIT_AUTHOR_NAME", "Test", 1);
    setenv("GIT_AUTHOR_EMAIL", "test@example.com", 1);
    setenv("GIT_COMMITTER_NAME", "Test", 1);
    setenv("GIT_COMMITTER_EMAIL", "test@example.com", 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
}

#endif
