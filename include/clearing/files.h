/* Host-side file operations on a sandbox's workspace, confined to the workspace's root directory.
 *
 * Everything inside a workspace was written by the sandboxed code and may change while we look
 * at it. Every path is therefore resolved relative to a root directory descriptor with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and final components
 * are opened with O_NOFOLLOW: a symlink anywhere in a path (also one swapped in concurrently)
 * makes the operation fail with CLR_E_INVALID instead of leading out of the workspace. Symlinks
 * are listed, archived, replaced and deleted as links, never followed.
 *
 * Paths are relative ("src/main.c"); "" and "." name the root. Every function that creates
 * something gives it to the sandbox user (1000:1000) with permission bits masked to 0777. */
#ifndef CLEARING_FILES_H
#define CLEARING_FILES_H

#include <stdatomic.h>
#include <sys/types.h>

#include "common.h"
#include "limits.h"

/* Longest path and longest component accepted (Linux's PATH_MAX - 1 and NAME_MAX). */
#define CLR_FILES_PATH_MAX 4096
#define CLR_FILES_NAME_MAX 255

/* Bytes that many operations at once may write to their outputs together (a daemon's spool of
 * downloads): an operation charges what it writes (holes it leaves cost nothing) and fails
 * with CLR_E_UNAVAILABLE, naming `name`, before a write that would take `used` past `max`.
 * The caller gives back an operation's charge (clr_files_report.charged) when its output is
 * gone: clr_files_budget_release(). */
typedef struct clr_files_budget {
    _Atomic uint64_t used;
    uint64_t max;
    const char *name; /* the setting that sets max, for messages: "max_download_total" */
} clr_files_budget;

/* Bounds on what one operation may write or read; every one applies to untrusted input. */
typedef struct clr_files_limits {
    uint64_t max_file_bytes;  /* largest single file, by its declared size (sparse or not) */
    uint64_t max_total_bytes; /* sum of file sizes in one archive */
    uint64_t max_entries;     /* entries in one archive (directories and links count) */
    uint32_t max_depth;       /* path components below the operation's directory */
    clr_files_budget *output_budget; /* clr_files_read_ext, clr_files_create_tar; NULL: none */
} clr_files_limits;

#define CLR_FILES_LIMITS_INIT                                                                     \
    {                                                                                             \
        .max_file_bytes = 1 * CLR_GIB, .max_total_bytes = 4 * CLR_GIB, .max_entries = 100000,     \
        .max_depth = 64,                                                                          \
    }

/* What an archive operation did, filled on success and, as far as it got, on failure. */
typedef struct clr_files_report {
    uint64_t entries;  /* archive entries processed */
    uint64_t files;    /* regular files written or archived */
    uint64_t dirs;     /* directories */
    uint64_t symlinks; /* symlinks */
    uint64_t bytes;    /* file bytes (declared sizes) */
    uint64_t skipped;  /* create_tar: FIFOs, sockets, devices and entries that vanished */
    uint64_t charged;  /* bytes charged to lim->output_budget, also after a failure */
    char failed_entry[CLR_FILES_PATH_MAX + 1]; /* the entry that stopped the operation, or "" */
} clr_files_report;

typedef enum {
    CLR_FILE_REGULAR = 0,
    CLR_FILE_DIRECTORY,
    CLR_FILE_SYMLINK,
    CLR_FILE_OTHER, /* FIFO, socket or device */
} clr_file_type;

/* One directory entry, as lstat(2) sees it. */
typedef struct clr_file_entry {
    char *name;        /* the entry's name (for clr_files_stat: the last path component) */
    clr_file_type type;
    uint64_t size;     /* bytes; for a symlink the length of its target */
    uint32_t mode;     /* permission bits (st_mode & 07777) */
    int64_t mtime;     /* modification time, seconds since the epoch */
    char *link_target; /* symlinks only (read, never followed), else NULL */
} clr_file_entry;

/* "file", "dir", "symlink", "other". */
CLR_PUBLIC const char *clr_files_type_name(clr_file_type type);

/* Opens workspace_dir (a trusted host path; only its last component must not be a symlink) as
 * the root descriptor every other function takes. The caller closes *out_fd.
 * Errors: CLR_E_NOT_FOUND if it does not exist, CLR_E_INVALID if it is not a directory. */
CLR_PUBLIC int clr_files_open_root(int *out_fd, const char *workspace_dir, clr_error *err);

/* Checks a caller-supplied relative path: not absolute, no ".." component, no empty component
 * (one trailing '/' is allowed), no NUL, at most CLR_FILES_PATH_MAX bytes and
 * CLR_FILES_NAME_MAX per component. "." components are allowed and ignored; "" and "." name
 * the root. Errors: CLR_E_INVALID with a message naming the problem. */
CLR_PUBLIC int clr_files_check_path(const char *rel, clr_error *err);
/* The same for a path given with its length, which is how an embedded NUL is caught. */
CLR_PUBLIC int clr_files_check_path_n(const char *rel, size_t len, clr_error *err);

/* Writes a regular file at rel, creating missing parent directories (0755, owned 1000:1000).
 * The content comes from src_fd (read to end of file, streamed: the upload is never held in
 * memory) when src_fd >= 0, else from data/len. It is written to a temporary file in the same
 * directory and renamed into place, so readers see the old file or the new one, never a part;
 * a symlink at rel is replaced, not followed. The file gets mode & 0777 and owner 1000:1000.
 * lim may be NULL for the defaults; lim->max_file_bytes caps the content and lim->max_depth
 * the path. src_fd is read but not closed.
 * Errors: CLR_E_INVALID (bad path, a symlink or non-directory on the way), CLR_E_CONFLICT (rel
 * is a directory), CLR_E_LIMIT (too large, or the workspace is full), CLR_E_INTERNAL. On
 * failure nothing is left behind except parent directories already created. */
CLR_PUBLIC int clr_files_write(int root, const char *rel, int src_fd, const void *data,
                               size_t len, uint32_t mode, const clr_files_limits *lim,
                               clr_error *err);

/* Copies the regular file at rel to out_fd (which stays open), at most its size when opened;
 * *size_out (may be NULL) gets the bytes copied. Never blocks on a FIFO.
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (not a regular file: the message names the type; a
 * symlink anywhere in rel), CLR_E_LIMIT (larger than max_bytes; nothing is written), and
 * CLR_E_INTERNAL when reading or writing fails part way (out_fd has a prefix of the file). */
CLR_PUBLIC int clr_files_read(int root, const char *rel, int out_fd, uint64_t max_bytes,
                              uint64_t *size_out, clr_error *err);

/* clr_files_read() with lim->max_file_bytes as max_bytes (lim may be NULL: defaults), what is
 * written charged to lim->output_budget (CLR_E_UNAVAILABLE when it is spent), and the size
 * copied in report->bytes. report may be NULL only without a budget. */
CLR_PUBLIC int clr_files_read_ext(int root, const char *rel, int out_fd,
                                  const clr_files_limits *lim, clr_files_report *report,
                                  clr_error *err);

/* Gives back bytes charged to budget (a report's charged), once the output they went to is
 * gone. */
CLR_PUBLIC void clr_files_budget_release(clr_files_budget *budget, uint64_t bytes);

/* Describes rel itself (a symlink is described, not followed; "" describes the root).
 * *out is allocated; free it with clr_files_entries_free(*out, 1).
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID. */
CLR_PUBLIC int clr_files_stat(clr_file_entry **out, int root, const char *rel, clr_error *err);

/* Lists the directory rel ("" or "." for the root), sorted by name, without "." and "..".
 * *out (an array of *n entries, NULL when empty) is freed with clr_files_entries_free().
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (not a directory, or a symlink on the way),
 * CLR_E_LIMIT (more than max_entries entries; nothing is returned). */
CLR_PUBLIC int clr_files_list(clr_file_entry **out, size_t *n, int root, const char *rel,
                              size_t max_entries, clr_error *err);

/* Frees an array returned by clr_files_list or clr_files_stat. NULL is fine. */
CLR_PUBLIC void clr_files_entries_free(clr_file_entry *entries, size_t n);

/* Deletes rel: a file, a symlink (the link itself) or an empty directory; with recursive, a
 * directory and everything below it, walking with O_NOFOLLOW (links inside are unlinked, never
 * followed) at most CLR_FILES_DELETE_MAX_DEPTH levels deep. The root cannot be deleted.
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID, CLR_E_CONFLICT (directory not empty and not
 * recursive, or the sandbox keeps filling it), CLR_E_LIMIT (nested too deep; what was reached
 * is deleted). */
#define CLR_FILES_DELETE_MAX_DEPTH 128
CLR_PUBLIC int clr_files_delete(int root, const char *rel, bool recursive, clr_error *err);

/* Extracts a tar archive (plain or gzip-compressed; ustar, pax or GNU) read from tar_fd into the
 * directory rel_dir ("" for the root; created with its parents if missing).
 *
 * All or nothing: entries are extracted into a fresh staging directory inside rel_dir, owned by
 * root with mode 0700 so the sandbox user cannot look into it or change it while it fills (its
 * name, ".clr-extract-<random>", is visible meanwhile); only when every entry
 * has been accepted are the results moved into rel_dir with rename(2) (existing files and
 * symlinks are replaced, existing directories merged). On any refusal the staging directory is
 * deleted and rel_dir is unchanged. Refused, failing the whole extraction with CLR_E_INVALID
 * naming the entry: absolute paths, ".." components, hardlinks, devices, FIFOs, sockets, an
 * entry through a symlink extracted earlier ("link/x"), a directory where a file was or the
 * reverse. With CLR_E_LIMIT: more than max_entries entries, a file whose declared size exceeds
 * max_file_bytes (refused before any byte is written, so a sparse giant costs nothing), a total
 * over max_total_bytes, paths deeper than max_depth. With CLR_E_CONFLICT: an extracted entry
 * whose type differs from what already exists in rel_dir (checked before anything is moved).
 * Symlinks are created as symlinks with their target verbatim. Modes are masked to 0777, the
 * owner is 1000:1000, modification times of files and links are kept, ownership, xattrs and
 * ACLs in the archive are ignored. lim may be NULL; report may be NULL. tar_fd is not closed. */
CLR_PUBLIC int clr_files_extract_tar(int root, const char *rel_dir, int tar_fd,
                                     const clr_files_limits *lim, clr_files_report *report,
                                     clr_error *err);

/* Writes a pax tar archive of rel (a file, a symlink, or a directory and everything below it)
 * to out_fd (which stays open). Entry names are relative to rel: a directory's contents appear
 * as "a", "sub/", "sub/b", a single file or link under its own name. Symlinks are stored as
 * symlinks; FIFOs, sockets, devices and entries that vanish while archiving are skipped and
 * counted in report->skipped. The tree is measured against lim before any byte is written, so a
 * too-large request fails with CLR_E_LIMIT and an empty out_fd; if the sandbox grows it while it
 * is being written, the limit is still enforced and out_fd holds a truncated archive. A file
 * that shrinks meanwhile is padded with zeros to the size recorded in its header.
 * lim and report may be NULL (report only without lim->output_budget).
 * Errors: CLR_E_NOT_FOUND, CLR_E_INVALID (bad path, special file), CLR_E_LIMIT,
 * CLR_E_UNAVAILABLE (lim->output_budget is spent; out_fd holds a prefix), CLR_E_INTERNAL
 * (writing to out_fd failed). */
CLR_PUBLIC int clr_files_create_tar(int root, const char *rel, int out_fd,
                                    const clr_files_limits *lim, clr_files_report *report,
                                    clr_error *err);

#endif
