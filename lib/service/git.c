/* The workspace as a commit on the sandbox's branch, and its diff: clr_service_commit() and
 * clr_service_diff(); the contract is in include/clearing/service.h. */
#include <stdint.h>
#include <string.h>

#include "clearing/plan.h"

#include "engines.h"
#include "rows.h"
#include "service_int.h"
#include "validate.h"

/* read_only: a lost sandbox too (while its stopped container, which names its repository, is
 * kept). */
static int open_sandbox(clr_service *svc, const char *id, bool read_only, clr_engine **eng,
                        clr_sandbox **sb, clr_error *err)
{
    char dir[4096];
    if ((read_only ? svc_workspace_to_read(svc, id, dir, sizeof(dir), err)
                   : clr_service_workspace(svc, id, dir, sizeof(dir), err)) < 0)
        return -1;
    if (svc_engine_get(svc, eng, err) < 0)
        return -1;
    if (clr_sandbox_open_at(sb, *eng, id, svc->state_dir, err) < 0) {
        svc_engine_put(svc, *eng, true);
        *eng = NULL;
        return -1;
    }
    return 0;
}

/* Text made of the workspace's file names (any bytes but NUL, not always UTF-8), as a JSON
 * string: as it is when it is UTF-8, else with the other bytes written as \xNN
 * (clr_audit_text). A string jansson refuses would leave the answer and its record empty. */
static json_t *names_json(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : clr_audit_text(s, strlen(s), SIZE_MAX);
}

int clr_service_commit(clr_service *svc, const char *id, json_t *req, const char *actor,
                       json_t **out, clr_error *err)
{
    const char *trailers[17] = {NULL};
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    /* Refusals are recorded like the commit's own failures: a bad request, an unknown sandbox
     * (an id that is not one is recorded without it). */
    if (svc_valid_id(id, err) < 0 || svc_parse_commit(req, trailers, err) < 0 ||
        open_sandbox(svc, id, false, &eng, &sb, err) < 0) {
        svc_audit_failure(svc, actor, clr_sandbox_id_valid(id) ? id : NULL, "commit", err);
        return -1;
    }
    json_t *m = json_object_get(req, "message"), *an = json_object_get(req, "author_name"),
           *ae = json_object_get(req, "author_email");
    clr_git_commit_result r;
    memset(&r, 0, sizeof(r));
    /* Fail closed: the record comes after the commit (it names it), so a log that cannot take
     * it refuses the commit before it is made. */
    char why[sizeof(err->message)];
    int rc = clr_audit_writable(svc->audit, why, sizeof(why))
                 ? clr_sandbox_commit(&r, sb, json_string_value(m), json_string_value(an),
                                      json_string_value(ae), trailers, NULL, err)
                 : clr_error_set(err, CLR_E_UNAVAILABLE, 0, "%s", why);
    clr_sandbox_free(sb);
    svc_engine_put(svc, eng, false);
    if (rc < 0) {
        svc_audit_failure(svc, actor, id, "commit", err);
        return -1;
    }
    json_t *skipped = json_array();
    for (size_t k = 0; k < r.n_skipped; k++)
        json_array_append_new(skipped, json_pack("{s:o, s:s}", "path",
                                                 names_json(r.skipped[k].path), "kind",
                                                 r.skipped[k].kind));
    json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:o, s:o}", "commit", r.commit, "branch",
                          r.branch, "changed", r.changed, "files_changed",
                          (json_int_t)r.files_changed, "insertions", (json_int_t)r.insertions,
                          "deletions", (json_int_t)r.deletions, "diffstat",
                          names_json(r.stat_text ? r.stat_text : ""), "skipped", skipped);
    clr_git_commit_result_clear(&r);
    json_t *d = json_deep_copy(o);
    json_object_del(d, "diffstat");
    rc = clr_audit_append(svc->audit, actor, id, "commit", "ok", d, err);
    json_decref(d);
    if (rc < 0) {
        json_decref(o);
        return -1;
    }
    clr_store_sandbox_touch(svc->store, id, svc_now_s(), NULL);
    *out = o;
    return 0;
}

int clr_service_diff(clr_service *svc, const char *id, char **out, clr_error *err)
{
    if (svc_valid_id(id, err) < 0)
        return -1;
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    if (open_sandbox(svc, id, true, &eng, &sb, err) < 0)
        return -1;
    int rc = clr_sandbox_diff(out, sb, err);
    clr_sandbox_free(sb);
    svc_engine_put(svc, eng, false);
    return rc;
}
