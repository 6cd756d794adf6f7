/* The live channel's reader: bytes of the attach stream, that is frames written by the sandbox's
 * PID 1 (and shaped by whatever runs there) inside Docker's stream headers. The first byte picks
 * the slicing, the next four the id of a command waiting on the channel; the rest is the stream.
 * Checked: only output and result frames reach a command's queue, every egress request that
 * parses names a host without NUL bytes and a port in 1..65535, a replayed result decodes to a
 * known status, and nothing leaks when the channel ends. */
#include <stdlib.h>
#include <string.h>

#include "clearing/clearing.h"
#include "fuzz.h"
#include "internal.h"
#include "proto.h"

static int on_result(void *ctx, clr_channel *ch, uint32_t id, const clr_exec_result *r)
{
    (void)ctx;
    (void)ch;
    (void)id;
    if (r->status < CLR_EXEC_EXITED || r->status > CLR_EXEC_START_FAILED)
        abort();
    return 0;
}

static void on_channels(void *ctx, clr_channel *ch, const uint32_t *ids, size_t n)
{
    (void)ctx;
    (void)ch;
    for (size_t i = 0; i < n; i++)
        (void)ids[i];
}

static void on_net(void *ctx, clr_channel *ch, uint8_t type, uint32_t id, const uint8_t *payload,
                   uint32_t len)
{
    (void)ctx;
    (void)ch;
    (void)id;
    if (type < CLR_FRAME_NET_OPEN || type > CLR_FRAME_NET_CLOSE)
        abort();
    if (type != CLR_FRAME_NET_OPEN)
        return;
    bool tunnel = false;
    char host[300];
    unsigned port = 0;
    if (clr_egress_parse_open(payload, len, &tunnel, host, sizeof(host), &port) == 0) {
        size_t hl = strlen(host);
        if (hl == 0 || hl >= sizeof(host) || port == 0 || port > 65535)
            abort();
        if (memcmp(payload + 2, host, hl) != 0 || tunnel != (payload[0] == 'C'))
            abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clr_log_set_level(CLR_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    size_t slice = (size_t)data[0] % 64 + 1;
    uint32_t want = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 |
                    data[4];
    data += 5;
    size -= 5;
    clr_channel_hooks hooks = {.on_result = on_result, .on_channels = on_channels,
                               .on_net = on_net};
    clr_channel *ch = clr_channel_new_detached(&hooks);
    if (!ch)
        return 0;
    struct clr_channel_slot *slot = want ? clr_channel_slot_new(ch, want, NULL) : NULL;
    for (size_t off = 0; off < size; off += slice) {
        size_t n = size - off < slice ? size - off : slice;
        if (clr_channel_feed(ch, data + off, n) < 0)
            break;
    }
    if (slot) {
        uint8_t type, *payload;
        uint32_t len;
        bool proto;
        while (clr_channel_slot_take(ch, slot, 0, &type, &payload, &len, &proto) == 1) {
            if (type != CLR_FRAME_STDOUT && type != CLR_FRAME_STDERR && type != CLR_FRAME_RESULT)
                abort();
            clr_channel_frame_free(payload);
        }
        clr_channel_slot_free(ch, slot);
    }
    clr_channel_unref(ch);
    return 0;
}
