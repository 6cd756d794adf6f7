/* A byte queue: see bytes.h. */
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "proto.h"

int bytes_add(struct bytes *b, const void *data, size_t len)
{
    if (len == 0) /* nothing to add (an empty STDIN frame): realloc(p, 0) would free the queue */
        return 0;
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

int bytes_add_frame(struct bytes *b, uint32_t channel, uint8_t type, const void *payload,
                    uint32_t len)
{
    uint8_t hdr[CLR_PROTO_HEADER_SIZE];
    clr_frame_header(hdr, channel, type, len);
    if (bytes_add(b, hdr, sizeof(hdr)) < 0)
        return -1;
    return len ? bytes_add(b, payload, len) : 0;
}

size_t bytes_pending(const struct bytes *b)
{
    return b->len - b->off;
}

size_t bytes_trim_frames(struct bytes *b, size_t keep)
{
    size_t drop = 0;
    while (b->len - drop > keep && b->len - drop >= CLR_PROTO_HEADER_SIZE) {
        size_t frame = CLR_PROTO_HEADER_SIZE + clr_be32_read(b->data + drop);
        if (frame >= b->len - drop)
            break; /* the last frame stays */
        drop += frame;
    }
    if (drop) {
        memmove(b->data, b->data + drop, b->len - drop);
        b->len -= drop;
    }
    return drop;
}

void bytes_free(struct bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
