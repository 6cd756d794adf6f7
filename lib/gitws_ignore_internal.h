/* Git workspaces, .gitignore: the library's side of gitws_ignore.h (lib/gitws_ignore.c): the
 * matcher with a step budget the caller shares across many matches (the walk's), so rules a
 * sandbox wrote on a reused branch cannot make a commit run unbounded. */
#ifndef CLR_GITWS_IGNORE_INTERNAL_H
#define CLR_GITWS_IGNORE_INTERNAL_H

#include <stdbool.h>

#include "clearing/cleanup.h"
#include "clearing/gitws_ignore.h"

/* At most this much of a .gitignore is read. */
#define IGNORE_MAX_BYTES (1u << 20)

CLR_DEFINE_CLEANUP(clr_git_ignore *, clr_git_ignore_free)
#define _cleanup_ignore_ __attribute__((cleanup(clr_git_ignore_freep)))

/* 1 ignored, 0 not, -1 the budget ran out (every rule tried and every glob step costs one of
 * *budget). The first rule that matches, from the deepest file and its last line upwards,
 * decides. */
int clr_gitws_ignore_check(const clr_git_ignore *ig, const char *path, bool is_dir,
                           long *budget);

#endif
