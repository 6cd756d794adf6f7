#!/usr/bin/env python3
"""`clearing doctor --config FILE`: the installed layout's checks (#19), against a real daemon
whose configuration, state directory, socket and audit log live in a scratch directory. First the
good layout (every check ok), then one thing broken at a time, each a FAIL that names what is
wrong and what to do: an invalid configuration, a missing state directory, one the daemon's user
cannot write, a socket with another mode or group, no socket, a missing or altered audit log.
Where systemd is not PID 1 the unit's check says so instead of failing.

    doctor_layout.py PATH/TO/clearing        (TAP on stdout)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from clearing_test import spawn_daemon, stop_process, wait_answering  # noqa: E402

n = 0
failed = 0


def check(name, ok, detail=''):
    global n, failed
    n += 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n, name))
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:30]:
            print('# ' + line)
    sys.stdout.flush()


def write_config(path, **keys):
    with open(path, 'w') as f:
        json.dump(keys, f)
    return path


def doctor(clearing, config, *args):
    env = dict(os.environ)
    env.pop('CLEARING_HOST', None)
    p = subprocess.run([clearing, 'doctor', '--config', config] + list(args),
                       capture_output=True, text=True, timeout=300, env=env)
    return p.returncode, p.stdout + p.stderr


def line(out, prefix, what):
    """The report line for a check: its status prefix ("ok  ", "FAIL", "skip") and its name."""
    for ln in out.splitlines():
        if ln.startswith(prefix + ' ' + what):
            return ln
    return None


def main():
    clearing = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix='clr-doctor-')
    os.chmod(tmp, 0o755)
    state = os.path.join(tmp, 'state')
    sock = os.path.join(tmp, 'clearing.sock')
    audit = os.path.join(state, 'audit.log')
    good = write_config(os.path.join(tmp, 'good.json'), socket=sock, socket_mode='0660',
                        socket_group='root', state_dir=state)
    proc = spawn_daemon(clearing, state, sock, args=['--config', good],
                        stderr=open(os.path.join(tmp, 'daemon.log'), 'w'))
    try:
        check('the daemon of the scratch layout answers (positive control)',
              wait_answering(sock, proc, 60), open(os.path.join(tmp, 'daemon.log')).read())
        check_good(clearing, good, state, sock, audit)
        check_broken_running(clearing, tmp, good, state, sock)
    finally:
        stop_process(proc)
    check_broken_stopped(clearing, tmp, good, state, sock, audit)
    check_hostile_configs(clearing, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print('1..%d' % n)
    return 1 if failed else 0


def check_good(clearing, good, state, sock, audit):
    rc, out = doctor(clearing, good)
    check('good layout: doctor exits 0', rc == 0, out)
    check('good layout: config valid', line(out, 'ok  ', 'config %s valid' % good), out)
    check('good layout: state directory writable by root',
          line(out, 'ok  ', 'state directory %s writable by root' % state), out)
    check('good layout: socket mode and group',
          line(out, 'ok  ', 'socket %s mode 0660 group root' % sock), out)
    check('good layout: audit log verifies', line(out, 'ok  ', 'audit log %s verifies' % audit),
          out)
    check('good layout: the daemon of the configuration is healthy',
          line(out, 'ok  ', 'daemon at %s healthy' % sock), out)
    if not os.path.exists('/run/systemd/system'):
        check('no systemd as PID 1: the unit check says so, not a failure',
              line(out, 'skip', 'clearing.service active: systemd is not PID 1'), out)
    else:
        check('systemd as PID 1: the unit check reports',
              line(out, 'ok  ', 'clearing.service') or line(out, 'FAIL', 'clearing.service'),
              out)


def expect_fail(clearing, config, what, words, name, *args):
    rc, out = doctor(clearing, config, *args)
    ln = line(out, 'FAIL', what)
    check(name, rc == 1 and ln and all(w in ln for w in words),
          'exit %d, looked for FAIL %s with %s\n%s' % (rc, what, words, out))
    return out


def check_broken_running(clearing, tmp, good, state, sock):
    bad = write_config(os.path.join(tmp, 'bad.json'), socket=sock, state_dir=state,
                       no_such_key=1)
    out = expect_fail(clearing, bad, 'config %s valid' % bad,
                      ["unknown key 'no_such_key'", '--check-config'],
                      'invalid config: FAIL naming the key and how to check it again')
    check('invalid config: the checks that need it say so',
          line(out, 'skip', 'state directory, socket, audit log'), out)
    expect_fail(clearing, good, 'state directory %s writable by nobody' % state,
                ['cannot create files', 'chown nobody'],
                'state directory the daemon user cannot write: FAIL with the chown to do',
                '--daemon-user', 'nobody')
    expect_fail(clearing, good, 'state directory %s writable by clr-no-such-user' % state,
                ['there is no user clr-no-such-user', '--daemon-user'],
                'a daemon user that does not exist: FAIL naming it', '--daemon-user',
                'clr-no-such-user')
    missing = os.path.join(tmp, 'no-state')
    cfg = write_config(os.path.join(tmp, 'missing-state.json'), socket=sock,
                       socket_group='root', state_dir=missing, audit_log=os.path.join(
                           state, 'audit.log'))
    expect_fail(clearing, cfg, 'state directory %s' % missing, ['No such file', 'mkdir'],
                'missing state directory: FAIL with the mkdir to do')
    other = write_config(os.path.join(tmp, 'other-group.json'), socket=sock,
                         socket_group='daemon', state_dir=state)
    expect_fail(clearing, other, 'socket %s mode 0660 group daemon' % sock,
                ['its group is gid 0, not daemon', 'restart the daemon'],
                'socket of another group than socket_group: FAIL')
    nogroup = write_config(os.path.join(tmp, 'no-group.json'), socket=sock,
                           socket_group='clr-no-such-group', state_dir=state)
    expect_fail(clearing, nogroup, 'socket %s' % sock, ['groupadd --system clr-no-such-group'],
                'socket_group that does not exist: FAIL with the groupadd to do')
    os.chmod(sock, 0o666)
    try:
        expect_fail(clearing, good, 'socket %s' % sock, ['its mode is 0666', '0660'],
                    'socket with another mode: FAIL naming both modes')
    finally:
        os.chmod(sock, 0o660)


def check_broken_stopped(clearing, tmp, good, state, sock, audit):
    check('the daemon is stopped and its audit log is there (positive control)',
          os.path.exists(audit) and os.path.getsize(audit) > 0, audit)
    if os.path.exists(sock):  # a daemon that leaves its socket: it is no longer listening
        os.unlink(sock)
    expect_fail(clearing, good, 'socket %s' % sock, ['No such file', 'start the daemon'],
                'no socket: FAIL saying to start the daemon')
    with open(audit) as f:
        lines = f.readlines()
    check('the audit log has records to alter (positive control)', len(lines) >= 1, lines)
    first = json.loads(lines[0])
    first['ts'] = '1999' + str(first.get('ts', ''))[4:] if first.get('ts') else 'altered'
    lines[0] = json.dumps(first, separators=(',', ':')) + '\n'
    with open(audit, 'w') as f:
        f.writelines(lines)
    expect_fail(clearing, good, 'audit log %s verifies' % audit, ['BROKEN', 'record 1'],
                'altered audit log: FAIL naming the record')
    noaudit = write_config(os.path.join(tmp, 'no-audit.json'), socket=sock, state_dir=state,
                           audit_log=os.path.join(tmp, 'none.log'))
    expect_fail(clearing, noaudit, 'audit log %s verifies' % os.path.join(tmp, 'none.log'),
                ['No such file', 'start it'], 'missing audit log: FAIL saying what to do')


def check_hostile_configs(clearing, tmp):
    """serve --check-config, the parser doctor relies on, on files that are not configurations."""
    cases = [('not JSON', '{"socket": ', 'line'), ('an array', '[1, 2]', 'must be a JSON object'),
             ('a bad socket_mode', '{"socket_mode": "rwx"}', 'socket_mode must be an octal'),
             ('a wrong type', '{"state_dir": 5}', 'state_dir must be a string'),
             ('a duplicate key', '{"socket": "/a", "socket": "/b"}', 'duplicate')]
    for name, text, words in cases:
        path = os.path.join(tmp, 'hostile.json')
        with open(path, 'w') as f:
            f.write(text)
        p = subprocess.run([clearing, 'serve', '--config', path, '--check-config'],
                           capture_output=True, text=True, timeout=60)
        check('serve --check-config on %s: exit 2 naming it' % name,
              p.returncode == 2 and words in p.stderr and not p.stdout,
              'exit %d\n%s%s' % (p.returncode, p.stdout, p.stderr))
        rc, out = doctor(clearing, path)
        check('doctor on %s: FAIL, no crash' % name,
              rc == 1 and line(out, 'FAIL', 'config %s valid' % path), out)
    # The engine gone: the agent and the layout are still checked (they need no engine).
    gone = os.path.join(tmp, 'no-engine.sock')
    good = write_config(os.path.join(tmp, 'engine-gone.json'), state_dir=tmp,
                        socket=os.path.join(tmp, 'none.sock'))
    env = dict(os.environ)
    env.pop('CLEARING_HOST', None)
    p = subprocess.run([clearing, '--docker-host', 'unix://' + gone, 'doctor', '--config', good],
                       capture_output=True, text=True, timeout=300, env=env)
    check('engine gone: FAIL for it, and the agent and the layout are still checked',
          p.returncode == 1 and line(p.stdout, 'FAIL', 'Docker engine reachable') and
          line(p.stdout, 'ok  ', 'in-sandbox agent found') and
          line(p.stdout, 'ok  ', 'config %s valid' % good) and
          line(p.stdout, 'ok  ', 'state directory %s writable by root' % tmp) and
          not line(p.stdout, 'ok  ', 'probe sandbox starts'), p.stdout + p.stderr)
    p = subprocess.run([clearing, 'doctor', '--bogus'], capture_output=True, text=True,
                       timeout=60)
    check('doctor with an unknown option: usage error (exit 2)', p.returncode == 2, p.stderr)


if __name__ == '__main__':
    sys.exit(main())
