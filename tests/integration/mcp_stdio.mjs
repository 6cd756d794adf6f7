// `clearing mcp` driven by the official MCP TypeScript SDK's client (tools/mcp-client pins
// @modelcontextprotocol/sdk) against a real daemon: the lifecycle and version negotiation, the
// tool list, every tool once with a positive control, a cancelled long call (the command is
// killed: the REST API shows its process exited), a bad argument, a failing command, the
// session's end (kept sandboxes stay, the others are destroyed), standalone mode, and the
// snapshot tools (snapshot, list, fork, delete; restore marked RESTORE). TAP.
// Run by mcp_stdio.py, which installs the SDK and starts the daemon; environment:
//   CLEARING (the binary), CLEARING_SOCK (the daemon's socket), MCP_SDK (the SDK's directory),
//   MCP_REPO (a git repository under the daemon's repo root), MCP_NOWHERE (a socket path where
//   no daemon listens).
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import readline from 'node:readline';

const { CLEARING, CLEARING_SOCK, MCP_SDK, MCP_REPO, MCP_NOWHERE } = process.env;
const { Client } = await import(MCP_SDK + '/dist/esm/client/index.js');
const { StdioClientTransport } = await import(MCP_SDK + '/dist/esm/client/stdio.js');
const types = await import(MCP_SDK + '/dist/esm/types.js');

const LONG = { timeout: 900000, resetTimeoutOnProgress: true }; // generous: a loaded machine
let count = 0;
let failed = 0;

function check(name, ok, detail) {
  count += 1;
  if (!ok) failed += 1;
  console.log(`${ok ? 'ok' : 'not ok'} ${count} - ${name}`);
  if (!ok && detail !== undefined) {
    const text = typeof detail === 'string' ? detail : JSON.stringify(detail, null, 1);
    for (const line of text.split('\n').slice(0, 30)) console.log('#   ' + line);
  }
  return ok;
}

// One request to the daemon's REST API: {status, body}.
function api(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: CLEARING_SOCK, method, path,
      headers: data ? { 'Content-Type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let j = null;
        try { j = text ? JSON.parse(text) : null; } catch { j = text; }
        resolve({ status: res.statusCode, body: j });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// Polls pred (async) every half second until it is true or seconds passed: its last value.
async function waitFor(pred, seconds) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = await pred();
    if (v || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function connect(env, args = ['mcp']) {
  const transport = new StdioClientTransport({ command: CLEARING, args,
    env: { ...process.env, ...env }, stderr: 'inherit' });
  const client = new Client({ name: 'clearing-mcp-test', version: '1' }, { capabilities: {} });
  await client.connect(transport);
  return client;
}

const text = (r) => (r?.content ?? []).map((c) => c.text ?? '').join('\n');
const sandboxState = async (id) => (await api('GET', `/v1/sandboxes/${id}`)).body?.state;

// Raw JSON-RPC lines to a `clearing mcp` of its own: the answers to ids, by id.
async function raw(lines, ids) {
  const p = spawn(CLEARING, ['mcp'], { env: { ...process.env, CLEARING_HOST: 'unix://' + CLEARING_SOCK },
    stdio: ['pipe', 'pipe', 'inherit'] });
  const got = {};
  const rl = readline.createInterface({ input: p.stdout });
  const done = new Promise((resolve) => {
    rl.on('line', (l) => {
      const m = JSON.parse(l);
      if (m.id !== undefined) got[JSON.stringify(m.id)] = m;
      if (ids.every((i) => JSON.stringify(i) in got)) resolve();
    });
    p.on('exit', resolve);
  });
  for (const l of lines) p.stdin.write(l + '\n');
  await Promise.race([done, new Promise((r) => setTimeout(r, 60000))]);
  p.stdin.end();
  await new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)));
  return got;
}

const init = (id, v) => JSON.stringify({ jsonrpc: '2.0', id, method: 'initialize',
  params: { protocolVersion: v, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });

async function testNegotiation() {
  const latest = types.LATEST_PROTOCOL_VERSION;
  const older = types.SUPPORTED_PROTOCOL_VERSIONS[types.SUPPORTED_PROTOCOL_VERSIONS.length - 2];
  for (const [asked, want] of [[latest, latest], [older, older], ['1999-01-01', latest]]) {
    const got = await raw([init(1, asked)], [1]);
    check(`initialize asking ${asked}: the server answers ${want}`,
      got['1']?.result?.protocolVersion === want, got);
  }
  console.log(`# SDK LATEST_PROTOCOL_VERSION ${latest}; older one tried ${older}`);
  const got = await raw([
    JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/list' }),
    init(1, latest),
    JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'no/such/method' }),
    JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'no_such_tool' } }),
    JSON.stringify({ jsonrpc: '1.0', id: 4, method: 'ping' }),
    JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'ping' }),
  ], [1, 2, 3, 4, 5, 6]);
  check('before initialize a request is refused (invalid request)', got['5']?.error?.code === -32600, got);
  check('an unknown method: method not found (-32601)', got['2']?.error?.code === -32601, got);
  check('an unknown tool: invalid params (-32602)', got['3']?.error?.code === -32602, got);
  check('jsonrpc other than 2.0: invalid request (-32600)', got['4']?.error?.code === -32600, got);
  check('ping answers an empty result', JSON.stringify(got['6']?.result) === '{}', got);
}

async function testTools(client, st) {
  const { tools } = await client.listTools();
  const want = ['create_sandbox', 'run_command', 'exec', 'write_file', 'read_file', 'list_files',
    'delete_file', 'start_process', 'read_process_output', 'stop_process', 'diff', 'commit',
    'run_gauntlet', 'run_plan', 'destroy_sandbox', 'list_sandboxes', 'run_code', 'restart_code',
    'end_code', 'snapshot_sandbox', 'list_snapshots', 'fork_sandbox', 'restore_sandbox',
    'delete_snapshot'];
  const names = tools.map((t) => t.name);
  check('tools/list names every tool', want.every((n) => names.includes(n)), names);
  check('... each with an object inputSchema and a description',
    tools.every((t) => t.inputSchema?.type === 'object' && t.description), tools);
  check('... the exec tools with an outputSchema',
    tools.filter((t) => ['exec', 'run_command'].includes(t.name)).every((t) => t.outputSchema));
  // The SDK's Client validates every callTool's structuredContent against the tool's
  // outputSchema (Ajv) once listTools cached the schemas, and throws when it does not match:
  // the calls of this client that follow are checked so. Positive control: it holds a
  // validator for each tool with an outputSchema, and one tells a right value from a wrong one.
  const withSchema = tools.filter((t) => t.outputSchema);
  check('the SDK client holds an output validator for each of the ' + withSchema.length +
    ' tools with an outputSchema', withSchema.length >= 10 &&
    withSchema.every((t) => typeof client.getToolOutputValidator(t.name) === 'function'),
    withSchema.map((t) => t.name));
  const rf = client.getToolOutputValidator('read_file');
  const good = rf?.({ path: 'a', content: 'aGk=', encoding: 'base64', size: 2, truncated: false });
  const bad = rf?.({ path: 'a', content: 'aGk=', encoding: 'hex', size: 2 });
  check('... which accepts a right structuredContent and refuses a wrong one',
    good?.valid === true && bad?.valid === false, { good, bad });
  const ver = client.getServerVersion();
  check('the server names itself', ver?.name === 'clearing', ver);
  const caps = client.getServerCapabilities();
  check('capabilities: tools and logging', caps?.tools && caps?.logging, caps);
}

// The tools whose structuredContent the SDK validated against their outputSchema (a result
// with structuredContent, from a client holding the tool's validator: callTool returned).
const validated = new Set();

async function call(client, name, args, opts) {
  const r = await client.callTool({ name, arguments: args }, undefined, { ...LONG, ...(opts ?? {}) });
  if (r.structuredContent && client.getToolOutputValidator(name)) validated.add(name);
  return r;
}

// The median wall time (s) of a trivial exec through the MCP server: this run's scale for a
// command's way through the daemon and gVisor, which the host's load stretches.
async function execOverhead(client, sid) {
  const took = [];
  const failures = [];
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now();
    const r = await call(client, 'exec', { sandbox_id: sid, command: 'true' });
    if (r.isError) failures.push(r);
    took.push((Date.now() - t0) / 1000);
  }
  check('control: trivial execs succeed (the timeout scale)', failures.length === 0, failures);
  return took.sort((x, y) => x - y)[1];
}

// read_file gives back any bytes exactly: NUL and non-UTF-8 bytes base64-encoded, a PNG also
// as image content with its type (written with write_file's base64, so byte-exact).
async function testBinaryFiles(client, st) {
  const bytes = Buffer.from([0x61, 0x00, 0x62, 0xff, 0xfe, 0x00, 0x80, 0x0a, 0xc3]);
  let r = await call(client, 'write_file', { sandbox_id: st.a, path: 'bin/nul.dat',
    content: bytes.toString('base64'), encoding: 'base64' });
  const sz = await call(client, 'exec', { sandbox_id: st.a, command: 'wc -c < bin/nul.dat' });
  check('write_file of NUL and non-UTF-8 bytes: all 9 written', !r.isError &&
    sz.structuredContent?.stdout?.trim() === '9', { r, sz });
  r = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/nul.dat' });
  const got = Buffer.from(r.structuredContent?.content ?? '', 'base64');
  check('read_file of NUL and non-UTF-8 bytes: base64, byte-exact', !r.isError &&
    r.structuredContent?.encoding === 'base64' && r.structuredContent?.size === 9 &&
    got.equals(bytes), r);
  // A 1x1 PNG (RGBA, one transparent pixel).
  const png = Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010806000000' +
    '1f15c4890000000b4944415478da636000020000050001e9fadcd80000000049454e44ae426082', 'hex');
  r = await call(client, 'write_file', { sandbox_id: st.a, path: 'img/dot.png',
    content: png.toString('base64'), encoding: 'base64' });
  check('write_file of a PNG: written', !r.isError, r);
  r = await call(client, 'read_file', { sandbox_id: st.a, path: 'img/dot.png' });
  const img = r.content?.find((c) => c.type === 'image');
  check('read_file of a PNG: image content, image/png, byte-exact', !r.isError &&
    img?.mimeType === 'image/png' && Buffer.from(img?.data ?? '', 'base64').equals(png) &&
    r.structuredContent?.mime_type === 'image/png' &&
    Buffer.from(r.structuredContent?.content ?? '', 'base64').equals(png), r);
  r = await call(client, 'write_file', { sandbox_id: st.a, path: 'bin/utf.txt', content: 'h\u00e9llo \u2713\n' });
  const t = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/utf.txt' });
  check('read_file of UTF-8 text: text', !r.isError && !t.isError &&
    t.structuredContent?.encoding === 'utf-8' && t.structuredContent?.content === 'h\u00e9llo \u2713\n' &&
    t.content?.[0]?.text === 'h\u00e9llo \u2713\n', t);
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'head -c 1100000 /dev/zero > bin/big.dat' });
  const big = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/big.dat' });
  check('read_file of more than 1 MiB of binary: an error saying how to read it in parts',
    !r.isError && big.isError && /offset and length/.test(big.content?.[0]?.text ?? ''), { r, big });
  // Byte ranges (the daemon's Range support): the part past 1 MiB, base64; a character of text.
  const part = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/big.dat',
    offset: 1048576, length: 1048576 });
  const pb = Buffer.from(part.structuredContent?.content ?? '', 'base64');
  check('read_file with offset and length: the rest of the binary file, base64, byte-exact',
    !part.isError && part.structuredContent?.encoding === 'base64' &&
    part.structuredContent?.size === 1100000 && part.structuredContent?.offset === 1048576 &&
    part.structuredContent?.length === 51424 && pb.length === 51424 && pb.every((b) => b === 0) &&
    part.structuredContent?.truncated === false, { ...part, structuredContent: { ...part.structuredContent, content: undefined } });
  const ch = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/utf.txt', offset: 1, length: 2 });
  check('read_file of 2 bytes of text: the character they hold, size the whole file\'s',
    !ch.isError && ch.structuredContent?.content === '\u00e9' && ch.structuredContent?.size === 11 &&
    ch.structuredContent?.truncated === true, ch);
  const past = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/utf.txt', offset: 11 });
  check('read_file at an offset past the end: isError naming the file\'s size (HTTP 416)',
    past.isError === true && /11 bytes/.test(text(past)) && /416/.test(text(past)), past);
}

async function testEachTool(client, st) {
  let r = await call(client, 'create_sandbox', { limits: { memory: '512m' } });
  st.a = r.structuredContent?.id;
  check('create_sandbox: a running sandbox', !r.isError && (await sandboxState(st.a)) === 'running', r);
  r = await call(client, 'exec', { sandbox_id: st.a, argv: ['sh', '-c', 'echo hello'] });
  check('exec: exit 0 and its output', !r.isError && r.structuredContent?.exit_code === 0 &&
    r.structuredContent?.stdout === 'hello\n' && r.structuredContent?.wall_us > 0, r);
  const progress = [];
  // The command waits (120 s at most) for a file the test writes on the first progress
  // notification: it cannot end before one came, however loaded the machine.
  let gated = null;
  r = await call(client, 'exec', { sandbox_id: st.a, timeout: 180, command:
    'echo line1; i=0; while [ ! -e progress.gate ] && [ $i -lt 1200 ]; do sleep 0.1; ' +
    'i=$((i+1)); done; echo line2; echo line3' },
  { onprogress: (p) => {
    progress.push(p);
    gated ??= call(client, 'write_file', { sandbox_id: st.a, path: 'progress.gate', content: '' });
  } });
  await gated;
  check('exec with a progressToken: progress notifications while it runs',
    !r.isError && progress.length >= 1 && r.structuredContent?.stdout === 'line1\nline2\nline3\n',
    { progress, r });
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'cat', stdin: 'piped', timeout: 120 });
  check('exec with stdin: the command reads it, then EOF', !r.isError &&
    r.structuredContent?.stdout === 'piped', r);
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'cat; echo eof', timeout: 120 });
  check('exec without stdin: the command reads EOF (it does not wait for input)', !r.isError &&
    r.structuredContent?.stdout === 'eof\n', r);
  r = await call(client, 'write_file', { sandbox_id: st.a, path: 'bin/b.dat', content: 'aGk=', encoding: 'base64' });
  const b = await call(client, 'read_file', { sandbox_id: st.a, path: 'bin/b.dat' });
  check('write_file with base64 content: the decoded bytes', !r.isError && b.structuredContent?.content === 'hi', { r, b });
  await testBinaryFiles(client, st);
  r = await call(client, 'write_file', { sandbox_id: st.a, path: 'dir/a.txt', content: 'written\n' });
  check('write_file: written', !r.isError, r);
  r = await call(client, 'read_file', { sandbox_id: st.a, path: 'dir/a.txt' });
  check('read_file: the content written', !r.isError && r.structuredContent?.content === 'written\n', r);
  r = await call(client, 'list_files', { sandbox_id: st.a, path: 'dir' });
  check('list_files: the file', !r.isError && r.structuredContent?.entries?.some((e) => e.name === 'a.txt'), r);
  r = await call(client, 'delete_file', { sandbox_id: st.a, path: 'dir/a.txt' });
  const after = await call(client, 'list_files', { sandbox_id: st.a, path: 'dir' });
  check('delete_file: the file is gone', !r.isError && !after.isError &&
    after.structuredContent?.entries?.length === 0, { r, after });
  r = await call(client, 'start_process', { sandbox_id: st.a, command: 'echo started; sleep 600' });
  const pid = r.structuredContent?.id;
  check('start_process: a process id', !r.isError && /^pr-/.test(pid ?? ''), r);
  const out = await waitFor(async () => {
    const o = await call(client, 'read_process_output', { sandbox_id: st.a, process_id: pid, wait: 5 });
    return o.structuredContent?.stdout?.data?.includes('started') ? o : null;
  }, 60);
  check('read_process_output: its output', !!out, out);
  r = await call(client, 'stop_process', { sandbox_id: st.a, process_id: pid });
  const ended = await waitFor(async () => (await api('GET', `/v1/sandboxes/${st.a}/processes/${pid}`)).body?.state === 'exited', 60);
  check('stop_process: the process exited', !r.isError && ended, r);
  r = await call(client, 'read_process_output', { sandbox_id: st.a, process_id: pid });
  check('read_process_output without wait: the exited process\'s result', !r.isError &&
    r.structuredContent?.state === 'exited' && r.structuredContent?.result?.status === 'signaled', r);
  r = await call(client, 'run_command', { command: 'echo one-shot' });
  const sid = r.structuredContent?.sandbox_id;
  check('run_command: exit 0 and its output', !r.isError && r.structuredContent?.stdout === 'one-shot\n', r);
  check('... and its sandbox is destroyed', sid && (await sandboxState(sid)) === 'destroyed', sid);
  r = await call(client, 'create_sandbox', { repo: MCP_REPO });
  st.r = r.structuredContent?.id;
  check('create_sandbox with a repository', !r.isError && st.r, r);
  await call(client, 'write_file', { sandbox_id: st.r, path: 'new.txt', content: 'new\n' });
  r = await call(client, 'diff', { sandbox_id: st.r });
  check('diff: the new file', !r.isError && r.structuredContent?.diff?.includes('new.txt'), r);
  r = await call(client, 'commit', { sandbox_id: st.r, message: 'Add new.txt' });
  check('commit: a commit', !r.isError && /^[0-9a-f]{40}$/.test(r.structuredContent?.commit ?? '') &&
    r.structuredContent?.changed === true, r);
  r = await call(client, 'list_sandboxes', {});
  const listed = (r.structuredContent?.sandboxes ?? []).map((s) => s.id);
  check('list_sandboxes: this session\'s sandboxes', listed.includes(st.a) && listed.includes(st.r), r);
  r = await call(client, 'destroy_sandbox', { sandbox_id: st.r });
  check('destroy_sandbox: destroyed', !r.isError && (await sandboxState(st.r)) === 'destroyed', r);
  r = await call(client, 'run_gauntlet', { repo: MCP_REPO });
  check('run_gauntlet: verdict pass', !r.isError && r.structuredContent?.verdict === 'pass', r);
  r = await call(client, 'run_plan', { repo: MCP_REPO, plan: { message: 'Plan', steps: [
    { write: { path: 'p.txt', content: 'p\n' } }, { run: { argv: ['test', '-f', 'p.txt'] } }] } });
  check('run_plan: verdict pass and a commit', !r.isError && r.structuredContent?.verdict === 'pass' &&
    /^[0-9a-f]{40}$/.test(r.structuredContent?.commit ?? ''), r);
  await testRunCode(client, st);
  await testSnapshots(client);
  await testRestore(client);
  const { tools } = await client.listTools();
  const missed = tools.filter((t) => t.outputSchema && !validated.has(t.name)).map((t) => t.name);
  check('every tool with an outputSchema returned structuredContent the SDK validated against it',
    validated.size >= 10 && missed.length === 0, { validated: [...validated], missed });
}

// run_code: a Jupyter kernel in a sandbox of the datascience image; state across calls, a
// matplotlib figure as image content, an exception as an error result with its name.
async function testRunCode(client, st) {
  let r = await call(client, 'create_sandbox', { image: 'clearing/datascience:latest' });
  st.code = r.structuredContent?.id;
  check('create_sandbox of clearing/datascience', !r.isError && st.code, r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: 'x = 2', timeout: 600 });
  check('run_code: ok', !r.isError && r.structuredContent?.status === 'ok', r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: 'x * 21' });
  check('run_code: the state lives on, the value as text/plain',
    !r.isError && r.structuredContent?.result?.['text/plain'] === '42' &&
    r.content?.[0]?.text?.includes('value: 42'), r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code:
    'import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()', timeout: 600 });
  const img = r.content?.find((c) => c.type === 'image');
  check('run_code: a matplotlib figure as PNG image content', !r.isError && img &&
    img.mimeType === 'image/png' && Buffer.from(img.data, 'base64').subarray(1, 4).toString() === 'PNG', r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: '1/0' });
  check('run_code: an exception is an error result with its name', r.isError &&
    r.structuredContent?.error?.name === 'ZeroDivisionError', r);
  // restart_code: a fresh kernel, x is gone; end_code: the next cell starts another and says so.
  r = await call(client, 'restart_code', { sandbox_id: st.code });
  check('restart_code: restarted', !r.isError && r.structuredContent?.status === 'restarted' &&
    r.content?.[0]?.text?.includes('fresh kernel'), r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: 'x' });
  check('... the old kernel\'s variables are gone (NameError)', r.isError &&
    r.structuredContent?.error?.name === 'NameError', r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: 'y = 5' });
  check('... the fresh kernel runs cells', !r.isError && r.structuredContent?.status === 'ok', r);
  r = await call(client, 'end_code', { sandbox_id: st.code });
  check('end_code: ended', !r.isError && r.structuredContent?.ended === true, r);
  r = await call(client, 'run_code', { sandbox_id: st.code, code: 'y', timeout: 600 });
  check('... the next cell has a fresh kernel that says so (restarted, y gone)', r.isError &&
    r.structuredContent?.restarted === true && r.structuredContent?.error?.name === 'NameError', r);
  r = await call(client, 'end_code', { sandbox_id: 'sb-1' });
  check('end_code of a bad sandbox id: an error result that says so', r.isError &&
    r.content?.[0]?.text?.includes('not a sandbox id'), r);
  r = await call(client, 'destroy_sandbox', { sandbox_id: st.code });
  check('destroy_sandbox of the code sandbox', !r.isError, r);
}

// The snapshot tools (issue #22) on the real engine: the daemon of this test runs on dockerd
// with "experimental": true (scripts/setup.sh), so a snapshot must be taken: its refusal is a
// failure, not a skip (tests/integration/snapshots.py does the same). Files are written with
// write_file (the files API, no command): runsc 0.0~20240729 cannot restore a sandbox whose
// stdio the engine attached, i.e. after its first command (docs/API.md).
async function testSnapshots(client) {
  let r = await call(client, 'create_sandbox', {});
  const sb = r.structuredContent?.id;
  if (!check('create_sandbox for the snapshots', !r.isError && sb, r)) return;
  r = await call(client, 'write_file', { sandbox_id: sb, path: 'before.txt', content: 'before\n' });
  check('write_file before the snapshot', !r.isError, r);
  r = await call(client, 'snapshot_sandbox', { sandbox_id: sb });
  const snap = r.structuredContent;
  if (!check('snapshot_sandbox: a snapshot of the sandbox (snap- id, size, sha256)', !r.isError &&
    /^snap-[0-9a-f]{16}$/.test(snap?.id ?? '') && snap?.sandbox === sb && snap?.size > 0 &&
    snap?.sha256?.length === 64 && text(r).includes(snap.id), r)) {
    await call(client, 'destroy_sandbox', { sandbox_id: sb });
    return;
  }
  check('snapshot_sandbox: not held (no restore holds it), false as the daemon answered',
    snap.held === false, snap);
  r = await call(client, 'write_file', { sandbox_id: sb, path: 'after.txt', content: 'after\n' });
  check('write_file after the snapshot', !r.isError, r);
  r = await call(client, 'list_snapshots', { sandbox_id: sb });
  check('list_snapshots: the snapshot', !r.isError &&
    (r.structuredContent?.snapshots ?? []).map((s) => s.id).join() === snap.id &&
    text(r).includes(snap.id), r);
  check('... not held: held false, and its line (which names it: above) does not say held',
    r.structuredContent?.snapshots?.[0]?.held === false && !/held/.test(text(r)), r);
  r = await call(client, 'fork_sandbox', { snapshot_id: snap.id });
  const fork = r.structuredContent?.id;
  check('fork_sandbox: a new sandbox from the snapshot, its own id', !r.isError &&
    /^sb-[0-9a-f]{16}$/.test(fork ?? '') && fork !== sb &&
    r.structuredContent?.snapshot === snap.id && (await sandboxState(fork)) === 'running', r);
  if (fork) {
    r = await call(client, 'read_file', { sandbox_id: fork, path: 'before.txt' });
    check('the fork has the file written before the snapshot', !r.isError &&
      r.structuredContent?.content === 'before\n', r);
    const parent = await call(client, 'read_file', { sandbox_id: sb, path: 'after.txt' });
    r = await call(client, 'read_file', { sandbox_id: fork, path: 'after.txt' });
    check('... and not the one written after it (the parent has it: control)',
      !parent.isError && parent.structuredContent?.content === 'after\n' && r.isError &&
      /404/.test(text(r)), { parent, r });
    r = await call(client, 'list_sandboxes', {});
    check('the fork is this session\'s sandbox',
      (r.structuredContent?.sandboxes ?? []).some((s) => s.id === fork && s.this_session), r);
    r = await call(client, 'destroy_sandbox', { sandbox_id: fork });
    check('destroy_sandbox of the fork', !r.isError, r);
  }
  r = await call(client, 'fork_sandbox', { snapshot_id: snap.id, limits: { memory: '16g' } });
  check('fork_sandbox loosening a limit: isError naming it (the API\'s 400)', r.isError === true &&
    /limits\.memory/.test(text(r)) && /400/.test(text(r)), r);
  r = await call(client, 'fork_sandbox', { snapshot_id: 'snap-1' });
  check('fork_sandbox with a malformed snapshot_id: isError saying what an id is',
    r.isError === true && /not a snapshot id/.test(text(r)), r);
  r = await call(client, 'fork_sandbox', { snapshot_id: 'snap-0000000000000000' });
  check('fork_sandbox of no such snapshot: isError with the API\'s 404', r.isError === true &&
    /snap-0000000000000000/.test(text(r)) && /404/.test(text(r)), r);
  r = await call(client, 'fork_sandbox', {});
  check('fork_sandbox without snapshot_id: isError naming it', r.isError === true &&
    /snapshot_id/.test(text(r)), r);
  r = await call(client, 'snapshot_sandbox', { sandbox_id: sb, ttl: 5 });
  check('snapshot_sandbox with ttl 5: isError naming ttl', r.isError === true &&
    /ttl/.test(text(r)), r);
  r = await call(client, 'delete_snapshot', { sandbox_id: sb, snapshot_id: 'nonsense' });
  check('delete_snapshot with a malformed snapshot_id: isError', r.isError === true &&
    /not a snapshot id/.test(text(r)), r);
  r = await call(client, 'delete_snapshot', { sandbox_id: sb, snapshot_id: snap.id });
  const left = await api('GET', `/v1/sandboxes/${sb}/snapshots`);
  check('delete_snapshot: gone (REST API lists none)', !r.isError && left.status === 200 &&
    left.body?.snapshots?.length === 0, { r, left });
  r = await call(client, 'delete_snapshot', { sandbox_id: sb, snapshot_id: snap.id });
  check('delete_snapshot again: isError with the API\'s 404', r.isError === true &&
    /404/.test(text(r)), r);
  await call(client, 'destroy_sandbox', { sandbox_id: sb });
}

// RESTORE (issue #22): restore_sandbox, once POST /v1/sandboxes/{id}/restore is in the daemon.
// A file written after the snapshot and one changed after it: after the restore, the same
// sandbox (same id) has the content of the snapshot's time.
async function testRestore(client) {
  let r = await call(client, 'create_sandbox', {});
  const sb = r.structuredContent?.id;
  if (!check('RESTORE: create_sandbox', !r.isError && sb, r)) return;
  await call(client, 'write_file', { sandbox_id: sb, path: 'state.txt', content: 'v1\n' });
  r = await call(client, 'snapshot_sandbox', { sandbox_id: sb });
  const snap = r.structuredContent?.id;
  check('RESTORE: snapshot_sandbox', !r.isError && snap, r);
  await call(client, 'write_file', { sandbox_id: sb, path: 'state.txt', content: 'v2\n' });
  await call(client, 'write_file', { sandbox_id: sb, path: 'later.txt', content: 'later\n' });
  r = await call(client, 'read_file', { sandbox_id: sb, path: 'state.txt' });
  check('RESTORE: the file changed after the snapshot (control)',
    r.structuredContent?.content === 'v2\n', r);
  r = await call(client, 'restore_sandbox', { sandbox_id: sb, snapshot_id: snap ?? '' });
  check('RESTORE: restore_sandbox answers, the same sandbox running', !r.isError &&
    (await sandboxState(sb)) === 'running', r);
  r = await call(client, 'read_file', { sandbox_id: sb, path: 'state.txt' });
  check('RESTORE: the file has its content of the snapshot\'s time',
    r.structuredContent?.content === 'v1\n', r);
  r = await call(client, 'read_file', { sandbox_id: sb, path: 'later.txt' });
  check('RESTORE: the file written after the snapshot is gone', r.isError === true &&
    /404/.test(text(r)), r);
  // The restore held the snapshot until the sandbox ran again (snapshots.py sees the hold).
  r = await call(client, 'list_snapshots', { sandbox_id: sb });
  const after = (r.structuredContent?.snapshots ?? []).find((s) => s.id === snap);
  check('RESTORE: list_snapshots: the snapshot still there, released (held false)', !r.isError &&
    after?.held === false && text(r).includes(snap) && !/held/.test(text(r)), r);
  r = await call(client, 'restore_sandbox', { sandbox_id: sb, snapshot_id: 'snap-0000000000000000' });
  check('RESTORE: restore_sandbox to no such snapshot: isError with the API\'s 404',
    r.isError === true && /404/.test(text(r)), r);
  r = await call(client, 'restore_sandbox', { sandbox_id: sb });
  check('RESTORE: restore_sandbox without snapshot_id: isError naming it', r.isError === true &&
    /snapshot_id/.test(text(r)), r);
  await call(client, 'destroy_sandbox', { sandbox_id: sb });
}

async function testCancel(client, st) {
  const ac = new AbortController();
  const pending = call(client, 'exec', { sandbox_id: st.a, command: 'sleep 600' }, { signal: ac.signal })
    .then((r) => ({ r }), (e) => ({ e }));
  // Positive control: the command runs (the daemon lists its process) before it is cancelled.
  const proc = await waitFor(async () => {
    const ps = (await api('GET', `/v1/sandboxes/${st.a}/processes`)).body?.processes ?? [];
    return ps.find((p) => p.state === 'running' && p.request?.shell === 'sleep 600');
  }, 60);
  check('a long exec (sleep 600) runs', !!proc);
  ac.abort('the test cancels it');
  const got = await pending;
  check('... cancelled through the SDK (AbortSignal): the call ends without a result', !!got.e, got);
  const killed = proc && await waitFor(async () =>
    (await api('GET', `/v1/sandboxes/${st.a}/processes/${proc.id}`)).body?.state === 'exited', 60);
  const rec = proc && (await api('GET', `/v1/sandboxes/${st.a}/processes/${proc.id}`)).body;
  check('... and the command was killed: its process exited (REST API)', killed &&
    rec?.result?.status === 'signaled', rec);
}

// A cancelled run_plan stops the plan: the daemon cancels a streamed plan whose client went
// away, so its sandbox is destroyed long before its step (sleep 600) would end.
async function testCancelPlan(client) {
  const before = new Set(((await api('GET', '/v1/sandboxes')).body?.sandboxes ?? []).map((s) => s.id));
  const ac = new AbortController();
  const pending = call(client, 'run_plan', { repo: MCP_REPO, plan: { message: 'Held', steps: [
    { run: { argv: ['sleep', '600'], timeout: '900s' } }] } }, { signal: ac.signal })
    .then((r) => ({ r }), (e) => ({ e }));
  // Positive control: the plan's sandbox exists and runs the plan.
  const sb = await waitFor(async () =>
    ((await api('GET', '/v1/sandboxes')).body?.sandboxes ?? [])
      .find((s) => s.state === 'plan' && !before.has(s.id)), 120);
  check('a run_plan with a step of sleep 600 holds a sandbox in state plan', !!sb);
  ac.abort('the test cancels it');
  const got = await pending;
  check('... cancelled through the SDK (AbortSignal): the call ends without a result', !!got.e, got);
  const gone = sb && await waitFor(async () =>
    (await api('GET', `/v1/sandboxes/${sb.id}`)).body?.state === 'destroyed', 90);
  check('... and the plan stopped: its sandbox destroyed within 90 s (REST API)', !!gone,
    sb && (await api('GET', `/v1/sandboxes/${sb.id}`)).body);
}

async function testErrors(client, st) {
  let r = await call(client, 'exec', { sandbox_id: st.a, argv: 'not-an-array' });
  check('a bad argument: isError, the text names the field', r.isError === true && /argv/.test(text(r)), r);
  r = await call(client, 'exec', { sandbox_id: st.a });
  check('no command: isError saying what to give', r.isError === true && /command/.test(text(r)), r);
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'true', bogus: 1 });
  check('an unknown field: isError naming it', r.isError === true && /bogus/.test(text(r)), r);
  r = await call(client, 'exec', { sandbox_id: 'sb-00000000000000ab', command: 'true' });
  check('an unknown sandbox: isError with the API\'s answer in words',
    r.isError === true && /sb-00000000000000ab/.test(text(r)) && /404/.test(text(r)), r);
  // The shell's start and its first line come before the timeout: a deadline scaled by what a
  // trivial exec takes on this host in this run (a fixed 2 s could end it first under load).
  const limit = Math.max(2, Math.ceil(20 * await execOverhead(client, st.a)));
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'echo before; sleep 600', timeout: limit });
  const tp = r.structuredContent?.process_id;
  const trec = tp && (await api('GET', `/v1/sandboxes/${st.a}/processes/${tp}`)).body;
  check('a command past its timeout: isError, status timed_out, its output, killed (REST API)',
    r.isError === true && r.structuredContent?.status === 'timed_out' &&
    r.structuredContent?.exit_code === null && r.structuredContent?.stdout === 'before\n' &&
    r.structuredContent?.wall_us > 0 && trec?.state === 'exited', { r, trec });
  r = await call(client, 'exec', { sandbox_id: st.a, command: 'echo failing >&2; exit 3' });
  check('a failing command (exit 3): isError, structuredContent exit_code 3',
    r.isError === true && r.structuredContent?.exit_code === 3 &&
    r.structuredContent?.stderr === 'failing\n', r);
}

async function testSessionEnd() {
  const client = await connect({ CLEARING_HOST: 'unix://' + CLEARING_SOCK });
  let r = await call(client, 'create_sandbox', { keep: true });
  const kept = r.structuredContent?.id;
  r = await call(client, 'create_sandbox', {});
  const gone = r.structuredContent?.id;
  check('a session with two sandboxes open, one kept', kept && gone &&
    (await sandboxState(kept)) === 'running' && (await sandboxState(gone)) === 'running', r);
  await client.close();
  const ok = await waitFor(async () => (await sandboxState(gone)) === 'destroyed', 120);
  const running = ((await api('GET', '/v1/sandboxes?state=running')).body?.sandboxes ?? []).map((s) => s.id);
  check('after the client closed: the kept one runs, the other is destroyed',
    ok && running.includes(kept) && !running.includes(gone), { running, kept, gone });
  const del = await api('DELETE', `/v1/sandboxes/${kept}`);
  check('... and the kept one is destroyed through the API', del.status === 204, del);
}

async function testSigterm() {
  const p = spawn(CLEARING, ['mcp'], { env: { ...process.env, CLEARING_HOST: 'unix://' + CLEARING_SOCK },
    stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: p.stdout });
  const exited = new Promise((r) => p.on('exit', (code, sig) => r({ code, sig })));
  const created = new Promise((resolve) => {
    rl.on('line', (l) => {
      const m = JSON.parse(l);
      if (m.id === 2) resolve(m.result?.structuredContent?.id);
    });
    setTimeout(() => resolve(null), 120000);
  });
  p.stdin.write(init(1, types.LATEST_PROTOCOL_VERSION) + '\n');
  p.stdin.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');
  p.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call',
    params: { name: 'create_sandbox', arguments: {} } }) + '\n');
  const id = await created;
  check('a raw session created a sandbox', id && (await sandboxState(id)) === 'running', id);
  p.kill('SIGTERM'); // stdin stays open: the signal alone ends the session
  const how = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 120000))]);
  check('SIGTERM ends the session: exit 0, its sandbox destroyed', how?.code === 0 &&
    id && (await sandboxState(id)) === 'destroyed', how);
  if (!how) p.kill('SIGKILL');
}

async function testStandalone() {
  const h = spawnSync(CLEARING, ['mcp', '--help'], { encoding: 'utf8', timeout: 60000 });
  check('clearing mcp --help: the agent host configuration and --standalone', h.status === 0 &&
    h.stdout.includes('"mcpServers"') && h.stdout.includes('--standalone'), h);
  const bad = spawnSync(CLEARING, ['mcp', '--bogus'], { encoding: 'utf8', timeout: 60000 });
  check('an unknown option: usage error (2)', bad.status === 2 && bad.stdout === '', bad);
  const lim = spawnSync(CLEARING, ['mcp', '--memory', '1g'], { encoding: 'utf8', timeout: 60000,
    input: '', env: { ...process.env, CLEARING_HOST: 'unix://' + CLEARING_SOCK } });
  check('a limit option with a daemon: said to be for --standalone only; EOF ends it (0)',
    lim.status === 0 && /--standalone only/.test(lim.stderr) && lim.stdout === '', lim);
  const env = { ...process.env, CLEARING_HOST: 'unix://' + MCP_NOWHERE };
  const r = spawnSync(CLEARING, ['mcp'], { env, input: '', encoding: 'utf8', timeout: 60000 });
  check('CLEARING_HOST naming a socket with no daemon: an error, not standalone',
    r.status === 125 && /--standalone/.test(r.stderr) && r.stdout === '', r);
  const env2 = { ...process.env };
  delete env2.CLEARING_HOST;
  const client = await connect(env2, ['mcp', '--standalone']);
  const res = await call(client, 'run_command', { command: 'echo standalone' });
  check('--standalone: a command runs with no daemon', !res.isError &&
    res.structuredContent?.stdout === 'standalone\n', res);
  await client.close();
}

async function main() {
  const st = {};
  try {
    await testNegotiation();
    const client = await connect({ CLEARING_HOST: 'unix://' + CLEARING_SOCK });
    await client.setLoggingLevel('debug');
    check('logging/setLevel debug accepted', true);
    await testTools(client, st);
    await testEachTool(client, st);
    await testCancel(client, st);
    await testCancelPlan(client);
    await testErrors(client, st);
    await client.close();
    check('the session\'s sandbox is destroyed when it ends',
      await waitFor(async () => (await sandboxState(st.a)) === 'destroyed', 120), st);
    await testSessionEnd();
    await testSigterm();
    await testStandalone();
  } catch (e) {
    check('no exception', false, String(e?.stack ?? e));
  }
  console.log(`1..${count}`);
  process.exit(failed ? 1 : 0);
}

await main();
