/* Git workspaces: a sandbox works on its own branch of a host repository, without ever seeing
 * the repository itself.
 *
 * clr_git_prepare() creates the branch and writes its tree into the (empty) workspace; the
 * sandbox gets plain files and no .git. clr_git_commit() turns whatever the sandbox left in the
 * workspace into one commit on that branch; clr_git_diff() shows the same change as a patch.
 *
 * Everything in a workspace after the sandbox ran is written by an adversary and may change
 * while we read it. The walk that reads it therefore opens every entry relative to its parent
 * directory's descriptor with O_NOFOLLOW and reads from the descriptor it checked: symlinks are
 * committed as links (their target as-is, never followed), FIFOs, sockets, devices and anything
 * named .git (at any level, in any case or NTFS/HFS spelling) are skipped and reported, and
 * sizes, counts and depth are bounded before anything is read. No hook, filter or config of the
 * workspace is ever consulted; .gitignore rules come from the branch's tree in the object
 * database, never from the workspace.
 *
 * The caller's own checkout is never touched: no HEAD, index, working-tree file or other branch
 * changes, and a branch that is checked out anywhere is refused. */
#ifndef CLEARING_GITWS_H
#define CLEARING_GITWS_H

#include <sys/types.h>

#include "common.h"

/* 40 hex digits and a NUL (libgit2 1.5 repositories are SHA-1). */
#define CLR_GIT_OID_HEX_SIZE 41
/* Longest branch name accepted (without "refs/heads/"), plus the NUL. */
#define CLR_GIT_BRANCH_SIZE 256

/* Bounds on what one walk of a workspace may read; 0 in any field means its default. */
typedef struct clr_git_limits {
    uint64_t max_file_bytes;  /* largest file, by its fstat size (sparse or not); 100 MiB */
    uint64_t max_total_bytes; /* sum of file and link-target sizes; 1 GiB */
    uint64_t max_files;       /* directory entries visited, of every kind; 100000 */
    uint32_t max_depth;       /* directory levels below the workspace root; 64 (at most 1024) */
} clr_git_limits;

#define CLR_GIT_LIMITS_INIT                                                                       \
    {                                                                                             \
        .max_file_bytes = 100ull << 20, .max_total_bytes = 1ull << 30, .max_files = 100000,       \
        .max_depth = 64,                                                                          \
    }

/* Which git directory a repository path led to, by device and inode: what the daemon checked
 * when it admitted the path (clr_repo_admit), and what every later open of the path must find
 * again, so that a directory swapped for a symlink, a .git replaced by a gitfile, or another
 * repository moved in at the same path is refused instead of written to. */
typedef struct clr_git_repo_id {
    uint64_t dev;
    uint64_t ino;
} clr_git_repo_id;

/* Every function below that opens a repository also refuses one whose git directory shares
 * its refs or objects with another (a linked worktree's commondir, objects/info/alternates),
 * and, given an expected clr_git_repo_id (NULL: whatever is at the path, for a local caller
 * that trusts its own paths), one whose git directory is not that one: CLR_E_CONFLICT. */

typedef struct clr_git_prepare_options {
    const char *repo_path;     /* the host repository (work tree or .git directory); required */
    const clr_git_repo_id *expect_id; /* see above; NULL: not checked */
    const char *base_ref;      /* anything git rev-parse understands; NULL: HEAD */
    const char *branch;        /* NULL: "clearing/<sandbox_id>" */
    const char *sandbox_id;    /* names the default branch; required when branch is NULL */
    bool reuse_branch;         /* an existing branch is continued from its tip, not refused */
    /* A ref no sandbox may write (the operator's gauntlet_ref); HEAD's branch never may. */
    const char *protect_ref;
    const char *workspace_dir; /* the workspace on the host; must exist and be empty */
    uid_t uid;                 /* owner given to everything written into the workspace */
    gid_t gid;
} clr_git_prepare_options;

#define CLR_GIT_PREPARE_OPTIONS_INIT {.uid = 1000, .gid = 1000}

/* What clr_git_prepare() set up. */
typedef struct clr_git_workspace {
    char branch[CLR_GIT_BRANCH_SIZE];     /* short name ("clearing/sb-...") */
    char base_commit[CLR_GIT_OID_HEX_SIZE];  /* base_ref, resolved */
    char start_commit[CLR_GIT_OID_HEX_SIZE]; /* what the workspace holds: base, or the reused tip */
    clr_git_repo_id repo_id; /* the git directory that was opened */
} clr_git_workspace;

/* Resolves base_ref to a commit, creates the branch there (or, with reuse_branch, continues an
 * existing one from its tip) and writes that commit's tree into workspace_dir, without filters,
 * without a .git and without touching the repository's index or working tree; then gives every
 * entry of the workspace to uid:gid. Call it before the sandbox starts: the workspace must be
 * empty, since checking out into a directory the sandbox has written could follow its symlinks.
 * A branch this call created is deleted again when a later step fails.
 * Errors: CLR_E_INVALID (missing option, bad branch name), CLR_E_NOT_FOUND (no repository, no
 * such ref or workspace), CLR_E_CONFLICT (branch exists without reuse_branch, branch checked
 * out, workspace not empty), CLR_E_INTERNAL (libgit2 or the filesystem failed). */
CLR_PUBLIC int clr_git_prepare(clr_git_workspace *out, const clr_git_prepare_options *o,
                               clr_error *err);

/* Test-only: called by the workspace walk between classifying an entry (lstat) and opening it,
 * the window in which a hostile sandbox could swap it, on every attempt (an entry that changed
 * type is looked at again, up to three times); path is relative to the workspace. Lets tests
 * race the walk deterministically. Leave NULL in production. */
typedef void (*clr_git_walk_hook)(int dirfd, const char *name, const char *path, void *data);

/* At most this many trailers on a commit, and this long the line a seal writes. */
#define CLR_GIT_TRAILERS_MAX 64
#define CLR_GIT_SEAL_MAX 512

/* Writes into line (size len, NUL-terminated, no newline) one more "Key: value" trailer for a
 * commit about to be written with tree tree_hex on parent parent_hex and the trailers before
 * it (NULL-terminated): a signature over all of them. -1 with err set: nothing is written. */
typedef int (*clr_git_seal_fn)(char *line, size_t len, const char *tree_hex,
                               const char *parent_hex, const char *const *trailers, void *ctx,
                               clr_error *err);

typedef struct clr_git_commit_options {
    const char *repo_path;     /* required */
    const clr_git_repo_id *expect_id; /* NULL: not checked */
    const char *branch;        /* the branch clr_git_prepare() made; required */
    const char *workspace_dir; /* required */
    const char *message;       /* the commit message; required, non-empty */
    const char *author_name;   /* NULL: "clearing"; also the committer */
    const char *author_email;  /* NULL: "clearing@localhost" */
    /* "Key: value" lines appended after a blank line, NULL-terminated; may be NULL. */
    const char *const *trailers;
    clr_git_limits limits;
    clr_git_seal_fn seal; /* NULL: no seal; called once the tree is known (see above) */
    void *seal_ctx;
    clr_git_walk_hook test_hook; /* test-only, see clr_git_walk_hook */
    void *test_hook_data;
} clr_git_commit_options;

#define CLR_GIT_COMMIT_OPTIONS_INIT {.limits = CLR_GIT_LIMITS_INIT}

/* An entry of the workspace that was not committed, and why. */
typedef struct clr_git_skipped {
    /* Relative to the workspace. Raw bytes chosen by the sandbox (any byte but NUL, '/' as the
     * separator): escape it before showing it anywhere. */
    char *path;
    /* A static string: ".git", "fifo", "socket", "char-device", "block-device", "unknown",
     * "gitmodules-symlink" (rejected by git fsck), "invalid-name" (refused by libgit2),
     * "unstable" (changed type on every attempt to read it). */
    const char *kind;
} clr_git_skipped;

typedef struct clr_git_commit_result {
    char commit[CLR_GIT_OID_HEX_SIZE]; /* the new commit, or the unchanged tip */
    char branch[CLR_GIT_BRANCH_SIZE];
    bool changed;          /* false: the workspace equals the tip's tree, nothing committed */
    size_t files_changed;  /* diffstat against the parent, renames detected */
    size_t insertions;
    size_t deletions;
    char *stat_text;       /* git's --stat text ("a => b | 0", summary line); "" if unchanged */
    clr_git_skipped *skipped; /* in walk order */
    size_t n_skipped;
} clr_git_commit_result;

/* Commits the workspace as the branch's next commit: the tree is built from the walk described
 * at the top (executable bit from any x bit, empty directories dropped, gitlinks of the parent
 * kept where the workspace still has a directory), untracked paths matching the parent tree's
 * .gitignore files are left out (the tip's: a .gitignore a sandbox committed on a reused branch
 * governs the next commit; ignoring is tidiness, not a security boundary, and the cost of the
 * rules is bounded), and the branch is moved with a compare-and-swap from the
 * parent, so a concurrent commit is never lost. When the tree equals the parent's, nothing is
 * written and changed is false. *out is filled on success and must be released with
 * clr_git_commit_result_clear() (also safe after a failure).
 * Errors: CLR_E_INVALID, CLR_E_NOT_FOUND (no branch: call clr_git_prepare first),
 * CLR_E_CONFLICT (the branch moved during the commit, or is checked out), CLR_E_LIMIT (a file,
 * the total, the entry count, the depth, or the cost of the ignore rules is over its bound; the
 * message names the path), CLR_E_INTERNAL. */
CLR_PUBLIC int clr_git_commit(clr_git_commit_result *out, const clr_git_commit_options *o,
                              clr_error *err);

CLR_PUBLIC void clr_git_commit_result_clear(clr_git_commit_result *r);

/* A unified diff, in git's patch format with renames detected and binary files marked as
 * binary, from the tree of branch_or_base (any rev-parse spec) to the workspace, walked and
 * filtered exactly as clr_git_commit() would; "" when nothing differs. Nothing in the
 * repository changes: the workspace's blobs and trees are held in memory for the call (at
 * most lim's max_total_bytes of content new to the repository), never written to its object
 * store. lim may be NULL (defaults).
 * *out_text is owned by the caller (free()). Errors as clr_git_commit(). */
CLR_PUBLIC int clr_git_diff(char **out_text, const char *repo_path,
                            const clr_git_repo_id *expect_id, const char *branch_or_base,
                            const char *workspace_dir, const clr_git_limits *lim,
                            clr_error *err);

/* Deletes branch from the repository at repo_path if it still points at commit_hex: the undo
 * of clr_git_prepare() for a run that ends without committing, so such a run leaves no branch.
 * The deletion is a compare-and-swap against commit_hex (libgit2 checks the old value under the
 * ref lock): a branch that anyone moved meanwhile is kept. Returns 1 when deleted, 0 when the
 * branch is missing or elsewhere, -1 on an error (a checked-out branch is refused by libgit2). */
CLR_PUBLIC int clr_git_branch_discard(const char *repo_path, const clr_git_repo_id *expect_id,
                                      const char *branch, const char *commit_hex,
                                      clr_error *err);

/* Reads the regular file path (relative, '/'-separated) from the tree of the commit rev names
 * (any rev-parse spec; NULL: HEAD) in the repository at repo_path, without touching any working
 * tree. commit_hex gets the commit rev resolved to, so the caller can pin it. *out (caller
 * frees) holds the bytes plus a NUL, *len their number. Returns 1 when read, 0 when the commit
 * has no such path (*out NULL), -1 on an error: CLR_E_NOT_FOUND (no repository, no such rev),
 * CLR_E_INVALID (not a regular file: a symlink, a directory, a submodule), CLR_E_LIMIT (larger
 * than max bytes). */
CLR_PUBLIC int clr_git_read_file(char **out, size_t *len, char commit_hex[CLR_GIT_OID_HEX_SIZE],
                                 const char *repo_path, const clr_git_repo_id *expect_id,
                                 const char *rev, const char *path, size_t max, clr_error *err);

/* ---- pure helpers, exposed for tests and tools ---- */

/* Does a gitignore glob match a '/'-separated relative path? git's wildmatch with WM_PATHNAME:
 * '*', '?' and '[...]' (ranges, '!' or '^' negation, [:alpha:]-style classes) never match '/';
 * "**" matches across directories only as a whole component ("**" + "/" at the start, "/" +
 * "**" at the end, "/" + "**" + "/" inside), elsewhere it is a plain '*'; '\' escapes. A
 * malformed pattern (unclosed '[') matches nothing. */
CLR_PUBLIC bool clr_git_glob_match(const char *pattern, const char *path);

/* The rules of one .gitignore file, chained to those of the directories above it. */
typedef struct clr_git_ignore clr_git_ignore;

/* Parses a .gitignore's text (at most len bytes; lines past 1 MiB or 10000 rules are not read)
 * found in directory dir ("" for the top, "a/b" below; no trailing '/'). parent (may be NULL)
 * holds the rules of the directories above and must outlive *out (clr_git_ignore_free). */
CLR_PUBLIC int clr_git_ignore_parse(clr_git_ignore **out, const clr_git_ignore *parent,
                                    const char *dir, const char *text, size_t len,
                                    clr_error *err);

CLR_PUBLIC void clr_git_ignore_free(clr_git_ignore *ig);

/* Is path (relative to the top, a directory if is_dir) ignored by ig and its parents? Deeper
 * files win over shallower ones, later lines over earlier ones, a '!' line re-includes. The
 * caller applies git's other rule itself: everything inside an ignored directory is ignored. */
CLR_PUBLIC bool clr_git_ignored(const clr_git_ignore *ig, const char *path, bool is_dir);

/* Does text hold a line that starts (after blanks) with "Clearing-", in any case? Such lines
 * in a commit message are written by clearing alone: a client's message or trailer that has
 * one is refused, so no client can stamp a verdict. Defined in lib/commit.c. */
CLR_PUBLIC bool clr_commit_claims_clearing(const char *text);

/* The sandbox's workspace as one commit on its branch, with trailers Clearing-Sandbox, -Image,
 * -Runtime, -Base and the given extra ones ("Key: value"), and with sign_with (NULL: unsigned)
 * a Clearing-Signature over them, the tree and the parent (verdict.h). CLR_E_CONFLICT for a
 * sandbox made without a repository; CLR_E_INVALID for a message with a "Clearing-" line.
 * Defined in lib/commit.c. */
struct clr_sandbox;
struct clr_verdict_key;
CLR_PUBLIC int clr_sandbox_commit(clr_git_commit_result *out, const struct clr_sandbox *sb,
                                  const char *message, const char *author_name,
                                  const char *author_email, const char *const *extra_trailers,
                                  const struct clr_verdict_key *sign_with, clr_error *err);
/* Unified diff of the workspace against the sandbox's base commit; caller frees. */
CLR_PUBLIC int clr_sandbox_diff(char **out, const struct clr_sandbox *sb, clr_error *err);

#endif
