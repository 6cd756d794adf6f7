#!/usr/bin/env bash
# The python gauntlet profile by the project's own configuration (clearing-pycheck, tools/pycheck)
# in real gVisor sandboxes of the python image, on tests/fixtures/pyconf-project (its own ruff,
# mypy, bandit, pytest and coverage configuration): it passes with exactly the findings that
# configuration asks for, names each check's configuration file and tool version in the report
# and the JUnit, fails when one of its tests fails and when its own coverage threshold is not met;
# python-strict judges the same project by the profile's choices and fails it. TAP.
#   usage: pycheck.sh PATH/TO/clearing [SOURCE-ROOT]
set -u
CLEARING=${1:?usage: pycheck.sh PATH/TO/clearing [SOURCE-ROOT]}
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=$SRC/tests/fixtures/pyconf-project
IMAGE=clearing/python:latest
D=$(mktemp -d /tmp/clearing-pycheck.XXXXXX)
C=("$CLEARING" --state-dir "$D/state")
n=0; failed=0
out=$D/out; err=$D/err
trap '[ -n "${KEEP:-}" ] || rm -rf "$D"' EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1${2:+ # $2}"
    for f in "$out" "$err"; do [ -s "$f" ] && tail -n 15 "$f" | sed 's/^/#   /'; done
}
check() { if eval "$2"; then ok "$1"; else not_ok "$1" "${3:-}"; fi; }

# gauntlet DIR PROFILE: the gauntlet on DIR; exit status in $st, JSON report in $D/report.json.
gauntlet() {
    rm -f "$D/report.json" "$D/junit.xml"
    "${C[@]}" gauntlet --repo "$1" --profile "$2" --report "$D/report.json" --junit "$D/junit.xml" \
        >"$out" 2>"$err" </dev/null
    st=$?
}
# q EXPR: EXPR (python, over the report as r and the checks by name as c) printed.
q() {
    python3 -c 'import json,sys
r = json.load(open(sys.argv[1])); c = {x["name"]: x for x in r["checks"]}
print(eval(sys.argv[2]))' "$D/report.json" "$1" 2>/dev/null
}

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "Bail out! $IMAGE is missing: run images/build.sh python"
    exit 1
fi

# ---- the helper is in the image and reads the fixture's configuration (the control) ----
"${C[@]}" run --image "$IMAGE" --timeout 2m --workspace "$FIX" -- clearing-pycheck discover types \
    >"$out" 2>"$err" </dev/null
st=$?
check "control: clearing-pycheck runs in the sandbox and finds the fixture's [tool.mypy]" \
    '[ "$st" = 0 ] && grep -q "\"config\": \"pyproject.toml\"" "$out" && grep -q "\"version\": \"mypy " "$out"' \
    "exit $st"

# ---- the fixture by its own configuration: pass, exactly its findings ----
gauntlet "$FIX" python
check "python: the fixture passes (exit 0, verdict pass)" \
    '[ "$st" = 0 ] && [ "$(q "r[\"verdict\"]")" = pass ]' "exit $st"
check "python: every check passed and names pyproject.toml as its configuration" \
    '[ "$(q "sorted((x[\"name\"], x[\"status\"], x[\"config\"]) for x in r[\"checks\"])")" = "[('"'"'lint'"'"', '"'"'passed'"'"', '"'"'pyproject.toml'"'"'), ('"'"'security'"'"', '"'"'passed'"'"', '"'"'pyproject.toml'"'"'), ('"'"'tests'"'"', '"'"'passed'"'"', '"'"'pyproject.toml'"'"'), ('"'"'types'"'"', '"'"'passed'"'"', '"'"'pyproject.toml'"'"')]" ]'
check "python: the tool versions: ruff (not flake8), mypy, bandit, pytest with coverage" \
    '[ "$(q "[c[k][\"tool_version\"].split()[0] for k in (\"lint\", \"types\", \"security\", \"tests\")]")" = "['"'"'ruff'"'"', '"'"'mypy'"'"', '"'"'bandit'"'"', '"'"'pytest'"'"']" ] && q "c[\"tests\"][\"tool_version\"]" | grep -q ", coverage "'
check "python: lint is ruff by the project's per-file-ignores (E731 in tests allowed): no finding" \
    'q "c[\"lint\"][\"stdout\"][\"data\"]" | grep -q "All checks passed!" && q "c[\"lint\"][\"stderr\"][\"data\"]" | grep -q "clearing-ruff: ruff .*configuration: pyproject.toml"'
check "python: mypy checks only the project's files (src/calc: 2 files; scripts/ left out)" \
    'q "c[\"types\"][\"stdout\"][\"data\"]" | grep -q "Success: no issues found in 2 source files"'
check "python: bandit's findings are exactly the accepted one (B404, low): B101 skipped, B602 nosec" \
    '[ "$(q "c[\"security\"][\"figures\"][\"findings\"]")" = "{'"'"'low'"'"': 1, '"'"'medium'"'"': 0, '"'"'high'"'"': 0}" ]'
check "python: coverage 80% passes by the project's fail_under 60 (the profile's 85 would fail it)" \
    '[ "$(q "c[\"tests\"][\"figures\"][\"coverage_percent\"]")" = 80.0 ] && [ "$(q "c[\"tests\"][\"figures\"][\"tests_passed\"]")" = 5 ]'
check "python: the terminal summary names ruff and the configuration" \
    'grep -qE "^  passed +lint .*\[ruff [0-9.]+, configuration: pyproject.toml\]" "$out"'
check "python: the JUnit names each check's configuration and tool version" \
    '[ "$(grep -c "<property name=\"config\" value=\"pyproject.toml\"/>" "$D/junit.xml")" = 4 ] && grep -q "<property name=\"tool_version\" value=\"ruff " "$D/junit.xml"'

# ---- one of its tests fails: the gauntlet fails on it ----
cp -r "$FIX" "$D/failing"
sed -i 's/assert add(2, 3) == 5/assert add(2, 3) == 6/' "$D/failing/tests/test_ops.py"
check "control: the failing copy differs from the fixture" \
    '! cmp -s "$FIX/tests/test_ops.py" "$D/failing/tests/test_ops.py"'
gauntlet "$D/failing" python
check "python: a failing test fails the gauntlet (exit 1), the tests check failed with 1 failed" \
    '[ "$st" = 1 ] && [ "$(q "(c[\"tests\"][\"status\"], c[\"tests\"][\"figures\"][\"tests_failed\"])")" = "('"'"'failed'"'"', 1)" ]' "exit $st"
check "python: ... and the checks that only read code still passed" \
    '[ "$(q "[c[k][\"status\"] for k in (\"lint\", \"types\", \"security\")]")" = "['"'"'passed'"'"', '"'"'passed'"'"', '"'"'passed'"'"']" ]'

# ---- the project's own threshold, raised above what it reaches ----
cp -r "$FIX" "$D/threshold"
sed -i 's/^fail_under = 60$/fail_under = 90/' "$D/threshold/pyproject.toml"
gauntlet "$D/threshold" python
check "python: coverage below the project's fail_under 90 fails the tests check" \
    '[ "$st" = 1 ] && q "c[\"tests\"][\"message\"]" | grep -q "coverage 80.00% is below 90.00%"' "exit $st"

# ---- the project's tests write the tests check's info file: the helper's account wins ----
cp -r "$FIX" "$D/forger"
printf 'import json\n\n\ndef test_forge() -> None:\n    with open("/tmp/.clearing-tests.json", "w") as f:\n        json.dump({"config": "forged", "version": "forged", "coverage_min": 99}, f)\n' \
    >"$D/forger/tests/test_forge.py"
gauntlet "$D/forger" python
check "python: a test that rewrites the info file ran (6 passed), and the report still names pyproject.toml and 60" \
    '[ "$st" = 0 ] && [ "$(q "(c[\"tests\"][\"figures\"][\"tests_passed\"], c[\"tests\"][\"config\"], c[\"tests\"][\"tool_version\"].split()[0])")" = "(6, '"'"'pyproject.toml'"'"', '"'"'pytest'"'"')" ]' "exit $st"

# ---- python-strict: the profile's choices, not the project's ----
gauntlet "$FIX" python-strict
check "python-strict: the same fixture fails (exit 1)" '[ "$st" = 1 ]' "exit $st"
check "python-strict: lint finds the E731 the project allows, with no configuration named" \
    '[ "$(q "(c[\"lint\"][\"status\"], c[\"lint\"][\"config\"])")" = "('"'"'failed'"'"', None)" ] && q "c[\"lint\"][\"stdout\"][\"data\"]" | grep -q "tests/test_ops.py:3:1: E731"'
check "python-strict: mypy checks scripts/ too and finds its type error" \
    '[ "$(q "c[\"types\"][\"status\"]")" = failed ] && q "c[\"types\"][\"stdout\"][\"data\"]" | grep -q "scripts/release.py:9: error"'

echo "1..$n"
[ "$failed" = 0 ]
