/* The exec result as JSON: the record every caller (CLI --json, API) sees. */
#include <openssl/evp.h>
#include <string.h>

#include "internal.h"

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
    char *enc = malloc(cap);
    if (!enc)
        return;
    int n = EVP_EncodeBlock((unsigned char *)enc, b->data, (int)b->len);
    json_object_set_new(o, key, json_stringn(enc, (size_t)n));
    json_object_set_new(o, enc_key, json_string("base64"));
    free(enc);
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
    size_t i;
    for (i = 0; m[i] && i < sizeof(ascii) - 1; i++)
        ascii[i] = (unsigned char)m[i] < 0x80 ? m[i] : '?';
    ascii[i] = '\0';
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
