/* The warm pool: started, checked sandboxes of the default profile (with their channel
 * attached), handed out once each; a thread keeps it filled and recycles old ones. */
#ifndef CLR_SERVICE_WARM_H
#define CLR_SERVICE_WARM_H

#include "service_int.h"

/* Takes a pooled sandbox out of service: its channel (NULL: none) closed, its container and
 * workspace removed. */
void svc_warm_discard(clr_service *svc, clr_sandbox *sb, clr_channel *ch, const char *why);

/* The warm pool's thread (arg: the service): fills the pool up to pool_size and remakes
 * sandboxes older than WARM_MAX_AGE_S, until svc->stopping. */
void *svc_warm_main(void *p);

/* Takes a pooled sandbox (and its open channel, or NULL), or NULL when the pool is empty. */
clr_sandbox *svc_warm_take(clr_service *svc, clr_channel **ch);

/* At stop: the pool's thread joined, and the pooled sandboxes (never handed out) removed. */
void svc_warm_stop(clr_service *svc);

#endif
