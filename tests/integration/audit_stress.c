/* audit-stress: appends records to an audit log as fast as it can, for audit.sh.
 *
 *   audit-stress --path FILE [--rotate-bytes N] [--count N] [--payload BYTES] [--tag NAME]
 *                [--key VERDICT-KEY]
 *
 * --key: the verdict key that signs the log's checkpoints, as the daemon's (made if missing);
 * without it they are v1 ones (HMAC under FILE.key).
 *
 * Each record is action "stress", outcome "ok", details {"tag":NAME,"i":INDEX,"payload":"x..."}.
 * After EACH append that clr_audit_append acknowledged, "acked INDEX TAG" is printed and flushed:
 * a test that kills this process with SIGKILL then knows exactly which records the log promised
 * to keep, and can check that every one of them is there. On a failure the library's message
 * goes to stderr and the exit status is 1 (2 for bad usage). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clearing/audit.h"
#include "clearing/cleanup.h"
#include "clearing/limits.h"
#include "clearing/verdict.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f, "Usage: audit-stress --path FILE [--rotate-bytes N] [--count N] [--payload BYTES]\n"
               "                    [--tag NAME] [--key VERDICT-KEY]\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"path", required_argument, NULL, 'p'},  {"rotate-bytes", required_argument, NULL, 'r'},
        {"count", required_argument, NULL, 'n'}, {"payload", required_argument, NULL, 'b'},
        {"tag", required_argument, NULL, 't'},   {"help", no_argument, NULL, 'h'},
        {"key", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    clr_audit_options ao = CLR_AUDIT_OPTIONS_INIT;
    uint64_t count = 100, payload = 64;
    const char *tag = "stress", *key_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        clr_error err = CLR_ERROR_INIT;
        const char *what = NULL;
        int rc = 0;
        switch (c) {
        case 'p': ao.path = optarg; break;
        case 'r':
            what = "rotate-bytes";
            rc = clr_parse_size(&ao.rotate_bytes, optarg, &err);
            break;
        case 'n':
            what = "count";
            rc = clr_parse_uint(&count, optarg, &err);
            break;
        case 'b':
            what = "payload";
            rc = clr_parse_size(&payload, optarg, &err);
            break;
        case 't': tag = optarg; break;
        case 'k': key_path = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
        if (rc < 0) {
            fprintf(stderr, "audit-stress: --%s '%s': %s\n", what, optarg, err.message);
            return EXIT_USAGE;
        }
    }
    if (!ao.path || optind < argc || payload > 1024 * 1024) {
        usage(stderr);
        return EXIT_USAGE;
    }

    _cleanup_free_ char *fill = malloc(payload + 1);
    if (!fill) {
        fprintf(stderr, "audit-stress: out of memory\n");
        return EXIT_FAILED;
    }
    memset(fill, 'x', payload);
    fill[payload] = '\0';

    clr_error err = CLR_ERROR_INIT;
    clr_verdict_key *key = NULL;
    if (key_path && clr_verdict_key_load(&key, key_path, true, NULL, &err) < 0) {
        fprintf(stderr, "audit-stress: --key %s: %s\n", key_path, err.message);
        return EXIT_FAILED;
    }
    ao.checkpoint_key = key;
    clr_audit *a = NULL;
    if (clr_audit_open(&a, &ao, &err) < 0) {
        fprintf(stderr, "audit-stress: %s\n", err.message);
        clr_verdict_key_free(key);
        return EXIT_FAILED;
    }
    int status = EXIT_OK;
    for (uint64_t i = 0; i < count; i++) {
        json_t *d = json_pack("{s:s, s:I, s:s}", "tag", tag, "i", (json_int_t)i, "payload", fill);
        int rc = d ? clr_audit_append(a, "audit-stress", NULL, "stress", "ok", d, &err) : -1;
        json_decref(d);
        if (rc < 0) {
            fprintf(stderr, "audit-stress: record %" PRIu64 ": %s\n", i,
                    d ? err.message : "out of memory");
            status = EXIT_FAILED;
            break;
        }
        printf("acked %" PRIu64 " %s\n", i, tag);
        fflush(stdout);
    }
    clr_audit_close(a);
    clr_verdict_key_free(key);
    return status;
}
