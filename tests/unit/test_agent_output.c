/* A command's output as the result counts it (every byte counted, the first cap bytes sent, the
 * rest reported truncated) and the byte queue both halves of the agent queue frames in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bytes.h"
#include "output.h"
#include "proto.h"

static void test_stream_under_cap_sends_all(void **state)
{
    (void)state;
    struct stream st = {.fd = -1, .cap = 100};
    assert_int_equal(agent_stream_take(&st, 40), 40);
    assert_int_equal(agent_stream_take(&st, 60), 60);
    assert_int_equal(st.total, 100);
    assert_int_equal(st.sent, 100);
    assert_false(agent_stream_truncated(&st));
}

static void test_stream_cap_cuts_and_counts_the_rest(void **state)
{
    (void)state;
    struct stream st = {.fd = -1, .cap = 100};
    assert_int_equal(agent_stream_take(&st, 70), 70);
    assert_int_equal(agent_stream_take(&st, 70), 30); /* the cap falls inside this read */
    assert_int_equal(agent_stream_take(&st, 5000), 0);
    assert_int_equal(st.total, 5140);
    assert_int_equal(st.sent, 100);
    assert_true(agent_stream_truncated(&st));
}

static void test_stream_zero_cap_sends_nothing(void **state)
{
    (void)state;
    struct stream st = {.fd = -1, .cap = 0};
    assert_int_equal(agent_stream_take(&st, 1), 0);
    assert_int_equal(st.total, 1);
    assert_int_equal(st.sent, 0);
    assert_true(agent_stream_truncated(&st));
    struct stream quiet = {.fd = -1, .cap = 0};
    assert_false(agent_stream_truncated(&quiet)); /* nothing written, nothing lost */
}

static void test_stream_cap_larger_than_size_t_read(void **state)
{
    (void)state;
    struct stream st = {.fd = -1, .cap = UINT64_MAX};
    assert_int_equal(agent_stream_take(&st, 65536), 65536);
    assert_int_equal(st.sent, 65536);
}

static void test_bytes_queue_and_consume(void **state)
{
    (void)state;
    struct bytes b = {0};
    assert_int_equal(bytes_add(&b, "hello", 5), 0);
    assert_int_equal(bytes_add(&b, " world", 6), 0);
    assert_int_equal(bytes_pending(&b), 11);
    assert_memory_equal(b.data, "hello world", 11);
    b.off = 6; /* a partial write */
    assert_int_equal(bytes_pending(&b), 5);
    assert_int_equal(bytes_add(&b, "!", 1), 0);
    assert_int_equal(b.len, 12); /* not consumed wholly: appended after what is pending */
    assert_memory_equal(b.data + b.off, "world!", 6);
    b.off = b.len; /* all written: an empty append (an empty STDIN frame) keeps the queue */
    assert_int_equal(bytes_add(&b, "", 0), 0);
    assert_non_null(b.data);
    assert_int_equal(bytes_pending(&b), 0);
    assert_int_equal(bytes_add(&b, "x", 1), 0); /* the next append starts again at 0 */
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 1);
    bytes_free(&b);
    assert_null(b.data);
    assert_int_equal(bytes_pending(&b), 0);
}

static void test_bytes_frame_header_and_payload(void **state)
{
    (void)state;
    struct bytes b = {0};
    assert_int_equal(bytes_add_frame(&b, 7, CLR_FRAME_STDOUT, "abc", 3), 0);
    assert_int_equal(bytes_add_frame(&b, 7, CLR_FRAME_STDIN_EOF, NULL, 0), 0);
    assert_int_equal(b.len, 2 * CLR_PROTO_HEADER_SIZE + 3);
    uint8_t want[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(want, 7, CLR_FRAME_STDOUT, 3);
    assert_memory_equal(b.data, want, sizeof(want));
    assert_memory_equal(b.data + CLR_PROTO_HEADER_SIZE, "abc", 3);
    clr_frame_header(want, 7, CLR_FRAME_STDIN_EOF, 0);
    assert_memory_equal(b.data + CLR_PROTO_HEADER_SIZE + 3, want, sizeof(want));
    bytes_free(&b);
}

/* A stream's kept frames lose their oldest whole frames down to what is kept; never the last
 * frame, never part of one. */
static void test_bytes_trim_frames(void **state)
{
    (void)state;
    struct bytes b = {0};
    const size_t h = CLR_PROTO_HEADER_SIZE;
    assert_int_equal(bytes_add_frame(&b, 3, CLR_FRAME_STDOUT, "aaaa", 4), 0);
    assert_int_equal(bytes_add_frame(&b, 3, CLR_FRAME_STDERR, "bb", 2), 0);
    assert_int_equal(bytes_add_frame(&b, 3, CLR_FRAME_STDOUT, "cccccc", 6), 0);
    size_t all = b.len;
    assert_int_equal(bytes_trim_frames(&b, all), 0); /* control: it fits */
    assert_int_equal(b.len, all);
    /* Room for the last two: the first goes whole. */
    assert_int_equal(bytes_trim_frames(&b, 2 * h + 8), h + 4);
    assert_int_equal(b.len, 2 * h + 8);
    uint8_t want[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(want, 3, CLR_FRAME_STDERR, 2);
    assert_memory_equal(b.data, want, h);
    assert_memory_equal(b.data + h, "bb", 2);
    /* One byte short of the last two: only the last stays. */
    assert_int_equal(bytes_trim_frames(&b, 2 * h + 7), h + 2);
    clr_frame_header(want, 3, CLR_FRAME_STDOUT, 6);
    assert_memory_equal(b.data, want, h);
    assert_memory_equal(b.data + h, "cccccc", 6);
    /* Less room than the last frame: it stays all the same. */
    assert_int_equal(bytes_trim_frames(&b, 1), 0);
    assert_int_equal(b.len, h + 6);
    bytes_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_under_cap_sends_all),
        cmocka_unit_test(test_stream_cap_cuts_and_counts_the_rest),
        cmocka_unit_test(test_stream_zero_cap_sends_nothing),
        cmocka_unit_test(test_stream_cap_larger_than_size_t_read),
        cmocka_unit_test(test_bytes_queue_and_consume),
        cmocka_unit_test(test_bytes_frame_header_and_payload),
        cmocka_unit_test(test_bytes_trim_frames),
    };
    return cmocka_run_group_tests_name("agent_output", tests, NULL, NULL);
}
