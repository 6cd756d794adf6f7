/* src/http_range.c: the single byte range of a Range header, cut to the body; the headers it
 * ignores (whole body) and those no byte of the body satisfies (416). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http_range.h"

static void expect_ok(const char *h, uint64_t size, uint64_t first, uint64_t last)
{
    uint64_t f = 99, l = 99;
    if (http_range_parse(h, size, &f, &l) != HTTP_RANGE_OK || f != first || l != last)
        fail_msg("%s of %llu: %llu-%llu, expected %llu-%llu", h, (unsigned long long)size,
                 (unsigned long long)f, (unsigned long long)l, (unsigned long long)first,
                 (unsigned long long)last);
}

static void expect(const char *h, uint64_t size, enum http_range want)
{
    uint64_t f = 0, l = 0;
    if (http_range_parse(h, size, &f, &l) != want)
        fail_msg("%s of %llu: not %d", h ? h : "(none)", (unsigned long long)size, (int)want);
}

static void test_ranges_served(void **state)
{
    (void)state;
    expect_ok("bytes=0-9", 100, 0, 9);
    expect_ok("bytes=10-10", 100, 10, 10);
    expect_ok("bytes=90-", 100, 90, 99);
    expect_ok("bytes=90-1000", 100, 90, 99); /* cut to the last byte */
    expect_ok("bytes=-10", 100, 90, 99);
    expect_ok("bytes=-1000", 100, 0, 99);
    expect_ok("BYTES= 5-6 ", 100, 5, 6);
    expect_ok("bytes=0-18446744073709551615", 3, 0, 2);
}

static void test_ranges_ignored(void **state)
{
    (void)state;
    expect(NULL, 100, HTTP_RANGE_NONE);
    expect("", 100, HTTP_RANGE_NONE);
    expect("items=0-9", 100, HTTP_RANGE_NONE);
    expect("bytes=0-9,20-29", 100, HTTP_RANGE_NONE);
    expect("bytes=9-0", 100, HTTP_RANGE_NONE);
    expect("bytes=-", 100, HTTP_RANGE_NONE);
    expect("bytes=a-b", 100, HTTP_RANGE_NONE);
    expect("bytes=1", 100, HTTP_RANGE_NONE);
    expect("bytes=+1-2", 100, HTTP_RANGE_NONE);
    expect("bytes=99999999999999999999-", 100, HTTP_RANGE_NONE);
}

static void test_ranges_unsatisfiable(void **state)
{
    (void)state;
    expect("bytes=100-", 100, HTTP_RANGE_UNSATISFIABLE);
    expect("bytes=100-200", 100, HTTP_RANGE_UNSATISFIABLE);
    expect("bytes=-0", 100, HTTP_RANGE_UNSATISFIABLE);
    expect("bytes=0-", 0, HTTP_RANGE_UNSATISFIABLE);
    expect("bytes=-5", 0, HTTP_RANGE_UNSATISFIABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_served),
        cmocka_unit_test(test_ranges_ignored),
        cmocka_unit_test(test_ranges_unsatisfiable),
    };
    return cmocka_run_group_tests_name("http_range", tests, NULL, NULL);
}
