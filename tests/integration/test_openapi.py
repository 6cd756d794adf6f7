#!/usr/bin/env python3
"""Checks that docs/openapi.yaml and the real daemon agree.

For every documented operation, a call with placeholder ids must be routed (the router's own
"no such endpoint" answer is a failure) and answer one of the documented statuses, with error
bodies of the documented shape. For every documented path, the undocumented methods must be
refused by the router. Usage: test_openapi.py PATH/TO/clearing PATH/TO/openapi.yaml
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import yaml

CLEARING, SPEC = sys.argv[1], sys.argv[2]
METHODS = ["get", "post", "put", "delete", "patch"]
PLACEHOLDERS = {"id": "sb-00000000000000ff", "exec_id": "ex-0000000000000000",
                "proc_id": "pr-0000000000000000",
                "path": "nothing/here"}
# The file route takes any number of segments; "nothing/here" stands for a path.


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def call(sock, method, path, body=None):
    c = UnixConnection(sock)
    data = json.dumps(body).encode() if body is not None else None
    c.request(method.upper(), path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, raw


def main():
    spec = yaml.safe_load(open(SPEC))
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    tmp = tempfile.mkdtemp(prefix="clearing-openapi-")
    sock = os.path.join(tmp, "c.sock")
    d = subprocess.Popen([CLEARING, "--state-dir", os.path.join(tmp, "state"), "serve",
                          "--socket", sock], stderr=open(os.path.join(tmp, "log"), "w"))
    passed = failed = 0
    created = []
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        for path, item in spec["paths"].items():
            concrete = path
            for k, v in PLACEHOLDERS.items():
                concrete = concrete.replace("{" + k + "}", v)
            for m in METHODS:
                op = item.get(m)
                status, raw = call(sock, m, concrete, {} if m in ("post", "put") else None)
                name = f"{m.upper()} {path}"
                problems = []
                if op is None:
                    if status not in (404, 405):
                        problems.append(f"undocumented method answered {status}")
                else:
                    documented = {int(s) for s in op["responses"]}
                    if status not in documented:
                        problems.append(f"status {status} not in documented {sorted(documented)}")
                    if status >= 400:
                        try:
                            e = json.loads(raw)["error"]
                            if e["code"] not in codes or not e["message"]:
                                problems.append(f"error body off: {e}")
                            if "no such endpoint" in e["message"]:
                                problems.append("not routed: " + e["message"])
                        except (ValueError, KeyError, TypeError):
                            problems.append(f"error body is not the Error schema: {raw[:200]!r}")
                    if status == 201 and path == "/v1/sandboxes":
                        created.append(json.loads(raw)["id"])
                if problems:
                    failed += 1
                    print(f"not ok - {name}: " + "; ".join(problems))
                else:
                    passed += 1
                    print(f"ok - {name} ({status})")
    finally:
        for sid in created:
            call(sock, "delete", f"/v1/sandboxes/{sid}")
        d.terminate()
        d.wait(timeout=30)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
