/* clearing ls: every sandbox the engine knows, in any state. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client.h"

/* Percent-encodes a label filter for the query string. */
static char *curl_escape_label(const char *s)
{
    char *o = malloc(strlen(s) * 3 + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.')
            *p++ = (char)ch;
        else
            p += sprintf(p, "%%%02X", ch);
    }
    *p = '\0';
    return o;
}

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

static int ls_daemon(bool all, const char *label, bool json)
{
    char path[512] = "/v1/sandboxes";
    char *enc = label ? curl_escape_label(label) : NULL;
    snprintf(path, sizeof(path), "/v1/sandboxes?%s%s%s", all ? "" : "state=running",
             enc ? (all ? "label=" : "&label=") : "", enc ? enc : "");
    free(enc);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    if (client_call("GET", path, NULL, &resp, &err) != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    json_t *list = json_object_get(resp, "sandboxes");
    if (json) {
        cli_print_json(list);
        json_decref(resp);
        return 0;
    }
    printf("%-20s %-10s %-8s %-21s %-21s %s\n", "ID", "STATE", "RUNTIME", "CREATED", "EXPIRES",
           "IMAGE");
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s) {
        char created[32], expires[32];
        fmt_time(created, sizeof(created), json_integer_value(json_object_get(s, "created_at")));
        fmt_time(expires, sizeof(expires), json_integer_value(json_object_get(s, "expires_at")));
        printf("%-20s %-10s %-8s %-21s %-21s %s%s%s\n",
               json_string_value(json_object_get(s, "id")),
               json_string_value(json_object_get(s, "state")),
               json_string_value(json_object_get(s, "runtime")), created, expires,
               json_string_value(json_object_get(s, "image")),
               json_is_true(json_object_get(s, "insecure")) ? "  [INSECURE RUNTIME]" : "",
               json_is_true(json_object_get(s, "recovered")) ? "  [RECOVERED]" : "");
    }
    json_decref(resp);
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"engine", no_argument, NULL, 'e'},
        {"all", no_argument, NULL, 'a'},
        {"label", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false, engine = false, all = false;
    const char *label = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'e')
            engine = true;
        else if (c == 'a')
            all = true;
        else if (c == 'l')
            label = optarg;
        else if (c == 'h') {
            printf("Usage: clearing ls [--all] [--label KEY=VALUE] [--json]\n"
                   "       clearing ls --engine [--json]\n\n"
                   "Lists the daemon's live sandboxes (--all: also destroyed and lost ones).\n"
                   "--engine lists every sandbox the Docker engine has, from its labels, without\n"
                   "a daemon (sandboxes of 'clearing run' and of every daemon).\n");
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
    if (!engine)
        return ls_daemon(all, label, json);
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    if (cli_open_engine(&eng, &err) < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    _cleanup_free_ clr_sandbox_info *list = NULL;
    size_t n = 0;
    int rc = clr_sandbox_list(&list, &n, eng, &err);
    clr_engine_free(eng);
    if (rc < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
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
