/* Git workspaces, the diff: the workspace against a commit as a patch, its objects held in
 * memory so the repository is left as it was (gitws_diff.h, gitws_diff_internal.h). */
#include <errno.h>
#include <string.h>

#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/odb_backend.h>

#include "gitws_diff_internal.h"
#include "gitws_repo_internal.h"
#include "gitws_walk_internal.h"
#include "internal.h"

/* Above every backend libgit2 adds to a repository's object database (loose 1, packs 2). */
#define MEMPACK_PRIORITY 1000

/* Both sides of a diff, with renames found the way `git diff -M` finds them. */
int clr_gitws_diff_trees(git_diff **out, git_repository *repo, git_tree *old_tree,
                      git_tree *new_tree, clr_error *err)
{
    git_diff_options opts;
    git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
    if (git_diff_tree_to_tree(out, repo, old_tree, new_tree, &opts) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "comparing trees");
    git_diff_find_options find;
    git_diff_find_options_init(&find, GIT_DIFF_FIND_OPTIONS_VERSION);
    find.flags = GIT_DIFF_FIND_RENAMES;
    if (git_diff_find_similar(*out, &find) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "detecting renames");
    return 0;
}

/* ---- diff ---- */

static int patch_text(char **out, git_diff *diff, clr_error *err)
{
    _cleanup_git_buf_ git_buf buf = GIT_BUF_INIT;
    if (git_diff_to_buf(&buf, diff, GIT_DIFF_FORMAT_PATCH) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "formatting the diff");
    char *text = malloc(buf.size + 1);
    if (!text)
        return clr_gitws_oom(err);
    if (buf.size)
        memcpy(text, buf.ptr, buf.size);
    text[buf.size] = '\0';
    *out = text;
    return 0;
}

/* From here on every object written through repo lands in memory and dies with repo; what the
 * repository already holds is read from it as before. libgit2 writes to the backend of highest
 * priority that can write, and skips the write of an object any backend already has, so only
 * content new to the repository is held (the walk's max_total_bytes bounds it). A diff must
 * leave the caller's object store as it found it: before issue #16 every workspace blob of
 * every diff call stayed there for good. */
static int use_memory_odb(git_repository *repo, clr_error *err)
{
    _cleanup_git_(git_odb_free) git_odb *odb = NULL;
    if (git_repository_odb(&odb, repo) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "opening the object database");
    /* Before writing an object libgit2 "freshens" the copy a backend already has: the loose
     * and pack backends touch its file's mtime. Without freshen libgit2 asks exists instead,
     * so the repository's files are not even touched. The backends belong to this call's
     * own repository object, opened for it and freed with it. */
    size_t n = git_odb_num_backends(odb);
    for (size_t i = 0; i < n; i++) {
        git_odb_backend *b = NULL;
        if (git_odb_get_backend(&b, odb, i) < 0)
            return clr_gitws_fail(err, CLR_E_INTERNAL, "opening the object database");
        b->freshen = NULL;
    }
    git_odb_backend *mem = NULL;
    if (git_mempack_new(&mem) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "creating an in-memory object store");
    if (git_odb_add_backend(odb, mem, MEMPACK_PRIORITY) < 0) {
        mem->free(mem);
        return clr_gitws_fail(err, CLR_E_INTERNAL, "adding an in-memory object store");
    }
    return 0; /* the database owns mem now: freed with the repository */
}

int clr_git_diff(char **out_text, const char *repo_path, const clr_git_repo_id *expect_id,
                 const char *branch_or_base, const char *workspace_dir, const clr_git_limits *lim,
                 clr_error *err)
{
    *out_text = NULL;
    if (!repo_path || !branch_or_base || !workspace_dir)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "a workspace diff needs repo_path, a branch or base, and "
                             "workspace_dir");
    LIBGIT2_SCOPE(err);
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    _cleanup_git_(git_commit_free) git_commit *base = NULL;
    _cleanup_git_(git_tree_free) git_tree *base_tree = NULL;
    _cleanup_git_(git_tree_free) git_tree *ws_tree = NULL;
    _cleanup_git_(git_diff_free) git_diff *diff = NULL;
    if (clr_gitws_open_repo(&repo, repo_path, expect_id, NULL, err) < 0 ||
        use_memory_odb(repo, err) < 0 ||
        clr_gitws_resolve_commit(&base, repo, branch_or_base, repo_path, err) < 0)
        return -1;
    if (git_commit_tree(&base_tree, base) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading the tree of %s", branch_or_base);
    walk_request rq = {.repo = repo, .workspace_dir = workspace_dir, .base = base_tree,
                       .limits = lim, .in_memory = true};
    git_oid tree_id;
    skipped_list skipped = {0};
    int rc = clr_gitws_workspace_tree(&tree_id, &skipped, &rq, err);
    clr_gitws_skipped_list_clear(&skipped);
    if (rc < 0)
        return clr_error_prefix(err, "diffing the workspace %s", workspace_dir);
    if (git_tree_lookup(&ws_tree, repo, &tree_id) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading the workspace tree");
    if (clr_gitws_diff_trees(&diff, repo, base_tree, ws_tree, err) < 0)
        return -1;
    return patch_text(out_text, diff, err);
}
