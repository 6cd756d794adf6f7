/* Streamed answers of the HTTP server: an exec or a plan run in a thread of its own, its events
 * sent as NDJSON lines while it runs, its result (or error) as the last line. */
#ifndef CLR_HTTP_STREAM_H
#define CLR_HTTP_STREAM_H

#include <microhttpd.h>

#include "clearing/clearing.h"
#include "clearing/service.h"

/* Starts req as an exec in sandbox id (a plan when id is ""; tenant then owns its sandbox, ""
 * for the operator) and queues its 200 stream on c. Takes ownership of req in every case. */
enum MHD_Result http_stream_start(clr_service *svc, struct MHD_Connection *c, const char *id,
                                  json_t *req, const char *actor, const char *tenant);

#endif
