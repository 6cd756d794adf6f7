/* A body pushed by one thread while a response sends it (see http_pushed.h): shared by the
 * thread that pushes (an exec, an MCP session's calls) and the response that reads it, the last
 * of the two to let go frees it; what waits to be sent is bounded. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_pushed.h"

struct chunk {
    struct chunk *next;
    size_t len, off;
    char bytes[];
};

struct http_pushed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct chunk *head, *tail;
    bool done;
    bool closed; /* the response let go */
    int refs;
    const char *heartbeat;
    const char *overflow; /* the last words of a body whose reader fell too far behind */
    struct chunk *last_words; /* overflow's chunk, made up front; the queue's once queued */
    size_t queued;        /* bytes pushed and not yet sent, with each chunk's own cost */
    int client_fd;      /* the connection's socket, watched for the client's hang-up; -1: none */
    volatile int gone;  /* the response let go, or the body overflowed: what a streamed plan
                         * takes as its cancel */
};

/* A stream silent for HEARTBEAT_S carries its heartbeat: the server ends a connection idle for
 * its timeout (60 s), which a command silent that long would otherwise cost its stream. */
#define HEARTBEAT_S 20

/* What a chunk costs beside its bytes (its struct and its allocation's header), counted in
 * queued: a stream of tiny lines holds about what the bound says, not several times it. */
#define CHUNK_COST (sizeof(struct chunk) + 16)

/* Appends e (p's lock held). */
static void append_locked(struct http_pushed *p, struct chunk *e)
{
    e->next = NULL;
    if (p->tail)
        p->tail->next = e;
    else
        p->head = e;
    p->tail = e;
    p->queued += e->len + CHUNK_COST;
}

/* Copies len bytes into a chunk of their own, allocated before the lock is taken: the reader
 * never waits on a pusher's malloc and memcpy of a line of megabytes. */
static struct chunk *chunk_new(const char *data, size_t len)
{
    if (len > SIZE_MAX - sizeof(struct chunk))
        return NULL;
    struct chunk *e = malloc(sizeof(*e) + (len ? len : 1));
    if (!e)
        return NULL;
    *e = (struct chunk){.len = len};
    memcpy(e->bytes, data, len);
    return e;
}

struct http_pushed *http_pushed_new(const char *heartbeat, const char *overflow)
{
    struct http_pushed *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->refs = 1;
    p->heartbeat = heartbeat;
    p->overflow = overflow;
    p->client_fd = -1;
    if (overflow && !(p->last_words = chunk_new(overflow, strlen(overflow)))) {
        http_pushed_unref(p);
        return NULL;
    }
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
        free(e);
        e = n;
    }
    free(p->last_words);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

/* Queues a copy of len bytes unless the body ended or its reader let go; false when they are
 * lost (out of memory, or the reader fell behind). Bounded: when more than HTTP_PUSHED_MAX would
 * wait, a body with an overflow text gets that text and its end, one without drops only these
 * bytes. */
static bool push(struct http_pushed *p, const char *data, size_t len, bool bounded)
{
    /* A reader that let go (gone is set under the lock with closed, or with done): no copy
     * made to be dropped. A push that misses it is dropped under the lock below. */
    if (__atomic_load_n(&p->gone, __ATOMIC_ACQUIRE))
        return true;
    struct chunk *e = chunk_new(data, len);
    bool ok = true;
    pthread_mutex_lock(&p->lock);
    if (p->closed || p->done) {
        /* Nobody reads it any more (the client went away), or it was ended: dropped. */
    } else if (!e) {
        ok = false;
    } else if (!bounded || p->queued == 0 ||
               (p->queued < HTTP_PUSHED_MAX && len <= HTTP_PUSHED_MAX - p->queued)) {
        /* Only what already waits is held against the bound: a line alone larger than it (an
         * exec's record with its 64 MiB of output) reaches a reader that keeps up. */
        append_locked(p, e);
        e = NULL;
    } else if (!p->overflow) {
        /* A client that reads slower than the pusher pushes would make the daemon hold without
         * end what it has not read. */
        ok = false;
    } else {
        /* What waited is still sent, then the overflow's words, then the body ends; the
         * pusher's work goes on, its later bytes are dropped. */
        append_locked(p, p->last_words);
        p->last_words = NULL;
        p->done = true;
        p->gone = 1;
        ok = false;
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    free(e);
    return ok;
}

bool http_pushed_write(struct http_pushed *p, const char *data, size_t len)
{
    return push(p, data, len, true);
}

bool http_pushed_write_last(struct http_pushed *p, const char *data, size_t len)
{
    return push(p, data, len, false);
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

ssize_t http_pushed_read(struct http_pushed *p, char *buf, size_t max)
{
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
    memcpy(buf, e->bytes + e->off, n);
    e->off += n;
    p->queued -= n;
    if (e->off == e->len) {
        p->queued -= CHUNK_COST;
        p->head = e->next;
        if (!p->head)
            p->tail = NULL;
        free(e);
    }
    pthread_mutex_unlock(&p->lock);
    return (ssize_t)n;
}

static ssize_t pushed_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    return http_pushed_read(cls, buf, max);
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
