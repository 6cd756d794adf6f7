/* The agent protocol as the host reads it: frames written by clearing-agent inside the sandbox
 * (which a hostile command may have replaced), TLV fields, and the RESULT decoder. The input is
 * fed in slices chosen by its first byte. Every well-formed TLV payload must re-encode to the
 * same bytes. */
#include <stdlib.h>
#include <string.h>

#include "clearing/exec.h"
#include "fuzz.h"
#include "proto.h"

static uint8_t payload_buf[CLR_PROTO_MAX_PAYLOAD];
static struct clr_tlv_builder builder;

static void tlv_roundtrip(const uint8_t *payload, size_t len)
{
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t vlen;
    int rc;
    clr_tlv_init(&builder);
    clr_tlv_iter_init(&it, payload, len);
    while ((rc = clr_tlv_next(&it, &tag, &v, &vlen)) == 1) {
        if (vlen > len || v < payload || v + vlen > payload + len)
            abort(); /* a field must lie inside its payload */
        clr_tlv_put(&builder, tag, v, vlen);
    }
    if (rc == 0 && (builder.overflow || builder.len != len || memcmp(builder.buf, payload, len)))
        abort();
}

static int on_frame(void *ctx, const struct clr_frame *f)
{
    (void)ctx;
    if (f->length > CLR_PROTO_MAX_PAYLOAD)
        abort();
    tlv_roundtrip(f->payload, f->length);
    if (f->type == CLR_FRAME_RESULT) {
        clr_exec_result r;
        memset(&r, 0, sizeof(r));
        clr_error err = CLR_ERROR_INIT;
        if (clr_exec_result_decode(&r, f->payload, f->length, &err) == 0 &&
            (r.status < CLR_EXEC_EXITED || r.status > CLR_EXEC_START_FAILED ||
             memchr(r.message, '\0', sizeof(r.message)) == NULL))
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t slice = (size_t)data[0] * 7 % 61 + 1;
    data++;
    size--;
    struct clr_frame_reader rd;
    clr_frame_reader_init(&rd, payload_buf);
    for (size_t off = 0; off < size;) {
        size_t n = size - off < slice ? size - off : slice;
        if (clr_frame_reader_feed(&rd, data + off, n, on_frame, NULL) < 0) {
            /* Failed for good. */
            if (clr_frame_reader_feed(&rd, data, 1, on_frame, NULL) != -1)
                abort();
            break;
        }
        off += n;
    }
    /* The whole input as one payload, as a frame's contents. */
    if (size <= CLR_PROTO_MAX_PAYLOAD) {
        struct clr_frame f = {.channel = 1, .type = CLR_FRAME_RESULT, .payload = data,
                              .length = (uint32_t)size};
        on_frame(NULL, &f);
    }
    return 0;
}
