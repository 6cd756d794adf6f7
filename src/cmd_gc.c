/* clearing gc: remove expired sandboxes, broken containers of ours and orphaned workspaces. */
#include <stdio.h>

#include "clearing/audit.h"
#include "cli.h"

struct gc_audit {
    clr_audit *audit;
    const char *actor;
};

/* Each removal's sandbox.destroy record, written before the removal (no record, no removal). */
static int record_removal(void *ctx, const clr_sandbox_info *s, const char *why, clr_error *err)
{
    struct gc_audit *g = ctx;
    char reason[32];
    snprintf(reason, sizeof(reason), "gc-%s", why);
    json_t *d = json_pack("{s:s, s:s}", "reason", reason, "container", s->container_id);
    int rc = clr_audit_append(g->audit, g->actor, s->id[0] ? s->id : NULL, "sandbox.destroy",
                              "ok", d, err);
    json_decref(d);
    return rc;
}

int cmd_gc(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (c == 'j') {
            json = true;
            continue;
        }
        if (c == 'h') {
            printf("Usage: clearing gc [--json]\n\nRemoves sandboxes past their lifetime, "
                   "containers labelled as clearing's that are\nnot running (failed starts, "
                   "dead sandboxes) and workspaces without a sandbox.\nEach removal is "
                   "recorded in the audit log first; without the log, nothing is removed.\n");
            return 0;
        }
        cli_usage_error("gc", "unknown option");
        return CLI_EXIT_USAGE;
    }
    clr_error err = CLR_ERROR_INIT;
    /* Removing is an action like any other: not without its record. */
    char actor[160];
    struct gc_audit g = {.actor = actor};
    if (cli_audit_open(&g.audit, actor, sizeof(actor), &err) < 0) {
        cli_error(&err);
        return CLI_EXIT_CLEARING;
    }
    clr_engine *eng = NULL;
    if (cli_open_engine(&eng, &err) < 0) {
        cli_error(&err);
        clr_audit_close(g.audit);
        return cli_failure_status(&err);
    }
    clr_gc_report r;
    int rc = clr_sandbox_gc_recorded(&r, eng, cli_global.state_dir, 0, record_removal, &g, &err);
    clr_engine_free(eng);
    clr_audit_close(g.audit);
    if (rc < 0) {
        cli_error(&err);
        return cli_failure_status(&err);
    }
    if (json) {
        json_t *o = json_pack("{s:i, s:i, s:i, s:i}", "expired", r.expired, "broken", r.broken,
                              "workspaces", r.workspaces, "failed", r.failed);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("removed %u expired, %u broken, %u orphaned workspaces; %u failed\n", r.expired,
               r.broken, r.workspaces, r.failed);
    }
    return r.failed ? CLI_EXIT_FAILURE : 0;
}
