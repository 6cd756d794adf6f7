/* The command line's client of `clearing serve`: HTTP over the daemon's unix socket. */
#ifndef CLR_CLIENT_H
#define CLR_CLIENT_H

#include "cli.h"

#define CLIENT_DEFAULT_SOCKET "/run/clearing/clearing.sock"

/* Calls the daemon. Returns the HTTP status, or -1 with err when it cannot be reached.
 * *resp gets the JSON answer (NULL if none); for statuses >= 400 err holds its error message. */
int client_call(const char *method, const char *path, json_t *body, json_t **resp,
                clr_error *err);

/* A streaming call: each NDJSON line of the answer is passed to on_line as it arrives. */
int client_stream(const char *method, const char *path, json_t *body,
                  void (*on_line)(void *ctx, json_t *line), void *ctx, clr_error *err);

/* A call whose answer is text (a diff); *text is the caller's to free. */
int client_text(const char *method, const char *path, char **text, clr_error *err);

/* Fills err from the daemon's error answer {"error": {"code", "message"}} (j may be NULL): its
 * code, so that the exit status follows it (cli_failure_status), and its message. */
void client_status_error(int status, json_t *j, clr_error *err);

/* The daemon's socket: --host, $CLEARING_HOST (unix:///path), or the default. */
const char *client_socket(void);

#endif
