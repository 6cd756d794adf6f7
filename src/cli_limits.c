/* Sandbox limit options shared by every command that creates a sandbox. */
#include <string.h>

#include "cli.h"

const struct option cli_limit_options[] = {
    {"cpus", required_argument, NULL, CLI_OPT_CPUS},
    {"memory", required_argument, NULL, CLI_OPT_MEMORY},
    {"pids", required_argument, NULL, CLI_OPT_PIDS},
    {"lifetime", required_argument, NULL, CLI_OPT_LIFETIME},
    {"tmp-size", required_argument, NULL, CLI_OPT_TMP},
    {"workspace-size", required_argument, NULL, CLI_OPT_WS_SIZE},
    {"workspace-inodes", required_argument, NULL, CLI_OPT_WS_INODES},
    {"nofile", required_argument, NULL, CLI_OPT_NOFILE},
    {"file-size", required_argument, NULL, CLI_OPT_FSIZE},
    {NULL, 0, NULL, 0},
};

const char cli_limit_help[] =
    "  --cpus N              CPU quota in cores, 0.1..4 (default 1)\n"
    "  --memory SIZE         memory limit, no extra swap, 32m..16g (default 512m)\n"
    "  --pids N              processes the command may have, 8..4096 (default 256)\n"
    "  --lifetime DURATION   hard lifetime of the sandbox, 10s..1h (default 10m)\n"
    "  --tmp-size SIZE       size of /tmp (default 64m)\n"
    "  --workspace-size SIZE size of /workspace (default 1g)\n"
    "  --workspace-inodes N  files in /workspace (default 100000)\n"
    "  --nofile N            open files per process (default 1024)\n"
    "  --file-size SIZE      largest file a command may write (default 1g)\n";

int cli_parse_limit_option(clr_limits *l, int opt, const char *arg, clr_error *err)
{
    uint64_t v = 0;
    int rc = 0;
    const char *name = "";
    for (const struct option *o = cli_limit_options; o->name; o++) {
        if (o->val == opt)
            name = o->name;
    }
    switch (opt) {
    case CLI_OPT_CPUS:
        rc = clr_parse_cpus(&l->cpu_millis, arg, err);
        break;
    case CLI_OPT_MEMORY:
        rc = clr_parse_size(&l->memory_bytes, arg, err);
        break;
    case CLI_OPT_TMP:
        rc = clr_parse_size(&l->tmp_bytes, arg, err);
        break;
    case CLI_OPT_WS_SIZE:
        rc = clr_parse_size(&l->workspace_bytes, arg, err);
        break;
    case CLI_OPT_FSIZE:
        rc = clr_parse_size(&l->fsize_bytes, arg, err);
        break;
    case CLI_OPT_LIFETIME:
        rc = clr_parse_duration_ms(&v, arg, err);
        if (rc == 0 && v % 1000)
            rc = clr_error_set(err, CLR_E_INVALID, 0, "'%s': the lifetime is in whole seconds",
                               arg);
        if (rc == 0 && v / 1000 > UINT32_MAX)
            rc = clr_error_set(err, CLR_E_INVALID, 0, "'%s' is too long", arg);
        l->lifetime_s = (uint32_t)(v / 1000);
        break;
    case CLI_OPT_PIDS:
    case CLI_OPT_NOFILE:
    case CLI_OPT_WS_INODES:
        rc = clr_parse_uint(&v, arg, err);
        if (rc == 0 && v > UINT32_MAX && opt != CLI_OPT_WS_INODES)
            rc = clr_error_set(err, CLR_E_INVALID, 0, "'%s' is too large", arg);
        if (opt == CLI_OPT_PIDS)
            l->pids = (uint32_t)v;
        else if (opt == CLI_OPT_NOFILE)
            l->nofile = (uint32_t)v;
        else
            l->workspace_inodes = v;
        break;
    default:
        return 1; /* not a limit option */
    }
    if (rc < 0)
        return clr_error_prefix(err, "--%s", name);
    return 0;
}

struct option *cli_options_with_limits(const struct option *own)
{
    size_t a = 0, b = 0;
    while (own[a].name)
        a++;
    while (cli_limit_options[b].name)
        b++;
    struct option *v = calloc(a + b + 1, sizeof(*v));
    if (!v)
        return NULL;
    memcpy(v, own, a * sizeof(*v));
    memcpy(v + a, cli_limit_options, (b + 1) * sizeof(*v));
    return v;
}
