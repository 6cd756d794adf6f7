/* clearing-bench-api's readings from /proc: the daemon's RSS and CPU time, and the memory of
 * what the engine runs for each idle sandbox. See bench_api.h. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_api.h"
#include "clearing/cleanup.h"

/* A "Name:   N kB" line of the file at path (/proc/PID/status, /proc/meminfo), in KiB; NAN if
 * unreadable. */
static double kib_line(const char *path, const char *name)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return NAN;
    char line[256];
    size_t nl = strlen(name);
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kib;
        if (strncmp(line, name, nl) == 0 && line[nl] == ':' &&
            sscanf(line + nl + 1, "%llu", &kib) == 1)
            return (double)kib;
    }
    return NAN;
}

double proc_status_kib(pid_t pid, const char *name)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    return kib_line(path, name);
}

/* /proc/PID/stat into buf (NUL-terminated); -1 if unreadable (the process is gone). */
static int read_stat(pid_t pid, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    return 0;
}

/* utime + stime of the whole process (all threads), in clock ticks. */
static int proc_cpu_ticks(pid_t pid, unsigned long long *out)
{
    char buf[1024];
    if (read_stat(pid, buf, sizeof(buf)) < 0)
        return -1;
    /* The command name may hold anything, ')' too: the fields start after the last ')'.
     * From there: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt,
     * cmajflt, utime (field 14), stime (15). */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    *out = ut + st;
    return 0;
}

/* CPU the daemon uses over idle_s seconds of nothing to do, in % of one core; NAN if the
 * window was bench_interrupted or /proc could not be read. */
double idle_cpu(struct bench *b, const char *what)
{
    unsigned long long c0, c1;
    fprintf(stderr, "idle, %s: %u s ...\n", what, b->idle_s);
    double t0 = bench_now_ms();
    if (proc_cpu_ticks(b->d.pid, &c0) < 0)
        return NAN;
    double end = t0 + b->idle_s * 1000.0;
    while (!bench_interrupted && bench_now_ms() < end)
        bench_sleep_ms(100);
    if (bench_interrupted || bench_daemon_gone(&b->d) || proc_cpu_ticks(b->d.pid, &c1) < 0)
        return NAN;
    double secs = (bench_now_ms() - t0) / 1000.0;
    long hz = sysconf(_SC_CLK_TCK);
    double pct = (double)(c1 - c0) / (double)(hz > 0 ? hz : 100) / secs * 100.0;
    fprintf(stderr, "idle, %s: %.2f%% of one core, RSS %.0f KiB\n", what, pct,
            proc_status_kib(b->d.pid, "VmRSS"));
    return pct;
}

/* ---- 4: what the engine runs for an idle sandbox, from /proc ---- */

/* A process of the host, and the side whose sandbox it serves (-1: neither). */
struct host_proc {
    pid_t pid, ppid;
    int side;
};

/* The parent of pid from /proc/PID/stat; -1 if unreadable (the process is gone). */
static pid_t proc_ppid(pid_t pid)
{
    char buf[1024];
    if (read_stat(pid, buf, sizeof(buf)) < 0)
        return -1;
    char *p = strrchr(buf, ')'); /* the command name may hold anything */
    long ppid;
    if (!p || sscanf(p + 1, " %*c %ld", &ppid) != 1)
        return -1;
    return (pid_t)ppid;
}

/* The command line of pid, NULs turned into spaces; "" if unreadable. */
static void proc_cmdline(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    out[0] = '\0';
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, len - 1);
    if (n <= 0)
        return;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    out[n] = '\0';
}

/* The Pss and Rss lines of /proc/PID/smaps_rollup, in KiB; -1 if unreadable. */
static int proc_pss_rss(pid_t pid, double *pss, double *rss)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/smaps_rollup", (long)pid);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    unsigned long long v;
    int got = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Pss: %llu kB", &v) == 1) {
            *pss = (double)v;
            got |= 1;
        } else if (sscanf(line, "Rss: %llu kB", &v) == 1) {
            *rss = (double)v;
            got |= 2;
        }
    }
    return got == 3 ? 0 : -1;
}

/* The full container ids of each side's idle sandboxes into ids, their numbers into nids.
 * -1 if the sandboxes could not be listed. */
static int container_ids(struct bench *b, char ids[SIDE_COUNT][MAX_CLIENTS][72],
                         unsigned nids[SIDE_COUNT])
{
    for (unsigned i = 0; i < b->nsandboxes; i++)
        if (b->raw_id[i][0])
            snprintf(ids[SIDE_RAW][nids[SIDE_RAW]++], sizeof(ids[0][0]), "%s", b->raw_id[i]);
    _cleanup_free_ clr_sandbox_info *list = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_list(&list, &n, b->eng, &err) < 0) {
        fprintf(stderr, "memory: listing sandboxes: %s\n", err.message);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        for (unsigned k = 0; k < b->nsandboxes; k++)
            if (strcmp(list[i].id, b->sandbox[k]) == 0 && list[i].container_id[0] &&
                nids[SIDE_CLEARING] < MAX_CLIENTS)
                snprintf(ids[SIDE_CLEARING][nids[SIDE_CLEARING]++], sizeof(ids[0][0]), "%s",
                         list[i].container_id);
    return 0;
}

/* Every process of the host with its parent, and the side whose sandbox it serves: a shim
 * that names one of ids, and everything below it. Returns 0 with them in *out (the caller
 * frees it) and their number in *count, or -1 if /proc cannot be read. */
static int host_procs(struct host_proc **out, size_t *count,
                      char ids[SIDE_COUNT][MAX_CLIENTS][72], const unsigned nids[SIDE_COUNT])
{
    *out = NULL;
    *count = 0;
    _cleanup_closedir_ DIR *d = opendir("/proc");
    if (!d)
        return -1;
    _cleanup_free_ struct host_proc *ps = NULL;
    size_t np = 0, cap = 0;
    static char cmd[16384];
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (np == cap) {
            cap = cap ? cap * 2 : 1024;
            void *p = realloc(ps, cap * sizeof(*ps));
            if (!p)
                break;
            ps = p;
        }
        struct host_proc *hp = &ps[np];
        hp->pid = (pid_t)pid;
        hp->ppid = proc_ppid(hp->pid);
        hp->side = -1;
        proc_cmdline(hp->pid, cmd, sizeof(cmd));
        /* Only a shim names the container with -id; runsc's processes name it in paths. */
        if (strncmp(cmd, "/usr/bin/containerd-shim", 24) == 0 ||
            strstr(cmd, "containerd-shim-runc-v2 ")) {
            for (int sd = 0; sd < SIDE_COUNT && hp->side < 0; sd++)
                for (unsigned k = 0; k < nids[sd]; k++)
                    if (strstr(cmd, ids[sd][k])) {
                        hp->side = sd;
                        break;
                    }
        }
        np++;
    }
    /* Everything below a shim serves its sandbox: spread the side down the tree. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < np; i++) {
            if (ps[i].side >= 0)
                continue;
            for (size_t k = 0; k < np; k++)
                if (ps[k].pid == ps[i].ppid && ps[k].side >= 0) {
                    ps[i].side = ps[k].side;
                    changed = true;
                    break;
                }
        }
    }
    *out = steal_pointer(&ps);
    *count = np;
    return 0;
}

/* The memory of every process the engine runs for the idle sandboxes of each side: the
 * containerd shim, whose command line names the container's full id, and everything below it
 * (runsc's gofer, the sentry and its systrap stub processes, `runsc wait`). PSS shares what
 * processes share (the runsc binary, the sandbox's memory file mapped by the sentry and its
 * stubs) among them, so the sum over N sandboxes is what N sandboxes cost; RSS counts shared
 * pages in each process and overstates it. */
void sandbox_memory(struct bench *b)
{
    char ids[SIDE_COUNT][MAX_CLIENTS][72];
    unsigned nids[SIDE_COUNT] = {0, 0};
    memset(ids, 0, sizeof(ids));
    if (container_ids(b, ids, nids) < 0)
        return;
    _cleanup_free_ struct host_proc *ps = NULL;
    size_t np = 0;
    if (host_procs(&ps, &np, ids, nids) < 0)
        return;
    for (int sd = 0; sd < SIDE_COUNT; sd++)
        b->mem[sd] = (struct sandbox_memory){.sandboxes = nids[sd]};
    for (size_t i = 0; i < np; i++) {
        double pss = 0, rss = 0;
        if (ps[i].side < 0 || proc_pss_rss(ps[i].pid, &pss, &rss) < 0)
            continue;
        struct sandbox_memory *m = &b->mem[ps[i].side];
        m->processes++;
        m->pss_kib += pss;
        m->rss_kib += rss;
    }
    b->host_mem_kib = kib_line("/proc/meminfo", "MemTotal");
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct sandbox_memory *m = &b->mem[sd];
        fprintf(stderr, "memory, %s: %u idle sandboxes, %u processes, PSS %.0f KiB, RSS %.0f KiB\n",
                side_names[sd], m->sandboxes, m->processes, m->pss_kib, m->rss_kib);
    }
}
