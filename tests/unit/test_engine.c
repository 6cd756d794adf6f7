/* The engine interface and the Docker engine behind it: each operation must become exactly the
 * Docker Engine API request that does it, and each of the engine's answers the result and error
 * code the service relies on. The "engine" here is a scripted HTTP responder on a unix socket in
 * this process: it records every request and answers what the test says. The real dockerd is
 * exercised by the integration suites; this test pins down the translation. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/engine.h"
#include "fake_engine.h"

static void test_open_negotiates_and_refuses(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    char desc[256];
    clr_engine_describe(eng, desc, sizeof(desc));
    assert_non_null(strstr(desc, "docker at "));
    assert_non_null(strstr(desc, "API v1.41"));
    assert_string_equal(fake_last_request(f), "GET /version");
    clr_engine_free(eng);

    /* An engine newer than clearing knows is spoken to at the newest version clearing knows. */
    fake_answer(f, "GET /version", 200, "{\"ApiVersion\":\"1.45\"}");
    eng = fake_open(f);
    clr_engine_describe(eng, desc, sizeof(desc));
    assert_non_null(strstr(desc, "API v1.43"));
    clr_engine_free(eng);

    /* Too old: refused, with the version in the message. */
    fake_answer(f, "GET /version", 200, "{\"ApiVersion\":\"1.40\"}");
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = f->sock;
    clr_error err = CLR_ERROR_INIT;
    eng = NULL;
    assert_int_equal(clr_engine_open(&eng, &o, &err), -1);
    assert_null(eng);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "1.40"));

    /* An engine clearing does not have. */
    o.kind = "podman";
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_engine_open(&eng, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "podman"));
}

static void test_container_lifecycle_requests(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;

    fake_answer(f, "POST /v1.41/containers/create?name=clearing-sb-0123456789abcdef", 201,
           "{\"Id\":\"c0ffee\",\"Warnings\":[]}");
    json_t *spec = json_pack("{s:s}", "Image", "clearing/default");
    char id[80] = "";
    assert_int_equal(clr_engine_container_create(eng, "clearing-sb-0123456789abcdef", spec, id,
                                                 sizeof(id), &err),
                     0);
    json_decref(spec);
    assert_string_equal(id, "c0ffee");
    assert_string_equal(fake_last_request(f),
                        "POST /v1.41/containers/create?name=clearing-sb-0123456789abcdef");
    json_t *sent = fake_body_of(f, "POST /v1.41/containers/create?name=clearing-sb-0123456789abcdef");
    assert_string_equal(json_string_value(json_object_get(sent, "Image")), "clearing/default");
    json_decref(sent);

    /* Started, and already running (304), are both a start. */
    fake_answer(f, "POST /v1.41/containers/c0ffee/start", 204, NULL);
    assert_int_equal(clr_engine_container_start(eng, "c0ffee", &err), 0);
    fake_answer(f, "POST /v1.41/containers/c0ffee/start", 304, NULL);
    assert_int_equal(clr_engine_container_start(eng, "c0ffee", &err), 0);
    assert_int_equal(fake_count(f, "POST /v1.41/containers/c0ffee/start"), 2);

    fake_answer(f, "POST /v1.41/containers/c0ffee/kill", 204, NULL);
    assert_int_equal(clr_engine_container_kill(eng, "c0ffee", "KILL", &err), 0);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/kill?signal=KILL");

    fake_answer(f, "POST /v1.41/containers/c0ffee/pause", 204, NULL);
    fake_answer(f, "POST /v1.41/containers/c0ffee/unpause", 204, NULL);
    assert_int_equal(clr_engine_container_pause(eng, "c0ffee", true, &err), 0);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/pause");
    assert_int_equal(clr_engine_container_pause(eng, "c0ffee", false, &err), 0);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/unpause");

    fake_answer(f, "GET /v1.41/containers/c0ffee/json", 200,
           "{\"Id\":\"c0ffee\",\"State\":{\"Running\":true,\"OOMKilled\":false}}");
    json_t *j = NULL;
    assert_int_equal(clr_engine_container_inspect(eng, "c0ffee", &j, &err), 0);
    assert_true(json_is_true(json_object_get(json_object_get(j, "State"), "Running")));
    json_decref(j);

    /* Removal kills and takes the anonymous volumes; a container already gone is removed. */
    fake_answer(f, "DELETE /v1.41/containers/c0ffee", 204, NULL);
    assert_int_equal(clr_engine_container_remove(eng, "c0ffee", &err), 0);
    assert_string_equal(fake_last_request(f), "DELETE /v1.41/containers/c0ffee?force=1&v=1");
    fake_answer(f, "DELETE /v1.41/containers/c0ffee", 404, "{\"message\":\"No such container\"}");
    assert_int_equal(clr_engine_container_remove(eng, "c0ffee", &err), 0);
    clr_engine_free(eng);
}

static void test_errors_carry_their_codes(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);

    clr_error err = CLR_ERROR_INIT;
    fake_answer(f, "GET /v1.41/containers/gone/json", 404, "{\"message\":\"No such container: gone\"}");
    json_t *j = NULL;
    assert_int_equal(clr_engine_container_inspect(eng, "gone", &j, &err), -1);
    assert_null(j);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "No such container: gone"));

    err = (clr_error)CLR_ERROR_INIT;
    fake_answer(f, "POST /v1.41/containers/stopped/kill", 409,
           "{\"message\":\"Container stopped is not running\"}");
    assert_int_equal(clr_engine_container_kill(eng, "stopped", "KILL", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);

    err = (clr_error)CLR_ERROR_INIT;
    fake_answer(f, "DELETE /v1.41/containers/busy", 500, "{\"message\":\"device or resource busy\"}");
    assert_int_equal(clr_engine_container_remove(eng, "busy", &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_non_null(strstr(err.message, "device or resource busy"));

    /* Created, but no usable id in the answer: an error, and the container is removed by its
     * name so nothing is left behind. */
    err = (clr_error)CLR_ERROR_INIT;
    fake_answer(f, "POST /v1.41/containers/create?name=clearing-sb-1111111111111111", 201,
                "{\"Warnings\":[]}");
    fake_answer(f, "DELETE /v1.41/containers/clearing-sb-1111111111111111", 204, NULL);
    char cid[80] = "";
    json_t *spec = json_object();
    assert_int_equal(clr_engine_container_create(eng, "clearing-sb-1111111111111111", spec, cid,
                                                 sizeof(cid), &err),
                     -1);
    json_decref(spec);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_string_equal(fake_last_request(f),
                        "DELETE /v1.41/containers/clearing-sb-1111111111111111?force=1&v=1");

    /* A status that is not the operation's success is not taken for one. */
    err = (clr_error)CLR_ERROR_INIT;
    fake_answer(f, "POST /v1.41/containers/odd/start", 200, "{}");
    assert_int_equal(clr_engine_container_start(eng, "odd", &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_non_null(strstr(err.message, "200"));

    /* Hostile ids never reach the engine: a request line cannot be changed through them. */
    size_t before = fake_count(f, "");
    const char *hostile[] = {"a b", "x?force=1", "../../info", "id\r\nHost: evil", "", "a/b",
                             "%2e%2e"};
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_engine_container_remove(eng, hostile[i], &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
        err = (clr_error)CLR_ERROR_INIT;
        assert_int_equal(clr_engine_container_kill(eng, "ok", hostile[i], &err), -1);
        assert_int_equal(err.code, CLR_E_INVALID);
    }
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_engine_image_inspect(eng, "img?x=1", &j, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fake_count(f, ""), before);
    clr_engine_free(eng);
}

static void test_list_by_label_and_image(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;

    fake_answer(f, "GET /v1.41/containers/json", 200, "[{\"Id\":\"a\"},{\"Id\":\"b\"}]");
    json_t *list = NULL;
    assert_int_equal(clr_engine_container_list(eng, "io.clearing.managed-by=clearing", &list, &err),
                     0);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    /* The filter is {"label":["io.clearing.managed-by=clearing"]}, percent-encoded. */
    assert_string_equal(fake_last_request(f),
                        "GET /v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22io."
                        "clearing.managed-by%3Dclearing%22%5D%7D");

    /* An answer that is not a list is an engine error, not an empty list. */
    fake_answer(f, "GET /v1.41/containers/json", 200, "{\"oops\":1}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_engine_container_list(eng, "k", &list, &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);

    fake_answer(f, "GET /v1.41/images/clearing/default:latest/json", 200,
           "{\"Id\":\"sha256:abc\",\"Config\":{}}");
    json_t *img = NULL;
    assert_int_equal(clr_engine_image_inspect(eng, "clearing/default:latest", &img, &err), 0);
    assert_string_equal(json_string_value(json_object_get(img, "Id")), "sha256:abc");
    json_decref(img);
    fake_answer(f, "GET /v1.41/images/nope/json", 404, "{\"message\":\"No such image: nope\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_engine_image_inspect(eng, "nope", &img, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    clr_engine_free(eng);
}

static void test_runtime_and_ping(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;
    fake_answer(f, "GET /v1.41/info", 200,
           "{\"Runtimes\":{\"runc\":{\"path\":\"runc\"},\"runsc\":{\"path\":\"/usr/bin/runsc\"}}}");
    bool have = false;
    assert_int_equal(clr_engine_has_runtime(eng, "runsc", &have, &err), 0);
    assert_true(have);
    assert_int_equal(clr_engine_has_runtime(eng, "kata", &have, &err), 0);
    assert_false(have);
    char path[128];
    assert_int_equal(clr_engine_runtime_path(eng, "runsc", path, sizeof(path), &err), 0);
    assert_string_equal(path, "/usr/bin/runsc");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_engine_runtime_path(eng, "kata", path, sizeof(path), &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    /* /info is asked once per handle. */
    assert_int_equal(fake_count(f, "GET /v1.41/info"), 1);

    fake_answer(f, "GET /v1.41/_ping", 200, "OK");
    assert_int_equal(clr_engine_ping(eng, &err), 0);
    assert_string_equal(fake_last_request(f), "GET /v1.41/_ping");
    clr_engine_free(eng);
}

static void test_exec_and_attach_streams(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;
    fake_answer(f, "POST /v1.41/containers/c0ffee/exec", 201, "{\"Id\":\"e1\"}");
    fake_answer(f, "POST /v1.41/exec/e1/start", 101, NULL);
    const char *argv[] = {"/.clearing/agent", "exec", NULL};
    clr_engine_exec_spec spec = {.argv = argv, .user = "0:0", .workdir = "/"};
    clr_engine_stream *s = NULL;
    assert_int_equal(clr_engine_exec(&s, eng, "c0ffee", &spec, &err), 0);
    assert_non_null(s);
    /* The exec's description: the command, as root, attached, no tty. */
    json_t *body = fake_body_of(f, "POST /v1.41/containers/c0ffee/exec");
    assert_non_null(body);
    assert_string_equal(json_string_value(json_array_get(json_object_get(body, "Cmd"), 1)), "exec");
    assert_string_equal(json_string_value(json_object_get(body, "User")), "0:0");
    assert_true(json_is_true(json_object_get(body, "AttachStdin")));
    assert_true(json_is_false(json_object_get(body, "Tty")));
    json_decref(body);
    /* Bytes go both ways once upgraded (the fake echoes them). */
    assert_int_equal(clr_engine_stream_write(s, "ping", 4, &err), 0);
    char buf[16] = "";
    size_t got = 0;
    while (got < 4) {
        ssize_t r = clr_engine_stream_read(s, buf + got, sizeof(buf) - 1 - got, 30000, &err);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_memory_equal(buf, "ping", 4);
    clr_engine_stream_free(s);

    fake_answer(f, "POST /v1.41/containers/c0ffee/attach", 101, NULL);
    s = NULL;
    assert_int_equal(clr_engine_container_attach(&s, eng, "c0ffee", &err), 0);
    assert_string_equal(fake_last_request(f),
                        "POST /v1.41/containers/c0ffee/attach?stream=1&stdin=1&stdout=1&stderr=1");
    clr_engine_stream_free(s);

    /* An exec in a container that is not running is a conflict, and no stream is made. */
    fake_answer(f, "POST /v1.41/containers/down/exec", 409, "{\"message\":\"is not running\"}");
    err = (clr_error)CLR_ERROR_INIT;
    s = NULL;
    assert_int_equal(clr_engine_exec(&s, eng, "down", &spec, &err), -1);
    assert_null(s);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    clr_engine_free(eng);
}

/* The scripted engine answers and records every request, however many: 300 here, past the 32
 * its log first has room for, each answered as scripted and each recorded with its body. */
static void test_fake_answers_every_request(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    fake_answer(f, "POST /v1.41/containers/c0ffee/kill", 204, NULL);
    clr_error err = CLR_ERROR_INIT;
    for (int i = 0; i < 300; i++) {
        if (clr_engine_container_kill(eng, "c0ffee", i % 2 ? "KILL" : "TERM", &err) != 0)
            fail_msg("request %d: %s", i, err.message);
    }
    assert_int_equal(fake_count(f, "POST /v1.41/containers/c0ffee/kill"), 300);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/kill?signal=KILL");
    /* An unscripted request after them is still told so, and recorded. */
    assert_int_equal(clr_engine_container_start(eng, "c0ffee", &err), -1);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/start");
    assert_int_equal(fake_count(f, "POST "), 301);
    clr_engine_free(eng);
}

/* The scripted engine's teardown ends the connections it still serves before it frees what they
 * use. A connection whose request was half-sent when its test ended (a late client of another
 * thread) was served on by a detached thread that logged the rest of it into the freed request
 * log: the heap-use-after-free ASan once reported in log_request. Now the teardown shuts the
 * connection and joins its thread: the rest of the request, sent after it, gets no answer. */
static void test_fake_teardown_ends_its_connections(void **state)
{
    (void)state;
    void *p = NULL;
    assert_int_equal(fake_setup(&p), 0);
    struct fake *f = p;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    /* Bounds a hang (the freed lock of the old teardown); never what the test decides on. */
    struct timeval tv = {.tv_sec = 60};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    /* The control: the connection is served, its request answered and logged. */
    static const char first[] = "GET /version HTTP/1.1\r\nHost: docker\r\n\r\n";
    assert_int_equal(send(fd, first, strlen(first), MSG_NOSIGNAL), (ssize_t)strlen(first));
    char buf[512] = "";
    size_t have = 0;
    while (!strstr(buf, "1.41") && have < sizeof(buf) - 1) {
        ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0)
            fail_msg("no answer to the first request: %s", r < 0 ? strerror(errno) : "EOF");
        have += (size_t)r;
        buf[have] = '\0';
    }
    assert_int_equal(fake_count(f, "GET /version"), 1);
    /* Half of the next request: its thread waits for the rest. */
    static const char head[] = "POST /v1.41/containers/late/kill HTTP/1.1\r\n";
    assert_int_equal(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
    assert_int_equal(fake_teardown(&p), 0);
    /* The rest after the teardown: nothing reads it (EPIPE), nothing answers (end of stream,
     * or a reset), where the old teardown's thread answered from freed memory. */
    static const char rest[] = "Host: docker\r\nContent-Length: 0\r\n\r\n";
    ssize_t w = send(fd, rest, strlen(rest), MSG_NOSIGNAL);
    (void)w;
    ssize_t r = read(fd, buf, sizeof(buf) - 1);
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        fail_msg("the torn-down engine answered: %zd %s", r,
                 r < 0 ? strerror(errno) : "bytes");
    close(fd);
}

/* Checkpoints (issue #22): each operation is the request Docker documents, the support check
 * names what to enable, and a bad name never reaches the request line. */
static void test_checkpoint_requests(void **state)
{
    struct fake *f = *state;
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;
    char why[512] = "";
    bool ok = true;

    /* Positive control first: experimental mode and runsc known -> supported. */
    fake_answer(f, "GET /v1.41/info", 200,
                "{\"ExperimentalBuild\":true,\"DockerRootDir\":\"/var/lib/docker\","
                "\"Runtimes\":{\"runsc\":{\"path\":\"/usr/bin/runsc\"}}}");
    assert_int_equal(clr_engine_checkpoint_supported(eng, "runsc", &ok, why, sizeof(why), &err), 0);
    assert_true(ok);
    /* runc is not checkpointed here. */
    assert_int_equal(clr_engine_checkpoint_supported(eng, "runc", &ok, why, sizeof(why), &err), 0);
    assert_false(ok);
    assert_non_null(strstr(why, "runsc"));
    /* Without experimental mode: the answer says what to set. */
    fake_answer(f, "GET /v1.41/info", 200,
                "{\"ExperimentalBuild\":false,\"Runtimes\":{\"runsc\":{}}}");
    assert_int_equal(clr_engine_checkpoint_supported(eng, "runsc", &ok, why, sizeof(why), &err), 0);
    assert_false(ok);
    assert_non_null(strstr(why, "\"experimental\": true"));

    fake_answer(f, "POST /v1.41/containers/c0ffee/checkpoints", 201, NULL);
    assert_int_equal(clr_engine_checkpoint_create(eng, "c0ffee", "snap1", &err), 0);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/checkpoints");
    json_t *body = fake_body_of(f, "POST /v1.41/containers/c0ffee/checkpoints");
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "CheckpointID")), "snap1");
    assert_true(json_is_false(json_object_get(body, "Exit")));
    json_decref(body);

    fake_answer(f, "GET /v1.41/info", 200, "{\"DockerRootDir\":\"/var/lib/docker\"}");
    fake_answer(f, "GET /v1.41/containers/c0ffee/json", 200, "{\"Id\":\"c0ffee0123\"}");
    char dir[512];
    assert_int_equal(clr_engine_checkpoint_dir(eng, "c0ffee", "snap1", dir, sizeof(dir), &err), 0);
    assert_string_equal(dir, "/var/lib/docker/containers/c0ffee0123/checkpoints/snap1");

    fake_answer(f, "POST /v1.41/containers/c0ffee/start?checkpoint=snap1", 204, NULL);
    assert_int_equal(clr_engine_container_start_checkpoint(eng, "c0ffee", "snap1", &err), 0);
    assert_string_equal(fake_last_request(f), "POST /v1.41/containers/c0ffee/start?checkpoint=snap1");

    fake_answer(f, "DELETE /v1.41/containers/c0ffee/checkpoints/snap1", 204, NULL);
    assert_int_equal(clr_engine_checkpoint_delete(eng, "c0ffee", "snap1", &err), 0);
    assert_string_equal(fake_last_request(f), "DELETE /v1.41/containers/c0ffee/checkpoints/snap1");
    /* Already gone is not an error; another refusal is. */
    fake_answer(f, "DELETE /v1.41/containers/c0ffee/checkpoints/snap1", 404,
                "{\"message\":\"no such checkpoint\"}");
    assert_int_equal(clr_engine_checkpoint_delete(eng, "c0ffee", "snap1", &err), 0);
    fake_answer(f, "POST /v1.41/containers/c0ffee/checkpoints", 409,
                "{\"message\":\"container is not running\"}");
    assert_int_equal(clr_engine_checkpoint_create(eng, "c0ffee", "snap1", &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);

    /* A hostile name never reaches the request line. */
    size_t before = fake_count(f, "POST");
    assert_int_equal(clr_engine_checkpoint_create(eng, "c0ffee", "a/../b", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_engine_container_start_checkpoint(eng, "c0ffee", "x?y", &err), -1);
    assert_int_equal(fake_count(f, "POST"), before);
    clr_engine_free(eng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_negotiates_and_refuses, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_container_lifecycle_requests, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_errors_carry_their_codes, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_list_by_label_and_image, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_runtime_and_ping, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_exec_and_attach_streams, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_fake_answers_every_request, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_requests, fake_setup, fake_teardown),
        cmocka_unit_test(test_fake_teardown_ends_its_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
