/* Host-side file operations on a sandbox's workspace, confined to the workspace's root directory.
 *
 * Everything inside a workspace was written by the sandboxed code and may change while we look
 * at it. Every path is therefore resolved relative to a root directory descriptor with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and final components
 * are opened with O_NOFOLLOW: a symlink anywhere in a path (also one swapped in concurrently)
 * makes the operation fail with CLR_E_INVALID instead of leading out of the workspace. Symlinks
 * are listed, archived, replaced and deleted as links, never followed.
 *
 * Paths are relative ("src/main.c"); "" and "." name the root. Every function that creates
 * something gives it to the sandbox user (1000:1000) with permission bits masked to 0777.
 *
 * The operations, one module each: files_path.h (paths, the root), files_rw.h (one file
 * written or read whole), files_list.h (stat and list), files_delete.h, files_extract.h (tar
 * in), files_archive.h (tar out); files_limits.h and files_io.h hold the bounds, reports and
 * the output budget they share. */
#ifndef CLEARING_FILES_H
#define CLEARING_FILES_H

#include "files_archive.h"
#include "files_delete.h"
#include "files_extract.h"
#include "files_io.h"
#include "files_limits.h"
#include "files_list.h"
#include "files_path.h"
#include "files_rw.h"

#endif
