/* A gauntlet's report (see include/clearing/gauntlet.h) as JSON for the API, JUnit XML for CI
 * systems, and a short summary for a terminal. Pure: formats what the runner judged. Everything
 * in it (output, messages) may come from code under test: escaped for each format. */
#include <stdio.h>
#include <string.h>

#include "clearing/exec.h"
#include "gauntlet_internal.h"


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
            a, json_pack("{s:s, s:s, s:b, s:s, s:I, s:o, s:s?, s:O, s:o, s:o, s:s?, s:s?}",
                         "name", c->name,
                         "kind", gauntlet_kind_name(c->kind), "required", c->required, "status",
                         clr_check_status_name(cr->status), "duration_ms",
                         (json_int_t)(cr->duration_us / 1000), "exit_code",
                         cr->exit_code >= 0 ? json_integer(cr->exit_code) : json_null(),
                         "message", cr->message[0] ? cr->message : NULL, "figures",
                         cr->figures ? cr->figures : json_object(), "stdout",
                         text_or_base64(&cr->out), "stderr", text_or_base64(&cr->err),
                         "config", cr->config[0] ? cr->config : NULL, "tool_version",
                         cr->tool_version[0] ? cr->tool_version : NULL));
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

/* What the check said it ran, as the testcase's properties. */
static void junit_properties(FILE *f, const struct check_result *cr)
{
    if (!cr->config[0] && !cr->tool_version[0])
        return;
    fputs("    <properties>\n", f);
    if (cr->config[0]) {
        fputs("      <property name=\"config\" value=\"", f);
        xml_escape(f, cr->config, strlen(cr->config));
        fputs("\"/>\n", f);
    }
    if (cr->tool_version[0]) {
        fputs("      <property name=\"tool_version\" value=\"", f);
        xml_escape(f, cr->tool_version, strlen(cr->tool_version));
        fputs("\"/>\n", f);
    }
    fputs("    </properties>\n", f);
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
        fprintf(f, "  <testcase classname=\"gauntlet.%s\" name=\"", gauntlet_kind_name(c->kind));
        xml_escape(f, c->name, strlen(c->name));
        fprintf(f, "\" time=\"%.3f\">\n", (double)cr->duration_us / 1e6);
        junit_properties(f, cr);
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
        fprintf(f, "  %-12s %-18s %6.1fs  %s%s%s%s", clr_check_status_name(cr->status), c->name,
                (double)cr->duration_us / 1e6, c->required ? "" : "(optional) ", cr->message,
                cr->message[0] && figs[0] ? ";" : "", figs);
        if (cr->tool_version[0] || cr->config[0])
            fprintf(f, "%s[%s, configuration: %s]", cr->message[0] || figs[0] ? " " : "",
                    cr->tool_version[0] ? cr->tool_version : "version unknown",
                    cr->config[0] ? cr->config : "none");
        fputc('\n', f);
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
