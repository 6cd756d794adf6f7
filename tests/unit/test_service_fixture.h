/* What the service modules' unit tests share: a sandbox row with the defaults filled in, and
 * removing a test's flat temporary directory. Include after <cmocka.h>. */
#ifndef CLR_TEST_SERVICE_FIXTURE_H
#define CLR_TEST_SERVICE_FIXTURE_H

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clearing/store.h"

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

/* Removes dir and the files directly in it (the tests make no subdirectories there). */
static inline void test_remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

#endif
