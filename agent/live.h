/* The serving half of the agent: PID 1 and its live channel. */
#ifndef CLR_AGENT_LIVE_H
#define CLR_AGENT_LIVE_H

/* PID 1: reaps orphans, and serves commands over the container's attached stdio (the live
 * channel) until SIGTERM; with no host on stdin it only reaps. */
int agent_serve(void);

#endif
