/* JSON-lines logging on stderr. Values are escaped with jansson so that anything from a sandbox
 * (an image name, an engine message) cannot break a line or forge a field. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "clearing/log.h"

static clr_log_level current_level = CLR_LOG_WARN;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void clr_log_set_level(clr_log_level level)
{
    current_level = level;
}

clr_log_level clr_log_get_level(void)
{
    return current_level;
}

int clr_log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0)
            return i;
    }
    return -1;
}

void clr_log(clr_log_level level, const char *event, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < current_level)
        return;
    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%06ldZ", (long)tv.tv_usec);

    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(names[level]));
    json_object_set_new(o, "event", json_string(event));
    va_list ap;
    va_start(ap, event);
    const char *key;
    while ((key = va_arg(ap, const char *))) {
        const char *val = va_arg(ap, const char *);
        json_object_set_new(o, key, val ? json_stringn_nocheck(val, strlen(val)) : json_null());
    }
    va_end(ap);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!line)
        return;
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
    free(line);
}
