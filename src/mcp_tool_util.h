/* What every MCP tool shares: its arguments checked against its inputSchema,
 * its results, and REST calls whose failures become results a model can act on.
 * Below the tools; calls none. */
#ifndef CLR_MCP_TOOL_UTIL_H
#define CLR_MCP_TOOL_UTIL_H

#include "mcp_call.h"

/* Checks value against the subset of JSON Schema the tools' schemas use (type,
 * enum, properties, required, additionalProperties false, items, minItems,
 * minimum, maximum): 0, or -1 with why naming the field ("limits.memory must be
 * ...") and what it takes. */
int tool_check_args(const json_t *schema, const json_t *value, char *why, size_t len);

/* A CallToolResult with one text content; structured (taken over, may be NULL)
 * as its structuredContent. */
json_t *tool_result(json_t *structured, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* s, or d when s is NULL. */
static inline const char *str_or(const char *s, const char *d)
{
    return s ? s : d;
}

#define tool_error(...) tool_result(NULL, true, __VA_ARGS__)

/* One REST call through c's backend. Returns the HTTP status (< 400), or -1
 * with *fail the tool's error result: what failed ("exec in sb-...") and the
 * API's answer in words. */
int tool_call(struct mcp_call *c, const char *method, const char *path, const json_t *body,
              json_t **answer, char **text, json_t **fail, const char *what);

/* args.sandbox_id checked (sb- and 16 hex digits): it, or NULL with *fail set.
 */
const char *tool_sandbox_id(const json_t *args, json_t **fail);

/* s percent-encoded for a URL path (keep_slash: '/' stays) or query. */
void tool_urlencode(char *out, size_t len, const char *s, bool keep_slash);

/* A short text of an exec result (Result of docs/openapi.yaml): status, exit
 * code, times and the tails of its output. */
char *tool_exec_summary(const json_t *result, const char *stdout_text, const char *stderr_text);

#endif
