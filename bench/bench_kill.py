#!/usr/bin/env python3
"""How long the end of a timed-out command takes: a fork bomb against a tree of the same number
of idle processes (the baseline, in the same sandbox and run), interleaved round by round. The
time counted is the client's, from the request to the answer, less the command's timeout: the
agent's kill of the tree (kill_tree in agent/supervise.c) and the answer's way back. A kill that
takes longer than the daemon's grace ends the sandbox instead (sandbox_killed): counted apart.

usage: bench_kill.py PATH/TO/clearing [--rounds N] [--pids N] [--timeout-ms N] [--json]
         [--agent PATH]...   (several: the same rounds against each agent, one daemon each)
Needs root, dockerd with runsc. Prints p50/p95 in ms, the ratio to the baseline, BENCH lines.
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

BOMB = "bomb() { bomb | bomb & }; bomb; sleep 1000"


def idle_tree(n):
    """n processes in all, the shell included, idle when the timeout comes."""
    return ("i=1; while [ $i -lt %d ]; do sleep 1000 & i=$((i+1)); done; sleep 1000" % n)


def pct(v, p):
    s = sorted(v)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))] if s else 0


def one(sock, sid, shell, timeout_ms):
    """(ms past the timeout, killed processes, the sandbox was killed)."""
    t = time.perf_counter()
    st, r = call(sock, "POST", "/v1/sandboxes/%s/exec" % sid,
                 {"shell": shell, "timeout": "%dms" % timeout_ms}, timeout=600)
    ms = (time.perf_counter() - t) * 1000 - timeout_ms
    assert st == 200, (st, r)
    res = r["result"]
    assert res["status"] in ("timed_out", "sandbox_failed"), res
    return ms, res.get("killed_processes", 0), bool(res.get("sandbox_killed"))


def run_agent(clearing, agent, rounds, pids, timeout_ms):
    tmp = tempfile.mkdtemp(prefix="clearing-bench-kill-")
    sock = os.path.join(tmp, "c.sock")
    env = dict(os.environ, CLEARING_AGENT=agent)
    d = ct.spawn_daemon(clearing, os.path.join(tmp, "state"), sock, [], env=env,
                        stderr=open(os.path.join(tmp, "log"), "w"))
    res = {"bomb": [], "idle": [], "bomb_killed": [], "idle_killed": [], "sandbox_killed": 0}
    try:
        ct.wait_for(lambda: os.path.exists(sock), 20, 0.1)
        sid = None
        for r in range(rounds):
            if sid is None:
                st, sb = call(sock, "POST", "/v1/sandboxes",
                              {"limits": {"pids": pids, "memory": "1g"}})
                assert st == 201, sb
                sid = sb["id"]
                st, r0 = call(sock, "POST", "/v1/sandboxes/%s/exec" % sid, {"argv": ["true"]})
                assert st == 200 and r0["result"]["status"] == "exited", r0
            for kind, shell in (("idle", idle_tree(pids // 2)), ("bomb", BOMB)):
                ms, killed, sb_killed = one(sock, sid, shell, timeout_ms)
                if sb_killed:
                    res["sandbox_killed"] += 1
                    call(sock, "DELETE", "/v1/sandboxes/" + sid)
                    sid = None
                    break
                res[kind].append(ms)
                res[kind + "_killed"].append(killed)
            print("%s: round %d/%d" % (os.path.basename(agent), r + 1, rounds), file=sys.stderr)
        if sid:
            call(sock, "DELETE", "/v1/sandboxes/" + sid)
    finally:
        d.terminate()
        d.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clearing")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--pids", type=int, default=128)
    ap.add_argument("--timeout-ms", type=int, default=2000)
    ap.add_argument("--agent", action="append")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    agents = a.agent or [os.environ.get("CLEARING_AGENT") or ct.default_agent(a.clearing)]
    out = {}
    for agent in agents:
        res = run_agent(a.clearing, os.path.abspath(agent), a.rounds, a.pids, a.timeout_ms)
        o = {k: {"p50": pct(res[k], 50), "p95": pct(res[k], 95), "n": len(res[k])}
             for k in ("bomb", "idle")}
        o["bomb_killed_p50"] = pct(res["bomb_killed"], 50)
        o["idle_killed_p50"] = pct(res["idle_killed"], 50)
        o["sandbox_killed"] = res["sandbox_killed"]
        o["ratio_p50"] = o["bomb"]["p50"] / o["idle"]["p50"] if o["idle"]["p50"] > 0 else None
        out[agent] = o
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print("past the timeout (ms)   |    p50 |    p95 | killed p50 | agent")
    print("------------------------+--------+--------+------------+------")
    for agent, o in out.items():
        for k in ("idle", "bomb"):
            print("%-23s | %6.1f | %6.1f | %10d | %s" % (
                "fork bomb" if k == "bomb" else "idle tree of pids/2", o[k]["p50"], o[k]["p95"],
                o[k + "_killed_p50"], agent))
        print("fork bomb / idle tree, p50: %s; sandboxes killed by the backstop: %d" % (
            "%.2f" % o["ratio_p50"] if o["ratio_p50"] else "-", o["sandbox_killed"]))
        for k in ("idle", "bomb"):
            print("BENCH kill op=%s p50_ms=%.1f p95_ms=%.1f n=%d agent=%s" % (
                k, o[k]["p50"], o[k]["p95"], o[k]["n"], agent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
