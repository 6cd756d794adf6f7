/* clearing verify: checks a commit's signed verdict against the daemon's public key. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clearing/verdict.h"

static const char usage[] =
    "Usage: clearing verify [--repo DIR] [--key PUBKEY.pem] [--json] COMMIT\n"
    "Checks the Clearing-Signature of COMMIT (any git revision) in the repository at DIR\n"
    "(default: the current directory) against the verdict key's public half (default:\n"
    "<state dir>/verdict.key.pub). Exit 0: good signature; 1: no signature, another key, or a\n"
    "bad one (the commit or its Clearing trailers changed after signing); 2: bad usage;\n"
    "125: the repository, the commit or the key could not be read.\n";

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"repo", required_argument, NULL, 'r'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *repo = ".", *key = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': repo = optarg; break;
        case 'k': key = optarg; break;
        case 'j': json = true; break;
        case 'h': fputs(usage, stdout); return 0;
        default: cli_usage_error("verify", "unknown option"); return CLI_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        cli_usage_error("verify", "give exactly one commit");
        return CLI_EXIT_USAGE;
    }
    char keypath[PATH_MAX];
    if (!key) {
        clr_verdict_key_default_path(keypath, sizeof(keypath), cli_global.state_dir);
        strncat(keypath, ".pub", sizeof(keypath) - strlen(keypath) - 1);
        key = keypath;
    }
    clr_verdict_check chk;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_verdict_verify(&chk, repo, argv[optind], key, &err);
    int status = rc == 0 ? CLI_EXIT_OK
                 : (err.code == CLR_E_INVALID || err.code == CLR_E_DENIED) ? CLI_EXIT_FAILURE
                                                                          : CLI_EXIT_CLEARING;
    if (json) {
        json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:s?, s:s?}", "good", rc == 0, "commit",
                              chk.commit, "key_id", chk.key_id, "verdict", chk.verdict,
                              "statement", chk.statement, "error",
                              rc == 0 ? NULL : err.message);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text)
            puts(text);
        free(text);
        json_decref(o);
    } else if (rc == 0) {
        printf("good signature by key %s on commit %s: verdict %s\n", chk.key_id, chk.commit,
               chk.verdict[0] ? chk.verdict : "(none)");
        fputs(chk.statement, stdout);
    } else {
        cli_error(&err);
    }
    clr_verdict_check_clear(&chk);
    return status;
}
