/* Signed verdicts: a key made and reloaded, the statement's exact text, and commits (made with
 * the library's seal, then changed with git) checked by clr_verdict_verify and by the
 * git + openssl recipe (scripts/verify-verdict.sh): a good one passes both, each change fails
 * both. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/clearing.h"
#include "clearing/verdict.h"

typedef struct fixture {
    char tmp[64];
    char key[128];
    char pub[136];
    char repo[128];
    char ws[128];
    clr_verdict_key *k;
} fixture;

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static char *sh_line(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[512];
    if (!fgets(buf, sizeof(buf), p))
        buf[0] = '\0';
    pclose(p);
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->tmp, sizeof(f->tmp), "/tmp/clr-verdict-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->key, sizeof(f->key), "%s/verdict.key", f->tmp);
    snprintf(f->pub, sizeof(f->pub), "%s.pub", f->key);
    snprintf(f->repo, sizeof(f->repo), "%s/repo", f->tmp);
    snprintf(f->ws, sizeof(f->ws), "%s/ws", f->tmp);
    assert_int_equal(sh("git init -q -b main '%s' && echo base > '%s/README' && "
                        "git -C '%s' add README && "
                        "git -C '%s' -c user.name=t -c user.email=t@t commit -qm base && "
                        "git -C '%s' branch work && mkdir '%s' && echo changed > '%s/README'",
                        f->repo, f->repo, f->repo, f->repo, f->repo, f->ws, f->ws),
                     0);
    clr_error err = CLR_ERROR_INIT;
    bool created = false;
    assert_int_equal(clr_verdict_key_load(&f->k, f->key, true, &created, &err), 0);
    assert_true(created);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    clr_verdict_key_free(f->k);
    sh("rm -rf '%s'", f->tmp);
    free(f);
    return 0;
}

static void test_key_made_once_root_only(void **state)
{
    fixture *f = *state;
    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(f->pub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(strlen(clr_verdict_key_id(f->k)), 16);
    /* Loaded again: the same key (same id), not made anew. */
    clr_verdict_key *again = NULL;
    clr_error err = CLR_ERROR_INIT;
    bool created = true;
    assert_int_equal(clr_verdict_key_load(&again, f->key, true, &created, &err), 0);
    assert_false(created);
    assert_string_equal(clr_verdict_key_id(again), clr_verdict_key_id(f->k));
    clr_verdict_key_free(again);
    /* The key id is the public key's: openssl derives the same public half. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -pubout | cmp -s - '%s' && echo same",
             f->key, f->pub);
    assert_string_equal(sh_line(cmd), "same");
    /* Readable by others: refused, naming the remedy. */
    assert_int_equal(chmod(f->key, 0644), 0);
    assert_int_equal(clr_verdict_key_load(&again, f->key, true, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_DENIED);
    assert_non_null(strstr(err.message, "chmod 600"));
    /* Missing without create: not found, nothing made. */
    char missing[200];
    snprintf(missing, sizeof(missing), "%s/none.key", f->tmp);
    assert_int_equal(clr_verdict_key_load(&again, missing, false, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(access(missing, F_OK), -1);
    /* Not a key. */
    assert_int_equal(sh("printf 'junk' > '%s' && chmod 600 '%s'", missing, missing), 0);
    assert_int_equal(clr_verdict_key_load(&again, missing, false, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
}

static void test_statement_text(void **state)
{
    (void)state;
    const char *trailers[] = {"Clearing-Sandbox: sb-0123456789abcdef", "Reviewed-by: someone",
                              "Clearing-Verdict: pass", "Clearing-Signature: ed25519 x y",
                              "Clearing-Check: lint passed required", NULL};
    char *s = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_verdict_statement(&s, "aaaa", "bbbb", trailers, &err), 0);
    assert_string_equal(s, "clearing-verdict-v1\ntree aaaa\nparent bbbb\n"
                           "Clearing-Sandbox: sb-0123456789abcdef\nClearing-Verdict: pass\n"
                           "Clearing-Check: lint passed required\n");
    free(s);
    assert_int_equal(clr_verdict_statement(&s, "aaaa", NULL, NULL, &err), 0);
    assert_string_equal(s, "clearing-verdict-v1\ntree aaaa\nparent none\n");
    free(s);
}

/* A commit on branch work made through clr_git_commit with the verdict seal. */
static int seal(char *line, size_t len, const char *tree, const char *parent,
                const char *const *trailers, void *ctx, clr_error *err)
{
    const clr_verdict_key *k = ctx;
    char *statement = NULL;
    if (clr_verdict_statement(&statement, tree, parent, trailers, err) < 0)
        return -1;
    int rc = clr_verdict_sign(line, len, k, statement, err);
    free(statement);
    return rc;
}

static void make_signed_commit(fixture *f, char commit[41])
{
    const char *trailers[] = {"Clearing-Verdict: fail", "Clearing-Check: tests failed required",
                              NULL};
    clr_git_commit_options o = CLR_GIT_COMMIT_OPTIONS_INIT;
    o.repo_path = f->repo;
    o.branch = "work";
    o.workspace_dir = f->ws;
    o.message = "A change";
    o.trailers = trailers;
    o.seal = seal;
    o.seal_ctx = f->k;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    if (clr_git_commit(&r, &o, &err) != 0)
        fail_msg("commit: %s", err.message);
    assert_true(r.changed);
    memcpy(commit, r.commit, 41);
    clr_git_commit_result_clear(&r);
}

static int recipe(const fixture *f, const char *commit)
{
    return sh("sh '%s/scripts/verify-verdict.sh' '%s' '%s' '%s' >/dev/null 2>&1", SOURCE_ROOT,
              f->pub, commit, f->repo);
}

static void assert_bad(const fixture *f, const char *commit, clr_error_code code,
                       const char *words)
{
    clr_verdict_check chk;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_verdict_verify(&chk, f->repo, commit, f->pub, &err), -1);
    clr_verdict_check_clear(&chk);
    assert_int_equal(err.code, code);
    if (!strstr(err.message, words))
        fail_msg("expected \"%s\" in: %s", words, err.message);
    assert_int_not_equal(recipe(f, commit), 0);
}

static void test_signed_commit_verifies_and_changes_do_not(void **state)
{
    fixture *f = *state;
    char commit[41];
    make_signed_commit(f, commit);
    clr_verdict_check chk;
    clr_error err = CLR_ERROR_INIT;
    if (clr_verdict_verify(&chk, f->repo, "work", f->pub, &err) != 0)
        fail_msg("verify: %s", err.message);
    assert_string_equal(chk.commit, commit);
    assert_string_equal(chk.verdict, "fail");
    assert_string_equal(chk.key_id, clr_verdict_key_id(f->k));
    assert_non_null(strstr(chk.statement, "\nClearing-Check: tests failed required\n"));
    clr_verdict_check_clear(&chk);
    assert_int_equal(recipe(f, commit), 0); /* git and openssl agree */

    char cmd[1024], forged[41];
    /* The verdict changed from fail to pass, the rest kept (signature too). */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && git cat-file commit %s | sed '1,/^$/d' | "
             "sed 's/^Clearing-Verdict: fail$/Clearing-Verdict: pass/' | "
             "git commit-tree %s^{tree} -p %s^ -F -",
             f->repo, commit, commit, commit);
    snprintf(forged, sizeof(forged), "%s", sh_line(cmd));
    assert_int_equal(strlen(forged), 40);
    assert_bad(f, forged, CLR_E_DENIED, "BAD signature");
    /* Other files (the base's tree), the same message. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && git cat-file commit %s | sed '1,/^$/d' | "
             "git commit-tree %s^^{tree} -p %s^ -F -",
             f->repo, commit, commit, commit);
    snprintf(forged, sizeof(forged), "%s", sh_line(cmd));
    assert_bad(f, forged, CLR_E_DENIED, "BAD signature");
    /* Another parent. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && git cat-file commit %s | sed '1,/^$/d' | git commit-tree %s^{tree} -F -",
             f->repo, commit, commit);
    snprintf(forged, sizeof(forged), "%s", sh_line(cmd));
    assert_bad(f, forged, CLR_E_DENIED, "BAD signature");
    /* A Clearing trailer added after signing. */
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && { git cat-file commit %s | sed '1,/^$/d'; "
             "echo 'Clearing-Check: extra passed required'; } | "
             "git commit-tree %s^{tree} -p %s^ -F -",
             f->repo, commit, commit, commit);
    snprintf(forged, sizeof(forged), "%s", sh_line(cmd));
    assert_bad(f, forged, CLR_E_DENIED, "BAD signature");
    /* No signature at all (the base commit). */
    assert_bad(f, "main", CLR_E_INVALID, "no Clearing-Signature");
    /* Another key's public half. */
    assert_int_equal(sh("openssl genpkey -algorithm ed25519 2>/dev/null | openssl pkey -pubout "
                        "> '%s.other' 2>/dev/null",
                        f->pub),
                     0);
    char other[200];
    snprintf(other, sizeof(other), "%s.other", f->pub);
    assert_int_equal(clr_verdict_verify(&chk, f->repo, commit, other, &err), -1);
    clr_verdict_check_clear(&chk);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "not by this public key"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_made_once_root_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signed_commit_verifies_and_changes_do_not, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
