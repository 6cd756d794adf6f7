/* Gauntlet files (lib/gauntlet_parse.c) and reports (lib/gauntlet_report.c): every field of a
 * check as parsed, the defaults, each refusal with its line, the shipped profiles, and a
 * report's JSON, JUnit XML and summary for a set of judged results. A repository's
 * .clearing/gauntlet.yaml is as untrusted as the code it checks; so is every byte a check
 * printed, which the report must carry escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/exec.h"
#include "gauntlet_internal.h"

static clr_gauntlet *parse_ok(const char *text)
{
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_gauntlet_parse(&g, text, strlen(text), "gauntlet.yaml", &err) != 0)
        fail_msg("refused: %s\n--- gauntlet ---\n%s", err.message, text);
    assert_non_null(g);
    return g;
}

/* Refused with CLR_E_INVALID, a message that contains want and, when line, starts with
 * gauntlet.yaml:LINE:. */
static void parse_bad_at(const char *text, unsigned line, const char *want)
{
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_gauntlet_parse(&g, text, strlen(text), "gauntlet.yaml", &err) != -1)
        fail_msg("accepted: %s", text);
    assert_null(g);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, want))
        fail_msg("message for\n%s\nis \"%s\", expected it to contain \"%s\"", text, err.message,
                 want);
    if (line) {
        char prefix[40];
        snprintf(prefix, sizeof(prefix), "gauntlet.yaml:%u: ", line);
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
    clr_gauntlet *g = parse_ok("parallel: 4\n"
                               "checks:\n"
                               "  - name: cov_1.x\n"
                               "    kind: coverage\n"
                               "    run: pytest --cov\n"
                               "    tool: /usr/bin/pytest\n"
                               "    timeout: 90s\n"
                               "    required: false\n"
                               "    env: {A: b}\n"
                               "    cwd: /workspace/pkg\n"
                               "    output_cap: 256k\n"
                               "    pass:\n"
                               "      exit_codes: [0, 5]\n"
                               "      report: /tmp/cov.json\n"
                               "      coverage_min: 85.5\n"
                               "  - name: sec\n"
                               "    kind: security\n"
                               "    run: [bandit, -r, .]\n"
                               "    pass: {report: /tmp/b.json, severity: HIGH,"
                               " confidence: low}\n");
    assert_int_equal(clr_gauntlet_count(g), 2);
    assert_int_equal(g->parallel, 4);
    assert_int_equal(clr_gauntlet_parallel(g), 2); /* no more at once than there are checks */
    const struct check *c = &g->checks[0];
    assert_string_equal(c->name, "cov_1.x");
    assert_int_equal(c->kind, CLR_CHECK_COVERAGE);
    assert_string_equal(c->shell, "pytest --cov");
    assert_null(c->argv);
    assert_string_equal(c->tool, "/usr/bin/pytest");
    assert_int_equal(c->timeout_ms, 90000);
    assert_false(c->required);
    assert_string_equal(c->env[0], "A=b");
    assert_null(c->env[1]);
    assert_string_equal(c->cwd, "/workspace/pkg");
    assert_int_equal(c->output_cap, 256 * 1024);
    assert_int_equal(c->n_exit_codes, 2);
    assert_int_equal(c->exit_codes[0], 0);
    assert_int_equal(c->exit_codes[1], 5);
    assert_string_equal(c->report, "/tmp/cov.json");
    assert_true(c->coverage_min > 85.49 && c->coverage_min < 85.51);
    assert_int_equal(c->severity_min, 0);

    c = &g->checks[1];
    assert_string_equal(c->name, "sec");
    assert_int_equal(c->kind, CLR_CHECK_SECURITY);
    assert_null(c->shell);
    assert_string_equal(c->argv[0], "bandit");
    assert_string_equal(c->argv[2], ".");
    assert_null(c->argv[3]);
    assert_string_equal(c->tool, "bandit"); /* argv[0] */
    assert_int_equal(c->severity_min, 3);
    assert_int_equal(c->confidence_min, 1);
    assert_true(c->coverage_min < 0);
    clr_gauntlet_free(g);
}

static void test_defaults(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: a, run: pytest -q}\n"
                               "  - {name: b, run: 'make;rm -rf /'}\n"
                               "  - {name: c, run: \"ruff\\tcheck\"}\n");
    assert_int_equal(g->parallel, 1);
    assert_int_equal(clr_gauntlet_parallel(g), 1);
    const struct check *c = &g->checks[0];
    assert_int_equal(c->kind, CLR_CHECK_OTHER);
    assert_true(c->required);
    assert_int_equal(c->timeout_ms, 600000);
    assert_int_equal(c->output_cap, CLR_MIB);
    assert_int_equal(c->n_exit_codes, 1);
    assert_int_equal(c->exit_codes[0], 0);
    assert_null(c->report);
    assert_true(c->coverage_min < 0);
    assert_int_equal(c->severity_min, 0);
    assert_int_equal(c->confidence_min, 0);
    assert_null(c->env);
    assert_null(c->cwd);
    /* the tool is the command's first word */
    assert_string_equal(c->tool, "pytest");
    assert_string_equal(g->checks[1].tool, "make");
    assert_string_equal(g->checks[2].tool, "ruff");

    clr_gauntlet_set_parallel(g, 0);
    assert_int_equal(g->parallel, 1);
    clr_gauntlet_set_parallel(g, 99);
    assert_int_equal(g->parallel, 16);
    assert_int_equal(clr_gauntlet_parallel(g), 3);
    clr_gauntlet_set_parallel(g, 2);
    assert_int_equal(clr_gauntlet_parallel(g), 2);
    clr_gauntlet_free(g);
}

static void test_every_kind(void **state)
{
    (void)state;
    static const char *const kinds[] = {"lint", "types", "test", "coverage", "security", "other"};
    for (int i = 0; i < 6; i++) {
        char text[128];
        snprintf(text, sizeof(text), "checks: [{name: x, run: y, kind: %s}]\n", kinds[i]);
        clr_gauntlet *g = parse_ok(text);
        assert_int_equal(g->checks[0].kind, i);
        assert_string_equal(gauntlet_kind_name(g->checks[0].kind), kinds[i]);
        clr_gauntlet_free(g);
    }
    assert_string_equal(gauntlet_kind_name((clr_check_kind)99), "other");
    assert_int_equal(gauntlet_severity_level("low"), 1);
    assert_int_equal(gauntlet_severity_level("Medium"), 2);
    assert_int_equal(gauntlet_severity_level("HIGH"), 3);
    assert_int_equal(gauntlet_severity_level("critical"), -1);
    assert_int_equal(gauntlet_severity_level(NULL), -1);
}

static void test_refuses_the_shape(void **state)
{
    (void)state;
    parse_bad_at("- a\n", 1, "a gauntlet is a mapping with a 'checks' list");
    parse_bad_at("parallel: 2\n", 1, "'checks' must be a list");
    parse_bad_at("parallel: 2\nchecks: {name: a}\n", 2, "'checks' must be a list");
    parse_bad_at("checks: []\n", 1, "a gauntlet has 1 to 64 checks");
    parse_bad_at("checks: [{name: a, run: b}]\nretries: 3\n", 2,
                 "unknown key 'retries' (expected checks, parallel)");
    parse_bad("checks: [{name: a, run: b}]\n[x]: 3\n", "unknown key '?'");
    parse_bad_at("parallel: 0\nchecks: [{name: a, run: b}]\n", 1,
                 "parallel must be a number from 1 to 16");
    parse_bad("parallel: 17\nchecks: [{name: a, run: b}]\n", "parallel must be a number");
    parse_bad("parallel: many\nchecks: [{name: a, run: b}]\n", "parallel must be a number");
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_gauntlet_parse(&g, "checks: [", 9, "gauntlet.yaml", &err), -1);
    assert_null(g);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "not valid YAML"));
}

static void test_refuses_checks(void **state)
{
    (void)state;
    parse_bad_at("checks:\n  - just a string\n", 2, "each check must be a mapping");
    parse_bad_at("checks:\n  - name: a\n    run: b\n    retry: 1\n", 4,
                 "check: unknown key 'retry'");
    parse_bad("checks: [{run: b}]\n", "a check has no name");
    parse_bad("checks: [{name: a}]\n", "check a has no run");
    parse_bad("checks: [{name: 'has space', run: b}]\n", "must be 1-64 of A-Z a-z 0-9 _ . -");
    parse_bad("checks: [{name: '', run: b}]\n", "must be 1-64 of");
    parse_bad("checks: [{name: 'a/b', run: b}]\n", "must be 1-64 of");
    parse_bad("checks: [{name: "
              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, run: b}]\n",
              "must be 1-64 of");
    parse_bad_at("checks:\n  - {name: a, run: b}\n  - {name: a, run: c}\n", 3,
                 "two checks are named a");
    parse_bad("checks: [{name: a, run: b, kind: style}]\n",
              "kind must be lint, types, test, coverage, security or other");
    parse_bad("checks: [{name: a, run: b, tool: 'rm -rf'}]\n",
              "tool must be a command name or an absolute path");
    parse_bad("checks: [{name: a, run: b, cwd: rel}]\n", "cwd must be absolute");
    parse_bad("checks: [{name: a, run: b, timeout: 0s}]\n",
              "timeout must be a duration from 1ms to 24h");
    parse_bad("checks: [{name: a, run: b, timeout: 25h}]\n", "timeout must be a duration");
    parse_bad("checks: [{name: a, run: b, output_cap: 65m}]\n",
              "output_cap must be a size up to 64m");
    parse_bad("checks: [{name: a, run: b, output_cap: lots}]\n", "output_cap must be a size");
    parse_bad("checks: [{name: a, run: b, required: perhaps}]\n", "required must be true or false");
    parse_bad("checks: [{name: a, run: {x: y}}]\n", "run must be a string");
    parse_bad("checks: [{name: a, run: []}]\n", "run must have 1 to 4096 items");
    parse_bad("checks: [{name: a, run: b, env: [x]}]\n", "env must be a mapping of strings");
    parse_bad("checks: [{name: [a], run: b}]\n", "name must be a string");
    parse_bad("checks: [{name: a, run: b, [k]: v}]\n", "check: keys must be strings");

    /* 64 checks are allowed, 65 are not */
    char *text = malloc(65 * 40 + 16);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, "checks:\n");
    for (int i = 0; i < 64; i++)
        o += (size_t)sprintf(text + o, "  - {name: c%d, run: x}\n", i);
    clr_gauntlet *g = parse_ok(text);
    assert_int_equal(clr_gauntlet_count(g), CLR_GAUNTLET_MAX_CHECKS);
    assert_string_equal(g->checks[63].name, "c63");
    clr_gauntlet_free(g);
    sprintf(text + o, "  - {name: c64, run: x}\n");
    parse_bad(text, "a gauntlet has 1 to 64 checks");
    free(text);
}

static void test_refuses_pass(void **state)
{
    (void)state;
    parse_bad_at("checks:\n  - name: a\n    run: b\n    pass: 0\n", 4,
                 "check a: pass must be a mapping");
    parse_bad("checks: [{name: a, run: b, pass: {when: ok}}]\n", "check a: unknown key pass.when");
    parse_bad("checks: [{name: a, run: b, pass: {exit_codes: 0}}]\n",
              "exit_codes must be a list of numbers");
    parse_bad("checks: [{name: a, run: b, pass: {exit_codes: []}}]\n",
              "exit_codes must have 1 to 16 numbers");
    parse_bad("checks: [{name: a, run: b, pass: {exit_codes: [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,"
              "15,16]}}]\n",
              "exit_codes must have 1 to 16 numbers");
    parse_bad("checks: [{name: a, run: b, pass: {exit_codes: [256]}}]\n",
              "exit code must be a number from 0 to 255");
    parse_bad("checks: [{name: a, run: b, pass: {report: rel.json}}]\n",
              "report must be an absolute path inside the sandbox");
    parse_bad("checks: [{name: a, run: b, pass: {report: /r, coverage_min: 101}}]\n",
              "coverage_min must be a number from 0 to 100");
    parse_bad("checks: [{name: a, run: b, pass: {report: /r, severity: urgent}}]\n",
              "severity must be low, medium or high");
    parse_bad("checks: [{name: a, run: b, pass: {report: /r, confidence: sure}}]\n",
              "confidence must be low, medium or high");
    parse_bad_at("checks:\n  - name: a\n    run: b\n    pass: {coverage_min: 50}\n", 4,
                 "check a: coverage_min and severity need a report");
    parse_bad("checks: [{name: a, run: b, pass: {severity: low}}]\n",
              "coverage_min and severity need a report");
}

static void test_refuses_size_and_alias_bombs(void **state)
{
    (void)state;
    size_t big = CLR_GAUNTLET_MAX_BYTES + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, '#', big);
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_gauntlet_parse(&g, huge, big, "g.yaml", &err), -1);
    assert_null(g);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "g.yaml is larger than 262144 bytes"));
    free(huge);

    const char *bomb = "x: &a {name: n, run: r, env: {A: b, C: d, E: f, G: h, I: j, K: l}}\n"
                       "y: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "z: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "w: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "checks: [*d, *d, *d, *d, *d, *d, *d, *d]\n";
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_gauntlet_parse(&g, bomb, strlen(bomb), "g.yaml", &err), -1);
    assert_null(g);
    assert_int_not_equal(err.code, CLR_E_NONE);
    assert_true(err.message[0] != '\0');
}

static void test_profiles(void **state)
{
    (void)state;
    clr_gauntlet *g = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_gauntlet_profile(&g, "python", &err), 0);
    assert_int_equal(clr_gauntlet_count(g), 4);
    /* every check at once (#23: the wall time is the slowest check's) */
    assert_int_equal(g->parallel, 4);
    assert_string_equal(g->checks[0].name, "lint");
    assert_int_equal(g->checks[0].kind, CLR_CHECK_LINT);
    /* each check through clearing-pycheck (tools/pycheck) by the project's configuration: ruff
     * for lint (flake8 only where the image has no clearing-ruff), and its info file */
    static const char *const names[] = {"lint", "types", "security", "tests"};
    for (size_t i = 0; i < 4; i++) {
        char run[128], info[64];
        snprintf(info, sizeof(info), "/tmp/.clearing-%s.json", names[i]);
        snprintf(run, sizeof(run), "clearing-pycheck %s --info %s", names[i], info);
        assert_string_equal(g->checks[i].tool, "clearing-pycheck");
        assert_non_null(strstr(g->checks[i].shell, run));
        assert_null(strstr(g->checks[i].shell, "--no-config"));
        assert_string_equal(g->checks[i].info, info);
    }
    assert_string_equal(g->checks[1].name, "types");
    assert_int_equal(g->checks[1].timeout_ms, 10 * 60 * 1000);
    const struct check *sec = &g->checks[2];
    assert_string_equal(sec->name, "security");
    assert_int_equal(sec->n_exit_codes, 2);
    assert_int_equal(sec->exit_codes[1], 1);
    assert_string_equal(sec->report, "/tmp/bandit.json");
    assert_int_equal(sec->severity_min, 2);
    assert_int_equal(sec->confidence_min, 2);
    const struct check *tests = &g->checks[3];
    assert_string_equal(tests->name, "tests");
    assert_int_equal(tests->kind, CLR_CHECK_TEST);
    assert_string_equal(tests->report, "/tmp/coverage.json");
    assert_true(tests->coverage_min > 84.9 && tests->coverage_min < 85.1);
    assert_int_equal(tests->timeout_ms, 20 * 60 * 1000);
    clr_gauntlet_free(g);

    /* python-strict: the same checks with --no-config (the profile's own choices) */
    g = NULL;
    assert_int_equal(clr_gauntlet_profile(&g, "python-strict", &err), 0);
    assert_int_equal(clr_gauntlet_count(g), 4);
    for (size_t i = 0; i < 4; i++) {
        char run[64];
        snprintf(run, sizeof(run), "clearing-pycheck %s --no-config --info", names[i]);
        assert_non_null(strstr(g->checks[i].shell, run));
    }
    assert_true(g->checks[3].coverage_min > 84.9 && g->checks[3].coverage_min < 85.1);
    assert_int_equal(g->checks[2].severity_min, 2);
    assert_string_equal(clr_gauntlet_profile_image("python-strict"), "clearing/python:latest");
    clr_gauntlet_free(g);

    g = NULL;
    assert_int_equal(clr_gauntlet_profile(&g, "c", &err), 0);
    assert_int_equal(clr_gauntlet_count(g), 3);
    assert_int_equal(g->parallel, 1);
    assert_string_equal(g->checks[0].name, "static-analysis");
    assert_string_equal(g->checks[0].tool, "cppcheck");
    assert_string_equal(g->checks[2].tool, "make");
    clr_gauntlet_free(g);

    g = NULL;
    assert_int_equal(clr_gauntlet_profile(&g, "cobol", &err), -1);
    assert_null(g);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_string_equal(err.message,
                        "no gauntlet profile 'cobol' (shipped: python, python-strict, c)");

    assert_string_equal(clr_gauntlet_profile_image("python"), "clearing/python:latest");
    assert_string_equal(clr_gauntlet_profile_image("c"), "clearing/c:latest");
    assert_null(clr_gauntlet_profile_image("cobol"));
}

/* info: parsed as an absolute path; a check's info object (untrusted) taken with caps. */
static void test_info(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: t, run: x, info: /tmp/i.json,\n"
                               "     pass: {report: /tmp/c.json, coverage_min: 85}}\n"
                               "  - {name: u, run: y, info: /tmp/u.json}\n");
    assert_string_equal(g->checks[0].info, "/tmp/i.json");
    struct check_result cr;
    memset(&cr, 0, sizeof(cr));
    cr.coverage_min = g->checks[0].coverage_min;
    json_t *info = json_pack("{s:s, s:s, s:f}", "config", "setup.cfg", "version", "mypy 1.0.1",
                             "coverage_min", 70.5);
    gauntlet_take_info(&cr, &g->checks[0], info);
    json_decref(info);
    assert_string_equal(cr.config, "setup.cfg");
    assert_string_equal(cr.tool_version, "mypy 1.0.1");
    assert_true(cr.coverage_min > 70.4 && cr.coverage_min < 70.6);

    /* out of range, of another type, control bytes, too long: ignored, replaced, cut */
    char longs[1000];
    memset(longs, 'a', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    memset(&cr, 0, sizeof(cr));
    cr.coverage_min = 85;
    info = json_pack("{s:s, s:s, s:i}", "config", "a\x1b[2Jb\n", "version", longs,
                     "coverage_min", 101);
    gauntlet_take_info(&cr, &g->checks[0], info);
    json_decref(info);
    assert_string_equal(cr.config, "a?[2Jb?");
    assert_int_equal(strlen(cr.tool_version), sizeof(cr.tool_version) - 1);
    assert_true(cr.coverage_min > 84.9 && cr.coverage_min < 85.1);
    info = json_pack("{s:i, s:[], s:s}", "config", 3, "version", "coverage_min", "0");
    memset(&cr, 0, sizeof(cr));
    cr.coverage_min = 85;
    gauntlet_take_info(&cr, &g->checks[0], info);
    json_decref(info);
    assert_string_equal(cr.config, "");
    assert_string_equal(cr.tool_version, "");
    assert_true(cr.coverage_min > 84.9);
    /* not an object: nothing taken */
    info = json_string("setup.cfg");
    gauntlet_take_info(&cr, &g->checks[0], info);
    json_decref(info);
    assert_string_equal(cr.config, "");

    /* a check without a coverage gate gets none from its info */
    memset(&cr, 0, sizeof(cr));
    cr.coverage_min = g->checks[1].coverage_min;
    assert_true(cr.coverage_min < 0);
    info = json_pack("{s:i}", "coverage_min", 50);
    gauntlet_take_info(&cr, &g->checks[1], info);
    json_decref(info);
    assert_true(cr.coverage_min < 0);
    clr_gauntlet_free(g);

    clr_error err = CLR_ERROR_INIT;
    const char *rel = "checks: [{name: a, run: b, info: i.json}]\n";
    assert_int_equal(clr_gauntlet_parse(&g, rel, strlen(rel), "g.yaml", &err), -1);
    assert_non_null(strstr(err.message, "info must be an absolute path inside the sandbox"));
}

/* The configuration and tool version a check named: in the JSON, the JUnit and the summary. */
static clr_gauntlet_report *report_of(const clr_gauntlet *g, const clr_check_status *status,
                                      const char *const *messages, const char *const *outs);

static void test_report_config_and_version(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: lint, kind: lint, run: a}\n"
                               "  - {name: types, kind: types, run: b}\n");
    const clr_check_status st[] = {CLR_CHECK_PASSED, CLR_CHECK_PASSED};
    const char *const msg[] = {"", ""};
    const char *const out[] = {"", ""};
    clr_gauntlet_report *r = report_of(g, st, msg, out);
    snprintf(r->results[0].config, sizeof(r->results[0].config), "pyproject.toml");
    snprintf(r->results[0].tool_version, sizeof(r->results[0].tool_version), "ruff 0.17.4");
    snprintf(r->results[1].config, sizeof(r->results[1].config), "a\"<b>");
    json_t *j = clr_gauntlet_report_json(r);
    json_t *c0 = json_array_get(json_object_get(j, "checks"), 0);
    json_t *c1 = json_array_get(json_object_get(j, "checks"), 1);
    assert_string_equal(json_string_value(json_object_get(c0, "config")), "pyproject.toml");
    assert_string_equal(json_string_value(json_object_get(c0, "tool_version")), "ruff 0.17.4");
    assert_string_equal(json_string_value(json_object_get(c1, "config")), "a\"<b>");
    assert_true(json_is_null(json_object_get(c1, "tool_version")));
    json_decref(j);
    char *x = clr_gauntlet_report_junit(r);
    assert_non_null(strstr(x, "<properties>\n      <property name=\"config\" "
                              "value=\"pyproject.toml\"/>\n      <property name=\"tool_version\" "
                              "value=\"ruff 0.17.4\"/>\n    </properties>"));
    assert_non_null(strstr(x, "<property name=\"config\" value=\"a&quot;&lt;b&gt;\"/>"));
    free(x);
    char *s = clr_gauntlet_report_summary(r);
    assert_non_null(strstr(s, "  passed       lint                  1.5s  [ruff 0.17.4, "
                              "configuration: pyproject.toml]\n"));
    assert_non_null(strstr(s, "[version unknown, configuration: a\"<b>]\n"));
    free(s);
    clr_gauntlet_report_free(r);
    clr_gauntlet_free(g);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(clr_check_status_name(CLR_CHECK_PASSED), "passed");
    assert_string_equal(clr_check_status_name(CLR_CHECK_FAILED), "failed");
    assert_string_equal(clr_check_status_name(CLR_CHECK_ERROR), "error");
    assert_string_equal(clr_check_status_name(CLR_CHECK_TIMED_OUT), "timed-out");
    assert_string_equal(clr_check_status_name(CLR_CHECK_TOOL_MISSING), "tool-missing");
    assert_string_equal(clr_check_status_name(CLR_CHECK_SKIPPED), "skipped");
    assert_string_equal(clr_check_status_name((clr_check_status)42), "unknown");
}

static clr_buffer buf(const char *s, size_t n)
{
    clr_buffer b = {NULL, 0};
    if (n) {
        b.data = malloc(n);
        assert_non_null(b.data);
        memcpy(b.data, s, n);
        b.len = n;
    }
    return b;
}

static void test_counts_from_output(void **state)
{
    (void)state;
    const char out[] = "collected 7 items\n...F.\n"
                       "===== 5 passed, 1 failed, 2 errors, 3 skipped in 0.12s =====\n";
    clr_buffer b = buf(out, sizeof(out) - 1);
    json_t *f = json_object();
    gauntlet_test_counts(f, &b);
    assert_int_equal(json_integer_value(json_object_get(f, "tests_passed")), 5);
    assert_int_equal(json_integer_value(json_object_get(f, "tests_failed")), 1);
    assert_int_equal(json_integer_value(json_object_get(f, "tests_errors")), 2);
    assert_int_equal(json_integer_value(json_object_get(f, "tests_skipped")), 3);
    json_decref(f);
    free(b.data);

    /* the last summary counts; NUL bytes in the output do not stop the search; a word with no
     * number before it is no figure */
    const char out2[] = "1 passed\0garbage\n  12 passed\nno failed here\n";
    b = buf(out2, sizeof(out2) - 1);
    f = json_object();
    gauntlet_test_counts(f, &b);
    assert_int_equal(json_integer_value(json_object_get(f, "tests_passed")), 12);
    assert_null(json_object_get(f, "tests_failed"));
    assert_null(json_object_get(f, "tests_errors"));
    json_decref(f);
    free(b.data);

    clr_buffer empty = {NULL, 0};
    f = json_object();
    gauntlet_test_counts(f, &empty);
    assert_int_equal(json_object_size(f), 0);
    json_decref(f);
}

/* A report as the runner leaves it: results judged for the gauntlet's checks. */
static clr_gauntlet_report *report_of(const clr_gauntlet *g, const clr_check_status *status,
                                      const char *const *messages, const char *const *outs)
{
    clr_gauntlet_report *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->g = g;
    r->checks = g->checks;
    r->n = g->n;
    r->results = calloc(g->n, sizeof(*r->results));
    assert_non_null(r->results);
    r->passed = true;
    for (size_t i = 0; i < g->n; i++) {
        struct check_result *cr = &r->results[i];
        cr->status = status[i];
        cr->duration_us = (i + 1) * 1500000;
        cr->exit_code = status[i] == CLR_CHECK_PASSED ? 0 : status[i] == CLR_CHECK_FAILED ? 1 : -1;
        snprintf(cr->message, sizeof(cr->message), "%s", messages[i]);
        cr->figures = json_object();
        cr->out = buf(outs[i], strlen(outs[i]));
        if (g->checks[i].required && status[i] != CLR_CHECK_PASSED)
            r->passed = false;
    }
    r->duration_us = 4200000;
    return r;
}

static void test_report_json(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: lint, kind: lint, run: flake8}\n"
                               "  - {name: tests, kind: test, run: pytest}\n"
                               "  - {name: extra, run: x, required: false}\n");
    const clr_check_status st[] = {CLR_CHECK_PASSED, CLR_CHECK_FAILED, CLR_CHECK_SKIPPED};
    const char *const msg[] = {"", "exited with 1", "tool 'x' is not in the image"};
    const char *const out[] = {"", "E   assert 1 == 2\n", ""};
    clr_gauntlet_report *r = report_of(g, st, msg, out);
    json_object_set_new(r->results[1].figures, "tests_failed", json_integer(1));
    assert_false(clr_gauntlet_report_passed(r));

    json_t *j = clr_gauntlet_report_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "fail");
    assert_int_equal(json_integer_value(json_object_get(j, "duration_ms")), 4200);
    json_t *checks = json_object_get(j, "checks");
    assert_int_equal(json_array_size(checks), 3);
    json_t *c0 = json_array_get(checks, 0), *c1 = json_array_get(checks, 1),
           *c2 = json_array_get(checks, 2);
    assert_string_equal(json_string_value(json_object_get(c0, "name")), "lint");
    assert_string_equal(json_string_value(json_object_get(c0, "kind")), "lint");
    assert_true(json_is_true(json_object_get(c0, "required")));
    assert_string_equal(json_string_value(json_object_get(c0, "status")), "passed");
    assert_int_equal(json_integer_value(json_object_get(c0, "duration_ms")), 1500);
    assert_int_equal(json_integer_value(json_object_get(c0, "exit_code")), 0);
    assert_true(json_is_null(json_object_get(c0, "message"))); /* no message: null */
    assert_string_equal(json_string_value(json_object_get(json_object_get(c0, "stdout"), "data")),
                        "");
    assert_string_equal(json_string_value(json_object_get(c1, "kind")), "test");
    assert_string_equal(json_string_value(json_object_get(c1, "status")), "failed");
    assert_string_equal(json_string_value(json_object_get(c1, "message")), "exited with 1");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c1, "figures"),
                                                        "tests_failed")),
                     1);
    json_t *so = json_object_get(c1, "stdout");
    assert_string_equal(json_string_value(json_object_get(so, "data")), "E   assert 1 == 2\n");
    assert_string_equal(json_string_value(json_object_get(so, "encoding")), "utf-8");
    assert_string_equal(json_string_value(json_object_get(c2, "kind")), "other");
    assert_true(json_is_false(json_object_get(c2, "required")));
    assert_string_equal(json_string_value(json_object_get(c2, "status")), "skipped");
    assert_true(json_is_null(json_object_get(c2, "exit_code")));
    json_decref(j);
    clr_gauntlet_report_free(r);
    clr_gauntlet_free(g);
}

static void test_report_json_binary_output(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks: [{name: a, run: b}]\n");
    const clr_check_status st[] = {CLR_CHECK_PASSED};
    const char *const msg[] = {""};
    const char *const out[] = {"\xff\xfe"};
    clr_gauntlet_report *r = report_of(g, st, msg, out);
    assert_true(clr_gauntlet_report_passed(r));
    json_t *j = clr_gauntlet_report_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "pass");
    json_t *so = json_object_get(json_array_get(json_object_get(j, "checks"), 0), "stdout");
    assert_string_equal(json_string_value(json_object_get(so, "encoding")), "base64");
    assert_string_equal(json_string_value(json_object_get(so, "data")), "//4=");
    json_decref(j);
    clr_gauntlet_report_free(r);
    clr_gauntlet_free(g);
}

static void test_report_junit(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: ok, kind: lint, run: a}\n"
                               "  - {name: bad, kind: test, run: b}\n"
                               "  - {name: gone, run: c}\n"
                               "  - {name: slow, run: d}\n"
                               "  - {name: opt, run: e, required: false}\n");
    const clr_check_status st[] = {CLR_CHECK_PASSED, CLR_CHECK_FAILED, CLR_CHECK_TOOL_MISSING,
                                   CLR_CHECK_TIMED_OUT, CLR_CHECK_SKIPPED};
    const char *const msg[] = {"", "1 < 2 & \"x\"", "tool 'c' is not in the image",
                               "timed out after 600000 ms", "skipped"};
    const char *const out[] = {"fine\n", "<script>\x1b[31m\n", "", "", ""};
    clr_gauntlet_report *r = report_of(g, st, msg, out);
    char *x = clr_gauntlet_report_junit(r);
    assert_non_null(x);
    assert_non_null(strstr(x, "<testsuite name=\"clearing-gauntlet\" tests=\"5\" failures=\"1\" "
                              "errors=\"2\" skipped=\"1\" time=\"4.200\">"));
    assert_non_null(strstr(x, "<testcase classname=\"gauntlet.lint\" name=\"ok\" time=\"1.500\">"));
    assert_non_null(
        strstr(x, "<failure type=\"failed\" message=\"1 &lt; 2 &amp; &quot;x&quot;\"/>"));
    assert_non_null(strstr(x, "<error type=\"tool-missing\" message=\"tool 'c' is not in the "
                              "image\"/>"));
    assert_non_null(strstr(x, "<error type=\"timed-out\""));
    assert_non_null(strstr(x, "<skipped type=\"skipped\""));
    /* the tool's bytes: escaped, and the escape byte (not allowed in XML 1.0) replaced */
    assert_non_null(strstr(x, "<system-out>&lt;script&gt;?[31m\n</system-out>"));
    assert_non_null(strstr(x, "<system-out>fine\n</system-out>"));
    assert_null(strstr(x, "<script>"));
    assert_null(strstr(x, "\x1b"));
    assert_non_null(strstr(x, "</testsuite>\n"));
    free(x);
    clr_gauntlet_report_free(r);
    clr_gauntlet_free(g);
}

static void test_report_summary(void **state)
{
    (void)state;
    clr_gauntlet *g = parse_ok("checks:\n"
                               "  - {name: lint, run: a}\n"
                               "  - {name: tests, kind: test, run: b}\n"
                               "  - {name: opt, run: c, required: false}\n");
    const clr_check_status st[] = {CLR_CHECK_PASSED, CLR_CHECK_FAILED, CLR_CHECK_FAILED};
    const char *const msg[] = {"", "exited with 1", "exited with 2"};
    const char *const out[] = {"", "\n line one\x1b[2J\nline two\n3\n4\n5\n6\nseven\n",
                               "optional output\n"};
    clr_gauntlet_report *r = report_of(g, st, msg, out);
    json_object_set_new(r->results[1].figures, "tests_passed", json_integer(4));
    json_object_set_new(r->results[1].figures, "tests_failed", json_integer(2));
    json_object_set_new(r->results[0].figures, "coverage_percent", json_real(91.25));
    char *s = clr_gauntlet_report_summary(r);
    assert_non_null(s);
    assert_non_null(strstr(s, "  passed       lint                  1.5s   coverage 91.2%\n"));
    assert_non_null(strstr(s, "  failed       tests                 3.0s  exited with 1; 4 passed"
                              " 2 failed\n"));
    assert_non_null(strstr(s, "(optional) exited with 2"));
    /* the first six non-empty lines of a failed required check, terminal-safe */
    assert_non_null(strstr(s, "      |  line one?[2J\n      | line two\n"));
    assert_non_null(strstr(s, "      | 6\n"));
    assert_null(strstr(s, "seven"));
    assert_null(strstr(s, "\x1b"));
    assert_null(strstr(s, "optional output")); /* an optional check's output is not shown */
    assert_non_null(strstr(s, "verdict: FAIL — failed: tests (4.2s)\n"));
    free(s);
    clr_gauntlet_report_free(r);

    const clr_check_status ok[] = {CLR_CHECK_PASSED, CLR_CHECK_PASSED, CLR_CHECK_FAILED};
    r = report_of(g, ok, msg, out);
    assert_true(clr_gauntlet_report_passed(r)); /* only an optional check failed */
    s = clr_gauntlet_report_summary(r);
    assert_non_null(strstr(s, "verdict: PASS (4.2s)\n"));
    free(s);
    clr_gauntlet_report_free(r);
    clr_gauntlet_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_kind),
        cmocka_unit_test(test_refuses_the_shape),
        cmocka_unit_test(test_refuses_checks),
        cmocka_unit_test(test_refuses_pass),
        cmocka_unit_test(test_refuses_size_and_alias_bombs),
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_counts_from_output),
        cmocka_unit_test(test_report_json),
        cmocka_unit_test(test_report_json_binary_output),
        cmocka_unit_test(test_report_junit),
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_report_config_and_version),
        cmocka_unit_test(test_report_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
