/* clearing serve: the daemon. Configuration comes from a JSON file (every key optional, defaults
 * in docs/OPERATIONS.md), then command-line overrides. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "clearing/audit.h"
#include "clearing/cleanup_json.h"
#include "cli.h"
#include "clr-config.h"
#include "clearing/sandbox.h"
#include "clearing/service.h"
#include "routes.h"
#include "server.h"

#define DEFAULT_SOCKET "/run/clearing/clearing.sock"

enum {
    OPT_CONFIG = CLI_OPT_FIRST_FREE,
    OPT_SOCKET,
    OPT_TCP,
    OPT_TOKEN_FILE,
    OPT_MAX_SANDBOXES,
    OPT_MAX_EXECS,
    OPT_INSECURE_RUNTIME,
    OPT_REPO_ROOT,
    OPT_POOL,
    OPT_HELP,
    OPT_PRINT_ROUTES,
    OPT_CHECK_CONFIG,
};

#define MAX_TENANTS 64
/* The strings a config file may hold: 32 repo_roots, 32 allowed_images, 64 tenants and the
 * string settings, with room for a second --config. keep() beyond it is an error, never a
 * setting silently left at its default (a NULL socket, an audit log elsewhere). */
#define MAX_STRINGS 320

struct serve_config {
    clr_service_config svc;
    struct server_options srv;
    char *strings[MAX_STRINGS];
    int nstrings;
    const char *roots[33];
    int nroots;
    const char *images[33];
    int nimages;
    clr_tenant_quota tenants[MAX_TENANTS];
    bool check_config; /* --check-config: print the layout it would use, start nothing */
};

/* Frees what keep() copied, on every return of cmd_serve (a bad configuration too). */
static void serve_config_clear(struct serve_config *c)
{
    for (int i = 0; i < c->nstrings; i++)
        free(c->strings[i]);
    c->nstrings = 0;
}

static const char *keep(struct serve_config *c, const char *s)
{
    if (c->nstrings >= MAX_STRINGS)
        return NULL;
    return c->strings[c->nstrings++] = strdup(s);
}

/* A whole number min..max: a setting for which 0 means nothing (no connection, no sandbox)
 * has min 1, so that it stops the daemon here rather than make one that cannot work. */
static int config_uint_range(json_t *v, const char *key, uint64_t min, uint64_t max,
                             uint64_t *out, clr_error *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
        return clr_error_set(err, CLR_E_INVALID, 0, "config: %s must be a whole number %llu..%llu",
                             key, (unsigned long long)min, (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int config_uint(json_t *v, const char *key, uint64_t max, uint64_t *out, clr_error *err)
{
    return config_uint_range(v, key, 0, max, out, err);
}

static int config_string(struct serve_config *c, json_t *v, const char *key, const char **out,
                         clr_error *err)
{
    if (!json_is_string(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "config: %s must be a string", key);
    *out = keep(c, json_string_value(v));
    if (!*out)
        return clr_error_set(err, CLR_E_INVALID, 0, "config: %s: too many strings", key);
    return 0;
}

/* A string whose default is "not set" (socket_owner, token_file, ...): null says so, which lets
 * a configuration file write every key out with its default (debian/clearing.config.json). */
static int config_string_or_null(struct serve_config *c, json_t *v, const char *key,
                                 const char **out, clr_error *err)
{
    if (json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "config: %s must be a string or null", key);
    return config_string(c, v, key, out, err);
}

/* A number or a string such as "4g" / "1.5", as in "limits". */
static int quota_text(json_t *v, char *buf, size_t len)
{
    if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v) && json_integer_value(v) >= 0)
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v) && json_real_value(v) >= 0)
        snprintf(buf, len, "%g", json_real_value(v));
    else
        return -1;
    return 0;
}

/* "tenants": {"acme": {"max_sandboxes": 4, "max_memory": "4g", "max_cpus": 2, "max_execs": 8,
 * "max_mcp_sessions": 4, "max_code_sessions": 8}, ...} */
static int config_tenants(struct serve_config *c, json_t *v, clr_error *err)
{
    if (!json_is_object(v) || json_object_size(v) > MAX_TENANTS)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "config: tenants must be an object of at most %d tenants, e.g. "
                             "{\"acme\": {\"max_sandboxes\": 4}}",
                             MAX_TENANTS);
    const char *name;
    json_t *q;
    size_t n = 0;
    json_object_foreach(v, name, q) {
        if (!clr_tenant_name_valid(name))
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "config: tenants: '%.80s' is not a tenant name (1-63 of a-z, "
                                 "0-9, '_' and '-')",
                                 name);
        if (!json_is_object(q))
            return clr_error_set(err, CLR_E_INVALID, 0, "config: tenants.%s must be an object",
                                 name);
        clr_tenant_quota *t = &c->tenants[n];
        memset(t, 0, sizeof(*t));
        t->name = keep(c, name);
        if (!t->name)
            return clr_error_set(err, CLR_E_INVALID, 0, "config: too many strings");
        const char *key;
        json_t *qv;
        json_object_foreach(q, key, qv) {
            char buf[64];
            uint64_t u = 0;
            if (strcmp(key, "max_sandboxes") == 0) {
                if (!json_is_integer(qv) || json_integer_value(qv) < 1 ||
                    json_integer_value(qv) > 100000)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_sandboxes must be a whole "
                                         "number 1..100000",
                                         name);
                t->max_sandboxes = (unsigned)json_integer_value(qv);
            } else if (strcmp(key, "max_memory") == 0) {
                if (quota_text(qv, buf, sizeof(buf)) < 0 || clr_parse_size(&u, buf, err) < 0 ||
                    u == 0)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_memory must be a size such as "
                                         "\"4g\"",
                                         name);
                t->max_memory_bytes = u;
            } else if (strcmp(key, "max_cpus") == 0) {
                uint32_t m = 0;
                if (quota_text(qv, buf, sizeof(buf)) < 0 || clr_parse_cpus(&m, buf, err) < 0 ||
                    m == 0)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_cpus must be a number of CPUs "
                                         "such as 2 or \"1.5\"",
                                         name);
                t->max_cpu_millis = m;
            } else if (strcmp(key, "max_execs") == 0) {
                if (!json_is_integer(qv) || json_integer_value(qv) < 1 ||
                    json_integer_value(qv) > 100000)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_execs must be a whole number "
                                         "1..100000",
                                         name);
                t->max_execs = (unsigned)json_integer_value(qv);
            } else if (strcmp(key, "max_mcp_sessions") == 0) {
                if (!json_is_integer(qv) || json_integer_value(qv) < 1 ||
                    json_integer_value(qv) > SERVER_MCP_MAX_SESSIONS)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_mcp_sessions must be a whole "
                                         "number 1..%d",
                                         name, SERVER_MCP_MAX_SESSIONS);
                t->max_mcp_sessions = (unsigned)json_integer_value(qv);
            } else if (strcmp(key, "max_code_sessions") == 0) {
                if (!json_is_integer(qv) || json_integer_value(qv) < 1 ||
                    json_integer_value(qv) > CLR_SERVICE_CODE_SESSIONS_MAX)
                    return clr_error_set(err, CLR_E_INVALID, 0,
                                         "config: tenants.%s.max_code_sessions must be a whole "
                                         "number 1..%d (code sessions running at once in its "
                                         "sandboxes; default %d)",
                                         name, CLR_SERVICE_CODE_SESSIONS_MAX,
                                         CLR_SERVICE_TENANT_CODE_SESSIONS);
                t->max_code_sessions = (unsigned)json_integer_value(qv);
            } else {
                return clr_error_set(err, CLR_E_INVALID, 0,
                                     "config: tenants.%s: unknown key '%.64s' (max_sandboxes, "
                                     "max_memory, max_cpus, max_execs, max_mcp_sessions, "
                                     "max_code_sessions)",
                                     name, key);
            }
        }
        n++;
    }
    c->svc.tenants = c->tenants;
    c->svc.ntenants = n;
    c->srv.tenants = c->tenants;
    c->srv.ntenants = n;
    return 0;
}

#define NOT_MINE 1 /* a config group's answer for a key that is not one of its */

/* The listener's keys: 0, -1 with err, or NOT_MINE. */
static int config_server_key(struct serve_config *c, const char *key, json_t *v, clr_error *err)
{
    uint64_t n = 0;
    int rc;
    if (strcmp(key, "socket") == 0)
        return config_string(c, v, key, &c->srv.socket_path, err);
    if (strcmp(key, "socket_owner") == 0)
        return config_string_or_null(c, v, key, &c->srv.socket_owner, err);
    if (strcmp(key, "socket_group") == 0)
        return config_string_or_null(c, v, key, &c->srv.socket_group, err);
    if (strcmp(key, "socket_mode") == 0) {
        const char *m = NULL;
        rc = config_string(c, v, key, &m, err);
        char *end = NULL;
        unsigned long mode = m ? strtoul(m, &end, 8) : 0;
        if (rc == 0 && (!m || *end || mode > 0777))
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: socket_mode must be an octal string such as \"0660\"");
        c->srv.socket_mode = (mode_t)mode;
        return rc;
    }
    if (strcmp(key, "tcp_address") == 0)
        return config_string_or_null(c, v, key, &c->srv.tcp_address, err);
    if (strcmp(key, "tcp_port") == 0) {
        rc = config_uint(v, key, 65535, &n, err);
        c->srv.tcp_port = (uint16_t)n;
        return rc;
    }
    if (strcmp(key, "token_file") == 0)
        return config_string_or_null(c, v, key, &c->srv.token_file, err);
    if (strcmp(key, "max_connections") == 0) {
        rc = config_uint_range(v, key, 1, 100000, &n, err);
        c->srv.max_connections = (unsigned)n;
        return rc;
    }
    if (strcmp(key, "max_upload_total") == 0) {
        rc = config_uint(v, key, UINT64_MAX / 2, &c->srv.max_upload_total, err);
        if (rc == 0 && c->srv.max_upload_total < (1u << 20))
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: max_upload_total must be at least 1048576 (1 MiB): "
                               "with less, no upload could ever be stored");
        return rc;
    }
    if (strcmp(key, "mcp_idle_timeout") == 0) {
        rc = config_uint_range(v, key, 1, 86400, &n, err);
        c->srv.mcp_idle_timeout_s = (unsigned)n;
        return rc;
    }
    if (strcmp(key, "max_download_total") == 0) {
        rc = config_uint(v, key, UINT64_MAX / 2, &c->srv.max_download_total, err);
        if (rc == 0 && c->srv.max_download_total < (1u << 20))
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: max_download_total must be at least 1048576 (1 MiB): "
                               "with less, no download could ever be sent");
        return rc;
    }
    return NOT_MINE;
}

/* The audit log's keys: 0, -1 with err, or NOT_MINE. */
static int config_audit_key(struct serve_config *c, const char *key, json_t *v, clr_error *err)
{
    uint64_t n = 0;
    int rc;
    if (strcmp(key, "audit_log") == 0)
        return config_string_or_null(c, v, key, &c->svc.audit_path, err);
    if (strcmp(key, "audit_rotate_bytes") == 0)
        return config_uint(v, key, UINT64_MAX / 2, &c->svc.audit_rotate_bytes, err);
    if (strcmp(key, "audit_keep") == 0) {
        rc = config_uint(v, key, 1000000, &n, err);
        c->svc.audit_keep = (unsigned)n;
        return rc;
    }
    if (strcmp(key, "audit_disk_budget") == 0)
        return config_uint(v, key, UINT64_MAX / 2, &c->svc.audit_disk_budget, err);
    if (strcmp(key, "audit_aggregate_ms") == 0) {
        rc = config_uint(v, key, 3600000, &n, err);
        if (rc == 0 && n < 100)
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: audit_aggregate_ms must be 100..3600000");
        c->svc.audit_aggregate_ms = (uint32_t)n;
        return rc;
    }
    if (strcmp(key, "audit_checkpoint_ms") == 0) {
        rc = config_uint(v, key, 3600000, &n, err);
        if (rc == 0 && n < 100)
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: audit_checkpoint_ms must be 100..3600000");
        c->svc.audit_checkpoint_ms = (uint32_t)n;
        return rc;
    }
    if (strcmp(key, "audit_syslog") == 0) {
        rc = json_is_boolean(v) ? 0 : clr_error_set(err, CLR_E_INVALID, 0,
                                                    "config: audit_syslog must be true or false");
        c->svc.audit_syslog = json_is_true(v);
        return rc;
    }
    return NOT_MINE;
}

/* The service's strings: 0, -1 with err, or NOT_MINE. */
static int config_service_string(struct serve_config *c, const char *key, json_t *v,
                                 clr_error *err)
{
    const struct {
        const char *key;
        const char **field;
    } strings[] = {
        {"state_dir", &c->svc.state_dir},       {"db_path", &c->svc.db_path},
        {"docker_host", &c->svc.docker_host},   {"image", &c->svc.image},
        {"gauntlet_ref", &c->svc.gauntlet_ref}, {"verdict_key", &c->svc.verdict_key},
        {"insecure_runtime", &c->svc.insecure_runtime},
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        if (strcmp(key, strings[i].key) == 0)
            return config_string_or_null(c, v, key, strings[i].field, err);
    }
    return NOT_MINE;
}

/* The service's numbers and the log level: 0, -1 with err, or NOT_MINE. */
static int config_service_key(struct serve_config *c, const char *key, json_t *v,
                              clr_error *err)
{
    static const struct {
        const char *key;
        uint64_t min, max;
    } numbers[] = {
        {"max_sandboxes", 1, 100000},     {"pool_size", 0, 64},
        {"max_execs", 1, 100000},         {"idle_timeout", 0, 86400},
        {"max_lifetime", 0, 7 * 86400},   {"reaper_interval_ms", 1, 60000},
        {"reconcile_interval_ms", 0, 86400000},
    };
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        if (strcmp(key, numbers[i].key) != 0)
            continue;
        int rc = config_uint_range(v, key, numbers[i].min, numbers[i].max, &n, err);
        switch (i) {
        case 0: c->svc.max_sandboxes = (unsigned)n; break;
        case 1: c->svc.pool_size = (unsigned)n; break;
        case 2: c->svc.max_execs = (unsigned)n; break;
        case 3: c->svc.idle_timeout_s = (uint32_t)n; break;
        case 4: c->svc.max_lifetime_s = (uint32_t)n; break;
        case 5: c->svc.reaper_interval_ms = (uint32_t)n; break;
        default: c->svc.reconcile_interval_ms = (uint32_t)n; break;
        }
        return rc;
    }
    if (strcmp(key, "log_level") == 0) {
        int l = json_is_string(v) ? clr_log_level_parse(json_string_value(v)) : -1;
        if (l < 0)
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "config: log_level must be debug, info, warn or error");
        clr_log_set_level((clr_log_level)l);
        return 0;
    }
    return config_service_string(c, key, v, err);
}

/* "repo_roots": ["/srv/repos", ...] */
static int config_repo_roots(struct serve_config *c, json_t *v, clr_error *err)
{
    size_t i;
    json_t *r;
    /* At most 32 in all: a second --config adds to the first. */
    if (!json_is_array(v) || json_array_size(v) > 32 - (size_t)c->nroots)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "config: repo_roots must be a list of at most 32 directories");
    json_array_foreach(v, i, r) {
        const char *d = json_string_value(r);
        if (!d || d[0] != '/')
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "config: repo_roots[%zu] must be an absolute path", i);
        if (!(c->roots[c->nroots] = keep(c, d)))
            return clr_error_set(err, CLR_E_INVALID, 0, "config: repo_roots: too many strings");
        c->nroots++;
    }
    return 0;
}

/* "allowed_images": a list of image patterns ("clearing/" followed by "*", ...) */
static int config_allowed_images(struct serve_config *c, json_t *v, clr_error *err)
{
    size_t i;
    json_t *r;
    int rc = 0;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 32)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "config: allowed_images must be a list of 1 to 32 image "
                             "patterns, e.g. [\"clearing/*\"] (\"*\": any image)");
    c->nimages = 0;
    json_array_foreach(v, i, r) {
        const char *d = json_string_value(r);
        if (!d || !d[0] || strlen(d) > 255) {
            rc = clr_error_set(err, CLR_E_INVALID, 0,
                               "config: allowed_images[%zu] must be a non-empty pattern "
                               "of at most 255 bytes",
                               i);
            break;
        }
        if (!(c->images[c->nimages] = keep(c, d))) {
            rc = clr_error_set(err, CLR_E_INVALID, 0, "config: allowed_images: too many strings");
            break;
        }
        c->nimages++;
    }
    c->images[c->nimages] = NULL;
    c->svc.allowed_images = c->images;
    return rc;
}

/* "limits": {"memory": "512m", "cpus": 1, ...}, with the names of the limit options. */
static int config_limits(struct serve_config *c, json_t *v, clr_error *err)
{
    if (!json_is_object(v))
        return clr_error_set(err, CLR_E_INVALID, 0, "config: limits must be an object");
    const char *lk;
    json_t *lv;
    json_object_foreach(v, lk, lv) {
        int opt = -1;
        for (const struct option *o = cli_limit_options; o->name; o++) {
            char name[64];
            snprintf(name, sizeof(name), "%s", o->name);
            for (char *p = name; *p; p++)
                if (*p == '-')
                    *p = '_';
            if (strcmp(name, lk) == 0)
                opt = o->val;
        }
        char buf[64];
        if (json_is_string(lv))
            snprintf(buf, sizeof(buf), "%s", json_string_value(lv));
        else if (json_is_integer(lv))
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(lv));
        else if (json_is_real(lv))
            snprintf(buf, sizeof(buf), "%g", json_real_value(lv));
        else
            buf[0] = '\0';
        if (opt < 0)
            return clr_error_set(err, CLR_E_INVALID, 0, "config: unknown limit '%s'", lk);
        if (!buf[0])
            return clr_error_set(err, CLR_E_INVALID, 0,
                                 "config: limits.%s must be a string or a number, e.g. \"512m\"",
                                 lk);
        if (cli_parse_limit_option(&c->svc.limits, opt, buf, err) < 0)
            return clr_error_prefix(err, "config: limits");
    }
    return 0;
}

/* One key of the config file: 0, or -1 with err naming it. */
static int config_key(struct serve_config *c, const char *path, const char *key, json_t *v,
                      clr_error *err)
{
    if (strcmp(key, "repo_roots") == 0)
        return config_repo_roots(c, v, err);
    if (strcmp(key, "allowed_images") == 0)
        return config_allowed_images(c, v, err);
    if (strcmp(key, "tenants") == 0)
        return config_tenants(c, v, err);
    if (strcmp(key, "limits") == 0)
        return config_limits(c, v, err);
    int rc = config_server_key(c, key, v, err);
    if (rc == NOT_MINE)
        rc = config_audit_key(c, key, v, err);
    if (rc == NOT_MINE)
        rc = config_service_key(c, key, v, err);
    if (rc == NOT_MINE)
        rc = clr_error_set(err, CLR_E_INVALID, 0,
                           "config %s: unknown key '%s' (the keys are in docs/OPERATIONS.md)",
                           path, key);
    return rc;
}

/* Reads the config file; unknown keys and wrong types are errors naming the key. */
static int load_config(struct serve_config *c, const char *path, clr_error *err)
{
    json_error_t jerr;
    json_auto_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && jerr.line < 1) /* not read at all: jansson's text names the file and why */
        return clr_error_set(err, CLR_E_INVALID, 0, "config %s: %s", path, jerr.text);
    if (!root)
        return clr_error_set(err, CLR_E_INVALID, 0, "config %s: %s (line %d)", path, jerr.text,
                             jerr.line);
    if (!json_is_object(root))
        return clr_error_set(err, CLR_E_INVALID, 0, "config %s: must be a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (config_key(c, path, key, v, err) < 0)
            return -1;
    }
    return 0;
}

static void help(void)
{
    printf("Usage: clearing serve [OPTIONS]\n\n"
           "Runs the daemon: a REST API over a unix socket (and optionally TCP with bearer\n"
           "tokens) with stateful sandboxes, durable exec records, a reaper and metrics.\n\n"
           "Options:\n"
           "  --config FILE         JSON configuration (see docs/OPERATIONS.md)\n"
           "  --socket PATH         unix socket (default " DEFAULT_SOCKET ")\n"
           "  --tcp ADDR:PORT       also listen on TCP (needs --token-file)\n"
           "  --token-file FILE     bearer tokens, one per line, TENANT:NAME:TOKEN (NAME:TOKEN and\n"
           "                        TOKEN: tenant default) (mode 0600)\n"
           "  --max-sandboxes N     live sandboxes at once (default 64)\n"
           "  --max-execs N         commands running at once (default 32)\n"
           "  --insecure-runtime runc  every sandbox WITHOUT gVisor (logged)\n"
           "  --pool N              keep N started sandboxes of the default profile ready\n"
           "  --repo-root DIR       repositories may come from under DIR (repeatable; none:\n"
           "                        sandboxes from repositories are refused)\n"
           "  --check-config        check the configuration and the options, print the paths\n"
           "                        it would use as JSON, and exit (2: invalid); starts nothing\n"
           "Default limits of new sandboxes:\n%s",
           cli_limit_help);
}

#define SERVE_GO_ON (-1) /* a step's answer when the command should go on */

/* A number option into c: SERVE_GO_ON, or the exit status. */
static int serve_number_option(struct serve_config *c, int ch, const char *arg)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t n = 0;
    if (ch == OPT_POOL) {
        if (clr_parse_uint(&n, arg, &err) < 0 || n > 64) {
            cli_usage_error("serve", "--pool wants 0..64");
            return CLI_EXIT_USAGE;
        }
        c->svc.pool_size = (unsigned)n;
        return SERVE_GO_ON;
    }
    if (clr_parse_uint(&n, arg, &err) < 0 || n == 0 || n > 100000) {
        cli_usage_error("serve", "--max-sandboxes/--max-execs want 1..100000");
        return CLI_EXIT_USAGE;
    }
    if (ch == OPT_MAX_SANDBOXES)
        c->svc.max_sandboxes = (unsigned)n;
    else
        c->svc.max_execs = (unsigned)n;
    return SERVE_GO_ON;
}

/* One of serve's own options into c: SERVE_GO_ON, or the exit status. */
static int serve_option(struct serve_config *c, int ch, char *arg)
{
    clr_error err = CLR_ERROR_INIT;
    uint64_t n = 0;
    char *colon;
    switch (ch) {
    case OPT_CONFIG: break;
    case OPT_SOCKET: c->srv.socket_path = arg; break;
    case OPT_TOKEN_FILE: c->srv.token_file = arg; break;
    case OPT_INSECURE_RUNTIME: c->svc.insecure_runtime = arg; break;
    case OPT_REPO_ROOT:
        if (arg[0] != '/' || c->nroots >= 32) {
            cli_usage_error("serve", "--repo-root wants an absolute directory (at most 32)");
            return CLI_EXIT_USAGE;
        }
        c->roots[c->nroots++] = arg;
        break;
    case OPT_TCP:
        colon = strrchr(arg, ':');
        if (!colon || clr_parse_uint(&n, colon + 1, &err) < 0 || n == 0 || n > 65535) {
            cli_usage_error("serve", "--tcp wants ADDRESS:PORT, e.g. 127.0.0.1:8080");
            return CLI_EXIT_USAGE;
        }
        *colon = '\0';
        c->srv.tcp_address = arg;
        c->srv.tcp_port = (uint16_t)n;
        break;
    case OPT_POOL:
    case OPT_MAX_SANDBOXES:
    case OPT_MAX_EXECS: return serve_number_option(c, ch, arg);
    case OPT_HELP: help(); return 0;
    case OPT_PRINT_ROUTES: routes_print(stdout); return 0;
    case OPT_CHECK_CONFIG: c->check_config = true; break;
    default: cli_usage_error("serve", "unknown option"); return CLI_EXIT_USAGE;
    }
    return SERVE_GO_ON;
}

/* Parses argv into c: the config file first, so the command line overrides it whatever the
 * order. SERVE_GO_ON, or the exit status. */
static int serve_parse(struct serve_config *c, int argc, char **argv)
{
    static const struct option own[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"tcp", required_argument, NULL, OPT_TCP},
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
        {"max-sandboxes", required_argument, NULL, OPT_MAX_SANDBOXES},
        {"max-execs", required_argument, NULL, OPT_MAX_EXECS},
        {"insecure-runtime", required_argument, NULL, OPT_INSECURE_RUNTIME},
        {"repo-root", required_argument, NULL, OPT_REPO_ROOT},
        {"pool", required_argument, NULL, OPT_POOL},
        {"help", no_argument, NULL, OPT_HELP},
        /* hidden: the HTTP route table, one route a line (tests/integration/test_routes.py) */
        {"print-routes", no_argument, NULL, OPT_PRINT_ROUTES},
        {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
        {NULL, 0, NULL, 0},
    };
    clr_error err = CLR_ERROR_INIT;
    _cleanup_free_ struct option *opts = cli_options_with_limits(own);
    if (!opts)
        return CLI_EXIT_FAILURE;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (ch == OPT_CONFIG && load_config(c, optarg, &err) < 0) {
            cli_error(&err);
            return CLI_EXIT_USAGE;
        }
    }
    opterr = 1;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        int rc = cli_parse_limit_option(&c->svc.limits, ch, optarg, &err);
        if (rc < 0) {
            cli_usage_error("serve", "%s", err.message);
            return CLI_EXIT_USAGE;
        }
        if (rc == 0)
            continue;
        rc = serve_option(c, ch, optarg);
        if (rc != SERVE_GO_ON)
            return rc;
    }
    if (optind < argc) {
        cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    return SERVE_GO_ON;
}

/* Defaults from the global options, the limits checked, the socket's and the state's
 * directories made: SERVE_GO_ON, or the exit status. */
static int serve_prepare(struct serve_config *c)
{
    clr_error err = CLR_ERROR_INIT;
    c->roots[c->nroots] = NULL;
    c->svc.repo_roots = c->roots;
    if (!c->svc.state_dir)
        c->svc.state_dir = cli_global.state_dir;
    if (!c->svc.docker_host)
        c->svc.docker_host = cli_global.docker_host;
    if (!c->svc.audit_path && (cli_global.audit_log || getenv("CLEARING_AUDIT_LOG")))
        c->svc.audit_path = cli_audit_path();
    if (clr_limits_validate(&c->svc.limits, &err) < 0) {
        cli_usage_error("serve", "default limits: %s", err.message);
        return CLI_EXIT_USAGE;
    }
    /* The socket's directory: created if missing, never loosened if present. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", c->srv.socket_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            fprintf(stderr,
                    "clearing: cannot create the socket's directory %s: %s (create its parent, "
                    "or choose another --socket)\n",
                    dir, strerror(errno));
            return CLI_EXIT_CLEARING;
        }
    }
    const char *sd = c->svc.state_dir ? c->svc.state_dir : getenv("CLEARING_STATE_DIR");
    if (sd && mkdir(sd, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr,
                "clearing: cannot create state directory %s: %s (check that its parent exists "
                "and is writable by the daemon)\n",
                sd, strerror(errno));
        return CLI_EXIT_CLEARING;
    }
    return SERVE_GO_ON;
}

/* Starts the service and the server, and runs until SIGINT or SIGTERM: the exit status. */
static int serve_run(struct serve_config *c)
{
    clr_error err = CLR_ERROR_INIT;
    /* SIGINT and SIGTERM are blocked before any thread starts, so every thread inherits the
     * mask and only the sigwait() below takes them. With a handler and pause() the kernel may
     * run the handler on any thread (valgrind often does), and pause() here never returns. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    clr_service *svc = NULL;
    /* A setting refused (invalid, denied, a conflict) is 1; what clearing could not do (the
     * engine, the state, the audit log, a socket) is 125, as for every command. */
    if (clr_service_start(&svc, &c->svc, &err) < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    struct server *srv = NULL;
    if (server_start(&srv, svc, &c->srv, &err) < 0) {
        cli_error(&err);
        clr_service_stop(svc);
        return cli_failure_status(&err);
    }
    clr_log(CLR_LOG_WARN, "serve.listening", "socket", c->srv.socket_path, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    clr_log(CLR_LOG_WARN, "serve.stopping", NULL);
    server_stop(srv);
    clr_service_stop(svc);
    return 0;
}

/* --check-config: the configuration was read and the options parsed (an invalid one has
 * already ended the command with status 2): the limits are checked as a start would, and the
 * places the daemon would use are printed (`clearing doctor` checks them). Nothing is made. */
static int serve_check_config(struct serve_config *c)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_limits_validate(&c->svc.limits, &err) < 0) {
        cli_usage_error("serve", "default limits: %s", err.message);
        return CLI_EXIT_USAGE;
    }
    const char *sd = c->svc.state_dir ? c->svc.state_dir : cli_global.state_dir;
    if (!sd || !*sd)
        sd = getenv("CLEARING_STATE_DIR");
    if (!sd || !*sd)
        sd = CLR_STATE_DIR;
    char audit[4200];
    if (c->svc.audit_path)
        snprintf(audit, sizeof(audit), "%s", c->svc.audit_path);
    else if (cli_global.audit_log || getenv("CLEARING_AUDIT_LOG"))
        snprintf(audit, sizeof(audit), "%s", cli_audit_path());
    else
        snprintf(audit, sizeof(audit), "%s/" CLR_AUDIT_DEFAULT_FILE, sd);
    char mode[8], vkey[4200];
    snprintf(mode, sizeof(mode), "%04o", (unsigned)c->srv.socket_mode);
    /* The key that signs verdicts and the audit log's checkpoints (doctor checks with .pub). */
    if (c->svc.verdict_key)
        snprintf(vkey, sizeof(vkey), "%s", c->svc.verdict_key);
    else
        snprintf(vkey, sizeof(vkey), "%s/verdict.key", sd);
    _cleanup_json_ json_t *out = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:s, s:s, s:s}", "socket", c->srv.socket_path, "socket_mode", mode,
        "socket_owner", c->srv.socket_owner, "socket_group", c->srv.socket_group, "state_dir", sd,
        "audit_log", audit, "verdict_key", vkey);
    if (!out)
        return CLI_EXIT_FAILURE;
    cli_print_json(out);
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    struct serve_config c __attribute__((cleanup(serve_config_clear)));
    memset(&c, 0, sizeof(c));
    clr_service_config sc = CLR_SERVICE_CONFIG_INIT;
    c.svc = sc;
    c.srv.socket_path = DEFAULT_SOCKET;
    c.srv.socket_mode = 0660;
    c.srv.max_connections = 256;
    c.srv.max_upload_total = 8ull << 30; /* two uploads of the largest size at once */
    c.srv.max_download_total = 8ull << 30; /* two archives of the largest size at once */
    int rc = serve_parse(&c, argc, argv);
    if (rc == SERVE_GO_ON && c.check_config)
        return serve_check_config(&c);
    if (rc == SERVE_GO_ON)
        rc = serve_prepare(&c);
    if (rc != SERVE_GO_ON)
        return rc;
    return serve_run(&c);
}
