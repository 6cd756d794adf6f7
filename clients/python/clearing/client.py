"""The client: Client (the daemon) and SandboxSession (one sandbox's operations)."""
import base64
import re
import tempfile
import time
import types
from typing import (IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type,
                    Union)
from urllib.parse import quote, urlencode

from . import _tar
from ._transport import Transport, decode_json
from .errors import (ClearingError, DaemonUnreachable, InternalError, InvalidArgument, Timeout,
                     Unavailable)
from .models import CodeResult
from .models import (ArchiveExtracted, CommitResult, Exec, ExecResult, FileEntry, FileWritten,
                     Health, Json, OutputChunk, PlanEvent, PlanReport, Process, ProcessOutput,
                     Sandbox, Snapshot)

Size = Union[int, str]
Duration = Union[int, str]
Data = Union[bytes, str]

_SANDBOX_ID = re.compile(r'^sb-[0-9a-f]{16}$')
_PROC_ID = re.compile(r'^pr-[0-9a-f]{16}$')
_EXEC_ID = re.compile(r'^ex-[0-9a-f]{16}$')
_SNAPSHOT_ID = re.compile(r'^snap-[0-9a-f]{16}$')
_SNAPSHOT_TTL = (60, 30 * 24 * 3600)  # seconds, as the daemon takes it
_DURATION = re.compile(r'^([0-9]+)(ms|s|m|h)?$')
_SIGNALS = {'HUP', 'INT', 'QUIT', 'KILL', 'USR1', 'USR2', 'TERM', 'CONT', 'STOP', 'TSTP',
            'ALRM', 'PIPE', 'WINCH'}


# ---- cheap checks, before any request ----

def _check_id(value: str, rx: 're.Pattern[str]', what: str) -> str:
    if not isinstance(value, str) or not rx.match(value):
        raise InvalidArgument('%r is not a %s id (%s)' % (value, what, rx.pattern[1:-1]))
    return value


def _snapshot_id(snapshot: Union[Snapshot, str]) -> str:
    """A Snapshot's id, or a snapshot id given as a string, checked."""
    return _check_id(snapshot.id if isinstance(snapshot, Snapshot) else snapshot, _SNAPSHOT_ID,
                     'snapshot')


def _check_path(path: str, what: str = 'path', allow_empty: bool = False) -> str:
    if not isinstance(path, str):
        raise InvalidArgument('%s must be a string, not %s' % (what, type(path).__name__))
    if not path and not allow_empty:
        raise InvalidArgument('%s is empty: name a file relative to /workspace' % what)
    if path.startswith('/'):
        raise InvalidArgument('%s %r is absolute: paths are relative to /workspace' % (what, path))
    if '..' in path.split('/') or '\0' in path:
        raise InvalidArgument("%s %r has '..' or a NUL: paths stay beneath /workspace"
                              % (what, path))
    return path


def _check_size(v: Optional[Size], what: str) -> Optional[Size]:
    if v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)
                                           and v >= 0):
        return v
    raise InvalidArgument('%s must be bytes (an int >= 0) or a size with a unit such as "512m", '
                          'not %r' % (what, v))


def _check_duration(v: Optional[Duration], what: str) -> Optional[Duration]:
    if v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)
                                           and v >= 0):
        return v
    raise InvalidArgument('%s must be seconds (an int >= 0) or a duration such as "30s", not %r'
                          % (what, v))


def _seconds(v: Optional[Duration]) -> Optional[float]:
    """A duration in seconds when the client can read it (else None: the daemon will)."""
    if isinstance(v, int):
        return float(v)
    m = _DURATION.match(v) if isinstance(v, str) else None
    if not m:
        return None
    n = int(m.group(1))
    return {'ms': n / 1000, 'm': n * 60.0, 'h': n * 3600.0}.get(m.group(2) or 's', float(n))


def _str_dict(v: Optional[Mapping[str, str]], what: str) -> Optional[Dict[str, str]]:
    if v is None:
        return None
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str)
                                             for k, x in v.items()):
        raise InvalidArgument('%s must map strings to strings' % what)
    return dict(v)


def _command(argv: Optional[Sequence[str]], shell: Optional[str], env: Optional[Mapping[str, str]],
             cwd: Optional[str], stdin: Optional[Data]) -> Json:
    """The request body's command part: exactly one of argv and shell."""
    if (argv is None) == (shell is None):
        raise InvalidArgument('give exactly one of argv (a list of strings) and shell (a string)')
    body: Json = {}
    if argv is not None:
        if isinstance(argv, (str, bytes)):
            raise InvalidArgument('argv is a list of strings, not %r: split it, or pass '
                                  'shell=%r' % (argv, argv))
        args = list(argv)
        if not args or not all(isinstance(a, str) for a in args):
            raise InvalidArgument('argv must be a non-empty list of strings, not %r' % (argv,))
        body['argv'] = args
    else:
        if not isinstance(shell, str) or not shell:
            raise InvalidArgument('shell must be a non-empty string')
        body['shell'] = shell
    e = _str_dict(env, 'env')
    if e is not None:
        body['env'] = e
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith('/'):
            raise InvalidArgument('cwd must be an absolute path inside the sandbox, not %r'
                                  % (cwd,))
        body['cwd'] = cwd
    if stdin is not None:
        if isinstance(stdin, str):
            body['stdin'] = stdin
        elif isinstance(stdin, bytes):
            body['stdin_base64'] = base64.b64encode(stdin).decode('ascii')
        else:
            raise InvalidArgument('stdin must be str or bytes')
    return body


def _as_bytes(data: Data, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode('utf-8')
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgument('%s must be bytes or str, not %s' % (what, type(data).__name__))


def _query(path: str, params: Mapping[str, Any]) -> str:
    q = {k: ('true' if v is True else 'false' if v is False else str(v))
         for k, v in params.items() if v is not None}
    return path + ('?' + urlencode(q) if q else '')


def _limits(memory: Optional[Size], cpus: Union[float, str, None], pids: Optional[int],
            lifetime: Optional[Duration], tmp_size: Optional[Size],
            workspace_size: Optional[Size], workspace_inodes: Optional[int],
            nofile: Optional[int], file_size: Optional[Size]) -> Json:
    lim: Json = {}
    for k, v in (('memory', memory), ('tmp_size', tmp_size), ('workspace_size', workspace_size),
                 ('file_size', file_size)):
        if _check_size(v, k) is not None:
            lim[k] = v
    if _check_duration(lifetime, 'lifetime') is not None:
        lim['lifetime'] = lifetime
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float, str)):
            raise InvalidArgument('cpus must be a number of cores (0.1..4), not %r' % (cpus,))
        lim['cpus'] = cpus
    for k, n in (('pids', pids), ('workspace_inodes', workspace_inodes), ('nofile', nofile)):
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidArgument('%s must be an int >= 0, not %r' % (k, n))
            lim[k] = n
    return lim


def _egress(allow: Optional[Sequence[str]], max_connections: Optional[int],
            max_bytes: Optional[Size], idle_timeout: Optional[Duration]) -> Json:
    e: Json = {}
    if allow is not None:
        if isinstance(allow, str) or not all(isinstance(a, str) for a in allow):
            raise InvalidArgument('allow is a list of HOST[:PORT] strings, not %r' % (allow,))
        e['allow'] = list(allow)
    if max_connections is not None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidArgument('max_connections must be an int (1..256)')
        e['max_connections'] = max_connections
    if _check_size(max_bytes, 'max_bytes') is not None:
        e['max_bytes'] = max_bytes
    if _check_duration(idle_timeout, 'idle_timeout') is not None:
        e['idle_timeout'] = idle_timeout
    return e


class Client:
    """The clearing daemon. host: a unix socket's path, unix:///path, or http://HOST:PORT
    (default: $CLEARING_HOST, else /run/clearing/clearing.sock, as the command line reads it);
    token: the bearer token for TCP (default $CLEARING_TOKEN); timeout: seconds to wait for an
    answer (a command's own timeout, when longer, extends it). Nothing is sent until a method
    is called; each call opens a connection of its own, so a Client may be shared by threads."""

    def __init__(self, host: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 600.0) -> None:
        self._t = Transport(host, token, timeout)

    @property
    def address(self) -> str:
        """Where the daemon is expected: "unix socket PATH" or "http://HOST:PORT"."""
        return self._t.address

    def _json(self, method: str, path: str, body: Any = None,
              timeout: Optional[float] = None) -> Any:
        _, raw = self._t.call(method, path, body, timeout)
        return decode_json(raw) if raw else None

    # ---- the daemon ----

    def health(self) -> Health:
        """GET /v1/health. A degraded daemon answers 503 with the same body: raised as
        Unavailable carrying its reasons."""
        return Health.from_json(self._json('GET', '/v1/health'))

    def metrics(self) -> str:
        """GET /metrics: Prometheus text."""
        return self._t.call('GET', '/metrics')[1].decode('utf-8', 'replace')

    # ---- sandboxes ----

    def create_sandbox(self, *, image: Optional[str] = None, memory: Optional[Size] = None,
                       cpus: Union[float, str, None] = None, pids: Optional[int] = None,
                       lifetime: Optional[Duration] = None, tmp_size: Optional[Size] = None,
                       workspace_size: Optional[Size] = None,
                       workspace_inodes: Optional[int] = None, nofile: Optional[int] = None,
                       file_size: Optional[Size] = None,
                       idle_timeout: Optional[Duration] = None,
                       env: Optional[Mapping[str, str]] = None,
                       metadata: Optional[Mapping[str, str]] = None,
                       repo: Optional[str] = None, base: Optional[str] = None,
                       branch: Optional[str] = None, reuse_branch: bool = False,
                       egress_allow: Optional[Sequence[str]] = None,
                       egress_max_connections: Optional[int] = None,
                       egress_max_bytes: Optional[Size] = None,
                       egress_idle_timeout: Optional[Duration] = None) -> 'SandboxSession':
        """POST /v1/sandboxes: a running sandbox. Used in a `with` block, it is destroyed at
        the block's end."""
        body: Json = {}
        if image is not None:
            if not isinstance(image, str) or not re.match(r'^[A-Za-z0-9._/:@-]+$', image):
                raise InvalidArgument('image %r is not an image name ([A-Za-z0-9._/:@-]+)'
                                      % (image,))
            body['image'] = image
        lim = _limits(memory, cpus, pids, lifetime, tmp_size, workspace_size, workspace_inodes,
                      nofile, file_size)
        if lim:
            body['limits'] = lim
        if _check_duration(idle_timeout, 'idle_timeout') is not None:
            body['idle_timeout'] = idle_timeout
        for k, m in (('env', env), ('metadata', metadata)):
            d = _str_dict(m, k)
            if d is not None:
                body[k] = d
        if repo is None and (base is not None or branch is not None or reuse_branch):
            raise InvalidArgument('base, branch and reuse_branch need repo')
        if repo is not None:
            if not isinstance(repo, str) or not repo.startswith('/'):
                raise InvalidArgument('repo must be the absolute path of a repository on the '
                                      "daemon's host (under its repo_roots), not %r" % (repo,))
            r: Json = {'path': repo}
            if base is not None:
                r['base'] = base
            if branch is not None:
                r['branch'] = branch
            if reuse_branch:
                r['reuse_branch'] = True
            body['repo'] = r
        eg = _egress(egress_allow, egress_max_connections, egress_max_bytes,
                     egress_idle_timeout)
        if eg:
            body['egress'] = eg
        info = Sandbox.from_json(self._json('POST', '/v1/sandboxes', body))
        return SandboxSession(self, info)

    sandbox = create_sandbox

    def attach(self, sandbox_id: str) -> 'SandboxSession':
        """A session on an existing sandbox (GET /v1/sandboxes/ID). In a `with` block it is
        destroyed at the block's end, as a created one."""
        return SandboxSession(self, self.get_sandbox(sandbox_id))

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """GET /v1/sandboxes/ID (also destroyed and lost ones)."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        return Sandbox.from_json(self._json('GET', '/v1/sandboxes/' + sandbox_id))

    def list_sandboxes(self, state: Optional[str] = None,
                       label: Optional[str] = None) -> List[Sandbox]:
        """GET /v1/sandboxes, oldest first; state: running, plan, destroyed or lost; label:
        a metadata filter KEY=VALUE."""
        if state is not None and state not in ('running', 'plan', 'destroyed', 'lost'):
            raise InvalidArgument('state must be running, plan, destroyed or lost, not %r'
                                  % (state,))
        if label is not None and (not isinstance(label, str) or '=' not in label):
            raise InvalidArgument('label must be KEY=VALUE, not %r' % (label,))
        j = self._json('GET', _query('/v1/sandboxes', {'state': state, 'label': label}))
        items = j.get('sandboxes') if isinstance(j, dict) else None
        if not isinstance(items, list):
            raise InternalError('the daemon answered a list without sandboxes: %r' % (j,))
        return [Sandbox.from_json(s) for s in items]

    def destroy_sandbox(self, sandbox_id: str, wait: bool = False) -> None:
        """DELETE /v1/sandboxes/ID (idempotent for known ids); wait: answer only once its
        container and workspace are removed."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        self._t.call('DELETE', _query('/v1/sandboxes/' + sandbox_id, {'wait': wait or None}))

    def get_exec(self, sandbox_id: str, exec_id: str) -> Exec:
        """GET /v1/sandboxes/ID/execs/EXEC_ID: an exec record again."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        _check_id(exec_id, _EXEC_ID, 'exec')
        return Exec.from_json(self._json('GET', '/v1/sandboxes/%s/execs/%s'
                                         % (sandbox_id, exec_id)))

    # ---- snapshots and forks ----

    def list_snapshots(self, sandbox_id: str) -> List[Snapshot]:
        """GET /v1/sandboxes/ID/snapshots: the sandbox's snapshots, oldest first."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        j = self._json('GET', '/v1/sandboxes/%s/snapshots' % sandbox_id)
        items = j.get('snapshots') if isinstance(j, dict) else None
        if not isinstance(items, list):
            raise InternalError('the daemon answered a list without snapshots: %r' % (j,))
        return [Snapshot.from_json(x, self) for x in items]

    def get_snapshot(self, sandbox_id: str, snapshot: Union[Snapshot, str]) -> Snapshot:
        """GET /v1/sandboxes/ID/snapshots/SNAPSHOT_ID."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        return Snapshot.from_json(self._json('GET', '/v1/sandboxes/%s/snapshots/%s'
                                             % (sandbox_id, _snapshot_id(snapshot))), self)

    def delete_snapshot(self, sandbox_id: str, snapshot: Union[Snapshot, str]) -> None:
        """DELETE /v1/sandboxes/ID/snapshots/SNAPSHOT_ID (its files and its row; audited)."""
        _check_id(sandbox_id, _SANDBOX_ID, 'sandbox')
        self._t.call('DELETE', '/v1/sandboxes/%s/snapshots/%s'
                     % (sandbox_id, _snapshot_id(snapshot)))

    def fork(self, snapshot: Union[Snapshot, str], *, memory: Optional[Size] = None,
             cpus: Union[float, str, None] = None, pids: Optional[int] = None,
             lifetime: Optional[Duration] = None, tmp_size: Optional[Size] = None,
             workspace_size: Optional[Size] = None, workspace_inodes: Optional[int] = None,
             nofile: Optional[int] = None, file_size: Optional[Size] = None,
             idle_timeout: Optional[Duration] = None,
             metadata: Optional[Mapping[str, str]] = None,
             egress_allow: Optional[Sequence[str]] = None,
             egress_max_connections: Optional[int] = None,
             egress_max_bytes: Optional[Size] = None,
             egress_idle_timeout: Optional[Duration] = None) -> 'SandboxSession':
        """POST /v1/sandboxes {"snapshot": ID}: a new sandbox (its own id and workspace) in the
        snapshot's state. It has the snapshot's sandbox's image, limits and egress policy; the
        limits and egress fields given may only tighten them (a looser one is InvalidArgument
        naming it). Used in a `with` block, it is destroyed at the block's end."""
        body: Json = {'snapshot': _snapshot_id(snapshot)}
        lim = _limits(memory, cpus, pids, lifetime, tmp_size, workspace_size, workspace_inodes,
                      nofile, file_size)
        if lim:
            body['limits'] = lim
        if _check_duration(idle_timeout, 'idle_timeout') is not None:
            body['idle_timeout'] = idle_timeout
        md = _str_dict(metadata, 'metadata')
        if md is not None:
            body['metadata'] = md
        eg = _egress(egress_allow, egress_max_connections, egress_max_bytes,
                     egress_idle_timeout)
        if eg:
            body['egress'] = eg
        return SandboxSession(self, Sandbox.from_json(self._json('POST', '/v1/sandboxes', body)))

    # ---- plans and the gauntlet ----

    def _plan_body(self, repo: str, plan: Union[Mapping[str, Any], str, None],
                   profile: Optional[str], base: Optional[str], gauntlet_only: bool) -> Json:
        if not isinstance(repo, str) or not repo.startswith('/'):
            raise InvalidArgument("repo must be the absolute path of a repository on the "
                                  "daemon's host, not %r" % (repo,))
        body: Json = {'repo': repo}
        if gauntlet_only:
            body['gauntlet_only'] = True
        elif plan is None:
            raise InvalidArgument('a plan is needed (a dict with steps, or YAML/JSON text); '
                                  'for the gauntlet alone call gauntlet()')
        if plan is not None:
            if not isinstance(plan, (str, Mapping)):
                raise InvalidArgument('plan must be a dict or YAML/JSON text')
            body['plan'] = plan if isinstance(plan, str) else dict(plan)
        if profile is not None:
            if profile not in ('python', 'c'):
                raise InvalidArgument('profile must be python or c, not %r' % (profile,))
            body['profile'] = profile
        if base is not None:
            body['base'] = base
        return body

    def run_plan(self, repo: str, plan: Union[Mapping[str, Any], str], *,
                 profile: Optional[str] = None, base: Optional[str] = None) -> PlanReport:
        """POST /v1/plans: the plan's steps in a fresh sandbox on a new branch, the gauntlet,
        a commit with the signed verdict. Waits for the report."""
        return PlanReport.from_json(self._json(
            'POST', '/v1/plans', self._plan_body(repo, plan, profile, base, False)))

    def run_plan_stream(self, repo: str, plan: Union[Mapping[str, Any], str], *,
                        profile: Optional[str] = None, base: Optional[str] = None
                        ) -> Iterator[Union[PlanEvent, PlanReport]]:
        """POST /v1/plans?stream=true: PlanEvents as they happen, the PlanReport last."""
        return self._plan_events(self._plan_body(repo, plan, profile, base, False))

    def gauntlet(self, repo: str, *, profile: Optional[str] = None,
                 base: Optional[str] = None) -> PlanReport:
        """POST /v1/plans with gauntlet_only: the gauntlet on the base commit as it is."""
        return PlanReport.from_json(self._json(
            'POST', '/v1/plans', self._plan_body(repo, None, profile, base, True)))

    def _plan_events(self, body: Json) -> Iterator[Union[PlanEvent, PlanReport]]:
        branch = ''
        events = self._t.ndjson('/v1/plans?stream=true', body)
        while True:
            try:
                ev = next(events)
            except StopIteration:
                break
            except DaemonUnreachable as e:
                # A plan has no record to read again: say what is known and what to do.
                if not branch:
                    raise
                raise DaemonUnreachable(
                    "%s. The plan's report is lost to this stream; its commit, if it gets one, "
                    "is on branch %s. run_plan() waits for the report without a stream"
                    % (e.message, branch)) from None
            name = ev.pop('event', '')
            if name == 'heartbeat':
                continue  # the daemon's keep-alive on a silent stream
            if name == 'sandbox' and isinstance(ev.get('branch'), str):
                branch = ev['branch']
            if name == 'result':
                yield PlanReport.from_json(ev)
                return
            yield PlanEvent(str(name), ev)
        raise InternalError('the plan stream ended without its report')


class SandboxSession:
    """One sandbox's operations. info: its record as last seen (refresh() reads it again).
    A context manager: the sandbox is destroyed when the `with` block ends, also on an
    exception."""

    def __init__(self, client: Client, info: Sandbox) -> None:
        self.client = client
        self.info = info
        self.id = _check_id(info.id, _SANDBOX_ID, 'sandbox')
        self._base = '/v1/sandboxes/' + self.id

    def __enter__(self) -> 'SandboxSession':
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[types.TracebackType]) -> None:
        try:
            self.destroy()
        except ClearingError:
            if exc is None:
                raise  # the block's own exception matters more than the cleanup's

    def __repr__(self) -> str:
        return 'SandboxSession(%s, %s)' % (self.id, self.client.address)

    def _json(self, method: str, sub: str, body: Any = None,
              timeout: Optional[float] = None) -> Any:
        return self.client._json(method, self._base + sub, body, timeout)

    # ---- the sandbox ----

    def refresh(self) -> Sandbox:
        """GET /v1/sandboxes/ID; also updates info."""
        self.info = self.client.get_sandbox(self.id)
        return self.info

    def destroy(self, wait: bool = False) -> None:
        """DELETE /v1/sandboxes/ID (idempotent)."""
        self.client.destroy_sandbox(self.id, wait)

    def extend(self, by: Duration) -> Sandbox:
        """POST .../extend: a longer lifetime (up to max_expires_at)."""
        if _check_duration(by, 'by') is None:
            raise InvalidArgument('by is needed: seconds or a duration such as "10m"')
        self.info = Sandbox.from_json(self._json('POST', '/extend', {'by': by}))
        return self.info

    def tighten_egress(self, allow: Sequence[str], *, max_connections: Optional[int] = None,
                       max_bytes: Optional[Size] = None,
                       idle_timeout: Optional[Duration] = None) -> Sandbox:
        """POST .../egress: a policy that replaces the old one when it is no looser (403
        Denied otherwise); allow=[] leaves nothing reachable."""
        body = _egress(allow, max_connections, max_bytes, idle_timeout)
        self.info = Sandbox.from_json(self._json('POST', '/egress', body))
        return self.info

    # ---- snapshots ----

    def snapshot(self, keep: bool = False, ttl: Optional[int] = None) -> Snapshot:
        """POST .../snapshots: a snapshot of the running sandbox (its processes, memory, /tmp
        and /workspace); the sandbox runs on. keep: it outlives the sandbox (until its ttl);
        ttl: seconds until it is removed, 60..2592000 (the daemon's default: a day).
        Unsupported where the daemon's engine cannot checkpoint."""
        if not isinstance(keep, bool):
            raise InvalidArgument('keep must be True or False, not %r' % (keep,))
        body: Json = {'keep': True} if keep else {}
        if ttl is not None:
            if (isinstance(ttl, bool) or not isinstance(ttl, int)
                    or not _SNAPSHOT_TTL[0] <= ttl <= _SNAPSHOT_TTL[1]):
                raise InvalidArgument('ttl must be whole seconds from %d to %d (30 days), not %r'
                                      % (_SNAPSHOT_TTL[0], _SNAPSHOT_TTL[1], ttl))
            body['ttl'] = ttl
        return Snapshot.from_json(self._json('POST', '/snapshots', body), self.client)

    def snapshots(self) -> List[Snapshot]:
        """GET .../snapshots: this sandbox's snapshots, oldest first."""
        return self.client.list_snapshots(self.id)

    def get_snapshot(self, snapshot: Union[Snapshot, str]) -> Snapshot:
        """GET .../snapshots/SNAPSHOT_ID."""
        return self.client.get_snapshot(self.id, snapshot)

    def delete_snapshot(self, snapshot: Union[Snapshot, str]) -> None:
        """DELETE .../snapshots/SNAPSHOT_ID."""
        self.client.delete_snapshot(self.id, snapshot)

    def restore(self, snapshot: Union[Snapshot, str]) -> Sandbox:
        """POST .../restore {"snapshot": ID}: the sandbox goes back to one of its snapshots in
        place (the same id): its processes, memory, /tmp and /workspace as they were then.
        Returns its record (and updates info)."""
        sid = _snapshot_id(snapshot)
        if isinstance(snapshot, Snapshot) and snapshot.sandbox and snapshot.sandbox != self.id:
            raise InvalidArgument('snapshot %s is of sandbox %s, not %s: a sandbox is restored '
                                  'only to its own snapshots (client.fork() makes a new '
                                  'sandbox from any of yours)' % (sid, snapshot.sandbox, self.id))
        j = self._json('POST', '/restore', {'snapshot': sid})
        self.info = Sandbox.from_json(j) if isinstance(j, dict) else self.client.get_sandbox(
            self.id)
        return self.info

    # ---- commands ----

    def _exec_body(self, argv: Optional[Sequence[str]], shell: Optional[str],
                   env: Optional[Mapping[str, str]], cwd: Optional[str], stdin: Optional[Data],
                   timeout: Optional[Duration], stdout_cap: Optional[Size],
                   stderr_cap: Optional[Size]) -> Tuple[Json, Optional[float]]:
        body = _command(argv, shell, env, cwd, stdin)
        if _check_duration(timeout, 'timeout') is not None:
            body['timeout'] = timeout
        for k, v in (('stdout_cap', stdout_cap), ('stderr_cap', stderr_cap)):
            if _check_size(v, k) is not None:
                body[k] = v
        secs = _seconds(timeout)
        wait = None if secs is None else max(self.client._t.timeout, secs + 60)
        return body, wait

    def exec(self, argv: Optional[Sequence[str]] = None, *, shell: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Optional[Data] = None, timeout: Optional[Duration] = None,
             stdout_cap: Optional[Size] = None,
             stderr_cap: Optional[Size] = None) -> ExecResult:
        """POST .../exec: runs a command and returns its result (exec_id set). A command that
        fails is a result (status, exit_code), not an exception."""
        body, wait = self._exec_body(argv, shell, env, cwd, stdin, timeout, stdout_cap,
                                     stderr_cap)
        rec = Exec.from_json(self._json('POST', '/exec', body, wait))
        if rec.result is None:
            raise InternalError('the daemon answered exec %s without a result' % rec.id)
        return rec.result

    def exec_stream(self, argv: Optional[Sequence[str]] = None, *, shell: Optional[str] = None,
                    env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                    stdin: Optional[Data] = None, timeout: Optional[Duration] = None,
                    stdout_cap: Optional[Size] = None, stderr_cap: Optional[Size] = None
                    ) -> Iterator[Union[OutputChunk, ExecResult]]:
        """POST .../exec?stream=true: yields OutputChunks as the command writes, then its
        ExecResult last. The arguments are checked when this is called. When the stream breaks
        after the command started (the daemon closes a connection idle for 60 s, also a silent
        command's stream), the result comes from the exec's record instead, once it is done;
        its stdout and stderr then hold all the output kept, chunks already seen included."""
        body, wait = self._exec_body(argv, shell, env, cwd, stdin, timeout, stdout_cap,
                                     stderr_cap)
        return self._exec_events(body, wait)

    def _exec_events(self, body: Json, wait: Optional[float]
                     ) -> Iterator[Union[OutputChunk, ExecResult]]:
        exec_id: Optional[str] = None
        events = self.client._t.ndjson(self._base + '/exec?stream=true', body, wait)
        while True:
            try:
                ev = next(events)
            except StopIteration:
                break
            except DaemonUnreachable:
                # The stream was cut (the daemon restarted, a proxy timed out): the command goes
                # on, and its record has the result (GET .../execs/ID is there for a client
                # that lost its stream).
                if exec_id is None:
                    raise
                yield self._result_after_lost_stream(exec_id, wait)
                return
            name = ev.get('event')
            if name == 'started':
                x = ev.get('exec_id')
                exec_id = x if isinstance(x, str) else None
            elif name in ('stdout', 'stderr'):
                data = ev.get('data')
                text = data if isinstance(data, str) else ''
                raw = (base64.b64decode(text) if ev.get('encoding') == 'base64'
                       else text.encode('utf-8'))
                yield OutputChunk(str(name), raw)
            elif name == 'result':
                rec = Exec.from_json(ev)
                if rec.result is None:
                    raise InternalError('the stream of exec %s ended without a result'
                                        % (rec.id or exec_id))
                yield rec.result
                return
        raise InternalError('the stream of exec %s ended without its result' % exec_id)

    def _result_after_lost_stream(self, exec_id: str, wait: Optional[float]) -> ExecResult:
        """Reads the exec's record until it is done (polling, up to 2 s apart, within wait or
        the client's timeout): its result holds the output the stream did not deliver."""
        deadline = time.monotonic() + (wait or self.client._t.timeout)
        pause = 0.1
        while True:
            rec = self.get_exec(exec_id)
            if rec.state != 'running':
                if rec.result is None:
                    raise Unavailable('exec %s is %s: its result is gone' % (exec_id, rec.state))
                return rec.result
            if time.monotonic() >= deadline:
                raise Timeout('exec %s still runs after its stream was lost' % exec_id)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def get_exec(self, exec_id: str) -> Exec:
        """GET .../execs/EXEC_ID: the record again (for a connection that was lost)."""
        return self.client.get_exec(self.id, exec_id)

    # ---- files ----

    def _file(self, path: str) -> str:
        return '/files/' + quote(_check_path(path), safe='/')

    def read_file(self, path: str) -> bytes:
        """GET .../files/PATH: a regular file's bytes (at most 1 GiB)."""
        return self.client._t.call('GET', self._base + self._file(path))[1]

    def read_text(self, path: str, encoding: str = 'utf-8') -> str:
        return self.read_file(path).decode(encoding)

    def write_file(self, path: str, data: Data) -> FileWritten:
        """PUT .../files/PATH: writes the file atomically (str as UTF-8); parents must exist."""
        raw = _as_bytes(data, 'data')
        conn, resp = self.client._t.open('PUT', self._base + self._file(path), raw,
                                         'application/octet-stream')
        try:
            return FileWritten.from_json(decode_json(resp.read()))
        finally:
            conn.close()

    def write_text(self, path: str, text: str, encoding: str = 'utf-8') -> FileWritten:
        if not isinstance(text, str):
            raise InvalidArgument('text must be a str (write_file() takes bytes)')
        return self.write_file(path, text.encode(encoding))

    def list_files(self, path: str = '') -> List[FileEntry]:
        """GET .../files?path=DIR: a directory's entries, sorted by name (symlinks described,
        never followed)."""
        _check_path(path, allow_empty=True)
        j = self._json('GET', _query('/files', {'path': path or None}))
        items = j.get('entries') if isinstance(j, dict) else None
        if not isinstance(items, list):
            raise InternalError('the daemon answered a listing without entries: %r' % (j,))
        return [FileEntry.from_json(e) for e in items]

    def delete_file(self, path: str, recursive: bool = False) -> None:
        """DELETE .../files/PATH: a file, a symlink, or a directory (recursive for a
        non-empty one)."""
        self.client._t.call('DELETE', _query(self._base + self._file(path),
                                             {'recursive': recursive or None}))

    def upload_archive(self, archive: Union[bytes, IO[bytes]], path: str = '',
                       length: Optional[int] = None) -> ArchiveExtracted:
        """PUT .../archive?path=DIR: a tar (or tar.gz) archive extracted, all or nothing. A
        file object needs its length (or is read whole)."""
        _check_path(path, allow_empty=True)
        body: Union[bytes, IO[bytes]]
        if isinstance(archive, (bytes, bytearray)):
            body = bytes(archive)
            length = len(body)
        elif length is None:
            whole = archive.read()
            body, length = whole, len(whole)
        else:
            body = archive
        conn, resp = self.client._t.open('PUT', _query(self._base + '/archive',
                                                       {'path': path or None}),
                                         body, 'application/x-tar', length)
        try:
            return ArchiveExtracted.from_json(decode_json(resp.read()))
        finally:
            conn.close()

    def upload_tree(self, local_dir: str, path: str = '') -> ArchiveExtracted:
        """Sends local_dir's contents (files, directories, symlinks as links) beneath
        /workspace/PATH as one archive."""
        with _tar.pack(local_dir) as f:
            size = f.seek(0, 2)
            f.seek(0)
            return self.upload_archive(f, path, size)

    def download_archive(self, path: str = '') -> bytes:
        """GET .../archive?path=P: a file or a directory as a pax tar archive."""
        _check_path(path, allow_empty=True)
        return self.client._t.call('GET', _query(self._base + '/archive',
                                                 {'path': path or None}))[1]

    def download_tree(self, path: str, local_dir: str) -> int:
        """Writes /workspace/PATH ('' for all of it) beneath local_dir (made if missing):
        never outside it, never through a symlink. Returns the entries written."""
        _check_path(path, allow_empty=True)
        with tempfile.TemporaryFile() as f:
            conn, resp = self.client._t.open('GET', _query(self._base + '/archive',
                                                           {'path': path or None}))
            try:
                while True:
                    buf = resp.read(1 << 20)
                    if not buf:
                        break
                    f.write(buf)
            finally:
                conn.close()
            f.seek(0)
            return _tar.extract(f, local_dir)

    # ---- background processes ----

    def start_process(self, argv: Optional[Sequence[str]] = None, *,
                      shell: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                      cwd: Optional[str] = None, stdin: Optional[Data] = None) -> Process:
        """POST .../processes: a background process (no timeout; at most 16 running)."""
        return Process.from_json(self._json('POST', '/processes',
                                            _command(argv, shell, env, cwd, stdin)))

    def list_processes(self) -> List[Process]:
        """GET .../processes."""
        j = self._json('GET', '/processes')
        items = j.get('processes') if isinstance(j, dict) else None
        if not isinstance(items, list):
            raise InternalError('the daemon answered a list without processes: %r' % (j,))
        return [Process.from_json(p) for p in items]

    def get_process(self, proc_id: str) -> Process:
        """GET .../processes/PROC_ID: with its result once it exited."""
        _check_id(proc_id, _PROC_ID, 'process')
        return Process.from_json(self._json('GET', '/processes/' + proc_id))

    def process_output(self, proc_id: str, stdout_offset: int = 0, stderr_offset: int = 0,
                       wait: Optional[Duration] = None) -> ProcessOutput:
        """GET .../processes/PROC_ID/output: output past the offsets; wait (<= 60 s) for some
        (or for the end) before answering. Follow by looping with each window's next_offset."""
        _check_id(proc_id, _PROC_ID, 'process')
        for k, v in (('stdout_offset', stdout_offset), ('stderr_offset', stderr_offset)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgument('%s must be an int >= 0, not %r' % (k, v))
        _check_duration(wait, 'wait')
        w = '%ds' % wait if isinstance(wait, int) else wait
        secs = _seconds(wait)
        t = None if secs is None else max(self.client._t.timeout, secs + 30)
        return ProcessOutput.from_json(self._json(
            'GET', _query('/processes/%s/output' % proc_id,
                          {'stdout_offset': stdout_offset, 'stderr_offset': stderr_offset,
                           'wait': w}), timeout=t))

    def wait_process(self, proc_id: str, timeout: Optional[float] = None) -> ExecResult:
        """Follows the process's output until it exits (long polls, no sleeps); returns its
        result (output by process_output()). timeout: seconds, then Timeout (the process
        goes on)."""
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidArgument('timeout must be seconds >= 0, not %r' % (timeout,))
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = 0, 0
        while True:
            left = 30 if deadline is None else min(30, int(deadline - time.monotonic()) + 1)
            o = self.process_output(proc_id, out, err, wait=max(left, 0))
            if o.result is not None:
                return o.result
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout('process %s is still running after %g s' % (proc_id, timeout or 0))
            out, err = o.stdout.next_offset, o.stderr.next_offset

    def write_stdin(self, proc_id: str, data: Data = b'', eof: bool = False) -> None:
        """POST .../processes/PROC_ID/stdin: data (str as UTF-8), and eof to close it."""
        _check_id(proc_id, _PROC_ID, 'process')
        raw = _as_bytes(data, 'data')
        body: Json = {'data_base64': base64.b64encode(raw).decode('ascii')} if raw else {}
        if eof:
            body['eof'] = True
        if not body:
            raise InvalidArgument('nothing to write: give data, or eof=True')
        self.client._t.call('POST', self._base + '/processes/%s/stdin' % proc_id, body)

    def signal_process(self, proc_id: str, signal: Union[int, str] = 'TERM') -> None:
        """POST .../processes/PROC_ID/signal: to its process group; KILL ends its whole tree.
        signal: 1..64 or a name (TERM, KILL, INT, ...; SIG prefix allowed)."""
        _check_id(proc_id, _PROC_ID, 'process')
        if isinstance(signal, bool) or not isinstance(signal, (int, str)):
            raise InvalidArgument('signal must be a number 1..64 or a name such as TERM')
        if isinstance(signal, int) and not 1 <= signal <= 64:
            raise InvalidArgument('signal %d is out of range 1..64' % signal)
        if isinstance(signal, str):
            name = signal.upper()
            name = name[3:] if name.startswith('SIG') else name
            if name not in _SIGNALS:
                raise InvalidArgument('signal %r is not one of %s' % (signal,
                                                                       ', '.join(sorted(_SIGNALS))))
            signal = name
        self.client._t.call('POST', self._base + '/processes/%s/signal' % proc_id,
                            {'signal': signal})

    # ---- the repository ----

    def diff(self) -> str:
        """GET .../diff: the workspace against the base commit, as a unified diff."""
        return self.client._t.call('GET', self._base + '/diff')[1].decode('utf-8', 'replace')

    def commit(self, message: Optional[str] = None, *, author_name: Optional[str] = None,
               author_email: Optional[str] = None,
               trailers: Optional[Sequence[str]] = None) -> CommitResult:
        """POST .../commit: the workspace as a commit on the sandbox's branch; trailers are
        "Key: value" lines (Clearing-* keys are clearing's own and refused)."""
        body: Json = {}
        for k, v in (('message', message), ('author_name', author_name),
                     ('author_email', author_email)):
            if v is not None:
                if not isinstance(v, str):
                    raise InvalidArgument('%s must be a string' % k)
                body[k] = v
        if trailers is not None:
            if isinstance(trailers, str) or not all(isinstance(t, str) and ':' in t
                                                    for t in trailers):
                raise InvalidArgument('trailers is a list of "Key: value" strings')
            body['trailers'] = list(trailers)
        return CommitResult.from_json(self._json('POST', '/commit', body))

    # ---- the code interpreter ----

    def run_code(self, code: str, *, timeout: Optional[Duration] = None,
                 output_cap: Optional[Size] = None) -> CodeResult:
        """POST .../code: a cell of Python in the sandbox's code session (a Jupyter kernel
        whose state lives from one call to the next). A cell that raises, times out or runs
        out of memory is a result (status, error), not an exception; so is a sandbox
        destroyed under the cell (status sandbox_failed). output_cap counts UTF-8 bytes."""
        if not isinstance(code, str):
            raise InvalidArgument('code must be a string of Python source')
        body: Json = {'code': code}
        if _check_duration(timeout, 'timeout') is not None:
            body['timeout'] = timeout
        if _check_size(output_cap, 'output_cap') is not None:
            body['output_cap'] = output_cap
        secs = _seconds(timeout)
        # The first cell starts a kernel; a cell that never answers ends at timeout + 60 s.
        wait = max(self.client._t.timeout, (30 if secs is None else secs) + 240)
        return CodeResult.from_json(self._json('POST', '/code', body, wait))

    def restart_code(self) -> None:
        """POST .../code/restart: a fresh kernel (variables gone, files kept)."""
        self._json('POST', '/code/restart', None, max(self.client._t.timeout, 240))

    def end_code(self) -> None:
        """DELETE .../code: ends the code session after the cells already sent (its kernel and
        variables are gone, files kept; its place in the tenant's max_code_sessions is given
        back). The next run_code starts a fresh kernel and says so (restarted, message). No
        session is no error (idempotent)."""
        self.client._t.call('DELETE', self._base + '/code',
                            timeout=max(self.client._t.timeout, 240))
