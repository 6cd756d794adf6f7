/* clearing: the command line. A table of subcommands, each a small file that parses its options
 * and calls the library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct command {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
};

static const struct command commands[] = {
    {"run", cmd_run, "run one command in a new sandbox, then destroy it (no daemon needed)"},
    {"plan", cmd_plan, "run an agent's plan: branch, steps, gauntlet, commit with the verdict"},
    {"gauntlet", cmd_gauntlet, "run the validation gauntlet on a project in a fresh sandbox"},
    {"create", cmd_create, "create a sandbox in the daemon; prints its id last"},
    {"exec", cmd_exec, "run a command in a daemon's sandbox, streaming its output"},
    {"code", cmd_code, "run Python in a sandbox's code session (a Jupyter kernel; state kept)"},
    {"inspect", cmd_inspect, "show a daemon's sandbox"},
    {"commit", cmd_commit, "commit a sandbox's workspace to its branch"},
    {"diff", cmd_diff, "show a sandbox's changes against its base commit"},
    {"cp", cmd_cp, "copy files into or out of a daemon's sandbox"},
    {"ps", cmd_ps, "list a sandbox's background processes"},
    {"logs", cmd_logs, "print (-f: follow) a background process's output"},
    {"extend", cmd_extend, "extend a daemon's sandbox's lifetime"},
    {"doctor", cmd_doctor, "check that this host can run sandboxes, and say how to fix it"},
    {"ls", cmd_ls, "list the daemon's sandboxes (--engine: every sandbox the engine has)"},
    {"rm", cmd_rm, "destroy sandboxes (through the daemon; --engine: directly)"},
    {"serve", cmd_serve, "run the daemon: REST API, stateful sandboxes, reaper"},
    {"audit", cmd_audit, "verify the audit log's hash chain, or show its records"},
    {"verify", cmd_verify, "check a commit's signed verdict against the verdict key"},
    {"gc", cmd_gc, "remove expired sandboxes, broken containers and orphaned workspaces"},
    {"mcp", cmd_mcp, "an MCP server on stdio for agent hosts: tools that drive sandboxes"},
    {"version", cmd_version, "the version, commit, agent, runsc and engine (--json)"},
    {"snapshot", cmd_snapshot, "snapshot a daemon's running sandbox; prints the snapshot's id"},
    {"fork", cmd_fork, "start a new sandbox from a snapshot; prints its id"},
    {"restore", cmd_restore, "take a daemon's sandbox back to one of its snapshots, in place"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: clearing [GLOBAL OPTIONS] COMMAND [OPTIONS]\n\n"
               "Runs untrusted commands in hardened gVisor sandboxes.\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nGlobal options:\n"
               "  --host ADDR         the daemon's socket (unix:///path; default $CLEARING_HOST\n"
               "                      or /run/clearing/clearing.sock)\n"
               "  --docker-host ADDR  Docker engine socket (unix:///path; default\n"
               "                      $CLEARING_DOCKER_HOST or /var/run/docker.sock)\n"
               "  --state-dir DIR     where workspaces live (default $CLEARING_STATE_DIR or\n"
               "                      /var/lib/clearing)\n"
               "  --audit-log FILE    the audit log (default $CLEARING_AUDIT_LOG or\n"
               "                      <state dir>/audit.log)\n"
               "  --log-level LEVEL   debug, info, warn (default) or error; logs are JSON lines\n"
               "                      on stderr ($CLEARING_LOG_LEVEL)\n"
               "  --version [--json]  the version, commit, agent, runsc and engine\n\n"
               "Run 'clearing COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("CLEARING_LOG_LEVEL");
    if (lvl && clr_log_level_parse(lvl) >= 0)
        clr_log_set_level((clr_log_level)clr_log_level_parse(lvl));
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0)
            return cmd_version(argc - i, argv + i); /* its own options follow: --json */
        const char *names[] = {"--docker-host", "--state-dir", "--log-level", "--host",
                               "--audit-log"};
        int which = -1;
        for (int k = 0; k < 5; k++) {
            size_t n = strlen(names[k]);
            if (strncmp(a, names[k], n) == 0 && (a[n] == '=' || a[n] == '\0')) {
                which = k;
                if (a[n] == '=')
                    val = a + n + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                break;
            }
        }
        if (which < 0 || !val) {
            fprintf(stderr, "clearing: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
        if (which == 0)
            cli_global.docker_host = val;
        else if (which == 1)
            cli_global.state_dir = val;
        else if (which == 3)
            cli_global.host = val;
        else if (which == 4)
            cli_global.audit_log = val;
        else {
            int l = clr_log_level_parse(val);
            if (l < 0) {
                fprintf(stderr, "clearing: log level '%s' is not debug, info, warn or error\n",
                        val);
                return CLI_EXIT_USAGE;
            }
            clr_log_set_level((clr_log_level)l);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
        if (strcmp(argv[i], commands[k].name) == 0)
            return commands[k].fn(argc - i, argv + i);
    }
    fprintf(stderr, "clearing: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
