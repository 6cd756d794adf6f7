/* The chained writer of the audit log (see include/clearing/audit.h and audit_internal.h).
 *
 * Appends from several processes (the daemon, a CLI `run`) serialise on an flock of the log
 * file. Under the lock the writer learns the chain's head from the file itself (its last line),
 * unless the file is exactly as this process left it, so two writers never fork the chain.
 * A record is acknowledged only after write() of the whole line and an fdatasync() that began
 * after it succeeded. Appends of concurrent threads share that sync (group commit): each writes
 * its line under the lock, releases it, and waits until a sync covers its line; whoever finds
 * no sync under way runs one for every line written so far, outside the lock, while the next
 * appends write theirs. A sync that fails refuses every record not yet known durable (their
 * appends fail, so their actions do not run) and cuts their lines from the file.
 * Rotation renames a full file to path.N and continues the chain in a new one; retention
 * deletes the oldest rotated files and records that it did. */
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <syslog.h>

#include "audit_internal.h"

/* Reads the last line of fd (which ends with '\n') into a fresh buffer; NULL if the file is
 * empty. *torn gets the number of bytes after the last newline (a torn write). */
static char *last_line(int fd, off_t size, off_t *torn)
{
    *torn = 0;
    if (size == 0)
        return NULL;
    off_t start = size > AUDIT_MAX_RECORD + 2 ? size - (AUDIT_MAX_RECORD + 2) : 0;
    size_t len = (size_t)(size - start);
    char *buf = malloc(len + 1);
    if (!buf)
        return NULL;
    ssize_t n = pread(fd, buf, len, start);
    if (n != (ssize_t)len) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    size_t end = len;
    while (end > 0 && buf[end - 1] != '\n')
        end--;
    *torn = (off_t)(len - end);
    if (end == 0) {
        free(buf);
        return NULL;
    }
    size_t b = end - 1;
    while (b > 0 && buf[b - 1] != '\n')
        b--;
    memmove(buf, buf + b, end - 1 - b);
    buf[end - 1 - b] = '\0';
    return buf;
}

/* A new file's head: the genesis, or a rotated predecessor's last record if there is one (the
 * chain continues across files). */
static void head_of_predecessor(clr_audit *a, bool empty)
{
    a->seq = 0;
    snprintf(a->hash, sizeof(a->hash), "%s", AUDIT_GENESIS);
    char **files = NULL;
    size_t n = 0;
    if (empty && clr_audit_files(&files, &n, a->path, NULL) == 0 && n >= 2) {
        _cleanup_close_ int pfd = open(files[n - 2], O_RDONLY | O_CLOEXEC);
        struct stat pst;
        if (pfd >= 0 && fstat(pfd, &pst) == 0) {
            off_t t2;
            _cleanup_free_ char *pl = last_line(pfd, pst.st_size, &t2);
            json_auto_t *j = pl ? json_loads(pl, 0, NULL) : NULL;
            if (j) {
                a->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
                const char *h = json_string_value(json_object_get(j, "hash"));
                snprintf(a->hash, sizeof(a->hash), "%s", h ? h : AUDIT_GENESIS);
            }
        }
    }
    clr_audit_files_free(files);
}

/* The head named by the file's last complete line. */
static int head_of_line(clr_audit *a, const char *line, clr_error *err)
{
    json_auto_t *j = json_loads(line, 0, NULL);
    const char *h = json_string_value(json_object_get(j, "hash"));
    if (!j || !h || strlen(h) != 64)
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                             "audit log %s: the last record is not readable; run "
                             "'clearing audit verify' and move the file aside",
                             a->path);
    a->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    snprintf(a->hash, sizeof(a->hash), "%s", h);
    return 0;
}

/* Learns seq and hash of the last complete record (under the lock), cutting a torn tail. */
int audit_load_head(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err)
{
    struct stat st;
    *cut = false;
    if (fstat(a->fd, &st) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "audit log %s: %s", a->path,
                             strerror(errno));
    if (st.st_size == a->known_size && st.st_ino == a->known_ino && a->hash[0])
        return 0;
    off_t torn = 0;
    _cleanup_free_ char *line = last_line(a->fd, st.st_size, &torn);
    if (torn > 0) {
        /* A write the crash interrupted: never fsync'd, never acknowledged. */
        if (ftruncate(a->fd, st.st_size - torn) < 0 || fdatasync(a->fd) < 0)
            return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                                 "audit log %s: cannot cut a torn last line: %s", a->path,
                                 strerror(errno));
        *cut = true;
        *cut_bytes = torn;
        st.st_size -= torn;
    }
    if (!line) {
        if (st.st_size > 0 && torn == 0)
            return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "audit log %s: unreadable tail",
                                 a->path);
        head_of_predecessor(a, st.st_size == 0);
    } else if (head_of_line(a, line, err) < 0) {
        return -1;
    }
    a->known_size = st.st_size;
    a->known_ino = st.st_ino;
    return 0;
}

int audit_open_log(clr_audit *a, clr_error *err)
{
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->fd < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot open the audit log %s: %s (clearing does not run code "
                             "unaudited: fix the path or its permissions)",
                             a->path, strerror(errno));
    a->known_size = -1;
    a->hash[0] = '\0';
    return 0;
}

/* Under the lock, after a rotation: rotated files beyond the newest keep are deleted, and the
 * deletion is itself recorded (so a chain that starts mid-way is explained by the log). */
static int apply_retention(clr_audit *a, clr_error *err);

/* ---- group commit ---- */

/* Under sync_lock: the appends whose records are numbered up to upto learn the outcome (error:
 * errno of a failed sync, 0: durable). */
static void resolve(clr_audit *a, uint64_t upto, int error)
{
    struct audit_waiter **p = &a->waiters;
    while (*p) {
        struct audit_waiter *w = *p;
        if (w->gen <= upto) {
            w->done = true;
            w->error = error;
            *p = w->next;
        } else {
            p = &w->next;
        }
    }
    pthread_cond_broadcast(&a->sync_cond);
}

/* Under lock and sync_lock, after a sync failed: every record not known durable is refused. Their
 * lines (from the earliest, or from `from` if that is earlier; -1: none of the caller's own) are
 * cut when the file is still as this process left it, and the head is learnt again. */
static void fail_unsynced(clr_audit *a, int error, off_t from)
{
    for (struct audit_waiter *w = a->waiters; w; w = w->next) {
        if (from < 0 || w->start < from)
            from = w->start;
    }
    struct stat st;
    if (from >= 0 && fstat(a->fd, &st) == 0 && st.st_ino == a->known_ino &&
        st.st_size == a->known_size && ftruncate(a->fd, from) < 0)
        clr_log(CLR_LOG_WARN, "audit.cut_failed", "error", strerror(errno), NULL);
    a->known_size = -1; /* the next append reads the head from the file */
    a->hash[0] = '\0';
    a->sync_failed = 0;
    resolve(a, UINT64_MAX, error);
}

/* Under the lock: every record written so far made durable (after a leader's sync under way),
 * and their appends told. from: the start of a line of the caller's that no waiter stands for
 * (then a sync is due even with no waiter), -1 if none. -1 with errno when the sync failed: the
 * records are refused and cut (fail_unsynced). */
static int sync_locked(clr_audit *a, off_t from)
{
    pthread_mutex_lock(&a->sync_lock);
    while (a->syncing)
        pthread_cond_wait(&a->sync_cond, &a->sync_lock);
    int e = a->sync_failed;
    if (!e && (a->waiters || from >= 0) && fdatasync(a->fd) < 0)
        e = errno;
    if (e)
        fail_unsynced(a, e, from);
    else
        resolve(a, UINT64_MAX, 0);
    pthread_mutex_unlock(&a->sync_lock);
    errno = e;
    return e ? -1 : 0;
}

/* Under sync_lock (held again on return), with no sync under way: one fdatasync for every record
 * written so far, outside both locks. fd stays open meanwhile: whoever closes or replaces it
 * holds the lock and syncs first (sync_locked), which waits for this one. */
static void lead_sync(clr_audit *a)
{
    a->syncing = true;
    uint64_t target = a->written;
    int fd = a->fd;
    pthread_mutex_unlock(&a->sync_lock);
    int e = fdatasync(fd) < 0 ? errno : 0;
    pthread_mutex_lock(&a->sync_lock);
    a->syncing = false;
    if (!e) {
        resolve(a, target, 0);
        return;
    }
    /* Until the records are refused and cut no other sync may count them durable: the error
     * was reported once, to this sync. That takes the lock, which is taken first. */
    a->sync_failed = e;
    pthread_cond_broadcast(&a->sync_cond);
    pthread_mutex_unlock(&a->sync_lock);
    pthread_mutex_lock(&a->lock);
    bool flocked = flock(a->lock_fd, LOCK_EX) == 0;
    pthread_mutex_lock(&a->sync_lock);
    if (a->sync_failed)
        fail_unsynced(a, a->sync_failed, -1);
    pthread_mutex_unlock(&a->sync_lock);
    if (flocked)
        flock(a->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_lock(&a->sync_lock);
}

/* Under the lock, after the line of w's record was written: w waits for a sync. */
static void enqueue(clr_audit *a, struct audit_waiter *w)
{
    pthread_mutex_lock(&a->sync_lock);
    w->gen = ++a->written;
    w->next = a->waiters;
    a->waiters = w;
    pthread_mutex_unlock(&a->sync_lock);
}

/* Without the lock: waits until w's record is durable (leading a sync when none is under way),
 * or refused. */
static int wait_durable(clr_audit *a, struct audit_waiter *w, clr_error *err)
{
    pthread_mutex_lock(&a->sync_lock);
    while (!w->done) {
        if (!a->syncing && !a->sync_failed)
            lead_sync(a);
        else
            pthread_cond_wait(&a->sync_cond, &a->sync_lock);
    }
    pthread_mutex_unlock(&a->sync_lock);
    if (!w->error)
        return 0;
    return clr_error_set(err, CLR_E_UNAVAILABLE, w->error,
                         "cannot write the audit log %s: %s; the action is refused", a->path,
                         strerror(w->error));
}

/* Under the lock: if the file is past the size limit, rename it to path.N and start a new one.
 * The new file's first record names the old file's last hash, so the chain continues. */
static int maybe_rotate(clr_audit *a, clr_error *err)
{
    struct stat st;
    if (!a->rotate_bytes || fstat(a->fd, &st) < 0 || (uint64_t)st.st_size < a->rotate_bytes)
        return 0;
    char **files = NULL;
    size_t n = 0;
    unsigned long next = 1;
    if (clr_audit_files(&files, &n, a->path, NULL) == 0) {
        for (size_t i = 0; i + 1 < n; i++) {
            const char *dot = strrchr(files[i], '.');
            unsigned long v = dot ? strtoul(dot + 1, NULL, 10) : 0;
            if (v >= next)
                next = v + 1;
        }
    }
    clr_audit_files_free(files);
    /* Its records durable before it is signed, moved and closed. */
    if (sync_locked(a, -1) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot write the audit log %s: %s; the action is refused", a->path,
                             strerror(errno));
    /* The head the old file ends with, signed before it is moved: truncating the rotated file
     * later shows against this checkpoint until a newer one names a later record. */
    clr_error cerr = CLR_ERROR_INIT;
    if (audit_checkpoint_locked(a, &cerr) < 0)
        clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", cerr.message, NULL);
    char rotated[4200];
    snprintf(rotated, sizeof(rotated), "%s.%06lu", a->path, next);
    if (rename(a->path, rotated) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "rotating the audit log: %s",
                             strerror(errno));
    uint64_t seq = a->seq;
    char hash[65];
    snprintf(hash, sizeof(hash), "%s", a->hash);
    int old = a->fd;
    if (audit_open_log(a, err) < 0) {
        a->fd = old;
        return -1;
    }
    close(old);
    a->seq = seq;
    snprintf(a->hash, sizeof(a->hash), "%s", hash);
    a->known_size = 0;
    if (fstat(a->fd, &st) == 0)
        a->known_ino = st.st_ino;
    return a->keep ? apply_retention(a, err) : 0;
}

/* Under the lock, with the head loaded: writes one record's line (not yet synced) and advances
 * the head; *start: where the line begins, *out: the line (the caller's, for syslog). */
static int write_locked(clr_audit *a, const char *actor, const char *sandbox, const char *action,
                        const char *outcome, json_t *details, off_t *start, char **out,
                        clr_error *err)
{
    char ts[40];
    audit_timestamp(ts, sizeof(ts));
    json_t *d = details ? json_incref(details) : json_object();
    json_auto_t *r = json_pack("{s:I, s:s, s:s, s:s?, s:s, s:s, s:o, s:s}", "seq",
                               (json_int_t)(a->seq + 1), "ts", ts, "actor",
                               actor ? actor : "unknown", "sandbox", sandbox, "action", action,
                               "outcome", outcome, "details", d, "prev", a->hash);
    if (!r)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "cannot build the audit record");
    char hash[65];
    if (clr_audit_record_hash(hash, r, err) < 0)
        return -1;
    json_object_set_new(r, "hash", json_string(hash));
    _cleanup_free_ char *line = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!line)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t len = strlen(line);
    line[len] = '\n';
    if (len + 1 > AUDIT_MAX_RECORD)
        return clr_error_set(err, CLR_E_LIMIT, E2BIG, "audit record of %zu bytes is too large",
                             len);
    if (audit_write_all(a->fd, line, len + 1) < 0) {
        int e = errno;
        /* A partial line would be cut at the next open; cut it now if we can. */
        if (ftruncate(a->fd, a->known_size) < 0)
            a->known_size = -1;
        return clr_error_set(err, CLR_E_UNAVAILABLE, e,
                             "cannot write the audit log %s: %s; the action is refused", a->path,
                             strerror(e));
    }
    *start = a->known_size;
    a->seq++;
    snprintf(a->hash, sizeof(a->hash), "%s", hash);
    a->known_size += (off_t)len + 1;
    a->uncheckpointed = true;
    line[len] = '\0';
    *out = steal_pointer(&line);
    return 0;
}

int audit_append_locked(clr_audit *a, const char *actor, const char *sandbox, const char *action,
                        const char *outcome, json_t *details, clr_error *err)
{
    off_t start = 0;
    _cleanup_free_ char *line = NULL;
    if (write_locked(a, actor, sandbox, action, outcome, details, &start, &line, err) < 0)
        return -1;
    if (sync_locked(a, start) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot write the audit log %s: %s; the action is refused", a->path,
                             strerror(errno));
    if (a->syslog)
        syslog(LOG_INFO | LOG_AUTHPRIV, "%s", line);
    return 0;
}

static int apply_retention(clr_audit *a, clr_error *err)
{
    char **files = NULL;
    size_t n = 0;
    if (clr_audit_files(&files, &n, a->path, err) < 0)
        return -1;
    size_t rotated = n - 1, drop = rotated > a->keep ? rotated - a->keep : 0;
    int rc = 0;
    if (drop) {
        json_t *gone = json_array();
        for (size_t i = 0; i < drop; i++) {
            if (unlink(files[i]) < 0 && errno != ENOENT) {
                clr_log(CLR_LOG_WARN, "audit.retention_failed", "file", files[i], "error",
                        strerror(errno), NULL);
                continue;
            }
            const char *slash = strrchr(files[i], '/');
            json_array_append_new(gone, json_string(slash ? slash + 1 : files[i]));
        }
        json_auto_t *d = json_pack("{s:o, s:i}", "files", gone, "keep", (int)a->keep);
        rc = audit_append_locked(a, "clearing", NULL, "audit.retention_removed", "ok", d, err);
    }
    clr_audit_files_free(files);
    return rc;
}

/* Under the lock, after an append: a checkpoint when the last is checkpoint_ms old. */
static void checkpoint_if_due(clr_audit *a)
{
    if (!a->uncheckpointed || audit_mono_ms() - a->checkpoint_at_ms < a->checkpoint_ms)
        return;
    /* A checkpoint names only a durable head: the appends waiting for a sync get it now. */
    clr_error err = CLR_ERROR_INIT;
    if (sync_locked(a, -1) < 0)
        clr_error_set(&err, CLR_E_UNAVAILABLE, errno, "syncing the audit log: %s",
                      strerror(errno));
    else if (audit_checkpoint_locked(a, &err) < 0)
        clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
}

static void unlock_log(clr_audit *a)
{
    flock(a->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&a->lock);
}

/* Under both locks: follows the path to the current file (another writer may have rotated the
 * log, or someone moved it) and learns its head. */
static int follow_log(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err)
{
    struct stat ps, fs;
    if (stat(a->path, &ps) < 0 || fstat(a->fd, &fs) < 0 || ps.st_ino != fs.st_ino ||
        ps.st_dev != fs.st_dev) {
        /* The records written to the old file are made durable (or refused) before it is
         * closed: a sync under way uses its descriptor. */
        sync_locked(a, -1);
        close(a->fd);
        a->fd = -1;
        if (audit_open_log(a, err) < 0)
            return -1;
    }
    return audit_load_head(a, cut, cut_bytes, err);
}

/* Takes both locks and learns the head; on failure holds neither. */
static int lock_log(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err)
{
    pthread_mutex_lock(&a->lock);
    if (flock(a->lock_fd, LOCK_EX) < 0) {
        clr_error_set(err, CLR_E_UNAVAILABLE, errno, "locking the audit log: %s",
                      strerror(errno));
        pthread_mutex_unlock(&a->lock);
        return -1;
    }
    if (follow_log(a, cut, cut_bytes, err) < 0) {
        unlock_log(a);
        return -1;
    }
    return 0;
}

static int append_impl(clr_audit *a, const char *actor, const char *sandbox,
                       const char *action, const char *outcome, json_t *details, clr_error *err)
{
    bool cut = false;
    off_t cut_bytes = 0;
    if (lock_log(a, &cut, &cut_bytes, err) < 0)
        return -1;
    int rc = maybe_rotate(a, err);
    if (rc == 0 && cut) {
        json_t *d = json_pack("{s:I}", "bytes", (json_int_t)cut_bytes);
        rc = audit_append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
        json_decref(d);
    }
    struct audit_waiter w = {.done = false};
    _cleanup_free_ char *line = NULL;
    if (rc == 0)
        rc = write_locked(a, actor, sandbox, action, outcome, details, &w.start, &line, err);
    if (rc == 0) {
        enqueue(a, &w);
        checkpoint_if_due(a);
    }
    unlock_log(a);
    /* Durable before the caller acts: with the lock released, the next appends write their
     * lines while this one's sync runs, and share the next sync. */
    if (rc == 0)
        rc = wait_durable(a, &w, err);
    if (rc == 0 && a->syslog)
        syslog(LOG_INFO | LOG_AUTHPRIV, "%s", line);
    return rc;
}

int clr_audit_append(clr_audit *a, const char *actor, const char *sandbox, const char *action,
                     const char *outcome, json_t *details, clr_error *err)
{
    clr_error mine = CLR_ERROR_INIT;
    int rc = append_impl(a, actor, sandbox, action, outcome, details, &mine);
    /* A record too large is the caller's problem, not the log's. */
    if (rc == 0 || mine.code != CLR_E_LIMIT) {
        pthread_mutex_lock(&a->state_lock);
        snprintf(a->last_failure, sizeof(a->last_failure), "%s", rc == 0 ? "" : mine.message);
        pthread_mutex_unlock(&a->state_lock);
    }
    if (rc < 0 && err)
        *err = mine;
    return rc;
}

bool clr_audit_writable(clr_audit *a, char *why, size_t len)
{
    pthread_mutex_lock(&a->state_lock);
    snprintf(why, len, "%s", a->last_failure);
    pthread_mutex_unlock(&a->state_lock);
    if (why[0])
        return false;
    /* Catches what makes the next append fail before one does: an immutable or read-only file
     * (access() checks both, also for root), a log moved away or replaced by a directory. */
    struct stat st;
    if (access(a->path, W_OK) < 0 || stat(a->path, &st) < 0) {
        snprintf(why, len, "the audit log %s is not writable: %s; every action is refused until "
                 "it is", a->path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, len, "the audit log %s is not a regular file; every action is refused "
                 "until it is", a->path);
        return false;
    }
    return true;
}

const char *clr_audit_path(const clr_audit *a)
{
    return a->path;
}

int clr_audit_checkpoint(clr_audit *a, clr_error *err)
{
    bool cut = false;
    off_t cut_bytes = 0;
    if (lock_log(a, &cut, &cut_bytes, err) < 0)
        return -1;
    int rc = 0;
    if (cut) {
        json_t *d = json_pack("{s:I}", "bytes", (json_int_t)cut_bytes);
        rc = audit_append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
        json_decref(d);
    }
    /* A checkpoint names only a durable head. */
    if (rc == 0 && sync_locked(a, -1) < 0)
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                           "cannot write the audit log %s: %s", a->path, strerror(errno));
    if (rc == 0)
        rc = audit_checkpoint_locked(a, err);
    unlock_log(a);
    return rc;
}


int clr_audit_disk(const clr_audit *a, clr_audit_disk_status *out, clr_error *err)
{
    memset(out, 0, sizeof(*out));
    out->budget = a->disk_budget;
    char **files = NULL;
    size_t n = 0;
    if (clr_audit_files(&files, &n, a->path, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(files[i], &st) == 0)
            out->bytes += (uint64_t)st.st_size;
    }
    clr_audit_files_free(files);
    char dirbuf[4200];
    snprintf(dirbuf, sizeof(dirbuf), "%s", a->path);
    struct statvfs vfs;
    if (statvfs(dirname(dirbuf), &vfs) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "statvfs of the audit directory: %s",
                             strerror(errno));
    out->free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (!out->budget)
        return 0;
    if (out->bytes >= out->budget / 5 * 4) {
        out->warning = true;
        snprintf(out->reason, sizeof(out->reason),
                 "the audit log's files take %" PRIu64 " bytes, over 80%% of audit_disk_budget "
                 "(%" PRIu64 "): archive rotated files or set audit_keep",
                 out->bytes, out->budget);
    } else if (out->free_bytes < out->budget) {
        out->warning = true;
        snprintf(out->reason, sizeof(out->reason),
                 "%" PRIu64 " bytes free beside the audit log, under audit_disk_budget "
                 "(%" PRIu64 "): when the disk is full nothing runs",
                 out->free_bytes, out->budget);
    }
    return 0;
}
