/* The egress proxy on the sandbox's loopback (127.0.0.1:3128): commands get HTTP_PROXY and
 * HTTPS_PROXY pointing here. It reads each connection's request head (CONNECT host:port, or a
 * plain HTTP request with an absolute http:// URL), asks the host with a NET_OPEN frame, and once
 * the host accepts carries the bytes both ways as NET_DATA frames; the host decides and connects.
 * It owns its listener, its connections and their buffers; the frames it sends go to the queue
 * it is given (the live channel's, for the host). Called by live.c, which polls its descriptors. */
#ifndef CLR_AGENT_PROXY_H
#define CLR_AGENT_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "proto.h"

#define MAX_NETS 256             /* proxy connections at once (the host has its own limit) */
#define NET_QUEUE_MAX (4u << 20) /* bytes for a client that does not read: then it is closed */

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

struct proxy {
    int fd;              /* the listener; -1 until a host said HELLO */
    struct net *nets;    /* owned */
    size_t nnets;
    uint32_t next_id;
    struct bytes *to_host; /* borrowed: where frames for the host are queued */
};

/* No listener, no connection; frames for the host will go to to_host. */
void proxy_init(struct proxy *px, struct bytes *to_host);

/* Listens on the loopback if not yet listening; a failure is logged on stderr and leaves the
 * proxy without a listener (commands' connections are then refused by the kernel). */
void proxy_listen(struct proxy *px);

/* Accepts every pending connection, up to MAX_NETS at once (the rest are closed). */
void proxy_accept(struct proxy *px);

/* Reads what the client sent: the request head (then a NET_OPEN frame, or an error reply to the
 * client), bytes before the host's answer, or tunnel data (NET_DATA frames). */
void net_read(struct proxy *px, struct net *n);

/* A NET_ACCEPT, NET_DENY, NET_DATA or NET_CLOSE frame from the host for a connection. */
void proxy_host_frame(struct proxy *px, const struct clr_frame *f);

/* Closes a connection and frees it. */
void net_free(struct proxy *px, struct net *n);

/* The connection with this id, or NULL when it is gone (freed since the id was taken). */
struct net *net_find(struct proxy *px, uint32_t id);

/* Every connection ends: a new host knows none of them. */
void proxy_reset(struct proxy *px);

/* Parses "host:port" (IPv6 in brackets) into host (hlen bytes at most, NUL included) and port;
 * with no port, default_port (0: a port is required). 0 or -1. */
int proxy_split_authority(const char *s, char *host, size_t hlen, unsigned *port,
                          unsigned default_port);

#endif
