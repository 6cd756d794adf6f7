/* Git workspaces, the commit: the workspace as the branch's next commit (lib/gitws_commit.c). */
#ifndef CLEARING_GITWS_COMMIT_H
#define CLEARING_GITWS_COMMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "gitws_repo.h"
#include "gitws_walk.h"

/* At most this many trailers on a commit, and this long the line a seal writes. */
#define CLR_GIT_TRAILERS_MAX 64
#define CLR_GIT_SEAL_MAX 512

/* Writes into line (size len, NUL-terminated, no newline) one more "Key: value" trailer for a
 * commit about to be written with tree tree_hex on parent parent_hex and the trailers before
 * it (NULL-terminated): a signature over all of them. -1 with err set: nothing is written. */
typedef int (*clr_git_seal_fn)(char *line, size_t len, const char *tree_hex,
                               const char *parent_hex, const char *const *trailers, void *ctx,
                               clr_error *err);

typedef struct clr_git_commit_options {
    const char *repo_path;     /* required */
    const clr_git_repo_id *expect_id; /* NULL: not checked */
    const char *branch;        /* the branch clr_git_prepare() made; required */
    const char *workspace_dir; /* required */
    const char *message;       /* the commit message; required, non-empty */
    const char *author_name;   /* NULL: "clearing"; also the committer */
    const char *author_email;  /* NULL: "clearing@localhost" */
    /* "Key: value" lines appended after a blank line, NULL-terminated; may be NULL. */
    const char *const *trailers;
    clr_git_limits limits;
    clr_git_seal_fn seal; /* NULL: no seal; called once the tree is known (see above) */
    void *seal_ctx;
    clr_git_walk_hook test_hook; /* test-only, see clr_git_walk_hook */
    void *test_hook_data;
} clr_git_commit_options;

#define CLR_GIT_COMMIT_OPTIONS_INIT {.limits = CLR_GIT_LIMITS_INIT}

typedef struct clr_git_commit_result {
    char commit[CLR_GIT_OID_HEX_SIZE]; /* the new commit, or the unchanged tip */
    char branch[CLR_GIT_BRANCH_SIZE];
    bool changed;          /* false: the workspace equals the tip's tree, nothing committed */
    size_t files_changed;  /* diffstat against the parent, renames detected */
    size_t insertions;
    size_t deletions;
    char *stat_text;       /* git's --stat text ("a => b | 0", summary line); "" if unchanged */
    clr_git_skipped *skipped; /* in walk order */
    size_t n_skipped;
} clr_git_commit_result;

/* Commits the workspace as the branch's next commit: the tree is built from the walk described
 * at the top (executable bit from any x bit, empty directories dropped, gitlinks of the parent
 * kept where the workspace still has a directory), untracked paths matching the parent tree's
 * .gitignore files are left out (the tip's: a .gitignore a sandbox committed on a reused branch
 * governs the next commit; ignoring is tidiness, not a security boundary, and the cost of the
 * rules is bounded), and the branch is moved with a compare-and-swap from the
 * parent, so a concurrent commit is never lost. When the tree equals the parent's, nothing is
 * written and changed is false. *out is filled on success and must be released with
 * clr_git_commit_result_clear() (also safe after a failure).
 * Errors: CLR_E_INVALID, CLR_E_NOT_FOUND (no branch: call clr_git_prepare first),
 * CLR_E_CONFLICT (the branch moved during the commit, or is checked out), CLR_E_LIMIT (a file,
 * the total, the entry count, the depth, or the cost of the ignore rules is over its bound; the
 * message names the path), CLR_E_INTERNAL. */
CLR_PUBLIC int clr_git_commit(clr_git_commit_result *out, const clr_git_commit_options *o,
                              clr_error *err);

CLR_PUBLIC void clr_git_commit_result_clear(clr_git_commit_result *r);

#endif
