#!/usr/bin/env python3
"""Exec latency: a quick command through the daemon's API over the live channel, next to a raw
`docker exec` (create + start, attached) of the same command in a plain runsc container of the
same image, and next to the floor: /bin/true spawned from inside the same sandbox (fork, exec,
wait, in a loop), all in one run, interleaved round by round (the machine is noisy). Also the
start of a background process (POST .../processes of `true` until its 201), which goes over the
same channel.

    bench/bench_exec.py PATH/TO/clearing [--rounds N] [--json]

The target (issue #15): the API's p50 at most max(0.2 x raw docker exec, floor + 3 ms). With a
clearing built with -Dtrace=true, each result carries the stamps of its steps and the report adds
where the time goes (docs/PERFORMANCE.md).

Needs root and a running dockerd with runsc. Everything it creates is removed at the end."""
import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402
from clearing_test import call  # noqa: E402

# Spawns /bin/true N times from inside the sandbox and prints, per spawn, the ms of a fork +
# execv + waitpid (the floor issue #15 defines) and of a posix_spawn + waitpid (glibc's vfork-like
# clone, the way the agent starts a command): what an exec through the daemon cannot go below.
FLOOR = """
import os, sys, time
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execv('/bin/true', ['true'])
    os.waitpid(pid, 0)
    t1 = time.perf_counter()
    os.waitpid(os.posix_spawn('/bin/true', ['true'], {}), 0)
    print('%.3f %.3f' % ((t1 - t) * 1000, (time.perf_counter() - t1) * 1000))
"""

# The steps of a traced exec (wall-clock stamps, us), in order, and what lies between each two.
STEPS = (('daemon_rx', 'audited', 'daemon: parse, audit exec.start (fsync)'),
         ('audited', 'sent', 'daemon: frame to the channel'),
         ('sent', 'agent_rx', 'attach stream, PID 1 relay, supervisor wake-up'),
         ('agent_rx', 'spawn', 'supervisor: pipes, environment'),
         ('spawn', 'spawned', 'vfork + execve of the command'),
         ('spawned', 'exited', 'the command runs and exits'),
         ('exited', 'agent_tx', 'supervisor: tree kill, drain, result'),
         ('agent_tx', 'waited', 'PID 1 relay, attach stream, daemon wake-up'),
         ('waited', 'done', 'daemon: result to JSON'))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=100)
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--settle-ms', type=float, default=50,
                    help='pause before each operation, so that what the previous one left '
                         'running (dockerd and runsc tearing down a docker exec) does not land '
                         'on the next one; 0: back to back')
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix='clr-bench-exec-')
    sock = os.path.join(d, 'c.sock')
    env = dict(os.environ)
    env.setdefault('CLEARING_AGENT', ct.default_agent(a.clearing))
    daemon = ct.spawn_daemon(a.clearing, os.path.join(d, 'state'), sock, log_level='error',
                             env=env, stderr=subprocess.DEVNULL)
    raw_cid = None
    sid = None
    try:
        ct.wait_for(lambda: os.path.exists(sock), 10, 0.05)
        api = ct.UnixHTTPConnection(sock, 60)
        st, sb = call(api, 'POST', '/v1/sandboxes', {})
        if st != 201:
            raise RuntimeError('create: %s %r' % (st, sb))
        sid = sb['id']
        dc = ct.UnixHTTPConnection(ct.DOCKER_SOCK, 60)
        st, j = call(dc, 'POST', '/containers/create',
                     {'Image': ct.IMAGE, 'Cmd': ['sleep', '3600'],
                      'HostConfig': {'Runtime': 'runsc', 'NetworkMode': 'none'}})
        if st != 201:
            raise RuntimeError('raw create: %s %r' % (st, j))
        raw_cid = j['Id']
        call(dc, 'POST', '/containers/%s/start' % raw_cid)
        # Warm both paths (the channel opens at the first command).
        for _ in range(3):
            call(api, 'POST', '/v1/sandboxes/%s/exec' % sid, {'argv': ['true']})
            ct.docker_exec(raw_cid, ['true'])
        chan, raw, wall, floor, spawn, traces, proc = [], [], [], [], [], [], []
        settle = a.settle_ms / 1000
        for i in range(a.rounds):
            if i % 10 == 0:
                # The floor, measured in the same sandbox between rounds: 10 spawns a time.
                st, r = call(api, 'POST', '/v1/sandboxes/%s/exec' % sid,
                             {'argv': ['python3', '-c', FLOOR, '10'], 'timeout': '60s'})
                if st != 200 or r['result']['status'] != 'exited':
                    raise RuntimeError('floor: %s %r' % (st, r))
                out = r['result']['stdout']
                if r['result'].get('stdout_encoding') == 'base64':
                    out = base64.b64decode(out).decode()
                rows = [line.split() for line in out.splitlines()][1:]  # the first warms up
                floor += [float(f) for f, _ in rows]
                spawn += [float(p) for _, p in rows]
            time.sleep(settle)
            t = time.perf_counter()
            st, r = call(api, 'POST', '/v1/sandboxes/%s/exec' % sid, {'argv': ['true']})
            chan.append((time.perf_counter() - t) * 1000)
            if st != 200 or r['result']['status'] != 'exited':
                raise RuntimeError('exec: %s %r' % (st, r))
            # The command's own wall time, measured by its supervisor inside the sandbox: from
            # just before vfork to its exit. The rest of the API row is channel and daemon.
            wall.append(r['result'].get('wall_us', 0) / 1000)
            if 'trace' in r['result']:
                traces.append(r['result']['trace'])
            time.sleep(settle)
            t = time.perf_counter()
            ct.docker_exec(raw_cid, ['true'])
            raw.append((time.perf_counter() - t) * 1000)
            time.sleep(settle)
            t = time.perf_counter()
            st, r = call(api, 'POST', '/v1/sandboxes/%s/processes' % sid, {'argv': ['true']})
            proc.append((time.perf_counter() - t) * 1000)
            if st != 201:
                raise RuntimeError('process: %s %r' % (st, r))
            path = '/v1/sandboxes/%s/processes/%s' % (sid, r['id'])
            if not ct.wait_for(lambda: call(api, 'GET', path)[1].get('state') == 'exited', 60,
                               0.01):
                raise RuntimeError('process %s did not exit' % r['id'])
        st, metrics = call(api, 'GET', '/metrics')
        over_channel = [line for line in metrics.decode().splitlines()
                        if line.startswith('clearing_channel_execs_total ')]
        res = {
            'rounds': a.rounds,
            'settle_ms': a.settle_ms,
            'clearing_api_exec_ms': {p: round(pct(chan, p), 2) for p in (50, 95, 99)},
            'raw_docker_exec_ms': {p: round(pct(raw, p), 2) for p in (50, 95, 99)},
            'process_start_ms': {p: round(pct(proc, p), 2) for p in (50, 95, 99)},
            'command_wall_ms': {p: round(pct(wall, p), 2) for p in (50, 95, 99)},
            'floor_spawn_ms': {p: round(pct(floor, p), 2) for p in (50, 95, 99)},
            'floor_posix_spawn_ms': {p: round(pct(spawn, p), 2) for p in (50, 95, 99)},
            'ratio_p50': round(pct(chan, 50) / pct(raw, 50), 3),
            'over_channel': int(float(over_channel[0].split()[1])) if over_channel else 0,
        }
        target = max(0.2 * pct(raw, 50), pct(floor, 50) + 3)
        res['target_p50_ms'] = round(target, 2)
        res['target_met'] = pct(chan, 50) <= target
        if traces:
            res['trace_p50_ms'] = [
                (label, round(pct([(t[b] - t[a]) / 1000 for t in traces if t[a] and t[b]], 50), 2))
                for a, b, label in STEPS]
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print('exec of `true`, %d rounds, interleaved, %g ms settle before each' % (a.rounds, a.settle_ms))
            print('%-34s %8s %8s %8s' % ('', 'p50 ms', 'p95 ms', 'p99 ms'))
            for k, label in (('clearing_api_exec_ms', 'clearing API (live channel)'),
                             ('raw_docker_exec_ms', 'raw docker exec (runsc)'),
                             ('process_start_ms', 'background process start (201)'),
                             ('command_wall_ms', '  the command inside the sandbox'),
                             ('floor_spawn_ms', 'floor: fork+exec+wait in the sandbox'),
                             ('floor_posix_spawn_ms', '  posix_spawn+wait in the sandbox')):
                v = res[k]
                print('%-34s %8.2f %8.2f %8.2f' % (label, v[50], v[95], v[99]))
            print('clearing / raw at p50: %.3fx; execs over the channel: %d'
                  % (res['ratio_p50'], res['over_channel']))
            print('target: p50 <= max(0.2 x raw, floor + 3 ms) = %.2f ms: %s'
                  % (target, 'met' if res['target_met'] else 'NOT met'))
            for label, ms in res.get('trace_p50_ms', []):
                print('  trace p50 %7.2f ms  %s' % (ms, label))
    finally:
        if sid:
            try:
                ct.api(sock, 'DELETE', '/v1/sandboxes/%s?wait=true' % sid, timeout=60)
            except Exception:
                pass
        if raw_cid:
            ct.docker('DELETE', '/containers/%s?force=1' % raw_cid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
