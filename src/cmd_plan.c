/* clearing plan run: execute an agent's plan in a fresh sandbox on its own branch, put the
 * result through the gauntlet, and commit it with the verdict. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clearing/audit.h"
#include "clearing/verdict.h"
#include "clearing/plan.h"

static volatile int interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void on_event(void *ctx, json_t *ev)
{
    (void)ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    if (!e)
        return;
    if (!strcmp(e, "sandbox"))
        fprintf(stderr, "clearing: sandbox %s on branch %s\n",
                json_string_value(json_object_get(ev, "id")),
                json_string_value(json_object_get(ev, "branch")));
    else if (!strcmp(e, "step"))
        fprintf(stderr, "clearing: step %lld %s%s%s: %s%s%s\n",
                (long long)json_integer_value(json_object_get(ev, "index")),
                json_string_value(json_object_get(ev, "type")),
                json_object_get(ev, "path") ? " " : "",
                json_object_get(ev, "path") ? json_string_value(json_object_get(ev, "path")) : "",
                json_string_value(json_object_get(ev, "status")),
                json_object_get(ev, "error") ? ": " : "",
                json_object_get(ev, "error") ? json_string_value(json_object_get(ev, "error"))
                                             : "");
    else if (!strcmp(e, "check"))
        fprintf(stderr, "clearing: check %s: %s\n", json_string_value(json_object_get(ev, "check")),
                json_string_value(json_object_get(ev, "status")));
    else if (!strcmp(e, "commit"))
        fprintf(stderr, "clearing: committed %s on %s\n",
                json_string_value(json_object_get(ev, "commit")),
                json_string_value(json_object_get(ev, "branch")));
}

#define PLAN_GO_ON (-1) /* a step's answer when the command should go on */

/* What the command line asked for, and what the run holds: freed on every return. */
struct plan_args {
    clr_plan_run_options ro;
    clr_engine_options eo;
    const char *report_path;
    bool json;
    clr_plan *plan;
    clr_audit *audit;
    char actor[160];
    clr_verdict_key *vkey;
};

static void plan_args_clear(struct plan_args *a)
{
    clr_audit_close(a->audit);
    clr_verdict_key_free(a->vkey);
    clr_plan_free(a->plan);
}

static int plan_help(void)
{
    printf("Usage: clearing plan run PLAN [--repo DIR] [--profile NAME] [--json] [--report F]\n\n"
           "Runs a plan (YAML or JSON; format in include/clearing/plan.h) in a fresh gVisor\n"
           "sandbox on a new branch of DIR, runs the gauntlet (the repository's\n"
           ".clearing/gauntlet.yaml, else the profile), commits the result with the verdict\n"
           "in its trailers and destroys the sandbox. Exit 0 only when the verdict is pass,\n"
           "1 when it is fail, 125 on an error or an interrupt (nothing is committed then,\n"
           "and the new branch is removed), 2 for a malformed plan or gauntlet (nothing is\n"
           "created).\n");
    return 0;
}

/* Parses "run PLAN [OPTIONS]" into a, the plan file read and parsed: PLAN_GO_ON, or the exit
 * status. */
static int plan_parse(struct plan_args *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"repo", required_argument, NULL, 'r'},   {"profile", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},         {"report", required_argument, NULL, 'o'},
        {"insecure-runtime", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        if (argc >= 2 && !strcmp(argv[1], "--help"))
            return plan_help();
        cli_usage_error("plan", "usage: clearing plan run PLAN [--repo DIR] [--profile NAME]");
        return CLI_EXIT_USAGE;
    }
    argc--;
    argv++;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': a->ro.repo_path = optarg; break;
        case 'p': a->ro.profile = optarg; break;
        case 'j': a->json = true; break;
        case 'o': a->report_path = optarg; break;
        case 'i': a->ro.insecure_runtime = optarg; break;
        case 'h': return plan_help();
        default: cli_usage_error("plan", "unknown option"); return CLI_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        cli_usage_error("plan", "give exactly one plan file");
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (cli_read_small_file(argv[optind], CLR_PLAN_MAX_BYTES, &text, &len, &err) < 0 ||
        clr_plan_parse(&a->plan, text, len, argv[optind], &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_USAGE;
    }
    return PLAN_GO_ON;
}

/* The audit log, the verdict key and the run's options: PLAN_GO_ON, or the exit status. */
static int plan_prepare(struct plan_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    if (cli_audit_open(&a->audit, a->actor, sizeof(a->actor), &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    a->eo.host = cli_global.docker_host;
    a->ro.engine = &a->eo;
    a->ro.audit = a->audit;
    a->ro.actor = a->actor;
    char keypath[PATH_MAX];
    clr_verdict_key_default_path(keypath, sizeof(keypath), cli_global.state_dir);
    if (clr_verdict_key_load(&a->vkey, keypath, true, NULL, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    a->ro.verdict_key = a->vkey;
    a->ro.state_dir = cli_global.state_dir;
    a->ro.on_event = a->json ? NULL : on_event;
    a->ro.cancel = &interrupted;
    return PLAN_GO_ON;
}

/* Prints the report (whole with --json), writes it where asked; returns the verdict's exit
 * status. */
static int plan_print(const struct plan_args *a, json_t *report)
{
    const char *verdict = json_string_value(json_object_get(report, "verdict"));
    if (a->json) {
        cli_print_json(report);
    } else {
        const char *summary = json_string_value(json_object_get(report, "summary"));
        const char *stat = json_string_value(json_object_get(report, "diffstat"));
        const char *commit = json_string_value(json_object_get(report, "commit"));
        if (summary)
            fputs(summary, stdout);
        if (stat && *stat)
            fputs(stat, stdout);
        if (json_object_get(report, "error"))
            printf("error: %s\n", json_string_value(json_object_get(report, "error")));
        if (json_is_true(json_object_get(report, "branch_removed")))
            printf("plan %s: nothing committed, branch %s removed\n", verdict,
                   json_string_value(json_object_get(report, "branch")));
        else
            printf("plan %s: branch %s%s%s\n", verdict,
                   json_string_value(json_object_get(report, "branch")),
                   json_object_get(report, "commit") ? " commit " : " (nothing committed)",
                   json_object_get(report, "commit") ? commit : "");
    }
    if (a->report_path && json_dump_file(report, a->report_path, JSON_INDENT(2)) < 0)
        fprintf(stderr, "clearing: cannot write %s\n", a->report_path);
    return !strcmp(verdict, "pass") ? 0 : !strcmp(verdict, "fail") ? 1 : CLI_EXIT_CLEARING;
}

int cmd_plan(int argc, char **argv)
{
    struct plan_args a __attribute__((cleanup(plan_args_clear))) = {
        .eo = CLR_ENGINE_OPTIONS_INIT};
    int rc = plan_parse(&a, argc, argv);
    if (rc == PLAN_GO_ON)
        rc = plan_prepare(&a);
    if (rc != PLAN_GO_ON)
        return rc;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    clr_error err = CLR_ERROR_INIT;
    json_auto_t *report = NULL;
    if (clr_plan_run(&report, a.plan, &a.ro, &err) < 0) {
        cli_error(&err);
        /* Invalid input (a malformed .clearing/gauntlet.yaml, a bad branch name): nothing was
         * created, like a malformed plan. */
        return err.code == CLR_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_CLEARING;
    }
    return plan_print(&a, report);
}
