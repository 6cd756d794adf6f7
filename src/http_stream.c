/* Streamed answers of the HTTP server (see http_stream.h). The stream is shared by the thread
 * that runs the command (it pushes events) and the response (it reads them): the last of the two
 * to let go frees it. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "http_stream.h"

struct event {
    char *line;
    size_t len, off;
    struct event *next;
};

struct stream {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct event *head, *tail;
    bool done;
    int refs;
    clr_service *svc;
    char id[64]; /* the sandbox, for an exec; "" for a plan */
    json_t *req;
    char actor[160];
    char tenant[CLR_TENANT_MAX + 1]; /* a plan's: whose its sandbox is ("": the operator's) */
};


static void stream_unref(struct stream *st)
{
    pthread_mutex_lock(&st->lock);
    int refs = --st->refs;
    pthread_mutex_unlock(&st->lock);
    if (refs > 0)
        return;
    for (struct event *e = st->head; e;) {
        struct event *n = e->next;
        free(e->line);
        free(e);
        e = n;
    }
    json_decref(st->req);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->cond);
    free(st);
}

static void stream_push(struct stream *st, json_t *ev, bool last)
{
    struct event *e = calloc(1, sizeof(*e));
    char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (e && s) {
        size_t n = strlen(s);
        e->line = realloc(s, n + 2);
        if (e->line) {
            e->line[n] = '\n';
            e->line[n + 1] = '\0';
            e->len = n + 1;
            s = NULL;
        }
    }
    free(s);
    pthread_mutex_lock(&st->lock);
    if (e && e->line) {
        if (st->tail)
            st->tail->next = e;
        else
            st->head = e;
        st->tail = e;
    } else {
        free(e);
    }
    if (last)
        st->done = true;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

static void on_stream_event(void *ctx, json_t *ev)
{
    stream_push(ctx, ev, false);
}

static void *stream_exec_main(void *p)
{
    struct stream *st = p;
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = st->id[0] ? clr_service_exec(st->svc, st->id, st->req, st->actor, on_stream_event,
                                          st, &out, &err)
                       : clr_service_plan(st->svc, st->req, st->tenant[0] ? st->tenant : NULL,
                                          st->actor, on_stream_event, st, &out, &err);
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
    stream_unref(st);
    return NULL;
}

/* A line sent when a stream has carried nothing for HEARTBEAT_S: the server ends a connection
 * idle for its timeout (60 s), which a command silent that long would otherwise cost its
 * stream. Clients skip events they do not know. */
#define HEARTBEAT_S 20
static const char heartbeat[] = "{\"event\":\"heartbeat\"}\n";

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct stream *st = cls;
    pthread_mutex_lock(&st->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += HEARTBEAT_S;
    while (!st->head && !st->done) {
        if (pthread_cond_timedwait(&st->cond, &st->lock, &until) == ETIMEDOUT && !st->head &&
            !st->done && max >= sizeof(heartbeat) - 1) {
            pthread_mutex_unlock(&st->lock);
            memcpy(buf, heartbeat, sizeof(heartbeat) - 1);
            return (ssize_t)(sizeof(heartbeat) - 1);
        }
    }
    if (!st->head) {
        pthread_mutex_unlock(&st->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    struct event *e = st->head;
    size_t n = e->len - e->off;
    if (n > max)
        n = max;
    memcpy(buf, e->line + e->off, n);
    e->off += n;
    if (e->off == e->len) {
        st->head = e->next;
        if (!st->head)
            st->tail = NULL;
        free(e->line);
        free(e);
    }
    pthread_mutex_unlock(&st->lock);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_unref(cls);
}

enum MHD_Result http_stream_start(clr_service *svc, struct MHD_Connection *c,
                                  const char *id, json_t *req, const char *actor,
                                  const char *tenant)
{
    struct stream *st = calloc(1, sizeof(*st));
    if (!st) {
        json_decref(req);
        return send_error(c, 500, "internal", "out of memory");
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, NULL);
    st->refs = 2; /* the exec thread and the response */
    st->svc = svc;
    snprintf(st->id, sizeof(st->id), "%.63s", id);
    snprintf(st->actor, sizeof(st->actor), "%s", actor);
    snprintf(st->tenant, sizeof(st->tenant), "%s", tenant);
    st->req = req;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, stream_exec_main, st) != 0) {
        pthread_attr_destroy(&attr);
        st->refs = 1;
        stream_unref(st);
        return send_error(c, 503, "unavailable", "cannot start a thread for the command");
    }
    pthread_attr_destroy(&attr);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, stream_reader, st, stream_free);
    if (!r) {
        stream_unref(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/x-ndjson");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

