"""What the Python tests and benchmarks of clearing share: HTTP to the daemon over its unix
socket (or TCP) and to dockerd, starting, waiting for and stopping a daemon, and finding what
the engine runs for a container.

Used by tests/integration/{test_api,test_openapi,egress}.py, tests/security/escape.py,
tests/faults/faults.py and bench/bench_{exec,pool,egress,audit_flood}.py. Each puts this
directory on sys.path from its own location:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

(bench/ adds '..', 'tests'), and sys.dont_write_bytecode so that no __pycache__ lands in the
source tree. The suites' checks stay in the suites; what checks there are here moved with their
helpers unchanged (parse_metrics refuses a malformed sample line, ndjson_events a stream that
ends inside a line, Client.metrics an answer other than 200)."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

CLEARING = None  # the clearing binary; set by the suite's main() before a Daemon starts
DOCKER_SOCK = '/var/run/docker.sock'
IMAGE = 'clearing/default:latest'
DAEMONS = []     # every Daemon made, for a suite's final sweep


# ---- HTTP ----

class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket; keep-alive works as with TCP."""

    def __init__(self, path, timeout=120):
        super().__init__('localhost', timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self.text = body.decode('utf-8', 'replace')
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return 'HTTP %d %s' % (self.status, self.text[:600])


def encode_body(body):
    """None and bytes as they are, str as UTF-8, anything else as JSON."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def decode(raw):
    """An answer's body: None if empty, the value if it is a JSON object or array, else the
    bytes (metrics, files)."""
    if not raw:
        return None
    if raw[:1] in b'{[':
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def connection(target, timeout=120):
    """target: a unix socket's path, or (host, port)."""
    if isinstance(target, str):
        return UnixHTTPConnection(target, timeout=timeout)
    return http.client.HTTPConnection(target[0], target[1], timeout=timeout)


def request(target, method, path, body=None, headers=None, timeout=120, json_type=True):
    """One request on a connection of its own; returns a Response. A body goes as
    application/json unless json_type is false or headers name another Content-Type."""
    data = encode_body(body)
    h = {}
    if data is not None and json_type:
        h['Content-Type'] = 'application/json'
    h.update(headers or {})
    conn = connection(target, timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read())
    finally:
        conn.close()


def call(conn, method, path, body=None):
    """A request on an open connection, kept alive for the next: (status, decode(body))."""
    data = encode_body(body)
    conn.request(method, path, body=data,
                 headers={'Content-Type': 'application/json'} if data is not None else {})
    r = conn.getresponse()
    return r.status, decode(r.read())


def api(target, method, path, body=None, timeout=120):
    """One request on a connection of its own: (status, decode(body))."""
    r = request(target, method, path, body, timeout=timeout)
    return r.status, decode(r.body)


class Client:
    """One connection per request: thread-safe, and no keep-alive state to reason about."""

    def __init__(self, sock=None, tcp=None, token=None):
        self.sock, self.tcp, self.token = sock, tcp, token

    def connection(self, timeout=120):
        return connection(self.sock or self.tcp, timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        h = {'Authorization': 'Bearer ' + self.token} if self.token else {}
        h.update(headers or {})
        return request(self.sock or self.tcp, method, path, body, h, timeout)

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def post(self, path, body=None, **kw):
        return self.request('POST', path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request('DELETE', path, **kw)

    def metrics(self):
        r = self.get('/metrics')
        assert r.status == 200, r
        return parse_metrics(r.text)

    def running_execs(self):
        r = self.get('/v1/health')
        return r.json['running_execs'] if r.json else -1


def docker(method, path, body=None, timeout=60):
    """A call to dockerd's API; returns a Response."""
    return request(DOCKER_SOCK, method, path, body, timeout=timeout)


def docker_exec(cid, argv, prefix=''):
    """`docker exec` the way the docker CLI does it: create, then start attached, read to EOF.
    prefix: an API version ('/v1.41'), or '' for the engine's own."""
    st, j = api(DOCKER_SOCK, 'POST', '%s/containers/%s/exec' % (prefix, cid),
                {'AttachStdout': True, 'AttachStderr': True, 'Cmd': argv}, timeout=60)
    if st != 201:
        raise RuntimeError('exec create: %s %r' % (st, j))
    s = socket.socket(socket.AF_UNIX)
    s.connect(DOCKER_SOCK)
    body = b'{"Detach":false,"Tty":false}'
    s.sendall(b'POST %s/exec/%s/start HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n'
              b'Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n%s'
              % (prefix.encode(), j['Id'].encode(), len(body), body))
    while s.recv(65536):
        pass
    s.close()


def parse_metrics(text):
    """Prometheus text exposition -> ({'name{labels}': value}, {'name': type}); asserts syntax."""
    values, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith('# TYPE '):
            _, _, name, typ = line.split(' ', 3)
            types[name] = typ
            continue
        if line.startswith('#'):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                     r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (\S+)$', line)
        if not m:
            raise AssertionError('not a Prometheus sample line: %r' % line)
        values[m.group(1)] = float(m.group(2))
    return values, types


def metric(target, name):
    """The value of an unlabelled metric of the daemon at target; None if it has none."""
    _, text = api(target, 'GET', '/metrics')
    for line in (text.decode() if isinstance(text, bytes) else '').splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[1])
    return None


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, interval=0.25):
    """pred()'s first true value within timeout seconds, else its last (false) one."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# ---- daemons ----

def die_with_parent():
    """In the child: SIGTERM when the test process dies, so no daemon outlives a killed run."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def default_agent(clearing):
    """The clearing-agent of the build that made the clearing binary at path clearing."""
    return os.path.join(os.path.dirname(os.path.abspath(clearing)), '..', 'agent',
                        'clearing-agent')


def spawn_daemon(clearing, state, sock, args=(), log_level=None, **popen):
    """Starts `clearing --state-dir STATE [--log-level L] serve --socket SOCK ARGS...`; popen:
    subprocess.Popen's keywords (stderr=..., env=...). Returns the Popen."""
    cmd = [clearing, '--state-dir', state]
    cmd += ['--log-level', log_level] if log_level else []
    cmd += ['serve', '--socket', sock] + list(args)
    return subprocess.Popen(cmd, **popen)


def answers(target, proc=None, timeout=5):
    """Does the daemon at target answer GET /v1/health with 200 (and is proc still running)?"""
    if proc is not None and proc.poll() is not None:
        return False
    try:
        return request(target, 'GET', '/v1/health', timeout=timeout).status == 200
    except OSError:
        return False


def wait_answering(target, proc, seconds):
    """Waits (bounded) until the daemon answers; False if it exited or the time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(target):
            return True
        time.sleep(0.1)
    return False


def stop_process(proc, timeout=30):
    """SIGTERM, then SIGKILL if it has not exited within timeout seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class Daemon:
    """A `clearing serve` of the suite, in a temporary directory of its own."""

    def __init__(self, name, args=(), env=None, prefix='clr-api-'):
        self.name = name
        self.extra_env = dict(env or {})
        self.dir = tempfile.mkdtemp(prefix='%s%s-' % (prefix, name), dir='/tmp')
        self.state = os.path.join(self.dir, 'state')
        self.sock = os.path.join(self.dir, 's.sock')
        self.log_path = os.path.join(self.dir, 'daemon.log')
        self.args = list(args)
        self.proc = None
        self.answered = False  # has answered at least once: its state is worth recovering
        DAEMONS.append(self)

    @property
    def owner(self):
        return 'daemon:%s/clearing.db' % self.state

    def env(self):
        env = dict(os.environ)
        env.setdefault('CLEARING_LOG_LEVEL', 'info')
        env.update(self.extra_env)
        return env

    def spawn(self, args=None):
        cmd = [CLEARING, '--state-dir', self.state, 'serve', '--socket', self.sock]
        cmd += self.args if args is None else list(args)
        with open(self.log_path, 'ab') as log:
            log.write(('--- %s\n' % ' '.join(cmd)).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True, preexec_fn=die_with_parent)
        return self.proc

    def start(self, timeout=60):
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError('daemon %s exited with %d before answering:\n%s'
                                   % (self.name, rc, self.log_tail()))
            try:
                if self.client().get('/v1/health', timeout=5).status == 200:
                    self.answered = True
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError('daemon %s did not answer within %d s:\n%s'
                           % (self.name, timeout, self.log_tail()))

    def ensure_running(self):
        """Restarts a daemon that answered once and is dead now (killed by a test that failed
        before restarting it), so that its sandboxes can be destroyed through the API."""
        if self.answered and not self.running():
            try:
                self.start()
            except Exception as e:
                print('cannot restart daemon %s for cleanup: %s' % (self.name, e))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        return Client(sock=self.sock)

    def kill9(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self):
        if self.running():
            stop_process(self.proc, 30)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, 'rb') as f:
                lines = f.read().decode('utf-8', 'replace').splitlines()
            return '\n'.join(lines[-n:])
        except OSError:
            return '(no log)'


def destroy_quietly(client, sid):
    try:
        client.delete('/v1/sandboxes/' + sid, timeout=60)
    except Exception:  # the cleanup must not hide the test's own failure
        pass


def docker_remove_quietly(name):
    try:
        docker('DELETE', '/containers/%s?force=1' % name)
    except Exception:
        pass


def ndjson_events(resp):
    """The events of a streamed answer, one JSON object per line, as they arrive."""
    buf = b''
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            if buf:
                raise AssertionError('the stream ended inside a line: %r' % buf[:200])
            return
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            yield json.loads(line)


# ---- what the engine runs ----

def runsc_pids(cid):
    """The runsc processes (sandbox, gofer) of one container: argv[0] runsc*, the container's
    id on the command line. Never another container's."""
    pids = []
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % p, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv and argv[0].startswith(b'runsc') and cid.encode() in b' '.join(argv):
            pids.append(int(p))
    return pids
