/* Files, paths: resolving a caller's path beneath a workspace root (files_path.h,
 * files_path_internal.h).
 *
 * The threat, for every files module: everything below the root descriptor was written by the
 * sandboxed code, which is still running and can rename, replace and re-link entries between
 * any two of our system calls.
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
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "files_path_internal.h"

#define RESOLVE_CONFINED (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
/* Retries of a lookup that the kernel answered with EAGAIN (a rename raced with it). */
#define RESOLVE_RETRIES 16

/* "a FIFO", for messages that tell the caller why a file was refused. */
const char *clr_files_mode_phrase(mode_t mode)
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
int clr_files_path_error(clr_error *err, int e, const char *what, const char *rel)
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

int clr_files_normalize(norm_path *out, const char *rel, size_t len, clr_error *err)
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
    return clr_files_normalize(&p, rel, len, err);
}

int clr_files_check_path(const char *rel, clr_error *err)
{
    return clr_files_check_path_n(rel, rel ? strnlen(rel, CLR_FILES_PATH_MAX + 1) : 0, err);
}

int clr_files_normalize_str(norm_path *out, const char *rel, clr_error *err)
{
    return clr_files_normalize(out, rel, rel ? strnlen(rel, CLR_FILES_PATH_MAX + 1) : 0, err);
}

/* Appends "/name" (or "name" at the start); returns the previous length for pop, or -1 when
 * the result would be longer than CLR_FILES_PATH_MAX. */
ssize_t clr_files_path_push(path_buf *p, const char *name)
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

void clr_files_path_pop(path_buf *p, ssize_t old)
{
    p->len = (size_t)old;
    p->s[p->len] = '\0';
}

/* ---- confined lookups -------------------------------------------------------------------- */

/* openat2() beneath dirfd with no symlink followed anywhere; "" means dirfd itself. Returns a
 * descriptor or -errno. */
int clr_files_open_beneath(int dirfd, const char *path, int flags)
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
int clr_files_open_dir(int dirfd, const char *dir, bool create)
{
    _cleanup_close_ int cur = clr_files_open_beneath(dirfd, "", O_RDONLY | O_DIRECTORY);
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
        int fd = clr_files_open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
        if (fd == -ENOENT && create) {
            if (mkdirat(cur, comp, 0755) == 0) {
                fd = clr_files_open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
                /* The umask must not decide what the sandbox can do with its directory. */
                if (fd >= 0 && (fchown(fd, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0 ||
                                fchmod(fd, 0755) < 0)) {
                    int e = errno;
                    close(fd);
                    return -e;
                }
            } else if (errno == EEXIST) {
                fd = clr_files_open_beneath(cur, comp, O_RDONLY | O_DIRECTORY);
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
int clr_files_open_parent(int root, const norm_path *p, bool create, const char **name)
{
    char parent[CLR_FILES_PATH_MAX + 1];
    size_t n = p->last > 0 ? p->last - 1 : 0;
    memcpy(parent, p->s, n);
    parent[n] = '\0';
    *name = p->s + p->last;
    return clr_files_open_dir(root, parent, create);
}

/* A name no one can guess, so the sandbox cannot prepare something under it. */
int clr_files_random_name(char *buf, size_t len, const char *prefix, clr_error *err)
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
