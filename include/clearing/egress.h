/* Egress: allow-listed outbound connections, carried through the live channel.
 *
 * A sandbox has no network device. Its agent offers an HTTP proxy on the sandbox's own loopback
 * (CONNECT for TLS, plain HTTP forwarding); each connection travels over the live channel to the
 * host, which decides from the sandbox's policy, resolves the name itself, connects, and carries
 * the bytes. Every decision is an audit record. */
#ifndef CLEARING_EGRESS_H
#define CLEARING_EGRESS_H

#include <stdatomic.h>
#include <sys/socket.h>

#include "audit.h"
#include "cleanup.h"
#include "common.h"
#include "exec.h"

/* The proxy's address inside every sandbox. */
#define CLR_EGRESS_PROXY "http://127.0.0.1:3128"
/* The environment that points a sandbox's commands at it (NULL-terminated). */
CLR_PUBLIC extern const char *const clr_egress_proxy_env[];
#define CLR_EGRESS_PROXY_ENV_N 6

typedef struct clr_egress_rule {
    char host[256];  /* exact name, "*.suffix", or an IP literal */
    unsigned port;   /* 0: 80 and 443 */
} clr_egress_rule;

typedef struct clr_egress_policy {
    clr_egress_rule *rules;
    size_t n;
    unsigned max_connections; /* at once */
    uint64_t max_bytes;       /* both ways, all connections of the sandbox together */
    uint32_t idle_ms;         /* a connection with no byte either way this long is closed */
} clr_egress_policy;

#define CLR_EGRESS_MAX_RULES 64
#define CLR_EGRESS_DEFAULT_CONNECTIONS 16
#define CLR_EGRESS_DEFAULT_BYTES (1024ull * 1024 * 1024)
#define CLR_EGRESS_DEFAULT_IDLE_MS 60000

/* Parses {"allow": ["HOST[:PORT]", ...], "max_connections": N, "max_bytes": "100m",
 * "idle_timeout": "30s"} (NULL: nothing allowed). *out: clr_egress_policy_free(). */
CLR_PUBLIC int clr_egress_policy_parse(clr_egress_policy **out, json_t *j, clr_error *err);
/* The policy as JSON, as parse takes it. */
CLR_PUBLIC json_t *clr_egress_policy_to_json(const clr_egress_policy *p);
CLR_PUBLIC void clr_egress_policy_free(clr_egress_policy *p);
/* A scope-owned policy (clr_egress_policy_free on every return path). */
CLR_DEFINE_CLEANUP(clr_egress_policy *, clr_egress_policy_free)
#define _cleanup_egress_policy_ __attribute__((cleanup(clr_egress_policy_freep)))
/* Whether every rule of `tighter` is allowed by `p` and no limit is looser: a live sandbox's
 * policy may only shrink. */
CLR_PUBLIC bool clr_egress_policy_within(const clr_egress_policy *tighter,
                                         const clr_egress_policy *p);
/* A fork's policy (*out, as clr_egress_policy_to_json gives it) from the one its request names
 * (want; NULL or null: none named) and its source sandbox's (had, as stored; NULL or null: nothing
 * allowed, the default limits). Every field want leaves out is had's; a rule had does not allow, or
 * a limit above had's, is refused (CLR_E_INVALID naming the field): a fork's egress may be
 * narrowed, never widened. */
CLR_PUBLIC int clr_egress_policy_narrow(json_t **out, json_t *want, json_t *had, clr_error *err);

/* The decision for one connection, without connecting: 0 with the address to connect to, or -1
 * with why. Names are resolved here; loopback, link-local, private, shared, metadata,
 * multicast and unspecified addresses are refused unless the policy lists that address itself
 * (an IP literal). An IP literal is allowed only when the policy lists it. */
CLR_PUBLIC int clr_egress_decide(const clr_egress_policy *p, const char *host, unsigned port,
                                 struct sockaddr_storage *addr, socklen_t *addrlen, char *why,
                                 size_t whylen);
/* Whether an address is one a name may never lead to (see above). Exposed for tests. */
CLR_PUBLIC bool clr_egress_address_internal(const struct sockaddr *sa);

/* The host side of one sandbox's proxy connections. */
typedef struct clr_egress clr_egress;
/* Totals shared by every sandbox of a process (metrics). */
typedef struct clr_egress_totals {
    atomic_uint_fast64_t allowed, denied, bytes_out, bytes_in;
} clr_egress_totals;

/* audit and totals may be NULL; sandbox_id names the sandbox in records. */
CLR_PUBLIC clr_egress *clr_egress_new(const clr_egress_policy *p, clr_audit *audit,
                                      const char *sandbox_id, clr_egress_totals *totals);
/* Replaces the policy (a tighter one: connections open under the old one go on). */
CLR_PUBLIC int clr_egress_set_policy(clr_egress *e, const clr_egress_policy *p, clr_error *err);
/* The channel hook: pass every NET_* frame here (from clr_channel_hooks.on_net). */
CLR_PUBLIC void clr_egress_on_frame(clr_egress *e, clr_channel *ch, uint8_t type, uint32_t id,
                                    const uint8_t *payload, uint32_t len);
/* Closes every connection and waits for their threads. */
CLR_PUBLIC void clr_egress_free(clr_egress *e);

/* For a one-sandbox process (`clearing run`, a plan): a live channel to the sandbox whose proxy
 * connections *egress carries under the policy, recorded in audit. Close the channel before
 * clr_egress_free(). On failure nothing is left open. */
CLR_PUBLIC int clr_egress_channel_open(clr_channel **ch, clr_egress **egress,
                                       const clr_egress_policy *p, clr_audit *audit,
                                       clr_engine *eng, const clr_sandbox *sb, clr_error *err);

#endif
