/* Hostile probes of the escape suite (tests/security/escape.py).
 *
 * This file is compiled INSIDE a sandbox (image clearing/c) and run there as the command user;
 * it is never built on the host. Each attack is a function selected by argv[1]. It tries the
 * escape and prints one "key=OUTCOME" token per attempt on stdout, OUTCOME being "OK" when the
 * call succeeded or the errno's name (EPERM, ENOSYS, ...) when it failed; escape.py asserts the
 * exact outcome. An attack never decides by itself whether it was contained.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void out(const char *key, long rc)
{
    int e = errno;
    if (rc >= 0)
        printf("%s=OK ", key);
    else
        printf("%s=%s ", key, strerrorname_np(e) ? strerrorname_np(e) : "E?");
    fflush(stdout);
}

static long try_open(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* ---- host filesystem ---- */

static int proc1_root(char **a)
{
    out("open_root_file", try_open("/proc/1/root/etc/hostname", O_RDONLY));
    out("opendir_root", opendir("/proc/1/root") ? 0 : -1);
    out("chdir_root", chdir("/proc/1/root"));
    out("open_cwd", try_open("/proc/1/cwd/.", O_RDONLY));
    out("host_canary", try_open(a[2], O_RDONLY));
    return 0;
}

static int environ_other(char **a)
{
    (void)a;
    char p[64], buf[256];
    out("pid1_environ", try_open("/proc/1/environ", O_RDONLY));
    snprintf(p, sizeof(p), "/proc/%d/environ", (int)getppid());
    out("agent_environ", try_open(p, O_RDONLY));
    out("pid1_exe", readlink("/proc/1/exe", buf, sizeof(buf)));
    out("pid1_mem", try_open("/proc/1/mem", O_RDONLY));
    snprintf(p, sizeof(p), "/proc/%d/mem", (int)getppid());
    out("agent_mem", try_open(p, O_RDWR));
    /* Descriptors of PID 1 and of the supervisor (the host's stdio, the frame sockets): the
     * targets that open for writing or reading are printed; only /dev/null may be among them
     * (gVisor lets /proc/PID/fd/N open whatever the target's own mode allows). */
    printf("fd_open=");
    for (int pid = 0; pid < 2; pid++) {
        for (int fd = 0; fd < 32; fd++) {
            char link[256];
            snprintf(p, sizeof(p), "/proc/%d/fd/%d", pid ? (int)getppid() : 1, fd);
            ssize_t n = readlink(p, link, sizeof(link) - 1);
            if (n < 0)
                continue;
            link[n] = 0;
            if (try_open(p, O_WRONLY) >= 0 || try_open(p, O_RDONLY) >= 0)
                printf("%s,", link);
        }
    }
    printf(" ");
    return 0;
}

static int write_rootfs(char **a)
{
    (void)a;
    out("create_etc", try_open("/etc/clearing-escape", O_WRONLY | O_CREAT));
    out("create_usr_bin", try_open("/usr/bin/clearing-escape", O_WRONLY | O_CREAT));
    out("write_passwd", try_open("/etc/passwd", O_WRONLY));
    out("mkdir_root", mkdir("/clearing-escape", 0755));
    out("unlink_passwd", unlink("/etc/passwd"));
    out("create_agent_dir", try_open("/opt/clearing/x", O_WRONLY | O_CREAT));
    return 0;
}

static int exec_tmp(char **a)
{
    (void)a;
    int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    int o = open("/tmp/xprobe-copy", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && o >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (write(o, buf, (size_t)n) != n)
            break;
    close(in);
    close(o);
    out("chmod", chmod("/tmp/xprobe-copy", 0755));
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"/tmp/xprobe-copy", "euid", NULL};
        execv(argv[0], argv);
        printf("execve=%s ", strerrorname_np(errno));
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    int fd = open("/tmp/xprobe-copy", O_RDONLY | O_CLOEXEC);
    void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    out("mmap_exec", m == MAP_FAILED ? -1 : 0);
    close(fd);
    return 0;
}

static int euid(char **a)
{
    (void)a;
    uid_t r, e, s;
    gid_t rg, eg, sg;
    getresuid(&r, &e, &s);
    getresgid(&rg, &eg, &sg);
    printf("ruid=%d euid=%d suid=%d egid=%d ", (int)r, (int)e, (int)s, (int)eg);
    out("setuid0", setuid(0));
    fflush(stdout);
    return 0;
}

static int mknod_dev(char **a)
{
    (void)a;
    static const struct {
        const char *name;
        mode_t type;
        unsigned major, minor;
    } dev[] = {{"null", S_IFCHR, 1, 3}, {"mem", S_IFCHR, 1, 1},   {"kmem", S_IFCHR, 1, 2},
               {"port", S_IFCHR, 1, 4}, {"fuse", S_IFCHR, 10, 229}, {"tun", S_IFCHR, 10, 200},
               {"kvm", S_IFCHR, 10, 232}, {"sda", S_IFBLK, 8, 0}};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
        char p[64], key[64];
        snprintf(p, sizeof(p), "/tmp/dev-%s", dev[i].name);
        snprintf(key, sizeof(key), "tmp_%s", dev[i].name);
        long rc = mknod(p, dev[i].type | 0666, makedev(dev[i].major, dev[i].minor));
        out(key, rc);
        if (rc == 0) {
            snprintf(key, sizeof(key), "open_%s", dev[i].name);
            int fd = open(p, O_RDWR | O_CLOEXEC);
            out(key, fd);
            if (fd >= 0 && dev[i].major == 10 && dev[i].minor == 200) {
                /* TUNSETIFF: a tap device would be a way onto a network. */
                struct {
                    char name[16];
                    short flags;
                    char pad[22];
                } ifr = {"escape0", 0x0002 /* IFF_TAP */, {0}};
                out("tunsetiff", ioctl(fd, 0x400454ca, &ifr));
            }
            if (fd >= 0)
                close(fd);
            unlink(p);
        }
    }
    out("ws_mem", mknod("/workspace/mem", S_IFCHR | 0666, makedev(1, 1)));
    out("ws_null", mknod("/workspace/null", S_IFCHR | 0666, makedev(1, 3)));
    out("ws_sda", mknod("/workspace/sda", S_IFBLK | 0666, makedev(8, 0)));
    return 0;
}

static int mount_any(char **a)
{
    (void)a;
    mkdir("/tmp/m", 0755);
    out("tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
    out("proc", mount("proc", "/tmp/m", "proc", 0, NULL));
    out("bind_root", mount("/", "/tmp/m", NULL, MS_BIND, NULL));
    out("remount_root_rw", mount(NULL, "/", NULL, MS_REMOUNT, NULL));
    out("remount_tmp_exec", mount(NULL, "/tmp", NULL, MS_REMOUNT, "size=1g"));
    out("umount_workspace", umount2("/workspace", MNT_DETACH));
    out("cgroup", mount("cgroup", "/tmp/m", "cgroup", 0, "memory"));
    return 0;
}

static void *thread_main(void *arg)
{
    return arg;
}

static int unshare_ns(char **a)
{
    (void)a;
    static const struct {
        const char *name;
        int flag;
    } ns[] = {{"mnt", CLONE_NEWNS},   {"net", CLONE_NEWNET}, {"pid", CLONE_NEWPID},
              {"uts", CLONE_NEWUTS},  {"ipc", CLONE_NEWIPC}, {"cgroup", CLONE_NEWCGROUP},
              {"user", CLONE_NEWUSER}};
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char key[32];
            snprintf(key, sizeof(key), "unshare_%s", ns[i].name);
            int rc = unshare(ns[i].flag);
            out(key, rc);
            if (rc == 0 && ns[i].flag == CLONE_NEWUSER) {
                /* Root of a new user namespace: may it mount, or reach the host root? */
                out("userns_newns", unshare(CLONE_NEWNS));
                out("userns_mount", mount("none", "/tmp", "tmpfs", 0, NULL));
                out("userns_proc1_root", try_open("/proc/1/root/etc/hostname", O_RDONLY));
                out("userns_write_etc", try_open("/etc/clearing-escape", O_WRONLY | O_CREAT));
                out("userns_newnet", unshare(CLONE_NEWNET));
                out("userns_mknod", mknod("/tmp/userns-mem", S_IFCHR | 0600, makedev(1, 1)));
                out("userns_open_mem", try_open("/tmp/userns-mem", O_RDWR));
            }
            _exit(0);
        }
        waitpid(pid, NULL, 0);
    }
    /* clone3 carries its flags in memory: refused as a whole (ENOSYS), and glibc falls back to
     * clone for threads, which must keep working. */
    uint64_t args[11] = {CLONE_NEWUSER};
    out("clone3_newuser", syscall(SYS_clone3, args, sizeof(args)));
    static int token;
    pthread_t th;
    void *ret = NULL;
    out("pthread", pthread_create(&th, NULL, thread_main, &token) == 0 &&
                           pthread_join(th, &ret) == 0 && ret == &token ? 0 : -1);
    out("mkfifo", mkfifo("/tmp/fifo-ok", 0600));
    unlink("/tmp/fifo-ok");
    return 0;
}

static int setns_other(char **a)
{
    (void)a;
    const char *n[] = {"mnt", "net", "pid", "user"};
    for (size_t i = 0; i < 4; i++) {
        char p[64], key[32];
        snprintf(p, sizeof(p), "/proc/1/ns/%s", n[i]);
        snprintf(key, sizeof(key), "open_ns_%s", n[i]);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        out(key, fd);
        if (fd >= 0) {
            snprintf(key, sizeof(key), "setns_%s", n[i]);
            out(key, setns(fd, 0));
            close(fd);
        }
    }
    int self = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    out("setns_self_mnt", self < 0 ? -1 : setns(self, CLONE_NEWNS));
    return 0;
}

static int chroot_trick(char **a)
{
    (void)a;
    mkdir("/tmp/jail", 0755);
    out("chroot_tmp", chroot("/tmp/jail"));
    out("chroot_workspace", chroot("/workspace"));
    out("pivot_root", syscall(SYS_pivot_root, "/tmp/jail", "/tmp/jail"));
    return 0;
}

static int core_dump(char **a)
{
    (void)a;
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    printf("core_soft=%llu core_hard=%llu ", (unsigned long long)rl.rlim_cur,
           (unsigned long long)rl.rlim_max);
    struct rlimit big = {RLIM_INFINITY, RLIM_INFINITY};
    out("raise_core", setrlimit(RLIMIT_CORE, &big));
    out("core_pattern", try_open("/proc/sys/kernel/core_pattern", O_WRONLY));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        chdir("/workspace");
        abort();
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("child_signal=%d core_dumped=%d ", WIFSIGNALED(st) ? WTERMSIG(st) : 0,
           WCOREDUMP(st) ? 1 : 0);
    return 0;
}

/* ---- kernel surface ---- */

static int ptrace_agent(char **a)
{
    (void)a;
    out("attach_pid1", ptrace(PTRACE_ATTACH, 1, 0, 0));
    out("attach_agent", ptrace(PTRACE_ATTACH, getppid(), 0, 0));
    out("seize_agent", ptrace(PTRACE_SEIZE, getppid(), 0, 0));
    char buf[16];
    struct iovec l = {buf, sizeof(buf)}, r = {(void *)0x400000, sizeof(buf)};
    out("vm_readv_pid1", process_vm_readv(1, &l, 1, &r, 1, 0));
    out("kill_pid1", kill(1, SIGKILL));
    out("kill_agent", kill(getppid(), SIGKILL));
    out("traceme", ptrace(PTRACE_TRACEME, 0, 0, 0));
    return 0;
}

/* What a process of PID 1's own uid (root, through `docker exec -u 0`: the container's
 * capabilities, no CAP_SYS_PTRACE) can do to a target. With the uids and the capabilities
 * equal, the target's dumpability decides (and, under gVisor, Yama's ptrace_scope 1 before
 * it: only descendants may be traced). Printed per target as KEY_WHO=OUTCOME. */
static volatile char dump_mark[16] = "dumpable-mark";

static void dump_probe(const char *who, pid_t pid)
{
    char key[64], p[64], buf[64];
    snprintf(p, sizeof(p), "/proc/%d/mem", (int)pid);
    snprintf(key, sizeof(key), "mem_%s", who);
    out(key, try_open(p, O_RDONLY));
    snprintf(p, sizeof(p), "/proc/%d/environ", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
    snprintf(key, sizeof(key), "environ_%s", who);
    out(key, n);
    if (fd >= 0)
        close(fd);
    /* Children of this program have dump_mark where it is here; for other targets the address
     * may be unmapped (EFAULT: allowed; EPERM: refused). */
    struct iovec l = {buf, sizeof(dump_mark)}, r = {(void *)dump_mark, sizeof(dump_mark)};
    snprintf(key, sizeof(key), "vm_readv_%s", who);
    out(key, process_vm_readv(pid, &l, 1, &r, 1, 0));
    snprintf(key, sizeof(key), "attach_%s", who);
    long rc = ptrace(PTRACE_ATTACH, pid, 0, 0);
    out(key, rc);
    if (rc == 0) {
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, 0, 0);
    }
}

/* Waits, dumpable or not, until killed (in a session of its own). */
/* What a target is before anyone aims at it: its own session, dumpable or not. */
static void dump_setup(bool dumpable)
{
    setsid();
    if (!dumpable)
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

__attribute__((noreturn)) static void dump_wait(bool dumpable)
{
    dump_setup(dumpable);
    for (;;)
        pause();
}

static pid_t dump_child(bool dumpable, int ready[2])
{
    pid_t pid = fork();
    if (pid == 0) {
        char c = 'r';
        close(ready[0]);
        /* Ready only once it is what the probe expects: a probe that ran before the child made
         * itself non-dumpable read a dumpable process (seen under load). */
        dump_setup(dumpable);
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c;
    if (pid > 0 && read(ready[0], &c, 1) != 1)
        return -1;
    return pid;
}

/* argv: NAME:PID... targets besides this program's own children "child" (dumpable) and
 * "child_nd" (non-dumpable). */
static int pid1_dumpable(char **a)
{
    printf("uid=%d ", (int)getuid());
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "CapEff:", 7) == 0)
            printf("cap_eff=%llx ", strtoull(line + 7, NULL, 16));
    if (f)
        fclose(f);
    f = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
    printf("yama=%s ", f && fgets(line, sizeof(line), f) ? strtok(line, "\n") : "none");
    if (f)
        fclose(f);
    int ready[2];
    if (pipe(ready) < 0)
        return 1;
    pid_t yes = dump_child(true, ready), no = dump_child(false, ready);
    if (yes < 0 || no < 0)
        return 1;
    dump_probe("child", yes);
    dump_probe("child_nd", no);
    for (int i = 2; a[i]; i++) {
        char *colon = strchr(a[i], ':');
        if (!colon)
            return 2;
        *colon = '\0';
        dump_probe(a[i], (pid_t)atoi(colon + 1));
    }
    kill(yes, SIGKILL);
    kill(no, SIGKILL);
    waitpid(yes, NULL, 0);
    waitpid(no, NULL, 0);
    return 0;
}

/* A non-dumpable process for pid1_dumpable to aim at, started on its own by docker exec. */
static int nondumpable_wait(char **a)
{
    (void)a;
    dump_wait(false);
    return 0;
}

static int modules(char **a)
{
    (void)a;
    out("init_module", syscall(SYS_init_module, "\0asm", (unsigned long)4, ""));
    out("finit_module", syscall(SYS_finit_module, 0, "", 0));
    out("delete_module", syscall(SYS_delete_module, "ext4", O_NONBLOCK));
    out("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    out("reboot", reboot(RB_POWER_OFF));
    out("swapon", swapon("/workspace/swap", 0));
    out("acct", acct("/workspace/acct"));
    out("iopl", iopl(3));
    out("ioperm", ioperm(0x80, 1, 1));
    out("dev_mem", try_open("/dev/mem", O_RDONLY));
    out("dev_kmsg", try_open("/dev/kmsg", O_RDONLY));
    out("proc_kcore", try_open("/proc/kcore", O_RDONLY));
    out("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, "\0\0\0\0\0\0\0\0", 0));
    return 0;
}

static int keyring(char **a)
{
    (void)a;
    out("add_key", syscall(SYS_add_key, "user", "clearing", "secret", 6, -3 /* session */));
    out("keyctl_join", syscall(SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, "x"));
    out("request_key", syscall(SYS_request_key, "user", "clearing", NULL, 0));
    return 0;
}

static int perf_bpf(char **a)
{
    (void)a;
    char attr[128] = {0};
    *(uint32_t *)(attr + 4) = sizeof(attr); /* size; type 0 = hardware cycles */
    out("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
    char battr[128] = {0};
    out("bpf_map_create", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, battr, sizeof(battr)));
    out("bpf_prog_load", syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, battr, sizeof(battr)));
    return 0;
}

static int sysrq(char **a)
{
    (void)a;
    out("sysrq_trigger", try_open("/proc/sysrq-trigger", O_WRONLY));
    out("sysctl_sysrq", try_open("/proc/sys/kernel/sysrq", O_WRONLY));
    out("sysctl_hostname", try_open("/proc/sys/kernel/hostname", O_WRONLY));
    return 0;
}

static int clock_set(char **a)
{
    (void)a;
    struct timeval tv = {1, 0};
    struct timespec ts = {1, 0};
    struct timex tx = {.modes = ADJ_OFFSET, .offset = 1000};
    out("settimeofday", settimeofday(&tv, NULL));
    out("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
    out("adjtimex", adjtimex(&tx));
    return 0;
}

static int hostname(char **a)
{
    (void)a;
    out("sethostname", sethostname("escaped", 7));
    out("setdomainname", setdomainname("escaped", 7));
    return 0;
}

static int raw_sockets(char **a)
{
    (void)a;
    out("inet_raw", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    out("inet6_raw", socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    out("packet", socket(AF_PACKET, SOCK_RAW, 0));
    out("packet_dgram", socket(AF_PACKET, SOCK_DGRAM, 0));
    return 0;
}

static int io_uring_ufd(char **a)
{
    (void)a;
    char params[120] = {0};
    out("io_uring_setup", syscall(425, 8, params));
    out("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    out("dev_userfaultfd", try_open("/dev/userfaultfd", O_RDWR));
    return 0;
}

/* ---- cgroups and the container runtime ---- */

static int cgroup_escape(char **a)
{
    (void)a;
    DIR *d = opendir("/sys/fs/cgroup");
    out("list_cgroupfs", d ? 0 : -1);
    if (d)
        closedir(d);
    out("mkdir_cgroup", mkdir("/sys/fs/cgroup/escape", 0755));
    out("release_agent", try_open("/sys/fs/cgroup/release_agent", O_WRONLY));
    out("memory_release_agent", try_open("/sys/fs/cgroup/memory/release_agent", O_WRONLY));
    out("notify_on_release", try_open("/sys/fs/cgroup/memory/notify_on_release", O_WRONLY));
    out("cgroup_procs", try_open("/sys/fs/cgroup/cgroup.procs", O_WRONLY));
    out("memory_limit", try_open("/sys/fs/cgroup/memory/memory.limit_in_bytes", O_WRONLY));
    mkdir("/tmp/cg", 0755);
    out("mount_cgroup", mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma"));
    out("mount_cgroup2", mount("cgroup2", "/tmp/cg", "cgroup2", 0, NULL));
    return 0;
}

static long unix_connect(const char *path, int abstract)
{
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    memcpy(sa.sun_path + (abstract ? 1 : 0), path, n);
    long rc = connect(s, (struct sockaddr *)&sa,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 1 : 0)));
    close(s);
    return rc;
}

static int docker_socket(char **a)
{
    (void)a;
    struct stat st;
    out("stat_docker_sock", stat("/var/run/docker.sock", &st));
    out("connect_docker_sock", unix_connect("/var/run/docker.sock", 0));
    out("connect_run_docker_sock", unix_connect("/run/docker.sock", 0));
    out("connect_containerd", unix_connect("/run/containerd/containerd.sock", 0));
    out("stat_runsc_state", stat("/run/containerd/runsc", &st));
    out("stat_dockerenv_host", stat("/var/lib/docker", &st));
    return 0;
}

static int runtime_files(char **a)
{
    (void)a;
    out("write_agent", try_open("/opt/clearing/agent", O_WRONLY));
    out("unlink_agent", unlink("/opt/clearing/agent"));
    out("rename_agent", rename("/opt/clearing/agent", "/tmp/agent"));
    out("write_pid1_exe", try_open("/proc/1/exe", O_WRONLY));
    out("write_resolv", try_open("/etc/resolv.conf", O_WRONLY));
    out("write_hosts", try_open("/etc/hosts", O_WRONLY));
    out("ws_parent", try_open("/workspace/../workspace/..", O_RDONLY | O_DIRECTORY));
    return 0;
}

/* ---- network ---- */

static int net_host_tcp(char **a)
{
    int port = atoi(a[2]);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    out("connect_v4", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
    close(s);
    s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    s6.sin6_addr = in6addr_loopback;
    out("connect_v6", connect(s, (struct sockaddr *)&s6, sizeof(s6)));
    close(s);
    return 0;
}

static int net_host_udp(char **a)
{
    int port = atoi(a[2]);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    long rc = 0;
    for (int i = 0; i < 20 && rc >= 0; i++)
        rc = sendto(s, "escaped", 7, 0, (struct sockaddr *)&sa, sizeof(sa));
    printf("udp_sent=%s ", rc >= 0 ? "OK" : strerrorname_np(errno));
    close(s);
    return 0;
}

static int net_abstract(char **a)
{
    out("connect_abstract", unix_connect(a[2], 1));
    return 0;
}

static int net_dns(char **a)
{
    (void)a;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo("example.com", "80", NULL, &res);
    printf("gai_example=%s ", rc == 0 ? "OK" : rc == EAI_AGAIN ? "EAI_AGAIN"
                                       : rc == EAI_NONAME ? "EAI_NONAME"
                                       : rc == EAI_SYSTEM ? "EAI_SYSTEM" : "EAI_OTHER");
    if (res)
        freeaddrinfo(res);
    struct ifaddrs *ifs = NULL, *i;
    getifaddrs(&ifs);
    printf("ifaces=");
    for (i = ifs; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
            printf("%s,", i->ifa_name);
    printf(" ");
    freeifaddrs(ifs);
    return 0;
}

/* ---- resources ---- */

static int fork_bomb(char **a)
{
    (void)a;
    long n = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0)
            break;
        n++;
    }
    printf("forks=%ld fork_errno=%s ", n, strerrorname_np(errno));
    return 0;
}

static int mem_bomb(char **a)
{
    (void)a;
    for (;;) {
        char *p = malloc(8 << 20);
        if (!p) {
            printf("malloc=ENOMEM ");
            fflush(stdout);
            pause();
        }
        memset(p, 0xa5, 8 << 20);
    }
    return 0;
}

static int cpu_hog(char **a)
{
    int n = atoi(a[2]);
    for (int i = 1; i < n; i++)
        if (fork() == 0)
            break;
    for (volatile unsigned long x = 0;; x++)
        ;
    return 0;
}

static int fill(char **a)
{
    int fd = open(a[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    static char buf[1 << 20];
    long long total = 0;
    ssize_t n = 1;
    memset(buf, 'x', sizeof(buf));
    while ((n = write(fd, buf, sizeof(buf))) > 0)
        total += n;
    printf("fill_errno=%s bytes=%lld ", strerrorname_np(errno), total);
    close(fd);
    unlink(a[2]);
    return 0;
}

static int inodes(char **a)
{
    mkdir(a[2], 0755);
    long n = 0;
    for (;; n++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/f%ld", a[2], n);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            break;
        close(fd);
    }
    printf("inode_errno=%s files=%ld ", strerrorname_np(errno), n);
    return 0;
}

static int flood(char **a)
{
    static char buf[1 << 16];
    long long total = atoll(a[2]);
    memset(buf, 'F', sizeof(buf));
    for (long long w = 0; w < total;) {
        ssize_t n = write(1, buf, sizeof(buf));
        if (n <= 0)
            return 3;
        w += n;
    }
    return 0;
}

static int zombies(char **a)
{
    int n = atoi(a[2]), made = 0;
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        if (pid < 0)
            break;
        made++;
    }
    usleep(300000);
    printf("zombies=%d ", made);
    fflush(stdout);
    if (a[3])
        pause(); /* keep them while the test looks, until the timeout */
    return 0;
}

static int stderr_forever(char **a)
{
    (void)a;
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    for (;;)
        if (write(2, "still here, ignoring SIGTERM\n", 29) < 0)
            usleep(1000);
    return 0;
}

/* ---- clearing's own surfaces ---- */

static void frame(int fd, uint32_t channel, uint8_t type, const uint8_t *payload, uint32_t len)
{
    uint8_t h[12] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
                     (uint8_t)(channel >> 24), (uint8_t)(channel >> 16), (uint8_t)(channel >> 8),
                     (uint8_t)channel, type, 0, 0, 0};
    if (write(fd, h, 12) < 0 || write(fd, payload, len) < 0)
        return;
}

static int forge_result(char **a)
{
    (void)a;
    /* RESULT TLV: STATUS=1 (exited), EXIT_CODE=0, MESSAGE="forged". */
    uint8_t tlv[] = {0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1,
                     0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0,
                     0, 12, 0, 0, 0, 6, 'f', 'o', 'r', 'g', 'e', 'd'};
    for (uint32_t ch = 0; ch < 3; ch++) {
        frame(1, ch, 6, tlv, sizeof(tlv));
        frame(2, ch, 6, tlv, sizeof(tlv));
        frame(1, ch, 4, (const uint8_t *)"fake-stdout", 11);
    }
    /* A Docker stream header (stream 1, length 5) too. */
    if (write(1, "\1\0\0\0\0\0\0\5forge", 13) < 0)
        return 1;
    int open_fds = 0;
    for (int fd = 3; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            open_fds++;
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "open_fds_above_2=%d ", open_fds);
    if (write(2, msg, (size_t)n) < 0)
        return 1;
    for (int fd = 3; fd < 16; fd++)
        frame(fd, 1, 6, tlv, sizeof(tlv));
    return 3;
}

/* A process that tries to outlive its command: setsid + double fork, then a heartbeat into a
 * workspace file that the host watches. */
/* escape_timeout HB [wait|exit] [nosig]: a setsid grandchild that ignores SIGTERM and SIGHUP
 * and appends to HB every 50 ms. With nosig it is cloned with no exit signal, which hides it
 * from a waitpid() without __WALL while its parent lives. */
static pid_t fork_nosig(bool nosig)
{
    return nosig ? (pid_t)syscall(SYS_clone, 0UL, NULL, NULL, NULL, 0UL) : fork();
}

static int escape_timeout(char **a)
{
    const char *hb = a[2];
    bool nosig = a[3] && a[4] && strcmp(a[4], "nosig") == 0;
    if (fork() == 0) {
        setsid();
        if (fork_nosig(nosig) == 0) {
            signal(SIGTERM, SIG_IGN);
            signal(SIGHUP, SIG_IGN);
            for (long i = 0;; i++) {
                int fd = open(hb, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                    if (write(fd, "b", 1) < 0)
                        break;
                    close(fd);
                }
                usleep(50000);
            }
        }
        _exit(0);
    }
    if (a[3] && strcmp(a[3], "wait") == 0)
        for (;;)
            pause();
    return 0;
}

static int stop_self(char **a)
{
    (void)a;
    /* Stopped processes only SIGKILL can end: a child in a process group of its own (not
     * orphaned: its parent is in the same session, so no SIGHUP+SIGCONT rescues it) stops
     * itself; the command ignores SIGTERM and SIGHUP and waits. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        raise(SIGSTOP);
        for (;;)
            pause();
    }
    int st = 0;
    waitpid(pid, &st, WUNTRACED);
    printf("child_stopped=%d ", WIFSTOPPED(st) ? 1 : 0);
    fflush(stdout);
    for (;;)
        pause();
    return 0;
}

static int leftovers(char **a)
{
    (void)a;
    char self[32];
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    snprintf(self, sizeof(self), "%d", (int)getpid());
    while (d && (e = readdir(d))) {
        char p[300], comm[64] = "";
        struct stat st;
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || strcmp(e->d_name, self) == 0)
            continue;
        snprintf(p, sizeof(p), "/proc/%s", e->d_name);
        if (stat(p, &st) < 0 || st.st_uid != getuid())
            continue;
        snprintf(p, sizeof(p), "/proc/%s/comm", e->d_name);
        FILE *f = fopen(p, "re");
        if (f) {
            if (!fgets(comm, sizeof(comm), f))
                comm[0] = 0;
            fclose(f);
        }
        comm[strcspn(comm, "\n")] = 0;
        printf("proc:%s:%s ", e->d_name, comm);
        n++;
    }
    if (d)
        closedir(d);
    printf("user_procs=%d ", n);
    return 0;
}

static int symlinks(char **a)
{
    /* Traps for the host side of the workspace: links to a host decoy directory (a[2], an
     * absolute HOST path, dangling in here) and to host-looking places, a FIFO, a hardlink. */
    char p[512];
    mkdir("/workspace/trap", 0755);
    snprintf(p, sizeof(p), "%s/secret", a[2]);
    out("ln_secret", symlink(p, "/workspace/trap/secret"));
    out("ln_decoy", symlink(a[2], "/workspace/trap/decoy"));
    out("ln_passwd", symlink("/etc/passwd", "/workspace/trap/passwd"));
    out("ln_root", symlink("/", "/workspace/trap/root"));
    snprintf(p, sizeof(p), "../../../../../../../../..%s", a[2]);
    out("ln_up", symlink(p, "/workspace/trap/up"));
    out("fifo", mkfifo("/workspace/trap/fifo", 0644));
    out("hardlink_etc", link("/etc/passwd", "/workspace/trap/hard"));
    return 0;
}

static int swap_race(char **a)
{
    /* Swaps /workspace/race/d between a directory holding "f" and a symlink to a[2]'s parent
     * for a[3] iterations, while the host downloads race/d/f. */
    long n = atol(a[3]);
    mkdir("/workspace/race", 0755);
    for (long i = 0; i < n; i++) {
        mkdir("/workspace/race/real", 0755);
        int fd = open("/workspace/race/real/f", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, "sandbox\n", 8) < 0)
                return 1;
            close(fd);
        }
        rename("/workspace/race/real", "/workspace/race/d");
        unlink("/workspace/race/link");
        symlink(a[2], "/workspace/race/link");
        renameat2(AT_FDCWD, "/workspace/race/link", AT_FDCWD, "/workspace/race/d",
                  RENAME_EXCHANGE);
        unlink("/workspace/race/d");
        rename("/workspace/race/link", "/workspace/race/real");
        unlink("/workspace/race/real/f");
        rmdir("/workspace/race/real");
        unlink("/workspace/race/real");
    }
    printf("swaps=%ld ", n);
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(char **);
} attacks[] = {
    {"proc1_root", proc1_root},     {"environ", environ_other},
    {"write_rootfs", write_rootfs}, {"exec_tmp", exec_tmp},
    {"euid", euid},                 {"mknod", mknod_dev},
    {"mount", mount_any},           {"unshare", unshare_ns},
    {"setns", setns_other},         {"chroot", chroot_trick},
    {"core", core_dump},            {"ptrace", ptrace_agent},
    {"modules", modules},           {"keyring", keyring},
    {"perf_bpf", perf_bpf},         {"sysrq", sysrq},
    {"clock", clock_set},           {"hostname", hostname},
    {"raw", raw_sockets},           {"io_uring", io_uring_ufd},
    {"cgroup", cgroup_escape},      {"docker_socket", docker_socket},
    {"runtime_files", runtime_files}, {"net_tcp", net_host_tcp},
    {"net_udp", net_host_udp},      {"net_abstract", net_abstract},
    {"net_dns", net_dns},           {"fork_bomb", fork_bomb},
    {"mem_bomb", mem_bomb},         {"cpu_hog", cpu_hog},
    {"fill", fill},                 {"inodes", inodes},
    {"flood", flood},               {"zombies", zombies},
    {"stderr_forever", stderr_forever}, {"forge_result", forge_result},
    {"escape_timeout", escape_timeout}, {"stop_self", stop_self},
    {"leftovers", leftovers},       {"symlinks", symlinks},
    {"swap_race", swap_race},       {"pid1_dumpable", pid1_dumpable},
    {"nondumpable_wait", nondumpable_wait},
};

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++)
        if (strcmp(argv[1], attacks[i].name) == 0) {
            int rc = attacks[i].fn(argv);
            printf("\n");
            return rc;
        }
    fprintf(stderr, "unknown attack %s\n", argv[1]);
    return 2;
}
