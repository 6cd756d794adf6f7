/* Files, deletion: removing an entry of the workspace, or a whole tree, without following a
 * link (lib/files_delete.c). */
#ifndef CLEARING_FILES_DELETE_H
#define CLEARING_FILES_DELETE_H

#include "common.h"

/* Deletes rel: a file, a symlink (the link itself) or an empty directory; with recursive, a
 * directory and everything below it, walking with O_NOFOLLOW (links inside are unlinked, never
 * followed) at most CLR_FILES_DELETE_MAX_DEPTH levels deep. The root cannot be deleted.
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID, CLR_E_CONFLICT (directory not empty and not
 * recursive, or the sandbox keeps filling it), CLR_E_LIMIT (nested too deep; what was reached
 * is deleted). */
#define CLR_FILES_DELETE_MAX_DEPTH 128
CLR_PUBLIC int clr_files_delete(int root, const char *rel, bool recursive, clr_error *err);

#endif
