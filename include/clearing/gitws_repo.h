/* Git workspaces, the repository: which git directory a path leads to and how it is opened
 * (lib/gitws_repo.c); reading one file of a commit without any working tree. */
#ifndef CLEARING_GITWS_REPO_H
#define CLEARING_GITWS_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* 40 hex digits and a NUL (libgit2 1.5 repositories are SHA-1). */
#define CLR_GIT_OID_HEX_SIZE 41
/* Longest branch name accepted (without "refs/heads/"), plus the NUL. */
#define CLR_GIT_BRANCH_SIZE 256

/* Which git directory a repository path led to, by device and inode: what the daemon checked
 * when it admitted the path (clr_repo_admit), and what every later open of the path must find
 * again, so that a directory swapped for a symlink, a .git replaced by a gitfile, or another
 * repository moved in at the same path is refused instead of written to. */
typedef struct clr_git_repo_id {
    uint64_t dev;
    uint64_t ino;
} clr_git_repo_id;

/* Every function below that opens a repository also refuses one whose git directory shares
 * its refs or objects with another (a linked worktree's commondir, objects/info/alternates),
 * and, given an expected clr_git_repo_id (NULL: whatever is at the path, for a local caller
 * that trusts its own paths), one whose git directory is not that one: CLR_E_CONFLICT. */

/* Reads the regular file path (relative, '/'-separated) from the tree of the commit rev names
 * (any rev-parse spec; NULL: HEAD) in the repository at repo_path, without touching any working
 * tree. commit_hex gets the commit rev resolved to, so the caller can pin it. *out (caller
 * frees) holds the bytes plus a NUL, *len their number. Returns 1 when read, 0 when the commit
 * has no such path (*out NULL), -1 on an error: CLR_E_NOT_FOUND (no repository, no such rev),
 * CLR_E_INVALID (not a regular file: a symlink, a directory, a submodule), CLR_E_LIMIT (larger
 * than max bytes). */
CLR_PUBLIC int clr_git_read_file(char **out, size_t *len, char commit_hex[CLR_GIT_OID_HEX_SIZE],
                                 const char *repo_path, const clr_git_repo_id *expect_id,
                                 const char *rev, const char *path, size_t max, clr_error *err);

#endif
