/* validate: see validate.h. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <string.h>

#include <openssl/evp.h>

#include "clearing/plan.h"
#include "clearing/snapshot.h"

#include "service_int.h"
#include "validate.h"

int svc_check_fields(json_t *obj, const char *what, const char *const *allowed, clr_error *err)
{
    if (!json_is_object(obj))
        return clr_error_set(err, CLR_E_INVALID, 0, "%s must be a JSON object", what);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            return clr_error_set(err, CLR_E_INVALID, 0, "%s: unknown field '%s'", what, key);
    }
    return 0;
}

/* A size given as a string ("512m") or as a whole number of bytes. */
static int json_size(json_t *v, const char *name, uint64_t *out, clr_error *err)
{
    if (json_is_string(v)) {
        if (clr_parse_size(out, json_string_value(v), err) < 0)
            return clr_error_prefix(err, "%s", name);
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    return clr_error_set(err, CLR_E_INVALID, 0,
                         "%s must be a size: a string such as \"512m\" or a number of bytes", name);
}

/* A duration given as a string ("30s", "500ms") or as a whole number of seconds. */
static int json_duration_ms(json_t *v, const char *name, uint64_t *out, clr_error *err)
{
    if (json_is_string(v)) {
        if (clr_parse_duration_ms(out, json_string_value(v), err) < 0)
            return clr_error_prefix(err, "%s", name);
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0 &&
        json_integer_value(v) <= (json_int_t)UINT32_MAX) {
        *out = (uint64_t)json_integer_value(v) * 1000;
        return 0;
    }
    return clr_error_set(err, CLR_E_INVALID, 0,
                         "%s must be a duration: a string such as \"30s\" or a number of seconds",
                         name);
}

static int json_uint(json_t *v, const char *name, uint64_t max, uint64_t *out, clr_error *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "%s must be a whole number between 0 and %" PRIu64, name, max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_limits(json_t *o, clr_limits *l, clr_error *err)
{
    static const char *const fields[] = {"cpus",   "memory",         "pids",
                                         "lifetime", "tmp_size",     "workspace_size",
                                         "workspace_inodes", "nofile", "file_size", NULL};
    if (svc_check_fields(o, "limits", fields, err) < 0)
        return -1;
    json_t *v;
    uint64_t n;
    if ((v = json_object_get(o, "cpus"))) {
        if (json_is_string(v)) {
            if (clr_parse_cpus(&l->cpu_millis, json_string_value(v), err) < 0)
                return clr_error_prefix(err, "limits.cpus");
        } else if (json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) <= 1e6) {
            double m = json_number_value(v) * 1000.0;
            if (fabs(m - round(m)) > 1e-6)
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "limits.cpus: at most three decimals");
            l->cpu_millis = (uint32_t)llround(m);
        } else {
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "limits.cpus must be a number of cores such as 0.5 or \"2\"");
        }
    }
    if ((v = json_object_get(o, "memory")) && json_size(v, "limits.memory", &l->memory_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "tmp_size")) && json_size(v, "limits.tmp_size", &l->tmp_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "workspace_size")) &&
        json_size(v, "limits.workspace_size", &l->workspace_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "file_size")) &&
        json_size(v, "limits.file_size", &l->fsize_bytes, err) < 0)
        return -1;
    if ((v = json_object_get(o, "lifetime"))) {
        if (json_duration_ms(v, "limits.lifetime", &n, err) < 0)
            return -1;
        if (n % 1000 || n / 1000 > UINT32_MAX)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "limits.lifetime must be a whole number of seconds");
        l->lifetime_s = (uint32_t)(n / 1000);
    }
    if ((v = json_object_get(o, "pids"))) {
        if (json_uint(v, "limits.pids", UINT32_MAX, &n, err) < 0)
            return -1;
        l->pids = (uint32_t)n;
    }
    if ((v = json_object_get(o, "nofile"))) {
        if (json_uint(v, "limits.nofile", UINT32_MAX, &n, err) < 0)
            return -1;
        l->nofile = (uint32_t)n;
    }
    if ((v = json_object_get(o, "workspace_inodes")) &&
        json_uint(v, "limits.workspace_inodes", UINT64_MAX / 2, &l->workspace_inodes, err) < 0)
        return -1;
    return clr_limits_validate(l, err);
}

/* {"KEY": "VALUE"} -> NULL-terminated "KEY=VALUE" array (caller frees with free_strv). */
void svc_free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static int env_from_json(json_t *o, char ***out, clr_error *err)
{
    *out = NULL;
    if (!o)
        return 0;
    if (!json_is_object(o))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "env must be an object of strings: {\"NAME\": \"value\"}");
    if (json_object_size(o) > 1024)
        return clr_error_set(err, CLR_E_LIMIT, 0, "env: more than 1024 variables");
    char **v = calloc(json_object_size(o) + 1, sizeof(char *));
    if (!v)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        const char *s = json_string_value(val);
        bool name_ok = *key && !strchr(key, '=') && strlen(key) < 1024;
        if (!s || !name_ok || memchr(s, '\0', json_string_length(val))) {
            svc_free_strv(v);
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "env: '%.100s' must be a name without '=' with a string value",
                                 key);
        }
        if (asprintf(&v[i], "%s=%s", key, s) < 0) {
            v[i] = NULL;
            svc_free_strv(v);
            return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        }
        i++;
    }
    *out = v;
    return 0;
}

static const char *const default_allowed_images[] = {CLR_SERVICE_DEFAULT_ALLOWED_IMAGES, NULL};

static const char *const *allowed_images(const clr_service *svc)
{
    return svc->cfg.allowed_images ? svc->cfg.allowed_images : default_allowed_images;
}

/* The patterns of allowed_images as one string for messages and the log. */
void svc_allowed_images_text(const clr_service *svc, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (const char *const *p = allowed_images(svc); *p && at < len; p++) {
        int n = snprintf(buf + at, len - at, "%s%s", at ? ", " : "", *p);
        if (n < 0)
            break;
        at += (size_t)n;
    }
}

/* Only images the operator allowed: a client's image is code and a filesystem the operator never
 * looked at (setuid helpers, a VOLUME, whatever its entrypoint would do under another runtime). */
int svc_image_allowed(const clr_service *svc, const char *image, clr_error *err)
{
    if (!image)
        image = svc->image ? svc->image : CLR_DEFAULT_IMAGE;
    for (const char *const *p = allowed_images(svc); *p; p++) {
        if (fnmatch(*p, image, 0) == 0)
            return 0;
    }
    char list[512];
    svc_allowed_images_text(svc, list, sizeof(list));
    return clr_error_set(err, CLR_E_DENIED, 0,
                         "image '%.255s' is not allowed: the operator's allowed_images setting "
                         "(%s) lists the images sandboxes may use; use one of those or ask the "
                         "operator to allow it",
                         image, list);
}

/* The checks of a create request that need no daemon state: its fields, image, limits (over the
 * defaults in o->limits), idle timeout (over the default in *idle_ms), metadata, env and the
 * shape of repo. *repo_path is the repository asked for (NULL: none), still to be checked
 * against repo_roots. On success *env is the caller's (free_strv). */
int svc_parse_create(json_t *req, clr_sandbox_options *o, uint64_t *idle_ms,
                     const char **repo_path, char ***env, clr_error *err)
{
    static const char *const fields[] = {"image", "limits", "idle_timeout", "env", "metadata",
                                         "repo", "egress", NULL};
    *repo_path = NULL;
    *env = NULL;
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *v;
    if ((v = json_object_get(req, "image"))) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 255)
            return clr_error_set(err, CLR_E_INVALID, 0, "image must be a non-empty string");
        o->image = json_string_value(v);
    }
    if ((v = json_object_get(req, "limits")) && parse_limits(v, &o->limits, err) < 0)
        return -1;
    if ((v = json_object_get(req, "idle_timeout"))) {
        if (json_duration_ms(v, "idle_timeout", idle_ms, err) < 0)
            return -1;
        if (*idle_ms % 1000 || (*idle_ms != 0 && (*idle_ms < 10000 || *idle_ms > 86400000)))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "idle_timeout must be 0 (none) or whole seconds in 10s..24h");
    }
    json_t *meta = json_object_get(req, "metadata");
    if (meta) {
        if (!json_is_object(meta) || json_object_size(meta) > 64)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "metadata must be an object of at most 64 strings");
        const char *k;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v) || strlen(k) > 128 || json_string_length(v) > 1024)
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "metadata '%.100s' must be a string (keys up to 128 bytes, "
                                     "values up to 1024)",
                                     k);
        }
    }
    json_t *repo = json_object_get(req, "repo");
    if (repo) {
        static const char *const rfields[] = {"path", "base", "branch", "reuse_branch", NULL};
        if (svc_check_fields(repo, "repo", rfields, err) < 0)
            return -1;
        const char *path = json_string_value(json_object_get(repo, "path"));
        json_t *base = json_object_get(repo, "base"), *branch = json_object_get(repo, "branch"),
               *reuse = json_object_get(repo, "reuse_branch");
        if (!path || (base && !json_is_string(base)) || (branch && !json_is_string(branch)) ||
            (reuse && !json_is_boolean(reuse)))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "repo needs path (string); base and branch are strings, "
                                 "reuse_branch a boolean");
        *repo_path = path;
        o->base_ref = json_string_value(base);
        o->branch = json_string_value(branch);
        o->reuse_branch = json_is_true(reuse);
    }
    if (env_from_json(json_object_get(req, "env"), env, err) < 0)
        return -1;
    o->env = (const char *const *)*env;
    return 0;
}

/* Commands of a sandbox whose policy allows anything find the agent's proxy through these. */
int svc_add_proxy_env(char ***env)
{
    size_t n = 0;
    while (*env && (*env)[n])
        n++;
    char **v = realloc(*env, (n + CLR_EGRESS_PROXY_ENV_N + 1) * sizeof(char *));
    if (!v)
        return -1;
    for (size_t i = 0; i < CLR_EGRESS_PROXY_ENV_N; i++)
        v[n + i] = strdup(clr_egress_proxy_env[i]);
    v[n + CLR_EGRESS_PROXY_ENV_N] = NULL;
    *env = v;
    return 0;
}

int svc_valid_id(const char *id, clr_error *err)
{
    if (!clr_sandbox_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%.64s' is not a sandbox id (expected sb- and 16 hex digits)", id);
    return 0;
}

/* {"by": "10m"} -> *ms, a positive whole number of seconds. */
int svc_parse_extend(json_t *req, uint64_t *ms, clr_error *err)
{
    static const char *const fields[] = {"by", NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *by = json_object_get(req, "by");
    if (!by)
        return clr_error_set(err, CLR_E_INVALID, 0, "give \"by\": how much longer, e.g. \"10m\"");
    if (json_duration_ms(by, "by", ms, err) < 0)
        return -1;
    if (*ms % 1000 || *ms == 0)
        return clr_error_set(err, CLR_E_INVALID, 0, "by must be a positive whole number of seconds");
    return 0;
}

int svc_parse_restore(json_t *req, const char **snapshot, clr_error *err)
{
    static const char *const fields[] = {"snapshot", NULL};
    if (!json_is_object(req))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the request body must be a JSON object: {\"snapshot\": ID}");
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    const char *id = json_string_value(json_object_get(req, "snapshot"));
    if (!id)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "give \"snapshot\": the id of one of the sandbox's snapshots "
                             "(GET /v1/sandboxes/ID/snapshots lists them)");
    if (!clr_snapshot_id_valid(id))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "'%.40s' is not a snapshot id (expected snap- and 16 hex digits)",
                             id);
    *snapshot = id;
    return 0;
}

static char **strv_from_json(json_t *a, const char *name, size_t max, clr_error *err)
{
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > max) {
        clr_error_set(err, CLR_E_INVALID, 0, "%s must be a non-empty array of at most %zu strings",
                      name, max);
        return NULL;
    }
    char **v = calloc(json_array_size(a) + 1, sizeof(char *));
    if (!v) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        if (!json_is_string(e) || memchr(json_string_value(e), '\0', json_string_length(e))) {
            svc_free_strv(v);
            clr_error_set(err, CLR_E_INVALID, 0, "%s[%zu] must be a string without NUL bytes",
                          name, i);
            return NULL;
        }
        v[i] = strdup(json_string_value(e));
    }
    return v;
}

void svc_command_clear(struct command *c)
{
    svc_free_strv(c->argv);
    svc_free_strv(c->env);
    svc_free_strv(c->all_env);
    free(c->stdin_buf);
    memset(c, 0, sizeof(*c));
}

static int decode_base64(json_t *v, uint8_t **out, size_t *len, clr_error *err)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!json_is_string(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "stdin_base64 must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint32_t acc = 0;
    int bits = 0;
    size_t m = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            pad++;
            continue;
        }
        const char *p = pad ? NULL : memchr(alphabet, s[i], 64);
        if (!p || !s[i]) {
            free(buf);
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "stdin_base64 is not valid base64 (at offset %zu)", i);
        }
        acc = (acc << 6) | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[m++] = (uint8_t)(acc >> bits);
        }
    }
    if (pad > 2 || (n % 4) != 0) {
        free(buf);
        return clr_error_set(err, CLR_E_INVALID, 0, "stdin_base64 is not valid base64 (length)");
    }
    *out = buf;
    *len = m;
    return 0;
}

int svc_parse_command(struct command *c, json_t *req, clr_error *err)
{
    clr_exec_options init = CLR_EXEC_OPTIONS_INIT;
    memset(c, 0, sizeof(*c));
    c->o = init;
    clr_exec_options *o = &c->o;
    json_t *v;
    json_t *jargv = json_object_get(req, "argv"), *jshell = json_object_get(req, "shell");
    if (!!jargv == !!jshell)
        return clr_error_set(err, CLR_E_INVALID, 0, "give exactly one of argv or shell");
    if (jargv && !(c->argv = strv_from_json(jargv, "argv", 4096, err)))
        return -1;
    if (jshell) {
        if (!json_is_string(jshell) || json_string_length(jshell) == 0)
            return clr_error_set(err, CLR_E_INVALID, 0, "shell must be a non-empty string");
        o->shell = json_string_value(jshell);
    }
    o->argv = (const char *const *)c->argv;
    if (env_from_json(json_object_get(req, "env"), &c->env, err) < 0)
        return -1;
    o->env = (const char *const *)c->env;
    if ((v = json_object_get(req, "cwd"))) {
        if (!json_is_string(v) || json_string_value(v)[0] != '/')
            return clr_error_set(err, CLR_E_INVALID, 0, "cwd must be an absolute path");
        o->cwd = json_string_value(v);
    }
    if ((v = json_object_get(req, "stdin"))) {
        if (!json_is_string(v) || json_object_get(req, "stdin_base64"))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "stdin must be a string (or give stdin_base64, not both)");
        o->stdin_data = json_string_value(v);
        o->stdin_len = json_string_length(v);
    } else if ((v = json_object_get(req, "stdin_base64"))) {
        if (decode_base64(v, &c->stdin_buf, &o->stdin_len, err) < 0)
            return -1;
        o->stdin_data = c->stdin_buf;
    }
    uint64_t n;
    if ((v = json_object_get(req, "timeout"))) {
        if (json_duration_ms(v, "timeout", &n, err) < 0)
            return -1;
        if (n == 0 || n > UINT32_MAX)
            return clr_error_set(err, CLR_E_INVALID, 0, "timeout must be between 1ms and 24h");
        o->limits.timeout_ms = (uint32_t)n;
    }
    if ((v = json_object_get(req, "stdout_cap")) &&
        json_size(v, "stdout_cap", &o->limits.stdout_cap, err) < 0)
        return -1;
    if ((v = json_object_get(req, "stderr_cap")) &&
        json_size(v, "stderr_cap", &o->limits.stderr_cap, err) < 0)
        return -1;
    return clr_exec_limits_validate(&o->limits, err);
}

/* The request as it is recorded: environment values may be secrets, stdin is left out. */
json_t *svc_redacted(json_t *req)
{
    json_t *logged = json_deep_copy(req);
    json_t *jenv = json_object_get(logged, "env");
    if (json_is_object(jenv)) {
        const char *k;
        json_t *ev;
        json_object_foreach(jenv, k, ev) json_object_set_new(jenv, k, json_string("(redacted)"));
    }
    json_object_del(logged, "stdin");
    json_object_del(logged, "stdin_base64");
    return logged;
}

const char *const svc_exec_fields[] = {"argv",  "shell",        "env",     "cwd",
                                           "stdin", "stdin_base64", "timeout", "stdout_cap",
                                           "stderr_cap", NULL};
/* A background process has no timeout and no output caps: its output is kept in a ring. */
const char *const svc_process_fields[] = {"argv",  "shell",        "env", "cwd",
                                             "stdin", "stdin_base64", NULL};

/* {"data": "..."} or {"data_base64": "..."}, and "eof": a boolean. *buf (the decoded
 * data_base64, NULL if none) is the caller's to free. */
int svc_parse_stdin(json_t *req, uint8_t **buf, size_t *len, clr_error *err)
{
    static const char *const fields[] = {"data", "data_base64", "eof", NULL};
    *buf = NULL;
    *len = 0;
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *d = json_object_get(req, "data"), *b = json_object_get(req, "data_base64"),
           *eof = json_object_get(req, "eof");
    if ((d && !json_is_string(d)) || (d && b) || (eof && !json_is_boolean(eof)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "give data (a string) or data_base64, and eof (a boolean)");
    return b ? decode_base64(b, buf, len, err) : 0;
}

static int signal_number(json_t *v)
{
    static const struct {
        const char *name;
        int num;
    } names[] = {{"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"KILL", 9}, {"USR1", 10}, {"USR2", 12},
                 {"TERM", 15}, {"CONT", 18}, {"STOP", 19}};
    if (json_is_integer(v))
        return json_integer_value(v) > 0 && json_integer_value(v) < 65
                   ? (int)json_integer_value(v)
                   : -1;
    const char *s = json_string_value(v);
    if (!s)
        return -1;
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0)
            return names[i].num;
    }
    return -1;
}

int svc_parse_signal(json_t *req, int *sig, clr_error *err)
{
    static const char *const fields[] = {"signal", NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    *sig = signal_number(json_object_get(req, "signal"));
    if (*sig < 0)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "signal must be a number 1..64 or a name such as \"TERM\"");
    return 0;
}

/* message, author_name, author_email: strings; trailers: at most 16 "Key: value" strings, put
 * into trailers (NULL-terminated, borrowed from req). */
int svc_parse_commit(json_t *req, const char *trailers[17], clr_error *err)
{
    static const char *const fields[] = {"message", "author_name", "author_email", "trailers",
                                         NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *m = json_object_get(req, "message"), *an = json_object_get(req, "author_name"),
           *ae = json_object_get(req, "author_email"), *tr = json_object_get(req, "trailers");
    if ((m && !json_is_string(m)) || (an && !json_is_string(an)) || (ae && !json_is_string(ae)) ||
        (tr && (!json_is_array(tr) || json_array_size(tr) > 16)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "message, author_name, author_email are strings; trailers a list of "
                             "at most 16 \"Key: value\" strings");
    size_t i;
    json_t *t;
    json_array_foreach(tr, i, t) {
        const char *v = json_string_value(t);
        if (!v || !strchr(v, ':') || strchr(v, '\n'))
            return clr_error_set(err, CLR_E_INVALID, 0, "trailers[%zu] must be \"Key: value\"", i);
        if (clr_commit_claims_clearing(v))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "trailers[%zu]: Clearing-* trailers are written by clearing "
                                 "alone (the verdict, its signature); use another key",
                                 i);
        trailers[i] = v;
    }
    return 0;
}

/* The plan request's fields and the plan itself (*plan: clr_plan_free); repo still to be checked
 * against repo_roots. */
int svc_parse_plan_request(json_t *req, clr_plan **plan, clr_error *err)
{
    *plan = NULL;
    static const char *const fields[] = {"plan", "repo", "profile", "gauntlet_only", "base",
                                         NULL};
    if (svc_check_fields(req, "request", fields, err) < 0)
        return -1;
    json_t *jplan = json_object_get(req, "plan"), *jrepo = json_object_get(req, "repo"),
           *jprofile = json_object_get(req, "profile"), *jbase = json_object_get(req, "base");
    bool gauntlet_only = json_is_true(json_object_get(req, "gauntlet_only"));
    if (!json_is_string(jrepo) || (jprofile && !json_is_string(jprofile)) ||
        (jbase && !json_is_string(jbase)))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "repo (a path under repo_roots) is required; profile and base are "
                             "strings");
    char *text = NULL;
    if (gauntlet_only) {
        /* A gauntlet on a repository is a plan without steps that commits nothing. */
        json_t *p = json_pack("{s:[], s:b}", "steps", "commit_on_failure", 0);
        if (jbase)
            json_object_set(p, "base", jbase);
        text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
    } else if (json_is_object(jplan)) {
        text = json_dumps(jplan, JSON_COMPACT);
    } else if (json_is_string(jplan)) {
        text = strdup(json_string_value(jplan));
    } else {
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "plan must be an object or a YAML/JSON string (or gauntlet_only)");
    }
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    int rc = clr_plan_parse(plan, text, strlen(text), "plan", err);
    free(text);
    return rc;
}

/* The same parsers the handlers run, minus what needs the daemon (repo_roots, the database). */
int clr_service_check_request(const char *kind, json_t *req, clr_error *err)
{
    if (!json_is_object(req))
        return clr_error_set(err, CLR_E_INVALID, 0, "the request body must be a JSON object");
    if (strcmp(kind, "exec") == 0 || strcmp(kind, "process") == 0) {
        bool exec = kind[0] == 'e';
        if (svc_check_fields(req, "request", exec ? svc_exec_fields : svc_process_fields, err) < 0)
            return -1;
        _cleanup_command_ struct command cmd = {.argv = NULL};
        return svc_parse_command(&cmd, req, err);
    }
    if (strcmp(kind, "create") == 0) {
        clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
        uint64_t idle_ms = 0;
        const char *repo_path = NULL;
        char **env = NULL;
        int rc = svc_parse_create(req, &o, &idle_ms, &repo_path, &env, err);
        svc_free_strv(env);
        return rc;
    }
    if (strcmp(kind, "extend") == 0) {
        uint64_t ms = 0;
        return svc_parse_extend(req, &ms, err);
    }
    if (strcmp(kind, "restore") == 0) {
        const char *snapshot = NULL;
        return svc_parse_restore(req, &snapshot, err);
    }
    if (strcmp(kind, "stdin") == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = svc_parse_stdin(req, &buf, &len, err);
        free(buf);
        return rc;
    }
    if (strcmp(kind, "signal") == 0) {
        int sig = 0;
        return svc_parse_signal(req, &sig, err);
    }
    if (strcmp(kind, "commit") == 0) {
        const char *trailers[17] = {NULL};
        return svc_parse_commit(req, trailers, err);
    }
    if (strcmp(kind, "plan") == 0) {
        clr_plan *plan = NULL;
        int rc = svc_parse_plan_request(req, &plan, err);
        clr_plan_free(plan);
        return rc;
    }
    return clr_error_set(err, CLR_E_INVALID, 0, "unknown request kind '%.32s'", kind);
}
