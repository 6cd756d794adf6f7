/* Snapshots on disk: the directory, its manifest with the sha256 of every file, the check before
 * a restore (include/clearing/snapshot.h). Pure file work: the engine's checkpoint is taken and
 * started by the caller (lib/service/snapshots.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "clearing/cleanup.h"
#include "clearing/cleanup_json.h"
#include "clearing/snapshot.h"
#include "files_path_internal.h"
#include "internal.h"

#define SNAP_MAX_DEPTH 64
#define MANIFEST "manifest.json"
#define MANIFEST_MAX (64 * 1024 * 1024) /* bytes: what a restore reads */

bool clr_snapshot_id_valid(const char *id)
{
    if (!id || strncmp(id, "snap-", 5) != 0 || strlen(id) != 21)
        return false;
    return strspn(id + 5, "0123456789abcdef") == 16;
}

int clr_snapshot_id_new(char *out, size_t len, clr_error *err)
{
    unsigned char r[8];
    if (len < 22)
        return clr_error_set(err, CLR_E_INTERNAL, 0, "snapshot id buffer too small");
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return clr_error_set(err, CLR_E_INTERNAL, errno, "getrandom: %s", strerror(errno));
    snprintf(out, len, "snap-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
    return 0;
}

int clr_snapshot_path(char *out, size_t len, const char *state_dir, const char *id)
{
    if (!clr_snapshot_id_valid(id))
        return -1;
    int n = snprintf(out, len, "%s/snapshots/%s", clr_state_dir(state_dir), id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int clr_snapshot_workspace_path(char *out, size_t len, const char *dir)
{
    int n = snprintf(out, len, "%s/workspace", dir);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Reads in to the end or to max bytes, whichever comes first, writing to out (if >= 0) and
 * hashing: the hex sha256 to sha (65 bytes), the byte count to *size. */
static int copy_hash(int in, int out, uint64_t max, char *sha, uint64_t *size, const char *name,
                     clr_error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return clr_error_set(err, CLR_E_INTERNAL, 0, "sha256 failed");
    }
    char buf[65536];
    uint64_t total = 0;
    int rc = 0;
    while (total < max) {
        ssize_t n = read(in, buf, max - total < sizeof(buf) ? (size_t)(max - total) : sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = clr_error_set(err, CLR_E_INTERNAL, errno, "reading %s: %s", name,
                               strerror(errno));
            break;
        }
        if (n == 0)
            break;
        total += (uint64_t)n;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        for (ssize_t off = 0; out >= 0 && off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = clr_error_set(err, errno == ENOSPC ? CLR_E_NO_SPACE : CLR_E_INTERNAL, errno,
                                   "writing %s: %s", name, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc < 0)
            break;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (rc == 0 && !EVP_DigestFinal_ex(ctx, d, &dl))
        rc = clr_error_set(err, CLR_E_INTERNAL, 0, "sha256 failed");
    EVP_MD_CTX_free(ctx);
    if (rc == 0) {
        hex(d, dl, sha);
        *size = total;
    }
    return rc;
}

static int not_listed(const char *rel, clr_error *err);

/* One walk for writing (ddir >= 0: copy there and list in files) and for checking (ddir < 0:
 * compare with files, an object path -> entry, counting matches in *seen). */
struct walk {
    json_t *files;
    uint64_t size;
    uint64_t max_bytes; /* writing: what the snapshot may take in all */
    size_t entries;     /* writing: entries listed so far (CLR_SNAPSHOT_MAX_ENTRIES) */
    size_t seen;
    bool check;
};

/* The file the walk stat'ed, opened without blocking and without following a link, and checked to
 * be that same regular file: the sandbox runs on while its workspace is copied, and could swap a
 * file for a FIFO (an open that never returns) or a link between the stat and the open. */
static int open_same_file(int dir, const char *name, const char *rel, const struct stat *st,
                          bool check, struct stat *now, clr_error *err)
{
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, check ? CLR_E_CONFLICT : CLR_E_INTERNAL, errno,
                             "cannot open %s: %s", rel, strerror(errno));
    if (fstat(fd, now) < 0 || !S_ISREG(now->st_mode) || now->st_ino != st->st_ino ||
        now->st_dev != st->st_dev) {
        close(fd);
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "%s changed while the snapshot was taken (it is no longer the "
                             "regular file it was): try again",
                             rel);
    }
    return fd;
}

static int walk_file(struct walk *w, int sdir, int ddir, const char *name, const char *rel,
                     const struct stat *st, clr_error *err)
{
    struct stat now;
    _cleanup_close_ int in = open_same_file(sdir, name, rel, st, w->check, &now, err);
    if (in < 0)
        return -1;
    /* Writing: no more than the file held when it was opened (a file the sandbox keeps growing
     * is cut there), and nothing past the budget (a sparse or hard-linked file counts in full,
     * as it is written out in full). */
    uint64_t max = UINT64_MAX;
    if (!w->check) {
        max = (uint64_t)now.st_size;
        if (max > w->max_bytes || w->size > w->max_bytes - max)
            return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                                 "%s (%llu bytes) does not fit the snapshots' disk budget (%llu "
                                 "bytes left): delete snapshots you no longer need, or files "
                                 "of the workspace",
                                 rel, (unsigned long long)max,
                                 (unsigned long long)(w->max_bytes - w->size));
    }
    _cleanup_close_ int out = -1;
    if (ddir >= 0) {
        out = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot create %s: %s", rel,
                                 strerror(errno));
    }
    char sha[65];
    uint64_t n = 0;
    if (copy_hash(in, out, max, sha, &n, rel, err) < 0)
        return -1;
    if (out >= 0 && fsync(out) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "fsync %s: %s", rel, strerror(errno));
    w->size += n;
    if (!w->check)
        return json_object_set_new(w->files, rel,
                                   json_pack("{s:s, s:i, s:I, s:s}", "type", "file", "mode",
                                             (int)(st->st_mode & 07777), "size", (json_int_t)n,
                                             "sha256", sha)) < 0
                   ? not_listed(rel, err)
                   : 0;
    json_t *e = json_object_get(w->files, rel);
    const char *want = json_string_value(json_object_get(e, "sha256"));
    if ((json_int_t)n != json_integer_value(json_object_get(e, "size")))
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "%s has %llu bytes, its manifest says %lld: the snapshot is "
                             "truncated or corrupt; delete it",
                             rel, (unsigned long long)n,
                             (long long)json_integer_value(json_object_get(e, "size")));
    if (!want || strcmp(want, sha) != 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "%s's sha256 differs from its manifest: the snapshot is corrupt; "
                             "delete it",
                             rel);
    return 0;
}

static int walk_dir(struct walk *w, int sdir, int ddir, const char *rel, int depth,
                    clr_error *err);

static int walk_entry(struct walk *w, int sdir, int ddir, const char *name, const char *rel,
                      int depth, clr_error *err)
{
    struct stat st;
    if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "stat %s: %s", rel, strerror(errno));
    const char *type = S_ISREG(st.st_mode)   ? "file"
                       : S_ISDIR(st.st_mode) ? "dir"
                       : S_ISLNK(st.st_mode) ? "link"
                                             : NULL;
    if (!type && !w->check)
        return 0; /* FIFOs, sockets, devices: not copied, as the workspace copy-in does */
    if (!w->check && ++w->entries > CLR_SNAPSHOT_MAX_ENTRIES)
        return clr_error_set(err, CLR_E_LIMIT, 0,
                             "the workspace holds more than %d files and directories: a "
                             "snapshot takes at most that many",
                             CLR_SNAPSHOT_MAX_ENTRIES);
    if (w->check) {
        json_t *e = json_object_get(w->files, rel);
        const char *t = json_string_value(json_object_get(e, "type"));
        if (!e || !type || !t || strcmp(t, type) != 0)
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "%s is not in the snapshot's manifest (or not as this kind of "
                                 "file): the snapshot was altered; delete it",
                                 rel);
        w->seen++;
    }
    if (S_ISREG(st.st_mode))
        return walk_file(w, sdir, ddir, name, rel, &st, err);
    if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = readlinkat(sdir, name, target, sizeof(target) - 1);
        if (n < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "readlink %s: %s", rel,
                                 strerror(errno));
        target[n] = '\0';
        if (w->check) {
            const char *want =
                json_string_value(json_object_get(json_object_get(w->files, rel), "target"));
            return want && strcmp(want, target) == 0
                       ? 0
                       : clr_error_set(err, CLR_E_CONFLICT, 0,
                                       "%s points elsewhere than its manifest says: the "
                                       "snapshot is corrupt; delete it",
                                       rel);
        }
        if (ddir >= 0 && symlinkat(target, ddir, name) < 0)
            return clr_error_set(err, CLR_E_INTERNAL, errno, "symlink %s: %s", rel,
                                 strerror(errno));
        return json_object_set_new(w->files, rel,
                                   json_pack("{s:s, s:s}", "type", "link", "target", target)) < 0
                   ? not_listed(rel, err)
                   : 0;
    }
    if (ddir >= 0 && mkdirat(ddir, name, 0700) < 0)
        return clr_error_set(err, errno == ENOSPC ? CLR_E_NO_SPACE : CLR_E_INTERNAL, errno,
                             "mkdir %s: %s", rel, strerror(errno));
    if (!w->check && json_object_set_new(w->files, rel,
                                          json_pack("{s:s, s:i}", "type", "dir", "mode",
                                                    (int)(st.st_mode & 07777))) < 0)
        return not_listed(rel, err);
    _cleanup_close_ int s2 = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_close_ int d2 =
        ddir >= 0 ? openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    if (s2 < 0 || (ddir >= 0 && d2 < 0))
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", rel, strerror(errno));
    return walk_dir(w, s2, d2, rel, depth + 1, err);
}

static int walk_dir(struct walk *w, int sdir, int ddir, const char *rel, int depth,
                    clr_error *err)
{
    if (depth > SNAP_MAX_DEPTH)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP, "directory nesting deeper than %d",
                             SNAP_MAX_DEPTH);
    int dup_fd = dup(sdir);
    if (dup_fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "dup: %s", strerror(errno));
    _cleanup_closedir_ DIR *d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "fdopendir: %s", strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", rel, e->d_name) >= sizeof(path))
            return clr_error_set(err, CLR_E_LIMIT, ENAMETOOLONG, "a path under %s is too long",
                                 rel);
        if (walk_entry(w, sdir, ddir, e->d_name, path, depth, err) < 0)
            return -1;
    }
    return 0;
}

static int mkdir_parents(const char *path)
{
    char buf[4096];
    if (strlen(path) >= sizeof(buf))
        return -1;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return 0;
}

/* Copies the tree at src into the new directory name under dfd, listing it under rel. */
static int copy_into(struct walk *w, int dfd, const char *name, const char *src, clr_error *err)
{
    _cleanup_close_ int s = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", src, strerror(errno));
    if (mkdirat(dfd, name, 0700) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "mkdir %s: %s", name, strerror(errno));
    _cleanup_close_ int d = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", name, strerror(errno));
    return walk_dir(w, s, d, name, 0, err);
}

static int write_manifest(int dfd, struct walk *w, char *sha, clr_error *err)
{
    _cleanup_json_ json_t *m = json_pack("{s:i, s:I, s:O}", "version", 1, "size",
                                         (json_int_t)w->size, "files", w->files);
    _cleanup_free_ char *text = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    _cleanup_close_ int fd =
        openat(dfd, MANIFEST ".tmp", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "create the manifest: %s",
                             strerror(errno));
    size_t len = strlen(text);
    if (len > MANIFEST_MAX || w->size > w->max_bytes || len > w->max_bytes - w->size)
        return clr_error_set(err, CLR_E_LIMIT, EFBIG,
                             "the snapshot's manifest (%zu bytes) is over what a restore reads "
                             "(%d bytes) or the disk budget left: the workspace has too many "
                             "files",
                             len, MANIFEST_MAX);
    if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
        return clr_error_set(err, errno == ENOSPC ? CLR_E_NO_SPACE : CLR_E_INTERNAL, errno,
                             "write the manifest: %s", strerror(errno));
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (!EVP_Digest(text, len, d, &dl, EVP_sha256(), NULL))
        return clr_error_set(err, CLR_E_INTERNAL, 0, "sha256 failed");
    hex(d, dl, sha);
    w->size += len;
    if (renameat(dfd, MANIFEST ".tmp", dfd, MANIFEST) < 0 || fsync(dfd) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "rename the manifest: %s",
                             strerror(errno));
    return 0;
}

static int write_all(const char *dir, const char *checkpoint_src, const char *workspace,
                     uint64_t max_bytes, uint64_t *size, char *sha, clr_error *err)
{
    if (mkdir_parents(dir) < 0 || mkdir(dir, 0700) < 0)
        return clr_error_set(err, errno == EEXIST ? CLR_E_CONFLICT : CLR_E_INTERNAL, errno,
                             "cannot create the snapshot directory %s: %s", dir, strerror(errno));
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_json_ json_t *files = json_object();
    if (dfd < 0 || !files)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", dir, strerror(errno));
    struct walk w = {.files = files, .max_bytes = max_bytes};
    if (copy_into(&w, dfd, "checkpoint", checkpoint_src, err) < 0 ||
        copy_into(&w, dfd, "workspace", workspace, err) < 0 ||
        write_manifest(dfd, &w, sha, err) < 0)
        return -1;
    *size = w.size;
    return 0;
}

int clr_snapshot_write(const char *dir, const char *checkpoint_src, const char *workspace,
                       uint64_t max_bytes, uint64_t *size, char *manifest_sha256, clr_error *err)
{
    if (write_all(dir, checkpoint_src, workspace, max_bytes, size, manifest_sha256, err) == 0)
        return 0;
    if (err->code != CLR_E_CONFLICT) /* a directory that was there is not ours to remove */
        clr_snapshot_remove_dir(dir, NULL);
    return clr_error_prefix(err, "writing the snapshot");
}

static int read_manifest(int dfd, const char *expect, json_t **out, clr_error *err)
{
    _cleanup_close_ int fd = openat(dfd, MANIFEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_CONFLICT, errno,
                             "the snapshot has no manifest: it was never finished; delete it");
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MANIFEST_MAX)
        return clr_error_set(err, CLR_E_CONFLICT, 0, "the snapshot's manifest is not a file of "
                                                     "a sane size; delete the snapshot");
    _cleanup_free_ char *text = malloc((size_t)st.st_size + 1);
    if (!text)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    ssize_t n = read(fd, text, (size_t)st.st_size);
    if (n != (ssize_t)st.st_size)
        return clr_error_set(err, CLR_E_CONFLICT, errno, "cannot read the snapshot's manifest");
    text[n] = '\0';
    if (expect) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned int dl = 0;
        char sha[65];
        if (!EVP_Digest(text, (size_t)n, d, &dl, EVP_sha256(), NULL))
            return clr_error_set(err, CLR_E_INTERNAL, 0, "sha256 failed");
        hex(d, dl, sha);
        if (strcmp(sha, expect) != 0)
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "the snapshot's manifest differs from the one recorded when it "
                                 "was taken: it is corrupt; delete it");
    }
    json_t *m = json_loads(text, 0, NULL);
    if (!json_is_object(json_object_get(m, "files"))) {
        json_decref(m);
        return clr_error_set(err, CLR_E_CONFLICT, 0, "the snapshot's manifest is not valid; "
                                                     "delete the snapshot");
    }
    *out = m;
    return 0;
}

static int verify_dir(const char *dir, const char *expect, clr_error *err)
{
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return clr_error_set(err, errno == ENOENT ? CLR_E_NOT_FOUND : CLR_E_INTERNAL, errno,
                             "the snapshot's files (%s) are missing: %s", dir, strerror(errno));
    _cleanup_json_ json_t *m = NULL;
    if (read_manifest(dfd, expect, &m, err) < 0)
        return -1;
    struct walk w = {.files = json_object_get(m, "files"), .check = true};
    static const char *const parts[] = {"checkpoint", "workspace"};
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_object_get(w.files, parts[i]);
        if (e) /* listed (older manifests) or not: the part's directory must be there */
            w.seen++;
        _cleanup_close_ int s =
            openat(dfd, parts[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s < 0)
            return clr_error_set(err, CLR_E_CONFLICT, errno,
                                 "the snapshot has no %s directory: it is corrupt; delete it",
                                 parts[i]);
        if (walk_dir(&w, s, -1, parts[i], 0, err) < 0)
            return -1;
    }
    if (w.seen != json_object_size(w.files))
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "%zu of the %zu files in the snapshot's manifest are missing: it "
                             "is truncated; delete it",
                             json_object_size(w.files) - w.seen, json_object_size(w.files));
    return 0;
}

int clr_snapshot_verify(const char *dir, const char *expect_sha256, clr_error *err)
{
    if (verify_dir(dir, expect_sha256, err) < 0)
        return clr_error_prefix(err, "snapshot %s refused", strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir);
    return 0;
}

int clr_snapshot_copy_checkpoint(const char *dir, const char *dest, clr_error *err)
{
    char src[4096];
    if ((size_t)snprintf(src, sizeof(src), "%s/checkpoint", dir) >= sizeof(src))
        return clr_error_set(err, CLR_E_INVALID, 0, "the snapshot's path is too long");
    if (mkdir_parents(dest) < 0 || (mkdir(dest, 0700) < 0 && errno != EEXIST))
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot create %s: %s", dest,
                             strerror(errno));
    _cleanup_close_ int s = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_close_ int d = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_json_ json_t *files = json_object();
    if (s < 0 || d < 0 || !files)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", s < 0 ? src : dest,
                             strerror(errno));
    struct walk w = {.files = files, .max_bytes = UINT64_MAX}; /* our own, verified files */
    return walk_dir(&w, s, d, "checkpoint", 0, err);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -1 : 0;
}

int clr_snapshot_remove_dir(const char *dir, clr_error *err)
{
    struct stat st;
    if (lstat(dir, &st) < 0 && errno == ENOENT)
        return 0;
    if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "cannot remove %s: %s", dir,
                             strerror(errno));
    return 0;
}

bool clr_snapshot_finished(const char *dir)
{
    char path[4096];
    struct stat st;
    return (size_t)snprintf(path, sizeof(path), "%s/" MANIFEST, dir) < sizeof(path) &&
           lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int longer_first(const void *a, const void *b)
{
    size_t la = strlen(*(const char *const *)a), lb = strlen(*(const char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

/* One file or directory of dest (rel beneath it, no symlink followed) given its manifest's mode. */
static int apply_mode(int dfd, const char *rel, json_t *e, clr_error *err)
{
    bool dir = strcmp(json_string_value(json_object_get(e, "type")), "dir") == 0;
    int fd = clr_files_open_beneath(dfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, -fd, "cannot open %s in the fork's workspace: %s",
                             rel, strerror(-fd));
    _cleanup_close_ int f = fd;
    struct stat st;
    if (fstat(f, &st) < 0 || (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
        return clr_error_set(err, CLR_E_INTERNAL, errno,
                             "%s in the fork's workspace is not the kind its manifest says", rel);
    /* Permission bits only: never setuid, setgid or sticky. */
    mode_t mode = (mode_t)json_integer_value(json_object_get(e, "mode")) & 0777;
    if (fchmod(f, mode) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chmod %s: %s", rel, strerror(errno));
    return 0;
}

int clr_snapshot_apply_modes(const char *dir, const char *dest, clr_error *err)
{
    _cleanup_close_ int sfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int dfd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sfd < 0 || dfd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "open %s: %s", sfd < 0 ? dir : dest,
                             strerror(errno));
    _cleanup_json_ json_t *m = NULL;
    if (read_manifest(sfd, NULL, &m, err) < 0)
        return -1;
    json_t *files = json_object_get(m, "files");
    _cleanup_free_ const char **keys = calloc(json_object_size(files) + 1, sizeof(*keys));
    if (!keys)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    size_t n = 0;
    const char *key;
    json_t *e;
    json_object_foreach(files, key, e) {
        const char *t = json_string_value(json_object_get(e, "type"));
        if (strncmp(key, "workspace/", 10) == 0 && t &&
            (strcmp(t, "file") == 0 || strcmp(t, "dir") == 0) &&
            json_is_integer(json_object_get(e, "mode")))
            keys[n++] = key;
    }
    /* Children before their directory: a directory made read-only last. */
    qsort(keys, n, sizeof(*keys), longer_first);
    for (size_t i = 0; i < n; i++) {
        if (apply_mode(dfd, keys[i] + 10, json_object_get(files, keys[i]), err) < 0)
            return -1;
    }
    return 0;
}

/* Why rel could not go in the manifest: a name that is not UTF-8 (JSON cannot hold it) is the
 * client's to rename, named with its bytes escaped; anything else is memory. */
static int not_listed(const char *rel, clr_error *err)
{
    json_t *probe = json_string(rel);
    bool utf8 = probe != NULL;
    json_decref(probe);
    if (utf8)
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    if (strncmp(rel, "workspace/", 10) == 0)
        rel += 10;
    char name[512];
    size_t n = 0;
    const unsigned char *c = (const unsigned char *)rel;
    for (; *c && n + 8 < sizeof(name); c++) {
        if (*c >= 0x20 && *c < 0x7f && *c != '\\')
            name[n++] = (char)*c;
        else
            n += (size_t)snprintf(name + n, sizeof(name) - n, "\\x%02x", *c);
    }
    name[n] = '\0';
    return clr_error_set(err, CLR_E_INVALID, EILSEQ,
                         "the workspace has a file name that is not UTF-8 (%s%s): rename it to "
                         "take a snapshot",
                         name, *c ? "..." : "");
}
