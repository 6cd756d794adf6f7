/* Socket activation (sd_listen_fds(3)'s protocol, without libsystemd): with clearing.socket,
 * systemd binds /run/clearing/clearing.sock with the unit's owner, group and mode, and starts the
 * daemon at the first connection with the listening socket as fd 3. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"

#define LISTEN_FDS_START 3

int activation_listen_fd(const char *path, clr_error *err)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    /* The variables may have been inherited from a parent that was activated: they are ours only
     * when LISTEN_PID names this process. */
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
        return ACTIVATION_NONE;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (strcmp(fds, "1") != 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "socket activation passed %s sockets; the daemon takes exactly one, "
                             "its unix socket (ListenStream=%s in clearing.socket)",
                             fds, path);
    int fd = LISTEN_FDS_START;
    struct sockaddr_un a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    int type = 0, listening = 0;
    socklen_t ilen = sizeof(int);
    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0 || a.sun_family != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 || type != SOCK_STREAM)
        return clr_error_set(err, CLR_E_INVALID, errno,
                             "socket activation: fd 3 is not a unix stream socket (ListenStream= "
                             "in clearing.socket must be the path %s)",
                             path);
    ilen = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 || !listening)
        return clr_error_set(err, CLR_E_INVALID, errno,
                             "socket activation: the socket passed is not listening");
    /* The path the socket unit bound must be the one the configuration names: clients and
     * `clearing doctor` look there. */
    size_t plen = alen > offsetof(struct sockaddr_un, sun_path)
                      ? strnlen(a.sun_path, alen - offsetof(struct sockaddr_un, sun_path))
                      : 0;
    if (plen != strlen(path) || memcmp(a.sun_path, path, plen) != 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "socket activation passed a socket bound to '%.*s', but the "
                             "configured socket is %s: make ListenStream= in clearing.socket and "
                             "\"socket\" in the configuration the same path",
                             (int)plen, a.sun_path, path);
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "socket activation: fcntl: %s",
                             strerror(errno));
    return fd;
}
