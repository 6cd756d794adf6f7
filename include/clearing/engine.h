/* The container engine: what clearing needs from whatever runs its gVisor containers, as one
 * small set of operations (create, start, attach, exec, kill, pause, remove, list by label,
 * inspect, events, image inspect, the runtime's binary). Docker is the one engine today
 * (lib/docker_engine.c over the Docker Engine API client lib/docker_api.c); another plugs in
 * behind the same operations (lib/engine_int.h) without touching the service.
 * A clr_engine is not thread-safe: use one per thread. */
#ifndef CLEARING_ENGINE_H
#define CLEARING_ENGINE_H

#include <jansson.h>
#include <sys/types.h>

#include "common.h"

typedef struct clr_engine clr_engine;

typedef struct clr_engine_options {
    /* Which engine: "docker" (NULL means "docker"); anything else is refused. */
    const char *kind;
    /* "unix:///var/run/docker.sock" or a plain path. NULL: $CLEARING_DOCKER_HOST, else
     * $DOCKER_HOST if it is a unix:// address, else /var/run/docker.sock. */
    const char *host;
    /* Timeout of one plain API call (not of exec streams), in ms. */
    long request_timeout_ms;
} clr_engine_options;

#define CLR_ENGINE_OPTIONS_INIT {.kind = NULL, .host = NULL, .request_timeout_ms = 30000}

/* Connects, checks the engine answers, and negotiates the API version (the engine's, capped at
 * the newest this library knows; engines older than API 1.41 are refused).
 * On success *out is owned by the caller; free it with clr_engine_free(). */
CLR_PUBLIC int clr_engine_open(clr_engine **out, const clr_engine_options *opts, clr_error *err);
CLR_PUBLIC void clr_engine_free(clr_engine *eng);

/* "docker at /var/run/docker.sock, API v1.41": which engine this is, for messages. */
CLR_PUBLIC void clr_engine_describe(clr_engine *eng, char *out, size_t len);

/* ---- the operations ----
 * Each returns 0, or -1 with err filled: CLR_E_NOT_FOUND (no such container, exec or image),
 * CLR_E_CONFLICT (its state forbids it: not running, not paused), CLR_E_UNAVAILABLE or
 * CLR_E_TIMEOUT (the engine is down or did not answer), CLR_E_ENGINE (refused otherwise; the
 * message is the engine's). Container ids are the engine's ids or clearing's container names
 * (clearing-sb-...). JSON documents returned are the caller's to json_decref. */

/* The engine answers at all (a health check: cheap, no side effect). */
CLR_PUBLIC int clr_engine_ping(clr_engine *eng, clr_error *err);
/* The engine's own version ("20.10.24+dfsg1" for Docker) to version (vlen bytes with the NUL)
 * and the newest API version it serves ("1.41") to api. */
CLR_PUBLIC int clr_engine_version(clr_engine *eng, char *version, size_t vlen, char *api,
                                  size_t alen, clr_error *err);
/* An image's description: .Id (content id), .Config (.Volumes, .User, ...). */
CLR_PUBLIC int clr_engine_image_inspect(clr_engine *eng, const char *image, json_t **out,
                                        clr_error *err);
/* Creates (does not start) a container named name from spec, the container's description in the
 * Docker Engine API's ContainerCreate shape (built in one place: lib/sandbox.c). The engine's id
 * of the new container goes to id (at most id_len bytes with the NUL). */
CLR_PUBLIC int clr_engine_container_create(clr_engine *eng, const char *name, json_t *spec,
                                           char *id, size_t id_len, clr_error *err);
CLR_PUBLIC int clr_engine_container_start(clr_engine *eng, const char *id, clr_error *err);
/* The container's state: .Id, .Name, .State (.Status .Running .Paused .ExitCode .OOMKilled
 * .StartedAt .FinishedAt), .Config.Labels. */
CLR_PUBLIC int clr_engine_container_inspect(clr_engine *eng, const char *id, json_t **out,
                                            clr_error *err);
/* Every container (running or not) with the label "key=value" (or just "key"): an array of
 * {.Id, .Names, .State, .Created, .Labels}. */
CLR_PUBLIC int clr_engine_container_list(clr_engine *eng, const char *label, json_t **out,
                                         clr_error *err);
/* Sends signal ("KILL", "TERM", ...) to the container's init. */
CLR_PUBLIC int clr_engine_container_kill(clr_engine *eng, const char *id, const char *signal,
                                         clr_error *err);
/* Freezes (pause true) or thaws the whole container. */
CLR_PUBLIC int clr_engine_container_pause(clr_engine *eng, const char *id, bool pause,
                                          clr_error *err);
/* Removes the container, killing it first if it runs, with its anonymous volumes. A container
 * that is already gone is not an error (0). */
CLR_PUBLIC int clr_engine_container_remove(clr_engine *eng, const char *id, clr_error *err);

typedef struct clr_engine_stream clr_engine_stream;

/* A bidirectional stream to the container's init: its stdin, and its stdout/stderr multiplexed
 * (see clr_demux). *out is the caller's (clr_engine_stream_free). */
CLR_PUBLIC int clr_engine_container_attach(clr_engine_stream **out, clr_engine *eng,
                                           const char *id, clr_error *err);

/* A new process in a running container, its stdio as a stream like attach's. */
typedef struct clr_engine_exec_spec {
    const char *const *argv; /* NULL-terminated */
    const char *user;        /* "uid:gid" */
    const char *workdir;
} clr_engine_exec_spec;
CLR_PUBLIC int clr_engine_exec(clr_engine_stream **out, clr_engine *eng, const char *id,
                               const clr_engine_exec_spec *spec, clr_error *err);

/* The streams of attach and exec. */
/* Writes all of data; -1 with err on failure. */
CLR_PUBLIC int clr_engine_stream_write(clr_engine_stream *s, const void *data, size_t len,
                                       clr_error *err);
/* Waits up to timeout_ms (-1: no limit) for bytes. Returns the count read, 0 at end of stream,
 * -2 on timeout or when a signal interrupted the wait, -1 with err on failure. */
CLR_PUBLIC ssize_t clr_engine_stream_read(clr_engine_stream *s, void *buf, size_t len,
                                          int timeout_ms, clr_error *err);
CLR_PUBLIC void clr_engine_stream_free(clr_engine_stream *s);
/* Ends both directions now (or only ours, write_only: the engine reads what was written, then
 * ends the stream); a reader blocked on the stream wakes up at end of stream. */
CLR_PUBLIC void clr_engine_stream_shutdown(clr_engine_stream *s, bool write_only);

/* Does the engine know this runtime (GET /info .Runtimes)? The answer is cached per handle. */
CLR_PUBLIC int clr_engine_has_runtime(clr_engine *eng, const char *runtime, bool *out,
                                      clr_error *err);

/* The binary the engine runs for runtime ("/usr/bin/runsc", or a bare name it looks up in its
 * PATH), from the same cached GET /info. CLR_E_NOT_FOUND when the engine names none. */
CLR_PUBLIC int clr_engine_runtime_path(clr_engine *eng, const char *runtime, char *out,
                                       size_t len, clr_error *err);

/* The first line that runtime's binary (clr_engine_runtime_path) prints for --version ("runsc
 * version 0.0~20240729.0", printable ASCII only), asked within 10 s and kept for the process's
 * life. CLR_E_NOT_FOUND when the engine names no binary for runtime or it cannot be run
 * (lib/runtime.c). */
CLR_PUBLIC int clr_runtime_version(clr_engine *eng, const char *runtime, char *out, size_t len,
                                   clr_error *err);

/* ---- checkpoints (issue #22: snapshots, forks, restore) ----
 * A checkpoint is the whole state of a running gVisor container (its memory, so its processes
 * and its tmpfs /tmp) as files the engine keeps beside the container, root-only. Host bind mounts
 * (the workspace) are not in it. */

/* Whether the engine can checkpoint containers of runtime at all. *out false with why (a
 * sentence naming what to enable: the engine's experimental mode, the runsc runtime) when not;
 * -1 only when the engine could not be asked. */
CLR_PUBLIC int clr_engine_checkpoint_supported(clr_engine *eng, const char *runtime, bool *out,
                                               char *why, size_t why_len, clr_error *err);
/* Checkpoints the running container id as name (letters, digits, '_', '.', '-'); the container
 * keeps running. CLR_E_CONFLICT if it does not run. */
CLR_PUBLIC int clr_engine_checkpoint_create(clr_engine *eng, const char *id, const char *name,
                                            clr_error *err);
/* The directory that holds (or, before clr_engine_container_start_checkpoint, must be given)
 * the files of container id's checkpoint name: the engine's own, root-only. The directory may
 * not exist yet. */
CLR_PUBLIC int clr_engine_checkpoint_dir(clr_engine *eng, const char *id, const char *name,
                                         char *out, size_t len, clr_error *err);
/* Starts the created or stopped container id from its checkpoint name, whose files must be in
 * clr_engine_checkpoint_dir(id, name) (copied there from another container's: the engine
 * refuses a checkpoint directory of the caller's choosing). */
CLR_PUBLIC int clr_engine_container_start_checkpoint(clr_engine *eng, const char *id,
                                                     const char *name, clr_error *err);
/* Deletes container id's checkpoint name. One that is already gone is not an error (0). */
CLR_PUBLIC int clr_engine_checkpoint_delete(clr_engine *eng, const char *id, const char *name,
                                            clr_error *err);

/* A way for another thread to end an event stream at once (its socket is shut down), rather than
 * at the stream's next tick. */
typedef struct clr_engine_cancel clr_engine_cancel;
CLR_PUBLIC int clr_engine_cancel_new(clr_engine_cancel **out, clr_error *err);
CLR_PUBLIC void clr_engine_cancel_free(clr_engine_cancel *c);
/* Ends the stream that uses c now, and every later one as it starts. Thread-safe. */
CLR_PUBLIC void clr_engine_cancel_fire(clr_engine_cancel *c);

/* The engine's event stream (GET /events), read until it ends or the handler says stop. */
typedef struct clr_engine_events_handler {
    /* One event object (borrowed). Non-zero ends the stream (clr_engine_events returns 0). */
    int (*on_event)(void *ctx, json_t *event);
    /* The engine answered 200: every event from now on is delivered (those before are not). */
    void (*on_connected)(void *ctx);
    /* Called after each event and, while the stream is quiet, about once a second: true ends
     * the stream (clr_engine_events returns 0). This is how a caller stops a watcher. */
    bool (*tick)(void *ctx);
    void *ctx;
    /* NULL, or a cancel that ends the stream when fired (clr_engine_events returns 0). */
    clr_engine_cancel *cancel;
} clr_engine_events_handler;

/* Streams GET /events?filters=<filters as JSON> on a connection of its own (eng's handle is
 * used: no other call on eng meanwhile). Returns 0 when a handler ended it, -1 with err when
 * the engine could not be reached, refused, sent something that is not an event, or closed the
 * stream (as a stopping dockerd does): a watcher reconnects then. */
CLR_PUBLIC int clr_engine_events(clr_engine *eng, json_t *filters,
                                 const clr_engine_events_handler *h, clr_error *err);

/* ---- the Docker Engine API itself ----
 * The Docker engine's transport (lib/docker_api.c). The service never uses it: it asks for the
 * operations above. It stays public for what must speak Docker's API as such: the benches' raw
 * `docker exec` baseline and tests that inspect the engine directly. */
CLR_PUBLIC const char *clr_engine_socket_path(const clr_engine *eng);
CLR_PUBLIC const char *clr_engine_api_version(const clr_engine *eng);

/* One API call. path is relative to the version prefix ("/containers/json?all=1"). body may be
 * NULL. Returns the HTTP status (>= 100), or -1 with err filled on a transport failure.
 * *resp (if resp is not NULL) receives the parsed JSON answer or NULL when it had none; the
 * caller owns it (json_decref). For statuses >= 400, err is also filled with the engine's
 * message, so callers can propagate it unchanged. */
CLR_PUBLIC int clr_engine_call(clr_engine *eng, const char *method, const char *path, json_t *body,
                               json_t **resp, clr_error *err);

/* A hijacked, bidirectional connection (exec start, attach): raw bytes both ways after the
 * engine's "101 UPGRADED". Reads return the engine's multiplexed stream as it comes.
 * POST path with a JSON body and Upgrade: tcp. *out is owned by the caller. */
CLR_PUBLIC int clr_engine_hijack(clr_engine_stream **out, clr_engine *eng, const char *path,
                                 json_t *body, clr_error *err);

/* Demultiplexer of the engine's attach/exec stream (non-TTY): 8-byte headers
 * [stream, 0, 0, 0, size u32 BE] each followed by size bytes of stdout (1) or stderr (2).
 * Incremental: feed it bytes in any slicing. Stream 0 (stdin echo) is accepted and dropped. */
typedef struct clr_demux {
    uint8_t header[8];
    size_t header_have;
    uint32_t left;
    uint8_t stream;
    bool failed;
} clr_demux;

typedef int (*clr_demux_cb)(void *ctx, int stream, const uint8_t *data, size_t len);

CLR_PUBLIC void clr_demux_init(clr_demux *d);
/* Returns 0, the callback's first non-zero return, or -1 on a malformed header (unknown stream
 * number or nonzero padding); after -1 the demuxer stays failed. */
CLR_PUBLIC int clr_demux_feed(clr_demux *d, const uint8_t *data, size_t len, clr_demux_cb cb,
                              void *ctx);

#endif
