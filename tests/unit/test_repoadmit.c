/* Repository admission: real repositories (git command line) in a temporary root, and every way
 * a path could lead out of it - symlinks below the root, a .git gitfile or link, commondir,
 * alternates, "..", a directory swapped after admission - each checked against what was
 * admitted, with the positive case first. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/clearing.h"
#include "clearing/repoadmit.h"

typedef struct fixture {
    char tmp[64];
    char root[128];    /* the operator's root */
    char repo[192];    /* root/repo: a work tree with one commit */
    char secret[192];  /* tmp/secret: a repository outside the root */
    const char *roots[2];
} fixture;

__attribute__((format(printf, 1, 2))) static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("command failed (%d): %s", rc, cmd);
}

static void make_repo(const char *dir, const char *content)
{
    sh("git init -q -b main '%s' && printf '%s' > '%s/README' && "
       "git -C '%s' add README && "
       "git -C '%s' -c user.name=t -c user.email=t@t commit -qm base",
       dir, content, dir, dir, dir);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->tmp, sizeof(f->tmp), "/tmp/clr-admit-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->root, sizeof(f->root), "%s/root", f->tmp);
    snprintf(f->repo, sizeof(f->repo), "%s/repo", f->root);
    snprintf(f->secret, sizeof(f->secret), "%s/secret", f->tmp);
    sh("mkdir -p '%s' '%s'", f->repo, f->secret);
    make_repo(f->repo, "allowed");
    make_repo(f->secret, "SECRET");
    f->roots[0] = f->root;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sh("rm -rf '%s'", f->tmp);
    free(f);
    return 0;
}

static void assert_id_of(const clr_git_repo_id *id, const char *gitdir)
{
    struct stat st;
    assert_int_equal(stat(gitdir, &st), 0);
    assert_true(id->dev == (uint64_t)st.st_dev);
    assert_true(id->ino == (uint64_t)st.st_ino);
}

/* The refusal every unreachable path gets: the same words, no path in them. */
static void assert_refused_blind(const fixture *f, const char *path)
{
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, path, &err), -1);
    assert_int_equal(err.code, CLR_E_DENIED);
    assert_non_null(strstr(err.message, "repo_roots"));
    assert_null(strstr(err.message, f->tmp));
    assert_null(strstr(err.message, "secret"));
}

static void assert_refused_shape(const fixture *f, const char *path, const char *why)
{
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, path, &err), -1);
    assert_int_equal(err.code, CLR_E_DENIED);
    if (!strstr(err.message, why))
        fail_msg("expected \"%s\" in: %s", why, err.message);
    assert_null(strstr(err.message, f->tmp));
}

static void test_work_tree_admitted(void **state)
{
    fixture *f = *state;
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, f->repo, &err), 0);
    assert_string_equal(a.path, f->repo);
    char gitdir[256];
    snprintf(gitdir, sizeof(gitdir), "%s/.git", f->repo);
    assert_id_of(&a.id, gitdir);
    /* "." and ".." that stay beneath the root, and a trailing '/', are the same repository. */
    char path[300];
    snprintf(path, sizeof(path), "%s/./repo/../repo/", f->root);
    assert_int_equal(clr_repo_admit(&a, f->roots, path, &err), 0);
    assert_string_equal(a.path, f->repo);
}

static void test_bare_and_git_dir_admitted(void **state)
{
    fixture *f = *state;
    char bare[256], gitdir[256];
    snprintf(bare, sizeof(bare), "%s/bare.git", f->root);
    sh("git clone -q --bare '%s' '%s'", f->repo, bare);
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, bare, &err), 0);
    assert_id_of(&a.id, bare);
    snprintf(gitdir, sizeof(gitdir), "%s/.git", f->repo);
    assert_int_equal(clr_repo_admit(&a, f->roots, gitdir, &err), 0);
    assert_id_of(&a.id, gitdir);
}

static void test_root_given_through_a_link(void **state)
{
    fixture *f = *state;
    /* The operator's root may be a link; the path may be written through it or through its
     * target. Below the root, nothing is followed (next test). */
    char link[256], path[300];
    snprintf(link, sizeof(link), "%s/root-link", f->tmp);
    assert_int_equal(symlink(f->root, link), 0);
    const char *roots[] = {link, NULL};
    snprintf(path, sizeof(path), "%s/repo", link);
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, roots, path, &err), 0);
    assert_string_equal(a.path, f->repo);
    assert_int_equal(clr_repo_admit(&a, roots, f->repo, &err), 0);
}

static void test_symlinks_below_the_root_refused(void **state)
{
    fixture *f = *state;
    char path[300];
    /* Positive control: the target of each link is admitted by its own name. */
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, f->repo, &err), 0);
    /* A link to an allowed repository, a link to one outside, a link in the middle. */
    snprintf(path, sizeof(path), "%s/to-repo", f->root);
    assert_int_equal(symlink(f->repo, path), 0);
    assert_refused_blind(f, path);
    snprintf(path, sizeof(path), "%s/to-secret", f->root);
    assert_int_equal(symlink(f->secret, path), 0);
    assert_refused_blind(f, path);
    snprintf(path, sizeof(path), "%s/dir-link", f->root);
    assert_int_equal(symlink(f->tmp, path), 0);
    snprintf(path, sizeof(path), "%s/dir-link/secret", f->root);
    assert_refused_blind(f, path);
}

static void test_outside_and_missing_refused_alike(void **state)
{
    fixture *f = *state;
    char path[300];
    assert_refused_blind(f, f->secret);
    snprintf(path, sizeof(path), "%s/../secret", f->root);
    assert_refused_blind(f, path);
    snprintf(path, sizeof(path), "%s/missing", f->root);
    assert_refused_blind(f, path);
    snprintf(path, sizeof(path), "%s/plain", f->root);
    sh("mkdir '%s'", path); /* a directory that is no repository */
    assert_refused_blind(f, path);
    snprintf(path, sizeof(path), "%s2/repo", f->root); /* a sibling whose name extends root */
    assert_refused_blind(f, path);
    assert_refused_blind(f, "repo");
    assert_refused_blind(f, "/etc");
    const char *none[] = {NULL};
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, none, f->repo, &err), -1);
    assert_non_null(strstr(err.message, "not enabled"));
}

static void test_gitfile_and_dotgit_link_refused(void **state)
{
    fixture *f = *state;
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/gitfile", f->root);
    sh("mkdir '%s' && printf 'gitdir: %s/.git\\n' > '%s/.git'", dir, f->secret, dir);
    /* Positive control: git itself follows the gitfile to the secret repository. */
    sh("git -C '%s' show HEAD:README | grep -q SECRET", dir);
    assert_refused_shape(f, dir, ".git is a file or a link");
    snprintf(dir, sizeof(dir), "%s/dotgit-link", f->root);
    sh("mkdir '%s' && ln -s '%s/.git' '%s/.git'", dir, f->secret, dir);
    sh("git -C '%s' show HEAD:README | grep -q SECRET", dir);
    assert_refused_shape(f, dir, ".git is a file or a link");
}

static void test_commondir_and_alternates_refused(void **state)
{
    fixture *f = *state;
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/common", f->root);
    sh("git init -q '%s' && printf '%s/.git\\n' > '%s/.git/commondir'", dir, f->secret, dir);
    sh("git -C '%s' show refs/heads/main:README | grep -q SECRET", dir);
    assert_refused_shape(f, dir, "commondir");
    snprintf(dir, sizeof(dir), "%s/borrow", f->root);
    sh("git init -q '%s' && mkdir -p '%s/.git/objects/info' && "
       "printf '%s/.git/objects\\n' > '%s/.git/objects/info/alternates'",
       dir, dir, f->secret, dir);
    assert_refused_shape(f, dir, "alternates");
    snprintf(dir, sizeof(dir), "%s/linked-refs", f->root);
    sh("git init -q '%s' && rm -rf '%s/.git/refs' && ln -s '%s/.git/refs' '%s/.git/refs'", dir,
       dir, f->secret, dir);
    assert_refused_shape(f, dir, "symlink");
}

/* After admission, the path is swapped: open_repo finds another git directory and refuses. */
static void test_swap_after_admission_refused(void **state)
{
    fixture *f = *state;
    clr_repo_admitted a;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_repo_admit(&a, f->roots, f->repo, &err), 0);
    char *text = NULL;
    size_t len = 0;
    char hex[CLR_GIT_OID_HEX_SIZE];
    /* Positive control: with the repository in place, the checked read works. */
    assert_int_equal(clr_git_read_file(&text, &len, hex, a.path, &a.id, NULL, "README", 4096,
                                       &err),
                     1);
    assert_string_equal(text, "allowed");
    free(text);
    text = NULL;
    char moved[256];
    snprintf(moved, sizeof(moved), "%s/moved", f->root);
    assert_int_equal(rename(f->repo, moved), 0);
    assert_int_equal(symlink(f->secret, f->repo), 0);
    /* Unchecked, the path now leads to the secret: what the check is there to stop. */
    assert_int_equal(clr_git_read_file(&text, &len, hex, a.path, NULL, NULL, "README", 4096,
                                       &err),
                     1);
    assert_string_equal(text, "SECRET");
    free(text);
    text = NULL;
    assert_int_equal(clr_git_read_file(&text, &len, hex, a.path, &a.id, NULL, "README", 4096,
                                       &err),
                     -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    assert_null(text);
    assert_int_equal(clr_git_branch_discard(a.path, &a.id, "main", hex, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    /* The secret's branch is untouched. */
    sh("git -C '%s' rev-parse -q --verify refs/heads/main >/dev/null", f->secret);
    /* And a .git replaced by a gitfile in place (same directory, new git dir). */
    assert_int_equal(unlink(f->repo), 0);
    assert_int_equal(rename(moved, f->repo), 0);
    assert_int_equal(clr_repo_admit(&a, f->roots, f->repo, &err), 0);
    sh("mv '%s/.git' '%s/.git-old' && printf 'gitdir: %s/.git\\n' > '%s/.git'", f->repo,
       f->repo, f->secret, f->repo);
    assert_int_equal(clr_git_read_file(&text, &len, hex, a.path, &a.id, NULL, "README", 4096,
                                       &err),
                     -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_work_tree_admitted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bare_and_git_dir_admitted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_given_through_a_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks_below_the_root_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_and_missing_refused_alike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gitfile_and_dotgit_link_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commondir_and_alternates_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_after_admission_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
