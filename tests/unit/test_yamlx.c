/* Walking a libyaml document with bounded work (lib/yamlx.c), as the plan and gauntlet parsers
 * do: the node bound that stops alias bombs, each typed accessor's values and refusals, and
 * errors that name the source and the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "yamlx.h"

/* malloc that ends the test run when memory is out (so the compiler, too, knows the buffer is
 * there: GCC -O2 with the sanitizers otherwise warns of a null destination). */
static char *test_alloc(size_t n)
{
    char *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static clr_error err;

static void load(clr_yaml *y, const char *text)
{
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_yaml_load(y, text, strlen(text), "t.yaml", &err) != 0)
        fail_msg("not loaded: %s", err.message);
    assert_true(y->loaded);
}

/* The value of key in the root mapping (visiting its nodes as a parser does). */
static yaml_node_t *get(clr_yaml *y, const char *key)
{
    yaml_node_t *root = yaml_document_get_root_node(&y->doc);
    assert_non_null(root);
    assert_int_equal(root->type, YAML_MAPPING_NODE);
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = clr_yaml_scalar(clr_yaml_node(y, p->key));
        if (k && !strcmp(k, key))
            return clr_yaml_node(y, p->value);
    }
    fail_msg("no key %s", key);
    return NULL;
}

static void expect_error(int rc, const char *want)
{
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, want))
        fail_msg("message \"%s\" does not contain \"%s\"", err.message, want);
    err = (clr_error)CLR_ERROR_INIT;
}

static void test_load_and_errors(void **state)
{
    (void)state;
    clr_yaml y;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_yaml_load(&y, "a: [1, 2\nb: c\n", 14, "doc.yaml", &err), -1);
    assert_false(y.loaded);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "doc.yaml:"));
    assert_non_null(strstr(err.message, "not valid YAML"));
    clr_yaml_free(&y); /* nothing loaded: nothing to free, no crash */

    load(&y, "a: 1\n\n\nb: two\n");
    yaml_node_t *b = get(&y, "b");
    assert_int_equal(clr_yaml_error(&y, b, "bad %s %d", "thing", 7), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_string_equal(err.message, "t.yaml:4: bad thing 7");
    assert_int_equal(clr_yaml_error(&y, NULL, "no node"), -1);
    assert_string_equal(err.message, "t.yaml:0: no node");
    clr_yaml_free(&y);
    assert_false(y.loaded);
    clr_yaml_free(&y); /* twice: still fine */

    /* an empty document loads, with no root */
    load(&y, "");
    assert_null(yaml_document_get_root_node(&y.doc));
    clr_yaml_free(&y);
}

static void test_cleanup_attribute(void **state)
{
    (void)state;
    /* zero-initialised and never loaded: the cleanup on scope exit must do nothing */
    {
        _cleanup_yaml_ clr_yaml y = {0};
        assert_false(y.loaded);
    }
    {
        _cleanup_yaml_ clr_yaml y = {0};
        load(&y, "a: [1, 2, 3]\n");
    }
}

static void test_scalars_and_strings(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "s: hello\nq: \"with\\ttab\"\nnul: \"a\\0b\"\nlist: [x]\nmap: {k: v}\nempty: ''\n");
    assert_string_equal(clr_yaml_scalar(get(&y, "s")), "hello");
    assert_null(clr_yaml_scalar(get(&y, "list")));
    assert_null(clr_yaml_scalar(get(&y, "map")));
    assert_null(clr_yaml_scalar(NULL));

    char *out = NULL;
    assert_int_equal(clr_yaml_string(&y, get(&y, "s"), "s", &out), 0);
    assert_string_equal(out, "hello");
    /* a second value replaces the first (no leak: the old one is freed) */
    assert_int_equal(clr_yaml_string(&y, get(&y, "q"), "q", &out), 0);
    assert_string_equal(out, "with\ttab");
    assert_int_equal(clr_yaml_string(&y, get(&y, "empty"), "empty", &out), 0);
    assert_string_equal(out, "");
    free(out);
    out = NULL;
    expect_error(clr_yaml_string(&y, get(&y, "nul"), "nul", &out),
                 "t.yaml:3: nul contains a NUL byte");
    assert_null(out);
    expect_error(clr_yaml_string(&y, get(&y, "list"), "list", &out),
                 "t.yaml:4: list must be a string");
    expect_error(clr_yaml_string(&y, NULL, "gone", &out), "gone must be a string");
    assert_null(out);
    clr_yaml_free(&y);
}

static void test_bools(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "a: true\nb: yes\nc: false\nd: no\ne: True\nf: 1\ng: [true]\n");
    bool v = false;
    assert_int_equal(clr_yaml_bool(&y, get(&y, "a"), "a", &v), 0);
    assert_true(v);
    v = false;
    assert_int_equal(clr_yaml_bool(&y, get(&y, "b"), "b", &v), 0);
    assert_true(v);
    assert_int_equal(clr_yaml_bool(&y, get(&y, "c"), "c", &v), 0);
    assert_false(v);
    v = true;
    assert_int_equal(clr_yaml_bool(&y, get(&y, "d"), "d", &v), 0);
    assert_false(v);
    v = true;
    expect_error(clr_yaml_bool(&y, get(&y, "e"), "e", &v), "t.yaml:5: e must be true or false");
    expect_error(clr_yaml_bool(&y, get(&y, "f"), "f", &v), "f must be true or false");
    expect_error(clr_yaml_bool(&y, get(&y, "g"), "g", &v), "g must be true or false");
    assert_true(v); /* left alone */
    clr_yaml_free(&y);
}

static void test_numbers(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "a: 3\nb: 2.5\nc: -1\nd: 101\ne: nan\nf: inf\ng: ''\nh: 3x\ni: [1]\nj: 1e2\n");
    double d = -7;
    assert_int_equal(clr_yaml_number(&y, get(&y, "a"), "a", 0, 10, &d), 0);
    assert_true(d == 3);
    assert_int_equal(clr_yaml_number(&y, get(&y, "b"), "b", 0, 10, &d), 0);
    assert_true(d == 2.5);
    assert_int_equal(clr_yaml_number(&y, get(&y, "j"), "j", 0, 100, &d), 0); /* the edge */
    assert_true(d == 100);
    d = -7;
    expect_error(clr_yaml_number(&y, get(&y, "c"), "c", 0, 100, &d),
                 "t.yaml:3: c must be a number from 0 to 100");
    expect_error(clr_yaml_number(&y, get(&y, "d"), "d", 0, 100, &d), "d must be a number");
    expect_error(clr_yaml_number(&y, get(&y, "e"), "e", 0, 100, &d), "e must be a number");
    expect_error(clr_yaml_number(&y, get(&y, "f"), "f", 0, 1e300, &d), "f must be a number");
    expect_error(clr_yaml_number(&y, get(&y, "g"), "g", 0, 100, &d), "g must be a number");
    expect_error(clr_yaml_number(&y, get(&y, "h"), "h", 0, 100, &d), "h must be a number");
    expect_error(clr_yaml_number(&y, get(&y, "i"), "i", 0, 100, &d), "i must be a number");
    assert_true(d == -7); /* left alone */
    clr_yaml_free(&y);
}

static void test_string_lists(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "a: [x, 'y z', '']\nb: []\nc: x\nd: [x, [y]]\ne: [x, \"a\\0b\"]\n");
    char **v = NULL;
    assert_int_equal(clr_yaml_strv(&y, get(&y, "a"), "a", &v), 0);
    assert_string_equal(v[0], "x");
    assert_string_equal(v[1], "y z");
    assert_string_equal(v[2], "");
    assert_null(v[3]);
    char **keep = v;
    expect_error(clr_yaml_strv(&y, get(&y, "b"), "b", &v), "t.yaml:2: b must have 1 to 4096 items");
    expect_error(clr_yaml_strv(&y, get(&y, "c"), "c", &v), "c must be a list of strings");
    expect_error(clr_yaml_strv(&y, get(&y, "d"), "d", &v), "d must be a string");
    expect_error(clr_yaml_strv(&y, get(&y, "e"), "e", &v), "e contains a NUL byte");
    assert_ptr_equal(v, keep); /* a refused list leaves the old one */
    clr_strv_free(v);
    clr_strv_free(NULL);
    clr_yaml_free(&y);

    /* 4096 items are allowed, 4097 are not */
    for (size_t n = 4096; n <= 4097; n++) {
        char *text = test_alloc(16 + n * 3);
        assert_non_null(text);
        size_t o = (size_t)sprintf(text, "a: [");
        for (size_t i = 0; i < n; i++)
            o += (size_t)sprintf(text + o, "%sx", i ? "," : "");
        sprintf(text + o, "]\n");
        load(&y, text);
        v = NULL;
        int rc = clr_yaml_strv(&y, get(&y, "a"), "a", &v);
        if (n == 4096) {
            assert_int_equal(rc, 0);
            assert_string_equal(v[4095], "x");
            assert_null(v[4096]);
            clr_strv_free(v);
        } else {
            expect_error(rc, "a must have 1 to 4096 items");
            assert_null(v);
        }
        clr_yaml_free(&y);
        free(text);
    }
}

static void test_env(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "a: {PATH: /bin, EMPTY: '', N: 3}\nb: [A]\nc: {'A=B': x}\nd: {'': x}\ne: {A: [x]}\n"
             "f: {}\n");
    char **env = NULL;
    assert_int_equal(clr_yaml_env(&y, get(&y, "a"), "env", &env), 0);
    assert_string_equal(env[0], "PATH=/bin");
    assert_string_equal(env[1], "EMPTY=");
    assert_string_equal(env[2], "N=3");
    assert_null(env[3]);
    clr_strv_free(env);
    env = NULL;
    assert_int_equal(clr_yaml_env(&y, get(&y, "f"), "env", &env), 0);
    assert_null(env[0]);
    clr_strv_free(env);
    env = NULL;
    expect_error(clr_yaml_env(&y, get(&y, "b"), "env", &env),
                 "t.yaml:2: env must be a mapping of strings");
    expect_error(clr_yaml_env(&y, get(&y, "c"), "env", &env), "env entries must be NAME: string");
    expect_error(clr_yaml_env(&y, get(&y, "d"), "env", &env), "env entries must be NAME: string");
    expect_error(clr_yaml_env(&y, get(&y, "e"), "env", &env), "env entries must be NAME: string");
    assert_null(env);
    clr_yaml_free(&y);

    /* at most 256 variables */
    for (int n = 256; n <= 257; n++) {
        char *text = test_alloc(16 + (size_t)n * 16);
        assert_non_null(text);
        size_t o = (size_t)sprintf(text, "a: {");
        for (int i = 0; i < n; i++)
            o += (size_t)sprintf(text + o, "%sV%d: x", i ? ", " : "", i);
        sprintf(text + o, "}\n");
        load(&y, text);
        env = NULL;
        int rc = clr_yaml_env(&y, get(&y, "a"), "env", &env);
        if (n == 256) {
            assert_int_equal(rc, 0);
            assert_string_equal(env[255], "V255=x");
            clr_strv_free(env);
        } else {
            expect_error(rc, "env: at most 256 variables");
        }
        clr_yaml_free(&y);
        free(text);
    }
}

/* Every node reached counts, however often an alias makes it reachable: the walk ends after
 * CLR_YAML_MAX_NODES visits whatever the document's shape. */
static void test_node_bound(void **state)
{
    (void)state;
    clr_yaml y;
    load(&y, "a: &x [1, 2, 3]\nb: [*x, *x]\n");
    yaml_node_t *root = yaml_document_get_root_node(&y.doc);
    int key = root->data.mapping.pairs.start[0].key;
    unsigned before = y.visited;
    for (unsigned i = 0; i < CLR_YAML_MAX_NODES - before; i++)
        assert_non_null(clr_yaml_node(&y, key));
    assert_int_equal(y.visited, CLR_YAML_MAX_NODES);
    assert_null(clr_yaml_node(&y, key)); /* one more: refused */
    assert_null(clr_yaml_node(&y, key)); /* and stays refused */
    clr_yaml_free(&y);

    /* an index that does not exist is NULL too */
    load(&y, "a: 1\n");
    assert_null(clr_yaml_node(&y, 9999));
    assert_null(clr_yaml_node(&y, 0));
    clr_yaml_free(&y);

    /* a billion laughs: walking it with strv refuses instead of expanding it */
    load(&y, "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
             "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
             "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
             "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n");
    yaml_node_t *e = get(&y, "e");
    size_t walked = 0;
    bool stopped = false;
    /* depth-first over e, as a recursive parser would */
    yaml_node_t *stack[16];
    size_t idx[16], sp = 0;
    stack[0] = e;
    idx[0] = 0;
    sp = 1;
    while (sp && !stopped) {
        yaml_node_t *n = stack[sp - 1];
        if (n->type != YAML_SEQUENCE_NODE ||
            idx[sp - 1] >= (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)) {
            sp--;
            continue;
        }
        yaml_node_t *c = clr_yaml_node(&y, n->data.sequence.items.start[idx[sp - 1]++]);
        if (!c) {
            stopped = true;
            break;
        }
        walked++;
        assert_true(sp < 16);
        stack[sp] = c;
        idx[sp] = 0;
        sp++;
    }
    assert_true(stopped);
    assert_true(walked < CLR_YAML_MAX_NODES);
    assert_int_equal(y.visited, CLR_YAML_MAX_NODES + 1);
    clr_yaml_free(&y);
}

/* Deep nesting and a long scalar load (libyaml's own limits), and the walk stays bounded. */
static void test_depth_and_size(void **state)
{
    (void)state;
    size_t depth = 1000;
    char *text = test_alloc(2 * depth + 16);
    assert_non_null(text);
    size_t o = (size_t)sprintf(text, "a: ");
    memset(text + o, '[', depth);
    o += depth;
    memset(text + o, ']', depth);
    o += depth;
    sprintf(text + o, "\n");
    clr_yaml y;
    load(&y, text);
    yaml_node_t *n = get(&y, "a");
    size_t seen = 0;
    while (n && n->type == YAML_SEQUENCE_NODE &&
           n->data.sequence.items.top > n->data.sequence.items.start) {
        n = clr_yaml_node(&y, n->data.sequence.items.start[0]);
        seen++;
    }
    assert_int_equal(seen, depth - 1);
    clr_yaml_free(&y);
    free(text);

    size_t len = 1 << 20;
    text = test_alloc(len + 16);
    assert_non_null(text);
    o = (size_t)sprintf(text, "a: ");
    memset(text + o, 'z', len);
    sprintf(text + o + len, "\n");
    load(&y, text);
    char *out = NULL;
    assert_int_equal(clr_yaml_string(&y, get(&y, "a"), "a", &out), 0);
    assert_int_equal(strlen(out), len);
    free(out);
    clr_yaml_free(&y);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_errors),
        cmocka_unit_test(test_cleanup_attribute),
        cmocka_unit_test(test_scalars_and_strings),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_string_lists),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_node_bound),
        cmocka_unit_test(test_depth_and_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
