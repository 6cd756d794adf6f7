/* The commands' seccomp filter. The program is run here on the system calls it must refuse and
 * on ones it must let through (a small classic-BPF interpreter for the instructions it uses), and
 * installed for real in a child process, where the kernel's answers are checked. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "filter.h"

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

/* Runs the program on one system call; returns its action. Fails the test on an instruction it
 * does not know, a jump out of the program or a run off its end. */
static uint32_t run(uint32_t arch, int nr, const uint64_t args[6])
{
    struct seccomp_data d;
    memset(&d, 0, sizeof(d));
    d.arch = arch;
    d.nr = nr;
    for (int i = 0; i < 6; i++)
        d.args[i] = args ? args[i] : 0;
    struct sock_fprog prog;
    agent_filter_program(&prog);
    assert_true(prog.len > 0);
    uint32_t a = 0;
    for (unsigned pc = 0; pc < prog.len; pc++) {
        const struct sock_filter *f = &prog.filter[pc];
        switch (f->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            assert_true(f->k + 4 <= sizeof(d) && f->k % 4 == 0);
            memcpy(&a, (const uint8_t *)&d + f->k, 4);
            break;
        case BPF_ALU | BPF_AND | BPF_K:
            a &= f->k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += a == f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += a >= f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (a & f->k) ? f->jt : f->jf;
            break;
        case BPF_RET | BPF_K:
            return f->k;
        default:
            fail_msg("instruction %u: unknown code 0x%x", pc, f->code);
        }
        assert_true(pc + 1 < prog.len);
    }
    fail_msg("the program ran off its end");
    return 0;
}

#define ERRNO(e) (SECCOMP_RET_ERRNO | (e))

static uint32_t call(int nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
    uint64_t args[6] = {a0, a1, a2, 0, 0, 0};
    return run(ARCH, nr, args);
}

static void test_ordinary_calls_allowed(void **state)
{
    (void)state;
    assert_int_equal(call(__NR_read, 0, 0, 0), SECCOMP_RET_ALLOW);
    assert_int_equal(call(__NR_getpid, 0, 0, 0), SECCOMP_RET_ALLOW);
    assert_int_equal(call(__NR_execve, 0, 0, 0), SECCOMP_RET_ALLOW);
    /* a plain fork by clone: SIGCHLD in the exit-signal byte, no namespace flag */
    assert_int_equal(call(__NR_clone, SIGCHLD, 0, 0), SECCOMP_RET_ALLOW);
    /* threads */
    assert_int_equal(call(__NR_clone, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                          CLONE_THREAD | CLONE_SYSVSEM,
                          0, 0),
                     SECCOMP_RET_ALLOW);
    assert_int_equal(call(__NR_unshare, CLONE_FILES | CLONE_FS, 0, 0), SECCOMP_RET_ALLOW);
}

static void test_namespaces_refused(void **state)
{
    (void)state;
    static const uint64_t ns[] = {CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
                                  CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET};
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        assert_int_equal(call(__NR_unshare, ns[i], 0, 0), ERRNO(EPERM));
        assert_int_equal(call(__NR_clone, ns[i] | SIGCHLD, 0, 0), ERRNO(EPERM));
    }
    /* CLONE_NEWTIME (0x80) in unshare; in clone that bit is the exit signal's */
    assert_int_equal(call(__NR_unshare, 0x80, 0, 0), ERRNO(EPERM));
    assert_int_equal(call(__NR_clone, 0x80, 0, 0), SECCOMP_RET_ALLOW);
    /* clone3's flags are in memory: the whole call answers ENOSYS, so libc falls back to clone */
    assert_int_equal(call(__NR_clone3, 0, 0, 0), ERRNO(ENOSYS));
}

static void test_device_nodes_refused(void **state)
{
    (void)state;
    assert_int_equal(call(__NR_mknodat, AT_FDCWD, 0, S_IFCHR | 0600), ERRNO(EPERM));
    assert_int_equal(call(__NR_mknodat, AT_FDCWD, 0, S_IFBLK | 0600), ERRNO(EPERM));
    assert_int_equal(call(__NR_mknodat, AT_FDCWD, 0, S_IFIFO | 0600), SECCOMP_RET_ALLOW);
    assert_int_equal(call(__NR_mknodat, AT_FDCWD, 0, S_IFREG | 0600), SECCOMP_RET_ALLOW);
#if defined(__x86_64__)
    assert_int_equal(call(__NR_mknod, 0, S_IFCHR | 0600, 0), ERRNO(EPERM));
    assert_int_equal(call(__NR_mknod, 0, S_IFIFO | 0600, 0), SECCOMP_RET_ALLOW);
#endif
}

static void test_keyrings_refused(void **state)
{
    (void)state;
    assert_int_equal(call(__NR_keyctl, 0, 0, 0), ERRNO(EPERM));
    assert_int_equal(call(__NR_add_key, 0, 0, 0), ERRNO(EPERM));
    assert_int_equal(call(__NR_request_key, 0, 0, 0), ERRNO(EPERM));
}

static void test_other_abis_refused(void **state)
{
    (void)state;
    /* another architecture's numbers mean other calls: the process is killed */
    assert_int_equal(run(AUDIT_ARCH_I386, __NR_read, NULL), SECCOMP_RET_KILL_PROCESS);
#if defined(__x86_64__)
    /* the x32 ABI's numbers would bypass the checks by number */
    assert_int_equal(run(ARCH, 0x40000000 | __NR_unshare, NULL), ERRNO(ENOSYS));
#endif
}

/* The kernel accepts the program, and then answers as the interpreter says: checked in a child,
 * which keeps the filter for life. Each line is a positive control or a refusal. */
static void test_installed_filter_answers(void **state)
{
    (void)state;
    char dir[] = "/tmp/clearing-filter-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64], chr[64];
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    snprintf(chr, sizeof(chr), "%s/chr", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (agent_filter_install() != 0)
            _exit(10);
        if (mknodat(AT_FDCWD, fifo, S_IFIFO | 0600, 0) != 0) /* allowed */
            _exit(11);
        if (mknodat(AT_FDCWD, chr, S_IFCHR | 0600, makedev(1, 3)) == 0 || errno != EPERM)
            _exit(12);
        if (unshare(CLONE_NEWUSER) == 0 || errno != EPERM)
            _exit(13);
        if (syscall(__NR_clone3, NULL, 0) != -1 || errno != ENOSYS)
            _exit(14);
        if (syscall(__NR_keyctl, 0, 0, 0, 0, 0) != -1 || errno != EPERM)
            _exit(15);
        pid_t p = fork(); /* a plain fork still works */
        if (p == 0)
            _exit(0);
        if (p < 0 || waitpid(p, NULL, 0) != p)
            _exit(16);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    struct stat sb;
    int fifo_made = stat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode);
    int chr_made = stat(chr, &sb) == 0;
    unlink(fifo);
    unlink(chr);
    rmdir(dir);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(fifo_made);
    assert_false(chr_made);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordinary_calls_allowed),
        cmocka_unit_test(test_namespaces_refused),
        cmocka_unit_test(test_device_nodes_refused),
        cmocka_unit_test(test_keyrings_refused),
        cmocka_unit_test(test_other_abis_refused),
        cmocka_unit_test(test_installed_filter_answers),
    };
    return cmocka_run_group_tests_name("agent_filter", tests, NULL, NULL);
}
