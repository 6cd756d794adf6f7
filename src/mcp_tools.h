/* The MCP tools: one table (mcp_tools.c), each tool's schema and its handler
 * (mcp_tools_*.c), mapped onto the REST API through the call's backend. */
#ifndef CLR_MCP_TOOLS_H
#define CLR_MCP_TOOLS_H

#include "mcp_call.h"

/* tools/list's tools array (a new reference). */
json_t *mcp_tools_list(void);
bool mcp_tools_exists(const char *name);
/* Runs tool name with args (an object, or NULL) for c: a CallToolResult, new
 * reference. Bad arguments and failed commands are results with isError true,
 * never NULL. */
json_t *mcp_tools_call(struct mcp_call *c, const char *name, json_t *args);
/* Destroys sandbox id (the session's end): 0, or -1 with err. */
int mcp_tools_destroy(const struct mcp_backend *be, const char *id, clr_error *err);

#endif
