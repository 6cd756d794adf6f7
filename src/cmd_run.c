/* clearing run: create a sandbox, run one command, destroy the sandbox. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "clearing/audit.h"
#include <pwd.h>
#include <sys/stat.h>

enum {
    OPT_IMAGE = CLI_OPT_FIRST_FREE,
    OPT_TIMEOUT,
    OPT_WORKSPACE,
    OPT_ENV,
    OPT_CWD,
    OPT_STDIN_FILE,
    OPT_STDOUT_CAP,
    OPT_STDERR_CAP,
    OPT_SHELL,
    OPT_INSECURE_RUNTIME,
    OPT_JSON,
    OPT_EGRESS,
    OPT_HELP,
};

static const struct option own_options[] = {
    {"image", required_argument, NULL, OPT_IMAGE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"workspace", required_argument, NULL, OPT_WORKSPACE},
    {"env", required_argument, NULL, OPT_ENV},
    {"cwd", required_argument, NULL, OPT_CWD},
    {"stdin-file", required_argument, NULL, OPT_STDIN_FILE},
    {"stdout-cap", required_argument, NULL, OPT_STDOUT_CAP},
    {"stderr-cap", required_argument, NULL, OPT_STDERR_CAP},
    {"shell", required_argument, NULL, OPT_SHELL},
    {"insecure-runtime", required_argument, NULL, OPT_INSECURE_RUNTIME},
    {"json", no_argument, NULL, OPT_JSON},
    {"egress-allow", required_argument, NULL, OPT_EGRESS},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void help(void)
{
    printf("Usage: clearing run [OPTIONS] -- COMMAND [ARG...]\n"
           "       clearing run [OPTIONS] --shell 'SHELL STRING'\n\n"
           "Creates a sandbox, runs one command in it as the unprivileged sandbox user, and\n"
           "destroys the sandbox. The command's stdout and stderr stream to this process's;\n"
           "the exit status mirrors the command's: its exit code, 128+N for signal N,\n"
           "124 timed out, 123 out of memory, 126 could not start, 122 the sandbox failed,\n"
           "125 clearing itself failed.\n\n"
           "Options:\n"
           "  --image IMAGE         image (default " CLR_DEFAULT_IMAGE ")\n"
           "  --timeout DURATION    the command's timeout (default 60s)\n"
           "  --workspace DIR       copy DIR into /workspace first (nothing is copied back)\n"
           "  --env KEY=VALUE       environment for the command (repeatable)\n"
           "  --cwd DIR             working directory inside the sandbox (default /workspace)\n"
           "  --stdin-file FILE     bytes for the command's stdin ('-': this process's stdin)\n"
           "  --egress-allow HOST[:PORT]  let the command reach HOST (or *.SUFFIX, or an IP\n"
           "                        address) through the sandbox's proxy; without a port:\n"
           "                        80 and 443 (repeatable; default: nothing)\n"
           "  --stdout-cap SIZE     stdout kept, the rest is counted and dropped (default 1m)\n"
           "  --stderr-cap SIZE     likewise for stderr (default 1m)\n"
           "  --shell STRING        run STRING with /bin/sh -c instead of COMMAND\n"
           "  --insecure-runtime runc  run WITHOUT gVisor: weakens isolation; logged and\n"
           "                        recorded on the sandbox. For hosts where gVisor cannot run.\n"
           "  --json                print the full result record as JSON instead of streaming\n"
           "%s",
           cli_limit_help);
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void stream_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len)
{
    (void)ctx;
    write_all(stream == CLR_STDOUT ? STDOUT_FILENO : STDERR_FILENO, data, len);
}

/* Reads a whole file (or stdin) into memory, bounded. */
static int slurp(const char *path, uint8_t **out, size_t *len, clr_error *err)
{
    const size_t max = 64 * 1024 * 1024;
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INVALID, errno, "--stdin-file %s: %s", path,
                             strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0;
    for (;;) {
        uint8_t *b = realloc(buf, n + 65536);
        if (!b) {
            free(buf);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
        buf = b;
        ssize_t r = read(fd, buf + n, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            return clr_error_set(err, CLR_E_INVALID, errno, "reading %s: %s", path,
                                 strerror(errno));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            free(buf);
            return clr_error_set(err, CLR_E_LIMIT, EFBIG, "--stdin-file %s is larger than 64 MiB",
                                 path);
        }
    }
    if (fd != STDIN_FILENO)
        close(fd);
    *out = buf;
    *len = n;
    return 0;
}

static int exit_status(const clr_exec_result *r)
{
    switch (r->status) {
    case CLR_EXEC_EXITED: return r->exit_code;
    case CLR_EXEC_SIGNALED: return 128 + r->signal;
    case CLR_EXEC_TIMED_OUT: return CLI_EXIT_TIMEOUT;
    case CLR_EXEC_OOM: return CLI_EXIT_OOM;
    case CLR_EXEC_START_FAILED: return CLI_EXIT_NOSTART;
    case CLR_EXEC_SANDBOX_FAILED: return CLI_EXIT_SANDBOX;
    default: return CLI_EXIT_SANDBOX;
    }
}

static volatile int interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

#define RUN_GO_ON (-1) /* a step's answer when the command should go on */

/* What the command line asked for. */
struct run_args {
    clr_sandbox_options so;
    clr_exec_options eo;
    bool json;
    const char *stdin_file;
    const char **env; /* eo.env: the --env values, then the proxy's variables */
    size_t nenv;
    const char **allow; /* the --egress-allow values */
    size_t nallow;
    clr_egress_policy *egress; /* parsed from allow; NULL without --egress-allow */
    uint8_t *in;               /* eo.stdin_data: --stdin-file's bytes */
};

static void run_args_clear(struct run_args *a)
{
    free(a->env);
    free(a->allow);
    clr_egress_policy_free(a->egress);
    free(a->in);
}

/* What the run holds once it has started: freed in this order on every return. */
struct run_ctx {
    clr_audit *audit;
    char actor[160];
    clr_engine *eng;
    clr_sandbox *sb;
    const char *sid; /* the sandbox's id (points into sb) */
};

static void run_ctx_clear(struct run_ctx *r)
{
    clr_sandbox_free(r->sb);
    clr_engine_free(r->eng);
    clr_audit_close(r->audit);
}

/* A number option (timeout, caps) into a: RUN_GO_ON, or the exit status. */
static int run_number_option(struct run_args *a, int c, const char *arg)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t v = 0;
    if (c == OPT_TIMEOUT) {
        if (clr_parse_duration_ms(&v, arg, &err) < 0 || v == 0 || v > UINT32_MAX) {
            cli_usage_error("run", "--timeout: %s",
                            err.message[0] ? err.message : "must be between 1ms and 24h");
            return CLI_EXIT_USAGE;
        }
        a->eo.limits.timeout_ms = (uint32_t)v;
        return RUN_GO_ON;
    }
    if (clr_parse_size(&v, arg, &err) < 0) {
        cli_usage_error("run", "--%s: %s", c == OPT_STDOUT_CAP ? "stdout-cap" : "stderr-cap",
                        err.message);
        return CLI_EXIT_USAGE;
    }
    if (c == OPT_STDOUT_CAP)
        a->eo.limits.stdout_cap = v;
    else
        a->eo.limits.stderr_cap = v;
    return RUN_GO_ON;
}

/* One of run's own options into a: RUN_GO_ON, or the exit status. */
static int run_option(struct run_args *a, int c, char *arg)
{
    switch (c) {
    case OPT_IMAGE: a->so.image = arg; break;
    case OPT_WORKSPACE: a->so.workspace_from = arg; break;
    case OPT_CWD: a->eo.cwd = arg; break;
    case OPT_SHELL: a->eo.shell = arg; break;
    case OPT_STDIN_FILE: a->stdin_file = arg; break;
    case OPT_INSECURE_RUNTIME: a->so.insecure_runtime = arg; break;
    case OPT_JSON: a->json = true; break;
    case OPT_ENV:
        if (!strchr(arg, '=') || arg[0] == '=') {
            cli_usage_error("run", "--env '%s' is not KEY=VALUE", arg);
            return CLI_EXIT_USAGE;
        }
        a->env[a->nenv++] = arg;
        break;
    case OPT_TIMEOUT:
    case OPT_STDOUT_CAP:
    case OPT_STDERR_CAP: return run_number_option(a, c, arg);
    case OPT_EGRESS: a->allow[a->nallow++] = arg; break;
    case OPT_HELP: help(); return 0;
    default: cli_usage_error("run", "unknown option"); return CLI_EXIT_USAGE;
    }
    return RUN_GO_ON;
}

/* Parses argv into a: RUN_GO_ON, or the exit status. */
static int run_parse(struct run_args *a, int argc, char **argv)
{
    clr_error err = CLR_ERROR_INIT;
    _cleanup_free_ struct option *opts = cli_options_with_limits(own_options);
    if (!opts)
        return CLI_EXIT_CLEARING;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        int rc = cli_parse_limit_option(&a->so.limits, c, optarg, &err);
        if (rc < 0) {
            cli_usage_error("run", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0)
            continue;
        rc = run_option(a, c, optarg);
        if (rc != RUN_GO_ON)
            return rc;
    }
    char **cmd = argv + optind;
    if (!a->eo.shell && !*cmd) {
        cli_usage_error("run", "no command given: clearing run [OPTIONS] -- COMMAND [ARG...]");
        return CLI_EXIT_USAGE;
    }
    if (a->eo.shell && *cmd) {
        cli_usage_error("run", "give either --shell or a COMMAND, not both");
        return CLI_EXIT_USAGE;
    }
    if (clr_limits_validate(&a->so.limits, &err) < 0 ||
        clr_exec_limits_validate(&a->eo.limits, &err) < 0) {
        cli_usage_error("run", "%s", err.message);
        return CLI_EXIT_USAGE;
    }
    if (!a->eo.shell)
        a->eo.argv = (const char *const *)cmd;
    return RUN_GO_ON;
}

/* The egress policy, the proxy's environment, stdin's bytes and where output goes: RUN_GO_ON,
 * or the exit status. */
static int run_prepare(struct run_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    if (a->nallow) {
        json_t *rules = json_array();
        for (size_t i = 0; i < a->nallow; i++)
            json_array_append_new(rules, json_string(a->allow[i]));
        json_auto_t *jp = json_pack("{s:o}", "allow", rules);
        if (clr_egress_policy_parse(&a->egress, jp, &err) < 0) {
            cli_usage_error("run", "--egress-allow: %s", err.message);
            return CLI_EXIT_USAGE;
        }
        for (size_t i = 0; i < CLR_EGRESS_PROXY_ENV_N; i++)
            a->env[a->nenv++] = clr_egress_proxy_env[i];
    }
    a->eo.env = a->env;
    if (a->stdin_file) {
        if (slurp(a->stdin_file, &a->in, &a->eo.stdin_len, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_CLEARING;
        }
        a->eo.stdin_data = a->in;
    }
    if (!a->json)
        a->eo.on_output = stream_output;
    a->eo.cancel = &interrupted;
    return RUN_GO_ON;
}

/* The audit log (no code runs unaudited: it must be writable before anything is created), the
 * engine, the signals, then the sandbox: RUN_GO_ON, or the exit status. */
static int run_create(struct run_ctx *r, const struct run_args *a)
{
    clr_error err = CLR_ERROR_INIT;
    if (cli_audit_open(&r->audit, r->actor, sizeof(r->actor), &err) < 0 ||
        cli_open_engine(&r->eng, &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    /* Interrupting the CLI must not leak a sandbox: the signal ends the exec stream (the agent
     * then kills the command) and the sandbox is destroyed below. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (clr_sandbox_create(&r->sb, r->eng, &a->so, &err) < 0) {
        json_auto_t *d = json_pack("{s:s, s:s}", "error", err.message, "code",
                                   clr_error_code_name(err.code));
        clr_error aerr = CLR_ERROR_INIT;
        if (clr_audit_append(r->audit, r->actor, NULL, "sandbox.create", "refused", d, &aerr) < 0)
            cli_error(&aerr);
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    r->sid = clr_sandbox_get_info(r->sb)->id;
    return RUN_GO_ON;
}

/* Audits the sandbox and the command's start, then runs it (over the live channel with its
 * proxy when there is egress): 0 with *res filled, -1 (said on stderr) when it did not run. */
static int run_command(struct run_ctx *r, struct run_args *a, clr_exec_result *res)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *d = clr_audit_sandbox_details(clr_sandbox_get_info(r->sb));
    int arc = clr_audit_append(r->audit, r->actor, r->sid, "sandbox.create", "ok", d, &err);
    json_decref(d);
    if (arc == 0) {
        d = clr_audit_exec_request(&a->eo);
        arc = clr_audit_append(r->audit, r->actor, r->sid, "exec.start", "ok", d, &err);
        json_decref(d);
    }
    /* With egress, the command runs over the live channel, which also carries its proxy's
     * connections; every decision goes to this run's audit log. */
    clr_channel *ch = NULL;
    clr_egress *eg = NULL;
    if (arc == 0 && a->egress) {
        arc = clr_egress_channel_open(&ch, &eg, a->egress, r->audit, r->eng, r->sb, &err);
        a->eo.channel = ch;
    }
    int rc = arc < 0 ? -1 : clr_exec_run(res, r->eng, r->sb, &a->eo, &err);
    clr_channel_close(ch);
    clr_egress_free(eg);
    if (rc < 0) {
        cli_error(&err); /* refused: the command does not run unaudited, or without egress */
        return -1;
    }
    d = clr_audit_exec_result(res);
    clr_error aerr = CLR_ERROR_INIT;
    if (clr_audit_append(r->audit, r->actor, r->sid, "exec", clr_exec_status_name(res->status),
                         d, &aerr) < 0)
        cli_error(&aerr);
    json_decref(d);
    return 0;
}

/* Prints the result (the record with --json; else what went wrong, on stderr) and returns the
 * exit status that mirrors the command's. */
static int run_print(const struct run_ctx *r, const struct run_args *a,
                     const clr_exec_result *res)
{
    if (a->json) {
        json_auto_t *j = clr_exec_result_to_json(res);
        json_object_set_new(j, "sandbox_id", json_string(r->sid));
        json_object_set_new(j, "runtime", json_string(clr_sandbox_get_info(r->sb)->runtime));
        cli_print_json(j);
    } else if (res->status != CLR_EXEC_EXITED) {
        fprintf(stderr, "clearing: command %s%s%s\n", clr_exec_status_name(res->status),
                res->message[0] ? ": " : "", res->message);
    }
    if (!a->json && (res->stdout_truncated || res->stderr_truncated))
        fprintf(stderr, "clearing: output truncated (stdout %llu bytes, stderr %llu bytes "
                        "written by the command)\n",
                (unsigned long long)res->stdout_bytes, (unsigned long long)res->stderr_bytes);
    return exit_status(res);
}

/* Destroys the sandbox and audits it; status, or CLI_EXIT_CLEARING when it was 0 and either
 * failed. */
static int run_destroy(struct run_ctx *r, const struct run_args *a, int status)
{
    clr_error derr = CLR_ERROR_INIT;
    int drc = clr_sandbox_destroy(r->eng, r->sid, "run-finished", a->so.state_dir, &derr);
    if (drc < 0) {
        cli_error(&derr);
        if (status == 0)
            status = CLI_EXIT_CLEARING;
    }
    json_auto_t *d = json_pack("{s:s}", "reason", "run-finished");
    clr_error aerr = CLR_ERROR_INIT;
    if (clr_audit_append(r->audit, r->actor, r->sid, "sandbox.destroy",
                         drc == 0 ? "ok" : "error", d, &aerr) < 0) {
        cli_error(&aerr);
        if (status == 0)
            status = CLI_EXIT_CLEARING;
    }
    return status;
}

int cmd_run(int argc, char **argv)
{
    struct run_args a __attribute__((cleanup(run_args_clear))) = {
        .so = CLR_SANDBOX_OPTIONS_INIT,
        .eo = CLR_EXEC_OPTIONS_INIT,
        .env = calloc((size_t)argc + 8, sizeof(char *)),
        .allow = calloc((size_t)argc + 1, sizeof(char *)),
    };
    if (!a.env || !a.allow)
        return CLI_EXIT_CLEARING;
    a.so.state_dir = cli_global.state_dir;
    int rc = run_parse(&a, argc, argv);
    if (rc == RUN_GO_ON)
        rc = run_prepare(&a);
    if (rc != RUN_GO_ON)
        return rc;

    struct run_ctx r __attribute__((cleanup(run_ctx_clear))) = {0};
    rc = run_create(&r, &a);
    if (rc != RUN_GO_ON)
        return rc;
    clr_exec_result res;
    memset(&res, 0, sizeof(res));
    int status = CLI_EXIT_CLEARING;
    if (run_command(&r, &a, &res) == 0) {
        status = run_print(&r, &a, &res);
        clr_exec_result_clear(&res);
    }
    return run_destroy(&r, &a, status);
}
