/* The newest bytes of an endless stream (a background process's output), addressed by their
 * offset in the whole stream: circular, so an append costs what it adds however full it is. */
#ifndef CLR_SERVICE_RING_H
#define CLR_SERVICE_RING_H

#include <stddef.h>
#include <stdint.h>

struct svc_ring {
    uint8_t *data; /* cap bytes, allocated at the first append */
    size_t cap;
    size_t head;   /* index of the oldest byte held */
    size_t len;    /* bytes held */
    uint64_t base; /* offset of the oldest byte held in the whole stream */
};

/* An empty ring that holds the newest cap bytes. */
void svc_ring_init(struct svc_ring *r, size_t cap);

/* Appends n bytes; the oldest go to make room. Out of memory: they are counted (offsets go
 * on), not held. */
void svc_ring_append(struct svc_ring *r, const uint8_t *d, size_t n);

/* The offset one past the newest byte: how much the stream has carried in all. */
uint64_t svc_ring_end(const struct svc_ring *r);

/* A copy of the bytes from stream offset from to the end (malloc'd; *len 0 and maybe NULL when
 * there are none, or out of memory). *dropped: how many bytes from `from` on are no longer held
 * (from below base); an offset past the end reads nothing. */
uint8_t *svc_ring_read(const struct svc_ring *r, uint64_t from, size_t *len, uint64_t *dropped);

void svc_ring_free(struct svc_ring *r);

#endif
