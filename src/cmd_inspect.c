/* clearing inspect: one sandbox of the daemon, or one of its exec records, as JSON. */
#include <stdio.h>
#include <string.h>

#include "client.h"

/* "ex-" and 16 lower-case hex digits, as the daemon makes them. */
static bool exec_id_valid(const char *s)
{
    return strlen(s) == 19 && strncmp(s, "ex-", 3) == 0 &&
           strspn(s + 3, "0123456789abcdef") == 16;
}

int cmd_inspect(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || argv[1][0] == '-' || (argc == 3 && argv[2][0] == '-')) {
        if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            printf("Usage: clearing inspect ID [EXEC_ID]\n\nPrints the daemon's record of a "
                   "sandbox, or with EXEC_ID of one of its commands\n(its request, state and "
                   "result; 'clearing exec' names it when its stream was cut).\n");
            return 0;
        }
        cli_usage_error("inspect", "usage: clearing inspect ID [EXEC_ID]");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(argv[1])) {
        cli_usage_error("inspect", "'%s' is not a sandbox id", argv[1]);
        return CLI_EXIT_USAGE;
    }
    const char *exec_id = argc == 3 ? argv[2] : NULL;
    if (exec_id && !exec_id_valid(exec_id)) {
        cli_usage_error("inspect", "'%s' is not an exec id (expected ex- and 16 hex digits)",
                        exec_id);
        return CLI_EXIT_USAGE;
    }
    char path[256];
    if (exec_id)
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/execs/%s", argv[1], exec_id);
    else
        snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[1]);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    if (client_call("GET", path, NULL, &resp, &err) != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    cli_print_json(resp);
    json_decref(resp);
    return 0;
}
