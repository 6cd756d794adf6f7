#!/usr/bin/env python3
"""Writes the hand-made seed corpora in fuzz/corpus/<harness>/ (run from anywhere; idempotent).

Seeds are small valid inputs (plus a few near misses) so that every harness starts inside the
parser instead of at its first byte check. Binary seeds are built here rather than checked in
by hand; the output is checked in, so the fuzz build needs no Python."""
import hashlib, io, json, os, struct, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- API request bodies: "<kind>\n<json>" ----
api = {
    "create-minimal": ("create", {}),
    "create-full": ("create", {"image": "clearing/python:1", "idle_timeout": "5m",
                               "limits": {"cpus": 0.5, "memory": "512m", "pids": 128,
                                          "lifetime": "1h", "tmp_size": "64m",
                                          "workspace_size": "1g", "workspace_inodes": 100000,
                                          "nofile": 1024, "file_size": "100m"},
                               "env": {"A": "1", "PATH": "/usr/bin:/bin"},
                               "metadata": {"task": "t-1"},
                               "repo": {"path": "/srv/repos/x", "base": "main",
                                        "branch": "agent/x", "reuse_branch": False}}),
    "create-cpus-string": ("create", {"limits": {"cpus": "2", "memory": 1073741824,
                                                 "lifetime": 3600}}),
    "exec-argv": ("exec", {"argv": ["python3", "-c", "print(1)"], "cwd": "/workspace",
                           "timeout": "30s", "stdout_cap": "1m", "stderr_cap": 4096,
                           "env": {"X": "y"}}),
    "exec-shell-stdin": ("exec", {"shell": "cat", "stdin": "hello\n"}),
    "exec-stdin-base64": ("exec", {"shell": "wc -c", "stdin_base64": "AAEC/w=="}),
    "process": ("process", {"argv": ["sleep", "100"], "stdin_base64": "aGk="}),
    "extend": ("extend", {"by": "10m"}),
    "extend-seconds": ("extend", {"by": 600}),
    "restore": ("restore", {"snapshot": "snap-0123456789abcdef"}),
    "stdin": ("stdin", {"data": "line\n", "eof": True}),
    "stdin-base64": ("stdin", {"data_base64": "AP8=", "eof": False}),
    "signal-name": ("signal", {"signal": "SIGTERM"}),
    "signal-number": ("signal", {"signal": 9}),
    "commit": ("commit", {"message": "Add x", "author_name": "Agent",
                          "author_email": "a@example.org",
                          "trailers": ["Co-authored-by: X <x@example.org>"]}),
    "plan-object": ("plan", {"repo": "/srv/repos/x", "profile": "python",
                             "plan": {"message": "m", "steps": [
                                 {"write": {"path": "a.py", "content": "x = 1\n"}},
                                 {"run": {"argv": ["python3", "a.py"], "timeout": "10s"}}]}}),
    "plan-yaml": ("plan", {"repo": "/srv/repos/x",
                           "plan": "steps:\n  - run:\n      shell: make test\n"}),
    "plan-gauntlet-only": ("plan", {"repo": "/srv/repos/x", "gauntlet_only": True,
                                    "base": "main"}),
}
for name, (kind, body) in api.items():
    put("api_request", name, kind + "\n" + json.dumps(body))


# ---- Docker stream demux: first byte picks the slicing ----
def demux_frame(stream, data):
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data

put("demux", "out-err", b"\x03" + demux_frame(1, b"hello\n") + demux_frame(2, b"oops\n"))
put("demux", "stdin-echo-empty", b"\x00" + demux_frame(0, b"in") + demux_frame(1, b"") +
    demux_frame(1, bytes(range(256))))
put("demux", "bad-header", b"\x05" + demux_frame(1, b"x") + b"\x03\x00\x00\x00\x00\x00\x00\x01z")


# ---- agent protocol (host side): frames; first byte picks the slicing ----
def tlv(tag, value):
    return struct.pack(">HI", tag, len(value)) + value

def u64(tag, n):
    return tlv(tag, struct.pack(">Q", n))

def frame(channel, ftype, payload):
    return struct.pack(">IIB3x", len(payload), channel, ftype) + payload

result = (u64(1, 1) + u64(2, 3) + u64(4, 12345) + u64(5, 100) + u64(6, 50) + u64(7, 1 << 20) +
          u64(8, 6) + u64(9, 0) + u64(10, 0) + u64(11, 1) + tlv(12, b"exited") + u64(13, 2) +
          tlv(99, b"future field"))
put("proto", "exec-session", b"\x02" + frame(1, 4, b"hello\n") + frame(1, 5, b"warn\n") +
    frame(1, 6, result))
put("proto", "result-oom", b"\x00" + frame(7, 6, u64(1, 4) + u64(7, 1 << 30)))
put("proto", "host-frames", b"\x01" + frame(1, 2, b"input") + frame(1, 3, b"") +
    frame(1, 8, struct.pack(">Q", 15)) + frame(1, 7, b""))


# ---- agent request decoder: one EXEC payload ----
req = (tlv(1, b"/bin/sh") + tlv(1, b"-c") + tlv(1, b"echo $A") + tlv(2, b"A=1") +
       tlv(3, b"/workspace") + u64(4, 5000) + u64(5, 1 << 20) + u64(6, 4096) + u64(7, 1000) +
       u64(8, 1000) + u64(9, 256) + u64(10, 512 << 20) + u64(11, 1024) + u64(12, 1 << 30) +
       u64(13, 1))
put("agent_request", "full", req)
put("agent_request", "minimal", tlv(1, b"true"))
put("agent_request", "root", tlv(1, b"id") + u64(7, 0))


# ---- plans (YAML and JSON) ----
for name in sorted(os.listdir(os.path.join(HERE, "..", "examples", "plans"))):
    with open(os.path.join(HERE, "..", "examples", "plans", name), "rb") as f:
        put("plan", name, f.read())
put("plan", "all-keys.yaml", """repo: /srv/repos/x
base: main
branch: agent/x
message: "m"
profile: c
image: clearing/c:1
commit_on_failure: false
limits: {cpus: 1.5, memory: 1g, pids: 64, lifetime: 30m, tmp_size: 16m, workspace_size: 256m}
steps:
  - write: {path: src/a.c, content: "int a;\\n", mode: "0644"}
  - write: {path: b.bin, content_base64: "AAEC"}
  - delete: {path: old, recursive: true}
  - run: {argv: [make, -s], cwd: /workspace, env: {CC: gcc}, timeout: 2m, expect_exit: [0, 1], output_cap: 64k}
anchors: &a [1, 2]
other: *a
""")
put("plan", "plan.json", json.dumps({"message": "m", "steps": [
    {"write": {"path": "x.txt", "content": "x"}}, {"run": {"shell": "cat x.txt"}}]}))


# ---- gauntlets ----
put("gauntlet", "python.yaml", """parallel: 2
checks:
  - name: lint
    kind: lint
    tool: flake8
    env: {XDG_CACHE_HOME: /tmp/.cache}
    run: flake8 --max-line-length=100 .
    timeout: 5m
  - name: tests
    kind: test
    tool: pytest
    run: pytest -q --junitxml=/tmp/report.xml
    report: /tmp/report.xml
    timeout: 10m
    required: true
    coverage_min: 80
  - name: style
    kind: lint
    tool: black
    run: black --check .
    severity: warning
    pass: {exit_codes: [0]}
""")
put("gauntlet", "c.yaml", """checks:
  - name: build
    kind: other
    tool: make
    run: make -s CFLAGS='-O2 -Wall'
    timeout: 20m
  - {name: tests, kind: test, tool: make, run: make test, required: false}
""")
put("gauntlet", "alias-bomb.yaml", """a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
checks: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
""")


# ---- workspace paths ----
for i, p in enumerate(["src/main.c", "a/b/c/", "./x/./y", "", ".", "../etc/passwd", "/abs",
                       "a//b", "a/../b", "x" * 256, "dir/" + "n" * 255, "a\x00b", "..."]):
    put("files_path", "p%02d" % i, p)


# ---- tar archives ----
def tar_bytes(fmt, entries, mode="w"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as t:
        for e in entries:
            t.addfile(e[0], io.BytesIO(e[1]) if len(e) > 1 else None)
    return buf.getvalue()

def info(name, type_=tarfile.REGTYPE, size=0, linkname="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = size
    ti.linkname = linkname
    ti.mode = mode
    ti.mtime = 1700000000
    return ti

tree = [(info("dir", tarfile.DIRTYPE, mode=0o755),), (info("dir/a.txt", size=6), b"hello\n"),
        (info("dir/link", tarfile.SYMTYPE, linkname="a.txt"),),
        (info("b.sh", size=10, mode=0o755), b"#!/bin/sh\n")]
put("files_tar", "ustar", tar_bytes(tarfile.USTAR_FORMAT, tree))
put("files_tar", "pax-long", tar_bytes(tarfile.PAX_FORMAT,
                                       [(info("d/" + "long" * 40 + ".txt", size=1), b"x")]))
put("files_tar", "gnu-gz", tar_bytes(tarfile.GNU_FORMAT, tree, mode="w:gz"))
put("files_tar", "dotdot", tar_bytes(tarfile.USTAR_FORMAT, [(info("../escape", size=1), b"x")]))
put("files_tar", "through-link", tar_bytes(tarfile.USTAR_FORMAT, [
    (info("l", tarfile.SYMTYPE, linkname="/tmp"),), (info("l/x", size=1), b"x")]))
put("files_tar", "hardlink", tar_bytes(tarfile.USTAR_FORMAT, [
    (info("a", size=1), b"x"), (info("h", tarfile.LNKTYPE, linkname="a"),)]))


# ---- audit logs: first byte 0 = whole chain, 1 = allow_partial ----
GENESIS = "0" * 64

def audit_log(n, start=1, prev=GENESIS):
    lines = []
    for seq in range(start, start + n):
        r = {"seq": seq, "ts": "2026-11-28T12:00:00.000000Z", "actor": "uid:0",
             "sandbox": "sb-0123456789abcdef", "action": "sandbox.create", "outcome": "ok",
             "details": {"image": "clearing/python:1", "n": seq}, "prev": prev}
        body = json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        h = hashlib.sha256((prev + "\n" + body).encode()).hexdigest()
        r["hash"] = h
        lines.append(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=True))
        prev = h
    return ("\n".join(lines) + "\n").encode() if lines else b""

put("audit", "empty", b"\x00")
put("audit", "chain", b"\x00" + audit_log(3))
put("audit", "partial", b"\x01" + audit_log(2, start=41, prev="ab" * 32))
put("audit", "torn", b"\x00" + audit_log(2) + b'{"seq":3,"ts":')


# ---- the live channel: slicing byte, u32 id of a waiting command, then the attach stream ----
def frame(ch, typ, payload=b""):
    return struct.pack(">II", len(payload), ch) + bytes([typ, 0, 0, 0]) + payload

def docker(stream, b):
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(b)) + b

def tlv(tag, v):
    return struct.pack(">HI", tag, len(v)) + v

RESULT = (tlv(1, struct.pack(">Q", 1)) + tlv(2, struct.pack(">Q", 0)) +
          tlv(4, struct.pack(">Q", 1234)) + tlv(12, b"done"))
put("channel", "hello-answer", b"\x08\x00\x00\x00\x00" +
    docker(1, frame(0, 11, struct.pack(">II", 1, 7))))
put("channel", "exec-output-result", b"\x10\x00\x00\x00\x07" +
    docker(1, frame(7, 4, b"hello\n") + frame(7, 5, b"warn\n") + frame(7, 6, RESULT)))
put("channel", "replayed-result", b"\x03\x00\x00\x00\x00" +
    docker(1, frame(9, 4, b"x" * 100) + frame(9, 6, RESULT)))
put("channel", "net-open", b"\x20\x00\x00\x00\x00" +
    docker(1, frame(3, 12, b"C\x00example.com\x00443") + frame(3, 15, b"GET /") + frame(3, 16)))
put("channel", "net-open-http", b"\x05\x00\x00\x00\x00" +
    docker(1, frame(4, 12, b"H\x00127.0.0.1\x008080")))
put("channel", "agent-stderr", b"\x02\x00\x00\x00\x00" +
    docker(2, b"clearing-agent: something\nmore"))
put("channel", "split-docker-frames", b"\x01\x00\x00\x00\x07" +
    docker(1, frame(7, 4, b"ab")[:7]) + docker(1, frame(7, 4, b"ab")[7:]))
