#!/usr/bin/env python3
"""The code interpreter (#21) end to end: a daemon of its own, real dockerd + runsc, sandboxes of
the clearing/datascience image (a Jupyter kernel, numpy, pandas, matplotlib).

    usage: test_code.py PATH/TO/clearing [NAME-PATTERN...]

CODE_SESSIONS (default 20) is how many sessions test_sessions_side_by_side runs at once.
Every wait is for a condition with a generous deadline; nothing asserts on speed.
The last line of output is "N passed, M failed"; the exit status is non-zero on any failure.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import sys
import threading
import time
import unittest
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import clearing_test as ct  # noqa: E402
from clearing_test import DAEMONS, Daemon, destroy_quietly, docker, runsc_pids, wait_for  # noqa: E402

IMAGE = 'clearing/datascience:latest'
SESSIONS = int(os.environ.get('CODE_SESSIONS', '20'))
MAIN = None
CELL_HTTP_TIMEOUT = 600  # a first cell starts a kernel: generous on a busy 2-core host


def setUpModule():
    global MAIN
    MAIN = Daemon('code', prefix='clr-code-').start()


def tearDownModule():
    sweep()


def sweep():
    for d in DAEMONS:
        d.ensure_running()
        if d.running():
            c = d.client()
            r = c.get('/v1/sandboxes')
            for sb in (r.json or {}).get('sandboxes', []) if r.status == 200 else []:
                if sb.get('state') in ('running', 'lost'):
                    destroy_quietly(c, sb['id'])
            d.stop()


def create(client, **extra):
    body = {'image': IMAGE}
    body.update(extra)
    r = client.post('/v1/sandboxes', body)
    if r.status != 201:
        raise AssertionError('create: %r' % r)
    return r.json['id']


def cell(client, sid, code, timeout='120s', expect_status=200, **extra):
    body = {'code': code, 'timeout': timeout}
    body.update(extra)
    r = client.post('/v1/sandboxes/%s/code' % sid, body, timeout=CELL_HTTP_TIMEOUT)
    if r.status != expect_status:
        raise AssertionError('code %r: %r' % (code[:60], r))
    return r.json


def cell_overhead(client, sid):
    """The median wall time of a trivial cell in sid's running kernel: this run's scale for a
    cell's way through the daemon, the sandbox and the kernel, which the host's load stretches."""
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        r = cell(client, sid, '1')
        took.append(time.monotonic() - t0)
        if r.get('status') != 'ok':
            raise AssertionError('a trivial cell: %r' % r)
    return sorted(took)[1]


def stream_long_cell(sock, sid, sleep_s):
    """Starts a streamed cell in sid that prints "started" and sleeps sleep_s, on a thread of
    its own, and waits (a condition, CELL_HTTP_TIMEOUT) until it has printed. Returns (thread,
    events); a connection cut is an event {'event': 'cut'}, seen by the caller."""
    events = []

    def stream():
        try:
            conn = ct.connection(sock, timeout=CELL_HTTP_TIMEOUT)
            conn.request('POST', '/v1/sandboxes/%s/code?stream=true' % sid,
                         json.dumps({'code': 'import time\nprint("started", flush=True)\n'
                                             'time.sleep(%d)' % sleep_s, 'timeout': '1h'}),
                         {'Content-Type': 'application/json'})
            for ev in ct.ndjson_events(conn.getresponse()):
                events.append(ev)
        except Exception as e:
            events.append({'event': 'cut', 'error': str(e)})
    t = threading.Thread(target=stream)
    t.start()
    if not wait_for(lambda: any(e.get('text') == 'started\n' for e in events),
                    CELL_HTTP_TIMEOUT):
        t.join(CELL_HTTP_TIMEOUT)
        raise AssertionError('the cell did not print "started": %r' % events)
    return t, events


def png_size(data):
    """(width, height) from a PNG's signature and IHDR chunk (its CRC checked)."""
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise AssertionError('not a PNG signature: %r' % data[:8])
    length, kind = struct.unpack('>I4s', data[8:16])
    if kind != b'IHDR' or length != 13:
        raise AssertionError('first chunk is %r (%d), not IHDR' % (kind, length))
    body = data[16:16 + 13]
    (crc,) = struct.unpack('>I', data[29:33])
    if zlib.crc32(kind + body) != crc:
        raise AssertionError('IHDR CRC does not match')
    w, h = struct.unpack('>II', body[:8])
    return w, h


def kernel_pids(client, sid):
    """The ipykernel processes inside the sandbox, seen by a command of its own."""
    r = client.post('/v1/sandboxes/%s/exec' % sid,
                    {'shell': 'ps -eo pid,args | grep "[i]pykernel_launcher" || true',
                     'timeout': '60s'},
                    timeout=120)
    if r.status != 200:
        raise AssertionError('exec ps: %r' % r)
    return [line for line in r.json['result']['stdout'].splitlines() if line.strip()]


def session_processes(client, sid):
    """The code session's processes inside the sandbox, seen by a command of its own (ps):
    the bridge (python3 -c, its source) and the kernel (ipykernel_launcher), one line each."""
    r = client.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['ps', '-eo', 'pid,args'],
                                                    'timeout': '60s'}, timeout=120)
    if r.status != 200 or r.json['result']['exit_code'] != 0:
        raise AssertionError('exec ps: %r' % r)
    lines = r.json['result']['stdout'].splitlines()[1:]
    return [line.strip() for line in lines
            if line.split(None, 1)[1:2] and (line.split(None, 1)[1].startswith('python3 -c')
                                            or 'ipykernel_launcher' in line)]


def audit_records(daemon, action):
    path = os.path.join(daemon.state, 'audit.log')
    out = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get('action') == action:
                out.append(rec)
    return out


class Code(unittest.TestCase):
    def setUp(self):
        self.c = MAIN.client()
        self.made = []

    def tearDown(self):
        for sid in self.made:
            destroy_quietly(self.c, sid)

    def sandbox(self, **extra):
        sid = create(self.c, **extra)
        self.made.append(sid)
        return sid

    def test_state_result_and_audit(self):
        sid = self.sandbox()
        a = cell(self.c, sid, 'x = 41\nprint("hello")')
        self.assertEqual(a['status'], 'ok', a)
        self.assertEqual(a['stdout'], 'hello\n')
        self.assertIsNone(a['result'])
        b = cell(self.c, sid, 'x + 1')
        self.assertEqual(b['status'], 'ok', b)
        self.assertEqual(b['result']['text/plain'], '42')
        self.assertGreater(b['execution_count'], a['execution_count'])
        self.assertFalse(b['restarted'])
        # Rich results: a DataFrame offers HTML; stderr is its own stream.
        d = cell(self.c, sid, 'import pandas as pd, sys\nprint("e", file=sys.stderr)\n'
                              'pd.DataFrame({"a": [1, 2]})')
        self.assertEqual(d['status'], 'ok', d)
        self.assertEqual(d['stderr'], 'e\n')
        self.assertIn('<table', d['result']['text/html'])
        # Files the code writes are the workspace's.
        cell(self.c, sid, 'open("/workspace/from_code.txt", "w").write("made by a cell")')
        r = self.c.get('/v1/sandboxes/%s/files/from_code.txt' % sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b'made by a cell')
        # Each cell: a durable code.start (its code's hash) and a code record with its status.
        starts = [x for x in audit_records(MAIN, 'code.start') if x.get('sandbox') == sid]
        ends = [x for x in audit_records(MAIN, 'code') if x.get('sandbox') == sid]
        self.assertEqual(len(starts), 4, starts)
        self.assertEqual(len(ends), 4, ends)
        want = hashlib.sha256(b'x + 1').hexdigest()
        self.assertIn(want, [x['details']['code_sha256'] for x in starts])
        self.assertEqual({x['outcome'] for x in ends}, {'ok'})
        self.assertTrue(all(isinstance(x['details']['duration_ms'], int) for x in ends))

    def test_traceback(self):
        sid = self.sandbox()
        a = cell(self.c, sid, 'def f():\n    return 1 / 0\nf()')
        self.assertEqual(a['status'], 'error', a)
        self.assertEqual(a['error']['name'], 'ZeroDivisionError')
        self.assertEqual(a['error']['value'], 'division by zero')
        self.assertIn('return 1 / 0', a['error']['traceback'])
        self.assertNotIn('\x1b[', a['error']['traceback'])
        # The kernel lives on after an exception.
        self.assertEqual(cell(self.c, sid, 'f.__name__')['result']['text/plain'], "'f'")

    def test_values_json_cannot_carry(self):
        # A display whose application/json holds an integer beyond 64 bits (the kernel's JSON
        # carries it; the daemon's parser refuses it, and before, the answer line with it: the
        # session broke): the answer comes, the JSON value left out, its text/plain kept, and
        # the kernel lives on. The control: a 64-bit integer's JSON value is carried. (NaN
        # never leaves the kernel as a number: jupyter_client sends it as the text "nan".)
        sid = self.sandbox()
        show = ('from IPython.display import display\n'
                'display({"application/json": {"n": %s}, "text/plain": "shown"}, raw=True)')
        a = cell(self.c, sid, 'x = 7\n' + show % '2**63 - 1')
        self.assertEqual(a['status'], 'ok', a)
        self.assertEqual(a['displays'], [{'application/json': {'n': 2**63 - 1},
                                          'text/plain': 'shown'}])
        a = cell(self.c, sid, show % '2**64')
        self.assertEqual(a['status'], 'ok', a)
        self.assertEqual(a['displays'], [{'text/plain': 'shown'}])
        self.assertFalse(a['truncated'], a)
        b = cell(self.c, sid, 'x')
        self.assertEqual(b['result']['text/plain'], '7', b)
        self.assertFalse(b['restarted'], b)

    def test_matplotlib_png(self):
        sid = self.sandbox()
        a = cell(self.c, sid, 'import matplotlib.pyplot as plt\n'
                              'fig = plt.figure(figsize=(4, 3), dpi=50)\n'
                              'plt.plot([1, 3, 2])\nplt.show()')
        self.assertEqual(a['status'], 'ok', a)
        pngs = [d['image/png'] for d in a['displays'] if 'image/png' in d]
        self.assertEqual(len(pngs), 1, a['displays'])
        w, h = png_size(base64.b64decode(pngs[0]))
        # A 4x3 in figure at 50 dpi is 200x150 before the inline backend trims its margins.
        self.assertTrue(100 <= w <= 200 and 75 <= h <= 150, (w, h))

    def test_timeout_interrupts_then_restarts(self):
        sid = self.sandbox()
        cell(self.c, sid, 'kept = "still here"')
        loop = 'import time\nwhile True:\n    time.sleep(0.05)'
        # The kernel must be running the loop when the timeout interrupts it (an interrupt that
        # comes first is lost, and the kernel restarted): the timeout is a deadline for the
        # cell's start, scaled by what a trivial cell takes on this host in this run.
        limit = '%ds' % max(3, round(10 * cell_overhead(self.c, sid)))
        a = cell(self.c, sid, loop, timeout=limit)
        self.assertEqual(a['status'], 'timeout', a)
        self.assertFalse(a['restarted'], a)
        self.assertEqual(a['error']['name'], 'KeyboardInterrupt')
        # Interrupted, not restarted: the state lives on, and a cell in between resets the count.
        self.assertEqual(cell(self.c, sid, 'kept')['result']['text/plain'], "'still here'")
        self.assertFalse(cell(self.c, sid, loop, timeout=limit)['restarted'])
        b = cell(self.c, sid, loop, timeout=limit)
        self.assertEqual(b['status'], 'timeout', b)
        self.assertTrue(b['restarted'], b)
        c = cell(self.c, sid, 'kept')
        self.assertEqual(c['status'], 'error', c)
        self.assertEqual(c['error']['name'], 'NameError')

    def test_oom_then_next_call_works(self):
        sid = self.sandbox(limits={'memory': '512m'})
        cell(self.c, sid, 'before = 1')
        a = cell(self.c, sid, 'blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))')
        self.assertEqual(a['status'], 'oom', a)
        self.assertTrue(a['restarted'])
        b = cell(self.c, sid, '6 * 7')
        self.assertEqual(b['status'], 'ok', b)
        self.assertEqual(b['result']['text/plain'], '42')
        self.assertTrue(b['restarted'], b)
        self.assertIn('memory', b['message'])
        self.assertEqual(cell(self.c, sid, 'before')['error']['name'], 'NameError')
        self.assertEqual([x['outcome'] for x in audit_records(MAIN, 'code')
                          if x.get('sandbox') == sid].count('oom'), 1)
        # The sandbox itself survived.
        r = self.c.get('/v1/sandboxes/%s' % sid)
        self.assertEqual(r.json['state'], 'running', r)

    def test_kernel_killed_by_cell(self):
        sid = self.sandbox()
        cell(self.c, sid, 'gone = 1')
        a = cell(self.c, sid, 'import os\nos._exit(3)')
        self.assertEqual(a['status'], 'died', a)
        self.assertTrue(a['restarted'])
        b = cell(self.c, sid, '1 + 1')
        self.assertEqual(b['status'], 'ok', b)
        self.assertEqual(b['result']['text/plain'], '2')
        self.assertEqual(cell(self.c, sid, 'gone')['error']['name'], 'NameError')

    def test_sandbox_destroyed_under_a_cell(self):
        """DELETE while a cell runs: the cell's answer says the sandbox was destroyed and by
        what (sandbox_failed, as an exec's command in a removed sandbox), never that the kernel
        died; the record says so; a later cell is refused (409)."""
        sid = self.sandbox()
        # A cut connection is seen below: the answer must come, not a cut.
        t, events = stream_long_cell(MAIN.sock, sid, 600)
        try:
            r = self.c.delete('/v1/sandboxes/%s' % sid, timeout=300)
            self.assertEqual(r.status, 204, r)
            t.join(CELL_HTTP_TIMEOUT)
            self.assertFalse(t.is_alive())
        finally:
            t.join(CELL_HTTP_TIMEOUT)
        last = [e for e in events if e.get('event') != 'heartbeat'][-1]
        self.assertEqual(last.get('event'), 'result', events)
        self.assertEqual(last['status'], 'sandbox_failed', last)
        self.assertIn('destroyed while the cell ran', last['message'])
        self.assertIn('reason: client', last['message'])
        self.assertNotIn('kernel', last['message'])
        self.assertFalse(last['restarted'], last)
        self.assertEqual([x['outcome'] for x in audit_records(MAIN, 'code')
                          if x.get('sandbox') == sid], ['sandbox_failed'])
        r = self.c.post('/v1/sandboxes/%s/code' % sid, {'code': '1'})
        self.assertEqual(r.status, 409, r)

    def test_restart_endpoint(self):
        sid = self.sandbox()
        cell(self.c, sid, 'z = 5')
        self.assertEqual(cell(self.c, sid, 'z')['result']['text/plain'], '5')
        r = self.c.post('/v1/sandboxes/%s/code/restart' % sid, timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {'status': 'restarted'})
        self.assertEqual(cell(self.c, sid, 'z')['error']['name'], 'NameError')
        # One record, written once the restart was done, saying it ended the kernel that ran.
        recs = [x for x in audit_records(MAIN, 'code.restart') if x.get('sandbox') == sid]
        self.assertEqual([(x['outcome'], x['details']['kernel_ended']) for x in recs],
                         [('ok', True)], recs)

    def test_end_endpoint(self):
        """DELETE .../code: the bridge and its kernel are gone from the sandbox (they were there
        before: the control), the next cell runs in a fresh kernel that says the session was
        ended, and each end has one code.end record saying whether it ended a kernel; a second
        end in a row finds none and is 204 all the same."""
        sid = self.sandbox()
        cell(self.c, sid, 'kept = 11')
        self.assertEqual(cell(self.c, sid, 'kept')['result']['text/plain'], '11')
        before = session_processes(self.c, sid)
        self.assertTrue(any('ipykernel_launcher' in p for p in before), before)
        self.assertTrue(any(p.split(None, 1)[1].startswith('python3 -c') for p in before),
                        before)
        r = self.c.delete('/v1/sandboxes/%s/code' % sid, timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual((r.status, r.body), (204, b''), r)
        self.assertTrue(wait_for(lambda: session_processes(self.c, sid) == [], 120),
                        session_processes(self.c, sid))
        a = cell(self.c, sid, 'kept')
        self.assertEqual(a['status'], 'error', a)
        self.assertEqual(a['error']['name'], 'NameError', a)
        self.assertTrue(a['restarted'], a)
        self.assertIn('session was ended', a['message'])
        # The notice is said once: the next cell says nothing.
        b = cell(self.c, sid, '1 + 1')
        self.assertEqual((b['status'], b['restarted'], b['message']), ('ok', False, None), b)
        for _ in range(2):
            r = self.c.delete('/v1/sandboxes/%s/code' % sid, timeout=CELL_HTTP_TIMEOUT)
            self.assertEqual(r.status, 204, r)
        recs = [x for x in audit_records(MAIN, 'code.end') if x.get('sandbox') == sid]
        self.assertEqual([(x['outcome'], x['details']['kernel_ended']) for x in recs],
                         [('ok', True), ('ok', True), ('ok', False)], recs)

    def test_end_without_session_and_refusals(self):
        """An end with no session is 204 (no kernel needed: the default image has none); an
        unknown sandbox is 404, one no longer running 409, each with no record."""
        sid = self.sandbox(image='clearing/default:latest')
        r = self.c.delete('/v1/sandboxes/%s/code' % sid)
        self.assertEqual(r.status, 204, r)
        recs = [x for x in audit_records(MAIN, 'code.end') if x.get('sandbox') == sid]
        self.assertEqual([(x['outcome'], x['details']['kernel_ended']) for x in recs],
                         [('ok', False)], recs)
        r = self.c.delete('/v1/sandboxes/sb-0000000000000000/code')
        self.assertEqual(r.status, 404, r)
        r = self.c.delete('/v1/sandboxes/%s?wait=true' % sid, timeout=300)
        self.assertEqual(r.status, 204, r)
        r = self.c.delete('/v1/sandboxes/%s/code' % sid)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(len([x for x in audit_records(MAIN, 'code.end')
                              if x.get('sandbox') == sid]), 1)

    def test_cells_in_flight_run_in_order(self):
        sid = self.sandbox()
        cell(self.c, sid, 'order = []')
        answers = {}

        def send(i):
            answers[i] = cell(MAIN.client(), sid, 'import time\ntime.sleep(0.2)\n'
                              'order.append(%d)\nlen(order)' % i)
        threads = []
        for i in range(5):
            t = threading.Thread(target=send, args=(i,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(CELL_HTTP_TIMEOUT)
        self.assertEqual(sorted(answers), list(range(5)))
        got = cell(self.c, sid, 'order')['result']['text/plain']
        self.assertEqual(sorted(json.loads(got)), list(range(5)))
        # Each cell saw the ones before it: the lengths are 1..5, one each (none ran at once).
        self.assertEqual(sorted(int(a['result']['text/plain']) for a in answers.values()),
                         [1, 2, 3, 4, 5])

    def test_stream(self):
        sid = self.sandbox()
        resp = self.c.request('POST', '/v1/sandboxes/%s/code?stream=true' % sid,
                              {'code': 'for i in range(3):\n    print("line", i, flush=True)\n'
                                       '"done"', 'timeout': '120s'},
                              timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual(resp.status, 200, resp)
        events = [json.loads(line) for line in resp.body.decode().splitlines() if line]
        events = [e for e in events if e.get('event') != 'heartbeat']
        out = ''.join(e['text'] for e in events if e['event'] == 'stdout')
        self.assertEqual(out, 'line 0\nline 1\nline 2\n')
        last = events[-1]
        self.assertEqual(last['event'], 'result')
        self.assertEqual(last['result']['text/plain'], "'done'")
        self.assertEqual(last['stdout'], out)

    def test_cell_against_the_bridge(self):
        """The cell's code runs next to the bridge, as the same user. Its stdout (the daemon's
        channel) is out of the cell's reach here (/proc/PID/fd of the bridge is refused); were
        it not, a forged answer would not pass for the cell's: it lacks the request's nonce
        (the unit tests feed the reader forged and broken lines). A cell that kills the bridge
        gets a clear status, and the next call a fresh kernel."""
        sid = self.sandbox()
        cell(self.c, sid, 'import os\n'
                          'def to_bridge(b):\n'
                          '    fd = os.open("/proc/%d/fd/1" % os.getppid(), os.O_WRONLY)\n'
                          '    os.write(fd, b)\n'
                          '    os.close(fd)\n'
                          'n = 0')
        forged = b'{"event":"result","status":"ok","stdout":"forged","execution_count":99}\n'
        a = cell(self.c, sid, 'to_bridge(%r)\n"real"' % forged)
        if a['status'] == 'error':
            self.assertEqual(a['error']['name'], 'PermissionError', a)
        else:
            self.assertEqual(a['status'], 'ok', a)
            self.assertEqual(a['result']['text/plain'], "'real'", a)
        self.assertNotEqual(a['stdout'], 'forged')
        self.assertNotEqual(a['execution_count'], 99)
        b = cell(self.c, sid, 'n + 1')
        self.assertEqual(b['result']['text/plain'], '1', b)
        self.assertEqual(b['execution_count'], a['execution_count'] + 1)
        c = cell(self.c, sid, 'import os, signal\nos.kill(os.getppid(), signal.SIGKILL)')
        self.assertEqual(c['status'], 'died', c)
        self.assertTrue(c['restarted'])
        self.assertIn('bridge', c['message'])
        d = cell(self.c, sid, '2 + 2')
        self.assertEqual(d['result']['text/plain'], '4', d)
        self.assertTrue(d['restarted'], d)
        self.assertEqual(cell(self.c, sid, 'n')['error']['name'], 'NameError')

    def test_truncated(self):
        sid = self.sandbox()
        a = cell(self.c, sid, 'print("x" * 100000)', output_cap='4k')
        self.assertEqual(a['status'], 'ok', a)
        self.assertTrue(a['truncated'])
        self.assertLessEqual(len(a['stdout']), 4096)
        self.assertGreater(len(a['stdout']), 1000)

    def test_bad_requests(self):
        sid = self.sandbox()
        for body, words in [({}, 'code must be a string'), ({'code': 5}, 'code must be'),
                            ({'code': '1', 'timeout': '0s'}, 'timeout'),
                            ({'code': '1', 'output_cap': '1g'}, 'output_cap'),
                            ({'code': '1', 'cwd': '/'}, 'cwd')]:
            r = self.c.post('/v1/sandboxes/%s/code' % sid, body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertIn(words, r.json['error']['message'])
        r = self.c.post('/v1/sandboxes/sb-0000000000000000/code', {'code': '1'})
        self.assertEqual(r.status, 404, r)

    def test_tenancy(self):
        """Another tenant's sandbox is an unknown id for /code (POST, DELETE) and
        /code/restart (404), as
        for every sandbox route; its own tenant reaches it (positive control)."""
        r = self.c.request('POST', '/v1/sandboxes', {'image': IMAGE},
                           headers={'X-Clearing-Tenant': 'code-a'})
        self.assertEqual(r.status, 201, r)
        sid = r.json['id']
        self.made.append(sid)
        for method, path, body in (('POST', '/code', {'code': '1'}),
                                   ('POST', '/code/restart', None), ('DELETE', '/code', None)):
            r = self.c.request(method, '/v1/sandboxes/%s%s' % (sid, path), body,
                               headers={'X-Clearing-Tenant': 'code-b'})
            self.assertEqual(r.status, 404, (method, path, r))
        r = self.c.request('POST', '/v1/sandboxes/%s/code' % sid, {'code': '7 * 6'},
                           headers={'X-Clearing-Tenant': 'code-a'}, timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['result']['text/plain'], '42')

    def test_image_without_kernel(self):
        sid = self.sandbox(image='clearing/default:latest')
        r = self.c.post('/v1/sandboxes/%s/code' % sid, {'code': '1'}, timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual(r.status, 503, r)
        self.assertIn('python3', r.json['error']['message'])
        # A restart that cannot start a kernel: its one record says it was refused and why,
        # with no "ok" before it (test_restart_endpoint: the control, a restart that is done).
        r = self.c.post('/v1/sandboxes/%s/code/restart' % sid, timeout=CELL_HTTP_TIMEOUT)
        self.assertEqual(r.status, 503, r)
        recs = [x for x in audit_records(MAIN, 'code.restart') if x.get('sandbox') == sid]
        self.assertEqual([x['outcome'] for x in recs], ['refused'], recs)
        self.assertIn('python3', recs[0]['details']['error'])
        self.assertIs(recs[0]['details']['kernel_ended'], False)

    def test_sessions_side_by_side_and_no_leak(self):
        # Twenty kernels starting at once on a loaded host take minutes: the sandboxes must not
        # be reaped as idle (default 300 s) or expire (600 s) while they wait their turn.
        sids = [self.sandbox(idle_timeout=0, limits={'lifetime': '3600s'})
                for _ in range(SESSIONS)]
        answers, errors = {}, []

        def one(i, sid):
            try:
                c = MAIN.client()
                cell(c, sid, 'me = %d' % i)
                answers[sid] = cell(c, sid, 'me * 10')
            except Exception as e:  # reported below
                errors.append('%s: %s' % (sid, e))
        threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(sids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CELL_HTTP_TIMEOUT * 2)
        self.assertEqual(errors, [])
        for i, sid in enumerate(sids):
            self.assertEqual(answers[sid]['result']['text/plain'], str(i * 10))
        # Positive control: each sandbox runs a kernel, and the engine runs its runsc.
        for sid in sids[:3]:
            self.assertEqual(len(kernel_pids(self.c, sid)), 1, sid)
        info = docker('GET', '/containers/clearing-%s/json' % sids[0])
        self.assertEqual(info.status, 200)
        cid = json.loads(info.body)['Id']
        self.assertTrue(runsc_pids(cid))
        # Destroyed: no container, no runsc of it left.
        for sid in sids:
            r = self.c.delete('/v1/sandboxes/%s?wait=true' % sid, timeout=300)
            self.assertEqual(r.status, 204, r)
        self.made = []
        for sid in sids:
            self.assertTrue(wait_for(lambda s=sid: docker(
                'GET', '/containers/clearing-%s/json' % s).status == 404, 120), sid)
        self.assertTrue(wait_for(lambda: not runsc_pids(cid), 120))
        # A destroyed sandbox's session takes no cell.
        r = self.c.post('/v1/sandboxes/%s/code' % sids[0], {'code': '1'})
        self.assertEqual(r.status, 409, r)


def clearing_code(*args):
    env = dict(os.environ, CLEARING_HOST='unix://' + MAIN.sock)
    return subprocess.run([ct.CLEARING, 'code'] + list(args), env=env, capture_output=True,
                          text=True, timeout=CELL_HTTP_TIMEOUT)


class Stop(unittest.TestCase):
    def test_daemon_stops_with_a_cell_in_flight(self):
        """SIGTERM while a streamed cell runs: the cell ends ("the daemon is stopping"), the
        daemon exits cleanly and soon, not after the cell's timeout; nothing was freed under the
        cell (no crash). The session is gone with the daemon; the sandbox stays for the next."""
        d = Daemon('code-stop', prefix='clr-code-').start()
        c = d.client()
        sid = create(c)
        # The connection may be cut by the stop: seen below.
        t, events = stream_long_cell(d.sock, sid, 900)
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(120)
        self.assertEqual(rc, 0, d.log_tail())
        t.join(60)
        self.assertFalse(t.is_alive())
        d.start()
        r = d.client().delete('/v1/sandboxes/%s?wait=true' % sid, timeout=300)
        self.assertEqual(r.status, 204, r)
        d.stop()


class Quota(unittest.TestCase):
    def test_tenant_code_sessions_quota(self):
        """A daemon whose tenant codeq has max_code_sessions 1: with one kernel running in its
        sandbox A, a cell in its sandbox B is 429 limit naming the quota and what to do (so is
        the stream, before its 200, and a restart), audited as refused, and no kernel starts
        in B; meanwhile the operator's sandbox runs a cell (another tenant is not bound by
        codeq's quota) and A's restart keeps A's place. Once A is destroyed its place is free:
        B's cell runs (the control that B could run one at all)."""
        d = Daemon('code-quota', prefix='clr-code-')
        config = os.path.join(d.dir, 'serve.json')
        with open(config, 'w') as f:
            json.dump({'tenants': {'codeq': {'max_code_sessions': 1}}}, f)
        d.args = ['--config', config]
        d.start()
        op = d.client()
        as_q = {'X-Clearing-Tenant': 'codeq'}
        made = []

        def q_post(path, body=None, timeout=CELL_HTTP_TIMEOUT):
            return op.request('POST', path, body, headers=as_q, timeout=timeout)

        def q_create():
            r = q_post('/v1/sandboxes', {'image': IMAGE}, timeout=300)
            self.assertEqual(r.status, 201, r)
            made.append(r.json['id'])
            return r.json['id']

        def expect_quota_refusal(r, what):
            self.assertEqual(r.status, 429, (what, r))
            self.assertEqual(r.json['error']['code'], 'limit', (what, r))
            msg = r.json['error']['message']
            for words in ('tenant codeq is at its quota', 'max_code_sessions 1 for tenant codeq',
                          'destroy a sandbox', 'tenants.codeq.max_code_sessions'):
                self.assertIn(words, msg, (what, msg))

        try:
            a, b = q_create(), q_create()
            r = q_post('/v1/sandboxes/%s/code' % a, {'code': '6 * 7', 'timeout': '120s'})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json['result']['text/plain'], '42', r)

            expect_quota_refusal(q_post('/v1/sandboxes/%s/code' % b,
                                        {'code': '1', 'timeout': '120s'}), 'cell')
            expect_quota_refusal(q_post('/v1/sandboxes/%s/code?stream=true' % b,
                                        {'code': '1', 'timeout': '120s'}), 'stream')
            expect_quota_refusal(q_post('/v1/sandboxes/%s/code/restart' % b), 'restart')
            refused = [x for x in audit_records(d, 'code') + audit_records(d, 'code.restart')
                       if x.get('sandbox') == b]
            # The cell's, the stream's (refused by its check, before its 200: recorded as the
            # cell's) and the restart's; no "ok" among them.
            self.assertEqual([(x['action'], x['outcome']) for x in refused],
                             [('code', 'refused')] * 2 + [('code.restart', 'refused')], refused)
            for x in refused:
                self.assertIn('max_code_sessions 1', x['details']['error'])
            self.assertEqual([x for x in audit_records(d, 'code.start')
                              if x.get('sandbox') == b], [])
            self.assertEqual(kernel_pids(op, b), [])

            # Another tenant (the operator's default) runs a kernel all the same.
            c = create(op)
            made.append(c)
            self.assertEqual(cell(op, c, '2 + 2')['result']['text/plain'], '4')

            # A holds the place: its restart and its cells go on.
            r = q_post('/v1/sandboxes/%s/code/restart' % a)
            self.assertEqual(r.status, 200, r)
            r = q_post('/v1/sandboxes/%s/code' % a, {'code': '1 + 1', 'timeout': '120s'})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json['result']['text/plain'], '2', r)

            # A's session ended: its place is given back at once, and B's cell runs; then B
            # holds it (A's cell is refused), until B's session is ended in turn and A's cell
            # runs in a fresh kernel that says so.
            r = op.request('DELETE', '/v1/sandboxes/%s/code' % a, headers=as_q, timeout=300)
            self.assertEqual(r.status, 204, r)
            r = q_post('/v1/sandboxes/%s/code' % b, {'code': '3 * 3', 'timeout': '120s'})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json['result']['text/plain'], '9', r)
            expect_quota_refusal(q_post('/v1/sandboxes/%s/code' % a,
                                        {'code': '1', 'timeout': '120s'}), 'cell of A')
            r = op.request('DELETE', '/v1/sandboxes/%s/code' % b, headers=as_q, timeout=300)
            self.assertEqual(r.status, 204, r)
            r = q_post('/v1/sandboxes/%s/code' % a, {'code': '1 + 1', 'timeout': '120s'})
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json['restarted'], r)
            self.assertIn('session was ended', r.json['message'])
            self.assertEqual([(x['outcome'], x['details']['kernel_ended'])
                              for x in audit_records(d, 'code.end')], [('ok', True)] * 2)

            # A destroyed: its kernel ends with it (the daemon learns it from the bridge's end),
            # and B's cell runs.
            r = op.delete('/v1/sandboxes/%s?wait=true' % a, timeout=300)
            self.assertEqual(r.status, 204, r)
            answers = []

            def b_runs():
                r = q_post('/v1/sandboxes/%s/code' % b, {'code': '3 * 3', 'timeout': '120s'})
                answers.append(r)
                if r.status == 429:
                    return False
                self.assertEqual(r.status, 200, r)
                return True
            self.assertTrue(wait_for(b_runs, 300), answers[-1:])
            self.assertEqual(answers[-1].json['result']['text/plain'], '9', answers[-1])
        finally:
            for sid in made:
                destroy_quietly(op, sid)
            d.stop()


class Cli(unittest.TestCase):
    def test_cli(self):
        c = MAIN.client()
        sid = create(c)
        try:
            self.cli(sid)
        finally:
            destroy_quietly(c, sid)

    def cli(self, sid):
        r = clearing_code(sid, '-c', 'v = 20\nprint("out")\nv + 1')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, 'out\n21\n')
        tmp = tempfile.mkdtemp(prefix='clr-code-cli-')
        try:
            src = os.path.join(tmp, 'plot.py')
            with open(src, 'w') as f:
                f.write('import matplotlib.pyplot as plt\nplt.plot([v, 1])\nplt.show()\n')
            r = clearing_code(sid, '-f', src, '--images', tmp)
            self.assertEqual(r.returncode, 0, r.stderr)
            pngs = [n for n in os.listdir(tmp) if n.endswith('.png')]
            self.assertEqual(len(pngs), 1, (os.listdir(tmp), r.stderr))
            with open(os.path.join(tmp, pngs[0]), 'rb') as f:
                w, h = png_size(f.read())
            self.assertGreater(w * h, 0)
            self.assertIn(pngs[0], r.stderr)
        finally:
            shutil.rmtree(tmp)
        r = clearing_code(sid, '-c', '1/0')
        self.assertEqual(r.returncode, 1)
        self.assertIn('ZeroDivisionError', r.stderr)
        r = clearing_code(sid, '--json', '-c', 'v')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)['result']['text/plain'], '20')
        r = clearing_code(sid, '-c', 'import time\ntime.sleep(60)', '--timeout', '2s')
        self.assertEqual(r.returncode, 124, r.stderr)
        r = clearing_code(sid, '--restart')
        self.assertEqual((r.returncode, r.stdout), (0, 'restarted\n'), r.stderr)
        self.assertEqual(clearing_code(sid, '-c', 'v').returncode, 1)
        self.assertEqual(clearing_code(sid, '-c', 'w = 3').returncode, 0)
        r = clearing_code(sid, '--end')
        self.assertEqual((r.returncode, r.stdout), (0, 'ended\n'), r.stderr)
        r = clearing_code(sid, '-c', 'w')
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('NameError', r.stderr)
        self.assertIn('session was ended', r.stderr)
        r = clearing_code('sb-0000000000000000', '--end')
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('no sandbox', r.stderr)
        # Usage errors name what is wrong.
        for args, words in [((sid,), 'usage'), (('-c', '1'), 'usage'),
                            (('sb-x', '-c', '1'), 'not a sandbox id'),
                            ((sid, '-c', '1', '--restart'), 'usage'),
                            ((sid, '-c', '1', '--end'), 'usage'),
                            ((sid, '--restart', '--end'), 'usage'),
                            ((sid, '--end', '--timeout', '5s'), "a cell's options"),
                            ((sid, '--restart', '--json'), "a cell's options"),
                            ((sid, '-f', '/nonexistent.py'), 'nonexistent')]:
            r = clearing_code(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(words, r.stderr)


class Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)


def main():
    args = sys.argv[1:]
    if not args or not os.access(args[0], os.X_OK):
        print('usage: test_code.py PATH/TO/clearing [NAME-PATTERN...]', file=sys.stderr)
        return 2
    ct.CLEARING = os.path.abspath(args.pop(0))
    if 'CLEARING_AGENT' not in os.environ:
        os.environ['CLEARING_AGENT'] = ct.default_agent(ct.CLEARING)
    if os.geteuid() != 0:
        print('the code interpreter tests need root (the daemon drives dockerd and runsc)')
        return 77
    if docker('GET', '/images/%s/json' % IMAGE).status != 200:
        print('no %s: build it with images/build.sh datascience' % IMAGE)
        return 77
    ct.check_answers()
    loader = unittest.TestLoader()
    if args:
        loader.testNamePatterns = ['*%s*' % a for a in args]
    suite = loader.loadTestsFromModule(sys.modules[__name__])
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result).run(suite)
    bad = {t.id() for t, _ in result.failures + result.errors}
    answers_ok, summary = ct.answer_check_summary()
    print(summary)
    if not answers_ok:
        bad.add('the answers against docs/openapi.yaml')
    print('daemon logs in %s' % ', '.join(d.dir for d in DAEMONS))
    print('%d passed, %d failed' % (len(result.passed), len(bad)))
    if not bad:
        for d in DAEMONS:
            shutil.rmtree(d.dir, ignore_errors=True)
    return 1 if bad or not result.passed else 0


if __name__ == '__main__':
    sys.exit(main())
