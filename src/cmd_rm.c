/* clearing rm: destroy sandboxes. Idempotent: a sandbox that is already gone is not an error. */
#include <stdio.h>

#include "clearing/audit.h"
#include "client.h"
#include <string.h>

int cmd_rm(int argc, char **argv)
{
    static const struct option options[] = {
        {"engine", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    bool engine = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'e') {
            engine = true;
            continue;
        }
        if (c == 'h') {
            printf("Usage: clearing rm [--engine] ID...\n\nDestroys sandboxes through the "
                   "daemon; with --engine, kills and removes them\nand their workspaces "
                   "directly (for sandboxes of 'clearing run'), each recorded in the\naudit "
                   "log first. Idempotent.\n");
            return 0;
        }
        cli_usage_error("rm", "unknown option");
        return CLI_EXIT_USAGE;
    }
    if (optind >= argc) {
        cli_usage_error("rm", "no sandbox id given");
        return CLI_EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++) {
        if (!clr_sandbox_id_valid(argv[i])) {
            cli_usage_error("rm", "'%s' is not a sandbox id (expected sb- and 16 hex digits)",
                            argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    clr_error err = CLR_ERROR_INIT;
    if (!engine) {
        int status = 0;
        for (int i = optind; i < argc; i++) {
            char path[128];
            snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[i]);
            if (client_call("DELETE", path, NULL, NULL, &err) != 204) {
                cli_error(&err);
                /* Several ids: the worst class of failure is the status. */
                if (cli_failure_status(&err) > status)
                    status = cli_failure_status(&err);
            } else {
                printf("%s\n", argv[i]);
            }
        }
        return status;
    }
    /* Directly, as `clearing run` does: each destroy is recorded in the CLI's audit log before
     * it is made, and without the log nothing is destroyed. */
    char actor[160];
    clr_audit *audit = NULL;
    if (cli_audit_open(&audit, actor, sizeof(actor), &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    clr_engine *eng = NULL;
    if (cli_open_engine(&eng, &err) < 0) {
        cli_error(&err);
        clr_audit_close(audit);
        return cli_failure_status(&err);
    }
    int status = 0;
    for (int i = optind; i < argc; i++) {
        json_t *d = json_pack("{s:s}", "reason", "client-engine");
        int arc = clr_audit_append(audit, actor, argv[i], "sandbox.destroy", "ok", d, &err);
        json_decref(d);
        if (arc < 0) {
            cli_error(&err);
            status = CLI_EXIT_CLEARING;
            break; /* the log takes no more records: the rest are kept too */
        }
        if (clr_sandbox_destroy(eng, argv[i], "client", cli_global.state_dir, &err) < 0) {
            cli_error(&err);
            if (cli_failure_status(&err) > status)
                status = cli_failure_status(&err);
        } else {
            printf("%s\n", argv[i]);
        }
    }
    clr_engine_free(eng);
    clr_audit_close(audit);
    return status;
}
