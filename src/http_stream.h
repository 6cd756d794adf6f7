/* Streamed answers of the HTTP server: a body that another thread pushes while the response is
 * sent (http_pushed), with a heartbeat when it is silent; on it, an exec or a plan run in a
 * thread of its own, its events sent as NDJSON lines while it runs, its result (or error) as
 * the last line. /mcp's Server-Sent Events use the same pushed body (mcp_http.c). */
#ifndef CLR_HTTP_STREAM_H
#define CLR_HTTP_STREAM_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "clearing/clearing.h"
#include "clearing/service.h"

/* A body pushed by one side and read by a response: the last of them to let go frees it. */
struct http_pushed;

/* A new pushed body holding one reference (the pusher's); heartbeat (static text) is sent
 * when nothing was pushed for HEARTBEAT_S seconds (the server ends a connection idle for its
 * timeout). NULL when out of memory. */
struct http_pushed *http_pushed_new(const char *heartbeat);
/* Appends len bytes (copied); false when out of memory (they are lost). Once the response
 * stopped reading (http_pushed_closed), they are dropped. */
bool http_pushed_write(struct http_pushed *p, const char *data, size_t len);
/* No more bytes: the response ends once it has sent what was pushed. */
void http_pushed_end(struct http_pushed *p);
/* Whether the response stopped reading it (the client went away, or it ended). */
bool http_pushed_closed(struct http_pushed *p);
void http_pushed_unref(struct http_pushed *p);
/* A response of unknown length that sends p (it takes a reference of its own), or NULL. */
struct MHD_Response *http_pushed_response(struct http_pushed *p);

/* Watches c's socket while the response waits for bytes: once the client hung up the response
 * ends (and http_pushed_closed turns true) within about a second. */
void http_pushed_watch(struct http_pushed *p, struct MHD_Connection *c);
/* A flag that turns non-zero once the response let go of p (the client went away, or it
 * ended); valid while the caller holds its reference. */
const volatile int *http_pushed_gone(struct http_pushed *p);

/* Starts req as an exec in sandbox id (a plan when id is ""; tenant then owns its sandbox, ""
 * for the operator; a client that goes away cancels the plan) and queues its 200 stream on c. Takes ownership of req in every case. */
enum MHD_Result http_stream_start(clr_service *svc, struct MHD_Connection *c, const char *id,
                                  json_t *req, const char *actor, const char *tenant);
/* Starts req as a code interpreter's cell in sandbox id and queues its 200 stream on c (its
 * output as stdout/stderr events, then the answer as the "result" event). Takes req. */
enum MHD_Result http_stream_code_start(clr_service *svc, struct MHD_Connection *c,
                                       const char *id, json_t *req, const char *actor);

#endif
