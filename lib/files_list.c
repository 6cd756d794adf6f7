/* Files, metadata: entries described as lstat(2) sees them, directories listed sorted
 * (files_list.h, files_list_internal.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "files_list_internal.h"
#include "files_path_internal.h"

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

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void clr_files_free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Reads the names in dfd except "." and "..", sorted; -E2BIG when there are more than max.
 * *out is an array of *n malloc'd strings (free with free_names). */
int clr_files_read_names(int dfd, size_t max, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    /* A descriptor of our own: the caller's keeps its offset. "." is never a symlink. */
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    _cleanup_closedir_ DIR *d = fdopendir(fd);
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
        clr_files_free_names(v, count);
        return rc;
    }
    if (count > 1)
        qsort(v, count, sizeof(*v), cmp_names);
    *out = v;
    *n = count;
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
    if (clr_files_normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "describing a file");
    _cleanup_free_ clr_file_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    struct stat st;
    int r;
    if (p.depth == 0) {
        if (fstat(root, &st) < 0)
            return clr_files_path_error(err, errno, "describing", rel);
        r = entry_fill(e, root, ".", ".", &st);
    } else {
        const char *name;
        _cleanup_close_ int dir = clr_files_open_parent(root, &p, false, &name);
        if (dir < 0)
            return clr_files_path_error(err, -dir, "describing", rel);
        if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return clr_files_path_error(err, errno, "describing", rel);
        r = entry_fill(e, dir, name, name, &st);
    }
    if (r < 0)
        return clr_files_path_error(err, -r, "describing", rel);
    *out = steal_pointer(&e);
    return 0;
}

int clr_files_list(clr_file_entry **out, size_t *n, int root, const char *rel,
                   size_t max_entries, clr_error *err)
{
    *out = NULL;
    *n = 0;
    norm_path p;
    if (clr_files_normalize_str(&p, rel, err) < 0)
        return clr_error_prefix(err, "listing a directory");
    _cleanup_close_ int dir = clr_files_open_dir(root, p.s, false);
    if (dir < 0)
        return clr_files_path_error(err, -dir, "listing", rel);
    char **names = NULL;
    size_t count = 0;
    int r = clr_files_read_names(dir, max_entries, &names, &count);
    if (r == -E2BIG)
        return clr_error_set(err, CLR_E_LIMIT, E2BIG,
                             "listing '%.512s': the directory has more than %zu entries; list a "
                             "smaller directory or raise the limit",
                             rel, max_entries);
    if (r < 0)
        return clr_files_path_error(err, -r, "listing", rel);
    clr_file_entry *v = count ? calloc(count, sizeof(*v)) : NULL;
    if (count && !v) {
        clr_files_free_names(names, count);
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
    clr_files_free_names(names, count);
    if (r < 0) {
        clr_files_entries_free(v, m);
        return clr_files_path_error(err, -r, "listing", rel);
    }
    if (m == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = m;
    return 0;
}

