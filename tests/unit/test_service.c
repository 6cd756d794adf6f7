/* lib/service.c, the daemon's wiring, against the scripted engine of fake_engine.h and a state
 * directory in a temporary directory: what a start refuses, and that a refused start leaves
 * nothing running (no thread, no lock on the state directory, the engine not asked when the
 * refusal comes first: fail closed); a start that succeeds (the engine's runtime checked, the
 * recovery's list asked for, the verdict key made and its making audited, the state directory
 * locked, so a second start on it is refused), then a stop that joins every thread and lets the
 * lock go, so that the next start on the same directory works. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/service.h"
#include "fake_engine.h"
#include "test_service_env.h"

#define INFO "GET /v1.41/info"
#define LIST "GET /v1.41/containers/json"
#define EVENTS "GET /v1.41/events"
#define RUNSC "{\"Runtimes\":{\"runsc\":{\"path\":\"/x/runsc\"}}}"

struct fixture {
    struct fake *f;
    char dir[64];   /* the test's temporary directory */
    char state[96]; /* the state directory, in it */
    size_t threads; /* the process's threads before the test started a service */
};

/* The threads of this process now. */
static size_t n_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    fx->f = f;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/clr-test-service-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->state, sizeof(fx->state), "%s/state", fx->dir);
    /* An engine with runsc and no containers; its event stream holds (an upgraded connection
     * that carries nothing) until the stop cuts it. */
    fake_answer(fx->f, INFO, 200, RUNSC);
    fake_answer(fx->f, LIST, 200, "[]");
    fake_answer(fx->f, EVENTS, 101, NULL);
    fx->threads = n_threads();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    if (strncmp(fx->dir, "/tmp/clr-test-service-", 22) == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fx->dir);
    void *f = fx->f;
    fake_teardown(&f);
    free(fx);
    return 0;
}

static clr_service_config config(struct fixture *fx)
{
    clr_service_config c = CLR_SERVICE_CONFIG_INIT;
    c.state_dir = fx->state;
    c.docker_host = fx->f->sock;
    c.reaper_interval_ms = 600000; /* no reaper pass during a test */
    return c;
}

/* Waits (60 s at most) until the service's threads are gone: the process has no more threads
 * than before the test started one (the fake's connection threads end with their
 * connections). */
static void expect_no_threads_left(struct fixture *fx)
{
    for (int i = 0; i < 6000 && n_threads() > fx->threads; i++)
        usleep(10000);
    if (n_threads() > fx->threads)
        fail_msg("%zu threads, %zu before the start", n_threads(), fx->threads);
}

/* Whether the state directory's lock is free: taken (and let go) here if it is. */
static bool lock_free(struct fixture *fx)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/daemon.lock", fx->state);
    int fd = open(p, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT;
    bool free_ = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd); /* and with it the lock, if it was taken here */
    return free_;
}

static void expect_refused(struct fixture *fx, const clr_service_config *c, clr_error_code code,
                           const char *needle)
{
    clr_service *svc = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&svc, c, &err), -1);
    assert_null(svc);
    assert_int_equal(err.code, code);
    if (!strstr(err.message, needle))
        fail_msg("expected \"%s\" in: %s", needle, err.message);
    /* Nothing started: no recovery (the engine's list), no thread, no lock held. */
    assert_int_equal(fake_count(fx->f, LIST), 0);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));
}

/* ---- refusals ---- */

static void test_refused_settings(void **state)
{
    struct fixture *fx = *state;
    clr_service_config c = config(fx);
    c.limits.memory_bytes = 1;
    expect_refused(fx, &c, CLR_E_INVALID, "default limits");
    c = config(fx);
    c.max_sandboxes = 0;
    expect_refused(fx, &c, CLR_E_INVALID, "must be positive");
    c = config(fx);
    const char *const empty[] = {"", NULL};
    c.allowed_images = empty;
    expect_refused(fx, &c, CLR_E_INVALID, "at least one non-empty pattern");
    c = config(fx);
    const char *const other[] = {"other/*", NULL};
    c.allowed_images = other;
    expect_refused(fx, &c, CLR_E_DENIED, "the default image (setting image)");
    /* Only runc may replace runsc: refused before the engine is asked. */
    c = config(fx);
    c.insecure_runtime = "kata";
    expect_refused(fx, &c, CLR_E_INVALID, "setting insecure_runtime");
    assert_int_equal(fake_count(fx->f, INFO), 0);
}

static void test_refused_engine_not_answering(void **state)
{
    struct fixture *fx = *state;
    clr_service_config c = config(fx);
    char nowhere[128];
    snprintf(nowhere, sizeof(nowhere), "%s/no-engine.sock", fx->dir);
    c.docker_host = nowhere;
    expect_refused(fx, &c, CLR_E_UNAVAILABLE, "no-engine.sock");
    assert_int_equal(fake_count(fx->f, "GET"), 0);
}

static void test_refused_runtime_not_registered(void **state)
{
    struct fixture *fx = *state;
    fake_answer(fx->f, INFO, 200, "{\"Runtimes\":{\"runc\":{\"path\":\"/x/runc\"}}}");
    clr_service_config c = config(fx);
    expect_refused(fx, &c, CLR_E_UNAVAILABLE, "'runsc' is not registered");
    assert_int_equal(fake_count(fx->f, INFO), 1); /* the engine was asked, and answered */

    /* runc asked for, not registered either. */
    fake_answer(fx->f, INFO, 200, RUNSC);
    c.insecure_runtime = "runc";
    expect_refused(fx, &c, CLR_E_UNAVAILABLE, "runtime 'runc' (setting insecure_runtime)");
    assert_int_equal(fake_count(fx->f, INFO), 2);

    /* The engine failing the question. */
    fake_answer(fx->f, INFO, 500, "{\"message\":\"engine trouble\"}");
    c.insecure_runtime = NULL;
    expect_refused(fx, &c, CLR_E_ENGINE, "engine trouble");
    assert_int_equal(fake_count(fx->f, INFO), 3);
}

static void test_refused_state_dir_unusable(void **state)
{
    struct fixture *fx = *state;
    /* The state directory's parent is a regular file. */
    char file[128], st[160];
    snprintf(file, sizeof(file), "%s/a-file", fx->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(st, sizeof(st), "%s/state", file);
    clr_service_config c = config(fx);
    c.state_dir = st;
    expect_refused(fx, &c, CLR_E_UNAVAILABLE, "check that the state directory exists");
    assert_int_equal(fake_count(fx->f, "GET"), 0);

    /* Its database cannot be opened (a directory where the file goes). */
    char db[160];
    snprintf(db, sizeof(db), "%s/db-dir", fx->dir);
    assert_int_equal(mkdir(db, 0700), 0);
    c = config(fx);
    c.db_path = db;
    clr_service *svc = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&svc, &c, &err), -1);
    assert_null(svc);
    assert_int_equal(fake_count(fx->f, "GET"), 0);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));
}

static void test_refused_audit_unwritable(void **state)
{
    struct fixture *fx = *state;
    char file[128], audit[160];
    snprintf(file, sizeof(file), "%s/a-file", fx->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(audit, sizeof(audit), "%s/audit.log", file);
    clr_service_config c = config(fx);
    c.audit_path = audit;
    clr_service *svc = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&svc, &c, &err), -1);
    assert_null(svc);
    if (!strstr(err.message, "audit.log"))
        fail_msg("expected the audit log named in: %s", err.message);
    /* Fail closed: the engine not even asked, nothing running, the lock let go. */
    assert_int_equal(fake_count(fx->f, "GET"), 0);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));

    /* The audit log a directory. */
    snprintf(audit, sizeof(audit), "%s/audit-dir", fx->dir);
    assert_int_equal(mkdir(audit, 0700), 0);
    c.audit_path = audit;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&svc, &c, &err), -1);
    assert_null(svc);
    assert_int_equal(fake_count(fx->f, "GET"), 0);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));
}

/* A verdict key that would sign nothing trustworthy: plans would run unsigned, so no start. */
static void test_refused_verdict_key(void **state)
{
    struct fixture *fx = *state;
    char key[128];
    snprintf(key, sizeof(key), "%s/verdict.key", fx->dir);
    FILE *fp = fopen(key, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(chmod(key, 0644), 0);
    clr_service_config c = config(fx);
    c.verdict_key = key;
    expect_refused(fx, &c, CLR_E_DENIED, "is readable by others (mode 644)");
    snprintf(key, sizeof(key), "%s/key-dir", fx->dir);
    assert_int_equal(mkdir(key, 0700), 0);
    c.verdict_key = key;
    expect_refused(fx, &c, CLR_E_DENIED, "is not a regular file");
    assert_int_equal(fake_count(fx->f, "GET"), 0);
}

/* The recovery refused (the engine's list failing): the remover thread, started before it, is
 * joined again and the lock let go. */
static void test_refused_recovery(void **state)
{
    struct fixture *fx = *state;
    fake_answer(fx->f, LIST, 500, "{\"message\":\"engine trouble\"}");
    clr_service_config c = config(fx);
    clr_service *svc = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&svc, &c, &err), -1);
    assert_null(svc);
    if (!strstr(err.message, "recovering state") || !strstr(err.message, "engine trouble"))
        fail_msg("unexpected: %s", err.message);
    assert_int_equal(fake_count(fx->f, LIST), 1);
    assert_int_equal(fake_count(fx->f, EVENTS), 0); /* no watcher was started */
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));
}

/* ---- start and stop ---- */

static void test_start_stop_start(void **state)
{
    struct fixture *fx = *state;
    clr_service_config c = config(fx);
    clr_service *svc = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_start(&svc, &c, &err) != 0)
        fail_msg("start: %s", err.message);
    assert_non_null(svc);
    /* The runtime checked, the recovery's list asked for; threads running, the lock held by
     * this process, the verdict key made and its making audited. */
    assert_int_equal(fake_count(fx->f, INFO), 1);
    assert_int_equal(fake_count(fx->f, LIST), 1);
    assert_true(n_threads() > fx->threads);
    assert_false(lock_free(fx));
    char p[160], pid[32];
    snprintf(p, sizeof(p), "%s/daemon.lock", fx->state);
    char *holder = test_read_text(p);
    snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    assert_string_equal(holder, pid);
    free(holder);
    snprintf(p, sizeof(p), "%s/verdict.key", fx->state);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    snprintf(p, sizeof(p), "%s/audit.log", fx->state);
    char *audit = test_read_text(p);
    assert_non_null(strstr(audit, "verdict_key.create"));
    free(audit);
    json_t *list = NULL;
    if (clr_service_list(svc, NULL, NULL, NULL, &list, &err) != 0)
        fail_msg("list: %s", err.message);
    assert_true(json_is_array(json_object_get(list, "sandboxes")) || json_is_array(list));
    json_decref(list);

    /* A second daemon on the same state directory: refused (after a wait for the first to
     * stop), naming the holder. */
    clr_service *second = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_start(&second, &c, &err), -1);
    assert_null(second);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    snprintf(pid, sizeof(pid), "(pid %ld)", (long)getpid());
    if (!strstr(err.message, pid) || !strstr(err.message, "in use by another clearing daemon"))
        fail_msg("unexpected: %s", err.message);
    assert_int_equal(fake_count(fx->f, INFO), 1); /* it asked nothing */

    /* The event watcher connected (once: its stream holds); the stop must cut it. */
    for (int i = 0; i < 6000 && fake_count(fx->f, EVENTS) == 0; i++)
        usleep(10000);
    assert_int_equal(fake_count(fx->f, EVENTS), 1);

    /* The stop: every thread joined, the lock let go. */
    clr_service_stop(svc);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));

    /* So the next start on the same directory works (this time with the images the operator
     * allows named); the key is loaded, not made again. */
    const char *const ours[] = {"clearing/*", NULL};
    c.allowed_images = ours;
    svc = NULL;
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_service_start(&svc, &c, &err) != 0)
        fail_msg("start again: %s", err.message);
    assert_int_equal(fake_count(fx->f, INFO), 2);
    assert_int_equal(fake_count(fx->f, LIST), 2);
    snprintf(p, sizeof(p), "%s/audit.log", fx->state);
    audit = test_read_text(p);
    char *first = strstr(audit, "verdict_key.create");
    assert_non_null(first);
    assert_null(strstr(first + 1, "verdict_key.create"));
    free(audit);
    clr_service_stop(svc);
    expect_no_threads_left(fx);
    assert_true(lock_free(fx));
    clr_service_stop(NULL); /* nothing to stop: fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_engine_not_answering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_runtime_not_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_state_dir_unusable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_audit_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_verdict_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_stop_start, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
