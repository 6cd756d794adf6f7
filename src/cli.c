/* The command line's shared helpers (see cli.h): errors and exit statuses, output, the engine,
 * small input files. Below every cmd_*.c; calls none of them. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

struct cli_global cli_global;

void cli_error(const clr_error *err)
{
    fprintf(stderr, "clearing: %s: %s\n", clr_error_code_name(err->code), err->message);
}

int cli_failure_status(const clr_error *err)
{
    switch (err->code) {
    case CLR_E_INVALID:
    case CLR_E_NOT_FOUND:
    case CLR_E_CONFLICT:
    case CLR_E_LIMIT:
    case CLR_E_DENIED:
    case CLR_E_NO_SPACE:
    case CLR_E_UNSUPPORTED: return CLI_EXIT_FAILURE;
    case CLR_E_NONE:
    case CLR_E_UNAVAILABLE:
    case CLR_E_TIMEOUT:
    case CLR_E_ENGINE:
    case CLR_E_INTERNAL:
    default: return CLI_EXIT_CLEARING;
    }
}

void cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clearing %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'clearing %s --help'.\n", cmd);
    va_end(ap);
}

int cli_open_engine(clr_engine **eng, clr_error *err)
{
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = cli_global.docker_host;
    return clr_engine_open(eng, &o, err);
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

/* Reads a small file (a gauntlet definition) into memory. */
int cli_read_small_file(const char *path, size_t max, char **out, size_t *len, clr_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, errno == ENOENT ? CLR_E_NOT_FOUND : CLR_E_INVALID, errno,
                             "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max)
        return clr_error_set(err, CLR_E_INVALID, 0, "%s is not a regular file of at most %zu bytes",
                             path, max);
    _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    if (n != st.st_size)
        return clr_error_set(err, CLR_E_INVALID, errno, "cannot read %s", path);
    buf[n] = '\0';
    *out = steal_pointer(&buf);
    *len = (size_t)n;
    return 0;
}

int cli_exit_status_json(json_t *r)
{
    const char *s = json_string_value(json_object_get(r, "status"));
    if (!s)
        return CLI_EXIT_SANDBOX;
    if (strcmp(s, "exited") == 0)
        return (int)json_integer_value(json_object_get(r, "exit_code"));
    if (strcmp(s, "signaled") == 0)
        return 128 + (int)json_integer_value(json_object_get(r, "signal"));
    if (strcmp(s, "timed_out") == 0)
        return CLI_EXIT_TIMEOUT;
    if (strcmp(s, "oom") == 0)
        return CLI_EXIT_OOM;
    if (strcmp(s, "start_failed") == 0)
        return CLI_EXIT_NOSTART;
    return CLI_EXIT_SANDBOX;
}
