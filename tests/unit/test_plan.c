/* Plans as the caller writes them (lib/plan_parse.c): every field's value as parsed, the
 * defaults, and each refusal with a message that names the line and what is wrong. A plan is
 * input from an API caller: what it may not say (paths out of the workspace, limits out of
 * range, too many steps) must be refused here, before a sandbox exists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan_internal.h"

static clr_plan *parse_ok(const char *text)
{
    clr_plan *p = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_plan_parse(&p, text, strlen(text), "plan.yaml", &err) != 0)
        fail_msg("refused: %s\n--- plan ---\n%s", err.message, text);
    assert_non_null(p);
    return p;
}

/* Refused with CLR_E_INVALID, a message that starts with plan.yaml:LINE: and contains want. */
static void parse_bad_at(const char *text, unsigned line, const char *want)
{
    clr_plan *p = (clr_plan *)(uintptr_t)1; /* must be left alone */
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_plan_parse(&p, text, strlen(text), "plan.yaml", &err);
    if (rc != -1)
        fail_msg("accepted: %s", text);
    assert_ptr_equal(p, (clr_plan *)(uintptr_t)1);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, want))
        fail_msg("message for\n%s\nis \"%s\", expected it to contain \"%s\"", text, err.message,
                 want);
    if (line) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "plan.yaml:%u: ", line);
        if (strncmp(err.message, prefix, strlen(prefix)) != 0)
            fail_msg("message \"%s\" does not start with \"%s\"", err.message, prefix);
    }
}

static void parse_bad(const char *text, const char *want)
{
    parse_bad_at(text, 0, want);
}

static void test_every_field(void **state)
{
    (void)state;
    clr_plan *p = parse_ok("repo: /srv/repo\n"
                           "base: main\n"
                           "branch: agent/fix-1\n"
                           "profile: python\n"
                           "image: clearing/custom:1\n"
                           "message: Fix the mean\n"
                           "commit_on_failure: false\n"
                           "limits: {cpus: 2, memory: 1g, pids: 100, lifetime: 10m, tmp_size: 32m,"
                           " workspace_size: 2g}\n"
                           "egress: [pypi.org:443, '*.example.com']\n"
                           "steps:\n"
                           "  - write: {path: src/x.py, content: \"print(1)\\n\", mode: \"0600\"}\n"
                           "  - write: {path: b.bin, content_base64: \"AAEC/w==\"}\n"
                           "  - delete: {path: old, recursive: true}\n"
                           "  - run: {shell: make gen, timeout: 60s, cwd: /workspace/sub,"
                           " env: {K: v, EMPTY: ''}, expect_exit: [0, 3]}\n"
                           "  - run: {argv: [python3, -c, 'print(2)']}\n");
    assert_string_equal(p->repo, "/srv/repo");
    assert_string_equal(p->base, "main");
    assert_string_equal(p->branch, "agent/fix-1");
    assert_string_equal(p->profile, "python");
    assert_string_equal(p->image, "clearing/custom:1");
    assert_string_equal(p->message, "Fix the mean");
    assert_false(p->commit_on_failure);
    assert_int_equal(p->limits.cpu_millis, 2000);
    assert_int_equal(p->limits.memory_bytes, 1 * CLR_GIB);
    assert_int_equal(p->limits.pids, 100);
    assert_int_equal(p->limits.lifetime_s, 600);
    assert_int_equal(p->limits.tmp_bytes, 32 * CLR_MIB);
    assert_int_equal(p->limits.workspace_bytes, 2 * CLR_GIB);
    /* not given: the defaults */
    clr_limits def = CLR_LIMITS_INIT;
    assert_int_equal(p->limits.workspace_inodes, def.workspace_inodes);
    assert_int_equal(p->limits.nofile, def.nofile);
    assert_non_null(p->egress);
    assert_int_equal(p->egress->n, 2);
    assert_string_equal(p->egress->rules[0].host, "pypi.org");
    assert_int_equal(p->egress->rules[0].port, 443);
    assert_string_equal(p->egress->rules[1].host, "*.example.com");
    assert_int_equal(p->egress->rules[1].port, 0);
    assert_int_equal(p->n, 5);

    const struct step *s = &p->steps[0];
    assert_int_equal(s->kind, STEP_WRITE);
    assert_string_equal(s->path, "src/x.py");
    assert_int_equal(s->content_len, 9);
    assert_memory_equal(s->content, "print(1)\n", 9);
    assert_int_equal(s->mode, 0600);

    s = &p->steps[1];
    assert_int_equal(s->kind, STEP_WRITE);
    assert_string_equal(s->path, "b.bin");
    assert_int_equal(s->content_len, 4);
    assert_memory_equal(s->content, "\x00\x01\x02\xff", 4);
    assert_int_equal(s->mode, 0644);

    s = &p->steps[2];
    assert_int_equal(s->kind, STEP_DELETE);
    assert_string_equal(s->path, "old");
    assert_true(s->recursive);

    s = &p->steps[3];
    assert_int_equal(s->kind, STEP_RUN);
    assert_null(s->path);
    assert_string_equal(s->shell, "make gen");
    assert_null(s->argv);
    assert_int_equal(s->timeout_ms, 60000);
    assert_string_equal(s->cwd, "/workspace/sub");
    assert_non_null(s->env);
    assert_string_equal(s->env[0], "K=v");
    assert_string_equal(s->env[1], "EMPTY=");
    assert_null(s->env[2]);
    assert_int_equal(s->n_expect, 2);
    assert_int_equal(s->expect[0], 0);
    assert_int_equal(s->expect[1], 3);

    s = &p->steps[4];
    assert_int_equal(s->kind, STEP_RUN);
    assert_null(s->shell);
    assert_string_equal(s->argv[0], "python3");
    assert_string_equal(s->argv[1], "-c");
    assert_string_equal(s->argv[2], "print(2)");
    assert_null(s->argv[3]);
    clr_plan_free(p);
}

static void test_defaults(void **state)
{
    (void)state;
    clr_plan *p = parse_ok("steps:\n"
                           "  - run: {shell: 'true'}\n"
                           "  - write: {path: a, content: ''}\n"
                           "  - delete: {path: a}\n");
    assert_null(p->repo);
    assert_null(p->base);
    assert_null(p->branch);
    assert_null(p->profile);
    assert_null(p->image);
    assert_null(p->message);
    assert_true(p->commit_on_failure);
    assert_null(p->egress);
    clr_limits def = CLR_LIMITS_INIT;
    assert_true(clr_limits_equal(&p->limits, &def));
    assert_ptr_equal(clr_plan_limits(p), &p->limits);
    assert_int_equal(p->n, 3);
    const struct step *s = &p->steps[0];
    assert_int_equal(s->timeout_ms, 600000);
    assert_int_equal(s->n_expect, 1);
    assert_int_equal(s->expect[0], 0);
    assert_null(s->cwd);
    assert_null(s->env);
    s = &p->steps[1];
    assert_int_equal(s->mode, 0644);
    assert_int_equal(s->content_len, 0);
    assert_non_null(s->content); /* given, empty: a write of an empty file */
    assert_false(p->steps[2].recursive);
    clr_plan_free(p);

    /* No steps at all is a plan (the gauntlet judges the base). */
    p = parse_ok("steps: []\n");
    assert_int_equal(p->n, 0);
    clr_plan_free(p);
}

static void test_json_is_accepted(void **state)
{
    (void)state;
    clr_plan *p = parse_ok("{\"repo\": \"/r\", \"steps\": [{\"run\": {\"argv\": [\"ls\", \"-l\"],"
                           " \"expect_exit\": [2]}}]}");
    assert_string_equal(p->repo, "/r");
    assert_int_equal(p->n, 1);
    assert_string_equal(p->steps[0].argv[1], "-l");
    assert_int_equal(p->steps[0].expect[0], 2);
    assert_int_equal(p->steps[0].n_expect, 1);
    clr_plan_free(p);
}

static void test_a_repeated_key_replaces(void **state)
{
    (void)state;
    clr_plan *p = parse_ok("repo: /a\nrepo: /b\negress: [a.org]\negress: [b.org:8080]\n"
                           "steps: [{run: {shell: x, shell: y}}]\n");
    assert_string_equal(p->repo, "/b");
    assert_int_equal(p->egress->n, 1);
    assert_string_equal(p->egress->rules[0].host, "b.org");
    assert_int_equal(p->egress->rules[0].port, 8080);
    assert_string_equal(p->steps[0].shell, "y");
    clr_plan_free(p);
}

static void test_image_and_profile(void **state)
{
    (void)state;
    clr_plan *p = parse_ok("profile: python\nsteps: []\n");
    assert_string_equal(clr_plan_image(p, NULL), "clearing/python:latest");
    assert_string_equal(clr_plan_image(p, "c"), "clearing/c:latest"); /* the caller's wins */
    assert_null(clr_plan_image(p, "cobol"));
    clr_plan_free(p);
    p = parse_ok("profile: python\nimage: mine:1\nsteps: []\n");
    assert_string_equal(clr_plan_image(p, "c"), "mine:1"); /* the plan's own image wins */
    clr_plan_free(p);
    p = parse_ok("steps: []\n");
    assert_null(clr_plan_image(p, NULL)); /* the default image */
    clr_plan_free(p);
}

static void test_refuses_the_shape(void **state)
{
    (void)state;
    parse_bad_at("- a\n- b\n", 1, "a plan is a mapping with a 'steps' list");
    parse_bad_at("just text\n", 1, "a plan is a mapping with a 'steps' list");
    parse_bad_at("repo: /r\n", 1, "'steps' must be a list");
    parse_bad_at("repo: /r\nsteps: {run: {shell: x}}\n", 2, "'steps' must be a list");
    parse_bad_at("steps: []\nstep: []\n", 2, "unknown key 'step'");
    parse_bad_at("steps: []\n[a]: 1\n", 2, "plan keys must be strings");
    clr_plan *p = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_plan_parse(&p, "steps: [", 8, "plan.yaml", &err), -1);
    assert_null(p);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "plan.yaml:"));
    assert_non_null(strstr(err.message, "not valid YAML"));
}

static void test_refuses_wrong_types(void **state)
{
    (void)state;
    parse_bad_at("repo: [a]\nsteps: []\n", 1, "repo must be a string");
    parse_bad_at("steps: []\nbase: {a: b}\n", 2, "base must be a string");
    parse_bad("branch: [x]\nsteps: []\n", "branch must be a string");
    parse_bad("profile: [x]\nsteps: []\n", "profile must be a string");
    parse_bad("image: [x]\nsteps: []\n", "image must be a string");
    parse_bad("message: [x]\nsteps: []\n", "message must be a string");
    parse_bad("repo: \"a\\0b\"\nsteps: []\n", "repo contains a NUL byte");
    parse_bad_at("steps: []\ncommit_on_failure: maybe\n", 2,
                 "commit_on_failure must be true or false");
    parse_bad("egress: pypi.org\nsteps: []\n", "egress must be a list of strings");
    parse_bad("egress: [[a]]\nsteps: []\n", "egress must be a string");
}

static void test_refuses_limits(void **state)
{
    (void)state;
    parse_bad_at("steps: []\nlimits: 5\n", 2, "limits must be a mapping");
    parse_bad_at("steps: []\nlimits: {memory: lots}\n", 2, "limits.memory:");
    parse_bad("limits: {cpus: many}\nsteps: []\n", "limits.cpus:");
    parse_bad("limits: {pids: -1}\nsteps: []\n", "limits.pids:");
    parse_bad("limits: {lifetime: forever}\nsteps: []\n", "limits.lifetime:");
    parse_bad("limits: {tmp_size: big}\nsteps: []\n", "limits.tmp_size:");
    parse_bad("limits: {workspace_size: x}\nsteps: []\n", "limits.workspace_size:");
    parse_bad_at("steps: []\nlimits:\n  nofile: 10\n", 3, "limits: unknown key 'nofile'");
    parse_bad("limits: {memory: [1g]}\nsteps: []\n", "limits: keys and values are strings");
    /* out of range: refused with the range, never clamped */
    parse_bad_at("steps: []\nlimits: {cpus: 64}\n", 2, "out of range: allowed 0.1..4");
    parse_bad("limits: {memory: 1m}\nsteps: []\n", "memory");
    parse_bad("limits: {memory: 1t}\nsteps: []\n", "memory");
    parse_bad("limits: {pids: 5000000000}\nsteps: []\n", "pids");
    parse_bad("limits: {lifetime: 2h}\nsteps: []\n", "lifetime");
    parse_bad("limits: {workspace_size: 100t}\nsteps: []\n", "workspace size");
}

static void test_refuses_steps(void **state)
{
    (void)state;
    parse_bad_at("steps:\n  - 5\n", 2, "a step is a mapping with one key: write, delete or run");
    parse_bad_at("steps:\n  - {write: {path: a, content: b}, run: {shell: c}}\n", 2,
                 "a step is a mapping with one key");
    parse_bad_at("steps:\n  - {write: 5}\n", 2, "a step is write:, delete: or run: with a mapping");
    parse_bad_at("steps:\n  - {copy: {path: a}}\n", 2, "unknown step 'copy' (write, delete, run)");
    parse_bad_at("steps:\n  - run:\n      shell: x\n      path: y\n", 4,
                 "run step: unknown key 'path'");
    parse_bad("steps: [{delete: {path: a, content: x}}]\n", "delete step: unknown key 'content'");
    parse_bad("steps: [{write: {path: a, content: x, recursive: true}}]\n",
              "write step: unknown key 'recursive'");
    parse_bad("steps: [{write: {path: a, content: x, shell: y}}]\n",
              "write step: unknown key 'shell'");
    parse_bad("steps: [{run: {shell: x, mode: '0644'}}]\n", "run step: unknown key 'mode'");
    parse_bad("steps: [{run: {shell: x, [k]: y}}]\n", "step keys must be strings");
}

static void test_refuses_write_and_delete(void **state)
{
    (void)state;
    parse_bad_at("steps:\n  - write: {path: a}\n", 2, "write step needs content or content_base64");
    parse_bad("steps: [{write: {content: x}}]\n", "write step needs a path");
    parse_bad("steps: [{delete: {recursive: true}}]\n", "delete step needs a path");
    parse_bad("steps: [{write: {path: a, content: x, content: y}}]\n",
              "write step: give content or content_base64, once");
    parse_bad("steps: [{write: {path: a, content_base64: AAAA, content: y}}]\n",
              "give content or content_base64, once");
    parse_bad("steps: [{write: {path: a, content: [x]}}]\n", "content must be a string");
    parse_bad("steps: [{write: {path: a, content_base64: '@@@@'}}]\n",
              "content_base64 must be base64");
    parse_bad("steps: [{write: {path: a, content_base64: 'AAA'}}]\n",
              "content_base64 must be base64");
    parse_bad("steps: [{write: {path: a, content: x, mode: '999'}}]\n",
              "mode must be octal such as \"0644\"");
    parse_bad("steps: [{write: {path: a, content: x, mode: '01777'}}]\n", "mode must be octal");
    parse_bad("steps: [{write: {path: a, content: x, mode: ''}}]\n", "mode must be octal");
    parse_bad("steps: [{write: {path: a, content: x, mode: 0644x}}]\n", "mode must be octal");
    parse_bad("steps: [{delete: {path: a, recursive: sure}}]\n",
              "recursive must be true or false");
}

/* Paths are the workspace's: a plan may not name anything outside it. */
static void test_refuses_hostile_paths(void **state)
{
    (void)state;
    parse_bad("steps: [{write: {path: /etc/passwd, content: x}}]\n", "is absolute");
    parse_bad("steps: [{write: {path: ../x, content: x}}]\n", "contains '..'");
    parse_bad("steps: [{delete: {path: a/../../etc}}]\n", "contains '..'");
    parse_bad("steps: [{delete: {path: 'a//b'}}]\n", "empty component");
    parse_bad("steps: [{delete: {path: ''}}]\n", "path: empty");
    parse_bad("steps: [{delete: {path: \"a\\0b\"}}]\n", "path contains a NUL byte");
    parse_bad("steps: [{delete: {path: [a]}}]\n", "path must be a string");
    /* the message says where: the line of the path */
    parse_bad_at("steps:\n  - write:\n      content: x\n      path: /root/.ssh/keys\n", 4,
                 "path: path '/root/.ssh/keys' is absolute");
    char *long_path = malloc(5000);
    assert_non_null(long_path);
    memset(long_path, 'a', 4999);
    long_path[4999] = '\0';
    char *text = NULL;
    assert_true(asprintf(&text, "steps: [{delete: {path: %s}}]\n", long_path) > 0);
    parse_bad(text, "bytes long");
    free(text);
    free(long_path);
}

static void test_refuses_run(void **state)
{
    (void)state;
    parse_bad_at("steps:\n  - run: {cwd: /w}\n", 2, "run step needs exactly one of shell and argv");
    parse_bad("steps: [{run: {shell: x, argv: [y]}}]\n", "exactly one of shell and argv");
    parse_bad("steps: [{run: {shell: x, cwd: relative}}]\n", "cwd must be absolute");
    parse_bad("steps: [{run: {shell: [x]}}]\n", "shell must be a string");
    parse_bad("steps: [{run: {argv: x}}]\n", "argv must be a list of strings");
    parse_bad("steps: [{run: {argv: []}}]\n", "argv must have 1 to 4096 items");
    parse_bad("steps: [{run: {argv: [[x]]}}]\n", "argv must be a string");
    parse_bad("steps: [{run: {shell: x, env: [A]}}]\n", "env must be a mapping of strings");
    parse_bad("steps: [{run: {shell: x, env: {'A=B': c}}}]\n", "env entries must be NAME: string");
    parse_bad("steps: [{run: {shell: x, env: {'': c}}}]\n", "env entries must be NAME: string");
    parse_bad("steps: [{run: {shell: x, env: {A: [c]}}}]\n", "env entries must be NAME: string");
    parse_bad("steps: [{run: {shell: x, timeout: 0s}}]\n",
              "timeout must be a duration from 1ms to 24h");
    parse_bad("steps: [{run: {shell: x, timeout: 25h}}]\n", "timeout must be a duration");
    parse_bad("steps: [{run: {shell: x, timeout: soon}}]\n", "timeout must be a duration");
    parse_bad("steps: [{run: {shell: x, timeout: [1s]}}]\n", "timeout must be a duration");
    parse_bad("steps: [{run: {shell: x, expect_exit: 0}}]\n",
              "expect_exit must be a list of exit codes");
    parse_bad("steps: [{run: {shell: x, expect_exit: []}}]\n", "expect_exit has 1 to 16 codes");
    parse_bad("steps: [{run: {shell: x, expect_exit: [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}}]"
              "\n",
              "expect_exit has 1 to 16 codes");
    parse_bad("steps: [{run: {shell: x, expect_exit: [256]}}]\n",
              "exit code must be a number from 0 to 255");
    parse_bad("steps: [{run: {shell: x, expect_exit: [-1]}}]\n", "exit code must be a number");
    parse_bad("steps: [{run: {shell: x, expect_exit: [one]}}]\n", "exit code must be a number");

    /* the edges that are allowed */
    clr_plan *p = parse_ok("steps: [{run: {shell: x, timeout: 1ms, expect_exit: [255]}},"
                           " {run: {shell: y, timeout: 24h,"
                           " expect_exit: [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}}]\n");
    assert_int_equal(p->steps[0].timeout_ms, 1);
    assert_int_equal(p->steps[0].expect[0], 255);
    assert_int_equal(p->steps[1].timeout_ms, 24u * 3600 * 1000);
    assert_int_equal(p->steps[1].n_expect, 16);
    assert_int_equal(p->steps[1].expect[15], 15);
    clr_plan_free(p);
}

/* A plan of n delete steps, as JSON. */
static char *plan_of(size_t n)
{
    size_t cap = 32 + n * 32;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t o = (size_t)snprintf(s, cap, "{\"steps\": [");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s{\"delete\": {\"path\": \"f%zu\"}}", i ? "," : "",
                              i);
    snprintf(s + o, cap - o, "]}");
    return s;
}

static void test_limits_on_size_and_steps(void **state)
{
    (void)state;
    char *text = plan_of(CLR_PLAN_MAX_STEPS);
    clr_plan *p = parse_ok(text);
    assert_int_equal(p->n, CLR_PLAN_MAX_STEPS);
    assert_string_equal(p->steps[CLR_PLAN_MAX_STEPS - 1].path, "f999");
    clr_plan_free(p);
    free(text);
    text = plan_of(CLR_PLAN_MAX_STEPS + 1);
    parse_bad(text, "a plan has at most 1000 steps");
    free(text);

    /* larger than CLR_PLAN_MAX_BYTES: refused before it is parsed */
    size_t big = CLR_PLAN_MAX_BYTES + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, ' ', big);
    p = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_plan_parse(&p, huge, big, "big.yaml", &err), -1);
    assert_null(p);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "big.yaml is larger than 16777216 bytes"));
    free(huge);
}

/* Aliases make one node reachable many times: the walk is bounded however the YAML is built. */
static void test_alias_bomb_is_bounded(void **state)
{
    (void)state;
    const char *bomb = "a: &a [{delete: {path: x}}, {delete: {path: x}}, {delete: {path: x}}]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "steps: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
    clr_plan *p = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_plan_parse(&p, bomb, strlen(bomb), "plan.yaml", &err), -1);
    assert_null(p);
    assert_int_not_equal(err.code, CLR_E_NONE);
    assert_true(err.message[0] != '\0');

    /* many steps by alias, each a node visited: stops at the node bound, not the step bound */
    char *text = NULL;
    assert_true(asprintf(&text,
                         "steps: [&s {run: {shell: a, env: {A: b, C: d, E: f, G: h}}}, %s*s]\n",
                         "*s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, "
                         "*s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, "
                         "*s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, *s, ") > 0);
    p = parse_ok(text); /* 50 steps: well within the bound */
    assert_int_equal(p->n, 50);
    assert_string_equal(p->steps[49].env[3], "G=h");
    clr_plan_free(p);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_json_is_accepted),
        cmocka_unit_test(test_a_repeated_key_replaces),
        cmocka_unit_test(test_image_and_profile),
        cmocka_unit_test(test_refuses_the_shape),
        cmocka_unit_test(test_refuses_wrong_types),
        cmocka_unit_test(test_refuses_limits),
        cmocka_unit_test(test_refuses_steps),
        cmocka_unit_test(test_refuses_write_and_delete),
        cmocka_unit_test(test_refuses_hostile_paths),
        cmocka_unit_test(test_refuses_run),
        cmocka_unit_test(test_limits_on_size_and_steps),
        cmocka_unit_test(test_alias_bomb_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
