/* A plan's parts as its modules share them (include/clearing/plan.h is the contract with the
 * rest of clearing):
 *   plan_parse.c  YAML or JSON from the caller -> struct clr_plan (bounded, every refusal names
 *                 the line)
 *   plan.c        running a parsed plan: sandbox, steps, gauntlet, signed commit, cleanup
 * The runner reads the parsed plan; the parser calls nothing of the runner. */
#ifndef CLR_PLAN_INTERNAL_H
#define CLR_PLAN_INTERNAL_H

#include "clearing/egress.h"
#include "clearing/plan.h"
#include "internal.h"

#define CLR_PLAN_STEP_MAX_EXPECT 16
#define CLR_PLAN_STEP_DEFAULT_MODE 0644
#define CLR_PLAN_STEP_DEFAULT_TIMEOUT_MS 600000

enum step_kind { STEP_WRITE, STEP_DELETE, STEP_RUN };

struct step {
    enum step_kind kind;
    char *path;           /* write, delete: relative to the workspace, checked */
    uint8_t *content;     /* write: the bytes (content or content_base64 decoded) */
    size_t content_len;
    uint32_t mode;        /* write: default 0644 */
    bool recursive;       /* delete */
    char *shell;          /* run: exactly one of shell and argv */
    char **argv;
    char **env;           /* run: KEY=VALUE, NULL-terminated */
    char *cwd;            /* run: absolute */
    uint32_t timeout_ms;  /* run: default 10 minutes */
    int expect[CLR_PLAN_STEP_MAX_EXPECT]; /* run: exit codes that pass (default [0]) */
    size_t n_expect;
};

struct clr_plan {
    char *repo, *base, *branch, *profile, *image, *message;
    bool commit_on_failure;    /* default true */
    clr_egress_policy *egress; /* NULL: no outbound connection at all */
    clr_limits limits;         /* CLR_LIMITS_INIT, then the plan's limits */
    struct step *steps;
    size_t n;
};

CLR_DEFINE_CLEANUP(clr_plan *, clr_plan_free)
#define _cleanup_plan_ __attribute__((cleanup(clr_plan_freep)))

#endif
