/* Small helpers both halves of the agent use (live.c, supervise.c and the modules below them):
 * closing inherited descriptors and the one clock. Below every other agent module: it calls
 * nothing of the agent's. */
#ifndef CLR_AGENT_UTIL_H
#define CLR_AGENT_UTIL_H

#include <stdint.h>

/* Closes every descriptor from low up, but keep (-1: none). Async-signal-safe and allocation
 * free: the vfork child calls it. */
void agent_close_from(int low, int keep);

/* CLOCK_MONOTONIC in nanoseconds: the agent's one clock for deadlines and wall times. */
uint64_t agent_now_ns(void);

/* Ends the process with a message on stderr: a supervisor's answer to running out of memory (its
 * command cannot be supervised without it). Never PID 1's: live.c degrades instead. */
__attribute__((noreturn)) void agent_die_oom(void);

#endif
