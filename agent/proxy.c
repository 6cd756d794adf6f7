/* The egress proxy: see proxy.h.
 * Commands get HTTP_PROXY/HTTPS_PROXY pointing here (when the sandbox's policy allows anything).
 * Each connection's request head names where it wants to go; the host decides, connects, and
 * carries the bytes; nothing leaves the sandbox any other way (it has no network device). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"

#define PROXY_PORT 3128            /* the egress proxy, on the sandbox's own loopback */
#define NET_HEAD_MAX 16384         /* a request head longer than this is refused */

void proxy_init(struct proxy *px, struct bytes *to_host)
{
    memset(px, 0, sizeof(*px));
    px->fd = -1;
    px->to_host = to_host;
}

void net_free(struct proxy *px, struct net *n)
{
    struct net **pp = &px->nets;
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp)
        *pp = n->next;
    if (n->fd >= 0)
        close(n->fd);
    bytes_free(&n->head);
    bytes_free(&n->to_client);
    free(n);
    px->nnets--;
}

struct net *net_find(struct proxy *px, uint32_t id)
{
    for (struct net *n = px->nets; n; n = n->next) {
        if (n->id == id)
            return n;
    }
    return NULL;
}

static void net_reply(struct net *n, int code, const char *reason, const char *text)
{
    char buf[1024];
    int len = snprintf(buf, sizeof(buf),
                       "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       code, reason, strlen(text), text);
    if (len > 0)
        bytes_add(&n->to_client, buf, (size_t)(len < (int)sizeof(buf) ? len : (int)sizeof(buf) - 1));
    n->close_after_flush = true;
    n->state = NET_DONE;
}

/* The connection ends now, dropping what the client has not read; tell_host: the host is told
 * (it knows the connection). */
static void net_end(struct proxy *px, struct net *n, bool tell_host)
{
    if (tell_host)
        bytes_add_frame(px->to_host, n->id, CLR_FRAME_NET_CLOSE, NULL, 0);
    n->state = NET_DONE;
    n->close_after_flush = true;
    bytes_free(&n->to_client);
}

void proxy_listen(struct proxy *px)
{
    if (px->fd >= 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PROXY_PORT),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
        fprintf(stderr, "clearing-agent: the egress proxy cannot listen on 127.0.0.1:%d: %s\n",
                PROXY_PORT, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    px->fd = fd;
}

void proxy_accept(struct proxy *px)
{
    for (;;) {
        int fd = accept4(px->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (px->nnets >= MAX_NETS) {
            close(fd);
            continue;
        }
        struct net *n = calloc(1, sizeof(*n));
        if (!n) {
            close(fd);
            return;
        }
        n->fd = fd;
        n->id = ++px->next_id ? px->next_id : ++px->next_id;
        n->next = px->nets;
        px->nets = n;
        px->nnets++;
    }
}

int proxy_split_authority(const char *s, char *host, size_t hlen, unsigned *port,
                           unsigned default_port)
{
    const char *colon;
    size_t len;
    if (*s == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return -1;
        len = (size_t)(end - s - 1);
        s++;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1])
            return -1;
    } else {
        colon = strrchr(s, ':');
        len = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (len == 0 || len >= hlen)
        return -1;
    memcpy(host, s, len);
    host[len] = '\0';
    if (!colon) {
        *port = default_port;
        return default_port ? 0 : -1;
    }
    char *end = NULL;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (!end || *end || p == 0 || p > 65535)
        return -1;
    *port = (unsigned)p;
    return 0;
}

/* A whole request head: where to, then ask the host. */
static void net_head_done(struct proxy *px, struct net *n, size_t head_len)
{
    char line[4096];
    const char *data = (const char *)n->head.data;
    const char *eol = memchr(data, '\r', head_len);
    size_t ll = eol ? (size_t)(eol - data) : 0;
    if (!eol || ll >= sizeof(line)) {
        net_reply(n, 400, "Bad Request", "clearing egress: malformed request line\n");
        return;
    }
    memcpy(line, data, ll);
    line[ll] = '\0';
    char *method = line, *target = strchr(line, ' ');
    char *version = target ? strchr(target + 1, ' ') : NULL;
    if (!target || !version) {
        net_reply(n, 400, "Bad Request", "clearing egress: malformed request line\n");
        return;
    }
    *target++ = '\0';
    *version++ = '\0';
    char host[300];
    unsigned port = 0;
    if (strcmp(method, "CONNECT") == 0) {
        n->connect = true;
        if (proxy_split_authority(target, host, sizeof(host), &port, 0) < 0) {
            net_reply(n, 400, "Bad Request", "clearing egress: CONNECT needs host:port\n");
            return;
        }
        n->head.off = n->head.len = 0; /* nothing goes upstream but the tunnel's bytes */
    } else {
        if (strncmp(target, "http://", 7) != 0) {
            net_reply(n, 400, "Bad Request",
                      "clearing egress: this is a proxy: give an absolute http:// URL, or use "
                      "CONNECT for https\n");
            return;
        }
        const char *auth = target + 7;
        const char *path = strchr(auth, '/');
        char authority[300];
        size_t al = path ? (size_t)(path - auth) : strlen(auth);
        if (al == 0 || al >= sizeof(authority) || memchr(auth, '@', al)) {
            net_reply(n, 400, "Bad Request", "clearing egress: bad URL authority\n");
            return;
        }
        memcpy(authority, auth, al);
        authority[al] = '\0';
        if (proxy_split_authority(authority, host, sizeof(host), &port, 80) < 0) {
            net_reply(n, 400, "Bad Request", "clearing egress: bad host or port\n");
            return;
        }
        /* Upstream gets the origin form of the request line, then the rest as it came. */
        struct bytes up = {0};
        char first[4200];
        int fl = snprintf(first, sizeof(first), "%s %s %s", method, path ? path : "/", version);
        if (fl < 0 || fl >= (int)sizeof(first) || bytes_add(&up, first, (size_t)fl) < 0 ||
            bytes_add(&up, data + ll, n->head.len - ll) < 0) {
            bytes_free(&up);
            net_reply(n, 400, "Bad Request", "clearing egress: request too long\n");
            return;
        }
        bytes_free(&n->head);
        n->head = up;
    }
    char open[320];
    int ol = snprintf(open, sizeof(open), "%c%c%s%c%u", n->connect ? 'C' : 'H', '\0', host, '\0',
                      port);
    if (ol < 0 || ol >= (int)sizeof(open)) {
        net_reply(n, 400, "Bad Request", "clearing egress: host name too long\n");
        return;
    }
    bytes_add_frame(px->to_host, n->id, CLR_FRAME_NET_OPEN, open, (uint32_t)ol);
    n->state = NET_WAIT;
}

void net_read(struct proxy *px, struct net *n)
{
    uint8_t buf[16384];
    ssize_t r = read(n->fd, buf, sizeof(buf));
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        /* The host knows the connection once it was asked about it. */
        net_end(px, n, n->state == NET_OPEN || n->state == NET_WAIT);
        return;
    }
    if (n->state == NET_OPEN) {
        bytes_add_frame(px->to_host, n->id, CLR_FRAME_NET_DATA, buf, (uint32_t)r);
        return;
    }
    if (n->state == NET_WAIT) {
        /* Bytes before the host's answer (a request body): kept, sent after the head. */
        if (n->head.len + (size_t)r > NET_QUEUE_MAX) {
            net_reply(n, 413, "Payload Too Large", "clearing egress: too much before connect\n");
            bytes_add_frame(px->to_host, n->id, CLR_FRAME_NET_CLOSE, NULL, 0);
            return;
        }
        bytes_add(&n->head, buf, (size_t)r);
        return;
    }
    if (n->state != NET_HEAD)
        return;
    size_t before = n->head.len;
    bytes_add(&n->head, buf, (size_t)r);
    const uint8_t *end = NULL;
    for (size_t i = before >= 3 ? before - 3 : 0; i + 4 <= n->head.len; i++) {
        if (memcmp(n->head.data + i, "\r\n\r\n", 4) == 0) {
            end = n->head.data + i + 4;
            break;
        }
    }
    if (end)
        net_head_done(px, n, (size_t)(end - n->head.data));
    else if (n->head.len > NET_HEAD_MAX)
        net_reply(n, 431, "Request Header Fields Too Large", "clearing egress: head too long\n");
}

void proxy_host_frame(struct proxy *px, const struct clr_frame *f)
{
    struct net *n = net_find(px, f->channel);
    if (!n)
        return;
    switch (f->type) {
    case CLR_FRAME_NET_ACCEPT:
        if (n->state != NET_WAIT)
            return;
        n->state = NET_OPEN;
        if (n->connect) {
            static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
            bytes_add(&n->to_client, ok, sizeof(ok) - 1);
        }
        /* What the client sent so far goes upstream, a frame at a time. */
        for (size_t off = 0; off < n->head.len; off += CLR_PROTO_MAX_PAYLOAD) {
            size_t len = n->head.len - off;
            if (len > CLR_PROTO_MAX_PAYLOAD)
                len = CLR_PROTO_MAX_PAYLOAD;
            bytes_add_frame(px->to_host, n->id, CLR_FRAME_NET_DATA, n->head.data + off, (uint32_t)len);
        }
        bytes_free(&n->head);
        return;
    case CLR_FRAME_NET_DENY: {
        char why[600];
        int wl = snprintf(why, sizeof(why), "clearing egress: refused: %.*s\n",
                          (int)(f->length < 500 ? f->length : 500), (const char *)f->payload);
        (void)wl;
        net_reply(n, 403, "Forbidden", why);
        return;
    }
    case CLR_FRAME_NET_DATA:
        if (n->state != NET_OPEN)
            return;
        if (bytes_pending(&n->to_client) + f->length > NET_QUEUE_MAX) {
            net_end(px, n, true); /* a client that does not read */
            return;
        }
        bytes_add(&n->to_client, f->payload, f->length);
        return;
    case CLR_FRAME_NET_CLOSE:
        n->state = NET_DONE;
        n->close_after_flush = true;
        return;
    default:
        return;
    }
}

void proxy_reset(struct proxy *px)
{
    while (px->nets)
        net_free(px, px->nets);
}

