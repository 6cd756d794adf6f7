#!/usr/bin/env bash
# Makes a fresh git repository from examples/sample-python at $1 (default
# /tmp/clearing-sample-repo), for the sample plans of `make run`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-/tmp/clearing-sample-repo}
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$here/examples/sample-python/." "$dest/"
printf '__pycache__/\n*.pyc\n.coverage\n' >"$dest/.gitignore"
git -C "$dest" init -q -b main
git -C "$dest" add -A
git -C "$dest" -c user.name=sample -c user.email=sample@localhost commit -qm "Sample project"
echo "$dest"
