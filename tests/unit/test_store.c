/* The daemon's SQLite state on a temporary file: rows come back as written, missing rows are
 * CLR_E_NOT_FOUND, a restart turns running execs into lost ones, and a database from a newer
 * clearing is refused rather than damaged. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/store.h"

struct fixture {
    char dir[64];
    char path[128];
    clr_store *st;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/clr-test-store-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_open(&fx->st, fx->path, &err) != 0) {
        fprintf(stderr, "clr_store_open: %s\n", err.message);
        rmdir(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    clr_store_close(fx->st);
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", fx->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* A fully populated row; metadata and env are owned by the caller (clr_store_sandbox_clear). */
static clr_store_sandbox sample(const char *id, int64_t created_at, const char *state)
{
    clr_store_sandbox s;
    memset(&s, 0, sizeof(s));
    snprintf(s.info.id, sizeof(s.info.id), "%s", id);
    snprintf(s.info.container_id, sizeof(s.info.container_id),
             "4f2a9c0d1e3b5a7c9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d");
    snprintf(s.info.image, sizeof(s.info.image), "clearing/default:latest");
    snprintf(s.info.runtime, sizeof(s.info.runtime), "runsc");
    snprintf(s.info.state, sizeof(s.info.state), "%s", state);
    s.info.insecure = false;
    s.info.created_at = created_at;
    s.info.expires_at = created_at + 600;
    s.info.limits = (clr_limits)CLR_LIMITS_INIT;
    s.info.limits.memory_bytes = 3 * CLR_GIB;
    s.info.limits.workspace_bytes = 40 * CLR_GIB;
    s.max_expires_at = created_at + 3600;
    s.idle_timeout_s = 120;
    s.last_active_at = created_at + 5;
    s.metadata = json_pack("{s:s, s:s}", "team", "infra", "ticket", "\xc3\xa9-42 'quoted'");
    s.env = json_pack("[s, s]", "A=1", "B=two words");
    return s;
}

static void insert_ok(clr_store *st, const clr_store_sandbox *s)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_store_sandbox_insert(st, s, &err) != 0)
        fail_msg("insert %s: %s", s->info.id, err.message);
}

/* ---- open and migrations ------------------------------------------------------------------ */

/* The boolean field name of snapshot id's row. */
static bool snapshot_flag(clr_store *st, const char *id, const char *name)
{
    json_t *one = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_snapshot_get(st, id, &one, &err), 0);
    json_t *v = json_object_get(one, name);
    assert_true(json_is_boolean(v));
    bool b = json_is_true(v);
    json_decref(one);
    return b;
}

static int user_version(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void test_open_twice_migration_idempotent(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000a1", 1000, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    int v1 = user_version(fx->path);
    assert_true(v1 >= 1);

    clr_store_close(fx->st);
    fx->st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_int_equal(user_version(fx->path), v1);
    /* the row survived the reopen */
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000a1", &got, &err), 0);
    clr_store_sandbox_clear(&got);

    /* a second handle on the same file at the same time */
    clr_store *other = NULL;
    assert_int_equal(clr_store_open(&other, fx->path, &err), 0);
    assert_int_equal(clr_store_sandbox_get(other, "sb-00000000000000a1", &got, &err), 0);
    clr_store_sandbox_clear(&got);
    clr_store_close(other);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *fx = *state;
    clr_store_close(fx->st);
    fx->st = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    clr_store *st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&st, fx->path, &err), -1);
    assert_null(st);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, "999"));
    /* and it was left as it was */
    assert_int_equal(user_version(fx->path), 999);
}

static void test_open_in_missing_directory_fails(void **state)
{
    struct fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/no/such/dir/state.db", fx->dir);
    clr_store *st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&st, p, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, p));
}

static void test_open_on_garbage_file_fails(void **state)
{
    struct fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/garbage.db", fx->dir);
    FILE *f = fopen(p, "we");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    clr_store *st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&st, p, &err), -1);
    assert_true(err.message[0] != '\0');
}

static void assert_corrupt_message(const clr_error *err, const char *path)
{
    char want[512];
    assert_int_equal(err->code, CLR_E_UNAVAILABLE);
    snprintf(want, sizeof(want), "state database %s is corrupt", path);
    assert_non_null(strstr(err->message, want));
    snprintf(want, sizeof(want), "mv %s %s.corrupt", path, path);
    assert_non_null(strstr(err->message, want));
    assert_non_null(strstr(err->message, "start again"));
}

static void test_garbage_file_named_as_corrupt_with_remedy(void **state)
{
    struct fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/garbage.db", fx->dir);
    FILE *f = fopen(p, "we");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    clr_store *st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&st, p, &err), -1);
    assert_null(st);
    assert_corrupt_message(&err, p);
}

/* A damaged page past the header: the header reads fine, PRAGMA quick_check at open finds it. */
static void test_damaged_page_found_at_open(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof(id), "sb-%016x", 0x1000 + i);
        clr_store_sandbox s = sample(id, 1000 + i, CLR_STATE_RUNNING);
        insert_ok(fx->st, &s);
        clr_store_sandbox_clear(&s);
    }
    clr_store_close(fx->st); /* the last connection: the WAL is checkpointed into the file */
    fx->st = NULL;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
    assert_true(sb.st_size >= 8 * 4096);
    FILE *f = fopen(fx->path, "r+e");
    assert_non_null(f);
    assert_int_equal(fseek(f, 4096, SEEK_SET), 0); /* page 2 onwards; page 1 is the header */
    for (off_t o = 4096; o < sb.st_size; o++)
        fputc(0x5a, f);
    fclose(f);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), -1);
    assert_null(fx->st);
    assert_corrupt_message(&err, fx->path);
}

static void test_created_only_by_the_first_open(void **state)
{
    struct fixture *fx = *state;
    assert_true(clr_store_created(fx->st));
    clr_store_close(fx->st);
    fx->st = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_false(clr_store_created(fx->st));
}

static void test_recovered_flag_round_trip(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000c1", 1000, CLR_STATE_RUNNING);
    s.recovered = true;
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    s = sample("sb-00000000000000c2", 1001, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000c1", &got, &err), 0);
    assert_true(got.recovered);
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000c2", &got, &err), 0);
    assert_false(got.recovered);
    clr_store_sandbox_clear(&got);
}

/* A row keeps its tenant; a row written without one is the default tenant's. */
static void test_tenant_round_trip(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d1", 1000, CLR_STATE_RUNNING);
    snprintf(s.info.tenant, sizeof(s.info.tenant), "acme");
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    s = sample("sb-00000000000000d2", 1001, CLR_STATE_PLAN);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d1", &got, &err), 0);
    assert_string_equal(got.info.tenant, "acme");
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d2", &got, &err), 0);
    assert_string_equal(got.info.tenant, CLR_TENANT_DEFAULT);
    clr_store_sandbox_clear(&got);
}

/* A database of a daemon from before tenants (schema 4) is migrated: its rows become the
 * default tenant's, none is lost. */
static void test_migration_to_tenants_keeps_rows_as_default(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d3", 1000, CLR_STATE_RUNNING);
    snprintf(s.info.tenant, sizeof(s.info.tenant), "acme");
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_store_close(fx->st);
    fx->st = NULL;
    /* Back to schema 4: no tenant column (nor the later attached ones). */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE sandboxes DROP COLUMN tenant;"
                                  "ALTER TABLE sandboxes DROP COLUMN attached_to;"
                                  "ALTER TABLE sandboxes DROP COLUMN attached;"
                                  "ALTER TABLE snapshots DROP COLUMN held;"
                                  "PRAGMA user_version = 4;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(user_version(fx->path), 4);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_int_equal(user_version(fx->path), 9); /* the latest schema (9: snapshots' held) */
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d3", &got, &err), 0);
    assert_string_equal(got.info.tenant, CLR_TENANT_DEFAULT);
    clr_store_sandbox_clear(&got);
}

/* The attached mark: a new row's is as inserted (false), set for good by set_attached naming
 * the container; an unknown sandbox is CLR_E_NOT_FOUND, no container id CLR_E_INVALID. */
static void test_attached_flag_sticky(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d4", 1000, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    char cid[sizeof(s.info.container_id)];
    memcpy(cid, s.info.container_id, sizeof(cid));
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d4", &got, &err), 0);
    assert_false(got.attached);
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000d4", "", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000d4", NULL, &err),
                     -1);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d4", &got, &err), 0);
    assert_false(got.attached); /* refused: nothing marked */
    clr_store_sandbox_clear(&got);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000d4", cid, &err), 0);
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000d4", cid, &err), 0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d4", &got, &err), 0);
    assert_true(got.attached);
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000ff", cid, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
/* Inserted attached (a pooled sandbox's row). */
    s = sample("sb-00000000000000d5", 1000, CLR_STATE_RUNNING);
    s.attached = true;
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d5", &got, &err), 0);
    assert_true(got.attached);
    clr_store_sandbox_clear(&got);
}

/* ---- sandboxes ---------------------------------------------------------------------------- */

static void test_sandbox_insert_get_round_trip(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000b1", 1700000000, CLR_STATE_RUNNING);
    s.info.insecure = true;
    insert_ok(fx->st, &s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, s.info.id, &got, &err), 0);
    assert_string_equal(got.info.id, s.info.id);
    assert_string_equal(got.info.container_id, s.info.container_id);
    assert_string_equal(got.info.image, s.info.image);
    assert_string_equal(got.info.runtime, s.info.runtime);
    assert_string_equal(got.info.state, CLR_STATE_RUNNING);
    assert_true(got.info.insecure);
    assert_int_equal(got.info.created_at, s.info.created_at);
    assert_int_equal(got.info.expires_at, s.info.expires_at);
    assert_true(clr_limits_equal(&got.info.limits, &s.info.limits));
    assert_int_equal(got.max_expires_at, s.max_expires_at);
    assert_int_equal(got.idle_timeout_s, 120);
    assert_int_equal(got.last_active_at, s.last_active_at);
    assert_int_equal(got.destroyed_at, 0);
    assert_string_equal(got.destroy_reason, "");
    assert_true(json_equal(got.metadata, s.metadata));
    assert_true(json_equal(got.env, s.env));
    clr_store_sandbox_clear(&got);
    clr_store_sandbox_clear(&s);
}

static void test_sandbox_insert_defaults(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000b2", 1, "");
    json_decref(s.metadata);
    json_decref(s.env);
    s.metadata = NULL;
    s.env = NULL;
    insert_ok(fx->st, &s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, s.info.id, &got, &err), 0);
    assert_string_equal(got.info.state, CLR_STATE_RUNNING); /* no state: running */
    assert_true(json_is_object(got.metadata));
    assert_int_equal(json_object_size(got.metadata), 0);
    assert_true(json_is_array(got.env));
    assert_int_equal(json_array_size(got.env), 0);
    clr_store_sandbox_clear(&got);
}

static void test_sandbox_duplicate_id_refused(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000b3", 1, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_error err = CLR_ERROR_INIT;
    snprintf(s.info.image, sizeof(s.info.image), "other:image");
    assert_int_equal(clr_store_sandbox_insert(fx->st, &s, &err), -1);
    assert_true(err.message[0] != '\0');
    /* the first row is unchanged */
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, s.info.id, &got, &err), 0);
    assert_string_equal(got.info.image, "clearing/default:latest");
    clr_store_sandbox_clear(&got);
    clr_store_sandbox_clear(&s);
}

static void test_sandbox_hostile_strings_stored_verbatim(void **state)
{
    struct fixture *fx = *state;
    static const char id[] = "x'); DROP TABLE sandboxes;--";
    clr_store_sandbox s = sample(id, 1, CLR_STATE_RUNNING);
    snprintf(s.info.image, sizeof(s.info.image), "img\"; DELETE FROM execs; --");
    insert_ok(fx->st, &s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, id, &got, &err), 0);
    assert_string_equal(got.info.id, id);
    assert_string_equal(got.info.image, s.info.image);
    clr_store_sandbox_clear(&got);
    int n = -1;
    assert_int_equal(clr_store_count_running(fx->st, &n, &err), 0);
    assert_int_equal(n, 1);
    clr_store_sandbox_clear(&s);
}

static void test_sandbox_list_by_state_oldest_first(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        const char *id;
        int64_t created;
        const char *state;
    } rows[] = {
        {"sb-00000000000000c3", 300, CLR_STATE_RUNNING},
        {"sb-00000000000000c1", 100, CLR_STATE_RUNNING},
        {"sb-00000000000000c2", 200, CLR_STATE_DESTROYED},
        {"sb-00000000000000c4", 50, CLR_STATE_LOST},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        clr_store_sandbox s = sample(rows[i].id, rows[i].created, rows[i].state);
        insert_ok(fx->st, &s);
        clr_store_sandbox_clear(&s);
    }
    clr_store_sandbox *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_list(fx->st, CLR_STATE_RUNNING, &v, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].info.id, "sb-00000000000000c1");
    assert_string_equal(v[1].info.id, "sb-00000000000000c3");
    assert_true(json_is_object(v[0].metadata));
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&v[i]);
    free(v);

    assert_int_equal(clr_store_sandbox_list(fx->st, NULL, &v, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].info.id, "sb-00000000000000c4");
    assert_string_equal(v[3].info.id, "sb-00000000000000c3");
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&v[i]);
    free(v);

    assert_int_equal(clr_store_sandbox_list(fx->st, "no-such-state", &v, &n, &err), 0);
    assert_int_equal(n, 0);
    free(v);

    int running = -1;
    assert_int_equal(clr_store_count_running(fx->st, &running, &err), 0);
    assert_int_equal(running, 2);
}

static void test_sandbox_list_many_rows(void **state)
{
    struct fixture *fx = *state;
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof(id), "sb-%016x", (unsigned)i);
        clr_store_sandbox s = sample(id, 1000 - i, CLR_STATE_RUNNING);
        insert_ok(fx->st, &s);
        clr_store_sandbox_clear(&s);
    }
    clr_store_sandbox *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_list(fx->st, NULL, &v, &n, &err), 0);
    assert_int_equal(n, 40);
    for (size_t i = 1; i < n; i++)
        assert_true(v[i - 1].info.created_at <= v[i].info.created_at);
    for (size_t i = 0; i < n; i++)
        clr_store_sandbox_clear(&v[i]);
    free(v);
}

static void test_sandbox_set_state_records_reason_and_time(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d1", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_set_state(fx->st, "sb-00000000000000d1",
                                                 CLR_STATE_DESTROYED, "expired", 777, &err),
                     0);
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d1", &got, &err), 0);
    assert_string_equal(got.info.state, CLR_STATE_DESTROYED);
    assert_string_equal(got.destroy_reason, "expired");
    assert_int_equal(got.destroyed_at, 777);
    clr_store_sandbox_clear(&got);

    /* NULL reason is stored as empty */
    assert_int_equal(clr_store_sandbox_set_state(fx->st, "sb-00000000000000d1", CLR_STATE_LOST,
                                                 NULL, 778, &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d1", &got, &err), 0);
    assert_string_equal(got.info.state, CLR_STATE_LOST);
    assert_string_equal(got.destroy_reason, "");
    clr_store_sandbox_clear(&got);

    int running = -1;
    assert_int_equal(clr_store_count_running(fx->st, &running, &err), 0);
    assert_int_equal(running, 0);
}

/* issue #17: a reason was cut at 31 bytes ("container vanished while the da"). */
static void test_sandbox_destroy_reason_whole_or_cut_at_a_character(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d2", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    clr_store_sandbox got;
    const char *whole = "container vanished while the daemon was down";
    assert_int_equal(clr_store_sandbox_set_state(fx->st, "sb-00000000000000d2", CLR_STATE_LOST,
                                                 whole, 5, &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d2", &got, &err), 0);
    assert_string_equal(got.destroy_reason, whole);
    clr_store_sandbox_clear(&got);

    /* Exactly the bound: kept whole. */
    char at_max[CLR_STORE_REASON_MAX + 1];
    memset(at_max, 'r', CLR_STORE_REASON_MAX);
    at_max[CLR_STORE_REASON_MAX] = '\0';
    assert_int_equal(clr_store_sandbox_set_state(fx->st, "sb-00000000000000d2", CLR_STATE_LOST,
                                                 at_max, 6, &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d2", &got, &err), 0);
    assert_string_equal(got.destroy_reason, at_max);
    clr_store_sandbox_clear(&got);

    /* Longer, of three-byte characters ("€", E2 82 AC) after one ASCII byte: the bound falls
     * inside a character, which is dropped whole; what is kept is a prefix of valid UTF-8. */
    char longer[1 + 3 * 200 + 1];
    longer[0] = 'x';
    for (int i = 0; i < 200; i++)
        memcpy(longer + 1 + 3 * i, "\xe2\x82\xac", 3);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(clr_store_sandbox_set_state(fx->st, "sb-00000000000000d2", CLR_STATE_LOST,
                                                 longer, 7, &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000d2", &got, &err), 0);
    size_t n = strlen(got.destroy_reason);
    assert_true(n <= CLR_STORE_REASON_MAX);
    assert_true(n > CLR_STORE_REASON_MAX - 3);
    assert_int_equal((n - 1) % 3, 0); /* whole characters only */
    assert_memory_equal(got.destroy_reason, longer, n);
    clr_store_sandbox_clear(&got);
}

/* Two threads that both see a sandbox die record its loss once: only the first change applies. */
static void test_sandbox_set_state_from_changes_once(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000d2", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    const char *id = "sb-00000000000000d2";
    assert_int_equal(clr_store_sandbox_set_state_from(fx->st, id, CLR_STATE_RUNNING,
                                                      CLR_STATE_LOST, "oom", 780, &err),
                     1);
    assert_int_equal(clr_store_sandbox_set_state_from(fx->st, id, CLR_STATE_RUNNING,
                                                      CLR_STATE_LOST, "runtime died", 781, &err),
                     0);
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, id, &got, &err), 0);
    assert_string_equal(got.info.state, CLR_STATE_LOST);
    assert_string_equal(got.destroy_reason, "oom");
    assert_int_equal(got.destroyed_at, 780);
    clr_store_sandbox_clear(&got);
    /* An unknown id changes nothing and is no error. */
    assert_int_equal(clr_store_sandbox_set_state_from(fx->st, "sb-00000000000000ff",
                                                      CLR_STATE_RUNNING, CLR_STATE_LOST, "oom",
                                                      782, &err),
                     0);
}

/* Updates from threads sharing one store each see their own count of changed rows: one thread's
 * change always matches its row (1), the other's never matches (0). The count read after another
 * thread's statement would give one of them the other's. */
struct race_arm {
    clr_store *st;
    const char *id;
    const char *from; /* NULL: toggle between running and destroyed, which always matches */
    int rounds;
    int wrong;
    int errors;
};

static void *race_updates(void *arg)
{
    struct race_arm *a = arg;
    for (int i = 0; i < a->rounds; i++) {
        clr_error err = CLR_ERROR_INIT;
        const char *from = a->from ? a->from : i % 2 ? CLR_STATE_DESTROYED : CLR_STATE_RUNNING;
        const char *to = i % 2 ? CLR_STATE_RUNNING : CLR_STATE_DESTROYED;
        int n = clr_store_sandbox_set_state_from(a->st, a->id, from, to, "", i, &err);
        if (n < 0)
            a->errors++;
        else if (n != (a->from ? 0 : 1))
            a->wrong++;
    }
    return NULL;
}

static void test_concurrent_updates_count_their_own_changes(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000c1", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    s = sample("sb-00000000000000c2", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    struct race_arm hit = {fx->st, "sb-00000000000000c1", NULL, 400, 0, 0};
    struct race_arm miss = {fx->st, "sb-00000000000000c2", CLR_STATE_LOST, 400, 0, 0};
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, race_updates, &hit), 0);
    assert_int_equal(pthread_create(&b, NULL, race_updates, &miss), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(hit.errors + miss.errors, 0);
    assert_int_equal(hit.wrong, 0);
    assert_int_equal(miss.wrong, 0);
    /* Positive control: every one of the matching thread's changes landed (an even count). */
    clr_error err = CLR_ERROR_INIT;
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000c1", &got, &err), 0);
    assert_string_equal(got.info.state, CLR_STATE_RUNNING);
    assert_int_equal(got.destroyed_at, 399);
    clr_store_sandbox_clear(&got);
}

static void test_sandbox_touch_and_set_expiry(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000e1", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_touch(fx->st, "sb-00000000000000e1", 5555, &err), 0);
    assert_int_equal(clr_store_sandbox_set_expiry(fx->st, "sb-00000000000000e1", 9999, &err), 0);
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e1", &got, &err), 0);
    assert_int_equal(got.last_active_at, 5555);
    assert_int_equal(got.info.expires_at, 9999);
    assert_int_equal(got.info.created_at, 10); /* nothing else moved */
    assert_int_equal(got.max_expires_at, 10 + 3600);
    clr_store_sandbox_clear(&got);
}

/* A restore in place (issue #22) points the row at its new container; nothing else moves, and
 * an id without a row is not found. */
static void test_sandbox_set_container(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000e2", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    char before[sizeof(s.info.container_id)];
    memcpy(before, s.info.container_id, sizeof(before));
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_string_equal(got.info.container_id, before); /* positive control */
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, "sb-00000000000000e2", before, &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_true(got.attached); /* positive control: the old container's channel was attached */
    clr_store_sandbox_clear(&got);
    assert_int_equal(clr_store_sandbox_set_container(fx->st, "sb-00000000000000e2", "c0ffee2",
                                                     &err),
                     0);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_string_equal(got.info.container_id, "c0ffee2");
    assert_false(got.attached); /* a new container: no channel attached to it yet */
    assert_string_equal(got.info.state, CLR_STATE_RUNNING);
    assert_int_equal(got.info.created_at, 10);
    assert_int_equal(got.max_expires_at, 10 + 3600);
    clr_store_sandbox_clear(&got);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_set_container(fx->st, "sb-00000000000000e3", "x", &err),
                     -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

static bool attached_now(clr_store *st, const char *id)
{
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(st, id, &got, &err), 0);
    bool a = got.attached;
    clr_store_sandbox_clear(&got);
    return a;
}

/* The race a restore in place had with a request (issue #22): the request opens the new
 * container and marks it attached before the swap records that container. The swap keeps a
 * mark naming its new container and clears one of the old; an attach of the replaced container
 * marked after the swap reads as attached (fail closed); a later swap to a container no attach
 * named clears it. */
static void test_attached_survives_swap_to_its_container(void **state)
{
    struct fixture *fx = *state;
    const char *id = "sb-00000000000000e4";
    clr_store_sandbox s = sample(id, 10, CLR_STATE_RUNNING);
    snprintf(s.info.container_id, sizeof(s.info.container_id), "c-old");
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    /* The old container was attached: the swap to a new one clears it (positive control). */
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, id, "c-old", &err), 0);
    assert_true(attached_now(fx->st, id));
    assert_int_equal(clr_store_sandbox_set_container(fx->st, id, "c-new1", &err), 0);
    assert_false(attached_now(fx->st, id));
    /* The race: the new container is attached (marked) before the swap records it. */
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, id, "c-new2", &err), 0);
    assert_int_equal(clr_store_sandbox_set_container(fx->st, id, "c-new2", &err), 0);
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, id, &got, &err), 0);
    assert_string_equal(got.info.container_id, "c-new2");
    assert_true(got.attached); /* the attach of the new container is not forgotten */
    clr_store_sandbox_clear(&got);
    /* A stale request marks the container the swap replaced: not knowing is attached. */
    assert_int_equal(clr_store_sandbox_set_container(fx->st, id, "c-new3", &err), 0);
    assert_false(attached_now(fx->st, id)); /* positive control */
    assert_int_equal(clr_store_sandbox_set_attached(fx->st, id, "c-new2", &err), 0);
    assert_true(attached_now(fx->st, id));
    assert_int_equal(clr_store_sandbox_set_container(fx->st, id, "c-new4", &err), 0);
    assert_false(attached_now(fx->st, id));
}

/* A database of schema 7 (the sticky flag) is migrated: a row attached then names its
 * container (still attached), one with no container still reads attached, one never attached
 * stays so. */
static void test_migration_of_attached_flag(void **state)
{
    struct fixture *fx = *state;
    const char *ids[] = {"sb-00000000000000e5", "sb-00000000000000e6", "sb-00000000000000e7"};
    for (int i = 0; i < 3; i++) {
        clr_store_sandbox s = sample(ids[i], 10, CLR_STATE_RUNNING);
        insert_ok(fx->st, &s);
        clr_store_sandbox_clear(&s);
    }
    clr_store_close(fx->st);
    fx->st = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE sandboxes DROP COLUMN attached_to;"
                                  "ALTER TABLE snapshots DROP COLUMN held;"
                                  "UPDATE sandboxes SET attached = 1 WHERE id IN"
                                  " ('sb-00000000000000e5', 'sb-00000000000000e6');"
                                  "UPDATE sandboxes SET container_id = '' WHERE id ="
                                  " 'sb-00000000000000e6';"
                                  "PRAGMA user_version = 7;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_int_equal(user_version(fx->path), 9);
    assert_true(attached_now(fx->st, ids[0]));
    assert_true(attached_now(fx->st, ids[1]));
    assert_false(attached_now(fx->st, ids[2]));
    /* The migrated mark names the row's container: a swap to another clears it. */
    assert_int_equal(clr_store_sandbox_set_container(fx->st, ids[0], "c-other", &err), 0);
    assert_false(attached_now(fx->st, ids[0]));
}

/* A database of schema 8 (snapshots without a hold) is migrated: its snapshots read not held,
 * keep as it was, and can be held. */
static void test_migration_adds_snapshot_hold(void **state)
{
    struct fixture *fx = *state;
    clr_error err = CLR_ERROR_INIT;
    json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:b, s:{}}", "id",
                          "snap-00000000000000c1", "sandbox", "sb-a", "tenant", "t1", "parent",
                          "", "size", 1, "sha256", "ab", "created_at", 1, "expires_at", 1000,
                          "keep", 1, "source");
    assert_int_equal(clr_store_snapshot_insert(fx->st, r, &err), 0);
    json_decref(r);
    clr_store_close(fx->st);
    fx->st = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE snapshots DROP COLUMN held;"
                                  "PRAGMA user_version = 8;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_int_equal(user_version(fx->path), 9);
    assert_false(snapshot_flag(fx->st, "snap-00000000000000c1", "held"));
    assert_true(snapshot_flag(fx->st, "snap-00000000000000c1", "keep"));
    assert_int_equal(clr_store_snapshot_hold(fx->st, "snap-00000000000000c1", &err), 0);
    assert_true(snapshot_flag(fx->st, "snap-00000000000000c1", "held"));
}

static void test_sandbox_large_and_negative_times_kept(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000e2", 0, CLR_STATE_RUNNING);
    s.info.created_at = INT64_MAX - 10;
    s.info.expires_at = INT64_MAX;
    s.max_expires_at = INT64_MAX;
    s.last_active_at = -5;
    s.info.limits.workspace_inodes = 10000000;
    s.info.limits.fsize_bytes = 64 * CLR_GIB;
    insert_ok(fx->st, &s);
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, s.info.id, &got, &err), 0);
    assert_true(got.info.created_at == INT64_MAX - 10);
    assert_true(got.info.expires_at == INT64_MAX);
    assert_true(got.last_active_at == -5);
    assert_true(clr_limits_equal(&got.info.limits, &s.info.limits));
    clr_store_sandbox_clear(&got);
    clr_store_sandbox_clear(&s);
}

static void test_sandbox_not_found_errors(void **state)
{
    struct fixture *fx = *state;
    static const char id[] = "sb-ffffffffffffffff";
    clr_store_sandbox got;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, id, &got, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, id));

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(
        clr_store_sandbox_set_state(fx->st, id, CLR_STATE_DESTROYED, "client", 1, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_set_expiry(fx->st, id, 1, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);

    /* an id that is a prefix of an existing one is not that one */
    clr_store_sandbox s = sample("sb-00000000000000f1", 1, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000f", &got, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000%", &got, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
}

/* ---- execs -------------------------------------------------------------------------------- */

static void test_exec_insert_finish_get(void **state)
{
    struct fixture *fx = *state;
    json_t *req = json_pack("{s:[s, s], s:s}", "argv", "echo", "hi", "cwd", "/workspace");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-1", "sb-00000000000000a1", req, 100, &err),
                     0);

    json_t *got = NULL;
    assert_int_equal(clr_store_exec_get(fx->st, "ex-1", &got, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "id")), "ex-1");
    assert_string_equal(json_string_value(json_object_get(got, "sandbox_id")),
                        "sb-00000000000000a1");
    assert_string_equal(json_string_value(json_object_get(got, "state")),
                        CLR_EXEC_STATE_RUNNING);
    assert_true(json_equal(json_object_get(got, "request"), req));
    assert_true(json_is_null(json_object_get(got, "result")));
    assert_int_equal(json_integer_value(json_object_get(got, "created_at")), 100);
    assert_int_equal(json_integer_value(json_object_get(got, "finished_at")), 0);
    json_decref(got);

    int running = -1;
    assert_int_equal(
        clr_store_sandbox_running_execs(fx->st, "sb-00000000000000a1", &running, &err), 0);
    assert_int_equal(running, 1);

    json_t *res = json_pack("{s:s, s:i, s:s}", "status", "exited", "exit_code", 0, "stdout",
                            "hi\n");
    assert_int_equal(
        clr_store_exec_finish(fx->st, "ex-1", CLR_EXEC_STATE_DONE, res, 150, &err), 0);
    assert_int_equal(clr_store_exec_get(fx->st, "ex-1", &got, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "state")), CLR_EXEC_STATE_DONE);
    assert_true(json_equal(json_object_get(got, "result"), res));
    assert_int_equal(json_integer_value(json_object_get(got, "finished_at")), 150);
    json_decref(got);
    assert_int_equal(
        clr_store_sandbox_running_execs(fx->st, "sb-00000000000000a1", &running, &err), 0);
    assert_int_equal(running, 0);

    json_decref(req);
    json_decref(res);
}

static void test_exec_duplicate_id_refused(void **state)
{
    struct fixture *fx = *state;
    json_t *req = json_pack("{s:s}", "shell", "true");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-dup", "sb-1", req, 1, &err), 0);
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-dup", "sb-2", req, 2, &err), -1);
    json_decref(req);
}

static void test_exec_get_not_found(void **state)
{
    struct fixture *fx = *state;
    json_t *got = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_exec_get(fx->st, "ex-nope", &got, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_null(got);
}

static void test_exec_mark_lost_turns_running_into_lost(void **state)
{
    struct fixture *fx = *state;
    json_t *req = json_pack("{s:s}", "shell", "sleep 100");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-a", "sb-1", req, 1, &err), 0);
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-b", "sb-1", req, 2, &err), 0);
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-c", "sb-2", req, 3, &err), 0);
    json_t *res = json_pack("{s:s}", "status", "exited");
    assert_int_equal(clr_store_exec_finish(fx->st, "ex-c", CLR_EXEC_STATE_DONE, res, 4, &err), 0);

    assert_int_equal(clr_store_exec_mark_lost(fx->st, 99, &err), 2);

    json_t *got = NULL;
    static const char *const lost[] = {"ex-a", "ex-b"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(clr_store_exec_get(fx->st, lost[i], &got, &err), 0);
        assert_string_equal(json_string_value(json_object_get(got, "state")),
                            CLR_EXEC_STATE_LOST);
        assert_int_equal(json_integer_value(json_object_get(got, "finished_at")), 99);
        json_t *r = json_object_get(got, "result");
        assert_true(json_is_object(r));
        assert_string_equal(json_string_value(json_object_get(r, "status")), "sandbox_failed");
        json_decref(got);
    }
    /* a finished exec keeps its result */
    assert_int_equal(clr_store_exec_get(fx->st, "ex-c", &got, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "state")), CLR_EXEC_STATE_DONE);
    assert_true(json_equal(json_object_get(got, "result"), res));
    assert_int_equal(json_integer_value(json_object_get(got, "finished_at")), 4);
    json_decref(got);

    int running = -1;
    assert_int_equal(clr_store_sandbox_running_execs(fx->st, "sb-1", &running, &err), 0);
    assert_int_equal(running, 0);
    /* nothing left to mark */
    assert_int_equal(clr_store_exec_mark_lost(fx->st, 100, &err), 0);
    json_decref(req);
    json_decref(res);
}

static void test_exec_survives_reopen(void **state)
{
    struct fixture *fx = *state;
    json_t *req = json_pack("{s:s}", "shell", "make");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_store_exec_insert(fx->st, "ex-r", "sb-1", req, 1, &err), 0);
    clr_store_close(fx->st);
    fx->st = NULL;
    assert_int_equal(clr_store_open(&fx->st, fx->path, &err), 0);
    assert_int_equal(clr_store_exec_mark_lost(fx->st, 2, &err), 1);
    json_t *got = NULL;
    assert_int_equal(clr_store_exec_get(fx->st, "ex-r", &got, &err), 0);
    assert_true(json_equal(json_object_get(got, "request"), req));
    json_decref(got);
    json_decref(req);
}

/* The exec record and the sandbox's last activity go in one transaction: both or neither. */
static void test_exec_insert_and_finish_touch_in_one_commit(void **state)
{
    struct fixture *fx = *state;
    clr_store_sandbox s = sample("sb-00000000000000e2", 10, CLR_STATE_RUNNING);
    insert_ok(fx->st, &s);
    clr_store_sandbox_clear(&s);
    clr_error err = CLR_ERROR_INIT;
    json_t *req = json_pack("{s:[s]}", "argv", "true");
    assert_int_equal(clr_store_exec_insert_touch(fx->st, "ex-t1", "sb-00000000000000e2", 7, req,
                                                 200, &err),
                     0);
    clr_store_sandbox got;
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_int_equal(got.last_active_at, 200);
    clr_store_sandbox_clear(&got);
    json_t *rec = NULL;
    assert_int_equal(clr_store_exec_get(fx->st, "ex-t1", &rec, &err), 0);
    assert_string_equal(json_string_value(json_object_get(rec, "state")),
                        CLR_EXEC_STATE_RUNNING);
    json_decref(rec);

    /* A duplicate id fails the insert: the touch in the same transaction is rolled back. */
    assert_int_equal(clr_store_exec_insert_touch(fx->st, "ex-t1", "sb-00000000000000e2", 7, req,
                                                 300, &err),
                     -1);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_int_equal(got.last_active_at, 200);
    clr_store_sandbox_clear(&got);

    /* The connection is usable after the rollback: the finish and its touch land together. */
    json_t *res = json_pack("{s:s, s:i}", "status", "exited", "exit_code", 0);
    assert_int_equal(clr_store_exec_finish_touch(fx->st, "ex-t1", "sb-00000000000000e2",
                                                 CLR_EXEC_STATE_DONE, res, 400, &err),
                     0);
    assert_int_equal(clr_store_exec_get(fx->st, "ex-t1", &rec, &err), 0);
    assert_string_equal(json_string_value(json_object_get(rec, "state")), CLR_EXEC_STATE_DONE);
    assert_true(json_equal(json_object_get(rec, "result"), res));
    assert_int_equal(json_integer_value(json_object_get(rec, "finished_at")), 400);
    json_decref(rec);
    assert_int_equal(clr_store_sandbox_get(fx->st, "sb-00000000000000e2", &got, &err), 0);
    assert_int_equal(got.last_active_at, 400);
    clr_store_sandbox_clear(&got);
    json_decref(res);
    json_decref(req);
}

/* Snapshot rows: a row reads back as written, lists filter by sandbox and tenant, the total
 * adds the sizes, a row can be marked kept, held and released apart from its keep, a deleted
 * row is gone (and deleting it again is not an error). */
static void test_snapshot_rows(void **state)
{
    struct fixture *fx = *state;
    clr_error err = CLR_ERROR_INIT;
    const char *rows[][3] = {{"snap-0000000000000001", "sb-a", "t1"},
                             {"snap-0000000000000002", "sb-a", "t1"},
                             {"snap-0000000000000003", "sb-b", "t2"}};
    for (int i = 0; i < 3; i++) {
        json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:b, s:{s:s}}", "id",
                              rows[i][0], "sandbox", rows[i][1], "tenant", rows[i][2], "parent",
                              i == 1 ? rows[0][0] : "", "size", 100 * (i + 1), "sha256", "ab",
                              "created_at", 10 + i, "expires_at", 1000, "keep", i == 2, "source",
                              "image", "clearing/default:latest");
        assert_int_equal(clr_store_snapshot_insert(fx->st, r, &err), 0);
        json_decref(r);
    }
    json_t *one = NULL;
    assert_int_equal(clr_store_snapshot_get(fx->st, rows[1][0], &one, &err), 0);
    assert_string_equal(json_string_value(json_object_get(one, "sandbox")), "sb-a");
    assert_string_equal(json_string_value(json_object_get(one, "parent")), rows[0][0]);
    assert_int_equal(json_integer_value(json_object_get(one, "size")), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(one, "source"), "image")),
                        "clearing/default:latest");
    json_decref(one);
    assert_int_equal(clr_store_snapshot_get(fx->st, rows[0][0], &one, &err), 0);
    assert_true(json_is_null(json_object_get(one, "parent")));
    assert_false(json_is_true(json_object_get(one, "keep")));
    json_decref(one);
    assert_int_equal(clr_store_snapshot_keep(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_get(fx->st, rows[0][0], &one, &err), 0);
    assert_true(json_is_true(json_object_get(one, "keep")));
    json_decref(one);
    assert_int_equal(clr_store_snapshot_keep(fx->st, "snap-00000000000000ff", &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
    /* A restore's hold is apart from keep: held and released, a kept snapshot stays kept, and
     * one not kept stays not kept; holding twice is one hold (a crash's left over, taken
     * over). Unknown ones are not found. */
    assert_false(snapshot_flag(fx->st, rows[0][0], "held")); /* a new row is not held */
    assert_int_equal(clr_store_snapshot_hold(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_hold(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_hold(fx->st, rows[1][0], &err), 0);
    assert_true(snapshot_flag(fx->st, rows[0][0], "held"));
    assert_true(snapshot_flag(fx->st, rows[0][0], "keep"));
    assert_true(snapshot_flag(fx->st, rows[1][0], "held"));
    assert_false(snapshot_flag(fx->st, rows[1][0], "keep")); /* a hold is not a keep */
    assert_int_equal(clr_store_snapshot_release(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_release(fx->st, rows[1][0], &err), 0);
    assert_false(snapshot_flag(fx->st, rows[0][0], "held"));
    assert_true(snapshot_flag(fx->st, rows[0][0], "keep")); /* the user's keep stays */
    assert_false(snapshot_flag(fx->st, rows[1][0], "held"));
    assert_false(snapshot_flag(fx->st, rows[1][0], "keep"));
    assert_int_equal(clr_store_snapshot_hold(fx->st, "snap-00000000000000ff", &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_store_snapshot_release(fx->st, "snap-00000000000000ff", &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    err = (clr_error)CLR_ERROR_INIT;
    json_t *list = NULL;
    assert_int_equal(clr_store_snapshot_list(fx->st, "sb-a", NULL, &list, &err), 0);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    assert_int_equal(clr_store_snapshot_list(fx->st, NULL, "t2", &list, &err), 0);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    assert_int_equal(clr_store_snapshot_list(fx->st, NULL, NULL, &list, &err), 0);
    assert_int_equal(json_array_size(list), 3);
    json_decref(list);
    uint64_t total = 0;
    assert_int_equal(clr_store_snapshot_total(fx->st, &total, &err), 0);
    assert_int_equal(total, 600);
    assert_int_equal(clr_store_snapshot_delete(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_get(fx->st, rows[0][0], &one, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_int_equal(clr_store_snapshot_delete(fx->st, rows[0][0], &err), 0);
    assert_int_equal(clr_store_snapshot_total(fx->st, &total, &err), 0);
    assert_int_equal(total, 500);
}

int main(void)
{
#define F(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        F(test_open_twice_migration_idempotent),
        F(test_newer_schema_refused),
        F(test_open_in_missing_directory_fails),
        F(test_open_on_garbage_file_fails),
        F(test_garbage_file_named_as_corrupt_with_remedy),
        F(test_damaged_page_found_at_open),
        F(test_created_only_by_the_first_open),
        F(test_recovered_flag_round_trip),
        F(test_tenant_round_trip),
        F(test_migration_to_tenants_keeps_rows_as_default),
        F(test_sandbox_insert_get_round_trip),
        F(test_sandbox_insert_defaults),
        F(test_sandbox_duplicate_id_refused),
        F(test_sandbox_hostile_strings_stored_verbatim),
        F(test_sandbox_list_by_state_oldest_first),
        F(test_sandbox_list_many_rows),
        F(test_sandbox_set_state_records_reason_and_time),
        F(test_sandbox_destroy_reason_whole_or_cut_at_a_character),
        F(test_sandbox_set_state_from_changes_once),
        F(test_concurrent_updates_count_their_own_changes),
        F(test_sandbox_touch_and_set_expiry),
        F(test_sandbox_set_container),
        F(test_attached_survives_swap_to_its_container),
        F(test_migration_of_attached_flag),
        F(test_migration_adds_snapshot_hold),
        F(test_sandbox_large_and_negative_times_kept),
        F(test_sandbox_not_found_errors),
        F(test_exec_insert_finish_get),
        F(test_exec_duplicate_id_refused),
        F(test_exec_get_not_found),
        F(test_exec_mark_lost_turns_running_into_lost),
        F(test_exec_survives_reopen),
        F(test_exec_insert_and_finish_touch_in_one_commit),
        F(test_snapshot_rows),
        F(test_attached_flag_sticky),
    };
#undef F
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
