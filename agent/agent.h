/* clearing-agent's modules, for the entry point (agent.c) and for code outside agent/ that
 * drives its parts whole (the fuzzing harness of the request decoder). Nothing in agent/ but
 * agent.c includes it: each module includes the headers of what it calls. Layers, top down:
 *
 *   agent.c                              entry point: picks a mode
 *   live.c                               PID 1, the live channel (forks supervisors)
 *   proxy.c                              the egress proxy, served by live.c's loop
 *   supervise.c                          one command's supervisor
 *   command.c filter.c procfs.c output.c request.c
 *                                        its mechanisms: the command's start, its seccomp filter,
 *                                        /proc, output accounting, the request decoder
 *   bytes.c util.c                       helpers both halves use
 */
#ifndef CLR_AGENT_H
#define CLR_AGENT_H

#include "live.h"
#include "request.h"
#include "supervise.h"

#endif
