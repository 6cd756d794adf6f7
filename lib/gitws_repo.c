/* Git workspaces, the repository: opening it (refusing shared refs or objects, or another git
 * directory than the one admitted), commits and branches resolved, one file of a commit read
 * (gitws_repo.h, gitws_repo_internal.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <git2.h>

#include "gitws_repo_internal.h"
#include "internal.h"

int clr_gitws_fail(clr_error *err, clr_error_code code,
                                                          const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const git_error *g = git_error_last();
    return clr_error_set(err, code, 0, "%s: %s", what,
                         g && g->message ? g->message : "unknown libgit2 error");
}

int clr_gitws_oom(clr_error *err)
{
    return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
}

/* ---- repository helpers ---- */

static int stat_id(clr_git_repo_id *id, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    return 0;
}

/* Opens the repository at path, refuses one whose git directory takes its refs or objects from
 * another directory (commondir, alternates: what was checked would not be what is written),
 * and, given expect, one whose git directory is not the one that was checked. *got (may be
 * NULL) is the identity of the git directory opened. */
int clr_gitws_open_repo(git_repository **out, const char *path, const clr_git_repo_id *expect,
                     clr_git_repo_id *got, clr_error *err)
{
    /* NO_SEARCH: the caller names the repository; never wander up to an enclosing one. */
    int rc = git_repository_open_ext(out, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
    if (rc == GIT_EOWNER)
        return clr_gitws_fail(err, CLR_E_DENIED,
                              "opening the repository %s (owned by another user: run as its "
                              "owner or add it to safe.directory)",
                              path);
    if (rc < 0)
        return clr_gitws_fail(err, rc == GIT_ENOTFOUND ? CLR_E_NOT_FOUND : CLR_E_INTERNAL,
                              "opening the repository %s (pass a work tree or a .git directory)",
                              path);
    clr_git_repo_id gid, cid;
    const char *gitdir = git_repository_path(*out);
    char alternates[PATH_MAX];
    struct stat st;
    int n = snprintf(alternates, sizeof(alternates), "%sobjects/info/alternates", gitdir);
    rc = 0;
    if (stat_id(&gid, gitdir) < 0 || stat_id(&cid, git_repository_commondir(*out)) < 0)
        rc = clr_error_set(err, CLR_E_INTERNAL, errno, "opening the repository %s: %s", path,
                           strerror(errno));
    else if (gid.dev != cid.dev || gid.ino != cid.ino)
        rc = clr_error_set(err, CLR_E_DENIED, 0,
                           "the repository %s takes its refs and objects from another git "
                           "directory (a linked worktree or a commondir file): name the main "
                           "repository instead",
                           path);
    else if (n < 0 || (size_t)n >= sizeof(alternates) || lstat(alternates, &st) == 0)
        rc = clr_error_set(err, CLR_E_DENIED, 0,
                           "the repository %s borrows objects from another repository "
                           "(objects/info/alternates): clearing takes only a repository that "
                           "holds its own objects (git repack -a, then remove the file)",
                           path);
    else if (expect && (expect->dev != gid.dev || expect->ino != gid.ino))
        rc = clr_error_set(err, CLR_E_CONFLICT, 0,
                           "the repository at %s is no longer the one that was checked (its "
                           "git directory was moved or replaced): nothing was written",
                           path);
    if (rc < 0) {
        git_repository_free(*out);
        *out = NULL;
        return -1;
    }
    if (got)
        *got = gid;
    return 0;
}

int clr_gitws_resolve_commit(git_commit **out, git_repository *repo, const char *spec,
                          const char *repo_path, clr_error *err)
{
    _cleanup_git_(git_object_free) git_object *obj = NULL;
    if (git_revparse_single(&obj, repo, spec) < 0)
        return clr_gitws_fail(err, CLR_E_NOT_FOUND, "resolving %s in %s", spec, repo_path);
    git_object *peeled = NULL;
    if (git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) < 0)
        return clr_gitws_fail(err, CLR_E_INVALID, "%s in %s does not name a commit", spec,
                              repo_path);
    *out = (git_commit *)peeled;
    return 0;
}

/* A branch that is checked out (here or in a linked worktree) belongs to someone's working
 * tree: moving it would change their checkout under them. */
int clr_gitws_refuse_checked_out(git_reference *ref, const char *branch, const char *repo_path,
                              clr_error *err)
{
    int rc = git_branch_is_checked_out(ref);
    if (rc < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "checking whether %s is checked out", branch);
    if (rc > 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "branch %s is checked out in %s: a workspace needs a branch of "
                             "its own",
                             branch, repo_path);
    if (git_reference_type(ref) != GIT_REFERENCE_DIRECT)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "branch %s in %s is a symbolic reference: use a real branch",
                             branch, repo_path);
    return 0;
}

int clr_gitws_check_branch_name(const char *branch, clr_error *err)
{
    int valid = 0;
    if (strlen(branch) >= CLR_GIT_BRANCH_SIZE || git_branch_name_is_valid(&valid, branch) < 0 ||
        !valid)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "\"%.300s\" is not a valid branch name (at most %d bytes, git's "
                             "ref-name rules)",
                             branch, CLR_GIT_BRANCH_SIZE - 1);
    return 0;
}

void clr_gitws_oid_hex(char out[CLR_GIT_OID_HEX_SIZE], const git_oid *id)
{
    git_oid_tostr(out, CLR_GIT_OID_HEX_SIZE, id);
}

int clr_git_read_file(char **out, size_t *len, char commit_hex[CLR_GIT_OID_HEX_SIZE],
                      const char *repo_path, const clr_git_repo_id *expect_id, const char *rev,
                      const char *path, size_t max, clr_error *err)
{
    *out = NULL;
    *len = 0;
    LIBGIT2_SCOPE(err);
    if (!repo_path || !path)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "reading a file needs a repository and a path");
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    if (clr_gitws_open_repo(&repo, repo_path, expect_id, NULL, err) < 0)
        return -1;
    _cleanup_git_(git_commit_free) git_commit *commit = NULL;
    if (clr_gitws_resolve_commit(&commit, repo, rev ? rev : "HEAD", repo_path, err) < 0)
        return -1;
    git_oid_tostr(commit_hex, CLR_GIT_OID_HEX_SIZE, git_commit_id(commit));
    _cleanup_git_(git_tree_free) git_tree *tree = NULL;
    if (git_commit_tree(&tree, commit) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading the tree of %s in %s", commit_hex,
                              repo_path);
    git_tree_entry *entry = NULL;
    int rc = git_tree_entry_bypath(&entry, tree, path);
    if (rc == GIT_ENOTFOUND)
        return 0;
    if (rc < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "looking up %s in %s", path, commit_hex);
    git_filemode_t mode = git_tree_entry_filemode(entry);
    git_oid id = *git_tree_entry_id(entry);
    git_tree_entry_free(entry);
    if (mode != GIT_FILEMODE_BLOB && mode != GIT_FILEMODE_BLOB_EXECUTABLE)
        return clr_error_set(err, CLR_E_INVALID, 0, "%s in commit %.12s is not a regular file",
                             path, commit_hex);
    _cleanup_git_(git_blob_free) git_blob *blob = NULL;
    if (git_blob_lookup(&blob, repo, &id) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading %s of commit %s", path, commit_hex);
    git_object_size_t size = git_blob_rawsize(blob);
    if (size > max)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s in commit %.12s is larger than %zu bytes",
                             path, commit_hex, max);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return clr_gitws_oom(err);
    memcpy(buf, git_blob_rawcontent(blob), (size_t)size);
    buf[size] = '\0';
    *out = buf;
    *len = (size_t)size;
    return 1;
}

