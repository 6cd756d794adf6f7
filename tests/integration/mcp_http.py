#!/usr/bin/env python3
"""The daemon's /mcp (Streamable HTTP) and the narrowing header its sessions use, against a real
daemon with two tenants' tokens on TCP.

  mcp_http.py CLEARING BUILD_DIR

Narrowing (X-Clearing-Tenant / X-Clearing-Actor): refused on TCP; on the unix socket it makes
the operator see one tenant's sandboxes only, and is recorded in the audit log. Then
mcp_http.mjs drives /mcp with the SDK's StreamableHTTPClientTransport: the SDK pinned in
tools/mcp-client, installed into BUILD_DIR/mcp-client as mcp_stdio.py installs it (its install()). TAP output; every answer of the daemon is checked against
docs/openapi.yaml.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.dont_write_bytecode = True
import clearing_test as ct  # noqa: E402
from clearing_test import Client, Daemon, destroy_quietly, free_port, wait_for  # noqa: E402
from mcp_stdio import install  # noqa: E402  (the pinned SDK, installed once for both tests)

HERE = os.path.dirname(os.path.abspath(__file__))
ACME = 'acme-ci-' + os.urandom(12).hex()
GLOBEX = 'globex-ci-' + os.urandom(12).hex()
# Three more tokens of acme, other principals: 4 x 16 sessions fill the daemon's 64 (acme's
# max_mcp_sessions is 64).
MORE = ['acme-b%d-' % i + os.urandom(12).hex() for i in range(3)]
# Two tokens of initech (max_mcp_sessions 2), two of umbrella (no quota: the default, 16).
INITECH = ['initech-%d-' % i + os.urandom(12).hex() for i in range(2)]
UMBRELLA = ['umbrella-%d-' % i + os.urandom(12).hex() for i in range(2)]

results = []


def check(name, ok, detail=''):
    results.append(bool(ok))
    print(('ok - ' if ok else 'not ok - ') + name + ('' if ok or not detail else ': ' + str(detail)))
    sys.stdout.flush()


def error_of(r):
    return (r.json or {}).get('error', {}) if isinstance(r.json, dict) else {}


def ids(client, headers=None, query=''):
    r = client.get('/v1/sandboxes' + query, headers=headers)
    return r.status, {s['id'] for s in (r.json or {}).get('sandboxes', [])}


def write_private(path, content):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(content)


def test_narrowing_on_tcp(acme):
    st, _ = ids(acme)
    check('TCP: acme lists its sandboxes (positive control)', st == 200, st)
    for h in ({'X-Clearing-Tenant': 'globex'}, {'X-Clearing-Tenant': 'acme'},
              {'X-Clearing-Actor': 'mcp tenant=globex token=ci'}):
        r = acme.get('/v1/sandboxes', headers=h)
        check('TCP: %r is refused with 400' % h, r.status == 400 and
              error_of(r).get('code') == 'invalid' and
              'unix socket only' in error_of(r).get('message', ''), r)


def test_narrowing_on_unix(d, globex, made):
    op = d.client()
    r = globex.post('/v1/sandboxes', {}, timeout=180)
    check('TCP: globex creates a sandbox', r.status == 201, r)
    if r.status != 201:
        return
    sid = r.json['id']
    made.append(sid)
    st, all_ids = ids(op)
    check('unix: the operator sees globex\'s sandbox (positive control)',
          st == 200 and sid in all_ids, (st, all_ids))
    st, acme_ids = ids(op, {'X-Clearing-Tenant': 'acme'})
    check('unix narrowed to acme: globex\'s sandbox is not listed',
          st == 200 and sid not in acme_ids, (st, acme_ids))
    r = op.get('/v1/sandboxes/' + sid, headers={'X-Clearing-Tenant': 'acme'})
    check('unix narrowed to acme: globex\'s sandbox is not found', r.status == 404, r)
    st, globex_ids = ids(op, {'X-Clearing-Tenant': 'globex'})
    check('unix narrowed to globex: its sandbox is listed', st == 200 and sid in globex_ids,
          (st, globex_ids))
    r = op.get('/v1/sandboxes', headers={'X-Clearing-Tenant': 'Not A Tenant!'})
    check('unix: a malformed X-Clearing-Tenant is refused with 400',
          r.status == 400 and 'tenant name' in error_of(r).get('message', ''), r)
    r = op.get('/v1/sandboxes', headers={'X-Clearing-Actor': 'mcp "quoted"'})
    check('unix: a malformed X-Clearing-Actor is refused with 400', r.status == 400, r)
    st, actor_ids = ids(op, {'X-Clearing-Actor': 'mcp uid=0'})
    check('unix: X-Clearing-Actor alone narrows nothing (globex\'s sandbox is listed)',
          st == 200 and sid in actor_ids, (st, actor_ids))
    actor = 'mcp tenant=acme token=ci'
    r = op.post('/v1/sandboxes', {}, timeout=180,
                headers={'X-Clearing-Tenant': 'acme', 'X-Clearing-Actor': actor})
    check('unix narrowed to acme: a sandbox it creates is acme\'s',
          r.status == 201 and r.json.get('tenant') == 'acme', r)
    if r.status != 201:
        return
    made.append(r.json['id'])
    with open(os.path.join(d.state, 'audit.log')) as f:
        recs = [json.loads(line) for line in f if r.json['id'] in line]
    creates = [x['actor'] for x in recs if x['action'] == 'sandbox.create']
    check('the audit record names the narrowed actor and the unix peer',
          len(creates) == 1 and creates[0].startswith(actor + ' via uid='), creates)


def test_mcp(d, port, sdk):
    script = os.path.join(HERE, 'mcp_http.mjs')
    env = dict(os.environ, MCP_URL='http://127.0.0.1:%d/mcp' % port, ACME_TOKEN=ACME,
               GLOBEX_TOKEN=GLOBEX, MORE_TOKENS=','.join(MORE),
               INITECH_TOKENS=','.join(INITECH), UMBRELLA_TOKENS=','.join(UMBRELLA), MCP_SDK=sdk)
    p = subprocess.run(['node', script], env=env, capture_output=True, text=True, timeout=900)
    # The script prints TAP lines of its own; each one is a check of this suite.
    lines = [x for x in p.stdout.splitlines() if x.startswith(('ok - ', 'not ok - '))]
    for line in lines:
        check(line.split(' - ', 1)[1], line.startswith('ok - '))
    check('mcp_http.mjs ran its checks and exited 0', p.returncode == 0 and len(lines) > 10,
          'exit %d, %d checks; stderr: %s' % (p.returncode, len(lines), p.stderr[-3000:]))
    with open(os.path.join(d.state, 'audit.log')) as f:
        recs = [json.loads(line) for line in f]
    mine = {x['action'] for x in recs
            if x.get('actor', '').startswith('mcp tenant=acme token=ci via uid=')}
    check('the audit log records the session\'s create, exec and file write as '
          '"mcp tenant=acme token=ci via uid=..."',
          {'sandbox.create', 'file.upload'} <= mine and any(a.startswith('exec') or
                                                           a.startswith('process')
                                                           for a in mine), sorted(mine))


ACCEPT = 'application/json, text/event-stream'
INIT = {'jsonrpc': '2.0', 'id': 1, 'method': 'initialize',
        'params': {'protocolVersion': '2025-11-25', 'capabilities': {},
                   'clientInfo': {'name': 'mcp_http.py', 'version': '1'}}}


def mcp_post(target, msg, token=None, sid=None, headers=None):
    h = {'Accept': ACCEPT}
    h.update({'Authorization': 'Bearer ' + token} if token else {})
    h.update({'Mcp-Session-Id': sid} if sid else {})
    h.update(headers or {})
    return ct.request(target, 'POST', '/mcp', msg, headers=h, timeout=300)


def answer_of(r):
    """The last JSON-RPC message of an answer, whether JSON or an event stream."""
    if r.headers.get('Content-Type', '').startswith('text/event-stream'):
        msgs = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith('data: ')]
        return msgs[-1] if msgs else None
    return r.json


def test_unix_session(d):
    """The operator's session on the unix socket: not narrowed, its tools work; an Origin is
    refused."""
    r = mcp_post(d.sock, INIT, headers={'Origin': 'http://localhost'})
    check('unix socket: any Origin on /mcp is 403', r.status == 403, r)
    r = mcp_post(d.sock, INIT)
    sid = r.headers.get('Mcp-Session-Id')
    check('unix socket: (control) the same initialize without Origin opens a session',
          r.status == 200 and sid, r)
    if sid:
        mcp_post(d.sock, {'jsonrpc': '2.0', 'method': 'notifications/initialized'}, sid=sid)
        r = mcp_post(d.sock, {'jsonrpc': '2.0', 'id': 2, 'method': 'tools/call',
                              'params': {'name': 'run_command',
                                         'arguments': {'argv': ['echo', 'operator']}}},
                     sid=sid)
        a = answer_of(r) or {}
        res = a.get('result') or {}
        check('unix socket: the operator\'s session runs a command',
              not res.get('isError') and
              (res.get('structuredContent') or {}).get('stdout') == 'operator\n', a)
        # A client that goes away in the middle of a call's stream: the session goes on.
        conn = ct.connection(d.sock, 60)
        conn.request('POST', '/mcp', body=json.dumps(
            {'jsonrpc': '2.0', 'id': 3, 'method': 'tools/call',
             'params': {'name': 'run_command', 'arguments': {'command': 'sleep 2; echo x'},
                        '_meta': {'progressToken': 'p'}}}),
            headers={'Accept': ACCEPT, 'Content-Type': 'application/json',
                     'Mcp-Session-Id': sid})
        resp = conn.getresponse()
        streamed = resp.status == 200 and resp.getheader('Content-Type') == 'text/event-stream'
        conn.close()
        r = mcp_post(d.sock, {'jsonrpc': '2.0', 'id': 4, 'method': 'ping'}, sid=sid)
        check('unix socket: after a client left a call\'s stream, the session still answers',
              streamed and r.status == 200 and (r.json or {}).get('id') == 4, (streamed, r))
        r = ct.request(d.sock, 'DELETE', '/mcp', headers={'Mcp-Session-Id': sid})
        check('unix socket: the operator\'s session ends with DELETE', r.status == 204, r)


def create_in_session(port, sid, keep):
    r = mcp_post(('127.0.0.1', port), {'jsonrpc': '2.0', 'id': 5 + keep,
                                      'method': 'tools/call',
                                      'params': {'name': 'create_sandbox',
                                                 'arguments': {'keep': keep}}},
                 token=ACME, sid=sid)
    a = answer_of(r) or {}
    return ((a.get('result') or {}).get('structuredContent') or {}).get('id')


def test_stop_ends_sessions(d, port, made):
    """A daemon that stops ends its sessions: a sandbox of a session is destroyed, one created
    with keep stays (the control that the stop itself destroys nothing else)."""
    tcp = ('127.0.0.1', port)
    r = mcp_post(tcp, INIT, token=ACME)
    sid = r.headers.get('Mcp-Session-Id')
    check('a session opens for the stop test', r.status == 200 and sid, r)
    if not sid:
        return
    mcp_post(tcp, {'jsonrpc': '2.0', 'method': 'notifications/initialized'}, token=ACME, sid=sid)
    gone, kept = create_in_session(port, sid, False), create_in_session(port, sid, True)
    made.extend(x for x in (gone, kept) if x)
    acme = Client(tcp=tcp, token=ACME)
    states = {x: acme.get('/v1/sandboxes/%s' % x).json.get('state') for x in (gone, kept) if x}
    check('the session made two sandboxes, both running', gone and kept and
          set(states.values()) == {'running'}, states)
    d.stop()
    d.start()
    states = {x: acme.get('/v1/sandboxes/%s' % x).json.get('state') for x in (gone, kept) if x}
    check('after the daemon stopped: the session\'s sandbox is destroyed, the kept one runs',
          states.get(gone) == 'destroyed' and states.get(kept) == 'running', states)
    r = mcp_post(tcp, {'jsonrpc': '2.0', 'id': 9, 'method': 'ping'}, token=ACME, sid=sid)
    check('after the restart the session id is 404', r.status == 404, r)


def test_idle_reaper(made):
    """A daemon whose mcp_idle_timeout is 5 s ends an idle session as DELETE would: its sandbox
    destroyed, a kept one left running (the control that nothing else destroyed it). Short, but
    not shorter than a loaded host's pause between this test's requests on the session (the
    reaper counts whole seconds: 2 s could be a little over 1)."""
    d = Daemon('mcp-idle', prefix='clr-mcphttp-')
    config = os.path.join(d.dir, 'serve.json')
    with open(config, 'w') as f:
        json.dump({'mcp_idle_timeout': 5}, f)
    d.args = ['--config', config]
    try:
        d.start()
        r = mcp_post(d.sock, INIT)
        sid = r.headers.get('Mcp-Session-Id')
        check('idle daemon: a session opens', r.status == 200 and sid, r)
        if not sid:
            return
        mcp_post(d.sock, {'jsonrpc': '2.0', 'method': 'notifications/initialized'}, sid=sid)
        boxes = []
        for i, keep in enumerate((False, True)):
            a = answer_of(mcp_post(d.sock, {'jsonrpc': '2.0', 'id': 10 + i, 'method': 'tools/call',
                                            'params': {'name': 'create_sandbox',
                                                       'arguments': {'keep': keep}}},
                                   sid=sid)) or {}
            boxes.append(((a.get('result') or {}).get('structuredContent') or {}).get('id'))
        op = d.client()
        made_here = [b for b in boxes if b]
        exist = [op.get('/v1/sandboxes/' + b).status for b in made_here]
        check('idle daemon: the session made a sandbox and a kept one',
              len(made_here) == 2 and exist == [200, 200], (boxes, exist))
        if len(made_here) != 2:
            return
        # Watched through the REST API: a request on the session would keep it alive.
        state = {}

        def settled():
            for b in boxes:
                state[b] = op.get('/v1/sandboxes/' + b).json.get('state')
            return state[boxes[0]] == 'destroyed'
        wait_for(settled, 120)
        check('idle daemon: its sandbox is destroyed, the kept one runs',
              state.get(boxes[0]) == 'destroyed' and state.get(boxes[1]) == 'running', state)
        r = mcp_post(d.sock, {'jsonrpc': '2.0', 'id': 20, 'method': 'ping'}, sid=sid)
        check('idle daemon: the idle session ended (its id is 404)', r.status == 404, r)
    finally:
        if d.running():
            op = d.client()
            for sid in ids(op, query='?state=running')[1]:
                destroy_quietly(op, sid)
        d.stop()


def main():
    ct.CLEARING = sys.argv[1]
    build_dir = sys.argv[2]
    ct.check_answers(raises=False)
    port = free_port()
    d = Daemon('mcp-http', prefix='clr-mcphttp-')
    tokens = os.path.join(d.dir, 'tokens')
    write_private(tokens, 'acme:ci:%s\nglobex:ci:%s\n' % (ACME, GLOBEX) +
                  ''.join('acme:b%d:%s\n' % (i, t) for i, t in enumerate(MORE)) +
                  ''.join('initech:t%d:%s\n' % (i, t) for i, t in enumerate(INITECH)) +
                  ''.join('umbrella:t%d:%s\n' % (i, t) for i, t in enumerate(UMBRELLA)))
    config = os.path.join(d.dir, 'serve.json')
    with open(config, 'w') as f:
        json.dump({'tenants': {'acme': {'max_mcp_sessions': 64},
                               'initech': {'max_mcp_sessions': 2}}}, f)
    d.args = ['--config', config, '--tcp', '127.0.0.1:%d' % port, '--token-file', tokens]
    made = []
    try:
        d.start()
        acme = Client(tcp=('127.0.0.1', port), token=ACME)
        globex = Client(tcp=('127.0.0.1', port), token=GLOBEX)
        test_narrowing_on_tcp(acme)
        test_narrowing_on_unix(d, globex, made)
        test_unix_session(d)
        test_mcp(d, port, install(os.path.join(os.path.abspath(build_dir), 'mcp-client')))
        test_stop_ends_sessions(d, port, made)
        test_idle_reaper(made)
        ok, summary = ct.answer_check_summary()
        check('every answer matches docs/openapi.yaml', ok, summary)
    finally:
        op = d.client() if d.running() else None
        for sid in made:
            if op:
                destroy_quietly(op, sid)
        if op:
            # What the MCP sessions made and did not end (a failed run): the daemon's own.
            st, left = ids(op, query='?state=running')
            for sid in left:
                destroy_quietly(op, sid)
            wait_for(lambda: not ids(op, query='?state=running')[1], 60)
        d.stop()
    print('1..%d' % len(results))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
