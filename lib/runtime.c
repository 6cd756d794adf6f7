/* The container runtime's identity: the version the engine's binary for a runtime reports, for
 * the record a signed verdict carries. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clearing/spawn.h"
#include "internal.h"

#define VERSION_TIMEOUT_MS 10000

/* One runtime's answer, kept for the process's life: the binary does not change under a
 * running daemon without a dockerd restart, and asking costs a process start. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static char cache_path[PATH_MAX];
static char cache_version[128];

/* The first line "PATH --version" prints, within the timeout. */
static int ask_version(const char *path, char *out, size_t len, clr_error *err)
{
    char buf[512];
    char *argv[] = {(char *)path, (char *)"--version", NULL};
    int status;
    if (clr_spawn_capture(argv, false, VERSION_TIMEOUT_MS, buf, sizeof(buf), &status, err) < 0)
        return clr_error_prefix(err, "asking for its version");
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0])
        return clr_error_set(err, CLR_E_INTERNAL, 0, "%s --version printed nothing", path);
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = '?';
    size_t l = strnlen(buf, len - 1);
    memcpy(out, buf, l);
    out[l] = '\0';
    return 0;
}

int clr_runtime_version(clr_engine *eng, const char *runtime, char *out, size_t len,
                        clr_error *err)
{
    char path[PATH_MAX];
    if (clr_engine_runtime_path(eng, runtime, path, sizeof(path), err) < 0)
        return -1;
    pthread_mutex_lock(&cache_lock);
    if (cache_version[0] && !strcmp(cache_path, path)) {
        snprintf(out, len, "%s", cache_version);
        pthread_mutex_unlock(&cache_lock);
        return 0;
    }
    pthread_mutex_unlock(&cache_lock);
    char v[sizeof(cache_version)];
    if (ask_version(path, v, sizeof(v), err) < 0)
        return -1;
    pthread_mutex_lock(&cache_lock);
    snprintf(cache_path, sizeof(cache_path), "%s", path);
    snprintf(cache_version, sizeof(cache_version), "%s", v);
    pthread_mutex_unlock(&cache_lock);
    snprintf(out, len, "%s", v);
    return 0;
}
