/* Demultiplexing the engine's exec stream: [stream, 0, 0, 0, size BE32] headers each followed by
 * size bytes. Output must land on the right stream byte-exact however the engine slices it, and
 * a header the engine would never write must stop the stream for good. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/engine.h"

struct sink {
    uint8_t out[4096], err[4096];
    size_t out_len, err_len;
    size_t calls;
    int bad_stream; /* a stream number other than 1 or 2 reached the callback */
    size_t stop_after_calls;
    int stop_rc;
};

static int collect(void *ctx, int stream, const uint8_t *data, size_t len)
{
    struct sink *s = ctx;
    s->calls++;
    assert_true(len > 0);
    if (stream == 1) {
        assert_true(s->out_len + len <= sizeof(s->out));
        memcpy(s->out + s->out_len, data, len);
        s->out_len += len;
    } else if (stream == 2) {
        assert_true(s->err_len + len <= sizeof(s->err));
        memcpy(s->err + s->err_len, data, len);
        s->err_len += len;
    } else {
        s->bad_stream = stream;
    }
    if (s->stop_rc && s->calls == s->stop_after_calls)
        return s->stop_rc;
    return 0;
}

static void put(uint8_t *wire, size_t *len, uint8_t stream, const void *data, uint32_t n)
{
    uint8_t *h = wire + *len;
    h[0] = stream;
    h[1] = h[2] = h[3] = 0;
    h[4] = (uint8_t)(n >> 24);
    h[5] = (uint8_t)(n >> 16);
    h[6] = (uint8_t)(n >> 8);
    h[7] = (uint8_t)n;
    if (n)
        memcpy(h + 8, data, n);
    *len += 8 + n;
}

static const uint8_t binary[] = {0x00, 0xff, 0x80, 0x00, 0x0a, 0x1b, 0xfe, 0x00};

/* stdout "hello\n" + binary, stderr "warn\n", an empty stdout frame, stdin echo, stderr "!". */
static size_t mixed_stream(uint8_t *wire)
{
    size_t len = 0;
    put(wire, &len, 1, "hello\n", 6);
    put(wire, &len, 2, "warn\n", 5);
    put(wire, &len, 1, NULL, 0);
    put(wire, &len, 0, "typed by the user", 17);
    put(wire, &len, 1, binary, sizeof(binary));
    put(wire, &len, 2, "!", 1);
    return len;
}

static void check_mixed(const struct sink *s)
{
    assert_int_equal(s->bad_stream, 0);
    assert_int_equal(s->out_len, 6 + sizeof(binary));
    assert_memory_equal(s->out, "hello\n", 6);
    assert_memory_equal(s->out + 6, binary, sizeof(binary));
    assert_int_equal(s->err_len, 6);
    assert_memory_equal(s->err, "warn\n!", 6);
}

static void test_demux_separates_stdout_and_stderr(void **state)
{
    (void)state;
    uint8_t wire[256];
    size_t len = mixed_stream(wire);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), 0);
    check_mixed(&s);
}

static void test_demux_one_byte_at_a_time_is_identical(void **state)
{
    (void)state;
    uint8_t wire[256];
    size_t len = mixed_stream(wire);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(clr_demux_feed(&d, wire + i, 1, collect, &s), 0);
    check_mixed(&s);
}

static void test_demux_every_split_point_is_identical(void **state)
{
    (void)state;
    uint8_t wire[256];
    size_t len = mixed_stream(wire);
    for (size_t cut = 0; cut <= len; cut++) {
        clr_demux d;
        struct sink s = {0};
        clr_demux_init(&d);
        assert_int_equal(clr_demux_feed(&d, wire, cut, collect, &s), 0);
        assert_int_equal(clr_demux_feed(&d, wire + cut, len - cut, collect, &s), 0);
        check_mixed(&s);
    }
}

static void test_demux_binary_bytes_exact(void **state)
{
    (void)state;
    uint8_t all[256];
    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (uint8_t)i;
    uint8_t wire[600];
    size_t len = 0;
    put(wire, &len, 1, all, sizeof(all));
    put(wire, &len, 2, all, sizeof(all));
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), 0);
    assert_int_equal(s.out_len, sizeof(all));
    assert_memory_equal(s.out, all, sizeof(all));
    assert_int_equal(s.err_len, sizeof(all));
    assert_memory_equal(s.err, all, sizeof(all));
}

static void test_demux_zero_size_frames_produce_nothing(void **state)
{
    (void)state;
    uint8_t wire[64];
    size_t len = 0;
    put(wire, &len, 1, NULL, 0);
    put(wire, &len, 2, NULL, 0);
    put(wire, &len, 1, NULL, 0);
    put(wire, &len, 1, "x", 1);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.out_len, 1);
    assert_int_equal(s.err_len, 0);
}

static void test_demux_stream_zero_is_dropped(void **state)
{
    (void)state;
    uint8_t wire[64];
    size_t len = 0;
    put(wire, &len, 0, "stdin echo", 10);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), 0);
    assert_int_equal(s.calls, 0);
}

static void test_demux_rejects_stream_three_and_up(void **state)
{
    (void)state;
    static const uint8_t streams[] = {3, 4, 0x80, 0xff};
    for (size_t i = 0; i < sizeof(streams); i++) {
        uint8_t wire[64];
        size_t len = 0;
        put(wire, &len, streams[i], "x", 1);
        clr_demux d;
        struct sink s = {0};
        clr_demux_init(&d);
        assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), -1);
        assert_int_equal(s.calls, 0);
        assert_true(d.failed);
    }
}

static void test_demux_rejects_nonzero_padding(void **state)
{
    (void)state;
    for (int byte = 1; byte <= 3; byte++) {
        uint8_t wire[64];
        size_t len = 0;
        put(wire, &len, 1, "x", 1);
        wire[byte] = 1;
        clr_demux d;
        struct sink s = {0};
        clr_demux_init(&d);
        assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), -1);
        assert_int_equal(s.calls, 0);
    }
}

/* A TTY-mode stream (raw text, no headers) fed to the demuxer must not be taken as frames. */
static void test_demux_rejects_raw_text(void **state)
{
    (void)state;
    static const char text[] = "total 0\ndrwxr-xr-x 2 root root";
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, (const uint8_t *)text, sizeof(text) - 1, collect, &s), -1);
    assert_int_equal(s.calls, 0);
}

static void test_demux_failure_is_sticky(void **state)
{
    (void)state;
    uint8_t bad[64];
    size_t blen = 0;
    put(bad, &blen, 9, "x", 1);
    uint8_t good[64];
    size_t glen = 0;
    put(good, &glen, 1, "fine", 4);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, bad, blen, collect, &s), -1);
    assert_int_equal(clr_demux_feed(&d, good, glen, collect, &s), -1);
    assert_int_equal(clr_demux_feed(&d, good, 0, collect, &s), -1);
    assert_int_equal(s.calls, 0);
}

static void test_demux_bad_header_after_good_frame(void **state)
{
    (void)state;
    uint8_t wire[64];
    size_t len = 0;
    put(wire, &len, 1, "ok", 2);
    put(wire, &len, 1, "x", 1);
    wire[10 + 2] = 7; /* padding byte of the second header */
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), -1);
    assert_int_equal(s.out_len, 2);
}

static void test_demux_callback_rc_propagates(void **state)
{
    (void)state;
    uint8_t wire[256];
    size_t len = mixed_stream(wire);
    clr_demux d;
    struct sink s = {.stop_after_calls = 2, .stop_rc = 5};
    clr_demux_init(&d);
    assert_int_equal(clr_demux_feed(&d, wire, len, collect, &s), 5);
    assert_int_equal(s.calls, 2);
}

static void test_demux_large_size_spans_feeds(void **state)
{
    (void)state;
    /* A header announcing 3000 bytes, delivered in uneven pieces. */
    uint8_t *payload = malloc(3000);
    assert_non_null(payload);
    for (size_t i = 0; i < 3000; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    uint8_t *wire = malloc(3008 + 16);
    assert_non_null(wire);
    size_t len = 0;
    put(wire, &len, 2, payload, 3000);
    put(wire, &len, 1, "end", 3);
    clr_demux d;
    struct sink s = {0};
    clr_demux_init(&d);
    size_t off = 0, step = 1;
    while (off < len) {
        size_t n = step < len - off ? step : len - off;
        assert_int_equal(clr_demux_feed(&d, wire + off, n, collect, &s), 0);
        off += n;
        step = step * 3 + 1;
    }
    assert_int_equal(s.err_len, 3000);
    assert_memory_equal(s.err, payload, 3000);
    assert_int_equal(s.out_len, 3);
    assert_memory_equal(s.out, "end", 3);
    free(wire);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demux_separates_stdout_and_stderr),
        cmocka_unit_test(test_demux_one_byte_at_a_time_is_identical),
        cmocka_unit_test(test_demux_every_split_point_is_identical),
        cmocka_unit_test(test_demux_binary_bytes_exact),
        cmocka_unit_test(test_demux_zero_size_frames_produce_nothing),
        cmocka_unit_test(test_demux_stream_zero_is_dropped),
        cmocka_unit_test(test_demux_rejects_stream_three_and_up),
        cmocka_unit_test(test_demux_rejects_nonzero_padding),
        cmocka_unit_test(test_demux_rejects_raw_text),
        cmocka_unit_test(test_demux_failure_is_sticky),
        cmocka_unit_test(test_demux_bad_header_after_good_frame),
        cmocka_unit_test(test_demux_callback_rc_propagates),
        cmocka_unit_test(test_demux_large_size_spans_feeds),
    };
    return cmocka_run_group_tests_name("demux", tests, NULL, NULL);
}
