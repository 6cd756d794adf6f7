#!/usr/bin/env python3
"""Sandbox creation through the daemon from its warm pool, cold through the daemon, and the raw
Docker API's create + start, interleaved round by round in one run; and the first command in
each (`true`: through the API, or a raw docker exec), which is what an agent waits for before
its first result; and a second command in the pooled sandbox, the baseline its first command is
held to (issue #15: the first at most 5 ms slower at p50).

usage: bench_pool.py PATH/TO/clearing [--rounds N] [--pool N] [--json]
Needs root, dockerd with runsc, CLEARING_AGENT. Prints p50/p95/p99 in ms and BENCH lines.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402
from clearing_test import api as call  # noqa: E402


def pct(v, p):
    s = sorted(v)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def first_exec(sock, sid):
    t = time.perf_counter()
    st, r = call(sock, "POST", "/v1/sandboxes/%s/exec" % sid, {"argv": ["true"]})
    assert st == 200 and r["result"]["status"] == "exited", r
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clearing")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="clearing-bench-pool-")
    sock = os.path.join(tmp, "c.sock")
    d = ct.spawn_daemon(a.clearing, os.path.join(tmp, "state"), sock, ["--pool", str(a.pool)],
                        stderr=open(os.path.join(tmp, "log"), "w"))
    res = {"pooled": [], "cold": [], "raw": [], "pooled_exec": [], "cold_exec": [],
           "raw_exec": [], "pooled_second_exec": []}
    try:
        ct.wait_for(lambda: os.path.exists(sock), 20, 0.1)
        for r in range(a.rounds):
            # pooled: wait until the pool is full, so every pooled create is a hit
            ct.wait_for(lambda: ct.metric(sock, "clearing_pool_ready") == a.pool, 30, 0.05)
            t = time.perf_counter()
            st, sb = call(sock, "POST", "/v1/sandboxes", {})
            res["pooled"].append((time.perf_counter() - t) * 1000)
            assert st == 201, sb
            res["pooled_exec"].append(first_exec(sock, sb["id"]))
            res["pooled_second_exec"].append(first_exec(sock, sb["id"]))
            call(sock, "DELETE", "/v1/sandboxes/" + sb["id"])
            # cold through the daemon: other limits are never pooled
            t = time.perf_counter()
            st, sb = call(sock, "POST", "/v1/sandboxes", {"limits": {"memory": "513m"}})
            res["cold"].append((time.perf_counter() - t) * 1000)
            assert st == 201, sb
            res["cold_exec"].append(first_exec(sock, sb["id"]))
            call(sock, "DELETE", "/v1/sandboxes/" + sb["id"])
            # raw docker: create + start of a plain runsc container
            t = time.perf_counter()
            st, c = call("/var/run/docker.sock", "POST", "/v1.41/containers/create",
                         {"Image": "clearing/default:latest", "Cmd": ["sleep", "infinity"],
                          "NetworkDisabled": True,
                          "HostConfig": {"Runtime": "runsc", "NetworkMode": "none"}})
            assert st == 201, c
            st, _ = call("/var/run/docker.sock", "POST", "/v1.41/containers/%s/start" % c["Id"])
            res["raw"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            ct.docker_exec(c["Id"], ["true"], "/v1.41")
            res["raw_exec"].append((time.perf_counter() - t) * 1000)
            call("/var/run/docker.sock", "DELETE", "/v1.41/containers/%s?force=1" % c["Id"])
            print("round %d/%d" % (r + 1, a.rounds), file=sys.stderr)
        hits = ct.metric(sock, "clearing_pool_hits_total")
    finally:
        d.terminate()
        d.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    out = {k: {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "n": len(v)}
           for k, v in res.items()}
    out["pool_hits"] = hits
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for title, suffix, raw_label in (("create (ms)", "", "raw docker create+start"),
                                     ("first command (ms)", "_exec", "raw docker exec")):
        print("%-24s |    p50 |    p95 |    p99" % title)
        print("-------------------------+--------+--------+-------")
        for k, label in (("pooled", "clearing, warm pool"), ("cold", "clearing, cold"),
                         ("raw", raw_label)):
            o = out[k + suffix]
            print("%-24s | %6.1f | %6.1f | %6.1f" % (label, o["p50"], o["p95"], o["p99"]))
    o = out["pooled_second_exec"]
    print("%-24s | %6.1f | %6.1f | %6.1f" % ("second command, pooled", o["p50"], o["p95"], o["p99"]))
    delta = out["pooled_exec"]["p50"] - o["p50"]
    print("pool hits: %d of %d pooled creates; cold/raw p50 ratio %.2f" %
          (hits or 0, a.rounds, out["cold"]["p50"] / out["raw"]["p50"]))
    print("first command after a pooled create - second command, p50: %+.1f ms (target <= 5 ms: %s)"
          % (delta, "met" if delta <= 5 else "NOT met"))
    for k in ("pooled", "cold", "raw"):
        o = out[k]
        print("BENCH pool op=create_%s p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f n=%d" %
              (k, o["p50"], o["p95"], o["p99"], o["n"]))
        o = out[k + "_exec"]
        print("BENCH pool op=first_exec_%s p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f n=%d" %
              (k, o["p50"], o["p95"], o["p99"], o["n"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
