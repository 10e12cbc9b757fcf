/**
 * The extension's settings and how they reach the server.
 *
 * Rules:
 * - Each server option is one `infill.*` setting of the same camelCase name (docs/lsp.md); nothing
 *   else is sent, since the server reports unknown keys to the user.
 * - `infill.server.*` and `infill.completionItems` belong to the extension alone.
 * - The server command is code the editor runs, and the model decides where the user's code goes: in an
 *   untrusted workspace only the user's own (global) value of a restricted setting counts, never the
 *   workspace's. Every setting that names a model, a URL or a program is restricted (package.json), and
 *   so are those that decide whether and where acceptance records are kept (telemetry*).
 * - An `openai:` model on a host that is not this machine receives the code around the cursor with
 *   every request: the user is asked once per origin (scheme, host, port) before the server gets the
 *   setting; the answer "allow" is remembered, anything else sends no model (the server's default).
 * No `vscode` import here, so the rules are unit-tested without an editor.
 */
import remote from "./remote.json";

/** The server's options, in the order of docs/lsp.md. */
export const SERVER_KEYS = [
    "model", "device", "maxTokens", "temperature", "timeBudgetMs", "cacheMb",
    "completion", "typeHints", "variableNames", "typeConfidence", "nameSuggestions",
    "context", "contextTokens", "contextSources", "contextFileKb", "maxDocumentMb", "fillHoles", "holePatterns",
    "telemetry", "telemetryText", "telemetryDir", "cache", "cacheSourcesMb",
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];

/** Settings a workspace must not choose in Restricted Mode (package.json restrictedConfigurations). */
export const RESTRICTED = [
    "server.command", "server.args", "server.logLevel", "model", "telemetry", "telemetryText", "telemetryDir",
] as const;

/** Whether `key` (without the `infill.` section) is read under the workspace-trust rules. */
export function isRestricted(key: string): boolean {
    return (RESTRICTED as readonly string[]).includes(key);
}

/** What `WorkspaceConfiguration.inspect` returns, reduced to what is used here. */
export interface Inspected<T> {
    defaultValue?: T;
    globalValue?: T;
    workspaceValue?: T;
    workspaceFolderValue?: T;
}

/** The value that counts: the innermost scope that sets it, or only the user's when untrusted. */
export function effective<T>(inspected: Inspected<T> | undefined, trusted: boolean): T | undefined {
    if (inspected === undefined) {
        return undefined;
    }
    if (trusted) {
        return inspected.workspaceFolderValue ?? inspected.workspaceValue ?? inspected.globalValue ??
            inspected.defaultValue;
    }
    return inspected.globalValue ?? inspected.defaultValue;
}

/** The `initializationOptions` / `didChangeConfiguration` payload: the server's keys only. */
export function serverOptions(get: (key: ServerKey) => unknown): Record<ServerKey, unknown> {
    const out = {} as Record<ServerKey, unknown>;
    for (const key of SERVER_KEYS) {
        let value = get(key);
        if (key === "model" && (typeof value !== "string" || value.trim() === "")) {
            value = null; // unset: the server looks at --model, $INFILL_MODEL, then its default
        }
        if (key === "telemetryDir" && typeof value === "string" && value.trim() === "") {
            value = null; // a cleared setting: the user data directory
        }
        if (value !== undefined) {
            out[key] = value;
        }
    }
    return out;
}

/** Where a toggle writes: the scope that decides the value now, so the flip takes effect. */
export type Scope = "workspaceFolder" | "workspace" | "global";

export function decidingScope(inspected: Inspected<unknown> | undefined): Scope {
    if (inspected?.workspaceFolderValue !== undefined) {
        return "workspaceFolder";
    }
    if (inspected?.workspaceValue !== undefined) {
        return "workspace";
    }
    return "global";
}

/** Model names served by another program: the server's list (infill/engines/remote.json, copied here). */
export const REMOTE_PREFIXES: readonly string[] = remote.prefixes;

/** The origin a remote model (`openai:URL`) sends code to, when that is not this machine (loopback);
 * else undefined. A URL that does not parse, or that parsers read differently (a backslash, a user name:
 * `http://127.0.0.1\@evil.example/` is 127.0.0.1 here and evil.example to the server, which refuses
 * both), is returned whole, so it is asked about rather than trusted. */
export function remoteOrigin(model: unknown): string | undefined {
    const prefix = typeof model === "string" ? REMOTE_PREFIXES.find((p) => model.startsWith(p)) : undefined;
    if (typeof model !== "string" || prefix === undefined) {
        return undefined;
    }
    const raw = model.slice(prefix.length).trim();
    if (/[\\\s]/.test(raw)) {  // a backslash, or blanks a URL parser strips
        return raw;
    }
    let url: URL;
    try {
        url = new URL(raw);
    } catch {
        return raw;
    }
    if (url.username || url.password) {
        return raw;
    }
    const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    const loopback = host === "localhost" || host.endsWith(".localhost") || host === "::1" ||
        /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
    return loopback ? undefined : url.origin;
}

/** The settings the server may get: an `openai:` model on another machine only once the user allowed
 * its origin (`approved`, or `ask`, which is called at most once per origin and call). */
export async function withApprovedModel(
    settings: Record<ServerKey, unknown>, approved: readonly string[], ask: (origin: string) => Promise<boolean>,
): Promise<{ settings: Record<ServerKey, unknown>; allowed?: string; refused?: string }> {
    const origin = remoteOrigin(settings.model);
    if (origin === undefined || approved.includes(origin)) {
        return { settings };
    }
    if (await ask(origin)) {
        return { settings, allowed: origin };
    }
    return { settings: { ...settings, model: null }, refused: origin };
}
