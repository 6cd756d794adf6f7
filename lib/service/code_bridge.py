# The code interpreter's bridge (#21): runs inside the sandbox as the sandbox's user, started by
# the daemon (lib/service/code.c) as `python3 -c <this file>` over the agent's channel. It starts
# one Jupyter kernel (jupyter_client, sockets on 127.0.0.1 inside the sandbox) and speaks JSON
# lines with the daemon: one request a line on stdin, one answer a line on stdout. Nothing it
# prints is trusted by the daemon (it runs next to the user's code): the daemon caps and checks
# every line.
#
# Requests: {"op": "run", "code": str, "timeout_ms": int, "cap": int, "nonce": str,
#            "stream": bool} (a restart is the daemon's: it ends the bridge and starts another)
# Answers:  {"event": "ready"} once the kernel answers; {"event": "fatal", "message": str}
#           before it exits when it cannot serve; one {"event": "result", ...} per request,
#           after {"event": "stdout"|"stderr", "text": str} as the output comes when the run
#           request has "stream": true. A result carries its request's nonce.
#           {"op": "sync", "nonce": str} is answered {"event": "synced", "nonce": str}: the
#           daemon's mark after it takes over a bridge from a snapshot (what came before is past).
import json
import os
import re
import sys
import time

OUT = sys.stdout
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ENTRY_COST = 8  # the quotes, colon and comma around a bundle entry's name and value
MIMES = ("text/plain", "text/html", "text/markdown", "application/json", "image/png",
         "image/jpeg", "image/svg+xml")


# A code point of a surrogate: in a Python string it stands alone (a pair is one character),
# and the daemon's JSON parser refuses a lone one, with the whole line it came in.
SURROGATE = re.compile("[\ud800-\udfff]")
INT64 = (-(1 << 63), (1 << 63) - 1)  # the daemon's JSON integers


def readable(obj):
    """obj with every lone surrogate replaced by U+FFFD: 3 bytes in UTF-8, as the cap counted
    the surrogate, so a cut made before still holds."""
    if isinstance(obj, str):
        return SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {readable(k): readable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [readable(v) for v in obj]
    return obj


def say(obj):
    OUT.write(json.dumps(readable(obj), separators=(",", ":")) + "\n")
    OUT.flush()


def real_text(x):
    """A float as the daemon's JSON writer (jansson) writes it: 17 significant digits, ".0"
    where neither a point nor an exponent shows, no "+" and no leading zeros in the exponent."""
    t = "%.17g" % x
    if "." not in t and "e" not in t:
        t += ".0"
    if "e" in t:
        mant, exp = t.split("e")
        sign = "-" if exp.startswith("-") else ""
        t = mant + "e" + sign + (exp.lstrip("+-").lstrip("0") or "0")
    return t


def daemon_json(v):
    """The compact JSON text the daemon counts for an application/json value (code_answer.c
    bundle), or None where it cannot carry the value exactly: an integer beyond 64 bits, NaN or
    an infinity (its parser would refuse the whole answer)."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int):
        return str(v) if INT64[0] <= v <= INT64[1] else None
    if isinstance(v, float):
        return real_text(v) if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, str):
        return json.dumps(readable(v), ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        items = [daemon_json(e) for e in v]
        return None if None in items else "[" + ",".join(items) + "]"
    if isinstance(v, dict):
        items = []
        for k, e in v.items():
            t = daemon_json(e)
            if not isinstance(k, str) or t is None:
                return None
            items.append(daemon_json(k) + ":" + t)
        return "{" + ",".join(items) + "}"
    return None


def setup_env():
    base = "/tmp/.clearing-code-%d" % os.getpid()
    for sub in ("runtime", "ipython", "mpl"):
        os.makedirs(os.path.join(base, sub), mode=0o700, exist_ok=True)
    os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(base, "runtime")
    os.environ["IPYTHONDIR"] = os.path.join(base, "ipython")
    os.environ["MPLCONFIGDIR"] = os.path.join(base, "mpl")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"


class Session:
    def __init__(self):
        self.km = None
        self.kc = None
        self.timeouts = 0

    def start(self):
        from jupyter_client import KernelManager
        self.km = KernelManager(kernel_name="python3")
        self.km.ip = "127.0.0.1"
        self.km.start_kernel(stdin=open(os.devnull, "rb"), stdout=open(os.devnull, "wb"),
                             stderr=open(os.devnull, "wb"), cwd="/workspace"
                             if os.path.isdir("/workspace") else None)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=300)  # many kernels starting on a busy host
        self.timeouts = 0

    def stop(self):
        try:
            if self.kc:
                self.kc.stop_channels()
            if self.km:
                self.km.shutdown_kernel(now=True)
        except Exception:
            pass
        self.km = None
        self.kc = None

    def restart(self):
        self.stop()
        self.start()

    def alive(self):
        try:
            return self.km is not None and self.km.is_alive()
        except Exception:
            return False


class Cell:
    def __init__(self, cap, stream=False):
        self.cap = cap
        self.stream = stream
        self.used = 0
        self.truncated = False
        self.stdout = []
        self.stderr = []
        self.result = None
        self.displays = []
        self.error = None
        self.count = None
        self.idle = False

    def take(self, text):
        """text, or as much of it as the cap has room for: the cap counts UTF-8 bytes (as an
        exec's caps do), and a cut falls before the character that would cross it, never
        inside one. Bytes, not characters, also bound the answer's line: json.dumps escapes a
        byte into at most 6 (a control character), where a character could become 12 (an
        emoji, a surrogate pair), past the daemon's line cap of 8 per byte of output_cap.
        Lone surrogates (a kernel's JSON may carry them) count as the 3 bytes they encode to."""
        room = self.cap - self.used
        if room <= 0:
            self.truncated = True
            return None
        b = text.encode("utf-8", "surrogatepass")
        if len(b) > room:
            self.truncated = True
            cut = room
            while cut > 0 and (b[cut] & 0xC0) == 0x80:  # b[cut] continues a character
                cut -= 1
            b = b[:cut]
            text = b.decode("utf-8", "surrogatepass")
        self.used += len(b)
        return text

    def whole_cost(self, n):
        """n bytes of the answer's own (no text of the cell's) if they fit, counted then; else
        None and truncated."""
        if self.used + n > self.cap:
            self.truncated = True
            return None
        self.used += n
        return n

    def whole(self, text):
        """text if all of it fits the room left (counted then), else None: truncated, and
        nothing counted, so a value too large to keep takes no room from the outputs after it."""
        if self.whole_cost(len(text.encode("utf-8", "surrogatepass"))) is None:
            return None
        return text

    def bundle(self, data):
        """The outputs kept by MIME type, as the daemon keeps them (code.c bundle): an empty
        value or a text cut to nothing is dropped, and each value kept costs its type's name
        and ENTRY_COST besides its bytes, so that thousands of tiny displays stay within the cap."""
        out = {}
        for m in MIMES:
            v = data.get(m)
            if v is None or v == "":
                continue
            cost = len(m) + ENTRY_COST
            if self.whole_cost(cost) is None:
                continue
            if m == "application/json":
                # Whole or not at all: a cut JSON text is no value. Counted as the daemon counts
                # it; a value it cannot carry (or a text that is no JSON) is not offered.
                if isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except ValueError:
                        v = None
                text = daemon_json(v) if v is not None else None
                kept = text is not None and self.whole(text) is not None
                if kept:
                    out[m] = v
            else:
                if not isinstance(v, str):
                    v = json.dumps(v)
                # An image cut short is a corrupt one (base64 PNG/JPEG, or SVG): whole or dropped.
                v = self.whole(v) if m.startswith("image/") else self.take(v)
                kept = bool(v)
                if kept:
                    out[m] = v
            if not kept:
                self.used -= cost
        return out

    def on(self, msg):
        t = msg["header"]["msg_type"]
        c = msg["content"]
        if t == "stream":
            s = self.take(c.get("text", ""))
            if s is not None:
                name = "stdout" if c.get("name") == "stdout" else "stderr"
                (self.stdout if name == "stdout" else self.stderr).append(s)
                if self.stream:
                    say({"event": name, "text": s})
        elif t == "execute_result":
            self.result = self.bundle(c.get("data", {}))
            self.count = c.get("execution_count", self.count)
        elif t == "display_data":
            b = self.bundle(c.get("data", {}))
            if b:
                self.displays.append(b)
        elif t == "error":
            tb = [ANSI.sub("", line) for line in c.get("traceback", [])]
            # Name and value count too: an exception's message can be as large as any output.
            self.error = {"name": self.take(str(c.get("ename", ""))) or "",
                          "value": self.take(str(c.get("evalue", ""))) or "",
                          "traceback": self.take("\n".join(tb)) or ""}
        elif t == "status" and c.get("execution_state") == "idle":
            self.idle = True


def run(s, req):
    code = req.get("code", "")
    timeout = max(1, int(req.get("timeout_ms", 30000))) / 1000.0
    cell = Cell(max(1024, int(req.get("cap", 1 << 20))), bool(req.get("stream")))
    if not s.alive():
        s.restart()
        return finish(cell, "died", "the kernel had exited: a fresh one was started")
    msg_id = s.kc.execute(code, store_history=True, allow_stdin=False)
    deadline = time.monotonic() + timeout
    interrupted = False
    status = None
    while not cell.idle:
        now = time.monotonic()
        if now >= deadline:
            if interrupted:
                break
            interrupted = True
            s.km.interrupt_kernel()
            deadline = now + 5.0
            continue
        try:
            msg = s.kc.get_iopub_msg(timeout=min(0.25, deadline - now))
        except Exception:
            if not s.alive():
                s.restart()
                return finish(cell, "died", "the kernel exited during the cell; a fresh one "
                              "was started (its state is gone)")
            continue
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            cell.on(msg)
    # The reply carries the execution count (and the status when no error message came).
    end = time.monotonic() + 2.0
    while True:
        try:
            rep = s.kc.get_shell_msg(timeout=max(0.01, end - time.monotonic()))
        except Exception:
            break
        if rep.get("parent_header", {}).get("msg_id") == msg_id:
            cell.count = rep["content"].get("execution_count", cell.count)
            status = rep["content"].get("status")
            break
    if interrupted:
        s.timeouts += 1
        if s.timeouts >= 2 or not cell.idle:
            s.restart()
            return finish(cell, "timeout", "the cell ran past its timeout again: the kernel "
                          "was restarted (its state is gone)", restarted=True)
        return finish(cell, "timeout", "the cell ran past its timeout: it was interrupted, the "
                      "kernel and its state live on")
    s.timeouts = 0
    if cell.error or status == "error":
        return finish(cell, "error", None)
    return finish(cell, "ok", None)


def finish(cell, status, message, restarted=False):
    out = {"event": "result", "status": status, "execution_count": cell.count,
           "stdout": "".join(cell.stdout), "stderr": "".join(cell.stderr),
           "result": cell.result, "displays": cell.displays, "error": cell.error,
           "truncated": cell.truncated, "restarted": restarted or status == "died"}
    if message:
        out["message"] = message
    return out


def main():
    setup_env()
    s = Session()
    try:
        s.start()
    except Exception as e:
        say({"event": "fatal", "message": "cannot start a Jupyter kernel (the image needs "
             "python3-ipykernel and python3-jupyter-client): %s: %s" % (type(e).__name__, e)})
        return 3
    say({"event": "ready"})
    for line in sys.stdin:
        nonce = None
        try:
            req = json.loads(line)
            nonce = req.get("nonce")
            # A sync marks where the daemon's reading of a bridge it took over from a snapshot
            # begins: its answer follows all the bridge wrote before.
            ans = {"event": "synced"} if req.get("op") == "sync" else run(s, req)
        except Exception as e:
            ans = {"event": "result", "status": "bridge_error",
                   "message": "%s: %s" % (type(e).__name__, e)}
        ans["nonce"] = nonce
        say(ans)
    s.stop()
    return 0


if __name__ == "__main__":  # as the daemon runs it (python3 -c); the unit test imports it
    sys.exit(main())
