/* The Model Context Protocol server: JSON-RPC 2.0 messages in, JSON-RPC messages out, tools that
 * drive sandboxes through the REST API. It knows neither its transport (stdio in `clearing mcp`,
 * Streamable HTTP at the daemon's /mcp) nor how the REST API is reached (an HTTP client of a
 * daemon, or the daemon calling itself on behalf of a tenant): both are given to it.
 *
 * This header is the contract between the protocol (mcp.c, mcp_tools*.c), its transports
 * (cmd_mcp.c: stdio; mcp_http.c: the daemon's /mcp) and its backends. */
#ifndef CLR_MCP_H
#define CLR_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clearing/clearing.h"

/* How the tools reach the REST API: one request as docs/openapi.yaml documents it. */
struct mcp_backend {
    /* method "GET"/"POST"/"PUT"/"DELETE"; path "/v1/..." with its query; body a JSON object or
     * NULL (not taken over). Returns the HTTP status, with *answer the JSON answer (NULL when
     * the answer has none, or is not JSON: then *text holds it, e.g. a diff; either may be
     * passed as NULL by a caller that wants neither), or -1 with err when the API could not be
     * reached. Called from any thread; must be safe to call concurrently. */
    int (*call)(void *ctx, const char *method, const char *path, const json_t *body,
                json_t **answer, char **text, clr_error *err);
    /* The same for a request whose answer is NDJSON (a streamed exec, a plan): each line is
     * passed to on_line as it comes; on_line returns false to stop reading (the request is
     * then abandoned). While the answer is silent on_line is also asked, with line NULL, about
     * once a second, whether to go on. May be NULL: the tools then use the non-streaming form. */
    int (*stream)(void *ctx, const char *method, const char *path, const json_t *body,
                  bool (*on_line)(void *lctx, json_t *line), void *lctx, clr_error *err);
    void *ctx;
    /* A PUT of raw bytes (a file upload): path "/v1/sandboxes/ID/files/PATH", data of len
     * bytes as the body (application/octet-stream); returns as call. May be NULL: write_file
     * then writes the file with a command in the sandbox. */
    int (*upload)(void *ctx, const char *path, const void *data, size_t len, json_t **answer,
                  clr_error *err);
    /* As call, for an answer that is bytes (a downloaded file: application/octet-stream): a
     * 2xx answer whose Content-Type is not application/json comes as *data, exactly the bytes
     * sent whatever they hold (NUL bytes, non-UTF-8; never parsed as JSON), NUL-terminated
     * after them, with *len their number; any other (an error) as call puts it, in *answer, or
     * in *data and *len when it is not JSON. *data is the caller's to free. May be NULL (a backend
     * written before it): read_file then uses call, and a file is cut at its first NUL byte. */
    int (*call_bytes)(void *ctx, const char *method, const char *path, const json_t *body,
                      json_t **answer, char **data, size_t *len, clr_error *err);
    /* As call_bytes for a GET with the header "Range: bytes=FIRST-LAST": a 206 answer's bytes
     * as *data and *len with *total the file's size (from its Content-Range); a 200 (a server
     * that served the whole file) as call_bytes, *total 0; a 416 as an error. May be NULL (a
     * backend written before it): read_file then reads the whole file and cuts the range. */
    int (*call_range)(void *ctx, const char *path, uint64_t first, uint64_t last,
                      json_t **answer, char **data, size_t *len, uint64_t *total,
                      clr_error *err);
};

/* Where the session's outgoing messages go. related_id is the id of the request the message
 * belongs to (its response, or a progress/log notification sent while it runs), NULL for
 * one that belongs to none; a Streamable HTTP transport sends it on that request's stream.
 * msg is borrowed. Called from any of the session's threads, never two at once. */
typedef void (*mcp_emit_fn)(void *ctx, json_t *msg, const json_t *related_id);

struct mcp_session;

/* A session speaking to one client. Sandboxes it creates are destroyed when it ends, except
 * those created with keep: true. */
int mcp_session_new(struct mcp_session **out, const struct mcp_backend *backend,
                    mcp_emit_fn emit, void *emit_ctx, clr_error *err);

/* One message from the client (a request, a notification, a response, or a batch array).
 * Fast: a tools/call runs on a thread of its own and answers through emit when it is done; a
 * message that is not JSON-RPC is answered with the JSON-RPC error the specification names. */
void mcp_session_handle(struct mcp_session *s, json_t *msg);

/* Answers a message the transport could not parse as JSON (JSON-RPC's parse error, id null);
 * why says what was wrong. */
void mcp_session_parse_error(struct mcp_session *s, const char *why);

/* Whether the client has completed initialization (initialize answered, initialized seen). */
bool mcp_session_ready(const struct mcp_session *s);

/* Ends the session: cancels the calls in flight (their commands are killed), waits for them,
 * destroys the sandboxes it created that were not kept, and frees it. NULL is a no-op. */
void mcp_session_end(struct mcp_session *s);

#endif
