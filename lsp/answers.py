"""The lsprotocol answers of the features: pure functions from a feature's result to what the client gets.

Rules:
- Every function takes the document text the result was computed on and the position encoding, and
  converts offsets with `lsp.positions` only; none of them touches the server or the model.
- Code actions carry `data.kind` ("infill.annotate", "infill.rename" with `from`/`to`, "infill.fillHoles"): clients
  recognise them by it, never by their English titles.
"""
from __future__ import annotations

from lsprotocol import types

from lsp import holes, names, positions, scopes
from lsp import types as inference
from lsp.completion import Edit, as_completion_item

ANNOTATE_KIND = "infill.annotate"
RENAME_KIND = "infill.rename"


def span_range(text: str, start: int, end: int, encoding: str) -> types.Range:
    """The range of text[start:end]."""
    return types.Range(types.Position(*positions.to_position(text, start, encoding)),
                       types.Position(*positions.to_position(text, end, encoding)))


def offset_of(text: str, position: types.Position, encoding: str) -> int:
    return positions.to_offset(text, position.line, position.character, encoding)


def workspace_edit(uri: str, text: str, edits: list[tuple[int, int, str]], encoding: str) -> types.WorkspaceEdit:
    return types.WorkspaceEdit(changes={uri: [
        types.TextEdit(span_range(text, start, end, encoding), new) for start, end, new in edits]})


def inline_completions(text: str, edit: Edit | None, encoding: str, command: types.Command | None = None
                       ) -> types.InlineCompletionList:
    """The one item of `edit`; `command` (`infill.accepted`) is what the client runs once it is accepted."""
    if edit is None:
        return types.InlineCompletionList(items=[])
    item = types.InlineCompletionItem(insert_text=edit.text, range=span_range(text, edit.start, edit.end, encoding),
                                      command=command)
    return types.InlineCompletionList(items=[item])


def completion_list(text: str, edit: Edit | None, encoding: str, command: types.Command | None = None
                    ) -> types.CompletionList:
    if edit is None:
        return types.CompletionList(is_incomplete=True, items=[])
    label, whole = as_completion_item(text, edit)
    item = types.CompletionItem(
        label=label, kind=types.CompletionItemKind.Snippet, detail="infill", filter_text=whole.text,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(span_range(text, whole.start, whole.end, encoding), whole.text), command=command)
    return types.CompletionList(is_incomplete=True, items=[item])


def inlay_hints(text: str, slots: list[inference.Slot], inferred: list, confidence: float, encoding: str
                ) -> list[types.InlayHint]:
    """A hint for every slot whose inferred type is at least `confidence` likely."""
    return [types.InlayHint(position=types.Position(*positions.to_position(text, slot.at, encoding)),
                            label=inference.hint_label(slot, t), kind=types.InlayHintKind.Type,
                            tooltip=f"inferred by infill, p = {t.probability:.2f}")
            for slot, t in zip(slots, inferred) if t is not None and t.probability >= confidence]


def hover(text: str, slot: inference.Slot, t: inference.InferredType | None, encoding: str) -> types.Hover | None:
    if t is None:
        return None
    shown = f"{slot.name}: {t.annotation}" if slot.kind == "param" else f"def {slot.name}(...) -> {t.annotation}"
    return types.Hover(contents=types.MarkupContent(
        types.MarkupKind.Markdown, f"```python\n{shown}\n```\ninferred by infill, p = {t.probability:.2f}"),
        range=span_range(text, *slot.anchor, encoding))


def annotate_action(uri: str, text: str, slots: list[inference.Slot], inferred: list, confidence: float,
                    encoding: str) -> list[types.CodeAction]:
    """The one "add the inferred annotations" action, or none when no type is confident enough."""
    inserts = inference.annotation_edits(slots, inferred, confidence)
    if not inserts:
        return []
    return [types.CodeAction(title="Add inferred type annotations", kind=types.CodeActionKind.RefactorRewrite,
                             edit=workspace_edit(uri, text, [(at, at, new) for at, new in inserts], encoding),
                             data={"kind": ANNOTATE_KIND})]


def rename_actions(uri: str, text: str, symbol: scopes.Symbol, suggestions: list[names.Suggestion],
                   encoding: str) -> list[types.CodeAction]:
    """One rename action per suggestion, best first."""
    return [types.CodeAction(title=f"Rename '{symbol.name}' to '{s.name}'", kind=types.CodeActionKind.RefactorRewrite,
                             edit=workspace_edit(uri, text, names.rename_edits(symbol, s.name), encoding),
                             data={"kind": RENAME_KIND, "from": symbol.name, "to": s.name})
            for s in suggestions]


def rename_placeholder(text: str, symbol: scopes.Symbol, offset: int, suggestions: list[names.Suggestion],
                       encoding: str) -> types.PrepareRenamePlaceholder:
    """The occurrence under the cursor, and the best suggestion (else the current name) to start from."""
    here = next(s for s in symbol.spans if s[0] <= offset <= s[1])
    return types.PrepareRenamePlaceholder(range=span_range(text, *here, encoding),
                                          placeholder=suggestions[0].name if suggestions else symbol.name)


FILL_KIND = "infill.fillHoles"


def fill_action(uri: str, text: str, found: holes.Holes, changes: list[tuple[int, int, str]], encoding: str, *,
                version: int | None = None, annotate: bool = False) -> list[types.CodeAction]:
    """The "Fill N holes in `name`" action: one edit of every filled hole (none when nothing was filled).
    With `annotate` (a client with change-annotation support), the edits carry an annotation that needs
    confirmation, which VS Code shows as a refactor preview before it applies them."""
    if not changes:
        return []
    title = holes.Holes(found.name, found.start, found.end, found.holes[:len(changes)]).title()
    if annotate:
        label = "infill.fill"
        edit = types.WorkspaceEdit(
            document_changes=[types.TextDocumentEdit(
                types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.AnnotatedTextEdit(range=span_range(text, s, e, encoding), new_text=new, annotation_id=label)
                 for s, e, new in changes])],
            change_annotations={label: types.ChangeAnnotation(
                label=title, needs_confirmation=True, description="model-written code: review before applying")})
    else:
        edit = workspace_edit(uri, text, changes, encoding)
    return [types.CodeAction(title=title, kind=types.CodeActionKind.RefactorRewrite, edit=edit,
                             data={"kind": FILL_KIND, "holes": len(found.holes), "filled": len(changes),
                                   "name": found.name})]
