#!/usr/bin/env bash
# Builds clearing if needed and runs one benchmark; the remaining arguments are passed through.
#   bench/run.sh [lifecycle] [args]   the lifecycle benchmark (the default)
#   bench/run.sh api [args]           the daemon's API: exec latency, throughput, footprint
#   bench/run.sh audit [args]         the audit log's cost: exec throughput with and without it
#   bench/run.sh gauntlet [args]      gauntlet wall time: parallel 1 vs 3 vs a docker run per check
#   bench/run.sh audit-flood [args]   another tenant's exec p99 with and without one tenant's flood
#   bench/run.sh cpython [args]       CPython's test suite in a sandbox vs a runc container (~6 min;
#                                     --quick ~20 s)
# For example:
#   bench/run.sh                      lifecycle, 30 rounds, table on stdout
#   bench/run.sh --quick              lifecycle smoke test (3 rounds)
#   bench/run.sh --json > lifecycle.json
#   bench/run.sh api --quick          api smoke test (3 rounds, 3 s of throughput per side)
#   bench/run.sh api --json > api.json
#   bench/run.sh audit --quick        audit smoke test (3 s per configuration, 200 appends)
#   bench/run.sh gauntlet --quick     gauntlet smoke test (1 round instead of 5)
# BUILD_DIR (default build/, relative to the source tree) picks the Meson build directory; it is
# set up if it does not exist. Needs root, like clearing itself.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-build}
[[ $build_dir == /* ]] || build_dir=$root/$build_dir

# The benchmark's name is an optional first argument; anything else (an option, or nothing)
# means the lifecycle benchmark, as before there was more than one.
bench=lifecycle
case ${1:-} in
    lifecycle|api|audit|audit-flood|cpython|gauntlet) bench=$1; shift ;;
esac

# Build output goes to stderr so that stdout carries only the benchmark's report (--json).
if [[ ! -f $build_dir/build.ninja ]]; then
    meson setup "$build_dir" "$root" >&2
fi

# The agent from the same build as the library: the two speak one protocol version.
export CLEARING_AGENT=$build_dir/agent/clearing-agent
case $bench in
    lifecycle)
        ninja -C "$build_dir" bench/clearing-bench-lifecycle agent/clearing-agent >&2
        exec "$build_dir/bench/clearing-bench-lifecycle" "$@"
        ;;
    api)
        # The api benchmark starts the daemon itself: the clearing binary of the same build.
        ninja -C "$build_dir" bench/clearing-bench-api src/clearing agent/clearing-agent >&2
        export CLEARING_BIN=$build_dir/src/clearing
        exec "$build_dir/bench/clearing-bench-api" "$@"
        ;;
    audit)
        ninja -C "$build_dir" bench/clearing-bench-audit agent/clearing-agent >&2
        exec "$build_dir/bench/clearing-bench-audit" "$@"
        ;;
    audit-flood)
        # Starts its own daemon (TCP with a token) and floods it with denials (#16.3).
        ninja -C "$build_dir" src/clearing agent/clearing-agent >&2
        exec python3 "$root/bench/bench_audit_flood.py" "$build_dir/src/clearing" "$@"
        ;;
    cpython)
        # A real workload; the image clearing/cpython-tests is built on demand by the benchmark.
        ninja -C "$build_dir" src/clearing agent/clearing-agent >&2
        exec python3 "$root/bench/bench_cpython.py" "$build_dir/src/clearing" "$@"
        ;;
    gauntlet)
        # Runs `clearing gauntlet` and plain `docker run`s of clearing/python on the Python sample.
        ninja -C "$build_dir" src/clearing agent/clearing-agent >&2
        exec python3 "$root/bench/bench_gauntlet.py" "$build_dir/src/clearing" "$@"
        ;;
esac
