"""Hole finding (`lsp.holes`): every default pattern in every listed language, scopes, hints, spans."""
import pytest

from lsp.holes import DEFAULT_PATTERNS, BadPattern, apply, edits, find_holes

PY = '''class Store:
    def load(self, path):
        """Read the file."""
        ...

    def save(self, path):
        pass  # TODO: write it
        raise NotImplementedError("later")
        # TODO: compute the checksum
        return path
        x = 1  # TODO: not a hole: code before it


def short(): ...


def done(x):
    return x
'''


def holes_at(text, needle, language, **kw):
    return find_holes(text, text.index(needle), language=language, **kw)


def test_python_patterns_and_the_scope_under_the_cursor():
    load = holes_at(PY, "Read the", "python")
    assert load.name == "load" and load.title() == "Fill 1 hole in `load`"
    [hole] = load.holes
    assert hole.written == "        ...\n" and hole.lines and hole.hint is None  # the whole line, indentation in
    save = holes_at(PY, "pass", "python")
    assert save.name == "save" and len(save.holes) == 3
    assert [h.written for h in save.holes] == ["        pass  # TODO: write it\n",
                                               '        raise NotImplementedError("later")\n', ""]
    hint = save.holes[2]  # the comment stays; the hole is the line after it
    assert hint.hint == "compute the checksum" and hint.start == hint.end == PY.index("        return path")
    short = holes_at(PY, "short", "python")
    [inline] = short.holes
    assert (inline.written, inline.lines) == ("...", False)  # shares its line with the def: replaced exactly
    assert holes_at(PY, "return x", "python") is None  # a function without holes
    assert find_holes(PY, PY.index("\n\n\ndef short") + 1, language="python") is None  # outside every definition


def test_raise_not_implemented_without_a_message_and_fixme():
    text = "def f():\n    raise NotImplementedError\n\ndef g():\n    pass  # FIXME\n\ndef h():\n    pass\n"
    assert [h.written for h in holes_at(text, "raise", "python").holes] == ["    raise NotImplementedError\n"]
    assert [h.written for h in holes_at(text, "FIXME", "python").holes] == ["    pass  # FIXME\n"]
    assert holes_at(text, "def h", "python") is None  # a plain pass is no hole


def test_a_hint_right_before_a_hole_is_that_holes_hint_and_docstrings_are_never_holes():
    text = 'def f():\n    """... TODO: not code"""\n    # TODO: the sum\n    ...\n    return s\n'
    [hole] = holes_at(text, "return", "python").holes
    assert hole.written == "    ...\n"


def test_the_class_scope_holds_its_methods_holes_and_the_selection_is_its_own_scope():
    store = holes_at(PY, "class Store", "python")
    assert store.name == "Store" and len(store.holes) == 4
    lo, hi = PY.index("    def save"), PY.index("        # TODO: compute")
    picked = find_holes(PY, lo, hi, language="python")
    assert picked.name == "Store" and len(picked.holes) == 2  # the hint comment is outside the selection
    assert picked.title() == "Fill 2 holes in `Store`"
    whole = find_holes(PY, 0, len(PY), language="python")
    assert whole.name == "" and whole.title() == "Fill 5 holes in the selection"


@pytest.mark.parametrize("language,text,needle,written,lines", [
    ("c", "int f(int x) {\n    /* TODO */\n    return 0;\n}\n", "int x", "    /* TODO */\n", True),
    ("c", "int f(int x) {\n    // TODO\n    return 0;\n}\n", "int x", "    // TODO\n", True),
    ("cpp", "int A::f() {\n  // TODO\n}\n", "f()", "  // TODO\n", True),
    ("javascript", 'function f(x) {\n  throw new Error("TODO");\n}\n', "x)", '  throw new Error("TODO");\n', True),
    ("javascript", "class K { m() { throw new Error('TODO: later') } }\n", "m()", "throw new Error('TODO: later')",
     False),
    ("typescript", "const g = (y: number): number => {\n  // TODO\n};\n", "y:", "  // TODO\n", True),
    ("go", 'package main\n\nfunc f(x int) int {\n\tpanic("TODO")\n}\n', "x int", '\tpanic("TODO")\n', True),
    ("rust", "fn f(x: i32) -> i32 {\n    todo!()\n}\n", "x:", "    todo!()\n", True),
    ("rust", "impl S {\n    fn g(&self) { unimplemented!(\"soon\"); }\n}\n", "&self", 'unimplemented!("soon");',
     False),
])
def test_c_family_patterns(language, text, needle, written, lines):
    found = holes_at(text, needle, language)
    assert found is not None, f"no hole found in {language}"
    [hole] = found.holes
    assert (hole.written, hole.lines) == (written, lines)
    assert text[hole.start:hole.end] == written


def test_names_of_c_family_definitions():
    assert holes_at("int A::f() {\n  // TODO\n}\n", "f()", "cpp").name == "A::f"
    assert holes_at("const g = (y) => {\n  // TODO\n};\n", "(y)", "javascript").name == "g"
    assert holes_at("impl Shape {\n    fn area(&self) -> f64 {\n        todo!()\n    }\n}\n", "impl",
                    "rust").name == "Shape"
    c_hint = holes_at("int f(void) {\n    // TODO: add one\n    return 0;\n}\n", "void", "c")
    assert c_hint.holes[0].hint == "add one"


def test_configured_patterns_replace_the_defaults_and_bad_ones_say_which():
    text = "def f():\n    XXX\n    ...\n"
    found = holes_at(text, "def", "python", patterns=(r"XXX",))
    assert [h.written for h in found.holes] == ["    XXX\n"]
    with pytest.raises(BadPattern, match=r"'\('"):
        holes_at(text, "def", "python", patterns=("(",))
    assert DEFAULT_PATTERNS  # documented in docs/lsp.md


def test_unknown_language_finds_nothing():
    assert find_holes("def f():\n    ...\n", 0, language=None) is None


def test_edits_touch_only_the_holes_and_end_line_holes_with_a_line_break():
    found = holes_at(PY, "pass", "python")
    changes = edits(found, ["        self.write(path)", "", "        s = sum(path)\n"])
    assert len(changes) == 2  # the blank fill leaves its hole as written
    new = apply(PY, changes)
    assert "        self.write(path)\n        raise NotImplementedError" in new
    assert "        # TODO: compute the checksum\n        s = sum(path)\n        return path" in new
    rest = PY.replace("        pass  # TODO: write it\n", "")
    assert new.replace("        self.write(path)\n", "").replace("        s = sum(path)\n", "") == rest
