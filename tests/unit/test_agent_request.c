/* The agent's request decoder: the one parser inside the sandbox that turns host bytes into an
 * execve(). It must never run a command as root, never cut an argument at an embedded NUL, and
 * never allocate without bound, whatever the payload says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "request.h"
#include "util.h"

static struct clr_tlv_builder *builder(void)
{
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    clr_tlv_init(b);
    return b;
}

static void parse_bad(struct clr_tlv_builder *b, const char *want_in_message)
{
    assert_false(b->overflow);
    struct agent_request req;
    char err[256] = "";
    if (agent_request_parse(&req, b->buf, b->len, err, sizeof(err)) == 0) {
        agent_request_clear(&req);
        fail_msg("request accepted; expected an error about '%s'", want_in_message);
    }
    if (!strstr(err, want_in_message))
        fail_msg("message '%s' does not mention '%s'", err, want_in_message);
    /* A failed parse leaves nothing to free. */
    assert_null(req.argv);
    assert_null(req.envp);
    assert_null(req.cwd);
    assert_int_equal(req.argc, 0);
}

static void test_request_full_decode(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "/bin/sh");
    clr_tlv_put_str(b, CLR_REQ_ARG, "-c");
    clr_tlv_put_str(b, CLR_REQ_ARG, "echo \"$A\" ; exit 3");
    clr_tlv_put_str(b, CLR_REQ_ARG, "");
    clr_tlv_put_str(b, CLR_REQ_ENV, "A=1");
    clr_tlv_put_str(b, CLR_REQ_ENV, "PATH=/usr/bin:/bin");
    clr_tlv_put_str(b, CLR_REQ_CWD, "/workspace/src");
    clr_tlv_put_u64(b, CLR_REQ_TIMEOUT_MS, 5000);
    clr_tlv_put_u64(b, CLR_REQ_STDOUT_CAP, 1 << 20);
    clr_tlv_put_u64(b, CLR_REQ_STDERR_CAP, 4096);
    clr_tlv_put_u64(b, CLR_REQ_UID, 1001);
    clr_tlv_put_u64(b, CLR_REQ_GID, 1002);
    clr_tlv_put_u64(b, CLR_REQ_NPROC, 256);
    clr_tlv_put_u64(b, CLR_REQ_MEMORY, 512ull << 20);
    clr_tlv_put_u64(b, CLR_REQ_NOFILE, 1024);
    clr_tlv_put_u64(b, CLR_REQ_FSIZE, 1ull << 30);
    clr_tlv_put_u64(b, CLR_REQ_MEMORY_SOURCE, CLR_MEMORY_MEMINFO);
    clr_tlv_put_u64(b, CLR_REQ_STREAM, 1);
    assert_false(b->overflow);

    struct agent_request req;
    char err[256] = "";
    if (agent_request_parse(&req, b->buf, b->len, err, sizeof(err)) != 0)
        fail_msg("refused: %s", err);
    assert_int_equal(req.argc, 4);
    assert_string_equal(req.argv[0], "/bin/sh");
    assert_string_equal(req.argv[1], "-c");
    assert_string_equal(req.argv[2], "echo \"$A\" ; exit 3");
    assert_string_equal(req.argv[3], "");
    assert_null(req.argv[4]);
    assert_int_equal(req.envc, 2);
    assert_string_equal(req.envp[0], "A=1");
    assert_string_equal(req.envp[1], "PATH=/usr/bin:/bin");
    assert_null(req.envp[2]);
    assert_string_equal(req.cwd, "/workspace/src");
    assert_int_equal(req.timeout_ms, 5000);
    assert_int_equal(req.stdout_cap, 1 << 20);
    assert_int_equal(req.stderr_cap, 4096);
    assert_int_equal(req.uid, 1001);
    assert_int_equal(req.gid, 1002);
    assert_int_equal(req.nproc, 256);
    assert_int_equal(req.memory, 512ull << 20);
    assert_int_equal(req.nofile, 1024);
    assert_int_equal(req.fsize, 1ull << 30);
    assert_int_equal(req.memory_source, CLR_MEMORY_MEMINFO);
    assert_int_equal(req.stream, 1);
    agent_request_clear(&req);
    assert_null(req.argv);
    free(b);
}

static void test_request_defaults_unprivileged_user_and_empty_env(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "true");
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    assert_int_equal(req.uid, 1000);
    assert_int_equal(req.gid, 1000);
    assert_int_equal(req.argc, 1);
    assert_null(req.cwd);
    /* execve() gets an empty, NULL-terminated environment, and the count agrees. */
    assert_non_null(req.envp);
    assert_null(req.envp[0]);
    assert_int_equal(req.envc, 0);
    assert_int_equal(req.nproc, 0);
    assert_int_equal(req.memory, 0);
    agent_request_clear(&req);
    free(b);
}

static void test_request_last_cwd_wins(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_CWD, "/first");
    clr_tlv_put_str(b, CLR_REQ_ARG, "pwd");
    clr_tlv_put_str(b, CLR_REQ_CWD, "/second");
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    assert_string_equal(req.cwd, "/second");
    agent_request_clear(&req);
    free(b);
}

static void test_request_empty_argv_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ENV, "A=1");
    clr_tlv_put_str(b, CLR_REQ_CWD, "/workspace");
    parse_bad(b, "empty command");
    clr_tlv_init(b);
    parse_bad(b, "empty command"); /* an empty payload too */
    free(b);
}

static void test_request_uid_zero_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put_u64(b, CLR_REQ_UID, 0);
    parse_bad(b, "uid/gid 0");
    free(b);
}

static void test_request_gid_zero_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put_u64(b, CLR_REQ_GID, 0);
    parse_bad(b, "uid/gid 0");
    free(b);
}

/* uid_t is 32 bits: 2^32 must not wrap around to root. */
static void test_request_uid_wrapping_to_zero_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put_u64(b, CLR_REQ_UID, 1ull << 32);
    parse_bad(b, "uid/gid 0");
    clr_tlv_init(b);
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put_u64(b, CLR_REQ_GID, 1ull << 32);
    parse_bad(b, "uid/gid 0");
    free(b);
}

static void test_request_root_after_good_uid_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_REQ_UID, 1000);
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put_u64(b, CLR_REQ_UID, 0); /* a later field overrides an earlier one */
    parse_bad(b, "uid/gid 0");
    free(b);
}

static void test_request_nul_in_argument_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "rm");
    clr_tlv_put(b, CLR_REQ_ARG, "-rf\0/", 5);
    parse_bad(b, "NUL");
    free(b);
}

static void test_request_nul_in_env_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "env");
    clr_tlv_put(b, CLR_REQ_ENV, "A=1\0LD_PRELOAD=/x", 17);
    parse_bad(b, "NUL");
    free(b);
}

static void test_request_nul_in_cwd_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "pwd");
    clr_tlv_put(b, CLR_REQ_CWD, "/workspace\0/..", 14);
    parse_bad(b, "NUL");
    free(b);
}

static void test_request_args_up_to_max_accepted(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    for (int i = 0; i < CLR_PROTO_MAX_ARGS; i++)
        clr_tlv_put_str(b, CLR_REQ_ARG, "a");
    assert_false(b->overflow);
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    assert_int_equal(req.argc, CLR_PROTO_MAX_ARGS);
    assert_null(req.argv[CLR_PROTO_MAX_ARGS]);
    agent_request_clear(&req);
    free(b);
}

static void test_request_more_than_max_args_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    for (int i = 0; i < CLR_PROTO_MAX_ARGS + 1; i++)
        clr_tlv_put_str(b, CLR_REQ_ARG, "a");
    parse_bad(b, "too many");
    free(b);
}

static void test_request_more_than_max_env_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "env");
    for (int i = 0; i < CLR_PROTO_MAX_ENV + 1; i++)
        clr_tlv_put_str(b, CLR_REQ_ENV, "A=");
    parse_bad(b, "too many");
    free(b);
}

static void test_request_truncated_tlv_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "ls");
    clr_tlv_put_str(b, CLR_REQ_ARG, "-la");
    /* every proper prefix that ends inside a field */
    size_t first = 6 + 2;
    for (size_t n = 1; n < b->len; n++) {
        if (n == first)
            continue;
        struct agent_request req;
        char err[256] = "";
        int rc = agent_request_parse(&req, b->buf, n, err, sizeof(err));
        if (rc == 0) {
            agent_request_clear(&req);
            fail_msg("a request cut at %zu of %zu bytes was accepted", n, b->len);
        }
        if (n > first || n < 6)
            assert_non_null(strstr(err, "malformed"));
    }
    free(b);
}

static void test_request_length_past_buffer_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "ls");
    /* an ARG that claims 4 GiB */
    static const uint8_t huge[] = {0, CLR_REQ_ARG, 0xff, 0xff, 0xff, 0xff, 'x'};
    memcpy(b->buf + b->len, huge, sizeof(huge));
    b->len += sizeof(huge);
    parse_bad(b, "malformed");
    free(b);
}

static void test_request_integer_field_wrong_length_rejected(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "id");
    clr_tlv_put(b, CLR_REQ_UID, "\0\0\0\0", 4); /* a 32-bit 0 */
    parse_bad(b, "8-byte");
    free(b);
}

static void test_request_unknown_integer_field_ignored(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "true");
    clr_tlv_put_u64(b, 500, 1);
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    agent_request_clear(&req);
    free(b);
}

static void test_request_small_error_buffer_is_safe(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_u64(b, CLR_REQ_UID, 0);
    struct agent_request req;
    char err[5] = "xxxx";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, 4), -1);
    assert_int_equal(err[3], '\0');
    assert_int_equal(err[4], '\0'); /* the initialiser's terminator, untouched */
    free(b);
}

/* The message names the field that is wrong, so the host's log says what to fix. */
static void test_request_bad_integer_names_the_field(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "sleep");
    clr_tlv_put(b, CLR_REQ_TIMEOUT_MS, "\1\2\3", 3);
    parse_bad(b, "field 4: expected an 8-byte integer");
    free(b);
}

/* Limits are taken as given, the largest included: bounds are the daemon's to set. */
static void test_request_integers_at_their_maximum(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "true");
    clr_tlv_put_u64(b, CLR_REQ_TIMEOUT_MS, UINT64_MAX);
    clr_tlv_put_u64(b, CLR_REQ_STDOUT_CAP, UINT64_MAX);
    clr_tlv_put_u64(b, CLR_REQ_MEMORY, UINT64_MAX);
    clr_tlv_put_u64(b, CLR_REQ_UID, 65534);
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    assert_true(req.timeout_ms == UINT64_MAX);
    assert_true(req.stdout_cap == UINT64_MAX);
    assert_true(req.memory == UINT64_MAX);
    assert_int_equal(req.stderr_cap, 0); /* not given: 0 */
    assert_int_equal(req.uid, 65534);
    assert_int_equal(req.gid, 1000);
    agent_request_clear(&req);
    free(b);
}

/* Duplicate environment entries are all kept, in order: the last one wins when the command's
 * environment is built (agent_command_env). */
static void test_request_env_duplicates_kept_in_order(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ENV, "A=1");
    clr_tlv_put_str(b, CLR_REQ_ARG, "env");
    clr_tlv_put_str(b, CLR_REQ_ENV, "A=2");
    clr_tlv_put_str(b, CLR_REQ_ENV, "=");
    struct agent_request req;
    char err[256] = "";
    assert_int_equal(agent_request_parse(&req, b->buf, b->len, err, sizeof(err)), 0);
    assert_int_equal(req.envc, 3);
    assert_string_equal(req.envp[0], "A=1");
    assert_string_equal(req.envp[1], "A=2");
    assert_string_equal(req.envp[2], "=");
    assert_null(req.envp[3]);
    agent_request_clear(&req);
    free(b);
}

/* A refusal late in the payload, after arguments, environment and cwd were taken, leaves nothing
 * allocated and the request zeroed (parse_bad checks). */
static void test_request_late_refusal_releases_everything(void **state)
{
    (void)state;
    struct clr_tlv_builder *b = builder();
    clr_tlv_put_str(b, CLR_REQ_ARG, "ls");
    clr_tlv_put_str(b, CLR_REQ_ENV, "A=1");
    clr_tlv_put_str(b, CLR_REQ_CWD, "/tmp");
    clr_tlv_put_u64(b, CLR_REQ_TIMEOUT_MS, 10);
    clr_tlv_put(b, CLR_REQ_ENV, "B\0", 2);
    parse_bad(b, "NUL");
    free(b);
}

/* The agent's clock: monotonic nanoseconds. */
static void test_now_ns_is_monotonic(void **state)
{
    (void)state;
    uint64_t a = agent_now_ns();
    uint64_t b2 = agent_now_ns();
    assert_true(a > 0);
    assert_true(b2 >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_full_decode),
        cmocka_unit_test(test_request_defaults_unprivileged_user_and_empty_env),
        cmocka_unit_test(test_request_last_cwd_wins),
        cmocka_unit_test(test_request_empty_argv_rejected),
        cmocka_unit_test(test_request_uid_zero_rejected),
        cmocka_unit_test(test_request_gid_zero_rejected),
        cmocka_unit_test(test_request_uid_wrapping_to_zero_rejected),
        cmocka_unit_test(test_request_root_after_good_uid_rejected),
        cmocka_unit_test(test_request_nul_in_argument_rejected),
        cmocka_unit_test(test_request_nul_in_env_rejected),
        cmocka_unit_test(test_request_nul_in_cwd_rejected),
        cmocka_unit_test(test_request_args_up_to_max_accepted),
        cmocka_unit_test(test_request_more_than_max_args_rejected),
        cmocka_unit_test(test_request_more_than_max_env_rejected),
        cmocka_unit_test(test_request_truncated_tlv_rejected),
        cmocka_unit_test(test_request_length_past_buffer_rejected),
        cmocka_unit_test(test_request_integer_field_wrong_length_rejected),
        cmocka_unit_test(test_request_unknown_integer_field_ignored),
        cmocka_unit_test(test_request_small_error_buffer_is_safe),
        cmocka_unit_test(test_request_bad_integer_names_the_field),
        cmocka_unit_test(test_request_integers_at_their_maximum),
        cmocka_unit_test(test_request_env_duplicates_kept_in_order),
        cmocka_unit_test(test_request_late_refusal_releases_everything),
        cmocka_unit_test(test_now_ns_is_monotonic),
    };
    return cmocka_run_group_tests_name("agent_request", tests, NULL, NULL);
}
