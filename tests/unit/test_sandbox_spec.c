/* The sandbox's container spec as a pure function of its options (lib/sandbox_spec.c): the body
 * of POST /containers/create for the default options and for each option, and the options that
 * must be refused before anything is made. No engine: the spec is checked value by value, and
 * HostConfig's keys are checked as a set, so a new key (a device, a bind, a port) shows up here
 * before it reaches a sandbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "clearing/cleanup_json.h"
#include "clearing/egress.h"
#include "internal.h"
#include "sandbox_spec.h"

#define ID "sb-0123456789abcdef"
#define NOW 1700000000
#define AGENT "/usr/libexec/clearing/clearing-agent"
#define WORKSPACE "/var/lib/clearing/workspaces/" ID
#define L(name) CLR_LABEL_PREFIX name

/* Resolves opts (which must pass) and builds the spec with the test's agent and workspace. */
static json_t *spec_of(const clr_sandbox_options *opts, clr_sandbox_info *info)
{
    clr_error err = CLR_ERROR_INIT;
    int rc = clr_sandbox_spec_resolve(info, opts, ID, NOW, &err);
    if (rc < 0)
        fail_msg("resolve refused: %s", err.message);
    json_t *spec = clr_sandbox_spec_build(info, AGENT, WORKSPACE, opts->env);
    assert_non_null(spec);
    return spec;
}

static json_t *host_of(json_t *spec)
{
    json_t *h = json_object_get(spec, "HostConfig");
    assert_true(json_is_object(h));
    return h;
}

static void assert_str(json_t *o, const char *key, const char *want)
{
    const char *got = json_string_value(json_object_get(o, key));
    if (!got)
        fail_msg("%s is not a string", key);
    assert_string_equal(got, want);
}

static void assert_int(json_t *o, const char *key, json_int_t want)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    assert_int_equal(json_integer_value(v), want);
}

static void assert_bool(json_t *o, const char *key, bool want)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v))
        fail_msg("%s is not a boolean", key);
    assert_int_equal(json_is_true(v), want);
}

/* a is a JSON array of exactly the strings want (NULL-terminated), in order. */
static void assert_strings(json_t *a, const char *const *want)
{
    assert_true(json_is_array(a));
    size_t n = 0;
    for (; want[n]; n++) {
        const char *got = json_string_value(json_array_get(a, n));
        if (!got)
            fail_msg("entry %zu is not a string", n);
        assert_string_equal(got, want[n]);
    }
    assert_int_equal(json_array_size(a), n);
}

/* ---- the default options ---------------------------------------------------------------- */

static void test_default_info(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_spec_resolve(&info, &o, ID, NOW, &err), 0);
    assert_string_equal(info.id, ID);
    assert_string_equal(info.image, CLR_DEFAULT_IMAGE);
    assert_string_equal(info.runtime, "runsc");
    assert_false(info.insecure);
    assert_int_equal(info.created_at, NOW);
    assert_int_equal(info.expires_at, NOW + 600);
    assert_int_equal(info.max_expires_at, NOW + 600); /* no extension allowed */
    assert_string_equal(info.owner, "cli");
    assert_string_equal(info.tenant, CLR_TENANT_DEFAULT);
    assert_string_equal(info.repo, "");
    assert_string_equal(info.container_id, "");
    clr_limits def = CLR_LIMITS_INIT;
    assert_true(clr_limits_equal(&info.limits, &def));
}

static void test_default_spec_container(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_str(spec, "Image", CLR_DEFAULT_IMAGE);
    assert_strings(json_object_get(spec, "Entrypoint"), (const char *[]){CLR_AGENT_TARGET, NULL});
    assert_strings(json_object_get(spec, "Cmd"), (const char *[]){"init", NULL});
    /* The agent starts as root to set up each command, then drops to the sandbox user. */
    assert_str(spec, "User", "0:0");
    assert_str(spec, "WorkingDir", "/workspace");
    assert_bool(spec, "NetworkDisabled", true);
    /* stdin stays open: the live channel is the container's stdio. */
    assert_bool(spec, "OpenStdin", true);
    assert_bool(spec, "StdinOnce", false);
    assert_bool(spec, "AttachStdin", true);
    assert_bool(spec, "AttachStdout", true);
    assert_bool(spec, "AttachStderr", true);
    assert_bool(spec, "Tty", false);
    assert_str(spec, "StopSignal", "SIGTERM");
    assert_int(spec, "StopTimeout", 1);
    assert_strings(json_object_get(spec, "Env"), (const char *[]){NULL});
    assert_int_equal(json_object_size(spec), 17);
}

static void test_default_spec_host(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    json_t *h = host_of(spec);
    assert_str(h, "Runtime", "runsc");
    assert_str(h, "NetworkMode", "none");
    assert_bool(h, "ReadonlyRootfs", true);
    assert_strings(json_object_get(h, "CapDrop"), (const char *[]){"ALL", NULL});
    assert_strings(json_object_get(h, "CapAdd"),
                   (const char *[]){"CAP_SETUID", "CAP_SETGID", "CAP_KILL", NULL});
    assert_strings(json_object_get(h, "SecurityOpt"), (const char *[]){"no-new-privileges", NULL});
    assert_int(h, "Memory", 512 * CLR_MIB);
    assert_int(h, "MemorySwap", 512 * CLR_MIB); /* equal to Memory: no extra swap */
    assert_int(h, "NanoCpus", 1000000000);
    assert_int(h, "PidsLimit", 256 + 8 * 256);
    assert_str(json_object_get(h, "Tmpfs"), "/tmp",
               "rw,nosuid,nodev,noexec,size=67108864,mode=1777");
    assert_int_equal(json_object_size(json_object_get(h, "Tmpfs")), 1);
    assert_str(json_object_get(h, "RestartPolicy"), "Name", "no");
    assert_str(json_object_get(h, "LogConfig"), "Type", "none");
    assert_str(h, "IpcMode", "private");
    assert_bool(h, "Privileged", false);
    /* Exactly these keys: nothing else (Binds, Devices, PortBindings, ...) reaches the engine. */
    static const char *const keys[] = {
        "Runtime", "NetworkMode", "ReadonlyRootfs", "CapDrop", "CapAdd", "SecurityOpt",
        "Memory", "MemorySwap", "NanoCpus", "PidsLimit", "Tmpfs", "RestartPolicy", "LogConfig",
        "IpcMode", "Privileged", "Mounts"};
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            known |= strcmp(keys[i], key) == 0;
        if (!known)
            fail_msg("unexpected HostConfig key %s", key);
    }
    assert_int_equal(json_object_size(h), sizeof(keys) / sizeof(keys[0]));
}

static void test_default_spec_mounts(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    json_t *m = json_object_get(host_of(spec), "Mounts");
    assert_int_equal(json_array_size(m), 2);
    json_t *agent = json_array_get(m, 0), *ws = json_array_get(m, 1);
    assert_str(agent, "Type", "bind");
    assert_str(agent, "Source", AGENT);
    assert_str(agent, "Target", CLR_AGENT_TARGET);
    assert_bool(agent, "ReadOnly", true); /* a command cannot replace the agent */
    assert_str(ws, "Type", "bind");
    assert_str(ws, "Source", WORKSPACE);
    assert_str(ws, "Target", "/workspace");
    assert_bool(ws, "ReadOnly", false);
    assert_int_equal(json_object_size(agent), 4);
    assert_int_equal(json_object_size(ws), 4);
}

static void test_default_spec_labels(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    json_t *labels = json_object_get(spec, "Labels");
    _cleanup_json_ json_t *want = clr_sandbox_labels(&info);
    assert_true(json_equal(labels, want));
    assert_str(labels, L("managed-by"), "clearing");
    assert_str(labels, L("sandbox-id"), ID);
    assert_str(labels, L("runtime"), "runsc");
    assert_str(labels, L("insecure"), "false");
    assert_str(labels, L("created-at"), "1700000000");
    assert_str(labels, L("expires-at"), "1700000600");
    assert_str(labels, L("owner"), "cli");
    assert_str(labels, L("tenant"), "default");
    /* and back: a restarted daemon rebuilds the same record from them */
    clr_sandbox_info back;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_info_from_labels(&back, labels, &err), 0);
    assert_string_equal(back.id, ID);
    assert_string_equal(back.runtime, "runsc");
    assert_int_equal(back.expires_at, info.expires_at);
    assert_true(clr_limits_equal(&back.limits, &info.limits));
}

/* ---- each option ------------------------------------------------------------------------ */

static void test_memory(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.limits.memory_bytes = 3 * CLR_GIB;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_int(host_of(spec), "Memory", 3 * CLR_GIB);
    assert_int(host_of(spec), "MemorySwap", 3 * CLR_GIB);
    assert_str(json_object_get(spec, "Labels"), L("limits.memory"), "3221225472");
}

static void test_cpus(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.limits.cpu_millis = 2500;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_int(host_of(spec), "NanoCpus", 2500000000);
    o.limits.cpu_millis = 100; /* the smallest quota */
    _cleanup_json_ json_t *small = spec_of(&o, &info);
    assert_int(host_of(small), "NanoCpus", 100000000);
}

static void test_pids(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.limits.pids = 100;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_int(host_of(spec), "PidsLimit", 256 + 800);
    assert_str(json_object_get(spec, "Labels"), L("limits.pids"), "100");
    /* the backstop at the ends of the range */
    assert_int_equal(clr_sandbox_spec_pids_backstop(8), 320);
    assert_int_equal(clr_sandbox_spec_pids_backstop(4096), 256 + 8 * 4096);
}

static void test_disk(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.limits.tmp_bytes = 3 * CLR_MIB;
    o.limits.workspace_bytes = 2 * CLR_GIB;
    o.limits.workspace_inodes = 5000;
    o.limits.fsize_bytes = 10 * CLR_MIB;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_str(json_object_get(host_of(spec), "Tmpfs"), "/tmp",
               "rw,nosuid,nodev,noexec,size=3145728,mode=1777");
    /* /workspace is a host tmpfs (clr_workspace_create): its size travels in the labels. */
    json_t *labels = json_object_get(spec, "Labels");
    assert_str(labels, L("limits.tmp"), "3145728");
    assert_str(labels, L("limits.workspace"), "2147483648");
    assert_str(labels, L("limits.workspace-inodes"), "5000");
    assert_str(labels, L("limits.fsize"), "10485760");
    assert_int_equal(info.limits.workspace_bytes, 2 * CLR_GIB);
}

static void test_network_off_and_egress(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    _cleanup_json_ json_t *off = spec_of(&o, &info);
    /* With egress the sandbox still has no network: its proxy is the agent, over the channel. */
    o.env = clr_egress_proxy_env;
    _cleanup_json_ json_t *egress = spec_of(&o, &info);
    for (json_t *spec = off; spec; spec = spec == off ? egress : NULL) {
        assert_str(host_of(spec), "NetworkMode", "none");
        assert_bool(spec, "NetworkDisabled", true);
        assert_null(json_object_get(host_of(spec), "PortBindings"));
    }
    assert_int_equal(json_array_size(json_object_get(off, "Env")), 0);
    assert_strings(json_object_get(egress, "Env"), clr_egress_proxy_env);
    assert_string_equal(json_string_value(json_array_get(json_object_get(egress, "Env"), 0)),
                        "HTTP_PROXY=" CLR_EGRESS_PROXY);
}

static void test_env(void **state)
{
    (void)state;
    const char *env[] = {"A=1", "EMPTY=", "B=x=y", NULL};
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.env = env;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_strings(json_object_get(spec, "Env"), env);
}

static void test_runtime_runsc_and_runc(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    o.insecure_runtime = "runsc"; /* naming the safe runtime weakens nothing */
    _cleanup_json_ json_t *runsc = spec_of(&o, &info);
    assert_false(info.insecure);
    assert_str(host_of(runsc), "Runtime", "runsc");
    o.insecure_runtime = ""; /* empty: not set */
    _cleanup_json_ json_t *empty = spec_of(&o, &info);
    assert_false(info.insecure);
    assert_str(host_of(empty), "Runtime", "runsc");
    o.insecure_runtime = "runc"; /* the operator's explicit choice: recorded on the sandbox */
    _cleanup_json_ json_t *runc = spec_of(&o, &info);
    assert_true(info.insecure);
    assert_string_equal(info.runtime, "runc");
    assert_str(host_of(runc), "Runtime", "runc");
    assert_str(json_object_get(runc, "Labels"), L("runtime"), "runc");
    assert_str(json_object_get(runc, "Labels"), L("insecure"), "true");
    /* everything else is the same hardening */
    assert_str(host_of(runc), "NetworkMode", "none");
    assert_bool(host_of(runc), "ReadonlyRootfs", true);
    assert_strings(json_object_get(host_of(runc), "CapDrop"), (const char *[]){"ALL", NULL});
    assert_strings(json_object_get(host_of(runc), "SecurityOpt"),
                   (const char *[]){"no-new-privileges", NULL});
}

static void test_labels_owner_tenant_lifetime(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.owner = "daemon-7";
    o.tenant = "team_a";
    o.image = "clearing/python:3";
    o.limits.lifetime_s = 60;
    o.max_lifetime_s = 3600;
    clr_sandbox_info info;
    _cleanup_json_ json_t *spec = spec_of(&o, &info);
    assert_int_equal(info.expires_at, NOW + 60);
    assert_int_equal(info.max_expires_at, NOW + 3600);
    assert_str(spec, "Image", "clearing/python:3");
    json_t *labels = json_object_get(spec, "Labels");
    assert_str(labels, L("owner"), "daemon-7");
    assert_str(labels, L("tenant"), "team_a");
    assert_str(labels, L("image"), "clearing/python:3");
    assert_str(labels, L("expires-at"), "1700000060");
    assert_str(labels, L("max-expires-at"), "1700003600");
    assert_str(labels, L("limits.lifetime"), "60");
    /* a max lifetime shorter than the lifetime is the lifetime */
    o.max_lifetime_s = 10;
    _cleanup_json_ json_t *shorter = spec_of(&o, &info);
    assert_int_equal(info.max_expires_at, NOW + 60);
}

static void test_mounts_follow_paths(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_spec_resolve(&info, &o, ID, NOW, &err), 0);
    _cleanup_json_ json_t *spec = clr_sandbox_spec_build(&info, "/opt/a", "/srv/ws", NULL);
    assert_non_null(spec);
    json_t *m = json_object_get(host_of(spec), "Mounts");
    assert_str(json_array_get(m, 0), "Source", "/opt/a");
    assert_str(json_array_get(m, 1), "Source", "/srv/ws");
    /* the agent's target never moves with its source */
    assert_str(json_array_get(m, 0), "Target", CLR_AGENT_TARGET);
}

/* ---- refusals --------------------------------------------------------------------------- */

static void assert_refused(const clr_sandbox_options *o, const char *needle)
{
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_spec_resolve(&info, o, ID, NOW, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    if (!strstr(err.message, needle))
        fail_msg("message '%s' does not say '%s'", err.message, needle);
}

static void test_refuse_limits(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_spec_resolve(&info, &o, ID, NOW, &err), 0); /* control */
    o.limits.memory_bytes = CLR_MIB;
    assert_refused(&o, "memory");
    o = (clr_sandbox_options)CLR_SANDBOX_OPTIONS_INIT;
    o.limits.cpu_millis = 0;
    assert_refused(&o, "cpu");
    o = (clr_sandbox_options)CLR_SANDBOX_OPTIONS_INIT;
    o.limits.pids = 100000;
    assert_refused(&o, "pids");
    o = (clr_sandbox_options)CLR_SANDBOX_OPTIONS_INIT;
    o.limits.tmp_bytes = 5 * CLR_GIB;
    assert_refused(&o, "tmp");
}

static void test_refuse_runtime(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.insecure_runtime = "kata";
    assert_refused(&o, "insecure runtime 'kata' is not supported");
    o.insecure_runtime = "RUNC";
    assert_refused(&o, "'RUNC'");
}

static void test_refuse_image(void **state)
{
    (void)state;
    static const char *const bad[] = {"clearing/default:latest?x=1", "a b", "img#frag",
                                      "img\r\nHost: x", "/abs/path", "a/../b", "%2e%2e"};
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.image = bad[i];
        assert_refused(&o, "is not an image reference");
    }
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    o.image = longname;
    assert_refused(&o, "image name too long");
    o.image = "registry.example:5000/team/img@sha256:0123"; /* control: all allowed */
    clr_sandbox_info info;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_spec_resolve(&info, &o, ID, NOW, &err), 0);
}

static void test_refuse_env(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    const char *noeq[] = {"A=1", "JUSTAKEY", NULL};
    o.env = noeq;
    assert_refused(&o, "environment entry 'JUSTAKEY' is not KEY=VALUE");
    const char *nokey[] = {"=value", NULL};
    o.env = nokey;
    assert_refused(&o, "'=value'");
}

static void test_refuse_repo_and_copy(void **state)
{
    (void)state;
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.repo_path = "/srv/repo";
    o.workspace_from = "/srv/dir";
    assert_refused(&o, "not both");
}

/* ---- other pure parts ------------------------------------------------------------------- */

static void test_exec_memory_cap(void **state)
{
    (void)state;
    /* reserve = max(memory / 8, 48 MiB), at most half */
    assert_int_equal(clr_exec_memory_cap(512 * CLR_MIB), 448 * CLR_MIB);
    assert_int_equal(clr_exec_memory_cap(1 * CLR_GIB), 896 * CLR_MIB);
    assert_int_equal(clr_exec_memory_cap(256 * CLR_MIB), 208 * CLR_MIB);
    assert_int_equal(clr_exec_memory_cap(64 * CLR_MIB), 32 * CLR_MIB);
    assert_int_equal(clr_exec_memory_cap(32 * CLR_MIB), 16 * CLR_MIB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_info),
        cmocka_unit_test(test_default_spec_container),
        cmocka_unit_test(test_default_spec_host),
        cmocka_unit_test(test_default_spec_mounts),
        cmocka_unit_test(test_default_spec_labels),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_cpus),
        cmocka_unit_test(test_pids),
        cmocka_unit_test(test_disk),
        cmocka_unit_test(test_network_off_and_egress),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_runtime_runsc_and_runc),
        cmocka_unit_test(test_labels_owner_tenant_lifetime),
        cmocka_unit_test(test_mounts_follow_paths),
        cmocka_unit_test(test_refuse_limits),
        cmocka_unit_test(test_refuse_runtime),
        cmocka_unit_test(test_refuse_image),
        cmocka_unit_test(test_refuse_env),
        cmocka_unit_test(test_refuse_repo_and_copy),
        cmocka_unit_test(test_exec_memory_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
