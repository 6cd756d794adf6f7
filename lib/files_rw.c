/* Files, single files: written whole through a temporary file and rename, read whole with
 * the type checked on the descriptor that is read (files_rw.h). */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "files_io_internal.h"
#include "files_path_internal.h"


/* ---- single files ------------------------------------------------------------------------ */

/* Copies the upload into fd, refusing more than max bytes. */
static int fill_file(int fd, int src_fd, const void *data, size_t len, uint64_t max,
                     const char *rel, clr_error *err)
{
    if (src_fd < 0) {
        int w = clr_files_write_all(fd, data, len);
        return w < 0 ? clr_files_path_error(err, -w, "writing", rel) : 0;
    }
    _cleanup_free_ char *buf = malloc(COPY_BUF);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    uint64_t total = 0;
    for (;;) {
        ssize_t n = clr_files_read_some(src_fd, buf, COPY_BUF);
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
        int w = clr_files_write_all(fd, buf, (size_t)n);
        if (w < 0)
            return clr_files_path_error(err, -w, "writing", rel);
    }
}

int clr_files_write(int root, const char *rel, int src_fd, const void *data, size_t len,
                    uint32_t mode, const clr_files_limits *lim, clr_error *err)
{
    assert(src_fd >= 0 || data || len == 0);
    if (!lim)
        lim = &clr_files_default_limits;
    norm_path p;
    if (clr_files_normalize_str(&p, rel, err) < 0)
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
    _cleanup_close_ int dir = clr_files_open_parent(root, &p, true, &name);
    if (dir < 0)
        return clr_files_path_error(err, -dir, "writing", rel);
    /* Checked before the upload is read so the caller learns early; rename() checks again. */
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return clr_files_path_error(err, EISDIR, "writing", rel);

    char tmp[64];
    if (clr_files_random_name(tmp, sizeof(tmp), ".clr-upload-", err) < 0)
        return -1;
    _cleanup_close_ int fd =
        openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return clr_files_path_error(err, errno, "writing", rel);
    int rc = fill_file(fd, src_fd, data, len, lim->max_file_bytes, rel, err);
    /* chown before chmod: chown would clear set-id bits, and we set none anyway. */
    if (rc == 0 && (fchown(fd, CLR_SANDBOX_UID, CLR_SANDBOX_GID) < 0 || fchmod(fd, mode & 0777) < 0))
        rc = clr_files_path_error(err, errno, "writing", rel);
    /* rename() replaces a file or a symlink at name (the link itself, never its target) and
     * refuses to replace a directory. */
    if (rc == 0 && renameat(dir, tmp, dir, name) < 0)
        rc = clr_files_path_error(err, errno, "writing", rel);
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
    clr_files_report *rep = clr_files_report_begin(report, &scratch, &lim);
    assert(report || !lim->output_budget);
    uint64_t max_bytes = lim->max_file_bytes;
    uint64_t *size_out = &rep->bytes;
    norm_path p;
    if (clr_files_normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "reading a file");
    if (p.depth == 0)
        return clr_error_set(err, CLR_E_INVALID, EISDIR,
                             "reading '%.512s': that is the workspace root, a directory; give a "
                             "file path",
                             rel);
    /* Look before opening for real: an O_PATH descriptor has no side effects on any file type
     * (opening a socket fails, a device could act), and with O_NOFOLLOW it shows a final
     * symlink as what it is. */
    _cleanup_close_ int probe = clr_files_open_beneath(root, p.s, O_PATH);
    if (probe < 0)
        return clr_files_path_error(err, -probe, "reading", rel);
    struct stat st;
    if (fstat(probe, &st) < 0)
        return clr_files_path_error(err, errno, "reading", rel);
    if (!S_ISREG(st.st_mode))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "reading '%.512s': it is %s, not a regular file%s", rel,
                             clr_files_mode_phrase(st.st_mode),
                             S_ISLNK(st.st_mode) ? " (symlinks are never followed)" : "");
    /* The entry may have been swapped since: O_NONBLOCK keeps a FIFO from blocking the open,
     * and the type is checked again on the descriptor we actually read. */
    _cleanup_close_ int fd = clr_files_open_beneath(root, p.s, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return clr_files_path_error(err, -fd, "reading", rel);
    if (fstat(fd, &st) < 0)
        return clr_files_path_error(err, errno, "reading", rel);
    if (!S_ISREG(st.st_mode))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "reading '%.512s': it is %s, not a regular file", rel,
                             clr_files_mode_phrase(st.st_mode));
    if ((uint64_t)st.st_size > max_bytes)
        return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                             "reading '%.512s': the file is %lld bytes, more than the limit of "
                             "%" PRIu64 "; read a smaller file or raise the limit",
                             rel, (long long)st.st_size, max_bytes);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return clr_files_path_error(err, errno, "reading", rel);

    _cleanup_free_ char *buf = malloc(COPY_BUF);
    if (!buf)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    hole_out out;
    clr_files_hole_out_init(&out, out_fd, lim->output_budget, &rep->charged);
    /* What the file held when opened: if the sandbox keeps appending, we stop at that size. */
    uint64_t remaining = (uint64_t)st.st_size, copied = 0;
    while (remaining > 0) {
        size_t want = remaining < COPY_BUF ? (size_t)remaining : COPY_BUF;
        ssize_t n = clr_files_read_some(fd, buf, want);
        if (n < 0)
            return clr_files_path_error(err, (int)-n, "reading", rel);
        if (n == 0)
            break;
        int w = clr_files_hole_out_write(&out, buf, (size_t)n);
        if (w < 0 && out.over_budget)
            return clr_files_budget_error(err, lim->output_budget, "reading", rel);
        if (w < 0)
            return clr_error_set(err, CLR_E_INTERNAL, -w,
                                 "reading '%.512s': writing to the output failed: %s", rel,
                                 strerror(-w));
        copied += (uint64_t)n;
        remaining -= (uint64_t)n;
        *size_out = copied;
    }
    int w = clr_files_hole_out_finish(&out);
    if (w < 0)
        return clr_error_set(err, CLR_E_INTERNAL, -w,
                             "reading '%.512s': writing to the output failed: %s", rel,
                             strerror(-w));
    return 0;
}

