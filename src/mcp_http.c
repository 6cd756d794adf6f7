/* The daemon's MCP endpoint (see mcp_http.h): the session table, its reaper, and what each
 * POST and DELETE of /mcp does. A POST's requests wait for their responses in the session's
 * waiters; what the session emits for them goes to that POST's answer: held until the handler
 * knows whether everything is answered (then one JSON answer), else pushed as Server-Sent Events
 * on the same pushed body the NDJSON streams use (http_pushed.h). */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clearing/cleanup.h"
#include "http.h"
#include "http_pushed.h"
#include "mcp.h"
#include "mcp_http.h"
#include "mcp_client.h"

#define REAP_INTERVAL_S 60
#define SESSION_ID_BYTES 32 /* sent as 64 hex digits */

static const char sse_heartbeat[] = ": heartbeat\n\n"; /* an SSE comment: clients skip it */

/* One POST that carried requests: its answer, while any of them is unanswered. */
struct post {
    int refs;          /* the handler, and one per waiter */
    int pending;       /* requests not yet answered */
    json_t *held;      /* what was emitted before the handler chose the answer's form */
    bool notified;     /* a notification among held: the answer must be a stream */
    struct http_pushed *sse; /* once the answer is a stream */
};

/* A request of a POST waiting for its response. */
struct waiter {
    json_t *id;
    struct post *post;
    struct waiter *next;
};

struct msession {
    char id[2 * SESSION_ID_BYTES + 1];
    char principal[160];
    char tenant[CLR_TENANT_MAX + 1]; /* its token's tenant; "" for the unix socket's operator */
    struct mcp_session *s;
    struct mcp_backend backend;
    pthread_mutex_t lock; /* waiters, version, init_id, used, refs */
    struct waiter *waiters;
    char version[32];  /* the protocol version initialize agreed on ("" until then) */
    json_t *init_id;   /* the id of its initialize request, until answered */
    time_t used;       /* CLOCK_MONOTONIC seconds of its last request's or call's end */
    int refs;          /* the table's, and one per handler using it */
};

struct mcp_http {
    pthread_mutex_t lock; /* sessions, n, stopping */
    pthread_cond_t wake;
    struct msession *sessions[MCP_HTTP_MAX_SESSIONS];
    unsigned n;
    bool stopping;
    pthread_t reaper;
    bool reaper_started;
    unsigned idle_s; /* mcp_idle_timeout */
    char socket_path[108];
};

static time_t now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec;
}

/* ---- posts and waiters ---- */

static void post_unref(struct post *p)
{
    if (--p->refs > 0)
        return;
    if (p->sse)
        http_pushed_unref(p->sse);
    json_decref(p->held);
    free(p);
}

/* One SSE event carrying msg. A response always goes (http_pushed_write_last): a client whose
 * request went unanswered would wait for it until its own timeout; a notification (progress, a
 * log line) is dropped when more than HTTP_PUSHED_MAX waits for a client that reads too slowly. */
static void sse_send(struct http_pushed *out, const json_t *msg, bool response)
{
    _cleanup_free_ char *s = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s)
        return;
    size_t n = strlen(s);
    _cleanup_free_ char *ev = malloc(n + 32);
    if (!ev)
        return;
    int len = snprintf(ev, n + 32, "event: message\ndata: %s\n\n", s);
    if (len > 0 && response)
        (void)http_pushed_write_last(out, ev, (size_t)len);
    else if (len > 0)
        (void)http_pushed_write(out, ev, (size_t)len);
}

static bool is_response(const json_t *msg)
{
    return json_is_object(msg) && !json_object_get(msg, "method") &&
           (json_object_get(msg, "result") || json_object_get(msg, "error"));
}

/* The session's emit: a message goes to the POST whose request it belongs to. One that belongs
 * to none (or to a request no POST waits for) is dropped: there is no standalone stream (GET
 * is 405), and the specification forbids sending it on an unrelated request's stream. */
static void on_emit(void *ctx, json_t *msg, const json_t *related_id)
{
    struct msession *ms = ctx;
    if (json_is_array(msg)) {
        /* A batch's answers, sent together: each goes to the POST of its request. */
        size_t i;
        json_t *m;
        json_array_foreach(msg, i, m)
            on_emit(ctx, m, json_object_get(m, "id"));
        return;
    }
    if (!related_id)
        return;
    pthread_mutex_lock(&ms->lock);
    struct waiter **w = &ms->waiters;
    while (*w && !json_equal((*w)->id, related_id))
        w = &(*w)->next;
    if (!*w) {
        pthread_mutex_unlock(&ms->lock);
        return;
    }
    struct post *p = (*w)->post;
    bool response = is_response(msg);
    if (response && ms->init_id && json_equal(ms->init_id, related_id)) {
        const char *v = json_string_value(
            json_object_get(json_object_get(msg, "result"), "protocolVersion"));
        snprintf(ms->version, sizeof(ms->version), "%s", v ? v : "");
        json_decref(ms->init_id);
        ms->init_id = NULL;
    }
    if (p->sse) {
        sse_send(p->sse, msg, response);
    } else {
        json_array_append(p->held, msg);
        p->notified |= !response;
    }
    if (response) {
        /* A call's answer is use too: idle counts from the end of the last call (a tools/call
         * runs on a thread of its own, past its request's handler). */
        ms->used = now_s();
        struct waiter *done = *w;
        *w = done->next;
        json_decref(done->id);
        free(done);
        if (--p->pending == 0 && p->sse)
            http_pushed_end(p->sse);
        post_unref(p);
    }
    pthread_mutex_unlock(&ms->lock);
}

/* Ends the answers still waiting (the session ended: no response will come). */
static void waiters_drop(struct msession *ms)
{
    pthread_mutex_lock(&ms->lock);
    while (ms->waiters) {
        struct waiter *w = ms->waiters;
        ms->waiters = w->next;
        if (w->post->sse)
            http_pushed_end(w->post->sse);
        w->post->pending--;
        post_unref(w->post);
        json_decref(w->id);
        free(w);
    }
    pthread_mutex_unlock(&ms->lock);
}

/* ---- sessions ---- */

/* Drops a reference; the last one (the table has let go) ends the session: its calls
 * cancelled, its sandboxes not kept destroyed. */
static void ms_unref(struct msession *ms)
{
    pthread_mutex_lock(&ms->lock);
    int refs = --ms->refs;
    /* A handler's end is use too: idle counts from the end of the last request, not its start
     * (a call longer than mcp_idle_timeout must not leave its session due at once). */
    if (refs > 0)
        ms->used = now_s();
    pthread_mutex_unlock(&ms->lock);
    if (refs > 0)
        return;
    mcp_session_end(ms->s);
    waiters_drop(ms);
    mcp_client_free(&ms->backend);
    json_decref(ms->init_id);
    pthread_mutex_destroy(&ms->lock);
    clr_log(CLR_LOG_INFO, "mcp.session_ended", "principal", ms->principal, NULL);
    free(ms);
}

static int ms_new(struct msession **out, struct server *s, const struct request *rq,
                  clr_error *err)
{
    unsigned char raw[SESSION_ID_BYTES];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "no random bytes for a session id");
    struct msession *ms = calloc(1, sizeof(*ms));
    if (!ms)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(ms->id + 2 * i, 3, "%02x", raw[i]);
    snprintf(ms->principal, sizeof(ms->principal), "%s", rq->principal);
    snprintf(ms->tenant, sizeof(ms->tenant), "%s", rq->unix_socket ? "" : rq->tenant);
    pthread_mutex_init(&ms->lock, NULL);
    ms->refs = 1;
    ms->used = now_s();
    char actor[200];
    snprintf(actor, sizeof(actor), "mcp %.150s", rq->principal);
    if (mcp_client_backend(&ms->backend, s->socket_path, rq->tenant, actor, err) < 0 ||
        mcp_session_new(&ms->s, &ms->backend, on_emit, ms, err) < 0) {
        mcp_client_free(&ms->backend);
        pthread_mutex_destroy(&ms->lock);
        free(ms);
        return -1;
    }
    *out = ms;
    return 0;
}

/* The session id names for this principal, with a reference for the caller; NULL when there
 * is none, or it is someone else's (the same answer: an id tells nobody else anything). */
static struct msession *table_find(struct mcp_http *t, const char *id, const char *principal)
{
    struct msession *found = NULL;
    size_t len = strlen(id);
    pthread_mutex_lock(&t->lock);
    for (unsigned i = 0; i < t->n && !found; i++) {
        struct msession *ms = t->sessions[i];
        /* In constant time: how much of an id matched is not told by how long the answer
         * took (ids are all of one length, so the length compared first tells nothing). */
        if (len == sizeof(ms->id) - 1 && CRYPTO_memcmp(ms->id, id, len) == 0 &&
            !strcmp(ms->principal, principal))
            found = ms;
    }
    if (found) {
        pthread_mutex_lock(&found->lock);
        found->refs++;
        found->used = now_s();
        pthread_mutex_unlock(&found->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

/* Takes ms out of the table; false if it was not in it (already ended). */
static bool table_remove(struct mcp_http *t, struct msession *ms)
{
    bool removed = false;
    pthread_mutex_lock(&t->lock);
    for (unsigned i = 0; i < t->n; i++) {
        if (t->sessions[i] == ms) {
            t->sessions[i] = t->sessions[--t->n];
            removed = true;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return removed;
}

/* Whether ms has been idle for idle_s: no request, no handler, no call waited on. */
static bool ms_idle(struct msession *ms, time_t now, unsigned idle_s)
{
    pthread_mutex_lock(&ms->lock);
    bool idle = ms->refs == 1 && !ms->waiters && now - ms->used >= (time_t)idle_s;
    pthread_mutex_unlock(&ms->lock);
    return idle;
}

/* Takes the idle sessions out of the table into out (at most MCP_HTTP_MAX_SESSIONS); their
 * count. Called with t->lock held. */
static unsigned take_idle(struct mcp_http *t, struct msession **out)
{
    unsigned k = 0;
    time_t now = now_s();
    for (unsigned i = 0; i < t->n;) {
        if (ms_idle(t->sessions[i], now, t->idle_s)) {
            out[k++] = t->sessions[i];
            t->sessions[i] = t->sessions[--t->n];
        } else {
            i++;
        }
    }
    return k;
}

static void end_all(struct msession **list, unsigned n, const char *why)
{
    for (unsigned i = 0; i < n; i++) {
        clr_log(CLR_LOG_INFO, "mcp.session_ending", "principal", list[i]->principal, "reason",
                why, NULL);
        ms_unref(list[i]);
    }
}

static void *reaper_main(void *arg)
{
    struct mcp_http *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        /* Every minute, or twice per timeout when it is shorter. */
        until.tv_sec += t->idle_s / 2 < REAP_INTERVAL_S ? (t->idle_s + 1) / 2 : REAP_INTERVAL_S;
        pthread_cond_timedwait(&t->wake, &t->lock, &until);
        if (t->stopping)
            break;
        struct msession *idle[MCP_HTTP_MAX_SESSIONS];
        unsigned k = take_idle(t, idle);
        pthread_mutex_unlock(&t->lock);
        end_all(idle, k, "idle");
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* How many sessions principal holds. Called with t->lock held. */
static unsigned held_by(const struct mcp_http *t, const char *principal)
{
    unsigned n = 0;
    for (unsigned i = 0; i < t->n; i++)
        n += !strcmp(t->sessions[i]->principal, principal);
    return n;
}

/* How many sessions the tokens of tenant hold together ("": the operator, no tenant's). Called
 * with t->lock held. */
static unsigned held_by_tenant(const struct mcp_http *t, const char *tenant)
{
    unsigned n = 0;
    for (unsigned i = 0; i < t->n; i++)
        n += !strcmp(t->sessions[i]->tenant, tenant);
    return n;
}

/* The most sessions tenant's tokens may hold together: its quota's max_mcp_sessions, else
 * MCP_HTTP_TENANT_SESSIONS; the operator ("") is bounded per principal only. */
static unsigned tenant_cap(const struct server *s, const char *tenant)
{
    if (!tenant[0])
        return MCP_HTTP_MAX_SESSIONS;
    for (size_t i = 0; s->tenants && i < s->ntenants; i++) {
        if (!strcmp(s->tenants[i].name, tenant) && s->tenants[i].max_mcp_sessions)
            return s->tenants[i].max_mcp_sessions;
    }
    return MCP_HTTP_TENANT_SESSIONS;
}

enum admission { ADMITTED, TABLE_FULL, PRINCIPAL_FULL, TENANT_FULL, STOPPING };

/* Whether ms's principal, its tenant (at most tenant_max) or the table is full. Called with
 * t->lock held. */
static enum admission room_for(const struct mcp_http *t, const struct msession *ms,
                               unsigned tenant_max)
{
    if (held_by(t, ms->principal) >= MCP_HTTP_MAX_PER_PRINCIPAL)
        return PRINCIPAL_FULL;
    if (held_by_tenant(t, ms->tenant) >= tenant_max)
        return TENANT_FULL;
    return t->n == MCP_HTTP_MAX_SESSIONS ? TABLE_FULL : ADMITTED;
}

/* Puts ms in the table (which takes the caller's reference, and the caller gets another);
 * a full table, or a principal or tenant at its share, is reaped of its idle sessions first. */
static enum admission table_add(struct mcp_http *t, struct msession *ms, unsigned tenant_max)
{
    struct msession *idle[MCP_HTTP_MAX_SESSIONS];
    unsigned k = 0;
    pthread_mutex_lock(&t->lock);
    if (room_for(t, ms, tenant_max) != ADMITTED)
        k = take_idle(t, idle);
    enum admission a = t->stopping ? STOPPING : room_for(t, ms, tenant_max);
    if (a == ADMITTED) {
        t->sessions[t->n++] = ms;
        ms->refs++;
    }
    pthread_mutex_unlock(&t->lock);
    end_all(idle, k, "idle");
    return a;
}

int mcp_http_start(struct server *s, clr_error *err)
{
    struct mcp_http *t = calloc(1, sizeof(*t));
    if (!t)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    snprintf(t->socket_path, sizeof(t->socket_path), "%s", s->socket_path);
    t->idle_s = s->mcp_idle_timeout_s ? s->mcp_idle_timeout_s : MCP_HTTP_IDLE_S;
    if (pthread_create(&t->reaper, NULL, reaper_main, t) != 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the MCP session reaper");
    }
    t->reaper_started = true;
    s->mcp = t;
    return 0;
}

void mcp_http_stop(struct server *s)
{
    struct mcp_http *t = s->mcp;
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true; /* from now on no session opens */
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    if (t->reaper_started)
        pthread_join(t->reaper, NULL);
    t->reaper_started = false;
    struct msession *all[MCP_HTTP_MAX_SESSIONS];
    pthread_mutex_lock(&t->lock);
    unsigned n = t->n;
    memcpy(all, t->sessions, n * sizeof(all[0]));
    t->n = 0;
    pthread_mutex_unlock(&t->lock);
    /* A session a handler still holds ends when that handler lets go. */
    end_all(all, n, "the daemon stops");
}

void mcp_http_free(struct server *s)
{
    struct mcp_http *t = s->mcp;
    if (!t)
        return;
    mcp_http_stop(s);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t);
    s->mcp = NULL;
}

/* ---- what a request must carry ---- */

static enum MHD_Result refuse(struct MHD_Connection *c, int status, const char *code,
                              const char *message)
{
    return send_error(c, status, code, message);
}

/* Whether host (of an Origin, without its port) names this machine's loopback or the address
 * the TCP listener is bound to. */
static bool own_host(const struct server *s, const char *host, size_t len)
{
    static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < 3; i++) {
        if (strlen(loopback[i]) == len && !strncasecmp(host, loopback[i], len))
            return true;
    }
    return s->tcp_address[0] && strcmp(s->tcp_address, "0.0.0.0") &&
           strlen(s->tcp_address) == len && !strncmp(host, s->tcp_address, len);
}

/* The Origin check against DNS rebinding: a browser's page whose name an attacker points at
 * this machine sends its own Origin, which is not the daemon's. None sent: not a browser. */
static bool origin_ok(const struct server *s, struct MHD_Connection *c, const struct request *rq)
{
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!o)
        return true;
    if (rq->unix_socket)
        return false; /* no browser reaches the unix socket but through a proxy: refused */
    unsigned def_port;
    const char *host;
    if (!strncasecmp(o, "http://", 7)) {
        host = o + 7;
        def_port = 80;
    } else if (!strncasecmp(o, "https://", 8)) {
        host = o + 8;
        def_port = 443;
    } else {
        return false;
    }
    const char *end = host[0] == '[' ? strchr(host, ']') : NULL;
    const char *colon = strchr(end ? end : host, ':');
    size_t hlen = colon ? (size_t)(colon - host) : strlen(host);
    char *rest = NULL;
    unsigned long port = colon ? strtoul(colon + 1, &rest, 10) : def_port;
    if (colon && (rest == colon + 1 || *rest))
        return false;
    return own_host(s, host, hlen) && port == s->tcp_port;
}

/* Whether an Accept header lists type (or a wildcard that covers it). */
static bool accepts(const char *accept, const char *type)
{
    return accept && (strcasestr(accept, type) || strstr(accept, "*/*"));
}

/* What one message is: 'r' request, 'n' notification, 's' response, 0 none of them. */
static char kind_of(const json_t *m)
{
    if (!json_is_object(m))
        return 0;
    json_t *method = json_object_get(m, "method"), *id = json_object_get(m, "id");
    bool id_ok = json_is_string(id) || json_is_integer(id);
    if (json_is_string(method))
        return id ? (id_ok ? 'r' : 0) : 'n';
    if (!method && id && (json_object_get(m, "result") || json_object_get(m, "error")))
        return 's';
    return 0;
}

/* Checks the body's messages; *requests counts its requests, *init whether it is an
 * initialize request. false: err says what is wrong. */
static bool classify(const json_t *body, size_t *requests, bool *init, char *why, size_t wlen)
{
    size_t n = json_is_array(body) ? json_array_size(body) : 1;
    *requests = 0;
    *init = false;
    if (json_is_array(body) && n == 0) {
        snprintf(why, wlen, "an empty batch: send one JSON-RPC message (or a non-empty array)");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_is_array(body) ? json_array_get(body, i) : body;
        char k = kind_of(m);
        if (!k) {
            snprintf(why, wlen, "message %zu is not a JSON-RPC 2.0 request, notification or "
                     "response (an object with \"method\" and a string or integer \"id\", "
                     "\"method\" alone, or \"id\" with \"result\" or \"error\")", i);
            return false;
        }
        *requests += k == 'r';
        const char *method = json_string_value(json_object_get(m, "method"));
        if (k == 'r' && method && !strcmp(method, "initialize"))
            *init = true;
    }
    if (*init && json_is_array(body)) {
        snprintf(why, wlen, "initialize must be sent alone, not in a batch");
        return false;
    }
    return true;
}

/* ---- POST, GET, DELETE ---- */

/* A post waiting for the body's requests (the handler holds one reference, each waiter one). */
static struct post *post_new(struct msession *ms, const json_t *body)
{
    struct post *p = calloc(1, sizeof(*p));
    json_t *held = json_array();
    if (!p || !held) {
        free(p);
        json_decref(held);
        return NULL;
    }
    p->held = held;
    p->refs = 1;
    size_t n = json_is_array(body) ? json_array_size(body) : 1;
    pthread_mutex_lock(&ms->lock);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_is_array(body) ? json_array_get(body, i) : body;
        struct waiter *w = kind_of(m) == 'r' ? calloc(1, sizeof(*w)) : NULL;
        if (!w)
            continue; /* not a request (or out of memory: its answer is dropped) */
        w->id = json_incref(json_object_get(m, "id"));
        w->post = p;
        w->next = ms->waiters;
        ms->waiters = w;
        p->pending++;
        p->refs++;
    }
    pthread_mutex_unlock(&ms->lock);
    return p;
}

static enum MHD_Result queue(struct MHD_Connection *c, struct MHD_Response *r, const char *type,
                             const char *session_id)
{
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (session_id)
        MHD_add_response_header(r, "Mcp-Session-Id", session_id);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* One JSON answer when everything is answered and nothing else was said, else a stream of
 * what was said so far and what is still to come. *failed: a lone answer that is an error
 * (for initialize: no session was opened). */
static enum MHD_Result answer_post(struct MHD_Connection *c, struct msession *ms, struct post *p,
                                   bool batch, const char *session_id, bool *failed)
{
    pthread_mutex_lock(&ms->lock);
    if (p->pending == 0 && !p->notified) {
        json_t *out = batch ? p->held : json_array_get(p->held, 0);
        *failed = !batch && json_object_get(out, "error");
        char *text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        post_unref(p);
        pthread_mutex_unlock(&ms->lock);
        if (!text)
            return send_error(c, 500, "internal", "out of memory");
        struct MHD_Response *r =
            MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r)
            free(text);
        return queue(c, r, "application/json", *failed ? NULL : session_id);
    }
    p->sse = http_pushed_new(sse_heartbeat, NULL);
    struct MHD_Response *r = p->sse ? http_pushed_response(p->sse) : NULL;
    if (r) {
        for (size_t i = 0; i < json_array_size(p->held); i++)
            sse_send(p->sse, json_array_get(p->held, i), is_response(json_array_get(p->held, i)));
        json_array_clear(p->held);
        if (p->pending == 0)
            http_pushed_end(p->sse);
    }
    post_unref(p);
    pthread_mutex_unlock(&ms->lock);
    if (!r)
        return send_error(c, 500, "internal", "out of memory");
    return queue(c, r, "text/event-stream", session_id);
}

/* Opens a session for rq's principal; NULL when refused (answered in *ret). */
static struct msession *open_session(struct server *s, struct MHD_Connection *c,
                                     const struct request *rq, const json_t *init,
                                     enum MHD_Result *ret)
{
    clr_error err = CLR_ERROR_INIT;
    struct msession *ms = NULL;
    if (ms_new(&ms, s, rq, &err) < 0) {
        *ret = send_clr_error(c, &err);
        return NULL;
    }
    unsigned tenant_max = tenant_cap(s, rq->unix_socket ? "" : rq->tenant);
    enum admission a = table_add(s->mcp, ms, tenant_max);
    if (a != ADMITTED) {
        ms_unref(ms);
        char msg[300];
        if (a == PRINCIPAL_FULL)
            snprintf(msg, sizeof(msg), "%.60s holds %d MCP sessions, the most one token may: end "
                     "one (DELETE /mcp) or wait for an idle one to end", rq->principal,
                     MCP_HTTP_MAX_PER_PRINCIPAL);
        else if (a == TENANT_FULL)
            snprintf(msg, sizeof(msg), "tenant %.63s is at its quota: its tokens hold %u MCP "
                     "sessions (max_mcp_sessions %u): end one of them (DELETE /mcp with its "
                     "Mcp-Session-Id) or wait for an idle one to end (mcp_idle_timeout)",
                     rq->tenant, tenant_max, tenant_max);
        else
            snprintf(msg, sizeof(msg), "the daemon holds %d MCP sessions, the most it keeps: "
                     "end one (DELETE /mcp) or wait for an idle one to end",
                     MCP_HTTP_MAX_SESSIONS);
        *ret = a == STOPPING ? refuse(c, 503, "unavailable",
                                      "the daemon is stopping: no MCP session opens")
                             : refuse(c, 429, "limit", msg);
        return NULL;
    }
    ms->init_id = json_incref(json_object_get(init, "id"));
    clr_log(CLR_LOG_INFO, "mcp.session_opened", "principal", ms->principal, NULL);
    return ms;
}

/* The session a later request names; NULL when refused (answered in *ret). */
static struct msession *named_session(struct server *s, struct MHD_Connection *c,
                                      const struct request *rq, enum MHD_Result *ret)
{
    const char *sid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Mcp-Session-Id");
    if (!sid) {
        *ret = refuse(c, 400, "invalid", "no Mcp-Session-Id header: open a session with an "
                      "initialize request first, then send the id its answer's Mcp-Session-Id "
                      "header gives with every request");
        return NULL;
    }
    struct msession *ms = table_find(s->mcp, sid, rq->principal);
    if (!ms) {
        *ret = refuse(c, 404, "not_found", "no such MCP session (it ended, or was never "
                      "opened by this principal): open a new one with initialize");
        return NULL;
    }
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "MCP-Protocol-Version");
    pthread_mutex_lock(&ms->lock);
    bool bad = v && ms->version[0] && strcmp(v, ms->version);
    char msg[200];
    snprintf(msg, sizeof(msg), "MCP-Protocol-Version %.40s is not the version this session "
             "agreed on at initialize (%s): send that one", v ? v : "", ms->version);
    pthread_mutex_unlock(&ms->lock);
    if (bad) {
        ms_unref(ms);
        *ret = refuse(c, 400, "invalid", msg);
        return NULL;
    }
    return ms;
}

/* The checks every method of /mcp makes first: Origin (403). */
static bool refused_origin(struct server *s, struct MHD_Connection *c, const struct request *rq,
                           enum MHD_Result *ret)
{
    if (origin_ok(s, c, rq))
        return false;
    *ret = refuse(c, 403, "denied", "Origin is not the daemon's own (localhost or its TCP "
                  "address and port): /mcp refuses requests a web page sends, against DNS "
                  "rebinding");
    return true;
}

enum MHD_Result mcp_http_post(struct server *s, struct MHD_Connection *c, struct request *rq)
{
    enum MHD_Result ret;
    if (refused_origin(s, c, rq, &ret))
        return ret;
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    if (!accepts(accept, "application/json") || !accepts(accept, "text/event-stream"))
        return refuse(c, 406, "invalid", "Accept must list both application/json and "
                      "text/event-stream: /mcp answers in either");
    if (rq->too_big)
        return refuse(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit", "request body larger than 1 MiB");
    json_error_t jerr;
    json_auto_t *body = json_loadb(rq->body ? rq->body : "", rq->len, 0, &jerr);
    char why[300];
    size_t requests;
    bool init;
    if (!body)
        snprintf(why, sizeof(why), "the body is not JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
    if (!body || !classify(body, &requests, &init, why, sizeof(why)))
        return refuse(c, 400, "invalid", why);
    bool fresh = init && !MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Mcp-Session-Id");
    struct msession *ms = fresh ? open_session(s, c, rq, body, &ret)
                                : named_session(s, c, rq, &ret);
    if (!ms)
        return ret;
    if (requests == 0) {
        mcp_session_handle(ms->s, body);
        ms_unref(ms);
        return send_empty(c, 202);
    }
    struct post *p = post_new(ms, body);
    if (!p) {
        ms_unref(ms);
        return refuse(c, 500, "internal", "out of memory");
    }
    mcp_session_handle(ms->s, body);
    bool failed = false;
    ret = answer_post(c, ms, p, json_is_array(body), fresh ? ms->id : NULL, &failed);
    if (fresh && failed && table_remove(s->mcp, ms))
        ms_unref(ms); /* initialize refused: no session stays open */
    ms_unref(ms);
    return ret;
}

enum MHD_Result mcp_http_delete(struct server *s, struct MHD_Connection *c, struct request *rq)
{
    enum MHD_Result ret;
    if (refused_origin(s, c, rq, &ret))
        return ret;
    struct msession *ms = named_session(s, c, rq, &ret);
    if (!ms)
        return ret;
    if (table_remove(s->mcp, ms))
        ms_unref(ms);
    /* The last reference: the session ends here, its sandboxes destroyed, unless another
     * request of it is still being handled (then it ends when that one lets go). */
    ms_unref(ms);
    return send_empty(c, 204);
}
