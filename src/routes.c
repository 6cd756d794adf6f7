/* The routes of the HTTP API (see routes.h). A handler parses its path parameters and query,
 * calls one service function and sends what it returns: the service owns every decision. */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "clearing/cleanup.h"
#include "http.h"
#include "http_stream.h"
#include "routes.h"

#define DESTROY_WAIT_MS 60000 /* DELETE ?wait=true: longest wait for the removal */
#define MAX_SEGMENTS 6        /* of the longest fixed path, /v1/sandboxes/{id}/processes/{p}/x */
#define SEGMENT_MAX 128       /* bytes of one segment of a fixed path, with its '\0' */

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
};

struct route {
    const char *method;
    /* Segments of the URL: a literal, or a parameter in braces: {id} a sandbox id, checked
     * before the rest of the path (so "../x" is a bad id, not a bad route), {path} (last
     * only) the rest of the URL, any other name one segment. As in docs/openapi.yaml. */
    const char *pattern;
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

/* Splits "/v1/sandboxes/ID/rest" into parts; returns the count, or -1 when a segment is too
 * long or there are more than max (a path longer than every route's is no route, not the
 * route of its first max segments). */
static int split_path(const char *url, char parts[][SEGMENT_MAX], int max)
{
    int n = 0;
    const char *p = url;
    while (*p == '/')
        p++;
    while (*p) {
        if (n == max)
            return -1;
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= SEGMENT_MAX)
            return -1;
        memcpy(parts[n], p, l);
        parts[n][l] = '\0';
        n++;
        if (!e)
            break;
        p = e + 1;
    }
    return n;
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
    int rc = clr_service_create(k->s->svc, k->body, principal_tenant(k->rq), k->rq->actor, &out,
                                &err);
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
        if (clr_service_exec_check(k->s->svc, k->id, k->body, &err) < 0)
            return send_clr_error(k->c, &err);
        return http_stream_start(k->s->svc, k->c, k->id, steal_pointer(&k->body), k->rq->actor,
                                 k->rq->tenant);
    }
    int rc = clr_service_exec(k->s->svc, k->id, k->body, k->rq->actor, NULL, NULL, &out, &err);
    return answer(k, rc, 200, out, &err);
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
    k->rq->download_charged += charged;
    if (rc < 0)
        return send_clr_error(k->c, &err);
    return send_fd(k->c, steal_fd(&fd), size, "application/octet-stream");
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
    k->rq->download_charged += charged;
    if (rc < 0)
        return send_clr_error(k->c, &err);
    off_t size = lseek(fd, 0, SEEK_END);
    return send_fd(k->c, steal_fd(&fd), (uint64_t)size, "application/x-tar");
}

/* ---- the table ---- */

/* Every route of the API, checked against docs/openapi.yaml both ways by tests/integration/
 * test_routes.py. Rows of one path are listed together, in the order a 405's Allow header
 * names their methods. */
static const struct route routes[] = {
    {"GET", "/metrics", h_metrics, ROUTE_NONE},
    {"GET", "/v1/health", h_health, ROUTE_NONE},
    {"POST", "/v1/plans", h_plan, ROUTE_JSON},
    {"GET", "/v1/sandboxes", h_list, ROUTE_NONE},
    {"POST", "/v1/sandboxes", h_create, ROUTE_JSON},
    {"GET", "/v1/sandboxes/{id}", h_get, ROUTE_NONE},
    {"DELETE", "/v1/sandboxes/{id}", h_destroy, ROUTE_JSON},
    {"POST", "/v1/sandboxes/{id}/extend", h_extend, ROUTE_JSON},
    {"POST", "/v1/sandboxes/{id}/egress", h_egress, ROUTE_JSON},
    {"POST", "/v1/sandboxes/{id}/exec", h_exec, ROUTE_JSON},
    {"GET", "/v1/sandboxes/{id}/execs/{exec_id}", h_exec_get, ROUTE_NONE},
    {"GET", "/v1/sandboxes/{id}/processes", h_proc_list, ROUTE_NONE},
    {"POST", "/v1/sandboxes/{id}/processes", h_proc_start, ROUTE_JSON},
    {"GET", "/v1/sandboxes/{id}/processes/{proc_id}", h_proc_get, ROUTE_NONE},
    {"GET", "/v1/sandboxes/{id}/processes/{proc_id}/output", h_proc_output, ROUTE_NONE},
    {"POST", "/v1/sandboxes/{id}/processes/{proc_id}/stdin", h_proc_stdin, ROUTE_JSON},
    {"POST", "/v1/sandboxes/{id}/processes/{proc_id}/signal", h_proc_signal, ROUTE_JSON},
    {"GET", "/v1/sandboxes/{id}/files", h_file_list, ROUTE_NONE},
    {"GET", "/v1/sandboxes/{id}/files/{path}", h_file_get, ROUTE_NONE},
    {"PUT", "/v1/sandboxes/{id}/files/{path}", h_file_put, ROUTE_UPLOAD},
    {"DELETE", "/v1/sandboxes/{id}/files/{path}", h_file_delete, ROUTE_NONE},
    {"POST", "/v1/sandboxes/{id}/commit", h_commit, ROUTE_JSON},
    {"GET", "/v1/sandboxes/{id}/diff", h_diff, ROUTE_NONE},
    {"GET", "/v1/sandboxes/{id}/archive", h_archive_get, ROUTE_NONE},
    {"PUT", "/v1/sandboxes/{id}/archive", h_archive_put, ROUTE_UPLOAD},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* ---- the matcher ---- */

enum route_outcome {
    ROUTE_FOUND,     /* m->route is the row */
    ROUTE_NOT_V1,    /* not /metrics, not under /v1: 404 */
    ROUTE_BAD_ID,    /* an {id} segment that is not a sandbox id: 400 */
    ROUTE_NO_PATH,   /* no row has this path: 404 */
    ROUTE_NO_METHOD, /* rows have this path, none this method: 405 (m->allowed) */
};

struct route_match {
    const struct route *route; /* ROUTE_FOUND: the row */
    bool rest;                 /* the path is a {path} one (any number of segments) */
    char allowed[48];          /* the methods of the path, "GET, POST", in table order */
    char id[SEGMENT_MAX];
    char sub[SEGMENT_MAX];
    const char *path; /* {path}: points into the URL */
};

static bool has_rest(const char *pattern)
{
    size_t l = strlen(pattern);
    return l >= 7 && !strcmp(pattern + l - 7, "/{path}");
}

static bool under_v1(const char *pattern)
{
    return !strncmp(pattern, "/v1/", 4);
}

/* Matches a pattern that ends in {path} against the raw URL: literal bytes, a parameter up to
 * the next '/', then the rest (at least one byte), which may hold any number of segments. 1
 * with m's parameters filled, 0 when it does not match, -1 when it does but the id part is too
 * long to be one. */
static int match_rest(const char *pattern, const char *url, struct route_match *m)
{
    const char *p = pattern, *u = url;
    bool long_id = false;
    while (*p) {
        if (*p != '{') {
            if (*p != *u)
                return 0;
            p++, u++;
            continue;
        }
        bool is_id = !strncmp(p, "{id}", 4);
        p = strchr(p, '}') + 1;
        if (!*p) {
            m->path = u;
            return !*u ? 0 : long_id ? -1 : 1;
        }
        const char *slash = strchr(u, '/');
        if (!slash)
            return 0;
        size_t l = (size_t)(slash - u);
        char *to = is_id ? m->id : m->sub;
        long_id |= is_id && l > CLR_SANDBOX_ID_MAX;
        snprintf(to, SEGMENT_MAX, "%.*s", (int)(l < SEGMENT_MAX ? l : SEGMENT_MAX - 1), u);
        u = slash;
    }
    return 0;
}

/* Whether the segments of a fixed pattern match parts[0..n-1]; fills m's parameters. */
static bool match_fixed(const char *pattern, char parts[][SEGMENT_MAX], int n,
                        struct route_match *m)
{
    char seg[MAX_SEGMENTS][SEGMENT_MAX];
    if (split_path(pattern, seg, MAX_SEGMENTS) != n)
        return false;
    for (int i = 0; i < n; i++) {
        if (seg[i][0] != '{' && strcmp(seg[i], parts[i]) != 0)
            return false;
    }
    for (int i = 0; i < n; i++) {
        if (seg[i][0] != '{')
            continue;
        char *to = strcmp(seg[i], "{id}") ? m->sub : m->id;
        size_t l = strnlen(parts[i], SEGMENT_MAX - 1);
        memcpy(to, parts[i], l);
        to[l] = '\0';
    }
    return true;
}

/* Whether parts match pattern up to its {id} segment and that segment is not a sandbox id:
 * the id is checked before the rest of the path, so "../x" is a bad id, not a bad route. */
static bool bad_id(const char *pattern, char parts[][SEGMENT_MAX], int n)
{
    char seg[MAX_SEGMENTS][SEGMENT_MAX];
    int k = split_path(pattern, seg, MAX_SEGMENTS);
    for (int i = 0; i < k && i < n; i++) {
        if (!strcmp(seg[i], "{id}"))
            return !clr_sandbox_id_valid(parts[i]);
        if (seg[i][0] != '{' && strcmp(seg[i], parts[i]) != 0)
            return false;
    }
    return false;
}

/* A row whose path matched: its method joins the Allow list, and it is the route if the
 * request's method is its. */
static void matched(struct route_match *m, const struct route *r, const char *method)
{
    size_t l = strlen(m->allowed);
    snprintf(m->allowed + l, sizeof(m->allowed) - l, "%s%s", l ? ", " : "", r->method);
    if (!strcmp(method, r->method))
        m->route = r;
}

/* The rows of {path} patterns: matched on the raw URL, since a file path may have any number
 * of segments, and before the fixed ones. */
static enum route_outcome match_rest_rows(const char *url, const char *method,
                                          struct route_match *m)
{
    for (size_t r = 0; r < NROUTES; r++) {
        if (!has_rest(routes[r].pattern))
            continue;
        int fr = match_rest(routes[r].pattern, url, m);
        if (fr < 0 || (fr > 0 && !clr_sandbox_id_valid(m->id)))
            return ROUTE_BAD_ID;
        if (fr > 0) {
            m->rest = true;
            matched(m, &routes[r], method);
        }
    }
    return m->allowed[0] ? (m->route ? ROUTE_FOUND : ROUTE_NO_METHOD) : ROUTE_NO_PATH;
}

static enum route_outcome match_url(const char *url, const char *method, struct route_match *m)
{
    memset(m, 0, sizeof(*m));
    enum route_outcome o = match_rest_rows(url, method, m);
    if (o != ROUTE_NO_PATH)
        return o;
    for (size_t r = 0; r < NROUTES; r++) {
        if (!under_v1(routes[r].pattern) && !strcmp(url, routes[r].pattern))
            matched(m, &routes[r], method);
    }
    if (!m->allowed[0]) {
        char parts[MAX_SEGMENTS][SEGMENT_MAX];
        int n = split_path(url, parts, MAX_SEGMENTS);
        if (n < 2 || strcmp(parts[0], "v1") != 0)
            return ROUTE_NOT_V1;
        for (size_t r = 0; r < NROUTES; r++) {
            if (!has_rest(routes[r].pattern) && bad_id(routes[r].pattern, parts, n))
                return ROUTE_BAD_ID;
        }
        for (size_t r = 0; r < NROUTES; r++) {
            if (under_v1(routes[r].pattern) && !has_rest(routes[r].pattern) &&
                match_fixed(routes[r].pattern, parts, n, m))
                matched(m, &routes[r], method);
        }
    }
    if (!m->allowed[0])
        return ROUTE_NO_PATH;
    return m->route ? ROUTE_FOUND : ROUTE_NO_METHOD;
}

/* ---- entry points ---- */

bool routable(const char *url, const char *method, bool *takes_body)
{
    struct route_match m;
    *takes_body = false;
    if (match_url(url, method, &m) != ROUTE_FOUND)
        return false;
    *takes_body = m.route->body != ROUTE_NONE;
    return true;
}

/* Runs the route's handler, its JSON body parsed first (too large: 413, not JSON: 400). */
static enum MHD_Result run(struct server *s, struct MHD_Connection *c, struct request *rq,
                           const struct route_match *m)
{
    struct route_call k = {.s = s, .c = c, .rq = rq, .id = m->id, .sub = m->sub,
                           .path = m->path};
    if (m->route->body == ROUTE_JSON) {
        clr_error err = CLR_ERROR_INIT;
        if (rq->too_big)
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "limit",
                              "request body larger than 1 MiB");
        if (parse_body(rq, &k.body, &err) < 0)
            return send_clr_error(c, &err);
    }
    enum MHD_Result ret = m->route->handler(&k);
    json_decref(k.body);
    return ret;
}

enum MHD_Result route(struct server *s, struct MHD_Connection *c, const char *url,
                      const char *method, struct request *rq)
{
    struct route_match m;
    enum MHD_Result refused;
    switch (match_url(url, method, &m)) {
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
    static const char *const body[] = {"none", "json", "upload"};
    for (size_t r = 0; r < NROUTES; r++)
        fprintf(f, "%s %s %s\n", routes[r].method, routes[r].pattern, body[routes[r].body]);
}
