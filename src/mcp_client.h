/* The MCP tools' backend over a daemon's REST API: HTTP on its unix socket with libcurl, one
 * easy handle per request, so any number of threads may call it at once. `clearing mcp` reaches
 * a daemon (or its own standalone one) with it; the daemon's /mcp reaches itself with it,
 * narrowed to the session's tenant by X-Clearing-Tenant (server.c's narrow(),
 * docs/SECURITY.md): what a session may see and do is what its token may. */
#ifndef CLR_MCP_CLIENT_H
#define CLR_MCP_CLIENT_H

#include "mcp.h"

/* Fills *out to reach the daemon at socket_path (copied) as tenant (NULL or "": no narrowing,
 * the unix socket's operator), its requests recorded in the audit log as actor (NULL or "":
 * the peer's uid alone). Free with mcp_client_free. */
int mcp_client_backend(struct mcp_backend *out, const char *socket_path, const char *tenant,
                       const char *actor, clr_error *err);
void mcp_client_free(struct mcp_backend *b);

/* Whether a daemon answers GET /v1/health at socket_path (any status: it is a clearing
 * daemon); when not, err says why. */
bool mcp_client_answers(const char *socket_path, clr_error *err);

#endif
