/* lib/service/validate.c: the daemon's request parsers, without a daemon. Each test checks the
 * values a request produces (limits, durations, environment, commands, signals, trailers) and
 * what must be refused, with an error that names the field or the value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/plan.h"
#include "service/validate.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

/* rc is a refusal with code and a message that contains want. */
static void expect_refused(int rc, const clr_error *err, clr_error_code code, const char *want)
{
    assert_int_equal(rc, -1);
    assert_int_equal(err->code, code);
    if (!strstr(err->message, want))
        fail_msg("message \"%s\" does not say \"%s\"", err->message, want);
}

static void test_check_fields(void **state)
{
    (void)state;
    static const char *const allowed[] = {"a", "b", NULL};
    clr_error err = CLR_ERROR_INIT;
    json_t *ok = parse("{\"a\": 1, \"b\": 2}");
    assert_int_equal(svc_check_fields(ok, "request", allowed, &err), 0);
    json_t *bad = parse("{\"a\": 1, \"zz\": 2}");
    expect_refused(svc_check_fields(bad, "request", allowed, &err), &err, CLR_E_INVALID,
                   "request: unknown field 'zz'");
    json_t *arr = parse("[1]");
    expect_refused(svc_check_fields(arr, "limits", allowed, &err), &err, CLR_E_INVALID,
                   "limits must be a JSON object");
    json_decref(ok);
    json_decref(bad);
    json_decref(arr);
}

static void test_valid_id(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(svc_valid_id("sb-0123456789abcdef", &err), 0);
    expect_refused(svc_valid_id("sb-xyz", &err), &err, CLR_E_INVALID, "'sb-xyz' is not a sandbox id");
    expect_refused(svc_valid_id("../etc", &err), &err, CLR_E_INVALID, "'../etc'");
}

static void test_parse_create_values(void **state)
{
    (void)state;
    json_t *req = parse("{\"image\": \"clearing/x\", \"idle_timeout\": \"30s\","
                        " \"limits\": {\"cpus\": \"1.5\", \"memory\": \"512m\", \"pids\": 64,"
                        "  \"lifetime\": \"10m\", \"nofile\": 256},"
                        " \"env\": {\"A\": \"1\"}, \"metadata\": {\"k\": \"v\"},"
                        " \"repo\": {\"path\": \"/r\", \"base\": \"main\", \"branch\": \"b\","
                        "  \"reuse_branch\": true}}");
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    uint64_t idle_ms = 0, mem = 0;
    const char *repo = NULL;
    char **env = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (svc_parse_create(req, &o, &idle_ms, &repo, &env, &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_int_equal(clr_parse_size(&mem, "512m", &err), 0);
    assert_string_equal(o.image, "clearing/x");
    assert_int_equal(o.limits.cpu_millis, 1500);
    assert_int_equal(o.limits.memory_bytes, mem);
    assert_int_equal(o.limits.pids, 64);
    assert_int_equal(o.limits.lifetime_s, 600);
    assert_int_equal(o.limits.nofile, 256);
    assert_int_equal(idle_ms, 30000);
    assert_non_null(env);
    assert_string_equal(env[0], "A=1");
    assert_null(env[1]);
    assert_ptr_equal(o.env, env);
    assert_string_equal(repo, "/r");
    assert_string_equal(o.base_ref, "main");
    assert_string_equal(o.branch, "b");
    assert_true(o.reuse_branch);
    svc_free_strv(env);
    json_decref(req);
}

static void test_parse_create_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *req, *want;
    } cases[] = {
        {"{\"imgae\": \"x\"}", "unknown field 'imgae'"},
        {"{\"image\": \"\"}", "image must be a non-empty string"},
        {"{\"idle_timeout\": \"5s\"}", "idle_timeout must be 0 (none) or whole seconds"},
        {"{\"idle_timeout\": \"10500ms\"}", "idle_timeout must be 0 (none) or whole seconds"},
        {"{\"limits\": {\"cpus\": 0.0005}}", "limits.cpus: at most three decimals"},
        {"{\"limits\": {\"memory\": -1}}", "limits.memory must be a size"},
        {"{\"limits\": {\"lifetime\": \"1500ms\"}}", "limits.lifetime must be a whole number"},
        {"{\"limits\": {\"pids\": \"many\"}}", "limits.pids must be a whole number"},
        {"{\"limits\": {\"swap\": 1}}", "limits: unknown field 'swap'"},
        {"{\"metadata\": {\"k\": 1}}", "metadata 'k' must be a string"},
        {"{\"env\": {\"A=B\": \"1\"}}", "env: 'A=B' must be a name without '='"},
        {"{\"env\": [\"A=1\"]}", "env must be an object of strings"},
        {"{\"repo\": {\"base\": \"main\"}}", "repo needs path"},
        {"{\"repo\": {\"path\": \"/r\", \"reuse_branch\": \"yes\"}}", "reuse_branch a boolean"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *req = parse(cases[i].req);
        clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
        uint64_t idle_ms = 0;
        const char *repo = NULL;
        char **env = NULL;
        clr_error err = CLR_ERROR_INIT;
        int rc = svc_parse_create(req, &o, &idle_ms, &repo, &env, &err);
        if (rc == 0)
            fail_msg("accepted: %s", cases[i].req);
        expect_refused(rc, &err, CLR_E_INVALID, cases[i].want);
        assert_null(env);
        json_decref(req);
    }
}

static void test_add_proxy_env(void **state)
{
    (void)state;
    char **env = calloc(2, sizeof(char *));
    assert_non_null(env);
    env[0] = strdup("A=1");
    assert_int_equal(svc_add_proxy_env(&env), 0);
    assert_string_equal(env[0], "A=1");
    for (size_t i = 0; i < CLR_EGRESS_PROXY_ENV_N; i++)
        assert_string_equal(env[1 + i], clr_egress_proxy_env[i]);
    assert_null(env[1 + CLR_EGRESS_PROXY_ENV_N]);
    svc_free_strv(env);
}

static void test_parse_command_values(void **state)
{
    (void)state;
    json_t *req = parse("{\"argv\": [\"echo\", \"hi\"], \"env\": {\"X\": \"y\"}, \"cwd\": \"/w\","
                        " \"stdin_base64\": \"AAEC/w==\", \"timeout\": \"2s\","
                        " \"stdout_cap\": \"1k\"}");
    _cleanup_command_ struct command cmd = {.argv = NULL};
    clr_error err = CLR_ERROR_INIT;
    if (svc_parse_command(&cmd, req, &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_string_equal(cmd.o.argv[0], "echo");
    assert_string_equal(cmd.o.argv[1], "hi");
    assert_null(cmd.o.argv[2]);
    assert_null(cmd.o.shell);
    assert_string_equal(cmd.o.env[0], "X=y");
    assert_string_equal(cmd.o.cwd, "/w");
    assert_int_equal(cmd.o.stdin_len, 4);
    assert_memory_equal(cmd.o.stdin_data, "\x00\x01\x02\xff", 4);
    assert_int_equal(cmd.o.limits.timeout_ms, 2000);
    assert_int_equal(cmd.o.limits.stdout_cap, 1024);
    json_decref(req);

    req = parse("{\"shell\": \"echo hi | wc -c\", \"stdin\": \"abc\"}");
    svc_command_clear(&cmd);
    assert_int_equal(svc_parse_command(&cmd, req, &err), 0);
    assert_string_equal(cmd.o.shell, "echo hi | wc -c");
    assert_int_equal(cmd.o.stdin_len, 3);
    assert_memory_equal(cmd.o.stdin_data, "abc", 3);
    json_decref(req);
}

static void test_parse_command_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *req, *want;
    } cases[] = {
        {"{}", "give exactly one of argv or shell"},
        {"{\"argv\": [\"a\"], \"shell\": \"a\"}", "give exactly one of argv or shell"},
        {"{\"argv\": []}", "argv must be a non-empty array"},
        {"{\"argv\": [\"a\", 1]}", "argv[1] must be a string"},
        {"{\"shell\": \"\"}", "shell must be a non-empty string"},
        {"{\"argv\": [\"a\"], \"cwd\": \"w\"}", "cwd must be an absolute path"},
        {"{\"argv\": [\"a\"], \"stdin\": \"x\", \"stdin_base64\": \"eA==\"}", "not both"},
        {"{\"argv\": [\"a\"], \"stdin_base64\": \"a*==\"}", "not valid base64 (at offset 1)"},
        {"{\"argv\": [\"a\"], \"stdin_base64\": \"eA=\"}", "not valid base64 (length)"},
        {"{\"argv\": [\"a\"], \"timeout\": 0}", "timeout must be between 1ms and 24h"},
        {"{\"argv\": [\"a\"], \"timeout\": \"soon\"}", "timeout"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *req = parse(cases[i].req);
        _cleanup_command_ struct command cmd = {.argv = NULL};
        clr_error err = CLR_ERROR_INIT;
        int rc = svc_parse_command(&cmd, req, &err);
        if (rc == 0)
            fail_msg("accepted: %s", cases[i].req);
        expect_refused(rc, &err, CLR_E_INVALID, cases[i].want);
        json_decref(req);
    }
}

static void test_redacted(void **state)
{
    (void)state;
    json_t *req = parse("{\"argv\": [\"a\"], \"env\": {\"TOKEN\": \"s3cret\"}, \"stdin\": \"pw\","
                        " \"stdin_base64\": \"eA==\"}");
    json_t *logged = svc_redacted(req);
    assert_string_equal(json_string_value(json_object_get(json_object_get(logged, "env"), "TOKEN")),
                        "(redacted)");
    assert_null(json_object_get(logged, "stdin"));
    assert_null(json_object_get(logged, "stdin_base64"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(logged, "argv"), 0)), "a");
    /* The request itself is left as it was. */
    assert_string_equal(json_string_value(json_object_get(json_object_get(req, "env"), "TOKEN")),
                        "s3cret");
    assert_non_null(json_object_get(req, "stdin"));
    json_decref(logged);
    json_decref(req);
}

static void test_parse_stdin(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"data_base64\": \"AAEC/w==\", \"eof\": true}");
    assert_int_equal(svc_parse_stdin(req, &buf, &len, &err), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "\x00\x01\x02\xff", 4);
    free(buf);
    json_decref(req);
    req = parse("{\"data\": \"x\", \"data_base64\": \"eA==\"}");
    expect_refused(svc_parse_stdin(req, &buf, &len, &err), &err, CLR_E_INVALID,
                   "give data (a string) or data_base64");
    assert_null(buf);
    json_decref(req);
    req = parse("{\"eof\": 1}");
    expect_refused(svc_parse_stdin(req, &buf, &len, &err), &err, CLR_E_INVALID, "eof (a boolean)");
    json_decref(req);
}

static void test_parse_signal(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        int sig;
    } cases[] = {
        {"{\"signal\": \"TERM\"}", 15}, {"{\"signal\": \"SIGKILL\"}", 9},
        {"{\"signal\": \"HUP\"}", 1},   {"{\"signal\": 10}", 10},
        {"{\"signal\": 64}", 64},       {"{\"signal\": 0}", -1},
        {"{\"signal\": 65}", -1},       {"{\"signal\": \"BOGUS\"}", -1},
        {"{\"signal\": \"SIG\"}", -1},  {"{}", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *req = parse(cases[i].req);
        int sig = 0;
        clr_error err = CLR_ERROR_INIT;
        int rc = svc_parse_signal(req, &sig, &err);
        if (cases[i].sig > 0) {
            if (rc != 0)
                fail_msg("refused %s: %s", cases[i].req, err.message);
            assert_int_equal(sig, cases[i].sig);
        } else {
            expect_refused(rc, &err, CLR_E_INVALID, "signal must be a number 1..64");
        }
        json_decref(req);
    }
}

static void test_parse_extend(void **state)
{
    (void)state;
    uint64_t ms = 0;
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"by\": \"10m\"}");
    assert_int_equal(svc_parse_extend(req, &ms, &err), 0);
    assert_int_equal(ms, 600000);
    json_decref(req);
    req = parse("{\"by\": 30}");
    assert_int_equal(svc_parse_extend(req, &ms, &err), 0);
    assert_int_equal(ms, 30000);
    json_decref(req);
    req = parse("{\"by\": \"1500ms\"}");
    expect_refused(svc_parse_extend(req, &ms, &err), &err, CLR_E_INVALID,
                   "by must be a positive whole number of seconds");
    json_decref(req);
    req = parse("{\"by\": 0}");
    expect_refused(svc_parse_extend(req, &ms, &err), &err, CLR_E_INVALID, "positive");
    json_decref(req);
    req = parse("{}");
    expect_refused(svc_parse_extend(req, &ms, &err), &err, CLR_E_INVALID, "give \"by\"");
    json_decref(req);
}

/* A restore names one snapshot by a well-formed id, and nothing else; the id points into req. */
static void test_parse_restore(void **state)
{
    (void)state;
    const char *snap = NULL;
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"snapshot\": \"snap-0123456789abcdef\"}");
    assert_int_equal(svc_parse_restore(req, &snap, &err), 0);
    assert_string_equal(snap, "snap-0123456789abcdef");
    assert_ptr_equal(snap, json_string_value(json_object_get(req, "snapshot")));
    json_decref(req);
    static const struct {
        const char *req, *says;
    } bad[] = {
        {"{}", "give \"snapshot\""},
        {"{\"snapshot\": null}", "give \"snapshot\""},
        {"{\"snapshot\": 7}", "give \"snapshot\""},
        {"{\"snapshot\": \"\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"snap-0123\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"snap-0123456789ABCDEF\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"snap-0123456789abcdef0\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"../snap-0123456789abcdef\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"sb-0123456789abcdef\"}", "is not a snapshot id"},
        {"{\"snapshot\": \"snap-0123456789abcdef\", \"limits\": {}}", "limits"},
        {"[\"snap-0123456789abcdef\"]", "JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        req = parse(bad[i].req);
        snap = NULL;
        expect_refused(svc_parse_restore(req, &snap, &err), &err, CLR_E_INVALID, bad[i].says);
        assert_null(snap);
        json_decref(req);
    }
    /* The same parser behind clr_service_check_request (the fuzzers' and tools' entry). */
    req = parse("{\"snapshot\": \"snap-0123456789abcdef\"}");
    assert_int_equal(clr_service_check_request("restore", req, &err), 0);
    json_decref(req);
    req = parse("{\"snapshot\": \"nope\"}");
    expect_refused(clr_service_check_request("restore", req, &err), &err, CLR_E_INVALID,
                   "is not a snapshot id");
    json_decref(req);
}

static void test_parse_commit(void **state)
{
    (void)state;
    const char *trailers[17] = {NULL};
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"message\": \"m\", \"trailers\": [\"Reviewed-by: x\", \"Ticket: 7\"]}");
    assert_int_equal(svc_parse_commit(req, trailers, &err), 0);
    assert_string_equal(trailers[0], "Reviewed-by: x");
    assert_string_equal(trailers[1], "Ticket: 7");
    assert_null(trailers[2]);
    json_decref(req);
    req = parse("{\"trailers\": [\"Clearing-Verdict: pass\"]}");
    expect_refused(svc_parse_commit(req, trailers, &err), &err, CLR_E_INVALID,
                   "Clearing-* trailers are written by clearing alone");
    json_decref(req);
    req = parse("{\"trailers\": [\"no colon\"]}");
    expect_refused(svc_parse_commit(req, trailers, &err), &err, CLR_E_INVALID,
                   "trailers[0] must be \"Key: value\"");
    json_decref(req);
    req = parse("{\"trailers\": [\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\","
                "\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\",\"a:1\"]}");
    expect_refused(svc_parse_commit(req, trailers, &err), &err, CLR_E_INVALID, "at most 16");
    json_decref(req);
    req = parse("{\"message\": 1}");
    expect_refused(svc_parse_commit(req, trailers, &err), &err, CLR_E_INVALID,
                   "message, author_name, author_email are strings");
    json_decref(req);
}

static void test_image_allowed(void **state)
{
    (void)state;
    static const char *const allowed[] = {"clearing/*", "corp/tools:1.*", NULL};
    clr_service svc;
    memset(&svc, 0, sizeof(svc));
    clr_error err = CLR_ERROR_INIT;
    /* The built-in list: the default image is allowed, another registry's is not. */
    assert_int_equal(svc_image_allowed(&svc, NULL, &err), 0);
    assert_int_equal(svc_image_allowed(&svc, "clearing/python:latest", &err), 0);
    expect_refused(svc_image_allowed(&svc, "evil/x", &err), &err, CLR_E_DENIED,
                   "image 'evil/x' is not allowed");
    assert_non_null(strstr(err.message, "(" CLR_SERVICE_DEFAULT_ALLOWED_IMAGES ")"));
    /* The operator's list, named in the refusal. */
    svc.cfg.allowed_images = allowed;
    assert_int_equal(svc_image_allowed(&svc, "corp/tools:1.4", &err), 0);
    expect_refused(svc_image_allowed(&svc, "corp/tools:2.0", &err), &err, CLR_E_DENIED,
                   "(clearing/*, corp/tools:1.*)");
    char text[64];
    svc_allowed_images_text(&svc, text, sizeof(text));
    assert_string_equal(text, "clearing/*, corp/tools:1.*");
}

static void test_plan_request(void **state)
{
    (void)state;
    clr_plan *plan = NULL;
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"repo\": \"/r\", \"gauntlet_only\": true, \"base\": \"main\"}");
    if (svc_parse_plan_request(req, &plan, &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_non_null(plan);
    clr_plan_free(plan);
    plan = NULL;
    json_decref(req);
    req = parse("{\"plan\": {\"steps\": []}}");
    expect_refused(svc_parse_plan_request(req, &plan, &err), &err, CLR_E_INVALID,
                   "repo (a path under repo_roots) is required");
    assert_null(plan);
    json_decref(req);
    req = parse("{\"repo\": \"/r\", \"plan\": 7}");
    expect_refused(svc_parse_plan_request(req, &plan, &err), &err, CLR_E_INVALID,
                   "plan must be an object or a YAML/JSON string");
    json_decref(req);
}

static void test_check_request(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    json_t *req = parse("{\"argv\": [\"true\"], \"timeout\": \"1s\"}");
    assert_int_equal(clr_service_check_request("exec", req, &err), 0);
    /* A background process has no timeout. */
    expect_refused(clr_service_check_request("process", req, &err), &err, CLR_E_INVALID,
                   "unknown field 'timeout'");
    expect_refused(clr_service_check_request("launch", req, &err), &err, CLR_E_INVALID,
                   "unknown request kind 'launch'");
    json_decref(req);
    req = parse("[]");
    expect_refused(clr_service_check_request("exec", req, &err), &err, CLR_E_INVALID,
                   "the request body must be a JSON object");
    json_decref(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_fields),
        cmocka_unit_test(test_valid_id),
        cmocka_unit_test(test_parse_create_values),
        cmocka_unit_test(test_parse_create_refusals),
        cmocka_unit_test(test_add_proxy_env),
        cmocka_unit_test(test_parse_command_values),
        cmocka_unit_test(test_parse_command_refusals),
        cmocka_unit_test(test_redacted),
        cmocka_unit_test(test_parse_stdin),
        cmocka_unit_test(test_parse_signal),
        cmocka_unit_test(test_parse_extend),
        cmocka_unit_test(test_parse_restore),
        cmocka_unit_test(test_parse_commit),
        cmocka_unit_test(test_image_allowed),
        cmocka_unit_test(test_plan_request),
        cmocka_unit_test(test_check_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
