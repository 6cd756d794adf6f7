/* An HTTP answer as libcurl reads it: every client of a daemon's REST API in this program (the
 * command line's client.c, the MCP backend mcp_client.c) collects answers here, and turns an
 * error answer into a clr_error here. */
#ifndef CLR_HTTP_SINK_H
#define CLR_HTTP_SINK_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "clearing/clearing.h"

#define HTTP_SINK_MAX (256u * 1024 * 1024) /* the default bound of a kept answer */

/* http_sink_write is its CURLOPT_WRITEFUNCTION, the sink its CURLOPT_WRITEDATA. Without
 * on_line the answer is kept whole (data, NUL-terminated, len bytes) up to max; with on_line it
 * is a stream of NDJSON lines, each passed on as it comes once the answer's status is 2xx (an
 * error answer is kept whole), the daemon's heartbeats skipped, what was passed on dropped. */
struct http_sink {
    char *data;
    size_t len;
    size_t max;    /* 0: HTTP_SINK_MAX */
    bool overflow; /* the answer was larger than max: the request was abandoned */
    CURL *curl;    /* the request's handle: needed with on_line, to read the status */
    bool (*on_line)(void *ctx, json_t *line); /* false: stop reading, abandon the request */
    void *ctx;
    bool stopped; /* on_line asked to stop */
    size_t consumed;
};

size_t http_sink_write(char *p, size_t size, size_t n, void *ud);

/* At the end of a stream: its last line, when it did not end with a newline. */
void http_sink_finish(struct http_sink *s);

/* The clr_error of an error answer (j its JSON, or NULL): the API's code when j names one
 * this program knows, else the class of the status; the message names the status. */
void http_answer_error(int status, json_t *j, clr_error *err);

#endif
