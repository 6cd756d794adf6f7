#!/usr/bin/env python3
"""The command line's edges, through the real `clearing` binary: `clearing serve`'s every setting
and every way its configuration or its flags can be wrong, the global options, `audit`,
`verify` and `gauntlet`'s own errors and outputs. TAP output.

  test_cli_serve.py CLEARING

- A daemon with a non-default value for every setting starts, and its settings are seen
  through its API, its socket and its files (the positive control of every refusal below).
- A configuration file or a flag that is wrong stops `clearing serve` at once with exit 2 and a
  message naming the key or the flag, and nothing is made (no state directory, no socket).
- A daemon that cannot do its job (a socket it cannot bind, a state directory, a database or an
  audit log it cannot write, an engine that does not answer) does not start: exit 125 and a
  message saying what and what to do; a setting the service refuses (an image outside
  allowed_images, a bad key, a token file others can read) exit 1. Nobody answers on its socket.

Everything lives in a temporary directory of this test: its daemons' state directories and
sockets, its repositories, keys and logs. Needs root (a read-only mount) and the engine."""
import grp
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.dont_write_bytecode = True
import clearing_test  # noqa: E402
from clearing_test import (Client, answers, die_with_parent, free_port,  # noqa: E402
                           stop_process, wait_for)

CLEARING = None
T = None              # the test's temporary directory
results = []
PROCS = []            # every daemon started, stopped at the end whatever happens
MOUNTS = []           # read-only mounts made, unmounted at the end
START = 120           # seconds a daemon may take to answer on a loaded machine


def check(name, ok, detail=''):
    results.append(bool(ok))
    print(('ok %d - ' if ok else 'not ok %d - ') % len(results) + name)
    if not ok and detail:
        for line in str(detail).splitlines()[-25:]:
            print('#   ' + line)
    sys.stdout.flush()
    return bool(ok)


def skip(name, why):
    results.append(True)
    print('ok %d - %s # SKIP %s' % (len(results), name, why))


def env_clean(**extra):
    """The environment without the settings this test passes explicitly."""
    e = {k: v for k, v in os.environ.items()
         if k not in ('CLEARING_AUDIT_LOG', 'CLEARING_HOST', 'CLEARING_DOCKER_HOST',
                      'CLEARING_LOG_LEVEL', 'CLEARING_STATE_DIR')}
    e['CLEARING_STATE_DIR'] = os.path.join(T, 'env-state')  # never the machine's own
    e.update(extra)
    return e


def clearing(args, timeout=120, cwd=None, env=None):
    """Runs clearing ARGS; (status, stdout, stderr). A run past timeout is killed: status None."""
    p = subprocess.Popen([CLEARING] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                         env=env or env_clean(), start_new_session=True,
                         preexec_fn=die_with_parent)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
    except BaseException:  # the test is ending (SIGTERM): nothing of it runs on
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise


def expect(name, args, status, out=None, err=None, **kw):
    """clearing ARGS exits with status, its stdout matches out and its stderr err (regexes)."""
    rc, o, e = clearing(args, **kw)
    ok = rc == status and (out is None or re.search(out, o, re.M)) and \
        (err is None or re.search(err, e, re.M))
    check(name, ok, 'exit %s (want %s)\nstdout: %s\nstderr: %s' % (rc, status, o[-1500:],
                                                                  e[-1500:]))
    return rc, o, e


def mkdir(*parts):
    path = os.path.join(T, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def write(path, text, mode=0o644):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def write_config(name, cfg):
    path = os.path.join(T, 'configs', name + '.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return path


def can_connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Serve:
    """A `clearing ... serve ...` of this test; its stderr goes to log."""

    def __init__(self, name, args, sock, env=None):
        self.name, self.sock = name, sock
        self.log = os.path.join(T, 'logs', name + '.log')
        os.makedirs(os.path.dirname(self.log), exist_ok=True)
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen([CLEARING] + list(args), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=env or env_clean(),
                                         start_new_session=True, preexec_fn=die_with_parent)
        PROCS.append(self.proc)

    def up(self):
        """Answers GET /v1/health on its socket within START seconds (False if it exited)."""
        deadline = time.monotonic() + START
        while time.monotonic() < deadline and self.proc.poll() is None:
            if answers(self.sock):
                return True
            time.sleep(0.1)
        return False

    def text(self):
        try:
            with open(self.log, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self):
        """SIGTERM: its exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 5)
                return None
        return self.proc.returncode


# ---- the global options (src/clearing.c) ---------------------------------------------------

def test_global_options():
    rc, o, _ = expect('clearing --help lists every command', ['--help'], 0,
                      r'^Usage: clearing \[GLOBAL OPTIONS\] COMMAND')
    names = re.findall(r'^  (\w+) ', o, re.M)
    check('the list holds serve, audit, verify and gauntlet',
          {'serve', 'audit', 'verify', 'gauntlet', 'run'} <= set(names), names)
    expect('-h is --help', ['-h'], 0, r'^Global options:')
    expect('--version prints the version', ['--version'], 0, r'^clearing \S+\n?$')
    expect('no command: usage on stderr, exit 2', [], 2, None, r'^Usage: clearing')
    expect('an unknown global option: named, exit 2', ['--bogus', 'ls'], 2, None,
           r"unknown or incomplete option '--bogus'")
    expect('a global option without its value: named, exit 2', ['--state-dir'], 2, None,
           r"unknown or incomplete option '--state-dir'")
    expect('a bad --log-level: named with the levels, exit 2', ['--log-level', 'loud', 'ls'], 2,
           None, r"log level 'loud' is not debug, info, warn or error")
    expect('a bad --log-level=: named, exit 2', ['--log-level=', 'ls'], 2, None,
           r"log level '' is not")
    for cmd in ('serve', 'audit', 'verify', 'gauntlet'):
        expect('clearing %s --help' % cmd, [cmd, '--help'], 0, r'^Usage: clearing %s' % cmd)


# ---- a daemon with every setting changed -----------------------------------------------------

def some_group():
    """A group other than root's, to see socket_group applied."""
    for name in ('daemon', 'bin', 'sys', 'adm', 'nogroup'):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    return None


def good_config():
    g = mkdir('good')
    tokens = write(os.path.join(g, 'tokens'), 'acme:ci:%s\n' % TOKEN, 0o600)
    mkdir('good', 'db')
    mkdir('good', 'audit')
    mkdir('good', 'repos')
    return {
        'socket': os.path.join(g, 'cfg.sock'),
        'socket_mode': '0640',
        'socket_owner': 'root',
        'socket_group': GROUP.gr_name,
        'tcp_address': '127.0.0.1',
        'tcp_port': PORT,
        'token_file': tokens,
        'state_dir': os.path.join(g, 'state'),
        'db_path': os.path.join(g, 'db', 'store.db'),
        'docker_host': 'unix:///var/run/docker.sock',
        'image': 'clearing/default:latest',
        'allowed_images': ['clearing/default:*'],
        'max_sandboxes': 1,
        'pool_size': 0,
        'repo_roots': [os.path.join(g, 'repos')],
        'max_execs': 2,
        'max_connections': 32,
        'max_upload_total': 1 << 20,
        'max_download_total': 2 << 20,
        'idle_timeout': 120,
        'max_lifetime': 900,
        'reaper_interval_ms': 500,
        'reconcile_interval_ms': 5000,
        'audit_log': os.path.join(g, 'audit', 'daemon-audit.log'),
        'audit_rotate_bytes': 1 << 20,
        'audit_keep': 3,
        'audit_disk_budget': 1,
        'audit_aggregate_ms': 1000,
        'audit_checkpoint_ms': 200,
        'audit_syslog': False,
        'log_level': 'info',
        'gauntlet_ref': 'refs/heads/main',
        'verdict_key': os.path.join(g, 'verdict.pem'),
        'limits': {'memory': '256m', 'cpus': '0.5', 'pids': 128, 'lifetime': '5m',
                   'tmp_size': '32m', 'workspace_size': '256m', 'workspace_inodes': 5000,
                   'nofile': 512, 'file_size': '128m'},
        'tenants': {'acme': {'max_sandboxes': 1, 'max_memory': '1g', 'max_cpus': 1,
                             'max_execs': 2, 'max_mcp_sessions': 4,
                             'max_code_sessions': 2}},
    }


def announce_upload(sock, path, length):
    """PUT path announcing length bytes, sending none: the answer to the headers alone."""
    conn = clearing_test.connection(sock, 60)
    try:
        conn.putrequest('PUT', path)
        conn.putheader('Content-Type', 'application/octet-stream')
        conn.putheader('Content-Length', str(length))
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read().decode('utf-8', 'replace')
    finally:
        conn.close()


def test_good_daemon():
    """Every setting away from its default, seen from outside. Returns the config, or None
    when the daemon did not start (the refusals then have no positive control)."""
    cfg = good_config()
    path = write_config('good', cfg)
    d = Serve('good', ['serve', '--config', path], cfg['socket'])
    if not check('a daemon with every setting changed answers on the socket of its config',
                 d.up(), d.text()):
        d.stop()
        return None
    st = os.stat(cfg['socket'])
    check('socket_mode 0640 and socket_group are applied to the socket',
          stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == GROUP.gr_gid and st.st_uid == 0,
          '%o uid %d gid %d' % (st.st_mode, st.st_uid, st.st_gid))
    check('state_dir holds the daemon lock; db_path, audit_log and verdict_key are where the '
          'config says, not in the state directory',
          os.path.exists(os.path.join(cfg['state_dir'], 'daemon.lock')) and
          os.path.exists(cfg['db_path']) and os.path.exists(cfg['audit_log']) and
          os.path.exists(cfg['verdict_key']) and os.path.exists(cfg['verdict_key'] + '.pub') and
          not os.path.exists(os.path.join(cfg['state_dir'], 'clearing.db')) and
          not os.path.exists(os.path.join(cfg['state_dir'], 'audit.log')) and
          not os.path.exists(os.path.join(cfg['state_dir'], 'verdict.key')),
          sorted(os.listdir(cfg['state_dir'])))
    check('log_level info: info events are logged (warn, the default, hides them)',
          wait_for(lambda: '"level":"info"' in d.text(), 60), d.text())
    api = Client(sock=cfg['socket'])
    h = api.get('/v1/health')
    audit = (h.json or {}).get('audit', {})
    check('audit_disk_budget: health reports the budget and warns about it',
          h.status == 200 and audit.get('disk_budget') == 1 and
          'audit_disk_budget' in audit.get('warning', ''), h)
    tcp = Client(tcp=('127.0.0.1', PORT), token=TOKEN)
    r = tcp.get('/v1/sandboxes')
    check('tcp_address, tcp_port and token_file: the token lists sandboxes over TCP',
          r.status == 200, r)
    r = Client(tcp=('127.0.0.1', PORT), token='not-' + TOKEN).get('/v1/sandboxes')
    check('over TCP a wrong token is refused (401)', r.status == 401, r)
    r = api.post('/v1/sandboxes', {'image': 'clearing/other:1'})
    check('allowed_images: an image outside the patterns is refused, naming the setting',
          r.status == 403 and 'allowed_images' in r.text, r)
    r = api.post('/v1/sandboxes', {'repo': {'path': T}})
    check('repo_roots: a repository outside the roots is refused, naming the setting',
          r.status == 403 and 'repo_roots' in r.text, r)
    r = api.post('/v1/sandboxes', {})
    sb = r.json if r.status == 201 else None
    if not check('a sandbox of the default profile is created', sb, r):
        d.stop()
        return cfg
    try:
        lim = sb.get('limits', {})
        check('limits: the new sandbox has the configured default limits',
              lim.get('memory') in ('256m', 268435456) and str(lim.get('cpus')) in ('0.5',
                                                                                   '0.500')
              and lim.get('pids') == 128, sb)
        # The service reads its clock for max_expires_at and for created_at apart: they may
        # be a second or so apart, nowhere near the default's 3600.
        check('max_lifetime 900: the sandbox may be extended to about 900 s after its creation',
              abs(sb.get('max_expires_at', 0) - sb.get('created_at', -10 ** 9) - 900) <= 5, sb)
        check('idle_timeout 120 is the sandbox\'s idle timeout',
              sb.get('idle_timeout') in (120, '120s', '2m'), sb)
        r = api.post('/v1/sandboxes', {})
        check('max_sandboxes 1: a second sandbox is refused (429) naming max_sandboxes',
              r.status == 429 and 'max_sandboxes 1' in r.text, r)
        out = '/v1/sandboxes/%s/processes/pr-00000000000000aa/output' % sb['id']
        r = api.get(out + '?stdout_offset=0&stderr_offset=0&wait=0s')
        check('a process output request with good query parameters reaches the service (404)',
              r.status == 404 and 'pr-00000000000000aa' in r.text, r)
        for query, name in (('stdout_offset=x', 'stdout_offset'),
                            ('stderr_offset=-1', 'stderr_offset'), ('wait=soon', 'wait')):
            r = api.get(out + '?' + query)
            check('a malformed query parameter is a 400 naming it: ' + query,
                  r.status == 400 and 'query parameter ' + name in r.text, r)
        status, text = announce_upload(cfg['socket'], '/v1/sandboxes/%s/files/big.bin'
                                       % sb['id'], (1 << 20) + 1)
        check('max_upload_total 1 MiB: an upload announced larger than the whole budget is a '
              '413 naming it, from its headers', status == 413 and 'max_upload_total' in text,
              '%s %s' % (status, text))
    finally:
        r = api.delete('/v1/sandboxes/%s?wait=true' % sb['id'], timeout=120)
        check('the sandbox is destroyed', r.status == 204, r)
    rc = d.stop()
    check('SIGTERM stops the daemon with exit 0 and removes its socket',
          rc == 0 and not os.path.exists(cfg['socket']), 'exit %s' % rc)
    return cfg


def test_full_config():
    """Every list at its most (32 repo_roots, 32 allowed_images, 64 tenants), then the string
    settings: each is kept, none dropped for want of room (it was: the daemon crashed on a
    socket left NULL, and wrote its audit log where the config did not say)."""
    f = mkdir('full')
    cfg = {'allowed_images': ['clearing/*'] + ['p%d/*' % i for i in range(31)],
           'repo_roots': ['/r%d' % i for i in range(32)],
           'tenants': {'t%d' % i: {'max_sandboxes': 1} for i in range(64)},
           'state_dir': os.path.join(f, 'state'),
           'audit_log': os.path.join(f, 'full-audit.log'),
           'socket': os.path.join(f, 'full.sock')}
    d = Serve('full', ['serve', '--config', write_config('full', cfg)], cfg['socket'],
              env=env_clean(CLEARING_LOG_LEVEL='error'))
    check('a config with every list at its most starts on the socket it names', d.up(),
          d.text())
    check('... and its audit log is where it says',
          os.path.exists(cfg['audit_log']) and
          not os.path.exists(os.path.join(cfg['state_dir'], 'audit.log')),
          sorted(os.listdir(cfg['state_dir'])) if os.path.isdir(cfg['state_dir']) else '')
    rc = d.stop()
    check('... and stops with exit 0; CLEARING_LOG_LEVEL=error: neither its start nor its stop '
          'was logged (warn)', rc == 0 and 'serve.listening' not in d.text() and
          'serve.stopping' not in d.text(), 'exit %s\n%s' % (rc, d.text()))
    roots = write_config('roots-20', {'repo_roots': ['/r%d' % i for i in range(20)]})
    state = os.path.join(f, 'twice-state')
    refused('config: two --config files with 40 repo_roots together: at most 32',
            ['--state-dir', state, 'serve', '--socket', os.path.join(f, 'twice.sock'),
             '--config', roots, '--config', roots], 2,
            r'config: repo_roots must be a list of at most 32 directories', state)


def test_flags_override_config():
    """Flags, global and serve's own, over a config file that says otherwise."""
    f = mkdir('flags')
    tokens = write(os.path.join(f, 'tokens'), 'ci:%s\n' % TOKEN, 0o600)
    cfg = write_config('flags', {'socket': os.path.join(f, 'from-config.sock'),
                                 'max_sandboxes': 1, 'repo_roots': ['/nonexistent']})
    sock = os.path.join(f, 'from-flag.sock')
    port = free_port()
    state = os.path.join(f, 'state')
    alog = os.path.join(f, 'cli-audit.log')
    args = ['--log-level=error', '--state-dir=' + state, '--audit-log=' + alog,
            '--docker-host=unix:///var/run/docker.sock', 'serve', '--socket', sock,
            '--max-sandboxes', '2', '--max-execs', '2', '--pool', '0', '--repo-root', f,
            '--tcp', '127.0.0.1:%d' % port, '--token-file', tokens, '--memory', '256m',
            '--config', cfg]
    d = Serve('flags', args, sock)
    if not check('flags: the daemon answers on --socket, not on the config\'s socket '
                 '(--config given last)', d.up() and not os.path.exists(
                     os.path.join(f, 'from-config.sock')), d.text()):
        d.stop()
        return
    check('--state-dir= and --audit-log= are the daemon\'s state and audit log',
          os.path.exists(os.path.join(state, 'clearing.db')) and os.path.exists(alog) and
          not os.path.exists(os.path.join(state, 'audit.log')), os.listdir(state))
    r = Client(tcp=('127.0.0.1', port), token=TOKEN).get('/v1/sandboxes')
    check('--tcp and --token-file: the token is taken over TCP', r.status == 200, r)
    r = Client(sock=sock).post('/v1/sandboxes', {'repo': {'path': T}})
    check('--repo-root adds to repo_roots: a repository outside is refused naming it',
          r.status == 403 and 'repo_roots' in r.text, r)
    rc = d.stop()
    check('--log-level=error: the daemon logged neither its start nor its stop (warn)',
          rc == 0 and 'serve.listening' not in d.text() and 'serve.stopping' not in d.text(),
          d.text())


# ---- what stops `clearing serve` before it starts -------------------------------------------

def refused(name, args, status, pattern, state=None, sock=None, other=False):
    """clearing ARGS must exit with status, the message matching pattern, nothing listening on
    sock (unless other: another daemon's) and (when given) no state directory made."""
    rc, o, e = clearing(args, timeout=90)
    made = state is not None and os.path.exists(state)
    listening = not other and sock is not None and os.path.exists(sock) and can_connect(sock)
    check(name, rc == status and re.search(pattern, e) and not made and not listening,
          'exit %s (want %s)%s%s\nstderr: %s' % (rc, status, ', state directory made' if made
                                                 else '', ', a daemon answers' if listening
                                                 else '', e[-1500:]))


def config_refused(name, cfg, pattern):
    """A config file with one fault: exit 2, the key named, nothing made."""
    path = write_config('bad-%d' % len(results), cfg)
    state = os.path.join(T, 'refused', 'state-%d' % len(results))
    sock = os.path.join(T, 'refused', 'r%d.sock' % len(results))
    refused('config: ' + name, ['--state-dir', state, 'serve', '--socket', sock,
                                '--config', path], 2, pattern, state, sock)


UINT_KEYS = {  # key: (least, most)
    'tcp_port': (0, 65535), 'max_connections': (1, 100000), 'audit_keep': (0, 1000000),
    'audit_rotate_bytes': (0, (1 << 63) - 1), 'audit_disk_budget': (0, (1 << 63) - 1),
    'max_sandboxes': (1, 100000), 'pool_size': (0, 64), 'max_execs': (1, 100000),
    'idle_timeout': (0, 86400), 'max_lifetime': (0, 7 * 86400),
    'reaper_interval_ms': (1, 60000), 'reconcile_interval_ms': (0, 86400000),
}
STRING_KEYS = ('socket', 'socket_owner', 'socket_group', 'tcp_address', 'token_file',
               'state_dir', 'db_path', 'docker_host', 'image', 'gauntlet_ref', 'verdict_key',
               'insecure_runtime', 'audit_log')


def test_config_refusals():
    mkdir('refused')
    config_refused('malformed JSON: the file and line', '{"max_sandboxes": 1,\n',
                   r'config .*\.json: .*\(line 2\)')
    config_refused('not an object', '[1]', r'config .*\.json: must be a JSON object')
    config_refused('a key twice', '{"pool_size": 1, "pool_size": 2}',
                   r'config .*: duplicate object key')
    missing = os.path.join(T, 'configs', 'missing.json')
    refused('config: a missing file is named', ['--state-dir', os.path.join(T, 'refused', 'm'),
                                                'serve', '--config', missing], 2,
            r'config %s: unable to open .*No such file or directory$' % re.escape(missing),
            os.path.join(T, 'refused', 'm'))
    config_refused('an unknown key is named, with where the keys are', {'sockett': 'x'},
                   r"unknown key 'sockett'.*docs/OPERATIONS\.md")
    for key in STRING_KEYS:
        config_refused('%s must be a string' % key, {key: 5}, r'config: %s must be a string' % key)
    for key, (least, most) in UINT_KEYS.items():
        want = r'config: %s must be a whole number %d\.\.%d' % (key, least, most)
        # Past 2^63 - 1 JSON's integers end (jansson says "too big integer"): no most + 1.
        for bad in ('1', -1, 1.5, True) + ((most + 1,) if most < (1 << 63) - 1 else ()):
            config_refused('%s = %s is refused with its range' % (key, json.dumps(bad)),
                           {key: bad}, want)
        if least > 0:
            config_refused('%s = 0 is refused (it must be at least %d)' % (key, least),
                           {key: 0}, want)
    for key in ('audit_aggregate_ms', 'audit_checkpoint_ms'):
        for bad in (99, 3600001, '100'):
            config_refused('%s = %s is refused' % (key, json.dumps(bad)), {key: bad},
                           r'config: %s must be (100\.\.3600000|a whole number)' % key)
    for key in ('max_upload_total', 'max_download_total'):
        config_refused('%s below 1 MiB is refused' % key, {key: (1 << 20) - 1},
                       r'config: %s must be at least 1048576' % key)
        config_refused('%s as a string is refused' % key, {key: '8g'},
                       r'config: %s must be a whole number' % key)
    for bad in ('0999', 'rw', '01000', 660):
        config_refused('socket_mode %s is refused' % json.dumps(bad), {'socket_mode': bad},
                       r'config: socket_mode must be (an octal string|a string)')
    config_refused('audit_syslog must be a boolean', {'audit_syslog': 'yes'},
                   r'config: audit_syslog must be true or false')
    for bad in ('loud', 3):
        config_refused('log_level %s is refused' % json.dumps(bad), {'log_level': bad},
                       r'config: log_level must be debug, info, warn or error')
    config_refused('repo_roots must be a list', {'repo_roots': '/srv'},
                   r'config: repo_roots must be a list of at most 32')
    config_refused('repo_roots: at most 32', {'repo_roots': ['/r%d' % i for i in range(33)]},
                   r'config: repo_roots must be a list of at most 32')
    config_refused('repo_roots: a relative path is named by its index',
                   {'repo_roots': ['/srv', 'srv']}, r'config: repo_roots\[1\] must be an '
                   r'absolute path')
    config_refused('repo_roots: a number is not a path', {'repo_roots': [5]},
                   r'config: repo_roots\[0\] must be an absolute path')
    for bad in ([], 'clearing/*', ['p%d' % i for i in range(33)]):
        config_refused('allowed_images %s is refused' % json.dumps(bad)[:30],
                       {'allowed_images': bad}, r'config: allowed_images must be a list of 1 '
                       r'to 32 image patterns')
    for bad in ([''], ['clearing/*', 'x' * 256], [5]):
        config_refused('allowed_images entry %s is refused' % json.dumps(bad)[:30],
                       {'allowed_images': bad}, r'config: allowed_images\[\d\] must be a '
                       r'non-empty pattern')
    config_refused('limits must be an object', {'limits': 5}, r'config: limits must be an object')
    config_refused('an unknown limit is named', {'limits': {'colour': 1}},
                   r"config: unknown limit 'colour'")
    config_refused('a malformed limit is named with its unit', {'limits': {'memory': '64x'}},
                   r"config: limits: .*memory.*'64x'.*unknown unit")
    config_refused('a limit of the wrong type says so', {'limits': {'memory': True}},
                   r'config: limits\.memory must be a string or a number')
    config_refused('a limit out of range is named with its range', {'limits': {'pids': 5}},
                   r'default limits: pids 5 is out of range: allowed 8\.\.4096')
    config_refused('tenants: at most 64', {'tenants': {'t%d' % i: {} for i in range(65)}},
                   r'config: tenants must be an object of at most 64 tenants')
    config_refused('tenants: a zero max_memory is refused', {'tenants': {'acme': {
        'max_memory': 0}}}, r'config: tenants\.acme\.max_memory must be a size')
    config_refused('tenants: a max_execs that is not a whole number is refused', {'tenants': {
        'acme': {'max_execs': 1.5}}}, r'config: tenants\.acme\.max_execs must be a whole number')
    for bad in ('4', 4.5, True, 0, 65, -1):
        config_refused('tenants: max_mcp_sessions %r (a wrong type or out of range) is refused'
                       % (bad,), {'tenants': {'acme': {'max_mcp_sessions': bad}}},
                       r'config: tenants\.acme\.max_mcp_sessions must be a whole number 1\.\.64')
    config_refused('tenants: an unknown key lists max_mcp_sessions among the known ones',
                   {'tenants': {'acme': {'max_sessions': 2}}},
                   r"config: tenants\.acme: unknown key 'max_sessions' \(.*max_mcp_sessions.*\)")
    for bad in ('4', 4.5, True, None, 0, 257, -1):
        config_refused('tenants: max_code_sessions %r (a wrong type or out of range) is refused'
                       % (bad,), {'tenants': {'acme': {'max_code_sessions': bad}}},
                       r'config: tenants\.acme\.max_code_sessions must be a whole number '
                       r'1\.\.256 \(code sessions running at once in its sandboxes; default 64\)')
    config_refused('tenants: an unknown key lists max_code_sessions among the known ones',
                   {'tenants': {'acme': {'max_kernels': 2}}},
                   r"config: tenants\.acme: unknown key 'max_kernels' \(.*max_code_sessions\)")


def test_flag_refusals():
    state = os.path.join(T, 'refused', 'flag-state')
    sock = os.path.join(T, 'refused', 'flag.sock')

    def flag(name, args, pattern):
        refused('serve flag: ' + name, ['--state-dir', state, 'serve', '--socket', sock] + args,
                2, pattern + r"(.|\n)*Try 'clearing serve --help'", state, sock)

    flag('an unexpected argument is named', ['extra'], r"unexpected argument 'extra'")
    flag('an unknown option', ['--frobnicate'], r'clearing serve: unknown option')
    for bad in ('65', '-1', 'x'):
        flag('--pool %s' % bad, ['--pool', bad], r'--pool wants 0\.\.64')
    for opt in ('--max-sandboxes', '--max-execs'):
        for bad in ('0', '100001', 'many'):
            flag('%s %s' % (opt, bad), [opt, bad], r'--max-sandboxes/--max-execs want '
                 r'1\.\.100000')
    flag('--repo-root of a relative directory', ['--repo-root', 'repos'],
         r'--repo-root wants an absolute directory')
    flag('more than 32 --repo-root', sum((['--repo-root', '/r%d' % i] for i in range(33)), []),
         r'--repo-root wants an absolute directory \(at most 32\)')
    for bad in ('8080', '127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1:http'):
        flag('--tcp %s' % bad, ['--tcp', bad], r'--tcp wants ADDRESS:PORT')
    flag('a malformed default limit', ['--memory', '5x'], r"clearing serve: .*'5x'")
    flag('a default limit out of range', ['--cpus', '0.05'],
         r'default limits: cpus 0\.050 is out of range')


def test_startup_refusals(good):
    """The configuration is fine; what it points at is not. Nothing answers afterwards."""
    R = mkdir('startup')
    n = [0]

    def start(name, cfg, status, pattern, args=(), state=None, sock=None, glob=(), other=False):
        n[0] += 1
        state = state or os.path.join(R, 'state-%d' % n[0])
        sock = sock or os.path.join(R, 's%d.sock' % n[0])
        argv = list(glob) + ['--state-dir', state, 'serve', '--socket', sock]
        if cfg is not None:
            argv += ['--config', write_config('start-%d' % n[0], cfg)]
        refused('start: ' + name, argv + list(args), status, pattern, None, sock, other)
        return sock

    # The socket.
    plain = write(os.path.join(R, 'a-file'), 'keep me\n')
    start('the socket\'s directory is a file: cannot bind, says what to check', {}, 125,
          r'cannot bind %s/x\.sock: Not a directory \(does its directory exist\?\)'
          % re.escape(plain), sock=os.path.join(plain, 'x.sock'))
    start('the socket\'s directory cannot be made: named, with what to do', {}, 125,
          r"cannot create the socket's directory %s/no/such: No such file or directory.*"
          r'--socket' % re.escape(R), sock=os.path.join(R, 'no', 'such', 'x.sock'))
    start('the socket path is a regular file: refused, not replaced', {}, 1,
          r'%s exists and is not a socket: refusing to replace it' % re.escape(plain),
          sock=plain)
    check('the regular file is untouched', open(plain).read() == 'keep me\n')
    start('a socket path too long for a unix socket', {}, 1, r'socket path .* is too long',
          sock=os.path.join(R, 'x' * 120 + '.sock'))
    if good:
        live = Serve('live', ['--state-dir', os.path.join(R, 'live-state'), 'serve',
                              '--socket', os.path.join(R, 'live.sock')],
                     os.path.join(R, 'live.sock'))
        if check('a daemon answers on live.sock', live.up(), live.text()):
            start('another daemon listening on the socket: refused', {}, 1,
                  r'another daemon is listening on %s' % re.escape(live.sock), sock=live.sock,
                  other=True)
            check('the daemon that was there still answers', answers(live.sock))
        live.stop()
    # A stale socket (its daemon killed) is replaced.
    stale = os.path.join(R, 'stale.sock')
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    d = Serve('stale', ['--state-dir', os.path.join(R, 'stale-state'), 'serve', '--socket',
                        stale], stale)
    check('a stale socket nobody listens on exists, then a daemon starts on it',
          stat.S_ISSOCK(os.lstat(stale).st_mode) and d.up(), d.text())
    d.stop()
    # The state directory, the database, the audit log.
    start('the state directory cannot be made: named, with what to do', {}, 125,
          r'cannot create state directory %s/sub: Not a directory.*writable' % re.escape(plain),
          state=os.path.join(plain, 'sub'))
    start('the state directory is a file: refused, with what to check', {}, 125,
          r'state directory exists and is writable', state=plain)
    adir = mkdir('startup', 'audit-dir')
    start('the audit log is a directory: fails closed, names the log', {'audit_log': adir},
          125, r'cannot open the audit log %s.*does not run code unaudited' % re.escape(adir))
    start('--audit-log (global) a directory: the same', None, 125,
          r'cannot open the audit log %s' % re.escape(adir), glob=['--audit-log', adir])
    dbdir = mkdir('startup', 'db-dir')
    start('the database cannot be opened: named', {'db_path': dbdir}, 125,
          r'cannot open the state database %s' % re.escape(dbdir))
    ro = mkdir('startup', 'ro')
    m = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'clearing-test-ro', ro],
                       capture_output=True, text=True)
    if m.returncode == 0:
        MOUNTS.append(ro)
        try:
            open(os.path.join(ro, 'probe'), 'w').close()
            writable = True
        except OSError:
            writable = False
        if check('a read-only mount refuses even root\'s writes', not writable):
            start('a read-only state directory: refused, with what to check', {}, 125,
                  r'Read-only file system.*state directory exists and is writable', state=ro)
            start('an audit log on a read-only file system: fails closed', {
                'audit_log': os.path.join(ro, 'audit.log')}, 125,
                r'cannot open the audit log .*Read-only file system.*does not run code '
                r'unaudited')
    else:
        skip('a read-only state directory or audit log', 'cannot mount: ' + m.stderr.strip())
    # The engine, the runtime, the image, the key.
    start('the engine does not answer: names its socket and what to do',
          {'docker_host': 'unix:///nonexistent/docker.sock'}, 125,
          r'cannot reach the Docker engine at /nonexistent/docker\.sock.*start dockerd')
    start('--docker-host (global) that does not answer: the same', None, 125,
          r'cannot reach the Docker engine at /nonexistent/d\.sock',
          glob=['--docker-host', 'unix:///nonexistent/d.sock'])
    start('insecure_runtime other than runc: refused, naming the only alternative',
          {'insecure_runtime': 'crun'}, 1, r"insecure runtime 'crun' is not supported.*runc")
    start('--insecure-runtime crun: the same', None, 1, r"insecure runtime 'crun'",
          args=['--insecure-runtime', 'crun'])
    start('a default image outside allowed_images: refused, naming both',
          {'image': 'evil/x:1'}, 1, r"setting image.*'evil/x:1' is not allowed.*allowed_images")
    junk = write(os.path.join(R, 'junk.pem'), 'not a key\n', 0o600)
    start('a verdict key that is not a key: refused', {'verdict_key': junk}, 1,
          r'verdict key %s is not an Ed25519 private key' % re.escape(junk))
    # The listeners.
    start('socket_owner that does not exist', {'socket_owner': 'no-such-user-x'}, 1,
          r'socket owner: no user no-such-user-x')
    start('socket_group that does not exist', {'socket_group': 'no-such-group-x'}, 1,
          r'socket group: no group no-such-group-x')
    start('TCP without a token file', {'tcp_port': free_port()}, 1,
          r'listening on TCP needs a token file \(--token-file\)')
    start('a token file that does not exist', None, 1, r'token file /nonexistent/tokens: No '
          r'such file', args=['--tcp', '127.0.0.1:%d' % free_port(), '--token-file',
                              '/nonexistent/tokens'])
    loose = write(os.path.join(R, 'loose-tokens'), 'ci:%s\n' % TOKEN, 0o644)
    start('a token file others can read: refused, says chmod 600', None, 1,
          r'token file %s is readable by others: chmod 600 it' % re.escape(loose),
          args=['--tcp', '127.0.0.1:%d' % free_port(), '--token-file', loose])
    tight = write(os.path.join(R, 'tokens'), 'ci:%s\n' % TOKEN, 0o600)
    start('tcp_address that is not an IPv4 address', {'tcp_address': 'localhost',
                                                      'tcp_port': free_port(),
                                                      'token_file': tight}, 1,
          r"tcp address 'localhost' is not an IPv4 address")
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        check('a listener holds port %d' % port, can_connect_tcp(port))
        start('a TCP port already taken', None, 125, r'cannot listen on TCP port %d' % port,
              args=['--tcp', '127.0.0.1:%d' % port, '--token-file', tight])
    finally:
        busy.close()


def can_connect_tcp(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=10).close()
        return True
    except OSError:
        return False


# ---- clearing audit ---------------------------------------------------------------------

def test_audit(good):
    A = mkdir('audit')
    if not good:
        skip('audit verify of the good daemon\'s log', 'the daemon did not start')
        return
    log = good['audit_log']
    pub = good['verdict_key'] + '.pub'
    rc, o, e = expect('audit verify: the daemon\'s log and its checkpoint (signed with its '
                      'verdict key) verify with the public key',
                      ['--audit-log', log, 'audit', 'verify', '--pubkey', pub], 0,
                      r'^OK: \d+ records, seq 1\.\.\d+, last hash [0-9a-f]{64}\n'
                      r'checkpoint: record \d+ signed at \S+ by Ed25519 key [0-9a-f]{16} '
                      r'matches')
    expect('audit verify: a signed checkpoint with no public key to check it: exit 1, says so',
           ['--state-dir', A, '--audit-log', log, 'audit', 'verify'], 1, None,
           r'signed by Ed25519 key [0-9a-f]{16}: give its public key')
    records = [json.loads(line) for line in open(log) if line.strip()]
    check('the log holds the sandbox\'s create and destroy',
          {'sandbox.create', 'sandbox.destroy'} <= {r.get('action') for r in records},
          [r.get('action') for r in records])
    # Tampered: one record's action changed; the verifier names it.
    bad = os.path.join(A, 'tampered.log')
    lines = open(log).read().splitlines(True)
    i = next(k for k, line in enumerate(lines) if '"sandbox.destroy"' in line)
    lines[i] = lines[i].replace('"sandbox.destroy"', '"sandbox.destroyed"', 1)
    check('the copy differs from the log in one record', lines[i] != open(log).readlines()[i])
    with open(bad, 'w') as f:
        f.writelines(lines)
    expect('audit verify FILE: a tampered record is BROKEN, exit 1',
           ['audit', 'verify', bad], 1, r'^BROKEN at %s line %d' % (re.escape(bad), i + 1))
    expect('the original still verifies', ['audit', 'verify', log], 0, r'^OK: ')
    # Without its checkpoint the whole log still verifies, and says what it cannot see.
    plain = os.path.join(A, 'plain', 'audit.log')
    os.makedirs(os.path.dirname(plain))
    shutil.copy(log, plain)
    expect('a log without a checkpoint: OK, and says that a cut end would not show',
           ['--audit-log', plain, 'audit', 'verify'], 0,
           r'no checkpoint beside the log: records cut from its end would not show')
    missing = os.path.join(A, 'audit.log')
    nodir = os.path.join(A, 'none', 'audit.log')
    expect('audit verify of a missing log: exit 1, names it', ['--audit-log', missing, 'audit',
                                                                'verify'], 1, None,
           r'cannot read %s: No such file' % re.escape(missing))
    expect('audit verify of a missing FILE: exit 1, names it',
           ['audit', 'verify', missing], 1, None, r'cannot read %s' % re.escape(missing))
    expect('audit verify of a log whose directory is missing: exit 1, names the directory',
           ['--audit-log', nodir, 'audit', 'verify'], 1, None,
           r"cannot list %s, the audit log's directory: No such file" %
           re.escape(os.path.dirname(nodir)))
    # show: filters on time.
    rc, o, _ = expect('audit show --since the epoch shows every record',
                      ['--audit-log', log, 'audit', 'show', '--since', '1970-01-01'], 0)
    check('... one line per record', len(o.splitlines()) == len(records), o)
    expect('audit show --until before the first record shows none',
           ['--audit-log', log, 'audit', 'show', '--until', '1970-01-01'], 0, r'\A\Z')
    rc, o, _ = expect('audit show --json --action: exit 0',
                      ['--audit-log', log, 'audit', 'show', '--json', '--action',
                       'sandbox.create'], 0)
    try:
        shown = [json.loads(line) for line in o.splitlines()]
    except ValueError:
        shown = None
    check('... the matching records, each a JSON line',
          shown == [r for r in records if r.get('action') == 'sandbox.create'] and shown, o)
    expect('audit show of a missing log: exit 1, names it (not an empty log)',
           ['--audit-log', missing, 'audit', 'show'], 1, r'\A\Z',
           r'cannot read the audit log %s: No such file' % re.escape(missing))
    expect('audit show with an unknown option: exit 2, lists the filters',
           ['--audit-log', log, 'audit', 'show', '--bogus'], 2, None, r'--sandbox ID --action')
    expect('audit without a subcommand: exit 2', ['audit'], 2, None, r'clearing audit verify')
    expect('audit with an unknown subcommand: exit 2', ['audit', 'check'], 2, None,
           r'usage: clearing audit verify')


# ---- clearing verify ----------------------------------------------------------------------

def openssl(*args, data=None):
    return subprocess.run(['openssl'] + list(args), input=data, capture_output=True,
                          check=True).stdout


def make_key(path):
    openssl('genpkey', '-algorithm', 'ed25519', '-out', path)
    os.chmod(path, 0o600)
    openssl('pkey', '-in', path, '-pubout', '-out', path + '.pub')
    der = openssl('pkey', '-in', path, '-pubout', '-outform', 'DER')
    import hashlib
    return hashlib.sha256(der[-32:]).hexdigest()[:16]


def git(repo, *args):
    return subprocess.run(['git', '-C', repo, '-c', 'user.name=t', '-c',
                           'user.email=t@example.org'] + list(args), check=True,
                          capture_output=True, text=True).stdout.strip()


def signed_commit(repo, key, key_id, trailers):
    """A commit whose Clearing trailers are signed as clearing signs them (the statement of
    include/clearing/verdict.h): made with git and openssl, as scripts/verify-verdict.sh
    checks them."""
    with open(os.path.join(repo, 'f.txt'), 'a') as f:
        f.write('change\n')
    git(repo, 'add', 'f.txt')
    tree = git(repo, 'write-tree')
    parent = git(repo, 'rev-parse', 'HEAD')
    statement = 'clearing-verdict-v1\ntree %s\nparent %s\n' % (tree, parent) + \
        ''.join(t + '\n' for t in trailers)
    stmt = os.path.join(repo, '..', 'statement')
    with open(stmt, 'w') as f:
        f.write(statement)
    import base64
    sig = base64.b64encode(openssl('pkeyutl', '-sign', '-inkey', key, '-rawin', '-in',
                                   stmt)).decode()
    msg = 'A change\n\n' + ''.join(t + '\n' for t in trailers) + \
        'Clearing-Signature: ed25519 %s %s\n' % (key_id, sig)
    commit = git(repo, 'commit-tree', tree, '-p', parent, '-m', msg)
    git(repo, 'update-ref', 'refs/heads/signed', commit)
    return commit, msg


def test_verify():
    V = mkdir('verify')
    repo = mkdir('verify', 'repo')
    git(repo, 'init', '-q', '-b', 'main')
    write(os.path.join(repo, 'f.txt'), 'base\n')
    git(repo, 'add', 'f.txt')
    git(repo, 'commit', '-qm', 'base')
    base = git(repo, 'rev-parse', 'HEAD')
    state = mkdir('verify', 'state')
    key = os.path.join(state, 'verdict.key')
    kid = make_key(key)
    other = os.path.join(V, 'other.key')
    other_id = make_key(other)
    commit, msg = signed_commit(repo, key, kid, ['Clearing-Verdict: pass',
                                                 'Clearing-Check: tests passed required'])
    expect('verify: a good signature, exit 0, with the verdict and the statement',
           ['verify', '--repo', repo, '--key', key + '.pub', 'signed'], 0,
           r'^good signature by key %s on commit %s: verdict pass\nclearing-verdict-v1\n'
           r'(.|\n)*^Clearing-Check: tests passed required$' % (kid, commit))
    rc, o, _ = expect('verify --json: good', ['verify', '--repo', repo, '--key', key + '.pub',
                                              '--json', commit], 0)
    try:
        j = json.loads(o)
    except ValueError:
        j = {}
    check('... the JSON says good, the commit, the key and the verdict',
          j.get('good') is True and j.get('commit') == commit and j.get('key_id') == kid and
          j.get('verdict') == 'pass' and j.get('error') is None, o)
    expect('verify without --key takes <state dir>/verdict.key.pub',
           ['--state-dir', state, 'verify', '--repo', repo, commit], 0,
           r'^good signature by key %s' % kid)
    # Tampered: the same tree and parent, the verdict changed after signing.
    forged = git(repo, 'commit-tree', git(repo, 'rev-parse', commit + '^{tree}'), '-p', base,
                 '-m', msg.replace('Clearing-Verdict: pass', 'Clearing-Verdict: PASS'))
    check('the forged commit differs from the signed one', forged != commit)
    expect('verify: a changed trailer is a BAD signature, exit 1',
           ['verify', '--repo', repo, '--key', key + '.pub', forged], 1, None,
           r'BAD signature on commit %s' % forged[:12])
    rc, o, _ = expect('verify --json: bad, exit 1', ['verify', '--repo', repo, '--key',
                                                     key + '.pub', '--json', forged], 1)
    check('... the JSON says not good and why', '"good":false' in o and 'BAD signature' in o, o)
    expect('verify: another key\'s public half, exit 1, names both keys',
           ['verify', '--repo', repo, '--key', other + '.pub', commit], 1, None,
           r'signed by key %s, not by this public key \(%s\)' % (kid, other_id))
    expect('verify: an unsigned commit, exit 1', ['verify', '--repo', repo, '--key',
                                                  key + '.pub', base], 1, None,
           r'has no Clearing-Signature')
    expect('verify: a missing key, exit 125, names it',
           ['verify', '--repo', repo, '--key', os.path.join(V, 'none.pub'), commit], 125, None,
           re.escape(os.path.join(V, 'none.pub')))
    expect('verify: the private key is not a public key, exit 1',
           ['verify', '--repo', repo, '--key', key, commit], 1, None,
           r'not an Ed25519 public key in PEM')
    expect('verify: a missing repository, exit 125',
           ['verify', '--repo', os.path.join(V, 'no-repo'), '--key', key + '.pub', 'HEAD'], 125)
    expect('verify: an unknown commit, exit 125',
           ['verify', '--repo', repo, '--key', key + '.pub', 'no-such-branch'], 125)
    expect('verify without a commit: exit 2', ['verify', '--repo', repo], 2, None,
           r'give exactly one commit')
    expect('verify with two commits: exit 2', ['verify', 'a', 'b'], 2, None,
           r'give exactly one commit')
    expect('verify with an unknown option: exit 2', ['verify', '--bogus', 'HEAD'], 2, None,
           r'clearing verify: unknown option')


# ---- clearing gauntlet ---------------------------------------------------------------------

def test_gauntlet():
    G = mkdir('gauntlet')
    proj = mkdir('gauntlet', 'project')
    write(os.path.join(proj, 'hello.txt'), 'hello\n')
    good = write(os.path.join(G, 'good.yaml'), 'checks:\n  - name: hello\n    run: "cat hello.txt"\n'
                 '  - name: second\n    run: "true"\n')
    state = os.path.join(G, 'state')
    base = ['--state-dir', state, 'gauntlet', '--repo', proj]

    def bad(name, args, pattern, status=2):
        expect('gauntlet: ' + name, ['--state-dir', state, 'gauntlet'] + args, status, None,
               pattern)

    bad('no --repo', ['--file', good], r'--repo DIR \(or --workspace DIR\) is required')
    for p in ('0', '17', 'x'):
        bad('--parallel %s' % p, ['--repo', proj, '--parallel', p], r'--parallel wants 1\.\.16')
    bad('an unknown option', ['--repo', proj, '--bogus'], r'clearing gauntlet: unknown option')
    bad('a malformed limit', ['--repo', proj, '--memory', '5x'], r"'5x'")
    bad('no gauntlet in the project, no --profile or --file',
        ['--repo', proj], r'no %s/\.clearing/gauntlet\.yaml in the project: give --profile or '
        r'--file' % re.escape(proj))
    bad('an unknown profile', ['--repo', proj, '--profile', 'cobol'], r'cobol')
    bad('a missing --file is named', ['--repo', proj, '--file', os.path.join(G, 'none.yaml')],
        re.escape(os.path.join(G, 'none.yaml')))
    bad('a directory as --file', ['--repo', proj, '--file', G], r'is not a regular file')
    bad('a malformed gauntlet: the file and line',
        ['--repo', proj, '--file', write(os.path.join(G, 'bad.yaml'),
                                         'checks:\n  - name: x\n    run: "true"\n'
                                         '    timeout: soon\n')], r'bad\.yaml:4:')
    check('no sandbox state was made by the refusals', not os.path.exists(state))
    adir = mkdir('gauntlet', 'audit-dir')
    expect('gauntlet: an audit log it cannot write: fails closed, exit 125',
           ['--audit-log', adir] + base + ['--file', good], 125, None,
           r'audit log %s' % re.escape(adir))
    check('... and no sandbox was made for it', not os.path.exists(os.path.join(state,
                                                                               'workspaces'))
          or not os.listdir(os.path.join(state, 'workspaces')))
    # A real run: the text summary, --parallel, --report; then the same with a --junit that
    # cannot be written, which must not read as success.
    rep = os.path.join(G, 'report.json')
    rc, o, e = expect('gauntlet: a passing run prints the summary, exit 0',
                      base + ['--file', good, '--parallel', '2', '--report', rep], 0,
                      r'verdict: PASS')
    try:
        r = json.load(open(rep))
    except (OSError, ValueError):
        r = {}
    check('--report wrote the JSON report with both checks passed',
          r.get('verdict') == 'pass' and [c.get('status') for c in r.get('checks', [])] ==
          ['passed', 'passed'], r)
    rc, o, e = expect('gauntlet: a --junit it cannot write: the report, the error, exit 125',
                      ['--state-dir', state, 'gauntlet', '--workspace', proj, '--image',
                       'clearing/default:latest', '--file', good, '--json', '--junit', G], 125,
                      None, r'cannot write %s' % re.escape(G))
    try:
        j = json.loads(o)
    except ValueError:
        j = {}
    check('... --json printed the report (--workspace, --image): verdict pass',
          j.get('verdict') == 'pass' and len(j.get('checks', [])) == 2, o)


# ---- main ---------------------------------------------------------------------------------

def main():
    global CLEARING, T, TOKEN, PORT, GROUP
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # meson ends a test past its timeout with SIGTERM: the finally below still unmounts and
    # stops the daemons.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    CLEARING = clearing_test.CLEARING = os.path.abspath(sys.argv[1])
    T = tempfile.mkdtemp(prefix='clearing-cli-serve-')
    TOKEN = os.urandom(16).hex()
    PORT = free_port()
    GROUP = some_group()
    try:
        test_global_options()
        good = test_good_daemon() if GROUP else None
        if not GROUP:
            check('a group other than root exists for socket_group', False, 'none found')
        test_full_config()
        test_flags_override_config()
        test_config_refusals()
        test_flag_refusals()
        test_startup_refusals(good)
        test_audit(good)
        test_verify()
        test_gauntlet()
    finally:
        for p in PROCS:
            stop_process(p, 30)
        for m in MOUNTS:
            subprocess.run(['umount', m], capture_output=True)
        if results and all(results):
            shutil.rmtree(T, ignore_errors=True)
        else:
            print('# left for a look: %s' % T)
    print('1..%d' % len(results))
    return 0 if results and all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
