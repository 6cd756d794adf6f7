/* The audit log's format on disk (see audit_internal.h): the hash that chains records, the MAC
 * that signs a checkpoint, the names of the log's files. Shared by the writer and the verifier;
 * calls neither. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "audit_internal.h"

void audit_hex(char *out, const unsigned char *d, size_t n)
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
    json_auto_t *copy = json_copy(record);
    if (!copy)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    json_object_del(copy, "hash");
    const char *prev = json_string_value(json_object_get(copy, "prev"));
    _cleanup_free_ char *body = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!body || !prev)
        return clr_error_set(err, CLR_E_INVALID, 0, "record has no prev field");
    unsigned char d[32];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, prev, strlen(prev)) && EVP_DigestUpdate(ctx, "\n", 1) &&
             EVP_DigestUpdate(ctx, body, strlen(body)) && EVP_DigestFinal_ex(ctx, d, &n);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "SHA-256 failed");
    audit_hex(out, d, 32);
    return 0;
}

void audit_timestamp(char *out, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%06ldZ", (long)tv.tv_usec);
}

void audit_side_path(char *out, size_t len, const char *path, const char *suffix)
{
    snprintf(out, len, "%s.%s", path, suffix);
}

/* The MAC of a checkpoint: HMAC-SHA256 under the key over the magic, seq, hash and time. */
int audit_checkpoint_mac(char out[65], const unsigned char *key, uint64_t seq, const char *hash,
                         const char *ts)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), AUDIT_CHECKPOINT_MAGIC "\n%" PRIu64 "\n%s\n%s\n", seq, hash,
                     ts);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (n < 0 || (size_t)n >= sizeof(msg) ||
        !HMAC(EVP_sha256(), key, AUDIT_KEY_BYTES, (const unsigned char *)msg, (size_t)n, d, &dl) ||
        dl != 32)
        return -1;
    audit_hex(out, d, 32);
    return 0;
}

int audit_checkpoint_statement(char *out, size_t len, uint64_t seq, const char *hash,
                               const char *ts)
{
    int n = snprintf(out, len, AUDIT_CHECKPOINT_V2 "\nseq %" PRIu64 "\nhash %s\nts %s\n", seq,
                     hash, ts);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int audit_fsync_dir_of(const char *path)
{
    char dirbuf[4200];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    _cleanup_close_ int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    return fsync(dfd);
}

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
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!v || !d) {
        free(v);
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot list %s, the audit log's directory: %s", dir,
                             strerror(errno));
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
