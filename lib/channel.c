/* The live channel to a sandbox's agent: one attach connection, many commands.
 *
 * clr_channel_open() attaches to the container's stdio and says HELLO; the agent (PID 1)
 * answers with CHANNELS, which proves it serves the channel (a sandbox whose agent does not is
 * left to `docker exec`). A reader thread demultiplexes the engine's stream and the agent's
 * frames and queues each frame on the slot of its channel; the thread that waits for a command
 * takes its frames from there (exec.c), so a slow consumer of one command never holds up the
 * reader or any other command. Frames for channels nobody waits for (results replayed after a
 * daemon restart) go to the hooks.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

/* An agent answers HELLO after its replays: the open waits while frames keep coming, until
 * HELLO_QUIET_MS pass without one, or HELLO_MAX_MS in all (the daemon stores and audits each
 * replayed result as it comes, which a loaded host makes slow). */
#define HELLO_QUIET_MS 3000
#define HELLO_MAX_MS 30000
#define CLR_CHANNEL_REPLAY_CAP (1u << 20) /* output kept of a replayed command, per stream */
/* Commands nobody waits for, collected at once: twice what an agent runs at once
 * (agent/live.c); an agent that sends more is not ours, and its channel is closed. */
#define UNCLAIMED_MAX 1024
/* Their output kept, all of them together: past it, what comes is dropped (each result still
 * completes its record). Both bounds keep a hostile sandbox from filling the daemon's memory. */
#define UNCLAIMED_BYTES_MAX (64u << 20)
#define AGENT_LOG_MAX 2048

struct qframe {
    struct qframe *next;
    uint8_t type;
    uint32_t len;
    uint8_t data[];
};

struct clr_channel_slot {
    uint32_t id;
    pthread_cond_t cond;
    struct qframe *head, *tail;
    /* Output queued for the command's reader, and its bound (clr_channel_slot_bound; 0: none):
     * past it, output is dropped (its consumer would have dropped it anyway) and marked. */
    uint64_t queued, queue_max;
    bool dropped_out, dropped_err;
    struct clr_channel_slot *next;
};

/* Frames of a channel nobody waits for: collected until its result. */
struct unclaimed {
    uint32_t id;
    clr_exec_result res;
    uint64_t bytes; /* of its output kept, counted in the channel's unclaimed_bytes */
    bool out_dropped, err_dropped; /* the bounds dropped some: its result says truncated */
    /* Its result frame, when the hook held it for a claim (on_result 1): kept whole, for the
     * slot that claims the id (clr_channel_slot_claim) or until it is let go
     * (clr_channel_release). */
    uint8_t *result;
    uint32_t result_len;
    struct unclaimed *next;
};

struct clr_channel {
    /* The connection: the engine's attach stream, or (clr_channel_open_fd, for tests) a plain
     * socket carrying the same bytes; fd_lock keeps a frame's bytes together on it. */
    clr_engine_stream *stream;
    int fd;
    pthread_mutex_t fd_lock;
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    pthread_t reader;
    bool reader_started;
    atomic_int refs;
    atomic_bool closing;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t hello_cond;
    bool hello_answered;
    uint64_t frames_in; /* from the agent: progress while its HELLO answer is awaited */
    bool dead;
    atomic_bool dead_flag; /* dead, for clr_channel_alive without the lock (held by hooks) */
    bool protocol_error;
    char why[256];
    struct clr_channel_slot *slots;
    struct unclaimed *unclaimed;
    size_t nunclaimed;
    uint64_t unclaimed_bytes; /* their output, together */
    clr_channel_hooks hooks;

    /* reader thread only */
    clr_demux demux;
    struct clr_frame_reader frames;
    uint8_t *frame_buf;
    char agent_log[AGENT_LOG_MAX];
    size_t agent_log_len;
};

/* ---- the connection ---- */

static bool has_connection(const clr_channel *ch)
{
    return ch->stream || ch->fd >= 0;
}

/* As clr_engine_stream_read: the count read, 0 at end of stream, -1 on error, -2 on timeout. */
static ssize_t connection_read(clr_channel *ch, uint8_t *buf, size_t len, int timeout_ms,
                               clr_error *err)
{
    if (ch->stream)
        return clr_engine_stream_read(ch->stream, buf, len, timeout_ms, err);
    struct pollfd p = {.fd = ch->fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0 || (r < 0 && errno == EINTR))
        return -2;
    ssize_t n = r < 0 ? -1 : read(ch->fd, buf, len);
    if (n < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno, "reading the channel: %s",
                             strerror(errno));
    return n;
}

static int connection_write(clr_channel *ch, const uint8_t *data, size_t len, clr_error *err)
{
    if (ch->stream)
        return clr_engine_stream_write(ch->stream, data, len, err);
    pthread_mutex_lock(&ch->fd_lock);
    int rc = 0;
    while (len > 0) {
        ssize_t n = send(ch->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = clr_error_set(err, CLR_E_UNAVAILABLE, errno, "writing the channel: %s",
                               strerror(errno));
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    pthread_mutex_unlock(&ch->fd_lock);
    return rc;
}

static void connection_shutdown(clr_channel *ch, bool write_only)
{
    if (ch->stream)
        clr_engine_stream_shutdown(ch->stream, write_only);
    else if (ch->fd >= 0)
        shutdown(ch->fd, write_only ? SHUT_WR : SHUT_RDWR);
}

/* ---- frames from the agent ---- */

static void channel_dead_locked(clr_channel *ch, bool protocol, const char *why)
{
    if (ch->dead)
        return;
    ch->dead = true;
    atomic_store(&ch->dead_flag, true);
    ch->protocol_error = protocol;
    snprintf(ch->why, sizeof(ch->why), "%s", why);
    for (struct clr_channel_slot *s = ch->slots; s; s = s->next)
        pthread_cond_broadcast(&s->cond);
    pthread_cond_broadcast(&ch->hello_cond);
}

static struct clr_channel_slot *slot_find_locked(clr_channel *ch, uint32_t id)
{
    for (struct clr_channel_slot *s = ch->slots; s; s = s->next) {
        if (s->id == id)
            return s;
    }
    return NULL;
}

/* What a queued frame costs beside its payload (its header and the allocator's): counted in the
 * queue's bound, so that a flood of empty or one-byte frames is held to it as its bytes are. */
#define QFRAME_COST (sizeof(struct qframe) + 16)

/* A frame queued for the slot's reader, who is woken. -1: out of memory. */
static int slot_queue_locked(struct clr_channel_slot *s, uint8_t type, const uint8_t *data,
                             uint32_t len)
{
    struct qframe *q = malloc(sizeof(*q) + len);
    if (!q)
        return -1;
    q->next = NULL;
    q->type = type;
    q->len = len;
    if (len)
        memcpy(q->data, data, len);
    if (type != CLR_FRAME_RESULT)
        s->queued += len + QFRAME_COST;
    if (s->tail)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    pthread_cond_signal(&s->cond);
    return 0;
}

/* Appends to an unclaimed command's output what the bounds allow. */
static void unclaimed_append_locked(clr_channel *ch, struct unclaimed *u, clr_buffer *b,
                                    bool *dropped, const struct clr_frame *f)
{
    uint64_t room = ch->unclaimed_bytes < UNCLAIMED_BYTES_MAX
                        ? UNCLAIMED_BYTES_MAX - ch->unclaimed_bytes
                        : 0;
    uint64_t cap = b->len + room < CLR_CHANNEL_REPLAY_CAP ? b->len + room : CLR_CHANNEL_REPLAY_CAP;
    ssize_t kept = clr_buffer_append_capped(b, f->payload, f->length, cap);
    if (kept > 0) {
        ch->unclaimed_bytes += (uint64_t)kept;
        u->bytes += (uint64_t)kept;
    }
    if (kept < (ssize_t)f->length)
        *dropped = true;
}

static void unclaimed_free_locked(clr_channel *ch, struct unclaimed *u)
{
    ch->unclaimed_bytes -= u->bytes;
    ch->nunclaimed--;
    clr_exec_result_clear(&u->res);
    free(u->result);
    free(u);
}

/* A replayed channel nobody waits for: collect it, hand the result to the hook. -1: the agent
 * sent frames of more such commands than it may have. */
static int unclaimed_frame_locked(clr_channel *ch, const struct clr_frame *f)
{
    struct unclaimed *u = ch->unclaimed;
    while (u && u->id != f->channel)
        u = u->next;
    if (!u) {
        if (!ch->hooks.on_result)
            return 0;
        if (ch->nunclaimed == UNCLAIMED_MAX) {
            channel_dead_locked(ch, true,
                                "the agent sent frames of more commands than it may run at once");
            return -1;
        }
        u = calloc(1, sizeof(*u));
        if (!u)
            return 0;
        u->id = f->channel;
        u->next = ch->unclaimed;
        ch->unclaimed = u;
        ch->nunclaimed++;
    }
    if (u->result)
        return 0; /* after its result: nothing more is the command's (its claimer says so) */
    if (f->type == CLR_FRAME_STDOUT)
        unclaimed_append_locked(ch, u, &u->res.out, &u->out_dropped, f);
    else if (f->type == CLR_FRAME_STDERR)
        unclaimed_append_locked(ch, u, &u->res.err, &u->err_dropped, f);
    if (f->type != CLR_FRAME_RESULT)
        return 0;
    clr_error err = CLR_ERROR_INIT;
    bool decoded = clr_exec_result_decode(&u->res, f->payload, f->length, &err) == 0;
    u->res.stdout_truncated |= u->out_dropped;
    u->res.stderr_truncated |= u->err_dropped;
    int held = decoded && ch->hooks.on_result
                   ? ch->hooks.on_result(ch->hooks.ctx, ch, u->id, &u->res)
                   : -1;
    if (held == 1 && (u->result = malloc(f->length ? f->length : 1))) {
        /* Held for a claim: the command's claimer decodes and acknowledges it. Not counted
         * against the output's bound: the hook holds only the ids it is about to take over,
         * one result (a frame) each, and nothing of an id comes after its result. */
        memcpy(u->result, f->payload, f->length);
        u->result_len = f->length;
        return 0;
    }
    if (held == 0)
        clr_channel_ack(ch, u->id);
    struct unclaimed **pp = &ch->unclaimed;
    while (*pp != u)
        pp = &(*pp)->next;
    *pp = u->next;
    unclaimed_free_locked(ch, u);
    return 0;
}

static int on_agent_frame(void *p, const struct clr_frame *f)
{
    clr_channel *ch = p;
    if (f->type >= CLR_FRAME_NET_OPEN && f->type <= CLR_FRAME_NET_CLOSE) {
        if (f->type == CLR_FRAME_NET_ACCEPT || f->type == CLR_FRAME_NET_DENY)
            return -1; /* only the host sends these */
        pthread_mutex_lock(&ch->lock);
        clr_channel_hooks hooks = ch->hooks;
        pthread_mutex_unlock(&ch->lock);
        if (hooks.on_net)
            hooks.on_net(hooks.ctx, ch, f->type, f->channel, f->payload, f->length);
        else if (f->type == CLR_FRAME_NET_OPEN)
            clr_channel_send(ch, f->channel, CLR_FRAME_NET_DENY, "no egress on this channel", 25,
                             NULL);
        return 0;
    }
    pthread_mutex_lock(&ch->lock);
    ch->frames_in++;
    if (f->channel == 0) {
        if (f->type == CLR_FRAME_CHANNELS) {
            ch->hello_answered = true;
            pthread_cond_broadcast(&ch->hello_cond);
            if (ch->hooks.on_channels) {
                size_t n = f->length / 4;
                _cleanup_free_ uint32_t *ids = calloc(n ? n : 1, sizeof(*ids));
                for (size_t i = 0; ids && i < n; i++)
                    ids[i] = (uint32_t)f->payload[4 * i] << 24 |
                             (uint32_t)f->payload[4 * i + 1] << 16 |
                             (uint32_t)f->payload[4 * i + 2] << 8 | f->payload[4 * i + 3];
                if (ids)
                    ch->hooks.on_channels(ch->hooks.ctx, ch, ids, n);
            }
        }
        pthread_mutex_unlock(&ch->lock);
        return 0;
    }
    if (f->type != CLR_FRAME_STDOUT && f->type != CLR_FRAME_STDERR &&
        f->type != CLR_FRAME_RESULT) {
        pthread_mutex_unlock(&ch->lock);
        return -1;
    }
    struct clr_channel_slot *s = slot_find_locked(ch, f->channel);
    if (!s) {
        int rc = unclaimed_frame_locked(ch, f);
        pthread_mutex_unlock(&ch->lock);
        return rc;
    }
    if (f->type != CLR_FRAME_RESULT && s->queue_max &&
        s->queued + f->length + QFRAME_COST > s->queue_max) {
        /* A reader that falls behind (or an agent that floods): the daemon's memory is not
         * the sandbox's to fill. */
        *(f->type == CLR_FRAME_STDOUT ? &s->dropped_out : &s->dropped_err) = true;
        pthread_mutex_unlock(&ch->lock);
        return 0;
    }
    if (slot_queue_locked(s, f->type, f->payload, f->length) < 0) {
        channel_dead_locked(ch, false, "out of memory");
        pthread_mutex_unlock(&ch->lock);
        return -1;
    }
    pthread_mutex_unlock(&ch->lock);
    return 0;
}

static int on_engine_stream(void *p, int stream, const uint8_t *data, size_t len)
{
    clr_channel *ch = p;
    if (stream == 1)
        return clr_frame_reader_feed(&ch->frames, data, len, on_agent_frame, ch) ? -1 : 0;
    /* PID 1's own diagnostics: logged a line at a time. */
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n' || ch->agent_log_len == AGENT_LOG_MAX - 1) {
            ch->agent_log[ch->agent_log_len] = '\0';
            clr_log(CLR_LOG_WARN, "agent.stderr", "id", ch->sandbox_id, "text", ch->agent_log,
                    NULL);
            ch->agent_log_len = 0;
            if (data[i] == '\n')
                continue;
        }
        ch->agent_log[ch->agent_log_len++] = (char)data[i];
    }
    return 0;
}

static void *reader_main(void *p)
{
    clr_channel *ch = p;
    _cleanup_free_ uint8_t *buf = malloc(65536);
    const char *why = "out of memory";
    while (buf) {
        clr_error err = CLR_ERROR_INIT;
        ssize_t n = connection_read(ch, buf, 65536, 1000, &err);
        if (n == -2) {
            if (atomic_load(&ch->closing))
                break; /* the engine did not end the stream after our half-close */
            continue;
        }
        if (n <= 0) {
            why = n == 0 ? "the sandbox's attach stream ended" : "reading the attach stream failed";
            break;
        }
        if (clr_channel_feed(ch, buf, (size_t)n) < 0)
            break; /* the agent broke the protocol: the channel is dead already */
    }
    if (atomic_load(&ch->closing))
        why = "the channel was closed";
    pthread_mutex_lock(&ch->lock);
    channel_dead_locked(ch, false, why);
    pthread_mutex_unlock(&ch->lock);
    return NULL;
}

int clr_channel_send(clr_channel *ch, uint32_t id, uint8_t type, const void *data, size_t len,
                     clr_error *err)
{
    if (!has_connection(ch))
        return clr_error_set(err, CLR_E_UNAVAILABLE, ENOTCONN, "the channel has no stream");
    if (len > CLR_PROTO_MAX_PAYLOAD)
        return clr_error_set(err, CLR_E_INTERNAL, E2BIG, "frame too large");
    /* Header and payload in one write: the stream's write lock keeps frames whole. */
    uint8_t stackbuf[CLR_PROTO_HEADER_SIZE + 4096];
    _cleanup_free_ uint8_t *heap = len <= 4096 ? NULL : malloc(CLR_PROTO_HEADER_SIZE + len);
    uint8_t *buf = len <= 4096 ? stackbuf : heap;
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_frame_header(buf, id, type, (uint32_t)len);
    if (len)
        memcpy(buf + CLR_PROTO_HEADER_SIZE, data, len);
    return connection_write(ch, buf, CLR_PROTO_HEADER_SIZE + len, err);
}

void clr_channel_ack(clr_channel *ch, uint32_t id)
{
    clr_error err = CLR_ERROR_INIT;
    clr_channel_send(ch, id, CLR_FRAME_ACK, NULL, 0, &err);
}

static void channel_free(clr_channel *ch)
{
    clr_engine_stream_free(ch->stream);
    if (ch->fd >= 0)
        close(ch->fd);
    pthread_mutex_destroy(&ch->fd_lock);
    while (ch->unclaimed) {
        struct unclaimed *u = ch->unclaimed;
        ch->unclaimed = u->next;
        unclaimed_free_locked(ch, u);
    }
    free(ch->frame_buf);
    pthread_mutex_destroy(&ch->lock);
    pthread_cond_destroy(&ch->hello_cond);
    free(ch);
}

/* A channel with no stream yet: one reference, the reader's parsing state. */
static clr_channel *channel_new(const clr_channel_hooks *hooks, const char *sandbox_id)
{
    clr_channel *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    ch->frame_buf = malloc(CLR_PROTO_MAX_PAYLOAD);
    ch->fd = -1;
    pthread_mutex_init(&ch->fd_lock, NULL);
    pthread_mutex_init(&ch->lock, NULL);
    pthread_cond_init(&ch->hello_cond, NULL);
    atomic_init(&ch->refs, 1);
    atomic_init(&ch->dead_flag, false);
    snprintf(ch->sandbox_id, sizeof(ch->sandbox_id), "%s", sandbox_id);
    if (hooks)
        ch->hooks = *hooks;
    if (!ch->frame_buf) {
        channel_free(ch);
        return NULL;
    }
    clr_demux_init(&ch->demux);
    clr_frame_reader_init(&ch->frames, ch->frame_buf);
    return ch;
}

/* Starts the reader on ch's connection and says HELLO: an agent that serves the channel answers
 * with CHANNELS after its replays (see HELLO_QUIET_MS). On failure ch is closed. */
static int channel_start(clr_channel *ch, clr_error *err)
{
    if (pthread_create(&ch->reader, NULL, reader_main, ch) != 0) {
        channel_free(ch);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot start the channel's reader");
    }
    ch->reader_started = true;
    if (clr_channel_send(ch, 0, CLR_FRAME_HELLO, NULL, 0, err) < 0) {
        clr_channel_close(ch);
        return -1;
    }
    struct timespec start;
    clock_gettime(CLOCK_REALTIME, &start);
    pthread_mutex_lock(&ch->lock);
    uint64_t seen = ch->frames_in;
    for (int waited = 0; !ch->hello_answered && !ch->dead && waited < HELLO_MAX_MS;
         waited += HELLO_QUIET_MS) {
        struct timespec ts = start;
        ts.tv_sec += (waited + HELLO_QUIET_MS) / 1000;
        while (!ch->hello_answered && !ch->dead &&
               pthread_cond_timedwait(&ch->hello_cond, &ch->lock, &ts) != ETIMEDOUT)
            ;
        if (ch->frames_in == seen)
            break; /* quiet for HELLO_QUIET_MS: not an agent that serves the channel */
        seen = ch->frames_in;
    }
    bool ok = ch->hello_answered && !ch->dead;
    pthread_mutex_unlock(&ch->lock);
    if (!ok) {
        clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                      "the agent of sandbox %s does not serve a live channel", ch->sandbox_id);
        clr_channel_close(ch);
        return -1;
    }
    return 0;
}

int clr_channel_open(clr_channel **out, clr_engine *eng, const clr_sandbox *sb,
                     const clr_channel_hooks *hooks, clr_error *err)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    clr_channel *ch = channel_new(hooks, info->id);
    if (!ch)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (clr_engine_container_attach(&ch->stream, eng, info->container_id, err) < 0) {
        channel_free(ch);
        return -1;
    }
    if (channel_start(ch, err) < 0)
        return -1;
    *out = ch;
    return 0;
}

int clr_channel_open_fd(clr_channel **out, int fd, const char *sandbox_id,
                        const clr_channel_hooks *hooks, clr_error *err)
{
    clr_channel *ch = channel_new(hooks, sandbox_id);
    if (!ch) {
        close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    ch->fd = fd;
    if (channel_start(ch, err) < 0)
        return -1;
    *out = ch;
    return 0;
}

void clr_channel_set_hooks(clr_channel *ch, const clr_channel_hooks *hooks)
{
    pthread_mutex_lock(&ch->lock);
    if (hooks)
        ch->hooks = *hooks;
    else
        memset(&ch->hooks, 0, sizeof(ch->hooks));
    pthread_mutex_unlock(&ch->lock);
}

clr_channel *clr_channel_new_detached(const clr_channel_hooks *hooks)
{
    return channel_new(hooks, "sb-detached");
}

int clr_channel_feed(clr_channel *ch, const uint8_t *data, size_t len)
{
    if (clr_demux_feed(&ch->demux, data, len, on_engine_stream, ch) != 0) {
        pthread_mutex_lock(&ch->lock);
        channel_dead_locked(ch, true, "malformed frame from the sandbox's agent");
        pthread_mutex_unlock(&ch->lock);
        return -1;
    }
    return 0;
}

void clr_channel_ref(clr_channel *ch)
{
    atomic_fetch_add(&ch->refs, 1);
}

void clr_channel_unref(clr_channel *ch)
{
    if (ch && atomic_fetch_sub(&ch->refs, 1) == 1)
        channel_free(ch);
}

void clr_channel_close(clr_channel *ch)
{
    if (!ch)
        return;
    if (!atomic_exchange(&ch->closing, true) && ch->reader_started) {
        /* Half-close: the engine hands the agent everything written so far (ACKs included) and
         * then ends the stream, which ends the reader (within a millisecond here). */
        connection_shutdown(ch, true);
        pthread_join(ch->reader, NULL);
        connection_shutdown(ch, false);
    }
    clr_channel_unref(ch);
}

/* Without ch->lock: the reader holds it while a hook stores and audits a replayed result, and
 * callers ask under locks of their own (svc_live_get, under the registry's). */
bool clr_channel_alive(clr_channel *ch)
{
    return !atomic_load(&ch->dead_flag);
}

/* ---- slots: used by exec.c ---- */

uint32_t clr_channel_new_id(void)
{
    /* Random: channels the agent still keeps from before a daemon restart never clash. */
    uint32_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id))
            id = (uint32_t)rand();
    }
    return id;
}

/* An unclaimed command's output so far, moved to the slot that claims its id (as frames of at
 * most a payload each, stdout first), with what the bounds dropped of it, and its result when
 * the hook held it. Out of memory: the channel ends (a command without its result would wait
 * forever). */
static void slot_absorb_locked(clr_channel *ch, struct clr_channel_slot *s)
{
    struct unclaimed **pp = &ch->unclaimed;
    while (*pp && (*pp)->id != s->id)
        pp = &(*pp)->next;
    struct unclaimed *u = *pp;
    if (!u)
        return;
    *pp = u->next;
    int rc = 0;
    s->dropped_out = u->out_dropped;
    s->dropped_err = u->err_dropped;
    const struct {
        uint8_t type;
        const clr_buffer *b;
    } part[] = {{CLR_FRAME_STDOUT, &u->res.out}, {CLR_FRAME_STDERR, &u->res.err}};
    for (size_t i = 0; i < 2; i++) {
        for (size_t off = 0; off < part[i].b->len;) {
            size_t n = part[i].b->len - off;
            if (n > CLR_PROTO_MAX_PAYLOAD)
                n = CLR_PROTO_MAX_PAYLOAD;
            if (rc == 0 && slot_queue_locked(s, part[i].type, part[i].b->data + off,
                                             (uint32_t)n) < 0)
                rc = -1;
            off += n;
        }
    }
    if (rc == 0 && u->result &&
        slot_queue_locked(s, CLR_FRAME_RESULT, u->result, u->result_len) < 0)
        rc = -1;
    if (rc < 0)
        channel_dead_locked(ch, false, "out of memory");
    unclaimed_free_locked(ch, u);
}

static struct clr_channel_slot *slot_make(clr_channel *ch, uint32_t want, bool claim,
                                          clr_error *err)
{
    struct clr_channel_slot *s = calloc(1, sizeof(*s));
    if (!s) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_lock(&ch->lock);
    if (ch->dead) {
        pthread_mutex_unlock(&ch->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the live channel is closed: %s", ch->why);
        return NULL;
    }
    if (want && slot_find_locked(ch, want)) {
        pthread_mutex_unlock(&ch->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        clr_error_set(err, CLR_E_CONFLICT, 0, "channel id %u is in use", want);
        return NULL;
    }
    s->id = want;
    while (s->id == 0 || slot_find_locked(ch, s->id))
        s->id = clr_channel_new_id();
    s->next = ch->slots;
    ch->slots = s;
    if (claim)
        slot_absorb_locked(ch, s);
    pthread_mutex_unlock(&ch->lock);
    clr_channel_ref(ch);
    return s;
}

struct clr_channel_slot *clr_channel_slot_new(clr_channel *ch, uint32_t want, clr_error *err)
{
    return slot_make(ch, want, false, err);
}

void clr_channel_release(clr_channel *ch, uint32_t id)
{
    pthread_mutex_lock(&ch->lock);
    struct unclaimed **pp = &ch->unclaimed;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    struct unclaimed *u = *pp;
    bool held = u && u->result; /* else still running (or unknown): its result comes to the hook */
    if (held) {
        *pp = u->next;
        unclaimed_free_locked(ch, u);
    }
    pthread_mutex_unlock(&ch->lock);
    if (held)
        clr_channel_ack(ch, id);
}

struct clr_channel_slot *clr_channel_slot_claim(clr_channel *ch, uint32_t id, clr_error *err)
{
    if (id == 0) {
        clr_error_set(err, CLR_E_INVALID, 0, "channel id 0 is the channel's own");
        return NULL;
    }
    return slot_make(ch, id, true, err);
}

uint32_t clr_channel_slot_id(const struct clr_channel_slot *s)
{
    return s->id;
}

void clr_channel_slot_bound(clr_channel *ch, struct clr_channel_slot *s, uint64_t max)
{
    pthread_mutex_lock(&ch->lock);
    s->queue_max = max;
    pthread_mutex_unlock(&ch->lock);
}

void clr_channel_slot_dropped(clr_channel *ch, struct clr_channel_slot *s, bool *out, bool *err)
{
    pthread_mutex_lock(&ch->lock);
    *out = s->dropped_out;
    *err = s->dropped_err;
    pthread_mutex_unlock(&ch->lock);
}

void clr_channel_slot_free(clr_channel *ch, struct clr_channel_slot *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&ch->lock);
    struct clr_channel_slot **pp = &ch->slots;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    pthread_mutex_unlock(&ch->lock);
    while (s->head) {
        struct qframe *q = s->head;
        s->head = q->next;
        free(q);
    }
    pthread_cond_destroy(&s->cond);
    free(s);
    clr_channel_unref(ch);
}

int clr_channel_slot_take(clr_channel *ch, struct clr_channel_slot *s, int timeout_ms,
                          uint8_t *type, uint8_t **payload, uint32_t *len, bool *protocol_error)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&ch->lock);
    while (!s->head && !ch->dead) {
        if (pthread_cond_timedwait(&s->cond, &ch->lock, &ts) == ETIMEDOUT)
            break;
    }
    struct qframe *q = s->head;
    if (q) {
        s->head = q->next;
        if (!s->head)
            s->tail = NULL;
        if (q->type != CLR_FRAME_RESULT)
            s->queued -= q->len + QFRAME_COST;
    }
    bool dead = ch->dead;
    *protocol_error = ch->protocol_error;
    pthread_mutex_unlock(&ch->lock);
    if (!q)
        return dead ? 0 : -2;
    *type = q->type;
    *len = q->len;
    /* The frame is handed over whole: payload points into it; clr_channel_frame_free(). */
    *payload = q->data;
    return 1;
}

void clr_channel_frame_free(uint8_t *payload)
{
    if (payload)
        free(payload - offsetof(struct qframe, data));
}
