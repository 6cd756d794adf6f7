/* The exec result: decoding the agent's RESULT frame, the output buffers, and the JSON record
 * every caller (CLI --json, API) sees. Below both exec.c (one command) and channel.c (results
 * replayed to nobody waiting): neither needs the other to read a result. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <string.h>

#include "internal.h"
#include "proto.h"

const char *clr_exec_status_name(clr_exec_status status)
{
    switch (status) {
    case CLR_EXEC_EXITED: return "exited";
    case CLR_EXEC_SIGNALED: return "signaled";
    case CLR_EXEC_TIMED_OUT: return "timed_out";
    case CLR_EXEC_OOM: return "oom";
    case CLR_EXEC_START_FAILED: return "start_failed";
    case CLR_EXEC_SANDBOX_FAILED: return "sandbox_failed";
    default: return "unknown";
    }
}

void clr_exec_result_clear(clr_exec_result *r)
{
    free(r->out.data);
    free(r->err.data);
    memset(r, 0, sizeof(*r));
}

int clr_exec_result_decode(clr_exec_result *r, const uint8_t *payload, size_t len,
                           clr_error *err)
{
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t vlen;
    int rc;
    bool have_status = false;
    clr_tlv_iter_init(&it, payload, len);
    while ((rc = clr_tlv_next(&it, &tag, &v, &vlen)) == 1) {
        uint64_t n = 0;
        if (tag == CLR_RES_MESSAGE) {
            size_t m = vlen < sizeof(r->message) - 1 ? vlen : sizeof(r->message) - 1;
            memcpy(r->message, v, m);
            r->message[m] = '\0';
            continue;
        }
        /* Newer agents may add fields of any shape, not only integers: skip unknown tags before
         * insisting on an 8-byte value. */
        if (tag < CLR_RES_STATUS || tag > CLR_RES_KILLED_PROCS)
            continue;
        if (clr_tlv_u64(v, vlen, &n) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, EPROTO,
                                 "agent result field %u has length %u, expected 8", tag, vlen);
        switch (tag) {
        case CLR_RES_STATUS:
            if (n < CLR_WIRE_EXITED || n > CLR_WIRE_START_FAILED)
                return clr_error_set(err, CLR_E_INTERNAL, EPROTO,
                                     "agent result has unknown status %" PRIu64, n);
            r->status = (clr_exec_status)n;
            have_status = true;
            break;
        case CLR_RES_EXIT_CODE: r->exit_code = (int)(n & 0xff); break;
        case CLR_RES_SIGNAL: r->signal = (int)(n & 0x7f); break;
        case CLR_RES_WALL_US: r->wall_us = n; break;
        case CLR_RES_USER_US: r->user_us = n; break;
        case CLR_RES_SYS_US: r->sys_us = n; break;
        case CLR_RES_PEAK_RSS: r->peak_memory_bytes = n; break;
        case CLR_RES_STDOUT_BYTES: r->stdout_bytes = n; break;
        case CLR_RES_STDERR_BYTES: r->stderr_bytes = n; break;
        case CLR_RES_STDOUT_TRUNC: r->stdout_truncated = n != 0; break;
        case CLR_RES_STDERR_TRUNC: r->stderr_truncated = n != 0; break;
        case CLR_RES_KILLED_PROCS: r->killed_processes = n; break;
        default: break; /* newer agents may add fields */
        }
    }
    if (rc < 0)
        return clr_error_set(err, CLR_E_INTERNAL, EPROTO, "agent result is malformed");
    if (!have_status)
        return clr_error_set(err, CLR_E_INTERNAL, EPROTO, "agent result has no status");
    return 0;
}

ssize_t clr_buffer_append_capped(clr_buffer *b, const uint8_t *data, size_t len, uint64_t cap)
{
    if (b->len + len > cap)
        len = cap > b->len ? (size_t)(cap - b->len) : 0;
    if (!len)
        return 0;
    uint8_t *n = realloc(b->data, b->len + len + 1);
    if (!n)
        return -1;
    memcpy(n + b->len, data, len);
    b->len += len;
    n[b->len] = '\0';
    b->data = n;
    return (ssize_t)len;
}


static void set_output(json_t *o, const char *key, const clr_buffer *b)
{
    char enc_key[32];
    snprintf(enc_key, sizeof(enc_key), "%s_encoding", key);
    /* json_stringn accepts exactly the valid UTF-8 sequences (NUL bytes included). */
    json_t *s = json_stringn(b->len ? (const char *)b->data : "", b->len);
    if (s) {
        json_object_set_new(o, key, s);
        json_object_set_new(o, enc_key, json_string("utf-8"));
        return;
    }
    size_t cap = 4 * ((b->len + 2) / 3) + 1;
    _cleanup_free_ char *enc = malloc(cap);
    if (!enc)
        return;
    int n = EVP_EncodeBlock((unsigned char *)enc, b->data, (int)b->len);
    json_object_set_new(o, key, json_stringn(enc, (size_t)n));
    json_object_set_new(o, enc_key, json_string("base64"));
}

/* The agent's message quotes the command ("cannot start '%s'") and is cut at a fixed size, so it
 * may not be UTF-8; json_string() would then fail and the record would lose its message. */
static json_t *message_json(const char *m)
{
    if (!m[0])
        return json_null();
    json_t *s = json_string(m);
    if (s)
        return s;
    char ascii[sizeof(((clr_exec_result *)0)->message)];
    clr_text_ascii(ascii, sizeof(ascii), m);
    return json_string(ascii);
}

json_t *clr_exec_result_to_json(const clr_exec_result *r)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "status", json_string(clr_exec_status_name(r->status)));
    json_object_set_new(o, "exit_code",
                        r->status == CLR_EXEC_EXITED ? json_integer(r->exit_code) : json_null());
    json_object_set_new(o, "signal",
                        r->status == CLR_EXEC_SIGNALED ? json_integer(r->signal) : json_null());
    set_output(o, "stdout", &r->out);
    set_output(o, "stderr", &r->err);
    json_object_set_new(o, "stdout_bytes", json_integer((json_int_t)r->stdout_bytes));
    json_object_set_new(o, "stderr_bytes", json_integer((json_int_t)r->stderr_bytes));
    json_object_set_new(o, "stdout_truncated", json_boolean(r->stdout_truncated));
    json_object_set_new(o, "stderr_truncated", json_boolean(r->stderr_truncated));
    json_object_set_new(o, "wall_us", json_integer((json_int_t)r->wall_us));
    json_object_set_new(o, "cpu_user_us", json_integer((json_int_t)r->user_us));
    json_object_set_new(o, "cpu_system_us", json_integer((json_int_t)r->sys_us));
    json_object_set_new(o, "peak_memory_bytes", json_integer((json_int_t)r->peak_memory_bytes));
    json_object_set_new(o, "killed_processes", json_integer((json_int_t)r->killed_processes));
    json_object_set_new(o, "sandbox_killed", json_boolean(r->sandbox_killed));
    json_object_set_new(o, "message", message_json(r->message));
    return o;
}
