/* clearing doctor: checks every precondition of a working sandbox, from the engine to a probe
 * sandbox that must really run under gVisor with its limits in force, then an installed
 * daemon's layout (doctor_layout.c), and says how to fix what is wrong. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"
#include "doctor_layout.h"

static int failures;

static void report(bool ok, const char *what, const char *detail)
{
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail && *detail ? ": " : "",
           detail ? detail : "");
    if (!ok)
        failures++;
}

/* The probe prints KEY=VALUE lines; this finds one. */
static bool probe_value(const char *out, const char *key, char *val, size_t len)
{
    size_t k = strlen(key);
    for (const char *p = out; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l > k && strncmp(p, key, k) == 0 && p[k] == '=') {
            size_t n = l - k - 1 < len - 1 ? l - k - 1 : len - 1;
            memcpy(val, p + k + 1, n);
            val[n] = '\0';
            return true;
        }
        p = nl ? nl + 1 : NULL;
    }
    return false;
}

static const char probe_script[] =
    "echo kernel=$(dmesg 2>/dev/null | grep -m1 -o gVisor)\n"
    "echo uid=$(id -u)\n"
    "echo capeff=$(grep CapEff /proc/self/status | cut -f2)\n"
    "echo memtotal=$(grep MemTotal /proc/meminfo | tr -dc 0-9)\n"
    "echo netdevs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ',')\n"
    "if touch /probe 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi\n"
    "if touch /workspace/probe 2>/dev/null; then echo workspace=rw; else echo workspace=ro; fi\n";

/* The daemon's own verdict, when one listens on the socket (--host, $CLEARING_HOST or the
 * default): degraded or unavailable with its reasons (audit log unwritable, disk full, engine). */
static void daemon_health(void)
{
    const char *sock = client_socket();
    if (access(sock, F_OK) < 0 && !cli_global.host && !getenv("CLEARING_HOST"))
        return; /* no daemon here: the checks below are the whole story */
    char what[512];
    snprintf(what, sizeof(what), "daemon at %s healthy", sock);
    json_t *resp = NULL;
    clr_error err = CLR_ERROR_INIT;
    int st = client_call("GET", "/v1/health", NULL, &resp, &err);
    if (st < 0) {
        report(false, what, err.message);
        return;
    }
    const char *status = json_string_value(json_object_get(resp, "status"));
    char detail[2048];
    int n = snprintf(detail, sizeof(detail), "%s", status ? status : "no status");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(resp, "reasons"), i, r) {
        if (n > 0 && (size_t)n < sizeof(detail))
            n += snprintf(detail + n, sizeof(detail) - (size_t)n, "%s%s", i ? "; " : ": ",
                          json_string_value(r) ? json_string_value(r) : "");
    }
    report(st == 200 && status && strcmp(status, "ok") == 0, what, detail);
    json_decref(resp);
}

static void probe(clr_engine *eng)
{
    clr_error err = CLR_ERROR_INIT;
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    so.state_dir = cli_global.state_dir;
    so.limits.memory_bytes = 256 * CLR_MIB;
    clr_sandbox *sb = NULL;
    if (clr_sandbox_create(&sb, eng, &so, &err) < 0) {
        report(false, "probe sandbox starts", err.message);
        return;
    }
    report(true, "probe sandbox starts", clr_sandbox_get_info(sb)->id);
    clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
    eo.shell = probe_script;
    eo.limits.timeout_ms = 20000;
    clr_exec_result r;
    if (clr_exec_run(&r, eng, sb, &eo, &err) < 0) {
        report(false, "probe command runs", err.message);
    } else if (r.status != CLR_EXEC_EXITED || r.exit_code != 0) {
        report(false, "probe command runs", r.message[0] ? r.message : "non-zero exit");
    } else {
        const char *out = r.out.data ? (const char *)r.out.data : "";
        char v[256];
        report(true, "probe command runs", NULL);
        bool gvisor = probe_value(out, "kernel", v, sizeof(v)) && strcmp(v, "gVisor") == 0;
        report(gvisor, "commands run under the gVisor kernel",
               gvisor ? NULL : "dmesg does not show gVisor: the runtime is not gVisor");
        report(probe_value(out, "uid", v, sizeof(v)) && strcmp(v, "1000") == 0,
               "commands run as the unprivileged sandbox user (uid 1000)", v);
        report(probe_value(out, "capeff", v, sizeof(v)) && strspn(v, "0") == strlen(v),
               "commands hold no capabilities", v);
        uint64_t mem = 0;
        if (probe_value(out, "memtotal", v, sizeof(v)))
            sscanf(v, "%" SCNu64, &mem);
        char detail[128];
        snprintf(detail, sizeof(detail), "the sandbox sees %" PRIu64 " KiB (limit %" PRIu64 " KiB)",
                 mem, so.limits.memory_bytes / 1024);
        report(mem > 0 && mem * 1024 <= so.limits.memory_bytes, "memory limit in force", detail);
        report(probe_value(out, "netdevs", v, sizeof(v)) && (strcmp(v, "lo,") == 0 || !*v),
               "no network interface but loopback", v);
        report(probe_value(out, "rootfs", v, sizeof(v)) && strcmp(v, "ro") == 0,
               "root filesystem is read-only", NULL);
        report(probe_value(out, "workspace", v, sizeof(v)) && strcmp(v, "rw") == 0,
               "/workspace is writable", NULL);
    }
    clr_exec_result_clear(&r);
    const char *id = clr_sandbox_get_info(sb)->id;
    report(clr_sandbox_destroy(eng, id, "doctor", so.state_dir, &err) == 0,
           "probe sandbox destroyed", err.code ? err.message : NULL);
    clr_sandbox_free(sb);
}

/* The agent a sandbox would mount, and from where (clearing/agent.h). */
static void check_agent(void)
{
    char path[4096], detail[4200];
    clr_agent_source src;
    clr_error err = CLR_ERROR_INIT;
    if (clr_agent_locate(path, sizeof(path), NULL, &src, &err) < 0) {
        report(false, "in-sandbox agent found", err.message);
        return;
    }
    snprintf(detail, sizeof(detail), "%s (%s)", path, clr_agent_source_name(src));
    report(true, "in-sandbox agent found", detail);
}

/* The engine, its runsc and the default image: what every sandbox needs of the engine. */
static void check_host(clr_engine *eng)
{
    clr_error err = CLR_ERROR_INIT;
    char detail[256];
    clr_engine_describe(eng, detail, sizeof(detail));
    report(true, "Docker engine reachable", detail);

    bool runsc = false;
    if (clr_engine_has_runtime(eng, "runsc", &runsc, &err) < 0)
        report(false, "gVisor runtime registered", err.message);
    else
        report(runsc, "gVisor runtime (runsc) registered with the engine",
               runsc ? NULL
                     : "run scripts/setup.sh, or add runsc to /etc/docker/daemon.json with "
                       "\"runtimeArgs\": [\"--network=none\"] and restart dockerd");

    json_t *img = NULL;
    bool have_image = clr_engine_image_inspect(eng, CLR_DEFAULT_IMAGE, &img, &err) == 0;
    json_decref(img);
    report(have_image, "default image " CLR_DEFAULT_IMAGE " present",
           have_image ? NULL : "build it with images/build.sh");

    /* Snapshots and forks (issue #22) are optional: their absence is a note, not a failure. */
    bool snaps = false;
    char why[sizeof(err.message)] = "";
    if (clr_engine_checkpoint_supported(eng, "runsc", &snaps, why, sizeof(why), &err) < 0)
        snprintf(why, sizeof(why), "%s", err.message);
    if (snaps)
        report(true, "snapshots and forks available (checkpoint/restore under runsc)", NULL);
    else
        printf("note snapshots and forks not available: %s\n", why);
}

static void help(void)
{
    printf("Usage: clearing doctor [--config FILE] [--daemon-user USER]\n\n"
           "Checks the Docker engine, the gVisor runtime, the default image and the agent,\n"
           "then runs a probe sandbox and checks its isolation and limits.\n"
           "The installed layout, when there is one (" DOCTOR_DEFAULT_CONFIG ", or --config):\n"
           "the configuration as the daemon reads it, its state directory writable by the\n"
           "daemon's user (--daemon-user, default root), its socket's mode and group, the\n"
           "audit log's chain, and clearing.service where systemd is PID 1.\n"
           "When a daemon listens on the socket (--host, $CLEARING_HOST, the configuration's\n"
           "or the default), also reports its health: degraded or unavailable, and why.\n");
}

int cmd_doctor(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"daemon-user", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct doctor_layout_options lo;
    memset(&lo, 0, sizeof(lo));
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'c') {
            lo.config = optarg;
        } else if (c == 'u') {
            lo.daemon_user = optarg;
        } else if (c == 'h') {
            help();
            return 0;
        } else {
            cli_usage_error("doctor", "unknown option");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_usage_error("doctor", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    clr_engine *eng = NULL;
    failures = 0;
    if (cli_open_engine(&eng, &err) < 0)
        report(false, "Docker engine reachable", err.message);
    else
        check_host(eng);
    check_agent();
    int host_failures = failures;
    doctor_layout(&lo, report);
    if (!cli_global.host && !getenv("CLEARING_HOST") && lo.socket[0] &&
        access(lo.socket, F_OK) == 0)
        cli_global.host = lo.socket; /* the configuration's daemon (a missing socket: above) */
    daemon_health();
    /* The probe needs what every sandbox needs, not the layout of an installed daemon. */
    if (eng && host_failures == 0)
        probe(eng);
    clr_engine_free(eng);
    printf("%s\n", failures ? "Some checks failed: see above." : "All checks passed.");
    return failures ? CLI_EXIT_FAILURE : 0;
}
