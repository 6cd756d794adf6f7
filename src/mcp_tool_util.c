/* What every MCP tool shares: see mcp_tool_util.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_tool_util.h"

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A schema type's name with its article: "an array". */
static const char *with_article(const char *t)
{
    static const char *const names[][2] = {{"string", "a string"}, {"integer", "an integer"},
                                           {"number", "a number"}, {"boolean", "a boolean"},
                                           {"array", "an array"},  {"object", "an object"},
                                           {"null", "null"}};
    for (size_t i = 0; t && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(t, names[i][0]) == 0)
            return names[i][1];
    }
    return t ? t : "?";
}

static bool type_is(const char *t, const json_t *v)
{
    return (strcmp(t, "string") == 0 && json_is_string(v)) ||
           (strcmp(t, "integer") == 0 && json_is_integer(v)) ||
           (strcmp(t, "number") == 0 && json_is_number(v)) ||
           (strcmp(t, "boolean") == 0 && json_is_boolean(v)) ||
           (strcmp(t, "array") == 0 && json_is_array(v)) ||
           (strcmp(t, "object") == 0 && json_is_object(v)) ||
           (strcmp(t, "null") == 0 && json_is_null(v));
}

/* The type keyword: 0, or -1 with why. */
static int check_type(const json_t *schema, const json_t *v, const char *at, char *why, size_t len)
{
    const json_t *t = json_object_get(schema, "type");
    if (!t)
        return 0;
    if (json_is_string(t) && type_is(json_string_value(t), v))
        return 0;
    char want[128] = "";
    size_t i;
    json_t *e;
    if (json_is_array(t)) {
        json_array_foreach (t, i, e) {
            if (type_is(json_string_value(e), v))
                return 0;
            snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i ? " or " : "",
                     with_article(json_string_value(e)));
        }
    } else {
        snprintf(want, sizeof(want), "%s", with_article(json_string_value(t)));
    }
    snprintf(why, len, "%s must be %s, not %s", at, want, json_kind(v));
    return -1;
}

static int check_value(const json_t *schema, const json_t *v, const char *at, char *why,
                       size_t len);

static int check_object(const json_t *schema, const json_t *v, const char *at, char *why,
                        size_t len)
{
    const json_t *props = json_object_get(schema, "properties");
    size_t i;
    json_t *r;
    json_array_foreach (json_object_get(schema, "required"), i, r) {
        if (!json_object_get(v, json_string_value(r))) {
            snprintf(why, len, "%s: the field '%s' is missing (it is required)", at,
                     json_string_value(r));
            return -1;
        }
    }
    const char *k;
    json_t *fv;
    json_object_foreach ((json_t *)v, k, fv) {
        const json_t *ps = json_object_get(props, k);
        char sub[256];
        snprintf(sub, sizeof(sub), "%s%s%s", strcmp(at, "arguments") ? at : "",
                 strcmp(at, "arguments") ? "." : "", k);
        if (!ps && json_is_false(json_object_get(schema, "additionalProperties"))) {
            char names[512] = "";
            const char *pk;
            json_t *pv;
            json_object_foreach ((json_t *)props, pk, pv)
                snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                         names[0] ? ", " : "", pk);
            snprintf(why, len, "%s: unknown field '%.64s' (the fields are: %s)", at, k, names);
            return -1;
        }
        if (ps && check_value(ps, fv, sub, why, len) < 0)
            return -1;
    }
    return 0;
}

static int check_value(const json_t *schema, const json_t *v, const char *at, char *why, size_t len)
{
    if (check_type(schema, v, at, why, len) < 0)
        return -1;
    const json_t *en = json_object_get(schema, "enum");
    if (en) {
        size_t i;
        json_t *e;
        char list[256] = "";
        json_array_foreach (en, i, e) {
            if (json_equal(e, (json_t *)v))
                return 0;
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                     json_string_value(e) ? json_string_value(e) : "?");
        }
        snprintf(why, len, "%s must be one of: %s", at, list);
        return -1;
    }
    const json_t *mn = json_object_get(schema, "minimum"), *mx = json_object_get(schema, "maximum");
    if (json_is_number(v) && ((mn && json_number_value(v) < json_number_value(mn)) ||
                              (mx && json_number_value(v) > json_number_value(mx)))) {
        snprintf(why, len, "%s must be %g..%g", at, mn ? json_number_value(mn) : 0.0,
                 mx ? json_number_value(mx) : 1e18);
        return -1;
    }
    if (json_is_object(v))
        return check_object(schema, v, at, why, len);
    if (json_is_array(v)) {
        const json_t *mi = json_object_get(schema, "minItems");
        if (mi && json_array_size(v) < (size_t)json_integer_value(mi)) {
            snprintf(why, len, "%s must have at least %lld items", at,
                     (long long)json_integer_value(mi));
            return -1;
        }
        const json_t *items = json_object_get(schema, "items");
        size_t i;
        json_t *e;
        json_array_foreach (v, i, e) {
            char sub[256];
            snprintf(sub, sizeof(sub), "%s[%zu]", at, i);
            if (items && check_value(items, e, sub, why, len) < 0)
                return -1;
        }
    }
    return 0;
}

int tool_check_args(const json_t *schema, const json_t *value, char *why, size_t len)
{
    return check_value(schema, value, "arguments", why, len);
}

/* The length of the UTF-8 sequence at p (n > 0 bytes left) when it is valid and not NUL,
 * else 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0], min;
    size_t len;
    if (c < 0x80)
        return c ? 1 : 0;
    if ((c & 0xE0) == 0xC0) {
        len = 2, min = 0x80, c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return len;
}

char *tool_utf8(const char *s, size_t n)
{
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
            o += 3;
            i++;
        }
    }
    *o = '\0';
    return out;
}

size_t tool_utf8_cut(const char *p, size_t cap)
{
    size_t k = cap;
    while (k > 0 && k + 4 > cap && ((unsigned char)p[k] & 0xC0) == 0x80)
        k--;
    return k;
}

json_t *tool_result(json_t *structured, bool is_error, const char *fmt, ...)
{
    _cleanup_json_ json_t *st = structured;
    char *raw = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&raw, fmt, ap);
    va_end(ap);
    /* Text that is not UTF-8 (a diff of a Latin-1 file) would make no result at all. */
    char *text = n >= 0 && raw ? tool_utf8(raw, (size_t)n) : NULL;
    free(raw);
    json_t *r = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text",
                          text ? text : "(no text)", "isError", is_error);
    free(text);
    if (r && st)
        json_object_set(r, "structuredContent", st);
    return r;
}

/* What a model can do about an API error of this class. */
static const char *hint(int status)
{
    switch (status) {
    case 400: return " Fix the argument the message names and call again.";
    case 403: return " The daemon's operator does not allow this; choose another value.";
    case 404:
        return " Check the id (list_sandboxes lists this session's sandboxes; a "
               "destroyed "
               "sandbox is gone) or the path (list_files).";
    case 409:
        return " The sandbox cannot do this in its state (inspect it with "
               "list_sandboxes).";
    case 429:
        return " A limit or quota is reached: destroy sandboxes you no longer "
               "need, or wait.";
    case 501:
        return " This daemon's engine cannot do this (the message says what its operator "
               "must enable); do without it.";
    case 503: return " The daemon cannot do this now; try again later.";
    default: return "";
    }
}

/* A call's status turned into the tool's error result when it failed: true then,
 * with a and t freed and *fail set. */
static bool call_failed(int st, json_t *a, char *t, const clr_error *err, json_t **fail,
                        const char *what)
{
    if (st < 0) {
        *fail = tool_error("%s: the clearing daemon could not be reached: %s", what, err->message);
    } else if (st >= 400) {
        json_t *e = json_object_get(a, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        *fail = tool_error("%s failed: %s (%s, HTTP %d).%s", what,
                           msg ? msg : (t ? t : "the API answered an error"), code ? code : "error",
                           st, hint(st));
    } else {
        return false;
    }
    json_decref(a);
    free(t);
    return true;
}

int tool_call(struct mcp_call *c, const char *method, const char *path, const json_t *body,
              json_t **answer, char **text, json_t **fail, const char *what)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *a = NULL;
    char *t = NULL;
    mcp_call_log(c, 0, "%s %s", method, path);
    int st = c->be->call(c->be->ctx, method, path, body, &a, &t, &err);
    if (call_failed(st, a, t, &err, fail, what))
        return -1;
    if (answer)
        *answer = a;
    else
        json_decref(a);
    if (text)
        *text = t;
    else
        free(t);
    return st;
}

int tool_call_bytes(struct mcp_call *c, const char *path, char **data, size_t *len,
                    json_t **fail, const char *what)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *a = NULL;
    char *t = NULL;
    size_t n = 0;
    mcp_call_log(c, 0, "GET %s", path);
    int st = c->be->call_bytes
                 ? c->be->call_bytes(c->be->ctx, "GET", path, NULL, &a, &t, &n, &err)
                 : c->be->call(c->be->ctx, "GET", path, NULL, &a, &t, &err);
    if (call_failed(st, a, t, &err, fail, what))
        return -1;
    if (!c->be->call_bytes)
        n = t ? strlen(t) : 0;
    if (!t && a) {
        /* A backend that parsed a file holding JSON: its text again. */
        t = json_dumps(a, JSON_ENCODE_ANY | JSON_INDENT(2));
        n = t ? strlen(t) : 0;
    }
    json_decref(a);
    *data = t ? t : strdup("");
    *len = n;
    if (!*data) {
        *fail = tool_error("%s: out of memory", what);
        return -1;
    }
    return st;
}

/* The range of a whole file (data, *len bytes) moved to its start; *total its size. On an offset
 * past the end, -1 with *fail (data is left to the caller). */
static int cut_range(char *data, size_t *len, uint64_t offset, uint64_t length,
                     uint64_t *total, json_t **fail, const char *what)
{
    *total = *len;
    if (offset >= *len) {
        *fail = tool_error("%s: offset %llu is past the file's end: it has %zu bytes", what,
                           (unsigned long long)offset, *len);
        return -1;
    }
    size_t n = *len - offset < length ? *len - (size_t)offset : (size_t)length;
    memmove(data, data + offset, n);
    data[n] = '\0';
    *len = n;
    return 0;
}

int tool_call_range(struct mcp_call *c, const char *path, uint64_t offset, uint64_t length,
                    char **data, size_t *len, uint64_t *total, json_t **fail, const char *what)
{
    int st;
    if (!c->be->call_range) {
        st = tool_call_bytes(c, path, data, len, fail, what);
        if (st < 0)
            return -1;
        if (cut_range(*data, len, offset, length, total, fail, what) < 0) {
            free(steal_pointer(data));
            return -1;
        }
        return st;
    }
    clr_error err = CLR_ERROR_INIT;
    json_t *a = NULL;
    char *t = NULL;
    size_t n = 0;
    mcp_call_log(c, 0, "GET %s (bytes %llu-%llu)", path, (unsigned long long)offset,
                 (unsigned long long)(offset + length - 1));
    st = c->be->call_range(c->be->ctx, path, offset, offset + length - 1, &a, &t, &n, total,
                           &err);
    if (call_failed(st, a, t, &err, fail, what))
        return -1;
    if (!t && a) {
        /* A file holding JSON, whole (a server that ignored the range): its text again. */
        t = json_dumps(a, JSON_ENCODE_ANY | JSON_INDENT(2));
        n = t ? strlen(t) : 0;
    }
    json_decref(a);
    if (!t) {
        *fail = tool_error("%s: out of memory", what);
        return -1;
    }
    if (st != 206 && cut_range(t, &n, offset, length, total, fail, what) < 0) {
        free(t);
        return -1;
    }
    *data = t;
    *len = n;
    return st;
}

int tool_file_path(const json_t *args, const char *sid, char *out, size_t len, json_t **fail)
{
    const char *p = json_string_value(json_object_get(args, "path"));
    while (p && *p == '/')
        p++;
    if (strncmp(p ? p : "", "workspace/", 10) == 0)
        p += 10;
    if (!p || !*p) {
        *fail = tool_error("path must name a file relative to /workspace, e.g. \"src/main.py\"");
        return -1;
    }
    char enc[4096];
    tool_urlencode(enc, sizeof(enc), p, true);
    snprintf(out, len, "/v1/sandboxes/%s/files/%s", sid, enc);
    return 0;
}

const char *tool_sandbox_id(const json_t *args, json_t **fail)
{
    const char *id = json_string_value(json_object_get(args, "sandbox_id"));
    bool ok = id && strlen(id) == 19 && strncmp(id, "sb-", 3) == 0 &&
              strspn(id + 3, "0123456789abcdef") == 16;
    if (!ok) {
        *fail = tool_error("sandbox_id '%.64s' is not a sandbox id (sb- and 16 hex digits): take "
                           "it from create_sandbox's answer or from list_sandboxes",
                           id ? id : "");
        return NULL;
    }
    return id;
}

const char *tool_sandbox_path(const json_t *args, const char *suffix, char *out, size_t len,
                              json_t **fail)
{
    const char *sid = tool_sandbox_id(args, fail);
    if (sid)
        snprintf(out, len, "/v1/sandboxes/%s%s", sid, suffix);
    return sid;
}

const char *tool_sandbox_file(const json_t *args, char *out, size_t len, json_t **fail)
{
    const char *sid = tool_sandbox_id(args, fail);
    return sid && tool_file_path(args, sid, out, len, fail) == 0 ? sid : NULL;
}

void tool_urlencode(char *out, size_t len, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch) || (keep_slash && ch == '/')) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

/* The last max bytes of s (at a line start when one is near), for a short text.
 */
static const char *tail(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n <= max)
        return s ? s : "";
    const char *t = s + n - max;
    const char *nl = strchr(t, '\n');
    return nl && nl - t < 200 ? nl + 1 : t;
}

char *tool_exec_summary(const json_t *result, const char *out, const char *errs)
{
    const char *status = json_string_value(json_object_get(result, "status"));
    const json_t *code = json_object_get(result, "exit_code");
    const char *msg = json_string_value(json_object_get(result, "message"));
    char head[512];
    if (status && strcmp(status, "exited") == 0)
        snprintf(head, sizeof(head), "exit code %lld", (long long)json_integer_value(code));
    else
        snprintf(head, sizeof(head), "%s%s%s", status ? status : "no result", msg ? ": " : "",
                 msg ? msg : "");
    char *text = NULL;
    int n =
        asprintf(&text,
                 "%s (wall %.3f s, peak memory %lld KiB)\n--- stdout%s ---\n%s\n"
                 "--- stderr%s ---\n%s",
                 head, (double)json_integer_value(json_object_get(result, "wall_us")) / 1e6,
                 (long long)json_integer_value(json_object_get(result, "peak_memory_bytes")) / 1024,
                 out && strlen(out) > 8192 ? " (last 8 KiB)" : "", tail(out, 8192),
                 errs && strlen(errs) > 8192 ? " (last 8 KiB)" : "", tail(errs, 8192));
    return n < 0 ? NULL : text;
}
