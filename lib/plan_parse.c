/* Plans as the caller gives them (see include/clearing/plan.h): YAML or JSON, from the API's
 * POST /v1/plans or `clearing plan run`. Parsing ends with a plan or an error that names the
 * line, within bounded work (yamlx.h); paths are checked as the files module checks them. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "clearing/files.h"
#include "clearing/gauntlet.h"
#include "plan_internal.h"
#include "yamlx.h"

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

/* The step's kind from its one key (write, delete or run) and the mapping under it; the
 * defaults of every kind. */
static int step_kind(clr_yaml *y, struct step *s, yaml_node_t *n, const char **kind,
                     yaml_node_t **body)
{
    memset(s, 0, sizeof(*s));
    s->mode = CLR_PLAN_STEP_DEFAULT_MODE;
    s->timeout_ms = CLR_PLAN_STEP_DEFAULT_TIMEOUT_MS;
    if (!n || n->type != YAML_MAPPING_NODE ||
        n->data.mapping.pairs.top - n->data.mapping.pairs.start != 1)
        return clr_yaml_error(y, n, "a step is a mapping with one key: write, delete or run");
    yaml_node_pair_t *pr = n->data.mapping.pairs.start;
    *kind = clr_yaml_scalar(clr_yaml_node(y, pr->key));
    *body = clr_yaml_node(y, pr->value);
    if (!*kind || !*body || (*body)->type != YAML_MAPPING_NODE)
        return clr_yaml_error(y, n, "a step is write:, delete: or run: with a mapping");
    if (!strcmp(*kind, "write"))
        s->kind = STEP_WRITE;
    else if (!strcmp(*kind, "delete"))
        s->kind = STEP_DELETE;
    else if (!strcmp(*kind, "run"))
        s->kind = STEP_RUN;
    else
        return clr_yaml_error(y, n, "unknown step '%.32s' (write, delete, run)", *kind);
    return 0;
}

/* write: content (a string, taken byte for byte) or content_base64. */
static int parse_content(clr_yaml *y, struct step *s, const char *key, yaml_node_t *v)
{
    const char *c = clr_yaml_scalar(v);
    if (!strcmp(key, "content_base64")) {
        if (!c || b64decode(c, v->data.scalar.length, &s->content, &s->content_len) < 0)
            return clr_yaml_error(y, v, "content_base64 must be base64");
        return 0;
    }
    if (!c)
        return clr_yaml_error(y, v, "content must be a string");
    s->content_len = v->data.scalar.length;
    s->content = malloc(s->content_len + 1);
    if (!s->content)
        return clr_yaml_error(y, v, "out of memory");
    memcpy(s->content, c, s->content_len);
    return 0;
}

/* write: mode, octal up to 0777. */
static int parse_mode(clr_yaml *y, struct step *s, yaml_node_t *v)
{
    const char *c = clr_yaml_scalar(v);
    char *end = NULL;
    unsigned long md = c ? strtoul(c, &end, 8) : 0;
    if (!c || !*c || *end || md > 0777)
        return clr_yaml_error(y, v, "mode must be octal such as \"0644\"");
    s->mode = (uint32_t)md;
    return 0;
}

/* run: timeout, a duration from 1 ms to 24 h. */
static int parse_timeout(clr_yaml *y, struct step *s, yaml_node_t *v)
{
    clr_error e2 = CLR_ERROR_INIT;
    uint64_t ms;
    if (!clr_yaml_scalar(v) || clr_parse_duration_ms(&ms, clr_yaml_scalar(v), &e2) < 0 ||
        ms == 0 || ms > 24ull * 3600 * 1000)
        return clr_yaml_error(y, v, "timeout must be a duration from 1ms to 24h");
    s->timeout_ms = (uint32_t)ms;
    return 0;
}

/* run: expect_exit, 1 to 16 exit codes. */
static int parse_expect(clr_yaml *y, struct step *s, yaml_node_t *v)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return clr_yaml_error(y, v, "expect_exit must be a list of exit codes");
    size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (cnt == 0 || cnt > CLR_PLAN_STEP_MAX_EXPECT)
        return clr_yaml_error(y, v, "expect_exit has 1 to 16 codes");
    for (size_t i = 0; i < cnt; i++) {
        double d;
        if (clr_yaml_number(y, clr_yaml_node(y, v->data.sequence.items.start[i]), "exit code", 0,
                            255, &d) < 0)
            return -1;
        s->expect[i] = (int)d;
    }
    s->n_expect = cnt;
    return 0;
}

/* One key of a step's mapping: 0, -1 (err), or 1 when the key is not one of this kind's. */
static int parse_step_key(clr_yaml *y, struct step *s, const char *key, yaml_node_t *v)
{
    clr_error e2 = CLR_ERROR_INIT;
    if (!strcmp(key, "path") && s->kind != STEP_RUN) {
        if (clr_yaml_string(y, v, "path", &s->path) < 0)
            return -1;
        if (clr_files_check_path(s->path, &e2) < 0 || !s->path[0])
            return clr_yaml_error(y, v, "path: %s", e2.message[0] ? e2.message : "empty");
        return 0;
    }
    if ((!strcmp(key, "content") || !strcmp(key, "content_base64")) && s->kind == STEP_WRITE)
        return parse_content(y, s, key, v);
    if (!strcmp(key, "mode") && s->kind == STEP_WRITE)
        return parse_mode(y, s, v);
    if (!strcmp(key, "recursive") && s->kind == STEP_DELETE)
        return clr_yaml_bool(y, v, "recursive", &s->recursive);
    if (s->kind != STEP_RUN)
        return 1;
    if (!strcmp(key, "shell"))
        return clr_yaml_string(y, v, "shell", &s->shell);
    if (!strcmp(key, "argv"))
        return clr_yaml_strv(y, v, "argv", &s->argv);
    if (!strcmp(key, "env"))
        return clr_yaml_env(y, v, "env", &s->env);
    if (!strcmp(key, "cwd")) {
        if (clr_yaml_string(y, v, "cwd", &s->cwd) < 0)
            return -1;
        return s->cwd[0] == '/' ? 0 : clr_yaml_error(y, v, "cwd must be absolute");
    }
    if (!strcmp(key, "timeout"))
        return parse_timeout(y, s, v);
    if (!strcmp(key, "expect_exit"))
        return parse_expect(y, s, v);
    return 1;
}

/* What a step of its kind must have, once all its keys are read. */
static int step_complete(clr_yaml *y, struct step *s, yaml_node_t *n, const char *kind)
{
    if (s->kind != STEP_RUN && !s->path)
        return clr_yaml_error(y, n, "%s step needs a path", kind);
    if (s->kind == STEP_WRITE && !s->content)
        return clr_yaml_error(y, n, "write step needs content or content_base64");
    if (s->kind == STEP_RUN && !!s->shell == !!s->argv)
        return clr_yaml_error(y, n, "run step needs exactly one of shell and argv");
    if (s->kind == STEP_RUN && !s->n_expect) {
        s->expect[0] = 0;
        s->n_expect = 1;
    }
    return 0;
}

static int parse_step(clr_yaml *y, struct step *s, yaml_node_t *n)
{
    const char *kind = NULL;
    yaml_node_t *m = NULL;
    if (step_kind(y, s, n, &kind, &m) < 0)
        return -1;
    for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++) {
        yaml_node_t *k = clr_yaml_node(y, q->key), *v = clr_yaml_node(y, q->value);
        const char *key = clr_yaml_scalar(k);
        if (!key || !v)
            return clr_yaml_error(y, k, "step keys must be strings");
        /* A second content would replace (and leak) the first: which one was meant is unclear. */
        if (s->content && (!strcmp(key, "content") || !strcmp(key, "content_base64")))
            return clr_yaml_error(y, k, "write step: give content or content_base64, once");
        int rc = parse_step_key(y, s, key, v);
        if (rc < 0)
            return -1;
        if (rc > 0)
            return clr_yaml_error(y, k, "%s step: unknown key '%.64s'", kind, key);
    }
    return step_complete(y, s, n, kind);
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


/* The plan's top-level keys other than steps (*steps gets that list's node). */
static int parse_root(clr_yaml *y, clr_plan *p, yaml_node_t *root, yaml_node_t **steps)
{
    if (!root || root->type != YAML_MAPPING_NODE)
        return clr_yaml_error(y, root, "a plan is a mapping with a 'steps' list");
    for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < root->data.mapping.pairs.top;
         q++) {
        yaml_node_t *k = clr_yaml_node(y, q->key), *v = clr_yaml_node(y, q->value);
        const char *key = clr_yaml_scalar(k);
        int r = 0;
        if (!key || !v)
            return clr_yaml_error(y, k, "plan keys must be strings");
        if (!strcmp(key, "steps"))
            *steps = v;
        else if (!strcmp(key, "repo"))
            r = clr_yaml_string(y, v, "repo", &p->repo);
        else if (!strcmp(key, "base"))
            r = clr_yaml_string(y, v, "base", &p->base);
        else if (!strcmp(key, "branch"))
            r = clr_yaml_string(y, v, "branch", &p->branch);
        else if (!strcmp(key, "profile"))
            r = clr_yaml_string(y, v, "profile", &p->profile);
        else if (!strcmp(key, "image"))
            r = clr_yaml_string(y, v, "image", &p->image);
        else if (!strcmp(key, "message"))
            r = clr_yaml_string(y, v, "message", &p->message);
        else if (!strcmp(key, "commit_on_failure"))
            r = clr_yaml_bool(y, v, "commit_on_failure", &p->commit_on_failure);
        else if (!strcmp(key, "limits"))
            r = parse_limits(y, &p->limits, v);
        else if (!strcmp(key, "egress"))
            r = parse_egress(y, &p->egress, v);
        else
            r = clr_yaml_error(y, k, "unknown key '%.64s'", key);
        if (r < 0)
            return -1;
    }
    if (!*steps || (*steps)->type != YAML_SEQUENCE_NODE)
        return clr_yaml_error(y, *steps ? *steps : root, "'steps' must be a list");
    return 0;
}

/* Every step of the list, in order. p->n counts the steps begun, so clr_plan_free frees what a
 * refused step had already taken. */
static int parse_steps(clr_yaml *y, clr_plan *p, yaml_node_t *steps)
{
    size_t n = (size_t)(steps->data.sequence.items.top - steps->data.sequence.items.start);
    if (n > CLR_PLAN_MAX_STEPS)
        return clr_yaml_error(y, steps, "a plan has at most %d steps", CLR_PLAN_MAX_STEPS);
    p->steps = calloc(n ? n : 1, sizeof(struct step));
    if (!p->steps)
        return clr_error_set(y->err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        p->n = i + 1;
        yaml_node_t *sn = clr_yaml_node(y, steps->data.sequence.items.start[i]);
        if (!sn)
            return clr_error_set(y->err, CLR_E_LIMIT, 0, "%s: too many nodes (aliases?)",
                                 y->source);
        if (parse_step(y, &p->steps[i], sn) < 0)
            return -1;
    }
    return 0;
}

int clr_plan_parse(clr_plan **out, const char *text, size_t len, const char *source,
                   clr_error *err)
{
    if (len > CLR_PLAN_MAX_BYTES)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s is larger than %d bytes", source,
                             CLR_PLAN_MAX_BYTES);
    _cleanup_yaml_ clr_yaml y = {0};
    if (clr_yaml_load(&y, text, len, source, err) < 0)
        return -1;
    _cleanup_plan_ clr_plan *p = calloc(1, sizeof(*p));
    if (!p)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    clr_limits l = CLR_LIMITS_INIT;
    p->limits = l;
    p->commit_on_failure = true;
    yaml_node_t *steps = NULL;
    if (parse_root(&y, p, yaml_document_get_root_node(&y.doc), &steps) < 0 ||
        parse_steps(&y, p, steps) < 0)
        return -1;
    *out = steal_pointer(&p);
    return 0;
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
