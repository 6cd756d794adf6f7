/* The container engine interface: opens the engine the options name and passes each operation
 * to its table (engine_int.h). The only engine today is Docker (docker_engine.c). */
#include <errno.h>
#include <stdio.h>
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

static int no_checkpoints(clr_engine *eng, clr_error *err)
{
    return clr_error_set(err, CLR_E_UNSUPPORTED, 0,
                         "the %s engine cannot checkpoint containers (snapshots need Docker "
                         "with \"experimental\": true and the runsc runtime)",
                         eng->ops->name);
}

int clr_engine_checkpoint_supported(clr_engine *eng, const char *runtime, bool *out, char *why,
                                    size_t why_len, clr_error *err)
{
    *out = false;
    if (!eng->ops->checkpoint_supported) {
        clr_error e = CLR_ERROR_INIT;
        no_checkpoints(eng, &e);
        snprintf(why, why_len, "%s", e.message);
        return 0;
    }
    return eng->ops->checkpoint_supported(eng, runtime, out, why, why_len, err);
}

int clr_engine_checkpoint_create(clr_engine *eng, const char *id, const char *name,
                                 clr_error *err)
{
    if (!eng->ops->checkpoint_create)
        return no_checkpoints(eng, err);
    return eng->ops->checkpoint_create(eng, id, name, err);
}

int clr_engine_checkpoint_dir(clr_engine *eng, const char *id, const char *name, char *out,
                              size_t len, clr_error *err)
{
    if (!eng->ops->checkpoint_dir)
        return no_checkpoints(eng, err);
    return eng->ops->checkpoint_dir(eng, id, name, out, len, err);
}

int clr_engine_container_start_checkpoint(clr_engine *eng, const char *id, const char *name,
                                          clr_error *err)
{
    if (!eng->ops->start_checkpoint)
        return no_checkpoints(eng, err);
    return eng->ops->start_checkpoint(eng, id, name, err);
}

int clr_engine_checkpoint_delete(clr_engine *eng, const char *id, const char *name,
                                 clr_error *err)
{
    if (!eng->ops->checkpoint_delete)
        return no_checkpoints(eng, err);
    return eng->ops->checkpoint_delete(eng, id, name, err);
}

int clr_engine_events(clr_engine *eng, json_t *filters, const clr_engine_events_handler *h,
                      clr_error *err)
{
    return eng->ops->events(eng, filters, h, err);
}
