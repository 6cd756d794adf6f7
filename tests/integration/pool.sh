#!/usr/bin/env bash
# The warm pool: creates of the default profile are served from started, checked sandboxes; the
# pool refills; a sandbox is never handed out twice; the daemon removes its pool when it stops.
# TAP.   usage: pool.sh PATH/TO/clearing
set -u
CLEARING=${1:?usage: pool.sh PATH/TO/clearing}
. "$(dirname "$0")/helpers.sh"
D=$(mktemp -d /tmp/clearing-pool.XXXXXX)
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1${2:+ # $2}"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }
S=(curl -s --unix-socket "$D/c.sock")
metric() { "${S[@]}" http://x/metrics | awk -v m="$1" '$1 == m {print $2}'; }
# The sandbox ids of this daemon's containers, in any state, one a line; "error: ..." and a
# failure when the engine does not answer with a list (never an empty "none").
owned_ids() {
    curl -sf --max-time 60 --unix-socket /var/run/docker.sock -G http://d/containers/json \
        --data-urlencode all=1 --data-urlencode \
        "filters={\"label\":[\"io.clearing.owner=daemon:$D/state/clearing.db\"]}" |
        python3 -c 'import json,sys; [print(c["Labels"]["io.clearing.sandbox-id"]) for c in json.load(sys.stdin)]' 2>/dev/null ||
        { echo "error: the engine did not list the containers"; return 1; }
}
owned() { local ids; ids=$(owned_ids) || { echo "$ids"; return 1; }; printf '%s' "$ids" | grep -c .; }
"$CLEARING" --state-dir "$D/state" serve --socket "$D/c.sock" --pool 2 2>"$D/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$D"' EXIT
answers() { "${S[@]}" -f --max-time 10 http://x/v1/health >/dev/null 2>&1; }
up_or_gone() { gone "$pid" || answers; }
wait_for 120 up_or_gone
check "the daemon answers on its socket" answers "$(tail -n 5 "$D/log" | tr '\n' ' ')"
pool_ready() { [ "$(metric clearing_pool_ready)" = "$1" ]; }
wait_for 120 pool_ready 2
check "the pool fills to its size" 'pool_ready 2' "ready: $(metric clearing_pool_ready)"
# Attach events of a container between two times (seconds.nanoseconds), from the engine; "error"
# when the engine does not answer.
attaches() {
    local ev
    ev=$(curl -sf --max-time 60 --unix-socket /var/run/docker.sock -G http://d/events \
        --data-urlencode "since=$2" --data-urlencode "until=$3" --data-urlencode \
        "filters={\"container\":[\"clearing-$1\"],\"event\":[\"attach\"]}") || { echo error; return 1; }
    grep -c '"Action":"attach"' <<<"$ev"
}
# t0 comes after the engine has logged the pool's attach to each of its sandboxes: an attach
# after t0 can then only be one on the first command's path.
pool_attached() {
    local id ids
    ids=$(owned_ids) && [ "$(printf '%s' "$ids" | grep -c .)" = 2 ] || return 1
    for id in $ids; do [ "$(attaches "$id" 0 "$(date +%s.%N)")" -ge 1 ] || return 1; done
}
wait_for 120 pool_attached
check "the engine has logged an attach to each pooled sandbox" pool_attached "$(owned_ids | tr '\n' ' ')"
t0=$(date +%s.%N)
a=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
first=$("${S[@]}" -XPOST "http://x/v1/sandboxes/$a/exec" -d '{"argv":["true"]}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')
t1=$(date +%s.%N)
check "a pooled sandbox's first command runs over the channel the pool attached: no attach on its path" \
    '[ "$first" = exited ] && [ "$(attaches "$a" 0 "$t1")" = 1 ] && [ "$(attaches "$a" "$t0" "$t1")" = 0 ]' \
    "first=$first attaches: all $(attaches "$a" 0 "$t1"), since the create $(attaches "$a" "$t0" "$t1")"
# Its lifetime starts at the hand-out, and so does max_lifetime (3600 s by default): the time it
# waited in the pool does not add to how far it may be extended.
span=$("${S[@]}" "http://x/v1/sandboxes/$a" |
       python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["max_expires_at"] - s["created_at"])')
check "a pooled sandbox may be extended to max_lifetime from its hand-out, not past it" \
    '[ -n "$span" ] && [ "$span" -le 3600 ] && [ "$span" -ge 3599 ]' "max_expires_at - created_at = $span"
past=$("${S[@]}" -o /dev/null -w '%{http_code}' -XPOST "http://x/v1/sandboxes/$a/extend" -d '{"by":"3599s"}')
check "an extension past max_lifetime from the hand-out is refused" '[ "$past" = 429 ]' "HTTP $past"
b=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check "two creates are served from the pool" '[ "$(metric clearing_pool_hits_total)" = 2 ]'
check "they are different sandboxes" '[ -n "$a" ] && [ "$a" != "$b" ]'
out=$("${S[@]}" -XPOST "http://x/v1/sandboxes/$a/exec" -d '{"shell":"echo from-pool; id -u"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["stdout"])')
check "a pooled sandbox runs commands as usual" '[ "$out" = "$(printf "from-pool\n1000")" ]' "$out"
c=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{"limits":{"memory":"256m"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check "other limits are not served from the pool" '[ "$(metric clearing_pool_hits_total)" = 2 ] && [ -n "$c" ]'
wait_for 120 pool_ready 2
check "the pool refills" 'pool_ready 2' "ready: $(metric clearing_pool_ready)"
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$a?wait=true" >/dev/null
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$b?wait=true" >/dev/null
"${S[@]}" -XDELETE "http://x/v1/sandboxes/$c?wait=true" >/dev/null
check "with three destroyed, only the pool is left" '[ "$(owned)" = 2 ]' "$(owned)"
kill -TERM $pid
wait_for 120 gone $pid
check "the daemon stops on SIGTERM" 'gone $pid' "still running 120 s after SIGTERM"
wait $pid
check "stopping the daemon removes its pool" '[ "$(owned)" = 0 ]' "$(owned)"
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
