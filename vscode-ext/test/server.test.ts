import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, DEFAULT_COMMAND, FIRST_DELAY_MS, MAX_DELAY_MS, STABLE_MS, resolveCommand, type Lookup } from "../src/server";

function lookup(over: Partial<Lookup>, present: string[]): Lookup {
    return {
        command: DEFAULT_COMMAND, workspaceFolders: ["/ws"], pathEnv: "/usr/local/bin:/usr/bin", trusted: true,
        isExecutable: (file) => present.includes(file), ...over,
    };
}

test("an explicit command is used as it is", () => {
    assert.equal(resolveCommand(lookup({ command: "/opt/x/bin/infill-lsp" }, [])), "/opt/x/bin/infill-lsp");
    assert.equal(resolveCommand(lookup({ command: "my-lsp" }, ["/ws/.venv/bin/infill-lsp"])), "my-lsp");
});

test("the default is found in the workspace venv first, then next to the interpreter, then on PATH", () => {
    const all = ["/ws/.venv/bin/infill-lsp", "/py/bin/infill-lsp", "/usr/bin/infill-lsp"];
    const base = { interpreter: "/py/bin/python" };
    assert.equal(resolveCommand(lookup(base, all)), "/ws/.venv/bin/infill-lsp");
    assert.equal(resolveCommand(lookup(base, all.slice(1))), "/py/bin/infill-lsp");
    assert.equal(resolveCommand(lookup(base, all.slice(2))), "/usr/bin/infill-lsp");
    assert.equal(resolveCommand(lookup(base, [])), DEFAULT_COMMAND);
    assert.equal(resolveCommand(lookup({ command: "  " }, ["/usr/bin/infill-lsp"])), "/usr/bin/infill-lsp");
});

test("an untrusted workspace's venv is never searched", () => {
    const present = ["/ws/.venv/bin/infill-lsp", "/usr/bin/infill-lsp"];
    assert.equal(resolveCommand(lookup({ trusted: false }, present)), "/usr/bin/infill-lsp");
});

test("a relative interpreter path (a bare 'python') adds no folder", () => {
    assert.equal(resolveCommand(lookup({ interpreter: "python", pathEnv: "" }, ["infill-lsp"])), DEFAULT_COMMAND);
});

test("restart delays double up to the cap and start over after a stable run", () => {
    let now = 0;
    const backoff = new Backoff(() => now);
    const delays = Array.from({ length: 9 }, () => backoff.nextDelay());
    assert.deepEqual(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60].map((s) => s * 1000));
    assert.equal(Math.max(...delays), MAX_DELAY_MS);
    backoff.started();
    now += STABLE_MS - 1;
    assert.equal(backoff.nextDelay(), MAX_DELAY_MS);
    backoff.started();
    now += STABLE_MS;
    assert.equal(backoff.nextDelay(), FIRST_DELAY_MS);
});
