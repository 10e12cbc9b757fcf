import assert from "node:assert/strict";
import { test } from "node:test";
import { recordedItems } from "../src/records";

test("the ids of the server's items are what didShow reports", () => {
    const item = { insertText: "x", command: { command: "infill.accepted", title: "", arguments: [{ id: "abc" }] } };
    assert.deepEqual(recordedItems({ items: [item] }), [{ id: "abc" }]);
    assert.deepEqual(recordedItems([item, item]), [{ id: "abc" }, { id: "abc" }]);
});

test("items without the command (records off) or with another command report nothing", () => {
    assert.deepEqual(recordedItems({ items: [{}] }), []);
    assert.deepEqual(recordedItems([{ command: { command: "other", arguments: [{ id: "x" }] } }]), []);
    assert.deepEqual(recordedItems([{ command: { command: "infill.accepted", arguments: ["bare"] } }]), []);
    assert.deepEqual(recordedItems(undefined), []);
    assert.deepEqual(recordedItems(null), []);
});
