/* Sandbox labels: the engine's copy of a sandbox, read back by listing, gc and a restarted
 * daemon. Anyone who can create containers can write labels, so reading them back must refuse
 * whatever does not look exactly like ours rather than guess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/sandbox.h"

#define L(name) CLR_LABEL_PREFIX name

static const char *const required_labels[] = {
    L("managed-by"),
    L("sandbox-id"),
    L("image"),
    L("runtime"),
    L("insecure"),
    L("created-at"),
    L("expires-at"),
    L("limits.cpu-millis"),
    L("limits.memory"),
    L("limits.pids"),
    L("limits.lifetime"),
    L("limits.tmp"),
    L("limits.workspace"),
    L("limits.workspace-inodes"),
    L("limits.nofile"),
    L("limits.fsize"),
};
#define N_REQUIRED (sizeof(required_labels) / sizeof(required_labels[0]))

static clr_sandbox_info sample(void)
{
    clr_sandbox_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.id, sizeof(info.id), "sb-0123456789abcdef");
    snprintf(info.image, sizeof(info.image), "registry.example/team/python:3.12");
    snprintf(info.runtime, sizeof(info.runtime), "runc");
    snprintf(info.owner, sizeof(info.owner), "daemon-7f3a");
    snprintf(info.tenant, sizeof(info.tenant), "acme-2_x");
    info.insecure = true;
    info.created_at = 1700000000;
    info.expires_at = 1700000600;
    info.max_expires_at = 1700003600;
    info.limits = (clr_limits){
        .cpu_millis = 1500,
        .memory_bytes = 3 * CLR_GIB,
        .pids = 333,
        .lifetime_s = 600,
        .tmp_bytes = 65 * CLR_MIB,
        .workspace_bytes = 17 * CLR_GIB,
        .workspace_inodes = 123456,
        .nofile = 4096,
        .fsize_bytes = 2 * CLR_GIB + 1,
    };
    return info;
}

static void assert_same_info(const clr_sandbox_info *a, const clr_sandbox_info *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->image, b->image);
    assert_string_equal(a->runtime, b->runtime);
    assert_string_equal(a->owner, b->owner);
    assert_string_equal(a->tenant, b->tenant);
    assert_int_equal(a->insecure, b->insecure);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->expires_at, b->expires_at);
    assert_int_equal(a->max_expires_at, b->max_expires_at);
    assert_true(clr_limits_equal(&a->limits, &b->limits));
}

/* Parses labels; fails the test on error. */
static clr_sandbox_info parse_ok(json_t *labels)
{
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_info_from_labels(&info, labels, &err) != 0)
        fail_msg("labels refused: %s", err.message);
    return info;
}

/* Expects refusal; returns the message for further checks. */
static clr_error parse_bad(json_t *labels)
{
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_info_from_labels(&info, labels, &err) == 0)
        fail_msg("labels accepted (id '%s')", info.id);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_true(err.message[0] != '\0');
    return err;
}

static void test_labels_round_trip(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    json_t *labels = clr_sandbox_labels(&in);
    assert_non_null(labels);
    assert_string_equal(json_string_value(json_object_get(labels, L("managed-by"))), "clearing");
    /* Every label is a string: the engine's labels are map[string]string. */
    const char *key;
    json_t *v;
    json_object_foreach(labels, key, v)
    {
        if (!json_is_string(v))
            fail_msg("label %s is not a string", key);
        assert_true(strncmp(key, CLR_LABEL_PREFIX, strlen(CLR_LABEL_PREFIX)) == 0);
    }
    clr_sandbox_info out = parse_ok(labels);
    assert_same_info(&in, &out);
    json_decref(labels);
}

/* A repository's branch, base and git directory identity come back as they went out; a
 * malformed identity is refused rather than read as "none". */
static void test_labels_repo_round_trip(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    snprintf(in.repo, sizeof(in.repo), "/srv/repos/app");
    snprintf(in.branch, sizeof(in.branch), "clearing/%s", in.id);
    snprintf(in.base_commit, sizeof(in.base_commit), "%040d", 7);
    in.repo_id.dev = 2049;
    in.repo_id.ino = UINT64_MAX - 1;
    json_t *labels = clr_sandbox_labels(&in);
    assert_string_equal(json_string_value(json_object_get(labels, L("repo-id"))),
                        "2049:18446744073709551614");
    clr_sandbox_info out = parse_ok(labels);
    assert_string_equal(out.repo, in.repo);
    assert_string_equal(out.branch, in.branch);
    assert_string_equal(out.base_commit, in.base_commit);
    assert_true(out.repo_id.dev == 2049 && out.repo_id.ino == UINT64_MAX - 1);
    static const char *const bad[] = {"", "2049", "2049:", ":5", "a:5", "5:0", "1:2:3", "-1:5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        json_object_set_new(labels, L("repo-id"), json_string(bad[i]));
        clr_error e = parse_bad(labels);
        if (!strstr(e.message, "repo-id"))
            fail_msg("'%s': %s", bad[i], e.message);
    }
    /* Older sandboxes have no identity: read as zero, which commit and diff refuse. */
    json_object_del(labels, L("repo-id"));
    out = parse_ok(labels);
    assert_true(out.repo_id.ino == 0);
    json_decref(labels);
}

static void test_labels_round_trip_secure_defaults(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    in.insecure = false;
    in.limits = (clr_limits)CLR_LIMITS_INIT;
    snprintf(in.runtime, sizeof(in.runtime), "runsc");
    json_t *labels = clr_sandbox_labels(&in);
    assert_string_equal(json_string_value(json_object_get(labels, L("insecure"))), "false");
    clr_sandbox_info out = parse_ok(labels);
    assert_same_info(&in, &out);
    json_decref(labels);
}

static void test_labels_empty_owner_written_as_cli(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    in.owner[0] = '\0';
    json_t *labels = clr_sandbox_labels(&in);
    assert_string_equal(json_string_value(json_object_get(labels, L("owner"))), "cli");
    json_decref(labels);
}

static void test_labels_max_expiry_never_before_expiry(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    in.max_expires_at = in.expires_at - 100;
    json_t *labels = clr_sandbox_labels(&in);
    clr_sandbox_info out = parse_ok(labels);
    assert_int_equal(out.max_expires_at, in.expires_at);
    json_decref(labels);

    /* The same from labels someone else wrote. */
    in = sample();
    labels = clr_sandbox_labels(&in);
    json_object_set_new(labels, L("max-expires-at"), json_string("5"));
    out = parse_ok(labels);
    assert_int_equal(out.max_expires_at, in.expires_at);
    json_decref(labels);
}

static void test_labels_optional_owner_and_max_expiry_default(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    json_t *labels = clr_sandbox_labels(&in);
    json_object_del(labels, L("owner"));
    json_object_del(labels, L("max-expires-at"));
    clr_sandbox_info out = parse_ok(labels);
    assert_string_equal(out.owner, "cli");
    assert_int_equal(out.max_expires_at, in.expires_at);
    assert_string_equal(out.id, in.id);
    json_decref(labels);
}

/* A sandbox of an older daemon has no tenant label: it is the default tenant's. */
static void test_labels_missing_tenant_is_default(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    json_t *labels = clr_sandbox_labels(&in);
    assert_string_equal(json_string_value(json_object_get(labels, L("tenant"))), "acme-2_x");
    json_object_del(labels, L("tenant"));
    clr_sandbox_info out = parse_ok(labels);
    assert_string_equal(out.tenant, CLR_TENANT_DEFAULT);
    json_decref(labels);
    /* and an info without one is written as the default tenant's */
    in.tenant[0] = '\0';
    labels = clr_sandbox_labels(&in);
    assert_string_equal(json_string_value(json_object_get(labels, L("tenant"))),
                        CLR_TENANT_DEFAULT);
    json_decref(labels);
}

/* A tenant label that is not a tenant name is refused, not read as some tenant's. */
static void test_labels_bad_tenant_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "Acme", "a b", "acme:ci", "../x", "a\nb",
                                      "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clr_sandbox_info in = sample();
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, L("tenant"), json_string(bad[i]));
        clr_error err = parse_bad(labels);
        if (!strstr(err.message, L("tenant")))
            fail_msg("tenant '%s': message '%s' does not name the label", bad[i], err.message);
        json_decref(labels);
    }
    clr_sandbox_info in = sample();
    json_t *labels = clr_sandbox_labels(&in);
    json_object_set_new(labels, L("tenant"), json_integer(1));
    parse_bad(labels);
    json_decref(labels);
}

static void test_tenant_name_valid(void **state)
{
    (void)state;
    assert_true(clr_tenant_name_valid("default"));
    assert_true(clr_tenant_name_valid("a"));
    assert_true(clr_tenant_name_valid("team_1-x"));
    assert_true(clr_tenant_name_valid(
        "012345678901234567890123456789012345678901234567890123456789012")); /* 63 */
    assert_false(clr_tenant_name_valid(
        "0123456789012345678901234567890123456789012345678901234567890123")); /* 64 */
    assert_false(clr_tenant_name_valid(NULL));
    assert_false(clr_tenant_name_valid(""));
    assert_false(clr_tenant_name_valid("Acme"));
    assert_false(clr_tenant_name_valid("a:b"));
    assert_false(clr_tenant_name_valid("a.b"));
    assert_false(clr_tenant_name_valid("a/b"));
    assert_false(clr_tenant_name_valid("a b"));
}

static void test_labels_each_missing_required_label_refused(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < N_REQUIRED; i++) {
        json_t *labels = clr_sandbox_labels(&in);
        assert_int_equal(json_object_del(labels, required_labels[i]), 0);
        clr_error err = parse_bad(labels);
        if (!strstr(err.message, required_labels[i]))
            fail_msg("missing %s: message '%s' does not name it", required_labels[i],
                     err.message);
        json_decref(labels);
    }
}

static void test_labels_non_string_values_refused(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < N_REQUIRED; i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, required_labels[i], json_integer(1));
        parse_bad(labels);
        json_decref(labels);
    }
}

static void test_labels_not_an_object_refused(void **state)
{
    (void)state;
    parse_bad(NULL);
    json_t *a = json_array();
    parse_bad(a);
    json_decref(a);
    json_t *s = json_string("io.clearing.managed-by=clearing");
    parse_bad(s);
    json_decref(s);
    json_t *empty = json_object();
    parse_bad(empty);
    json_decref(empty);
}

static void test_labels_bad_numbers_refused(void **state)
{
    (void)state;
    static const char *const numeric[] = {
        L("created-at"),   L("expires-at"),          L("max-expires-at"),
        L("limits.pids"),  L("limits.memory"),       L("limits.cpu-millis"),
        L("limits.fsize"), L("limits.workspace-inodes"),
    };
    static const char *const bad[] = {"12x", "-5", "", " 12", "12 ", "1.5", "0x10", "1e3", "+1",
                                      "99999999999999999999999"};
    clr_sandbox_info in = sample();
    for (size_t k = 0; k < sizeof(numeric) / sizeof(numeric[0]); k++) {
        for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            json_t *labels = clr_sandbox_labels(&in);
            json_object_set_new(labels, numeric[k], json_string(bad[b]));
            clr_error err = parse_bad(labels);
            if (!strstr(err.message, numeric[k]))
                fail_msg("%s='%s': message '%s' does not name the label", numeric[k], bad[b],
                         err.message);
            json_decref(labels);
        }
    }
}

static void test_labels_values_past_field_width_refused(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    struct {
        const char *key, *value;
    } cases[] = {
        {L("limits.pids"), "4294967296"},          /* 2^32 in a u32 */
        {L("limits.cpu-millis"), "4294967296"},
        {L("limits.nofile"), "4294967296"},
        {L("limits.lifetime"), "4294967296"},
        {L("created-at"), "9223372036854775808"},  /* 2^63 in an int64 */
        {L("expires-at"), "18446744073709551615"},
        {L("max-expires-at"), "9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, cases[i].key, json_string(cases[i].value));
        parse_bad(labels);
        json_decref(labels);
    }
    /* the largest that fit are fine */
    json_t *labels = clr_sandbox_labels(&in);
    json_object_set_new(labels, L("limits.pids"), json_string("4294967295"));
    json_object_set_new(labels, L("created-at"), json_string("9223372036854775807"));
    clr_sandbox_info out = parse_ok(labels);
    assert_int_equal(out.limits.pids, UINT32_MAX);
    assert_true(out.created_at == INT64_MAX);
    json_decref(labels);
}

static void test_labels_wrong_managed_by_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {"docker", "Clearing", "clearing ", "", "clearing\n"};
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, L("managed-by"), json_string(bad[i]));
        parse_bad(labels);
        json_decref(labels);
    }
}

static void test_labels_malformed_id_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "sb-0123456789ABCDEF", "sb-0123456789abcde", "sb-0123456789abcdef0", "",
        "../../etc/passwd",    "sb-0123456789abcd/", "xx-0123456789abcdef",
    };
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, L("sandbox-id"), json_string(bad[i]));
        parse_bad(labels);
        json_decref(labels);
    }
}

static void test_labels_insecure_must_be_true_or_false(void **state)
{
    (void)state;
    static const char *const bad[] = {"yes", "1", "TRUE", "", "true ", "falsey"};
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, L("insecure"), json_string(bad[i]));
        clr_error err = parse_bad(labels);
        assert_non_null(strstr(err.message, "insecure"));
        json_decref(labels);
    }
}

static void test_labels_overlong_strings_refused(void **state)
{
    (void)state;
    char long_str[600];
    memset(long_str, 'a', sizeof(long_str) - 1);
    long_str[sizeof(long_str) - 1] = '\0';
    static const char *const keys[] = {L("image"), L("runtime"), L("owner")};
    clr_sandbox_info in = sample();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *labels = clr_sandbox_labels(&in);
        json_object_set_new(labels, keys[i], json_string(long_str));
        clr_error err = parse_bad(labels);
        assert_non_null(strstr(err.message, keys[i]));
        json_decref(labels);
    }
    /* an image name of 255 bytes still fits */
    long_str[255] = '\0';
    json_t *labels = clr_sandbox_labels(&in);
    json_object_set_new(labels, L("image"), json_string(long_str));
    clr_sandbox_info out = parse_ok(labels);
    assert_string_equal(out.image, long_str);
    json_decref(labels);
}

static void test_labels_foreign_labels_ignored(void **state)
{
    (void)state;
    clr_sandbox_info in = sample();
    json_t *labels = clr_sandbox_labels(&in);
    json_object_set_new(labels, "com.docker.compose.project", json_string("x"));
    json_object_set_new(labels, L("future-field"), json_string("whatever"));
    clr_sandbox_info out = parse_ok(labels);
    assert_same_info(&in, &out);
    json_decref(labels);
}

static void test_sandbox_id_valid(void **state)
{
    (void)state;
    assert_true(clr_sandbox_id_valid("sb-0123456789abcdef"));
    assert_true(clr_sandbox_id_valid("sb-ffffffffffffffff"));
    assert_false(clr_sandbox_id_valid(NULL));
    assert_false(clr_sandbox_id_valid(""));
    assert_false(clr_sandbox_id_valid("sb-"));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcde"));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcdef0"));
    assert_false(clr_sandbox_id_valid("sb-0123456789ABCDEF"));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcdeg"));
    assert_false(clr_sandbox_id_valid("SB-0123456789abcdef"));
    assert_false(clr_sandbox_id_valid("sb_0123456789abcdef"));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcd.."));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcd/e"));
    assert_false(clr_sandbox_id_valid("sb-0123456789abcde "));
    assert_false(clr_sandbox_id_valid(" sb-0123456789abcde"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels_round_trip),
        cmocka_unit_test(test_labels_repo_round_trip),
        cmocka_unit_test(test_labels_round_trip_secure_defaults),
        cmocka_unit_test(test_labels_empty_owner_written_as_cli),
        cmocka_unit_test(test_labels_max_expiry_never_before_expiry),
        cmocka_unit_test(test_labels_optional_owner_and_max_expiry_default),
        cmocka_unit_test(test_labels_missing_tenant_is_default),
        cmocka_unit_test(test_labels_bad_tenant_refused),
        cmocka_unit_test(test_tenant_name_valid),
        cmocka_unit_test(test_labels_each_missing_required_label_refused),
        cmocka_unit_test(test_labels_non_string_values_refused),
        cmocka_unit_test(test_labels_not_an_object_refused),
        cmocka_unit_test(test_labels_bad_numbers_refused),
        cmocka_unit_test(test_labels_values_past_field_width_refused),
        cmocka_unit_test(test_labels_wrong_managed_by_refused),
        cmocka_unit_test(test_labels_malformed_id_refused),
        cmocka_unit_test(test_labels_insecure_must_be_true_or_false),
        cmocka_unit_test(test_labels_overlong_strings_refused),
        cmocka_unit_test(test_labels_foreign_labels_ignored),
        cmocka_unit_test(test_sandbox_id_valid),
    };
    return cmocka_run_group_tests_name("labels", tests, NULL, NULL);
}
