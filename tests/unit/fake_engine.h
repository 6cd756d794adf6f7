/* A scripted Docker engine for unit tests: an HTTP responder on a unix socket in the test's own
 * process. It records every request ("METHOD path" and its body) and answers what the test
 * scripted for the request's prefix (500 "not scripted" otherwise); a 101 answer turns the
 * connection into an echo stream, as an upgraded exec or attach would carry bytes. It answers
 * GET /version with API 1.41 unless told otherwise. Not a stand-in for dockerd in anything but
 * unit tests of the code that talks to it: the integration suites use the real engine. */
#ifndef CLEARING_TEST_FAKE_ENGINE_H
#define CLEARING_TEST_FAKE_ENGINE_H

#include <pthread.h>
#include <stddef.h>

#include "clearing/engine.h"

/* The first room of the request log; it grows as requests come, without bound. */
#define FAKE_MAX_REQUESTS 32

struct fake_answer {
    const char *match; /* a request whose "METHOD path" starts with this gets this answer */
    int status;
    const char *body;
    int left; /* answers still to give: -1 for ever (fake_answer), 0 used up (fake_answer_n) */
    size_t len; /* the body's length when it is bytes (fake_answer_bytes); 0: a string */
};

struct fake_conn;

struct fake {
    char dir[64], sock[108];
    int lfd;
    pthread_t thread;
    /* Every connection's thread, joined by the teardown before it frees what they use (under
     * lock; those that ended are joined by the accept loop as it goes). */
    struct fake_conn *conns;
    pthread_mutex_t lock;
    struct fake_answer answers[256];
    size_t n_answers;
    char **requests; /* "METHOD path" of each request, oldest first */
    char **bodies;   /* their bodies ("" for none) */
    size_t n_requests;
    size_t cap_requests; /* room in requests and bodies */
};

/* cmocka setup/teardown: *state becomes a running struct fake. The teardown ends every
 * connection still open (its thread joined) before it frees the fake. */
int fake_setup(void **state);
int fake_teardown(void **state);
/* Scripts the answer to requests starting with match (newest first). */
void fake_answer(struct fake *f, const char *match, int status, const char *body);
/* The same, for the next n such requests only; after them, the older script answers. */
void fake_answer_n(struct fake *f, const char *match, int status, const char *body, int n);
/* The newest request ("METHOD path"), and how many started with prefix. */
const char *fake_last_request(struct fake *f);
size_t fake_count(struct fake *f, const char *prefix);
/* The body of the newest request that was exactly "METHOD path", as JSON (NULL if none). */
json_t *fake_body_of(struct fake *f, const char *request);
/* A clr_engine ("docker") connected to f; fails the test if it cannot open. */
clr_engine *fake_open(struct fake *f);
/* As fake_answer, with a body of len bytes that may hold NULs (an engine's multiplexed stream
 * after a 200 to an exec start: the client takes what follows the headers as the stream's start).
 * The connection then stays open, silent, as the agent's end: it reads the host's frames until
 * the host hangs up, and answers a KILL frame as the agent does, with a RESULT (killed by signal
 * 9) and the end of the stream. body must outlive f. */
void fake_answer_bytes(struct fake *f, const char *match, int status, const void *body,
                       size_t len);

#endif
