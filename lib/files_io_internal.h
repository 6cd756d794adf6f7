/* Files, I/O: how bytes move between descriptors for the files modules (lib/files_io.c):
 * reads and writes that survive EINTR and non-blocking descriptors, and the spool output
 * (hole_out) that keeps the zeros of sparse files as holes and charges what it writes to a
 * clr_files_budget (files_io.h) before writing it. */
#ifndef CLR_FILES_IO_INTERNAL_H
#define CLR_FILES_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "clearing/files_io.h"

/* The limits of an operation whose caller gives none. */
static const clr_files_limits clr_files_default_limits = CLR_FILES_LIMITS_INIT;

/* The start of an operation that reports: the report it fills (the caller's, else *scratch),
 * zeroed, and *lim set to the defaults when the caller gave none. */
static inline clr_files_report *clr_files_report_begin(clr_files_report *report,
                                                       clr_files_report *scratch,
                                                       const clr_files_limits **lim)
{
    clr_files_report *rep = report ? report : scratch;
    memset(rep, 0, sizeof(*rep));
    if (!*lim)
        *lim = &clr_files_default_limits;
    return rep;
}

/* The size of a copy buffer. */
#define COPY_BUF 65536

/* Reads up to n bytes; 0 at end of file, -errno on failure. Waits if fd is non-blocking. */
ssize_t clr_files_read_some(int fd, void *buf, size_t n);
/* Writes all n bytes (waiting if fd is non-blocking); 0 or -errno. */
int clr_files_write_all(int fd, const void *buf, size_t n);
/* Writes all n bytes at offset off; 0 or -errno. */
int clr_files_pwrite_all(int fd, const void *buf, size_t n, off_t off);

/* Where a download is spooled. A sparse workspace file costs its sandbox nothing (a hole in
 * the workspace's tmpfs), but written out byte by byte it would cost the host its apparent
 * size on disk: 1 GiB per file, 4 GiB per archive, as often as a client asks (issue #16 item
 * 9). So an all-zero block of the output, aligned to HOLE_BLOCK in the output file and past
 * what the file held when the copy began, is skipped with lseek and stays a hole; a reader of
 * the file sees the same bytes. Outputs that cannot seek (pipes, sockets) get every byte.
 * What is written (never the holes) is charged to the caller's clr_files_budget, if any,
 * before it is written. */
#define HOLE_BLOCK 4096u

typedef struct hole_out {
    int fd;
    bool holes;     /* out is a regular file: zero blocks may be skipped */
    uint64_t pos;   /* the output offset the next byte goes to */
    uint64_t size0; /* the file's size when the copy began: never skip over its bytes */
    clr_files_budget *budget; /* charged before every write; NULL: none */
    uint64_t *charged;        /* what this output has charged to budget */
    bool over_budget;         /* a write was refused by the budget (-EDQUOT) */
} hole_out;

/* Starts an output on fd (not taken over) at its current offset; what is written is charged
 * to budget (may be NULL) and added to *charged (required with a budget). */
void clr_files_hole_out_init(hole_out *o, int fd, clr_files_budget *budget, uint64_t *charged);
/* Writes n bytes at the output's offset; 0 or -errno (-EDQUOT: the budget is spent). */
int clr_files_hole_out_write(hole_out *o, const char *buf, size_t n);
/* Ends the output: a hole at the very end gets the file's size set. 0 or -errno. */
int clr_files_hole_out_finish(hole_out *o);

/* The error for a write the budget b refused ("what 'rel': ..."). Returns -1. */
int clr_files_budget_error(clr_error *err, const clr_files_budget *b, const char *what,
                           const char *rel);

#endif
