/* The container engine interface: opens the engine the options name and passes each operation
 * to its table (engine_int.h). The only engine today is Docker (docker_engine.c). */
#include <errno.h>
#include <string.h>

#include "clearing/engine.h"
#include "engine_int.h"

int clr_engine_open(clr_engine **out, const clr_engine_options *opts, clr_error *err)
{
    const char *kind = opts && opts->kind ? opts->kind : "docker";
    if (strcmp(kind, "docker") == 0)
        return clr_docker_open(out, opts, err);
    return clr_error_set(err, CLR_E_INVALID, 0,
                         "engine '%.64s' is not known: the engines clearing has are: docker", kind);
}

void clr_engine_free(clr_engine *eng)
{
    if (eng)
        eng->ops->close(eng);
}

void clr_engine_describe(clr_engine *eng, char *out, size_t len)
{
    eng->ops->describe(eng, out, len);
}

int clr_engine_ping(clr_engine *eng, clr_error *err)
{
    return eng->ops->ping(eng, err);
}

int clr_engine_version(clr_engine *eng, char *version, size_t vlen, char *api, size_t alen,
                       clr_error *err)
{
    if (!eng->ops->version)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0, "the %s engine does not tell its version",
                             eng->ops->name);
    return eng->ops->version(eng, version, vlen, api, alen, err);
}

int clr_engine_has_runtime(clr_engine *eng, const char *runtime, bool *out, clr_error *err)
{
    return eng->ops->runtime_path(eng, runtime, out, NULL, 0, err);
}

int clr_engine_runtime_path(clr_engine *eng, const char *runtime, char *out, size_t len,
                            clr_error *err)
{
    bool known = false;
    return eng->ops->runtime_path(eng, runtime, &known, out, len, err);
}

int clr_engine_image_inspect(clr_engine *eng, const char *image, json_t **out, clr_error *err)
{
    *out = NULL;
    return eng->ops->image_inspect(eng, image, out, err);
}

int clr_engine_container_create(clr_engine *eng, const char *name, json_t *spec, char *id,
                                size_t id_len, clr_error *err)
{
    return eng->ops->create(eng, name, spec, id, id_len, err);
}

int clr_engine_container_start(clr_engine *eng, const char *id, clr_error *err)
{
    return eng->ops->start(eng, id, err);
}

int clr_engine_container_inspect(clr_engine *eng, const char *id, json_t **out, clr_error *err)
{
    *out = NULL;
    return eng->ops->inspect(eng, id, out, err);
}

int clr_engine_container_list(clr_engine *eng, const char *label, json_t **out, clr_error *err)
{
    *out = NULL;
    return eng->ops->list(eng, label, out, err);
}

int clr_engine_container_kill(clr_engine *eng, const char *id, const char *signal,
                              clr_error *err)
{
    return eng->ops->kill(eng, id, signal, err);
}

int clr_engine_container_pause(clr_engine *eng, const char *id, bool pause, clr_error *err)
{
    return eng->ops->pause(eng, id, pause, err);
}

int clr_engine_container_remove(clr_engine *eng, const char *id, clr_error *err)
{
    return eng->ops->remove(eng, id, err);
}

int clr_engine_container_attach(clr_engine_stream **out, clr_engine *eng, const char *id,
                                clr_error *err)
{
    *out = NULL;
    return eng->ops->attach(out, eng, id, err);
}

int clr_engine_exec(clr_engine_stream **out, clr_engine *eng, const char *id,
                    const clr_engine_exec_spec *spec, clr_error *err)
{
    *out = NULL;
    return eng->ops->exec(out, eng, id, spec, err);
}

int clr_engine_events(clr_engine *eng, json_t *filters, const clr_engine_events_handler *h,
                      clr_error *err)
{
    return eng->ops->events(eng, filters, h, err);
}
