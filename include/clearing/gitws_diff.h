/* Git workspaces, the diff: the workspace against a commit, as a patch, with nothing written to
 * the repository (lib/gitws_diff.c). */
#ifndef CLEARING_GITWS_DIFF_H
#define CLEARING_GITWS_DIFF_H

#include "common.h"
#include "gitws_repo.h"
#include "gitws_walk.h"

/* A unified diff, in git's patch format with renames detected and binary files marked as
 * binary, from the tree of branch_or_base (any rev-parse spec) to the workspace, walked and
 * filtered exactly as clr_git_commit() would; "" when nothing differs. Nothing in the
 * repository changes: the workspace's blobs and trees are held in memory for the call (at
 * most lim's max_total_bytes of content new to the repository), never written to its object
 * store. lim may be NULL (defaults).
 * *out_text is owned by the caller (free()). Errors as clr_git_commit(). */
CLR_PUBLIC int clr_git_diff(char **out_text, const char *repo_path,
                            const clr_git_repo_id *expect_id, const char *branch_or_base,
                            const char *workspace_dir, const clr_git_limits *lim,
                            clr_error *err);

#endif
