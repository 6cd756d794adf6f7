#!/usr/bin/env bash
# The warm pool: creates of the default profile are served from started, checked sandboxes; the
# pool refills; a sandbox is never handed out twice; the daemon removes its pool when it stops.
# TAP.   usage: pool.sh PATH/TO/clearing
set -u
CLEARING=${1:?usage: pool.sh PATH/TO/clearing}
D=$(mktemp -d /tmp/clearing-pool.XXXXXX)
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1${2:+ # $2}"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }
S=(curl -s --unix-socket "$D/c.sock")
metric() { "${S[@]}" http://x/metrics | awk -v m="$1" '$1 == m {print $2}'; }
owned() {
    curl -s --unix-socket /var/run/docker.sock -G http://d/containers/json --data-urlencode \
        "filters={\"label\":[\"io.clearing.owner=daemon:$D/state/clearing.db\"]}" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}
"$CLEARING" --state-dir "$D/state" serve --socket "$D/c.sock" --pool 2 2>"$D/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 1 100); do [ -S "$D/c.sock" ] && break; sleep 0.1; done
for _ in $(seq 1 120); do [ "$(metric clearing_pool_ready)" = 2 ] && break; sleep 0.5; done
check "the pool fills to its size" '[ "$(metric clearing_pool_ready)" = 2 ]'
# Attach events of a container between two times (seconds.nanoseconds), from the engine.
attaches() {
    curl -s --unix-socket /var/run/docker.sock -G http://d/events --data-urlencode "since=$2" \
        --data-urlencode "until=$3" --data-urlencode \
        "filters={\"container\":[\"clearing-$1\"],\"event\":[\"attach\"]}" |
        grep -c '"Action":"attach"'
}
sleep 1
t0=$(date +%s.%N)
a=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
first=$("${S[@]}" -XPOST "http://x/v1/sandboxes/$a/exec" -d '{"argv":["true"]}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')
t1=$(date +%s.%N)
check "a pooled sandbox's first command runs over the channel the pool attached: no attach on its path" \
    '[ "$first" = exited ] && [ "$(attaches "$a" 0 "$t1")" = 1 ] && [ "$(attaches "$a" "$t0" "$t1")" = 0 ]' \
    "first=$first attaches: all $(attaches "$a" 0 "$t1"), since the create $(attaches "$a" "$t0" "$t1")"
b=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check "two creates are served from the pool" '[ "$(metric clearing_pool_hits_total)" = 2 ]'
check "they are different sandboxes" '[ -n "$a" ] && [ "$a" != "$b" ]'
out=$("${S[@]}" -XPOST "http://x/v1/sandboxes/$a/exec" -d '{"shell":"echo from-pool; id -u"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["stdout"])')
check "a pooled sandbox runs commands as usual" '[ "$out" = "$(printf "from-pool\n1000")" ]' "$out"
c=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{"limits":{"memory":"256m"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check "other limits are not served from the pool" '[ "$(metric clearing_pool_hits_total)" = 2 ] && [ -n "$c" ]'
for _ in $(seq 1 120); do [ "$(metric clearing_pool_ready)" = 2 ] && break; sleep 0.5; done
check "the pool refills" '[ "$(metric clearing_pool_ready)" = 2 ]'
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$a?wait=true" >/dev/null
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$b?wait=true" >/dev/null
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$c?wait=true" >/dev/null
check "with three destroyed, only the pool is left" '[ "$(owned)" = 2 ]' "$(owned)"
kill -TERM $pid; wait $pid
check "stopping the daemon removes its pool" '[ "$(owned)" = 0 ]' "$(owned)"
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
