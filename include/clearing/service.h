/* The service behind `clearing serve`: sandboxes that live across many requests, with durable
 * state, a reaper, crash recovery and metrics. The HTTP layer only maps routes to these calls;
 * requests and answers are JSON objects, validated here (unknown fields and wrong types are
 * CLR_E_INVALID errors that name the field). Thread-safe: every call may come from any thread. */
#ifndef CLEARING_SERVICE_H
#define CLEARING_SERVICE_H

#include <jansson.h>

#include "common.h"
#include "exec.h"
#include "files.h"
#include "limits.h"

typedef struct clr_service clr_service;

/* The images scripts/setup.sh builds. */
#define CLR_SERVICE_DEFAULT_ALLOWED_IMAGES "clearing/*"

/* A tenant's quota: what its live sandboxes (plans' included) may hold together, checked at
 * create and plan time under the same lock as max_sandboxes, and how many commands they may run
 * at once, checked with max_execs. 0: no bound of its own. */
typedef struct clr_tenant_quota {
    const char *name;           /* a tenant name (clr_tenant_name_valid) */
    unsigned max_sandboxes;
    uint64_t max_memory_bytes;  /* the sum of their memory limits */
    uint32_t max_cpu_millis;    /* the sum of their CPU limits, in thousandths of a CPU */
    /* Commands running at once in its sandboxes (execs, whoever asked, and its plans' checks):
     * so that one tenant cannot hold every slot of max_execs. */
    unsigned max_execs;
    /* Sessions of the daemon's /mcp its tokens hold together (0: the daemon's default, a
     * quarter of its 64): so that one tenant cannot hold every session. */
    unsigned max_mcp_sessions;
    /* Code sessions (#21: a Jupyter kernel and its bridge each) running or starting in its
     * sandboxes at once, 1..CLR_SERVICE_CODE_SESSIONS_MAX (0: CLR_SERVICE_TENANT_CODE_SESSIONS,
     * which also binds a tenant without a quota): so that one tenant cannot hold every kernel
     * the daemon keeps. */
    unsigned max_code_sessions;
} clr_tenant_quota;

/* Code sessions the daemon keeps, all tenants together; a tenant's default share of them. */
#define CLR_SERVICE_CODE_SESSIONS_MAX 256
#define CLR_SERVICE_TENANT_CODE_SESSIONS 64

/* Tenants with a quota of their own, at most. */
#define CLR_SERVICE_TENANTS_MAX 64

typedef struct clr_service_config {
    const char *state_dir;        /* workspaces and, by default, the database */
    const char *db_path;          /* NULL: <state_dir>/clearing.db */
    const char *docker_host;      /* NULL: the default engine socket */
    const char *image;            /* default image (NULL: CLR_DEFAULT_IMAGE) */
    /* fnmatch(3) patterns of the images sandboxes and plans may use (NULL-terminated); NULL:
     * CLR_SERVICE_DEFAULT_ALLOWED_IMAGES. The default image must match one. */
    const char *const *allowed_images;
    const char *insecure_runtime; /* operator setting: "runc" to run without gVisor (logged) */
    clr_limits limits;            /* defaults for sandboxes that do not say */
    unsigned max_sandboxes;       /* live sandboxes at once; more is a 429 */
    unsigned max_execs;           /* commands running at once; more is a 429 */
    uint32_t idle_timeout_s;      /* default idle timeout (0: none) */
    uint32_t max_lifetime_s;      /* how far extensions may take a sandbox, from creation */
    uint32_t reaper_interval_ms;
    /* How often the reaper compares the database with the engine's containers: the backstop of
     * the event watcher, which marks a sandbox whose container died lost at once. 0: every
     * tenth reaper pass (and at least every 10 s). */
    uint32_t reconcile_interval_ms;
    uint32_t exec_retention_s;    /* how long exec results stay fetchable */
    const char *audit_path;       /* NULL: <state_dir>/audit.log */
    uint64_t audit_rotate_bytes;  /* rotate the audit log past this size (0: never) */
    bool audit_syslog;            /* copy audit records and checkpoints to syslog */
    unsigned audit_keep;          /* rotated audit files kept (0: all) */
    uint64_t audit_disk_budget;   /* bytes for the audit log's files: health warns near it */
    uint32_t audit_aggregate_ms;  /* repeated denials of one source: one record per this */
    uint32_t audit_checkpoint_ms; /* signed checkpoint of the head at least this often */
    /* Directories repositories may come from (NULL-terminated); none: repos are refused. */
    const char *const *repo_roots;
    /* The ref whose .clearing/gauntlet.yaml judges plans (NULL: each repository's HEAD, its
     * default branch as it is when the plan starts). No sandbox may write to it. */
    const char *gauntlet_ref;
    /* The Ed25519 key that signs verdicts (NULL: <state_dir>/verdict.key); made at the first
     * start when missing, its public half beside it as .pub. */
    const char *verdict_key;
    /* Started sandboxes of the default profile (default image and limits, no repository) kept
     * ready: a create that asks for nothing else takes one. 0: no pool. */
    unsigned pool_size;
    /* Per-tenant quotas (ntenants entries, at most CLR_SERVICE_TENANTS_MAX); a tenant not listed
     * has only the daemon's limits. */
    const clr_tenant_quota *tenants;
    size_t ntenants;
    /* Snapshots (issue #22): the bytes all of them may take together (0: 8 GiB). */
    uint64_t snapshot_budget_bytes;
} clr_service_config;

#define CLR_SERVICE_CONFIG_INIT                                                                   \
    {                                                                                             \
        .limits = CLR_LIMITS_INIT, .max_sandboxes = 64, .max_execs = 32, .idle_timeout_s = 300,  \
        .max_lifetime_s = 3600, .reaper_interval_ms = 1000, .exec_retention_s = 3600,            \
        .audit_rotate_bytes = 64ull * 1024 * 1024,                                               \
        .audit_aggregate_ms = 10000, .audit_checkpoint_ms = 60000,                               \
    }

/* Opens the database, checks the engine and runsc, adopts the sandboxes a previous run left
 * (live ones are kept, vanished ones marked lost, unknown ones of ours removed), and starts the
 * reaper. *out is owned by the caller: clr_service_stop(). */
CLR_PUBLIC int clr_service_start(clr_service **out, const clr_service_config *cfg,
                                 clr_error *err);
CLR_PUBLIC void clr_service_stop(clr_service *svc);

/* The actor is recorded with each action ("uid=1000 pid=42", "tenant=acme token=ci", "cli").
 * tenant: who the new sandbox belongs to (NULL: CLR_TENANT_DEFAULT); it counts against that
 * tenant's quota. */
CLR_PUBLIC int clr_service_create(clr_service *svc, json_t *request, const char *tenant,
                                  const char *actor, json_t **out, clr_error *err);
/* tenant: only that tenant's sandboxes (NULL: everyone's, the operator's view); state: NULL for
 * all; label: "key=value" metadata filter or NULL. */
CLR_PUBLIC int clr_service_list(clr_service *svc, const char *tenant, const char *state,
                                const char *label, json_t **out, clr_error *err);
/* 0 when the sandbox (or plan's sandbox) id exists and belongs to tenant (NULL: to anyone, the
 * operator). Otherwise -1 with CLR_E_NOT_FOUND: for another tenant's sandbox the very error an
 * id without a row gets, so a tenant cannot tell the two apart. The HTTP layer asks this before
 * any per-sandbox request of a tenant. */
CLR_PUBLIC int clr_service_sandbox_of(clr_service *svc, const char *id, const char *tenant,
                                      clr_error *err);
CLR_PUBLIC int clr_service_get(clr_service *svc, const char *id, json_t **out, clr_error *err);
CLR_PUBLIC int clr_service_extend(clr_service *svc, const char *id, json_t *request,
                                  json_t **out, clr_error *err);
/* Replaces a live sandbox's egress policy by a tighter one (CLR_E_DENIED if it is not). */
CLR_PUBLIC int clr_service_egress(clr_service *svc, const char *id, json_t *request,
                                  const char *actor, json_t **out, clr_error *err);
/* Destroy returns once the sandbox is marked destroyed and recorded: no command, file or commit
 * reaches it from then on. Its container and workspace are removed in the background. */
CLR_PUBLIC int clr_service_destroy(clr_service *svc, const char *id, const char *reason,
                                   const char *actor, clr_error *err);
/* Waits until a destroyed sandbox's container and workspace are removed (0), or timeout_ms
 * passed (-1, CLR_E_TIMEOUT; the removal goes on). */
CLR_PUBLIC int clr_service_await_removal(clr_service *svc, const char *id, unsigned timeout_ms,
                                         clr_error *err);

/* Events of a streaming exec: "started" {exec_id}, "stdout"/"stderr" {data, encoding},
 * then the answer itself is the final record. */
typedef void (*clr_service_event_cb)(void *ctx, json_t *event);

/* Runs a command. The exec record is stored before the command starts and its result before
 * this returns, so a client that lost its connection fetches it by id. on_event may be NULL.
 * A command refused for want of a slot (max_execs, or its tenant's: CLR_E_LIMIT) is recorded
 * ("exec", refused) by actor. */
CLR_PUBLIC int clr_service_exec(clr_service *svc, const char *id, json_t *request,
                                const char *actor, clr_service_event_cb on_event, void *ctx,
                                json_t **out, clr_error *err);
/* Validates an exec request and checks the sandbox and capacity without running anything. A
 * command refused for want of a slot (max_execs, or its tenant's: CLR_E_LIMIT) is recorded by
 * actor, as clr_service_exec records its own refusal. */
CLR_PUBLIC int clr_service_exec_check(clr_service *svc, const char *id, json_t *request,
                                      const char *actor, clr_error *err);
CLR_PUBLIC int clr_service_exec_get(clr_service *svc, const char *id, const char *exec_id,
                                    json_t **out, clr_error *err);

/* Background processes: commands without a timeout that live until they end, are signalled, or
 * their sandbox goes (a dev server, a REPL). Output is kept in memory, the last 1 MiB of each
 * stream, and read by offset. They are not persisted: a daemon restart ends them. */
CLR_PUBLIC int clr_service_proc_start(clr_service *svc, const char *id, json_t *request,
                                      const char *actor, json_t **out, clr_error *err);
CLR_PUBLIC int clr_service_proc_list(clr_service *svc, const char *id, json_t **out,
                                     clr_error *err);
CLR_PUBLIC int clr_service_proc_get(clr_service *svc, const char *id, const char *proc_id,
                                    json_t **out, clr_error *err);
/* Output from the given offsets; waits up to wait_ms for something new (0: answer at once). */
CLR_PUBLIC int clr_service_proc_output(clr_service *svc, const char *id, const char *proc_id,
                                       uint64_t stdout_offset, uint64_t stderr_offset,
                                       uint32_t wait_ms, json_t **out, clr_error *err);
/* {"data": "...", "data_base64": "...", "eof": true} */
CLR_PUBLIC int clr_service_proc_stdin(clr_service *svc, const char *id, const char *proc_id,
                                      json_t *request, clr_error *err);
/* {"signal": "TERM" | 15} */
CLR_PUBLIC int clr_service_proc_signal(clr_service *svc, const char *id, const char *proc_id,
                                       json_t *request, const char *actor, clr_error *err);

/* Files in a live sandbox's workspace. Paths are relative to /workspace and confined to it (see
 * clearing/files.h); every action is audited with path, size and SHA-256. */
CLR_PUBLIC int clr_service_file_put(clr_service *svc, const char *id, const char *rel,
                                    int src_fd, const char *actor, json_t **out, clr_error *err);
/* Copies the file to out_fd (a seekable temporary file: it is hashed for the audit record).
 * What is written is charged to budget (may be NULL; see clr_files_budget): *charged gets the
 * bytes charged, also after a failure, for the caller to give back with
 * clr_files_budget_release() once out_fd is closed. A spent budget is CLR_E_UNAVAILABLE. */
CLR_PUBLIC int clr_service_file_get(clr_service *svc, const char *id, const char *rel,
                                    int out_fd, clr_files_budget *budget, const char *actor,
                                    uint64_t *size, uint64_t *charged, clr_error *err);
CLR_PUBLIC int clr_service_file_list(clr_service *svc, const char *id, const char *rel,
                                     json_t **out, clr_error *err);
CLR_PUBLIC int clr_service_file_delete(clr_service *svc, const char *id, const char *rel,
                                       bool recursive, const char *actor, clr_error *err);
CLR_PUBLIC int clr_service_archive_put(clr_service *svc, const char *id, const char *rel,
                                       int tar_fd, const char *actor, json_t **out,
                                       clr_error *err);
/* A tar archive of rel to out_fd; budget and *charged as for clr_service_file_get(). */
CLR_PUBLIC int clr_service_archive_get(clr_service *svc, const char *id, const char *rel,
                                       int out_fd, clr_files_budget *budget, const char *actor,
                                       uint64_t *charged, clr_error *err);

/* The workspace as a commit on the sandbox's branch: {"message", "author_name",
 * "author_email", "trailers": [...]} -> {"commit", "branch", "changed", "files_changed",
 * "insertions", "deletions", "diffstat", "skipped": [{"path","kind"}]}. */
CLR_PUBLIC int clr_service_commit(clr_service *svc, const char *id, json_t *request,
                                  const char *actor, json_t **out, clr_error *err);
/* Unified diff of the workspace against the base commit; caller frees. */
CLR_PUBLIC int clr_service_diff(clr_service *svc, const char *id, char **out, clr_error *err);

/* Runs a plan ({"plan": object or YAML string, "repo": path under repo_roots, "profile"}) or,
 * with "gauntlet_only": true, just the gauntlet on the repository's base ("base"). The answer
 * is the plan report; events (steps, checks, commit) go to on_event as they happen. */
CLR_PUBLIC int clr_service_plan(clr_service *svc, json_t *request, const char *tenant,
                                const char *actor,
                                clr_service_event_cb on_event, void *ctx, json_t **out,
                                clr_error *err);
/* As clr_service_plan, stopped when *cancel turns non-zero (NULL: never): at its next step, or
 * its running command killed; nothing is committed and its sandbox is destroyed. */
CLR_PUBLIC int clr_service_plan_cancel(clr_service *svc, json_t *request, const char *tenant,
                                       const char *actor, clr_service_event_cb on_event,
                                       void *ctx, const volatile int *cancel, json_t **out,
                                       clr_error *err);

/* The daemon's health: 0 when all is well (status "ok"); -1 with status "degraded" when the
 * engine does not answer or the audit log is not writable (every action would be refused), or
 * "unavailable" when the state directory's or the audit log's filesystem is (nearly) full. The
 * "reasons" array says why, naming the file or directory. fresh: ping the engine now; otherwise
 * the last answer may be up to 3 s old (for anonymous callers, who must not set the rate of the
 * daemon's calls to dockerd). The other checks are an access() and a statvfs() per call: no
 * write, no fsync. *out is the caller's. With fresh, "audit" also says how much the
 * audit log takes, warning near its disk budget (without failing). */
CLR_PUBLIC int clr_service_health(clr_service *svc, bool fresh, json_t **out);
/* Appends an audit record. */
CLR_PUBLIC int clr_service_audit(clr_service *svc, const char *actor, const char *sandbox,
                                 const char *action, const char *outcome, json_t *details,
                                 clr_error *err);
/* Records a denial from source (the HTTP layer's failed token checks, by client address):
 * aggregated per source, see clr_audit_denied(). */
CLR_PUBLIC int clr_service_audit_denied(clr_service *svc, const char *source, const char *actor,
                                        const char *action, json_t *details, clr_error *err);

/* Prometheus text exposition; caller frees. tenant NULL: the daemon's figures and every
 * tenant's gauges (clearing_tenant_*); otherwise only that tenant's gauges. */
CLR_PUBLIC char *clr_service_metrics(clr_service *svc, const char *tenant);

/* Runs one reaper pass now (tests, and the reaper thread itself); returns how many sandboxes it
 * destroyed. */
CLR_PUBLIC int clr_service_reap(clr_service *svc, clr_error *err);

/* Marks sandboxes whose container stopped or vanished as lost (the reaper does this every ten
 * passes); returns how many. */
CLR_PUBLIC int clr_service_reconcile(clr_service *svc, clr_error *err);

/* ---- snapshots and forks (issue #22; lib/service/snapshots.c) ----
 * Where the engine cannot checkpoint (no experimental mode, a runtime other than runsc) each
 * answers CLR_E_UNSUPPORTED (501) naming what to enable, and nothing changes. */
/* Snapshots the running sandbox: request {"keep": bool (outlives its sandbox), "ttl": seconds}
 * (may be NULL). *out {id, sandbox, tenant, parent, size, sha256, created_at, expires_at, keep}. */
CLR_PUBLIC int clr_service_snapshot(clr_service *svc, const char *sandbox_id, json_t *request,
                                    const char *actor, json_t **out, clr_error *err);
/* {"snapshots": [...]}: the sandbox's, oldest first. */
CLR_PUBLIC int clr_service_snapshot_list(clr_service *svc, const char *sandbox_id, json_t **out,
                                         clr_error *err);
/* One of the sandbox's snapshots; CLR_E_NOT_FOUND for another sandbox's. */
CLR_PUBLIC int clr_service_snapshot_get(clr_service *svc, const char *sandbox_id, const char *id,
                                        json_t **out, clr_error *err);
CLR_PUBLIC int clr_service_snapshot_delete(clr_service *svc, const char *sandbox_id,
                                           const char *id, const char *actor, clr_error *err);
/* Restore in place: sandbox id (running) goes back to its own snapshot, request {"snapshot":
 * id}: processes and memory from the checkpoint, /workspace the snapshot's copy; it keeps its
 * id, limits, egress policy and remaining lifetime. Commands in flight end (their records
 * lost). The snapshot is verified whole first (CLR_E_CONFLICT when corrupt: nothing changed);
 * another tenant's is CLR_E_NOT_FOUND, another sandbox's CLR_E_INVALID; CLR_E_UNSUPPORTED
 * without checkpoints. A failure after the old container went destroys the sandbox (the error
 * says so) and marks the snapshot kept (it outlives the sandbox). Recorded as "sandbox.restore" first. *out as clr_service_get's, with "snapshot". */
CLR_PUBLIC int clr_service_restore(clr_service *svc, const char *id, json_t *request,
                                   const char *actor, json_t **out, clr_error *err);
/* A new sandbox from a snapshot of tenant's (NULL: any): request {"snapshot": id, "limits",
 * "egress", "metadata", "idle_timeout"}; limits and egress only narrower than the snapshot's
 * sandbox's. The snapshot is verified whole first (CLR_E_CONFLICT when corrupt). *out as
 * clr_service_create's, with "snapshot". */
CLR_PUBLIC int clr_service_fork(clr_service *svc, json_t *request, const char *tenant,
                                const char *actor, json_t **out, clr_error *err);

/* The workspace directory of a live sandbox (files API); CLR_E_NOT_FOUND otherwise. */
CLR_PUBLIC int clr_service_workspace(clr_service *svc, const char *id, char *out, size_t len,
                                     clr_error *err);

/* The code interpreter (lib/service/code.h): runs a cell {"code": "...", "timeout": "30s",
 * "output_cap": "1m"} in the sandbox's code session (started on first use) and answers
 * {"status", "execution_count", "stdout", "stderr", "result", "displays", "error", "truncated",
 * "restarted", "message", "duration_ms"}. With on_event, the cell's output also comes as
 * {"event": "stdout"|"stderr", "text"} events while it runs. */
CLR_PUBLIC int clr_service_code_run(clr_service *svc, const char *id, json_t *request,
                                    const char *actor, clr_service_event_cb on_event, void *ctx,
                                    json_t **out, clr_error *err);
/* Checks a cell's request and the sandbox before a stream is started. A tenant at its
 * max_code_sessions is refused (CLR_E_LIMIT) and the refusal recorded by actor, as
 * clr_service_code_run records it. */
CLR_PUBLIC int clr_service_code_check(clr_service *svc, const char *id, json_t *request,
                                      const char *actor, clr_error *err);
/* A fresh kernel for the sandbox's code session (its state is gone): {"status": "restarted"}. */
CLR_PUBLIC int clr_service_code_restart(clr_service *svc, const char *id, const char *actor,
                                        json_t **out, clr_error *err);
/* Ends the sandbox's code session after the calls already in flight (a running cell ends
 * first): its bridge and kernel are killed, their place in the tenant's max_code_sessions and the
 * daemon's sessions given back, and the next cell starts a fresh kernel whose answer says so
 * (restarted true, message). 0 also when there is no session (idempotent). One "code.end"
 * record by actor, with kernel_ended; a log that cannot take it refuses the end
 * (CLR_E_UNAVAILABLE) before the kernel is touched. */
CLR_PUBLIC int clr_service_code_end(clr_service *svc, const char *id, const char *actor,
                                    clr_error *err);

#endif
