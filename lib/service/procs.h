/* Background processes: commands without a timeout that live until they end, are signalled, or
 * the daemon stops; their output is kept in memory (the last 1 MiB of each stream). */
#ifndef CLR_SERVICE_PROCS_H
#define CLR_SERVICE_PROCS_H

#include "service_int.h"

/* At stop: every process is killed (a KILL on its channel or stream) and its thread joined. */
void svc_procs_stop(clr_service *svc);

/* Forgets exited processes whose sandbox is destroyed, lost or gone from the store (a sandbox
 * keeps its newest 16 exited ones while it lives); the reaper calls it each pass. Returns how
 * many were freed. */
size_t svc_procs_prune(clr_service *svc);

/* Whether a background process or a command holds the sandbox now (the reaper's idle check). */
bool clr_service_sandbox_busy(clr_service *svc, const char *id);

/* Sends signal sig to a background process, recorded first as actor's. */
int clr_service_proc_signal_num(clr_service *svc, const char *id, const char *proc_id, int sig,
                                const char *actor, clr_error *err);

#endif
