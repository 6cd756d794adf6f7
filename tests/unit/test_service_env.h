/* A service for the unit tests of the daemon's modules that talk to the engine, the state
 * database and the audit log together (reaper, events, procs): the scripted engine of
 * fake_engine.h, a state directory in a temporary directory (with workspaces/), a state database
 * and an audit log in it, the locks those modules take, and the helpers to read back what they
 * did (audit records, rows) and to script the engine's container list. Include after <cmocka.h>
 * and fake_engine.h. */
#ifndef CLR_TEST_SERVICE_ENV_H
#define CLR_TEST_SERVICE_ENV_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clearing/sandbox.h"
#include "service/channels.h"
#include "service/service_int.h"
#include "test_service_fixture.h"

#define TEST_OWNER "unit-owner"
#define TEST_API "/v1.41/containers/"
#define TEST_LIST "GET " TEST_API "json"
#define TEST_INSPECT_ANY "GET " TEST_API "clearing-"
#define TEST_DELETE_ANY "DELETE " TEST_API "clearing-"

struct test_env {
    struct fake *f;
    char dir[64], db[128], log[128];
    clr_service svc;
    char *bodies[80]; /* scripted answers built here, kept until teardown (the fake keeps
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

/* *out: a running environment; prefix names its directory (/tmp/<prefix>-XXXXXX). By default
 * the engine has every container existing and not paused, and removes any. */
static inline int test_env_setup(struct test_env **out, const char *prefix)
{
    struct test_env *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    e->f = f;
    snprintf(e->dir, sizeof(e->dir), "/tmp/%s-XXXXXX", prefix);
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
    if (test_env_open_store(e, false) < 0)
        return -1;
    clr_error err = CLR_ERROR_INIT;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = e->log;
    if (clr_audit_open(&svc->audit, &o, &err) != 0) {
        fprintf(stderr, "clr_audit_open: %s\n", err.message);
        return -1;
    }
    fake_answer(e->f, TEST_INSPECT_ANY, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(e->f, TEST_DELETE_ANY, 204, NULL);
    *out = e;
    return 0;
}

static inline void test_env_teardown(struct test_env *e)
{
    clr_service *svc = &e->svc;
    while (svc->live)
        svc_live_drop(svc, svc->live->id);
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    clr_audit_close(svc->audit);
    clr_store_close(svc->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    if (strncmp(e->dir, "/tmp/clr-test-", 14) == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", e->dir);
    void *f = e->f;
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

/* How many audit records have this action and sandbox, by actor (NULL: anyone) and with
 * details.reason (NULL: any). */
static inline int test_env_audit_count(struct test_env *e, const char *action, const char *id,
                                       const char *actor, const char *reason)
{
    FILE *fp = fopen(e->log, "r");
    if (!fp)
        fail_msg("cannot read %s: %s", e->log, strerror(errno));
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof(line), fp)) {
        json_t *r = json_loads(line, 0, NULL);
        const char *a = json_string_value(json_object_get(r, "action"));
        const char *sb = json_string_value(json_object_get(r, "sandbox"));
        const char *who = json_string_value(json_object_get(r, "actor"));
        const char *why =
            json_string_value(json_object_get(json_object_get(r, "details"), "reason"));
        n += a && strcmp(a, action) == 0 && sb && strcmp(sb, id) == 0 &&
             (!actor || (who && strcmp(who, actor) == 0)) &&
             (!reason || (why && strcmp(why, reason) == 0));
        json_decref(r);
    }
    fclose(fp);
    return n;
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

/* Creates the workspace directory of id; whether it exists. */
static inline void test_env_make_workspace(struct test_env *e, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", e->dir, id);
    assert_int_equal(mkdir(p, 0700), 0);
}

static inline bool test_env_workspace_exists(struct test_env *e, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", e->dir, id);
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

#endif
