/* Git workspaces: a branch per sandbox, checked out into the workspace without a .git, and
 * committed back by walking the workspace ourselves.
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
#include <git2/sys/mempack.h>
#include <git2/sys/odb_backend.h>
#include <git2/sys/path.h>

#include "clearing/gitws.h"
#include "internal.h"

#define DEFAULT_AUTHOR_NAME "clearing"
#define DEFAULT_AUTHOR_EMAIL "clearing@localhost"
#define DEPTH_CEILING 1024u
#define IGNORE_MAX_BYTES (1u << 20)
#define IGNORE_MAX_RULES 10000u
/* Steps one public glob match may take, and all matches of one walk together: a .gitignore on
 * a reused branch was written by the sandbox, and patterns such as "*a*a*a*a*b" backtrack. */
#define GLOB_STEP_BUDGET 1000000L
#define WALK_GLOB_BUDGET 1000000000L
/* Files up to this size are read into memory; larger ones stream into the object database
 * (a commit) or are read into memory too (a diff, see in_memory). */
#define SMALL_FILE_BYTES (1u << 20)
/* Above every backend libgit2 adds to a repository's object database (loose 1, packs 2). */
#define MEMPACK_PRIORITY 1000
/* How often an entry that changes type between lstat and open is looked at again. */
#define TYPE_ATTEMPTS 3
#define AGAIN 1

/* ---- scope-owned libgit2 objects ---- */

#define DEFINE_GIT_CLEANUP(type, fn)                                                              \
    static inline void fn##p(type **p)                                                            \
    {                                                                                             \
        fn(*p);                                                                                   \
    }
DEFINE_GIT_CLEANUP(git_repository, git_repository_free)
DEFINE_GIT_CLEANUP(git_reference, git_reference_free)
DEFINE_GIT_CLEANUP(git_object, git_object_free)
DEFINE_GIT_CLEANUP(git_commit, git_commit_free)
DEFINE_GIT_CLEANUP(git_tree, git_tree_free)
DEFINE_GIT_CLEANUP(git_blob, git_blob_free)
DEFINE_GIT_CLEANUP(git_treebuilder, git_treebuilder_free)
DEFINE_GIT_CLEANUP(git_signature, git_signature_free)
DEFINE_GIT_CLEANUP(git_index, git_index_free)
DEFINE_GIT_CLEANUP(git_diff, git_diff_free)
DEFINE_GIT_CLEANUP(git_diff_stats, git_diff_stats_free)
DEFINE_GIT_CLEANUP(git_odb, git_odb_free)
DEFINE_GIT_CLEANUP(clr_git_ignore, clr_git_ignore_free)
#define _cleanup_git_(fn) __attribute__((cleanup(fn##p)))

static void git_buf_disposep(git_buf *b)
{
    git_buf_dispose(b);
}
#define _cleanup_git_buf_ __attribute__((cleanup(git_buf_disposep)))

static void closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}
#define _cleanup_dir_ __attribute__((cleanup(closedirp)))

/* libgit2's global state is reference-counted: every public entry point holds one reference for
 * its duration, so callers need not know libgit2 exists. */
static void libgit2_releasep(int *count)
{
    if (*count > 0)
        git_libgit2_shutdown();
}
#define LIBGIT2_SCOPE(err)                                                                        \
    __attribute__((cleanup(libgit2_releasep))) int libgit2_ref_ = git_libgit2_init();             \
    if (libgit2_ref_ < 0)                                                                         \
        return clr_error_set(err, CLR_E_INTERNAL, 0, "cannot initialise libgit2");

__attribute__((format(printf, 3, 4))) static int git_fail(clr_error *err, clr_error_code code,
                                                          const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const git_error *g = git_error_last();
    return clr_error_set(err, code, 0, "%s: %s", what,
                         g && g->message ? g->message : "unknown libgit2 error");
}

static int oom(clr_error *err)
{
    return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
}

/* ---- gitignore globs (git's wildmatch with WM_PATHNAME) ---- */

static const struct {
    const char *name;
    int (*fn)(int);
} char_classes[] = {
    {"alnum", isalnum}, {"alpha", isalpha}, {"blank", isblank}, {"cntrl", iscntrl},
    {"digit", isdigit}, {"graph", isgraph}, {"lower", islower}, {"print", isprint},
    {"punct", ispunct}, {"space", isspace}, {"upper", isupper}, {"xdigit", isxdigit},
};

/* [:name:] inside a bracket: 1 or 0, -1 for a name git does not know (the pattern is void). */
static int named_class(const char *name, size_t len, unsigned char c)
{
    for (size_t i = 0; i < sizeof(char_classes) / sizeof(char_classes[0]); i++)
        if (strlen(char_classes[i].name) == len && memcmp(char_classes[i].name, name, len) == 0)
            return char_classes[i].fn(c) != 0;
    return -1;
}

static unsigned char class_char(const char **pp)
{
    const char *p = *pp;
    if (p[0] == '\\' && p[1])
        p++;
    *pp = p + 1;
    return (unsigned char)*p;
}

/* The bracket expression at *pp against c; advances *pp past its ']'. 1 match, 0 none, -1 the
 * bracket is never closed (git then matches nothing with the whole pattern). */
static int match_class(const char **pp, unsigned char c)
{
    const char *p = *pp + 1;
    bool negate = *p == '!' || *p == '^';
    if (negate)
        p++;
    bool hit = false;
    for (bool first = true;; first = false) {
        if (*p == '\0')
            return -1;
        if (*p == ']' && !first)
            break;
        size_t n = p[0] == '[' && p[1] == ':' ? strspn(p + 2, "abcdefghijklmnopqrstuvwxyz") : 0;
        if (n && p[2 + n] == ':' && p[3 + n] == ']') {
            int r = named_class(p + 2, n, c);
            if (r < 0)
                return -1;
            hit |= r > 0;
            p += n + 4;
            continue;
        }
        unsigned char lo = class_char(&p), hi = lo;
        if (p[0] == '-' && p[1] != ']' && p[1] != '\0') {
            p++;
            hi = class_char(&p);
        }
        if (lo <= c && c <= hi)
            hit = true;
    }
    *pp = p + 1;
    return hit != negate;
}

/* One pattern element against one path byte: 1 both advanced, 0 mismatch, -1 malformed. */
static int match_one(const char **pp, const char **sp)
{
    const char *p = *pp;
    unsigned char c = (unsigned char)**sp;
    if (c == '\0' || *p == '\0')
        return 0;
    int r;
    if (*p == '?') {
        r = c != '/';
        p++;
    } else if (*p == '[') {
        if (c == '/')
            return 0;
        r = match_class(&p, c);
    } else {
        if (p[0] == '\\' && p[1])
            p++;
        r = (unsigned char)*p == c;
        p++;
    }
    if (r <= 0)
        return r;
    *pp = p;
    (*sp)++;
    return 1;
}

/* "**" is special only as a whole path component; elsewhere it is a plain '*'. */
static bool is_globstar(const char *p, const char *start)
{
    return p[0] == '*' && p[1] == '*' && (p == start || p[-1] == '/') &&
           (p[2] == '/' || p[2] == '\0');
}

static int wildmatch(const char *p, const char *start, const char *s, long *budget);

/* "**" at the end matches everything left; "**" + "/" matches zero or more whole directories,
 * so the rest of the pattern is tried at s and after every '/' of s. */
static int match_globstar(const char *p, const char *start, const char *s, long *budget)
{
    if (p[2] == '\0')
        return 1;
    for (;;) {
        int r = wildmatch(p + 3, start, s, budget);
        if (r != 0)
            return r;
        s = strchr(s, '/');
        if (!s)
            return 0;
        s++;
    }
}

/* 1 match, 0 none, -1 malformed or out of budget. Single stars backtrack only to the latest
 * star (the classic linear-time scheme; a star cannot cross '/', and once a '/' is matched the
 * state is the same whatever the earlier stars took), so only "**" recurses. */
static int wildmatch(const char *p, const char *start, const char *s, long *budget)
{
    const char *star_p = NULL, *star_s = NULL;
    for (;;) {
        if (--*budget < 0)
            return -1;
        if (*p == '*') {
            if (is_globstar(p, start))
                return match_globstar(p, start, s, budget);
            while (*p == '*')
                p++;
            star_p = p;
            star_s = s;
            continue;
        }
        if (*p == '\0' && *s == '\0')
            return 1;
        int r = match_one(&p, &s);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        if (!star_p || *star_s == '\0' || *star_s == '/')
            return 0;
        s = ++star_s;
        p = star_p;
    }
}

bool clr_git_glob_match(const char *pattern, const char *path)
{
    long budget = GLOB_STEP_BUDGET;
    return wildmatch(pattern, pattern, path, &budget) == 1;
}

/* ---- .gitignore rules ---- */

typedef struct ignore_rule {
    const char *pattern;
    bool negate;   /* "!pattern": re-include */
    bool dir_only; /* "pattern/": directories only */
    bool anchored; /* a '/' before the end: matched against the path below the file's dir */
} ignore_rule;

struct clr_git_ignore {
    const clr_git_ignore *parent;
    char *dir; /* "" or "a/b" */
    size_t dir_len;
    char *text; /* the file's lines, cut in place; the rules point into it */
    ignore_rule *rules;
    size_t n_rules;
};

void clr_git_ignore_free(clr_git_ignore *ig)
{
    if (!ig)
        return;
    free(ig->dir);
    free(ig->text);
    free(ig->rules);
    free(ig);
}

/* git drops trailing spaces unless the last one is escaped with a backslash. */
static void trim_trailing_spaces(char *s)
{
    char *first_space = NULL;
    for (char *p = s; *p; p++) {
        if (*p == ' ') {
            if (!first_space)
                first_space = p;
            continue;
        }
        first_space = NULL;
        if (*p == '\\' && *++p == '\0')
            return;
    }
    if (first_space)
        *first_space = '\0';
}

static bool parse_rule(ignore_rule *r, char *line)
{
    trim_trailing_spaces(line);
    if (line[0] == '\0' || line[0] == '#')
        return false;
    *r = (ignore_rule){0};
    if (line[0] == '!') {
        r->negate = true;
        line++;
    }
    size_t n = strlen(line);
    if (n > 0 && line[n - 1] == '/') {
        r->dir_only = true;
        line[n - 1] = '\0';
    }
    r->anchored = strchr(line, '/') != NULL;
    if (line[0] == '/')
        line++;
    r->pattern = line;
    return line[0] != '\0';
}

int clr_git_ignore_parse(clr_git_ignore **out, const clr_git_ignore *parent, const char *dir,
                         const char *text, size_t len, clr_error *err)
{
    *out = NULL;
    if (!text)
        text = "", len = 0;
    if (len > IGNORE_MAX_BYTES)
        len = IGNORE_MAX_BYTES;
    _cleanup_git_(clr_git_ignore_free) clr_git_ignore *ig = calloc(1, sizeof(*ig));
    if (!ig)
        return oom(err);
    ig->parent = parent;
    ig->dir = strdup(dir ? dir : "");
    ig->text = malloc(len + 1);
    size_t max_rules = 1;
    for (const char *q = text; max_rules < IGNORE_MAX_RULES &&
                               (q = memchr(q, '\n', len - (size_t)(q - text)));
         q++)
        max_rules++;
    ig->rules = calloc(max_rules, sizeof(*ig->rules));
    if (!ig->dir || !ig->text || !ig->rules)
        return oom(err);
    ig->dir_len = strlen(ig->dir);
    memcpy(ig->text, text, len);
    ig->text[len] = '\0';
    for (char *line = ig->text; line && ig->n_rules < max_rules;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (parse_rule(&ig->rules[ig->n_rules], line))
            ig->n_rules++;
        line = nl ? nl + 1 : NULL;
    }
    *out = steal_pointer(&ig);
    return 0;
}

static int rule_matches(const ignore_rule *r, const char *rel, bool is_dir, long *budget)
{
    if (r->dir_only && !is_dir)
        return 0;
    const char *subject = rel;
    if (!r->anchored) {
        const char *slash = strrchr(rel, '/');
        if (slash)
            subject = slash + 1;
    }
    return wildmatch(r->pattern, r->pattern, subject, budget);
}

/* 1 ignored, 0 not, -1 the budget ran out. The first rule that matches, from the deepest file
 * and its last line upwards, decides. */
static int ignore_check(const clr_git_ignore *ig, const char *path, bool is_dir, long *budget)
{
    for (; ig; ig = ig->parent) {
        const char *rel = path;
        if (ig->dir_len > 0) {
            if (strncmp(path, ig->dir, ig->dir_len) != 0 || path[ig->dir_len] != '/')
                continue;
            rel = path + ig->dir_len + 1;
        }
        /* Every rule costs a step, even one skipped as dir-only: 10000 of them on every
         * entry must not run unbounded either. */
        for (size_t i = ig->n_rules; i-- > 0;) {
            int r = --*budget < 0 ? -1 : rule_matches(&ig->rules[i], rel, is_dir, budget);
            if (r == 1)
                return !ig->rules[i].negate;
            if (*budget < 0)
                return -1;
        }
    }
    return 0;
}

bool clr_git_ignored(const clr_git_ignore *ig, const char *path, bool is_dir)
{
    long budget = GLOB_STEP_BUDGET;
    return ignore_check(ig, path, is_dir, &budget) == 1;
}

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

typedef struct skipped_list {
    clr_git_skipped *v;
    size_t n, cap;
} skipped_list;

static void skipped_list_clear(skipped_list *l)
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
            return oom(w->err);
        l->v = v;
        l->cap = cap;
    }
    char *p = strdup(w->path);
    if (!p)
        return oom(w->err);
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
    return git_fail(w->err, CLR_E_INTERNAL, "adding %s to a tree", shown_path(w));
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
        return oom(w->err);
    ssize_t n = read_upto(fd, buf, size);
    if (n < 0)
        return sys_fail(w, errno, "reading");
    if (git_blob_create_from_buffer(id, w->repo, buf, (size_t)n) < 0)
        return git_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
    return 0;
}

/* Large files stream into the object database in bounded chunks; at most size bytes (what
 * fstat said, already checked against the limits) are read however much the file grows. */
static int blob_from_large_fd(walk *w, int fd, uint64_t size, git_oid *id)
{
    git_writestream *s = NULL;
    if (git_blob_create_from_stream(&s, w->repo, NULL) < 0)
        return git_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
    char chunk[65536];
    for (uint64_t left = size; left > 0;) {
        ssize_t n = read_upto(fd, chunk, left < sizeof(chunk) ? (size_t)left : sizeof(chunk));
        if (n < 0) {
            int e = errno;
            s->free(s);
            return sys_fail(w, e, "reading");
        }
        if (n == 0)
            break; /* it shrank since fstat: commit what is there */
        if (s->write(s, chunk, (size_t)n) < 0) {
            s->free(s);
            return git_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
        }
        left -= (uint64_t)n;
    }
    if (git_blob_create_from_stream_commit(id, s) < 0)
        return git_fail(w->err, CLR_E_INTERNAL, "storing %s", shown_path(w));
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
        return git_fail(w->err, CLR_E_INTERNAL, "storing the link %s", shown_path(w));
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
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return entry_changed(errno) ? AGAIN : sys_fail(w, errno, "opening the directory");
    _cleanup_git_(git_tree_free) git_tree *sub = NULL;
    if (tracked && git_tree_entry_type(tracked) == GIT_OBJECT_TREE &&
        git_tree_lookup(&sub, w->repo, git_tree_entry_id(tracked)) < 0) {
        close(fd);
        return git_fail(w->err, CLR_E_INTERNAL, "reading the base tree of %s", shown_path(w));
    }
    dir_ctx child = {
        .base = sub, .ignore = dc->ignore, .ignored = ignored, .depth = dc->depth + 1};
    git_oid id;
    bool nonempty = false;
    if (walk_dir(w, fd, &child, &id, &nonempty) < 0)
        return -1;
    return nonempty ? insert(w, tb, name, &id, GIT_FILEMODE_TREE) : 0;
}

/* Does a base-tree rule (or an ignored parent) match the current path? -1: budget exhausted. */
static int rule_says_ignored(walk *w, const dir_ctx *dc, bool is_dir)
{
    if (dc->ignored)
        return 1;
    int r = ignore_check(dc->ignore, w->path, is_dir, &w->glob_budget);
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
        return git_fail(w->err, CLR_E_INTERNAL, "reading the base .gitignore of %s",
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
    _cleanup_dir_ DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return sys_fail(w, e, "listing");
    }
    _cleanup_git_(clr_git_ignore_free) clr_git_ignore *own = NULL;
    if (load_ignore(w, dc, &own) < 0)
        return -1;
    dir_ctx here = *dc;
    if (own)
        here.ignore = own;
    _cleanup_git_(git_treebuilder_free) git_treebuilder *tb = NULL;
    if (git_treebuilder_new(&tb, w->repo, NULL) < 0)
        return git_fail(w->err, CLR_E_INTERNAL, "starting a tree");
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
        return git_fail(w->err, CLR_E_INTERNAL, "writing the tree of %s",
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

static int open_workspace(const char *dir, clr_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, errno == ENOENT ? CLR_E_NOT_FOUND : CLR_E_INVALID, errno,
                             "cannot open the workspace %s: %s", dir, strerror(errno));
    return fd;
}

typedef struct walk_request {
    git_repository *repo;
    const char *workspace_dir;
    const git_tree *base; /* the tree whose .gitignore files and tracked paths apply */
    const clr_git_limits *limits;
    clr_git_walk_hook hook;
    void *hook_data;
    bool in_memory; /* the repository writes objects to memory only (see use_memory_odb) */
} walk_request;

/* The tree of the whole workspace, and what was skipped (the caller clears *skipped). */
static int workspace_tree(git_oid *tree_id, skipped_list *skipped, const walk_request *rq,
                          clr_error *err)
{
    walk w = {.repo = rq->repo, .glob_budget = WALK_GLOB_BUDGET, .hook = rq->hook,
              .hook_data = rq->hook_data, .in_memory = rq->in_memory, .err = err};
    if (resolve_limits(&w.lim, rq->limits, err) < 0)
        return -1;
    /* Room for max_depth names of NAME_MAX bytes and their separators. */
    w.path_cap = ((size_t)w.lim.max_depth + 2) * (NAME_MAX + 1);
    _cleanup_free_ char *path = calloc(1, w.path_cap);
    if (!path)
        return oom(err);
    w.path = path;
    int fd = open_workspace(rq->workspace_dir, err);
    if (fd < 0)
        return -1;
    dir_ctx top = {.base = rq->base};
    bool nonempty;
    int rc = walk_dir(&w, fd, &top, tree_id, &nonempty);
    if (rc < 0)
        skipped_list_clear(&w.skipped);
    *skipped = w.skipped;
    return rc;
}

/* ---- repository helpers ---- */

static int stat_id(clr_git_repo_id *id, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    return 0;
}

/* Opens the repository at path, refuses one whose git directory takes its refs or objects from
 * another directory (commondir, alternates: what was checked would not be what is written),
 * and, given expect, one whose git directory is not the one that was checked. *got (may be
 * NULL) is the identity of the git directory opened. */
static int open_repo(git_repository **out, const char *path, const clr_git_repo_id *expect,
                     clr_git_repo_id *got, clr_error *err)
{
    /* NO_SEARCH: the caller names the repository; never wander up to an enclosing one. */
    int rc = git_repository_open_ext(out, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
    if (rc == GIT_EOWNER)
        return git_fail(err, CLR_E_DENIED,
                        "opening the repository %s (owned by another user: run as its owner or "
                        "add it to safe.directory)",
                        path);
    if (rc < 0)
        return git_fail(err, rc == GIT_ENOTFOUND ? CLR_E_NOT_FOUND : CLR_E_INTERNAL,
                        "opening the repository %s (pass a work tree or a .git directory)",
                        path);
    clr_git_repo_id gid, cid;
    const char *gitdir = git_repository_path(*out);
    char alternates[PATH_MAX];
    struct stat st;
    int n = snprintf(alternates, sizeof(alternates), "%sobjects/info/alternates", gitdir);
    rc = 0;
    if (stat_id(&gid, gitdir) < 0 || stat_id(&cid, git_repository_commondir(*out)) < 0)
        rc = clr_error_set(err, CLR_E_INTERNAL, errno, "opening the repository %s: %s", path,
                           strerror(errno));
    else if (gid.dev != cid.dev || gid.ino != cid.ino)
        rc = clr_error_set(err, CLR_E_DENIED, 0,
                           "the repository %s takes its refs and objects from another git "
                           "directory (a linked worktree or a commondir file): name the main "
                           "repository instead",
                           path);
    else if (n < 0 || (size_t)n >= sizeof(alternates) || lstat(alternates, &st) == 0)
        rc = clr_error_set(err, CLR_E_DENIED, 0,
                           "the repository %s borrows objects from another repository "
                           "(objects/info/alternates): clearing takes only a repository that "
                           "holds its own objects (git repack -a, then remove the file)",
                           path);
    else if (expect && (expect->dev != gid.dev || expect->ino != gid.ino))
        rc = clr_error_set(err, CLR_E_CONFLICT, 0,
                           "the repository at %s is no longer the one that was checked (its "
                           "git directory was moved or replaced): nothing was written",
                           path);
    if (rc < 0) {
        git_repository_free(*out);
        *out = NULL;
        return -1;
    }
    if (got)
        *got = gid;
    return 0;
}

static int resolve_commit(git_commit **out, git_repository *repo, const char *spec,
                          const char *repo_path, clr_error *err)
{
    _cleanup_git_(git_object_free) git_object *obj = NULL;
    if (git_revparse_single(&obj, repo, spec) < 0)
        return git_fail(err, CLR_E_NOT_FOUND, "resolving %s in %s", spec, repo_path);
    git_object *peeled = NULL;
    if (git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) < 0)
        return git_fail(err, CLR_E_INVALID, "%s in %s does not name a commit", spec, repo_path);
    *out = (git_commit *)peeled;
    return 0;
}

/* A branch that is checked out (here or in a linked worktree) belongs to someone's working
 * tree: moving it would change their checkout under them. */
static int refuse_checked_out(git_reference *ref, const char *branch, const char *repo_path,
                              clr_error *err)
{
    int rc = git_branch_is_checked_out(ref);
    if (rc < 0)
        return git_fail(err, CLR_E_INTERNAL, "checking whether %s is checked out", branch);
    if (rc > 0)
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "branch %s is checked out in %s: a workspace needs a branch of "
                             "its own",
                             branch, repo_path);
    if (git_reference_type(ref) != GIT_REFERENCE_DIRECT)
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "branch %s in %s is a symbolic reference: use a real branch",
                             branch, repo_path);
    return 0;
}

static int check_branch_name(const char *branch, clr_error *err)
{
    int valid = 0;
    if (strlen(branch) >= CLR_GIT_BRANCH_SIZE || git_branch_name_is_valid(&valid, branch) < 0 ||
        !valid)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "\"%.300s\" is not a valid branch name (at most %d bytes, git's "
                             "ref-name rules)",
                             branch, CLR_GIT_BRANCH_SIZE - 1);
    return 0;
}

static void oid_hex(char out[CLR_GIT_OID_HEX_SIZE], const git_oid *id)
{
    git_oid_tostr(out, CLR_GIT_OID_HEX_SIZE, id);
}

/* ---- prepare ---- */

static int choose_branch(char out[CLR_GIT_BRANCH_SIZE], const clr_git_prepare_options *o,
                         clr_error *err)
{
    if (!o->branch && (!o->sandbox_id || !*o->sandbox_id))
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "pass a branch or a sandbox id to name the workspace's branch");
    char name[CLR_GIT_BRANCH_SIZE + 16];
    if (o->branch)
        snprintf(name, sizeof(name), "%.*s", CLR_GIT_BRANCH_SIZE, o->branch);
    else
        snprintf(name, sizeof(name), "clearing/%.*s", CLR_GIT_BRANCH_SIZE, o->sandbox_id);
    if (check_branch_name(name, err) < 0)
        return -1;
    memcpy(out, name, strlen(name) + 1);
    return 0;
}

/* The checkout must land in a fresh directory: libgit2 opens paths in it by name, which is
 * only safe while nothing the sandbox wrote is there. */
static int require_empty(int ws, const char *dir, clr_error *err)
{
    int fd = dup(ws);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "dup: %s", strerror(errno));
    _cleanup_dir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "listing %s: %s", dir, strerror(errno));
    }
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            return clr_error_set(err, CLR_E_CONFLICT, ENOTEMPTY,
                                 "the workspace %s is not empty: prepare it before the sandbox "
                                 "writes to it",
                                 dir);
    return 0;
}

/* Creates the branch at base, or with reuse returns the existing one. *created says whether a
 * failure later must delete it again. */
/* The branch the repository's HEAD names, and the operator's judging ref (protect_ref), hold
 * the .clearing/gauntlet.yaml that judges plans: no sandbox writes to them, so no plan can
 * plant the gauntlet a later plan is judged by. */
static int refuse_judge_branch(git_repository *repo, const char *branch,
                               const clr_git_prepare_options *o, clr_error *err)
{
    char full[CLR_GIT_BRANCH_SIZE + 16];
    snprintf(full, sizeof(full), "refs/heads/%s", branch);
    _cleanup_git_(git_reference_free) git_reference *head = NULL;
    if (git_reference_lookup(&head, repo, "HEAD") == 0 &&
        git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
        !strcmp(git_reference_symbolic_target(head), full))
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "branch %s is the repository's default branch (HEAD), whose "
                             ".clearing/gauntlet.yaml judges plans: a sandbox works on a branch "
                             "of its own",
                             branch);
    if (o->protect_ref && *o->protect_ref) {
        _cleanup_git_(git_reference_free) git_reference *judge = NULL;
        if (git_reference_dwim(&judge, repo, o->protect_ref) == 0 &&
            !strcmp(git_reference_name(judge), full))
            return clr_error_set(err, CLR_E_CONFLICT, 0,
                                 "branch %s is the operator's gauntlet_ref, which judges plans: "
                                 "a sandbox works on a branch of its own",
                                 branch);
    }
    return 0;
}

static int make_branch(git_reference **out, bool *created, git_repository *repo,
                       const char *branch, const git_commit *base,
                       const clr_git_prepare_options *o, clr_error *err)
{
    *created = false;
    int rc = git_branch_create(out, repo, branch, base, 0);
    if (rc == GIT_EEXISTS && !o->reuse_branch)
        return clr_error_set(err, CLR_E_CONFLICT, EEXIST,
                             "branch %s exists in %s; pass reuse to continue on it", branch,
                             o->repo_path);
    if (rc == GIT_EEXISTS)
        rc = git_branch_lookup(out, repo, branch, GIT_BRANCH_LOCAL);
    else if (rc == 0)
        *created = true;
    if (rc < 0)
        return git_fail(err, CLR_E_INTERNAL, "creating branch %s in %s", branch, o->repo_path);
    if (refuse_checked_out(*out, branch, o->repo_path, err) < 0 ||
        refuse_judge_branch(repo, branch, o, err) < 0) {
        if (*created)
            git_branch_delete(*out);
        git_reference_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int chown_tree(int fd, uid_t uid, gid_t gid, unsigned depth, clr_error *err);

static int chown_entry(int dfd, const char *name, uid_t uid, gid_t gid, unsigned depth,
                       clr_error *err)
{
    if (fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s in the workspace: %s", name,
                             strerror(errno));
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "opening %s in the workspace: %s", name,
                             strerror(errno));
    return chown_tree(fd, uid, gid, depth + 1, err);
}

/* Gives everything below the directory open as fd (taken over) to uid:gid, never following a
 * link (the tree may hold links to anywhere). */
static int chown_tree(int fd, uid_t uid, gid_t gid, unsigned depth, clr_error *err)
{
    _cleanup_dir_ DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return clr_error_set(err, CLR_E_INTERNAL, errno, "listing the workspace: %s",
                             strerror(errno));
    }
    if (depth > DEPTH_CEILING)
        return clr_error_set(err, CLR_E_LIMIT, ELOOP, "the tree nests deeper than %u directories",
                             DEPTH_CEILING);
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (chown_entry(dirfd(d), e->d_name, uid, gid, depth, err) < 0)
            return -1;
    }
    return 0;
}

static int checkout_into(git_repository *repo, const git_commit *start, int ws,
                         const clr_git_prepare_options *o, clr_error *err)
{
    /* An empty in-memory baseline: everything in the tree is written, and neither the caller's
     * HEAD nor its index is consulted, let alone updated. No filters: the commit side stores
     * bytes as they are, so the checkout writes them as they are. */
    _cleanup_git_(git_index_free) git_index *empty = NULL;
    if (git_index_new(&empty) < 0)
        return git_fail(err, CLR_E_INTERNAL, "creating an empty index");
    git_checkout_options co;
    git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
    co.checkout_strategy = GIT_CHECKOUT_FORCE | GIT_CHECKOUT_DONT_UPDATE_INDEX;
    co.disable_filters = 1;
    co.baseline_index = empty;
    co.target_directory = o->workspace_dir;
    if (git_checkout_tree(repo, (const git_object *)start, &co) < 0)
        return git_fail(err, CLR_E_INTERNAL, "writing the tree into %s (is the workspace big "
                        "enough?)", o->workspace_dir);
    struct stat st;
    if (fstatat(ws, ".git", &st, AT_SYMLINK_NOFOLLOW) == 0)
        return clr_error_set(err, CLR_E_INTERNAL, EEXIST,
                             "a .git appeared in the workspace %s during checkout",
                             o->workspace_dir);
    if (fchown(ws, o->uid, o->gid) < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "chown %s: %s", o->workspace_dir,
                             strerror(errno));
    int fd = openat(ws, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return clr_error_set(err, CLR_E_INTERNAL, errno, "reopening %s: %s", o->workspace_dir,
                             strerror(errno));
    return chown_tree(fd, o->uid, o->gid, 0, err);
}

int clr_git_prepare(clr_git_workspace *out, const clr_git_prepare_options *o, clr_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!o || !o->repo_path || !o->workspace_dir)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "preparing a git workspace needs repo_path and workspace_dir");
    LIBGIT2_SCOPE(err);
    if (choose_branch(out->branch, o, err) < 0)
        return -1;
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    _cleanup_git_(git_commit_free) git_commit *base = NULL;
    if (open_repo(&repo, o->repo_path, o->expect_id, &out->repo_id, err) < 0 ||
        resolve_commit(&base, repo, o->base_ref ? o->base_ref : "HEAD", o->repo_path, err) < 0)
        return -1;
    oid_hex(out->base_commit, git_commit_id(base));
    _cleanup_close_ int ws = open_workspace(o->workspace_dir, err);
    if (ws < 0 || require_empty(ws, o->workspace_dir, err) < 0)
        return -1;
    _cleanup_git_(git_reference_free) git_reference *ref = NULL;
    bool created;
    if (make_branch(&ref, &created, repo, out->branch, base, o, err) < 0)
        return -1;
    _cleanup_git_(git_object_free) git_object *start = NULL;
    int rc = git_reference_peel(&start, ref, GIT_OBJECT_COMMIT);
    if (rc < 0)
        git_fail(err, CLR_E_INTERNAL, "resolving branch %s", out->branch);
    else
        rc = checkout_into(repo, (const git_commit *)start, ws, o, err);
    if (rc < 0) {
        if (created)
            git_branch_delete(ref);
        return clr_error_prefix(err, "preparing the workspace %s", o->workspace_dir);
    }
    oid_hex(out->start_commit, git_object_id(start));
    return 0;
}

/* ---- commit ---- */

static bool valid_trailer(const char *t)
{
    size_t key = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-");
    return key > 0 && t[key] == ':' && t[key + 1] == ' ' && !strchr(t, '\n') &&
           !strchr(t, '\r');
}

/* message, a blank line, then one trailer a line. */
static int build_message(char **out, const char *message, const char *const *trailers,
                         clr_error *err)
{
    size_t len = strlen(message);
    while (len > 0 && isspace((unsigned char)message[len - 1]))
        len--;
    if (len == 0)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "the commit message is empty");
    size_t total = len + 3;
    for (const char *const *t = trailers; t && *t; t++) {
        if (!valid_trailer(*t))
            return clr_error_set(err, CLR_E_INVALID, EINVAL,
                                 "trailer \"%.200s\" is not a \"Key: value\" line", *t);
        total += strlen(*t) + 1;
    }
    char *m = malloc(total);
    if (!m)
        return oom(err);
    memcpy(m, message, len);
    char *p = m + len;
    *p++ = '\n';
    if (trailers && *trailers)
        *p++ = '\n';
    for (const char *const *t = trailers; t && *t; t++)
        p += sprintf(p, "%s\n", *t);
    *p = '\0';
    *out = m;
    return 0;
}

static int check_commit_options(const clr_git_commit_options *o, clr_error *err)
{
    if (!o || !o->repo_path || !o->branch || !o->workspace_dir)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "committing a workspace needs repo_path, branch and workspace_dir");
    if (!o->message)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "the commit message is missing");
    return check_branch_name(o->branch, err);
}

/* Both sides of a diff, with renames found the way `git diff -M` finds them. */
static int diff_trees(git_diff **out, git_repository *repo, git_tree *old_tree,
                      git_tree *new_tree, clr_error *err)
{
    git_diff_options opts;
    git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
    if (git_diff_tree_to_tree(out, repo, old_tree, new_tree, &opts) < 0)
        return git_fail(err, CLR_E_INTERNAL, "comparing trees");
    git_diff_find_options find;
    git_diff_find_options_init(&find, GIT_DIFF_FIND_OPTIONS_VERSION);
    find.flags = GIT_DIFF_FIND_RENAMES;
    if (git_diff_find_similar(*out, &find) < 0)
        return git_fail(err, CLR_E_INTERNAL, "detecting renames");
    return 0;
}

static int fill_diffstat(clr_git_commit_result *out, git_repository *repo, git_tree *old_tree,
                         git_tree *new_tree, clr_error *err)
{
    _cleanup_git_(git_diff_free) git_diff *diff = NULL;
    _cleanup_git_(git_diff_stats_free) git_diff_stats *stats = NULL;
    _cleanup_git_buf_ git_buf buf = GIT_BUF_INIT;
    if (diff_trees(&diff, repo, old_tree, new_tree, err) < 0)
        return -1;
    if (git_diff_get_stats(&stats, diff) < 0 ||
        git_diff_stats_to_buf(&buf, stats, GIT_DIFF_STATS_FULL | GIT_DIFF_STATS_INCLUDE_SUMMARY,
                              80) < 0)
        return git_fail(err, CLR_E_INTERNAL, "computing the diffstat");
    out->files_changed = git_diff_stats_files_changed(stats);
    out->insertions = git_diff_stats_insertions(stats);
    out->deletions = git_diff_stats_deletions(stats);
    out->stat_text = strndup(buf.ptr ? buf.ptr : "", buf.size);
    return out->stat_text ? 0 : oom(err);
}

/* Moves the branch from parent to id only if it still points at parent: two commits racing on
 * one branch cannot silently drop each other's work. */
static int move_branch(git_repository *repo, git_reference *ref, const git_oid *id,
                       const git_oid *parent, const char *branch, clr_error *err)
{
    _cleanup_git_(git_reference_free) git_reference *moved = NULL;
    int rc = git_reference_create_matching(&moved, repo, git_reference_name(ref), id, 1, parent,
                                           "clearing: commit from the workspace");
    if (rc == GIT_EMODIFIED || rc == GIT_ELOCKED)
        return git_fail(err, CLR_E_CONFLICT,
                        "branch %s moved while the workspace was being committed; commit again",
                        branch);
    if (rc < 0)
        return git_fail(err, CLR_E_INTERNAL, "moving branch %s", branch);
    return 0;
}

static int write_commit(git_oid *id, git_repository *repo, const clr_git_commit_options *o,
                        const git_tree *tree, const git_commit *parent, clr_error *err)
{
    _cleanup_free_ char *message = NULL;
    const char *trailers[CLR_GIT_TRAILERS_MAX + 2];
    size_t n = 0;
    for (const char *const *t = o->trailers; t && *t; t++) {
        if (n == CLR_GIT_TRAILERS_MAX)
            return clr_error_set(err, CLR_E_INVALID, E2BIG, "more than %d trailers",
                                 CLR_GIT_TRAILERS_MAX);
        trailers[n++] = *t;
    }
    trailers[n] = NULL;
    char sealed[CLR_GIT_SEAL_MAX];
    if (o->seal) {
        /* The seal covers the tree and the parent as they will be written, and every trailer
         * before it: it is the last line of the message. */
        char tree_hex[CLR_GIT_OID_HEX_SIZE], parent_hex[CLR_GIT_OID_HEX_SIZE];
        oid_hex(tree_hex, git_tree_id(tree));
        oid_hex(parent_hex, git_commit_id(parent));
        if (o->seal(sealed, sizeof(sealed), tree_hex, parent_hex, trailers, o->seal_ctx, err) < 0)
            return clr_error_prefix(err, "sealing the commit");
        trailers[n++] = sealed;
        trailers[n] = NULL;
    }
    if (build_message(&message, o->message, trailers, err) < 0)
        return -1;
    _cleanup_git_(git_signature_free) git_signature *sig = NULL;
    if (git_signature_now(&sig, o->author_name ? o->author_name : DEFAULT_AUTHOR_NAME,
                          o->author_email ? o->author_email : DEFAULT_AUTHOR_EMAIL) < 0)
        return git_fail(err, CLR_E_INVALID, "author \"%.100s\" <%.100s>",
                        o->author_name ? o->author_name : DEFAULT_AUTHOR_NAME,
                        o->author_email ? o->author_email : DEFAULT_AUTHOR_EMAIL);
    const git_commit *parents[] = {parent};
    if (git_commit_create(id, repo, NULL, sig, sig, NULL, message, tree, 1, parents) < 0)
        return git_fail(err, CLR_E_INTERNAL, "creating the commit");
    return 0;
}

static int commit_tree(clr_git_commit_result *out, git_repository *repo, git_reference *ref,
                       const git_commit *parent, git_tree *parent_tree, const git_oid *tree_id,
                       const clr_git_commit_options *o, clr_error *err)
{
    if (git_oid_equal(tree_id, git_tree_id(parent_tree))) {
        oid_hex(out->commit, git_commit_id(parent));
        out->stat_text = strdup("");
        return out->stat_text ? 0 : oom(err);
    }
    _cleanup_git_(git_tree_free) git_tree *tree = NULL;
    if (git_tree_lookup(&tree, repo, tree_id) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading the new tree");
    git_oid id;
    if (write_commit(&id, repo, o, tree, parent, err) < 0 ||
        move_branch(repo, ref, &id, git_commit_id(parent), o->branch, err) < 0)
        return -1;
    out->changed = true;
    oid_hex(out->commit, &id);
    return fill_diffstat(out, repo, parent_tree, tree, err);
}

int clr_git_commit(clr_git_commit_result *out, const clr_git_commit_options *o, clr_error *err)
{
    memset(out, 0, sizeof(*out));
    LIBGIT2_SCOPE(err);
    if (check_commit_options(o, err) < 0)
        return -1;
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    _cleanup_git_(git_reference_free) git_reference *ref = NULL;
    _cleanup_git_(git_object_free) git_object *parent = NULL;
    _cleanup_git_(git_tree_free) git_tree *parent_tree = NULL;
    if (open_repo(&repo, o->repo_path, o->expect_id, NULL, err) < 0)
        return -1;
    int rc = git_branch_lookup(&ref, repo, o->branch, GIT_BRANCH_LOCAL);
    if (rc < 0)
        return git_fail(err, rc == GIT_ENOTFOUND ? CLR_E_NOT_FOUND : CLR_E_INTERNAL,
                        "branch %s in %s (prepare the workspace first)", o->branch,
                        o->repo_path);
    if (refuse_checked_out(ref, o->branch, o->repo_path, err) < 0)
        return -1;
    if (git_reference_peel(&parent, ref, GIT_OBJECT_COMMIT) < 0 ||
        git_commit_tree(&parent_tree, (git_commit *)parent) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading the tip of %s", o->branch);
    walk_request rq = {.repo = repo, .workspace_dir = o->workspace_dir, .base = parent_tree,
                       .limits = &o->limits, .hook = o->test_hook, .hook_data = o->test_hook_data};
    git_oid tree_id;
    skipped_list skipped = {0};
    if (workspace_tree(&tree_id, &skipped, &rq, err) < 0)
        return clr_error_prefix(err, "committing the workspace %s", o->workspace_dir);
    out->skipped = skipped.v;
    out->n_skipped = skipped.n;
    snprintf(out->branch, sizeof(out->branch), "%s", o->branch);
    if (commit_tree(out, repo, ref, (git_commit *)parent, parent_tree, &tree_id, o, err) < 0) {
        clr_git_commit_result_clear(out);
        return -1;
    }
    return 0;
}

void clr_git_commit_result_clear(clr_git_commit_result *r)
{
    if (!r)
        return;
    skipped_list l = {.v = r->skipped, .n = r->n_skipped};
    skipped_list_clear(&l);
    free(r->stat_text);
    memset(r, 0, sizeof(*r));
}

/* ---- diff ---- */

static int patch_text(char **out, git_diff *diff, clr_error *err)
{
    _cleanup_git_buf_ git_buf buf = GIT_BUF_INIT;
    if (git_diff_to_buf(&buf, diff, GIT_DIFF_FORMAT_PATCH) < 0)
        return git_fail(err, CLR_E_INTERNAL, "formatting the diff");
    char *text = malloc(buf.size + 1);
    if (!text)
        return oom(err);
    if (buf.size)
        memcpy(text, buf.ptr, buf.size);
    text[buf.size] = '\0';
    *out = text;
    return 0;
}

int clr_git_read_file(char **out, size_t *len, char commit_hex[CLR_GIT_OID_HEX_SIZE],
                      const char *repo_path, const clr_git_repo_id *expect_id, const char *rev,
                      const char *path, size_t max, clr_error *err)
{
    *out = NULL;
    *len = 0;
    LIBGIT2_SCOPE(err);
    if (!repo_path || !path)
        return clr_error_set(err, CLR_E_INVALID, EINVAL, "reading a file needs a repository and a path");
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    if (open_repo(&repo, repo_path, expect_id, NULL, err) < 0)
        return -1;
    _cleanup_git_(git_commit_free) git_commit *commit = NULL;
    if (resolve_commit(&commit, repo, rev ? rev : "HEAD", repo_path, err) < 0)
        return -1;
    git_oid_tostr(commit_hex, CLR_GIT_OID_HEX_SIZE, git_commit_id(commit));
    _cleanup_git_(git_tree_free) git_tree *tree = NULL;
    if (git_commit_tree(&tree, commit) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading the tree of %s in %s", commit_hex, repo_path);
    git_tree_entry *entry = NULL;
    int rc = git_tree_entry_bypath(&entry, tree, path);
    if (rc == GIT_ENOTFOUND)
        return 0;
    if (rc < 0)
        return git_fail(err, CLR_E_INTERNAL, "looking up %s in %s", path, commit_hex);
    git_filemode_t mode = git_tree_entry_filemode(entry);
    git_oid id = *git_tree_entry_id(entry);
    git_tree_entry_free(entry);
    if (mode != GIT_FILEMODE_BLOB && mode != GIT_FILEMODE_BLOB_EXECUTABLE)
        return clr_error_set(err, CLR_E_INVALID, 0, "%s in commit %.12s is not a regular file",
                             path, commit_hex);
    _cleanup_git_(git_blob_free) git_blob *blob = NULL;
    if (git_blob_lookup(&blob, repo, &id) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading %s of commit %s", path, commit_hex);
    git_object_size_t size = git_blob_rawsize(blob);
    if (size > max)
        return clr_error_set(err, CLR_E_LIMIT, 0, "%s in commit %.12s is larger than %zu bytes",
                             path, commit_hex, max);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return oom(err);
    memcpy(buf, git_blob_rawcontent(blob), (size_t)size);
    buf[size] = '\0';
    *out = buf;
    *len = (size_t)size;
    return 1;
}

int clr_git_branch_discard(const char *repo_path, const clr_git_repo_id *expect_id,
                           const char *branch, const char *commit_hex, clr_error *err)
{
    LIBGIT2_SCOPE(err);
    git_oid want;
    if (!repo_path || !branch || !commit_hex || git_oid_fromstr(&want, commit_hex) < 0)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "discarding a branch needs a repository, a branch and a commit id");
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    if (open_repo(&repo, repo_path, expect_id, NULL, err) < 0)
        return -1;
    _cleanup_git_(git_reference_free) git_reference *ref = NULL;
    int rc = git_branch_lookup(&ref, repo, branch, GIT_BRANCH_LOCAL);
    if (rc == GIT_ENOTFOUND)
        return 0;
    if (rc < 0)
        return git_fail(err, CLR_E_INTERNAL, "looking up branch %s in %s", branch, repo_path);
    const git_oid *at = git_reference_target(ref);
    if (!at || git_oid_cmp(at, &want) != 0)
        return 0;
    if (git_branch_delete(ref) < 0)
        return git_fail(err, CLR_E_CONFLICT, "deleting branch %s in %s", branch, repo_path);
    return 1;
}

/* From here on every object written through repo lands in memory and dies with repo; what the
 * repository already holds is read from it as before. libgit2 writes to the backend of highest
 * priority that can write, and skips the write of an object any backend already has, so only
 * content new to the repository is held (the walk's max_total_bytes bounds it). A diff must
 * leave the caller's object store as it found it: before issue #16 every workspace blob of
 * every diff call stayed there for good. */
static int use_memory_odb(git_repository *repo, clr_error *err)
{
    _cleanup_git_(git_odb_free) git_odb *odb = NULL;
    if (git_repository_odb(&odb, repo) < 0)
        return git_fail(err, CLR_E_INTERNAL, "opening the object database");
    /* Before writing an object libgit2 "freshens" the copy a backend already has: the loose
     * and pack backends touch its file's mtime. Without freshen libgit2 asks exists instead,
     * so the repository's files are not even touched. The backends belong to this call's
     * own repository object, opened for it and freed with it. */
    size_t n = git_odb_num_backends(odb);
    for (size_t i = 0; i < n; i++) {
        git_odb_backend *b = NULL;
        if (git_odb_get_backend(&b, odb, i) < 0)
            return git_fail(err, CLR_E_INTERNAL, "opening the object database");
        b->freshen = NULL;
    }
    git_odb_backend *mem = NULL;
    if (git_mempack_new(&mem) < 0)
        return git_fail(err, CLR_E_INTERNAL, "creating an in-memory object store");
    if (git_odb_add_backend(odb, mem, MEMPACK_PRIORITY) < 0) {
        mem->free(mem);
        return git_fail(err, CLR_E_INTERNAL, "adding an in-memory object store");
    }
    return 0; /* the database owns mem now: freed with the repository */
}

int clr_git_diff(char **out_text, const char *repo_path, const clr_git_repo_id *expect_id,
                 const char *branch_or_base, const char *workspace_dir, const clr_git_limits *lim,
                 clr_error *err)
{
    *out_text = NULL;
    if (!repo_path || !branch_or_base || !workspace_dir)
        return clr_error_set(err, CLR_E_INVALID, EINVAL,
                             "a workspace diff needs repo_path, a branch or base, and "
                             "workspace_dir");
    LIBGIT2_SCOPE(err);
    _cleanup_git_(git_repository_free) git_repository *repo = NULL;
    _cleanup_git_(git_commit_free) git_commit *base = NULL;
    _cleanup_git_(git_tree_free) git_tree *base_tree = NULL;
    _cleanup_git_(git_tree_free) git_tree *ws_tree = NULL;
    _cleanup_git_(git_diff_free) git_diff *diff = NULL;
    if (open_repo(&repo, repo_path, expect_id, NULL, err) < 0 || use_memory_odb(repo, err) < 0 ||
        resolve_commit(&base, repo, branch_or_base, repo_path, err) < 0)
        return -1;
    if (git_commit_tree(&base_tree, base) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading the tree of %s", branch_or_base);
    walk_request rq = {.repo = repo, .workspace_dir = workspace_dir, .base = base_tree,
                       .limits = lim, .in_memory = true};
    git_oid tree_id;
    skipped_list skipped = {0};
    int rc = workspace_tree(&tree_id, &skipped, &rq, err);
    skipped_list_clear(&skipped);
    if (rc < 0)
        return clr_error_prefix(err, "diffing the workspace %s", workspace_dir);
    if (git_tree_lookup(&ws_tree, repo, &tree_id) < 0)
        return git_fail(err, CLR_E_INTERNAL, "reading the workspace tree");
    if (diff_trees(&diff, repo, base_tree, ws_tree, err) < 0)
        return -1;
    return patch_text(out_text, diff, err);
}
