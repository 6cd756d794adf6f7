/* lib/commit.c: the rule that keeps "Clearing-" lines for clearing alone. A client's commit
 * message or trailer that has such a line is refused (clr_sandbox_commit), so the check must
 * find one wherever a line starts, in any case, after any blanks, and nowhere else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clearing/clearing.h"

static void claims_found_at_any_line_start(void **state)
{
    (void)state;
    assert_true(clr_commit_claims_clearing("Clearing-Verdict: pass"));
    assert_true(clr_commit_claims_clearing("fix the parser\n\nClearing-Signature: abc\n"));
    assert_true(clr_commit_claims_clearing("clearing-sandbox: sb-1"));
    assert_true(clr_commit_claims_clearing("CLEARING-BASE: 0123"));
    assert_true(clr_commit_claims_clearing("one\n  \tClearing-Image: x"));
    assert_true(clr_commit_claims_clearing("Clearing-"));
    assert_true(clr_commit_claims_clearing("\n\nClearing-X"));
}

static void ordinary_text_is_not_a_claim(void **state)
{
    (void)state;
    assert_false(clr_commit_claims_clearing(""));
    assert_false(clr_commit_claims_clearing(NULL));
    assert_false(clr_commit_claims_clearing("fix clearing-related tests"));
    assert_false(clr_commit_claims_clearing("see Clearing-Verdict in the docs"));
    assert_false(clr_commit_claims_clearing("Clearing: no dash"));
    assert_false(clr_commit_claims_clearing("Clearin-Verdict: pass"));
    assert_false(clr_commit_claims_clearing("Signed-off-by: A <a@example.com>\n"));
    assert_false(clr_commit_claims_clearing("x\n-Clearing-Verdict: pass"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(claims_found_at_any_line_start),
        cmocka_unit_test(ordinary_text_is_not_a_claim),
    };
    return cmocka_run_group_tests_name("commit", tests, NULL, NULL);
}
