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
        resp = Response(r.status, r.headers, r.read())
        check_answer(target, method, path, resp.status, resp.headers, resp.body)
        return resp
    finally:
        conn.close()


def call(conn, method, path, body=None):
    """A request on an open connection, kept alive for the next: (status, decode(body))."""
    data = encode_body(body)
    conn.request(method, path, body=data,
                 headers={'Content-Type': 'application/json'} if data is not None else {})
    r = conn.getresponse()
    raw = r.read()
    check_answer(getattr(conn, 'unix_path', None) or (conn.host, conn.port), method, path,
                 r.status, r.headers, raw)
    return r.status, decode(raw)


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


def ndjson_events(resp, heartbeats=False):
    """The events of a streamed answer, one JSON object per line, as they arrive; the daemon's
    {"event": "heartbeat"} lines (a stream silent for 20 s) are skipped unless heartbeats."""
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
            ev = json.loads(line)
            if heartbeats or ev.get('event') != 'heartbeat':
                yield ev


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


# ---- answers checked against docs/openapi.yaml ----
#
# A suite calls check_answers() once; from then on every answer of a clearing daemon that
# request() and call() receive (not dockerd's) is checked against the document: the operation
# for the method and the path (path templates; {path} of the file route takes '/'), the
# response for the status (a status the operation does not list is a failure), its media type,
# and a JSON body against the response's schema ($refs resolved, OpenAPI 3.0's nullable made
# JSON Schema's null). An answer for a path or a method the document does not have must be the
# router's or the server's own refusal: an Error body with 400, 401, 404, 405 or 413. A bad
# answer is kept in ANSWER_PROBLEMS, which the suite checks at its end (answer_check_summary),
# and, unless the suite asked for the list only (a TAP script that goes on to its next check),
# raises AssertionError in the request, failing the test that made it.

OPENAPI_SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'docs',
                            'openapi.yaml')
OPENAPI = None          # the checker, once check_answers() turned the check on
ANSWER_RAISES = True    # a bad answer raises AssertionError in the request, too
ANSWERS_CHECKED = 0     # answers checked so far (a suite's positive control)
ANSWER_PROBLEMS = []    # every answer that did not match the document
UNDOCUMENTED_STATUSES = (400, 401, 404, 405, 413)


def _openapi_to_json_schema(node, doc, seen=()):
    """An OpenAPI 3.0 schema as a JSON Schema (draft 4) value: local $refs inlined, nullable
    made a type that admits null, OpenAPI's own keywords dropped."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(n, doc, seen) for n in node]
    if not isinstance(node, dict):
        return node
    if '$ref' in node:
        ref = node['$ref']
        if not ref.startswith('#/') or ref in seen:
            raise ValueError('openapi: cannot resolve $ref %s (not local, or a cycle)' % ref)
        target = doc
        for part in ref[2:].split('/'):
            target = target[part.replace('~1', '/').replace('~0', '~')]
        return _openapi_to_json_schema(target, doc, seen + (ref,))
    out = {}
    for k, v in node.items():
        if k in ('nullable', 'example', 'examples', 'discriminator', 'readOnly', 'writeOnly',
                 'xml', 'externalDocs', 'deprecated') or k.startswith('x-'):
            continue
        if k in ('properties', 'patternProperties'):
            out[k] = {name: _openapi_to_json_schema(s, doc, seen) for name, s in v.items()}
        else:
            out[k] = _openapi_to_json_schema(v, doc, seen)
    if node.get('nullable') is True:
        return {'anyOf': [{'type': 'null'}, out]}
    return out


class OpenAPIChecker:
    """docs/openapi.yaml's operations, and the check of one answer against them."""

    def __init__(self, spec_path):
        import yaml
        import jsonschema
        with open(spec_path) as f:
            self.doc = yaml.safe_load(f)
        self.validator_class = jsonschema.Draft4Validator
        self.routes = []  # (regex, template, path item), the most literal template first
        for template, item in self.doc['paths'].items():
            rx = ''
            for piece in re.split(r'(\{[^}]+\})', template):
                if piece == '{path}':
                    rx += '.+'
                elif piece.startswith('{'):
                    rx += '[^/]+'
                else:
                    rx += re.escape(piece)
            literal = len(re.sub(r'\{[^}]+\}', '', template))
            self.routes.append((re.compile('^' + rx + '$'), template, item, literal))
        self.routes.sort(key=lambda r: -r[3])

    def resolve(self, node):
        while isinstance(node, dict) and '$ref' in node:
            target = self.doc
            for part in node['$ref'][2:].split('/'):
                target = target[part.replace('~1', '/').replace('~0', '~')]
            node = target
        return node

    def schema_errors(self, schema, value):
        js = _openapi_to_json_schema(schema, self.doc)
        v = self.validator_class(js)
        return ['%s at %s' % (e.message[:300], '/'.join(str(p) for p in e.absolute_path) or '.')
                for e in sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))]

    def problem(self, method, path, status, content_type, body):
        """None if the answer matches the document, else what is wrong."""
        bare = path.split('?', 1)[0]
        media = (content_type or '').split(';', 1)[0].strip().lower()
        op, template = None, None
        for rx, tmpl, item, _ in self.routes:
            if rx.match(bare):
                template = tmpl
                op = item.get(method.lower())
                break
        where = '%s %s' % (method.upper(), bare)
        if op is None:
            # Not an operation of the document: only the router's and the server's refusals.
            if status not in UNDOCUMENTED_STATUSES:
                return ('%s is not in the document (%s) but was answered %d'
                        % (where, template and 'its path has no such method' or 'no such path',
                           status))
            if method.upper() == 'HEAD':
                return None  # an answer to HEAD has no body to check
            errs = (self.schema_errors(self.doc['components']['schemas']['Error'],
                                       _json_of(body)) if media == 'application/json'
                    else ['not JSON (%s)' % (media or 'no Content-Type')])
            return ('%s: refusal %d is not an Error: %s' % (where, status, '; '.join(errs))
                    if errs else None)
        responses = op.get('responses', {})
        resp = responses.get(str(status)) or responses.get('%dXX' % (status // 100))
        if resp is None:
            return ('%s (%s %s) answered %d, a status the document does not list for it (%s)'
                    % (where, method.upper(), template, status, ', '.join(sorted(responses))))
        content = self.resolve(resp).get('content') or {}
        if not body:
            if content and status != 204:
                return ('%s answered %d with no body; the document says %s'
                        % (where, status, ', '.join(content)))
            return None
        if not content:
            return ('%s answered %d with a body (%s) where the document has none'
                    % (where, status, media or 'no Content-Type'))
        if media not in content:
            return ('%s answered %d as %s; the document says %s'
                    % (where, status, media or 'no Content-Type', ', '.join(content)))
        schema = content[media].get('schema')
        if media != 'application/json':
            return None
        if schema is None:
            return '%s answered %d: the document has no schema for its JSON' % (where, status)
        value = _json_of(body)
        if value is _NOT_JSON:
            return '%s answered %d with a body that is not JSON: %r' % (where, status, body[:200])
        errs = self.schema_errors(schema, value)
        if errs:
            return ('%s (%s) answered %d off the document: %s; body %s'
                    % (where, template, status, '; '.join(errs[:5]),
                       json.dumps(value)[:600]))
        return None


_NOT_JSON = object()


def _json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def check_answers(spec_path=OPENAPI_SPEC, raises=True):
    """Turns the check of every daemon answer against docs/openapi.yaml on (see above); raises:
    whether a bad answer also raises in its request. Shows first that the checker tells a
    right answer from a wrong one."""
    global OPENAPI, ANSWER_RAISES
    checker = OpenAPIChecker(spec_path)
    good = b'{"error":{"code":"not_found","message":"no sandbox sb-0000000000000000"}}'
    wrong = b'{"error":{"code":"no_such_code","message":"x"}}'
    probes = [checker.problem('GET', '/v1/sandboxes/sb-0000000000000000', 404,
                              'application/json', good) is None,
              checker.problem('GET', '/v1/sandboxes/sb-0000000000000000', 404,
                              'application/json', wrong) is not None,
              checker.problem('GET', '/v1/sandboxes/sb-0000000000000000', 418,
                              'application/json', good) is not None,
              checker.problem('GET', '/v1/health', 200, 'application/json',
                              b'{"status":"fine"}') is not None,
              checker.problem('GET', '/v1/health', 200, 'application/json',
                              b'{"status":"ok"}') is None]
    if not all(probes):
        raise AssertionError('the OpenAPI answer check does not tell right from wrong: %r'
                             % probes)
    OPENAPI = checker
    ANSWER_RAISES = raises


def check_answer(target, method, path, status, headers, body):
    """Checks one answer of the daemon at target when check_answers() turned the check on;
    dockerd's answers are not the document's."""
    global ANSWERS_CHECKED
    if OPENAPI is None or target == DOCKER_SOCK:
        return
    ANSWERS_CHECKED += 1
    problem = OPENAPI.problem(method, path, status, headers.get('Content-Type'), body)
    if problem:
        ANSWER_PROBLEMS.append(problem)
        if ANSWER_RAISES:
            raise AssertionError('answer off docs/openapi.yaml: ' + problem)


def answer_check_summary():
    """For a suite's end: (ok, a line saying how many answers were checked and what failed)."""
    if OPENAPI is None:
        return False, 'the OpenAPI answer check was never turned on'
    if ANSWERS_CHECKED == 0:
        return False, 'the OpenAPI answer check saw no answer'
    line = '%d answers checked against docs/openapi.yaml, %d off it' % (ANSWERS_CHECKED,
                                                                         len(ANSWER_PROBLEMS))
    return not ANSWER_PROBLEMS, '\n'.join([line] + ['  ' + p for p in ANSWER_PROBLEMS])
