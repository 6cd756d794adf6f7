/* A short helper program run to completion with a deadline: `runsc --version` for a verdict and
 * `clearing version`, `systemctl is-active` and `clearing serve --check-config` for `clearing
 * doctor`. Not for sandboxes or anything long-running. */
#ifndef CLEARING_SPAWN_H
#define CLEARING_SPAWN_H

#include "common.h"

/* Runs argv (NULL-terminated; argv[0] looked up in PATH) with stdin from /dev/null, its stdout
 * (and its stderr when with_stderr, else /dev/null) into out: NUL-terminated, cut at len - 1
 * bytes (the rest is read and dropped). After timeout_ms the program is killed (SIGKILL).
 * *status: its exit status, or 128+N when signal N ended it (137 when killed at the deadline).
 * Returns 0, or -1 with err (CLR_E_NOT_FOUND) when it could not be started at all. */
CLR_PUBLIC int clr_spawn_capture(char *const argv[], bool with_stderr, int timeout_ms, char *out,
                                 size_t len, int *status, clr_error *err);

#endif
