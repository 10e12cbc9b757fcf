/**
 * The extension's settings and how they reach the server.
 *
 * Rules:
 * - Each server option is one `infill.*` setting of the same camelCase name (docs/lsp.md); nothing
 *   else is sent, since the server reports unknown keys to the user.
 * - `infill.server.*` and `infill.completionItems` belong to the extension alone.
 * - The server command is code the editor runs: in an untrusted workspace only the user's own
 *   (global) value of a restricted setting counts, never the workspace's.
 * No `vscode` import here, so the rules are unit-tested without an editor.
 */

/** The server's options, in the order of docs/lsp.md. */
export const SERVER_KEYS = [
    "model", "device", "maxTokens", "temperature", "timeBudgetMs", "cacheMb",
    "completion", "typeHints", "variableNames", "typeConfidence", "nameSuggestions",
] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];

/** Settings a workspace must not choose in Restricted Mode (package.json restrictedConfigurations). */
export const RESTRICTED = ["server.command", "server.args", "server.logLevel"] as const;

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
