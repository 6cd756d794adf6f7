/* What goes into an audit record (see include/clearing/audit.h): text from outside bounded and
 * escaped, and the standard details of a sandbox, an exec request and its result. Pure: builds
 * JSON, writes nothing. */
#include <stdio.h>
#include <string.h>

#include "audit_internal.h"

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if the byte starts none. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

#define TRUNCATED "...[truncated]"

/* s as UTF-8, each unit escaped if escape (a bad byte or NUL as \xNN, a backslash as \\), cut
 * at max bytes of output on a unit's boundary with TRUNCATED appended. */
static json_t *bounded_text(const char *s, size_t len, size_t max, bool escape)
{
    size_t cap = (max < len * 4 ? max : len * 4) + sizeof(TRUNCATED) + 8;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    bool cut = false;
    while (i < len) {
        const unsigned char *p = (const unsigned char *)s + i;
        size_t n = utf8_seq(p, len - i);
        char unit[8];
        size_t ul;
        if (escape && (n == 0 || p[0] == 0)) {
            ul = (size_t)snprintf(unit, sizeof(unit), "\\x%02x", p[0]);
            n = 1;
        } else if (escape && p[0] == '\\') {
            ul = 2;
            memcpy(unit, "\\\\", 2);
        } else {
            if (n == 0) /* not escaping: the input is valid UTF-8 (from jansson) */
                n = 1;
            ul = n;
            memcpy(unit, p, n);
        }
        if (o + ul > max) {
            cut = true;
            break;
        }
        memcpy(out + o, unit, ul);
        o += ul;
        i += n;
    }
    if (cut) {
        memcpy(out + o, TRUNCATED, sizeof(TRUNCATED) - 1);
        o += sizeof(TRUNCATED) - 1;
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

json_t *clr_audit_text(const char *s, size_t len, size_t max)
{
    return bounded_text(s ? s : "", s ? len : 0, max, true);
}

/* A copy of details with every string cut to CLR_AUDIT_FIELD_MAX bytes (audit_internal.h). */
json_t *audit_bounded_details(json_t *v, int depth)
{
    if (!v)
        return json_object();
    if (depth > 8)
        return json_string("...[truncated]");
    if (json_is_string(v)) {
        if (json_string_length(v) <= CLR_AUDIT_FIELD_MAX)
            return json_incref(v);
        return bounded_text(json_string_value(v), json_string_length(v), CLR_AUDIT_FIELD_MAX,
                            false);
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set_new(o, k, audit_bounded_details(x, depth + 1));
        return o;
    }
    if (json_is_array(v)) {
        json_t *o = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(o, audit_bounded_details(x, depth + 1));
        return o;
    }
    return json_incref(v);
}


json_t *clr_audit_sandbox_details(const clr_sandbox_info *info)
{
    const clr_limits *l = &info->limits;
    return json_pack("{s:s, s:s, s:b, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
                     "image", info->image, "runtime", info->runtime, "insecure", info->insecure,
                     "expires_at", (json_int_t)info->expires_at, "limits", "cpu_millis",
                     (json_int_t)l->cpu_millis, "memory", (json_int_t)l->memory_bytes, "pids",
                     (json_int_t)l->pids, "lifetime", (json_int_t)l->lifetime_s, "tmp",
                     (json_int_t)l->tmp_bytes, "workspace", (json_int_t)l->workspace_bytes,
                     "workspace_inodes", (json_int_t)l->workspace_inodes, "nofile",
                     (json_int_t)l->nofile, "fsize", (json_int_t)l->fsize_bytes);
}

json_t *clr_audit_exec_request(const clr_exec_options *o)
{
    json_t *d = json_object();
    if (o->shell) {
        json_object_set_new(d, "shell", json_string(o->shell));
    } else {
        json_t *a = json_array();
        for (const char *const *p = o->argv; p && *p; p++)
            json_array_append_new(a, json_string(*p));
        json_object_set_new(d, "argv", a);
    }
    json_t *names = json_array();
    for (const char *const *e = o->env; e && *e; e++)
        json_array_append_new(names, json_stringn(*e, strcspn(*e, "=")));
    json_object_set_new(d, "env_names", names);
    json_object_set_new(d, "cwd", json_string(o->cwd ? o->cwd : "/workspace"));
    json_object_set_new(d, "timeout_ms", json_integer(o->limits.timeout_ms));
    json_object_set_new(d, "stdin_bytes", json_integer((json_int_t)o->stdin_len));
    return d;
}

json_t *clr_audit_exec_result(const clr_exec_result *r)
{
    return json_pack("{s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}", "status",
                     clr_exec_status_name(r->status), "exit_code",
                     r->status == CLR_EXEC_EXITED ? json_integer(r->exit_code) : json_null(),
                     "signal",
                     r->status == CLR_EXEC_SIGNALED ? json_integer(r->signal) : json_null(),
                     "wall_us", (json_int_t)r->wall_us, "cpu_user_us", (json_int_t)r->user_us,
                     "cpu_system_us", (json_int_t)r->sys_us, "peak_memory_bytes",
                     (json_int_t)r->peak_memory_bytes, "stdout_bytes",
                     (json_int_t)r->stdout_bytes, "stderr_bytes", (json_int_t)r->stderr_bytes,
                     "timed_out", r->status == CLR_EXEC_TIMED_OUT, "oom",
                     r->status == CLR_EXEC_OOM);
}
