/* clearing exec: a command in a daemon's sandbox. Output streams as it comes; the exit status
 * mirrors the command's, as with `clearing run`. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

enum {
    OPT_TIMEOUT = CLI_OPT_FIRST_FREE,
    OPT_ENV,
    OPT_CWD,
    OPT_STDIN_FILE,
    OPT_STDOUT_CAP,
    OPT_STDERR_CAP,
    OPT_SHELL,
    OPT_JSON,
    OPT_DETACH,
    OPT_HELP,
};

static void write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

/* Writes an output chunk ({data, encoding}) to fd, decoding base64. */
static void emit_chunk(int fd, json_t *data, json_t *encoding)
{
    const char *d = json_string_value(data);
    size_t n = json_string_length(data);
    if (!d)
        return;
    const char *enc = json_string_value(encoding);
    if (enc && strcmp(enc, "base64") == 0) {
        unsigned char *buf = malloc(n / 4 * 3 + 3);
        if (!buf)
            return;
        int m = EVP_DecodeBlock(buf, (const unsigned char *)d, (int)n);
        if (m > 0) {
            /* EVP_DecodeBlock counts padding as zero bytes: drop them. */
            if (n >= 1 && d[n - 1] == '=')
                m--;
            if (n >= 2 && d[n - 2] == '=')
                m--;
            write_all(fd, buf, (size_t)m);
        }
        free(buf);
        return;
    }
    write_all(fd, d, n);
}

struct exec_state {
    json_t *final;
    json_t *error;
    char exec_id[64]; /* from the "started" event; "" until it came */
};

static void on_line(void *ctx, json_t *line)
{
    struct exec_state *st = ctx;
    const char *ev = json_string_value(json_object_get(line, "event"));
    if (!ev)
        return;
    if (strcmp(ev, "stdout") == 0 || strcmp(ev, "stderr") == 0)
        emit_chunk(ev[3] == 'o' ? STDOUT_FILENO : STDERR_FILENO, json_object_get(line, "data"),
                   json_object_get(line, "encoding"));
    else if (strcmp(ev, "started") == 0 && json_string_value(json_object_get(line, "exec_id")))
        snprintf(st->exec_id, sizeof(st->exec_id), "%s",
                 json_string_value(json_object_get(line, "exec_id")));
    else if (strcmp(ev, "result") == 0)
        st->final = json_incref(line);
    else if (strcmp(ev, "error") == 0)
        st->error = json_incref(line);
}

static int read_file(const char *path, json_t *req, clr_error *err)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INVALID, errno, "--stdin-file %s: %s", path,
                             strerror(errno));
    size_t cap = 65536, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        if (n == cap) {
            if (cap >= 16 * 1024 * 1024) {
                free(buf);
                return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                                     "--stdin-file: at most 16 MiB through the daemon");
            }
            cap *= 2;
            unsigned char *b = realloc(buf, cap);
            if (!b)
                free(buf);
            buf = b;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    if (fd != STDIN_FILENO)
        close(fd);
    char *enc = malloc(4 * ((n + 2) / 3) + 1);
    if (!enc) {
        free(buf);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    EVP_EncodeBlock((unsigned char *)enc, buf, (int)n);
    json_object_set_new(req, "stdin_base64", json_string(enc));
    free(enc);
    free(buf);
    return 0;
}

/* What the command line asked for: the request body, built as the options are parsed. */
struct exec_args {
    json_t *req;
    json_t *env;
    const char *id;
    bool json, detach;
};

#define EXEC_GO_ON (-1) /* a parse step's answer when the command should go on */

static void exec_args_clear(struct exec_args *a)
{
    json_decref(a->req);
    json_decref(a->env);
}

static void exec_help(void)
{
    printf("Usage: clearing exec [OPTIONS] ID -- COMMAND [ARG...]\n"
           "       clearing exec [OPTIONS] ID --shell 'STRING'\n\n"
           "Runs a command in a sandbox of the daemon; output streams as it comes.\n"
           "Exit status as for 'clearing run' (124 timed out, 123 out of memory, ...).\n\n"
           "  --timeout DURATION  --env KEY=VALUE  --cwd DIR  --stdin-file FILE|-\n"
           "  --stdout-cap SIZE  --stderr-cap SIZE  --json (print the exec record)\n"
           "  --detach            start it as a background process (no timeout) and\n"
           "                      print its id; see 'clearing ps' and 'clearing logs'\n");
}

/* One option into a: EXEC_GO_ON, or the exit status (a usage error, 0 after --help). */
static int exec_option(struct exec_args *a, int c, char *arg)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t v;
    char *eq;
    switch (c) {
    case OPT_TIMEOUT:
        if (clr_parse_duration_ms(&v, arg, &err) < 0) {
            cli_usage_error("exec", "--timeout: %s", err.message);
            return CLI_EXIT_USAGE;
        }
        json_object_set_new(a->req, "timeout", json_string(arg));
        return EXEC_GO_ON;
    case OPT_STDOUT_CAP:
    case OPT_STDERR_CAP:
        if (clr_parse_size(&v, arg, &err) < 0) {
            cli_usage_error("exec", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        json_object_set_new(a->req, c == OPT_STDOUT_CAP ? "stdout_cap" : "stderr_cap",
                            json_string(arg));
        return EXEC_GO_ON;
    case OPT_ENV:
        eq = strchr(arg, '=');
        if (!eq || eq == arg) {
            cli_usage_error("exec", "--env '%s' is not KEY=VALUE", arg);
            return CLI_EXIT_USAGE;
        }
        *eq = '\0';
        json_object_set_new(a->env, arg, json_string(eq + 1));
        *eq = '=';
        return EXEC_GO_ON;
    case OPT_CWD: json_object_set_new(a->req, "cwd", json_string(arg)); return EXEC_GO_ON;
    case OPT_SHELL: json_object_set_new(a->req, "shell", json_string(arg)); return EXEC_GO_ON;
    case OPT_STDIN_FILE:
        if (read_file(arg, a->req, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
        return EXEC_GO_ON;
    case OPT_JSON: a->json = true; return EXEC_GO_ON;
    case OPT_DETACH: a->detach = true; return EXEC_GO_ON;
    case OPT_HELP: exec_help(); return 0;
    default: cli_usage_error("exec", "unknown option"); return CLI_EXIT_USAGE;
    }
}

/* Parses argv into a: EXEC_GO_ON, or the exit status. Options may come before and after the
 * id; the command itself comes after "--". */
static int exec_parse(struct exec_args *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"env", required_argument, NULL, OPT_ENV},
        {"cwd", required_argument, NULL, OPT_CWD},
        {"stdin-file", required_argument, NULL, OPT_STDIN_FILE},
        {"stdout-cap", required_argument, NULL, OPT_STDOUT_CAP},
        {"stderr-cap", required_argument, NULL, OPT_STDERR_CAP},
        {"shell", required_argument, NULL, OPT_SHELL},
        {"json", no_argument, NULL, OPT_JSON},
        {"detach", no_argument, NULL, OPT_DETACH},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "+", opts, NULL);
        if (c == -1) {
            if (!a->id && optind < argc && strcmp(argv[optind - 1], "--") != 0) {
                a->id = argv[optind++];
                continue;
            }
            break;
        }
        int rc = exec_option(a, c, optarg);
        if (rc != EXEC_GO_ON)
            return rc;
    }
    if (!a->id) {
        cli_usage_error("exec", "no sandbox id given");
        return CLI_EXIT_USAGE;
    }
    if (!clr_sandbox_id_valid(a->id)) {
        cli_usage_error("exec", "'%s' is not a sandbox id", a->id);
        return CLI_EXIT_USAGE;
    }
    bool shell = json_object_get(a->req, "shell") != NULL;
    if (shell == (optind < argc)) {
        cli_usage_error("exec", "give either --shell STRING or -- COMMAND [ARG...]");
        return CLI_EXIT_USAGE;
    }
    if (!shell) {
        json_t *argv_json = json_array();
        for (int i = optind; i < argc; i++)
            json_array_append_new(argv_json, json_string(argv[i]));
        json_object_set_new(a->req, "argv", argv_json);
    }
    if (json_object_size(a->env))
        json_object_set(a->req, "env", a->env);
    return EXEC_GO_ON;
}

/* --detach: a background process; prints its id (or its record with --json). */
static int exec_detached(const struct exec_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    char path[256];
    json_object_del(a->req, "timeout");
    json_object_del(a->req, "stdout_cap");
    json_object_del(a->req, "stderr_cap");
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", a->id);
    json_auto_t *resp = NULL;
    if (client_call("POST", path, a->req, &resp, &err) != 201) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    if (a->json)
        cli_print_json(resp);
    else
        printf("%s\n", json_string_value(json_object_get(resp, "id")));
    return 0;
}

/* --json: one call, the exec record printed whole. */
static int exec_whole(const struct exec_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    char path[256];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", a->id);
    json_auto_t *resp = NULL;
    if (client_call("POST", path, a->req, &resp, &err) != 200) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    cli_print_json(resp);
    return cli_exit_status_json(json_object_get(resp, "result"));
}

/* What a stream ended with: the result's exit status, after saying on stderr what went wrong. */
static int exec_stream_status(const struct exec_args *a, const struct exec_state *es, int st,
                              const clr_error *err)
{
    if (st != 200 || (!es->error && !es->final)) {
        /* The stream ended before the result: the daemon went away, or the connection broke.
         * The command may run on (its result is kept for the record); say how to fetch it. */
        if (st != 200)
            cli_error(err);
        else
            fprintf(stderr, "clearing: the daemon closed the stream before the result\n");
        if (es->exec_id[0])
            fprintf(stderr,
                    "clearing: exec %s started; once the daemon is back, fetch its record "
                    "with: clearing --host %s inspect %s %s\n",
                    es->exec_id, client_socket(), a->id, es->exec_id);
        return CLI_EXIT_CLEARING;
    }
    if (es->error) {
        json_t *e = json_object_get(es->error, "error");
        fprintf(stderr, "clearing: %s: %s\n", json_string_value(json_object_get(e, "code")),
                json_string_value(json_object_get(e, "message")));
        return CLI_EXIT_CLEARING;
    }
    json_t *r = json_object_get(es->final, "result");
    const char *s = json_string_value(json_object_get(r, "status"));
    if (s && strcmp(s, "exited") != 0) {
        const char *m = json_string_value(json_object_get(r, "message"));
        fprintf(stderr, "clearing: command %s%s%s\n", s, m ? ": " : "", m ? m : "");
    }
    if (json_is_true(json_object_get(r, "stdout_truncated")) ||
        json_is_true(json_object_get(r, "stderr_truncated")))
        fprintf(stderr, "clearing: output truncated\n");
    return cli_exit_status_json(r);
}

/* The default: output streamed as it comes. */
static int exec_streamed(const struct exec_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    char path[256];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec?stream=true", a->id);
    struct exec_state es = {0};
    int st = client_stream("POST", path, a->req, on_line, &es, &err);
    int status = exec_stream_status(a, &es, st, &err);
    json_decref(es.final);
    json_decref(es.error);
    return status;
}

int cmd_exec(int argc, char **argv)
{
    struct exec_args a __attribute__((cleanup(exec_args_clear))) = {
        .req = json_object(), .env = json_object()};
    if (!a.req || !a.env)
        return CLI_EXIT_CLEARING;
    int rc = exec_parse(&a, argc, argv);
    if (rc != EXEC_GO_ON)
        return rc;
    if (a.detach)
        return exec_detached(&a);
    return a.json ? exec_whole(&a) : exec_streamed(&a);
}
