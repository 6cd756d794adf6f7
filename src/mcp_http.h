/* The daemon's MCP endpoint, /mcp: the Streamable HTTP transport of the Model Context Protocol
 * (the 2025-11-25 specification's "Streamable HTTP"), over the sessions of mcp.h whose tools
 * call the daemon's own API as the principal that opened them (mcp_client.h).
 *
 * POST carries JSON-RPC messages (initialize opens a session: Mcp-Session-Id); answered 202
 * when it holds no request, else application/json when every answer is known at once, else
 * text/event-stream (progress and log notifications of its requests, then their responses).
 * GET is the router's 405 (no standalone stream); DELETE ends the session. A session belongs to the
 * principal that opened it (struct request.principal): anyone else is told 404. */
#ifndef CLR_MCP_HTTP_H
#define CLR_MCP_HTTP_H

#include <microhttpd.h>

#include "server_internal.h"

/* Open at once, all principals together. */
#define MCP_HTTP_MAX_SESSIONS SERVER_MCP_MAX_SESSIONS
#define MCP_HTTP_MAX_PER_PRINCIPAL 16 /* of them held by one token (or unix uid) */
/* Of them held by one tenant's tokens together, unless its quota's max_mcp_sessions says
 * otherwise (1..MCP_HTTP_MAX_SESSIONS): a quarter, so no tenant holds every session. The unix
 * socket's peers (the operator) are no tenant's: only the per-principal bound holds them. */
#define MCP_HTTP_TENANT_SESSIONS 16
/* A session without a request or a call this long ends: the default of the configuration's
 * mcp_idle_timeout (seconds). */
#define MCP_HTTP_IDLE_S (30 * 60)

/* Starts the session table and its reaper (s->mcp); the backend calls s->socket_path. */
int mcp_http_start(struct server *s, clr_error *err);
/* Ends every session (their sandboxes not kept are destroyed); none opens after. Called while
 * the listeners still answer: the sessions' backends need the unix socket. */
void mcp_http_stop(struct server *s);
/* Frees the table (stopping it first if it was not): once no handler can run any more. */
void mcp_http_free(struct server *s);

enum MHD_Result mcp_http_post(struct server *s, struct MHD_Connection *c, struct request *rq);
enum MHD_Result mcp_http_delete(struct server *s, struct MHD_Connection *c, struct request *rq);

#endif
