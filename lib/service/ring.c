/* ring: see ring.h. */
#include <stdlib.h>
#include <string.h>

#include "ring.h"

void svc_ring_init(struct svc_ring *r, size_t cap)
{
    memset(r, 0, sizeof(*r));
    r->cap = cap;
}

void svc_ring_append(struct svc_ring *r, const uint8_t *d, size_t n)
{
    if (n == 0 || r->cap == 0)
        return;
    if (!r->data)
        r->data = malloc(r->cap);
    if (!r->data) {
        r->base += r->len + n; /* nothing held: the stream's offsets still count it */
        r->len = 0;
        return;
    }
    if (n > r->cap) { /* only its end can stay */
        r->base += r->len + (n - r->cap);
        d += n - r->cap;
        n = r->cap;
        r->head = r->len = 0;
    }
    if (r->len + n > r->cap) { /* the oldest make room */
        size_t drop = r->len + n - r->cap;
        r->head = (r->head + drop) % r->cap;
        r->len -= drop;
        r->base += drop;
    }
    size_t at = (r->head + r->len) % r->cap;
    size_t first = n < r->cap - at ? n : r->cap - at;
    memcpy(r->data + at, d, first);
    memcpy(r->data, d + first, n - first);
    r->len += n;
}

uint64_t svc_ring_end(const struct svc_ring *r)
{
    return r->base + r->len;
}

uint8_t *svc_ring_read(const struct svc_ring *r, uint64_t from, size_t *len, uint64_t *dropped)
{
    uint64_t end = svc_ring_end(r);
    *dropped = from < r->base ? r->base - from : 0;
    *len = 0;
    if (from < r->base)
        from = r->base;
    if (from >= end)
        return NULL;
    size_t skip = (size_t)(from - r->base), n = r->len - skip;
    uint8_t *out = malloc(n);
    if (!out)
        return NULL;
    size_t at = (r->head + skip) % r->cap;
    size_t first = n < r->cap - at ? n : r->cap - at;
    memcpy(out, r->data + at, first);
    memcpy(out + first, r->data, n - first);
    *len = n;
    return out;
}

void svc_ring_free(struct svc_ring *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}
