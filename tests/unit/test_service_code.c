/* lib/service/code.c: the bridge's line reader and the answer it makes of a line (the bridge is
 * untrusted: split lines, long lines, lies, answers nobody asked for), and, against the scripted
 * engine of fake_engine.h with a state database and an audit log in a temporary directory, what
 * a cell refuses before anything runs and what a bridge that ends at once gives: a clear error,
 * recorded, never a hang; and what the next answer says of a kernel that ended with its state.
 * A scripted bridge answers only what its stream holds (a cell's answer names the nonce, fixed
 * here: getrandom below), so a kernel that runs code is the integration suite's
 * (tests/integration/test_code.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "proto.h"
#include "service/code.h"
#include "service/tenants.h"
#include "test_service_env.h"
#include "test_service_code_fixture.h"

static void feed(struct code_lines *r, const char *s)
{
    svc_code_lines_feed(r, (const uint8_t *)s, strlen(s));
}

struct events {
    int n;
    char text[256];
};

static void on_event(void *ctx, json_t *ev)
{
    struct events *e = ctx;
    e->n++;
    strncat(e->text, json_string_value(json_object_get(ev, "event")),
            sizeof(e->text) - strlen(e->text) - 1);
    strncat(e->text, ":", sizeof(e->text) - strlen(e->text) - 1);
    strncat(e->text, json_string_value(json_object_get(ev, "text")),
            sizeof(e->text) - strlen(e->text) - 1);
}

static void test_lines_split_and_joined(void **state)
{
    (void)state;
    struct code_lines *r = svc_code_lines_new(1024);
    const char *broken = NULL;
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    /* A line in three pieces, then two lines and empty ones in one piece. */
    feed(r, "{\"event\":\"re");
    assert_null(svc_code_lines_take(r, NULL));
    feed(r, "ady\"");
    feed(r, "}\n\n{\"event\":\"result\",\"status\":\"ok\"}\n\n{\"event\":\"x\"}\n");
    json_t *a = svc_code_lines_take(r, &broken);
    assert_string_equal(json_string_value(json_object_get(a, "event")), "ready");
    json_t *b = svc_code_lines_take(r, &broken);
    assert_string_equal(json_string_value(json_object_get(b, "status")), "ok");
    json_t *c = svc_code_lines_take(r, &broken);
    assert_string_equal(json_string_value(json_object_get(c, "event")), "x");
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    json_decref(a);
    json_decref(b);
    json_decref(c);
    svc_code_lines_free(r);
}

static void test_lines_output_events(void **state)
{
    (void)state;
    struct code_lines *r = svc_code_lines_new(1024);
    struct events ev = {0};
    /* Without a cell's callback, output events are dropped; with one, passed on in order;
     * never queued as answers. */
    feed(r, "{\"event\":\"stdout\",\"text\":\"lost\"}\n");
    svc_code_lines_on_event(r, on_event, &ev, CLR_MIB);
    feed(r, "{\"event\":\"stdout\",\"text\":\"a\"}\n{\"event\":\"stderr\",\"text\":\"b\"}\n"
            "{\"event\":\"stdout\",\"text\":7}\n");
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.text, "stdout:astderr:b");
    const char *broken = NULL;
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    svc_code_lines_free(r);
}

static void test_lines_lies(void **state)
{
    (void)state;
    const char *broken = NULL;
    /* Not JSON, not an object, no event: the reader is broken, and says so. */
    static const char *const bad[] = {"hello\n", "[1,2]\n", "{\"status\":\"ok\"}\n",
                                      "{\"event\":5}\n",
                                      "{\"event\":\"result\",\"event\":\"result\"}\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct code_lines *r = svc_code_lines_new(1024);
        feed(r, bad[i]);
        assert_null(svc_code_lines_take(r, &broken));
        if (!strstr(broken, "not a JSON object with an event"))
            fail_msg("line %s: broken '%s'", bad[i], broken);
        svc_code_lines_free(r);
    }
    /* A line past the cap: dropped (never held whole), the reader broken. */
    struct code_lines *r = svc_code_lines_new(64);
    char big[200];
    memset(big, 'a', sizeof(big));
    for (int i = 0; i < 10; i++)
        svc_code_lines_feed(r, (const uint8_t *)big, sizeof(big));
    feed(r, "\n{\"event\":\"ready\"}\n");
    json_t *j = svc_code_lines_take(r, &broken);
    assert_non_null(strstr(broken, "longer than its cap"));
    json_decref(j);
    svc_code_lines_free(r);
    /* A line of many tiny values (a parser's tens of bytes for each two of the line's): held
     * to half the cell's cap plus slack, counted outside strings. The controls: as many values
     * as that, and a string of commas and brackets of any length, are read. */
    size_t max = 64 * 1024, allowed = 8192 / 2 + 4096;
    for (int round = 0; round < 3; round++) {
        size_t values = round == 1 ? allowed + 1 : allowed;
        char *line = malloc(max);
        assert_non_null(line);
        size_t n = (size_t)sprintf(line, "{\"event\":\"x\",\"v\":");
        if (round == 2) {
            line[n++] = '"';
            for (size_t i = 0; i < allowed; i++)
                n += (size_t)sprintf(line + n, "[{,");
            line[n++] = '"';
        } else {
            line[n++] = '[';
            /* The bound counts the first value, the object's '{' and ',', the array's '[': 4;
             * each comma of the array's one more. */
            for (size_t i = 4; i < values; i++)
                n += (size_t)sprintf(line + n, "0,");
            line[n++] = '0';
            line[n++] = ']';
        }
        n += (size_t)sprintf(line + n, "}\n");
        r = svc_code_lines_new(max);
        svc_code_lines_on_event(r, NULL, NULL, 8192);
        svc_code_lines_feed(r, (const uint8_t *)line, n);
        j = svc_code_lines_take(r, &broken);
        if (round == 1) {
            assert_null(j);
            assert_non_null(strstr(broken, "more JSON values than an answer can hold"));
        } else {
            if (!j)
                fail_msg("round %d: no answer, broken '%s'", round, broken);
            assert_string_equal(broken, "");
        }
        json_decref(j);
        svc_code_lines_free(r);
        free(line);
    }
    /* Between cells (cap 0) a line holds the slack's 4096 values; the answers queued hold
     * one answer's values together: two of 3000 are one too many. */
    r = svc_code_lines_new(max);
    char *tiny = malloc(max);
    assert_non_null(tiny);
    size_t t = (size_t)sprintf(tiny, "{\"event\":\"x\",\"v\":[0");
    for (size_t i = 4; i < 3000; i++)
        t += (size_t)sprintf(tiny + t, ",0");
    t += (size_t)sprintf(tiny + t, "]}\n");
    svc_code_lines_feed(r, (const uint8_t *)tiny, t);
    j = svc_code_lines_take(r, &broken); /* the control: one is read, and taken */
    assert_non_null(j);
    json_decref(j);
    svc_code_lines_feed(r, (const uint8_t *)tiny, t);
    svc_code_lines_feed(r, (const uint8_t *)tiny, t);
    j = svc_code_lines_take(r, &broken);
    assert_non_null(j);
    json_decref(j);
    assert_null(svc_code_lines_take(r, &broken));
    assert_non_null(strstr(broken, "nobody asked for"));
    svc_code_lines_free(r);
    free(tiny);
    /* After a line longer than the buffer a reader keeps (64 KiB, let go then), the next
     * line is read into a new one. */
    r = svc_code_lines_new(1 << 20);
    char *longer = malloc(100 * 1024);
    assert_non_null(longer);
    size_t m = (size_t)sprintf(longer, "{\"event\":\"x\",\"t\":\"");
    memset(longer + m, 'a', 99 * 1024);
    m += 99 * 1024;
    m += (size_t)sprintf(longer + m, "\"}\n");
    svc_code_lines_feed(r, (const uint8_t *)longer, m);
    feed(r, "{\"event\":\"y\"}\n");
    for (const char *ev = "x"; ev; ev = strcmp(ev, "x") == 0 ? "y" : NULL) {
        j = svc_code_lines_take(r, &broken);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "event")), ev);
        json_decref(j);
    }
    assert_string_equal(broken, "");
    svc_code_lines_free(r);
    free(longer);
    /* Answers nobody asked for: at most a few are queued, then the reader is broken. */
    r = svc_code_lines_new(1024);
    for (int i = 0; i < 10; i++)
        feed(r, "{\"event\":\"result\",\"status\":\"ok\"}\n");
    json_t *first = svc_code_lines_take(r, &broken);
    assert_non_null(first);
    json_decref(first);
    assert_non_null(strstr(broken, "nobody asked for"));
    svc_code_lines_free(r);
}

/* An adopted bridge's replayed past (a line cut at its start, more answers than are queued
 * unasked, a line past the cap, a broken one) is read past up to the sync's answer, which is
 * dropped too; what follows is read as ever. Without the resync the same input breaks the
 * reader. */
static void test_lines_resync(void **state)
{
    (void)state;
    static const char past[] =
        "tus\":\"ok\"}\n{\"event\":\"ready\"}\n{\"event\":\"result\",\"nonce\":\"1\"}\n"
        "{\"event\":\"result\",\"nonce\":\"2\"}\n{\"event\":\"result\",\"nonce\":\"3\"}\n"
        "{\"event\":\"result\",\"nonce\":\"4\"}\n{\"event\":\"result\",\"nonce\":\"5\"}\n";
    const char *broken = NULL;
    struct code_lines *plain = svc_code_lines_new(256);
    feed(plain, past);
    json_t *j;
    while ((j = svc_code_lines_take(plain, &broken)))
        json_decref(j);
    assert_string_not_equal(broken, ""); /* the control: this past breaks a reader */
    svc_code_lines_free(plain);

    struct code_lines *r = svc_code_lines_new(256);
    feed(r, "{\"event\":\"ready\"}\n"); /* queued before: dropped by the resync */
    svc_code_lines_resync(r, "f00dfeed");
    feed(r, past);
    char longline[400];
    memset(longline, 'x', sizeof(longline) - 2);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    feed(r, longline);
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    feed(r, "{\"event\":\"synced\",\"nonce\":\"f00dfeed\"}\n{\"event\":\"result\",\"nonce\":\"6\"}\n");
    j = svc_code_lines_take(r, &broken);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "nonce")), "6");
    json_decref(j);
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    feed(r, "not json\n"); /* after the sync, the reader is strict again */
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_not_equal(broken, "");
    svc_code_lines_free(r);
}

static void test_answer_checked(void **state)
{
    (void)state;
    /* Not a result, or a status the API does not know: no answer. */
    json_t *l = json_loads("{\"event\":\"ready\",\"status\":\"ok\"}", 0, NULL);
    assert_null(svc_code_answer(l, CLR_MIB));
    json_decref(l);
    static const char *const not_a_cell[] = {"pwned", "restarted", "bridge_error", "oom",
                                             "sandbox_failed"};
    for (size_t i = 0; i < sizeof(not_a_cell) / sizeof(not_a_cell[0]); i++) {
        l = json_pack("{s:s, s:s}", "event", "result", "status", not_a_cell[i]);
        if (svc_code_answer(l, CLR_MIB))
            fail_msg("status %s passed for a cell's", not_a_cell[i]);
        json_decref(l);
    }
    /* The control: the bridge's own statuses pass. */
    static const char *const a_cell[] = {"ok", "error", "timeout", "died"};
    for (size_t i = 0; i < sizeof(a_cell) / sizeof(a_cell[0]); i++) {
        l = json_pack("{s:s, s:s}", "event", "result", "status", a_cell[i]);
        json_t *got = svc_code_answer(l, CLR_MIB);
        assert_non_null(got);
        assert_string_equal(json_string_value(json_object_get(got, "status")), a_cell[i]);
        json_decref(got);
        json_decref(l);
    }
    /* Fields of the wrong type become empty; unknown fields go; a bundle keeps strings (and
     * any JSON for application/json). */
    l = json_loads("{\"event\":\"result\",\"status\":\"ok\",\"execution_count\":\"7\","
                   "\"stdout\":5,\"stderr\":\"e\",\"result\":{\"text/plain\":\"42\","
                   "\"image/png\":{\"x\":1},\"application/json\":{\"a\":[1]}},"
                   "\"displays\":[{\"image/png\":\"iVBO\"},7,\"x\"],\"error\":{\"name\":3},"
                   "\"truncated\":\"yes\",\"restarted\":true,\"extra\":1}",
                   0, NULL);
    json_t *a = svc_code_answer(l, CLR_MIB);
    json_decref(l);
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "ok");
    assert_true(json_is_null(json_object_get(a, "execution_count")));
    assert_string_equal(json_string_value(json_object_get(a, "stdout")), "");
    assert_string_equal(json_string_value(json_object_get(a, "stderr")), "e");
    json_t *res = json_object_get(a, "result");
    assert_string_equal(json_string_value(json_object_get(res, "text/plain")), "42");
    assert_null(json_object_get(res, "image/png"));
    assert_true(json_is_object(json_object_get(res, "application/json")));
    assert_int_equal(json_array_size(json_object_get(a, "displays")), 1);
    json_t *err = json_object_get(a, "error");
    assert_string_equal(json_string_value(json_object_get(err, "name")), "");
    assert_string_equal(json_string_value(json_object_get(err, "traceback")), "");
    assert_true(json_is_false(json_object_get(a, "truncated")));
    assert_true(json_is_true(json_object_get(a, "restarted")));
    assert_null(json_object_get(a, "extra"));
    assert_true(json_is_null(json_object_get(a, "message")));
    json_decref(a);
}

/* ---- the daemon's own output cap (the bridge is in the sandbox: it may ignore its own) ---- */

#define CAP 1024

/* What a streamed cell's client got: the texts' bytes, each checked to be a whole text. */
struct got {
    int n;
    size_t bytes;
    char last[CAP + 1];
};

static void on_capped_event(void *ctx, json_t *ev)
{
    struct got *g = ctx;
    json_t *text = json_object_get(ev, "text");
    assert_true(json_is_string(text));
    g->n++;
    g->bytes += json_string_length(text);
    snprintf(g->last, sizeof(g->last), "%s", json_string_value(text));
}

static void feed_event(struct code_lines *r, const char *stream, const char *text)
{
    json_t *ev = json_pack("{s:s, s:s}", "event", stream, "text", text);
    char *line = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    assert_non_null(line);
    feed(r, line);
    feed(r, "\n");
    free(line);
}

static char *repeat(const char *unit, size_t times)
{
    size_t n = strlen(unit);
    char *s = malloc(n * times + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * n, unit, n);
    s[n * times] = '\0';
    return s;
}

/* A bridge that streams past the cell's cap: its client gets at most output_cap bytes of text,
 * cut before a character, never inside one, and the reader says it cut; the next cell counts
 * afresh. The control: texts within the cap pass unchanged, nothing said cut. */
static void test_lines_events_capped(void **state)
{
    (void)state;
    struct code_lines *r = svc_code_lines_new(64 * 1024);
    struct got g = {0};
    svc_code_lines_on_event(r, on_capped_event, &g, CAP);
    feed_event(r, "stdout", "hello ");
    feed_event(r, "stderr", "world");
    assert_int_equal(g.n, 2);
    assert_int_equal((int)g.bytes, 11);
    assert_false(svc_code_lines_truncated(r));
    /* Past the cap: the crossing text cut, those after it dropped. */
    char *big = repeat("a", 3000);
    for (int i = 0; i < 5; i++)
        feed_event(r, "stdout", big);
    assert_int_equal((int)g.bytes, CAP);
    assert_int_equal(g.n, 3);
    assert_true(svc_code_lines_truncated(r));
    free(big);
    /* The next cell: a fresh count; a two-byte character that would cross the cap is left out
     * whole (the text ends before it), as is the next one, with one byte of room. */
    memset(&g, 0, sizeof(g));
    svc_code_lines_on_event(r, on_capped_event, &g, CAP);
    assert_false(svc_code_lines_truncated(r));
    char *edge = repeat("a", CAP - 1);
    char *crossing = malloc(CAP + 8);
    snprintf(crossing, CAP + 8, "%s\xc3\xa9tail", edge);
    feed_event(r, "stdout", crossing);
    feed_event(r, "stdout", "\xc3\xa9"); /* one byte of room: no room for it */
    assert_int_equal(g.n, 1);
    assert_int_equal((int)g.bytes, CAP - 1);
    assert_string_equal(g.last, edge);
    assert_true(svc_code_lines_truncated(r));
    free(edge);
    free(crossing);
    /* No cell's callback: nothing passes, nothing counted. */
    svc_code_lines_on_event(r, NULL, NULL, 0);
    feed_event(r, "stdout", "x");
    assert_false(svc_code_lines_truncated(r));
    const char *broken = NULL;
    assert_null(svc_code_lines_take(r, &broken));
    assert_string_equal(broken, "");
    svc_code_lines_free(r);
}

/* The output bytes of an answer as output_cap counts them. */
static size_t bundle_bytes(json_t *b)
{
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v)
    {
        if (json_is_string(v)) {
            n += json_string_length(v);
        } else {
            char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            n += strlen(t);
            free(t);
        }
    }
    return n;
}

static size_t output_bytes(json_t *a)
{
    size_t n = json_string_length(json_object_get(a, "stdout")) +
               json_string_length(json_object_get(a, "stderr")) +
               bundle_bytes(json_object_get(a, "result"));
    json_t *d;
    size_t i;
    json_array_foreach(json_object_get(a, "displays"), i, d)
        n += bundle_bytes(d);
    json_t *e = json_object_get(a, "error");
    static const char *const fields[] = {"name", "value", "traceback"};
    for (size_t f = 0; e && f < 3; f++)
        n += json_string_length(json_object_get(e, fields[f]));
    return n;
}

/* The answer of a hostile bridge's line (which claims nothing was truncated), held to CAP. */
static json_t *capped(json_t *line)
{
    assert_non_null(line);
    json_object_set_new(line, "event", json_string("result"));
    if (!json_object_get(line, "status"))
        json_object_set_new(line, "status", json_string("ok"));
    json_object_set_new(line, "truncated", json_false());
    json_t *a = svc_code_answer(line, CAP);
    json_decref(line);
    assert_non_null(a);
    if (output_bytes(a) > CAP)
        fail_msg("%zu bytes of output past the cap of %d", output_bytes(a), CAP);
    return a;
}

static const char *text_of(json_t *a, const char *field)
{
    return json_string_value(json_object_get(a, field));
}

/* What a bundle entry costs besides its value: its type's name and 8 (code.c bundle). */
#define ENTRY(mime) ((int)sizeof(mime) - 1 + 8)

static void test_answer_capped(void **state)
{
    (void)state;
    /* The control: an answer within the cap passes whole, not truncated; one the bridge says
     * it cut stays truncated. */
    json_t *a = capped(json_pack(
        "{s:s, s:s, s:{s:s, s:{s:[i,i]}}, s:[{s:s}], s:{s:s, s:s, s:s}}", "stdout", "hello",
        "stderr", "warn", "result", "text/plain", "42", "application/json", "a", 1, 2,
        "displays", "image/png", "iVBORw0KGgo=", "error", "name", "ValueError", "value", "bad",
        "traceback", "Traceback..."));
    assert_string_equal(text_of(a, "stdout"), "hello");
    assert_string_equal(text_of(a, "stderr"), "warn");
    json_t *res = json_object_get(a, "result");
    assert_string_equal(json_string_value(json_object_get(res, "text/plain")), "42");
    assert_true(json_is_object(json_object_get(res, "application/json")));
    assert_int_equal(json_array_size(json_object_get(a, "displays")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(a, "error"), "traceback")),
        "Traceback...");
    assert_true(json_is_false(json_object_get(a, "truncated")));
    json_decref(a);
    json_t *l = json_pack("{s:s, s:s, s:s, s:b}", "event", "result", "status", "ok", "stdout",
                          "x", "truncated", 1);
    a = svc_code_answer(l, CAP);
    json_decref(l);
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* stdout past the cap: cut at it, the texts after it empty, truncated. */
    char *big = repeat("x", 5 * CAP);
    a = capped(json_pack("{s:s, s:s}", "stdout", big, "stderr", "late"));
    assert_int_equal((int)json_string_length(json_object_get(a, "stdout")), CAP);
    assert_string_equal(text_of(a, "stderr"), "");
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* The cut falls before the character that would cross the cap (a 4-byte emoji). */
    char *edge = repeat("a", CAP - 2);
    char crossing[CAP + 8];
    snprintf(crossing, sizeof(crossing), "%s\xf0\x9f\x98\x80", edge);
    a = capped(json_pack("{s:s}", "stderr", crossing));
    assert_string_equal(text_of(a, "stderr"), edge);
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* An image or an application/json value past the room left is dropped whole and takes no
     * room: what follows it is kept. */
    char *half = repeat("b", CAP / 2);
    a = capped(json_pack("{s:s, s:{s:{s:s}, s:s}, s:[{s:s}, {s:s}, {s:s}]}", "stdout", half,
                         "result", "application/json", "k", big, "text/plain", "v", "displays",
                         "image/png", big, "image/svg+xml", big, "text/plain", half));
    res = json_object_get(a, "result");
    assert_null(json_object_get(res, "application/json"));
    assert_string_equal(json_string_value(json_object_get(res, "text/plain")), "v");
    json_t *displays = json_object_get(a, "displays");
    assert_int_equal(json_array_size(displays), 1); /* the dropped images leave no display */
    assert_int_equal(
        (int)json_string_length(json_object_get(json_array_get(displays, 0), "text/plain")),
        CAP / 2 - 1 - 2 * ENTRY("text/plain"));
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* The error's name, value and traceback count too. */
    char *most = repeat("o", CAP - 20);
    a = capped(json_pack("{s:s, s:{s:s, s:s, s:s}}", "stdout", most, "error", "name",
                         "ValueError", "value", big, "traceback", big));
    json_t *err = json_object_get(a, "error");
    assert_string_equal(json_string_value(json_object_get(err, "name")), "ValueError");
    assert_int_equal((int)json_string_length(json_object_get(err, "value")), 10);
    assert_string_equal(json_string_value(json_object_get(err, "traceback")), "");
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* Many small displays, and MIME types the bridge never gives: at most the cap's worth, each
     * value counted with its entry, and only known types. */
    json_t *many = json_array();
    for (int i = 0; i < 3 * CAP; i++)
        json_array_append_new(many, json_pack("{s:s, s:s}", "text/plain", "d", "text/x-evil",
                                              "not counted, never sent"));
    a = capped(json_pack("{s:o}", "displays", many));
    displays = json_object_get(a, "displays");
    assert_int_equal((int)json_array_size(displays), CAP / (1 + ENTRY("text/plain")));
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(displays, 0), "text/plain")), "d");
    assert_null(json_object_get(json_array_get(displays, 0), "text/x-evil"));
    assert_true(json_is_true(json_object_get(a, "truncated")));
    json_decref(a);

    /* Empty values are no output: dropped, and a display of nothing but empty values is none
     * (else thousands of them would answer with megabytes the cap never counted). The control:
     * the same displays with a byte each are kept. */
    json_t *empties = json_array(), *ones = json_array();
    for (int i = 0; i < 3 * CAP; i++) {
        json_array_append_new(empties, json_pack("{s:s, s:s}", "text/plain", "", "text/html",
                                                 ""));
        if (i < 4)
            json_array_append_new(ones, json_pack("{s:s, s:s}", "text/plain", "1", "text/html",
                                                  ""));
    }
    a = capped(json_pack("{s:o, s:{s:s}}", "displays", ones, "result", "text/plain", ""));
    assert_int_equal((int)json_array_size(json_object_get(a, "displays")), 4);
    json_t *d0 = json_array_get(json_object_get(a, "displays"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "text/plain")), "1");
    assert_null(json_object_get(d0, "text/html"));
    assert_int_equal((int)json_object_size(json_object_get(a, "result")), 0);
    json_decref(a);
    a = capped(json_pack("{s:o}", "displays", empties));
    assert_int_equal((int)json_array_size(json_object_get(a, "displays")), 0);
    assert_true(json_is_false(json_object_get(a, "truncated")));
    json_decref(a);

    /* The bridge's message is no output but is bounded all the same. */
    a = capped(json_pack("{s:s}", "message", big));
    assert_true(json_string_length(json_object_get(a, "message")) <= 400);
    assert_true(json_is_false(json_object_get(a, "truncated")));
    json_decref(a);
    free(most);
    free(half);
    free(edge);
    free(big);
}

/* ---- the service, against the scripted engine ---- */

static void expect_refused(clr_service *svc, const char *id, const char *text,
                           clr_error_code code, const char *says)
{
    json_t *req = json_loads(text, 0, NULL);
    assert_non_null(req);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, id, req, "alice", NULL, NULL, &out, &err), -1);
    assert_null(out);
    expect_error(&err, code, says);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_check(svc, id, req, "alice", &err), -1);
    expect_error(&err, code, says);
    json_decref(req);
}

static void test_cell_refused(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    expect_refused(svc, "sb-../etc", "{\"code\":\"1\"}", CLR_E_INVALID, "is not a sandbox id");
    expect_refused(svc, ID_A, "{}", CLR_E_INVALID, "code must be a string");
    expect_refused(svc, ID_A, "{\"code\":1}", CLR_E_INVALID, "code must be a string");
    json_t *nul = json_pack("{s:s%}", "code", "a\0b", (size_t)3);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, nul, "alice", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_INVALID, "NUL");
    json_decref(nul);
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"argv\":[]}", CLR_E_INVALID, "argv");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"timeout\":\"500ms\"}", CLR_E_INVALID,
                   "between 1s and 1h");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"timeout\":7200}", CLR_E_INVALID,
                   "between 1s and 1h");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"timeout\":true}", CLR_E_INVALID,
                   "between 1s and 1h");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"timeout\":\"soon\"}", CLR_E_INVALID, "soon");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"output_cap\":\"1g\"}", CLR_E_INVALID,
                   "output_cap");
    expect_refused(svc, ID_A, "{\"code\":\"1\",\"output_cap\":10}", CLR_E_INVALID, "output_cap");
    expect_refused(svc, NO_ROW, "{\"code\":\"1\"}", CLR_E_NOT_FOUND, "no sandbox");
    expect_refused(svc, ID_L, "{\"code\":\"1\"}", CLR_E_CONFLICT, "lost (oom)");
    assert_int_equal(fake_count(e->f, "POST "), 0);
    assert_int_equal((int)audit_count(e, "code.start"), 0);

    /* The audit log refuses: nothing runs. */
    test_env_break_audit(e, true);
    json_t *req = json_pack("{s:s}", "code", "1");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    assert_non_null(strstr(err.message, "audit log"));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_A, "alice", &out, &err), -1);
    assert_non_null(strstr(err.message, "audit log"));
    assert_int_equal(fake_count(e->f, "POST "), 0);
    test_env_break_audit(e, false);
    json_decref(req);
    /* The restart refuses what a cell refuses. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_L, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_CONFLICT, "lost (oom)");
}

static void script_running_a(struct test_env *e)
{
    script_running(e, ID_A, "cid-a");
}

/* A bridge the engine refuses to start: a clear error, audited, and the next call tries again
 * (nothing left held). */
static void test_bridge_that_ends(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    script_running_a(e);
    fake_answer(e->f, "POST " TEST_API "cid-", 404, "{\"message\":\"No such container\"}");
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    json_decref(req);
    expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
    json_decref(expect_audit(e, "code", "error", ID_A, "alice"));
    assert_int_equal((int)audit_count(e, "code.start"), 1);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 1);
    /* Nothing was left held: the restart starts a bridge again (and fails the same way). */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_A, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
    json_t *r = expect_audit(e, "code.restart", "error", ID_A, "alice");
    assert_true(json_is_false(json_object_get(json_object_get(r, "details"), "kernel_ended")));
    json_decref(r);
    /* Its one record, written once its outcome was known: no "ok" before it. */
    assert_int_equal((int)audit_count(e, "code.restart"), 1);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 2);
    /* No cell runs or waits: the sandbox is not busy for the reaper. */
    assert_false(svc_code_busy(svc, ID_A));
    /* The session is there while its sandbox runs; gone once it is not. */
    assert_int_equal((int)svc_code_prune(svc), 0);
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "client");
    assert_int_equal((int)svc_code_prune(svc), 1);
    assert_int_equal((int)svc_code_prune(svc), 0);
}

/* A bridge that printed more than its budget leaves for a cell (all it may print is 64 MiB):
 * the cell ends the kernel and starts a fresh one. When that start fails, the cell is an error
 * that says the kernel ended (recorded error, kernel_ended), not a refusal that changed
 * nothing; the notice stays for the next cell that gets a kernel. */
static void test_budget_spent_then_no_kernel(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    atomic_store(&fixed_nonce, true);
    script_running_a(e);
    /* Two stdout lines of 17.4 MB (in frames of 60000 bytes), dropped before any cell but
     * counted: 34.8 MB printed; a cell of output_cap 4m needs 32 MiB + 64 KiB of room. */
    enum { CHUNKS = 290, N = 1 + 2 * (CHUNKS + 2) + 2 };
    char *chunk = malloc(60001);
    assert_non_null(chunk);
    memset(chunk, 'x', 60000);
    chunk[60000] = '\0';
    const char *lines[N];
    size_t k = 0;
    lines[k++] = "{\"event\":\"ready\"}\n";
    for (int l = 0; l < 2; l++) {
        lines[k++] = "{\"event\":\"stdout\",\"text\":\"";
        for (int i = 0; i < CHUNKS; i++)
            lines[k++] = chunk;
        lines[k++] = "\"}\n";
    }
    lines[k++] = answering_bridge[1];
    lines[k++] = NULL;
    assert_int_equal(k, N);
    script_bridge(e, "cid-a", "exec-a1", lines);
    free(chunk);
    json_t *req = json_pack("{s:s, s:s}", "code", "1+1", "output_cap", "4m");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    expect_answer(out, "ok", false, NULL); /* the control: the first cell had room */
    out = NULL;
    fake_answer_n(e->f, "POST " TEST_API "cid-a/exec", 404,
                  "{\"message\":\"No such container\"}", 1);
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "output budget was spent and its kernel ended");
    json_t *r = expect_audit(e, "code", "error", ID_A, "alice");
    assert_true(json_is_true(json_object_get(json_object_get(r, "details"), "kernel_ended")));
    json_decref(r);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 2);
    /* The next cell that gets a kernel says the last one's state is gone. */
    script_bridge(e, "cid-a", "exec-a3", answering_bridge);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), 0);
    expect_answer(out, "ok", true, "output budget was spent");
    json_decref(req);
    atomic_store(&fixed_nonce, false);
}

/* The reaper's prune looks at 64 candidates a pass: sessions of running sandboxes that keep
 * nothing (their bridge never started) are moved behind the rest, so a destroyed sandbox's
 * session behind 65 of them is freed within two passes (it never was before). */
static void test_prune_not_starved(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    fake_answer(e->f, "POST " TEST_API "cid-", 404, "{\"message\":\"No such container\"}");
    enum { N = 66 };
    char ids[N][CLR_SANDBOX_ID_MAX + 1];
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "sb-%016x", 0xe00 + i);
        test_env_row(e, ids[i], now + 36000, 1000, 0);
        char cid[32];
        snprintf(cid, sizeof(cid), "cid-e%d", i);
        script_running(e, ids[i], cid);
        json_t *req = json_pack("{s:s}", "code", "1");
        json_t *out = NULL;
        clr_error err = CLR_ERROR_INIT;
        assert_int_equal(
            clr_service_code_run(svc, ids[i], req, "alice", NULL, NULL, &out, &err), -1);
        expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
        json_decref(req);
    }
    /* The control: while all run, nothing is freed. */
    assert_int_equal((int)svc_code_prune(svc), 0);
    /* The first made is the last in the list (new ones go first). */
    test_env_set_state(e, ids[0], CLR_STATE_DESTROYED, "client");
    size_t freed = svc_code_prune(svc);
    freed += svc_code_prune(svc);
    assert_int_equal((int)freed, 1);
    assert_int_equal((int)svc_code_prune(svc), 0);
}

/* The engine's own error line on the bridge's exec stream (runsc failing an exec on a loaded
 * host): nothing ran, so the start is tried again, three times in all, and the error that is
 * left is the engine's, with no kill of the sandbox. */
static const uint8_t engine_line[] =
    "\x01\x00\x00\x00\x00\x00\x00\x72"
    "OCI runtime exec failed: /var/lib/docker/runtimes/runsc did not terminate successfully: "
    "exit status 128: unknown\r\n";

static void test_bridge_start_retried(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    script_running_a(e);
    fake_answer(e->f, "POST " TEST_API "cid-", 201, "{\"Id\":\"exec-1\"}");
    fake_answer(e->f, "POST " TEST_API "cid-a/kill", 204, NULL);
    fake_answer_bytes(e->f, "POST /v1.41/exec/exec-1/start", 200, engine_line,
                      sizeof(engine_line) - 1);
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    json_decref(req);
    if (!strstr(err.message, "OCI runtime exec failed"))
        fail_msg("error: %s", err.message);
    assert_true(fake_count(e->f, "POST /v1.41/exec/exec-1/start") >= 1); /* it was started */
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 3);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/kill"), 0);
}

/* A cell holds a command slot, as an exec does: with the tenant's one slot taken, a cell is
 * refused (CLR_E_LIMIT, audited, nothing sent to the engine); with it free, the cell goes to the
 * engine (the control) and gives its slot back when it ends. */
static void test_cell_takes_a_command_slot(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    const clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_execs = 1}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 1;
    script_running_a(e);
    fake_answer(e->f, "POST " TEST_API "cid-", 404, "{\"message\":\"No such container\"}");
    atomic_store(&svc->tenant_execs[0], 1); /* the tenant's one slot is held */
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, "max_execs 1 for tenant default");
    json_decref(expect_audit(e, "code", "refused", ID_A, "alice"));
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 0);
    /* Free: the cell reaches the engine (which refuses it), and holds nothing after. */
    atomic_store(&svc->tenant_execs[0], 0);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_A, req, "alice", NULL, NULL, &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 1);
    assert_int_equal(atomic_load(&svc->tenant_execs[0]), 0);
    assert_int_equal(atomic_load(&svc->running_execs), 0);
    json_decref(req);
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

/* A bridge that starts and stays: the exec's stream (in the engine's multiplexing) carries one
 * agent STDOUT frame with the bridge's ready line, then stays open, silent. */
static const char ready_line[] = "{\"event\":\"ready\"}\n";
static uint8_t ready_stream[8 + 12 + sizeof(ready_line) - 1];

static void script_ready_bridges(struct test_env *e)
{
    size_t n = sizeof(ready_line) - 1;
    uint8_t *p = ready_stream;
    const uint8_t mux[8] = {1, 0, 0, 0, 0, 0, 0, (uint8_t)(12 + n)}; /* stdout, 12 + n bytes */
    memcpy(p, mux, 8);
    const uint8_t frame[12] = {0, 0, 0, (uint8_t)n, 0, 0, 0, 1, 4, 0, 0, 0}; /* STDOUT, ch 1 */
    memcpy(p + 8, frame, 12);
    memcpy(p + 20, ready_line, n);
    fake_answer(e->f, "POST " TEST_API "cid-", 201, "{\"Id\":\"exec-1\"}");
    fake_answer_bytes(e->f, "POST /v1.41/exec/exec-1/start", 200, ready_stream,
                      sizeof(ready_stream));
}

/* max_code_sessions: a tenant whose sandboxes run as many kernels as its quota allows is
 * refused another (429 limit naming the quota and what to do, audited, counted in refused,
 * nothing sent to the engine for it: a cell, the stream's check and a restart alike), while a
 * sandbox that holds a kernel keeps it across its restart. The control: with a quota of two, the
 * second sandbox's kernel starts. */
static void test_code_sessions_quota(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_code_sessions = 1}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 1;
    script_running(e, ID_A, "cid-a");
    script_running(e, ID_B, "cid-b");
    script_ready_bridges(e);
    expect_restart(svc, ID_A); /* A's kernel: the tenant's one */
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 1);
    uint64_t refused = atomic_load(&svc->refused);

    static const char *const says =
        "tenant default is at its quota: 1 code sessions are running in its sandboxes "
        "(max_code_sessions 1 for tenant default); end one (DELETE /v1/sandboxes/ID/code, or "
        "destroy a sandbox whose code session is no longer needed) or ask the operator to "
        "raise tenants.default.max_code_sessions";
    json_t *req = json_pack("{s:s}", "code", "1+1");
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_run(svc, ID_B, req, "alice", NULL, NULL, &out, &err), -1);
    assert_null(out);
    expect_error(&err, CLR_E_LIMIT, says);
    json_decref(expect_audit(e, "code", "refused", ID_B, "alice"));
    assert_int_equal((int)audit_count(e, "code.start"), 0); /* refused before it is recorded */
    assert_int_equal(audit_count_where(e, "code", "sandbox", ID_B, "outcome", "refused", NULL,
                                       NULL),
                     1);
    /* The stream's check refuses it the same way, and records it the same way. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_check(svc, ID_B, req, "alice", &err), -1);
    expect_error(&err, CLR_E_LIMIT, "max_code_sessions 1 for tenant default");
    json_t *r = expect_audit(e, "code", "refused", ID_B, "alice");
    if (!strstr(json_string_value(json_object_get(json_object_get(r, "details"), "error")),
                "max_code_sessions 1 for tenant default"))
        fail_msg("the stream's refusal's record does not name the quota");
    json_decref(r);
    assert_int_equal(audit_count_where(e, "code", "sandbox", ID_B, "outcome", "refused", NULL,
                                       NULL),
                     2);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_B, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_LIMIT, says);
    json_decref(expect_audit(e, "code.restart", "refused", ID_B, "alice"));
    assert_int_equal((int)audit_count(e, "code.restart"), 2); /* A's, and B's refusal alone */
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 0);
    assert_true(atomic_load(&svc->refused) >= refused + 3);
    /* A holds its kernel: the check passes for it (and records nothing), and its restart
     * takes its own place again, its record saying it ended the kernel that ran. */
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_check(svc, ID_A, req, "alice", &err), 0);
    assert_int_equal(audit_count_where(e, "code", "sandbox", ID_A, NULL, NULL, NULL, NULL), 0);
    expect_restart(svc, ID_A);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 2);
    r = expect_audit(e, "code.restart", "ok", ID_A, "alice");
    assert_true(json_is_true(json_object_get(json_object_get(r, "details"), "kernel_ended")));
    json_decref(r);

    /* The control: room for two, B's kernel starts. */
    quotas[0].max_code_sessions = 2;
    expect_restart(svc, ID_B);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 1);

    /* A quota lowered below what runs (an operator's reload): the refusal says how many run,
     * and what the maximum is. */
    test_env_row(e, ID_C, (int64_t)time(NULL) + 36000, 1000, 0);
    script_running(e, ID_C, "cid-c");
    quotas[0].max_code_sessions = 1;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_check(svc, ID_C, req, "alice", &err), -1);
    expect_error(&err, CLR_E_LIMIT,
                 "tenant default is at its quota: 2 code sessions are running in its sandboxes "
                 "(max_code_sessions 1 for tenant default)");
    quotas[0].max_code_sessions = 2;

    /* A restart that ends A's running kernel and cannot start the next one (the engine's
     * runsc failing every exec): its one record is an error (its kernel was ended, so it was
     * not merely refused, as its error's code alone would say), and no "ok" is written. */
    fake_answer_bytes(e->f, "POST /v1.41/exec/exec-1/start", 200, engine_line,
                      sizeof(engine_line) - 1);
    int oks = audit_count_where(e, "code.restart", "sandbox", ID_A, "outcome", "ok", NULL, NULL);
    int all = (int)audit_count(e, "code.restart");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_A, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_UNAVAILABLE, "OCI runtime exec failed");
    r = expect_audit(e, "code.restart", "error", ID_A, "alice");
    assert_true(json_is_true(json_object_get(json_object_get(r, "details"), "kernel_ended")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "details"), "code")),
                        "unavailable");
    json_decref(r);
    assert_int_equal(audit_count_where(e, "code.restart", "sandbox", ID_A, "outcome", "ok", NULL,
                                       NULL),
                     oks);
    assert_int_equal((int)audit_count(e, "code.restart"), all + 1);
    json_decref(req);
    svc_code_stop(svc); /* before the quota goes away */
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

/* A tenant without a quota has the default share; a quota without the key, the same. */
static void test_code_sessions_default(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    assert_int_equal(svc_code_sessions_max(svc, "acme"), CLR_SERVICE_TENANT_CODE_SESSIONS);
    assert_int_equal(svc_code_sessions_max(svc, NULL), CLR_SERVICE_TENANT_CODE_SESSIONS);
    const clr_tenant_quota quotas[2] = {{.name = "acme", .max_execs = 3},
                                        {.name = "beta", .max_code_sessions = 5}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 2;
    assert_int_equal(svc_code_sessions_max(svc, "acme"), CLR_SERVICE_TENANT_CODE_SESSIONS);
    assert_int_equal(svc_code_sessions_max(svc, "beta"), 5);
    assert_int_equal(svc_code_sessions_max(svc, CLR_TENANT_DEFAULT),
                     CLR_SERVICE_TENANT_CODE_SESSIONS);
    assert_true(CLR_SERVICE_TENANT_CODE_SESSIONS < CLR_SERVICE_CODE_SESSIONS_MAX);
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

static void expect_gone(clr_service *svc, const char *id, const char *says, const char *too)
{
    json_t *a = svc_code_sandbox_gone(svc, id);
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "sandbox_failed");
    const char *msg = json_string_value(json_object_get(a, "message"));
    assert_non_null(msg);
    if (!strstr(msg, says) || !strstr(msg, too))
        fail_msg("message: %s", msg);
    assert_null(strstr(msg, "kernel")); /* never told as a kernel that died */
    assert_true(json_is_false(json_object_get(a, "restarted")));
    assert_true(json_is_null(json_object_get(a, "execution_count")));
    json_decref(a);
}

/* A cell whose bridge ended under it: while its sandbox runs, the bridge's own account stands
 * (NULL: the control); once the sandbox is destroyed (by DELETE, its lifetime, the reaper) or
 * lost, the answer is sandbox_failed naming the state and its reason, as an exec's. */
static void test_sandbox_gone(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    assert_null(svc_code_sandbox_gone(svc, ID_A));
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "client");
    expect_gone(svc, ID_A, "destroyed while the cell ran", "reason: client");
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "expired");
    expect_gone(svc, ID_A, "destroyed while the cell ran", "reason: expired");
    test_env_set_state(e, ID_A, CLR_STATE_DESTROYED, "idle");
    expect_gone(svc, ID_A, "destroyed while the cell ran", "reason: idle");
    expect_gone(svc, ID_L, "lost while the cell ran", "(oom)");
    expect_gone(svc, NO_ROW, "record is gone", "session ended");
}

/* A kernel that ended with its state (a cell broke its bridge): the next cell that gets a
 * kernel says so (restarted true, why), however many cells were refused on the way (its
 * tenant's max_code_sessions full, a kernel that would not start); a restart that ended a
 * kernel and could not start another is said the same way. Before the fix the refused cell
 * took the notice with it, and the next one answered restarted false. The controls: the next
 * cell says it at once; a cell after a restart that worked says nothing. */
static void test_lost_kernel_said_after_refusals(void **state)
{
    struct test_env *e = *state;
    clr_service *svc = &e->svc;
    clr_tenant_quota quotas[1] = {{.name = CLR_TENANT_DEFAULT, .max_code_sessions = 2}};
    svc->cfg.tenants = quotas;
    svc->cfg.ntenants = 1;
    atomic_store(&fixed_nonce, true);
    script_running(e, ID_A, "cid-a");
    script_running(e, ID_B, "cid-b");
    static const char *const lost = "the last kernel ended: this is a fresh one (its state is "
                                    "gone)";
    static const char *const no_container = "{\"message\":\"No such container\"}";

    /* The control: A's kernel ends under a cell; the next cell, on a fresh kernel, says so. */
    script_bridge(e, "cid-a", "exec-a1", breaking_bridge);
    expect_answer(cell_answer(svc, ID_A), "died", true, "not a JSON object with an event");
    script_bridge(e, "cid-a", "exec-a2", answering_bridge);
    expect_answer(cell_answer(svc, ID_A), "ok", true, lost);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-a/exec"), 2);

    /* B's kernel ends the same way; A keeps its own. */
    script_bridge(e, "cid-b", "exec-b1", breaking_bridge);
    expect_answer(cell_answer(svc, ID_B), "died", true, "not a JSON object with an event");
    /* Refused: the tenant's one place is A's. */
    quotas[0].max_code_sessions = 1;
    cell_refused(svc, ID_B, CLR_E_LIMIT, "max_code_sessions 1 for tenant default");
    /* Refused: room again, but the engine does not start B's kernel. */
    quotas[0].max_code_sessions = 2;
    fake_answer_n(e->f, "POST " TEST_API "cid-b/exec", 404, no_container, 1);
    cell_refused(svc, ID_B, CLR_E_NOT_FOUND, "does not exist");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 2);
    /* The next cell that gets a kernel still says the last one's state is gone. */
    script_bridge(e, "cid-b", "exec-b2", answering_bridge);
    expect_answer(cell_answer(svc, ID_B), "ok", true, lost);
    json_decref(expect_audit(e, "code", "ok", ID_B, "alice"));
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 3);

    /* The control: a restart that works says it itself; the next cell says nothing. */
    script_bridge(e, "cid-a", "exec-a3", answering_bridge);
    expect_restart(svc, ID_A);
    expect_answer(cell_answer(svc, ID_A), "ok", false, NULL);
    /* A restart that ends B's kernel and cannot start another: the next cell says so. */
    fake_answer_n(e->f, "POST " TEST_API "cid-b/exec", 404, no_container, 1);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_B, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
    script_bridge(e, "cid-b", "exec-b3", answering_bridge);
    expect_answer(cell_answer(svc, ID_B), "ok", true, "ended by a restart that could not start");
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 5);
    /* The same failed restart, then one that works: its answer is the notice, and the next cell
     * says nothing of the kernel before it. */
    fake_answer_n(e->f, "POST " TEST_API "cid-b/exec", 404, no_container, 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_service_code_restart(svc, ID_B, "alice", &out, &err), -1);
    expect_error(&err, CLR_E_NOT_FOUND, "does not exist");
    script_bridge(e, "cid-b", "exec-b4", answering_bridge);
    expect_restart(svc, ID_B);
    expect_answer(cell_answer(svc, ID_B), "ok", false, NULL);
    assert_int_equal(fake_count(e->f, "POST " TEST_API "cid-b/exec"), 7);

    atomic_store(&fixed_nonce, false);
    svc_code_stop(svc); /* before the quota goes away */
    svc->cfg.tenants = NULL;
    svc->cfg.ntenants = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_split_and_joined),
        cmocka_unit_test(test_lines_output_events),
        cmocka_unit_test(test_lines_lies),
        cmocka_unit_test(test_lines_resync),
        cmocka_unit_test(test_answer_checked),
        cmocka_unit_test(test_lines_events_capped),
        cmocka_unit_test(test_answer_capped),
        cmocka_unit_test_setup_teardown(test_cell_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bridge_that_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_not_starved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_spent_then_no_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bridge_start_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cell_takes_a_command_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_sessions_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_code_sessions_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_kernel_said_after_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
