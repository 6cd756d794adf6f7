#!/usr/bin/env bash
# Plans and the gauntlet end to end: real sample repositories (examples/sample-python,
# examples/sample-c), real gVisor sandboxes, the real `clearing` binary and daemon. Checks
# verdicts, exit statuses, statuses of single checks, parsed figures, commits and their trailers,
# the caller's checkout, malformed input, the repository's own gauntlet (and that a plan cannot
# weaken it), JUnit XML, the API with and without streaming, interrupts, and after every case
# that no sandbox of this test is left. TAP.
#   usage: plans.sh PATH/TO/clearing [SOURCE-ROOT]
set -u
CLEARING=${1:?usage: plans.sh PATH/TO/clearing [SOURCE-ROOT]}
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/helpers.sh"
D=$(mktemp -d /tmp/clearing-plans.XXXXXX)
C=("$CLEARING" --state-dir "$D/state")
n=0; failed=0; serve_pid=
out=$D/out; err=$D/err; rep=$D/report.json
cleanup() {
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    [ -n "${bg:-}" ] && kill "$bg" 2>/dev/null && wait "$bg" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1${2:+ # $2}"
    for f in "$out" "$err"; do [ -s "$f" ] && tail -n 15 "$f" | sed 's/^/#   /'; done
}
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }
# jq-like: jpy FILE PYTHON-EXPRESSION (r is the JSON document) -> exit 0 when true.
jpy() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" 2>/dev/null; }
now_ms() { date +%s%3N; }

# Sandboxes of this test: every container of clearing's whose workspace is under $D (the CLI's
# and the daemon's state dirs both are), plus every sandbox id this test saw, by label.
seen_ids=()
remember_ids() { local id; for id in $(grep -ohE 'sb-[0-9a-f]{16}' "$@" 2>/dev/null | sort -u); do seen_ids+=("$id"); done; }
# leftovers: this test's sandboxes on the engine, in $left ("a b c", or "none"). Fails, with the
# reason in $left, when the engine cannot be listed: a failed listing is not "none left".
leftovers() {
    local ids
    if ! ids=$(sandboxes_of "$D" "${seen_ids[@]}" 2>&1); then left="cannot tell: $ids"; return 1; fi
    left=$(echo $ids)
    left=${left:-none}
}
assert_clean() {
    local listed
    remember_ids "$out" "$err" "$rep"
    leftovers; listed=$?
    check "$1: no sandbox of the test is left" '[ "$listed" = 0 ] && [ "$left" = none ]' "left: $left"
}
branches() { git -C "$1" for-each-ref --format='%(refname:short)' refs/heads | sort | tr '\n' ' '; }

# plan NAME PLAN REPO: runs `clearing plan run`; status in $st, wall time in $ms.
plan() {
    rm -f "$rep"
    local t0; t0=$(now_ms)
    "${C[@]}" plan run "$1" --repo "$2" --report "$rep" >"$out" 2>"$err" </dev/null
    st=$?
    ms=$(( $(now_ms) - t0 ))
}
# gauntlet ARGS...: runs `clearing gauntlet`; status in $st.
gauntlet() {
    rm -f "$rep"
    "${C[@]}" gauntlet "$@" --report "$rep" >"$out" 2>"$err" </dev/null
    st=$?
}

PY=$(bash "$SRC/scripts/sample-repo.sh" "$D/py") || { echo "Bail out! cannot make the sample repository"; exit 1; }
mkdir -p "$D/plans"

# ---- 0. the count of this test's sandboxes sees one (the control of every assert_clean) ----
"${C[@]}" run --timeout 10m -- sh -c 'echo up; sleep 600' >"$D/bg.out" 2>"$D/bg.err" </dev/null &
bg=$!
wait_for 120 grep -qx up "$D/bg.out"
check "control: a background run's command starts" 'grep -qx up "$D/bg.out"' "$(cat "$D/bg.err")"
leftovers; listed=$?
check "control: the count of this test's sandboxes sees it" \
    '[ "$listed" = 0 ] && [ "$left" != none ] && [ "$(wc -w <<<"$left")" = 1 ]' "left: $left"
kill -TERM "$bg"
check "control: SIGTERM ends the run" 'wait_for 60 gone "$bg"' "still running 60 s after SIGTERM"
wait "$bg" 2>/dev/null; bg=
assert_clean "control"

# ---- 1. a passing plan on the Python sample -----------------------------------------------
head_before=$(git -C "$PY" rev-parse HEAD)
plan "$SRC/examples/plans/add-median.yaml" "$PY"
check "passing plan: exit 0" '[ "$st" = 0 ]' "exit $st"
check "passing plan: verdict pass, every check passed" \
    'jpy "$rep" "r[\"verdict\"] == \"pass\" and all(c[\"status\"] == \"passed\" for c in r[\"gauntlet\"][\"checks\"])"'
check "passing plan: figures: 6 tests passed, coverage >= 85%, bandit findings by severity" \
    'jpy "$rep" "[(c[\"figures\"][\"tests_passed\"], c[\"figures\"][\"coverage_percent\"] >= 85) for c in r[\"gauntlet\"][\"checks\"] if c[\"name\"] == \"tests\"] == [(6, True)] and [c[\"figures\"][\"findings\"] for c in r[\"gauntlet\"][\"checks\"] if c[\"name\"] == \"security\"] == [{\"low\": 0, \"medium\": 0, \"high\": 0}]"'
check "passing plan: the summary shows the figures" 'grep -qE "6 passed.*coverage [0-9.]+%" "$out" && grep -q "verdict: PASS" "$out"'
branch=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["branch"])' "$rep" 2>/dev/null)
check "passing plan: one commit on the new branch, on the base, with the plan's files" \
    '[ -n "$branch" ] && [ "$(git -C "$PY" rev-parse "$branch^")" = "$head_before" ] && git -C "$PY" cat-file -e "$branch:stats.py" && git -C "$PY" cat-file -e "$branch:test_stats.py"'
check "passing plan: trailers Clearing-Verdict: pass, Clearing-Plan-Steps, Clearing-Sandbox" \
    'git -C "$PY" log -1 --format=%B "$branch" | grep -qx "Clearing-Verdict: pass" && git -C "$PY" log -1 --format=%B "$branch" | grep -qx "Clearing-Plan-Steps: 3" && git -C "$PY" log -1 --format=%B "$branch" | grep -qE "^Clearing-Sandbox: sb-[0-9a-f]{16}$"'
check "passing plan: the verdict is signed, and clearing verify says it is good" \
    '"${C[@]}" verify --repo "$PY" "$branch" >"$out" 2>"$err" && grep -q "^good signature by key [0-9a-f]\{16\} on commit .*: verdict pass" "$out" && grep -qx "Clearing-Runtime-Version: runsc version .*" "$out" && grep -qE "^Clearing-Image-Id: sha256:[0-9a-f]{64}$" "$out" && grep -qE "^Clearing-Gauntlet: sha256:[0-9a-f]{64} profile:python$" "$out" && grep -qx "Clearing-Check: tests passed required" "$out"'
check "passing plan: git and openssl alone say the same (scripts/verify-verdict.sh)" \
    'sh "$SRC/scripts/verify-verdict.sh" "$D/state/verdict.key.pub" "$branch" "$PY" >"$out" 2>"$err" && grep -q "Signature Verified Successfully" "$out"'
git -C "$PY" cat-file commit "$branch" | sed '1,/^$/d' | sed 's/^Clearing-Check: tests passed required$/Clearing-Check: tests skipped optional/' >"$D/forged.msg"
forged=$(git -C "$PY" commit-tree "$branch^{tree}" -p "$branch^" -F "$D/forged.msg")
"${C[@]}" verify --repo "$PY" "$forged" >"$out" 2>"$err"; vst=$?
check "passing plan: a check's line changed after signing: BAD signature (exit 1), and openssl agrees" \
    '[ "$vst" = 1 ] && grep -q "BAD signature" "$err" && ! sh "$SRC/scripts/verify-verdict.sh" "$D/state/verdict.key.pub" "$forged" "$PY" >/dev/null 2>&1' "exit $vst"
"${C[@]}" verify --repo "$PY" "$head_before" >"$out" 2>"$err"; vst=$?
check "an unsigned commit: exit 1, no Clearing-Signature" '[ "$vst" = 1 ] && grep -q "no Clearing-Signature" "$err"' "exit $vst"
check "passing plan: the caller's checkout is untouched" \
    '[ "$(git -C "$PY" rev-parse HEAD)" = "$head_before" ] && [ "$(git -C "$PY" symbolic-ref HEAD)" = refs/heads/main ] && [ -z "$(git -C "$PY" status --porcelain --ignored)" ] && [ ! -e "$PY/stats.py" ]'
assert_clean "passing plan"

# ---- 2. a failing step ----------------------------------------------------------------------
cat >"$D/plans/failing-step.yaml" <<'EOF'
message: "A step fails"
profile: python
steps:
  - write: {path: first.txt, content: "written before the failure\n"}
  - run: {shell: "echo about to fail; exit 3"}
  - write: {path: later.txt, content: "must never be written\n"}
  - run: {shell: "touch /workspace/later-run"}
EOF
plan "$D/plans/failing-step.yaml" "$PY"
check "failing step: exit 1 (verdict fail)" '[ "$st" = 1 ] && jpy "$rep" "r[\"verdict\"] == \"fail\""' "exit $st"
check "failing step: stops at step 2, later steps not run, no gauntlet" \
    'jpy "$rep" "[s[\"status\"] for s in r[\"steps\"]] == [\"ok\", \"failed\"] and \"gauntlet\" not in r and \"exited with 3\" in r[\"steps\"][1][\"error\"]"'
b=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["branch"])' "$rep" 2>/dev/null)
check "failing step: the commit has step 1's file and nothing of steps 3-4, verdict fail" \
    'git -C "$PY" cat-file -e "$b:first.txt" && ! git -C "$PY" cat-file -e "$b:later.txt" 2>/dev/null && ! git -C "$PY" cat-file -e "$b:later-run" 2>/dev/null && git -C "$PY" log -1 --format=%B "$b" | grep -qx "Clearing-Verdict: fail"'
check "failing step: the summary names the step" 'grep -q "step 2 (run): exited with 3" "$out" && grep -q "verdict: FAIL" "$out"'
assert_clean "failing step"

# ---- 3. a failing lint ----------------------------------------------------------------------
{ printf 'message: "Lint error"\nprofile: python\nsteps:\n  - write:\n      path: calc.py\n      content: |\n        import os\n'
  sed 's/^/        /' "$SRC/examples/sample-python/calc.py"; } >"$D/plans/lint.yaml"
plan "$D/plans/lint.yaml" "$PY"
check "failing lint: exit 1, lint failed, types/security/tests passed" \
    '[ "$st" = 1 ] && jpy "$rep" "r[\"verdict\"] == \"fail\" and {c[\"name\"]: c[\"status\"] for c in r[\"gauntlet\"][\"checks\"]} == {\"lint\": \"failed\", \"types\": \"passed\", \"security\": \"passed\", \"tests\": \"passed\"}"' "exit $st"
check "failing lint: the summary names lint alone and shows flake8's finding" \
    'grep -qE "verdict: FAIL — failed: lint \(" "$out" && grep -q "F401" "$out"'
assert_clean "failing lint"

# ---- 4. coverage below the threshold ------------------------------------------------------
{ printf 'message: "Untested code"\nprofile: python\nsteps:\n  - write:\n      path: extra.py\n      content: |\n        """Code nobody tests."""\n'
  for i in 1 2 3 4 5 6 7 8 9 10; do
      printf '\n\n        def f%s(x: int) -> int:\n            y = x + %s\n            z = y * 2\n            return z - 1\n' "$i" "$i"
  done; } >"$D/plans/coverage.yaml"
plan "$D/plans/coverage.yaml" "$PY"
check "low coverage: exit 1, tests failed on coverage while its 3 tests passed" \
    '[ "$st" = 1 ] && jpy "$rep" "[(c[\"status\"], \"is below 85\" in c[\"message\"], c[\"figures\"][\"coverage_percent\"] < 85, c[\"figures\"][\"tests_passed\"]) for c in r[\"gauntlet\"][\"checks\"] if c[\"name\"] == \"tests\"] == [(\"failed\", True, True, 3)]"' "exit $st"
check "low coverage: the summary gives the percentage" 'grep -qE "coverage [0-9.]+% is below 85" "$out"'
assert_clean "low coverage"

# ---- 5. the repository's own gauntlet: used, not weakened by the plan, timeouts ------------
OWN=$(bash "$SRC/scripts/sample-repo.sh" "$D/own")
mkdir -p "$OWN/.clearing"
cat >"$OWN/.clearing/gauntlet.yaml" <<'EOF'
checks:
  - name: own-tests
    kind: test
    run: python3 -m pytest -q -p no:cacheprovider
    env: {PYTHONDONTWRITEBYTECODE: "1"}
    timeout: 5m
EOF
git -C "$OWN" add -A && git -C "$OWN" -c user.name=t -c user.email=t@localhost commit -qm "Own gauntlet"
plan "$SRC/examples/plans/add-median.yaml" "$OWN"
own_ms=$ms
check "own gauntlet: used instead of the plan's profile, verdict pass" \
    '[ "$st" = 0 ] && jpy "$rep" "[c[\"name\"] for c in r[\"gauntlet\"][\"checks\"]] == [\"own-tests\"] and r[\"gauntlet\"][\"checks\"][0][\"figures\"][\"tests_passed\"] == 6"' "exit $st"
assert_clean "own gauntlet"
cat >"$D/plans/weaken.yaml" <<'EOF'
message: "Weaken the gauntlet, then break add()"
profile: python
steps:
  - write:
      path: .clearing/gauntlet.yaml
      content: |
        checks:
          - name: weak
            run: "true"
  - write:
      path: calc.py
      content: |
        """A tiny module for the demo: the kind of code an agent edits."""


        def add(a: int, b: int) -> int:
            return a - b


        def mean(values: list[float]) -> float:
            if not values:
                raise ValueError("mean of an empty list")
            return sum(values) / len(values)
EOF
plan "$D/plans/weaken.yaml" "$OWN"
check "weakened gauntlet: the default branch's checks judge the plan (exit 1, own-tests failed, 1 test failed)" \
    '[ "$st" = 1 ] && jpy "$rep" "[(c[\"name\"], c[\"status\"], c[\"figures\"].get(\"tests_failed\")) for c in r[\"gauntlet\"][\"checks\"]] == [(\"own-tests\", \"failed\", 1)]"' "exit $st"
check "weakened gauntlet: the check the plan wrote never ran (the summary lists own-tests alone)" \
    'grep -q "own-tests" "$out" && ! grep -q "weak" "$out"'
assert_clean "weakened gauntlet"
# A first plan commits (commit_on_failure) a lenient gauntlet on its branch; a second plan names
# that branch as its base. The judge is the default branch's gauntlet, never the base's.
# weaken.yaml's steps (a lenient gauntlet, a broken add()), committed even on failure.
{ echo 'message: "Plant a lenient gauntlet and break add()"'; echo 'commit_on_failure: true'
  sed 1d "$D/plans/weaken.yaml"; } >"$D/plans/plant.yaml"
plan "$D/plans/plant.yaml" "$OWN"
planted=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["branch"])' "$rep" 2>/dev/null)
check "planted gauntlet: the first plan fails and commits (commit_on_failure) the lenient gauntlet" \
    '[ "$st" = 1 ] && [ -n "$planted" ] && git -C "$OWN" show "$planted:.clearing/gauntlet.yaml" | grep -q "name: weak"' "exit $st"
printf 'message: "Judged by the planted gauntlet?"\nprofile: python\nbase: %s\nsteps:\n  - write: {path: note.txt, content: "hi\\n"}\n' "$planted" >"$D/plans/on-planted.yaml"
plan "$D/plans/on-planted.yaml" "$OWN"
planted_at=$(git -C "$OWN" rev-parse "$planted")
own_head=$(git -C "$OWN" rev-parse HEAD)
check "planted gauntlet: a plan based on that branch is judged by HEAD's gauntlet (own-tests fails), not the planted one" \
    '[ "$st" = 1 ] && jpy "$rep" "r[\"base\"] == \"$planted_at\" and r[\"gauntlet_source\"][\"ref\"] == \"HEAD\" and r[\"gauntlet_source\"][\"commit\"] == \"$own_head\" and [(c[\"name\"], c[\"status\"]) for c in r[\"gauntlet\"][\"checks\"]] == [(\"own-tests\", \"failed\")]"' "exit $st"
assert_clean "planted gauntlet"
printf 'checks:\n  - name: caller-file\n    run: "true"\n' >"$D/caller.yaml"
gauntlet --repo "$OWN" --profile python --file "$D/caller.yaml"
check "clearing gauntlet: the project's own gauntlet wins over --file (in the profile's image)" \
    '[ "$st" = 0 ] && jpy "$rep" "[c[\"name\"] for c in r[\"checks\"]] == [\"own-tests\"]"' "exit $st"
assert_clean "own gauntlet over --file"
# The hanging test needs a short timeout to end soon; the passing runs above need a generous one
# (pytest in gVisor on a loaded host can take longer than 5 s): HEAD's gauntlet judges, so the
# short timeout is committed for this case alone.
sed -i 's/timeout: 5m/timeout: 5s/' "$OWN/.clearing/gauntlet.yaml"
git -C "$OWN" -c user.name=t -c user.email=t@localhost commit -qam "Own gauntlet: 5 s timeout"
cat >"$D/plans/hang.yaml" <<'EOF'
message: "A test that hangs"
profile: python
steps:
  - write:
      path: test_hang.py
      content: |
        import time


        def test_hang() -> None:
            time.sleep(600)
EOF
plan "$D/plans/hang.yaml" "$OWN"
check "hanging test: status timed-out after its 5 s timeout, exit 1" \
    '[ "$st" = 1 ] && jpy "$rep" "[(c[\"status\"], c[\"message\"]) for c in r[\"gauntlet\"][\"checks\"]] == [(\"timed-out\", \"timed out after 5000 ms\")]"' "exit $st"
# The same plan with a passing test (own_ms, this run) plus the timeout, with room for load: far
# less than the test's 600 s sleep.
hang_most=$((5000 + 5 * own_ms))
check "hanging test: the plan ends at the timeout, not after the test's 600 s sleep (under 5 s + 5 x a passing plan's ${own_ms} ms)" \
    '[ "$ms" -lt "$hang_most" ] && [ "$ms" -lt 300000 ]' "${ms} ms"
assert_clean "hanging test"

# ---- 6. missing tools, optional checks, JUnit ---------------------------------------------
cat >"$D/missing.yaml" <<'EOF'
checks:
  - name: present
    run: "true"
  - name: needs-tool
    kind: lint
    tool: frobnicate-lint
    run: frobnicate-lint .
  - name: nice-to-have
    tool: no-such-tool
    run: no-such-tool
    required: false
  - name: optional-failing
    kind: test
    run: "echo 1 passed, 2 failed; exit 1"
    required: false
EOF
gauntlet --repo "$PY" --file "$D/missing.yaml" --junit "$D/junit.xml"
check "missing tool: tool-missing (not a pass), verdict fail, exit 1" \
    '[ "$st" = 1 ] && jpy "$rep" "r[\"verdict\"] == \"fail\" and {c[\"name\"]: c[\"status\"] for c in r[\"checks\"]} == {\"present\": \"passed\", \"needs-tool\": \"tool-missing\", \"nice-to-have\": \"skipped\", \"optional-failing\": \"failed\"}"' "exit $st"
check "missing tool: the summary blames the required check alone" 'grep -qE "verdict: FAIL — failed: needs-tool \(" "$out"'
check "JUnit XML parses and its counts match the report" "python3 - '$D/junit.xml' '$rep' <<'EOF'
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
rep = json.load(open(sys.argv[2]))
cases = root.findall('testcase')
kinds = {c.get('name'): [e.tag for e in c if e.tag in ('failure', 'error', 'skipped')] for c in cases}
assert root.tag == 'testsuite', root.tag
assert int(root.get('tests')) == len(cases) == len(rep['checks']) == 4
assert int(root.get('failures')) == sum(v == ['failure'] for v in kinds.values()) == 1
assert int(root.get('errors')) == sum(v == ['error'] for v in kinds.values()) == 1
assert int(root.get('skipped')) == sum(v == ['skipped'] for v in kinds.values()) == 1
assert kinds == {'present': [], 'needs-tool': ['error'], 'nice-to-have': ['skipped'],
                 'optional-failing': ['failure']}, kinds
EOF"
grep -v -e needs-tool -e frobnicate -e 'kind: lint' "$D/missing.yaml" >"$D/optional.yaml"
gauntlet --repo "$PY" --file "$D/optional.yaml" --json
check "optional missing tool and optional failure: verdict pass, exit 0" \
    '[ "$st" = 0 ] && jpy "$rep" "r[\"verdict\"] == \"pass\" and [c[\"status\"] for c in r[\"checks\"]] == [\"passed\", \"skipped\", \"failed\"]"' "exit $st"
check "test figures are parsed from any test check's output" \
    'jpy "$rep" "r[\"checks\"][2][\"figures\"] == {\"tests_passed\": 1, \"tests_failed\": 2}"'
assert_clean "missing tool"

# ---- 7. malformed input: clear errors with lines, nothing created -------------------------
branches_before=$(branches "$PY")
cat >"$D/plans/malformed.yaml" <<'EOF'
message: "Malformed"
steps:
  - write: {path: a.txt, content: "a"}
  - run: {shell: "true", timeout: soon}
EOF
plan "$D/plans/malformed.yaml" "$PY"
check "malformed plan: exit 2, the file and line in the message" \
    '[ "$st" = 2 ] && grep -q "malformed.yaml:4:" "$err"' "exit $st"
check "malformed plan: no sandbox was created, no branch" \
    '! grep -q "sandbox sb-" "$err" && [ "$(branches "$PY")" = "$branches_before" ]'
cat >"$D/malformed-gauntlet.yaml" <<'EOF'
parallel: 2
checks:
  - name: lint
    run: flake8 .
    timeout: 5 minutes
EOF
gauntlet --repo "$PY" --file "$D/malformed-gauntlet.yaml"
check "malformed gauntlet: exit 2, the file and line in the message, no sandbox" \
    '[ "$st" = 2 ] && grep -q "malformed-gauntlet.yaml:5: timeout must be a duration" "$err" && ! [ -s "$rep" ]' "exit $st"
BAD=$(bash "$SRC/scripts/sample-repo.sh" "$D/bad")
mkdir -p "$BAD/.clearing"
printf 'checks:\n  - name: x\n    run: "true"\n    frobnicate: 1\n' >"$BAD/.clearing/gauntlet.yaml"
git -C "$BAD" add -A && git -C "$BAD" -c user.name=t -c user.email=t@localhost commit -qm "Bad gauntlet"
bad_branches=$(branches "$BAD")
plan "$SRC/examples/plans/add-median.yaml" "$BAD"
check "malformed repository gauntlet: exit 2, its file and line named" \
    '[ "$st" = 2 ] && grep -q "gauntlet.yaml:4: check: unknown key .frobnicate." "$err"' "exit $st"
check "malformed repository gauntlet: no sandbox was created, no branch" \
    '! grep -q "sandbox sb-" "$err" && [ ! -e "$rep" ] && [ "$(branches "$BAD")" = "$bad_branches" ]' "$(branches "$BAD")"
assert_clean "malformed input"

# ---- 8. the C sample ------------------------------------------------------------------------
CR=$(bash "$SRC/scripts/sample-repo.sh" --c "$D/c")
gauntlet --repo "$CR" --profile c --json
check "C sample: passes the c profile (cppcheck, -Werror build, make test)" \
    '[ "$st" = 0 ] && jpy "$rep" "[(c[\"name\"], c[\"status\"]) for c in r[\"checks\"]] == [(\"static-analysis\", \"passed\"), (\"build\", \"passed\"), (\"tests\", \"passed\")] and r[\"checks\"][2][\"figures\"] == {\"tests_passed\": 10, \"tests_failed\": 0}"' "exit $st"
{ printf 'message: "Count the calls"\nprofile: c\nsteps:\n  - write:\n      path: stats.c\n      content: |\n'
  sed -e 's/^/        /' -e 's/^        $//' -e 's/^\(        \)    double sum = 0;/\1    double sum = 0;\n\1    int calls = 0;/' \
      "$SRC/examples/sample-c/stats.c"; } >"$D/plans/c-warning.yaml"
plan "$D/plans/c-warning.yaml" "$CR"
check "C plan with a warning: the -Werror build fails, exit 1" \
    '[ "$st" = 1 ] && jpy "$rep" "{c[\"name\"]: c[\"status\"] for c in r[\"gauntlet\"][\"checks\"]} == {\"static-analysis\": \"passed\", \"build\": \"failed\", \"tests\": \"failed\"}"' "exit $st"
check "C plan with a warning: the summary shows the compiler's error" 'grep -q "unused variable" "$out" && grep -q "verdict: FAIL — failed: build tests" "$out"'
assert_clean "C sample"

# ---- 9. the API: POST /v1/plans, with and without streaming, and a client that goes away ---
API=$(bash "$SRC/scripts/sample-repo.sh" "$D/api/py")
"$CLEARING" --state-dir "$D/api-state" serve --socket "$D/api.sock" --repo-root "$D/api" 2>"$D/serve.log" &
serve_pid=$!
S=(curl -s --unix-socket "$D/api.sock")
serve_answers() { curl -sf --max-time 10 --unix-socket "$D/api.sock" http://x/v1/health >/dev/null 2>&1; }
serve_up_or_gone() { gone "$serve_pid" || serve_answers; }
wait_for 120 serve_up_or_gone
check "API: the daemon answers on its socket" serve_answers "$(tail -n 5 "$D/serve.log")"
body() { python3 -c 'import json,sys; print(json.dumps({"repo": sys.argv[1], "plan": open(sys.argv[2]).read()}))' "$1" "$2"; }
code=$("${S[@]}" -o "$rep" -w '%{http_code}' -XPOST http://x/v1/plans -d "$(body "$API" "$SRC/examples/plans/add-median.yaml")")
check "API: POST /v1/plans runs the plan: 200, verdict pass, committed" \
    '[ "$code" = 200 ] && jpy "$rep" "r[\"verdict\"] == \"pass\" and len(r[\"commit\"]) == 40" && git -C "$API" log -1 --format=%B "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[\"branch\"])" "$rep")" | grep -qx "Clearing-Verdict: pass"' "HTTP $code"
"${S[@]}" -XPOST 'http://x/v1/plans?stream=true' -d "$(body "$API" "$D/plans/lint.yaml")" >"$D/stream.ndjson"
check "API: ?stream=true gives NDJSON events sandbox, step, check, commit, done, then the report" "python3 - '$D/stream.ndjson' <<'EOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
events = [e for e in events if e.get('event') != 'heartbeat']  # the daemon's keep-alive
names = [e['event'] for e in events]
assert names[0] == 'sandbox' and names[-2:] == ['done', 'result'], names
assert {'step', 'check', 'commit'} <= set(names), names
assert {'check': 'lint', 'status': 'failed'} in [{k: e.get(k) for k in ('check', 'status')} for e in events if e['event'] == 'check'], events
assert events[-1]['verdict'] == 'fail' and events[-2]['verdict'] == 'fail'
EOF"
# sandbox_listed ID: the engine has the sandbox ID; sandbox_gone ID: it positively has not.
sandbox_listed() { local ids; ids=$(sandboxes_of "" "$1") && [ "$ids" = "$1" ]; }
sandbox_gone() { local ids; ids=$(sandboxes_of "" "$1") && [ -z "$ids" ]; }
git clone -q --bare "$OWN" "$D/api/own-bare.git"
main_before=$(git -C "$D/api/own-bare.git" rev-parse main)
code=$("${S[@]}" -o "$out" -w '%{http_code}' -XPOST http://x/v1/sandboxes -d "{\"repo\": {\"path\": \"$D/api/own-bare.git\", \"branch\": \"main\", \"reuse_branch\": true}}")
remember_ids "$out"
check "judge branch: no sandbox may take a bare repository's default branch as its own (409), main unchanged" \
    '[ "$code" = 409 ] && grep -q "default branch" "$out" && [ "$(git -C "$D/api/own-bare.git" rev-parse main)" = "$main_before" ]' "HTTP $code"
code=$("${S[@]}" -o "$out" -w '%{http_code}' -XPOST http://x/v1/sandboxes -d "{\"repo\": {\"path\": \"$D/api/own-bare.git\", \"branch\": \"side\"}, \"limits\": {\"lifetime\": \"2m\"}}")
remember_ids "$out"
side_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out" 2>/dev/null)
check "judge branch: control: a branch of its own in the same bare repository is taken (201)" '[ "$code" = 201 ]' "HTTP $code"
if [ -n "$side_id" ]; then
    "${S[@]}" -XDELETE "http://x/v1/sandboxes/$side_id" >/dev/null
    check "judge branch: the control's sandbox is removed" 'wait_for 120 sandbox_gone "$side_id"' "$side_id still there 120 s later"
fi
api_branch=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]; print(r["branch"])' "$D/stream.ndjson" 2>/dev/null)
check "API: the daemon signs with its own key (made at its first start), which verifies the commit" \
    '[ -f "$D/api-state/verdict.key.pub" ] && [ "$(stat -c %a "$D/api-state/verdict.key")" = 600 ] && "$CLEARING" verify --repo "$API" --key "$D/api-state/verdict.key.pub" "$api_branch" >"$out" 2>"$err" && grep -q "verdict fail" "$out" && ! "$CLEARING" verify --repo "$API" --key "$D/state/verdict.key.pub" "$api_branch" >/dev/null 2>&1'
cp "$D/stream.ndjson" "$rep"
code=$("${S[@]}" -o "$out" -w '%{http_code}' -XPOST http://x/v1/plans -d "$(body "$PY" "$SRC/examples/plans/add-median.yaml")")
check "API: a repository outside repo_roots is refused (403)" '[ "$code" = 403 ]' "HTTP $code"
code=$("${S[@]}" -o "$out" -w '%{http_code}' -XPOST http://x/v1/plans -d "$(body "$API" "$D/plans/malformed.yaml")")
check "API: a malformed plan is a 400 naming the line" '[ "$code" = 400 ] && grep -q "plan:4:" "$out"' "HTTP $code"
cp -r "$BAD" "$D/api/bad"
code=$("${S[@]}" -o "$out" -w '%{http_code}' -XPOST http://x/v1/plans -d "$(body "$D/api/bad" "$SRC/examples/plans/add-median.yaml")")
check "API: a malformed .clearing/gauntlet.yaml is a 400 naming its line, no branch made" \
    '[ "$code" = 400 ] && grep -q "gauntlet.yaml:4:" "$out" && [ "$(branches "$D/api/bad")" = "$bad_branches" ]' "HTTP $code"
# A plan whose first step tells the test it runs (a file in the workspace, which is on the host
# under the state directory) and then outlives any wait below; SIGINT must cut it short.
cat >"$D/plans/slow.yaml" <<'EOF'
message: "Slow"
profile: python
steps:
  - run: {shell: "touch started; sleep 600"}
  - write: {path: later.txt, content: "x"}
EOF
# step_started STATE-DIR FILE: the sandbox named first in FILE runs the slow plan's first step;
# its id in $step_id.
step_started() {
    step_id=$(grep -ohE 'sb-[0-9a-f]{16}' "$2" 2>/dev/null | head -1)
    [ -n "$step_id" ] && [ -e "$1/workspaces/$step_id/started" ]
}
# The daemon does not cancel a plan whose client went away: it runs to its end (here, the 30 s
# step timeout) and must then remove its sandbox like any other. The timeout is a deadline for
# the step to start and for this test to see its sandbox still listed after the disconnect (with
# 10 s a loaded host could end the step, and remove the sandbox, before the check).
sed 's/sleep 600"}/sleep 600", timeout: 30s}/' "$D/plans/slow.yaml" >"$D/plans/slow30.yaml"
# -N: each event reaches the file as it comes, not when curl exits.
"${S[@]}" -N -XPOST 'http://x/v1/plans?stream=true' -d "$(body "$API" "$D/plans/slow30.yaml")" >"$D/gone.ndjson" &
client=$!
wait_for 120 step_started "$D/api-state" "$D/gone.ndjson"
gone_id=$step_id
kill "$client"; wait "$client" 2>/dev/null
check "API: the plan's sandbox runs its step when the client goes away" \
    '[ -n "$gone_id" ] && sandbox_listed "$gone_id"' \
    "sandbox ${gone_id:-? (no sandbox event or no started file within 120 s)}"
check "API: a client that disconnects mid-plan leaves no sandbox behind" \
    '[ -n "$gone_id" ] && wait_for 180 sandbox_gone "$gone_id"' "sandbox ${gone_id:-?} still there 180 s later (its step ends at 30 s)"
check "API: the daemon still answers after the disconnect" \
    '[ "$("${S[@]}" -o /dev/null -w "%{http_code}" http://x/v1/sandboxes)" = 200 ]'
kill -TERM "$serve_pid"; wait "$serve_pid"; serve_pid=
remember_ids "$D/gone.ndjson" "$D/stream.ndjson"
assert_clean "API"

# ---- 10. SIGINT mid-plan --------------------------------------------------------------------
slow_branches=$(branches "$PY")
"${C[@]}" plan run "$D/plans/slow.yaml" --repo "$PY" >"$out" 2>"$err" </dev/null &
pid=$!
wait_for 120 step_started "$D/state" "$err"
int_id=$step_id
check "SIGINT: the plan's sandbox runs its 600 s step" '[ -n "$int_id" ] && sandbox_listed "$int_id"' \
    "sandbox ${int_id:-? (no sandbox line or no started file within 120 s)}"
t0=$(now_ms)
kill -INT "$pid"
# Cancelling removes the sandbox, which a loaded host can take tens of seconds over: the bound is
# half the 600 s step, which tells a cut-short step from one that ran out.
wait_for 300 gone "$pid"
if gone "$pid"; then wait "$pid"; st=$?; else
    st="still running"; kill -KILL "$pid"; "${C[@]}" rm --engine "$int_id" >/dev/null 2>&1; fi
ms=$(( $(now_ms) - t0 ))
check "SIGINT: the plan stops at once (not after its 600 s step) with exit 125, saying it was cancelled" \
    '[ "$st" = 125 ] && [ "$ms" -lt 300000 ] && grep -q "cancelled" "$out"' "exit $st after ${ms} ms"
check "SIGINT: its sandbox is gone" '[ -n "$int_id" ] && sandbox_gone "$int_id"' "sandbox ${int_id:-?}"
check "SIGINT: nothing committed, no branch left" '[ "$(branches "$PY")" = "$slow_branches" ]' "$(branches "$PY")"
assert_clean "SIGINT"

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
