/* Scope-owned libgit2 objects: `_cleanup_git_(git_tree_free) git_tree *t = NULL;` is freed on
 * every return path, `_cleanup_git_buf_ git_buf b = GIT_BUF_INIT;` disposed; steal_pointer (&t)
 * hands an object on. */
#ifndef CLR_CLEANUP_GIT_H
#define CLR_CLEANUP_GIT_H

#include <git2.h>

#include "clearing/cleanup.h"

CLR_DEFINE_CLEANUP(git_repository *, git_repository_free)
CLR_DEFINE_CLEANUP(git_reference *, git_reference_free)
CLR_DEFINE_CLEANUP(git_object *, git_object_free)
CLR_DEFINE_CLEANUP(git_commit *, git_commit_free)
CLR_DEFINE_CLEANUP(git_tree *, git_tree_free)
CLR_DEFINE_CLEANUP(git_blob *, git_blob_free)
CLR_DEFINE_CLEANUP(git_treebuilder *, git_treebuilder_free)
CLR_DEFINE_CLEANUP(git_signature *, git_signature_free)
CLR_DEFINE_CLEANUP(git_index *, git_index_free)
CLR_DEFINE_CLEANUP(git_diff *, git_diff_free)
CLR_DEFINE_CLEANUP(git_diff_stats *, git_diff_stats_free)
CLR_DEFINE_CLEANUP(git_odb *, git_odb_free)

/* fn is the object's free function: _cleanup_git_(git_commit_free). */
#define _cleanup_git_(fn) __attribute__((cleanup(fn##p)))

static inline void git_buf_disposep(git_buf *b)
{
    git_buf_dispose(b);
}
#define _cleanup_git_buf_ __attribute__((cleanup(git_buf_disposep)))

/* A blob write stream not committed: freed through its own free member. */
static inline void git_writestream_freep(git_writestream **s)
{
    if (*s)
        (*s)->free(*s);
}
#define _cleanup_git_writestream_ __attribute__((cleanup(git_writestream_freep)))

#endif
