"""tree-sitter block detection, language lookup, indentation unit."""
import pytest

from lsp.syntax import indent_unit, language_of, opens_block, parser_for


@pytest.mark.parametrize("language,prefix,expected", [
    ("python", "def f(a):", True), ("python", "x = 1\nif a:\n    ", True), ("python", "try:", True),
    ("python", "if x:\n    pass\nelse:", True), ("python", "class A(B):\n", True),
    ("python", "d = {", False), ("python", "f = lambda x:", False), ("python", 'x = "a:"', False),
    ("python", "x = y[1:", False), ("python", "x = 1", False),
    ("rust", "fn f() {", True), ("rust", "let s = S {", False), ("rust", "impl A {", True),
    ("javascript", "function f() {", True), ("javascript", "const o = {", False), ("javascript", "if (x) {", True),
    ("c", "int main() {", True), ("c", "int a[] = {", False), ("cpp", "namespace x {", True),
    ("go", "func f() {", True), ("go", "x := map[string]int{", False), ("java", "class A {", True),
    ("typescript", "interface A {", True), (None, "foo {", True), (None, "foo", False),
])
def test_block_openers(language, prefix, expected):
    assert opens_block(prefix, language) is expected


def test_a_huge_prefix_parses_only_a_window():
    big = "x = 1\n" * 500_000 + "def f():"
    assert opens_block(big, "python") is True


def test_language_lookup():
    assert language_of("file:///a/b.rs") == "rust"
    assert language_of("file:///a/b.PY") == "python"
    assert language_of("untitled:Untitled-1", "javascriptreact") == "javascript"
    assert language_of("file:///a/b.unknownext") is None
    assert parser_for("no-such-language") is None


def test_indent_unit():
    assert indent_unit("def f():\n  if x:\n    y\n") == "  "
    assert indent_unit("def f():\n\tif x:\n\t\ty\n") == "\t"
    assert indent_unit("x = 1\n") == "    "
