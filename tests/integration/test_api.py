#!/usr/bin/env python3
"""Black-box tests of the REST API of `clearing serve`.

They start real daemons (subprocesses) against the real dockerd with runsc, talk HTTP to them over
their unix socket (and TCP with a bearer token), and check what the API answers and what it leaves
behind in the engine. Python 3 standard library only. Needs root and a running engine.

    usage: test_api.py PATH/TO/clearing [NAME-PATTERN...]

CLEARING_AGENT must name the agent binary (meson's integration_env sets it; without it the agent
of the build directory next to the binary is used). Each daemon gets a fresh state directory and
socket under /tmp; every sandbox a test creates is destroyed by a cleanup, and at the end any
container still labelled as one of these daemons' is force-removed.

The last line of output is "N passed, M failed"; the exit status is non-zero on any failure.
"""
import base64
import errno
import json
import random
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import clearing_test as ct  # noqa: E402
from clearing_test import (DAEMONS, DOCKER_SOCK, IMAGE, Client, Daemon,  # noqa: E402
                           destroy_quietly, docker, docker_remove_quietly, free_port,
                           ndjson_events, parse_metrics, runsc_pids, wait_for)

CLEARING = None  # set by main()
LABEL = 'io.clearing.'
ID_RE = re.compile(r'^sb-[0-9a-f]{16}$')
EXEC_ID_RE = re.compile(r'^ex-[0-9a-f]{16}$')
MAIN = None    # the shared daemon of most tests


# ---- HTTP plumbing ----

def container_removed(sid, timeout=60):
    """Destroy returns before the container is removed: wait (bounded) for the removal."""
    return wait_for(lambda: docker('GET', '/containers/clearing-%s/json' % sid).status == 404,
                    timeout)


def gate_name():
    return 'gate-' + os.urandom(6).hex()


def held_until(gate):
    """A shell fragment that waits until the file GATE appears in the working directory (the
    workspace): a command held by it ends when the test says so, not when a clock runs out."""
    return 'while [ ! -e %s ]; do sleep 0.1; done' % gate


def open_gate(client, sid, gate):
    """Writes the gate file through the files API (it writes the host's side of the workspace,
    which the sandbox sees at once; it counts no command, so it works at max_execs too)."""
    return client.request('PUT', '/v1/sandboxes/%s/files/%s' % (sid, gate), b'open\n',
                          headers={'Content-Type': 'application/octet-stream'})


def start_streaming_exec(client, sid, body, timeout=120):
    """POSTs a streamed exec; returns (connection, events) once its "started" event arrived."""
    conn = client.connection(timeout=timeout)
    headers = {'Content-Type': 'application/json'}
    if client.token:
        headers['Authorization'] = 'Bearer ' + client.token
    conn.request('POST', '/v1/sandboxes/%s/exec?stream=true' % sid,
                 body=json.dumps(body).encode(), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        conn.close()
        raise AssertionError('streaming exec: HTTP %d %r' % (resp.status, resp.read()[:600]))
    events = ndjson_events(resp)
    started = next(events, None)
    if not started or started.get('event') != 'started':
        conn.close()
        raise AssertionError('streaming exec: first event %r' % (started,))
    return conn, started, events


class EngineProxy:
    """A relay between a daemon and dockerd (point CLEARING_DOCKER_HOST at .path) that can hold
    the requests of one kind (the removal of one container, every container create, any method
    and target): the test, not the engine's speed, decides whether a request is still pending
    when it acts. A held request waits on the daemon's side too, up to its engine request
    deadline (30 s): a test acts within that. Requests are read one by one up to a
    connection's switch to a raw stream (attach, exec), then bytes are copied as they come; the
    relay counts what it read (count). It can also play an engine that restarts: cut the event
    streams (as a stopping dockerd ends them) and refuse connections for a while. One hold per
    relay: once released (drop_held, pass_held), later requests are not held."""

    def __init__(self, path):
        self.path = path
        self.hold = None                  # compiled pattern of targets of hold_method to hold
        self.hold_method = b'DELETE'
        self.refusing = False             # True: connections are closed at once
        self.event_clients = []           # client sockets of GET /events streams
        self.events_seen = threading.Event()  # set at each GET /events
        self.held = threading.Event()     # set once a request was held
        self.release = threading.Event()  # set: held requests go on (or are dropped)
        self.dropping = False
        self.seen = []                    # (method, target) of every request read, in order
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def hold_requests(self, method, pattern):
        """Holds every request of method (bytes) whose target matches pattern (bytes, a regular
        expression) until drop_held or pass_held: what sent it is provably at that request,
        and provably past none of what follows it, for as long as the test needs."""
        self.hold_method = method
        self.hold = re.compile(pattern)

    def hold_removal_of(self, sid):
        self.hold_requests(b'DELETE', rb'^/v[0-9.]+/containers/clearing-%s\?' % sid.encode())

    def hold_creates(self):
        """Holds every container create: a sandbox's create is provably under way, and
        provably not finished, while it is held."""
        self.hold_requests(b'POST', rb'^/v[0-9.]+/containers/create\b')

    def drop_held(self):
        """Held requests are discarded, never forwarded: the engine never sees them."""
        self.dropping = True
        self.release.set()

    def pass_held(self):
        """Held requests go on to the engine, and no later one is held: what was under way
        when the test acted finishes as it would have without the relay."""
        self.hold = None
        self.release.set()

    def count(self, method, pattern):
        """How many requests of method whose target matches pattern (bytes, a regular
        expression) the relay has read so far: a condition a test can wait for (a daemon's
        periodic look at the engine has happened again), where a clock would guess."""
        rx = re.compile(pattern)
        return sum(1 for m, t in list(self.seen) if m == method and rx.match(t))

    def close(self):
        self.drop_held()
        self.listener.close()

    def cut_event_streams(self):
        """Ends every event stream relayed so far; returns how many there were."""
        clients, self.event_clients = self.event_clients, []
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(clients)

    def accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def relay(self, client):
        if self.refusing:
            client.close()
            return
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            engine.connect(DOCKER_SOCK)
        except OSError:
            client.close()
            return
        back = threading.Thread(target=self.pump, args=(engine, client), daemon=True)
        back.start()
        try:
            if self.requests(client, engine):
                self.pump(client, engine)
            back.join()
        except OSError:
            pass
        finally:
            client.close()
            engine.close()

    def requests(self, src, dst):
        """Forwards requests; True once the connection became a raw stream, False at its end."""
        buf = b''
        while True:
            while b'\r\n\r\n' not in buf:
                data = src.recv(65536)
                if not data:
                    if buf:
                        dst.sendall(buf)
                    dst.shutdown(socket.SHUT_WR)
                    return False
                buf += data
            head, buf = buf.split(b'\r\n\r\n', 1)
            lines = head.split(b'\r\n')
            method, target = (lines[0].split(b' ') + [b'', b''])[:2]
            self.seen.append((method, target))
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(b':')
                headers[k.strip().lower()] = v.strip()
            if method == b'GET' and re.match(rb'^/v[0-9.]+/events\?', target):
                self.event_clients.append(src)
                self.events_seen.set()
            pattern = self.hold
            if method == self.hold_method and pattern and pattern.match(target):
                self.held.set()
                self.release.wait()
                if self.dropping:
                    dst.close()
                    src.close()
                    raise OSError('held request dropped')
            dst.sendall(head + b'\r\n\r\n')
            if b'upgrade' in headers or b'transfer-encoding' in headers:
                dst.sendall(buf)
                return True
            length = int(headers.get(b'content-length', b'0'))
            while len(buf) < length:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
            dst.sendall(buf[:length])
            buf = buf[length:]


# ---- daemons ----

def sweep():
    """Stops every daemon (destroying what it still runs) and force-removes any container still
    labelled as one of theirs. Returns the ids of what the tests had left behind."""
    removed = []
    for d in DAEMONS:
        d.ensure_running()
        if d.running():
            c = d.client()
            try:
                r = c.get('/v1/sandboxes?state=running', timeout=30)
                for s in (r.json or {}).get('sandboxes', []):
                    destroy_quietly(c, s['id'])
                    removed.append(s['id'])
            except Exception:
                pass
        d.stop()
    owners = {d.owner for d in DAEMONS}
    flt = urllib.parse.quote(json.dumps({'label': [LABEL + 'managed-by=clearing']}))
    r = docker('GET', '/containers/json?all=1&filters=' + flt)
    for c in r.json or []:
        if (c.get('Labels') or {}).get(LABEL + 'owner') in owners:
            docker_remove_quietly(c['Id'])
            removed.append(c['Names'][0] if c.get('Names') else c['Id'])
    # Last resort: workspace mounts under our directories (they would make rmtree fail).
    dirs = tuple(d.dir + '/' for d in DAEMONS)
    with open('/proc/self/mountinfo') as f:
        points = [line.split()[4] for line in f]
    for mp in sorted((m for m in points if m.startswith(dirs)), reverse=True):
        subprocess.run(['umount', '-l', mp], check=False)
        removed.append('mount ' + mp)
    return removed


# ---- shared helpers of the test cases ----

class ApiTest(unittest.TestCase):
    daemon = None  # None: the shared MAIN daemon

    @classmethod
    def d(cls):
        return cls.daemon or MAIN

    @property
    def api(self):
        return self.d().client()

    @classmethod
    def create_for_class(cls, body=None):
        """Creates a sandbox that lives as long as the class (destroyed by a class cleanup)."""
        c = cls.d().client()
        r = c.post('/v1/sandboxes', body if body is not None else {})
        if r.status == 201 and r.json and 'id' in r.json:
            cls.addClassCleanup(destroy_quietly, c, r.json['id'])
        if r.status != 201:
            raise AssertionError('create failed: %r' % r)
        return r.json

    def create(self, body=None, client=None):
        """Creates a sandbox destroyed by this test's cleanup, whatever the outcome."""
        c = client or self.api
        r = c.post('/v1/sandboxes', body if body is not None else {})
        if r.status == 201 and r.json and 'id' in r.json:
            self.addCleanup(destroy_quietly, c, r.json['id'])
        self.assertEqual(r.status, 201, r)
        return r.json

    def exec(self, sid, body, client=None, status=200):
        r = (client or self.api).post('/v1/sandboxes/%s/exec' % sid, body)
        self.assertEqual(r.status, status, r)
        return r.json

    def run_ok(self, sid, body, client=None):
        """Runs a command that must exit 0; returns its result."""
        rec = self.exec(sid, body, client)
        res = rec['result']
        self.assertEqual((res['status'], res['exit_code']), ('exited', 0), rec)
        return res

    def audit_records(self, sid, action):
        """The daemon's audit records of action about sandbox sid, in order."""
        with open(os.path.join(self.d().state, 'audit.log')) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        return [r for r in recs if r.get('sandbox') == sid and r.get('action') == action]

    def assertError(self, r, status, code=None, mentions=()):
        self.assertEqual(r.status, status, r)
        self.assertIsInstance(r.json, dict, r)
        err = r.json.get('error')
        self.assertIsInstance(err, dict, r)
        self.assertIsInstance(err.get('code'), str, r)
        self.assertIsInstance(err.get('message'), str, r)
        self.assertTrue(err['message'], r)
        if code:
            self.assertEqual(err['code'], code, r)
        for m in ([mentions] if isinstance(mentions, (str, re.Pattern)) else mentions):
            if isinstance(m, re.Pattern):
                self.assertRegex(err['message'], m, r)
            else:
                self.assertIn(m, err['message'], r)
        return err


# ---- health and metrics ----

class T01HealthMetrics(ApiTest):
    def test_health(self):
        r = self.api.get('/v1/health')
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get('Content-Type', '').startswith('application/json'))
        self.assertEqual(r.json['status'], 'ok', r)
        self.assertEqual(r.json['engine'], 'ok', r)
        self.assertIsInstance(r.json['version'], str)
        self.assertIsInstance(r.json['sandboxes'], int)
        self.assertIsInstance(r.json['running_execs'], int)

    def test_metrics_move(self):
        r = self.api.get('/metrics')
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get('Content-Type', '').startswith('text/plain'), r.headers)
        before, types = parse_metrics(r.text)
        for name, typ in [('clearing_sandboxes_created_total', 'counter'),
                          ('clearing_execs_total', 'counter'),
                          ('clearing_sandboxes_destroyed_total', 'counter'),
                          ('clearing_create_seconds', 'histogram'),
                          ('clearing_exec_seconds', 'histogram'),
                          ('clearing_destroy_seconds', 'histogram'),
                          ('clearing_sandboxes', 'gauge')]:
            self.assertEqual(types.get(name), typ, name)

        c = self.api
        r = c.post('/v1/sandboxes', {})
        if r.status == 201:
            self.addCleanup(destroy_quietly, c, r.json['id'])
        self.assertEqual(r.status, 201, r)
        sid = r.json['id']
        mid, _ = c.metrics()
        self.run_ok(sid, {'argv': ['true']})
        self.assertEqual(c.delete('/v1/sandboxes/' + sid).status, 204)
        after, _ = c.metrics()

        def delta(k):
            return after[k] - before[k]
        self.assertEqual(delta('clearing_sandboxes_created_total'), 1)
        self.assertEqual(mid['clearing_sandboxes{state="running"}'],
                         before['clearing_sandboxes{state="running"}'] + 1)
        self.assertEqual(delta('clearing_execs_total'), 1)
        self.assertEqual(delta('clearing_sandboxes_destroyed_total{reason="client"}'), 1)
        for h in ('clearing_create_seconds', 'clearing_exec_seconds', 'clearing_destroy_seconds'):
            self.assertEqual(delta(h + '_count'), 1, h)
            self.assertGreater(delta(h + '_sum'), 0, h)
            self.assertEqual(after[h + '_bucket{le="+Inf"}'], after[h + '_count'], h)
            buckets = [v for k, v in after.items() if k.startswith(h + '_bucket{')]
            self.assertEqual(buckets, sorted(buckets), '%s buckets are cumulative' % h)
        self.assertEqual(after['clearing_sandboxes{state="running"}'],
                         before['clearing_sandboxes{state="running"}'])


# ---- lifecycle ----

class T02Lifecycle(ApiTest):
    def test_create_echoes_fields_and_inspect(self):
        req = {'image': IMAGE,
               'limits': {'cpus': 0.5, 'memory': '256m', 'pids': 128, 'lifetime': '120s'},
               'idle_timeout': '45s',
               'env': {'FOO': 'foo-value-secret', 'BAR': 'x'},
               'metadata': {'owner': 'api-test', 'ticket': 'T-1'}}
        before = int(time.time())
        sb = self.create(req)
        after = time.time()
        self.assertRegex(sb['id'], ID_RE)
        self.assertEqual(sb['state'], 'running')
        self.assertEqual(sb['image'], IMAGE)
        self.assertEqual(sb['runtime'], 'runsc')
        self.assertIs(sb['insecure'], False)
        self.assertEqual(sb['idle_timeout'], 45)
        self.assertEqual(sb['metadata'], req['metadata'])
        self.assertEqual(sorted(sb['env']), ['BAR', 'FOO'])
        self.assertNotIn('foo-value-secret', json.dumps(sb), 'env values are not echoed')
        self.assertEqual(sb['limits']['cpus'], '0.500')
        self.assertEqual(sb['limits']['memory'], '256m')
        self.assertEqual(sb['limits']['pids'], 128)
        self.assertEqual(sb['limits']['lifetime'], 120)
        self.assertEqual(sb['expires_at'] - sb['created_at'], 120)
        self.assertGreaterEqual(sb['max_expires_at'], sb['expires_at'])
        # Stamped while the request was answered (whole seconds), on the host's clock.
        self.assertGreaterEqual(sb['created_at'], before)
        self.assertLessEqual(sb['created_at'], after)
        self.assertEqual(sb['destroyed_at'], 0)

        r = self.api.get('/v1/sandboxes/' + sb['id'])
        self.assertEqual(r.status, 200, r)
        for k in ('id', 'state', 'image', 'runtime', 'created_at', 'expires_at', 'max_expires_at',
                  'idle_timeout', 'metadata', 'env', 'limits'):
            self.assertEqual(r.json[k], sb[k], k)
        # The engine really applies it: the container runs under runsc with the memory limit.
        d = docker('GET', '/containers/clearing-%s/json' % sb['id'])
        self.assertEqual(d.status, 200, d)
        self.assertEqual(d.json['HostConfig']['Runtime'], 'runsc')
        self.assertEqual(d.json['HostConfig']['Memory'], 256 << 20)

    def test_list_filtered_by_state_and_label(self):
        tag = 'api-%d-%d' % (os.getpid(), time.monotonic_ns())
        a = self.create({'metadata': {'suite': tag, 'role': 'a'}})
        b = self.create({'metadata': {'suite': tag, 'role': 'b'}})
        other = self.create({'metadata': {'suite': tag + '-other'}})

        def ids(query):
            r = self.api.get('/v1/sandboxes' + query)
            self.assertEqual(r.status, 200, r)
            return {s['id'] for s in r.json['sandboxes']}

        all_ids = ids('')
        self.assertTrue({a['id'], b['id'], other['id']} <= all_ids)
        self.assertTrue({a['id'], b['id'], other['id']} <= ids('?state=running'))
        self.assertEqual(ids('?label=' + urllib.parse.quote('suite=' + tag)), {a['id'], b['id']})
        self.assertEqual(ids('?label=' + urllib.parse.quote('role=b') + '&state=running') &
                         {a['id'], b['id'], other['id']}, {b['id']})
        self.assertEqual(ids('?label=' + urllib.parse.quote('suite=nobody-has-this')), set())
        self.assertFalse({a['id'], b['id']} & ids('?state=destroyed'))

        self.assertEqual(self.api.delete('/v1/sandboxes/' + a['id']).status, 204)
        self.assertIn(a['id'], ids('?state=destroyed'))
        self.assertNotIn(a['id'], ids('?state=running'))
        self.assertEqual(ids('?state=running&label=' + urllib.parse.quote('suite=' + tag)),
                         {b['id']})
        self.assertError(self.api.get('/v1/sandboxes?state=bogus'), 400, 'invalid', 'bogus')
        self.assertError(self.api.get('/v1/sandboxes?label=novalue'), 400, 'invalid', 'label')

    def test_extend(self):
        sb = self.create({'limits': {'lifetime': '60s'}})
        url = '/v1/sandboxes/%s/extend' % sb['id']
        r = self.api.post(url, {'by': '60s'})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['expires_at'], sb['expires_at'] + 60)
        self.assertEqual(r.json['max_expires_at'], sb['max_expires_at'])
        self.assertEqual(self.api.get('/v1/sandboxes/' + sb['id']).json['expires_at'],
                         sb['expires_at'] + 60)
        # Past max_expires_at: refused with a message, nothing changes.
        too_far = sb['max_expires_at'] - sb['expires_at'] + 3600
        r = self.api.post(url, {'by': '%ds' % too_far})
        err = self.assertError(r, 429, 'limit')
        self.assertRegex(err['message'], r'max_lifetime|cannot live past')
        self.assertEqual(self.api.get('/v1/sandboxes/' + sb['id']).json['expires_at'],
                         sb['expires_at'] + 60)
        self.assertError(self.api.post(url, {'by': '0s'}), 400, 'invalid', 'by')
        self.assertError(self.api.post(url, {}), 400, 'invalid', 'by')

    def test_destroy_is_idempotent_and_final(self):
        sb = self.create()
        sid = sb['id']
        r = self.api.delete('/v1/sandboxes/' + sid)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b'')
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['state'], 'destroyed')
        self.assertEqual(r.json['destroy_reason'], 'client')
        self.assertGreater(r.json['destroyed_at'], 0)
        self.assertTrue(container_removed(sid), 'container of %s not removed' % sid)
        self.assertEqual(self.api.delete('/v1/sandboxes/' + sid).status, 204)
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}),
                         409, 'conflict')
        self.assertError(self.api.post('/v1/sandboxes/%s/extend' % sid, {'by': '10s'}),
                         409, 'conflict')


# ---- exec ----

class T03Exec(ApiTest):
    @classmethod
    def setUpClass(cls):
        cls.sb = cls.create_for_class({'env': {'FOO': 'from-sandbox', 'BAR': 'sandbox-bar'}})
        cls.other = cls.create_for_class({})

    @property
    def sid(self):
        return self.sb['id']

    def test_argv_form(self):
        res = self.run_ok(self.sid, {'argv': ['echo', 'a  b', '$HOME', '*']})
        self.assertEqual(res['stdout'], 'a  b $HOME *\n', 'argv is not interpreted by a shell')
        self.assertEqual(res['stdout_encoding'], 'utf-8')
        self.assertEqual(res['stderr'], '')

    def test_shell_form(self):
        res = self.run_ok(self.sid, {'shell': 'echo $((6*7)); echo err >&2; id -u'})
        self.assertEqual(res['stdout'], '42\n1000\n')
        self.assertEqual(res['stderr'], 'err\n')
        self.assertEqual(res['stdout_bytes'], 8)

    def test_file_byte_range(self):
        data = bytes(range(256)) * 4
        url = '/v1/sandboxes/%s/files/range.bin' % self.sid
        r = self.api.request('PUT', url, data,
                             headers={'Content-Type': 'application/octet-stream'})
        self.assertEqual(r.status, 201, r)
        # Positive control: without a Range header, the whole file.
        r = self.api.get(url)
        self.assertEqual((r.status, r.body), (200, data), r)
        for rng, first, last in (('bytes=10-19', 10, 19), ('bytes=1000-', 1000, 1023),
                                 ('bytes=1000-5000', 1000, 1023), ('bytes=-24', 1000, 1023),
                                 ('bytes=0-0', 0, 0)):
            r = self.api.get(url, headers={'Range': rng})
            self.assertEqual(r.status, 206, (rng, r))
            self.assertEqual(r.body, data[first:last + 1], rng)
            self.assertEqual(r.headers.get('Content-Range'), 'bytes %d-%d/1024' % (first, last),
                             rng)
        for rng in ('bytes=1024-', 'bytes=5000-6000', 'bytes=-0'):
            r = self.api.get(url, headers={'Range': rng})
            self.assertError(r, 416, 'invalid', '1024 bytes')
            self.assertEqual(r.headers.get('Content-Range'), 'bytes */1024', rng)
        # Several ranges, or another unit: ignored, the whole file.
        for rng in ('bytes=0-1,5-6', 'items=0-1', 'bytes=9-2'):
            r = self.api.get(url, headers={'Range': rng})
            self.assertEqual((r.status, r.body), (200, data), (rng, r))

    def test_argv_xor_shell(self):
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sid,
                                       {'argv': ['true'], 'shell': 'true'}), 400, 'invalid')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sid, {}), 400, 'invalid')

    def test_env(self):
        res = self.run_ok(self.sid, {'shell': 'echo "$FOO|$BAR|$SECRET"',
                                     'env': {'BAR': 'exec-bar', 'SECRET': 'hunter2-secret'}})
        self.assertEqual(res['stdout'], 'from-sandbox|exec-bar|hunter2-secret\n')

    def test_cwd(self):
        self.assertEqual(self.run_ok(self.sid, {'argv': ['pwd']})['stdout'], '/workspace\n')
        res = self.run_ok(self.sid, {'argv': ['pwd'], 'cwd': '/tmp'})
        self.assertEqual(res['stdout'], '/tmp\n')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sid,
                                       {'argv': ['pwd'], 'cwd': 'tmp'}), 400, 'invalid', 'cwd')

    def test_stdin(self):
        text = 'héllo wörld\nline two\n'
        res = self.run_ok(self.sid, {'argv': ['cat'], 'stdin': text})
        self.assertEqual(res['stdout'], text)
        res = self.run_ok(self.sid, {'shell': 'wc -l', 'stdin': text})
        self.assertEqual(res['stdout'].strip(), '2')

    def test_stdin_base64_binary_roundtrip(self):
        data = bytes(range(256)) * 4 + b'\xff\xfe\x00\x80'
        rec = self.exec(self.sid, {'argv': ['cat'],
                                   'stdin_base64': base64.b64encode(data).decode()})
        res = rec['result']
        self.assertEqual(res['status'], 'exited', rec)
        self.assertEqual(res['stdout_encoding'], 'base64', 'output is not UTF-8')
        self.assertEqual(base64.b64decode(res['stdout']), data)
        self.assertEqual(res['stdout_bytes'], len(data))
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sid,
                                       {'argv': ['cat'], 'stdin_base64': 'not base64!'}),
                         400, 'invalid', 'stdin_base64')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sid,
                                       {'argv': ['cat'], 'stdin': 'x', 'stdin_base64': 'eA=='}),
                         400, 'invalid', 'stdin')

    def test_timeout(self):
        # Two sides of one run: the command would last 60 s, its timeout is 1 s. Ended by the
        # timeout, it answers in well under half its own length even on a loaded host.
        t0 = time.monotonic()
        rec = self.exec(self.sid, {'argv': ['sleep', '60'], 'timeout': '1s'})
        took = time.monotonic() - t0
        res = rec['result']
        self.assertEqual(res['status'], 'timed_out', rec)
        self.assertIsNone(res['exit_code'])
        self.assertGreaterEqual(res['wall_us'], 1000000, 'ended before its timeout')
        self.assertLess(res['wall_us'], 30000000, 'ran on past its timeout')
        self.assertLess(took, 30, 'the answer waited for the command\'s own end')
        # The sandbox survives its command's timeout.
        self.assertEqual(self.run_ok(self.sid, {'argv': ['echo', 'alive']})['stdout'], 'alive\n')

    def test_stdout_cap_truncates(self):
        res = self.run_ok(self.sid, {'shell': 'yes x | head -c 5000', 'stdout_cap': 100})
        self.assertEqual(res['stdout'], ('x\n' * 50))
        self.assertIs(res['stdout_truncated'], True)
        self.assertEqual(res['stdout_bytes'], 5000)
        self.assertIs(res['stderr_truncated'], False)

    def test_exit_codes(self):
        for body, status, code in [({'argv': ['true']}, 'exited', 0),
                                   ({'argv': ['false']}, 'exited', 1),
                                   ({'shell': 'exit 7'}, 'exited', 7),
                                   ({'shell': 'exit 255'}, 'exited', 255)]:
            res = self.exec(self.sid, body)['result']
            self.assertEqual((res['status'], res['exit_code']), (status, code), body)
        res = self.exec(self.sid, {'shell': 'kill -TERM $$'})['result']
        self.assertEqual((res['status'], res['signal'], res['exit_code']), ('signaled', 15, None))

    def test_term_right_after_start_reaches_the_process(self):
        """A TERM sent at once after a background process's 201 ends it: it used to be lost
        when it reached the agent's supervisor in one read with the command's request, before
        the command was started (KILL was kept, TERM dropped)."""
        for body in ({'argv': ['sleep', '600']}, {'shell': 'sleep 600'}) * 3:
            r = self.api.post('/v1/sandboxes/%s/processes' % self.sid, body)
            self.assertEqual(r.status, 201, r)
            url = '/v1/sandboxes/%s/processes/%s' % (self.sid, r.json['id'])
            sig = self.api.post(url + '/signal', {'signal': 'TERM'})
            self.assertEqual(sig.status, 204, sig)
            rec, deadline = None, time.monotonic() + 60
            while time.monotonic() < deadline:
                rec = self.api.get(url + '/output?wait=10s').json or {}
                if rec.get('state') == 'exited':
                    break
            if (rec or {}).get('state') != 'exited':
                self.api.post(url + '/signal', {'signal': 'KILL'})  # not left for 600 s
            self.assertEqual((rec or {}).get('state'), 'exited', (body, rec))
            self.assertEqual((rec['result']['status'], rec['result']['signal']),
                             ('signaled', 15), (body, rec))

    def test_background_output_is_a_stream_without_caps(self):
        """A background process may write any amount: past the 1 MiB an exec is capped at, its
        output goes on, the daemon keeps its newest 1 MiB and says how much came before. It used
        to stop at 1 MiB for good (an exec's default caps applied), marked truncated."""
        size = 3 << 20
        r = self.api.post('/v1/sandboxes/%s/processes' % self.sid,
                          {'shell': 'yes 0123456789abcde | head -c %d; echo END' % size})
        self.assertEqual(r.status, 201, r)
        url = '/v1/sandboxes/%s/processes/%s' % (self.sid, r.json['id'])
        rec, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            rec = self.api.get(url + '/output?wait=10s&stdout_offset=%d' % (size + 4)).json or {}
            if rec.get('state') == 'exited':
                break
        self.assertEqual((rec or {}).get('state'), 'exited', rec)
        res = rec['result']
        self.assertEqual((res['status'], res['exit_code']), ('exited', 0), res)
        self.assertEqual(res['stdout_bytes'], size + 4, res)
        self.assertIs(res['stdout_truncated'], False, res)
        out = self.api.get(url + '/output?stdout_offset=0').json['stdout']
        self.assertEqual(out['next_offset'], size + 4, out['next_offset'])
        self.assertEqual(out['dropped'], size + 4 - (1 << 20), out['dropped'])
        self.assertEqual(len(out['data']), 1 << 20)
        self.assertTrue(out['data'].endswith('0123456789abcde\nEND\n'), out['data'][-40:])

    def test_exec_record_fetch_and_redaction(self):
        secret = 'sk-live-%d' % time.monotonic_ns()
        rec = self.exec(self.sid, {'shell': 'echo "$TOKEN" | wc -c', 'env': {'TOKEN': secret},
                                   'stdin': 'stdin-secret'})
        self.assertRegex(rec['id'], EXEC_ID_RE)
        self.assertEqual(rec['sandbox_id'], self.sid)
        self.assertEqual(rec['state'], 'done')
        self.assertEqual(rec['result']['stdout'].strip(), str(len(secret) + 1))
        r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.sid, rec['id']))
        self.assertEqual(r.status, 200, r)
        # The run's answer is the record GET answers: the same fields, the same values.
        self.assertEqual(sorted(rec), sorted(r.json))
        for k in rec:
            self.assertEqual(r.json[k], rec[k], k)
        self.assertNotIn(secret, json.dumps(rec))
        self.assertNotIn('stdin-secret', json.dumps(rec))
        req = r.json['request']
        self.assertEqual(req['shell'], 'echo "$TOKEN" | wc -c')
        self.assertEqual(req['env'], {'TOKEN': '(redacted)'})
        self.assertNotIn(secret, r.text)
        self.assertNotIn('stdin-secret', r.text)
        self.assertGreater(r.json['created_at'], 0)
        self.assertGreaterEqual(r.json['finished_at'], r.json['created_at'])

    def test_exec_of_another_sandbox_is_404(self):
        rec = self.exec(self.sid, {'argv': ['true']})
        self.assertError(self.api.get('/v1/sandboxes/%s/execs/%s' % (self.other['id'], rec['id'])),
                         404, 'not_found')
        self.assertError(self.api.get('/v1/sandboxes/%s/execs/ex-0000000000000000' % self.sid),
                         404, 'not_found')

    def test_session_state_persists_between_execs(self):
        token = 'state-%d' % time.monotonic_ns()
        self.run_ok(self.sid, {'shell': 'echo %s > /workspace/state.txt; mkdir -p sub; '
                                        'echo nested > sub/n.txt' % token})
        self.assertEqual(self.run_ok(self.sid, {'argv': ['cat', '/workspace/state.txt']})['stdout'],
                         token + '\n')
        self.assertEqual(self.run_ok(self.sid, {'argv': ['cat', 'sub/n.txt']})['stdout'],
                         'nested\n')
        # ...and not in another sandbox.
        res = self.exec(self.other['id'], {'argv': ['cat', '/workspace/state.txt']})['result']
        self.assertNotEqual(res['exit_code'], 0)

    def test_streaming_exec(self):
        """Output arrives while the command runs: its first line is read while the command waits
        for a file that the test writes only after reading that line."""
        gate = gate_name()
        conn = self.d().client().connection(timeout=120)
        body = json.dumps({'shell': 'echo a; %s; echo b; echo e >&2' % held_until(gate),
                           'timeout': '60s'}).encode()
        before, after = [], []
        try:
            conn.request('POST', '/v1/sandboxes/%s/exec?stream=true' % self.sid, body=body,
                         headers={'Content-Type': 'application/json'})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.headers.get('Content-Type'), 'application/x-ndjson')
            events = ndjson_events(resp)
            for e in events:
                before.append(e)
                if e['event'] == 'stdout':
                    break
            r = open_gate(self.api, self.sid, gate)
            self.assertEqual(r.status, 201, r)
            after = list(events)
        finally:
            conn.close()
        kinds = [e['event'] for e in before]
        self.assertEqual(kinds[0], 'started', kinds)
        self.assertEqual(kinds[-1], 'stdout', 'no output while the command was held: %r' % kinds)
        self.assertEqual(before[-1]['data'], 'a\n')
        events = before + after
        kinds = [e['event'] for e in events]
        self.assertEqual(kinds[-1], 'result', kinds)
        self.assertEqual(kinds.count('result'), 1, kinds)
        final = events[-1]
        self.assertEqual(final['id'], events[0]['exec_id'])
        self.assertEqual(final['result']['status'], 'exited')
        self.assertEqual(final['result']['stdout'], 'a\nb\n')
        self.assertEqual(final['result']['stderr'], 'e\n')
        self.assertEqual(''.join(e['data'] for e in events if e['event'] == 'stdout'), 'a\nb\n')
        errs = [e for e in events if e['event'] == 'stderr']
        self.assertEqual(''.join(e['data'] for e in errs), 'e\n')
        # The streamed exec is stored like any other.
        r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.sid, final['id']))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['result'], final['result'])

    def test_every_byte_value_comes_back_intact(self):
        """Whatever bytes a command writes come back as they were, through every path: the
        response, the stream, the stored record, and the CLI (plain and --json). All 256 byte
        values, in a text-looking mix (valid UTF-8 with NUL and control bytes: sent as a JSON
        string) and a binary-looking one (sent as base64)."""
        text = bytes(range(128)) + 'é€ 日本 \U0001F600'.encode() + b'a\x00b\x00'
        binary = bytes(range(256)) + bytes(range(255, -1, -1))
        writer = ('import base64, sys; d = base64.b64decode(sys.argv[1]); '
                  'sys.stdout.buffer.write(d); sys.stderr.buffer.write(d[::-1])')

        def decoded(part, data_key, enc_key):
            d = part[data_key]
            return base64.b64decode(d) if part[enc_key] == 'base64' else d.encode('utf-8')

        for name, payload, enc in (('text', text, 'utf-8'), ('binary', binary, 'base64')):
            argv = ['python3', '-c', writer, base64.b64encode(payload).decode()]
            with self.subTest(payload=name):
                rec = self.exec(self.sid, {'argv': argv})
                res = rec['result']
                self.assertEqual((res['status'], res['exit_code']), ('exited', 0), res)
                self.assertEqual(res['stdout_encoding'], enc)
                self.assertEqual(decoded(res, 'stdout', 'stdout_encoding'), payload)
                self.assertEqual(decoded(res, 'stderr', 'stderr_encoding'), payload[::-1])
                # The stored record, fetched later, is the same.
                r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.sid, rec['id']))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json['result'], res)
                # The stream: the chunks put together, and its final result.
                conn, started, events = start_streaming_exec(self.api, self.sid, {'argv': argv})
                try:
                    events = list(events)
                finally:
                    conn.close()
                self.assertEqual(events[-1]['event'], 'result', events[-1:])
                self.assertEqual(b''.join(decoded(e, 'data', 'encoding') for e in events
                                          if e['event'] == 'stdout'), payload)
                self.assertEqual(decoded(events[-1]['result'], 'stdout', 'stdout_encoding'),
                                 payload)
                r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.sid, started['exec_id']))
                self.assertEqual((r.status, r.json['result']), (200, events[-1]['result']), r)
                # The CLI writes the very bytes, and --json the same record.
                host = ['--host', 'unix://' + self.d().sock]
                cli = subprocess.run([CLEARING] + host + ['exec', self.sid, '--'] + argv,
                                     capture_output=True, timeout=120)
                self.assertEqual(cli.returncode, 0, cli.stderr[-500:])
                self.assertEqual(cli.stdout, payload)
                self.assertEqual(cli.stderr, payload[::-1])
                cli = subprocess.run([CLEARING] + host + ['exec', '--json', self.sid, '--'] + argv,
                                     capture_output=True, timeout=120)
                self.assertEqual(cli.returncode, 0, cli.stderr[-500:])
                self.assertEqual(decoded(json.loads(cli.stdout)['result'], 'stdout',
                                         'stdout_encoding'), payload)


# ---- errors ----

class T04Errors(ApiTest):
    @classmethod
    def setUpClass(cls):
        cls.sb = cls.create_for_class({})

    def sandboxes_now(self):
        return self.api.get('/v1/health').json['sandboxes']

    def test_malformed_json(self):
        sid = self.sb['id']
        for path in ('/v1/sandboxes', '/v1/sandboxes/%s/exec' % sid,
                     '/v1/sandboxes/%s/extend' % sid):
            for body in (b'{bad', b'{"argv": ["true"]', b'{} trailing', b'{"a":1,"a":2}',
                         b'\xff\xfe'):
                self.assertError(self.api.post(path, body), 400, 'invalid',
                                 'not valid JSON')

    def test_body_must_be_an_object(self):
        for body in (b'[]', b'[{"image": "x"}]'):
            self.assertError(self.api.post('/v1/sandboxes', body), 400, 'invalid', 'object')
            self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sb['id'], body),
                             400, 'invalid', 'object')

    def test_wrong_types_name_the_field(self):
        n0 = self.sandboxes_now()
        for body, field in [({'image': 5}, 'image'),
                            ({'limits': 'big'}, 'limits'),
                            ({'limits': {'pids': 'many'}}, 'limits.pids'),
                            ({'limits': {'memory': True}}, 'limits.memory'),
                            ({'limits': {'cpus': [1]}}, 'limits.cpus'),
                            ({'limits': {'lifetime': 1.5}}, 'limits.lifetime'),
                            ({'idle_timeout': True}, 'idle_timeout'),
                            ({'env': ['A=1']}, 'env'),
                            ({'env': {'A': 1}}, 'env'),
                            ({'metadata': []}, 'metadata'),
                            ({'metadata': {'k': 1}}, 'metadata')]:
            self.assertError(self.api.post('/v1/sandboxes', body), 400, 'invalid', field)
        url = '/v1/sandboxes/%s/exec' % self.sb['id']
        for body, field in [({'argv': 'ls'}, 'argv'),
                            ({'argv': ['ls', 1]}, 'argv[1]'),
                            ({'shell': 5}, 'shell'),
                            ({'argv': ['true'], 'timeout': [1]}, 'timeout'),
                            ({'argv': ['true'], 'cwd': 5}, 'cwd'),
                            ({'argv': ['true'], 'stdin': 5}, 'stdin'),
                            ({'argv': ['true'], 'stdout_cap': 'lots'}, 'stdout_cap'),
                            ({'argv': ['true'], 'env': {'X': None}}, 'env')]:
            self.assertError(self.api.post(url, body), 400, 'invalid', field)
        self.assertError(self.api.post('/v1/sandboxes/%s/extend' % self.sb['id'], {'by': True}),
                         400, 'invalid', 'by')
        self.assertEqual(self.sandboxes_now(), n0, 'a refused request created nothing')

    def test_unknown_fields(self):
        self.assertError(self.api.post('/v1/sandboxes', {'bogus': 1}), 400, 'invalid', 'bogus')
        self.assertError(self.api.post('/v1/sandboxes', {'limits': {'gpus': 1}}), 400, 'invalid',
                         'gpus')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sb['id'],
                                       {'argv': ['true'], 'user': 'root'}), 400, 'invalid', 'user')
        self.assertError(self.api.post('/v1/sandboxes/%s/extend' % self.sb['id'],
                                       {'by': '10s', 'until': 5}), 400, 'invalid', 'until')

    def test_oversized_body_413(self):
        big = json.dumps({'image': 'a' * (1 << 20)}).encode()
        self.assertGreater(len(big), 1 << 20)
        self.assertError(self.api.post('/v1/sandboxes', big), 413, 'limit', '1 MiB')
        big = json.dumps({'argv': ['cat'], 'stdin': 'x' * ((1 << 20) + 100)}).encode()
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.sb['id'], big), 413,
                         'limit')
        # The daemon is fine afterwards.
        self.assertEqual(self.api.get('/v1/health').status, 200)

    def test_unknown_sandbox_404(self):
        sid = 'sb-0123456789abcdef'
        self.assertError(self.api.get('/v1/sandboxes/' + sid), 404, 'not_found', sid)
        self.assertError(self.api.delete('/v1/sandboxes/' + sid), 404, 'not_found')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}), 404,
                         'not_found')
        self.assertError(self.api.post('/v1/sandboxes/%s/extend' % sid, {'by': '10s'}), 404,
                         'not_found')
        self.assertError(self.api.get('/v1/sandboxes/%s/execs/ex-0123456789abcdef' % sid), 404,
                         'not_found')

    def test_malformed_id_400(self):
        for sid in ('sb-xyz', 'sb-0123456789ABCDEF', 'sb-0123456789abcdef0', '..', 'x%20y'):
            self.assertError(self.api.get('/v1/sandboxes/' + sid), 400, 'invalid',
                             'not a sandbox id')
            self.assertError(self.api.delete('/v1/sandboxes/' + sid), 400, 'invalid')
            self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}),
                             400, 'invalid')
            self.assertError(self.api.post('/v1/sandboxes/%s/exec?stream=true' % sid,
                                           {'argv': ['true']}), 400, 'invalid')
            self.assertError(self.api.post('/v1/sandboxes/%s/extend' % sid, {'by': '10s'}), 400,
                             'invalid')

    def test_malformed_id_path_traversal_400(self):
        # "../../etc" as an id, percent-encoded as a client must send it.
        enc = urllib.parse.quote('../../etc', safe='')
        self.assertEqual(enc, '..%2F..%2Fetc')
        self.assertError(self.api.get('/v1/sandboxes/' + enc), 400, 'invalid')
        self.assertError(self.api.delete('/v1/sandboxes/' + enc), 400, 'invalid')
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % enc, {'argv': ['true']}), 400,
                         'invalid')

    def test_unknown_route_404(self):
        for method, path in [('GET', '/'), ('GET', '/nope'), ('GET', '/v1'), ('GET', '/v1/nope'),
                             ('GET', '/v2/sandboxes'), ('POST', '/v1/nope'),
                             ('GET', '/v1/health/x')]:
            self.assertError(self.api.request(method, path), 404, 'not_found')

    def test_unknown_subroute_of_a_sandbox_404(self):
        sid = self.sb['id']
        for method, path in [('GET', '/v1/sandboxes/%s/frobnicate' % sid),
                             ('POST', '/v1/sandboxes/%s/frobnicate' % sid),
                             ('GET', '/v1/sandboxes/%s/execs/ex-0123456789abcdef/more' % sid)]:
            self.assertError(self.api.request(method, path), 404, 'not_found')

    def test_wrong_method_405(self):
        sid = self.sb['id']
        self.assertError(self.api.get('/v1/sandboxes/%s/exec' % sid), 405)
        self.assertError(self.api.get('/v1/sandboxes/%s/extend' % sid), 405)

    def test_limits_out_of_range_name_the_limit(self):
        n0 = self.sandboxes_now()
        for limits, name in [({'memory': '1k'}, 'memory'),
                             ({'memory': '64g'}, 'memory'),
                             ({'cpus': 8}, 'cpus'),
                             ({'cpus': 0.01}, 'cpus'),
                             ({'pids': 1}, 'pids'),
                             ({'lifetime': '5s'}, 'lifetime'),
                             ({'lifetime': '2h'}, 'lifetime'),
                             ({'nofile': 10}, 'nofile'),
                             ({'tmp_size': '1k'}, 'tmp_size'),
                             ({'workspace_size': '1k'}, 'workspace_size'),
                             ({'workspace_inodes': 1}, 'workspace_inodes'),
                             ({'file_size': '1k'}, 'file_size')]:
            # The message may spell the limit with a space ("tmp size").
            pat = re.compile(re.escape(name).replace('_', '[_ ]'))
            self.assertError(self.api.post('/v1/sandboxes', {'limits': limits}), 400, 'invalid',
                             [pat])
        self.assertError(self.api.post('/v1/sandboxes', {'idle_timeout': '5s'}), 400, 'invalid',
                         'idle_timeout')
        url = '/v1/sandboxes/%s/exec' % self.sb['id']
        self.assertError(self.api.post(url, {'argv': ['true'], 'timeout': '0s'}), 400, 'invalid',
                         'timeout')
        self.assertError(self.api.post(url, {'argv': ['true'], 'stdout_cap': '1g'}), 400,
                         'invalid', re.compile('stdout[_ ]cap'))
        self.assertEqual(self.sandboxes_now(), n0)

    def test_unknown_image_404(self):
        n0 = self.sandboxes_now()
        self.assertError(self.api.post('/v1/sandboxes', {'image': 'clearing/no-such-image:0'}),
                         404, 'not_found', ['clearing/no-such-image:0', 'images/build.sh'])
        self.assertEqual(self.sandboxes_now(), n0)


# ---- capacity ----

class T05Capacity(ApiTest):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon('capacity', ['--max-sandboxes', '2', '--max-execs', '1'])
        cls.addClassCleanup(cls.daemon.stop)
        cls.daemon.start()

    def test_max_sandboxes(self):
        a = self.create()
        self.create()
        err = self.assertError(self.api.post('/v1/sandboxes', {}), 429, 'limit')
        self.assertIn('max_sandboxes', err['message'])
        m, _ = self.api.metrics()
        self.assertGreaterEqual(m['clearing_requests_refused_total'], 1)
        # Room again once one is gone.
        self.assertEqual(self.api.delete('/v1/sandboxes/' + a['id']).status, 204)
        self.create()

    def test_max_execs(self):
        a, b = self.create(), self.create()
        gate = gate_name()
        held = {}

        def run_held():
            held['r'] = self.api.post('/v1/sandboxes/%s/exec' % a['id'],
                                      {'shell': held_until(gate) + '; echo released',
                                       'timeout': '90s'})
        t = threading.Thread(target=run_held)
        t.start()
        try:
            self.assertTrue(wait_for(lambda: self.api.running_execs() >= 1, 60),
                            'the held command never started')
            err = self.assertError(self.api.post('/v1/sandboxes/%s/exec' % b['id'],
                                                 {'argv': ['true']}), 429, 'limit')
            self.assertIn('max_execs', err['message'])
            # The stream's check refuses it the same way, before its 200.
            self.assertError(self.api.post('/v1/sandboxes/%s/exec?stream=true' % b['id'],
                                           {'argv': ['true']}), 429, 'limit', 'max_execs')
            self.assertTrue(t.is_alive(), 'the held command ended before its gate opened')
        finally:
            r = open_gate(self.api, a['id'], gate)
            t.join(120)
        self.assertEqual(r.status, 201, r)
        self.assertFalse(t.is_alive(), 'the held command did not end after its gate opened')
        self.assertEqual(held['r'].status, 200, held['r'])
        # Audited: the held command's exec.start (the control: this log has the daemon's exec
        # records), and the refusals as "exec" records, refused, naming max_execs, without the
        # command: the first at once (count 1), the second, from the same actor on the same
        # sandbox, counted and written with its count once the interval (audit_aggregate_ms,
        # 10 s) passed; the refused never got an exec.start.
        self.assertEqual(len(self.audit_records(a['id'], 'exec.start')), 1)
        self.assertTrue(wait_for(lambda: len(self.audit_records(b['id'], 'exec')) >= 2, 90),
                        self.audit_records(b['id'], 'exec'))
        refused = self.audit_records(b['id'], 'exec')
        self.assertEqual([(x['outcome'], x['details']['code'], x['details']['count'])
                          for x in refused], [('refused', 'limit', 1)] * 2, refused)
        self.assertEqual(sorted(refused[0]['details']), ['code', 'count', 'error', 'source'],
                         refused)
        self.assertEqual(sorted(refused[1]['details']),
                         ['code', 'count', 'error', 'interval_ms', 'source'], refused)
        for x in refused:
            self.assertIn('max_execs', x['details']['error'], x)
            self.assertTrue(x['actor'], x)
            self.assertEqual(x['details']['source'], x['actor'], x)
        self.assertEqual(self.audit_records(b['id'], 'exec.start'), [])
        self.assertEqual(held['r'].json['result']['exit_code'], 0, held['r'])
        self.assertEqual(held['r'].json['result']['stdout'], 'released\n', held['r'])
        # Free again.
        self.run_ok(b['id'], {'argv': ['true']})


# ---- concurrency ----

class T06Concurrency(ApiTest):
    def test_eight_clients_at_once(self):
        errors, lock = [], threading.Lock()
        created = []

        def client(i):
            c = self.api
            try:
                r = c.post('/v1/sandboxes', {'metadata': {'client': str(i)}})
                if r.status != 201:
                    raise AssertionError('client %d: create: %r' % (i, r))
                sid = r.json['id']
                with lock:
                    created.append(sid)
                for j in range(3):
                    r = c.post('/v1/sandboxes/%s/exec' % sid,
                               {'shell': 'echo $((%d * 10 + %d))' % (i, j)})
                    if r.status != 200:
                        raise AssertionError('client %d exec %d: %r' % (i, j, r))
                    res = r.json['result']
                    if res['exit_code'] != 0 or res['stdout'] != '%d\n' % (i * 10 + j):
                        raise AssertionError('client %d exec %d: %r' % (i, j, res))
            except Exception as e:
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
        finally:
            for sid in created:
                self.addCleanup(destroy_quietly, self.api, sid)
        self.assertFalse(any(t.is_alive() for t in threads), 'a client hung')
        self.assertEqual(errors, [])
        self.assertEqual(len(set(created)), 8)

    def test_slow_exec_does_not_delay_another_sandbox(self):
        """A command held in A does not hold one in B: B's command runs to its end while A's
        provably still runs (it waits for a file that the test writes only afterwards). Were
        commands serialised, B's would wait for a gate that never opens."""
        a, b = self.create(), self.create()
        gate = gate_name()
        slow = {}

        def run_slow():
            slow['r'] = self.api.post('/v1/sandboxes/%s/exec' % a['id'],
                                      {'shell': held_until(gate) + '; echo released',
                                       'timeout': '300s'}, timeout=360)
        t = threading.Thread(target=run_slow)
        t.start()
        try:
            self.assertTrue(wait_for(lambda: self.api.running_execs() >= 1, 60),
                            'the held command never started')
            res = self.run_ok(b['id'], {'argv': ['echo', 'quick']})
            self.assertTrue(t.is_alive(), 'the held command ended before its gate opened')
            self.assertGreaterEqual(self.api.running_execs(), 1)
        finally:
            r = open_gate(self.api, a['id'], gate)
            t.join(120)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(res['stdout'], 'quick\n')
        self.assertFalse(t.is_alive(), 'the held command did not end after its gate opened')
        self.assertEqual(slow['r'].status, 200, slow['r'])
        self.assertEqual(slow['r'].json['result']['exit_code'], 0, slow['r'])
        self.assertEqual(slow['r'].json['result']['stdout'], 'released\n', slow['r'])


# ---- TCP with tokens ----

class T07Tcp(ApiTest):
    TOKEN = 'tok-' + os.urandom(16).hex()

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        d = Daemon('tcp')
        cls.token_file = os.path.join(d.dir, 'tokens')
        fd = os.open(cls.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write('# test tokens\nci:%s\n' % cls.TOKEN)
        os.chmod(cls.token_file, 0o600)
        d.args = ['--tcp', '127.0.0.1:%d' % cls.port, '--token-file', cls.token_file]
        cls.daemon = d
        cls.addClassCleanup(d.stop)
        d.start()

    def tcp(self, token=None):
        return Client(tcp=('127.0.0.1', self.port), token=token)

    def test_token_required(self):
        self.assertError(self.tcp().get('/v1/sandboxes'), 401, 'denied', 'Bearer')
        self.assertError(self.tcp('wrong-token-0123456789abcdef').get('/v1/sandboxes'), 401,
                         'denied')
        self.assertError(self.tcp(self.TOKEN + 'x').get('/v1/sandboxes'), 401, 'denied')
        self.assertError(self.tcp().get('/metrics'), 401, 'denied')
        r = self.tcp().request('GET', '/v1/sandboxes', headers={'Authorization': self.TOKEN})
        self.assertError(r, 401, 'denied')
        # A refused POST creates nothing.
        n0 = self.api.get('/v1/health').json['sandboxes']
        self.assertError(self.tcp().post('/v1/sandboxes', {}), 401, 'denied')
        self.assertEqual(self.api.get('/v1/health').json['sandboxes'], n0)
        r = self.tcp(self.TOKEN).get('/v1/sandboxes')
        self.assertEqual(r.status, 200, r)
        self.assertIsInstance(r.json['sandboxes'], list)

    def test_health_needs_no_token(self):
        r = self.tcp().get('/v1/health')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['status'], 'ok')

    def test_full_cycle_over_tcp(self):
        c = self.tcp(self.TOKEN)
        sb = self.create({}, client=c)
        self.assertEqual(self.run_ok(sb['id'], {'argv': ['echo', 'tcp']}, client=c)['stdout'],
                         'tcp\n')

    def refused(self, name, content, mode):
        d = Daemon(name)
        path = os.path.join(d.dir, 'tokens')
        with open(path, 'w') as f:
            f.write(content)
        os.chmod(path, mode)
        p = d.spawn(['--tcp', '127.0.0.1:%d' % free_port(), '--token-file', path])
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            d.stop()
            self.fail('the daemon started with a bad token file:\n' + d.log_tail())
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(d.sock) and self.can_connect(d.sock))
        return d.log_tail()

    @staticmethod
    def can_connect(path):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def test_world_readable_token_file_refused(self):
        log = self.refused('tcp0644', 'ci:%s\n' % self.TOKEN, 0o644)
        self.assertIn('chmod 600', log)

    def test_short_token_refused(self):
        log = self.refused('tcpshort', 'ci:short\n', 0o600)
        self.assertIn('16', log)


# ---- reaper ----

class T08Reaper(ApiTest):
    """The reaper destroys what expired or idled, and nothing else. Each "still running" is
    claimed next to a sandbox of the same kind that the reaper did destroy in the same run, so
    the clock decides nothing on its own; deadlines are generous and only bound a hang."""

    @classmethod
    def setUpClass(cls):
        cls.m0, _ = MAIN.client().metrics()
        # Made first, reaped while the other tests wait for theirs.
        cls.expiring = cls.create_for_class({'limits': {'lifetime': '10s'}, 'idle_timeout': 0})
        cls.control = cls.create_for_class({'limits': {'lifetime': '600s'}, 'idle_timeout': 0})
        cls.idle = cls.create_for_class({'idle_timeout': '10s'})

    def state(self, sid):
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def wait_reaped(self, sid):
        def reaped():
            s = self.state(sid)
            return s if s['state'] != 'running' else None
        return wait_for(reaped, 90, 0.5)

    def create_after(self, t, body):
        """Creates a sandbox stamped later than t (whole seconds). The reaper visits sandboxes
        in the order they were created, with one clock reading per pass: once this one is
        reaped for idling, one created at or before t with the same idle timeout was due no
        later, unless something since t counted as its activity, and came first in the pass."""
        self.assertTrue(wait_for(lambda: time.time() >= t + 1, 30), 'the clock stands still')
        sb = self.create(body)
        self.assertGreater(sb['created_at'], t, 'precondition: created after %d' % t)
        return sb

    def test_lifetime_expiry(self):
        control = self.control
        sb = self.wait_reaped(self.expiring['id'])
        self.assertIsNotNone(sb, 'still running long after its 10 s lifetime')
        self.assertEqual((sb['state'], sb['destroy_reason']), ('destroyed', 'expired'))
        self.assertGreaterEqual(sb['destroyed_at'], sb['expires_at'], 'reaped before it expired')
        # Made right after it and due ten minutes later: the reaper reaps by expiry, not by age.
        self.assertEqual(self.state(control['id'])['state'], 'running')
        self.assertLess(sb['destroyed_at'], control['expires_at'])
        self.assertTrue(container_removed(sb['id']), 'container of %s not removed' % sb['id'])
        m, _ = self.api.metrics()
        self.assertGreaterEqual(m['clearing_sandboxes_destroyed_total{reason="expired"}'] -
                                self.m0['clearing_sandboxes_destroyed_total{reason="expired"}'], 1)

    def test_idle_timeout(self):
        sb = self.wait_reaped(self.idle['id'])
        self.assertIsNotNone(sb, 'still running long after its 10 s idle timeout')
        self.assertEqual((sb['state'], sb['destroy_reason']), ('destroyed', 'idle'))
        self.assertGreaterEqual(sb['destroyed_at'] - sb['last_active_at'], 10,
                                'reaped before it idled for its timeout')
        self.assertLess(sb['destroyed_at'], sb['expires_at'])
        self.assertTrue(container_removed(sb['id']), 'container of %s not removed' % sb['id'])
        m, _ = self.api.metrics()
        self.assertGreaterEqual(m['clearing_sandboxes_destroyed_total{reason="idle"}'] -
                                self.m0['clearing_sandboxes_destroyed_total{reason="idle"}'], 1)

    def test_activity_defers_idle_reaping(self):
        busy = self.create({'idle_timeout': '10s'})
        stop, errors = threading.Event(), []

        def keep_busy():
            # One short command a second: ten times inside the idle timeout.
            while not stop.is_set():
                r = self.api.post('/v1/sandboxes/%s/exec' % busy['id'], {'argv': ['true']})
                if r.status != 200:
                    errors.append(r)
                    return
                stop.wait(1)
        t = threading.Thread(target=keep_busy)
        t.start()
        try:
            idle = self.create_after(busy['created_at'], {'idle_timeout': '10s'})
            self.assertIsNotNone(self.wait_reaped(idle['id']), 'the idle one was never reaped')
            self.assertEqual(self.state(busy['id'])['state'], 'running',
                             'reaped although it had a command every second')
        finally:
            stop.set()
            t.join(120)
        self.assertEqual(errors, [])
        # Left alone now, it idles out like the other one did.
        sb = self.wait_reaped(busy['id'])
        self.assertIsNotNone(sb, 'never reaped once the commands stopped')
        self.assertEqual((sb['state'], sb['destroy_reason']), ('destroyed', 'idle'))

    def test_long_command_is_not_idle(self):
        sb = self.create({'idle_timeout': '10s'})
        gate = gate_name()
        conn, started, events = start_streaming_exec(
            self.api, sb['id'], {'shell': held_until(gate) + '; echo released',
                                 'timeout': '300s'}, timeout=360)
        try:
            since = self.state(sb['id'])['last_active_at']
            idle = self.create_after(since, {'idle_timeout': '10s'})
            self.assertIsNotNone(self.wait_reaped(idle['id']), 'the idle one was never reaped')
            self.assertEqual(self.state(sb['id'])['state'], 'running',
                             'reaped while its command ran')
            r = self.api.get('/v1/sandboxes/%s/execs/%s' % (sb['id'], started['exec_id']))
            self.assertEqual(r.json['state'], 'running', r)
            r = open_gate(self.api, sb['id'], gate)
            self.assertEqual(r.status, 201, r)
            final = [e for e in events if e['event'] == 'result']
        finally:
            conn.close()
        self.assertEqual(len(final), 1, final)
        res = final[0]['result']
        self.assertEqual((res['status'], res['exit_code'], res['stdout']),
                         ('exited', 0, 'released\n'), res)


# ---- crash and restart ----

class T11StateLock(ApiTest):
    """One daemon owns a state directory (issue #17 item 8): a second one on another socket
    refuses to start and names the first; once the first has stopped, a daemon starts there."""

    def test_second_daemon_on_the_same_state_refused(self):
        first = Daemon('lock-first')
        first.start()
        try:
            # Positive control: the first daemon owns the directory and answers.
            self.assertEqual(first.client().get('/v1/health').status, 200)
            second = subprocess.run(
                [CLEARING, '--state-dir', first.state, 'serve', '--socket',
                 os.path.join(first.dir, 'second.sock')],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            self.assertNotEqual(second.returncode, 0, second.stderr)
            self.assertIn('in use by another clearing daemon (pid %d)' % first.proc.pid,
                          second.stderr)
            self.assertFalse(os.path.exists(os.path.join(first.dir, 'second.sock')))
            # The first was not disturbed.
            self.assertEqual(first.client().get('/v1/health').status, 200)
        finally:
            first.stop()
        # The lock went with the first daemon: the next start on the directory succeeds.
        again = Daemon('lock-again')
        again.state = first.state
        again.start()
        again.stop()


class T10Removal(ApiTest):
    """Destroy returns once the sandbox is marked; removal runs in the background, and every
    destroyed sandbox's container and workspace are removed: none leaks."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon('removal')
        cls.addClassCleanup(cls.daemon.stop)
        cls.daemon.start()

    def workspace(self, sid):
        return os.path.join(self.daemon.state, 'workspaces', sid)

    def test_destroyed_at_once_removed_in_background_none_leak(self):
        m0, _ = self.api.metrics()
        sbs = [self.create() for _ in range(5)]
        for sb in sbs:
            self.assertTrue(os.path.isdir(self.workspace(sb['id'])))
        for sb in sbs:
            self.assertEqual(self.api.delete('/v1/sandboxes/' + sb['id']).status, 204)
            # From the caller's view it is gone at once: no command reaches it.
            r = self.api.get('/v1/sandboxes/' + sb['id'])
            self.assertEqual(r.json['state'], 'destroyed', r)
            self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sb['id'],
                                           {'argv': ['true']}), 409, 'conflict')
            self.assertError(self.api.get('/v1/sandboxes/%s/files/x' % sb['id']), 409,
                             'conflict')

        def drained():
            m, _ = self.api.metrics()
            return m if m['clearing_removals_pending'] == 0 and \
                m['clearing_sandboxes_removed_total'] - \
                m0['clearing_sandboxes_removed_total'] >= len(sbs) else None
        m = wait_for(drained, 60)
        self.assertIsNotNone(m, 'removals did not drain: %r' % (self.api.metrics()[0],))
        # Exactly as many removed as destroyed: none twice, none left out.
        self.assertEqual(m['clearing_sandboxes_removed_total'] -
                         m0['clearing_sandboxes_removed_total'], len(sbs))
        self.assertEqual(m['clearing_sandboxes_destroyed_total{reason="client"}'] -
                         m0['clearing_sandboxes_destroyed_total{reason="client"}'], len(sbs))
        self.assertEqual(m['clearing_removal_failures_total'],
                         m0['clearing_removal_failures_total'])
        for sb in sbs:
            self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sb['id']).status,
                             404)
            self.assertFalse(os.path.exists(self.workspace(sb['id'])))
        h = self.api.get('/v1/health')
        self.assertEqual(h.json['removals_pending'], 0, h)

    def test_delete_wait_returns_after_removal(self):
        sb = self.create()
        r = self.api.delete('/v1/sandboxes/%s?wait=true' % sb['id'])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sb['id']).status, 404)
        self.assertFalse(os.path.exists(self.workspace(sb['id'])))

    def test_removal_resumes_after_kill9(self):
        """A daemon killed while a destroyed sandbox's removal is pending: the next start
        removes it. The daemon talks to dockerd through a relay that holds the removal, so at
        the kill the removal provably has not reached the engine; nothing else removes it."""
        d = Daemon('kill9')
        proxy = EngineProxy(os.path.join(d.dir, 'engine.sock'))
        self.addCleanup(proxy.close)
        d.extra_env['CLEARING_DOCKER_HOST'] = 'unix://' + proxy.path
        self.addCleanup(d.stop)
        d.start()
        c = d.client()
        sb = self.create(client=c)
        sid = sb['id']
        workspace = os.path.join(d.state, 'workspaces', sid)
        proxy.hold_removal_of(sid)
        self.assertEqual(c.delete('/v1/sandboxes/' + sid).status, 204)
        self.assertTrue(proxy.held.wait(60), 'the removal never reached the engine')
        # Right before the kill: the daemon counts the removal as pending, and the container
        # and the workspace are both still there.
        m, _ = c.metrics()
        self.assertEqual(m['clearing_removals_pending'], 1, m)
        self.assertEqual(m['clearing_sandboxes_removed_total'], 0, m)
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sid).status, 200)
        self.assertTrue(os.path.isdir(workspace))
        d.kill9()
        proxy.drop_held()
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sid).status, 200,
                         'the container went before the restart: the test proves nothing')
        # The restart talks to dockerd directly. Its recovery runs before it listens, and the
        # engine never saw the held removal (nothing can make it defer): by the first answer,
        # the container is gone, and it was this daemon that removed it.
        del d.extra_env['CLEARING_DOCKER_HOST']
        d.start()
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sid).status, 404,
                         'the restart did not remove the container of %s' % sid)
        m, _ = c.metrics()
        self.assertEqual((m['clearing_removals_pending'], m['clearing_sandboxes_removed_total']),
                         (0, 1), m)
        self.assertFalse(os.path.exists(workspace))
        r = c.get('/v1/sandboxes/' + sid)
        self.assertEqual((r.json['state'], r.json['destroy_reason']), ('destroyed', 'client'))

    def test_removal_cut_between_container_and_workspace(self):
        """The daemon died after the container was removed and before the workspace was: the
        next start removes the workspace of the destroyed sandbox, and leaves a workspace the
        database does not know to `clearing gc` (it may be a create in progress)."""
        sb = self.create()
        self.assertEqual(self.api.delete('/v1/sandboxes/%s?wait=true' % sb['id']).status, 204)
        self.assertFalse(os.path.exists(self.workspace(sb['id'])))
        self.daemon.kill9()
        os.mkdir(self.workspace(sb['id']))     # the state the cut leaves behind
        stranger = 'sb-%016x' % random.getrandbits(64)
        os.mkdir(self.workspace(stranger))
        try:
            self.daemon.start()
            self.assertFalse(os.path.exists(self.workspace(sb['id'])),
                             'workspace of a destroyed sandbox survived the restart')
            self.assertTrue(os.path.isdir(self.workspace(stranger)))
        finally:
            shutil.rmtree(self.workspace(stranger), ignore_errors=True)


# How many processes of a sandbox run `sleep 3599` (the pattern does not match itself).
SLEEPERS = ('for f in /proc/[0-9]*/cmdline; do tr "\\0" " " <$f; echo; done 2>/dev/null'
            ' | grep -c "^sleep 359[9] $"; true')


class T09CrashRecovery(ApiTest):
    """kill -9 of the daemon, changes behind its back, restart on the same state."""

    @classmethod
    def setUpClass(cls):
        d = cls.daemon = Daemon('crash')
        cls.addClassCleanup(d.stop)
        # Runs after the API destroys (cleanups run last-in first-out).
        cls.addClassCleanup(lambda: [docker_remove_quietly('clearing-' + s['id'])
                                     for s in (getattr(cls, 'a', None), getattr(cls, 'b', None))
                                     if s])
        d.start()
        c = d.client()
        cls.a = cls.create_for_class({'metadata': {'role': 'A'}})
        cls.b = cls.create_for_class({'metadata': {'role': 'B'}})
        r = c.post('/v1/sandboxes/%s/exec' % cls.a['id'],
                   {'shell': 'echo before-crash > /workspace/before.txt; cat before.txt'})
        if r.status != 200 or r.json['result']['stdout'] != 'before-crash\n':
            raise AssertionError('exec before the crash: %r' % r)
        cls.acked = r.json
        # A background process when the daemon dies: it runs on the live channel, so it lives
        # on in the sandbox while the daemon is away; the restarted daemon, which knows none of
        # its processes, kills it.
        r = c.post('/v1/sandboxes/%s/processes' % cls.a['id'], {'argv': ['sleep', '3599']})
        if r.status != 201:
            raise AssertionError('background process before the crash: %r' % r)
        if not wait_for(lambda: cls.sleepers(c) == 1, 60):
            raise AssertionError('the background process never showed in the sandbox: %r'
                                 % cls.sleepers(c))
        # A command running when the daemon dies, held by a gate that the test opens only
        # while the daemon is away: it cannot end before the crash, and it ends before the
        # restart (it leaves a file as its last act), so its result must be replayed.
        gate, cls.finished = gate_name(), gate_name()
        workspace = os.path.join(d.state, 'workspaces', cls.a['id'])
        cls.inflight_request = {'shell': '%s; echo slept; touch %s' % (held_until(gate),
                                                                        cls.finished),
                                'timeout': '120s'}
        conn, started, _ = start_streaming_exec(c, cls.a['id'], cls.inflight_request)
        cls.inflight = started['exec_id']
        cls.addClassCleanup(conn.close)
        # One still running at the restart, held by a gate the test opens only after it: it
        # has an exec record, so the restart's kill of unknown commands must spare it.
        cls.gate_late = gate_name()
        conn_l, started, _ = start_streaming_exec(
            c, cls.a['id'], {'shell': '%s; echo spared' % held_until(cls.gate_late),
                             'timeout': '300s'})
        cls.inflight_late = started['exec_id']
        cls.addClassCleanup(conn_l.close)
        # One in B too, whose container is removed behind the daemon's back below.
        conn_b, started, _ = start_streaming_exec(c, cls.b['id'], {'argv': ['sleep', '3600']})
        cls.inflight_b = started['exec_id']
        cls.addClassCleanup(conn_b.close)
        # Runs before the destroys: if setUpClass fails after the kill, restart it to clean up.
        cls.addClassCleanup(d.ensure_running)

        d.kill9()
        if os.path.exists(os.path.join(workspace, cls.finished)):
            raise AssertionError('the held command ended before its gate opened')
        with open(os.path.join(workspace, gate), 'w') as f:
            f.write('open\n')
        if not wait_for(lambda: os.path.exists(os.path.join(workspace, cls.finished)), 60):
            raise AssertionError('the held command did not end after its gate opened')
        # The background process lives on while the daemon is away (asked through docker
        # exec): what the restart finds is its to kill.
        x = subprocess.run(['docker', 'exec', 'clearing-' + cls.a['id'], 'sh', '-c', SLEEPERS],
                           capture_output=True, text=True, timeout=120)
        cls.sleepers_away = (x.returncode, x.stdout.strip(), x.stderr[-300:])
        # (a) B's container vanishes behind the daemon's back.
        r = docker('DELETE', '/containers/clearing-%s?force=1' % cls.b['id'])
        if r.status != 204:
            raise AssertionError('docker rm B: %r' % r)
        # (b) A container labelled as this daemon's own, unknown to its database.
        r = docker('GET', '/containers/clearing-%s/json' % cls.a['id'])
        if r.status != 200:
            raise AssertionError('docker inspect A: %r' % r)
        labels = dict(r.json['Config']['Labels'])
        if labels.get(LABEL + 'owner') != d.owner:
            raise AssertionError('owner label of A is %r, expected %r'
                                 % (labels.get(LABEL + 'owner'), d.owner))
        cls.orphan = 'sb-' + os.urandom(8).hex()
        cls.addClassCleanup(docker_remove_quietly, 'clearing-' + cls.orphan)
        labels[LABEL + 'sandbox-id'] = cls.orphan
        r = docker('POST', '/containers/create?name=clearing-' + cls.orphan,
                   {'Image': IMAGE, 'Cmd': ['sleep', '3600'], 'Labels': labels,
                    'HostConfig': {'Runtime': 'runsc', 'NetworkMode': 'none'}})
        if r.status != 201:
            raise AssertionError('docker create orphan: %r' % r)
        r = docker('POST', '/containers/clearing-%s/start' % cls.orphan)
        if r.status not in (204, 304):
            raise AssertionError('docker start orphan: %r' % r)
        r = docker('GET', '/containers/clearing-%s/json' % cls.orphan)
        if not (r.status == 200 and r.json['State']['Running']):
            raise AssertionError('the orphan does not run: %r' % r)

        d.start()

    @classmethod
    def sleepers(cls, c):
        """How many processes of A run `sleep 3599` (the pattern does not match itself)."""
        r = c.post('/v1/sandboxes/%s/exec' % cls.a['id'], {'shell': SLEEPERS})
        if r.status != 200 or r.json['result'].get('exit_code') != 0:
            return -1
        return int(r.json['result']['stdout'])

    def test_background_process_of_the_crashed_daemon_is_killed(self):
        """Nobody could list, signal or read it any more: the restart kills it, and says so."""
        self.assertEqual(self.sleepers_away[:2], (0, '1'), 'it did not outlive the daemon')
        self.assertTrue(wait_for(lambda: self.sleepers(self.api) == 0, 60),
                        'the background process still runs: %r' % self.sleepers(self.api))
        self.assertEqual(self.api.get('/v1/sandboxes/%s/processes' % self.a['id'])
                         .json['processes'], [])
        recs = self.audit_records(self.a['id'], 'sandbox.orphans_killed')
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]['actor'], 'recovery', recs)
        self.assertEqual(len(recs[0]['details']['channels']), 1, recs)

    def test_exec_running_at_the_restart_is_spared(self):
        """A command with an exec record runs on through the restart and its kill of unknown
        commands, and its result reaches its record."""
        self.assertEqual(open_gate(self.api, self.a['id'], self.gate_late).status, 201)

        def done():
            r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.a['id'], self.inflight_late))
            return r if r.status == 200 and r.json['state'] != 'running' else None
        r = wait_for(done, 120)
        self.assertIsNotNone(r, 'the record of the command running at the restart never ended')
        self.assertEqual((r.json['state'], r.json['result']['status'],
                          r.json['result']['exit_code'], r.json['result']['stdout']),
                         ('done', 'exited', 0, 'spared\n'), r)

    def test_a_is_adopted_and_usable(self):
        r = self.api.get('/v1/sandboxes/' + self.a['id'])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['state'], 'running', r)
        self.assertEqual(r.json['metadata'], {'role': 'A'})
        res = self.run_ok(self.a['id'], {'argv': ['cat', '/workspace/before.txt']})
        self.assertEqual(res['stdout'], 'before-crash\n')
        self.assertEqual(self.run_ok(self.a['id'], {'shell': 'echo after > a.txt; cat a.txt'})
                         ['stdout'], 'after\n')
        self.assertIn(self.a['id'], {s['id'] for s in
                                     self.api.get('/v1/sandboxes?state=running').json['sandboxes']})

    def test_b_is_lost(self):
        r = self.api.get('/v1/sandboxes/' + self.b['id'])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['state'], 'lost', r)
        self.assertTrue(r.json['destroy_reason'])
        self.assertIn(self.b['id'], {s['id'] for s in
                                     self.api.get('/v1/sandboxes?state=lost').json['sandboxes']})
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % self.b['id'],
                                       {'argv': ['true']}), 409, 'conflict')
        self.assertEqual(self.api.delete('/v1/sandboxes/' + self.b['id']).status, 204)

    def test_unknown_container_is_removed(self):
        r = docker('GET', '/containers/clearing-%s/json' % self.orphan)
        self.assertEqual(r.status, 404, r)
        self.assertError(self.api.get('/v1/sandboxes/' + self.orphan), 404, 'not_found')

    def test_acknowledged_exec_survives(self):
        r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.a['id'], self.acked['id']))
        self.assertEqual(r.status, 200, r)
        for k in self.acked:
            self.assertEqual(r.json[k], self.acked[k], k)
        self.assertEqual(r.json['result']['stdout'], 'before-crash\n')

    def test_exec_running_at_the_crash_finishes_and_keeps_its_result(self):
        """The command runs on over the live channel while the daemon is away; the agent keeps
        its result, and the restarted daemon stores it in the record."""
        def done():
            r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.a['id'], self.inflight))
            return r if r.status == 200 and r.json['state'] != 'running' else None
        r = wait_for(done, 60)
        self.assertIsNotNone(r, 'the record of the command running at the crash never ended')
        self.assertEqual(r.json['state'], 'done', r)
        self.assertEqual(r.json['result']['status'], 'exited', r)
        self.assertEqual(r.json['result']['exit_code'], 0, r)
        self.assertEqual(r.json['result']['stdout'], 'slept\n', r)
        self.assertEqual(r.json['request'], self.inflight_request)
        m, _ = self.api.metrics()
        self.assertGreaterEqual(m['clearing_channel_results_replayed_total'], 1)

    def test_exec_of_a_vanished_sandbox_is_lost(self):
        r = self.api.get('/v1/sandboxes/%s/execs/%s' % (self.b['id'], self.inflight_b))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['state'], 'lost', r)
        self.assertEqual(r.json['result']['status'], 'sandbox_failed', r)

    def test_recovery_metrics(self):
        m, _ = self.api.metrics()
        self.assertEqual(m['clearing_sandboxes_adopted_total'], 1)
        self.assertEqual(m['clearing_sandboxes_lost_total'], 1)
        self.assertEqual(m['clearing_orphans_removed_total'], 1)


# ---- faults that must end in a true record (issue #17) ----

def tcp_daemon(name, token):
    """A daemon on its own socket and state directory that also listens on TCP with token."""
    d = Daemon(name)
    token_file = os.path.join(d.dir, 'tokens')
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write('ci:%s\n' % token)
    d.port = free_port()
    d.args = ['--tcp', '127.0.0.1:%d' % d.port, '--token-file', token_file]
    return d


class T12Faults(ApiTest):
    """Health tells the truth about the audit log and the disk; a corrupt database is named,
    and moving it aside adopts the sandboxes that still run."""
    TOKEN = 'tok-' + os.urandom(16).hex()

    def anonymous(self, d):
        return Client(tcp=('127.0.0.1', d.port))

    def assertHealth(self, d, status, mentions=()):
        """The whole answer on the unix socket and with a token; the status word alone for an
        anonymous TCP caller."""
        code = 200 if status == 'ok' else 503
        for c in (d.client(), Client(tcp=('127.0.0.1', d.port), token=self.TOKEN)):
            r = c.get('/v1/health')
            self.assertEqual(r.status, code, r)
            self.assertEqual(r.json['status'], status, r)
            self.assertIsInstance(r.json['reasons'], list, r)
            self.assertEqual(r.json['reasons'] == [], status == 'ok', r)
            for m in mentions:
                self.assertTrue(any(m in x for x in r.json['reasons']), (m, r))
        r = self.anonymous(d).get('/v1/health')
        self.assertEqual(r.status, code, r)
        self.assertEqual(r.json, {'status': status}, r)

    def doctor(self, d):
        return subprocess.run([CLEARING, '--host', 'unix://' + d.sock, 'doctor'],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                              env=d.env()).stdout.decode('utf-8', 'replace')

    def test_audit_log_unwritable_is_degraded(self):
        d = tcp_daemon('audit-ro', self.TOKEN)
        self.addCleanup(d.stop)
        d.start()
        log = os.path.join(d.state, 'audit.log')
        self.assertTrue(os.path.isfile(log))
        self.assertHealth(d, 'ok')
        subprocess.run(['chattr', '+i', log], check=True)
        self.addCleanup(subprocess.run, ['chattr', '-i', log], check=False)
        self.assertIn('i', subprocess.run(['lsattr', log], stdout=subprocess.PIPE,
                                          check=True).stdout.decode().split()[0])
        self.assertHealth(d, 'degraded', [log, 'not writable'])
        out = self.doctor(d)
        self.assertRegex(out, r'FAIL daemon at .* healthy: degraded: .*audit log %s'
                         % re.escape(log), out)
        # What health announced is what happens: the action is refused, naming the log.
        c = d.client()
        r = c.post('/v1/sandboxes', {})
        if r.status == 201:
            self.addCleanup(destroy_quietly, c, r.json['id'])
        self.assertError(r, 503, 'unavailable', [log])
        self.assertEqual(c.get('/v1/sandboxes?state=running').json['sandboxes'], [])
        # Writable again: the next record is written, and health says so.
        subprocess.run(['chattr', '-i', log], check=True)
        self.assertHealth(d, 'degraded', [log])   # the last append failed: not yet known good
        sb = self.create({}, client=c)
        self.assertHealth(d, 'ok')
        self.assertEqual(c.delete('/v1/sandboxes/' + sb['id']).status, 204)

    def test_full_state_dir_is_unavailable(self):
        d = tcp_daemon('full', self.TOKEN)
        os.makedirs(d.state)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', d.state],
                       check=True)
        # Cleanups run last-in first-out: the daemon stops, its workspace mounts go, then this.
        self.addCleanup(subprocess.run, ['umount', '-l', d.state], check=False)
        self.addCleanup(d.stop)
        with open('/proc/self/mountinfo') as f:
            self.assertIn(d.state, [line.split()[4] for line in f])
        d.start()
        self.assertHealth(d, 'ok')
        c = d.client()
        filler = os.path.join(d.state, 'filler')
        with open(filler, 'wb') as f:
            try:
                while True:
                    f.write(b'\0' * 65536)
                    f.flush()
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC, e)
        self.assertLess(os.statvfs(d.state).f_bavail * os.statvfs(d.state).f_frsize, 65536)
        self.assertHealth(d, 'unavailable', ['no space left on ' + d.state])
        out = self.doctor(d)
        self.assertRegex(out, r'FAIL daemon at .* healthy: unavailable: no space left on %s'
                         % re.escape(d.state), out)
        # A create cannot be recorded: it is refused as unavailable, naming the directory.
        r = c.post('/v1/sandboxes', {})
        if r.status == 201:
            self.addCleanup(destroy_quietly, c, r.json['id'])
        self.assertError(r, 503, 'unavailable', ['no space left on ' + d.state])
        self.assertEqual(c.get('/v1/sandboxes?state=running').json['sandboxes'], [])
        os.unlink(filler)
        sb = self.create({}, client=c)
        self.assertHealth(d, 'ok')
        self.assertEqual(c.delete('/v1/sandboxes/' + sb['id']).status, 204)

    def test_corrupt_database_named_and_sandboxes_adopted(self):
        d = Daemon('corrupt')
        self.addCleanup(d.stop)
        made = []
        # Runs after the API destroys: whatever is left of the sandbox goes.
        self.addCleanup(lambda: [docker_remove_quietly('clearing-' + x['id']) for x in made])
        d.start()
        c = d.client()
        t0 = int(time.time())
        sb = self.create({'metadata': {'role': 'kept'}, 'limits': {'memory': '300m'}}, client=c)
        t1 = int(time.time()) + 1
        self.assertEqual(self.run_ok(sb['id'], {'shell': 'echo before > /workspace/b.txt'},
                                     client=c)['stdout'], '')
        made.append(sb)
        d.stop()
        db = os.path.join(d.state, 'clearing.db')
        with open(db, 'r+b') as f:
            head = f.read(16)
            self.assertEqual(head, b'SQLite format 3\0')
            f.seek(0)
            f.write(os.urandom(4096))
        p = d.spawn()
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            self.fail('the daemon started on a corrupt database:\n' + d.log_tail())
        self.assertNotEqual(rc, 0)
        log = d.log_tail(5)
        self.assertIn('state database %s is corrupt' % db, log)
        self.assertIn('mv %s %s.corrupt' % (db, db), log)
        self.assertIn('running sandboxes are adopted', log)
        r = docker('GET', '/containers/clearing-%s/json' % sb['id'])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json['State']['Running'], r)
        # The operator does what the message says.
        for suffix in ('', '-wal', '-shm'):
            if os.path.exists(db + suffix):
                os.rename(db + suffix, db + suffix + '.corrupt')
        d.start()
        r = c.get('/v1/sandboxes/' + sb['id'])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['state'], 'running', r)
        self.assertIs(r.json['recovered'], True, r)
        self.assertEqual(r.json['limits']['memory'], sb['limits']['memory'], r)
        # The label's expiry: set when the container was made, during the create (which may
        # take seconds on a loaded host), so between its start and its end plus the lifetime.
        life = sb['limits']['lifetime']
        self.assertTrue(t0 + life <= r.json['expires_at'] <= t1 + life,
                        (t0 + life, r.json['expires_at'], t1 + life, r))
        self.assertTrue(t0 + life <= sb['expires_at'] <= t1 + life, (t0, t1, sb))
        self.assertIn(sb['id'], {s['id'] for s in
                                 c.get('/v1/sandboxes?state=running').json['sandboxes']})
        ls = subprocess.run([CLEARING, '--host', 'unix://' + d.sock, 'ls'],
                            stdout=subprocess.PIPE, check=True, timeout=60).stdout.decode()
        self.assertRegex(ls, re.escape(sb['id']) + r' +running .*\[RECOVERED\]', ls)
        self.assertEqual(self.run_ok(sb['id'], {'argv': ['cat', '/workspace/b.txt']},
                                     client=c)['stdout'], 'before\n')
        with open(os.path.join(d.state, 'audit.log')) as f:
            records = [json.loads(line) for line in f]
        adopted = [x for x in records if x['action'] == 'sandbox.recovered']
        self.assertEqual([x['sandbox'] for x in adopted], [sb['id']], records[-5:])
        self.assertEqual(c.delete('/v1/sandboxes/' + sb['id']).status, 204)
        self.assertTrue(container_removed(sb['id']))
        self.assertEqual(c.get('/v1/sandboxes/' + sb['id']).json['state'], 'destroyed')


# ---- plans within the daemon's limits (issue #16, item 5) ----

class T12PlanLimits(ApiTest):
    """A plan's sandbox is one of the daemon's: it counts against max_sandboxes and max_execs
    like any other, clients cannot use it, and a restart finds the one a dead daemon left."""

    @classmethod
    def setUpClass(cls):
        cls.roots = tempfile.mkdtemp(prefix='clr-api-plan-repos-', dir='/tmp')
        cls.addClassCleanup(shutil.rmtree, cls.roots, True)
        cls.repo = os.path.join(cls.roots, 'repo')
        git = ['git', '-C', cls.repo, '-c', 'user.name=t', '-c', 'user.email=t@t']
        subprocess.run(['git', 'init', '-q', '-b', 'main', cls.repo], check=True)
        os.mkdir(os.path.join(cls.repo, '.clearing'))
        with open(os.path.join(cls.repo, '.clearing', 'gauntlet.yaml'), 'w') as f:
            f.write('checks:\n  - name: ok\n    kind: other\n    run: "true"\n')
        subprocess.run(git + ['add', '.'], check=True)
        subprocess.run(git + ['commit', '-qm', 'base'], check=True)
        cls.daemon = Daemon('plans', ['--max-sandboxes', '2', '--max-execs', '1',
                                      '--repo-root', cls.roots])
        cls.addClassCleanup(cls.daemon.stop)
        cls.daemon.start()

    def plan(self, steps):
        return {'plan': {'steps': steps}, 'repo': self.repo}

    def live(self):
        r = self.api.get('/v1/sandboxes')
        self.assertEqual(r.status, 200, r)
        return sorted(s['id'] for s in r.json['sandboxes'] if s['state'] in ('running', 'plan'))

    def start_held_plan(self):
        """Starts a plan whose one step waits for a gate; returns (events, its sandbox's id,
        the gate's path on the host) once its sandbox exists."""
        gate = gate_name()
        conn = self.api.connection(timeout=180)
        self.addCleanup(conn.close)
        conn.request('POST', '/v1/plans?stream=true',
                     body=json.dumps(self.plan([{'run': {'shell': held_until(gate),
                                                         'timeout': '150s'}}])).encode(),
                     headers={'Content-Type': 'application/json'})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200, resp.read()[:600] if resp.status != 200 else '')
        events = ndjson_events(resp)
        first = next(events, None)
        self.assertEqual((first or {}).get('event'), 'sandbox', first)
        sid = first['id']
        return events, sid, os.path.join(self.d().state, 'workspaces', sid, gate)

    def finish(self, events, gate):
        with open(gate, 'w') as f:
            f.write('open\n')
        last = None
        for e in events:
            last = e
        self.assertEqual((last or {}).get('event'), 'result', last)
        self.assertEqual(last.get('verdict'), 'pass', last)

    def test_plan_refused_at_max_sandboxes(self):
        # Positive control: below the limit a plan runs, and leaves nothing live.
        r = self.api.post('/v1/plans', self.plan([{'run': {'argv': ['true']}}]), timeout=180)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json['verdict'], 'pass', r)
        self.assertEqual(self.live(), [])
        self.create()
        self.create()
        refused = self.assertError(self.api.post('/v1/sandboxes', {}), 429, 'limit',
                                   'max_sandboxes')
        err = self.assertError(self.api.post('/v1/plans', self.plan([{'run': {'argv': ['true']}}]),
                                             timeout=180), 429, 'limit', 'max_sandboxes')
        self.assertEqual(err['message'], refused['message'])
        self.assertEqual(len(self.live()), 2)

    def test_running_plan_holds_a_sandbox_and_a_command(self):
        s = self.create()
        # Positive control: a command runs (max_execs 1) and a second sandbox would fit.
        self.run_ok(s['id'], {'argv': ['true']})
        events, sid, gate = self.start_held_plan()
        try:
            self.assertEqual(self.live(), sorted([s['id'], sid]))
            self.assertError(self.api.post('/v1/sandboxes', {}), 429, 'limit', 'max_sandboxes')
            self.assertError(self.api.post('/v1/sandboxes/%s/exec' % s['id'], {'argv': ['true']}),
                             429, 'limit', 'max_execs')
            r = self.api.get('/v1/sandboxes/' + sid)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json['state'], 'plan', r)
            # Only the plan uses its sandbox.
            self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}),
                             409, 'conflict', 'plan')
            self.assertError(self.api.delete('/v1/sandboxes/' + sid), 409, 'conflict', 'plan')
        finally:
            self.finish(events, gate)
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertEqual((r.json['state'], r.json['destroy_reason']),
                         ('destroyed', 'plan-finished'), r)
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sid).status, 404)
        # Its sandbox and its command slot are free again.
        self.run_ok(s['id'], {'argv': ['true']})
        self.create()

    def test_streamed_plan_cancelled_when_its_client_goes_away(self):
        gate = gate_name()
        conn = self.api.connection(timeout=180)
        self.addCleanup(conn.close)
        conn.request('POST', '/v1/plans?stream=true',
                     body=json.dumps(self.plan([{'run': {'shell': held_until(gate),
                                                         'timeout': '600s'}}])).encode(),
                     headers={'Content-Type': 'application/json'})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200, resp.read()[:600] if resp.status != 200 else '')
        events = ndjson_events(resp)
        first = next(events, None)
        self.assertEqual((first or {}).get('event'), 'sandbox', first)
        sid = first['id']
        self.addCleanup(docker_remove_quietly, 'clearing-' + sid)
        # Positive control: the plan runs and holds its sandbox.
        self.assertEqual(self.api.get('/v1/sandboxes/' + sid).json['state'], 'plan')
        resp.close()
        conn.close()
        # Its gate never opens: only the cancel ends it (its step's timeout is 600 s).
        gone = wait_for(lambda: self.api.get('/v1/sandboxes/' + sid).json['state'] == 'destroyed',
                        90)
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertTrue(gone, r)
        self.assertEqual(r.json['destroy_reason'], 'plan-finished', r)
        self.assertTrue(container_removed(sid), sid)

    def test_restart_finds_a_plans_sandbox(self):
        events, sid, gate = self.start_held_plan()
        self.addCleanup(docker_remove_quietly, 'clearing-' + sid)
        # Positive control: its container runs, labelled as this daemon's.
        r = docker('GET', '/containers/clearing-%s/json' % sid)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json['State']['Running'], r)
        self.assertEqual(r.json['Config']['Labels'].get(LABEL + 'owner'), self.d().owner)
        self.assertEqual(self.api.get('/v1/sandboxes/' + sid).json['state'], 'plan')
        self.d().kill9()
        self.d().start()
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json['state'], r.json['destroy_reason']),
                         ('destroyed', 'plan-interrupted'), r)
        self.assertTrue(wait_for(lambda: docker('GET', '/containers/clearing-%s/json'
                                                % sid).status == 404, 60),
                        'the container of the interrupted plan is still there')
        self.assertTrue(wait_for(lambda: not os.path.exists(os.path.dirname(gate)), 60),
                        'the workspace of the interrupted plan is still there')
        with open(os.path.join(self.d().state, 'audit.log')) as f:
            records = [json.loads(line) for line in f if sid in line]
        self.assertTrue([r for r in records if r.get('action') == 'sandbox.destroy' and
                         r.get('actor') == 'recovery'], records)
        self.assertEqual(self.live(), [])
        self.create()
        self.create()


class T13FaultRecords(ApiTest):
    """Faults end in a true record (issue #17): a command cut by its sandbox's death, a full
    workspace, and the command line when the daemon dies under it."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon('faults')
        cls.addClassCleanup(cls.daemon.stop)
        cls.daemon.start()

    def cli(self, *args, timeout=120, **kw):
        return subprocess.run([CLEARING, '--host', self.daemon.sock] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def test_exec_cut_by_a_killed_sandbox_adds_up(self):
        """Its record keeps the output that came, counts exactly those bytes, and its wall time
        runs until the cut (it was 0, with stdout "1..5" stored beside stdout_bytes 0)."""
        sid = self.create()['id']
        gate = gate_name()
        t0 = time.monotonic()
        conn, started, events = start_streaming_exec(
            self.api, sid, {'shell': 'for i in 1 2 3 4 5; do echo $i; done; ' + held_until(gate),
                            'timeout': '300s'})
        self.addCleanup(conn.close)
        got = ''
        for ev in events:
            self.assertEqual(ev['event'], 'stdout', ev)
            got += ev['data']
            if got == '1\n2\n3\n4\n5\n':
                break
        self.assertEqual(got, '1\n2\n3\n4\n5\n')
        # The command holds at its gate: the sandbox dies under it.
        r = docker('POST', '/containers/clearing-%s/kill' % sid)
        self.assertEqual(r.status, 204, r)
        final = None
        for ev in events:
            if ev['event'] == 'result':
                final = ev
        elapsed_us = (time.monotonic() - t0) * 1e6
        self.assertIsNotNone(final, 'the stream ended without a result')
        res = final['result']
        self.assertEqual(res['status'], 'sandbox_failed', res)
        for rec in (res, self.api.get('/v1/sandboxes/%s/execs/%s' % (sid, started['exec_id']))
                    .json['result']):
            self.assertEqual(rec['stdout'], '1\n2\n3\n4\n5\n', rec)
            self.assertEqual(rec['stdout_bytes'], len(rec['stdout'].encode()), rec)
            self.assertEqual(rec['stderr_bytes'], len(rec['stderr'].encode()), rec)
            self.assertFalse(rec['stdout_truncated'], rec)
            # From the request to the cut: more than nothing, less than the client waited.
            self.assertGreater(rec['wall_us'], 0, rec)
            self.assertLessEqual(rec['wall_us'], elapsed_us, rec)

    def test_full_workspace_is_507_no_space(self):
        """A file that does not fit, and any write after it, are answered 507 "no space left
        on the workspace"; once room is made, writes work again."""
        sid = self.create({'limits': {'workspace_size': '1m'}})['id']
        put = lambda name, data: self.api.request(
            'PUT', '/v1/sandboxes/%s/files/%s' % (sid, name), data,
            headers={'Content-Type': 'application/octet-stream'})
        r = put('small-before', b'fits\n')
        self.assertEqual(r.status, 201, r)  # the control: writes work while there is room
        err = self.assertError(put('big', os.urandom(2 << 20)), 507, 'no_space',
                               'no space left on the workspace')
        self.assertIn('big', err['message'])
        # All or nothing: the refused file took no room.
        self.assertEqual(put('fits-after-refusal', b'x' * 8192).status, 201)
        # Filled from inside, then written from outside: 507 again, not an I/O error.
        res = self.exec(sid, {'shell': 'head -c 2000000 /dev/zero > fill'})
        self.assertIn('No space left on device', res['result']['stderr'], res)
        err = self.assertError(put('after-fill', b'x' * 8192), 507, 'no_space',
                               'no space left on the workspace')
        self.assertIn('after-fill', err['message'])
        # Removed from inside (gVisor may keep a file the host deletes open, and its room).
        self.run_ok(sid, {'argv': ['rm', 'fill']})
        r = put('after-room', b'x' * 8192)
        self.assertEqual(r.status, 201, r)

    def test_cli_exec_cut_by_kill9_names_its_exec_id(self):
        """The daemon dies while `clearing exec` streams: the CLI says which exec it was (the
        stream's first event carried its id) and a command that fetches its record, and exits
        125; that command works once the daemon is back."""
        d = Daemon('faults-kill9')
        self.addCleanup(d.stop)
        d.start()
        c = d.client()
        sid = self.create(client=c)['id']
        gate = gate_name()
        cli = subprocess.Popen([CLEARING, '--host', d.sock, 'exec', sid, '--shell',
                                'echo up; %s; echo after' % held_until(gate)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: cli.poll() is None and cli.kill())
        self.assertEqual(cli.stdout.readline(), 'up\n')  # it runs, and its stream is open
        d.kill9()
        out, err = cli.communicate(timeout=60)
        self.assertEqual(cli.returncode, 125, err)
        self.assertNotIn('<id>', err)
        m = re.search(r'exec (ex-[0-9a-f]{16}) started; .*fetch its record with: (.+)$', err,
                      re.M)
        self.assertIsNotNone(m, err)
        exec_id, fetch = m.group(1), m.group(2)
        d.start()
        with open(os.path.join(d.state, 'workspaces', sid, gate), 'w') as f:
            f.write('open\n')
        args = fetch.split()
        self.assertEqual(args[0], 'clearing', fetch)

        def fetched():
            r = subprocess.run([CLEARING] + args[1:], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
            rec = json.loads(r.stdout) if r.returncode == 0 else None
            return rec if rec and rec['state'] == 'done' else None
        rec = wait_for(fetched, 60)
        self.assertIsNotNone(rec, 'the printed command never fetched a finished record')
        self.assertEqual(rec['id'], exec_id)
        self.assertEqual(rec['result']['stdout'], 'up\nafter\n', rec)

    def test_cli_create_cut_by_kill9_is_125_like_exec(self):
        """The daemon dies while `clearing create` waits: 125, as for `exec` and `ls` with the
        daemon gone (it was 1). The daemon's engine is a relay that holds the container create,
        so the create is provably under way at the kill."""
        d = Daemon('faults-create')
        proxy = EngineProxy(os.path.join(d.dir, 'engine.sock'))
        self.addCleanup(proxy.close)
        d.extra_env['CLEARING_DOCKER_HOST'] = 'unix://' + proxy.path
        self.addCleanup(d.stop)
        d.start()
        proxy.hold_creates()
        cli = subprocess.Popen([CLEARING, '--host', d.sock, 'create'], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: cli.poll() is None and cli.kill())
        self.assertTrue(proxy.held.wait(60), 'the create never reached the engine')
        self.assertIsNone(cli.poll(), 'the CLI ended before the kill')
        d.kill9()
        proxy.drop_held()
        # The cut create's workspace (a tmpfs made before its container) has no row: this
        # test removes it, after the restart below (cleanups run last-in first-out).
        self.addCleanup(self.remove_workspaces, d)
        out, err = cli.communicate(timeout=60)
        self.assertEqual(cli.returncode, 125, err)
        self.assertIn('the sandbox may not have been created', err)
        self.assertIn('--host %s ls' % d.sock, err)
        self.assertEqual(out, '')
        # The same class of error, the same status, from the other commands.
        for args in (['ls'], ['inspect', 'sb-00000000000000aa'], ['rm', 'sb-00000000000000aa'],
                     ['exec', 'sb-00000000000000aa', '--', 'true']):
            r = subprocess.run([CLEARING, '--host', d.sock] + args, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 125, (args, r.stderr))
        # A refusal is another class: 1 (for exec, 125: 1 is the command's own status).
        r = self.cli('inspect', 'sb-00000000000000aa')
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('not_found', r.stderr)
        # Back, talking to dockerd directly, so that it is stopped like any other.
        del d.extra_env['CLEARING_DOCKER_HOST']
        d.start()

    @staticmethod
    def remove_workspaces(d):
        top = os.path.join(d.state, 'workspaces')
        for name in os.listdir(top) if os.path.isdir(top) else []:
            path = os.path.join(top, name)
            subprocess.run(['umount', '-l', path], check=False, capture_output=True)
            shutil.rmtree(path, ignore_errors=True)


class T14RuntimeDeath(ApiTest):
    """A sandbox whose runtime dies (its runsc processes killed, or the kernel's OOM killer) is
    lost at once, with its cause, from the engine's events: the reconcile pass, the backstop,
    runs only every 10 minutes in this daemon, so it cannot be what marks it (and it would say
    "container stopped or vanished"). Its workspace stays readable until it is destroyed."""

    @classmethod
    def setUpClass(cls):
        d = cls.daemon = Daemon('death')
        # A repository, so that a lost sandbox's diff can be asked for.
        cls.repo = os.path.join(d.dir, 'repo')
        git = ['git', '-C', cls.repo, '-c', 'user.name=t', '-c', 'user.email=t@example.org']
        os.mkdir(cls.repo)
        with open(os.path.join(cls.repo, 'README'), 'w') as f:
            f.write('base\n')
        for args in (['init', '-q', '-b', 'main'], ['add', 'README'], ['commit', '-qm', 'base']):
            subprocess.run(git + args, check=True)
        config = os.path.join(d.dir, 'daemon.json')
        with open(config, 'w') as f:
            json.dump({'reconcile_interval_ms': 600000, 'repo_roots': [d.dir]}, f)
        d.args = ['--config', config]
        cls.addClassCleanup(d.stop)
        d.start()

    def state(self, sid):
        r = self.api.get('/v1/sandboxes/' + sid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def wait_not_running(self, sid):
        # Generous: it bounds a hang, it measures nothing.
        s = wait_for(lambda: (lambda j: j if j['state'] != 'running' else None)(self.state(sid)),
                     60)
        self.assertIsNotNone(s, '%s still running 60 s after its runtime died' % sid)
        return s

    def runsc_pids(self, cid):
        return runsc_pids(cid)

    def assert_lost_keeps_workspace(self, sid, reason):
        s = self.state(sid)
        self.assertEqual((s['state'], s['destroy_reason']), ('lost', reason), s)
        self.assertIn(sid, {x['id'] for x in
                            self.api.get('/v1/sandboxes?state=lost').json['sandboxes']})
        recs = self.audit_records(sid, 'sandbox.lost')
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]['details'], {'reason': reason, 'tenant': 'default'}, recs)
        self.assertEqual(recs[0]['actor'], 'engine', recs)
        # A new command is refused, and the refusal names the cause.
        self.assertError(self.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}), 409,
                         'conflict', mentions=['lost', reason])
        # What it wrote before it died can still be read; nothing can be written.
        r = self.api.get('/v1/sandboxes/%s/files/keep.txt' % sid)
        self.assertEqual((r.status, r.body), (200, b'before\n'), r)
        r = self.api.get('/v1/sandboxes/%s/files' % sid)
        self.assertEqual(r.status, 200, r)
        self.assertIn('keep.txt', {e['name'] for e in r.json['entries']}, r)
        self.assertError(self.api.request('PUT', '/v1/sandboxes/%s/files/new.txt' % sid, b'x'),
                         409, 'conflict')
        # Destroyed: its remains go.
        workspace = os.path.join(self.daemon.state, 'workspaces', sid)
        self.assertTrue(os.path.isdir(workspace))
        self.assertEqual(self.api.delete('/v1/sandboxes/%s?wait=true' % sid).status, 204)
        self.assertEqual(self.state(sid)['state'], 'destroyed')
        self.assertEqual(docker('GET', '/containers/clearing-%s/json' % sid).status, 404)
        self.assertFalse(os.path.exists(workspace))
        self.assertError(self.api.get('/v1/sandboxes/%s/files/keep.txt' % sid), 409, 'conflict')

    def diff(self, sid):
        r = self.api.get('/v1/sandboxes/%s/diff' % sid)
        self.assertEqual(r.status, 200, r)
        return r.text

    def test_killed_runtime_is_lost_as_runtime_died(self):
        sid = self.create({'repo': {'path': self.repo}})['id']
        self.run_ok(sid, {'shell': 'echo before > /workspace/keep.txt'})
        self.assertEqual(self.state(sid)['state'], 'running')
        running_diff = self.diff(sid)
        self.assertIn('+before', running_diff)
        r = docker('GET', '/containers/clearing-%s/json' % sid)
        self.assertEqual(r.status, 200, r)
        cid, pid = r.json['Id'], r.json['State']['Pid']
        pids = self.runsc_pids(cid)
        # Positive control: the engine's sandbox process is one of those found.
        self.assertIn(pid, pids, (pid, pids))
        # A command in flight when the runtime dies ends with an error that names it.
        done = {}
        started = os.path.join(self.daemon.state, 'workspaces', sid, 'started')
        t = threading.Thread(target=lambda: done.update(
            r=self.api.post('/v1/sandboxes/%s/exec' % sid,
                            {'shell': 'touch /workspace/started; sleep 600'})))
        t.start()
        self.assertTrue(wait_for(lambda: os.path.exists(started), 60), 'the command never ran')
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:  # the gofer may end with the sandbox before its turn
                pass
        t.join(120)
        self.assertFalse(t.is_alive(), 'the command in flight did not end')
        self.assertEqual(done['r'].status, 200, done['r'])
        res = done['r'].json['result']
        self.assertEqual(res['status'], 'sandbox_failed', res)
        self.assertIn('runtime died', res['message'], res)
        self.wait_not_running(sid)
        # The diff of what it did is still there (and of the file its last command made).
        lost_diff = self.diff(sid)
        self.assertTrue(lost_diff.startswith(running_diff), (running_diff, lost_diff))
        self.assertIn('b/started', lost_diff)
        self.assert_lost_keeps_workspace(sid, 'runtime died')
        m, _ = self.api.metrics()
        self.assertGreaterEqual(m['clearing_sandboxes_lost_total'], 1)

    def kill_runtime(self, sid):
        r = docker('GET', '/containers/clearing-%s/json' % sid)
        self.assertEqual(r.status, 200, r)
        pids = self.runsc_pids(r.json['Id'])
        self.assertIn(r.json['State']['Pid'], pids, pids)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:  # the gofer may end with the sandbox before its turn
                pass

    def test_watcher_reconnects_and_catches_up(self):
        """The engine's event stream ends and the engine refuses connections for a while (as
        when dockerd restarts): a death meanwhile comes as no event, and is caught by the one
        comparison the watcher makes after it connects again; a death after that comes through
        the new stream."""
        d = Daemon('death-proxy')
        self.addCleanup(d.stop)
        proxy = EngineProxy(os.path.join(d.dir, 'engine.sock'))
        self.addCleanup(proxy.close)
        config = os.path.join(d.dir, 'daemon.json')
        with open(config, 'w') as f:
            json.dump({'reconcile_interval_ms': 600000}, f)
        d.args = ['--config', config]
        d.extra_env['CLEARING_DOCKER_HOST'] = proxy.path
        d.start()
        c = d.client()
        self.assertTrue(proxy.events_seen.wait(60), 'the daemon never asked for events')
        r = c.post('/v1/sandboxes', {})
        self.assertEqual(r.status, 201, r)
        first = r.json['id']
        self.addCleanup(destroy_quietly, c, first)
        self.assertEqual(self.run_ok(first, {'argv': ['true']}, client=c)['exit_code'], 0)
        # The engine "goes away": its stream ends, connections are refused.
        proxy.events_seen.clear()
        proxy.refusing = True
        self.assertEqual(proxy.cut_event_streams(), 1)
        self.assertTrue(wait_for(lambda: 'events.disconnected' in open(d.log_path).read(), 60),
                        d.log_tail())
        # Its runtime dies while nobody is listening: the engine has published the die event
        # (it is in its log) before the watcher may connect again, so no stream can carry it.
        t0 = int(time.time()) - 1
        self.kill_runtime(first)
        flt = urllib.parse.quote(json.dumps({'type': ['container'], 'event': ['die'],
                                             'container': ['clearing-' + first]}))

        def die_published():
            r = docker('GET', '/events?since=%d&until=%d&filters=%s'
                       % (t0, int(time.time()), flt))
            return r.status == 200 and b'"die"' in r.body
        self.assertTrue(wait_for(die_published, 60), 'the engine never logged the die event')
        self.assertEqual(c.get('/v1/sandboxes/' + first).json['state'], 'running')
        # The engine is back: the watcher connects again and compares once.
        proxy.refusing = False
        self.assertTrue(proxy.events_seen.wait(60), 'the watcher did not connect again')
        s = wait_for(lambda: (lambda j: j if j['state'] != 'running' else None)(
            c.get('/v1/sandboxes/' + first).json), 60)
        self.assertIsNotNone(s, 'the death during the outage was never caught')
        self.assertEqual((s['state'], s['destroy_reason']),
                         ('lost', 'container stopped or vanished'), s)
        # And the new stream carries the next death.
        r = c.post('/v1/sandboxes', {})
        self.assertEqual(r.status, 201, r)
        second = r.json['id']
        self.addCleanup(destroy_quietly, c, second)
        self.run_ok(second, {'argv': ['true']}, client=c)
        self.kill_runtime(second)
        s = wait_for(lambda: (lambda j: j if j['state'] != 'running' else None)(
            c.get('/v1/sandboxes/' + second).json), 60)
        self.assertIsNotNone(s, 'the death after the reconnect was never seen')
        self.assertEqual((s['state'], s['destroy_reason']), ('lost', 'runtime died'), s)
        for sid in (first, second):
            self.assertEqual(c.delete('/v1/sandboxes/%s?wait=true' % sid).status, 204)
        # One warning for the outage, however many attempts it took.
        log = open(d.log_path).read()
        self.assertEqual(log.count('"events.disconnected"'), 1, d.log_tail())
        self.assertGreaterEqual(log.count('"events.connected"'), 2, d.log_tail())
        # The watcher, reading its stream, does not hold up a stop (the deadline bounds a hang).
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.fail('the daemon did not stop within 60 s of SIGTERM:\n' + d.log_tail())
        self.assertEqual(rc, 0, d.log_tail())

    def test_lost_sandbox_remains_go_at_its_expiry(self):
        # The lifetime must outlast the create, the command, the kill and the daemon's noticing
        # it (a loaded host took more than 10 s over them: the sandbox expired while it ran,
        # before it was lost); the wait for the expiry below is that much longer.
        sid = self.create({'limits': {'lifetime': '40s'}, 'idle_timeout': 0})['id']
        self.run_ok(sid, {'shell': 'echo before > /workspace/keep.txt'})
        self.kill_runtime(sid)
        lost = self.wait_not_running(sid)
        self.assertEqual(lost['state'], 'lost', 'precondition: lost before its expiry: %r' % lost)
        workspace = os.path.join(self.daemon.state, 'workspaces', sid)
        self.assertTrue(os.path.isdir(workspace))  # kept, until...
        s = wait_for(lambda: (lambda j: j if j['state'] != 'lost' else None)(self.state(sid)), 130)
        self.assertIsNotNone(s, 'a lost sandbox past its expiry was not destroyed')
        self.assertEqual((s['state'], s['destroy_reason']), ('destroyed', 'expired'), s)
        self.assertTrue(wait_for(lambda: not os.path.exists(workspace) and docker(
            'GET', '/containers/clearing-%s/json' % sid).status == 404, 60),
            'the remains of an expired lost sandbox were not removed')

    def test_oom_killed_sandbox_is_lost_as_oom(self):
        # A real kernel OOM kill of the whole sandbox. Provoking one from inside is a race the
        # agent usually wins (it ends commands at its own, lower limit: within 13 rounds of
        # allocations on one machine, not in 40 on another), so the test tightens the
        # container's memory cgroup on the host to a little over what the sandbox uses, then
        # allocates less than the agent's limit: the kernel, not the agent, meets it first.
        sid = self.create({'limits': {'memory': '256m'}})['id']
        self.run_ok(sid, {'shell': 'echo before > /workspace/keep.txt'})
        info = docker('GET', '/containers/clearing-%s/json' % sid)
        self.assertEqual(info.status, 200, info)
        cid = json.loads(info.body)['Id']
        files = memory_cgroup_files(cid)
        self.assertIsNotNone(files, 'no memory cgroup found for container %s' % cid)
        limit_file, usage_file = files
        with open(usage_file) as f:
            usage = int(f.read())
        self.assertGreater(usage, 0)  # positive control: the cgroup is the sandbox's, in use
        with open(limit_file, 'w') as f:
            f.write(str(usage + (16 << 20)))
        r = self.api.post('/v1/sandboxes/%s/exec' % sid,
                          {'shell': 'python3 -c "b = bytearray(120 << 20)"', 'timeout': '60s'})
        self.assertEqual(r.status, 200, r)
        res = r.json['result']
        # The command in flight when the kernel killed the sandbox is named oom (or
        # sandbox_failed when the kill came first); the sandbox is lost as oom.
        self.assertIn(res['status'], ('oom', 'sandbox_failed'), res)
        s = self.wait_not_running(sid)
        self.assertEqual(s['destroy_reason'], 'oom', (s, res))
        self.assert_lost_keeps_workspace(sid, 'oom')


def memory_cgroup_files(cid):
    """The memory limit and usage files of container cid's cgroup (v1 or v2), or None."""
    for d, limit, usage in (('/sys/fs/cgroup/memory/docker/' + cid, 'memory.limit_in_bytes',
                             'memory.usage_in_bytes'),
                            ('/sys/fs/cgroup/docker/' + cid, 'memory.max', 'memory.current'),
                            ('/sys/fs/cgroup/system.slice/docker-%s.scope' % cid, 'memory.max',
                             'memory.current')):
        if os.path.exists(os.path.join(d, limit)):
            return os.path.join(d, limit), os.path.join(d, usage)
    return None


# ---- tenants (issue #16, item 6) ----

def write_private(path, content):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(content)


class T20Tenancy(ApiTest):
    """Tokens belong to tenants: a tenant sees its own sandboxes (every token of it), the old
    token forms are tenant default's, the tenant survives a restart and an adoption into an
    empty database, and bad token files and quotas stop the daemon naming what is wrong. The
    attacks across tenants are escape: api-tenant-isolation and api-tenant-quota."""

    ACME_CI = 'acme-ci-' + os.urandom(12).hex()
    ACME_BOB = 'acme-bob-' + os.urandom(12).hex()
    GLOBEX = 'globex-' + os.urandom(12).hex()
    OLD = 'old-' + os.urandom(12).hex()
    BARE = 'bare-' + os.urandom(12).hex()

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        d = Daemon('tenants')
        tokens = os.path.join(d.dir, 'tokens')
        write_private(tokens, '# TENANT:NAME:TOKEN\nacme:ci:%s\nacme:bob:%s\nglobex:ci:%s\n'
                      '\nold:%s\n%s\n' % (cls.ACME_CI, cls.ACME_BOB, cls.GLOBEX, cls.OLD, cls.BARE))
        config = os.path.join(d.dir, 'serve.json')
        with open(config, 'w') as f:
            json.dump({'tenants': {'acme': {'max_cpus': '1.5', 'max_execs': 1}}}, f)
        d.args = ['--config', config, '--tcp', '127.0.0.1:%d' % cls.port, '--token-file', tokens]
        cls.daemon = d
        cls.addClassCleanup(d.stop)
        d.start()

    def tcp(self, token):
        return Client(tcp=('127.0.0.1', self.port), token=token)

    def ids(self, client):
        r = client.get('/v1/sandboxes')
        self.assertEqual(r.status, 200, r)
        return {s['id'] for s in r.json['sandboxes']}

    def test_tokens_of_one_tenant_share_its_sandboxes(self):
        ci, bob, globex = self.tcp(self.ACME_CI), self.tcp(self.ACME_BOB), self.tcp(self.GLOBEX)
        sb = self.create({'limits': {'cpus': '0.5'}}, client=ci)
        self.assertEqual(sb['tenant'], 'acme', sb)
        self.assertIn(sb['id'], self.ids(bob))
        self.assertEqual(self.run_ok(sb['id'], {'argv': ['echo', 'bob']}, client=bob)['stdout'],
                         'bob\n')
        self.assertNotIn(sb['id'], self.ids(globex))
        self.assertError(globex.get('/v1/sandboxes/' + sb['id']), 404, 'not_found',
                         'no sandbox ' + sb['id'])
        self.assertIn(sb['id'], self.ids(self.api))  # the operator
        with open(os.path.join(self.d().state, 'audit.log')) as f:
            recs = [json.loads(line) for line in f if sb['id'] in line]
        actors = {(x['action'], x['actor']) for x in recs}
        self.assertIn(('sandbox.create', 'tenant=acme token=ci'), actors, recs)
        self.assertIn(('exec.start', 'tenant=acme token=bob'), actors, recs)

    def test_old_token_forms_are_tenant_default(self):
        old, bare = self.tcp(self.OLD), self.tcp(self.BARE)
        sb = self.create({}, client=old)
        self.assertEqual(sb['tenant'], 'default', sb)
        mine = self.create({})  # the operator's sandbox is default's too
        self.assertEqual(mine['tenant'], 'default', mine)
        self.assertTrue({sb['id'], mine['id']} <= self.ids(bare))
        self.assertNotIn(sb['id'], self.ids(self.tcp(self.ACME_CI)))

    def test_cpu_quota(self):
        """acme: max_cpus 1.5. One CPU fits, another does not; globex is not held by it."""
        ci = self.tcp(self.ACME_CI)
        base = sum(float(s['limits']['cpus']) for s in
                   ci.get('/v1/sandboxes?state=running').json['sandboxes'])
        self.assertEqual(base, 0.0, 'acme already holds CPUs: another test left a sandbox')
        self.create({'limits': {'cpus': '1'}}, client=ci)
        r = ci.post('/v1/sandboxes', {'limits': {'cpus': '1'}})
        self.assertError(r, 429, 'limit', ('tenant acme', 'max_cpus 1.500'))
        self.create({'limits': {'cpus': '1'}}, client=self.tcp(self.GLOBEX))
        self.create({'limits': {'cpus': '0.5'}}, client=ci)  # what is left still fits
        m = ci.get('/metrics')
        self.assertEqual(m.status, 200, m)
        self.assertIn('clearing_tenant_cpus{tenant="acme"} 1.500', m.text)
        self.assertNotIn('globex', m.text)

    def test_exec_quota(self):
        """acme: max_execs 1. While one command of acme's runs (held by a gate), a second one in
        acme's sandbox is refused naming acme's limit, also when the operator asks; globex's
        command still runs; once the first ends, acme runs again."""
        ci, globex = self.tcp(self.ACME_CI), self.tcp(self.GLOBEX)
        mine = self.create({'limits': {'cpus': '0.25'}}, client=ci)['id']
        theirs = self.create({}, client=globex)['id']
        gate = gate_name()
        conn, started, events = start_streaming_exec(
            ci, mine, {'shell': held_until(gate), 'timeout': '120s'})
        try:
            self.assertRegex(started.get('exec_id', ''), EXEC_ID_RE)
            r = ci.post('/v1/sandboxes/%s/exec' % mine, {'argv': ['true']})
            self.assertError(r, 429, 'limit', ('tenant acme', 'max_execs 1'))
            r = self.api.post('/v1/sandboxes/%s/exec' % mine, {'argv': ['true']})
            self.assertError(r, 429, 'limit', ('tenant acme', 'max_execs 1'))
            refused = self.audit_records(mine, 'exec')
            self.assertEqual([x['outcome'] for x in refused], ['refused'] * 2, refused)
            self.assertEqual(refused[0]['actor'], 'tenant=acme token=ci', refused)
            for x in refused:
                self.assertIn('max_execs 1 for tenant acme', x['details']['error'], x)
            self.assertEqual(self.run_ok(theirs, {'argv': ['echo', 'globex']},
                                         client=globex)['stdout'], 'globex\n')
            r = open_gate(self.api, mine, gate)
            self.assertEqual(r.status, 201, r)
            final = list(events)[-1]
        finally:
            conn.close()
        self.assertEqual((final['event'], final['result']['status']), ('result', 'exited'), final)
        self.assertEqual(self.run_ok(mine, {'argv': ['echo', 'again']}, client=ci)['stdout'],
                         'again\n')

    def test_tenant_survives_restart_and_adoption(self):
        d = Daemon('tenants-restart')
        tokens = os.path.join(d.dir, 'tokens')
        write_private(tokens, 'acme:ci:%s\nglobex:ci:%s\n' % (self.ACME_CI, self.GLOBEX))
        port = free_port()
        d.args = ['--tcp', '127.0.0.1:%d' % port, '--token-file', tokens]
        self.addCleanup(d.stop)
        made = []
        self.addCleanup(lambda: [docker_remove_quietly('clearing-' + x) for x in made])
        d.start()
        acme = Client(tcp=('127.0.0.1', port), token=self.ACME_CI)
        globex = Client(tcp=('127.0.0.1', port), token=self.GLOBEX)
        sb = self.create({}, client=acme)['id']
        made.append(sb)
        r = docker('GET', '/containers/clearing-%s/json' % sb)
        self.assertEqual(r.json['Config']['Labels'].get(LABEL + 'tenant'), 'acme', r)
        d.kill9()
        d.start()
        self.assertEqual(acme.get('/v1/sandboxes/' + sb).json['tenant'], 'acme')
        self.assertEqual(globex.get('/v1/sandboxes/' + sb).status, 404)
        # An empty database adopts the running container with its tenant from the label.
        d.stop()
        db = os.path.join(d.state, 'clearing.db')
        for suffix in ('', '-wal', '-shm'):
            if os.path.exists(db + suffix):
                os.rename(db + suffix, db + suffix + '.old')
        d.start()
        r = acme.get('/v1/sandboxes/' + sb)
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json['recovered'], True, r)
        self.assertEqual(r.json['tenant'], 'acme', r)
        self.assertEqual(globex.get('/v1/sandboxes/' + sb).status, 404)
        self.assertNotIn(sb, {s['id'] for s in globex.get('/v1/sandboxes').json['sandboxes']})
        with open(os.path.join(d.state, 'audit.log')) as f:
            adopted = [json.loads(line) for line in f if '"sandbox.recovered"' in line]
        self.assertEqual([(x['sandbox'], x['details']['tenant']) for x in adopted],
                         [(sb, 'acme')], adopted)
        self.assertEqual(acme.delete('/v1/sandboxes/%s?wait=true' % sb).status, 204)

    def refused(self, name, tokens=None, config=None):
        """Starts a daemon that must refuse to start; returns the end of its log."""
        d = Daemon(name)
        args = []
        if tokens is not None:
            path = os.path.join(d.dir, 'tokens')
            write_private(path, tokens)
            args += ['--tcp', '127.0.0.1:%d' % free_port(), '--token-file', path]
        if config is not None:
            path = os.path.join(d.dir, 'serve.json')
            with open(path, 'w') as f:
                json.dump(config, f)
            args += ['--config', path]
        p = d.spawn(args)
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            d.stop()
            self.fail('the daemon started:\n' + d.log_tail())
        self.assertNotEqual(rc, 0)
        return d.log_tail(5)

    def test_bad_token_files_refused(self):
        t = [os.urandom(12).hex() for _ in range(3)]
        log = self.refused('tok-dup', 'acme:ci:%s\n# x\nacme:ci:%s\n' % (t[0], t[1]))
        self.assertIn('line 3: duplicate name acme:ci (also on line 1)', log)
        log = self.refused('tok-dup-old', 'ci:%s\ndefault:ci:%s\n' % (t[0], t[1]))
        self.assertIn('line 2: duplicate name default:ci', log)
        log = self.refused('tok-same', 'acme:ci:%s\nglobex:ci:%s\n' % (t[0], t[0]))
        self.assertIn('line 2: the same token as line 1', log)
        log = self.refused('tok-name', 'acme:ci:%s\nAcme:ci:%s\n' % (t[0], t[1]))
        self.assertIn('line 2: tenant and name must be', log)
        log = self.refused('tok-short', 'acme:ci:short\n')
        self.assertIn('line 1', log)
        # Control: the same lines without the fault start a daemon.
        d = Daemon('tok-ok')
        path = os.path.join(d.dir, 'tokens')
        write_private(path, 'acme:ci:%s\nacme:bob:%s\nglobex:ci:%s\n' % tuple(t))
        d.args = ['--tcp', '127.0.0.1:%d' % free_port(), '--token-file', path]
        self.addCleanup(d.stop)
        d.start()

    def test_bad_quotas_refused(self):
        cases = [({'acme': {'max_sandbox': 1}}, "tenants.acme: unknown key 'max_sandbox'"),
                 ({'acme': {'max_sandboxes': '1'}}, 'tenants.acme.max_sandboxes'),
                 ({'acme': {'max_sandboxes': 0}}, 'tenants.acme.max_sandboxes'),
                 ({'acme': {'max_memory': 'lots'}}, 'tenants.acme.max_memory'),
                 ({'acme': {'max_cpus': True}}, 'tenants.acme.max_cpus'),
                 ({'acme': {'max_execs': 0}}, 'tenants.acme.max_execs must be a whole number'),
                 ({'acme': 4}, 'tenants.acme must be an object'),
                 ({'Acme!': {}}, "'Acme!' is not a tenant name"),
                 ([], 'tenants must be an object')]
        for i, (tenants, want) in enumerate(cases):
            log = self.refused('quota%d' % i, config={'tenants': tenants})
            self.assertIn(want, log)


# ---- runner ----

class Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id())


def setUpModule():
    global MAIN
    r = docker('GET', '/_ping', timeout=10)
    if r.status != 200:
        raise RuntimeError('the Docker engine does not answer on %s: %r' % (DOCKER_SOCK, r))
    r = docker('GET', '/images/%s/json' % IMAGE)
    if r.status != 200:
        raise RuntimeError('image %s is missing: run images/build.sh' % IMAGE)
    MAIN = Daemon('main')
    MAIN.start()


def tearDownModule():
    removed = sweep()
    if removed:
        raise RuntimeError('sandboxes left behind (removed by the final sweep): %s'
                           % ', '.join(removed))


def on_sigterm(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


def main():
    global CLEARING
    signal.signal(signal.SIGTERM, on_sigterm)
    args = sys.argv[1:]
    if not args or not os.access(args[0], os.X_OK):
        print('usage: test_api.py PATH/TO/clearing [NAME-PATTERN...]', file=sys.stderr)
        return 2
    CLEARING = ct.CLEARING = os.path.abspath(args.pop(0))
    if 'CLEARING_AGENT' not in os.environ:
        os.environ['CLEARING_AGENT'] = os.path.join(os.path.dirname(CLEARING), '..', 'agent',
                                                    'clearing-agent')
    if os.geteuid() != 0:
        print('1..0 # SKIP the API tests need root (the daemon drives dockerd and runsc)')
        print('0 passed, 0 failed')
        return 77
    ct.check_answers()  # every answer of the suite's daemons against docs/openapi.yaml
    loader = unittest.TestLoader()
    if args:
        loader.testNamePatterns = ['*%s*' % a for a in args]
    suite = loader.loadTestsFromModule(sys.modules[__name__])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result)
    t0 = time.monotonic()
    try:
        result = runner.run(suite)
    finally:
        sweep()  # again: after an interruption tearDownModule may not have run
    bad = {t.id() for t, _ in result.failures + result.errors}
    bad |= {t.id() for t in result.unexpectedSuccesses}
    print('total time %.1f s; daemon logs in %s' % (time.monotonic() - t0,
                                                      ', '.join(d.dir for d in DAEMONS)))
    if result.skipped:
        print('%d skipped' % len(result.skipped))
    answers_ok, summary = ct.answer_check_summary()
    print(summary)
    if not answers_ok:
        bad.add('the answers against docs/openapi.yaml')
    print('%d passed, %d failed' % (len(result.passed), len(bad)))
    if not bad:
        for d in DAEMONS:
            shutil.rmtree(d.dir, ignore_errors=True)
    return 1 if bad or not result.passed else 0


if __name__ == '__main__':
    sys.exit(main())
