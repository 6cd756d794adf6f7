/* Plans and gauntlets: clr_service_plan() and the admission a plan's sandbox goes through (the
 * same room check as a create, within max_execs); the contract is in
 * include/clearing/service.h. */
#include <string.h>

#include "clearing/plan.h"
#include "clearing/repoadmit.h"

#include "service_int.h"
#include "tenants.h"
#include "validate.h"

struct plan_events {
    clr_service_event_cb cb;
    void *ctx;
};

static void plan_event(void *ctx, json_t *ev)
{
    struct plan_events *pe = ctx;
    if (pe->cb)
        pe->cb(pe->ctx, ev);
}

/* A plan is one of the daemon's sandboxes and runs its commands within max_execs: admitted
 * under the same lock and with the same refusal as a create, its sandbox a row of its own
 * (state "plan") from before anything runs in it until it is destroyed, so a restart finds
 * it (recover). */
struct plan_admission {
    clr_service *svc;
    unsigned execs;   /* slots of running_execs (and of its tenant's max_execs) it holds */
    bool pending;     /* counted in plans_pending, listed in pending_plans */
    bool recorded;    /* its row exists */
    struct pending_plan node; /* its tenant and limits, for the tenant's quota */
};

/* Takes the plan off pending_plans. create_lock held. */
static void plan_unpend_locked(clr_service *svc, struct plan_admission *a)
{
    for (struct pending_plan **p = &svc->pending_plans; *p; p = &(*p)->next) {
        if (*p == &a->node) {
            *p = a->node.next;
            break;
        }
    }
    svc->plans_pending--;
    a->pending = false;
}

static int plan_admit(void *ctx, unsigned *execs, clr_error *err)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    pthread_mutex_lock(&svc->create_lock);
    if (svc_sandbox_room_locked(svc, a->node.tenant, &a->node.limits, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        return -1;
    }
    /* One command slot at least (its steps run one by one), more for a parallel gauntlet as
     * far as there is room, in max_execs and its tenant's: it then runs no more checks at once
     * than it holds. */
    if (svc_exec_admit(svc, a->node.tenant, execs, err) < 0) {
        pthread_mutex_unlock(&svc->create_lock);
        return -1;
    }
    svc->plans_pending++;
    a->node.next = svc->pending_plans;
    svc->pending_plans = &a->node;
    pthread_mutex_unlock(&svc->create_lock);
    a->pending = true;
    a->execs = *execs;
    return 0;
}

static int plan_created(void *ctx, const clr_sandbox_info *info, clr_error *err)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    clr_store_sandbox row;
    memset(&row, 0, sizeof(row));
    row.info = *info;
    snprintf(row.info.state, sizeof(row.info.state), CLR_STATE_PLAN);
    row.max_expires_at = info->max_expires_at;
    row.last_active_at = svc_now_s();
    row.metadata = json_object();
    row.env = json_array();
    pthread_mutex_lock(&svc->create_lock);
    int rc = clr_store_sandbox_insert(svc->store, &row, err);
    plan_unpend_locked(svc, a);
    pthread_mutex_unlock(&svc->create_lock);
    clr_store_sandbox_clear(&row);
    a->recorded = rc == 0;
    if (rc == 0)
        atomic_fetch_add(&svc->created, 1);
    return rc;
}

static void plan_release(void *ctx, const char *id)
{
    struct plan_admission *a = ctx;
    clr_service *svc = a->svc;
    if (a->pending) {
        pthread_mutex_lock(&svc->create_lock);
        plan_unpend_locked(svc, a);
        pthread_mutex_unlock(&svc->create_lock);
    }
    if (a->recorded && id) {
        clr_error lerr = CLR_ERROR_INIT;
        if (clr_store_sandbox_set_state(svc->store, id, CLR_STATE_DESTROYED, "plan-finished",
                                        svc_now_s(), &lerr) < 0)
            clr_log(CLR_LOG_ERROR, "plan.unrecorded_destroy", "id", id, "error", lerr.message,
                    NULL);
        a->recorded = false;
    }
    svc_exec_release(svc, a->node.tenant, a->execs);
    a->execs = 0;
}

int clr_service_plan(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                     clr_service_event_cb on_event, void *ctx, json_t **out, clr_error *err)
{
    return clr_service_plan_cancel(svc, req, tenant, actor, on_event, ctx, NULL, out, err);
}

int clr_service_plan_cancel(clr_service *svc, json_t *req, const char *tenant, const char *actor,
                            clr_service_event_cb on_event, void *ctx, const volatile int *cancel,
                            json_t **out, clr_error *err)
{
    tenant = svc_tenant_or_default(tenant);
    clr_plan *plan = NULL;
    if (svc_parse_plan_request(req, &plan, err) < 0)
        return -1;
    json_t *jrepo = json_object_get(req, "repo"), *jprofile = json_object_get(req, "profile");
    clr_repo_admitted admitted;
    /* The image the sandbox will be made from: the plan's or its profile's, else the daemon's
     * configured one, as for a sandbox made by create (NULL: svc_image_allowed checks that). */
    const char *image = clr_plan_image(plan, json_string_value(jprofile));
    int rc = svc_image_allowed(svc, image, err);
    if (rc == 0)
        rc = clr_repo_admit(&admitted, svc->cfg.repo_roots, json_string_value(jrepo), err);
    if (rc < 0) {
        clr_plan_free(plan);
        return -1;
    }
    struct plan_admission adm_ctx = {.svc = svc};
    snprintf(adm_ctx.node.tenant, sizeof(adm_ctx.node.tenant), "%s", tenant);
    adm_ctx.node.limits = *clr_plan_limits(plan);
    const clr_plan_admission adm = {
        .admit = plan_admit, .created = plan_created, .release = plan_release, .ctx = &adm_ctx};
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    eo.host = svc->docker_host;
    struct plan_events pe = {on_event, ctx};
    clr_plan_run_options ro = {
        .repo_path = admitted.path,
        .repo_id = &admitted.id,
        .profile = json_string_value(jprofile),
        .default_image = svc->image,
        .state_dir = svc->state_dir,
        .insecure_runtime = svc->insecure_runtime,
        .engine = &eo,
        .audit = svc->audit,
        .gauntlet_ref = svc->cfg.gauntlet_ref,
        .verdict_key = svc->verdict_key,
        .actor = actor,
        .on_event = plan_event,
        .ctx = &pe,
        .cancel = cancel,
        .owner = svc->owner,
        .tenant = tenant,
        .admission = &adm,
    };
    rc = clr_plan_run(out, plan, &ro, err);
    clr_plan_free(plan);
    return rc;
}
