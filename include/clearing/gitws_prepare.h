/* Git workspaces, the branch: a branch per sandbox and its tree written into the empty
 * workspace, and the branch taken back when the run commits nothing (lib/gitws_prepare.c). */
#ifndef CLEARING_GITWS_PREPARE_H
#define CLEARING_GITWS_PREPARE_H

#include <stdbool.h>
#include <sys/types.h>

#include "common.h"
#include "gitws_repo.h"

typedef struct clr_git_prepare_options {
    const char *repo_path;     /* the host repository (work tree or .git directory); required */
    const clr_git_repo_id *expect_id; /* see above; NULL: not checked */
    const char *base_ref;      /* anything git rev-parse understands; NULL: HEAD */
    const char *branch;        /* NULL: "clearing/<sandbox_id>" */
    const char *sandbox_id;    /* names the default branch; required when branch is NULL */
    bool reuse_branch;         /* an existing branch is continued from its tip, not refused */
    /* A ref no sandbox may write (the operator's gauntlet_ref); HEAD's branch never may. */
    const char *protect_ref;
    const char *workspace_dir; /* the workspace on the host; must exist and be empty */
    uid_t uid;                 /* owner given to everything written into the workspace */
    gid_t gid;
} clr_git_prepare_options;

#define CLR_GIT_PREPARE_OPTIONS_INIT {.uid = 1000, .gid = 1000}

/* What clr_git_prepare() set up. */
typedef struct clr_git_workspace {
    char branch[CLR_GIT_BRANCH_SIZE];     /* short name ("clearing/sb-...") */
    char base_commit[CLR_GIT_OID_HEX_SIZE];  /* base_ref, resolved */
    char start_commit[CLR_GIT_OID_HEX_SIZE]; /* what the workspace holds: base, or the reused tip */
    clr_git_repo_id repo_id; /* the git directory that was opened */
} clr_git_workspace;

/* Resolves base_ref to a commit, creates the branch there (or, with reuse_branch, continues an
 * existing one from its tip) and writes that commit's tree into workspace_dir, without filters,
 * without a .git and without touching the repository's index or working tree; then gives every
 * entry of the workspace to uid:gid. Call it before the sandbox starts: the workspace must be
 * empty, since checking out into a directory the sandbox has written could follow its symlinks.
 * A branch this call created is deleted again when a later step fails.
 * Errors: CLR_E_INVALID (missing option, bad branch name), CLR_E_NOT_FOUND (no repository, no
 * such ref or workspace), CLR_E_CONFLICT (branch exists without reuse_branch, branch checked
 * out, workspace not empty), CLR_E_INTERNAL (libgit2 or the filesystem failed). */
CLR_PUBLIC int clr_git_prepare(clr_git_workspace *out, const clr_git_prepare_options *o,
                               clr_error *err);

/* Deletes branch from the repository at repo_path if it still points at commit_hex: the undo
 * of clr_git_prepare() for a run that ends without committing, so such a run leaves no branch.
 * The deletion is a compare-and-swap against commit_hex (libgit2 checks the old value under the
 * ref lock): a branch that anyone moved meanwhile is kept. Returns 1 when deleted, 0 when the
 * branch is missing or elsewhere, -1 on an error (a checked-out branch is refused by libgit2). */
CLR_PUBLIC int clr_git_branch_discard(const char *repo_path, const clr_git_repo_id *expect_id,
                                      const char *branch, const char *commit_hex,
                                      clr_error *err);

#endif
