/* clearing extend: more lifetime for a daemon's sandbox, up to its max_expires_at. */
#include <stdio.h>
#include <string.h>

#include "client.h"

int cmd_extend(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[2], "--by") != 0) {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: clearing extend ID --by DURATION\n");
            return 0;
        }
        cli_usage_error("extend", "usage: clearing extend ID --by DURATION");
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    uint64_t ms;
    if (!clr_sandbox_id_valid(argv[1])) {
        cli_usage_error("extend", "'%s' is not a sandbox id", argv[1]);
        return CLI_EXIT_USAGE;
    }
    if (clr_parse_duration_ms(&ms, argv[3], &err) < 0) {
        cli_usage_error("extend", "--by: %s", err.message);
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/extend", argv[1]);
    json_t *req = json_pack("{s:s}", "by", argv[3]), *resp = NULL;
    int st = client_call("POST", path, req, &resp, &err);
    json_decref(req);
    if (st != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    printf("%s expires at %lld\n", argv[1],
           (long long)json_integer_value(json_object_get(resp, "expires_at")));
    json_decref(resp);
    return 0;
}
