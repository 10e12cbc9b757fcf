"""The transport (lsp/transport.py): framing that fails loudly, input read while a handler is busy, and
the --tcp / --socket doors (one client at a time, a token, mode 0700)."""
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
from raw_lsp import Raw, frame
from raw_lsp import connect as _connect
from raw_lsp import free_port as _free_port

from lsp.transport import EXIT_FRAMING, MAX_CONTENT_LENGTH, FramingError, read_message


# --- read_message against hand-written byte strings ---------------------------------------------------

def test_header_names_are_case_insensitive_and_other_headers_pass():
    data = (b"content-length: 2\r\n\r\n{}"
            b"CONTENT-LENGTH:3\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n[1]")
    stream = io.BytesIO(data)
    assert read_message(stream) == b"{}"
    assert read_message(stream) == b"[1]"
    assert read_message(stream) is None


@pytest.mark.parametrize("data, why", [
    (b"Content-Length: 3\r\n\r\n{}", "ended inside a message body"),
    (b"Content-Length: 1\r\n\r\n{}Content-Length: 2\r\n\r\n{}", "unparsable header"),  # one too short
    (b"Content-Length: 3\r\n\r\n{}Content-Length: 2\r\n\r\n{}", "without a Content-Length"),  # one too long
    (b"Content-Length: 2\n\n{}", "CRLF"),
    (b"Content-Length: -2\r\n\r\n{}", "not a number"),
    (b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "two Content-Length"),
    (b"Content-Type: x\r\n\r\n{}", "without a Content-Length"),
    (b"Content-Length: %d\r\n\r\n" % (MAX_CONTENT_LENGTH + 1), "exceeds the limit"),
    (b"Content-Length: 2\r\n", "ended inside a message header"),
    (b"X" * 10_000 + b"\r\n\r\n", "longer than"),
])
def test_framing_errors(data, why):
    stream = io.BytesIO(data)
    with pytest.raises(FramingError, match=why):
        while read_message(stream) is not None:
            pass


# --- a server subprocess over stdio --------------------------------------------------------------------

@pytest.fixture
def raw(tiny_checkpoint):
    servers = []

    def start(*args):
        servers.append(Raw("--model", str(tiny_checkpoint), "--device", "cpu", *args))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def _one_line_framing_error(stderr: str, what: str) -> None:
    # a body read one byte long may first be dropped as bad JSON, depending on when the next bytes
    # arrive (seen once under load); what must hold is one framing error and no traceback
    lines = [line for line in stderr.splitlines() if line.strip() and "WARNING dropped a message" not in line]
    assert len(lines) == 1, stderr
    assert "framing error" in lines[0] and what in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("off", [-1, 1])
def test_content_length_off_by_one_ends_the_server(raw, off):
    server = raw()
    server.initialize()
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}).encode()
    server.send_bytes(b"Content-Length: %d\r\n\r\n" % (len(body) + off) + body)
    for i in range(3, 6):  # what an editor sends next; before the fix none was answered, and it stayed up
        server.send(id=i, method="textDocument/hover", params={
            "textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0}})
    status, stderr = server.exited()
    assert status == EXIT_FRAMING
    _one_line_framing_error(stderr, "header")


def test_lower_case_content_length_is_read(raw):
    server = raw()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"processId": None, "capabilities": {}}}).encode()
    server.send_bytes(frame(body, b"content-length"))
    assert "capabilities" in server.response(1)["result"]
    server.send_bytes(frame(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}).encode(), b"CONTENT-length"))
    assert server.response(2)["result"] is None
    server.send(method="exit")
    assert server.exited()[0] == 0


def test_a_huge_content_length_ends_the_server_at_once(raw):
    server = raw()
    server.initialize()
    server.send_bytes(b"Content-Length: %d\r\n\r\n{" % (64 * 2**30))  # 64 GiB: a MemoryError before the fix
    status, stderr = server.exited()
    assert status == EXIT_FRAMING
    _one_line_framing_error(stderr, "exceeds the limit")


def test_end_of_input_is_a_clean_exit(raw):
    server = raw()
    server.initialize()
    server.proc.stdin.close()
    assert server.exited()[0] == 0


def _busy_text(functions: int) -> str:
    return "".join(f"def f{i}(alpha, beta, gamma):\n    return alpha + beta * gamma\n\n\n" for i in range(functions))


def test_input_is_read_and_answered_while_a_request_runs(raw):
    """A type-inference code action runs the model for many steps; meanwhile the client sends 300
    notifications and then a rename that needs no model. pygls' own reader took one loop turn per
    header or body line, so the rename waited for ~900 model steps (after the code action); now it is
    answered while the code action still runs."""
    server = raw()
    server.initialize(options={"variableNames": False, "typeConfidence": 0.0, "timeBudgetMs": 60000})
    busy, other = "file:///busy.py", "file:///other.py"
    for uri, text in ((busy, _busy_text(12)), (other, "value = 1\nprint(value)\n")):
        server.send(method="textDocument/didOpen", params={"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}})
    server.wait_ready()
    whole = {"start": {"line": 0, "character": 0}, "end": {"line": 48, "character": 0}}
    server.send(id=2, method="textDocument/codeAction", params={
        "textDocument": {"uri": busy}, "range": whole,
        "context": {"diagnostics": [], "triggerKind": 1, "only": ["refactor.rewrite"]}})
    for version in range(2, 302):
        server.send(method="textDocument/didChange", params={
            "textDocument": {"uri": other, "version": version},
            "contentChanges": [{"text": f"value = {version}\nprint(value)\n"}]})
    server.send(id=3, method="textDocument/rename", params={
        "textDocument": {"uri": other}, "position": {"line": 0, "character": 1}, "newName": "total"})
    first, then = server.responses([2, 3])
    assert first["id"] == 3, "the rename waited for the code action"
    assert len(first["result"]["changes"][other]) == 2  # both `value`s, in the 301st version
    assert then["result"], "the code action found no annotation: it did not run the model long"


# --- TCP and Unix sockets -----------------------------------------------------------------------------

def _refused(sock: socket.socket, timeout=30) -> bool:
    """Whether the server closes `sock` without a byte (it may take a message first)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _server_process(*args):
    return subprocess.Popen([sys.executable, "-m", "lsp", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_tcp_needs_a_token_file():
    proc = subprocess.run([sys.executable, "-m", "lsp", "--tcp", str(_free_port())], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "--tcp needs --token-file" in proc.stderr and "Traceback" not in proc.stderr


def test_tcp_token_and_one_client_at_a_time(tiny_checkpoint, tmp_path):
    token = "s3cret-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    port = _free_port()
    proc = _server_process("--model", str(tiny_checkpoint), "--device", "cpu", "--tcp", str(port),
                           "--token-file", str(tmp_path / "token"))
    clients = []
    try:
        # No token, then a wrong one: closed unanswered, and the server keeps listening.
        for options in ({}, {"token": "guess-guess-guess-guess"}):
            intruder = Raw(sock=_connect(("127.0.0.1", port)))
            clients.append(intruder)
            intruder.send(id=1, method="initialize", params={"processId": None, "capabilities": {},
                                                              "initializationOptions": options})
            assert intruder.closed.wait(30) and intruder.inbox.empty()
        owner = Raw(sock=_connect(("127.0.0.1", port)))
        clients.append(owner)
        assert "capabilities" in owner.initialize(options={"token": token})["result"]
        # A second client, even with the token, is closed and cannot take over.
        second = _connect(("127.0.0.1", port))
        second.sendall(frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "processId": None, "capabilities": {}, "initializationOptions": {"token": token}}}).encode()))
        assert _refused(second)
        second.close()
        owner.send(method="textDocument/didOpen", params={"textDocument": {
            "uri": "file:///t.py", "languageId": "python", "version": 1, "text": "count = 1\nprint(count)\n"}})
        owner.send(id=2, method="textDocument/rename", params={
            "textDocument": {"uri": "file:///t.py"}, "position": {"line": 0, "character": 1}, "newName": "n"})
        edits = owner.response(2)["result"]["changes"]["file:///t.py"]
        assert len(edits) == 2
        owner.send(id=3, method="shutdown")
        owner.response(3)
        owner.send(method="exit")
        assert proc.wait(timeout=60) == 0
    finally:
        for c in clients:
            c.sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unix_socket_is_private_and_serves_one_client(tiny_checkpoint, tmp_path):
    path = tmp_path / "infill.sock"
    proc = _server_process("--model", str(tiny_checkpoint), "--device", "cpu", "--socket", str(path))
    try:
        owner = Raw(sock=_connect(str(path), socket.AF_UNIX))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert "capabilities" in owner.initialize()["result"]
        second = _connect(str(path), socket.AF_UNIX)
        assert _refused(second)
        second.close()
        owner.send(id=2, method="shutdown")
        owner.response(2)
        owner.send(method="exit")
        assert proc.wait(timeout=60) == 0
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
