/* clearing snapshot ID / clearing fork SNAPSHOT / clearing restore ID SNAPSHOT (issue #22): a
 * daemon's sandbox snapshotted while it runs, a new sandbox started from a snapshot, and a
 * sandbox taken back to one of its snapshots in place. Each prints the id it made or kept. */
#include <stdio.h>
#include <string.h>

#include "clearing/snapshot.h"
#include "client.h"

/* POST path with req; prints the answer's "id" (and what it names) or the error. */
static int post_and_print(const char *path, json_t *req, const char *what)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    int st = client_call("POST", path, req, &resp, &err);
    json_decref(req);
    if (st != (strcmp(what, "restore") == 0 ? 200 : 201)) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    const char *id = json_string_value(json_object_get(resp, "id"));
    if (strcmp(what, "snapshot") == 0)
        fprintf(stderr, "snapshot of %s: %lld bytes, sha256 %s, expires at %lld\n",
                json_string_value(json_object_get(resp, "sandbox")),
                (long long)json_integer_value(json_object_get(resp, "size")),
                json_string_value(json_object_get(resp, "sha256")),
                (long long)json_integer_value(json_object_get(resp, "expires_at")));
    else if (strcmp(what, "restore") == 0)
        fprintf(stderr, "restored to snapshot %s (commands that were running ended)\n",
                json_string_value(json_object_get(resp, "snapshot")));
    printf("%s\n", id ? id : "");
    json_decref(resp);
    return 0;
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: clearing snapshot ID [--keep]\n"
               "Snapshots a running sandbox of the daemon (processes, memory, /tmp, /workspace);\n"
               "prints the snapshot's id. --keep: it outlives the sandbox (until its ttl).\n");
        return 0;
    }
    bool keep = argc == 3 && strcmp(argv[2], "--keep") == 0;
    if ((argc != 2 && !keep) || !clr_sandbox_id_valid(argv[1])) {
        cli_usage_error("snapshot", "usage: clearing snapshot ID [--keep] (ID: sb- and 16 hex "
                                    "digits)");
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/snapshots", argv[1]);
    return post_and_print(path, json_pack("{s:b}", "keep", keep), "snapshot");
}

int cmd_fork(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: clearing fork SNAPSHOT\n"
               "Starts a new sandbox in the daemon from a snapshot; prints its id.\n");
        return 0;
    }
    if (argc != 2 || !clr_snapshot_id_valid(argv[1])) {
        cli_usage_error("fork", "usage: clearing fork SNAPSHOT (snap- and 16 hex digits)");
        return CLI_EXIT_USAGE;
    }
    return post_and_print("/v1/sandboxes", json_pack("{s:s}", "snapshot", argv[1]), "fork");
}

int cmd_restore(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: clearing restore ID SNAPSHOT\n"
               "Takes a running sandbox of the daemon back to one of its own snapshots, in place\n"
               "(same id): processes, memory, /tmp and /workspace as they were; its limits,\n"
               "egress policy and remaining lifetime stay. Commands running now end.\n");
        return 0;
    }
    if (argc != 3 || !clr_sandbox_id_valid(argv[1]) || !clr_snapshot_id_valid(argv[2])) {
        cli_usage_error("restore", "usage: clearing restore ID SNAPSHOT (ID: sb- and 16 hex "
                                   "digits, SNAPSHOT: snap- and 16 hex digits)");
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/restore", argv[1]);
    return post_and_print(path, json_pack("{s:s}", "snapshot", argv[2]), "restore");
}
