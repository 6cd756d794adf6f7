/* clearing create: a sandbox in the daemon. Its id is the last line of the output, so scripts can
 * capture it with $(clearing create | tail -n1). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

enum {
    OPT_IMAGE = CLI_OPT_FIRST_FREE,
    OPT_IDLE,
    OPT_ENV,
    OPT_LABEL,
    OPT_JSON,
    OPT_REPO,
    OPT_BASE,
    OPT_BRANCH,
    OPT_REUSE,
    OPT_EGRESS,
    OPT_HELP,
};

/* Puts limit options into a JSON object with the API's names. */
static int limit_to_json(json_t *limits, int opt, const char *arg)
{
    for (const struct option *o = cli_limit_options; o->name; o++) {
        if (o->val != opt)
            continue;
        char name[64];
        snprintf(name, sizeof(name), "%s", o->name);
        for (char *p = name; *p; p++)
            if (*p == '-')
                *p = '_';
        if (strcmp(name, "pids") == 0 || strcmp(name, "nofile") == 0 ||
            strcmp(name, "workspace_inodes") == 0) {
            uint64_t v = 0;
            clr_error err = CLR_ERROR_INIT;
            if (clr_parse_uint(&v, arg, &err) < 0)
                return -1;
            json_object_set_new(limits, name, json_integer((json_int_t)v));
        } else {
            json_object_set_new(limits, name, json_string(arg));
        }
        return 0;
    }
    return 1;
}

int cmd_create(int argc, char **argv)
{
    static const struct option own[] = {
        {"image", required_argument, NULL, OPT_IMAGE},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"env", required_argument, NULL, OPT_ENV},
        {"label", required_argument, NULL, OPT_LABEL},
        {"json", no_argument, NULL, OPT_JSON},
        {"repo", required_argument, NULL, OPT_REPO},
        {"base", required_argument, NULL, OPT_BASE},
        {"branch", required_argument, NULL, OPT_BRANCH},
        {"reuse-branch", no_argument, NULL, OPT_REUSE},
        {"egress-allow", required_argument, NULL, OPT_EGRESS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    _cleanup_free_ struct option *opts = cli_options_with_limits(own);
    json_t *repo = json_object(), *allow = json_array();
    json_t *req = json_object(), *limits = json_object(), *env = json_object(),
           *meta = json_object();
    bool json = false;
    int c, status = CLI_EXIT_USAGE;
    clr_limits scratch = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        /* parse locally first, so a malformed value is caught before any request */
        int rc = cli_parse_limit_option(&scratch, c, optarg, &err);
        if (rc < 0) {
            cli_usage_error("create", "%s", err.message);
            goto out;
        }
        if (rc == 0) {
            limit_to_json(limits, c, optarg);
            continue;
        }
        char *eq = optarg ? strchr(optarg, '=') : NULL;
        switch (c) {
        case OPT_IMAGE: json_object_set_new(req, "image", json_string(optarg)); break;
        case OPT_IDLE: json_object_set_new(req, "idle_timeout", json_string(optarg)); break;
        case OPT_ENV:
        case OPT_LABEL:
            if (!eq || eq == optarg) {
                cli_usage_error("create", "'%s' is not KEY=VALUE", optarg);
                goto out;
            }
            *eq = '\0';
            json_object_set_new(c == OPT_ENV ? env : meta, optarg, json_string(eq + 1));
            *eq = '=';
            break;
        case OPT_JSON: json = true; break;
        case OPT_REPO: {
            char real[4096];
            if (!realpath(optarg, real)) {
                cli_usage_error("create", "--repo %s: %s", optarg, strerror(errno));
                goto out;
            }
            json_object_set_new(repo, "path", json_string(real));
            break;
        }
        case OPT_BASE: json_object_set_new(repo, "base", json_string(optarg)); break;
        case OPT_BRANCH: json_object_set_new(repo, "branch", json_string(optarg)); break;
        case OPT_REUSE: json_object_set_new(repo, "reuse_branch", json_true()); break;
        case OPT_EGRESS: json_array_append_new(allow, json_string(optarg)); break;
        case OPT_HELP:
            printf("Usage: clearing create [OPTIONS]\n\nCreates a sandbox in the daemon and "
                   "prints its id on the last line.\n\n"
                   "  --image IMAGE          image (default: the daemon's)\n"
                   "  --idle-timeout DUR     destroy after this long without activity (0: never)\n"
                   "  --env KEY=VALUE        environment of every command (repeatable)\n"
                   "  --label KEY=VALUE      metadata, for listing with --label (repeatable)\n"
                   "  --json                 print the sandbox record as JSON\n"
                   "  --repo DIR             work on a branch of this git repository (the\n"
                   "                         daemon must allow it with --repo-root)\n"
                   "  --base REF             the branch starts at REF (default HEAD)\n"
                   "  --branch NAME          branch name (default clearing/<sandbox id>)\n"
                   "  --reuse-branch         continue an existing branch\n"
                   "  --egress-allow HOST[:PORT]\n"
                   "                         let commands reach HOST (or *.SUFFIX, or an IP\n"
                   "                         address) through the sandbox's proxy; without a\n"
                   "                         port: 80 and 443 (repeatable; default: nothing)\n%s",
                   cli_limit_help);
            status = 0;
            goto out;
        default: cli_usage_error("create", "unknown option"); goto out;
        }
    }
    if (optind < argc) {
        cli_usage_error("create", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (json_object_size(repo) && !json_object_get(repo, "path")) {
        cli_usage_error("create", "--base, --branch and --reuse-branch need --repo");
        goto out;
    }
    if (json_object_size(repo))
        json_object_set(req, "repo", repo);
    if (json_object_size(limits))
        json_object_set(req, "limits", limits);
    if (json_object_size(env))
        json_object_set(req, "env", env);
    if (json_object_size(meta))
        json_object_set(req, "metadata", meta);
    if (json_array_size(allow))
        json_object_set_new(req, "egress", json_pack("{s:O}", "allow", allow));
    json_t *resp = NULL;
    int st = client_call("POST", "/v1/sandboxes", req, &resp, &err);
    if (st != 201) {
        cli_error(&err);
        /* Cut mid-request (the daemon died): the sandbox may or may not have been made. A
         * daemon removes a half-made one of its own at its next start. */
        if (st < 0 && err.errnum == EIO)
            fprintf(stderr, "clearing: the sandbox may not have been created; once the daemon "
                            "is back, 'clearing --host %s ls' shows what it has\n",
                    client_socket());
        json_decref(resp);
        status = cli_failure_status(&err);
        goto out;
    }
    if (json)
        cli_print_json(resp);
    else
        printf("%s\n", json_string_value(json_object_get(resp, "id")));
    json_decref(resp);
    status = 0;
out:
    json_decref(repo);
    json_decref(allow);
    json_decref(req);
    json_decref(limits);
    json_decref(env);
    json_decref(meta);
    return status;
}
