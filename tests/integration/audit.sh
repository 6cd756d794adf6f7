#!/usr/bin/env bash
# The audit log, end to end: every action of `clearing run` and of the daemon leaves its record
# with the right fields (and never a secret); tampering with a real log is caught at the right
# record; a writer killed with SIGKILL loses no acknowledged record; rotation keeps one chain;
# a full disk or an unwritable log refuses the action instead of running it unaudited.
# TAP output. Needs root (tmpfs mounts), a running engine with runsc and clearing/default:latest.
#   usage: audit.sh PATH/TO/clearing PATH/TO/audit-stress
set -u
CLEARING=${1:?usage: audit.sh PATH/TO/clearing PATH/TO/audit-stress}
STRESS=${2:?usage: audit.sh PATH/TO/clearing PATH/TO/audit-stress}
. "$(dirname "$0")/helpers.sh"
# Every log path below is explicit: nothing from the caller's environment may redirect it.
unset CLEARING_AUDIT_LOG CLEARING_HOST

n=0
failed=0
W=$(mktemp -d /tmp/clearing-audit.XXXXXX)
out=$W/out
err=$W/err
daemon_pids=()
mounts=()
: >"$W/sandboxes" # "STATE-DIR ID" of every sandbox made here, removed at exit if still there

cleanup() {
    for p in "${daemon_pids[@]}" ${bg:-}; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    while read -r sd id; do
        "$CLEARING" --state-dir "$sd" rm --engine "$id" >/dev/null 2>&1
    done <"$W/sandboxes"
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$err" | head -30; }

# Runs clearing (or, after --sh, any command); stdout in $out, stderr in $err, the status in $rc.
clr() {
    if [ "${1:-}" = --sh ]; then shift; "$@" >"$out" 2>"$err" </dev/null; rc=$?; return; fi
    "$CLEARING" "$@" >"$out" 2>"$err" </dev/null; rc=$?
}
SRC=$(cd "$(dirname "$0")/../.." && pwd) # the source tree (scripts/)

# expect NAME STATUS [GREP-STDOUT [GREP-STDERR]] -- ARGS...
expect() {
    local name=$1 want=$2 pat_out=${3:-} pat_err=${4:-}
    shift 4
    [ "${1:-}" = -- ] && shift
    clr "$@"
    if [ "$rc" != "$want" ]; then
        { echo "exit $rc, wanted $want; stdout:"; head -5 "$out"; } >>"$err"
        not_ok "$name"
        return 1
    fi
    if [ -n "$pat_out" ] && ! grep -qE -- "$pat_out" "$out"; then
        { echo "stdout does not match /$pat_out/:"; cat "$out"; } >>"$err"
        not_ok "$name"
        return 1
    fi
    if [ -n "$pat_err" ] && ! grep -qE -- "$pat_err" "$err"; then
        echo "stderr does not match /$pat_err/" >>"$err"
        not_ok "$name"
        return 1
    fi
    ok "$name"
}

# check NAME COMMAND...: ok when the command succeeds; its output is shown when it does not.
check() {
    local name=$1
    shift
    if "$@" >"$err" 2>&1; then ok "$name"; else not_ok "$name"; fi
}

# Python assertions over records. R is every complete record of the files given (in order; a
# torn last line is skipped), find(k=v, ...) the matching ones, one(...) the only match.
PRELUDE='
import hashlib, json, os, re, sys
R = []
for f in sys.argv[1:]:
    with open(f, "rb") as fh:
        for line in fh:
            if line.endswith(b"\n"):
                R.append(json.loads(line))
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UNIX_ACTOR = re.compile(r"^uid=%s pid=[0-9]+$" % os.getuid())
def find(**kw):
    return [r for r in R if all(r.get(k) == v for k, v in kw.items())]
def one(**kw):
    m = find(**kw)
    assert len(m) == 1, "%d records match %r" % (len(m), kw)
    return m[0]
def well_formed(r):
    for k in ("seq", "ts", "actor", "sandbox", "action", "outcome", "details", "prev", "hash"):
        assert k in r, "record %r lacks %s" % (r.get("seq"), k)
    assert isinstance(r["seq"], int) and r["seq"] > 0, r["seq"]
    assert TS.match(r["ts"]), "ts %r is not UTC with microseconds" % r["ts"]
    assert isinstance(r["actor"], str) and r["actor"], "empty actor in %r" % r
    assert isinstance(r["details"], dict), r
    return True
def canonical_hash(r):
    body = dict(r)
    body.pop("hash", None)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((r["prev"] + "\n" + text).encode()).hexdigest()
def secret_free(*secrets):
    blob = "\n".join(json.dumps(r) for r in R)
    for s in secrets:
        assert s not in blob, "secret %r appears in the log" % s
    return True
'
# pycheck NAME CODE FILE...
pycheck() {
    local name=$1 code=$2
    shift 2
    check "$name" python3 -c "$PRELUDE
$code" "$@"
}

# verify_broken NAME FILE-FOR-THE-MESSAGE LINE SEQ PATTERN -- VERIFY-ARGS...: clearing audit
# verify must exit 1 and name FILE, LINE, SEQ and a problem matching PATTERN.
verify_broken() {
    local name=$1 file=$2 line=$3 seq=$4 pat=$5
    shift 5
    [ "${1:-}" = -- ] && shift
    clr "$@"
    local want="^BROKEN at $file line $line \\(record $seq\\): .*($pat)"
    if [ "$rc" = 1 ] && grep -qE -- "$want" "$out"; then
        ok "$name"
    else
        { echo "exit $rc, wanted 1 and /$want/:"; cat "$out"; } >>"$err"
        not_ok "$name"
    fi
}

# verify_ok NAME RECORDS -- VERIFY-ARGS...: the chain checks out and holds RECORDS records.
verify_ok() {
    local name=$1 records=$2
    shift 2
    [ "${1:-}" = -- ] && shift
    expect "$name" 0 "^OK: $records records" '' -- "$@"
}

# Mutates a copy of a log: CODE edits L, the list of its lines (bytes, with their newlines).
mutate() {
    local src=$1 dst=$2 code=$3
    python3 -c "
import hashlib, json, sys
L = open(sys.argv[1], 'rb').read().splitlines(keepends=True)
def rec(i): return json.loads(L[i])
def line(r): return (json.dumps(r, sort_keys=True, separators=(',', ':')) + '\n').encode()
def canonical_hash(r):
    body = dict(r); body.pop('hash', None)
    text = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
    return hashlib.sha256((r['prev'] + '\n' + text).encode()).hexdigest()
$code
open(sys.argv[2], 'wb').write(b''.join(L))
" "$src" "$dst"
}

# A daemon on its own socket and state directory: start_daemon NAME STATE AUDIT-LOG [ARGS...]
# sets $SOCK and $DPID.
start_daemon() {
    local name=$1 state=$2 log=$3
    shift 3
    SOCK=$W/$name.sock
    "$CLEARING" --state-dir "$state" --audit-log "$log" serve --socket "$SOCK" "$@" \
        2>"$W/$name.log" &
    DPID=$!
    daemon_pids+=("$DPID")
    wait_for 120 daemon_up_or_gone && daemon_answers && return 0
    echo "daemon $name did not answer within 120 s or exited:" >"$err"
    cat "$W/$name.log" >>"$err"
    return 1
}
daemon_answers() { curl -sf --max-time 10 --unix-socket "$SOCK" http://d/v1/health >/dev/null 2>&1; }
daemon_up_or_gone() { gone "$DPID" || daemon_answers; }
stop_daemon() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# api METHOD PATH [BODY]: the daemon on $SOCK; the answer's body in $out, its status in $code.
api() {
    local args=(-s -o "$out" -w '%{http_code}' --unix-socket "$SOCK" -X "$1")
    [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' -d "$3")
    code=$(curl "${args[@]}" "http://d$2" 2>"$err")
}
jfield() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$out" "$1"; }
# api_expect NAME STATUS METHOD PATH [BODY]
api_expect() {
    local name=$1 want=$2
    shift 2
    api "$@"
    if [ "$code" = "$want" ]; then ok "$name"; else
        { echo "HTTP $code, wanted $want:"; cat "$out"; } >"$err"
        not_ok "$name"
        return 1
    fi
}
remember() { echo "$1 $2" >>"$W/sandboxes"; }

SECRET_RUN="run-secret-$RANDOM$RANDOM-value"
SECRET_SB="sandbox-secret-$RANDOM$RANDOM-value"
SECRET_EXEC="exec-secret-$RANDOM$RANDOM-value"
SECRET_PROC="proc-secret-$RANDOM$RANDOM-value"

###########################################################################################
# a. Every action leaves its record, with the right fields.
###########################################################################################

CL=$W/cli/audit.log
expect "run: the command runs and its status is mirrored" 3 '^hello$' '' -- \
    --state-dir "$W/state" --audit-log "$CL" run --memory 256m --cpus 0.5 --pids 128 \
    --env "AUDIT_SECRET=$SECRET_RUN" --env OTHER=1 -- sh -c 'echo hello; exit 3'
pycheck "run: four well-formed records, seq 1..4, one actor, one sandbox" '
assert [r["action"] for r in R] == ["sandbox.create", "exec.start", "exec", "sandbox.destroy"], [r["action"] for r in R]
assert [r["seq"] for r in R] == [1, 2, 3, 4]
for r in R: well_formed(r)
import pwd
want = "cli uid=%d user=%s" % (os.getuid(), pwd.getpwuid(os.getuid()).pw_name)
assert all(r["actor"] == want for r in R), (want, [r["actor"] for r in R])
assert len({r["sandbox"] for r in R}) == 1 and re.match(r"^sb-[0-9a-f]{16}$", R[0]["sandbox"])
' "$CL"
pycheck "run: sandbox.create records limits, runtime and image" '
d = one(action="sandbox.create")["details"]
assert one(action="sandbox.create")["outcome"] == "ok"
l = d["limits"]
assert l["memory"] == 256 << 20 and l["cpu_millis"] == 500 and l["pids"] == 128, l
for k in ("lifetime", "tmp", "workspace", "workspace_inodes", "nofile", "fsize"):
    assert isinstance(l.get(k), int) and l[k] > 0, (k, l)
assert d["runtime"] == "runsc" and d["insecure"] is False, d
assert d["image"] == "clearing/default:latest", d
' "$CL"
pycheck "run: exec.start records argv and environment NAMES" '
d = one(action="exec.start")["details"]
assert d["argv"] == ["sh", "-c", "echo hello; exit 3"], d
assert sorted(d["env_names"]) == ["AUDIT_SECRET", "OTHER"], d
assert d["cwd"] == "/workspace" and d["timeout_ms"] == 60000, d
' "$CL"
pycheck "run: exec records status, exit code, duration, cpu, peak memory, bytes" '
r = one(action="exec")
d = r["details"]
assert r["outcome"] == "exited" and d["status"] == "exited" and d["exit_code"] == 3, d
assert d["signal"] is None and d["timed_out"] is False and d["oom"] is False, d
assert d["wall_us"] > 0 and d["peak_memory_bytes"] > 0, d
assert isinstance(d["cpu_user_us"], int) and isinstance(d["cpu_system_us"], int), d
assert d["stdout_bytes"] == 6 and d["stderr_bytes"] == 0, d
' "$CL"
pycheck "run: sandbox.destroy records the reason" '
r = one(action="sandbox.destroy")
assert r["outcome"] == "ok" and r["details"]["reason"] == "run-finished", r
' "$CL"
# The grep must be able to find something in this very file: the variable's name is recorded.
check "run: the secret env value appears nowhere in the log (its name does)" bash -c \
    "[ -s '$CL' ] && grep -qF AUDIT_SECRET '$CL' && ! grep -qF -- '$SECRET_RUN' '$CL'"

expect "run: a missing image is refused" 125 '' 'images/build.sh' -- \
    --state-dir "$W/state" --audit-log "$CL" run --image clearing/none:0 -- true
pycheck "run: the refused create is recorded (refused, no sandbox, the reason)" '
r = R[-1]
well_formed(r)
assert r["seq"] == 5 and r["action"] == "sandbox.create" and r["outcome"] == "refused", r
assert r["sandbox"] is None, r
assert r["details"]["code"] == "not_found" and "clearing/none:0" in r["details"]["error"], r
assert not find(action="exec.start", seq=6), "a refused run must not record an exec"
' "$CL"
expect "run: a timeout is 124" 124 '' 'timed_out' -- \
    --state-dir "$W/state" --audit-log "$CL" run --timeout 1s -- sleep 30
pycheck "run: the timed-out exec is recorded as timed_out" '
r = find(action="exec")[-1]
assert r["outcome"] == "timed_out" and r["details"]["timed_out"] is True, r
assert r["details"]["exit_code"] is None, r
' "$CL"
verify_ok "run: the CLI log verifies" 9 -- --state-dir "$W/state" --audit-log "$CL" audit verify
# Records cut from the log's end (#16.3): the chain alone cannot show it, the signed checkpoint
# beside the log (written when each run closed the log) does.
# The checkpoint is signed with the verdict key of the run's state directory (Ed25519): its
# public half alone checks it, here and with openssl (scripts/verify-audit-checkpoint.sh).
mkdir -p "$W/cut"
cp "$CL" "$CL.checkpoint" "$W/cut/"
CUT=$W/cut/$(basename "$CL")
PUB=$W/state/verdict.key.pub
check "run: no HMAC key beside the log (the checkpoint is signed with the verdict key)" \
    bash -c "[ -s '$PUB' ] && [ -s '$CL.checkpoint' ] && [ ! -e '$CL.key' ]"
expect "run: the copied log verifies against its checkpoint with the public key alone" 0 \
    'checkpoint: record 9 signed at .* by Ed25519 key [0-9a-f]{16} matches' '' -- \
    --audit-log "$CUT" audit verify --pubkey "$PUB"
expect "run: the state directory's public key is the default" 0 \
    'checkpoint: record 9 signed at .* by Ed25519 key' '' -- \
    --state-dir "$W/state" --audit-log "$CUT" audit verify
expect "run: openssl alone verifies the real checkpoint, and finds its record in the log" 0 \
    'Signature Verified Successfully' '' -- \
    --sh sh "$SRC/scripts/verify-audit-checkpoint.sh" "$PUB" "$CUT.checkpoint" "$CUT"
head -n 7 "$CL" >"$CUT"
expect "tamper: two records cut from the end are found by the checkpoint" 1 \
    'BROKEN .*the log was truncated after record 7: the checkpoint of .* names record 9' '' -- \
    --audit-log "$CUT" audit verify --pubkey "$PUB"
expect "tamper: openssl's recipe does not find record 9 in the cut log" 1 '' \
    'record 9 with hash .* is not in' -- \
    --sh sh "$SRC/scripts/verify-audit-checkpoint.sh" "$PUB" "$CUT.checkpoint" "$CUT"
# Re-signed by someone with another key: a checkpoint of record 7 signed with a key of their
# own fails, whether it names their key or the daemon's.
openssl genpkey -algorithm ed25519 -out "$W/cut/other.pem" 2>/dev/null
python3 - "$CUT" "$W/cut/other.pem" "$(sed -n 's/.*"key_id":"\([0-9a-f]*\)".*/\1/p' "$CUT.checkpoint")" <<'PYEOF'
import json, subprocess, sys
log, key, daemon_id = sys.argv[1:4]
r7 = json.loads(open(log).read().splitlines()[6])
ts = "2026-12-06T14:00:00.000000Z"
stmt = "clearing-audit-checkpoint v2\nseq 7\nhash %s\nts %s\n" % (r7["hash"], ts)
open(log + ".stmt", "w").write(stmt)
sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", log + ".stmt"],
                     check=True, capture_output=True).stdout
import base64
for name, kid in (("own", "0123456789abcdef"), ("daemon", daemon_id)):
    cp = {"seq": 7, "hash": r7["hash"], "ts": ts, "key_id": kid, "sig": base64.b64encode(sig).decode()}
    open("%s.checkpoint.%s" % (log, name), "w").write(json.dumps(cp, sort_keys=True, separators=(",", ":")))
PYEOF
cp "$CUT.checkpoint.own" "$CUT.checkpoint"
expect "tamper: a checkpoint re-signed with another key (naming it) fails" 1 \
    'BROKEN .*names key 0123456789abcdef, not this public key' '' -- \
    --audit-log "$CUT" audit verify --pubkey "$PUB"
cp "$CUT.checkpoint.daemon" "$CUT.checkpoint"
expect "tamper: a checkpoint re-signed with another key (naming the daemon's) fails" 1 \
    "BROKEN .*signature does not match the public key" '' -- \
    --audit-log "$CUT" audit verify --pubkey "$PUB"
expect "tamper: openssl's recipe refuses it too" 1 '' '' -- \
    --sh sh "$SRC/scripts/verify-audit-checkpoint.sh" "$PUB" "$CUT.checkpoint"

# The daemon, on its own socket and state directory, also on TCP with a token.
DL=$W/daemon/audit.log
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf 'tester:%s\n' "$TOKEN" >"$W/tokens"
chmod 600 "$W/tokens"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo '{"reaper_interval_ms": 500}' >"$W/daemon.json"
mkdir -p "$W/daemon"
if start_daemon d "$W/dstate" "$DL" --config "$W/daemon.json" --tcp "127.0.0.1:$PORT" \
    --token-file "$W/tokens"; then
    ok "daemon: starts with its audit log"
else
    not_ok "daemon: starts with its audit log"
fi
D_PID=$DPID

# First, so that its wait overlaps the rest: a sandbox the reaper must destroy.
api_expect "daemon: create a sandbox with a 10 s lifetime" 201 POST /v1/sandboxes \
    '{"limits":{"lifetime":"10s"}}'
SBR=$(jfield id)
remember "$W/dstate" "$SBR"

api_expect "daemon: create" 201 POST /v1/sandboxes \
    "{\"env\":{\"SB_SECRET\":\"$SECRET_SB\"},\"limits\":{\"memory\":\"256m\",\"cpus\":\"0.5\"}}"
SB=$(jfield id)
remember "$W/dstate" "$SB"
api_expect "daemon: exec" 200 POST "/v1/sandboxes/$SB/exec" \
    "{\"argv\":[\"sh\",\"-c\",\"printf 12345\"],\"env\":{\"EXEC_SECRET\":\"$SECRET_EXEC\"}}"
EX1=$(jfield id)
api_expect "daemon: a timed-out exec" 200 POST "/v1/sandboxes/$SB/exec" \
    '{"argv":["sleep","30"],"timeout":"1s"}'
EX2=$(jfield id)
api_expect "daemon: start a background process" 201 POST "/v1/sandboxes/$SB/processes" \
    "{\"argv\":[\"sleep\",\"60\"],\"env\":{\"PROC_SECRET\":\"$SECRET_PROC\"}}"
PR=$(jfield id)
api_expect "daemon: signal it" 204 POST "/v1/sandboxes/$SB/processes/$PR/signal" '{"signal":"TERM"}'
api_expect "daemon: destroy by the client" 204 DELETE "/v1/sandboxes/$SB"
api_expect "daemon: out-of-range limits are refused" 400 POST /v1/sandboxes '{"limits":{"cpus":"64"}}'

code=$(curl -s -o "$out" -w '%{http_code}' -H 'Authorization: Bearer wrong-token-0123456789abcdef' \
    "http://127.0.0.1:$PORT/v1/sandboxes" 2>"$err")
if [ "$code" = 401 ]; then ok "daemon: a wrong token on TCP is 401"; else
    echo "HTTP $code" >>"$err"; not_ok "daemon: a wrong token on TCP is 401"; fi
code=$(curl -s -o "$out" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X POST -d '{}' \
    "http://127.0.0.1:$PORT/v1/sandboxes" 2>"$err")
SBT=$(jfield id 2>/dev/null)
[ -n "$SBT" ] && remember "$W/dstate" "$SBT"
code2=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X DELETE \
    "http://127.0.0.1:$PORT/v1/sandboxes/$SBT" 2>>"$err")
if [ "$code" = 201 ] && [ "$code2" = 204 ]; then ok "daemon: create and destroy on TCP with the token"; else
    echo "HTTP $code / $code2" >>"$err"; not_ok "daemon: create and destroy on TCP with the token"; fi

# The reaper: lifetime 10 s, reaper every 0.5 s; its record is asserted below.
reaped() { grep -q "\"reaper\".*\"sandbox\":\"$SBR\"" "$DL" 2>/dev/null; }
wait_for 120 reaped

export SB SBR SBT EX1 EX2 PR
pycheck "daemon: every record is well formed, seq 1..N without a gap" '
assert R, "no records"
for r in R: well_formed(r)
assert [r["seq"] for r in R] == list(range(1, len(R) + 1)), [r["seq"] for r in R]
' "$DL"
pycheck "daemon: create by uid/pid with limits and runtime" '
r = one(action="sandbox.create", sandbox=os.environ["SB"])
assert r["outcome"] == "ok" and UNIX_ACTOR.match(r["actor"]), r
l = r["details"]["limits"]
assert l["memory"] == 256 << 20 and l["cpu_millis"] == 500, l
assert r["details"]["runtime"] == "runsc", r
' "$DL"
pycheck "daemon: exec.start before the command, with argv and env NAMES" '
s = [r for r in find(action="exec.start") if r["details"].get("exec_id") == os.environ["EX1"]]
assert len(s) == 1, s
s = s[0]
e = [r for r in find(action="exec") if r["details"].get("exec_id") == os.environ["EX1"]][0]
assert s["seq"] < e["seq"] and s["sandbox"] == os.environ["SB"], (s, e)
assert UNIX_ACTOR.match(s["actor"]), s
assert s["details"]["argv"] == ["sh", "-c", "printf 12345"], s
assert sorted(s["details"]["env_names"]) == ["EXEC_SECRET", "SB_SECRET"], s
' "$DL"
pycheck "daemon: exec with status, exit code, duration, cpu, peak memory, bytes" '
e = [r for r in find(action="exec") if r["details"].get("exec_id") == os.environ["EX1"]][0]
d = e["details"]
assert e["outcome"] == "exited" and d["status"] == "exited" and d["exit_code"] == 0, e
assert d["wall_us"] > 0 and d["peak_memory_bytes"] > 0, d
assert isinstance(d["cpu_user_us"], int) and isinstance(d["cpu_system_us"], int), d
assert d["stdout_bytes"] == 5 and d["stderr_bytes"] == 0, d
' "$DL"
pycheck "daemon: the timed-out exec has outcome timed_out" '
e = [r for r in find(action="exec") if r["details"].get("exec_id") == os.environ["EX2"]][0]
assert e["outcome"] == "timed_out" and e["details"]["timed_out"] is True, e
assert e["details"]["wall_us"] >= 900000, e
' "$DL"
pycheck "daemon: process.start with its id, argv, and no env value" '
r = one(action="process.start")
assert r["sandbox"] == os.environ["SB"] and r["outcome"] == "ok", r
assert r["details"]["process_id"] == os.environ["PR"], r
assert r["details"]["argv"] == ["sleep", "60"], r
assert UNIX_ACTOR.match(r["actor"]), r
' "$DL"
pycheck "daemon: process.signal names the process, the signal and the requesting uid/pid" '
r = one(action="process.signal")
assert r["sandbox"] == os.environ["SB"] and r["outcome"] == "ok", r
assert r["details"]["process_id"] == os.environ["PR"] and r["details"]["signal"] == 15, r
assert UNIX_ACTOR.match(r["actor"]), "actor %r is not the requesting uid/pid" % r["actor"]
' "$DL"
pycheck "daemon: destroy by the client records actor and reason" '
r = one(action="sandbox.destroy", sandbox=os.environ["SB"])
assert r["outcome"] == "ok" and r["details"]["reason"] == "client", r
assert UNIX_ACTOR.match(r["actor"]), r
' "$DL"
pycheck "daemon: out-of-range limits are recorded as refused" '
r = one(action="sandbox.create", outcome="refused")
assert r["sandbox"] is None and r["details"]["code"] == "invalid", r
assert "cpus" in r["details"]["error"], r
assert UNIX_ACTOR.match(r["actor"]), r
' "$DL"
pycheck "daemon: the reaper destroys the expired sandbox (actor reaper, reason expired, its tenant)" '
r = one(action="sandbox.destroy", sandbox=os.environ["SBR"])
assert r["actor"] == "reaper" and r["outcome"] == "ok", r
assert r["details"]["reason"] == "expired", r
assert r["details"]["tenant"] == "default", r
' "$DL"
pycheck "daemon: a wrong token is recorded (auth.failed, denied)" '
r = one(action="auth.failed")
assert r["outcome"] == "denied" and r["sandbox"] is None, r
assert "tcp" in r["actor"] and "tester" not in r["actor"], r
assert r["details"]["url"] == "/v1/sandboxes" and r["details"]["method"] == "GET", r
' "$DL"
pycheck "daemon: on TCP the actor is the tenant and the token name (NAME:TOKEN: tenant default)" '
c = one(action="sandbox.create", sandbox=os.environ["SBT"])
d = one(action="sandbox.destroy", sandbox=os.environ["SBT"])
want = "tenant=default token=tester"
assert c["actor"] == want and d["actor"] == want, (c, d)
assert c["details"]["tenant"] == "default", c
' "$DL"
pycheck "daemon: no secret value anywhere in the log" "secret_free('$SECRET_SB', '$SECRET_EXEC', '$SECRET_PROC', '$TOKEN')" "$DL"
pycheck "the hash is SHA-256 over prev, a newline and the canonical record (recomputed here)" '
prev = "0" * 64
for r in R:
    assert r["prev"] == prev, r["seq"]
    assert canonical_hash(r) == r["hash"], "record %d: %s != %s" % (r["seq"], canonical_hash(r), r["hash"])
    prev = r["hash"]
' "$DL"
expect "daemon: clearing audit verify OK" 0 '^OK: [0-9]+ records, seq 1\.\.' '' -- \
    --state-dir "$W/dstate" --audit-log "$DL" audit verify
expect "audit show --sandbox --action filters" 0 "sandbox.destroy +$SB" '' -- \
    --audit-log "$DL" audit show --sandbox "$SB" --action sandbox.destroy
if [ "$(wc -l <"$out")" = 1 ]; then ok "audit show prints exactly the matching record"; else
    cat "$out" >"$err"; not_ok "audit show prints exactly the matching record"; fi
expect "audit show --actor reaper --json" 0 '"actor":"reaper"' '' -- \
    --audit-log "$DL" audit show --actor reaper --json
stop_daemon "$D_PID"

###########################################################################################
# b. Tampering, each on a copy of a real log: found at the right record, exit status 1.
###########################################################################################

T=$W/tamper
mkdir -p "$T"
nrec=$(wc -l <"$DL")
if [ "$nrec" -ge 10 ]; then ok "the daemon log has $nrec records to tamper with"; else
    echo "only $nrec records" >"$err"; not_ok "the daemon log has enough records to tamper with"; fi
k=5

mutate "$DL" "$T/edit.log" "
r = rec($k - 1); r['actor'] = 'someone-else'; L[$k - 1] = line(r)"
verify_broken "tamper: an edited actor is found at its line" "$T/edit.log" $k $k 'was edited' -- \
    audit verify "$T/edit.log"
mutate "$DL" "$T/edit2.log" "
r = rec($k - 1); r['details']['tampered'] = 1; L[$k - 1] = line(r)"
verify_broken "tamper: an edited detail is found at its line" "$T/edit2.log" $k $k 'was edited' -- \
    audit verify "$T/edit2.log"
mutate "$DL" "$T/delete.log" "del L[$k - 1]"
verify_broken "tamper: a deleted record is found where it is missing" "$T/delete.log" $k $((k + 1)) \
    "records $k\\.\\.$k are missing" -- audit verify "$T/delete.log"
mutate "$DL" "$T/swap.log" "L[$k - 1], L[$k] = L[$k], L[$k - 1]"
verify_broken "tamper: two swapped records are found" "$T/swap.log" $k $((k + 1)) \
    'missing|reordered' -- audit verify "$T/swap.log"
# A forgery with a plausible but wrong hash (computed without the chain's newline).
mutate "$DL" "$T/forged.log" "
r = rec($k - 1); r['action'] = 'sandbox.destroy'; r['outcome'] = 'ok'
body = dict(r); body.pop('hash')
r['hash'] = hashlib.sha256((r['prev'] + json.dumps(body, sort_keys=True, separators=(',', ':'))).encode()).hexdigest()
L.insert($k - 1, line(r))"
verify_broken "tamper: a forged record with a wrong hash is found at its line" "$T/forged.log" $k $k \
    'was edited' -- audit verify "$T/forged.log"
# A forgery whose own hash is right: the record after it no longer fits.
mutate "$DL" "$T/forged2.log" "
r = rec($k - 1); r['action'] = 'auth.failed'; r['hash'] = canonical_hash(r)
L.insert($k - 1, line(r))"
verify_broken "tamper: a well-hashed inserted record breaks the chain at the next line" "$T/forged2.log" \
    $((k + 1)) $k 'reordered or inserted' -- audit verify "$T/forged2.log"
mutate "$DL" "$T/dup.log" "L.insert($k, L[$k - 1])"
verify_broken "tamper: a duplicated line is found" "$T/dup.log" $((k + 1)) $k \
    'reordered or inserted' -- audit verify "$T/dup.log"
mutate "$DL" "$T/trunc.log" "L = L[:$k - 1] + [L[$k - 1][:len(L[$k - 1]) // 2]]"
verify_broken "tamper: truncation inside a record is found" "$T/trunc.log" $k $k \
    'ends inside a record' -- audit verify "$T/trunc.log"
mutate "$DL" "$T/first.log" "del L[0]"
verify_broken "tamper: a deleted first record is found" "$T/first.log" 1 2 \
    'records 1\.\.1 are missing' -- audit verify "$T/first.log"
# The same through the default file set, for a log whose own name ends in digits: it is the
# live log, not a rotated file whose predecessors were removed.
mkdir -p "$T/digits"
mutate "$DL" "$T/digits/audit.7" "del L[0]"
verify_broken "tamper: a deleted first record is found in a log named audit.7" "$T/digits/audit.7" 1 2 \
    'records 1\.\.1 are missing' -- --audit-log "$T/digits/audit.7" audit verify
check "tamper: the original is untouched and still verifies" "$CLEARING" audit verify "$DL"

# Rotated files: delete one in the middle, reorder them, or drop the oldest (retention).
R0=$W/rot0
mkdir -p "$R0"
check "rotation: audit-stress writes 80 records in 4 KiB files" \
    "$STRESS" --path "$R0/audit.log" --rotate-bytes 4096 --count 80 --payload 300 --tag rot0
nrot=$(ls "$R0" | grep -c '^audit\.log\.[0-9]\{6\}$')
if [ "$nrot" -ge 4 ]; then ok "rotation: $nrot rotated files"; else
    ls "$R0" >"$err"; not_ok "rotation: at least 4 rotated files"; fi
cp -a "$R0" "$T/rotmid"
first3=$(head -n1 "$T/rotmid/audit.log.000003" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
first2=$(head -n1 "$T/rotmid/audit.log.000002" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
rm "$T/rotmid/audit.log.000002"
verify_broken "tamper: a deleted middle rotated file is found at the next file's first record" \
    "$T/rotmid/audit.log.000003" 1 "$first3" "records $first2\\.\\." -- \
    --audit-log "$T/rotmid/audit.log" audit verify
verify_broken "tamper: rotated files given out of order are found" "$R0/audit.log.000002" 1 "$first2" \
    'records 1\.\..* are missing' -- audit verify "$R0/audit.log.000002" "$R0/audit.log.000001"
verify_broken "tamper: out of order even with --partial" "$R0/audit.log.000001" 1 1 \
    'reordered or inserted' -- audit verify --partial "$R0/audit.log.000002" "$R0/audit.log.000001"
cp -a "$R0" "$T/retention"
rm "$T/retention/audit.log.000001"
verify_broken "rotation: dropping the oldest file is reported without --partial" \
    "$T/retention/audit.log.000002" 1 "$first2" 'are missing' -- \
    --audit-log "$T/retention/audit.log" audit verify
expect "rotation: dropping the oldest file (retention) verifies with --partial, from its first seq" 0 \
    "^OK: [0-9]+ records, seq $first2\\.\\.80," '' -- --audit-log "$T/retention/audit.log" audit verify --partial

###########################################################################################
# c. SIGKILL while writing: no acknowledged record is lost; the next writer repairs the tail.
###########################################################################################

K=$W/kill
acked_at_least() { [ "$(grep -c '^acked ' "$2" 2>/dev/null)" -ge "$1" ]; }
mkdir -p "$K"
KL=$K/audit.log
round=0
for payload in 100 100000 2000 50000; do
    round=$((round + 1))
    "$STRESS" --path "$KL" --count 100000000 --payload "$payload" --tag "kill$round" \
        >"$K/acked.$round" 2>"$K/stress.$round" &
    sp=$!
    # Killed mid-stream, once it has acknowledged a good number of records (it never stops
    # writing on its own): a deadline, not a sleep, so a slow machine still gets its records.
    wait_for 60 acked_at_least 100 "$K/acked.$round"
    kill -9 "$sp"
    wait "$sp" 2>/dev/null
    acked=$(wc -l <"$K/acked.$round")
    # Present: every acknowledged index of this round (the torn tail, if any, is not a record).
    pycheck "kill -9 round $round (payload $payload): all $acked acknowledged records are in the log" "
acked = [int(l.split()[1]) for l in open('$K/acked.$round') if l.startswith('acked ')]
assert len(acked) >= 100, 'the writer acknowledged %d records in 60 s' % len(acked)
have = {r['details']['i'] for r in R if r['details'].get('tag') == 'kill$round'}
missing = [i for i in acked if i not in have]
assert not missing, '%d acknowledged records missing, first %r' % (len(missing), missing[:5])
" $(ls "$K"/audit.log.[0-9]* 2>/dev/null) "$KL"
    torn=$(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(len(d) - (d.rfind(b"\n") + 1))' "$KL")
    echo "# round $round: $acked records acknowledged before SIGKILL; torn tail: $torn bytes"
    check "kill -9 round $round: the next writer opens the log and appends" \
        "$STRESS" --path "$KL" --count 1 --tag "after$round"
    if [ "$torn" -gt 0 ]; then
        pycheck "kill -9 round $round: the torn tail ($torn bytes) was cut and recorded" "
r = R[-2]
assert r['action'] == 'audit.torn_tail_removed' and r['details']['bytes'] == $torn, r
assert r['actor'] == 'clearing', r
" "$KL"
    fi
    expect "kill -9 round $round: the chain verifies" 0 '^OK: ' '' -- --audit-log "$KL" audit verify
done

# A torn tail for certain: a half-written record at the end.
junk='{"action":"exec","seq":99999,"ts":"2026-'
printf '%s' "$junk" >>"$KL"
check "torn tail: the next writer appends" "$STRESS" --path "$KL" --count 2 --tag aftertorn
pycheck "torn tail: cut, and recorded as audit.torn_tail_removed with its size" '
r = R[-3]
assert r["action"] == "audit.torn_tail_removed" and r["details"]["bytes"] == '"${#junk}"', r
assert not find(seq=99999), "the torn bytes survived"
' "$KL"
expect "torn tail: the chain verifies" 0 '^OK: ' '' -- --audit-log "$KL" audit verify
printf '{"action":"exec","seq":1,"ts":"20' >"$K/only-torn.log"
check "torn tail: a log that is only a torn line is repaired" \
    "$STRESS" --path "$K/only-torn.log" --count 1 --tag onlytorn
pycheck "torn tail: it then starts at record 1 with the repair" '
assert [r["action"] for r in R] == ["audit.torn_tail_removed", "stress"], R
assert R[0]["seq"] == 1 and R[0]["prev"] == "0" * 64, R[0]
' "$K/only-torn.log"

# Two writers at once on one log.
C2=$W/conc
mkdir -p "$C2"
"$STRESS" --path "$C2/audit.log" --count 1500 --payload 100 --tag A >"$C2/A" 2>"$C2/A.err" &
pa=$!
"$STRESS" --path "$C2/audit.log" --count 1500 --payload 100 --tag B >"$C2/B" 2>"$C2/B.err" &
pb=$!
wait "$pa"; ra=$?
wait "$pb"; rb=$?
if [ "$ra" = 0 ] && [ "$rb" = 0 ]; then ok "two concurrent writers both finish"; else
    cat "$C2/A.err" "$C2/B.err" >"$err"; not_ok "two concurrent writers both finish"; fi
verify_ok "two concurrent writers: one chain of 3000 records" 3000 -- --audit-log "$C2/audit.log" audit verify

# Two writers at once while the log rotates.
C3=$W/conc-rot
mkdir -p "$C3"
"$STRESS" --path "$C3/audit.log" --rotate-bytes 4096 --count 300 --payload 200 --tag A \
    >"$C3/A" 2>"$C3/A.err" &
pa=$!
"$STRESS" --path "$C3/audit.log" --rotate-bytes 4096 --count 300 --payload 200 --tag B \
    >"$C3/B" 2>"$C3/B.err" &
pb=$!
wait "$pa"; ra=$?
wait "$pb"; rb=$?
if [ "$ra" = 0 ] && [ "$rb" = 0 ]; then ok "two concurrent writers with rotation both finish"; else
    cat "$C3/A.err" "$C3/B.err" >"$err"; not_ok "two concurrent writers with rotation both finish"; fi
verify_ok "two concurrent writers with rotation: one chain of 600 records" 600 -- \
    --audit-log "$C3/audit.log" audit verify
# A writer without a verdict key (audit-stress without --key) leaves a v1 checkpoint, as older
# versions did: it still verifies, and says it is one; the public key given explicitly refuses it.
expect "v1 checkpoint: it verifies, and audit verify says it is an HMAC one" 0 \
    'checkpoint: record [0-9]+ of .* matches; it is a v1 checkpoint \(HMAC' '' -- \
    --audit-log "$C3/audit.log" audit verify
expect "v1 checkpoint: with --pubkey it fails, naming the key it is not signed by" 1 \
    'BROKEN .*a v1 one \(HMAC under <log>.key\), not signed by' '' -- \
    --audit-log "$C3/audit.log" audit verify --pubkey "$W/state/verdict.key.pub"
expect "audit verify --pubkey without a file: usage error (2)" 2 '' 'pubkey needs a file' -- \
    --audit-log "$C3/audit.log" audit verify --pubkey

###########################################################################################
# d. Rotation: several files, one chain, read back in order.
###########################################################################################

RL=$W/rot/audit.log
mkdir -p "$W/rot"
check "rotation: 200 records with --rotate-bytes 4096" \
    "$STRESS" --path "$RL" --rotate-bytes 4096 --count 200 --payload 200 --tag rot
check "rotation: rotated files are audit.log.000001 onwards, each just past 4 KiB" python3 -c '
import glob, os, sys
files = sorted(f for f in glob.glob(sys.argv[1] + ".*")
               if not f.endswith((".lock", ".key", ".checkpoint")))
assert len(files) >= 3, files
for i, f in enumerate(files, 1):
    assert f == "%s.%06d" % (sys.argv[1], i), (i, f)
    size = os.path.getsize(f)
    assert 4096 <= size < 4096 + 2048, (f, size)
' "$RL"
verify_ok "rotation: the default file set verifies" 200 -- --audit-log "$RL" audit verify
expect "rotation: audit show reads every file" 0 '' '' -- --audit-log "$RL" audit show --json
check "rotation: audit show sees all 200 records in order" python3 -c '
import json, sys
R = [json.loads(l) for l in open(sys.argv[1])]
assert [r["seq"] for r in R] == list(range(1, 201)), [r["seq"] for r in R][:10]
assert [r["details"]["i"] for r in R] == list(range(200))
' "$out"
check "rotation: a second writer continues the chain" \
    "$STRESS" --path "$RL" --rotate-bytes 4096 --count 50 --payload 200 --tag rot2
verify_ok "rotation: 250 records across the files" 250 -- --audit-log "$RL" audit verify
expect "rotation: audit show --action filters across files" 0 '' '' -- \
    --audit-log "$RL" audit show --action stress --json
if [ "$(wc -l <"$out")" = 250 ]; then ok "rotation: 250 records shown"; else
    wc -l <"$out" >"$err"; not_ok "rotation: 250 records shown"; fi

# The daemon's audit_rotate_bytes.
mkdir -p "$W/drot"
echo '{"audit_rotate_bytes": 2048}' >"$W/drot.json"
if start_daemon drot "$W/drotstate" "$W/drot/audit.log" --config "$W/drot.json"; then
    for _ in $(seq 1 20); do api POST /v1/sandboxes '{"limits":{"cpus":"64"}}'; done
    stop_daemon "$DPID"
    nrot=$(ls "$W/drot" | grep -c '^audit\.log\.[0-9]\{6\}$')
    if [ "$nrot" -ge 2 ]; then ok "rotation: the daemon rotates at audit_rotate_bytes ($nrot files)"; else
        ls -l "$W/drot" >"$err"; not_ok "rotation: the daemon rotates at audit_rotate_bytes"; fi
    # 21: the daemon's first start makes its verdict key and records that, then the 20 creates.
    verify_ok "rotation: the daemon's rotated log verifies" 21 -- --state-dir "$W/drotstate" \
        --audit-log "$W/drot/audit.log" audit verify
    check "rotation: its first record is the verdict key made at the first start" bash -c \
        "head -n 1 '$W/drot/audit.log.000001' | grep -q '\"action\":\"verdict_key.create\"'"
else
    not_ok "rotation: a daemon with audit_rotate_bytes starts"
fi

###########################################################################################
# e. No audit, no action: a full disk and an unwritable log fail closed.
###########################################################################################

M=$W/full
mkdir -p "$M"
if mount -t tmpfs -o size=256k tmpfs "$M"; then
    mounts+=("$M")
    ok "full disk: a 256 KiB tmpfs"
else
    not_ok "full disk: a 256 KiB tmpfs"
fi
FL=$M/audit.log
start_daemon full "$W/fstate" "$FL" || not_ok "full disk: the daemon starts"
F_PID=$DPID
api_expect "full disk: (before) the daemon creates a sandbox" 201 POST /v1/sandboxes '{}'
SBF=$(jfield id)
remember "$W/fstate" "$SBF"
# A sandbox whose lifetime runs out while the log cannot be written: the reaper must keep it.
api_expect "full disk: (before) a sandbox with a 45 s lifetime" 201 POST /v1/sandboxes \
    '{"limits":{"lifetime":"45s"}}'
SBE=$(jfield id)
remember "$W/fstate" "$SBE"
# sb_state ID STATE: the daemon has the sandbox in STATE.
sb_state() {
    api GET "/v1/sandboxes/$1"
    local s
    s=$(jfield state 2>/dev/null)
    echo "HTTP $code, state '$s', wanted $2" >&2
    [ "$code" = 200 ] && [ "$s" = "$2" ]
}
# running_containers ID N: the engine has N running containers of sandbox ID.
running_containers() {
    curl -sS --fail --max-time 60 --unix-socket /var/run/docker.sock -G \
        http://d/containers/json --data-urlencode \
        "filters={\"label\":[\"io.clearing.sandbox-id=$1\"],\"status\":[\"running\"]}" |
        python3 -c 'import json, sys
c = json.load(sys.stdin)
assert isinstance(c, list), c
print("%d running containers of %s, wanted %s" % (len(c), sys.argv[1], sys.argv[2]))
sys.exit(len(c) != int(sys.argv[2]))' "$1" "$2"
}

dd if=/dev/zero of="$M/filler" bs=4k >/dev/null 2>&1
# The log's last page may still have room: fill it with records until the disk refuses.
# It signs its checkpoints with the daemon's key, as every writer of one log should.
"$STRESS" --path "$FL" --key "$W/fstate/verdict.key" --count 100000 --payload 0 --tag fill \
    >"$W/fill.out" 2>"$err"
src=$?
if [ "$src" = 1 ] && grep -q "No space left on device" "$err" && grep -qF "$FL" "$err"; then
    ok "full disk: a writer fails with ENOSPC, naming the log"
else
    echo "audit-stress exit $src" >>"$err"; not_ok "full disk: a writer fails with ENOSPC, naming the log"
fi
nfl=$(wc -l <"$FL")
check "full disk: (precondition) the 45 s sandbox has not expired yet" sb_state "$SBE" running
# fcli_sandboxes N: the engine has N sandboxes of the CLI state directory $W/fcli (false, with the
# reason in $err, when it cannot be listed: that is not "none").
fcli_sandboxes() {
    local ids
    ids=$(sandboxes_of "$W/fcli" 2>"$err") || return 1
    echo "sandboxes of $W/fcli: $(echo $ids)" >"$err"
    [ "$(printf '%s' "$ids" | grep -c .)" = "$1" ]
}
# The control of "no sandbox of the refused run": a run of the same state directory, with a log
# on a disk with room, is seen while its command runs.
# The runs below write the daemon's log: they sign its checkpoints with the daemon's key.
mkdir -p "$W/fcli"
cp -p "$W/fstate/verdict.key" "$W/fstate/verdict.key.pub" "$W/fcli/"
"$CLEARING" --state-dir "$W/fcli" --audit-log "$W/fcli-control.log" run --timeout 10m -- \
    sh -c 'echo up; sleep 600' >"$W/bg.out" 2>"$W/bg.err" </dev/null &
bg=$!
if wait_for 120 grep -qx up "$W/bg.out"; then ok "full disk: (control) a run with a writable log starts"; else
    cat "$W/bg.err" >"$err"; not_ok "full disk: (control) a run with a writable log starts"; fi
check "full disk: (control) the engine lists its sandbox" fcli_sandboxes 1
kill -TERM "$bg"
wait_for 60 gone "$bg" || kill -KILL "$bg"
wait "$bg" 2>/dev/null; bg=""
check "full disk: (control) it is gone once the run ended" fcli_sandboxes 0
expect "full disk: clearing run exits 125 and says the audit log cannot be written" 125 '' \
    "audit log $FL.*No space left" -- --state-dir "$W/fcli" --audit-log "$FL" \
    run --lifetime 777 -- sh -c 'echo ran'
if grep -q '^ran$' "$out"; then echo "the command printed: $(cat "$out")" >"$err"
    not_ok "full disk: the command did not run"; else ok "full disk: the command did not run"; fi
pycheck "full disk: no record of a CLI create or exec" '
assert not [r for r in R if r["actor"].startswith("cli ")], [r for r in R if r["actor"].startswith("cli ")]
' "$FL"
check "full disk: the engine has no sandbox of the refused run" fcli_sandboxes 0
api_expect "full disk: the daemon answers 503 to a create" 503 POST /v1/sandboxes '{}'
if grep -q 'audit log' "$out"; then ok "full disk: the 503 names the audit log"; else
    echo "503 without the reason: $(cat "$out")" >"$err"; not_ok "full disk: the 503 names the audit log"; fi
api_expect "full disk: the daemon answers 503 to an exec" 503 POST "/v1/sandboxes/$SBF/exec" \
    '{"argv":["touch","/workspace/exec-ran"]}'
api_expect "full disk: the daemon refuses a background process" 503 POST "/v1/sandboxes/$SBF/processes" \
    '{"argv":["touch","/workspace/proc-ran"]}'
api GET "/v1/sandboxes/$SBF/processes"
pycheck "full disk: the refused background process was never started" '
procs = json.load(open(sys.argv[1]))["processes"]
assert procs == [], "the refused process ran: %r" % [(p["id"], p["result"]) for p in procs]
' "$out"
# Destroying is an action like any other: without its record it does not happen.
api_expect "full disk: the daemon refuses to destroy a sandbox (503)" 503 DELETE "/v1/sandboxes/$SBF"
if grep -q 'audit log' "$out"; then ok "full disk: the refused destroy names the audit log"; else
    echo "503 without the reason: $(cat "$out")" >"$err"; not_ok "full disk: the refused destroy names the audit log"; fi
expect "full disk: clearing rm exits 125 and says the audit log cannot be written" 125 '' \
    "audit log $FL" -- --host "$SOCK" rm "$SBF"
check "full disk: the refused sandbox is still running" sb_state "$SBF" running
check "full disk: its container still runs" running_containers "$SBF" 1
# The reaper tries (its log says so) and keeps the expired sandbox.
if wait_for 120 grep -q "reaper.destroy_failed.*$SBE" "$W/full.log"; then
    ok "full disk: the reaper tried to destroy the expired sandbox"; else
    tail -5 "$W/full.log" >"$err"; not_ok "full disk: the reaper tried to destroy the expired sandbox"; fi
check "full disk: the reaper kept the expired sandbox it cannot record destroying" sb_state "$SBE" running
check "full disk: the expired sandbox's container still runs" running_containers "$SBE" 1
check "full disk: the log is unchanged ($nfl records) and verifies" bash -c \
    "[ \"\$(wc -l <'$FL')\" = $nfl ] && '$CLEARING' audit verify '$FL'"

rm -f "$M/filler"
check "full disk: (after) the disk has room again" bash -c "[ ! -e '$M/filler' ] && [ \"\$(stat -f -c %a '$M')\" -gt 8 ]"
api_expect "full disk: (after) the daemon execs again" 200 POST "/v1/sandboxes/$SBF/exec" \
    '{"argv":["ls","-a","/workspace"]}'
# The listing must be a real one (it shows "..") for the absence of the two files to count.
ws_listing() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["result"]["stdout"])' "$out"; }
check "full disk: the refused exec never ran" bash -c "grep -qx '\.\.' <<<\"\$1\" && ! grep -q 'exec-ran' <<<\"\$1\"" _ "$(ws_listing)"
check "full disk: the refused background process never ran" bash -c "grep -qx '\.\.' <<<\"\$1\" && ! grep -q 'proc-ran' <<<\"\$1\"" _ "$(ws_listing)"
api_expect "full disk: (after) the daemon creates again" 201 POST /v1/sandboxes '{}'
SBF2=$(jfield id)
remember "$W/fstate" "$SBF2"
api_expect "full disk: (after) destroy" 204 DELETE "/v1/sandboxes/$SBF2"
api_expect "full disk: (after) destroy the first" 204 DELETE "/v1/sandboxes/$SBF"
check "full disk: (after) the reaper destroys the expired sandbox" wait_for 60 sb_state "$SBE" destroyed
check "full disk: (after) its container is gone" wait_for 60 running_containers "$SBE" 0
pycheck "full disk: (after) both destroys are recorded, once each" "
r = one(action='sandbox.destroy', sandbox='$SBF')
assert r['outcome'] == 'ok' and r['details']['reason'] == 'client', r
r = one(action='sandbox.destroy', sandbox='$SBE')
assert r['outcome'] == 'ok' and r['details']['reason'] == 'expired' and r['actor'] == 'reaper', r
" "$FL"
expect "full disk: (after) clearing run works again" 0 '^ran$' '' -- \
    --state-dir "$W/fcli" --audit-log "$FL" run -- sh -c 'echo ran'
stop_daemon "$F_PID"
expect "full disk: (after) the log verifies" 0 '^OK: ' '' -- --state-dir "$W/fstate" \
    --audit-log "$FL" audit verify

# An unwritable audit log: refused before anything runs, and the message names the path.
mkdir -p "$W/adir"
expect "unwritable: the log is a directory: exit 125 naming it" 125 '' "audit log $W/adir" -- \
    --state-dir "$W/ustate" --audit-log "$W/adir" run -- true
expect "unwritable: the log's directory does not exist: exit 125 naming it" 125 '' \
    "audit log /nonexistent-$$/sub/audit.log" -- \
    --state-dir "$W/ustate" --audit-log "/nonexistent-$$/sub/audit.log" run -- true
"$CLEARING" --state-dir "$W/ustate2" --audit-log "$W/adir" serve --socket "$W/u.sock" \
    >"$out" 2>"$err" </dev/null &
up=$!
daemon_pids+=("$up")
wait_for 60 gone "$up"
if ! gone "$up"; then
    echo "the daemon still runs 60 s later without an audit log" >>"$err"; not_ok "unwritable: the daemon does not start"
else
    wait "$up"; urc=$?
    if [ "$urc" != 0 ] && grep -qF "$W/adir" "$err"; then ok "unwritable: the daemon does not start, naming the path"; else
        echo "exit $urc" >>"$err"; not_ok "unwritable: the daemon does not start, naming the path"; fi
fi

umount "$M" && mounts=()

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
