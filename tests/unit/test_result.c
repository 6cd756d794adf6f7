/* The exec result: decoding the agent's RESULT frame (which a compromised agent could fill with
 * anything) and the JSON record every caller sees, where output that is not valid UTF-8 must
 * travel as base64 and come back byte-exact. */
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/exec.h"
#include "proto.h"

static struct clr_tlv_builder *builder(void)
{
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    clr_tlv_init(b);
    return b;
}

static int decode(clr_exec_result *r, const struct clr_tlv_builder *b, clr_error *err)
{
    assert_false(b->overflow);
    memset(r, 0, sizeof(*r));
    return clr_exec_result_decode(r, b->buf, b->len, err);
}

/* ---- clr_exec_result_decode ---------------------------------------------------------------- */

static void test_decode_all_fields(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, 3);
    clr_tlv_put_u64(b, CLR_RES_WALL_US, 1234567);
    clr_tlv_put_u64(b, CLR_RES_USER_US, 1000);
    clr_tlv_put_u64(b, CLR_RES_SYS_US, 2000);
    clr_tlv_put_u64(b, CLR_RES_PEAK_RSS, 64 * 1024 * 1024);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_BYTES, 5000000);
    clr_tlv_put_u64(b, CLR_RES_STDERR_BYTES, 7);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_TRUNC, 1);
    clr_tlv_put_u64(b, CLR_RES_STDERR_TRUNC, 0);
    clr_tlv_put_u64(b, CLR_RES_KILLED_PROCS, 4);
    clr_tlv_put_str(b, CLR_RES_MESSAGE, "left 4 processes behind");
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(decode(&r, b, &err), 0);
    assert_int_equal(r.status, CLR_EXEC_EXITED);
    assert_int_equal(r.exit_code, 3);
    assert_int_equal(r.wall_us, 1234567);
    assert_int_equal(r.user_us, 1000);
    assert_int_equal(r.sys_us, 2000);
    assert_int_equal(r.peak_memory_bytes, 64 * 1024 * 1024);
    assert_int_equal(r.stdout_bytes, 5000000);
    assert_int_equal(r.stderr_bytes, 7);
    assert_true(r.stdout_truncated);
    assert_false(r.stderr_truncated);
    assert_int_equal(r.killed_processes, 4);
    assert_string_equal(r.message, "left 4 processes behind");
    free(b);
}

static void test_decode_each_wire_status(void **state)
{
    (void)state;
    static const struct {
        uint64_t wire;
        clr_exec_status status;
    } map[] = {
        {CLR_WIRE_EXITED, CLR_EXEC_EXITED},       {CLR_WIRE_SIGNALED, CLR_EXEC_SIGNALED},
        {CLR_WIRE_TIMED_OUT, CLR_EXEC_TIMED_OUT}, {CLR_WIRE_OOM, CLR_EXEC_OOM},
        {CLR_WIRE_START_FAILED, CLR_EXEC_START_FAILED},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        struct clr_tlv_builder *b = builder();
        clr_tlv_put_u64(b, CLR_RES_STATUS, map[i].wire);
        clr_exec_result r;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(decode(&r, b, &err), 0);
        assert_int_equal(r.status, map[i].status);
        free(b);
    }
}

static void test_decode_signal_and_exit_code_are_bounded(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_SIGNALED);
    clr_tlv_put_u64(b, CLR_RES_SIGNAL, UINT64_MAX);
    clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, UINT64_MAX);
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(decode(&r, b, &err), 0);
    assert_in_range(r.signal, 0, 127);
    assert_in_range(r.exit_code, 0, 255);
    free(b);
}

static void test_decode_missing_status_is_error(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, 0);
    clr_tlv_put_u64(b, CLR_RES_WALL_US, 10);
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(decode(&r, b, &err), -1);
    assert_non_null(strstr(err.message, "status"));
    free(b);
}

static void test_decode_empty_payload_is_error(void **state)
{
    (void)state;
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    memset(&r, 0, sizeof(r));
    assert_int_equal(clr_exec_result_decode(&r, NULL, 0, &err), -1);
}

static void test_decode_unknown_status_is_error(void **state)
{
    (void)state;
    static const uint64_t bad[] = {0, CLR_WIRE_START_FAILED + 1, CLR_EXEC_SANDBOX_FAILED, 255,
                                   UINT64_MAX, (1ull << 32) | CLR_WIRE_EXITED};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct clr_tlv_builder *b = builder();
        clr_tlv_put_u64(b, CLR_RES_STATUS, bad[i]);
        clr_exec_result r;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(decode(&r, b, &err), -1);
        assert_true(err.message[0] != '\0');
        free(b);
    }
}

static void test_decode_wrong_integer_length_is_error(void **state)
{
    (void)state;
    static const uint16_t tags[] = {CLR_RES_STATUS, CLR_RES_EXIT_CODE, CLR_RES_WALL_US,
                                    CLR_RES_STDOUT_TRUNC};
    static const uint32_t lens[] = {0, 4, 7, 9};
    static const uint8_t bytes[9] = {0, 0, 0, 0, 0, 0, 0, 1, 1};
    for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
        for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
            struct clr_tlv_builder *b = builder();
            if (tags[t] != CLR_RES_STATUS)
                clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_EXITED);
            clr_tlv_put(b, tags[t], bytes, lens[l]);
            clr_exec_result r;
            clr_error err = CLR_ERROR_INIT;
            if (decode(&r, b, &err) != -1)
                fail_msg("tag %u with a %u-byte value was accepted", tags[t], lens[l]);
            free(b);
        }
    }
}

static void test_decode_unknown_tags_ignored(void **state)
{
    (void)state;
    /* A newer agent may add fields of any shape; an older host skips them. */
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, 999, 12345);
    clr_tlv_put_str(b, 1000, "a string field from the future");
    clr_tlv_put(b, 0xffff, NULL, 0);
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, 7);
    clr_tlv_put(b, 1001, "\x01\x02\x03", 3);
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    if (decode(&r, b, &err) != 0)
        fail_msg("unknown fields refused: %s", err.message);
    assert_int_equal(r.status, CLR_EXEC_EXITED);
    assert_int_equal(r.exit_code, 7);
    free(b);
}

static void test_decode_malformed_tlv_is_error(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    /* cut inside the value */
    memset(&r, 0, sizeof(r));
    assert_int_equal(clr_exec_result_decode(&r, b->buf, b->len - 1, &err), -1);
    /* trailing garbage shorter than a header */
    b->buf[b->len] = 0;
    b->buf[b->len + 1] = 1;
    assert_int_equal(clr_exec_result_decode(&r, b->buf, b->len + 2, &err), -1);
    free(b);
}

static void test_decode_long_message_is_cut_and_terminated(void **state)
{
    (void)state;
    char msg[2000];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_START_FAILED);
    clr_tlv_put_str(b, CLR_RES_MESSAGE, msg);
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(decode(&r, b, &err), 0);
    assert_int_equal(strlen(r.message), sizeof(r.message) - 1);
    free(b);
}

/* ---- clr_exec_result_to_json --------------------------------------------------------------- */

static clr_exec_result result_with(clr_exec_status status, const void *out, size_t out_len,
                                   const void *errb, size_t err_len)
{
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.exit_code = 3;
    r.signal = 9;
    r.out.data = (uint8_t *)(uintptr_t)out;
    r.out.len = out_len;
    r.err.data = (uint8_t *)(uintptr_t)errb;
    r.err.len = err_len;
    return r;
}

static void test_json_utf8_output_stays_string(void **state)
{
    (void)state;
    static const char out[] = "h\xc3\xa9llo \xe2\x9c\x93\n";
    clr_exec_result r = result_with(CLR_EXEC_EXITED, out, sizeof(out) - 1, "", 0);
    json_t *j = clr_exec_result_to_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "stdout")), out);
    assert_string_equal(json_string_value(json_object_get(j, "stdout_encoding")), "utf-8");
    assert_string_equal(json_string_value(json_object_get(j, "stderr")), "");
    assert_string_equal(json_string_value(json_object_get(j, "stderr_encoding")), "utf-8");
    json_decref(j);
}

static void test_json_nul_bytes_in_utf8_kept(void **state)
{
    (void)state;
    static const char out[] = {'a', 0, 'b'};
    clr_exec_result r = result_with(CLR_EXEC_EXITED, out, sizeof(out), NULL, 0);
    json_t *j = clr_exec_result_to_json(&r);
    json_t *s = json_object_get(j, "stdout");
    assert_string_equal(json_string_value(json_object_get(j, "stdout_encoding")), "utf-8");
    assert_int_equal(json_string_length(s), 3);
    assert_memory_equal(json_string_value(s), out, 3);
    json_decref(j);
}

/* Decodes base64 text; *len gets the exact byte count (padding accounted for). */
static uint8_t *unbase64(const char *text, size_t *len)
{
    size_t n = strlen(text);
    assert_true(n % 4 == 0);
    uint8_t *out = malloc(n / 4 * 3 + 1);
    assert_non_null(out);
    int got = EVP_DecodeBlock(out, (const unsigned char *)text, (int)n);
    assert_true(got >= 0);
    size_t pad = (n >= 1 && text[n - 1] == '=') + (n >= 2 && text[n - 2] == '=');
    *len = (size_t)got - pad;
    return out;
}

static void check_base64_round_trip(const uint8_t *bytes, size_t len)
{
    clr_exec_result r = result_with(CLR_EXEC_EXITED, "ok", 2, bytes, len);
    json_t *j = clr_exec_result_to_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "stdout_encoding")), "utf-8");
    assert_string_equal(json_string_value(json_object_get(j, "stderr_encoding")), "base64");
    size_t got_len;
    uint8_t *got = unbase64(json_string_value(json_object_get(j, "stderr")), &got_len);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, bytes, len);
    free(got);
    json_decref(j);
}

static void test_json_invalid_utf8_becomes_base64_exact(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0xff, 0x00, 0x80};
    check_base64_round_trip(bad, sizeof(bad));
}

static void test_json_hostile_utf8_becomes_base64(void **state)
{
    (void)state;
    static const uint8_t overlong_nul[] = {'x', 0xc0, 0x80};
    static const uint8_t surrogate[] = {0xed, 0xa0, 0x80};
    static const uint8_t truncated[] = {'a', 'b', 0xe2, 0x9c};
    static const uint8_t past_unicode[] = {0xf4, 0x90, 0x80, 0x80};
    static const uint8_t lone_continuation[] = {0x80};
    check_base64_round_trip(overlong_nul, sizeof(overlong_nul));
    check_base64_round_trip(surrogate, sizeof(surrogate));
    check_base64_round_trip(truncated, sizeof(truncated));
    check_base64_round_trip(past_unicode, sizeof(past_unicode));
    check_base64_round_trip(lone_continuation, sizeof(lone_continuation));
}

static void test_json_all_byte_values_round_trip(void **state)
{
    (void)state;
    uint8_t all[256];
    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (uint8_t)(255 - i);
    for (size_t n = 250; n <= 256; n++) /* every padding length */
        check_base64_round_trip(all, n);
}

static void test_json_exit_code_null_unless_exited(void **state)
{
    (void)state;
    static const clr_exec_status others[] = {CLR_EXEC_SIGNALED, CLR_EXEC_TIMED_OUT, CLR_EXEC_OOM,
                                              CLR_EXEC_START_FAILED, CLR_EXEC_SANDBOX_FAILED};
    clr_exec_result r = result_with(CLR_EXEC_EXITED, NULL, 0, NULL, 0);
    json_t *j = clr_exec_result_to_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "exited");
    assert_int_equal(json_integer_value(json_object_get(j, "exit_code")), 3);
    assert_true(json_is_null(json_object_get(j, "signal")));
    json_decref(j);
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        r = result_with(others[i], NULL, 0, NULL, 0);
        j = clr_exec_result_to_json(&r);
        assert_true(json_is_null(json_object_get(j, "exit_code")));
        assert_true(json_is_null(json_object_get(j, "signal")) ==
                    (others[i] != CLR_EXEC_SIGNALED));
        json_decref(j);
    }
    r = result_with(CLR_EXEC_SIGNALED, NULL, 0, NULL, 0);
    j = clr_exec_result_to_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "signaled");
    assert_int_equal(json_integer_value(json_object_get(j, "signal")), 9);
    json_decref(j);
}

static void test_json_counters_flags_and_message(void **state)
{
    (void)state;
    clr_exec_result r = result_with(CLR_EXEC_OOM, NULL, 0, NULL, 0);
    r.stdout_bytes = 10;
    r.stderr_bytes = 20;
    r.stdout_truncated = true;
    r.wall_us = 30;
    r.user_us = 40;
    r.sys_us = 50;
    r.peak_memory_bytes = 60;
    r.killed_processes = 2;
    r.sandbox_killed = true;
    snprintf(r.message, sizeof(r.message), "memory limit");
    json_t *j = clr_exec_result_to_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "oom");
    assert_int_equal(json_integer_value(json_object_get(j, "stdout_bytes")), 10);
    assert_int_equal(json_integer_value(json_object_get(j, "stderr_bytes")), 20);
    assert_true(json_is_true(json_object_get(j, "stdout_truncated")));
    assert_true(json_is_false(json_object_get(j, "stderr_truncated")));
    assert_int_equal(json_integer_value(json_object_get(j, "wall_us")), 30);
    assert_int_equal(json_integer_value(json_object_get(j, "cpu_user_us")), 40);
    assert_int_equal(json_integer_value(json_object_get(j, "cpu_system_us")), 50);
    assert_int_equal(json_integer_value(json_object_get(j, "peak_memory_bytes")), 60);
    assert_int_equal(json_integer_value(json_object_get(j, "killed_processes")), 2);
    assert_true(json_is_true(json_object_get(j, "sandbox_killed")));
    assert_string_equal(json_string_value(json_object_get(j, "message")), "memory limit");
    json_decref(j);

    r.message[0] = '\0';
    j = clr_exec_result_to_json(&r);
    assert_true(json_is_null(json_object_get(j, "message")));
    json_decref(j);
}

/* The agent's message quotes the command and is cut at a fixed size: it may not be UTF-8, and the
 * record must keep a message anyway. */
static void test_json_message_not_utf8_still_a_string(void **state)
{
    (void)state;
    clr_exec_result r = result_with(CLR_EXEC_START_FAILED, NULL, 0, NULL, 0);
    snprintf(r.message, sizeof(r.message), "cannot start '\xff\xfe\xc3': no such file");
    json_t *j = clr_exec_result_to_json(&r);
    const char *m = json_string_value(json_object_get(j, "message"));
    assert_non_null(m);
    assert_non_null(strstr(m, "cannot start '"));
    assert_non_null(strstr(m, "': no such file"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_all_fields),
        cmocka_unit_test(test_decode_each_wire_status),
        cmocka_unit_test(test_decode_signal_and_exit_code_are_bounded),
        cmocka_unit_test(test_decode_missing_status_is_error),
        cmocka_unit_test(test_decode_empty_payload_is_error),
        cmocka_unit_test(test_decode_unknown_status_is_error),
        cmocka_unit_test(test_decode_wrong_integer_length_is_error),
        cmocka_unit_test(test_decode_unknown_tags_ignored),
        cmocka_unit_test(test_decode_malformed_tlv_is_error),
        cmocka_unit_test(test_decode_long_message_is_cut_and_terminated),
        cmocka_unit_test(test_json_utf8_output_stays_string),
        cmocka_unit_test(test_json_nul_bytes_in_utf8_kept),
        cmocka_unit_test(test_json_invalid_utf8_becomes_base64_exact),
        cmocka_unit_test(test_json_hostile_utf8_becomes_base64),
        cmocka_unit_test(test_json_all_byte_values_round_trip),
        cmocka_unit_test(test_json_exit_code_null_unless_exited),
        cmocka_unit_test(test_json_counters_flags_and_message),
        cmocka_unit_test(test_json_message_not_utf8_still_a_string),
    };
    return cmocka_run_group_tests_name("result", tests, NULL, NULL);
}
