/* Signed verdicts: the statement a plan's commit carries, its Ed25519 signature, and the check
 * of both from the commit alone (see include/clearing/verdict.h). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>

#include "clearing/verdict.h"
#include "internal.h"

#define STATEMENT_HEADER "clearing-verdict-v1\n"
#define SIGNATURE_KEY "Clearing-Signature"
#define ED25519_SIG_BYTES 64
#define ED25519_PUB_BYTES 32

struct clr_verdict_key {
    EVP_PKEY *pkey;
    char id[CLR_VERDICT_KEY_ID_SIZE];
};

void clr_sha256_hex(char out[65], const void *data, size_t len)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(data, len, d, &n, EVP_sha256(), NULL) || n != 32) {
        memset(out, '0', 64); /* unreachable with a working libcrypto */
        out[64] = '\0';
        return;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int key_id(char out[CLR_VERDICT_KEY_ID_SIZE], EVP_PKEY *pkey, clr_error *err)
{
    unsigned char raw[ED25519_PUB_BYTES];
    size_t n = sizeof(raw);
    if (EVP_PKEY_get_raw_public_key(pkey, raw, &n) != 1 || n != sizeof(raw))
        return clr_error_set(err, CLR_E_INVALID, 0, "the key is not an Ed25519 key");
    char hex[65];
    clr_sha256_hex(hex, raw, n);
    memcpy(out, hex, CLR_VERDICT_KEY_ID_SIZE - 1);
    out[CLR_VERDICT_KEY_ID_SIZE - 1] = '\0';
    return 0;
}

CLR_DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)
#define _cleanup_pkey_ __attribute__((cleanup(EVP_PKEY_freep)))

/* The private key at path, created with O_EXCL (two daemons racing make one key), synced. */
static int write_private_key(const char *path, EVP_PKEY *pkey, clr_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, e, "creating the verdict key %s: %s", path,
                             strerror(e));
    }
    bool ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        unlink(path);
        return clr_error_set(err, CLR_E_INTERNAL, EIO, "writing the verdict key %s failed", path);
    }
    return 0;
}

/* The public key at pub, written to a temporary file and renamed into place. */
static int write_public_key(const char *pub, EVP_PKEY *pkey, clr_error *err)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", pub);
    FILE *f = fopen(tmp, "we");
    bool ok = f && PEM_write_PUBKEY(f, pkey) == 1;
    ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = f && fclose(f) == 0 && ok;
    if (!ok || chmod(tmp, 0644) < 0 || rename(tmp, pub) < 0) {
        unlink(tmp);
        return clr_error_set(err, CLR_E_INTERNAL, EIO, "writing the public key %s failed", pub);
    }
    return 0;
}

/* Writes the new key pair: the private key at path, the public key beside it (path.pub). */
static int create_key(const char *path, clr_error *err)
{
    _cleanup_pkey_ EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pkey)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "making an Ed25519 key failed");
    char pub[PATH_MAX];
    snprintf(pub, sizeof(pub), "%s.pub", path);
    if (write_private_key(path, pkey, err) < 0 || write_public_key(pub, pkey, err) < 0)
        return -1;
    return 0;
}

int clr_verdict_key_load(clr_verdict_key **out, const char *path, bool create, bool *created,
                         clr_error *err)
{
    *out = NULL;
    if (created)
        *created = false;
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno != ENOENT || !create)
            return clr_error_set(err, errno == ENOENT ? CLR_E_NOT_FOUND : CLR_E_INTERNAL, errno,
                                 "the verdict key %s: %s", path, strerror(errno));
        clr_error cerr = CLR_ERROR_INIT;
        if (create_key(path, &cerr) == 0) {
            if (created)
                *created = true;
        } else if (cerr.errnum != EEXIST) { /* EEXIST: another process made it meanwhile */
            if (err)
                *err = cerr;
            return -1;
        }
        if (lstat(path, &st) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "the verdict key %s: %s", path,
                                 strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return clr_error_set(err, CLR_E_DENIED, 0,
                             "the verdict key %s is not a regular file (a link is not taken)",
                             path);
    if (st.st_mode & 077)
        return clr_error_set(err, CLR_E_DENIED, 0,
                             "the verdict key %s is readable by others (mode %03o): it signs "
                             "verdicts; chmod 600 it, or move it aside to have a new one made",
                             path, (unsigned)(st.st_mode & 0777));
    FILE *f = fopen(path, "re");
    if (!f)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "the verdict key %s: %s", path,
                             strerror(errno));
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(pkey);
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the verdict key %s is not an Ed25519 private key in PEM", path);
    }
    clr_verdict_key *k = calloc(1, sizeof(*k));
    if (!k) {
        EVP_PKEY_free(pkey);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    k->pkey = pkey;
    if (key_id(k->id, pkey, err) < 0) {
        clr_verdict_key_free(k);
        return -1;
    }
    *out = k;
    return 0;
}

void clr_verdict_key_default_path(char *out, size_t len, const char *state_dir)
{
    snprintf(out, len, "%s/verdict.key", clr_state_dir(state_dir));
}

void clr_verdict_key_free(clr_verdict_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

const char *clr_verdict_key_id(const clr_verdict_key *k)
{
    return k->id;
}

static bool signed_trailer(const char *t)
{
    return !strncmp(t, "Clearing-", 9) &&
           strncmp(t, SIGNATURE_KEY ":", sizeof(SIGNATURE_KEY)) != 0;
}

int clr_verdict_statement(char **out, const char *tree_hex, const char *parent_hex,
                          const char *const *trailers, clr_error *err)
{
    *out = NULL;
    size_t len = strlen(STATEMENT_HEADER) + 128;
    for (const char *const *t = trailers; t && *t; t++) {
        if (strchr(*t, '\n'))
            return clr_error_set(err, CLR_E_INVALID, 0, "a trailer holds a newline");
        if (signed_trailer(*t))
            len += strlen(*t) + 1;
    }
    char *s = malloc(len);
    if (!s)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    int n = snprintf(s, len, STATEMENT_HEADER "tree %s\nparent %s\n", tree_hex,
                     parent_hex && *parent_hex ? parent_hex : "none");
    size_t at = (size_t)n;
    for (const char *const *t = trailers; t && *t; t++) {
        if (!signed_trailer(*t))
            continue;
        size_t l = strlen(*t);
        memcpy(s + at, *t, l);
        s[at + l] = '\n';
        at += l + 1;
    }
    s[at] = '\0';
    *out = s;
    return 0;
}

int clr_verdict_sign_data(char b64[CLR_VERDICT_SIG_B64_SIZE], const clr_verdict_key *k,
                          const void *data, size_t len, clr_error *err)
{
    unsigned char sig[ED25519_SIG_BYTES];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
              EVP_DigestSign(ctx, sig, &siglen, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok || siglen != sizeof(sig))
        return clr_error_set(err, CLR_E_INTERNAL, 0, "signing with the Ed25519 key %s failed",
                             k->id);
    EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
    return 0;
}

int clr_verdict_sign(char *line, size_t len, const clr_verdict_key *k, const char *statement,
                     clr_error *err)
{
    char b64[CLR_VERDICT_SIG_B64_SIZE];
    if (clr_verdict_sign_data(b64, k, statement, strlen(statement), err) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "signing the verdict failed");
    int n = snprintf(line, len, SIGNATURE_KEY ": ed25519 %s %s", k->id, b64);
    if (n < 0 || (size_t)n >= len)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "the signature line does not fit");
    return 0;
}

void clr_verdict_check_clear(clr_verdict_check *c)
{
    if (!c)
        return;
    free(c->statement);
    memset(c, 0, sizeof(*c));
}

static int load_pubkey(EVP_PKEY **out, const char *path, clr_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return clr_error_set(err, CLR_E_NOT_FOUND, errno, "the public key %s: %s", path,
                             strerror(errno));
    EVP_PKEY *p = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!p || EVP_PKEY_get_base_id(p) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(p);
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "%s is not an Ed25519 public key in PEM (the verdict key's .pub)",
                             path);
    }
    *out = p;
    return 0;
}

/* 1 when sig is pub's signature of data, 0 when it is not, -1 when it cannot be checked. */
static int ed25519_check(EVP_PKEY *pub, const unsigned char sig[ED25519_SIG_BYTES],
                         const void *data, size_t len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int v = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) == 1
                ? EVP_DigestVerify(ctx, sig, ED25519_SIG_BYTES, data, len)
                : -1;
    EVP_MD_CTX_free(ctx);
    return v == 1 ? 1 : v == 0 ? 0 : -1;
}

/* 88 base64 digits into the 64 bytes of a signature. */
static int decode_signature(unsigned char sig[ED25519_SIG_BYTES], const char *b64)
{
    unsigned char raw[66];
    if (strlen(b64) != 88 || EVP_DecodeBlock(raw, (const unsigned char *)b64, 88) != 66)
        return -1;
    memcpy(sig, raw, ED25519_SIG_BYTES); /* 88 base64 digits: 64 bytes and two of padding */
    return 0;
}

int clr_verdict_verify_data(const char *pubkey_path, const void *data, size_t len,
                            const char *b64, char *key_id_out, clr_error *err)
{
    _cleanup_pkey_ EVP_PKEY *pub = NULL;
    if (load_pubkey(&pub, pubkey_path, err) < 0)
        return -1;
    char id[CLR_VERDICT_KEY_ID_SIZE];
    if (key_id(id, pub, err) < 0)
        return -1;
    if (key_id_out)
        memcpy(key_id_out, id, sizeof(id));
    unsigned char sig[ED25519_SIG_BYTES];
    if (!b64 || decode_signature(sig, b64) < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the signature is not the base64 of an Ed25519 signature");
    if (ed25519_check(pub, sig, data, len) != 1)
        return clr_error_set(err, CLR_E_DENIED, 0,
                             "the signature does not match: not signed by key %s, or changed "
                             "after signing",
                             id);
    return 0;
}

/* "ed25519 KEYID BASE64" into the key id and the raw signature. */
static int parse_signature(const char *v, char id[CLR_VERDICT_KEY_ID_SIZE],
                           unsigned char sig[ED25519_SIG_BYTES], clr_error *err)
{
    char b64[128];
    if (sscanf(v, "ed25519 %16[0-9a-f] %127s", id, b64) != 2 ||
        strlen(id) != CLR_VERDICT_KEY_ID_SIZE - 1 || strlen(b64) != 88)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the Clearing-Signature trailer is malformed (want \"ed25519 KEYID "
                             "BASE64\")");
    if (decode_signature(sig, b64) < 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "the signature is not base64");
    return 0;
}

/* The commit's trailer block as "Key: value" strings (NULL-terminated; *sig_value the
 * signature's value, or NULL). */
static int commit_trailers(char ***out, const char **sig_value, git_message_trailer_array *arr,
                           const char *message, clr_error *err)
{
    *out = NULL;
    *sig_value = NULL;
    if (git_message_trailers(arr, message) < 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "the commit message's trailers are unreadable");
    char **v = calloc(arr->count + 1, sizeof(*v));
    if (!v)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < arr->count; i++) {
        const git_message_trailer *t = &arr->trailers[i];
        if (!strcmp(t->key, SIGNATURE_KEY)) {
            if (*sig_value) {
                for (size_t j = 0; j < i; j++)
                    free(v[j]);
                free(v);
                return clr_error_set(err, CLR_E_INVALID, 0, "the commit has two signatures");
            }
            *sig_value = t->value;
        }
        if (asprintf(&v[i], "%s: %s", t->key, t->value) < 0) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
    }
    *out = v;
    return 0;
}

static void free_strings(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static int check_statement(clr_verdict_check *out, EVP_PKEY *pub, git_commit *commit,
                           clr_error *err)
{
    git_message_trailer_array arr = {0};
    char **trailers = NULL;
    const char *sigv = NULL;
    int rc = commit_trailers(&trailers, &sigv, &arr, git_commit_message(commit), err);
    if (rc == 0 && !sigv)
        rc = clr_error_set(err, CLR_E_INVALID, 0,
                           "commit %.12s has no Clearing-Signature: it carries no signed verdict",
                           out->commit);
    unsigned char sig[ED25519_SIG_BYTES];
    char tree[41], parent[41] = "";
    if (rc == 0)
        rc = parse_signature(sigv, out->key_id, sig, err);
    char want_id[CLR_VERDICT_KEY_ID_SIZE];
    if (rc == 0 && key_id(want_id, pub, err) == 0 && strcmp(want_id, out->key_id) != 0)
        rc = clr_error_set(err, CLR_E_INVALID, 0,
                           "commit %.12s was signed by key %s, not by this public key (%s)",
                           out->commit, out->key_id, want_id);
    if (rc == 0) {
        git_oid_tostr(tree, sizeof(tree), git_commit_tree_id(commit));
        if (git_commit_parentcount(commit) > 0)
            git_oid_tostr(parent, sizeof(parent), git_commit_parent_id(commit, 0));
        for (size_t i = 0; trailers[i]; i++)
            if (!strncmp(trailers[i], "Clearing-Verdict: ", 18))
                snprintf(out->verdict, sizeof(out->verdict), "%s", trailers[i] + 18);
        rc = clr_verdict_statement(&out->statement, tree, parent,
                                   (const char *const *)trailers, err);
    }
    if (rc == 0) {
        if (ed25519_check(pub, sig, out->statement, strlen(out->statement)) != 1)
            rc = clr_error_set(err, CLR_E_DENIED, 0,
                               "BAD signature on commit %.12s: its files, parent or Clearing "
                               "trailers were changed after clearing signed it",
                               out->commit);
    }
    free_strings(trailers);
    git_message_trailer_array_free(&arr);
    return rc;
}

int clr_verdict_verify(clr_verdict_check *out, const char *repo_path, const char *rev,
                       const char *pubkey_path, clr_error *err)
{
    memset(out, 0, sizeof(*out));
    EVP_PKEY *pub = NULL;
    if (load_pubkey(&pub, pubkey_path, err) < 0)
        return -1;
    git_libgit2_init();
    git_repository *repo = NULL;
    git_object *obj = NULL;
    git_commit *commit = NULL;
    int rc = -1;
    if (git_repository_open_ext(&repo, repo_path, 0, NULL) < 0) {
        clr_error_set(err, CLR_E_NOT_FOUND, 0, "%s is not in a git repository", repo_path);
    } else if (git_revparse_single(&obj, repo, rev) < 0 ||
               git_object_peel((git_object **)&commit, obj, GIT_OBJECT_COMMIT) < 0) {
        clr_error_set(err, CLR_E_NOT_FOUND, 0, "%s does not name a commit in %s", rev,
                      repo_path);
    } else {
        git_oid_tostr(out->commit, sizeof(out->commit), git_commit_id(commit));
        rc = check_statement(out, pub, commit, err);
    }
    git_commit_free(commit);
    git_object_free(obj);
    git_repository_free(repo);
    git_libgit2_shutdown();
    EVP_PKEY_free(pub);
    return rc;
}
