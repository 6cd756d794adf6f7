/* The agent wire protocol: a frame reader that gives the same frames however the bytes are
 * sliced, refuses anything malformed for good, and TLV helpers that never read past their
 * buffer, whatever lengths a hostile peer writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

/* ---- a recording callback ------------------------------------------------------------------ */

#define MAX_SEEN 64

struct seen {
    size_t count;
    uint32_t channel[MAX_SEEN];
    uint8_t type[MAX_SEEN];
    uint32_t length[MAX_SEEN];
    uint8_t *payload[MAX_SEEN];
    int stop_after; /* return this frame count's callback value... */
    int stop_rc;    /* ...as stop_rc (0: never stop) */
};

static int record(void *ctx, const struct clr_frame *f)
{
    struct seen *s = ctx;
    assert_true(s->count < MAX_SEEN);
    s->channel[s->count] = f->channel;
    s->type[s->count] = f->type;
    s->length[s->count] = f->length;
    s->payload[s->count] = malloc(f->length ? f->length : 1);
    assert_non_null(s->payload[s->count]);
    if (f->length)
        memcpy(s->payload[s->count], f->payload, f->length);
    s->count++;
    if (s->stop_rc && (int)s->count == s->stop_after)
        return s->stop_rc;
    return 0;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->payload[i]);
    memset(s, 0, sizeof(*s));
}

struct fixture {
    struct clr_frame_reader reader;
    uint8_t buf[CLR_PROTO_MAX_PAYLOAD];
    struct seen seen;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    clr_frame_reader_init(&fx->reader, fx->buf);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    seen_free(&fx->seen);
    free(fx);
    return 0;
}

/* Appends one frame to out at *len. */
static void put_frame(uint8_t *out, size_t *len, uint32_t channel, uint8_t type, const void *p,
                      uint32_t n)
{
    clr_frame_header(out + *len, channel, type, n);
    if (n)
        memcpy(out + *len + CLR_PROTO_HEADER_SIZE, p, n);
    *len += CLR_PROTO_HEADER_SIZE + n;
}

/* ---- header ------------------------------------------------------------------------------- */

static void test_frame_header_layout(void **state)
{
    (void)state;
    uint8_t h[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(h, 0x01020304, CLR_FRAME_STDERR, 0xa0b0c0d0);
    static const uint8_t want[] = {0xa0, 0xb0, 0xc0, 0xd0, 1, 2, 3, 4, CLR_FRAME_STDERR, 0, 0, 0};
    assert_memory_equal(h, want, sizeof(want));
    assert_int_equal(clr_be32_read(h), 0xa0b0c0d0);
    assert_int_equal(clr_be32_read(h + 4), 0x01020304);
}

static void test_be64_round_trip(void **state)
{
    (void)state;
    uint8_t b[8];
    clr_be64_write(b, 0x0102030405060708ull);
    static const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(b, want, 8);
    assert_true(clr_be64_read(b) == 0x0102030405060708ull);
    clr_be64_write(b, UINT64_MAX);
    assert_true(clr_be64_read(b) == UINT64_MAX);
}

static void test_frame_header_round_trip_through_reader(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[64];
    size_t len = 0;
    put_frame(wire, &len, 0xfffffffe, CLR_FRAME_SIGNAL, "\x00\x01\x02", 3);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), 0);
    assert_int_equal(fx->seen.count, 1);
    assert_int_equal(fx->seen.channel[0], 0xfffffffe);
    assert_int_equal(fx->seen.type[0], CLR_FRAME_SIGNAL);
    assert_int_equal(fx->seen.length[0], 3);
    assert_memory_equal(fx->seen.payload[0], "\x00\x01\x02", 3);
}

/* ---- reader ------------------------------------------------------------------------------- */

/* Three frames of different types, channels and sizes, one of them empty. */
static size_t three_frames(uint8_t *wire)
{
    size_t len = 0;
    put_frame(wire, &len, 1, CLR_FRAME_STDOUT, "hello", 5);
    put_frame(wire, &len, 7, CLR_FRAME_STDIN_EOF, NULL, 0);
    put_frame(wire, &len, 2, CLR_FRAME_STDERR, "\xff\x00oops\n", 7);
    return len;
}

static void check_three_frames(const struct seen *s)
{
    assert_int_equal(s->count, 3);
    assert_int_equal(s->channel[0], 1);
    assert_int_equal(s->type[0], CLR_FRAME_STDOUT);
    assert_int_equal(s->length[0], 5);
    assert_memory_equal(s->payload[0], "hello", 5);
    assert_int_equal(s->channel[1], 7);
    assert_int_equal(s->type[1], CLR_FRAME_STDIN_EOF);
    assert_int_equal(s->length[1], 0);
    assert_int_equal(s->channel[2], 2);
    assert_int_equal(s->type[2], CLR_FRAME_STDERR);
    assert_int_equal(s->length[2], 7);
    assert_memory_equal(s->payload[2], "\xff\x00oops\n", 7);
}

static void test_reader_many_frames_in_one_buffer(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = three_frames(wire);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), 0);
    check_three_frames(&fx->seen);
}

static void test_reader_byte_by_byte_gives_same_frames(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = three_frames(wire);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(clr_frame_reader_feed(&fx->reader, wire + i, 1, record, &fx->seen), 0);
    check_three_frames(&fx->seen);
}

static void test_reader_every_split_point_gives_same_frames(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = three_frames(wire);
    for (size_t cut = 0; cut <= len; cut++) {
        seen_free(&fx->seen);
        clr_frame_reader_init(&fx->reader, fx->buf);
        assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, cut, record, &fx->seen), 0);
        assert_int_equal(
            clr_frame_reader_feed(&fx->reader, wire + cut, len - cut, record, &fx->seen), 0);
        check_three_frames(&fx->seen);
    }
}

static void test_reader_empty_feed_is_harmless(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(clr_frame_reader_feed(&fx->reader, NULL, 0, record, &fx->seen), 0);
    assert_int_equal(fx->seen.count, 0);
}

static void test_reader_zero_length_payload(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[CLR_PROTO_HEADER_SIZE];
    size_t len = 0;
    put_frame(wire, &len, 3, CLR_FRAME_KILL, NULL, 0);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), 0);
    assert_int_equal(fx->seen.count, 1);
    assert_int_equal(fx->seen.type[0], CLR_FRAME_KILL);
    assert_int_equal(fx->seen.length[0], 0);
}

static void test_reader_max_payload_accepted(void **state)
{
    struct fixture *fx = *state;
    size_t cap = CLR_PROTO_HEADER_SIZE + CLR_PROTO_MAX_PAYLOAD;
    uint8_t *wire = malloc(cap);
    assert_non_null(wire);
    uint8_t *payload = malloc(CLR_PROTO_MAX_PAYLOAD);
    assert_non_null(payload);
    for (size_t i = 0; i < CLR_PROTO_MAX_PAYLOAD; i++)
        payload[i] = (uint8_t)(i * 7);
    size_t len = 0;
    put_frame(wire, &len, 1, CLR_FRAME_STDOUT, payload, CLR_PROTO_MAX_PAYLOAD);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), 0);
    assert_int_equal(fx->seen.count, 1);
    assert_int_equal(fx->seen.length[0], CLR_PROTO_MAX_PAYLOAD);
    assert_memory_equal(fx->seen.payload[0], payload, CLR_PROTO_MAX_PAYLOAD);
    free(payload);
    free(wire);
}

static void test_reader_rejects_length_over_max(void **state)
{
    struct fixture *fx = *state;
    uint8_t h[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(h, 1, CLR_FRAME_STDOUT, CLR_PROTO_MAX_PAYLOAD + 1);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, h, sizeof(h), record, &fx->seen), -1);
    assert_int_equal(fx->seen.count, 0);
    assert_true(fx->reader.failed);
}

static void test_reader_rejects_huge_length(void **state)
{
    struct fixture *fx = *state;
    uint8_t h[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(h, 1, CLR_FRAME_STDOUT, UINT32_MAX);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, h, sizeof(h), record, &fx->seen), -1);
    assert_int_equal(fx->seen.count, 0);
}

static void test_reader_rejects_unknown_types(void **state)
{
    static const uint8_t bad_types[] = {0, CLR_FRAME_NET_CLOSE + 1, 0x7f, 0xff};
    struct fixture *fx = *state;
    for (size_t i = 0; i < sizeof(bad_types); i++) {
        clr_frame_reader_init(&fx->reader, fx->buf);
        uint8_t h[CLR_PROTO_HEADER_SIZE];
        clr_frame_header(h, 1, bad_types[i], 0);
        assert_int_equal(clr_frame_reader_feed(&fx->reader, h, sizeof(h), record, &fx->seen),
                         -1);
    }
    assert_int_equal(fx->seen.count, 0);
}

static void test_reader_rejects_nonzero_reserved_bytes(void **state)
{
    struct fixture *fx = *state;
    for (int byte = 9; byte <= 11; byte++) {
        clr_frame_reader_init(&fx->reader, fx->buf);
        uint8_t h[CLR_PROTO_HEADER_SIZE];
        clr_frame_header(h, 1, CLR_FRAME_STDOUT, 0);
        h[byte] = 0x80;
        assert_int_equal(clr_frame_reader_feed(&fx->reader, h, sizeof(h), record, &fx->seen),
                         -1);
    }
    assert_int_equal(fx->seen.count, 0);
}

static void test_reader_failure_is_sticky(void **state)
{
    struct fixture *fx = *state;
    uint8_t bad[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(bad, 1, 0x42, 0);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, bad, sizeof(bad), record, &fx->seen), -1);
    /* A perfectly good frame afterwards is refused too: the stream is out of sync for good. */
    uint8_t wire[64];
    size_t len = 0;
    put_frame(wire, &len, 1, CLR_FRAME_STDOUT, "x", 1);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), -1);
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, 0, record, &fx->seen), -1);
    assert_int_equal(fx->seen.count, 0);
}

static void test_reader_bad_frame_after_good_ones(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = 0;
    put_frame(wire, &len, 1, CLR_FRAME_STDOUT, "ok", 2);
    clr_frame_header(wire + len, 1, CLR_FRAME_STDOUT, 0);
    wire[len + 10] = 1;
    len += CLR_PROTO_HEADER_SIZE;
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), -1);
    assert_int_equal(fx->seen.count, 1); /* the good frame before it was delivered */
}

static void test_reader_callback_rc_propagates(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = three_frames(wire);
    fx->seen.stop_after = 2;
    fx->seen.stop_rc = 42;
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), 42);
    assert_int_equal(fx->seen.count, 2); /* nothing after the callback said stop */
}

static void test_reader_callback_negative_rc_propagates(void **state)
{
    struct fixture *fx = *state;
    uint8_t wire[128];
    size_t len = three_frames(wire);
    fx->seen.stop_after = 1;
    fx->seen.stop_rc = -2;
    assert_int_equal(clr_frame_reader_feed(&fx->reader, wire, len, record, &fx->seen), -2);
    assert_int_equal(fx->seen.count, 1);
}

/* ---- TLV ---------------------------------------------------------------------------------- */

static void test_tlv_round_trip(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    clr_tlv_init(b);
    clr_tlv_put_str(b, 1, "argv0");
    clr_tlv_put_u64(b, 4, 0x1122334455667788ull);
    clr_tlv_put(b, 0xffff, "\x00\xff", 2);
    clr_tlv_put_str(b, 3, "");
    assert_false(b->overflow);
    assert_int_equal(b->len, 6 + 5 + 6 + 8 + 6 + 2 + 6);

    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    uint64_t n;
    clr_tlv_iter_init(&it, b->buf, b->len);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 1);
    assert_int_equal(tag, 1);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "argv0", 5);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 1);
    assert_int_equal(tag, 4);
    assert_int_equal(clr_tlv_u64(v, len, &n), 0);
    assert_true(n == 0x1122334455667788ull);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 1);
    assert_int_equal(tag, 0xffff);
    assert_int_equal(len, 2);
    assert_memory_equal(v, "\x00\xff", 2);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 1);
    assert_int_equal(tag, 3);
    assert_int_equal(len, 0);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 0);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 0); /* the end stays the end */
    free(b);
}

static void test_tlv_empty_payload_is_end(void **state)
{
    (void)state;
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    clr_tlv_iter_init(&it, NULL, 0);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 0);
}

static void test_tlv_truncated_header_is_malformed(void **state)
{
    (void)state;
    static const uint8_t p[] = {0, 1, 0, 0, 0}; /* 5 of the 6 header bytes */
    for (size_t n = 1; n <= sizeof(p); n++) {
        struct clr_tlv_iter it;
        uint16_t tag;
        const uint8_t *v;
        uint32_t len;
        clr_tlv_iter_init(&it, p, n);
        assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), -1);
    }
}

static void test_tlv_length_past_buffer_is_malformed(void **state)
{
    (void)state;
    /* tag 1, length 5, but only 4 bytes of value */
    static const uint8_t p[] = {0, 1, 0, 0, 0, 5, 'a', 'b', 'c', 'd'};
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    clr_tlv_iter_init(&it, p, sizeof(p));
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), -1);
}

static void test_tlv_huge_length_does_not_wrap(void **state)
{
    (void)state;
    /* length 0xffffffff: an iterator adding it to a pointer or size must not wrap around */
    static const uint8_t p[] = {0, 1, 0xff, 0xff, 0xff, 0xff, 'a'};
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    clr_tlv_iter_init(&it, p, sizeof(p));
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), -1);
    static const uint8_t q[] = {0, 1, 0xff, 0xff, 0xff, 0xfa};
    clr_tlv_iter_init(&it, q, sizeof(q));
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), -1);
}

static void test_tlv_good_field_then_truncated_one(void **state)
{
    (void)state;
    static const uint8_t p[] = {0, 1, 0, 0, 0, 1, 'x', 0, 2, 0};
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    clr_tlv_iter_init(&it, p, sizeof(p));
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), 1);
    assert_int_equal(tag, 1);
    assert_int_equal(clr_tlv_next(&it, &tag, &v, &len), -1);
}

static void test_tlv_builder_overflow_flag(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    uint8_t *big = calloc(1, CLR_PROTO_MAX_PAYLOAD);
    assert_non_null(big);

    /* Exactly full is fine. */
    clr_tlv_init(b);
    clr_tlv_put(b, 1, big, CLR_PROTO_MAX_PAYLOAD - 6);
    assert_false(b->overflow);
    assert_int_equal(b->len, CLR_PROTO_MAX_PAYLOAD);

    /* One byte more is not, and a later small field cannot sneak in after it. */
    clr_tlv_init(b);
    clr_tlv_put(b, 1, big, CLR_PROTO_MAX_PAYLOAD - 5);
    assert_true(b->overflow);
    assert_int_equal(b->len, 0);
    clr_tlv_put_u64(b, 2, 1);
    assert_true(b->overflow);
    assert_int_equal(b->len, 0);

    /* A field that does not fit in what is left. */
    clr_tlv_init(b);
    clr_tlv_put(b, 1, big, CLR_PROTO_MAX_PAYLOAD - 10);
    assert_false(b->overflow);
    clr_tlv_put_u64(b, 2, 1);
    assert_true(b->overflow);
    assert_int_equal(b->len, CLR_PROTO_MAX_PAYLOAD - 4);

    /* A length that would wrap a size computation. */
    clr_tlv_init(b);
    clr_tlv_put(b, 1, big, UINT32_MAX);
    assert_true(b->overflow);

    /* clr_tlv_init starts over. */
    clr_tlv_init(b);
    assert_false(b->overflow);
    assert_int_equal(b->len, 0);
    free(big);
    free(b);
}

static void test_tlv_put_str_over_max_string_overflows(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    char *s = malloc(CLR_PROTO_MAX_STRING + 2);
    assert_non_null(s);
    memset(s, 'a', CLR_PROTO_MAX_STRING + 1);
    s[CLR_PROTO_MAX_STRING + 1] = '\0';
    clr_tlv_init(b);
    clr_tlv_put_str(b, 1, s);
    assert_true(b->overflow);
    s[CLR_PROTO_MAX_STRING] = '\0';
    clr_tlv_init(b);
    clr_tlv_put_str(b, 1, s);
    assert_false(b->overflow);
    assert_int_equal(b->len, 6 + CLR_PROTO_MAX_STRING);
    free(s);
    free(b);
}

static void test_tlv_u64_wrong_length(void **state)
{
    (void)state;
    static const uint8_t v[9] = {0, 0, 0, 0, 0, 0, 0, 1, 2};
    uint64_t n = 77;
    assert_int_equal(clr_tlv_u64(v, 7, &n), -1);
    assert_int_equal(clr_tlv_u64(v, 9, &n), -1);
    assert_int_equal(clr_tlv_u64(v, 0, &n), -1);
    assert_int_equal(n, 77);
    assert_int_equal(clr_tlv_u64(v, 8, &n), 0);
    assert_int_equal(n, 1);
}

int main(void)
{
#define F(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_header_layout),
        cmocka_unit_test(test_be64_round_trip),
        F(test_frame_header_round_trip_through_reader),
        F(test_reader_many_frames_in_one_buffer),
        F(test_reader_byte_by_byte_gives_same_frames),
        F(test_reader_every_split_point_gives_same_frames),
        F(test_reader_empty_feed_is_harmless),
        F(test_reader_zero_length_payload),
        F(test_reader_max_payload_accepted),
        F(test_reader_rejects_length_over_max),
        F(test_reader_rejects_huge_length),
        F(test_reader_rejects_unknown_types),
        F(test_reader_rejects_nonzero_reserved_bytes),
        F(test_reader_failure_is_sticky),
        F(test_reader_bad_frame_after_good_ones),
        F(test_reader_callback_rc_propagates),
        F(test_reader_callback_negative_rc_propagates),
        cmocka_unit_test(test_tlv_round_trip),
        cmocka_unit_test(test_tlv_empty_payload_is_end),
        cmocka_unit_test(test_tlv_truncated_header_is_malformed),
        cmocka_unit_test(test_tlv_length_past_buffer_is_malformed),
        cmocka_unit_test(test_tlv_huge_length_does_not_wrap),
        cmocka_unit_test(test_tlv_good_field_then_truncated_one),
        cmocka_unit_test(test_tlv_builder_overflow_flag),
        cmocka_unit_test(test_tlv_put_str_over_max_string_overflows),
        cmocka_unit_test(test_tlv_u64_wrong_length),
    };
#undef F
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
