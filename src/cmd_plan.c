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

int cmd_plan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"repo", required_argument, NULL, 'r'},   {"profile", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},         {"report", required_argument, NULL, 'o'},
        {"insecure-runtime", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        if (argc >= 2 && !strcmp(argv[1], "--help"))
            goto help;
        cli_usage_error("plan", "usage: clearing plan run PLAN [--repo DIR] [--profile NAME]");
        return CLI_EXIT_USAGE;
    }
    argc--;
    argv++;
    clr_plan_run_options ro = {0};
    const char *report_path = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': ro.repo_path = optarg; break;
        case 'p': ro.profile = optarg; break;
        case 'j': json = true; break;
        case 'o': report_path = optarg; break;
        case 'i': ro.insecure_runtime = optarg; break;
        case 'h': goto help;
        default: cli_usage_error("plan", "unknown option"); return CLI_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        cli_usage_error("plan", "give exactly one plan file");
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    char *text = NULL;
    size_t len = 0;
    clr_plan *plan = NULL;
    if (cli_read_small_file(argv[optind], CLR_PLAN_MAX_BYTES, &text, &len, &err) < 0 ||
        clr_plan_parse(&plan, text, len, argv[optind], &err) < 0) {
        free(text);
        cli_error(&err);
        return CLI_EXIT_USAGE;
    }
    free(text);
    clr_audit *audit = NULL;
    char actor[160];
    if (cli_audit_open(&audit, actor, sizeof(actor), &err) < 0) {
        cli_error(&err);
        clr_plan_free(plan);
        return CLI_EXIT_CLEARING;
    }
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    eo.host = cli_global.docker_host;
    ro.engine = &eo;
    ro.audit = audit;
    ro.actor = actor;
    char keypath[PATH_MAX];
    clr_verdict_key_default_path(keypath, sizeof(keypath), cli_global.state_dir);
    clr_verdict_key *vkey = NULL;
    if (clr_verdict_key_load(&vkey, keypath, true, NULL, &err) < 0) {
        cli_error(&err);
        clr_audit_close(audit);
        clr_plan_free(plan);
        return CLI_EXIT_CLEARING;
    }
    ro.verdict_key = vkey;
    ro.state_dir = cli_global.state_dir;
    ro.on_event = json ? NULL : on_event;
    ro.cancel = &interrupted;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    json_t *report = NULL;
    int status;
    if (clr_plan_run(&report, plan, &ro, &err) < 0) {
        cli_error(&err);
        /* Invalid input (a malformed .clearing/gauntlet.yaml, a bad branch name): nothing was
         * created, like a malformed plan. */
        status = err.code == CLR_E_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_CLEARING;
    } else {
        const char *verdict = json_string_value(json_object_get(report, "verdict"));
        if (json) {
            cli_print_json(report);
        } else {
            const char *summary = json_string_value(json_object_get(report, "summary"));
            const char *stat = json_string_value(json_object_get(report, "diffstat"));
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
                       json_object_get(report, "commit")
                           ? json_string_value(json_object_get(report, "commit"))
                           : "");
        }
        if (report_path) {
            if (json_dump_file(report, report_path, JSON_INDENT(2)) < 0)
                fprintf(stderr, "clearing: cannot write %s\n", report_path);
        }
        status = !strcmp(verdict, "pass") ? 0 : !strcmp(verdict, "fail") ? 1 : CLI_EXIT_CLEARING;
    }
    json_decref(report);
    clr_audit_close(audit);
    clr_verdict_key_free(vkey);
    clr_plan_free(plan);
    return status;
help:
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
