/* clearing logs: a background process's output so far; -f follows it until it exits. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

static void write_chunk(int fd, json_t *part)
{
    const char *d = json_string_value(json_object_get(part, "data"));
    size_t n = json_string_length(json_object_get(part, "data"));
    const char *enc = json_string_value(json_object_get(part, "encoding"));
    if (!d || !n)
        return;
    unsigned char *buf = NULL;
    if (enc && strcmp(enc, "base64") == 0) {
        buf = malloc(n / 4 * 3 + 3);
        if (!buf)
            return;
        int m = EVP_DecodeBlock(buf, (const unsigned char *)d, (int)n);
        if (m < 0) {
            free(buf);
            return;
        }
        m -= (n >= 1 && d[n - 1] == '=') + (n >= 2 && d[n - 2] == '=');
        d = (const char *)buf;
        n = (size_t)m;
    }
    while (n > 0) {
        ssize_t w = write(fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        d += w;
        n -= (size_t)w;
    }
    free(buf);
}

int cmd_logs(int argc, char **argv)
{
    bool follow = false;
    int i = 1;
    if (i < argc && (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)) {
        follow = true;
        i++;
    }
    if (argc - i != 2) {
        if (argc == 2 && strcmp(argv[1], "--help") == 0) {
            printf("Usage: clearing logs [-f] ID PROCESS\n\nPrints a background process's "
                   "output (the last 1 MiB of each stream); -f follows\nit until the process "
                   "exits, then exits with its status.\n");
            return 0;
        }
        cli_usage_error("logs", "usage: clearing logs [-f] ID PROCESS");
        return CLI_EXIT_USAGE;
    }
    const char *id = argv[i], *proc = argv[i + 1];
    if (!clr_sandbox_id_valid(id) || strncmp(proc, "pr-", 3) != 0 || strlen(proc) != 19) {
        cli_usage_error("logs", "expected a sandbox id (sb-...) and a process id (pr-...)");
        return CLI_EXIT_USAGE;
    }
    uint64_t out_off = 0, err_off = 0;
    clr_error err = CLR_ERROR_INIT;
    for (;;) {
        char path[256];
        snprintf(path, sizeof(path),
                 "/v1/sandboxes/%s/processes/%s/output?stdout_offset=%" PRIu64
                 "&stderr_offset=%" PRIu64 "%s",
                 id, proc, out_off, err_off, follow ? "&wait=30s" : "");
        json_t *resp = NULL;
        if (client_call("GET", path, NULL, &resp, &err) != 200) {
            cli_error(&err);
            json_decref(resp);
            /* -f mirrors the process's status: 1 may be its own, so any failure is 125. */
            return follow ? CLI_EXIT_CLEARING : cli_failure_status(&err);
        }
        json_t *o = json_object_get(resp, "stdout"), *e = json_object_get(resp, "stderr");
        write_chunk(STDOUT_FILENO, o);
        write_chunk(STDERR_FILENO, e);
        out_off = (uint64_t)json_integer_value(json_object_get(o, "next_offset"));
        err_off = (uint64_t)json_integer_value(json_object_get(e, "next_offset"));
        const char *state = json_string_value(json_object_get(resp, "state"));
        if (!state) {
            json_decref(resp);
            fprintf(stderr, "clearing logs: the daemon's answer has no process state: is it a "
                            "clearing daemon of this version?\n");
            return CLI_EXIT_CLEARING;
        }
        bool exited = strcmp(state, "exited") == 0;
        int status = exited ? cli_exit_status_json(json_object_get(resp, "result")) : 0;
        json_decref(resp);
        if (!follow)
            return 0;
        if (exited)
            return status;
    }
}
