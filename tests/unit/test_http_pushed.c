/* The pushed body of the streamed answers (src/http_pushed.c): what is pushed is read in order,
 * and a reader that falls more than HTTP_PUSHED_MAX behind gets what was queued, then the
 * body's overflow words, then its end; the pusher's later bytes are dropped, not held. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_pushed.h"

static const char heartbeat[] = "HB\n";
static const char overflow[] = "OVERFLOW\n";

/* Everything the reader gives until the end, as one buffer (*len bytes). */
static char *read_all(struct http_pushed *p, size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    for (;;) {
        if (cap - n < (1 << 16)) {
            cap *= 2;
            all = realloc(all, cap);
            assert_non_null(all);
        }
        ssize_t r = http_pushed_read(p, all + n, 1 << 16);
        if (r == MHD_CONTENT_READER_END_OF_STREAM)
            break;
        assert_true(r >= 0);
        n += (size_t)r;
    }
    *len = n;
    return all;
}

static void test_in_order(void **state)
{
    (void)state;
    struct http_pushed *p = http_pushed_new(heartbeat, overflow);
    assert_non_null(p);
    assert_true(http_pushed_write(p, "one\n", 4));
    assert_true(http_pushed_write(p, "two\n", 4));
    http_pushed_end(p);
    size_t n;
    char *all = read_all(p, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(all, "one\ntwo\n", 8);
    assert_int_equal(*http_pushed_gone(p), 0);
    free(all);
    http_pushed_unref(p);
}

enum { CHUNK = 1 << 20 };

static char *filled(size_t n, char c)
{
    char *d = malloc(n);
    assert_non_null(d);
    memset(d, c, n);
    return d;
}

static void test_bounded(void **state)
{
    (void)state;
    struct http_pushed *p = http_pushed_new(heartbeat, overflow);
    assert_non_null(p);
    char *chunk = filled(CHUNK, 'x');
    /* Nothing is read while twice the bound is pushed: what fits is kept (each chunk's own
     * cost counted too), the rest is dropped. */
    for (size_t i = 0; i < 2 * (HTTP_PUSHED_MAX / CHUNK); i++)
        (void)http_pushed_write(p, chunk, CHUNK);
    assert_int_equal(*http_pushed_gone(p), 1); /* a plan's stream takes it as its cancel */
    /* The body ended with the overflow: later lines are dropped (the overflow stays last). */
    (void)http_pushed_write(p, "late\n", 5);
    (void)http_pushed_write_last(p, "last\n", 5);
    http_pushed_end(p);
    size_t n;
    char *all = read_all(p, &n);
    size_t tail = strlen(overflow), kept = n - tail;
    assert_true(n > tail);
    assert_memory_equal(all + kept, overflow, tail);
    /* The control of the bound: all but a chunk's worth of it was sent, whole chunks. */
    assert_int_equal(kept % CHUNK, 0);
    assert_true(kept <= HTTP_PUSHED_MAX && kept >= HTTP_PUSHED_MAX - CHUNK);
    assert_int_equal(all[0], 'x');
    assert_int_equal(all[kept - 1], 'x');
    free(all);
    free(chunk);
    http_pushed_unref(p);
}

static void test_one_line_larger_than_the_bound(void **state)
{
    (void)state;
    /* A line alone larger than the bound (an exec's record with 64 MiB of output) reaches the
     * reader whole; so does a last line however much waits before it. */
    size_t big = HTTP_PUSHED_MAX + 100;
    char *line = filled(big, 'L');
    struct http_pushed *p = http_pushed_new(heartbeat, overflow);
    assert_non_null(p);
    assert_true(http_pushed_write(p, line, big));
    assert_true(http_pushed_write_last(p, line, big));
    http_pushed_end(p);
    size_t n;
    char *all = read_all(p, &n);
    assert_int_equal(n, 2 * big);
    assert_int_equal(all[2 * big - 1], 'L');
    assert_int_equal(*http_pushed_gone(p), 0);
    free(all);
    http_pushed_unref(p);
    free(line);
}

static void test_without_overflow_words(void **state)
{
    (void)state;
    /* A body without overflow words (MCP's SSE) drops only what does not fit and goes on:
     * its last line (a response) still comes. */
    struct http_pushed *p = http_pushed_new(heartbeat, NULL);
    assert_non_null(p);
    char *chunk = filled(CHUNK, 'n');
    size_t dropped = 0;
    for (size_t i = 0; i < 2 * (HTTP_PUSHED_MAX / CHUNK); i++)
        dropped += !http_pushed_write(p, chunk, CHUNK);
    assert_true(dropped >= HTTP_PUSHED_MAX / CHUNK);
    assert_true(http_pushed_write_last(p, "response\n", 9));
    assert_int_equal(*http_pushed_gone(p), 0);
    http_pushed_end(p);
    size_t n;
    char *all = read_all(p, &n);
    assert_true(n > 9 && n - 9 <= HTTP_PUSHED_MAX);
    assert_memory_equal(all + n - 9, "response\n", 9);
    free(all);
    free(chunk);
    http_pushed_unref(p);
}

static void test_reading_keeps_room(void **state)
{
    (void)state;
    /* A reader that keeps up is never cut, however much goes through. */
    struct http_pushed *p = http_pushed_new(heartbeat, overflow);
    assert_non_null(p);
    char *chunk = filled(CHUNK, 'y'), *buf = filled(CHUNK, 0);
    size_t got = 0;
    for (size_t i = 0; i < 3 * (HTTP_PUSHED_MAX / CHUNK); i++) {
        assert_true(http_pushed_write(p, chunk, CHUNK));
        for (size_t left = CHUNK; left > 0;) {
            ssize_t r = http_pushed_read(p, buf, left);
            assert_true(r > 0);
            left -= (size_t)r;
            got += (size_t)r;
        }
    }
    http_pushed_end(p);
    assert_int_equal(http_pushed_read(p, buf, CHUNK), MHD_CONTENT_READER_END_OF_STREAM);
    assert_int_equal(got, 3 * (HTTP_PUSHED_MAX / CHUNK) * (size_t)CHUNK);
    assert_int_equal(*http_pushed_gone(p), 0);
    free(buf);
    free(chunk);
    http_pushed_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_one_line_larger_than_the_bound),
        cmocka_unit_test(test_without_overflow_words),
        cmocka_unit_test(test_reading_keeps_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
