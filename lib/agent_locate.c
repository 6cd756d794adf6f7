/* Finding the in-sandbox agent: the caller's path, $CLEARING_AGENT, the build tree's agent (for
 * the build tree's own clearing only) or the installed one (include/clearing/agent.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clearing/agent.h"
#include "clr-config.h"

const char *clr_agent_source_name(clr_agent_source source)
{
    switch (source) {
    case CLR_AGENT_FROM_OPTION: return "option";
    case CLR_AGENT_FROM_ENV: return "CLEARING_AGENT";
    case CLR_AGENT_FROM_BUILD_TREE: return "build tree";
    case CLR_AGENT_FROM_INSTALL: return "installed";
    default: return "unknown";
    }
}

/* Why path cannot serve as the agent ("" when it can): not absolute, missing, not executable. */
static const char *unusable(const char *path, char *why, size_t len)
{
    struct stat st;
    if (path[0] != '/')
        snprintf(why, len, "not an absolute path");
    else if (stat(path, &st) < 0)
        snprintf(why, len, "%s", strerror(errno));
    else if (!S_ISREG(st.st_mode))
        snprintf(why, len, "not a regular file");
    else if (access(path, X_OK) < 0)
        snprintf(why, len, "not executable: %s", strerror(errno));
    else
        why[0] = '\0';
    return why;
}

/* One explicit choice: used as it is, or an error; never a fallback to another agent. */
static int explicit_choice(char *out, size_t len, const char *path, const char *what,
                           clr_error *err)
{
    char why[128];
    if (*unusable(path, why, sizeof(why)))
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the in-sandbox agent %s (%s) cannot be used: %s; point %s at "
                             "clearing-agent (ninja builds it as <build>/agent/clearing-agent), "
                             "or unset it to use the agent clearing was built or installed with",
                             path, what, why, what);
    if (strlen(path) >= len)
        return clr_error_set(err, CLR_E_INVALID, 0, "the agent's path %.100s... is too long",
                             path);
    snprintf(out, len, "%s", path);
    return 0;
}

/* The running program is the build tree's clearing (the same file, whatever path led to it). */
static bool is_build_cli(const clr_agent_places *p)
{
    struct stat self, cli;
    return p->build_cli && p->self_exe && stat(p->self_exe, &self) == 0 &&
           stat(p->build_cli, &cli) == 0 && self.st_dev == cli.st_dev &&
           self.st_ino == cli.st_ino;
}

int clr_agent_locate_in(char *out, size_t len, const clr_agent_places *p,
                        clr_agent_source *source, clr_error *err)
{
    clr_agent_source from = CLR_AGENT_FROM_OPTION;
    if (!source)
        source = &from;
    if (p->explicit_path && *p->explicit_path) {
        *source = CLR_AGENT_FROM_OPTION;
        return explicit_choice(out, len, p->explicit_path, "the agent path option", err);
    }
    if (p->env && *p->env) {
        *source = CLR_AGENT_FROM_ENV;
        return explicit_choice(out, len, p->env, "CLEARING_AGENT", err);
    }
    char build_why[256] = "not configured in this build";
    if (p->build_agent && !is_build_cli(p))
        snprintf(build_why, sizeof(build_why), "not used: this program is not %s", p->build_cli);
    else if (p->build_agent && *unusable(p->build_agent, build_why, sizeof(build_why)) == '\0' &&
             strlen(p->build_agent) < len) {
        *source = CLR_AGENT_FROM_BUILD_TREE;
        snprintf(out, len, "%s", p->build_agent);
        return 0;
    }
    char inst_why[128];
    if (*unusable(p->installed, inst_why, sizeof(inst_why)) == '\0' &&
        strlen(p->installed) < len) {
        *source = CLR_AGENT_FROM_INSTALL;
        snprintf(out, len, "%s", p->installed);
        return 0;
    }
    return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                         "the in-sandbox agent clearing-agent was not found. Looked at: "
                         "CLEARING_AGENT (not set); the build tree's %s (%s); the installed "
                         "%s (%s). Build it (ninja -C <build>), install clearing (make install, "
                         "or meson install -C <build>), or set CLEARING_AGENT to its path",
                         p->build_agent ? p->build_agent : "agent", build_why, p->installed,
                         inst_why);
}

bool clr_agent_in_build_tree(void)
{
#ifdef CLR_BUILD_TREE_CLI
    clr_agent_places p = {.self_exe = "/proc/self/exe", .build_cli = CLR_BUILD_TREE_CLI};
    return is_build_cli(&p);
#else
    return false;
#endif
}

int clr_agent_locate(char *out, size_t len, const char *explicit_path, clr_agent_source *source,
                     clr_error *err)
{
    clr_agent_places p = {
        .explicit_path = explicit_path,
        .env = getenv("CLEARING_AGENT"),
        .self_exe = "/proc/self/exe",
#ifdef CLR_BUILD_TREE_CLI
        .build_cli = CLR_BUILD_TREE_CLI,
        .build_agent = CLR_BUILD_TREE_AGENT,
#endif
        .installed = CLR_AGENT_INSTALLED_PATH,
    };
    return clr_agent_locate_in(out, len, &p, source, err);
}
