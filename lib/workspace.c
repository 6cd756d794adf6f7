/* Workspaces: a per-sandbox tmpfs on the host, bind-mounted at /workspace.
 *
 * A tmpfs gives a hard bound on bytes and inodes enforced by the host kernel, costs no mkfs, and
 * lets the host (files API, git commit) read the workspace directly. It is mounted nosuid and
 * nodev, so nothing the sandbox writes there can become a setuid binary or a device on the host.
 *
 * Copy-in walks the source with openat() and O_NOFOLLOW: symlinks are copied as symlinks and
 * never followed, special files are skipped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clr-config.h"
#include "internal.h"

#define COPY_MAX_DEPTH 64

const char *clr_state_dir(const char *explicit_dir)
{
    if (explicit_dir && *explicit_dir)
        return explicit_dir;
    const char *e = getenv("CLEARING_STATE_DIR");
    if (e && *e)
        return e;
    return CLR_STATE_DIR;
}

int clr_workspace_path(char *out, size_t len, const char *state_dir, const char *id)
{
    int n = snprintf(out, len, "%s/workspaces/%s", clr_state_dir(state_dir), id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    if (strlen(path) >= sizeof(buf))
        return -1;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int copy_file(int sdir, int ddir, const char *name, const struct stat *st, clr_error *err)
{
    _cleanup_close_ int in = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return clr_error_set(err, CLR_E_INVALID, errno, "cannot open %s: %s", name,
                             strerror(errno));
    _cleanup_close_ int out =
        openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st->st_mode & 0777);
    if (out < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot create %s in workspace: %s",
                             name, strerror(errno));
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "reading %s: %s", name,
                                 strerror(errno));
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                if (errno == ENOSPC)
                    return clr_error_set(err, CLR_E_LIMIT, ENOSPC,
                                         "the directory does not fit in the workspace: raise "
                                         "the workspace size limit");
                return clr_error_set(err, CLR_E_INTERNAL, errno, "writing %s: %s", name,
                                     strerror(errno));
            }
            off += w;
        }
    }
    fchmod(out, st->st_mode & 0777);
    if (fchown(out, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s: %s", name, strerror(errno));
    return 0;
}

static int copy_tree(int sdir, int ddir, int depth, clr_error *err)
{
    if (depth > COPY_MAX_DEPTH)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP, "directory nesting deeper than %d",
                             COPY_MAX_DEPTH);
    int dup_fd = dup(sdir);
    if (dup_fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "dup: %s", strerror(errno));
    _cleanup_closedir_ DIR *d = fdopendir(dup_fd);
    if (!d) {
        int e = errno;
        close(dup_fd);
        return clr_error_set(err, CLR_E_INTERNAL, e, "fdopendir: %s", strerror(e));
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            rc = copy_file(sdir, ddir, name, &st, err);
        } else if (S_ISDIR(st.st_mode)) {
            if (mkdirat(ddir, name, 0755) < 0) {
                rc = clr_error_set(err, errno == ENOSPC ? CLR_E_LIMIT : CLR_E_INTERNAL, errno,
                                   "mkdir %s in workspace: %s", name, strerror(errno));
                break;
            }
            _cleanup_close_ int s2 =
                openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            _cleanup_close_ int d2 =
                openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 || d2 < 0) {
                rc = clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", name,
                                   strerror(errno));
                break;
            }
            fchmod(d2, st.st_mode & 0777);
            if (fchown(d2, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0) {
                rc = clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s: %s", name,
                                   strerror(errno));
                break;
            }
            rc = copy_tree(s2, d2, depth + 1, err);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlinkat(sdir, name, target, sizeof(target) - 1);
            if (n < 0)
                continue;
            target[n] = '\0';
            if (symlinkat(target, ddir, name) < 0 ||
                fchownat(ddir, name, CLR_SANDBOX_UID, CLR_SANDBOX_GID, AT_SYMLINK_NOFOLLOW) < 0)
                rc = clr_error_set(err, CLR_E_INTERNAL, errno, "symlink %s: %s", name,
                                   strerror(errno));
        }
        /* FIFOs, sockets and devices are not copied. */
    }
    return rc;
}

int clr_workspace_create(const char *state_dir, const char *id, const clr_limits *limits,
                         const char *copy_from, clr_error *err)
{
    char path[4096];
    if (clr_workspace_path(path, sizeof(path), state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG, "state directory path too long");
    if (mkdir_p(path, 0700) < 0)
        return clr_error_set(err, CLR_E_UNAVAILABLE, errno,
                             "cannot create workspace directory %s: %s (is the state directory "
                             "writable? set it with CLEARING_STATE_DIR)",
                             path, strerror(errno));
    char opts[256];
    snprintf(opts, sizeof(opts), "size=%" PRIu64 ",nr_inodes=%" PRIu64 ",mode=0755,uid=%d,gid=%d",
             limits->workspace_bytes, limits->workspace_inodes, CLR_SANDBOX_UID, CLR_SANDBOX_GID);
    if (mount("clearing-workspace", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        int e = errno;
        rmdir(path);
        return clr_error_set(err, CLR_E_UNAVAILABLE, e,
                             "cannot mount the size-limited workspace at %s: %s (clearing must "
                             "run as root to bound the workspace)",
                             path, strerror(e));
    }
    if (copy_from) {
        _cleanup_close_ int s = open(copy_from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int d = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s < 0) {
            int e = errno;
            clr_workspace_remove(state_dir, id, NULL);
            return clr_error_set(err, CLR_E_INVALID, e, "workspace source %s: %s", copy_from,
                                 strerror(e));
        }
        if (d < 0 || copy_tree(s, d, 0, err) < 0) {
            if (d < 0)
                clr_error_set(err, CLR_E_INTERNAL, errno, "open workspace: %s", strerror(errno));
            clr_workspace_remove(state_dir, id, NULL);
            return clr_error_prefix(err, "copying %s into the workspace", copy_from);
        }
    }
    return 0;
}

int clr_workspace_remove(const char *state_dir, const char *id, clr_error *err)
{
    char path[4096];
    if (clr_workspace_path(path, sizeof(path), state_dir, id) < 0)
        return clr_error_set(err, CLR_E_INVALID, ENAMETOOLONG, "state directory path too long");
    /* Lazy unmount: a container that is still being torn down may hold it for a moment. */
    if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot unmount workspace %s: %s", path,
                             strerror(errno));
    if (rmdir(path) < 0 && errno != ENOENT)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot remove workspace %s: %s", path,
                             strerror(errno));
    return 0;
}
