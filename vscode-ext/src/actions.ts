/**
 * The server's code actions that the commands pick from (lsp/server.py `code_action`).
 *
 * Rules:
 * - Actions are recognised by their `data.kind` (lsp/names.py and lsp/types.py set it), never by
 *   their titles, which are English text for people and may change.
 * - Name suggestions have `data.kind` "infill.rename" with `data.from` and `data.to`; the server
 *   sends them best first, and that order is kept.
 * - Annotations are the one action with `data.kind` "infill.annotate".
 * - Filling holes is the one action with `data.kind` "infill.fillHoles" (lsp/answers.py `fill_action`):
 *   its edit carries a change annotation that needs confirmation, so applying it opens the refactor
 *   preview, where the user sees every fill before it applies.
 * The edits are the server's and are applied as they are.
 */

export const ANNOTATE_KIND = "infill.annotate";
export const RENAME_KIND = "infill.rename";
export const FILL_KIND = "infill.fillHoles";

export interface WithData {
    data?: unknown;
}

export interface NameChoice<A extends WithData> {
    from: string;
    to: string;
    rank: number;
    action: A;
}

function dataOf(action: WithData): Record<string, unknown> {
    return typeof action.data === "object" && action.data !== null ? action.data as Record<string, unknown> : {};
}

/** The rename suggestions among `actions`, in the server's order. */
export function nameChoices<A extends WithData>(actions: readonly A[]): NameChoice<A>[] {
    const out: NameChoice<A>[] = [];
    for (const action of actions) {
        const data = dataOf(action);
        if (data.kind === RENAME_KIND && typeof data.from === "string" && typeof data.to === "string") {
            out.push({ from: data.from, to: data.to, rank: out.length + 1, action });
        }
    }
    return out;
}

/** The type-annotation action, if the server offered one. */
export function annotateAction<A extends WithData>(actions: readonly A[]): A | undefined {
    return actions.find((a) => dataOf(a).kind === ANNOTATE_KIND);
}

/** The "Fill N holes" action, if the server offered one. */
export function fillAction<A extends WithData>(actions: readonly A[]): A | undefined {
    return actions.find((a) => dataOf(a).kind === FILL_KIND);
}
