/* What the sandbox kernel's /proc says about a supervisor's commands: the processes of its tree
 * (the supervisor is a child subreaper, so the tree is exactly the processes whose parent chain
 * reaches it) and their resident memory, and the sandbox's memory in use. Reads only; it signals
 * nothing and collects nothing. */
#ifndef CLR_AGENT_PROCFS_H
#define CLR_AGENT_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_MAX_PROCS 65536

struct proc {
    pid_t pid, ppid;
    uint64_t rss_pages;
    char state; /* /proc/PID/stat's field 3: 'R', 'S', 'D', 'T' (stopped), 'Z'...; '?' unknown */
    bool in_tree;
};

/* Parses the text of /proc/PID/stat: the state letter, the parent's pid and resident pages.
 * comm (field 2) may hold anything, ')' and spaces included: the fields are read after the last
 * ')'. 0 or -1. */
int agent_stat_parse(const char *stat, char *state, pid_t *ppid, uint64_t *rss_pages);

/* Whether a process in this state can run no more code until it is continued or reaped:
 * stopped ('T'), stopped under a tracer ('t'), a zombie ('Z') or dead ('X'). */
bool agent_state_halted(char state);

/* Marks every process whose parent chain reaches root (root's children first) as in_tree, then
 * moves those to the front of procs, in their order. Returns how many there are and their
 * resident pages in *pages (may be NULL). */
size_t agent_tree_select(struct proc *procs, size_t n, pid_t root, uint64_t *pages);

/* Lists the calling process's descendants into procs (at most max); returns how many, and their
 * total resident bytes in *rss_bytes (may be NULL). */
size_t agent_tree_scan(struct proc *procs, size_t max, uint64_t *rss_bytes);

/* A buffer of AGENT_MAX_PROCS entries for agent_tree_scan(), allocated once and kept for the
 * process's life (never freed). Out of memory ends the process. */
struct proc *agent_tree_buffer(void);

/* True when the calling process has no child at all, living, stopped or a zombie. Then it has
 * no descendant either when it is a subreaper: the topmost living process of any branch of the
 * tree is its child. The kernel's (the Sentry's) own answer, so the /proc walk can be skipped. */
bool agent_no_children(void);

/* Memory in use, from the text of /proc/meminfo: MemTotal - MemAvailable, in bytes; 0 when
 * either is missing. */
uint64_t agent_meminfo_parse(const char *meminfo);

/* Sandbox-wide memory in use, from the sandbox kernel's /proc/meminfo; 0 if unreadable. */
uint64_t agent_meminfo_used(void);

#endif
