/* lib/gitws_walk.c: what a hostile sandbox leaves in the workspace (links to secrets, .git,
 * FIFOs, sparse giants, entries swapped during the walk) and what ends up in the repository;
 * the base tree's .gitignore, bounded. */
#include "test_gitws_fixture.h"

#include "gitws_ignore_internal.h"
#include "gitws_walk_internal.h"

/* ---- hostile workspaces ---- */

typedef struct odb_scan {
    git_odb *odb;
    const char *needle;
    bool found;
} odb_scan;

static int scan_object(const git_oid *id, void *payload)
{
    odb_scan *s = payload;
    git_odb_object *o = NULL;
    if (git_odb_read(&o, s->odb, id) == 0) {
        if (memmem(git_odb_object_data(o), git_odb_object_size(o), s->needle,
                   strlen(s->needle)))
            s->found = true;
        git_odb_object_free(o);
    }
    return 0;
}

/* Is needle inside any object of the repository (loose or packed)? */
static bool odb_contains(const fixture *f, const char *needle)
{
    git_libgit2_init();
    git_repository *repo = NULL;
    git_odb *odb = NULL;
    assert_int_equal(git_repository_open(&repo, f->repo), 0);
    assert_int_equal(git_repository_odb(&odb, repo), 0);
    odb_scan s = {odb, needle, false};
    assert_int_equal(git_odb_foreach(odb, scan_object, &s), 0);
    git_odb_free(odb);
    git_repository_free(repo);
    git_libgit2_shutdown();
    return s.found;
}

static void symlink_to_secret_committed_as_link(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-6", &w);
    char secret[256], link[256];
    snprintf(secret, sizeof(secret), "%s/secret", f->root);
    put(f->root, "secret", "TOPSECRET-7f3a9c-not-for-the-repo\n");
    snprintf(link, sizeof(link), "%s/leak", f->ws);
    assert_int_equal(symlink(secret, link), 0);
    snprintf(link, sizeof(link), "%s/shadow", f->ws);
    assert_int_equal(symlink("/etc/shadow", link), 0);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *tree = tree_listing(f, "clearing/sb-6");
    assert_non_null(strstr(tree, "120000 shadow\n"));
    assert_non_null(strstr(tree, "120000 leak\n"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-6:shadow", f->repo);
    assert_string_equal(target, "/etc/shadow");
    char *leak = sh_out(NULL, "git -C %s cat-file -p clearing/sb-6:leak", f->repo);
    assert_string_equal(leak, secret);
    assert_false(odb_contains(f, "TOPSECRET-7f3a9c"));
    /* /etc/shadow's first line (root's entry) is nowhere in the object database either. */
    FILE *sf = fopen("/etc/shadow", "r");
    char line[512];
    if (sf && fgets(line, sizeof(line), sf) && strlen(line) > 8)
        assert_false(odb_contains(f, line));
    if (sf)
        fclose(sf);
    free(tree);
    free(target);
    free(leak);
    clr_git_commit_result_clear(&r);
}

static void dot_git_in_workspace_skipped(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-7", &w);
    char hook[512];
    snprintf(hook, sizeof(hook), "#!/bin/sh\ntouch %s/HOOK-RAN\n", f->root);
    sh("mkdir -p %s/.git/hooks %s/sub %s/.GIT %s/deep/er", f->ws, f->ws, f->ws, f->ws);
    write_file(f->ws, ".git/hooks/post-commit", hook, strlen(hook), 0755);
    put(f->ws, ".git/config", "[core]\n\tfsmonitor = touch HOOK-RAN\n");
    put(f->ws, "sub/.git", "gitdir: /etc\n");
    put(f->ws, ".GIT/x", "x");
    put(f->ws, "deep/er/git~1", "x");
    put(f->ws, ".git.", "x");                /* NTFS drops the trailing dot */
    put(f->ws, ".g\xe2\x80\x8cit", "x");     /* HFS+ ignores U+200C */
    char link[256];
    snprintf(link, sizeof(link), "%s/.gitmodules", f->ws);
    assert_int_equal(symlink("/etc/passwd", link), 0); /* git fsck rejects it */
    put(f->ws, "ok.txt", "fine\n");
    /* The caller's real repository gets the same hook: libgit2 must not run it either. */
    write_file(f->repo, ".git/hooks/post-commit", hook, strlen(hook), 0755);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_true(skipped_has(&r, ".git", ".git"));
    assert_true(skipped_has(&r, "sub/.git", ".git"));
    assert_true(skipped_has(&r, ".GIT", ".git"));
    assert_true(skipped_has(&r, "deep/er/git~1", ".git"));
    assert_true(skipped_has(&r, ".git.", ".git"));
    assert_true(skipped_has(&r, ".g\xe2\x80\x8cit", ".git"));
    assert_true(skipped_has(&r, ".gitmodules", "gitmodules-symlink"));
    assert_int_equal(r.n_skipped, 7);
    assert_false(exists(f->root, "HOOK-RAN"));
    assert_false(exists(f->ws, "HOOK-RAN"));
    char *tree = tree_listing(f, "clearing/sb-7");
    assert_non_null(strstr(tree, " ok.txt\n"));
    assert_null(strstr(tree, ".git/"));
    assert_null(strstr(tree, ".GIT"));
    assert_null(strstr(tree, "git~1"));
    assert_null(strstr(tree, "sub/"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

static void special_files_skipped_without_blocking(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-8", &w);
    char path[256];
    snprintf(path, sizeof(path), "%s/pipe", f->ws);
    assert_int_equal(mkfifo(path, 0644), 0);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s/sock", f->ws);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    put(f->ws, "real.txt", "real\n");
    alarm(30); /* a walk that opened the FIFO for reading would hang here */
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    alarm(0);
    close(s);
    assert_true(skipped_has(&r, "pipe", "fifo"));
    assert_true(skipped_has(&r, "sock", "socket"));
    char *tree = tree_listing(f, "clearing/sb-8");
    assert_non_null(strstr(tree, " real.txt\n"));
    assert_null(strstr(tree, "pipe"));
    assert_null(strstr(tree, "sock"));
    free(tree);
    clr_git_commit_result_clear(&r);
}

static void sparse_giant_file_refused_quickly(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-9", &w);
    char path[256];
    snprintf(path, sizeof(path), "%s/huge.img", f->ws);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 2LL * 1024 * 1024 * 1024), 0);
    close(fd);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.limits.max_file_bytes = 1024 * 1024;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    /* Positive control: reading the file shows in what this process read. */
    struct cost before = cost_now();
    char chunk[65536];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    for (int i = 0; i < 128; i++)
        assert_int_equal(read(fd, chunk, sizeof(chunk)), sizeof(chunk));
    close(fd);
    assert_true(cost_now().rchar - before.rchar >= 128 * sizeof(chunk));

    /* Refused on its size: without reading (let alone hashing) its 2 GiB. */
    before = cost_now();
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    struct cost after = cost_now();
    double cpu = (double)(after.cpu_ns - before.cpu_ns) / 1e9;
    print_message("refusal: %.4f s of CPU, %" PRIu64 " bytes read\n", cpu,
                  after.rchar - before.rchar);
    assert_true(after.rchar - before.rchar < co.limits.max_file_bytes);
    assert_true(cpu < 1.0);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "huge.img"));
    assert_non_null(strstr(err.message, "2147483648 bytes"));
    assert_non_null(strstr(err.message, "max_file_bytes"));
    char *tip = rev(f, "clearing/sb-9");
    assert_string_equal(tip, w.start_commit);
    free(tip);
    clr_git_commit_result_clear(&r);
}

static void entry_count_total_and_depth_limits(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-10", &w);
    sh("mkdir %s/many && cd %s/many && for i in $(seq 100); do : > f$i; done", f->ws, f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.limits.max_files = 50;
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_files"));
    sh("rm -rf %s/many", f->ws);

    co = commit_options(f, f->ws, w.branch);
    co.limits.max_total_bytes = 1000;
    char blob[600];
    memset(blob, 'x', sizeof(blob));
    write_file(f->ws, "one", blob, sizeof(blob), 0644);
    write_file(f->ws, "two", blob, sizeof(blob), 0644);
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_total_bytes"));

    co = commit_options(f, f->ws, w.branch);
    co.limits.max_depth = 5;
    sh("mkdir -p %s/d1/d2/d3/d4/d5/d6/d7 && touch %s/d1/d2/d3/d4/d5/d6/d7/f", f->ws, f->ws);
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, "max_depth"));
    assert_non_null(strstr(err.message, "d1/d2/d3/d4/d5/d6"));
    co.limits.max_depth = 5000;
    assert_int_equal(clr_git_commit(&r, &co, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    clr_git_commit_result_clear(&r);
}

typedef struct swap_plan {
    const char *name;   /* the entry to swap when the walk reaches it */
    const char *target; /* the symlink put in its place */
    const char *stash;  /* where the original goes (outside the workspace) */
    int fired;
} swap_plan;

static void swap_for_symlink(int dirfd, const char *name, const char *path, void *data)
{
    swap_plan *p = data;
    (void)path;
    if (strcmp(name, p->name) != 0 || p->fired++)
        return;
    assert_int_equal(renameat(dirfd, name, AT_FDCWD, p->stash), 0);
    assert_int_equal(symlinkat(p->target, dirfd, name), 0);
}

static void directory_swapped_for_symlink_during_walk(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-11", &w);
    sh("mkdir -p %s/data && echo harmless > %s/data/notes.txt", f->ws, f->ws);
    char stash[256];
    snprintf(stash, sizeof(stash), "%s/stashed-data", f->root);
    swap_plan plan = {.name = "data", .target = "/etc", .stash = stash};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = swap_for_symlink;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    commit_ok(&co, &r);
    assert_int_equal(plan.fired, 2); /* swapped on the first look, a link on the second */
    char *tree = tree_listing(f, "clearing/sb-11");
    assert_non_null(strstr(tree, "120000 data\n"));
    assert_null(strstr(tree, "data/"));
    assert_null(strstr(tree, "passwd"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-11:data", f->repo);
    assert_string_equal(target, "/etc");
    /* Nothing of /etc/passwd was read into the object database. */
    FILE *pf = fopen("/etc/passwd", "r");
    char line[512];
    if (pf && fgets(line, sizeof(line), pf))
        assert_false(odb_contains(f, line));
    if (pf)
        fclose(pf);
    free(tree);
    free(target);
    clr_git_commit_result_clear(&r);
}

static void file_swapped_for_symlink_during_walk(void **state)
{
    fixture *f = *state;
    clr_git_workspace w;
    prepare(f, f->ws, "sb-12", &w);
    put(f->ws, "innocent.txt", "innocent\n");
    char stash[256];
    snprintf(stash, sizeof(stash), "%s/stashed-file", f->root);
    swap_plan plan = {.name = "innocent.txt", .target = "/etc/passwd", .stash = stash};
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    co.test_hook = swap_for_symlink;
    co.test_hook_data = &plan;
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *tree = tree_listing(f, "clearing/sb-12");
    assert_non_null(strstr(tree, "120000 innocent.txt\n"));
    char *target = sh_out(NULL, "git -C %s cat-file -p clearing/sb-12:innocent.txt", f->repo);
    assert_string_equal(target, "/etc/passwd");
    free(tree);
    free(target);
    clr_git_commit_result_clear(&r);
}

static void base_gitignore_honoured(void **state)
{
    fixture *f = *state;
    sh("cd %s && mkdir -p sub docs && printf '# build outputs\\n*.log\\n!keep.log\\nbuild/\\n"
       "/top.tmp\\ndocs/**/*.gen\\n' > .gitignore && printf '!special.log\\nlocal.txt\\n' > "
       "sub/.gitignore && echo tracked > tracked.log && git add .gitignore sub/.gitignore && "
       "git add -f tracked.log && git commit -q -m ignores",
       f->repo);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-14", &w);
    sh("cd %s && mkdir -p build docs/a/b sub/deep && echo changed > tracked.log && "
       "echo x > new.log && echo x > keep.log && echo x > build/out.o && echo x > top.tmp && "
       "echo x > sub/top.tmp && echo x > sub/special.log && echo x > sub/other.log && "
       "echo x > sub/local.txt && echo x > local.txt && echo x > docs/a/b/x.gen && "
       "echo x > docs/x.gen && echo x > docs/x.txt && echo x > evil.c && "
       "printf '*.c\\n' > .gitignore && : > sub/.gitignore",
       f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    commit_ok(&co, &r);
    char *paths = sh_out(NULL, "git -C %s ls-tree -r --name-only clearing/sb-14 | sort", f->repo);
    assert_string_equal(paths, ".gitignore\n"
                               "README.md\n"
                               "delete_me.txt\n"
                               "docs/x.txt\n"
                               "evil.c\n"
                               "keep.log\n"
                               "link\n"
                               "local.txt\n"
                               "old_name.txt\n"
                               "src/main.c\n"
                               "src/util/helper.c\n"
                               "sub/.gitignore\n"
                               "sub/special.log\n"
                               "sub/top.tmp\n"
                               "tool.sh\n"
                               "tracked.log\n");
    char *tracked = sh_out(NULL, "git -C %s cat-file -p clearing/sb-14:tracked.log", f->repo);
    assert_string_equal(tracked, "changed\n");
    /* The sandbox's rewritten .gitignore is committed as content, not obeyed... */
    char *gi = sh_out(NULL, "git -C %s cat-file -p clearing/sb-14:.gitignore", f->repo);
    assert_string_equal(gi, "*.c\n");
    /* ...and the diff against the same base sees the same set: it is git's own diff of the
     * commit. */
    char *diff = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_diff(&diff, f->repo, NULL, w.start_commit, f->ws, NULL, &err), 0);
    char *git_diff = sh_out(NULL, "git -C %s diff -M %s %s", f->repo, w.start_commit, r.commit);
    assert_string_equal(diff, git_diff);
    assert_non_null(strstr(diff, "b/evil.c"));
    assert_null(strstr(diff, "new.log"));
    assert_null(strstr(diff, "build/out.o"));
    free(git_diff);
    free(diff);
    free(gi);
    free(tracked);
    free(paths);
    clr_git_commit_result_clear(&r);
}

/* CPU seconds the matcher alone takes to spend a budget of `steps` on the rules of text (the
 * path of one of the test's files, checked until the budget runs out), in this build and on this
 * host now. */
static double glob_cpu_for_budget(const char *text, long steps)
{
    clr_git_ignore *ig = NULL;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(clr_git_ignore_parse(&ig, NULL, "", text, strlen(text), &err), 0);
    char name[205];
    snprintf(name, sizeof(name), "1%0200d", 0);
    memset(name + 1, 'a', 200);
    long budget = steps;
    int checks = 0;
    struct cost before = cost_now();
    while (clr_gitws_ignore_check(ig, name, false, &budget) >= 0)
        checks++;
    double cpu = cpu_s_since(&before);
    assert_true(checks > 0); /* the path was checked against every rule, more than once */
    clr_git_ignore_free(ig);
    return cpu;
}

/* A .gitignore on a reused branch was written by the sandbox: patterns that backtrack, many
 * thousands of them, against long names, end in a bounded time (here with CLR_E_LIMIT): the
 * walk's CPU is that of its glob step budget, not more. The budget is lowered to 2x10^7 steps (the
 * product's is 10^9, a few seconds in a release build): what is claimed is the bound, and an
 * instrumented build (coverage with ASan) takes minutes for 10^9. The CPU of the same number of
 * steps of the matcher alone, measured here in the same run, is the yardstick. */
static void costly_base_gitignore_is_bounded(void **state)
{
    fixture *f = *state;
    sh("cd %s && for i in $(seq 10000); do echo '*a*a*a*a*a*a*a*a*a*a*a*a*b'; done > .gitignore "
       "&& git add .gitignore && git commit -q -m costly",
       f->repo);
    char *rules = NULL;
    size_t rules_len = 0;
    FILE *mem = open_memstream(&rules, &rules_len);
    assert_non_null(mem);
    for (int i = 0; i < 10000; i++)
        fputs("*a*a*a*a*a*a*a*a*a*a*a*a*b\n", mem);
    assert_int_equal(fclose(mem), 0);
    clr_git_workspace w;
    prepare(f, f->ws, "sb-18", &w);
    sh("cd %s && for i in $(seq 600); do : > $i$(printf 'a%%.0s' $(seq 200)); done", f->ws);
    clr_git_commit_options co = commit_options(f, f->ws, w.branch);
    clr_git_commit_result r;
    clr_error err = CLR_ERROR_INIT;
    long saved = clr_gitws_walk_glob_budget;
    clr_gitws_walk_glob_budget = 20000000L;
    struct cost before = cost_now();
    int rc = clr_git_commit(&r, &co, &err);
    double cpu = cpu_s_since(&before);
    clr_gitws_walk_glob_budget = saved;
    double yardstick = glob_cpu_for_budget(rules, 20000000L);
    free(rules);
    print_message("costly .gitignore: %.3f s of CPU for a budget of 2x10^7 steps; the matcher "
                  "alone: %.3f s for as many\n", cpu, yardstick);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, CLR_E_LIMIT);
    assert_non_null(strstr(err.message, ".gitignore"));
    assert_true(yardstick > 0.0);
    if (!(cpu < 3.0 * yardstick + 2.0))
        fail_msg("the walk took %.3f s of CPU, more than 3x its budget's steps (%.3f s) + 2 s",
                 cpu, yardstick);
    clr_git_commit_result_clear(&r);
}

int main(void)
{
    gitws_test_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(symlink_to_secret_committed_as_link, setup, teardown),
        cmocka_unit_test_setup_teardown(dot_git_in_workspace_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(special_files_skipped_without_blocking, setup, teardown),
        cmocka_unit_test_setup_teardown(sparse_giant_file_refused_quickly, setup, teardown),
        cmocka_unit_test_setup_teardown(entry_count_total_and_depth_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(directory_swapped_for_symlink_during_walk, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(file_swapped_for_symlink_during_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(base_gitignore_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(costly_base_gitignore_is_bounded, setup, teardown),
    };
    return cmocka_run_group_tests_name("gitws_walk", tests, NULL, NULL);
}
