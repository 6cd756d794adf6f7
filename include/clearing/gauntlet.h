/* The validation gauntlet: checks (lint, types, tests, coverage, security, other) run inside a
 * sandbox, each with its own timeout and output cap, independent ones in parallel, and a report
 * whose verdict is pass only when every required check passed.
 *
 * A gauntlet is YAML:
 *   parallel: 3                 # checks at once (default 1)
 *   checks:
 *     - name: lint              # [A-Za-z0-9_.-]{1,64}, unique
 *       kind: lint              # lint | types | test | coverage | security | other
 *       run: flake8 .           # a shell string, or a list (argv)
 *       tool: flake8            # must exist in the image, else status tool-missing
 *       timeout: 120s           # default 10m
 *       required: true          # default true; a failing optional check does not fail
 *       env: {KEY: value}
 *       cwd: /workspace
 *       output_cap: 256k        # per stream, default 1m
 *       info: /tmp/lint.json    # a JSON object the check wrote: {"config", "version",
 *                               #   "coverage_min"} -> the report's config and tool_version;
 *                               #   coverage_min replaces pass.coverage_min (read capped)
 *       pass:                   # default: exit status 0
 *         exit_codes: [0, 1]
 *         report: /tmp/cov.json # a JSON report the tool wrote inside the sandbox
 *         coverage_min: 85      # coverage.py JSON: totals.percent_covered
 *         severity: medium      # bandit JSON: fail on a finding at or above this severity
 *         confidence: medium    #   ... and at or above this confidence
 * Unknown keys and wrong types are errors that give the line. */
#ifndef CLEARING_GAUNTLET_H
#define CLEARING_GAUNTLET_H

#include <jansson.h>

#include "common.h"
#include "engine.h"
#include "sandbox.h"

typedef enum {
    CLR_CHECK_LINT,
    CLR_CHECK_TYPES,
    CLR_CHECK_TEST,
    CLR_CHECK_COVERAGE,
    CLR_CHECK_SECURITY,
    CLR_CHECK_OTHER,
} clr_check_kind;

typedef enum {
    CLR_CHECK_PASSED,
    CLR_CHECK_FAILED,
    CLR_CHECK_ERROR,        /* the check could not be judged (report missing, sandbox failed) */
    CLR_CHECK_TIMED_OUT,
    CLR_CHECK_TOOL_MISSING,
    CLR_CHECK_SKIPPED,
} clr_check_status;

typedef struct clr_gauntlet clr_gauntlet;

#define CLR_GAUNTLET_MAX_BYTES (256 * 1024)
#define CLR_GAUNTLET_MAX_CHECKS 64

/* Parses a gauntlet. source names it in messages ("gauntlet.yaml"). *out: clr_gauntlet_free(). */
CLR_PUBLIC int clr_gauntlet_parse(clr_gauntlet **out, const char *yaml, size_t len,
                                  const char *source, clr_error *err);
/* A gauntlet shipped with clearing: "python", "python-strict" or "c". */
CLR_PUBLIC int clr_gauntlet_profile(clr_gauntlet **out, const char *name, clr_error *err);
/* The image a shipped profile's tools live in (NULL for an unknown profile). */
CLR_PUBLIC const char *clr_gauntlet_profile_image(const char *name);
CLR_PUBLIC void clr_gauntlet_free(clr_gauntlet *g);
CLR_PUBLIC size_t clr_gauntlet_count(const clr_gauntlet *g);
/* Overrides the parallelism (1..16). */
CLR_PUBLIC void clr_gauntlet_set_parallel(clr_gauntlet *g, unsigned parallel);
/* How many checks run at once: the parallelism, at most the number of checks. */
CLR_PUBLIC unsigned clr_gauntlet_parallel(const clr_gauntlet *g);

typedef struct clr_gauntlet_report clr_gauntlet_report;

/* Progress: event is "start", "tool-missing" or a status name; may be NULL. Called from the
 * checks' threads, serialised. */
typedef void (*clr_gauntlet_progress)(void *ctx, const char *check, const char *event);

/* Runs every check in the sandbox. The report refers to the gauntlet's checks: free it first. engine_opts tells the checks' threads how to reach the engine
 * (each opens its own connection). Returns 0 with a report whatever the verdict; -1 only when
 * nothing could be run. *out: clr_gauntlet_report_free(). */
CLR_PUBLIC int clr_gauntlet_run(clr_gauntlet_report **out, const clr_gauntlet *g,
                                const clr_engine_options *engine_opts, const clr_sandbox *sb,
                                clr_gauntlet_progress progress, void *ctx, clr_error *err);
CLR_PUBLIC bool clr_gauntlet_report_passed(const clr_gauntlet_report *r);
/* {"verdict": "pass"|"fail", "duration_ms", "checks": [{name, kind, required, status,
 * duration_ms, exit_code, message, figures, stdout, stderr, config, tool_version}]}; config and
 * tool_version are null unless the check's info file named them; caller owns. */
CLR_PUBLIC json_t *clr_gauntlet_report_json(const clr_gauntlet_report *r);
/* JUnit XML for CI systems; caller frees. */
CLR_PUBLIC char *clr_gauntlet_report_junit(const clr_gauntlet_report *r);
/* A short human summary naming every check that failed; caller frees. */
CLR_PUBLIC char *clr_gauntlet_report_summary(const clr_gauntlet_report *r);
CLR_PUBLIC void clr_gauntlet_report_free(clr_gauntlet_report *r);

CLR_PUBLIC const char *clr_check_status_name(clr_check_status s);

#endif
