/* A sandbox's agent for the service modules' unit tests: the test's end of a socketpair that
 * stands for a sandbox's attach stream (lib/channel.c's clr_channel_open_fd), and a thread that
 * answers as the agent does: CHANNELS to the host's HELLO, and to every EXEC frame its scripted
 * output and RESULT (or nothing, or the end of the stream). It counts what the host sent. Also
 * a sandbox handle opened against the scripted engine of fake_engine.h from the labels of a
 * given id. Include after <cmocka.h> and fake_engine.h. */
#ifndef CLR_TEST_SERVICE_AGENT_H
#define CLR_TEST_SERVICE_AGENT_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

#define TEST_AGENT_WAIT_MS 30000

/* What the agent does with an EXEC frame. */
enum test_agent_mode {
    TEST_AGENT_ANSWER, /* stdout (if any), then RESULT exited exit_code */
    TEST_AGENT_SILENT, /* nothing: the command runs until the host kills it */
    TEST_AGENT_HANG_UP /* ends the stream after the request: the sandbox died under it */
};

struct test_agent {
    int fd; /* the agent's end */
    pthread_t thread;
    pthread_mutex_t lock;
    enum test_agent_mode mode;
    int exit_code;
    uint64_t status; /* the RESULT's wire status (a CLR_WIRE_*; 0: CLR_WIRE_EXITED) */
    char out[64];    /* the command's stdout ("" for none) */
    /* What the host sent, by frame type: how many, and the channel of the last one. */
    unsigned frames[32];
    uint32_t last[32];
    char deny[256]; /* the payload of the last NET_DENY: why */
};

/* One agent frame as the engine delivers it: on stdout (stream 1), in one multiplexed chunk. */
static inline void test_agent_send(int fd, uint32_t channel, uint8_t type, const void *payload,
                                   size_t len)
{
    size_t n = 8 + CLR_PROTO_HEADER_SIZE + len;
    uint8_t *b = malloc(n);
    assert_non_null(b);
    b[0] = 1;
    b[1] = b[2] = b[3] = 0;
    clr_be32_write(b + 4, (uint32_t)(CLR_PROTO_HEADER_SIZE + len));
    clr_frame_header(b + 8, channel, type, (uint32_t)len);
    if (len)
        memcpy(b + 8 + CLR_PROTO_HEADER_SIZE, payload, len);
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    free(b);
    (void)w; /* the host may have gone: then the test's own checks fail */
}

/* RESULT of the wire status (a CLR_WIRE_*) with code: the agent's answer to a command. */
static inline void test_agent_send_result(int fd, uint32_t channel, uint64_t status, int code)
{
    struct clr_tlv_builder *res = malloc(sizeof(*res));
    assert_non_null(res);
    clr_tlv_init(res);
    clr_tlv_put_u64(res, CLR_RES_STATUS, status);
    clr_tlv_put_u64(res, CLR_RES_EXIT_CODE, (uint64_t)code);
    test_agent_send(fd, channel, CLR_FRAME_RESULT, res->buf, res->len);
    free(res);
}

static inline void test_agent_send_exited(int fd, uint32_t channel, int code)
{
    test_agent_send_result(fd, channel, CLR_WIRE_EXITED, code);
}

/* CHANNELS: the ids of the commands the agent knows. */
static inline void test_agent_send_channels(int fd, const uint32_t *ids, size_t n)
{
    uint8_t b[64];
    assert_true(n * 4 <= sizeof(b));
    for (size_t i = 0; i < n; i++)
        clr_be32_write(b + 4 * i, ids[i]);
    test_agent_send(fd, 0, CLR_FRAME_CHANNELS, b, n * 4);
}

static inline bool test_agent_read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = read(fd, buf, len);
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static inline void *test_agent_main(void *p)
{
    struct test_agent *a = p;
    for (;;) {
        uint8_t h[CLR_PROTO_HEADER_SIZE];
        if (!test_agent_read_full(a->fd, h, sizeof(h)))
            break;
        /* u32 length | u32 channel | u8 type | 3 reserved bytes (lib/proto.h) */
        uint32_t len = clr_be32_read(h), channel = clr_be32_read(h + 4);
        uint8_t type = h[8];
        uint8_t *payload = malloc(len + 1);
        if (!payload || !test_agent_read_full(a->fd, payload, len)) {
            free(payload);
            break;
        }
        pthread_mutex_lock(&a->lock);
        if (type == CLR_FRAME_NET_DENY)
            snprintf(a->deny, sizeof(a->deny), "%.*s", (int)len, (const char *)payload);
        free(payload);
        if (type < 32) {
            a->frames[type]++;
            a->last[type] = channel;
        }
        enum test_agent_mode mode = a->mode;
        int code = a->exit_code;
        uint64_t status = a->status ? a->status : CLR_WIRE_EXITED;
        char out[64];
        snprintf(out, sizeof(out), "%s", a->out);
        pthread_mutex_unlock(&a->lock);
        if (type == CLR_FRAME_HELLO)
            test_agent_send_channels(a->fd, NULL, 0);
        /* Hung up once the request is whole (its stdin's end follows the EXEC frame): the
         * command was sent, and then its sandbox died. */
        if (type == CLR_FRAME_STDIN_EOF && mode == TEST_AGENT_HANG_UP)
            break;
        if (type != CLR_FRAME_EXEC || mode != TEST_AGENT_ANSWER)
            continue;
        if (out[0])
            test_agent_send(a->fd, channel, CLR_FRAME_STDOUT, out, strlen(out));
        test_agent_send_result(a->fd, channel, status, code);
    }
    shutdown(a->fd, SHUT_RDWR);
    return NULL;
}

/* An agent answering on a new channel of sandbox id: *ch is the host's end (hooks NULL, as a
 * pooled sandbox's channel before it has a record), open and answered. */
static inline struct test_agent *test_agent_start(clr_channel **ch, const char *id)
{
    struct test_agent *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    pthread_mutex_init(&a->lock, NULL);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a->fd = sv[1];
    assert_int_equal(pthread_create(&a->thread, NULL, test_agent_main, a), 0);
    clr_error err = CLR_ERROR_INIT;
    if (clr_channel_open_fd(ch, sv[0], id, NULL, &err) < 0)
        fail_msg("channel open: %s", err.message);
    return a;
}

/* What the agent does with the next commands: mode, and (answering) their stdout ("" for none)
 * and result (a CLR_WIRE_* status and exit code). */
static inline void test_agent_script(struct test_agent *a, enum test_agent_mode mode,
                                     const char *out, uint64_t status, int exit_code)
{
    pthread_mutex_lock(&a->lock);
    a->mode = mode;
    snprintf(a->out, sizeof(a->out), "%s", out);
    a->status = status;
    a->exit_code = exit_code;
    pthread_mutex_unlock(&a->lock);
}

/* How many frames of type the host sent so far. */
static inline unsigned test_agent_frames(struct test_agent *a, uint8_t type)
{
    pthread_mutex_lock(&a->lock);
    unsigned n = a->frames[type];
    pthread_mutex_unlock(&a->lock);
    return n;
}

/* The channel of the last frame of type the host sent. */
static inline uint32_t test_agent_last(struct test_agent *a, uint8_t type)
{
    pthread_mutex_lock(&a->lock);
    uint32_t c = a->last[type];
    pthread_mutex_unlock(&a->lock);
    return c;
}

/* Waits (TEST_AGENT_WAIT_MS at most) until the host sent at least n frames of type. */
static inline void test_agent_await(struct test_agent *a, uint8_t type, unsigned n)
{
    for (int i = 0; i < TEST_AGENT_WAIT_MS / 10 && test_agent_frames(a, type) < n; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (test_agent_frames(a, type) < n)
        fail_msg("the host sent %u frames of type %u, expected %u", test_agent_frames(a, type),
                 type, n);
}

/* Ends the agent's side (the host sees the stream end) and its thread. */
static inline void test_agent_stop(struct test_agent *a)
{
    if (!a)
        return;
    shutdown(a->fd, SHUT_RDWR);
    pthread_join(a->thread, NULL);
    close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* The engine's inspect answer for sandbox id: its labels (default limits, the default image,
 * runsc), container id "c" + the id's hex digits, running. Script it with fake_answer. */
static inline char *test_inspect_body(const char *id)
{
    clr_sandbox_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.id, sizeof(info.id), "%s", id);
    snprintf(info.image, sizeof(info.image), "clearing/default:latest");
    snprintf(info.runtime, sizeof(info.runtime), "runsc");
    snprintf(info.owner, sizeof(info.owner), "test");
    snprintf(info.tenant, sizeof(info.tenant), CLR_TENANT_DEFAULT);
    info.created_at = 1000;
    info.expires_at = 2000;
    info.max_expires_at = 5000;
    info.limits = (clr_limits)CLR_LIMITS_INIT;
    json_t *labels = clr_sandbox_labels(&info);
    assert_non_null(labels);
    char cid[64];
    snprintf(cid, sizeof(cid), "c%s", id + 3);
    json_t *j = json_pack("{s:s, s:{s:o}, s:{s:s, s:b, s:b}}", "Id", cid, "Config", "Labels",
                          labels, "State", "Status", "running", "Running", 1, "Paused", 0);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    return s;
}

#endif
