/* A helper program run with a deadline (lib/spawn.c): its output captured and cut to the buffer,
 * stderr only when asked, its exit status or signal, a program that cannot start refused, and
 * one still running at the deadline killed (the outcome is checked, never the time taken). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clearing/spawn.h"

static int sh(const char *script, bool with_stderr, int timeout_ms, char *out, size_t len)
{
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)script, NULL};
    int status = -1;
    clr_error err = CLR_ERROR_INIT;
    if (clr_spawn_capture(argv, with_stderr, timeout_ms, out, len, &status, &err) < 0)
        fail_msg("could not run /bin/sh: %s", err.message);
    return status;
}

static void test_output_and_status(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(sh("echo hello; echo oops >&2; exit 3", false, 60000, out, sizeof(out)), 3);
    assert_string_equal(out, "hello\n"); /* stderr not asked for */
    assert_int_equal(sh("echo hello; echo oops >&2", true, 60000, out, sizeof(out)), 0);
    assert_string_equal(out, "hello\noops\n");
    assert_int_equal(sh("true", false, 60000, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    /* stdin is /dev/null: a program reading it ends at once. */
    assert_int_equal(sh("cat; echo done", false, 60000, out, sizeof(out)), 0);
    assert_string_equal(out, "done\n");
}

static void test_long_output_is_cut_and_drained(void **state)
{
    (void)state;
    char out[8];
    /* 100 KB: more than a pipe holds, so the program finishes only if the rest is read. */
    assert_int_equal(sh("head -c 100000 /dev/zero | tr '\\0' x; exit 7", false, 60000, out,
                        sizeof(out)),
                     7);
    assert_string_equal(out, "xxxxxxx");
}

static void test_signal_status(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(sh("kill -TERM $$", false, 60000, out, sizeof(out)), 128 + 15);
}

static void test_cannot_start(void **state)
{
    (void)state;
    char out[16] = "untouched";
    char *argv[] = {(char *)"/nonexistent/clr-no-such-program", NULL};
    int status = -1;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_spawn_capture(argv, true, 1000, out, sizeof(out), &status, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "/nonexistent/clr-no-such-program"));
    assert_string_equal(out, "");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The median wall time (ms) of a trivial shell run here: this run's scale for starting a
 * program, which a loaded host (or a sanitizer) stretches. */
static int start_overhead_ms(void)
{
    int64_t took[3];
    char out[8];
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ms();
        assert_int_equal(sh("true", false, 60000, out, sizeof(out)), 0);
        took[i] = now_ms() - t0;
    }
    int64_t lo = took[0] < took[1] ? took[0] : took[1];
    int64_t hi = took[0] < took[1] ? took[1] : took[0];
    return (int)(took[2] < lo ? lo : took[2] > hi ? hi : took[2]);
}

/* Still running at the deadline, with or without its output open: killed, and what it wrote
 * before is kept. The first line shows the program ran (the positive control): the shell's
 * start and its echo come before the deadline, 300 ms or 50 trivial shell runs on this host. */
static void test_deadline_kills(void **state)
{
    (void)state;
    char out[64];
    int overhead = start_overhead_ms();
    int deadline = overhead * 50 > 300 ? overhead * 50 : 300;
    assert_int_equal(sh("echo started; exec sleep 1000", false, deadline, out, sizeof(out)),
                     128 + 9);
    assert_string_equal(out, "started\n");
    assert_int_equal(
        sh("echo started; exec sleep 1000 >/dev/null", false, deadline, out, sizeof(out)),
        128 + 9);
    assert_string_equal(out, "started\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_and_status),
        cmocka_unit_test(test_long_output_is_cut_and_drained),
        cmocka_unit_test(test_signal_status),
        cmocka_unit_test(test_cannot_start),
        cmocka_unit_test(test_deadline_kills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
