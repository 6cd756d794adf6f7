/* Files, archiving: a tree of the workspace measured, then written as a pax tar archive
 * through the spool output (files_archive.h). */
#include <archive.h>
#include <archive_entry.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "cleanup_archive.h"
#include "files_io_internal.h"
#include "files_list_internal.h"
#include "files_path_internal.h"


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
    int w = clr_files_hole_out_write(&c->out, buf, n);
    if (w < 0) {
        archive_set_error(a, -w, "%s", strerror(-w));
        return -1;
    }
    return (la_ssize_t)n;
}

static int tar_out_close(struct archive *a, void *data)
{
    struct tar_ctx *c = data;
    int w = clr_files_hole_out_finish(&c->out);
    if (w < 0) {
        archive_set_error(a, -w, "%s", strerror(-w));
        return ARCHIVE_FATAL;
    }
    return ARCHIVE_OK;
}

static int tar_write_failed(struct tar_ctx *c)
{
    if (c->out.over_budget)
        return clr_files_budget_error(c->err, c->lim->output_budget, "archiving", c->rel);
    const char *msg = archive_error_string(c->a);
    int e = archive_errno(c->a);
    return clr_error_set(c->err, CLR_E_INTERNAL, e > 0 ? e : EIO,
                         "archiving '%.512s': writing the archive failed: %s", c->rel,
                         msg ? msg : "unknown error");
}

static int tar_entry_error(struct tar_ctx *c, int e)
{
    clr_files_path_error(c->err, e, "archiving", c->path.s);
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
        ssize_t n = clr_files_read_some(fd, c->buf, want);
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
    int r = clr_files_read_names(dfd, c->lim->max_entries, &names, &n);
    if (r == -E2BIG)
        return clr_error_set(c->err, CLR_E_LIMIT, E2BIG,
                             "archiving '%.256s': a directory has more than the limit of %" PRIu64
                             " entries; archive a smaller directory or raise the limit",
                             c->rel, c->lim->max_entries);
    if (r < 0)
        return tar_entry_error(c, -r);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ssize_t old = clr_files_path_push(&c->path, names[i]);
        if (old < 0) {
            rc = clr_error_set(c->err, CLR_E_LIMIT, ENAMETOOLONG,
                               "archiving '%.256s': a path below '%.512s' is longer than %d "
                               "bytes",
                               c->rel, c->path.s, CLR_FILES_PATH_MAX);
            break;
        }
        rc = tar_add(c, dfd, names[i], depth);
        if (rc == 0)
            clr_files_path_pop(&c->path, old);
    }
    clr_files_free_names(names, n);
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
    _cleanup_close_ int dir = clr_files_open_parent(root, p, false, &name);
    if (dir < 0)
        return clr_files_path_error(c->err, -dir, "archiving", c->rel);
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return clr_files_path_error(c->err, errno, "archiving", c->rel);
    if (S_ISDIR(st.st_mode)) {
        /* Its contents, named relative to it. */
        _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return clr_files_path_error(c->err, errno, "archiving", c->rel);
        return tar_dir(c, fd, 1);
    }
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return clr_error_set(c->err, CLR_E_INVALID, EINVAL,
                             "archiving '%.512s': it is %s; only files, directories and "
                             "symlinks can be archived",
                             c->rel, clr_files_mode_phrase(st.st_mode));
    clr_files_path_push(&c->path, name);
    return tar_add(c, dir, name, 1);
}

int clr_files_create_tar(int root, const char *rel, int out_fd, const clr_files_limits *lim,
                         clr_files_report *report, clr_error *err)
{
    clr_files_report scratch;
    clr_files_report *rep = clr_files_report_begin(report, &scratch, &lim);
    assert(report || !lim->output_budget);
    norm_path p;
    if (clr_files_normalize_str(&p, rel, err) < 0)
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
    clr_files_hole_out_init(&c->out, out_fd, lim->output_budget, &rep->charged);
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
