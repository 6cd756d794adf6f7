/* Socket activation (src/activation.c): the socket systemd passes as fd 3 is taken only when
 * LISTEN_PID names this process, and only when it is one listening unix stream socket bound to
 * the configured path; anything else is an error that says what to change. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "activation.h"

static char dir[64];
static char path[80];
static int saved3 = -1; /* whatever held fd 3 before the test */

/* A unix stream socket bound to p (listening if asked), moved to fd 3. */
static void socket_on_fd3(const char *p, int type, bool listening)
{
    int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", p);
    unlink(p);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    if (listening)
        assert_int_equal(listen(s, 4), 0);
    if (s != 3) {
        assert_int_equal(dup2(s, 3), 3);
        close(s);
    }
    /* Without close-on-exec, as systemd's exec leaves it. */
    assert_int_equal(fcntl(3, F_SETFD, 0), 0);
}

static void activate(const char *fds)
{
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", fds, 1);
    setenv("LISTEN_FDNAMES", "clearing.socket", 1);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/clr-activation-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%.60s/clearing.sock", dir);
    saved3 = fcntl(3, F_DUPFD_CLOEXEC, 10);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (saved3 >= 0) {
        dup2(saved3, 3);
        close(saved3);
    } else {
        close(3);
    }
    unlink(path);
    rmdir(dir);
    return 0;
}

static void test_activation_none_without_variables(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(activation_listen_fd(path, &err), ACTIVATION_NONE);
}

static void test_activation_none_for_another_process(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_STREAM, true);
    activate("1");
    char other[32];
    snprintf(other, sizeof(other), "%ld", (long)getppid());
    setenv("LISTEN_PID", other, 1);
    assert_int_equal(activation_listen_fd(path, &err), ACTIVATION_NONE);
    /* Not ours: left for whoever they were meant for. */
    assert_non_null(getenv("LISTEN_FDS"));
}

static void test_activation_takes_the_socket(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_STREAM, true);
    assert_int_equal(fcntl(3, F_GETFD) & FD_CLOEXEC, 0);
    activate("1");
    assert_int_equal(activation_listen_fd(path, &err), 3);
    assert_int_equal(fcntl(3, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_null(getenv("LISTEN_PID"));
    assert_null(getenv("LISTEN_FDS"));
    assert_null(getenv("LISTEN_FDNAMES"));
    /* It is the listening socket: a client connects through the path. */
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", path);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    close(c);
}

static void test_activation_refuses_another_path(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_STREAM, true);
    activate("1");
    assert_int_equal(activation_listen_fd("/run/clearing/clearing.sock", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "ListenStream="));
}

static void test_activation_refuses_a_socket_not_listening(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_STREAM, false);
    activate("1");
    assert_int_equal(activation_listen_fd(path, &err), -1);
    assert_non_null(strstr(err.message, "not listening"));
}

static void test_activation_refuses_a_datagram_socket(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_DGRAM, false);
    activate("1");
    assert_int_equal(activation_listen_fd(path, &err), -1);
    assert_non_null(strstr(err.message, "not a unix stream socket"));
}

static void test_activation_refuses_two_sockets(void **state)
{
    (void)state;
    clr_error err = CLR_ERROR_INIT;
    socket_on_fd3(path, SOCK_STREAM, true);
    activate("2");
    assert_int_equal(activation_listen_fd(path, &err), -1);
    assert_non_null(strstr(err.message, "passed 2 sockets"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_activation_none_without_variables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activation_none_for_another_process, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_activation_takes_the_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activation_refuses_another_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activation_refuses_a_socket_not_listening, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_activation_refuses_a_datagram_socket, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_activation_refuses_two_sockets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
