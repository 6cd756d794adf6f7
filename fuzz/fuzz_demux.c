/* The engine's exec stream demultiplexer: bytes from dockerd, shaped by whatever runs in the
 * sandbox. The input is fed twice, whole and in slices chosen by its first byte; both feeds
 * must deliver the same bytes on the same streams and agree on failure. */
#include <stdlib.h>
#include <string.h>

#include "clearing/engine.h"
#include "fuzz.h"

struct sink {
    size_t len[3];
    uint8_t *buf[3];
};

static int collect(void *ctx, int stream, const uint8_t *data, size_t len)
{
    struct sink *s = ctx;
    if (stream < 1 || stream > 2 || len == 0)
        abort(); /* stream 0 is dropped; nothing else may reach the callback */
    memcpy(s->buf[stream] + s->len[stream], data, len);
    s->len[stream] += len;
    return 0;
}

static int feed(struct sink *s, const uint8_t *data, size_t size, size_t slice)
{
    clr_demux d;
    clr_demux_init(&d);
    for (size_t off = 0; off < size;) {
        size_t n = size - off < slice ? size - off : slice;
        if (clr_demux_feed(&d, data + off, n, collect, s) < 0)
            return -1;
        off += n;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t slice = (size_t)data[0] % 17 + 1;
    data++;
    size--;
    /* Payload bytes never exceed the input, so buffers of its size cannot overflow. */
    struct sink a = {0}, b = {0};
    for (int i = 1; i <= 2; i++) {
        a.buf[i] = malloc(size + 1);
        b.buf[i] = malloc(size + 1);
    }
    int ra = feed(&a, data, size, size ? size : 1);
    int rb = feed(&b, data, size, slice);
    /* A failed stream may have delivered a different prefix only up to the bad header, and the
     * slicing does not move that header: the outputs agree either way. */
    if (ra != rb)
        abort();
    for (int i = 1; i <= 2; i++) {
        if (a.len[i] != b.len[i] || memcmp(a.buf[i], b.buf[i], a.len[i]) != 0)
            abort();
        free(a.buf[i]);
        free(b.buf[i]);
    }
    return 0;
}
