/* clearing inspect: one sandbox of the daemon, as JSON. */
#include <stdio.h>
#include <string.h>

#include "client.h"

int cmd_inspect(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            printf("Usage: clearing inspect ID\n\nPrints the daemon's record of a sandbox.\n");
            return 0;
        }
        cli_usage_error("inspect", "usage: clearing inspect ID");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(argv[1])) {
        cli_usage_error("inspect", "'%s' is not a sandbox id", argv[1]);
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[1]);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    if (client_call("GET", path, NULL, &resp, &err) != 200) {
        cli_error(&err);
        json_decref(resp);
        return CLI_EXIT_FAILURE;
    }
    cli_print_json(resp);
    json_decref(resp);
    return 0;
}
