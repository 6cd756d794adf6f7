/* Engine handles: one per concurrent caller, kept in a small pool (svc->pool) and reused. An
 * engine handle belongs to one thread at a time. */
#ifndef CLR_SERVICE_ENGINES_H
#define CLR_SERVICE_ENGINES_H

#include "service_int.h"

/* An engine handle for this thread: a pooled one, or a new connection. *out is the caller's
 * until svc_engine_put(). */
int svc_engine_get(clr_service *svc, clr_engine **out, clr_error *err);

/* broken: the engine failed mid-call; do not reuse its connection. */
void svc_engine_put(clr_service *svc, clr_engine *eng, bool broken);

#endif
