"""Time-budgeted runs: a run that ends on time with a decayed learning rate (`--time-budget 2h`).

Rules:
- The budget is wall time of the training loop (steps, evaluations and checkpoints alike), summed
  over every invocation of a resumed run; process start-up before the first step is not counted.
- The schedule is warmup-stable-decay. The stable phase lasts until `(1 - decay_fraction)` of the
  budget has elapsed; at that step the decay is *placed*: its length in steps is the remaining time
  times the throughput measured so far (steps per second since the first step of this invocation,
  so a slow first step, e.g. `torch.compile`, does not count). From then on the learning rate is a
  pure function of the step, reaching `min_lr_ratio * lr` at the last step, exactly.
- The placement (decay start, last step) and the time spent are stored in every checkpoint, so a
  resumed run continues the same schedule.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str) -> float:
    """Seconds of a duration such as `90m`, `2h`, `300s`, `1h30m` or a bare number of seconds.

    Raises ValueError naming the accepted forms."""
    s = str(text).strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f"bad duration {text!r}: use e.g. 300s, 90m, 2h or 1h30m") from None
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


@dataclass
class BudgetPlan:
    """Where a time-budgeted run is: time spent and, once placed, the decay's first and the last step."""

    budget_s: float
    decay_fraction: float
    warmup_steps: int = 0
    elapsed_s: float = 0.0
    """Loop wall time of earlier invocations (restored from the checkpoint)."""
    decay_start: int | None = None
    end_step: int | None = None

    def update(self, step: int, elapsed_s: float, rate: float | None) -> None:
        """After `step` steps and `elapsed_s` seconds in all, with `rate` steps/s measured in this
        invocation (None when not measurable yet): place the decay when its time has come."""
        if self.decay_start is not None or elapsed_s < (1 - self.decay_fraction) * self.budget_s:
            return
        if rate is None:  # the first step already ran past the decay point: decay over one step
            rate = 0.0
        self.decay_start = max(step, self.warmup_steps)
        remaining = max(0.0, self.budget_s - elapsed_s)
        self.end_step = self.decay_start + max(1, round(rate * remaining))

    def done(self, step: int) -> bool:
        """True once `step` steps complete the run."""
        return self.end_step is not None and step >= self.end_step

    def to_dict(self) -> dict:
        return asdict(self)
