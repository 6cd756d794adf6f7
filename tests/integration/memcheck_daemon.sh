#!/usr/bin/env bash
# The daemon under valgrind memcheck through a create / exec / streamed exec / file / destroy loop:
# no memory errors and no leaked block at exit. TAP.   usage: memcheck_daemon.sh PATH/TO/clearing
set -u
CLEARING=${1:?usage: memcheck_daemon.sh PATH/TO/clearing}
if ! command -v valgrind >/dev/null; then echo "1..0 # SKIP valgrind is not installed"; exit 0; fi
D=$(mktemp -d /tmp/clearing-memcheck.XXXXXX)
trap 'pkill -TERM -f "serve --socket $D/c.sock" 2>/dev/null; sleep 1; rm -rf "$D"' EXIT
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
valgrind --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --error-exitcode=9 --log-file="$D/vg.log" \
    "$CLEARING" --state-dir "$D/state" serve --socket "$D/c.sock" >"$D/out" 2>&1 &
vg=$!
for _ in $(seq 1 120); do [ -S "$D/c.sock" ] && break; sleep 0.5; done
S=(curl -s --unix-socket "$D/c.sock")
for i in 1 2 3; do
    id=$("${S[@]}" -XPOST http://x/v1/sandboxes -d '{}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
    "${S[@]}" -XPOST "http://x/v1/sandboxes/$id/exec" -d '{"argv":["echo","hi"]}' >/dev/null
    "${S[@]}" -XPOST "http://x/v1/sandboxes/$id/exec?stream=true" -d '{"shell":"echo x; exit 3"}' >/dev/null
    "${S[@]}" -XPUT --data-binary @/etc/hostname "http://x/v1/sandboxes/$id/files/f" >/dev/null
    "${S[@]}" "http://x/v1/sandboxes/$id/files/f" >/dev/null
    "${S[@]}" -XPOST "http://x/v1/sandboxes/$id/exec" -d '{bad json' >/dev/null
    "${S[@]}" -XDELETE "http://x/v1/sandboxes/$id" >/dev/null
done
execs=$("${S[@]}" http://x/metrics | awk '/^clearing_execs_total /{print $2}')
if [ "$execs" = 6 ]; then ok "the loop ran under memcheck (6 execs)"; else not_ok "the loop ran under memcheck (got '$execs' execs)"; fi
kill -TERM "$vg"
wait "$vg"; rc=$?
if [ "$rc" = 0 ]; then ok "memcheck found no error and no leak"; else not_ok "memcheck exit $rc"; sed 's/^/# /' "$D/vg.log" | tail -40; fi
if grep -q "All heap blocks were freed\|definitely lost: 0 bytes" "$D/vg.log"; then ok "no leaked block at exit"; else not_ok "leaks at exit"; grep -E "lost" "$D/vg.log" | sed 's/^/# /'; fi
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
