#!/usr/bin/env bash
# The main test suite once, against one build that is both instrumented for line coverage and
# built with ASan + UBSan: `make coverage`, and the "main suite" step of scripts/test-all.sh (CI).
# One run proves both (the suite's time is gVisor's, not the daemon's code: a sanitizer build ran
# it no slower than a plain one), where two runs against two builds took CI past its hour.
#
#   scripts/coverage.sh [meson test arguments...]   e.g. --no-suite disruptive, or test names
#
# 1. the build ($BUILD_COV, default build-cov: -Db_coverage=true and -Db_sanitize=address,
#    undefined, meson's defaults otherwise, as for build/), with every old counter removed; the
#    agent, which runs inside images without a sanitizer runtime, is never sanitized
#    (agent/meson.build) but is counted;
# 2. the suite run against it with CLEARING_COVERAGE_DIR set: the daemon then mounts a
#    directory of its own into each sandbox and the agent dumps its counters there after each
#    command (lib/coverage.h, agent/coverage.h), which gVisor would otherwise lose with the
#    sandbox. A sanitizer report aborts the process (ASAN_OPTIONS, UBSAN_OPTIONS below, unless
#    set): the test that ran it fails. The memcheck suite is left out (valgrind cannot run a
#    sanitized binary): test-all.sh runs it against build/;
# 3. those counters merged into the build's own (gcov-tool), then gcovr: per directory and
#    overall, and per file, into $BUILD_COV/coverage-summary.txt (test-all prints it again at the
#    end of the log). Each of lib/, src/ and agent/ must reach COVERAGE_MIN percent of its lines
#    (default 85 for the whole suite, as CI runs it; 0, no threshold, when test arguments pick
#    a part of it): a directory below it fails the run, after the report.
# Exits with the test run's status (a failed test fails this script, after the report), else 1
# when a directory is below the threshold.
# COVERAGE_COLLECT_AGENT=0 leaves CLEARING_COVERAGE_DIR unset: the control, where agent/ is
# covered only by the unit test that compiles its request decoder in.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
BUILD_COV=${BUILD_COV:-build-cov}
for tool in gcovr gcov-tool; do
    command -v $tool >/dev/null || {
        echo "coverage: $tool is missing: apt-get install gcovr gcc (scripts/setup.sh does)" >&2
        exit 1
    }
done

# (b_lundef=false: clang's sanitizer runtime is not linked into shared objects)
opts=(-Db_coverage=true -Db_sanitize=address,undefined -Db_lundef=false)
if [ ! -f "$BUILD_COV/build.ninja" ]; then
    meson setup "$BUILD_COV" "${opts[@]}" >/dev/null || exit
else
    meson configure "$BUILD_COV" "${opts[@]}" || exit
fi
ninja -C "$BUILD_COV" || exit
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}
bdir=$(cd "$BUILD_COV" && pwd -P)
find "$bdir" -name '*.gcda' -delete
agent_cov="$bdir/agent-counters"
rm -rf "$agent_cov"
mkdir -p "$agent_cov"

if [ "${COVERAGE_COLLECT_AGENT:-1}" = 0 ]; then
    echo "coverage: COVERAGE_COLLECT_AGENT=0: the agent's counters stay in the sandboxes"
    meson test -C "$BUILD_COV" --print-errorlogs --no-suite memcheck "$@"
else
    echo "coverage: the agent's counters from inside each sandbox go to $agent_cov/<sandbox id>/"
    CLEARING_COVERAGE_DIR=$agent_cov meson test -C "$BUILD_COV" --print-errorlogs \
        --no-suite memcheck "$@"
fi
rc=$?

# Each sandbox's directory holds the agent's .gcda files under their build paths
# (GCOV_PREFIX_STRIP=0): merge every one into the build's own, next to its .gcno.
sandboxes=0
merged=0
for sb in "$agent_cov"/*/; do
    [ -d "$sb" ] || continue
    sandboxes=$((sandboxes + 1))
    while IFS= read -r dir; do
        target=${dir#"${sb%/}"}
        case "$target/" in
            "$bdir"/*) ;;
            *) echo "coverage: $dir: not under $bdir, left alone" >&2; continue ;;
        esac
        # (find, not a glob: the agent's copy of lib/proto.c is .._lib_proto.c.gcda)
        if [ -n "$(find "$target" -maxdepth 1 -name '*.gcda' -print -quit)" ]; then
            gcov-tool merge -o "$target" "$dir" "$target" >/dev/null ||
                echo "coverage: could not merge $dir into $target" >&2
        else
            find "$dir" -maxdepth 1 -name '*.gcda' -exec cp {} "$target"/ \;
        fi
        merged=$((merged + 1))
    done < <(find "$sb" -name '*.gcda' -printf '%h\n' | sort -u)
done
echo "coverage: the agent's counters: $merged directories from $sandboxes sandboxes merged into" \
    "$bdir (a sandbox that ended before a command finished has none)"
if [ "$sandboxes" -gt 0 ] && [ "$merged" = 0 ]; then
    echo "coverage: WARNING: no sandbox wrote the agent's counters: the collection is broken" \
         "(lib/coverage.c, agent/coverage.c), agent/ below shows only the unit tests" >&2
fi

if [ $# -gt 0 ]; then min=${COVERAGE_MIN:-0}; else min=${COVERAGE_MIN:-85}; fi

json="$bdir/coverage.json"
# (the sandboxes' copies are merged above: not searched again)
gcovr -r "$root" --object-directory "$bdir" -j 2 --filter lib/ --filter src/ --filter agent/ \
      --exclude-directories "$(basename "$agent_cov")" --json-summary "$json" "$bdir" \
      >/dev/null || {
    echo "coverage: gcovr failed" >&2
    exit 1
}
python3 - "$json" "$min" >"$bdir/coverage-summary.txt" <<'PY'
import json, sys
files = json.load(open(sys.argv[1]))["files"]
minimum = float(sys.argv[2])
dirs = {}
for f in files:
    top = f["filename"].split("/")[0]
    d = dirs.setdefault(top, [0, 0])
    d[0] += f["line_covered"]
    d[1] += f["line_total"]
pct = lambda c, t: 100.0 * c / t if t else 0.0
print("line coverage per file (lines covered / lines):")
for f in sorted(files, key=lambda f: f["filename"]):
    print("  %-28s %6.1f%%  %5d / %5d" % (f["filename"], pct(f["line_covered"], f["line_total"]),
                                         f["line_covered"], f["line_total"]))
if minimum > 0:
    print("line coverage (each of lib/, src/, agent/ must reach %g%%):" % minimum)
else:
    print("line coverage (no threshold: COVERAGE_MIN=0 or a part of the suite):")
below = []
for top in ("lib", "src", "agent"):
    c, t = dirs.get(top, [0, 0])
    low = minimum > 0 and pct(c, t) < minimum
    if low:
        below.append(top + "/")
    print("  %-7s %6.1f%%  %6d / %6d lines%s" % (top + "/", pct(c, t), c, t,
                                                "  BELOW %g%%" % minimum if low else ""))
c = sum(d[0] for d in dirs.values())
t = sum(d[1] for d in dirs.values())
print("  %-7s %6.1f%%  %6d / %6d lines" % ("total", pct(c, t), c, t))
if below:
    print("coverage: FAILED: %s below %g%% of lines: cover the files listed above with the "
          "lowest numbers (tests under tests/), or lower COVERAGE_MIN only with a reason"
          % (", ".join(below), minimum))
    sys.exit(3)
PY
covrc=$?
cat "$bdir/coverage-summary.txt"
if [ "$rc" = 0 ] && [ "$covrc" != 0 ]; then
    echo "coverage: a directory is below ${min}% (see above)" >&2
    rc=1
fi
exit $rc
