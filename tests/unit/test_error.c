/* The one error convention: clr_error_set fills code, errno and message and returns -1; a prefix
 * keeps what it can of both texts within the message's fixed size; every code has its name (the
 * HTTP layer's "error" field). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "clearing/common.h"
#include "internal.h"

static void test_set_fills_and_returns_minus_one(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(err.code, CLR_E_NONE);
    assert_int_equal(clr_error_set(&err, CLR_E_NOT_FOUND, 2, "no sandbox %s (%d)", "sb-1", 7), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(err.errnum, 2);
    assert_string_equal(err.message, "no sandbox sb-1 (7)");
    /* No error to fill is still a failure. */
    assert_int_equal(clr_error_set(NULL, CLR_E_INVALID, 0, "x"), -1);
    assert_int_equal(clr_error_prefix(NULL, "y"), -1);
}

static void test_set_truncates_within_the_message(void **state)
{
    (void)state;
    char big[4096];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    clr_error err = CLR_ERROR_INIT;
    clr_error_set(&err, CLR_E_INVALID, 0, "%s", big);
    assert_int_equal(strlen(err.message), sizeof(err.message) - 1);
}

/* A cut never leaves half a UTF-8 character: the message goes into the API's JSON. */
static void test_cut_keeps_whole_characters(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    char big[2048];
    for (size_t off = 0; off < 3; off++) {
        /* 'a' * off, then "é" (2 bytes) and "€" (3 bytes) repeated past the message's size */
        size_t n = 0;
        for (size_t i = 0; i < off; i++)
            big[n++] = 'a';
        while (n + 5 < sizeof(big) - 1) {
            memcpy(big + n, "\xc3\xa9\xe2\x82\xac", 5);
            n += 5;
        }
        big[n] = '\0';
        clr_error_set(&err, CLR_E_INVALID, 0, "%s", big);
        size_t len = strlen(err.message);
        assert_true(len > sizeof(err.message) - 5); /* it was cut, close to the end */
        assert_memory_equal(err.message, big, len); /* a prefix of the text */
        /* ends after a whole character: the next byte of big starts one */
        assert_true(((unsigned char)big[len] & 0xC0) != 0x80);
        json_t *j = json_string(err.message);
        assert_non_null(j);
        json_decref(j);

        clr_error_set(&err, CLR_E_INVALID, 0, "cause");
        clr_error_prefix(&err, "%s", big); /* the prefix is cut at 256 bytes */
        j = json_string(err.message);
        assert_non_null(j);
        json_decref(j);
        assert_non_null(strstr(err.message, ": cause"));
    }
    /* a cut that ends on a whole character keeps it; text that never was UTF-8 stays */
    char s[] = "ab\xe2\x82\xac";
    clr_utf8_trim_cut(s);
    assert_string_equal(s, "ab\xe2\x82\xac");
    char t[] = "ab\xe2\x82";
    clr_utf8_trim_cut(t);
    assert_string_equal(t, "ab");
    char u[] = "ab\xff";
    clr_utf8_trim_cut(u);
    assert_string_equal(u, "ab\xff");
    /* a text capped at n bytes: whole when it fits, else cut before the character that
     * would cross n (a 3-byte euro sign at 2..4, a 4-byte emoji at 1..4), and at 0 nothing */
    const char *cut = "ab\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_int_equal(clr_utf8_cut_len(cut, 9, 9), 9);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 100), 9);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 2), 2);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 3), 2);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 4), 2);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 5), 5);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 8), 5);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 1), 1);
    assert_int_equal(clr_utf8_cut_len(cut, 9, 0), 0);
    assert_int_equal(clr_utf8_cut_len("\xc3\xa9", 2, 1), 0);
    /* the last resort: '?' for every byte that is not ASCII, cut at the buffer */
    char a[6];
    clr_text_ascii(a, sizeof(a), "a\xc3\xa9z\xffxyz");
    assert_string_equal(a, "a??z?");
}

static void test_prefix_keeps_both(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    clr_error_set(&err, CLR_E_CONFLICT, 0, "not running");
    assert_int_equal(clr_error_prefix(&err, "exec in %s", "sb-2"), -1);
    assert_string_equal(err.message, "exec in sb-2: not running");
    assert_int_equal(err.code, CLR_E_CONFLICT); /* the code is the cause's */

    /* A prefix longer than the message leaves room for ": " and ends in a NUL. */
    char big[2048];
    memset(big, 'p', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    clr_error_set(&err, CLR_E_INVALID, 0, "cause");
    clr_error_prefix(&err, "%s", big);
    assert_true(strlen(err.message) < sizeof(err.message));
    assert_int_equal(err.message[0], 'p');

    /* A long cause is cut, never overrun. */
    clr_error_set(&err, CLR_E_INVALID, 0, "%s", big);
    clr_error_prefix(&err, "short");
    assert_int_equal(strncmp(err.message, "short: ppp", 10), 0);
    assert_int_equal(strlen(err.message), sizeof(err.message) - 1);
}

static void test_every_code_has_a_name(void **state)
{
    (void)state;
    const struct {
        clr_error_code code;
        const char *name;
    } names[] = {
        {CLR_E_NONE, "none"},           {CLR_E_INVALID, "invalid"},
        {CLR_E_NOT_FOUND, "not_found"}, {CLR_E_CONFLICT, "conflict"},
        {CLR_E_LIMIT, "limit"},         {CLR_E_UNAVAILABLE, "unavailable"},
        {CLR_E_DENIED, "denied"},       {CLR_E_TIMEOUT, "timeout"},
        {CLR_E_ENGINE, "engine"},       {CLR_E_NO_SPACE, "no_space"},
        {CLR_E_INTERNAL, "internal"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_string_equal(clr_error_code_name(names[i].code), names[i].name);
    assert_string_equal(clr_error_code_name((clr_error_code)9999), "unknown");
    assert_non_null(clr_version());
    assert_true(strlen(clr_version()) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_fills_and_returns_minus_one),
        cmocka_unit_test(test_set_truncates_within_the_message),
        cmocka_unit_test(test_cut_keeps_whole_characters),
        cmocka_unit_test(test_prefix_keeps_both),
        cmocka_unit_test(test_every_code_has_a_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
