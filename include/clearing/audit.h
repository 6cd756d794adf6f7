/* The audit log: who ran what, in which sandbox, when, and what came of it, in a form that shows
 * any later edit.
 *
 * JSON lines, one record each:
 *   {"seq":7,"ts":"2026-11-28T12:00:00.123456Z","actor":"uid=1000 pid=42","sandbox":"sb-...",
 *    "action":"exec","outcome":"ok","details":{...},"prev":"<hash of record 6>","hash":"<hex>"}
 * hash = SHA-256 over prev, a newline, and the record's canonical form without "hash" (compact,
 * keys sorted). Every record names its predecessor's hash, so the file is a chain: an edited,
 * deleted, inserted or reordered record breaks it at that record (removing records from the end
 * needs an external copy of the last hash: the signed checkpoint beside the log, and syslog).
 * Rotation starts a new file that continues the chain. A record is written and fsync'd before the action it
 * records is acknowledged; if it cannot be, the action is refused.
 *
 * Checkpoints: path.checkpoint holds the chain's head (seq, hash, time), signed with the
 * daemon's Ed25519 verdict key (clr_audit_options.checkpoint_key):
 *   {"hash":H,"key_id":K,"seq":N,"sig":BASE64,"ts":T}
 * the signature over the statement "clearing-audit-checkpoint v2\nseq N\nhash H\nts T\n", so the
 * public key alone checks it, on any machine (clr_audit_verify_log, or openssl:
 * scripts/verify-audit-checkpoint.sh). A writer given no key signs v1 checkpoints, an HMAC-SHA256
 * under path.key (32 random bytes made at the first open, mode 0600), which only that file checks.
 * It is rewritten atomically at every rotation, at close, and at least every checkpoint_ms while
 * records were appended; clr_audit_verify_log() finds a log that ends before the checkpointed
 * record.
 *
 * Denials (a failed token, a refused egress connection) come at the attacker's rate: they go
 * through clr_audit_denied(), which records the first from a source at once and then one record
 * per aggregate_ms with the count, so a flood costs a few records, not one fsync'd append each. */
#ifndef CLEARING_AUDIT_H
#define CLEARING_AUDIT_H

#include <jansson.h>

#include "common.h"

#define CLR_AUDIT_DEFAULT_FILE "audit.log"

typedef struct clr_audit clr_audit;
struct clr_verdict_key;

typedef struct clr_audit_options {
    const char *path;        /* the current log file; rotated files sit beside it */
    uint64_t rotate_bytes;   /* rotate when the file grows past this (0: never) */
    bool syslog;             /* also send each record (and each checkpoint) to syslog */
    unsigned keep;           /* rotated files kept; older ones are deleted at rotation (0: all) */
    uint64_t disk_budget;    /* bytes the log's files may use (0: no budget): clr_audit_disk() */
    uint32_t aggregate_ms;   /* denials from one source within this are one record (0: default) */
    uint32_t checkpoint_ms;  /* checkpoint at least this often while appending (0: default) */
    /* Signs the checkpoints (the daemon's verdict key; it must outlive the log's handle). NULL:
     * v1 checkpoints, an HMAC under path.key, checkable only where that key is. */
    const struct clr_verdict_key *checkpoint_key;
} clr_audit_options;

#define CLR_AUDIT_DEFAULT_AGGREGATE_MS 10000
#define CLR_AUDIT_DEFAULT_CHECKPOINT_MS 60000
/* Each string of a denial's record is cut to this many bytes (marked "...[truncated]"). */
#define CLR_AUDIT_FIELD_MAX 256
/* Sources with a denial table entry at once; further ones share the source "others". */
#define CLR_AUDIT_SOURCES_MAX 256

#define CLR_AUDIT_OPTIONS_INIT                                                                    \
    {.path = NULL, .rotate_bytes = 64ull * 1024 * 1024, .syslog = false, .keep = 0,              \
     .disk_budget = 0, .aggregate_ms = 0, .checkpoint_ms = 0, .checkpoint_key = NULL}

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

/* A denial from source (a client address; a destination of one sandbox): the first from a
 * (action, sandbox, source) is appended at once with "count": 1; later ones are counted, and one
 * record per aggregate_ms says "count" (denials since the last record), "interval_ms" and the
 * latest denial's details. Pending counts are written by clr_audit_tick() and at close. Every
 * string of details is cut to CLR_AUDIT_FIELD_MAX bytes. When CLR_AUDIT_SOURCES_MAX sources
 * are tracked, new ones are counted under the source "others" (one per action). Returns what the append of a
 * record returned (0 when the denial was only counted). */
CLR_PUBLIC int clr_audit_denied(clr_audit *a, const char *source, const char *actor,
                                const char *sandbox, const char *action, const char *outcome,
                                json_t *details, clr_error *err);

/* Periodic work (the daemon's reaper calls it every pass): writes the aggregated denials whose
 * interval passed, and a checkpoint when records were appended since the last one and
 * checkpoint_ms passed. Failures are logged. */
CLR_PUBLIC void clr_audit_tick(clr_audit *a);

/* Writes the signed checkpoint of the chain's head now (atomically: temp file, fsync, rename). */
CLR_PUBLIC int clr_audit_checkpoint(clr_audit *a, clr_error *err);

/* A JSON string for an untrusted value of len bytes: bytes that are not UTF-8 are written as
 * \xNN (a backslash, x, two hex digits), and the value is cut at max bytes (a UTF-8 boundary)
 * with "...[truncated]" appended. Never NULL unless out of memory; the caller owns it. */
CLR_PUBLIC json_t *clr_audit_text(const char *s, size_t len, size_t max);

typedef struct clr_audit_disk_status {
    uint64_t bytes;          /* the log's files (current and rotated) */
    uint64_t free_bytes;     /* free to unprivileged users on the log's file system */
    uint64_t budget;         /* the disk_budget option (0: none) */
    bool warning;            /* bytes passed 80% of the budget, or free space is under it */
    char reason[200];        /* why, when warning */
} clr_audit_disk_status;

/* How much the log takes and whether that is near its budget. */
CLR_PUBLIC int clr_audit_disk(const clr_audit *a, clr_audit_disk_status *out, clr_error *err);

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
    /* clr_audit_verify_log() only: the checkpoint it compared the log with. */
    bool checkpointed;
    uint64_t checkpoint_seq;
    char checkpoint_ts[40];
    char checkpoint_key_id[17]; /* the Ed25519 key that signed it ("" for a v1 checkpoint) */
    bool checkpoint_hmac;       /* a v1 checkpoint: an HMAC under path.key, not a signature */
} clr_audit_verify_report;

/* Checks the chain across files, in the order given (oldest first). The chain must start at
 * record 1 unless allow_partial (older files were deleted on purpose). Returns 0 with report->ok
 * telling the verdict; -1 only when a file cannot be read at all.
 * What a chain cannot show by itself: records removed from its END, or a tail rewritten with
 * fresh hashes. Compare the last seq and hash with an external copy (audit_syslog). */
CLR_PUBLIC int clr_audit_verify(clr_audit_verify_report *report, const char *const *files,
                                size_t nfiles, bool allow_partial, clr_error *err);

/* Verifies the log at path (its rotated files, then itself) and then compares it with the
 * signed checkpoint beside it, if there is one: a checkpoint whose signature does not match the
 * public key in pubkey_path (PEM, the verdict key's .pub), or signed by another key, a log that
 * ends before the checkpointed record ("the log was truncated after record N"), or a different
 * hash at that record make report->ok false. A v1 checkpoint is checked with path.key instead
 * (report->checkpoint_hmac). A missing checkpoint is not an error (report->checkpointed is
 * false). -1 when a file cannot be read at all, or a signed checkpoint has no public key to be
 * checked with (pubkey_path NULL or unreadable: the error names it). */
CLR_PUBLIC int clr_audit_verify_log(clr_audit_verify_report *report, const char *path,
                                    const char *pubkey_path, bool allow_partial, clr_error *err);

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
