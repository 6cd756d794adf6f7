/* clearing audit verify | show: check the hash chain, and read the log with filters. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>

#include "cli.h"
#include "clearing/audit.h"
#include "clearing/verdict.h"

/* What the checkpoint line says: which key signed it, or that it is a v1 (HMAC) one. */
static void print_checkpoint(const clr_audit_verify_report *r)
{
    if (r->checkpoint_hmac)
        printf("checkpoint: record %llu of %s matches; it is a v1 checkpoint (HMAC under "
               "<log>.key): only this host's key checks it, and anyone root here could re-sign "
               "it. The daemon's next checkpoint is signed with its Ed25519 key.\n",
               (unsigned long long)r->checkpoint_seq, r->checkpoint_ts);
    else
        printf("checkpoint: record %llu signed at %s by Ed25519 key %s matches\n",
               (unsigned long long)r->checkpoint_seq, r->checkpoint_ts, r->checkpoint_key_id);
}

/* --pubkey PATH, or the state directory's verdict.key.pub when it exists (NULL: none). */
static const char *default_pubkey(char *buf, size_t len)
{
    clr_verdict_key_default_path(buf, len, cli_global.state_dir);
    strncat(buf, ".pub", len - strlen(buf) - 1);
    return access(buf, F_OK) == 0 ? buf : NULL;
}

static int verify(int argc, char **argv)
{
    clr_error err = CLR_ERROR_INIT;
    bool partial = false;
    const char *pubkey = NULL;
    while (argc > 1 && (!strcmp(argv[1], "--partial") || !strcmp(argv[1], "--pubkey"))) {
        if (!strcmp(argv[1], "--partial")) {
            partial = true;
        } else if (argc < 3) {
            cli_usage_error("audit verify", "--pubkey needs a file (the verdict key's .pub)");
            return CLI_EXIT_USAGE;
        } else {
            pubkey = argv[2];
            argc--;
            argv++;
        }
        argc--;
        argv++;
    }
    clr_audit_verify_report r;
    int rc;
    char keybuf[4200];
    if (argc > 1) {
        rc = clr_audit_verify(&r, (const char *const *)(argv + 1), (size_t)argc - 1, partial,
                              &err);
    } else {
        /* The whole log, then its signed checkpoint: records cut from its end show here. */
        rc = clr_audit_verify_log(&r, cli_audit_path(),
                                  pubkey ? pubkey : default_pubkey(keybuf, sizeof(keybuf)),
                                  partial, &err);
    }
    if (rc < 0) {
        cli_error(&err);
        return CLI_EXIT_FAILURE;
    }
    if (r.ok && r.checkpointed && r.checkpoint_hmac && pubkey) {
        /* The operator asked for the public key's word: an HMAC is not that. */
        r.ok = false;
        snprintf(r.file, sizeof(r.file), "%s.checkpoint", cli_audit_path());
        r.line = 1;
        r.seq = r.checkpoint_seq;
        snprintf(r.problem, sizeof(r.problem),
                 "the checkpoint is a v1 one (HMAC under <log>.key), not signed by %.100s",
                 pubkey);
    }
    if (!r.ok) {
        printf("BROKEN at %s line %llu (record %llu): %s\n", r.file, (unsigned long long)r.line,
               (unsigned long long)r.seq, r.problem);
        printf("%llu records before it verified\n", (unsigned long long)r.records);
        return CLI_EXIT_FAILURE;
    }
    printf("OK: %llu records, seq %llu..%llu, last hash %s\n", (unsigned long long)r.records,
           (unsigned long long)r.first_seq, (unsigned long long)r.last_seq,
           r.records ? r.last_hash : "-");
    if (r.checkpointed)
        print_checkpoint(&r);
    else if (argc <= 1)
        printf("no checkpoint beside the log: records cut from its end would not show\n");
    return 0;
}

static bool matches(json_t *rec, const char *key, const char *want)
{
    if (!want)
        return true;
    const char *v = json_string_value(json_object_get(rec, key));
    return v && strcmp(v, want) == 0;
}

static int show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sandbox", required_argument, NULL, 's'}, {"action", required_argument, NULL, 'a'},
        {"actor", required_argument, NULL, 'u'},   {"since", required_argument, NULL, 'f'},
        {"until", required_argument, NULL, 't'},   {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *sandbox = NULL, *action = NULL, *actor = NULL, *since = NULL, *until = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 's': sandbox = optarg; break;
        case 'a': action = optarg; break;
        case 'u': actor = optarg; break;
        case 'f': since = optarg; break;
        case 't': until = optarg; break;
        case 'j': json = true; break;
        default:
            cli_usage_error("audit show", "options: --sandbox ID --action NAME --actor WHO "
                                          "--since TS --until TS --json");
            return CLI_EXIT_USAGE;
        }
    }
    char **files = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_files(&files, &n, cli_audit_path(), &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_FAILURE;
    }
    int status = 0;
    for (size_t f = 0; f < n; f++) {
        FILE *fp = fopen(files[f], "re");
        if (!fp) {
            /* Not an empty log: a wrong --audit-log must not read as "nothing recorded". */
            fprintf(stderr, "clearing: cannot read the audit log %s: %s\n", files[f],
                    strerror(errno));
            status = CLI_EXIT_FAILURE;
            continue;
        }
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, fp) > 0) {
            json_t *r = json_loads(line, 0, NULL);
            const char *ts = json_string_value(json_object_get(r, "ts"));
            /* ISO-8601 UTC timestamps compare correctly as strings. */
            if (r && matches(r, "sandbox", sandbox) && matches(r, "action", action) &&
                matches(r, "actor", actor) && ts && (!since || strcmp(ts, since) >= 0) &&
                (!until || strcmp(ts, until) <= 0)) {
                if (json) {
                    fputs(line, stdout);
                } else {
                    char *d = json_dumps(json_object_get(r, "details"), JSON_COMPACT);
                    const char *sb = json_string_value(json_object_get(r, "sandbox"));
                    printf("%6lld %s %-18s %-20s %-8s %s %s\n",
                           (long long)json_integer_value(json_object_get(r, "seq")), ts,
                           json_string_value(json_object_get(r, "action")),
                           sb ? sb : "-", json_string_value(json_object_get(r, "outcome")),
                           json_string_value(json_object_get(r, "actor")), d ? d : "");
                    free(d);
                }
            }
            json_decref(r);
        }
        free(line);
        fclose(fp);
    }
    clr_audit_files_free(files);
    return status;
}

int cmd_audit(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return verify(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return show(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: clearing audit verify [--partial] [--pubkey KEY.pub] [FILE...]\n"
               "       clearing audit show [--sandbox ID] [--action NAME] [--actor WHO]\n"
               "                           [--since TS] [--until TS] [--json]\n\n"
               "verify checks the hash chain (default: the log and its rotated files, oldest\n"
               "first) and names the first bad record. --partial: older files were deleted, so\n"
               "the first file may start mid-chain (audit_keep deleted them). Without FILEs\n"
               "the log is also compared with its checkpoint (<log>.checkpoint), signed with\n"
               "the daemon's Ed25519 verdict key: a log that ends before the checkpointed\n"
               "record was truncated. --pubkey: the key's public half (default: <state\n"
               "dir>/verdict.key.pub); given, an old v1 checkpoint (HMAC under <log>.key) fails.\n"
               "The log is --audit-log, $CLEARING_AUDIT_LOG, or <state dir>/audit.log.\n");
        return 0;
    }
    cli_usage_error("audit", "usage: clearing audit verify [FILE...] | show [filters]");
    return CLI_EXIT_USAGE;
}
