/* Git workspaces, the repository: the library's side of gitws_repo.h (lib/gitws_repo.c). How
 * every gitws module opens a repository (refusing one that shares refs or objects, or is not
 * the one admitted), resolves a commit, checks a branch, and reports a libgit2 failure. */
#ifndef CLR_GITWS_REPO_INTERNAL_H
#define CLR_GITWS_REPO_INTERNAL_H

#include <git2.h>

#include "cleanup_git.h"
#include "clearing/gitws_repo.h"

/* libgit2's global state is reference-counted: every public entry point holds one reference for
 * its duration, so callers need not know libgit2 exists. */
static inline void libgit2_releasep(int *count)
{
    if (*count > 0)
        git_libgit2_shutdown();
}
#define LIBGIT2_SCOPE(err)                                                                        \
    __attribute__((cleanup(libgit2_releasep))) int libgit2_ref_ = git_libgit2_init();             \
    if (libgit2_ref_ < 0)                                                                         \
        return clr_error_set(err, CLR_E_INTERNAL, 0, "cannot initialise libgit2");

/* Sets err to code with the formatted what, a colon and libgit2's last error. Returns -1. */
__attribute__((format(printf, 3, 4))) int clr_gitws_fail(clr_error *err, clr_error_code code,
                                                         const char *fmt, ...);
/* Sets err to "out of memory". Returns -1. */
int clr_gitws_oom(clr_error *err);

/* Opens the repository at path (never searching upwards), refuses one whose git directory takes
 * its refs or objects from another directory (commondir, alternates: what was checked would
 * not be what is written), and, given expect, one whose git directory is not the one that was
 * checked. *got (may be NULL) is the identity of the git directory opened. On success the
 * caller frees *out (git_repository_free); on failure *out is NULL and err is set (-1). */
int clr_gitws_open_repo(git_repository **out, const char *path, const clr_git_repo_id *expect,
                        clr_git_repo_id *got, clr_error *err);

/* The commit spec names (anything git rev-parse understands), peeled; the caller frees *out
 * (git_commit_free). -1 with err set: CLR_E_NOT_FOUND, CLR_E_INVALID (not a commit). */
int clr_gitws_resolve_commit(git_commit **out, git_repository *repo, const char *spec,
                             const char *repo_path, clr_error *err);

/* Refuses (CLR_E_CONFLICT) a branch checked out here or in a linked worktree, and
 * (CLR_E_INVALID) a symbolic one. 0 or -1. */
int clr_gitws_refuse_checked_out(git_reference *ref, const char *branch, const char *repo_path,
                                 clr_error *err);

/* Refuses (CLR_E_INVALID) a name git would not take for a branch, or one of
 * CLR_GIT_BRANCH_SIZE bytes or more. 0 or -1. */
int clr_gitws_check_branch_name(const char *branch, clr_error *err);

/* id as 40 hex digits and a NUL. */
void clr_gitws_oid_hex(char out[CLR_GIT_OID_HEX_SIZE], const git_oid *id);

#endif
