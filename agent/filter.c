/* The commands' seccomp filter: see filter.h. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "filter.h"

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#else
#error "command filter: unknown architecture"
#endif

/* Namespaces a command may not create; CLONE_NEWTIME (0x80) only in unshare, where the low
 * byte is not clone's exit signal. */
#define FILTER_NS_FLAGS                                                                           \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |                \
     CLONE_NEWPID | CLONE_NEWNET)
#define FILTER_ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n)) /* little endian */
#define FILTER_LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define FILTER_RET(action) BPF_STMT(BPF_RET | BPF_K, (action))
#define FILTER_ERRNO(e) FILTER_RET(SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
/* nr == NR: EPERM if the flags argument has any of FLAGS, else allowed (5 instructions). */
#define FILTER_FLAGS(nr, arg, flags)                                                              \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4), FILTER_LD(FILTER_ARG_LO(arg)),              \
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (flags), 0, 1), FILTER_ERRNO(EPERM),                 \
        FILTER_RET(SECCOMP_RET_ALLOW)
/* nr == NR: EPERM if the mode argument makes a character or block device (7 instructions). */
#define FILTER_NODE(nr, arg)                                                                      \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 6), FILTER_LD(FILTER_ARG_LO(arg)),               \
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT),                                              \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 2, 0),                                       \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 1, 0), FILTER_RET(SECCOMP_RET_ALLOW),        \
        FILTER_ERRNO(EPERM)

/* The command's seccomp filter. gVisor does not load Docker's seccomp profile (runsc ignores it
 * without --oci-seccomp) and its own checks are weaker than Linux's in two places the escape
 * suite found: an unprivileged user may create user namespaces (and so get CAP_SYS_ADMIN over
 * new mount and network namespaces) and may mknod character and block devices on tmpfs,
 * ignoring CAP_MKNOD and nodev (gVisor's /dev/fuse and /dev/net/tun then open). Neither reaches
 * the host, but both widen the part of the Sentry a command can reach, so they are refused as
 * Docker's profile refuses them: namespace flags in clone/unshare, clone3 (its flags live in
 * memory a filter cannot read; glibc falls back to clone on ENOSYS), device nodes, keyrings.
 * Installed once by the supervisor itself, which needs none of these (it starts commands with
 * vfork), so every command inherits it through vfork and execve; no_new_privs makes it
 * irrevocable. Not per command: in gVisor, loading a filter costs a command's start about
 * 0.8 ms. */
static struct sock_filter command_filter[] = {
    FILTER_LD(offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0),
    FILTER_RET(SECCOMP_RET_KILL_PROCESS),
    FILTER_LD(offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000 /* x32 ABI */, 0, 1),
    FILTER_ERRNO(ENOSYS),
    FILTER_NODE(__NR_mknod, 1),
#endif
    FILTER_NODE(__NR_mknodat, 2),
    FILTER_FLAGS(__NR_unshare, 0, FILTER_NS_FLAGS | 0x80 /* CLONE_NEWTIME */),
    FILTER_FLAGS(__NR_clone, 0, FILTER_NS_FLAGS),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
    FILTER_ERRNO(ENOSYS),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_keyctl, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_add_key, 1, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_request_key, 0, 1),
    FILTER_ERRNO(EPERM),
    FILTER_RET(SECCOMP_RET_ALLOW),
};

void agent_filter_program(struct sock_fprog *prog)
{
    prog->len = (unsigned short)(sizeof(command_filter) / sizeof(command_filter[0]));
    prog->filter = command_filter;
}

int agent_filter_install(void)
{
    struct sock_fprog prog;
    agent_filter_program(&prog);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

