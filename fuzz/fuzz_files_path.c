/* Workspace paths from the API (files/ routes, archive targets, plan file steps): the check
 * must refuse anything that could leave the workspace, and read only the bytes it is given
 * (clr_files_check_path_n takes a length, not a string). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/files.h"
#include "fuzz.h"

/* The harness's own model of a safe path: relative, no NUL, no ".." component, no "//",
 * bounded lengths. */
static bool path_safe(const char *p, size_t n)
{
    if (n > CLR_FILES_PATH_MAX || memchr(p, '\0', n) || (n && p[0] == '/'))
        return false;
    size_t i = 0;
    while (i < n) {
        const char *slash = memchr(p + i, '/', n - i);
        size_t c = slash ? (size_t)(slash - (p + i)) : n - i;
        if (c == 2 && p[i] == '.' && p[i + 1] == '.')
            return false;
        if (c > CLR_FILES_NAME_MAX)
            return false;
        if (c == 0)
            return false; /* "//" (a single trailing '/' ends the loop before this) */
        i += c + 1;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-sized copy: any read past size is an ASan report. */
    char *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);
    clr_error err = CLR_ERROR_INIT;
    bool accepted = clr_files_check_path_n(p, size, &err) == 0;
    if (accepted != path_safe(p, size))
        abort();
    free(p);
    return 0;
}
