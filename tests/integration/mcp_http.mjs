// The daemon's /mcp driven by the official MCP TypeScript SDK's StreamableHTTPClientTransport
// (tools/mcp-client pins @modelcontextprotocol/sdk) over TCP with two tenants' tokens: the
// transport's refusals (no token, a foreign Origin, GET, no session id, a bad Accept, a bad
// MCP-Protocol-Version), a session (initialize, tools/list, a sandbox, a command with progress),
// tenancy (another tenant cannot use the session id, nor reach the other tenant's sandbox
// through its tools), the session's end (DELETE destroys its sandbox), and the snapshot tools
// (another tenant's session cannot fork a snapshot). TAP.
// Run by mcp_http.py, which starts the daemon; environment: MCP_URL (http://127.0.0.1:PORT/mcp),
// ACME_TOKEN, GLOBEX_TOKEN, MORE_TOKENS (three more of acme's, comma-separated), INITECH_TOKENS
// (two of tenant initech, whose max_mcp_sessions is 2), UMBRELLA_TOKENS (two of tenant
// umbrella, which has no quota), MCP_SDK (the SDK's directory).
const { MCP_URL, ACME_TOKEN, GLOBEX_TOKEN, MORE_TOKENS, INITECH_TOKENS, UMBRELLA_TOKENS,
  MCP_SDK } = process.env;
const { Client } = await import(MCP_SDK + '/dist/esm/client/index.js');
const { StreamableHTTPClientTransport } =
  await import(MCP_SDK + '/dist/esm/client/streamableHttp.js');

const BASE = MCP_URL.replace(/\/mcp$/, '');
const LONG = { timeout: 900000, resetTimeoutOnProgress: true }; // generous: a loaded machine
const ACCEPT = 'application/json, text/event-stream';
let count = 0;
let failed = 0;

function check(name, ok, detail) {
  count += 1;
  if (!ok) failed += 1;
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}`);
  if (!ok && detail !== undefined) {
    const text = typeof detail === 'string' ? detail : JSON.stringify(detail, null, 1);
    for (const line of text.split('\n').slice(0, 30)) console.log('#   ' + line);
  }
  return ok;
}

// One request of the REST API with token: {status, body}.
async function api(token, method, path, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(BASE + path, { method, headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let j = null;
  try { j = text ? JSON.parse(text) : null; } catch { j = text; }
  return { status: r.status, body: j };
}

// A raw request to /mcp: {status, headers, body (parsed when JSON)}.
async function raw(method, headers, message) {
  const r = await fetch(MCP_URL, { method, headers,
    body: message === undefined ? undefined : JSON.stringify(message) });
  const text = await r.text();
  let j = null;
  try { j = text ? JSON.parse(text) : null; } catch { j = text; }
  return { status: r.status, headers: r.headers, body: j };
}

async function waitFor(pred, seconds) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = await pred();
    if (v || Date.now() > end) return v;
    await new Promise((res) => setTimeout(res, 500));
  }
}

function connect(token) {
  const transport = new StreamableHTTPClientTransport(new URL(MCP_URL), {
    requestInit: { headers: { Authorization: 'Bearer ' + token } },
  });
  const client = new Client({ name: 'clearing-mcp-http-test', version: '1' });
  return { client, transport };
}

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {},
    clientInfo: { name: 'raw', version: '1' } } };
const LIST = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
const acmeH = { Authorization: 'Bearer ' + ACME_TOKEN, Accept: ACCEPT,
  'Content-Type': 'application/json' };

async function refusals() {
  let r = await raw('POST', { Accept: ACCEPT, 'Content-Type': 'application/json' }, INIT);
  check('no token: 401', r.status === 401, r);
  r = await raw('POST', { ...acmeH, Origin: 'http://evil.example:80' }, INIT);
  check('an Origin that is not the daemon\'s: 403', r.status === 403 &&
    /Origin/.test(r.body?.error?.message), r);
  r = await raw('GET', { Authorization: 'Bearer ' + ACME_TOKEN, Accept: 'text/event-stream' });
  check('GET: 405 with Allow: POST, DELETE', r.status === 405 &&
    r.headers.get('allow') === 'POST, DELETE', [r.status, r.headers.get('allow')]);
  r = await raw('POST', acmeH, LIST);
  check('a request other than initialize without Mcp-Session-Id: 400', r.status === 400 &&
    /Mcp-Session-Id/.test(r.body?.error?.message), r);
  r = await raw('POST', { ...acmeH, Accept: 'application/json' }, INIT);
  check('Accept without text/event-stream: 406', r.status === 406, r);
  // Positive control of the refusals above: the same initialize, as it should be, opens one.
  const origin = new URL(MCP_URL).origin;
  r = await raw('POST', { ...acmeH, Origin: origin }, INIT);
  const sid = r.headers.get('mcp-session-id');
  check('a raw initialize with the daemon\'s own Origin opens a session', r.status === 200 &&
    /^[0-9a-f]{64}$/.test(sid || '') && r.body?.result?.protocolVersion === '2025-11-25', r);
  if (!sid) return;
  const h = { ...acmeH, 'Mcp-Session-Id': sid, 'MCP-Protocol-Version': '2025-11-25' };
  r = await raw('POST', h, { jsonrpc: '2.0', method: 'notifications/initialized' });
  check('a notification: 202 with no body', r.status === 202 && r.body === null, r);
  r = await raw('POST', h, LIST);
  check('tools/list on that session: 200 as application/json', r.status === 200 &&
    r.headers.get('content-type').startsWith('application/json') &&
    Array.isArray(r.body?.result?.tools), [r.status, r.headers.get('content-type')]);
  r = await raw('POST', h, [{ jsonrpc: '2.0', id: 10, method: 'ping' },
    { jsonrpc: '2.0', id: 11, method: 'tools/list' }]);
  check('a batch of two requests: one JSON array with both answers', r.status === 200 &&
    Array.isArray(r.body) && r.body.map((m) => m.id).sort().join() === '10,11', r);
  r = await raw('POST', h, { jsonrpc: '2.0', id: 12, method: 'ping',
    params: { pad: 'x'.repeat(2 * 1024 * 1024) } });
  check('a body over 1 MiB: 413', r.status === 413, [r.status, r.body]);
  r = await raw('POST', { ...h, 'MCP-Protocol-Version': '1900-01-01' }, LIST);
  check('an MCP-Protocol-Version other than the one agreed on: 400', r.status === 400, r);
  r = await raw('POST', { ...h, Authorization: 'Bearer ' + GLOBEX_TOKEN }, LIST);
  check('another tenant\'s token with this session id: 404', r.status === 404, r);
  r = await raw('DELETE', { ...h, Authorization: 'Bearer ' + GLOBEX_TOKEN });
  check('another tenant cannot end this session: 404', r.status === 404, r);
  r = await raw('DELETE', h);
  check('DELETE ends the session: 204', r.status === 204, r);
  r = await raw('POST', h, LIST);
  check('the ended session\'s id: 404', r.status === 404, r);
}

async function session() {
  const { client, transport } = connect(ACME_TOKEN);
  await client.connect(transport);
  check('the SDK initializes over Streamable HTTP and gets a session id',
    /^[0-9a-f]{64}$/.test(transport.sessionId || ''), transport.sessionId);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  check('tools/list names the tools', ['create_sandbox', 'exec', 'list_sandboxes']
    .every((n) => tools.includes(n)), tools);
  const made = await client.callTool({ name: 'create_sandbox', arguments: {} }, undefined, LONG);
  const sid = made.structuredContent?.id;
  check('create_sandbox makes a sandbox', !made.isError && /^sb-[0-9a-f]{16}$/.test(sid || ''),
    made);
  if (!sid) return;
  let r = await api(ACME_TOKEN, 'GET', '/v1/sandboxes/' + sid);
  check('the REST API shows it running, acme\'s', r.status === 200 &&
    r.body.state === 'running' && r.body.tenant === 'acme', r);
  const progress = [];
  // The command waits (120 s at most) for a file the test writes on the first progress
  // notification: it cannot end before one came on the stream, however loaded the machine.
  let gated = null;
  const ran = await client.callTool({ name: 'exec', arguments: { sandbox_id: sid, timeout: 180,
    command: 'echo start; i=0; while [ ! -e progress.gate ] && [ $i -lt 1200 ]; do ' +
      'sleep 0.1; i=$((i+1)); done; echo end' } }, undefined,
  { ...LONG, onprogress: (p) => {
    progress.push(p);
    gated ??= client.callTool({ name: 'write_file', arguments: { sandbox_id: sid,
      path: 'progress.gate', content: '' } }, undefined, LONG);
  } });
  await gated;
  check('exec runs the command', !ran.isError && ran.structuredContent?.exit_code === 0 &&
    /start\nend/.test(ran.structuredContent?.stdout || ''), ran);
  check('progress notifications came on the call\'s stream', progress.length >= 1, progress);
  const wrote = await client.callTool({ name: 'write_file', arguments: { sandbox_id: sid,
    path: 'notes/hello.txt', content: 'hi from mcp\n' } }, undefined, LONG);
  const file = await fetch(`${BASE}/v1/sandboxes/${sid}/files/notes/hello.txt`,
    { headers: { Authorization: 'Bearer ' + ACME_TOKEN } });
  const body = await file.text();
  check('write_file writes the file (read back through the REST API)', !wrote.isError &&
    file.status === 200 && body === 'hi from mcp\n', [wrote, file.status, body]);
  const back = await client.callTool({ name: 'read_file', arguments: { sandbox_id: sid,
    path: 'notes/hello.txt' } }, undefined, LONG);
  check('read_file reads it', back.structuredContent?.content === 'hi from mcp\n', back);
  // Bytes that are not text (NUL, not UTF-8) and text that is JSON come back exactly through
  // the daemon's own backend (its call_bytes), written through the REST API as the positive
  // control.
  const bytes = Buffer.from([0x61, 0x00, 0x62, 0xff, 0xfe, 0x00, 0x80, 0x0a, 0xc3]);
  for (const [name, data, enc] of [['bin/nul.dat', bytes, 'base64'],
    ['notes/spaced.json', Buffer.from('{ "a" :  1 }\n'), 'utf-8']]) {
    const put = await fetch(`${BASE}/v1/sandboxes/${sid}/files/${name}`, { method: 'PUT',
      headers: { Authorization: 'Bearer ' + ACME_TOKEN }, body: data });
    const got = await client.callTool({ name: 'read_file', arguments: { sandbox_id: sid,
      path: name } }, undefined, LONG);
    const c = got.structuredContent;
    const back2 = c ? Buffer.from(c.content, c.encoding === 'base64' ? 'base64' : 'utf8') : null;
    check(`read_file of ${name} over /mcp is byte-exact (${enc})`, put.status < 300 &&
      !got.isError && c?.encoding === enc && back2?.equals(data), [put.status, got]);
  }
  await tenancy(client, sid);
  await transport.terminateSession();
  const gone = await waitFor(async () => {
    r = await api(ACME_TOKEN, 'GET', '/v1/sandboxes/' + sid);
    return r.status === 404 || (r.status === 200 && r.body.state !== 'running');
  }, 120);
  check('DELETE of the session destroyed its sandbox', gone, r);
  await client.close();
}

async function tenancy(client, acmeSid) {
  const other = await api(GLOBEX_TOKEN, 'POST', '/v1/sandboxes', {});
  check('globex creates a sandbox of its own (REST)', other.status === 201, other);
  if (other.status !== 201) return;
  const gid = other.body.id;
  try {
    const r = await client.callTool({ name: 'exec', arguments: { sandbox_id: gid,
      argv: ['true'] } }, undefined, LONG);
    const text = JSON.stringify(r.content);
    check('acme\'s session cannot exec in globex\'s sandbox (not found)', r.isError === true &&
      /not found|no sandbox/i.test(text), r);
    const ok = await client.callTool({ name: 'exec', arguments: { sandbox_id: acmeSid,
      argv: ['true'] } }, undefined, LONG);
    check('(control) the same call on acme\'s own sandbox works', !ok.isError, ok);
    const all = await client.callTool({ name: 'list_sandboxes', arguments: { all: true } },
      undefined, LONG);
    const ids = (all.structuredContent?.sandboxes || []).map((s) => s.id || s);
    check('acme\'s list_sandboxes (all) holds its own sandbox and not globex\'s',
      ids.includes(acmeSid) && !ids.includes(gid), all.structuredContent);
  } finally {
    await api(GLOBEX_TOKEN, 'DELETE', '/v1/sandboxes/' + gid);
  }
}

// PUT of a file into a sandbox's workspace through the REST API (no command: runsc
// 0.0~20240729 cannot restore a sandbox whose stdio the engine attached, docs/API.md).
async function put(token, sid, path, data) {
  const r = await fetch(`${BASE}/v1/sandboxes/${sid}/files/${path}`, { method: 'PUT',
    headers: { Authorization: 'Bearer ' + token }, body: data });
  await r.text();
  return r.status;
}

// The snapshot tools over /mcp (issue #22), acme's session: snapshot, list, a fork whose
// workspace is the snapshot's, another tenant's session that cannot fork it, delete; the
// session's end destroys the fork with the sandbox. The daemon's engine can checkpoint here
// (scripts/setup.sh): a refusal is a failure, not a skip (as tests/integration/snapshots.py).
async function snapshots() {
  const { client, transport } = connect(ACME_TOKEN);
  await client.connect(transport);
  const call = (name, args) => client.callTool({ name, arguments: args }, undefined, LONG);
  const said = (r) => JSON.stringify(r.content);
  let r = await call('create_sandbox', {});
  const sid = r.structuredContent?.id;
  if (!check('snapshots: create_sandbox', !r.isError && sid, r)) return;
  check('snapshots: a file written through the REST API (control)',
    (await put(ACME_TOKEN, sid, 'before.txt', 'before\n')) < 300);
  r = await call('snapshot_sandbox', { sandbox_id: sid });
  const snap = r.structuredContent?.id;
  check('snapshot_sandbox over /mcp: a snapshot of acme\'s sandbox', !r.isError &&
    /^snap-[0-9a-f]{16}$/.test(snap || '') && r.structuredContent?.tenant === 'acme', r);
  check('... not held (no restore holds it), false as the daemon answered',
    r.structuredContent?.held === false, r);
  await put(ACME_TOKEN, sid, 'after.txt', 'after\n');
  r = await call('list_snapshots', { sandbox_id: sid });
  check('list_snapshots over /mcp: it', !r.isError &&
    (r.structuredContent?.snapshots || []).map((x) => x.id).join() === snap, r);
  check('... not held: held false, and its line (which names it) does not say held',
    r.structuredContent?.snapshots?.[0]?.held === false && said(r).includes(snap) &&
    !/held/.test(said(r)), r);
  r = await call('fork_sandbox', { snapshot_id: snap || '' });
  const fork = r.structuredContent?.id;
  check('fork_sandbox over /mcp: a new sandbox of acme\'s', !r.isError &&
    /^sb-[0-9a-f]{16}$/.test(fork || '') && fork !== sid, r);
  if (fork) {
    const rest = await api(ACME_TOKEN, 'GET', '/v1/sandboxes/' + fork);
    check('... running, acme\'s, from the snapshot (REST)', rest.status === 200 &&
      rest.body.state === 'running' && rest.body.tenant === 'acme', rest);
    r = await call('read_file', { sandbox_id: fork, path: 'before.txt' });
    const gone = await call('read_file', { sandbox_id: fork, path: 'after.txt' });
    check('... with the file written before the snapshot, not the one written after',
      r.structuredContent?.content === 'before\n' && gone.isError === true, [r, gone]);
  }
  const other = connect(GLOBEX_TOKEN);
  await other.client.connect(other.transport);
  try {
    const g = await other.client.callTool({ name: 'fork_sandbox',
      arguments: { snapshot_id: snap || '' } }, undefined, LONG);
    check('globex\'s session cannot fork acme\'s snapshot (404, as no snapshot)',
      g.isError === true && /404/.test(JSON.stringify(g.content)), g);
    const l = await other.client.callTool({ name: 'list_snapshots',
      arguments: { sandbox_id: sid } }, undefined, LONG);
    check('... nor list acme\'s sandbox\'s snapshots (404, as no sandbox)',
      l.isError === true && /404/.test(JSON.stringify(l.content)), l);
  } finally {
    await other.transport.terminateSession();
    await other.client.close();
  }
  r = await call('fork_sandbox', { snapshot_id: 'snap-xyz' });
  check('fork_sandbox with a malformed id: a tool error saying what an id is',
    r.isError === true && /not a snapshot id/.test(said(r)), r);
  r = await call('delete_snapshot', { sandbox_id: sid, snapshot_id: snap || '' });
  const left = await api(ACME_TOKEN, 'GET', `/v1/sandboxes/${sid}/snapshots`);
  check('delete_snapshot over /mcp: none left (REST)', !r.isError && left.status === 200 &&
    left.body.snapshots.length === 0, [r, left]);
  await transport.terminateSession();
  await client.close();
  let st = null;
  const ended = await waitFor(async () => {
    st = await Promise.all([sid, fork].filter(Boolean).map(
      async (id) => (await api(ACME_TOKEN, 'GET', '/v1/sandboxes/' + id)).body?.state));
    return st.every((x) => x !== 'running');
  }, 120);
  check('the session\'s end destroyed the sandbox and its fork', ended, st);
}

// Opens sessions with token until one is refused (at most limit + 1 tries): [ids, refusal].
async function fill(token, limit) {
  const h = { ...acmeH, Authorization: 'Bearer ' + token };
  const ids = [];
  for (let i = 0; i <= limit; i++) {
    const r = await raw('POST', h, INIT);
    if (r.status !== 200) return [ids, r];
    ids.push(r.headers.get('mcp-session-id'));
  }
  return [ids, null];
}

// Opens one session with token and says it is initialized: its id, or the refusal.
async function openOne(token) {
  const h = { ...acmeH, Authorization: 'Bearer ' + token };
  const r = await raw('POST', h, INIT);
  const sid = r.status === 200 ? r.headers.get('mcp-session-id') : null;
  if (sid) {
    await raw('POST', { ...h, 'Mcp-Session-Id': sid, 'MCP-Protocol-Version': '2025-11-25' },
      { jsonrpc: '2.0', method: 'notifications/initialized' });
  }
  return { sid, r };
}

async function endOne(token, sid) {
  const r = await raw('DELETE', { ...acmeH, Authorization: 'Bearer ' + token,
    'Mcp-Session-Id': sid });
  return r.status;
}

async function listsTools(token, sid) {
  const r = await raw('POST', { ...acmeH, Authorization: 'Bearer ' + token,
    'Mcp-Session-Id': sid, 'MCP-Protocol-Version': '2025-11-25' }, LIST);
  return r.status === 200 && Array.isArray(r.body?.result?.tools) && r.body.result.tools.length > 0;
}

const quotaRefusal = (r, tenant, n) => r.status === 429 && r.body?.error?.code === 'limit' &&
  new RegExp(`tenant ${tenant} is at its quota`).test(r.body?.error?.message) &&
  new RegExp(`max_mcp_sessions ${n}\\b`).test(r.body?.error?.message) &&
  /DELETE \/mcp/.test(r.body?.error?.message);

// A tenant's sessions across all its tokens are bounded (none is open when this starts):
// initech (two tokens, max_mcp_sessions 2) opens two, a third from either token is 429 naming
// the quota while another tenant still opens one, and after a DELETE initech opens one again;
// umbrella (two tokens, no quota) holds the default, 16, together.
async function tenantBound() {
  const [a, b] = INITECH_TOKENS.split(',');
  const held = [];
  for (const t of [a, b]) {
    const { sid, r } = await openOne(t);
    if (sid) held.push([t, sid]);
    else check('initech opens a session', false, r);
  }
  let answering = 0;
  for (const [t, sid] of held) answering += await listsTools(t, sid);
  check('initech\'s two tokens open a session each, both answer tools/list (control)',
    held.length === 2 && answering === 2, [held.length, answering]);
  for (const [name, t] of [['first', a], ['second', b]]) {
    const { sid, r } = await openOne(t);
    if (sid) held.push([t, sid]);
    check(`initech's third session, from its ${name} token, is 429 naming max_mcp_sessions 2`,
      !sid && quotaRefusal(r, 'initech', 2), r);
  }
  const g = await openOne(GLOBEX_TOKEN);
  check('meanwhile another tenant (globex) opens a session, which answers tools/list',
    g.sid && await listsTools(GLOBEX_TOKEN, g.sid), g.r);
  if (g.sid) await endOne(GLOBEX_TOKEN, g.sid);
  const [t0, s0] = held.shift() || [];
  check('initech ends one session with DELETE', t0 && await endOne(t0, s0) === 204, s0);
  const again = await openOne(b);
  if (again.sid) held.push([b, again.sid]);
  check('then initech opens one again, which answers tools/list',
    again.sid && await listsTools(b, again.sid), again.r);
  for (const [t, sid] of held) await endOne(t, sid);

  const [u1, u2] = UMBRELLA_TOKENS.split(',');
  const mine = [];
  let refusal = null;
  for (let i = 0; i < 17 && !refusal; i++) {
    const t = i % 2 ? u2 : u1;
    const { sid, r } = await openOne(t);
    if (sid) mine.push([t, sid]);
    else refusal = r;
  }
  check('umbrella (no quota): its two tokens hold 16 sessions together, the 17th is 429 ' +
    'naming max_mcp_sessions 16', mine.length === 16 && refusal &&
    quotaRefusal(refusal, 'umbrella', 16), [mine.length, refusal]);
  let ended = 0;
  for (const [t, sid] of mine) ended += await endOne(t, sid) === 204;
  check('umbrella\'s sessions all end with DELETE', ended === mine.length, ended);
}

// At most 16 sessions a token, 64 at once (none is open when this starts): four tokens of
// acme (whose max_mcp_sessions is 64) fill the daemon, the 17th of one token and the 65th of
// all are 429.
async function bound() {
  const tokens = [ACME_TOKEN, ...MORE_TOKENS.split(',')];
  const opened = [];
  let [ids, refusal] = await fill(tokens[0], 16);
  opened.push(...ids.map((id) => [tokens[0], id]));
  check('one token opens 16 sessions, its 17th initialize is 429', ids.length === 16 &&
    refusal?.status === 429 && /holds 16 MCP sessions/.test(refusal.body?.error?.message),
  [ids.length, refusal]);
  for (const t of tokens.slice(1)) {
    [ids, refusal] = await fill(t, 15);
    opened.push(...ids.map((id) => [t, id]));
  }
  check('four tokens hold 64 sessions', opened.length === 64, opened.length);
  [ids, refusal] = await fill(GLOBEX_TOKEN, 0);
  opened.push(...ids.map((id) => [GLOBEX_TOKEN, id]));
  check('then another tenant\'s initialize is 429: the daemon holds 64', ids.length === 0 &&
    refusal?.status === 429 && /daemon holds 64 MCP sessions/.test(refusal.body?.error?.message),
  [ids.length, refusal]);
  let ended = 0;
  for (const [t, id] of opened) {
    const r = await raw('DELETE', { ...acmeH, Authorization: 'Bearer ' + t,
      'Mcp-Session-Id': id });
    ended += r.status === 204;
  }
  check('every one of them ends with DELETE', ended === opened.length, ended);
  const r = await raw('POST', { ...acmeH, Authorization: 'Bearer ' + GLOBEX_TOKEN }, INIT);
  check('then a session opens again', r.status === 200, r);
  if (r.status === 200) {
    await raw('DELETE', { ...acmeH, Authorization: 'Bearer ' + GLOBEX_TOKEN,
      'Mcp-Session-Id': r.headers.get('mcp-session-id') });
  }
}

try {
  await refusals();
  await session();
  await snapshots();
  await tenantBound();
  await bound();
} catch (e) {
  check('no exception', false, String(e && e.stack || e));
}
console.log(`1..${count}`);
process.exit(failed ? 1 : 0);
