/* Files, deletion: entries and trees removed without following a link (files_delete.h,
 * files_delete_internal.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "files_delete_internal.h"
#include "files_path_internal.h"

/* Passes over a directory being deleted while the sandbox keeps adding to it. */
#define DELETE_PASSES 3

/* ---- deletion ---------------------------------------------------------------------------- */

static int remove_dir(int parent, const char *name, int depth, const char *rel, clr_error *err);

/* Deletes everything inside the directory fd, which it takes over (one descriptor per level
 * of a deep tree). Links are unlinked like files; only real directories (opened with
 * O_NOFOLLOW | O_DIRECTORY) are descended into. */
int clr_files_remove_contents(int fd, int depth, const char *rel, clr_error *err)
{
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return clr_files_path_error(err, e, "deleting", rel);
    }
    int dfd = dirfd(d);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                return clr_files_path_error(err, errno, "deleting", rel);
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
            return clr_files_path_error(err, errno, "deleting", rel);
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
            return clr_files_path_error(err, errno, "deleting", rel);
        }
        if (clr_files_remove_contents(fd, depth, rel, err) < 0)
            return -1;
        if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return clr_files_path_error(err, errno, "deleting", rel);
    }
    return clr_error_set(err, CLR_E_CONFLICT, ENOTEMPTY,
                         "deleting '%.512s': new files keep appearing in it; stop what writes "
                         "there and try again",
                         rel);
}

int clr_files_delete(int root, const char *rel, bool recursive, clr_error *err)
{
    norm_path p;
    if (clr_files_normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "deleting a file");
    if (p.depth == 0)
        return clr_error_set(err, CLR_E_INVALID, EBUSY,
                             "deleting '%.512s': the workspace root cannot be deleted; delete "
                             "what is inside it",
                             rel);
    const char *name;
    _cleanup_close_ int dir = clr_files_open_parent(root, &p, false, &name);
    if (dir < 0)
        return clr_files_path_error(err, -dir, "deleting", rel);
    if (unlinkat(dir, name, 0) == 0)
        return 0;
    if (errno != EISDIR)
        return clr_files_path_error(err, errno, "deleting", rel);
    if (!recursive) {
        if (unlinkat(dir, name, AT_REMOVEDIR) == 0)
            return 0;
        return clr_files_path_error(err, errno, "deleting", rel);
    }
    return remove_dir(dir, name, 1, rel, err);
}
