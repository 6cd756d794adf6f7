/* The daemon's own MCP backend: the tools of a /mcp session call the daemon's REST API over its
 * unix socket (libcurl), narrowed to the session's tenant by X-Clearing-Tenant (see server.c's
 * narrow() and docs/SECURITY.md): what the session may see and do is what its token may. */
#ifndef CLR_MCP_SELF_H
#define CLR_MCP_SELF_H

#include "mcp.h"

/* Fills *out with a backend that calls the API at the unix socket socket_path as tenant (""
 * for the operator: no narrowing), recorded in the audit log as actor. Free with
 * mcp_self_free. */
int mcp_self_backend(struct mcp_backend *out, const char *socket_path, const char *tenant,
                     const char *actor, clr_error *err);
void mcp_self_free(struct mcp_backend *b);

#endif
