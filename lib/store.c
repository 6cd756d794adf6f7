/* SQLite state of the daemon. WAL mode with synchronous=FULL: a row the daemon has written before
 * answering a client survives a kill -9 of the daemon and a power cut. Migrations are a list of
 * SQL scripts applied in order; PRAGMA user_version records how far a database has come. */
#include <errno.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "clearing/store.h"

struct clr_store {
    sqlite3 *db;
    char *path;
    char dir[4096]; /* the directory that holds it: where "no space left" is */
    bool created;   /* this open created it (schema 0): an empty database, e.g. moved aside */
};

static const char *const migrations[] = {
    /* 1: sandboxes and execs */
    "CREATE TABLE sandboxes ("
    "  id TEXT PRIMARY KEY,"
    "  container_id TEXT NOT NULL,"
    "  image TEXT NOT NULL,"
    "  runtime TEXT NOT NULL,"
    "  insecure INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  max_expires_at INTEGER NOT NULL,"
    "  idle_timeout_s INTEGER NOT NULL,"
    "  last_active_at INTEGER NOT NULL,"
    "  destroyed_at INTEGER NOT NULL DEFAULT 0,"
    "  destroy_reason TEXT NOT NULL DEFAULT '',"
    "  limits TEXT NOT NULL,"
    "  metadata TEXT NOT NULL,"
    "  env TEXT NOT NULL"
    ");"
    "CREATE INDEX sandboxes_state ON sandboxes(state);"
    "CREATE TABLE execs ("
    "  id TEXT PRIMARY KEY,"
    "  sandbox_id TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  request TEXT NOT NULL,"
    "  result TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  finished_at INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX execs_sandbox ON execs(sandbox_id, state);",
    /* 2: the live channel id a command runs on (0: a docker exec of its own) */
    "ALTER TABLE execs ADD COLUMN channel INTEGER NOT NULL DEFAULT 0;",
    /* 3: the sandbox's egress policy (JSON; '' for none) */
    "ALTER TABLE sandboxes ADD COLUMN egress TEXT NOT NULL DEFAULT '';",
    /* 4: adopted from its container's labels into an empty database (1) */
    "ALTER TABLE sandboxes ADD COLUMN recovered INTEGER NOT NULL DEFAULT 0;",
    /* 5: the tenant the sandbox belongs to (rows of older daemons: the default tenant's) */
    "ALTER TABLE sandboxes ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';",
    /* 6: snapshots (issue #22): a row once its files are whole (lib/snapshot.c) */
    "CREATE TABLE IF NOT EXISTS snapshots ("
    "  id TEXT PRIMARY KEY,"
    "  sandbox_id TEXT NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  parent TEXT NOT NULL DEFAULT '',"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  keep INTEGER NOT NULL DEFAULT 0,"
    "  source TEXT NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS snapshots_sandbox ON snapshots(sandbox_id);",
    /* 7: whether the sandbox's live channel was ever attached (sticky; rows of older daemons:
     * not known, 0, and attached again by the start's recovery when they run) */
    "ALTER TABLE sandboxes ADD COLUMN attached INTEGER NOT NULL DEFAULT 0;",
    /* 8: the container the live channel was attached to ('' none), in place of 7's flag (left
     * unused: SQLite before 3.35 cannot drop a column). A flag of the sandbox could be set for
     * a restore's new container and then cleared by the swap that records it; a mark naming
     * the container survives that swap (clr_store_sandbox_set_container). A row attached
     * under 7 names its container then ('?' when it had none: still attached). */
    "ALTER TABLE sandboxes ADD COLUMN attached_to TEXT NOT NULL DEFAULT '';"
    "UPDATE sandboxes SET attached_to = CASE WHEN container_id = '' THEN '?'"
    " ELSE container_id END WHERE attached = 1;",
    /* 9: a restore's hold on the snapshot it restores from (1 while held), apart from the
     * user's keep: a release clears only the hold, never a keep asked for, and the hold is
     * taken whatever keep says (it was read before the restore's lock, and could be a hold of
     * another restore about to be released). The sweep treats held as kept. */
    "ALTER TABLE snapshots ADD COLUMN held INTEGER NOT NULL DEFAULT 0;",
};

/* An SQLite failure as a clr_error. The two an operator must act on say so and name the file: a
 * full disk (SQLITE_FULL, or a write that failed with ENOSPC) and a corrupt file. */
static int sqlite_error(clr_store *st, clr_error *err, int rc, const char *what, const char *msg)
{
    int primary = rc & 0xff;
    /* The OS error is that of SQLite's last system call: it counts only for an I/O error. */
    int sys = st->db && primary == SQLITE_IOERR ? sqlite3_system_errno(st->db) : 0;
    if (primary == SQLITE_FULL || sys == ENOSPC || sys == EDQUOT)
        return clr_error_set(err, CLR_E_UNAVAILABLE, ENOSPC,
                             "no space left on %s: the state database %s cannot grow (%s: %s); "
                             "free space there and retry",
                             st->dir, st->path, what, msg);
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                             "state database %s is corrupt (sqlite: %s: %s): stop the daemon, "
                             "move it aside with any -wal and -shm file beside it (mv %s "
                             "%s.corrupt; mv %s-wal %s-wal.corrupt; mv %s-shm %s-shm.corrupt), "
                             "and start again; running sandboxes are adopted as recovered",
                             st->path, what, msg, st->path, st->path, st->path, st->path,
                             st->path, st->path);
    return clr_error_set(err, CLR_E_INTERNAL, EIO, "state database %s: %s: %s", st->path, what,
                         msg);
}

static int db_error(clr_store *st, clr_error *err, const char *what)
{
    return sqlite_error(st, err, sqlite3_extended_errcode(st->db), what, sqlite3_errmsg(st->db));
}

static int exec_sql(clr_store *st, const char *sql, clr_error *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        sqlite_error(st, err, rc, "executing", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* PRAGMA quick_check: "ok", or a row per problem found. */
static int quick_check(clr_store *st, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check(1)", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return db_error(st, err, "checking");
    rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(q);
        return db_error(st, err, "checking");
    }
    const unsigned char *t = sqlite3_column_text(q, 0);
    char verdict[256];
    snprintf(verdict, sizeof(verdict), "%s", t ? (const char *)t : "no answer");
    sqlite3_finalize(q);
    if (strcmp(verdict, "ok") == 0)
        return 0;
    return sqlite_error(st, err, SQLITE_CORRUPT, "quick_check", verdict);
}

int clr_store_open(clr_store **out, const char *path, clr_error *err)
{
    clr_store *st = calloc(1, sizeof(*st));
    if (!st)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    st->path = strdup(path);
    if (!st->path) {
        free(st);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    char dir[sizeof(st->dir)];
    snprintf(dir, sizeof(dir), "%s", path);
    snprintf(st->dir, sizeof(st->dir), "%s", dirname(dir));
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        clr_error_set(err, CLR_E_UNAVAILABLE, EIO,
                      "cannot open the state database %s: %s (is its directory writable?)", path,
                      st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        clr_store_close(st);
        return -1;
    }
    sqlite3_busy_timeout(st->db, 5000);
    if (exec_sql(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                 err) < 0) {
        clr_store_close(st);
        return -1;
    }
    sqlite3_stmt *q = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        /* Not a fresh database to migrate from 0: whatever it is, it is not readable. */
        db_error(st, err, "reading the schema version");
        sqlite3_finalize(q);
        clr_store_close(st);
        return -1;
    }
    version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    /* A damaged page is otherwise found only when a query reaches it, perhaps hours later and
     * in the middle of a request; the whole database is small, so it is checked once here. */
    if (version > 0 && quick_check(st, err) < 0) {
        clr_store_close(st);
        return -1;
    }
    st->created = version == 0;
    int latest = (int)(sizeof(migrations) / sizeof(migrations[0]));
    if (version > latest) {
        clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                      "state database %s has schema %d, newer than this clearing knows (%d): "
                      "run a newer clearing or move the database away",
                      path, version, latest);
        clr_store_close(st);
        return -1;
    }
    for (int v = version; v < latest; v++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version=%d;", v + 1);
        if (exec_sql(st, "BEGIN IMMEDIATE;", err) < 0 || exec_sql(st, migrations[v], err) < 0 ||
            exec_sql(st, bump, err) < 0 || exec_sql(st, "COMMIT;", err) < 0) {
            exec_sql(st, "ROLLBACK;", NULL);
            clr_error_prefix(err, "migrating %s to schema %d", path, v + 1);
            clr_store_close(st);
            return -1;
        }
    }
    *out = st;
    return 0;
}

void clr_store_close(clr_store *st)
{
    if (!st)
        return;
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

bool clr_store_created(const clr_store *st)
{
    return st->created;
}

void clr_store_sandbox_clear(clr_store_sandbox *s)
{
    json_decref(s->metadata);
    json_decref(s->env);
    memset(s, 0, sizeof(*s));
}

static char *limits_json(const clr_limits *l)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "cpu_millis",
                          (json_int_t)l->cpu_millis, "memory", (json_int_t)l->memory_bytes,
                          "pids", (json_int_t)l->pids, "lifetime", (json_int_t)l->lifetime_s,
                          "tmp", (json_int_t)l->tmp_bytes, "workspace",
                          (json_int_t)l->workspace_bytes, "workspace_inodes",
                          (json_int_t)l->workspace_inodes, "nofile", (json_int_t)l->nofile,
                          "fsize", (json_int_t)l->fsize_bytes);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void limits_from_json(clr_limits *l, const char *text)
{
    json_t *o = json_loads(text ? text : "{}", 0, NULL);
#define G(key) (json_integer_value(json_object_get(o, key)))
    l->cpu_millis = (uint32_t)G("cpu_millis");
    l->memory_bytes = (uint64_t)G("memory");
    l->pids = (uint32_t)G("pids");
    l->lifetime_s = (uint32_t)G("lifetime");
    l->tmp_bytes = (uint64_t)G("tmp");
    l->workspace_bytes = (uint64_t)G("workspace");
    l->workspace_inodes = (uint64_t)G("workspace_inodes");
    l->nofile = (uint32_t)G("nofile");
    l->fsize_bytes = (uint64_t)G("fsize");
#undef G
    json_decref(o);
}

int clr_store_sandbox_insert(clr_store *st, const clr_store_sandbox *s, clr_error *err)
{
    static const char sql[] =
        "INSERT INTO sandboxes (id, container_id, image, runtime, insecure, state, created_at,"
        " expires_at, max_expires_at, idle_timeout_s, last_active_at, limits, metadata, env,"
        " recovered, tenant, attached_to) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "insert sandbox");
    _cleanup_free_ char *limits = limits_json(&s->info.limits);
    /* Absent metadata or env are stored as {} and [] (below), without building throwaway JSON. */
    _cleanup_free_ char *meta = s->metadata ? json_dumps(s->metadata, JSON_COMPACT) : NULL;
    _cleanup_free_ char *env = s->env ? json_dumps(s->env, JSON_COMPACT) : NULL;
    sqlite3_bind_text(q, 1, s->info.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, s->info.container_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, s->info.image, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, s->info.runtime, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, s->info.insecure);
    sqlite3_bind_text(q, 6, s->info.state[0] ? s->info.state : CLR_STATE_RUNNING, -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, s->info.created_at);
    sqlite3_bind_int64(q, 8, s->info.expires_at);
    sqlite3_bind_int64(q, 9, s->max_expires_at);
    sqlite3_bind_int64(q, 10, s->idle_timeout_s);
    sqlite3_bind_int64(q, 11, s->last_active_at);
    sqlite3_bind_text(q, 12, limits ? limits : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 13, meta ? meta : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 14, env ? env : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 15, s->recovered);
    sqlite3_bind_text(q, 16, s->info.tenant[0] ? s->info.tenant : CLR_TENANT_DEFAULT, -1,
                      SQLITE_STATIC);
    /* A row inserted attached (a pooled sandbox's) names its container ('?' without one). */
    const char *to = !s->attached ? "" : s->info.container_id[0] ? s->info.container_id : "?";
    sqlite3_bind_text(q, 17, to, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return db_error(st, err, "insert sandbox");
    return 0;
}

static void copy_col(char *dst, size_t len, sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    snprintf(dst, len, "%s", t ? (const char *)t : "");
}

/* How many bytes of s to keep within max: all of it if it fits, else up to the last whole
 * UTF-8 character (the bytes 10xxxxxx continue a character; the cut goes before its start). */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

#define SANDBOX_COLUMNS                                                                          \
    "id, container_id, image, runtime, insecure, state, created_at, expires_at,"                \
    " max_expires_at, idle_timeout_s, last_active_at, destroyed_at, destroy_reason, limits,"   \
    " metadata, env, recovered, tenant, attached_to"

static void row_to_sandbox(sqlite3_stmt *q, clr_store_sandbox *s)
{
    memset(s, 0, sizeof(*s));
    copy_col(s->info.id, sizeof(s->info.id), q, 0);
    copy_col(s->info.container_id, sizeof(s->info.container_id), q, 1);
    copy_col(s->info.image, sizeof(s->info.image), q, 2);
    copy_col(s->info.runtime, sizeof(s->info.runtime), q, 3);
    s->info.insecure = sqlite3_column_int(q, 4) != 0;
    copy_col(s->info.state, sizeof(s->info.state), q, 5);
    s->info.created_at = sqlite3_column_int64(q, 6);
    s->info.expires_at = sqlite3_column_int64(q, 7);
    s->max_expires_at = sqlite3_column_int64(q, 8);
    s->idle_timeout_s = (uint32_t)sqlite3_column_int64(q, 9);
    s->last_active_at = sqlite3_column_int64(q, 10);
    s->destroyed_at = sqlite3_column_int64(q, 11);
    /* Rows of older versions may hold a longer reason: cut it as set_state does. */
    const char *why = (const char *)sqlite3_column_text(q, 12);
    why = why ? why : "";
    size_t keep = utf8_prefix(why, sizeof(s->destroy_reason) - 1);
    memcpy(s->destroy_reason, why, keep);
    s->destroy_reason[keep] = '\0';
    limits_from_json(&s->info.limits, (const char *)sqlite3_column_text(q, 13));
    const char *meta = (const char *)sqlite3_column_text(q, 14);
    const char *env = (const char *)sqlite3_column_text(q, 15);
    s->metadata = json_loads(meta ? meta : "{}", 0, NULL);
    s->env = json_loads(env ? env : "[]", 0, NULL);
    if (!s->metadata)
        s->metadata = json_object();
    if (!s->env)
        s->env = json_array();
    s->recovered = sqlite3_column_int(q, 16) != 0;
    copy_col(s->info.tenant, sizeof(s->info.tenant), q, 17);
    /* Attached when it names any container: its own, or another one (a request that attached
     * the container a restore replaced, after the swap): not knowing is attached (fail
     * closed). Only the swap to a container not named clears it. */
    const char *to = (const char *)sqlite3_column_text(q, 18);
    s->attached = !to || to[0] != '\0';
}

int clr_store_sandbox_get(clr_store *st, const char *id, clr_store_sandbox *out, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT " SANDBOX_COLUMNS " FROM sandboxes WHERE id = ?", -1,
                           &q, NULL) != SQLITE_OK)
        return db_error(st, err, "get sandbox");
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        row_to_sandbox(q, out);
        sqlite3_finalize(q);
        return 0;
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id);
    return db_error(st, err, "get sandbox");
}

int clr_store_sandbox_list(clr_store *st, const char *state, clr_store_sandbox **out, size_t *n,
                           clr_error *err)
{
    sqlite3_stmt *q = NULL;
    const char *sql = state ? "SELECT " SANDBOX_COLUMNS
                              " FROM sandboxes WHERE state = ? ORDER BY created_at, id"
                            : "SELECT " SANDBOX_COLUMNS " FROM sandboxes ORDER BY created_at, id";
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "list sandboxes");
    if (state)
        sqlite3_bind_text(q, 1, state, -1, SQLITE_STATIC);
    clr_store_sandbox *v = NULL;
    size_t m = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (m == cap) {
            cap = cap ? cap * 2 : 16;
            clr_store_sandbox *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                for (size_t i = 0; i < m; i++)
                    clr_store_sandbox_clear(&v[i]);
                free(v);
                sqlite3_finalize(q);
                return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
            }
            v = nv;
        }
        row_to_sandbox(q, &v[m++]);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        for (size_t i = 0; i < m; i++)
            clr_store_sandbox_clear(&v[i]);
        free(v);
        return db_error(st, err, "list sandboxes");
    }
    *out = v;
    *n = m;
    return 0;
}

/* Runs an UPDATE with text/int64 parameters given as a format: 't' text, 'i' int64. */
static int update(clr_store *st, const char *sql, const char *fmt, clr_error *err, ...)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "update");
    va_list ap;
    va_start(ap, err);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 't')
            sqlite3_bind_text(q, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t));
    }
    va_end(ap);
    /* The connection is shared by the daemon's threads: its count of changed rows (and its error
     * message) are those of its last statement, so they are read under the connection's mutex,
     * held from the step on, before another thread's statement can run. */
    sqlite3_mutex *m = sqlite3_db_mutex(st->db);
    sqlite3_mutex_enter(m);
    int rc = sqlite3_step(q);
    int n = rc == SQLITE_DONE ? sqlite3_changes(st->db) : db_error(st, err, "update");
    sqlite3_mutex_leave(m);
    sqlite3_finalize(q);
    return n;
}

/* reason (NULL: "") cut to CLR_STORE_REASON_MAX bytes, never inside a UTF-8 character. */
static void bound_reason(char out[CLR_STORE_REASON_MAX + 1], const char *reason)
{
    reason = reason ? reason : "";
    size_t keep = utf8_prefix(reason, CLR_STORE_REASON_MAX);
    memcpy(out, reason, keep);
    out[keep] = '\0';
}

int clr_store_sandbox_set_state(clr_store *st, const char *id, const char *state,
                                const char *reason, int64_t when, clr_error *err)
{
    char bounded[CLR_STORE_REASON_MAX + 1];
    bound_reason(bounded, reason);
    int n = update(st,
                   "UPDATE sandboxes SET state = ?, destroy_reason = ?, destroyed_at = ?"
                   " WHERE id = ?",
                   "tti" "t", err, state, bounded, when, id);
    if (n < 0)
        return -1;
    return n == 0 ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id) : 0;
}

int clr_store_sandbox_set_state_from(clr_store *st, const char *id, const char *from,
                                     const char *state, const char *reason, int64_t when,
                                     clr_error *err)
{
    char bounded[CLR_STORE_REASON_MAX + 1];
    bound_reason(bounded, reason);
    int n = update(st,
                   "UPDATE sandboxes SET state = ?, destroy_reason = ?, destroyed_at = ?"
                   " WHERE id = ? AND state = ?",
                   "tti" "tt", err, state, bounded, when, id, from);
    return n < 0 ? -1 : n > 0;
}

int clr_store_sandbox_touch(clr_store *st, const char *id, int64_t when, clr_error *err)
{
    return update(st, "UPDATE sandboxes SET last_active_at = ? WHERE id = ?", "it", err, when,
                  id) < 0
               ? -1
               : 0;
}

int clr_store_sandbox_set_expiry(clr_store *st, const char *id, int64_t expires_at,
                                 clr_error *err)
{
    int n = update(st, "UPDATE sandboxes SET expires_at = ? WHERE id = ?", "it", err, expires_at,
                   id);
    if (n < 0)
        return -1;
    return n == 0 ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id) : 0;
}

int clr_store_sandbox_set_attached(clr_store *st, const char *id, const char *container_id,
                                   clr_error *err)
{
    if (!container_id || !container_id[0])
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "sandbox %s: no container id to record its channel's attach for",
                             id);
    int n = update(st, "UPDATE sandboxes SET attached_to = ? WHERE id = ?", "tt", err,
                   container_id, id);
    if (n < 0)
        return -1;
    return n == 0 ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id) : 0;
}

int clr_store_sandbox_set_container(clr_store *st, const char *id, const char *container_id,
                                    clr_error *err)
{
    /* One statement: a mark already naming the new container (a request attached it between
     * its create and this record) is kept; any other is cleared with the old container. */
    int n = update(st,
                   "UPDATE sandboxes SET container_id = ?, attached_to = CASE WHEN attached_to"
                   " = ? THEN attached_to ELSE '' END WHERE id = ?",
                   "ttt", err, container_id, container_id, id);
    if (n < 0)
        return -1;
    return n == 0 ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id) : 0;
}

static int count(clr_store *st, const char *sql, const char *arg, int *out, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "count");
    if (arg)
        sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    *out = rc == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : db_error(st, err, "count");
}

int clr_store_count_running(clr_store *st, int *out, clr_error *err)
{
    return count(st, "SELECT count(*) FROM sandboxes WHERE state IN ('running', 'plan')", NULL, out, err);
}

int clr_store_sandbox_running_execs(clr_store *st, const char *sandbox_id, int *out,
                                    clr_error *err)
{
    return count(st, "SELECT count(*) FROM execs WHERE sandbox_id = ? AND state = 'running'",
                 sandbox_id, out, err);
}

int clr_store_exec_insert(clr_store *st, const char *exec_id, const char *sandbox_id,
                          json_t *request, int64_t when, clr_error *err)
{
    return clr_store_exec_insert_on(st, exec_id, sandbox_id, 0, request, when, err);
}

int clr_store_exec_insert_on(clr_store *st, const char *exec_id, const char *sandbox_id,
                             uint32_t channel, json_t *request, int64_t when, clr_error *err)
{
    _cleanup_free_ char *req = json_dumps(request, JSON_COMPACT);
    if (!req)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return update(st,
                  "INSERT INTO execs (id, sandbox_id, state, request, created_at, channel)"
                  " VALUES (?, ?, 'running', ?, ?, ?)",
                  "tttii", err, exec_id, sandbox_id, req, when, (int64_t)channel) < 0
               ? -1
               : 0;
}

/* One write of several statements as one transaction (one commit, one sync of the WAL). The
 * connection's mutex is held from BEGIN to COMMIT: it is shared by the daemon's threads, and
 * another thread's statement must not land inside this transaction. */
static int tx_begin(clr_store *st, clr_error *err)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(st->db));
    if (exec_sql(st, "BEGIN IMMEDIATE;", err) == 0)
        return 0;
    sqlite3_mutex_leave(sqlite3_db_mutex(st->db));
    return -1;
}

/* Commits when rc is 0, else rolls back; returns rc, or -1 when the commit failed. */
static int tx_end(clr_store *st, int rc, clr_error *err)
{
    if (rc == 0 && exec_sql(st, "COMMIT;", err) < 0)
        rc = -1;
    if (rc < 0)
        exec_sql(st, "ROLLBACK;", NULL);
    sqlite3_mutex_leave(sqlite3_db_mutex(st->db));
    return rc;
}

int clr_store_exec_insert_touch(clr_store *st, const char *exec_id, const char *sandbox_id,
                                uint32_t channel, json_t *request, int64_t when, clr_error *err)
{
    if (tx_begin(st, err) < 0)
        return -1;
    int rc = clr_store_exec_insert_on(st, exec_id, sandbox_id, channel, request, when, err);
    if (rc == 0)
        rc = clr_store_sandbox_touch(st, sandbox_id, when, err);
    return tx_end(st, rc, err);
}

int clr_store_exec_finish_touch(clr_store *st, const char *exec_id, const char *sandbox_id,
                                const char *state, json_t *result, int64_t when, clr_error *err)
{
    if (tx_begin(st, err) < 0)
        return -1;
    int rc = clr_store_exec_finish(st, exec_id, state, result, when, err);
    if (rc == 0)
        rc = clr_store_sandbox_touch(st, sandbox_id, when, err);
    return tx_end(st, rc, err);
}

int clr_store_exec_finish_channel(clr_store *st, const char *sandbox_id, uint32_t channel,
                                  json_t *result, int64_t when, char *exec_id, size_t len,
                                  clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id FROM execs WHERE sandbox_id = ? AND channel = ?"
                           " AND state = 'running'",
                           -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "find exec by channel");
    sqlite3_bind_text(q, 1, sandbox_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, channel);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(q);
        return rc == SQLITE_DONE ? 0 : db_error(st, err, "find exec by channel");
    }
    snprintf(exec_id, len, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (clr_store_exec_finish(st, exec_id, CLR_EXEC_STATE_DONE, result, when, err) < 0)
        return -1;
    return 1;
}

int clr_store_exec_on_channel(clr_store *st, const char *sandbox_id, uint32_t channel,
                              clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT 1 FROM execs WHERE sandbox_id = ? AND channel = ? LIMIT 1",
                           -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "find exec by channel");
    sqlite3_bind_text(q, 1, sandbox_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, channel);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc == SQLITE_ROW;
    return db_error(st, err, "find exec by channel");
}

int clr_store_exec_mark_lost_sandbox(clr_store *st, const char *sandbox_id, const uint32_t *keep,
                                     size_t n, int64_t when, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, channel FROM execs WHERE sandbox_id = ?"
                           " AND state = 'running'",
                           -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "list running execs");
    sqlite3_bind_text(q, 1, sandbox_id, -1, SQLITE_STATIC);
    char (*lost)[64] = NULL;
    size_t nlost = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        uint32_t ch = (uint32_t)sqlite3_column_int64(q, 1);
        bool kept = false;
        for (size_t i = 0; ch && i < n && !kept; i++)
            kept = keep[i] == ch;
        if (kept)
            continue;
        char(*grown)[64] = realloc(lost, (nlost + 1) * sizeof(*lost));
        if (!grown)
            break;
        lost = grown;
        snprintf(lost[nlost++], sizeof(lost[0]), "%s", (const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_finalize(q);
    int marked = 0;
    for (size_t i = 0; i < nlost; i++) {
        int c = update(st,
                       "UPDATE execs SET state = 'lost', finished_at = ?,"
                       " result = '{\"status\":\"sandbox_failed\",\"message\":"
                       "\"the command ended while the daemon was away, and its sandbox no longer "
                       "knows it\"}' WHERE id = ? AND state = 'running'",
                       "it", err, when, lost[i]);
        if (c < 0) {
            free(lost);
            return -1;
        }
        marked += c;
    }
    free(lost);
    return marked;
}

int clr_store_exec_mark_lost_unowned(clr_store *st, int64_t when, clr_error *err)
{
    return update(st,
                  "UPDATE execs SET state = 'lost', finished_at = ?,"
                  " result = '{\"status\":\"sandbox_failed\",\"message\":"
                  "\"the daemon stopped while the command ran\"}'"
                  " WHERE state = 'running' AND sandbox_id NOT IN"
                  " (SELECT id FROM sandboxes WHERE state = 'running')",
                  "i", err, when);
}

int clr_store_exec_finish(clr_store *st, const char *exec_id, const char *state, json_t *result,
                          int64_t when, clr_error *err)
{
    _cleanup_free_ char *res = json_dumps(result, JSON_COMPACT);
    if (!res)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    return update(st, "UPDATE execs SET state = ?, result = ?, finished_at = ? WHERE id = ?",
                  "ttit", err, state, res, when, exec_id) < 0
               ? -1
               : 0;
}

int clr_store_exec_get(clr_store *st, const char *exec_id, json_t **out, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, sandbox_id, state, request, result, created_at, finished_at"
                           " FROM execs WHERE id = ?",
                           -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "get exec");
    sqlite3_bind_text(q, 1, exec_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(q);
        return rc == SQLITE_DONE ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no exec %s", exec_id)
                                 : db_error(st, err, "get exec");
    }
    const char *req = (const char *)sqlite3_column_text(q, 3);
    const char *res = (const char *)sqlite3_column_text(q, 4);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:I, s:I}", "id",
                          (const char *)sqlite3_column_text(q, 0), "sandbox_id",
                          (const char *)sqlite3_column_text(q, 1), "state",
                          (const char *)sqlite3_column_text(q, 2), "request",
                          /* A command's output may hold NUL bytes: "\u0000" in the record. */
                          req ? json_loads(req, JSON_ALLOW_NUL, NULL) : json_null(),
                          "result", res ? json_loads(res, JSON_ALLOW_NUL, NULL) : json_null(),
                          "created_at",
                          (json_int_t)sqlite3_column_int64(q, 5), "finished_at",
                          (json_int_t)sqlite3_column_int64(q, 6));
    sqlite3_finalize(q);
    if (!o)
        return clr_error_set(err, CLR_E_INTERNAL, EIO, "exec %s: stored record is unreadable",
                             exec_id);
    *out = o;
    return 0;
}

int clr_store_exec_mark_lost(clr_store *st, int64_t when, clr_error *err)
{
    return update(st,
                  "UPDATE execs SET state = 'lost', finished_at = ?,"
                  " result = '{\"status\":\"sandbox_failed\",\"message\":"
                  "\"the daemon stopped while the command ran\"}'"
                  " WHERE state = 'running'",
                  "i", err, when);
}

int clr_store_sandbox_set_egress(clr_store *st, const char *id, json_t *policy, clr_error *err)
{
    _cleanup_free_ char *text = policy ? json_dumps(policy, JSON_COMPACT) : strdup("");
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    int n = update(st, "UPDATE sandboxes SET egress = ? WHERE id = ?", "tt", err, text, id);
    if (n < 0)
        return -1;
    return n == 0 ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id) : 0;
}

int clr_store_sandbox_get_egress(clr_store *st, const char *id, json_t **out, clr_error *err)
{
    *out = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT egress FROM sandboxes WHERE id = ?", -1, &q, NULL) !=
        SQLITE_OK)
        return db_error(st, err, "get egress");
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(q);
        return rc == SQLITE_DONE ? clr_error_set(err, CLR_E_NOT_FOUND, 0, "no sandbox %s", id)
                                 : db_error(st, err, "get egress");
    }
    const char *text = (const char *)sqlite3_column_text(q, 0);
    if (text && *text)
        *out = json_loads(text, 0, NULL);
    sqlite3_finalize(q);
    return 0;
}

/* ---- snapshots ---- */

#define SNAPSHOT_COLUMNS                                                                         \
    "id, sandbox_id, tenant, parent, size, sha256, created_at, expires_at, keep, source"
/* Read, not inserted: a new snapshot is held by no restore. */
#define SNAPSHOT_READ_COLUMNS SNAPSHOT_COLUMNS ", held"

int clr_store_snapshot_insert(clr_store *st, json_t *row, clr_error *err)
{
    static const char sql[] = "INSERT INTO snapshots (" SNAPSHOT_COLUMNS
                              ") VALUES (?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "insert snapshot");
    json_t *src = json_object_get(row, "source");
    _cleanup_free_ char *source = src ? json_dumps(src, JSON_COMPACT) : NULL;
    static const char *const texts[] = {"id", "sandbox", "tenant", "parent", NULL, "sha256"};
    for (int i = 0; i < 6; i++)
        if (texts[i]) {
            const char *v = json_string_value(json_object_get(row, texts[i]));
            sqlite3_bind_text(q, i + 1, v ? v : "", -1, SQLITE_TRANSIENT);
        }
    sqlite3_bind_int64(q, 5, json_integer_value(json_object_get(row, "size")));
    sqlite3_bind_int64(q, 7, json_integer_value(json_object_get(row, "created_at")));
    sqlite3_bind_int64(q, 8, json_integer_value(json_object_get(row, "expires_at")));
    sqlite3_bind_int(q, 9, json_is_true(json_object_get(row, "keep")));
    sqlite3_bind_text(q, 10, source ? source : "{}", -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return db_error(st, err, "insert snapshot");
    return 0;
}

static json_t *row_to_snapshot(sqlite3_stmt *q)
{
    const char *parent = (const char *)sqlite3_column_text(q, 3);
    const char *source = (const char *)sqlite3_column_text(q, 9);
    json_t *src = source ? json_loads(source, 0, NULL) : NULL;
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:I, s:I, s:b, s:b, s:o}", "id",
                     (const char *)sqlite3_column_text(q, 0), "sandbox",
                     (const char *)sqlite3_column_text(q, 1), "tenant",
                     (const char *)sqlite3_column_text(q, 2), "parent",
                     parent && *parent ? json_string(parent) : json_null(), "size",
                     (json_int_t)sqlite3_column_int64(q, 4), "sha256",
                     (const char *)sqlite3_column_text(q, 5), "created_at",
                     (json_int_t)sqlite3_column_int64(q, 6), "expires_at",
                     (json_int_t)sqlite3_column_int64(q, 7), "keep", sqlite3_column_int(q, 8),
                     "held", sqlite3_column_int(q, 10), "source", src ? src : json_object());
}

int clr_store_snapshot_get(clr_store *st, const char *id, json_t **out, clr_error *err)
{
    *out = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT " SNAPSHOT_READ_COLUMNS " FROM snapshots WHERE id = ?", -1,
                           &q, NULL) != SQLITE_OK)
        return db_error(st, err, "get snapshot");
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *out = row_to_snapshot(q);
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0, "no snapshot %s", id);
    if (rc != SQLITE_ROW || !*out)
        return db_error(st, err, "get snapshot");
    return 0;
}

int clr_store_snapshot_list(clr_store *st, const char *sandbox_id, const char *tenant,
                            json_t **out, clr_error *err)
{
    *out = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT " SNAPSHOT_READ_COLUMNS " FROM snapshots WHERE (?1 IS NULL OR"
                           " sandbox_id = ?1) AND (?2 IS NULL OR tenant = ?2)"
                           " ORDER BY created_at, rowid",
                           -1, &q, NULL) != SQLITE_OK)
        return db_error(st, err, "list snapshots");
    if (sandbox_id)
        sqlite3_bind_text(q, 1, sandbox_id, -1, SQLITE_STATIC);
    if (tenant)
        sqlite3_bind_text(q, 2, tenant, -1, SQLITE_STATIC);
    json_t *list = json_array();
    int rc;
    while (list && (rc = sqlite3_step(q)) == SQLITE_ROW)
        json_array_append_new(list, row_to_snapshot(q));
    sqlite3_finalize(q);
    if (!list || rc != SQLITE_DONE) {
        json_decref(list);
        return db_error(st, err, "list snapshots");
    }
    *out = list;
    return 0;
}

int clr_store_snapshot_delete(clr_store *st, const char *id, clr_error *err)
{
    int n = update(st, "DELETE FROM snapshots WHERE id = ?", "t", err, id);
    return n < 0 ? -1 : 0;
}

int clr_store_snapshot_keep(clr_store *st, const char *id, clr_error *err)
{
    int n = update(st, "UPDATE snapshots SET keep = 1 WHERE id = ?", "t", err, id);
    if (n < 0)
        return -1;
    return n ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no snapshot %s", id);
}

int clr_store_snapshot_hold(clr_store *st, const char *id, clr_error *err)
{
    int n = update(st, "UPDATE snapshots SET held = 1 WHERE id = ?", "t", err, id);
    if (n < 0)
        return -1;
    return n ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no snapshot %s", id);
}

int clr_store_snapshot_release(clr_store *st, const char *id, clr_error *err)
{
    int n = update(st, "UPDATE snapshots SET held = 0 WHERE id = ?", "t", err, id);
    if (n < 0)
        return -1;
    return n ? 0 : clr_error_set(err, CLR_E_NOT_FOUND, 0, "no snapshot %s", id);
}

int clr_store_snapshot_total(clr_store *st, uint64_t *bytes, clr_error *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT COALESCE(SUM(size), 0) FROM snapshots", -1, &q,
                           NULL) != SQLITE_OK)
        return db_error(st, err, "sum snapshots");
    int rc = sqlite3_step(q);
    *bytes = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : db_error(st, err, "sum snapshots");
}
