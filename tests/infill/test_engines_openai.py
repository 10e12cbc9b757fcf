"""OpenAIEngine against a loopback stub server (127.0.0.1 only, bounded, stops itself)."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infill import load
from infill.engine import InfillRequest
from infill.engines import Engine
from infill.engines.openai import EngineError, OpenAIEngine


class Stub:
    """Records requests; streams `reply` in chunks of `chunk` characters, honouring `stop`."""

    def __init__(self, reply="    return a + b\n\nprint(1)", chunk=3, delay=0.0, status=200):
        self.reply, self.chunk, self.delay, self.status = reply, chunk, delay, status
        self.requests: list[tuple[str, str, dict]] = []
        self.disconnected = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                stub.requests.append(("GET", self.path, {}))
                body = json.dumps({"data": [{"id": "stub-model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, data))
                if stub.status != 200:
                    self.send_response(stub.status)
                    self.end_headers()
                    self.wfile.write(b"model not loaded\n")
                    return
                text = stub.reply
                for s in data.get("stop", []):
                    text = text.split(s)[0]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for i in range(0, len(text), stub.chunk):
                        for n in range(data.get("n", 1)):
                            event = {"choices": [{"index": n, "text": text[i:i + stub.chunk], "finish_reason": None}]}
                            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(stub.delay)
                    for n in range(data.get("n", 1)):
                        event = {"choices": [{"index": n, "text": "", "finish_reason": "stop"}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    stub.disconnected.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(60, self.server.shutdown)  # stops itself, whatever the test does

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()


def test_request_prompt_stops_and_result():
    with Stub() as stub:
        engine = load.load_engine(f"openai:{stub.url}#starcoder")
        assert isinstance(engine, OpenAIEngine) and isinstance(engine, Engine)
        result = engine.infill(InfillRequest(prefix="def add(a, b):\n<fim_middle>", suffix="\n", max_tokens=16,
                                             temperature=0.2, top_p=0.9, seed=7, stop=("\n\n",)))
        assert result.text == "    return a + b"
        (_, models_path, _), (_, path, body) = stub.requests
        assert models_path == "/v1/models" and path == "/v1/completions"
        assert body["prompt"] == "<fim_prefix>def add(a, b):\n<fim_suffix>\n<fim_middle>"  # user's sentinel removed
        assert body["model"] == "stub-model" and body["stream"] is True and body["seed"] == 7
        assert body["max_tokens"] == 16 and body["top_p"] == 0.9 and body["temperature"] == 0.2
        assert "\n\n" in body["stop"] and "<|endoftext|>" in body["stop"]


def test_base_url_with_v1_and_default_template():
    with Stub(reply="x") as stub:
        engine = OpenAIEngine(stub.url + "/v1/")
        assert engine.template.name == "infill-spm"
        engine.infill(InfillRequest(prefix="p", suffix="s"))
        assert stub.requests[-1][1] == "/v1/completions"
        assert stub.requests[-1][2]["prompt"] == "<|fim_prefix|><|fim_suffix|>s<|fim_middle|>p"


def test_stop_rule_and_cancel_close_the_connection():
    with Stub(reply="a" * 400, chunk=1, delay=0.01) as stub:
        engine = OpenAIEngine(stub.url, template="qwen")
        started = time.monotonic()
        result = engine.infill(InfillRequest(prefix="p", max_tokens=400, stop_at=lambda t: 5 if len(t) >= 5 else None))
        assert result.text == "aaaaa" and result.candidates[0].finish_reason == "stop_rule"
        assert time.monotonic() - started < 2
        gen = engine.stream_infill(InfillRequest(prefix="p", max_tokens=400))
        next(gen)
        gen.close()
        assert stub.disconnected.wait(5)


def test_n_candidates():
    with Stub(reply="xy") as stub:
        result = OpenAIEngine(stub.url, template="qwen").infill(InfillRequest(prefix="p", n=3, temperature=1.0))
        assert [c.text for c in result.candidates] == ["xy"]  # identical candidates merged
        assert stub.requests[-1][2]["n"] == 3


def test_errors_are_one_line():
    with Stub(status=503) as stub:
        with pytest.raises(EngineError, match="HTTP 503: model not loaded"):
            OpenAIEngine(stub.url, template="qwen").infill(InfillRequest(prefix="p"))
    with Stub() as stub:
        url = stub.url
    with pytest.raises(EngineError, match="cannot reach"):
        OpenAIEngine(url, template="qwen", model="m").infill(InfillRequest(prefix="p"))
    with pytest.raises(ValueError, match="http"):
        OpenAIEngine("ftp://127.0.0.1/")
