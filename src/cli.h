/* Shared pieces of the clearing command line: cli.c (errors, exit statuses, output, the engine,
 * small files), cli_audit.c (the audit log), cli_limits.c (limit options). They sit below the
 * subcommands (cmd_*.c) and call none of them; clearing.c, the entry point, is above all. */
#ifndef CLR_CLI_H
#define CLR_CLI_H

#include <getopt.h>

#include "clearing/cleanup.h"
#include "clearing/clearing.h"

/* Exit statuses of the command line (documented in docs/OPERATIONS.md). One status per class
 * of error, whatever the command: cli_failure_status() picks it from the error's code. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,      /* refused: not found, conflict, invalid, denied, over a limit */
    CLI_EXIT_USAGE = 2,        /* bad options or arguments */
    CLI_EXIT_SANDBOX = 122,    /* run: the sandbox died or its agent failed */
    CLI_EXIT_OOM = 123,        /* run: the command ran out of memory */
    CLI_EXIT_TIMEOUT = 124,    /* run: the command timed out (as timeout(1)) */
    /* clearing could not do it: the daemon or the engine unreachable or gone mid-request, the
     * audit log unwritable, an internal failure; for run and exec also any refusal (1 is the
     * command's own status there) */
    CLI_EXIT_CLEARING = 125,
    CLI_EXIT_NOSTART = 126,    /* run: the command could not be started */
};

struct cli_global {
    const char *host; /* the daemon's socket */
    const char *docker_host;
    const char *state_dir;
    const char *audit_log;
};

/* The audit log's path: --audit-log, $CLEARING_AUDIT_LOG, or <state dir>/audit.log. */
const char *cli_audit_path(void);
/* Opens the audit log for this CLI process and fills actor ("cli uid=0 user=root"). */
struct clr_audit;
int cli_audit_open(struct clr_audit **out, char *actor, size_t len, clr_error *err);

extern struct cli_global cli_global;

/* Prints "clearing: <code>: <message>" on stderr. */
void cli_error(const clr_error *err);
/* The exit status of a management command that failed with err: CLI_EXIT_FAILURE when the
 * request was refused (its own fault), CLI_EXIT_CLEARING when clearing could not do it. */
int cli_failure_status(const clr_error *err);
void cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_open_engine(clr_engine **eng, clr_error *err);
/* Prints a JSON value on stdout, indented, with a newline. */
void cli_print_json(json_t *j);

/* Limit options (--cpus, --memory, ...), shared by commands that create sandboxes. */
enum {
    CLI_OPT_CPUS = 1000,
    CLI_OPT_MEMORY,
    CLI_OPT_PIDS,
    CLI_OPT_LIFETIME,
    CLI_OPT_TMP,
    CLI_OPT_WS_SIZE,
    CLI_OPT_WS_INODES,
    CLI_OPT_NOFILE,
    CLI_OPT_FSIZE,
    CLI_OPT_FIRST_FREE,
};
extern const struct option cli_limit_options[];
extern const char cli_limit_help[];
/* Returns 0 if opt was a limit option and parsed, 1 if it is not one, -1 with err if invalid. */
int cli_parse_limit_option(clr_limits *l, int opt, const char *arg, clr_error *err);
/* Builds getopt's table: the command's own options followed by the limit options. */
struct option *cli_options_with_limits(const struct option *own);

typedef int (*cli_cmd_fn)(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_extend(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_gauntlet(int argc, char **argv);
/* Reads a regular file of at most max bytes; *out (NUL-terminated) is the caller's to free. */
int cli_read_small_file(const char *path, size_t max, char **out, size_t *len, clr_error *err);
int cmd_logs(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_mcp(int argc, char **argv);
int cmd_code(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_fork(int argc, char **argv);
int cmd_restore(int argc, char **argv);
/* Exit status for an exec result record (the same mapping as `clearing run`). */
int cli_exit_status_json(json_t *result);

#endif
