/* Files: host-side operations on a workspace the sandbox controls.
 *
 * The threat: everything below the root descriptor was written by the sandboxed code, which is
 * still running and can rename, replace and re-link entries between any two of our system calls.
 * So no path is ever resolved as a string on the host. Every lookup goes through openat2(2) with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, which the kernel enforces for
 * the whole walk at once: a symlink anywhere (also one swapped in while we walk) makes the
 * lookup fail with ELOOP, and ".." cannot climb above the starting directory. Below a directory
 * descriptor we only use *at() calls on a single component, with O_NOFOLLOW or
 * AT_SYMLINK_NOFOLLOW, so a descriptor pinned once stays the directory we checked.
 *
 * Anything we read is opened with O_NONBLOCK first and checked with fstat() on the descriptor
 * itself, so a FIFO cannot make us block and a file type is never taken from an earlier stat
 * that the sandbox could have invalidated. Every walk is bounded in depth, entries and bytes. */
#include <archive.h>
#include <archive_entry.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define RESOLVE_CONFINED (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
#define COPY_BUF 65536
/* Retries of a lookup that the kernel answered with EAGAIN (a rename raced with it). */
#define RESOLVE_RETRIES 16
/* Passes over a directory being deleted while the sandbox keeps adding to it. */
#define DELETE_PASSES 3

static const clr_files_limits default_limits = CLR_FILES_LIMITS_INIT;

static void closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}
#define _cleanup_dir_ __attribute__((cleanup(closedirp)))

static void archive_read_freep(struct archive **a)
{
    if (*a)
        archive_read_free(*a);
}

static void archive_write_freep(struct archive **a)
{
    if (*a)
        archive_write_free(*a);
}

static void archive_entry_freep(struct archive_entry **e)
{
    if (*e)
        archive_entry_free(*e);
}
#define _cleanup_archive_read_ __attribute__((cleanup(archive_read_freep)))
#define _cleanup_archive_write_ __attribute__((cleanup(archive_write_freep)))
#define _cleanup_archive_entry_ __attribute__((cleanup(archive_entry_freep)))

const char *clr_files_type_name(clr_file_type type)
{
    switch (type) {
    case CLR_FILE_REGULAR: return "file";
    case CLR_FILE_DIRECTORY: return "dir";
    case CLR_FILE_SYMLINK: return "symlink";
    case CLR_FILE_OTHER: return "other";
    default: return "other";
    }
}

/* "a FIFO", for messages that tell the caller why a file was refused. */
static const char *mode_phrase(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISLNK(mode))
        return "a symbolic link";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "a file of unknown type";
}

/* Turns the errno of a failed operation on a workspace path into a clr_error whose message
 * says what went wrong in the caller's terms. Returns -1. */
static int path_error(clr_error *err, int e, const char *what, const char *rel)
{
    switch (e) {
    case ENOENT:
        return clr_error_set(err, CLR_E_NOT_FOUND, e,
                             "%s '%.512s': no such file or directory in the workspace", what, rel);
    case ELOOP:
        return clr_error_set(err, CLR_E_INVALID, e,
                             "%s '%.512s': the path is or goes through a symbolic link, and "
                             "symlinks in the workspace are never followed; use the path the "
                             "link points to",
                             what, rel);
    case EXDEV:
        return clr_error_set(err, CLR_E_INVALID, e,
                             "%s '%.512s': the path leads out of the workspace", what, rel);
    case ENOTDIR:
        return clr_error_set(err, CLR_E_INVALID, e,
                             "%s '%.512s': a component of the path is not a directory", what,
                             rel);
    case EISDIR:
        return clr_error_set(err, CLR_E_CONFLICT, e,
                             "%s '%.512s': it is a directory; delete it first or choose another "
                             "path",
                             what, rel);
    case ENOTEMPTY:
        return clr_error_set(err, CLR_E_CONFLICT, e,
                             "%s '%.512s': the directory is not empty; delete it recursively",
                             what, rel);
    case EEXIST:
        return clr_error_set(err, CLR_E_CONFLICT, e, "%s '%.512s': it already exists", what,
                             rel);
    case ENOSPC:
    case EDQUOT:
        /* Bytes or inodes (limits.workspace_size, limits.workspace_inodes) ran out. */
        return clr_error_set(err, CLR_E_NO_SPACE, e,
                             "%s '%.512s': no space left on the workspace: delete files or "
                             "raise the workspace size (or inode) limit",
                             what, rel);
    case EFBIG:
        return clr_error_set(err, CLR_E_LIMIT, e,
                             "%s '%.512s': the file is larger than the limit allows", what, rel);
    case ENAMETOOLONG:
        return clr_error_set(err, CLR_E_INVALID, e, "%s '%.512s': the path is too long", what,
                             rel);
    case ENOMEM:
        return clr_error_set(err, CLR_E_INTERNAL, e, "%s '%.512s': out of memory", what, rel);
    default:
        return clr_error_set(err, CLR_E_INTERNAL, e, "%s '%.512s': %s", what, rel, strerror(e));
    }
}

/* ---- paths ------------------------------------------------------------------------------- */

/* A validated path in canonical form: components joined by single '/', no "." components, no
 * trailing '/'; "" is the root. */
typedef struct {
    char s[CLR_FILES_PATH_MAX + 1];
    size_t depth; /* number of components */
    size_t last;  /* offset of the last component */
} norm_path;

static int normalize(norm_path *out, const char *rel, size_t len, clr_error *err)
{
    out->s[0] = '\0';
    out->depth = 0;
    out->last = 0;
    if (!rel)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "no path given");
    if (len > CLR_FILES_PATH_MAX)
        return clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG,
                             "the path is %zu bytes long; at most %d are allowed", len,
                             CLR_FILES_PATH_MAX);
    /* rel is len bytes, not a string: messages show at most that much of it. */
    int shown = (int)(len < 512 ? len : 512);
    if (memchr(rel, '\0', len))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "the path contains a NUL byte; give a path without one");
    if (len > 0 && rel[0] == '/')
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "path '%.*s' is absolute; give it relative to the workspace "
                             "(\"src/main.c\" for /workspace/src/main.c)",
                             shown, rel);
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        const char *comp = rel + i;
        const char *slash = memchr(comp, '/', len - i);
        size_t n = slash ? (size_t)(slash - comp) : len - i;
        i += n + (slash ? 1 : 0);
        if (n == 0) {
            /* Only the single '/' that ends the path may leave an empty component behind. */
            if (i == len && slash && i >= 2 && rel[i - 2] != '/')
                break;
            return clr_error_set(err, CLR_E_INVALID, EINVAL,
                                 "path '%.*s' has an empty component ('//'); remove it",
                                 shown, rel);
        }
        if (n == 1 && comp[0] == '.')
            continue;
        if (n == 2 && comp[0] == '.' && comp[1] == '.')
            return clr_error_set(err, CLR_E_INVALID, EINVAL,
                                 "path '%.*s' contains '..'; paths may only lead downwards "
                                 "from the directory they start in",
                                 shown, rel);
        if (n > CLR_FILES_NAME_MAX)
            return clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG,
                                 "path '%.*s' has a component of %zu bytes; at most %d are "
                                 "allowed",
                                 shown, rel, n, CLR_FILES_NAME_MAX);
        if (out->depth > 0)
            out->s[o++] = '/';
        out->last = o;
        memcpy(out->s + o, comp, n);
        o += n;
        out->depth++;
    }
    out->s[o] = '\0';
    return 0;
}

int clr_files_check_path_n(const char *rel, size_t len, clr_error *err)
{
    norm_path p;
    return normalize(&p, rel, len, err);
}

int clr_files_check_path(const char *rel, clr_error *err)
{
    return clr_files_check_path_n(rel, rel ? strnlen(rel, CLR_FILES_PATH_MAX + 1) : 0, err);
}

static int normalize_str(norm_path *out, const char *rel, clr_error *err)
{
    return normalize(out, rel, rel ? strnlen(rel, CLR_FILES_PATH_MAX + 1) : 0, err);
}

/* A path being built during a walk, with the entry names pushed and popped as we descend. */
typedef struct {
    char s[CLR_FILES_PATH_MAX + 1];
    size_t len;
} path_buf;

/* Appends "/name" (or "name" at the start); returns the previous length for pop, or -1 when
 * the result would be longer than CLR_FILES_PATH_MAX. */
static ssize_t path_push(path_buf *p, const char *name)
{
    size_t old = p->len;
    size_t n = strlen(name);
    size_t sep = old > 0 ? 1 : 0;
    if (old + sep + n > CLR_FILES_PATH_MAX)
        return -1;
    if (sep)
        p->s[p->len++] = '/';
    memcpy(p->s + p->len, name, n + 1);
    p->len += n;
    return (ssize_t)old;
}

static void path_pop(path_buf *p, ssize_t old)
{
    p->len = (size_t)old;
    p->s[p->len] = '\0';
}

/* ---- confined lookups -------------------------------------------------------------------- */

/* openat2() beneath dirfd with no symlink followed anywhere; "" means dirfd itself. Returns a
 * descriptor or -errno. */
static int open_beneath(int dirfd, const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
        .resolve = RESOLVE_CONFINED,
    };
    const char *p = path && *path ? path : ".";
    for (int attempt = 0; attempt < RESOLVE_RETRIES; attempt++) {
        long fd = syscall(SYS_openat2, dirfd, p, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        /* EAGAIN: the kernel saw a concurrent rename and cannot vouch for the walk; retry. */
        if (errno != EINTR && errno != EAGAIN)
            return -errno;
    }
    return -EAGAIN;
}

/* Opens the directory dir (canonical, "" = dirfd itself) beneath dirfd, one level at a time,
 * each looked up with openat2 from the level above. With create, missing levels are made
 * (0755, owned by the sandbox user); a level replaced by a symlink meanwhile stops the walk.
 * Returns an owned descriptor or -errno; -ELOOP when a level is a symlink. */
static int open_dir(int dirfd, const char *dir, bool create)
{
    _cleanup_close_ int cur = open_beneath(dirfd, "", O_RDONLY | O_DIRECTORY);
    if (cur < 0)
        return cur;
    const char *p = dir;
    while (*p) {
        char comp[CLR_FILES_NAME_MAX + 1];
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        assert(n > 0 && n <= CLR_FILES_NAME_MAX);
        memcpy(comp, p, n);
        comp[n] = '\0';
        p += n + (slash ? 1 : 0);
        int fd = open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
        if (fd == -ENOENT && create) {
            if (mkdirat(cur, comp, 0755) == 0) {
                fd = open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
                /* The umask must not decide what the sandbox can do with its directory. */
                if (fd >= 0 && (fchown(fd, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0 ||
                                fchmod(fd, 0755) < 0)) {
                    int e = errno;
                    close(fd);
                    return -e;
                }
            } else if (errno == EEXIST) {
                fd = open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
            } else {
                return -errno;
            }
        }
        /* O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR; name it for what it is. */
        struct stat st;
        if (fd == -ENOTDIR && fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode))
            fd = -ELOOP;
        if (fd < 0)
            return fd;
        close(cur);
        cur = fd;
    }
    return steal_fd(&cur);
}

/* Opens the directory holding p's last component; *name points at that component in p. */
static int open_parent(int root, const norm_path *p, bool create, const char **name)
{
    char parent[CLR_FILES_PATH_MAX + 1];
    size_t n = p->last > 0 ? p->last - 1 : 0;
    memcpy(parent, p->s, n);
    parent[n] = '\0';
    *name = p->s + p->last;
    return open_dir(root, parent, create);
}

/* ---- plain I/O --------------------------------------------------------------------------- */

static int wait_fd(int fd, short events)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    int r;
    do
        r = poll(&pfd, 1, -1);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

/* Reads up to n bytes; 0 at end of file, -errno on failure. Waits if fd is non-blocking. */
static ssize_t read_some(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN);
            if (w < 0)
                return w;
            continue;
        }
        if (errno != EINTR)
            return -errno;
    }
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int r = wait_fd(fd, POLLOUT);
                if (r < 0)
                    return r;
                continue;
            }
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Where a download is spooled. A sparse workspace file costs its sandbox nothing (a hole in
 * the workspace's tmpfs), but written out byte by byte it would cost the host its apparent
 * size on disk: 1 GiB per file, 4 GiB per archive, as often as a client asks (issue #16 item
 * 9). So an all-zero block of the output, aligned to HOLE_BLOCK in the output file and past
 * what the file held when the copy began, is skipped with lseek and stays a hole; a reader of
 * the file sees the same bytes. Outputs that cannot seek (pipes, sockets) get every byte.
 * What is written (never the holes) is charged to the caller's clr_files_budget, if any,
 * before it is written. */
#define HOLE_BLOCK 4096u

typedef struct hole_out {
    int fd;
    bool holes;     /* out is a regular file: zero blocks may be skipped */
    uint64_t pos;   /* the output offset the next byte goes to */
    uint64_t size0; /* the file's size when the copy began: never skip over its bytes */
    clr_files_budget *budget; /* charged before every write; NULL: none */
    uint64_t *charged;        /* what this output has charged to budget */
    bool over_budget;         /* a write was refused by the budget (-EDQUOT) */
} hole_out;

static void hole_out_init(hole_out *o, int fd, clr_files_budget *budget, uint64_t *charged)
{
    struct stat st;
    off_t cur;
    assert(!budget || charged);
    *o = (hole_out){.fd = fd, .budget = budget, .charged = charged};
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (cur = lseek(fd, 0, SEEK_CUR)) >= 0) {
        o->holes = true;
        o->pos = (uint64_t)cur;
        o->size0 = (uint64_t)st.st_size;
    }
}

static bool all_zero(const char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Data bytes about to be written: charged first, so that what many outputs hold together
 * never passes the budget, even for a moment. */
static int hole_out_charge(hole_out *o, size_t n)
{
    if (!o->budget || n == 0)
        return 0;
    uint64_t before = atomic_fetch_add(&o->budget->used, n);
    if (before + n > o->budget->max) {
        atomic_fetch_sub(&o->budget->used, n);
        o->over_budget = true;
        return -EDQUOT;
    }
    *o->charged += n;
    return 0;
}

static int hole_out_data(hole_out *o, const char *buf, size_t n)
{
    int r = hole_out_charge(o, n);
    return r < 0 ? r : write_all(o->fd, buf, n);
}

/* Writes n bytes at the output's offset; 0 or -errno (-EDQUOT: the budget is spent). */
static int hole_out_write(hole_out *o, const char *buf, size_t n)
{
    if (!o->holes)
        return hole_out_data(o, buf, n);
    size_t i = 0, run = 0; /* buf[i - run, i) is written as data once the run ends */
    while (i < n) {
        size_t in_block = HOLE_BLOCK - (size_t)(o->pos % HOLE_BLOCK);
        size_t len = n - i < in_block ? n - i : in_block;
        if (len == HOLE_BLOCK && o->pos >= o->size0 && all_zero(buf + i, len)) {
            int w = hole_out_data(o, buf + i - run, run);
            if (w < 0)
                return w;
            run = 0;
            if (lseek(o->fd, (off_t)len, SEEK_CUR) < 0)
                return -errno;
        } else {
            run += len;
        }
        i += len;
        o->pos += len;
    }
    return hole_out_data(o, buf + n - run, run);
}

/* A hole at the very end has no byte written after it: the size says where the output ends. */
static int hole_out_finish(hole_out *o)
{
    struct stat st;
    if (!o->holes)
        return 0;
    if (fstat(o->fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size < o->pos && ftruncate(o->fd, (off_t)o->pos) < 0)
        return -errno;
    return 0;
}

/* The error for a write the budget refused. */
static int budget_error(clr_error *err, const clr_files_budget *b, const char *what,
                        const char *rel)
{
    return clr_error_set(err, CLR_E_UNAVAILABLE, EDQUOT,
                         "%s '%.512s': the daemon holds %" PRIu64 " MiB of downloads, as much "
                         "as %s (%" PRIu64 " MiB) allows: try again once they finish, or raise "
                         "%s",
                         what, rel, atomic_load(&b->used) >> 20, b->name ? b->name : "the budget",
                         b->max >> 20, b->name ? b->name : "it");
}

void clr_files_budget_release(clr_files_budget *budget, uint64_t bytes)
{
    if (budget && bytes)
        atomic_fetch_sub(&budget->used, bytes);
}

/* A name no one can guess, so the sandbox cannot prepare something under it. */
static int random_name(char *buf, size_t len, const char *prefix, clr_error *err)
{
    uint64_t r;
    ssize_t n;
    do
        n = getrandom(&r, sizeof(r), 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(r))
        return clr_error_set(err, CLR_E_INTERNAL, errno, "getrandom failed: %s",
                             strerror(errno));
    snprintf(buf, len, "%s%016" PRIx64, prefix, r);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Reads the names in dfd except "." and "..", sorted; -E2BIG when there are more than max.
 * *out is an array of *n malloc'd strings (free with free_names). */
static int read_names(int dfd, size_t max, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    /* A descriptor of our own: the caller's keeps its offset. "." is never a symlink. */
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    _cleanup_dir_ DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    char **v = NULL;
    size_t count = 0, cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = -errno;
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (count >= max) {
            rc = -E2BIG;
            break;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        if (!(v[count] = strdup(e->d_name))) {
            rc = -ENOMEM;
            break;
        }
        count++;
    }
    if (rc < 0) {
        free_names(v, count);
        return rc;
    }
    if (count > 1)
        qsort(v, count, sizeof(*v), cmp_names);
    *out = v;
    *n = count;
    return 0;
}

/* ---- single files ------------------------------------------------------------------------ */

int clr_files_open_root(int *out_fd, const char *workspace_dir, clr_error *err)
{
    *out_fd = -1;
    int fd = open(workspace_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return clr_error_set(err, CLR_E_NOT_FOUND, e,
                                 "workspace %s does not exist: was the sandbox removed?",
                                 workspace_dir);
        if (e == ENOTDIR || e == ELOOP)
            return clr_error_set(err, CLR_E_INVALID, e,
                                 "workspace %s is not a directory (or is a symlink)",
                                 workspace_dir);
        return clr_error_set(err, CLR_E_INTERNAL, e, "cannot open workspace %s: %s",
                             workspace_dir, strerror(e));
    }
    *out_fd = fd;
    return 0;
}

/* Copies the upload into fd, refusing more than max bytes. */
static int fill_file(int fd, int src_fd, const void *data, size_t len, uint64_t max,
                     const char *rel, clr_error *err)
{
    if (src_fd < 0) {
        int w = write_all(fd, data, len);
        return w < 0 ? path_error(err, -w, "writing", rel) : 0;
    }
    _cleanup_free_ char *buf = malloc(COPY_BUF);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read_some(src_fd, buf, COPY_BUF);
        if (n < 0)
            return clr_error_set(err, CLR_E_INTERNAL, (int)-n,
                                 "writing '%.512s': reading the upload failed: %s", rel,
                                 strerror((int)-n));
        if (n == 0)
            return 0;
        total += (uint64_t)n;
        if (total > max)
            return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                                 "writing '%.512s': the content is larger than the limit of "
                                 "%" PRIu64 " bytes per file",
                                 rel, max);
        int w = write_all(fd, buf, (size_t)n);
        if (w < 0)
            return path_error(err, -w, "writing", rel);
    }
}

int clr_files_write(int root, const char *rel, int src_fd, const void *data, size_t len,
                    uint32_t mode, const clr_files_limits *lim, clr_error *err)
{
    assert(src_fd >= 0 || data || len == 0);
    if (!lim)
        lim = &default_limits;
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "writing a file");
    size_t rlen = strlen(rel);
    if (p.depth == 0 || rel[rlen - 1] == '/')
        return clr_error_set(err, CLR_E_INVALID, EISDIR,
                             "writing '%.512s': that names a directory; give a file path", rel);
    if (p.depth > lim->max_depth)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP,
                             "writing '%.512s': the path is %zu levels deep; at most %" PRIu32
                             " are allowed",
                             rel, p.depth, lim->max_depth);
    if (src_fd < 0 && len > lim->max_file_bytes)
        return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                             "writing '%.512s': %zu bytes is more than the limit of %" PRIu64
                             " bytes per file",
                             rel, len, lim->max_file_bytes);
    const char *name;
    _cleanup_close_ int dir = open_parent(root, &p, true, &name);
    if (dir < 0)
        return path_error(err, -dir, "writing", rel);
    /* Checked before the upload is read so the caller learns early; rename() checks again. */
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return path_error(err, EISDIR, "writing", rel);

    char tmp[64];
    if (random_name(tmp, sizeof(tmp), ".clr-upload-", err) < 0)
        return -1;
    _cleanup_close_ int fd =
        openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return path_error(err, errno, "writing", rel);
    int rc = fill_file(fd, src_fd, data, len, lim->max_file_bytes, rel, err);
    /* chown before chmod: chown would clear set-id bits, and we set none anyway. */
    if (rc == 0 && (fchown(fd, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0 || fchmod(fd, mode & 0777) < 0))
        rc = path_error(err, errno, "writing", rel);
    /* rename() replaces a file or a symlink at name (the link itself, never its target) and
     * refuses to replace a directory. */
    if (rc == 0 && renameat(dir, tmp, dir, name) < 0)
        rc = path_error(err, errno, "writing", rel);
    if (rc < 0)
        unlinkat(dir, tmp, 0);
    return rc;
}

int clr_files_read(int root, const char *rel, int out_fd, uint64_t max_bytes, uint64_t *size_out,
                   clr_error *err)
{
    clr_files_limits lim = CLR_FILES_LIMITS_INIT;
    lim.max_file_bytes = max_bytes;
    clr_files_report rep;
    int rc = clr_files_read_ext(root, rel, out_fd, &lim, &rep, err);
    if (size_out)
        *size_out = rep.bytes;
    return rc;
}

int clr_files_read_ext(int root, const char *rel, int out_fd, const clr_files_limits *lim,
                       clr_files_report *report, clr_error *err)
{
    clr_files_report scratch;
    clr_files_report *rep = report ? report : &scratch;
    memset(rep, 0, sizeof(*rep));
    if (!lim)
        lim = &default_limits;
    assert(report || !lim->output_budget);
    uint64_t max_bytes = lim->max_file_bytes;
    uint64_t *size_out = &rep->bytes;
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "reading a file");
    if (p.depth == 0)
        return clr_error_set(err, CLR_E_INVALID, EISDIR,
                             "reading '%.512s': that is the workspace root, a directory; give a "
                             "file path",
                             rel);
    /* Look before opening for real: an O_PATH descriptor has no side effects on any file type
     * (opening a socket fails, a device could act), and with O_NOFOLLOW it shows a final
     * symlink as what it is. */
    _cleanup_close_ int probe = open_beneath(root, p.s, O_PATH);
    if (probe < 0)
        return path_error(err, -probe, "reading", rel);
    struct stat st;
    if (fstat(probe, &st) < 0)
        return path_error(err, errno, "reading", rel);
    if (!S_ISREG(st.st_mode))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "reading '%.512s': it is %s, not a regular file%s", rel,
                             mode_phrase(st.st_mode),
                             S_ISLNK(st.st_mode) ? " (symlinks are never followed)" : "");
    /* The entry may have been swapped since: O_NONBLOCK keeps a FIFO from blocking the open,
     * and the type is checked again on the descriptor we actually read. */
    _cleanup_close_ int fd = open_beneath(root, p.s, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return path_error(err, -fd, "reading", rel);
    if (fstat(fd, &st) < 0)
        return path_error(err, errno, "reading", rel);
    if (!S_ISREG(st.st_mode))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "reading '%.512s': it is %s, not a regular file", rel,
                             mode_phrase(st.st_mode));
    if ((uint64_t)st.st_size > max_bytes)
        return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                             "reading '%.512s': the file is %lld bytes, more than the limit of "
                             "%" PRIu64 "; read a smaller file or raise the limit",
                             rel, (long long)st.st_size, max_bytes);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return path_error(err, errno, "reading", rel);

    _cleanup_free_ char *buf = malloc(COPY_BUF);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    hole_out out;
    hole_out_init(&out, out_fd, lim->output_budget, &rep->charged);
    /* What the file held when opened: if the sandbox keeps appending, we stop at that size. */
    uint64_t remaining = (uint64_t)st.st_size, copied = 0;
    while (remaining > 0) {
        size_t want = remaining < COPY_BUF ? (size_t)remaining : COPY_BUF;
        ssize_t n = read_some(fd, buf, want);
        if (n < 0)
            return path_error(err, (int)-n, "reading", rel);
        if (n == 0)
            break;
        int w = hole_out_write(&out, buf, (size_t)n);
        if (w < 0 && out.over_budget)
            return budget_error(err, lim->output_budget, "reading", rel);
        if (w < 0)
            return clr_error_set(err, CLR_E_INTERNAL, -w,
                                 "reading '%.512s': writing to the output failed: %s", rel,
                                 strerror(-w));
        copied += (uint64_t)n;
        remaining -= (uint64_t)n;
        *size_out = copied;
    }
    int w = hole_out_finish(&out);
    if (w < 0)
        return clr_error_set(err, CLR_E_INTERNAL, -w,
                             "reading '%.512s': writing to the output failed: %s", rel,
                             strerror(-w));
    return 0;
}

/* ---- metadata ---------------------------------------------------------------------------- */

static clr_file_type type_of(mode_t mode)
{
    if (S_ISREG(mode))
        return CLR_FILE_REGULAR;
    if (S_ISDIR(mode))
        return CLR_FILE_DIRECTORY;
    if (S_ISLNK(mode))
        return CLR_FILE_SYMLINK;
    return CLR_FILE_OTHER;
}

static void entry_clear(clr_file_entry *e)
{
    free(e->name);
    free(e->link_target);
    e->name = NULL;
    e->link_target = NULL;
}

void clr_files_entries_free(clr_file_entry *entries, size_t n)
{
    if (!entries)
        return;
    for (size_t i = 0; i < n; i++)
        entry_clear(&entries[i]);
    free(entries);
}

/* Fills e from st; for a symlink reads its target from (dfd, name). Returns 0 or -errno. */
static int entry_fill(clr_file_entry *e, int dfd, const char *name, const char *shown_name,
                      const struct stat *st)
{
    memset(e, 0, sizeof(*e));
    e->type = type_of(st->st_mode);
    e->size = st->st_size > 0 ? (uint64_t)st->st_size : 0;
    e->mode = st->st_mode & 07777;
    e->mtime = (int64_t)st->st_mtim.tv_sec;
    if (!(e->name = strdup(shown_name)))
        return -ENOMEM;
    if (e->type == CLR_FILE_SYMLINK) {
        char target[CLR_FILES_PATH_MAX + 1];
        ssize_t n = readlinkat(dfd, name, target, sizeof(target) - 1);
        if (n < 0) {
            int r = -errno;
            entry_clear(e);
            return r;
        }
        target[n] = '\0';
        if (!(e->link_target = strdup(target))) {
            entry_clear(e);
            return -ENOMEM;
        }
    }
    return 0;
}

int clr_files_stat(clr_file_entry **out, int root, const char *rel, clr_error *err)
{
    *out = NULL;
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "describing a file");
    _cleanup_free_ clr_file_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    struct stat st;
    int r;
    if (p.depth == 0) {
        if (fstat(root, &st) < 0)
            return path_error(err, errno, "describing", rel);
        r = entry_fill(e, root, ".", ".", &st);
    } else {
        const char *name;
        _cleanup_close_ int dir = open_parent(root, &p, false, &name);
        if (dir < 0)
            return path_error(err, -dir, "describing", rel);
        if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return path_error(err, errno, "describing", rel);
        r = entry_fill(e, dir, name, name, &st);
    }
    if (r < 0)
        return path_error(err, -r, "describing", rel);
    *out = steal_pointer(&e);
    return 0;
}

int clr_files_list(clr_file_entry **out, size_t *n, int root, const char *rel,
                   size_t max_entries, clr_error *err)
{
    *out = NULL;
    *n = 0;
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "listing a directory");
    _cleanup_close_ int dir = open_dir(root, p.s, false);
    if (dir < 0)
        return path_error(err, -dir, "listing", rel);
    char **names = NULL;
    size_t count = 0;
    int r = read_names(dir, max_entries, &names, &count);
    if (r == -E2BIG)
        return clr_error_set(err, CLR_E_LIMIT, E2BIG,
                             "listing '%.512s': the directory has more than %zu entries; list a "
                             "smaller directory or raise the limit",
                             rel, max_entries);
    if (r < 0)
        return path_error(err, -r, "listing", rel);
    clr_file_entry *v = count ? calloc(count, sizeof(*v)) : NULL;
    if (count && !v) {
        free_names(names, count);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < count && r == 0; i++) {
        struct stat st;
        /* An entry removed since readdir is simply not listed. */
        if (fstatat(dir, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                r = -errno;
            continue;
        }
        r = entry_fill(&v[m], dir, names[i], names[i], &st);
        if (r == -ENOENT)
            r = 0; /* a symlink that vanished before readlink */
        else if (r == 0)
            m++;
    }
    free_names(names, count);
    if (r < 0) {
        clr_files_entries_free(v, m);
        return path_error(err, -r, "listing", rel);
    }
    if (m == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = m;
    return 0;
}

/* ---- deletion ---------------------------------------------------------------------------- */

static int remove_dir(int parent, const char *name, int depth, const char *rel, clr_error *err);

/* Deletes everything inside the directory fd, which it takes over (one descriptor per level
 * of a deep tree). Links are unlinked like files; only real directories (opened with
 * O_NOFOLLOW | O_DIRECTORY) are descended into. */
static int remove_contents(int fd, int depth, const char *rel, clr_error *err)
{
    _cleanup_dir_ DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return path_error(err, e, "deleting", rel);
    }
    int dfd = dirfd(d);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                return path_error(err, errno, "deleting", rel);
            return 0;
        }
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        /* unlink() never follows and refuses directories with EISDIR, so we only descend into
         * what the kernel just told us is a directory. */
        if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
            continue;
        if (errno != EISDIR)
            return path_error(err, errno, "deleting", rel);
        if (remove_dir(dfd, name, depth + 1, rel, err) < 0)
            return -1;
    }
}

/* Deletes the directory name in parent and everything inside it. */
static int remove_dir(int parent, const char *name, int depth, const char *rel, clr_error *err)
{
    if (depth > CLR_FILES_DELETE_MAX_DEPTH)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP,
                             "deleting '%.512s': directories are nested more than %d deep; "
                             "delete the deepest part from inside the sandbox",
                             rel, CLR_FILES_DELETE_MAX_DEPTH);
    for (int pass = 0; pass < DELETE_PASSES; pass++) {
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                return 0;
            /* Replaced by a link or a file since we looked: delete that instead. */
            if ((errno == ELOOP || errno == ENOTDIR) && unlinkat(parent, name, 0) == 0)
                return 0;
            return path_error(err, errno, "deleting", rel);
        }
        if (remove_contents(fd, depth, rel, err) < 0)
            return -1;
        if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return path_error(err, errno, "deleting", rel);
    }
    return clr_error_set(err, CLR_E_CONFLICT, ENOTEMPTY,
                         "deleting '%.512s': new files keep appearing in it; stop what writes "
                         "there and try again",
                         rel);
}

int clr_files_delete(int root, const char *rel, bool recursive, clr_error *err)
{
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "deleting a file");
    if (p.depth == 0)
        return clr_error_set(err, CLR_E_INVALID, EBUSY,
                             "deleting '%.512s': the workspace root cannot be deleted; delete "
                             "what is inside it",
                             rel);
    const char *name;
    _cleanup_close_ int dir = open_parent(root, &p, false, &name);
    if (dir < 0)
        return path_error(err, -dir, "deleting", rel);
    if (unlinkat(dir, name, 0) == 0)
        return 0;
    if (errno != EISDIR)
        return path_error(err, errno, "deleting", rel);
    if (!recursive) {
        if (unlinkat(dir, name, AT_REMOVEDIR) == 0)
            return 0;
        return path_error(err, errno, "deleting", rel);
    }
    return remove_dir(dir, name, 1, rel, err);
}

/* ---- extracting archives ----------------------------------------------------------------- */

struct extract_ctx {
    struct archive *a;
    int stage; /* the staging directory, which the sandbox user cannot enter */
    const clr_files_limits *lim;
    clr_files_report *rep;
    clr_error *err;
};

static int archive_damaged(struct archive *a, clr_error *err)
{
    const char *msg = archive_error_string(a);
    return clr_error_set(err, CLR_E_INVALID, archive_errno(a) > 0 ? archive_errno(a) : EINVAL,
                         "the archive is damaged or not a tar archive: %s",
                         msg ? msg : "unknown error");
}

static int entry_refused(struct extract_ctx *c, const char *raw, const char *why)
{
    return clr_error_set(c->err, CLR_E_INVALID, EINVAL, "archive entry '%.512s' refused: %s",
                         raw, why);
}

/* Gives what we created to the sandbox user, with permission bits only, and the archive's
 * modification time. */
static int finish_node(int fd, uint32_t mode, struct archive_entry *e, bool set_time)
{
    if (fchown(fd, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0 || fchmod(fd, mode & 0777) < 0)
        return -errno;
    if (set_time && archive_entry_mtime_is_set(e)) {
        struct timespec ts[2] = {
            {.tv_nsec = UTIME_OMIT},
            {.tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e)},
        };
        if (futimens(fd, ts) < 0)
            return -errno;
    }
    return 0;
}

/* Makes room for a non-directory entry at name: a file or link extracted earlier under the
 * same name is replaced (tar semantics: the last one wins); a directory is not. */
static int make_room(struct extract_ctx *c, int dir, const char *name, const char *raw)
{
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : path_error(c->err, errno, "extracting", raw);
    if (S_ISDIR(st.st_mode))
        return entry_refused(c, raw, "a directory of that name was extracted earlier");
    if (unlinkat(dir, name, 0) < 0)
        return path_error(c->err, errno, "extracting", raw);
    return 0;
}

static int extract_file(struct extract_ctx *c, struct archive_entry *e, int dir,
                        const char *name, const char *raw)
{
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
        return entry_refused(c, raw, "it does not declare its size");
    uint64_t size = (uint64_t)archive_entry_size(e);
    /* The declared size decides, before a byte is written: a sparse entry claiming terabytes
     * costs its header, not the disk. */
    if (size > c->lim->max_file_bytes)
        return clr_error_set(c->err, CLR_E_LIMIT, EFBIG,
                             "archive entry '%.512s' refused: it is %" PRIu64
                             " bytes, more than the limit of %" PRIu64 " bytes per file",
                             raw, size, c->lim->max_file_bytes);
    if (size > c->lim->max_total_bytes - c->rep->bytes)
        return clr_error_set(c->err, CLR_E_LIMIT, EFBIG,
                             "archive entry '%.512s' refused: the archive holds more than the "
                             "limit of %" PRIu64 " bytes in total",
                             raw, c->lim->max_total_bytes);
    c->rep->bytes += size;
    if (make_room(c, dir, name, raw) < 0)
        return -1;
    _cleanup_close_ int fd =
        openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return path_error(c->err, errno, "extracting", raw);
    for (;;) {
        const void *buf;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(c->a, &buf, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return archive_damaged(c->a, c->err);
        if (off < 0 || (uint64_t)off > size || len > size - (uint64_t)off)
            return entry_refused(c, raw, "its data runs past its declared size");
        int w = pwrite_all(fd, buf, len, (off_t)off);
        if (w < 0)
            return path_error(c->err, -w, "extracting", raw);
    }
    /* Holes (sparse entries, or a short final block) become holes in the file. */
    if (ftruncate(fd, (off_t)size) < 0)
        return path_error(c->err, errno, "extracting", raw);
    int r = finish_node(fd, archive_entry_perm(e), e, true);
    if (r < 0)
        return path_error(c->err, -r, "extracting", raw);
    c->rep->files++;
    return 0;
}

static int extract_dir(struct extract_ctx *c, struct archive_entry *e, int dir, const char *name,
                       const char *raw)
{
    if (mkdirat(dir, name, 0700) < 0 && errno != EEXIST)
        return path_error(c->err, errno, "extracting", raw);
    _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            return entry_refused(c, raw, "a file or symlink of that name was extracted earlier");
        return path_error(c->err, errno, "extracting", raw);
    }
    /* Its time would change as entries land in it; only the mode is taken. */
    int r = finish_node(fd, archive_entry_perm(e), e, false);
    if (r < 0)
        return path_error(c->err, -r, "extracting", raw);
    c->rep->dirs++;
    return 0;
}

static int extract_symlink(struct extract_ctx *c, struct archive_entry *e, int dir,
                           const char *name, const char *raw)
{
    const char *target = archive_entry_symlink(e);
    if (!target || !*target)
        return entry_refused(c, raw, "it is a symlink without a target");
    if (strlen(target) >= CLR_FILES_PATH_MAX)
        return entry_refused(c, raw, "its symlink target is too long");
    if (make_room(c, dir, name, raw) < 0)
        return -1;
    /* Stored verbatim and never followed by us: later entries are resolved with
     * RESOLVE_NO_SYMLINKS, so "link/x" fails instead of writing where the link points. */
    if (symlinkat(target, dir, name) < 0)
        return path_error(c->err, errno, "extracting", raw);
    if (fchownat(dir, name, CLR_SANDBOX_UID, CLR_SANDBOX_GID, AT_SYMLINK_NOFOLLOW) < 0)
        return path_error(c->err, errno, "extracting", raw);
    if (archive_entry_mtime_is_set(e)) {
        struct timespec ts[2] = {
            {.tv_nsec = UTIME_OMIT},
            {.tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e)},
        };
        utimensat(dir, name, ts, AT_SYMLINK_NOFOLLOW); /* cosmetic: failure does not matter */
    }
    c->rep->symlinks++;
    return 0;
}

static int extract_entry(struct extract_ctx *c, struct archive_entry *e)
{
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        raw = archive_entry_pathname_utf8(e);
    if (!raw)
        return clr_error_set(c->err, CLR_E_INVALID, EINVAL,
                             "archive entry %" PRIu64 " refused: it has no usable name",
                             c->rep->entries + 1);
    snprintf(c->rep->failed_entry, sizeof(c->rep->failed_entry), "%s", raw);
    if (++c->rep->entries > c->lim->max_entries)
        return clr_error_set(c->err, CLR_E_LIMIT, E2BIG,
                             "the archive has more than the limit of %" PRIu64 " entries",
                             c->lim->max_entries);
    if (archive_entry_hardlink(e))
        return entry_refused(c, raw, "it is a hard link; hard links are not extracted");
    norm_path p;
    if (normalize_str(&p, raw, c->err) < 0)
        return clr_error_prefix(c->err, "archive entry refused");
    mode_t type = archive_entry_filetype(e);
    if (p.depth == 0) {
        /* "./": the destination itself, which exists already. */
        if (type == AE_IFDIR)
            return 0;
        return entry_refused(c, raw, "it names the destination directory itself");
    }
    if (p.depth > c->lim->max_depth)
        return clr_error_set(c->err, CLR_E_LIMIT, ELOOP,
                             "archive entry '%.512s' refused: it is %zu levels deep; at most "
                             "%" PRIu32 " are allowed",
                             raw, p.depth, c->lim->max_depth);
    switch (type) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
        break;
    case AE_IFCHR: return entry_refused(c, raw, "it is a character device");
    case AE_IFBLK: return entry_refused(c, raw, "it is a block device");
    case AE_IFIFO: return entry_refused(c, raw, "it is a FIFO");
    case AE_IFSOCK: return entry_refused(c, raw, "it is a socket");
    default: return entry_refused(c, raw, "it is of an unknown type");
    }
    const char *name;
    _cleanup_close_ int dir = open_parent(c->stage, &p, true, &name);
    if (dir < 0) {
        if (dir == -ELOOP)
            return entry_refused(c, raw, "it lies below a symlink extracted earlier");
        if (dir == -ENOTDIR)
            return entry_refused(c, raw, "it lies below a file extracted earlier");
        return path_error(c->err, -dir, "extracting", raw);
    }
    if (type == AE_IFREG)
        return extract_file(c, e, dir, name, raw);
    if (type == AE_IFDIR)
        return extract_dir(c, e, dir, name, raw);
    return extract_symlink(c, e, dir, name, raw);
}

static int extract_all(struct extract_ctx *c, int tar_fd)
{
    _cleanup_archive_read_ struct archive *a = archive_read_new();
    if (!a)
        return clr_error_set(c->err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    /* Only tar, only gzip, only in-process: libarchive would otherwise fall back to running an
     * external decompressor on untrusted input. */
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(a) != ARCHIVE_OK)
        return clr_error_set(c->err, CLR_E_UNAVAILABLE, 0,
                             "libarchive cannot read gzip'd tar archives by itself: %s; install "
                             "a libarchive built with zlib",
                             archive_error_string(a) ? archive_error_string(a) : "");
    if (archive_read_open_fd(a, tar_fd, COPY_BUF) != ARCHIVE_OK)
        return archive_damaged(a, c->err);
    c->a = a;
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        /* ARCHIVE_RETRY (a header it skipped over) is damage too: all or nothing. */
        if (r < ARCHIVE_WARN)
            return archive_damaged(a, c->err);
        if (extract_entry(c, e) < 0)
            return -1;
    }
    c->rep->failed_entry[0] = '\0';
    return 0;
}

/* Moving the staged tree into place. Checked first (nothing moved if a type differs from what
 * the workspace holds), then moved with rename(2): files and links replace what is there,
 * directories that exist on both sides are merged. */
struct merge_ctx {
    const clr_files_limits *lim;
    path_buf path;
    clr_error *err;
};

static int merge_tree(struct merge_ctx *m, int src, int dst, uint32_t depth, bool move)
{
    if (depth > m->lim->max_depth)
        return clr_error_set(m->err, CLR_E_LIMIT, ELOOP,
                             "extracting: '%.512s' is nested more than %" PRIu32 " deep",
                             m->path.s, m->lim->max_depth);
    char **names;
    size_t n;
    int r = read_names(src, m->lim->max_entries, &names, &n);
    if (r < 0)
        return path_error(m->err, -r, "extracting", m->path.s);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = names[i];
        ssize_t old = path_push(&m->path, name);
        if (old < 0) {
            rc = clr_error_set(m->err, CLR_E_INVALID, ENAMETOOLONG,
                               "extracting: a path is longer than %d bytes", CLR_FILES_PATH_MAX);
            break;
        }
        struct stat s, d;
        if (fstatat(src, name, &s, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = path_error(m->err, errno, "extracting", m->path.s);
        } else if (fstatat(dst, name, &d, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                rc = path_error(m->err, errno, "extracting", m->path.s);
            else if (move && renameat2(src, name, dst, name, RENAME_NOREPLACE) < 0)
                rc = errno == EEXIST
                         ? clr_error_set(m->err, CLR_E_CONFLICT, EEXIST,
                                         "extracting: '%.512s' appeared in the workspace while "
                                         "the archive was being moved into place; try again",
                                         m->path.s)
                         : path_error(m->err, errno, "extracting", m->path.s);
        } else if (S_ISDIR(s.st_mode) != S_ISDIR(d.st_mode)) {
            rc = clr_error_set(m->err, CLR_E_CONFLICT, EEXIST,
                               "extracting: '%.512s' is %s in the archive but %s in the "
                               "workspace; delete it from the workspace or extract elsewhere",
                               m->path.s, mode_phrase(s.st_mode), mode_phrase(d.st_mode));
        } else if (S_ISDIR(s.st_mode)) {
            _cleanup_close_ int s2 =
                openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            _cleanup_close_ int d2 =
                openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 || d2 < 0)
                rc = path_error(m->err, errno, "extracting", m->path.s);
            else
                rc = merge_tree(m, s2, d2, depth + 1, move);
        } else if (move && renameat(src, name, dst, name) < 0) {
            rc = path_error(m->err, errno, "extracting", m->path.s);
        }
        path_pop(&m->path, old);
    }
    free_names(names, n);
    return rc;
}

int clr_files_extract_tar(int root, const char *rel_dir, int tar_fd, const clr_files_limits *lim,
                          clr_files_report *report, clr_error *err)
{
    clr_files_report scratch;
    clr_files_report *rep = report ? report : &scratch;
    memset(rep, 0, sizeof(*rep));
    if (!lim)
        lim = &default_limits;
    norm_path p;
    if (normalize_str(&p, rel_dir, err) < 0)
        return clr_error_prefix(err, "extracting an archive");
    if (p.depth > lim->max_depth)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP,
                             "extracting into '%.512s': the path is %zu levels deep; at most "
                             "%" PRIu32 " are allowed",
                             rel_dir, p.depth, lim->max_depth);
    _cleanup_close_ int dest = open_dir(root, p.s, true);
    if (dest < 0)
        return path_error(err, -dest, "extracting into", rel_dir);

    /* The staging directory is root's and 0700: the sandbox user can see its name but cannot
     * look inside or change anything below it while we fill it. */
    char stage_name[64];
    if (random_name(stage_name, sizeof(stage_name), ".clr-extract-", err) < 0)
        return -1;
    if (mkdirat(dest, stage_name, 0700) < 0)
        return path_error(err, errno, "extracting into", rel_dir);
    _cleanup_close_ int stage =
        openat(dest, stage_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sst;
    if (stage < 0 || fstat(stage, &sst) < 0 || sst.st_uid != geteuid() ||
        (sst.st_mode & 0777) != 0700) {
        /* Swapped for one of the sandbox's between mkdir and open: do not touch it. */
        return clr_error_set(err, CLR_E_CONFLICT, EBUSY,
                             "extracting into '%.512s': the staging directory was replaced "
                             "while it was being created; try again",
                             rel_dir);
    }

    struct extract_ctx c = {.stage = stage, .lim = lim, .rep = rep, .err = err};
    int rc = extract_all(&c, tar_fd);
    if (rc == 0) {
        struct merge_ctx *m = calloc(1, sizeof(*m));
        if (!m) {
            rc = clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
        } else {
            m->lim = lim;
            m->err = err;
            rc = merge_tree(m, stage, dest, 1, false);
            if (rc == 0)
                rc = merge_tree(m, stage, dest, 1, true);
            free(m);
        }
    }

    /* Whatever is left in the staging area (all of it on failure, merged directories' shells
     * on success) goes; the directory itself only if its name is still ours. */
    clr_error cerr = CLR_ERROR_INIT;
    int own = openat(stage, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (own >= 0)
        remove_contents(own, 1, rel_dir, &cerr);
    struct stat now;
    if (fstatat(dest, stage_name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == sst.st_ino &&
        now.st_dev == sst.st_dev)
        unlinkat(dest, stage_name, AT_REMOVEDIR);
    return rc;
}

/* ---- creating archives ------------------------------------------------------------------- */

struct tar_ctx {
    struct archive *a; /* NULL while measuring */
    const clr_files_limits *lim;
    clr_files_report *rep;
    const char *rel; /* what was asked for, for messages */
    path_buf path;   /* the current entry's name in the archive */
    char target[CLR_FILES_PATH_MAX + 1];
    char buf[COPY_BUF];
    hole_out out;
    clr_error *err;
};

/* libarchive's output: through hole_out, so the zeros of sparse files stay holes. */
static la_ssize_t tar_out_write(struct archive *a, void *data, const void *buf, size_t n)
{
    struct tar_ctx *c = data;
    int w = hole_out_write(&c->out, buf, n);
    if (w < 0) {
        archive_set_error(a, -w, "%s", strerror(-w));
        return -1;
    }
    return (la_ssize_t)n;
}

static int tar_out_close(struct archive *a, void *data)
{
    struct tar_ctx *c = data;
    int w = hole_out_finish(&c->out);
    if (w < 0) {
        archive_set_error(a, -w, "%s", strerror(-w));
        return ARCHIVE_FATAL;
    }
    return ARCHIVE_OK;
}

static int tar_write_failed(struct tar_ctx *c)
{
    if (c->out.over_budget)
        return budget_error(c->err, c->lim->output_budget, "archiving", c->rel);
    const char *msg = archive_error_string(c->a);
    int e = archive_errno(c->a);
    return clr_error_set(c->err, CLR_E_INTERNAL, e > 0 ? e : EIO,
                         "archiving '%.512s': writing the archive failed: %s", c->rel,
                         msg ? msg : "unknown error");
}

static int tar_entry_error(struct tar_ctx *c, int e)
{
    path_error(c->err, e, "archiving", c->path.s);
    return clr_error_prefix(c->err, "archiving '%.256s'", c->rel);
}

/* Counts one more entry at depth and checks the limits on entries and depth. */
static int tar_count(struct tar_ctx *c, uint32_t depth)
{
    if (depth > c->lim->max_depth)
        return clr_error_set(c->err, CLR_E_LIMIT, ELOOP,
                             "archiving '%.256s': '%.512s' is nested more than %" PRIu32
                             " levels deep",
                             c->rel, c->path.s, c->lim->max_depth);
    if (++c->rep->entries > c->lim->max_entries)
        return clr_error_set(c->err, CLR_E_LIMIT, E2BIG,
                             "archiving '%.256s': it has more than the limit of %" PRIu64
                             " entries; archive a smaller directory or raise the limit",
                             c->rel, c->lim->max_entries);
    return 0;
}

static int tar_header(struct tar_ctx *c, const struct stat *st, unsigned int type, uint64_t size,
                      const char *target)
{
    if (!c->a)
        return 0;
    _cleanup_archive_entry_ struct archive_entry *e = archive_entry_new();
    if (!e)
        return clr_error_set(c->err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    archive_entry_set_pathname(e, c->path.s);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, st->st_mode & 0777);
    archive_entry_set_uid(e, st->st_uid);
    archive_entry_set_gid(e, st->st_gid);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    archive_entry_set_size(e, (la_int64_t)size);
    if (target)
        archive_entry_set_symlink(e, target);
    /* ARCHIVE_WARN: a name that is not valid in the locale's charset, stored as raw bytes. */
    if (archive_write_header(c->a, e) < ARCHIVE_WARN)
        return tar_write_failed(c);
    return 0;
}

static int tar_dir(struct tar_ctx *c, int dfd, uint32_t depth);

static int tar_file(struct tar_ctx *c, int dfd, const char *name, struct stat *st,
                    uint32_t depth)
{
    _cleanup_close_ int fd = -1;
    if (c->a) {
        /* Opened without blocking and typed by the descriptor: it may have become a FIFO. */
        fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT || errno == ELOOP || errno == ENXIO) {
                c->rep->skipped++;
                return 0;
            }
            return tar_entry_error(c, errno);
        }
        if (fstat(fd, st) < 0)
            return tar_entry_error(c, errno);
        if (!S_ISREG(st->st_mode)) {
            c->rep->skipped++;
            return 0;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            return tar_entry_error(c, errno);
    }
    if (tar_count(c, depth) < 0)
        return -1;
    uint64_t size = st->st_size > 0 ? (uint64_t)st->st_size : 0;
    if (size > c->lim->max_file_bytes)
        return clr_error_set(c->err, CLR_E_LIMIT, EFBIG,
                             "archiving '%.256s': '%.512s' is %" PRIu64
                             " bytes, more than the limit of %" PRIu64 " bytes per file",
                             c->rel, c->path.s, size, c->lim->max_file_bytes);
    if (size > c->lim->max_total_bytes - c->rep->bytes)
        return clr_error_set(c->err, CLR_E_LIMIT, EFBIG,
                             "archiving '%.256s': it holds more than the limit of %" PRIu64
                             " bytes in total",
                             c->rel, c->lim->max_total_bytes);
    c->rep->bytes += size;
    c->rep->files++;
    if (tar_header(c, st, AE_IFREG, size, NULL) < 0)
        return -1;
    if (!c->a)
        return 0;
    /* Exactly the size in the header: what grew later is cut, what shrank is padded with zeros
     * by libarchive when the entry is finished. */
    uint64_t remaining = size;
    while (remaining > 0) {
        size_t want = remaining < sizeof(c->buf) ? (size_t)remaining : sizeof(c->buf);
        ssize_t n = read_some(fd, c->buf, want);
        if (n < 0)
            return tar_entry_error(c, (int)-n);
        if (n == 0)
            break;
        if (archive_write_data(c->a, c->buf, (size_t)n) < 0)
            return tar_write_failed(c);
        remaining -= (uint64_t)n;
    }
    if (archive_write_finish_entry(c->a) < ARCHIVE_WARN)
        return tar_write_failed(c);
    return 0;
}

/* Adds the entry name in dfd, whose archive name is c->path, and what is below it. */
static int tar_add(struct tar_ctx *c, int dfd, const char *name, uint32_t depth)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) {
            c->rep->skipped++;
            return 0;
        }
        return tar_entry_error(c, errno);
    }
    if (S_ISREG(st.st_mode))
        return tar_file(c, dfd, name, &st, depth);
    if (S_ISDIR(st.st_mode)) {
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            /* Gone, or swapped for a link or a file since the stat: skipped, never followed. */
            if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR) {
                c->rep->skipped++;
                return 0;
            }
            return tar_entry_error(c, errno);
        }
        if (fstat(fd, &st) < 0)
            return tar_entry_error(c, errno);
        if (tar_count(c, depth) < 0)
            return -1;
        c->rep->dirs++;
        if (tar_header(c, &st, AE_IFDIR, 0, NULL) < 0)
            return -1;
        return tar_dir(c, fd, depth + 1);
    }
    if (S_ISLNK(st.st_mode)) {
        ssize_t n = readlinkat(dfd, name, c->target, sizeof(c->target) - 1);
        if (n < 0) {
            if (errno == ENOENT || errno == EINVAL) { /* gone, or no longer a link */
                c->rep->skipped++;
                return 0;
            }
            return tar_entry_error(c, errno);
        }
        c->target[n] = '\0';
        if (tar_count(c, depth) < 0)
            return -1;
        c->rep->symlinks++;
        return tar_header(c, &st, AE_IFLNK, 0, c->target);
    }
    /* FIFOs, sockets, devices: nothing a download should contain. */
    c->rep->skipped++;
    return 0;
}

/* Adds everything in dfd; its entries are at depth. On failure c->path names the culprit. */
static int tar_dir(struct tar_ctx *c, int dfd, uint32_t depth)
{
    char **names;
    size_t n;
    int r = read_names(dfd, c->lim->max_entries, &names, &n);
    if (r == -E2BIG)
        return clr_error_set(c->err, CLR_E_LIMIT, E2BIG,
                             "archiving '%.256s': a directory has more than the limit of %" PRIu64
                             " entries; archive a smaller directory or raise the limit",
                             c->rel, c->lim->max_entries);
    if (r < 0)
        return tar_entry_error(c, -r);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ssize_t old = path_push(&c->path, names[i]);
        if (old < 0) {
            rc = clr_error_set(c->err, CLR_E_LIMIT, ENAMETOOLONG,
                               "archiving '%.256s': a path below '%.512s' is longer than %d "
                               "bytes",
                               c->rel, c->path.s, CLR_FILES_PATH_MAX);
            break;
        }
        rc = tar_add(c, dfd, names[i], depth);
        if (rc == 0)
            path_pop(&c->path, old);
    }
    free_names(names, n);
    return rc;
}

/* One pass over what was asked for: measuring when c->a is NULL, writing otherwise. */
static int tar_walk(struct tar_ctx *c, int root, const norm_path *p)
{
    c->path.len = 0;
    c->path.s[0] = '\0';
    if (p->depth == 0)
        return tar_dir(c, root, 1);
    const char *name;
    _cleanup_close_ int dir = open_parent(root, p, false, &name);
    if (dir < 0)
        return path_error(c->err, -dir, "archiving", c->rel);
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return path_error(c->err, errno, "archiving", c->rel);
    if (S_ISDIR(st.st_mode)) {
        /* Its contents, named relative to it. */
        _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return path_error(c->err, errno, "archiving", c->rel);
        return tar_dir(c, fd, 1);
    }
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return clr_error_set(c->err, CLR_E_INVALID, EINVAL,
                             "archiving '%.512s': it is %s; only files, directories and "
                             "symlinks can be archived",
                             c->rel, mode_phrase(st.st_mode));
    path_push(&c->path, name);
    return tar_add(c, dir, name, 1);
}

int clr_files_create_tar(int root, const char *rel, int out_fd, const clr_files_limits *lim,
                         clr_files_report *report, clr_error *err)
{
    clr_files_report scratch;
    clr_files_report *rep = report ? report : &scratch;
    memset(rep, 0, sizeof(*rep));
    if (!lim)
        lim = &default_limits;
    assert(report || !lim->output_budget);
    norm_path p;
    if (normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "archiving");
    _cleanup_free_ struct tar_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    c->lim = lim;
    c->rep = rep;
    c->rel = rel;
    c->err = err;

    /* Measure first, so that a request over the limits fails before a byte is sent. */
    if (tar_walk(c, root, &p) < 0) {
        snprintf(rep->failed_entry, sizeof(rep->failed_entry), "%s", c->path.s);
        return -1;
    }
    memset(rep, 0, sizeof(*rep));

    _cleanup_archive_write_ struct archive *a = archive_write_new();
    if (!a)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    hole_out_init(&c->out, out_fd, lim->output_budget, &rep->charged);
    /* Blocks of whole HOLE_BLOCKs, so that no zero block of the output straddles two writes
     * (with tar's 10240 one in five would, and be written); as archive_write_open_fd does for
     * a regular file, the last block is not padded: the bytes are the same as before. */
    if (archive_write_set_format_pax(a) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a, 16 * HOLE_BLOCK) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open2(a, c, NULL, tar_out_write, tar_out_close, NULL) != ARCHIVE_OK) {
        c->a = a;
        return tar_write_failed(c);
    }
    c->a = a;
    if (tar_walk(c, root, &p) < 0) {
        snprintf(rep->failed_entry, sizeof(rep->failed_entry), "%s", c->path.s);
        return -1;
    }
    if (archive_write_close(a) != ARCHIVE_OK)
        return tar_write_failed(c);
    return 0;
}
