/* Plans: an agent's change as an ordered list of steps, executed in a fresh sandbox on a branch
 * of its own, checked by the gauntlet and handed back as a commit with the verdict.
 *
 *   repo: /path/to/repo          # or given by the caller
 *   base: main                   # default HEAD
 *   branch: agent/fix-123        # default clearing/<sandbox id>
 *   profile: python              # gauntlet profile and its image, unless the repository has
 *                                # .clearing/gauntlet.yaml (read from the base commit)
 *   image: clearing/python:latest
 *   limits: {memory: 1g, cpus: 2}
 *   message: "Fix the mean of an empty list"
 *   commit_on_failure: true      # commit also when the gauntlet fails (default true)
 *   steps:
 *     - write: {path: src/x.py, content: "...", mode: "0644"}   # or content_base64
 *     - delete: {path: old.py}
 *     - run: {shell: "make gen", timeout: 60s, cwd: /workspace, env: {K: v},
 *             expect_exit: [0]}                                  # or argv: [...]
 * JSON is accepted as well (it is YAML). Unknown keys and wrong types are errors with lines. */
#ifndef CLEARING_PLAN_H
#define CLEARING_PLAN_H

#include <jansson.h>

#include "common.h"
#include "engine.h"
#include "gitws.h"
#include "limits.h"
#include "sandbox.h"

typedef struct clr_plan clr_plan;

#define CLR_PLAN_MAX_BYTES (16 * 1024 * 1024)
#define CLR_PLAN_MAX_STEPS 1000

CLR_PUBLIC int clr_plan_parse(clr_plan **out, const char *text, size_t len, const char *source,
                              clr_error *err);
CLR_PUBLIC void clr_plan_free(clr_plan *p);

/* The image the plan's sandbox is made from, given the profile that overrides the plan's (NULL:
 * the plan's): the plan's image, else the profile's, else NULL (CLR_DEFAULT_IMAGE). */
CLR_PUBLIC const char *clr_plan_image(const clr_plan *plan, const char *profile);
/* The limits of the plan's sandbox (what a daemon counts against a tenant's quota). */
CLR_PUBLIC const clr_limits *clr_plan_limits(const clr_plan *plan);

struct clr_audit;
struct clr_verdict_key;

/* How a daemon counts a plan against its limits and records its sandbox (lib/service.c). Any
 * member may be NULL (nothing to do); the command line's plans have none. */
typedef struct clr_plan_admission {
    /* Before anything is created. *execs: how many commands the plan would run at once (its
     * gauntlet's parallelism); lowered to how many it may, and the gauntlet then runs no more
     * at once. -1 (err) refuses the plan: nothing is created. */
    int (*admit)(void *ctx, unsigned *execs, clr_error *err);
    /* Its sandbox exists and nothing ran in it yet: -1 (err) destroys it and fails the plan. */
    int (*created)(void *ctx, const clr_sandbox_info *info, clr_error *err);
    /* Once for every admit that succeeded, when the plan is over and its sandbox destroyed:
     * id is that sandbox's (NULL: none was created). */
    void (*release)(void *ctx, const char *id);
    void *ctx;
} clr_plan_admission;

typedef struct clr_plan_run_options {
    const char *repo_path;        /* overrides the plan's repo */
    /* What clr_repo_admit() found at repo_path (the daemon); NULL: a local caller's own path. */
    const clr_git_repo_id *repo_id;
    const char *profile;          /* overrides the plan's profile */
    /* The image when neither the plan nor its profile names one (the daemon's configured image;
     * NULL: CLR_DEFAULT_IMAGE). */
    const char *default_image;
    /* The ref whose .clearing/gauntlet.yaml judges the plan (the operator's choice; NULL: HEAD,
     * the default branch as it is when the plan starts); the plan's branch may not be it. */
    const char *gauntlet_ref;
    /* Signs the verdict's commit (verdict.h); required: plans do not run unsigned. */
    const struct clr_verdict_key *verdict_key;
    const char *state_dir;
    const char *insecure_runtime;
    const clr_engine_options *engine;
    struct clr_audit *audit;      /* required: plans do not run unaudited */
    const char *actor;
    /* Progress events as JSON objects ({"event":"step","index":1,"status":"ok"}, ...). */
    void (*on_event)(void *ctx, json_t *event);
    void *ctx;
    const volatile int *cancel;   /* set: stop at the next step, still commit nothing, destroy */
    const char *owner;            /* the owner label of its sandbox (NULL: "cli") */
    const char *tenant;           /* the tenant of its sandbox (NULL: CLR_TENANT_DEFAULT) */
    const clr_plan_admission *admission; /* NULL: none */
} clr_plan_run_options;

/* Runs the plan: sandbox on a new branch, steps in order (stopping at the first failure),
 * gauntlet when every step succeeded, commit with the verdict in its trailers, and the sandbox
 * destroyed in every case. Returns 0 with *report set ({"verdict": "pass"|"fail"|"error",
 * "sandbox", "branch", "base", "commit", "diffstat", "steps": [...], "gauntlet": {...}}) even
 * when the verdict is fail; -1 when the plan could not be started at all, nothing created (a
 * malformed .clearing/gauntlet.yaml at the base is CLR_E_INVALID with its line). A run that
 * commits nothing removes the branch it made ("branch_removed": true). */
CLR_PUBLIC int clr_plan_run(json_t **report, const clr_plan *plan,
                            const clr_plan_run_options *opts, clr_error *err);

#endif
