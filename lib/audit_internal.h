/* The audit log's pieces, as its modules share them (include/clearing/audit.h is the contract
 * with the rest of clearing). Layered, each calling only those below it:
 *   audit.c            opening, closing and the periodic tick: the wiring
 *   audit_denial.c     flood control: denials counted per source, one record per interval
 *   audit_chain.c      the chained writer: locking, the head, appends, rotation and retention
 *   audit_checkpoint.c the signed checkpoint beside the log and the key that signs it
 *   audit_verify.c     verification of a chain and of its checkpoint (read only)
 *   audit_format.c     what is on disk: the record hash, the checkpoint's MAC and statement, the
 *                      file names
 *   audit_details.c    what goes in a record: bounded text, the standard details */
#ifndef CLR_AUDIT_INTERNAL_H
#define CLR_AUDIT_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "internal.h"

#define AUDIT_MAX_RECORD (256 * 1024) /* a longer line is not a record of ours */
#define AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_KEY_BYTES 32
#define AUDIT_OTHERS_MAX 4
#define AUDIT_CHECKPOINT_MAGIC "clearing-audit-checkpoint v1"
#define AUDIT_CHECKPOINT_V2 "clearing-audit-checkpoint v2"

/* Denials of one (action, sandbox, source) since its last record. */
struct denial {
    bool used;
    char *key;    /* the source as the caller names it (first CLR_AUDIT_FIELD_MAX bytes) */
    char *source; /* the same, as recorded (escaped) */
    char *actor, *sandbox, *action, *outcome;
    json_t *last;      /* the latest denial's details, bounded */
    uint64_t pending;  /* denials not yet in a record */
    uint64_t since_ms; /* when its last record was written (monotonic) */
};

/* An append waiting for its record to be durable (group commit, audit_chain.c). */
struct audit_waiter {
    uint64_t gen; /* the record's number among those this process wrote */
    off_t start;  /* where its line starts in the file */
    bool done;
    int error; /* errno of the sync that failed; 0: durable */
    struct audit_waiter *next;
};

struct clr_audit {
    char *path;
    int fd;
    int lock_fd; /* path.lock: never rotated, so every writer locks the same file */
    uint64_t rotate_bytes;
    bool syslog;
    unsigned keep;
    uint64_t disk_budget;
    uint32_t aggregate_ms, checkpoint_ms;
    unsigned char key[AUDIT_KEY_BYTES]; /* signs v1 checkpoints (no checkpoint_key) */
    const struct clr_verdict_key *ckey;  /* signs checkpoints (the caller's), or NULL */
    pthread_mutex_t lock;
    /* The chain's head as of our last append, valid while the file has size known_size. */
    uint64_t seq;
    char hash[65];
    off_t known_size;
    ino_t known_ino;
    /* Under lock: records appended since our last checkpoint, and when that was. */
    bool uncheckpointed;
    uint64_t checkpoint_at_ms;
    /* The denial table: its own lock, never held across an append, so counting a flood of
     * denials does not wait for (nor hold) the log. */
    pthread_mutex_t denial_lock;
    struct denial denials[CLR_AUDIT_SOURCES_MAX];
    struct denial others[AUDIT_OTHERS_MAX]; /* one per action: when the table is full */
    /* Why the last append failed ("" while the last one succeeded), for health checks that must
     * not wait behind an append's fsync: guarded by state_lock, never held across I/O. */
    pthread_mutex_t state_lock;
    char last_failure[sizeof(((clr_error *)0)->message)];
    /* Group commit: an append writes its line under lock, then waits (under sync_lock only) until
     * an fdatasync that started after its write has succeeded; one sync covers every record
     * written before it began. Taken after lock, never before it. */
    pthread_mutex_t sync_lock;
    pthread_cond_t sync_cond;
    struct audit_waiter *waiters; /* records written, not yet known durable or refused */
    uint64_t written;             /* records this process wrote */
    bool syncing;    /* a leader's fdatasync runs outside lock: fd is not closed meanwhile */
    int sync_failed; /* errno of a failed sync whose records are not refused and cut yet */
};

static inline uint64_t audit_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Writes all n bytes (retrying on EINTR); -1 with errno set. */
static inline int audit_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- audit_format.c ---- */

/* n bytes at d as 2n lowercase hex digits and a NUL. */
void audit_hex(char *out, const unsigned char *d, size_t n);
/* The current UTC time as 2026-11-28T12:00:00.123456Z. */
void audit_timestamp(char *out, size_t len);
/* path.suffix (the checkpoint, its temporary file, the key). */
void audit_side_path(char *out, size_t len, const char *path, const char *suffix);
/* The MAC of a checkpoint: HMAC-SHA256 under key (AUDIT_KEY_BYTES) over the magic, seq, hash
 * and time, as hex; -1 when it cannot be computed. */
int audit_checkpoint_mac(char out[65], const unsigned char *key, uint64_t seq, const char *hash,
                         const char *ts);
/* What a v2 checkpoint's Ed25519 signature covers: "clearing-audit-checkpoint v2\nseq N\nhash
 * H\nts T\n" into out; its length, or -1 when it does not fit. */
int audit_checkpoint_statement(char *out, size_t len, uint64_t seq, const char *hash,
                               const char *ts);
/* fsync of the directory that holds path (a rename or link in it is durable after). */
int audit_fsync_dir_of(const char *path);

/* ---- audit_checkpoint.c ---- */

/* Under the lock, with the head loaded: path.checkpoint names the head, signed. */
int audit_checkpoint_locked(clr_audit *a, clr_error *err);
/* Reads the key at path.key into a->key, or makes one (32 random bytes, 0600). */
int audit_load_key(clr_audit *a, clr_error *err);

/* ---- audit_chain.c ---- */

/* Opens a->path for appending (a->fd); the head is unknown until audit_load_head. */
int audit_open_log(clr_audit *a, clr_error *err);
/* Under the lock: learns seq and hash of the last complete record, cutting a torn tail (*cut,
 * *cut_bytes: how much was cut). */
int audit_load_head(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err);
/* Under the lock, with the head loaded: writes and syncs one record (and every record written
 * before it). */
int audit_append_locked(clr_audit *a, const char *actor, const char *sandbox, const char *action,
                        const char *outcome, json_t *details, clr_error *err);

/* ---- audit_denial.c ---- */

/* Frees what a denial slot holds and marks it unused. */
void audit_denial_clear(struct denial *d);
/* Writes pending counts whose interval passed (all of them if all), and forgets sources that
 * were quiet for two intervals. */
void audit_denials_flush(clr_audit *a, bool all);

/* ---- audit_details.c ---- */

/* A copy of details with every string cut to CLR_AUDIT_FIELD_MAX bytes (NULL: an empty
 * object); the caller's reference (json_decref). */
json_t *audit_bounded_details(json_t *v, int depth);

#endif
