"""How bytes reach pygls: a reader thread per connection, strict framing, and the TCP / Unix-socket doors.

pygls (2.1.1) stays the protocol layer: its `JsonRPCProtocol` parses, dispatches and writes every
message. What it does not do well is read: its own loop reads one header or body line per turn of the
event loop, so while a handler computes between awaits, input waits (100 notifications took 30 s
during type inference), and its header match (`^Content-Length: (\\d+)\\r\\n$`, case-sensitive,
unbounded) silently skips a message it cannot frame and waits for good, or allocates whatever a
Content-Length asks for. So this module replaces only that loop.

Rules:
- One reader thread per connection reads whole messages, blocking, as fast as they come, and hands each
  body to the event loop (`call_soon_threadsafe`), where pygls handles it. Input is therefore always
  read and queued, whatever a handler does; a handler that awaits sees every queued message handled at
  its next await. Before that, the reader thread shows each body to the server's `on_read` hook
  (`lsp.worker.ModelWorker.peek`), so a cancellation or an edit stops model work even while the
  loop is busy.
- Framing (LSP base protocol): header lines end in CRLF, a header name is an RFC 9110 token matched
  case-insensitively, `Content-Length` is required, digits only, at most `MAX_CONTENT_LENGTH`. A
  framing error is fatal: once framing is lost no later byte can be trusted, and a server that stays up
  answering nothing is never restarted by its editor. The server logs one line and exits with status
  `EXIT_FRAMING` at once, from the reader thread (`os._exit`): the event loop may be busy in a forward
  pass. A body that frames well but is not UTF-8 JSON is answered with a Parse error (-32700, to its
  request id when a lenient decoding shows one, else to id null) and logged in one line; one that is
  JSON but not JSON-RPC pygls can structure is logged and dropped (a request among them answered).
- End of input between messages is a clean stop: the event loop ends and the server exits 0.
- `--tcp` and `--socket` serve one client at a time: while a session is connected, every other
  connection is closed at once, unread. A TCP client proves itself with its first message, which must
  be `initialize` with `initializationOptions.token` equal to the token file's content; the token is
  removed before pygls sees the options. Connections authenticate side by side (at most
  `MAX_HANDSHAKES`), each within `AUTH_TIMEOUT_S` in all (not per read: a byte every few seconds does
  not keep one open), so a slow or silent one never holds up the real client. The token file must
  be the user's and closed to others (mode 600), as OpenSSH requires of a private key. A Unix socket is created with mode 0700 (no token: the file
  permissions are the check). As with pygls' own TCP server, the server exits when its session ends.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

log = logging.getLogger(__name__)

MAX_CONTENT_LENGTH = 64 * 2**20
"""Largest message body accepted (64 MiB): an 880 KiB file is 1.3% of it."""
MAX_HEADER_LINE = 8192
MAX_HEADERS = 32
EXIT_FRAMING = 3
"""Exit status after a framing error (2 is the command line's, 1 pygls' exit without shutdown)."""
AUTH_TIMEOUT_S = 10.0
"""How long, in all, a new TCP connection may take to send its `initialize` with the token."""
MAX_HANDSHAKES = 16
"""Connections authenticating at once; a further one is closed unread until one of them ends."""
AUTH_MAX_BYTES = 2**20
"""Largest first message of a connection not yet authenticated."""
TOKEN_KEY = "token"
PARSE_ERROR = -32700
"""JSON-RPC's code for a body that is not (UTF-8) JSON."""
_TOKEN_CHARS = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class FramingError(Exception):
    """The input is not a sequence of LSP base-protocol messages; the message says where it broke."""


def read_message(stream: BinaryIO, limit: int = MAX_CONTENT_LENGTH) -> bytes | None:
    """The next message body from `stream`, None at end of input between messages; `FramingError` on
    anything else (see the module rules), a body over `limit` bytes included."""
    length: int | None = None
    lines = 0
    while True:
        line = stream.readline(MAX_HEADER_LINE + 1)
        if not line:
            if lines == 0:
                return None
            raise FramingError("input ended inside a message header")
        lines += 1
        if not line.endswith(b"\r\n"):
            if len(line) > MAX_HEADER_LINE:
                raise FramingError(f"a header line longer than {MAX_HEADER_LINE} bytes")
            raise FramingError(f"a header line that does not end in CRLF: {_shown(line)}")
        if line == b"\r\n":
            if length is None:
                raise FramingError("a message without a Content-Length header")
            break
        if lines > MAX_HEADERS:
            raise FramingError(f"more than {MAX_HEADERS} header lines")
        name, colon, value = line[:-2].partition(b":")
        if not colon or not _TOKEN_CHARS.fullmatch(name):
            raise FramingError(f"an unparsable header line: {_shown(line)}")
        if name.lower() == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit():
                raise FramingError(f"Content-Length is not a number: {_shown(value)}")
            n = int(value)
            if n > limit:
                raise FramingError(f"Content-Length {n} exceeds the limit of {limit} bytes")
            if length is not None and n != length:
                raise FramingError(f"two Content-Length headers ({length} and {n})")
            length = n
    body = stream.read(length)
    if len(body) < length:
        raise FramingError(f"input ended inside a message body ({len(body)} of {length} bytes)")
    return body


def _shown(data: bytes) -> str:
    return repr(data[:60]) + ("..." if len(data) > 60 else "")


class SocketWriter:
    """pygls' writer interface over a connected socket (pygls' `StdoutWriter` is its stdio twin)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._sock.sendall(data)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def serve(server, reader: BinaryIO, writer, first: bytes | None = None,
          on_read: Callable[[bytes], None] | None = None) -> int:
    """Run `server` (a pygls server) on one connection until its input ends or the client sends `exit`;
    the exit status. `first`: a message body already read from `reader` (the TCP handshake's).
    `on_read(body)`: called on the reader thread with every body before it goes to the loop (default:
    the server's own `on_read`, if it has one); it must be cheap and thread-safe, and what it raises
    is logged and ignored."""
    from pygls.exceptions import JsonRpcException

    protocol = server.protocol
    server._stop_event = threading.Event()  # what pygls' own loops keep; its shutdown() sets it
    protocol.set_writer(writer)
    hook = on_read if on_read is not None else getattr(server, "on_read", None)

    def peek(body: bytes) -> None:
        if hook is None:
            return
        try:
            hook(body)
        except Exception:
            log.exception("on_read failed")

    def deliver(body: bytes) -> None:
        try:
            message = json.loads(body, object_hook=protocol.structure_message)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # not UTF-8, not JSON: -32700
            log.warning("dropped a message: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
            _parse_error(protocol, body, exc)
            return
        except Exception as exc:  # a JSON-RPC message pygls cannot structure (it answered a request)
            log.warning("dropped a message: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
            server._report_server_error(exc, JsonRpcException)
            return
        try:
            protocol.handle_message(message)
        except Exception as exc:  # pygls' own loop drops such a message too (after a traceback)
            log.warning("dropped a message: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
            server._report_server_error(exc, JsonRpcException)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()

        def finish(status: int) -> None:
            if not done.done():
                done.set_result(status)

        if first is not None:
            peek(first)
            deliver(first)
        threading.Thread(target=_pump, args=(reader, loop, deliver, finish, peek), name="lsp-reader",
                         daemon=True).start()
        return await done

    try:
        return asyncio.run(run())
    except SystemExit as exc:  # pygls' `exit` handler
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        log.error("the connection to the client is lost; shutting down")
        return 1
    finally:
        server.shutdown()


def _parse_error(protocol, body: bytes, exc: ValueError) -> None:
    """Answer a body that is not UTF-8 JSON with JSON-RPC's Parse error (-32700): to its request id when
    the body, decoded leniently, shows one (so the client's request does not wait for ever), else to
    id null, as JSON-RPC 2.0 says."""
    from lsprotocol.types import ResponseError

    msg_id = None
    try:
        guess = json.loads(body.decode("utf-8", "replace"))
        if isinstance(guess, dict) and "method" in guess and isinstance(guess.get("id"), (int, str)):
            msg_id = guess["id"]
    except ValueError:
        pass
    why = "the message is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "the message is not JSON"
    try:
        protocol._send_response(msg_id, error=ResponseError(code=PARSE_ERROR, message=f"Parse error: {why}"))
    except Exception:  # the connection is going away: the log has it
        log.debug("could not answer a parse error", exc_info=True)


def _pump(reader: BinaryIO, loop: asyncio.AbstractEventLoop, deliver: Callable[[bytes], None],
          finish: Callable[[int], None], peek: Callable[[bytes], None]) -> None:
    """The reader thread: every message to the loop as soon as it is read; see the module rules."""
    try:
        while (body := read_message(reader)) is not None:
            peek(body)
            loop.call_soon_threadsafe(deliver, body)
    except FramingError as exc:
        fatal(f"infill-lsp: framing error, exiting: {exc}")
    except (OSError, ValueError) as exc:  # the connection broke (ValueError: read from a closed file)
        log.warning("input closed: %s", exc)
    except RuntimeError:  # the loop is already closed: the server is stopping anyway
        return
    try:
        loop.call_soon_threadsafe(finish, 0)
    except RuntimeError:
        pass


def fatal(line: str) -> None:
    """Log one line and end the process now, whatever the other threads are doing."""
    log.error("%s", line)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    if not logging.getLogger().handlers:
        print(line, file=sys.stderr, flush=True)
    os._exit(EXIT_FRAMING)


# --- TCP and Unix sockets ---------------------------------------------------------------------------

def read_token(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace removed); `ValueError` with a one-line reason, also
    when the file is not a regular file of this user's or group and others may read or write it (what
    OpenSSH refuses for a private key: mode 600 or stricter)."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"--token-file {path}: not a regular file")
            if st.st_uid != os.getuid():
                raise ValueError(f"--token-file {path}: owned by another user (uid {st.st_uid})")
            if st.st_mode & 0o077:
                raise ValueError(f"--token-file {path}: others can access it (mode {stat.S_IMODE(st.st_mode):o}); "
                                 f"run chmod 600 {path}")
            token = f.read(4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--token-file {path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    if len(token) < 16:
        raise ValueError(f"--token-file {path}: the token must be at least 16 characters, got {len(token)}")
    return token


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); OSError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        loopback = ipaddress.ip_address(socket.getaddrinfo(host, port, family)[0][4][0]).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback:
        log.warning("listening on %s, which is not loopback: anyone who can reach it and has the token "
                    "can read and edit what the editor sends", host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    return sock


def listen_unix(path: str | Path) -> socket.socket:
    """A listening Unix socket at `path` with mode 0700; a stale socket file there is replaced, any
    other file is an error (`ValueError`)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ValueError(f"--socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left behind by a server that died
        else:
            raise ValueError(f"--socket {path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)  # created without group/other bits, so there is no moment it is open to them
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o700)
    sock.listen(8)
    return sock


def serve_socket(server, listener: socket.socket, token: str | None) -> int:
    """Serve one session on `listener` (see the module rules); the exit status."""
    sock, reader, first = _first_session(listener, token)
    refuser = threading.Thread(target=_refuse_all, args=(listener,), name="lsp-refuser", daemon=True)
    refuser.start()
    try:
        return serve(server, reader, SocketWriter(sock), first)
    finally:
        listener.close()
        SocketWriter(sock).close()  # also wakes the reader thread, if it still waits


def _first_session(listener: socket.socket, token: str | None) -> tuple[socket.socket, BinaryIO, bytes | None]:
    """Accept connections until one authenticates: (its socket, its reader, its first message with the
    token removed; None without a token). Each connection authenticates on a thread of its own, within
    `AUTH_TIMEOUT_S` in all (see the module rules)."""
    if token is None:
        sock, _ = listener.accept()
        return sock, sock.makefile("rb"), None
    won: list[tuple[socket.socket, BinaryIO, bytes]] = []
    lock, slots = threading.Lock(), threading.BoundedSemaphore(MAX_HANDSHAKES)

    def handshake(sock: socket.socket, address) -> None:
        raw = _DeadlineReader(sock, time.monotonic() + AUTH_TIMEOUT_S)
        reader = io.BufferedReader(raw)
        try:
            try:
                first, why = _authenticated(read_message(reader, AUTH_MAX_BYTES), token), \
                    "no initialize request with the right token"
            except (FramingError, OSError) as exc:
                first, why = None, str(exc) or type(exc).__name__
            with lock:
                if first is not None and not won:
                    raw.deadline = None
                    sock.settimeout(None)
                    won.append((sock, reader, first))
                    return
            log.warning("refused a connection from %s: %s", address,
                        why if first is None else "another client authenticated first")
            SocketWriter(sock).close()
        finally:
            slots.release()

    listener.settimeout(0.1)  # to look at `won` between connections
    try:
        while True:
            with lock:
                if won:
                    return won[0]
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            if not slots.acquire(blocking=False):
                log.warning("refused a connection from %s: %d others are authenticating", address, MAX_HANDSHAKES)
                SocketWriter(sock).close()
                continue
            threading.Thread(target=handshake, args=(sock, address), name="lsp-handshake", daemon=True).start()
    finally:
        listener.settimeout(None)


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read limited to what is left of `deadline` (time.monotonic(); None: no
    limit), so a peer cannot stretch a handshake by sending a byte at a time."""

    def __init__(self, sock: socket.socket, deadline: float | None):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no initialize request within {AUTH_TIMEOUT_S:g} s")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


def _authenticated(body: bytes | None, token: str) -> bytes | None:
    """`body` without its token when it is an `initialize` request carrying `token`, else None."""
    if body is None:
        return None
    try:
        message = json.loads(body)
        options = message["params"].get("initializationOptions")
        given = options.pop(TOKEN_KEY) if isinstance(options, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if message.get("method") != "initialize" or not isinstance(given, str) or \
            not hmac.compare_digest(given.encode(), token.encode()):
        return None
    return json.dumps(message).encode()


def _refuse_all(listener: socket.socket) -> None:
    """Close every further connection unread, while the session runs (the listener closes with it)."""
    while True:
        try:
            sock, address = listener.accept()
        except OSError:
            return
        log.warning("refused a connection from %s: a client is already connected", address)
        SocketWriter(sock).close()
