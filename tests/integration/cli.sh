#!/usr/bin/env bash
# Command-line tests: the real `clearing` binary against the real dockerd with runsc, checking
# exit statuses, messages and what is left behind. TAP output. Needs root and a running engine.
#   usage: cli.sh PATH/TO/clearing
set -u
CLEARING=${1:?usage: cli.sh PATH/TO/clearing}
n=0
failed=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"; stop_second_engine' EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$err" | head -20; }

# expect NAME STATUS [GREP-STDOUT [GREP-STDERR]] -- ARGS...
expect() {
    local name=$1 want=$2 pat_out=${3:-} pat_err=${4:-}
    shift 4
    [ "${1:-}" = -- ] && shift
    "$CLEARING" "$@" >"$out" 2>"$err" </dev/null
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "# $name: exit $got, wanted $want" >>"$err"
        not_ok "$name"
        return
    fi
    if [ -n "$pat_out" ] && ! grep -qE -- "$pat_out" "$out"; then
        echo "# stdout does not match /$pat_out/:" >>"$err"; sed 's/^/#   /' "$out" >>"$err"
        not_ok "$name"
        return
    fi
    if [ -n "$pat_err" ] && ! grep -qE -- "$pat_err" "$err"; then
        echo "# stderr does not match /$pat_err/" >>"$err"
        not_ok "$name"
        return
    fi
    ok "$name"
}

count_sandboxes() { "$CLEARING" ls --engine --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

before=$(count_sandboxes)

expect "exit status mirrors the command" 3 '^hello$' '' -- run -- sh -c 'echo hello; exit 3'
expect "signal death is 128+N" 143 '' 'signaled' -- run -- sh -c 'kill -TERM $$'
expect "timeout is 124" 124 '' 'timed_out' -- run --timeout 1s -- sleep 30
expect "out of memory is 123" 123 '' 'oom' -- run --memory 128m -- \
    python3 -c 'b=[]
while True: b.append(bytearray(4<<20))'
expect "a command that cannot start is 126" 126 '' 'no/such' -- run -- /no/such/program
expect "stdout and stderr stream separately" 0 '^out$' '^err$' -- run --shell 'echo out; echo err >&2'
expect "--json prints the result record" 0 '"status": "exited"' '' -- run --json -- true
expect "truncation is reported" 0 '' 'output truncated' -- run --stdout-cap 10 --shell 'seq 1 1000'
printf 'line one\nline two\n' >"$out.in"
expect "stdin file reaches the command" 0 '^2 line two$' '' -- run --stdin-file "$out.in" --shell 'n=$(wc -l); echo "$n line two"'
rm -f "$out.in"
expect "env and cwd" 0 '^/tmp x=1$' '' -- run --env X=1 --cwd /tmp --shell 'echo "$(pwd) x=$X"'

# Bad input: clear errors, exit 2, nothing created.
expect "malformed memory" 2 '' "'512x'" -- run --memory 512x -- true
expect "cpus out of range" 2 '' 'cpus .* out of range' -- run --cpus 8 -- true
expect "lifetime out of range" 2 '' 'lifetime' -- run --lifetime 5 -- true
expect "malformed timeout" 2 '' 'not a duration' -- run --timeout soon -- true
expect "no command" 2 '' 'no command' -- run
expect "both shell and command" 2 '' 'not both' -- run --shell 'true' -- true
expect "bad env entry" 2 '' 'KEY=VALUE' -- run --env NOEQUALS -- true
expect "unknown command" 2 '' 'unknown command' -- frobnicate
expect "unknown option" 2 '' '' -- run --frobnicate -- true
expect "rm rejects a malformed id" 2 '' 'not a sandbox id' -- rm '../../etc'
expect "rm of a missing sandbox is idempotent" 0 'sb-0000000000000000' '' -- rm --engine sb-0000000000000000
expect "missing image names the build command" 125 '' 'images/build.sh' -- run --image clearing/none:0 -- true
expect "engine down names the socket and dockerd" 125 '' 'start dockerd' -- \
    --docker-host unix:///nonexistent/docker.sock run -- true
expect "insecure runtime other than runc is refused" 125 '' 'runc' -- run --insecure-runtime crun -- true

after=$(count_sandboxes)
if [ "$before" = "$after" ]; then ok "no sandbox left behind ($after)"; else
    echo "# before $before, after $after" >"$err"; not_ok "no sandbox left behind"; fi

# A second engine without runsc: clearing must refuse, not fall back.
D2=""
stop_second_engine() {
    if [ -n "$D2" ] && [ -f "$D2/pid" ]; then
        kill "$(cat "$D2/pid")" 2>/dev/null
        for _ in $(seq 1 50); do [ -f "$D2/pid" ] || break; sleep 0.1; done
        rm -rf "$D2"
    fi
}
D2=$(mktemp -d /tmp/clearing-d2.XXXXXX)
echo '{}' >"$D2/daemon.json"
setsid dockerd --data-root "$D2/data" --exec-root "$D2/exec" -H "unix://$D2/docker.sock" \
    --pidfile "$D2/pid" --bridge=none --iptables=false --ip6tables=false \
    --config-file "$D2/daemon.json" >"$D2/log" 2>&1 </dev/null &
for _ in $(seq 1 100); do
    curl -sf --unix-socket "$D2/docker.sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.1
done
expect "without runsc, run is refused" 125 '' "runsc' is not registered" -- \
    --docker-host "unix://$D2/docker.sock" run -- true
expect "without runsc, doctor fails and says how to fix it" 1 'FAIL gVisor runtime.*setup.sh' '' -- \
    --docker-host "unix://$D2/docker.sock" doctor
stop_second_engine

expect "doctor passes on this host" 0 'All checks passed' '' -- doctor

# The daemon's client commands, against a real daemon.
SRV=$(mktemp -d /tmp/clearing-cli-srv.XXXXXX)
export CLEARING_HOST="unix://$SRV/c.sock"
REPO=$(bash "$(dirname "$0")/../../scripts/sample-repo.sh" "$SRV/repo")
head_before=$(git -C "$REPO" rev-parse HEAD)
"$CLEARING" --state-dir "$SRV/state" serve --socket "$SRV/c.sock" --repo-root "$SRV/repo" \
    2>"$SRV/log" &
srv_pid=$!
for _ in $(seq 1 100); do [ -S "$SRV/c.sock" ] && break; sleep 0.1; done
expect "client: daemon down names the socket" 1 '' 'cannot reach the clearing daemon' -- \
    --host unix:///nonexistent.sock ls
"$CLEARING" create --memory 256m --env GREETING=hi --label task=cli >"$out" 2>"$err"
sid=$(tail -n1 "$out")
if [[ "$sid" =~ ^sb-[0-9a-f]{16}$ ]]; then ok "create prints the id last"; else not_ok "create prints the id last"; fi
expect "exec streams and mirrors the status" 3 '^hi$' '^e$' -- exec "$sid" -- sh -c 'echo $GREETING; echo e >&2; exit 3'
expect "exec state persists between calls" 0 '' '' -- exec "$sid" --shell 'echo kept > f'
expect "exec sees the earlier file" 0 '^kept$' '' -- exec "$sid" -- cat f
expect "exec timeout is 124" 124 '' 'timed_out' -- exec --timeout 1s "$sid" -- sleep 30
expect "exec binary output is exact" 0 '' '' -- exec "$sid" --shell 'printf "\\377\\000x"'
if [ "$(od -An -tx1 "$out" | tr -d ' \n')" = "ff0078" ]; then ok "binary bytes arrive unchanged"; else not_ok "binary bytes arrive unchanged"; fi
expect "exec --json prints the record" 0 '"state": "done"' '' -- exec --json "$sid" -- true
expect "ls shows it" 0 "$sid" '' -- ls
expect "ls --label filters" 0 "$sid" '' -- ls --label task=cli
expect "inspect shows it" 0 '"state": "running"' '' -- inspect "$sid"
expect "extend" 0 'expires at' '' -- extend "$sid" --by 60s
"$CLEARING" exec --detach "$sid" --shell 'echo started; sleep 1; echo done; exit 5' >"$out" 2>"$err"
pid=$(tail -n1 "$out")
if [[ "$pid" =~ ^pr-[0-9a-f]{16}$ ]]; then ok "exec --detach prints a process id"; else not_ok "exec --detach prints a process id"; fi
expect "ps lists the process" 0 "$pid" '' -- ps "$sid"
expect "logs -f follows to the end and mirrors the status" 5 'started' '' -- logs -f "$sid" "$pid"
expect "logs shows all output afterwards" 0 'done' '' -- logs "$sid" "$pid"
printf 'abc\000\377' >"$SRV/up.bin"
expect "cp uploads a file" 0 '' '' -- cp "$SRV/up.bin" "$sid:in/up.bin"
expect "the sandbox sees it" 0 '^5$' '' -- exec "$sid" --shell 'wc -c < in/up.bin'
expect "cp downloads it byte-exact" 0 '' '' -- cp "$sid:in/up.bin" "$SRV/down.bin"
if cmp -s "$SRV/up.bin" "$SRV/down.bin"; then ok "round trip is byte-exact"; else not_ok "round trip is byte-exact"; fi
mkdir -p "$SRV/tree/sub" && echo x >"$SRV/tree/sub/f" && ln -s /etc/shadow "$SRV/tree/l"
expect "cp uploads a directory" 0 '' '' -- cp "$SRV/tree" "$sid:t"
expect "cp downloads a directory as a tar" 0 '' '' -- cp "$sid:t" "$SRV/t.tar"
if tar -tf "$SRV/t.tar" | grep -q '^sub/f$'; then ok "the archive holds the tree"; else not_ok "the archive holds the tree"; fi
expect "cp refuses a hostile path" 2 '' "contains '..'" -- cp "$SRV/up.bin" "$sid:../../etc/x"
expect "cp will not follow a symlink out" 1 '' 'symbolic link' -- cp "$sid:t/l" "$SRV/shadow"
if [ ! -e "$SRV/shadow" ]; then ok "nothing was written for the refused download"; else not_ok "nothing was written for the refused download"; fi
# Git: a sandbox on a branch of its own; its changes come back as a commit.
"$CLEARING" create --repo "$REPO" --branch agent/cli-test >"$out" 2>"$err"
gid=$(tail -n1 "$out")
if [[ "$gid" =~ ^sb-[0-9a-f]{16}$ ]]; then ok "create --repo"; else not_ok "create --repo"; fi
expect "the workspace holds the base commit, without .git" 0 '^calc.py NO-GIT$' '' -- \
    exec "$gid" --shell 'test -e .git && g=HAS-GIT || g=NO-GIT; echo "$(ls calc.py) $g"'
expect "changes in the sandbox" 0 '' '' -- exec "$gid" --shell \
    'echo "# more" >> calc.py && rm test_calc.py && echo new > new.txt && chmod +x new.txt && ln -s /etc/shadow evil'
expect "diff shows them" 0 '^\+# more$' '' -- diff "$gid"
expect "commit makes one commit on the branch" 0 'agent/cli-test' '' -- commit "$gid" -m "cli change"
if [ "$(git -C "$REPO" log -1 --format=%s agent/cli-test)" = "cli change" ] &&
   git -C "$REPO" log -1 --format=%B agent/cli-test | grep -q "^Clearing-Sandbox: $gid$" &&
   [ "$(git -C "$REPO" ls-tree agent/cli-test evil | cut -c1-6)" = 120000 ] &&
   [ "$(git -C "$REPO" show agent/cli-test:evil)" = /etc/shadow ] &&
   [ "$(git -C "$REPO" ls-tree agent/cli-test new.txt | cut -c1-6)" = 100755 ] &&
   ! git -C "$REPO" cat-file -e agent/cli-test:test_calc.py 2>/dev/null; then
    ok "the commit has the change, the symlink as a link, the mode, the deletion, the trailer"
else
    not_ok "the commit has the change, the symlink as a link, the mode, the deletion, the trailer"
fi
if [ "$(git -C "$REPO" rev-parse HEAD)" = "$head_before" ] && [ -z "$(git -C "$REPO" status --porcelain)" ]; then
    ok "the caller's checkout is untouched"; else not_ok "the caller's checkout is untouched"; fi
expect "a branch that exists is refused" 1 '' 'exists' -- create --repo "$REPO" --branch agent/cli-test
expect "a repository outside repo_roots is refused" 1 '' 'repo_roots' -- create --repo /tmp
expect "rm the git sandbox" 0 "$gid" '' -- rm "$gid"
expect "exec on an unknown sandbox" 125 '' 'no sandbox' -- exec sb-00000000000000aa -- true
expect "rm through the daemon" 0 "$sid" '' -- rm "$sid"
expect "exec on a destroyed sandbox is refused" 125 '' 'not running' -- exec "$sid" -- true
kill "$srv_pid"; wait "$srv_pid" 2>/dev/null
unset CLEARING_HOST
rm -rf "$SRV"

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
