#!/usr/bin/env python3
"""The code interpreter (#21) against exec, in one sandbox of clearing/datascience, one run,
interleaved round by round (the machine is noisy):

- a warm cell `1+1` (POST .../code) next to `python3 -c 'print(1+1)'` (POST .../exec), both
  through the daemon's API, p50/p99; and the same through the command line (`clearing code ID
  -c 1+1` next to `clearing exec ID -- python3 -c 'print(1+1)'`), which adds the CLI's start;
- `import pandas` in a fresh kernel (the first time) and again (the second);
- a matplotlib figure to PNG (plt.plot + plt.show in one cell);
- where a warm cell's time goes: `true` through POST .../exec (the daemon, the agent's channel
  and a process start), and a Jupyter kernel's own round trip for `1+1` measured inside the same
  sandbox by a client talking to a kernel of its own as the bridge does (TCP on loopback), no
  daemon in the way; and the same with ipykernel's in-process kernel (no sockets, no kernel
  process of its own: what a bridge that ran its kernel in its own process would pay).

    bench/bench_code.py PATH/TO/clearing [--rounds N] [--json]

The target (issue #21): a warm cell at most 0.2 x the exec of `python3 -c` in the same run.
Needs root, a running dockerd with runsc and the clearing/datascience image. Everything it
creates is removed at the end."""
import argparse
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))
import clearing_test as ct  # noqa: E402

IMAGE = 'clearing/datascience:latest'

# Run inside the sandbox: a kernel of its own, N round trips of `1+1` as the bridge makes them
# (execute, iopub until idle, the shell reply), the first few left out; prints the times in ms.
# argv[2] 'inprocess': ipykernel's in-process kernel (the same client calls, no sockets).
KERNEL_RTT = r"""
import os, sys, time, json, tempfile
base = tempfile.mkdtemp(prefix='bench-kernel-')
os.environ['JUPYTER_RUNTIME_DIR'] = base
os.environ['IPYTHONDIR'] = base
if sys.argv[2] == 'inprocess':
    from ipykernel.inprocess.manager import InProcessKernelManager
    km = InProcessKernelManager()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
else:
    from jupyter_client import KernelManager
    km = KernelManager(kernel_name='python3')
    km.ip = '127.0.0.1'
    km.start_kernel(stdout=open(os.devnull, 'wb'), stderr=open(os.devnull, 'wb'))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=300)
out = []
for i in range(int(sys.argv[1]) + 3):
    t = time.perf_counter()
    mid = kc.execute('1+1', store_history=True)
    while True:
        m = kc.get_iopub_msg(timeout=60)
        if (m['parent_header'].get('msg_id') == mid and m['msg_type'] == 'status'
                and m['content']['execution_state'] == 'idle'):
            break
    while kc.get_shell_msg(timeout=60)['parent_header'].get('msg_id') != mid:
        pass
    out.append((time.perf_counter() - t) * 1000)
kc.stop_channels()
if sys.argv[2] == 'inprocess':
    km.shutdown_kernel()
else:
    km.shutdown_kernel(now=True)
print(json.dumps(out[3:]))
"""


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return (time.perf_counter() - t) * 1000, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=50)
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    ct.CLEARING = os.path.abspath(a.clearing)
    os.environ.setdefault('CLEARING_AGENT', ct.default_agent(ct.CLEARING))
    d = ct.Daemon('bench-code', prefix='clr-bench-code-').start()
    c = d.client()
    sid = None
    try:
        r = c.post('/v1/sandboxes', {'image': IMAGE, 'limits': {'memory': '2g'}})
        if r.status != 201:
            sys.exit('create: %r' % r)
        sid = r.json['id']

        def cell(code):
            r = c.post('/v1/sandboxes/%s/code' % sid, {'code': code, 'timeout': '600s'},
                       timeout=900)
            if r.status != 200 or r.json['status'] != 'ok':
                raise RuntimeError('cell %r: %r' % (code, r))
            return r.json

        def exec_py():
            r = c.post('/v1/sandboxes/%s/exec' % sid,
                       {'argv': ['python3', '-c', 'print(1+1)'], 'timeout': '60s'}, timeout=120)
            if r.status != 200 or r.json['result']['stdout'] != '2\n':
                raise RuntimeError('exec: %r' % r)

        def exec_true():
            r = c.post('/v1/sandboxes/%s/exec' % sid, {'argv': ['true'], 'timeout': '60s'},
                       timeout=120)
            if r.status != 200 or r.json['result']['exit_code'] != 0:
                raise RuntimeError('exec: %r' % r)

        def kernel_rtt(n, kind='zmq'):
            r = c.post('/v1/sandboxes/%s/exec' % sid,
                       {'argv': ['python3', '-Xfrozen_modules=off', '-c', KERNEL_RTT, str(n),
                                 kind], 'timeout': '600s'},
                       timeout=900)
            if r.status != 200 or r.json['result']['exit_code'] != 0:
                raise RuntimeError('kernel round trip: %r' % r)
            return json.loads(r.json['result']['stdout'])

        env = dict(os.environ, CLEARING_HOST='unix://' + d.sock)

        def cli(args):
            p = subprocess.run([ct.CLEARING] + args, env=env, capture_output=True, text=True,
                               timeout=300)
            if p.returncode != 0 or p.stdout != '2\n':
                raise RuntimeError('%s: %d %r %r' % (args, p.returncode, p.stdout, p.stderr))

        start_ms, _ = timed(lambda: cell('pass'))
        pandas_first, _ = timed(lambda: cell('import pandas'))
        pandas_second, _ = timed(lambda: cell('import pandas'))
        figure = []
        for _ in range(3):
            ms, ans = timed(lambda: cell('import matplotlib.pyplot as plt\n'
                                         'plt.plot([1, 3, 2])\nplt.show()'))
            if not any('image/png' in x for x in ans['displays']):
                raise RuntimeError('no PNG: %r' % ans)
            figure.append(ms)
        api_cell, api_exec, cli_cell, cli_exec, api_true, kernel = [], [], [], [], [], []
        inproc = []
        cell('1+1')
        exec_py()
        exec_true()
        for i in range(a.rounds):
            api_cell.append(timed(lambda: cell('1+1'))[0])
            api_exec.append(timed(exec_py)[0])
            api_true.append(timed(exec_true)[0])
            if i % 10 == 0:  # a batch of the kernel's own round trips among the rounds
                kernel += kernel_rtt(10)
                inproc += kernel_rtt(10, 'inprocess')
        for _ in range(max(5, a.rounds // 5)):
            cli_cell.append(timed(lambda: cli(['code', sid, '-c', '1+1']))[0])
            cli_exec.append(timed(lambda: cli(['exec', sid, '--', 'python3', '-c',
                                                'print(1+1)']))[0])
        out = {
            'rounds': a.rounds,
            'session_start_ms': round(start_ms, 1),
            'api_cell_ms': {'p50': round(pct(api_cell, 50), 2), 'p99': round(pct(api_cell, 99), 2)},
            'api_exec_python_ms': {'p50': round(pct(api_exec, 50), 2),
                                   'p99': round(pct(api_exec, 99), 2)},
            'cli_cell_ms': {'p50': round(pct(cli_cell, 50), 2), 'p99': round(pct(cli_cell, 99), 2)},
            'cli_exec_python_ms': {'p50': round(pct(cli_exec, 50), 2),
                                   'p99': round(pct(cli_exec, 99), 2)},
            'api_exec_true_ms': {'p50': round(pct(api_true, 50), 2),
                                 'p99': round(pct(api_true, 99), 2)},
            'kernel_rtt_in_sandbox_ms': {'p50': round(pct(kernel, 50), 2),
                                         'p99': round(pct(kernel, 99), 2)},
            'inprocess_kernel_rtt_in_sandbox_ms': {'p50': round(pct(inproc, 50), 2),
                                                   'p99': round(pct(inproc, 99), 2)},
            'import_pandas_first_ms': round(pandas_first, 1),
            'import_pandas_second_ms': round(pandas_second, 1),
            'matplotlib_png_ms': {'first': round(figure[0], 1), 'next': round(min(figure[1:]), 1)},
        }
        out['ratio_api_p50'] = round(out['api_cell_ms']['p50'] / out['api_exec_python_ms']['p50'],
                                     3)
        out['target_met'] = out['ratio_api_p50'] <= 0.2
        if a.json:
            print(json.dumps(out, indent=1))
        else:
            for k, v in out.items():
                print('%-26s %s' % (k, v))
    finally:
        if sid:
            ct.destroy_quietly(c, sid)
        d.stop()


if __name__ == '__main__':
    main()
