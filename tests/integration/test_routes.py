#!/usr/bin/env python3
"""The HTTP route table (src/routes.c) against docs/openapi.yaml, and the router's own answers.

  test_routes.py table CLEARING OPENAPI   every route of the table is documented and every
                                          documented operation is a route; a documented request
                                          body is one the route reads, of the same kind
  test_routes.py answers CLEARING         a daemon's answers to what the table does not have:
                                          unknown paths, bad ids, methods, bodies, long paths

The table is read from the binary (`clearing serve --print-routes`), not from a copy. TAP output.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.dont_write_bytecode = True
from clearing_test import request, spawn_daemon, stop_process, wait_answering  # noqa: E402
import clearing_test as ct  # noqa: E402

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
SID = "sb-00000000000000ff"

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok - " if ok else "not ok - ") + name + ("" if ok or not detail else ": " + detail))


def table(clearing):
    p = subprocess.run([clearing, "serve", "--print-routes"], capture_output=True, text=True,
                       timeout=60)
    check("clearing serve --print-routes runs", p.returncode == 0, p.stderr)
    routes = {}
    for line in p.stdout.splitlines():
        method, path, body = line.split(" ")
        routes[(method, path)] = body
    return routes


def test_table(clearing, spec_path):
    import yaml
    spec = yaml.safe_load(open(spec_path))
    documented = {}
    for path, item in spec["paths"].items():
        for m in METHODS:
            if m in item:
                documented[(m.upper(), path)] = item[m]
    routes = table(clearing)
    # Positive controls: both sides were read, and hold what every version of the API has.
    check("the table has routes, among them GET /v1/health",
          len(routes) > 10 and ("GET", "/v1/health") in routes, repr(sorted(routes)[:5]))
    check("the document has operations, among them GET /v1/health",
          len(documented) > 10 and ("GET", "/v1/health") in documented)
    for key in sorted(routes):
        check(f"route {key[0]} {key[1]} is documented", key in documented)
    for key in sorted(documented):
        check(f"documented {key[0]} {key[1]} is a route", key in routes)
    for key, op in sorted(documented.items()):
        if "requestBody" not in op or key not in routes:
            continue
        kinds = op["requestBody"].get("content", {})
        want = "json" if "application/json" in kinds else "upload"
        check(f"{key[0]} {key[1]} reads its documented body ({want})", routes[key] == want,
              f"the table says {routes[key]}")


def call(sock, method, path, body=None):
    """(status, the error object of a JSON answer or {}, the Allow header); the body is sent as
    it is, with no Content-Type."""
    r = request(sock, method, path, body, timeout=60, json_type=False)
    err = r.json.get("error", {}) if isinstance(r.json, dict) else {}
    return r.status, err, r.headers.get("Allow")


def test_answers(clearing):
    tmp = tempfile.mkdtemp(prefix="clearing-routes-")
    sock = os.path.join(tmp, "c.sock")
    ct.check_answers(raises=False)
    d = spawn_daemon(clearing, os.path.join(tmp, "state"), sock,
                     stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        up = wait_answering(sock, d, 60)
        check("the daemon answers GET /v1/health", up, f"log in {tmp}/log")
        if not up:
            return
        answers(sock)
        ok, summary = ct.answer_check_summary()
        check("every answer matches docs/openapi.yaml: " + summary.splitlines()[0], ok, summary)
    finally:
        stop_process(d)
        if all(results):
            shutil.rmtree(tmp, ignore_errors=True)


def answers(sock):
    def expect(name, method, path, status, message=None, allow=None, body=None):
        got, err, got_allow = call(sock, method, path, body)
        ok = got == status and (message is None or message in err.get("message", "")) and \
            (allow is None or got_allow == allow)
        check(f"{name}: {method} {path[:60]} -> {status}", ok,
              f"got {got} {err} Allow={got_allow}")

    # Routed: a sandbox that does not exist is the service's 404, not the router's.
    got, err, _ = call(sock, "GET", f"/v1/sandboxes/{SID}")
    check("a routed request reaches the service (its own 404)",
          got == 404 and "no such endpoint" not in err.get("message", ""), f"{got} {err}")
    expect("outside /v1", "GET", "/nothing", 404, "the API lives under /v1")
    expect("unknown path", "GET", "/v1/nothing", 404, "see docs/openapi.yaml")
    expect("unknown sandbox sub-path", "GET", f"/v1/sandboxes/{SID}/nothing", 404,
           "see docs/openapi.yaml")
    expect("bad id", "GET", "/v1/sandboxes/..%2Fx/exec", 400, "not a sandbox id")
    expect("bad id in a file path", "GET", "/v1/sandboxes/nope/files/a/b", 400,
           "not a sandbox id")
    expect("id too long in a file path", "GET", "/v1/sandboxes/" + "a" * 40 + "/files/a", 400,
           "not a sandbox id")
    expect("wrong method", "PUT", "/v1/sandboxes", 405, "allowed: GET, POST", "GET, POST")
    expect("wrong method on an id", "POST", f"/v1/sandboxes/{SID}", 405, None, "GET, DELETE")
    expect("wrong method on /metrics", "POST", "/metrics", 405, None, "GET")
    expect("wrong method on a file", "POST", f"/v1/sandboxes/{SID}/files/a", 405,
           "files take GET, PUT or DELETE")
    expect("a body where the route reads none", "GET", "/v1/sandboxes", 400,
           "takes no request body", body=b"{}")
    # One segment more than the longest route: not that route with a tail ignored.
    expect("a path longer than every route", "GET",
           f"/v1/sandboxes/{SID}/processes/pr-0000000000000000/output/extra", 404,
           "no such endpoint")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("table", "answers"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "table":
        test_table(sys.argv[2], sys.argv[3])
    else:
        test_answers(sys.argv[2])
    print(f"1..{len(results)}")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
