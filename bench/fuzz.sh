#!/usr/bin/env bash
# Runs the libFuzzer harnesses of fuzz/ one after the other (docs/SECURITY.md, "Fuzzing").
#   bench/fuzz.sh [SECONDS] [HARNESS...]     default: 600 s each, every harness
# Inputs that add coverage accumulate in $FUZZ_WORK/<harness>/corpus (default
# /var/tmp/clearing-fuzz), so a later run starts where this one stopped; the seed corpus
# fuzz/corpus/<harness> and past crashes fuzz/regressions/<harness> are read, never written.
# A crash, leak, timeout or out-of-memory input is copied to fuzz/crashes/<harness>/ and printed;
# the exit status is then 1. Fix the bug, then move the input to fuzz/regressions/<harness>/:
# `meson test -C build-fuzz --suite fuzz` replays it from then on.
# Environment: BUILD_FUZZ (build directory, default build-fuzz), FUZZ_WORK, FUZZ_JOBS (parallel
# fuzzing processes per harness, default 1: the machine is shared).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
seconds=${1:-600}
[ $# -gt 0 ] && shift
build=${BUILD_FUZZ:-build-fuzz}
work=${FUZZ_WORK:-/var/tmp/clearing-fuzz}
jobs=${FUZZ_JOBS:-1}

all=$(sed -n "s/^  '\([a-z_]*\)' : .*/\1/p" fuzz/meson.build)
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || read -r -a harnesses <<<"$(echo $all)"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" -Dfuzzing=true >/dev/null
fi
# Only the harnesses: the rest of the tree need not build with clang for a fuzzing run.
ninja -C "$build" $(printf 'fuzz/fuzz_%s ' "${harnesses[@]}") >/dev/null

# UBSan is built with -fno-sanitize-recover: its findings abort like ASan's.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
status=0
printf '%-14s %8s %10s %8s %6s %s\n' harness seconds execs exec/s cov result
for h in "${harnesses[@]}"; do
    exe="$build/fuzz/fuzz_$h"
    [ -x "$exe" ] || { echo "fuzz.sh: no harness '$h' (have: $(echo $all))" >&2; exit 2; }
    mkdir -p "$work/$h/corpus" "$work/$h/artifacts"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$work/$h/artifacts/")
    [ -f "fuzz/$h.dict" ] && args+=(-dict="fuzz/$h.dict")
    [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
    dirs=("$work/$h/corpus" "fuzz/corpus/$h")
    [ -d "fuzz/regressions/$h" ] && dirs+=("fuzz/regressions/$h")
    log="$work/$h/last.log"
    rc=0
    "$exe" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -n1 | cut -d' ' -f2)
    result=ok
    found=$(find "$work/$h/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
            -o -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null)
    if [ "$rc" != 0 ] || [ -n "$found" ]; then
        result="FAILED (exit $rc, log $log)"
        status=1
        mkdir -p "fuzz/crashes/$h"
        for f in $found; do
            cp "$f" "fuzz/crashes/$h/"
            echo "fuzz.sh: $h: $(basename "$f") -> fuzz/crashes/$h/ (replay: $exe $f)" >&2
            mkdir -p "$work/$h/reported"
            mv "$f" "$work/$h/reported/"
        done
        grep -m1 -A12 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY' "$log" >&2 || tail -n 20 "$log" >&2
    fi
    printf '%-14s %8s %10s %8s %6s %s\n' "$h" "$seconds" "${execs:-?}" \
        "$(( ${execs:-0} / (seconds > 0 ? seconds : 1) ))" "${cov:-?}" "$result"
done
exit $status
