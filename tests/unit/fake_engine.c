/* The scripted engine of fake_engine.h. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "proto.h"


static const char *reason(int status)
{
    switch (status) {
    case 101: return "UPGRADED";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 404: return "Not Found";
    case 409: return "Conflict";
    default: return "Other";
    }
}

static void reply(int fd, int status, const char *body, size_t len)
{
    char head[256];
    size_t n = len ? len : body ? strlen(body) : 0;
    int h;
    if (status == 101)
        h = snprintf(head, sizeof(head),
                     "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n");
    else if (status == 204 || status == 304)
        h = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n\r\n", status, reason(status));
    else
        h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu"
                     "\r\n\r\n",
                     status, reason(status), n);
    if (send(fd, head, (size_t)h, MSG_NOSIGNAL) != h)
        return;
    if (n && status != 204 && status != 304 && status != 101 && send(fd, body, n, MSG_NOSIGNAL) != (ssize_t)n)
        return;
}

/* Reads one request (headers and a Content-Length body) into buf; 0 at end of stream. */
static ssize_t read_request(int fd, char *buf, size_t cap, char **body_out)
{
    size_t have = 0;
    char *end = NULL;
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        ssize_t r = read(fd, buf + have, cap - 1 - have);
        if (r <= 0)
            return 0;
        have += (size_t)r;
        buf[have] = '\0';
    }
    size_t head = (size_t)(end + 4 - buf);
    size_t len = 0;
    const char *cl = strcasestr(buf, "Content-Length:");
    if (cl && cl < end)
        len = strtoul(cl + 15, NULL, 10);
    while (have < head + len) {
        ssize_t r = read(fd, buf + have, cap - 1 - have);
        if (r <= 0)
            return 0;
        have += (size_t)r;
        buf[have] = '\0';
    }
    *body_out = buf + head;
    return (ssize_t)have;
}

/* Appends one request to the log, growing it; false when out of memory. */
static bool log_request(struct fake *f, const char *method, const char *target, const char *body)
{
    if (f->n_requests == f->cap_requests) {
        size_t cap = f->cap_requests ? 2 * f->cap_requests : FAKE_MAX_REQUESTS;
        char **r = realloc(f->requests, cap * sizeof(*r));
        if (r)
            f->requests = r;
        char **b = r ? realloc(f->bodies, cap * sizeof(*b)) : NULL;
        if (!b)
            return false;
        f->bodies = b;
        f->cap_requests = cap;
    }
    char *line = NULL;
    if (asprintf(&line, "%s %s", method, target) < 0)
        return false;
    char *copy = strdup(body ? body : "");
    if (!copy) {
        free(line);
        return false;
    }
    f->requests[f->n_requests] = line;
    f->bodies[f->n_requests] = copy;
    f->n_requests++;
    return true;
}

/* Reads len bytes; false at the end of the stream. */
static bool read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t r = read(fd, buf, len);
        if (r <= 0)
            return false;
        buf += r;
        len -= (size_t)r;
    }
    return true;
}

/* The agent's end of an exec stream after its scripted start (fake_answer_bytes): the host's
 * frames are read as frames, not as requests (the bridge's EXEC frame alone is past the request
 * buffer: read as requests, the stream was closed under the command), and a KILL is answered as
 * the agent answers it, the command's RESULT (killed by signal 9), then the end of the stream.
 * Without it a killed command waited out its grace period and the sandbox's backstop kill. */
static void agent_stream(int fd)
{
    uint8_t head[CLR_PROTO_HEADER_SIZE], skip[4096];
    for (;;) {
        if (!read_full(fd, head, sizeof(head)))
            return;
        if (head[8] == CLR_FRAME_KILL)
            break;
        for (uint32_t left = clr_be32_read(head); left > 0;) {
            size_t n = left < sizeof(skip) ? left : sizeof(skip);
            if (!read_full(fd, skip, n))
                return;
            left -= (uint32_t)n;
        }
    }
    struct clr_tlv_builder *res = malloc(sizeof(*res));
    assert_non_null(res);
    clr_tlv_init(res);
    clr_tlv_put_u64(res, CLR_RES_STATUS, CLR_WIRE_SIGNALED);
    clr_tlv_put_u64(res, CLR_RES_SIGNAL, 9);
    /* On the engine's stdout (stream 1), the frame on the exec's channel 1. */
    size_t n = 8 + CLR_PROTO_HEADER_SIZE + res->len;
    uint8_t *b = malloc(n);
    assert_non_null(b);
    memset(b, 0, 8);
    b[0] = 1;
    clr_be32_write(b + 4, (uint32_t)(CLR_PROTO_HEADER_SIZE + res->len));
    clr_frame_header(b + 8, 1, CLR_FRAME_RESULT, (uint32_t)res->len);
    memcpy(b + 8 + CLR_PROTO_HEADER_SIZE, res->buf, res->len);
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    (void)w; /* the host may have hung up first: nothing to tell it then */
    free(b);
    free(res);
}

/* A connection and its thread. The thread closes fd (-1 then) and sets done under f->lock, so
 * the teardown never shuts a descriptor number that was closed and given to someone else. */
struct fake_conn {
    struct fake *f;
    int fd;
    bool done;
    pthread_t thread;
    struct fake_conn *next;
};

static void *serve_conn(void *arg)
{
    struct fake_conn *c = arg;
    struct fake *f = c->f;
    char buf[8192];
    for (;;) {
        memset(buf, 0, sizeof(buf));
        char *body = NULL;
        if (read_request(c->fd, buf, sizeof(buf), &body) <= 0)
            break;
        char method[16] = "", target[400] = "";
        if (sscanf(buf, "%15s %399s", method, target) != 2)
            break;
        pthread_mutex_lock(&f->lock);
        struct fake_answer a = {.status = 500, .body = "{\"message\":\"not scripted\"}"};
        if (log_request(f, method, target, body)) {
            const char *req = f->requests[f->n_requests - 1];
            for (size_t i = 0; i < f->n_answers; i++)
                if (f->answers[i].left != 0 &&
                    strncmp(req, f->answers[i].match, strlen(f->answers[i].match)) == 0) {
                    if (f->answers[i].left > 0)
                        f->answers[i].left--;
                    a = f->answers[i];
                    break;
                }
        }
        pthread_mutex_unlock(&f->lock);
        reply(c->fd, a.status, a.body, a.len);
        if (a.status == 200 && a.len > 0) {
            agent_stream(c->fd);
            break;
        }
        if (a.status == 101) {
            /* The stream: echo what comes, as the engine would carry a container's output. */
            char b[256];
            ssize_t r;
            while ((r = read(c->fd, b, sizeof(b))) > 0)
                if (send(c->fd, b, (size_t)r, MSG_NOSIGNAL) != r)
                    break;
            break;
        }
    }
    pthread_mutex_lock(&f->lock);
    close(c->fd);
    c->fd = -1;
    c->done = true;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* Joins and frees the connections whose threads ended (all of them when every one was shut). */
static void reap_conns(struct fake *f, bool all)
{
    pthread_mutex_lock(&f->lock);
    struct fake_conn *ended = NULL;
    for (struct fake_conn **p = &f->conns; *p;) {
        struct fake_conn *c = *p;
        if (all || c->done) {
            *p = c->next;
            c->next = ended;
            ended = c;
        } else {
            p = &c->next;
        }
    }
    pthread_mutex_unlock(&f->lock);
    /* Outside the lock: a thread still running takes it to say it is done. */
    while (ended) {
        struct fake_conn *c = ended;
        ended = c->next;
        assert_int_equal(pthread_join(c->thread, NULL), 0);
        free(c);
    }
}

/* Connection threads are joined, never detached: one still serving when its test ends would
 * otherwise log into (and answer from) the request log and scripts the teardown frees. */
static void *accept_loop(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return NULL;
        reap_conns(f, false);
        struct fake_conn *c = calloc(1, sizeof(*c));
        assert_non_null(c);
        c->f = f;
        c->fd = fd;
        pthread_mutex_lock(&f->lock);
        assert_int_equal(pthread_create(&c->thread, NULL, serve_conn, c), 0);
        c->next = f->conns;
        f->conns = c;
        pthread_mutex_unlock(&f->lock);
    }
}

/* Fails the test when the script is full, the lock let go first: a failure jumps out of the
 * test, and a lock kept would hang its teardown. */
static void answers_room_locked(struct fake *f)
{
    size_t max = sizeof(f->answers) / sizeof(f->answers[0]);
    if (f->n_answers < max)
        return;
    pthread_mutex_unlock(&f->lock);
    fail_msg("the fake engine holds at most %zu scripted answers", max);
}

void fake_answer_n(struct fake *f, const char *match, int status, const char *body, int n)
{
    pthread_mutex_lock(&f->lock);
    answers_room_locked(f);
    /* Newest first: a later script line overrides an earlier one for the same request. */
    memmove(&f->answers[1], &f->answers[0], f->n_answers * sizeof(f->answers[0]));
    f->answers[0] = (struct fake_answer){match, status, body, n, 0};
    f->n_answers++;
    pthread_mutex_unlock(&f->lock);
}

void fake_answer(struct fake *f, const char *match, int status, const char *body)
{
    fake_answer_n(f, match, status, body, -1);
}

void fake_answer_bytes(struct fake *f, const char *match, int status, const void *body,
                       size_t len)
{
    pthread_mutex_lock(&f->lock);
    answers_room_locked(f);
    memmove(&f->answers[1], &f->answers[0], f->n_answers * sizeof(f->answers[0]));
    f->answers[0] = (struct fake_answer){match, status, body, -1, len};
    f->n_answers++;
    pthread_mutex_unlock(&f->lock);
}

const char *fake_last_request(struct fake *f)
{
    pthread_mutex_lock(&f->lock);
    const char *r = f->n_requests ? f->requests[f->n_requests - 1] : "";
    pthread_mutex_unlock(&f->lock);
    return r;
}

size_t fake_count(struct fake *f, const char *prefix)
{
    size_t n = 0;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_requests; i++)
        n += strncmp(f->requests[i], prefix, strlen(prefix)) == 0;
    pthread_mutex_unlock(&f->lock);
    return n;
}

int fake_setup(void **state)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    snprintf(f->dir, sizeof(f->dir), "/tmp/clr-engine-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/docker.sock", f->dir);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->sock);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    fake_answer(f, "GET /version", 200, "{\"ApiVersion\":\"1.41\"}");
    assert_int_equal(pthread_create(&f->thread, NULL, accept_loop, f), 0);
    *state = f;
    return 0;
}

int fake_teardown(void **state)
{
    struct fake *f = *state;
    /* No new connection (the accept loop joined before its descriptor is closed, so it never
     * accepts on a number reused), then every open one shut: its thread's read or send ends,
     * and it is joined before the log and the scripts it uses are freed. */
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    pthread_mutex_lock(&f->lock);
    for (struct fake_conn *c = f->conns; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&f->lock);
    reap_conns(f, true);
    pthread_mutex_destroy(&f->lock);
    unlink(f->sock);
    rmdir(f->dir);
    for (size_t i = 0; i < f->n_requests; i++) {
        free(f->requests[i]);
        free(f->bodies[i]);
    }
    free(f->requests);
    free(f->bodies);
    free(f);
    return 0;
}

clr_engine *fake_open(struct fake *f)
{
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = f->sock;
    o.request_timeout_ms = 10000;
    clr_engine *eng = NULL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_engine_open(&eng, &o, &err);
    if (rc < 0)
        fail_msg("open: %s", err.message);
    return eng;
}

json_t *fake_body_of(struct fake *f, const char *request)
{
    json_t *body = NULL;
    pthread_mutex_lock(&f->lock);
    for (size_t i = f->n_requests; i-- > 0;)
        if (strcmp(f->requests[i], request) == 0) {
            body = json_loads(f->bodies[i], 0, NULL);
            break;
        }
    pthread_mutex_unlock(&f->lock);
    return body;
}
