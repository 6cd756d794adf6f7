/* Files, I/O: moving bytes between descriptors for the files modules, and the spool output
 * that keeps holes and charges a budget (files_io.h, files_io_internal.h). */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "files_io_internal.h"

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
ssize_t clr_files_read_some(int fd, void *buf, size_t n)
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

int clr_files_write_all(int fd, const void *buf, size_t n)
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

int clr_files_pwrite_all(int fd, const void *buf, size_t n, off_t off)
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

void clr_files_hole_out_init(hole_out *o, int fd, clr_files_budget *budget, uint64_t *charged)
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
    return r < 0 ? r : clr_files_write_all(o->fd, buf, n);
}

/* Writes n bytes at the output's offset; 0 or -errno (-EDQUOT: the budget is spent). */
int clr_files_hole_out_write(hole_out *o, const char *buf, size_t n)
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
int clr_files_hole_out_finish(hole_out *o)
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
int clr_files_budget_error(clr_error *err, const clr_files_budget *b, const char *what,
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

