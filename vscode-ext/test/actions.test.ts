import assert from "node:assert/strict";
import { test } from "node:test";
import { ANNOTATE_TITLE, annotateAction, nameChoices } from "../src/actions";

const actions = [
    { title: ANNOTATE_TITLE, id: 0 },
    { title: "Rename 'x' to 'count'", id: 1 },
    { title: "Rename 'x' to 'it's'", id: 2 },
    { title: "Rename 'x' to 'total'", id: 3 },
    { title: "Extract method", id: 4 },
];

test("rename suggestions keep the server's order, with their action", () => {
    const choices = nameChoices(actions);
    assert.deepEqual(choices.map((c) => [c.from, c.to, c.rank, c.action.id]),
        [["x", "count", 1, 1], ["x", "it's", 2, 2], ["x", "total", 3, 3]]);
    assert.deepEqual(nameChoices([]), []);
});

test("the annotation action is found by its title only", () => {
    assert.equal(annotateAction(actions)?.id, 0);
    assert.equal(annotateAction(actions.slice(1)), undefined);
});
