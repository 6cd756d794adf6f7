/* Repository admission: a client's repository path resolved once, beneath an operator's root,
 * with no symlinks, to a git directory of its own (see repoadmit.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clearing/cleanup.h"
#include "clearing/repoadmit.h"
#include "files_path_internal.h"
#include "internal.h"

/* The answer for every path that does not lead to a repository beneath a root: the same
 * whatever the path is (missing, unreadable, a symlink, outside the roots), naming no path. */
static const char refusal[] = "this repository is not allowed: name a git repository under one "
                              "of the directories the operator listed in repo_roots (the path "
                              "as it is, with no symlink below the root)";

static int refuse(clr_error *err)
{
    return clr_error_set(err, CLR_E_DENIED, 0, "%s", refusal);
}

/* The directory rel beneath dirfd, opened with O_PATH and no symlink followed anywhere: the
 * files modules' confined lookup (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS, O_CLOEXEC | O_NOFOLLOW, retried on EAGAIN). A descriptor the caller
 * closes, or -errno. */
static int open_confined(int dirfd, const char *rel)
{
    return clr_files_open_beneath(dirfd, rel, O_PATH | O_DIRECTORY);
}

/* The part of path below root ("." for root itself), a pointer into path (nothing to free), or
 * NULL when path is not beneath root as written. root has no trailing '/' unless it is "/". */
static const char *below(const char *path, const char *root)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    if (n == 1 && root[0] == '/')
        n = 0;
    else if (strncmp(path, root, n) != 0 || (path[n] != '/' && path[n] != '\0'))
        return NULL;
    const char *rel = path + n;
    while (*rel == '/')
        rel++;
    return *rel ? rel : ".";
}

/* What kind of entry name is in dirfd, without following it: an S_IFMT value, 0 if missing,
 * -1 on another error. */
static int kind_of(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return (int)(st.st_mode & S_IFMT);
    return errno == ENOENT ? 0 : -1;
}

static int refuse_shape(clr_error *err, const char *why)
{
    return clr_error_set(err, CLR_E_DENIED, 0,
                         "this repository is not allowed: %s; clearing takes only a repository "
                         "whose .git is a plain directory holding its own refs and objects",
                         why);
}

/* The git directory of the directory dirfd (its .git, or itself when bare), checked for the
 * shape clr_gitws_open_repo (gitws_repo.c) relies on: a descriptor the caller closes, or -1
 * with err set. */
static int open_gitdir(int dirfd, clr_error *err)
{
    int dotgit = kind_of(dirfd, ".git");
    _cleanup_close_ int fd = -1;
    if (dotgit == S_IFDIR) {
        fd = open_confined(dirfd, ".git");
        if (fd < 0)
            return refuse(err);
    } else if (dotgit == 0) {
        fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "dup: %s", strerror(errno));
    } else if (dotgit > 0) {
        return refuse_shape(err, "its .git is a file or a link (a linked worktree, a submodule "
                                 "or a pointer to another repository)");
    } else {
        return refuse(err);
    }
    if (kind_of(fd, "HEAD") != S_IFREG || kind_of(fd, "objects") != S_IFDIR ||
        kind_of(fd, "refs") != S_IFDIR) {
        /* Not a git directory (or one whose HEAD, objects or refs is a link): for a path that
         * is not a repository at all the answer must not differ from a missing one. */
        int head = kind_of(fd, "HEAD"), objects = kind_of(fd, "objects");
        if (head == S_IFLNK || objects == S_IFLNK || kind_of(fd, "refs") == S_IFLNK)
            return refuse_shape(err, "its HEAD, objects or refs is a symlink");
        return refuse(err);
    }
    if (kind_of(fd, "config") == S_IFLNK)
        return refuse_shape(err, "its config is a symlink");
    if (kind_of(fd, "commondir") != 0)
        return refuse_shape(err, "its git directory names another (a commondir file)");
    if (kind_of(fd, "objects/info/alternates") != 0)
        return refuse_shape(err, "it borrows objects from another repository "
                                 "(objects/info/alternates)");
    return steal_fd(&fd);
}

/* Fills *out (no resources: plain arrays) when root/rel is an admissible repository; every
 * descriptor opened on the way is closed on return. 0, or -1 with err set. */
static int admit_beneath(clr_repo_admitted *out, const char *root, const char *rel,
                         clr_error *err)
{
    _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return refuse(err);
    _cleanup_close_ int dirfd = open_confined(rootfd, rel);
    if (dirfd < 0)
        return refuse(err);
    _cleanup_close_ int gitfd = open_gitdir(dirfd, err);
    if (gitfd < 0)
        return -1;
    struct stat st;
    if (fstat(gitfd, &st) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "fstat: %s", strerror(errno));
    out->id.dev = (uint64_t)st.st_dev;
    out->id.ino = (uint64_t)st.st_ino;
    /* The kernel's name for what was opened: the path libgit2 gets has no symlink in it, and
     * clr_gitws_open_repo() checks that the git directory it reaches is still this one. */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", dirfd);
    ssize_t n = readlink(proc, out->path, sizeof(out->path) - 1);
    if (n <= 0 || (size_t)n >= sizeof(out->path) - 1 || out->path[0] != '/')
        return clr_error_set(err, CLR_E_INTERNAL, n < 0 ? errno : ENAMETOOLONG,
                             "resolving the repository path failed");
    out->path[n] = '\0';
    if (strstr(out->path, " (deleted)"))
        return refuse(err);
    return 0;
}

int clr_repo_admit(clr_repo_admitted *out, const char *const *roots, const char *path,
                   clr_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!roots || !roots[0])
        return clr_error_set(err, CLR_E_DENIED, 0,
                             "repositories are not enabled on this daemon: the operator must "
                             "list the directories they may come from in repo_roots");
    if (!path || path[0] != '/' || strlen(path) >= PATH_MAX)
        return refuse(err);
    for (const char *const *r = roots; *r; r++) {
        char real[PATH_MAX];
        if (!realpath(*r, real))
            continue;
        /* The root as the operator wrote it, or as it resolves (a root may itself be a link
         * the operator made); below it, nothing is followed. */
        const char *rel = below(path, *r);
        if (!rel)
            rel = below(path, real);
        if (!rel)
            continue;
        clr_error e = CLR_ERROR_INIT;
        if (admit_beneath(out, real, rel, &e) == 0)
            return 0;
        if (strcmp(e.message, refusal) != 0) {
            if (err) /* a reachable repository of a refused shape: say which rule */
                *err = e;
            return -1;
        }
    }
    return refuse(err);
}
