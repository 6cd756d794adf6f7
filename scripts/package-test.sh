#!/usr/bin/env bash
# The Debian package, end to end, on this host (#19): builds the .deb in a copy of the tree (the
# source tree is left as it was), lints it, checks its units with `systemd-analyze verify`,
# installs it, starts its daemon (with systemd where systemd is PID 1; else by hand, as the
# unit's User and Group with its capability bounding set, umask and no-new-privileges, under
# strace to check its system call filter, address families and MemoryDenyWriteExecute), checks
# that group clearing (and only it) reaches the socket, runs commands through the socket and
# `clearing run` with the installed agent, starts the daemon once more through its socket as
# clearing.socket would, removes the package (everything but the state and the conffile must be
# gone), then purges it (the state must be gone). Whatever happens, the trap leaves the host as
# it found it: the package purged, its daemon stopped, its sandbox removed, a /var/lib/clearing
# that was here before put back, the group clearing removed if this run made it.
#
# It uses the package's own paths (/run/clearing/clearing.sock, /var/lib/clearing): it refuses
# to start when a daemon answers on that socket or the package is installed, and moves an
# existing /var/lib/clearing aside for its run. Other tests' daemons (their own sockets and
# state directories) are not touched. Needs root, dockerd with runsc and the default image
# (scripts/setup.sh). 1-3 minutes here, most of it the build.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SOCK=/run/clearing/clearing.sock
STATE=/var/lib/clearing
UNIT=/lib/systemd/system/clearing.service
SOCKET_UNIT=/lib/systemd/system/clearing.socket
started=$(date +%s)

log() { printf 'package-test: %s\n' "$*"; }
fail() { printf 'package-test: FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { echo $(($(date +%s) - started)); }

[ "$(id -u)" = 0 ] || fail "run as root: it installs and purges the package"

work=$(mktemp -d /tmp/clearing-package-test.XXXXXX)
daemon_pid=""
tracer_pid=""
by_hand=0
run_dir_made=0
[ -d /run/clearing ] || run_dir_made=1
sandbox=""
state_aside=""
group_made=0
we_installed=0

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$sandbox" ] && [ -x /usr/bin/clearing ]; then
        /usr/bin/clearing --host "unix://$SOCK" rm "$sandbox" >/dev/null 2>&1 ||
            /usr/bin/clearing rm --engine "$sandbox" >/dev/null 2>&1
    fi
    stop_daemon
    if [ "$we_installed" = 1 ] && dpkg-query -W -f='${Status}' clearing 2>/dev/null | grep -qv 'not-installed'; then
        DEBIAN_FRONTEND=noninteractive dpkg --purge clearing >/dev/null 2>&1 ||
            log "cleanup: dpkg --purge clearing failed"
    fi
    if [ -n "$state_aside" ]; then
        # Never under a live daemon: it would write its records and checkpoints into the state
        # put back (the state lock is held for a daemon's whole life).
        if answering || { [ -e "$STATE/daemon.lock" ] && ! flock -n "$STATE/daemon.lock" true; }; then
            log "cleanup: a daemon still holds $STATE: the previous one stays at $state_aside"
        else
            rm -rf --one-file-system "$STATE"
            mv "$state_aside" "$STATE" && log "cleanup: put the previous $STATE back"
        fi
    fi
    if [ "$group_made" = 1 ] && getent group clearing >/dev/null; then
        delgroup --system --quiet clearing >/dev/null 2>&1 || groupdel clearing
    fi
    [ "$run_dir_made" = 1 ] && rmdir /run/clearing 2>/dev/null
    rm -rf "$work"
    if [ $rc -eq 0 ]; then
        log "passed in $(elapsed) s"
    else
        log "FAILED (exit $rc) after $(elapsed) s"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# set -e ends the script at a failing command: name it, so that the log says what broke.
trap 'printf "package-test: FAIL: line %d: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

# The by-hand daemon (no systemd): SIGTERM, as systemd's stop sends, then wait for it. Found by
# its pid, else as strace's child, else by the pid its state lock names (set -e may have
# ended the script between the start and the bookkeeping).
stop_daemon() {
    local pid=$daemon_pid
    if [ -z "$pid" ] && [ -n "$tracer_pid" ]; then
        pid=$(ps -o pid= --ppid "$tracer_pid" 2>/dev/null | tr -d ' ' | head -n1 || true)
    fi
    if [ -z "$pid" ] && [ "$by_hand" = 1 ] && [ -s "$STATE/daemon.lock" ]; then
        pid=$(tr -dc 0-9 <"$STATE/daemon.lock" || true)
        case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in /usr/bin/clearing*) ;; *) pid="" ;; esac
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { log "daemon $pid ignored SIGTERM: killing it"; kill -KILL "$pid"; }
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    # strace ends with its tracee (killed before it, strace would leave the daemon running).
    if [ -n "$tracer_pid" ]; then
        for _ in $(seq 1 40); do kill -0 "$tracer_pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$tracer_pid" 2>/dev/null && kill -KILL "$tracer_pid"
    fi
    wait 2>/dev/null || true
    daemon_pid=""
    tracer_pid=""
    if systemd_runs; then
        systemctl stop clearing.service clearing.socket >/dev/null 2>&1
    fi
}

systemd_runs() { [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ]; }

# The sandboxes (with a container) whose workspaces are mounted in $STATE: a `clearing run` with
# the default state directory is using it, and moving the directory would pull them from under
# it. A workspace whose container is gone is litter (`clearing gc` removes it) and moves along.
state_in_use() {
    local m id busy=""
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep "^$STATE/workspaces/" || true); do
        id=${m##*/}
        [ -n "$(docker ps -aq --filter "name=^clearing-$id\$" 2>/dev/null)" ] && busy="$busy $id"
    done
    [ -n "$busy" ] && echo "${busy# }"
    [ -n "$busy" ]
}

answering() { curl -sf --max-time 5 --unix-socket "$SOCK" http://clearing/v1/health >/dev/null 2>&1; }

# ---- 0. the host: nothing of the package's may be in use, the tools it needs present --------
if dpkg-query -W -f='${Status}' clearing 2>/dev/null | grep -q 'install ok installed'; then
    fail "the clearing package is installed on this host: this test installs and purges its own; remove it first"
fi
[ -e /etc/clearing/config.json ] && fail "/etc/clearing/config.json exists: it is not this test's to replace"
answering && fail "a daemon answers on $SOCK: this test needs the package's socket for its own daemon"
state_in_use >/dev/null && fail "$STATE holds the workspaces of sandboxes that exist now ($(state_in_use)): run this test when they are done"
getent group clearing >/dev/null || group_made=1

need=()
for p in debhelper lintian systemd dpkg-dev curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- 1. build in a copy of the tree ---------------------------------------------------------
mkdir "$work/src"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    before=$(git -C "$here" status --porcelain --ignored=no)
    git -C "$here" ls-files -z -co --exclude-standard | (cd "$here" && tar --null -T - -cf -) |
        tar -xf - -C "$work/src"
else
    before=""
    tar -C "$here" --exclude='./build*' --exclude='./obj-*' --exclude=./.git -cf - . | tar -xf - -C "$work/src"
fi
[ -f "$work/src/debian/control" ] || fail "the copy of the tree has no debian/control"
missing=$(cd "$work/src" && dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' |
    sed -E 's/ *\([^)]*\)//g; s/<[^>]*>//g; s/\|[^ ]*//g')
if [ -n "$missing" ]; then
    log "installing build dependencies: $missing"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
log "building the package in $work/src (dpkg-buildpackage -us -uc -b; the unit suite runs in its own CI step: nocheck)"
t=$(date +%s)
if ! (cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b) \
    >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    fail "dpkg-buildpackage failed (log above)"
fi
deb=$(find "$work" -maxdepth 1 -name 'clearing_*.deb' | head -n1)
[ -n "$deb" ] || fail "dpkg-buildpackage made no clearing_*.deb"
log "built $(basename "$deb") in $(($(date +%s) - t)) s"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    [ "$(git -C "$here" status --porcelain --ignored=no)" = "$before" ] ||
        fail "the build changed the source tree"
    log "ok: the source tree is as it was"
fi

# ---- 2. lintian (tags the overrides explain are not counted) --------------------------------
changes=$(find "$work" -maxdepth 1 -name 'clearing_*.changes' | head -n1)
if ! lintian --fail-on error,warning "$changes" >"$work/lintian.log" 2>&1; then
    cat "$work/lintian.log"
    fail "lintian found errors or warnings"
fi
log "ok: lintian: no error or warning ($(grep -c . "$work/lintian.log" || true) other lines)"
sed 's/^/  /' "$work/lintian.log"

# ---- 3. install -----------------------------------------------------------------------------
if [ -d "$STATE" ]; then
    state_in_use >/dev/null && fail "$STATE holds the workspaces of sandboxes that exist now ($(state_in_use)): run this test when they are done"
    state_aside="$STATE.package-test.$$"
    mv "$STATE" "$state_aside"
    log "moved the existing $STATE aside to $state_aside (put back at the end)"
fi
we_installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "apt-get install $deb failed"; }
dpkg-query -W -f='${Status}' clearing | grep -q 'install ok installed' || fail "clearing is not installed after apt-get install"
dpkg-query -L clearing | while read -r f; do [ -d "$f" ] || echo "$f"; done | sort >"$work/files"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' clearing | awk 'NF {print $1}')
log "installed: $(wc -l <"$work/files") files, conffiles: $conffiles"
for f in /usr/bin/clearing /usr/libexec/clearing/clearing-agent "$UNIT" "$SOCKET_UNIT" /etc/clearing/config.json \
    /usr/share/man/man1/clearing.1.gz /usr/share/bash-completion/completions/clearing; do
    grep -qxF "$f" "$work/files" || fail "the package does not hold $f"
done
getent group clearing >/dev/null || fail "postinst made no group clearing"
[ "$(stat -c '%a %U %G' "$STATE")" = "700 root root" ] || fail "$STATE is $(stat -c '%a %U %G' "$STATE"), not 700 root root"
log "ok: the CLI, the agent, both units, the conffile, the man page and the completion; group clearing; $STATE 700 root:root"
man -w clearing >/dev/null 2>&1 || fail "man cannot find clearing(1)"
/usr/bin/clearing serve --config /etc/clearing/config.json --help >/dev/null ||
    fail "clearing serve refuses the installed /etc/clearing/config.json"
# The completion: the commands after `clearing ser`, a command's options after `--`.
compl=$(bash -c '
    _init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; }
    _filedir() { :; }
    complete() { :; }
    . /usr/share/bash-completion/completions/clearing
    COMP_WORDS=(clearing ser); COMP_CWORD=1; _clearing; echo "${COMPREPLY[*]}"
    COMP_WORDS=(clearing run --mem); COMP_CWORD=2; _clearing; echo "${COMPREPLY[*]}"')
[ "$compl" = "$(printf 'serve\n--memory')" ] || fail "bash completion answered '$compl', not serve / --memory"
log "ok: clearing(1) found; the installed configuration accepted; completion works"

# ---- 4. the units ---------------------------------------------------------------------------
systemd-analyze verify "$UNIT" "$SOCKET_UNIT" >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log"; fail "systemd-analyze verify found problems in the units"; }
# Positive control: verify does reject a broken unit on this host.
sed 's/^Type=exec$/Type=exec\nNoSuchOption=1/; s|^ExecStart=/usr/bin/clearing|ExecStart=/usr/bin/no-such-clearing|' "$UNIT" \
    >"$work/clearing.service"
if systemd-analyze verify "$work/clearing.service" >/dev/null 2>&1; then
    fail "systemd-analyze verify accepts a broken copy of the unit: it checks nothing here"
fi
log "ok: systemd-analyze verify accepts both units (and rejects a broken copy)"
# The daemon mounts workspaces that dockerd must see: nothing may give the unit a mount
# namespace of its own (docs/OPERATIONS.md, "The unit's confinement").
grep -q '^SystemCallFilter=' "$UNIT" || fail "cannot read the unit's options"
ns=$(grep -E '^(ProtectSystem|ProtectHome|PrivateTmp|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|PrivateDevices|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|ProcSubset|PrivateMounts|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountFlags|RootDirectory|RootImage|PrivateUsers)=' "$UNIT" || true)
[ -z "$ns" ] || fail "the unit gives the daemon a mount namespace of its own, which hides its workspace mounts from dockerd: $ns"
log "ok: the unit keeps the daemon in the host's mount namespace"

# ---- 5. start the daemon --------------------------------------------------------------------
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n1; }
if systemd_runs; then
    log "systemd is PID 1: systemctl start clearing.service"
    systemctl daemon-reload
    systemctl start clearing.service || { journalctl -u clearing.service -n 50 --no-pager; fail "systemctl start clearing.service failed"; }
else
    log "systemd is not PID 1 here (PID 1 is '$(ps -p 1 -o comm=)'): running the unit's ExecStart by hand"
    by_hand=1
    exec_start=$(unit_value ExecStart)
    user=$(unit_value User)
    group=$(unit_value Group)
    umask_v=$(unit_value UMask)
    caps=$(unit_value CapabilityBoundingSet)
    nnp=$(unit_value NoNewPrivileges)
    if [ -z "$exec_start" ] || [ -z "$user" ] || [ -z "$group" ] || [ -z "$caps" ]; then
        fail "cannot read ExecStart, User, Group and CapabilityBoundingSet from $UNIT"
    fi
    bounding="-all"
    for c in $caps; do bounding="$bounding,+$(echo "${c#CAP_}" | tr '[:upper:]' '[:lower:]')"; done
    setpriv_args=(--reuid="$(id -u "$user")" --regid="$(getent group "$group" | cut -d: -f3)" --init-groups
                  --bounding-set="$bounding" --inh-caps=-all)
    [ "$nnp" = yes ] && setpriv_args+=(--no-new-privs)
    log "  as $user:$group, umask ${umask_v:-0022}, bounding set $caps${nnp:+, NoNewPrivileges=$nnp}: $exec_start"
    # StateDirectory=: systemd would make it (postinst already did).
    [ -d "$STATE" ] || install -d -m 0700 "$STATE"
    # The unit's system call filter, address families and MemoryDenyWriteExecute cannot be
    # applied by hand: the daemon runs under strace instead, and step 7 checks what it did.
    trace=()
    if command -v strace >/dev/null; then
        trace=(strace -f -qq -o "$work/trace")
    else
        log "  (strace is missing: the system call filter is not checked)"
    fi
    # shellcheck disable=SC2086
    (umask "${umask_v:-0022}" && exec setsid setpriv "${setpriv_args[@]}" -- "${trace[@]}" $exec_start) \
        </dev/null >"$work/daemon.log" 2>&1 &
    # setsid does not fork here (the subshell leads no process group): the pid is the daemon's,
    # or strace's, whose child the daemon is.
    launched=$!
    if [ ${#trace[@]} -gt 0 ]; then
        tracer_pid=$launched
        for _ in $(seq 1 50); do
            daemon_pid=$(ps -o pid= --ppid "$tracer_pid" | tr -d ' ' | head -n1 || true)
            [ -n "$daemon_pid" ] && [ "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" = clearing ] && break
            sleep 0.1
        done
    else
        daemon_pid=$launched
    fi
    for _ in $(seq 1 20); do [ "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" = clearing ] && break; sleep 0.1; done
    [ "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" = clearing ] || { cat "$work/daemon.log"; fail "the daemon did not start"; }
fi
for _ in $(seq 1 120); do
    answering && break
    [ -z "$daemon_pid" ] || kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; fail "the daemon exited"; }
    sleep 0.5
done
answering || { cat "$work/daemon.log" 2>/dev/null; fail "the daemon does not answer on $SOCK after 60 s"; }
if [ -n "$daemon_pid" ]; then
    bnd=$(awk '/^CapBnd/ {print $2}' "/proc/$daemon_pid/status")
    [ "$bnd" = "$(awk '/^CapBnd/ {print $2}' /proc/self/status)" ] &&
        fail "the by-hand daemon kept the full capability bounding set ($bnd)"
    log "  daemon pid $daemon_pid, CapBnd $bnd"
fi
[ "$(stat -c '%a %U %G' "$SOCK")" = "660 root clearing" ] || fail "$SOCK is $(stat -c '%a %U %G' "$SOCK"), not 660 root clearing"
log "ok: the daemon answers on $SOCK (660 root:clearing)"
# A member of clearing may use the socket, anyone else may not (uid 65534: nobody).
gid=$(getent group clearing | cut -d: -f3)
setpriv --reuid=65534 --regid=65534 --groups="$gid" --inh-caps=-all --bounding-set=-all \
    curl -sf --max-time 10 --unix-socket "$SOCK" http://clearing/v1/health >/dev/null ||
    fail "a member of group clearing cannot use $SOCK"
if setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
    curl -sf --max-time 10 --unix-socket "$SOCK" http://clearing/v1/health >/dev/null 2>&1; then
    fail "a user outside group clearing can use $SOCK"
fi
log "ok: a member of group clearing reaches the daemon, another user does not"

# ---- 6. use it ------------------------------------------------------------------------------
cl=(/usr/bin/clearing --host "unix://$SOCK")
sandbox=$("${cl[@]}" create --lifetime 5m | tail -n1)
case "$sandbox" in sb-*) ;; *) fail "clearing create printed '$sandbox', not a sandbox id" ;; esac
out=$("${cl[@]}" exec "$sandbox" -- echo hi)
[ "$out" = hi ] || fail "clearing exec ... -- echo hi printed '$out'"
log "ok: through the socket: create $sandbox, exec echo hi -> '$out'"
# The workspace the daemon mounted is the one dockerd gave the sandbox.
echo "from the host $$" >"$work/probe.txt"
"${cl[@]}" cp "$work/probe.txt" "$sandbox:probe.txt" >/dev/null
out=$("${cl[@]}" exec "$sandbox" -- cat /workspace/probe.txt)
[ "$out" = "from the host $$" ] || fail "a file copied into the workspace reads '$out' inside the sandbox"
log "ok: a file copied in through the daemon is in the sandbox's /workspace"
"${cl[@]}" rm "$sandbox" >/dev/null
sandbox=""
out=$(/usr/bin/clearing run -- echo hi)
[ "$out" = hi ] || fail "clearing run -- echo hi (the installed agent) printed '$out'"
log "ok: clearing run -- echo hi -> '$out' (the installed agent, $(/usr/bin/clearing --version))"
if "${cl[@]}" doctor >"$work/doctor.log" 2>&1; then
    log "ok: clearing doctor against the installed daemon:"
    sed 's/^/  /' "$work/doctor.log"
else
    sed 's/^/  /' "$work/doctor.log"
    fail "clearing doctor against the installed daemon found problems (above)"
fi
grep -q '^ *ok *config /etc/clearing/config.json valid' "$work/doctor.log" ||
    fail "clearing doctor did not check the installed configuration"
grep -q '^ *ok *socket /run/clearing/clearing.sock mode 0660 group clearing' "$work/doctor.log" ||
    fail "clearing doctor did not check the installed socket's mode and group"
/usr/bin/clearing audit verify >"$work/audit.log" 2>&1 || { cat "$work/audit.log"; fail "the audit log does not verify"; }
log "ok: clearing audit verify: $(tail -n1 "$work/audit.log")"

# ---- 7. remove: the service stops, only state and the conffile stay -------------------------
if systemd_runs; then
    log "apt-get remove clearing (its prerm stops the service)"
else
    log "stopping the by-hand daemon (without systemd, the prerm of apt-get remove has no service to stop)"
    traced=$tracer_pid
    stop_daemon
    if [ -n "$traced" ]; then
        # What the unit would have refused: a system call outside SystemCallFilter, a socket of a
        # family outside RestrictAddressFamilies, a mapping both writable and executable, a new
        # namespace, a setuid/setgid bit, a device other than the pseudo-devices.
        systemd-analyze syscall-filter >"$work/filters" 2>/dev/null || fail "systemd-analyze syscall-filter failed"
        python3 - "$UNIT" "$work/filters" "$work/trace" <<'PY' || fail "the daemon did what its unit forbids (above)"
import re, sys
unit, filters, trace = sys.argv[1:]
opts = {}
for line in open(unit):
    if "=" in line and not line.startswith("#"):
        k, v = line.rstrip("\n").split("=", 1)
        opts[k] = v
groups, cur = {}, None
for line in open(filters):
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    if not line[0].isspace():
        cur = groups.setdefault(s, []) if s.startswith("@") else None
    elif cur is not None:
        cur.append(s)
def expand(name, seen=()):
    if not name.startswith("@"):
        return {name}
    return set().union(*[expand(x, seen + (name,)) for x in groups.get(name, []) if x not in seen])
allowed = set().union(*[expand(x) for x in opts["SystemCallFilter"].split()])
families = set(opts["RestrictAddressFamilies"].split())
used, fams, wx, nsx, suid, devs = set(), set(), [], [], [], set()
pseudo = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"}
for line in open(trace, errors="replace"):
    m = re.match(r"\d+ +(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
    if not m or line.split()[1].startswith("+++") or line.split()[1].startswith("---"):
        continue
    used.add(m.group(1))
    f = re.match(r"\d+ +socket\((AF_[A-Z0-9]+)", line)
    if f:
        fams.add(f.group(1))
    if re.match(r"\d+ +(mmap|mprotect|pkey_mprotect)\(", line) and "PROT_WRITE" in line and "PROT_EXEC" in line:
        wx.append(line.strip())
    # RestrictNamespaces=yes: no new namespace, no setns.
    if re.match(r"\d+ +(clone3?|unshare|setns)\(", line) and ("CLONE_NEW" in line or " setns(" in line):
        nsx.append(line.strip())
    # RestrictSUIDSGID=yes: no setuid or setgid bit set.
    if re.match(r"\d+ +(chmod|fchmod|fchmodat)\(.*, (S_IS[UG]ID|0?[2-7][0-7]{3}\b)", line):
        suid.append(line.strip())
    # DevicePolicy=closed: the pseudo-devices only.
    d = re.match(r'\d+ +open(?:at2?)?\((?:[A-Z_]+|\d+), "(/dev/[^"]*)"', line)
    if d and d.group(1) not in pseudo and "ENOENT" not in line:
        devs.add(d.group(1))
bad = sorted(used - allowed)
print("package-test:   the daemon made %d distinct system calls (mount: %s), opened sockets of %s"
      % (len(used), "mount" in used, sorted(fams)))
ok = True
if len(used) < 30 or "mount" not in used or "AF_UNIX" not in fams or not allowed:
    print("package-test: the trace is not the daemon's: too few calls, no workspace mount or no unix socket")
    ok = False
if bad:
    print("package-test: outside SystemCallFilter=%s: %s" % (opts["SystemCallFilter"], bad))
    ok = False
if fams - families:
    print("package-test: outside RestrictAddressFamilies=%s: %s" % (opts["RestrictAddressFamilies"], sorted(fams - families)))
    ok = False
if opts.get("RestrictNamespaces") == "yes" and nsx:
    print("package-test: namespaces made despite RestrictNamespaces: %s" % nsx[:3])
    ok = False
if opts.get("RestrictSUIDSGID") == "yes" and suid:
    print("package-test: setuid/setgid bits set despite RestrictSUIDSGID: %s" % suid[:3])
    ok = False
if opts.get("DevicePolicy") == "closed" and devs:
    print("package-test: devices opened despite DevicePolicy=closed: %s" % sorted(devs))
    ok = False
if opts.get("MemoryDenyWriteExecute") == "yes" and wx:
    print("package-test: writable and executable mappings despite MemoryDenyWriteExecute: %s" % wx[:3])
    ok = False
sys.exit(0 if ok else 1)
PY
        log "ok: every system call, socket family, mapping, chmod, clone and device the daemon used fits its unit"
    fi
fi

# ---- 7b. the optional socket unit: the daemon takes the socket it is passed -----------------
listen=$(sed -n 's/^ListenStream=//p' "$SOCKET_UNIT")
[ "$listen" = "$SOCK" ] || fail "clearing.socket listens on '$listen', not the configuration's $SOCK"
if systemd_runs; then
    systemctl stop clearing.service
    systemctl start clearing.socket
    answering || fail "nothing answers on $SOCK through clearing.socket"
    systemctl is-active --quiet clearing.service || fail "a connection to clearing.socket did not start clearing.service"
    [ "$(stat -c '%a %U %G' "$SOCK")" = "660 root clearing" ] || fail "clearing.socket made $SOCK $(stat -c '%a %U %G' "$SOCK")"
    systemctl stop clearing.socket
    systemctl start clearing.service
else
    # systemd-socket-activate plays clearing.socket: it binds ListenStream= and execs the
    # daemon, with the socket as fd 3, at the first connection.
    command -v systemd-socket-activate >/dev/null || fail "systemd-socket-activate is missing (package systemd)"
    rm -f "$SOCK"
    # shellcheck disable=SC2086
    (umask "${umask_v:-0022}" && exec setsid systemd-socket-activate -l "$listen" -- \
        setpriv "${setpriv_args[@]}" -- $exec_start) </dev/null >"$work/activated.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
    answering || { cat "$work/activated.log"; fail "the socket-activated daemon does not answer on $SOCK"; }
    [ "$(cat "/proc/$daemon_pid/comm" 2>/dev/null)" = clearing ] || fail "no socket-activated daemon answered"
    stop_daemon
    [ -S "$SOCK" ] || fail "the socket-activated daemon removed the socket it was given"
    rm -f "$SOCK"
fi
log "ok: started through its socket ($listen, as clearing.socket would), the daemon answered; it left the socket in place"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q clearing >"$work/remove.log" 2>&1 ||
    { cat "$work/remove.log"; fail "apt-get remove clearing failed"; }
answering && fail "a daemon still answers on $SOCK after the removal"
dpkg-query -W -f='${Status}' clearing | grep -q 'deinstall ok config-files' ||
    fail "after remove clearing is '$(dpkg-query -W -f='${Status}' clearing)', not config-files"
left=""
while read -r f; do
    if echo "$conffiles" | grep -qxF "$f"; then
        [ -e "$f" ] || fail "the conffile $f went at remove (dpkg keeps conffiles until purge)"
    elif [ -e "$f" ] || [ -L "$f" ]; then
        left="$left $f"
    fi
done <"$work/files"
[ -z "$left" ] || fail "after remove these package files are still there:$left"
for f in "$STATE/clearing.db" "$STATE/audit.log" "$STATE/audit.log.checkpoint" "$STATE/verdict.key" \
    "$STATE/verdict.key.pub"; do
    [ -e "$f" ] || fail "remove took $f: state must stay"
done
log "ok: remove left $STATE (database, audit log and keys) and the conffile, none of the other $(wc -l <"$work/files") files"

# ---- 8. purge: the state goes, with a warning -----------------------------------------------
DEBIAN_FRONTEND=noninteractive dpkg --purge clearing >"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log"; fail "dpkg --purge clearing failed"; }
grep -q "deleting /var/lib/clearing" "$work/purge.log" || { cat "$work/purge.log"; fail "purge gave no warning before deleting the state"; }
[ -e "$STATE" ] && fail "$STATE is still there after purge"
[ -e /etc/clearing ] && fail "/etc/clearing is still there after purge"
dpkg-query -W -f='${Status}' clearing 2>/dev/null | grep -q 'not-installed' ||
    [ -z "$(dpkg-query -W -f='${Status}' clearing 2>/dev/null)" ] || fail "dpkg still knows clearing after purge"
wants=/etc/systemd/system/multi-user.target.wants/clearing.service
if [ -e "$wants" ] || [ -L "$wants" ]; then fail "purge left $wants"; fi
we_installed=0
log "ok: purge warned ('$(grep -m1 deleting "$work/purge.log")') and removed $STATE and /etc/clearing"
