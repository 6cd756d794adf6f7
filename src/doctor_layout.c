/* The installed layout, as `clearing doctor` checks it: the configuration as the daemon reads
 * it (`clearing serve --config FILE --check-config`, the same parser), the state directory
 * writable by the daemon's user, the socket with the configured mode and group, the audit log's
 * chain and checkpoint, and clearing.service where systemd is PID 1. Each failure says what to
 * do about it. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "clearing/audit.h"
#include "clearing/cleanup_json.h"
#include "clearing/spawn.h"
#include "cli.h"
#include "doctor_layout.h"

#define CHILD_TIMEOUT_MS 10000

static void skip(const char *what, const char *why)
{
    printf("skip %s: %s\n", what, why);
}

/* Runs argv (a helper: clearing itself, systemctl) with stdout and stderr into out: its exit
 * status, or -1 (the reason in out) when it could not start. */
static int run_capture(char *const argv[], char *out, size_t len)
{
    int status;
    clr_error err = CLR_ERROR_INIT;
    if (clr_spawn_capture(argv, true, CHILD_TIMEOUT_MS, out, len, &status, &err) < 0) {
        snprintf(out, len, "%s", err.message);
        return -1;
    }
    return status;
}

/* The configuration as the daemon would read it: the paths it would use, or NULL (reported). */
static json_t *check_config(const char *path, doctor_report_fn report)
{
    char what[4200], out[16384], fix[17000];
    snprintf(what, sizeof(what), "config %s valid", path);
    char *argv[] = {(char *)"/proc/self/exe", (char *)"serve", (char *)"--config", (char *)path,
                    (char *)"--check-config", NULL};
    int st = run_capture(argv, out, sizeof(out));
    json_error_t jerr;
    json_t *layout = st == 0 ? json_loads(out, 0, &jerr) : NULL;
    if (layout)
        report(true, what, NULL);
    else {
        out[strcspn(out, "\n")] = '\0';
        snprintf(fix, sizeof(fix),
                 "%s; fix it (docs/OPERATIONS.md lists every key and its default), then "
                 "`clearing serve --config %s --check-config` checks it again",
                 out[0] ? out : "no answer", path);
        report(false, what, fix);
    }
    return layout;
}

/* Whether user (uid, gid, groups) may create files in a directory of st. */
static bool may_write(const struct stat *st, uid_t uid, const gid_t *groups, int ngroups)
{
    if (uid == 0)
        return true; /* CAP_DAC_OVERRIDE; a read-only filesystem is checked apart */
    if (st->st_uid == uid)
        return (st->st_mode & (S_IWUSR | S_IXUSR)) == (S_IWUSR | S_IXUSR);
    for (int i = 0; i < ngroups; i++)
        if (groups[i] == st->st_gid)
            return (st->st_mode & (S_IWGRP | S_IXGRP)) == (S_IWGRP | S_IXGRP);
    return (st->st_mode & (S_IWOTH | S_IXOTH)) == (S_IWOTH | S_IXOTH);
}

static void check_state_dir(const char *dir, const char *user, doctor_report_fn report)
{
    char what[4400], detail[9000];
    snprintf(what, sizeof(what), "state directory %s writable by %s", dir, user);
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        snprintf(detail, sizeof(detail),
                 "there is no user %s: name the daemon's user with --daemon-user", user);
        report(false, what, detail);
        return;
    }
    struct stat st;
    struct statvfs vfs;
    gid_t groups[256];
    int ngroups = 256;
    if (getgrouplist(user, pw->pw_gid, groups, &ngroups) < 0)
        ngroups = 0;
    if (stat(dir, &st) < 0)
        snprintf(detail, sizeof(detail),
                 "%s; make it (mkdir -m 0700 %s; chown %s %s) or start the daemon, which makes "
                 "it",
                 strerror(errno), dir, user, dir);
    else if (!S_ISDIR(st.st_mode))
        snprintf(detail, sizeof(detail), "not a directory: move it away or set state_dir");
    else if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
        snprintf(detail, sizeof(detail),
                 "on a read-only filesystem: remount it read-write or set state_dir elsewhere");
    else if (!may_write(&st, pw->pw_uid, groups, ngroups))
        snprintf(detail, sizeof(detail),
                 "owner uid %u gid %u mode %04o: %s cannot create files in it; chown %s %s && "
                 "chmod 0700 %s",
                 (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777), user,
                 user, dir, dir);
    else
        detail[0] = '\0';
    report(detail[0] == '\0', what, detail[0] ? detail : NULL);
}

/* The socket: there, a socket, the configured mode, owner and group. */
static void check_socket(json_t *layout, const char *config, doctor_report_fn report)
{
    const char *path = json_string_value(json_object_get(layout, "socket"));
    const char *mode_s = json_string_value(json_object_get(layout, "socket_mode"));
    const char *owner = json_string_value(json_object_get(layout, "socket_owner"));
    const char *group = json_string_value(json_object_get(layout, "socket_group"));
    unsigned mode = mode_s ? (unsigned)strtoul(mode_s, NULL, 8) : 0660;
    char what[4400], detail[9000] = "";
    snprintf(what, sizeof(what), "socket %s mode %04o%s%s%s%s", path ? path : "?", mode,
             owner ? " owner " : "", owner ? owner : "", group ? " group " : "",
             group ? group : "");
    struct stat st;
    struct passwd *pw = owner ? getpwnam(owner) : NULL;
    struct group *gr = group ? getgrnam(group) : NULL;
    if (!path || lstat(path, &st) < 0)
        snprintf(detail, sizeof(detail),
                 "%s: no daemon has made it; start the daemon (systemctl start clearing, or "
                 "clearing serve --config %s)",
                 path ? strerror(errno) : "no socket in the configuration", config);
    else if (!S_ISSOCK(st.st_mode))
        snprintf(detail, sizeof(detail),
                 "not a socket: remove it and restart the daemon, which makes the socket");
    else if ((st.st_mode & 07777) != mode)
        snprintf(detail, sizeof(detail),
                 "its mode is %04o, the configuration's socket_mode %04o: restart the daemon "
                 "(it sets the mode) and find what changed it",
                 (unsigned)(st.st_mode & 07777), mode);
    else if (owner && !pw)
        snprintf(detail, sizeof(detail), "there is no user %s (socket_owner): create it or fix "
                 "socket_owner", owner);
    else if (pw && st.st_uid != pw->pw_uid)
        snprintf(detail, sizeof(detail), "its owner is uid %u, not %s: restart the daemon",
                 (unsigned)st.st_uid, owner);
    else if (group && !gr)
        snprintf(detail, sizeof(detail),
                 "there is no group %s (socket_group): groupadd --system %s, then restart the "
                 "daemon",
                 group, group);
    else if (gr && st.st_gid != gr->gr_gid)
        snprintf(detail, sizeof(detail),
                 "its group is gid %u, not %s (socket_group): restart the daemon, which sets "
                 "it",
                 (unsigned)st.st_gid, group);
    report(detail[0] == '\0', what, detail[0] ? detail : NULL);
}

/* pubkey: the verdict key's public half, which checks the checkpoint (NULL: none known). */
static void check_audit(const char *path, const char *pubkey, doctor_report_fn report)
{
    char what[4400], detail[9000];
    snprintf(what, sizeof(what), "audit log %s verifies", path);
    clr_audit_verify_report r;
    clr_error err = CLR_ERROR_INIT;
    if (access(path, F_OK) < 0) {
        snprintf(detail, sizeof(detail),
                 "%s: the daemon writes it from its first start (start it); if it ran before, "
                 "restore the log from a backup",
                 strerror(errno));
        report(false, what, detail);
    } else if (clr_audit_verify_log(&r, path, pubkey, false, &err) < 0) {
        snprintf(detail, sizeof(detail), "%s; `clearing --audit-log %s audit verify` for more",
                 err.message, path);
        report(false, what, detail);
    } else if (!r.ok) {
        snprintf(detail, sizeof(detail),
                 "BROKEN at %s line %llu (record %llu): %s; the log was changed: keep it as "
                 "evidence, see docs/OPERATIONS.md (the audit log)",
                 r.file, (unsigned long long)r.line, (unsigned long long)r.seq, r.problem);
        report(false, what, detail);
    } else {
        snprintf(detail, sizeof(detail), "%llu records%s", (unsigned long long)r.records,
                 r.checkpointed ? ", checkpoint matches" : "");
        report(true, what, detail);
    }
}

/* clearing.service, where systemd runs the host (sd_booted(3): /run/systemd/system exists). */
static void check_unit(doctor_report_fn report)
{
    if (access("/run/systemd/system", F_OK) < 0) {
        skip("clearing.service active",
             "systemd is not PID 1 on this host (no /run/systemd/system): run the daemon by "
             "hand as the unit's ExecStart does (clearing serve --config FILE, as root)");
        return;
    }
    char out[512];
    char *argv[] = {(char *)"systemctl", (char *)"is-active", (char *)"clearing.service", NULL};
    int st = run_capture(argv, out, sizeof(out));
    out[strcspn(out, "\n")] = '\0';
    char detail[1024];
    snprintf(detail, sizeof(detail),
             "%s: systemctl start clearing.service; journalctl -u clearing.service says why it "
             "is not running",
             out[0] ? out : "no answer from systemctl");
    report(st == 0, "clearing.service active", st == 0 ? out : detail);
}

void doctor_layout(struct doctor_layout_options *o, doctor_report_fn report)
{
    o->socket[0] = '\0';
    const char *config = o->config ? o->config : DOCTOR_DEFAULT_CONFIG;
    if (!o->config && clr_agent_in_build_tree()) {
        skip("installed layout",
             "this is a build tree's clearing: " DOCTOR_DEFAULT_CONFIG " belongs to the installed "
             "one (`clearing doctor` there checks it; --config FILE checks a file with this one)");
        return;
    }
    if (!o->config && access(config, F_OK) < 0 && errno == ENOENT) {
        skip("installed layout", "no " DOCTOR_DEFAULT_CONFIG " (clearing is not installed as a "
                                 "service here; --config FILE checks another)");
        return;
    }
    _cleanup_json_ json_t *layout = check_config(config, report);
    if (!layout) {
        skip("state directory, socket, audit log", "they need a valid configuration");
    } else {
        const char *socket = json_string_value(json_object_get(layout, "socket"));
        snprintf(o->socket, sizeof(o->socket), "%s", socket ? socket : "");
        const char *sd = json_string_value(json_object_get(layout, "state_dir"));
        const char *audit = json_string_value(json_object_get(layout, "audit_log"));
        check_state_dir(sd ? sd : "?", o->daemon_user ? o->daemon_user : "root", report);
        check_socket(layout, config, report);
        const char *vkey = json_string_value(json_object_get(layout, "verdict_key"));
        char pub[4300];
        snprintf(pub, sizeof(pub), "%s.pub", vkey ? vkey : "");
        check_audit(audit ? audit : "?", vkey ? pub : NULL, report);
    }
    check_unit(report);
}
