/**
 * Acceptance records (docs/lsp.md, "Acceptance records"): what the extension tells the server.
 *
 * VS Code's stable API has no "shown" or "partially accepted" signal: `handleDidShowCompletionItem` and
 * `handleDidPartiallyAcceptCompletionItem` belong to the proposed `inlineCompletionsAdditions` API, which
 * the extension host calls only for extensions allowed proposed APIs. So:
 * - full acceptance: the server's item carries the `infill.accepted` command, which VS Code runs after
 *   Tab and the language client forwards to the server (`workspace/executeCommand`);
 * - shown: `infill/didShow` when a suggestion reaches the editor uncancelled, the closest stable signal;
 * - partial acceptance (Ctrl+Right) and dismissal are not seen; the server's 10 s rule counts a
 *   suggestion neither accepted nor continued as rejected.
 * No `vscode` import here, so the rule is unit-tested without an editor.
 */

export const ACCEPTED = "infill.accepted";
export const DID_SHOW = "infill/didShow";

interface ItemLike {
    command?: { command: string; arguments?: unknown[] };
}

/** The `{id}` arguments of the server's items in an inline completion result (none with records off). */
export function recordedItems(result: ItemLike[] | { items: ItemLike[] } | null | undefined): { id: string }[] {
    const items = Array.isArray(result) ? result : result?.items ?? [];
    const out: { id: string }[] = [];
    for (const item of items) {
        const arg = item.command?.command === ACCEPTED ? item.command.arguments?.[0] : undefined;
        if (typeof arg === "object" && arg !== null && typeof (arg as { id?: unknown }).id === "string") {
            out.push({ id: (arg as { id: string }).id });
        }
    }
    return out;
}
