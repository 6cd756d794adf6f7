/* Answers and query parameters of the HTTP server: the one place that turns a JSON value, a
 * clr_error or a file into a libmicrohttpd response. Every send_* queues the response on the
 * connection and returns what MHD_queue_response() said (MHD_NO when it could not be built). */
#ifndef CLR_HTTP_H
#define CLR_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include "clearing/clearing.h"

/* The HTTP status of an error code: the one mapping of the API (docs/API.md). */
int http_status(clr_error_code code);
/* Sends text (taken over: freed by libmicrohttpd, or here when the response cannot be built). */
enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type, char *text);
/* Sends j as one line of JSON; takes ownership of j (its reference is dropped). */
enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j);
/* Sends {"error": {"code", "message"}}. */
enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code,
                           const char *message);
/* Sends err with the status of its code. */
enum MHD_Result send_clr_error(struct MHD_Connection *c, const clr_error *err);
/* Sends a response with no body (204, ...). */
enum MHD_Result send_empty(struct MHD_Connection *c, int status);
/* Sends size bytes of fd from its start; takes fd over (closed by libmicrohttpd, or here). */
enum MHD_Result send_fd(struct MHD_Connection *c, int fd, uint64_t size, const char *type);
/* Sends fd (size bytes) as send_fd does, or the one byte range of the request's Range header
 * (http_range.h): 206 with Content-Range; 416 with a Content-Range naming the size and an error
 * when no byte of it is in the file. Takes fd over. */
enum MHD_Result send_fd_range(struct MHD_Connection *c, int fd, uint64_t size, const char *type);
/* A known path with another method: 405 with the Allow header that lists what it takes. */
enum MHD_Result send_method_not_allowed(struct MHD_Connection *c, const char *method,
                                        const char *allowed);

/* Query parameter name as a number (absent: *out unchanged, 0); -1 with err when malformed. */
int query_uint(struct MHD_Connection *c, const char *name, uint64_t *out, clr_error *err);
/* Query parameter name as a duration in ms ("500ms", "2s", ...), as query_uint. */
int query_duration(struct MHD_Connection *c, const char *name, uint64_t *out, clr_error *err);
/* Whether query parameter name is "true" or "1". */
bool query_true(struct MHD_Connection *c, const char *name);

/* An unnamed temporary file (O_TMPFILE in /var/tmp, else /tmp), or -1 with errno; the caller
 * closes it. */
int tmpfile_fd(void);

#endif
