/* An HTTP answer as libcurl reads it (see http_sink.h). */
#include <stdlib.h>
#include <string.h>

#include "http_sink.h"

static bool answered_ok(const struct http_sink *s)
{
    long status = 0;
    if (s->curl)
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    return status >= 200 && status < 300;
}

/* Passes one line (len bytes at line) on; false when on_line asked to stop. Lines that are not
 * JSON and the daemon's heartbeats are skipped. */
static bool pass_line(struct http_sink *s, const char *line, size_t len)
{
    json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
    const char *ev = json_string_value(json_object_get(j, "event"));
    bool go_on = !j || (ev && strcmp(ev, "heartbeat") == 0) || s->on_line(s->ctx, j);
    json_decref(j);
    if (!go_on)
        s->stopped = true;
    return go_on;
}

static bool pass_lines(struct http_sink *s)
{
    char *nl;
    while ((nl = memchr(s->data + s->consumed, '\n', s->len - s->consumed))) {
        size_t start = s->consumed;
        s->consumed = (size_t)(nl - s->data) + 1;
        if (!pass_line(s, s->data + start, (size_t)(nl - s->data) - start))
            return false;
    }
    /* What was passed on is dropped: a long stream does not pile up in memory. */
    memmove(s->data, s->data + s->consumed, s->len - s->consumed + 1);
    s->len -= s->consumed;
    s->consumed = 0;
    return true;
}

size_t http_sink_write(char *p, size_t size, size_t n, void *ud)
{
    struct http_sink *s = ud;
    size_t len = size * n;
    size_t max = s->max ? s->max : HTTP_SINK_MAX;
    if (len > max - s->len) {
        s->overflow = true;
        return 0;
    }
    char *d = realloc(s->data, s->len + len + 1);
    if (!d)
        return 0;
    memcpy(d + s->len, p, len);
    s->len += len;
    d[s->len] = '\0';
    s->data = d;
    if (s->on_line && answered_ok(s) && !pass_lines(s))
        return 0;
    return len;
}

void http_sink_finish(struct http_sink *s)
{
    if (s->on_line && !s->stopped && s->len > s->consumed && answered_ok(s))
        pass_line(s, s->data + s->consumed, s->len - s->consumed);
}

void http_answer_error(int status, json_t *j, clr_error *err)
{
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    /* Without a code we know (a proxy's answer, an older daemon), the status says the class. */
    clr_error_code c = status == 400                   ? CLR_E_INVALID
                       : status == 401 || status == 403 ? CLR_E_DENIED
                       : status == 404                   ? CLR_E_NOT_FOUND
                       : status == 409                   ? CLR_E_CONFLICT
                       : status == 413 || status == 429 ? CLR_E_LIMIT
                       : status == 502                   ? CLR_E_ENGINE
                       : status == 503                   ? CLR_E_UNAVAILABLE
                       : status == 504                   ? CLR_E_TIMEOUT
                       : status == 507                   ? CLR_E_NO_SPACE
                       : status == 501                   ? CLR_E_UNSUPPORTED
                                                         : CLR_E_INTERNAL;
    for (int i = CLR_E_INVALID; i <= CLR_E_UNSUPPORTED; i++) {
        if (code && strcmp(code, clr_error_code_name((clr_error_code)i)) == 0)
            c = (clr_error_code)i;
    }
    clr_error_set(err, c, 0, "%s (HTTP %d)", msg ? msg : "the daemon answered an error", status);
}
