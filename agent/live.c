/* The live channel: PID 1 serves commands over the container's attached stdio.
 *
 * The host attaches to the container (Docker's attach API) and writes agent frames to its
 * stdin; each frame's channel names one command. An EXEC on a new channel goes to a supervisor
 * (the loop of agent_supervise_many(), the same supervision that `clearing-agent exec` runs for
 * one command) connected to PID 1 by a socket pair: an idle one, kept from an earlier command or
 * forked ahead of time, or a new one. PID 1 relays the host's frames for that channel to it and
 * its frames back to the host with the channel rewritten; once the result is out, the
 * supervisor waits for its next command. Many commands run at once; a command's output is bounded by its
 * supervisor's caps, and PID 1 stops reading the supervisors while the host is slow, so one
 * flood cannot grow PID 1 without bound.
 *
 * Every frame sent for a channel is also kept until the host acknowledges the channel's result
 * (ACK): a host that lost its attach connection (the daemon restarted) sends HELLO on channel
 * 0 and gets every kept frame again, then a CHANNELS frame listing the channels PID 1 knows.
 * Nothing a command does reaches this process: commands run as the sandbox user, in sessions of
 * their own, with none of these descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "agent.h"
#include "coverage.h"

#define MAX_CHANNELS 512
#define OUTQ_HIGH (1u << 20)       /* stop reading supervisors above this much unsent output */
#define INQ_HIGH (4u << 20)        /* stop reading the host above this much unsent input */
#define KEPT_MAX (32u << 20)       /* frames kept for replay, all channels together */
#define PROXY_PORT 3128            /* the egress proxy, on the sandbox's own loopback */
#define MAX_NETS 256               /* proxy connections at once (the host has its own limit) */
#define NET_HEAD_MAX 16384         /* a request head longer than this is refused */
#define NET_QUEUE_MAX (4u << 20)   /* bytes for a client that does not read: then it is closed */
#define SPARE_WAIT_MS 50           /* a busy loop forks its spare after this long without events */
#define MAX_IDLE 4                 /* supervisors kept waiting for a command */

struct bytes {
    uint8_t *data;
    size_t len, off;
};

struct chan {
    uint32_t id;
    pid_t pid;          /* the supervisor; 0 once reaped */
    int sock;           /* -1 once the supervisor closed it */
    struct clr_frame_reader rd;
    uint8_t *rbuf;
    struct bytes inq;   /* frames for the supervisor */
    struct bytes kept;  /* frames sent to the host, for replay until ACK */
    bool lossy;         /* output was dropped from kept (KEPT_MAX) */
    bool result_sent;
    bool acked;         /* freed at the end of the loop's pass, never while it is in use */
    struct chan *next;
};

/* A connection to the egress proxy. */
enum net_state { NET_HEAD, NET_WAIT, NET_OPEN, NET_DONE };
struct net {
    uint32_t id;
    int fd;
    enum net_state state;
    bool connect;         /* CONNECT (a tunnel) or plain HTTP (the head is forwarded) */
    struct bytes head;    /* the request head as read; for plain HTTP, what goes upstream first */
    struct bytes to_client;
    bool close_after_flush;
    struct net *next;
};

struct live {
    struct chan *chans;
    int proxy_fd;         /* -1 until a host said HELLO */
    struct net *nets;
    size_t nnets;
    uint32_t next_net_id;
    size_t nchans;
    struct bytes outq;  /* frames for the host */
    size_t kept_total;
    bool host_eof;
    bool host_out_ok;
    /* Supervisors waiting for an EXEC, forked ahead of time or done with their last command
     * (a supervisor runs any number of commands, one at a time): a command's start does not
     * wait for a fork of PID 1 (several milliseconds in gVisor). The last is the most recently
     * used. */
    pid_t idle_pid[MAX_IDLE];
    int idle_sock[MAX_IDLE];
    size_t nidle;
    uint64_t spare_retry_ns; /* no spare fork before this (agent_now_ns) */
    struct clr_frame_reader rd;
    uint8_t *rbuf;
};

static int bytes_add(struct bytes *b, const void *data, size_t len)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    uint8_t *n = realloc(b->data, b->len + len);
    if (!n)
        return -1;
    memcpy(n + b->len, data, len);
    b->data = n;
    b->len += len;
    return 0;
}

static size_t bytes_pending(const struct bytes *b)
{
    return b->len - b->off;
}

static void bytes_free(struct bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Writes what the descriptor takes now; -1 when it is gone. */
static int bytes_flush(struct bytes *b, int fd)
{
    while (bytes_pending(b) > 0) {
        ssize_t n = write(fd, b->data + b->off, bytes_pending(b));
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        b->off += (size_t)n;
    }
    b->off = b->len = 0;
    return 0;
}

static int frame_add(struct bytes *b, uint32_t channel, uint8_t type, const void *payload,
                     uint32_t len)
{
    uint8_t hdr[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(hdr, channel, type, len);
    if (bytes_add(b, hdr, sizeof(hdr)) < 0)
        return -1;
    return len ? bytes_add(b, payload, len) : 0;
}

static struct chan *chan_find(struct live *l, uint32_t id)
{
    for (struct chan *c = l->chans; c; c = c->next) {
        if (c->id == id)
            return c;
    }
    return NULL;
}

static void chan_free(struct live *l, struct chan *c)
{
    struct chan **pp = &l->chans;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (c->sock >= 0)
        close(c->sock);
    l->kept_total -= c->kept.len;
    bytes_free(&c->inq);
    bytes_free(&c->kept);
    free(c->rbuf);
    free(c);
    l->nchans--;
}

/* A frame for the host on channel c: sent, and kept for replay. */
static void to_host(struct live *l, struct chan *c, uint8_t type, const void *payload,
                    uint32_t len)
{
    frame_add(&l->outq, c->id, type, payload, len);
    bool output = type == CLR_FRAME_STDOUT || type == CLR_FRAME_STDERR;
    if (output && (c->lossy || l->kept_total + len > KEPT_MAX)) {
        c->lossy = true;
        return;
    }
    size_t before = c->kept.len;
    frame_add(&c->kept, c->id, type, payload, len);
    l->kept_total += c->kept.len - before;
}

/* A result the supervisor could not send itself. */
static void synth_result(struct live *l, struct chan *c, uint64_t status, const char *message)
{
    struct clr_tlv_builder *b = malloc(sizeof(*b));
    if (!b)
        return;
    clr_tlv_init(b);
    clr_tlv_put_u64(b, CLR_RES_STATUS, status);
    clr_tlv_put_str(b, CLR_RES_MESSAGE, message);
    to_host(l, c, CLR_FRAME_RESULT, b->buf, (uint32_t)b->len);
    c->result_sent = true;
    free(b);
}

struct relay {
    struct live *l;
    struct chan *c;
};

static int relay_frame(void *p, const struct clr_frame *f)
{
    struct relay *r = p;
    if (r->c->result_sent)
        return -1; /* nothing may follow a result */
    if (f->type != CLR_FRAME_STDOUT && f->type != CLR_FRAME_STDERR && f->type != CLR_FRAME_RESULT)
        return -1;
    to_host(r->l, r->c, f->type, f->payload, f->length);
    if (f->type == CLR_FRAME_RESULT)
        r->c->result_sent = true;
    return 0;
}

static void read_supervisor(struct live *l, struct chan *c)
{
    uint8_t buf[16384];
    ssize_t n = read(c->sock, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        struct relay r = {l, c};
        if (clr_frame_reader_feed(&c->rd, buf, (size_t)n, relay_frame, &r) == 0)
            return;
        /* Our own supervisor broke the protocol: end it. */
        if (c->pid > 0)
            kill(c->pid, SIGKILL);
    }
    close(c->sock);
    c->sock = -1;
    bytes_free(&c->inq);
    if (!c->result_sent)
        synth_result(l, c, CLR_WIRE_SIGNALED, "the command's supervisor ended without a result");
}

static void supervisor_child(int sock)
{
    /* Signal dispositions are reset by the supervisor itself (supervisor_init). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Nothing of PID 1 stays open here: not the host's stdio, not other commands' sockets. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
    }
    agent_close_from(3, sock);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    _exit(agent_supervise_many(sock) == 0 ? 0 : 1);
}

/* Forks a supervisor that waits for its request on a socket; 0 or -1. */
static int fork_supervisor(pid_t *pid, int *sock)
{
    int sv[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t p = fork();
    if (p == 0) {
        close(sv[0]);
        supervisor_child(sv[1]);
    }
    close(sv[1]);
    if (p < 0) {
        close(sv[0]);
        return -1;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    *pid = p;
    *sock = sv[0];
    return 0;
}

static void start_channel(struct live *l, const struct clr_frame *f)
{
    struct chan *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->id = f->channel;
    c->sock = -1;
    c->next = l->chans;
    l->chans = c;
    l->nchans++;
    c->rbuf = malloc(CLR_PROTO_MAX_PAYLOAD);
    if (!c->rbuf || l->nchans > MAX_CHANNELS) {
        synth_result(l, c, CLR_WIRE_START_FAILED,
                     l->nchans > MAX_CHANNELS ? "too many commands at once in this sandbox"
                                              : "the agent is out of resources");
        return;
    }
    clr_frame_reader_init(&c->rd, c->rbuf);
    if (l->nidle > 0) {
        l->nidle--;
        c->pid = l->idle_pid[l->nidle];
        c->sock = l->idle_sock[l->nidle];
    } else if (fork_supervisor(&c->pid, &c->sock) < 0) {
        synth_result(l, c, CLR_WIRE_START_FAILED, "the agent cannot fork a supervisor");
        return;
    }
    frame_add(&c->inq, 1, f->type, f->payload, f->length);
    if (bytes_flush(&c->inq, c->sock) < 0)
        bytes_free(&c->inq);
}

/* A supervisor whose command's result is out, with nothing left to write to it, waits for the
 * next command; past MAX_IDLE it is let go (its socket closes, it exits). Its command's every
 * process is gone by then: the supervisor sends the result only after its tree kill. */
static void release_supervisor(struct live *l, struct chan *c)
{
    agent_coverage_flush(); /* coverage builds: before the host reads the result and may kill us */
    if (c->pid > 0 && l->nidle < MAX_IDLE) {
        l->idle_pid[l->nidle] = c->pid;
        l->idle_sock[l->nidle] = c->sock;
        l->nidle++;
    } else {
        close(c->sock);
    }
    c->sock = -1;
    c->pid = 0;
}

/* With no idle supervisor, a spare is forked off the command's path: once no command is starting
 * or running, or after SPARE_WAIT_MS of a busy loop with none. A fork running next to a command's
 * start costs that command a copy of an address space on a core it needs. A spare that cannot
 * be forked, or that died, is retried no more often than every SPARE_WAIT_MS. */
static void keep_spare(struct live *l, bool waited)
{
    if (l->nidle > 0)
        return;
    bool busy = false;
    for (struct chan *c = l->chans; c && !busy; c = c->next)
        busy = c->sock >= 0 && !c->result_sent;
    uint64_t now = agent_now_ns();
    if ((busy && !waited) || now < l->spare_retry_ns)
        return;
    if (fork_supervisor(&l->idle_pid[0], &l->idle_sock[0]) == 0)
        l->nidle = 1;
    else
        l->spare_retry_ns = now + SPARE_WAIT_MS * 1000000ull;
}

static void replay(struct live *l)
{
    /* Oldest first: the list is newest first. */
    /* Acknowledged channels are forgotten, even if not freed yet (an ACK and a HELLO can arrive
     * in one read). */
    size_t n = 0;
    for (struct chan *c = l->chans; c; c = c->next)
        n += !c->acked;
    struct chan **v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return;
    size_t i = n;
    for (struct chan *c = l->chans; c; c = c->next) {
        if (!c->acked)
            v[--i] = c;
    }
    uint8_t ids[CLR_PROTO_MAX_PAYLOAD];
    size_t nid = 0;
    for (i = 0; i < n; i++) {
        bytes_add(&l->outq, v[i]->kept.data, v[i]->kept.len);
        if ((nid + 1) * 4 <= sizeof(ids)) {
            ids[nid * 4] = (uint8_t)(v[i]->id >> 24);
            ids[nid * 4 + 1] = (uint8_t)(v[i]->id >> 16);
            ids[nid * 4 + 2] = (uint8_t)(v[i]->id >> 8);
            ids[nid * 4 + 3] = (uint8_t)v[i]->id;
            nid++;
        }
    }
    frame_add(&l->outq, 0, CLR_FRAME_CHANNELS, ids, (uint32_t)(nid * 4));
    free(v);
}


/* ---- the egress proxy ----
 * Commands get HTTP_PROXY/HTTPS_PROXY pointing here (when the sandbox's policy allows anything).
 * Each connection's request head names where it wants to go; the host decides, connects, and
 * carries the bytes; nothing leaves the sandbox any other way (it has no network device). */

static void net_free(struct live *l, struct net *n)
{
    struct net **pp = &l->nets;
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp)
        *pp = n->next;
    if (n->fd >= 0)
        close(n->fd);
    bytes_free(&n->head);
    bytes_free(&n->to_client);
    free(n);
    l->nnets--;
}

static struct net *net_find(struct live *l, uint32_t id)
{
    for (struct net *n = l->nets; n; n = n->next) {
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
static void net_end(struct live *l, struct net *n, bool tell_host)
{
    if (tell_host)
        frame_add(&l->outq, n->id, CLR_FRAME_NET_CLOSE, NULL, 0);
    n->state = NET_DONE;
    n->close_after_flush = true;
    bytes_free(&n->to_client);
}

static void proxy_listen(struct live *l)
{
    if (l->proxy_fd >= 0)
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
    l->proxy_fd = fd;
}

static void proxy_accept(struct live *l)
{
    for (;;) {
        int fd = accept4(l->proxy_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (l->nnets >= MAX_NETS) {
            close(fd);
            continue;
        }
        struct net *n = calloc(1, sizeof(*n));
        if (!n) {
            close(fd);
            return;
        }
        n->fd = fd;
        n->id = ++l->next_net_id ? l->next_net_id : ++l->next_net_id;
        n->next = l->nets;
        l->nets = n;
        l->nnets++;
    }
}

/* Parses "host:port" (IPv6 in brackets) into host and port; 0 or -1. */
static int split_authority(const char *s, char *host, size_t hlen, unsigned *port,
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
static void net_head_done(struct live *l, struct net *n, size_t head_len)
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
        if (split_authority(target, host, sizeof(host), &port, 0) < 0) {
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
        if (split_authority(authority, host, sizeof(host), &port, 80) < 0) {
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
    frame_add(&l->outq, n->id, CLR_FRAME_NET_OPEN, open, (uint32_t)ol);
    n->state = NET_WAIT;
}

static void net_read(struct live *l, struct net *n)
{
    uint8_t buf[16384];
    ssize_t r = read(n->fd, buf, sizeof(buf));
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        /* The host knows the connection once it was asked about it. */
        net_end(l, n, n->state == NET_OPEN || n->state == NET_WAIT);
        return;
    }
    if (n->state == NET_OPEN) {
        frame_add(&l->outq, n->id, CLR_FRAME_NET_DATA, buf, (uint32_t)r);
        return;
    }
    if (n->state == NET_WAIT) {
        /* Bytes before the host's answer (a request body): kept, sent after the head. */
        if (n->head.len + (size_t)r > NET_QUEUE_MAX) {
            net_reply(n, 413, "Payload Too Large", "clearing egress: too much before connect\n");
            frame_add(&l->outq, n->id, CLR_FRAME_NET_CLOSE, NULL, 0);
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
        net_head_done(l, n, (size_t)(end - n->head.data));
    else if (n->head.len > NET_HEAD_MAX)
        net_reply(n, 431, "Request Header Fields Too Large", "clearing egress: head too long\n");
}

static void proxy_host_frame(struct live *l, const struct clr_frame *f)
{
    struct net *n = net_find(l, f->channel);
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
            frame_add(&l->outq, n->id, CLR_FRAME_NET_DATA, n->head.data + off, (uint32_t)len);
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
            net_end(l, n, true); /* a client that does not read */
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

/* A new host knows none of the connections: they end. */
static void proxy_reset(struct live *l)
{
    while (l->nets)
        net_free(l, l->nets);
}

static int on_host_frame(void *p, const struct clr_frame *f)
{
    struct live *l = p;
    if (f->channel == 0) {
        if (f->type == CLR_FRAME_HELLO) {
            l->host_out_ok = true; /* a host attached again: try its stdout again */
            proxy_reset(l);
            proxy_listen(l);
            replay(l);
        }
        return 0;
    }
    if (f->type >= CLR_FRAME_NET_OPEN && f->type <= CLR_FRAME_NET_CLOSE) {
        proxy_host_frame(l, f);
        return 0;
    }
    struct chan *c = chan_find(l, f->channel);
    switch (f->type) {
    case CLR_FRAME_EXEC:
        if (!c)
            start_channel(l, f);
        return 0;
    case CLR_FRAME_ACK:
        if (c && c->result_sent)
            c->acked = true;
        return 0;
    case CLR_FRAME_STDIN:
    case CLR_FRAME_STDIN_EOF:
    case CLR_FRAME_KILL:
    case CLR_FRAME_SIGNAL:
        /* After its result nothing more goes to a command's supervisor: it is about to serve
         * the next command. */
        if (c && c->sock >= 0 && !c->result_sent)
            frame_add(&c->inq, 1, f->type, f->payload, f->length);
        return 0;
    default:
        return 0; /* frames only the agent sends: ignored */
    }
}

static void read_host(struct live *l)
{
    uint8_t buf[65536];
    ssize_t n = read(0, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        l->host_eof = true;
        return;
    }
    if (clr_frame_reader_feed(&l->rd, buf, (size_t)n, on_host_frame, l) != 0) {
        /* Only the host writes here; a malformed stream means it is not speaking to us. */
        fprintf(stderr, "clearing-agent: malformed frame from the host; channel closed\n");
        l->host_eof = true;
    }
}

static void reap(struct live *l)
{
    pid_t pid;
    while ((pid = waitpid(-1, NULL, WNOHANG | __WALL)) > 0) {
        for (size_t i = 0; i < l->nidle; i++) {
            if (l->idle_pid[i] != pid)
                continue;
            /* An idle supervisor died before its turn: the next command takes another. */
            close(l->idle_sock[i]);
            l->nidle--;
            memmove(&l->idle_pid[i], &l->idle_pid[i + 1], (l->nidle - i) * sizeof(pid_t));
            memmove(&l->idle_sock[i], &l->idle_sock[i + 1], (l->nidle - i) * sizeof(int));
            l->spare_retry_ns = agent_now_ns() + SPARE_WAIT_MS * 1000000ull;
            break;
        }
        for (struct chan *c = l->chans; c; c = c->next) {
            if (c->pid == pid)
                c->pid = 0;
        }
    }
}

int agent_serve(void)
{
    /* Before anything else: PID 1 is root, and a root process in the sandbox (a docker exec,
     * a command that regained uid 0) holds no CAP_SYS_PTRACE, so only this stops it from
     * reading PID 1's memory or attaching to it. Children inherit it until they exec. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sigset_t set;
    sigfillset(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigset_t want;
    sigemptyset(&want);
    sigaddset(&want, SIGCHLD);
    sigaddset(&want, SIGTERM);
    sigaddset(&want, SIGINT);
    sigaddset(&want, SIGHUP);
    int sfd = signalfd(-1, &want, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return 1;
    struct live l;
    memset(&l, 0, sizeof(l));
    l.rbuf = malloc(CLR_PROTO_MAX_PAYLOAD);
    if (!l.rbuf)
        return 1;
    clr_frame_reader_init(&l.rd, l.rbuf);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
    l.host_out_ok = true;
    l.proxy_fd = -1;

    bool waited = false;
    for (;;) {
        keep_spare(&l, waited);
        size_t n = 4 + l.nchans + l.nnets;
        struct pollfd *p = calloc(n, sizeof(*p));
        struct chan **who = calloc(n, sizeof(*who));
        if (!p || !who) {
            free(p);
            free(who);
            poll(NULL, 0, 100);
            continue;
        }
        size_t np = 0;
        p[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        size_t inq_total = 0;
        for (struct chan *c = l.chans; c; c = c->next)
            inq_total += bytes_pending(&c->inq);
        bool host_in = !l.host_eof && inq_total < INQ_HIGH;
        p[np++] = (struct pollfd){
            .fd = host_in || (l.host_out_ok && bytes_pending(&l.outq)) ? 0 : -1,
            .events = (short)(host_in ? POLLIN : 0)};
        /* fd 0 and fd 1 may be one descriptor or two; poll fd 1 separately for output. */
        size_t i_out = np;
        p[np++] = (struct pollfd){.fd = l.host_out_ok && bytes_pending(&l.outq) ? 1 : -1,
                                  .events = POLLOUT};
        bool room = bytes_pending(&l.outq) < OUTQ_HIGH;
        for (struct chan *c = l.chans; c; c = c->next) {
            if (c->sock < 0 || np >= n)
                continue;
            short ev = (short)((room ? POLLIN : 0) | (bytes_pending(&c->inq) ? POLLOUT : 0));
            if (!ev)
                continue;
            who[np] = c;
            p[np++] = (struct pollfd){.fd = c->sock, .events = ev};
        }
        size_t i_nets = np;
        size_t i_proxy = (size_t)-1;
        struct net **nets = calloc(l.nnets + 1, sizeof(*nets));
        if (l.proxy_fd >= 0 && room && l.nnets < MAX_NETS && np < n) {
            i_proxy = np;
            p[np++] = (struct pollfd){.fd = l.proxy_fd, .events = POLLIN};
        }
        size_t k = 0;
        for (struct net *ne = l.nets; nets && ne && np < n; ne = ne->next) {
            bool want_in = room && ne->state != NET_DONE &&
                           !(ne->state == NET_OPEN && bytes_pending(&ne->to_client) > NET_QUEUE_MAX / 2);
            short ev = (short)((want_in ? POLLIN : 0) |
                               (bytes_pending(&ne->to_client) ? POLLOUT : 0));
            nets[k++] = ne;
            p[np++] = (struct pollfd){.fd = ev ? ne->fd : -1, .events = ev};
        }
        int r = poll(p, (nfds_t)np, l.nidle > 0 ? -1 : SPARE_WAIT_MS);
        waited = r == 0;
        if (r < 0 && errno != EINTR) {
            free(p);
            free(who);
            continue;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT ||
                    si.ssi_signo == SIGHUP) {
                    kill(-1, SIGKILL);
                    return 0;
                }
            }
            reap(&l);
        }
        if (p[1].fd == 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            read_host(&l);
        for (size_t i = i_nets, j = 0; nets && i < np; i++) {
            if (i == i_proxy) {
                if (p[i].revents & POLLIN)
                    proxy_accept(&l);
                continue;
            }
            struct net *ne = nets[j++];
            if (p[i].fd < 0)
                continue;
            if ((p[i].revents & POLLOUT) && bytes_flush(&ne->to_client, ne->fd) < 0) {
                ne->close_after_flush = true;
                bytes_free(&ne->to_client);
            }
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
                net_read(&l, ne);
        }
        free(nets);
        for (struct net *ne = l.nets, *next; ne; ne = next) {
            next = ne->next;
            if (ne->close_after_flush && bytes_pending(&ne->to_client) == 0)
                net_free(&l, ne);
        }
        for (size_t i = i_out + 1; i < i_nets; i++) {
            struct chan *c = who[i];
            if (!c || c->sock < 0)
                continue;
            if (p[i].revents & POLLOUT) {
                if (bytes_flush(&c->inq, c->sock) < 0)
                    bytes_free(&c->inq);
            }
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
                read_supervisor(&l, c);
        }
        free(p);
        free(who);
        for (struct chan *c = l.chans, *next; c; c = next) {
            next = c->next;
            if (c->sock >= 0 && c->result_sent && bytes_pending(&c->inq) == 0)
                release_supervisor(&l, c);
            if (c->acked)
                chan_free(&l, c);
        }
        if (l.host_out_ok && bytes_flush(&l.outq, 1) < 0) {
            /* Nobody reads our stdout any more: keep frames for a replay, drop the queue. */
            l.host_out_ok = false;
        }
        if (!l.host_out_ok)
            l.outq.off = l.outq.len = 0;
    }
}
