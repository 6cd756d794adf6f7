#!/usr/bin/env python3
"""Lints docs/openapi.yaml with Redocly CLI, the version pinned in package-lock.json next to
this file, its recommended rules and redocly.yaml (each rule that is off says why there).

Usage: lint.py SPEC INSTALL_DIR

The validator is installed into INSTALL_DIR (the build directory's openapi-lint/) with
`npm ci`, only when what is there is not what package-lock.json pins: the first run needs the
npm registry, later ones (and new build directories, from npm's cache) do not. Nothing is
installed globally or into the source tree.

Fails on any error and on any warning. Its positive control: a small document with two faults
the recommended rules must find (an operation without security, nullable without type) is
linted in the same run and must be reported, so a validator that checks nothing cannot pass.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PINNED = ('package.json', 'package-lock.json')
CONTROL = """openapi: 3.0.3
info: {title: control, version: '1', license: {name: none}}
servers: [{url: 'http://{address}', variables: {address: {default: '127.0.0.1:1'}}}]
paths:
  /thing:
    get:
      operationId: getThing
      summary: no security declared anywhere
      responses:
        '200':
          description: ok
          content: {application/json: {schema: {properties: {x: {nullable: true}}}}}
        '404': {description: not found}
"""
CONTROL_RULES = {'security-defined', 'nullable-type-sibling'}


def fail(msg):
    print('openapi-lint: ' + msg, file=sys.stderr)
    sys.exit(1)


def node_ok(lock):
    """None if node satisfies the pinned CLI's engines, else what is wrong and what to do."""
    want = lock['packages']['node_modules/@redocly/cli'].get('engines', {}).get('node', '')
    node = shutil.which('node')
    if not node or not shutil.which('npm'):
        return ('node and npm are needed (Redocly CLI wants node %s): install Node.js, e.g. '
                'with scripts/setup.sh' % want)
    v = subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()
    major, minor = (int(x) for x in v.lstrip('v').split('.')[:2])
    if not ((major == 20 and minor >= 19) or (major == 22 and minor >= 12) or major >= 23):
        return 'node %s is too old for the pinned Redocly CLI (it wants %s)' % (v, want)
    return None


def install(dest):
    """Installs what package-lock.json pins into dest unless it is there already; returns the
    path of its redocly."""
    with open(os.path.join(HERE, 'package-lock.json')) as f:
        lock = json.load(f)
    why = node_ok(lock)
    if why:
        fail(why)
    redocly = os.path.join(dest, 'node_modules', '.bin', 'redocly')
    same = all(os.path.exists(os.path.join(dest, n)) and
               open(os.path.join(dest, n), 'rb').read() == open(os.path.join(HERE, n), 'rb').read()
               for n in PINNED)
    if same and os.access(redocly, os.X_OK):
        return redocly
    os.makedirs(dest, exist_ok=True)
    for n in PINNED:
        shutil.copyfile(os.path.join(HERE, n), os.path.join(dest, n))
    print('openapi-lint: npm ci in %s' % dest)
    r = subprocess.run(['npm', 'ci', '--no-audit', '--no-fund', '--prefer-offline',
                        '--ignore-scripts'], cwd=dest)
    if r.returncode != 0 or not os.access(redocly, os.X_OK):
        for n in PINNED:  # not "installed": the next run tries again
            os.unlink(os.path.join(dest, n))
        fail('npm ci failed in %s (it needs the npm registry once, then its cache)' % dest)
    return redocly


def json_reports(text):
    """Redocly's JSON format writes one object per document, one after another."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            return out
        out.append(obj)


def main():
    if len(sys.argv) != 3:
        fail('usage: lint.py SPEC INSTALL_DIR')
    spec, dest = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.path.isfile(spec):
        fail('no such document: %s' % spec)
    redocly = install(dest)
    env = dict(os.environ, REDOCLY_TELEMETRY='off', REDOCLY_SUPPRESS_UPDATE_NOTICE='true',
               NO_UPDATE_NOTIFIER='1')
    with tempfile.TemporaryDirectory(prefix='openapi-lint-') as tmp:
        control = os.path.join(tmp, 'control.yaml')
        with open(control, 'w') as f:
            f.write(CONTROL)
        r = subprocess.run([redocly, 'lint', '--config', os.path.join(HERE, 'redocly.yaml'),
                            '--format', 'json', spec, control],
                           capture_output=True, text=True, env=env)
    reports = json_reports(r.stdout)
    if len(reports) != 2:
        fail('redocly lint did not answer one JSON report per document (exit %d):\n%s%s'
             % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    print('openapi-lint: Redocly CLI %s' % reports[0].get('version'))
    seen_control, problems = set(), []
    for p in reports[0].get('problems', []) + reports[1].get('problems', []):
        loc = (p.get('location') or [{}])[0]
        src = loc.get('source', {}).get('ref', '?')
        if os.path.basename(src) == 'control.yaml':
            seen_control.add(p.get('ruleId'))
            continue
        start = loc.get('start', {})
        problems.append('%s:%s:%s: %s [%s] %s (%s)'
                        % (sys.argv[1], start.get('line', '?'), start.get('col', '?'),
                           p.get('severity'), p.get('ruleId'), p.get('message'),
                           loc.get('pointer', '')))
    missing = CONTROL_RULES - seen_control
    if missing:
        fail('control: the validator did not report %s in a document that breaks it: are the '
             'recommended rules on? (redocly.yaml)' % ', '.join(sorted(missing)))
    print('openapi-lint: control document: %s reported, as they must be'
          % ', '.join(sorted(seen_control)))
    for line in problems:
        print(line)
    if problems:
        fail('%d problem(s) in %s: fix the document, or turn the rule off in '
             'tools/openapi-lint/redocly.yaml saying why' % (len(problems), sys.argv[1]))
    print('openapi-lint: %s: 0 errors, 0 warnings' % sys.argv[1])


if __name__ == '__main__':
    main()
