/* lib/gitws_ignore.c: git's glob matcher and .gitignore rules, hostile patterns bounded. */
#include "test_gitws_fixture.h"

/* ---- the glob and ignore matcher ---- */

static void glob_basics(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("*.c", "a.c"));
    assert_true(clr_git_glob_match("*.c", ".c"));
    assert_false(clr_git_glob_match("*.c", "a/b.c"));
    assert_false(clr_git_glob_match("*.c", "a.h"));
    assert_true(clr_git_glob_match("foo*bar", "foobar"));
    assert_true(clr_git_glob_match("foo*bar", "foo-x-bar"));
    assert_false(clr_git_glob_match("foo*bar", "foo/bar"));
    assert_true(clr_git_glob_match("a?c", "abc"));
    assert_false(clr_git_glob_match("a?c", "a/c"));
    assert_false(clr_git_glob_match("a?c", "ac"));
    assert_true(clr_git_glob_match("exact", "exact"));
    assert_false(clr_git_glob_match("exact", "exactly"));
}

static void glob_brackets_and_escapes(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("[abc]x", "bx"));
    assert_false(clr_git_glob_match("[abc]x", "dx"));
    assert_true(clr_git_glob_match("[a-c]", "b"));
    assert_false(clr_git_glob_match("[a-c]", "d"));
    assert_true(clr_git_glob_match("[!a-c]", "d"));
    assert_false(clr_git_glob_match("[!a-c]", "b"));
    assert_true(clr_git_glob_match("[^a]", "b"));
    assert_true(clr_git_glob_match("[]]", "]"));
    assert_true(clr_git_glob_match("[a-]", "-"));
    assert_true(clr_git_glob_match("[[:digit:]]x", "5x"));
    assert_false(clr_git_glob_match("[[:digit:]]x", "ax"));
    assert_true(clr_git_glob_match("[[:upper:][:digit:]]", "Q"));
    assert_false(clr_git_glob_match("[[:bogus:]]", "b"));
    assert_false(clr_git_glob_match("[abc", "a"));     /* unclosed: matches nothing */
    assert_false(clr_git_glob_match("a[/]b", "a/b")); /* a bracket never matches '/' */
    assert_true(clr_git_glob_match("\\*", "*"));
    assert_false(clr_git_glob_match("\\*", "a"));
    assert_true(clr_git_glob_match("a\\?", "a?"));
    assert_false(clr_git_glob_match("a\\?", "ab"));
    assert_true(clr_git_glob_match("[\\]]", "]"));
}

static void glob_double_star(void **state)
{
    (void)state;
    assert_true(clr_git_glob_match("**/foo", "foo"));
    assert_true(clr_git_glob_match("**/foo", "a/b/foo"));
    assert_false(clr_git_glob_match("**/foo", "a/b/foox"));
    assert_true(clr_git_glob_match("foo/**", "foo/a"));
    assert_true(clr_git_glob_match("foo/**", "foo/a/b"));
    assert_false(clr_git_glob_match("foo/**", "foo"));
    assert_false(clr_git_glob_match("foo/**", "bar/a"));
    assert_true(clr_git_glob_match("a/**/b", "a/b"));
    assert_true(clr_git_glob_match("a/**/b", "a/x/b"));
    assert_true(clr_git_glob_match("a/**/b", "a/x/y/b"));
    assert_false(clr_git_glob_match("a/**/b", "ax/b"));
    assert_false(clr_git_glob_match("a/**/b", "a/x/bc"));
    assert_true(clr_git_glob_match("**", "any/thing/at/all"));
    assert_true(clr_git_glob_match("docs/**/*.gen", "docs/x.gen"));
    assert_true(clr_git_glob_match("docs/**/*.gen", "docs/a/b/x.gen"));
    assert_false(clr_git_glob_match("docs/**/*.gen", "docs/a/b/x.txt"));
    /* Not a whole component: a plain star that stays within one directory. */
    assert_true(clr_git_glob_match("a**b", "axxb"));
    assert_false(clr_git_glob_match("a**b", "ax/b"));
    assert_true(clr_git_glob_match("**foo", "xfoo"));
    assert_false(clr_git_glob_match("**foo", "x/foo"));
}

static void glob_hostile_patterns_are_bounded(void **state)
{
    (void)state;
    char subject[256];
    memset(subject, 'a', sizeof(subject) - 1);
    subject[sizeof(subject) - 1] = '\0';
    char deep[1024] = "";
    for (int i = 0; i < 60; i++)
        strcat(deep, "a/");
    strcat(deep, "x");
    /* Unbounded, the first two would backtrack through some 10^20 ways; bounded, they cost
     * milliseconds of CPU. */
    struct cost before = cost_now();
    assert_false(clr_git_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*b", subject));
    assert_false(clr_git_glob_match("**/**/**/**/**/**/**/**/y", deep));
    assert_true(clr_git_glob_match("**/**/**/x", deep));
    double cpu = cpu_s_since(&before);
    print_message("hostile globs: %.4f s of CPU\n", cpu);
    assert_true(cpu < 2.0);
}

static clr_git_ignore *ignore(const clr_git_ignore *parent, const char *dir, const char *text)
{
    clr_error err = CLR_ERROR_INIT;
    clr_git_ignore *ig = NULL;
    if (clr_git_ignore_parse(&ig, parent, dir, text, strlen(text), &err) < 0)
        fail_msg("parse: %s", err.message);
    return ig;
}

static void ignore_rules(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "# a comment\n\n*.log\n!keep.log\n   \n#*.c\n");
    assert_true(clr_git_ignored(ig, "x.log", false));
    assert_true(clr_git_ignored(ig, "a/b/x.log", false));
    assert_false(clr_git_ignored(ig, "keep.log", false));
    assert_false(clr_git_ignored(ig, "a/keep.log", false));
    assert_false(clr_git_ignored(ig, "x.c", false)); /* commented out */
    assert_false(clr_git_ignored(ig, "# a comment", false));
    clr_git_ignore_free(ig);

    ig = ignore(NULL, "", "build/\n/top\ndoc/frotz\n");
    assert_true(clr_git_ignored(ig, "build", true));
    assert_false(clr_git_ignored(ig, "build", false)); /* dir-only */
    assert_true(clr_git_ignored(ig, "a/build", true));
    assert_true(clr_git_ignored(ig, "top", false));
    assert_false(clr_git_ignored(ig, "a/top", false)); /* leading '/' anchors */
    assert_true(clr_git_ignored(ig, "doc/frotz", true));
    assert_false(clr_git_ignored(ig, "a/doc/frotz", true)); /* an inner '/' anchors */
    clr_git_ignore_free(ig);
}

static void ignore_later_rules_win(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "!a.txt\na.txt\nb.txt\n!b.txt\n*.o\n!keep*.o\n");
    assert_true(clr_git_ignored(ig, "a.txt", false));
    assert_false(clr_git_ignored(ig, "b.txt", false));
    assert_true(clr_git_ignored(ig, "x.o", false));
    assert_false(clr_git_ignored(ig, "keep-me.o", false));
    clr_git_ignore_free(ig);
}

static void ignore_escapes_and_spaces(void **state)
{
    (void)state;
    clr_git_ignore *ig = ignore(NULL, "", "a.txt   \nb\\ \n\\#hash\n\\!bang\n");
    assert_true(clr_git_ignored(ig, "a.txt", false)); /* trailing spaces dropped */
    assert_true(clr_git_ignored(ig, "b ", false));    /* unless escaped */
    assert_false(clr_git_ignored(ig, "b", false));
    assert_true(clr_git_ignored(ig, "#hash", false));
    assert_true(clr_git_ignored(ig, "!bang", false));
    clr_git_ignore_free(ig);
}

static void ignore_nested_files(void **state)
{
    (void)state;
    clr_git_ignore *top = ignore(NULL, "", "*.log\n/x\n");
    clr_git_ignore *sub = ignore(top, "sub", "!*.log\n/x\nlocal/\n");
    assert_false(clr_git_ignored(sub, "sub/a.log", false)); /* the deeper file wins */
    assert_true(clr_git_ignored(sub, "a.log", false));
    assert_true(clr_git_ignored(sub, "other/a.log", false));
    assert_true(clr_git_ignored(sub, "sub/x", false)); /* anchored to sub/ */
    assert_false(clr_git_ignored(sub, "sub/y/x", false));
    assert_true(clr_git_ignored(sub, "x", false));     /* the top file's own /x */
    assert_true(clr_git_ignored(sub, "sub/deep/local", true));
    assert_false(clr_git_ignored(sub, "local", true)); /* sub's rules stay in sub */
    assert_false(clr_git_ignored(sub, "subx/a.txt", false));
    clr_git_ignore_free(sub);
    clr_git_ignore_free(top);
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glob_basics),
        cmocka_unit_test(glob_brackets_and_escapes),
        cmocka_unit_test(glob_double_star),
        cmocka_unit_test(glob_hostile_patterns_are_bounded),
        cmocka_unit_test(ignore_rules),
        cmocka_unit_test(ignore_later_rules_win),
        cmocka_unit_test(ignore_escapes_and_spaces),
        cmocka_unit_test(ignore_nested_files),
    };
    return cmocka_run_group_tests_name("gitws_ignore", tests, NULL, NULL);
}
