/* Plans: execution (see include/clearing/plan.h; parsing is plan_parse.c).
 *
 * Order of trust: the gauntlet definition is read from the base commit in the repository's object
 * database before the sandbox exists (and the workspace is pinned to that commit), so a plan
 * cannot weaken the checks it is judged by by editing .clearing/gauntlet.yaml. Steps that write
 * files go through the files module (confined, no symlink followed); commands run through the
 * agent like any exec.
 *
 * clr_plan_run reads as its phases: judge and admit, create the sandbox, record it, run the
 * steps, run the gauntlet, commit with the verdict, discard an uncommitted branch, destroy. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "clearing/files.h"
#include "clearing/gauntlet.h"
#include "clearing/gitws.h"
#include "clearing/verdict.h"
#include "plan_internal.h"

/* One run of a plan: what it holds, released by run_clear on every return path. */
struct run {
    const clr_plan *plan;
    const clr_plan_run_options *o;
    json_t *report;
    json_t *steps;
    clr_channel *channel; /* with egress: steps run over it, and it carries the proxy */
    clr_egress *egress;
    clr_gauntlet *g;      /* the gauntlet the plan is judged by */
    json_t *gsource;      /* where it came from (load_gauntlet) */
    char gsha[65];        /* the SHA-256 of its text */
    bool admitted;        /* the admission's release is owed */
    clr_engine *eng;
    clr_sandbox *sb;
    const clr_sandbox_info *info; /* sb's */
    int root;             /* the workspace, once open (-1 before) */
    bool steps_ok;        /* every step succeeded */
    const char *verdict;  /* "pass", "fail" or "error" */
};

static void release_admission(struct run *r, const char *id)
{
    const clr_plan_admission *adm = r->o->admission;
    if (r->admitted && adm && adm->release)
        adm->release(adm->ctx, id);
    r->admitted = false;
}

static void run_clear(struct run *r)
{
    if (r->root >= 0)
        close(r->root);
    clr_channel_close(r->channel);
    clr_egress_free(r->egress);
    clr_gauntlet_free(r->g);
    json_decref(r->gsource);
    json_decref(r->steps);
    json_decref(r->report);
    release_admission(r, NULL);
    clr_sandbox_free(r->sb);
    clr_engine_free(r->eng);
}

#define _cleanup_run_ __attribute__((cleanup(run_clear)))

static void emit(struct run *r, json_t *ev)
{
    if (r->o->on_event)
        r->o->on_event(r->o->ctx, ev);
    json_decref(ev);
}

static bool cancelled(const struct run *r)
{
    return r->o->cancel && *r->o->cancel;
}

/* Runs one step; returns true when it succeeded. */
static bool run_step(struct run *r, clr_engine *eng, const clr_sandbox *sb, int root, size_t i)
{
    const struct step *s = &r->plan->steps[i];
    clr_error err = CLR_ERROR_INIT;
    json_t *rec = json_pack("{s:I, s:s}", "index", (json_int_t)i + 1, "type",
                            s->kind == STEP_WRITE ? "write" : s->kind == STEP_DELETE ? "delete"
                                                                                      : "run");
    bool ok = true;
    if (s->kind == STEP_WRITE) {
        json_object_set_new(rec, "path", json_string(s->path));
        ok = clr_files_write(root, s->path, -1, s->content, s->content_len, s->mode, NULL,
                             &err) == 0;
    } else if (s->kind == STEP_DELETE) {
        json_object_set_new(rec, "path", json_string(s->path));
        ok = clr_files_delete(root, s->path, s->recursive, &err) == 0;
    } else {
        clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
        eo.shell = s->shell;
        eo.argv = (const char *const *)s->argv;
        eo.env = (const char *const *)s->env;
        eo.cwd = s->cwd;
        eo.limits.timeout_ms = s->timeout_ms;
        eo.cancel = r->o->cancel;
        eo.channel = r->channel;
        clr_exec_result res;
        json_t *ad = clr_audit_exec_request(&eo);
        ok = clr_audit_append(r->o->audit, r->o->actor, clr_sandbox_get_info(sb)->id,
                              "exec.start", "ok", ad, &err) == 0;
        json_decref(ad);
        if (ok && clr_exec_run(&res, eng, sb, &eo, &err) == 0) {
            bool code_ok = false;
            for (size_t k = 0; k < s->n_expect; k++)
                code_ok |= res.status == CLR_EXEC_EXITED && res.exit_code == s->expect[k];
            ok = code_ok;
            json_object_set_new(rec, "result", clr_exec_result_to_json(&res));
            ad = clr_audit_exec_result(&res);
            if (clr_audit_append(r->o->audit, r->o->actor, clr_sandbox_get_info(sb)->id, "exec",
                                 clr_exec_status_name(res.status), ad, &err) < 0)
                ok = false;
            json_decref(ad);
            if (!code_ok)
                snprintf(err.message, sizeof(err.message), "%s%s%d, expected %d",
                         clr_exec_status_name(res.status),
                         res.status == CLR_EXEC_EXITED ? " with " : " ",
                         res.status == CLR_EXEC_EXITED ? res.exit_code : res.signal, s->expect[0]);
            clr_exec_result_clear(&res);
        } else {
            ok = false;
        }
    }
    json_object_set_new(rec, "status", json_string(ok ? "ok" : "failed"));
    if (!ok)
        json_object_set_new(rec, "error", json_string(err.message));
    json_array_append(r->steps, rec);
    json_t *ev = json_deep_copy(rec);
    json_object_set_new(ev, "event", json_string("step"));
    json_object_del(ev, "result");
    emit(r, ev);
    json_decref(rec);
    return ok;
}

/* The report's summary when a step failed (the gauntlet did not run): names the step. */
static void step_summary(struct run *r)
{
    size_t n = json_array_size(r->steps);
    json_t *last = json_array_get(r->steps, n ? n - 1 : 0);
    if (!last)
        return;
    json_int_t index = json_integer_value(json_object_get(last, "index"));
    const char *type = json_string_value(json_object_get(last, "type"));
    const char *path = json_string_value(json_object_get(last, "path"));
    const char *error = json_string_value(json_object_get(last, "error"));
    json_t *s = json_sprintf("  failed       step %lld (%s%s%s): %s\n"
                             "verdict: FAIL — step %lld failed; later steps and the gauntlet "
                             "did not run\n",
                             (long long)index, type ? type : "?", path ? " " : "",
                             path ? path : "", error ? error : "", (long long)index);
    if (s)
        json_object_set_new(r->report, "summary", s);
}

/* The gauntlet the plan is judged by: .clearing/gauntlet.yaml as of the operator's judging ref
 * (gauntlet_ref; default HEAD, the repository's default branch as it is when the plan starts),
 * else the profile. Never the plan's base: a plan could otherwise name, as its base, a branch
 * an earlier plan committed a lenient gauntlet to. Read from the object database before the
 * sandbox exists, so a malformed one creates nothing; *source describes where it came from
 * (caller frees: json_decref) and *sha256 the hash of its text, for the report and the signed
 * verdict. */
static int load_gauntlet(clr_gauntlet **g, json_t **source, char sha256[65], const char *repo,
                         const clr_git_repo_id *repo_id, const char *judge, const char *profile,
                         clr_error *err)
{
    char *text = NULL;
    size_t len = 0;
    char judge_hex[CLR_GIT_OID_HEX_SIZE];
    int rc = clr_git_read_file(&text, &len, judge_hex, repo, repo_id, judge,
                               ".clearing/gauntlet.yaml", CLR_GAUNTLET_MAX_BYTES, err);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        clr_sha256_hex(sha256, text, len);
        rc = clr_gauntlet_parse(g, text, len, ".clearing/gauntlet.yaml", err);
        free(text);
        if (rc == 0)
            *source = json_pack("{s:s, s:s, s:s, s:s}", "path", ".clearing/gauntlet.yaml", "ref",
                                judge, "commit", judge_hex, "sha256", sha256);
        return rc;
    }
    if (!profile)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the repository's %s has no .clearing/gauntlet.yaml and no profile "
                             "was given (python, python-strict, c)",
                             judge);
    char label[64];
    snprintf(label, sizeof(label), "profile:%s", profile);
    clr_sha256_hex(sha256, label, strlen(label));
    rc = clr_gauntlet_profile(g, profile, err);
    if (rc == 0)
        *source = json_pack("{s:s, s:s}", "profile", profile, "sha256", sha256);
    return rc;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* The trailers a plan's commit carries beyond the sandbox's own: the verdict and everything the
 * signature is to bind (verdict.h): the gauntlet's hash and source, the image's content id
 * (which pins every tool a check ran), the runtime's version, and each check's status.
 * NULL-terminated, the caller's (free_strv). */
static int verdict_trailers(char ***out, const struct run *r, const char *verdict,
                            json_t *gsource, const char *gsha, clr_engine *eng,
                            const clr_sandbox_info *info, clr_error *err)
{
    char image_id[160] = "unknown", runtime[160];
    json_t *c = NULL;
    if (clr_engine_container_inspect(eng, info->container_id, &c, err) < 0)
        return -1;
    const char *img = json_string_value(json_object_get(c, "Image"));
    if (!img || strlen(img) >= sizeof(image_id)) {
        json_decref(c);
        return clr_error_set(err, CLR_E_INTERNAL, 0,
                             "the engine does not say which image the sandbox runs");
    }
    snprintf(image_id, sizeof(image_id), "%s", img);
    json_decref(c);
    if (clr_runtime_version(eng, info->runtime, runtime, sizeof(runtime), err) < 0)
        return clr_error_prefix(err, "the runtime's version for the signed verdict");
    const char *gpath = json_string_value(json_object_get(gsource, "path"));
    char gdesc[256];
    if (gpath)
        snprintf(gdesc, sizeof(gdesc), "%s@%s (%s)", gpath,
                 json_string_value(json_object_get(gsource, "commit")),
                 json_string_value(json_object_get(gsource, "ref")));
    else
        snprintf(gdesc, sizeof(gdesc), "profile:%s",
                 json_string_value(json_object_get(gsource, "profile")));
    json_t *checks = json_object_get(json_object_get(r->report, "gauntlet"), "checks");
    size_t n = 0, cap = 8 + json_array_size(checks);
    char **v = calloc(cap, sizeof(*v));
    if (!v)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    bool ok = asprintf(&v[n++], "Clearing-Verdict: %s", verdict) >= 0 &&
              asprintf(&v[n++], "Clearing-Plan-Steps: %zu", r->plan->n) >= 0 &&
              asprintf(&v[n++], "Clearing-Gauntlet: sha256:%s %s", gsha, gdesc) >= 0 &&
              asprintf(&v[n++], "Clearing-Image-Id: %s", image_id) >= 0 &&
              asprintf(&v[n++], "Clearing-Runtime-Version: %s", runtime) >= 0;
    size_t i;
    json_t *ch;
    json_array_foreach(checks, i, ch) {
        if (!ok)
            break;
        ok = asprintf(&v[n++], "Clearing-Check: %s %s %s",
                      json_string_value(json_object_get(ch, "name")),
                      json_string_value(json_object_get(ch, "status")),
                      json_is_true(json_object_get(ch, "required")) ? "required" : "optional") >= 0;
    }
    if (!ok) {
        if (n)
            v[n - 1] = NULL; /* asprintf left it undefined */
        free_strv(v);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    *out = v;
    return 0;
}

static void on_gauntlet(void *ctx, const char *check, const char *event)
{
    struct run *r = ctx;
    emit(r, json_pack("{s:s, s:s, s:s}", "event", "check", "check", check, "status", event));
}


/* A plan that could not start: recorded, with why. Returns -1. */
static int refused(const clr_plan_run_options *o, const clr_error *err)
{
    json_t *d = json_pack("{s:s}", "error", err->message);
    clr_audit_append(o->audit, o->actor, NULL, "plan", "refused", d, NULL);
    json_decref(d);
    return -1;
}

/* Before anything exists: the gauntlet that judges the plan, and the daemon's admission. */
static int judge_and_admit(struct run *r, const char *repo, const char *profile, clr_error *err)
{
    const clr_plan_run_options *o = r->o;
    const char *judge = o->gauntlet_ref && *o->gauntlet_ref ? o->gauntlet_ref : "HEAD";
    if (load_gauntlet(&r->g, &r->gsource, r->gsha, repo, o->repo_id, judge, profile, err) < 0)
        return refused(o, err);
    /* Counted before anything exists: a daemon's plan is one of its sandboxes and runs at most
     * as many commands at once as it was given room for. */
    const clr_plan_admission *adm = o->admission;
    unsigned execs = clr_gauntlet_parallel(r->g);
    if (execs < 1)
        execs = 1;
    if (adm && adm->admit && adm->admit(adm->ctx, &execs, err) < 0)
        return refused(o, err);
    r->admitted = true;
    if (execs < clr_gauntlet_parallel(r->g))
        clr_gauntlet_set_parallel(r->g, execs);
    return 0;
}

/* The plan's sandbox: on a new branch of repo at the plan's base, with the plan's limits. */
static void sandbox_options(clr_sandbox_options *so, const struct run *r, const char *repo)
{
    const clr_plan *plan = r->plan;
    const clr_plan_run_options *o = r->o;
    so->limits = plan->limits;
    so->owner = o->owner;
    so->tenant = o->tenant;
    so->repo_path = repo;
    so->repo_id = o->repo_id;
    so->base_ref = plan->base; /* NULL: HEAD */
    so->protect_ref = o->gauntlet_ref;
    so->branch = plan->branch;
    so->state_dir = o->state_dir;
    so->insecure_runtime = o->insecure_runtime;
    so->image = clr_plan_image(plan, o->profile);
    if (!so->image)
        so->image = o->default_image; /* NULL: CLR_DEFAULT_IMAGE */
    if (plan->egress && plan->egress->n)
        so->env = clr_egress_proxy_env;
}

/* Creates the sandbox and lets the daemon record it; a sandbox it cannot record is destroyed
 * (with its branch) before anything runs. */
static int create_sandbox(struct run *r, const char *repo, clr_error *err)
{
    const clr_plan_run_options *o = r->o;
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    sandbox_options(&so, r, repo);
    if (clr_engine_open(&r->eng, o->engine, err) < 0)
        return -1;
    if (clr_sandbox_create(&r->sb, r->eng, &so, err) < 0)
        return refused(o, err);
    r->info = clr_sandbox_get_info(r->sb);
    const clr_plan_admission *adm = o->admission;
    if (adm && adm->created && adm->created(adm->ctx, r->info, err) < 0) {
        /* Not recorded: it must not run. */
        char sid[CLR_SANDBOX_ID_MAX + 1];
        snprintf(sid, sizeof(sid), "%s", r->info->id);
        clr_error derr = CLR_ERROR_INIT;
        clr_sandbox_destroy(r->eng, sid, "unrecorded", o->state_dir, &derr);
        clr_git_branch_discard(r->info->repo, &r->info->repo_id, r->info->branch,
                               r->info->base_commit, &derr);
        refused(o, err);
        release_admission(r, sid);
        return -1;
    }
    return 0;
}

/* The report's start, the sandbox's creation in the audit log and, with egress, the live
 * channel that carries the steps and the proxy's connections (decided by the plan's policy and
 * recorded in the plan's audit log). 0, or -1 when the run cannot go on (err). */
static int start_run(struct run *r, clr_error *err)
{
    const clr_sandbox_info *info = r->info;
    r->steps = json_array();
    r->report = json_pack("{s:s, s:s, s:s, s:s}", "sandbox", info->id, "branch", info->branch,
                          "base", info->base_commit, "repo", info->repo);
    json_object_set(r->report, "steps", r->steps);
    json_object_set(r->report, "gauntlet_source", r->gsource);
    emit(r, json_pack("{s:s, s:s, s:s}", "event", "sandbox", "id", info->id, "branch",
                      info->branch));
    json_t *d = clr_audit_sandbox_details(info);
    json_object_set_new(d, "branch", json_string(info->branch));
    json_object_set_new(d, "base", json_string(info->base_commit));
    int arc = clr_audit_append(r->o->audit, r->o->actor, info->id, "sandbox.create", "ok", d, err);
    json_decref(d);
    if (arc == 0 && r->plan->egress && r->plan->egress->n)
        arc = clr_egress_channel_open(&r->channel, &r->egress, r->plan->egress, r->o->audit,
                                      r->eng, r->sb, err);
    return arc;
}

/* The steps in order, stopping at the first that fails or at a cancel. */
static void run_steps(struct run *r, int arc, clr_error *err)
{
    if (arc != 0 || clr_files_open_root(&r->root, clr_sandbox_workspace(r->sb), err) != 0) {
        json_object_set_new(r->report, "error", json_string(err->message));
        return;
    }
    r->steps_ok = true;
    for (size_t i = 0; i < r->plan->n && r->steps_ok; i++) {
        if (cancelled(r)) {
            snprintf(err->message, sizeof(err->message), "cancelled");
            r->steps_ok = false;
            break;
        }
        r->steps_ok = run_step(r, r->eng, r->sb, r->root, i);
    }
    r->verdict = r->steps_ok ? "pass" : "fail";
    if (!r->steps_ok && !cancelled(r))
        step_summary(r);
}

/* The gauntlet, once every step succeeded: its report, summary and verdict. */
static void run_gauntlet(struct run *r, clr_error *err)
{
    clr_gauntlet_report *gr = NULL;
    if (clr_gauntlet_run(&gr, r->g, r->o->engine, r->sb, on_gauntlet, r, err) < 0) {
        r->verdict = "error";
        json_object_set_new(r->report, "error", json_string(err->message));
        return;
    }
    json_object_set_new(r->report, "gauntlet", clr_gauntlet_report_json(gr));
    char *summary = clr_gauntlet_report_summary(gr);
    json_object_set_new(r->report, "summary", json_string(summary ? summary : ""));
    free(summary);
    r->verdict = clr_gauntlet_report_passed(gr) ? "pass" : "fail";
    clr_gauntlet_report_free(gr);
}

/* The commit carries the verdict in its trailers, signed, so a reviewer sees a failing change
 * for what it is. A commit that cannot be made makes the verdict an error. */
static void commit_verdict(struct run *r)
{
    const clr_plan_run_options *o = r->o;
    char **trailers = NULL;
    clr_git_commit_result cr;
    memset(&cr, 0, sizeof(cr));
    clr_error cerr = CLR_ERROR_INIT;
    int crc = verdict_trailers(&trailers, r, r->verdict, r->gsource, r->gsha, r->eng, r->info,
                               &cerr);
    if (crc == 0)
        crc = clr_sandbox_commit(&cr, r->sb,
                                 r->plan->message ? r->plan->message : "Plan executed in clearing",
                                 NULL, NULL, (const char *const *)trailers, o->verdict_key, &cerr);
    free_strv(trailers);
    if (crc < 0) {
        r->verdict = "error";
        json_object_set_new(r->report, "error", json_string(cerr.message));
        return;
    }
    json_object_set_new(r->report, "commit", json_string(cr.commit));
    json_object_set_new(r->report, "signed_by", json_string(clr_verdict_key_id(o->verdict_key)));
    json_object_set_new(r->report, "changed", json_boolean(cr.changed));
    json_object_set_new(r->report, "diffstat", json_string(cr.stat_text ? cr.stat_text : ""));
    json_t *d = json_pack("{s:s, s:s, s:s}", "branch", cr.branch, "commit", cr.commit, "verdict",
                          r->verdict);
    clr_audit_append(o->audit, o->actor, r->info->id, "commit", "ok", d, NULL);
    json_decref(d);
    emit(r, json_pack("{s:s, s:s, s:s}", "event", "commit", "commit", cr.commit, "branch",
                      cr.branch));
    clr_git_commit_result_clear(&cr);
}

/* Nothing committed (an error, a cancel, or a fail without commit_on_failure): the branch this
 * run created at the base is removed again, so a plan leaves a branch only with a commit the
 * reviewer can look at. */
static void discard_uncommitted_branch(struct run *r)
{
    if (json_object_get(r->report, "commit"))
        return;
    const clr_sandbox_info *info = r->info;
    clr_error berr = CLR_ERROR_INIT;
    int brc = clr_git_branch_discard(info->repo, &info->repo_id, info->branch, info->base_commit,
                                     &berr);
    json_object_set_new(r->report, "branch_removed", json_boolean(brc == 1));
    if (brc < 0)
        clr_log(CLR_LOG_WARN, "plan.branch_kept", "branch", info->branch, "error", berr.message,
                NULL);
}

/* The sandbox destroyed (in every case) and recorded, the admission released, the verdict in
 * the report and the audit log. */
static void finish(struct run *r)
{
    const clr_plan_run_options *o = r->o;
    if (r->root >= 0)
        close(r->root);
    r->root = -1;
    clr_gauntlet_free(steal_pointer(&r->g));
    json_decref(steal_pointer(&r->gsource));
    clr_channel_close(steal_pointer(&r->channel));
    clr_egress_free(steal_pointer(&r->egress));
    char sid[CLR_SANDBOX_ID_MAX + 1];
    snprintf(sid, sizeof(sid), "%s", r->info->id);
    clr_error derr = CLR_ERROR_INIT;
    int drc = clr_sandbox_destroy(r->eng, sid, "plan-finished", o->state_dir, &derr);
    json_t *d = json_pack("{s:s}", "reason", "plan-finished");
    clr_audit_append(o->audit, o->actor, sid, "sandbox.destroy", drc == 0 ? "ok" : "error", d,
                     NULL);
    json_decref(d);
    release_admission(r, sid);
    json_object_set_new(r->report, "verdict", json_string(r->verdict));
    d = json_pack("{s:s, s:O}", "verdict", r->verdict, "branch",
                  json_object_get(r->report, "branch"));
    clr_audit_append(o->audit, o->actor, sid, "plan", r->verdict, d, NULL);
    json_decref(d);
    emit(r, json_pack("{s:s, s:s}", "event", "done", "verdict", r->verdict));
}

int clr_plan_run(json_t **report, const clr_plan *plan, const clr_plan_run_options *o,
                 clr_error *err)
{
    const char *repo = o->repo_path ? o->repo_path : plan->repo;
    const char *profile = o->profile ? o->profile : plan->profile;
    if (!repo)
        return clr_error_set(err, CLR_E_INVALID, 0, "the plan names no repository: give --repo");
    if (!o->audit)
        return clr_error_set(err, CLR_E_INVALID, 0, "plans do not run unaudited");
    if (!o->verdict_key)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "plans do not run without a key to sign their verdict");
    _cleanup_run_ struct run r = {.plan = plan, .o = o, .root = -1, .verdict = "error"};
    if (judge_and_admit(&r, repo, profile, err) < 0 || create_sandbox(&r, repo, err) < 0)
        return -1;
    int arc = start_run(&r, err);
    run_steps(&r, arc, err);
    if (r.steps_ok && !cancelled(&r))
        run_gauntlet(&r, err);
    /* An interrupted plan has no verdict: its steps or checks were cut short, not failed. */
    if (cancelled(&r)) {
        r.verdict = "error";
        json_object_set_new(
            r.report, "error",
            json_string("cancelled: the plan was interrupted; nothing was committed"));
    }
    if (!cancelled(&r) && r.root >= 0 &&
        (!strcmp(r.verdict, "pass") || (plan->commit_on_failure && strcmp(r.verdict, "error"))))
        commit_verdict(&r);
    discard_uncommitted_branch(&r);
    finish(&r);
    *report = steal_pointer(&r.report);
    return 0;
}
