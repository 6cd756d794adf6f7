#!/usr/bin/env bash
# Builds clearing if needed and runs the lifecycle benchmark; the arguments are passed through.
#   bench/run.sh                  30 rounds, table on stdout
#   bench/run.sh --quick          smoke test (3 rounds)
#   bench/run.sh --json > lifecycle.json
# BUILD_DIR (default build/, relative to the source tree) picks the Meson build directory; it is
# set up if it does not exist. Needs root, like clearing itself.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-build}
[[ $build_dir == /* ]] || build_dir=$root/$build_dir

# Build output goes to stderr so that stdout carries only the benchmark's report (--json).
if [[ ! -f $build_dir/build.ninja ]]; then
    meson setup "$build_dir" "$root" >&2
fi
ninja -C "$build_dir" bench/clearing-bench-lifecycle agent/clearing-agent >&2

# The agent from the same build as the library: the two speak one protocol version.
export CLEARING_AGENT=$build_dir/agent/clearing-agent
exec "$build_dir/bench/clearing-bench-lifecycle" "$@"
