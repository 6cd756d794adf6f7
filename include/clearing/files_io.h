/* Files, output budget: what many file operations at once may write to their outputs together
 * (lib/files_io.c, which also moves the bytes: see lib/files_io.h). */
#ifndef CLEARING_FILES_IO_H
#define CLEARING_FILES_IO_H

#include <stdatomic.h>
#include <stdint.h>

#include "common.h"

/* Bytes that many operations at once may write to their outputs together (a daemon's spool of
 * downloads): an operation charges what it writes (holes it leaves cost nothing) and fails
 * with CLR_E_UNAVAILABLE, naming `name`, before a write that would take `used` past `max`.
 * The caller gives back an operation's charge (clr_files_report.charged) when its output is
 * gone: clr_files_budget_release(). */
typedef struct clr_files_budget {
    _Atomic uint64_t used;
    uint64_t max;
    const char *name; /* the setting that sets max, for messages: "max_download_total" */
} clr_files_budget;

/* Gives back bytes charged to budget (a report's charged), once the output they went to is
 * gone. */
CLR_PUBLIC void clr_files_budget_release(clr_files_budget *budget, uint64_t bytes);

#endif
