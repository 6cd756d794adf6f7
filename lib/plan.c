/* Plans: parsing and execution (see include/clearing/plan.h).
 *
 * Order of trust: the gauntlet definition is read from the base commit in the repository's object
 * database before the sandbox exists (and the workspace is pinned to that commit), so a plan
 * cannot weaken the checks it is judged by by editing .clearing/gauntlet.yaml. Steps that write
 * files go through the files module (confined, no symlink followed); commands run through the
 * agent like any exec. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "clearing/files.h"
#include "clearing/gauntlet.h"
#include "clearing/gitws.h"
#include "clearing/plan.h"
#include "clearing/verdict.h"
#include "internal.h"
#include "yamlx.h"

enum step_kind { STEP_WRITE, STEP_DELETE, STEP_RUN };

struct step {
    enum step_kind kind;
    char *path;
    uint8_t *content;
    size_t content_len;
    uint32_t mode;
    bool recursive;
    char *shell;
    char **argv;
    char **env;
    char *cwd;
    uint32_t timeout_ms;
    int expect[16];
    size_t n_expect;
};

struct clr_plan {
    char *repo, *base, *branch, *profile, *image, *message;
    bool commit_on_failure;
    clr_egress_policy *egress; /* NULL: no outbound connection at all */
    clr_limits limits;
    struct step *steps;
    size_t n;
};

static void step_clear(struct step *s)
{
    free(s->path);
    free(s->content);
    free(s->shell);
    clr_strv_free(s->argv);
    clr_strv_free(s->env);
    free(s->cwd);
}

void clr_plan_free(clr_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        step_clear(&p->steps[i]);
    free(p->steps);
    free(p->repo);
    free(p->base);
    free(p->branch);
    free(p->profile);
    free(p->image);
    free(p->message);
    clr_egress_policy_free(p->egress);
    free(p);
}

static int b64decode(const char *in, size_t n, uint8_t **out, size_t *len)
{
    if (n % 4)
        return -1;
    uint8_t *buf = malloc(n / 4 * 3 + 1);
    if (!buf)
        return -1;
    int m = n ? EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n) : 0;
    if (m < 0) {
        free(buf);
        return -1;
    }
    if (n >= 1 && in[n - 1] == '=')
        m--;
    if (n >= 2 && in[n - 2] == '=')
        m--;
    *out = buf;
    *len = (size_t)m;
    return 0;
}

static int parse_step(clr_yaml *y, struct step *s, yaml_node_t *n)
{
    memset(s, 0, sizeof(*s));
    s->mode = 0644;
    s->timeout_ms = 600000;
    if (!n || n->type != YAML_MAPPING_NODE ||
        n->data.mapping.pairs.top - n->data.mapping.pairs.start != 1)
        return clr_yaml_error(y, n, "a step is a mapping with one key: write, delete or run");
    yaml_node_pair_t *pr = n->data.mapping.pairs.start;
    const char *kind = clr_yaml_scalar(clr_yaml_node(y, pr->key));
    yaml_node_t *m = clr_yaml_node(y, pr->value);
    if (!kind || !m || m->type != YAML_MAPPING_NODE)
        return clr_yaml_error(y, n, "a step is write:, delete: or run: with a mapping");
    if (!strcmp(kind, "write"))
        s->kind = STEP_WRITE;
    else if (!strcmp(kind, "delete"))
        s->kind = STEP_DELETE;
    else if (!strcmp(kind, "run"))
        s->kind = STEP_RUN;
    else
        return clr_yaml_error(y, n, "unknown step '%.32s' (write, delete, run)", kind);
    bool has_content = false;
    for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++) {
        yaml_node_t *k = clr_yaml_node(y, q->key), *v = clr_yaml_node(y, q->value);
        const char *key = clr_yaml_scalar(k);
        double d;
        clr_error e2 = CLR_ERROR_INIT;
        uint64_t ms;
        if (!key || !v)
            return clr_yaml_error(y, k, "step keys must be strings");
        /* A second content would replace (and leak) the first: which one was meant is unclear. */
        if (has_content && (!strcmp(key, "content") || !strcmp(key, "content_base64")))
            return clr_yaml_error(y, k, "write step: give content or content_base64, once");
        if (!strcmp(key, "path") && s->kind != STEP_RUN) {
            if (clr_yaml_string(y, v, "path", &s->path) < 0)
                return -1;
            if (clr_files_check_path(s->path, &e2) < 0 || !s->path[0])
                return clr_yaml_error(y, v, "path: %s", e2.message[0] ? e2.message : "empty");
        } else if (!strcmp(key, "content") && s->kind == STEP_WRITE) {
            const char *c = clr_yaml_scalar(v);
            if (!c)
                return clr_yaml_error(y, v, "content must be a string");
            s->content_len = v->data.scalar.length;
            s->content = malloc(s->content_len + 1);
            if (!s->content)
                return clr_yaml_error(y, v, "out of memory");
            memcpy(s->content, c, s->content_len);
            has_content = true;
        } else if (!strcmp(key, "content_base64") && s->kind == STEP_WRITE) {
            const char *c = clr_yaml_scalar(v);
            if (!c || b64decode(c, v->data.scalar.length, &s->content, &s->content_len) < 0)
                return clr_yaml_error(y, v, "content_base64 must be base64");
            has_content = true;
        } else if (!strcmp(key, "mode") && s->kind == STEP_WRITE) {
            const char *c = clr_yaml_scalar(v);
            char *end = NULL;
            unsigned long md = c ? strtoul(c, &end, 8) : 0;
            if (!c || !*c || *end || md > 0777)
                return clr_yaml_error(y, v, "mode must be octal such as \"0644\"");
            s->mode = (uint32_t)md;
        } else if (!strcmp(key, "recursive") && s->kind == STEP_DELETE) {
            if (clr_yaml_bool(y, v, "recursive", &s->recursive) < 0)
                return -1;
        } else if (!strcmp(key, "shell") && s->kind == STEP_RUN) {
            if (clr_yaml_string(y, v, "shell", &s->shell) < 0)
                return -1;
        } else if (!strcmp(key, "argv") && s->kind == STEP_RUN) {
            if (clr_yaml_strv(y, v, "argv", &s->argv) < 0)
                return -1;
        } else if (!strcmp(key, "env") && s->kind == STEP_RUN) {
            if (clr_yaml_env(y, v, "env", &s->env) < 0)
                return -1;
        } else if (!strcmp(key, "cwd") && s->kind == STEP_RUN) {
            if (clr_yaml_string(y, v, "cwd", &s->cwd) < 0)
                return -1;
            if (s->cwd[0] != '/')
                return clr_yaml_error(y, v, "cwd must be absolute");
        } else if (!strcmp(key, "timeout") && s->kind == STEP_RUN) {
            if (!clr_yaml_scalar(v) || clr_parse_duration_ms(&ms, clr_yaml_scalar(v), &e2) < 0 ||
                ms == 0 || ms > 24ull * 3600 * 1000)
                return clr_yaml_error(y, v, "timeout must be a duration from 1ms to 24h");
            s->timeout_ms = (uint32_t)ms;
        } else if (!strcmp(key, "expect_exit") && s->kind == STEP_RUN) {
            if (v->type != YAML_SEQUENCE_NODE)
                return clr_yaml_error(y, v, "expect_exit must be a list of exit codes");
            size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            if (cnt == 0 || cnt > 16)
                return clr_yaml_error(y, v, "expect_exit has 1 to 16 codes");
            for (size_t i = 0; i < cnt; i++) {
                if (clr_yaml_number(y, clr_yaml_node(y, v->data.sequence.items.start[i]),
                                    "exit code", 0, 255, &d) < 0)
                    return -1;
                s->expect[i] = (int)d;
            }
            s->n_expect = cnt;
        } else {
            return clr_yaml_error(y, k, "%s step: unknown key '%.64s'", kind, key);
        }
    }
    if (s->kind != STEP_RUN && !s->path)
        return clr_yaml_error(y, n, "%s step needs a path", kind);
    if (s->kind == STEP_WRITE && !has_content)
        return clr_yaml_error(y, n, "write step needs content or content_base64");
    if (s->kind == STEP_RUN && !!s->shell == !!s->argv)
        return clr_yaml_error(y, n, "run step needs exactly one of shell and argv");
    if (s->kind == STEP_RUN && !s->n_expect) {
        s->expect[0] = 0;
        s->n_expect = 1;
    }
    return 0;
}

static int parse_limits(clr_yaml *y, clr_limits *l, yaml_node_t *m)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return clr_yaml_error(y, m, "limits must be a mapping");
    for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++) {
        yaml_node_t *k = clr_yaml_node(y, q->key), *v = clr_yaml_node(y, q->value);
        const char *key = clr_yaml_scalar(k), *val = clr_yaml_scalar(v);
        clr_error e2 = CLR_ERROR_INIT;
        uint64_t n = 0;
        int rc = -1;
        if (!key || !val)
            return clr_yaml_error(y, k, "limits: keys and values are strings or numbers");
        if (!strcmp(key, "cpus"))
            rc = clr_parse_cpus(&l->cpu_millis, val, &e2);
        else if (!strcmp(key, "memory"))
            rc = clr_parse_size(&l->memory_bytes, val, &e2);
        else if (!strcmp(key, "pids") && (rc = clr_parse_uint(&n, val, &e2)) == 0)
            l->pids = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        else if (!strcmp(key, "lifetime") && (rc = clr_parse_duration_ms(&n, val, &e2)) == 0)
            l->lifetime_s = (uint32_t)(n / 1000 > UINT32_MAX ? UINT32_MAX : n / 1000);
        else if (!strcmp(key, "tmp_size"))
            rc = clr_parse_size(&l->tmp_bytes, val, &e2);
        else if (!strcmp(key, "workspace_size"))
            rc = clr_parse_size(&l->workspace_bytes, val, &e2);
        else if (strcmp(key, "pids") && strcmp(key, "lifetime"))
            return clr_yaml_error(y, k, "limits: unknown key '%.64s'", key);
        if (rc < 0)
            return clr_yaml_error(y, v, "limits.%s: %s", key, e2.message);
    }
    clr_error e3 = CLR_ERROR_INIT;
    if (clr_limits_validate(l, &e3) < 0)
        return clr_yaml_error(y, m, "%s", e3.message);
    return 0;
}

/* egress: a list of HOST[:PORT] rules (see clr_egress_policy_parse). */
static int parse_egress(clr_yaml *y, clr_egress_policy **out, yaml_node_t *v)
{
    /* A repeated key replaces the earlier one, as for every other plan key. */
    clr_egress_policy_free(*out);
    *out = NULL;
    char **rules = NULL;
    if (clr_yaml_strv(y, v, "egress", &rules) < 0)
        return -1;
    json_t *allow = json_array();
    for (char **r = rules; r && *r; r++)
        json_array_append_new(allow, json_string(*r));
    clr_strv_free(rules);
    json_t *j = json_pack("{s:o}", "allow", allow);
    clr_error e2 = CLR_ERROR_INIT;
    int rc = clr_egress_policy_parse(out, j, &e2);
    json_decref(j);
    return rc < 0 ? clr_yaml_error(y, v, "%s", e2.message) : 0;
}

int clr_plan_parse(clr_plan **out, const char *text, size_t len, const char *source,
                   clr_error *err)
{
    if (len > CLR_PLAN_MAX_BYTES)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s is larger than %d bytes", source,
                             CLR_PLAN_MAX_BYTES);
    clr_yaml y;
    if (clr_yaml_load(&y, text, len, source, err) < 0)
        return -1;
    clr_plan *p = calloc(1, sizeof(*p));
    int rc = -1;
    if (!p) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    clr_limits l = CLR_LIMITS_INIT;
    p->limits = l;
    p->commit_on_failure = true;
    yaml_node_t *root = yaml_document_get_root_node(&y.doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        clr_yaml_error(&y, root, "a plan is a mapping with a 'steps' list");
        goto out;
    }
    yaml_node_t *steps = NULL;
    for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < root->data.mapping.pairs.top;
         q++) {
        yaml_node_t *k = clr_yaml_node(&y, q->key), *v = clr_yaml_node(&y, q->value);
        const char *key = clr_yaml_scalar(k);
        int r = 0;
        if (!key || !v) {
            clr_yaml_error(&y, k, "plan keys must be strings");
            goto out;
        }
        if (!strcmp(key, "steps"))
            steps = v;
        else if (!strcmp(key, "repo"))
            r = clr_yaml_string(&y, v, "repo", &p->repo);
        else if (!strcmp(key, "base"))
            r = clr_yaml_string(&y, v, "base", &p->base);
        else if (!strcmp(key, "branch"))
            r = clr_yaml_string(&y, v, "branch", &p->branch);
        else if (!strcmp(key, "profile"))
            r = clr_yaml_string(&y, v, "profile", &p->profile);
        else if (!strcmp(key, "image"))
            r = clr_yaml_string(&y, v, "image", &p->image);
        else if (!strcmp(key, "message"))
            r = clr_yaml_string(&y, v, "message", &p->message);
        else if (!strcmp(key, "commit_on_failure"))
            r = clr_yaml_bool(&y, v, "commit_on_failure", &p->commit_on_failure);
        else if (!strcmp(key, "limits"))
            r = parse_limits(&y, &p->limits, v);
        else if (!strcmp(key, "egress"))
            r = parse_egress(&y, &p->egress, v);
        else
            r = clr_yaml_error(&y, k, "unknown key '%.64s'", key);
        if (r < 0)
            goto out;
    }
    if (!steps || steps->type != YAML_SEQUENCE_NODE) {
        clr_yaml_error(&y, steps ? steps : root, "'steps' must be a list");
        goto out;
    }
    size_t n = (size_t)(steps->data.sequence.items.top - steps->data.sequence.items.start);
    if (n > CLR_PLAN_MAX_STEPS) {
        clr_yaml_error(&y, steps, "a plan has at most %d steps", CLR_PLAN_MAX_STEPS);
        goto out;
    }
    p->steps = calloc(n ? n : 1, sizeof(struct step));
    if (!p->steps) {
        clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        p->n = i + 1;
        yaml_node_t *sn = clr_yaml_node(&y, steps->data.sequence.items.start[i]);
        if (!sn) {
            clr_error_set(err, CLR_E_LIMIT, 0, "%s: too many nodes (aliases?)", source);
            goto out;
        }
        if (parse_step(&y, &p->steps[i], sn) < 0)
            goto out;
    }
    rc = 0;
out:
    clr_yaml_free(&y);
    if (rc < 0) {
        clr_plan_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* ---- execution ---- */

struct run {
    const clr_plan *plan;
    const clr_plan_run_options *o;
    json_t *report;
    json_t *steps;
    clr_channel *channel; /* with egress: steps run over it, and it carries the proxy */
};

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
                             "was given (python, c)",
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
    char path[128];
    snprintf(path, sizeof(path), "/containers/%s/json", info->container_id);
    json_t *c = NULL;
    int st = clr_engine_call(eng, "GET", path, NULL, &c, err);
    const char *img = json_string_value(json_object_get(c, "Image"));
    if (st != 200 || !img || strlen(img) >= sizeof(image_id)) {
        json_decref(c);
        return st < 0 || st >= 400 ? -1
                                   : clr_error_set(err, CLR_E_INTERNAL, 0,
                                                   "the engine does not say which image the "
                                                   "sandbox runs");
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

const clr_limits *clr_plan_limits(const clr_plan *plan)
{
    return &plan->limits;
}

const char *clr_plan_image(const clr_plan *plan, const char *profile)
{
    if (!profile)
        profile = plan->profile;
    return plan->image ? plan->image : profile ? clr_gauntlet_profile_image(profile) : NULL;
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
    clr_gauntlet *g = NULL;
    json_t *gsource = NULL;
    char gsha[65];
    const char *judge = o->gauntlet_ref && *o->gauntlet_ref ? o->gauntlet_ref : "HEAD";
    if (load_gauntlet(&g, &gsource, gsha, repo, o->repo_id, judge, profile, err) < 0) {
        json_t *d = json_pack("{s:s}", "error", err->message);
        clr_audit_append(o->audit, o->actor, NULL, "plan", "refused", d, NULL);
        json_decref(d);
        return -1;
    }
    /* Counted before anything exists: a daemon's plan is one of its sandboxes and runs at most
     * as many commands at once as it was given room for. */
    const clr_plan_admission *adm = o->admission;
    unsigned execs = clr_gauntlet_parallel(g);
    if (execs < 1)
        execs = 1;
    if (adm && adm->admit && adm->admit(adm->ctx, &execs, err) < 0) {
        json_t *d = json_pack("{s:s}", "error", err->message);
        clr_audit_append(o->audit, o->actor, NULL, "plan", "refused", d, NULL);
        json_decref(d);
        clr_gauntlet_free(g);
        json_decref(gsource);
        return -1;
    }
    if (execs < clr_gauntlet_parallel(g))
        clr_gauntlet_set_parallel(g, execs);
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    so.limits = plan->limits;
    so.owner = o->owner;
    so.tenant = o->tenant;
    so.repo_path = repo;
    so.repo_id = o->repo_id;
    so.base_ref = plan->base; /* NULL: HEAD */
    so.protect_ref = o->gauntlet_ref;
    so.branch = plan->branch;
    so.state_dir = o->state_dir;
    so.insecure_runtime = o->insecure_runtime;
    so.image = clr_plan_image(plan, o->profile);
    if (plan->egress && plan->egress->n)
        so.env = clr_egress_proxy_env;
    clr_engine *eng = NULL;
    clr_sandbox *sb = NULL;
    if (clr_engine_open(&eng, o->engine, err) < 0) {
        if (adm && adm->release)
            adm->release(adm->ctx, NULL);
        clr_gauntlet_free(g);
        json_decref(gsource);
        return -1;
    }
    if (clr_sandbox_create(&sb, eng, &so, err) < 0) {
        json_t *d = json_pack("{s:s}", "error", err->message);
        clr_audit_append(o->audit, o->actor, NULL, "plan", "refused", d, NULL);
        json_decref(d);
        if (adm && adm->release)
            adm->release(adm->ctx, NULL);
        clr_engine_free(eng);
        clr_gauntlet_free(g);
        json_decref(gsource);
        return -1;
    }
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    if (adm && adm->created && adm->created(adm->ctx, info, err) < 0) {
        /* Not recorded: it must not run. */
        char sid[CLR_SANDBOX_ID_MAX + 1];
        snprintf(sid, sizeof(sid), "%s", info->id);
        clr_error derr = CLR_ERROR_INIT;
        clr_sandbox_destroy(eng, sid, "unrecorded", o->state_dir, &derr);
        clr_git_branch_discard(info->repo, &info->repo_id, info->branch, info->base_commit,
                               &derr);
        json_t *d = json_pack("{s:s}", "error", err->message);
        clr_audit_append(o->audit, o->actor, NULL, "plan", "refused", d, NULL);
        json_decref(d);
        if (adm->release)
            adm->release(adm->ctx, sid);
        clr_sandbox_free(sb);
        clr_engine_free(eng);
        clr_gauntlet_free(g);
        json_decref(gsource);
        return -1;
    }
    struct run r = {.plan = plan, .o = o, .steps = json_array()};
    r.report = json_pack("{s:s, s:s, s:s, s:s}", "sandbox", info->id, "branch", info->branch,
                         "base", info->base_commit, "repo", info->repo);
    json_object_set(r.report, "steps", r.steps);
    json_object_set(r.report, "gauntlet_source", gsource);
    emit(&r, json_pack("{s:s, s:s, s:s}", "event", "sandbox", "id", info->id, "branch",
                       info->branch));
    json_t *d = clr_audit_sandbox_details(info);
    json_object_set_new(d, "branch", json_string(info->branch));
    json_object_set_new(d, "base", json_string(info->base_commit));
    int arc = clr_audit_append(o->audit, o->actor, info->id, "sandbox.create", "ok", d, err);
    json_decref(d);

    /* Egress: the live channel carries the steps and the proxy's connections, decided by the
     * plan's policy and recorded in the plan's audit log. */
    clr_egress *egress = NULL;
    if (arc == 0 && plan->egress && plan->egress->n)
        arc = clr_egress_channel_open(&r.channel, &egress, plan->egress, o->audit, eng, sb, err);
    const char *verdict = "error";
    int root = -1;
    bool steps_ok = false;
    if (arc == 0 && clr_files_open_root(&root, clr_sandbox_workspace(sb), err) == 0) {
        steps_ok = true;
        for (size_t i = 0; i < plan->n && steps_ok; i++) {
            if (cancelled(&r)) {
                snprintf(err->message, sizeof(err->message), "cancelled");
                steps_ok = false;
                break;
            }
            steps_ok = run_step(&r, eng, sb, root, i);
        }
        verdict = steps_ok ? "pass" : "fail";
        if (!steps_ok && !cancelled(&r))
            step_summary(&r);
    } else {
        json_object_set_new(r.report, "error", json_string(err->message));
    }
    if (steps_ok && !cancelled(&r)) {
        clr_gauntlet_report *gr = NULL;
        if (clr_gauntlet_run(&gr, g, o->engine, sb, on_gauntlet, &r, err) == 0) {
            json_object_set_new(r.report, "gauntlet", clr_gauntlet_report_json(gr));
            char *summary = clr_gauntlet_report_summary(gr);
            json_object_set_new(r.report, "summary", json_string(summary ? summary : ""));
            free(summary);
            verdict = clr_gauntlet_report_passed(gr) ? "pass" : "fail";
            clr_gauntlet_report_free(gr);
        } else {
            verdict = "error";
            json_object_set_new(r.report, "error", json_string(err->message));
        }
    }
    /* An interrupted plan has no verdict: its steps or checks were cut short, not failed. */
    if (cancelled(&r)) {
        verdict = "error";
        json_object_set_new(r.report, "error",
                            json_string("cancelled: the plan was interrupted; nothing was committed"));
    }
    /* The commit carries the verdict, so a reviewer sees a failing change for what it is. */
    bool commit = !cancelled(&r) && root >= 0 &&
                  (!strcmp(verdict, "pass") || (plan->commit_on_failure && strcmp(verdict, "error")));
    if (commit) {
        char **trailers = NULL;
        clr_git_commit_result cr;
        memset(&cr, 0, sizeof(cr));
        clr_error cerr = CLR_ERROR_INIT;
        int crc = verdict_trailers(&trailers, &r, verdict, gsource, gsha, eng, info, &cerr);
        if (crc == 0)
            crc = clr_sandbox_commit(&cr, sb,
                                     plan->message ? plan->message : "Plan executed in clearing",
                                     NULL, NULL, (const char *const *)trailers, o->verdict_key,
                                     &cerr);
        free_strv(trailers);
        if (crc == 0) {
            json_object_set_new(r.report, "commit", json_string(cr.commit));
            json_object_set_new(r.report, "signed_by", json_string(clr_verdict_key_id(o->verdict_key)));
            json_object_set_new(r.report, "changed", json_boolean(cr.changed));
            json_object_set_new(r.report, "diffstat", json_string(cr.stat_text ? cr.stat_text : ""));
            d = json_pack("{s:s, s:s, s:s}", "branch", cr.branch, "commit", cr.commit, "verdict",
                          verdict);
            clr_audit_append(o->audit, o->actor, info->id, "commit", "ok", d, NULL);
            json_decref(d);
            emit(&r, json_pack("{s:s, s:s, s:s}", "event", "commit", "commit", cr.commit,
                               "branch", cr.branch));
            clr_git_commit_result_clear(&cr);
        } else {
            verdict = "error";
            json_object_set_new(r.report, "error", json_string(cerr.message));
        }
    }
    /* Nothing committed (an error, a cancel, or a fail without commit_on_failure): the branch
     * this run created at the base is removed again, so a plan leaves a branch only with a
     * commit the reviewer can look at. */
    if (!json_object_get(r.report, "commit")) {
        clr_error berr = CLR_ERROR_INIT;
        int brc = clr_git_branch_discard(info->repo, &info->repo_id, info->branch,
                                         info->base_commit, &berr);
        json_object_set_new(r.report, "branch_removed", json_boolean(brc == 1));
        if (brc < 0)
            clr_log(CLR_LOG_WARN, "plan.branch_kept", "branch", info->branch, "error",
                    berr.message, NULL);
    }
    if (root >= 0)
        close(root);
    clr_gauntlet_free(g);
    json_decref(gsource);
    clr_channel_close(r.channel);
    clr_egress_free(egress);
    /* Destroyed in every case. */
    char sid[CLR_SANDBOX_ID_MAX + 1];
    snprintf(sid, sizeof(sid), "%s", info->id);
    clr_error derr = CLR_ERROR_INIT;
    int drc = clr_sandbox_destroy(eng, sid, "plan-finished", o->state_dir, &derr);
    d = json_pack("{s:s}", "reason", "plan-finished");
    clr_audit_append(o->audit, o->actor, sid, "sandbox.destroy", drc == 0 ? "ok" : "error", d,
                     NULL);
    json_decref(d);
    if (adm && adm->release)
        adm->release(adm->ctx, sid);
    json_object_set_new(r.report, "verdict", json_string(verdict));
    d = json_pack("{s:s, s:O}", "verdict", verdict, "branch", json_object_get(r.report, "branch"));
    clr_audit_append(o->audit, o->actor, sid, "plan", verdict, d, NULL);
    json_decref(d);
    emit(&r, json_pack("{s:s, s:s}", "event", "done", "verdict", verdict));
    json_decref(r.steps);
    clr_sandbox_free(sb);
    clr_engine_free(eng);
    *report = r.report;
    return 0;
}
