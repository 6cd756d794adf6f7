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
 *
 * The egress proxy (proxy.c) is served by the same loop: its listener and connections are
 * polled here, its frames share the host's queue.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bytes.h"
#include "live.h"
#include "proxy.h"
#include "proto.h"
#include "supervise.h"
#include "util.h"
#include "coverage.h"

#define MAX_CHANNELS 512
#define OUTQ_HIGH (1u << 20)       /* stop reading supervisors above this much unsent output */
#define INQ_HIGH (4u << 20)        /* stop reading the host above this much unsent input */
#define KEPT_MAX (32u << 20)       /* frames kept for replay, all channels together */
/* A stream's (a background process's) output kept for replay: the newest, trimmed to this
 * once it is twice as much (one move per STREAM_KEEP bytes). Twice it fits what the host keeps
 * of a replayed command's stream (1 MiB), so a replay brings the newest whole; 16 of them hold
 * at most a quarter of KEPT_MAX. */
#define STREAM_KEEP (256u << 10)
#define SPARE_WAIT_MS 50           /* a busy loop forks its spare after this long without events */
#define MAX_IDLE 4                 /* supervisors kept waiting for a command */

struct chan {
    uint32_t id;
    pid_t pid;          /* the supervisor; 0 once reaped */
    int sock;           /* -1 once the supervisor closed it */
    struct clr_frame_reader rd;
    uint8_t *rbuf;
    struct bytes inq;   /* frames for the supervisor */
    struct bytes kept;  /* frames sent to the host, for replay until ACK */
    bool lossy;         /* output was dropped from kept (KEPT_MAX) */
    bool stream;        /* its request asked for a stream (CLR_REQ_STREAM): kept is trimmed */
    bool result_sent;
    bool acked;         /* freed at the end of the loop's pass, never while it is in use */
    struct chan *next;
};

struct live {
    struct chan *chans;
    struct proxy px;      /* the egress proxy; its frames go to outq */
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
    bytes_add_frame(&l->outq, c->id, type, payload, len);
    bool output = type == CLR_FRAME_STDOUT || type == CLR_FRAME_STDERR;
    if (output && (c->lossy || l->kept_total + len > KEPT_MAX)) {
        c->lossy = true;
        return;
    }
    size_t before = c->kept.len;
    bytes_add_frame(&c->kept, c->id, type, payload, len);
    l->kept_total += c->kept.len - before;
    if (output && c->stream && c->kept.len > 2 * STREAM_KEEP)
        l->kept_total -= bytes_trim_frames(&c->kept, STREAM_KEEP);
}

/* Whether an EXEC payload asks for a stream (CLR_REQ_STREAM 1); a malformed one is the
 * supervisor's to refuse. */
static bool wants_stream(const uint8_t *payload, uint32_t len)
{
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t vlen;
    uint64_t n = 0;
    clr_tlv_iter_init(&it, payload, len);
    while (clr_tlv_next(&it, &tag, &v, &vlen) == 1) {
        if (tag == CLR_REQ_STREAM)
            return clr_tlv_u64(v, vlen, &n) == 0 && n == 1;
    }
    return false;
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
    c->stream = wants_stream(f->payload, f->length);
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
    bytes_add_frame(&c->inq, 1, f->type, f->payload, f->length);
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
    bytes_add_frame(&l->outq, 0, CLR_FRAME_CHANNELS, ids, (uint32_t)(nid * 4));
    free(v);
}


static int on_host_frame(void *p, const struct clr_frame *f)
{
    struct live *l = p;
    if (f->channel == 0) {
        if (f->type == CLR_FRAME_HELLO) {
            l->host_out_ok = true; /* a host attached again: try its stdout again */
            proxy_reset(&l->px);
            proxy_listen(&l->px);
            replay(l);
        }
        return 0;
    }
    if (f->type >= CLR_FRAME_NET_OPEN && f->type <= CLR_FRAME_NET_CLOSE) {
        proxy_host_frame(&l->px, f);
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
            bytes_add_frame(&c->inq, 1, f->type, f->payload, f->length);
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

/* PID 1's signals: every one blocked, the ones it acts on read from a signalfd (returned, or -1).
 * Before anything else: PID 1 is root, and a root process in the sandbox (a docker exec, a
 * command that regained uid 0) holds no CAP_SYS_PTRACE, so only non-dumpable stops it from
 * reading PID 1's memory or attaching to it. Children inherit it until they exec. */
static int serve_signals(void)
{
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
    return signalfd(-1, &want, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* What one pass of the loop waits for: p[0] the signalfd, p[1] the host's fd 0, p[2] its fd 1;
 * then the supervisors' sockets (who[i] their channel), from i_nets on the proxy's listener
 * (at i_proxy, if watched) and its connections (nets[], in order). Owned by the pass. */
struct pass {
    struct pollfd *p;
    struct chan **who;
    /* The connections' ids, not pointers: reading the host in the same pass may free them (a
     * HELLO resets the proxy, a NET_CLOSE ends one), and a freed one is then skipped. NULL when
     * it could not be had: the proxy then waits a pass. */
    uint32_t *nets;
    size_t n, np;
    size_t i_out, i_nets, i_proxy;
};

static void pass_free(struct pass *ps)
{
    free(ps->p);
    free(ps->who);
    free(ps->nets);
}

/* The egress proxy's descriptors: its listener while there is room, and its connections. */
static void pass_watch_nets(struct live *l, struct pass *ps, bool room)
{
    ps->i_nets = ps->np;
    ps->i_proxy = (size_t)-1;
    ps->nets = calloc(l->px.nnets + 1, sizeof(*ps->nets));
    if (l->px.fd >= 0 && room && l->px.nnets < MAX_NETS && ps->np < ps->n) {
        ps->i_proxy = ps->np;
        ps->p[ps->np++] = (struct pollfd){.fd = l->px.fd, .events = POLLIN};
    }
    size_t k = 0;
    for (struct net *ne = l->px.nets; ps->nets && ne && ps->np < ps->n; ne = ne->next) {
        bool want_in = room && ne->state != NET_DONE &&
                       !(ne->state == NET_OPEN && bytes_pending(&ne->to_client) > NET_QUEUE_MAX / 2);
        short ev = (short)((want_in ? POLLIN : 0) |
                           (bytes_pending(&ne->to_client) ? POLLOUT : 0));
        ps->nets[k++] = ne->id;
        ps->p[ps->np++] = (struct pollfd){.fd = ev ? ne->fd : -1, .events = ev};
    }
}

/* Flow control: the host is read while the supervisors' input queues have room, the
 * supervisors and the proxy while the host's queue has room. 0, or -1 out of memory. */
static int pass_build(struct live *l, int sfd, struct pass *ps)
{
    ps->n = 4 + l->nchans + l->px.nnets;
    ps->p = calloc(ps->n, sizeof(*ps->p));
    ps->who = calloc(ps->n, sizeof(*ps->who));
    if (!ps->p || !ps->who)
        return -1;
    ps->p[ps->np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    size_t inq_total = 0;
    for (struct chan *c = l->chans; c; c = c->next)
        inq_total += bytes_pending(&c->inq);
    bool host_in = !l->host_eof && inq_total < INQ_HIGH;
    ps->p[ps->np++] = (struct pollfd){
        .fd = host_in || (l->host_out_ok && bytes_pending(&l->outq)) ? 0 : -1,
        .events = (short)(host_in ? POLLIN : 0)};
    /* fd 0 and fd 1 may be one descriptor or two; poll fd 1 separately for output. */
    ps->i_out = ps->np;
    ps->p[ps->np++] = (struct pollfd){.fd = l->host_out_ok && bytes_pending(&l->outq) ? 1 : -1,
                                      .events = POLLOUT};
    bool room = bytes_pending(&l->outq) < OUTQ_HIGH;
    for (struct chan *c = l->chans; c; c = c->next) {
        if (c->sock < 0 || ps->np >= ps->n)
            continue;
        short ev = (short)((room ? POLLIN : 0) | (bytes_pending(&c->inq) ? POLLOUT : 0));
        if (!ev)
            continue;
        ps->who[ps->np] = c;
        ps->p[ps->np++] = (struct pollfd){.fd = c->sock, .events = ev};
    }
    pass_watch_nets(l, ps, room);
    return 0;
}

/* Reads the signalfd: true on SIGTERM, SIGINT or SIGHUP (the sandbox is going); otherwise
 * every exited child is collected. */
static bool on_signals(struct live *l, int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP)
            return true;
    }
    reap(l);
    return false;
}

/* The proxy's new connections, then each connection's output and input; ended connections
 * whose client has its bytes are freed. */
static void serve_nets(struct live *l, const struct pass *ps)
{
    for (size_t i = ps->i_nets, j = 0; ps->nets && i < ps->np; i++) {
        if (i == ps->i_proxy) {
            if (ps->p[i].revents & POLLIN)
                proxy_accept(&l->px);
            continue;
        }
        struct net *ne = net_find(&l->px, ps->nets[j++]);
        if (!ne || ps->p[i].fd < 0 || ne->fd != ps->p[i].fd)
            continue;
        if ((ps->p[i].revents & POLLOUT) && bytes_flush(&ne->to_client, ne->fd) < 0) {
            ne->close_after_flush = true;
            bytes_free(&ne->to_client);
        }
        if (ps->p[i].revents & (POLLIN | POLLHUP | POLLERR))
            net_read(&l->px, ne);
    }
    for (struct net *ne = l->px.nets, *next; ne; ne = next) {
        next = ne->next;
        if (ne->close_after_flush && bytes_pending(&ne->to_client) == 0)
            net_free(&l->px, ne);
    }
}

/* Each supervisor's input written, its frames relayed to the host. */
static void serve_supervisors(struct live *l, const struct pass *ps)
{
    for (size_t i = ps->i_out + 1; i < ps->i_nets; i++) {
        struct chan *c = ps->who[i];
        if (!c || c->sock < 0)
            continue;
        if (ps->p[i].revents & POLLOUT) {
            if (bytes_flush(&c->inq, c->sock) < 0)
                bytes_free(&c->inq);
        }
        if (ps->p[i].revents & (POLLIN | POLLHUP | POLLERR))
            read_supervisor(l, c);
    }
}

/* The end of a pass: supervisors done with their command wait for the next, acknowledged
 * channels are forgotten, the host gets what is queued for it. */
static void end_pass(struct live *l)
{
    for (struct chan *c = l->chans, *next; c; c = next) {
        next = c->next;
        if (c->sock >= 0 && c->result_sent && bytes_pending(&c->inq) == 0)
            release_supervisor(l, c);
        if (c->acked)
            chan_free(l, c);
    }
    if (l->host_out_ok && bytes_flush(&l->outq, 1) < 0) {
        /* Nobody reads our stdout any more: keep frames for a replay, drop the queue. */
        l->host_out_ok = false;
    }
    if (!l->host_out_ok)
        l->outq.off = l->outq.len = 0;
}

int agent_serve(void)
{
    int sfd = serve_signals();
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
    proxy_init(&l.px, &l.outq);

    bool waited = false;
    for (;;) {
        keep_spare(&l, waited);
        __attribute__((cleanup(pass_free))) struct pass ps = {0};
        if (pass_build(&l, sfd, &ps) < 0) {
            poll(NULL, 0, 100);
            continue;
        }
        int r = poll(ps.p, (nfds_t)ps.np, l.nidle > 0 ? -1 : SPARE_WAIT_MS);
        waited = r == 0;
        if (r < 0 && errno != EINTR)
            continue;
        if ((ps.p[0].revents & POLLIN) && on_signals(&l, sfd)) {
            kill(-1, SIGKILL);
            return 0;
        }
        if (ps.p[1].fd == 0 && (ps.p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            read_host(&l);
        serve_nets(&l, &ps);
        serve_supervisors(&l, &ps);
        end_pass(&l);
    }
}
