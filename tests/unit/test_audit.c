/* The hash-chained audit log on temporary files: appends verify, a crash's torn tail is cut and
 * recorded, and every way of tampering with the file (edit, delete, reorder, truncate) is found
 * at the record where it happened. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clearing/audit.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/clr-test-audit-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/audit.log", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", fx->dir, e->d_name);
            if (unlink(p) < 0)
                rmdir(p);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static clr_audit *open_log(const char *path, uint64_t rotate_bytes)
{
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    o.rotate_bytes = rotate_bytes;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_open(&a, &o, &err) != 0)
        fail_msg("clr_audit_open(%s): %s", path, err.message);
    return a;
}

/* Appends records with actors "actor-1".."actor-N" (numbered from first). */
static void append_n(clr_audit *a, int first, int n)
{
    for (int i = first; i < first + n; i++) {
        char actor[32];
        snprintf(actor, sizeof(actor), "actor-%d", i);
        json_t *d = json_pack("{s:i, s:s}", "n", i, "note", "\xc3\xa9t\xc3\xa9 \"quoted\"\n");
        clr_error err = CLR_ERROR_INIT;
        if (clr_audit_append(a, actor, "sb-0123456789abcdef", "exec", "ok", d, &err) != 0)
            fail_msg("append %d: %s", i, err.message);
        json_decref(d);
    }
}

static void write_log(const char *path, int n, uint64_t rotate_bytes)
{
    clr_audit *a = open_log(path, rotate_bytes);
    append_n(a, 1, n);
    clr_audit_close(a);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rbe");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wbe");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The file split into lines (each keeping its '\n'); *n lines. Free with free_lines. */
static char **read_lines(const char *path, size_t *n)
{
    size_t len;
    char *buf = slurp(path, &len);
    char **v = calloc(len + 2, sizeof(char *));
    assert_non_null(v);
    size_t m = 0;
    char *p = buf;
    while (*p) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) + 1 : strlen(p);
        v[m] = strndup(p, l);
        assert_non_null(v[m]);
        m++;
        p += l;
    }
    free(buf);
    *n = m;
    return v;
}

static void free_lines(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void write_lines(const char *path, char **v, size_t n)
{
    FILE *f = fopen(path, "wbe");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        if (v[i])
            assert_true(fputs(v[i], f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static clr_audit_verify_report verify_path(const char *path)
{
    clr_audit_verify_report r;
    const char *files[] = {path};
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_verify(&r, files, 1, false, &err) != 0)
        fail_msg("verify %s: %s", path, err.message);
    return r;
}

static void expect_ok(const clr_audit_verify_report *r, uint64_t records, uint64_t first,
                      uint64_t last)
{
    if (!r->ok)
        fail_msg("verify failed at %s:%llu: %s", r->file, (unsigned long long)r->line,
                 r->problem);
    assert_int_equal(r->records, records);
    assert_int_equal(r->first_seq, first);
    assert_int_equal(r->last_seq, last);
    assert_int_equal(strlen(r->last_hash), 64);
}

static void expect_broken_at(const clr_audit_verify_report *r, uint64_t line)
{
    assert_false(r->ok);
    if (r->line != line)
        fail_msg("fault reported at line %llu (%s), expected line %llu",
                 (unsigned long long)r->line, r->problem, (unsigned long long)line);
    assert_true(r->problem[0] != '\0');
    assert_true(r->file[0] != '\0');
}

/* ---- record hash -------------------------------------------------------------------------- */

static void test_record_hash_stable_under_key_order(void **state)
{
    (void)state;
    json_t *a = json_pack("{s:I, s:s, s:s, s:{s:i, s:s}, s:s}", "seq", (json_int_t)7, "actor",
                          "me", "action", "exec", "details", "x", 1, "y", "z", "prev",
                          "ab12");
    json_t *b = json_object();
    json_object_set_new(b, "prev", json_string("ab12"));
    json_t *d = json_object();
    json_object_set_new(d, "y", json_string("z"));
    json_object_set_new(d, "x", json_integer(1));
    json_object_set_new(b, "details", d);
    json_object_set_new(b, "action", json_string("exec"));
    json_object_set_new(b, "actor", json_string("me"));
    json_object_set_new(b, "seq", json_integer(7));
    char ha[65], hb[65];
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_record_hash(ha, a, &err), 0);
    assert_int_equal(clr_audit_record_hash(hb, b, &err), 0);
    assert_string_equal(ha, hb);
    assert_int_equal(strlen(ha), 64);
    assert_int_equal(strspn(ha, "0123456789abcdef"), 64);

    /* "hash" itself is not hashed */
    json_object_set_new(b, "hash", json_string("anything"));
    assert_int_equal(clr_audit_record_hash(hb, b, &err), 0);
    assert_string_equal(ha, hb);
    /* the record is not modified */
    assert_string_equal(json_string_value(json_object_get(b, "hash")), "anything");

    /* any change of content or predecessor changes the hash */
    json_object_set_new(b, "actor", json_string("you"));
    assert_int_equal(clr_audit_record_hash(hb, b, &err), 0);
    assert_string_not_equal(ha, hb);
    json_object_set_new(b, "actor", json_string("me"));
    json_object_set_new(b, "prev", json_string("ab13"));
    assert_int_equal(clr_audit_record_hash(hb, b, &err), 0);
    assert_string_not_equal(ha, hb);
    json_decref(a);
    json_decref(b);
}

static void test_record_hash_requires_prev(void **state)
{
    (void)state;
    json_t *r = json_pack("{s:i}", "seq", 1);
    char h[65];
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_record_hash(h, r, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    json_object_set_new(r, "prev", json_integer(5)); /* not a string */
    assert_int_equal(clr_audit_record_hash(h, r, &err), -1);
    json_decref(r);
}

/* ---- append and verify -------------------------------------------------------------------- */

static void test_append_then_verify_ok(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 6, 0);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_ok(&r, 6, 1, 6);

    size_t n;
    char **lines = read_lines(fx->path, &n);
    assert_int_equal(n, 6);
    json_t *first = json_loads(lines[0], 0, NULL);
    assert_non_null(first);
    assert_int_equal(json_integer_value(json_object_get(first, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(first, "prev")),
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_string_equal(json_string_value(json_object_get(first, "actor")), "actor-1");
    assert_string_equal(json_string_value(json_object_get(first, "sandbox")),
                        "sb-0123456789abcdef");
    json_t *last = json_loads(lines[5], 0, NULL);
    assert_string_equal(json_string_value(json_object_get(last, "hash")), r.last_hash);
    json_decref(first);
    json_decref(last);
    free_lines(lines, n);
}

static void test_reopen_continues_chain(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 3, 0);
    clr_audit *a = open_log(fx->path, 0);
    append_n(a, 4, 2);
    clr_audit_close(a);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_ok(&r, 5, 1, 5);
}

/* Health's view of the log: cheap, and true about the next append. */
static void test_writable_tells_what_the_next_append_meets(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_log(fx->path, 0);
    char why[1200];
    assert_true(clr_audit_writable(a, why, sizeof(why)));
    assert_string_equal(why, "");
    assert_string_equal(clr_audit_path(a), fx->path);
    /* The log replaced by a directory: known before an append fails. */
    assert_int_equal(unlink(fx->path), 0);
    assert_int_equal(mkdir(fx->path, 0700), 0);
    assert_false(clr_audit_writable(a, why, sizeof(why)));
    assert_non_null(strstr(why, fx->path));
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_append(a, "t", NULL, "x", "ok", NULL, &err), -1);
    /* The failure is remembered, also once the path is free again ... */
    assert_int_equal(rmdir(fx->path), 0);
    assert_false(clr_audit_writable(a, why, sizeof(why)));
    assert_non_null(strstr(why, fx->path));
    assert_string_equal(why, err.message);
    /* ... until an append succeeds. */
    assert_int_equal(clr_audit_append(a, "t", NULL, "x", "ok", NULL, NULL), 0);
    assert_true(clr_audit_writable(a, why, sizeof(why)));
    clr_audit_close(a);
}

static void test_two_handles_share_one_chain(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_log(fx->path, 0);
    clr_audit *b = open_log(fx->path, 0);
    append_n(a, 1, 2);
    append_n(b, 3, 2);
    append_n(a, 5, 1);
    clr_audit_close(a);
    clr_audit_close(b);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_ok(&r, 5, 1, 5);
}

static void test_empty_log_verifies_with_no_records(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_log(fx->path, 0);
    clr_audit_close(a);
    clr_audit_verify_report r = verify_path(fx->path);
    assert_true(r.ok);
    assert_int_equal(r.records, 0);
}

static void test_torn_tail_cut_on_open_and_recorded(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 3, 0);
    size_t len;
    char *before = slurp(fx->path, &len);
    static const char garbage[] = "{\"seq\":4,\"ts\":\"2026-";
    FILE *f = fopen(fx->path, "abe");
    assert_non_null(f);
    assert_int_equal(fwrite(garbage, 1, sizeof(garbage) - 1, f), sizeof(garbage) - 1);
    fclose(f);

    /* Verify before repair sees a record cut short. */
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 4);

    clr_audit *a = open_log(fx->path, 0);
    clr_audit_close(a);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    assert_int_equal(n, 4);
    /* The three good records are untouched; the garbage is gone. */
    size_t off = 0;
    for (size_t i = 0; i < 3; i++) {
        assert_memory_equal(lines[i], before + off, strlen(lines[i]));
        off += strlen(lines[i]);
    }
    assert_int_equal(off, len);
    json_t *cut = json_loads(lines[3], 0, NULL);
    assert_non_null(cut);
    assert_string_equal(json_string_value(json_object_get(cut, "action")),
                        "audit.torn_tail_removed");
    assert_int_equal(json_integer_value(json_object_get(cut, "seq")), 4);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(cut, "details"), "bytes")),
        (json_int_t)(sizeof(garbage) - 1));
    json_decref(cut);
    free_lines(lines, n);
    free(before);

    r = verify_path(fx->path);
    expect_ok(&r, 4, 1, 4);

    /* and the chain goes on from there */
    a = open_log(fx->path, 0);
    append_n(a, 5, 1);
    clr_audit_close(a);
    r = verify_path(fx->path);
    expect_ok(&r, 5, 1, 5);
}

static void test_torn_only_line_cut_on_open(void **state)
{
    struct fixture *fx = *state;
    spit(fx->path, "{\"seq\":1", 8);
    clr_audit *a = open_log(fx->path, 0);
    append_n(a, 1, 1);
    clr_audit_close(a);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    assert_int_equal(n, 2);
    assert_non_null(strstr(lines[0], "audit.torn_tail_removed"));
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_ok(&r, 2, 1, 2);
}

static void test_unreadable_last_record_refused_on_open(void **state)
{
    struct fixture *fx = *state;
    spit(fx->path, "this is not json\n", 17);
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->path;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_null(a);
}

/* ---- tampering ---------------------------------------------------------------------------- */

static void test_verify_detects_edited_record(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    char *p = strstr(lines[2], "actor-3");
    assert_non_null(p);
    p[6] = '9'; /* same length, still valid JSON */
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 3);
    assert_int_equal(r.seq, 3);
    assert_non_null(strstr(r.problem, "edited"));
    assert_int_equal(r.records, 2);
}

/* An attacker who edits a record and recomputes its hash still breaks the next link. */
static void test_verify_detects_edited_record_with_recomputed_hash(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    json_t *j = json_loads(lines[2], 0, NULL);
    json_object_set_new(j, "outcome", json_string("denied"));
    char h[65];
    assert_int_equal(clr_audit_record_hash(h, j, NULL), 0);
    json_object_set_new(j, "hash", json_string(h));
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(j);
    free(lines[2]);
    assert_true(asprintf(&lines[2], "%s\n", text) > 0);
    free(text);
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 4);
    assert_int_equal(r.seq, 4);
}

static void test_verify_detects_deleted_record(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    free(lines[2]);
    lines[2] = NULL;
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 3); /* record 4 now sits on line 3 */
    assert_int_equal(r.seq, 4);
    assert_non_null(strstr(r.problem, "missing"));
}

static void test_verify_detects_deleted_first_record(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 3, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    free(lines[0]);
    lines[0] = NULL;
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 1);
}

static void test_verify_detects_swapped_pair(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    char *t = lines[1];
    lines[1] = lines[2];
    lines[2] = t;
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 2);
    assert_int_equal(r.seq, 3);
}

static void test_verify_detects_duplicated_record(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 4, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    char **v = calloc(n + 1, sizeof(char *));
    assert_non_null(v);
    v[0] = lines[0];
    v[1] = lines[1];
    v[2] = lines[1]; /* replayed */
    v[3] = lines[2];
    v[4] = lines[3];
    write_lines(fx->path, v, n + 1);
    free(v);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 3);
    assert_non_null(strstr(r.problem, "reordered or inserted"));
}

static void test_verify_detects_truncated_last_line(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    size_t len;
    char *buf = slurp(fx->path, &len);
    spit(fx->path, buf, len - 10);
    free(buf);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 5);
    assert_int_equal(r.records, 4);
}

static void test_verify_detects_missing_final_newline_only(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 2, 0);
    size_t len;
    char *buf = slurp(fx->path, &len);
    spit(fx->path, buf, len - 1);
    free(buf);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 2);
}

static void test_verify_rejects_duplicate_keys(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 2, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    /* a second "outcome" a lenient reader might take instead of the hashed one */
    char *p = strrchr(lines[1], '}');
    assert_non_null(p);
    char *edited = NULL;
    assert_true(asprintf(&edited, "%.*s,\"outcome\":\"denied\"}\n", (int)(p - lines[1]),
                         lines[1]) > 0);
    free(lines[1]);
    lines[1] = edited;
    write_lines(fx->path, lines, n);
    free_lines(lines, n);
    clr_audit_verify_report r = verify_path(fx->path);
    expect_broken_at(&r, 2);
}

static void test_verify_missing_file_is_error(void **state)
{
    struct fixture *fx = *state;
    clr_audit_verify_report r;
    const char *files[] = {fx->path};
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_verify(&r, files, 1, false, &err), -1);
    assert_true(err.message[0] != '\0');
}

/* ---- rotation ----------------------------------------------------------------------------- */

static void test_rotation_continues_chain_across_files(void **state)
{
    struct fixture *fx = *state;
    /* rotate_bytes 1: every append finds the file past the limit, so each file holds one */
    write_log(fx->path, 5, 1);
    char **files = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, &err), 0);
    assert_int_equal(n, 5);
    for (size_t i = 0; i + 1 < n; i++) {
        char want[160];
        snprintf(want, sizeof(want), "%s.%06zu", fx->path, i + 1);
        assert_string_equal(files[i], want);
    }
    assert_string_equal(files[n - 1], fx->path);
    assert_null(files[n]);

    clr_audit_verify_report r;
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, false, &err), 0);
    expect_ok(&r, 5, 1, 5);

    /* Out of order, the same files do not verify. */
    char *t = files[0];
    files[0] = files[1];
    files[1] = t;
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, false, &err), 0);
    assert_false(r.ok);
    clr_audit_files_free(files);
}

static void test_rotation_by_size_keeps_every_record(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 12, 700);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, NULL), 0);
    assert_true(n >= 3);
    struct stat st;
    for (size_t i = 0; i + 1 < n; i++) {
        assert_int_equal(stat(files[i], &st), 0);
        assert_true(st.st_size > 0);
    }
    clr_audit_verify_report r;
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, false, NULL), 0);
    expect_ok(&r, 12, 1, 12);
    clr_audit_files_free(files);
}

static void test_rotation_then_reopen_continues_chain(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 3, 1);
    clr_audit *a = open_log(fx->path, 1);
    append_n(a, 4, 2);
    clr_audit_close(a);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, NULL), 0);
    clr_audit_verify_report r;
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, false, NULL), 0);
    expect_ok(&r, 5, 1, 5);
    clr_audit_files_free(files);
}

/* Retention may delete the oldest rotated files: the rest verifies from where it starts when the
 * operator says so (allow_partial), and is reported as missing records otherwise. */
static void test_rotation_oldest_file_deleted_still_verifies(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 4, 1);
    char first[160];
    snprintf(first, sizeof(first), "%s.000001", fx->path);
    assert_int_equal(unlink(first), 0);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, NULL), 0);
    assert_int_equal(n, 3);
    clr_audit_verify_report r;
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, false, NULL), 0);
    assert_false(r.ok);
    assert_non_null(strstr(r.problem, "missing"));
    assert_int_equal(clr_audit_verify(&r, (const char *const *)files, n, true, NULL), 0);
    expect_ok(&r, 3, 2, 4);
    clr_audit_files_free(files);
}

static void test_audit_files_ignores_lookalikes(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 1, 0);
    char p[256];
    static const char *const decoys[] = {".bak", ".000001x", ".", "x.000001", ".-1"};
    for (size_t i = 0; i < sizeof(decoys) / sizeof(decoys[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", fx->path, decoys[i]);
        spit(p, "x", 1);
    }
    snprintf(p, sizeof(p), "%s/other.log.000001", fx->dir);
    spit(p, "x", 1);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(files[0], fx->path);
    clr_audit_files_free(files);
}

/* ---- failure ------------------------------------------------------------------------------ */

static void test_open_on_directory_is_unavailable(void **state)
{
    struct fixture *fx = *state;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->dir;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    assert_non_null(strstr(err.message, fx->dir));
    assert_null(a);
}

static void test_open_in_missing_directory_is_unavailable(void **state)
{
    struct fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/no/such/dir/audit.log", fx->dir);
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = p;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
}

static void test_open_through_symlink_refused(void **state)
{
    struct fixture *fx = *state;
    char target[256];
    snprintf(target, sizeof(target), "%s/elsewhere", fx->dir);
    spit(target, "", 0);
    assert_int_equal(symlink(target, fx->path), 0);
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->path;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
}

static void test_open_without_path_is_invalid(void **state)
{
    (void)state;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    o.path = "";
    assert_int_equal(clr_audit_open(&a, &o, &err), -1);
}

int main(void)
{
#define F(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_hash_stable_under_key_order),
        cmocka_unit_test(test_record_hash_requires_prev),
        F(test_append_then_verify_ok),
        F(test_reopen_continues_chain),
        F(test_writable_tells_what_the_next_append_meets),
        F(test_two_handles_share_one_chain),
        F(test_empty_log_verifies_with_no_records),
        F(test_torn_tail_cut_on_open_and_recorded),
        F(test_torn_only_line_cut_on_open),
        F(test_unreadable_last_record_refused_on_open),
        F(test_verify_detects_edited_record),
        F(test_verify_detects_edited_record_with_recomputed_hash),
        F(test_verify_detects_deleted_record),
        F(test_verify_detects_deleted_first_record),
        F(test_verify_detects_swapped_pair),
        F(test_verify_detects_duplicated_record),
        F(test_verify_detects_truncated_last_line),
        F(test_verify_detects_missing_final_newline_only),
        F(test_verify_rejects_duplicate_keys),
        F(test_verify_missing_file_is_error),
        F(test_rotation_continues_chain_across_files),
        F(test_rotation_by_size_keeps_every_record),
        F(test_rotation_then_reopen_continues_chain),
        F(test_rotation_oldest_file_deleted_still_verifies),
        F(test_audit_files_ignores_lookalikes),
        F(test_open_on_directory_is_unavailable),
        F(test_open_in_missing_directory_is_unavailable),
        F(test_open_through_symlink_refused),
        F(test_open_without_path_is_invalid),
    };
#undef F
    return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
