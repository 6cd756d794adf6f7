/* The MCP tools' backend over a daemon's REST API: HTTP on its unix socket with libcurl, one
 * easy handle per request, so any number of threads may call it at once. */
#ifndef CLR_MCP_CLIENT_H
#define CLR_MCP_CLIENT_H

#include "mcp.h"

/* Fills be to reach the daemon at socket_path (kept, not copied). curl_global_init must have
 * been called before any thread uses it. */
void mcp_client_backend(struct mcp_backend *be, const char *socket_path);

/* Whether a daemon answers GET /v1/health at socket_path (any status: it is a clearing
 * daemon); when not, err says why. */
bool mcp_client_answers(const char *socket_path, clr_error *err);

#endif
