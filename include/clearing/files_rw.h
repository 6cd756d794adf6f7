/* Files, single files: one regular file written whole (atomically, by rename) or read whole
 * (lib/files_rw.c). */
#ifndef CLEARING_FILES_RW_H
#define CLEARING_FILES_RW_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "files_limits.h"

/* Writes a regular file at rel, creating missing parent directories (0755, owned 1000:1000).
 * The content comes from src_fd (read to end of file, streamed: the upload is never held in
 * memory) when src_fd >= 0, else from data/len. It is written to a temporary file in the same
 * directory and renamed into place, so readers see the old file or the new one, never a part;
 * a symlink at rel is replaced, not followed. The file gets mode & 0777 and owner 1000:1000.
 * lim may be NULL for the defaults; lim->max_file_bytes caps the content and lim->max_depth
 * the path. src_fd is read but not closed.
 * Errors: CLR_E_INVALID (bad path, a symlink or non-directory on the way), CLR_E_CONFLICT (rel
 * is a directory), CLR_E_LIMIT (too large, or the workspace is full), CLR_E_INTERNAL. On
 * failure nothing is left behind except parent directories already created. */
CLR_PUBLIC int clr_files_write(int root, const char *rel, int src_fd, const void *data,
                               size_t len, uint32_t mode, const clr_files_limits *lim,
                               clr_error *err);

/* Copies the regular file at rel to out_fd (which stays open), at most its size when opened;
 * *size_out (may be NULL) gets the bytes copied. Never blocks on a FIFO.
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (not a regular file: the message names the type; a
 * symlink anywhere in rel), CLR_E_LIMIT (larger than max_bytes; nothing is written), and
 * CLR_E_INTERNAL when reading or writing fails part way (out_fd has a prefix of the file). */
CLR_PUBLIC int clr_files_read(int root, const char *rel, int out_fd, uint64_t max_bytes,
                              uint64_t *size_out, clr_error *err);

/* clr_files_read() with lim->max_file_bytes as max_bytes (lim may be NULL: defaults), what is
 * written charged to lim->output_budget (CLR_E_UNAVAILABLE when it is spent), and the size
 * copied in report->bytes. report may be NULL only without a budget. */
CLR_PUBLIC int clr_files_read_ext(int root, const char *rel, int out_fd,
                                  const clr_files_limits *lim, clr_files_report *report,
                                  clr_error *err);

#endif
