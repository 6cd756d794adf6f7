/* The MCP tools' backend over a daemon's REST API: see mcp_client.h. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup_json.h"
#include "mcp_client.h"

/* A JSON or text answer larger than this is refused (a file or a diff is at most 1 GiB on the
 * daemon; the tools give a model far less). */
#define MAX_ANSWER (64u * 1024 * 1024)

struct sink {
    char *data;
    size_t len;
    bool overflow;
    bool (*on_line)(void *lctx, json_t *line);
    void *lctx;
    size_t consumed;
    bool stopped;
};

/* Passes the complete lines of s to its on_line; false when on_line asked to stop. */
static bool sink_lines(struct sink *s)
{
    char *nl;
    while ((nl = memchr(s->data + s->consumed, '\n', s->len - s->consumed))) {
        size_t n = (size_t)(nl - s->data) - s->consumed;
        json_t *j = json_loadb(s->data + s->consumed, n, JSON_ALLOW_NUL, NULL);
        s->consumed = (size_t)(nl - s->data) + 1;
        bool go_on = !j || s->on_line(s->lctx, j);
        json_decref(j);
        if (!go_on) {
            s->stopped = true;
            return false;
        }
    }
    /* What was passed on is dropped, so a long stream does not grow the buffer. */
    memmove(s->data, s->data + s->consumed, s->len - s->consumed);
    s->len -= s->consumed;
    s->consumed = 0;
    return true;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    if (s->len + len > MAX_ANSWER) {
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
    if (s->on_line && !sink_lines(s))
        return 0; /* abandons the request */
    return len;
}

struct request {
    const char *method, *path;
    const char *body; /* or NULL */
    size_t body_len;
    const char *content_type;
};

/* One request to the daemon at sock: the HTTP status, or -1 with err. */
static int perform(const char *sock, const struct request *rq, struct sink *s, char *ctype,
                   size_t ctype_len, clr_error *err)
{
    char url[8192];
    snprintf(url, sizeof(url), "http://clearing%s", rq->path);
    CURL *c = curl_easy_init();
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    char ct[128];
    snprintf(ct, sizeof(ct), "Content-Type: %s", rq->content_type);
    struct curl_slist *h = curl_slist_append(NULL, ct);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (rq->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    char *got_type = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &got_type);
    if (ctype)
        snprintf(ctype, ctype_len, "%s", got_type ? got_type : "");
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc == CURLE_WRITE_ERROR && s->stopped)
        return (int)status; /* the caller stopped reading */
    if (rc != CURLE_OK)
        return clr_error_set(
            err, CLR_E_UNAVAILABLE, EIO, "talking to the clearing daemon at %s: %s%s", sock,
            curl_easy_strerror(rc), s->overflow ? " (the answer is too large)" : "");
    return (int)status;
}

/* The answer of s as JSON into *answer, or as text into *text. */
static void take_answer(struct sink *s, const char *ctype, json_t **answer, char **text)
{
    json_t *j = NULL;
    if (s->len && strncmp(ctype, "application/json", 16) == 0)
        j = json_loadb(s->data, s->len, JSON_ALLOW_NUL, NULL);
    if (answer)
        *answer = j;
    else
        json_decref(j);
    if (!j && text && s->data) {
        *text = s->data;
        s->data = NULL;
    }
}

static int backend_call(void *ctx, const char *method, const char *path, const json_t *body,
                        json_t **answer, char **text, clr_error *err)
{
    _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct request rq = {method, path, payload, payload ? strlen(payload) : 0, "application/json"};
    struct sink s = {0};
    char ctype[128];
    if (answer)
        *answer = NULL;
    if (text)
        *text = NULL;
    int st = perform(ctx, &rq, &s, ctype, sizeof(ctype), err);
    if (st >= 0)
        take_answer(&s, ctype, answer, text);
    free(s.data);
    return st;
}

static int backend_upload(void *ctx, const char *path, const void *data, size_t len,
                          json_t **answer, clr_error *err)
{
    /* libcurl sends no body for a zero-length POSTFIELDS unless given a pointer. */
    struct request rq = {"PUT", path, data ? data : "", len, "application/octet-stream"};
    struct sink s = {0};
    char ctype[128];
    if (answer)
        *answer = NULL;
    int st = perform(ctx, &rq, &s, ctype, sizeof(ctype), err);
    if (st >= 0)
        take_answer(&s, ctype, answer, NULL);
    free(s.data);
    return st;
}

static int backend_stream(void *ctx, const char *method, const char *path, const json_t *body,
                          bool (*on_line)(void *lctx, json_t *line), void *lctx, clr_error *err)
{
    _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct request rq = {method, path, payload, payload ? strlen(payload) : 0, "application/json"};
    struct sink s = {.on_line = on_line, .lctx = lctx};
    char ctype[128];
    int st = perform(ctx, &rq, &s, ctype, sizeof(ctype), err);
    if (st >= 400) {
        /* An error answer is one JSON object, not a stream. */
        json_t *j = s.len ? json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL) : NULL;
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        clr_error_set(err, CLR_E_INVALID, 0, "%s (HTTP %d)", m ? m : "refused", st);
        json_decref(j);
    } else if (st >= 0 && s.len && !s.stopped) {
        json_t *j = json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL); /* a last unended line */
        if (j)
            on_line(lctx, j);
        json_decref(j);
    }
    free(s.data);
    return st;
}

void mcp_client_backend(struct mcp_backend *be, const char *socket_path)
{
    memset(be, 0, sizeof(*be));
    be->call = backend_call;
    be->stream = backend_stream;
    be->upload = backend_upload;
    be->ctx = (void *)socket_path;
}

bool mcp_client_answers(const char *socket_path, clr_error *err)
{
    struct mcp_backend be;
    mcp_client_backend(&be, socket_path);
    return be.call(be.ctx, "GET", "/v1/health", NULL, NULL, NULL, err) > 0;
}
