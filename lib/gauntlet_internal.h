/* The gauntlet's pieces as its modules share them (include/clearing/gauntlet.h is the contract
 * with the rest of clearing):
 *   gauntlet_parse.c   the gauntlet file and the shipped profiles -> struct clr_gauntlet
 *   gauntlet.c         running the checks in a sandbox and judging them -> a report
 *   gauntlet_report.c  a report as JSON, JUnit XML and a terminal summary (pure)
 * The report and the runner call the parser's helpers, never the other way. */
#ifndef CLR_GAUNTLET_INTERNAL_H
#define CLR_GAUNTLET_INTERNAL_H

#include "clearing/gauntlet.h"
#include "internal.h"

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
    char *info;          /* the check's own account: {tool, version, config, coverage_min} */
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
    char config[256];       /* from the check's info file: the configuration it used ("" none) */
    char tool_version[128]; /* ... and the tool that ran ("" unknown) */
    double coverage_min;    /* the threshold judged: the check's, or its info's */
};

struct clr_gauntlet_report {
    const clr_gauntlet *g; /* borrowed names: the report copies what it needs */
    struct check *checks;  /* shallow copies of names */
    size_t n;
    struct check_result *results;
    uint64_t duration_us;
    bool passed;
};

CLR_DEFINE_CLEANUP(clr_gauntlet *, clr_gauntlet_free)
#define _cleanup_gauntlet_ __attribute__((cleanup(clr_gauntlet_freep)))

/* ---- gauntlet_parse.c ---- */

/* "lint", "types", ... for a kind; "other" for one out of range. */
const char *gauntlet_kind_name(clr_check_kind kind);
/* low 1, medium 2, high 3 (any case); -1 for anything else, NULL included. */
int gauntlet_severity_level(const char *s);

/* ---- gauntlet.c ---- */

/* The last "N passed", "N failed", "N error(s)", "N skipped" in a test tool's output (pytest's
 * summary line) as tests_passed, tests_failed, tests_errors, tests_skipped in figures. */
void gauntlet_test_counts(json_t *figures, const clr_buffer *out);
/* Takes a check's info object (untrusted): "config" and "version" strings as printable text
 * (cut to the fields' sizes), "coverage_min" a number 0..100 that replaces the threshold of a
 * check that has one. Anything else, or of another type, is ignored. */
void gauntlet_take_info(struct check_result *cr, const struct check *c, const json_t *info);

#endif
