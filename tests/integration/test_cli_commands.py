#!/usr/bin/env python3
"""The daemon's client commands (create, exec, ls, ps, logs, inspect, extend, commit, diff, rm)
and the engine's (ls --engine, rm --engine, gc): the real `clearing` binary against a real
`clearing serve` on the real dockerd with runsc. Each command's options, its output formats
(table and --json), and its errors: malformed ids and values, missing arguments, unknown
sandboxes and processes, limits out of range, a daemon or an engine that is not there. Exact exit
statuses (docs/OPERATIONS.md) and messages that say what is wrong and what to do.

tests/integration/cli.sh covers `run` and the commands' main paths; this file covers the rest.
TAP output.
  usage: test_cli_commands.py PATH/TO/clearing
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.dont_write_bytecode = True
import clearing_test  # noqa: E402
from clearing_test import Daemon, destroy_quietly, docker, wait_for  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
UNKNOWN_SB = 'sb-00000000000000ab'
UNKNOWN_PR = 'pr-00000000000000ab'

results = []
W = None          # this test's directory
SOCK = None       # the daemon's socket
NO_DAEMON = None  # a socket path where no daemon listens


def check(name, ok, detail=''):
    results.append(bool(ok))
    print('%s %d - %s' % ('ok' if ok else 'not ok', len(results), name))
    if not ok and detail:
        for line in str(detail).splitlines()[:30]:
            print('#   ' + line)
    sys.stdout.flush()
    return bool(ok)


def clr(*args, host=None, stdin=None, timeout=300):
    """Runs clearing [--host SOCK] ARGS: (status, stdout, stderr). host None: this test's
    daemon; '' for none."""
    host = SOCK if host is None else host
    cmd = [clearing_test.CLEARING] + (['--host', 'unix://' + host] if host else []) + list(args)
    p = subprocess.run(cmd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return (p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'))


def expect(name, args, status, out=None, err=None, host=None, stdin=None):
    """Checks clearing ARGS's exit status and that stdout / stderr match the regular
    expressions out / err (multi-line). Returns (ok, stdout, stderr)."""
    st, o, e = clr(*args, host=host, stdin=stdin)
    problems = []
    if st != status:
        problems.append('exit %d, wanted %d' % (st, status))
    if out is not None and not re.search(out, o, re.M):
        problems.append('stdout does not match /%s/' % out)
    if err is not None and not re.search(err, e, re.M):
        problems.append('stderr does not match /%s/' % err)
    detail = '\n'.join(problems + ['$ clearing ' + ' '.join(args), 'stdout: ' + o[-1500:],
                                   'stderr: ' + e[-1500:]])
    return check(name, not problems, detail), o, e


def as_json(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


# ---- without a daemon ----

def test_help_and_usage():
    """Every command's --help, and its usage errors: exit 2, the command named, --help offered."""
    for cmd in ('create', 'exec', 'ls', 'ps', 'logs', 'inspect', 'extend', 'commit', 'diff',
                'rm', 'gc'):
        expect('%s --help prints its usage, exit 0' % cmd, [cmd, '--help'], 0,
               out=r'^Usage: clearing %s' % cmd, host='')
    usage = r"Try 'clearing %s --help'"
    cases = [
        ('ls: an unknown option', ['ls', '--frobnicate'], 'ls', None),
        ('ls: an unexpected argument is named', ['ls', 'extra'], 'ls',
         "unexpected argument 'extra'"),
        ('create: an unexpected argument is named', ['create', 'extra'], 'create',
         "unexpected argument 'extra'"),
        ('create: an unknown option', ['create', '--frobnicate'], 'create', None),
        ('create: --env without =', ['create', '--env', 'NOEQ'], 'create',
         "'NOEQ' is not KEY=VALUE"),
        ('create: --label with an empty key', ['create', '--label', '=v'], 'create',
         "'=v' is not KEY=VALUE"),
        ('create: --repo that does not exist names it and why', ['create', '--repo', W + '/none'],
         'create', r'--repo %s/none: No such file' % re.escape(W)),
        ('create: --branch without --repo', ['create', '--branch', 'x'], 'create',
         '--branch and --reuse-branch need --repo'),
        ('create: --reuse-branch without --repo', ['create', '--reuse-branch'], 'create',
         'need --repo'),
        ('create: a malformed --memory names the option and value', ['create', '--memory', '12x'],
         'create', r"--memory.*'12x'"),
        ('create: a malformed --cpus', ['create', '--cpus', 'lots'], 'create', r'--cpus'),
        ('create: a malformed --tmp-size', ['create', '--tmp-size', 'big'], 'create',
         r'--tmp-size'),
        ('create: a malformed --workspace-size', ['create', '--workspace-size', '-1'], 'create',
         r'--workspace-size'),
        ('create: a malformed --file-size', ['create', '--file-size', '1q'], 'create',
         r'--file-size'),
        ('create: a malformed --pids', ['create', '--pids', 'many'], 'create', r'--pids'),
        ('create: --pids beyond 32 bits', ['create', '--pids', '99999999999'], 'create',
         r"--pids: '99999999999' is too large"),
        ('create: --nofile beyond 32 bits', ['create', '--nofile', '4294967296'], 'create',
         r'--nofile: .*too large'),
        ('create: a malformed --workspace-inodes', ['create', '--workspace-inodes', 'x'], 'create',
         r'--workspace-inodes'),
        ('create: --lifetime not in whole seconds', ['create', '--lifetime', '1500ms'], 'create',
         r'--lifetime: .*whole seconds'),
        ('create: a malformed --lifetime', ['create', '--lifetime', 'soon'], 'create',
         r'--lifetime'),
        ('exec: no sandbox id', ['exec'], 'exec', 'no sandbox id given'),
        ('exec: a malformed sandbox id is named', ['exec', 'sb-xyz', '--', 'true'], 'exec',
         "'sb-xyz' is not a sandbox id"),
        ('exec: neither --shell nor a command', ['exec', UNKNOWN_SB], 'exec',
         r'give either --shell STRING or -- COMMAND'),
        ('exec: both --shell and a command', ['exec', '--shell', 'true', UNKNOWN_SB, '--', 'true'],
         'exec', r'give either --shell'),
        ('exec: a malformed --timeout', ['exec', '--timeout', 'soon', UNKNOWN_SB, '--', 'true'],
         'exec', r'--timeout: .*soon'),
        ('exec: a malformed --stdout-cap', ['exec', '--stdout-cap', '1x', UNKNOWN_SB, '--', 'true'],
         'exec', r'1x'),
        ('exec: a malformed --stderr-cap', ['exec', '--stderr-cap', 'x', UNKNOWN_SB, '--', 'true'],
         'exec', None),
        ('exec: --env without =', ['exec', '--env', 'NOEQ', UNKNOWN_SB, '--', 'true'], 'exec',
         "--env 'NOEQ' is not KEY=VALUE"),
        ('exec: an unknown option', ['exec', '--frobnicate', UNKNOWN_SB, '--', 'true'], 'exec',
         None),
        ('inspect: no id', ['inspect'], 'inspect', r'usage: clearing inspect ID \[EXEC_ID\]'),
        ('inspect: too many arguments', ['inspect', UNKNOWN_SB, 'ex-0000000000000001', 'x'],
         'inspect', 'usage'),
        ('inspect: an option it does not have', ['inspect', '--json'], 'inspect', 'usage'),
        ('inspect: a malformed sandbox id is named', ['inspect', 'sb-1'], 'inspect',
         "'sb-1' is not a sandbox id"),
        ('extend: no --by', ['extend', UNKNOWN_SB], 'extend', r'usage: clearing extend ID --by'),
        ('extend: a malformed duration is named', ['extend', UNKNOWN_SB, '--by', 'soon'], 'extend',
         "--by: .*'soon'"),
        ('extend: a malformed sandbox id is named', ['extend', 'sb-1', '--by', '60s'], 'extend',
         "'sb-1' is not a sandbox id"),
        ('ps: no id', ['ps'], 'ps', r'usage: clearing ps \[--json\] ID'),
        ('ps: an option instead of the id', ['ps', '--all'], 'ps', 'usage'),
        ('ps: a malformed sandbox id is named', ['ps', '../x'], 'ps', "'../x' is not a sandbox id"),
        ('logs: no process id', ['logs', UNKNOWN_SB], 'logs',
         r'usage: clearing logs \[-f\] ID PROCESS'),
        ('logs: a malformed process id', ['logs', UNKNOWN_SB, 'pr-1'], 'logs',
         r'a process id \(pr-\.\.\.\)'),
        ('logs -f: a malformed sandbox id', ['logs', '-f', 'x', UNKNOWN_PR], 'logs',
         r'a sandbox id \(sb-\.\.\.\)'),
        ('commit: no id', ['commit'], 'commit', r'usage: clearing commit ID'),
        ('commit: a malformed id is named', ['commit', 'sb-1', '-m', 'x'], 'commit',
         "'sb-1' is not a sandbox id"),
        ('commit: two ids', ['commit', UNKNOWN_SB, UNKNOWN_SB], 'commit', 'usage'),
        ('commit: an unknown option', ['commit', '--frobnicate', UNKNOWN_SB], 'commit', None),
        ('diff: no id', ['diff'], 'diff', r'usage: clearing diff ID'),
        ('diff: a malformed id is named', ['diff', 'sb-1'], 'diff', "'sb-1' is not a sandbox id"),
        ('diff: an option it does not have', ['diff', '--stat'], 'diff', 'usage: clearing diff ID'),
        ('rm: no id', ['rm'], 'rm', 'no sandbox id given'),
        ('rm: an unknown option', ['rm', '--force', UNKNOWN_SB], 'rm', None),
        ('rm: a malformed id among good ones is named',
         ['rm', UNKNOWN_SB, 'sb-bad'], 'rm', r"'sb-bad' is not a sandbox id \(expected sb- and 16"),
        ('gc: an unknown option', ['gc', '--all'], 'gc', None),
    ]
    for name, args, cmd, err in cases:
        ok, _, e = expect(name + ': exit 2', args, 2, host=NO_DAEMON)
        if ok:
            check(name + ': the message names the command and offers --help',
                  re.search(usage % cmd, e) and (err is None or re.search(err, e)), e)


def test_no_daemon():
    """Each client command with no daemon at --host: exit 125 (1 would read as "refused"), and a
    message naming the socket and how to start a daemon."""
    say = r'cannot reach the clearing daemon at %s: start it with .clearing serve.' % \
        re.escape(NO_DAEMON)
    for args in (['create'], ['create', '--json', '--memory', '256m'],
                 ['exec', UNKNOWN_SB, '--', 'true'], ['exec', '--json', UNKNOWN_SB, '--', 'true'],
                 ['exec', '--detach', UNKNOWN_SB, '--', 'true'], ['ls', '--all', '--json'],
                 ['ps', UNKNOWN_SB], ['logs', UNKNOWN_SB, UNKNOWN_PR],
                 ['logs', '-f', UNKNOWN_SB, UNKNOWN_PR], ['inspect', UNKNOWN_SB],
                 ['extend', UNKNOWN_SB, '--by', '1m'], ['commit', UNKNOWN_SB],
                 ['diff', UNKNOWN_SB], ['rm', UNKNOWN_SB]):
        expect('no daemon: clearing %s exits 125 and says how to reach one' % ' '.join(args[:2]),
               args, 125, err=say, host=NO_DAEMON)


def test_engine_down():
    """The engine commands with no engine at --docker-host: exit 125, the socket named; gc and
    rm --engine destroy nothing, so they may run against the shared engine's absence safely."""
    gone = 'unix://%s/no-docker.sock' % W
    args = ['--docker-host', gone, '--state-dir', W + '/state', '--audit-log', W + '/audit.log']
    for cmd in (['ls', '--engine'], ['gc'], ['rm', '--engine', UNKNOWN_SB]):
        expect('engine down: clearing %s exits 125 and names the engine socket' % ' '.join(cmd),
               args + cmd, 125, err=re.escape(W + '/no-docker.sock'), host='')


# ---- with the daemon ----

def created_id(out):
    last = out.strip().splitlines()[-1] if out.strip() else ''
    return last if re.match(r'^sb-[0-9a-f]{16}$', last) else None


def test_create(made):
    """create's options reach the sandbox; --json prints its record. Returns the id."""
    ok, o, _ = expect('create --json with every limit option prints the record', [
        'create', '--json', '--image', clearing_test.IMAGE, '--idle-timeout', '10m',
        '--env', 'GREETING=hello', '--label', 'suite=cli-commands', '--label', 'who=a b/c',
        '--egress-allow', 'example.com', '--cpus', '0.5', '--memory', '256m', '--pids', '64',
        '--lifetime', '5m', '--tmp-size', '16m', '--workspace-size', '64m',
        '--workspace-inodes', '5000', '--nofile', '256', '--file-size', '10m'], 0,
        out=r'"id": "sb-[0-9a-f]{16}"')
    rec = as_json(o) if ok else None
    sid = rec.get('id') if isinstance(rec, dict) else None
    if sid:
        made.append(sid)
    check('the record holds the state and the limits asked for',
          isinstance(rec, dict) and rec.get('state') == 'running' and
          (rec.get('limits') or {}).get('pids') == 64, o)
    ok, o, _ = expect('inspect prints the same sandbox', ['inspect', sid or UNKNOWN_SB], 0,
                      out=r'"id": "%s"' % sid)
    rec = as_json(o) or {}
    lim = rec.get('limits') or {}
    check('inspect: the limits given on the command line hold',
          lim.get('pids') == 64 and lim.get('nofile') == 256 and
          lim.get('workspace_inodes') == 5000, json.dumps(lim))
    check('inspect: the labels are the metadata given',
          (rec.get('metadata') or {}).get('who') == 'a b/c', json.dumps(rec.get('metadata')))
    # Out of range: parsed by the CLI, refused by the daemon: a refusal, exit 1, naming the limit.
    for opt, val, what in (('--cpus', '64', 'cpus'), ('--memory', '1k', 'memory'),
                           ('--pids', '1', 'pids'), ('--lifetime', '2h', 'lifetime')):
        expect('create %s %s (out of range) is refused: exit 1, the limit named' % (opt, val),
               ['create', opt, val], 1, err=r'clearing: invalid: .*%s' % what)
    # The daemon refuses it (not_found): 1, where `clearing run` says 125 for a missing image.
    expect('create with an image that does not exist is refused, named, with how to build it',
           ['create', '--image', 'clearing/none:0'], 1,
           err=r'not_found: image clearing/none:0 .*images/build.sh')
    return sid


def test_ls(sid):
    ok, o, _ = expect('ls prints a table with a header', ['ls'], 0,
                      out=r'^ID +STATE +RUNTIME +CREATED +EXPIRES +IMAGE$')
    check('ls: the sandbox is a row: running, runsc, times as UTC',
          re.search(r'^%s +running +runsc +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +\d{4}-' % sid, o,
                    re.M), o)
    ok, o, _ = expect('ls --json prints a list', ['ls', '--json'], 0)
    lst = as_json(o)
    check('ls --json: the list holds the sandbox',
          isinstance(lst, list) and any(s.get('id') == sid for s in lst), o)
    expect('ls --label with a space and a slash (percent-encoded) finds it',
           ['ls', '--label', 'who=a b/c'], 0, out='^' + sid)
    ok, o, _ = expect('ls --label with another value runs', ['ls', '--label', 'who=nobody'], 0,
                      out='^ID ')
    check('ls --label with another value does not list it', sid not in o, o)
    expect('ls --all --label --json lists it', ['ls', '--all', '--label', 'suite=cli-commands',
                                                '--json'], 0, out=sid)
    ok, o, _ = expect('ls --engine lists the engine\'s sandboxes as a table', ['ls', '--engine'],
                      0, out=r'^ID +STATE', host='')
    check('ls --engine: this daemon\'s sandbox is among them', re.search('^' + sid, o, re.M), o)
    ok, o, _ = expect('ls --engine --json', ['ls', '--engine', '--json'], 0, host='')
    lst = as_json(o)
    mine = [s for s in lst or [] if s.get('id') == sid]
    check('ls --engine --json: the sandbox with its container and runtime',
          len(mine) == 1 and mine[0].get('runtime') == 'runsc' and mine[0].get('container_id') and
          mine[0].get('insecure') is False, o[:2000])


def test_exec(sid, tmp):
    expect('exec: options after the id, --cwd and --env',
           ['exec', sid, '--cwd', '/tmp', '--env', 'X=1', '--', 'sh', '-c',
            'echo "$(pwd) $X $GREETING"'], 0, out=r'^/tmp 1 hello$')
    expect('exec --stdin-file - reads standard input',
           ['exec', sid, '--stdin-file', '-', '--shell', 'tr a-z A-Z'], 0, out='^PIPED$',
           stdin=b'piped\n')
    with open(os.path.join(tmp, 'in.bin'), 'wb') as f:
        f.write(b'\x00\x01abc')
    expect('exec --stdin-file FILE: its bytes reach the command',
           ['exec', sid, '--stdin-file', os.path.join(tmp, 'in.bin'), '--shell', 'wc -c'], 0,
           out=r'^5$')
    with open(os.path.join(tmp, 'big.bin'), 'wb') as f:
        f.write(b'y' * (100 << 10))
    expect('exec --stdin-file of 100 KiB: all of it reaches the command',
           ['exec', sid, '--stdin-file', os.path.join(tmp, 'big.bin'), '--shell', 'wc -c'], 0,
           out=r'^%d$' % (100 << 10))
    with open(os.path.join(tmp, 'huge.bin'), 'wb') as f:
        f.truncate((16 << 20) + 1)
    expect('exec --stdin-file over 16 MiB: exit 2, says the limit',
           ['exec', sid, '--stdin-file', os.path.join(tmp, 'huge.bin'), '--', 'true'], 2,
           err=r'clearing: limit: --stdin-file: at most 16 MiB through the daemon')
    p = subprocess.run([clearing_test.CLEARING, '--host', 'unix://' + SOCK, 'exec', sid, '--shell',
                        r'printf "\377"; printf "\376\375" >&2'], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=300)
    check('exec: binary output of 1 and 2 bytes (base64 with padding) arrives byte-exact',
          p.returncode == 0 and p.stdout == b'\xff' and p.stderr == b'\xfe\xfd', p)
    expect('exec --stdin-file that does not exist: exit 2, the path named',
           ['exec', sid, '--stdin-file', tmp + '/none', '--', 'true'], 2,
           err=r'--stdin-file %s/none: No such file' % re.escape(tmp))
    expect('exec --stdout-cap / --stderr-cap: truncation is reported',
           ['exec', '--stdout-cap', '10', '--stderr-cap', '10', sid, '--shell',
            'seq 1 1000; seq 1 1000 >&2'], 0, err='clearing: output truncated')
    expect('exec: a signal death is 128+N and named', ['exec', sid, '--shell', 'kill -KILL $$'],
           137, err='clearing: command signaled')
    expect('exec: a command that cannot start is 126', ['exec', sid, '--', '/no/such/program'], 126,
           err='start_failed')
    ok, o, _ = expect('exec --json: the record, exit status mirrored',
                      ['exec', '--json', sid, '--shell', 'echo out; exit 7'], 7,
                      out=r'"exit_code": 7')
    rec = as_json(o) or {}
    check('exec --json: the record has the output', 'out' in json.dumps(rec.get('result')), o)
    expect('exec --json --timeout: 124', ['exec', '--json', '--timeout', '1s', sid, '--', 'sleep',
                                          '60'], 124, out='timed_out')
    expect('exec on an unknown sandbox: 125 (1 is the command\'s), not_found',
           ['exec', UNKNOWN_SB, '--', 'true'], 125, err='not_found')
    expect('exec --json on an unknown sandbox: 125, not_found',
           ['exec', '--json', UNKNOWN_SB, '--', 'true'], 125, err='not_found')
    expect('exec --detach on an unknown sandbox: 125, not_found',
           ['exec', '--detach', UNKNOWN_SB, '--', 'true'], 125, err='not_found')
    # A command silent for longer than the daemon's idle timeout (60 s): its stream is kept
    # alive by heartbeats (before, the connection was cut at 60 s and the CLI exited 125).
    expect('exec of a command silent for 70 s streams its output and exit status',
           ['exec', '--timeout', '5m', sid, '--', 'sh', '-c',
            'sleep 70; echo after-the-silence; exit 3'], 3,
           out=r'^after-the-silence$')
    expect('exec with a --cwd that does not exist cannot start: 126, the directory named',
           ['exec', sid, '--cwd', '/no/such/dir', '--', 'true'], 126,
           err=r"start_failed(.|\n)*working directory '/no/such/dir': No such file or directory")
    expect('exec of a command that does not exist: 126, the command named (not a directory)',
           ['exec', sid, '--', '/no/such/command'], 126,
           err=r"cannot start '/no/such/command': No such file or directory")


def test_processes(sid):
    """exec --detach --json, ps (table and --json), logs with and without -f."""
    ok, o, _ = expect('exec --detach --json prints the process record',
                      ['exec', '--detach', '--json', '--timeout', '1s', sid, '--', 'sh', '-c',
                       'sleep 2; echo to-out; echo to-err >&2; exit 4'], 0,
                      out=r'"id": "pr-[0-9a-f]{16}"')
    rec = as_json(o) or {}
    pid = rec.get('id', UNKNOWN_PR)

    def exited():
        st, o, _ = clr('ps', '--json', sid)
        lst = as_json(o) if st == 0 else None
        return [p for p in lst or [] if p.get('id') == pid and p.get('state') == 'exited']
    done = wait_for(exited, 120)
    check('ps --json: the process is seen exited', done, clr('ps', '--json', sid))
    check('ps --json: it ran to its own end, past --timeout 1s (a background process has none)',
          done and done[0]['result']['status'] == 'exited' and
          done[0]['result'].get('exit_code') == 4, done)
    expect('ps: the table shows it exited, and its argv', ['ps', sid], 0,
           out=r'^%s +exited +exited +sh -c sleep 2; echo to-out' % pid)
    expect('logs: its stdout, exit 0 (not the process\'s status)', ['logs', sid, pid], 0,
           out='^to-out$', err='^to-err$')
    expect('logs --follow of an exited process: its output, its status', ['logs', '--follow', sid,
                                                                          pid], 4, out='^to-out$')
    expect('logs of an unknown process: refused, exit 1, not_found', ['logs', sid, UNKNOWN_PR], 1,
           err='not_found')
    expect('logs -f of an unknown process: 125 (1 may be the process\'s), not_found',
           ['logs', '-f', sid, UNKNOWN_PR], 125, err='not_found')
    expect('logs of an unknown sandbox: exit 1', ['logs', UNKNOWN_SB, UNKNOWN_PR], 1,
           err='not_found')
    ok, o, _ = expect('exec --detach of binary output', ['exec', '--detach', sid, '--shell',
                                                         r'printf "\377\000z"'], 0, out='^pr-')
    bpid = o.strip()
    p = subprocess.run([clearing_test.CLEARING, '--host', 'unix://' + SOCK, 'logs', '-f', sid,
                        bpid], capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    check('logs -f: binary output arrives byte-exact, status 0',
          p.returncode == 0 and p.stdout == b'\xff\x00z', p)
    expect('ps of an unknown sandbox: refused, exit 1', ['ps', UNKNOWN_SB], 1, err='not_found')


def test_exited_has_status(sid, daemon):
    """A background process is answered as exited only with its result: there was a moment,
    while the daemon freed the process's handle, when it was "exited" with a null result, and
    `clearing logs -f` then exited 122 (sandbox failed) for a command that exited 3."""
    client = daemon.client()
    seen, statusless = 0, []
    for _ in range(30):
        r = client.post('/v1/sandboxes/%s/processes' % sid, {'argv': ['true']})
        if r.status != 201:
            break
        pid = r.json['id']
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            j = client.get('/v1/sandboxes/%s/processes/%s' % (sid, pid)).json or {}
            if j.get('state') == 'exited':
                seen += 1
                if j.get('result') is None:
                    statusless.append(pid)
                break
    check('30 background processes are each seen to exit (polled without pause)', seen == 30,
          '%d seen' % seen)
    check('none of them was answered as exited without its result', not statusless, statusless)
    bad = []
    for _ in range(10):
        st, o, e = clr('exec', '--detach', sid, '--shell', 'printf x; exit 3')
        pid = o.strip()
        st, o, e = clr('logs', '-f', sid, pid)
        if st != 3 or o != 'x':
            bad.append((pid, st, o, e))
    check('logs -f of 10 short processes: each exits with the command\'s status, 3', not bad, bad)


def test_inspect_extend(sid):
    expect('inspect of an unknown sandbox: refused, exit 1, not_found', ['inspect', UNKNOWN_SB], 1,
           err='not_found')
    expect('inspect -h', ['inspect', '-h'], 0, out='^Usage: clearing inspect', host='')
    ok, o, _ = expect('extend --by 1m', ['extend', sid, '--by', '1m'], 0,
                      out=r'^%s expires at \d+$' % sid)
    expect('extend of an unknown sandbox: refused, exit 1, not_found',
           ['extend', UNKNOWN_SB, '--by', '1m'], 1, err='not_found')
    expect('extend past the sandbox\'s maximum lifetime: refused, exit 1, says by how much it may',
           ['extend', sid, '--by', '1000h'], 1,
           err=r'clearing: limit: sandbox %s cannot live past \d+ .*extended by at most \d+ s'
           % sid)
    expect('extend --by 0s: refused by the daemon, exit 1', ['extend', sid, '--by', '0s'], 1,
           err=r'clearing: invalid: by must be a positive')


def test_git(made, repo):
    ok, o, _ = expect('create --repo --base --branch', ['create', '--repo', repo, '--base', 'HEAD',
                                                        '--branch', 'cli/one'], 0, out=r'^sb-')
    gid = created_id(o) or UNKNOWN_SB
    made.append(gid)
    expect('diff of an unchanged workspace is empty', ['diff', gid], 0, out=r'\A\Z')
    expect('commit with no change: the branch and "(no changes)"', ['commit', gid, '-m', 'none'], 0,
           out=r'^cli/one [0-9a-f]{40} \(no changes\)$')
    expect('changes in the sandbox, among them a .git directory', [
        'exec', gid, '--shell', 'echo more >> calc.py && mkdir .git && echo x > .git/config'], 0)
    ok, o, e = expect('commit --author --email --message: a diffstat, the branch, the commit',
                      ['commit', gid, '--message', 'from cli', '--author', 'Cli Test', '--email',
                       'cli@test'], 0, out=r'^cli/one [0-9a-f]{40}$')
    check('commit says on stderr which file it skipped and why',
          re.search(r'^clearing: skipped "\.git" \(\.git\)$', e, re.M), e)
    log = subprocess.run(['git', '-C', repo, 'log', '-1', '--format=%an <%ae> %s', 'cli/one'],
                         capture_output=True, text=True)
    check('the commit has the author and message given', log.stdout.strip() ==
          'Cli Test <cli@test> from cli', log.stdout + log.stderr)
    expect('more changes', ['exec', gid, '--shell', 'echo again >> calc.py'], 0)
    ok, o, _ = expect('commit --json prints the record', ['commit', '--json', gid, '-m', 'j'], 0,
                      out=r'"branch": "cli/one"')
    rec = as_json(o) or {}
    check('commit --json: changed, with the commit\'s id', rec.get('changed') is True and
          re.match(r'^[0-9a-f]{40}$', rec.get('commit') or ''), o)
    ok, o, _ = expect('create --repo --branch of an existing branch with --reuse-branch',
                      ['create', '--repo', repo, '--branch', 'cli/one', '--reuse-branch'], 0,
                      out=r'^sb-')
    rid = created_id(o) or UNKNOWN_SB
    made.append(rid)
    expect('the reused branch\'s workspace has the committed change', ['exec', rid, '--', 'grep',
                                                                       '-c', 'again', 'calc.py'],
           0, out='^1$')
    expect('commit of an unknown sandbox: refused, exit 1', ['commit', UNKNOWN_SB, '-m', 'x'], 1,
           err='not_found')
    expect('diff of an unknown sandbox: refused, exit 1', ['diff', UNKNOWN_SB], 1, err='not_found')
    return gid, rid


def test_no_repo(sid):
    """A sandbox without a repository: commit and diff are refused and say why."""
    expect('commit of a sandbox without a repository: refused, exit 1, says so',
           ['commit', sid, '-m', 'x'], 1, err=r'clearing: \w+: .*repo')
    expect('diff of a sandbox without a repository: refused, exit 1, says so', ['diff', sid], 1,
           err=r'clearing: \w+: .*repo')


def test_rm(sids):
    # A command that runs while its sandbox is removed: 122, and it says why.
    bg = subprocess.Popen([clearing_test.CLEARING, '--host', 'unix://' + SOCK, 'exec', sids[0],
                           '--shell', 'echo up; sleep 600'], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        up = bg.stdout.readline() == b'up\n'
        check('a streamed exec\'s command runs', up)
        expect('rm of a sandbox and a malformed id: exit 2, the id named',
               ['rm', sids[0], 'sb-bad'], 2, err="'sb-bad' is not a sandbox id")
        expect('... and the good one was not removed', ['inspect', sids[0]], 0,
               out='"state": "running"')
        ok, o, _ = expect('rm of several sandboxes prints each', ['rm'] + sids, 0)
        check('rm: every id printed', all(re.search('^%s$' % s, o, re.M) for s in sids), o)
        if up:
            try:
                _, err = bg.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                bg.kill()
                _, err = bg.communicate()
            check('the exec in a removed sandbox ends with 122 and says the sandbox was removed',
                  bg.returncode == 122 and
                  b'sandbox_failed: the sandbox was removed while the command ran' in err,
                  (bg.returncode, err))
    finally:
        if bg.poll() is None:
            bg.kill()
            bg.wait(60)
    expect('rm of one already removed is idempotent', ['rm', sids[0]], 0, out='^%s$' % sids[0])
    ok, o, _ = expect('ls --all shows it destroyed', ['ls', '--all'], 0,
                      out=r'^%s +destroyed' % sids[0])
    ok, o, _ = expect('ls (live only) does not list it', ['ls'], 0, out='^ID ')
    check('ls does not list the removed sandbox', sids[0] not in o, o)
    expect('exec on a removed sandbox: 125, says it is not running',
           ['exec', sids[0], '--', 'true'], 125, err='not running')


def test_rm_engine():
    """rm --engine on a sandbox of `clearing run` (a container this test made): recorded, then
    removed; an id the engine does not have is no error."""
    state, log = W + '/run-state', W + '/engine-audit.log'
    bg = subprocess.Popen([clearing_test.CLEARING, '--state-dir', state, '--audit-log', log, 'run',
                           '--timeout', '10m', '--', 'sh', '-c', 'echo up; sleep 600'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        up = bg.stdout.readline() == b'up\n'
        check('a background run\'s command starts', up)
        ids = []
        if up:
            _, o, _ = clr('ls', '--engine', '--json', host='')
            for s in as_json(o) or []:
                r = docker('GET', '/containers/%s/json' % s['container_id'])
                mounts = [m.get('Source', '') for m in (r.json or {}).get('Mounts') or []]
                if any(m.startswith(state + '/') for m in mounts):
                    ids.append(s['id'])
        check('ls --engine lists the run\'s sandbox', len(ids) == 1, ids)
        sid = ids[0] if ids else UNKNOWN_SB
        expect('rm --engine of it and of one the engine does not have',
               ['--state-dir', state, '--audit-log', log, 'rm', '--engine', sid, UNKNOWN_SB], 0,
               out='^%s$' % sid, host='')
        check('the run ends when its sandbox goes', wait_for(lambda: bg.poll() is not None, 120))
        gone = docker('GET', '/containers/clearing-%s/json' % sid).status
        check('its container is gone', gone == 404, gone)
        with open(log) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        destroys = [r for r in recs if r.get('action') == 'sandbox.destroy' and
                    (r.get('details') or {}).get('reason') == 'client-engine']
        check('each destroy was recorded in the audit log',
              sorted(r['sandbox'] for r in destroys) == sorted([sid, UNKNOWN_SB]), recs[-4:])
    finally:
        if bg.poll() is None:
            bg.kill()
        bg.wait(60)


def start_own_engine(d2):
    """A dockerd of this test's own (no runsc, no network), so that gc, which removes what it
    finds on its engine, finds only what this test put there: never run gc on the shared one.
    Returns the Popen, or None (with a check that says why) when it did not answer."""
    os.makedirs(d2)
    with open(d2 + '/daemon.json', 'w') as f:
        f.write('{}')
    log = open(d2 + '/log', 'wb')
    proc = subprocess.Popen(
        ['dockerd', '--data-root', d2 + '/data', '--exec-root', d2 + '/exec', '-H',
         'unix://%s/docker.sock' % d2, '--pidfile', d2 + '/pid', '--bridge=none',
         '--iptables=false', '--ip6tables=false', '--config-file', d2 + '/daemon.json'],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=clearing_test.die_with_parent)
    log.close()

    def answers():
        if proc.poll() is not None:
            return True
        try:
            return clearing_test.request(d2 + '/docker.sock', 'GET', '/info', timeout=10).status \
                == 200
        except OSError:
            return False
    up = wait_for(answers, 120) and proc.poll() is None
    with open(d2 + '/log', 'rb') as f:
        tail = f.read()[-2000:].decode('utf-8', 'replace')
    check('an engine of this test\'s own answers', up, tail)
    return proc


def stop_own_engine(proc):
    clearing_test.stop_process(proc, 60)


def test_gc():
    """gc on an engine of this test's own: a container of ours that is not running is removed
    (labels unreadable, or no sandbox id at all), and so is an orphaned workspace; each container
    removal recorded first. A workspace it cannot remove is counted as failed: exit 1."""
    d2 = W + '/d2'
    proc = start_own_engine(d2)
    sock = d2 + '/docker.sock'
    state, log = W + '/gc-state', W + '/gc-audit.log'
    gc_args = ['--docker-host', 'unix://' + sock, '--state-dir', state, '--audit-log', log]
    try:
        if proc.poll() is not None:
            return
        # An image of one file: enough to create (not run) containers from.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w') as t:
            info = tarfile.TarInfo('marker')
            info.size = 1
            t.addfile(info, io.BytesIO(b'x'))
        r = clearing_test.request(sock, 'POST',
                                  '/images/create?fromSrc=-&repo=clearing-gc-test&tag=1',
                                  buf.getvalue(), {'Content-Type': 'application/x-tar'},
                                  timeout=120, json_type=False)
        check('an image imports into the own engine', r.status == 200, r)
        gid = 'sb-%016x' % int.from_bytes(os.urandom(8), 'big')
        made = {}
        for name, labels in (('clearing-' + gid, {'io.clearing.managed-by': 'clearing',
                                                  'io.clearing.sandbox-id': gid}),
                             ('clearing-gc-test-noid', {'io.clearing.managed-by': 'clearing'})):
            r = clearing_test.request(sock, 'POST', '/containers/create?name=' + name,
                                      {'Image': 'clearing-gc-test:1', 'Cmd': ['/marker'],
                                       'Labels': labels}, timeout=120)
            made[name] = (r.json or {}).get('Id')
        check('two containers labelled as clearing\'s exist, not running',
              all(made.values()), made)
        ok, o, _ = expect('ls --engine: containers of ours with labels it cannot read are listed',
                          gc_args + ['ls', '--engine'], 0, host='')
        check('ls --engine: both, as "(unreadable)" and broken',
              len(re.findall(r'^\(unreadable\) +broken ', o, re.M)) == 2, o)
        old = time.time() - 3600
        for ws in ('sb-00000000000000c1', 'sb-00000000000000c2'):
            os.makedirs('%s/workspaces/%s' % (state, ws))
        with open(state + '/workspaces/sb-00000000000000c2/left', 'w') as f:
            f.write('x')
        for ws in ('sb-00000000000000c1', 'sb-00000000000000c2'):
            os.utime('%s/workspaces/%s' % (state, ws), (old, old))
        expect('gc: two broken removed, one workspace removed, one failed: exit 1',
               gc_args + ['gc'], 1,
               out=r'^removed 0 expired, 2 broken, 1 orphaned workspaces; 1 failed$',
               err=r'gc.remove_failed.*sb-00000000000000c2', host='')
        left = {name: clearing_test.request(sock, 'GET', '/containers/%s/json' % name,
                                            timeout=60).status for name in made}
        check('both containers are gone from the own engine', list(left.values()) == [404, 404],
              left)
        check('the empty orphaned workspace is gone, the other kept',
              not os.path.exists(state + '/workspaces/sb-00000000000000c1') and
              os.path.exists(state + '/workspaces/sb-00000000000000c2/left'))
        with open(log) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        reasons = sorted(((r.get('details') or {}).get('container'),
                          (r.get('details') or {}).get('reason'))
                         for r in recs if r.get('action') == 'sandbox.destroy')
        check('each container removal was recorded, its container named, as gc-orphan',
              reasons == sorted((cid, 'gc-orphan') for cid in made.values()), recs)
        os.unlink(state + '/workspaces/sb-00000000000000c2/left')
        os.utime(state + '/workspaces/sb-00000000000000c2', (old, old))
        ok, o, _ = expect('gc --json: the workspace emptied since is removed, nothing failed',
                          gc_args + ['gc', '--json'], 0, host='')
        check('gc --json: the counts', as_json(o) == {'expired': 0, 'broken': 0, 'workspaces': 1,
                                                     'failed': 0}, o)
    finally:
        stop_own_engine(proc)


def sweep(daemon, made):
    """Destroys every sandbox of this test's daemon (its own: no one else's), also one a
    failed check made by mistake."""
    try:
        r = daemon.client().get('/v1/sandboxes', timeout=60)
        made = made + [s['id'] for s in (r.json or {}).get('sandboxes', [])]
    except OSError:
        pass
    for sid in made:
        destroy_quietly(daemon.client(), sid)


def main():
    global W, SOCK, NO_DAEMON
    if len(sys.argv) != 2:
        sys.exit('usage: test_cli_commands.py PATH/TO/clearing')
    clearing_test.CLEARING = os.path.abspath(sys.argv[1])
    W = tempfile.mkdtemp(prefix='clearing-clicmd-', dir='/tmp')
    NO_DAEMON = W + '/no-daemon.sock'
    made = []
    repo_root = W + '/repos'
    os.makedirs(repo_root)
    repo = subprocess.run(['bash', os.path.join(SRC, 'scripts', 'sample-repo.sh'),
                           repo_root + '/sample'], capture_output=True, text=True,
                          check=True).stdout.strip()
    daemon = Daemon('clicmd', args=['--repo-root', repo_root], prefix='clr-clicmd-')
    try:
        test_help_and_usage()
        daemon.start(120)
        SOCK = daemon.sock
        expect('the daemon answers ls (the control of every "no daemon" below)', ['ls'], 0,
               out='^ID ')
        test_no_daemon()
        sid = test_create(made) or UNKNOWN_SB
        test_ls(sid)  # with ls --engine: the control of every "engine down" below
        test_engine_down()
        test_exec(sid, W)
        test_processes(sid)
        test_exited_has_status(sid, daemon)
        test_inspect_extend(sid)
        test_no_repo(sid)
        gid, rid = test_git(made, repo)
        test_rm([sid, gid, rid])
        test_rm_engine()
        test_gc()
    finally:
        sweep(daemon, made)
        daemon.stop()
        shutil.rmtree(W, ignore_errors=True)
        shutil.rmtree(daemon.dir, ignore_errors=True)
    print('1..%d' % len(results))
    failed = results.count(False)
    print('# %d passed, %d failed' % (len(results) - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
