/* The HTTP route matcher (src/route_match.c): which row a method and URL name, with which
 * parameters, and each way a request is refused: not under /v1, a bad sandbox id, no such path,
 * a method the path does not take (with the Allow list). The real table is checked against
 * docs/openapi.yaml by tests/integration/test_routes.py; this one has the same shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "route_match.h"

#define SID "sb-00000000000000ff"

static const struct route_row rows[] = {
    {"GET", "/metrics"},                                          /* 0 */
    {"GET", "/v1/health"},                                        /* 1 */
    {"GET", "/v1/sandboxes"},                                     /* 2 */
    {"POST", "/v1/sandboxes"},                                    /* 3 */
    {"GET", "/v1/sandboxes/{id}"},                                /* 4 */
    {"DELETE", "/v1/sandboxes/{id}"},                             /* 5 */
    {"GET", "/v1/sandboxes/{id}/execs/{exec_id}"},                /* 6 */
    {"GET", "/v1/sandboxes/{id}/processes/{proc_id}/output"},     /* 7 */
    {"GET", "/v1/sandboxes/{id}/files"},                          /* 8 */
    {"GET", "/v1/sandboxes/{id}/files/{path}"},                   /* 9 */
    {"PUT", "/v1/sandboxes/{id}/files/{path}"},                   /* 10 */
    {"DELETE", "/v1/sandboxes/{id}/files/{path}"},                /* 11 */
};

static const struct route_row *row_at(size_t i)
{
    return &rows[i];
}

static enum route_outcome match(const char *method, const char *url, struct route_match *m)
{
    return route_match(row_at, sizeof(rows) / sizeof(rows[0]), url, method, m);
}

/* Found, as row `row`: reports the URL on failure. */
static void expect_row(const char *method, const char *url, size_t row, struct route_match *m)
{
    enum route_outcome o = match(method, url, m);
    if (o != ROUTE_FOUND)
        fail_msg("%s %s: outcome %d, not found", method, url, (int)o);
    if (m->row != row)
        fail_msg("%s %s: row %zu, not %zu", method, url, m->row, row);
}

static void expect_outcome(const char *method, const char *url, enum route_outcome want)
{
    struct route_match m;
    enum route_outcome o = match(method, url, &m);
    if (o != want)
        fail_msg("%s %s: outcome %d, not %d", method, url, (int)o, (int)want);
}

static void test_fixed_paths_and_parameters(void **state)
{
    (void)state;
    struct route_match m;
    expect_row("GET", "/metrics", 0, &m);
    expect_row("GET", "/v1/health", 1, &m);
    expect_row("POST", "/v1/sandboxes", 3, &m);
    assert_string_equal(m.id, "");
    expect_row("DELETE", "/v1/sandboxes/" SID, 5, &m);
    assert_string_equal(m.id, SID);
    assert_false(m.rest);
    assert_null(m.path);
    expect_row("GET", "/v1/sandboxes/" SID "/execs/ex-0123", 6, &m);
    assert_string_equal(m.id, SID);
    assert_string_equal(m.sub, "ex-0123");
    expect_row("GET", "/v1/sandboxes/" SID "/processes/pr-7/output", 7, &m);
    assert_string_equal(m.sub, "pr-7");
    /* As before the table: a trailing slash and repeated leading slashes are the same path. */
    expect_row("GET", "/v1/sandboxes/", 2, &m);
    expect_row("GET", "//v1/health", 1, &m);
}

static void test_file_paths_take_any_depth(void **state)
{
    (void)state;
    struct route_match m;
    expect_row("PUT", "/v1/sandboxes/" SID "/files/a/b/c.txt", 10, &m);
    assert_true(m.rest);
    assert_string_equal(m.id, SID);
    assert_string_equal(m.path, "a/b/c.txt");
    expect_row("DELETE", "/v1/sandboxes/" SID "/files/x", 11, &m);
    assert_string_equal(m.path, "x");
    /* A segment longer than a fixed path's may be a file name. */
    char url[512];
    char name[256];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(url, sizeof(url), "/v1/sandboxes/" SID "/files/d/%s", name);
    expect_row("GET", url, 9, &m);
    assert_int_equal(strlen(m.path), 2 + strlen(name));
    /* With nothing after files/, it is the listing. */
    expect_row("GET", "/v1/sandboxes/" SID "/files/", 8, &m);
    assert_false(m.rest);
}

static void test_method_refused_with_allow(void **state)
{
    (void)state;
    struct route_match m;
    assert_int_equal(match("PUT", "/v1/sandboxes", &m), ROUTE_NO_METHOD);
    assert_string_equal(m.allowed, "GET, POST");
    assert_int_equal(match("POST", "/v1/sandboxes/" SID, &m), ROUTE_NO_METHOD);
    assert_string_equal(m.allowed, "GET, DELETE");
    assert_int_equal(match("POST", "/metrics", &m), ROUTE_NO_METHOD);
    assert_string_equal(m.allowed, "GET");
    assert_int_equal(match("POST", "/v1/sandboxes/" SID "/files/a", &m), ROUTE_NO_METHOD);
    assert_true(m.rest);
    assert_string_equal(m.id, SID); /* its tenancy is checked before the 405 */
    assert_string_equal(m.allowed, "GET, PUT, DELETE");
    /* A method is matched whole, not as a prefix. */
    assert_int_equal(match("GE", "/v1/health", &m), ROUTE_NO_METHOD);
    assert_int_equal(match("get", "/v1/health", &m), ROUTE_NO_METHOD);
}

static void test_bad_ids_before_paths(void **state)
{
    (void)state;
    expect_outcome("GET", "/v1/sandboxes/nope", ROUTE_BAD_ID);
    expect_outcome("GET", "/v1/sandboxes/../etc/passwd", ROUTE_BAD_ID);
    /* An id checked before the rest: a bad id on a path that does not exist is still 400. */
    expect_outcome("GET", "/v1/sandboxes/nope/nothing", ROUTE_BAD_ID);
    expect_outcome("GET", "/v1/sandboxes/sb-00000000000000FF", ROUTE_BAD_ID);
    expect_outcome("GET", "/v1/sandboxes/nope/files/x", ROUTE_BAD_ID);
    expect_outcome("GET", "/v1/sandboxes//files/x", ROUTE_BAD_ID);
    expect_outcome("GET", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/files/x",
                   ROUTE_BAD_ID);
}

static void test_unknown_paths(void **state)
{
    (void)state;
    expect_outcome("GET", "/", ROUTE_NOT_V1);
    expect_outcome("GET", "/v1", ROUTE_NOT_V1);
    expect_outcome("GET", "/x", ROUTE_NOT_V1);
    expect_outcome("GET", "/v2/sandboxes", ROUTE_NOT_V1);
    expect_outcome("GET", "/metrics/x", ROUTE_NOT_V1);
    expect_outcome("GET", "/v1/nothing", ROUTE_NO_PATH);
    expect_outcome("GET", "/v1/sandboxes/" SID "/nothing", ROUTE_NO_PATH);
    expect_outcome("GET", "/v1/sandboxes/" SID "/execs", ROUTE_NO_PATH);
    expect_outcome("GET", "/v1/sandboxes/" SID "/processes/pr-7/nothing", ROUTE_NO_PATH);
    /* One segment more than the longest route is no route, not that route with a tail. */
    expect_outcome("GET", "/v1/sandboxes/" SID "/processes/pr-7/output/extra", ROUTE_NOT_V1);
    /* A segment too long for any fixed path. */
    char url[400];
    snprintf(url, sizeof(url), "/v1/%0200d", 0);
    expect_outcome("GET", url, ROUTE_NOT_V1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_paths_and_parameters),
        cmocka_unit_test(test_file_paths_take_any_depth),
        cmocka_unit_test(test_method_refused_with_allow),
        cmocka_unit_test(test_bad_ids_before_paths),
        cmocka_unit_test(test_unknown_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
