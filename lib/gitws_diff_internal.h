/* Git workspaces, the diff: the library's side of gitws_diff.h (lib/gitws_diff.c): two trees
 * compared as `git diff -M` does, for the commit's diffstat too. */
#ifndef CLR_GITWS_DIFF_INTERNAL_H
#define CLR_GITWS_DIFF_INTERNAL_H

#include <git2.h>

#include "clearing/gitws_diff.h"

/* Both sides of a diff, with renames found. The caller frees *out (git_diff_free), also after a
 * failure (-1 with err set). */
int clr_gitws_diff_trees(git_diff **out, git_repository *repo, git_tree *old_tree,
                         git_tree *new_tree, clr_error *err);

#endif
