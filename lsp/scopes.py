"""Python name scopes from tree-sitter: which identifiers in a file are the same variable.

This is what makes a rename safe. `symbol_at(text, offset)` finds the variable under the cursor and
every occurrence of it; anything that is not provably that variable is left alone.

Rules (Python's, LEGB without the B):
- Scopes are the module, functions, lambdas, classes and comprehensions. A name bound anywhere in a
  scope (assignment or augmented-assignment target, `for`/comprehension target, `with`/`except ... as`,
  `import`, `def`/`class` name, parameter, `del`) is local to the whole scope, unless the scope declares
  it `global` or `nonlocal`.
- Free names resolve outwards, skipping class scopes (a method does not see its class body's names);
  a name bound nowhere resolves to the module.
- A walrus (`:=`) inside a comprehension binds in the nearest enclosing non-comprehension scope.
- Parameter defaults and annotations, return annotations, decorators, base classes and a
  comprehension's first iterable are evaluated in the enclosing scope.
- Never a variable: the attribute of `obj.name`, the keyword of `f(name=...)`, the module path of an
  import (`import a.b`: only `a` is bound), the imported name of `from m import a as b` (only `b`),
  anything in a string or comment (they hold no identifier nodes, except f-string expressions, which
  are code).
- A name that no scope in the file binds (a builtin, a name from a star import) is not renameable:
  `symbol_at` returns None rather than guess.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from lsp import positions, syntax

_COMPREHENSIONS = ("list_comprehension", "set_comprehension", "dictionary_comprehension", "generator_expression")
_PATTERNS = ("pattern_list", "tuple_pattern", "list_pattern", "list_splat_pattern", "tuple", "list",
             "parenthesized_expression", "expression_list", "as_pattern_target", "parenthesized_list_splat")
_TARGETS = {"assignment": "left", "augmented_assignment": "left", "for_statement": "left",
            "for_in_clause": "left", "named_expression": "name"}


@dataclass(eq=False)
class Scope:
    kind: str
    """module, function, lambda, class or comprehension."""
    parent: Scope | None
    start: int = 0
    """Byte range of the scope's node."""
    end: int = 0
    bound: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Occurrence:
    name: str
    start: int
    """String offsets of the identifier."""
    end: int
    scope: Scope
    binding: bool


@dataclass(frozen=True)
class Symbol:
    """One variable: its name, the scope that owns it, and every occurrence (string offsets, sorted)."""

    name: str
    scope: Scope
    spans: tuple[tuple[int, int], ...]


def _is_target(node) -> bool:
    """Whether identifier `node` is bound by the statement or expression around it."""
    child, parent = node, node.parent
    while parent is not None and parent.type in _PATTERNS:
        child, parent = parent, parent.parent
    if parent is None:
        return False
    if parent.type == "delete_statement" or (parent.type == "as_pattern" and child.type == "as_pattern_target"):
        return True
    target = _TARGETS.get(parent.type)
    if target is None:
        return False
    got = parent.child_by_field_name(target)
    return got is not None and (got.start_byte, got.end_byte) == (child.start_byte, child.end_byte)


class _Walker:
    def __init__(self, data: bytes, text: str):
        self.data, self.text = data, text
        self.occurrences: list[Occurrence] = []
        self.scopes: list[Scope] = []
        self.offset = positions.char_offsets(data)
        """Byte offset -> string offset, one pass over the file (`lsp.positions.char_offsets`)."""

    def scope(self, kind: str, parent: Scope | None, node) -> Scope:
        s = Scope(kind, parent, node.start_byte, node.end_byte)
        self.scopes.append(s)
        return s

    def record(self, node, scope: Scope, binding: bool) -> None:
        name = node.text.decode("utf-8", "surrogatepass")
        if binding:
            owner = scope
            if node.parent is not None and node.parent.type == "named_expression":
                while owner.kind == "comprehension" and owner.parent is not None:
                    owner = owner.parent
            owner.bound.add(name)
            scope = owner
        self.occurrences.append(Occurrence(name, self.offset(node.start_byte), self.offset(node.end_byte),
                                           scope, binding))

    def visit(self, node, scope: Scope) -> None:
        kind = node.type
        if kind == "identifier":
            self.record(node, scope, _is_target(node))
        elif kind in ("function_definition", "lambda"):
            inner = self.scope("function" if kind == "function_definition" else "lambda", scope, node)
            for child in node.children:
                fname = _field(node, child)
                if fname == "name":
                    self.record(child, scope, True)
                elif fname == "parameters":
                    self.parameters(child, inner, scope)
                elif fname == "body":
                    self.visit(child, inner)
                else:  # return type, type parameters
                    self.visit(child, scope)
        elif kind == "class_definition":
            inner = self.scope("class", scope, node)
            for child in node.children:
                fname = _field(node, child)
                if fname == "name":
                    self.record(child, scope, True)
                elif fname == "body":
                    self.visit(child, inner)
                else:
                    self.visit(child, scope)
        elif kind in _COMPREHENSIONS:
            inner = self.scope("comprehension", scope, node)
            first = True
            for child in node.children:
                if child.type == "for_in_clause" and first:
                    first = False
                    for part in child.children:
                        self.visit(part, scope if _field(child, part) == "right" else inner)
                else:
                    self.visit(child, inner)
        elif kind == "attribute":
            obj = node.child_by_field_name("object")
            if obj is not None:
                self.visit(obj, scope)
        elif kind == "keyword_argument":
            value = node.child_by_field_name("value")
            if value is not None:
                self.visit(value, scope)
        elif kind in ("global_statement", "nonlocal_statement"):
            names = scope.globals if kind == "global_statement" else scope.nonlocals
            for child in node.children:
                if child.type == "identifier":
                    names.add(child.text.decode("utf-8", "surrogatepass"))
                    self.record(child, scope, False)
        elif kind in ("import_statement", "import_from_statement"):
            for child in node.children:
                if _field(node, child) != "name":
                    continue
                if child.type == "aliased_import":
                    alias = child.child_by_field_name("alias")
                    if alias is not None:
                        self.record(alias, scope, True)
                elif child.type == "dotted_name" and child.children:
                    if kind == "import_statement" or len(child.children) == 1:
                        self.record(child.children[0], scope, True)
        elif kind == "future_import_statement":
            return
        else:
            for child in node.children:
                self.visit(child, scope)

    def parameters(self, node, inner: Scope, outer: Scope) -> None:
        for param in node.children:
            kind = param.type
            if kind == "identifier":
                self.record(param, inner, True)
            elif kind in ("list_splat_pattern", "dictionary_splat_pattern"):
                for c in param.children:
                    if c.type == "identifier":
                        self.record(c, inner, True)
            elif kind in ("default_parameter", "typed_default_parameter", "typed_parameter"):
                for c in param.children:
                    fname = _field(param, c)
                    if fname == "name" or (fname is None and c.type == "identifier"):
                        self.record(c, inner, True)
                    elif fname is None and c.type in ("list_splat_pattern", "dictionary_splat_pattern"):
                        self.parameters_splat(c, inner)
                    else:
                        self.visit(c, outer)

    def parameters_splat(self, node, inner: Scope) -> None:
        for c in node.children:
            if c.type == "identifier":
                self.record(c, inner, True)


def _field(parent, child) -> str | None:
    for i, c in enumerate(parent.children):
        if c.start_byte == child.start_byte and c.end_byte == child.end_byte and c.type == child.type:
            return parent.field_name_for_child(i)
    return None


def resolve(scope: Scope, name: str) -> Scope | None:
    """The scope that owns `name` as seen from `scope`; None when nothing in the file binds it."""
    module = scope
    while module.parent is not None:
        module = module.parent
    s, first = scope, True
    while s is not None:
        if s.kind == "class" and not first:
            s = s.parent
            continue
        if name in s.globals:
            return module if name in module.bound else None
        if name in s.nonlocals:
            s, first = s.parent, False
            continue
        if name in s.bound:
            return s
        s, first = s.parent, False
    return None


@lru_cache(maxsize=8)
def analyse(text: str) -> tuple[Occurrence, ...]:
    """Every variable occurrence in Python `text` (see the module rules); the last few texts are kept,
    since hover, code actions and rename ask about the same document version in turn."""
    parser = syntax.parser_for("python")
    if parser is None:
        return ()
    data = text.encode("utf-8", "surrogatepass")
    walker = _Walker(data, text)
    root = parser.parse(data).root_node
    walker.visit(root, walker.scope("module", None, root))
    return tuple(walker.occurrences)


def symbol_at(text: str, offset: int) -> Symbol | None:
    """The variable whose identifier contains (or ends at) `offset`, with all its occurrences; or None."""
    occurrences = analyse(text)
    here = next((o for o in occurrences if o.start <= offset < o.end), None) or \
        next((o for o in occurrences if o.end == offset), None)
    if here is None:
        return None
    owner = resolve(here.scope, here.name)
    if owner is None:
        return None
    spans = sorted((o.start, o.end) for o in occurrences
                   if o.name == here.name and resolve(o.scope, o.name) is owner)
    return Symbol(here.name, owner, tuple(spans))


def names_in(text: str) -> set[str]:
    """Every variable name occurring in `text` (for telling a new name apart from existing ones)."""
    return {o.name for o in analyse(text)}
