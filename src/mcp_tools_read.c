/* The read_file tool: a file of the sandbox's /workspace given to the model as its bytes
 * are: text when they are UTF-8 without NUL, else base64-encoded, an image also as MCP image
 * content (which a model can see). One GET .../files/{path} (docs/openapi.yaml), with a byte
 * range (Range header) when the call names offset or length. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tools_int.h"

#define READ_CAP (1024u * 1024) /* bytes of a file given to the model */

static char *base64(const unsigned char *p, size_t n)
{
    static const char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = digits[(v >> 18) & 63];
        *o++ = digits[(v >> 12) & 63];
        *o++ = i + 1 < n ? digits[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? digits[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* The image type p's first bytes name (those MCP hosts show), or NULL. */
static const char *image_type(const unsigned char *p, size_t n)
{
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (n >= 3 && memcmp(p, "\xff\xd8\xff", 3) == 0)
        return "image/jpeg";
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return "image/gif";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "image/webp";
    return NULL;
}

/* Whether p[0..n) is UTF-8 text: valid, and no NUL byte. */
static bool is_text(const char *p, size_t n)
{
    if (memchr(p, '\0', n))
        return false;
    json_t *j = json_stringn(p, n); /* NULL when not UTF-8 */
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

static json_t *text_result(const json_t *path, char *data, size_t len)
{
    bool cut = len > READ_CAP;
    size_t n = cut ? tool_utf8_cut(data, READ_CAP) : len;
    json_t *st = json_pack("{s:O, s:s%, s:s, s:I, s:b}", "path", path, "content", data, n,
                           "encoding", "utf-8", "size", (json_int_t)len, "truncated", cut);
    if (!st)
        return tool_error("read_file: out of memory");
    data[n] = '\0';
    if (!cut)
        return tool_result(st, false, "%s", data);
    return tool_result(st, false,
                       "%s\n[cut at %zu of %zu bytes: read the rest with read_file's offset "
                       "%zu (and length, at most %u)]",
                       data, n, len, n, READ_CAP);
}

static json_t *binary_result(const json_t *path, const char *data, size_t len)
{
    const char *p = json_string_value(path);
    if (len > READ_CAP)
        return tool_error(
            "read_file: %s is %zu bytes that are not UTF-8 text, more than the %u bytes "
            "read_file returns of such a file at once. Read it in parts with read_file's "
            "offset and length: offset 0, %u, %u, ... with length %u (each part comes "
            "base64-encoded)",
            p, len, READ_CAP, READ_CAP, 2 * READ_CAP, READ_CAP);
    _cleanup_free_ char *enc = base64((const unsigned char *)data, len);
    const char *mime = image_type((const unsigned char *)data, len);
    json_t *st = enc ? json_pack("{s:O, s:s, s:s, s:I, s:b, s:s*}", "path", path, "content", enc,
                                 "encoding", "base64", "size", (json_int_t)len, "truncated", 0,
                                 "mime_type", mime)
                     : NULL;
    if (!st)
        return tool_error("read_file: out of memory");
    if (!mime)
        return tool_result(st, false,
                           "%s: %zu bytes that are not UTF-8 text, base64-encoded:\n%s", p, len,
                           enc);
    json_t *r = tool_result(st, false, "%s: a %s image of %zu bytes", p, mime, len);
    json_array_insert_new(json_object_get(r, "content"), 0,
                          json_pack("{s:s, s:s, s:s}", "type", "image", "data", enc, "mimeType",
                                    mime));
    return r;
}

/* length bytes from offset (fewer at the file's end), asked of the API as a byte range: as
 * text when they are UTF-8 without NUL (a range that cuts a character is not), else
 * base64-encoded; size is the whole file's. */
static json_t *range_result(struct mcp_call *c, const json_t *args, const char *path)
{
    json_t *fail = NULL;
    const json_t *jo = json_object_get(args, "offset"), *jl = json_object_get(args, "length");
    uint64_t offset = jo ? (uint64_t)json_integer_value(jo) : 0;
    uint64_t length = jl ? (uint64_t)json_integer_value(jl) : READ_CAP;
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    uint64_t total = 0;
    if (tool_call_range(c, path, offset, length, &data, &len, &total, &fail, "read_file") < 0)
        return fail;
    const json_t *p = json_object_get(args, "path");
    bool text = is_text(data, len);
    _cleanup_free_ char *enc = text ? NULL : base64((const unsigned char *)data, len);
    if (!text && !enc)
        return tool_error("read_file: out of memory");
    json_t *st = json_pack("{s:O, s:s%, s:s, s:I, s:I, s:I, s:b}", "path", p, "content",
                           text ? data : enc, text ? len : strlen(enc), "encoding",
                           text ? "utf-8" : "base64", "size", (json_int_t)total, "offset",
                           (json_int_t)offset, "length", (json_int_t)len, "truncated",
                           offset + len < total);
    if (!st)
        return tool_error("read_file: out of memory");
    return tool_result(st, false, "bytes %llu to %llu of %llu of %s%s:\n%s",
                       (unsigned long long)offset, (unsigned long long)(offset + len - 1),
                       (unsigned long long)total, json_string_value(p),
                       text ? "" : " (not UTF-8 text: base64-encoded)", text ? data : enc);
}

json_t *tool_read_file(struct mcp_call *c, const json_t *args)
{
    json_t *fail = NULL;
    char path[4300];
    if (!tool_sandbox_file(args, path, sizeof(path), &fail))
        return fail;
    if (json_object_get(args, "offset") || json_object_get(args, "length"))
        return range_result(c, args, path);
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    if (tool_call_bytes(c, path, &data, &len, &fail, "read_file") < 0)
        return fail;
    const json_t *p = json_object_get(args, "path");
    if (is_text(data, len))
        return text_result(p, data, len);
    return binary_result(p, data, len);
}
