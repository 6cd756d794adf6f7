/* Tenants' quotas: what each tenant's live sandboxes (plans' included) hold, the room check of
 * a create or plan against max_sandboxes and the tenant's quota (under create_lock), the
 * command slots of max_execs and the tenant's max_execs, and the tenant's bound on code
 * sessions (counted by code.c, which keeps them). */
#ifndef CLR_SERVICE_TENANTS_H
#define CLR_SERVICE_TENANTS_H

#include "service_int.h"

/* A plan admitted whose sandbox has no row yet: what it will hold of its tenant's quota. */
struct pending_plan {
    char tenant[CLR_TENANT_MAX + 1];
    clr_limits limits;
    struct pending_plan *next;
};

/* What one tenant's live sandboxes (running and plans') hold. */
struct tenant_usage {
    char tenant[CLR_TENANT_MAX + 1];
    unsigned sandboxes;
    uint64_t memory_bytes;
    uint64_t cpu_millis;
};

/* The tenant's entry in *v (n entries, realloc()ed; free() it), added with zeros when missing;
 * NULL when out of memory. */
struct tenant_usage *svc_usage_entry(struct tenant_usage **v, size_t *n, const char *tenant);

/* Every tenant's live sandboxes, from the database (*v: free()). */
int svc_usage_collect(clr_service *svc, struct tenant_usage **v, size_t *n, clr_error *err);

/* Room for one more sandbox: the live rows (sandboxes and plans') and the plans admitted whose
 * sandbox is still being made, against max_sandboxes, then against the tenant's quota.
 * create_lock held, so the count and the insert (or the plan's admission) are one step. */
int svc_sandbox_room_locked(clr_service *svc, const char *tenant, const clr_limits *want,
                            clr_error *err);

/* Takes up to *n (at least 1) command slots for a command or plan in a sandbox of tenant: each
 * one of max_execs and one of the tenant's max_execs (when its quota has one). *n: how many it
 * got, at least one. -1 with CLR_E_LIMIT when not even one is free (the message names the limit
 * that is full; counted in refused): nothing is held then. svc_exec_release gives them back. */
int svc_exec_admit(clr_service *svc, const char *tenant, unsigned *n, clr_error *err);

/* Gives back n slots svc_exec_admit took for tenant. */
void svc_exec_release(clr_service *svc, const char *tenant, unsigned n);

/* 0 when a command in a sandbox of tenant would find a slot now (the check a server makes
 * before it streams; svc_exec_admit decides); else -1 as svc_exec_admit. */
int svc_exec_room(clr_service *svc, const char *tenant, clr_error *err);

/* The most code sessions tenant's sandboxes may run at once: its quota's max_code_sessions, else
 * CLR_SERVICE_TENANT_CODE_SESSIONS (a tenant without a quota, `default` included). */
unsigned svc_code_sessions_max(const clr_service *svc, const char *tenant);

#endif
