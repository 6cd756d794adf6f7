/* The HTTP server of `clearing serve`. */
#ifndef CLR_SERVER_H
#define CLR_SERVER_H

#include <arpa/inet.h>
#include <sys/types.h>

#include "clearing/clearing.h"
#include "clearing/service.h"

/* The most sessions /mcp holds at once (mcp_http.h), and so the most a tenant's
 * max_mcp_sessions may say. */
#define SERVER_MCP_MAX_SESSIONS 64

struct server_options {
    const char *socket_path;
    mode_t socket_mode;
    const char *socket_owner; /* user name, or NULL */
    const char *socket_group; /* group name, or NULL */
    const char *tcp_address;  /* NULL: 127.0.0.1 */
    uint16_t tcp_port;        /* 0: no TCP listener */
    const char *token_file;   /* required with TCP */
    unsigned max_connections;
    uint64_t max_upload_total; /* bytes of uploads spooled at once, all connections together */
    uint64_t max_download_total; /* bytes of downloads spooled at once (holes not counted) */
    unsigned mcp_idle_timeout_s; /* an /mcp session idle this long ends; 0: MCP_HTTP_IDLE_S */
    /* The tenants' quotas (their max_mcp_sessions bounds their /mcp sessions; a tenant not
     * listed, or 0, has MCP_HTTP_TENANT_SESSIONS); they must outlive the server. */
    const clr_tenant_quota *tenants;
    size_t ntenants;
};

struct server;

int server_start(struct server **out, clr_service *svc, const struct server_options *o,
                 clr_error *err);
void server_stop(struct server *s);

#endif
