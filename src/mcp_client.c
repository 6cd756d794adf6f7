/* The MCP tools' backend over a daemon's REST API (see mcp_client.h): one libcurl request per
 * call, over the daemon's unix socket, with the narrowing headers of a tenant when given. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/cleanup.h"
#include "http_sink.h"
#include "mcp_client.h"

/* An answer larger than this is refused: a file read or a diff gives a model far less, and the
 * API's own bounds are lower. */
#define MAX_ANSWER (64u * 1024 * 1024)

struct backend {
    char socket_path[108];
    char tenant_header[96]; /* "X-Clearing-Tenant: T", or "" for none */
    char actor_header[160]; /* "X-Clearing-Actor: A", or "" for none */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A request's body: JSON, or raw bytes (an upload). */
struct payload {
    const char *data;
    size_t len;
    const char *type; /* its Content-Type header line */
};

/* What perform() gives back besides the status. */
struct answer {
    struct http_sink sink;
    char ctype[128]; /* the answer's Content-Type ("" when it had none) */
    const char *range;  /* a Range header line to send, or NULL */
    char crange[128];   /* the answer's Content-Range ("" when it had none) */
};

static struct curl_slist *headers(const struct backend *b, const struct payload *payload)
{
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    if (payload)
        h = curl_slist_append(h, payload->type);
    if (b->tenant_header[0])
        h = curl_slist_append(h, b->tenant_header);
    if (b->actor_header[0])
        h = curl_slist_append(h, b->actor_header);
    return h;
}

/* libcurl's progress callback (about once a second, also while nothing comes): a stream's reader
 * is asked, with no line, whether to go on; non-zero aborts the transfer. */
static int stream_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct http_sink *s = ud;
    if (s->stopped || s->on_line(s->ctx, NULL))
        return 0;
    s->stopped = true;
    return 1;
}

/* One request: the HTTP status, or -1 with err. */
static int perform_raw(const struct backend *b, const char *method, const char *path,
                       const struct payload *payload, struct answer *a, clr_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    char url[4096];
    if ((size_t)snprintf(url, sizeof(url), "http://clearing%s", path) >= sizeof(url))
        return clr_error_set(err, CLR_E_INVALID, 0, "path too long for the API: %.80s...", path);
    CURL *c = curl_easy_init();
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    struct curl_slist *h = headers(b, payload);
    if (a->range)
        h = curl_slist_append(h, a->range);
    a->sink.curl = c;
    a->sink.max = MAX_ANSWER;
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, b->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a->sink);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    if (a->sink.on_line) {
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &a->sink);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }
    if (payload) {
        /* libcurl sends no body for a zero-length POSTFIELDS unless given a pointer. */
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload->data ? payload->data : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload->len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    const char *ct = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        snprintf(a->ctype, sizeof(a->ctype), "%s", ct);
    struct curl_header *cr = NULL;
    if (curl_easy_header(c, "Content-Range", 0, CURLH_HEADER, -1, &cr) == CURLHE_OK && cr)
        snprintf(a->crange, sizeof(a->crange), "%s", cr->value);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    a->sink.curl = NULL;
    if ((rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK) && a->sink.stopped)
        return (int)status; /* the caller stopped reading: the request is abandoned */
    if (a->sink.overflow)
        return clr_error_set(err, CLR_E_LIMIT, 0, "the API's answer to %s %s is larger than "
                             "%u MiB", method, path, MAX_ANSWER >> 20);
    if (rc != CURLE_OK)
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "talking to the clearing daemon at "
                             "%s: %s", b->socket_path, curl_easy_strerror(rc));
    return (int)status;
}

static int perform(const struct backend *b, const char *method, const char *path,
                   const json_t *body, struct answer *a, clr_error *err)
{
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    struct payload p = {text, text ? strlen(text) : 0, "Content-Type: application/json"};
    return perform_raw(b, method, path, body ? &p : NULL, a, err);
}

static bool is_json(const struct answer *a)
{
    return a->sink.len && strncmp(a->ctype, "application/json", 16) == 0;
}

static int backend_call(void *ctx, const char *method, const char *path, const json_t *body,
                        json_t **answer, char **text, clr_error *err)
{
    struct answer a = {0};
    if (answer)
        *answer = NULL;
    if (text)
        *text = NULL;
    int st = perform(ctx, method, path, body, &a, err);
    json_t *j = st >= 0 && is_json(&a) ? json_loadb(a.sink.data, a.sink.len, 0, NULL) : NULL;
    if (answer)
        *answer = j;
    else
        json_decref(j);
    if (st >= 0 && !j && a.sink.len && text)
        *text = steal_pointer(&a.sink.data);
    free(a.sink.data);
    return st;
}

/* After perform(): a JSON answer as *answer, else the bytes as sent (an empty answer is an
 * empty string, not NULL). */
static void bytes_of(struct answer *a, int st, json_t **answer, char **data, size_t *len)
{
    if (st >= 0 && is_json(a))
        *answer = json_loadb(a->sink.data, a->sink.len, JSON_ALLOW_NUL, NULL);
    if (st >= 0 && !*answer) {
        *len = a->sink.len;
        *data = a->sink.data ? steal_pointer(&a->sink.data) : strdup("");
    }
    free(a->sink.data);
}

/* As backend_call, but an answer that is not JSON (a file's bytes) comes back exactly, with its
 * length. */
static int backend_call_bytes(void *ctx, const char *method, const char *path,
                              const json_t *body, json_t **answer, char **data, size_t *len,
                              clr_error *err)
{
    struct answer a = {0};
    *answer = NULL;
    *data = NULL;
    *len = 0;
    int st = perform(ctx, method, path, body, &a, err);
    bytes_of(&a, st, answer, data, len);
    return st;
}

static int backend_call_range(void *ctx, const char *path, uint64_t first, uint64_t last,
                              json_t **answer, char **data, size_t *len, uint64_t *total,
                              clr_error *err)
{
    char range[96];
    snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)first,
             (unsigned long long)last);
    struct answer a = {.range = range};
    *answer = NULL;
    *data = NULL;
    *len = 0;
    *total = 0;
    int st = perform(ctx, "GET", path, NULL, &a, err);
    const char *slash = st == 206 ? strrchr(a.crange, '/') : NULL;
    if (slash)
        *total = strtoull(slash + 1, NULL, 10);
    bytes_of(&a, st, answer, data, len);
    return st;
}

static int backend_stream(void *ctx, const char *method, const char *path, const json_t *body,
                          bool (*on_line)(void *lctx, json_t *line), void *lctx, clr_error *err)
{
    struct answer a = {.sink = {.on_line = on_line, .ctx = lctx}};
    int st = perform(ctx, method, path, body, &a, err);
    if (st >= 300) {
        /* An error answer: one JSON object, not a stream. */
        json_t *j = a.sink.len ? json_loadb(a.sink.data, a.sink.len, 0, NULL) : NULL;
        http_answer_error(st, j, err);
        json_decref(j);
    } else if (st >= 0) {
        http_sink_finish(&a.sink);
    }
    free(a.sink.data);
    return st;
}

static int backend_upload(void *ctx, const char *path, const void *data, size_t len,
                          json_t **answer, clr_error *err)
{
    struct answer a = {0};
    struct payload p = {data, len, "Content-Type: application/octet-stream"};
    if (answer)
        *answer = NULL;
    int st = perform_raw(ctx, "PUT", path, &p, &a, err);
    json_t *j = st >= 0 && is_json(&a) ? json_loadb(a.sink.data, a.sink.len, 0, NULL) : NULL;
    if (answer)
        *answer = j;
    else
        json_decref(j);
    free(a.sink.data);
    return st;
}

int mcp_client_backend(struct mcp_backend *out, const char *socket_path, const char *tenant,
                       const char *actor, clr_error *err)
{
    struct backend *b = calloc(1, sizeof(*b));
    if (!b)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if ((size_t)snprintf(b->socket_path, sizeof(b->socket_path), "%s", socket_path) >=
        sizeof(b->socket_path)) {
        free(b);
        return clr_error_set(err, CLR_E_INVALID, 0, "the daemon's socket path is longer than "
                             "%zu bytes: %.80s...", sizeof(b->socket_path) - 1, socket_path);
    }
    if (tenant && tenant[0])
        snprintf(b->tenant_header, sizeof(b->tenant_header), "X-Clearing-Tenant: %.63s", tenant);
    if (actor && actor[0])
        snprintf(b->actor_header, sizeof(b->actor_header), "X-Clearing-Actor: %.128s", actor);
    *out = (struct mcp_backend){.call = backend_call,
                                .stream = backend_stream,
                                .upload = backend_upload,
                                .call_bytes = backend_call_bytes,
                                .call_range = backend_call_range,
                                .ctx = b};
    return 0;
}

void mcp_client_free(struct mcp_backend *b)
{
    if (!b)
        return;
    free(b->ctx);
    b->ctx = NULL;
}

bool mcp_client_answers(const char *socket_path, clr_error *err)
{
    struct mcp_backend be;
    if (mcp_client_backend(&be, socket_path, NULL, NULL, err) < 0)
        return false;
    bool ok = be.call(be.ctx, "GET", "/v1/health", NULL, NULL, NULL, err) > 0;
    mcp_client_free(&be);
    return ok;
}
