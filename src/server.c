/* The HTTP face of clr_service: libmicrohttpd, one thread per connection (bounded). This file
 * owns the listeners and the connections: who may connect (unix peers' shares, TCP tokens),
 * what is refused from the headers, how bodies are read and spooled. What a request does is
 * the route table's (routes.c); how answers are built is http.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "activation.h"
#include "http.h"
#include "mcp_http.h"
#include "routes.h"
#include "server_internal.h"
#include "clearing/audit.h"

/* A connection that sends nothing for this long is closed. A request being handled is not idle
 * (its handler holds the connection's thread: long execs and streams are unaffected); this only
 * bounds clients that hold connections without finishing a request. */
#define IDLE_TIMEOUT_S ((unsigned)60)
#define REFUSAL_LOG_INTERVAL_S 10 /* refused connections: one log line at most this often */

/* One connection of the unix socket, from NOTIFY_STARTED to NOTIFY_CLOSED (its socket context). */
struct unix_peer {
    uid_t uid;
    bool counted; /* holds one of the slots shared by the unprivileged uids */
    bool refused; /* answered 429 at accept: none of its requests may run */
};

#define MAX_UPLOAD (4ull * 1024 * 1024 * 1024) /* a file or an archive, streamed to disk */
/* A request refused from its headers is answered at once and its connection closed, its body
 * unread. One that announces a body this small is read to its end and discarded first: the
 * kernel holds that much anyway, and a client that sends its body before reading the answer
 * then sees the answer, not a reset connection. */
#define DISCARD_MAX (64 * 1024)


/* ---- requests ---- */

static void peer_actor(struct MHD_Connection *c, struct request *rq, bool unix_socket)
{
    if (!unix_socket)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        snprintf(rq->actor, sizeof(rq->actor), "uid=%u pid=%d", (unsigned)cred.uid, cred.pid);
        snprintf(rq->principal, sizeof(rq->principal), "uid=%u", (unsigned)cred.uid);
    } else {
        snprintf(rq->actor, sizeof(rq->actor), "unix");
        snprintf(rq->principal, sizeof(rq->principal), "unix");
    }
}

/* An X-Clearing-Actor value: 1-128 printable ASCII characters, no quote or backslash. */
static bool narrow_actor_valid(const char *a)
{
    size_t n = strlen(a);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (a[i] < 0x20 || a[i] > 0x7e || a[i] == '"' || a[i] == '\\')
            return false;
    }
    return true;
}

/* X-Clearing-Tenant: T (and X-Clearing-Actor: A): a unix peer, which sees every tenant's
 * sandboxes, asks to act as tenant T alone, recorded as "A via uid=N pid=P" (A alone only
 * names the actor: the operator's own MCP sessions). The daemon's own
 * /mcp sends it when it calls its API for a tenant's MCP session (mcp_client.c). It only narrows:
 * honoured on the unix socket only, whose peers are the operator already; on TCP, where a
 * token says the tenant, the headers are refused. */
static enum refusal narrow(struct MHD_Connection *c, struct request *rq, bool unix_socket)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Clearing-Tenant");
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Clearing-Actor");
    if (!t && !a)
        return REFUSE_NONE;
    if (!unix_socket)
        return REFUSE_NARROW_TCP;
    if ((t && !clr_tenant_name_valid(t)) || (a && !narrow_actor_valid(a)))
        return REFUSE_NARROW_BAD;
    char peer[27];
    snprintf(peer, sizeof(peer), "%.26s", rq->actor);
    if (a) /* alone, it narrows nothing: an operator's MCP session names itself */
        snprintf(rq->actor, sizeof(rq->actor), "%.128s via %.26s", a, peer);
    if (t) {
        snprintf(rq->tenant, sizeof(rq->tenant), "%s", t);
        size_t n = strlen(rq->principal);
        snprintf(rq->principal + n, sizeof(rq->principal) - n, " tenant=%.63s", t);
    }
    return REFUSE_NONE;
}

/* The TCP client's address without its port (one client, many connections: one source). */
static void client_address(struct MHD_Connection *c, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, len, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)len);
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

/* Compares the bearer token in constant time (digests of equal length, CRYPTO_memcmp). */
static bool check_token(struct server *s, struct MHD_Connection *c, struct request *rq)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    unsigned char d[32];
    sha256(h + 7, strlen(h + 7), d);
    int found = -1;
    for (int i = 0; i < s->ntokens; i++) {
        if (CRYPTO_memcmp(d, s->tokens[i].digest, 32) == 0)
            found = i;
    }
    if (found < 0)
        return false;
    snprintf(rq->tenant, sizeof(rq->tenant), "%s", s->tokens[found].tenant);
    snprintf(rq->actor, sizeof(rq->actor), "tenant=%s token=%s", s->tokens[found].tenant,
             s->tokens[found].name);
    snprintf(rq->principal, sizeof(rq->principal), "%s", rq->actor);
    return true;
}

/* The body the client announced: its Content-Length, UINT64_MAX for a chunked one, 0 for
 * none. */
static uint64_t announced_body(struct MHD_Connection *c)
{
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    if (te)
        return UINT64_MAX;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (!cl)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    return errno || end == cl ? UINT64_MAX : (uint64_t)n;
}

/* ---- connections of the unix socket ----
 *
 * A connection holds one of the daemon's max_connections threads until it closes or has been
 * idle for IDLE_TIMEOUT_S, and an unfinished request costs its client nothing: whoever holds
 * them all starves every other client. On TCP one address holds at most max_connections / 8
 * (libmicrohttpd's per-IP limit). On the unix socket the peer is a uid the kernel vouches for
 * (SO_PEERCRED: the credentials of the process that connected, which it cannot choose): a uid
 * other than root and the daemon's own holds at most max_connections / 8, and all such uids
 * together at most max_connections less that share, so root and the operator reach the API
 * however many local users the socket's mode admits and whatever they hold open. The check
 * runs in the NOTIFY_CONNECTION callback, which libmicrohttpd calls in its listening thread
 * after accept() and before the connection's own thread exists: connections are counted one
 * after another, a burst of connects cannot overtake the count. */

/* The socket context of a connection that could not be identified or counted: refused. */
static struct unix_peer peer_unknown = {.uid = (uid_t)-1, .refused = true};

static bool peer_privileged(const struct server *s, uid_t uid)
{
    return uid == 0 || uid == s->self_uid;
}

/* The share of uid, or NULL if it holds nothing. Called with shares_lock held. */
static struct uid_share *share_of(struct server *s, uid_t uid)
{
    for (unsigned i = 0; i < s->nshares; i++) {
        if (s->shares[i].uid == uid)
            return &s->shares[i];
    }
    return NULL;
}

/* One log line per refusal burst, and then at most one every REFUSAL_LOG_INTERVAL_S with the
 * count: a client that reconnects in a loop must not fill the log. Called with shares_lock
 * held; returns the count to log, or 0. */
static unsigned refusal_to_log(struct server *s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    s->refused_unlogged++;
    if (s->refusal_logged && now.tv_sec - s->refusal_logged_at.tv_sec < REFUSAL_LOG_INTERVAL_S)
        return 0;
    unsigned n = s->refused_unlogged;
    s->refused_unlogged = 0;
    s->refusal_logged = true;
    s->refusal_logged_at = now;
    return n;
}

/* Takes a slot for an unprivileged uid; false and the reason (for the client) if it may not
 * hold another connection. */
static bool share_take(struct server *s, uid_t uid, char *why, size_t why_size)
{
    pthread_mutex_lock(&s->shares_lock);
    struct uid_share *sh = share_of(s, uid);
    bool ok = false;
    if (sh && sh->held >= s->per_uid_limit) {
        snprintf(why, why_size,
                 "uid %u holds %u connections to the API, the most one user may hold "
                 "(max_connections / 8): close some",
                 (unsigned)uid, sh->held);
    } else if (s->shared_held >= s->shared_limit) {
        snprintf(why, why_size,
                 "local users hold %u connections to the API, the most they may hold together "
                 "(the rest is kept for root and the operator): try again later",
                 s->shared_held);
    } else {
        /* Every share holds a connection, so there are fewer than shared_limit of them. */
        if (!sh) {
            sh = &s->shares[s->nshares++];
            sh->uid = uid;
            sh->held = 0;
        }
        sh->held++;
        s->shared_held++;
        ok = true;
    }
    unsigned log_count = ok ? 0 : refusal_to_log(s);
    pthread_mutex_unlock(&s->shares_lock);
    if (log_count) {
        char u[16], n[16];
        snprintf(u, sizeof(u), "%u", (unsigned)uid);
        snprintf(n, sizeof(n), "%u", log_count);
        clr_log(CLR_LOG_WARN, "api.connection_refused", "uid", u, "reason", why, "refused", n,
                NULL);
    }
    return ok;
}

static void share_release(struct server *s, uid_t uid)
{
    pthread_mutex_lock(&s->shares_lock);
    struct uid_share *sh = share_of(s, uid);
    if (sh) {
        s->shared_held--;
        if (--sh->held == 0)
            *sh = s->shares[--s->nshares];
    }
    pthread_mutex_unlock(&s->shares_lock);
}

/* Answers a refused connection with a 429 and shuts it down: its thread reads end-of-file and
 * closes it; a request that arrived with the connection is read but never handled
 * (peer_refused). why is the daemon's own text: nothing in it needs JSON escaping. */
static void refuse_connection(int fd, const char *why)
{
    char body[512], msg[768];
    int bl = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"limit\",\"message\":\"%s\"}}\n",
                      why);
    int ml = snprintf(msg, sizeof(msg),
                      "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    /* A new socket's buffer is empty, so this never blocks the listening thread; if it did not
     * fit, the client would still see the connection closed. */
    if (bl > 0 && ml > 0 && (size_t)ml < sizeof(msg))
        (void)send(fd, msg, (size_t)ml, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_RDWR);
}

static void on_unix_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode toe)
{
    struct server *s = cls;
    struct unix_peer *p = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (p && p->counted)
            share_release(s, p->uid);
        if (p != &peer_unknown)
            free(p);
        *socket_context = NULL;
        return;
    }
    if (toe != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct ucred cred;
    socklen_t len = sizeof(cred);
    p = calloc(1, sizeof(*p));
    if (!p || !ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        /* Fails closed: a connection that cannot be counted is not served. */
        free(p);
        *socket_context = &peer_unknown;
        if (ci)
            refuse_connection(ci->connect_fd,
                              "the daemon could not identify or count this connection: try again");
        return;
    }
    p->uid = cred.uid;
    *socket_context = p;
    char why[256];
    if (peer_privileged(s, cred.uid))
        return;
    if (share_take(s, cred.uid, why, sizeof(why))) {
        p->counted = true;
        return;
    }
    p->refused = true;
    refuse_connection(ci->connect_fd, why);
}

/* True for a connection of the unix socket that was refused at accept (or never counted). */
static bool peer_refused(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const struct unix_peer *p = ci ? ci->socket_context : NULL;
    return !p || p->refused;
}

static enum MHD_Result send_over_budget(struct server *s, struct MHD_Connection *c)
{
    char msg[256];
    snprintf(msg, sizeof(msg),
             "the daemon is storing %llu MiB of uploads, as much as max_upload_total (%llu MiB) "
             "allows: try again once they finish, or raise max_upload_total",
             (unsigned long long)(atomic_load(&s->spooled) >> 20),
             (unsigned long long)(s->max_upload_total >> 20));
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", msg);
}

/* An upload that could not be stored whole, answered once its body is in (or from its headers
 * when it announced a length over max_upload_total). */
static enum MHD_Result send_upload_failure(struct server *s, struct MHD_Connection *c,
                                           const struct request *rq)
{
    char msg[400];
    if (rq->spool_errno) {
        snprintf(msg, sizeof(msg),
                 "the upload could not be stored in the daemon's spool directory (/var/tmp, "
                 "else /tmp): %s; free space there, then send it again",
                 strerror(rq->spool_errno));
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", msg);
    }
    if (rq->over_total || rq->refused == REFUSE_OVER_TOTAL) {
        snprintf(msg, sizeof(msg),
                 "upload larger than max_upload_total (%llu MiB), the most the daemon stores "
                 "at once: send it in parts, or ask the operator to raise max_upload_total",
                 (unsigned long long)(s->max_upload_total >> 20));
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit", msg);
    }
    return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit",
                      "upload larger than 4 GiB: send it in parts");
}

static enum MHD_Result send_refusal(struct server *s, struct MHD_Connection *c, const char *url,
                                    const char *method, struct request *rq)
{
    switch (rq->refused) {
    case REFUSE_TOKEN:
        return send_error(c, 401, "denied",
                          "missing or wrong bearer token: send Authorization: Bearer <token>");
    case REFUSE_ROUTE:
        return route(s, c, url, method, rq); /* its 404, 405 or 400, with no body read */
    case REFUSE_BODY:
        return send_error(c, 400, "invalid",
                          "this endpoint takes no request body with this method: send none");
    case REFUSE_TOO_LARGE:
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit",
                          "upload larger than 4 GiB: send it in parts");
    case REFUSE_BUDGET:
        return send_over_budget(s, c);
    case REFUSE_OVER_TOTAL:
        return send_upload_failure(s, c, rq);
    case REFUSE_NARROW_TCP:
        return send_error(c, 400, "invalid",
                          "X-Clearing-Tenant and X-Clearing-Actor are honoured on the daemon's "
                          "unix socket only: on TCP the token says the tenant; send neither");
    case REFUSE_NARROW_BAD:
        return send_error(c, 400, "invalid",
                          "X-Clearing-Tenant, if sent, must be a tenant name (1-63 characters of "
                          "a-z, 0-9, '_' and '-'), and X-Clearing-Actor, if sent, 1-128 printable "
                          "ASCII characters without quotes or backslashes");
    case REFUSE_NONE:
    default:
        return send_error(c, 500, "internal", "request refused for no reason");
    }
}

/* Gives back what rq holds of the global upload budget. */
static void spool_release(struct server *s, struct request *rq)
{
    atomic_fetch_sub(&s->spooled, rq->spooled);
    rq->spooled = 0;
}

/* Takes len bytes of the global upload budget for rq at once: an upload that announces its
 * length holds its whole share from its headers on, so two that each fit alone cannot both be
 * let in and one of them cut off half-way. */
static bool spool_reserve(struct server *s, struct request *rq, uint64_t len)
{
    if (atomic_fetch_add(&s->spooled, len) + len > s->max_upload_total) {
        atomic_fetch_sub(&s->spooled, len);
        return false;
    }
    rq->spooled += len;
    return true;
}

/* Drops what rq stored of its body: the file closed, its budget given back. */
static void spool_drop(struct server *s, struct request *rq)
{
    if (rq->upload_fd >= 0)
        close(rq->upload_fd);
    rq->upload_fd = -1;
    spool_release(s, rq);
}

/* Appends one piece of a PUT body to the request's temporary file, within the per-request cap,
 * max_upload_total and the global budget (beyond what the request reserved from its headers).
 * Over any of them, or when the write fails, the body is dropped and the rest of it discarded;
 * the request is answered, saying which, once it is in. */
static void spool(struct server *s, struct request *rq, const char *data, size_t size)
{
    if (rq->upload_fd < 0) {
        rq->upload_fd = tmpfile_fd();
        if (rq->upload_fd < 0) {
            rq->spool_errno = errno ? errno : EIO;
            spool_drop(s, rq);
            return;
        }
    }
    uint64_t need = rq->upload_len + size;
    if (need > MAX_UPLOAD) {
        rq->too_big = true;
        spool_drop(s, rq);
        return;
    }
    if (need > s->max_upload_total) {
        rq->over_total = true;
        spool_drop(s, rq);
        return;
    }
    if (need > rq->spooled && !spool_reserve(s, rq, need - rq->spooled)) {
        rq->over_budget = true;
        spool_drop(s, rq);
        return;
    }
    const char *p = data;
    size_t left = size;
    while (left > 0) {
        ssize_t w = write(rq->upload_fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rq->spool_errno = w < 0 ? errno : EIO;
            spool_drop(s, rq);
            return;
        }
        p += w;
        left -= (size_t)w;
    }
    rq->upload_len += size;
}

static enum MHD_Result handle(struct server *s, bool unix_socket, struct MHD_Connection *c,
                              const char *url, const char *method, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct request *rq = *con_cls;
    if (!rq) {
        /* A request that arrived with its connection, before the refusal shut the socket. */
        if (unix_socket && peer_refused(c))
            return MHD_NO;
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->upload_fd = -1;
        rq->unix_socket = unix_socket;
        *con_cls = rq;
        snprintf(rq->actor, sizeof(rq->actor), "tcp");
        peer_actor(c, rq, unix_socket);
        bool health = !strcmp(url, "/v1/health") && !strcmp(method, "GET");
        bool token = !unix_socket && check_token(s, c, rq);
        rq->anonymous = !unix_socket && !token && health;
        rq->authed = unix_socket || token || health;
        uint64_t body = announced_body(c);
        if (!rq->authed) {
            /* The client chooses the rate, the URL and its bytes: the record is aggregated
             * per client address, its fields bounded, bytes that are not UTF-8 escaped. */
            char source[INET6_ADDRSTRLEN + 8];
            client_address(c, source, sizeof(source));
            clr_log(CLR_LOG_DEBUG, "auth.failed", "source", source, NULL);
            json_t *d = json_object();
            json_object_set_new(d, "method",
                                clr_audit_text(method, strlen(method), CLR_AUDIT_FIELD_MAX));
            json_object_set_new(d, "url", clr_audit_text(url, strlen(url), CLR_AUDIT_FIELD_MAX));
            clr_service_audit_denied(s->svc, source, "tcp (unauthenticated)", "auth.failed", d,
                                     NULL);
            json_decref(d);
            rq->refused = REFUSE_TOKEN;
        } else if ((rq->refused = narrow(c, rq, unix_socket)) != REFUSE_NONE) {
            /* refused: said by send_refusal */
        } else if (!routable(url, method, &rq->takes_body)) {
            rq->refused = REFUSE_ROUTE;
        } else if (!rq->takes_body && body) {
            rq->refused = REFUSE_BODY;
        } else if (!strcmp(method, "PUT") && body != UINT64_MAX && body > MAX_UPLOAD) {
            rq->refused = REFUSE_TOO_LARGE;
        } else if (!strcmp(method, "PUT") && body != UINT64_MAX && body > s->max_upload_total) {
            rq->refused = REFUSE_OVER_TOTAL;
        } else if (!strcmp(method, "PUT") && body != UINT64_MAX && !spool_reserve(s, rq, body)) {
            rq->refused = REFUSE_BUDGET;
        }
        /* Answered now, with the headers: libmicrohttpd then sends the answer and closes the
         * connection without reading the body, so nothing of it is stored, nor does a trickle
         * of it hold the connection. */
        if (rq->refused && body > DISCARD_MAX)
            return send_refusal(s, c, url, method, rq);
        return MHD_YES;
    }
    if (*upload_size && !strcmp(method, "PUT")) {
        if (!rq->refused && rq->takes_body && !rq->too_big && !rq->over_budget &&
            !rq->over_total && !rq->spool_errno)
            spool(s, rq, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->refused && rq->takes_body && !rq->too_big) {
            if (rq->len + *upload_size > MAX_JSON_BODY) {
                rq->too_big = true;
            } else {
                char *b = realloc(rq->body, rq->len + *upload_size + 1);
                if (!b)
                    return MHD_NO;
                memcpy(b + rq->len, upload, *upload_size);
                rq->len += *upload_size;
                b[rq->len] = '\0';
                rq->body = b;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->refused)
        return send_refusal(s, c, url, method, rq);
    if (rq->over_budget)
        return send_over_budget(s, c);
    if (!strcmp(method, "PUT") && (rq->too_big || rq->over_total || rq->spool_errno))
        return send_upload_failure(s, c, rq);
    /* An empty PUT still needs a (zero-length) file to read from. */
    if (!strcmp(method, "PUT") && rq->upload_fd < 0)
        rq->upload_fd = tmpfile_fd();
    return route(s, c, url, method, rq);
}

static enum MHD_Result handle_unix(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls)
{
    (void)version;
    return handle(cls, true, c, url, method, upload, upload_size, con_cls);
}

static enum MHD_Result handle_tcp(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    return handle(cls, false, c, url, method, upload, upload_size, con_cls);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    struct request *rq = *con_cls;
    if (rq) {
        struct server *s = cls;
        spool_release(s, rq);
        /* The response has been sent; libmicrohttpd closes its spool right after this call. */
        clr_files_budget_release(&s->downloads, rq->download_charged);
        rq->download_charged = 0;
        if (rq->upload_fd >= 0)
            close(rq->upload_fd);
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- setup ---- */

/* One line of the token file: TENANT:NAME:TOKEN, or the older NAME:TOKEN and TOKEN (tenant
 * "default", name "default" for a bare token). A token with ':' in it needs the first form. */
static int parse_token_line(struct token *t, char *line, const char *path, int lineno,
                            clr_error *err)
{
    const char *tenant = CLR_TENANT_DEFAULT, *name = "default", *tok = line;
    char *c1 = strchr(line, ':');
    if (c1) {
        *c1 = '\0';
        name = line;
        tok = c1 + 1;
        char *c2 = strchr(c1 + 1, ':');
        if (c2) {
            *c2 = '\0';
            if (clr_tenant_name_valid(c1 + 1)) {
                tenant = line;
                name = c1 + 1;
                tok = c2 + 1;
            } else {
                *c2 = ':'; /* NAME:TOKEN whose token holds a ':' */
            }
        }
    }
    if (!clr_tenant_name_valid(tenant) || !clr_tenant_name_valid(name))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "token file %s line %d: tenant and name must be 1-63 characters of "
                             "a-z, 0-9, '_' and '-' (TENANT:NAME:TOKEN)",
                             path, lineno);
    if (strlen(tok) < 16)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "token file %s line %d: token '%s' is shorter than 16 characters",
                             path, lineno, name);
    snprintf(t->tenant, sizeof(t->tenant), "%.63s", tenant);
    snprintf(t->name, sizeof(t->name), "%.63s", name);
    sha256(tok, strlen(tok), t->digest);
    t->line = lineno;
    return 0;
}

static int load_tokens(struct server *s, const char *path, clr_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return clr_error_set(err, CLR_E_INVALID, errno, "token file %s: %s", path,
                             strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
        fclose(f);
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "token file %s is readable by others: chmod 600 it", path);
    }
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (s->ntokens == MAX_TOKENS) {
            fclose(f);
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "token file %s line %d: more than %d tokens", path, lineno,
                                 MAX_TOKENS);
        }
        struct token *t = &s->tokens[s->ntokens];
        if (parse_token_line(t, line, path, lineno, err) < 0) {
            fclose(f);
            return -1;
        }
        /* A name is what the audit log says acted: two tokens of one name would be one actor;
         * one token twice would belong to two tenants. */
        for (int i = 0; i < s->ntokens; i++) {
            const struct token *o = &s->tokens[i];
            bool same_name = !strcmp(o->tenant, t->tenant) && !strcmp(o->name, t->name);
            if (same_name || CRYPTO_memcmp(o->digest, t->digest, 32) == 0) {
                fclose(f);
                if (same_name)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "token file %s line %d: duplicate name %s:%s (also on "
                                         "line %d): give each token a name of its own",
                                         path, lineno, t->tenant, t->name, o->line);
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "token file %s line %d: the same token as line %d: give "
                                     "each name a token of its own",
                                     path, lineno, o->line);
            }
        }
        s->ntokens++;
    }
    fclose(f);
    if (s->ntokens == 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "token file %s has no token", path);
    return 0;
}

static int open_unix(struct server *s, const struct server_options *o, clr_error *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(o->socket_path) >= sizeof(a.sun_path))
        return clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG, "socket path %s is too long",
                             o->socket_path);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", o->socket_path);
    snprintf(s->socket_path, sizeof(s->socket_path), "%s", o->socket_path);
    /* clearing.socket: systemd made and owns the socket (its owner, group and mode are the
     * socket unit's, not socket_owner/socket_group/socket_mode). */
    int activated = activation_listen_fd(o->socket_path, err);
    if (activated == -1)
        return -1;
    if (activated >= 0) {
        s->unix_fd = activated;
        s->unix_activated = true;
        return 0;
    }
    struct stat st;
    if (lstat(o->socket_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "%s exists and is not a socket: refusing to replace it",
                                 o->socket_path);
        /* A stale socket of a previous run is replaced only if nobody answers on it. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0) {
            close(probe);
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "another daemon is listening on %s", o->socket_path);
        }
        if (probe >= 0)
            close(probe);
        unlink(o->socket_path);
    }
    s->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->unix_fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "socket: %s", strerror(errno));
    mode_t old = umask(0117);
    int rc = bind(s->unix_fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (rc < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "cannot bind %s: %s (does its "
                             "directory exist?)", o->socket_path, strerror(errno));
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (o->socket_owner) {
        struct passwd *pw = getpwnam(o->socket_owner);
        if (!pw)
            return clr_error_set(err, CLR_E_INVALID, 0, "socket owner: no user %s",
                                 o->socket_owner);
        uid = pw->pw_uid;
    }
    if (o->socket_group) {
        struct group *gr = getgrnam(o->socket_group);
        if (!gr)
            return clr_error_set(err, CLR_E_INVALID, 0, "socket group: no group %s",
                                 o->socket_group);
        gid = gr->gr_gid;
    }
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(o->socket_path, uid, gid) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s: %s", o->socket_path,
                             strerror(errno));
    if (chmod(o->socket_path, o->socket_mode) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chmod %s: %s", o->socket_path,
                             strerror(errno));
    if (listen(s->unix_fd, 128) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "listen: %s", strerror(errno));
    return 0;
}

int server_start(struct server **out, clr_service *svc, const struct server_options *o,
                 clr_error *err)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    s->svc = svc;
    s->unix_fd = -1;
    pthread_mutex_init(&s->shares_lock, NULL);
    s->self_uid = geteuid();
    s->max_upload_total = o->max_upload_total;
    s->downloads.max = o->max_download_total;
    s->downloads.name = "max_download_total";
    s->per_uid_limit = o->max_connections / 8 ? o->max_connections / 8 : 1;
    s->shared_limit = o->max_connections - o->max_connections / 8;
    s->shares = calloc(s->shared_limit ? s->shared_limit : 1, sizeof(*s->shares));
    if (!s->shares) {
        server_stop(s);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG;
    if (o->tcp_port && !o->token_file) {
        server_stop(s);
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "listening on TCP needs a token file (--token-file)");
    }
    if (o->token_file && load_tokens(s, o->token_file, err) < 0) {
        server_stop(s);
        return -1;
    }
    if (open_unix(s, o, err) < 0) {
        server_stop(s);
        return -1;
    }
    snprintf(s->tcp_address, sizeof(s->tcp_address), "%s",
             o->tcp_address ? o->tcp_address : "127.0.0.1");
    s->tcp_port = o->tcp_port;
    s->mcp_idle_timeout_s = o->mcp_idle_timeout_s ? o->mcp_idle_timeout_s : MCP_HTTP_IDLE_S;
    s->tenants = o->tenants;
    s->ntenants = o->ntenants;
    if (mcp_http_start(s, err) < 0) {
        server_stop(s);
        return -1;
    }
    s->unix_d = MHD_start_daemon(flags, 0, NULL, NULL, handle_unix, s, MHD_OPTION_LISTEN_SOCKET,
                                 s->unix_fd, MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
                                 MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_unix_connection, s,
                                 MHD_OPTION_END);
    if (!s->unix_d) {
        server_stop(s);
        return clr_error_set(err, CLR_E_INTERNAL, 0, "cannot start the HTTP server on %s",
                             o->socket_path);
    }
    if (o->tcp_port) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(o->tcp_port)};
        if (inet_pton(AF_INET, o->tcp_address ? o->tcp_address : "127.0.0.1", &a.sin_addr) != 1) {
            server_stop(s);
            return clr_error_set(err, CLR_E_INVALID, 0, "tcp address '%s' is not an IPv4 address",
                                 o->tcp_address);
        }
        s->tcp_d = MHD_start_daemon(flags, o->tcp_port, NULL, NULL, handle_tcp, s,
                                    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                                    MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
                                    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                    (unsigned)(o->max_connections / 8 ? o->max_connections / 8 : 1),
                                    MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
                                    MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
        if (!s->tcp_d) {
            server_stop(s);
            return clr_error_set(err, CLR_E_UNAVAILABLE, 0, "cannot listen on TCP port %u",
                                 o->tcp_port);
        }
    }
    *out = s;
    return 0;
}

void server_stop(struct server *s)
{
    if (!s)
        return;
    /* First, while the API still answers: ending a session destroys its sandboxes through it. */
    mcp_http_stop(s);
    if (s->tcp_d)
        MHD_stop_daemon(s->tcp_d);
    if (s->unix_d)
        MHD_stop_daemon(s->unix_d);
    if (s->unix_fd >= 0) {
        close(s->unix_fd);
        /* An activated socket stays: systemd listens on it again for the next start. */
        if (!s->unix_activated)
            unlink(s->socket_path);
    }
    /* After the daemons: stopping them closes their connections, which release their shares,
     * and ends the handlers that could still look a session up. */
    mcp_http_free(s);
    pthread_mutex_destroy(&s->shares_lock);
    free(s->shares);
    free(s);
}
