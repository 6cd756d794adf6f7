"""The errors of the clearing client: one base class, one subclass per error code of the API.

Every error the daemon answers is `{"error": {"code", "message"}}`; the code maps to a status
once (docs/openapi.yaml). An answer without a code we know (a proxy's, an older daemon's) is
classed by its HTTP status, as the command line does."""
from typing import Dict, Optional, Type


class ClearingError(Exception):
    """Base class. code: the API's error code (invalid, denied, not_found, conflict, limit,
    unavailable, timeout, engine, no_space, internal, unsupported); message: the daemon's
    message (or the client's own, for a refusal before any request); status: the HTTP status,
    None when no answer was received."""

    code = 'internal'

    def __init__(self, message: str, code: Optional[str] = None,
                 status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        where = ' (HTTP %d)' % self.status if self.status is not None else ''
        return '%s: %s%s' % (self.code, self.message, where)


class InvalidArgument(ClearingError, ValueError):
    """invalid (400), or an argument the client refused before sending anything."""
    code = 'invalid'


class Denied(ClearingError):
    """denied (403; 401 for a missing or wrong token)."""
    code = 'denied'


class NotFound(ClearingError):
    """not_found (404): no such sandbox, process, exec, file or image."""
    code = 'not_found'


class Conflict(ClearingError):
    """conflict (409): the sandbox is not in a state that allows it (destroyed, a plan's)."""
    code = 'conflict'


class LimitExceeded(ClearingError):
    """limit (429; 413 for an oversized body): a quota, a daemon limit or a size."""
    code = 'limit'


class Unavailable(ClearingError):
    """unavailable (503): the audit log cannot be written, a budget is full, ..."""
    code = 'unavailable'


class DaemonUnreachable(Unavailable):
    """No daemon answers at the address (no socket, connection refused, connection lost)."""


class Timeout(ClearingError):
    """timeout (504)."""
    code = 'timeout'


class EngineError(ClearingError):
    """engine (502): the Docker engine refused or failed."""
    code = 'engine'


class NoSpace(ClearingError):
    """no_space (507): a file or an archive does not fit in what is left of the workspace."""
    code = 'no_space'


class Unsupported(ClearingError):
    """unsupported (501): this daemon cannot do it (snapshots where its engine cannot
    checkpoint: Docker without "experimental": true, a runtime other than runsc); the message
    says what its operator must enable. Nothing changed."""
    code = 'unsupported'


class InternalError(ClearingError):
    """internal (500), or an answer the client cannot read."""
    code = 'internal'


ERRORS_BY_CODE: Dict[str, Type[ClearingError]] = {
    'invalid': InvalidArgument, 'denied': Denied, 'not_found': NotFound,
    'conflict': Conflict, 'limit': LimitExceeded, 'unavailable': Unavailable,
    'timeout': Timeout, 'engine': EngineError, 'no_space': NoSpace, 'internal': InternalError,
    'unsupported': Unsupported,
}

_CODE_BY_STATUS = {400: 'invalid', 401: 'denied', 403: 'denied', 404: 'not_found',
                   409: 'conflict', 413: 'limit', 429: 'limit', 501: 'unsupported',
                   502: 'engine', 503: 'unavailable', 504: 'timeout', 507: 'no_space'}


def error_for(status: Optional[int], code: Optional[str],
              message: Optional[str]) -> ClearingError:
    """The exception for an error answer: by its code, else by its status (None: an error
    event of a stream, whose answer was 200)."""
    if code is None or code not in ERRORS_BY_CODE:
        code = _CODE_BY_STATUS.get(status or 0, 'internal')
    cls = ERRORS_BY_CODE[code]
    return cls(message or 'the daemon answered an error without a message', code, status)
