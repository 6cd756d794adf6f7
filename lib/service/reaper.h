/* The reaper and recovery: expiry and idle destruction, the reconcile pass against the
 * engine (sandboxes whose container died become lost), and the recovery of the state a previous
 * daemon left at start. */
#ifndef CLR_SERVICE_REAPER_H
#define CLR_SERVICE_REAPER_H

#include "service_int.h"

/* A running row without a running container becomes lost, once, whoever sees it first (the
 * event watcher, the reconcile pass, the recovery): recorded in the database, the log and the
 * audit log. Its remains (stopped container, workspace) stay until it is destroyed (by a client,
 * or the reaper at its expiry): what it wrote before it died can still be read, and a command
 * that was running in it can still read the engine's account of its end (OOMKilled). The state
 * changes only with its record: when the audit log cannot take it, the row goes back to running
 * and the next look (reconcile pass, start) tries again. */
bool svc_mark_lost(clr_service *svc, const char *id, const char *actor, const char *reason);

/* The reaper thread (arg: the service): a pass every reaper_interval_ms, a reconcile pass every
 * reconcile_interval_ms, until svc->stopping. */
void *svc_reaper_main(void *p);

/* After a restart: keep what still runs, mark what vanished, remove what we do not know (but
 * adopt what runs when the database is new: see adopt_recovered). */
int svc_recover(clr_service *svc, clr_error *err);

#endif
