"""Type inference: where annotation slots are, that inserting annotations keeps the file parseable with
each annotation after the right parameter (checked with `ast`), and that inference runs on the tiny model."""
import ast

from lsp.types import InferredType, annotation_edits, infer, probability, slot_prompt, type_slots

SRC = '''\
import functools


def plain(a, b=1, *args, c, d=2, **kwargs):
    return a


def done(x: int, y: str = "") -> int:
    return x


class K:
    def method(self, item, flag=False):
        return item

    @classmethod
    def build(cls, *parts):
        return cls()

    @functools.cache
    def cached(self, key) -> str:
        return key


def pos(p, /, q, *, r=3):
    return p
'''


def apply(text, edits):
    for at, insert in sorted(edits, reverse=True):
        text = text[:at] + insert + text[at:]
    return text


def test_slots_are_the_missing_annotations():
    got = [(s.kind, s.name) for s in type_slots(SRC)]
    assert got == [
        ("param", "a"), ("param", "b"), ("param", "args"), ("param", "c"), ("param", "d"),
        ("param", "kwargs"), ("return", "plain"),
        ("param", "item"), ("param", "flag"), ("return", "method"),
        ("param", "parts"), ("return", "build"),
        ("param", "key"),
        ("param", "p"), ("param", "q"), ("param", "r"), ("return", "pos"),
    ]


def test_annotations_land_after_the_right_parameter_and_the_file_parses():
    slots = type_slots(SRC)
    inferred = [InferredType(f"T{i}", 1.0) for i in range(len(slots))]
    out = apply(SRC, annotation_edits(slots, inferred, 0.5))
    tree = ast.parse(out)
    want = {s.name if s.kind == "param" else ("return", s.name): f"T{i}" for i, s in enumerate(slots)}
    seen = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            a = fn.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                if arg.annotation is not None:
                    seen[arg.arg] = ast.unparse(arg.annotation)
            if fn.returns is not None:
                seen[("return", fn.name)] = ast.unparse(fn.returns)
    for key, value in want.items():
        assert seen[key] == value
    assert seen["x"] == "int" and seen[("return", "cached")] == "str"  # existing annotations kept
    assert "self" not in seen and "cls" not in seen
    # defaults stay with their parameter
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "plain")
    assert [ast.unparse(d) for d in fn.args.defaults] == ["1"] and ast.unparse(fn.args.kw_defaults[1]) == "2"


def test_confidence_filters_edits():
    slots = type_slots(SRC)[:2]
    edits = annotation_edits(slots, [InferredType("int", 0.9), InferredType("str", 0.1)], 0.5)
    assert edits == [(slots[0].at, ": int")]


def test_slot_prompt_masks_the_annotation():
    slot = type_slots(SRC)[1]
    prefix, suffix = slot_prompt(SRC, slot)
    assert prefix.endswith("def plain(a, b: ") and suffix.startswith("=1, *args")
    ret = next(s for s in type_slots(SRC) if s.kind == "return")
    prefix, suffix = slot_prompt(SRC, ret)
    assert prefix.endswith("**kwargs) -> ") and suffix.startswith(":\n")


def test_inference_on_the_tiny_model(tiny_engine):
    slot = type_slots(SRC)[0]
    got = infer(SRC, slot, tiny_engine)
    if got is not None:  # a random model may say nothing that parses
        ast.parse(got.annotation, mode="eval")
        assert 0 < got.probability <= 1
        prefix, suffix = slot_prompt(SRC, slot)
        assert got.probability == probability(tiny_engine, prefix, suffix, got.annotation)


def test_probability_is_a_distribution_over_middles(tiny_engine):
    prefix, suffix = slot_prompt(SRC, type_slots(SRC)[0])
    total = sum(probability(tiny_engine, prefix, suffix, t) for t in ("int", "str", "float"))
    assert 0 < total < 1


def test_annotation_of_keeps_the_longest_start_that_parses():
    from lsp.types import annotation_of
    assert annotation_of("int", "param") == "int"
    assert annotation_of("int | None = 3", "param") == "int | None"
    assert annotation_of("Dict[str, int]) -> x", "param") == "Dict[str, int]"
    assert annotation_of("Foo Foo Foo", "param") == "Foo"
    assert annotation_of("list[int]:\n    return", "return") == "list[int]"
    assert annotation_of("))", "param") is None and annotation_of("", "return") is None
