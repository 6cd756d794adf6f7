/* The removal queue: destroyed sandboxes whose containers and workspaces a remover thread
 * removes off the caller's path, with retries and back-off; drained (for a bounded time) at
 * stop. */
#ifndef CLR_SERVICE_REMOVAL_H
#define CLR_SERVICE_REMOVAL_H

#include "service_int.h"

/* Queues the removal of a destroyed sandbox's container and workspace; false when it is already
 * queued. Without a remover thread (not started yet, or stopping) the caller removes it. */
bool svc_removal_queue(clr_service *svc, const char *id, const char *reason, unsigned attempts);

/* Removes one sandbox's container and workspace now. */
int svc_remove_now(clr_service *svc, const char *id, const char *reason, clr_error *err);

/* The remover thread (arg: the service): removes what is queued until rm_stopping and the queue
 * is empty. */
void *svc_remover_main(void *p);

/* At stop: the remover finishes what is queued, for a bounded time; what is left (the engine is
 * down, or slow) is removed by the recovery at the next start. */
void svc_removals_drain(clr_service *svc);

#endif
