/* lib/sandbox.c against the scripted engine of fake_engine.h, with a state directory in a
 * temporary directory (workspaces are tmpfs mounts: as root, else the tests that make or remove
 * one are skipped). The container spec itself is test_sandbox_spec.c's. What is checked: the
 * engine requests of a create and what it returns; what a create refuses before anything is
 * made (runtime, image, agent, options: no container, no workspace); what it undoes when the
 * engine refuses the container's create or start (the workspace, the container, the branch it
 * made in a real temporary git repository, but never a reused branch); open of bad and unknown
 * ids; list by label (broken labels listed as such); destroy (a paused container thawed first,
 * a gone one fine); and gc's choices. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_engine.h"
#include "internal.h"

#define TMPFS_MAGIC_NUMBER 0x01021994
#define API "/v1.41"
#define INFO "GET " API "/info"
#define IMAGE "GET " API "/images/"
#define CREATE "POST " API "/containers/create"
#define START "POST " API "/containers/c0ffee/start"
#define INSPECT_ANY "GET " API "/containers/clearing-"
#define DELETE_ANY "DELETE " API "/containers/"
#define LIST "GET " API "/containers/json"
#define RUNSC "{\"Runtimes\":{\"runsc\":{\"path\":\"/x/runsc\"}}}"
#define ID_A "sb-00000000000000a1"
#define ID_B "sb-00000000000000a2"
#define ID_C "sb-00000000000000a3"
#define ID_D "sb-00000000000000a4"
#define ID_E "sb-00000000000000a5"

struct fixture {
    struct fake *f;
    char dir[64];   /* the state directory */
    char agent[96]; /* an executable standing for the agent */
    char repo[96];  /* a git repository (made by the tests that use one) */
    char *bodies[16]; /* scripted answers built here: the fake keeps the pointers */
    size_t nbodies;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    void *f = NULL;
    if (fake_setup(&f) != 0)
        return -1;
    fx->f = f;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/clr-test-sandbox-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->agent, sizeof(fx->agent), "%s/clearing-agent", fx->dir);
    int fd = open(fx->agent, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    if (fd < 0)
        return -1;
    close(fd);
    snprintf(fx->repo, sizeof(fx->repo), "%s/repo", fx->dir);
    /* An engine with runsc and the image, which creates, starts and removes containers, unless
     * a test says otherwise. */
    fake_answer(fx->f, INFO, 200, RUNSC);
    fake_answer(fx->f, IMAGE, 200, "{\"Config\":{}}");
    fake_answer(fx->f, CREATE, 201, "{\"Id\":\"c0ffee\"}");
    fake_answer(fx->f, START, 204, NULL);
    fake_answer(fx->f, INSPECT_ANY, 200, "{\"State\":{\"Running\":true,\"Paused\":false}}");
    fake_answer(fx->f, DELETE_ANY, 204, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces", fx->dir);
    DIR *d = opendir(p);
    if (d) { /* what a failed test left mounted */
        struct dirent *e;
        while ((e = readdir(d))) {
            char w[512];
            snprintf(w, sizeof(w), "%s/%s", p, e->d_name);
            if (e->d_name[0] != '.')
                umount2(w, MNT_DETACH);
        }
        closedir(d);
    }
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    if (strncmp(fx->dir, "/tmp/clr-test-sandbox-", 22) == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fx->dir);
    for (size_t i = 0; i < fx->nbodies; i++)
        free(fx->bodies[i]);
    void *f = fx->f;
    fake_teardown(&f);
    free(fx);
    return 0;
}

#define NEED_ROOT()                                                                               \
    do {                                                                                          \
        if (geteuid() != 0)                                                                       \
            skip();                                                                               \
    } while (0)

/* ---- helpers ---- */

/* One engine handle per fixture, freed at the end of the test that asked for it. */
static clr_engine *the_engine;
static clr_engine *fake_open_keep(struct fixture *fx)
{
    if (!the_engine)
        the_engine = fake_open(fx->f);
    return the_engine;
}

/* A new handle: a handle asks the engine for its runtimes once and keeps the answer. */
static void fresh_engine(void)
{
    clr_engine_free(the_engine);
    the_engine = NULL;
}

static int teardown_engine(void **state)
{
    clr_engine_free(the_engine);
    the_engine = NULL;
    return teardown(state);
}


static clr_sandbox_options options(struct fixture *fx)
{
    clr_sandbox_options o = CLR_SANDBOX_OPTIONS_INIT;
    o.agent_path = fx->agent;
    o.state_dir = fx->dir;
    o.limits.workspace_bytes = 4 * CLR_MIB;
    return o;
}

/* The entries of <state>/workspaces (0 when it does not exist). */
static size_t n_workspaces(struct fixture *fx)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces", fx->dir);
    DIR *d = opendir(p);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static bool ws_exists(struct fixture *fx, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->dir, id);
    struct stat st;
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ws_mounted(struct fixture *fx, const char *id)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->dir, id);
    struct statfs sf;
    return statfs(p, &sf) == 0 && (unsigned long)sf.f_type == TMPFS_MAGIC_NUMBER;
}

/* A plain directory standing for a workspace, its mtime age_s seconds ago. */
static void make_ws_dir(struct fixture *fx, const char *name, int64_t age_s)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/workspaces", fx->dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/workspaces/%s", fx->dir, name);
    assert_int_equal(mkdir(p, 0700), 0);
    struct timespec t[2] = {{(time_t)(time(NULL) - age_s), 0}, {(time_t)(time(NULL) - age_s), 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
}

static void expect_refused(struct fixture *fx, const clr_sandbox_options *o, clr_error_code code,
                           const char *needle)
{
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_create(&sb, fake_open_keep(fx), o, &err) != -1)
        fail_msg("created, expected a refusal naming \"%s\"", needle);
    assert_null(sb);
    assert_int_equal(err.code, code);
    if (!strstr(err.message, needle))
        fail_msg("expected \"%s\" in: %s", needle, err.message);
    /* Nothing made: no container asked for, no workspace left. */
    assert_int_equal(fake_count(fx->f, CREATE), 0);
    assert_int_equal(n_workspaces(fx), 0);
}

/* text, kept until teardown (the fake keeps the pointers to its answers). */
static const char *keep(struct fixture *fx, char *text)
{
    assert_non_null(text);
    assert_true(fx->nbodies < sizeof(fx->bodies) / sizeof(fx->bodies[0]));
    fx->bodies[fx->nbodies++] = text;
    return text;
}

/* A container of the engine's list (or its inspect answer, inspect true) for a sandbox with
 * these times and state, its labels as clr_sandbox_labels writes them; kept until teardown. */
static const char *container_json(struct fixture *fx, const char *id, const char *state,
                                  int64_t created, int64_t max_expires, bool inspect)
{
    clr_sandbox_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.id, sizeof(info.id), "%s", id);
    snprintf(info.image, sizeof(info.image), "clearing/default:latest");
    snprintf(info.runtime, sizeof(info.runtime), "runsc");
    info.created_at = created;
    info.expires_at = created + 10;
    info.max_expires_at = max_expires;
    info.limits = (clr_limits)CLR_LIMITS_INIT;
    json_t *labels = clr_sandbox_labels(&info);
    assert_non_null(labels);
    char cid[80];
    snprintf(cid, sizeof(cid), "cid-%s", id);
    json_t *c = inspect ? json_pack("{s:s, s:{s:o}, s:{s:s, s:b}}", "Id", cid, "Config", "Labels",
                                    labels, "State", "Status", state, "Paused", 0)
                        : json_pack("{s:s, s:s, s:o}", "Id", cid, "State", state, "Labels",
                                    labels);
    assert_non_null(c);
    char *text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return keep(fx, text);
}

static void git(struct fixture *fx, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=T "
             "GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=T "
             "GIT_COMMITTER_EMAIL=t@example.com git -C '%s' %s >/dev/null 2>&1",
             fx->repo, args);
    if (system(cmd) != 0)
        fail_msg("failed: %s", cmd);
}

static void make_repo(struct fixture *fx)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "git init -q -b main '%s' && echo hello > '%s/README'", fx->repo,
             fx->repo);
    if (system(cmd) != 0)
        fail_msg("failed: %s", cmd);
    git(fx, "add -A");
    git(fx, "commit -q -m base");
}

/* The repository's branches, one a line ("" for none but main). */
static void branches(struct fixture *fx, char *out, size_t len)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "git -C '%s' for-each-ref --format='%%(refname:short)' "
                               "refs/heads/ | grep -v '^main$'", fx->repo);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    pclose(p);
}

/* ---- create ---- */

static void test_create_starts_and_destroy_removes(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    clr_sandbox_options o = options(fx);
    const char *env[] = {"A=1", NULL};
    o.env = env;
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err) != 0)
        fail_msg("create: %s", err.message);
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    assert_true(clr_sandbox_id_valid(info->id));
    assert_string_equal(info->container_id, "c0ffee");
    assert_string_equal(info->state, "running");
    assert_string_equal(info->runtime, "runsc");
    assert_string_equal(info->image, CLR_DEFAULT_IMAGE);
    assert_string_equal(clr_sandbox_env(sb)[0], "A=1");
    assert_null(clr_sandbox_env(sb)[1]);
    /* The engine's checks, then the container, named for the sandbox, then its start. */
    assert_int_equal(fake_count(fx->f, INFO), 1);
    assert_int_equal(fake_count(fx->f, IMAGE "clearing/default:latest/json"), 1);
    char create[128];
    snprintf(create, sizeof(create), CREATE "?name=clearing-%s", info->id);
    assert_int_equal(fake_count(fx->f, create), 1);
    assert_int_equal(fake_count(fx->f, START), 1);
    assert_string_equal(fake_last_request(fx->f), START);
    /* The workspace: a tmpfs at its path. */
    char ws[256];
    snprintf(ws, sizeof(ws), "%s/workspaces/%s", fx->dir, info->id);
    assert_string_equal(clr_sandbox_workspace(sb), ws);
    assert_true(ws_mounted(fx, info->id));

    /* Destroy: inspect, remove (force, volumes), then the workspace. */
    char id[CLR_SANDBOX_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", info->id);
    clr_sandbox_free(sb);
    if (clr_sandbox_destroy(fake_open_keep(fx), id, "client", fx->dir, &err) != 0)
        fail_msg("destroy: %s", err.message);
    char del[128];
    snprintf(del, sizeof(del), DELETE_ANY "clearing-%s?force=1&v=1", id);
    assert_int_equal(fake_count(fx->f, del), 1);
    assert_int_equal(fake_count(fx->f, "POST " API "/containers/clearing-"), 0); /* not paused */
    assert_false(ws_exists(fx, id));
}

static void test_create_refused_before_anything(void **state)
{
    struct fixture *fx = *state;
    clr_sandbox_options o = options(fx);

    /* Options: refused before the engine is asked. */
    o.limits.memory_bytes = 1;
    expect_refused(fx, &o, CLR_E_INVALID, "memory");
    o = options(fx);
    o.insecure_runtime = "kata";
    expect_refused(fx, &o, CLR_E_INVALID, "only alternative to runsc is runc");
    o = options(fx);
    o.image = "../etc";
    expect_refused(fx, &o, CLR_E_INVALID, "not an image reference");
    o = options(fx);
    const char *bad_env[] = {"NOEQUALS", NULL};
    o.env = bad_env;
    expect_refused(fx, &o, CLR_E_INVALID, "KEY=VALUE");
    o = options(fx);
    o.repo_path = fx->dir;
    o.workspace_from = fx->dir;
    expect_refused(fx, &o, CLR_E_INVALID, "not both");
    assert_int_equal(fake_count(fx->f, INFO), 0);

    /* The agent missing: after the engine's checks (which passed), before anything is made. */
    o = options(fx);
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-agent", fx->dir);
    o.agent_path = missing;
    expect_refused(fx, &o, CLR_E_UNAVAILABLE, "no-agent");
    assert_int_equal(fake_count(fx->f, INFO), 1);
    assert_int_equal(fake_count(fx->f, IMAGE), 1);

    /* An image that declares a VOLUME: refused. */
    o = options(fx);
    fake_answer_n(fx->f, IMAGE, 200, "{\"Config\":{\"Volumes\":{\"/data\":{}}}}", 1);
    expect_refused(fx, &o, CLR_E_DENIED, "VOLUME /data");
    assert_int_equal(fake_count(fx->f, IMAGE), 2);

    /* The image missing: the message says how to build it. */
    fake_answer_n(fx->f, IMAGE, 404, "{\"message\":\"No such image\"}", 1);
    expect_refused(fx, &o, CLR_E_NOT_FOUND, "images/build.sh");
    assert_int_equal(fake_count(fx->f, IMAGE), 3);

    assert_int_equal(fake_count(fx->f, INFO), 1); /* the handle keeps the runtimes */

    /* runsc not registered: never a fallback. */
    fresh_engine();
    fake_answer_n(fx->f, INFO, 200, "{\"Runtimes\":{\"runc\":{\"path\":\"/x/runc\"}}}", 1);
    expect_refused(fx, &o, CLR_E_UNAVAILABLE, "runsc' is not registered");
    assert_int_equal(fake_count(fx->f, INFO), 2);
    assert_int_equal(fake_count(fx->f, IMAGE), 3); /* stopped there */

    /* runc asked for, not registered either. */
    fresh_engine();
    o.insecure_runtime = "runc";
    fake_answer_n(fx->f, INFO, 200, RUNSC, 1);
    expect_refused(fx, &o, CLR_E_UNAVAILABLE, "runtime 'runc' is not registered");
    assert_int_equal(fake_count(fx->f, INFO), 3);

    /* The engine failing the runtime check. */
    fresh_engine();
    fake_answer_n(fx->f, INFO, 500, "{\"message\":\"engine trouble\"}", 1);
    expect_refused(fx, &o, CLR_E_ENGINE, "checking the engine's runtimes");
    assert_int_equal(fake_count(fx->f, INFO), 4);
}

static void test_create_refused_by_engine_undone(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    clr_sandbox_options o = options(fx);
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;

    /* The container's create refused: the workspace goes, nothing to remove in the engine. */
    fake_answer_n(fx->f, CREATE, 500, "{\"message\":\"no space\"}", 1);
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_non_null(strstr(err.message, "no space"));
    assert_int_equal(fake_count(fx->f, CREATE), 1);
    assert_int_equal(fake_count(fx->f, START), 0);
    assert_int_equal(fake_count(fx->f, DELETE_ANY), 0);
    assert_int_equal(n_workspaces(fx), 0);

    /* The image gone between the check and the create: the message says how to build it. */
    fake_answer_n(fx->f, CREATE, 404, "{\"message\":\"No such image\"}", 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "images/build.sh"));
    assert_int_equal(n_workspaces(fx), 0);

    /* The start refused: the container is removed, and the workspace. */
    fake_answer_n(fx->f, START, 500, "{\"message\":\"runsc failed\"}", 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_null(sb);
    assert_non_null(strstr(err.message, "starting sandbox sb-"));
    assert_non_null(strstr(err.message, "runsc failed"));
    assert_int_equal(fake_count(fx->f, START), 1);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-sb-"), 1);
    assert_int_equal(n_workspaces(fx), 0);
}

static void test_create_with_repo_branch_undone(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    make_repo(fx);
    clr_sandbox_options o = options(fx);
    o.repo_path = fx->repo;
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;
    char b[512];

    /* Positive control: a create that succeeds makes the branch clearing/<id>. */
    if (clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err) != 0)
        fail_msg("create: %s", err.message);
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    char want[128];
    snprintf(want, sizeof(want), "clearing/%s", info->id);
    assert_string_equal(info->branch, want);
    assert_int_equal(strlen(info->base_commit), 40);
    branches(fx, b, sizeof(b));
    strcat(want, "\n");
    assert_string_equal(b, want);
    char id[CLR_SANDBOX_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", info->id);
    clr_sandbox_free(sb);
    sb = NULL;
    assert_int_equal(clr_sandbox_destroy(fake_open_keep(fx), id, NULL, fx->dir, &err), 0);
    char del[128];
    snprintf(del, sizeof(del), "branch -D -q clearing/%s", id);
    git(fx, del);
    branches(fx, b, sizeof(b));
    assert_string_equal(b, "");

    /* The container's create refused: the new branch goes with the workspace. */
    fake_answer_n(fx->f, CREATE, 500, "{\"message\":\"no space\"}", 1);
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_int_equal(fake_count(fx->f, CREATE), 2);
    branches(fx, b, sizeof(b));
    assert_string_equal(b, "");
    assert_int_equal(n_workspaces(fx), 0);

    /* The start refused: the same, and the container removed. */
    fake_answer_n(fx->f, START, 500, "{\"message\":\"runsc failed\"}", 1);
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_int_equal(fake_count(fx->f, START), 2);
    assert_int_equal(fake_count(fx->f, DELETE_ANY), 2); /* the destroy above, and this one */
    branches(fx, b, sizeof(b));
    assert_string_equal(b, "");
    assert_int_equal(n_workspaces(fx), 0);

    /* No repository there: refused once the workspace is made, which goes again. */
    clr_sandbox_options none = options(fx);
    char nowhere[128];
    snprintf(nowhere, sizeof(nowhere), "%s/no-repo", fx->dir);
    none.repo_path = nowhere;
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &none, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_non_null(strstr(err.message, "no-repo"));
    assert_int_equal(fake_count(fx->f, CREATE), 3); /* none more */
    assert_int_equal(n_workspaces(fx), 0);

    /* A reused branch holds someone's work: kept, where it was. */
    git(fx, "branch keep");
    o.branch = "keep";
    o.reuse_branch = true;
    fake_answer_n(fx->f, START, 500, "{\"message\":\"runsc failed\"}", 1);
    assert_int_equal(clr_sandbox_create(&sb, fake_open_keep(fx), &o, &err), -1);
    assert_int_equal(fake_count(fx->f, START), 3);
    branches(fx, b, sizeof(b));
    assert_string_equal(b, "keep\n");
    assert_int_equal(n_workspaces(fx), 0);
}

/* ---- open ---- */

static void test_open(void **state)
{
    struct fixture *fx = *state;
    clr_engine *eng = fake_open_keep(fx);
    clr_sandbox *sb = NULL;
    clr_error err = CLR_ERROR_INIT;

    /* Not an id: refused without asking the engine. */
    assert_int_equal(clr_sandbox_open(&sb, eng, "sb-../../x", &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_non_null(strstr(err.message, "is not a sandbox id"));
    assert_int_equal(fake_count(fx->f, INSPECT_ANY), 0);

    /* Unknown. */
    fake_answer(fx->f, INSPECT_ANY ID_B, 404, "{\"message\":\"No such container\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_open(&sb, eng, ID_B, &err), -1);
    assert_int_equal(err.code, CLR_E_NOT_FOUND);
    assert_string_equal(err.message, "no sandbox " ID_B);
    assert_int_equal(fake_count(fx->f, INSPECT_ANY ID_B "/json"), 1);

    /* The engine failing is not "no sandbox". */
    fake_answer(fx->f, INSPECT_ANY ID_C, 500, "{\"message\":\"engine trouble\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_open(&sb, eng, ID_C, &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);

    /* A container whose labels name another sandbox, or none. */
    fake_answer(fx->f, INSPECT_ANY ID_D, 200,
                container_json(fx, ID_E, "running", 1000, 5000, true));
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_open(&sb, eng, ID_D, &err), -1);
    assert_int_equal(err.code, CLR_E_CONFLICT);
    fake_answer(fx->f, INSPECT_ANY ID_E, 200, "{\"Id\":\"x\",\"Config\":{\"Labels\":{}}}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_open(&sb, eng, ID_E, &err), -1);
    assert_non_null(strstr(err.message, "container of sandbox " ID_E " has bad labels"));
    assert_null(sb);

    /* Known: the labels' picture, the engine's state and id, the workspace's path. */
    fake_answer(fx->f, INSPECT_ANY ID_A, 200,
                container_json(fx, ID_A, "paused", 1000, 5000, true));
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_sandbox_open_at(&sb, eng, ID_A, fx->dir, &err) != 0)
        fail_msg("open: %s", err.message);
    const clr_sandbox_info *info = clr_sandbox_get_info(sb);
    assert_string_equal(info->id, ID_A);
    assert_string_equal(info->container_id, "cid-" ID_A);
    assert_string_equal(info->state, "paused");
    assert_int_equal(info->created_at, 1000);
    assert_int_equal(info->max_expires_at, 5000);
    char ws[256];
    snprintf(ws, sizeof(ws), "%s/workspaces/" ID_A, fx->dir);
    assert_string_equal(clr_sandbox_workspace(sb), ws);
    assert_null(clr_sandbox_env(sb)[0]);
    clr_sandbox_free(sb);
}

/* ---- list ---- */

static void test_list_by_label(void **state)
{
    struct fixture *fx = *state;
    clr_engine *eng = fake_open_keep(fx);
    char *list = NULL;
    assert_true(asprintf(&list,
                         "[%s,%s,{\"Id\":\"cid-broken\",\"State\":\"running\",\"Labels\":"
                         "{\"" CLR_LABEL_PREFIX "managed-by\":\"clearing\"}}]",
                         container_json(fx, ID_A, "running", 1000, 5000, false),
                         container_json(fx, ID_B, "exited", 1000, 5000, false)) > 0);
    fake_answer(fx->f, LIST, 200, keep(fx, list));
    clr_sandbox_info *v = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_list(&v, &n, eng, &err) != 0)
        fail_msg("list: %s", err.message);
    /* Asked for every container (all states) with clearing's label. */
    assert_int_equal(fake_count(fx->f, LIST "?all=1&filters=%7B%22label%22%3A%5B%22io.clearing."
                                            "managed-by%3Dclearing%22%5D%7D"),
                     1);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].id, ID_A);
    assert_string_equal(v[0].state, "running");
    assert_string_equal(v[0].container_id, "cid-" ID_A);
    assert_string_equal(v[1].id, ID_B);
    assert_string_equal(v[1].state, "exited");
    /* Ours by its label, but unreadable: listed as broken, for gc. */
    assert_string_equal(v[2].id, "");
    assert_string_equal(v[2].state, "broken");
    assert_string_equal(v[2].container_id, "cid-broken");
    free(v);

    /* Nothing: an empty list. */
    fake_answer_n(fx->f, LIST, 200, "[]", 1);
    v = NULL;
    assert_int_equal(clr_sandbox_list(&v, &n, eng, &err), 0);
    assert_int_equal(n, 0);
    assert_non_null(v);
    free(v);

    /* The engine failing, or answering something that is not a list. */
    fake_answer_n(fx->f, LIST, 500, "{\"message\":\"engine trouble\"}", 1);
    v = NULL;
    assert_int_equal(clr_sandbox_list(&v, &n, eng, &err), -1);
    assert_null(v);
    fake_answer_n(fx->f, LIST, 200, "{}", 1);
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_list(&v, &n, eng, &err), -1);
    assert_int_equal(err.code, CLR_E_ENGINE);
    assert_int_equal(fake_count(fx->f, LIST), 4);
}

/* ---- destroy ---- */

/* The index of the first request that starts with prefix (-1: none). */
static int request_index(struct fake *f, const char *prefix)
{
    int at = -1;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_requests && at < 0; i++)
        if (strncmp(f->requests[i], prefix, strlen(prefix)) == 0)
            at = (int)i;
    pthread_mutex_unlock(&f->lock);
    return at;
}

static void test_destroy(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    clr_engine *eng = fake_open_keep(fx);
    clr_error err = CLR_ERROR_INIT;

    /* Not an id: nothing asked, nothing removed. */
    assert_int_equal(clr_sandbox_destroy(eng, "../workspaces", NULL, fx->dir, &err), -1);
    assert_int_equal(err.code, CLR_E_INVALID);
    assert_int_equal(fake_count(fx->f, "GET " API "/containers"), 0);

    /* Paused: thawed first (runsc cannot kill a paused sandbox), then removed. */
    make_ws_dir(fx, ID_A, 0);
    fake_answer(fx->f, INSPECT_ANY ID_A, 200, "{\"State\":{\"Running\":true,\"Paused\":true}}");
    fake_answer(fx->f, "POST " API "/containers/clearing-" ID_A "/unpause", 204, NULL);
    if (clr_sandbox_destroy(eng, ID_A, "client", fx->dir, &err) != 0)
        fail_msg("destroy: %s", err.message);
    int unpause = request_index(fx->f, "POST " API "/containers/clearing-" ID_A "/unpause");
    int del = request_index(fx->f, DELETE_ANY "clearing-" ID_A "?force=1&v=1");
    assert_true(unpause >= 0);
    assert_true(del > unpause);
    assert_false(ws_exists(fx, ID_A));

    /* Gone already (container and workspace): fine. */
    fake_answer(fx->f, INSPECT_ANY ID_B, 404, "{\"message\":\"No such container\"}");
    fake_answer(fx->f, DELETE_ANY "clearing-" ID_B, 404, "{\"message\":\"No such container\"}");
    err = (clr_error)CLR_ERROR_INIT;
    if (clr_sandbox_destroy(eng, ID_B, NULL, fx->dir, &err) != 0)
        fail_msg("destroy of a gone sandbox: %s", err.message);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-" ID_B), 1);
    assert_int_equal(fake_count(fx->f, "POST " API "/containers/clearing-" ID_B), 0);

    /* The removal refused: an error, and the workspace kept for a later try. */
    make_ws_dir(fx, ID_C, 0);
    fake_answer(fx->f, DELETE_ANY "clearing-" ID_C, 500, "{\"message\":\"device busy\"}");
    err = (clr_error)CLR_ERROR_INIT;
    assert_int_equal(clr_sandbox_destroy(eng, ID_C, NULL, fx->dir, &err), -1);
    assert_non_null(strstr(err.message, "device busy"));
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-" ID_C), 1);
    assert_true(ws_exists(fx, ID_C));
}

/* ---- gc ---- */

/* The engine's list for gc, at now: A running and expired, B running and not, C exited long
 * ago, D exited a moment ago (maybe another create's), and a container of ours with unreadable
 * labels. */
static void gc_list(struct fixture *fx, int64_t now)
{
    char *list = NULL;
    assert_true(asprintf(&list,
                         "[%s,%s,%s,%s,{\"Id\":\"cid-broken\",\"State\":\"created\",\"Labels\":"
                         "{\"" CLR_LABEL_PREFIX "managed-by\":\"clearing\"}}]",
                         container_json(fx, ID_A, "running", now - 3600, now - 1, false),
                         container_json(fx, ID_B, "running", now - 3600, now + 3600, false),
                         container_json(fx, ID_C, "exited", now - 3600, now + 3600, false),
                         container_json(fx, ID_D, "created", now - 5, now + 3600, false)) > 0);
    fake_answer(fx->f, LIST, 200, keep(fx, list));
}

static void test_gc_choices(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    int64_t now = (int64_t)time(NULL);
    gc_list(fx, now);
    fake_answer(fx->f, DELETE_ANY "cid-broken", 204, NULL);
    /* Workspaces: the live ones' and removed ones', an orphan, a young one (a create in
     * progress), a name that is no sandbox id. */
    make_ws_dir(fx, ID_A, 3600);
    make_ws_dir(fx, ID_B, 3600);
    make_ws_dir(fx, ID_C, 3600);
    make_ws_dir(fx, ID_E, 3600);
    make_ws_dir(fx, "sb-00000000000000a6", 0);
    make_ws_dir(fx, "lost+found", 3600);
    clr_gc_report r;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_gc(&r, fake_open_keep(fx), fx->dir, now, &err) != 0)
        fail_msg("gc: %s", err.message);
    assert_int_equal(r.expired, 1);
    assert_int_equal(r.broken, 2);
    assert_int_equal(r.workspaces, 1);
    assert_int_equal(r.failed, 0);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-" ID_A "?"), 1);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-" ID_C "?"), 1);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "cid-broken?force=1&v=1"), 1);
    assert_int_equal(fake_count(fx->f, DELETE_ANY), 3); /* B and D are left alone */
    assert_false(ws_exists(fx, ID_A));
    assert_true(ws_exists(fx, ID_B));
    assert_false(ws_exists(fx, ID_C));
    assert_false(ws_exists(fx, ID_E));
    assert_true(ws_exists(fx, "sb-00000000000000a6"));
    assert_true(ws_exists(fx, "lost+found"));
}

struct record_ctx {
    unsigned calls, refuse_at;
    char whys[128];
};

static int record(void *p, const clr_sandbox_info *s, const char *why, clr_error *err)
{
    struct record_ctx *c = p;
    c->calls++;
    size_t n = strlen(c->whys);
    snprintf(c->whys + n, sizeof(c->whys) - n, "%s%s:%s", n ? " " : "",
             s->id[0] ? s->id : s->container_id, why);
    if (c->calls == c->refuse_at)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0, "audit log full");
    return 0;
}

static void test_gc_recorded_and_failures(void **state)
{
    NEED_ROOT();
    struct fixture *fx = *state;
    int64_t now = (int64_t)time(NULL);
    gc_list(fx, now);
    make_ws_dir(fx, ID_E, 3600);

    /* Every removal recorded first; the second record refused: that one and the rest are kept,
     * and so are the workspaces. */
    struct record_ctx c = {.refuse_at = 2};
    clr_gc_report r;
    clr_error err = CLR_ERROR_INIT;
    assert_int_equal(
        clr_sandbox_gc_recorded(&r, fake_open_keep(fx), fx->dir, now, record, &c, &err), -1);
    assert_string_equal(err.message, "audit log full");
    assert_string_equal(c.whys, ID_A ":expired " ID_C ":orphan");
    assert_int_equal(r.expired, 1);
    assert_int_equal(r.broken, 0);
    assert_int_equal(fake_count(fx->f, DELETE_ANY), 1);
    assert_int_equal(fake_count(fx->f, DELETE_ANY "clearing-" ID_A "?"), 1);
    assert_true(ws_exists(fx, ID_E));

    /* Every record taken, one removal refused: counted as failed, the rest go on. */
    fake_answer(fx->f, DELETE_ANY "clearing-" ID_C, 500, "{\"message\":\"device busy\"}");
    fake_answer(fx->f, DELETE_ANY "cid-broken", 204, NULL);
    c = (struct record_ctx){0};
    if (clr_sandbox_gc_recorded(&r, fake_open_keep(fx), fx->dir, now, record, &c, &err) != 0)
        fail_msg("gc: %s", err.message);
    assert_string_equal(c.whys, ID_A ":expired " ID_C ":orphan cid-broken:orphan");
    assert_int_equal(r.expired, 1);
    assert_int_equal(r.broken, 1);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.workspaces, 1);
    assert_false(ws_exists(fx, ID_E));

    /* The engine's list refused: nothing done. */
    fake_answer_n(fx->f, LIST, 500, "{\"message\":\"engine trouble\"}", 1);
    make_ws_dir(fx, ID_E, 3600);
    assert_int_equal(clr_sandbox_gc(&r, fake_open_keep(fx), fx->dir, now, &err), -1);
    assert_true(ws_exists(fx, ID_E));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_starts_and_destroy_removes, setup,
                                        teardown_engine),
        cmocka_unit_test_setup_teardown(test_create_refused_before_anything, setup,
                                        teardown_engine),
        cmocka_unit_test_setup_teardown(test_create_refused_by_engine_undone, setup,
                                        teardown_engine),
        cmocka_unit_test_setup_teardown(test_create_with_repo_branch_undone, setup,
                                        teardown_engine),
        cmocka_unit_test_setup_teardown(test_open, setup, teardown_engine),
        cmocka_unit_test_setup_teardown(test_list_by_label, setup, teardown_engine),
        cmocka_unit_test_setup_teardown(test_destroy, setup, teardown_engine),
        cmocka_unit_test_setup_teardown(test_gc_choices, setup, teardown_engine),
        cmocka_unit_test_setup_teardown(test_gc_recorded_and_failures, setup, teardown_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
