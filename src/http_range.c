/* HTTP byte ranges: see http_range.h. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_range.h"

/* A decimal number at *p (digits only), moved past; false when there is none or it overflows. */
static bool number(const char **p, uint64_t *out)
{
    if (!isdigit((unsigned char)**p))
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(*p, &end, 10);
    if (errno == ERANGE)
        return false;
    *p = end;
    *out = v;
    return true;
}

static const char *skip_spaces(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

enum http_range http_range_parse(const char *header, uint64_t size, uint64_t *first,
                                 uint64_t *last)
{
    if (!header || strncasecmp(header, "bytes=", 6) != 0)
        return HTTP_RANGE_NONE;
    const char *p = skip_spaces(header + 6);
    uint64_t a = 0, b = 0;
    bool has_a = number(&p, &a);
    if (*p++ != '-')
        return HTTP_RANGE_NONE;
    bool has_b = number(&p, &b);
    if (*skip_spaces(p) != '\0' || (!has_a && !has_b) || (has_a && has_b && b < a))
        return HTTP_RANGE_NONE; /* several ranges, or not well formed */
    if (!has_a) {
        /* The last b bytes. */
        if (b == 0 || size == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return HTTP_RANGE_OK;
    }
    if (a >= size)
        return HTTP_RANGE_UNSATISFIABLE;
    *first = a;
    *last = has_b && b < size ? b : size - 1;
    return HTTP_RANGE_OK;
}
