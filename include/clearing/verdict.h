/* Signed verdicts: a plan's commit carries a statement of what judged it, signed with the
 * daemon's Ed25519 key, which anyone holding the public key can check away from the host that
 * made it (`clearing verify`, or git and openssl alone: docs/SECURITY.md).
 *
 * The statement is text, one item a line, each ending in "\n":
 *
 *     clearing-verdict-v1
 *     tree <the commit's tree id>
 *     parent <its first parent's id, or "none">
 *     <every "Clearing-*: value" trailer of the commit's trailer block but Clearing-Signature,
 *      in the order they appear>
 *
 * so it binds the files, where they were committed, and every trailer clearing wrote: the
 * verdict, the sandbox, the image and its content id (which pins every tool the checks ran),
 * the runtime and its version, the base, the gauntlet configuration's hash and where it came
 * from, and each check's status. The signature is the trailer
 * "Clearing-Signature: ed25519 <key id> <base64 signature of the statement>", the key id the
 * first 16 hex digits of the SHA-256 of the raw public key. Clients cannot write Clearing-*
 * lines (clr_commit_claims_clearing). */
#ifndef CLEARING_VERDICT_H
#define CLEARING_VERDICT_H

#include "common.h"

#define CLR_VERDICT_KEY_ID_SIZE 17 /* 16 hex digits and a NUL */

typedef struct clr_verdict_key clr_verdict_key;

/* Loads the Ed25519 private key at path (PEM, PKCS#8). With create, a missing key is made:
 * path mode 0600 (written once, O_EXCL), and its public key beside it as path + ".pub" (0644);
 * *created says so (may be NULL). An existing key file readable by group or others is refused
 * (CLR_E_DENIED): the private key is root's alone. */
CLR_PUBLIC int clr_verdict_key_load(clr_verdict_key **out, const char *path, bool create,
                                    bool *created, clr_error *err);
CLR_PUBLIC void clr_verdict_key_free(clr_verdict_key *k);
/* Where the key lives unless configured: <state dir>/verdict.key, the state directory being
 * state_dir, else $CLEARING_STATE_DIR, else the built-in one. */
CLR_PUBLIC void clr_verdict_key_default_path(char *out, size_t len, const char *state_dir);
CLR_PUBLIC const char *clr_verdict_key_id(const clr_verdict_key *k);

/* The statement above for tree, parent (NULL or "": none) and trailers ("Key: value", NULL-
 * terminated; those not starting with "Clearing-" and Clearing-Signature are left out).
 * *out is the caller's (free). */
CLR_PUBLIC int clr_verdict_statement(char **out, const char *tree_hex, const char *parent_hex,
                                     const char *const *trailers, clr_error *err);

/* The Clearing-Signature trailer line (without a newline) for statement, into line. */
CLR_PUBLIC int clr_verdict_sign(char *line, size_t len, const clr_verdict_key *k,
                                const char *statement, clr_error *err);

/* A detached signature of any bytes with the same key (the audit log's checkpoints): Ed25519
 * over exactly data, in base64 (88 digits and a NUL), so that `openssl pkeyutl -verify -rawin`
 * checks it with the public key alone. */
#define CLR_VERDICT_SIG_B64_SIZE 89
CLR_PUBLIC int clr_verdict_sign_data(char b64[CLR_VERDICT_SIG_B64_SIZE], const clr_verdict_key *k,
                                     const void *data, size_t len, clr_error *err);
/* Checks b64 (as clr_verdict_sign_data wrote it) over data against the public key in
 * pubkey_path (PEM); key_id: that key's id, filled once it is read (may be NULL). 0 when it
 * matches; -1 with CLR_E_NOT_FOUND or CLR_E_INVALID (the key cannot be read, the signature is
 * not base64 of 64 bytes) or CLR_E_DENIED (the signature does not match data). */
CLR_PUBLIC int clr_verdict_verify_data(const char *pubkey_path, const void *data, size_t len,
                                       const char *b64, char *key_id, clr_error *err);

/* What clr_verdict_verify() found. */
typedef struct clr_verdict_check {
    char commit[41];
    char key_id[CLR_VERDICT_KEY_ID_SIZE];
    char verdict[32];       /* the Clearing-Verdict value ("" if none) */
    char *statement;        /* the statement that was checked; free with _clear */
} clr_verdict_check;

CLR_PUBLIC void clr_verdict_check_clear(clr_verdict_check *c);

/* Checks the signature of commit rev (any rev-parse spec) in the repository at repo_path (a
 * work tree or git directory; enclosing directories are searched, as git does) against the
 * public key in pubkey_path (PEM). 0 when the signature is good; -1 otherwise with
 * CLR_E_NOT_FOUND (no repository, no such commit), CLR_E_INVALID (no signature, a malformed
 * one, another key than pubkey's) or CLR_E_DENIED (the signature does not match: the commit or
 * its trailers were changed after signing). *out is filled as far as it got. */
CLR_PUBLIC int clr_verdict_verify(clr_verdict_check *out, const char *repo_path, const char *rev,
                                  const char *pubkey_path, clr_error *err);

#endif
