"""Scope correctness: a rename touches exactly the variable under the cursor, by Python's rules.
The reference is the hand-marked list of (line, column) occurrences in each case."""
import ast

import pytest

from lsp import scopes
from lsp.names import rename_edits

SRC = '''\
import os.path as op
name = 1


def f(name, b=name, *args, c: int = 2, **kw):
    x = [name for name in b if (w := name)]
    obj.name = name
    g(name=name)
    s = "name"  # name
    def inner():
        nonlocal name
        name += 1
    return w, x, s, args, kw, c, op


def h():
    global name
    name = 2
    return name


def other():
    name = 3
    return name


class C:
    name = 4

    def m(self):
        return name, self.name
'''


def at(src, line, col):
    return sum(len(x) for x in src.splitlines(keepends=True)[:line - 1]) + col


def spans_of(src, line, col):
    symbol = scopes.symbol_at(src, at(src, line, col))
    if symbol is None:
        return None
    return [(src.count("\n", 0, s) + 1, s - src.rfind("\n", 0, s) - 1) for s, _ in symbol.spans]


MODULE = [(2, 0), (5, 14), (17, 11), (18, 4), (19, 11), (31, 15)]
F_PARAM = [(5, 6), (7, 15), (8, 11), (11, 17), (12, 8)]
COMPREHENSION = [(6, 9), (6, 18), (6, 37)]


@pytest.mark.parametrize("line,col,want", [
    (2, 0, MODULE),             # a global, used by a default (outer scope), `global` in h, a method body
    (19, 11, MODULE),           # from inside the function that declares it global
    (31, 15, MODULE),           # a method does not see its class body's `name`
    (5, 6, F_PARAM),            # a parameter, its closure (nonlocal) and a keyword argument's value
    (12, 8, F_PARAM),           # from the closure
    (6, 18, COMPREHENSION),     # a comprehension variable is its own scope
    (23, 4, [(23, 4), (24, 11)]),  # a same-named local in another function
    (28, 4, [(28, 4)]),         # a class attribute binding
    (6, 32, [(6, 32), (13, 11)]),  # a walrus in a comprehension binds in the function
    (1, 18, [(1, 18), (13, 33)]),  # import alias
])
def test_occurrences_follow_python_scoping(line, col, want):
    assert spans_of(SRC, line, col) == want


@pytest.mark.parametrize("line,col", [
    (7, 8),    # obj.name: an attribute
    (8, 6),    # f(name=...): a keyword argument
    (9, 9),    # inside a string
    (9, 20),   # inside a comment
    (31, 26),  # self.name
    (1, 10),   # the module path of an import
])
def test_not_a_variable(line, col):
    assert spans_of(SRC, line, col) is None


def test_builtins_are_not_renameable():
    assert scopes.symbol_at("print(len([]))\n", 0) is None


def test_rename_leaves_everything_else_alone_and_parses():
    symbol = scopes.symbol_at(SRC, at(SRC, 23, 4))  # `name` in other()
    out = SRC
    for start, end, new in sorted(rename_edits(symbol, "title"), reverse=True):
        out = out[:start] + new + out[end:]
    ast.parse(out)
    assert out.count("title") == 2
    assert out.replace("title", "name") == SRC


def test_rename_rejects_bad_names():
    symbol = scopes.symbol_at(SRC, at(SRC, 23, 4))
    for bad in ("class", "1x", "a-b", ""):
        with pytest.raises(ValueError):
            rename_edits(symbol, bad)


def test_non_ascii_offsets_are_characters():
    src = "s = 'é😀'\nvalue = 1\nprint(value)\n"
    symbol = scopes.symbol_at(src, src.index("value"))
    assert [src[a:b] for a, b in symbol.spans] == ["value", "value"]
