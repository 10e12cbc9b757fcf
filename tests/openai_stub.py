"""A loopback OpenAI-compatible completions server for tests (127.0.0.1 only, stops itself after a minute).

Two backends:
- scripted (`Stub(reply=...)`): streams `reply` in chunks, honouring `stop`; with `logprobs`, every
  character, streamed or echoed, has log-probability -0.5 (so echo agrees with generation, as a
  correct server's does);
- a model (`Stub(model=HFModel(directory))`): greedy decoding and echoed prompt logprobs computed by
  a transformers model with full forward passes, the way vLLM answers `echo` + `logprobs`.
`echo=False` / `logprobs=False` make it a server that answers those requests without them.
A llama.cpp `grammar` of the shape the engine sends for token healing (`root ::= "TEXT" [...]*`) is
followed as llama.cpp follows it: the answer starts with TEXT (the model's first token must start with
it); `grammar=False` makes it a server that ignores the field (vLLM and others).
`hang = N` (set any time) makes the next N streamed requests hang after their first chunk, until
`released` is set (at exit at the latest) or a minute passes: a hung server.
It also answers llama.cpp's native `POST /infill` the way llama-server does: `{"content", "stop"}`
events, the last with `stop_type`, `tokens_predicted`, `tokens_evaluated` and `timings` (a second
request of the same `input_prefix` with `cache_prompt` reports its tokens as cached).
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HFModel:
    """Greedy completion and prompt logprobs from a transformers model directory (no cache, no engine code)."""

    def __init__(self, directory):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
        self.lock = threading.Lock()

    def _encode(self, text):
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [a for a, _ in enc["offset_mapping"]]

    def echo(self, prompt):
        """(token_logprobs, text_offset) of the prompt's tokens (the first has None)."""
        ids, offsets = self._encode(prompt)
        with self.lock, self.torch.inference_mode():
            logits = self.model(input_ids=self.torch.tensor([ids])).logits[0].float()
            lp = self.torch.log_softmax(logits, -1)
        values = [None] + [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]
        return values, offsets

    def generate(self, prompt, max_tokens, stop, first=""):
        """[(token text, logprob)] of a greedy continuation, ending before a stop string or EOS; the
        first token's text starts with `first` (a grammar's literal)."""
        ids, _ = self._encode(prompt)
        out, text = [], ""
        with self.lock, self.torch.inference_mode():
            for step in range(max_tokens):
                lp = self.torch.log_softmax(self.model(input_ids=self.torch.tensor([ids])).logits[0, -1].float(), -1)
                if step == 0 and first:
                    ok = [self.tok.decode([i]).startswith(first) for i in range(lp.shape[0])]
                    lp = lp.masked_fill(~self.torch.tensor(ok), float("-inf"))
                nxt = int(lp.argmax())
                if nxt == self.tok.eos_token_id:
                    break
                piece = self.tok.decode([nxt])
                if any(s and s in text + piece for s in stop):
                    break
                out.append((piece, float(lp[nxt])))
                text += piece
                ids.append(nxt)
        return out


class Stub:
    """Records requests in `requests`; answers /v1/models and /v1/completions (streamed or not)."""

    def __init__(self, reply="    return a + b\n\nprint(1)", chunk=3, delay=0.0, status=200, *, model=None,
                 echo=True, logprobs=True, grammar=True):
        self.reply, self.chunk, self.delay, self.status = reply, chunk, delay, status
        self.model, self.echo, self.logprobs, self.grammar = model, echo, logprobs, grammar
        self.requests: list[tuple[str, str, dict]] = []
        self.disconnected = threading.Event()
        self.hang = 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, payload):
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stub.requests.append(("GET", self.path, {}))
                self._json({"data": [{"id": "stub-model"}]})

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, data))
                if stub.status != 200:
                    self.send_response(stub.status)
                    self.send_header("Content-Length", "17")
                    self.end_headers()
                    self.wfile.write(b"model not loaded\n")
                    return
                if self.path == "/infill":
                    return self._infill(data)
                pieces = stub.pieces(data)
                want = stub.logprobs and data.get("logprobs") is not None
                if not data.get("stream"):
                    choice = {"index": 0, "text": "".join(p for p, _ in pieces), "finish_reason": "stop"}
                    if want:
                        values, offsets = [], []
                        if data.get("echo") and stub.echo:
                            values, offsets = stub.echoed(data["prompt"])
                            choice["text"] = data["prompt"] + choice["text"]
                        at = len(data["prompt"])
                        for p, lp in pieces:
                            values.append(lp)
                            offsets.append(at)
                            at += len(p)
                        choice["logprobs"] = {"token_logprobs": values, "text_offset": offsets}
                    self._json({"choices": [choice]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                hang = stub.hangs()
                try:
                    for p, lp in pieces:
                        for n in range(data.get("n", 1)):
                            choice = {"index": n, "text": p, "finish_reason": None}
                            if want:
                                choice["logprobs"] = {"token_logprobs": [lp]}
                            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
                        self.wfile.flush()
                        stub.pause(hang)
                    for n in range(data.get("n", 1)):
                        event = {"choices": [{"index": n, "text": "", "finish_reason": "stop"}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    stub.disconnected.set()

            def _infill(self, data):
                n_predict = data.get("n_predict", 16)
                pieces = stub.pieces({"prompt": data["input_prefix"], "max_tokens": n_predict,
                                      "stop": data.get("stop")})
                evaluated = len(data["input_prefix"]) + len(data["input_suffix"]) + 3
                cached = stub.cache.get("prefix") == data["input_prefix"] and data.get("cache_prompt")
                stub.cache["prefix"] = data["input_prefix"] if data.get("cache_prompt") else None
                last = {"content": "", "stop": True, "stop_type": "limit" if len(pieces) >= n_predict else "eos",
                        "tokens_predicted": len(pieces), "tokens_evaluated": evaluated,
                        "timings": {"prompt_n": evaluated, "cache_n": evaluated - 1 if cached else 0}}
                if not data.get("stream"):
                    return self._json({**last, "content": "".join(p for p, _ in pieces)})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                hang = stub.hangs()
                try:
                    for p, _ in pieces:
                        self.wfile.write(f"data: {json.dumps({'content': p, 'stop': False})}\n\n".encode())
                        self.wfile.flush()
                        stub.pause(hang)
                    self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
                except (BrokenPipeError, ConnectionResetError):
                    stub.disconnected.set()

        self.cache: dict = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(120, self.server.shutdown)  # stops itself, whatever the test does

    def hangs(self) -> bool:
        """Whether the request starting now hangs (one of the `hang` next ones)."""
        with self.lock:
            if self.hang > 0:
                self.hang -= 1
                return True
            return False

    def pause(self, hang: bool) -> None:
        """The wait after a streamed chunk."""
        if hang:
            self.released.wait(60)
        else:
            time.sleep(self.delay)

    def pieces(self, data: dict) -> list[tuple[str, float]]:
        """The streamed pieces of the answer and their log-probabilities."""
        stop = data.get("stop") or []
        first = ""
        if self.grammar and data.get("grammar"):
            literal = re.match(r'root ::= "((?:[^"\\]|\\.)*)"', data["grammar"])
            first = re.sub(r"\\(.)", r"\1", literal.group(1)) if literal else ""
        if self.model is not None:
            return self.model.generate(data["prompt"], data.get("max_tokens", 16), stop, first)
        text = self.reply if self.reply.startswith(first) else first + self.reply
        for s in stop:
            text = text.split(s)[0]
        pieces = [(text[i:i + self.chunk], -0.5 * len(text[i:i + self.chunk])) for i in range(0, len(text), self.chunk)]
        return pieces[:data.get("max_tokens", 16)]

    def echoed(self, prompt: str) -> tuple[list, list[int]]:
        if self.model is not None:
            return self.model.echo(prompt)
        return [None] + [-0.5] * (len(prompt) - 1), list(range(len(prompt)))

    def completions(self) -> list[dict]:
        """The bodies of the streamed completion requests (not the capability probes or scores)."""
        return [b for m, p, b in self.requests if m == "POST" and b.get("stream") and p == "/v1/completions"]

    def infills(self) -> list[dict]:
        """The bodies of the /infill requests."""
        return [b for m, p, b in self.requests if m == "POST" and p == "/infill"]

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
