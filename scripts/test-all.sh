#!/usr/bin/env bash
# The whole test suite, step by step: setup, build, the main suite (unit tests included) once
# against a build with line coverage and ASan + UBSan together, the valgrind memcheck suite
# against build/, the fuzz replay, a short fuzzing run and the Debian package. `make test` and
# `.ci/run` run this.
#
# The main suite runs once (scripts/coverage.sh): a build instrumented for coverage and for
# both sanitizers proves both in one run. Its time is gVisor's, not the daemon's code, so a
# second run against another build adds the whole duration again (that took CI past its hour).
# build/ is still built (warnings are errors, hardened flags) and runs what a sanitized binary
# cannot: valgrind. Each step says how long it took, so a CI run that nears its hour shows where
# the time went. `make test-sanitize` (a sanitizer build without coverage) stays for developers.
#
# Where only the end of a CI log is kept, the end must say what broke: every step is named when
# it starts, and a failure ends with the step that failed, the suites that failed in it and the
# last lines of each failing suite's own output (from meson's testlog.json).
set -uo pipefail
cd "$(dirname "$0")/.."

MAKE=${MAKE:-make}
started=$(date +%s)
step=""

# The failed tests of a meson build: name, result, and the tail of their output.
failed_suites() {
    local log=$1/meson-logs/testlog.json
    [ -f "$log" ] || { echo "  (no $log: meson did not get as far as running tests)"; return; }
    python3 - "$log" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        t = json.loads(line)
    except ValueError:
        continue
    if t.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
        continue
    print("  FAILED %s (%s, %.1f s)" % (t.get("name"), t.get("result"), t.get("duration") or 0))
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    lines = out.splitlines()
    # TAP's "not ok" lines first (they name the case), then the last lines of the output.
    bad = [l for l in lines if l.startswith("not ok")]
    for l in bad[:20]:
        print("    " + l[:300])
    for l in lines[-40:]:
        print("    | " + l[:300])
PY
}

run_step() {
    step=$1
    shift
    printf '\n==== test-all: %s (%s)\n' "$step" "$*"
    local t0
    t0=$(date +%s)
    "$@"
    local rc=$?
    printf '==== test-all: step "%s" took %d s (%d s since the start)\n' \
        "$step" $(($(date +%s) - t0)) $(($(date +%s) - started))
    if [ $rc -ne 0 ]; then
        printf '\n==== test-all: FAILED at step "%s" (exit %d after %d s): %s\n' \
            "$step" "$rc" $(($(date +%s) - started)) "$*"
        case "$step" in
            "main suite: coverage, ASan+UBSan") failed_suites "${BUILD_COV:-build-cov}" ;;
            "valgrind memcheck") failed_suites "${BUILD:-build}" ;;
            "fuzz replay") failed_suites "${BUILD_FUZZ:-build-fuzz}" ;;
        esac
        printf '==== test-all: FAILED at step "%s"\n' "$step"
        exit $rc
    fi
}

run_step "setup" bash scripts/setup.sh
run_step "build" $MAKE --no-print-directory build
run_step "main suite: coverage, ASan+UBSan" env BUILD_COV="${BUILD_COV:-build-cov}" \
    bash scripts/coverage.sh
run_step "valgrind memcheck" meson test -C "${BUILD:-build}" --print-errorlogs --suite memcheck
run_step "fuzz replay" $MAKE --no-print-directory test-fuzz-replay
run_step "fuzzing" $MAKE --no-print-directory test-fuzz-run
run_step "Debian package" bash scripts/package-test.sh
printf '\n==== test-all: every step passed in %d s\n' $(($(date +%s) - started))
# The coverage numbers (printed after the main suite) again, where the end of the log shows them.
printf '\n==== test-all: line coverage of the main suite\n'
cat "${BUILD_COV:-build-cov}/coverage-summary.txt"
# One closing line over the three meson runs (the main suite, memcheck, the fuzz replay).
python3 - "${BUILD_COV:-build-cov}" "${BUILD:-build}" \
    "${BUILD_FUZZ:-build-fuzz}" <<'PY'
import json, sys
ok = bad = skip = 0
for b in sys.argv[1:]:
    for line in open(b + "/meson-logs/testlog.json", errors="replace"):
        try:
            r = json.loads(line).get("result")
        except ValueError:
            continue
        if r in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r == "SKIP":
            skip += 1
        else:
            bad += 1
print("test-all: %d passed, %d failed, %d skipped" % (ok, bad, skip))
sys.exit(1 if bad or not ok else 0)
PY
