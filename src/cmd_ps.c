/* clearing ps: the background processes of a daemon's sandbox. */
#include <stdio.h>
#include <string.h>

#include "client.h"

int cmd_ps(int argc, char **argv)
{
    bool json = argc == 3 && strcmp(argv[1], "--json") == 0;
    const char *id = json ? argv[2] : argv[1];
    if ((argc != 2 && !json) || !id || id[0] == '-') {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: clearing ps [--json] ID\n\nLists the sandbox's background processes "
                   "(start one with 'clearing exec --detach').\n");
            return 0;
        }
        cli_usage_error("ps", "usage: clearing ps [--json] ID");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(id)) {
        cli_usage_error("ps", "'%s' is not a sandbox id", id);
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", id);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    if (client_call("GET", path, NULL, &resp, &err) != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    json_t *list = json_object_get(resp, "processes");
    if (json) {
        cli_print_json(list);
    } else {
        printf("%-20s %-8s %-10s %s\n", "PROCESS", "STATE", "STATUS", "COMMAND");
        size_t i;
        json_t *p;
        json_array_foreach(list, i, p) {
            json_t *req = json_object_get(p, "request");
            json_t *res = json_object_get(p, "result");
            char cmd[256] = "";
            if (json_object_get(req, "shell")) {
                const char *sh = json_string_value(json_object_get(req, "shell"));
                snprintf(cmd, sizeof(cmd), "%s", sh ? sh : "?");
            } else {
                size_t k;
                json_t *a;
                json_array_foreach(json_object_get(req, "argv"), k, a) {
                    size_t l = strlen(cmd);
                    const char *w = json_string_value(a);
                    snprintf(cmd + l, sizeof(cmd) - l, "%s%s", k ? " " : "", w ? w : "?");
                }
            }
            /* A running process has no result yet (null): its status is "-", never a NULL
             * handed to printf. */
            const char *status = json_string_value(json_object_get(res, "status"));
            const char *state = json_string_value(json_object_get(p, "state"));
            const char *pid = json_string_value(json_object_get(p, "id"));
            printf("%-20s %-8s %-10s %s\n", pid ? pid : "?", state ? state : "?",
                   status ? status : "-", cmd);
        }
    }
    json_decref(resp);
    return 0;
}
