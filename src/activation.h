/* Socket activation: the listening unix socket handed over by systemd (clearing.socket). */
#pragma once

#include "clearing/common.h"

#define ACTIVATION_NONE (-2) /* not started by socket activation: bind the socket yourself */

/* When this process was started by socket activation (LISTEN_PID is its pid), checks that
 * exactly one socket was passed (fd 3), that it is a listening unix stream socket bound to
 * path, marks it close-on-exec and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (so no child
 * takes it for its own). Returns that fd, which the caller owns; ACTIVATION_NONE when the
 * process was not socket-activated; -1 with err naming the mismatch otherwise. */
int activation_listen_fd(const char *path, clr_error *err);
