#!/usr/bin/env python3
"""Egress cost: downloads from an HTTP server on the host's loopback, fetched inside a sandbox
through the agent's proxy and the live channel, next to the same fetches made on the host, in
one run.

    bench/bench_egress.py PATH/TO/clearing [--rounds N] [--mb M] [--json]

Reports per-request latency (a 100-byte GET, new connection each: p50/p95) and throughput of
one M-MiB download (MiB/s), each side measured by the same Python code, and the ratios. Needs
root and a running dockerd with runsc."""
import argparse
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402


def api(sock, method, path, body=None):
    """The daemon's answer: (status, JSON or None); long execs get 10 minutes."""
    return ct.api(sock, method, path, body, timeout=600)


MEASURE = r'''
import json, os, sys, time, urllib.request
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ""
base, rounds, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
for _ in range(rounds):
    t = time.perf_counter()
    urllib.request.urlopen(base + "/small").read()
    lat.append((time.perf_counter() - t) * 1000)
t = time.perf_counter()
n = len(urllib.request.urlopen(base + "/big").read())
dt = time.perf_counter() - t
assert n == mb << 20, n
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2], "p95": lat[int(len(lat) * 0.95)],
                  "mib_s": mb / dt}))
'''


class Handler(http.server.BaseHTTPRequestHandler):
    big = b''

    def do_GET(self):
        body = Handler.big if self.path == '/big' else b's' * 100
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=50)
    ap.add_argument('--mb', type=int, default=64)
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    Handler.big = b'b' * (a.mb << 20)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    base = 'http://127.0.0.1:%d' % port

    d = tempfile.mkdtemp(prefix='clr-bench-egress-')
    sock = os.path.join(d, 'c.sock')
    daemon = ct.spawn_daemon(a.clearing, os.path.join(d, 'state'), sock, log_level='error',
                             stderr=subprocess.DEVNULL)
    sid = None
    try:
        ct.wait_for(lambda: os.path.exists(sock), 10, 0.05)
        st, sb = api(sock, 'POST', '/v1/sandboxes',
                     {'egress': {'allow': ['127.0.0.1:%d' % port],
                                 'max_bytes': str(4 * a.mb + 64) + 'm'},
                      'limits': {'memory': '1g'}})
        if st != 201:
            raise RuntimeError('create: %s %r' % (st, sb))
        sid = sb['id']
        host = subprocess.run([sys.executable, '-c', MEASURE, base, str(a.rounds), str(a.mb)],
                              capture_output=True, text=True, check=True)
        host = json.loads(host.stdout)
        st, r = api(sock, 'POST', '/v1/sandboxes/%s/exec' % sid,
                    {'argv': ['python3', '-c', MEASURE, base, str(a.rounds), str(a.mb)],
                     'timeout': '10m'})
        if st != 200 or r['result']['status'] != 'exited' or r['result']['exit_code'] != 0:
            raise RuntimeError('sandbox measurement: %r' % r)
        inside = json.loads(r['result']['stdout'])
        res = {'rounds': a.rounds, 'download_mib': a.mb, 'host': host, 'sandbox': inside,
               'latency_ratio_p50': round(inside['p50'] / host['p50'], 2),
               'throughput_ratio': round(inside['mib_s'] / host['mib_s'], 3)}
        if a.json:
            print(json.dumps(res, indent=2))
        else:
            print('egress: %d GETs of 100 B (a new connection each), one %d MiB download'
                  % (a.rounds, a.mb))
            print('%-36s %9s %9s %10s' % ('', 'p50 ms', 'p95 ms', 'MiB/s'))
            print('%-36s %9.2f %9.2f %10.1f' % ('host, direct', host['p50'], host['p95'],
                                                 host['mib_s']))
            print('%-36s %9.2f %9.2f %10.1f' % ('sandbox, through proxy + channel',
                                                 inside['p50'], inside['p95'], inside['mib_s']))
            print('added latency p50: %.2f ms (%.2fx); throughput %.3fx of the host'
                  % (inside['p50'] - host['p50'], res['latency_ratio_p50'],
                     res['throughput_ratio']))
    finally:
        if sid:
            api(sock, 'DELETE', '/v1/sandboxes/%s?wait=true' % sid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        httpd.shutdown()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
