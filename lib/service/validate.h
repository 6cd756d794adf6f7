/* Request validation: the parsers of every request body (fields, types, limits, sizes,
 * durations, environment, commands, plans), and the operator's allowed images. Pure functions of
 * the request (and the configuration): no database, no engine. Errors are CLR_E_INVALID (or
 * CLR_E_LIMIT, CLR_E_DENIED) and name the field. */
#ifndef CLR_SERVICE_VALIDATE_H
#define CLR_SERVICE_VALIDATE_H

#include "clearing/cleanup.h"
#include "clearing/plan.h"
#include "service_int.h"

/* The parts of a command request shared by execs and background processes. */
struct command {
    clr_exec_options o;
    char **argv, **env, **all_env;
    uint8_t *stdin_buf;
    char tenant[CLR_TENANT_MAX + 1]; /* its sandbox's (svc_command_bind) */
};

/* The fields an exec request may have; a background process's (no timeout, no output caps). */
extern const char *const svc_exec_fields[];
extern const char *const svc_process_fields[];

/* 0 when obj is an object whose fields are all in allowed (NULL-terminated); otherwise
 * CLR_E_INVALID naming what and the unknown field. */
int svc_check_fields(json_t *obj, const char *what, const char *const *allowed,
                     clr_error *err);

/* {"KEY": "VALUE"} -> NULL-terminated "KEY=VALUE" array (caller frees with free_strv). */
void svc_free_strv(char **v);


/* The patterns of allowed_images as one string for messages and the log. */
void svc_allowed_images_text(const clr_service *svc, char *buf, size_t len);

/* Only images the operator allowed: a client's image is code and a filesystem the operator never
 * looked at (setuid helpers, a VOLUME, whatever its entrypoint would do under another runtime). */
int svc_image_allowed(const clr_service *svc, const char *image, clr_error *err);

/* The checks of a create request that need no daemon state: its fields, image, limits (over the
 * defaults in o->limits), idle timeout (over the default in *idle_ms), metadata, env and the
 * shape of repo. *repo_path is the repository asked for (NULL: none), still to be checked
 * against repo_roots. On success *env is the caller's (free_strv). */
int svc_parse_create(json_t *req, clr_sandbox_options *o, uint64_t *idle_ms,
                     const char **repo_path, char ***env, clr_error *err);

/* Commands of a sandbox whose policy allows anything find the agent's proxy through these. */
int svc_add_proxy_env(char ***env);

/* 0 for a well-formed sandbox id; CLR_E_INVALID naming it otherwise. */
int svc_valid_id(const char *id, clr_error *err);

/* {"by": "10m"} -> *ms, a positive whole number of seconds. */
int svc_parse_extend(json_t *req, uint64_t *ms, clr_error *err);
/* A restore's request, {"snapshot": "snap-..."}: *snapshot points into req. */
int svc_parse_restore(json_t *req, const char **snapshot, clr_error *err);

/* Frees what svc_parse_command (and svc_command_bind) put in c, and zeroes it. */
void svc_command_clear(struct command *c);

/* A command released on every return path: `_cleanup_command_ struct command cmd = {.argv =
 * NULL};` (parse_command fills it). */
#define _cleanup_command_ __attribute__((cleanup(svc_command_clear)))

/* The command of an exec or process request: argv or shell, env, cwd, stdin (or stdin_base64,
 * decoded), timeout and output caps, into c->o (which points into c and the request: both must
 * outlive it). c is the caller's (svc_command_clear), also after a failure. */
int svc_parse_command(struct command *c, json_t *req, clr_error *err);

/* The request as it is recorded: environment values may be secrets, stdin is left out. */
json_t *svc_redacted(json_t *req);

/* {"data": "..."} or {"data_base64": "..."}, and "eof": a boolean. *buf (the decoded
 * data_base64, NULL if none) is the caller's to free. */
int svc_parse_stdin(json_t *req, uint8_t **buf, size_t *len, clr_error *err);

/* {"signal": "TERM" | "SIGTERM" | 15} -> *sig, 1..64; CLR_E_INVALID otherwise. */
int svc_parse_signal(json_t *req, int *sig, clr_error *err);

/* message, author_name, author_email: strings; trailers: at most 16 "Key: value" strings, put
 * into trailers (NULL-terminated, borrowed from req). */
int svc_parse_commit(json_t *req, const char *trailers[17], clr_error *err);

/* The plan request's fields and the plan itself (*plan: clr_plan_free); repo still to be checked
 * against repo_roots. */
int svc_parse_plan_request(json_t *req, clr_plan **plan, clr_error *err);

#endif
