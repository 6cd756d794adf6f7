/* The one fixture of the service's unit tests: a service on a real state directory in
 * /tmp/clr-test-<name>-XXXXXX (a SQLite database, an audit log, workspaces/), the scripted engine
 * of fake_engine.h as its engine, the locks the service's modules take; the helpers that make
 * rows and workspaces, script the engine's container list and inspects, and read back what the
 * service did (rows, audit records). Include after <cmocka.h>. */
#ifndef CLR_TEST_SERVICE_ENV_H
#define CLR_TEST_SERVICE_ENV_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clearing/sandbox.h"
#include "clearing/store.h"
#include "fake_engine.h"
#include "service/channels.h"
#include "service/service_int.h"

#define TEST_OWNER "unit-owner"
#define TEST_API "/v1.41/containers/"
#define TEST_LIST "GET " TEST_API "json"
#define TEST_INSPECT_ANY "GET " TEST_API "clearing-"
#define TEST_DELETE_ANY "DELETE " TEST_API "clearing-"

/* A row of the given id, tenant ("" for the default) and state: image clearing/default:latest,
 * runsc, created at 1000 and expiring at 2000 (at most 5000), last active at 1000, default
 * limits, no metadata or environment. Adjust *s, then insert it with test_row_insert(). */
static inline void test_row_init(clr_store_sandbox *s, const char *id, const char *tenant,
                                 const char *state)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->info.id, sizeof(s->info.id), "%s", id);
    snprintf(s->info.tenant, sizeof(s->info.tenant), "%s", tenant);
    snprintf(s->info.image, sizeof(s->info.image), "clearing/default:latest");
    snprintf(s->info.runtime, sizeof(s->info.runtime), "runsc");
    snprintf(s->info.state, sizeof(s->info.state), "%s", state);
    s->info.created_at = 1000;
    s->info.expires_at = 2000;
    s->info.limits = (clr_limits)CLR_LIMITS_INIT;
    s->max_expires_at = 5000;
    s->last_active_at = 1000;
}

/* Inserts *s (an empty object and array where metadata or env is NULL) and drops its metadata
 * and env; fails the test when the store refuses it. */
static inline void test_row_insert(clr_store *st, clr_store_sandbox *s)
{
    if (!s->metadata)
        s->metadata = json_object();
    if (!s->env)
        s->env = json_array();
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_insert(st, s, &err) != 0)
        fail_msg("insert %s: %s", s->info.id, err.message);
    json_decref(s->metadata);
    json_decref(s->env);
    s->metadata = s->env = NULL;
}

/* The audit log's interval for counted denials and refusals: an hour, so that a refusal a test
 * makes after another is counted however slow the machine (test_env_flush_counts writes them). */
#define TEST_ENV_AGGREGATE_MS 3600000u

struct test_env {
    struct fake *f;
    char dir[64], db[128], log[128];
    clr_service svc;
    char *bodies[256]; /* scripted answers built here, kept until teardown (the fake keeps
                       * pointers) */
    size_t nbodies;
};

/* A state database that was not new when opened (as after a restart), unless fresh. */
static inline int test_env_open_store(struct test_env *e, bool fresh)
{
    clr_error err = CLR_ERROR_INIT;
    if (e->svc.store)
        clr_store_close(e->svc.store);
    e->svc.store = NULL;
    if (fresh)
        unlink(e->db);
    if (clr_store_open(&e->svc.store, e->db, &err) != 0) {
        fprintf(stderr, "clr_store_open: %s\n", err.message);
        return -1;
    }
    if (fresh)
        return 0;
    clr_store_close(e->svc.store);
    e->svc.store = NULL;
    if (clr_store_open(&e->svc.store, e->db, &err) != 0) {
        fprintf(stderr, "clr_store_open again: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* *out: a service with its state in a new /tmp/clr-test-<name>-XXXXXX (database, audit log and
 * an empty workspaces/), owner TEST_OWNER, its engine the scripted one (with nothing scripted:
 * see test_env_all_running). No tenant is assumed (the operator's view). */
static inline int test_env_setup(struct test_env **out, const char *name)
{
    struct test_env *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    *out = e;
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    e->f = f;
    snprintf(e->dir, sizeof(e->dir), "/tmp/clr-test-%s-XXXXXX", name);
    if (!mkdtemp(e->dir))
        return -1;
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces", e->dir);
    if (mkdir(p, 0700) < 0)
        return -1;
    snprintf(e->db, sizeof(e->db), "%s/state.db", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/audit.log", e->dir);
    clr_service *svc = &e->svc;
    svc->cfg = (clr_service_config)CLR_SERVICE_CONFIG_INIT;
    svc->state_dir = e->dir;
    svc->docker_host = e->f->sock;
    snprintf(svc->owner, sizeof(svc->owner), TEST_OWNER);
    pthread_mutex_init(&svc->pool_lock, NULL);
    pthread_mutex_init(&svc->create_lock, NULL);
    pthread_mutex_init(&svc->reaper_lock, NULL);
    pthread_cond_init(&svc->reaper_cond, NULL);
    pthread_mutex_init(&svc->warm_lock, NULL);
    pthread_cond_init(&svc->warm_cond, NULL);
    pthread_mutex_init(&svc->rm_lock, NULL);
    pthread_cond_init(&svc->rm_cond, NULL);
    pthread_cond_init(&svc->rm_done, NULL);
    pthread_mutex_init(&svc->health_lock, NULL);
    pthread_mutex_init(&svc->live_lock, NULL);
    svc_snapshot_gate_init(svc);
    if (test_env_open_store(e, false) < 0)
        return -1;
    clr_error err = CLR_ERROR_INIT;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = e->log;
    o.aggregate_ms = TEST_ENV_AGGREGATE_MS;
    if (clr_audit_open(&svc->audit, &o, &err) != 0) {
        fprintf(stderr, "clr_audit_open: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* Scripts the engine to have every container existing, running and not paused, and to remove
 * any (newer scripts take precedence). */
static inline void test_env_all_running(struct test_env *e)
{
    fake_answer(e->f, TEST_INSPECT_ANY, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(e->f, TEST_DELETE_ANY, 204, NULL);
}

/* Ends every live sandbox's channels (teardown does it too; call it first where something must
 * be stopped between the two). */
static inline void test_env_drop_live(struct test_env *e)
{
    while (e->svc.live) {
        char id[CLR_SANDBOX_ID_MAX + 1];
        snprintf(id, sizeof(id), "%s", e->svc.live->id);
        svc_live_drop(&e->svc, id);
    }
}

static inline int test_env_rm_one(const char *path, const struct stat *st, int flag,
                                  struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Stops the service, unmounts what a test mounted under dir/workspaces (name by name), removes
 * the state directory and stops the scripted engine; e may be half set up. */
static inline void test_env_teardown(struct test_env *e)
{
    if (!e)
        return;
    clr_service *svc = &e->svc;
    test_env_drop_live(e);
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    clr_audit_close(svc->audit);
    clr_store_close(svc->store);
    /* A test that failed half-way may leave a workspace's tmpfs mounted (EINVAL: none). */
    char ws[128];
    snprintf(ws, sizeof(ws), "%s/workspaces", e->dir);
    DIR *d = e->dir[0] ? opendir(ws) : NULL;
    for (struct dirent *de; d && (de = readdir(d));) {
        char p[400];
        snprintf(p, sizeof(p), "%s/%s", ws, de->d_name);
        if (de->d_name[0] != '.')
            umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW);
    }
    if (d)
        closedir(d);
    if (strncmp(e->dir, "/tmp/clr-test-", 14) == 0 && strstr(e->dir, "XXXXXX") == NULL &&
        nftw(e->dir, test_env_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", e->dir);
    void *f = e->f;
    if (f)
        fake_teardown(&f);
    for (size_t i = 0; i < e->nbodies; i++)
        free(e->bodies[i]);
    free(e);
}

/* Keeps text for the fake (which answers with it until teardown). */
static inline const char *test_env_keep(struct test_env *e, char *text)
{
    assert_non_null(text);
    assert_true(e->nbodies < sizeof(e->bodies) / sizeof(e->bodies[0]));
    e->bodies[e->nbodies++] = text;
    return text;
}

/* The labels' account of a sandbox of this id, owner and tenant (the default one). */
static inline void test_env_info(clr_sandbox_info *info, const char *id, const char *owner)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->id, sizeof(info->id), "%s", id);
    snprintf(info->image, sizeof(info->image), "clearing/default:latest");
    snprintf(info->runtime, sizeof(info->runtime), "runsc");
    snprintf(info->owner, sizeof(info->owner), "%s", owner);
    info->created_at = 1000;
    info->expires_at = (int64_t)time(NULL) + 3600;
    info->max_expires_at = info->expires_at + 3600;
    info->limits = (clr_limits)CLR_LIMITS_INIT;
}

/* One container of the engine's list: "id owner state" ("running", "exited"). */
struct test_container {
    const char *id, *owner, *state;
};

/* Scripts the engine's container list (GET /containers/json) to hold these containers. */
static inline void test_env_containers(struct test_env *e, const struct test_container *c,
                                       size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        clr_sandbox_info info;
        test_env_info(&info, c[i].id, c[i].owner);
        char cid[80];
        snprintf(cid, sizeof(cid), "cid-%s", c[i].id);
        json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "Id", cid, "State", c[i].state,
                                           "Labels", clr_sandbox_labels(&info)));
    }
    fake_answer(e->f, TEST_LIST, 200, test_env_keep(e, json_dumps(a, JSON_COMPACT)));
    json_decref(a);
}

/* Scripts the engine's inspect of one sandbox's container as the engine has it: its labels
 * (owner TEST_OWNER), running or not, OOM-killed or not. */
static inline void test_env_inspect(struct test_env *e, const char *id, bool running, bool oom)
{
    clr_sandbox_info info;
    test_env_info(&info, id, TEST_OWNER);
    char cid[80], match[160];
    snprintf(cid, sizeof(cid), "cid-%s", id);
    json_t *j = json_pack("{s:s, s:{s:s, s:b, s:b, s:b}, s:{s:o}}", "Id", cid, "State",
                          "Status", running ? "running" : "exited", "Running", running,
                          "Paused", 0, "OOMKilled", oom, "Config", "Labels",
                          clr_sandbox_labels(&info));
    snprintf(match, sizeof(match), "GET " TEST_API "clearing-%s/json", id);
    fake_answer(e->f, test_env_keep(e, strdup(match)), 200,
                test_env_keep(e, json_dumps(j, JSON_COMPACT)));
    json_decref(j);
}

/* A running row of this id, expiring at expires_at, last active at last_active, with this idle
 * timeout (0: none); created long ago. */
static inline void test_env_row(struct test_env *e, const char *id, int64_t expires_at,
                                int64_t last_active, uint32_t idle_s)
{
    clr_store_sandbox s;
    test_row_init(&s, id, "", CLR_STATE_RUNNING);
    s.info.expires_at = expires_at;
    s.max_expires_at = expires_at + 3600;
    s.last_active_at = last_active;
    s.idle_timeout_s = idle_s;
    test_row_insert(e->svc.store, &s);
}

/* Sets a row's state (and why), failing the test when the store refuses. */
static inline void test_env_set_state(struct test_env *e, const char *id, const char *state,
                                      const char *reason)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_set_state(e->svc.store, id, state, reason, 1500, &err) != 0)
        fail_msg("set_state %s %s: %s", id, state, err.message);
}

/* Fails the test unless the row's state is state and (when reason is not NULL) its reason. */
static inline void test_env_expect_row(struct test_env *e, const char *id, const char *state,
                                       const char *reason)
{
    clr_store_sandbox row;
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_get(e->svc.store, id, &row, &err) != 0)
        fail_msg("no row %s: %s", id, err.message);
    if (strcmp(row.info.state, state) != 0 || (reason && strcmp(row.destroy_reason, reason)))
        fail_msg("row %s is %s (%s), expected %s (%s)", id, row.info.state, row.destroy_reason,
                 state, reason ? reason : "any reason");
    clr_store_sandbox_clear(&row);
}

/* A row of id for tenant ("": the default), inserted running and then moved to state (with
 * reason) as the daemon moves it. */
static inline void test_env_add_row(struct test_env *e, const char *id, const char *tenant,
                                    const char *state, const char *reason)
{
    clr_store_sandbox row;
    test_row_init(&row, id, tenant, CLR_STATE_RUNNING);
    test_row_insert(e->svc.store, &row);
    if (strcmp(state, CLR_STATE_RUNNING) != 0)
        test_env_set_state(e, id, state, reason);
}

/* The path of id's workspace in out; made with this mode unless mode is 0 (failing the test
 * when mkdir fails). */
static inline void test_env_workspace(struct test_env *e, const char *id, char *out, size_t len,
                                      mode_t mode)
{
    snprintf(out, len, "%s/workspaces/%s", e->dir, id);
    if (mode && mkdir(out, mode) < 0)
        fail_msg("mkdir %s: %s", out, strerror(errno));
}

/* Creates the workspace directory of id (mode 0700). */
static inline void test_env_make_workspace(struct test_env *e, const char *id)
{
    char p[256];
    test_env_workspace(e, id, p, sizeof(p), 0700);
}

/* Whether the workspace directory of id exists. */
static inline bool test_env_workspace_exists(struct test_env *e, const char *id)
{
    char p[256];
    test_env_workspace(e, id, p, sizeof(p), 0);
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Writes the counts the audit log holds back (clr_audit_denied's: denials and refusals after
 * the first of their source) now: the log is closed, which writes them, and opened again. */
static inline void test_env_flush_counts(struct test_env *e)
{
    clr_audit_close(e->svc.audit);
    e->svc.audit = NULL;
    clr_error err = CLR_ERROR_INIT;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = e->log;
    o.aggregate_ms = TEST_ENV_AGGREGATE_MS;
    if (clr_audit_open(&e->svc.audit, &o, &err) != 0)
        fail_msg("clr_audit_open: %s", err.message);
}

/* Checks a refusal's record r (clr_audit_denied's): details exactly the error's code and message
 * says, source the actor, count, and interval_ms on a counted one (not the first). */
static inline void expect_refusal_details(json_t *r, const char *code, const char *says,
                                          const char *actor, json_int_t count, bool first)
{
    json_t *d = json_object_get(r, "details");
    assert_string_equal(json_string_value(json_object_get(d, "code")), code);
    assert_string_equal(json_string_value(json_object_get(d, "error")), says);
    assert_string_equal(json_string_value(json_object_get(d, "source")), actor);
    assert_int_equal(json_integer_value(json_object_get(d, "count")), count);
    assert_int_equal(json_object_size(d), first ? 4 : 5);
    if (!first)
        assert_true(json_is_integer(json_object_get(d, "interval_ms")));
}

/* Makes every audit append fail (the log's path becomes a directory), or undoes that. */
static inline void test_env_break_audit(struct test_env *e, bool broken)
{
    char moved[160];
    snprintf(moved, sizeof(moved), "%s.moved", e->log);
    if (broken) {
        assert_int_equal(rename(e->log, moved), 0);
        assert_int_equal(mkdir(e->log, 0700), 0);
    } else {
        assert_int_equal(rmdir(e->log), 0);
        assert_int_equal(rename(moved, e->log), 0);
    }
}

/* Every record of the audit log, in order (an array; the caller's); fails the test when the log
 * cannot be read. */
static inline json_t *audit_records(struct test_env *e)
{
    FILE *fp = fopen(e->log, "r");
    if (!fp)
        fail_msg("cannot read %s: %s", e->log, strerror(errno));
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        if (r)
            json_array_append_new(all, r);
    }
    free(line);
    fclose(fp);
    return all;
}

/* The first 64 KiB of a file as text (the caller frees it); fails the test when it cannot be
 * read. */
static inline char *test_read_text(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

/* The first 64 KiB of the audit log as text (the caller frees it). */
static inline char *test_env_audit_text(struct test_env *e)
{
    return test_read_text(e->log);
}

/* A string field of a record, or of its details when key starts with "details." (NULL: none). */
static inline const char *audit_field(json_t *record, const char *key)
{
    if (strncmp(key, "details.", 8) == 0)
        return json_string_value(json_object_get(json_object_get(record, "details"), key + 8));
    return json_string_value(json_object_get(record, key));
}

static inline const char *audit_action(json_t *record)
{
    const char *a = audit_field(record, "action");
    return a ? a : "";
}

/* Whether a record's field key (as audit_field) is want; a NULL want matches anything. */
static inline bool audit_is(json_t *record, const char *key, const char *want)
{
    const char *v = audit_field(record, key);
    return !want || (v && strcmp(v, want) == 0);
}

/* The newest record of action (NULL: none), the caller's. */
static inline json_t *audit_last(struct test_env *e, const char *action)
{
    json_t *all = audit_records(e);
    json_t *found = NULL;
    for (size_t i = json_array_size(all); i-- > 0;) {
        json_t *r = json_array_get(all, i);
        if (strcmp(audit_action(r), action) == 0) {
            found = json_incref(r);
            break;
        }
    }
    json_decref(all);
    return found;
}

/* How many records have these fields (keys as audit_field; a NULL value matches anything):
 * up to three pairs, key NULL after the last. */
static inline int audit_count_where(struct test_env *e, const char *action, const char *k1,
                                    const char *v1, const char *k2, const char *v2,
                                    const char *k3, const char *v3)
{
    json_t *all = audit_records(e);
    int n = 0;
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *r = json_array_get(all, i);
        n += strcmp(audit_action(r), action) == 0 && (!k1 || audit_is(r, k1, v1)) &&
             (!k2 || audit_is(r, k2, v2)) && (!k3 || audit_is(r, k3, v3));
    }
    json_decref(all);
    return n;
}

/* How many records of action there are. */
static inline size_t audit_count(struct test_env *e, const char *action)
{
    return (size_t)audit_count_where(e, action, NULL, NULL, NULL, NULL, NULL, NULL);
}

/* How many audit records have this action and sandbox, by actor (NULL: anyone) and with
 * details.reason (NULL: any). */
static inline int test_env_audit_count(struct test_env *e, const char *action, const char *id,
                                       const char *actor, const char *reason)
{
    return audit_count_where(e, action, "sandbox", id, "actor", actor, "details.reason", reason);
}

/* The newest record of action must say outcome, about sandbox (NULL: none), by actor. */
static inline json_t *expect_audit(struct test_env *e, const char *action, const char *outcome,
                                   const char *sandbox, const char *actor)
{
    json_t *r = audit_last(e, action);
    if (!r)
        fail_msg("no audit record of %s", action);
    assert_string_equal(json_string_value(json_object_get(r, "outcome")), outcome);
    const char *sb = json_string_value(json_object_get(r, "sandbox"));
    if (sandbox)
        assert_string_equal(sb ? sb : "(none)", sandbox);
    else if (sb)
        fail_msg("the %s record names sandbox %s, expected none", action, sb);
    assert_string_equal(json_string_value(json_object_get(r, "actor")), actor);
    return r;
}

/* The error's code and a part of its message. */
static inline void expect_error(const clr_error *err, clr_error_code code, const char *part)
{
    if (err->code != code || !strstr(err->message, part))
        fail_msg("error %s \"%s\", expected %s saying \"%s\"", clr_error_code_name(err->code),
                 err->message, clr_error_code_name(code), part);
}

#endif
