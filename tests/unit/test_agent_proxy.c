/* The agent's egress proxy, in process: the authority parser, and a connection's request head
 * read from a socket pair, with the frame the host is sent or the reply the client gets. Every
 * refusal is checked for what the client is told and for nothing reaching the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy.h"

static void test_authority_host_and_port(void **state)
{
    (void)state;
    char host[64];
    unsigned port = 0;
    assert_int_equal(proxy_split_authority("example.com:443", host, sizeof(host), &port, 0), 0);
    assert_string_equal(host, "example.com");
    assert_int_equal(port, 443);
    assert_int_equal(proxy_split_authority("[2001:db8::1]:8080", host, sizeof(host), &port, 0), 0);
    assert_string_equal(host, "2001:db8::1");
    assert_int_equal(port, 8080);
    /* no port: the default, when there is one */
    assert_int_equal(proxy_split_authority("example.com", host, sizeof(host), &port, 80), 0);
    assert_int_equal(port, 80);
    assert_int_equal(proxy_split_authority("[::1]", host, sizeof(host), &port, 80), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    assert_int_equal(proxy_split_authority("h:65535", host, sizeof(host), &port, 0), 0);
    assert_int_equal(port, 65535);
}

static void test_authority_refused(void **state)
{
    (void)state;
    char host[16];
    unsigned port = 0;
    static const char *bad[] = {
        "example.com",      /* CONNECT needs a port */
        "[::1]",            /* same, in brackets */
        ":443",             /* no host */
        "h:0", "h:65536", "h:-1", "h:12ab", "h:", /* ports */
        "[::1", "[::1]x", "[::1]:", "[]:80",       /* brackets */
        "a-very-long-host-name.example:80",        /* longer than the buffer */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (proxy_split_authority(bad[i], host, sizeof(host), &port, 0) == 0)
            fail_msg("'%s' accepted", bad[i]);
    }
}

struct conn {
    struct bytes to_host;
    struct proxy px;
    struct net *n;
    int client; /* the command's end */
};

static void conn_open(struct conn *c)
{
    memset(c, 0, sizeof(*c));
    proxy_init(&c->px, &c->to_host);
    assert_int_equal(c->px.fd, -1);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    c->n = calloc(1, sizeof(*c->n));
    assert_non_null(c->n);
    c->n->id = 5;
    c->n->fd = sv[0];
    c->n->next = c->px.nets;
    c->px.nets = c->n;
    c->px.nnets = 1;
    c->client = sv[1];
}

static void conn_send(struct conn *c, const char *text)
{
    assert_int_equal(write(c->client, text, strlen(text)), (ssize_t)strlen(text));
    net_read(&c->px, c->n);
}

static void conn_close(struct conn *c)
{
    proxy_reset(&c->px);
    assert_null(c->px.nets);
    assert_int_equal(c->px.nnets, 0);
    close(c->client);
    bytes_free(&c->to_host);
}

/* The one frame queued for the host: its type and payload. */
static void expect_frame(struct conn *c, uint8_t type, const void *payload, size_t len)
{
    assert_int_equal(c->to_host.len, CLR_PROTO_HEADER_SIZE + len);
    uint8_t want[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(want, c->n->id, type, (uint32_t)len);
    assert_memory_equal(c->to_host.data, want, sizeof(want));
    if (len)
        assert_memory_equal(c->to_host.data + CLR_PROTO_HEADER_SIZE, payload, len);
}

/* Nothing for the host; the client is told status and why, and the connection ends. */
static void expect_refused(struct conn *c, const char *status, const char *why)
{
    assert_int_equal(c->to_host.len, 0);
    assert_int_equal(c->n->state, NET_DONE);
    assert_true(c->n->close_after_flush);
    char reply[2048];
    size_t len = bytes_pending(&c->n->to_client);
    assert_true(len > 0 && len < sizeof(reply));
    memcpy(reply, c->n->to_client.data + c->n->to_client.off, len);
    reply[len] = '\0';
    if (strncmp(reply, status, strlen(status)) != 0)
        fail_msg("reply '%s' is not '%s'", reply, status);
    if (!strstr(reply, why))
        fail_msg("reply '%s' does not say '%s'", reply, why);
}

static void test_connect_asks_the_host(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    conn_send(&c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n");
    assert_int_equal(c.n->state, NET_HEAD); /* the head is not complete yet */
    assert_int_equal(c.to_host.len, 0);
    conn_send(&c, "\r\n");
    assert_int_equal(c.n->state, NET_WAIT);
    assert_true(c.n->connect);
    expect_frame(&c, CLR_FRAME_NET_OPEN, "C\0example.com\0" "443", 17);
    assert_int_equal(c.n->head.len, 0); /* nothing goes upstream but the tunnel's bytes */

    /* the host accepts: the client is told, and the tunnel is open */
    c.to_host.off = c.to_host.len = 0;
    struct clr_frame f = {.channel = 5, .type = CLR_FRAME_NET_ACCEPT};
    proxy_host_frame(&c.px, &f);
    assert_int_equal(c.n->state, NET_OPEN);
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    assert_int_equal(bytes_pending(&c.n->to_client), sizeof(ok) - 1);
    assert_memory_equal(c.n->to_client.data, ok, sizeof(ok) - 1);
    conn_send(&c, "tls bytes");
    expect_frame(&c, CLR_FRAME_NET_DATA, "tls bytes", 9);
    conn_close(&c);
}

static void test_plain_http_rewritten_to_origin_form(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    conn_send(&c, "GET http://example.com:8080/a/b?c=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_int_equal(c.n->state, NET_WAIT);
    assert_false(c.n->connect);
    expect_frame(&c, CLR_FRAME_NET_OPEN, "H\0example.com\0" "8080", 18);
    static const char up[] = "GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_int_equal(c.n->head.len, sizeof(up) - 1);
    assert_memory_equal(c.n->head.data, up, sizeof(up) - 1);
    conn_close(&c);
}

static void test_plain_http_default_port_and_root(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    conn_send(&c, "HEAD http://example.org HTTP/1.0\r\n\r\n");
    expect_frame(&c, CLR_FRAME_NET_OPEN, "H\0example.org\0" "80", 16);
    static const char up[] = "HEAD / HTTP/1.0\r\n\r\n";
    assert_int_equal(c.n->head.len, sizeof(up) - 1);
    assert_memory_equal(c.n->head.data, up, sizeof(up) - 1);
    conn_close(&c);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *head, *status, *why;
    } cases[] = {
        {"GET /index.html HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "give an absolute http:// URL"},
        {"GET https://example.com/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "absolute http:// URL"},
        {"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "bad URL authority"},
        {"GET http:///x HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "bad URL authority"},
        {"GET http://example.com:99999/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "bad host or port"},
        {"CONNECT example.com HTTP/1.1\r\n\r\n", "HTTP/1.1 400", "CONNECT needs host:port"},
        {"GARBAGE\r\n\r\n", "HTTP/1.1 400", "malformed request line"},
        {"\r\n\r\n", "HTTP/1.1 400", "malformed request line"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conn c;
        conn_open(&c);
        conn_send(&c, cases[i].head);
        expect_refused(&c, cases[i].status, cases[i].why);
        conn_close(&c);
    }
}

static void test_head_too_long_refused(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    char line[1024];
    memset(line, 'a', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    conn_send(&c, "GET http://example.com/ HTTP/1.1\r\n");
    for (int i = 0; i < 17 && c.n->state == NET_HEAD; i++)
        conn_send(&c, line); /* never a blank line */
    expect_refused(&c, "HTTP/1.1 431", "head too long");
    conn_close(&c);
}

static void test_host_denies(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    conn_send(&c, "CONNECT evil.example:443 HTTP/1.1\r\n\r\n");
    assert_int_equal(c.n->state, NET_WAIT);
    c.to_host.off = c.to_host.len = 0;
    static const char why[] = "evil.example is not in the allow list";
    struct clr_frame f = {.channel = 5, .type = CLR_FRAME_NET_DENY,
                          .payload = (const uint8_t *)why, .length = sizeof(why) - 1};
    proxy_host_frame(&c.px, &f);
    expect_refused(&c, "HTTP/1.1 403", "refused: evil.example is not in the allow list");
    conn_close(&c);
}

/* A frame for a connection the proxy does not know changes nothing. */
static void test_unknown_connection_ignored(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    struct clr_frame f = {.channel = 6, .type = CLR_FRAME_NET_ACCEPT};
    proxy_host_frame(&c.px, &f);
    assert_int_equal(c.n->state, NET_HEAD);
    assert_int_equal(bytes_pending(&c.n->to_client), 0);
    conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authority_host_and_port),
        cmocka_unit_test(test_authority_refused),
        cmocka_unit_test(test_connect_asks_the_host),
        cmocka_unit_test(test_plain_http_rewritten_to_origin_form),
        cmocka_unit_test(test_plain_http_default_port_and_root),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_head_too_long_refused),
        cmocka_unit_test(test_host_denies),
        cmocka_unit_test(test_unknown_connection_ignored),
    };
    return cmocka_run_group_tests_name("agent_proxy", tests, NULL, NULL);
}
