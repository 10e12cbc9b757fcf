import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { LANGUAGES } from "../src/server";

const root = path.join(__dirname, "..", "..");
const manifest = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));

test("the commands are contributed under the Infill category", () => {
    const titles = manifest.contributes.commands.map((c: { category: string; title: string }) =>
        `${c.category}: ${c.title}`);
    assert.deepEqual(titles, [
        "Infill: Suggest Variable Names", "Infill: Add Inferred Type Annotations", "Infill: Fill Holes with the Model",
        "Infill: Toggle Inline Completions", "Infill: Restart Server", "Infill: Show Server Log",
    ]);
});

test("the extension wakes for every language it sends to the server", () => {
    assert.deepEqual(manifest.activationEvents, LANGUAGES.map((l) => `onLanguage:${l}`));
});

test("ghost text has one provider: the language client's, none registered by hand", () => {
    const src = path.join(root, "src");
    for (const file of readdirSync(src)) {
        const text = readFileSync(path.join(src, file), "utf8");
        assert.doesNotMatch(text, /register(InlineCompletionItem|CompletionItem)Provider/, file);
    }
});

test("versions are exact, so the lock file and package.json agree on one build", () => {
    for (const deps of [manifest.dependencies, manifest.devDependencies]) {
        for (const [name, version] of Object.entries(deps)) {
            assert.match(String(version), /^\d+\.\d+\.\d+$/, name);
        }
    }
    assert.equal(manifest.devDependencies["@types/vscode"], "1.91.0");
    assert.equal(manifest.engines.vscode, "^1.91.0");
});
