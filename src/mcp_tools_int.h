/* The tools' handlers (mcp_tools_exec.c, mcp_tools_sandbox.c, mcp_tools_snapshot.c, ...),
 * called from the table in mcp_tools.c. Each takes its arguments already checked against its
 * inputSchema and returns a CallToolResult. */
#ifndef CLR_MCP_TOOLS_INT_H
#define CLR_MCP_TOOLS_INT_H

#include "mcp_tool_util.h"

typedef json_t *(*mcp_tool_fn)(struct mcp_call *c, const json_t *args);

json_t *tool_run_command(struct mcp_call *c, const json_t *args);
json_t *tool_exec(struct mcp_call *c, const json_t *args);
json_t *tool_start_process(struct mcp_call *c, const json_t *args);
json_t *tool_read_process_output(struct mcp_call *c, const json_t *args);
json_t *tool_stop_process(struct mcp_call *c, const json_t *args);

json_t *tool_create_sandbox(struct mcp_call *c, const json_t *args);
json_t *tool_destroy_sandbox(struct mcp_call *c, const json_t *args);
json_t *tool_list_sandboxes(struct mcp_call *c, const json_t *args);
json_t *tool_write_file(struct mcp_call *c, const json_t *args);
json_t *tool_read_file(struct mcp_call *c, const json_t *args);
json_t *tool_list_files(struct mcp_call *c, const json_t *args);
json_t *tool_delete_file(struct mcp_call *c, const json_t *args);
json_t *tool_diff(struct mcp_call *c, const json_t *args);
json_t *tool_commit(struct mcp_call *c, const json_t *args);
json_t *tool_run_gauntlet(struct mcp_call *c, const json_t *args);
json_t *tool_run_plan(struct mcp_call *c, const json_t *args);
json_t *tool_run_code(struct mcp_call *c, const json_t *args);
json_t *tool_restart_code(struct mcp_call *c, const json_t *args);
json_t *tool_end_code(struct mcp_call *c, const json_t *args);

json_t *tool_snapshot_sandbox(struct mcp_call *c, const json_t *args);
json_t *tool_list_snapshots(struct mcp_call *c, const json_t *args);
json_t *tool_fork_sandbox(struct mcp_call *c, const json_t *args);
json_t *tool_restore_sandbox(struct mcp_call *c, const json_t *args);
json_t *tool_delete_snapshot(struct mcp_call *c, const json_t *args);

/* Creates a sandbox from args (image, limits, repo, base, branch, egress, env,
 * idle_timeout) and records it in the session (kept when keep): its id (the
 * caller's to free), or NULL with *fail set. *sandbox gets the API's Sandbox
 * object when not NULL. */
char *tool_sandbox_create(struct mcp_call *c, const json_t *args, bool keep, json_t **sandbox,
                          json_t **fail);

#endif
