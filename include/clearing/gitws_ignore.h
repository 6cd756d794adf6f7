/* Git workspaces, .gitignore: git's glob matcher and ignore rules, pure functions
 * (lib/gitws_ignore.c). The walk takes its rules from the base tree, never from the workspace. */
#ifndef CLEARING_GITWS_IGNORE_H
#define CLEARING_GITWS_IGNORE_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

/* Does a gitignore glob match a '/'-separated relative path? git's wildmatch with WM_PATHNAME:
 * '*', '?' and '[...]' (ranges, '!' or '^' negation, [:alpha:]-style classes) never match '/';
 * "**" matches across directories only as a whole component ("**" + "/" at the start, "/" +
 * "**" at the end, "/" + "**" + "/" inside), elsewhere it is a plain '*'; '\' escapes. A
 * malformed pattern (unclosed '[') matches nothing. */
CLR_PUBLIC bool clr_git_glob_match(const char *pattern, const char *path);

/* The rules of one .gitignore file, chained to those of the directories above it. */
typedef struct clr_git_ignore clr_git_ignore;

/* Parses a .gitignore's text (at most len bytes; lines past 1 MiB or 10000 rules are not read)
 * found in directory dir ("" for the top, "a/b" below; no trailing '/'). parent (may be NULL)
 * holds the rules of the directories above and must outlive *out (clr_git_ignore_free). */
CLR_PUBLIC int clr_git_ignore_parse(clr_git_ignore **out, const clr_git_ignore *parent,
                                    const char *dir, const char *text, size_t len,
                                    clr_error *err);

CLR_PUBLIC void clr_git_ignore_free(clr_git_ignore *ig);

/* Is path (relative to the top, a directory if is_dir) ignored by ig and its parents? Deeper
 * files win over shallower ones, later lines over earlier ones, a '!' line re-includes. The
 * caller applies git's other rule itself: everything inside an ignored directory is ignored. */
CLR_PUBLIC bool clr_git_ignored(const clr_git_ignore *ig, const char *path, bool is_dir);

#endif
