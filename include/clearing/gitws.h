/* Git workspaces: a sandbox works on its own branch of a host repository, without ever seeing
 * the repository itself.
 *
 * clr_git_prepare() creates the branch and writes its tree into the (empty) workspace; the
 * sandbox gets plain files and no .git. clr_git_commit() turns whatever the sandbox left in the
 * workspace into one commit on that branch; clr_git_diff() shows the same change as a patch.
 *
 * Everything in a workspace after the sandbox ran is written by an adversary and may change
 * while we read it. The walk that reads it therefore opens every entry relative to its parent
 * directory's descriptor with O_NOFOLLOW and reads from the descriptor it checked: symlinks are
 * committed as links (their target as-is, never followed), FIFOs, sockets, devices and anything
 * named .git (at any level, in any case or NTFS/HFS spelling) are skipped and reported, and
 * sizes, counts and depth are bounded before anything is read. No hook, filter or config of the
 * workspace is ever consulted; .gitignore rules come from the branch's tree in the object
 * database, never from the workspace.
 *
 * The caller's own checkout is never touched: no HEAD, index, working-tree file or other branch
 * changes, and a branch that is checked out anywhere is refused.
 *
 * One module each: gitws_repo.h (opening a repository, reading a file of a commit),
 * gitws_prepare.h (branch and checkout), gitws_walk.h (the hostile-safe walk), gitws_commit.h,
 * gitws_diff.h, gitws_ignore.h (the base tree's .gitignore matcher). */
#ifndef CLEARING_GITWS_H
#define CLEARING_GITWS_H

#include <sys/types.h>

#include "common.h"
#include "gitws_commit.h"
#include "gitws_diff.h"
#include "gitws_ignore.h"
#include "gitws_prepare.h"
#include "gitws_repo.h"
#include "gitws_walk.h"

/* Does text hold a line that starts (after blanks) with "Clearing-", in any case? Such lines
 * in a commit message are written by clearing alone: a client's message or trailer that has
 * one is refused, so no client can stamp a verdict. Defined in lib/commit.c. */
CLR_PUBLIC bool clr_commit_claims_clearing(const char *text);

/* The sandbox's workspace as one commit on its branch, with trailers Clearing-Sandbox, -Image,
 * -Runtime, -Base and the given extra ones ("Key: value"), and with sign_with (NULL: unsigned)
 * a Clearing-Signature over them, the tree and the parent (verdict.h). CLR_E_CONFLICT for a
 * sandbox made without a repository; CLR_E_INVALID for a message with a "Clearing-" line.
 * *out is released with clr_git_commit_result_clear(), as clr_git_commit()'s. Defined in
 * lib/commit.c. */
struct clr_sandbox;
struct clr_verdict_key;
CLR_PUBLIC int clr_sandbox_commit(clr_git_commit_result *out, const struct clr_sandbox *sb,
                                  const char *message, const char *author_name,
                                  const char *author_email, const char *const *extra_trailers,
                                  const struct clr_verdict_key *sign_with, clr_error *err);
/* Unified diff of the workspace against the sandbox's base commit; caller frees. */
CLR_PUBLIC int clr_sandbox_diff(char **out, const struct clr_sandbox *sb, clr_error *err);

#endif
