/* Files, extraction: a client's tar archive staged in a directory the sandbox cannot enter,
 * then moved into place all at once, or not at all (files_extract.h). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "cleanup_archive.h"
#include "files_delete_internal.h"
#include "files_io_internal.h"
#include "files_list_internal.h"
#include "files_path_internal.h"


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
        return errno == ENOENT ? 0 : clr_files_path_error(c->err, errno, "extracting", raw);
    if (S_ISDIR(st.st_mode))
        return entry_refused(c, raw, "a directory of that name was extracted earlier");
    if (unlinkat(dir, name, 0) < 0)
        return clr_files_path_error(c->err, errno, "extracting", raw);
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
        return clr_files_path_error(c->err, errno, "extracting", raw);
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
        int w = clr_files_pwrite_all(fd, buf, len, (off_t)off);
        if (w < 0)
            return clr_files_path_error(c->err, -w, "extracting", raw);
    }
    /* Holes (sparse entries, or a short final block) become holes in the file. */
    if (ftruncate(fd, (off_t)size) < 0)
        return clr_files_path_error(c->err, errno, "extracting", raw);
    int r = finish_node(fd, archive_entry_perm(e), e, true);
    if (r < 0)
        return clr_files_path_error(c->err, -r, "extracting", raw);
    c->rep->files++;
    return 0;
}

static int extract_dir(struct extract_ctx *c, struct archive_entry *e, int dir, const char *name,
                       const char *raw)
{
    if (mkdirat(dir, name, 0700) < 0 && errno != EEXIST)
        return clr_files_path_error(c->err, errno, "extracting", raw);
    _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            return entry_refused(c, raw, "a file or symlink of that name was extracted earlier");
        return clr_files_path_error(c->err, errno, "extracting", raw);
    }
    /* Its time would change as entries land in it; only the mode is taken. */
    int r = finish_node(fd, archive_entry_perm(e), e, false);
    if (r < 0)
        return clr_files_path_error(c->err, -r, "extracting", raw);
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
        return clr_files_path_error(c->err, errno, "extracting", raw);
    if (fchownat(dir, name, CLR_SANDBOX_UID, CLR_SANDBOX_GID, AT_SYMLINK_NOFOLLOW) < 0)
        return clr_files_path_error(c->err, errno, "extracting", raw);
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
    if (clr_files_normalize_str(&p, raw, c->err) < 0)
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
    _cleanup_close_ int dir = clr_files_open_parent(c->stage, &p, true, &name);
    if (dir < 0) {
        if (dir == -ELOOP)
            return entry_refused(c, raw, "it lies below a symlink extracted earlier");
        if (dir == -ENOTDIR)
            return entry_refused(c, raw, "it lies below a file extracted earlier");
        return clr_files_path_error(c->err, -dir, "extracting", raw);
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
    int r = clr_files_read_names(src, m->lim->max_entries, &names, &n);
    if (r < 0)
        return clr_files_path_error(m->err, -r, "extracting", m->path.s);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = names[i];
        ssize_t old = clr_files_path_push(&m->path, name);
        if (old < 0) {
            rc = clr_error_set(m->err, CLR_E_INVALID, ENAMETOOLONG,
                               "extracting: a path is longer than %d bytes", CLR_FILES_PATH_MAX);
            break;
        }
        struct stat s, d;
        if (fstatat(src, name, &s, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = clr_files_path_error(m->err, errno, "extracting", m->path.s);
        } else if (fstatat(dst, name, &d, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                rc = clr_files_path_error(m->err, errno, "extracting", m->path.s);
            else if (move && renameat2(src, name, dst, name, RENAME_NOREPLACE) < 0)
                rc = errno == EEXIST
                         ? clr_error_set(m->err, CLR_E_CONFLICT, EEXIST,
                                         "extracting: '%.512s' appeared in the workspace while "
                                         "the archive was being moved into place; try again",
                                         m->path.s)
                         : clr_files_path_error(m->err, errno, "extracting", m->path.s);
        } else if (S_ISDIR(s.st_mode) != S_ISDIR(d.st_mode)) {
            rc = clr_error_set(m->err, CLR_E_CONFLICT, EEXIST,
                               "extracting: '%.512s' is %s in the archive but %s in the "
                               "workspace; delete it from the workspace or extract elsewhere",
                               m->path.s, clr_files_mode_phrase(s.st_mode),
                               clr_files_mode_phrase(d.st_mode));
        } else if (S_ISDIR(s.st_mode)) {
            _cleanup_close_ int s2 =
                openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            _cleanup_close_ int d2 =
                openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 || d2 < 0)
                rc = clr_files_path_error(m->err, errno, "extracting", m->path.s);
            else
                rc = merge_tree(m, s2, d2, depth + 1, move);
        } else if (move && renameat(src, name, dst, name) < 0) {
            rc = clr_files_path_error(m->err, errno, "extracting", m->path.s);
        }
        clr_files_path_pop(&m->path, old);
    }
    clr_files_free_names(names, n);
    return rc;
}

/* Checks the whole staged tree against dest, then moves it. */
static int move_staged(int stage, int dest, const clr_files_limits *lim, clr_error *err)
{
    _cleanup_free_ struct merge_ctx *m = calloc(1, sizeof(*m));
    if (!m)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    m->lim = lim;
    m->err = err;
    if (merge_tree(m, stage, dest, 1, false) < 0)
        return -1;
    return merge_tree(m, stage, dest, 1, true);
}

int clr_files_extract_tar(int root, const char *rel_dir, int tar_fd, const clr_files_limits *lim,
                          clr_files_report *report, clr_error *err)
{
    clr_files_report scratch;
    clr_files_report *rep = clr_files_report_begin(report, &scratch, &lim);
    norm_path p;
    if (clr_files_normalize_str(&p, rel_dir, err) < 0)
        return clr_error_prefix(err, "extracting an archive");
    if (p.depth > lim->max_depth)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP,
                             "extracting into '%.512s': the path is %zu levels deep; at most "
                             "%" PRIu32 " are allowed",
                             rel_dir, p.depth, lim->max_depth);
    _cleanup_close_ int dest = clr_files_open_dir(root, p.s, true);
    if (dest < 0)
        return clr_files_path_error(err, -dest, "extracting into", rel_dir);

    /* The staging directory is root's and 0700: the sandbox user can see its name but cannot
     * look inside or change anything below it while we fill it. */
    char stage_name[64];
    if (clr_files_random_name(stage_name, sizeof(stage_name), ".clr-extract-", err) < 0)
        return -1;
    if (mkdirat(dest, stage_name, 0700) < 0)
        return clr_files_path_error(err, errno, "extracting into", rel_dir);
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
    if (rc == 0)
        rc = move_staged(stage, dest, lim, err);

    /* Whatever is left in the staging area (all of it on failure, merged directories' shells
     * on success) goes; the directory itself only if its name is still ours. */
    clr_error cerr = CLR_ERROR_INIT;
    int own = openat(stage, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (own >= 0)
        clr_files_remove_contents(own, 1, rel_dir, &cerr);
    struct stat now;
    if (fstatat(dest, stage_name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == sst.st_ino &&
        now.st_dev == sst.st_dev)
        unlinkat(dest, stage_name, AT_REMOVEDIR);
    return rc;
}

