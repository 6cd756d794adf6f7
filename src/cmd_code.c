/* clearing code: a cell of Python in a daemon's sandbox's code session (a Jupyter kernel whose
 * state lives from one call to the next; docs/API.md). Prints the cell's output and result;
 * images go to a directory the caller names. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define CODE_FILE_MAX (1024 * 1024)

static const char *str_or(json_t *v, const char *dflt)
{
    const char *t = json_string_value(v);
    return t ? t : dflt;
}

/* Standard base64 into a new buffer; NULL when it is not base64. */
static uint8_t *unbase64(const char *in, size_t *len)
{
    size_t n = strlen(in);
    uint8_t *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (const char *p = in; *p && *p != '='; p++) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *at = strchr(alphabet, *p);
        if (*p == '\n' || *p == '\r')
            continue;
        if (!at) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)(at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    *len = k;
    return out;
}

/* Writes DIR/cell-N-K.EXT for each image of the answer; prints each path on stderr. */
static int write_images(const char *dir, json_t *answer, clr_error *err)
{
    static const struct {
        const char *mime, *ext;
        bool binary;
    } kinds[] = {{"image/png", "png", true}, {"image/jpeg", "jpg", true},
                 {"image/svg+xml", "svg", false}};
    json_t *d;
    size_t i;
    json_int_t count = json_integer_value(json_object_get(answer, "execution_count"));
    json_array_foreach(json_object_get(answer, "displays"), i, d)
    {
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            const char *v = json_string_value(json_object_get(d, kinds[k].mime));
            if (!v)
                continue;
            size_t len = strlen(v);
            uint8_t *bytes = kinds[k].binary ? unbase64(v, &len) : (uint8_t *)strdup(v);
            if (!bytes)
                return clr_error_set(err, CLR_E_INVALID, 0, "%s of display %zu is not base64",
                                     kinds[k].mime, i);
            char path[4096];
            snprintf(path, sizeof(path), "%s/cell-%lld-%zu.%s", dir, (long long)count, i,
                     kinds[k].ext);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            bool ok = fd >= 0 && write(fd, bytes, len) == (ssize_t)len;
            int e = errno;
            if (fd >= 0)
                ok = close(fd) == 0 && ok;
            free(bytes);
            if (!ok)
                return clr_error_set(err, CLR_E_INTERNAL, e, "cannot write %s", path);
            fprintf(stderr, "clearing: wrote %s\n", path);
        }
    }
    return 0;
}

static int exit_for(json_t *a);

/* The answer as text: output, the result's text/plain, the traceback; the exit status. */
static int print_answer(json_t *a)
{
    fputs(str_or(json_object_get(a, "stdout"), ""), stdout);
    fputs(str_or(json_object_get(a, "stderr"), ""), stderr);
    const char *value = json_string_value(json_object_get(json_object_get(a, "result"),
                                                          "text/plain"));
    if (value)
        printf("%s\n", value);
    json_t *e = json_object_get(a, "error");
    if (json_is_object(e))
        fprintf(stderr, "%s\n", str_or(json_object_get(e, "traceback"), ""));
    const char *msg = json_string_value(json_object_get(a, "message"));
    if (msg)
        fprintf(stderr, "clearing: %s\n", msg);
    if (json_is_true(json_object_get(a, "truncated")))
        fprintf(stderr, "clearing: the output was cut at its cap (--output-cap)\n");
    return exit_for(a);
}

/* The exit status for an answer's status. */
static int exit_for(json_t *a)
{
    const char *status = str_or(json_object_get(a, "status"), "");
    if (strcmp(status, "ok") == 0)
        return 0;
    if (strcmp(status, "timeout") == 0)
        return 124;
    if (strcmp(status, "oom") == 0)
        return 123;
    /* 122 as for run and exec: the kernel died, or its sandbox was destroyed or lost under
     * the cell (sandbox_failed, as an exec's command in a removed sandbox). */
    if (strcmp(status, "died") == 0 || strcmp(status, "sandbox_failed") == 0)
        return 122;
    return 1;
}

static void code_usage(void)
{
    printf("Usage: clearing code ID (-c CODE | -f FILE.py | --restart | --end)\n"
           "                        [--timeout DURATION] [--output-cap SIZE] [--images DIR]\n"
           "                        [--json]\n\n"
           "Runs a cell of Python in the sandbox's code session: a Jupyter kernel whose\n"
           "variables live from one call to the next (the image needs python3-ipykernel,\n"
           "e.g. clearing/datascience). Prints the cell's output and the value of its last\n"
           "expression; --images writes its images (matplotlib figures) to DIR. --restart\n"
           "gives a fresh kernel; --end ends the session (its kernel and variables; the next\n"
           "cell starts a fresh one). Exit status: 0 ok, 1 the cell raised, 124 timeout,\n"
           "123 out of memory, 122 the kernel died or the sandbox was destroyed\n"
           "(or lost) while the cell ran.\n");
}

/* --restart (POST .../code/restart) or --end (DELETE .../code): prints what was done. */
static int code_session_call(const char *id, bool end)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/code%s", id, end ? "" : "/restart");
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    int st = client_call(end ? "DELETE" : "POST", path, NULL, &resp, &err);
    json_decref(resp);
    if (st != (end ? 204 : 200)) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    printf("%s\n", end ? "ended" : "restarted");
    return 0;
}

/* What the options ask for; the request body gets the rest. */
struct code_opts {
    const char *images;
    bool json, restart, end;
    char *file_text;
};

static int code_parse(int argc, char **argv, json_t *req, struct code_opts *o)
{
    static const struct option opts[] = {
        {"code", required_argument, NULL, 'c'},     {"file", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},  {"output-cap", required_argument, NULL, 'o'},
        {"images", required_argument, NULL, 'i'},   {"json", no_argument, NULL, 'j'},
        {"restart", no_argument, NULL, 'r'},        {"end", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:f:", opts, NULL)) != -1) {
        clr_error err = CLR_ERROR_INIT;
        size_t len = 0;
        switch (c) {
        case 'c': json_object_set_new(req, "code", json_string(optarg)); break;
        case 'f':
            free(o->file_text);
            o->file_text = NULL;
            if (cli_read_small_file(optarg, CODE_FILE_MAX, &o->file_text, &len, &err) < 0) {
                cli_error(&err);
                return CLI_EXIT_USAGE;
            }
            json_object_set_new(req, "code", json_stringn(o->file_text, len));
            break;
        case 't': json_object_set_new(req, "timeout", json_string(optarg)); break;
        case 'o': json_object_set_new(req, "output_cap", json_string(optarg)); break;
        case 'i': o->images = optarg; break;
        case 'j': o->json = true; break;
        case 'r': o->restart = true; break;
        case 'e': o->end = true; break;
        case 'h': code_usage(); return 0;
        default: cli_usage_error("code", "unknown option"); return CLI_EXIT_USAGE;
        }
    }
    /* Exactly one of a cell, --restart and --end. */
    int asked = !!json_object_get(req, "code") + o->restart + o->end;
    if (optind + 1 != argc || asked != 1) {
        cli_usage_error("code",
                        "usage: clearing code ID (-c CODE | -f FILE.py | --restart | --end)");
        return CLI_EXIT_USAGE;
    }
    /* A cell's options say nothing to a restart or an end: refused, not dropped unsaid. */
    if ((o->restart || o->end) && (json_object_size(req) > 0 || o->images || o->json)) {
        cli_usage_error("code", "--timeout, --output-cap, --images and --json are a cell's "
                                "options, not for --restart or --end");
        return CLI_EXIT_USAGE;
    }
    if (!json_is_string(json_object_get(req, "code")) && !o->restart && !o->end) {
        cli_usage_error("code", "the code is not valid UTF-8");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(argv[optind])) {
        cli_usage_error("code", "'%s' is not a sandbox id", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    return -1; /* go on */
}

int cmd_code(int argc, char **argv)
{
    json_t *req = json_object();
    struct code_opts o = {0};
    int rc = code_parse(argc, argv, req, &o);
    free(o.file_text);
    if (rc >= 0 || o.restart || o.end) {
        json_decref(req);
        return rc >= 0 ? rc : code_session_call(argv[optind], o.end);
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/code", argv[optind]);
    clr_error err = CLR_ERROR_INIT;
    json_t *resp = NULL;
    int st = client_call("POST", path, req, &resp, &err);
    json_decref(req);
    if (st != 200) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    if (o.images && write_images(o.images, resp, &err) < 0) {
        cli_error(&err);
        json_decref(resp);
        return cli_failure_status(&err);
    }
    if (o.json) {
        cli_print_json(resp);
        rc = exit_for(resp);
    } else {
        fflush(stderr);
        rc = print_answer(resp);
    }
    json_decref(resp);
    return rc;
}
