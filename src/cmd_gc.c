/* clearing gc: remove expired sandboxes, broken containers of ours and orphaned workspaces. */
#include <stdio.h>

#include "cli.h"

int cmd_gc(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'j') {
            json = true;
            continue;
        }
        if (c == 'h') {
            printf("Usage: clearing gc [--json]\n\nRemoves sandboxes past their lifetime, "
                   "containers labelled as clearing's that are\nnot running (failed starts, "
                   "dead sandboxes) and workspaces without a sandbox.\n");
            return 0;
        }
        cli_usage_error("gc", "unknown option");
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    if (cli_open_engine(&eng, &err) < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    clr_gc_report r;
    int rc = clr_sandbox_gc(&r, eng, cli_global.state_dir, 0, &err);
    clr_engine_free(eng);
    if (rc < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    if (json) {
        json_t *o = json_pack("{s:i, s:i, s:i, s:i}", "expired", r.expired, "broken", r.broken,
                              "workspaces", r.workspaces, "failed", r.failed);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("removed %u expired, %u broken, %u orphaned workspaces; %u failed\n", r.expired,
               r.broken, r.workspaces, r.failed);
    }
    return r.failed ? CLI_EXIT_FAILURE : 0;
}
