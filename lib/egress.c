/* Egress: the host side of the agent's proxy. See include/clearing/egress.h.
 *
 * One thread per connection: it resolves and decides (names are resolved here, never inside the
 * sandbox, and the address that was checked is the one connected to), connects with a timeout,
 * then carries bytes between the remote socket and the live channel until either side ends, the
 * connection is idle too long, or the sandbox's byte budget is spent. Frames from the agent
 * arrive on the channel's reader thread and are only queued here, so a slow remote never holds
 * up the channel. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clearing/cleanup_json.h"
#include "internal.h"
#include "proto.h"

#define CONNECT_TIMEOUT_MS 5000
#define CONN_QUEUE_MAX (8u << 20) /* bytes from the sandbox not yet written to the remote */

const char *const clr_egress_proxy_env[] = {
    "HTTP_PROXY=" CLR_EGRESS_PROXY, "HTTPS_PROXY=" CLR_EGRESS_PROXY,
    "http_proxy=" CLR_EGRESS_PROXY, "https_proxy=" CLR_EGRESS_PROXY,
    "NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1", NULL};

/* ---- policy ---- */

void clr_egress_policy_free(clr_egress_policy *p)
{
    if (!p)
        return;
    free(p->rules);
    free(p);
}

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

/* Lower case, no trailing dot; false for anything but a host name, *.suffix or an IP. */
static bool normalize_host(char *h)
{
    size_t n = strlen(h);
    if (n && h[n - 1] == '.')
        h[--n] = '\0';
    if (n == 0 || n > 253)
        return false;
    if (is_ip_literal(h))
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        h[i] = (char)tolower(c);
        if (!(isalnum(c) || c == '-' || c == '.' || (c == '*' && i == 0 && h[1] == '.')))
            return false;
    }
    return strstr(h, "..") == NULL && h[0] != '.';
}

static int parse_rule(clr_egress_rule *r, const char *s, clr_error *err)
{
    char buf[300];
    if (strlen(s) >= sizeof(buf))
        return clr_error_set(err, CLR_E_INVALID, 0, "egress rule '%.64s...' is too long", s);
    snprintf(buf, sizeof(buf), "%s", s);
    char *host = buf, *port = NULL;
    if (buf[0] == '[') {
        char *end = strchr(buf, ']');
        if (!end)
            return clr_error_set(err, CLR_E_INVALID, 0, "egress rule '%s': unclosed [", s);
        *end = '\0';
        host = buf + 1;
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            return clr_error_set(err, CLR_E_INVALID, 0, "egress rule '%s': junk after ]", s);
    } else {
        char *colon = strchr(buf, ':');
        if (colon && strchr(colon + 1, ':'))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "egress rule '%s': write IPv6 addresses as [addr]:port", s);
        if (colon) {
            *colon = '\0';
            port = colon + 1;
        }
    }
    r->port = 0;
    if (port) {
        char *end = NULL;
        unsigned long p = strtoul(port, &end, 10);
        if (!*port || !end || *end || p == 0 || p > 65535)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "egress rule '%s': the port must be 1..65535", s);
        r->port = (unsigned)p;
    }
    if (!normalize_host(host))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "egress rule '%s': expected HOST[:PORT], *.SUFFIX[:PORT] or an IP "
                             "address",
                             s);
    if (strlen(host) >= sizeof(r->host))
        return clr_error_set(err, CLR_E_INVALID, 0, "egress rule '%.64s...': host too long", s);
    memcpy(r->host, host, strlen(host) + 1);
    return 0;
}

int clr_egress_policy_parse(clr_egress_policy **out, json_t *j, clr_error *err)
{
    _cleanup_egress_policy_ clr_egress_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    p->max_connections = CLR_EGRESS_DEFAULT_CONNECTIONS;
    p->max_bytes = CLR_EGRESS_DEFAULT_BYTES;
    p->idle_ms = CLR_EGRESS_DEFAULT_IDLE_MS;
    if (!j || json_is_null(j)) {
        *out = steal_pointer(&p);
        return 0;
    }
    if (!json_is_object(j))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "egress must be an object: {\"allow\": [\"HOST[:PORT]\", ...]}");
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        int rc = 0;
        if (strcmp(key, "allow") == 0) {
            if (!json_is_array(v) || json_array_size(v) > CLR_EGRESS_MAX_RULES) {
                rc = clr_error_set(err, CLR_E_INVALID, 0,
                                   "egress.allow must be a list of at most %d rules",
                                   CLR_EGRESS_MAX_RULES);
            } else {
                p->n = json_array_size(v);
                p->rules = calloc(p->n ? p->n : 1, sizeof(*p->rules));
                if (!p->rules)
                    rc = clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
                for (size_t i = 0; rc == 0 && i < p->n; i++) {
                    const char *s = json_string_value(json_array_get(v, i));
                    rc = s ? parse_rule(&p->rules[i], s, err)
                           : clr_error_set(err, CLR_E_INVALID, 0,
                                           "egress.allow[%zu] must be a string", i);
                }
            }
        } else if (strcmp(key, "max_connections") == 0) {
            json_int_t n = json_integer_value(v);
            if (!json_is_integer(v) || n < 1 || n > 256)
                rc = clr_error_set(err, CLR_E_INVALID, 0,
                                   "egress.max_connections must be an integer 1..256");
            p->max_connections = (unsigned)n;
        } else if (strcmp(key, "max_bytes") == 0) {
            uint64_t n = 0;
            if (json_is_integer(v) && json_integer_value(v) > 0)
                n = (uint64_t)json_integer_value(v);
            else if (json_is_string(v) && clr_parse_size(&n, json_string_value(v), NULL) < 0)
                n = 0;
            if (n == 0)
                rc = clr_error_set(err, CLR_E_INVALID, 0,
                                   "egress.max_bytes must be a positive size such as \"100m\"");
            p->max_bytes = n;
        } else if (strcmp(key, "idle_timeout") == 0) {
            uint64_t ms = 0;
            if (!json_is_string(v) || clr_parse_duration_ms(&ms, json_string_value(v), NULL) < 0 ||
                ms < 1000 || ms > 3600000)
                rc = clr_error_set(err, CLR_E_INVALID, 0,
                                   "egress.idle_timeout must be a duration 1s..1h, e.g. \"30s\"");
            p->idle_ms = (uint32_t)ms;
        } else {
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "egress has no field '%.64s' (allow, max_connections, max_bytes, "
                               "idle_timeout)",
                               key);
        }
        if (rc < 0)
            return -1;
    }
    *out = steal_pointer(&p);
    return 0;
}

json_t *clr_egress_policy_to_json(const clr_egress_policy *p)
{
    json_t *allow = json_array();
    for (size_t i = 0; i < p->n; i++) {
        char buf[300];
        bool v6 = strchr(p->rules[i].host, ':') != NULL;
        if (p->rules[i].port)
            snprintf(buf, sizeof(buf), v6 ? "[%s]:%u" : "%s:%u", p->rules[i].host,
                     p->rules[i].port);
        else
            snprintf(buf, sizeof(buf), v6 ? "[%s]" : "%s", p->rules[i].host);
        json_array_append_new(allow, json_string(buf));
    }
    char idle[32];
    snprintf(idle, sizeof(idle), "%ums", p->idle_ms);
    return json_pack("{s:o, s:i, s:I, s:s}", "allow", allow, "max_connections",
                     (int)p->max_connections, "max_bytes", (json_int_t)p->max_bytes,
                     "idle_timeout", idle);
}

static bool port_matches(unsigned rule, unsigned port)
{
    return rule ? rule == port : (port == 80 || port == 443);
}

static bool host_matches(const char *rule, const char *host)
{
    if (rule[0] == '*' && rule[1] == '.') {
        size_t rl = strlen(rule + 1), hl = strlen(host);
        return hl > rl && strcmp(host + hl - rl, rule + 1) == 0;
    }
    return strcmp(rule, host) == 0;
}

static bool rule_within(const clr_egress_rule *r, const clr_egress_policy *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const clr_egress_rule *q = &p->rules[i];
        /* A rule without a port stands for 80 and 443: only q without a port covers both. */
        bool port_ok = r->port ? port_matches(q->port, r->port) : q->port == 0;
        if (host_matches(q->host, r->host) && port_ok)
            return true;
    }
    return false;
}

bool clr_egress_policy_within(const clr_egress_policy *t, const clr_egress_policy *p)
{
    for (size_t i = 0; i < t->n; i++) {
        if (!rule_within(&t->rules[i], p))
            return false;
    }
    return t->max_connections <= p->max_connections && t->max_bytes <= p->max_bytes &&
           t->idle_ms <= p->idle_ms;
}

static bool v4_internal(uint32_t a)
{
    static const struct {
        uint32_t net, mask;
    } nets[] = {
        {0x00000000, 0xff000000}, /* 0/8 "this network" */
        {0x0a000000, 0xff000000}, /* 10/8 */
        {0x64400000, 0xffc00000}, /* 100.64/10 shared (CGNAT) */
        {0x7f000000, 0xff000000}, /* 127/8 loopback */
        {0xa9fe0000, 0xffff0000}, /* 169.254/16 link-local, cloud metadata */
        {0xac100000, 0xfff00000}, /* 172.16/12 */
        {0xc0000000, 0xffffff00}, /* 192.0.0/24 protocol assignments */
        {0xc0a80000, 0xffff0000}, /* 192.168/16 */
        {0xc6120000, 0xfffe0000}, /* 198.18/15 benchmarking */
        {0xe0000000, 0xe0000000}, /* 224/3 multicast, reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
        if ((a & nets[i].mask) == nets[i].net)
            return true;
    }
    return false;
}

bool clr_egress_address_internal(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_internal(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return true;
    const uint8_t *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, v4mapped, 12) == 0 || memcmp(b, nat64, 12) == 0) {
        uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
        return v4_internal(a);
    }
    bool zero = true;
    for (int i = 0; i < 15; i++)
        zero &= b[i] == 0;
    if (zero) /* :: and ::1 */
        return true;
    return (b[0] & 0xfe) == 0xfc ||                  /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           b[0] == 0xff;                              /* multicast */
}

static int literal_addr(const char *h, unsigned port, struct sockaddr_storage *ss,
                        socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)(const void *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16) == 0;
}

/* Whether the policy lists this address itself (as an IP literal rule) for this port. */
static bool address_listed(const clr_egress_policy *p, const struct sockaddr *sa, unsigned port)
{
    for (size_t i = 0; i < p->n; i++) {
        struct sockaddr_storage ss;
        socklen_t l;
        if (port_matches(p->rules[i].port, port) &&
            literal_addr(p->rules[i].host, port, &ss, &l) == 0 &&
            same_addr((struct sockaddr *)&ss, sa))
            return true;
    }
    return false;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    const void *a = sa->sa_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (!inet_ntop(sa->sa_family, a, out, (socklen_t)len))
        snprintf(out, len, "?");
}

int clr_egress_decide(const clr_egress_policy *p, const char *host_in, unsigned port,
                      struct sockaddr_storage *addr, socklen_t *addrlen, char *why, size_t wl)
{
    char host[300];
    snprintf(host, sizeof(host), "%s", host_in);
    if (port == 0 || port > 65535 || !normalize_host(host) || host[0] == '*') {
        snprintf(why, wl, "'%.100s' is not a host name or address", host_in);
        return -1;
    }
    if (is_ip_literal(host)) {
        literal_addr(host, port, addr, addrlen);
        if (address_listed(p, (struct sockaddr *)addr, port))
            return 0;
        snprintf(why, wl, "the address %s:%u is not on the sandbox's allow-list (addresses are "
                          "allowed only when listed as such)",
                 host, port);
        return -1;
    }
    bool listed = false;
    for (size_t i = 0; i < p->n && !listed; i++)
        listed = !is_ip_literal(p->rules[i].host) && host_matches(p->rules[i].host, host) &&
                 port_matches(p->rules[i].port, port);
    if (!listed) {
        snprintf(why, wl, "%s:%u is not on the sandbox's allow-list", host, port);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0) {
        snprintf(why, wl, "%s does not resolve: %s", host, gai_strerror(g));
        return -1;
    }
    char refused[64] = "";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (clr_egress_address_internal(ai->ai_addr) && !address_listed(p, ai->ai_addr, port)) {
            addr_text(ai->ai_addr, refused, sizeof(refused));
            continue;
        }
        memcpy(addr, ai->ai_addr, ai->ai_addrlen);
        *addrlen = ai->ai_addrlen;
        freeaddrinfo(res);
        return 0;
    }
    freeaddrinfo(res);
    snprintf(why, wl,
             "%s resolves only to internal addresses (%s): loopback, private, link-local and "
             "metadata addresses need the address itself on the allow-list",
             host, refused);
    return -1;
}

/* ---- connections ---- */

struct conn {
    clr_egress *e;
    clr_channel *ch;
    uint32_t id;
    char host[300];
    unsigned port;
    bool tunnel;
    pthread_t thread;
    int wake; /* eventfd */
    pthread_mutex_t lock;
    uint8_t *q; /* from the sandbox, not yet written to the remote */
    size_t qlen;
    bool peer_closed, overflow;
    bool done; /* its thread has ended (guarded by the egress lock): join and free it */
    struct conn *next;
};

struct clr_egress {
    pthread_mutex_t lock;
    clr_egress_policy policy; /* rules owned */
    clr_audit *audit;
    clr_egress_totals *totals;
    char sandbox_id[CLR_SANDBOX_ID_MAX + 1];
    struct conn *conns;
    unsigned active;
    uint64_t bytes; /* both ways, all connections */
    bool stopping;
};

static int copy_policy(clr_egress_policy *dst, const clr_egress_policy *src)
{
    clr_egress_rule *r = calloc(src->n ? src->n : 1, sizeof(*r));
    if (!r)
        return -1;
    if (src->n)
        memcpy(r, src->rules, src->n * sizeof(*r));
    free(dst->rules);
    *dst = *src;
    dst->rules = r;
    return 0;
}

clr_egress *clr_egress_new(const clr_egress_policy *p, clr_audit *audit, const char *sandbox_id,
                           clr_egress_totals *totals)
{
    clr_egress *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    if (copy_policy(&e->policy, p) < 0) {
        free(e);
        return NULL;
    }
    pthread_mutex_init(&e->lock, NULL);
    e->audit = audit;
    e->totals = totals;
    snprintf(e->sandbox_id, sizeof(e->sandbox_id), "%s", sandbox_id);
    return e;
}

int clr_egress_set_policy(clr_egress *e, const clr_egress_policy *p, clr_error *err)
{
    pthread_mutex_lock(&e->lock);
    int rc = copy_policy(&e->policy, p);
    pthread_mutex_unlock(&e->lock);
    return rc < 0 ? clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory") : 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void record(clr_egress *e, const struct conn *c, const char *outcome, const char *addr,
                   const char *reason, uint64_t out, uint64_t in, uint64_t ms)
{
    if (e->totals) {
        if (strcmp(outcome, "denied") == 0)
            atomic_fetch_add(&e->totals->denied, 1);
        else
            atomic_fetch_add(&e->totals->allowed, 1);
        atomic_fetch_add(&e->totals->bytes_out, out);
        atomic_fetch_add(&e->totals->bytes_in, in);
    }
    clr_log(strcmp(outcome, "denied") == 0 ? CLR_LOG_WARN : CLR_LOG_INFO, "egress.connection",
            "id", e->sandbox_id, "host", c->host, "outcome", outcome, "reason",
            reason ? reason : "", NULL);
    if (!e->audit)
        return;
    /* The host and the reason come from the sandbox: bounded, and escaped if not UTF-8. */
    _cleanup_json_ json_t *d =
        json_pack("{s:o, s:i, s:s, s:s, s:I, s:I, s:I}", "host",
                  clr_audit_text(c->host, strlen(c->host), CLR_AUDIT_FIELD_MAX), "port",
                  (int)c->port, "kind", c->tunnel ? "connect" : "http", "address",
                  addr ? addr : "", "bytes_out", (json_int_t)out, "bytes_in", (json_int_t)in,
                  "duration_ms", (json_int_t)ms);
    if (reason)
        json_object_set_new(d, "reason",
                            clr_audit_text(reason, strlen(reason), CLR_AUDIT_FIELD_MAX));
    clr_error err = CLR_ERROR_INIT;
    int rc;
    if (strcmp(outcome, "denied") == 0) {
        /* A sandbox sets the rate of its denials: per destination, the first is recorded at
         * once and the rest as counts, so a loop of refused connections is a few records. */
        char dest[CLR_AUDIT_FIELD_MAX];
        snprintf(dest, sizeof(dest), "%.200s:%u", c->host, (unsigned)c->port);
        rc = clr_audit_denied(e->audit, dest, "sandbox", e->sandbox_id, "egress.connect",
                              outcome, d, &err);
    } else {
        rc = clr_audit_append(e->audit, "sandbox", e->sandbox_id, "egress.connect", outcome, d,
                              &err);
    }
    if (rc < 0)
        clr_log(CLR_LOG_ERROR, "audit.write_failed", "error", err.message, NULL);
}

static int connect_timeout(const struct sockaddr_storage *a, socklen_t len, char *why, size_t wl)
{
    _cleanup_close_ int fd = socket(a->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, wl, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)a, len) < 0 && errno != EINPROGRESS) {
        snprintf(why, wl, "connect: %s", strerror(errno));
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, CONNECT_TIMEOUT_MS);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        snprintf(why, wl, "connect: %s", r == 0 ? "timed out" : strerror(soerr ? soerr : errno));
        return -1;
    }
    return steal_fd(&fd);
}

/* Takes what the sandbox sent; false when the connection is to end. */
static bool conn_take(struct conn *c, uint8_t **data, size_t *len, bool *peer_closed)
{
    pthread_mutex_lock(&c->lock);
    *data = c->q;
    *len = c->qlen;
    c->q = NULL;
    c->qlen = 0;
    *peer_closed = c->peer_closed;
    bool ok = !c->overflow;
    pthread_mutex_unlock(&c->lock);
    uint64_t v;
    (void)!read(c->wake, &v, sizeof(v));
    return ok;
}

static bool write_all(int fd, const uint8_t *d, size_t len, uint32_t idle_ms)
{
    while (len > 0) {
        ssize_t n = send(fd, d, len, MSG_NOSIGNAL);
        if (n > 0) {
            d += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, (int)idle_ms) <= 0)
            return false;
    }
    return true;
}

/* Decides on a snapshot of the policy (a new policy applies to later connections) and connects:
 * the socket, or -1 with why, and *outcome "denied" (the policy) or "failed" (the connect). */
static int conn_open(struct conn *c, char *why, size_t wl, char *addr, size_t al,
                     uint32_t *idle_ms, const char **outcome)
{
    clr_egress *e = c->e;
    pthread_mutex_lock(&e->lock);
    clr_egress_policy snapshot = {0};
    bool copied = copy_policy(&snapshot, &e->policy) == 0;
    pthread_mutex_unlock(&e->lock);
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int fd = -1;
    *outcome = "denied";
    if (!copied) {
        snprintf(why, wl, "out of memory");
    } else if (clr_egress_decide(&snapshot, c->host, c->port, &ss, &sl, why, wl) == 0) {
        addr_text((struct sockaddr *)&ss, addr, al);
        fd = connect_timeout(&ss, sl, why, wl);
        if (fd < 0)
            *outcome = "failed";
    }
    *idle_ms = snapshot.idle_ms ? snapshot.idle_ms : CLR_EGRESS_DEFAULT_IDLE_MS;
    free(snapshot.rules);
    return fd;
}

/* Counts n bytes against the sandbox's budget: NULL to go on, else why the connection ends
 * ("closed": the egress is stopping). */
static const char *conn_count(clr_egress *e, uint64_t n)
{
    pthread_mutex_lock(&e->lock);
    e->bytes += n;
    bool over = e->bytes > e->policy.max_bytes, stop = e->stopping;
    pthread_mutex_unlock(&e->lock);
    if (over)
        return "the sandbox's egress byte budget is spent";
    return stop ? "closed" : NULL;
}

/* What the sandbox sent goes to the remote, and its half-close after it: NULL to go on, else
 * why the connection ends. */
static const char *conn_to_remote(struct conn *c, int fd, uint32_t idle_ms, bool *sent_shut,
                                  uint64_t *out)
{
    _cleanup_free_ uint8_t *d = NULL;
    size_t dl = 0;
    bool peer_closed = false;
    if (!conn_take(c, &d, &dl, &peer_closed))
        return "the sandbox sent faster than the remote takes";
    if (dl && !write_all(fd, d, dl, idle_ms))
        return "the remote stopped taking data";
    *out += dl;
    if (peer_closed && !*sent_shut) {
        shutdown(fd, SHUT_WR);
        *sent_shut = true;
    }
    return conn_count(c->e, dl);
}

/* Waits for the remote or the sandbox (at most idle_ms); what the remote sent goes to the
 * sandbox. NULL to go on, else why the connection ends ("closed": it simply did). */
static const char *conn_from_remote(struct conn *c, int fd, uint32_t idle_ms, uint8_t *buf,
                                    uint64_t *in)
{
    struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = c->wake, .events = POLLIN}};
    int r = poll(pf, 2, (int)idle_ms);
    if (r == 0)
        return "idle timeout";
    if (r < 0)
        return errno == EINTR ? NULL : "closed";
    if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
        return NULL;
    ssize_t n = recv(fd, buf, CLR_PROTO_MAX_PAYLOAD, MSG_DONTWAIT);
    if (n > 0) {
        if (clr_channel_send(c->ch, c->id, CLR_FRAME_NET_DATA, buf, (size_t)n, NULL) < 0)
            return "closed";
        *in += (uint64_t)n;
        pthread_mutex_lock(&c->e->lock);
        c->e->bytes += (uint64_t)n;
        pthread_mutex_unlock(&c->e->lock);
        return NULL;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
        /* The remote is done: so is the client (HTTP/1 without a tunnel of its own half-close
         * semantics); the agent is told by the NET_CLOSE that follows. */
        return "closed";
    return NULL;
}

/* Carries bytes both ways until either side ends, the connection is idle too long or the byte
 * budget is spent: why it ended ("closed" when it simply did). */
static const char *conn_pump(struct conn *c, int fd, uint32_t idle_ms, uint64_t *out,
                             uint64_t *in)
{
    _cleanup_free_ uint8_t *buf = malloc(CLR_PROTO_MAX_PAYLOAD);
    if (!buf)
        return "closed";
    bool sent_shut = false;
    for (;;) {
        const char *end = conn_to_remote(c, fd, idle_ms, &sent_shut, out);
        if (!end)
            end = conn_from_remote(c, fd, idle_ms, buf, in);
        if (end)
            return end;
    }
}

static void *conn_main(void *p)
{
    struct conn *c = p;
    clr_egress *e = c->e;
    uint64_t t0 = mono_ms();
    char why[400] = "", addr[64] = "";
    const char *outcome = "denied";
    uint32_t idle_ms = 0;
    int fd = conn_open(c, why, sizeof(why), addr, sizeof(addr), &idle_ms, &outcome);
    /* Recorded before the sandbox is told: what it learns of a connection is on the record,
     * and whoever waits for the frame finds the record and the counters already there. */
    if (fd < 0) {
        record(e, c, outcome, addr, why, 0, 0, mono_ms() - t0);
        clr_channel_send(c->ch, c->id, CLR_FRAME_NET_DENY, why, strlen(why), NULL);
    } else {
        clr_channel_send(c->ch, c->id, CLR_FRAME_NET_ACCEPT, NULL, 0, NULL);
        uint64_t out = 0, in = 0;
        const char *end = conn_pump(c, fd, idle_ms, &out, &in);
        close(fd);
        record(e, c, "allowed", addr, strcmp(end, "closed") ? end : NULL, out, in,
               mono_ms() - t0);
        clr_channel_send(c->ch, c->id, CLR_FRAME_NET_CLOSE, NULL, 0, NULL);
    }
    pthread_mutex_lock(&e->lock);
    e->active--;
    c->done = true;
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static void conn_free(struct conn *c)
{
    pthread_join(c->thread, NULL);
    close(c->wake);
    free(c->q);
    pthread_mutex_destroy(&c->lock);
    clr_channel_unref(c->ch);
    free(c);
}

/* Ended connections go (the egress lock is held). */
static void reap_locked(clr_egress *e)
{
    for (struct conn **pp = &e->conns; *pp;) {
        struct conn *c = *pp;
        if (c->done) {
            *pp = c->next;
            conn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

int clr_egress_parse_open(const uint8_t *payload, uint32_t len, bool *tunnel, char *host,
                          size_t hostlen, unsigned *port)
{
    /* "C"|"H", NUL, host, NUL, port: written by the agent, shaped by the sandbox's command. */
    if (len < 5 || (payload[0] != 'C' && payload[0] != 'H') || payload[1] != '\0')
        return -1;
    const uint8_t *h = payload + 2, *end = payload + len;
    const uint8_t *hend = memchr(h, '\0', (size_t)(end - h));
    if (!hend || hend == h || (size_t)(hend - h) >= hostlen)
        return -1;
    const uint8_t *p = hend + 1;
    size_t plen = (size_t)(end - p);
    if (plen == 0 || plen > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    *tunnel = payload[0] == 'C';
    *port = v;
    return 0;
}

static struct conn *conn_find(clr_egress *e, uint32_t id)
{
    for (struct conn *c = e->conns; c; c = c->next) {
        if (c->id == id)
            return c;
    }
    return NULL;
}

/* Starts the thread of a connection the policy allows (the egress lock is held): NULL, or why
 * it could not start. */
static const char *conn_start(clr_egress *e, clr_channel *ch, const struct conn *probe)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return "out of memory";
    *c = *probe;
    c->e = e;
    c->ch = ch;
    c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&c->lock, NULL);
    clr_channel_ref(ch);
    if (c->wake < 0 || pthread_create(&c->thread, NULL, conn_main, c) != 0) {
        if (c->wake >= 0)
            close(c->wake);
        clr_channel_unref(ch);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return "cannot start a connection thread";
    }
    e->active++;
    c->next = e->conns;
    e->conns = c;
    return NULL;
}

void clr_egress_on_frame(clr_egress *e, clr_channel *ch, uint8_t type, uint32_t id,
                         const uint8_t *payload, uint32_t len)
{
    pthread_mutex_lock(&e->lock);
    if (type == CLR_FRAME_NET_OPEN) {
        reap_locked(e);
        struct conn probe = {.id = id};
        const char *deny = NULL;
        if (clr_egress_parse_open(payload, len, &probe.tunnel, probe.host, sizeof(probe.host),
                                  &probe.port) < 0) {
            snprintf(probe.host, sizeof(probe.host), "?");
            deny = "malformed connection request";
        } else if (e->stopping) {
            deny = "the sandbox is going away";
        } else if (conn_find(e, id)) {
            deny = "connection id in use";
        } else if (e->active >= e->policy.max_connections) {
            deny = "too many connections at once (egress max_connections)";
        } else if (e->bytes >= e->policy.max_bytes) {
            deny = "the sandbox's egress byte budget is spent";
        }
        if (!deny)
            deny = conn_start(e, ch, &probe);
        pthread_mutex_unlock(&e->lock);
        if (deny) {
            record(e, &probe, "denied", NULL, deny, 0, 0, 0);
            clr_channel_send(ch, id, CLR_FRAME_NET_DENY, deny, strlen(deny), NULL);
        }
        return;
    }
    struct conn *c = conn_find(e, id);
    if (c) {
        pthread_mutex_lock(&c->lock);
        if (type == CLR_FRAME_NET_DATA && !c->peer_closed) {
            uint8_t *n = c->qlen + len > CONN_QUEUE_MAX ? NULL : realloc(c->q, c->qlen + len);
            if (!n) {
                c->overflow = true;
            } else {
                memcpy(n + c->qlen, payload, len);
                c->q = n;
                c->qlen += len;
            }
        } else if (type == CLR_FRAME_NET_CLOSE) {
            c->peer_closed = true;
        }
        pthread_mutex_unlock(&c->lock);
        uint64_t one = 1;
        (void)!write(c->wake, &one, sizeof(one));
    }
    pthread_mutex_unlock(&e->lock);
}

void clr_egress_free(clr_egress *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    for (struct conn *c = e->conns; c; c = c->next) {
        uint64_t one = 1;
        (void)!write(c->wake, &one, sizeof(one));
    }
    pthread_mutex_unlock(&e->lock);
    while (e->conns) {
        struct conn *c = e->conns;
        e->conns = c->next;
        conn_free(c);
    }
    free(e->policy.rules);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

static void on_net(void *ctx, clr_channel *ch, uint8_t type, uint32_t id, const uint8_t *payload,
                   uint32_t len)
{
    clr_egress_on_frame(ctx, ch, type, id, payload, len);
}

int clr_egress_channel_open(clr_channel **ch, clr_egress **egress, const clr_egress_policy *p,
                            clr_audit *audit, clr_engine *eng, const clr_sandbox *sb,
                            clr_error *err)
{
    *ch = NULL;
    *egress = clr_egress_new(p, audit, clr_sandbox_get_info(sb)->id, NULL);
    if (!*egress)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_channel_hooks hooks = {.ctx = *egress, .on_net = on_net};
    if (clr_channel_open(ch, eng, sb, &hooks, err) < 0) {
        clr_egress_free(*egress);
        *egress = NULL;
        return -1;
    }
    return 0;
}

/* The limit want names (given) if not above had's, had's if left out; -1 naming it if above. */
static int narrow_limit(uint64_t *v, uint64_t had, bool given, const char *name,
                        const char *unit, clr_error *err)
{
    if (!given) {
        *v = had;
        return 0;
    }
    if (*v > had)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "egress.%s (%llu%s) is above the snapshot's sandbox's (%llu%s): "
                             "a fork's egress may be narrowed, not widened",
                             name, (unsigned long long)*v, unit, (unsigned long long)had, unit);
    return 0;
}

int clr_egress_policy_narrow(json_t **out, json_t *want, json_t *had, clr_error *err)
{
    _cleanup_egress_policy_ clr_egress_policy *h = NULL;
    _cleanup_egress_policy_ clr_egress_policy *w = NULL;
    if (clr_egress_policy_parse(&h, had, err) < 0)
        return clr_error_prefix(err, "the snapshot's sandbox's egress policy");
    if (clr_egress_policy_parse(&w, want, err) < 0)
        return -1;
    json_t *named = json_is_object(want) ? want : NULL;
    if (!json_object_get(named, "allow")) {
        free(w->rules);
        w->rules = calloc(h->n ? h->n : 1, sizeof(*w->rules));
        if (!w->rules)
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        if (h->n)
            memcpy(w->rules, h->rules, h->n * sizeof(*w->rules));
        w->n = h->n;
    }
    for (size_t i = 0; i < w->n; i++) {
        if (!rule_within(&w->rules[i], h))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "egress.allow[%zu] (%s) is not in the snapshot's sandbox's "
                                 "policy: a fork's egress may be narrowed, not widened",
                                 i, w->rules[i].host);
    }
    uint64_t conns = w->max_connections, bytes = w->max_bytes, idle = w->idle_ms;
    if (narrow_limit(&conns, h->max_connections, json_object_get(named, "max_connections"),
                     "max_connections", "", err) < 0 ||
        narrow_limit(&bytes, h->max_bytes, json_object_get(named, "max_bytes"), "max_bytes",
                     " bytes", err) < 0 ||
        narrow_limit(&idle, h->idle_ms, json_object_get(named, "idle_timeout"), "idle_timeout",
                     " ms", err) < 0)
        return -1;
    w->max_connections = (unsigned)conns;
    w->max_bytes = bytes;
    w->idle_ms = (uint32_t)idle;
    *out = clr_egress_policy_to_json(w);
    return *out ? 0 : clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
}
