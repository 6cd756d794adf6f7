/* Unit tests of the egress policy: parsing, matching, the internal-address rules, tightening.
 * Names that need resolving are only "localhost" (from /etc/hosts), so no test needs DNS. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/clearing.h"

static clr_egress_policy *parse(const char *json)
{
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    assert_non_null(j);
    clr_egress_policy *p = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_egress_policy_parse(&p, j, &err) < 0)
        fail_msg("%s: %s", json, err.message);
    json_decref(j);
    return p;
}

static void refused(const char *json, const char *word)
{
    json_t *j = json_loads(json, 0, NULL);
    clr_egress_policy *p = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_egress_policy_parse(&p, j, &err), -1);
    assert_null(p);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, word))
        fail_msg("%s: '%s' does not say '%s'", json, err.message, word);
    json_decref(j);
}

static void test_parse_and_defaults(void **state)
{
    (void)state;
    clr_egress_policy *p = parse("{\"allow\": [\"PyPI.org\", \"*.github.com:443\", "
                                 "\"10.1.2.3:8080\", \"[::1]:99\", \"files.example.\"]}");
    assert_int_equal(p->n, 5);
    assert_string_equal(p->rules[0].host, "pypi.org");
    assert_int_equal(p->rules[0].port, 0);
    assert_string_equal(p->rules[1].host, "*.github.com");
    assert_int_equal(p->rules[1].port, 443);
    assert_string_equal(p->rules[3].host, "::1");
    assert_string_equal(p->rules[4].host, "files.example");
    assert_int_equal(p->max_connections, CLR_EGRESS_DEFAULT_CONNECTIONS);
    assert_int_equal(p->max_bytes, CLR_EGRESS_DEFAULT_BYTES);
    json_t *back = clr_egress_policy_to_json(p);
    clr_egress_policy *q = NULL;
    assert_int_equal(clr_egress_policy_parse(&q, back, NULL), 0);
    assert_int_equal(q->n, 5);
    assert_true(clr_egress_policy_within(q, p) && clr_egress_policy_within(p, q));
    json_decref(back);
    clr_egress_policy_free(q);
    clr_egress_policy_free(p);
}

static void test_malformed(void **state)
{
    (void)state;
    refused("[]", "object");
    refused("{\"allow\": \"x\"}", "list");
    refused("{\"allow\": [1]}", "string");
    refused("{\"allow\": [\"*\"]}", "expected");
    refused("{\"allow\": [\"a.*.com\"]}", "expected");
    refused("{\"allow\": [\"a..com\"]}", "expected");
    refused("{\"allow\": [\"host:0\"]}", "port");
    refused("{\"allow\": [\"host:65536\"]}", "port");
    refused("{\"allow\": [\"::1\"]}", "[addr]");
    refused("{\"allow\": [\"user@host\"]}", "expected");
    refused("{\"max_connections\": 0}", "max_connections");
    refused("{\"max_bytes\": \"lots\"}", "max_bytes");
    refused("{\"idle_timeout\": \"5ms\"}", "idle_timeout");
    refused("{\"deny\": []}", "no field");
}

static bool internal(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        fail_msg("bad test address %s", ip);
    return clr_egress_address_internal((struct sockaddr *)&ss);
}

static void test_internal_addresses(void **state)
{
    (void)state;
    const char *in[] = {"127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.255",
                        "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
                        "255.255.255.255", "::", "::1", "fe80::1", "fd00:ec2::254", "fc00::1",
                        "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        if (!internal(in[i]))
            fail_msg("%s should be internal", in[i]);
    }
    const char *out[] = {"1.1.1.1", "8.8.8.8", "172.32.0.1", "192.169.0.1", "100.128.0.1",
                         "2001:4860:4860::8888", "::ffff:1.1.1.1"};
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
        if (internal(out[i]))
            fail_msg("%s should not be internal", out[i]);
    }
}

static void deny(const clr_egress_policy *p, const char *host, unsigned port, const char *word)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char why[400];
    if (clr_egress_decide(p, host, port, &ss, &len, why, sizeof(why)) == 0)
        fail_msg("%s:%u was allowed", host, port);
    if (!strstr(why, word))
        fail_msg("%s:%u: '%s' does not say '%s'", host, port, why, word);
}

static void test_decide(void **state)
{
    (void)state;
    clr_egress_policy *p = parse("{\"allow\": [\"127.0.0.1:8080\", \"localhost:9090\", "
                                 "\"*.example.com\", \"[::1]:7070\"]}");
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char why[400];
    /* a listed address: allowed, and that address is the one to connect to */
    assert_int_equal(clr_egress_decide(p, "127.0.0.1", 8080, &ss, &len, why, sizeof(why)), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    assert_int_equal(clr_egress_decide(p, "::1", 7070, &ss, &len, why, sizeof(why)), 0);
    deny(p, "127.0.0.1", 8081, "not on the");      /* another port */
    deny(p, "127.0.0.2", 8080, "not on the");      /* another address */
    deny(p, "10.0.0.1", 80, "not on the");         /* private, unlisted */
    deny(p, "169.254.169.254", 80, "not on the");  /* metadata */
    deny(p, "localhost", 9090, "internal");        /* a name to loopback, address unlisted */
    deny(p, "example.com", 443, "not on the");     /* *.example.com is not example.com */
    deny(p, "evil.com", 443, "not on the");
    deny(p, "a.example.com", 22, "not on the");    /* no port: 80 and 443 only */
    deny(p, "*.example.com", 443, "not a host");
    deny(p, "bad host", 80, "not a host");
    clr_egress_policy_free(p);
    /* a name whose address is listed too */
    p = parse("{\"allow\": [\"localhost:9090\", \"127.0.0.1:9090\"]}");
    assert_int_equal(clr_egress_decide(p, "localhost", 9090, &ss, &len, why, sizeof(why)), 0);
    clr_egress_policy_free(p);
    /* nothing allowed */
    p = parse("{}");
    deny(p, "127.0.0.1", 80, "not on the");
    clr_egress_policy_free(p);
}

static void test_tighten_only(void **state)
{
    (void)state;
    clr_egress_policy *p = parse("{\"allow\": [\"*.example.com\", \"api.test:8443\"], "
                                 "\"max_connections\": 8}");
    clr_egress_policy *t = parse("{\"allow\": [\"a.example.com:443\"], \"max_connections\": 4}");
    assert_true(clr_egress_policy_within(t, p));
    clr_egress_policy *more = parse("{\"allow\": [\"a.example.com:22\"]}");
    assert_false(clr_egress_policy_within(more, p)); /* port 22 was never allowed */
    clr_egress_policy *conns = parse("{\"allow\": [], \"max_connections\": 9}");
    assert_false(clr_egress_policy_within(conns, p));
    clr_egress_policy *other = parse("{\"allow\": [\"api.test:8444\"]}");
    assert_false(clr_egress_policy_within(other, p));
    clr_egress_policy_free(p);
    clr_egress_policy_free(t);
    clr_egress_policy_free(more);
    clr_egress_policy_free(conns);
    clr_egress_policy_free(other);
}

/* The fork's policy from the one its request names and its source's, or the refusal's words. */
static json_t *narrow(const char *want, const char *had, const char *refused_word)
{
    json_t *w = want ? json_loads(want, 0, NULL) : NULL;
    json_t *h = had ? json_loads(had, JSON_DECODE_ANY, NULL) : NULL;
    assert_true(!want || w);
    assert_true(!had || h);
    json_t *out = NULL;
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_egress_policy_narrow(&out, w, h, &err);
    json_decref(w);
    json_decref(h);
    if (refused_word) {
        assert_int_equal(rc, -1);
        assert_null(out);
        assert_int_equal(err.code, CLR_E_INVALID);
        if (!strstr(err.message, refused_word) || !strstr(err.message, "narrowed, not widened"))
            fail_msg("%s: '%s' does not say '%s'", want, err.message, refused_word);
        return NULL;
    }
    if (rc < 0)
        fail_msg("%s: %s", want, err.message);
    return out;
}

static void test_fork_narrows(void **state)
{
    (void)state;
    /* The source's policy as the store keeps it (clr_egress_policy_to_json). */
    const char *had = "{\"allow\": [\"*.example.com\", \"api.test:8443\"], "
                      "\"max_connections\": 4, \"max_bytes\": 1000000, "
                      "\"idle_timeout\": \"10000ms\"}";
    /* Nothing named: the source's policy whole. */
    json_t *o = narrow(NULL, had, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "allow")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "max_connections")), 4);
    assert_int_equal(json_integer_value(json_object_get(o, "max_bytes")), 1000000);
    assert_string_equal(json_string_value(json_object_get(o, "idle_timeout")), "10000ms");
    json_decref(o);
    /* Only allow named: the limits left out are the source's, not the (looser) defaults. */
    o = narrow("{\"allow\": [\"a.example.com:443\"]}", had, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "allow")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "allow"), 0)),
                        "a.example.com:443");
    assert_int_equal(json_integer_value(json_object_get(o, "max_connections")), 4);
    assert_int_equal(json_integer_value(json_object_get(o, "max_bytes")), 1000000);
    assert_string_equal(json_string_value(json_object_get(o, "idle_timeout")), "10000ms");
    json_decref(o);
    /* Only limits named, each tighter: the rules left out are the source's. */
    o = narrow("{\"max_connections\": 2, \"max_bytes\": \"1k\", \"idle_timeout\": \"5s\"}",
               had, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "allow")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "max_connections")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "max_bytes")), 1024);
    assert_string_equal(json_string_value(json_object_get(o, "idle_timeout")), "5000ms");
    json_decref(o);
    /* Each field looser than the source's is refused, naming it. */
    narrow("{\"allow\": [\"evil.test\"]}", had, "egress.allow[0]");
    narrow("{\"allow\": [\"api.test:8444\"]}", had, "egress.allow[0]");
    narrow("{\"max_connections\": 5}", had, "egress.max_connections");
    narrow("{\"max_bytes\": \"2m\"}", had, "egress.max_bytes");
    narrow("{\"idle_timeout\": \"11s\"}", had, "egress.idle_timeout");
    /* A source with no policy: nothing allowed, the defaults; more than that is refused. */
    o = narrow("{\"max_connections\": 1}", NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "allow")), 0);
    assert_int_equal(json_integer_value(json_object_get(o, "max_connections")), 1);
    json_decref(o);
    narrow("{\"allow\": [\"a.example.com\"]}", "null", "egress.allow[0]");
    narrow("{\"max_bytes\": \"2g\"}", NULL, "egress.max_bytes");
    /* A malformed request is the parser's refusal. */
    json_t *bad = json_loads("{\"max_connections\": 0}", 0, NULL);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_egress_policy_narrow(&o, bad, NULL, &err), -1);
    assert_non_null(strstr(err.message, "1..256"));
    json_decref(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_defaults),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_internal_addresses),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_tighten_only),
        cmocka_unit_test(test_fork_narrows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
