/* A command's start, the parts that are data: the environment it gets (the container's, with the
 * request's entries added or replacing) and the resource limits set in it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "command.h"

static size_t count(char **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static void test_env_request_overrides_and_adds(void **state)
{
    (void)state;
    char *base[] = {"PATH=/usr/bin", "HOME=/home/sandbox", "LANG=C.UTF-8", NULL};
    char *req[] = {"HOME=/workspace", "A=1", NULL};
    char **env = agent_command_env(base, req);
    assert_ptr_not_equal(env, req);
    /* the container's first, in order, without the replaced entry; then the request's */
    assert_int_equal(count(env), 4);
    assert_string_equal(env[0], "PATH=/usr/bin");
    assert_string_equal(env[1], "LANG=C.UTF-8");
    assert_string_equal(env[2], "HOME=/workspace");
    assert_string_equal(env[3], "A=1");
    assert_null(env[4]);
    /* the strings are borrowed, not copied */
    assert_ptr_equal(env[0], base[0]);
    assert_ptr_equal(env[2], req[0]);
    free(env);
}

static void test_env_last_duplicate_request_entry_wins(void **state)
{
    (void)state;
    char *base[] = {"A=base", NULL};
    char *req[] = {"A=first", "B=1", "A=last", NULL};
    char **env = agent_command_env(base, req);
    assert_int_equal(count(env), 2);
    assert_string_equal(env[0], "B=1");
    assert_string_equal(env[1], "A=last");
    free(env);
}

/* A name is matched whole: A=1 does not replace AB=2, and AB=2 does not replace A=1. */
static void test_env_names_match_whole(void **state)
{
    (void)state;
    char *base[] = {"AB=2", "A=0", NULL};
    char *req[] = {"A=1", NULL};
    char **env = agent_command_env(base, req);
    assert_int_equal(count(env), 2);
    assert_string_equal(env[0], "AB=2");
    assert_string_equal(env[1], "A=1");
    free(env);
    char *base2[] = {"A=0", NULL};
    char *req2[] = {"AB=2", NULL};
    env = agent_command_env(base2, req2);
    assert_int_equal(count(env), 2);
    assert_string_equal(env[0], "A=0");
    assert_string_equal(env[1], "AB=2");
    free(env);
}

static void test_env_empty_request_keeps_container(void **state)
{
    (void)state;
    char *base[] = {"PATH=/bin", NULL};
    char *req[] = {NULL};
    char **env = agent_command_env(base, req);
    assert_int_equal(count(env), 1);
    assert_string_equal(env[0], "PATH=/bin");
    free(env);
    /* no container environment at all: the request's alone */
    char *req2[] = {"X=1", NULL};
    env = agent_command_env(NULL, req2);
    assert_int_equal(count(env), 1);
    assert_string_equal(env[0], "X=1");
    if (env != req2)
        free(env);
}

static void test_rlimits_only_what_is_asked(void **state)
{
    (void)state;
    struct agent_request req;
    memset(&req, 0, sizeof(req));
    struct agent_rlimit lim[AGENT_MAX_RLIMITS];
    assert_int_equal(agent_command_rlimits(&req, lim), 0);

    req.nofile = 64;
    assert_int_equal(agent_command_rlimits(&req, lim), 1);
    assert_int_equal(lim[0].resource, RLIMIT_NOFILE);
    assert_int_equal(lim[0].value, 64);
}

static void test_rlimits_all_in_order(void **state)
{
    (void)state;
    struct agent_request req;
    memset(&req, 0, sizeof(req));
    req.nproc = 128;
    req.nofile = 1024;
    req.fsize = 1ull << 30;
    req.memory = 1ull << 29; /* enforced by sampling, never an rlimit */
    struct agent_rlimit lim[AGENT_MAX_RLIMITS];
    assert_int_equal(agent_command_rlimits(&req, lim), 3);
    assert_int_equal(lim[0].resource, RLIMIT_NPROC);
    assert_int_equal(lim[0].value, 128);
    assert_int_equal(lim[1].resource, RLIMIT_NOFILE);
    assert_int_equal(lim[1].value, 1024);
    assert_int_equal(lim[2].resource, RLIMIT_FSIZE);
    assert_int_equal(lim[2].value, 1ull << 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_request_overrides_and_adds),
        cmocka_unit_test(test_env_last_duplicate_request_entry_wins),
        cmocka_unit_test(test_env_names_match_whole),
        cmocka_unit_test(test_env_empty_request_keeps_container),
        cmocka_unit_test(test_rlimits_only_what_is_asked),
        cmocka_unit_test(test_rlimits_all_in_order),
    };
    return cmocka_run_group_tests_name("agent_command", tests, NULL, NULL);
}
