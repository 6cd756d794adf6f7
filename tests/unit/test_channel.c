/* The live channel without an engine (lib/channel.c): a socketpair stands for the sandbox's
 * attach stream, and the test is the agent at its other end (it writes the engine's
 * multiplexed stream of agent frames, and reads the raw frames the host sends). Checked: the
 * HELLO/CHANNELS handshake (waited for while replays come), frames routed to the slot of their
 * command and kept in order (within its bound), results replayed to nobody waiting (on_result,
 * then ACK) within their bounds (how many commands, how much output), egress frames without an
 * egress, what an agent may not send, and how a channel ends. Every wait is for a condition with
 * a generous deadline, and no test sleeps. One check is about a quiet period itself (an open
 * waits while replays come): its agent replays for four seconds, each result as soon as the one
 * before is acknowledged, against the three seconds of quiet that end an open. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"
#include "proto.h"

#define WAIT_MS 30000

/* ---- the agent's end ---- */

/* One agent frame as the engine delivers it: on stdout (stream 1), in one multiplexed chunk.
 * False when it could not be written whole (no cmocka assertion: agent threads use it too). */
static bool frame_write(int fd, uint32_t channel, uint8_t type, const void *payload, size_t len)
{
    size_t n = 8 + CLR_PROTO_HEADER_SIZE + len;
    uint8_t *b = malloc(n);
    if (!b)
        return false;
    b[0] = 1;
    b[1] = b[2] = b[3] = 0;
    clr_be32_write(b + 4, (uint32_t)(CLR_PROTO_HEADER_SIZE + len));
    clr_frame_header(b + 8, channel, type, (uint32_t)len);
    if (len)
        memcpy(b + 8 + CLR_PROTO_HEADER_SIZE, payload, len);
    bool ok = write(fd, b, n) == (ssize_t)n;
    free(b);
    return ok;
}

static void agent_send(int fd, uint32_t channel, uint8_t type, const void *payload, size_t len)
{
    assert_true(frame_write(fd, channel, type, payload, len));
}

/* RESULT: exited 0. */
static bool exited_write(int fd, uint32_t id)
{
    struct clr_tlv_builder *res = malloc(sizeof(*res));
    if (!res)
        return false;
    clr_tlv_init(res);
    clr_tlv_put_u64(res, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_tlv_put_u64(res, CLR_RES_EXIT_CODE, 0);
    bool ok = frame_write(fd, id, CLR_FRAME_RESULT, res->buf, res->len);
    free(res);
    return ok;
}

static void send_exited(int fd, uint32_t id)
{
    assert_true(exited_write(fd, id));
}

static void read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, WAIT_MS) != 1)
            fail_msg("nothing from the host within %d ms", WAIT_MS);
        ssize_t n = read(fd, buf, len);
        if (n <= 0)
            fail_msg("the host's side ended (%zd)", n);
        buf += n;
        len -= (size_t)n;
    }
}

/* The next frame the host sent: raw (the engine passes stdin through). Returns the payload
 * (free()), its length in *len. */
static uint8_t *agent_recv(int fd, uint32_t *channel, uint8_t *type, uint32_t *len)
{
    uint8_t h[CLR_PROTO_HEADER_SIZE];
    read_full(fd, h, sizeof(h));
    /* u32 length | u32 channel | u8 type | 3 reserved bytes (lib/proto.h) */
    *len = clr_be32_read(h);
    *channel = clr_be32_read(h + 4);
    *type = h[8];
    uint8_t *p = malloc(*len + 1);
    assert_non_null(p);
    read_full(fd, p, *len);
    p[*len] = '\0';
    return p;
}

static void expect_frame(int fd, uint32_t channel, uint8_t type)
{
    uint32_t c, len;
    uint8_t t;
    free(agent_recv(fd, &c, &t, &len));
    assert_int_equal(t, type);
    assert_int_equal(c, channel);
}

/* ---- hooks ---- */

struct seen {
    pthread_mutex_t lock;
    uint32_t ids[8];
    size_t nids;
    int channels_calls;
    uint32_t result_ids[8];
    int exit_codes[8];
    char outs[8][32];
    size_t out_lens[8];
    bool truncated[8]; /* stdout_truncated */
    size_t nresults;
    int refuse_id; /* on_result refuses this id (no ACK) */
    int hold_id;   /* on_result holds this id's result for a claim */
    int held_calls;
    uint8_t net_type;
    uint32_t net_id;
    char net_payload[64];
    int net_calls;
};

static int on_result(void *ctx, clr_channel *ch, uint32_t id, const clr_exec_result *r)
{
    (void)ch;
    struct seen *s = ctx;
    if ((int)id == s->refuse_id)
        return -1;
    pthread_mutex_lock(&s->lock);
    if ((int)id == s->hold_id) {
        s->held_calls++;
        pthread_mutex_unlock(&s->lock);
        return 1;
    }
    if (s->nresults < 8) {
        s->result_ids[s->nresults] = id;
        s->exit_codes[s->nresults] = r->exit_code;
        snprintf(s->outs[s->nresults], sizeof(s->outs[0]), "%.*s", (int)r->out.len,
                 r->out.data ? (const char *)r->out.data : "");
        s->out_lens[s->nresults] = r->out.len;
        s->truncated[s->nresults] = r->stdout_truncated;
        s->nresults++;
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void on_channels(void *ctx, clr_channel *ch, const uint32_t *ids, size_t n)
{
    (void)ch;
    struct seen *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->channels_calls++;
    for (size_t i = 0; i < n && i < 8; i++)
        s->ids[i] = ids[i];
    s->nids = n;
    pthread_mutex_unlock(&s->lock);
}

static void on_net(void *ctx, clr_channel *ch, uint8_t type, uint32_t id, const uint8_t *payload,
                   uint32_t len)
{
    (void)ch;
    struct seen *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->net_type = type;
    s->net_id = id;
    snprintf(s->net_payload, sizeof(s->net_payload), "%.*s", (int)len, (const char *)payload);
    s->net_calls++;
    pthread_mutex_unlock(&s->lock);
}

/* ---- fixture: an open channel and the agent's end ---- */

struct fixture {
    clr_channel *ch;
    int agent;
    struct seen seen;
};

static struct fixture *open_with(const clr_channel_hooks *hooks_in, bool with_net)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    pthread_mutex_init(&f->seen.lock, NULL);
    f->seen.refuse_id = -1;
    f->seen.hold_id = -1;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    f->agent = sv[1];
    /* The agent's answer to HELLO may already wait in the stream: the channel needs CHANNELS,
     * whenever it comes. It knows commands 5 and 7 from before. */
    uint8_t ids[8];
    clr_be32_write(ids, 5);
    clr_be32_write(ids + 4, 7);
    agent_send(f->agent, 0, CLR_FRAME_CHANNELS, ids, sizeof(ids));
    clr_channel_hooks hooks = {.ctx = &f->seen, .on_result = on_result,
                               .on_channels = on_channels, .on_net = with_net ? on_net : NULL};
    if (hooks_in)
        hooks = *hooks_in;
    clr_error err = CLR_ERROR_INIT;
    if (clr_channel_open_fd(&f->ch, sv[0], "sb-00000000000000aa", &hooks, &err) < 0)
        fail_msg("open: %s", err.message);
    expect_frame(f->agent, 0, CLR_FRAME_HELLO);
    return f;
}

static void close_fixture(struct fixture *f)
{
    close(f->agent); /* the stream ends: the reader ends */
    clr_channel_close(f->ch);
    pthread_mutex_destroy(&f->seen.lock);
    free(f);
}

/* ---- tests ---- */

static void test_hello_and_channels(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    assert_true(clr_channel_alive(f->ch));
    /* on_channels ran before the open returned */
    assert_int_equal(f->seen.channels_calls, 1);
    assert_int_equal(f->seen.nids, 2);
    assert_int_equal(f->seen.ids[0], 5);
    assert_int_equal(f->seen.ids[1], 7);
    close_fixture(f);
}

/* An agent that does not serve the channel: no channel, and it was asked. ends: its stream
 * ends without CHANNELS; else it stays open and says nothing, until the open gives up. */
static void expect_no_channel(bool ends, const char *id)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    clr_channel *ch = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (ends)
        shutdown(sv[1], SHUT_WR);
    assert_int_equal(clr_channel_open_fd(&ch, sv[0], id, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    char want[128];
    snprintf(want, sizeof(want), "%s does not serve a live channel", id);
    assert_non_null(strstr(err.message, want));
    assert_null(ch);
    expect_frame(sv[1], 0, CLR_FRAME_HELLO); /* control: it was asked */
    close(sv[1]);
}

static void test_no_answer_is_no_channel(void **state)
{
    (void)state;
    expect_no_channel(true, "sb-00000000000000bb");
}

/* Quiet for the whole quiet period, its stream open. */
static void test_silent_agent_is_no_channel(void **state)
{
    (void)state;
    expect_no_channel(false, "sb-00000000000000dd");
}

/* The next frame the host sent, read without cmocka assertions (an agent thread): its type and
 * channel; false when nothing whole came within WAIT_MS. */
static bool frame_read(int fd, uint8_t *type, uint32_t *channel)
{
    uint8_t h[CLR_PROTO_HEADER_SIZE], skip[256];
    size_t got = 0;
    while (got < sizeof(h)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n = poll(&p, 1, WAIT_MS) == 1 ? read(fd, h + got, sizeof(h) - got) : -1;
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    *type = h[8];
    *channel = clr_be32_read(h + 4);
    for (uint32_t left = clr_be32_read(h); left > 0;) {
        ssize_t n = read(fd, skip, left < sizeof(skip) ? left : sizeof(skip));
        if (n <= 0)
            return false;
        left -= (uint32_t)n;
    }
    return true;
}

/* An agent whose replays outlast the three seconds of quiet that end an open: it replays one
 * result at a time, each once the host has acknowledged the one before (no gap longer than the
 * host takes), for four seconds in all, then lists its commands. */
static void *slow_replayer(void *p)
{
    int fd = *(int *)p;
    uint8_t type;
    uint32_t channel;
    if (!frame_read(fd, &type, &channel) || type != CLR_FRAME_HELLO)
        return NULL;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t id = 200;
    do {
        if (!frame_write(fd, id, CLR_FRAME_STDOUT, "r", 1) || !exited_write(fd, id) ||
            !frame_read(fd, &type, &channel) || type != CLR_FRAME_ACK || channel != id)
            return NULL; /* the host went away or answered otherwise: the test fails */
        id++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - t0.tv_sec < 4 || id < 216);
    frame_write(fd, 0, CLR_FRAME_CHANNELS, NULL, 0);
    return NULL;
}

static void test_open_waits_while_replays_come(void **state)
{
    (void)state;
    struct seen seen = {.refuse_id = -1};
    pthread_mutex_init(&seen.lock, NULL);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_replayer, &sv[1]), 0);
    clr_channel_hooks hooks = {.ctx = &seen, .on_result = on_result, .on_channels = on_channels};
    clr_channel *ch = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_channel_open_fd(&ch, sv[0], "sb-00000000000000cc", &hooks, &err) < 0)
        fail_msg("open: %s", err.message);
    pthread_join(t, NULL);
    assert_int_equal(seen.nresults, 8); /* the first 8 (of 16 or more) are kept by the hook */
    assert_int_equal(seen.result_ids[7], 207);
    assert_int_equal(seen.channels_calls, 1);
    close(sv[1]);
    clr_channel_close(ch);
    pthread_mutex_destroy(&seen.lock);
}


static void test_frames_routed_to_their_slot_in_order(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    clr_error err = CLR_ERROR_INIT;
    struct clr_channel_slot *a = clr_channel_slot_new(f->ch, 42, &err);
    struct clr_channel_slot *b = clr_channel_slot_new(f->ch, 43, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(clr_channel_slot_id(a), 42);
    assert_int_equal(clr_channel_slot_id(b), 43);
    agent_send(f->agent, 42, CLR_FRAME_STDOUT, "one", 3);
    agent_send(f->agent, 43, CLR_FRAME_STDERR, "other", 5);
    agent_send(f->agent, 42, CLR_FRAME_STDOUT, "two", 3);
    struct clr_tlv_builder *res = malloc(sizeof(*res));
    assert_non_null(res);
    clr_tlv_init(res);
    clr_tlv_put_u64(res, CLR_RES_STATUS, CLR_WIRE_EXITED);
    agent_send(f->agent, 42, CLR_FRAME_RESULT, res->buf, res->len);
    static const struct {
        uint8_t type;
        const char *data;
    } want_a[] = {{CLR_FRAME_STDOUT, "one"}, {CLR_FRAME_STDOUT, "two"}, {CLR_FRAME_RESULT, NULL}};
    for (size_t i = 0; i < 3; i++) {
        uint8_t type = 0, *payload = NULL;
        uint32_t len = 0;
        bool protocol = true;
        assert_int_equal(
            clr_channel_slot_take(f->ch, a, WAIT_MS, &type, &payload, &len, &protocol), 1);
        assert_false(protocol);
        assert_int_equal(type, want_a[i].type);
        if (want_a[i].data) {
            assert_int_equal(len, strlen(want_a[i].data));
            assert_memory_equal(payload, want_a[i].data, len);
        } else {
            assert_int_equal(len, res->len);
            assert_memory_equal(payload, res->buf, len);
        }
        clr_channel_frame_free(payload);
    }
    uint8_t type = 0, *payload = NULL;
    uint32_t len = 0;
    bool protocol = false;
    assert_int_equal(clr_channel_slot_take(f->ch, b, WAIT_MS, &type, &payload, &len, &protocol),
                     1);
    assert_int_equal(type, CLR_FRAME_STDERR);
    assert_memory_equal(payload, "other", 5);
    clr_channel_frame_free(payload);
    /* nothing more for a: a short wait ends empty-handed, the channel still alive */
    assert_int_equal(clr_channel_slot_take(f->ch, a, 1, &type, &payload, &len, &protocol), -2);
    assert_true(clr_channel_alive(f->ch));
    /* the id of a command waited for is taken; 0 asks for a fresh one */
    assert_null(clr_channel_slot_new(f->ch, 42, &err));
    assert_int_equal(err.code, CLR_E_CONFLICT);
    clr_error err2 = CLR_ERROR_INIT;
    struct clr_channel_slot *c = clr_channel_slot_new(f->ch, 0, &err2);
    assert_non_null(c);
    assert_true(clr_channel_slot_id(c) != 0);
    assert_true(clr_channel_slot_id(c) != 42 && clr_channel_slot_id(c) != 43);
    clr_channel_slot_free(f->ch, a);
    clr_channel_slot_free(f->ch, b);
    clr_channel_slot_free(f->ch, c);
    free(res);
    close_fixture(f);
}

static void test_send_frames_whole(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    clr_error err = CLR_ERROR_INIT;
    size_t big = 10000; /* over the stack buffer: the other path */
    uint8_t *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(clr_channel_send(f->ch, 9, CLR_FRAME_STDIN, data, big, &err), 0);
    assert_int_equal(clr_channel_send(f->ch, 9, CLR_FRAME_STDIN_EOF, NULL, 0, &err), 0);
    clr_channel_ack(f->ch, 9);
    uint32_t c, len;
    uint8_t t;
    uint8_t *p = agent_recv(f->agent, &c, &t, &len);
    assert_int_equal(c, 9);
    assert_int_equal(t, CLR_FRAME_STDIN);
    assert_int_equal(len, big);
    assert_memory_equal(p, data, big);
    free(p);
    expect_frame(f->agent, 9, CLR_FRAME_STDIN_EOF);
    expect_frame(f->agent, 9, CLR_FRAME_ACK);
    /* too large for one frame: refused, nothing sent */
    uint8_t *huge = calloc(1, CLR_PROTO_MAX_PAYLOAD + 1);
    assert_non_null(huge);
    assert_int_equal(
        clr_channel_send(f->ch, 9, CLR_FRAME_STDIN, huge, CLR_PROTO_MAX_PAYLOAD + 1, &err), -1);
    assert_int_equal(err.errnum, E2BIG);
    free(huge);
    free(data);
    close_fixture(f);
}

static void test_replayed_results_go_to_the_hook_then_ack(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    f->seen.refuse_id = 100;
    struct clr_tlv_builder *res = malloc(sizeof(*res));
    assert_non_null(res);
    clr_tlv_init(res);
    clr_tlv_put_u64(res, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_tlv_put_u64(res, CLR_RES_EXIT_CODE, 3);
    /* command 100: the hook does not store it, so it is not acknowledged */
    agent_send(f->agent, 100, CLR_FRAME_RESULT, res->buf, res->len);
    /* command 99: output, then its result */
    agent_send(f->agent, 99, CLR_FRAME_STDOUT, "replay", 6);
    agent_send(f->agent, 99, CLR_FRAME_STDERR, "e", 1);
    agent_send(f->agent, 99, CLR_FRAME_RESULT, res->buf, res->len);
    /* the first ACK the agent sees is 99's: 100 was never acknowledged */
    expect_frame(f->agent, 99, CLR_FRAME_ACK);
    pthread_mutex_lock(&f->seen.lock);
    assert_int_equal(f->seen.nresults, 1);
    assert_int_equal(f->seen.result_ids[0], 99);
    assert_int_equal(f->seen.exit_codes[0], 3);
    assert_string_equal(f->seen.outs[0], "replay");
    pthread_mutex_unlock(&f->seen.lock);
    free(res);
    close_fixture(f);
}

/* The output of a replayed result the hook was handed last. */
static size_t last_out_len(struct fixture *f)
{
    pthread_mutex_lock(&f->seen.lock);
    size_t n = f->seen.nresults ? f->seen.out_lens[f->seen.nresults - 1] : (size_t)-1;
    pthread_mutex_unlock(&f->seen.lock);
    return n;
}

static void test_egress_frames(void **state)
{
    (void)state;
    /* no egress on the channel: a connection request is denied at once */
    struct fixture *f = open_with(NULL, false);
    static const uint8_t open_req[] = "C\0example.com\0443";
    agent_send(f->agent, 77, CLR_FRAME_NET_OPEN, open_req, sizeof(open_req) - 1);
    uint32_t c, len;
    uint8_t t;
    uint8_t *p = agent_recv(f->agent, &c, &t, &len);
    assert_int_equal(t, CLR_FRAME_NET_DENY);
    assert_int_equal(c, 77);
    assert_string_equal((char *)p, "no egress on this channel");
    free(p);
    close_fixture(f);
    /* with one, the frame goes to on_net as it came */
    f = open_with(NULL, true);
    agent_send(f->agent, 78, CLR_FRAME_NET_OPEN, open_req, sizeof(open_req) - 1);
    agent_send(f->agent, 0, CLR_FRAME_CHANNELS, NULL, 0); /* a marker after it */
    for (int i = 0; i < WAIT_MS / 10; i++) {
        pthread_mutex_lock(&f->seen.lock);
        bool done = f->seen.channels_calls == 2;
        pthread_mutex_unlock(&f->seen.lock);
        if (done)
            break;
        usleep(10000);
    }
    pthread_mutex_lock(&f->seen.lock);
    assert_int_equal(f->seen.channels_calls, 2);
    assert_int_equal(f->seen.net_calls, 1);
    assert_int_equal(f->seen.net_type, CLR_FRAME_NET_OPEN);
    assert_int_equal(f->seen.net_id, 78);
    assert_int_equal(f->seen.net_payload[0], 'C');
    pthread_mutex_unlock(&f->seen.lock);
    close_fixture(f);
}

/* Waits until the channel is dead and returns what slot_take says then. */
/* A command waiting on channel id. */
static struct clr_channel_slot *slot_on(struct fixture *f, uint32_t id)
{
    clr_error err = CLR_ERROR_INIT;
    struct clr_channel_slot *s = clr_channel_slot_new(f->ch, id, &err);
    if (!s)
        fail_msg("slot %u: %s", id, err.message);
    return s;
}

/* The frames the agent sent so far were all read: an egress request is answered in order. */
static void sync_agent(struct fixture *f)
{
    static const char open_req[] = "C\0example.com\0" "443";
    agent_send(f->agent, 7, CLR_FRAME_NET_OPEN, open_req, sizeof(open_req) - 1);
    expect_frame(f->agent, 7, CLR_FRAME_NET_DENY);
}

/* The next frame of s: its type and length. */
static uint8_t take_one(struct fixture *f, struct clr_channel_slot *s, uint32_t *len)
{
    uint8_t type = 0, *payload = NULL;
    bool protocol = false;
    assert_int_equal(clr_channel_slot_take(f->ch, s, WAIT_MS, &type, &payload, len, &protocol),
                     1);
    clr_channel_frame_free(payload);
    return type;
}

static bool take_until_dead(struct fixture *f, struct clr_channel_slot *s)
{
    uint8_t type = 0, *payload = NULL;
    uint32_t len = 0;
    bool protocol = false;
    int rc;
    while ((rc = clr_channel_slot_take(f->ch, s, WAIT_MS, &type, &payload, &len, &protocol)) ==
           1)
        clr_channel_frame_free(payload);
    assert_int_equal(rc, 0);
    return protocol;
}

static void test_agent_may_not_send(void **state)
{
    (void)state;
    /* frames only the host sends, or of a kind the agent never sends on a command */
    static const uint8_t bad[] = {CLR_FRAME_NET_ACCEPT, CLR_FRAME_NET_DENY, CLR_FRAME_EXEC,
                                  CLR_FRAME_KILL, CLR_FRAME_ACK};
    for (size_t i = 0; i < sizeof(bad); i++) {
        struct fixture *f = open_with(NULL, false);
        clr_error err = CLR_ERROR_INIT;
        struct clr_channel_slot *s = clr_channel_slot_new(f->ch, 5, &err);
        assert_non_null(s);
        agent_send(f->agent, 5, CLR_FRAME_STDOUT, "fine", 4); /* control: accepted */
        uint8_t type = 0, *payload = NULL;
        uint32_t len = 0;
        bool protocol = false;
        assert_int_equal(
            clr_channel_slot_take(f->ch, s, WAIT_MS, &type, &payload, &len, &protocol), 1);
        clr_channel_frame_free(payload);
        agent_send(f->agent, 5, bad[i], "", 0);
        assert_true(take_until_dead(f, s)); /* a protocol error */
        assert_false(clr_channel_alive(f->ch));
        /* no new command on a dead channel */
        assert_null(clr_channel_slot_new(f->ch, 6, &err));
        assert_int_equal(err.code, CLR_E_UNAVAILABLE);
        assert_non_null(strstr(err.message, "malformed frame from the sandbox's agent"));
        clr_channel_slot_free(f->ch, s);
        close_fixture(f);
    }
}

/* An agent sends frames of 1024 commands nobody waits for (twice what ours runs at once): they
 * are collected; one more is a protocol error, which ends the channel. */
static void test_unclaimed_commands_bounded(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    struct clr_channel_slot *s = slot_on(f, 5);
    clr_error err = CLR_ERROR_INIT;
    for (uint32_t id = 1000; id < 1000 + 1024; id++)
        agent_send(f->agent, id, CLR_FRAME_STDOUT, "x", 1);
    /* Control: all of them were taken (the frames are read in order, and the ACK comes after
     * them), and the channel lives. */
    send_exited(f->agent, 1000);
    expect_frame(f->agent, 1000, CLR_FRAME_ACK);
    assert_int_equal(last_out_len(f), 1);
    assert_true(clr_channel_alive(f->ch));
    agent_send(f->agent, 5000, CLR_FRAME_STDOUT, "x", 1); /* the 1024th again */
    /* Control: it was taken too (sync_agent does not touch the count), and the channel
     * lives. */
    sync_agent(f);
    assert_true(clr_channel_alive(f->ch));
    agent_send(f->agent, 5001, CLR_FRAME_STDOUT, "x", 1); /* the 1025th */
    assert_true(take_until_dead(f, s)); /* a protocol error: the waiting command is told */
    assert_false(clr_channel_alive(f->ch));
    assert_null(clr_channel_slot_new(f->ch, 6, &err));
    assert_non_null(strstr(err.message, "more commands than it may run at once"));
    clr_channel_slot_free(f->ch, s);
    close_fixture(f);
}

/* The result the hook was handed for id, or fails. */
static size_t out_len_of(struct fixture *f, uint32_t id, bool *truncated)
{
    send_exited(f->agent, id);
    expect_frame(f->agent, id, CLR_FRAME_ACK);
    pthread_mutex_lock(&f->seen.lock);
    size_t k = f->seen.nresults;
    assert_true(k > 0);
    assert_int_equal(f->seen.result_ids[k - 1], id);
    size_t n = f->seen.out_lens[k - 1];
    *truncated = f->seen.truncated[k - 1];
    f->seen.nresults = 0; /* room for the next */
    pthread_mutex_unlock(&f->seen.lock);
    return n;
}

/* Output of commands nobody waits for is kept up to 1 MiB a stream each, and 64 MiB for all
 * of them together: past that it is dropped (the result says truncated), and the results still
 * come. */
static void test_unclaimed_output_bounded(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    size_t chunk = CLR_PROTO_MAX_PAYLOAD;
    uint8_t *buf = malloc(chunk);
    assert_non_null(buf);
    memset(buf, 'y', chunk);
    /* Command 1 has 1000 bytes of stderr: the budget ends inside a frame, not on its edge. */
    agent_send(f->agent, 1, CLR_FRAME_STDERR, buf, 1000);
    /* Commands 1-66: 2 MiB of stdout each (twice the per-stream cap). */
    for (uint32_t id = 1; id <= 66; id++)
        for (size_t sent = 0; sent < (2u << 20); sent += chunk)
            agent_send(f->agent, id, CLR_FRAME_STDOUT, buf, chunk);
    bool trunc = false;
    /* 1-63 and the start of 64 fill the budget: 64 keeps 1 MiB less those 1000 bytes. */
    assert_int_equal(out_len_of(f, 64, &trunc), (1u << 20) - 1000);
    assert_true(trunc);
    assert_int_equal(out_len_of(f, 65, &trunc), 0);
    assert_true(trunc);
    /* Control: an earlier one kept its cap, and the cap alone marks it truncated. */
    assert_int_equal(out_len_of(f, 2, &trunc), 1u << 20);
    assert_true(trunc);
    /* What 64 and 2 held is free again: 67 keeps up to its cap, and 66 nothing. */
    for (size_t sent = 0; sent < (2u << 20); sent += chunk)
        agent_send(f->agent, 67, CLR_FRAME_STDOUT, buf, chunk);
    assert_int_equal(out_len_of(f, 67, &trunc), 1u << 20);
    assert_int_equal(out_len_of(f, 66, &trunc), 0);
    /* A command under every bound is not marked. */
    assert_int_equal(out_len_of(f, 68, &trunc), 0);
    assert_false(trunc);
    assert_true(clr_channel_alive(f->ch));
    free(buf);
    close_fixture(f);
}

/* A command's queue holds no more output than its bound, however far behind its reader is:
 * past it output is dropped and marked by stream; what was read frees room; a result always
 * comes. */
static void test_slot_queue_bounded(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    struct clr_channel_slot *s = slot_on(f, 5);
    clr_channel_slot_bound(f->ch, s, 1000);
    uint8_t buf[900];
    memset(buf, 'z', sizeof(buf));
    agent_send(f->agent, 5, CLR_FRAME_STDOUT, buf, 600); /* queued: 600 */
    agent_send(f->agent, 5, CLR_FRAME_STDOUT, buf, 600); /* 1200 > 1000: dropped */
    agent_send(f->agent, 5, CLR_FRAME_STDERR, buf, 100); /* 700 */
    sync_agent(f);
    bool out = false, err = false;
    clr_channel_slot_dropped(f->ch, s, &out, &err);
    assert_true(out);
    assert_false(err); /* control: the stream that fit is not marked */
    uint32_t len = 0;
    assert_int_equal(take_one(f, s, &len), CLR_FRAME_STDOUT);
    assert_int_equal(len, 600);
    assert_int_equal(take_one(f, s, &len), CLR_FRAME_STDERR);
    assert_int_equal(len, 100);
    /* Read: room again, 900 fits; 200 more on stderr does not; the result comes past the bound. */
    agent_send(f->agent, 5, CLR_FRAME_STDOUT, buf, 900);
    agent_send(f->agent, 5, CLR_FRAME_STDERR, buf, 200);
    send_exited(f->agent, 5);
    sync_agent(f); /* all three were read before any is taken: the 900 still holds its room */
    assert_int_equal(take_one(f, s, &len), CLR_FRAME_STDOUT);
    assert_int_equal(len, 900);
    assert_int_equal(take_one(f, s, &len), CLR_FRAME_RESULT);
    clr_channel_slot_dropped(f->ch, s, &out, &err);
    assert_true(err);
    clr_channel_slot_free(f->ch, s);
    close_fixture(f);
}

/* Empty and one-byte frames count what holding them costs, not only their bytes: a flood of
 * them is held to the bound (here 1000: at most 31 such frames, 32 bytes or more each), the rest
 * dropped and marked; without the cost, all 200 would be queued. */
static void test_slot_queue_counts_frames(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    struct clr_channel_slot *s = slot_on(f, 6);
    clr_channel_slot_bound(f->ch, s, 1000);
    uint8_t one = 'a';
    for (int i = 0; i < 200; i++)
        agent_send(f->agent, 6, CLR_FRAME_STDOUT, &one, (uint32_t)(i % 2));
    send_exited(f->agent, 6);
    sync_agent(f);
    bool out = false, err = false;
    clr_channel_slot_dropped(f->ch, s, &out, &err);
    assert_true(out);
    assert_false(err);
    int frames = 0;
    uint32_t len = 0;
    while (take_one(f, s, &len) == CLR_FRAME_STDOUT)
        frames++;
    assert_true(frames >= 1); /* control: some were queued */
    assert_true(frames <= 31);
    clr_channel_slot_free(f->ch, s);
    close_fixture(f);
}

/* The next frame of s, which must be of type with payload want (NULL: any). */
static void take_expect(struct fixture *f, struct clr_channel_slot *s, uint8_t type,
                        const char *want)
{
    uint8_t t = 0, *payload = NULL;
    uint32_t len = 0;
    bool protocol = false;
    assert_int_equal(clr_channel_slot_take(f->ch, s, WAIT_MS, &t, &payload, &len, &protocol), 1);
    assert_int_equal(t, type);
    if (want) {
        assert_int_equal(len, strlen(want));
        assert_memory_equal(payload, want, len);
    }
    clr_channel_frame_free(payload);
}

/* A command that runs already (a fork's, from its snapshot) is claimed by its id: the output
 * that came before anyone waited for it comes first, then the rest; a result the hook held for
 * it (on_result 1) is not acknowledged until the claimer has it, and comes too. */
static void test_claim_takes_what_came_before(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    f->seen.hold_id = 11;
    clr_error err = CLR_ERROR_INIT;
    assert_null(clr_channel_slot_claim(f->ch, 0, &err));
    agent_send(f->agent, 10, CLR_FRAME_STDOUT, "early", 5);
    agent_send(f->agent, 10, CLR_FRAME_STDERR, "e", 1);
    agent_send(f->agent, 11, CLR_FRAME_STDOUT, "x", 1);
    send_exited(f->agent, 11);
    /* In order after 11's result: had it been acknowledged, its ACK would come before this. */
    sync_agent(f);
    pthread_mutex_lock(&f->seen.lock);
    assert_int_equal(f->seen.held_calls, 1); /* the hook saw it ... */
    assert_int_equal(f->seen.nresults, 0);  /* ... and stored nothing */
    pthread_mutex_unlock(&f->seen.lock);
    struct clr_channel_slot *s10 = clr_channel_slot_claim(f->ch, 10, &err);
    assert_non_null(s10);
    assert_null(clr_channel_slot_claim(f->ch, 10, &err)); /* one claimer */
    assert_int_equal(err.code, CLR_E_CONFLICT);
    take_expect(f, s10, CLR_FRAME_STDOUT, "early");
    take_expect(f, s10, CLR_FRAME_STDERR, "e");
    agent_send(f->agent, 10, CLR_FRAME_STDOUT, "late", 4);
    send_exited(f->agent, 10);
    take_expect(f, s10, CLR_FRAME_STDOUT, "late");
    take_expect(f, s10, CLR_FRAME_RESULT, NULL);
    struct clr_channel_slot *s11 = clr_channel_slot_claim(f->ch, 11, &err);
    assert_non_null(s11);
    take_expect(f, s11, CLR_FRAME_STDOUT, "x");
    take_expect(f, s11, CLR_FRAME_RESULT, NULL);
    /* The claimer acknowledges (exec.c does, once it has the result). */
    clr_channel_ack(f->ch, 11);
    expect_frame(f->agent, 11, CLR_FRAME_ACK);
    /* Frames after a held result are not the command's: dropped, the channel goes on. */
    pthread_mutex_lock(&f->seen.lock);
    f->seen.hold_id = 12;
    pthread_mutex_unlock(&f->seen.lock);
    send_exited(f->agent, 12);
    agent_send(f->agent, 12, CLR_FRAME_STDOUT, "after", 5);
    sync_agent(f);
    struct clr_channel_slot *s12 = clr_channel_slot_claim(f->ch, 12, &err);
    assert_non_null(s12);
    take_expect(f, s12, CLR_FRAME_RESULT, NULL);
    /* A held result nobody will claim is let go: acknowledged now, and gone from the channel. */
    pthread_mutex_lock(&f->seen.lock);
    f->seen.hold_id = 13;
    pthread_mutex_unlock(&f->seen.lock);
    send_exited(f->agent, 13);
    sync_agent(f);
    clr_channel_release(f->ch, 99); /* control: nothing held for 99, nothing sent */
    clr_channel_release(f->ch, 13);
    expect_frame(f->agent, 13, CLR_FRAME_ACK);
    struct clr_channel_slot *s13 = clr_channel_slot_claim(f->ch, 13, &err);
    assert_non_null(s13);
    uint8_t t = 0, *payload = NULL;
    uint32_t len = 0;
    bool protocol = false;
    assert_int_equal(clr_channel_slot_take(f->ch, s13, 200, &t, &payload, &len, &protocol), -2);
    clr_channel_slot_free(f->ch, s13);
    assert_true(clr_channel_alive(f->ch));
    clr_channel_slot_free(f->ch, s10);
    clr_channel_slot_free(f->ch, s11);
    clr_channel_slot_free(f->ch, s12);
    close_fixture(f);
}

static void test_stream_end_is_not_a_protocol_error(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    struct clr_channel_slot *s = slot_on(f, 5);
    clr_error err = CLR_ERROR_INIT;
    shutdown(f->agent, SHUT_WR); /* the sandbox's stream ends */
    assert_false(take_until_dead(f, s));
    assert_false(clr_channel_alive(f->ch));
    assert_null(clr_channel_slot_new(f->ch, 6, &err));
    assert_non_null(strstr(err.message, "the sandbox's attach stream ended"));
    clr_channel_slot_free(f->ch, s);
    close_fixture(f);
}

static void test_close_half_closes(void **state)
{
    (void)state;
    struct fixture *f = open_with(NULL, false);
    clr_channel_ack(f->ch, 12);
    /* the host's close: what it wrote arrives, then end of stream */
    int agent = f->agent;
    clr_channel_close(f->ch);
    expect_frame(agent, 12, CLR_FRAME_ACK);
    uint8_t b;
    struct pollfd p = {.fd = agent, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    assert_int_equal(read(agent, &b, 1), 0);
    close(agent);
    pthread_mutex_destroy(&f->seen.lock);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_and_channels),
        cmocka_unit_test(test_no_answer_is_no_channel),
        cmocka_unit_test(test_open_waits_while_replays_come),
        cmocka_unit_test(test_silent_agent_is_no_channel),
        cmocka_unit_test(test_frames_routed_to_their_slot_in_order),
        cmocka_unit_test(test_send_frames_whole),
        cmocka_unit_test(test_replayed_results_go_to_the_hook_then_ack),
        cmocka_unit_test(test_unclaimed_commands_bounded),
        cmocka_unit_test(test_unclaimed_output_bounded),
        cmocka_unit_test(test_slot_queue_bounded),
        cmocka_unit_test(test_slot_queue_counts_frames),
        cmocka_unit_test(test_claim_takes_what_came_before),
        cmocka_unit_test(test_egress_frames),
        cmocka_unit_test(test_agent_may_not_send),
        cmocka_unit_test(test_stream_end_is_not_a_protocol_error),
        cmocka_unit_test(test_close_half_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
