#!/usr/bin/env python3
"""Snapshots and forks of running sandboxes (issue #22) on the real engine (dockerd with
"experimental": true, runsc): a fork continues a background process's state; parent and fork do
not see each other's writes (/workspace and /tmp); several forks side by side; a corrupt
snapshot is refused and nothing is made of it; a tenant neither sees nor forks another's
snapshot; a restore in place takes a sandbox back to its snapshot (its /workspace and /tmp,
the same id, one container) and refuses a tampered, unknown or foreign snapshot leaving the
sandbox as it was; a restore the runtime refuses after the old container was removed destroys
the sandbox but keeps the snapshot; a daemon killed with -9 in the middle of a snapshot and of a fork leaves nothing
half-made after its restart, and one killed in the middle of a restore (its removal of the old
container held at an engine relay, then the container removed) keeps its snapshot (held,
apart from its keep, before the swap; the hold outlives the lost sandbox); constant
reconcile passes mark no sandbox lost during snapshots and a restore that begins while a pass
looks (its look held at the relay). Waits are for conditions with generous deadlines, or for
engine requests held at the relay (test_api.EngineProxy), never speed.

    snapshots.py PATH/TO/clearing        (TAP on stdout)"""
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import clearing_test as ct  # noqa: E402
import test_api as T  # noqa: E402  (its engine relay; its tests run only from its own main())

n = 0
failed = 0
FORKS = int(os.environ.get('SNAPSHOT_FORKS', '10'))


def check(name, ok, detail=''):
    global n, failed
    n += 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n, name))
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:15]:
            print('# ' + line)
    sys.stdout.flush()
    return ok


def call(c, method, path, body=None, tenant=None, timeout=180):
    h = {'X-Clearing-Tenant': tenant} if tenant else None
    r = c.request(method, path, body, headers=h, timeout=timeout)
    return r.status, ct.decode(r.body)


def sh(c, sid, script, tenant=None):
    st, r = call(c, 'POST', '/v1/sandboxes/%s/exec' % sid,
                 {'argv': ['sh', '-c', script], 'timeout': '60s'}, tenant)
    if st != 200:
        return None
    return r['result']['stdout'].strip()


def wait_for(fn, seconds=60):
    deadline = time.monotonic() + seconds
    v = fn()
    while not v and time.monotonic() < deadline:
        time.sleep(0.3)
        v = fn()
    return v


def call_dropped(c, method, path, body):
    """A call whose daemon a test kills meanwhile: its connection's end is expected."""
    try:
        call(c, method, path, body, timeout=60)
    except OSError:
        pass


def counter(c, sid, path='/tmp/c'):
    out = sh(c, sid, 'cat %s 2>/dev/null || echo 0' % path)
    try:
        return int(out)
    except (TypeError, ValueError):
        return -1


LOOP = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.2; done'
LOOP_B = LOOP.replace('/tmp/c', '/tmp/b')  # the background process's, beside LOOP's
# ... which also says each count on its stdout, after 3 MiB of other output
BURST = 3 << 20
LOOP_BG = 'yes 0123456789abcde | head -c %d; ' % BURST + \
    LOOP_B.replace('; sleep', '; echo tick $i; sleep')


def last_tick(c, sid, proc_id):
    """The last count a background process wrote on its stdout, -1 when none."""
    st, o = call(c, 'GET', '/v1/sandboxes/%s/processes/%s/output?stdout_offset=0' % (sid, proc_id))
    ticks = [int(w) for w in re.findall(r'tick (\d+)\n', (o.get('stdout') or {}).get('data', ''))] \
        if st == 200 else []
    return ticks[-1] if ticks else -1


def proc_state(c, sid, proc_id):
    st, p = call(c, 'GET', '/v1/sandboxes/%s/processes/%s' % (sid, proc_id))
    return p if st == 200 else {}


def create(c, tenant=None, body=None):
    st, r = call(c, 'POST', '/v1/sandboxes', body or {}, tenant)
    return (r['id'] if st == 201 else None), st, r


def snapshot_dirs(d):
    return sorted(os.listdir(os.path.join(d.state, 'snapshots'))) \
        if os.path.isdir(os.path.join(d.state, 'snapshots')) else []


def our_containers(d):
    r = ct.docker('GET', '/containers/json?all=1')
    return [x for x in ct.decode(r.body)
            if x.get('Labels', {}).get('io.clearing.owner') == d.owner]


RESTORE_BUG = ('runsc 0.0~20240729 cannot restore a checkpoint taken while a docker exec\'s '
               'process ran: "no host FD available for :host:0" (fixed in gVisor 20250304)')


def test_fork_and_isolation(d, c):
    parent, st, r = create(c)
    if not check('a sandbox is created (positive control)', parent, (st, r)):
        return None
    r = c.request('PUT', '/v1/sandboxes/%s/files/w' % parent, b'parent-ws\n',
                  headers={'Content-Type': 'application/octet-stream'})
    check('a file is written into its workspace from the host', r.status in (200, 201, 204),
          (r.status, r.body[:200]))
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {})
    if not check('a snapshot is taken (201)', st == 201, (st, snap)):
        print(d.log_tail())
        return None
    check('the snapshot has a size, a sha256, no parent, an expiry',
          snap['size'] > 0 and len(snap['sha256']) == 64 and snap['parent'] is None
          and snap['expires_at'] > snap['created_at'], snap)
    root = os.path.join(d.state, 'snapshots', snap['id'])
    files = glob.glob(os.path.join(root, '**'), recursive=True)
    mode = os.stat(root).st_mode & 0o777
    check('its files are under the state directory, root-only', files and mode == 0o700,
          (oct(mode), files[:5]))
    st, lst = call(c, 'GET', '/v1/sandboxes/%s/snapshots' % parent)
    check('the sandbox lists it', st == 200 and [s['id'] for s in lst['snapshots']] == [snap['id']],
          (st, lst))
    fork, st, r = create(c, body={'snapshot': snap['id']})
    if not check('a fork is created from it (201, its own id)', fork and fork != parent, (st, r)):
        print(d.log_tail())
        return snap
    check('the fork says which snapshot', r.get('snapshot') == snap['id'], r)
    check('the fork has the parent\'s /workspace as it was',
          sh(c, fork, 'cat /workspace/w') == 'parent-ws', sh(c, fork, 'cat /workspace/w'))
    check('the parent runs on after the snapshot and the fork', sh(c, parent, 'echo up') == 'up',
          sh(c, parent, 'echo up'))
    sh(c, fork, 'echo fork > /workspace/w; echo fork > /tmp/t; touch /workspace/only-fork')
    sh(c, parent, 'echo parent-tmp > /tmp/t; touch /workspace/only-parent')
    check('the fork\'s writes changed the fork (positive control)',
          sh(c, fork, 'cat /workspace/w /tmp/t; ls /workspace') == 'fork\nfork\nonly-fork\nw',
          sh(c, fork, 'cat /workspace/w /tmp/t; ls /workspace'))
    check('the parent does not see the fork\'s writes (/workspace and /tmp)',
          sh(c, parent, 'cat /workspace/w /tmp/t; ls /workspace')
          == 'parent-ws\nparent-tmp\nonly-parent\nw',
          sh(c, parent, 'cat /workspace/w /tmp/t; ls /workspace'))
    check('the fork does not see the parent\'s later writes',
          sh(c, fork, 'cat /tmp/t; ls /workspace/only-parent 2>&1 | grep -c "No such"') == 'fork\n1',
          sh(c, fork, 'cat /tmp/t; ls /workspace/only-parent 2>&1'))
    call(c, 'DELETE', '/v1/sandboxes/' + fork)
    test_cli(d, c, parent, snap)
    # A process's state after the sandbox's first commands (its live channel attached): a
    # command over the channel runs the counter loop while the snapshot is taken. Its process
    # is a child of the sandbox's agent, not of a docker exec: the snapshot is restorable, and
    # the fork continues the loop from where the snapshot found it.
    held = {}

    def run_loop():
        held['r'] = call(c, 'POST', '/v1/sandboxes/%s/exec' % parent,
                         {'argv': ['sh', '-c', LOOP], 'timeout': '90s'}, timeout=300)
    t = threading.Thread(target=run_loop, daemon=True)
    t.start()
    check('a counter loop runs in a command over the live channel',
          wait_for(lambda: counter(c, parent) >= 10), counter(c, parent))
    st, snap2 = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {})
    check('a second snapshot is taken while it runs, its parent the first, restorable (no '
          'docker exec ran)', st == 201 and snap2.get('parent') == snap['id']
          and snap2.get('restorable') is True, (st, snap2))
    at = counter(c, parent)
    check('the parent\'s loop goes on after the snapshot',
          wait_for(lambda: counter(c, parent) > at), (at, counter(c, parent)))
    fork2, st, r = create(c, body={'snapshot': snap2.get('id', '')}) if st == 201 else (None, 0, {})
    check('a fork of it is made (201)', st == 201, (st, r))
    if fork2:
        v0 = counter(c, fork2)
        check('the fork continues the loop from the snapshot (its counter is past 10 and grows)',
              v0 >= 10 and wait_for(lambda: counter(c, fork2) > v0), v0)
        check('the fork runs new commands', sh(c, fork2, 'echo fork-runs') == 'fork-runs',
              sh(c, fork2, 'echo fork-runs'))
        call(c, 'DELETE', '/v1/sandboxes/' + fork2)
    # The same loop as a background process: it runs on the live channel like a command, not
    # through docker exec (whose descriptors this runsc cannot restore, RESTORE_BUG), so a
    # snapshot taken while it runs is restorable and a fork continues it.
    # A sandbox of its own: this engine can refuse a repeated checkpoint of one container
    # (docs/OPERATIONS.md), and the parent has had two already.
    bg, st, r = create(c)
    check('a sandbox for the background loop', bg, (st, r))
    st, proc = call(c, 'POST', '/v1/sandboxes/%s/processes' % bg, {'shell': LOOP_BG})
    pid = proc.get('id', '') if isinstance(proc, dict) else ''
    check('a counter loop runs as a background process, after 3 MiB of output', st == 201
          and wait_for(lambda: counter(c, bg, '/tmp/b') >= 10)
          and proc_state(c, bg, pid).get('stdout_offset', 0) > BURST,
          (st, proc, counter(c, bg, '/tmp/b'), proc_state(c, bg, pid)))
    st, snap3 = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % bg, {})
    check('a snapshot is taken while it runs, restorable (no docker exec ran), naming one '
          'process', st == 201 and snap3.get('restorable') is True
          and snap3.get('processes') == 1, (st, snap3))
    fork3, st, r = create(c, body={'snapshot': snap3.get('id', '')}) if st == 201 else (None, 0, {})
    check('a fork of it is made (201)', st == 201, (st, r))
    if fork3:
        v0 = counter(c, fork3, '/tmp/b')
        check('the fork continues the background loop from the snapshot (past 10, growing)',
              v0 >= 10 and wait_for(lambda: counter(c, fork3, '/tmp/b') > v0), v0)
        # The fork lists the process it continues as its own: a new id, from the snapshot and
        # the parent's process, the parent's request; its output is the parent's up to the
        # checkpoint, then the fork's own.
        st_l, lst = call(c, 'GET', '/v1/sandboxes/%s/processes' % fork3)
        procs3 = lst.get('processes', []) if st_l == 200 else []
        fp = procs3[0] if len(procs3) == 1 else {}
        fid = fp.get('id', '')
        check('the fork lists the process it continues: running, a new id, from the snapshot '
              'and the parent\'s process, the same request',
              fp.get('state') == 'running' and fid and fid != pid
              and fp.get('from') == {'snapshot': snap3.get('id'), 'process': pid}
              and (fp.get('request') or {}).get('shell') == LOOP_BG, (st_l, lst))
        t0 = last_tick(c, fork3, fid)
        check('its output holds the parent\'s counts and goes on in the fork',
              t0 >= 10 and wait_for(lambda: last_tick(c, fork3, fid) > t0), t0)
        # The agent keeps a background process's newest output, not its oldest: after the
        # 3 MiB burst the fork's copy still starts with the burst's tail and the first counts.
        st_o, o3 = call(c, 'GET', '/v1/sandboxes/%s/processes/%s/output?stdout_offset=0'
                        % (fork3, fid))
        data3 = (o3.get('stdout') or {}).get('data', '') if st_o == 200 else ''
        # (What the fork's process wrote before its channel's HELLO comes twice: live, then in
        # the replay; so the window may begin with a tick.)
        check('the fork\'s copy holds the newest output kept before the snapshot: the burst\'s '
              'tail, then tick 1, not the burst\'s first megabyte',
              '0123456789abcde\ntick 1\n' in data3 and len(data3) < BURST // 4,
              (st_o, len(data3), data3[:40]))
        st_k, k = call(c, 'POST', '/v1/sandboxes/%s/processes/%s/signal' % (fork3, fid),
                       {'signal': 'KILL'})
        check('killed in the fork, it exits there, signaled', st_k in (200, 202, 204)
              and wait_for(lambda: proc_state(c, fork3, fid).get('state') == 'exited')
              and (proc_state(c, fork3, fid).get('result') or {}).get('status') == 'signaled',
              (st_k, k, proc_state(c, fork3, fid)))
        at3 = counter(c, fork3, '/tmp/b')
        check('... and its counter stops in the fork', at3 >= v0
              and not wait_for(lambda: counter(c, fork3, '/tmp/b') > at3 + 1, 3), at3)
        call(c, 'DELETE', '/v1/sandboxes/' + fork3)
    at = counter(c, bg, '/tmp/b')
    st_p, p = call(c, 'GET', '/v1/sandboxes/%s/processes/%s' % (bg, pid))
    check('the parent\'s background process runs on, listed as running',
          st_p == 200 and p.get('state') == 'running'
          and wait_for(lambda: counter(c, bg, '/tmp/b') > at), (st_p, p, at))
    # Restored in place, the sandbox takes the process back from its snapshot under a new id:
    # the old entry ends with the old container, the new one runs on from the snapshot's count.
    st_r, r = restore(c, bg, {'snapshot': snap3.get('id', '')}) if bg else (0, {})
    check('the sandbox is restored to the snapshot (200)', st_r == 200, (st_r, r))
    live = pid
    if st_r == 200:
        st_l, lst = call(c, 'GET', '/v1/sandboxes/%s/processes' % bg)
        now = {q['id']: q for q in lst.get('processes', [])} if st_l == 200 else {}
        back = [q for q in now.values() if q.get('from')]
        rp = back[0] if len(back) == 1 else {}
        live = rp.get('id', '')
        check('after the restore: the old entry exited, one new entry running, from the '
              'snapshot and the old process', (now.get(pid) or {}).get('state') == 'exited'
              and len(now) == 2 and rp.get('state') == 'running'
              and rp.get('from') == {'snapshot': snap3.get('id'), 'process': pid}, (st_l, lst))
        t1 = last_tick(c, bg, live)
        check('the restored process\'s output goes on from the snapshot\'s counts',
              t1 >= 10 and wait_for(lambda: last_tick(c, bg, live) > t1), t1)
    call(c, 'POST', '/v1/sandboxes/%s/processes/%s/signal' % (bg, live), {'signal': 'KILL'})
    check('the background process ends when killed', wait_for(lambda: call(
        c, 'GET', '/v1/sandboxes/%s/processes/%s' % (bg, live))[1].get('state') == 'exited'),
        call(c, 'GET', '/v1/sandboxes/%s/processes/%s' % (bg, live)))
    if bg:
        call(c, 'DELETE', '/v1/sandboxes/' + bg)
    # A process started through docker exec (an operator's, held until a gate file appears)
    # makes a snapshot unrestorable: it says so (restorable false), and a fork or restore of it
    # is refused up front, saying what to do; nothing is left of it. A sandbox of its own again:
    # its first checkpoint is the one that must succeed.
    bg, st, r = create(c)
    check('a sandbox for the operator\'s docker exec', bg, (st, r))
    cont = [x['Id'] for x in sandbox_containers(bg)]
    r = ct.docker('POST', '/containers/%s/exec' % (cont[0] if cont else 'none'),
                  {'Cmd': ['sh', '-c', 'while [ ! -e /tmp/gate ]; do sleep 0.1; done']})
    xid = (r.json or {}).get('Id', '') if r.status == 201 else ''
    r2 = ct.docker('POST', '/exec/%s/start' % xid, {'Detach': True}) if xid else None

    def exec_running():
        x = ct.docker('GET', '/exec/%s/json' % xid)
        return x.status == 200 and bool((x.json or {}).get('Running'))
    check('an operator\'s docker exec runs in the sandbox (positive control)',
          xid and r2 is not None and r2.status == 200 and wait_for(exec_running),
          (r.status, r.body[:200], r2 and r2.status))
    st, snap4 = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % bg, {})
    check('a snapshot taken while it runs is not restorable', st == 201
          and snap4.get('restorable') is False, (st, snap4))
    before = {x['Id'] for x in our_containers(d)}
    st_l, lst = call(c, 'GET', '/v1/sandboxes?state=running')
    rows_before = {s['id'] for s in lst.get('sandboxes', [])}
    check('the running sandboxes are listed, the sandbox among them (positive control)',
          st_l == 200 and bg in rows_before, (st_l, lst))
    fork4, st, r = create(c, body={'snapshot': snap4.get('id', '')})
    msg = (r.get('error') or {}).get('message', '')[:400] if isinstance(r, dict) else r
    check('its fork is refused up front (409), naming docker exec and what to do',
          st == 409 and 'docker exec' in msg and 'code session' in msg, (st, msg))
    left = {x['Id'] for x in our_containers(d)} - before
    check('the refused fork left no container behind', not left, left)
    st_l, lst = call(c, 'GET', '/v1/sandboxes?state=running')
    check('the refused fork left no running sandbox row',
          st_l == 200 and {s['id'] for s in lst['sandboxes']} <= rows_before, (st_l, lst))
    # A restore of the sandbox from it: refused the same way, before the sandbox is touched (a
    # restore the engine refused half-way would cost the sandbox).
    old = [x['Id'] for x in sandbox_containers(bg)]
    st, r = call(c, 'POST', '/v1/sandboxes/%s/restore' % bg,
                 {'snapshot': snap4.get('id', '')})
    check('a restore from it is refused (409) naming docker exec',
          st == 409 and 'docker exec' in (r.get('error') or {}).get('message', ''), (st, r))
    check('the sandbox runs on, its container untouched, its docker exec still running',
          len(old) == 1 and old == [x['Id'] for x in sandbox_containers(bg)]
          and exec_running(), old)
    # Once that exec ended, a new snapshot is restorable again.
    sh(c, bg, 'touch /tmp/gate')
    check('the operator\'s docker exec ends at its gate', wait_for(
        lambda: ct.docker('GET', '/exec/%s/json' % xid).status == 200 and not exec_running()),
        xid)
    st, snap5 = wait_for(lambda: (lambda st_r: st_r if st_r[1].get('restorable') else None)(
        call(c, 'POST', '/v1/sandboxes/%s/snapshots' % bg, {})), 60) or (0, {})
    check('a snapshot after it ended is restorable', st == 201, (st, snap5))
    if bg:
        call(c, 'DELETE', '/v1/sandboxes/' + bg)
    t.join(120)
    check('the command that ran the first loop ended at its timeout',
          not t.is_alive() and held.get('r', (0, {}))[0] == 200
          and held['r'][1]['result']['status'] == 'timed_out', held.get('r'))
    return snap


def test_cli(d, c, parent, snap):
    env = dict(os.environ, CLEARING_HOST=d.sock)
    r = subprocess.run([ct.CLEARING, 'snapshot', parent], env=env, capture_output=True,
                       text=True, timeout=300)
    sid = r.stdout.strip()
    check('clearing snapshot ID prints the new snapshot\'s id', r.returncode == 0
          and sid.startswith('snap-') and 'sha256' in r.stderr, (r.returncode, r.stdout, r.stderr))
    if sid.startswith('snap-'):
        call(c, 'DELETE', '/v1/sandboxes/%s/snapshots/%s' % (parent, sid))
    r = subprocess.run([ct.CLEARING, 'fork', snap['id']], env=env, capture_output=True, text=True,
                       timeout=300)
    fid = r.stdout.strip()
    check('clearing fork SNAPSHOT prints the new sandbox\'s id', r.returncode == 0
          and fid.startswith('sb-'), (r.returncode, r.stdout, r.stderr))
    if fid.startswith('sb-'):
        call(c, 'DELETE', '/v1/sandboxes/' + fid)
    r = subprocess.run([ct.CLEARING, 'fork', 'snap-0000000000000000'], env=env,
                       capture_output=True, text=True, timeout=60)
    check('clearing fork of no such snapshot fails naming it', r.returncode != 0
          and 'snap-0000000000000000' in r.stderr, (r.returncode, r.stderr))
    r = subprocess.run([ct.CLEARING, 'snapshot', 'nonsense'], env=env, capture_output=True,
                       text=True, timeout=60)
    check('clearing snapshot of a bad id is a usage error (2)', r.returncode == 2, r)


def test_many_forks(d, c, snap):
    made = []
    for _ in range(FORKS):
        sid, st, r = create(c, body={'snapshot': snap['id'], 'limits': {'memory': '256m'}})
        if not sid:
            check('fork %d created' % (len(made) + 1), False, (st, r))
            break
        made.append(sid)
    check('%d forks of one snapshot run side by side' % FORKS, len(made) == FORKS, len(made))
    seen = [sh(c, s, 'cat /workspace/w') for s in made]
    check('each fork answers, with the snapshot\'s workspace', all(x == 'parent-ws' for x in seen),
          seen)
    mems = []
    for s in made:
        st, r = call(c, 'GET', '/v1/sandboxes/' + s)
        mems.append(r.get('limits', {}).get('memory'))
    st, r = call(c, 'GET', '/v1/sandboxes/' + snap['sandbox'])
    pmem = r.get('limits', {}).get('memory')
    check('each fork has its own (tightened) limits', pmem != '256m'
          and all(m == '256m' for m in mems), (pmem, mems))
    st, r = call(c, 'POST', '/v1/sandboxes', {'snapshot': snap['id'], 'limits': {'memory': '16g'}})
    check('a fork that loosens a limit is refused (400, naming it)',
          st == 400 and 'limits.memory' in r['error']['message'], (st, r))
    # (waited for: a later test counts this daemon's containers)
    for s in made:
        call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % s)


def test_tenants(d, c, snap):
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots/%s' % (snap['sandbox'], snap['id']))
    check('the owner sees the snapshot (positive control)', st == 200, (st, r))
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots/%s' % (snap['sandbox'], snap['id']),
                 tenant='acme')
    check('another tenant gets 404 for it', st == 404, (st, r))
    st, r = call(c, 'POST', '/v1/sandboxes', {'snapshot': snap['id']}, tenant='acme')
    check('another tenant cannot fork it (404, as for no snapshot)', st == 404, (st, r))


def test_corrupt(d, c, snap):
    img = glob.glob(os.path.join(d.state, 'snapshots', snap['id'], 'checkpoint', '*'))
    if not check('the snapshot has checkpoint files (positive control)', img, img):
        return
    before = {x.get('Labels', {}).get('io.clearing.sandbox-id') for x in our_containers(d)}
    with open(img[0], 'r+b') as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xff]))
    st, r = call(c, 'POST', '/v1/sandboxes', {'snapshot': snap['id']})
    check('a fork of a corrupt snapshot is refused (409, naming the file)',
          st == 409 and 'sha256 differs' in r['error']['message'], (st, r))
    # No container of a sandbox that was not there before (a set of sandbox ids, not a count:
    # the engine's list of containers an earlier test is still removing is no fixed number).
    after = {x.get('Labels', {}).get('io.clearing.sandbox-id') for x in our_containers(d)}
    check('nothing was made of it', after <= before, (sorted(before), sorted(after)))
    with open(img[0], 'r+b') as f:
        f.truncate(50)
    st, r = call(c, 'POST', '/v1/sandboxes', {'snapshot': snap['id']})
    check('a truncated one too (409)', st == 409 and 'truncated' in r['error']['message'], (st, r))
    st, r = call(c, 'DELETE', '/v1/sandboxes/%s/snapshots/%s' % (snap['sandbox'], snap['id']))
    check('it can be deleted (204), and its files go', st == 204 and
          snap['id'] not in snapshot_dirs(d), (st, r, snapshot_dirs(d)))


def sandbox_containers(sid):
    """The engine's containers labelled as sandbox sid's, whoever owns them."""
    r = ct.docker('GET', '/containers/json?all=1')
    return [x for x in ct.decode(r.body)
            if x.get('Labels', {}).get('io.clearing.sandbox-id') == sid]


def audit_records(d, sid, action):
    with open(os.path.join(d.state, 'audit.log')) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if r.get('sandbox') == sid and r.get('action') == action]


def workspaces(d):
    w = os.path.join(d.state, 'workspaces')
    return sorted(os.listdir(w)) if os.path.isdir(w) else []


def restore(c, sid, body, tenant=None):
    return call(c, 'POST', '/v1/sandboxes/%s/restore' % sid, body, tenant)


def test_restore(d, c):
    sid, st, r = create(c)
    if not check('a sandbox to restore (positive control)', sid, (st, r)):
        return
    other, st, r = create(c)
    check('a second sandbox of the same tenant', other, (st, r))
    acme, st, r = create(c, tenant='acme')
    check('a sandbox of another tenant', acme, (st, r))
    # The snapshot before the first command: its workspace from the host.
    r = c.request('PUT', '/v1/sandboxes/%s/files/w' % sid, b'snap-ws\n',
                  headers={'Content-Type': 'application/octet-stream'})
    check('a file is written into its workspace from the host', r.status in (200, 201, 204),
          (r.status, r.body[:200]))
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('a snapshot of it is taken (201)', st == 201, (st, snap)):
        print(d.log_tail())
        return
    st, before_sb = call(c, 'GET', '/v1/sandboxes/' + sid)
    # After the snapshot: /workspace (host tmpfs) and /tmp (gVisor's memory) change.
    sh(c, sid, 'echo changed > /workspace/w; touch /workspace/new; echo after > /tmp/m')
    check('the changes after the snapshot are there (positive control)',
          sh(c, sid, 'cat /workspace/w /tmp/m; ls /workspace') == 'changed\nafter\nnew\nw',
          sh(c, sid, 'cat /workspace/w /tmp/m; ls /workspace'))

    # Refusals: each leaves the sandbox as it is.
    st, r = restore(c, sid, {})
    check('a restore without "snapshot" is 400 saying what to give',
          st == 400 and 'snapshot' in r['error']['message'], (st, r))
    st, r = restore(c, sid, {'snapshot': 'nonsense'})
    check('a restore naming no snapshot id is 400', st == 400
          and 'not a snapshot id' in r['error']['message'], (st, r))
    st, r = restore(c, sid, {'snapshot': snap['id'], 'limits': {}})
    check('a restore with another field is 400', st == 400, (st, r))
    st, r = restore(c, sid, {'snapshot': 'snap-0000000000000000'})
    check('a restore from an unknown snapshot is 404', st == 404, (st, r))
    if other:
        st, osnap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % other, {})
        check('a snapshot of the second sandbox (positive control)', st == 201, (st, osnap))
        st, r = restore(c, sid, {'snapshot': osnap.get('id', '')})
        check('a restore from another sandbox\'s snapshot is 400 naming it (fork it instead)',
              st == 400 and 'own snapshots' in r['error']['message'], (st, r))
        call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % other)
    if acme:
        st, asnap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % acme, {}, tenant='acme')
        check('a snapshot of the other tenant\'s sandbox (positive control)', st == 201,
              (st, asnap))
        st, r = restore(c, sid, {'snapshot': asnap.get('id', '')})
        check('a restore from another tenant\'s snapshot is 404, as no snapshot', st == 404,
              (st, r))
        st, r = restore(c, acme, {'snapshot': snap['id']}, tenant='acme')
        check('another tenant cannot restore from this tenant\'s snapshot (404)', st == 404,
              (st, r))
        st, r = restore(c, sid, {'snapshot': snap['id']}, tenant='acme')
        check('another tenant cannot restore this tenant\'s sandbox (404)', st == 404, (st, r))
        call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % acme, tenant='acme')
    check('the refused restores changed nothing',
          sh(c, sid, 'cat /workspace/w /tmp/m') == 'changed\nafter',
          sh(c, sid, 'cat /workspace/w /tmp/m'))

    # The restore itself.
    old = sandbox_containers(sid)
    check('the sandbox has one container before the restore (positive control)',
          len(old) == 1 and old[0]['State'] == 'running', old)
    ours_before = {x['Id'] for x in our_containers(d)}
    check('the daemon\'s containers are counted, the sandbox\'s among them (positive control)',
          old and old[0]['Id'] in ours_before, (old, ours_before))
    ws_before = set(workspaces(d))
    check('its workspace is listed (positive control)', sid in ws_before, ws_before)
    st, r = restore(c, sid, {'snapshot': snap['id']})
    if not check('the restore answers 200', st == 200, (st, r)):
        print(d.log_tail())
        return
    check('the sandbox keeps its id, runs, and says which snapshot',
          r.get('id') == sid and r.get('state') == 'running' and r.get('snapshot') == snap['id'],
          r)
    check('its lifetime and limits are the sandbox\'s own',
          r.get('expires_at') == before_sb.get('expires_at')
          and r.get('limits') == before_sb.get('limits'), (before_sb, r))
    check('/workspace is the snapshot\'s again (the later write and file are gone)',
          sh(c, sid, 'cat /workspace/w; ls /workspace') == 'snap-ws\nw',
          sh(c, sid, 'cat /workspace/w; ls /workspace'))
    check('/tmp (memory) is the snapshot\'s again (the later value is gone)',
          sh(c, sid, 'cat /tmp/m 2>/dev/null || echo none') == 'none',
          sh(c, sid, 'cat /tmp/m 2>&1'))
    new = sandbox_containers(sid)
    check('one running container, a new one, the old one removed',
          len(new) == 1 and new[0]['State'] == 'running' and new[0]['Id'] != old[0]['Id'],
          (old, new))
    ours_after = {x['Id'] for x in our_containers(d)}
    check('no container leaked: the daemon has the new one in place of the old one',
          ours_after - ours_before == {new[0]['Id'] if new else ''}
          and old[0]['Id'] not in ours_after, (ours_before, ours_after))
    check('no workspace leaked: the sandbox\'s is there, no other appeared',
          sid in workspaces(d) and not set(workspaces(d)) - ws_before,
          (ws_before, workspaces(d)))
    recs = [x for x in audit_records(d, sid, 'sandbox.restore') if x['outcome'] == 'ok']
    check('the restore is an audit record naming the snapshot',
          len(recs) == 1 and recs[0]['details'].get('snapshot') == snap['id'], recs)
    failures_before = len(audit_records(d, sid, 'sandbox.restore'))
    sh(c, sid, 'echo post > /workspace/w; echo post > /tmp/m')
    check('the restored sandbox works on (positive control for what follows)',
          sh(c, sid, 'cat /workspace/w /tmp/m') == 'post\npost', sh(c, sid, 'cat /workspace/w'))
    st, lst = call(c, 'GET', '/v1/sandboxes/%s/snapshots' % sid)
    check('its snapshots are still listed', st == 200
          and snap['id'] in [x['id'] for x in lst['snapshots']], (st, lst))
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots/%s' % (sid, snap['id']))
    check('the restore\'s hold on the snapshot is released: not held, and not kept, as it was '
          'taken', st == 200 and r['held'] is False and r['keep'] is False, (st, r))
    held = audit_records(d, sid, 'snapshot.hold')
    released = audit_records(d, sid, 'snapshot.release')
    check('the hold and its release are audit records (reasons restore, restored)',
          [x['details'].get('reason') for x in held] == ['restore']
          and [x['details'].get('reason') for x in released] == ['restored'], (held, released))

    # A tampered snapshot: refused before anything changes.
    img = glob.glob(os.path.join(d.state, 'snapshots', snap['id'], 'checkpoint', '*'))
    if check('the snapshot has checkpoint files (positive control)', img, img):
        with open(img[0], 'r+b') as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 0xff]))
        st, r = restore(c, sid, {'snapshot': snap['id']})
        check('a restore from a tampered snapshot is refused (409, naming the file)',
              st == 409 and 'sha256 differs' in r['error']['message'], (st, r))
        with open(img[0], 'r+b') as f:
            f.truncate(50)
        st, r = restore(c, sid, {'snapshot': snap['id']})
        check('a truncated one too (409)', st == 409 and 'truncated' in r['error']['message'],
              (st, r))
        check('the sandbox is unchanged: the same container, still running',
              [(x['Id'], x['State']) for x in sandbox_containers(sid)]
              == [(new[0]['Id'], 'running')], sandbox_containers(sid))
        check('and its workspace and memory as they were',
              sh(c, sid, 'cat /workspace/w /tmp/m') == 'post\npost',
              sh(c, sid, 'cat /workspace/w /tmp/m'))
        st, r = call(c, 'GET', '/v1/sandboxes/' + sid)
        check('it is still running', st == 200 and r['state'] == 'running', (st, r))
        recs = audit_records(d, sid, 'sandbox.restore')
        check('the two refusals are audit records too',
              len(recs) == failures_before + 2
              and all(x['outcome'] != 'ok' for x in recs[failures_before:]), recs)

    # The command line, and a sandbox that is not running.
    env = dict(os.environ, CLEARING_HOST=d.sock)
    r = subprocess.run([ct.CLEARING, 'restore', sid], env=env, capture_output=True, text=True,
                       timeout=60)
    check('clearing restore without a snapshot is a usage error (2)', r.returncode == 2, r)
    r = subprocess.run([ct.CLEARING, 'restore', sid, 'snap-0000000000000000'], env=env,
                       capture_output=True, text=True, timeout=60)
    check('clearing restore from no such snapshot fails naming it', r.returncode != 0
          and 'snap-0000000000000000' in r.stderr, (r.returncode, r.stderr))
    call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % sid)
    st, r = restore(c, sid, {'snapshot': snap['id']})
    check('a destroyed sandbox is not restored (409, as for other operations)',
          st == 409 and 'not running' in r['error']['message'], (st, r))
    check('nothing of it is left in the engine', not sandbox_containers(sid),
          sandbox_containers(sid))


CODE_IMAGE = 'clearing/python:latest'  # a Jupyter kernel (the code interpreter, #21)


def cell(c, sid, code):
    st, a = call(c, 'POST', '/v1/sandboxes/%s/code' % sid, {'code': code, 'timeout': '120s'},
                 timeout=400)
    return a if st == 200 else {'http': st, 'answer': a}


def cell_text(a):
    return ((a or {}).get('result') or {}).get('text/plain')


def kernels(c, sid):
    """How many Jupyter kernel processes run in the sandbox (-1: the exec failed). The pattern
    is written so that it does not match the counting shell's own command line."""
    out = sh(c, sid, 'n=0; for f in /proc/[0-9]*/cmdline; do tr "\\0" " " <"$f" 2>/dev/null | '
                     'grep -q "ipykernel[_]launcher" && n=$((n+1)); done; echo $n')
    return int(out) if out and out.isdigit() else -1


def test_code_session(d, c):
    """A code session's kernel comes back with its snapshot: a fork continues the kernel's
    variables and execution count (one kernel, its own), the parent and the fork do not see
    each other's assignments, a restore in place takes the kernel back to the snapshot's (its
    next cell says so), and a restore to a snapshot taken before the session ends the kernel
    that ran (its next cell is in a fresh one, and says so)."""
    parent, st, r = create(c, body={'image': CODE_IMAGE})
    if not check('a sandbox of the python image for a code session', parent, (st, r)):
        return
    st, s0 = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {})
    check('a snapshot before any cell, with no code session in it', st == 201 and
          s0.get('code_session') is False, (st, s0))
    a = cell(c, parent, 'x = 41')
    check('a cell runs (positive control)', a.get('status') == 'ok', a)
    a = cell(c, parent, 'x')
    check('the kernel keeps its state across cells (positive control)',
          cell_text(a) == '41' and a.get('execution_count') == 2, a)
    # A past the fork must read past: the agent replays the bridge's newest 256-512 KiB of
    # output (old answers, the first cut anywhere), more answers than the daemon would queue
    # unasked.
    for i in range(4):
        a = cell(c, parent, 'print("y" * 600000)' if i == 1 else 'x')
    check('more cells run, one printing 600 KB (positive control)',
          a.get('execution_count') == 6 and cell_text(a) == '41', a)
    st, s1 = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {})
    check('a snapshot taken while the kernel runs is restorable and has the code session',
          st == 201 and s1.get('restorable') is True and s1.get('code_session') is True and
          s1.get('processes') == 0, (st, s1))
    if st != 201:
        return
    fork, st, r = create(c, body={'snapshot': s1['id']})
    check('a fork of it is created', fork, (st, r))
    if fork:
        a = cell(c, fork, 'x + 1')
        check('the fork continues the snapshot\'s kernel: its variable and its execution count',
              cell_text(a) == '42' and a.get('execution_count') == 7 and not a.get('restarted'),
              a)
        check('the fork runs one kernel: the snapshot\'s, taken over (none started beside it)',
              kernels(c, fork) == 1, kernels(c, fork))
        a = cell(c, fork, 'x = 100')
        check('the fork assigns its own value', a.get('status') == 'ok', a)
        recs = audit_records(d, fork, 'code.adopt')
        check('the fork\'s taking over of the kernel is recorded, naming the snapshot',
              len(recs) == 1 and (recs[0].get('details') or {}).get('snapshot') == s1['id'],
              recs)
    a = cell(c, parent, 'x')
    check('the parent does not see the fork\'s assignment', cell_text(a) == '41', a)
    a = cell(c, parent, 'x = 7')
    check('the parent assigns after the snapshot', a.get('status') == 'ok', a)
    st, r = restore(c, parent, {'snapshot': s1['id']})
    check('the parent is restored to the snapshot with the kernel', st == 200, (st, r))
    a = cell(c, parent, 'x')
    check('after the restore the kernel is the snapshot\'s, and the cell says it was restored',
          cell_text(a) == '41' and a.get('restarted') is True and
          'restored to snapshot ' + s1['id'] in (a.get('message') or ''), a)
    check('the restored sandbox runs one kernel', kernels(c, parent) == 1, kernels(c, parent))
    a = cell(c, parent, 'x')
    check('the notice is said once', cell_text(a) == '41' and not a.get('restarted'), a)
    st, r = restore(c, parent, {'snapshot': s0['id']})
    check('the parent is restored to the snapshot taken before its session', st == 200, (st, r))
    a = cell(c, parent, 'x')
    check('its next cell runs in a fresh kernel, and says why',
          (a.get('error') or {}).get('name') == 'NameError' and a.get('restarted') is True and
          'had no code session' in (a.get('message') or ''), a)
    check('one kernel runs after it (the old one did not come back)', kernels(c, parent) == 1,
          kernels(c, parent))
    test_code_cell_in_flight(d, c, parent)
    for sid in (fork, parent):
        if sid:
            call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % sid)


def test_code_cell_in_flight(d, c, parent):
    """A cell running when the snapshot is taken (held at a gate file) runs on in the fork once
    the fork opens its gate: its answer goes to nobody, and the fork's first cell is answered
    with its own result, after it (it sees what the old cell assigned); the parent's cell is
    answered in the parent."""
    sh(c, parent, 'rm -f /tmp/go /tmp/started')
    held = []
    code = ('import os, time\nopen("/tmp/started", "w").close()\n'
            'while not os.path.exists("/tmp/go"):\n    time.sleep(0.05)\nz = 11')
    t = threading.Thread(target=lambda: held.append(cell(c, parent, code)))
    t.start()
    started = wait_for(lambda: sh(c, parent, 'test -e /tmp/started && echo yes') == 'yes', 120)
    check('in flight: the parent\'s cell runs, held at its gate (positive control)', started)
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {})
    check('in flight: a snapshot with the cell running', st == 201 and
          snap.get('code_session') is True, (st, snap))
    sh(c, parent, 'touch /tmp/go')
    t.join(400)
    check('in flight: the parent\'s cell is answered in the parent',
          held and held[0].get('status') == 'ok', held)
    fork, st, r = create(c, body={'snapshot': snap.get('id')}) if st == 201 else (None, st, snap)
    if not check('in flight: a fork of it', fork, (st, r)):
        return
    check('in flight: the old cell is still held in the fork (its gate is not there)',
          sh(c, fork, 'test -e /tmp/go && echo open || echo closed') == 'closed')
    first = []
    t = threading.Thread(target=lambda: first.append(cell(c, fork, 'z')))
    t.start()
    sh(c, fork, 'touch /tmp/go')
    t.join(400)
    a = first[0] if first else {}
    check('in flight: the fork\'s first cell gets its own answer, after the old cell ran on',
          cell_text(a) == '11' and a.get('status') == 'ok', a)
    check('in flight: one kernel in the fork', kernels(c, fork) == 1, kernels(c, fork))
    call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % fork)


def test_code_adopt_refused(d, c):
    """A fork whose tenant has no room for another kernel (max_code_sessions 1 for tenant solo,
    held by the parent's) does not take the snapshot's kernel over: the refusal is recorded, the
    kernel is killed in the fork (never left running unlisted and uncounted), and once there is
    room the fork's first cell runs in a fresh kernel and says the snapshot's could not be
    taken over."""
    t = 'solo'
    parent, st, r = create(c, tenant=t, body={'image': CODE_IMAGE})
    if not check('refused adoption: a sandbox of tenant solo', parent, (st, r)):
        return
    st, a = call(c, 'POST', '/v1/sandboxes/%s/code' % parent, {'code': 'x = 5'}, t, timeout=400)
    check('refused adoption: the parent\'s kernel runs (positive control)',
          st == 200 and a.get('status') == 'ok', (st, a))
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % parent, {}, t)
    check('refused adoption: a snapshot with the code session', st == 201 and
          snap.get('code_session') is True, (st, snap))
    fork, st, r = create(c, tenant=t, body={'snapshot': snap.get('id')})
    check('refused adoption: the fork is made all the same', fork, (st, r))
    if fork:
        recs = audit_records(d, fork, 'code.adopt')
        check('the adoption is refused and recorded as such (the tenant\'s quota)',
              len(recs) == 1 and recs[0].get('outcome') == 'refused' and
              'max_code_sessions' in json.dumps(recs[0]), recs)
        check('the parent still runs its kernel (the control of the count below)',
              kernels(c, parent) == 1, kernels(c, parent))
        check('the snapshot\'s kernel was killed in the fork, not left running',
              wait_for(lambda: kernels(c, fork) == 0), kernels(c, fork))
        st, a = call(c, 'POST', '/v1/sandboxes/%s/code' % fork, {'code': 'x'}, t, timeout=400)
        check('the fork\'s cell is refused while the parent holds the quota', st == 429, (st, a))
        st, r = call(c, 'DELETE', '/v1/sandboxes/%s/code' % parent, None, t)
        check('the parent\'s session is ended', st == 204, (st, r))
        st, a = call(c, 'POST', '/v1/sandboxes/%s/code' % fork, {'code': 'x'}, t, timeout=400)
        check('then the fork\'s cell runs in a fresh kernel, saying the snapshot\'s was not '
              'taken over', st == 200 and (a.get('error') or {}).get('name') == 'NameError' and
              a.get('restarted') is True and 'could not be taken over' in (a.get('message') or ''),
              (st, a))
    for sid in (fork, parent):
        if sid:
            call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % sid, None, t)


def test_attach_during_restore(d, c):
    """Commands keep coming while a restore in place swaps the sandbox's container: one may
    attach the new container's live channel before the swap records it. The row's attached
    mark names the container, so the swap keeps it; a snapshot taken after those commands is
    then refused for a restore (409, attached) instead of being accepted and failing in runsc
    after the old container was removed (502, the sandbox destroyed). A snapshot the daemon does
    accept must restore (the channel fell back to docker exec)."""
    sid, st, r = create(c)
    if not check('attach race: a sandbox (positive control)', sid, (st, r)):
        return
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('attach race: a snapshot before its first command (201)', st == 201,
                 (st, snap)):
        return
    done = threading.Event()
    ran = []

    def hammer():
        while not done.is_set():
            try:
                st, r = call(c, 'POST', '/v1/sandboxes/%s/exec' % sid,
                             {'argv': ['true'], 'timeout': '60s'}, timeout=120)
            except OSError:
                continue
            ran.append(st)
    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    # Commands are coming before the restore begins, and go on after it answered: conditions
    # waited for, not a guess at how many fit in how long. (A command before the restore
    # attaches the old container: the snapshot, taken before it, is not attached and restores.)
    check('attach race: commands run before the restore (positive control)',
          wait_for(lambda: 200 in ran, 120), ran[-20:])
    st, r = restore(c, sid, {'snapshot': snap['id']})
    after = len(ran)
    check('attach race: the restore answers 200 while commands come', st == 200, (st, r))
    check('attach race: commands run on after it answered (positive control)',
          wait_for(lambda: 200 in ran[after:], 120), ran[after:][-20:])
    done.set()
    t.join(180)
    # A command after the restore for certain: it attaches the new container (or docker exec).
    check('attach race: the restored sandbox runs a command', sh(c, sid, 'echo ok') == 'ok',
          sh(c, sid, 'echo ok'))
    st, later = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('attach race: a snapshot after those commands (201)', st == 201, (st, later)):
        return
    st, r = restore(c, sid, {'snapshot': later['id']})
    check('attach race: its restore is refused as attached (409), or restores (200); never '
          'accepted and failed with the sandbox destroyed',
          (st == 409 and 'attached' in r['error']['message']) or st == 200, (st, r))
    st, r = call(c, 'GET', '/v1/sandboxes/' + sid)
    check('attach race: the sandbox still runs', st == 200 and r['state'] == 'running', (st, r))
    call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % sid)


def garble_verified(d, snap):
    """Zeroes the snapshot's checkpoint state (the largest file if there is no checkpoint.img)
    and re-records it as whole (its manifest entry, the manifest's sha256 in the snapshot's
    row): a snapshot that passes the daemon's verification but that the runtime cannot restore,
    so the restore fails after the old container was removed. The file's name, or None."""
    root = os.path.join(d.state, 'snapshots', snap['id'])
    imgs = [x for x in glob.glob(os.path.join(root, 'checkpoint', '**'), recursive=True)
            if os.path.isfile(x)]
    if not imgs:
        return None
    named = [x for x in imgs if os.path.basename(x) == 'checkpoint.img']
    img = named[0] if named else max(imgs, key=os.path.getsize)
    size = os.path.getsize(img)
    with open(img, 'r+b') as f:
        f.write(b'\0' * size)
    with open(os.path.join(root, 'manifest.json')) as f:
        m = json.load(f)
    rel = os.path.relpath(img, root)
    m['files'][rel]['sha256'] = hashlib.sha256(b'\0' * size).hexdigest()
    text = json.dumps(m, separators=(',', ':'), sort_keys=True).encode()
    with open(os.path.join(root, 'manifest.json'), 'wb') as f:
        f.write(text)
    db = sqlite3.connect(os.path.join(d.state, 'clearing.db'), timeout=60)
    try:
        db.execute('UPDATE snapshots SET sha256 = ? WHERE id = ?',
                   (hashlib.sha256(text).hexdigest(), snap['id']))
        db.commit()
    finally:
        db.close()
    return rel


def test_failed_restore(d, c):
    """A restore the runtime refuses after the old container was removed destroys the sandbox
    (restore-failed) but keeps the snapshot: held (audited) apart from its keep, it survives the
    sweep and a restart's recovery (its sandbox does not run: the hold stays) and can be forked
    or deleted. Returns the client (the daemon restarts)."""
    sid, st, r = create(c)
    if not check('a sandbox whose restore will fail (positive control)', sid, (st, r)):
        return c
    r = c.request('PUT', '/v1/sandboxes/%s/files/w' % sid, b'kept-ws\n',
                  headers={'Content-Type': 'application/octet-stream'})
    check('a file is written into its workspace from the host', r.status in (200, 201, 204),
          (r.status, r.body[:200]))
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('a snapshot of it is taken (201), not kept', st == 201 and not snap['keep'],
                 (st, snap)):
        return c
    rel = garble_verified(d, snap)
    if not check('its checkpoint is garbled and re-recorded as whole (positive control)', rel,
                 snapshot_dirs(d)):
        return c
    st, r = restore(c, sid, {'snapshot': snap['id']})
    check('the restore passes verification and fails in the runtime (502, the sandbox '
          'destroyed)', st == 502 and 'destroyed' in r['error']['message'], (st, r))
    st, r = call(c, 'GET', '/v1/sandboxes/' + sid)
    check('the sandbox is destroyed, reason restore-failed', st == 200
          and r['state'] == 'destroyed' and r.get('destroy_reason') == 'restore-failed', (st, r))
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots/%s' % (sid, snap['id']))
    check('the snapshot is still there, held (its keep as it was taken: false)', st == 200
          and r['held'] is True and r['keep'] is False, (st, r))
    recs = audit_records(d, sid, 'snapshot.hold')
    check('it was held before the old container went: an audit record naming the '
          'snapshot and why', len(recs) == 1 and recs[0]['details'].get('snapshot') == snap['id']
          and recs[0]['details'].get('reason') == 'restore', recs)
    check('and the hold was not released (the restore cost the sandbox)',
          not audit_records(d, sid, 'snapshot.release'), audit_records(d, sid, 'snapshot.release'))
    # The daemon's start sweeps snapshots once: a destroyed sandbox's are removed unless kept
    # or held.
    d.stop()
    d.start()
    c = d.client()
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots' % sid)
    check('after a restart (a sweep) the snapshot is still listed, its files there', st == 200
          and [x['id'] for x in r['snapshots']] == [snap['id']]
          and snap['id'] in snapshot_dirs(d), (st, r, snapshot_dirs(d)))
    check('and still held: the restart\'s recovery does not release the hold of a destroyed '
          'sandbox', st == 200 and r['snapshots'] and r['snapshots'][0].get('held') is True
          and not audit_records(d, sid, 'snapshot.release'), (st, r))
    st, r = call(c, 'DELETE', '/v1/sandboxes/%s/snapshots/%s' % (sid, snap['id']))
    check('it can be deleted (204), and its files go', st == 204
          and snap['id'] not in snapshot_dirs(d), (st, r, snapshot_dirs(d)))
    check('nothing of the sandbox is left in the engine', not sandbox_containers(sid),
          sandbox_containers(sid))
    return c


def test_kill9(d, c):
    sid, st, r = create(c)
    if not check('a sandbox for the kill -9 tests', sid, (st, r)):
        return
    # The snapshot the fork below starts from (no docker exec runs in the sandbox: restorable).
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('a snapshot for the fork kill (positive control)', st == 201, (st, snap)):
        return
    # A snapshot with the daemon killed while it runs: its directory appears, then -9. Of a
    # sandbox of its own, its container's first checkpoint: this engine can refuse a second
    # checkpoint of one container (docs/OPERATIONS.md), and then no directory would appear.
    sid2, st, r = create(c)
    if not check('a sandbox for the kill mid-snapshot', sid2, (st, r)):
        return
    t = threading.Thread(target=call_dropped, daemon=True,
                         args=(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid2, {}))
    base = set(snapshot_dirs(d))
    t.start()
    seen = wait_for(lambda: set(snapshot_dirs(d)) - base, 60)
    d.kill9()
    check('the snapshot had begun when the daemon was killed (positive control)', seen, seen)
    d.start()
    rows = []
    for one in (sid, sid2):
        st, lst = call(c, 'GET', '/v1/sandboxes/%s/snapshots' % one)
        rows += [s['id'] for s in lst.get('snapshots', [])]
    left = [x for x in snapshot_dirs(d) if x not in rows and x not in base]
    check('after the restart no half-made snapshot is left (no directory without a row)',
          not left, (left, rows))
    # A fork with the daemon killed while it is made.
    before = {x['Id'] for x in our_containers(d)}
    t = threading.Thread(target=call_dropped, daemon=True,
                         args=(c, 'POST', '/v1/sandboxes', {'snapshot': snap['id']}))
    t.start()
    seen = wait_for(lambda: {x['Id'] for x in our_containers(d)} - before, 60)
    d.kill9()
    check('the fork\'s container existed when the daemon was killed (positive control)', seen, seen)
    d.start()
    st, lst = call(c, 'GET', '/v1/sandboxes?state=running')
    live = {s['id'] for s in lst.get('sandboxes', [])}

    def settled():
        names = {x['Names'][0].lstrip('/')[len('clearing-'):] for x in our_containers(d)}
        return all(nm in live for nm in names)
    ok = wait_for(settled, 90)
    check('after the restart every container of the daemon is a running sandbox of its rows '
          '(the half-made fork is removed or adopted whole)', ok,
          ([x['Names'] for x in our_containers(d)], live))
    for s in live:
        call(c, 'DELETE', '/v1/sandboxes/' + s)


def snapshot_held_in_db(d, snap_id):
    """Whether the state database has snapshot snap_id held by a restore (read beside the
    running daemon)."""
    try:
        db = sqlite3.connect('file:%s?mode=ro' % os.path.join(d.state, 'clearing.db'), uri=True,
                             timeout=60)
        try:
            row = db.execute('SELECT held FROM snapshots WHERE id = ?', (snap_id,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return bool(row and row[0])


def test_kill9_restore(d, c):
    """A daemon killed with -9 in the middle of a restore in place does not lose the snapshot:
    the restore marks it held in the store before the old container is removed. The kill comes
    with the removal held; the old container is then removed behind the dead daemon's back, as
    if the removal had gone through (the case the hold is for: no container of the sandbox runs
    at the restart). After the restart the sandbox is lost and its snapshot listed, whole and
    still held (recovery releases only the hold of a sandbox that runs again), not kept; it
    survives the sandbox's destruction and a restart's sweep, and a fork from it works. A
    snapshot that is not kept, of another destroyed sandbox, is removed by that sweep (positive
    control that the sweep ran). (A sandbox that runs again at the restart has its hold released
    by recovery: unit test test_recover_releases_hold_of_running_sandbox.)

    The daemon talks to the engine through a relay (test_api.EngineProxy) that holds the old
    container's removal: after the hold is recorded the restore only looks at the container
    (inspect) before it asks for that removal, its first change in the engine (lifecycle.c:
    hold_snapshot, then restore_swap's clr_sandbox_destroy). At the kill the restore is provably
    past the hold and provably before the removal, however fast or slow the host.
    Returns the client (the daemon restarts)."""
    proxy = T.EngineProxy(os.path.join(d.dir, 'engine.sock'))
    d.stop()
    d.extra_env['CLEARING_DOCKER_HOST'] = 'unix://' + proxy.path
    try:
        d.start()
        return kill9_restore(d, d.client(), proxy)
    finally:
        proxy.close()  # a request still held (a failure above) is dropped
        if d.extra_env.pop('CLEARING_DOCKER_HOST', None) is not None:
            d.stop()   # back on the engine itself, for the tests that follow
            d.start()


def kill9_restore(d, c, proxy):
    sid, st, r = create(c)
    if not check('kill mid-restore: a sandbox (positive control)', sid, (st, r)):
        return c
    r = c.request('PUT', '/v1/sandboxes/%s/files/w' % sid, b'held-ws\n',
                  headers={'Content-Type': 'application/octet-stream'})
    check('kill mid-restore: a file in its workspace', r.status in (200, 201, 204),
          (r.status, r.body[:200]))
    st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
    if not check('kill mid-restore: a snapshot, not kept (201)', st == 201 and not snap['keep'],
                 (st, snap)):
        return c
    ctl, st, r = create(c)
    st, ctl_snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % ctl, {}) if ctl else (0, {})
    check('kill mid-restore: a control sandbox and its snapshot, not kept', ctl and st == 201,
          (st, ctl_snap))
    old = [x['Id'] for x in sandbox_containers(sid)]
    check('kill mid-restore: the sandbox has one container (positive control)', len(old) == 1,
          old)
    answered = []

    def restore_dropped():
        try:
            answered.append(restore(c, sid, {'snapshot': snap['id']}))
        except OSError:
            pass
    proxy.hold_removal_of(sid)
    t = threading.Thread(target=restore_dropped, daemon=True)
    t.start()
    if not check('kill mid-restore: the restore\'s removal of the old container reached the '
                 'relay (held there)', proxy.held.wait(120), d.log_tail()):
        return c
    held = snapshot_held_in_db(d, snap['id'])
    recs = audit_records(d, sid, 'snapshot.hold')
    check('kill mid-restore: with the removal held, the snapshot is held in the store and the '
          'hold audited (reason restore)', held
          and [x['details'].get('reason') for x in recs] == ['restore'], (held, recs))
    d.kill9()
    proxy.drop_held()
    check('kill mid-restore: the restore had not answered at the kill (positive control)',
          not answered, answered)
    check('kill mid-restore: the engine never saw the removal: the old container is there',
          [x['Id'] for x in sandbox_containers(sid)] == old, (old, sandbox_containers(sid)))
    # The removal goes through behind the dead daemon's back: no container of it at the start.
    for cid in old:
        ct.docker('DELETE', '/containers/%s?force=1' % cid)
    check('kill mid-restore: the old container is removed (as the restore would have)',
          wait_for(lambda: not sandbox_containers(sid), 120), sandbox_containers(sid))
    # The restart talks to dockerd directly: the relay would drop the removals that follow.
    del d.extra_env['CLEARING_DOCKER_HOST']
    d.start()
    c = d.client()
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots/%s' % (sid, snap['id']))
    check('kill mid-restore: after the restart the snapshot is listed, held, not kept, its '
          'files there', st == 200 and r.get('held') is True and r.get('keep') is False
          and snap['id'] in snapshot_dirs(d), (st, r, snapshot_dirs(d)))
    st, r = call(c, 'GET', '/v1/sandboxes/' + sid)
    check('kill mid-restore: the sandbox is lost (no container of it ran at the start)',
          st == 200 and r['state'] == 'lost', (st, r))
    recs = audit_records(d, sid, 'snapshot.hold')
    check('kill mid-restore: the hold is an audit record (reason restore), not released by '
          'recovery (its sandbox does not run)',
          [x['details'].get('reason') for x in recs] == ['restore']
          and not audit_records(d, sid, 'snapshot.release'), recs)
    call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % sid)
    if ctl:
        call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % ctl)
    d.stop()
    d.start()
    c = d.client()
    st, r = call(c, 'GET', '/v1/sandboxes/%s/snapshots' % sid)
    check('kill mid-restore: with the sandbox destroyed and a restart\'s sweep, the held '
          'snapshot stays', st == 200 and [x['id'] for x in r['snapshots']] == [snap['id']]
          and snap['id'] in snapshot_dirs(d), (st, r, snapshot_dirs(d)))
    if ctl_snap.get('id'):
        check('kill mid-restore: the control\'s snapshot, not kept, was swept (positive control)',
              ctl_snap['id'] not in snapshot_dirs(d), snapshot_dirs(d))
    fork, st, r = create(c, body={'snapshot': snap['id']})
    check('kill mid-restore: a fork from the held snapshot starts (201)', fork, (st, r))
    if fork:
        check('kill mid-restore: the fork has the snapshot\'s workspace',
              sh(c, fork, 'cat /workspace/w') == 'held-ws', sh(c, fork, 'cat /workspace/w'))
        call(c, 'DELETE', '/v1/sandboxes/%s?wait=1' % fork)
    call(c, 'DELETE', '/v1/sandboxes/%s/snapshots/%s' % (sid, snap['id']))
    return c


ENGINE_LIST = rb'^/v[0-9.]+/containers/json'  # a reconcile pass's look at the engine


def test_reconcile_during_snapshots():
    """A daemon whose reconcile pass runs all the time (reaper every 20 ms, reconcile every
    pass), talking to the engine through a relay (test_api.EngineProxy) that counts the passes'
    looks (each lists the containers) and can hold one: snapshots under constant passes, and a
    restore in place that begins while a pass is looking, never get a sandbox marked lost.

    The restore is made to meet a pass, not left to chance: the relay holds a pass's look (the
    pass holds the snapshot gate for reading meanwhile), the restore starts, and once its hold
    on the snapshot is audited it is at its swap, which must wait for that pass to act on what
    it saw: the old container is provably still there when the test lets the look go on, and
    the sandbox runs on. Positive controls: passes look before, between and after (counted); a
    container killed behind the daemon's back is marked lost by the same daemon."""
    d = ct.Daemon('snap-reconcile', prefix='clr-snap-')
    config = os.path.join(d.dir, 'serve.json')
    with open(config, 'w') as f:
        json.dump({'reaper_interval_ms': 20, 'reconcile_interval_ms': 1}, f)
    d.args = ['--config', config]
    proxy = T.EngineProxy(os.path.join(d.dir, 'engine.sock'))
    d.extra_env['CLEARING_DOCKER_HOST'] = 'unix://' + proxy.path
    sids = []

    def passes_look(more=3):
        """Waits until the passes have looked at the engine more times again."""
        base = proxy.count(b'GET', ENGINE_LIST)
        return wait_for(lambda: proxy.count(b'GET', ENGINE_LIST) >= base + more, 120)

    def hold_audited(sid):
        try:
            return audit_records(d, sid, 'snapshot.hold')
        except ValueError:  # a record being written: the next look reads it whole
            return []
    try:
        d.start()
        c = d.client()
        for _ in range(3):
            sid, st, r = create(c)
            if not check('reconcile race: a sandbox (positive control)', sid, (st, r)):
                return
            sids.append(sid)
        # The pass leaves rows younger than 5 s alone: the snapshots come after that.
        st, r = call(c, 'GET', '/v1/sandboxes/' + sids[-1])
        born = r.get('created_at', 0) if st == 200 else 0
        wait_for(lambda: time.time() - born >= 7, 60)
        check('reconcile race: the sandboxes are old enough for the pass to judge them',
              born and time.time() - born >= 7, born)
        check('reconcile race: passes look at the engine (positive control: their list '
              'requests, counted at the relay)', passes_look(), proxy.count(b'GET', ENGINE_LIST))
        snaps = {}
        for sid in sids:
            st, snap = call(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {})
            check('reconcile race: a snapshot under constant reconcile passes (201)', st == 201,
                  (st, snap))
            snaps[sid] = snap.get('id')
        check('reconcile race: passes look again after the snapshots', passes_look(),
              proxy.count(b'GET', ENGINE_LIST))
        # A restore that begins while a pass looks (its look held at the relay).
        old = [x['Id'] for x in sandbox_containers(sids[0])]
        check('reconcile race: the restored sandbox has one container (positive control)',
              len(old) == 1, old)
        proxy.hold_requests(b'GET', ENGINE_LIST)
        if not check('reconcile race: a pass\'s look is held at the relay', proxy.held.wait(120),
                     d.log_tail()):
            return
        answered = []
        t = threading.Thread(target=lambda: answered.append(
            restore(c, sids[0], {'snapshot': snaps[sids[0]] or ''})), daemon=True)
        t.start()
        # Within the held look's engine deadline (30 s): the restore's steps up to its hold are
        # a few engine requests and a database write.
        check('reconcile race: the restore is at its swap (its hold on the snapshot audited) '
              'while the pass looks', wait_for(lambda: hold_audited(sids[0]), 20),
              d.log_tail())
        check('reconcile race: the swap waits for the pass: the old container is still there '
              'and the restore has not answered',
              [x['Id'] for x in sandbox_containers(sids[0])] == old and not answered,
              (old, sandbox_containers(sids[0]), answered))
        proxy.pass_held()
        t.join(180)
        st, r = answered[0] if answered else (0, 'no answer')
        check('reconcile race: the restore then answers 200', st == 200, (st, r))
        new = [x['Id'] for x in sandbox_containers(sids[0])]
        check('reconcile race: the sandbox runs on a new container',
              len(new) == 1 and new != old, (old, new))
        check('reconcile race: passes look again after the restore', passes_look(),
              proxy.count(b'GET', ENGINE_LIST))
        states = {}
        for sid in sids:
            st, r = call(c, 'GET', '/v1/sandboxes/' + sid)
            states[sid] = r.get('state') if st == 200 else st
        check('reconcile race: every sandbox still runs, none marked lost',
              all(v == 'running' for v in states.values()), (states, d.log_tail()))
        lost = [x for sid in sids for x in audit_records(d, sid, 'sandbox.lost')]
        check('reconcile race: no sandbox.lost record', not lost, lost)
        # Positive control: a death the passes must see.
        victim = sandbox_containers(sids[1])
        if check('reconcile race: the victim\'s container (positive control)', victim, victim):
            ct.docker('POST', '/containers/%s/kill' % victim[0]['Id'])

            def is_lost():
                st, r = call(c, 'GET', '/v1/sandboxes/' + sids[1])
                return st == 200 and r['state'] == 'lost'
            check('reconcile race: a container killed behind the daemon\'s back is lost',
                  wait_for(is_lost, 120), d.log_tail())
    finally:
        proxy.pass_held()  # a look still held (a failure above) goes on
        if d.running():
            for sid in sids:
                call(d.client(), 'DELETE', '/v1/sandboxes/%s?wait=1' % sid)
        d.stop()
        proxy.close()
        if not failed:
            shutil.rmtree(d.dir, ignore_errors=True)


def main():
    ct.CLEARING = sys.argv[1]
    ct.check_answers()
    d = ct.Daemon('snapshots', prefix='clr-snap-')
    config = os.path.join(d.dir, 'serve.json')
    with open(config, 'w') as f:  # a tenant with room for one kernel (test_code_adopt_refused)
        json.dump({'tenants': {'solo': {'max_code_sessions': 1}}}, f)
    d.args = ['--config', config]
    try:
        d.start()
        c = d.client()
        snap = test_fork_and_isolation(d, c)
        if snap:
            test_many_forks(d, c, snap)
            test_tenants(d, c, snap)
            test_corrupt(d, c, snap)
        test_restore(d, c)
        test_code_session(d, c)
        test_code_adopt_refused(d, c)
        test_attach_during_restore(d, c)
        c = test_failed_restore(d, c)
        test_kill9(d, c)
        c = test_kill9_restore(d, c) or c
        test_reconcile_during_snapshots()
    finally:
        d.ensure_running()
        st, lst = call(d.client(), 'GET', '/v1/sandboxes') if d.running() else (0, {})
        for s in lst.get('sandboxes', []):  # running and lost ones alike
            if s['state'] != 'destroyed':
                call(d.client(), 'DELETE', '/v1/sandboxes/' + s['id'] + '?wait=1')
        d.stop()
    print('1..%d' % n)
    if failed:
        print('# daemon log:\n# ' + d.log_tail(60).replace('\n', '\n# '))
    else:
        shutil.rmtree(d.dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
