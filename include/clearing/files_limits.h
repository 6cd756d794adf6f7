/* Files, limits and reports: the bounds every file operation applies to untrusted input, and
 * what an operation reports it did. Types only; the operations are in files_rw.h,
 * files_extract.h and files_archive.h. */
#ifndef CLEARING_FILES_LIMITS_H
#define CLEARING_FILES_LIMITS_H

#include <stdint.h>

#include "files_io.h"
#include "files_path.h"
#include "limits.h"

/* Bounds on what one operation may write or read; every one applies to untrusted input. */
typedef struct clr_files_limits {
    uint64_t max_file_bytes;  /* largest single file, by its declared size (sparse or not) */
    uint64_t max_total_bytes; /* sum of file sizes in one archive */
    uint64_t max_entries;     /* entries in one archive (directories and links count) */
    uint32_t max_depth;       /* path components below the operation's directory */
    clr_files_budget *output_budget; /* clr_files_read_ext, clr_files_create_tar; NULL: none */
} clr_files_limits;

#define CLR_FILES_LIMITS_INIT                                                                     \
    {                                                                                             \
        .max_file_bytes = 1 * CLR_GIB, .max_total_bytes = 4 * CLR_GIB, .max_entries = 100000,     \
        .max_depth = 64,                                                                          \
    }

/* What an archive operation did, filled on success and, as far as it got, on failure. */
typedef struct clr_files_report {
    uint64_t entries;  /* archive entries processed */
    uint64_t files;    /* regular files written or archived */
    uint64_t dirs;     /* directories */
    uint64_t symlinks; /* symlinks */
    uint64_t bytes;    /* file bytes (declared sizes) */
    uint64_t skipped;  /* create_tar: FIFOs, sockets, devices and entries that vanished */
    uint64_t charged;  /* bytes charged to lim->output_budget, also after a failure */
    char failed_entry[CLR_FILES_PATH_MAX + 1]; /* the entry that stopped the operation, or "" */
} clr_files_report;

#endif
