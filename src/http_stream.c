/* Streamed answers of the HTTP server (see http_stream.h). A pushed body is shared by the
 * thread that pushes (an exec, an MCP session's calls) and the response that reads it: the last
 * of the two to let go frees it. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "http_stream.h"

/* ---- a pushed body ---- */

struct chunk {
    char *data;
    size_t len, off;
    struct chunk *next;
};

struct http_pushed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct chunk *head, *tail;
    bool done;
    bool closed; /* the response let go */
    int refs;
    const char *heartbeat;
    int client_fd;      /* the connection's socket, watched for the client's hang-up; -1: none */
    volatile int gone;  /* the response let go: what a streamed plan takes as its cancel */
};

/* A stream silent for HEARTBEAT_S carries its heartbeat: the server ends a connection idle for
 * its timeout (60 s), which a command silent that long would otherwise cost its stream. */
#define HEARTBEAT_S 20

struct http_pushed *http_pushed_new(const char *heartbeat)
{
    struct http_pushed *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->refs = 1;
    p->heartbeat = heartbeat;
    p->client_fd = -1;
    return p;
}

void http_pushed_unref(struct http_pushed *p)
{
    pthread_mutex_lock(&p->lock);
    int refs = --p->refs;
    pthread_mutex_unlock(&p->lock);
    if (refs > 0)
        return;
    for (struct chunk *e = p->head; e;) {
        struct chunk *n = e->next;
        free(e->data);
        free(e);
        e = n;
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

bool http_pushed_write(struct http_pushed *p, const char *data, size_t len)
{
    /* Nobody reads it any more (the client went away): dropped, not kept until the end. */
    if (http_pushed_closed(p))
        return true;
    struct chunk *e = calloc(1, sizeof(*e));
    char *d = malloc(len ? len : 1);
    if (!e || !d) {
        free(e);
        free(d);
        return false;
    }
    memcpy(d, data, len);
    e->data = d;
    e->len = len;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = e;
    else
        p->head = e;
    p->tail = e;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return true;
}

void http_pushed_end(struct http_pushed *p)
{
    pthread_mutex_lock(&p->lock);
    p->done = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

bool http_pushed_closed(struct http_pushed *p)
{
    pthread_mutex_lock(&p->lock);
    bool closed = p->closed;
    pthread_mutex_unlock(&p->lock);
    return closed;
}

/* Whether the client closed its side of the connection (or it broke). */
static bool client_hung_up(const struct http_pushed *p)
{
    if (p->client_fd < 0)
        return false;
    struct pollfd pf = {.fd = p->client_fd, .events = POLLRDHUP};
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static ssize_t pushed_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct http_pushed *p = cls;
    pthread_mutex_lock(&p->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += HEARTBEAT_S;
    size_t hb = strlen(p->heartbeat);
    while (!p->head && !p->done) {
        /* Waits in slices of a second: a client that hung up is seen within one, not at the
         * next write (a heartbeat's, which the kernel may still take). */
        struct timespec slice;
        clock_gettime(CLOCK_REALTIME, &slice);
        slice.tv_sec += 1;
        if (slice.tv_sec > until.tv_sec)
            slice = until;
        int w = pthread_cond_timedwait(&p->cond, &p->lock, &slice);
        if (p->head || p->done)
            break;
        if (client_hung_up(p)) {
            pthread_mutex_unlock(&p->lock);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (w == ETIMEDOUT && now.tv_sec >= until.tv_sec && max >= hb) {
            pthread_mutex_unlock(&p->lock);
            memcpy(buf, p->heartbeat, hb);
            return (ssize_t)hb;
        }
    }
    if (!p->head) {
        pthread_mutex_unlock(&p->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    struct chunk *e = p->head;
    size_t n = e->len - e->off;
    if (n > max)
        n = max;
    memcpy(buf, e->data + e->off, n);
    e->off += n;
    if (e->off == e->len) {
        p->head = e->next;
        if (!p->head)
            p->tail = NULL;
        free(e->data);
        free(e);
    }
    pthread_mutex_unlock(&p->lock);
    return (ssize_t)n;
}

static void pushed_free(void *cls)
{
    struct http_pushed *p = cls;
    pthread_mutex_lock(&p->lock);
    p->closed = true;
    p->gone = 1;
    pthread_mutex_unlock(&p->lock);
    http_pushed_unref(p);
}

struct MHD_Response *http_pushed_response(struct http_pushed *p)
{
    pthread_mutex_lock(&p->lock);
    p->refs++;
    pthread_mutex_unlock(&p->lock);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, pushed_reader, p, pushed_free);
    if (!r)
        http_pushed_unref(p);
    return r;
}

void http_pushed_watch(struct http_pushed *p, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    pthread_mutex_lock(&p->lock);
    p->client_fd = ci ? ci->connect_fd : -1;
    pthread_mutex_unlock(&p->lock);
}

const volatile int *http_pushed_gone(struct http_pushed *p)
{
    return &p->gone;
}

/* ---- an exec or a plan as NDJSON ---- */

/* Clients skip events they do not know. */
static const char heartbeat[] = "{\"event\":\"heartbeat\"}\n";

struct stream {
    struct http_pushed *out;
    clr_service *svc;
    char id[64]; /* the sandbox, for an exec; "" for a plan */
    json_t *req;
    char actor[160];
    char tenant[CLR_TENANT_MAX + 1]; /* a plan's: whose its sandbox is ("": the operator's) */
    bool code; /* a code interpreter's cell, not an exec */
};

static void stream_push(struct stream *st, json_t *ev, bool last)
{
    char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s) {
        size_t n = strlen(s);
        char *line = realloc(s, n + 2);
        if (line) {
            line[n] = '\n';
            (void)http_pushed_write(st->out, line, n + 1);
            s = line;
        }
    }
    free(s);
    if (last)
        http_pushed_end(st->out);
}

static void on_stream_event(void *ctx, json_t *ev)
{
    stream_push(ctx, ev, false);
}

static void stream_free(struct stream *st)
{
    http_pushed_unref(st->out);
    json_decref(st->req);
    free(st);
}

static void *stream_exec_main(void *arg)
{
    struct stream *st = arg;
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = st->code ? clr_service_code_run(st->svc, st->id, st->req, st->actor,
                                             on_stream_event, st, &out, &err)
             : st->id[0] ? clr_service_exec(st->svc, st->id, st->req, st->actor, on_stream_event,
                                          st, &out, &err)
                       : clr_service_plan_cancel(st->svc, st->req,
                                                 st->tenant[0] ? st->tenant : NULL, st->actor,
                                                 on_stream_event, st,
                                                 http_pushed_gone(st->out), &out, &err);
    if (rc < 0) {
        json_t *ev = json_pack("{s:s, s:{s:s, s:s}}", "event", "error", "error", "code",
                               clr_error_code_name(err.code), "message", err.message);
        stream_push(st, ev, true);
        json_decref(ev);
    } else {
        json_object_set_new(out, "event", json_string("result"));
        stream_push(st, out, true);
        json_decref(out);
    }
    stream_free(st);
    return NULL;
}

static enum MHD_Result stream_begin(clr_service *svc, struct MHD_Connection *c, const char *id,
                                    json_t *req, const char *actor, const char *tenant,
                                    bool code)
{
    struct stream *st = calloc(1, sizeof(*st));
    struct http_pushed *out = http_pushed_new(heartbeat);
    if (!st || !out) {
        free(st);
        if (out)
            http_pushed_unref(out);
        json_decref(req);
        return send_error(c, 500, "internal", "out of memory");
    }
    st->out = out;
    st->svc = svc;
    snprintf(st->id, sizeof(st->id), "%.63s", id);
    snprintf(st->actor, sizeof(st->actor), "%s", actor);
    snprintf(st->tenant, sizeof(st->tenant), "%s", tenant);
    st->req = req;
    st->code = code;
    /* The response's reference first: the exec thread may end before it is queued. */
    struct MHD_Response *r = http_pushed_response(out);
    if (!r) {
        stream_free(st);
        return MHD_NO;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, stream_exec_main, st) != 0) {
        pthread_attr_destroy(&attr);
        MHD_destroy_response(r);
        stream_free(st);
        return send_error(c, 503, "unavailable", "cannot start a thread for the command");
    }
    pthread_attr_destroy(&attr);
    /* A plan whose client went away is cancelled (its sandbox destroyed, nothing committed);
     * an exec runs on (its result stays readable). */
    if (!id[0])
        http_pushed_watch(out, c);
    MHD_add_response_header(r, "Content-Type", "application/x-ndjson");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http_stream_start(clr_service *svc, struct MHD_Connection *c, const char *id,
                                  json_t *req, const char *actor, const char *tenant)
{
    return stream_begin(svc, c, id, req, actor, tenant, false);
}

enum MHD_Result http_stream_code_start(clr_service *svc, struct MHD_Connection *c,
                                       const char *id, json_t *req, const char *actor)
{
    return stream_begin(svc, c, id, req, actor, "", true);
}
