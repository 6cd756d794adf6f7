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
#include "clearing/verdict.h"

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

/* ---- denials: aggregated, bounded, escaped (#16.3) ---------------------------------------- */

static clr_audit *open_aggregating(const char *path, uint32_t aggregate_ms)
{
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    o.aggregate_ms = aggregate_ms;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_open(&a, &o, &err) != 0)
        fail_msg("clr_audit_open(%s): %s", path, err.message);
    return a;
}

static void deny(clr_audit *a, const char *source, const char *sandbox, const char *url)
{
    json_t *d = json_object();
    json_object_set_new(d, "url", clr_audit_text(url, strlen(url), CLR_AUDIT_FIELD_MAX));
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_denied(a, source, "tcp (unauthenticated)", sandbox, "auth.failed", "denied",
                         d, &err) != 0)
        fail_msg("denied: %s", err.message);
    json_decref(d);
}

/* The records of action in the log; *sum gets the sum of their counts (from source if set). */
static json_t *records_of(const char *path, const char *action, const char *source,
                          long long *sum)
{
    size_t n;
    char **lines = read_lines(path, &n);
    json_t *out = json_array();
    *sum = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_loads(lines[i], 0, NULL);
        assert_non_null(r);
        json_t *d = json_object_get(r, "details");
        const char *src = json_string_value(json_object_get(d, "source"));
        if (strcmp(json_string_value(json_object_get(r, "action")), action) == 0 &&
            (!source || (src && strcmp(src, source) == 0))) {
            *sum += json_integer_value(json_object_get(d, "count"));
            json_array_append(out, r);
        }
        json_decref(r);
    }
    free_lines(lines, n);
    return out;
}

static void test_denials_first_recorded_at_once_then_counted(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000); /* no interval passes in this test */
    for (int i = 0; i < 1000; i++)
        deny(a, "192.0.2.7", NULL, "/v1/sandboxes");
    long long sum;
    /* Positive control: the first denial is a record at once, naming its source. */
    json_t *recs = records_of(fx->path, "auth.failed", "192.0.2.7", &sum);
    assert_int_equal(json_array_size(recs), 1);
    assert_int_equal(sum, 1);
    json_t *r0 = json_array_get(recs, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "outcome")), "denied");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r0, "details"), "url")),
                        "/v1/sandboxes");
    json_decref(recs);
    /* The other 999 are one record when the handle closes, with the count and the interval. */
    clr_audit_close(a);
    recs = records_of(fx->path, "auth.failed", "192.0.2.7", &sum);
    assert_int_equal(json_array_size(recs), 2);
    assert_int_equal(sum, 1000);
    json_t *d1 = json_object_get(json_array_get(recs, 1), "details");
    assert_int_equal(json_integer_value(json_object_get(d1, "count")), 999);
    assert_int_equal(json_integer_value(json_object_get(d1, "interval_ms")), 3600000);
    json_decref(recs);
    clr_audit_verify_report r = verify_path(fx->path);
    assert_true(r.ok);
}

/* A first record that cannot be written (the log replaced by a directory) is not lost: its count
 * goes back to its source and is written with the next record. */
static void test_denial_unwritten_first_counted_later(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000);
    deny(a, "192.0.2.20", NULL, "/a"); /* control: written at once */
    long long sum;
    json_decref(records_of(fx->path, "auth.failed", "192.0.2.20", &sum));
    assert_int_equal(sum, 1);
    char aside[sizeof(fx->dir) + 16];
    snprintf(aside, sizeof(aside), "%s/aside", fx->dir);
    assert_int_equal(rename(fx->path, aside), 0);
    assert_int_equal(mkdir(fx->path, 0700), 0);
    json_t *d = json_object();
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_denied(a, "192.0.2.21", "tcp (unauthenticated)", NULL,
                                      "auth.failed", "denied", d, &err),
                     -1);
    json_decref(d);
    assert_int_equal(rmdir(fx->path), 0);
    assert_int_equal(rename(aside, fx->path), 0);
    deny(a, "192.0.2.21", NULL, "/b"); /* counted: the source is known */
    clr_audit_close(a);
    json_t *recs = records_of(fx->path, "auth.failed", "192.0.2.21", &sum);
    assert_int_equal(json_array_size(recs), 1);
    assert_int_equal(sum, 2);
    json_decref(recs);
}

static void test_denials_flushed_per_interval(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 100);
    for (int i = 0; i < 3000; i++)
        deny(a, "192.0.2.8", NULL, "/x");
    /* The tick writes what is pending once the interval passed: wait for it, generously. */
    long long sum = 0;
    for (int tries = 0; tries < 3000 && sum < 3000; tries++) {
        clr_audit_tick(a);
        json_decref(records_of(fx->path, "auth.failed", "192.0.2.8", &sum));
        if (sum < 3000)
            usleep(10000);
    }
    assert_int_equal(sum, 3000);
    json_t *recs = records_of(fx->path, "auth.failed", "192.0.2.8", &sum);
    assert_true(json_array_size(recs) < 3000 / 2);
    json_decref(recs);
    /* A different source is its own first record, at once. */
    deny(a, "192.0.2.9", NULL, "/y");
    recs = records_of(fx->path, "auth.failed", "192.0.2.9", &sum);
    assert_int_equal(json_array_size(recs), 1);
    json_decref(recs);
    clr_audit_close(a);
}

static void test_denial_sources_bounded_into_others(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000);
    int sources = CLR_AUDIT_SOURCES_MAX + 200;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < sources; i++) {
            char src[32];
            snprintf(src, sizeof(src), "10.%d.%d.1", i / 256, i % 256);
            deny(a, src, NULL, "/z");
        }
    long long sum;
    json_t *recs = records_of(fx->path, "auth.failed", NULL, &sum);
    /* One record per tracked source and one for "others": never one per denial. */
    assert_int_equal(json_array_size(recs), CLR_AUDIT_SOURCES_MAX + 1);
    json_decref(recs);
    clr_audit_close(a);
    recs = records_of(fx->path, "auth.failed", NULL, &sum);
    assert_int_equal(sum, 3 * sources);
    json_decref(recs);
    recs = records_of(fx->path, "auth.failed", "others", &sum);
    assert_int_equal(sum, 3 * 200);
    json_decref(recs);
}

static void test_denial_others_kept_per_action(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000);
    for (int i = 0; i < CLR_AUDIT_SOURCES_MAX + 1; i++) {
        char src[32];
        snprintf(src, sizeof(src), "10.9.%d.%d", i / 256, i % 256);
        deny(a, src, NULL, "/z");
    }
    /* The table is full of failed tokens: a refused connection is not lost among them. */
    json_t *d = json_pack("{s:s}", "host", "example.com");
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_denied(a, "example.com:443", "sandbox", "sb-0000000000000003",
                                      "egress.connect", "denied", d, &err),
                     0);
    json_decref(d);
    long long sum;
    json_t *recs = records_of(fx->path, "egress.connect", "others", &sum);
    assert_int_equal(json_array_size(recs), 1);
    json_t *det = json_object_get(json_array_get(recs, 0), "details");
    assert_string_equal(json_string_value(json_object_get(det, "sandbox")), "sb-0000000000000003");
    json_decref(recs);
    clr_audit_close(a);
}

static void test_denials_keyed_by_sandbox_and_destination(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000);
    deny(a, "example.com:443", "sb-0000000000000001", "/");
    deny(a, "example.com:443", "sb-0000000000000002", "/");
    deny(a, "example.com:443", "sb-0000000000000001", "/");
    long long sum;
    json_t *recs = records_of(fx->path, "auth.failed", "example.com:443", &sum);
    assert_int_equal(json_array_size(recs), 2); /* one first record per sandbox */
    json_decref(recs);
    clr_audit_close(a);
    recs = records_of(fx->path, "auth.failed", "example.com:443", &sum);
    assert_int_equal(sum, 3);
    json_decref(recs);
}

static void test_text_escapes_bytes_that_are_not_utf8(void **state)
{
    (void)state;
    const char in[] = "/v1/\xff\xfe" "a\\b\xc3\xa9\xc0\xaf\xed\xa0\x80";
    json_t *j = clr_audit_text(in, sizeof(in) - 1, CLR_AUDIT_FIELD_MAX);
    assert_non_null(j);
    assert_string_equal(json_string_value(j),
                        "/v1/\\xff\\xfea\\\\b\xc3\xa9\\xc0\\xaf\\xed\\xa0\\x80");
    json_decref(j);
    /* An embedded NUL is escaped too (len says where the value ends). */
    j = clr_audit_text("a\0b", 3, 16);
    assert_string_equal(json_string_value(j), "a\\x00b");
    json_decref(j);
}

static void test_text_bounded_on_a_character_boundary(void **state)
{
    (void)state;
    char in[5000];
    for (size_t i = 0; i + 1 < sizeof(in); i += 2) {
        in[i] = '\xc3';
        in[i + 1] = '\xa9';
    }
    json_t *j = clr_audit_text(in, sizeof(in), CLR_AUDIT_FIELD_MAX);
    const char *v = json_string_value(j);
    assert_non_null(v); /* still UTF-8: no character was split */
    size_t n = strlen(v);
    assert_true(n <= CLR_AUDIT_FIELD_MAX + strlen("...[truncated]"));
    assert_string_equal(v + n - strlen("...[truncated]"), "...[truncated]");
    assert_int_equal((n - strlen("...[truncated]")) % 2, 0);
    json_decref(j);
    /* A short value is kept as it is, unmarked. */
    j = clr_audit_text("short", 5, CLR_AUDIT_FIELD_MAX);
    assert_string_equal(json_string_value(j), "short");
    json_decref(j);
}

static void test_denial_records_non_utf8_url_escaped_and_bounded(void **state)
{
    struct fixture *fx = *state;
    clr_audit *a = open_aggregating(fx->path, 3600000);
    char url[4096];
    memset(url, 'u', sizeof(url) - 1);
    url[sizeof(url) - 1] = '\0';
    url[1] = '\xff';
    deny(a, "192.0.2.10", NULL, url);
    json_t *big = json_pack("{s:s}", "note", url + 2); /* valid UTF-8, 4 KiB */
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_denied(a, "192.0.2.11", "x", NULL, "egress.connect", "denied", big,
                                      &err),
                     0);
    json_decref(big);
    clr_audit_close(a);
    long long sum;
    json_t *recs = records_of(fx->path, "auth.failed", "192.0.2.10", &sum);
    assert_int_equal(json_array_size(recs), 1);
    const char *u =
        json_string_value(json_object_get(json_object_get(json_array_get(recs, 0), "details"),
                                          "url"));
    assert_non_null(u); /* before: details came out empty */
    assert_memory_equal(u, "u\\xffuu", 7);
    assert_true(strlen(u) <= CLR_AUDIT_FIELD_MAX + strlen("...[truncated]"));
    json_decref(recs);
    recs = records_of(fx->path, "egress.connect", "192.0.2.11", &sum);
    const char *note =
        json_string_value(json_object_get(json_object_get(json_array_get(recs, 0), "details"),
                                          "note"));
    assert_non_null(note);
    assert_true(strlen(note) <= CLR_AUDIT_FIELD_MAX + strlen("...[truncated]"));
    json_decref(recs);
}

/* ---- checkpoints (#16.3) ------------------------------------------------------------------ */

static clr_audit_verify_report verify_log(const char *path)
{
    clr_audit_verify_report r;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_verify_log(&r, path, NULL, false, &err) != 0)
        fail_msg("verify_log %s: %s", path, err.message);
    return r;
}

static void test_checkpoint_shows_a_truncated_tail(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 10, 0); /* the close signs the head */
    char cp[256];
    snprintf(cp, sizeof(cp), "%s.checkpoint", fx->path);
    assert_int_equal(access(cp, F_OK), 0);
    /* Positive control: the whole log verifies against its checkpoint. */
    clr_audit_verify_report r = verify_log(fx->path);
    expect_ok(&r, 10, 1, 10);
    assert_true(r.checkpointed);
    assert_int_equal(r.checkpoint_seq, 10);
    /* Cut the last three records, whole lines: the chain alone still verifies... */
    size_t n;
    char **lines = read_lines(fx->path, &n);
    assert_int_equal(n, 10);
    write_lines(fx->path, lines, 7);
    free_lines(lines, n);
    r = verify_path(fx->path);
    expect_ok(&r, 7, 1, 7);
    /* ...but not against the checkpoint, which names the cut. */
    r = verify_log(fx->path);
    assert_false(r.ok);
    if (!strstr(r.problem, "truncated after record 7"))
        fail_msg("problem: %s", r.problem);
}

static void test_checkpoint_shows_a_rewritten_tail(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 10, 0);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    write_lines(fx->path, lines, 6);
    free_lines(lines, n);
    /* Someone appends 4 fresh records after the cut, so the log is as long as before: the
     * checkpoint's record 10 is not the one there now. Without the checkpoint file that
     * would verify. */
    char cp[256], saved[256];
    snprintf(cp, sizeof(cp), "%s.checkpoint", fx->path);
    snprintf(saved, sizeof(saved), "%s.saved", fx->dir);
    assert_int_equal(rename(cp, saved), 0);
    clr_audit *a = open_log(fx->path, 0);
    append_n(a, 100, 4);
    clr_audit_close(a);
    assert_int_equal(rename(saved, cp), 0);
    clr_audit_verify_report r = verify_log(fx->path);
    assert_false(r.ok);
    assert_int_equal(r.seq, 10);
    assert_non_null(strstr(r.problem, "record 10 is not the one the checkpoint"));
}

static void test_checkpoint_forged_is_refused(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 5, 0);
    char cp[256];
    snprintf(cp, sizeof(cp), "%s.checkpoint", fx->path);
    size_t len;
    char *text = slurp(cp, &len);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 5); /* positive control */
    json_object_set_new(j, "seq", json_integer(3)); /* the attacker cut 2 records */
    assert_int_equal(json_dump_file(j, cp, JSON_COMPACT), 0);
    json_decref(j);
    clr_audit_verify_report r = verify_log(fx->path);
    assert_false(r.ok);
    assert_non_null(strstr(r.problem, "not signed by the audit key"));
}

static void test_checkpoint_written_at_rotation_and_by_tick(void **state)
{
    struct fixture *fx = *state;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->path;
    o.rotate_bytes = 1; /* every append rotates first */
    o.checkpoint_ms = 100;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    append_n(a, 1, 3);
    /* The rotation before record 3 signed record 2, without waiting for a tick or the close. */
    clr_audit_verify_report r = verify_log(fx->path);
    assert_true(r.ok);
    assert_true(r.checkpointed);
    assert_int_equal(r.checkpoint_seq, 2);
    /* The tick signs record 3 once checkpoint_ms passed (waited for, generously). */
    for (int i = 0; i < 3000 && r.checkpoint_seq != 3; i++) {
        usleep(10000);
        clr_audit_tick(a);
        r = verify_log(fx->path);
    }
    assert_int_equal(r.checkpoint_seq, 3);
    clr_audit_close(a);
}

/* ---- checkpoints signed with the verdict key (Ed25519) ------------------------------------ */

/* A verdict key made in the fixture's directory as NAME (its public half NAME.pub). */
static clr_verdict_key *make_key(struct fixture *fx, const char *name, char *pub, size_t len)
{
    char kp[200];
    snprintf(kp, sizeof(kp), "%s/%s", fx->dir, name);
    snprintf(pub, len, "%s.pub", kp);
    clr_verdict_key *k = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_verdict_key_load(&k, kp, true, NULL, &err) != 0)
        fail_msg("key %s: %s", kp, err.message);
    return k;
}

/* n records appended and the log closed by a writer whose checkpoints k signs. */
static void write_signed_log(const char *path, const clr_verdict_key *k, int first, int n)
{
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    o.checkpoint_key = k;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_open(&a, &o, &err) != 0)
        fail_msg("clr_audit_open(%s): %s", path, err.message);
    append_n(a, first, n);
    clr_audit_close(a);
}

static clr_audit_verify_report verify_signed(const char *path, const char *pub)
{
    clr_audit_verify_report r;
    clr_error err = CLR_ERROR_INIT;
    if (clr_audit_verify_log(&r, path, pub, false, &err) != 0)
        fail_msg("verify_log %s with %s: %s", path, pub, err.message);
    return r;
}

static json_t *load_checkpoint(const char *path)
{
    char cp[256];
    snprintf(cp, sizeof(cp), "%s.checkpoint", path);
    json_t *j = json_load_file(cp, 0, NULL);
    if (!j)
        fail_msg("no checkpoint %s", cp);
    return j;
}

static void store_checkpoint(const char *path, json_t *j)
{
    char cp[256];
    snprintf(cp, sizeof(cp), "%s.checkpoint", path);
    assert_int_equal(json_dump_file(j, cp, JSON_COMPACT | JSON_SORT_KEYS), 0);
}

/* The writer signs the head with the Ed25519 key (no HMAC, no <log>.key); the public key alone
 * checks it; a log truncated after the checkpointed record fails; without a public key a signed
 * checkpoint cannot be checked, and verify says so. */
static void test_signed_checkpoint_shows_a_truncated_tail(void **state)
{
    struct fixture *fx = *state;
    char pub[256], kp[256];
    clr_verdict_key *k = make_key(fx, "verdict.key", pub, sizeof(pub));
    write_signed_log(fx->path, k, 1, 10);
    json_t *j = load_checkpoint(fx->path);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 10);
    assert_string_equal(json_string_value(json_object_get(j, "key_id")), clr_verdict_key_id(k));
    assert_int_equal(strlen(json_string_value(json_object_get(j, "sig"))), 88);
    assert_null(json_object_get(j, "mac"));
    json_decref(j);
    snprintf(kp, sizeof(kp), "%s.key", fx->path);
    assert_int_equal(access(kp, F_OK), -1); /* no HMAC key made */
    clr_audit_verify_report r = verify_signed(fx->path, pub);
    expect_ok(&r, 10, 1, 10);
    assert_true(r.checkpointed);
    assert_false(r.checkpoint_hmac);
    assert_int_equal(r.checkpoint_seq, 10);
    assert_string_equal(r.checkpoint_key_id, clr_verdict_key_id(k));
    /* No public key: refused, naming the key that signed it. */
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_verify_log(&r, fx->path, NULL, false, &err), -1);
    assert_non_null(strstr(err.message, clr_verdict_key_id(k)));
    assert_non_null(strstr(err.message, "public key"));
    /* Cut the last three records: the chain alone verifies, the signed checkpoint does not. */
    size_t n;
    char **lines = read_lines(fx->path, &n);
    assert_int_equal(n, 10);
    write_lines(fx->path, lines, 7);
    free_lines(lines, n);
    r = verify_path(fx->path);
    expect_ok(&r, 7, 1, 7);
    r = verify_signed(fx->path, pub);
    assert_false(r.ok);
    if (!strstr(r.problem, "truncated after record 7"))
        fail_msg("problem: %s", r.problem);
    clr_verdict_key_free(k);
}

/* The attacker cuts the log to 7 records and signs a checkpoint of record 7 with a key of their
 * own: refused whether it names its own key or the daemon's. The same statement signed with the
 * daemon's key passes (positive control: the forgery's only fault is the key). */
static void test_signed_checkpoint_resigned_with_another_key(void **state)
{
    struct fixture *fx = *state;
    char pub[256], pub2[256];
    clr_verdict_key *k = make_key(fx, "verdict.key", pub, sizeof(pub));
    clr_verdict_key *other = make_key(fx, "other.key", pub2, sizeof(pub2));
    write_signed_log(fx->path, k, 1, 10);
    size_t n;
    char **lines = read_lines(fx->path, &n);
    write_lines(fx->path, lines, 7);
    json_t *rec7 = json_loads(lines[6], 0, NULL);
    free_lines(lines, n);
    assert_non_null(rec7);
    const char *hash7 = json_string_value(json_object_get(rec7, "hash"));
    const char *ts = "2026-12-06T14:00:00.000000Z";
    char stmt[256], sig[CLR_VERDICT_SIG_B64_SIZE];
    snprintf(stmt, sizeof(stmt), "clearing-audit-checkpoint v2\nseq 7\nhash %s\nts %s\n", hash7,
             ts);
    clr_error err = CLR_ERROR_INIT;
    const struct {
        const clr_verdict_key *signer, *named;
        const char *says;
    } cases[] = {
        {other, other, "not this public key"},
        {other, k, "does not match"},
        {k, k, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(clr_verdict_sign_data(sig, cases[i].signer, stmt, strlen(stmt), &err),
                         0);
        json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:s}", "seq", 7, "hash", hash7, "ts", ts,
                              "key_id", clr_verdict_key_id(cases[i].named), "sig", sig);
        store_checkpoint(fx->path, j);
        json_decref(j);
        clr_audit_verify_report r = verify_signed(fx->path, pub);
        if (!cases[i].says) {
            expect_ok(&r, 7, 1, 7);
            assert_true(r.checkpointed);
            continue;
        }
        assert_false(r.ok);
        if (!strstr(r.problem, cases[i].says))
            fail_msg("case %zu: problem: %s", i, r.problem);
    }
    json_decref(rec7);
    clr_verdict_key_free(other);
    clr_verdict_key_free(k);
}

/* A log whose checkpoint is an old v1 one (HMAC under <log>.key) still verifies, said to be one;
 * its next writer with the key replaces it with a signed one. */
static void test_v1_checkpoint_still_verifies(void **state)
{
    struct fixture *fx = *state;
    write_log(fx->path, 4, 0); /* no key: a v1 checkpoint */
    char pub[256];
    clr_verdict_key *k = make_key(fx, "verdict.key", pub, sizeof(pub));
    clr_audit_verify_report r = verify_signed(fx->path, pub);
    expect_ok(&r, 4, 1, 4);
    assert_true(r.checkpointed);
    assert_true(r.checkpoint_hmac);
    assert_string_equal(r.checkpoint_key_id, "");
    write_signed_log(fx->path, k, 5, 2);
    r = verify_signed(fx->path, pub);
    expect_ok(&r, 6, 1, 6);
    assert_false(r.checkpoint_hmac);
    assert_int_equal(r.checkpoint_seq, 6);
    assert_string_equal(r.checkpoint_key_id, clr_verdict_key_id(k));
    clr_verdict_key_free(k);
}

/* ---- retention and disk budget (#16.3) ---------------------------------------------------- */

static void test_retention_keeps_newest_rotated_files(void **state)
{
    struct fixture *fx = *state;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->path;
    o.rotate_bytes = 1;
    o.keep = 2;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    append_n(a, 1, 8);
    clr_audit_close(a);
    char **files = NULL;
    size_t n = 0;
    assert_int_equal(clr_audit_files(&files, &n, fx->path, &err), 0);
    assert_int_equal(n, 3); /* two rotated, the current one */
    clr_audit_files_free(files);
    long long sum;
    json_t *recs = records_of(fx->path, "audit.retention_removed", NULL, &sum);
    assert_true(json_array_size(recs) >= 1); /* the deletion is on the record */
    json_decref(recs);
    clr_audit_verify_report r;
    assert_int_equal(clr_audit_verify_log(&r, fx->path, NULL, true, &err), 0);
    if (!r.ok)
        fail_msg("%s", r.problem);
    assert_true(r.checkpointed);
}

static void test_disk_budget_warns(void **state)
{
    struct fixture *fx = *state;
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = fx->path;
    clr_audit *a = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    append_n(a, 1, 20);
    clr_audit_disk_status ds;
    assert_int_equal(clr_audit_disk(a, &ds, &err), 0);
    assert_true(ds.bytes > 0 && ds.free_bytes > 0);
    assert_false(ds.warning); /* no budget, no warning */
    clr_audit_close(a);
    o.disk_budget = ds.bytes; /* the files already take all of it */
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    assert_int_equal(clr_audit_disk(a, &ds, &err), 0);
    assert_true(ds.warning);
    assert_non_null(strstr(ds.reason, "audit_disk_budget"));
    clr_audit_close(a);
    o.disk_budget = ds.free_bytes + (1ull << 40); /* more than the disk has free */
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    assert_int_equal(clr_audit_disk(a, &ds, &err), 0);
    assert_true(ds.warning);
    assert_non_null(strstr(ds.reason, "free"));
    clr_audit_close(a);
    o.disk_budget = ds.bytes * 100; /* room on both counts, if the disk has 100x free */
    assert_int_equal(clr_audit_open(&a, &o, &err), 0);
    assert_int_equal(clr_audit_disk(a, &ds, &err), 0);
    if (ds.free_bytes > o.disk_budget)
        assert_false(ds.warning);
    clr_audit_close(a);
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
        F(test_denials_first_recorded_at_once_then_counted),
        F(test_denial_unwritten_first_counted_later),
        F(test_denials_flushed_per_interval),
        F(test_denial_sources_bounded_into_others),
        F(test_denial_others_kept_per_action),
        F(test_denials_keyed_by_sandbox_and_destination),
        cmocka_unit_test(test_text_escapes_bytes_that_are_not_utf8),
        cmocka_unit_test(test_text_bounded_on_a_character_boundary),
        F(test_denial_records_non_utf8_url_escaped_and_bounded),
        F(test_checkpoint_shows_a_truncated_tail),
        F(test_checkpoint_shows_a_rewritten_tail),
        F(test_checkpoint_forged_is_refused),
        F(test_checkpoint_written_at_rotation_and_by_tick),
        F(test_signed_checkpoint_shows_a_truncated_tail),
        F(test_signed_checkpoint_resigned_with_another_key),
        F(test_v1_checkpoint_still_verifies),
        F(test_retention_keeps_newest_rotated_files),
        F(test_disk_budget_warns),
    };
#undef F
    return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
