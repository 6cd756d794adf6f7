/* What the unit tests of the service's per-sandbox modules (git.c, plans.c, svc_files.c) share:
 * a service on a real state directory in /tmp (a SQLite database, an audit log, workspaces), the
 * scripted engine of fake_engine.h as its engine, and the audit log read back record by record.
 * Include after <cmocka.h> and test_service_fixture.h. */
#ifndef CLR_TEST_SERVICE_STATE_H
#define CLR_TEST_SERVICE_STATE_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake_engine.h"
#include "service/service_int.h"

struct svc_state {
    struct fake *f;
    char dir[64];
    char db[128], log[128];
    clr_service svc;
};

/* A service with its state in a new /tmp/clr-test-<name>-XXXXXX: database, audit log and an
 * empty workspaces/; its engine the scripted one. The operator's view: no tenant is assumed. */
static inline int svc_state_open(struct svc_state *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    s->f = f;
    snprintf(s->dir, sizeof(s->dir), "/tmp/clr-test-%s-XXXXXX", name);
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->db, sizeof(s->db), "%s/state.db", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/audit.log", s->dir);
    char ws[128];
    snprintf(ws, sizeof(ws), "%s/workspaces", s->dir);
    if (mkdir(ws, 0700) < 0)
        return -1;
    clr_service *svc = &s->svc;
    svc->cfg = (clr_service_config)CLR_SERVICE_CONFIG_INIT;
    svc->state_dir = s->dir;
    svc->docker_host = s->f->sock;
    pthread_mutex_init(&svc->pool_lock, NULL);
    pthread_mutex_init(&svc->create_lock, NULL);
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_open(&svc->store, s->db, &err) != 0) {
        fprintf(stderr, "clr_store_open: %s\n", err.message);
        return -1;
    }
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = s->log;
    if (clr_audit_open(&svc->audit, &o, &err) != 0) {
        fprintf(stderr, "clr_audit_open: %s\n", err.message);
        return -1;
    }
    return 0;
}

static inline int svc_state_rm_one(const char *path, const struct stat *st, int flag,
                                   struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Unmounts what a test mounted under dir/workspaces (name by name), then removes everything. */
static inline void svc_state_close(struct svc_state *s)
{
    clr_service *svc = &s->svc;
    for (int i = 0; i < svc->pool_n; i++)
        clr_engine_free(svc->pool[i]);
    svc->pool_n = 0;
    clr_audit_close(svc->audit);
    clr_store_close(svc->store);
    pthread_mutex_destroy(&svc->pool_lock);
    pthread_mutex_destroy(&svc->create_lock);
    /* A test that failed half-way may leave a workspace's tmpfs mounted (EINVAL: none). */
    char ws[128];
    snprintf(ws, sizeof(ws), "%s/workspaces", s->dir);
    DIR *d = opendir(ws);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[400];
        snprintf(p, sizeof(p), "%s/%s", ws, e->d_name);
        if (e->d_name[0] != '.')
            umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW);
    }
    if (d)
        closedir(d);
    if (strncmp(s->dir, "/tmp/clr-test-", 14) == 0 &&
        nftw(s->dir, svc_state_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", s->dir);
    void *f = s->f;
    fake_teardown(&f);
}

/* A row of id for tenant ("": the default), inserted running and then moved to state (with
 * reason) as the daemon moves it. */
static inline void svc_state_row(struct svc_state *s, const char *id, const char *tenant,
                                 const char *state, const char *reason)
{
    clr_store_sandbox row;
    test_row_init(&row, id, tenant, CLR_STATE_RUNNING);
    test_row_insert(s->svc.store, &row);
    clr_error err = CLR_ERROR_INIT;
    if (strcmp(state, CLR_STATE_RUNNING) != 0 &&
        clr_store_sandbox_set_state(s->svc.store, id, state, reason, 1500, &err) != 0)
        fail_msg("set_state %s: %s", id, err.message);
}

/* The path of id's workspace (made with mkdir when make is set). */
static inline void svc_state_ws(struct svc_state *s, const char *id, char *out, size_t len,
                                bool make)
{
    snprintf(out, len, "%s/workspaces/%s", s->dir, id);
    if (make && mkdir(out, 0755) < 0)
        fail_msg("mkdir %s: %s", out, strerror(errno));
}

/* Every record of the audit log, in order (an array; the caller's). */
static inline json_t *audit_records(struct svc_state *s)
{
    json_t *all = json_array();
    FILE *fp = fopen(s->log, "r");
    if (!fp)
        return all;
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

static inline const char *audit_action(json_t *record)
{
    const char *a = json_string_value(json_object_get(record, "action"));
    return a ? a : "";
}

/* The newest record of action (NULL: none), the caller's. */
static inline json_t *audit_last(struct svc_state *s, const char *action)
{
    json_t *all = audit_records(s);
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

/* How many records of action there are. */
static inline size_t audit_count(struct svc_state *s, const char *action)
{
    json_t *all = audit_records(s);
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(all); i++)
        n += strcmp(audit_action(json_array_get(all, i)), action) == 0;
    json_decref(all);
    return n;
}

/* The newest record of action must say outcome, about sandbox (NULL: none), by actor. */
static inline json_t *expect_audit(struct svc_state *s, const char *action, const char *outcome,
                                   const char *sandbox, const char *actor)
{
    json_t *r = audit_last(s, action);
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
