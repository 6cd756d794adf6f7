/* The Docker engine: each operation of the engine interface (engine_int.h) as the Docker Engine
 * API call that does it, over the transport in docker_api.c. This file is the only place that
 * knows Docker's paths and status codes for them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clearing/cleanup.h"
#include "clearing/cleanup_json.h"
#include "clearing/engine.h"
#include "engine_int.h"

/* An id or name goes into the request line: only the characters of Docker's ids and of
 * clearing's container names ("clearing-sb-<hex>") may, so a hostile one cannot change the
 * request. */
static int check_id(const char *id, clr_error *err)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 128 || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_.-") != n)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%.64s' is not a container id or name the engine can be asked about",
                             id ? id : "");
    return 0;
}

/* One call whose success is one of the statuses want (0-terminated). Anything else is -1: a
 * status of 400 or more with the engine's own message (docker_api.c names its code), another
 * one as CLR_E_ENGINE. */
static int call(clr_engine *eng, const char *method, const char *path, json_t *body,
                json_t **resp, const int *want, clr_error *err)
{
    json_t *r = NULL;
    int st = clr_engine_call(eng, method, path, body, &r, err);
    if (st < 0) {
        json_decref(r);
        return -1;
    }
    for (const int *w = want; *w; w++)
        if (st == *w) {
            if (resp)
                *resp = r;
            else
                json_decref(r);
            return 0;
        }
    json_decref(r);
    if (st < 400)
        clr_error_set(err, CLR_E_ENGINE, 0, "the Docker engine answered %d to %s %s", st, method,
                      path);
    return -1;
}

static void docker_describe(clr_engine *eng, char *out, size_t len)
{
    snprintf(out, len, "docker at %s, API %s", clr_engine_socket_path(eng),
             clr_engine_api_version(eng));
}

static int docker_ping(clr_engine *eng, clr_error *err)
{
    return call(eng, "GET", "/_ping", NULL, NULL, (const int[]){200, 0}, err);
}

/* GET /version: .Version ("20.10.24+dfsg1") and .ApiVersion ("1.41"), the newest it serves. */
static int docker_version(clr_engine *eng, char *version, size_t vlen, char *api, size_t alen,
                          clr_error *err)
{
    _cleanup_json_ json_t *r = NULL;
    if (call(eng, "GET", "/version", NULL, &r, (const int[]){200, 0}, err) < 0)
        return -1;
    const char *v = json_string_value(json_object_get(r, "Version"));
    const char *a = json_string_value(json_object_get(r, "ApiVersion"));
    if (!v || !a)
        return clr_error_set(err, CLR_E_ENGINE, 0,
                             "the Docker engine's /version has no Version or ApiVersion");
    snprintf(version, vlen, "%s", v);
    snprintf(api, alen, "%s", a);
    return 0;
}

static int docker_image_inspect(clr_engine *eng, const char *image, json_t **out, clr_error *err)
{
    /* A reference has no characters that change a request line; '/' and ':' are its own. */
    size_t n = image ? strlen(image) : 0;
    if (n == 0 || n > 255 || image[0] == '/' || strstr(image, "..") ||
        strspn(image, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/:@") != n)
        return clr_error_set(err, CLR_E_INVALID, 0, "'%.64s' is not an image reference",
                             image ? image : "");
    char path[320];
    snprintf(path, sizeof(path), "/images/%s/json", image);
    return call(eng, "GET", path, NULL, out, (const int[]){200, 0}, err);
}

static int docker_remove(clr_engine *eng, const char *id, clr_error *err);

static int docker_create(clr_engine *eng, const char *name, json_t *spec, char *id, size_t id_len,
                         clr_error *err)
{
    if (check_id(name, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    _cleanup_json_ json_t *resp = NULL;
    if (call(eng, "POST", path, spec, &resp, (const int[]){201, 0}, err) < 0)
        return -1;
    const char *cid = json_string_value(json_object_get(resp, "Id"));
    if (!cid || check_id(cid, err) < 0 || strlen(cid) >= id_len) {
        /* A failed create leaves nothing: the container is removed by its name. */
        clr_error ignored = CLR_ERROR_INIT;
        docker_remove(eng, name, &ignored);
        return clr_error_set(err, CLR_E_ENGINE, 0,
                             "the Docker engine created %s but answered no usable id", name);
    }
    snprintf(id, id_len, "%s", cid);
    return 0;
}

static int docker_start(clr_engine *eng, const char *id, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/start", id);
    /* 304: it was already running. */
    return call(eng, "POST", path, NULL, NULL, (const int[]){204, 304, 0}, err);
}

static int docker_inspect(clr_engine *eng, const char *id, json_t **out, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/json", id);
    return call(eng, "GET", path, NULL, out, (const int[]){200, 0}, err);
}

static int docker_list(clr_engine *eng, const char *label, json_t **out, clr_error *err)
{
    _cleanup_json_ json_t *filters = json_pack("{s:[s]}", "label", label);
    _cleanup_free_ char *text = filters ? json_dumps(filters, JSON_COMPACT) : NULL;
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    /* The filter goes into the query: percent-encode everything but the unreserved set. */
    char path[1024];
    size_t off = (size_t)snprintf(path, sizeof(path), "/containers/json?all=1&filters=");
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (off + 4 >= sizeof(path))
            return clr_error_set(err, CLR_E_INVALID, 0, "the label filter is too long");
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-_.~", *p))
            path[off++] = (char)*p;
        else
            off += (size_t)snprintf(path + off, sizeof(path) - off, "%%%02X", *p);
    }
    path[off] = '\0';
    json_t *list = NULL;
    if (call(eng, "GET", path, NULL, &list, (const int[]){200, 0}, err) < 0)
        return -1;
    if (!json_is_array(list)) {
        json_decref(list);
        return clr_error_set(err, CLR_E_ENGINE, 0, "the Docker engine's container list is not an "
                                                   "array");
    }
    *out = list;
    return 0;
}

static int docker_kill(clr_engine *eng, const char *id, const char *signal, clr_error *err)
{
    if (check_id(id, err) < 0 || check_id(signal, err) < 0)
        return -1;
    char path[320];
    snprintf(path, sizeof(path), "/containers/%s/kill?signal=%s", id, signal);
    return call(eng, "POST", path, NULL, NULL, (const int[]){204, 0}, err);
}

static int docker_pause(clr_engine *eng, const char *id, bool pause, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/%s", id, pause ? "pause" : "unpause");
    return call(eng, "POST", path, NULL, NULL, (const int[]){204, 0}, err);
}

static int docker_remove(clr_engine *eng, const char *id, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    char path[256];
    /* force=1 kills with SIGKILL and removes in one call; v=1 takes anonymous volumes too. */
    snprintf(path, sizeof(path), "/containers/%s?force=1&v=1", id);
    clr_error local = CLR_ERROR_INIT;
    if (call(eng, "DELETE", path, NULL, NULL, (const int[]){204, 0}, &local) == 0)
        return 0;
    if (local.code == CLR_E_NOT_FOUND)
        return 0;
    *err = local;
    return -1;
}

static int docker_attach(clr_engine_stream **out, clr_engine *eng, const char *id, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/attach?stream=1&stdin=1&stdout=1&stderr=1", id);
    return clr_engine_hijack(out, eng, path, NULL, err) < 0 ? -1 : 0;
}

static int docker_exec(clr_engine_stream **out, clr_engine *eng, const char *id,
                       const clr_engine_exec_spec *spec, clr_error *err)
{
    if (check_id(id, err) < 0)
        return -1;
    _cleanup_json_ json_t *cmd = json_array();
    for (size_t i = 0; cmd && spec->argv[i]; i++)
        json_array_append_new(cmd, json_string(spec->argv[i]));
    _cleanup_json_ json_t *body =
        cmd ? json_pack("{s:b, s:b, s:b, s:b, s:O, s:s, s:s}", "AttachStdin", 1, "AttachStdout",
                        1, "AttachStderr", 1, "Tty", 0, "Cmd", cmd, "User",
                        spec->user ? spec->user : "", "WorkingDir",
                        spec->workdir ? spec->workdir : "/")
            : NULL;
    if (!body)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/exec", id);
    _cleanup_json_ json_t *resp = NULL;
    if (call(eng, "POST", path, body, &resp, (const int[]){201, 0}, err) < 0)
        return -1;
    const char *eid = json_string_value(json_object_get(resp, "Id"));
    if (!eid || check_id(eid, err) < 0)
        return clr_error_set(err, CLR_E_ENGINE, 0, "the Docker engine answered no exec id");
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    _cleanup_json_ json_t *start = json_pack("{s:b, s:b}", "Detach", 0, "Tty", 0);
    if (!start)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return clr_engine_hijack(out, eng, path, start, err) < 0 ? -1 : 0;
}

/* ---- checkpoints ---- */

/* GET /info: ExperimentalBuild (checkpoints are experimental in Docker 20.10 and later) and the
 * runtime. Only runsc (gVisor) checkpoints here: runc would need CRIU, which clearing does not
 * use. */
static int docker_checkpoint_supported(clr_engine *eng, const char *runtime, bool *out,
                                       char *why, size_t why_len, clr_error *err)
{
    *out = false;
    _cleanup_json_ json_t *info = NULL;
    if (call(eng, "GET", "/info", NULL, &info, (const int[]){200, 0}, err) < 0)
        return -1;
    if (!json_is_true(json_object_get(info, "ExperimentalBuild"))) {
        snprintf(why, why_len,
                 "the Docker engine runs without experimental mode: snapshots need "
                 "\"experimental\": true in /etc/docker/daemon.json and a dockerd restart "
                 "(scripts/setup.sh merges it in)");
        return 0;
    }
    if (!runtime || strcmp(runtime, "runsc") != 0) {
        snprintf(why, why_len,
                 "snapshots need the runsc (gVisor) runtime; this daemon's sandboxes run under "
                 "'%.64s'",
                 runtime ? runtime : "(none)");
        return 0;
    }
    if (!json_object_get(json_object_get(info, "Runtimes"), runtime)) {
        snprintf(why, why_len, "the Docker engine has no runtime named %.64s", runtime);
        return 0;
    }
    *out = true;
    return 0;
}

static int docker_checkpoint_create(clr_engine *eng, const char *id, const char *name,
                                    clr_error *err)
{
    if (check_id(id, err) < 0 || check_id(name, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/checkpoints", id);
    _cleanup_json_ json_t *body = json_pack("{s:s, s:b}", "CheckpointID", name, "Exit", 0);
    if (!body)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return call(eng, "POST", path, body, NULL, (const int[]){201, 0}, err);
}

/* <DockerRootDir>/containers/<full id>/checkpoints/<name>: where `docker checkpoint create`
 * writes and `start?checkpoint=` reads (a directory of the caller's choosing is refused:
 * "custom checkpointdir is not supported"). */
static int docker_checkpoint_dir(clr_engine *eng, const char *id, const char *name, char *out,
                                 size_t len, clr_error *err)
{
    if (check_id(id, err) < 0 || check_id(name, err) < 0)
        return -1;
    _cleanup_json_ json_t *info = NULL;
    _cleanup_json_ json_t *c = NULL;
    if (call(eng, "GET", "/info", NULL, &info, (const int[]){200, 0}, err) < 0)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/json", id);
    if (call(eng, "GET", path, NULL, &c, (const int[]){200, 0}, err) < 0)
        return -1;
    const char *root = json_string_value(json_object_get(info, "DockerRootDir"));
    const char *full = json_string_value(json_object_get(c, "Id"));
    if (!root || root[0] != '/' || strstr(root, "/../") || !full || check_id(full, err) < 0)
        return clr_error_set(err, CLR_E_ENGINE, 0,
                             "the Docker engine told no usable root directory or container id");
    if ((size_t)snprintf(out, len, "%s/containers/%s/checkpoints/%s", root, full, name) >= len)
        return clr_error_set(err, CLR_E_INVALID, 0, "the checkpoint's directory is too long");
    return 0;
}

static int docker_start_checkpoint(clr_engine *eng, const char *id, const char *name,
                                   clr_error *err)
{
    if (check_id(id, err) < 0 || check_id(name, err) < 0)
        return -1;
    char path[320];
    snprintf(path, sizeof(path), "/containers/%s/start?checkpoint=%s", id, name);
    return call(eng, "POST", path, NULL, NULL, (const int[]){204, 0}, err);
}

static int docker_checkpoint_delete(clr_engine *eng, const char *id, const char *name,
                                    clr_error *err)
{
    if (check_id(id, err) < 0 || check_id(name, err) < 0)
        return -1;
    char path[320];
    snprintf(path, sizeof(path), "/containers/%s/checkpoints/%s", id, name);
    clr_error local = CLR_ERROR_INIT;
    if (call(eng, "DELETE", path, NULL, NULL, (const int[]){204, 200, 0}, &local) == 0)
        return 0;
    if (local.code == CLR_E_NOT_FOUND)
        return 0;
    *err = local;
    return -1;
}

static const struct clr_engine_ops docker_ops = {
    .name = "docker",
    .close = clr_docker_close,
    .describe = docker_describe,
    .ping = docker_ping,
    .version = docker_version,
    .runtime_path = clr_docker_runtime_path,
    .image_inspect = docker_image_inspect,
    .create = docker_create,
    .start = docker_start,
    .inspect = docker_inspect,
    .list = docker_list,
    .kill = docker_kill,
    .pause = docker_pause,
    .remove = docker_remove,
    .attach = docker_attach,
    .exec = docker_exec,
    .events = clr_docker_events,
    .checkpoint_supported = docker_checkpoint_supported,
    .checkpoint_create = docker_checkpoint_create,
    .checkpoint_dir = docker_checkpoint_dir,
    .start_checkpoint = docker_start_checkpoint,
    .checkpoint_delete = docker_checkpoint_delete,
};

int clr_docker_open(clr_engine **out, const clr_engine_options *opts, clr_error *err)
{
    return clr_docker_api_open(out, &docker_ops, opts, err);
}
