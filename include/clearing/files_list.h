/* Files, metadata: what an entry of the workspace is, and what a directory holds, as lstat(2)
 * sees it; symlinks are described, never followed (lib/files_list.c). */
#ifndef CLEARING_FILES_LIST_H
#define CLEARING_FILES_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum {
    CLR_FILE_REGULAR = 0,
    CLR_FILE_DIRECTORY,
    CLR_FILE_SYMLINK,
    CLR_FILE_OTHER, /* FIFO, socket or device */
} clr_file_type;

/* One directory entry, as lstat(2) sees it. */
typedef struct clr_file_entry {
    char *name;        /* the entry's name (for clr_files_stat: the last path component) */
    clr_file_type type;
    uint64_t size;     /* bytes; for a symlink the length of its target */
    uint32_t mode;     /* permission bits (st_mode & 07777) */
    int64_t mtime;     /* modification time, seconds since the epoch */
    char *link_target; /* symlinks only (read, never followed), else NULL */
} clr_file_entry;

/* "file", "dir", "symlink", "other". */
CLR_PUBLIC const char *clr_files_type_name(clr_file_type type);

/* Describes rel itself (a symlink is described, not followed; "" describes the root).
 * *out is allocated; free it with clr_files_entries_free(*out, 1).
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID. */
CLR_PUBLIC int clr_files_stat(clr_file_entry **out, int root, const char *rel, clr_error *err);

/* Lists the directory rel ("" or "." for the root), sorted by name, without "." and "..".
 * *out (an array of *n entries, NULL when empty) is freed with clr_files_entries_free().
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (not a directory, or a symlink on the way),
 * CLR_E_LIMIT (more than max_entries entries; nothing is returned). */
CLR_PUBLIC int clr_files_list(clr_file_entry **out, size_t *n, int root, const char *rel,
                              size_t max_entries, clr_error *err);

/* Frees an array returned by clr_files_list or clr_files_stat. NULL is fine. */
CLR_PUBLIC void clr_files_entries_free(clr_file_entry *entries, size_t n);

#endif
