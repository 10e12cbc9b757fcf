import assert from "node:assert/strict";
import { test } from "node:test";
import { ANNOTATE_KIND, FILL_KIND, RENAME_KIND, annotateAction, fillAction, nameChoices } from "../src/actions";

const actions = [
    { title: "Ajouter les annotations", data: { kind: ANNOTATE_KIND }, id: 0 },
    { title: "Renommer", data: { kind: RENAME_KIND, from: "x", to: "count" }, id: 1 },
    { title: "Rename 'x' to 'it's'", data: { kind: RENAME_KIND, from: "x", to: "it's" }, id: 2 },
    { title: "Rename 'x' to 'total'", data: { kind: RENAME_KIND, from: "x", to: "total" }, id: 3 },
    { title: "Rename 'x' to 'bogus'", id: 4 },
    { title: "Extract method", data: { kind: "other" }, id: 5 },
];

test("rename suggestions are found by data.kind and keep the server's order", () => {
    const choices = nameChoices(actions);
    assert.deepEqual(choices.map((c) => [c.from, c.to, c.rank, c.action.id]),
        [["x", "count", 1, 1], ["x", "it's", 2, 2], ["x", "total", 3, 3]]);
    assert.deepEqual(nameChoices([]), []);
});

test("the annotation action is found by data.kind, whatever its title", () => {
    assert.equal(annotateAction(actions)?.id, 0);
    assert.equal(annotateAction(actions.slice(1)), undefined);
    const titledOnly: { title: string; data?: unknown }[] = [{ title: "Add inferred type annotations" }];
    assert.equal(annotateAction(titledOnly), undefined);
});

test("the fill-holes action is found by data.kind, whatever its title", () => {
    const withFill = [...actions, { title: "Trous", data: { kind: FILL_KIND, holes: 3, filled: 3 }, id: 6 }];
    assert.equal(fillAction(withFill)?.id, 6);
    assert.equal(fillAction(actions), undefined);
    const titledOnly: { title: string; data?: unknown }[] = [{ title: "Fill 3 holes in `f`" }];
    assert.equal(fillAction(titledOnly), undefined);
});
