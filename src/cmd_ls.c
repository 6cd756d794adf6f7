/* clearing ls: every sandbox the engine knows, in any state. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void fmt_time(char *buf, size_t len, int64_t t)
{
    if (t <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cmd_ls(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'h') {
            printf("Usage: clearing ls [--json]\n\nLists every sandbox, in any state.\n");
            return 0;
        } else {
            cli_usage_error("ls", "unknown option");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_usage_error("ls", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    if (cli_open_engine(&eng, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_FAILURE;
    }
    _cleanup_free_ clr_sandbox_info *list = NULL;
    size_t n = 0;
    int rc = clr_sandbox_list(&list, &n, eng, &err);
    clr_engine_free(eng);
    if (rc < 0) {
        cli_error(&err);
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            clr_sandbox_info *s = &list[i];
            json_t *o = json_pack("{s:s?, s:s, s:s, s:s?, s:s?, s:b, s:I, s:I}", "id",
                                  s->id[0] ? s->id : NULL, "container_id", s->container_id,
                                  "state", s->state, "image", s->image[0] ? s->image : NULL,
                                  "runtime", s->runtime[0] ? s->runtime : NULL, "insecure",
                                  s->insecure, "created_at", (json_int_t)s->created_at,
                                  "expires_at", (json_int_t)s->expires_at);
            json_array_append_new(a, o);
        }
        cli_print_json(a);
        json_decref(a);
        return 0;
    }
    printf("%-20s %-10s %-8s %-21s %-21s %s\n", "ID", "STATE", "RUNTIME", "CREATED", "EXPIRES",
           "IMAGE");
    for (size_t i = 0; i < n; i++) {
        clr_sandbox_info *s = &list[i];
        char created[32], expires[32];
        fmt_time(created, sizeof(created), s->created_at);
        fmt_time(expires, sizeof(expires), s->expires_at);
        printf("%-20s %-10s %-8s %-21s %-21s %s%s\n", s->id[0] ? s->id : "(unreadable)",
               s->state, s->runtime[0] ? s->runtime : "-", created, expires,
               s->image[0] ? s->image : "-", s->insecure ? "  [INSECURE RUNTIME]" : "");
    }
    return 0;
}
