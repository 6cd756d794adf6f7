/* The matcher of the HTTP route table: which row of a table of {method, path pattern} a
 * request's method and URL name, and the path's parameters. Pure (no I/O, no libmicrohttpd):
 * routes.c owns the table and what a row does; tests/unit/test_route_match.c checks the matcher. */
#ifndef CLR_ROUTE_MATCH_H
#define CLR_ROUTE_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#define ROUTE_SEGMENTS_MAX 6   /* of the longest fixed path, /v1/sandboxes/{id}/processes/{p}/x */
#define ROUTE_SEGMENT_MAX 128  /* bytes of one segment of a fixed path, with its '\0' */

struct route_row {
    const char *method;
    /* Segments of the URL: a literal, or a parameter in braces: {id} a sandbox id, checked
     * before the rest of the path (so "../x" is a bad id, not a bad route), {path} (last
     * only) the rest of the URL, any number of segments, any other name one segment. As in
     * docs/openapi.yaml. A pattern not under /v1/ is matched as it is (/metrics). */
    const char *pattern;
};

enum route_outcome {
    ROUTE_FOUND,     /* m->row is the row */
    ROUTE_NOT_V1,    /* not a pattern outside /v1, not under /v1 (or no path at all): 404 */
    ROUTE_BAD_ID,    /* an {id} segment that is not a sandbox id: 400 */
    ROUTE_NO_PATH,   /* no row has this path: 404 */
    ROUTE_NO_METHOD, /* rows have this path, none this method: 405 (m->allowed) */
};

struct route_match {
    size_t row;       /* ROUTE_FOUND: the index of the row */
    bool found;       /* a row of the path has the method */
    bool rest;        /* the path is a {path} one */
    char allowed[48]; /* the methods of the path, "GET, POST", in table order */
    char id[ROUTE_SEGMENT_MAX];  /* {id} ("" when the path has none) */
    char sub[ROUTE_SEGMENT_MAX]; /* any other one-segment parameter ("" when none) */
    const char *path;            /* {path}: points into url (NULL when none) */
};

/* Matches method and url against the n rows that row_at(0..n-1) return, filling m. Rows of
 * one path are expected together, in the order their methods are to be named in Allow. */
enum route_outcome route_match(const struct route_row *(*row_at)(size_t i), size_t n,
                               const char *url, const char *method, struct route_match *m);

#endif
