/* Streamed answers of the HTTP server (see http_stream.h): an exec, a plan or a code cell run in
 * a thread of its own, its events sent as NDJSON lines on a pushed body (http_pushed.c). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_pushed.h"
#include "http_stream.h"

/* ---- an exec or a plan as NDJSON ---- */

/* Clients skip events they do not know. */
static const char heartbeat[] = "{\"event\":\"heartbeat\"}\n";
/* The last line of a stream whose client read too slowly (http_pushed.h), by what it streams:
 * what became of the work, and what to do. */
#define OVERFLOW_HEAD                                                                         \
    "{\"event\":\"error\",\"error\":{\"code\":\"limit\",\"message\":\"the client read this " \
    "stream too slowly: more than " HTTP_PUSHED_MAX_TEXT " waited to be sent, so it ends here; "
static const char overflow_exec[] =
    OVERFLOW_HEAD "the command runs on and its record is kept: GET "
                  "/v1/sandboxes/{id}/execs/{exec_id} (the started event's exec_id) gives its "
                  "result; read streams as they come, or run without stream\"}}\n";
static const char overflow_plan[] =
    OVERFLOW_HEAD "the plan was cancelled (nothing committed, its sandbox destroyed); read "
                  "streams as they come, or run the plan without stream\"}}\n";
static const char overflow_code[] =
    OVERFLOW_HEAD "the cell runs on in its session, its answer is not kept; read streams as "
                  "they come, or run the cell without stream\"}}\n";

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
            /* The last line (the answer or the error) is never held against the bound. */
            if (last)
                (void)http_pushed_write_last(st->out, line, n + 1);
            else
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
    const char *overflow = code ? overflow_code : id[0] ? overflow_exec : overflow_plan;
    struct http_pushed *out = http_pushed_new(heartbeat, overflow);
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
