/* The command line's audit log: where it is, and opening it for this process. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clearing/audit.h"
#include "clearing/verdict.h"

const char *cli_audit_path(void)
{
    static char buf[4200];
    const char *e = getenv("CLEARING_AUDIT_LOG");
    if (cli_global.audit_log)
        return cli_global.audit_log;
    if (e && *e)
        return e;
    const char *sd = cli_global.state_dir ? cli_global.state_dir : getenv("CLEARING_STATE_DIR");
    snprintf(buf, sizeof(buf), "%s/" CLR_AUDIT_DEFAULT_FILE, sd && *sd ? sd : "/var/lib/clearing");
    return buf;
}

int cli_audit_open(clr_audit **out, char *actor, size_t len, clr_error *err)
{
    const char *path = cli_audit_path();
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0700);
    }
    /* The checkpoints this process writes are signed with the daemon's verdict key, as the
     * daemon's are (made here when the state directory has none yet): one public key checks
     * the log whoever wrote it last. It lives as long as the process. */
    static clr_verdict_key *key;
    if (!key) {
        char kp[4200], kdir[4200];
        clr_verdict_key_default_path(kp, sizeof(kp), cli_global.state_dir);
        snprintf(kdir, sizeof(kdir), "%s", kp);
        char *ks = strrchr(kdir, '/');
        if (ks && ks != kdir) {
            *ks = '\0';
            mkdir(kdir, 0700); /* the state directory, as a run makes it */
        }
        if (clr_verdict_key_load(&key, kp, true, NULL, err) < 0)
            return clr_error_prefix(err, "the key that signs the audit log's checkpoints");
    }
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    o.checkpoint_key = key;
    struct passwd *pw = getpwuid(getuid());
    snprintf(actor, len, "cli uid=%u user=%s", (unsigned)getuid(), pw ? pw->pw_name : "?");
    return clr_audit_open(out, &o, err);
}
