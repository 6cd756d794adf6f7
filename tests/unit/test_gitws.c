/* Git workspaces: real repositories in temporary directories, made with the git command line,
 * prepared and committed through the library, and checked with git again. The hostile cases
 * play the sandbox: they leave in the workspace what an attacker would, sometimes while the
 * walk runs (through the walk's test hook), and assert on what ends up in the repository. */
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

static double cpu_s_since(const struct cost *before)
{
    return (double)(cost_now().cpu_ns - before->cpu_ns) / 1e9;
}

__attribute__((format(printf, 1, 2))) static void sh(const char *fmt, ...)
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
__attribute__((format(printf, 2, 3))) static char *sh_out(size_t *len, const char *fmt, ...)
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

static char *rev(const fixture *f, const char *spec)
{
    char *s = sh_out(NULL, "git -C %s rev-parse '%s'", f->repo, spec);
    s[strcspn(s, "\n")] = '\0';
    return s;
}

static void write_file(const char *dir, const char *rel, const char *content, size_t len,
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

static void put(const char *dir, const char *rel, const char *content)
{
    write_file(dir, rel, content, strlen(content), 0644);
}

static bool exists(const char *dir, const char *rel)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    return lstat(path, &st) == 0;
}

/* "mode path" lines of a revision's whole tree, sorted. */
static char *tree_listing(const fixture *f, const char *spec)
{
    return sh_out(NULL, "git -C %s ls-tree -r --format='%%(objectmode) %%(path)' '%s' | sort",
                  f->repo, spec);
}

static bool skipped_has(const clr_git_commit_result *r, const char *path, const char *kind)
{
    for (size_t i = 0; i < r->n_skipped; i++)
        if (strcmp(r->skipped[i].path, path) == 0 && strcmp(r->skipped[i].kind, kind) == 0)
            return true;
    return false;
}

static void prepare(const fixture *f, const char *ws, const char *sandbox_id,
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

static clr_git_commit_options commit_options(const fixture *f, const char *ws, const char *branch)
{
    clr_git_commit_options o = CLR_GIT_COMMIT_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = ws;
    o.branch = branch;
    o.message = "work from the sandbox";
    return o;
}

static void commit_ok(const clr_git_commit_options *o, clr_git_commit_result *r)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_git_commit(r, o, &err) < 0)
        fail_msg("commit: %s", err.message);
}

/* ---- fixtures ---- */

static int setup(void **state)
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

static int teardown(void **state)
{
    fixture *f = *state;
    sh("rm -rf %s", f->root);
    free(f);
    return 0;
}

/* ---- the glob and ignore matcher ---- */

static void glob_basics(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("*.c", "a.c"));
    assert_true(clr_git_glob_match("*.c", ".c"));
    assert_false(clr_git_glob_match("*.c", "a/b.c"));
    assert_false(clr_git_glob_match("*.c", "a.h"));
    assert_true(clr_git_glob_match("foo*bar", "foobar"));
    assert_true(clr_git_glob_match("foo*bar", "foo-x-bar"));
    assert_false(clr_git_glob_match("foo*bar", "foo/bar"));
    assert_true(clr_git_glob_match("a?c", "abc"));
    assert_false(clr_git_glob_match("a?c", "a/c"));
    assert_false(clr_git_glob_match("a?c", "ac"));
    assert_true(clr_git_glob_match("exact", "exact"));
    assert_false(clr_git_glob_match("exact", "exactly"));
}

static void glob_brackets_and_escapes(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("[abc]x", "bx"));
    assert_false(clr_git_glob_match("[abc]x", "dx"));
    assert_true(clr_git_glob_match("[a-c]", "b"));
    assert_false(clr_git_glob_match("[a-c]", "d"));
    assert_true(clr_git_glob_match("[!a-c]", "d"));
    assert_false(clr_git_glob_match("[!a-c]", "b"));
    assert_true(clr_git_glob_match("[^a]", "b"));
    assert_true(clr_git_glob_match("[]]", "]"));
    assert_true(clr_git_glob_match("[a-]", "-"));
    assert_true(clr_git_glob_match("[[:digit:]]x", "5x"));
    assert_false(clr_git_glob_match("[[:digit:]]x", "ax"));
    assert_true(clr_git_glob_match("[[:upper:][:digit:]]", "Q"));
    assert_false(clr_git_glob_match("[[:bogus:]]", "b"));
    assert_false(clr_git_glob_match("[abc", "a"));     /* unclosed: matches nothing */
    assert_false(clr_git_glob_match("a[/]b", "a/b")); /* a bracket never matches '/' */
    assert_true(clr_git_glob_match("\\*", "*"));
    assert_false(clr_git_glob_match("\\*", "a"));
    assert_true(clr_git_glob_match("a\\?", "a?"));
    assert_false(clr_git_glob_match("a\\?", "ab"));
    assert_true(clr_git_glob_match("[\\]]", "]"));
}

static void glob_double_star(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("**/foo", "foo"));
    assert_true(clr_git_glob_match("**/foo", "a/b/foo"));
    assert_false(clr_git_glob_match("**/foo", "a/b/foox"));
    assert_true(clr_git_glob_match("foo/**", "foo/a"));
    assert_true(clr_git_glob_match("foo/**", "foo/a/b"));
    assert_false(clr_git_glob_match("foo/**", "foo"));
    assert_false(clr_git_glob_match("foo/**", "bar/a"));
    assert_true(clr_git_glob_match("a/**/b", "a/b"));
    assert_true(clr_git_glob_match("a/**/b", "a/x/b"));
    assert_true(clr_git_glob_match("a/**/b", "a/x/y/b"));
    assert_false(clr_git_glob_match("a/**/b", "ax/b"));
    assert_false(clr_git_glob_match("a/**/b", "a/x/bc"));
    assert_true(clr_git_glob_match("**", "any/thing/at/all"));
    assert_true(clr_git_glob_match("docs/**/*.gen", "docs/x.gen"));
    assert_true(clr_git_glob_match("docs/**/*.gen", "docs/a/b/x.gen"));
    assert_false(clr_git_glob_match("docs/**/*.gen", "docs/a/b/x.txt"));
    /* Not a whole component: a plain star that stays within one directory. */
    assert_true(clr_git_glob_match("a**b", "axxb"));
    assert_false(clr_git_glob_match("a**b", "ax/b"));
    assert_true(clr_git_glob_match("**foo", "xfoo"));
    assert_false(clr_git_glob_match("**foo", "x/foo"));
}

static void glob_hostile_patterns_are_bounded(void **state)
{
    (void)state;
    char subject[256];
    memset(subject, 'a', sizeof(subject) - 1);
    subject[sizeof(subject) - 1] = '\0';
    char deep[1024] = "";
    for (int i = 0; i < 60; i++)
        strcat(deep, "a/");
    strcat(deep, "x");
    /* Unbounded, the first two would backtrack through some 10^20 ways; bounded, they cost
     * milliseconds of CPU. */
    struct cost before = cost_now();
    assert_false(clr_git_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*b", subject));
    assert_false(clr_git_glob_match("**/**/**/**/**/**/**/**/y", deep));
    assert_true(clr_git_glob_match("**/**/**/x", deep));
    double cpu = cpu_s_since(&before);
    print_message("hostile globs: %.4f s of CPU\n", cpu);
    assert_true(cpu < 2.0);
}

static clr_git_ignore *ignore(const clr_git_ignore *parent, const char *dir, const char *text)
{
    clr_error err = CLR_ERROR_INIT;
    clr_git_ignore *ig = NULL;
    if (clr_git_ignore_parse(&ig, parent, dir, text, strlen(text), &err) < 0)
        fail_msg("parse: %s", err.message);
    return ig;
}

static void ignore_rules(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "# a comment\n\n*.log\n!keep.log\n   \n#*.c\n");
    assert_true(clr_git_ignored(ig, "x.log", false));
    assert_true(clr_git_ignored(ig, "a/b/x.log", false));
    assert_false(clr_git_ignored(ig, "keep.log", false));
    assert_false(clr_git_ignored(ig, "a/keep.log", false));
    assert_false(clr_git_ignored(ig, "x.c", false)); /* commented out */
    assert_false(clr_git_ignored(ig, "# a comment", false));
    clr_git_ignore_free(ig);

    ig = ignore(NULL, "", "build/\n/top\ndoc/frotz\n");
    assert_true(clr_git_ignored(ig, "build", true));
    assert_false(clr_git_ignored(ig, "build", false)); /* dir-only */
    assert_true(clr_git_ignored(ig, "a/build", true));
    assert_true(clr_git_ignored(ig, "top", false));
    assert_false(clr_git_ignored(ig, "a/top", false)); /* leading '/' anchors */
    assert_true(clr_git_ignored(ig, "doc/frotz", true));
    assert_false(clr_git_ignored(ig, "a/doc/frotz", true)); /* an inner '/' anchors */
    clr_git_ignore_free(ig);
}

static void ignore_later_rules_win(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "!a.txt\na.txt\nb.txt\n!b.txt\n*.o\n!keep*.o\n");
    assert_true(clr_git_ignored(ig, "a.txt", false));
    assert_false(clr_git_ignored(ig, "b.txt", false));
    assert_true(clr_git_ignored(ig, "x.o", false));
    assert_false(clr_git_ignored(ig, "keep-me.o", false));
    clr_git_ignore_free(ig);
}

static void ignore_escapes_and_spaces(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "a.txt   \nb\\ \n\\#hash\n\\!bang\n");
    assert_true(clr_git_ignored(ig, "a.txt", false)); /* trailing spaces dropped */
    assert_true(clr_git_ignored(ig, "b ", false));    /* unless escaped */
    assert_false(clr_git_ignored(ig, "b", false));
    assert_true(clr_git_ignored(ig, "#hash", false));
    assert_true(clr_git_ignored(ig, "!bang", false));
    clr_git_ignore_free(ig);
}

static void ignore_nested_files(void **state)
{
    (void)state;
    clr_git_ignore *top = ignore(NULL, "", "*.log\n/x\n");
    clr_git_ignore *sub = ignore(top, "sub", "!*.log\n/x\nlocal/\n");
    assert_false(clr_git_ignored(sub, "sub/a.log", false)); /* the deeper file wins */
    assert_true(clr_git_ignored(sub, "a.log", false));
    assert_true(clr_git_ignored(sub, "other/a.log", false));
    assert_true(clr_git_ignored(sub, "sub/x", false)); /* anchored to sub/ */
    assert_false(clr_git_ignored(sub, "sub/y/x", false));
    assert_true(clr_git_ignored(sub, "x", false));     /* the top file's own /x */
    assert_true(clr_git_ignored(sub, "sub/deep/local", true));
    assert_false(clr_git_ignored(sub, "local", true)); /* sub's rules stay in sub */
    assert_false(clr_git_ignored(sub, "subx/a.txt", false));
    clr_git_ignore_free(sub);
    clr_git_ignore_free(top);
}

/* ---- prepare ---- */

static int check_owner_uid = 4242, check_owner_gid = 4343;
static int owner_mismatches;

static int count_owner(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path, (void)flag, (void)ftw;
    if ((int)st->st_uid != check_owner_uid || (int)st->st_gid != check_owner_gid)
        owner_mismatches++;
    return 0;
}

static void prepare_from_head(void **state)
{
    fixture *f = *state;
    if (geteuid() != 0)
        skip();
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.sandbox_id = "sb-0000000000000001";
    o.uid = (uid_t)check_owner_uid;
    o.gid = (gid_t)check_owner_gid;
    assert_int_equal(clr_git_prepare(&w, &o, &err), 0);
    assert_string_equal(w.branch, "clearing/sb-0000000000000001");
    char *head = rev(f, "HEAD");
    assert_string_equal(w.base_commit, head);
    assert_string_equal(w.start_commit, head);
    char *tip = rev(f, "clearing/sb-0000000000000001");
    assert_string_equal(tip, head);
    /* The tree is there, byte for byte, with its link; no .git. */
    sh("cd %s && git archive HEAD | tar -x -C %s/.. --one-top-level=expect", f->repo, f->ws);
    sh("diff -r --no-dereference %s %s/expect", f->ws, f->root);
    assert_false(exists(f->ws, ".git"));
    char target[256] = "";
    snprintf(target, sizeof(target), "%s/link", f->ws);
    char buf[64] = "";
    assert_int_equal(readlink(target, buf, sizeof(buf)), 9);
    assert_memory_equal(buf, "README.md", 9);
    owner_mismatches = 0;
    assert_int_equal(nftw(f->ws, count_owner, 16, FTW_PHYS), 0);
    assert_int_equal(owner_mismatches, 0);
    free(head);
    free(tip);
}

static void prepare_from_ref(void **state)
{
    fixture *f = *state;
    sh("cd %s && git tag v1 && echo two > later.txt && git add later.txt && git commit -q -m two",
       f->repo);
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.base_ref = "v1";
    o.branch = "feature/agent";
    o.uid = getuid();
    o.gid = getgid();
    assert_int_equal(clr_git_prepare(&w, &o, &err), 0);
    char *v1 = rev(f, "v1^{commit}");
    assert_string_equal(w.base_commit, v1);
    assert_string_equal(w.branch, "feature/agent");
    char *tip = rev(f, "feature/agent");
    assert_string_equal(tip, v1);
    assert_true(exists(f->ws, "README.md"));
    assert_false(exists(f->ws, "later.txt"));
    free(v1);
    free(tip);
}

static void prepare_bad_input(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.sandbox_id = "sb-1";
    o.base_ref = "no-such-ref";
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "no-such-ref"));
    o.base_ref = NULL;
    o.branch = "bad..name";
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    o.branch = NULL;
    o.repo_path = f->ws; /* not a repository */
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    /* A workspace the sandbox could already have written to is refused. */
    o.repo_path = f->repo;
    put(f->ws, "stale", "x");
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    /* None of the failures left a branch behind. */
    char *refs = sh_out(NULL, "git -C %s for-each-ref refs/heads/clearing", f->repo);
    assert_string_equal(refs, "");
    free(refs);
}

static void prepare_existing_branch(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-1", &w);
    put(f->ws, "from-first-run.txt", "first\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w2;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws2;
    o.sandbox_id = "sb-1";
    o.uid = getuid();
    o.gid = getgid();
    assert_int_equal(clr_git_prepare(&w2, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "branch clearing/sb-1 exists"));
    assert_non_null(strstr(err.message, "pass reuse"));
    o.reuse_branch = true;
    assert_int_equal(clr_git_prepare(&w2, &o, &err), 0);
    assert_string_equal(w2.start_commit, r.commit);
    assert_string_equal(w2.base_commit, w.base_commit);
    assert_true(exists(f->ws2, "from-first-run.txt"));
    clr_git_commit_result_clear(&r);
}

static void checked_out_branch_refused(void **state)
{
    fixture *f = *state;
    clr_error err = CLR_ERROR_INIT;
    clr_git_workspace w;
    clr_git_prepare_options o = CLR_GIT_PREPARE_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.workspace_dir = f->ws;
    o.branch = "main";
    o.reuse_branch = true;
    assert_int_equal(clr_git_prepare(&w, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "checked out"));
    clr_git_commit_options co = commit_options(f, f->ws, "main");
    clr_git_commit_result r;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    co.branch = "never-prepared";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    clr_git_commit_result_clear(&r);
}

/* ---- commit ---- */

static void commit_every_kind_of_change(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-2", &w);
    char path[256];
    put(f->ws, "README.md", "hello\nworld\nand more\n");
    sh("mkdir -p %s/new/dir/deep %s/empty_dir/also_empty", f->ws, f->ws);
    put(f->ws, "new/dir/deep/file.txt", "deep\n");
    snprintf(path, sizeof(path), "%s/delete_me.txt", f->ws);
    assert_int_equal(unlink(path), 0);
    sh("mv %s/old_name.txt %s/new_name.txt", f->ws, f->ws);
    snprintf(path, sizeof(path), "%s/tool.sh", f->ws);
    assert_int_equal(chmod(path, 0755), 0);
    static const char binary[] = "\x7f" "ELF\0\0\x01\x02\0binary\0data";
    write_file(f->ws, "bin.dat", binary, sizeof(binary) - 1, 0644);

    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    const char *trailers[] = {"Sandbox-Id: sb-2", "Co-authored-by: Agent <agent@example.com>",
                              NULL};
    co.message = "Agent work\n\n";
    co.trailers = trailers;
    co.author_name = "Agent";
    co.author_email = "agent@example.com";
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    assert_string_equal(r.branch, "clearing/sb-2");
    char *tip = rev(f, "clearing/sb-2");
    char *parent = rev(f, "clearing/sb-2^");
    assert_string_equal(r.commit, tip);
    assert_string_equal(parent, w.start_commit);
    char *author = sh_out(NULL, "git -C %s log -1 --format='%%an <%%ae>|%%cn' %s", f->repo, tip);
    assert_string_equal(author, "Agent <agent@example.com>|Agent\n");
    char *raw = sh_out(NULL, "git -C %s cat-file commit %s", f->repo, tip);
    const char *msg = strstr(raw, "\n\n");
    assert_non_null(msg);
    assert_string_equal(msg + 2, "Agent work\n\nSandbox-Id: sb-2\n"
                                 "Co-authored-by: Agent <agent@example.com>\n");

    char *tree = tree_listing(f, tip);
    assert_non_null(strstr(tree, "100644 README.md\n"));
    assert_non_null(strstr(tree, "100644 bin.dat\n"));
    assert_non_null(strstr(tree, "100644 new/dir/deep/file.txt\n"));
    assert_non_null(strstr(tree, "100644 new_name.txt\n"));
    assert_non_null(strstr(tree, "100755 tool.sh\n"));
    assert_non_null(strstr(tree, "120000 link\n"));
    assert_null(strstr(tree, "delete_me.txt"));
    assert_null(strstr(tree, "old_name.txt"));
    assert_null(strstr(tree, "empty_dir"));
    size_t len;
    char *blob = sh_out(&len, "git -C %s cat-file -p %s:bin.dat", f->repo, tip);
    assert_int_equal(len, sizeof(binary) - 1);
    assert_memory_equal(blob, binary, len);

    /* README +1, new file +1, delete -1, rename, mode change, binary: six files. */
    assert_int_equal(r.files_changed, 6);
    assert_int_equal(r.insertions, 2);
    assert_int_equal(r.deletions, 1);
    assert_non_null(strstr(r.stat_text, "old_name.txt => new_name.txt"));
    assert_non_null(strstr(r.stat_text, "bin.dat"));
    assert_non_null(strstr(r.stat_text, "Bin"));
    assert_non_null(strstr(r.stat_text, "6 files changed, 2 insertions(+), 1 deletion(-)"));
    assert_non_null(strstr(r.stat_text, "mode change 100644 => 100755 tool.sh"));
    assert_int_equal(r.n_skipped, 0);
    /* git agrees with the stat. */
    char *git_stat = sh_out(NULL, "git -C %s diff --shortstat -M %s %s", f->repo, parent, tip);
    assert_non_null(strstr(git_stat, "6 files changed, 2 insertions(+), 1 deletion(-)"));
    free(git_stat);
    free(blob);
    free(tree);
    free(raw);
    free(author);
    free(tip);
    free(parent);
    clr_git_commit_result_clear(&r);
}

static void commit_without_changes(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-3", &w);
    sh("mkdir -p %s/only/empty/dirs", f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_false(r.changed);
    assert_string_equal(r.commit, w.start_commit);
    assert_string_equal(r.stat_text, "");
    assert_int_equal(r.files_changed, 0);
    char *tip = rev(f, "clearing/sb-3");
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

static void commit_large_file_streams(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-4", &w);
    size_t n = 3 * 1024 * 1024 + 17;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 4096);
    write_file(f->ws, "big.bin", big, n, 0755);
    free(big);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    sh("git -C %s cat-file -p clearing/sb-4:big.bin | cmp -s - %s/big.bin", f->repo, f->ws);
    char *tree = tree_listing(f, "clearing/sb-4");
    assert_non_null(strstr(tree, "100755 big.bin\n"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

/* HEAD, the index file's bytes, every work-tree file's bytes and mode, every ref but ours. */
static char *snapshot(const fixture *f)
{
    return sh_out(NULL,
                  "cd %s && cat .git/HEAD && sha256sum .git/index && "
                  "find . -path ./.git -prune -o -printf '%%p %%M %%s %%l\\n' | sort && "
                  "find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum && "
                  "git for-each-ref --format='%%(refname) %%(objectname)' | "
                  "grep -v '^refs/heads/clearing/' ; git status --porcelain=v2",
                  f->repo);
}

static void caller_checkout_untouched(void **state)
{
    fixture *f = *state;
    /* A caller mid-work: a staged change, an unstaged one, an untracked file, another branch. */
    sh("cd %s && git branch other && echo staged >> README.md && git add README.md && "
       "echo unstaged >> src/main.c && echo new > untracked.txt",
       f->repo);
    char *before = snapshot(f);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-5", &w);
    put(f->ws, "README.md", "rewritten by the agent\n");
    put(f->ws, "agent.txt", "agent\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, "HEAD", f->ws, NULL, &err), 0);
    char *after = snapshot(f);
    assert_string_equal(before, after);
    free(diff);
    free(before);
    free(after);
    clr_git_commit_result_clear(&r);
}

static void two_workspaces_commit_independently(void **state)
{
    fixture *f = *state;
    clr_git_workspace a, b;
    prepare(f, f->ws, "sb-a", &a);
    prepare(f, f->ws2, "sb-b", &b);
    put(f->ws, "a.txt", "from a\n");
    put(f->ws2, "b.txt", "from b\n");
    put(f->ws2, "README.md", "b's readme\n");
    clr_git_commit_options ca = commit_options(f, f->ws, a.branch);
    clr_git_commit_options cb = commit_options(f, f->ws2, b.branch);
    clr_git_commit_result ra, rb;
    commit_ok(&ca, &ra);
    commit_ok(&cb, &rb);
    assert_string_not_equal(ra.commit, rb.commit);
    char *ta = tree_listing(f, "clearing/sb-a");
    char *tb = tree_listing(f, "clearing/sb-b");
    assert_non_null(strstr(ta, " a.txt\n"));
    assert_null(strstr(ta, " b.txt\n"));
    assert_non_null(strstr(tb, " b.txt\n"));
    assert_null(strstr(tb, " a.txt\n"));
    char *pa = rev(f, "clearing/sb-a^"), *pb = rev(f, "clearing/sb-b^"), *head = rev(f, "HEAD");
    assert_string_equal(pa, head);
    assert_string_equal(pb, head);
    char *readme = sh_out(NULL, "git -C %s cat-file -p clearing/sb-a:README.md", f->repo);
    assert_string_equal(readme, "hello\nworld\n");
    free(readme);
    free(pa);
    free(pb);
    free(head);
    free(ta);
    free(tb);
    clr_git_commit_result_clear(&ra);
    clr_git_commit_result_clear(&rb);
}

/* ---- hostile workspaces ---- */

typedef struct odb_scan {
    git_odb *odb;
    const char *needle;
    bool found;
} odb_scan;

static int scan_object(const git_oid *id, void *payload)
{
    odb_scan *s = payload;
    git_odb_object *o = NULL;
    if (git_odb_read(&o, s->odb, id) == 0) {
        if (memmem(git_odb_object_data(o), git_odb_object_size(o), s->needle,
                   strlen(s->needle)))
            s->found = true;
        git_odb_object_free(o);
    }
    return 0;
}

/* Is needle inside any object of the repository (loose or packed)? */
static bool odb_contains(const fixture *f, const char *needle)
{
    git_libgit2_init();
    git_repository *repo = NULL;
    git_odb *odb = NULL;
    assert_int_equal(git_repository_open(&repo, f->repo), 0);
    assert_int_equal(git_repository_odb(&odb, repo), 0);
    odb_scan s = {odb, needle, false};
    assert_int_equal(git_odb_foreach(odb, scan_object, &s), 0);
    git_odb_free(odb);
    git_repository_free(repo);
    git_libgit2_shutdown();
    return s.found;
}

static void symlink_to_secret_committed_as_link(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-6", &w);
    char secret[256], link[256];
    snprintf(secret, sizeof(secret), "%s/secret", f->root);
    put(f->root, "secret", "TOPSECRET-7f3a9c-not-for-the-repo\n");
    snprintf(link, sizeof(link), "%s/leak", f->ws);
    assert_int_equal(symlink(secret, link), 0);
    snprintf(link, sizeof(link), "%s/shadow", f->ws);
    assert_int_equal(symlink("/etc/shadow", link), 0);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *tree = tree_listing(f, "clearing/sb-6");
    assert_non_null(strstr(tree, "120000 shadow\n"));
    assert_non_null(strstr(tree, "120000 leak\n"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-6:shadow", f->repo);
    assert_string_equal(target, "/etc/shadow");
    char *leak = sh_out(NULL, "git -C %s cat-file -p clearing/sb-6:leak", f->repo);
    assert_string_equal(leak, secret);
    assert_false(odb_contains(f, "TOPSECRET-7f3a9c"));
    /* /etc/shadow's first line (root's entry) is nowhere in the object database either. */
    FILE *sf = fopen("/etc/shadow", "r");
    char line[512];
    if (sf && fgets(line, sizeof(line), sf) && strlen(line) > 8)
        assert_false(odb_contains(f, line));
    if (sf)
        fclose(sf);
    free(tree);
    free(target);
    free(leak);
    clr_git_commit_result_clear(&r);
}

static void dot_git_in_workspace_skipped(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-7", &w);
    char hook[512];
    snprintf(hook, sizeof(hook), "#!/bin/sh\ntouch %s/HOOK-RAN\n", f->root);
    sh("mkdir -p %s/.git/hooks %s/sub %s/.GIT %s/deep/er", f->ws, f->ws, f->ws, f->ws);
    write_file(f->ws, ".git/hooks/post-commit", hook, strlen(hook), 0755);
    put(f->ws, ".git/config", "[core]\n\tfsmonitor = touch HOOK-RAN\n");
    put(f->ws, "sub/.git", "gitdir: /etc\n");
    put(f->ws, ".GIT/x", "x");
    put(f->ws, "deep/er/git~1", "x");
    put(f->ws, ".git.", "x");                /* NTFS drops the trailing dot */
    put(f->ws, ".g\xe2\x80\x8cit", "x");     /* HFS+ ignores U+200C */
    char link[256];
    snprintf(link, sizeof(link), "%s/.gitmodules", f->ws);
    assert_int_equal(symlink("/etc/passwd", link), 0); /* git fsck rejects it */
    put(f->ws, "ok.txt", "fine\n");
    /* The caller's real repository gets the same hook: libgit2 must not run it either. */
    write_file(f->repo, ".git/hooks/post-commit", hook, strlen(hook), 0755);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(skipped_has(&r, ".git", ".git"));
    assert_true(skipped_has(&r, "sub/.git", ".git"));
    assert_true(skipped_has(&r, ".GIT", ".git"));
    assert_true(skipped_has(&r, "deep/er/git~1", ".git"));
    assert_true(skipped_has(&r, ".git.", ".git"));
    assert_true(skipped_has(&r, ".g\xe2\x80\x8cit", ".git"));
    assert_true(skipped_has(&r, ".gitmodules", "gitmodules-symlink"));
    assert_int_equal(r.n_skipped, 7);
    assert_false(exists(f->root, "HOOK-RAN"));
    assert_false(exists(f->ws, "HOOK-RAN"));
    char *tree = tree_listing(f, "clearing/sb-7");
    assert_non_null(strstr(tree, " ok.txt\n"));
    assert_null(strstr(tree, ".git/"));
    assert_null(strstr(tree, ".GIT"));
    assert_null(strstr(tree, "git~1"));
    assert_null(strstr(tree, "sub/"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

static void special_files_skipped_without_blocking(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-8", &w);
    char path[256];
    snprintf(path, sizeof(path), "%s/pipe", f->ws);
    assert_int_equal(mkfifo(path, 0644), 0);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s/sock", f->ws);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    put(f->ws, "real.txt", "real\n");
    alarm(30); /* a walk that opened the FIFO for reading would hang here */
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    alarm(0);
    close(s);
    assert_true(skipped_has(&r, "pipe", "fifo"));
    assert_true(skipped_has(&r, "sock", "socket"));
    char *tree = tree_listing(f, "clearing/sb-8");
    assert_non_null(strstr(tree, " real.txt\n"));
    assert_null(strstr(tree, "pipe"));
    assert_null(strstr(tree, "sock"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

static void sparse_giant_file_refused_quickly(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-9", &w);
    char path[256];
    snprintf(path, sizeof(path), "%s/huge.img", f->ws);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 2LL * 1024 * 1024 * 1024), 0);
    close(fd);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.limits.max_file_bytes = 1024 * 1024;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    /* Positive control: reading the file shows in what this process read. */
    struct cost before = cost_now();
    char chunk[65536];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    for (int i = 0; i < 128; i++)
        assert_int_equal(read(fd, chunk, sizeof(chunk)), sizeof(chunk));
    close(fd);
    assert_true(cost_now().rchar - before.rchar >= 128 * sizeof(chunk));

    /* Refused on its size: without reading (let alone hashing) its 2 GiB. */
    before = cost_now();
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    struct cost after = cost_now();
    double cpu = (double)(after.cpu_ns - before.cpu_ns) / 1e9;
    print_message("refusal: %.4f s of CPU, %" PRIu64 " bytes read\n", cpu,
                  after.rchar - before.rchar);
    assert_true(after.rchar - before.rchar < co.limits.max_file_bytes);
    assert_true(cpu < 1.0);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "huge.img"));
    assert_non_null(strstr(err.message, "2147483648 bytes"));
    assert_non_null(strstr(err.message, "max_file_bytes"));
    char *tip = rev(f, "clearing/sb-9");
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

static void entry_count_total_and_depth_limits(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-10", &w);
    sh("mkdir %s/many && cd %s/many && for i in $(seq 100); do : > f$i; done", f->ws, f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.limits.max_files = 50;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_files"));
    sh("rm -rf %s/many", f->ws);

    co = commit_options(f, f->ws, w.branch);
    co.limits.max_total_bytes = 1000;
    char blob[600];
    memset(blob, 'x', sizeof(blob));
    write_file(f->ws, "one", blob, sizeof(blob), 0644);
    write_file(f->ws, "two", blob, sizeof(blob), 0644);
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_total_bytes"));

    co = commit_options(f, f->ws, w.branch);
    co.limits.max_depth = 5;
    sh("mkdir -p %s/d1/d2/d3/d4/d5/d6/d7 && touch %s/d1/d2/d3/d4/d5/d6/d7/f", f->ws, f->ws);
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_depth"));
    assert_non_null(strstr(err.message, "d1/d2/d3/d4/d5/d6"));
    co.limits.max_depth = 5000;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    clr_git_commit_result_clear(&r);
}

typedef struct swap_plan {
    const char *name;   /* the entry to swap when the walk reaches it */
    const char *target; /* the symlink put in its place */
    const char *stash;  /* where the original goes (outside the workspace) */
    int fired;
} swap_plan;

static void swap_for_symlink(int dirfd, const char *name, const char *path, void *data)
{
    swap_plan *p = data;
    (void)path;
    if (strcmp(name, p->name) != 0 || p->fired++)
        return;
    assert_int_equal(renameat(dirfd, name, AT_FDCWD, p->stash), 0);
    assert_int_equal(symlinkat(p->target, dirfd, name), 0);
}

static void directory_swapped_for_symlink_during_walk(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-11", &w);
    sh("mkdir -p %s/data && echo harmless > %s/data/notes.txt", f->ws, f->ws);
    char stash[256];
    snprintf(stash, sizeof(stash), "%s/stashed-data", f->root);
    swap_plan plan = {.name = "data", .target = "/etc", .stash = stash};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = swap_for_symlink;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_int_equal(plan.fired, 2); /* swapped on the first look, a link on the second */
    char *tree = tree_listing(f, "clearing/sb-11");
    assert_non_null(strstr(tree, "120000 data\n"));
    assert_null(strstr(tree, "data/"));
    assert_null(strstr(tree, "passwd"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-11:data", f->repo);
    assert_string_equal(target, "/etc");
    /* Nothing of /etc/passwd was read into the object database. */
    FILE *pf = fopen("/etc/passwd", "r");
    char line[512];
    if (pf && fgets(line, sizeof(line), pf))
        assert_false(odb_contains(f, line));
    if (pf)
        fclose(pf);
    free(tree);
    free(target);
    clr_git_commit_result_clear(&r);
}

static void file_swapped_for_symlink_during_walk(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-12", &w);
    put(f->ws, "innocent.txt", "innocent\n");
    char stash[256];
    snprintf(stash, sizeof(stash), "%s/stashed-file", f->root);
    swap_plan plan = {.name = "innocent.txt", .target = "/etc/passwd", .stash = stash};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = swap_for_symlink;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *tree = tree_listing(f, "clearing/sb-12");
    assert_non_null(strstr(tree, "120000 innocent.txt\n"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-12:innocent.txt", f->repo);
    assert_string_equal(target, "/etc/passwd");
    free(tree);
    free(target);
    clr_git_commit_result_clear(&r);
}

typedef struct race_plan {
    const fixture *f;
    int fired;
    char *moved_to;
} race_plan;

static void move_branch_meanwhile(int dirfd, const char *name, const char *path, void *data)
{
    race_plan *p = data;
    (void)dirfd, (void)name, (void)path;
    if (p->fired++)
        return;
    p->moved_to = sh_out(NULL,
                         "cd %s && c=$(git commit-tree HEAD^{tree} -p clearing/sb-13 -m racer) "
                         "&& git update-ref refs/heads/clearing/sb-13 $c && echo $c",
                         p->f->repo);
    p->moved_to[strcspn(p->moved_to, "\n")] = '\0';
}

static void concurrent_branch_move_is_a_conflict(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-13", &w);
    put(f->ws, "mine.txt", "mine\n");
    race_plan plan = {.f = f};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = move_branch_meanwhile;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_non_null(strstr(err.message, "moved"));
    char *tip = rev(f, "clearing/sb-13");
    assert_string_equal(tip, plan.moved_to); /* the other commit was not lost */
    /* Committing again builds on the new tip. */
    co.test_hook = NULL;
    commit_ok(&co, &r);
    char *parent = rev(f, "clearing/sb-13^");
    assert_string_equal(parent, plan.moved_to);
    free(parent);
    free(tip);
    free(plan.moved_to);
    clr_git_commit_result_clear(&r);
}

static void base_gitignore_honoured(void **state)
{
    fixture *f = *state;
    sh("cd %s && mkdir -p sub docs && printf '# build outputs\\n*.log\\n!keep.log\\nbuild/\\n"
       "/top.tmp\\ndocs/**/*.gen\\n' > .gitignore && printf '!special.log\\nlocal.txt\\n' > "
       "sub/.gitignore && echo tracked > tracked.log && git add .gitignore sub/.gitignore && "
       "git add -f tracked.log && git commit -q -m ignores",
       f->repo);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-14", &w);
    sh("cd %s && mkdir -p build docs/a/b sub/deep && echo changed > tracked.log && "
       "echo x > new.log && echo x > keep.log && echo x > build/out.o && echo x > top.tmp && "
       "echo x > sub/top.tmp && echo x > sub/special.log && echo x > sub/other.log && "
       "echo x > sub/local.txt && echo x > local.txt && echo x > docs/a/b/x.gen && "
       "echo x > docs/x.gen && echo x > docs/x.txt && echo x > evil.c && "
       "printf '*.c\\n' > .gitignore && : > sub/.gitignore",
       f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *paths = sh_out(NULL, "git -C %s ls-tree -r --name-only clearing/sb-14 | sort", f->repo);
    assert_string_equal(paths, ".gitignore\n"
                               "README.md\n"
                               "delete_me.txt\n"
                               "docs/x.txt\n"
                               "evil.c\n"
                               "keep.log\n"
                               "link\n"
                               "local.txt\n"
                               "old_name.txt\n"
                               "src/main.c\n"
                               "src/util/helper.c\n"
                               "sub/.gitignore\n"
                               "sub/special.log\n"
                               "sub/top.tmp\n"
                               "tool.sh\n"
                               "tracked.log\n");
    char *tracked = sh_out(NULL, "git -C %s cat-file -p clearing/sb-14:tracked.log", f->repo);
    assert_string_equal(tracked, "changed\n");
    /* The sandbox's rewritten .gitignore is committed as content, not obeyed... */
    char *gi = sh_out(NULL, "git -C %s cat-file -p clearing/sb-14:.gitignore", f->repo);
    assert_string_equal(gi, "*.c\n");
    /* ...and the diff against the same base sees the same set: it is git's own diff of the
     * commit. */
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, w.start_commit, f->ws, NULL, &err), 0);
    char *git_diff = sh_out(NULL, "git -C %s diff -M %s %s", f->repo, w.start_commit, r.commit);
    assert_string_equal(diff, git_diff);
    assert_non_null(strstr(diff, "b/evil.c"));
    assert_null(strstr(diff, "new.log"));
    assert_null(strstr(diff, "build/out.o"));
    free(git_diff);
    free(diff);
    free(gi);
    free(tracked);
    free(paths);
    clr_git_commit_result_clear(&r);
}

/* A .gitignore on a reused branch was written by the sandbox: patterns that backtrack, many
 * thousands of them, against long names, end in a bounded time (here with CLR_E_LIMIT). */
static void costly_base_gitignore_is_bounded(void **state)
{
    fixture *f = *state;
    sh("cd %s && for i in $(seq 10000); do echo '*a*a*a*a*a*a*a*a*a*a*a*a*b'; done > .gitignore "
       "&& git add .gitignore && git commit -q -m costly",
       f->repo);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-18", &w);
    sh("cd %s && for i in $(seq 600); do : > $i$(printf 'a%%.0s' $(seq 200)); done", f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    struct cost before = cost_now();
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    double cpu = cpu_s_since(&before);
    print_message("costly .gitignore: %.3f s of CPU\n", cpu);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, ".gitignore"));
    assert_true(cpu < 30.0);
    clr_git_commit_result_clear(&r);
}

static void diff_text(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-15", &w);
    put(f->ws, "README.md", "hello\nthere\n");
    put(f->ws, "added.txt", "brand new\n");
    sh("mv %s/old_name.txt %s/renamed.txt && rm %s/delete_me.txt", f->ws, f->ws, f->ws);
    write_file(f->ws, "blob.bin", "\0\1\2\3binary", 10, 0644);
    char link[256];
    snprintf(link, sizeof(link), "%s/shadow", f->ws);
    assert_int_equal(symlink("/etc/shadow", link), 0);
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, w.branch, f->ws, NULL, &err), 0);
    assert_non_null(strstr(diff, "diff --git a/README.md b/README.md\n"));
    assert_non_null(strstr(diff, "@@ -1,2 +1,2 @@\n hello\n-world\n+there\n"));
    assert_non_null(strstr(diff, "diff --git a/added.txt b/added.txt\nnew file mode 100644\n"));
    assert_non_null(strstr(diff, "+brand new\n"));
    assert_non_null(strstr(diff, "deleted file mode 100644\n"));
    assert_non_null(strstr(diff, "-bye\n"));
    assert_non_null(strstr(diff, "rename from old_name.txt\nrename to renamed.txt\n"));
    assert_non_null(strstr(diff, "Binary files /dev/null and b/blob.bin differ\n"));
    assert_non_null(strstr(diff, "new file mode 120000\n"));
    assert_non_null(strstr(diff, "+/etc/shadow\n"));
    /* git applies it: the patch format is real. */
    char patch[256];
    snprintf(patch, sizeof(patch), "%s/p.diff", f->root);
    write_file(f->root, "p.diff", diff, strlen(diff), 0644);
    sh("cd %s && git apply --check --exclude=blob.bin %s", f->repo, patch);
    free(diff);
    /* Nothing moved: a diff commits nothing. */
    char *tip = rev(f, w.branch);
    assert_string_equal(tip, w.start_commit);
    free(tip);
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, "nope", f->ws, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

/* Every file and directory under the repository's objects/ (loose objects, packs, temporary
 * files) with its mtime (libgit2 touches an object it would write again), sorted: what a diff
 * must leave exactly as it found it. */
static char *object_store_listing(const fixture *f)
{
    return sh_out(NULL, "cd %s/.git/objects && find . -printf '%%p %%T@\\n' | sort", f->repo);
}

/* Issue #16: a diff stored every workspace blob in the host repository for good (up to the
 * walk's 1 GiB a call). Its objects now live in memory and die with the call; a commit still
 * writes them. */
static void diff_writes_nothing_to_repository(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-19", &w);
    put(f->ws, "README.md", "hello\nchanged by the sandbox\n");
    put(f->ws, "fresh.txt", "content no repository has seen 7f3a\n");
    sh("mkdir %s/newdir && echo nested-1c9e > %s/newdir/inner.txt", f->ws, f->ws);
    /* Over SMALL_FILE_BYTES: the path that streamed through a temporary file in objects/. */
    size_t n = 3 * 1024 * 1024 + 5;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 13 + i / 977) % 26);
    for (size_t i = 80; i < n; i += 81)
        big[i] = '\n';
    write_file(f->ws, "big.txt", big, n, 0644);
    free(big);
    char *before = object_store_listing(f);
    assert_non_null(strstr(before, "./pack ")); /* the listing sees the store */
    for (int i = 0; i < 3; i++) {
        char *diff = NULL;
        clr_error err = CLR_ERROR_INIT;
        if (clr_git_diff(&diff, f->repo, NULL, w.branch, f->ws, NULL, &err) < 0)
            fail_msg("diff: %s", err.message);
        /* Positive control: the diff did read the new content. */
        assert_non_null(strstr(diff, "+content no repository has seen 7f3a\n"));
        assert_non_null(strstr(diff, "+nested-1c9e\n"));
        assert_non_null(strstr(diff, "+++ b/big.txt\n"));
        assert_non_null(strstr(diff, "+changed by the sandbox\n"));
        free(diff);
        char *after = object_store_listing(f);
        assert_string_equal(before, after);
        free(after);
    }
    /* A commit writes its objects as before, and git reads them back. */
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    char *committed = object_store_listing(f);
    assert_string_not_equal(before, committed);
    char *fresh = sh_out(NULL, "git -C %s cat-file -p clearing/sb-19:fresh.txt", f->repo);
    assert_string_equal(fresh, "content no repository has seen 7f3a\n");
    sh("git -C %s cat-file -p clearing/sb-19:big.txt | cmp -s - %s/big.txt", f->repo, f->ws);
    free(fresh);
    free(committed);
    free(before);
    clr_git_commit_result_clear(&r);
}

static void bare_repository(void **state)
{
    fixture *f = *state;
    fixture b = *f;
    snprintf(b.repo, sizeof(b.repo), "%.64s/bare.git", f->root);
    sh("git clone -q --bare %s %s", f->repo, b.repo);
    clr_git_workspace w;
    prepare(&b, b.ws, "sb-17", &w);
    assert_true(exists(b.ws, "src/util/helper.c"));
    put(b.ws, "added.txt", "added\n");
    clr_git_commit_options co = commit_options(&b, b.ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(r.changed);
    assert_int_equal(r.files_changed, 1);
    char *tip = rev(&b, "clearing/sb-17");
    assert_string_equal(tip, r.commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

static void commit_options_validated(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-16", &w);
    put(f->ws, "x.txt", "x\n");
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    co.message = " \n";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    co.message = "ok";
    const char *bad[] = {"no colon here", NULL};
    co.trailers = bad;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    const char *injected[] = {"Key: value\nSigned-off-by: someone", NULL};
    co.trailers = injected;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    co.trailers = NULL;
    co.workspace_dir = "/nonexistent/clearing/ws";
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    char *tip = rev(f, w.branch);
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

int main(void)
{
    setenv("GIT_AUTHOR_NAME", "Test", 1);
    setenv("GIT_AUTHOR_EMAIL", "test@example.com", 1);
    setenv("GIT_COMMITTER_NAME", "Test", 1);
    setenv("GIT_COMMITTER_EMAIL", "test@example.com", 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glob_basics),
        cmocka_unit_test(glob_brackets_and_escapes),
        cmocka_unit_test(glob_double_star),
        cmocka_unit_test(glob_hostile_patterns_are_bounded),
        cmocka_unit_test(ignore_rules),
        cmocka_unit_test(ignore_later_rules_win),
        cmocka_unit_test(ignore_escapes_and_spaces),
        cmocka_unit_test(ignore_nested_files),
        cmocka_unit_test_setup_teardown(prepare_from_head, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_from_ref, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_existing_branch, setup, teardown),
        cmocka_unit_test_setup_teardown(checked_out_branch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_every_kind_of_change, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_without_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_large_file_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(caller_checkout_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(two_workspaces_commit_independently, setup, teardown),
        cmocka_unit_test_setup_teardown(symlink_to_secret_committed_as_link, setup, teardown),
        cmocka_unit_test_setup_teardown(dot_git_in_workspace_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(special_files_skipped_without_blocking, setup, teardown),
        cmocka_unit_test_setup_teardown(sparse_giant_file_refused_quickly, setup, teardown),
        cmocka_unit_test_setup_teardown(entry_count_total_and_depth_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(directory_swapped_for_symlink_during_walk, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(file_swapped_for_symlink_during_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_branch_move_is_a_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(base_gitignore_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(costly_base_gitignore_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(diff_text, setup, teardown),
        cmocka_unit_test_setup_teardown(diff_writes_nothing_to_repository, setup, teardown),
        cmocka_unit_test_setup_teardown(bare_repository, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_options_validated, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws", tests, NULL, NULL);
}
