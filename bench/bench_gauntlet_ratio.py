#!/usr/bin/env python3
"""The python profile's wall time against its slowest check run alone (issue #23: at most 1.1x),
and gVisor's share of the tests check (the same pytest under runsc and runc), in one run.

On a copy of tests/fixtures/pyconf-project with --load extra test modules (CPU-bound tests, so
that the tests check is the slowest, as on real projects), each round runs:

  profile      clearing gauntlet --profile python: the four checks at once in one sandbox
  alone        each of the four checks alone (clearing gauntlet --file with that check only, the
               profile's own lines) in a sandbox of the same size
  runsc/runc   the tests check's command in `docker run --rm --network=none --cpus N` of the
               python image with the copy mounted, under runsc and under runc

The profile's and each check's time is the gauntlet report's duration_ms (the probe for tools,
the checks, reading their reports: the same work in both); the ratio is the profile's over the
slowest check alone. runsc/runc are wall times of docker run. Every run must pass.

usage: bench_gauntlet_ratio.py CLEARING [--rounds N] [--cpus N] [--load N] [--no-runc] [--json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'pyconf-project')
IMAGE = 'clearing/python:latest'

# The python profile's checks (lib/gauntlet_parse.c, PYTHON_PROFILE), line for line.
CHECKS = {
    'lint': ('    kind: lint\n    tool: clearing-pycheck\n'
             '    run: clearing-pycheck lint --info /tmp/.clearing-lint.json\n'
             '    info: /tmp/.clearing-lint.json\n    timeout: 5m\n'),
    'types': ('    kind: types\n    tool: clearing-pycheck\n'
              '    run: clearing-pycheck types --info /tmp/.clearing-types.json\n'
              '    info: /tmp/.clearing-types.json\n    timeout: 10m\n'),
    'security': ('    kind: security\n    tool: clearing-pycheck\n'
                 '    run: clearing-pycheck security --info /tmp/.clearing-security.json'
                 ' --report /tmp/bandit.json\n'
                 '    info: /tmp/.clearing-security.json\n    timeout: 5m\n'
                 '    pass:\n      exit_codes: [0, 1]\n      report: /tmp/bandit.json\n'
                 '      severity: medium\n      confidence: medium\n'),
    'tests': ('    kind: test\n    tool: clearing-pycheck\n'
              '    run: clearing-pycheck tests --info /tmp/.clearing-tests.json'
              ' --report /tmp/coverage.json\n'
              '    info: /tmp/.clearing-tests.json\n    timeout: 20m\n'
              '    pass:\n      report: /tmp/coverage.json\n      coverage_min: 85\n'),
}
TESTS_CMD = 'clearing-pycheck tests --report /tmp/coverage.json'

LOAD_TEST = '''from calc.ops import describe, mean, scale


def test_work_{i}() -> None:
    total = 0.0
    for n in range(1, {n}):
        total += mean(scale([float(n), float(n + 1)], 2.0))
    assert total > 0
    assert describe([1.0, 2.0]) == "from 1 to 2"
'''


def project(tmp, load, iterations):
    dst = os.path.join(tmp, 'project')
    shutil.copytree(FIXTURE, dst)
    for i in range(load):
        with open(os.path.join(dst, 'tests', 'test_load_%d.py' % i), 'w') as f:
            f.write(LOAD_TEST.format(i=i, n=iterations))
    return dst


def gauntlet(clearing, state, proj, cpus, gfile=None):
    report = os.path.join(state, 'report.json')
    argv = [clearing, '--state-dir', state, 'gauntlet', '--repo', proj, '--cpus', str(cpus),
            '--report', report]
    argv += ['--file', gfile, '--image', IMAGE] if gfile else ['--profile', 'python']
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError('gauntlet failed (%d): %s%s' % (p.returncode, p.stdout[-1500:],
                                                           p.stderr[-500:]))
    with open(report) as f:
        r = json.load(f)
    return r['duration_ms'] / 1000, {c['name']: c['duration_ms'] / 1000 for c in r['checks']}


def docker_tests(proj, runtime, cpus, tmp):
    work = os.path.join(tmp, 'docker-' + runtime)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(proj, work)
    os.chmod(work, 0o777)
    argv = ['docker', 'run', '--rm', '--runtime=' + runtime, '--network=none', '--cpus', str(cpus),
            '--user', '1000:1000', '-v', work + ':/workspace', '-w', '/workspace', IMAGE,
            'sh', '-c', TESTS_CMD]
    for d, _, files in os.walk(work):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(os.path.join(d, f), 0o666)
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError('docker run --runtime=%s failed (%d): %s' % (runtime, p.returncode,
                                                                       p.stderr[-800:]))
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--cpus', type=float, default=1)
    ap.add_argument('--load', type=int, default=30, help='extra CPU-bound test modules')
    ap.add_argument('--iterations', type=int, default=200000, help='loop length of each')
    ap.add_argument('--no-runc', action='store_true', help='leave out the runsc/runc runs')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='bench-gauntlet-ratio-')
    res = {'profile': [], 'alone': {k: [] for k in CHECKS}, 'runsc': [], 'runc': []}
    try:
        proj = project(tmp, a.load, a.iterations)
        state = os.path.join(tmp, 'state')
        files = {}
        for name, body in CHECKS.items():
            files[name] = os.path.join(tmp, name + '.yaml')
            with open(files[name], 'w') as f:
                f.write('checks:\n  - name: %s\n%s' % (name, body))
        for rnd in range(a.rounds):
            total, per = gauntlet(a.clearing, state, proj, a.cpus)
            res['profile'].append(total)
            for name in CHECKS:
                res['alone'][name].append(gauntlet(a.clearing, state, proj, a.cpus,
                                                   files[name])[0])
            if not a.no_runc:
                res['runsc'].append(docker_tests(proj, 'runsc', a.cpus, tmp))
                res['runc'].append(docker_tests(proj, 'runc', a.cpus, tmp))
            print('round %d: profile %.1fs (%s); alone %s' % (
                rnd + 1, total, ', '.join('%s %.1f' % kv for kv in per.items()),
                ', '.join('%s %.1f' % (k, v[-1]) for k, v in res['alone'].items())),
                file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {'profile': statistics.median(res['profile'])}
    for k, v in res['alone'].items():
        med['alone_' + k] = statistics.median(v)
    slowest = max(CHECKS, key=lambda k: med['alone_' + k])
    med['slowest'] = slowest
    med['ratio'] = med['profile'] / med['alone_' + slowest]
    if res['runsc']:
        med['runsc'] = statistics.median(res['runsc'])
        med['runc'] = statistics.median(res['runc'])
        med['gvisor_share'] = 1 - med['runc'] / med['runsc']
    if a.json:
        print(json.dumps({'median': med, 'runs': res, 'cpus': a.cpus, 'load': a.load,
                          'iterations': a.iterations}, indent=1))
        return 0
    print('python profile on tests/fixtures/pyconf-project + %d load modules, --cpus %g, '
          'median of %d' % (a.load, a.cpus, a.rounds))
    print('  profile (4 checks at once)   %6.1f s' % med['profile'])
    for k in CHECKS:
        print('  %-8s alone              %6.1f s' % (k, med['alone_' + k]))
    print('  ratio profile / %s alone: %.2f' % (slowest, med['ratio']))
    if 'runsc' in med:
        print('  tests check in docker run: runsc %.1f s, runc %.1f s (gVisor %.0f%% of runsc)'
              % (med['runsc'], med['runc'], 100 * med['gvisor_share']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
