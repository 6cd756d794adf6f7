/* Answers and query parameters of the HTTP server (see http.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "http_range.h"

int http_status(clr_error_code code)
{
    switch (code) {
    case CLR_E_INVALID: return MHD_HTTP_BAD_REQUEST;
    case CLR_E_NOT_FOUND: return MHD_HTTP_NOT_FOUND;
    case CLR_E_CONFLICT: return MHD_HTTP_CONFLICT;
    case CLR_E_LIMIT: return MHD_HTTP_TOO_MANY_REQUESTS;
    case CLR_E_UNAVAILABLE: return MHD_HTTP_SERVICE_UNAVAILABLE;
    case CLR_E_DENIED: return MHD_HTTP_FORBIDDEN; /* a policy; a bad token is answered apart */
    case CLR_E_TIMEOUT: return MHD_HTTP_GATEWAY_TIMEOUT;
    case CLR_E_ENGINE: return MHD_HTTP_BAD_GATEWAY;
    case CLR_E_NO_SPACE: return MHD_HTTP_INSUFFICIENT_STORAGE;
    case CLR_E_UNSUPPORTED: return MHD_HTTP_NOT_IMPLEMENTED;
    case CLR_E_NONE:
    case CLR_E_INTERNAL:
    default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type,
                          char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Takes ownership of j. */
enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s)
        return MHD_NO;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return MHD_NO;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    return send_text(c, status, "application/json", t);
}

enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code,
                           const char *message)
{
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    if (!j) {
        /* A message that is not UTF-8 (bytes from a sandbox, cut by a format's precision)
         * would leave the client with no answer at all: its other bytes are sent as '?'. */
        char ascii[1024];
        size_t i;
        for (i = 0; message[i] && i < sizeof(ascii) - 1; i++)
            ascii[i] = (unsigned char)message[i] < 0x80 ? message[i] : '?';
        ascii[i] = '\0';
        j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", ascii);
    }
    return send_json(c, status, j);
}

enum MHD_Result send_clr_error(struct MHD_Connection *c, const clr_error *err)
{
    return send_error(c, http_status(err->code), clr_error_code_name(err->code), err->message);
}

enum MHD_Result send_empty(struct MHD_Connection *c, int status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result send_fd(struct MHD_Connection *c, int fd, uint64_t size, const char *type)
{
    lseek(fd, 0, SEEK_SET);
    struct MHD_Response *r = MHD_create_response_from_fd64(size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* A known path with another method: 405 with the Allow header that lists what it takes. */
enum MHD_Result send_method_not_allowed(struct MHD_Connection *c, const char *method,
                                        const char *allowed)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "method %.16s is not allowed here; allowed: %s", method, allowed);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", "invalid", "message", msg);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct MHD_Response *r =
        t ? MHD_create_response_from_buffer(strlen(t), t, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
        free(t);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Allow", allowed);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return ret;
}

int query_uint(struct MHD_Connection *c, const char *name, uint64_t *out, clr_error *err)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return 0;
    if (clr_parse_uint(out, v, err) < 0)
        return clr_error_prefix(err, "query parameter %s", name);
    return 0;
}

int query_duration(struct MHD_Connection *c, const char *name, uint64_t *out,
                   clr_error *err)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return 0;
    if (clr_parse_duration_ms(out, v, err) < 0)
        return clr_error_prefix(err, "query parameter %s", name);
    return 0;
}

bool query_true(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v && (!strcmp(v, "true") || !strcmp(v, "1"));
}

int tmpfile_fd(void)
{
    int fd = open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    return fd;
}


enum MHD_Result send_fd_range(struct MHD_Connection *c, int fd, uint64_t size, const char *type)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
    uint64_t first = 0, last = 0;
    enum http_range kind = http_range_parse(h, size, &first, &last);
    if (kind == HTTP_RANGE_NONE)
        return send_fd(c, fd, size, type);
    char cr[96], msg[200];
    if (kind == HTTP_RANGE_UNSATISFIABLE) {
        close(fd);
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
        snprintf(msg, sizeof(msg), "range %.60s: the file has %llu bytes (offsets 0 to its size "
                 "- 1)", h, (unsigned long long)size);
        json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", "invalid", "message", msg);
        char *t = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        struct MHD_Response *r =
            t ? MHD_create_response_from_buffer(strlen(t), t, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!r) {
            free(t);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
        MHD_destroy_response(r);
        return ret;
    }
    struct MHD_Response *r =
        MHD_create_response_from_fd_at_offset64(last - first + 1, fd, first);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)first,
             (unsigned long long)last, (unsigned long long)size);
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_PARTIAL_CONTENT, r);
    MHD_destroy_response(r);
    return ret;
}
