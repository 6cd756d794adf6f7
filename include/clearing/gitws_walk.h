/* Git workspaces, the walk: the bounds on one walk of a workspace the sandbox wrote, and what
 * the walk leaves out (lib/gitws_walk.c; how it reads: see gitws.h). */
#ifndef CLEARING_GITWS_WALK_H
#define CLEARING_GITWS_WALK_H

#include <stdint.h>

#include "common.h"

/* Bounds on what one walk of a workspace may read; 0 in any field means its default. */
typedef struct clr_git_limits {
    uint64_t max_file_bytes;  /* largest file, by its fstat size (sparse or not); 100 MiB */
    uint64_t max_total_bytes; /* sum of file and link-target sizes; 1 GiB */
    uint64_t max_files;       /* directory entries visited, of every kind; 100000 */
    uint32_t max_depth;       /* directory levels below the workspace root; 64 (at most 1024) */
} clr_git_limits;

#define CLR_GIT_LIMITS_INIT                                                                       \
    {                                                                                             \
        .max_file_bytes = 100ull << 20, .max_total_bytes = 1ull << 30, .max_files = 100000,       \
        .max_depth = 64,                                                                          \
    }

/* Test-only: called by the workspace walk between classifying an entry (lstat) and opening it,
 * the window in which a hostile sandbox could swap it, on every attempt (an entry that changed
 * type is looked at again, up to three times); path is relative to the workspace. Lets tests
 * race the walk deterministically. Leave NULL in production. */
typedef void (*clr_git_walk_hook)(int dirfd, const char *name, const char *path, void *data);

/* An entry of the workspace that was not committed, and why. */
typedef struct clr_git_skipped {
    /* Relative to the workspace. Raw bytes chosen by the sandbox (any byte but NUL, '/' as the
     * separator): escape it before showing it anywhere. */
    char *path;
    /* A static string: ".git", "fifo", "socket", "char-device", "block-device", "unknown",
     * "gitmodules-symlink" (rejected by git fsck), "invalid-name" (refused by libgit2),
     * "unstable" (changed type on every attempt to read it). */
    const char *kind;
} clr_git_skipped;

#endif
