#!/usr/bin/env python3
"""Fault injection (issue #17): each experiment starts its own daemon, injects one fault, and
checks what the user sees, what the API and `clearing ls` say afterwards, that nothing of that
daemon's sandboxes is left (container, workspace, mount, runsc process) once it is cleaned up,
and that its audit log verifies and holds the records the fault should have left.

    usage: faults.py PATH/TO/clearing [NAME...]

TAP output. Python 3 standard library only; needs root, dockerd with runsc, and the image. The
daemons, the HTTP client and the engine relay are those of ../integration/test_api.py.
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
sys.path.insert(0, os.path.join(HERE, '..'))
import clearing_test as ct  # noqa: E402
from clearing_test import runsc_pids  # noqa: E402
import test_api as T  # noqa: E402  (its tests run only from its own main())

WAIT = 60  # seconds: bounds a hang, measures nothing


class Fail(AssertionError):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Fail(what + (': ' + ' | '.join(str(x)[:800] for x in detail) if detail else ''))


def eq(got, want, what):
    check(got == want, what, 'got %r, want %r' % (got, want))


def wait(pred, what, timeout=WAIT):
    v = T.wait_for(pred, timeout)
    check(v, what + ' (waited %d s)' % timeout)
    return v


def cli(d, *args, timeout=120):
    return subprocess.run([T.CLEARING, '--host', d.sock] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def api_error(r, status, code=None, mentions=()):
    check(r.status == status, 'HTTP %d expected' % status, r)
    err = (r.json or {}).get('error') or {}
    if code:
        eq(err.get('code'), code, 'error code of %r' % r)
    for m in mentions:
        check(m in err.get('message', ''), 'the error names %r' % m, r)
    return err


class Exp:
    """One experiment: its daemon, the sandboxes it made (with their container ids), and the
    checks of what is left."""

    def __init__(self, name, args=(), config=None, env=None):
        self.d = T.Daemon('flt-' + name, args, env)
        if config is not None:
            path = os.path.join(self.d.dir, 'daemon.json')
            with open(path, 'w') as f:
                json.dump(config, f)
            self.d.args += ['--config', path]
        self.sids = []
        self.cids = {}
        self.undo = []  # callables, run last-in first-out in any case

    @property
    def api(self):
        return self.d.client()

    def create(self, body=None):
        r = self.api.post('/v1/sandboxes', body or {}, timeout=180)
        check(r.status == 201, 'create', r)
        sid = r.json['id']
        self.sids.append(sid)
        c = T.docker('GET', '/containers/clearing-%s/json' % sid)
        check(c.status == 200, 'the container of a new sandbox', c)
        eq(c.json['Config']['Labels'].get(T.LABEL + 'owner'), self.d.owner, 'owner label')
        self.cids[sid] = c.json['Id']
        return r.json

    def exec(self, sid, body, status=200, timeout=180):
        r = self.api.post('/v1/sandboxes/%s/exec' % sid, body, timeout=timeout)
        check(r.status == status, 'exec %r: HTTP %d expected' % (body, status), r)
        return r.json

    def run_ok(self, sid, body):
        res = self.exec(sid, body)['result']
        check(res['status'] == 'exited' and res['exit_code'] == 0, 'command %r' % body, res)
        return res

    def state(self, sid):
        r = self.api.get('/v1/sandboxes/' + sid)
        check(r.status == 200, 'inspect ' + sid, r)
        return r.json

    def ls(self):
        """`clearing ls --all`: {id: its line}."""
        r = cli(self.d, 'ls', '--all')
        check(r.returncode == 0, 'clearing ls', r.stderr)
        return {line.split()[0]: line for line in r.stdout.splitlines()
                if line.startswith('sb-')}

    def audit(self):
        with open(os.path.join(self.d.state, 'audit.log')) as f:
            return [json.loads(line) for line in f if line.strip()]

    def records(self, sid, action):
        return [x for x in self.audit() if x.get('sandbox') == sid and x.get('action') == action]

    def verify_audit(self):
        r = subprocess.run([T.CLEARING, '--state-dir', self.d.state, 'audit', 'verify'],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, 'clearing audit verify', r.stdout, r.stderr)

    # ---- what is left ----

    def containers(self):
        flt = urllib.parse.quote(json.dumps({'label': [T.LABEL + 'owner=' + self.d.owner]}))
        r = T.docker('GET', '/containers/json?all=1&filters=' + flt)
        check(r.status == 200, 'list containers', r)
        return [c['Id'] for c in r.json]

    def workspaces(self):
        top = os.path.join(self.d.state, 'workspaces')
        return sorted(os.listdir(top)) if os.path.isdir(top) else []

    def mounts(self):
        """Mounts below the state directory (not the state directory itself, which one
        experiment mounts on purpose)."""
        with open('/proc/self/mounts') as f:
            points = [line.split()[1] for line in f]
        return [p for p in points if p.startswith(self.d.state + '/')]

    def runsc(self):
        return [p for cid in self.cids.values() for p in runsc_pids(cid)]

    def leftovers(self):
        return {'containers': self.containers(), 'workspaces': self.workspaces(),
                'mounts': self.mounts(), 'runsc': self.runsc()}

    def control_leftovers(self):
        """Positive control of the count: a live sandbox is seen by every one of its parts."""
        left = self.leftovers()
        check(all(left.values()), 'the count of leftovers sees a live sandbox', left)

    def destroy_all(self):
        """Destroys through the API every sandbox made that is not destroyed yet."""
        for sid in self.sids:
            s = self.state(sid)
            if s['state'] != 'destroyed':
                r = self.api.delete('/v1/sandboxes/%s?wait=true' % sid, timeout=180)
                check(r.status == 204, 'destroy ' + sid, r)
            eq(self.state(sid)['state'], 'destroyed', 'the state of %s' % sid)
            check(self.records(sid, 'sandbox.destroy'), 'a sandbox.destroy record of ' + sid)

    def assert_nothing_left(self):
        left = T.wait_for(lambda: (lambda x: None if any(x.values()) else x)(self.leftovers()),
                          WAIT)
        check(left is not None, 'nothing left of the daemon\'s sandboxes', self.leftovers())

    def finish(self):
        """The common end: everything destroyed, nothing left, the audit log verifies."""
        self.destroy_all()
        self.assert_nothing_left()
        ls = self.ls()
        check(not [x for x in ls.values() if ' running ' in x], 'clearing ls shows none running',
              ls)
        self.d.stop()
        self.verify_audit()

    def cleanup(self):
        for f in reversed(self.undo):
            try:
                f()
            except Exception as e:
                print('# cleanup: %s' % e)
        self.d.ensure_running()
        if self.d.running():
            for sid in self.sids:
                T.destroy_quietly(self.api, sid)
        self.d.stop()
        for cid in self.cids.values():
            T.docker('POST', '/containers/%s/unpause' % cid)
            T.docker_remove_quietly(cid)
        for ws in self.workspaces():
            path = os.path.join(self.d.state, 'workspaces', ws)
            subprocess.run(['umount', '-l', path], capture_output=True)


def vm_kib(pid, field):
    """A /proc/PID/status figure in KiB: VmRSS now, VmHWM the kernel's own peak of it."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError('no %s in /proc/%d/status' % (field, pid))


def wait_state(e, sid, not_state='running'):
    return wait(lambda: (lambda s: s if s['state'] != not_state else None)(e.state(sid)),
                '%s leaves state %s' % (sid, not_state))


# ---- the experiments ----

def exp_kill9_mid_stream(e):
    """kill -9 of the daemon while `clearing exec` streams a command's output."""
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'argv': ['true']})
    e.control_leftovers()
    gate = T.gate_name()
    p = subprocess.Popen([T.CLEARING, '--host', e.d.sock, 'exec', sid, '--shell',
                          'echo up; %s; echo after' % T.held_until(gate)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    e.undo.append(lambda: p.poll() is None and p.kill())
    eq(p.stdout.readline(), 'up\n', 'the stream is open')
    e.d.kill9()
    out, err = p.communicate(timeout=WAIT)
    eq(p.returncode, 125, 'exit code of clearing exec cut by the daemon\'s death (%s)' % err)
    m = re.search(r'exec (ex-[0-9a-f]{16}) started; .*fetch its record with: ', err)
    check(m, 'the CLI names the exec and how to fetch its record', err)
    exec_id = m.group(1)
    e.d.start()
    eq(e.state(sid)['state'], 'running', 'the sandbox after the restart')
    check(' running ' in e.ls().get(sid, ''), 'clearing ls shows it running', e.ls())
    with open(os.path.join(e.d.state, 'workspaces', sid, gate), 'w') as f:
        f.write('open\n')
    rec = wait(lambda: (lambda r: r.json if r.status == 200 and r.json['state'] != 'running'
                        else None)(e.api.get('/v1/sandboxes/%s/execs/%s' % (sid, exec_id))),
               'the exec record of the cut stream is finished')
    eq(rec['state'], 'done', 'its state')
    eq(rec['result']['stdout'], 'up\nafter\n', 'its output')
    eq(e.run_ok(sid, {'argv': ['echo', 'still']})['stdout'], 'still\n', 'a new command')
    check(e.records(sid, 'sandbox.create'), 'a sandbox.create record')
    check([x for x in e.audit() if x.get('action') == 'exec.start' and x.get('sandbox') == sid],
          'exec.start records')
    e.finish()


def exp_kill9_mid_create(e):
    """kill -9 of the daemon while a create is under way (the engine's container create held
    by a relay), then a restart on the same state directory."""
    proxy = T.EngineProxy(os.path.join(e.d.dir, 'engine.sock'))
    e.undo.append(proxy.close)
    e.d.extra_env['CLEARING_DOCKER_HOST'] = 'unix://' + proxy.path
    e.d.start()
    control = e.create()['id']
    e.control_leftovers()
    proxy.hold_creates()
    p = subprocess.Popen([T.CLEARING, '--host', e.d.sock, 'create'], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    e.undo.append(lambda: p.poll() is None and p.kill())
    check(proxy.held.wait(WAIT), 'the create reached the engine')
    check(p.poll() is None, 'the CLI still waits at the kill')
    e.d.kill9()
    proxy.drop_held()
    cut = [w for w in e.workspaces() if w != control]
    eq(len(cut), 1, 'the cut create made its workspace (%s)' % e.workspaces())
    check([m for m in e.mounts() if m.endswith('/' + cut[0])], 'a mount', e.mounts())
    out, err = p.communicate(timeout=WAIT)
    eq(p.returncode, 125, 'exit code of clearing create cut by the daemon\'s death (%s)' % err)
    check('the sandbox may not have been created' in err, 'the CLI says what it knows', err)
    eq(out, '', 'no id printed')
    del e.d.extra_env['CLEARING_DOCKER_HOST']
    e.d.start()
    r = e.api.get('/v1/sandboxes')
    check(r.status == 200, 'list', r)
    eq(sorted(s['id'] for s in r.json['sandboxes'] if s['state'] == 'running'), [control],
       'running sandboxes after the restart')
    eq(sorted(e.ls()), [control], 'clearing ls after the restart')
    eq(e.run_ok(control, {'argv': ['echo', 'ok']})['stdout'], 'ok\n', 'the earlier sandbox')
    # Its workspace (a tmpfs made before its container) has no row and no container: the start
    # leaves it (it could be a `clearing run`'s on the same state directory, which takes no
    # lock), to `clearing gc`, which removes workspaces without a container.
    eq(e.workspaces(), sorted([control] + cut), 'workspaces after the restart')
    # gc spares workspaces younger than a minute (a create in progress): this one is made old
    # rather than waited for.
    old = time.time() - 3600
    os.utime(os.path.join(e.d.state, 'workspaces', cut[0]), (old, old))
    r = subprocess.run([T.CLEARING, '--state-dir', e.d.state, 'gc'], capture_output=True,
                       text=True, timeout=120)
    eq(r.returncode, 0, 'clearing gc (%s)' % r.stderr)
    eq(e.workspaces(), [control], 'gc removed the cut create\'s workspace')
    check(not [m for m in e.mounts() if m.endswith('/' + cut[0])], 'its mount is gone',
          e.mounts())
    eq(e.run_ok(control, {'argv': ['echo', 'ok']})['stdout'], 'ok\n', 'the earlier sandbox '
       'after gc')
    # The cut create left no container (the engine never saw it).
    eq(e.containers(), [e.cids[control]], 'containers of this daemon')
    e.destroy_all()
    wait(lambda: not e.containers() and not e.runsc() and control not in e.workspaces(),
         'the control sandbox is removed')
    e.finish()


def exp_runsc_killed(e):
    """kill -9 of a sandbox's runsc processes."""
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'shell': 'echo before > /workspace/keep.txt'})
    e.control_leftovers()
    pids = runsc_pids(e.cids[sid])
    c = T.docker('GET', '/containers/clearing-%s/json' % sid)
    check(c.json['State']['Pid'] in pids, 'the engine\'s sandbox process is among', pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    s = wait_state(e, sid)
    eq((s['state'], s['destroy_reason']), ('lost', 'runtime died'), 'state and reason')
    check(' lost ' in e.ls().get(sid, ''), 'clearing ls shows it lost', e.ls())
    recs = e.records(sid, 'sandbox.lost')
    eq([x['details'] for x in recs], [{'reason': 'runtime died', 'tenant': 'default'}],
       'sandbox.lost record')
    api_error(e.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}), 409, 'conflict',
              ['lost', 'runtime died'])
    r = e.api.get('/v1/sandboxes/%s/files/keep.txt' % sid)
    eq((r.status, r.body), (200, b'before\n'), 'the workspace is readable')
    r = subprocess.run([T.CLEARING, '--host', e.d.sock, 'rm', sid], capture_output=True,
                       text=True, timeout=120)
    eq(r.returncode, 0, 'clearing rm of a lost sandbox (%s)' % r.stderr)
    e.finish()


def exp_docker_pause(e):
    """`docker pause` of a sandbox's container: a command fails with a clear error, destroy
    still works."""
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'argv': ['true']})
    e.control_leftovers()
    cid = e.cids[sid]
    e.undo.append(lambda: T.docker('POST', '/containers/%s/unpause' % cid))
    r = T.docker('POST', '/containers/%s/pause' % cid)
    eq(r.status, 204, 'docker pause')
    check(T.docker('GET', '/containers/%s/json' % cid).json['State']['Paused'], 'paused')
    r = e.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['echo', 'x'], 'timeout': '3s'},
                   timeout=180)
    check(r.status == 200, 'the exec is answered', r)
    res = r.json['result']
    eq((res['status'], res['exit_code'], res['stdout']), ('timed_out', None, ''),
       'a command in a frozen sandbox times out')
    check(res['wall_us'] >= 3000000, 'not before its timeout', res)
    check('the agent did not answer within the timeout' in res.get('message', ''),
          'the result says why', res)
    print('# exec in a paused sandbox: %s: %s' % (res['status'], res['message']))
    r = cli(e.d, 'exec', sid, '--timeout', '3s', '--', 'echo', 'x')
    check(r.returncode != 0 and 'x' not in r.stdout, 'clearing exec fails', r)
    print('# clearing exec on a paused sandbox: %d %s' % (r.returncode, r.stderr.strip()))
    check(r.stderr.strip(), 'clearing exec says why', r)
    # Paused still, or being killed by the backstop of the timed-out command: not running code.
    c = T.docker('GET', '/containers/%s/json' % cid)
    check(c.json['State']['Paused'] or not c.json['State']['Running'], 'not thawed', c)
    s = e.state(sid)
    print('# a paused sandbox is in state %s (%s)' % (s['state'], s['destroy_reason']))
    check(s['state'] in ('running', 'lost'), 'its state', s)
    if s['state'] == 'lost':
        eq([x['details'] for x in e.records(sid, 'sandbox.lost')],
           [{'reason': s['destroy_reason'], 'tenant': 'default'}],
           'a sandbox.lost record with the API\'s reason')
    r = e.api.delete('/v1/sandboxes/%s?wait=true' % sid, timeout=180)
    eq(r.status, 204, 'destroy of a paused sandbox')
    eq(T.docker('GET', '/containers/%s/json' % cid).status, 404, 'its container is removed')
    e.finish()


def exp_memory(e):
    """Memory past a 128m limit, several processes allocating."""
    e.d.start()
    sid = e.create({'limits': {'memory': '128m'}})['id']
    e.run_ok(sid, {'shell': 'echo before > /workspace/keep.txt'})
    e.control_leftovers()
    alloc = {'shell': 'for i in 1 2 3 4 5; do python3 -c "b=bytearray(100<<20)" & done; wait',
             'timeout': '60s'}
    r = e.api.post('/v1/sandboxes/%s/exec' % sid, alloc, timeout=180)
    check(r.status == 200, 'the allocating command is answered', r)
    res = r.json['result']
    # The limit was hit: the agent ended the command (oom), or the kernel killed the sandbox
    # under it (oom, sandbox_killed, or sandbox_failed).
    check(res['status'] in ('oom', 'sandbox_failed'), 'the command ran out of memory', res)
    lives = False
    if res['status'] == 'oom' and not res.get('sandbox_killed'):
        # The sandbox lives on, unless the kernel kills it a moment later (runsc does not give
        # its memory back at once): then it is lost as oom, like below.
        r2 = e.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['cat', 'keep.txt']})
        lives = r2.status == 200 and r2.json['result']['status'] == 'exited'
        if lives:
            eq(r2.json['result']['stdout'], 'before\n', 'it lives on')
    s = e.state(sid)
    if not lives:
        s = wait_state(e, sid)
        eq((s['state'], s['destroy_reason']), ('lost', 'oom'), 'the sandbox killed as a whole')
        eq([x['details'] for x in e.records(sid, 'sandbox.lost')],
           [{'reason': 'oom', 'tenant': 'default'}], 'sandbox.lost record')
        check(' lost ' in e.ls().get(sid, ''), 'clearing ls shows it lost', e.ls())
        r = e.api.get('/v1/sandboxes/%s/files/keep.txt' % sid)
        eq((r.status, r.body), (200, b'before\n'), 'its workspace is readable')
    print('# memory: command %s (sandbox_killed %s), sandbox %s'
          % (res['status'], res.get('sandbox_killed'), s['state']))
    e.finish()


def exp_full_workspace(e):
    e.d.start()
    sid = e.create({'limits': {'workspace_size': '1m'}})['id']

    def put(name, data):
        return e.api.request('PUT', '/v1/sandboxes/%s/files/%s' % (sid, name), data,
                             headers={'Content-Type': 'application/octet-stream'})
    eq(put('small', b'fits\n').status, 201, 'an upload that fits')
    e.control_leftovers()
    err = api_error(put('big', os.urandom(2 << 20)), 507, 'no_space',
                    ['no space left on the workspace'])
    check('big' in err['message'], 'the error names the file', err)
    res = e.exec(sid, {'shell': 'head -c 2000000 /dev/zero > fill'})['result']
    check(res['exit_code'] not in (0, None), 'the write inside fails', res)
    check(re.search('No space left on device|Input/output error', res['stderr']),
          'ENOSPC or EIO inside', res)
    e.run_ok(sid, {'argv': ['rm', 'fill']})
    eq(put('after', b'x' * 8192).status, 201, 'room again')
    check([x for x in e.audit() if x.get('action') == 'file.upload' and x.get('sandbox') == sid],
          'file.upload records')
    e.finish()


def exp_audit_unwritable(e):
    e.d.start()
    log = os.path.join(e.d.state, 'audit.log')
    sid = e.create()['id']
    e.run_ok(sid, {'argv': ['true']})
    ws = os.path.join(e.d.state, 'workspaces', sid)
    put = e.api.request('PUT', '/v1/sandboxes/%s/files/recorded.txt' % sid, b'x\n',
                        headers={'Content-Type': 'application/octet-stream'})
    eq(put.status, 201, 'an upload while the log is writable')
    check(os.path.isfile(os.path.join(ws, 'recorded.txt')), 'the uploaded file is there')
    e.control_leftovers()
    n_before = len(e.audit())
    subprocess.run(['chattr', '+i', log], check=True)
    e.undo.append(lambda: subprocess.run(['chattr', '-i', log], check=False))
    check('i' in subprocess.run(['lsattr', log], capture_output=True,
                                text=True).stdout.split()[0], 'the log is immutable')
    r = e.api.get('/v1/health')
    eq((r.status, r.json['status']), (503, 'degraded'), 'health')
    check(any(log in x for x in r.json['reasons']), 'health names the log', r)
    r = e.api.post('/v1/sandboxes', {})
    if r.status == 201:
        e.sids.append(r.json['id'])
    api_error(r, 503, 'unavailable', [log])
    api_error(e.api.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true']}), 503,
              'unavailable', [log])
    api_error(e.api.delete('/v1/sandboxes/' + sid), 503, 'unavailable', [log])
    r = cli(e.d, 'rm', sid)
    check(r.returncode != 0 and log in r.stderr, 'clearing rm refused naming the log', r.stderr)
    put = e.api.request('PUT', '/v1/sandboxes/%s/files/unrecorded.txt' % sid, b'x\n',
                        headers={'Content-Type': 'application/octet-stream'})
    api_error(put, 503, 'unavailable', [log])
    check(not os.path.exists(os.path.join(ws, 'unrecorded.txt')), 'no file written unrecorded')
    api_error(e.api.delete('/v1/sandboxes/%s/files/recorded.txt' % sid), 503, 'unavailable',
              [log])
    check(os.path.isfile(os.path.join(ws, 'recorded.txt')), 'no file deleted unrecorded')
    eq(e.state(sid)['state'], 'running', 'nothing destroyed')
    eq(T.docker('GET', '/containers/clearing-%s/json' % sid).json['State']['Running'], True,
       'its container runs')
    eq(len(e.audit()), n_before, 'no record written while immutable')
    subprocess.run(['chattr', '-i', log], check=True)
    back = e.exec(sid, {'argv': ['echo', 'back']})
    eq(back['result']['stdout'], 'back\n', 'exec after the fix')
    check([x for x in e.audit() if x.get('action') == 'exec.start' and
           (x.get('details') or {}).get('exec_id') == back['id']],
          'the exec after the fix is recorded')
    eq(e.api.get('/v1/health').json['status'], 'ok', 'health after the fix')
    sid2 = e.create()['id']
    check(e.records(sid2, 'sandbox.create'), 'the create after the fix is recorded')
    e.finish()


def exp_state_dir_full(e):
    os.makedirs(e.d.state)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', e.d.state],
                   check=True)
    e.undo.append(lambda: subprocess.run(['umount', '-l', e.d.state], check=False))
    with open('/proc/self/mounts') as f:
        check(e.d.state in [line.split()[1] for line in f], 'the state dir is a tmpfs')
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'argv': ['true']})
    e.control_leftovers()
    filler = os.path.join(e.d.state, 'filler')
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b'\0' * 65536)
    except OSError as x:
        eq(x.errno, errno.ENOSPC, 'the filler fills it')
    finally:
        os.close(fd)
    st = os.statvfs(e.d.state)
    check(st.f_bavail * st.f_frsize < 65536, 'the state dir is full', st)
    r = e.api.get('/v1/health')
    eq((r.status, r.json['status']), (503, 'unavailable'), 'health')
    check(any('no space left on ' + e.d.state in x for x in r.json['reasons']),
          'health names the path', r)
    r = cli(e.d, 'create')
    check(r.returncode != 0, 'clearing create refused', r.stdout)
    check('no space left on ' + e.d.state in r.stderr, 'clearing create names the path',
          r.stderr)
    if r.stdout.strip().startswith('sb-'):
        e.sids.append(r.stdout.strip())
    eq(sorted(s['id'] for s in e.api.get('/v1/sandboxes?state=running').json['sandboxes']),
       [sid], 'running sandboxes')
    os.unlink(filler)
    wait(lambda: e.api.get('/v1/health').json['status'] == 'ok', 'health ok after the room')
    sid2 = e.create()['id']
    e.run_ok(sid2, {'argv': ['true']})
    check(e.records(sid2, 'sandbox.create'), 'the create after the fix is recorded')
    e.finish()


def exp_truncated_db(e):
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'shell': 'echo before > /workspace/b.txt'})
    e.control_leftovers()
    e.d.stop()
    db = os.path.join(e.d.state, 'clearing.db')
    size = os.path.getsize(db)
    check(size > 8192, 'the database has pages to cut', size)
    os.truncate(db, size // 2 + 100)
    p = e.d.spawn()
    try:
        rc = p.wait(WAIT)
    except subprocess.TimeoutExpired:
        raise Fail('the daemon started on a truncated database:\n' + e.d.log_tail())
    check(rc != 0, 'the daemon refuses')
    tail = e.d.log_tail(5)
    check('state database %s is corrupt' % db in tail, 'it names the file', tail)
    check('mv %s %s.corrupt' % (db, db) in tail, 'it names the remedy', tail)
    eq(T.docker('GET', '/containers/clearing-%s/json' % sid).json['State']['Running'], True,
       'the sandbox runs on')
    for suffix in ('', '-wal', '-shm'):
        if os.path.exists(db + suffix):
            os.rename(db + suffix, db + suffix + '.corrupt')
    e.d.start()
    s = e.state(sid)
    eq((s['state'], s['recovered']), ('running', True), 'adopted')
    check('[RECOVERED]' in e.ls().get(sid, ''), 'clearing ls shows it recovered', e.ls())
    eq(e.run_ok(sid, {'argv': ['cat', '/workspace/b.txt']})['stdout'], 'before\n',
       'its workspace')
    eq(len(e.records(sid, 'sandbox.recovered')), 1, 'one sandbox.recovered record')
    e.finish()


def exp_concurrent_clients(e):
    """8 clients at once, each creating a sandbox and running commands, above the daemon's
    limits: every answer is a success or a clean 429, and the counts add up."""
    e.d.args += ['--max-sandboxes', '6', '--max-execs', '2']
    e.d.start()
    n, execs = 8, 4
    barrier = threading.Barrier(n)
    out = [None] * n

    def client(i):
        res = {'create': None, 'sid': None, 'exec': []}
        try:
            r = e.api.post('/v1/sandboxes', {}, timeout=300)
            res['create'] = r.status
            if r.status == 201:
                res['sid'] = r.json['id']
            elif r.status != 429:
                res['bad'] = repr(r)
            barrier.wait(300)  # every create answered before any sandbox goes
            if res['sid']:
                for k in range(execs):
                    r = e.api.post('/v1/sandboxes/%s/exec' % res['sid'],
                                   {'shell': 'echo %d-%d' % (i, k)}, timeout=300)
                    if r.status == 200 and r.json['result']['stdout'] != '%d-%d\n' % (i, k):
                        res['bad'] = repr(r)
                    elif r.status == 429:
                        eq(r.json['error']['code'], 'limit', 'a 429\'s code')
                    elif r.status != 200:
                        res['bad'] = repr(r)
                    res['exec'].append(r.status)
                    if r.status == 200:
                        res.setdefault('ids', []).append(r.json['id'])
        except Exception as x:
            res['bad'] = repr(x)
        out[i] = res
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    check(all(o is not None for o in out), 'every client finished', out)
    check(not [o for o in out if 'bad' in o], 'only successes and clean 429s', out)
    made = [o['sid'] for o in out if o['sid']]
    e.sids += made
    for sid in made:
        c = T.docker('GET', '/containers/clearing-%s/json' % sid)
        if c.status == 200:
            e.cids[sid] = c.json['Id']
    creates = [o['create'] for o in out]
    eq((creates.count(201), creates.count(429)), (6, 2), 'creates: 6 made, 2 refused at 6')
    e.control_leftovers()
    running = {s['id'] for s in e.api.get('/v1/sandboxes?state=running').json['sandboxes']}
    eq(running, set(made), 'the API lists exactly the sandboxes made')
    eq(set(e.ls()), set(made), 'clearing ls lists exactly those')
    ok = 0
    for o in out:
        check(len(o['exec']) == (execs if o['sid'] else 0), 'each client ran its commands', o)
        n_ok = o['exec'].count(200)
        ok += n_ok
        if o['sid']:
            eq(len(o.get('ids', [])), n_ok, 'an id per command that ran')
            for x in o.get('ids', []):
                r = e.api.get('/v1/sandboxes/%s/execs/%s' % (o['sid'], x))
                check(r.status == 200 and r.json['state'] == 'done', 'the record of ' + x, r)
    eq(len([x for x in e.audit() if x.get('action') == 'exec.start' and
            x['outcome'] != 'refused']), ok, 'exec.start records of the commands that ran')
    print('# concurrent: %d creates, %d of %d commands ran, the rest 429'
          % (len(made), ok, execs * len(made)))
    e.finish()
    # After the stop, whose close of the audit log writes what it was still counting: a create
    # refused at max_sandboxes is counted (the first recorded at once, the rest one record per
    # audit_aggregate_ms, with their count).
    creates = [x for x in e.audit() if x.get('action') == 'sandbox.create']
    refused = [x for x in creates if x['outcome'] == 'refused']
    eq(([x['outcome'] for x in creates].count('ok'),
        sum(x['details'].get('count', 0) for x in refused)), (6, 2),
       'sandbox.create records: ok, and the refusals they count')
    check(refused and refused[0]['details'].get('count') == 1
          and 'max_sandboxes' in refused[0]['details'].get('error', ''),
          'the first refusal recorded at once, naming the limit', refused)


def exp_huge_output(e):
    """200 MB of output from one command."""
    e.d.start()
    sid = e.create()['id']
    e.run_ok(sid, {'argv': ['true']})
    e.control_leftovers()
    check(vm_kib(e.d.proc.pid, 'VmRSS') > 0, 'the daemon\'s memory can be read')
    rec = e.exec(sid, {'shell': 'head -c 200000000 /dev/zero | tr "\\0" x', 'timeout': '300s'},
                 timeout=600)
    # The kernel's high-water mark of the daemon's resident memory: no spike between samples
    # can be missed.
    peak = vm_kib(e.d.proc.pid, 'VmHWM')
    res = rec['result']
    eq((res['status'], res['exit_code']), ('exited', 0), 'the command ran')
    eq(res['stdout_bytes'], 200000000, 'every byte counted')
    check(res['stdout_truncated'] is True, 'truncated, and it says so', {
        k: v for k, v in res.items() if k != 'stdout'})
    check(0 < len(res['stdout']) <= 1 << 20, 'kept up to the cap', len(res['stdout']))
    check(set(res['stdout']) == {'x'}, 'what was kept is the output')
    r = e.api.get('/v1/sandboxes/%s/execs/%s' % (sid, rec['id']))
    check(r.status == 200, 'the exec record is readable', r)
    eq(r.json['result']['stdout_bytes'], 200000000, 'the record\'s count')
    print('# huge output: daemon peak VmRSS (VmHWM) %d KiB' % peak)
    check(peak < 300 * 1024, 'the daemon\'s memory stays under 300 MB', '%d KiB' % peak)
    e.finish()


EXPERIMENTS = [
    ('kill9-mid-stream', exp_kill9_mid_stream, {}),
    ('kill9-mid-create', exp_kill9_mid_create, {}),
    ('runsc-killed', exp_runsc_killed, {'config': {'reconcile_interval_ms': 600000}}),
    ('docker-pause', exp_docker_pause, {}),
    ('memory', exp_memory, {}),
    ('full-workspace', exp_full_workspace, {}),
    ('audit-unwritable', exp_audit_unwritable, {}),
    ('state-dir-full', exp_state_dir_full, {}),
    ('truncated-db', exp_truncated_db, {}),
    ('concurrent-clients', exp_concurrent_clients, {}),
    ('huge-output', exp_huge_output, {}),
]


def main():
    args = sys.argv[1:]
    if not args or not os.access(args[0], os.X_OK):
        print('usage: faults.py PATH/TO/clearing [NAME...]', file=sys.stderr)
        return 2
    T.CLEARING = ct.CLEARING = os.path.abspath(args.pop(0))
    if 'CLEARING_AGENT' not in os.environ:
        os.environ['CLEARING_AGENT'] = os.path.join(os.path.dirname(T.CLEARING), '..', 'agent',
                                                    'clearing-agent')
    if os.geteuid() != 0:
        print('1..0 # SKIP the fault experiments need root')
        return 77
    if T.docker('GET', '/images/%s/json' % T.IMAGE).status != 200:
        print('1..0 # SKIP image %s missing' % T.IMAGE)
        return 77
    signal.signal(signal.SIGTERM, T.on_sigterm)
    todo = [x for x in EXPERIMENTS if not args or any(a in x[0] for a in args)]
    print('1..%d' % (len(todo) + 1))
    failed = 0
    t_all = time.monotonic()
    ct.check_answers(raises=False)  # every answer of the daemons against docs/openapi.yaml
    for i, (name, fn, kw) in enumerate(todo, 1):
        e = Exp(name, **kw)
        t0 = time.monotonic()
        ok = True
        try:
            fn(e)
        except Exception as x:
            ok = False
            for line in traceback.format_exception(type(x), x, x.__traceback__)[-4:]:
                for sub in line.rstrip().splitlines():
                    print('# ' + sub)
            print('# daemon log %s:' % e.d.log_path)
            for line in e.d.log_tail(15).splitlines():
                print('#   ' + line)
        finally:
            e.cleanup()
            T.DAEMONS.remove(e.d)
        print('%s %d - %s (%.1f s)' % ('ok' if ok else 'not ok', i, name,
                                        time.monotonic() - t0))
        sys.stdout.flush()
        if ok:
            shutil.rmtree(e.d.dir, ignore_errors=True)
        else:
            failed += 1
    answers_ok, summary = ct.answer_check_summary()
    print('%s %d - %s' % ('ok' if answers_ok else 'not ok', len(todo) + 1, summary.splitlines()[0]))
    for line in summary.splitlines()[1:]:
        print('#   ' + line)
    failed += 0 if answers_ok else 1
    left = T.sweep()  # the daemons of experiments whose cleanup failed, and their containers
    if left:
        print('# the final sweep removed: %s' % ', '.join(left))
    print('# %d experiments, %d failed, %.1f s' % (len(todo), failed,
                                                   time.monotonic() - t_all))
    return 1 if failed or left else 0


if __name__ == '__main__':
    sys.exit(main())
