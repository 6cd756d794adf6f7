#!/usr/bin/env bash
# Makes a fresh git repository from one of the sample projects, for the sample plans of
# `make run` and the plan tests:
#   sample-repo.sh [DEST]        examples/sample-python at DEST (default /tmp/clearing-sample-repo)
#   sample-repo.sh --c [DEST]    examples/sample-c at DEST (default /tmp/clearing-sample-c-repo)
# Prints DEST.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
sample=sample-python
ignore='__pycache__/\n*.pyc\n.coverage\n'
default=/tmp/clearing-sample-repo
if [ "${1:-}" = --c ]; then
    shift
    sample=sample-c
    ignore='*.o\n*.a\n/stats\n/test_stats\n'
    default=/tmp/clearing-sample-c-repo
elif [ "${1:-}" = --python ]; then
    shift
fi
dest=${1:-$default}
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$here/examples/$sample/." "$dest/"
printf "$ignore" >"$dest/.gitignore"
git -C "$dest" init -q -b main
git -C "$dest" add -A
git -C "$dest" -c user.name=sample -c user.email=sample@localhost commit -qm "Sample project"
echo "$dest"
