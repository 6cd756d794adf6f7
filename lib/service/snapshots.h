/* Snapshots and forks (issue #22): see snapshots.c; the public calls are in
 * include/clearing/service.h (clr_service_snapshot*, clr_service_fork). */
#ifndef CLR_SERVICE_SNAPSHOTS_H
#define CLR_SERVICE_SNAPSHOTS_H

#include "service_int.h"

/* Removes expired snapshots, those of destroyed sandboxes that are not kept (each with an audit
 * record first), and snapshot directories without a row: what a daemon killed while writing
 * one left. The reaper runs it every pass; the start's recovery once. */
void svc_snapshots_sweep(clr_service *svc);

#endif
