/* The daemon's own MCP backend (see mcp_self.h): one libcurl request per call, over the
 * daemon's unix socket, with the narrowing headers of the session's tenant. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/cleanup.h"
#include "mcp_self.h"

#define MAX_ANSWER (64u * 1024 * 1024) /* a file read, a diff: the API's own bounds are lower */

struct self {
    char socket_path[108];
    char tenant_header[96]; /* "X-Clearing-Tenant: T", or "" for the operator */
    char actor_header[160]; /* "X-Clearing-Actor: A" */
};

struct sink {
    char *data;
    size_t len;
    bool overflow;
    CURL *curl;
    /* A stream: lines go to on_line while the status is 2xx; an error answer is kept whole. */
    bool (*on_line)(void *lctx, json_t *line);
    void *lctx;
    bool stopped;
    size_t consumed;
    char ctype[128]; /* the answer's Content-Type ("" when it had none) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool sink_ok(struct sink *s)
{
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    return status >= 200 && status < 300;
}

/* Passes every whole line to on_line, the daemon's heartbeats skipped. false: stop reading. */
static bool sink_lines(struct sink *s)
{
    char *nl;
    while ((nl = memchr(s->data + s->consumed, '\n', s->len - s->consumed))) {
        size_t start = s->consumed;
        s->consumed = (size_t)(nl - s->data) + 1;
        json_t *j = json_loadb(s->data + start, (size_t)(nl - s->data) - start, 0, NULL);
        const char *ev = json_string_value(json_object_get(j, "event"));
        bool beat = ev && !strcmp(ev, "heartbeat");
        bool go = !j || beat || s->on_line(s->lctx, j);
        json_decref(j);
        if (!go) {
            s->stopped = true;
            return false;
        }
    }
    /* What was passed on is dropped: a long stream does not pile up in memory. */
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
    if (s->on_line && sink_ok(s) && !sink_lines(s))
        return 0;
    return len;
}

/* A request's body: JSON, or raw bytes (an upload). */
struct payload {
    const char *data;
    size_t len;
    const char *type; /* its Content-Type header line */
};

static int perform_raw(struct self *self, const char *method, const char *path,
                       const struct payload *payload, struct sink *s, clr_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    char url[4096];
    if ((size_t)snprintf(url, sizeof(url), "http://clearing%s", path) >= sizeof(url))
        return clr_error_set(err, CLR_E_INVALID, 0, "path too long for the API: %.80s...", path);
    CURL *c = curl_easy_init();
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    s->curl = c;
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    if (payload)
        h = curl_slist_append(h, payload->type);
    if (self->tenant_header[0])
        h = curl_slist_append(h, self->tenant_header);
    h = curl_slist_append(h, self->actor_header);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, self->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    if (payload) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload->data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload->len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    const char *ct = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(s->ctype, sizeof(s->ctype), "%s", ct);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    s->curl = NULL;
    if (rc == CURLE_WRITE_ERROR && s->stopped)
        return (int)status; /* the caller stopped reading: the request is abandoned */
    if (s->overflow)
        return clr_error_set(err, CLR_E_LIMIT, 0, "the API's answer to %s %s is larger than "
                             "%u MiB", method, path, MAX_ANSWER >> 20);
    if (rc != CURLE_OK)
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "calling the daemon's own API at %s: %s",
                             self->socket_path, curl_easy_strerror(rc));
    return (int)status;
}

static int perform(struct self *self, const char *method, const char *path, const json_t *body,
                   struct sink *s, clr_error *err)
{
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    struct payload p = {text, text ? strlen(text) : 0, "Content-Type: application/json"};
    return perform_raw(self, method, path, body ? &p : NULL, s, err);
}

static int self_call(void *ctx, const char *method, const char *path, const json_t *body,
                     json_t **answer, char **text, clr_error *err)
{
    struct sink s = {0};
    if (answer)
        *answer = NULL;
    if (text)
        *text = NULL;
    int st = perform(ctx, method, path, body, &s, err);
    json_t *j = st >= 0 && s.len ? json_loadb(s.data, s.len, 0, NULL) : NULL;
    if (j && answer)
        *answer = j;
    else
        json_decref(j);
    if (!j && s.len && text)
        *text = steal_pointer(&s.data);
    free(s.data);
    return st;
}

/* As self_call, but an answer that is not JSON (a file's bytes) comes back exactly, with its
 * length: JSON is parsed only when the daemon said it sent JSON. */
static int self_call_bytes(void *ctx, const char *method, const char *path, const json_t *body,
                           json_t **answer, char **data, size_t *len, clr_error *err)
{
    struct sink s = {0};
    *answer = NULL;
    *data = NULL;
    *len = 0;
    int st = perform(ctx, method, path, body, &s, err);
    if (st >= 0 && s.len && strncmp(s.ctype, "application/json", 16) == 0)
        *answer = json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL);
    if (st >= 0 && !*answer) {
        /* The bytes as sent; an empty answer is an empty string, not NULL. */
        *len = s.len;
        *data = s.data ? steal_pointer(&s.data) : strdup("");
    }
    free(s.data);
    return st;
}

static int self_stream(void *ctx, const char *method, const char *path, const json_t *body,
                       bool (*on_line)(void *lctx, json_t *line), void *lctx, clr_error *err)
{
    struct sink s = {.on_line = on_line, .lctx = lctx};
    int st = perform(ctx, method, path, body, &s, err);
    if (st >= 300) {
        /* An error answer (one JSON object, not a stream): its message. */
        json_t *j = json_loadb(s.data ? s.data : "", s.len, 0, NULL);
        json_t *e = json_object_get(j, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        clr_error_code code = st == 400 ? CLR_E_INVALID
                              : st == 404 ? CLR_E_NOT_FOUND
                              : st == 409 ? CLR_E_CONFLICT
                              : st == 413 || st == 429 ? CLR_E_LIMIT
                                                       : CLR_E_INTERNAL;
        clr_error_set(err, code, 0, "%s (HTTP %d)", msg ? msg : "the API refused", st);
        json_decref(j);
    }
    free(s.data);
    return st;
}

static int self_upload(void *ctx, const char *path, const void *data, size_t len,
                       json_t **answer, clr_error *err)
{
    struct sink s = {0};
    struct payload p = {data, len, "Content-Type: application/octet-stream"};
    if (answer)
        *answer = NULL;
    int st = perform_raw(ctx, "PUT", path, &p, &s, err);
    json_t *j = st >= 0 && s.len ? json_loadb(s.data, s.len, 0, NULL) : NULL;
    if (answer)
        *answer = j;
    else
        json_decref(j);
    free(s.data);
    return st;
}

int mcp_self_backend(struct mcp_backend *out, const char *socket_path, const char *tenant,
                     const char *actor, clr_error *err)
{
    struct self *self = calloc(1, sizeof(*self));
    if (!self)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    snprintf(self->socket_path, sizeof(self->socket_path), "%s", socket_path);
    if (tenant && tenant[0])
        snprintf(self->tenant_header, sizeof(self->tenant_header), "X-Clearing-Tenant: %.63s",
                 tenant);
    snprintf(self->actor_header, sizeof(self->actor_header), "X-Clearing-Actor: %.128s", actor);
    *out = (struct mcp_backend){.call = self_call, .stream = self_stream, .upload = self_upload,
                                .call_bytes = self_call_bytes, .ctx = self};
    return 0;
}

void mcp_self_free(struct mcp_backend *b)
{
    if (!b)
        return;
    free(b->ctx);
    b->ctx = NULL;
}
