#!/usr/bin/env python3
"""Gauntlet wall time on the sample Python repository, three ways in the same run:

  sequential   clearing gauntlet --profile python --parallel 1   (one sandbox, checks one by one)
  parallel     clearing gauntlet --profile python --parallel 3   (one sandbox, 3 checks at once)
  parallel, 2 cpus   the same with --cpus 2 (the default sandbox quota is 1 core, which the
               parallel checks otherwise share)
  raw docker   each check of the python profile in its own
               `docker run --rm --runtime=runsc --network=none` of clearing/python:latest with
               the repository mounted, one after the other (the baseline)

The three alternate within each round and the order rotates from round to round, so that drift
on a shared machine lands on all of them alike. Wall time is from starting the command to its
end: for clearing that includes creating the sandbox, copying the repository in, the tool probe,
reading the reports back and destroying the sandbox. Every run must pass (verdict pass / exit
codes the profile accepts), or the round is counted as failed and left out.

usage: bench_gauntlet.py CLEARING [--rounds N] [--quick] [--json]
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
IMAGE = 'clearing/python:latest'

# The python profile's checks (lib/gauntlet_parse.c, PYTHON_PROFILE: clearing-pycheck): command,
# environment and the exit codes it passes with. Kept identical so the baseline does the same work.
CHECKS = [
    ('lint', 'clearing-pycheck lint', {'XDG_CACHE_HOME': '/tmp/.cache'}, (0,)),
    ('types', 'clearing-pycheck types', {'XDG_CACHE_HOME': '/tmp/.cache'}, (0,)),
    ('security', 'clearing-pycheck security --report /tmp/bandit.json',
     {'XDG_CACHE_HOME': '/tmp/.cache'}, (0, 1)),
    ('tests', 'clearing-pycheck tests --report /tmp/coverage.json',
     {'PYTHONDONTWRITEBYTECODE': '1', 'XDG_CACHE_HOME': '/tmp/.cache'}, (0,)),
]


def run_clearing(clearing, state, repo, parallel, cpus=None):
    t0 = time.monotonic()
    p = subprocess.run([clearing, '--state-dir', state, 'gauntlet', '--repo', repo,
                        '--profile', 'python', '--parallel', str(parallel), '--json']
                       + (['--cpus', cpus] if cpus else []),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    dt = time.monotonic() - t0
    ok = p.returncode == 0
    try:
        ok = ok and json.loads(p.stdout)['verdict'] == 'pass'
    except ValueError:
        ok = False
    if not ok:
        sys.stderr.write('clearing --parallel %d failed (exit %d): %s\n'
                         % (parallel, p.returncode, p.stderr.decode(errors='replace')[-500:]))
    return dt, ok


def run_raw(repo):
    t0 = time.monotonic()
    ok = True
    for name, cmd, env, codes in CHECKS:
        argv = ['docker', 'run', '--rm', '--runtime=runsc', '--network=none',
                '-v', repo + ':/workspace:ro', '-w', '/workspace']
        for k, v in env.items():
            argv += ['-e', '%s=%s' % (k, v)]
        argv += [IMAGE, 'sh', '-c', cmd]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
        if p.returncode not in codes:
            ok = False
            sys.stderr.write('raw docker check %s failed (exit %d): %s\n'
                             % (name, p.returncode, p.stderr.decode(errors='replace')[-500:]))
    return time.monotonic() - t0, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('clearing')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--quick', action='store_true', help='one round (a smoke test)')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    if rounds < 1:
        ap.error('--rounds must be at least 1')
    if subprocess.run(['docker', 'image', 'inspect', IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        sys.stderr.write('bench gauntlet: image %s is missing: run images/build.sh\n' % IMAGE)
        return 2
    tmp = tempfile.mkdtemp(prefix='clearing-bench-gauntlet.')
    try:
        repo = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'sample-repo.sh'),
                               os.path.join(tmp, 'repo')], stdout=subprocess.PIPE,
                              check=True).stdout.decode().strip()
        state = os.path.join(tmp, 'state')
        modes = [('sequential', lambda: run_clearing(a.clearing, state, repo, 1)),
                 ('parallel', lambda: run_clearing(a.clearing, state, repo, 3)),
                 ('parallel_2cpus', lambda: run_clearing(a.clearing, state, repo, 3, '2')),
                 ('raw_docker', lambda: run_raw(repo))]
        samples = {m: [] for m, _ in modes}
        failed = {m: 0 for m, _ in modes}
        for r in range(rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for m, fn in order:
                dt, ok = fn()
                if ok:
                    samples[m].append(dt)
                else:
                    failed[m] += 1
            sys.stderr.write('round %d/%d: %s\n' % (r + 1, rounds, ' '.join(
                '%s=%.2fs' % (m, samples[m][-1]) for m, _ in modes if samples[m])))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(m):
        return statistics.median(samples[m]) if samples[m] else float('nan')
    base = med('raw_docker')
    res = {m: {'median_s': med(m), 'min_s': min(samples[m], default=float('nan')),
               'max_s': max(samples[m], default=float('nan')), 'n': len(samples[m]),
               'failed': failed[m], 'ratio_to_raw': med(m) / base if base == base else None,
               'samples_s': [round(x, 3) for x in samples[m]]} for m, _ in modes}
    if a.json:
        print(json.dumps({'benchmark': 'gauntlet', 'rounds': rounds, 'checks': len(CHECKS),
                          'results': res}, indent=2))
    else:
        print('gauntlet (python profile, %d checks, %d rounds) | median s |  min s |  max s | vs raw'
              % (len(CHECKS), rounds))
        print('-' * 47 + '+----------+--------+--------+-------')
        for m, label in (('sequential', 'clearing, parallel: 1'),
                         ('parallel', 'clearing, parallel: 3'),
                         ('parallel_2cpus', 'clearing, parallel: 3, --cpus 2'),
                         ('raw_docker', 'docker run --runtime=runsc per check')):
            x = res[m]
            print('%-46s | %8.2f | %6.2f | %6.2f | %5.2fx' % (label, x['median_s'], x['min_s'],
                                                             x['max_s'], x['ratio_to_raw'] or 0))
        print()
        for m, _ in modes:
            x = res[m]
            print('BENCH gauntlet mode=%s median_s=%.3f min_s=%.3f max_s=%.3f n=%d failed=%d'
                  % (m, x['median_s'], x['min_s'], x['max_s'], x['n'], x['failed']))
    return 0 if all(v == 0 for v in failed.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
