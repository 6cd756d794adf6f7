"""Typed results: the API's answers (docs/openapi.yaml) as dataclasses.

Every class has `from_json(obj)`, which takes the daemon's JSON object; fields the daemon leaves
out get their zero value, and `raw` keeps the whole object for what a class does not name."""
import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from .errors import InternalError, InvalidArgument

if TYPE_CHECKING:
    from .client import Client

Json = Dict[str, Any]


def _obj(v: Any, what: str) -> Json:
    if not isinstance(v, dict):
        raise InternalError('the daemon answered %s that is not a JSON object: %r'
                            % (what, v if not isinstance(v, (bytes, str)) else v[:200]))
    return v


def _str(d: Json, k: str, default: str = '') -> str:
    v = d.get(k)
    return v if isinstance(v, str) else default


def _opt_str(d: Json, k: str) -> Optional[str]:
    v = d.get(k)
    return v if isinstance(v, str) else None


def _int(d: Json, k: str, default: int = 0) -> int:
    v = d.get(k)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _opt_int(d: Json, k: str) -> Optional[int]:
    v = d.get(k)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _bool(d: Json, k: str) -> bool:
    return d.get(k) is True


def _str_list(d: Json, k: str) -> List[str]:
    v = d.get(k)
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _str_map(d: Json, k: str) -> Dict[str, str]:
    v = d.get(k)
    if not isinstance(v, dict):
        return {}
    return {str(a): b for a, b in v.items() if isinstance(b, str)}


def _bytes(d: Json, data_key: str, encoding_key: str) -> bytes:
    """A stream's bytes: the API sends UTF-8 text as it is, anything else as base64."""
    data = _str(d, data_key)
    if d.get(encoding_key) == 'base64':
        return base64.b64decode(data)
    return data.encode('utf-8')


@dataclass
class ExecResult:
    """A command's result, as the agent measured it. status: exited, signaled, timed_out, oom,
    start_failed or sandbox_failed; exit_code / signal: None unless exited / signaled. stdout and
    stderr are the bytes kept (at most the caps); *_bytes all the command wrote; *_truncated
    whether bytes were dropped. Times in microseconds, memory in bytes."""
    status: str
    exit_code: Optional[int]
    signal: Optional[int]
    stdout: bytes
    stderr: bytes
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool
    wall_us: int
    cpu_user_us: int
    cpu_system_us: int
    peak_memory_bytes: int
    killed_processes: int
    sandbox_killed: bool
    message: Optional[str]
    exec_id: Optional[str] = None
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any, exec_id: Optional[str] = None) -> 'ExecResult':
        d = _obj(obj, 'a result')
        return cls(status=_str(d, 'status'), exit_code=_opt_int(d, 'exit_code'),
                   signal=_opt_int(d, 'signal'),
                   stdout=_bytes(d, 'stdout', 'stdout_encoding'),
                   stderr=_bytes(d, 'stderr', 'stderr_encoding'),
                   stdout_bytes=_int(d, 'stdout_bytes'), stderr_bytes=_int(d, 'stderr_bytes'),
                   stdout_truncated=_bool(d, 'stdout_truncated'),
                   stderr_truncated=_bool(d, 'stderr_truncated'),
                   wall_us=_int(d, 'wall_us'), cpu_user_us=_int(d, 'cpu_user_us'),
                   cpu_system_us=_int(d, 'cpu_system_us'),
                   peak_memory_bytes=_int(d, 'peak_memory_bytes'),
                   killed_processes=_int(d, 'killed_processes'),
                   sandbox_killed=_bool(d, 'sandbox_killed'), message=_opt_str(d, 'message'),
                   exec_id=exec_id, raw=d)

    @property
    def ok(self) -> bool:
        """The command exited with status 0."""
        return self.status == 'exited' and self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        """stdout as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode('utf-8', 'replace')

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode('utf-8', 'replace')

    @property
    def wall_seconds(self) -> float:
        return self.wall_us / 1e6


@dataclass
class Exec:
    """An exec record (GET .../execs/ID): state running, done or lost; result None while it
    runs."""
    id: str
    sandbox_id: str
    state: str
    result: Optional[ExecResult]
    request: Json
    created_at: int
    finished_at: int
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> 'Exec':
        d = _obj(obj, 'an exec record')
        res = d.get('result')
        req = d.get('request')
        return cls(id=_str(d, 'id'), sandbox_id=_str(d, 'sandbox_id'), state=_str(d, 'state'),
                   result=ExecResult.from_json(res, _str(d, 'id')) if isinstance(res, dict)
                   else None,
                   request=req if isinstance(req, dict) else {},
                   created_at=_int(d, 'created_at'), finished_at=_int(d, 'finished_at'), raw=d)


@dataclass
class OutputChunk:
    """Output of a streamed command as it came: stream is 'stdout' or 'stderr'."""
    stream: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode('utf-8', 'replace')


@dataclass
class EgressPolicy:
    """Outbound connections through the agent's proxy (default deny)."""
    allow: List[str]
    max_connections: Optional[int] = None
    max_bytes: Union[int, str, None] = None
    idle_timeout: Union[int, str, None] = None

    @classmethod
    def from_json(cls, obj: Any) -> 'EgressPolicy':
        d = _obj(obj, 'an egress policy')
        mb = d.get('max_bytes')
        it = d.get('idle_timeout')
        return cls(allow=_str_list(d, 'allow'), max_connections=_opt_int(d, 'max_connections'),
                   max_bytes=mb if isinstance(mb, (int, str)) else None,
                   idle_timeout=it if isinstance(it, (int, str)) else None)


@dataclass
class SandboxLimits:
    """The limits a sandbox got; sizes with their unit ("512m"), cpus with three decimals."""
    cpus: str
    memory: str
    pids: int
    lifetime: int
    tmp_size: str
    workspace_size: str
    workspace_inodes: int
    nofile: int
    file_size: str

    @classmethod
    def from_json(cls, obj: Any) -> 'SandboxLimits':
        d = obj if isinstance(obj, dict) else {}
        return cls(cpus=_str(d, 'cpus'), memory=_str(d, 'memory'), pids=_int(d, 'pids'),
                   lifetime=_int(d, 'lifetime'), tmp_size=_str(d, 'tmp_size'),
                   workspace_size=_str(d, 'workspace_size'),
                   workspace_inodes=_int(d, 'workspace_inodes'), nofile=_int(d, 'nofile'),
                   file_size=_str(d, 'file_size'))


@dataclass
class Sandbox:
    """A sandbox's record. state: running, plan, destroyed or lost. Times are Unix seconds."""
    id: str
    tenant: str
    state: str
    recovered: bool
    image: str
    runtime: str
    insecure: bool
    created_at: int
    expires_at: int
    max_expires_at: int
    idle_timeout: int
    last_active_at: int
    destroyed_at: int
    destroy_reason: str
    metadata: Dict[str, str]
    env: List[str]
    limits: SandboxLimits
    egress: Optional[EgressPolicy]
    raw: Json = field(default_factory=dict, repr=False)
    snapshot: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Any) -> 'Sandbox':
        d = _obj(obj, 'a sandbox')
        eg = d.get('egress')
        return cls(id=_str(d, 'id'), tenant=_str(d, 'tenant'), state=_str(d, 'state'),
                   recovered=_bool(d, 'recovered'), image=_str(d, 'image'),
                   runtime=_str(d, 'runtime'), insecure=_bool(d, 'insecure'),
                   created_at=_int(d, 'created_at'), expires_at=_int(d, 'expires_at'),
                   max_expires_at=_int(d, 'max_expires_at'),
                   idle_timeout=_int(d, 'idle_timeout'),
                   last_active_at=_int(d, 'last_active_at'),
                   destroyed_at=_int(d, 'destroyed_at'),
                   destroy_reason=_str(d, 'destroy_reason'), metadata=_str_map(d, 'metadata'),
                   env=_str_list(d, 'env'), limits=SandboxLimits.from_json(d.get('limits')),
                   egress=EgressPolicy.from_json(eg) if isinstance(eg, dict) else None, raw=d,
                   snapshot=_opt_str(d, 'snapshot'))


@dataclass
class Snapshot:
    """A snapshot of a running sandbox (its processes, memory, /tmp and /workspace): id,
    sandbox (the one it was taken of), tenant, parent (that sandbox's previous snapshot, or
    None), size (bytes on disk), sha256 (of its manifest), created_at and expires_at (Unix
    seconds), keep (outlives its sandbox until expires_at), held (a restore holds it: from
    before its sandbox's old container is removed until the sandbox runs again, and on after a
    restore that cost the sandbox; not removed with its sandbox, still expires), restorable
    (whether it can be forked or restored: False when the code session's kernel, or another
    docker exec, ran in the sandbox when it was taken). held and restorable are last, with
    defaults, so that a Snapshot built by position before they existed is still built the same.
    delete() removes it."""
    id: str
    sandbox: str
    tenant: str
    parent: Optional[str]
    size: int
    sha256: str
    created_at: int
    expires_at: int
    keep: bool
    raw: Json = field(default_factory=dict, repr=False)
    client: Optional['Client'] = field(default=None, repr=False, compare=False)
    held: bool = False
    restorable: bool = True

    @classmethod
    def from_json(cls, obj: Any, client: Optional['Client'] = None) -> 'Snapshot':
        d = _obj(obj, 'a snapshot')
        return cls(id=_str(d, 'id'), sandbox=_str(d, 'sandbox'), tenant=_str(d, 'tenant'),
                   parent=_opt_str(d, 'parent'), size=_int(d, 'size'),
                   sha256=_str(d, 'sha256'), created_at=_int(d, 'created_at'),
                   expires_at=_int(d, 'expires_at'), keep=_bool(d, 'keep'), raw=d,
                   client=client, held=_bool(d, 'held'),
                   restorable=_bool(d, 'restorable'))

    def delete(self) -> None:
        """DELETE /v1/sandboxes/SANDBOX/snapshots/ID (its files and its row; audited)."""
        if self.client is None:
            raise InvalidArgument('snapshot %s was made without a client: call '
                                  'client.delete_snapshot(%r, %r)'
                                  % (self.id, self.sandbox, self.id))
        self.client.delete_snapshot(self.sandbox, self.id)


@dataclass
class Process:
    """A background process: state running or exited; result once it exited. The offsets say
    how much of each stream it has written so far."""
    id: str
    sandbox_id: str
    state: str
    request: Json
    started_at: int
    finished_at: int
    stdout_offset: int
    stderr_offset: int
    result: Optional[ExecResult]
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> 'Process':
        d = _obj(obj, 'a process')
        res = d.get('result')
        req = d.get('request')
        return cls(id=_str(d, 'id'), sandbox_id=_str(d, 'sandbox_id'), state=_str(d, 'state'),
                   request=req if isinstance(req, dict) else {},
                   started_at=_int(d, 'started_at'), finished_at=_int(d, 'finished_at'),
                   stdout_offset=_int(d, 'stdout_offset'),
                   stderr_offset=_int(d, 'stderr_offset'),
                   result=ExecResult.from_json(res) if isinstance(res, dict) else None, raw=d)


@dataclass
class OutputWindow:
    """One stream's output from the offset asked for: data, the offset to ask for next, and how
    many bytes before the kept window (the last 1 MiB) were asked for and are gone."""
    data: bytes
    next_offset: int
    dropped: int

    @classmethod
    def from_json(cls, obj: Any) -> 'OutputWindow':
        d = obj if isinstance(obj, dict) else {}
        return cls(data=_bytes(d, 'data', 'encoding'), next_offset=_int(d, 'next_offset'),
                   dropped=_int(d, 'dropped'))


@dataclass
class ProcessOutput:
    """A background process's output past the offsets asked for, and its result once exited."""
    id: str
    state: str
    stdout: OutputWindow
    stderr: OutputWindow
    result: Optional[ExecResult]

    @classmethod
    def from_json(cls, obj: Any) -> 'ProcessOutput':
        d = _obj(obj, 'process output')
        res = d.get('result')
        return cls(id=_str(d, 'id'), state=_str(d, 'state'),
                   stdout=OutputWindow.from_json(d.get('stdout')),
                   stderr=OutputWindow.from_json(d.get('stderr')),
                   result=ExecResult.from_json(res) if isinstance(res, dict) else None)


@dataclass
class FileEntry:
    """A directory entry: type file, dir, symlink or other; target for a symlink. Names that
    are not UTF-8 have those bytes as \\xNN (and each backslash doubled)."""
    name: str
    type: str
    size: int
    mode: str
    mtime: int
    target: Optional[str]

    @classmethod
    def from_json(cls, obj: Any) -> 'FileEntry':
        d = _obj(obj, 'a file entry')
        return cls(name=_str(d, 'name'), type=_str(d, 'type'), size=_int(d, 'size'),
                   mode=_str(d, 'mode'), mtime=_int(d, 'mtime'), target=_opt_str(d, 'target'))


@dataclass
class FileWritten:
    """An uploaded file: its path, size and SHA-256 (also in the audit record)."""
    path: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, obj: Any) -> 'FileWritten':
        d = _obj(obj, 'an upload answer')
        return cls(path=_str(d, 'path'), size=_int(d, 'size'), sha256=_str(d, 'sha256'))


@dataclass
class ArchiveExtracted:
    """An uploaded archive: where it went (relative to /workspace; '' for the workspace) and
    what it held."""
    path: str
    entries: int
    files: int
    bytes: int
    symlinks: int
    sha256: str

    @classmethod
    def from_json(cls, obj: Any) -> 'ArchiveExtracted':
        d = _obj(obj, 'an archive answer')
        return cls(path=_str(d, 'path'), entries=_int(d, 'entries'), files=_int(d, 'files'),
                   bytes=_int(d, 'bytes'), symlinks=_int(d, 'symlinks'),
                   sha256=_str(d, 'sha256'))


@dataclass
class SkippedPath:
    """A path a commit left out, and why (its kind)."""
    path: str
    kind: str


@dataclass
class CommitResult:
    """A commit of the workspace to the sandbox's branch; changed is False when the workspace
    equals the branch tip."""
    commit: str
    branch: str
    changed: bool
    files_changed: int
    insertions: int
    deletions: int
    diffstat: str
    skipped: List[SkippedPath]
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> 'CommitResult':
        d = _obj(obj, 'a commit answer')
        sk = d.get('skipped')
        skipped = [SkippedPath(_str(s, 'path'), _str(s, 'kind'))
                   for s in (sk if isinstance(sk, list) else []) if isinstance(s, dict)]
        return cls(commit=_str(d, 'commit'), branch=_str(d, 'branch'),
                   changed=_bool(d, 'changed'), files_changed=_int(d, 'files_changed'),
                   insertions=_int(d, 'insertions'), deletions=_int(d, 'deletions'),
                   diffstat=_str(d, 'diffstat'), skipped=skipped, raw=d)


@dataclass
class PlanReport:
    """A plan's (or the gauntlet's) report: verdict pass, fail or error; the branch and the
    commit with the signed verdict; steps and gauntlet as the daemon gives them."""
    verdict: str
    sandbox: str
    branch: str
    base: str
    commit: str
    diffstat: str
    summary: str
    signed_by: str
    steps: List[Json]
    gauntlet: Json
    gauntlet_source: Json
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> 'PlanReport':
        d = _obj(obj, 'a plan report')
        steps = d.get('steps')
        g = d.get('gauntlet')
        gs = d.get('gauntlet_source')
        return cls(verdict=_str(d, 'verdict'), sandbox=_str(d, 'sandbox'),
                   branch=_str(d, 'branch'), base=_str(d, 'base'), commit=_str(d, 'commit'),
                   diffstat=_str(d, 'diffstat'), summary=_str(d, 'summary'),
                   signed_by=_str(d, 'signed_by'),
                   steps=[s for s in steps if isinstance(s, dict)]
                   if isinstance(steps, list) else [],
                   gauntlet=g if isinstance(g, dict) else {},
                   gauntlet_source=gs if isinstance(gs, dict) else {}, raw=d)

    @property
    def passed(self) -> bool:
        return self.verdict == 'pass'


@dataclass
class PlanEvent:
    """A streamed plan's progress: event sandbox, step, check, commit or done, with its
    fields in data."""
    event: str
    data: Json


@dataclass
class Health:
    """The daemon's health: status ok, degraded or unavailable, and why."""
    status: str
    reasons: List[str]
    engine: str
    version: str
    sandboxes: int
    running_execs: int
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> 'Health':
        d = _obj(obj, 'a health answer')
        return cls(status=_str(d, 'status'), reasons=_str_list(d, 'reasons'),
                   engine=_str(d, 'engine'), version=_str(d, 'version'),
                   sandboxes=_int(d, 'sandboxes'), running_execs=_int(d, 'running_execs'),
                   raw=d)


@dataclass
class CodeError:
    """An exception a cell raised: its name, value and traceback (lines joined)."""
    name: str
    value: str
    traceback: str


@dataclass
class CodeResult:
    """A cell of the code interpreter (POST .../code): status ok, error, timeout, oom, died
    or sandbox_failed (its sandbox was destroyed or lost while the cell ran: message says by what);
    result and each of displays map a MIME type to its content (image/png and image/jpeg
    base64: images() decodes them)."""
    status: str
    execution_count: Optional[int]
    stdout: str
    stderr: str
    result: Optional[Dict[str, Any]]
    displays: List[Dict[str, Any]]
    error: Optional[CodeError]
    truncated: bool
    restarted: bool
    message: Optional[str]
    duration_ms: int
    raw: Json = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == 'ok'

    @property
    def text(self) -> Optional[str]:
        """The value of the cell's last expression as text/plain, or None."""
        v = (self.result or {}).get('text/plain')
        return v if isinstance(v, str) else None

    def images(self) -> List[bytes]:
        """The displays' PNG and JPEG images, decoded, in order."""
        out = []
        for d in self.displays:
            for mime in ('image/png', 'image/jpeg'):
                v = d.get(mime)
                if isinstance(v, str):
                    out.append(base64.b64decode(v))
        return out

    @classmethod
    def from_json(cls, obj: Any) -> 'CodeResult':
        d = _obj(obj, 'a code result')
        e = d.get('error')
        res = d.get('result')
        return cls(status=_str(d, 'status'), execution_count=_opt_int(d, 'execution_count'),
                   stdout=_str(d, 'stdout'), stderr=_str(d, 'stderr'),
                   result=res if isinstance(res, dict) else None,
                   displays=[x for x in d.get('displays') or [] if isinstance(x, dict)],
                   error=CodeError(name=_str(e, 'name'), value=_str(e, 'value'),
                                   traceback=_str(e, 'traceback'))
                   if isinstance(e, dict) else None,
                   truncated=_bool(d, 'truncated'), restarted=_bool(d, 'restarted'),
                   message=_opt_str(d, 'message'), duration_ms=_int(d, 'duration_ms'), raw=d)
