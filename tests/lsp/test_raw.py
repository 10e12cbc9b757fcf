"""Raw bytes over stdio: what a client library would never send (malformed JSON-RPC, invalid UTF-8,
requests before initialize), and the position-encoding negotiation."""
import json
import queue
import subprocess
import sys
import threading

from support import wait_response


# --- raw bytes: what a client library would never send ------------------------------------------------

class RawServer:
    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "lsp", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        out = self.proc.stdout
        while True:
            length = None
            while (line := out.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line or length is None:
                return
            self.inbox.put(json.loads(out.read(length)))

    def send_bytes(self, body: bytes):
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, **message):
        self.send_bytes(json.dumps({"jsonrpc": "2.0", **message}).encode())

    def response(self, msg_id, timeout=60):
        return wait_response(self.inbox, msg_id, timeout)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_requests_before_initialize_and_malformed_messages(tiny_checkpoint):
    raw = RawServer("--model", str(tiny_checkpoint))
    try:
        position = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0},
                    "context": {"triggerKind": 1}}
        raw.send(id=1, method="textDocument/inlineCompletion", params=position)
        early = raw.response(1)
        assert "error" in early or early["result"]["items"] == []
        raw.send_bytes(b"{not json")
        raw.send_bytes(b'{"jsonrpc": "2.0", "id": 2, "method": "textDocument/completion", "params": "\xff\xfe"}')
        raw.send_bytes(b'{"jsonrpc": "2.0", "method": 42}')
        raw.send(id=3, method="textDocument/completion", params={"bogus": True})
        assert "error" in raw.response(3)
        raw.send(id=4, method="initialize", params={"capabilities": {}, "processId": None})
        assert "capabilities" in raw.response(4)["result"]
        raw.send(method="initialized", params={})
        raw.send(method="textDocument/didOpen", params={"textDocument": {
            "uri": "file:///a.py", "languageId": "python", "version": 1, "text": "x = 1\n"}})
        raw.send(id=5, method="textDocument/inlineCompletion", params=position)
        assert "items" in raw.response(5)["result"]
        assert raw.proc.poll() is None
    finally:
        raw.close()


def test_utf8_positions_when_the_client_offers_them(tiny_checkpoint):
    raw = RawServer("--model", str(tiny_checkpoint))
    try:
        raw.send(id=1, method="initialize", params={"processId": None, "capabilities": {
            "general": {"positionEncodings": ["utf-16", "utf-8"]}}})
        assert raw.response(1)["result"]["capabilities"]["positionEncoding"] == "utf-8"
    finally:
        raw.close()
