#!/usr/bin/env python3
"""Audit flooding (#16.3): another sandbox's exec latency while an attacker floods the daemon
with denials, next to the same execs without the flood, in one run.

    bench/bench_audit_flood.py PATH/TO/clearing [--rounds N] [--execs K] [--rate R] [--json]

The flood: threads sending requests with a wrong token over TCP at --rate per second (each a
failed token check; --rate 0: as fast as the daemon answers), and a sandbox looping refused
egress connections through its proxy as fast as they are refused. Both are denials the audit
log records. Rounds alternate: K execs of `true` in the victim sandbox with no flood, then K
with the flood running, so whatever else the machine does lands on both alike. Reports p50/p99
of each side, their ratio, the denials sent and the audit records they cost. Needs root and a
running dockerd with runsc; the agent from CLEARING_AGENT."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402


def api(sock, method, path, body=None):
    """The daemon's answer: (status, JSON or None); long execs get 10 minutes."""
    return ct.api(sock, method, path, body, timeout=600)


EGRESS_LOOP = r'''
import os, socket
while not os.path.exists("/workspace/stop"):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=30)
    s.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
    s.recv(100)
    s.close()
'''


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


class Flood:
    """Bad-token requests from threads, and an egress loop in the flooding sandbox."""

    def __init__(self, sock, port, flooder, threads, rate):
        self.sock, self.port, self.flooder, self.nthreads = sock, port, flooder, threads
        self.period = threads / rate if rate else 0.0  # per thread, seconds between requests
        self.stop = threading.Event()
        self.sent = 0
        self.lock = threading.Lock()

    def bad_tokens(self):
        due = time.monotonic()
        while not self.stop.is_set():
            # Paced, so both builds get the same attack whatever each answer costs; a daemon
            # slower than the pace gets the requests back to back.
            due += self.period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            s = socket.create_connection(('127.0.0.1', self.port), timeout=30)
            try:
                s.sendall(b'GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer '
                          b'wrong\r\nConnection: close\r\n\r\n')
                while s.recv(4096):
                    pass
            finally:
                s.close()
            with self.lock:
                self.sent += 1

    def egress(self):
        api(self.sock, 'POST', '/v1/sandboxes/%s/exec' % self.flooder,
            {'argv': ['python3', '-c', EGRESS_LOOP], 'timeout': '10m'})

    def start(self):
        self.stop.clear()
        api(self.sock, 'DELETE', '/v1/sandboxes/%s/files/stop' % self.flooder)
        self.threads = [threading.Thread(target=self.bad_tokens) for _ in range(self.nthreads)]
        self.threads.append(threading.Thread(target=self.egress))
        for t in self.threads:
            t.start()

    def end(self):
        self.stop.set()
        # The egress loop ends when it sees this file.
        ct.request(self.sock, 'PUT', '/v1/sandboxes/%s/files/stop' % self.flooder, b'',
                   {'Content-Type': 'application/octet-stream'}, timeout=600)
        for t in self.threads:
            t.join()


def exec_ms(sock, sid):
    t = time.perf_counter()
    st, r = api(sock, 'POST', '/v1/sandboxes/%s/exec' % sid, {'argv': ['true']})
    if st != 200 or r['result']['status'] != 'exited':
        raise RuntimeError('exec: %s %r' % (st, r))
    return (time.perf_counter() - t) * 1000


def audit_lines(state):
    with open(os.path.join(state, 'audit.log'), 'rb') as f:
        return sum(1 for _ in f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--execs', type=int, default=40, help='execs per side per round')
    ap.add_argument('--threads', type=int, default=4, help='bad-token threads')
    ap.add_argument('--rate', type=float, default=300,
                    help='bad-token requests per second in all (0: as fast as answered)')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix='clr-bench-flood-')
    state = os.path.join(d, 'state')
    sock = os.path.join(d, 'c.sock')
    with socket.socket() as free:
        free.bind(('127.0.0.1', 0))
        port = free.getsockname()[1]
    tokens = os.path.join(d, 'tokens')
    with open(os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), 'w') as f:
        f.write('bench:%s\n' % os.urandom(16).hex())
    daemon = ct.spawn_daemon(a.clearing, state, sock,
                             ['--tcp', '127.0.0.1:%d' % port, '--token-file', tokens],
                             log_level='error', stderr=subprocess.DEVNULL)
    sids = []
    try:
        ct.wait_for(lambda: os.path.exists(sock), 20, 0.05)
        for _ in range(2):
            st, sb = api(sock, 'POST', '/v1/sandboxes', {})
            if st != 201:
                raise RuntimeError('create: %s %r' % (st, sb))
            sids.append(sb['id'])
        victim, flooder = sids
        for _ in range(5):
            exec_ms(sock, victim)  # warm: the live channel is attached
        quiet, flooded = [], []
        flood = Flood(sock, port, flooder, a.threads, a.rate)
        lines0 = audit_lines(state)
        flood_s = 0.0
        for _r in range(a.rounds):
            quiet += [exec_ms(sock, victim) for _ in range(a.execs)]
            t0 = time.monotonic()
            flood.start()
            time.sleep(0.5)  # the flood under way before the first measured exec
            flooded += [exec_ms(sock, victim) for _ in range(a.execs)]
            flood.end()
            flood_s += time.monotonic() - t0
        records = audit_lines(state) - lines0
        res = {'rounds': a.rounds, 'execs_per_side': a.rounds * a.execs,
               'quiet_ms': {'p50': round(pct(quiet, 0.5), 2), 'p99': round(pct(quiet, 0.99), 2)},
               'flood_ms': {'p50': round(pct(flooded, 0.5), 2),
                            'p99': round(pct(flooded, 0.99), 2)},
               'bad_token_rate_asked': a.rate, 'bad_token_requests': flood.sent,
               'flood_seconds': round(flood_s, 1),
               'audit_records_during_run': records}
        res['p99_ratio'] = round(res['flood_ms']['p99'] / res['quiet_ms']['p99'], 2)
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print('audit flood: exec of `true` in another sandbox, %d per side, %d rounds'
                  % (a.execs, a.rounds))
            print('%-28s %9s %9s' % ('', 'p50 ms', 'p99 ms'))
            print('%-28s %9.2f %9.2f' % ('no flood', res['quiet_ms']['p50'],
                                         res['quiet_ms']['p99']))
            print('%-28s %9.2f %9.2f' % ('flood (tokens + egress)', res['flood_ms']['p50'],
                                         res['flood_ms']['p99']))
            print('p99 ratio flood/quiet: %.2fx; %d bad-token requests in %.1f s of flood; '
                  '%d audit records in the whole run (execs included)'
                  % (res['p99_ratio'], flood.sent, flood_s, records))
    finally:
        for sid in sids:
            api(sock, 'DELETE', '/v1/sandboxes/%s?wait=true' % sid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
