/* The agent wire protocol: see proto.h. Pure functions over bytes; no I/O, no allocation. */
#include "proto.h"

#include <string.h>

uint32_t clr_be32_read(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void clr_be32_write(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint64_t clr_be64_read(const uint8_t *p)
{
    return ((uint64_t)clr_be32_read(p) << 32) | clr_be32_read(p + 4);
}

void clr_be64_write(uint8_t *p, uint64_t v)
{
    clr_be32_write(p, (uint32_t)(v >> 32));
    clr_be32_write(p + 4, (uint32_t)v);
}

void clr_frame_header(uint8_t out[CLR_PROTO_HEADER_SIZE], uint32_t channel, uint8_t type,
                      uint32_t length)
{
    clr_be32_write(out, length);
    clr_be32_write(out + 4, channel);
    out[8] = type;
    out[9] = out[10] = out[11] = 0;
}

void clr_frame_reader_init(struct clr_frame_reader *r, uint8_t *buf)
{
    memset(r, 0, sizeof(*r));
    r->payload = buf;
}

static int frame_type_known(uint8_t type)
{
    return type >= CLR_FRAME_EXEC && type <= CLR_FRAME_NET_CLOSE;
}

int clr_frame_reader_feed(struct clr_frame_reader *r, const uint8_t *data, size_t len,
                          clr_frame_cb cb, void *ctx)
{
    if (r->failed)
        return -1;
    while (len > 0) {
        if (r->header_have < CLR_PROTO_HEADER_SIZE) {
            size_t n = CLR_PROTO_HEADER_SIZE - r->header_have;
            if (n > len)
                n = len;
            memcpy(r->header + r->header_have, data, n);
            r->header_have += n;
            data += n;
            len -= n;
            if (r->header_have < CLR_PROTO_HEADER_SIZE)
                break;
            r->payload_want = clr_be32_read(r->header);
            r->channel = clr_be32_read(r->header + 4);
            r->type = r->header[8];
            r->payload_have = 0;
            if (r->payload_want > CLR_PROTO_MAX_PAYLOAD || !frame_type_known(r->type) ||
                r->header[9] || r->header[10] || r->header[11]) {
                r->failed = true;
                return -1;
            }
        }
        size_t n = r->payload_want - r->payload_have;
        if (n > len)
            n = len;
        memcpy(r->payload + r->payload_have, data, n);
        r->payload_have += (uint32_t)n;
        data += n;
        len -= n;
        if (r->payload_have == r->payload_want) {
            struct clr_frame f = {
                .channel = r->channel,
                .type = r->type,
                .payload = r->payload,
                .length = r->payload_want,
            };
            r->header_have = 0;
            int rc = cb(ctx, &f);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

void clr_tlv_init(struct clr_tlv_builder *b)
{
    b->len = 0;
    b->overflow = false;
}

void clr_tlv_put(struct clr_tlv_builder *b, uint16_t tag, const void *value, uint32_t len)
{
    if (b->overflow || len > sizeof(b->buf) || sizeof(b->buf) - b->len < 6 + (size_t)len) {
        b->overflow = true;
        return;
    }
    b->buf[b->len] = (uint8_t)(tag >> 8);
    b->buf[b->len + 1] = (uint8_t)tag;
    clr_be32_write(b->buf + b->len + 2, len);
    if (len)
        memcpy(b->buf + b->len + 6, value, len);
    b->len += 6 + (size_t)len;
}

void clr_tlv_put_u64(struct clr_tlv_builder *b, uint16_t tag, uint64_t value)
{
    uint8_t v[8];
    clr_be64_write(v, value);
    clr_tlv_put(b, tag, v, sizeof(v));
}

void clr_tlv_put_str(struct clr_tlv_builder *b, uint16_t tag, const char *s)
{
    size_t n = strlen(s);
    if (n > CLR_PROTO_MAX_STRING) {
        b->overflow = true;
        return;
    }
    clr_tlv_put(b, tag, s, (uint32_t)n);
}

void clr_tlv_iter_init(struct clr_tlv_iter *it, const uint8_t *payload, size_t len)
{
    it->p = payload;
    it->left = len;
}

int clr_tlv_next(struct clr_tlv_iter *it, uint16_t *tag, const uint8_t **value, uint32_t *len)
{
    if (it->left == 0)
        return 0;
    if (it->left < 6)
        return -1;
    uint32_t l = clr_be32_read(it->p + 2);
    if (l > it->left - 6)
        return -1;
    *tag = (uint16_t)((it->p[0] << 8) | it->p[1]);
    *value = it->p + 6;
    *len = l;
    it->p += 6 + (size_t)l;
    it->left -= 6 + (size_t)l;
    return 1;
}

int clr_tlv_u64(const uint8_t *value, uint32_t len, uint64_t *out)
{
    if (len != 8)
        return -1;
    *out = clr_be64_read(value);
    return 0;
}
