/* The routes of the HTTP API (see routes.h). A handler parses its path parameters and query,
 * calls one service function and sends what it returns: the service owns every decision. */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "clearing/cleanup.h"
#include "http.h"
#include "http_stream.h"
#include "mcp_http.h"
#include "route_match.h"
#include "routes.h"

#define DESTROY_WAIT_MS 60000 /* DELETE ?wait=true: longest wait for the removal */

/* What a handler gets: the request, and its path parameters as the matcher found them. */
struct route_call {
    struct server *s;
    struct MHD_Connection *c;
    struct request *rq;
    const char *id;   /* {id}: the sandbox ("" when the path has none), checked valid */
    const char *sub;  /* {exec_id} or {proc_id} ("" when the path has none) */
    const char *path; /* {path}: the rest of the URL, any number of segments (or NULL) */
    json_t *body;     /* ROUTE_JSON: the body, a JSON object; a handler that keeps it steals it */
};

typedef enum MHD_Result (*route_handler)(struct route_call *k);

/* What a route reads of the request's body. */
enum route_body {
    ROUTE_NONE,   /* nothing: a request that sends one is refused with 400 from its headers */
    ROUTE_JSON,   /* a JSON object of at most MAX_JSON_BODY bytes, parsed before the handler */
    ROUTE_UPLOAD, /* any bytes, spooled to an unnamed file (request.upload_fd) */
    ROUTE_RPC,    /* JSON of at most MAX_JSON_BODY bytes, any value: the handler parses it */
};

struct route {
    struct route_row row; /* method and pattern, as route_match.h reads them */
    route_handler handler;
    enum route_body body;
};

static int parse_body(struct request *rq, json_t **out, clr_error *err)
{
    if (rq->len == 0) {
        *out = json_object();
        return 0;
    }
    json_error_t jerr;
    *out = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                             jerr.line, jerr.column);
    if (!json_is_object(*out)) {
        json_decref(*out);
        return clr_error_set(err, CLR_E_INVALID, 0, "request body must be a JSON object");
    }
    return 0;
}

/* The tenant whose sandboxes the request may see, for the service's calls: NULL for the
 * operator (the unix socket), who sees all. */
static const char *principal_tenant(const struct request *rq)
{
    return rq->tenant[0] ? rq->tenant : NULL;
}

/* How many live sandboxes (running, and plans') the tenant has: what its health shows in place
 * of the daemon's count, which would tell it of other tenants' creates. */
static json_int_t tenant_live(struct server *s, const char *tenant)
{
    static const char *const live[] = {"running", "plan"};
    json_int_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        clr_error err = CLR_ERROR_INIT;
        json_t *out = NULL;
        if (clr_service_list(s->svc, tenant, live[i], NULL, &out, &err) == 0)
            n += (json_int_t)json_array_size(json_object_get(out, "sandboxes"));
        json_decref(out);
    }
    return n;
}

/* The one check of tenancy for every request that names a sandbox (/v1/sandboxes/ID/...), made
 * before its handler reads the body or looks at anything else: a tenant's request to another
 * tenant's sandbox, and to an id without a row, both get the same 404, so no answer tells a
 * tenant that someone else's sandbox exists. true: refused, *answer is what was queued. */
static bool tenant_refused(struct server *s, struct MHD_Connection *c, const struct request *rq,
                           const char *id, enum MHD_Result *answer)
{
    if (!rq->tenant[0])
        return false;
    clr_error err = CLR_ERROR_INIT;
    if (clr_service_sandbox_of(s->svc, id, rq->tenant, &err) == 0)
        return false;
    *answer = send_clr_error(c, &err);
    return true;
}


/* ---- handlers, one per route ---- */

/* The answer of a service call: its error, or out with status (204: no body). Takes out. */
static enum MHD_Result answer(struct route_call *k, int rc, int status, json_t *out,
                              const clr_error *err)
{
    if (rc < 0) {
        json_decref(out);
        return send_clr_error(k->c, err);
    }
    if (status == 204) {
        json_decref(out);
        return send_empty(k->c, 204);
    }
    return send_json(k->c, status, out);
}

static const char *query(struct route_call *k, const char *name)
{
    return MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result h_metrics(struct route_call *k)
{
    char *m = clr_service_metrics(k->s->svc, principal_tenant(k->rq));
    return m ? send_text(k->c, 200, "text/plain; version=0.0.4", m)
             : send_error(k->c, 500, "internal", "out of memory");
}

static enum MHD_Result h_health(struct route_call *k)
{
    json_t *out = NULL;
    int rc = clr_service_health(k->s->svc, !k->rq->anonymous, &out);
    if (k->rq->anonymous) {
        /* Whoever reaches the port learns whether the daemon works, nothing else: no version
         * to match against advisories, no counts, no engine error text. */
        json_t *word = json_incref(json_object_get(out, "status"));
        json_decref(out);
        out = json_pack("{s:o}", "status", word ? word : json_string("degraded"));
    }
    if (k->rq->tenant[0])
        json_object_set_new(out, "sandboxes", json_integer(tenant_live(k->s, k->rq->tenant)));
    return send_json(k->c, rc == 0 ? 200 : 503, out);
}

static enum MHD_Result h_plan(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    if (query_true(k->c, "stream"))
        return http_stream_start(k->s->svc, k->c, "", steal_pointer(&k->body), k->rq->actor,
                                 k->rq->tenant);
    int rc = clr_service_plan(k->s->svc, k->body, principal_tenant(k->rq), k->rq->actor, NULL,
                              NULL, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_list(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_list(k->s->svc, principal_tenant(k->rq), query(k, "state"),
                              query(k, "label"), &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_create(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    /* {"snapshot": ID}: a fork (issue #22), a new sandbox in that snapshot's state. */
    int rc = json_object_get(k->body, "snapshot")
                 ? clr_service_fork(k->s->svc, k->body, principal_tenant(k->rq), k->rq->actor,
                                    &out, &err)
                 : clr_service_create(k->s->svc, k->body, principal_tenant(k->rq), k->rq->actor,
                                      &out, &err);
    return answer(k, rc, 201, out, &err);
}

static enum MHD_Result h_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_get(k->s->svc, k->id, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_destroy(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_destroy(k->s->svc, k->id, "client", k->rq->actor, &err);
    if (rc == 0 && query_true(k->c, "wait"))
        rc = clr_service_await_removal(k->s->svc, k->id, DESTROY_WAIT_MS, &err);
    return answer(k, rc, 204, NULL, &err);
}

static enum MHD_Result h_extend(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_extend(k->s->svc, k->id, k->body, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_egress(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_egress(k->s->svc, k->id, k->body, k->rq->actor, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_exec(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    if (query_true(k->c, "stream")) {
        /* Errors that can be known before the command starts get their own status; the
         * stream's 200 is only sent once the command is accepted. */
        if (clr_service_exec_check(k->s->svc, k->id, k->body, k->rq->actor, &err) < 0)
            return send_clr_error(k->c, &err);
        return http_stream_start(k->s->svc, k->c, k->id, steal_pointer(&k->body), k->rq->actor,
                                 k->rq->tenant);
    }
    int rc = clr_service_exec(k->s->svc, k->id, k->body, k->rq->actor, NULL, NULL, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_code(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    if (query_true(k->c, "stream")) {
        if (clr_service_code_check(k->s->svc, k->id, k->body, k->rq->actor, &err) < 0)
            return send_clr_error(k->c, &err);
        return http_stream_code_start(k->s->svc, k->c, k->id, steal_pointer(&k->body),
                                      k->rq->actor);
    }
    int rc = clr_service_code_run(k->s->svc, k->id, k->body, k->rq->actor, NULL, NULL, &out,
                                  &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_code_restart(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_code_restart(k->s->svc, k->id, k->rq->actor, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_code_end(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_code_end(k->s->svc, k->id, k->rq->actor, &err);
    return answer(k, rc, 204, NULL, &err);
}

static enum MHD_Result h_exec_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_exec_get(k->s->svc, k->id, k->sub, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_commit(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_commit(k->s->svc, k->id, k->body, k->rq->actor, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_diff(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    char *diff = NULL;
    if (clr_service_diff(k->s->svc, k->id, &diff, &err) < 0)
        return send_clr_error(k->c, &err);
    return send_text(k->c, 200, "text/x-diff", diff);
}

static enum MHD_Result h_proc_start(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_proc_start(k->s->svc, k->id, k->body, k->rq->actor, &out, &err);
    return answer(k, rc, 201, out, &err);
}

static enum MHD_Result h_proc_list(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_proc_list(k->s->svc, k->id, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_proc_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_proc_get(k->s->svc, k->id, k->sub, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_proc_output(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    uint64_t so = 0, eo = 0, wait = 0;
    int rc = query_uint(k->c, "stdout_offset", &so, &err) < 0 ||
                     query_uint(k->c, "stderr_offset", &eo, &err) < 0 ||
                     query_duration(k->c, "wait", &wait, &err) < 0
                 ? -1
                 : clr_service_proc_output(k->s->svc, k->id, k->sub, so, eo,
                                           (uint32_t)(wait > 60000 ? 60001 : wait), &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_proc_stdin(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_proc_stdin(k->s->svc, k->id, k->sub, k->body, &err);
    return answer(k, rc, 204, NULL, &err);
}

static enum MHD_Result h_proc_signal(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_proc_signal(k->s->svc, k->id, k->sub, k->body, k->rq->actor, &err);
    return answer(k, rc, 204, NULL, &err);
}

static enum MHD_Result h_file_list(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    const char *rel = query(k, "path");
    int rc = clr_service_file_list(k->s->svc, k->id, rel ? rel : "", &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_file_put(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    if (k->rq->too_big)
        return send_error(k->c, MHD_HTTP_CONTENT_TOO_LARGE, "limit", "upload larger than 4 GiB");
    if (k->rq->upload_fd < 0)
        return send_error(k->c, 500, "internal", "upload was not stored");
    lseek(k->rq->upload_fd, 0, SEEK_SET);
    int rc = clr_service_file_put(k->s->svc, k->id, k->path, k->rq->upload_fd, k->rq->actor,
                                  &out, &err);
    return answer(k, rc, 201, out, &err);
}

/* A download: spooled to an unnamed file first (the audit record hashes exactly the bytes
 * sent), its room charged to the server's download budget until the response is done. */
static enum MHD_Result h_file_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    _cleanup_close_ int fd = tmpfile_fd();
    if (fd < 0)
        return send_error(k->c, 503, "unavailable", "no temporary space for the download");
    uint64_t size = 0, charged = 0;
    int rc = clr_service_file_get(k->s->svc, k->id, k->path, fd, &k->s->downloads, k->rq->actor,
                                  &size, &charged, &err);
    if (rc < 0) {
        /* Refused or failed: its spool goes now, and the room it took with it, rather than when
         * libmicrohttpd is done sending the error (a client's next request may come first). */
        close(steal_fd(&fd));
        clr_files_budget_release(&k->s->downloads, charged);
        return send_clr_error(k->c, &err);
    }
    k->rq->download_charged += charged;
    return send_fd_range(k->c, steal_fd(&fd), size, "application/octet-stream");
}

static enum MHD_Result h_file_delete(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_file_delete(k->s->svc, k->id, k->path, query_true(k->c, "recursive"),
                                     k->rq->actor, &err);
    return answer(k, rc, 204, NULL, &err);
}

static const char *archive_path(struct route_call *k)
{
    const char *rel = query(k, "path");
    return rel ? rel : "";
}

static enum MHD_Result h_archive_put(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    if (k->rq->too_big)
        return send_error(k->c, MHD_HTTP_CONTENT_TOO_LARGE, "limit", "archive larger than 4 GiB");
    lseek(k->rq->upload_fd, 0, SEEK_SET);
    if (k->rq->upload_fd < 0 || clr_service_archive_put(k->s->svc, k->id, archive_path(k),
                                                        k->rq->upload_fd, k->rq->actor, &out,
                                                        &err) < 0)
        return send_clr_error(k->c, &err);
    return send_json(k->c, 201, out);
}

static enum MHD_Result h_archive_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    _cleanup_close_ int fd = tmpfile_fd();
    if (fd < 0)
        return send_error(k->c, 503, "unavailable", "no temporary space for the archive");
    uint64_t charged = 0;
    int rc = clr_service_archive_get(k->s->svc, k->id, archive_path(k), fd, &k->s->downloads,
                                     k->rq->actor, &charged, &err);
    if (rc < 0) {
        /* Refused or failed: its spool goes now, and the room it took with it, rather than when
         * libmicrohttpd is done sending the error (a client's next request may come first). */
        close(steal_fd(&fd));
        clr_files_budget_release(&k->s->downloads, charged);
        return send_clr_error(k->c, &err);
    }
    k->rq->download_charged += charged;
    off_t size = lseek(fd, 0, SEEK_END);
    return send_fd(k->c, steal_fd(&fd), (uint64_t)size, "application/x-tar");
}

static enum MHD_Result h_snapshot_create(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_snapshot(k->s->svc, k->id, k->body, k->rq->actor, &out, &err);
    return answer(k, rc, 201, out, &err);
}

static enum MHD_Result h_snapshot_list(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_snapshot_list(k->s->svc, k->id, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_snapshot_get(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_snapshot_get(k->s->svc, k->id, k->sub, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_snapshot_delete(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_service_snapshot_delete(k->s->svc, k->id, k->sub, k->rq->actor, &err);
    return answer(k, rc, 204, NULL, &err);
}

static enum MHD_Result h_restore(struct route_call *k)
{
    clr_error err = CLR_ERROR_INIT;
    json_t *out = NULL;
    int rc = clr_service_restore(k->s->svc, k->id, k->body, k->rq->actor, &out, &err);
    return answer(k, rc, 200, out, &err);
}

static enum MHD_Result h_mcp_post(struct route_call *k)
{
    return mcp_http_post(k->s, k->c, k->rq);
}

static enum MHD_Result h_mcp_delete(struct route_call *k)
{
    return mcp_http_delete(k->s, k->c, k->rq);
}

/* ---- the table ---- */

/* Every route of the API, checked against docs/openapi.yaml both ways by tests/integration/
 * test_routes.py. Rows of one path are listed together, in the order a 405's Allow header
 * names their methods. */
static const struct route routes[] = {
    {{"GET", "/metrics"}, h_metrics, ROUTE_NONE},
    {{"GET", "/v1/health"}, h_health, ROUTE_NONE},
    {{"POST", "/v1/plans"}, h_plan, ROUTE_JSON},
    {{"GET", "/v1/sandboxes"}, h_list, ROUTE_NONE},
    {{"POST", "/v1/sandboxes"}, h_create, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}"}, h_get, ROUTE_NONE},
    {{"DELETE", "/v1/sandboxes/{id}"}, h_destroy, ROUTE_JSON},
    {{"POST", "/v1/sandboxes/{id}/extend"}, h_extend, ROUTE_JSON},
    {{"POST", "/v1/sandboxes/{id}/egress"}, h_egress, ROUTE_JSON},
    {{"POST", "/v1/sandboxes/{id}/exec"}, h_exec, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}/execs/{exec_id}"}, h_exec_get, ROUTE_NONE},
    {{"GET", "/v1/sandboxes/{id}/processes"}, h_proc_list, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/processes"}, h_proc_start, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}/processes/{proc_id}"}, h_proc_get, ROUTE_NONE},
    {{"GET", "/v1/sandboxes/{id}/processes/{proc_id}/output"}, h_proc_output, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/processes/{proc_id}/stdin"}, h_proc_stdin, ROUTE_JSON},
    {{"POST", "/v1/sandboxes/{id}/processes/{proc_id}/signal"}, h_proc_signal, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}/files"}, h_file_list, ROUTE_NONE},
    {{"GET", "/v1/sandboxes/{id}/files/{path}"}, h_file_get, ROUTE_NONE},
    {{"PUT", "/v1/sandboxes/{id}/files/{path}"}, h_file_put, ROUTE_UPLOAD},
    {{"DELETE", "/v1/sandboxes/{id}/files/{path}"}, h_file_delete, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/commit"}, h_commit, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}/diff"}, h_diff, ROUTE_NONE},
    {{"GET", "/v1/sandboxes/{id}/archive"}, h_archive_get, ROUTE_NONE},
    {{"PUT", "/v1/sandboxes/{id}/archive"}, h_archive_put, ROUTE_UPLOAD},
    {{"POST", "/v1/sandboxes/{id}/code"}, h_code, ROUTE_JSON},
    {{"DELETE", "/v1/sandboxes/{id}/code"}, h_code_end, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/code/restart"}, h_code_restart, ROUTE_NONE},
    {{"GET", "/v1/sandboxes/{id}/snapshots"}, h_snapshot_list, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/snapshots"}, h_snapshot_create, ROUTE_JSON},
    {{"GET", "/v1/sandboxes/{id}/snapshots/{snapshot_id}"}, h_snapshot_get, ROUTE_NONE},
    {{"DELETE", "/v1/sandboxes/{id}/snapshots/{snapshot_id}"}, h_snapshot_delete, ROUTE_NONE},
    {{"POST", "/v1/sandboxes/{id}/restore"}, h_restore, ROUTE_JSON},
    /* GET /mcp is no row: the router's 405 (Allow: POST, DELETE) is the answer the MCP
     * specification asks of a server that offers no standalone stream. */
    {{"POST", "/mcp"}, h_mcp_post, ROUTE_RPC},
    {{"DELETE", "/mcp"}, h_mcp_delete, ROUTE_NONE},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static const struct route_row *row_at(size_t i)
{
    return &routes[i].row;
}

/* ---- entry points ---- */

bool routable(const char *url, const char *method, bool *takes_body)
{
    struct route_match m;
    *takes_body = false;
    if (route_match(row_at, NROUTES, url, method, &m) != ROUTE_FOUND)
        return false;
    *takes_body = routes[m.row].body != ROUTE_NONE;
    return true;
}

/* Runs the route's handler, its JSON body parsed first (too large: 413, not JSON: 400). */
static enum MHD_Result run(struct server *s, struct MHD_Connection *c, struct request *rq,
                           const struct route_match *m)
{
    struct route_call k = {.s = s, .c = c, .rq = rq, .id = m->id, .sub = m->sub,
                           .path = m->path};
    const struct route *r = &routes[m->row];
    if (r->body == ROUTE_JSON) {
        clr_error err = CLR_ERROR_INIT;
        if (rq->too_big)
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit",
                              "request body larger than 1 MiB");
        if (parse_body(rq, &k.body, &err) < 0)
            return send_clr_error(c, &err);
    }
    enum MHD_Result ret = r->handler(&k);
    json_decref(k.body);
    return ret;
}

enum MHD_Result route(struct server *s, struct MHD_Connection *c, const char *url,
                      const char *method, struct request *rq)
{
    struct route_match m;
    enum MHD_Result refused;
    switch (route_match(row_at, NROUTES, url, method, &m)) {
    case ROUTE_NOT_V1:
        return send_error(c, 404, "not_found", "no such endpoint; the API lives under /v1");
    case ROUTE_BAD_ID:
        return send_error(c, 400, "invalid", "not a sandbox id (expected sb- and 16 hex digits)");
    case ROUTE_NO_PATH:
        return send_error(c, 404, "not_found", "no such endpoint; see docs/openapi.yaml");
    case ROUTE_NO_METHOD:
        /* A file path names a sandbox before it names a route: its tenancy is checked first,
         * and its 405 names the methods in the message. */
        if (m.rest && tenant_refused(s, c, rq, m.id, &refused))
            return refused;
        if (m.rest)
            return send_error(c, 405, "invalid", "files take GET, PUT or DELETE");
        return send_method_not_allowed(c, method, m.allowed);
    case ROUTE_FOUND:
    default: break;
    }
    if (m.id[0] && tenant_refused(s, c, rq, m.id, &refused))
        return refused;
    return run(s, c, rq, &m);
}

void routes_print(FILE *f)
{
    static const char *const body[] = {"none", "json", "upload", "json"};
    for (size_t r = 0; r < NROUTES; r++)
        fprintf(f, "%s %s %s\n", routes[r].row.method, routes[r].row.pattern,
                body[routes[r].body]);
}
