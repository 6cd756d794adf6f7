/* clearing commit / clearing diff: a daemon's sandbox's workspace as a commit on its branch, or
 * as a diff against its base. */
#include <stdio.h>
#include <string.h>

#include "client.h"

int cmd_commit(int argc, char **argv)
{
    static const struct option opts[] = {
        {"message", required_argument, NULL, 'm'},
        {"author", required_argument, NULL, 'a'},
        {"email", required_argument, NULL, 'e'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    json_t *req = json_object();
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': json_object_set_new(req, "message", json_string(optarg)); break;
        case 'a': json_object_set_new(req, "author_name", json_string(optarg)); break;
        case 'e': json_object_set_new(req, "author_email", json_string(optarg)); break;
        case 'j': json = true; break;
        case 'h':
            printf("Usage: clearing commit ID [-m MESSAGE] [--author NAME] [--email ADDR] "
                   "[--json]\n\nCommits the sandbox's workspace to its branch (added, modified, "
                   "deleted,\nrenamed files and modes; symlinks as symlinks; .git and special "
                   "files skipped).\n");
            json_decref(req);
            return 0;
        default:
            json_decref(req);
            cli_usage_error("commit", "unknown option");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        json_decref(req);
        cli_usage_error("commit", "usage: clearing commit ID [-m MESSAGE]");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(argv[optind])) {
        cli_usage_error("commit", "'%s' is not a sandbox id", argv[optind]);
        json_decref(req);
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/commit", argv[optind]);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    int st = client_call("POST", path, req, &resp, &err);
    json_decref(req);
    if (st != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    if (json) {
        cli_print_json(resp);
    } else {
        const char *stat = json_string_value(json_object_get(resp, "diffstat"));
        if (stat && *stat)
            fputs(stat, stdout);
        size_t i;
        json_t *sk;
        json_array_foreach(json_object_get(resp, "skipped"), i, sk) {
            char *p = json_dumps(json_object_get(sk, "path"), JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
            fprintf(stderr, "clearing: skipped %s (%s)\n", p ? p : "?",
                    json_string_value(json_object_get(sk, "kind")));
            free(p);
        }
        printf("%s %s%s\n", json_string_value(json_object_get(resp, "branch")),
               json_string_value(json_object_get(resp, "commit")),
               json_is_true(json_object_get(resp, "changed")) ? "" : " (no changes)");
    }
    json_decref(resp);
    return 0;
}

int cmd_diff(int argc, char **argv)
{
    if (argc != 2 || !clr_sandbox_id_valid(argv[1])) {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: clearing diff ID\n\nUnified diff of the workspace against the "
                   "sandbox's base commit.\n");
            return 0;
        }
        if (argc == 2 && argv[1][0] != '-')
            cli_usage_error("diff", "'%s' is not a sandbox id", argv[1]);
        else
            cli_usage_error("diff", "usage: clearing diff ID");
        return CLI_EXIT_USAGE;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/diff", argv[1]);
    clr_error err = CLR_ERROR_INIT;
    char *text = NULL;
    int st = client_text("GET", path, &text, &err);
    if (st != 200) {
        cli_error(&err);
        free(text);
        return cli_failure_status(&err);
    }
    fputs(text ? text : "", stdout);
    free(text);
    return 0;
}
