import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { RESTRICTED, SERVER_KEYS, decidingScope, effective, serverOptions } from "../src/settings";

const manifest = JSON.parse(readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
const properties: Record<string, { default: unknown }> = manifest.contributes.configuration.properties;

test("each server option is one setting, and the settings hold nothing else but the extension's own", () => {
    const own = ["server.command", "server.args", "server.logLevel", "completionItems"];
    const declared = Object.keys(properties).map((k) => k.replace(/^infill\./, "")).sort();
    assert.deepEqual(declared, [...SERVER_KEYS, ...own].sort());
});

test("the restricted settings are the ones package.json declares for Restricted Mode", () => {
    const declared = manifest.capabilities.untrustedWorkspaces.restrictedConfigurations;
    assert.deepEqual(declared, RESTRICTED.map((k) => `infill.${k}`));
    assert.equal(manifest.capabilities.untrustedWorkspaces.supported, "limited");
});

test("the settings' defaults are the server's defaults (lsp/options.py)", () => {
    const sent = serverOptions((key) => properties[`infill.${key}`].default);
    assert.deepEqual(sent, {
        model: null, device: "auto", maxTokens: 64, temperature: 0, timeBudgetMs: 2000, cacheMb: 256,
        completion: true, typeHints: true, variableNames: true, typeConfidence: 0.5, nameSuggestions: 3,
    });
});

test("only the server's keys are sent, whatever else the configuration holds", () => {
    const config: Record<string, unknown> = {
        model: "/m/tiny", maxTokens: 8, "server.command": "/bin/evil", completionItems: true,
    };
    const sent = serverOptions((key) => config[key]);
    assert.deepEqual(sent, { model: "/m/tiny", maxTokens: 8 });
});

test("an empty model path is sent as null, so the server looks for its default", () => {
    assert.equal(serverOptions((key) => (key === "model" ? "  " : undefined)).model, null);
});

test("a trusted workspace's value wins; an untrusted one's never counts", () => {
    const inspected = { defaultValue: "infill-lsp", globalValue: "/usr/bin/infill-lsp", workspaceValue: "./evil" };
    assert.equal(effective(inspected, true), "./evil");
    assert.equal(effective(inspected, false), "/usr/bin/infill-lsp");
    assert.equal(effective({ defaultValue: "infill-lsp", workspaceFolderValue: "./evil" }, false), "infill-lsp");
    assert.equal(effective({ defaultValue: "a", workspaceValue: "b", workspaceFolderValue: "c" }, true), "c");
    assert.equal(effective(undefined, true), undefined);
});

test("a toggle writes where the value is decided", () => {
    assert.equal(decidingScope({ defaultValue: true }), "global");
    assert.equal(decidingScope({ globalValue: false, workspaceValue: true }), "workspace");
    assert.equal(decidingScope({ workspaceValue: true, workspaceFolderValue: false }), "workspaceFolder");
    assert.equal(decidingScope(undefined), "global");
});
