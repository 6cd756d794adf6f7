/* The audit log: who ran what, in which sandbox, when, and what came of it, in a form that shows
 * any later edit.
 *
 * JSON lines, one record each:
 *   {"seq":7,"ts":"2026-11-28T12:00:00.123456Z","actor":"uid=1000 pid=42","sandbox":"sb-...",
 *    "action":"exec","outcome":"ok","details":{...},"prev":"<hash of record 6>","hash":"<hex>"}
 * hash = SHA-256 over prev, a newline, and the record's canonical form without "hash" (compact,
 * keys sorted). Every record names its predecessor's hash, so the file is a chain: an edited,
 * deleted, inserted or reordered record breaks it at that record (removing records from the end
 * needs an external copy of the last hash to show: see audit_syslog). Rotation starts a new file that
 * continues the chain. A record is written and fsync'd before the action it records is
 * acknowledged; if it cannot be, the action is refused. */
#ifndef CLEARING_AUDIT_H
#define CLEARING_AUDIT_H

#include <jansson.h>

#include "common.h"

#define CLR_AUDIT_DEFAULT_FILE "audit.log"

typedef struct clr_audit clr_audit;

typedef struct clr_audit_options {
    const char *path;        /* the current log file; rotated files sit beside it */
    uint64_t rotate_bytes;   /* rotate when the file grows past this (0: never) */
    bool syslog;             /* also send each record to syslog (journald picks it up) */
} clr_audit_options;

#define CLR_AUDIT_OPTIONS_INIT {.path = NULL, .rotate_bytes = 64ull * 1024 * 1024, .syslog = false}

/* Opens (creating) the log for appending. A torn last line left by a crash is cut off (it was
 * never acknowledged) and the cut is itself recorded. Many processes may append to one log:
 * appends take an exclusive lock. *out is owned by the caller: clr_audit_close(). */
CLR_PUBLIC int clr_audit_open(clr_audit **out, const clr_audit_options *opts, clr_error *err);
CLR_PUBLIC void clr_audit_close(clr_audit *a);

/* Appends one record and makes it durable; thread-safe. details may be NULL and is not stolen.
 * sandbox may be NULL. On failure the caller must refuse (or report) the action: the error is
 * CLR_E_UNAVAILABLE naming the file and the cause (disk full, permissions). */
CLR_PUBLIC int clr_audit_append(clr_audit *a, const char *actor, const char *sandbox,
                                const char *action, const char *outcome, json_t *details,
                                clr_error *err);

/* Whether the next append can be expected to succeed, cheaply (no write, no fsync; it does not
 * wait for an append under way): false with why (a sentence naming the file) when the last
 * append failed, or the file is not writable now (immutable, read-only, replaced). A failure is
 * remembered until an append succeeds. */
CLR_PUBLIC bool clr_audit_writable(clr_audit *a, char *why, size_t len);
/* The current log file's path (owned by a). */
CLR_PUBLIC const char *clr_audit_path(const clr_audit *a);

/* The canonical hash of a record (a JSON object with "prev" set, "hash" ignored), hex, 65 bytes. */
CLR_PUBLIC int clr_audit_record_hash(char out[65], json_t *record, clr_error *err);

typedef struct clr_audit_verify_report {
    uint64_t records;        /* records checked */
    uint64_t first_seq, last_seq;
    char last_hash[65];
    /* The first problem: file and line (1-based), the record's seq if readable, and what. */
    bool ok;
    char file[512];
    uint64_t line;
    uint64_t seq;
    char problem[256];
} clr_audit_verify_report;

/* Checks the chain across files, in the order given (oldest first). The chain must start at
 * record 1 unless allow_partial (older files were deleted on purpose). Returns 0 with report->ok
 * telling the verdict; -1 only when a file cannot be read at all.
 * What a chain cannot show by itself: records removed from its END, or a tail rewritten with
 * fresh hashes. Compare the last seq and hash with an external copy (audit_syslog). */
CLR_PUBLIC int clr_audit_verify(clr_audit_verify_report *report, const char *const *files,
                                size_t nfiles, bool allow_partial, clr_error *err);

/* The log's files oldest first: rotated ones (path.N in order) then path. *out is a
 * NULL-terminated array of strings, freed with clr_audit_files_free(). */
CLR_PUBLIC int clr_audit_files(char ***out, size_t *n, const char *path, clr_error *err);
CLR_PUBLIC void clr_audit_files_free(char **files);

/* Details of the standard records, shared by the CLI and the daemon (caller owns the result). */
struct clr_limits;
struct clr_exec_options;
struct clr_exec_result;
struct clr_sandbox_info;
/* The sandbox's effective limits, runtime, image and any weakening setting. */
CLR_PUBLIC json_t *clr_audit_sandbox_details(const struct clr_sandbox_info *info);
/* The command (argv or shell), environment NAMES (values are never recorded), cwd. */
CLR_PUBLIC json_t *clr_audit_exec_request(const struct clr_exec_options *o);
/* Status, exit code or signal, duration, CPU, peak memory, bytes of output. */
CLR_PUBLIC json_t *clr_audit_exec_result(const struct clr_exec_result *r);

#endif
