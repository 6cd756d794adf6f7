/* Coverage builds' collection of the agent's counters (lib/coverage.c, agent/coverage.c),
 * compiled here with CLR_COVERAGE whatever the build: the mount added to a container spec (and
 * nothing in its environment), what is refused, and the variables kept from user commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>

#include "clearing/common.h"
#include "../../agent/coverage.h"
#include "../../lib/coverage.h"

#define ID "sb-0123456789abcdef"

/* The shape container_spec() gives: two mounts (agent, workspace) and the sandbox's env. */
static json_t *spec_sample(void)
{
    return json_pack("{s:[s], s:{s:[{s:s}, {s:s}]}}", "Env", "LANG=C.UTF-8", "HostConfig",
                     "Mounts", "Target", "/opt/clearing/agent", "Target", "/workspace");
}

static void assert_unchanged(json_t *spec)
{
    json_t *mounts = json_object_get(json_object_get(spec, "HostConfig"), "Mounts");
    assert_int_equal(json_array_size(mounts), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mounts, 1), "Target")),
                        "/workspace");
    assert_int_equal(json_array_size(json_object_get(spec, "Env")), 1);
}

static void unset_adds_nothing(void **state)
{
    (void)state;
    json_auto_t *spec = spec_sample();
    clr_error err = CLR_ERROR_INIT;
    unsetenv("CLEARING_COVERAGE_DIR");
    assert_int_equal(clr_coverage_spec(spec, ID, &err), 0);
    assert_unchanged(spec);
    setenv("CLEARING_COVERAGE_DIR", "", 1);
    assert_int_equal(clr_coverage_spec(spec, ID, &err), 0);
    assert_unchanged(spec);
    unsetenv("CLEARING_COVERAGE_DIR");
}

static void adds_mount_only(void **state)
{
    (void)state;
    char dir[] = "/tmp/clr-test-coverage-XXXXXX";
    assert_non_null(mkdtemp(dir));
    setenv("CLEARING_COVERAGE_DIR", dir, 1);
    json_auto_t *spec = spec_sample();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_coverage_spec(spec, ID, &err), 0);

    char sub[512];
    snprintf(sub, sizeof(sub), "%s/%s", dir, ID);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);

    json_t *mounts = json_object_get(json_object_get(spec, "HostConfig"), "Mounts");
    assert_int_equal(json_array_size(mounts), 3);
    json_t *m = json_array_get(mounts, 2);
    assert_string_equal(json_string_value(json_object_get(m, "Type")), "bind");
    assert_string_equal(json_string_value(json_object_get(m, "Source")), sub);
    assert_string_equal(json_string_value(json_object_get(m, "Target")), CLR_COVERAGE_TARGET);
    assert_true(json_is_false(json_object_get(m, "ReadOnly")));
    /* Not in the container's environment: /proc/1/environ shows that to every command. */
    json_t *env = json_object_get(spec, "Env");
    assert_int_equal(json_array_size(env), 1);
    assert_string_equal(json_string_value(json_array_get(env, 0)), "LANG=C.UTF-8");

    /* The same sandbox again (its directory exists): accepted. */
    json_auto_t *again = spec_sample();
    assert_int_equal(clr_coverage_spec(again, ID, &err), 0);
    assert_int_equal(json_array_size(json_object_get(json_object_get(again, "HostConfig"),
                                                     "Mounts")),
                     3);

    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(dir), 0);
    unsetenv("CLEARING_COVERAGE_DIR");
}

static void refuses_bad_directories(void **state)
{
    (void)state;
    json_auto_t *spec = spec_sample();
    clr_error err = CLR_ERROR_INIT;
    setenv("CLEARING_COVERAGE_DIR", "relative/cov", 1);
    assert_int_equal(clr_coverage_spec(spec, ID, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "not an absolute path"));
    assert_unchanged(spec);

    clr_error err2 = CLR_ERROR_INIT;
    setenv("CLEARING_COVERAGE_DIR", "/nonexistent-clearing-coverage/dir", 1);
    assert_int_equal(clr_coverage_spec(spec, ID, &err2), -1);
    assert_int_equal(err2.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err2.message, "/nonexistent-clearing-coverage/dir/" ID));
    assert_non_null(strstr(err2.message, "existing directory"));
    assert_unchanged(spec);
    unsetenv("CLEARING_COVERAGE_DIR");
}

static void refuses_spec_without_arrays(void **state)
{
    (void)state;
    char dir[] = "/tmp/clr-test-coverage-XXXXXX";
    assert_non_null(mkdtemp(dir));
    setenv("CLEARING_COVERAGE_DIR", dir, 1);
    json_auto_t *spec = json_pack("{s:[], s:{}}", "Env", "HostConfig");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_coverage_spec(spec, ID, &err), -1);
    assert_int_equal(err.code, CLR_E_INTERNAL);
    assert_non_null(strstr(err.message, "Mounts"));
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/%s", dir, ID);
    rmdir(sub);
    assert_int_equal(rmdir(dir), 0);
    unsetenv("CLEARING_COVERAGE_DIR");
}

/* agent/coverage.c: exactly the two variables the daemon sets are kept from commands. */
static void agent_hides_only_its_variables(void **state)
{
    (void)state;
    assert_true(agent_coverage_env("GCOV_PREFIX=/clearing-coverage"));
    assert_true(agent_coverage_env("GCOV_PREFIX_STRIP=0"));
    assert_true(agent_coverage_env("GCOV_PREFIX="));
    assert_false(agent_coverage_env("GCOV_PREFIXX=1"));
    assert_false(agent_coverage_env("GCOV_PREFIX"));
    assert_false(agent_coverage_env("MY_GCOV_PREFIX=1"));
    assert_false(agent_coverage_env("PATH=/usr/bin"));
    assert_false(agent_coverage_env(""));
    /* The agent looks for the mount where the daemon puts it. */
    assert_string_equal(AGENT_COVERAGE_DIR, CLR_COVERAGE_TARGET);
    /* Without GCOV_PREFIX the flush writes nothing (and must not crash). */
    unsetenv("GCOV_PREFIX");
    agent_coverage_flush();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_adds_nothing),
        cmocka_unit_test(adds_mount_only),
        cmocka_unit_test(refuses_bad_directories),
        cmocka_unit_test(refuses_spec_without_arrays),
        cmocka_unit_test(agent_hides_only_its_variables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
