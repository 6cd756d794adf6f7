/* The matcher of the HTTP route table (see route_match.h). */
#include <stdio.h>
#include <string.h>

#include "clearing/clearing.h"
#include "route_match.h"

/* Splits "/v1/sandboxes/ID/rest" into parts; returns the count, or -1 when a segment is too
 * long or there are more than max (a path longer than every route's is no route, not the
 * route of its first max segments). */
static int split_path(const char *url, char parts[][ROUTE_SEGMENT_MAX], int max)
{
    int n = 0;
    const char *p = url;
    while (*p == '/')
        p++;
    while (*p) {
        if (n == max)
            return -1;
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= ROUTE_SEGMENT_MAX)
            return -1;
        memcpy(parts[n], p, l);
        parts[n][l] = '\0';
        n++;
        if (!e)
            break;
        p = e + 1;
    }
    return n;
}

static bool has_rest(const char *pattern)
{
    size_t l = strlen(pattern);
    return l >= 7 && !strcmp(pattern + l - 7, "/{path}");
}

static bool under_v1(const char *pattern)
{
    return !strncmp(pattern, "/v1/", 4);
}

/* Matches a pattern that ends in {path} against the raw URL: literal bytes, a parameter up to
 * the next '/', then the rest (at least one byte), which may hold any number of segments. 1
 * with m's parameters filled, 0 when it does not match, -1 when it does but the id part is too
 * long to be one. */
static int match_rest(const char *pattern, const char *url, struct route_match *m)
{
    const char *p = pattern, *u = url;
    bool long_id = false;
    while (*p) {
        if (*p != '{') {
            if (*p != *u)
                return 0;
            p++, u++;
            continue;
        }
        bool is_id = !strncmp(p, "{id}", 4);
        p = strchr(p, '}') + 1;
        if (!*p) {
            m->path = u;
            return !*u ? 0 : long_id ? -1 : 1;
        }
        const char *slash = strchr(u, '/');
        if (!slash)
            return 0;
        size_t l = (size_t)(slash - u);
        char *to = is_id ? m->id : m->sub;
        long_id |= is_id && l > CLR_SANDBOX_ID_MAX;
        snprintf(to, ROUTE_SEGMENT_MAX, "%.*s", (int)(l < ROUTE_SEGMENT_MAX ? l : ROUTE_SEGMENT_MAX - 1), u);
        u = slash;
    }
    return 0;
}

/* Whether the segments of a fixed pattern match parts[0..n-1]; fills m's parameters. */
static bool match_fixed(const char *pattern, char parts[][ROUTE_SEGMENT_MAX], int n,
                        struct route_match *m)
{
    char seg[ROUTE_SEGMENTS_MAX][ROUTE_SEGMENT_MAX];
    if (split_path(pattern, seg, ROUTE_SEGMENTS_MAX) != n)
        return false;
    for (int i = 0; i < n; i++) {
        if (seg[i][0] != '{' && strcmp(seg[i], parts[i]) != 0)
            return false;
    }
    for (int i = 0; i < n; i++) {
        if (seg[i][0] != '{')
            continue;
        char *to = strcmp(seg[i], "{id}") ? m->sub : m->id;
        size_t l = strnlen(parts[i], ROUTE_SEGMENT_MAX - 1);
        memcpy(to, parts[i], l);
        to[l] = '\0';
    }
    return true;
}

/* Whether parts match pattern up to its {id} segment and that segment is not a sandbox id:
 * the id is checked before the rest of the path, so "../x" is a bad id, not a bad route. */
static bool bad_id(const char *pattern, char parts[][ROUTE_SEGMENT_MAX], int n)
{
    char seg[ROUTE_SEGMENTS_MAX][ROUTE_SEGMENT_MAX];
    int k = split_path(pattern, seg, ROUTE_SEGMENTS_MAX);
    for (int i = 0; i < k && i < n; i++) {
        if (!strcmp(seg[i], "{id}"))
            return !clr_sandbox_id_valid(parts[i]);
        if (seg[i][0] != '{' && strcmp(seg[i], parts[i]) != 0)
            return false;
    }
    return false;
}

/* A row whose path matched: its method joins the Allow list, and it is the route if the
 * request's method is its. */
static void matched(struct route_match *m, size_t i, const struct route_row *r,
                    const char *method)
{
    size_t l = strlen(m->allowed);
    snprintf(m->allowed + l, sizeof(m->allowed) - l, "%s%s", l ? ", " : "", r->method);
    if (!strcmp(method, r->method)) {
        m->row = i;
        m->found = true;
    }
}

/* The rows of {path} patterns: matched on the raw URL, since a file path may have any number
 * of segments, and before the fixed ones. */
static enum route_outcome match_rest_rows(const struct route_row *(*row_at)(size_t i),
                                          size_t n, const char *url, const char *method,
                                          struct route_match *m)
{
    for (size_t r = 0; r < n; r++) {
        const struct route_row *row = row_at(r);
        if (!has_rest(row->pattern))
            continue;
        int fr = match_rest(row->pattern, url, m);
        if (fr < 0 || (fr > 0 && !clr_sandbox_id_valid(m->id)))
            return ROUTE_BAD_ID;
        if (fr > 0) {
            m->rest = true;
            matched(m, r, row, method);
        }
    }
    return m->allowed[0] ? (m->found ? ROUTE_FOUND : ROUTE_NO_METHOD) : ROUTE_NO_PATH;
}

/* The rows of fixed patterns under /v1, on the URL's segments. */
static enum route_outcome match_fixed_rows(const struct route_row *(*row_at)(size_t i),
                                           size_t nrows, const char *url, const char *method,
                                           struct route_match *m)
{
    char parts[ROUTE_SEGMENTS_MAX][ROUTE_SEGMENT_MAX];
    int n = split_path(url, parts, ROUTE_SEGMENTS_MAX);
    if (n < 2 || strcmp(parts[0], "v1") != 0)
        return ROUTE_NOT_V1;
    for (size_t r = 0; r < nrows; r++) {
        if (!has_rest(row_at(r)->pattern) && bad_id(row_at(r)->pattern, parts, n))
            return ROUTE_BAD_ID;
    }
    for (size_t r = 0; r < nrows; r++) {
        const struct route_row *row = row_at(r);
        if (under_v1(row->pattern) && !has_rest(row->pattern) &&
            match_fixed(row->pattern, parts, n, m))
            matched(m, r, row, method);
    }
    return m->allowed[0] ? (m->found ? ROUTE_FOUND : ROUTE_NO_METHOD) : ROUTE_NO_PATH;
}

enum route_outcome route_match(const struct route_row *(*row_at)(size_t i), size_t n,
                               const char *url, const char *method, struct route_match *m)
{
    memset(m, 0, sizeof(*m));
    enum route_outcome o = match_rest_rows(row_at, n, url, method, m);
    if (o != ROUTE_NO_PATH)
        return o;
    for (size_t r = 0; r < n; r++) {
        if (!under_v1(row_at(r)->pattern) && !strcmp(url, row_at(r)->pattern))
            matched(m, r, row_at(r), method);
    }
    if (m->allowed[0])
        return m->found ? ROUTE_FOUND : ROUTE_NO_METHOD;
    return match_fixed_rows(row_at, n, url, method, m);
}
