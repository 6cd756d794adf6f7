/* What the HTTP server's files share: the server and one request as the connection layer
 * (server.c) fills them and the routes (routes.c) read them. Data only: no function here. */
#ifndef CLR_SERVER_INTERNAL_H
#define CLR_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <microhttpd.h>

#include "server.h"

#define MAX_JSON_BODY (1024 * 1024)
#define MAX_TOKENS 64

struct token {
    char tenant[CLR_TENANT_MAX + 1];
    char name[CLR_TENANT_MAX + 1];
    unsigned char digest[32];
    int line; /* in the token file, for the errors that name a duplicate */
};

/* A uid with connections open on the unix socket, and how many it holds. */
struct uid_share {
    uid_t uid;
    unsigned held;
};

struct server {
    clr_service *svc;
    struct MHD_Daemon *unix_d, *tcp_d;
    int unix_fd;
    bool unix_activated; /* unix_fd came from systemd (clearing.socket): never unlinked */
    char socket_path[108];
    struct token tokens[MAX_TOKENS];
    int ntokens;
    /* The unix socket's connection shares (see on_unix_connection). */
    pthread_mutex_t shares_lock;
    struct uid_share *shares; /* the uids holding slots: at most shared_limit entries */
    unsigned nshares;
    unsigned per_uid_limit, shared_limit, shared_held;
    uid_t self_uid;
    unsigned refused_unlogged; /* refusals since the last log line */
    bool refusal_logged;
    struct timespec refusal_logged_at;
    /* Bytes of request bodies spooled to disk right now, all connections together: the
     * per-request cap alone lets max_connections clients fill the disk at once. */
    _Atomic uint64_t spooled;
    uint64_t max_upload_total;
    /* Downloads are spooled too (the audit record hashes exactly the bytes sent): what they
     * hold on disk at once, all connections together, is charged here by the library as it
     * writes, and given back when the response is done. */
    clr_files_budget downloads;
    /* The TCP listener's address and port (0: none): the only Origin /mcp admits. */
    char tcp_address[INET_ADDRSTRLEN];
    uint16_t tcp_port;
    struct mcp_http *mcp; /* the sessions of /mcp (mcp_http.h) */
    unsigned mcp_idle_timeout_s; /* server_options.mcp_idle_timeout_s, its default applied */
    const clr_tenant_quota *tenants; /* server_options.tenants */
    size_t ntenants;
};

/* Why a request is refused before its body is read. */
enum refusal {
    REFUSE_NONE,
    REFUSE_TOKEN,     /* TCP without a valid token: 401 */
    REFUSE_ROUTE,     /* unknown path, bad id, method the path does not take: route() says */
    REFUSE_BODY,      /* a body where the route takes none: 400 */
    REFUSE_TOO_LARGE, /* an upload announced larger than MAX_UPLOAD: 413 */
    REFUSE_BUDGET,    /* an upload announced larger than what is left of max_upload_total */
    REFUSE_OVER_TOTAL, /* an upload announced larger than max_upload_total itself: 413 */
    REFUSE_NARROW_TCP, /* X-Clearing-Tenant/-Actor on TCP, where they are never honoured: 400 */
    REFUSE_NARROW_BAD, /* X-Clearing-Tenant/-Actor on the unix socket, malformed: 400 */
};

struct request {
    char *body;
    size_t len;
    int upload_fd;     /* PUT bodies go to an unnamed temporary file, never into memory */
    uint64_t upload_len;
    uint64_t spooled;  /* this request's part of server.spooled, given back when it ends */
    uint64_t download_charged; /* its part of server.downloads, given back when it ends */
    bool too_big;
    bool over_budget;  /* max_upload_total was reached: the body is dropped, 503 */
    bool over_total;   /* the body alone is larger than max_upload_total: dropped, 413 */
    int spool_errno;   /* storing the body failed (ENOSPC, ...): dropped, 503 naming it */
    bool takes_body;   /* its route reads a body: nothing else is ever stored */
    enum refusal refused; /* decided from the headers; its body is never stored */
    char actor[160];
    /* The tenant of the request's token: it sees and drives only that tenant's sandboxes. ""
     * for the unix socket's peers, the operator, who sees all. */
    char tenant[CLR_TENANT_MAX + 1];
    /* Who holds what the request opens (an MCP session): "tenant=T token=N" for a token,
     * "uid=N" for a unix peer, "uid=N tenant=T" for one narrowed by X-Clearing-Tenant. */
    char principal[160];
    bool unix_socket;
    bool authed;
    bool anonymous; /* GET /v1/health on TCP without a token: told the status word only */
};


#endif
