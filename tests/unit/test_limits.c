/* Limits: every value a user gives goes through these parsers and validators. Malformed or
 * out-of-range values must be errors that name the value (or the field), never clamped, rounded
 * or truncated into something the user did not ask for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/limits.h"

#define SENTINEL 0xdeadbeefu

/* ---- helpers: check one input, reporting the input itself on failure ---------------------- */

static uint64_t size_ok(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_size(&v, text, &err) != 0)
        fail_msg("clr_parse_size(\"%s\") failed: %s", text, err.message);
    return v;
}

/* Rejected, with CLR_E_INVALID, a message naming the input, and the output left alone. */
static void expect_error(int rc, const clr_error *err, const char *text, bool out_untouched)
{
    if (rc >= 0)
        fail_msg("\"%s\" was accepted", text ? text : "(null)");
    assert_int_equal(rc, -1);
    assert_int_equal(err->code, CLR_E_INVALID);
    assert_true(err->message[0] != '\0');
    if (text && *text && !strstr(err->message, text))
        fail_msg("message for \"%s\" does not name it: %s", text, err->message);
    assert_true(out_untouched);
}

static void size_bad(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_parse_size(&v, text, &err);
    expect_error(rc, &err, text, v == SENTINEL);
}

static uint32_t cpus_ok(const char *text)
{
    uint32_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_cpus(&v, text, &err) != 0)
        fail_msg("clr_parse_cpus(\"%s\") failed: %s", text, err.message);
    return v;
}

static void cpus_bad(const char *text)
{
    uint32_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_parse_cpus(&v, text, &err);
    expect_error(rc, &err, text, v == SENTINEL);
}

static uint64_t duration_ok(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_duration_ms(&v, text, &err) != 0)
        fail_msg("clr_parse_duration_ms(\"%s\") failed: %s", text, err.message);
    return v;
}

static void duration_bad(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_parse_duration_ms(&v, text, &err);
    expect_error(rc, &err, text, v == SENTINEL);
}

static uint64_t uint_ok(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_uint(&v, text, &err) != 0)
        fail_msg("clr_parse_uint(\"%s\") failed: %s", text, err.message);
    return v;
}

static void uint_bad(const char *text)
{
    uint64_t v = SENTINEL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_parse_uint(&v, text, &err);
    expect_error(rc, &err, text, v == SENTINEL);
}

/* ---- clr_parse_size ------------------------------------------------------------------------ */

static void test_size_units_are_binary(void **state)
{
    (void)state;
    assert_int_equal(size_ok("65536"), 65536);
    assert_int_equal(size_ok("0"), 0);
    assert_int_equal(size_ok("1k"), 1024);
    assert_int_equal(size_ok("512m"), 512 * CLR_MIB);
    assert_int_equal(size_ok("1g"), CLR_GIB);
    assert_int_equal(size_ok("2t"), 2048 * CLR_GIB);
}

static void test_size_unit_spellings(void **state)
{
    (void)state;
    assert_int_equal(size_ok("1GiB"), CLR_GIB);
    assert_int_equal(size_ok("1gib"), CLR_GIB);
    assert_int_equal(size_ok("1G"), CLR_GIB);
    assert_int_equal(size_ok("1GB"), CLR_GIB);
    assert_int_equal(size_ok("1Gi"), CLR_GIB);
    assert_int_equal(size_ok("4KiB"), 4096);
    assert_int_equal(size_ok("100b"), 100);
    assert_int_equal(size_ok("100B"), 100);
}

static void test_size_fractions_that_are_whole_bytes(void **state)
{
    (void)state;
    assert_int_equal(size_ok("1.5g"), 1536 * CLR_MIB);
    assert_int_equal(size_ok("0.5k"), 512);
    assert_int_equal(size_ok("1.25m"), 1280 * 1024);
    /* Trailing zeros past the ninth decimal change nothing. */
    assert_int_equal(size_ok("1.50000000000g"), 1536 * CLR_MIB);
}

static void test_size_fractions_of_a_byte_rejected(void **state)
{
    (void)state;
    size_bad("1.1k"); /* 1126.4 bytes */
    size_bad("0.5");
    size_bad(".5");
    size_bad("1.5b");
}

static void test_size_digits_past_nine_decimals_not_dropped(void **state)
{
    (void)state;
    /* 1024.0000001 bytes and 109.95 bytes: not whole, however far down the fraction is. */
    size_bad("1.0000000001k");
    size_bad("0.0000000001t");
    size_bad("1.00000000000000000001g");
}

static void test_size_malformed_rejected(void **state)
{
    (void)state;
    size_bad("512x");
    size_bad("-1");
    size_bad("+1");
    size_bad("1e3");
    size_bad("5.");
    size_bad("5.k");
    size_bad(".");
    size_bad("k");
    size_bad("0x10");
    size_bad(" 1k");
    size_bad("1k ");
    size_bad("1 k");
    size_bad("1kk");
    size_bad("1kbb");
    size_bad("1bi");
    size_bad("1ib");
    size_bad("1m\n");
    size_bad("1,5g");
    size_bad("1..5g");
}

static void test_size_empty_and_null_rejected(void **state)
{
    (void)state;
    size_bad("");
    size_bad(NULL);
}

static void test_size_overflow_rejected(void **state)
{
    (void)state;
    size_bad("99999999999999999999t");
    size_bad("99999999999999999999");
    size_bad("999999999999999999999999999999999999999999999999999999999999");
    size_bad("16777216t"); /* 2^64 */
    size_bad("8388608t");  /* 2^63 */
    assert_int_equal(size_ok("8388607t"), 8388607ull * 1024 * CLR_GIB);
}

static void test_size_leading_zeros_do_not_overflow(void **state)
{
    (void)state;
    assert_int_equal(size_ok("000000000000000000000000000000000001k"), 1024);
}

/* ---- clr_parse_cpus ------------------------------------------------------------------------ */

static void test_cpus_cores_and_millicores(void **state)
{
    (void)state;
    assert_int_equal(cpus_ok("0.5"), 500);
    assert_int_equal(cpus_ok("2"), 2000);
    assert_int_equal(cpus_ok("1500m"), 1500);
    assert_int_equal(cpus_ok("0.001"), 1);
    assert_int_equal(cpus_ok("1.250"), 1250);
    assert_int_equal(cpus_ok("4"), 4000);
    assert_int_equal(cpus_ok("4294967m"), 4294967);
}

static void test_cpus_finer_than_a_millicore_rejected(void **state)
{
    (void)state;
    cpus_bad("0.0001");
    cpus_bad("1.5m");
    cpus_bad("1.0005");
    /* Not silently rounded to a whole millicore however small the excess. */
    cpus_bad("0.0000000001");
    cpus_bad("1.0000000001");
}

static void test_cpus_malformed_rejected(void **state)
{
    (void)state;
    cpus_bad("abc");
    cpus_bad("");
    cpus_bad(NULL);
    cpus_bad("-1");
    cpus_bad("1e3");
    cpus_bad("500M");
    cpus_bad("2 ");
    cpus_bad("2c");
    cpus_bad("500mm");
    cpus_bad("m");
}

static void test_cpus_overflow_rejected(void **state)
{
    (void)state;
    cpus_bad("4294967296m");
    cpus_bad("5000000");
    cpus_bad("99999999999999999999");
}

/* ---- clr_parse_duration_ms ----------------------------------------------------------------- */

static void test_duration_units(void **state)
{
    (void)state;
    assert_int_equal(duration_ok("30"), 30000);
    assert_int_equal(duration_ok("30s"), 30000);
    assert_int_equal(duration_ok("500ms"), 500);
    assert_int_equal(duration_ok("5m"), 300000);
    assert_int_equal(duration_ok("1h"), 3600000);
    assert_int_equal(duration_ok("1.5s"), 1500);
    assert_int_equal(duration_ok("1.5"), 1500);
    assert_int_equal(duration_ok("0.001"), 1);
    assert_int_equal(duration_ok("0"), 0);
}

static void test_duration_finer_than_a_millisecond_rejected(void **state)
{
    (void)state;
    duration_bad("0.0001s");
    duration_bad("0.5ms");
    duration_bad("0.0001");
    duration_bad("0.0000000001h");
}

static void test_duration_malformed_rejected(void **state)
{
    (void)state;
    duration_bad("10x");
    duration_bad("");
    duration_bad(NULL);
    duration_bad("-5s");
    duration_bad("1e3");
    duration_bad("30 s");
    duration_bad("30S");
    duration_bad("30sec");
    duration_bad("1d");
    duration_bad("s");
    duration_bad("5.s");
}

static void test_duration_overflow_rejected(void **state)
{
    (void)state;
    assert_int_equal(duration_ok("4294967295s"), 4294967295000ull);
    duration_bad("4294967296s");
    duration_bad("1193047h");
    duration_bad("99999999999999999999h");
}

/* ---- clr_parse_uint ------------------------------------------------------------------------ */

static void test_uint_plain_numbers(void **state)
{
    (void)state;
    assert_int_equal(uint_ok("0"), 0);
    assert_int_equal(uint_ok("65536"), 65536);
    assert_int_equal(uint_ok("007"), 7);
}

static void test_uint_full_range_accepted(void **state)
{
    (void)state;
    assert_int_equal(uint_ok("18446744073709551615"), UINT64_MAX);
    assert_int_equal(uint_ok("18446744073709551610"), UINT64_MAX - 5);
    assert_int_equal(uint_ok("1844674407370955161"), UINT64_MAX / 10);
}

static void test_uint_overflow_rejected(void **state)
{
    (void)state;
    uint_bad("18446744073709551616");
    uint_bad("18446744073709551620");
    uint_bad("99999999999999999999");
    uint_bad("184467440737095516150");
}

static void test_uint_anything_but_digits_rejected(void **state)
{
    (void)state;
    uint_bad("");
    uint_bad(NULL);
    uint_bad("-1");
    uint_bad("+1");
    uint_bad(" 1");
    uint_bad("1 ");
    uint_bad("1k");
    uint_bad("1.0");
    uint_bad("0x10");
    uint_bad("12x");
}

/* ---- clr_limits_validate ------------------------------------------------------------------- */

struct field_range {
    const char *field;  /* what the message must say */
    size_t offset;
    size_t size;        /* 4 or 8 */
    uint64_t lo, hi;
};

#define LIMIT(name, member, lo, hi)                                                               \
    {name, offsetof(clr_limits, member), sizeof(((clr_limits *)0)->member), lo, hi}

static const struct field_range limit_ranges[] = {
    LIMIT("cpus", cpu_millis, 100, 4000),
    LIMIT("memory", memory_bytes, 32 * CLR_MIB, 16 * CLR_GIB),
    LIMIT("pids", pids, 8, 4096),
    LIMIT("lifetime", lifetime_s, 10, 3600),
    LIMIT("tmp size", tmp_bytes, CLR_MIB, 4 * CLR_GIB),
    LIMIT("workspace size", workspace_bytes, CLR_MIB, 64 * CLR_GIB),
    LIMIT("workspace inodes", workspace_inodes, 64, 10000000),
    LIMIT("nofile", nofile, 64, 65536),
    LIMIT("file size", fsize_bytes, CLR_MIB, 64 * CLR_GIB),
};

static void set_field(void *base, const struct field_range *f, uint64_t v)
{
    if (f->size == 4) {
        uint32_t v32 = (uint32_t)v;
        memcpy((char *)base + f->offset, &v32, 4);
    } else {
        memcpy((char *)base + f->offset, &v, 8);
    }
}

static void expect_limits(const struct field_range *f, uint64_t v, bool valid)
{
    clr_limits l = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    set_field(&l, f, v);
    int rc = clr_limits_validate(&l, &err);
    if (valid && rc != 0)
        fail_msg("%s = %llu rejected: %s", f->field, (unsigned long long)v, err.message);
    if (!valid) {
        if (rc == 0)
            fail_msg("%s = %llu accepted", f->field, (unsigned long long)v);
        assert_int_equal(rc, -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        if (strncmp(err.message, f->field, strlen(f->field)) != 0)
            fail_msg("message for %s does not name it: %s", f->field, err.message);
    }
}

static void test_limits_defaults_valid(void **state)
{
    (void)state;
    clr_limits l = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_limits_validate(&l, &err), 0);
}

static void test_limits_each_field_at_its_bounds_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(limit_ranges) / sizeof(limit_ranges[0]); i++) {
        expect_limits(&limit_ranges[i], limit_ranges[i].lo, true);
        expect_limits(&limit_ranges[i], limit_ranges[i].hi, true);
    }
}

static void test_limits_each_field_outside_its_bounds_names_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(limit_ranges) / sizeof(limit_ranges[0]); i++) {
        const struct field_range *f = &limit_ranges[i];
        expect_limits(f, f->lo - 1, false);
        expect_limits(f, f->hi + 1, false);
        expect_limits(f, 0, false);
        expect_limits(f, f->size == 4 ? UINT32_MAX : UINT64_MAX, false);
    }
}

static void test_limits_message_gives_value_and_range(void **state)
{
    (void)state;
    clr_limits l = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    l.memory_bytes = 32 * CLR_GIB;
    assert_int_equal(clr_limits_validate(&l, &err), -1);
    assert_non_null(strstr(err.message, "32g"));
    assert_non_null(strstr(err.message, "32m"));
    assert_non_null(strstr(err.message, "16g"));

    l = (clr_limits)CLR_LIMITS_INIT;
    l.cpu_millis = 50;
    assert_int_equal(clr_limits_validate(&l, &err), -1);
    assert_non_null(strstr(err.message, "0.050"));
}

/* ---- clr_exec_limits_validate -------------------------------------------------------------- */

#define EXEC_LIMIT(name, member, lo, hi)                                                          \
    {name, offsetof(clr_exec_limits, member), sizeof(((clr_exec_limits *)0)->member), lo, hi}

static const struct field_range exec_ranges[] = {
    EXEC_LIMIT("timeout", timeout_ms, 1, 24ull * 3600 * 1000),
    EXEC_LIMIT("stdout cap", stdout_cap, 0, 64 * CLR_MIB),
    EXEC_LIMIT("stderr cap", stderr_cap, 0, 64 * CLR_MIB),
};

static void expect_exec_limits(const struct field_range *f, uint64_t v, bool valid)
{
    clr_exec_limits l = CLR_EXEC_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    set_field(&l, f, v);
    int rc = clr_exec_limits_validate(&l, &err);
    if (valid && rc != 0)
        fail_msg("%s = %llu rejected: %s", f->field, (unsigned long long)v, err.message);
    if (!valid) {
        if (rc == 0)
            fail_msg("%s = %llu accepted", f->field, (unsigned long long)v);
        assert_int_equal(err.code, CLR_E_INVALID);
        if (strncmp(err.message, f->field, strlen(f->field)) != 0)
            fail_msg("message for %s does not name it: %s", f->field, err.message);
    }
}

static void test_exec_limits_defaults_valid(void **state)
{
    (void)state;
    clr_exec_limits l = CLR_EXEC_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_limits_validate(&l, &err), 0);
}

static void test_exec_limits_bounds(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(exec_ranges) / sizeof(exec_ranges[0]); i++) {
        const struct field_range *f = &exec_ranges[i];
        expect_exec_limits(f, f->lo, true);
        expect_exec_limits(f, f->hi, true);
        expect_exec_limits(f, f->hi + 1, false);
        expect_exec_limits(f, f->size == 4 ? UINT32_MAX : UINT64_MAX, false);
        if (f->lo > 0)
            expect_exec_limits(f, f->lo - 1, false);
    }
}

/* A timeout out of range is written in the units a person types, not in milliseconds. */
static void test_exec_timeout_message_in_units(void **state)
{
    (void)state;
    static const struct {
        uint64_t ms;
        const char *want;
    } cases[] = {
        {100ull * 3600 * 1000, "timeout 100h is out of range: allowed 1ms..24h"},
        {24ull * 3600 * 1000 + 60000, "timeout 1441m is out of range: allowed 1ms..24h"},
        {24ull * 3600 * 1000 + 1000, "timeout 86401s is out of range: allowed 1ms..24h"},
        {24ull * 3600 * 1000 + 1, "timeout 86400001ms is out of range: allowed 1ms..24h"},
        {0, "timeout 0ms is out of range: allowed 1ms..24h"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        clr_exec_limits l = CLR_EXEC_LIMITS_INIT;
        clr_error err = CLR_ERROR_INIT;
        l.timeout_ms = cases[i].ms;
        assert_int_equal(clr_exec_limits_validate(&l, &err), -1);
        assert_string_equal(err.message, cases[i].want);
    }
}

/* ---- clr_format_size ----------------------------------------------------------------------- */

static void expect_format(uint64_t bytes, const char *want)
{
    char buf[32];
    clr_format_size(buf, sizeof(buf), bytes);
    assert_string_equal(buf, want);
}

static void test_format_size_shortest_exact_form(void **state)
{
    (void)state;
    expect_format(0, "0");
    expect_format(1, "1");
    expect_format(1023, "1023");
    expect_format(1024, "1k");
    expect_format(1025, "1025");
    expect_format(1536, "1536");
    expect_format(1536 * 1024, "1536k");
    expect_format(512 * CLR_MIB, "512m");
    expect_format(CLR_GIB, "1g");
    expect_format(1024 * CLR_GIB, "1t");
    expect_format(1024ull * 1024 * CLR_GIB, "1024t");
    expect_format(UINT64_MAX, "18446744073709551615");
}

static void test_format_size_round_trips_through_parse(void **state)
{
    (void)state;
    const uint64_t values[] = {0, 1, 1000, 1024, 4096 + 1, 1536 * 1024, 512 * CLR_MIB,
                               3 * CLR_GIB, 64 * CLR_GIB, 8388607ull * 1024 * CLR_GIB};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char buf[32];
        clr_format_size(buf, sizeof(buf), values[i]);
        assert_int_equal(size_ok(buf), values[i]);
    }
}

static void test_format_size_small_buffer_truncates_safely(void **state)
{
    (void)state;
    char buf[8];
    memset(buf, 'X', sizeof(buf));
    clr_format_size(buf, 4, 123456);
    assert_string_equal(buf, "123");
    assert_int_equal(buf[4], 'X');
}

/* Equal limits compare equal whatever their padding holds; each field counts. */
static void test_limits_equal_by_field(void **state)
{
    (void)state;
    clr_limits a, b;
    memset(&a, 0xAB, sizeof(a)); /* different padding bytes on purpose */
    memset(&b, 0x00, sizeof(b));
    clr_limits def = CLR_LIMITS_INIT;
    a.cpu_millis = def.cpu_millis, a.memory_bytes = def.memory_bytes, a.pids = def.pids;
    a.lifetime_s = def.lifetime_s, a.tmp_bytes = def.tmp_bytes;
    a.workspace_bytes = def.workspace_bytes, a.workspace_inodes = def.workspace_inodes;
    a.nofile = def.nofile, a.fsize_bytes = def.fsize_bytes;
    b = def;
    assert_true(clr_limits_equal(&a, &b));
    clr_limits c = def;
    c.nofile++;
    assert_false(clr_limits_equal(&c, &def));
    c = def;
    c.fsize_bytes--;
    assert_false(clr_limits_equal(&c, &def));
    c = def;
    c.cpu_millis = 999;
    assert_false(clr_limits_equal(&c, &def));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_equal_by_field),
        cmocka_unit_test(test_size_units_are_binary),
        cmocka_unit_test(test_size_unit_spellings),
        cmocka_unit_test(test_size_fractions_that_are_whole_bytes),
        cmocka_unit_test(test_size_fractions_of_a_byte_rejected),
        cmocka_unit_test(test_size_digits_past_nine_decimals_not_dropped),
        cmocka_unit_test(test_size_malformed_rejected),
        cmocka_unit_test(test_size_empty_and_null_rejected),
        cmocka_unit_test(test_size_overflow_rejected),
        cmocka_unit_test(test_size_leading_zeros_do_not_overflow),
        cmocka_unit_test(test_cpus_cores_and_millicores),
        cmocka_unit_test(test_cpus_finer_than_a_millicore_rejected),
        cmocka_unit_test(test_cpus_malformed_rejected),
        cmocka_unit_test(test_cpus_overflow_rejected),
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_finer_than_a_millisecond_rejected),
        cmocka_unit_test(test_duration_malformed_rejected),
        cmocka_unit_test(test_duration_overflow_rejected),
        cmocka_unit_test(test_uint_plain_numbers),
        cmocka_unit_test(test_uint_full_range_accepted),
        cmocka_unit_test(test_uint_overflow_rejected),
        cmocka_unit_test(test_uint_anything_but_digits_rejected),
        cmocka_unit_test(test_limits_defaults_valid),
        cmocka_unit_test(test_limits_each_field_at_its_bounds_valid),
        cmocka_unit_test(test_limits_each_field_outside_its_bounds_names_field),
        cmocka_unit_test(test_limits_message_gives_value_and_range),
        cmocka_unit_test(test_exec_limits_defaults_valid),
        cmocka_unit_test(test_exec_limits_bounds),
        cmocka_unit_test(test_exec_timeout_message_in_units),
        cmocka_unit_test(test_format_size_shortest_exact_form),
        cmocka_unit_test(test_format_size_round_trips_through_parse),
        cmocka_unit_test(test_format_size_small_buffer_truncates_safely),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
