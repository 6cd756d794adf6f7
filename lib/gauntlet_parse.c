/* Gauntlet files (see include/clearing/gauntlet.h): the YAML a repository keeps in
 * .clearing/gauntlet.yaml, as untrusted as the code it checks, and the profiles shipped with
 * clearing. Bounded work (yamlx.h), every refusal names the line. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gauntlet_internal.h"
#include "yamlx.h"

static const char *const kind_names[] = {"lint", "types", "test", "coverage", "security", "other"};

const char *gauntlet_kind_name(clr_check_kind kind)
{
    return (unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[kind]
                                                                        : "other";
}

static void check_clear(struct check *c)
{
    free(c->name);
    free(c->shell);
    clr_strv_free(c->argv);
    free(c->tool);
    free(c->cwd);
    clr_strv_free(c->env);
    free(c->report);
    free(c->info);
}

void clr_gauntlet_free(clr_gauntlet *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        check_clear(&g->checks[i]);
    free(g->checks);
    free(g);
}

size_t clr_gauntlet_count(const clr_gauntlet *g)
{
    return g->n;
}

unsigned clr_gauntlet_parallel(const clr_gauntlet *g)
{
    return g->parallel < g->n ? g->parallel : (unsigned)g->n;
}

void clr_gauntlet_set_parallel(clr_gauntlet *g, unsigned parallel)
{
    g->parallel = parallel < 1 ? 1 : parallel > 16 ? 16 : parallel;
}

/* ---- parsing ---- */

int gauntlet_severity_level(const char *s)
{
    if (!s)
        return -1;
    if (!strcasecmp(s, "low"))
        return 1;
    if (!strcasecmp(s, "medium"))
        return 2;
    if (!strcasecmp(s, "high"))
        return 3;
    return -1;
}

static int parse_pass(clr_yaml *p, struct check *c, yaml_node_t *m)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return clr_yaml_error(p, m, "check %s: pass must be a mapping", c->name);
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = clr_yaml_node(p, pr->key), *v = clr_yaml_node(p, pr->value);
        const char *key = clr_yaml_scalar(k);
        if (!key || !v)
            return clr_yaml_error(p, k, "pass: bad key");
        double d;
        if (!strcmp(key, "exit_codes")) {
            if (v->type != YAML_SEQUENCE_NODE)
                return clr_yaml_error(p, v, "exit_codes must be a list of numbers");
            size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            if (n == 0 || n > 16)
                return clr_yaml_error(p, v, "exit_codes must have 1 to 16 numbers");
            for (size_t i = 0; i < n; i++) {
                if (clr_yaml_number(p, clr_yaml_node(p, v->data.sequence.items.start[i]),
                                    "exit code", 0, 255, &d) < 0)
                    return -1;
                c->exit_codes[i] = (int)d;
            }
            c->n_exit_codes = n;
        } else if (!strcmp(key, "report")) {
            if (clr_yaml_string(p, v, "report", &c->report) < 0)
                return -1;
            if (c->report[0] != '/')
                return clr_yaml_error(p, v, "report must be an absolute path inside the sandbox");
        } else if (!strcmp(key, "coverage_min")) {
            if (clr_yaml_number(p, v, "coverage_min", 0, 100, &c->coverage_min) < 0)
                return -1;
        } else if (!strcmp(key, "severity") || !strcmp(key, "confidence")) {
            int l = gauntlet_severity_level(clr_yaml_scalar(v));
            if (l < 0)
                return clr_yaml_error(p, v, "%s must be low, medium or high", key);
            *(key[0] == 's' ? &c->severity_min : &c->confidence_min) = l;
        } else {
            return clr_yaml_error(p, k, "check %s: unknown key pass.%s", c->name, key);
        }
    }
    if ((c->coverage_min >= 0 || c->severity_min) && !c->report)
        return clr_yaml_error(p, m, "check %s: coverage_min and severity need a report", c->name);
    return 0;
}

/* info: where the check writes its account of itself (an absolute path in the sandbox). */
static int parse_info(clr_yaml *p, yaml_node_t *v, char **info)
{
    if (clr_yaml_string(p, v, "info", info) < 0)
        return -1;
    if ((*info)[0] != '/')
        return clr_yaml_error(p, v, "info must be an absolute path inside the sandbox");
    return 0;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int parse_check(clr_yaml *p, struct check *c, yaml_node_t *m)
{
    memset(c, 0, sizeof(*c));
    c->required = true;
    c->timeout_ms = 600000;
    c->output_cap = CLR_MIB;
    c->coverage_min = -1;
    c->kind = CLR_CHECK_OTHER;
    if (!m || m->type != YAML_MAPPING_NODE)
        return clr_yaml_error(p, m, "each check must be a mapping");
    bool has_kind = false;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = clr_yaml_node(p, pr->key), *v = clr_yaml_node(p, pr->value);
        const char *key = clr_yaml_scalar(k);
        if (!key || !v)
            return clr_yaml_error(p, k, "check: keys must be strings");
        uint64_t n;
        clr_error e2 = CLR_ERROR_INIT;
        if (!strcmp(key, "name")) {
            if (clr_yaml_string(p, v, "name", &c->name) < 0)
                return -1;
            if (!name_ok(c->name))
                return clr_yaml_error(p, v, "name '%.64s' must be 1-64 of A-Z a-z 0-9 _ . -",
                                      c->name);
        } else if (!strcmp(key, "kind")) {
            const char *s = clr_yaml_scalar(v);
            int found = -1;
            for (int i = 0; s && i < 6; i++)
                if (!strcmp(s, kind_names[i]))
                    found = i;
            if (found < 0)
                return clr_yaml_error(p, v, "kind must be lint, types, test, coverage, security "
                                            "or other");
            c->kind = (clr_check_kind)found;
            has_kind = true;
        } else if (!strcmp(key, "run")) {
            if (v->type == YAML_SEQUENCE_NODE) {
                if (clr_yaml_strv(p, v, "run", &c->argv) < 0)
                    return -1;
            } else if (clr_yaml_string(p, v, "run", &c->shell) < 0) {
                return -1;
            }
        } else if (!strcmp(key, "tool")) {
            if (clr_yaml_string(p, v, "tool", &c->tool) < 0)
                return -1;
            if (!name_ok(c->tool) && c->tool[0] != '/')
                return clr_yaml_error(p, v, "tool must be a command name or an absolute path");
        } else if (!strcmp(key, "cwd")) {
            if (clr_yaml_string(p, v, "cwd", &c->cwd) < 0)
                return -1;
            if (c->cwd[0] != '/')
                return clr_yaml_error(p, v, "cwd must be absolute");
        } else if (!strcmp(key, "timeout")) {
            if (!clr_yaml_scalar(v) || clr_parse_duration_ms(&n, clr_yaml_scalar(v), &e2) < 0 ||
                n == 0 || n > 24ull * 3600 * 1000)
                return clr_yaml_error(p, v,
                                      "timeout must be a duration from 1ms to 24h (e.g. 120s): %s",
                                      e2.message);
            c->timeout_ms = (uint32_t)n;
        } else if (!strcmp(key, "output_cap")) {
            if (!clr_yaml_scalar(v) || clr_parse_size(&n, clr_yaml_scalar(v), &e2) < 0 ||
                n > 64 * CLR_MIB)
                return clr_yaml_error(p, v, "output_cap must be a size up to 64m");
            c->output_cap = n;
        } else if (!strcmp(key, "required")) {
            if (clr_yaml_bool(p, v, "required", &c->required) < 0)
                return -1;
        } else if (!strcmp(key, "env")) {
            if (clr_yaml_env(p, v, "env", &c->env) < 0)
                return -1;
        } else if (!strcmp(key, "info")) {
            if (parse_info(p, v, &c->info) < 0)
                return -1;
        } else if (!strcmp(key, "pass")) {
            if (parse_pass(p, c, v) < 0)
                return -1;
        } else {
            return clr_yaml_error(p, k, "check: unknown key '%.64s'", key);
        }
    }
    if (!c->name)
        return clr_yaml_error(p, m, "a check has no name");
    if (!c->shell && !c->argv)
        return clr_yaml_error(p, m, "check %s has no run", c->name);
    if (!has_kind)
        c->kind = CLR_CHECK_OTHER;
    if (!c->tool) {
        /* The first word of the command is the tool to look for. */
        const char *first = c->argv ? c->argv[0] : c->shell;
        size_t l = strcspn(first, " \t;|&");
        c->tool = strndup(first, l);
    }
    if (c->n_exit_codes == 0) {
        c->exit_codes[0] = 0;
        c->n_exit_codes = 1;
    }
    return 0;
}

/* The root mapping's keys: parallel into g, the checks list into *checks. */
static int parse_root(clr_yaml *p, clr_gauntlet *g, yaml_node_t *root, yaml_node_t **checks)
{
    if (!root || root->type != YAML_MAPPING_NODE)
        return clr_yaml_error(p, root, "a gauntlet is a mapping with a 'checks' list");
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = clr_yaml_node(p, pr->key), *v = clr_yaml_node(p, pr->value);
        const char *key = clr_yaml_scalar(k);
        double d;
        if (key && !strcmp(key, "checks")) {
            *checks = v;
        } else if (key && !strcmp(key, "parallel")) {
            if (clr_yaml_number(p, v, "parallel", 1, 16, &d) < 0)
                return -1;
            g->parallel = (unsigned)d;
        } else {
            return clr_yaml_error(p, k, "unknown key '%.64s' (expected checks, parallel)",
                                  key ? key : "?");
        }
    }
    if (!*checks || (*checks)->type != YAML_SEQUENCE_NODE)
        return clr_yaml_error(p, *checks ? *checks : root, "'checks' must be a list");
    return 0;
}

/* Every check of the list, in order; names unique. */
static int parse_checks(clr_yaml *p, clr_gauntlet *g, yaml_node_t *checks)
{
    size_t n = (size_t)(checks->data.sequence.items.top - checks->data.sequence.items.start);
    if (n == 0 || n > CLR_GAUNTLET_MAX_CHECKS)
        return clr_yaml_error(p, checks, "a gauntlet has 1 to %d checks",
                              CLR_GAUNTLET_MAX_CHECKS);
    g->checks = calloc(n, sizeof(struct check));
    if (!g->checks)
        return clr_error_set(p->err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *cn = clr_yaml_node(p, checks->data.sequence.items.start[i]);
        g->n = i + 1;
        if (!cn)
            return clr_error_set(p->err, CLR_E_LIMIT, 0, "%s: too many nodes (aliases?)",
                                 p->source);
        if (parse_check(p, &g->checks[i], cn) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(g->checks[j].name, g->checks[i].name))
                return clr_yaml_error(p, cn, "two checks are named %s", g->checks[i].name);
        }
    }
    return 0;
}

int clr_gauntlet_parse(clr_gauntlet **out, const char *text, size_t len, const char *source,
                       clr_error *err)
{
    if (len > CLR_GAUNTLET_MAX_BYTES)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s is larger than %d bytes", source,
                             CLR_GAUNTLET_MAX_BYTES);
    _cleanup_yaml_ clr_yaml p = {0};
    if (clr_yaml_load(&p, text, len, source, err) < 0)
        return -1;
    _cleanup_gauntlet_ clr_gauntlet *g = calloc(1, sizeof(*g));
    if (!g)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    g->parallel = 1;
    yaml_node_t *checks = NULL;
    if (parse_root(&p, g, yaml_document_get_root_node(&p.doc), &checks) < 0 ||
        parse_checks(&p, g, checks) < 0)
        return -1;
    *out = steal_pointer(&g);
    return 0;
}

/* ---- shipped profiles ---- */

/* The python profile: each check through clearing-pycheck (tools/pycheck, in the python image),
 * which runs the tool by the project's own configuration (ruff, mypy, bandit, pytest, coverage:
 * its fail_under replaces the 85 here) or by these defaults where it has none, and names the
 * configuration file and the tool's version in its info file. All four checks run at once, so
 * the gauntlet takes about its slowest check's time when the sandbox has a core beyond the
 * tests' (--cpus 2: docs/PERFORMANCE.md).
 * python-strict is the same with --no-config: the profile's choices whatever the project says. */
#define PYTHON_PROFILE(NOCFG)                                                                     \
    "parallel: 4\n"                                                                               \
    "checks:\n"                                                                                   \
    "  - name: lint\n"                                                                            \
    "    kind: lint\n"                                                                            \
    "    tool: clearing-pycheck\n"                                                                \
    "    run: clearing-pycheck lint" NOCFG " --info /tmp/.clearing-lint.json\n"                   \
    "    info: /tmp/.clearing-lint.json\n"                                                        \
    "    timeout: 5m\n"                                                                           \
    "  - name: types\n"                                                                           \
    "    kind: types\n"                                                                           \
    "    tool: clearing-pycheck\n"                                                                \
    "    run: clearing-pycheck types" NOCFG " --info /tmp/.clearing-types.json\n"                 \
    "    info: /tmp/.clearing-types.json\n"                                                       \
    "    timeout: 10m\n"                                                                          \
    "  - name: security\n"                                                                        \
    "    kind: security\n"                                                                        \
    "    tool: clearing-pycheck\n"                                                                \
    "    run: clearing-pycheck security" NOCFG " --info /tmp/.clearing-security.json"             \
    " --report /tmp/bandit.json\n"                                                                \
    "    info: /tmp/.clearing-security.json\n"                                                    \
    "    timeout: 5m\n"                                                                           \
    "    pass:\n"                                                                                 \
    "      exit_codes: [0, 1]\n"                                                                  \
    "      report: /tmp/bandit.json\n"                                                            \
    "      severity: medium\n"                                                                    \
    "      confidence: medium\n"                                                                  \
    "  - name: tests\n"                                                                           \
    "    kind: test\n"                                                                            \
    "    tool: clearing-pycheck\n"                                                                \
    "    run: clearing-pycheck tests" NOCFG " --info /tmp/.clearing-tests.json"                   \
    " --report /tmp/coverage.json\n"                                                              \
    "    info: /tmp/.clearing-tests.json\n"                                                       \
    "    timeout: 20m\n"                                                                          \
    "    pass:\n"                                                                                 \
    "      report: /tmp/coverage.json\n"                                                          \
    "      coverage_min: 85\n"

static const char python_profile[] = PYTHON_PROFILE("");
static const char python_strict_profile[] = PYTHON_PROFILE(" --no-config");

static const char c_profile[] =
    "parallel: 1\n"
    "checks:\n"
    "  - name: static-analysis\n"
    "    kind: lint\n"
    "    tool: cppcheck\n"
    "    run: cppcheck --error-exitcode=1 --quiet --enable=warning,portability --inline-suppr .\n"
    "    timeout: 10m\n"
    "  - name: build\n"
    "    kind: other\n"
    "    tool: make\n"
    "    run: make -s CFLAGS='-O2 -Wall -Wextra -Werror'\n"
    "    timeout: 20m\n"
    "  - name: tests\n"
    "    kind: test\n"
    "    tool: make\n"
    "    run: make -s test CFLAGS='-O2 -Wall -Wextra -Werror'\n"
    "    timeout: 20m\n";

int clr_gauntlet_profile(clr_gauntlet **out, const char *name, clr_error *err)
{
    if (!strcmp(name, "python"))
        return clr_gauntlet_parse(out, python_profile, sizeof(python_profile) - 1,
                                  "profile python", err);
    if (!strcmp(name, "python-strict"))
        return clr_gauntlet_parse(out, python_strict_profile, sizeof(python_strict_profile) - 1,
                                  "profile python-strict", err);
    if (!strcmp(name, "c"))
        return clr_gauntlet_parse(out, c_profile, sizeof(c_profile) - 1, "profile c", err);
    return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                         "no gauntlet profile '%.64s' (shipped: python, python-strict, c)", name);
}

const char *clr_gauntlet_profile_image(const char *name)
{
    if (!strcmp(name, "python") || !strcmp(name, "python-strict"))
        return "clearing/python:latest";
    if (!strcmp(name, "c"))
        return "clearing/c:latest";
    return NULL;
}
