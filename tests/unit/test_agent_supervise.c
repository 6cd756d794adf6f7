/* The agent's supervisor (agent/supervise.c) run for real: the built clearing-agent's exec
 * mode on the host, fed frames on a pipe as the daemon sends them, read back until its
 * result. The frames are written in one write() so that the agent reads them in one read():
 * what the daemon does when it signals a command right after starting it, and what a loaded
 * sandbox often shows (the request and the signal already both there when the supervisor
 * wakes).
 *
 * The supervisor drops supplementary groups and runs the command as another user: root only
 * (skipped otherwise, saying so). The agent's path is the test's first argument. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/exec.h"
#include "proto.h"

#define NOBODY 65534
#define COMMAND_TIMEOUT_MS 20000 /* a lost signal ends as timed_out after this */
#define READ_DEADLINE_S 120      /* the test's own bound on the agent's answer */

static const char *agent_path;

struct agent {
    pid_t pid;
    int to;   /* its stdin */
    int from; /* its stdout */
};

static void agent_start(struct agent *a)
{
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    a->pid = fork();
    assert_true(a->pid >= 0);
    if (a->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl(agent_path, agent_path, "exec", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    a->to = in[1];
    a->from = out[0];
}

/* Appends one frame (channel 1, as the daemon's own exec stream) to buf at *len. */
static void put_frame(uint8_t *buf, size_t cap, size_t *len, uint8_t type, const void *payload,
                      uint32_t plen)
{
    assert_true(*len + CLR_PROTO_HEADER_SIZE + plen <= cap);
    clr_frame_header(buf + *len, 1, type, plen);
    if (plen) /* a frame with no payload (STDIN_EOF) has no bytes to copy: payload is NULL */
        memcpy(buf + *len + CLR_PROTO_HEADER_SIZE, payload, plen);
    *len += CLR_PROTO_HEADER_SIZE + plen;
}

/* The EXEC payload: argv as given, run as nobody in /, with a timeout. */
static void build_request(struct clr_tlv_builder *b, const char *const *argv)
{
    clr_tlv_init(b);
    for (const char *const *p = argv; *p; p++)
        clr_tlv_put_str(b, CLR_REQ_ARG, *p);
    clr_tlv_put_str(b, CLR_REQ_ENV, "PATH=/usr/bin:/bin");
    clr_tlv_put_str(b, CLR_REQ_CWD, "/");
    clr_tlv_put_u64(b, CLR_REQ_TIMEOUT_MS, COMMAND_TIMEOUT_MS);
    clr_tlv_put_u64(b, CLR_REQ_STDOUT_CAP, 65536);
    clr_tlv_put_u64(b, CLR_REQ_STDERR_CAP, 65536);
    clr_tlv_put_u64(b, CLR_REQ_UID, NOBODY);
    clr_tlv_put_u64(b, CLR_REQ_GID, NOBODY);
}

struct collected {
    clr_exec_result res;
    char out[256];
    size_t out_len;
    bool have_result;
};

static int on_frame(void *ctx, const struct clr_frame *f)
{
    struct collected *c = ctx;
    if (f->type == CLR_FRAME_STDOUT) {
        size_t n = f->length < sizeof(c->out) - 1 - c->out_len ? f->length
                                                               : sizeof(c->out) - 1 - c->out_len;
        memcpy(c->out + c->out_len, f->payload, n);
        c->out_len += n;
        c->out[c->out_len] = '\0';
    } else if (f->type == CLR_FRAME_RESULT) {
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(clr_exec_result_decode(&c->res, f->payload, f->length, &err), 0);
        c->have_result = true;
    }
    return 0;
}

/* Reads the agent's frames until its result (or READ_DEADLINE_S), then collects the agent. */
static void agent_finish(struct agent *a, struct collected *c)
{
    static uint8_t payload[CLR_PROTO_MAX_PAYLOAD];
    struct clr_frame_reader rd;
    clr_frame_reader_init(&rd, payload);
    memset(c, 0, sizeof(*c));
    time_t until = time(NULL) + READ_DEADLINE_S;
    while (!c->have_result && time(NULL) < until) {
        struct pollfd p = {.fd = a->from, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        uint8_t buf[16384];
        ssize_t n = read(a->from, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        assert_int_equal(clr_frame_reader_feed(&rd, buf, (size_t)n, on_frame, c), 0);
    }
    close(a->to);
    close(a->from);
    if (!c->have_result)
        kill(a->pid, SIGKILL);
    int st;
    waitpid(a->pid, &st, 0);
}

/* Starts argv and, in the same write, the frames after its EXEC (type 0: none). */
static void run(struct collected *c, const char *const *argv, uint8_t then, const void *payload,
                uint32_t plen)
{
    static struct clr_tlv_builder req;
    build_request(&req, argv);
    static uint8_t buf[CLR_PROTO_MAX_PAYLOAD + 256];
    size_t len = 0;
    put_frame(buf, sizeof(buf), &len, CLR_FRAME_EXEC, req.buf, (uint32_t)req.len);
    put_frame(buf, sizeof(buf), &len, CLR_FRAME_STDIN_EOF, NULL, 0);
    if (then)
        put_frame(buf, sizeof(buf), &len, then, payload, plen);
    /* One write under PIPE_BUF: the pipe hands it over whole, so the agent reads it at once. */
    assert_true(len <= PIPE_BUF);
    struct agent a;
    agent_start(&a);
    assert_int_equal(write(a.to, buf, len), (ssize_t)len);
    agent_finish(&a, c);
}

static int need_root(void **state)
{
    (void)state;
    if (geteuid() != 0 || !agent_path)
        skip();
    return 0;
}

/* The harness works: a command runs as nobody and its output and exit come back. */
static void test_command_runs_and_answers(void **state)
{
    (void)state;
    const char *const argv[] = {"/bin/sh", "-c", "id -u; exit 3", NULL};
    struct collected c;
    run(&c, argv, 0, NULL, 0);
    assert_true(c.have_result);
    assert_int_equal(c.res.status, CLR_EXEC_EXITED);
    assert_int_equal(c.res.exit_code, 3);
    assert_string_equal(c.out, "65534\n");
}

/* A TERM read together with the request is held until the command runs, then sent: it used to
 * be dropped (the command did not exist yet) and the command ran on to its timeout. */
static void test_signal_with_the_request_reaches_the_command(void **state)
{
    (void)state;
    const char *const argv[] = {"/bin/sleep", "600", NULL};
    uint8_t sig[8];
    for (int round = 0; round < 3; round++) {
        clr_be64_write(sig, SIGTERM);
        struct collected c;
        run(&c, argv, CLR_FRAME_SIGNAL, sig, sizeof(sig));
        assert_true(c.have_result);
        if (c.res.status != CLR_EXEC_SIGNALED)
            fail_msg("round %d: status %d (%s), expected signaled by TERM", round,
                     (int)c.res.status, c.res.message);
        assert_int_equal(c.res.signal, SIGTERM);
    }
}

/* A KILL read together with the request ends the command too (the positive control of the
 * same path: it was never lost). */
static void test_kill_with_the_request_ends_the_command(void **state)
{
    (void)state;
    const char *const argv[] = {"/bin/sleep", "600", NULL};
    struct collected c;
    run(&c, argv, CLR_FRAME_KILL, NULL, 0);
    assert_true(c.have_result);
    assert_int_equal(c.res.status, CLR_EXEC_SIGNALED);
    assert_string_equal(c.res.message, "killed on request");
}

int main(int argc, char **argv)
{
    agent_path = argc > 1 ? argv[1] : NULL;
    if (geteuid() != 0)
        fprintf(stderr, "not root: the supervisor's tests are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_command_runs_and_answers, need_root),
        cmocka_unit_test_setup(test_signal_with_the_request_reaches_the_command, need_root),
        cmocka_unit_test_setup(test_kill_with_the_request_ends_the_command, need_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
