"""Test doubles: a scripted model (it follows one token sequence, so a test can check what an engine feeds)
and a slow engine (it never ends, so a test can cancel it)."""
import threading
import time

import torch

from infill.engines import Completion, CompletionResult, HolesResult


class Scripted(torch.nn.Module):
    """A model that follows one token sequence: at every position whose history is a prefix of `script`
    it predicts the script's next token, anywhere else EOS. An engine that feeds anything but the script,
    in order, gets EOS back and ends its fills early. Records every token fed, by position."""

    def __init__(self, config, script: list[int], eos: int):
        super().__init__()
        self.config, self.script, self.eos = config, script, eos
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device and dtype for the engine
        self.seen: list[int] = []

    def forward(self, tokens, start_pos=0, cache=None, last_only=False):
        fed = tokens[0].tolist()
        del self.seen[start_pos:]
        self.seen += fed
        rows = []
        for p in range(start_pos, start_pos + len(fed)):
            on_script = self.seen[:p + 1] == self.script[:p + 1] and p + 1 < len(self.script)
            logits = torch.full((self.config.vocab_size,), -10.0)
            logits[self.script[p + 1] if on_script else self.eos] = 10.0
            rows.append(logits)
        out = torch.stack(rows)[None].expand(tokens.shape[0], -1, -1)
        return out[:, -1:] if last_only else out


class SlowEngine:
    """Yields forever, one token every 2 ms, counting the steps it was asked for (one completion, or the
    fill of several holes)."""

    name, device = "slow", "cpu"

    def __init__(self):
        self.steps, self.started, self.sessions = 0, 0, []
        self.closed = threading.Event()
        self.threads = set()

    def _forever(self):
        self.started += 1
        self.threads.add(threading.current_thread().name)
        try:
            for _ in range(100_000):
                self.steps += 1
                time.sleep(0.002)
                yield
        finally:
            self.closed.set()

    def stream_infill(self, req):
        self.sessions.append(req.session)
        yield from self._forever()
        return CompletionResult([Completion("x", 1, 0.0, "length")], 1.0, 1)

    def stream_infill_holes(self, pieces, config, **kw):
        yield from self._forever()
        return HolesResult([], 1.0, "joint")

    def drop_session(self, key):
        pass
