/* Repository admission: a path a client names is resolved once, beneath one of the operator's
 * repo_roots, with no symlink followed anywhere, to a repository whose git directory is a plain
 * directory of its own; what comes out is the canonical path and the identity (device, inode)
 * of that git directory, which every later use of the repository checks against what libgit2
 * opened (see clr_git_repo_id in gitws.h).
 *
 * The daemon runs as root; without this, a symlink swapped in after a check, a .git gitfile
 * ("gitdir: /elsewhere/.git"), a symlinked .git or a commondir file inside an allowed repository
 * would hand any repository on the host to whoever can reach the API. */
#ifndef CLEARING_REPOADMIT_H
#define CLEARING_REPOADMIT_H

#include <limits.h>

#include "common.h"
#include "gitws.h"

typedef struct clr_repo_admitted {
    /* The directory the client named (a work tree, or a git directory itself), as the kernel
     * resolved it: absolute, no symlink, no "." or ".." component. */
    char path[PATH_MAX];
    clr_git_repo_id id; /* of its git directory: path/.git, or path itself */
} clr_repo_admitted;

/* Admits path if it lies beneath one of roots (NULL-terminated; each resolved with realpath,
 * since the operator chose it) as written, with no symlink in the part below the root, and is a
 * repository whose .git, when it has one, is a plain directory; the git directory may not name
 * another (commondir file, objects/info/alternates) nor have objects, refs, HEAD or config as
 * symlinks. Every refusal for where the path leads is CLR_E_DENIED with the same message, which
 * names no path (an oracle for root-only paths otherwise); a repository that is reachable but
 * of a refused shape gets a message that says which rule it breaks. CLR_E_DENIED also when
 * roots is empty (repositories not enabled). */
CLR_PUBLIC int clr_repo_admit(clr_repo_admitted *out, const char *const *roots, const char *path,
                              clr_error *err);

#endif
