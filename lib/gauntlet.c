/* The validation gauntlet: running the checks in a sandbox and judging them (parsing is
 * gauntlet_parse.c, formatting the report gauntlet_report.c).
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
#include "gauntlet_internal.h"

#define REPORT_MAX (8 * 1024 * 1024)
#define INFO_MAX (64 * 1024)

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
static json_t *read_report(clr_engine *eng, const clr_sandbox *sb, const char *path, size_t cap,
                           char *why, size_t len)
{
    const char *argv[] = {"cat", "--", path, NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.limits.timeout_ms = 30000;
    o.limits.stdout_cap = cap;
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
        snprintf(why, len, "report %s is larger than %zu bytes", path, cap);
    else if (!(j = json_loadb((const char *)res.out.data, res.out.len, 0, NULL)))
        snprintf(why, len, "report %s is not JSON", path);
    clr_exec_result_clear(&res);
    return j;
}

/* The last "N passed", "N failed", "N error(s)", "N skipped" in the output (pytest's summary
 * line) -> figures. The output is the tool's bytes: not NUL-terminated, maybe with NULs. */
void gauntlet_test_counts(json_t *figures, const clr_buffer *out)
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

/* A string of the info object as printable ASCII in dst (cut to its size); "" when absent. */
static void info_text(char *dst, size_t size, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = 0;
    for (; s && s[n] && n + 1 < size; n++)
        dst[n] = s[n] >= 0x20 && s[n] < 0x7f ? s[n] : '?';
    dst[n] = '\0';
}

void gauntlet_take_info(struct check_result *cr, const struct check *c, const json_t *info)
{
    if (!json_is_object(info))
        return;
    info_text(cr->config, sizeof(cr->config), json_object_get(info, "config"));
    info_text(cr->tool_version, sizeof(cr->tool_version), json_object_get(info, "version"));
    const json_t *m = json_object_get(info, "coverage_min");
    if (c->coverage_min >= 0 && json_is_number(m) && json_number_value(m) >= 0 &&
        json_number_value(m) <= 100)
        cr->coverage_min = json_number_value(m);
}

/* The check's info file, when it names one and wrote it: what it is says goes into the result
 * (a missing or malformed one leaves config and tool_version unknown, never fails the check). */
static void read_info(struct runner *r, clr_engine *eng, const struct check *c,
                      struct check_result *cr)
{
    if (!c->info)
        return;
    char why[300];
    json_t *info = read_report(eng, r->sb, c->info, INFO_MAX, why, sizeof(why));
    gauntlet_take_info(cr, c, info);
    json_decref(info);
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
        gauntlet_test_counts(cr->figures, &cr->out);
    if (!code_ok) {
        cr->status = CLR_CHECK_FAILED;
        snprintf(cr->message, sizeof(cr->message), "exited with %d", res->exit_code);
        return;
    }
    cr->status = CLR_CHECK_PASSED;
    if (!c->report)
        return;
    char why[300] = "";
    json_t *rep = read_report(eng, r->sb, c->report, REPORT_MAX, why, sizeof(why));
    if (!rep) {
        cr->status = CLR_CHECK_ERROR;
        snprintf(cr->message, sizeof(cr->message), "%s", why);
        return;
    }
    if (cr->coverage_min >= 0) {
        json_t *pc = json_object_get(json_object_get(rep, "totals"), "percent_covered");
        if (!json_is_number(pc)) {
            cr->status = CLR_CHECK_ERROR;
            snprintf(cr->message, sizeof(cr->message),
                     "coverage report has no totals.percent_covered");
        } else {
            double v = json_number_value(pc);
            json_object_set_new(cr->figures, "coverage_percent", json_real(round(v * 100) / 100));
            if (v + 1e-9 < cr->coverage_min) {
                cr->status = CLR_CHECK_FAILED;
                snprintf(cr->message, sizeof(cr->message), "coverage %.2f%% is below %.2f%%", v,
                         cr->coverage_min);
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
                int sev = gauntlet_severity_level(
                    json_string_value(json_object_get(f, "issue_severity")));
                int conf = gauntlet_severity_level(
                    json_string_value(json_object_get(f, "issue_confidence")));
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
    cr->coverage_min = c->coverage_min;
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
        read_info(r, eng, c, cr);
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
