/* Finding the in-sandbox agent (lib/agent_locate.c): an explicit choice wins and never falls
 * back; the build tree's agent serves only the build tree's own clearing; the error names every
 * place looked at. Scratch files stand for the binaries. */
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

#include "clearing/agent.h"

struct scratch {
    char dir[64];
    char cli[128], other_cli[128], cli_link[128];
    char build_agent[128], installed[128], env_agent[128], plain[128], missing[128];
};

static void make_file(const char *path, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\n", f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    struct scratch *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    snprintf(s->dir, sizeof(s->dir), "/tmp/clr-agent-locate.XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->cli, sizeof(s->cli), "%s/clearing", s->dir);
    snprintf(s->other_cli, sizeof(s->other_cli), "%s/installed-clearing", s->dir);
    snprintf(s->cli_link, sizeof(s->cli_link), "%s/link-to-clearing", s->dir);
    snprintf(s->build_agent, sizeof(s->build_agent), "%s/build-agent", s->dir);
    snprintf(s->installed, sizeof(s->installed), "%s/installed-agent", s->dir);
    snprintf(s->env_agent, sizeof(s->env_agent), "%s/env-agent", s->dir);
    snprintf(s->plain, sizeof(s->plain), "%s/not-executable", s->dir);
    snprintf(s->missing, sizeof(s->missing), "%s/missing", s->dir);
    make_file(s->cli, 0755);
    make_file(s->other_cli, 0755); /* a copy: the same bytes would still be another file */
    assert_int_equal(symlink(s->cli, s->cli_link), 0);
    make_file(s->build_agent, 0755);
    make_file(s->installed, 0755);
    make_file(s->env_agent, 0755);
    make_file(s->plain, 0644);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct scratch *s = *state;
    const char *files[] = {s->cli,       s->other_cli, s->cli_link, s->build_agent,
                           s->installed, s->env_agent, s->plain};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        unlink(files[i]);
    rmdir(s->dir);
    free(s);
    return 0;
}

/* Every place filled in, the running program being the build tree's clearing. */
static clr_agent_places all_places(const struct scratch *s)
{
    clr_agent_places p = {
        .explicit_path = NULL,
        .env = NULL,
        .self_exe = s->cli,
        .build_cli = s->cli,
        .build_agent = s->build_agent,
        .installed = s->installed,
    };
    return p;
}

static void located(const clr_agent_places *p, const char *want, clr_agent_source want_src)
{
    char out[256] = "";
    clr_agent_source src = (clr_agent_source)-1;
    clr_error err = CLR_ERROR_INIT;
    if (clr_agent_locate_in(out, sizeof(out), p, &src, &err) < 0)
        fail_msg("expected %s, got the error: %s", want, err.message);
    assert_string_equal(out, want);
    assert_int_equal(src, want_src);
}

static const char *refused(const clr_agent_places *p)
{
    static clr_error err;
    char out[256] = "untouched";
    memset(&err, 0, sizeof(err));
    assert_int_equal(clr_agent_locate_in(out, sizeof(out), p, NULL, &err), -1);
    assert_int_equal(err.code, CLR_E_UNAVAILABLE);
    return err.message;
}

static void test_option_wins_over_everything(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    p.explicit_path = s->env_agent;
    p.env = s->installed;
    located(&p, s->env_agent, CLR_AGENT_FROM_OPTION);
}

static void test_env_wins_over_build_tree_and_installed(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    p.env = s->env_agent;
    located(&p, s->env_agent, CLR_AGENT_FROM_ENV);
}

/* An explicit choice that cannot serve is an error naming it, although the build tree's and
 * the installed agents are there: a silent fallback would run an agent nobody chose. */
static void test_bad_env_is_an_error_not_a_fallback(void **state)
{
    struct scratch *s = *state;
    const char *bad[] = {s->missing, s->plain, "relative/agent", s->dir};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clr_agent_places p = all_places(s);
        p.env = bad[i];
        const char *m = refused(&p);
        if (!strstr(m, bad[i]) || !strstr(m, "CLEARING_AGENT"))
            fail_msg("the error for %s does not name it and CLEARING_AGENT: %s", bad[i], m);
    }
    clr_agent_places p = all_places(s);
    p.explicit_path = s->missing;
    assert_non_null(strstr(refused(&p), s->missing));
}

static void test_build_tree_for_the_build_trees_clearing(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    located(&p, s->build_agent, CLR_AGENT_FROM_BUILD_TREE);
    /* The same file by another path (a symlink, as /proc/self/exe is) is still that binary. */
    p.self_exe = s->cli_link;
    located(&p, s->build_agent, CLR_AGENT_FROM_BUILD_TREE);
}

/* Another binary (an installed copy) never picks up the build tree. */
static void test_other_binary_gets_the_installed_agent(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    p.self_exe = s->other_cli;
    located(&p, s->installed, CLR_AGENT_FROM_INSTALL);
}

static void test_build_tree_without_agent_falls_to_installed(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    p.build_agent = s->missing;
    located(&p, s->installed, CLR_AGENT_FROM_INSTALL);
    p.build_cli = NULL; /* a package build: no build tree configured */
    p.build_agent = NULL;
    located(&p, s->installed, CLR_AGENT_FROM_INSTALL);
}

static void test_nothing_found_names_every_place(void **state)
{
    struct scratch *s = *state;
    clr_agent_places p = all_places(s);
    p.self_exe = s->other_cli;
    p.installed = s->missing;
    const char *m = refused(&p);
    assert_non_null(strstr(m, "CLEARING_AGENT (not set)"));
    assert_non_null(strstr(m, s->build_agent));
    assert_non_null(strstr(m, "this program is not"));
    assert_non_null(strstr(m, s->missing));
    assert_non_null(strstr(m, "meson install"));
    /* The build tree's clearing whose agent is missing says so. */
    p = all_places(s);
    p.build_agent = s->missing;
    p.installed = s->plain;
    m = refused(&p);
    assert_non_null(strstr(m, "No such file"));
    assert_non_null(strstr(m, "not executable"));
    p.build_cli = p.build_agent = NULL;
    assert_non_null(strstr(refused(&p), "not configured in this build"));
}

static void test_source_names(void **state)
{
    (void)state;
    assert_string_equal(clr_agent_source_name(CLR_AGENT_FROM_OPTION), "option");
    assert_string_equal(clr_agent_source_name(CLR_AGENT_FROM_ENV), "CLEARING_AGENT");
    assert_string_equal(clr_agent_source_name(CLR_AGENT_FROM_BUILD_TREE), "build tree");
    assert_string_equal(clr_agent_source_name(CLR_AGENT_FROM_INSTALL), "installed");
    assert_string_equal(clr_agent_source_name((clr_agent_source)99), "unknown");
}

/* The real lookup, in this test binary (not the build tree's clearing): $CLEARING_AGENT when
 * set; the error otherwise names the installed path. */
static void test_real_lookup_follows_the_environment(void **state)
{
    struct scratch *s = *state;
    char out[256];
    clr_agent_source src;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(setenv("CLEARING_AGENT", s->env_agent, 1), 0);
    assert_int_equal(clr_agent_locate(out, sizeof(out), NULL, &src, &err), 0);
    assert_string_equal(out, s->env_agent);
    assert_int_equal(src, CLR_AGENT_FROM_ENV);
    assert_int_equal(clr_agent_locate(out, sizeof(out), s->build_agent, &src, &err), 0);
    assert_string_equal(out, s->build_agent);
    assert_int_equal(src, CLR_AGENT_FROM_OPTION);
    unsetenv("CLEARING_AGENT");
    assert_false(clr_agent_in_build_tree()); /* a test binary is not the build tree's clearing */
    if (clr_agent_locate(out, sizeof(out), NULL, &src, &err) == 0)
        assert_int_equal(src, CLR_AGENT_FROM_INSTALL); /* a host with clearing installed */
    else
        assert_non_null(strstr(err.message, "libexec/clearing/clearing-agent"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_wins_over_everything),
        cmocka_unit_test(test_env_wins_over_build_tree_and_installed),
        cmocka_unit_test(test_bad_env_is_an_error_not_a_fallback),
        cmocka_unit_test(test_build_tree_for_the_build_trees_clearing),
        cmocka_unit_test(test_other_binary_gets_the_installed_agent),
        cmocka_unit_test(test_build_tree_without_agent_falls_to_installed),
        cmocka_unit_test(test_nothing_found_names_every_place),
        cmocka_unit_test(test_source_names),
        cmocka_unit_test(test_real_lookup_follows_the_environment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
