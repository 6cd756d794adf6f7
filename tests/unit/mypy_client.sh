#!/usr/bin/env bash
# mypy --strict over the Python client (clients/python, package clearing) with Debian's mypy,
# which runs under /usr/bin/python3. Skipped (77) only when that mypy is missing:
# scripts/setup.sh installs it. TAP output.
#   usage: mypy_client.sh SOURCE_ROOT
set -u
src=${1:?usage: mypy_client.sh SOURCE_ROOT}
py=/usr/bin/python3
if ! "$py" -c 'import mypy' 2>/dev/null; then
    echo "1..0 # SKIP mypy is not installed for $py: apt-get install mypy (scripts/setup.sh does)"
    exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/#   /' "$work/out"; }

# Positive control: this mypy, with these options, rejects what --strict must reject.
printf 'def f(x):\n    return x\n\ny: int = "text"\n' > "$work/bad.py"
if "$py" -m mypy --strict --cache-dir "$work/cache" "$work/bad.py" > "$work/out" 2>&1; then
    notok "control: mypy --strict rejects an untyped function and a wrong assignment"
elif grep -q 'no-untyped-def' "$work/out" && grep -q 'Incompatible types in assignment' "$work/out"; then
    ok "control: mypy --strict rejects an untyped function and a wrong assignment"
else
    notok "control: mypy --strict rejects an untyped function and a wrong assignment"
fi
files=$(find "$src/clients/python/clearing" -name '*.py' | wc -l)
if "$py" -m mypy --strict --cache-dir "$work/cache" "$src/clients/python/clearing" > "$work/out" 2>&1 \
   && grep -q "Success: no issues found in $files source files" "$work/out"; then
    ok "mypy --strict: clients/python/clearing ($files files)"
else
    notok "mypy --strict: clients/python/clearing ($files files)"
fi
echo "1..$n"
[ "$failed" = 0 ]
