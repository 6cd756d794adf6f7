/* The Docker Engine API client: HTTP over the engine's unix socket, with libcurl. It is the
 * transport under the Docker engine (docker_engine.c); nothing above lib/ calls it directly.
 *
 * Plain calls go through one reusable easy handle (keep-alive on the socket). Hijacked streams
 * (exec start, attach) use a CONNECT_ONLY handle of their own: libcurl opens the connection, the
 * HTTP/1.1 upgrade request and the engine's "101 UPGRADED" answer are handled here, and from then
 * on the socket carries raw bytes both ways. */
#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clearing/cleanup.h"
#include "clearing/engine.h"
#include "clearing/log.h"
#include "engine_int.h"

#define API_MIN_MINOR 41
#define API_MAX_MINOR 43
#define MAX_RESPONSE (64u * 1024 * 1024) /* an answer larger than this is refused */
#define MAX_HIJACK_HEADER 16384

/* A Docker engine handle: the interface's base first, so a clr_engine * is a struct docker *. */
struct docker {
    struct clr_engine base;
    CURL *curl;
    char *socket_path;
    char api[16]; /* "v1.41" */
    long timeout_ms;
    json_t *runtimes; /* cached GET /info .Runtimes */
};

/* After the upgrade the connection is a plain socket: reads and writes go to it directly, so one
 * thread may read while another writes (writes are serialised by write_lock). */
#define D(eng) ((struct docker *)(eng))

struct clr_engine_stream {
    CURL *curl;
    curl_socket_t fd;
    pthread_mutex_t write_lock;
    uint8_t *pending; /* stream bytes that arrived with the response headers */
    size_t pending_len, pending_off;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *default_socket(void)
{
    const char *h = getenv("CLEARING_DOCKER_HOST");
    if (h && *h)
        return h;
    h = getenv("DOCKER_HOST");
    if (h && strncmp(h, "unix://", 7) == 0)
        return h;
    return "/var/run/docker.sock";
}

const char *clr_engine_socket_path(const clr_engine *eng)
{
    return D(eng)->socket_path;
}

const char *clr_engine_api_version(const clr_engine *eng)
{
    return D(eng)->api;
}

struct membuf {
    char *data;
    size_t len;
    bool overflow;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct membuf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > MAX_RESPONSE) {
        b->overflow = true;
        return 0;
    }
    char *d = realloc(b->data, b->len + n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, n);
    b->len += n;
    d[b->len] = '\0';
    b->data = d;
    return n;
}

static int transport_error(clr_engine *eng, CURLcode rc, const char *method, const char *path,
                           clr_error *err)
{
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
        return clr_error_set(err, CLR_E_UNAVAILABLE, ECONNREFUSED,
                             "cannot reach the Docker engine at %s (%s): start dockerd "
                             "(scripts/setup.sh does) or point CLEARING_DOCKER_HOST at its socket",
                             D(eng)->socket_path, curl_easy_strerror(rc));
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return clr_error_set(err, CLR_E_TIMEOUT, ETIMEDOUT,
                             "the Docker engine at %s did not answer %s %s within %ld ms",
                             D(eng)->socket_path, method, path, D(eng)->timeout_ms);
    return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "Docker engine %s %s failed: %s", method,
                         path, curl_easy_strerror(rc));
}

/* Status >= 400: the engine's JSON {"message": ...} becomes the error message. */
static void engine_status_error(long status, json_t *resp, const char *method, const char *path,
                                clr_error *err)
{
    const char *msg = NULL;
    if (json_is_object(resp))
        msg = json_string_value(json_object_get(resp, "message"));
    clr_error_code code = CLR_E_ENGINE;
    if (status == 404)
        code = CLR_E_NOT_FOUND;
    else if (status == 409)
        code = CLR_E_CONFLICT;
    else if (status == 400)
        code = CLR_E_INVALID;
    clr_error_set(err, code, 0, "Docker engine answered %ld to %s %s: %s", status, method, path,
                  msg ? msg : "(no message)");
}

static int raw_call(clr_engine *eng, const char *method, const char *url_path, json_t *body,
                    json_t **resp, long timeout_ms, clr_error *err)
{
    char url[2048];
    if (snprintf(url, sizeof(url), "http://docker%s", url_path) >= (int)sizeof(url))
        return clr_error_set(err, CLR_E_INVALID, 0, "engine request path too long");
    _cleanup_free_ char *payload = NULL;
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        if (!payload)
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "cannot encode request");
    }
    struct membuf buf = {0};
    struct curl_slist *hdrs = NULL;
    CURL *c = D(eng)->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, D(eng)->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (payload) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        free(buf.data);
        if (buf.overflow)
            return clr_error_set(err, CLR_E_ENGINE, EFBIG,
                                 "Docker engine answer to %s %s is larger than %u bytes", method,
                                 url_path, MAX_RESPONSE);
        return transport_error(eng, rc, method, url_path, err);
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = NULL;
    if (buf.len > 0) {
        json_error_t jerr;
        j = json_loadb(buf.data, buf.len, JSON_DECODE_ANY, &jerr);
        /* Some answers are plain text ("OK" from /_ping); keep those as a JSON string. */
        if (!j)
            j = json_stringn_nocheck(buf.data, buf.len);
    }
    free(buf.data);
    if (status >= 400)
        engine_status_error(status, j, method, url_path, err);
    if (resp)
        *resp = j;
    else
        json_decref(j);
    return (int)status;
}

int clr_engine_call(clr_engine *eng, const char *method, const char *path, json_t *body,
                    json_t **resp, clr_error *err)
{
    char full[2048];
    if (snprintf(full, sizeof(full), "/%s%s", D(eng)->api, path) >= (int)sizeof(full))
        return clr_error_set(err, CLR_E_INVALID, 0, "engine request path too long");
    return raw_call(eng, method, full, body, resp, D(eng)->timeout_ms, err);
}

int clr_docker_api_open(clr_engine **out, const struct clr_engine_ops *ops,
                        const clr_engine_options *opts, clr_error *err)
{
    pthread_once(&curl_once, curl_init_once);
    const char *host = opts && opts->host ? opts->host : default_socket();
    if (strncmp(host, "unix://", 7) == 0)
        host += 7;
    else if (strstr(host, "://"))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "engine address '%s' is not supported: use unix:///path/to/docker.sock",
                             host);
    if (*host != '/')
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "engine socket '%s' must be an absolute path", host);
    struct docker *d = calloc(1, sizeof(*d));
    if (!d)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    d->base.ops = ops;
    clr_engine *eng = &d->base;
    D(eng)->socket_path = strdup(host);
    D(eng)->curl = curl_easy_init();
    D(eng)->timeout_ms = opts && opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 30000;
    if (!D(eng)->socket_path || !D(eng)->curl) {
        clr_docker_close(eng);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    json_t *v = NULL;
    int st = raw_call(eng, "GET", "/version", NULL, &v, 10000, err);
    if (st < 0 || st >= 400) {
        json_decref(v);
        clr_docker_close(eng);
        return -1;
    }
    const char *api = json_string_value(json_object_get(v, "ApiVersion"));
    int major = 0, minor = 0;
    if (!api || sscanf(api, "%d.%d", &major, &minor) != 2 || major != 1 ||
        minor < API_MIN_MINOR) {
        clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                      "the Docker engine at %s speaks API %s; clearing needs 1.%d or newer "
                      "(docker.io 20.10 or later)",
                      host, api ? api : "(unknown)", API_MIN_MINOR);
        json_decref(v);
        clr_docker_close(eng);
        return -1;
    }
    if (minor > API_MAX_MINOR)
        minor = API_MAX_MINOR;
    snprintf(D(eng)->api, sizeof(D(eng)->api), "v1.%d", minor);
    json_decref(v);
    *out = eng;
    return 0;
}

void clr_docker_close(clr_engine *eng)
{
    if (D(eng)->curl)
        curl_easy_cleanup(D(eng)->curl);
    json_decref(D(eng)->runtimes);
    free(D(eng)->socket_path);
    free(eng);
}

/* The engine's runtimes come from GET /info .Runtimes, read once per handle. *known says whether
 * the engine has runtime; out (if not NULL) receives the binary it runs for it ("/usr/bin/runsc",
 * or a bare name it looks up in its PATH), CLR_E_NOT_FOUND when it names none. */
int clr_docker_runtime_path(clr_engine *eng, const char *runtime, bool *known, char *out,
                            size_t len, clr_error *err)
{
    if (!D(eng)->runtimes) {
        json_t *info = NULL;
        int st = clr_engine_call(eng, "GET", "/info", NULL, &info, err);
        if (st < 0 || st >= 400) {
            json_decref(info);
            return -1;
        }
        json_t *rt = json_object_get(info, "Runtimes");
        D(eng)->runtimes = json_is_object(rt) ? json_incref(rt) : json_object();
        json_decref(info);
    }
    json_t *entry = json_object_get(D(eng)->runtimes, runtime);
    *known = entry != NULL;
    if (!out)
        return 0;
    const char *p = json_string_value(json_object_get(entry, "path"));
    if (!entry || !p || !*p)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                             "the engine reports no binary for the runtime %s", runtime);
    if (strlen(p) >= len)
        return clr_error_set(err, CLR_E_INVALID, 0, "the runtime's path is too long");
    strcpy(out, p);
    return 0;
}

/* ---- the event stream ---- */

#define MAX_EVENT (1024u * 1024) /* one event object; a longer line is not an event */

/* The stream's socket, opened and closed by libcurl through the callbacks below, which hold
 * lock: so a fire never shuts down a descriptor number that was closed and reused meanwhile. */
struct clr_engine_cancel {
    pthread_mutex_t lock;
    curl_socket_t fd; /* CURL_SOCKET_BAD: none open */
    bool fired;
};

int clr_engine_cancel_new(clr_engine_cancel **out, clr_error *err)
{
    clr_engine_cancel *c = calloc(1, sizeof(*c));
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    c->fd = CURL_SOCKET_BAD;
    *out = c;
    return 0;
}

void clr_engine_cancel_free(clr_engine_cancel *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void clr_engine_cancel_fire(clr_engine_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    c->fired = true;
    if (c->fd != CURL_SOCKET_BAD)
        shutdown(c->fd, SHUT_RDWR); /* libcurl's read ends: the transfer is over */
    pthread_mutex_unlock(&c->lock);
}

static bool cancel_fired(clr_engine_cancel *c)
{
    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    bool fired = c->fired;
    pthread_mutex_unlock(&c->lock);
    return fired;
}

static curl_socket_t events_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    clr_engine_cancel *c = ud;
    pthread_mutex_lock(&c->lock);
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (!c->fired) {
        fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
        c->fd = fd < 0 ? CURL_SOCKET_BAD : fd;
    }
    pthread_mutex_unlock(&c->lock);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

static int events_close_socket(void *ud, curl_socket_t fd)
{
    clr_engine_cancel *c = ud;
    pthread_mutex_lock(&c->lock);
    if (c->fd == fd)
        c->fd = CURL_SOCKET_BAD;
    int rc = close(fd);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

struct events_read {
    CURL *curl;
    const clr_engine_events_handler *h;
    char *line; /* the event being received, up to its newline */
    size_t len, cap;
    long status;       /* once the headers are in */
    bool ended;        /* a handler ended the stream */
    bool bad;          /* a line that is not an event object, or too long */
};

static size_t on_events_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct events_read *r = ud;
    size_t n = size * nmemb;
    if (n == 2 && ptr[0] == '\r' && ptr[1] == '\n') {
        curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
        if (r->status == 200 && r->h->on_connected)
            r->h->on_connected(r->h->ctx);
    }
    return n;
}

static bool ended_by_handler(struct events_read *r)
{
    return cancel_fired(r->h->cancel) || (r->h->tick && r->h->tick(r->h->ctx));
}

static bool events_line(struct events_read *r)
{
    if (r->len == 0)
        return true;
    json_t *ev = json_loadb(r->line, r->len, 0, NULL);
    r->len = 0;
    if (!json_is_object(ev)) {
        json_decref(ev);
        r->bad = true;
        return false;
    }
    int rc = r->h->on_event ? r->h->on_event(r->h->ctx, ev) : 0;
    json_decref(ev);
    if (rc != 0 || ended_by_handler(r)) {
        r->ended = true;
        return false;
    }
    return true;
}

/* Bytes of the answer: events, one JSON object a line; or, on an error status, its message. */
static size_t on_events_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct events_read *r = ud;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n' && r->status == 200) {
            if (!events_line(r))
                return 0;
            continue;
        }
        if (r->len + 1 >= MAX_EVENT) {
            r->bad = true;
            return 0;
        }
        if (r->len + 1 >= r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 4096;
            char *l = realloc(r->line, cap);
            if (!l)
                return 0;
            r->line = l;
            r->cap = cap;
        }
        r->line[r->len++] = ptr[i];
    }
    return n;
}

static int on_events_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                              curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct events_read *r = ud;
    if (ended_by_handler(r)) {
        r->ended = true;
        return 1;
    }
    return 0;
}

int clr_docker_events(clr_engine *eng, json_t *filters, const clr_engine_events_handler *h,
                      clr_error *err)
{
    _cleanup_free_ char *text = json_dumps(filters, JSON_COMPACT);
    char *esc = text ? curl_easy_escape(D(eng)->curl, text, 0) : NULL;
    if (!esc)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    char path[2048], url[2100];
    int n = snprintf(path, sizeof(path), "/%s/events?filters=%s", D(eng)->api, esc);
    curl_free(esc);
    if (n < 0 || n >= (int)sizeof(path))
        return clr_error_set(err, CLR_E_INVALID, 0, "engine event filter too long");
    snprintf(url, sizeof(url), "http://docker%s", path);
    struct events_read r = {.curl = D(eng)->curl, .h = h};
    CURL *c = D(eng)->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, D(eng)->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* No overall timeout: the stream is quiet for as long as nothing happens. */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_events_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_events_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_events_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &r);
    if (h->cancel) {
        /* A connection of its own, closed at the end: its socket is the one a fire shuts. */
        curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, events_open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, h->cancel);
        curl_easy_setopt(c, CURLOPT_CLOSESOCKETFUNCTION, events_close_socket);
        curl_easy_setopt(c, CURLOPT_CLOSESOCKETDATA, h->cancel);
    }
    CURLcode rc = curl_easy_perform(c);
    if (h->cancel) {
        /* Closed by now (FORBID_REUSE); if it were not, a fire must not reach a number that
         * libcurl closes later, unseen. */
        pthread_mutex_lock(&h->cancel->lock);
        h->cancel->fd = CURL_SOCKET_BAD;
        pthread_mutex_unlock(&h->cancel->lock);
    }
    curl_easy_reset(c); /* no callback of the handle points at r any more */
    int ret = 0;
    if (r.ended || cancel_fired(h->cancel)) {
        ret = 0;
    } else if (r.bad) {
        ret = clr_error_set(err, CLR_E_ENGINE, EPROTO,
                            "the Docker engine's event stream carried something that is not an "
                            "event (or one larger than %u bytes)",
                            MAX_EVENT);
    } else if (rc != CURLE_OK) {
        ret = transport_error(eng, rc, "GET", path, err);
    } else if (r.status != 200) {
        json_t *j = r.len ? json_loadb(r.line, r.len, 0, NULL) : NULL;
        engine_status_error(r.status, j, "GET", path, err);
        json_decref(j);
        ret = -1;
    } else {
        ret = clr_error_set(err, CLR_E_UNAVAILABLE, EPIPE,
                            "the Docker engine at %s ended its event stream (restarting?)",
                            D(eng)->socket_path);
    }
    free(r.line);
    return ret;
}

/* ---- hijacked streams ---- */

static int wait_fd(curl_socket_t fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR && events != POLLIN);
    return r;
}

int clr_engine_stream_write(clr_engine_stream *s, const void *data, size_t len, clr_error *err)
{
    const uint8_t *p = data;
    int rc = 0;
    pthread_mutex_lock(&s->write_lock);
    while (len > 0) {
        ssize_t n = send(s->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(s->fd, POLLOUT, 30000) <= 0) {
                rc = clr_error_set(err, CLR_E_TIMEOUT, ETIMEDOUT,
                                   "engine stream did not accept data for 30 s");
                break;
            }
            continue;
        }
        if (n <= 0) {
            rc = clr_error_set(err, CLR_E_UNAVAILABLE, errno ? errno : EPIPE,
                               "writing to engine stream: %s", strerror(errno ? errno : EPIPE));
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

ssize_t clr_engine_stream_read(clr_engine_stream *s, void *buf, size_t len, int timeout_ms,
                               clr_error *err)
{
    if (s->pending_off < s->pending_len) {
        size_t n = s->pending_len - s->pending_off;
        if (n > len)
            n = len;
        memcpy(buf, s->pending + s->pending_off, n);
        s->pending_off += n;
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "reading engine stream: %s",
                                 strerror(errno));
        int r = wait_fd(s->fd, POLLIN, timeout_ms);
        /* A signal ends the wait like a timeout does, so the caller can look at its flags. */
        if (r == 0 || (r < 0 && errno == EINTR))
            return -2;
        if (r < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "poll: %s", strerror(errno));
    }
}

void clr_engine_stream_shutdown(clr_engine_stream *s, bool write_only)
{
    if (s && s->fd >= 0)
        shutdown(s->fd, write_only ? SHUT_WR : SHUT_RDWR);
}

void clr_engine_stream_free(clr_engine_stream *s)
{
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    pthread_mutex_destroy(&s->write_lock);
    free(s->pending);
    free(s);
}

int clr_engine_hijack(clr_engine_stream **out, clr_engine *eng, const char *path, json_t *body,
                      clr_error *err)
{
    /* No body at all without one: after the upgrade the engine would pass it on as stream
     * bytes (attach hands them to the container's stdin). */
    _cleanup_free_ char *payload = body ? json_dumps(body, JSON_COMPACT) : strdup("");
    if (!payload)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_engine_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    pthread_mutex_init(&s->write_lock, NULL);
    s->curl = curl_easy_init();
    if (!s->curl) {
        pthread_mutex_destroy(&s->write_lock);
        free(s);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    curl_easy_setopt(s->curl, CURLOPT_UNIX_SOCKET_PATH, D(eng)->socket_path);
    curl_easy_setopt(s->curl, CURLOPT_URL, "http://docker/");
    curl_easy_setopt(s->curl, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(s->curl);
    if (rc != CURLE_OK) {
        clr_engine_stream_free(s);
        return transport_error(eng, rc, "POST", path, err);
    }
    curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &s->fd);

    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "POST /%s%s HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %zu\r\n\r\n",
                     D(eng)->api, path, strlen(payload));
    if (n < 0 || n >= (int)sizeof(req)) {
        clr_engine_stream_free(s);
        return clr_error_set(err, CLR_E_INVALID, 0, "engine request path too long");
    }
    if (clr_engine_stream_write(s, req, (size_t)n, err) < 0 ||
        (*payload && clr_engine_stream_write(s, payload, strlen(payload), err) < 0)) {
        clr_engine_stream_free(s);
        return -1;
    }

    /* Read the answer's headers; anything after them is the start of the stream. */
    char hdr[MAX_HIJACK_HEADER + 1];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have >= MAX_HIJACK_HEADER) {
            clr_engine_stream_free(s);
            return clr_error_set(err, CLR_E_ENGINE, EPROTO, "engine answer headers too long");
        }
        ssize_t r = clr_engine_stream_read(s, hdr + have, MAX_HIJACK_HEADER - have,
                                           (int)D(eng)->timeout_ms, err);
        if (r <= 0) {
            clr_engine_stream_free(s);
            if (r == -2)
                return clr_error_set(err, CLR_E_TIMEOUT, ETIMEDOUT,
                                     "the Docker engine did not answer POST %s", path);
            if (r == 0)
                return clr_error_set(err, CLR_E_UNAVAILABLE, EPIPE,
                                     "the Docker engine closed the connection on POST %s", path);
            return -1;
        }
        have += (size_t)r;
        hdr[have] = '\0';
        end = strstr(hdr, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(hdr, "HTTP/1.%*d %d", &status) != 1) {
        clr_engine_stream_free(s);
        return clr_error_set(err, CLR_E_ENGINE, EPROTO, "unexpected engine answer to POST %s",
                             path);
    }
    size_t body_off = (size_t)(end + 4 - hdr);
    if (status != 101 && status != 200) {
        /* An error: the body (usually JSON with "message") is what follows the headers. */
        json_t *j = json_loadb(hdr + body_off, have - body_off, 0, NULL);
        char p2[1024];
        snprintf(p2, sizeof(p2), "/%s%s", D(eng)->api, path);
        engine_status_error(status, j, "POST", p2, err);
        json_decref(j);
        clr_engine_stream_free(s);
        return -1;
    }
    if (have > body_off) {
        s->pending = malloc(have - body_off);
        if (!s->pending) {
            clr_engine_stream_free(s);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
        memcpy(s->pending, hdr + body_off, have - body_off);
        s->pending_len = have - body_off;
    }
    *out = s;
    return 0;
}

/* ---- stream demultiplexing ---- */

void clr_demux_init(clr_demux *d)
{
    memset(d, 0, sizeof(*d));
}

int clr_demux_feed(clr_demux *d, const uint8_t *data, size_t len, clr_demux_cb cb, void *ctx)
{
    if (d->failed)
        return -1;
    while (len > 0) {
        if (d->left == 0 && d->header_have < 8) {
            size_t n = 8 - d->header_have;
            if (n > len)
                n = len;
            memcpy(d->header + d->header_have, data, n);
            d->header_have += n;
            data += n;
            len -= n;
            if (d->header_have < 8)
                break;
            if (d->header[0] > 2 || d->header[1] || d->header[2] || d->header[3]) {
                d->failed = true;
                return -1;
            }
            d->stream = d->header[0];
            d->left = ((uint32_t)d->header[4] << 24) | ((uint32_t)d->header[5] << 16) |
                      ((uint32_t)d->header[6] << 8) | d->header[7];
            d->header_have = 0;
            continue;
        }
        size_t n = d->left < len ? d->left : len;
        d->left -= (uint32_t)n;
        if (d->stream != 0 && n > 0) {
            int rc = cb(ctx, d->stream, data, n);
            if (rc)
                return rc;
        }
        data += n;
        len -= n;
    }
    return 0;
}
