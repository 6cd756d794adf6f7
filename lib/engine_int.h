/* The container engine interface's inside: the table of operations one engine implements, and
 * the handle every engine's state begins with. lib/engine.c dispatches through it; each engine
 * (today only Docker: docker_engine.c over docker_api.c) fills one table. Nothing outside lib/
 * sees this. */
#ifndef CLEARING_ENGINE_INT_H
#define CLEARING_ENGINE_INT_H

#include "clearing/engine.h"

/* Every operation returns 0, or -1 with err filled: CLR_E_NOT_FOUND when the container, exec or
 * image does not exist, CLR_E_CONFLICT when its state forbids the operation (not running,
 * already paused), CLR_E_UNAVAILABLE / CLR_E_TIMEOUT when the engine cannot be reached or did
 * not answer, CLR_E_ENGINE for anything else the engine refused. The JSON documents an
 * operation returns are the caller's (json_decref) and follow the Docker Engine API's shapes for
 * the fields docs/ARCHITECTURE.md lists under "The engine interface": another engine maps its
 * answers onto those fields. */
struct clr_engine_ops {
    const char *name;
    void (*close)(clr_engine *eng);
    /* "docker at /var/run/docker.sock, API v1.41": for messages and `clearing doctor`. */
    void (*describe)(clr_engine *eng, char *out, size_t len);
    int (*ping)(clr_engine *eng, clr_error *err);
    /* The engine's own version and the newest API version it serves (`clearing version`). An
     * engine without it leaves it NULL (clr_engine_version answers CLR_E_UNAVAILABLE). */
    int (*version)(clr_engine *eng, char *version, size_t vlen, char *api, size_t alen,
                   clr_error *err);
    int (*runtime_path)(clr_engine *eng, const char *runtime, bool *known, char *out, size_t len,
                        clr_error *err);
    int (*image_inspect)(clr_engine *eng, const char *image, json_t **out, clr_error *err);
    int (*create)(clr_engine *eng, const char *name, json_t *spec, char *id, size_t id_len,
                  clr_error *err);
    int (*start)(clr_engine *eng, const char *id, clr_error *err);
    int (*inspect)(clr_engine *eng, const char *id, json_t **out, clr_error *err);
    int (*list)(clr_engine *eng, const char *label, json_t **out, clr_error *err);
    int (*kill)(clr_engine *eng, const char *id, const char *signal, clr_error *err);
    int (*pause)(clr_engine *eng, const char *id, bool pause, clr_error *err);
    int (*remove)(clr_engine *eng, const char *id, clr_error *err);
    int (*attach)(clr_engine_stream **out, clr_engine *eng, const char *id, clr_error *err);
    int (*exec)(clr_engine_stream **out, clr_engine *eng, const char *id,
                const clr_engine_exec_spec *spec, clr_error *err);
    int (*events)(clr_engine *eng, json_t *filters, const clr_engine_events_handler *h,
                  clr_error *err);
    /* Checkpoints (issue #22); an engine without them leaves them NULL (CLR_E_UNSUPPORTED). */
    int (*checkpoint_supported)(clr_engine *eng, const char *runtime, bool *out, char *why,
                                size_t why_len, clr_error *err);
    int (*checkpoint_create)(clr_engine *eng, const char *id, const char *name, clr_error *err);
    int (*checkpoint_dir)(clr_engine *eng, const char *id, const char *name, char *out,
                          size_t len, clr_error *err);
    int (*start_checkpoint)(clr_engine *eng, const char *id, const char *name, clr_error *err);
    int (*checkpoint_delete)(clr_engine *eng, const char *id, const char *name, clr_error *err);
};

/* The handle: each engine's own state struct begins with this. */
struct clr_engine {
    const struct clr_engine_ops *ops;
};

/* The Docker engine (docker_engine.c) ... */
int clr_docker_open(clr_engine **out, const clr_engine_options *opts, clr_error *err);
/* ... over its transport (docker_api.c): a connected handle whose operations are ops. */
int clr_docker_api_open(clr_engine **out, const struct clr_engine_ops *ops,
                        const clr_engine_options *opts, clr_error *err);
void clr_docker_close(clr_engine *eng);
int clr_docker_runtime_path(clr_engine *eng, const char *runtime, bool *known, char *out,
                            size_t len, clr_error *err);
int clr_docker_events(clr_engine *eng, json_t *filters, const clr_engine_events_handler *h,
                      clr_error *err);

#endif
