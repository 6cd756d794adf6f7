/* The validation gauntlet: parsing (libyaml), running, judging and reporting.
 *
 * Everything a check prints and every report file it writes comes from code under test, so it
 * is parsed defensively: reports are read with a size cap, figures are taken only when they have
 * the expected types, and a report that is missing or malformed makes the check an error, never a
 * pass. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clearing/exec.h"
#include "clearing/gauntlet.h"
#include "internal.h"
#include "yamlx.h"

#define REPORT_MAX (8 * 1024 * 1024)

struct check {
    char *name;
    clr_check_kind kind;
    char *shell;
    char **argv;
    char *tool;
    char *cwd;
    char **env;
    uint32_t timeout_ms;
    bool required;
    uint64_t output_cap;
    int exit_codes[16];
    size_t n_exit_codes;
    char *report;
    double coverage_min; /* < 0: none */
    int severity_min;    /* 0: none; 1 low, 2 medium, 3 high */
    int confidence_min;
};

struct clr_gauntlet {
    struct check *checks;
    size_t n;
    unsigned parallel;
};

struct check_result {
    clr_check_status status;
    uint64_t duration_us;
    int exit_code; /* -1 when it did not exit */
    char message[512];
    json_t *figures;
    clr_buffer out, err;
};

struct clr_gauntlet_report {
    const clr_gauntlet *g; /* borrowed names: the report copies what it needs */
    struct check *checks;  /* shallow copies of names */
    size_t n;
    struct check_result *results;
    uint64_t duration_us;
    bool passed;
};

static const char *const kind_names[] = {"lint", "types", "test", "coverage", "security", "other"};

const char *clr_check_status_name(clr_check_status s)
{
    switch (s) {
    case CLR_CHECK_PASSED: return "passed";
    case CLR_CHECK_FAILED: return "failed";
    case CLR_CHECK_ERROR: return "error";
    case CLR_CHECK_TIMED_OUT: return "timed-out";
    case CLR_CHECK_TOOL_MISSING: return "tool-missing";
    case CLR_CHECK_SKIPPED: return "skipped";
    default: return "unknown";
    }
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

static int severity_level(const char *s)
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
                if (clr_yaml_number(p, clr_yaml_node(p, v->data.sequence.items.start[i]), "exit code", 0, 255,
                               &d) < 0)
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
            int l = severity_level(clr_yaml_scalar(v));
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
                return clr_yaml_error(p, v, "name '%.64s' must be 1-64 of A-Z a-z 0-9 _ . -", c->name);
        } else if (!strcmp(key, "kind")) {
            const char *s = clr_yaml_scalar(v);
            int found = -1;
            for (int i = 0; s && i < 6; i++)
                if (!strcmp(s, kind_names[i]))
                    found = i;
            if (found < 0)
                return clr_yaml_error(p, v, "kind must be lint, types, test, coverage, security or other");
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
            if (!clr_yaml_scalar(v) || clr_parse_duration_ms(&n, clr_yaml_scalar(v), &e2) < 0 || n == 0 ||
                n > 24ull * 3600 * 1000)
                return clr_yaml_error(p, v, "timeout must be a duration from 1ms to 24h (e.g. 120s): %s",
                            e2.message);
            c->timeout_ms = (uint32_t)n;
        } else if (!strcmp(key, "output_cap")) {
            if (!clr_yaml_scalar(v) || clr_parse_size(&n, clr_yaml_scalar(v), &e2) < 0 || n > 64 * CLR_MIB)
                return clr_yaml_error(p, v, "output_cap must be a size up to 64m");
            c->output_cap = n;
        } else if (!strcmp(key, "required")) {
            if (clr_yaml_bool(p, v, "required", &c->required) < 0)
                return -1;
        } else if (!strcmp(key, "env")) {
            if (clr_yaml_env(p, v, "env", &c->env) < 0)
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

int clr_gauntlet_parse(clr_gauntlet **out, const char *text, size_t len, const char *source,
                       clr_error *err)
{
    if (len > CLR_GAUNTLET_MAX_BYTES)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s is larger than %d bytes", source,
                             CLR_GAUNTLET_MAX_BYTES);
    clr_yaml p;
    if (clr_yaml_load(&p, text, len, source, err) < 0)
        return -1;
    clr_gauntlet *g = calloc(1, sizeof(*g));
    int rc = -1;
    yaml_node_t *root = yaml_document_get_root_node(&p.doc);
    if (!g) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    g->parallel = 1;
    if (!root || root->type != YAML_MAPPING_NODE) {
        clr_yaml_error(&p, root, "a gauntlet is a mapping with a 'checks' list");
        goto out;
    }
    yaml_node_t *checks = NULL;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = clr_yaml_node(&p, pr->key), *v = clr_yaml_node(&p, pr->value);
        const char *key = clr_yaml_scalar(k);
        double d;
        if (key && !strcmp(key, "checks")) {
            checks = v;
        } else if (key && !strcmp(key, "parallel")) {
            if (clr_yaml_number(&p, v, "parallel", 1, 16, &d) < 0)
                goto out;
            g->parallel = (unsigned)d;
        } else {
            clr_yaml_error(&p, k, "unknown key '%.64s' (expected checks, parallel)", key ? key : "?");
            goto out;
        }
    }
    if (!checks || checks->type != YAML_SEQUENCE_NODE) {
        clr_yaml_error(&p, checks ? checks : root, "'checks' must be a list");
        goto out;
    }
    size_t n = (size_t)(checks->data.sequence.items.top - checks->data.sequence.items.start);
    if (n == 0 || n > CLR_GAUNTLET_MAX_CHECKS) {
        clr_yaml_error(&p, checks, "a gauntlet has 1 to %d checks", CLR_GAUNTLET_MAX_CHECKS);
        goto out;
    }
    g->checks = calloc(n, sizeof(struct check));
    if (!g->checks) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *cn = clr_yaml_node(&p, checks->data.sequence.items.start[i]);
        g->n = i + 1;
        if (!cn) {
            clr_error_set(err, CLR_E_LIMIT, 0, "%s: too many nodes (aliases?)", source);
            goto out;
        }
        if (parse_check(&p, &g->checks[i], cn) < 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(g->checks[j].name, g->checks[i].name)) {
                clr_yaml_error(&p, cn, "two checks are named %s", g->checks[i].name);
                goto out;
            }
        }
    }
    rc = 0;
out:
    clr_yaml_free(&p);
    if (rc < 0) {
        clr_gauntlet_free(g);
        return -1;
    }
    *out = g;
    return 0;
}

/* ---- shipped profiles ---- */

static const char python_profile[] =
    "parallel: 3\n"
    "checks:\n"
    "  - name: lint\n"
    "    kind: lint\n"
    "    tool: flake8\n"
    "    env: {XDG_CACHE_HOME: /tmp/.cache}\n"
    "    run: flake8 --max-line-length=100 --extend-exclude=.venv,build .\n"
    "    timeout: 5m\n"
    "  - name: types\n"
    "    kind: types\n"
    "    tool: mypy\n"
    "    env: {XDG_CACHE_HOME: /tmp/.cache}\n"
    "    run: mypy --ignore-missing-imports --cache-dir=/tmp/mypy-cache .\n"
    "    timeout: 10m\n"
    "  - name: security\n"
    "    kind: security\n"
    "    tool: bandit\n"
    "    env: {XDG_CACHE_HOME: /tmp/.cache}\n"
    "    run: bandit -r . -q -f json -o /tmp/bandit.json -x ./.venv\n"
    "    timeout: 5m\n"
    "    pass:\n"
    "      exit_codes: [0, 1]\n"
    "      report: /tmp/bandit.json\n"
    "      severity: medium\n"
    "      confidence: medium\n"
    "  - name: tests\n"
    "    kind: test\n"
    "    tool: pytest\n"
    "    run: >-\n"
    "      python3 -m coverage run --data-file=/tmp/.coverage --source=. -m pytest -q\n"
    "      -p no:cacheprovider; s=$?;\n"
    "      python3 -m coverage json -q --data-file=/tmp/.coverage -o /tmp/coverage.json;\n"
    "      exit $s\n"
    "    env:\n"
    "      PYTHONDONTWRITEBYTECODE: \"1\"\n"
    "      XDG_CACHE_HOME: /tmp/.cache\n"
    "    timeout: 20m\n"
    "    pass:\n"
    "      report: /tmp/coverage.json\n"
    "      coverage_min: 85\n";

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
    if (!strcmp(name, "c"))
        return clr_gauntlet_parse(out, c_profile, sizeof(c_profile) - 1, "profile c", err);
    return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                         "no gauntlet profile '%.64s' (shipped: python, c)", name);
}

const char *clr_gauntlet_profile_image(const char *name)
{
    if (!strcmp(name, "python"))
        return "clearing/python:latest";
    if (!strcmp(name, "c"))
        return "clearing/c:latest";
    return NULL;
}

/* ---- running ---- */

struct runner {
    const clr_gauntlet *g;
    const clr_engine_options *eopts;
    const clr_sandbox *sb;
    clr_gauntlet_progress progress;
    void *ctx;
    pthread_mutex_t lock;
    size_t next;
    struct check_result *results;
    bool *missing; /* per check: its tool is not in the image */
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void progress(struct runner *r, const char *check, const char *event)
{
    if (!r->progress)
        return;
    pthread_mutex_lock(&r->lock);
    r->progress(r->ctx, check, event);
    pthread_mutex_unlock(&r->lock);
}

/* Reads a report file from the sandbox (capped); NULL with a message if it cannot. */
static json_t *read_report(clr_engine *eng, const clr_sandbox *sb, const char *path, char *why,
                           size_t len)
{
    const char *argv[] = {"cat", "--", path, NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.limits.timeout_ms = 30000;
    o.limits.stdout_cap = REPORT_MAX;
    clr_exec_result res;
    clr_error err = CLR_ERROR_INIT;
    json_t *j = NULL;
    if (clr_exec_run(&res, eng, sb, &o, &err) < 0) {
        snprintf(why, len, "cannot read %.100s: %.150s", path, err.message);
        return NULL;
    }
    if (res.status != CLR_EXEC_EXITED || res.exit_code != 0)
        snprintf(why, len, "the tool wrote no report at %s", path);
    else if (res.stdout_truncated)
        snprintf(why, len, "report %s is larger than %d bytes", path, REPORT_MAX);
    else if (!(j = json_loadb((const char *)res.out.data, res.out.len, 0, NULL)))
        snprintf(why, len, "report %s is not JSON", path);
    clr_exec_result_clear(&res);
    return j;
}

/* The last "N passed", "N failed", "N error(s)", "N skipped" in the output (pytest's summary
 * line) -> figures. The output is the tool's bytes: not NUL-terminated, maybe with NULs. */
static void test_counts(json_t *figures, const clr_buffer *out)
{
    static const char *const words[] = {"passed", "failed", "error", "errors", "skipped"};
    const char *s = out->data ? (const char *)out->data : "";
    size_t n = out->data ? out->len : 0;
    for (size_t w = 0; w < 5; w++) {
        size_t wl = strlen(words[w]);
        const char *hit = NULL;
        for (const char *p = s; (size_t)(p - s) < n &&
                                (p = memmem(p, n - (size_t)(p - s), words[w], wl));
             p++)
            hit = p;
        if (!hit || hit == s || hit[-1] != ' ')
            continue;
        const char *d = hit - 1;
        while (d > s && d[-1] >= '0' && d[-1] <= '9' && hit - d < 10)
            d--;
        if (d == hit - 1)
            continue;
        char key[16];
        snprintf(key, sizeof(key), "tests_%s", w >= 2 && w <= 3 ? "errors" : words[w]);
        json_object_set_new(figures, key, json_integer(strtol(d, NULL, 10)));
    }
}

static void judge(struct runner *r, clr_engine *eng, const struct check *c,
                  struct check_result *cr, const clr_exec_result *res)
{
    bool code_ok = false;
    for (size_t i = 0; i < c->n_exit_codes; i++)
        code_ok |= res->exit_code == c->exit_codes[i];
    if (res->status == CLR_EXEC_TIMED_OUT) {
        cr->status = CLR_CHECK_TIMED_OUT;
        snprintf(cr->message, sizeof(cr->message), "timed out after %u ms", c->timeout_ms);
        return;
    }
    if (res->status != CLR_EXEC_EXITED) {
        cr->status = CLR_CHECK_ERROR;
        snprintf(cr->message, sizeof(cr->message), "%s: %.480s", clr_exec_status_name(res->status),
                 res->message);
        return;
    }
    /* res's output buffers were handed to cr before judging: count from there. */
    if (c->kind == CLR_CHECK_TEST)
        test_counts(cr->figures, &cr->out);
    if (!code_ok) {
        cr->status = CLR_CHECK_FAILED;
        snprintf(cr->message, sizeof(cr->message), "exited with %d", res->exit_code);
        return;
    }
    cr->status = CLR_CHECK_PASSED;
    if (!c->report)
        return;
    char why[300] = "";
    json_t *rep = read_report(eng, r->sb, c->report, why, sizeof(why));
    if (!rep) {
        cr->status = CLR_CHECK_ERROR;
        snprintf(cr->message, sizeof(cr->message), "%s", why);
        return;
    }
    if (c->coverage_min >= 0) {
        json_t *pc = json_object_get(json_object_get(rep, "totals"), "percent_covered");
        if (!json_is_number(pc)) {
            cr->status = CLR_CHECK_ERROR;
            snprintf(cr->message, sizeof(cr->message),
                     "coverage report has no totals.percent_covered");
        } else {
            double v = json_number_value(pc);
            json_object_set_new(cr->figures, "coverage_percent", json_real(round(v * 100) / 100));
            if (v + 1e-9 < c->coverage_min) {
                cr->status = CLR_CHECK_FAILED;
                snprintf(cr->message, sizeof(cr->message), "coverage %.2f%% is below %.2f%%", v,
                         c->coverage_min);
            }
        }
    }
    if (c->severity_min) {
        json_t *results = json_object_get(rep, "results");
        if (!json_is_array(results)) {
            cr->status = CLR_CHECK_ERROR;
            snprintf(cr->message, sizeof(cr->message), "security report has no results list");
        } else {
            int counts[4] = {0, 0, 0, 0}, blocking = 0;
            size_t i;
            json_t *f;
            json_array_foreach(results, i, f) {
                int sev = severity_level(json_string_value(json_object_get(f, "issue_severity")));
                int conf =
                    severity_level(json_string_value(json_object_get(f, "issue_confidence")));
                if (sev < 1)
                    continue;
                counts[sev]++;
                if (sev >= c->severity_min && conf >= (c->confidence_min ? c->confidence_min : 1))
                    blocking++;
            }
            json_object_set_new(cr->figures, "findings",
                                json_pack("{s:i, s:i, s:i}", "low", counts[1], "medium",
                                          counts[2], "high", counts[3]));
            json_object_set_new(cr->figures, "blocking_findings", json_integer(blocking));
            if (blocking) {
                cr->status = CLR_CHECK_FAILED;
                snprintf(cr->message, sizeof(cr->message),
                         "%d finding(s) at or above severity %s", blocking,
                         c->severity_min == 3 ? "high" : c->severity_min == 2 ? "medium" : "low");
            }
        }
    }
    json_decref(rep);
}

static void run_check(struct runner *r, clr_engine *eng, size_t i)
{
    const struct check *c = &r->g->checks[i];
    struct check_result *cr = &r->results[i];
    cr->figures = json_object();
    cr->exit_code = -1;
    if (r->missing[i]) {
        cr->status = c->required ? CLR_CHECK_TOOL_MISSING : CLR_CHECK_SKIPPED;
        snprintf(cr->message, sizeof(cr->message), "tool '%s' is not in the image%s", c->tool,
                 c->required ? "" : " (optional check skipped)");
        progress(r, c->name, clr_check_status_name(cr->status));
        return;
    }
    progress(r, c->name, "start");
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = (const char *const *)c->argv;
    o.shell = c->shell;
    o.env = (const char *const *)c->env;
    o.cwd = c->cwd;
    o.limits.timeout_ms = c->timeout_ms;
    o.limits.stdout_cap = c->output_cap;
    o.limits.stderr_cap = c->output_cap;
    clr_exec_result res;
    clr_error err = CLR_ERROR_INIT;
    uint64_t t0 = mono_us();
    if (clr_exec_run(&res, eng, r->sb, &o, &err) < 0) {
        cr->status = CLR_CHECK_ERROR;
        snprintf(cr->message, sizeof(cr->message), "%.500s", err.message);
    } else {
        cr->exit_code = res.status == CLR_EXEC_EXITED ? res.exit_code : -1;
        cr->out = res.out;
        cr->err = res.err;
        res.out.data = res.err.data = NULL;
        judge(r, eng, c, cr, &res);
        clr_exec_result_clear(&res);
    }
    cr->duration_us = mono_us() - t0;
    progress(r, c->name, clr_check_status_name(cr->status));
}

static void *worker(void *p)
{
    struct runner *r = p;
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    bool have = clr_engine_open(&eng, r->eopts, &err) == 0;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        size_t i = r->next++;
        pthread_mutex_unlock(&r->lock);
        if (i >= r->g->n)
            break;
        if (!have) {
            r->results[i].status = CLR_CHECK_ERROR;
            r->results[i].figures = json_object();
            r->results[i].exit_code = -1;
            snprintf(r->results[i].message, sizeof(r->results[i].message), "%.500s", err.message);
            continue;
        }
        run_check(r, eng, i);
    }
    clr_engine_free(eng);
    return NULL;
}

/* One exec finds every tool that is missing, so a missing tool is reported as such and never
 * mistaken for a failing check. */
static int find_missing(struct runner *r, clr_engine *eng, clr_error *err)
{
    const char **argv = calloc(r->g->n + 5, sizeof(char *));
    if (!argv)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = "for t in \"$@\"; do command -v \"$t\" >/dev/null 2>&1 && echo 1 || echo 0; done";
    argv[3] = "probe";
    for (size_t i = 0; i < r->g->n; i++)
        argv[4 + i] = r->g->checks[i].tool;
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.limits.timeout_ms = 30000;
    clr_exec_result res;
    int rc = clr_exec_run(&res, eng, r->sb, &o, err);
    free(argv);
    if (rc < 0)
        return -1;
    if (res.status != CLR_EXEC_EXITED || res.exit_code != 0 || res.out.len != 2 * r->g->n) {
        clr_exec_result_clear(&res);
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the sandbox cannot run /bin/sh to look for the checks' tools");
    }
    for (size_t i = 0; i < r->g->n; i++)
        r->missing[i] = res.out.data[2 * i] != '1';
    clr_exec_result_clear(&res);
    return 0;
}

int clr_gauntlet_run(clr_gauntlet_report **out, const clr_gauntlet *g,
                     const clr_engine_options *eopts, const clr_sandbox *sb,
                     clr_gauntlet_progress prog, void *ctx, clr_error *err)
{
    struct runner r = {.g = g, .eopts = eopts, .sb = sb, .progress = prog, .ctx = ctx};
    r.results = calloc(g->n, sizeof(*r.results));
    r.missing = calloc(g->n, sizeof(bool));
    clr_gauntlet_report *rep = calloc(1, sizeof(*rep));
    if (!r.results || !r.missing || !rep) {
        free(r.results);
        free(r.missing);
        free(rep);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r.lock, NULL);
    uint64_t t0 = mono_us();
    clr_engine *eng = NULL;
    int rc = clr_engine_open(&eng, eopts, err);
    if (rc == 0)
        rc = find_missing(&r, eng, err);
    clr_engine_free(eng);
    if (rc < 0) {
        pthread_mutex_destroy(&r.lock);
        free(r.results);
        free(r.missing);
        free(rep);
        return -1;
    }
    unsigned n = g->parallel < g->n ? g->parallel : (unsigned)g->n;
    pthread_t threads[16];
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&threads[i], NULL, worker, &r) == 0)
            started++;
    }
    if (started == 0)
        worker(&r);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&r.lock);
    free(r.missing);
    rep->g = g;
    rep->checks = g->checks;
    rep->n = g->n;
    rep->results = r.results;
    rep->duration_us = mono_us() - t0;
    rep->passed = true;
    for (size_t i = 0; i < g->n; i++) {
        if (g->checks[i].required && r.results[i].status != CLR_CHECK_PASSED)
            rep->passed = false;
    }
    *out = rep;
    return 0;
}

bool clr_gauntlet_report_passed(const clr_gauntlet_report *r)
{
    return r->passed;
}

void clr_gauntlet_report_free(clr_gauntlet_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        json_decref(r->results[i].figures);
        free(r->results[i].out.data);
        free(r->results[i].err.data);
    }
    free(r->results);
    free(r);
}

static json_t *text_or_base64(const clr_buffer *b)
{
    clr_exec_result tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.out = *b;
    json_t *j = clr_exec_result_to_json(&tmp);
    json_t *o = json_pack("{s:O, s:O}", "data", json_object_get(j, "stdout"), "encoding",
                          json_object_get(j, "stdout_encoding"));
    json_decref(j);
    return o;
}

json_t *clr_gauntlet_report_json(const clr_gauntlet_report *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const struct check *c = &r->checks[i];
        const struct check_result *cr = &r->results[i];
        json_array_append_new(
            a, json_pack("{s:s, s:s, s:b, s:s, s:I, s:o, s:s?, s:O, s:o, s:o}", "name", c->name,
                         "kind", kind_names[c->kind], "required", c->required, "status",
                         clr_check_status_name(cr->status), "duration_ms",
                         (json_int_t)(cr->duration_us / 1000), "exit_code",
                         cr->exit_code >= 0 ? json_integer(cr->exit_code) : json_null(),
                         "message", cr->message[0] ? cr->message : NULL, "figures",
                         cr->figures ? cr->figures : json_object(), "stdout",
                         text_or_base64(&cr->out), "stderr", text_or_base64(&cr->err)));
    }
    return json_pack("{s:s, s:I, s:o}", "verdict", r->passed ? "pass" : "fail", "duration_ms",
                     (json_int_t)(r->duration_us / 1000), "checks", a);
}

/* Appends s to the buffer with XML escaping; bytes that XML 1.0 cannot carry become '?'. */
static void xml_escape(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '<')
            fputs("&lt;", f);
        else if (ch == '>')
            fputs("&gt;", f);
        else if (ch == '&')
            fputs("&amp;", f);
        else if (ch == '"')
            fputs("&quot;", f);
        else if (ch < 0x20 && ch != '\n' && ch != '\t' && ch != '\r')
            fputc('?', f);
        else
            fputc(ch, f);
    }
}

char *clr_gauntlet_report_junit(const clr_gauntlet_report *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    size_t failures = 0, errors = 0, skipped = 0;
    for (size_t i = 0; i < r->n; i++) {
        clr_check_status s = r->results[i].status;
        failures += s == CLR_CHECK_FAILED;
        errors += s == CLR_CHECK_ERROR || s == CLR_CHECK_TIMED_OUT || s == CLR_CHECK_TOOL_MISSING;
        skipped += s == CLR_CHECK_SKIPPED;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<testsuite name=\"clearing-gauntlet\" tests=\"%zu\" failures=\"%zu\" "
               "errors=\"%zu\" skipped=\"%zu\" time=\"%.3f\">\n",
            r->n, failures, errors, skipped, (double)r->duration_us / 1e6);
    for (size_t i = 0; i < r->n; i++) {
        const struct check *c = &r->checks[i];
        const struct check_result *cr = &r->results[i];
        fprintf(f, "  <testcase classname=\"gauntlet.%s\" name=\"", kind_names[c->kind]);
        xml_escape(f, c->name, strlen(c->name));
        fprintf(f, "\" time=\"%.3f\">\n", (double)cr->duration_us / 1e6);
        const char *tag = cr->status == CLR_CHECK_FAILED    ? "failure"
                          : cr->status == CLR_CHECK_SKIPPED ? "skipped"
                          : cr->status == CLR_CHECK_PASSED  ? NULL
                                                            : "error";
        if (tag) {
            fprintf(f, "    <%s type=\"%s\" message=\"", tag, clr_check_status_name(cr->status));
            xml_escape(f, cr->message, strlen(cr->message));
            fprintf(f, "\"/>\n");
        }
        if (cr->out.len) {
            fputs("    <system-out>", f);
            xml_escape(f, (const char *)cr->out.data, cr->out.len);
            fputs("</system-out>\n", f);
        }
        if (cr->err.len) {
            fputs("    <system-err>", f);
            xml_escape(f, (const char *)cr->err.data, cr->err.len);
            fputs("</system-err>\n", f);
        }
        fputs("  </testcase>\n", f);
    }
    fputs("</testsuite>\n", f);
    fclose(f);
    return buf;
}

/* Writes tool output for a terminal: control bytes (escape sequences) become '?', lines are
 * cut at 200 bytes. */
static void terminal_safe(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char ch = (unsigned char)s[i];
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

char *clr_gauntlet_report_summary(const clr_gauntlet_report *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < r->n; i++) {
        const struct check *c = &r->checks[i];
        const struct check_result *cr = &r->results[i];
        char figs[200] = "";
        json_t *v;
        size_t fl = 0;
        if ((v = json_object_get(cr->figures, "tests_passed")))
            fl += (size_t)snprintf(figs + fl, sizeof(figs) - fl, " %lld passed",
                                   (long long)json_integer_value(v));
        if ((v = json_object_get(cr->figures, "tests_failed")) && fl < sizeof(figs))
            fl += (size_t)snprintf(figs + fl, sizeof(figs) - fl, " %lld failed",
                                   (long long)json_integer_value(v));
        if ((v = json_object_get(cr->figures, "coverage_percent")) && fl < sizeof(figs))
            fl += (size_t)snprintf(figs + fl, sizeof(figs) - fl, " coverage %.1f%%",
                                   json_number_value(v));
        if ((v = json_object_get(cr->figures, "blocking_findings")) && fl < sizeof(figs))
            snprintf(figs + fl, sizeof(figs) - fl, " %lld blocking finding(s)",
                     (long long)json_integer_value(v));
        fprintf(f, "  %-12s %-18s %6.1fs  %s%s%s%s\n", clr_check_status_name(cr->status), c->name,
                (double)cr->duration_us / 1e6, c->required ? "" : "(optional) ", cr->message,
                cr->message[0] && figs[0] ? ";" : "", figs);
        /* For a failure, the first lines the tool printed: enough to see why. */
        if (c->required && cr->status == CLR_CHECK_FAILED) {
            const clr_buffer *b = cr->out.len ? &cr->out : &cr->err;
            int lines = 0;
            size_t start = 0;
            for (size_t k = 0; k <= b->len && lines < 6; k++) {
                if (k == b->len || b->data[k] == '\n') {
                    if (k > start) {
                        fputs("      | ", f);
                        terminal_safe(f, (const char *)b->data + start, k - start);
                        fputc('\n', f);
                        lines++;
                    }
                    start = k + 1;
                }
            }
        }
    }
    fprintf(f, "verdict: %s", r->passed ? "PASS" : "FAIL");
    if (!r->passed) {
        fputs(" — failed:", f);
        for (size_t i = 0; i < r->n; i++) {
            if (r->checks[i].required && r->results[i].status != CLR_CHECK_PASSED)
                fprintf(f, " %s", r->checks[i].name);
        }
    }
    fprintf(f, " (%.1fs)\n", (double)r->duration_us / 1e6);
    fclose(f);
    return buf;
}
