"""HTTP to the daemon: over its unix socket, or over TCP with a bearer token.

Where the daemon is: the argument, else $CLEARING_HOST, else /run/clearing/clearing.sock. As
the command line reads it (src/client.c): "unix:///path" or a plain path is a socket;
additionally "http://HOST:PORT" is TCP, where the token ($CLEARING_TOKEN) goes with every
request. One connection per request: a Client is safe to share between threads."""
import http.client
import json
import os
import socket
from typing import IO, Any, Dict, Iterator, Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import ClearingError, DaemonUnreachable, InternalError, InvalidArgument, error_for

DEFAULT_SOCKET = '/run/clearing/clearing.sock'

Body = Union[bytes, IO[bytes], None]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__('localhost', timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def parse_host(host: Optional[str]) -> Tuple[Optional[str], Optional[Tuple[str, int]]]:
    """(socket path, None) or (None, (host, port)); InvalidArgument for what is neither."""
    h = host if host else os.environ.get('CLEARING_HOST') or DEFAULT_SOCKET
    if h.startswith('unix://'):
        path = h[len('unix://'):]
        if not path:
            raise InvalidArgument("host %r names no socket: use unix:///path/to/socket" % h)
        return path, None
    if h.startswith(('http://', 'https://', 'tcp://')):
        u = urlsplit(h)
        if u.scheme != 'http' or not u.hostname or u.port is None or u.path not in ('', '/'):
            raise InvalidArgument(
                "host %r is not supported: use http://HOST:PORT (the daemon's --tcp address; "
                "it speaks plain HTTP) or a unix socket's path" % h)
        return None, (u.hostname, u.port)
    return h, None


class Transport:
    def __init__(self, host: Optional[str], token: Optional[str], timeout: float) -> None:
        self.sock, self.tcp = parse_host(host)
        self.token = token if token is not None else os.environ.get('CLEARING_TOKEN')
        self.timeout = timeout

    @property
    def address(self) -> str:
        if self.sock is not None:
            return 'unix socket %s' % self.sock
        assert self.tcp is not None
        return 'http://%s:%d' % self.tcp

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        if self.sock is not None:
            return _UnixConnection(self.sock, t)
        assert self.tcp is not None
        return http.client.HTTPConnection(self.tcp[0], self.tcp[1], timeout=t)

    def open(self, method: str, path: str, body: Body = None,
             content_type: Optional[str] = None, length: Optional[int] = None,
             timeout: Optional[float] = None
             ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a request; returns the connection and the response (status < 400, body
        unread). An error answer raises its ClearingError; no answer raises DaemonUnreachable
        naming the address."""
        headers: Dict[str, str] = {}
        if content_type:
            headers['Content-Type'] = content_type
        if length is not None:
            headers['Content-Length'] = str(length)
        if self.tcp is not None and self.token:
            headers['Authorization'] = 'Bearer ' + self.token
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            raise DaemonUnreachable(
                'cannot reach the clearing daemon at %s: %s; start it with `clearing serve`, '
                'or set CLEARING_HOST to its socket (unix:///path) or http://HOST:PORT'
                % (self.address, e.strerror or e)) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise DaemonUnreachable('talking to the clearing daemon at %s: %s'
                                    % (self.address, e)) from None
        if resp.status >= 400:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                raw = b''
            finally:
                conn.close()
            raise _error_of(resp.status, raw)
        return conn, resp

    def call(self, method: str, path: str, body: Any = None,
             timeout: Optional[float] = None) -> Tuple[int, bytes]:
        """A JSON request (body: a JSON value or None): (status, the answer's bytes)."""
        data = None if body is None else json.dumps(body).encode('utf-8')
        conn, resp = self.open(method, path, data,
                               'application/json' if data is not None else None,
                               timeout=timeout)
        try:
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise DaemonUnreachable('reading the answer of the clearing daemon at %s: %s'
                                    % (self.address, e)) from None
        finally:
            conn.close()

    def ndjson(self, path: str, body: Any, timeout: Optional[float] = None
               ) -> Iterator[Dict[str, Any]]:
        """POSTs body and yields the answer's NDJSON events as they arrive; an error event
        raises its ClearingError."""
        conn, resp = self.open('POST', path, json.dumps(body).encode('utf-8'),
                               'application/json', timeout=timeout)
        try:
            buf = b''
            while True:
                try:
                    chunk = resp.read1(65536)
                except (OSError, http.client.HTTPException) as e:
                    raise DaemonUnreachable('the stream from the clearing daemon at %s broke: '
                                            '%s' % (self.address, e)) from None
                if not chunk:
                    if buf.strip():
                        raise DaemonUnreachable('the stream from the clearing daemon at %s '
                                                'ended inside a line' % self.address)
                    return
                buf += chunk
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if not line.strip():
                        continue
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        raise InternalError('the daemon streamed a line that is not JSON: %r'
                                            % line[:200]) from None
                    if not isinstance(ev, dict):
                        raise InternalError('the daemon streamed %r, not an event' % line[:200])
                    if ev.get('event') == 'error':
                        got = ev.get('error')
                        err: Dict[str, Any] = got if isinstance(got, dict) else {}
                        code, msg = err.get('code'), err.get('message')
                        raise error_for(None, code if isinstance(code, str) else None,
                                        msg if isinstance(msg, str) else None)
                    yield ev
        finally:
            conn.close()


def _error_of(status: int, raw: bytes) -> ClearingError:
    code: Optional[str] = None
    message: Optional[str] = None
    try:
        j = json.loads(raw) if raw else None
    except ValueError:
        j = None
    e = j.get('error') if isinstance(j, dict) else None
    if isinstance(e, dict):
        c, m = e.get('code'), e.get('message')
        code = c if isinstance(c, str) else None
        message = m if isinstance(m, str) else None
    if message is None and raw:
        message = raw[:300].decode('utf-8', 'replace')
    return error_for(status, code, message)


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise InternalError('the daemon answered something that is not JSON: %r'
                            % raw[:200]) from None
