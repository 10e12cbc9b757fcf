import assert from "node:assert/strict";
import { test } from "node:test";
import { modelName, statusView } from "../src/status";

test("a loading model spins", () => {
    const view = statusView({ state: "loading", model: "/ckpt/tiny/", device: "cpu" });
    assert.equal(view.text, "$(sync~spin) infill: loading tiny");
    assert.equal(view.error, false);
});

test("a ready model shows model, device and the last latency", () => {
    const view = statusView({
        state: "ready", model: "/ckpt/tiny", device: "cpu", latencyMs: 41.6, ttftMs: 12.2, promptTokens: 300,
        cachedTokens: 280, message: "",
    });
    assert.equal(view.text, "$(sparkle) infill: tiny · cpu · 42 ms");
    assert.match(view.tooltip, /last completion: 42 ms \(first token 12 ms\)/);
    assert.match(view.tooltip, /prompt tokens: 300 \(280 cached\)/);
    assert.equal(statusView({ state: "ready", model: "tiny", device: "cuda:0" }).text, "$(sparkle) infill: tiny · cuda:0");
});

test("the tooltip says how much repository context the last completion used, and from where", () => {
    const view = statusView({
        state: "ready", model: "tiny", device: "cpu", contextTokens: 412, contextFiles: ["pkg/util.py", "pkg/io.py"],
    });
    assert.match(view.tooltip, /context: 412 tokens from 2 files \(pkg\/util\.py, pkg\/io\.py\)/);
    assert.doesNotMatch(statusView({ state: "ready", contextTokens: 0, contextFiles: [] }).tooltip, /context:/);
});

test("failed and off read as such; the failure's reason is in the tooltip", () => {
    const failed = statusView({ state: "failed", model: null, device: "auto", message: "no checkpoint at /x" });
    assert.equal(failed.error, true);
    assert.match(failed.tooltip, /no checkpoint at \/x/);
    assert.equal(statusView({ state: "off", model: "m", device: "cpu" }).text, "$(circle-slash) infill: off");
    const stopped = statusView({ state: "stopped", message: "could not start infill-lsp: ENOENT" });
    assert.deepEqual([stopped.text, stopped.error], ["$(error) infill: no server", true]);
    assert.match(stopped.tooltip, /ENOENT/);
    assert.equal(statusView(undefined).text, "$(sync~spin) infill: starting");
    assert.equal(statusView({ state: "starting", message: "restarting in 2 s" }).tooltip, "restarting in 2 s");
});

test("the model's name is its folder's", () => {
    assert.equal(modelName("/a/b/c"), "c");
    assert.equal(modelName("C:\\models\\m1\\"), "m1");
    assert.equal(modelName(null), "default model");
});
