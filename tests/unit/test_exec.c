/* Exec without an engine (lib/exec.c, exec_internal.h): the EXEC request built from the options,
 * the agent's frames collected into a result (caps, order, what a broken agent sends), the
 * backstop's arithmetic, and the result written when the agent's never came (a cut stream, the
 * backstop, a protocol violation, the diagnosis of a dead sandbox). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exec_internal.h"

/* ---- the EXEC request ------------------------------------------------------------------- */

/* The request's fields, decoded back: strings by tag in order, integers by tag. */
struct fields {
    char args[8][128];
    size_t nargs;
    char env[16][128];
    size_t nenv;
    char cwd[128];
    uint64_t u[32];
    bool have[32];
};

static void decode_request(const struct clr_tlv_builder *b, struct fields *f)
{
    memset(f, 0, sizeof(*f));
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t len;
    int rc;
    clr_tlv_iter_init(&it, b->buf, b->len);
    while ((rc = clr_tlv_next(&it, &tag, &v, &len)) == 1) {
        char s[128];
        snprintf(s, sizeof(s), "%.*s", (int)len, (const char *)v);
        if (tag == CLR_REQ_ARG && f->nargs < 8)
            memcpy(f->args[f->nargs++], s, sizeof(s));
        else if (tag == CLR_REQ_ENV && f->nenv < 16)
            memcpy(f->env[f->nenv++], s, sizeof(s));
        else if (tag == CLR_REQ_CWD)
            memcpy(f->cwd, s, sizeof(s));
        else if (tag < 32) {
            assert_int_equal(clr_tlv_u64(v, len, &f->u[tag]), 0);
            f->have[tag] = true;
        }
    }
    assert_int_equal(rc, 0);
}

static clr_sandbox_info sandbox(const char *runtime)
{
    clr_sandbox_info info;
    memset(&info, 0, sizeof(info));
    clr_limits l = CLR_LIMITS_INIT;
    info.limits = l;
    snprintf(info.id, sizeof(info.id), "sb-0123456789abcdef");
    snprintf(info.runtime, sizeof(info.runtime), "%s", runtime);
    return info;
}

static struct clr_tlv_builder *builder(void)
{
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    assert_non_null(b);
    return b;
}

static void test_request_argv(void **state)
{
    (void)state;
    const char *argv[] = {"python3", "-c", "print(1)", NULL};
    const char *senv[] = {"SANDBOX=1", NULL};
    const char *env[] = {"A=b", NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.env = env;
    o.limits.timeout_ms = 2500;
    o.limits.stdout_cap = 1000;
    o.limits.stderr_cap = 2000;
    clr_sandbox_info info = sandbox("runsc");
    info.limits.pids = 64;
    info.limits.memory_bytes = 1 * CLR_GIB;
    info.limits.nofile = 512;
    info.limits.fsize_bytes = 5 * CLR_MIB;
    struct clr_tlv_builder *b = builder();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_build_request(b, &info, senv, &o, &err), 0);
    struct fields f;
    decode_request(b, &f);
    assert_int_equal(f.nargs, 3);
    assert_string_equal(f.args[0], "python3");
    assert_string_equal(f.args[2], "print(1)");
    /* the sandbox's environment first, then the command's (the command's wins) */
    assert_int_equal(f.nenv, 2);
    assert_string_equal(f.env[0], "SANDBOX=1");
    assert_string_equal(f.env[1], "A=b");
    assert_string_equal(f.cwd, "/workspace");
    assert_int_equal(f.u[CLR_REQ_TIMEOUT_MS], 2500);
    assert_int_equal(f.u[CLR_REQ_STDOUT_CAP], 1000);
    assert_int_equal(f.u[CLR_REQ_STDERR_CAP], 2000);
    assert_int_equal(f.u[CLR_REQ_UID], CLR_SANDBOX_UID);
    assert_int_equal(f.u[CLR_REQ_GID], CLR_SANDBOX_GID);
    assert_int_equal(f.u[CLR_REQ_NPROC], 64);
    /* the command's memory: the sandbox's less the reserve (1 GiB / 8) */
    assert_int_equal(f.u[CLR_REQ_MEMORY], 896 * CLR_MIB);
    assert_int_equal(f.u[CLR_REQ_NOFILE], 512);
    assert_int_equal(f.u[CLR_REQ_FSIZE], 5 * CLR_MIB);
    assert_true(f.have[CLR_REQ_MEMORY_SOURCE]);
    assert_int_equal(f.u[CLR_REQ_MEMORY_SOURCE], CLR_MEMORY_MEMINFO);
    free(b);
}

static void test_request_shell_cwd_background_runc(void **state)
{
    (void)state;
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.shell = "echo hi | wc -c";
    o.cwd = "/tmp";
    o.background = true;
    clr_sandbox_info info = sandbox("runc");
    struct clr_tlv_builder *b = builder();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_build_request(b, &info, NULL, &o, &err), 0);
    struct fields f;
    decode_request(b, &f);
    assert_int_equal(f.nargs, 3);
    assert_string_equal(f.args[0], "/bin/sh");
    assert_string_equal(f.args[1], "-c");
    assert_string_equal(f.args[2], "echo hi | wc -c");
    assert_int_equal(f.nenv, 0);
    assert_string_equal(f.cwd, "/tmp");
    assert_true(f.have[CLR_REQ_TIMEOUT_MS]);
    assert_int_equal(f.u[CLR_REQ_TIMEOUT_MS], 0); /* background: no timeout */
    /* outside gVisor /proc/meminfo is the host's: the agent sums its tree's RSS */
    assert_int_equal(f.u[CLR_REQ_MEMORY_SOURCE], CLR_MEMORY_TREE_RSS);
    assert_false(f.have[CLR_REQ_STREAM]); /* a background command is capped unless it asks */
    o.stream = true;
    assert_int_equal(clr_exec_build_request(b, &info, NULL, &o, &err), 0);
    decode_request(b, &f);
    assert_true(f.have[CLR_REQ_STREAM]);
    assert_int_equal(f.u[CLR_REQ_STREAM], 1);
    free(b);
}

static void test_request_refusals(void **state)
{
    (void)state;
    const char *argv[] = {"true", NULL};
    const char *bad_env[] = {"A=1", "NOVALUE", NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.argv = argv;
    o.env = bad_env;
    clr_sandbox_info info = sandbox("runsc");
    struct clr_tlv_builder *b = builder();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_build_request(b, &info, NULL, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "'NOVALUE' is not KEY=VALUE"));
    /* a command that does not fit in one frame */
    size_t big = CLR_PROTO_MAX_PAYLOAD + 16;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, 'x', big);
    huge[big] = '\0';
    o.env = NULL;
    o.argv = NULL;
    o.shell = huge;
    clr_error err2 = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_build_request(b, &info, NULL, &o, &err2), -1);
    assert_int_equal(err2.code, CLR_E_LIMIT);
    assert_int_equal(err2.errnum, E2BIG);
    free(huge);
    free(b);
}

static void assert_option_refused(const clr_exec_options *o, const char *needle)
{
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_exec_check_options(o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, needle))
        fail_msg("message '%s' does not say '%s'", err.message, needle);
}

static void test_check_options(void **state)
{
    (void)state;
    const char *argv[] = {"true", NULL};
    const char *empty[] = {NULL};
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    clr_error err = CLR_ERROR_INIT;
    assert_option_refused(&o, "no command given");
    o.argv = empty;
    assert_option_refused(&o, "no command given");
    o.argv = argv;
    assert_int_equal(clr_exec_check_options(&o, &err), 0); /* control */
    o.shell = "true";
    assert_option_refused(&o, "not both");
    o.shell = NULL;
    o.cwd = "relative/dir";
    assert_option_refused(&o, "'relative/dir' must be absolute");
    o.cwd = NULL;
    o.limits.timeout_ms = 0;
    assert_option_refused(&o, "timeout");
    o.background = true; /* a background command has no timeout to check */
    assert_int_equal(clr_exec_check_options(&o, &err), 0);
    o.limits.stdout_cap = 65 * CLR_MIB; /* but its caps are still checked */
    assert_option_refused(&o, "stdout");
    o.limits.stdout_cap = CLR_MIB;
    o.stream = true;
    assert_int_equal(clr_exec_check_options(&o, &err), 0); /* control */
    o.background = false;
    o.limits.timeout_ms = 1000;
    assert_option_refused(&o, "only a background command's output is a stream");
}


/* ---- frames into a result --------------------------------------------------------------- */

struct seen_output {
    char data[256];
    size_t len;
    int calls;
};

static void on_output(void *ctx, clr_stream stream, const uint8_t *data, size_t len)
{
    struct seen_output *s = ctx;
    s->calls++;
    assert_true(stream == CLR_STDOUT || stream == CLR_STDERR);
    memcpy(s->data + s->len, data, len);
    s->len += len;
}

static struct clr_frame frame(uint8_t type, const void *p, size_t len)
{
    struct clr_frame f = {.channel = 1, .type = type, .payload = p, .length = (uint32_t)len};
    return f;
}

/* Options with these caps whose output goes to seen. */
static clr_exec_options capped(struct seen_output *seen, uint64_t out_cap, uint64_t err_cap)
{
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.limits.stdout_cap = out_cap;
    o.limits.stderr_cap = err_cap;
    o.on_output = on_output;
    o.ctx = seen;
    return o;
}

static void test_collect_output_caps_and_result(void **state)
{
    (void)state;
    struct seen_output seen = {0};
    clr_exec_options o = capped(&seen, 8, 3);
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    clr_error err = CLR_ERROR_INIT;
    struct clr_exec_collect c = {.res = &r, .opts = &o, .err = &err};
    struct clr_frame f = frame(CLR_FRAME_STDOUT, "hello ", 6);
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    assert_false(c.dropped_out); /* control: all of it kept */
    f = frame(CLR_FRAME_STDOUT, "world", 5); /* only "wo" fits under the cap of 8 */
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    assert_true(c.dropped_out); /* the host's own bound: the result says truncated */
    f = frame(CLR_FRAME_STDOUT, "more", 4); /* nothing fits: on_output is not called */
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    f = frame(CLR_FRAME_STDERR, "errors", 6);
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    assert_int_equal(r.out.len, 8);
    assert_memory_equal(r.out.data, "hello wo", 8);
    assert_int_equal(r.out.data[8], '\0');
    assert_int_equal(r.err.len, 3);
    assert_memory_equal(r.err.data, "err", 3);
    assert_true(c.dropped_err);
    assert_int_equal(seen.calls, 3);
    assert_int_equal(seen.len, 11);
    assert_memory_equal(seen.data, "hello woerr", 11);
    assert_false(c.have_result);

    struct clr_tlv_builder *b = builder();
    clr_tlv_init(b);
    clr_tlv_put_u64(b, CLR_RES_STATUS, CLR_WIRE_EXITED);
    clr_tlv_put_u64(b, CLR_RES_EXIT_CODE, 7);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_BYTES, 15);
    clr_tlv_put_u64(b, CLR_RES_STDOUT_TRUNC, 1);
    f = frame(CLR_FRAME_RESULT, b->buf, b->len);
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    assert_true(c.have_result);
    assert_int_equal(r.status, CLR_EXEC_EXITED);
    assert_int_equal(r.exit_code, 7);
    assert_int_equal(r.stdout_bytes, 15); /* the agent's count, not what reached us */
    assert_true(r.stdout_truncated);
    /* nothing may follow the result */
    f = frame(CLR_FRAME_STDOUT, "x", 1);
    assert_int_equal(clr_exec_collect_frame(&c, &f), -1);
    assert_int_equal(err.code, CLR_E_INTERNAL);
    assert_int_equal(err.errnum, EPROTO);
    assert_non_null(strstr(err.message, "after its result"));
    assert_int_equal(r.out.len, 8);
    free(b);
    clr_exec_result_clear(&r);
}

/* A stream (a background process's output) has no caps on the host either: every byte goes to
 * on_output and none is kept in the result, however small the caps. */
static void test_collect_stream_output(void **state)
{
    (void)state;
    struct seen_output seen = {0};
    clr_exec_options o = capped(&seen, 2, 2);
    o.background = true;
    o.stream = true;
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    clr_error err = CLR_ERROR_INIT;
    struct clr_exec_collect c = {.res = &r, .opts = &o, .err = &err};
    struct clr_frame f = frame(CLR_FRAME_STDOUT, "hello ", 6);
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    f = frame(CLR_FRAME_STDERR, "world", 5);
    assert_int_equal(clr_exec_collect_frame(&c, &f), 0);
    assert_int_equal(seen.calls, 2);
    assert_int_equal(seen.len, 11);
    assert_memory_equal(seen.data, "hello world", 11);
    assert_int_equal(r.out.len, 0);
    assert_int_equal(r.err.len, 0);
    assert_false(c.dropped_out);
    assert_false(c.dropped_err);
    clr_exec_result_clear(&r);
}

static void test_collect_refuses(void **state)
{
    (void)state;
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    clr_error err = CLR_ERROR_INIT;
    struct clr_exec_collect c = {.res = &r, .opts = &o, .err = &err};
    /* host -> agent frames coming back are a broken (or hostile) agent */
    struct clr_frame f = frame(CLR_FRAME_EXEC, "", 0);
    assert_int_equal(clr_exec_collect_frame(&c, &f), -1);
    assert_non_null(strstr(err.message, "unexpected frame of type 1"));
    clr_error err2 = CLR_ERROR_INIT;
    c.err = &err2;
    uint8_t junk[3] = {0, 1, 2}; /* a result that does not parse */
    f = frame(CLR_FRAME_RESULT, junk, sizeof(junk));
    assert_int_equal(clr_exec_collect_frame(&c, &f), -1);
    assert_int_equal(err2.errnum, EPROTO);
    assert_false(c.have_result);
}

/* The engine's exec stream: frames on stream 1 (cut anywhere), the agent's stderr on stream 2. */
static void test_collect_stream(void **state)
{
    (void)state;
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    clr_error err = CLR_ERROR_INIT;
    uint8_t *buf = malloc(CLR_PROTO_MAX_PAYLOAD);
    assert_non_null(buf);
    struct clr_exec_collect c = {.res = &r, .opts = &o, .err = &err, .frame_buf = buf};
    clr_frame_reader_init(&c.frames, buf);
    uint8_t bytes[CLR_PROTO_HEADER_SIZE + 2];
    clr_frame_header(bytes, 1, CLR_FRAME_STDOUT, 2);
    memcpy(bytes + CLR_PROTO_HEADER_SIZE, "ok", 2);
    for (size_t i = 0; i < sizeof(bytes); i++) /* one byte at a time */
        assert_int_equal(clr_exec_collect_stream(&c, 1, bytes + i, 1), 0);
    assert_int_equal(r.out.len, 2);
    assert_memory_equal(r.out.data, "ok", 2);
    assert_int_equal(clr_exec_collect_stream(&c, 2, (const uint8_t *)"agent: boom", 11), 0);
    assert_string_equal(c.agent_log, "agent: boom");
    /* the agent's log is bounded */
    char big[5000];
    memset(big, 'y', sizeof(big));
    assert_int_equal(clr_exec_collect_stream(&c, 2, (const uint8_t *)big, sizeof(big)), 0);
    assert_int_equal(c.agent_log_len, CLR_EXEC_AGENT_LOG_MAX - 1);
    assert_int_equal(strlen(c.agent_log), CLR_EXEC_AGENT_LOG_MAX - 1);
    /* a malformed header on stream 1 is a protocol error */
    uint8_t bad[CLR_PROTO_HEADER_SIZE];
    memset(bad, 0xff, sizeof(bad));
    assert_int_equal(clr_exec_collect_stream(&c, 1, bad, sizeof(bad)), -1);
    assert_int_equal(err.errnum, EPROTO);
    assert_non_null(strstr(err.message, "malformed frame"));
    free(buf);
    clr_exec_result_clear(&r);
}

/* Docker's exec start writes its own error on stream 1 when it could not start the agent (runsc's
 * `exec` failed, as it does now and then under load): "OCI runtime exec failed: ...\r\n", then
 * the stream ends. That is the engine's failure, not a malformed frame of the agent's: before,
 * it read as a protocol error and the sandbox was killed (3 of 20 code sessions under load). */
#define DOCKER_LINE                                                                            \
    "OCI runtime exec failed: /var/lib/docker/runtimes/runsc did not terminate successfully: "  \
    "exit status 128: unknown\r\n"

static struct clr_exec_collect *stream_collector(clr_exec_result *r, const clr_exec_options *o,
                                                 clr_error *err)
{
    struct clr_exec_collect *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->frame_buf = malloc(CLR_PROTO_MAX_PAYLOAD);
    assert_non_null(c->frame_buf);
    c->res = r;
    c->opts = o;
    c->err = err;
    clr_frame_reader_init(&c->frames, c->frame_buf);
    memset(r, 0, sizeof(*r));
    return c;
}

static void stream_collector_free(struct clr_exec_collect *c)
{
    free(c->frame_buf);
    clr_exec_result_clear(c->res);
    free(c);
}

static void test_collect_engine_error_line(void **state)
{
    (void)state;
    const uint8_t *line = (const uint8_t *)DOCKER_LINE;
    size_t len = strlen(DOCKER_LINE);
    /* Whole, and in every slicing the engine's stream may cut it into. */
    size_t steps[] = {len, 1, 5, 11, 12, 13, 64};
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
        clr_exec_result r;
        clr_error err = CLR_ERROR_INIT;
        struct clr_exec_collect *c = stream_collector(&r, &o, &err);
        int rc = 0;
        for (size_t i = 0; i < len && rc == 0; i += steps[k]) {
            size_t n = len - i < steps[k] ? len - i : steps[k];
            rc = clr_exec_collect_stream(c, 1, line + i, n);
        }
        /* Done (the line is whole), with no protocol error, and said as the engine's. */
        assert_int_equal(rc, -1);
        assert_int_equal(err.code, CLR_E_NONE);
        assert_true(c->engine_line);
        assert_int_equal(clr_exec_collect_end(c), 0);
        clr_exec_result_engine(&r, c->head, c->head_len);
        assert_int_equal(r.status, CLR_EXEC_START_FAILED);
        assert_false(r.sandbox_killed);
        assert_non_null(strstr(r.message, "the engine could not start"));
        assert_non_null(strstr(r.message, "exit status 128: unknown"));
        assert_null(strchr(r.message, '\r'));
        stream_collector_free(c);
    }
    /* Shorter than a frame header: the reader never refused it; the stream's end decides. */
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    struct clr_exec_collect *c = stream_collector(&r, &o, &err);
    assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)"EOF\r\n", 5), 0);
    assert_false(c->engine_line);
    assert_int_equal(clr_exec_collect_end(c), 0);
    assert_true(c->engine_line);
    stream_collector_free(c);
}

/* What is not the engine's line stays a protocol error of the agent's (the sandbox is killed). */
static void test_collect_not_engine_text(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "OCI runtime exec failed\r\nmore after the line",   /* bytes after the line's end */
        "OCI runtime exec failed: \x01 not text at all\r\n", /* a control byte */
    };
    for (size_t k = 0; k < 2; k++) {
        clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
        clr_exec_result r;
        clr_error err = CLR_ERROR_INIT;
        struct clr_exec_collect *c = stream_collector(&r, &o, &err);
        assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)bad[k], strlen(bad[k])),
                         -1);
        assert_int_equal(err.errnum, EPROTO);
        assert_non_null(strstr(err.message, "malformed frame"));
        assert_false(c->engine_line);
        stream_collector_free(c);
    }
    /* Text that never ends its line before the stream does. */
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    clr_exec_result r;
    clr_error err = CLR_ERROR_INIT;
    struct clr_exec_collect *c = stream_collector(&r, &o, &err);
    assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)"OCI runtime exec fa", 19), 0);
    assert_true(c->engine_text);
    assert_int_equal(clr_exec_collect_end(c), -1);
    assert_int_equal(err.errnum, EPROTO);
    stream_collector_free(c);
    /* A line too long to be the engine's. */
    err = (clr_error)CLR_ERROR_INIT;
    c = stream_collector(&r, &o, &err);
    static char long_line[CLR_EXEC_ENGINE_TEXT_MAX + 16];
    memset(long_line, 'x', sizeof(long_line));
    long_line[sizeof(long_line) - 2] = '\r';
    long_line[sizeof(long_line) - 1] = '\n';
    assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)long_line, 100), 0);
    assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)long_line + 100,
                                             sizeof(long_line) - 100),
                     -1);
    assert_int_equal(err.errnum, EPROTO);
    assert_false(c->engine_line);
    stream_collector_free(c);
    /* Text after a whole frame: the agent's stream broke, whatever it looks like. */
    err = (clr_error)CLR_ERROR_INIT;
    c = stream_collector(&r, &o, &err);
    uint8_t hdr[CLR_PROTO_HEADER_SIZE + 2];
    clr_frame_header(hdr, 1, CLR_FRAME_STDOUT, 2);
    memcpy(hdr + CLR_PROTO_HEADER_SIZE, "ok", 2);
    assert_int_equal(clr_exec_collect_stream(c, 1, hdr, sizeof(hdr)), 0);
    const char *line = DOCKER_LINE;
    assert_int_equal(clr_exec_collect_stream(c, 1, (const uint8_t *)line, strlen(line)), -1);
    assert_int_equal(err.errnum, EPROTO);
    assert_false(c->engine_line);
    assert_int_equal(clr_exec_collect_end(c), 0);
    stream_collector_free(c);
}

/* ---- the backstop's arithmetic ---------------------------------------------------------- */

static void test_deadlines(void **state)
{
    (void)state;
    clr_exec_options o = CLR_EXEC_OPTIONS_INIT;
    o.limits.timeout_ms = 30000;
    o.grace_ms = 5000;
    assert_int_equal(clr_exec_deadline(&o, 1000), 36000);
    o.background = true;
    assert_int_equal(clr_exec_deadline(&o, 1000), CLR_EXEC_FOREVER);
    /* a kill brings the deadline down to now + grace, never up */
    assert_int_equal(clr_exec_cancel_deadline(36000, 2000, 5000), 7000);
    assert_int_equal(clr_exec_cancel_deadline(36000, 33000, 5000), 36000);
    assert_int_equal(clr_exec_cancel_deadline(CLR_EXEC_FOREVER, 2000, 5000), 7000);
    /* waits are sliced to a second at most, and end at the deadline */
    assert_int_equal(clr_exec_wait_slice(36000, 1000), 1000);
    assert_int_equal(clr_exec_wait_slice(36000, 35800), 200);
    assert_int_equal(clr_exec_wait_slice(36000, 36000), 0);
    assert_int_equal(clr_exec_wait_slice(36000, 40000), 0);
    assert_int_equal(clr_exec_wait_slice(CLR_EXEC_FOREVER, 1000), 1000);
}

/* ---- the result when the agent's never came --------------------------------------------- */

static void test_cut_result(void **state)
{
    (void)state;
    clr_exec_limits lim = CLR_EXEC_LIMITS_INIT;
    lim.stdout_cap = 4;
    lim.stderr_cap = 100;
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(clr_buffer_append_capped(&r.out, (const uint8_t *)"abcdef", 6, 4), 4);
    assert_int_equal(clr_buffer_append_capped(&r.err, (const uint8_t *)"e", 1, 100), 1);
    clr_exec_result_cut(&r, &lim, 1000, 3500);
    assert_int_equal(r.stdout_bytes, 4);
    assert_true(r.stdout_truncated); /* at the cap: there may have been more */
    assert_int_equal(r.stderr_bytes, 1);
    assert_false(r.stderr_truncated);
    assert_int_equal(r.wall_us, 2500000);
    clr_exec_result_clear(&r);
    /* nothing at all: not truncated, even with a cap of 0 */
    lim.stdout_cap = 0;
    clr_exec_result_cut(&r, &lim, 10, 10);
    assert_false(r.stdout_truncated);
    assert_int_equal(r.wall_us, 0);
}

static void test_backstop_and_protocol_results(void **state)
{
    (void)state;
    clr_exec_result r;
    memset(&r, 0, sizeof(r));
    clr_exec_result_backstop(&r, true, "");
    assert_int_equal(r.status, CLR_EXEC_TIMED_OUT);
    assert_true(r.sandbox_killed);
    assert_non_null(strstr(r.message, "the sandbox was killed"));
    clr_exec_result_backstop(&r, false, "engine said 500");
    assert_false(r.sandbox_killed); /* never claims a kill that did not happen */
    assert_non_null(strstr(r.message, "killing the sandbox failed: engine said 500"));
    clr_exec_result_protocol(&r, "agent sent data after its result", true, "");
    assert_int_equal(r.status, CLR_EXEC_SANDBOX_FAILED);
    assert_true(r.sandbox_killed);
    assert_string_equal(r.message, "protocol error from the sandbox's agent (agent sent data "
                                   "after its result); the sandbox was killed");
    clr_exec_result_protocol(&r, "bad frame", false, "no engine");
    assert_false(r.sandbox_killed);
    assert_non_null(strstr(r.message, "(bad frame); killing the sandbox failed: no engine"));
}

static void test_diagnose(void **state)
{
    (void)state;
    clr_exec_result r;
    uint64_t oom_by = 0;
    const uint64_t stop_by = 10000;
    /* OOM-killed: decided at once */
    memset(&r, 0, sizeof(r));
    struct clr_exec_seen oom = {.answer = CLR_EXEC_SEEN_OK, .oom_killed = true, .stopped = true};
    assert_int_equal(clr_exec_diagnose_step(&r, &oom, 0, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_OOM);
    assert_true(r.sandbox_killed);
    assert_non_null(strstr(r.message, "ran out of memory"));
    /* removed */
    memset(&r, 0, sizeof(r));
    struct clr_exec_seen gone = {.answer = CLR_EXEC_SEEN_GONE};
    assert_int_equal(clr_exec_diagnose_step(&r, &gone, 0, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_SANDBOX_FAILED);
    assert_false(r.sandbox_killed);
    assert_non_null(strstr(r.message, "removed while the command ran"));
    /* stopped without the OOM mark: looked at again for CLR_EXEC_DIAGNOSE_OOM_MS */
    memset(&r, 0, sizeof(r));
    oom_by = 0;
    struct clr_exec_seen stopped = {.answer = CLR_EXEC_SEEN_OK, .stopped = true, .exit_code = 137};
    assert_int_equal(clr_exec_diagnose_step(&r, &stopped, 100, stop_by, &oom_by), 0);
    assert_int_equal(oom_by, 100 + CLR_EXEC_DIAGNOSE_OOM_MS);
    assert_int_equal(clr_exec_diagnose_step(&r, &stopped, 600, stop_by, &oom_by), 0);
    assert_int_equal(oom_by, 100 + CLR_EXEC_DIAGNOSE_OOM_MS); /* not moved by later looks */
    /* ... and the mark may still come: then it is an OOM */
    assert_int_equal(clr_exec_diagnose_step(&r, &oom, 700, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_OOM);
    memset(&r, 0, sizeof(r));
    oom_by = 0;
    assert_int_equal(clr_exec_diagnose_step(&r, &stopped, 100, stop_by, &oom_by), 0);
    assert_int_equal(clr_exec_diagnose_step(&r, &stopped, 1100, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_SANDBOX_FAILED);
    assert_non_null(strstr(r.message, "runtime died"));
    assert_non_null(strstr(r.message, "exit code 137"));
    /* still running: looked at until stop_by, then the agent is what ended */
    memset(&r, 0, sizeof(r));
    oom_by = 0;
    struct clr_exec_seen running = {.answer = CLR_EXEC_SEEN_OK};
    assert_int_equal(clr_exec_diagnose_step(&r, &running, 9999, stop_by, &oom_by), 0);
    assert_int_equal(clr_exec_diagnose_step(&r, &running, 10000, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_SANDBOX_FAILED);
    assert_string_equal(r.message, "the agent ended without a result");
    /* the engine did not answer: no waiting on it */
    memset(&r, 0, sizeof(r));
    struct clr_exec_seen down = {.answer = CLR_EXEC_SEEN_NO_ANSWER, .stopped = true, .oom_killed = true};
    assert_int_equal(clr_exec_diagnose_step(&r, &down, 0, stop_by, &oom_by), 1);
    assert_int_equal(r.status, CLR_EXEC_SANDBOX_FAILED); /* an unanswered OOM mark is not one */
    assert_string_equal(r.message, "the agent ended without a result");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_argv),
        cmocka_unit_test(test_request_shell_cwd_background_runc),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_check_options),
        cmocka_unit_test(test_collect_output_caps_and_result),
        cmocka_unit_test(test_collect_stream_output),
        cmocka_unit_test(test_collect_refuses),
        cmocka_unit_test(test_collect_stream),
        cmocka_unit_test(test_collect_engine_error_line),
        cmocka_unit_test(test_collect_not_engine_text),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_cut_result),
        cmocka_unit_test(test_backstop_and_protocol_results),
        cmocka_unit_test(test_diagnose),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
