/* Git workspaces, the branch: a sandbox's branch created (or continued) and its tree written
 * into the empty workspace, owned by the sandbox user; the branch taken back when the run
 * commits nothing (gitws_prepare.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "clearing/gitws_prepare.h"
#include "gitws_repo_internal.h"
#include "gitws_walk_internal.h"
#include "internal.h"

/* ---- prepare ---- */

static int choose_branch(char out[CLR_GIT_BRANCH_SIZE], const clr_git_prepare_options *o,
                         clr_error *err)
{
    if (!o->branch && (!o->sandbox_id || !*o->sandbox_id))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "pass a branch or a sandbox id to name the workspace's branch");
    char name[CLR_GIT_BRANCH_SIZE + 16];
    if (o->branch)
        snprintf(name, sizeof(name), "%.*s", CLR_GIT_BRANCH_SIZE, o->branch);
    else
        snprintf(name, sizeof(name), "clearing/%.*s", CLR_GIT_BRANCH_SIZE, o->sandbox_id);
    if (clr_gitws_check_branch_name(name, err) < 0)
        return -1;
    memcpy(out, name, strlen(name) + 1);
    return 0;
}

/* The checkout must land in a fresh directory: libgit2 opens paths in it by name, which is
 * only safe while nothing the sandbox wrote is there. */
static int require_empty(int ws, const char *dir, clr_error *err)
{
    int fd = dup(ws);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "dup: %s", strerror(errno));
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "listing %s: %s", dir, strerror(errno));
    }
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            return clr_error_set(err, CLR_E_CONFLICT, ENOTEMPTY,
                                 "the workspace %s is not empty: prepare it before the sandbox "
                                 "writes to it",
                                 dir);
    return 0;
}

/* Creates the branch at base, or with reuse returns the existing one. *created says whether a
 * failure later must delete it again. */
/* The branch the repository's HEAD names, and the operator's judging ref (protect_ref), hold
 * the .clearing/gauntlet.yaml that judges plans: no sandbox writes to them, so no plan can
 * plant the gauntlet a later plan is judged by. */
static int refuse_judge_branch(git_repository *repo, const char *branch,
                               const clr_git_prepare_options *o, clr_error *err)
{
    char full[CLR_GIT_BRANCH_SIZE + 16];
    snprintf(full, sizeof(full), "refs/heads/%s", branch);
    _cleanup_git_(git_reference_free) git_reference *head = NULL;
    if (git_reference_lookup(&head, repo, "HEAD") == 0 &&
        git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
        !strcmp(git_reference_symbolic_target(head), full))
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "branch %s is the repository's default branch (HEAD), whose "
                             ".clearing/gauntlet.yaml judges plans: a sandbox works on a branch "
                             "of its own",
                             branch);
    if (o->protect_ref && *o->protect_ref) {
        _cleanup_git_(git_reference_free) git_reference *judge = NULL;
        if (git_reference_dwim(&judge, repo, o->protect_ref) == 0 &&
            !strcmp(git_reference_name(judge), full))
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "branch %s is the operator's gauntlet_ref, which judges plans: "
                                 "a sandbox works on a branch of its own",
                                 branch);
    }
    return 0;
}

static int make_branch(git_reference **out, bool *created, git_repository *repo,
                       const char *branch, const git_commit *base,
                       const clr_git_prepare_options *o, clr_error *err)
{
    *created = false;
    int rc = git_branch_create(out, repo, branch, base, 0);
    if (rc == GIT_EEXISTS && !o->reuse_branch)
        return clr_error_set(err, CLR_E_CONFLICT, EEXIST,
                             "branch %s exists in %s; pass reuse to continue on it", branch,
                             o->repo_path);
    if (rc == GIT_EEXISTS)
        rc = git_branch_lookup(out, repo, branch, GIT_BRANCH_LOCAL);
    else if (rc == 0)
        *created = true;
    if (rc < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "creating branch %s in %s", branch,
                              o->repo_path);
    if (clr_gitws_refuse_checked_out(*out, branch, o->repo_path, err) < 0 ||
        refuse_judge_branch(repo, branch, o, err) < 0) {
        if (*created)
            git_branch_delete(*out);
        git_reference_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int chown_tree(int fd, uid_t uid, gid_t gid, unsigned depth, clr_error *err);

static int chown_entry(int dfd, const char *name, uid_t uid, gid_t gid, unsigned depth,
                       clr_error *err)
{
    if (fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s in the workspace: %s", name,
                             strerror(errno));
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "opening %s in the workspace: %s", name,
                             strerror(errno));
    return chown_tree(fd, uid, gid, depth + 1, err);
}

/* Gives everything below the directory open as fd (taken over) to uid:gid, never following a
 * link (the tree may hold links to anywhere). */
static int chown_tree(int fd, uid_t uid, gid_t gid, unsigned depth, clr_error *err)
{
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "listing the workspace: %s",
                             strerror(errno));
    }
    if (depth > DEPTH_CEILING)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP, "the tree nests deeper than %u directories",
                             DEPTH_CEILING);
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (chown_entry(dirfd(d), e->d_name, uid, gid, depth, err) < 0)
            return -1;
    }
    return 0;
}

static int checkout_into(git_repository *repo, const git_commit *start, int ws,
                         const clr_git_prepare_options *o, clr_error *err)
{
    /* An empty in-memory baseline: everything in the tree is written, and neither the caller's
     * HEAD nor its index is consulted, let alone updated. No filters: the commit side stores
     * bytes as they are, so the checkout writes them as they are. */
    _cleanup_git_(git_index_free) git_index *empty = NULL;
    if (git_index_new(&empty) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "creating an empty index");
    git_checkout_options co;
    git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
    co.checkout_strategy = GIT_CHECKOUT_FORCE | GIT_CHECKOUT_DONT_UPDATE_INDEX;
    co.disable_filters = 1;
    co.baseline_index = empty;
    co.target_directory = o->workspace_dir;
    if (git_checkout_tree(repo, (const git_object *)start, &co) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "writing the tree into %s (is the workspace big "
                              "enough?)", o->workspace_dir);
    struct stat st;
    if (fstatat(ws, ".git", &st, AT_SYMLINK_NOFOLLOW) == 0)
        return clr_error_set(err, CLR_E_INTERNAL, EEXIST,
                             "a .git appeared in the workspace %s during checkout",
                             o->workspace_dir);
    if (fchown(ws, o->uid, o->gid) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s: %s", o->workspace_dir,
                             strerror(errno));
    int fd = openat(ws, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "reopening %s: %s", o->workspace_dir,
                             strerror(errno));
    return chown_tree(fd, o->uid, o->gid, 0, err);
}

int clr_git_prepare(clr_git_workspace *out, const clr_git_prepare_options *o, clr_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!o || !o->repo_path || !o->workspace_dir)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "preparing a git workspace needs repo_path and workspace_dir");
    LIBGIT2_SCOPE(err);
    if (choose_branch(out->branch, o, err) < 0)
        return -1;
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    _cleanup_git_(git_commit_free) git_commit *base = NULL;
    if (clr_gitws_open_repo(&repo, o->repo_path, o->expect_id, &out->repo_id, err) < 0 ||
        clr_gitws_resolve_commit(&base, repo, o->base_ref ? o->base_ref : "HEAD", o->repo_path,
                                 err) < 0)
        return -1;
    clr_gitws_oid_hex(out->base_commit, git_commit_id(base));
    _cleanup_close_ int ws = clr_gitws_open_workspace(o->workspace_dir, err);
    if (ws < 0 || require_empty(ws, o->workspace_dir, err) < 0)
        return -1;
    _cleanup_git_(git_reference_free) git_reference *ref = NULL;
    bool created;
    if (make_branch(&ref, &created, repo, out->branch, base, o, err) < 0)
        return -1;
    _cleanup_git_(git_object_free) git_object *start = NULL;
    int rc = git_reference_peel(&start, ref, GIT_OBJECT_COMMIT);
    if (rc < 0)
        clr_gitws_fail(err, CLR_E_INTERNAL, "resolving branch %s", out->branch);
    else
        rc = checkout_into(repo, (const git_commit *)start, ws, o, err);
    if (rc < 0) {
        if (created)
            git_branch_delete(ref);
        return clr_error_prefix(err, "preparing the workspace %s", o->workspace_dir);
    }
    clr_gitws_oid_hex(out->start_commit, git_object_id(start));
    return 0;
}

int clr_git_branch_discard(const char *repo_path, const clr_git_repo_id *expect_id,
                           const char *branch, const char *commit_hex, clr_error *err)
{
    LIBGIT2_SCOPE(err);
    git_oid want;
    if (!repo_path || !branch || !commit_hex || git_oid_fromstr(&want, commit_hex) < 0)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "discarding a branch needs a repository, a branch and a commit id");
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    if (clr_gitws_open_repo(&repo, repo_path, expect_id, NULL, err) < 0)
        return -1;
    _cleanup_git_(git_reference_free) git_reference *ref = NULL;
    int rc = git_branch_lookup(&ref, repo, branch, GIT_BRANCH_LOCAL);
    if (rc == GIT_ENOTFOUND)
        return 0;
    if (rc < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "looking up branch %s in %s", branch, repo_path);
    const git_oid *at = git_reference_target(ref);
    if (!at || git_oid_cmp(at, &want) != 0)
        return 0;
    if (git_branch_delete(ref) < 0)
        return clr_gitws_fail(err, CLR_E_CONFLICT, "deleting branch %s in %s", branch, repo_path);
    return 1;
}

