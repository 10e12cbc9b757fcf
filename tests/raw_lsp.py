"""A server process spoken to in raw bytes (tests of the transport and of big inputs)."""
import json
import queue
import socket
import subprocess
import sys
import threading
import time

from support import wait_response

from lsp.transport import FramingError, read_message


def frame(body: bytes, header: bytes = b"Content-Length") -> bytes:
    return header + b": %d\r\n\r\n" % len(body) + body


class Raw:
    """A server process spoken to in raw bytes over stdio, or over a socket connection when `sock` is given."""

    def __init__(self, *args, sock: socket.socket | None = None, proc=None):
        if sock is None:
            self.proc = subprocess.Popen([sys.executable, "-m", "lsp", *args], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.out, self._write = self.proc.stdout, self.proc.stdin
        else:
            self.proc, self.sock = proc, sock
            self.out, self._write = sock.makefile("rb"), sock.makefile("wb")
        self.inbox: queue.Queue = queue.Queue()
        self.states: list[str] = []
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while (body := read_message(self.out)) is not None:
                msg = json.loads(body)
                if msg.get("method") == "infill/status":
                    self.states.append(msg["params"]["state"])
                self.inbox.put(msg)
        except (FramingError, OSError, ValueError):
            pass
        self.closed.set()

    def send_bytes(self, data: bytes):
        self._write.write(data)
        self._write.flush()

    def send(self, **message):
        self.send_bytes(frame(json.dumps({"jsonrpc": "2.0", **message}).encode()))

    def response(self, msg_id, timeout=60):
        return wait_response(self.inbox, msg_id, timeout)

    def responses(self, ids, timeout=120):
        """[response, ...] in arrival order, once every one of `ids` is answered."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < len(ids):
            assert time.monotonic() < deadline, f"no response to some of {ids}: {got}"
            try:
                msg = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if "method" not in msg and msg.get("id") in ids:
                got.append(msg)
        return got

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while "ready" not in self.states:
            assert time.monotonic() < deadline and "failed" not in self.states, self.states
            time.sleep(0.05)

    def initialize(self, msg_id=1, options=None):
        self.send(id=msg_id, method="initialize", params={"processId": None, "capabilities": {},
                                                          "initializationOptions": options or {}})
        result = self.response(msg_id)
        self.send(method="initialized", params={})
        return result

    def exited(self, timeout=30):
        """The exit status and stderr, once the process ends (an AssertionError when it does not)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server is still running") from None
        return self.proc.returncode, self.proc.stderr.read().decode()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address, family=socket.AF_INET, timeout=60):
    """A socket connected to `address`, retrying while the server starts."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
