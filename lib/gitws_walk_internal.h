/* Git workspaces, the walk: the library's side of gitws_walk.h (lib/gitws_walk.c). A workspace
 * the sandbox wrote becomes a tree in a repository's object database: every entry opened
 * beneath its parent's descriptor with O_NOFOLLOW, read from the descriptor that was checked,
 * bounded in size, count and depth; .gitignore rules from the base tree only. */
#ifndef CLR_GITWS_WALK_INTERNAL_H
#define CLR_GITWS_WALK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <git2.h>

#include "clearing/gitws_walk.h"

/* Steps all glob matches of one walk may take together; never changed but by a unit test, which
 * lowers it to spend less time reaching it in an instrumented build (tests/unit/
 * test_gitws_walk.c). */
extern long clr_gitws_walk_glob_budget;

/* The deepest any tree we write or walk may nest, whatever max_depth says. */
#define DEPTH_CEILING 1024u

/* What a walk left out, in walk order. */
typedef struct skipped_list {
    clr_git_skipped *v;
    size_t n, cap;
} skipped_list;

/* Frees the paths and the array, and empties l. */
void clr_gitws_skipped_list_clear(skipped_list *l);

typedef struct walk_request {
    git_repository *repo;
    const char *workspace_dir;
    const git_tree *base; /* the tree whose .gitignore files and tracked paths apply */
    const clr_git_limits *limits;
    clr_git_walk_hook hook;
    void *hook_data;
    bool in_memory; /* the repository writes objects to memory only (see use_memory_odb) */
} walk_request;

/* Writes the tree of the whole workspace into rq->repo: *tree_id. *skipped gets what was left
 * out; the caller clears it with clr_gitws_skipped_list_clear() (it is empty after a failure).
 * 0, or -1 with err set (CLR_E_LIMIT names the path over a bound). */
int clr_gitws_workspace_tree(git_oid *tree_id, skipped_list *skipped, const walk_request *rq,
                             clr_error *err);

/* Opens the workspace directory dir (its last component not a symlink); the caller closes the
 * descriptor. -1 with err set: CLR_E_NOT_FOUND, CLR_E_INVALID. */
int clr_gitws_open_workspace(const char *dir, clr_error *err);

#endif
