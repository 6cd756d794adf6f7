#!/usr/bin/env python3
"""Flooding (#16.3, #16 tenancy): another TENANT's exec latency while one tenant floods the
daemon, next to the same execs without the flood, in one run.

    bench/bench_audit_flood.py PATH/TO/clearing [--rounds N] [--execs K] [--rate R]
                               [--threads T] [--hold H] [--json]

Two tenants on TCP with tokens of their own, each from an address of its own on the loopback:
blue (the victim, from 127.0.0.2) and red (the attacker, from 127.0.0.3; its egress loop is
started from 127.0.0.4). The flood, all red's: H connections from red's one address opened and
held with an unfinished request (its whole connection budget, max_connections / 8, and the rest
refused), T threads sending requests with a wrong token from that address at --rate per second
in all (each a failed token check, or a refused connection once the budget is held; --rate 0: as
fast as answered), and red's sandbox looping refused egress connections through its proxy (a
sandbox denying itself egress). Rounds alternate: K execs of `true` in blue's sandbox, over TCP
with blue's token, with no flood, then K with the flood running, so whatever else the machine
does lands on both alike. Reports p50/p99 of each side, their ratio, what the flood did (held
and refused connections, bad-token requests) and the audit records the run cost. Needs root
and a running dockerd with runsc; the agent from CLEARING_AGENT."""
import argparse
import http.client
import json
import os
import select
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


VICTIM_ADDR, FLOOD_ADDR, EGRESS_ADDR = '127.0.0.2', '127.0.0.3', '127.0.0.4'


def tcp_api(port, token, src, method, path, body=None, timeout=600):
    """One request over TCP from source address src with a tenant's token: (status, JSON)."""
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout, source_address=(src, 0))
    try:
        c.request(method, path, json.dumps(body) if body is not None else None,
                  {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)
    finally:
        c.close()


class Flood:
    """Red's flood: its address's connection budget held, bad-token requests from the same
    address, and an egress loop in its sandbox."""

    def __init__(self, sock, port, red_token, flooder, threads, rate, hold):
        self.sock, self.port, self.red_token, self.flooder = sock, port, red_token, flooder
        self.nthreads, self.hold = threads, hold
        self.period = threads / rate if rate else 0.0  # per thread, seconds between requests
        self.stop = threading.Event()
        self.sent = self.held = self.held_refused = 0
        self.lock = threading.Lock()
        self.held_socks = []

    def connect(self):
        s = socket.socket()
        s.bind((FLOOD_ADDR, 0))
        s.settimeout(30)
        s.connect(('127.0.0.1', self.port))
        return s

    def hold_budget(self):
        """Opens self.hold connections, each with an unfinished request; the ones the daemon
        answers at once (over the address's budget) are counted as refused."""
        for _ in range(self.hold):
            try:
                s = self.connect()
                s.sendall(b'POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\n')
            except OSError:
                with self.lock:
                    self.held_refused += 1
                continue
            self.held_socks.append(s)
        # A refused connection is answered (429) and closed at once: after a second, the ones
        # with something to read were refused, the rest are held.
        time.sleep(1)
        readable = set(select.select(self.held_socks, [], [], 0)[0])
        with self.lock:
            self.held_refused += len(readable)
            self.held += len(self.held_socks) - len(readable)

    def bad_tokens(self):
        due = time.monotonic()
        while not self.stop.is_set():
            # Paced, so both builds get the same attack whatever each answer costs; a daemon
            # slower than the pace gets the requests back to back.
            due += self.period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                s = self.connect()
            except OSError:
                continue
            try:
                s.sendall(b'GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer '
                          b'wrong\r\nConnection: close\r\n\r\n')
                while s.recv(4096):
                    pass
            except OSError:
                pass
            finally:
                s.close()
            with self.lock:
                self.sent += 1

    def egress(self):
        tcp_api(self.port, self.red_token, EGRESS_ADDR, 'POST',
                '/v1/sandboxes/%s/exec' % self.flooder,
                {'argv': ['python3', '-c', EGRESS_LOOP], 'timeout': '10m'})

    def start(self):
        self.stop.clear()
        api(self.sock, 'DELETE', '/v1/sandboxes/%s/files/stop' % self.flooder)
        self.threads = [threading.Thread(target=self.egress)]
        self.threads[0].start()
        self.hold_budget()
        self.threads += [threading.Thread(target=self.bad_tokens) for _ in range(self.nthreads)]
        for t in self.threads[1:]:
            t.start()

    def end(self):
        self.stop.set()
        # The egress loop ends when it sees this file.
        ct.request(self.sock, 'PUT', '/v1/sandboxes/%s/files/stop' % self.flooder, b'',
                   {'Content-Type': 'application/octet-stream'}, timeout=600)
        for t in self.threads:
            t.join()
        for s in self.held_socks:
            s.close()
        self.held_socks = []


def exec_ms(port, token, sid):
    """One exec of `true` in the victim's sandbox, over TCP with its tenant's token."""
    t = time.perf_counter()
    st, r = tcp_api(port, token, VICTIM_ADDR, 'POST', '/v1/sandboxes/%s/exec' % sid,
                    {'argv': ['true']})
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
    ap.add_argument('--hold', type=int, default=40,
                    help='connections red opens and holds from its address (its budget is '
                         'max_connections / 8 = 32 by default; the rest are refused)')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix='clr-bench-flood-')
    state = os.path.join(d, 'state')
    sock = os.path.join(d, 'c.sock')
    with socket.socket() as free:
        free.bind(('127.0.0.1', 0))
        port = free.getsockname()[1]
    tokens = os.path.join(d, 'tokens')
    blue, red = os.urandom(16).hex(), os.urandom(16).hex()
    with open(os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), 'w') as f:
        f.write('blue:bench:%s\nred:bench:%s\n' % (blue, red))
    daemon = ct.spawn_daemon(a.clearing, state, sock,
                             ['--tcp', '127.0.0.1:%d' % port, '--token-file', tokens],
                             log_level='error', stderr=subprocess.DEVNULL)
    sids = []
    try:
        ct.wait_for(lambda: os.path.exists(sock), 20, 0.05)
        for token, src in ((blue, VICTIM_ADDR), (red, EGRESS_ADDR)):
            st, sb = tcp_api(port, token, src, 'POST', '/v1/sandboxes', {})
            if st != 201:
                raise RuntimeError('create: %s %r' % (st, sb))
            sids.append(sb['id'])
        victim, flooder = sids
        for _ in range(5):
            exec_ms(port, blue, victim)  # warm: the live channel is attached
        quiet, flooded = [], []
        flood = Flood(sock, port, red, flooder, a.threads, a.rate, a.hold)
        lines0 = audit_lines(state)
        flood_s = 0.0
        for _r in range(a.rounds):
            quiet += [exec_ms(port, blue, victim) for _ in range(a.execs)]
            t0 = time.monotonic()
            flood.start()
            time.sleep(0.5)  # the flood under way before the first measured exec
            flooded += [exec_ms(port, blue, victim) for _ in range(a.execs)]
            flood.end()
            flood_s += time.monotonic() - t0
        records = audit_lines(state) - lines0
        res = {'rounds': a.rounds, 'execs_per_side': a.rounds * a.execs,
               'victim': 'tenant blue over TCP from %s' % VICTIM_ADDR,
               'quiet_ms': {'p50': round(pct(quiet, 0.5), 2), 'p99': round(pct(quiet, 0.99), 2)},
               'flood_ms': {'p50': round(pct(flooded, 0.5), 2),
                            'p99': round(pct(flooded, 0.99), 2)},
               'held_connections_per_round': flood.held // a.rounds,
               'refused_connections_per_round': flood.held_refused // a.rounds,
               'bad_token_rate_asked': a.rate, 'bad_token_requests': flood.sent,
               'flood_seconds': round(flood_s, 1),
               'audit_records_during_run': records}
        res['p99_ratio'] = round(res['flood_ms']['p99'] / res['quiet_ms']['p99'], 2)
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print('flood: exec of `true` by tenant blue in its sandbox, %d per side, %d rounds; '
                  'tenant red floods' % (a.execs, a.rounds))
            print('%-34s %9s %9s' % ('', 'p50 ms', 'p99 ms'))
            print('%-34s %9.2f %9.2f' % ('no flood', res['quiet_ms']['p50'],
                                         res['quiet_ms']['p99']))
            print('%-34s %9.2f %9.2f' % ('red floods (conns, tokens, egress)',
                                         res['flood_ms']['p50'], res['flood_ms']['p99']))
            print('p99 ratio flood/quiet: %.2fx; red held %d connections from one address '
                  '(%d more refused) each round, sent %d bad-token requests in %.1f s of flood; '
                  '%d audit records in the whole run (execs included)'
                  % (res['p99_ratio'], res['held_connections_per_round'],
                     res['refused_connections_per_round'], flood.sent, flood_s, records))
    finally:
        for sid in sids:
            api(sock, 'DELETE', '/v1/sandboxes/%s?wait=true' % sid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
