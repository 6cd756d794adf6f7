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

int cmd_gauntlet(int argc, char **argv)
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
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    so.state_dir = cli_global.state_dir;
    const char *profile = NULL, *file = NULL, *junit = NULL, *report = NULL;
    unsigned parallel = 0;
    bool json = false;
    clr_error err = CLR_ERROR_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        uint64_t v;
        int rc = cli_parse_limit_option(&so.limits, c, optarg, &err);
        if (rc < 0) {
            cli_usage_error("gauntlet", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0)
            continue;
        switch (c) {
        case OPT_PROFILE: profile = optarg; break;
        case OPT_FILE: file = optarg; break;
        case OPT_WORKSPACE: so.workspace_from = optarg; break;
        case OPT_IMAGE: so.image = optarg; break;
        case OPT_JSON: json = true; break;
        case OPT_JUNIT: junit = optarg; break;
        case OPT_REPORT: report = optarg; break;
        case OPT_PARALLEL:
            if (clr_parse_uint(&v, optarg, &err) < 0 || v < 1 || v > 16) {
                cli_usage_error("gauntlet", "--parallel wants 1..16");
                return CLI_EXIT_USAGE;
            }
            parallel = (unsigned)v;
            break;
        case OPT_HELP:
            printf("Usage: clearing gauntlet --repo DIR [--profile NAME | --file F] [OPTIONS]\n\n"
                   "Copies DIR (a project directory, --workspace is the same) into a fresh\n"
                   "sandbox and runs the validation gauntlet there, committing nothing: the\n"
                   "project's .clearing/gauntlet.yaml, else --file, else --profile (python, c).\n"
                   "--profile also picks the image, whichever gauntlet runs.\n"
                   "Exit status 0 only when the verdict is pass (1 when it is fail).\n\n"
                   "  --image IMAGE     image (default: the profile's, else the default image)\n"
                   "  --parallel N      checks at once (default: the gauntlet's)\n"
                   "  --json            print the report as JSON\n"
                   "  --junit FILE      also write JUnit XML\n"
                   "  --report FILE     also write the JSON report\n%s",
                   cli_limit_help);
            return 0;
        default: cli_usage_error("gauntlet", "unknown option"); return CLI_EXIT_USAGE;
        }
    }
    if (!so.workspace_from) {
        cli_usage_error("gauntlet", "--repo DIR (or --workspace DIR) is required");
        return CLI_EXIT_USAGE;
    }
    /* The gauntlet: the project's own file first, then --file, then a profile. */
    clr_gauntlet *g = NULL;
    char path[4200];
    snprintf(path, sizeof(path), "%s/.clearing/gauntlet.yaml", so.workspace_from);
    char *text = NULL;
    size_t len = 0;
    const char *src = access(path, F_OK) == 0 ? path : file;
    if (src) {
        if (cli_read_small_file(src, CLR_GAUNTLET_MAX_BYTES, &text, &len, &err) < 0 ||
            clr_gauntlet_parse(&g, text, len, src, &err) < 0) {
            free(text);
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
        free(text);
    } else {
        if (!profile) {
            cli_usage_error("gauntlet", "no %s in the project: give --profile or --file", path);
            return CLI_EXIT_USAGE;
        }
        if (clr_gauntlet_profile(&g, profile, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
    }
    /* The profile names the image (its tools) even when the project's own checks are run, as
     * for plans. */
    if (!so.image && profile)
        so.image = clr_gauntlet_profile_image(profile);
    if (parallel)
        clr_gauntlet_set_parallel(g, parallel);

    clr_audit *audit = NULL;
    char actor[160];
    if (cli_audit_open(&audit, actor, sizeof(actor), &err) < 0) {
        cli_error(&err);
        clr_gauntlet_free(g);
        return CLI_EXIT_CLEARING;
    }
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    eo.host = cli_global.docker_host;
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    int status = CLI_EXIT_CLEARING;
    if (clr_engine_open(&eng, &eo, &err) < 0 || clr_sandbox_create(&sb, eng, &so, &err) < 0) {
        cli_error(&err);
        goto out;
    }
    json_t *d = clr_audit_sandbox_details(clr_sandbox_get_info(sb));
    int arc = clr_audit_append(audit, actor, clr_sandbox_get_info(sb)->id, "sandbox.create", "ok",
                               d, &err);
    json_decref(d);
    clr_gauntlet_report *rep = NULL;
    if (arc < 0 || clr_gauntlet_run(&rep, g, &eo, sb, on_progress, NULL, &err) < 0) {
        cli_error(&err);
    } else {
        json_t *j = clr_gauntlet_report_json(rep);
        char *summary = clr_gauntlet_report_summary(rep);
        json_t *adc = json_pack("{s:s, s:o}", "verdict",
                                clr_gauntlet_report_passed(rep) ? "pass" : "fail", "checks",
                                json_deep_copy(json_object_get(j, "checks")));
        /* The audit record keeps figures and statuses, not the tools' output. */
        size_t i;
        json_t *ch;
        json_array_foreach(json_object_get(adc, "checks"), i, ch) {
            json_object_del(ch, "stdout");
            json_object_del(ch, "stderr");
        }
        arc = clr_audit_append(audit, actor, clr_sandbox_get_info(sb)->id, "gauntlet",
                               clr_gauntlet_report_passed(rep) ? "pass" : "fail", adc, &err);
        json_decref(adc);
        if (json)
            cli_print_json(j);
        else
            fputs(summary, stdout);
        char *xml = junit ? clr_gauntlet_report_junit(rep) : NULL;
        char *js = report ? json_dumps(j, JSON_INDENT(2)) : NULL;
        if ((xml && write_text(junit, xml, &err) < 0) || (js && write_text(report, js, &err) < 0))
            cli_error(&err);
        status = arc < 0 ? CLI_EXIT_CLEARING : clr_gauntlet_report_passed(rep) ? 0 : 1;
        if (arc < 0)
            cli_error(&err);
        free(xml);
        free(js);
        free(summary);
        json_decref(j);
        clr_gauntlet_report_free(rep);
    }
    clr_error derr = CLR_ERROR_INIT;
    const char *sid = clr_sandbox_get_info(sb)->id;
    if (clr_sandbox_destroy(eng, sid, "gauntlet-finished", so.state_dir, &derr) < 0)
        cli_error(&derr);
    d = json_pack("{s:s}", "reason", "gauntlet-finished");
    clr_audit_append(audit, actor, sid, "sandbox.destroy", "ok", d, NULL);
    json_decref(d);
out:
    clr_sandbox_free(sb);
    clr_engine_free(eng);
    clr_audit_close(audit);
    clr_gauntlet_free(g);
    return status;
}
