/* Streamed answers of the HTTP server: an exec, a plan or a code cell run in a thread of its
 * own, its events sent as NDJSON lines on a pushed body (http_pushed.h) while it runs, its
 * result (or error) as the last line. */
#ifndef CLR_HTTP_STREAM_H
#define CLR_HTTP_STREAM_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "clearing/clearing.h"
#include "clearing/service.h"

/* Starts req as an exec in sandbox id (a plan when id is ""; tenant then owns its sandbox, ""
 * for the operator; a client that goes away, or reads so slowly that the stream overflows,
 * cancels the plan) and queues its 200 stream on c. Takes ownership of req in every case. */
enum MHD_Result http_stream_start(clr_service *svc, struct MHD_Connection *c, const char *id,
                                  json_t *req, const char *actor, const char *tenant);
/* Starts req as a code interpreter's cell in sandbox id and queues its 200 stream on c (its
 * output as stdout/stderr events, then the answer as the "result" event). Takes req. */
enum MHD_Result http_stream_code_start(clr_service *svc, struct MHD_Connection *c,
                                       const char *id, json_t *req, const char *actor);

#endif
