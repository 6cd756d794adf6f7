#!/usr/bin/env python3
"""`clearing mcp` against the official MCP TypeScript SDK's client: installs the SDK that
tools/mcp-client pins (npm ci into the build directory, only when what is there is not what
package-lock.json pins), starts a daemon of its own with a git repository under its repo root,
and runs mcp_stdio.mjs (TAP) against it. Anything the test left running is destroyed at the end.
  usage: mcp_stdio.py PATH/TO/clearing BUILD_DIR
"""
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PINNED_DIR = os.path.join(HERE, '..', '..', 'tools', 'mcp-client')
PINNED = ('package.json', 'package-lock.json')
sys.path.insert(0, os.path.join(HERE, '..'))
sys.dont_write_bytecode = True
import clearing_test  # noqa: E402
from clearing_test import Daemon  # noqa: E402


def bail(msg):
    print('Bail out! ' + msg)
    sys.exit(1)


def install(dest):
    """The pinned SDK in dest/node_modules (npm ci unless it is there already): its path. Under
    an exclusive lock on dest.lock: mcp-stdio and mcp-http install into the same place and may
    run side by side."""
    if not shutil.which('node') or not shutil.which('npm'):
        bail('node and npm are needed for the MCP SDK client: install Node.js (scripts/setup.sh)')
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with open(dest.rstrip('/') + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return install_locked(dest)


def install_locked(dest):
    sdk = os.path.join(dest, 'node_modules', '@modelcontextprotocol', 'sdk')
    same = all(os.path.exists(os.path.join(dest, n)) and
               open(os.path.join(dest, n), 'rb').read() ==
               open(os.path.join(PINNED_DIR, n), 'rb').read() for n in PINNED)
    if same and os.path.isdir(sdk):
        return sdk
    os.makedirs(dest, exist_ok=True)
    for n in PINNED:
        shutil.copyfile(os.path.join(PINNED_DIR, n), os.path.join(dest, n))
    r = subprocess.run(['npm', 'ci', '--no-audit', '--no-fund', '--prefer-offline',
                        '--ignore-scripts'], cwd=dest, stdout=sys.stderr)
    if r.returncode != 0 or not os.path.isdir(sdk):
        bail('npm ci of the pinned MCP SDK failed in %s (the npm registry is needed once)' % dest)
    return sdk


def make_repo(root):
    repo = os.path.join(root, 'calc')
    os.makedirs(os.path.join(repo, '.clearing'))
    with open(os.path.join(repo, '.clearing', 'gauntlet.yaml'), 'w') as f:
        f.write('checks:\n  - name: ok\n    kind: other\n    run: "true"\n')
    with open(os.path.join(repo, 'README'), 'w') as f:
        f.write('calc\n')
    git = ['git', '-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(['git', 'init', '-q', '-b', 'main', repo], check=True)
    subprocess.run(git + ['add', '.'], check=True)
    subprocess.run(git + ['commit', '-qm', 'base'], check=True)
    return repo


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: mcp_stdio.py PATH/TO/clearing BUILD_DIR')
    clearing = os.path.abspath(sys.argv[1])
    clearing_test.CLEARING = clearing
    sdk = install(os.path.join(os.path.abspath(sys.argv[2]), 'mcp-client'))
    w = tempfile.mkdtemp(prefix='clearing-mcp-', dir='/tmp')
    roots = os.path.join(w, 'repos')
    repo = make_repo(roots)
    daemon = Daemon('mcp', args=['--repo-root', roots], prefix='clr-mcp-')
    rc = 1
    try:
        daemon.start(120)
        env = dict(os.environ, CLEARING=clearing, CLEARING_SOCK=daemon.sock, MCP_SDK=sdk,
                   MCP_REPO=repo, MCP_NOWHERE=os.path.join(w, 'no-daemon.sock'))
        env.pop('CLEARING_HOST', None)
        rc = subprocess.run(['node', os.path.join(HERE, 'mcp_stdio.mjs')], env=env,
                            timeout=3000).returncode
    finally:
        if daemon.running():
            c = daemon.client()
            left = c.get('/v1/sandboxes?state=running').json or {}
            for sb in left.get('sandboxes', []):
                c.delete('/v1/sandboxes/%s' % sb['id'])
        daemon.stop()
        shutil.rmtree(w, ignore_errors=True)
        shutil.rmtree(daemon.dir, ignore_errors=True)
    sys.exit(rc)


if __name__ == '__main__':
    main()
