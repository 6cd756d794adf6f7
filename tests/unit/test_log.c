/* Structured logs: one JSON object a line on stderr, below the level nothing, and values from a
 * sandbox (line breaks, quotes, bytes that are not ASCII) kept inside their own field. */
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/log.h"

/* Runs the logging calls of fn with stderr going to a file; returns what was written. */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/clr-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(dup2(fd, 2) == 2);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    assert_non_null(out);
    assert_int_equal(pread(fd, out, (size_t)n, 0), n);
    close(fd);
    return out;
}

static void log_hostile(void)
{
    clr_log_set_level(CLR_LOG_INFO);
    clr_log(CLR_LOG_INFO, "sandbox.created", "id", "sb-1", "image",
            "evil\n{\"level\":\"error\",\"event\":\"forged\"}", "name", "caf\xc3\xa9 \"q\"", "none",
            NULL, NULL);
}

static void test_one_line_per_event_fields_kept(void **state)
{
    (void)state;
    char *out = capture(log_hostile);
    /* Exactly one line. */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
    json_error_t e;
    json_t *o = json_loads(out, 0, &e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "event")), "sandbox.created");
    assert_string_equal(json_string_value(json_object_get(o, "id")), "sb-1");
    assert_string_equal(json_string_value(json_object_get(o, "image")),
                        "evil\n{\"level\":\"error\",\"event\":\"forged\"}");
    assert_string_equal(json_string_value(json_object_get(o, "name")), "caf\xc3\xa9 \"q\"");
    assert_true(json_is_null(json_object_get(o, "none")));
    const char *ts = json_string_value(json_object_get(o, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), strlen("2026-11-28T12:00:00.123456Z"));
    assert_int_equal(ts[strlen(ts) - 1], 'Z');
    /* Escaped to ASCII: nothing a terminal or a log shipper could misread. */
    for (const char *c = out; *c; c++)
        assert_true((unsigned char)*c < 0x80);
    json_decref(o);
    free(out);
}

static void log_levels(void)
{
    clr_log_set_level(CLR_LOG_WARN);
    clr_log(CLR_LOG_DEBUG, "quiet.debug", NULL);
    clr_log(CLR_LOG_INFO, "quiet.info", NULL);
    clr_log(CLR_LOG_WARN, "loud.warn", NULL);
    clr_log(CLR_LOG_ERROR, "loud.error", NULL);
}

static void test_level_filters(void **state)
{
    (void)state;
    char *out = capture(log_levels);
    assert_non_null(strstr(out, "\"loud.warn\""));  /* the positive control */
    assert_non_null(strstr(out, "\"loud.error\""));
    assert_null(strstr(out, "quiet."));
    assert_int_equal(clr_log_get_level(), CLR_LOG_WARN);
    free(out);
}

static void test_level_names(void **state)
{
    (void)state;
    assert_int_equal(clr_log_level_parse("debug"), CLR_LOG_DEBUG);
    assert_int_equal(clr_log_level_parse("info"), CLR_LOG_INFO);
    assert_int_equal(clr_log_level_parse("warn"), CLR_LOG_WARN);
    assert_int_equal(clr_log_level_parse("error"), CLR_LOG_ERROR);
    assert_int_equal(clr_log_level_parse("WARN"), -1);
    assert_int_equal(clr_log_level_parse(""), -1);
    assert_int_equal(clr_log_level_parse("warning"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_line_per_event_fields_kept),
        cmocka_unit_test(test_level_filters),
        cmocka_unit_test(test_level_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
