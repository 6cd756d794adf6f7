#!/usr/bin/env python3
"""Snapshot and fork latency (issue #22) next to a cold create, in the same run, against a daemon
of its own on the real engine: N cold creates, N-1 snapshots, one per sandbox (10 MiB written to its /tmp first), N forks of one snapshot taken before the sandbox's first command (see docs/API.md,
the runsc restore limit). Prints p50/p99 of each (ms) and a JSON line.

    CLEARING_AGENT=build/agent/clearing-agent python3 bench/bench_snapshots.py build/src/clearing [N]"""
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def timed(c, method, path, body, want):
    t0 = time.monotonic()
    r = c.request(method, path, body, timeout=300)
    ms = (time.monotonic() - t0) * 1000
    if r.status != want:
        raise RuntimeError('%s %s: %d %s' % (method, path, r.status, r.body[:3000]))
    return ms, ct.decode(r.body)


def main():
    ct.CLEARING = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    d = ct.Daemon('bench-snap', prefix='clr-bench-snap-')
    made = []
    try:
        d.start()
        c = d.client()
        res = {'create': [], 'snapshot': [], 'fork': []}
        for _ in range(n):
            ms, r = timed(c, 'POST', '/v1/sandboxes', {}, 201)
            res['create'].append(ms)
            made.append(r['id'])
        base = made[0]
        _, snap0 = timed(c, 'POST', '/v1/sandboxes/%s/snapshots' % made[1], {}, 201)
        for _ in range(n):
            ms, r = timed(c, 'POST', '/v1/sandboxes', {'snapshot': snap0['id']}, 201)
            res['fork'].append(ms)
            made.append(r['id'])
        # One snapshot per sandbox: a second checkpoint of one container fails on this engine
        # (containerd: "content sha256:...: already exists"; docs/OPERATIONS.md).
        size = 0
        for sid in made[2:n] + [base]:
            c.post('/v1/sandboxes/%s/exec' % sid,
                   {'argv': ['sh', '-c', 'head -c 10485760 /dev/urandom > /tmp/ballast'],
                    'timeout': '60s'}, timeout=120)
            ms, r = timed(c, 'POST', '/v1/sandboxes/%s/snapshots' % sid, {}, 201)
            res['snapshot'].append(ms)
            size = r['size']
        out = {k: {'p50_ms': round(pct(v, 50), 1), 'p99_ms': round(pct(v, 99), 1), 'n': len(v)}
               for k, v in res.items()}
        out['snapshot_bytes_10mib_tmp'] = size
        for k in ('create', 'snapshot', 'fork'):
            print('%-9s p50 %7.1f ms  p99 %7.1f ms  (n=%d)' % (k, out[k]['p50_ms'], out[k]['p99_ms'],
                                                             out[k]['n']))
        print(json.dumps(out))
    finally:
        for s in made:
            try:
                d.client().delete('/v1/sandboxes/%s?wait=1' % s, timeout=60)
            except OSError:
                pass
        d.stop()


if __name__ == '__main__':
    main()
