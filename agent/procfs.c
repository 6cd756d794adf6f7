/* The sandbox kernel's /proc, read for a supervisor: see procfs.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clearing/cleanup.h"
#include "procfs.h"
#include "util.h"

int agent_stat_parse(const char *stat, char *state, pid_t *ppid, uint64_t *rss_pages)
{
    const char *p = strrchr(stat, ')');
    if (!p || p[1] != ' ')
        return -1;
    /* Fields after ") " are numbered from 3 (state); ppid is 4, rss is 24. */
    const char *field = p + 2;
    int pp = 0;
    long long rss = 0;
    *state = *field && field[1] == ' ' ? *field : '?';
    for (int i = 3; i <= 24 && field; i++) {
        if (i == 4)
            pp = atoi(field);
        else if (i == 24)
            rss = atoll(field);
        field = strchr(field, ' ');
        if (field)
            field++;
    }
    *ppid = pp;
    *rss_pages = rss > 0 ? (uint64_t)rss : 0;
    return 0;
}

bool agent_state_halted(char state)
{
    return state == 'T' || state == 't' || state == 'Z' || state == 'X';
}

/* Reads a small file of /proc into buf (NUL-terminated); the length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* Reads the state, ppid and resident pages from /proc/PID/stat. */
static int read_stat(pid_t pid, char *state, pid_t *ppid, uint64_t *rss_pages)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -1;
    return agent_stat_parse(buf, state, ppid, rss_pages);
}

size_t agent_tree_select(struct proc *procs, size_t n, pid_t root, uint64_t *pages)
{
    for (size_t i = 0; i < n; i++)
        procs[i].in_tree = procs[i].ppid == root;
    /* Propagate membership down the parent links until nothing changes. */
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            if (procs[i].in_tree)
                continue;
            for (size_t j = 0; j < n; j++) {
                if (procs[j].in_tree && procs[j].pid == procs[i].ppid) {
                    procs[i].in_tree = true;
                    changed = true;
                    break;
                }
            }
        }
    }
    size_t m = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!procs[i].in_tree)
            continue;
        total += procs[i].rss_pages;
        procs[m++] = procs[i];
    }
    if (pages)
        *pages = total;
    return m;
}

size_t agent_tree_scan(struct proc *procs, size_t max, uint64_t *rss_bytes)
{
    _cleanup_closedir_ DIR *d = opendir("/proc");
    size_t n = 0;
    pid_t self = getpid();
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == self)
            continue;
        pid_t ppid;
        uint64_t pages = 0;
        char state;
        if (read_stat((pid_t)pid, &state, &ppid, &pages) < 0)
            continue;
        procs[n++] = (struct proc){.pid = (pid_t)pid, .ppid = ppid, .rss_pages = pages,
                                   .state = state};
    }
    uint64_t pages = 0;
    size_t m = agent_tree_select(procs, n, self, &pages);
    if (rss_bytes)
        *rss_bytes = pages * (uint64_t)sysconf(_SC_PAGESIZE);
    return m;
}

struct proc *agent_tree_buffer(void)
{
    static struct proc *buf;
    if (!buf) {
        buf = calloc(AGENT_MAX_PROCS, sizeof(*buf));
        if (!buf)
            agent_die_oom();
    }
    return buf;
}

bool agent_no_children(void)
{
    siginfo_t si;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) < 0 && errno == ECHILD;
}

uint64_t agent_meminfo_parse(const char *meminfo)
{
    const char *t = strstr(meminfo, "MemTotal:");
    const char *a = strstr(meminfo, "MemAvailable:");
    if (!t || !a)
        return 0;
    unsigned long long total = strtoull(t + 9, NULL, 10);
    unsigned long long avail = strtoull(a + 13, NULL, 10);
    return total > avail ? (total - avail) * 1024 : 0;
}

uint64_t agent_meminfo_used(void)
{
    char buf[4096];
    if (read_small("/proc/meminfo", buf, sizeof(buf)) < 0)
        return 0;
    return agent_meminfo_parse(buf);
}
