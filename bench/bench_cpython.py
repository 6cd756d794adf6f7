#!/usr/bin/env python3
"""A real workload: a fixed subset of CPython's own test suite (Debian's libpython3.11-testsuite,
image clearing/cpython-tests) run in a clearing sandbox (`clearing run`, gVisor with clearing's
runsc flags) and in a plain runc container with the same image and limits, interleaved round by
round in one run. Reports the median wall time of each side and the ratio to runc.

usage: bench_cpython.py PATH/TO/clearing [--rounds N] [--quick] [--runtimes RT,RT] [--json]
Needs root, dockerd with runsc, CLEARING_AGENT. --runtimes adds `docker run --runtime=RT` sides
with the same limits (e.g. `runsc` alone, to separate clearing's own cost from gVisor's, or an
experimental runsc registration, see docs/PERFORMANCE.md).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

IMAGE = "clearing/cpython-tests:latest"

# 49 modules that pass under runc and under gVisor: the language core, the data structures, text
# and numbers, and the file-heavy ones (tempfile, pathlib, zipfile, tarfile, gzip, os). Left out,
# each for a reason that is not gVisor's:
#   test_io, test_logging  ~30 s and ~20 s of mostly sleeps and timeouts: wall clock, not work
#   test_subprocess        ~23 s, mostly sleeps; 2 errors under runc too (the container's limits)
#   test_pickle, test_shutil  fail under runc too (read-only root, no capabilities)
MODULES = """
test_json test_re test_string test_list test_dict test_set test_itertools test_collections
test_functools test_statistics test_textwrap test_difflib test_csv test_base64 test_struct
test_math test_fractions test_heapq test_bisect test_enum test_dataclasses test_datetime test_ast
test_grammar test_sort test_decimal test_tempfile test_glob test_pathlib test_zipfile test_tarfile
test_gzip test_fileio test_os test_unicode test_bytes test_argparse test_configparser test_email
test_marshal test_operator test_random test_zlib test_hashlib test_typing test_inspect
test_tokenize test_compile test_exceptions
""".split()
QUICK_MODULES = "test_json test_string test_bisect test_heapq test_glob test_base64".split()

# The limits of both sides. clearing's defaults are 1 core and 512 MiB; the suite's temporary
# files live in /tmp (regrtest's work directory), which inside gVisor is memory of the sandbox.
# The CPU quota (--cpus) covers gVisor's own work too: the sentry and the gofer run in the
# container's cgroup.
CPUS, MEMORY, TMP = "1", "1g", "256m"


def set_cpus(cpus):
    global CPUS
    CPUS = cpus


def suite_cmd(modules):
    return ["python3", "-m", "test", "-j1", *modules]


def docker_cmd(runtime, name, modules):
    # The hardened parts of clearing's container spec that matter to a workload (lib/sandbox.c):
    # no network, read-only root, no capabilities, no-new-privileges, the same limits, an
    # unprivileged user, a tmpfs /tmp and a tmpfs /workspace as the working directory.
    return ["docker", "run", "--rm", "--name", name, "--runtime", runtime, "--network", "none",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--cpus", CPUS, "--memory", MEMORY, "--memory-swap", MEMORY,
            "--tmpfs", f"/tmp:rw,nosuid,nodev,noexec,size={TMP},mode=1777",
            "--tmpfs", "/workspace:rw,nosuid,nodev,size=1g,mode=1777",
            "--user", "1000:1000", "-w", "/workspace", IMAGE, *suite_cmd(modules)]


def clearing_cmd(clearing, state, modules):
    return [clearing, "--state-dir", state, "run", "--image", IMAGE, "--cpus", CPUS,
            "--memory", MEMORY, "--tmp-size", TMP, "--timeout", "15m", "--lifetime", "20m",
            "--", *suite_cmd(modules)]


def run_once(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t
    ok = p.returncode == 0 and "Tests result: SUCCESS" in p.stdout
    m = re.search(r"Total duration: (?:(\d+) min )?([\d.]+) (?:sec|ms)", p.stdout)
    suite = None
    if m:
        suite = int(m.group(1) or 0) * 60 + float(m.group(2))
        if "ms" in m.group(0).split()[-1]:
            suite /= 1000
    return ok, wall, suite, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clearing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 round of 6 small modules")
    ap.add_argument("--runtimes", default="", help="extra docker runtimes, comma-separated")
    ap.add_argument("--cpus", default=CPUS, help="CPU quota of both sides (default 1)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    set_cpus(a.cpus)
    if os.geteuid() != 0:
        sys.exit("bench_cpython: needs root (clearing mounts a tmpfs workspace)")
    modules = QUICK_MODULES if a.quick else MODULES
    rounds = 1 if a.quick else a.rounds
    here = os.path.dirname(os.path.abspath(__file__))
    # Built on demand, not by scripts/setup.sh: a no-op (a re-tag) when the recipe is unchanged.
    if subprocess.run([os.path.join(here, "..", "images", "build.sh"), "cpython-tests"],
                      stdout=sys.stderr).returncode != 0:
        sys.exit(2)
    sides = ["clearing", "runc"] + [r for r in a.runtimes.split(",") if r]
    tmp = tempfile.mkdtemp(prefix="clearing-bench-cpython-")
    state = os.path.join(tmp, "state")
    res = {s: {"wall": [], "suite": [], "failed": 0} for s in sides}
    names = []
    try:
        for r in range(rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for s in order:
                if s == "clearing":
                    cmd = clearing_cmd(a.clearing, state, modules)
                else:
                    names.append(f"clearing-bench-cpython-{os.getpid()}-{len(names)}")
                    cmd = docker_cmd(s, names[-1], modules)
                ok, wall, suite, p = run_once(cmd)
                print(f"round {r + 1}/{rounds} {s}: {wall:.1f} s"
                      f" (suite {suite if suite is not None else '-'} s){'' if ok else ' FAILED'}",
                      file=sys.stderr)
                if not ok:
                    res[s]["failed"] += 1
                    print(p.stdout[-3000:], file=sys.stderr)
                    continue
                res[s]["wall"].append(wall)
                if suite is not None:
                    res[s]["suite"].append(suite)
    finally:
        for n in names:
            subprocess.run(["docker", "rm", "-f", n], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        subprocess.run([a.clearing, "--state-dir", state, "gc"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(v):
        return statistics.median(v) if v else None

    base = med(res["runc"]["wall"])
    out = {"modules": modules, "rounds": rounds, "cpus": CPUS, "memory": MEMORY, "sides": {}}
    for s in sides:
        m = med(res[s]["wall"])
        out["sides"][s] = {"wall_s": res[s]["wall"], "suite_s": res[s]["suite"],
                           "median_wall_s": m, "median_suite_s": med(res[s]["suite"]),
                           "failed": res[s]["failed"],
                           "ratio": (m / base) if m and base else None}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
        print(f"CPython test suite, {len(modules)} modules, -j1, {CPUS} core, {MEMORY}, "
              f"{rounds} round(s), medians")
        print("side                 |  wall s | suite s |  min s |  max s | vs runc")
        print("---------------------+---------+---------+--------+--------+--------")
        for s in sides:
            o, w = out["sides"][s], res[s]["wall"]
            print(f"{s:<20} | {f(o['median_wall_s']):>7} | {f(o['median_suite_s']):>7} | "
                  f"{f(min(w) if w else None):>6} | {f(max(w) if w else None):>6} | "
                  f"{f(o['ratio'], 2) + 'x' if o['ratio'] else '-':>7}")
        print()
        for s in sides:
            o = out["sides"][s]
            print(f"BENCH cpython side={s} median_wall_s={f(o['median_wall_s'], 2)} "
                  f"median_suite_s={f(o['median_suite_s'], 2)} ratio={f(o['ratio'], 3)} "
                  f"n={len(res[s]['wall'])} failed={o['failed']} modules={len(modules)}")
    sys.exit(1 if any(res[s]["failed"] for s in sides) else 0)


if __name__ == "__main__":
    main()
