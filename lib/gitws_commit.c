/* Git workspaces, the commit: the workspace's tree as the branch's next commit, with its
 * trailers and seal, the branch moved by compare-and-swap (gitws_commit.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <git2.h>

#include "clearing/gitws_commit.h"
#include "gitws_diff_internal.h"
#include "gitws_repo_internal.h"
#include "gitws_walk_internal.h"
#include "internal.h"

#define DEFAULT_AUTHOR_NAME "clearing"
#define DEFAULT_AUTHOR_EMAIL "clearing@localhost"

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
        return clr_gitws_oom(err);
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
    return clr_gitws_check_branch_name(o->branch, err);
}

static int fill_diffstat(clr_git_commit_result *out, git_repository *repo, git_tree *old_tree,
                         git_tree *new_tree, clr_error *err)
{
    _cleanup_git_(git_diff_free) git_diff *diff = NULL;
    _cleanup_git_(git_diff_stats_free) git_diff_stats *stats = NULL;
    _cleanup_git_buf_ git_buf buf = GIT_BUF_INIT;
    if (clr_gitws_diff_trees(&diff, repo, old_tree, new_tree, err) < 0)
        return -1;
    if (git_diff_get_stats(&stats, diff) < 0 ||
        git_diff_stats_to_buf(&buf, stats, GIT_DIFF_STATS_FULL | GIT_DIFF_STATS_INCLUDE_SUMMARY,
                              80) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "computing the diffstat");
    out->files_changed = git_diff_stats_files_changed(stats);
    out->insertions = git_diff_stats_insertions(stats);
    out->deletions = git_diff_stats_deletions(stats);
    out->stat_text = strndup(buf.ptr ? buf.ptr : "", buf.size);
    return out->stat_text ? 0 : clr_gitws_oom(err);
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
        return clr_gitws_fail(err, CLR_E_CONFLICT,
                              "branch %s moved while the workspace was being committed; "
                              "commit again",
                              branch);
    if (rc < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "moving branch %s", branch);
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
        clr_gitws_oid_hex(tree_hex, git_tree_id(tree));
        clr_gitws_oid_hex(parent_hex, git_commit_id(parent));
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
        return clr_gitws_fail(err, CLR_E_INVALID, "author \"%.100s\" <%.100s>",
                              o->author_name ? o->author_name : DEFAULT_AUTHOR_NAME,
                              o->author_email ? o->author_email : DEFAULT_AUTHOR_EMAIL);
    const git_commit *parents[] = {parent};
    if (git_commit_create(id, repo, NULL, sig, sig, NULL, message, tree, 1, parents) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "creating the commit");
    return 0;
}

static int commit_tree(clr_git_commit_result *out, git_repository *repo, git_reference *ref,
                       const git_commit *parent, git_tree *parent_tree, const git_oid *tree_id,
                       const clr_git_commit_options *o, clr_error *err)
{
    if (git_oid_equal(tree_id, git_tree_id(parent_tree))) {
        clr_gitws_oid_hex(out->commit, git_commit_id(parent));
        out->stat_text = strdup("");
        return out->stat_text ? 0 : clr_gitws_oom(err);
    }
    _cleanup_git_(git_tree_free) git_tree *tree = NULL;
    if (git_tree_lookup(&tree, repo, tree_id) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading the new tree");
    git_oid id;
    if (write_commit(&id, repo, o, tree, parent, err) < 0 ||
        move_branch(repo, ref, &id, git_commit_id(parent), o->branch, err) < 0)
        return -1;
    out->changed = true;
    clr_gitws_oid_hex(out->commit, &id);
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
    if (clr_gitws_open_repo(&repo, o->repo_path, o->expect_id, NULL, err) < 0)
        return -1;
    int rc = git_branch_lookup(&ref, repo, o->branch, GIT_BRANCH_LOCAL);
    if (rc < 0)
        return clr_gitws_fail(err, rc == GIT_ENOTFOUND ? CLR_E_NOT_FOUND : CLR_E_INTERNAL,
                              "branch %s in %s (prepare the workspace first)", o->branch,
                              o->repo_path);
    if (clr_gitws_refuse_checked_out(ref, o->branch, o->repo_path, err) < 0)
        return -1;
    if (git_reference_peel(&parent, ref, GIT_OBJECT_COMMIT) < 0 ||
        git_commit_tree(&parent_tree, (git_commit *)parent) < 0)
        return clr_gitws_fail(err, CLR_E_INTERNAL, "reading the tip of %s", o->branch);
    walk_request rq = {.repo = repo, .workspace_dir = o->workspace_dir, .base = parent_tree,
                       .limits = &o->limits, .hook = o->test_hook, .hook_data = o->test_hook_data};
    git_oid tree_id;
    skipped_list skipped = {0};
    if (clr_gitws_workspace_tree(&tree_id, &skipped, &rq, err) < 0)
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
    clr_gitws_skipped_list_clear(&l);
    free(r->stat_text);
    memset(r, 0, sizeof(*r));
}
