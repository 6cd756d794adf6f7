#!/usr/bin/env python3
"""A build that works where it stands, an install that works, and `clearing version` (#19).

Runs the built binary WITHOUT CLEARING_AGENT (meson's integration environment sets it; this test
removes it): the build tree's clearing must find the build tree's agent by itself, a copy or an
installed binary must not, an explicit CLEARING_AGENT wins and never falls back. `meson install`
into a scratch DESTDIR puts the CLI and the agent where the docs say. `clearing version` is
checked field by field against `runsc --version` and `docker version`, run here.

    install.py PATH/TO/clearing PROJECT_VERSION SOURCE_ROOT        (TAP on stdout)"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

n = 0
failed = 0


def check(name, ok, detail=''):
    global n, failed
    n += 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n, name))
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:15]:
            print('# ' + line)
    sys.stdout.flush()


def env_without_agent(**extra):
    env = dict(os.environ)
    env.pop('CLEARING_AGENT', None)
    env.update(extra)
    return env


def run(argv, env=None, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else env_without_agent())


def version_json(binary, *args, env=None):
    p = run([binary] + list(args) + ['--version', '--json'], env=env, timeout=120)
    try:
        return p, json.loads(p.stdout)
    except ValueError:
        return p, {}


def test_build_tree(clearing, build_agent, scratch):
    check('the build tree has its agent (positive control)', os.access(build_agent, os.X_OK),
          build_agent)
    check('CLEARING_AGENT is not in the environment of what follows',
          'CLEARING_AGENT' not in env_without_agent())
    p = run([clearing, 'run', '--', 'echo', 'where-it-stands'])
    check('build/src/clearing runs a sandbox without CLEARING_AGENT',
          p.returncode == 0 and p.stdout.strip() == 'where-it-stands',
          'exit %d\n%s%s' % (p.returncode, p.stdout, p.stderr))
    p, v = version_json(clearing)
    agent = v.get('agent', {})
    check('version names the build tree agent', agent.get('source') == 'build tree' and
          agent.get('path') == build_agent, p.stdout + p.stderr)

    # A copy is another binary: it must not pick up the build tree (an installed binary never
    # does), and says where it looked.
    copy = os.path.join(scratch, 'clearing-copy')
    shutil.copy2(clearing, copy)
    p, v = version_json(copy)
    agent = v.get('agent', {})
    check('a copy of the binary does not use the build tree\'s agent',
          p.returncode == 0 and agent.get('source') != 'build tree' and
          agent.get('path') != build_agent, p.stdout + p.stderr)
    installed = agent.get('source') == 'installed'
    if not installed:
        p = run([copy, 'run', '--', 'true'])
        check('the copy cannot run and names every place it looked (exit 125)',
              p.returncode == 125 and 'CLEARING_AGENT (not set)' in p.stderr and
              build_agent in p.stderr and 'this program is not' in p.stderr and
              'libexec/clearing/clearing-agent' in p.stderr,
              'exit %d\n%s' % (p.returncode, p.stderr))
    else:
        check('# SKIP this host has an installed agent: the copy uses it', True)

    # An explicit CLEARING_AGENT wins, and a wrong one is an error, not a fallback.
    bogus = os.path.join(scratch, 'no-such-agent')
    p = run([clearing, 'run', '--', 'true'], env=env_without_agent(CLEARING_AGENT=bogus))
    check('a CLEARING_AGENT that names nothing is an error naming it (exit 125)',
          p.returncode == 125 and bogus in p.stderr and 'CLEARING_AGENT' in p.stderr,
          'exit %d\n%s' % (p.returncode, p.stderr))
    mine = os.path.join(scratch, 'my-agent')
    shutil.copy2(build_agent, mine)
    p, v = version_json(clearing, env=env_without_agent(CLEARING_AGENT=mine))
    check('CLEARING_AGENT wins over the build tree',
          v.get('agent', {}).get('source') == 'CLEARING_AGENT' and
          v.get('agent', {}).get('path') == mine, p.stdout + p.stderr)


def test_install(clearing, scratch):
    build = os.path.dirname(os.path.dirname(clearing))
    dest = os.path.join(scratch, 'stage')
    p = run(['meson', 'install', '-C', build, '--no-rebuild', '--destdir', dest], timeout=600)
    check('meson install --destdir succeeds', p.returncode == 0,
          'exit %d\n%s%s' % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    found = {}
    for root, _dirs, files in os.walk(dest):
        for f in files:
            found.setdefault(f, []).append(os.path.relpath(os.path.join(root, f), dest))
    cli = [f for f in found.get('clearing', []) if f.endswith('bin/clearing')]
    agent = [f for f in found.get('clearing-agent', [])
             if f.endswith('libexec/clearing/clearing-agent')]
    check('the CLI is installed in bindir', len(cli) == 1, found.get('clearing'))
    check('the agent is installed in libexecdir/clearing', len(agent) == 1,
          found.get('clearing-agent'))
    if cli:
        installed_cli = os.path.join(dest, cli[0])
        p, v = version_json(installed_cli)
        a = v.get('agent', {})
        want = '/' + agent[0] if agent else None
        check('the installed CLI looks for the installed agent, never the build tree',
              p.returncode == 0 and a.get('source') != 'build tree' and
              (a.get('path') == want or want in (a.get('error') or '')),
              p.stdout + p.stderr)


def docker_field(fmt):
    p = subprocess.run(['docker', 'version', '--format', fmt], capture_output=True, text=True,
                       timeout=60)
    return p.stdout.strip() if p.returncode == 0 else None


def test_version(clearing, project_version, source_root):
    p1, v = version_json(clearing)
    p2 = run([clearing, 'version', '--json'], timeout=120)
    check('--version --json answers JSON (exit 0)', p1.returncode == 0 and v,
          p1.stdout + p1.stderr)
    check('`clearing version --json` is the same record', p2.returncode == 0 and
          json.loads(p2.stdout or '{}') == v, p2.stdout + p2.stderr)
    check('version is the project\'s', v.get('version') == project_version, v)
    g = subprocess.run(['git', '-C', source_root, 'rev-parse', '--show-toplevel', 'HEAD'],
                       capture_output=True, text=True)
    lines = g.stdout.split()
    if g.returncode == 0 and os.path.realpath(lines[0]) == os.path.realpath(source_root):
        commit = v.get('commit', '')
        check('commit is the source tree\'s HEAD', commit.split('-dirty')[0] == lines[1],
              '%s vs %s' % (commit, lines[1]))
    else:
        check('commit is "unknown" outside git', v.get('commit') == 'unknown', v)

    info = subprocess.run(['docker', 'info', '--format', '{{json .Runtimes}}'],
                          capture_output=True, text=True, timeout=60)
    runtimes = json.loads(info.stdout) if info.returncode == 0 else {}
    path = (runtimes.get('runsc') or {}).get('path')
    check('the engine has runsc registered (positive control)', bool(path), info.stdout)
    if path:
        r = subprocess.run([path, '--version'], capture_output=True, text=True, timeout=60)
        first = r.stdout.splitlines()[0] if r.stdout else ''
        check('runsc is the registered binary\'s --version',
              v.get('runsc', {}).get('version') == first and
              v.get('runsc', {}).get('path') == path, '%s vs %r' % (v.get('runsc'), first))
    server = docker_field('{{.Server.Version}}')
    api = docker_field('{{.Server.APIVersion}}')
    check('docker version answers (positive control)', server and api)
    e = v.get('engine', {})
    check('engine version and API version are docker version\'s',
          e.get('version') == server and e.get('api_version') == api,
          '%s vs %s %s' % (e, server, api))
    t = run([clearing, '--version'], timeout=120)
    check('the text form has every field', t.returncode == 0 and
          t.stdout.startswith('clearing %s\n' % project_version) and
          ('commit:  %s\n' % v.get('commit')) in t.stdout and
          ('runsc:   %s (' % v.get('runsc', {}).get('version')) in t.stdout and
          ('engine:  docker %s, API %s' % (server, api)) in t.stdout, t.stdout + t.stderr)
    b = run([clearing, 'version', '--bogus'], timeout=60)
    check('an unknown option is a usage error (exit 2)', b.returncode == 2, b.stderr)


def test_version_without_engine(clearing, scratch):
    gone = os.path.join(scratch, 'no-engine.sock')
    p, v = version_json(clearing, '--docker-host', 'unix://' + gone)
    check('engine gone: still exit 0 with the version', p.returncode == 0 and v.get('version'),
          p.stdout + p.stderr)
    check('engine gone: "not reachable", runsc "not found"',
          v.get('engine', {}).get('version') == 'not reachable' and
          v.get('runsc', {}).get('version') == 'not found' and
          gone in v.get('engine', {}).get('error', ''), v)
    # An engine that accepts the connection and never answers: the short timeout ends it.
    mute = os.path.join(scratch, 'mute.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(mute)
    s.listen(16)
    try:
        p, v = version_json(clearing, '--docker-host', 'unix://' + mute)
    except subprocess.TimeoutExpired:
        p, v = None, {}
    finally:
        s.close()
    check('an engine that never answers: "not reachable", no hang',
          p is not None and p.returncode == 0 and
          v.get('engine', {}).get('version') == 'not reachable', v)


def main():
    clearing = os.path.abspath(sys.argv[1])
    project_version, source_root = sys.argv[2], sys.argv[3]
    build_agent = os.path.join(os.path.dirname(os.path.dirname(clearing)), 'agent',
                               'clearing-agent')
    scratch = tempfile.mkdtemp(prefix='clr-install-')
    try:
        test_build_tree(clearing, build_agent, scratch)
        test_version(clearing, project_version, source_root)
        test_version_without_engine(clearing, scratch)
        test_install(clearing, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print('1..%d' % n)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
