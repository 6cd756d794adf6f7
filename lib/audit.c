/* The hash-chained audit log (see include/clearing/audit.h).
 *
 * Appends from several processes (the daemon, a CLI `run`) serialise on an flock of the log
 * file. Under the lock the writer learns the chain's head from the file itself (its last line),
 * unless the file is exactly as this process left it, so two writers never fork the chain.
 * A record is acknowledged only after write() of the whole line and fdatasync() succeeded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "internal.h"

#define MAX_RECORD (256 * 1024) /* a longer line is not a record of ours */
#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

#define KEY_BYTES 32
#define OTHERS_MAX 4
#define CHECKPOINT_MAGIC "clearing-audit-checkpoint v1"

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

struct clr_audit {
    char *path;
    int fd;
    int lock_fd; /* path.lock: never rotated, so every writer locks the same file */
    uint64_t rotate_bytes;
    bool syslog;
    unsigned keep;
    uint64_t disk_budget;
    uint32_t aggregate_ms, checkpoint_ms;
    unsigned char key[KEY_BYTES]; /* signs checkpoints */
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
    struct denial others[OTHERS_MAX]; /* one per action: when the table is full */
    /* Why the last append failed ("" while the last one succeeded), for health checks that must
     * not wait behind an append's fsync: guarded by state_lock, never held across I/O. */
    pthread_mutex_t state_lock;
    char last_failure[sizeof(((clr_error *)0)->message)];
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void hex(char *out, const unsigned char *d, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

int clr_audit_record_hash(char out[65], json_t *record, clr_error *err)
{
    json_t *copy = json_copy(record);
    if (!copy)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    json_object_del(copy, "hash");
    const char *prev = json_string_value(json_object_get(copy, "prev"));
    char *body = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(copy);
    if (!body || !prev) {
        free(body);
        return clr_error_set(err, CLR_E_INVALID, 0, "record has no prev field");
    }
    unsigned char d[32];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, prev, strlen(prev)) && EVP_DigestUpdate(ctx, "\n", 1) &&
             EVP_DigestUpdate(ctx, body, strlen(body)) && EVP_DigestFinal_ex(ctx, d, &n);
    EVP_MD_CTX_free(ctx);
    free(body);
    if (!ok)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "SHA-256 failed");
    hex(out, d, 32);
    return 0;
}

/* Reads the last line of fd (which ends with '\n') into a fresh buffer; NULL if the file is
 * empty. *torn gets the number of bytes after the last newline (a torn write). */
static char *last_line(int fd, off_t size, off_t *torn)
{
    *torn = 0;
    if (size == 0)
        return NULL;
    off_t start = size > MAX_RECORD + 2 ? size - (MAX_RECORD + 2) : 0;
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

/* Learns seq and hash of the last complete record (under the lock), cutting a torn tail. */
static int load_head(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err)
{
    struct stat st;
    *cut = false;
    if (fstat(a->fd, &st) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "audit log %s: %s", a->path,
                             strerror(errno));
    if (st.st_size == a->known_size && st.st_ino == a->known_ino && a->hash[0])
        return 0;
    off_t torn = 0;
    char *line = last_line(a->fd, st.st_size, &torn);
    if (torn > 0) {
        /* A write the crash interrupted: never fsync'd, never acknowledged. */
        if (ftruncate(a->fd, st.st_size - torn) < 0 || fdatasync(a->fd) < 0) {
            free(line);
            return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                                 "audit log %s: cannot cut a torn last line: %s", a->path,
                                 strerror(errno));
        }
        *cut = true;
        *cut_bytes = torn;
        st.st_size -= torn;
    }
    if (!line) {
        if (st.st_size > 0 && torn == 0)
            return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "audit log %s: unreadable tail",
                                 a->path);
        /* A new file: continue from a rotated predecessor's head if there is one. */
        a->seq = 0;
        snprintf(a->hash, sizeof(a->hash), "%s", GENESIS);
        char **files = NULL;
        size_t n = 0;
        if (st.st_size == 0 && clr_audit_files(&files, &n, a->path, NULL) == 0 && n >= 2) {
            int pfd = open(files[n - 2], O_RDONLY | O_CLOEXEC);
            struct stat pst;
            if (pfd >= 0 && fstat(pfd, &pst) == 0) {
                off_t t2;
                char *pl = last_line(pfd, pst.st_size, &t2);
                json_t *j = pl ? json_loads(pl, 0, NULL) : NULL;
                if (j) {
                    a->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
                    const char *h = json_string_value(json_object_get(j, "hash"));
                    snprintf(a->hash, sizeof(a->hash), "%s", h ? h : GENESIS);
                }
                json_decref(j);
                free(pl);
            }
            if (pfd >= 0)
                close(pfd);
        }
        clr_audit_files_free(files);
    } else {
        json_t *j = json_loads(line, 0, NULL);
        free(line);
        const char *h = json_string_value(json_object_get(j, "hash"));
        if (!j || !h || strlen(h) != 64) {
            json_decref(j);
            return clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                                 "audit log %s: the last record is not readable; run "
                                 "'clearing audit verify' and move the file aside",
                                 a->path);
        }
        a->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        snprintf(a->hash, sizeof(a->hash), "%s", h);
        json_decref(j);
    }
    a->known_size = st.st_size;
    a->known_ino = st.st_ino;
    return 0;
}

static void timestamp(char *out, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%06ldZ", (long)tv.tv_usec);
}

static int write_all(int fd, const char *p, size_t n)
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

static int open_log(clr_audit *a, clr_error *err)
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

/* ---- checkpoints ---- */

static void checkpoint_path(char *out, size_t len, const char *path, const char *suffix)
{
    snprintf(out, len, "%s.%s", path, suffix);
}

/* The MAC of a checkpoint: HMAC-SHA256 under the key over the magic, seq, hash and time. */
static int checkpoint_mac(char out[65], const unsigned char *key, uint64_t seq,
                          const char *hash, const char *ts)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), CHECKPOINT_MAGIC "\n%" PRIu64 "\n%s\n%s\n", seq, hash,
                     ts);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (n < 0 || (size_t)n >= sizeof(msg) ||
        !HMAC(EVP_sha256(), key, KEY_BYTES, (const unsigned char *)msg, (size_t)n, d, &dl) ||
        dl != 32)
        return -1;
    hex(out, d, 32);
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char dirbuf[4200];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

/* Under the lock, with the head loaded: path.checkpoint names the head, signed. Written to a
 * temporary file, synced, renamed over the old one: a crash leaves the old or the new. */
static int checkpoint_locked(clr_audit *a, clr_error *err)
{
    char ts[40], mac[65], tmp[4200], final[4200];
    timestamp(ts, sizeof(ts));
    if (checkpoint_mac(mac, a->key, a->seq, a->hash, ts) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "HMAC-SHA256 failed");
    json_t *j = json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)a->seq, "hash", a->hash,
                          "ts", ts, "mac", mac);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    checkpoint_path(tmp, sizeof(tmp), a->path, "checkpoint.tmp");
    checkpoint_path(final, sizeof(final), a->path, "checkpoint");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(text);
    text[len] = '\n';
    int e = 0;
    if (fd < 0 || write_all(fd, text, len + 1) < 0 || fsync(fd) < 0)
        e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (!e && rename(tmp, final) < 0)
        e = errno;
    if (!e)
        fsync_dir_of(final);
    if (!e && a->syslog) {
        text[len] = '\0';
        syslog(LOG_INFO | LOG_AUTHPRIV, "checkpoint %s", text);
    }
    free(text);
    if (e) {
        unlink(tmp);
        return clr_error_set(err, CLR_E_UNAVAILABLE, e, "cannot write the audit checkpoint %s: %s",
                             final, strerror(e));
    }
    a->uncheckpointed = false;
    a->checkpoint_at_ms = mono_ms();
    return 0;
}

/* Reads the key at path.key, or makes one (32 random bytes, 0600) if there is none. */
static int load_key(clr_audit *a, clr_error *err)
{
    char kp[4200];
    checkpoint_path(kp, sizeof(kp), a->path, "key");
    int fd = open(kp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        /* Made whole under a name of its own, then linked into place: a writer opening the
         * log at the same time reads the whole key or makes its own, never a part of one. */
        unsigned char k[KEY_BYTES];
        if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k))
            return clr_error_set(err, CLR_E_INTERNAL, errno, "getrandom: %s", strerror(errno));
        char tmp[4300];
        snprintf(tmp, sizeof(tmp), "%s.%d.%02x%02x", kp, (int)getpid(), k[0], k[1]);
        int wfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        int e = wfd < 0 ? errno : 0;
        if (wfd >= 0) {
            if (write_all(wfd, (const char *)k, sizeof(k)) < 0 || fsync(wfd) < 0)
                e = errno;
            close(wfd);
            if (!e && link(tmp, kp) < 0 && errno != EEXIST)
                e = errno;
            unlink(tmp);
            if (!e)
                fsync_dir_of(kp);
        }
        OPENSSL_cleanse(k, sizeof(k));
        if (e)
            return clr_error_set(err, CLR_E_UNAVAILABLE, e, "cannot create the audit key %s: %s",
                                 kp, strerror(e));
        fd = open(kp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW); /* ours, or a racing writer's */
    }
    if (fd < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot read the audit key %s: %s (it signs the log's checkpoints)",
                             kp, strerror(errno));
    ssize_t n = read(fd, a->key, sizeof(a->key));
    close(fd);
    if (n != (ssize_t)sizeof(a->key))
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                             "the audit key %s is not %d bytes: restore it from a backup (it "
                             "signs the checkpoints that show a truncated log)",
                             kp, KEY_BYTES);
    return 0;
}

/* Under the lock, after a rotation: rotated files beyond the newest keep are deleted, and the
 * deletion is itself recorded (so a chain that starts mid-way is explained by the log). */
static int apply_retention(clr_audit *a, clr_error *err);

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
    /* The head the old file ends with, signed before it is moved: truncating the rotated file
     * later shows against this checkpoint until a newer one names a later record. */
    clr_error cerr = CLR_ERROR_INIT;
    if (checkpoint_locked(a, &cerr) < 0)
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
    if (open_log(a, err) < 0) {
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

static int append_locked(clr_audit *a, const char *actor, const char *sandbox,
                         const char *action, const char *outcome, json_t *details,
                         clr_error *err)
{
    char ts[40];
    timestamp(ts, sizeof(ts));
    json_t *d = details ? json_incref(details) : json_object();
    json_t *r = json_pack("{s:I, s:s, s:s, s:s?, s:s, s:s, s:o, s:s}", "seq",
                          (json_int_t)(a->seq + 1), "ts", ts, "actor", actor ? actor : "unknown",
                          "sandbox", sandbox, "action", action, "outcome", outcome, "details", d,
                          "prev", a->hash);
    if (!r)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "cannot build the audit record");
    char hash[65];
    if (clr_audit_record_hash(hash, r, err) < 0) {
        json_decref(r);
        return -1;
    }
    json_object_set_new(r, "hash", json_string(hash));
    char *line = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(r);
    if (!line)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t len = strlen(line);
    line[len] = '\n';
    int rc = 0;
    if (len + 1 > MAX_RECORD) {
        rc = clr_error_set(err, CLR_E_LIMIT, E2BIG, "audit record of %zu bytes is too large",
                           len);
    } else if (write_all(a->fd, line, len + 1) < 0 || fdatasync(a->fd) < 0) {
        int e = errno;
        /* A partial line would be cut at the next open; cut it now if we can. */
        if (ftruncate(a->fd, a->known_size) < 0)
            a->known_size = -1;
        rc = clr_error_set(err, CLR_E_UNAVAILABLE, e,
                           "cannot write the audit log %s: %s; the action is refused", a->path,
                           strerror(e));
    } else {
        a->seq++;
        snprintf(a->hash, sizeof(a->hash), "%s", hash);
        a->known_size += (off_t)len + 1;
        a->uncheckpointed = true;
        if (a->syslog) {
            line[len] = '\0';
            syslog(LOG_INFO | LOG_AUTHPRIV, "%s", line);
        }
    }
    free(line);
    return rc;
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
        json_t *d = json_pack("{s:o, s:i}", "files", gone, "keep", (int)a->keep);
        rc = append_locked(a, "clearing", NULL, "audit.retention_removed", "ok", d, err);
        json_decref(d);
    }
    clr_audit_files_free(files);
    return rc;
}

/* Under the lock, after an append: a checkpoint when the last is checkpoint_ms old. */
static void checkpoint_if_due(clr_audit *a)
{
    if (!a->uncheckpointed || mono_ms() - a->checkpoint_at_ms < a->checkpoint_ms)
        return;
    clr_error err = CLR_ERROR_INIT;
    if (checkpoint_locked(a, &err) < 0)
        clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
}

/* Takes both locks and learns the head (following a rotation by another writer). */
static int lock_log(clr_audit *a, bool *cut, off_t *cut_bytes, clr_error *err)
{
    pthread_mutex_lock(&a->lock);
    if (flock(a->lock_fd, LOCK_EX) < 0) {
        clr_error_set(err, CLR_E_UNAVAILABLE, errno, "locking the audit log: %s",
                      strerror(errno));
        pthread_mutex_unlock(&a->lock);
        return -1;
    }
    /* Another writer may have rotated the log (or someone moved it): follow the path. */
    struct stat ps, fs;
    if (stat(a->path, &ps) < 0 || fstat(a->fd, &fs) < 0 || ps.st_ino != fs.st_ino ||
        ps.st_dev != fs.st_dev) {
        close(a->fd);
        a->fd = -1;
        if (open_log(a, err) < 0)
            goto fail;
    }
    if (load_head(a, cut, cut_bytes, err) < 0)
        goto fail;
    return 0;
fail:
    flock(a->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&a->lock);
    return -1;
}

static void unlock_log(clr_audit *a)
{
    flock(a->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&a->lock);
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
        rc = append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
        json_decref(d);
    }
    if (rc == 0)
        rc = append_locked(a, actor, sandbox, action, outcome, details, err);
    if (rc == 0)
        checkpoint_if_due(a);
    unlock_log(a);
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
        rc = append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
        json_decref(d);
    }
    if (rc == 0)
        rc = checkpoint_locked(a, err);
    unlock_log(a);
    return rc;
}

/* ---- denials ---- */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if the byte starts none. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

#define TRUNCATED "...[truncated]"

/* s as UTF-8, each unit escaped if escape (a bad byte or NUL as \xNN, a backslash as \\), cut
 * at max bytes of output on a unit's boundary with TRUNCATED appended. */
static json_t *bounded_text(const char *s, size_t len, size_t max, bool escape)
{
    size_t cap = (max < len * 4 ? max : len * 4) + sizeof(TRUNCATED) + 8;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    bool cut = false;
    while (i < len) {
        const unsigned char *p = (const unsigned char *)s + i;
        size_t n = utf8_seq(p, len - i);
        char unit[8];
        size_t ul;
        if (escape && (n == 0 || p[0] == 0)) {
            ul = (size_t)snprintf(unit, sizeof(unit), "\\x%02x", p[0]);
            n = 1;
        } else if (escape && p[0] == '\\') {
            ul = 2;
            memcpy(unit, "\\\\", 2);
        } else {
            if (n == 0) /* not escaping: the input is valid UTF-8 (from jansson) */
                n = 1;
            ul = n;
            memcpy(unit, p, n);
        }
        if (o + ul > max) {
            cut = true;
            break;
        }
        memcpy(out + o, unit, ul);
        o += ul;
        i += n;
    }
    if (cut) {
        memcpy(out + o, TRUNCATED, sizeof(TRUNCATED) - 1);
        o += sizeof(TRUNCATED) - 1;
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

json_t *clr_audit_text(const char *s, size_t len, size_t max)
{
    return bounded_text(s ? s : "", s ? len : 0, max, true);
}

/* A copy of details with every string cut to CLR_AUDIT_FIELD_MAX bytes. */
static json_t *bounded_details(json_t *v, int depth)
{
    if (!v)
        return json_object();
    if (depth > 8)
        return json_string("...[truncated]");
    if (json_is_string(v)) {
        if (json_string_length(v) <= CLR_AUDIT_FIELD_MAX)
            return json_incref(v);
        return bounded_text(json_string_value(v), json_string_length(v), CLR_AUDIT_FIELD_MAX,
                            false);
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set_new(o, k, bounded_details(x, depth + 1));
        return o;
    }
    if (json_is_array(v)) {
        json_t *o = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(o, bounded_details(x, depth + 1));
        return o;
    }
    return json_incref(v);
}

static char *bounded_dup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strnlen(s, CLR_AUDIT_FIELD_MAX);
    return strndup(s, n);
}

static void denial_clear(struct denial *d)
{
    free(d->key);
    free(d->source);
    free(d->actor);
    free(d->sandbox);
    free(d->action);
    free(d->outcome);
    json_decref(d->last);
    memset(d, 0, sizeof(*d));
}

static bool denial_is(const struct denial *d, const char *source, const char *sandbox,
                      const char *action)
{
    return d->used && strcmp(d->action, action) == 0 &&
           strncmp(d->key, source, CLR_AUDIT_FIELD_MAX) == 0 &&
           (d->sandbox ? sandbox && strcmp(d->sandbox, sandbox) == 0 : !sandbox);
}

static int denial_fill(struct denial *d, const char *source, const char *actor,
                       const char *sandbox, const char *action, const char *outcome,
                       json_t *details, uint64_t now)
{
    d->used = true;
    json_t *src = clr_audit_text(source, strlen(source), CLR_AUDIT_FIELD_MAX);
    d->source = src ? strdup(json_string_value(src)) : NULL;
    json_decref(src);
    d->key = bounded_dup(source);
    d->actor = bounded_dup(actor ? actor : "unknown");
    d->sandbox = bounded_dup(sandbox);
    d->action = bounded_dup(action);
    d->outcome = bounded_dup(outcome);
    d->last = details;
    d->since_ms = now;
    d->pending = 0;
    if (!d->key || !d->source || !d->actor || (sandbox && !d->sandbox) || !d->action || !d->outcome) {
        denial_clear(d);
        return -1;
    }
    return 0;
}

/* A record to write once the denial table's lock is released. */
struct denial_record {
    char *actor, *sandbox, *action, *outcome;
    json_t *details;
};

/* Takes d's pending count into r (details: the latest, with source, count, interval). */
static int denial_take(clr_audit *a, struct denial *d, struct denial_record *r, uint64_t now)
{
    json_t *det = json_deep_copy(d->last);
    if (!det)
        det = json_object();
    json_object_set_new(det, "source", json_string(d->source));
    json_object_set_new(det, "count", json_integer((json_int_t)d->pending));
    json_object_set_new(det, "interval_ms", json_integer((json_int_t)a->aggregate_ms));
    r->details = det;
    r->actor = strdup(d->actor);
    r->sandbox = d->sandbox ? strdup(d->sandbox) : NULL;
    r->action = strdup(d->action);
    r->outcome = strdup(d->outcome);
    d->pending = 0;
    d->since_ms = now;
    return r->actor && r->action && r->outcome && (!d->sandbox || r->sandbox) ? 0 : -1;
}

static void denial_record_free(struct denial_record *r)
{
    free(r->actor);
    free(r->sandbox);
    free(r->action);
    free(r->outcome);
    json_decref(r->details);
    memset(r, 0, sizeof(*r));
}

static int denial_write(clr_audit *a, struct denial_record *r, clr_error *err)
{
    int rc = clr_audit_append(a, r->actor, r->sandbox, r->action, r->outcome, r->details, err);
    free(r->actor);
    free(r->sandbox);
    free(r->action);
    free(r->outcome);
    json_decref(r->details);
    memset(r, 0, sizeof(*r));
    return rc;
}

int clr_audit_denied(clr_audit *a, const char *source, const char *actor, const char *sandbox,
                     const char *action, const char *outcome, json_t *details, clr_error *err)
{
    json_t *det = bounded_details(details, 0);
    if (!det)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint64_t now = mono_ms();
    struct denial_record rec = {0};
    bool write = false, first = false;
    pthread_mutex_lock(&a->denial_lock);
    struct denial *d = NULL, *free_slot = NULL;
    for (size_t i = 0; i < CLR_AUDIT_SOURCES_MAX; i++) {
        if (denial_is(&a->denials[i], source, sandbox, action)) {
            d = &a->denials[i];
            break;
        }
        if (!a->denials[i].used && !free_slot)
            free_slot = &a->denials[i];
    }
    if (!d && free_slot) {
        /* A new source: recorded at once, as it came. */
        if (denial_fill(free_slot, source, actor, sandbox, action, outcome, json_incref(det),
                        now) == 0)
            first = true;
    } else if (!d) {
        /* The table is full: new sources are counted together, per action, never unbounded
         * memory. The sandbox of the latest is in its details. */
        if (sandbox)
            json_object_set_new(det, "sandbox", json_string(sandbox));
        struct denial *unused = NULL;
        for (size_t i = 0; i < OTHERS_MAX && !d; i++) {
            if (denial_is(&a->others[i], "others", NULL, action))
                d = &a->others[i];
            else if (!a->others[i].used && !unused)
                unused = &a->others[i];
        }
        if (!d && !unused)
            d = &a->others[OTHERS_MAX - 1]; /* more actions than buckets: share the last */
        if (!d) {
            if (denial_fill(unused, "others", actor, NULL, action, outcome, json_incref(det),
                            now) == 0)
                first = true;
        }
    }
    if (d) {
        json_decref(d->last);
        d->last = json_incref(det);
        d->pending++;
        if (now - d->since_ms >= a->aggregate_ms)
            write = denial_take(a, d, &rec, now) == 0;
    }
    pthread_mutex_unlock(&a->denial_lock);
    if (!write)
        denial_record_free(&rec);
    int rc = 0;
    if (!first && !d) {
        /* No room to track it (out of memory): recorded as it came, never dropped. */
        json_object_set_new(det, "count", json_integer(1));
        rc = clr_audit_append(a, actor, sandbox, action, outcome, det, err);
    } else if (first) {
        bool own = free_slot && free_slot->used && denial_is(free_slot, source, sandbox, action);
        json_object_set_new(det, "source",
                            own ? clr_audit_text(source, strlen(source), CLR_AUDIT_FIELD_MAX)
                                : json_string("others"));
        json_object_set_new(det, "count", json_integer(1));
        rc = clr_audit_append(a, actor, own ? sandbox : NULL, action, outcome, det, err);
    } else if (write) {
        rc = denial_write(a, &rec, err);
    }
    json_decref(det);
    return rc;
}

/* Writes pending counts whose interval passed (all of them if all), and forgets sources that
 * were quiet for two intervals, so their next denial is recorded at once again. */
static void denials_flush(clr_audit *a, bool all)
{
    size_t n = CLR_AUDIT_SOURCES_MAX + OTHERS_MAX;
    struct denial_record *recs = calloc(n, sizeof(*recs));
    if (!recs)
        return;
    size_t m = 0;
    uint64_t now = mono_ms();
    pthread_mutex_lock(&a->denial_lock);
    for (size_t i = 0; i < n; i++) {
        struct denial *d =
            i < CLR_AUDIT_SOURCES_MAX ? &a->denials[i] : &a->others[i - CLR_AUDIT_SOURCES_MAX];
        if (!d->used)
            continue;
        uint64_t age = now - d->since_ms;
        if (d->pending && (all || age >= a->aggregate_ms)) {
            if (denial_take(a, d, &recs[m], now) == 0)
                m++;
            else
                denial_record_free(&recs[m]);
        } else if (!d->pending && (all || age >= 2ull * a->aggregate_ms)) {
            denial_clear(d);
        }
    }
    pthread_mutex_unlock(&a->denial_lock);
    for (size_t i = 0; i < m; i++) {
        clr_error err = CLR_ERROR_INIT;
        if (denial_write(a, &recs[i], &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", err.message, NULL);
    }
    free(recs);
}

void clr_audit_tick(clr_audit *a)
{
    denials_flush(a, false);
    pthread_mutex_lock(&a->lock);
    bool due = a->uncheckpointed && mono_ms() - a->checkpoint_at_ms >= a->checkpoint_ms;
    pthread_mutex_unlock(&a->lock);
    clr_error err = CLR_ERROR_INIT;
    if (due && clr_audit_checkpoint(a, &err) < 0)
        clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
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

int clr_audit_open(clr_audit **out, const clr_audit_options *opts, clr_error *err)
{
    if (!opts->path || !*opts->path)
        return clr_error_set(err, CLR_E_INVALID, 0, "no audit log path");
    clr_audit *a = calloc(1, sizeof(*a));
    if (!a)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    a->path = strdup(opts->path);
    a->rotate_bytes = opts->rotate_bytes;
    a->syslog = opts->syslog;
    a->keep = opts->keep;
    a->disk_budget = opts->disk_budget;
    a->aggregate_ms = opts->aggregate_ms ? opts->aggregate_ms : CLR_AUDIT_DEFAULT_AGGREGATE_MS;
    a->checkpoint_ms = opts->checkpoint_ms ? opts->checkpoint_ms : CLR_AUDIT_DEFAULT_CHECKPOINT_MS;
    a->checkpoint_at_ms = mono_ms();
    a->lock_fd = -1;
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->denial_lock, NULL);
    pthread_mutex_init(&a->state_lock, NULL);
    if (!a->path)
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (!a->path || open_log(a, err) < 0) {
        free(a->path);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->denial_lock);
        pthread_mutex_destroy(&a->state_lock);
        free(a);
        return -1;
    }
    if (load_key(a, err) < 0) {
        clr_audit_close(a);
        return -1;
    }
    if (a->syslog)
        openlog("clearing-audit", LOG_PID, LOG_AUTHPRIV);
    char lock_path[4200];
    snprintf(lock_path, sizeof(lock_path), "%s.lock", a->path);
    a->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->lock_fd < 0) {
        clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot open the audit lock %s: %s",
                      lock_path, strerror(errno));
        clr_audit_close(a);
        return -1;
    }
    /* Learn the head (and cut a torn tail) now, so a broken log is an error at start. */
    if (flock(a->lock_fd, LOCK_EX) == 0) {
        bool cut = false;
        off_t cut_bytes = 0;
        int rc = load_head(a, &cut, &cut_bytes, err);
        if (rc == 0 && cut) {
            json_t *d = json_pack("{s:I}", "bytes", (json_int_t)cut_bytes);
            rc = append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
            json_decref(d);
        }
        /* A log from before checkpoints (or whose checkpoint was lost): sign its head now. */
        char cp[4200];
        checkpoint_path(cp, sizeof(cp), a->path, "checkpoint");
        if (rc == 0 && (a->seq > 0 || cut) && access(cp, F_OK) < 0) {
            /* Not fatal: the checkpoint guards the log, it does not stand in for it. When the
             * disk is full the next append says so, naming the log, and fails closed. */
            clr_error cerr = CLR_ERROR_INIT;
            if (checkpoint_locked(a, &cerr) < 0)
                clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", cerr.message, NULL);
        }
        flock(a->lock_fd, LOCK_UN);
        if (rc < 0) {
            clr_audit_close(a);
            return -1;
        }
    }
    *out = a;
    return 0;
}

void clr_audit_close(clr_audit *a)
{
    if (!a)
        return;
    if (a->fd >= 0 && a->lock_fd >= 0) {
        /* Counts not yet recorded, then the head as this process leaves it. */
        denials_flush(a, true);
        clr_error err = CLR_ERROR_INIT;
        if (a->uncheckpointed && clr_audit_checkpoint(a, &err) < 0)
            clr_log(CLR_LOG_ERROR, "audit.checkpoint_failed", "error", err.message, NULL);
    }
    for (size_t i = 0; i < CLR_AUDIT_SOURCES_MAX; i++)
        denial_clear(&a->denials[i]);
    for (size_t i = 0; i < OTHERS_MAX; i++)
        denial_clear(&a->others[i]);
    if (a->fd >= 0)
        close(a->fd);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    pthread_mutex_destroy(&a->denial_lock);
    pthread_mutex_destroy(&a->state_lock);
    pthread_mutex_destroy(&a->lock);
    free(a->path);
    free(a);
}

/* ---- files and verification ---- */

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

int clr_audit_files(char ***out, size_t *n, const char *path, clr_error *err)
{
    char dirbuf[4096], basebuf[4096];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    snprintf(basebuf, sizeof(basebuf), "%s", path);
    const char *dir = dirname(dirbuf), *base = basename(basebuf);
    size_t blen = strlen(base);
    char **v = calloc(1, sizeof(char *));
    size_t m = 0;
    DIR *d = opendir(dir);
    if (!v || !d) {
        free(v);
        if (d)
            closedir(d);
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot list %s", dir);
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        /* path.N with N all digits */
        if (strncmp(e->d_name, base, blen) != 0 || e->d_name[blen] != '.' ||
            !e->d_name[blen + 1] || strspn(e->d_name + blen + 1, "0123456789") !=
                                        strlen(e->d_name + blen + 1))
            continue;
        char **nv = realloc(v, (m + 2) * sizeof(char *));
        if (!nv)
            break;
        v = nv;
        if (asprintf(&v[m], "%s/%s", dir, e->d_name) < 0)
            break;
        m++;
    }
    closedir(d);
    qsort(v, m, sizeof(char *), cmp_str); /* zero-padded: lexical order is numeric order */
    char **nv = realloc(v, (m + 2) * sizeof(char *));
    if (nv) {
        v = nv;
        v[m++] = strdup(path);
    }
    v[m] = NULL;
    *out = v;
    *n = m;
    return 0;
}

void clr_audit_files_free(char **files)
{
    for (char **f = files; f && *f; f++)
        free(*f);
    free(files);
}

static bool bad(clr_audit_verify_report *r, const char *file, uint64_t line, uint64_t seq,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static bool bad(clr_audit_verify_report *r, const char *file, uint64_t line, uint64_t seq,
                const char *fmt, ...)
{
    r->ok = false;
    snprintf(r->file, sizeof(r->file), "%s", file);
    r->line = line;
    r->seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem, sizeof(r->problem), fmt, ap);
    va_end(ap);
    return false;
}

/* Checks one line against the chain so far; false (with the report filled) at the first fault. */
static bool check_line(clr_audit_verify_report *r, const char *file, uint64_t lineno,
                       const char *text, size_t len, char *prev_hash, uint64_t *prev_seq)
{
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return bad(r, file, lineno, *prev_seq + 1, "not a JSON record (edited or truncated)");
    }
    json_t *jseq = json_object_get(j, "seq");
    const char *prev = json_string_value(json_object_get(j, "prev"));
    const char *hash = json_string_value(json_object_get(j, "hash"));
    uint64_t seq = json_is_integer(jseq) ? (uint64_t)json_integer_value(jseq) : 0;
    char want[65];
    bool ok = true;
    if (!json_is_integer(jseq) || !prev || !hash)
        ok = bad(r, file, lineno, seq, "record lacks seq, prev or hash");
    else if (clr_audit_record_hash(want, j, NULL) < 0 || strcmp(want, hash) != 0)
        ok = bad(r, file, lineno, seq, "record %" PRIu64 " was edited: its hash does not match "
                                       "its content", seq);
    else if (seq != *prev_seq + 1)
        ok = seq <= *prev_seq
                 ? bad(r, file, lineno, seq,
                       "record %" PRIu64 " follows record %" PRIu64 ": reordered or inserted",
                       seq, *prev_seq)
                 : bad(r, file, lineno, seq,
                       "record %" PRIu64 " follows record %" PRIu64 ": records %" PRIu64
                       "..%" PRIu64 " are missing here (deleted or moved)",
                       seq, *prev_seq, *prev_seq + 1, seq - 1);
    else if (strcmp(prev, prev_hash) != 0)
        ok = bad(r, file, lineno, seq,
                 "record %" PRIu64 " does not follow the previous record's hash (a record "
                 "before it was replaced, inserted or deleted)",
                 seq);
    if (ok) {
        snprintf(prev_hash, 65, "%s", hash);
        *prev_seq = seq;
        if (r->records == 0)
            r->first_seq = seq;
        r->records++;
        r->last_seq = seq;
        snprintf(r->last_hash, sizeof(r->last_hash), "%s", hash);
    }
    json_decref(j);
    return ok;
}

/* probe_seq: the record whose hash goes to probe_hash (empty if the chain does not reach it). */
static int verify_files(clr_audit_verify_report *r, const char *const *files, size_t nfiles,
                        bool allow_partial, uint64_t probe_seq, char probe_hash[65],
                        clr_error *err)
{
    probe_hash[0] = '\0';
    memset(r, 0, sizeof(*r));
    r->ok = true;
    char prev_hash[65] = GENESIS;
    uint64_t prev_seq = 0;
    bool first = true;
    for (size_t f = 0; f < nfiles && r->ok; f++) {
        FILE *fp = fopen(files[f], "re");
        if (!fp)
            return clr_error_set(err, CLR_E_NOT_FOUND, errno, "cannot read %s: %s", files[f],
                                 strerror(errno));
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        uint64_t lineno = 0;
        while (r->ok && (n = getline(&line, &cap, fp)) >= 0) {
            lineno++;
            if (n == 0 || line[n - 1] != '\n') {
                bad(r, files[f], lineno, prev_seq + 1,
                    "the file ends inside a record (truncated, or a crash the writer has not "
                    "yet repaired)");
                break;
            }
            /* The chain starts at record 1, so deleting the first records is detected. Only
             * when the operator says older files were deleted (retention) may the first file
             * start mid-chain: then its first record's prev and seq are taken as given. */
            if (first && allow_partial) {
                json_t *j = json_loadb(line, (size_t)n - 1, 0, NULL);
                const char *p = json_string_value(json_object_get(j, "prev"));
                if (p && json_is_integer(json_object_get(j, "seq"))) {
                    snprintf(prev_hash, sizeof(prev_hash), "%s", p);
                    prev_seq = (uint64_t)json_integer_value(json_object_get(j, "seq")) - 1;
                }
                json_decref(j);
            }
            first = false;
            if (check_line(r, files[f], lineno, line, (size_t)n - 1, prev_hash, &prev_seq) &&
                r->last_seq == probe_seq)
                snprintf(probe_hash, 65, "%s", r->last_hash);
        }
        free(line);
        fclose(fp);
    }
    return 0;
}

int clr_audit_verify(clr_audit_verify_report *r, const char *const *files, size_t nfiles,
                     bool allow_partial, clr_error *err)
{
    char unused[65];
    return verify_files(r, files, nfiles, allow_partial, 0, unused, err);
}

/* Reads path.checkpoint and checks its MAC; 1 if there is none, -1 with r filled if it is bad. */
static int read_checkpoint(clr_audit_verify_report *r, const char *path, uint64_t *seq,
                           char hash[65], clr_error *err)
{
    char cp[4200], kp[4200];
    checkpoint_path(cp, sizeof(cp), path, "checkpoint");
    checkpoint_path(kp, sizeof(kp), path, "key");
    json_error_t jerr;
    json_t *j = json_load_file(cp, JSON_REJECT_DUPLICATES, &jerr);
    if (!j && access(cp, F_OK) < 0 && errno == ENOENT)
        return 1;
    json_t *jseq = json_object_get(j, "seq");
    const char *h = json_string_value(json_object_get(j, "hash"));
    const char *ts = json_string_value(json_object_get(j, "ts"));
    const char *mac = json_string_value(json_object_get(j, "mac"));
    if (!json_is_integer(jseq) || !h || strlen(h) != 64 || !ts || strlen(ts) >= 40 || !mac) {
        json_decref(j);
        bad(r, cp, 1, 0, "the checkpoint is not readable (edited or damaged)");
        return -1;
    }
    *seq = (uint64_t)json_integer_value(jseq);
    snprintf(hash, 65, "%s", h);
    snprintf(r->checkpoint_ts, sizeof(r->checkpoint_ts), "%s", ts);
    unsigned char key[KEY_BYTES];
    int fd = open(kp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t kn = fd >= 0 ? read(fd, key, sizeof(key)) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (kn != (ssize_t)sizeof(key)) {
        json_decref(j);
        return clr_error_set(err, CLR_E_UNAVAILABLE, kn < 0 ? e : EIO,
                             "cannot read the audit key %s to check the checkpoint %s: %s", kp,
                             cp, kn < 0 ? strerror(e) : "not 32 bytes");
    }
    char want[65];
    bool ok = checkpoint_mac(want, key, *seq, hash, ts) == 0 && strlen(mac) == 64 &&
              CRYPTO_memcmp(want, mac, 64) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    json_decref(j);
    if (!ok) {
        bad(r, cp, 1, *seq,
            "the checkpoint is not signed by the audit key (forged or edited, or the key was "
            "replaced)");
        return -1;
    }
    return 0;
}

int clr_audit_verify_log(clr_audit_verify_report *r, const char *path, bool allow_partial,
                         clr_error *err)
{
    memset(r, 0, sizeof(*r));
    uint64_t cp_seq = 0;
    char cp_hash[65] = "", at[65];
    clr_audit_verify_report cr;
    memset(&cr, 0, sizeof(cr));
    int have = read_checkpoint(&cr, path, &cp_seq, cp_hash, err);
    if (have < 0 && cr.problem[0] == '\0')
        return -1; /* the key could not be read */
    char **files = NULL;
    size_t n = 0;
    if (clr_audit_files(&files, &n, path, err) < 0)
        return -1;
    int rc = verify_files(r, (const char *const *)files, n, allow_partial, cp_seq, at, err);
    clr_audit_files_free(files);
    if (rc < 0 || have == 1)
        return rc;
    r->checkpointed = true;
    r->checkpoint_seq = cp_seq;
    snprintf(r->checkpoint_ts, sizeof(r->checkpoint_ts), "%s", cr.checkpoint_ts);
    if (have < 0) {
        snprintf(r->file, sizeof(r->file), "%s", cr.file);
        r->ok = false;
        r->line = 0;
        r->seq = cp_seq;
        snprintf(r->problem, sizeof(r->problem), "%s", cr.problem);
        return 0;
    }
    if (!r->ok)
        return 0; /* the chain itself is broken: that is the first fault */
    if (r->last_seq < cp_seq) {
        bad(r, path, 0, r->last_seq + 1,
            "the log was truncated after record %" PRIu64 ": the checkpoint of %s names record "
            "%" PRIu64,
            r->last_seq, r->checkpoint_ts, cp_seq);
    } else if (at[0] && strcmp(at, cp_hash) != 0) {
        bad(r, path, 0, cp_seq,
            "record %" PRIu64 " is not the one the checkpoint of %s signed: the log was "
            "truncated or rewritten at or before it",
            cp_seq, r->checkpoint_ts);
    } else if (!at[0] && cp_seq >= r->first_seq && cp_seq > 0) {
        bad(r, path, 0, cp_seq, "record %" PRIu64 " of the checkpoint is not in the log",
            cp_seq);
    }
    return 0;
}

/* ---- standard record details ---- */

json_t *clr_audit_sandbox_details(const clr_sandbox_info *info)
{
    const clr_limits *l = &info->limits;
    return json_pack("{s:s, s:s, s:b, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
                     "image", info->image, "runtime", info->runtime, "insecure", info->insecure,
                     "expires_at", (json_int_t)info->expires_at, "limits", "cpu_millis",
                     (json_int_t)l->cpu_millis, "memory", (json_int_t)l->memory_bytes, "pids",
                     (json_int_t)l->pids, "lifetime", (json_int_t)l->lifetime_s, "tmp",
                     (json_int_t)l->tmp_bytes, "workspace", (json_int_t)l->workspace_bytes,
                     "workspace_inodes", (json_int_t)l->workspace_inodes, "nofile",
                     (json_int_t)l->nofile, "fsize", (json_int_t)l->fsize_bytes);
}

json_t *clr_audit_exec_request(const clr_exec_options *o)
{
    json_t *d = json_object();
    if (o->shell) {
        json_object_set_new(d, "shell", json_string(o->shell));
    } else {
        json_t *a = json_array();
        for (const char *const *p = o->argv; p && *p; p++)
            json_array_append_new(a, json_string(*p));
        json_object_set_new(d, "argv", a);
    }
    json_t *names = json_array();
    for (const char *const *e = o->env; e && *e; e++)
        json_array_append_new(names, json_stringn(*e, strcspn(*e, "=")));
    json_object_set_new(d, "env_names", names);
    json_object_set_new(d, "cwd", json_string(o->cwd ? o->cwd : "/workspace"));
    json_object_set_new(d, "timeout_ms", json_integer(o->limits.timeout_ms));
    json_object_set_new(d, "stdin_bytes", json_integer((json_int_t)o->stdin_len));
    return d;
}

json_t *clr_audit_exec_result(const clr_exec_result *r)
{
    return json_pack("{s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}", "status",
                     clr_exec_status_name(r->status), "exit_code",
                     r->status == CLR_EXEC_EXITED ? json_integer(r->exit_code) : json_null(),
                     "signal",
                     r->status == CLR_EXEC_SIGNALED ? json_integer(r->signal) : json_null(),
                     "wall_us", (json_int_t)r->wall_us, "cpu_user_us", (json_int_t)r->user_us,
                     "cpu_system_us", (json_int_t)r->sys_us, "peak_memory_bytes",
                     (json_int_t)r->peak_memory_bytes, "stdout_bytes",
                     (json_int_t)r->stdout_bytes, "stderr_bytes", (json_int_t)r->stderr_bytes,
                     "timed_out", r->status == CLR_EXEC_TIMED_OUT, "oom",
                     r->status == CLR_EXEC_OOM);
}
