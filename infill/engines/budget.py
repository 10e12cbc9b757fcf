"""A brought tokenizer under a time budget: its calls on text cost the request that made them, alone.

A Hugging Face model directory brings its own tokenizer.json, whose normalizer and pre-tokenizer
regexes run on the user's text. One that backtracks (`(a+)+b` over a run of `a`s) holds the calling
thread for seconds per match, then raises pyo3's `PanicException`, a BaseException. The regex runs in
Rust with the GIL released and cannot be interrupted, so (written here because no library bounds a
native call in-process; a subprocess per call would cost far more than the call):

- every call on text (`tokenizer(...)`) runs on a thread of its own; the caller waits at most
  `budget_s` seconds, then gets a `TokenizerTimeout` (one line) and the call is left behind to finish
  on its own; the caller's thread (the language server's model worker) is free for the next request;
- at most `MAX_LEFT_BEHIND` calls are left behind at once; while that many still run, a call fails at
  once rather than start another thread the machine is already too busy for;
- a failure that is not an `Exception` (the panic) comes back as a `TokenizerFailed` line.
Everything else (vocabulary, special tokens, decoding ids) is the wrapped tokenizer's, unchanged.
"""
from __future__ import annotations

import threading

DEFAULT_BUDGET_S = 10.0
"""Seconds a call may take. An ordinary byte-level BPE tokenizer took 1.6 s for 0.6 MB (a 320-token
vocabulary, the worst case for speed, on the loaded 2-core development machine), so whole files
scored by `infill eval` fit; the language server's prompts are far smaller. The server's worker
waits this long at most (then, with `MAX_LEFT_BEHIND` calls still running, not at all)."""
MAX_LEFT_BEHIND = 2


class BroughtTokenizerError(ValueError):
    """The model's own tokenizer could not take a text (a caller may retry without the parts of the
    request that are not the user's document, such as repository context)."""


class TokenizerTimeout(BroughtTokenizerError):
    """The tokenizer did not finish within its budget."""


class TokenizerFailed(BroughtTokenizerError):
    """The tokenizer raised something that is not an `Exception` (a Rust panic)."""


class TimedTokenizer:
    """Wraps a transformers tokenizer; `tokenizer(...)` runs under `budget_s` (see the module rules)."""

    def __init__(self, tokenizer, budget_s: float = DEFAULT_BUDGET_S):
        self.tokenizer = tokenizer
        self.budget_s = budget_s
        self._lock = threading.Lock()
        self.left_behind = 0
        """Calls past their budget that are still running."""

    def __call__(self, *args, **kwargs):
        with self._lock:
            if self.left_behind >= MAX_LEFT_BEHIND:
                raise TokenizerTimeout(f"the model's tokenizer is still busy with {self.left_behind} texts that took "
                                       f"over {self.budget_s:g} s; this request is skipped")
        box: dict = {}
        done = threading.Event()
        state = {"late": False}

        def run():
            try:
                box["value"] = self.tokenizer(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller below)
                box["error"] = exc
            finally:
                with self._lock:
                    done.set()
                    if state["late"]:
                        self.left_behind -= 1

        threading.Thread(target=run, name="infill-tokenizer", daemon=True).start()
        if not done.wait(self.budget_s):
            with self._lock:
                if not done.is_set():
                    state["late"] = True
                    self.left_behind += 1
                    raise TokenizerTimeout(f"the model's tokenizer took over {self.budget_s:g} s on this text (a "
                                           "pre-tokenizer regex that backtracks?); this request is skipped")
        error = box.get("error")
        if error is None:
            return box["value"]
        if isinstance(error, Exception):
            raise error
        first = (str(error).strip().splitlines() or [""])[0]
        raise TokenizerFailed(f"the model's tokenizer failed on this text ({type(error).__name__}: {first})")

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name):
        if name == "tokenizer":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)
