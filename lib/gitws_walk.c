/* Git workspaces, the walk: a workspace the sandbox wrote, as a tree (gitws_walk.h,
 * gitws_walk_internal.h).
 *
 * Why our own walk instead of a libgit2 index + git_index_add_all: libgit2 would open paths
 * from the workspace root by name, follow a directory swapped for a symlink halfway through,
 * read a FIFO until a writer comes, trust the workspace's .gitignore and .gitattributes, and
 * take the size of a file from one stat and its bytes from another open. The walk below opens
 * every entry relative to its parent's descriptor with O_NOFOLLOW, checks the descriptor it
 * opened, reads at most the size it checked, and builds trees with git_treebuilder directly.
 * Nothing from the workspace is ever interpreted: not hooks, not config, not attributes. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <git2/sys/path.h>

#include "gitws_ignore_internal.h"
#include "gitws_repo_internal.h"
#include "gitws_walk_internal.h"
#include "internal.h"

/* Steps all glob matches of one walk may take together (see gitws_ignore.c): a few seconds of
 * CPU in a release build. */
long clr_gitws_walk_glob_budget = 1000000000L;
/* Files up to this size are read into memory; larger ones stream into the object database
 * (a commit) or are read into memory too (a diff, see in_memory). */
#define SMALL_FILE_BYTES (1u << 20)
/* How often an entry that changes type between lstat and open is looked at again. */
#define TYPE_ATTEMPTS 3
#define AGAIN 1

/* ---- names that must never become tree entries ---- */

/* Byte sequences HFS+ ignores in names (U+200C-200F, U+202A-202E, U+206A-206F, U+FEFF). */
static size_t hfs_ignorable(const unsigned char *s)
{
    if (s[0] == 0xe2 && s[1] == 0x80 &&
        ((s[2] >= 0x8c && s[2] <= 0x8f) || (s[2] >= 0xaa && s[2] <= 0xae)))
        return 3;
    if (s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xaa && s[2] <= 0xaf)
        return 3;
    if (s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf)
        return 3;
    return 0;
}

static bool is_hfs_dotgit(const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    for (const char *want = ".git";; s++) {
        for (size_t n; (n = hfs_ignorable(s)) > 0;)
            s += n;
        if (*want == '\0')
            return *s == '\0';
        if (tolower(*s) != *want++)
            return false;
    }
}

static bool is_ntfs_dotgit(const char *name)
{
    size_t n;
    if (strncasecmp(name, ".git", 4) == 0)
        n = 4;
    else if (strncasecmp(name, "git~1", 5) == 0)
        n = 5;
    else
        return false;
    for (;; n++) {
        if (name[n] == '\0' || name[n] == ':')
            return true;
        if (name[n] != '.' && name[n] != ' ')
            return false;
    }
}

/* ".git" in any spelling some filesystem turns into ".git": committing one would hand hooks and
 * config to whoever checks the branch out there. Never read, never committed. */
static bool is_dotgit(const char *name)
{
    return is_ntfs_dotgit(name) || is_hfs_dotgit(name);
}

/* ---- the workspace walk ---- */

void clr_gitws_skipped_list_clear(skipped_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].path);
    free(l->v);
    *l = (skipped_list){0};
}

typedef struct walk {
    git_repository *repo;
    clr_git_limits lim;
    uint64_t entries, bytes;
    long glob_budget;
    skipped_list skipped;
    clr_git_walk_hook hook;
    void *hook_data;
    /* The object database writes to memory (a diff): large files must not go through
     * git_blob_create_from_stream, whose temporary file lives in the repository's objects/. */
    bool in_memory;
    char *path; /* the entry being looked at, relative to the workspace */
    size_t path_len, path_cap;
    char shown[512];
    clr_error *err;
} walk;

/* Where a workspace directory stands against the base tree. */
typedef struct dir_ctx {
    const git_tree *base;         /* the same directory in the base tree, or NULL */
    const clr_git_ignore *ignore; /* the rules in force here */
    bool ignored;                 /* the directory is ignored: only tracked paths inside count */
    uint32_t depth;
} dir_ctx;

/* The current path for messages: sandbox-chosen bytes go to logs and HTTP answers, so control
 * characters are shown as '?' and the length is bounded. */
static const char *shown_path(walk *w)
{
    size_t i = 0;
    for (; i < w->path_len && i < sizeof(w->shown) - 4; i++) {
        unsigned char c = (unsigned char)w->path[i];
        w->shown[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(w->shown + i, i < w->path_len ? "..." : "");
    return w->shown;
}

static int sys_fail(walk *w, int e, const char *what)
{
    return clr_error_set(w->err, CLR_E_INTERNAL, e, "%s %s in the workspace: %s", what,
                         shown_path(w), strerror(e));
}

static int path_push(walk *w, const char *name)
{
    size_t n = strlen(name), sep = w->path_len > 0;
    if (w->path_len + sep + n + 1 > w->path_cap)
        return clr_error_set(w->err, CLR_E_LIMIT, ENAMETOOLONG,
                             "a path in the workspace is too long (under %s)", shown_path(w));
    if (sep)
        w->path[w->path_len++] = '/';
    memcpy(w->path + w->path_len, name, n + 1);
    w->path_len += n;
    return 0;
}

static void path_pop(walk *w, size_t old_len)
{
    w->path_len = old_len;
    w->path[old_len] = '\0';
}

static int skip(walk *w, const char *kind)
{
    skipped_list *l = &w->skipped;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        clr_git_skipped *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return clr_gitws_oom(w->err);
        l->v = v;
        l->cap = cap;
    }
    char *p = strdup(w->path);
    if (!p)
        return clr_gitws_oom(w->err);
    l->v[l->n++] = (clr_git_skipped){.path = p, .kind = kind};
    return 0;
}

static const char *special_kind(mode_t mode)
{
    if (S_ISFIFO(mode))
        return "fifo";
    if (S_ISSOCK(mode))
        return "socket";
    if (S_ISCHR(mode))
        return "char-device";
    if (S_ISBLK(mode))
        return "block-device";
    return "unknown";
}

/* Errors that mean "this entry is no longer what lstat said": look at it again. */
static bool entry_changed(int e)
{
    return e == ENOENT || e == ELOOP || e == ENOTDIR || e == ENXIO || e == EINVAL;
}

static int insert(walk *w, git_treebuilder *tb, const char *name, const git_oid *id,
                  git_filemode_t mode)
{
    if (git_treebuilder_insert(NULL, tb, name, id, mode) == 0)
        return 0;
    /* libgit2 refuses a few more names than we do (reserved on some filesystem): such an entry
     * is reported, not fatal, or any sandbox could make every commit fail. */
    const git_error *e = git_error_last();
    if (e && e->klass == GIT_ERROR_TREE)
        return skip(w, "invalid-name");
    return clr_gitws_fail(w->err, CLR_E_INTERNAL, "adding %s to a tree", shown_path(w));
}

static ssize_t read_upto(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int blob_from_small_fd(walk *w, int fd, size_t size, git_oid *id)
{
    _cleanup_free_ char *buf = malloc(size ? size : 1);
    if (!buf)
        return clr_gitws_oom(w->err);
    ssize_t n = read_upto(fd, buf, size);
    if (n < 0)
        return sys_fail(w, errno, "reading");
    if (git_blob_create_from_buffer(id, w->repo, buf, (size_t)n) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
    return 0;
}

/* Large files stream into the object database in bounded chunks; at most size bytes (what
 * fstat said, already checked against the limits) are read however much the file grows. */
static int blob_from_large_fd(walk *w, int fd, uint64_t size, git_oid *id)
{
    _cleanup_git_writestream_ git_writestream *s = NULL;
    if (git_blob_create_from_stream(&s, w->repo, NULL) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
    char chunk[65536];
    for (uint64_t left = size; left > 0;) {
        ssize_t n = read_upto(fd, chunk, left < sizeof(chunk) ? (size_t)left : sizeof(chunk));
        if (n < 0)
            return sys_fail(w, errno, "reading");
        if (n == 0)
            break; /* it shrank since fstat: commit what is there */
        if (s->write(s, chunk, (size_t)n) < 0)
            return clr_gitws_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
        left -= (uint64_t)n;
    }
    /* The commit frees the stream, whether it succeeds or not. */
    if (git_blob_create_from_stream_commit(id, steal_pointer(&s)) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
    return 0;
}

/* Sizes are checked from fstat of the open descriptor before a byte is read: a sparse 2 GiB
 * file is refused at once. */
static int charge_bytes(walk *w, uint64_t size)
{
    if (size > w->lim.max_file_bytes)
        return clr_error_set(w->err, CLR_E_LIMIT, EFBIG,
                             "%s is %llu bytes, over the %llu-byte limit for one file: delete "
                             "it, ignore it in the base branch's .gitignore, or raise "
                             "max_file_bytes",
                             shown_path(w), (unsigned long long)size,
                             (unsigned long long)w->lim.max_file_bytes);
    if (size > w->lim.max_total_bytes - w->bytes)
        return clr_error_set(w->err, CLR_E_LIMIT, EFBIG,
                             "the workspace holds more than %llu bytes of files (reached at "
                             "%s): delete build outputs or raise max_total_bytes",
                             (unsigned long long)w->lim.max_total_bytes, shown_path(w));
    w->bytes += size;
    return 0;
}

static int add_file(walk *w, int dfd, const char *name, git_treebuilder *tb)
{
    /* O_NONBLOCK: had it become a FIFO since the lstat, opening must not wait for a writer. */
    _cleanup_close_ int fd =
        openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return entry_changed(errno) ? AGAIN : sys_fail(w, errno, "opening");
    struct stat st;
    if (fstat(fd, &st) < 0)
        return sys_fail(w, errno, "fstat of");
    if (!S_ISREG(st.st_mode))
        return AGAIN;
    uint64_t size = (uint64_t)st.st_size;
    if (charge_bytes(w, size) < 0)
        return -1;
    git_oid id;
    /* size <= max_file_bytes, a size_t on every platform we build for (checked above). */
    int rc = size <= SMALL_FILE_BYTES || w->in_memory
                 ? blob_from_small_fd(w, fd, (size_t)size, &id)
                 : blob_from_large_fd(w, fd, size, &id);
    if (rc < 0)
        return -1;
    git_filemode_t mode = st.st_mode & 0111 ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
    return insert(w, tb, name, &id, mode);
}

/* The target is committed as written, whatever it points to: it is data, never followed. */
static int add_link(walk *w, int dfd, const char *name, git_treebuilder *tb)
{
    /* git fsck rejects a symlinked .gitmodules (CVE-2018-11235): it would make the branch
     * unpushable to any server that checks. */
    if (git_path_is_gitfile(name, strlen(name), GIT_PATH_GITFILE_GITMODULES,
                            GIT_PATH_FS_GENERIC) > 0)
        return skip(w, "gitmodules-symlink");
    char target[PATH_MAX];
    ssize_t n = readlinkat(dfd, name, target, sizeof(target));
    if (n < 0)
        return entry_changed(errno) ? AGAIN : sys_fail(w, errno, "reading the link");
    if ((size_t)n == sizeof(target))
        return clr_error_set(w->err, CLR_E_LIMIT, ENAMETOOLONG,
                             "the symlink %s has a target longer than %d bytes", shown_path(w),
                             PATH_MAX - 1);
    if (charge_bytes(w, (uint64_t)n) < 0)
        return -1;
    git_oid id;
    if (git_blob_create_from_buffer(&id, w->repo, target, (size_t)n) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "storing the link %s", shown_path(w));
    return insert(w, tb, name, &id, GIT_FILEMODE_LINK);
}

static int walk_dir(walk *w, int fd, const dir_ctx *dc, git_oid *tree_id, bool *nonempty);

static int add_dir(walk *w, int dfd, const char *name, const dir_ctx *dc,
                   const git_tree_entry *tracked, bool ignored, git_treebuilder *tb)
{
    /* A submodule is checked out as an empty directory; keep the parent's gitlink rather than
     * dropping the submodule (what the sandbox put inside is not part of this repository). */
    if (tracked && git_tree_entry_filemode(tracked) == GIT_FILEMODE_COMMIT)
        return insert(w, tb, name, git_tree_entry_id(tracked), GIT_FILEMODE_COMMIT);
    if (dc->depth + 1 > w->lim.max_depth)
        return clr_error_set(w->err, CLR_E_LIMIT, ELOOP,
                             "%s is nested deeper than %u directories: flatten it or raise "
                             "max_depth",
                             shown_path(w), w->lim.max_depth);
    _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return entry_changed(errno) ? AGAIN : sys_fail(w, errno, "opening the directory");
    _cleanup_git_(git_tree_free) git_tree *sub = NULL;
    if (tracked && git_tree_entry_type(tracked) == GIT_OBJECT_TREE &&
        git_tree_lookup(&sub, w->repo, git_tree_entry_id(tracked)) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "reading the base tree of %s",
                              shown_path(w));
    dir_ctx child = {
        .base = sub, .ignore = dc->ignore, .ignored = ignored, .depth = dc->depth + 1};
    git_oid id;
    bool nonempty = false;
    if (walk_dir(w, steal_fd(&fd), &child, &id, &nonempty) < 0)
        return -1;
    return nonempty ? insert(w, tb, name, &id, GIT_FILEMODE_TREE) : 0;
}

/* Does a base-tree rule (or an ignored parent) match the current path? -1: budget exhausted. */
static int rule_says_ignored(walk *w, const dir_ctx *dc, bool is_dir)
{
    if (dc->ignored)
        return 1;
    int r = clr_gitws_ignore_check(dc->ignore, w->path, is_dir, &w->glob_budget);
    if (r < 0)
        return clr_error_set(w->err, CLR_E_LIMIT, 0,
                             "the base branch's .gitignore patterns are too costly to evaluate "
                             "(at %s): simplify them",
                             shown_path(w));
    return r;
}

/* One attempt at an entry: AGAIN when it changed type between the lstat and the open. */
static int try_entry(walk *w, int dfd, const char *name, const dir_ctx *dc,
                     const git_tree_entry *tracked, git_treebuilder *tb)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : sys_fail(w, errno, "lstat of"); /* gone: nothing to add */
    int ignored = rule_says_ignored(w, dc, S_ISDIR(st.st_mode));
    if (ignored < 0)
        return -1;
    /* Ignore rules only keep untracked paths out; a tracked file stays tracked. */
    if (ignored && !tracked)
        return 0;
    if (w->hook)
        w->hook(dfd, name, w->path, w->hook_data);
    if (S_ISREG(st.st_mode))
        return add_file(w, dfd, name, tb);
    if (S_ISLNK(st.st_mode))
        return add_link(w, dfd, name, tb);
    if (S_ISDIR(st.st_mode))
        return add_dir(w, dfd, name, dc, tracked, ignored, tb);
    return skip(w, special_kind(st.st_mode));
}

static int walk_entry(walk *w, int dfd, const char *name, const dir_ctx *dc,
                      git_treebuilder *tb)
{
    size_t old_len = w->path_len;
    if (path_push(w, name) < 0)
        return -1;
    if (++w->entries > w->lim.max_files) {
        return clr_error_set(w->err, CLR_E_LIMIT, 0,
                             "the workspace has more than %llu entries (reached at %s): delete "
                             "build outputs or raise max_files",
                             (unsigned long long)w->lim.max_files, shown_path(w));
    }
    int rc = AGAIN;
    if (is_dotgit(name)) {
        rc = skip(w, ".git");
    } else {
        const git_tree_entry *tracked = dc->base ? git_tree_entry_byname(dc->base, name) : NULL;
        for (int i = 0; i < TYPE_ATTEMPTS && rc == AGAIN; i++)
            rc = try_entry(w, dfd, name, dc, tracked, tb);
        if (rc == AGAIN)
            rc = skip(w, "unstable");
    }
    path_pop(w, old_len);
    return rc;
}

/* Rules come from the base tree's blob, never from the workspace file of the same name, which
 * the sandbox may have rewritten to smuggle in (or hide) anything. */
static int load_ignore(walk *w, const dir_ctx *dc, clr_git_ignore **out)
{
    *out = NULL;
    const git_tree_entry *e = dc->base ? git_tree_entry_byname(dc->base, ".gitignore") : NULL;
    if (dc->ignored || !e || git_tree_entry_type(e) != GIT_OBJECT_BLOB ||
        git_tree_entry_filemode(e) == GIT_FILEMODE_LINK)
        return 0;
    _cleanup_git_(git_blob_free) git_blob *blob = NULL;
    if (git_blob_lookup(&blob, w->repo, git_tree_entry_id(e)) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "reading the base .gitignore of %s",
                              w->path_len ? shown_path(w) : "the top directory");
    git_object_size_t size = git_blob_rawsize(blob);
    return clr_git_ignore_parse(out, dc->ignore, w->path, git_blob_rawcontent(blob),
                                size > IGNORE_MAX_BYTES ? IGNORE_MAX_BYTES : (size_t)size,
                                w->err);
}

/* Builds the tree of the directory open as fd (which it takes over). *nonempty: whether the
 * tree has entries; git has no empty directories, so an empty one is dropped by the caller. */
static int walk_dir(walk *w, int fd, const dir_ctx *dc, git_oid *tree_id, bool *nonempty)
{
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return sys_fail(w, e, "listing");
    }
    _cleanup_ignore_ clr_git_ignore *own = NULL;
    if (load_ignore(w, dc, &own) < 0)
        return -1;
    dir_ctx here = *dc;
    if (own)
        here.ignore = own;
    _cleanup_git_(git_treebuilder_free) git_treebuilder *tb = NULL;
    if (git_treebuilder_new(&tb, w->repo, NULL) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "starting a tree");
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e && errno)
            return sys_fail(w, errno, "listing");
        if (!e)
            break;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (walk_entry(w, dirfd(d), e->d_name, &here, tb) < 0)
            return -1;
    }
    *nonempty = git_treebuilder_entrycount(tb) > 0;
    if (git_treebuilder_write(tree_id, tb) < 0)
        return clr_gitws_fail(w->err, CLR_E_INTERNAL, "writing the tree of %s",
                              w->path_len ? shown_path(w) : "the workspace");
    return 0;
}

static int resolve_limits(clr_git_limits *out, const clr_git_limits *in, clr_error *err)
{
    static const clr_git_limits defaults = CLR_GIT_LIMITS_INIT;
    *out = defaults;
    if (!in)
        return 0;
    if (in->max_file_bytes)
        out->max_file_bytes = in->max_file_bytes;
    if (in->max_total_bytes)
        out->max_total_bytes = in->max_total_bytes;
    if (in->max_files)
        out->max_files = in->max_files;
    if (in->max_depth)
        out->max_depth = in->max_depth;
    if (out->max_depth > DEPTH_CEILING)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "max_depth %u is over the ceiling of %u",
                             out->max_depth, DEPTH_CEILING);
    return 0;
}

int clr_gitws_open_workspace(const char *dir, clr_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, errno == ENOENT ? CLR_E_NOT_FOUND : CLR_E_INVALID, errno,
                             "cannot open the workspace %s: %s", dir, strerror(errno));
    return fd;
}

/* The tree of the whole workspace, and what was skipped (the caller clears *skipped). */
int clr_gitws_workspace_tree(git_oid *tree_id, skipped_list *skipped, const walk_request *rq,
                          clr_error *err)
{
    walk w = {.repo = rq->repo, .glob_budget = clr_gitws_walk_glob_budget, .hook = rq->hook,
              .hook_data = rq->hook_data, .in_memory = rq->in_memory, .err = err};
    if (resolve_limits(&w.lim, rq->limits, err) < 0)
        return -1;
    /* Room for max_depth names of NAME_MAX bytes and their separators. */
    w.path_cap = ((size_t)w.lim.max_depth + 2) * (NAME_MAX + 1);
    _cleanup_free_ char *path = calloc(1, w.path_cap);
    if (!path)
        return clr_gitws_oom(err);
    w.path = path;
    int fd = clr_gitws_open_workspace(rq->workspace_dir, err);
    if (fd < 0)
        return -1;
    dir_ctx top = {.base = rq->base};
    bool nonempty;
    int rc = walk_dir(&w, fd, &top, tree_id, &nonempty);
    if (rc < 0)
        clr_gitws_skipped_list_clear(&w.skipped);
    *skipped = w.skipped;
    return rc;
}
