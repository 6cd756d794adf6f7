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

/* What the command line asked for: the parts of the request body, built as options come. */
struct create_args {
    json_t *req, *repo, *allow, *limits, *env, *meta;
    bool json;
};

#define CREATE_GO_ON (-1) /* a parse step's answer when the command should go on */

static void create_args_clear(struct create_args *a)
{
    json_decref(a->req);
    json_decref(a->repo);
    json_decref(a->allow);
    json_decref(a->limits);
    json_decref(a->env);
    json_decref(a->meta);
}

static void create_help(void)
{
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
}

/* One of create's own options into a: CREATE_GO_ON, or the exit status. */
static int create_option(struct create_args *a, int c, char *arg)
{
    char *eq = arg ? strchr(arg, '=') : NULL;
    char real[4096];
    switch (c) {
    case OPT_IMAGE: json_object_set_new(a->req, "image", json_string(arg)); break;
    case OPT_IDLE: json_object_set_new(a->req, "idle_timeout", json_string(arg)); break;
    case OPT_ENV:
    case OPT_LABEL:
        if (!eq || eq == arg) {
            cli_usage_error("create", "'%s' is not KEY=VALUE", arg);
            return CLI_EXIT_USAGE;
        }
        *eq = '\0';
        json_object_set_new(c == OPT_ENV ? a->env : a->meta, arg, json_string(eq + 1));
        *eq = '=';
        break;
    case OPT_JSON: a->json = true; break;
    case OPT_REPO:
        if (!realpath(arg, real)) {
            cli_usage_error("create", "--repo %s: %s", arg, strerror(errno));
            return CLI_EXIT_USAGE;
        }
        json_object_set_new(a->repo, "path", json_string(real));
        break;
    case OPT_BASE: json_object_set_new(a->repo, "base", json_string(arg)); break;
    case OPT_BRANCH: json_object_set_new(a->repo, "branch", json_string(arg)); break;
    case OPT_REUSE: json_object_set_new(a->repo, "reuse_branch", json_true()); break;
    case OPT_EGRESS: json_array_append_new(a->allow, json_string(arg)); break;
    case OPT_HELP: create_help(); return 0;
    default: cli_usage_error("create", "unknown option"); return CLI_EXIT_USAGE;
    }
    return CREATE_GO_ON;
}

/* Parses argv into a's request: CREATE_GO_ON, or the exit status. */
static int create_parse(struct create_args *a, int argc, char **argv)
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
    if (!opts)
        return CLI_EXIT_CLEARING;
    clr_limits scratch = CLR_LIMITS_INIT;
    clr_error err = CLR_ERROR_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        /* parse locally first, so a malformed value is caught before any request */
        int rc = cli_parse_limit_option(&scratch, c, optarg, &err);
        if (rc < 0) {
            cli_usage_error("create", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0) {
            limit_to_json(a->limits, c, optarg);
            continue;
        }
        rc = create_option(a, c, optarg);
        if (rc != CREATE_GO_ON)
            return rc;
    }
    if (optind < argc) {
        cli_usage_error("create", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (json_object_size(a->repo) && !json_object_get(a->repo, "path")) {
        cli_usage_error("create", "--base, --branch and --reuse-branch need --repo");
        return CLI_EXIT_USAGE;
    }
    if (json_object_size(a->repo))
        json_object_set(a->req, "repo", a->repo);
    if (json_object_size(a->limits))
        json_object_set(a->req, "limits", a->limits);
    if (json_object_size(a->env))
        json_object_set(a->req, "env", a->env);
    if (json_object_size(a->meta))
        json_object_set(a->req, "metadata", a->meta);
    if (json_array_size(a->allow))
        json_object_set_new(a->req, "egress", json_pack("{s:O}", "allow", a->allow));
    return CREATE_GO_ON;
}

int cmd_create(int argc, char **argv)
{
    struct create_args a __attribute__((cleanup(create_args_clear))) = {
        .req = json_object(), .repo = json_object(), .allow = json_array(),
        .limits = json_object(), .env = json_object(), .meta = json_object()};
    if (!a.req || !a.repo || !a.allow || !a.limits || !a.env || !a.meta)
        return CLI_EXIT_CLEARING;
    int rc = create_parse(&a, argc, argv);
    if (rc != CREATE_GO_ON)
        return rc;
    clr_error err = CLR_ERROR_INIT;
    json_auto_t *resp = NULL;
    int st = client_call("POST", "/v1/sandboxes", a.req, &resp, &err);
    if (st != 201) {
        cli_error(&err);
        /* Cut mid-request (the daemon died): the sandbox may or may not have been made. A
         * daemon removes a half-made one of its own at its next start. */
        if (st < 0 && err.errnum == EIO)
            fprintf(stderr, "clearing: the sandbox may not have been created; once the daemon "
                            "is back, 'clearing --host %s ls' shows what it has\n",
                    client_socket());
        return cli_failure_status(&err);
    }
    if (a.json)
        cli_print_json(resp);
    else
        printf("%s\n", json_string_value(json_object_get(resp, "id")));
    return 0;
}
