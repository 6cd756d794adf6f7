/* Files, paths: how a caller's path names something inside a workspace (lib/files_path.c).
 *
 * A path is relative ("src/main.c"); "" and "." name the root. It is checked here, then
 * resolved beneath the workspace's root descriptor with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so no path ever leads out of the workspace or
 * through a symlink (see files.h). */
#ifndef CLEARING_FILES_PATH_H
#define CLEARING_FILES_PATH_H

#include <stddef.h>

#include "common.h"

/* Longest path and longest component accepted (Linux's PATH_MAX - 1 and NAME_MAX). */
#define CLR_FILES_PATH_MAX 4096
#define CLR_FILES_NAME_MAX 255

/* Opens workspace_dir (a trusted host path; only its last component must not be a symlink) as
 * the root descriptor every other function takes. The caller closes *out_fd.
 * Errors: CLR_E_NOT_FOUND if it does not exist, CLR_E_INVALID if it is not a directory. */
CLR_PUBLIC int clr_files_open_root(int *out_fd, const char *workspace_dir, clr_error *err);

/* Checks a caller-supplied relative path: not absolute, no ".." component, no empty component
 * (one trailing '/' is allowed), no NUL, at most CLR_FILES_PATH_MAX bytes and
 * CLR_FILES_NAME_MAX per component. "." components are allowed and ignored; "" and "." name
 * the root. Errors: CLR_E_INVALID with a message naming the problem. */
CLR_PUBLIC int clr_files_check_path(const char *rel, clr_error *err);
/* The same for a path given with its length, which is how an embedded NUL is caught. */
CLR_PUBLIC int clr_files_check_path_n(const char *rel, size_t len, clr_error *err);

#endif
