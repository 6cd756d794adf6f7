/* A command's output streams (stdout, stderr) as the result counts them: every byte the command
 * wrote is counted; only the first cap bytes are sent to the host, the rest are dropped and the
 * stream is reported truncated. Pure accounting: no I/O. */
#ifndef CLR_AGENT_OUTPUT_H
#define CLR_AGENT_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stream {
    int fd; /* read end of the command's pipe, -1 once at EOF */
    uint8_t type; /* CLR_FRAME_STDOUT or CLR_FRAME_STDERR */
    uint64_t cap;   /* bytes that may be sent */
    uint64_t total; /* bytes the command wrote */
    uint64_t sent;  /* bytes sent (at most cap) */
};

/* Counts n bytes just read from the stream; returns how many of their first bytes go to the
 * host (0 once the cap is reached). */
size_t agent_stream_take(struct stream *st, size_t n);

/* True when the command wrote more than was sent. */
bool agent_stream_truncated(const struct stream *st);

#endif
