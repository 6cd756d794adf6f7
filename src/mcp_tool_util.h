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

/* s[0..n) as UTF-8 (a new string): each byte that does not begin a valid sequence (or is
 * NUL) replaced by U+FFFD. NULL when out of memory. */
char *tool_utf8(const char *s, size_t n);
/* cap, or less so that the first bytes of p (longer than cap) do not end inside a UTF-8
 * sequence. */
size_t tool_utf8_cut(const char *p, size_t cap);

/* A CallToolResult with one text content (made UTF-8 with tool_utf8); structured (taken over, may be NULL)
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

/* A GET of path whose answer is bytes (a file), through the backend's call_bytes
 * (call when it has none: the bytes up to the first NUL). Returns the HTTP status
 * (< 400) with *data (never NULL, NUL-terminated, to be freed) and *len, or -1
 * with *fail as tool_call. */
int tool_call_bytes(struct mcp_call *c, const char *path, char **data, size_t *len,
                    json_t **fail, const char *what);

/* length bytes of a file from offset (fewer at its end): a GET of path with a byte range
 * through the backend's call_range, else the whole file (tool_call_bytes) cut here. Returns the
 * HTTP status (< 400) with *data (never NULL, NUL-terminated, to be freed), *len and *total
 * (the file's size), or -1 with *fail as tool_call (an offset at or past the file's end too). */
int tool_call_range(struct mcp_call *c, const char *path, uint64_t offset, uint64_t length,
                    char **data, size_t *len, uint64_t *total, json_t **fail, const char *what);

/* "/v1/sandboxes/SID/files/PATH" with args.path (relative to /workspace; a leading
 * "/" or "/workspace/" is dropped) percent-encoded: 0, or -1 with *fail for an
 * empty path. */
int tool_file_path(const json_t *args, const char *sid, char *out, size_t len, json_t **fail);

/* args.sandbox_id checked (sb- and 16 hex digits): it, or NULL with *fail set.
 */
const char *tool_sandbox_id(const json_t *args, json_t **fail);

/* The prologue of a tool on one sandbox: args.sandbox_id checked (as tool_sandbox_id) and
 * "/v1/sandboxes/SID" followed by suffix ("" for the sandbox itself) in out: the id, or NULL
 * with *fail. */
const char *tool_sandbox_path(const json_t *args, const char *suffix, char *out, size_t len,
                              json_t **fail);
/* The same for a tool on one file: the sandbox's id checked and its file's path as
 * tool_file_path gives it in out: the id, or NULL with *fail. */
const char *tool_sandbox_file(const json_t *args, char *out, size_t len, json_t **fail);

/* s percent-encoded for a URL path (keep_slash: '/' stays) or query. */
void tool_urlencode(char *out, size_t len, const char *s, bool keep_slash);

/* A short text of an exec result (Result of docs/openapi.yaml): status, exit
 * code, times and the tails of its output. */
char *tool_exec_summary(const json_t *result, const char *stdout_text, const char *stderr_text);

#endif
