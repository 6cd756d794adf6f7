# Shared by the shell suites here (cli.sh, plans.sh, audit.sh, pool.sh, engine_restart.sh);
# sourced, not run.
# Waiting on a condition with a deadline, and finding one test's sandboxes among everybody's:
# other suites and other people use the same dockerd at the same time.

# wait_for SECONDS COMMAND...: succeeds as soon as COMMAND does, fails when COMMAND has not
# succeeded within SECONDS. A slow machine costs time, never a verdict: the caller asserts on the
# condition itself, not on a sleep that was long enough last time.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# gone PID: the process has ended (or never was).
gone() { ! kill -0 "$1" 2>/dev/null; }

# sandboxes_of DIR [ID...]: the sandbox ids, one a line, of clearing's containers in any state that
# mount something from under DIR (the workspaces of every state directory there; "" for none) or
# carry one of the IDs. Fails, saying why on stderr, when the engine does not answer with a list: a failed
# listing must never read as "none left".
sandboxes_of() {
    curl -sS --fail --max-time 60 --unix-socket /var/run/docker.sock -G \
        http://d/containers/json --data-urlencode all=1 \
        --data-urlencode 'filters={"label":["io.clearing.managed-by=clearing"]}' |
        python3 -c '
import json, sys
try:
    containers = json.load(sys.stdin)
    assert isinstance(containers, list)
except (ValueError, AssertionError):
    sys.exit("sandboxes_of: the engine did not answer with a list of containers")
top, ids = sys.argv[1].rstrip("/") + "/", set(sys.argv[2:])
for c in containers:
    sid = (c.get("Labels") or {}).get("io.clearing.sandbox-id", c["Id"][:12])
    mounts = [m.get("Source") or "" for m in c.get("Mounts") or []]
    if sid in ids or (top != "/" and any(m.startswith(top) for m in mounts)):
        print(sid)
' "$@"
}
