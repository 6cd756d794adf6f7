/* clearing gauntlet: run the validation gauntlet on a project in a fresh sandbox. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clearing/audit.h"
#include "clearing/gauntlet.h"

enum {
    OPT_PROFILE = CLI_OPT_FIRST_FREE,
    OPT_FILE,
    OPT_WORKSPACE,
    OPT_IMAGE,
    OPT_PARALLEL,
    OPT_JSON,
    OPT_JUNIT,
    OPT_REPORT,
    OPT_HELP,
};

static void on_progress(void *ctx, const char *check, const char *event)
{
    (void)ctx;
    if (strcmp(event, "start") == 0)
        fprintf(stderr, "clearing: check %s: running\n", check);
    else
        fprintf(stderr, "clearing: check %s: %s\n", check, event);
}

static int write_text(const char *path, const char *text, clr_error *err)
{
    FILE *f = fopen(path, "we");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        return clr_error_set(err, CLR_E_INVALID, errno, "cannot write %s: %s", path,
                             strerror(errno));
    return 0;
}

#define GAUNTLET_GO_ON (-1) /* a step's answer when the command should go on */

/* What the command line asked for. */
struct gauntlet_args {
    clr_sandbox_options so;
    const char *profile, *file, *junit, *report;
    unsigned parallel;
    bool json;
};

/* What the run holds: freed on every return. */
struct gauntlet_ctx {
    clr_gauntlet *g;
    clr_audit *audit;
    char actor[160];
    clr_engine_options eo;
    clr_engine *eng;
    clr_sandbox *sb;
};

static void gauntlet_ctx_clear(struct gauntlet_ctx *k)
{
    clr_sandbox_free(k->sb);
    clr_engine_free(k->eng);
    clr_audit_close(k->audit);
    clr_gauntlet_free(k->g);
}

static void gauntlet_help(void)
{
    printf("Usage: clearing gauntlet --repo DIR [--profile NAME | --file F] [OPTIONS]\n\n"
           "Copies DIR (a project directory, --workspace is the same) into a fresh\n"
           "sandbox and runs the validation gauntlet there, committing nothing: the\n"
           "project's .clearing/gauntlet.yaml, else --file, else --profile (python:\n"
           "each tool by the project's own configuration; python-strict: by the\n"
           "profile's; c). --profile also picks the image, whichever gauntlet runs.\n"
           "Exit status 0 only when the verdict is pass (1 when it is fail).\n\n"
           "  --image IMAGE     image (default: the profile's, else the default image)\n"
           "  --parallel N      checks at once (default: the gauntlet's)\n"
           "  --json            print the report as JSON\n"
           "  --junit FILE      also write JUnit XML\n"
           "  --report FILE     also write the JSON report\n%s",
           cli_limit_help);
}

/* One of gauntlet's own options into a: GAUNTLET_GO_ON, or the exit status. */
static int gauntlet_option(struct gauntlet_args *a, int c, const char *arg)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t v;
    switch (c) {
    case OPT_PROFILE: a->profile = arg; break;
    case OPT_FILE: a->file = arg; break;
    case OPT_WORKSPACE: a->so.workspace_from = arg; break;
    case OPT_IMAGE: a->so.image = arg; break;
    case OPT_JSON: a->json = true; break;
    case OPT_JUNIT: a->junit = arg; break;
    case OPT_REPORT: a->report = arg; break;
    case OPT_PARALLEL:
        if (clr_parse_uint(&v, arg, &err) < 0 || v < 1 || v > 16) {
            cli_usage_error("gauntlet", "--parallel wants 1..16");
            return CLI_EXIT_USAGE;
        }
        a->parallel = (unsigned)v;
        break;
    case OPT_HELP: gauntlet_help(); return 0;
    default: cli_usage_error("gauntlet", "unknown option"); return CLI_EXIT_USAGE;
    }
    return GAUNTLET_GO_ON;
}

/* Parses argv into a: GAUNTLET_GO_ON, or the exit status. */
static int gauntlet_parse(struct gauntlet_args *a, int argc, char **argv)
{
    static const struct option own[] = {
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"file", required_argument, NULL, OPT_FILE},
        {"workspace", required_argument, NULL, OPT_WORKSPACE},
        {"repo", required_argument, NULL, OPT_WORKSPACE},
        {"image", required_argument, NULL, OPT_IMAGE},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"json", no_argument, NULL, OPT_JSON},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"report", required_argument, NULL, OPT_REPORT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    _cleanup_free_ struct option *opts = cli_options_with_limits(own);
    if (!opts)
        return CLI_EXIT_CLEARING;
    clr_error err = CLR_ERROR_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        int rc = cli_parse_limit_option(&a->so.limits, c, optarg, &err);
        if (rc < 0) {
            cli_usage_error("gauntlet", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0)
            continue;
        rc = gauntlet_option(a, c, optarg);
        if (rc != GAUNTLET_GO_ON)
            return rc;
    }
    if (!a->so.workspace_from) {
        cli_usage_error("gauntlet", "--repo DIR (or --workspace DIR) is required");
        return CLI_EXIT_USAGE;
    }
    return GAUNTLET_GO_ON;
}

/* The gauntlet into *g: the project's own file first, then --file, then a profile.
 * GAUNTLET_GO_ON, or the exit status. */
static int gauntlet_load(struct gauntlet_args *a, clr_gauntlet **g)
{
    clr_error err = CLR_ERROR_INIT;
    char path[4200];
    snprintf(path, sizeof(path), "%s/.clearing/gauntlet.yaml", a->so.workspace_from);
    const char *src = access(path, F_OK) == 0 ? path : a->file;
    if (src) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        if (cli_read_small_file(src, CLR_GAUNTLET_MAX_BYTES, &text, &len, &err) < 0 ||
            clr_gauntlet_parse(g, text, len, src, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
    } else {
        if (!a->profile) {
            cli_usage_error("gauntlet", "no %s in the project: give --profile or --file", path);
            return CLI_EXIT_USAGE;
        }
        if (clr_gauntlet_profile(g, a->profile, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
    }
    /* The profile names the image (its tools) even when the project's own checks are run, as
     * for plans. */
    if (!a->so.image && a->profile)
        a->so.image = clr_gauntlet_profile_image(a->profile);
    if (a->parallel)
        clr_gauntlet_set_parallel(*g, a->parallel);
    return GAUNTLET_GO_ON;
}

/* The report: audited (figures and statuses, not the tools' output), printed, written where
 * asked. Returns the exit status: 0 pass, 1 fail, CLI_EXIT_CLEARING when it was not audited. */
static int gauntlet_report(struct gauntlet_ctx *k, const struct gauntlet_args *a,
                           clr_gauntlet_report *rep)
{
    clr_error err = CLR_ERROR_INIT;
    bool passed = clr_gauntlet_report_passed(rep);
    json_auto_t *j = clr_gauntlet_report_json(rep);
    _cleanup_free_ char *summary = clr_gauntlet_report_summary(rep);
    json_auto_t *adc = json_pack("{s:s, s:o}", "verdict", passed ? "pass" : "fail", "checks",
                                 json_deep_copy(json_object_get(j, "checks")));
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(adc, "checks"), i, ch) {
        json_object_del(ch, "stdout");
        json_object_del(ch, "stderr");
    }
    int arc = clr_audit_append(k->audit, k->actor, clr_sandbox_get_info(k->sb)->id, "gauntlet",
                               passed ? "pass" : "fail", adc, &err);
    if (a->json)
        cli_print_json(j);
    else
        fputs(summary, stdout);
    _cleanup_free_ char *xml = a->junit ? clr_gauntlet_report_junit(rep) : NULL;
    _cleanup_free_ char *js = a->report ? json_dumps(j, JSON_INDENT(2)) : NULL;
    /* A report asked for and not written is a failure to do the job, whatever the verdict:
     * CI reading the file must not take its absence for success. */
    bool written = !(xml && write_text(a->junit, xml, &err) < 0) &&
                   !(js && write_text(a->report, js, &err) < 0);
    if (!written)
        cli_error(&err);
    if (arc < 0)
        cli_error(&err);
    return arc < 0 || !written ? CLI_EXIT_CLEARING : passed ? 0 : 1;
}

/* Audits the sandbox, runs the gauntlet in it and reports: the exit status. */
static int gauntlet_run(struct gauntlet_ctx *k, const struct gauntlet_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *d = clr_audit_sandbox_details(clr_sandbox_get_info(k->sb));
    int arc = clr_audit_append(k->audit, k->actor, clr_sandbox_get_info(k->sb)->id,
                               "sandbox.create", "ok", d, &err);
    json_decref(d);
    clr_gauntlet_report *rep = NULL;
    if (arc < 0 || clr_gauntlet_run(&rep, k->g, &k->eo, k->sb, on_progress, NULL, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    int status = gauntlet_report(k, a, rep);
    clr_gauntlet_report_free(rep);
    return status;
}

int cmd_gauntlet(int argc, char **argv)
{
    struct gauntlet_args a = {.so = CLR_SANDBOX_OPTIONS_INIT};
    a.so.state_dir = cli_global.state_dir;
    int rc = gauntlet_parse(&a, argc, argv);
    if (rc != GAUNTLET_GO_ON)
        return rc;
    struct gauntlet_ctx k __attribute__((cleanup(gauntlet_ctx_clear))) = {
        .eo = CLR_ENGINE_OPTIONS_INIT};
    rc = gauntlet_load(&a, &k.g);
    if (rc != GAUNTLET_GO_ON)
        return rc;
    clr_error err = CLR_ERROR_INIT;
    if (cli_audit_open(&k.audit, k.actor, sizeof(k.actor), &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    k.eo.host = cli_global.docker_host;
    if (clr_engine_open(&k.eng, &k.eo, &err) < 0 ||
        clr_sandbox_create(&k.sb, k.eng, &a.so, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    int status = gauntlet_run(&k, &a);
    clr_error derr = CLR_ERROR_INIT;
    const char *sid = clr_sandbox_get_info(k.sb)->id;
    if (clr_sandbox_destroy(k.eng, sid, "gauntlet-finished", a.so.state_dir, &derr) < 0)
        cli_error(&derr);
    json_auto_t *d = json_pack("{s:s}", "reason", "gauntlet-finished");
    clr_audit_append(k.audit, k.actor, sid, "sandbox.destroy", "ok", d, NULL);
    return status;
}
