#!/usr/bin/env python3
"""Checks that docs/openapi.yaml and the real daemon agree.

For every documented operation, a call with placeholder ids must be routed (the router's own
"no such endpoint" answer is a failure) and answer one of the documented statuses, with error
bodies of the documented shape. For every documented path, the undocumented methods must be
refused as methods (405): they are tried on a sandbox, exec, process and file that exist (each
shown to exist first), so a 404 can only mean the path was not routed, and it fails.
Usage: test_openapi.py PATH/TO/clearing PATH/TO/openapi.yaml
"""
import json
import os
import shutil
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from clearing_test import request, spawn_daemon, wait_answering  # noqa: E402
import clearing_test as ct  # noqa: E402

CLEARING, SPEC = sys.argv[1], sys.argv[2]
METHODS = ["get", "post", "put", "delete", "patch"]
PLACEHOLDERS = {"id": "sb-00000000000000ff", "exec_id": "ex-0000000000000000",
                "proc_id": "pr-0000000000000000",
                "path": "nothing/here"}
# The file route takes any number of segments; "nothing/here" stands for a path.


def call(sock, method, path, body=None):
    """body: None, bytes (sent as they are), or a value sent as JSON."""
    kind = "application/octet-stream" if isinstance(body, bytes) else "application/json"
    r = request(sock, method.upper(), path, body, {"Content-Type": kind}, timeout=60)
    return r.status, r.body


def concrete(path, ids):
    for k, v in ids.items():
        path = path.replace("{" + k + "}", v)
    return path


def error_problems(raw, codes):
    try:
        e = json.loads(raw)["error"]
        if e["code"] not in codes or not e["message"]:
            return [f"error body off: {e}"]
        if "no such endpoint" in e["message"]:
            return ["not routed: " + e["message"]]
    except (ValueError, KeyError, TypeError):
        return [f"error body is not the Error schema: {raw[:200]!r}"]
    return []


def real_resources(sock, created):
    """A sandbox with an exec, a background process and a file: what the undocumented methods
    are tried on. Returns (placeholder values, problems)."""
    status, raw = call(sock, "post", "/v1/sandboxes", {})
    if status != 201:
        return None, [f"create answered {status}: {raw[:200]!r}"]
    sid = json.loads(raw)["id"]
    created.append(sid)
    ids = {"id": sid, "path": "probe.txt"}
    status, raw = call(sock, "post", f"/v1/sandboxes/{sid}/exec", {"argv": ["true"]})
    if status != 200:
        return None, [f"exec answered {status}: {raw[:200]!r}"]
    ids["exec_id"] = json.loads(raw)["id"]
    status, raw = call(sock, "post", f"/v1/sandboxes/{sid}/processes",
                       {"argv": ["sleep", "3600"]})
    if status != 201:
        return None, [f"process start answered {status}: {raw[:200]!r}"]
    ids["proc_id"] = json.loads(raw)["id"]
    status, raw = call(sock, "put", f"/v1/sandboxes/{sid}/files/probe.txt", b"probe\n")
    if status != 201:
        return None, [f"file upload answered {status}: {raw[:200]!r}"]
    return ids, []


def main():
    spec = yaml.safe_load(open(SPEC))
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    tmp = tempfile.mkdtemp(prefix="clearing-openapi-")
    sock = os.path.join(tmp, "c.sock")
    d = spawn_daemon(CLEARING, os.path.join(tmp, "state"), sock,
                     stderr=open(os.path.join(tmp, "log"), "w"))
    passed = failed = 0
    created = []

    def report(name, problems):
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"not ok - {name}: " + "; ".join(problems))
        else:
            passed += 1
            print(f"ok - {name}")

    ct.check_answers(SPEC, raises=False)
    try:
        if not wait_answering(sock, d, 60):
            report("the daemon answers /v1/health", [f"not within 60 s; log in {tmp}/log"])
            return 1
        # Documented operations, on placeholder ids.
        for path, item in spec["paths"].items():
            for m in METHODS:
                op = item.get(m)
                if op is None:
                    continue
                status, raw = call(sock, m, concrete(path, PLACEHOLDERS),
                                   {} if m in ("post", "put") else None)
                problems = []
                documented = {int(s) for s in op["responses"]}
                if status not in documented:
                    problems.append(f"status {status} not in documented {sorted(documented)}")
                if status >= 400:
                    problems += error_problems(raw, codes)
                if status == 201 and path == "/v1/sandboxes":
                    created.append(json.loads(raw)["id"])
                report(f"{m.upper()} {path} ({status})", problems)

        # Undocumented methods, on resources that exist: shown first by a GET of each.
        ids, problems = real_resources(sock, created)
        report("a sandbox with an exec, a process and a file to probe", problems)
        if ids is None:
            return 1
        for what, path in (("sandbox", "/v1/sandboxes/{id}"),
                           ("exec", "/v1/sandboxes/{id}/execs/{exec_id}"),
                           ("process", "/v1/sandboxes/{id}/processes/{proc_id}"),
                           ("file", "/v1/sandboxes/{id}/files/{path}")):
            status, raw = call(sock, "get", concrete(path, ids))
            report(f"the probed {what} exists (GET {path}: {status})",
                   [] if status == 200 else [f"answered {status}: {raw[:200]!r}"])
        for path, item in spec["paths"].items():
            for m in METHODS:
                if m in item:
                    continue
                status, raw = call(sock, m, concrete(path, ids),
                                   {} if m in ("post", "put") else None)
                problems = []
                if status != 405:
                    problems.append(f"undocumented method answered {status}, not 405: "
                                    f"{raw[:200]!r}")
                else:
                    problems += error_problems(raw, codes)
                report(f"{m.upper()} {path} refused ({status})", problems)
        # The probes changed nothing: the sandbox still runs.
        status, raw = call(sock, "get", concrete("/v1/sandboxes/{id}", ids))
        state = json.loads(raw).get("state") if status == 200 else None
        report("the probed sandbox still runs", [] if state == "running" else
               [f"answered {status}: {raw[:200]!r}"])
        ok, summary = ct.answer_check_summary()
        report("every answer matches docs/openapi.yaml: " + summary.splitlines()[0],
               [] if ok else summary.splitlines()[1:])
    finally:
        for sid in created:
            call(sock, "delete", f"/v1/sandboxes/{sid}?wait=true")
        d.terminate()
        d.wait(timeout=30)
        if failed:
            print(f"# daemon log and state kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
