/* Verification of the audit log (see include/clearing/audit.h): walks a chain of files record by
 * record and names the first fault (an edited, deleted, inserted or reordered record, a file
 * that ends inside one), then checks the signed checkpoint (its Ed25519 signature with the public
 * key, or a v1 one's HMAC) against the chain (a log cut short).
 * Reads only; shares the format (audit_format.c) with the writer, never calls it. */
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "audit_internal.h"
#include "clearing/verdict.h"

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
    json_auto_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j))
        return bad(r, file, lineno, *prev_seq + 1, "not a JSON record (edited or truncated)");
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
    char prev_hash[65] = AUDIT_GENESIS;
    uint64_t prev_seq = 0;
    bool first = true;
    for (size_t f = 0; f < nfiles && r->ok; f++) {
        _cleanup_fclose_ FILE *fp = fopen(files[f], "re");
        if (!fp)
            return clr_error_set(err, CLR_E_NOT_FOUND, errno, "cannot read %s: %s", files[f],
                                 strerror(errno));
        _cleanup_free_ char *line = NULL;
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
                json_auto_t *j = json_loadb(line, (size_t)n - 1, 0, NULL);
                const char *p = json_string_value(json_object_get(j, "prev"));
                if (p && json_is_integer(json_object_get(j, "seq"))) {
                    snprintf(prev_hash, sizeof(prev_hash), "%s", p);
                    prev_seq = (uint64_t)json_integer_value(json_object_get(j, "seq")) - 1;
                }
            }
            first = false;
            if (check_line(r, files[f], lineno, line, (size_t)n - 1, prev_hash, &prev_seq) &&
                r->last_seq == probe_seq)
                snprintf(probe_hash, 65, "%s", r->last_hash);
        }
    }
    return 0;
}

int clr_audit_verify(clr_audit_verify_report *r, const char *const *files, size_t nfiles,
                     bool allow_partial, clr_error *err)
{
    char unused[65];
    return verify_files(r, files, nfiles, allow_partial, 0, unused, err);
}

/* A v1 checkpoint's MAC, checked with path.key: 0, -1 with r filled when it does not match, or
 * -1 with err when the key cannot be read. */
static int check_mac(clr_audit_verify_report *r, const char *path, const char *cp, uint64_t seq,
                     const char *hash, const char *ts, const char *mac, clr_error *err)
{
    char kp[4200];
    audit_side_path(kp, sizeof(kp), path, "key");
    unsigned char key[AUDIT_KEY_BYTES];
    int fd = open(kp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t kn = fd >= 0 ? read(fd, key, sizeof(key)) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (kn != (ssize_t)sizeof(key))
        return clr_error_set(err, CLR_E_UNAVAILABLE, kn < 0 ? e : EIO,
                             "cannot read the audit key %s to check the v1 (HMAC) checkpoint %s: "
                             "%s",
                             kp, cp, kn < 0 ? strerror(e) : "not 32 bytes");
    char want[65];
    bool ok = audit_checkpoint_mac(want, key, seq, hash, ts) == 0 && strlen(mac) == 64 &&
              CRYPTO_memcmp(want, mac, 64) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok) {
        bad(r, cp, 1, seq,
            "the checkpoint is not signed by the audit key (forged or edited, or the key was "
            "replaced)");
        return -1;
    }
    return 0;
}

/* A v2 checkpoint's Ed25519 signature, checked with the public key at pubkey: 0, -1 with r
 * filled when it is another key's or does not match, or -1 with err when there is no public key
 * to check it with. */
static int check_signature(clr_audit_verify_report *r, const char *cp, const char *pubkey,
                           uint64_t seq, const char *hash, const char *ts, const char *sig,
                           clr_error *err)
{
    if (!pubkey)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the checkpoint %s is signed by Ed25519 key %s: give its public key "
                             "(the daemon's verdict.key.pub) to check it",
                             cp, r->checkpoint_key_id);
    char stmt[256], id[17] = "";
    int n = audit_checkpoint_statement(stmt, sizeof(stmt), seq, hash, ts);
    clr_error verr = CLR_ERROR_INIT;
    int rc = n < 0 ? clr_error_set(&verr, CLR_E_INVALID, 0, "too long")
                   : clr_verdict_verify_data(pubkey, stmt, (size_t)n, sig, id, &verr);
    if (rc == 0 && strcmp(id, r->checkpoint_key_id) == 0)
        return 0;
    if (!id[0]) { /* the public key itself could not be read */
        *err = verr;
        return -1;
    }
    if (strcmp(id, r->checkpoint_key_id) != 0)
        bad(r, cp, 1, seq,
            "the checkpoint names key %s, not this public key (%s): signed elsewhere, or "
            "re-signed",
            r->checkpoint_key_id, id);
    else
        bad(r, cp, 1, seq,
            "the checkpoint's signature does not match the public key %s (forged, edited, or "
            "re-signed with another key)",
            id);
    return -1;
}

/* Reads path.checkpoint and checks its signature (v2) or MAC (v1); 1 if there is none, -1 with r
 * filled if it is bad, -1 with err alone if it cannot be checked. */
static int read_checkpoint(clr_audit_verify_report *r, const char *path, const char *pubkey,
                           uint64_t *seq, char hash[65], clr_error *err)
{
    char cp[4200];
    audit_side_path(cp, sizeof(cp), path, "checkpoint");
    json_error_t jerr;
    json_auto_t *j = json_load_file(cp, JSON_REJECT_DUPLICATES, &jerr);
    if (!j && access(cp, F_OK) < 0 && errno == ENOENT)
        return 1;
    json_t *jseq = json_object_get(j, "seq");
    const char *h = json_string_value(json_object_get(j, "hash"));
    const char *ts = json_string_value(json_object_get(j, "ts"));
    const char *mac = json_string_value(json_object_get(j, "mac"));
    const char *sig = json_string_value(json_object_get(j, "sig"));
    const char *kid = json_string_value(json_object_get(j, "key_id"));
    if (!json_is_integer(jseq) || !h || strlen(h) != 64 || !ts || strlen(ts) >= 40 ||
        !(mac || (sig && kid && strlen(kid) == 16)) || (mac && sig)) {
        bad(r, cp, 1, 0, "the checkpoint is not readable (edited or damaged)");
        return -1;
    }
    *seq = (uint64_t)json_integer_value(jseq);
    snprintf(hash, 65, "%s", h);
    snprintf(r->checkpoint_ts, sizeof(r->checkpoint_ts), "%s", ts);
    r->checkpoint_hmac = mac != NULL;
    if (mac)
        return check_mac(r, path, cp, *seq, hash, ts, mac, err);
    snprintf(r->checkpoint_key_id, sizeof(r->checkpoint_key_id), "%s", kid);
    return check_signature(r, cp, pubkey, *seq, hash, ts, sig, err);
}

int clr_audit_verify_log(clr_audit_verify_report *r, const char *path, const char *pubkey_path,
                         bool allow_partial, clr_error *err)
{
    memset(r, 0, sizeof(*r));
    uint64_t cp_seq = 0;
    char cp_hash[65] = "", at[65];
    clr_audit_verify_report cr;
    memset(&cr, 0, sizeof(cr));
    int have = read_checkpoint(&cr, path, pubkey_path, &cp_seq, cp_hash, err);
    if (have < 0 && cr.problem[0] == '\0')
        return -1; /* there is no key to check it with */
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
    snprintf(r->checkpoint_key_id, sizeof(r->checkpoint_key_id), "%s", cr.checkpoint_key_id);
    r->checkpoint_hmac = cr.checkpoint_hmac;
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

