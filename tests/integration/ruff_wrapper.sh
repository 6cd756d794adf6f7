#!/usr/bin/env bash
# clearing-ruff (tools/ruff) inside real gVisor sandboxes of the python image: the exact findings
# of the fixtures under tests/integration/ruff by their own configuration (selected and ignored
# rules, per-file ignores, an excluded directory, a .gitignore'd file, which configuration file
# wins), a clean project, a bad configuration, the format check, and one gauntlet run of the
# python profile whose lint check is ruff's. TAP.
#   usage: ruff_wrapper.sh PATH/TO/clearing [SOURCE-ROOT]
set -u
CLEARING=${1:?usage: ruff_wrapper.sh PATH/TO/clearing [SOURCE-ROOT]}
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=$SRC/tests/integration/ruff
IMAGE=${CLEARING_RUFF_IMAGE:-clearing/python:latest}
D=$(mktemp -d /tmp/clearing-ruff.XXXXXX)
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

# ruff DIR ARGS...: clearing-ruff ARGS in a sandbox of the python image with DIR as /workspace;
# exit status in $st.
ruff() {
    local dir=$1
    shift
    "${C[@]}" run --image "$IMAGE" --timeout 5m --workspace "$dir" -- clearing-ruff "$@" \
        >"$out" 2>"$err" </dev/null
    st=$?
}
# findings: the JSON findings on $out as sorted "file:row:CODE" lines, space-separated.
findings() {
    python3 -c 'import json,sys; print(" ".join(sorted("%s:%d:%s" % (f["filename"], f["location"]["row"], f["code"]) for f in json.load(open(sys.argv[1])))))' "$out" 2>/dev/null
}

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "Bail out! $IMAGE is missing: run images/build.sh python"
    exit 1
fi

# ---- the tool is there and runs (the control of everything below) ----
ruff "$FIX/clean" --version
check "control: clearing-ruff runs in the sandbox and names ruff's version" \
    '[ "$st" = 0 ] && grep -qE "^ruff [0-9]+\.[0-9]+\.[0-9]+ " "$out"' "exit $st"

# ---- the fixture project by its own configuration ----
ruff "$FIX/project" --output-format json
got=$(findings)
want="pkg/core.py:1:F401 pkg/core.py:7:E711 pkg/long.py:1:E501 scripts/tool.py:5:E711"
check "project: exit 1 with findings" '[ "$st" = 1 ]' "exit $st"
check "project: exactly the findings its configuration asks for" '[ "$got" = "$want" ]' "got: $got"
check "project: stderr names the configuration file used" \
    'grep -q "configuration: pyproject.toml" "$err"'

ruff "$FIX/project"
check "project: concise output is path:row:col: CODE message" \
    '[ "$st" = 1 ] && grep -qx "pkg/core.py:7:17: E711 Comparison to \`None\` should be \`cond is None\`" "$out" && grep -qx "Found 4 errors." "$out"' "exit $st"

# Positive controls of the negative claims above: without the ignore, the per-file ignore, the
# extend-exclude and the .gitignore, the same files do report E731, F401 in scripts/, the
# excluded and the ignored file.
cp -r "$FIX/project" "$D/open"
python3 - "$D/open/pyproject.toml" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('ignore = ["E731"]\n', '').replace('extend-exclude = ["generated"]\n', '')
s = s.split('[tool.ruff.lint.per-file-ignores]')[0] + '[tool.ruff.format]\n'
open(p, 'w').write(s)
EOF
rm "$D/open/.gitignore"
ruff "$D/open" --output-format json
got=$(findings)
want="generated/out.py:1:F401 local_settings.py:1:F401 pkg/core.py:1:F401 pkg/core.py:6:E731 pkg/core.py:7:E711 pkg/long.py:1:E501 scripts/deep/nested.py:1:F401 scripts/tool.py:1:F401 scripts/tool.py:5:E711"
check "control: without the ignores and excludes, E731, F401 in scripts/ (and scripts/deep/: * crosses /), generated/ and local_settings.py report" \
    '[ "$st" = 1 ] && [ "$got" = "$want" ]' "exit $st, got: $got"

ruff "$FIX/project" format --check --if-configured
check "format --check: the configured formatter lists the file it would reformat, exit 1" \
    '[ "$st" = 1 ] && grep -qx "Would reformat: pkg/long.py" "$out" && [ "$(grep -c "^Would reformat" "$out")" = 1 ]' "exit $st"

# ---- a clean project: ruff.toml wins over pyproject.toml in the same directory ----
ruff "$FIX/clean" --output-format json
check "clean: exit 0, an empty JSON array, ruff.toml used" \
    '[ "$st" = 0 ] && [ "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])))" "$out")" = "[]" ] && grep -q "configuration: ruff.toml" "$err"' "exit $st"
ruff "$FIX/clean" format --check --if-configured
check "clean: no formatter configured, format --check --if-configured skips, exit 0" \
    '[ "$st" = 0 ] && grep -q "does not configure ruff format" "$out"' "exit $st"

# ---- no configuration: ruff's own defaults (E4, E7, E9, F), not the WebAssembly build's ----
ruff "$FIX/noconfig" --output-format json
got=$(findings)
check "no configuration: ruff's default rules: E741 only (no isort I001 for the unsorted imports)" \
    '[ "$st" = 1 ] && [ "$got" = "app.py:5:E741" ] && grep -q "configuration: ruff defaults" "$err"' "exit $st, got: $got"

# ---- target-version from requires-python of the pyproject.toml beside ruff.toml ----
ruff "$FIX/requires" --output-format json
got=$(findings)
check "requires-python >=3.9 beside ruff.toml: a match statement is a syntax error (code null)" \
    '[ "$st" = 1 ] && [ "$got" = "app.py:2:None" ] && grep -q "configuration: ruff.toml" "$err"' "exit $st, got: $got"

# ---- errors ----
ruff "$FIX/badconfig"
check "bad configuration: exit 2, the file and the unknown rule named" \
    '[ "$st" = 2 ] && grep -q "invalid ruff configuration in pyproject.toml: Unknown rule selector .XYZ123." "$err"' "exit $st"
ruff "$FIX/clean" --output-format xml
check "bad option: exit 2 with the usage" \
    '[ "$st" = 2 ] && grep -q "output-format must be concise or json" "$err" && grep -q "^usage:" "$err"' "exit $st"
ruff "$FIX/clean" no-such-dir
check "a missing path: exit 2, named" '[ "$st" = 2 ] && grep -q "no-such-dir: no such file or directory" "$err"' "exit $st"

# ---- the python profile's lint check runs ruff by the project's configuration ----
# The sample project plus a lambda assignment that flake8 would report (E731) and the project's
# ruff configuration ignores: lint passes only when ruff ran with that configuration.
G=$D/gauntlet
cp -r "$SRC/examples/sample-python" "$G"
printf '\n\ndouble = lambda x: x * 2\n' >>"$G/calc.py"
printf '[tool.ruff.lint]\nextend-ignore = ["E731"]\n' >"$G/pyproject.toml"
"${C[@]}" gauntlet --repo "$G" --profile python --report "$D/report.json" >"$out" 2>"$err" </dev/null
st=$?
lint() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=[c for c in r["checks"] if c["name"]=="lint"][0]; print(" | ".join([c["status"], c["stderr"]["data"], c["stdout"]["data"]]).replace("\n", " "))' "$D/report.json" 2>/dev/null; }
check "gauntlet: the python profile passes (exit 0)" '[ "$st" = 0 ]' "exit $st"
check "gauntlet: lint passed, and its report shows ruff ran with the project's pyproject.toml" \
    'lint | grep -q "^passed |.*clearing-ruff: ruff [0-9.]*, configuration: pyproject.toml.*All checks passed"' "$(lint)"

echo "1..$n"
[ "$failed" = 0 ]
