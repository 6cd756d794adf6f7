/* Where the in-sandbox agent (clearing-agent) is: the one binary every sandbox mounts as its
 * PID 1 and per-command supervisor. Looked for, in order, at:
 *   1. the path the caller gives (clr_sandbox_options.agent_path), else $CLEARING_AGENT: an
 *      explicit choice always wins, and one that names no executable is an error, never a reason
 *      to fall back to another agent;
 *   2. the agent of the build tree this program was built in, only when the running program is
 *      that build tree's `clearing` itself (the same file as /proc/self/exe), so a build works
 *      where it stands and an installed copy never picks up a build tree;
 *   3. the installed agent, <libexecdir>/clearing/clearing-agent. */
#ifndef CLEARING_AGENT_H
#define CLEARING_AGENT_H

#include "common.h"

typedef enum {
    CLR_AGENT_FROM_OPTION,     /* the caller's path */
    CLR_AGENT_FROM_ENV,        /* $CLEARING_AGENT */
    CLR_AGENT_FROM_BUILD_TREE, /* next to the build tree's clearing */
    CLR_AGENT_FROM_INSTALL,    /* <libexecdir>/clearing/clearing-agent */
} clr_agent_source;

/* The places looked at, as the build configured them. build_cli and build_agent are NULL in a
 * build configured without them (-Dbuild_tree_agent=false, as a package build does). */
typedef struct clr_agent_places {
    const char *explicit_path; /* NULL or "": none given */
    const char *env;           /* $CLEARING_AGENT; NULL or "": unset */
    const char *self_exe;      /* the running program, "/proc/self/exe" */
    const char *build_cli;     /* the build tree's clearing */
    const char *build_agent;   /* the build tree's clearing-agent */
    const char *installed;     /* the installed agent */
} clr_agent_places;

/* The agent's path to out (len bytes with the NUL) and, if source is not NULL, where it came
 * from. explicit_path may be NULL. -1 with err (CLR_E_UNAVAILABLE) naming every place looked at
 * and why each did not serve, and what to do. */
CLR_PUBLIC int clr_agent_locate(char *out, size_t len, const char *explicit_path,
                                clr_agent_source *source, clr_error *err);
/* The same over given places (what clr_agent_locate fills in from the build and the
 * environment): for tests. */
CLR_PUBLIC int clr_agent_locate_in(char *out, size_t len, const clr_agent_places *places,
                                   clr_agent_source *source, clr_error *err);
/* The running program is the build tree's clearing (step 2 above would apply to it): false in
 * an installed or copied binary and in builds without -Dbuild_tree_agent. */
CLR_PUBLIC bool clr_agent_in_build_tree(void);
/* "option", "CLEARING_AGENT", "build tree", "installed". */
CLR_PUBLIC const char *clr_agent_source_name(clr_agent_source source);

#endif
