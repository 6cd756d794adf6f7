/* A body pushed by one thread while an HTTP response sends it, with a heartbeat when it is
 * silent and a bound on what waits to be sent. The exec, plan and code streams (http_stream.c)
 * and /mcp's Server-Sent Events (mcp_http.c) use it. */
#ifndef CLR_HTTP_PUSHED_H
#define CLR_HTTP_PUSHED_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What may wait to be sent, each chunk's own cost counted: a client that falls further behind
 * gets the body's overflow text and its end (the bytes queued before it are still sent). One
 * line is never held against it alone, nor a last one (http_pushed_write_last). Per stream. */
#define HTTP_PUSHED_MAX (64u << 20)
#define HTTP_PUSHED_MAX_TEXT "64 MiB"

/* A body pushed by one side and read by a response: the last of them to let go frees it. */
struct http_pushed;

/* A new pushed body holding one reference (the pusher's); heartbeat (static text) is sent
 * when nothing was pushed for HEARTBEAT_S seconds (the server ends a connection idle for its
 * timeout); overflow (static text) is its last words when more than HTTP_PUSHED_MAX would wait
 * to be sent (NULL: such a write is dropped alone and the body goes on). NULL when out of
 * memory. */
struct http_pushed *http_pushed_new(const char *heartbeat, const char *overflow);
/* Appends len bytes (copied), held to HTTP_PUSHED_MAX; false when they are lost (out of
 * memory, or past the bound). Once the response stopped reading (http_pushed_closed) or the body
 * ended (http_pushed_end, an overflow), they are dropped. */
bool http_pushed_write(struct http_pushed *p, const char *data, size_t len);
/* The same, never held to the bound: what must reach a reader that keeps up (a stream's last
 * line, an MCP response), however much waits before it. */
bool http_pushed_write_last(struct http_pushed *p, const char *data, size_t len);
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
 * ended) or p overflowed; valid while the caller holds its reference. */
const volatile int *http_pushed_gone(struct http_pushed *p);

/* The response's reader (exposed for tests): up to max bytes of what waits, waiting for some
 * (the heartbeat after HEARTBEAT_S); MHD_CONTENT_READER_END_OF_STREAM once the body ended and
 * all was sent, MHD_CONTENT_READER_END_WITH_ERROR when the client hung up. */
ssize_t http_pushed_read(struct http_pushed *p, char *buf, size_t max);

#endif
