/* The engine's event stream: a sandbox whose container dies is marked lost at once (the
 * reaper's reconcile is the backstop). */
#ifndef CLR_SERVICE_EVENTS_H
#define CLR_SERVICE_EVENTS_H

#include "service_int.h"

/* Reads the engine's die, oom and destroy events of this daemon's containers for the daemon's
 * life. When the stream breaks (dockerd stops or restarts) it connects again, waiting 100 ms,
 * then twice as long each failure up to 5 s; after each connect one reconcile pass catches what
 * happened while it was away. */
void *svc_watch_main(void *p);

#endif
