/* The wire protocol between libclearing and clearing-agent.
 *
 * Shared by the library (host side) and the agent (inside the sandbox), so it depends on libc
 * only. Everything is length-prefixed and written by the agent itself: bytes that a command
 * prints only ever travel inside the payload of a STDOUT or STDERR frame, so a command cannot
 * forge a RESULT frame however it formats its output.
 *
 * Frame:  u32 length (BE) | u32 channel (BE) | u8 type | 3 bytes zero | payload[length]
 * The channel lets one stream carry many concurrent execs; a one-shot exec uses channel 1.
 * Request and result payloads are sequences of TLV fields: u16 tag (BE) | u32 length (BE) | value.
 * Integers are u64 big-endian.
 */
#ifndef CLR_PROTO_H
#define CLR_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLR_PROTO_HEADER_SIZE 12
#define CLR_PROTO_MAX_PAYLOAD (64 * 1024)
/* Bounds on a request, so a malformed one cannot make either side allocate without limit. */
#define CLR_PROTO_MAX_ARGS 4096
#define CLR_PROTO_MAX_ENV 4096
#define CLR_PROTO_MAX_STRING 32768

enum clr_frame_type {
    CLR_FRAME_EXEC = 1,      /* host -> agent: TLV request */
    CLR_FRAME_STDIN = 2,     /* host -> agent: bytes for the command's stdin */
    CLR_FRAME_STDIN_EOF = 3, /* host -> agent: stdin is complete */
    CLR_FRAME_STDOUT = 4,    /* agent -> host */
    CLR_FRAME_STDERR = 5,    /* agent -> host */
    CLR_FRAME_RESULT = 6,    /* agent -> host: TLV result, last frame of a channel */
    CLR_FRAME_KILL = 7,      /* host -> agent: kill the channel's process tree now */
    CLR_FRAME_SIGNAL = 8,    /* host -> agent: u64 signal for the command's process group */
    /* The live channel (PID 1 over the container's attached stdio): */
    CLR_FRAME_ACK = 9,       /* host -> agent: the channel's result arrived; forget it */
    CLR_FRAME_HELLO = 10,    /* host -> agent, channel 0: a host (re)attached; replay */
    CLR_FRAME_CHANNELS = 11, /* agent -> host, channel 0: u32 ids of the channels it knows */
    /* Egress: connections to the agent's proxy inside the sandbox, carried to the host. The
     * channel field is the connection's id (the agent's own numbering, apart from commands). */
    CLR_FRAME_NET_OPEN = 12,   /* agent -> host: "C" or "H", NUL, host, NUL, port (decimal) */
    CLR_FRAME_NET_ACCEPT = 13, /* host -> agent: connected */
    CLR_FRAME_NET_DENY = 14,   /* host -> agent: refused; payload: the reason */
    CLR_FRAME_NET_DATA = 15,   /* both ways: bytes of the connection */
    CLR_FRAME_NET_CLOSE = 16,  /* both ways: the connection is over */
};

enum clr_req_tag {
    CLR_REQ_ARG = 1,
    CLR_REQ_ENV = 2,
    CLR_REQ_CWD = 3,
    CLR_REQ_TIMEOUT_MS = 4,
    CLR_REQ_STDOUT_CAP = 5,
    CLR_REQ_STDERR_CAP = 6,
    CLR_REQ_UID = 7,
    CLR_REQ_GID = 8,
    CLR_REQ_NPROC = 9,
    CLR_REQ_MEMORY = 10,
    CLR_REQ_NOFILE = 11,
    CLR_REQ_FSIZE = 12,
    CLR_REQ_MEMORY_SOURCE = 13, /* enum clr_memory_source */
    /* 1: the output is a stream (a background process's): no cap on what is sent, and the
     * agent keeps only its newest output for a replay. An agent without it caps as asked. */
    CLR_REQ_STREAM = 14,
};

/* How the agent measures memory against CLR_REQ_MEMORY. Under gVisor, /proc/meminfo is the
 * sandbox kernel's own exact account of the sandbox (MemTotal is the limit); summing the RSS of
 * the command's processes counts shared pages once per process and overstates forked workloads,
 * so it is only the fallback for runtimes whose /proc/meminfo describes the host. */
enum clr_memory_source {
    CLR_MEMORY_TREE_RSS = 0,
    CLR_MEMORY_MEMINFO = 1,
};

enum clr_res_tag {
    CLR_RES_STATUS = 1,
    CLR_RES_EXIT_CODE = 2,
    CLR_RES_SIGNAL = 3,
    CLR_RES_WALL_US = 4,
    CLR_RES_USER_US = 5,
    CLR_RES_SYS_US = 6,
    CLR_RES_PEAK_RSS = 7,
    CLR_RES_STDOUT_BYTES = 8,
    CLR_RES_STDERR_BYTES = 9,
    CLR_RES_STDOUT_TRUNC = 10,
    CLR_RES_STDERR_TRUNC = 11,
    CLR_RES_MESSAGE = 12,
    CLR_RES_KILLED_PROCS = 13,
};

/* Mirrors enum clr_exec_status in the public header; kept as plain numbers on the wire. */
enum clr_wire_status {
    CLR_WIRE_EXITED = 1,
    CLR_WIRE_SIGNALED = 2,
    CLR_WIRE_TIMED_OUT = 3,
    CLR_WIRE_OOM = 4,
    CLR_WIRE_START_FAILED = 5,
};

struct clr_frame {
    uint32_t channel;
    uint8_t type;
    const uint8_t *payload;
    uint32_t length;
};

/* Incremental frame reader: feed it bytes in any slicing; it calls back once per whole frame. */
struct clr_frame_reader {
    uint8_t header[CLR_PROTO_HEADER_SIZE];
    size_t header_have;
    uint8_t *payload; /* CLR_PROTO_MAX_PAYLOAD bytes, owned by the caller */
    uint32_t payload_want;
    uint32_t payload_have;
    uint32_t channel;
    uint8_t type;
    bool failed;
};

typedef int (*clr_frame_cb)(void *ctx, const struct clr_frame *frame);

/* buf must hold CLR_PROTO_MAX_PAYLOAD bytes and outlive the reader. */
void clr_frame_reader_init(struct clr_frame_reader *r, uint8_t *buf);

/* Returns 0, the callback's first non-zero return, or -1 on a malformed stream (bad length,
 * nonzero reserved bytes, unknown type); after -1 the reader stays failed. */
int clr_frame_reader_feed(struct clr_frame_reader *r, const uint8_t *data, size_t len,
                          clr_frame_cb cb, void *ctx);

/* Writes the 12-byte header for a frame into out. */
void clr_frame_header(uint8_t out[CLR_PROTO_HEADER_SIZE], uint32_t channel, uint8_t type,
                      uint32_t length);

/* A growable byte buffer for building TLV payloads; bounded by CLR_PROTO_MAX_PAYLOAD. */
struct clr_tlv_builder {
    uint8_t buf[CLR_PROTO_MAX_PAYLOAD];
    size_t len;
    bool overflow;
};

void clr_tlv_init(struct clr_tlv_builder *b);
void clr_tlv_put(struct clr_tlv_builder *b, uint16_t tag, const void *value, uint32_t len);
void clr_tlv_put_u64(struct clr_tlv_builder *b, uint16_t tag, uint64_t value);
void clr_tlv_put_str(struct clr_tlv_builder *b, uint16_t tag, const char *s);

/* Walks TLV fields. Returns 1 with tag, value and len set, 0 at the end, -1 if malformed. */
struct clr_tlv_iter {
    const uint8_t *p;
    size_t left;
};
void clr_tlv_iter_init(struct clr_tlv_iter *it, const uint8_t *payload, size_t len);
int clr_tlv_next(struct clr_tlv_iter *it, uint16_t *tag, const uint8_t **value, uint32_t *len);

/* Decodes an 8-byte big-endian value; -1 if len is not 8. */
int clr_tlv_u64(const uint8_t *value, uint32_t len, uint64_t *out);

/* Big-endian helpers. */
uint32_t clr_be32_read(const uint8_t *p);
void clr_be32_write(uint8_t *p, uint32_t v);
uint64_t clr_be64_read(const uint8_t *p);
void clr_be64_write(uint8_t *p, uint64_t v);

#endif
