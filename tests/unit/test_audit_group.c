/* The audit log's group commit (lib/audit_chain.c): appends of concurrent threads share one
 * fdatasync, each returns only once a sync that began after its write succeeded, and a sync that
 * fails refuses (and cuts) every record it was to make durable. fdatasync is interposed here: the
 * test binary's definition is the one the library calls. No timing: the first sync of each test
 * holds until every thread's line is in the file (a generous deadline only bounds a hang). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/audit.h"

#define THREADS 8
#define DEADLINE_S 60

static char log_path[128];
static atomic_int syncs;       /* fdatasync calls since the test armed the hook */
static atomic_int hold_lines;  /* the first sync waits until the log has this many lines */
static atomic_bool fail_first; /* the first sync fails with EIO */
static atomic_bool armed;

static int count_lines(void)
{
    FILE *f = fopen(log_path, "r");
    int n = 0, c;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

int fdatasync(int fd)
{
    if (atomic_load(&armed) && atomic_fetch_add(&syncs, 1) == 0) {
        time_t until = time(NULL) + DEADLINE_S;
        while (count_lines() < atomic_load(&hold_lines) && time(NULL) < until)
            usleep(1000);
        if (atomic_load(&fail_first)) {
            errno = EIO;
            return -1;
        }
    }
    return (int)syscall(SYS_fdatasync, fd);
}

static clr_audit *open_log(void)
{
    snprintf(log_path, sizeof(log_path), "/tmp/clr-test-audit-group-XXXXXX");
    if (!mkdtemp(log_path))
        fail_msg("mkdtemp: %s", strerror(errno));
    strcat(log_path, "/audit.log");
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = log_path;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_open(&a, &o, &err) != 0)
        fail_msg("clr_audit_open(%s): %s", log_path, err.message);
    return a;
}

static void remove_log(void)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s", log_path);
    char cmd[300];
    *strrchr(dir, '/') = '\0';
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

struct appender {
    clr_audit *a;
    int rc;
    clr_error err;
    pthread_t t;
};

static void *append_one(void *p)
{
    struct appender *ap = p;
    json_t *d = json_pack("{s:s}", "exec_id", "ex-group");
    ap->err = (clr_error)CLR_ERROR_INIT;
    ap->rc = clr_audit_append(ap->a, "tester", NULL, "exec.start", "ok", d, &ap->err);
    json_decref(d);
    return NULL;
}

static void run_appenders(clr_audit *a, struct appender *ap, int n)
{
    for (int i = 0; i < n; i++) {
        ap[i].a = a;
        assert_int_equal(pthread_create(&ap[i].t, NULL, append_one, &ap[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(ap[i].t, NULL);
}

static uint64_t verified_records(void)
{
    clr_audit_verify_report r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_verify_log(&r, log_path, NULL, false, &err), 0);
    if (!r.ok)
        fail_msg("chain broken at line %llu: %s", (unsigned long long)r.line, r.problem);
    return r.records;
}

/* 8 appends at once: the first sync holds until all 8 lines are written, so the other 7 share
 * the second. Every append succeeded, the chain verifies, and 8 records took 2 syncs. */
static void test_concurrent_appends_share_one_sync(void **state)
{
    (void)state;
    clr_audit *a = open_log();
    atomic_store(&syncs, 0);
    atomic_store(&hold_lines, THREADS);
    atomic_store(&fail_first, false);
    atomic_store(&armed, true);
    struct appender ap[THREADS];
    run_appenders(a, ap, THREADS);
    atomic_store(&armed, false);
    for (int i = 0; i < THREADS; i++) {
        if (ap[i].rc != 0)
            fail_msg("append %d: %s", i, ap[i].err.message);
    }
    assert_int_equal(count_lines(), THREADS);
    assert_int_equal(atomic_load(&syncs), 2);
    clr_audit_close(a);
    assert_int_equal(verified_records(), THREADS);
    remove_log();
}

/* The first sync fails while 4 more lines wait behind it: all 5 appends are refused (their
 * actions must not run), their lines are cut, and the next append continues the chain from the
 * record before them. */
static void test_failed_sync_refuses_and_cuts_every_waiting_record(void **state)
{
    (void)state;
    clr_audit *a = open_log();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_append(a, "tester", NULL, "before", "ok", NULL, &err), 0);
    assert_int_equal(count_lines(), 1);
    atomic_store(&syncs, 0);
    atomic_store(&hold_lines, 1 + 5);
    atomic_store(&fail_first, true);
    atomic_store(&armed, true);
    struct appender ap[5];
    run_appenders(a, ap, 5);
    atomic_store(&armed, false);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ap[i].rc, -1);
        assert_non_null(strstr(ap[i].err.message, "the action is refused"));
        assert_int_equal(ap[i].err.errnum, EIO);
    }
    assert_int_equal(count_lines(), 1);
    char why[512];
    assert_false(clr_audit_writable(a, why, sizeof(why)));
    assert_int_equal(clr_audit_append(a, "tester", NULL, "after", "ok", NULL, &err), 0);
    assert_true(clr_audit_writable(a, why, sizeof(why)));
    assert_int_equal(count_lines(), 2);
    clr_audit_close(a);
    assert_int_equal(verified_records(), 2);
    remove_log();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_appends_share_one_sync),
        cmocka_unit_test(test_failed_sync_refuses_and_cuts_every_waiting_record),
    };
    return cmocka_run_group_tests_name("audit_group", tests, NULL, NULL);
}
