/* Files, paths: the library's side of files_path.h (lib/files_path.c). A path from a caller is
 * checked and put in canonical form (norm_path); every lookup beneath a directory descriptor
 * goes through openat2 with no symlink followed anywhere (clr_files_open_beneath), and the
 * errno of a failed lookup becomes a message in the caller's terms (clr_files_path_error).
 * Every other files_*.c module, and repository admission (repoadmit.c), resolves paths here. */
#ifndef CLR_FILES_PATH_INTERNAL_H
#define CLR_FILES_PATH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "clearing/files_path.h"

/* A validated path in canonical form: components joined by single '/', no "." components, no
 * trailing '/'; "" is the root. */
typedef struct {
    char s[CLR_FILES_PATH_MAX + 1];
    size_t depth; /* number of components */
    size_t last;  /* offset of the last component */
} norm_path;

/* Checks rel (len bytes, not a string) as clr_files_check_path_n() does and fills *out with
 * its canonical form. 0, or -1 with err set. */
int clr_files_normalize(norm_path *out, const char *rel, size_t len, clr_error *err);
/* The same for a NUL-terminated rel (NULL: refused). */
int clr_files_normalize_str(norm_path *out, const char *rel, clr_error *err);

/* A path being built during a walk, with the entry names pushed and popped as we descend. */
typedef struct {
    char s[CLR_FILES_PATH_MAX + 1];
    size_t len;
} path_buf;

/* Appends "/name" (or "name" at the start); returns the previous length for pop, or -1 when
 * the result would be longer than CLR_FILES_PATH_MAX. */
ssize_t clr_files_path_push(path_buf *p, const char *name);
/* Goes back to the length clr_files_path_push() returned. */
void clr_files_path_pop(path_buf *p, ssize_t old);

/* openat2() beneath dirfd with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
 * and flags | O_CLOEXEC | O_NOFOLLOW; "" (or NULL) means dirfd itself. Retried when the kernel
 * answers EAGAIN (a concurrent rename). Returns a descriptor the caller closes, or -errno. */
int clr_files_open_beneath(int dirfd, const char *path, int flags);

/* Opens the directory dir (canonical, "" = dirfd itself) beneath dirfd, one level at a time,
 * each looked up with openat2 from the level above. With create, missing levels are made
 * (0755, owned by the sandbox user); a level replaced by a symlink meanwhile stops the walk.
 * Returns a descriptor the caller closes, or -errno; -ELOOP when a level is a symlink. */
int clr_files_open_dir(int dirfd, const char *dir, bool create);

/* Opens the directory holding p's last component (as clr_files_open_dir); *name points at that
 * component in p. Returns a descriptor the caller closes, or -errno. */
int clr_files_open_parent(int root, const norm_path *p, bool create, const char **name);

/* Turns the errno e of a failed operation on a workspace path into a clr_error whose message
 * says what went wrong in the caller's terms ("what 'rel': ..."). Returns -1. */
int clr_files_path_error(clr_error *err, int e, const char *what, const char *rel);

/* "a FIFO", for messages that tell the caller why a file was refused (a static string). */
const char *clr_files_mode_phrase(mode_t mode);

/* Writes prefix and 16 random hex digits into buf (len bytes): a name no one can guess, so the
 * sandbox cannot prepare something under it. 0, or -1 with err set. */
int clr_files_random_name(char *buf, size_t len, const char *prefix, clr_error *err);

#endif
