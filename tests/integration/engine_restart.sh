#!/usr/bin/env bash
# dockerd restarted under a running daemon: clear errors while it is down, recovery afterwards.
# Disruptive (every container of that engine stops): meson runs it last and alone.
#   usage: engine_restart.sh PATH/TO/clearing
# By default the system's dockerd is restarted (systemd's unit, or the process of
# /var/run/docker.pid). To leave it alone, run against a private engine: DOCKERD_ARGS holds the
# arguments that start it (its own --host, --pidfile, --data-root, --exec-root, and runsc
# registered), CLEARING_DOCKER_HOST its socket, DOCKERD_PIDFILE its pid file (DOCKERD_LOG its
# log); the image must have been loaded into it. Every client call has a deadline: a hang fails,
# it never blocks.
set -u
CLEARING=${1:?usage: engine_restart.sh PATH/TO/clearing}
. "$(dirname "$0")/helpers.sh"
if [ -n "${DOCKERD_ARGS:-}" ] && { [ -z "${DOCKERD_PIDFILE:-}" ] || [ -z "${CLEARING_DOCKER_HOST:-}" ]; }; then
    # Without both, the system's engine would be the one stopped.
    echo "Bail out! a private engine (DOCKERD_ARGS) needs DOCKERD_PIDFILE and CLEARING_DOCKER_HOST"
    exit 1
fi
ENGINE_SOCK=${CLEARING_DOCKER_HOST:-/var/run/docker.sock}
ENGINE_SOCK=${ENGINE_SOCK#unix://}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-/var/run/docker.pid}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/clearing-dockerd.log}
API_DEADLINE=60 # s, one API call: above the daemon's own 30 s engine deadline
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; [ -n "${2:-}" ] && echo "# $2"; }
# check NAME CONDITION [MESSAGE]: CONDITION and MESSAGE are evaluated here, the message after the
# condition, so that it shows what the condition saw last (pass both in single quotes).
check() {
    if eval "$2"; then ok "$1"; else
        local check_msg_
        eval "check_msg_=\"${3:-}\""
        not_ok "$1" "$check_msg_"
    fi
}

SRV=$(mktemp -d /tmp/clearing-restart.XXXXXX)
# The status code on stdout ("000" when the call failed or ran out of time), the body in $SRV/body.
api() {
    curl -s --max-time "$API_DEADLINE" --unix-socket "$SRV/c.sock" -o "$SRV/body" \
        -w '%{http_code}' "$@"
}
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$SRV/body" "$1" 2>/dev/null; }
docker_up() { curl -sf --max-time 5 --unix-socket "$ENGINE_SOCK" http://d/_ping >/dev/null 2>&1; }
docker_down() { ! docker_up; }
use_systemd() {
    [ -z "${DOCKERD_ARGS:-}" ] && command -v systemctl >/dev/null &&
        [ "$(systemctl is-system-running 2>/dev/null || true)" != offline ]
}
start_dockerd() {
    if use_systemd; then
        systemctl start docker
    else
        # DOCKERD_ARGS is a list of arguments: split on purpose.
        # shellcheck disable=SC2086
        setsid dockerd ${DOCKERD_ARGS:-} >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    wait_for 60 docker_up
}
# Stops the engine by its unit or its pid, never by name: another dockerd may share the host.
stop_dockerd() {
    if use_systemd; then
        systemctl stop docker docker.socket
    else
        local pid
        pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null) || return 1
        kill -TERM "$pid" || return 1
        wait_for 60 gone "$pid" || return 1
    fi
    wait_for 60 docker_down
}
cleanup() {
    docker_up || start_dockerd
    [ -n "${srv_pid:-}" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
    if [ "$failed" != 0 ] && [ -s "$SRV/log" ]; then
        # What the daemon said is the first thing a failure needs: shown, and kept on disk.
        echo "# daemon log (last 40 lines; all of it stays in $SRV/log):"
        tail -n 40 "$SRV/log" | sed 's/^/#   /'
    elif [ -z "${KEEP:-}" ]; then
        rm -rf "$SRV"
    fi
}
trap cleanup EXIT
# The daemon refuses to start without an engine: begin from a running dockerd.
docker_up || start_dockerd || { echo "Bail out! dockerd is not running and could not be started"; exit 1; }

"$CLEARING" --state-dir "$SRV/state" serve --socket "$SRV/c.sock" --config /dev/stdin \
    2>"$SRV/log" <<<'{"reaper_interval_ms": 200, "reconcile_interval_ms": 600000}' &
srv_pid=$!
answers() { kill -0 "$srv_pid" 2>/dev/null && [ "$(api http://x/v1/health)" = 200 ]; }
wait_for 60 answers || { echo "Bail out! the daemon did not answer within 60 s"; tail -5 "$SRV/log"; exit 1; }

st=$(api -XPOST http://x/v1/sandboxes -d '{}')
A=$(field 'd["id"]')
check "sandbox created before the restart (201)" '[ "$st" = 201 ] && [ -n "$A" ]' 'got $st'

stop_dockerd
check "dockerd is down" 'docker_down'
st=$(api http://x/v1/health)
check "health says the engine is down (503)" '[ "$st" = 503 ]' 'got $st'
st=$(api -XPOST http://x/v1/sandboxes -d '{}')
msg=$(field 'd["error"]["message"]')
check "create while it is down is a 503 that says what to do" \
    '[ "$st" = 503 ] && [[ "$msg" == *"start dockerd"* ]]' 'got $st: $msg'
st=$(api -XPOST "http://x/v1/sandboxes/$A/exec" -d '{"argv":["true"]}')
msg=$(field 'd["error"]["message"]')
check "exec while it is down is a 503 that names the engine" \
    '[ "$st" = 503 ] && [[ "$msg" == *"Docker engine"* ]]' 'got $st: $msg'

start_dockerd
check "dockerd is back" 'docker_up'
st=""
health_ok() { st=$(api http://x/v1/health); [ "$st" = 200 ]; }
check "health recovers (200)" 'wait_for 60 health_ok' 'last $st'
state=""
a_lost() {
    st=$(api "http://x/v1/sandboxes/$A")
    state=$(field 'd["state"]')
    [ "$st" = 200 ] && [ "$state" = lost ]
}
# The periodic check runs every 10 min here: what marks A is the event watcher, which connects
# again after the restart and compares with the engine once.
check "the sandbox the restart stopped is marked lost" 'wait_for 60 a_lost' 'last $st, state $state'
# A lost sandbox keeps its workspace and stopped container until it is destroyed.
st=$(api -XDELETE "http://x/v1/sandboxes/$A?wait=true")
check "the lost sandbox is destroyed, its remains removed (204)" '[ "$st" = 204 ] && [ ! -e "$SRV/state/workspaces/$A" ]' 'got $st'
st=$(api -XPOST http://x/v1/sandboxes -d '{}')
B=$(field 'd.get("id","")')
check "a new sandbox can be created (201)" '[ "$st" = 201 ] && [ -n "$B" ]' 'got $st'
st=$(api -XPOST "http://x/v1/sandboxes/$B/exec" -d '{"argv":["echo","back"]}')
out=$(field 'd["result"]["stdout"]')
check "and runs commands (200)" '[ "$st" = 200 ] && [ "$out" = "back" ]' 'got $st: $out'
# The watcher reads the restarted engine's events: B's runsc processes killed, B is lost at once
# as "runtime died" (the periodic check would say "container stopped or vanished").
cid=$(curl -s --max-time 30 --unix-socket "$ENGINE_SOCK" "http://d/containers/clearing-$B/json" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Id"])' 2>/dev/null)
killed=0
if [ -n "$cid" ]; then # never an empty pattern: it would match every sandbox's runsc
    for p in /proc/[0-9]*; do
        argv=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        case "$argv" in runsc*"$cid"*) kill -KILL "${p#/proc/}" && killed=$((killed + 1)) ;; esac
    done
fi
check "B's runsc processes found and killed" '[ -n "$cid" ] && [ "$killed" -ge 1 ]' 'container ${cid:-?}, killed $killed'
reason=""
b_died() {
    st=$(api "http://x/v1/sandboxes/$B")
    state=$(field 'd["state"]')
    reason=$(field 'd["destroy_reason"]')
    [ "$st" = 200 ] && [ "$state" = lost ]
}
check "after the restart, a sandbox whose runtime died is lost as runtime died" \
    'wait_for 60 b_died && [ "$reason" = "runtime died" ]' 'last $st, state $state, reason $reason'
st=$(api -XDELETE "http://x/v1/sandboxes/$B?wait=true")
check "and is destroyed (204)" '[ "$st" = 204 ]' 'got $st'

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
