/* The runtime's version for a signed verdict: the engine names the binary it runs for a runtime,
 * and its first line of "--version" is the version, made printable. The engine is the scripted
 * one of fake_engine.h; the "runtimes" are small shell scripts. */
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

#include "fake_engine.h"
#include "internal.h"

static void script(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    assert_int_equal(chmod(path, 0755), 0);
}

static void test_version_first_line_printable_cached(void **state)
{
    struct fake *f = *state;
    char rt[128], info[512];
    snprintf(rt, sizeof(rt), "%s/fake-runsc", f->dir);
    /* The first line, with a control byte that must not reach a verdict's trailer. */
    script(rt, "printf 'runsc version release-20240729.0\\001x\\nspec: 1.1.0\\n'");
    snprintf(info, sizeof(info), "{\"Runtimes\":{\"runsc\":{\"path\":\"%s\"}}}", rt);
    fake_answer(f, "GET /v1.41/info", 200, info);
    clr_engine *eng = fake_open(f);
    clr_error err = CLR_ERROR_INIT;
    char v[128] = "";
    if (clr_runtime_version(eng, "runsc", v, sizeof(v), &err) < 0)
        fail_msg("%s", err.message);
    assert_string_equal(v, "runsc version release-20240729.0?x");

    /* Asked once for the same binary: a changed script is not run again. */
    script(rt, "echo other");
    char again[128] = "";
    assert_int_equal(clr_runtime_version(eng, "runsc", again, sizeof(again), &err), 0);
    assert_string_equal(again, v);

    /* A short buffer gets a cut, terminated version. */
    char small[8];
    assert_int_equal(clr_runtime_version(eng, "runsc", small, sizeof(small), &err), 0);
    assert_string_equal(small, "runsc v");
    clr_engine_free(eng);
    unlink(rt);
}

static void test_refusals(void **state)
{
    struct fake *f = *state;
    char quiet[128], info[1024];
    snprintf(quiet, sizeof(quiet), "%s/quiet-runtime", f->dir);
    script(quiet, "exit 0");
    snprintf(info, sizeof(info),
             "{\"Runtimes\":{\"quiet\":{\"path\":\"%s\"},\"gone\":{\"path\":\"%s/nope\"}}}", quiet,
             f->dir);
    fake_answer(f, "GET /v1.41/info", 200, info);
    clr_engine *eng = fake_open(f);
    char v[64];

    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_runtime_version(eng, "kata", v, sizeof(v), &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND); /* the engine has no such runtime */

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_runtime_version(eng, "gone", v, sizeof(v), &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND); /* its binary does not exist */

    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_runtime_version(eng, "quiet", v, sizeof(v), &err), -1);
    assert_non_null(strstr(err.message, "printed nothing"));
    clr_engine_free(eng);
    unlink(quiet);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_version_first_line_printable_cached, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, fake_setup, fake_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
