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

int cmd_exec(int argc, char **argv)
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
    json_t *req = json_object(), *env = json_object();
    bool json = false, detach = false;
    int c, status = CLI_EXIT_USAGE;
    clr_error err = CLR_ERROR_INIT;
    uint64_t v;
    /* Options may come before and after the id; the command itself comes after "--". */
    const char *id = NULL;
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "+", opts, NULL);
        if (c == -1) {
            if (!id && optind < argc && strcmp(argv[optind - 1], "--") != 0) {
                id = argv[optind++];
                continue;
            }
            break;
        }
        char *eq;
        switch (c) {
        case OPT_TIMEOUT:
            if (clr_parse_duration_ms(&v, optarg, &err) < 0) {
                cli_usage_error("exec", "--timeout: %s", err.message);
                goto out;
            }
            json_object_set_new(req, "timeout", json_string(optarg));
            break;
        case OPT_STDOUT_CAP:
        case OPT_STDERR_CAP:
            if (clr_parse_size(&v, optarg, &err) < 0) {
                cli_usage_error("exec", "%s", err.message);
                goto out;
            }
            json_object_set_new(req, c == OPT_STDOUT_CAP ? "stdout_cap" : "stderr_cap",
                                json_string(optarg));
            break;
        case OPT_ENV:
            eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                cli_usage_error("exec", "--env '%s' is not KEY=VALUE", optarg);
                goto out;
            }
            *eq = '\0';
            json_object_set_new(env, optarg, json_string(eq + 1));
            *eq = '=';
            break;
        case OPT_CWD: json_object_set_new(req, "cwd", json_string(optarg)); break;
        case OPT_SHELL: json_object_set_new(req, "shell", json_string(optarg)); break;
        case OPT_STDIN_FILE:
            if (read_file(optarg, req, &err) < 0) {
                cli_error(&err);
                goto out;
            }
            break;
        case OPT_JSON: json = true; break;
        case OPT_DETACH: detach = true; break;
        case OPT_HELP:
            printf("Usage: clearing exec [OPTIONS] ID -- COMMAND [ARG...]\n"
                   "       clearing exec [OPTIONS] ID --shell 'STRING'\n\n"
                   "Runs a command in a sandbox of the daemon; output streams as it comes.\n"
                   "Exit status as for 'clearing run' (124 timed out, 123 out of memory, ...).\n\n"
                   "  --timeout DURATION  --env KEY=VALUE  --cwd DIR  --stdin-file FILE|-\n"
                   "  --stdout-cap SIZE  --stderr-cap SIZE  --json (print the exec record)\n"
                   "  --detach            start it as a background process (no timeout) and\n"
                   "                      print its id; see 'clearing ps' and 'clearing logs'\n");
            status = 0;
            goto out;
        default: cli_usage_error("exec", "unknown option"); goto out;
        }
    }
    if (!id) {
        cli_usage_error("exec", "no sandbox id given");
        goto out;
    }
    if (!clr_sandbox_id_valid(id)) {
        cli_usage_error("exec", "'%s' is not a sandbox id", id);
        goto out;
    }
    bool shell = json_object_get(req, "shell") != NULL;
    if (shell == (optind < argc)) {
        cli_usage_error("exec", "give either --shell STRING or -- COMMAND [ARG...]");
        goto out;
    }
    if (!shell) {
        json_t *a = json_array();
        for (int i = optind; i < argc; i++)
            json_array_append_new(a, json_string(argv[i]));
        json_object_set_new(req, "argv", a);
    }
    if (json_object_size(env))
        json_object_set(req, "env", env);
    char path[256];
    if (detach) {
        json_object_del(req, "timeout");
        json_object_del(req, "stdout_cap");
        json_object_del(req, "stderr_cap");
        snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", id);
        json_t *resp = NULL;
        if (client_call("POST", path, req, &resp, &err) != 201) {
            cli_error(&err);
            json_decref(resp);
            status = CLI_EXIT_CLEARING;
            goto out;
        }
        if (json)
            cli_print_json(resp);
        else
            printf("%s\n", json_string_value(json_object_get(resp, "id")));
        json_decref(resp);
        status = 0;
        goto out;
    }
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec%s", id, json ? "" : "?stream=true");
    if (json) {
        json_t *resp = NULL;
        int st = client_call("POST", path, req, &resp, &err);
        if (st != 200) {
            cli_error(&err);
            json_decref(resp);
            status = CLI_EXIT_CLEARING;
            goto out;
        }
        cli_print_json(resp);
        status = cli_exit_status_json(json_object_get(resp, "result"));
        json_decref(resp);
        goto out;
    }
    struct exec_state es = {0};
    int st = client_stream("POST", path, req, on_line, &es, &err);
    if (st != 200 || (!es.error && !es.final)) {
        /* The stream ended before the result: the daemon went away, or the connection broke.
         * The command may run on (its result is kept for the record); say how to fetch it. */
        if (st != 200)
            cli_error(&err);
        else
            fprintf(stderr, "clearing: the daemon closed the stream before the result\n");
        if (es.exec_id[0])
            fprintf(stderr,
                    "clearing: exec %s started; once the daemon is back, fetch its record "
                    "with: clearing --host %s inspect %s %s\n",
                    es.exec_id, client_socket(), id, es.exec_id);
        status = CLI_EXIT_CLEARING;
    } else if (es.error) {
        json_t *e = json_object_get(es.error, "error");
        fprintf(stderr, "clearing: %s: %s\n", json_string_value(json_object_get(e, "code")),
                json_string_value(json_object_get(e, "message")));
        status = CLI_EXIT_CLEARING;
    } else {
        json_t *r = json_object_get(es.final, "result");
        status = cli_exit_status_json(r);
        const char *s = json_string_value(json_object_get(r, "status"));
        if (s && strcmp(s, "exited") != 0) {
            const char *m = json_string_value(json_object_get(r, "message"));
            fprintf(stderr, "clearing: command %s%s%s\n", s, m ? ": " : "", m ? m : "");
        }
        if (json_is_true(json_object_get(r, "stdout_truncated")) ||
            json_is_true(json_object_get(r, "stderr_truncated")))
            fprintf(stderr, "clearing: output truncated\n");
    }
    json_decref(es.final);
    json_decref(es.error);
out:
    json_decref(req);
    json_decref(env);
    return status;
}
