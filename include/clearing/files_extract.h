/* Files, extraction: a tar archive from a client written into the workspace, all or nothing
 * (lib/files_extract.c, libarchive in). */
#ifndef CLEARING_FILES_EXTRACT_H
#define CLEARING_FILES_EXTRACT_H

#include "common.h"
#include "files_limits.h"

/* Extracts a tar archive (plain or gzip-compressed; ustar, pax or GNU) read from tar_fd into the
 * directory rel_dir ("" for the root; created with its parents if missing).
 *
 * All or nothing: entries are extracted into a fresh staging directory inside rel_dir, owned by
 * root with mode 0700 so the sandbox user cannot look into it or change it while it fills (its
 * name, ".clr-extract-<random>", is visible meanwhile); only when every entry
 * has been accepted are the results moved into rel_dir with rename(2) (existing files and
 * symlinks are replaced, existing directories merged). On any refusal the staging directory is
 * deleted and rel_dir is unchanged. Refused, failing the whole extraction with CLR_E_INVALID
 * naming the entry: absolute paths, ".." components, hardlinks, devices, FIFOs, sockets, an
 * entry through a symlink extracted earlier ("link/x"), a directory where a file was or the
 * reverse. With CLR_E_LIMIT: more than max_entries entries, a file whose declared size exceeds
 * max_file_bytes (refused before any byte is written, so a sparse giant costs nothing), a total
 * over max_total_bytes, paths deeper than max_depth. With CLR_E_CONFLICT: an extracted entry
 * whose type differs from what already exists in rel_dir (checked before anything is moved).
 * Symlinks are created as symlinks with their target verbatim. Modes are masked to 0777, the
 * owner is 1000:1000, modification times of files and links are kept, ownership, xattrs and
 * ACLs in the archive are ignored. lim may be NULL; report may be NULL. tar_fd is not closed. */
CLR_PUBLIC int clr_files_extract_tar(int root, const char *rel_dir, int tar_fd,
                                     const clr_files_limits *lim, clr_files_report *report,
                                     clr_error *err);

#endif
