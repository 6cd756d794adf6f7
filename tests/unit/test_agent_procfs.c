/* What a supervisor reads from /proc: a process's parent and resident pages (comm may hold
 * anything), the tree of its descendants, and the memory in use. The parsers on fixed texts;
 * the scan on this process's own children. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "procfs.h"

/* fields 3..24 after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt
 * majflt cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss */
#define STAT_TAIL "S 77 100 100 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 1 0 500 123456 321 18446744"

static void test_stat_plain(void **state)
{
    (void)state;
    pid_t ppid = -1;
    uint64_t rss = 0;
    char st = 0;
    assert_int_equal(agent_stat_parse("100 (sh) " STAT_TAIL, &st, &ppid, &rss), 0);
    assert_int_equal(st, 'S');
    assert_int_equal(ppid, 77);
    assert_int_equal(rss, 321);
}

/* A command names itself to fool the parser: ") S 1 ..." inside comm must not be read. */
static void test_stat_hostile_comm(void **state)
{
    (void)state;
    pid_t ppid = -1;
    uint64_t rss = 0;
    char st = 0;
    assert_int_equal(agent_stat_parse("100 (x) S 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 99999) "
                                      STAT_TAIL,
                                      &st, &ppid, &rss),
                     0);
    assert_int_equal(st, 'S'); /* the real state, not comm's "S" */
    assert_int_equal(ppid, 77);
    assert_int_equal(rss, 321);
}

/* The state letter of each kind a kill needs to tell apart; one that is not a single letter is
 * unknown ('?'), and unknown is not halted (it is stopped again, then killed). */
static void test_stat_state(void **state)
{
    (void)state;
    pid_t ppid = -1;
    uint64_t rss = 0;
    char st = 0;
    const char *halted = "TtZX", *running = "RSDI";
    for (const char *c = halted; *c; c++) {
        char text[64];
        snprintf(text, sizeof(text), "100 (x) %c 77 0", *c);
        assert_int_equal(agent_stat_parse(text, &st, &ppid, &rss), 0);
        assert_int_equal(st, *c);
        assert_true(agent_state_halted(st));
    }
    for (const char *c = running; *c; c++) {
        char text[64];
        snprintf(text, sizeof(text), "100 (x) %c 77 0", *c);
        assert_int_equal(agent_stat_parse(text, &st, &ppid, &rss), 0);
        assert_int_equal(st, *c);
        assert_false(agent_state_halted(st));
    }
    assert_int_equal(agent_stat_parse("100 (x) Tx 77 0", &st, &ppid, &rss), 0);
    assert_int_equal(st, '?');
    assert_false(agent_state_halted(st));
    assert_int_equal(ppid, 77);
}

static void test_stat_malformed(void **state)
{
    (void)state;
    pid_t ppid = -1;
    uint64_t rss = 9;
    char st = 0;
    assert_int_equal(agent_stat_parse("100 sh S 77", &st, &ppid, &rss), -1); /* no ')' */
    assert_int_equal(agent_stat_parse("100 (sh)", &st, &ppid, &rss), -1);    /* nothing after */
    assert_int_equal(ppid, -1);
    /* cut short: what is there is read, the missing rss is 0 */
    assert_int_equal(agent_stat_parse("100 (sh) S 77 100", &st, &ppid, &rss), 0);
    assert_int_equal(ppid, 77);
    assert_int_equal(rss, 0);
    /* a negative rss is none */
    assert_int_equal(agent_stat_parse("1 (a) S 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 -5", &st,
                                      &ppid, &rss),
                     0);
    assert_int_equal(rss, 0);
}

static void test_tree_select_follows_parent_links(void **state)
{
    (void)state;
    /* root 10: 11 and 12 its children, 13 a grandchild listed before its parent 12, 14 a
     * great-grandchild; 20 and 21 (child of 20) are not in the tree. */
    struct proc p[] = {
        {.pid = 13, .ppid = 12, .rss_pages = 4}, {.pid = 20, .ppid = 1, .rss_pages = 100},
        {.pid = 11, .ppid = 10, .rss_pages = 1}, {.pid = 14, .ppid = 13, .rss_pages = 8},
        {.pid = 21, .ppid = 20, .rss_pages = 200}, {.pid = 12, .ppid = 10, .rss_pages = 2},
    };
    uint64_t pages = 0;
    size_t m = agent_tree_select(p, 6, 10, &pages);
    assert_int_equal(m, 4);
    assert_int_equal(pages, 1 + 2 + 4 + 8);
    /* the tree's processes first, in their order */
    assert_int_equal(p[0].pid, 13);
    assert_int_equal(p[1].pid, 11);
    assert_int_equal(p[2].pid, 14);
    assert_int_equal(p[3].pid, 12);
    for (size_t i = 0; i < m; i++)
        assert_true(p[i].in_tree);
}

static void test_tree_select_empty(void **state)
{
    (void)state;
    struct proc p[] = {{.pid = 5, .ppid = 1, .rss_pages = 3}};
    uint64_t pages = 7;
    assert_int_equal(agent_tree_select(p, 1, 10, &pages), 0);
    assert_int_equal(pages, 0);
    assert_int_equal(agent_tree_select(p, 0, 10, NULL), 0);
}

static void test_meminfo(void **state)
{
    (void)state;
    assert_int_equal(agent_meminfo_parse("MemTotal:        2048 kB\nMemFree:  10 kB\n"
                                         "MemAvailable:    1024 kB\n"),
                     1024 * 1024);
    /* either line missing: unknown */
    assert_int_equal(agent_meminfo_parse("MemTotal: 2048 kB\n"), 0);
    assert_int_equal(agent_meminfo_parse("MemAvailable: 2048 kB\n"), 0);
    /* more available than total (a racy read): nothing in use, never a wrapped huge number */
    assert_int_equal(agent_meminfo_parse("MemTotal: 10 kB\nMemAvailable: 20 kB\n"), 0);
}

static bool in_list(const struct proc *p, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].pid == pid)
            return true;
    }
    return false;
}

/* The scan of the real /proc finds this process's child and grandchild, and their memory; once
 * they are gone, neither. */
static void test_tree_scan_finds_own_descendants(void **state)
{
    (void)state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* Both end with their parent, even when an assertion below fails. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pid_t grand = fork();
        if (grand == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(ready[0]);
            (void)!write(ready[1], "g", 1);
            pause();
            _exit(0);
        }
        close(ready[0]);
        (void)!write(ready[1], "c", 1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    char c[2];
    size_t got = 0;
    while (got < 2) {
        ssize_t r = read(ready[0], c + got, 2 - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(ready[0]);
    assert_false(agent_no_children());

    struct proc *buf = agent_tree_buffer();
    assert_non_null(buf);
    assert_ptr_equal(agent_tree_buffer(), buf); /* one buffer, kept */
    uint64_t rss = 0;
    size_t n = agent_tree_scan(buf, AGENT_MAX_PROCS, &rss);
    assert_int_equal(n, 2);
    assert_true(in_list(buf, n, child));
    assert_true(rss > 0);
    for (size_t i = 0; i < n; i++) {
        if (buf[i].pid != child)
            assert_int_equal(buf[i].ppid, child); /* the grandchild */
    }

    for (size_t i = 0; i < n; i++)
        kill(buf[i].pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    /* the grandchild is re-parented to init (or a subreaper above us): not ours any more */
    assert_true(agent_no_children());
    assert_int_equal(agent_tree_scan(buf, AGENT_MAX_PROCS, &rss), 0);
    assert_int_equal(rss, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stat_plain),
        cmocka_unit_test(test_stat_hostile_comm),
        cmocka_unit_test(test_stat_state),
        cmocka_unit_test(test_stat_malformed),
        cmocka_unit_test(test_tree_select_follows_parent_links),
        cmocka_unit_test(test_tree_select_empty),
        cmocka_unit_test(test_meminfo),
        cmocka_unit_test(test_tree_scan_finds_own_descendants),
    };
    return cmocka_run_group_tests_name("agent_procfs", tests, NULL, NULL);
}
