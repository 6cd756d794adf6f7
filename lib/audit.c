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
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "internal.h"

#define MAX_RECORD (256 * 1024) /* a longer line is not a record of ours */
#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

struct clr_audit {
    char *path;
    int fd;
    int lock_fd; /* path.lock: never rotated, so every writer locks the same file */
    uint64_t rotate_bytes;
    bool syslog;
    pthread_mutex_t lock;
    /* The chain's head as of our last append, valid while the file has size known_size. */
    uint64_t seq;
    char hash[65];
    off_t known_size;
    ino_t known_ino;
    /* Why the last append failed ("" while the last one succeeded), for health checks that must
     * not wait behind an append's fsync: guarded by state_lock, never held across I/O. */
    pthread_mutex_t state_lock;
    char last_failure[sizeof(((clr_error *)0)->message)];
};

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
    return 0;
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
        if (a->syslog) {
            line[len] = '\0';
            syslog(LOG_INFO | LOG_AUTHPRIV, "%s", line);
        }
    }
    free(line);
    return rc;
}

static int append_impl(clr_audit *a, const char *actor, const char *sandbox,
                       const char *action, const char *outcome, json_t *details, clr_error *err);

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

static int append_impl(clr_audit *a, const char *actor, const char *sandbox,
                       const char *action, const char *outcome, json_t *details, clr_error *err)
{
    pthread_mutex_lock(&a->lock);
    int rc = -1;
    if (flock(a->lock_fd, LOCK_EX) < 0) {
        clr_error_set(err, CLR_E_UNAVAILABLE, errno, "locking the audit log: %s",
                      strerror(errno));
        goto out;
    }
    /* Another writer may have rotated the log (or someone moved it): follow the path. */
    struct stat ps, fs;
    if (stat(a->path, &ps) < 0 || fstat(a->fd, &fs) < 0 || ps.st_ino != fs.st_ino ||
        ps.st_dev != fs.st_dev) {
        close(a->fd);
        a->fd = -1;
        if (open_log(a, err) < 0)
            goto unlock;
    }
    bool cut = false;
    off_t cut_bytes = 0;
    if (load_head(a, &cut, &cut_bytes, err) < 0 || maybe_rotate(a, err) < 0)
        goto unlock;
    if (cut) {
        json_t *d = json_pack("{s:I}", "bytes", (json_int_t)cut_bytes);
        rc = append_locked(a, "clearing", NULL, "audit.torn_tail_removed", "ok", d, err);
        json_decref(d);
        if (rc < 0)
            goto unlock;
    }
    rc = append_locked(a, actor, sandbox, action, outcome, details, err);
unlock:
    flock(a->lock_fd, LOCK_UN);
out:
    pthread_mutex_unlock(&a->lock);
    return rc;
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
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->state_lock, NULL);
    if (!a->path)
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (!a->path || open_log(a, err) < 0) {
        free(a->path);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->state_lock);
        free(a);
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
    if (a->fd >= 0)
        close(a->fd);
    if (a->lock_fd > 0)
        close(a->lock_fd);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->state_lock);
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

int clr_audit_verify(clr_audit_verify_report *r, const char *const *files, size_t nfiles,
                     bool allow_partial, clr_error *err)
{
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
            check_line(r, files[f], lineno, line, (size_t)n - 1, prev_hash, &prev_seq);
        }
        free(line);
        fclose(fp);
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
