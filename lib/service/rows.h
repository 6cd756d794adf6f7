/* The sandbox rows as the service reads them: their state (running, plan, lost, destroyed), the
 * 409 for one that is not running, the JSON a client sees, the workspace of a readable sandbox;
 * and the audit records of requests (clr_service_audit*, svc_audit_failure). */
#ifndef CLR_SERVICE_ROWS_H
#define CLR_SERVICE_ROWS_H

#include "service_int.h"

/* Records a refused or failed request; the request has failed already, so a failure to write
 * the record is only logged. */
void svc_audit_failure(clr_service *svc, const char *actor, const char *sandbox,
                       const char *action, const clr_error *why);
/* The same, with outcome (NULL: refused for an invalid, denied, limit or unavailable request,
 * error otherwise) and the fields of extra (NULL: none; the caller's) in its details besides
 * the error's code and message. */
void svc_audit_failure_with(clr_service *svc, const char *actor, const char *sandbox,
                            const char *action, const clr_error *why, const char *outcome,
                            json_t *extra);

/* Records a request refused for want of a slot (429: max_execs, a tenant's, the background
 * processes' caps), which comes at the client's rate while the daemon is full: through
 * clr_audit_denied, keyed by (action, sandbox, actor). The first is recorded at once, later ones
 * counted, one record per audit_aggregate_ms with their count; details: the error's code and
 * message, source (the actor), count, and interval_ms on the counted ones. A failure to write
 * is only logged, as for svc_audit_failure. */
void svc_audit_refusal(clr_service *svc, const char *actor, const char *sandbox,
                       const char *action, const clr_error *why);

/* A sandbox row as a client sees it (environment names only, never values); the caller's. */
json_t *svc_sandbox_json(const clr_store_sandbox *s);

/* The database's state of the sandbox (a CLR_STATE_*) and why it left running ("" while it
 * runs); -1 when it has no row for it (404). */
int svc_row_state(clr_service *svc, const char *id, char state[32],
                  char reason[CLR_STORE_REASON_MAX + 1],
                  clr_error *err);

/* The tenant the sandbox's row names (CLR_TENANT_DEFAULT when it names none), for the records
 * of what is done to it; -1 when it has no row for it (404) or the database fails. */
int svc_row_tenant(clr_service *svc, const char *id, char tenant[CLR_TENANT_MAX + 1],
                   clr_error *err);

/* The sandbox's environment as its row recorded it ("KEY=VALUE"), then extra's (NULL: none),
 * NULL-terminated (svc_free_strv), or NULL when out of memory. */
char **svc_row_env(const clr_store_sandbox *row, const char *const *extra);

/* Whether the database has the sandbox as running; -1 when it has no row for it (404). */
int svc_row_running(clr_service *svc, const char *id, bool *running, clr_error *err);

/* The 409 for a sandbox that is not running: a lost one names its cause, and that its files
 * can still be read. */
int svc_not_running(clr_error *err, const char *id, const char *state, const char *reason);

/* A valid id of a running sandbox, or -1 (400, 404 or 409). */
int svc_require_running(clr_service *svc, const char *id, clr_error *err);

/* The workspace of a running or lost sandbox, for reading. */
int svc_workspace_to_read(clr_service *svc, const char *id, char *out, size_t len,
                          clr_error *err);

/* Whether the database knows this sandbox as destroyed (not merely unknown, nor lost: a lost
 * one's remains wait for its destroy; nor a running plan's). */
bool svc_destroyed_row(clr_service *svc, const char *id);

/* Whether the database knows this sandbox as lost. */
bool svc_lost_row(clr_service *svc, const char *id);

#endif
