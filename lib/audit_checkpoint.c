/* The audit log's checkpoint (see audit_internal.h): path.checkpoint names the chain's head,
 * signed with the daemon's Ed25519 verdict key (v2), or with HMAC-SHA256 under path.key when the
 * writer holds no such key (v1), so a log cut short after its last checkpoint shows. Written
 * under the writer's lock; reads nothing of the chain but its head. */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <syslog.h>

#include "audit_internal.h"
#include "clearing/verdict.h"

/* The head, signed: v2 {"hash","key_id","seq","sig","ts"} with a->ckey, else v1 {"hash","mac",
 * "seq","ts"}; keys sorted, one line. *out is the caller's (free). */
static int checkpoint_text(char **out, clr_audit *a, clr_error *err)
{
    char ts[40];
    audit_timestamp(ts, sizeof(ts));
    json_auto_t *j = NULL;
    if (a->ckey) {
        char stmt[256], sig[CLR_VERDICT_SIG_B64_SIZE];
        int n = audit_checkpoint_statement(stmt, sizeof(stmt), a->seq, a->hash, ts);
        if (n < 0 || clr_verdict_sign_data(sig, a->ckey, stmt, (size_t)n, err) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, 0,
                                 "signing the audit checkpoint with key %s failed",
                                 clr_verdict_key_id(a->ckey));
        j = json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)a->seq, "hash", a->hash,
                      "ts", ts, "key_id", clr_verdict_key_id(a->ckey), "sig", sig);
    } else {
        char mac[65];
        if (audit_checkpoint_mac(mac, a->key, a->seq, a->hash, ts) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, 0, "HMAC-SHA256 failed");
        j = json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)a->seq, "hash", a->hash, "ts",
                      ts, "mac", mac);
    }
    *out = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!*out)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return 0;
}

/* Under the lock, with the head loaded: path.checkpoint names the head, signed. Written to a
 * temporary file, synced, renamed over the old one: a crash leaves the old or the new. */
int audit_checkpoint_locked(clr_audit *a, clr_error *err)
{
    char tmp[4200], final[4200];
    _cleanup_free_ char *text = NULL;
    if (checkpoint_text(&text, a, err) < 0)
        return -1;
    audit_side_path(tmp, sizeof(tmp), a->path, "checkpoint.tmp");
    audit_side_path(final, sizeof(final), a->path, "checkpoint");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(text);
    int e = 0;
    if (fd < 0 || audit_write_all(fd, text, len) < 0 || audit_write_all(fd, "\n", 1) < 0 ||
        fsync(fd) < 0)
        e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (!e && rename(tmp, final) < 0)
        e = errno;
    if (!e)
        audit_fsync_dir_of(final);
    if (!e && a->syslog)
        syslog(LOG_INFO | LOG_AUTHPRIV, "checkpoint %s", text);
    if (e) {
        unlink(tmp);
        return clr_error_set(err, CLR_E_UNAVAILABLE, e, "cannot write the audit checkpoint %s: %s",
                             final, strerror(e));
    }
    a->uncheckpointed = false;
    a->checkpoint_at_ms = audit_mono_ms();
    return 0;
}

/* Reads the key at path.key, or makes one (32 random bytes, 0600) if there is none. */
int audit_load_key(clr_audit *a, clr_error *err)
{
    char kp[4200];
    audit_side_path(kp, sizeof(kp), a->path, "key");
    _cleanup_close_ int fd = open(kp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        /* Made whole under a name of its own, then linked into place: a writer opening the
         * log at the same time reads the whole key or makes its own, never a part of one. */
        unsigned char k[AUDIT_KEY_BYTES];
        if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k))
            return clr_error_set(err, CLR_E_INTERNAL, errno, "getrandom: %s", strerror(errno));
        char tmp[4300];
        snprintf(tmp, sizeof(tmp), "%s.%d.%02x%02x", kp, (int)getpid(), k[0], k[1]);
        int wfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        int e = wfd < 0 ? errno : 0;
        if (wfd >= 0) {
            if (audit_write_all(wfd, (const char *)k, sizeof(k)) < 0 || fsync(wfd) < 0)
                e = errno;
            close(wfd);
            if (!e && link(tmp, kp) < 0 && errno != EEXIST)
                e = errno;
            unlink(tmp);
            if (!e)
                audit_fsync_dir_of(kp);
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
    if (n != (ssize_t)sizeof(a->key))
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                             "the audit key %s is not %d bytes: restore it from a backup (it "
                             "signs the checkpoints that show a truncated log)",
                             kp, AUDIT_KEY_BYTES);
    return 0;
}

