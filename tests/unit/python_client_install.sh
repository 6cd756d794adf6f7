#!/usr/bin/env bash
# `pip install --no-build-isolation ./clients/python` works offline (--no-index: nothing from
# PyPI) with Debian's pip, setuptools and wheel, into a scratch virtual environment; a copy of
# the source is built, so that nothing lands in the source tree. TAP output.
#   usage: python_client_install.sh SOURCE_ROOT
set -u
src=${1:?usage: python_client_install.sh SOURCE_ROOT}
py=/usr/bin/python3
for m in pip setuptools wheel venv; do
    if ! "$py" -c "import $m" 2>/dev/null; then
        echo "1..0 # SKIP $py has no $m: apt-get install python3-pip python3-setuptools python3-wheel python3-venv"
        exit 77
    fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/#   /' "$work/out" | tail -20; }

cp -r "$src/clients/python" "$work/src"
rm -rf "$work/src/build" "$work/src"/*.egg-info
if "$py" -m venv --system-site-packages "$work/venv" > "$work/out" 2>&1 &&
   "$work/venv/bin/pip" install --no-index --no-build-isolation "$work/src" > "$work/out" 2>&1; then
    ok "pip install --no-index --no-build-isolation ./clients/python"
else
    notok "pip install --no-index --no-build-isolation ./clients/python"
fi
# The installed copy, not the source: run from elsewhere, with nothing on PYTHONPATH.
if (cd "$work" && env -u PYTHONPATH "$work/venv/bin/python" -c '
import os, sys, clearing
d = os.path.dirname(clearing.__file__)
assert d.startswith(sys.prefix), d
for f in ("py.typed", "client.py", "models.py", "errors.py", "_transport.py", "_tar.py"):
    assert os.path.exists(os.path.join(d, f)), f
assert issubclass(clearing.NotFound, clearing.ClearingError)
print(d)') > "$work/out" 2>&1; then
    ok "the installed package imports from the environment, with py.typed and every module"
else
    notok "the installed package imports from the environment, with py.typed and every module"
fi
echo "1..$n"
[ "$failed" = 0 ]
