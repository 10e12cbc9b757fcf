import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import {
    REMOTE_PREFIXES, RESTRICTED, SERVER_KEYS, decidingScope, effective, isRestricted, remoteOrigin, serverOptions, withApprovedModel,
} from "../src/settings";

const manifest = JSON.parse(readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
const properties: Record<string, { default: unknown; scope?: string; description?: string; markdownDescription?: string }> =
    manifest.contributes.configuration.properties;

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
        context: true, contextTokens: 1024, contextSources: ["open", "recent", "imports", "definitions"],
        contextFileKb: 256, maxDocumentMb: 5, fillHoles: true, holePatterns: null, telemetry: "off",
        telemetryText: false, telemetryDir: null, cache: true, cacheSourcesMb: 64,
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

test("every setting that names a model, a URL or a program is machine-scoped or restricted", () => {
    const restricted: string[] = manifest.capabilities.untrustedWorkspaces.restrictedConfigurations;
    const naming = Object.entries(properties).filter(([key, p]) =>
        /model|command|args|url|path|program/i.test(key) ||
        /director|program|URL|executable|command/.test(`${p.description ?? ""} ${p.markdownDescription ?? ""}`));
    assert.deepEqual(naming.map(([key]) => key).sort(),
        ["infill.model", "infill.server.args", "infill.server.command", "infill.telemetryDir"]);
    for (const [key, p] of naming) {
        assert.ok(p.scope === "machine" || restricted.includes(key), key);
    }
    assert.ok(restricted.includes("infill.model") && isRestricted("model"));
    assert.ok(!isRestricted("maxTokens"));
});

test("an untrusted workspace cannot choose the model", () => {
    const inspected = { defaultValue: null, globalValue: "/models/mine", workspaceValue: "openai:http://anyone/" };
    const sent = serverOptions((key) => (isRestricted(key) ? effective<unknown>(inspected, false) : undefined));
    assert.equal(sent.model, "/models/mine");
});

test("the origin an openai: model sends code to, unless it is this machine", () => {
    assert.equal(remoteOrigin("openai:http://anyone/v1"), "http://anyone");
    assert.equal(remoteOrigin("openai:https://api.example.com:8443/v1/"), "https://api.example.com:8443");
    assert.equal(remoteOrigin("openai:http://10.0.0.2:8000"), "http://10.0.0.2:8000");
    assert.equal(remoteOrigin("openai:not a url"), "not a url");
    for (const local of ["openai:http://127.0.0.1:8000/v1", "openai:http://localhost:1234", "openai:http://[::1]:80/",
        "openai:http://127.1.2.3", "/models/mine", null, undefined, 3]) {
        assert.equal(remoteOrigin(local), undefined, String(local));
    }
    assert.equal(remoteOrigin("openai:http://127.0.0.1.evil.com/"), "http://127.0.0.1.evil.com");
});

test("a URL that parsers read differently is asked about, never trusted as this machine", () => {
    // WHATWG reads 127.0.0.1 here, Python's parsers evil.example (the server refuses both forms)
    assert.equal(remoteOrigin("openai:http://127.0.0.1\\@evil.example/"), "http://127.0.0.1\\@evil.example/");
    assert.equal(remoteOrigin("openai:http://me@127.0.0.1:8000/v1"), "http://me@127.0.0.1:8000/v1");
    assert.equal(remoteOrigin("openai:http://127.0.0.1\t@evil.example/"), "http://127.0.0.1\t@evil.example/");
    assert.deepEqual([...REMOTE_PREFIXES], ["openai:"]);
});

test("a remote model is asked about once; allowed it is kept, refused it is not sent", async () => {
    const settings = serverOptions((key) => (key === "model" ? "openai:http://anyone:8000/v1" : undefined));
    const asked: string[] = [];
    const ask = (answer: boolean) => async (origin: string) => {
        asked.push(origin);
        return answer;
    };
    const refused = await withApprovedModel(settings, [], ask(false));
    assert.deepEqual(refused, { settings: { model: null }, refused: "http://anyone:8000" });
    const allowed = await withApprovedModel(settings, [], ask(true));
    assert.deepEqual(allowed, { settings, allowed: "http://anyone:8000" });
    assert.deepEqual(await withApprovedModel(settings, ["http://anyone:8000"], ask(false)), { settings });
    assert.deepEqual(asked, ["http://anyone:8000", "http://anyone:8000"]);
    const local = serverOptions((key) => (key === "model" ? "openai:http://127.0.0.1:8000/v1" : undefined));
    assert.deepEqual(await withApprovedModel(local, [], ask(false)), { settings: local });
    assert.equal(asked.length, 2);
});
