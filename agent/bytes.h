/* A byte queue: bytes appended at the end, consumed from off. Both halves queue frames in one
 * (for the host, for a supervisor, for a command's stdin). The queue owns data; bytes_free()
 * releases it. */
#ifndef CLR_AGENT_BYTES_H
#define CLR_AGENT_BYTES_H

#include <stddef.h>
#include <stdint.h>

struct bytes {
    uint8_t *data;
    size_t len; /* bytes held */
    size_t off; /* bytes consumed */
};

/* Appends len bytes; a queue that was wholly consumed starts again at 0 first. 0, or -1 when
 * out of memory (the queue is unchanged). */
int bytes_add(struct bytes *b, const void *data, size_t len);

/* Appends one frame (header and payload) for channel; 0 or -1 when out of memory. */
int bytes_add_frame(struct bytes *b, uint32_t channel, uint8_t type, const void *payload,
                    uint32_t len);

/* Bytes appended and not yet consumed. */
size_t bytes_pending(const struct bytes *b);

/* Drops whole frames from the front of a queue of frames that is never consumed (off 0) until
 * at most keep bytes are left or one frame is; returns how many bytes went. */
size_t bytes_trim_frames(struct bytes *b, size_t keep);

/* Releases the data; the queue is empty afterwards. */
void bytes_free(struct bytes *b);

#endif
