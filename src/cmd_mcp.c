/* clearing mcp: the MCP server over stdio. Newline-delimited JSON-RPC on stdin and stdout
 * (nothing else is written to stdout; logs go to stderr), one session per process: EOF on
 * stdin, SIGTERM or SIGINT ends it, and the sandboxes it created are destroyed then (but those
 * created with keep). The tools reach a daemon (--host, $CLEARING_HOST, else the default
 * socket when it answers) or, standalone, a service and server of this process on a private
 * unix socket (like `clearing run`, no daemon needed). */
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "clearing/cleanup_json.h"
#include "cli.h"
#include "client.h"
#include "mcp_client.h"
#include "server.h"

/* A message longer than this is answered with a parse error and skipped. */
#define MAX_LINE (64u * 1024 * 1024)

enum { OPT_HELP = CLI_OPT_FIRST_FREE, OPT_STANDALONE, OPT_REPO_ROOT };

static void help(void)
{
    printf("Usage: clearing mcp [OPTIONS]\n\n"
           "An MCP (Model Context Protocol) server on stdin and stdout, for an agent host:\n"
           "  {\"mcpServers\": {\"clearing\": {\"command\": \"clearing\", \"args\": [\"mcp\"]}}}\n"
           "Its tools create sandboxes, run commands, read and write files, diff and commit\n"
           "(docs/MCP.md). The session ends at EOF on stdin, SIGTERM or SIGINT; the sandboxes\n"
           "it created are destroyed then, except those created with keep: true.\n\n"
           "Where the sandboxes run:\n"
           "  --host / $CLEARING_HOST given: that daemon (an error if it does not answer)\n"
           "  otherwise the daemon at " CLIENT_DEFAULT_SOCKET " when it answers,\n"
           "  else standalone: a private service in this process, as 'clearing run' does\n\n"
           "Options:\n"
           "  --standalone        always run the sandboxes in this process, even if a daemon\n"
           "                      answers (its state is a private temporary directory)\n"
           "  --repo-root DIR     standalone: repositories may come from under DIR (repeatable)\n"
           "Default limits of the sandboxes (standalone):\n%s",
           cli_limit_help);
}

struct stdio_out {
    FILE *f;
};

static void emit_line(void *ctx, json_t *msg, const json_t *related_id)
{
    (void)related_id;
    struct stdio_out *o = ctx;
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return;
    fputs(text, o->f);
    fputc('\n', o->f);
    fflush(o->f);
    free(text);
}

/* Handles every complete line of buf[0..*len), keeping an unended rest. */
static void handle_lines(struct mcp_session *s, char *buf, size_t *len, bool *skipping)
{
    size_t start = 0;
    char *nl;
    while ((nl = memchr(buf + start, '\n', *len - start))) {
        size_t n = (size_t)(nl - buf) - start;
        if (*skipping) {
            *skipping = false;
        } else if (n > 0 && !(n == 1 && buf[start] == '\r')) {
            json_error_t jerr;
            json_t *msg = json_loadb(buf + start, n, 0, &jerr);
            if (!msg) {
                char why[256];
                snprintf(why, sizeof(why), "not JSON: %s", jerr.text);
                mcp_session_parse_error(s, why);
            } else {
                mcp_session_handle(s, msg);
                json_decref(msg);
            }
        }
        start += n + 1;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
}

/* Reads stdin until EOF or a stop signal (sfd), handing each line to s. */
static int serve_stdio(struct mcp_session *s, int sfd)
{
    size_t cap = 65536, len = 0;
    _cleanup_free_ char *buf = malloc(cap);
    bool skipping = false;
    if (!buf)
        return CLI_EXIT_CLEARING;
    for (;;) {
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return CLI_EXIT_CLEARING;
        }
        if (p[1].revents)
            return 0;
        if (len == cap) {
            if (cap >= MAX_LINE) {
                mcp_session_parse_error(s, "a message over 64 MiB: skipped");
                len = 0;
                skipping = true;
            } else {
                char *b = realloc(buf, cap * 2);
                if (!b)
                    return CLI_EXIT_CLEARING;
                buf = b;
                cap *= 2;
            }
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        len += (size_t)n;
        handle_lines(s, buf, &len, &skipping);
    }
}

/* The session over stdio with be: the exit status. */
static int run_session(const struct mcp_backend *be, int sfd)
{
    struct stdio_out out = {stdout};
    struct mcp_session *s = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (mcp_session_new(&s, be, emit_line, &out, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    int rc = serve_stdio(s, sfd);
    clr_log(CLR_LOG_INFO, "mcp.session_end", NULL);
    mcp_session_end(s);
    return rc;
}

struct standalone {
    clr_limits limits;
    bool limits_given;
    const char *roots[33];
    int nroots;
};

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    if (remove(p) < 0)
        clr_log(CLR_LOG_WARN, "mcp.cleanup", "path", p, "error", strerror(errno), NULL);
    return 0;
}

/* Standalone, every sandbox ends with the session (the service that could keep one stops):
 * the kept ones too. */
static void destroy_all(const struct mcp_backend *be)
{
    clr_error err = CLR_ERROR_INIT;
    _cleanup_json_ json_t *list = NULL;
    if (be->call(be->ctx, "GET", "/v1/sandboxes?state=running", NULL, &list, NULL, &err) != 200)
        return;
    size_t i;
    json_t *sb;
    json_array_foreach (json_object_get(list, "sandboxes"), i, sb) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/sandboxes/%s?wait=true",
                 json_string_value(json_object_get(sb, "id")));
        be->call(be->ctx, "DELETE", path, NULL, NULL, NULL, &err);
    }
}

/* The service and the server in this process, on a socket in a private directory (0700),
 * for the session's time: the exit status. */
static int run_standalone(struct standalone *o, int sfd)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096], sock[4200], state[4200];
    snprintf(dir, sizeof(dir), "%s/clearing-mcp-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "clearing: mcp: cannot create a private directory in %s: %s (set TMPDIR)\n",
                tmp && *tmp ? tmp : "/tmp", strerror(errno));
        return CLI_EXIT_CLEARING;
    }
    snprintf(sock, sizeof(sock), "%s/api.sock", dir);
    snprintf(state, sizeof(state), "%s/state", dir);
    clr_service_config sc = CLR_SERVICE_CONFIG_INIT;
    sc.state_dir = state;
    sc.docker_host = cli_global.docker_host;
    sc.limits = o->limits;
    o->roots[o->nroots] = NULL;
    sc.repo_roots = o->roots;
    if (cli_global.audit_log || getenv("CLEARING_AUDIT_LOG"))
        sc.audit_path = cli_audit_path();
    struct server_options so = {.socket_path = sock,
                                .socket_mode = 0600,
                                .max_connections = 64,
                                .max_upload_total = 2ull << 30,
                                .max_download_total = 2ull << 30};
    clr_error err = CLR_ERROR_INIT;
    clr_service *svc = NULL;
    struct server *srv = NULL;
    int rc = CLI_EXIT_CLEARING;
    if (mkdir(state, 0700) < 0)
        clr_error_set(&err, CLR_E_INTERNAL, errno, "creating %s: %s", state, strerror(errno));
    else if (clr_service_start(&svc, &sc, &err) == 0 && server_start(&srv, svc, &so, &err) < 0) {
        clr_service_stop(svc);
        svc = NULL;
    }
    if (srv) {
        clr_log(CLR_LOG_INFO, "mcp.standalone", "socket", sock, NULL);
        struct mcp_backend be;
        if (mcp_client_backend(&be, sock, NULL, NULL, &err) == 0) {
            rc = run_session(&be, sfd);
            destroy_all(&be);
            mcp_client_free(&be);
        } else {
            cli_error(&err);
            rc = cli_failure_status(&err);
        }
        server_stop(srv);
        clr_service_stop(svc);
    } else {
        cli_error(&err);
        rc = cli_failure_status(&err);
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* Options into o; *standalone for --standalone: -1 to go on, else the exit status. */
static int parse(int argc, char **argv, struct standalone *o, bool *standalone)
{
    static const struct option own[] = {
        {"help", no_argument, NULL, OPT_HELP},
        {"standalone", no_argument, NULL, OPT_STANDALONE},
        {"repo-root", required_argument, NULL, OPT_REPO_ROOT},
        {NULL, 0, NULL, 0},
    };
    _cleanup_free_ struct option *opts = cli_options_with_limits(own);
    if (!opts)
        return CLI_EXIT_FAILURE;
    clr_error err = CLR_ERROR_INIT;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        int rc = cli_parse_limit_option(&o->limits, ch, optarg, &err);
        if (rc < 0) {
            cli_usage_error("mcp", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0) {
            o->limits_given = true;
            continue;
        }
        if (ch == OPT_HELP) {
            help();
            return 0;
        } else if (ch == OPT_STANDALONE) {
            *standalone = true;
        } else if (ch == OPT_REPO_ROOT && optarg[0] == '/' && o->nroots < 32) {
            o->roots[o->nroots++] = optarg;
        } else {
            cli_usage_error("mcp", "unknown option or bad --repo-root (an absolute directory, "
                                   "at most 32): see clearing mcp --help");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_usage_error("mcp", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    return -1;
}

int cmd_mcp(int argc, char **argv)
{
    struct standalone o = {.limits = CLR_LIMITS_INIT};
    bool standalone = false;
    int rc = parse(argc, argv, &o, &standalone);
    if (rc >= 0)
        return rc;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread: it is not thread-safe */
    signal(SIGPIPE, SIG_IGN);
    /* Blocked before any thread starts, so that only the signalfd sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    _cleanup_close_ int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "clearing: mcp: signalfd: %s\n", strerror(errno));
        return CLI_EXIT_CLEARING;
    }
    const char *given = cli_global.host ? cli_global.host : getenv("CLEARING_HOST");
    clr_error err = CLR_ERROR_INIT;
    if (!standalone && given && *given && !mcp_client_answers(client_socket(), &err)) {
        fprintf(stderr,
                "clearing: mcp: no clearing daemon answers at %s (from --host or "
                "CLEARING_HOST): %s. Start it with 'clearing serve', correct the address, or "
                "run 'clearing mcp --standalone' to run sandboxes in this process\n",
                client_socket(), err.message);
        return CLI_EXIT_CLEARING;
    }
    if (!standalone && !(given && *given))
        standalone = !mcp_client_answers(CLIENT_DEFAULT_SOCKET, &err);
    if (standalone)
        return run_standalone(&o, sfd);
    if (o.limits_given)
        fprintf(stderr, "clearing: mcp: the limit options set the defaults of --standalone "
                        "only; the daemon's own defaults hold (give create_sandbox limits)\n");
    struct mcp_backend be;
    if (mcp_client_backend(&be, client_socket(), NULL, NULL, &err) < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    int status = run_session(&be, sfd);
    mcp_client_free(&be);
    return status;
}
