/* The command line's audit log: where it is, and opening it for this process. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clearing/audit.h"

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
    clr_audit_options o = CLR_AUDIT_OPTIONS_INIT;
    o.path = path;
    struct passwd *pw = getpwuid(getuid());
    snprintf(actor, len, "cli uid=%u user=%s", (unsigned)getuid(), pw ? pw->pw_name : "?");
    return clr_audit_open(out, &o, err);
}
