/* Files, archiving: a file or a tree of the workspace as a pax tar archive for a client
 * (lib/files_archive.c, libarchive out). */
#ifndef CLEARING_FILES_ARCHIVE_H
#define CLEARING_FILES_ARCHIVE_H

#include "common.h"
#include "files_limits.h"

/* Writes a pax tar archive of rel (a file, a symlink, or a directory and everything below it)
 * to out_fd (which stays open). Entry names are relative to rel: a directory's contents appear
 * as "a", "sub/", "sub/b", a single file or link under its own name. Symlinks are stored as
 * symlinks; FIFOs, sockets, devices and entries that vanish while archiving are skipped and
 * counted in report->skipped. The tree is measured against lim before any byte is written, so a
 * too-large request fails with CLR_E_LIMIT and an empty out_fd; if the sandbox grows it while it
 * is being written, the limit is still enforced and out_fd holds a truncated archive. A file
 * that shrinks meanwhile is padded with zeros to the size recorded in its header.
 * lim and report may be NULL (report only without lim->output_budget).
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (bad path, special file), CLR_E_LIMIT,
 * CLR_E_UNAVAILABLE (lim->output_budget is spent; out_fd holds a prefix), CLR_E_INTERNAL
 * (writing to out_fd failed). */
CLR_PUBLIC int clr_files_create_tar(int root, const char *rel, int out_fd,
                                    const clr_files_limits *lim, clr_files_report *report,
                                    clr_error *err);

#endif
