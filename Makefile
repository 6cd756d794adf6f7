# The two entry points of the README. Both set up whatever is missing first (idempotent).
#   make run    set up, build, check the host, and run a real agent plan through a gVisor sandbox
#   make test   set up, build, and run the whole test suite (also under ASan+UBSan)
BUILD ?= build
BUILD_SAN ?= build-sanitize
BUILD_FUZZ ?= build-fuzz
BUILD_COV ?= build-cov
# No CLEARING_AGENT here: the build tree's clearing finds the build tree's agent by itself
# (lib/agent_locate.c), as it does in the user's shell after `make run`.

.PHONY: all setup build run install test test-sanitize test-fuzz test-fuzz-replay test-fuzz-run coverage clean

all: build

setup:
	bash scripts/setup.sh

build:
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) >/dev/null
	ninja -C $(BUILD)

run: setup build
	$(BUILD)/src/clearing doctor
	@echo '== main job: an agent plan on a sample repository, in a fresh gVisor sandbox on its own branch'
	@repo=$$(bash scripts/sample-repo.sh) && \
	  $(BUILD)/src/clearing plan run examples/plans/add-median.yaml --repo "$$repo" && \
	  echo '== a second plan with a bug: the gauntlet must fail it, with a readable report' && \
	  { $(BUILD)/src/clearing plan run examples/plans/buggy-mean.yaml --repo "$$repo"; \
	    status=$$?; [ $$status = 1 ] || { echo "expected verdict fail (exit 1), got $$status"; exit 1; }; } && \
	  echo "== branches of $$repo (the caller's checkout is untouched):" && \
	  git -C "$$repo" log --all --oneline --decorate && git -C "$$repo" status --short

# The CLI to <prefix>/bin, the agent to <prefix>/libexec/clearing, the library and headers
# (meson install; prefix /usr/local unless the build was set up with another). DESTDIR=/stage
# installs under /stage instead.
install: build
	meson install -C $(BUILD) --no-rebuild

# Step by step (setup, build, main suite, sanitizers, fuzz), naming the step that failed and the
# failing suites' output at the end of the log: scripts/test-all.sh.
test:
	BUILD=$(BUILD) BUILD_SAN=$(BUILD_SAN) BUILD_FUZZ=$(BUILD_FUZZ) BUILD_COV=$(BUILD_COV) \
	    MAKE="$(MAKE)" bash scripts/test-all.sh

# Line coverage of lib/, src/, agent/ (and per file) over the main suite, run against a
# -Db_coverage=true build with the agent's counters collected from inside the sandboxes:
# scripts/coverage.sh. Pass meson test arguments in COVERAGE_ARGS (e.g. --no-suite disruptive).
coverage:
	BUILD_COV=$(BUILD_COV) bash scripts/coverage.sh $(COVERAGE_ARGS)

# Under ASan+UBSan: every suite but memcheck (valgrind cannot run ASan binaries), the disruptive
# dockerd restart (already run once by `test`), and three whose C paths other suites drive here
# too: the in-sandbox tools (suite `tools`: clearing-pycheck and clearing-ruff, whose C side is
# the plan run `plans` drives), the Python client (`client`: the daemon's API, which `api` and
# the MCP suites drive) and the install layout (`packaging`: meson install and the binaries'
# --version). The code interpreter's side-by-side test runs 4 sessions, not 20: the same C
# paths, a fifth of the kernels. This keeps CI within its hour; the main suite runs all of it.
test-sanitize:
	@test -f $(BUILD_SAN)/build.ninja || meson setup $(BUILD_SAN) -Db_sanitize=address,undefined \
	    -Db_lundef=false -Doptimization=1 >/dev/null
	ninja -C $(BUILD_SAN)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp CODE_SESSIONS=4 \
	    meson test -C $(BUILD_SAN) --print-errorlogs --no-suite memcheck --no-suite disruptive \
	    --no-suite tools --no-suite client --no-suite packaging

# libFuzzer harnesses (fuzz/, clang): every seed and past crash once, then 15 s of fuzzing per
# harness from the seeds in a scratch directory; a crash fails the target. Long runs: bench/fuzz.sh.
test-fuzz: test-fuzz-replay test-fuzz-run

test-fuzz-replay:
	@test -f $(BUILD_FUZZ)/build.ninja || CC=clang meson setup $(BUILD_FUZZ) -Dfuzzing=true >/dev/null
	ninja -C $(BUILD_FUZZ) $$(sed -n "s/^  '\([a-z_]*\)' : .*/fuzz\/fuzz_\1/p" fuzz/meson.build)
	meson test -C $(BUILD_FUZZ) --no-rebuild --print-errorlogs --suite fuzz

test-fuzz-run:
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT && \
	  BUILD_FUZZ=$(BUILD_FUZZ) FUZZ_WORK=$$work bench/fuzz.sh 15

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) $(BUILD_COV)
