/* A sandbox's workspace as a commit on its branch, with trailers that tie the commit to the
 * sandbox that produced it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clearing/gitws.h"
#include "clearing/verdict.h"
#include "internal.h"

bool clr_commit_claims_clearing(const char *text)
{
    for (const char *line = text; line && *line;) {
        const char *p = line + strspn(line, " \t");
        if (!strncasecmp(p, "Clearing-", 9))
            return true;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

/* Sandboxes made before the repository's identity was recorded (no repo-id label): the path
 * alone cannot say the repository is still the one that was checked. */
static int no_repo_id(const clr_sandbox_info *info, clr_error *err)
{
    return clr_error_set(err, CLR_E_CONFLICT, 0,
                         "sandbox %s was created by an older clearing that did not record which "
                         "repository it checked: create a new sandbox from the repository",
                         info->id);
}

/* The seal of a signed commit: the statement of tree, parent and trailers, signed, written into
 * the caller's line (len bytes); the statement is freed on return. */
static int seal_verdict(char *line, size_t len, const char *tree_hex, const char *parent_hex,
                        const char *const *trailers, void *ctx, clr_error *err)
{
    const clr_verdict_key *key = ctx;
    _cleanup_free_ char *statement = NULL;
    if (clr_verdict_statement(&statement, tree_hex, parent_hex, trailers, err) < 0)
        return -1;
    return clr_verdict_sign(line, len, key, statement, err);
}

/* *out is filled by clr_git_commit(): the caller releases it with clr_git_commit_result_clear().
 * The trailers are the caller's and this frame's; nothing else is allocated here. */
int clr_sandbox_commit(clr_git_commit_result *out, const clr_sandbox *sb, const char *message,
                       const char *author_name, const char *author_email,
                       const char *const *extra_trailers, const clr_verdict_key *sign_with,
                       clr_error *err)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    if (!info->repo[0])
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "sandbox %s was not created from a repository: nothing to commit to",
                             info->id);
    if (message && clr_commit_claims_clearing(message))
        return clr_error_set(err, CLR_E_INVALID, 0,
                             "the commit message has a line starting with \"Clearing-\": those "
                             "lines are written by clearing alone (a verdict, a signature); "
                             "reword the line");
    char t_sb[96], t_img[320], t_rt[96], t_base[96];
    snprintf(t_sb, sizeof(t_sb), "Clearing-Sandbox: %s", info->id);
    snprintf(t_img, sizeof(t_img), "Clearing-Image: %s", info->image);
    snprintf(t_rt, sizeof(t_rt), "Clearing-Runtime: %s%s", info->runtime,
             info->insecure ? " (insecure)" : "");
    snprintf(t_base, sizeof(t_base), "Clearing-Base: %s", info->base_commit);
    const char *trailers[CLR_GIT_TRAILERS_MAX + 1] = {t_sb, t_img, t_rt, t_base};
    size_t n = 4;
    for (const char *const *t = extra_trailers; t && *t; t++) {
        if (n == CLR_GIT_TRAILERS_MAX - 1) /* one is kept for the seal */
            return clr_error_set(err, CLR_E_LIMIT, E2BIG,
                                 "a commit carries at most %d trailers",
                                 CLR_GIT_TRAILERS_MAX - 1);
        trailers[n++] = *t;
    }
    trailers[n] = NULL;
    clr_git_commit_options o = CLR_GIT_COMMIT_OPTIONS_INIT;
    if (!info->repo_id.ino)
        return no_repo_id(info, err);
    o.repo_path = info->repo;
    o.expect_id = &info->repo_id;
    o.branch = info->branch;
    o.workspace_dir = clr_sandbox_workspace(sb);
    o.message = message && *message ? message : "Changes made in a clearing sandbox";
    o.author_name = author_name;
    o.author_email = author_email;
    o.trailers = trailers;
    if (sign_with) {
        o.seal = seal_verdict;
        o.seal_ctx = (void *)sign_with;
    }
    return clr_git_commit(out, &o, err);
}

/* *out is clr_git_diff()'s text: the caller frees it. */
int clr_sandbox_diff(char **out, const clr_sandbox *sb, clr_error *err)
{
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    if (!info->repo[0])
        return clr_error_set(err, CLR_E_CONFLICT, 0,
                             "sandbox %s was not created from a repository: nothing to diff",
                             info->id);
    clr_git_limits lim = CLR_GIT_LIMITS_INIT;
    if (!info->repo_id.ino)
        return no_repo_id(info, err);
    return clr_git_diff(out, info->repo, &info->repo_id, info->base_commit,
                        clr_sandbox_workspace(sb), &lim, err);
}
