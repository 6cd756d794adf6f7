#!/usr/bin/env bash
# dockerd restarted under a running daemon: clear errors while it is down, recovery afterwards.
# Disruptive (every container on the host stops): meson runs it last and alone.
#   usage: engine_restart.sh PATH/TO/clearing
set -u
CLEARING=${1:?usage: engine_restart.sh PATH/TO/clearing}
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; [ -n "${2:-}" ] && echo "# $2"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }

SRV=$(mktemp -d /tmp/clearing-restart.XXXXXX)
api() { curl -s --unix-socket "$SRV/c.sock" -o "$SRV/body" -w '%{http_code}' "$@"; }
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$SRV/body" "$1"; }

docker_up() { curl -sf --unix-socket /var/run/docker.sock http://d/_ping >/dev/null 2>&1; }
start_dockerd() {
    if command -v systemctl >/dev/null && [ "$(systemctl is-system-running 2>/dev/null || true)" != offline ]; then
        systemctl start docker
    else
        setsid dockerd >>/var/log/clearing-dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 1 150); do docker_up && return 0; sleep 0.2; done
    return 1
}
stop_dockerd() {
    if command -v systemctl >/dev/null && [ "$(systemctl is-system-running 2>/dev/null || true)" != offline ]; then
        systemctl stop docker docker.socket
    else
        pkill -TERM -x dockerd
    fi
    for _ in $(seq 1 150); do docker_up || break; sleep 0.2; done
    for _ in $(seq 1 100); do pgrep -x dockerd >/dev/null || return 0; sleep 0.2; done
}
cleanup() {
    docker_up || start_dockerd
    [ -n "${srv_pid:-}" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
    [ "${KEEP:-}" ] || rm -rf "$SRV"
}
trap cleanup EXIT
# The daemon refuses to start without an engine: begin from a running dockerd.
docker_up || start_dockerd || { echo "Bail out! dockerd is not running and could not be started"; exit 1; }

"$CLEARING" --state-dir "$SRV/state" serve --socket "$SRV/c.sock" --config /dev/stdin \
    2>"$SRV/log" <<<'{"reaper_interval_ms": 200}' &
srv_pid=$!
for _ in $(seq 1 100); do [ -S "$SRV/c.sock" ] && break; sleep 0.1; done

api -XPOST http://x/v1/sandboxes -d '{}' >"$SRV/st"
A=$(field 'd["id"]')
check "sandbox created before the restart" '[ "$(cat $SRV/st)" = 201 ]'

stop_dockerd
check "dockerd is down" '! docker_up'
st=$(api http://x/v1/health)
check "health says the engine is down (503)" '[ "$st" = 503 ]' "got $st"
st=$(api -XPOST http://x/v1/sandboxes -d '{}')
msg=$(field 'd["error"]["message"]')
check "create while it is down is a 503 that says what to do" \
    '[ "$st" = 503 ] && [[ "$msg" == *"start dockerd"* ]]' "got $st: $msg"
st=$(api -XPOST "http://x/v1/sandboxes/$A/exec" -d '{"argv":["true"]}')
check "exec while it is down is answered, not hung" '[ "$st" != 000 ]' "got $st"

start_dockerd
check "dockerd is back" 'docker_up'
sleep 3
st=$(api http://x/v1/health)
check "health recovers" '[ "$st" = 200 ]' "got $st"
state=""
for _ in $(seq 1 40); do
    api "http://x/v1/sandboxes/$A" >/dev/null
    state=$(field 'd["state"]')
    [ "$state" = lost ] && break
    sleep 0.5
done
check "the sandbox the restart stopped is marked lost" '[ "$state" = lost ]' "state $state"
st=$(api -XPOST http://x/v1/sandboxes -d '{}')
B=$(field 'd.get("id","")')
check "a new sandbox can be created" '[ "$st" = 201 ]' "got $st"
st=$(api -XPOST "http://x/v1/sandboxes/$B/exec" -d '{"argv":["echo","back"]}')
out=$(field 'd["result"]["stdout"]')
check "and runs commands" '[ "$st" = 200 ] && [ "$out" = "back" ]' "got $st: $out"
api -XDELETE "http://x/v1/sandboxes/$B" >/dev/null

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
