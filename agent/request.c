/* A command's request decoded: see request.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clearing/cleanup.h"
#include "request.h"
#include "util.h"

/* A copy of v as a string; NULL when v holds a NUL byte. The caller frees it. */
static char *dup_bytes(const uint8_t *v, uint32_t len)
{
    if (memchr(v, '\0', len))
        return NULL; /* an embedded NUL would silently cut an argument */
    char *s = malloc((size_t)len + 1);
    if (!s)
        agent_die_oom();
    memcpy(s, v, len);
    s[len] = '\0';
    return s;
}

/* Appends s to the NULL-terminated vector, which then owns it; -1 (s not taken) past max. */
static int push_str(char ***vec, size_t *n, size_t max, char *s)
{
    if (*n >= max)
        return -1;
    char **v = realloc(*vec, (*n + 2) * sizeof(char *));
    if (!v)
        agent_die_oom();
    v[(*n)++] = s;
    v[*n] = NULL;
    *vec = v;
    return 0;
}

void agent_request_clear(struct agent_request *req)
{
    for (size_t i = 0; i < req->argc; i++)
        free(req->argv[i]);
    for (size_t i = 0; i < req->envc; i++)
        free(req->envp[i]);
    free(req->argv);
    free(req->envp);
    free(req->cwd);
    memset(req, 0, sizeof(*req));
}

/* A request being decoded: cleared on every return path unless handed on. */
CLR_DEFINE_CLEANUP(struct agent_request *, agent_request_clear)

__attribute__((format(printf, 3, 4))) static int refuse(char *err, size_t errlen,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* An argument or environment entry; 0 or -1 with a message in err. */
static int parse_string(struct agent_request *req, uint16_t tag, const uint8_t *v, uint32_t vlen,
                        char *err, size_t errlen)
{
    _cleanup_free_ char *str = dup_bytes(v, vlen);
    if (!str)
        return refuse(err, errlen, "argument or environment entry contains a NUL byte");
    if (tag == CLR_REQ_ARG ? push_str(&req->argv, &req->argc, CLR_PROTO_MAX_ARGS, str)
                           : push_str(&req->envp, &req->envc, CLR_PROTO_MAX_ENV, str))
        return refuse(err, errlen, "too many arguments or environment entries");
    str = NULL; /* the vector owns it */
    return 0;
}

/* An integer field; unknown ones are ignored, for forward compatibility. 0 or -1. */
static int parse_integer(struct agent_request *req, uint16_t tag, const uint8_t *v,
                         uint32_t vlen, char *err, size_t errlen)
{
    uint64_t n = 0;
    if (clr_tlv_u64(v, vlen, &n) < 0)
        return refuse(err, errlen, "field %u: expected an 8-byte integer", tag);
    switch (tag) {
    case CLR_REQ_TIMEOUT_MS: req->timeout_ms = n; break;
    case CLR_REQ_STDOUT_CAP: req->stdout_cap = n; break;
    case CLR_REQ_STDERR_CAP: req->stderr_cap = n; break;
    case CLR_REQ_UID: req->uid = (uid_t)n; break;
    case CLR_REQ_GID: req->gid = (gid_t)n; break;
    case CLR_REQ_NPROC: req->nproc = n; break;
    case CLR_REQ_MEMORY: req->memory = n; break;
    case CLR_REQ_NOFILE: req->nofile = n; break;
    case CLR_REQ_FSIZE: req->fsize = n; break;
    case CLR_REQ_MEMORY_SOURCE: req->memory_source = n; break;
    case CLR_REQ_STREAM: req->stream = n; break;
    default: break;
    }
    return 0;
}

static int parse_field(struct agent_request *req, uint16_t tag, const uint8_t *v, uint32_t vlen,
                       char *err, size_t errlen)
{
    switch (tag) {
    case CLR_REQ_ARG:
    case CLR_REQ_ENV:
        return parse_string(req, tag, v, vlen, err, errlen);
    case CLR_REQ_CWD:
        free(req->cwd);
        req->cwd = dup_bytes(v, vlen);
        if (!req->cwd)
            return refuse(err, errlen, "working directory contains a NUL byte");
        return 0;
    default:
        return parse_integer(req, tag, v, vlen, err, errlen);
    }
}

int agent_request_parse(struct agent_request *req, const uint8_t *payload, size_t len, char *err,
                        size_t errlen)
{
    memset(req, 0, sizeof(*req));
    __attribute__((cleanup(agent_request_clearp))) struct agent_request *owned = req;
    req->uid = 1000;
    req->gid = 1000;
    struct clr_tlv_iter it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t vlen;
    int rc;
    clr_tlv_iter_init(&it, payload, len);
    while ((rc = clr_tlv_next(&it, &tag, &v, &vlen)) == 1) {
        if (parse_field(req, tag, v, vlen, err, errlen) < 0)
            return -1;
    }
    if (rc < 0)
        return refuse(err, errlen, "malformed request fields");
    if (req->argc == 0)
        return refuse(err, errlen, "empty command");
    /* Commands never run as root: the result's integrity depends on it. */
    if (req->uid == 0 || req->gid == 0)
        return refuse(err, errlen, "refusing to run a command as uid/gid 0");
    if (!req->envp) {
        /* An empty environment is a NULL-terminated array with no entries: envc stays 0. */
        size_t none = 0;
        push_str(&req->envp, &none, CLR_PROTO_MAX_ENV, NULL);
    }
    owned = NULL; /* accepted: the caller owns req's contents */
    return 0;
}
