/* lib/service/ring.c: the newest bytes of an endless stream by offset, across the wrap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "service/ring.h"

/* Reads from offset from and checks the bytes, their count and what was dropped. */
static void expect_read(const struct svc_ring *r, uint64_t from, const char *want,
                        uint64_t dropped)
{
    size_t len = 99;
    uint64_t d = 99;
    uint8_t *got = svc_ring_read(r, from, &len, &d);
    assert_int_equal(len, strlen(want));
    assert_int_equal(d, dropped);
    if (len)
        assert_memory_equal(got, want, len);
    free(got);
}

static void test_fills_then_keeps_the_newest(void **state)
{
    (void)state;
    struct svc_ring r;
    svc_ring_init(&r, 8);
    expect_read(&r, 0, "", 0); /* empty: nothing, nothing dropped */
    svc_ring_append(&r, (const uint8_t *)"abcde", 5);
    assert_int_equal(svc_ring_end(&r), 5);
    expect_read(&r, 0, "abcde", 0);
    expect_read(&r, 3, "de", 0);
    /* Past the cap: the oldest go, the offsets go on; the newest wrap around the end. */
    svc_ring_append(&r, (const uint8_t *)"fghij", 5);
    assert_int_equal(svc_ring_end(&r), 10);
    expect_read(&r, 0, "cdefghij", 2);
    expect_read(&r, 5, "fghij", 0);
    svc_ring_append(&r, (const uint8_t *)"klm", 3);
    expect_read(&r, 0, "fghijklm", 5);
    expect_read(&r, 9, "jklm", 0);
    expect_read(&r, 13, "", 0); /* at the end */
    expect_read(&r, 50, "", 0); /* past it */
    svc_ring_free(&r);
}

static void test_an_append_larger_than_the_ring(void **state)
{
    (void)state;
    struct svc_ring r;
    svc_ring_init(&r, 4);
    svc_ring_append(&r, (const uint8_t *)"xy", 2);
    svc_ring_append(&r, (const uint8_t *)"0123456789", 10);
    assert_int_equal(svc_ring_end(&r), 12);
    expect_read(&r, 0, "6789", 8);
    svc_ring_append(&r, (const uint8_t *)"A", 1); /* and the wrap after it */
    expect_read(&r, 0, "789A", 9);
    svc_ring_free(&r);
}

/* A million single bytes through a 1 KiB ring: it holds their last KiB in order, and the
 * offsets count them all. */
static void test_many_small_appends(void **state)
{
    (void)state;
    struct svc_ring r;
    svc_ring_init(&r, 1024);
    for (unsigned i = 0; i < 1000000; i++) {
        uint8_t b = (uint8_t)('a' + i % 26);
        svc_ring_append(&r, &b, 1);
    }
    assert_int_equal(svc_ring_end(&r), 1000000);
    size_t len = 0;
    uint64_t d = 0;
    uint8_t *got = svc_ring_read(&r, 0, &len, &d);
    assert_int_equal(len, 1024);
    assert_int_equal(d, 1000000 - 1024);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(got[i], 'a' + (1000000 - 1024 + i) % 26);
    free(got);
    svc_ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fills_then_keeps_the_newest),
        cmocka_unit_test(test_an_append_larger_than_the_ring),
        cmocka_unit_test(test_many_small_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
