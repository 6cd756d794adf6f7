"""clearing: the Python client of the clearing daemon's REST API (docs/openapi.yaml).

    import clearing
    client = clearing.Client()            # $CLEARING_HOST, else /run/clearing/clearing.sock
    with client.sandbox(memory="1g") as sb:
        r = sb.exec(["python3", "-c", "print(6 * 7)"])
        print(r.status, r.exit_code, r.stdout_text)

Standard library only. See clients/python/README.md for every method."""
from .client import Client, SandboxSession
from .errors import (ClearingError, Conflict, DaemonUnreachable, Denied, EngineError,
                     InternalError, InvalidArgument, LimitExceeded, NoSpace, NotFound, Timeout,
                     Unavailable, Unsupported)
from .models import (ArchiveExtracted, CommitResult, EgressPolicy, Exec, ExecResult, FileEntry,
                     FileWritten, Health, OutputChunk, OutputWindow, PlanEvent, PlanReport,
                     Process, ProcessOutput, Sandbox, SandboxLimits, SkippedPath, Snapshot)
from .models import CodeError, CodeResult

__version__ = '0.1.0'

__all__ = [
    'Client', 'SandboxSession',
    'ClearingError', 'Conflict', 'DaemonUnreachable', 'Denied', 'EngineError', 'InternalError',
    'InvalidArgument', 'LimitExceeded', 'NoSpace', 'NotFound', 'Timeout', 'Unavailable',
    'Unsupported',
    'ArchiveExtracted', 'CommitResult', 'EgressPolicy', 'Exec', 'ExecResult', 'FileEntry',
    'FileWritten', 'Health', 'OutputChunk', 'OutputWindow', 'PlanEvent', 'PlanReport',
    'Process', 'ProcessOutput', 'Sandbox', 'SandboxLimits', 'SkippedPath', 'Snapshot',
    'CodeError', 'CodeResult',
]
