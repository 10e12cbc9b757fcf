/**
 * The server's code actions that the commands pick from (lsp/server.py `code_action`).
 *
 * Rules:
 * - Name suggestions are the actions titled `Rename 'old' to 'new'`, best first, as the server ranks them.
 * - Annotations are the one action titled `Add inferred type annotations`.
 * Only titles are read here; the edits are the server's and are applied as they are.
 */

export const ANNOTATE_TITLE = "Add inferred type annotations";
const RENAME = /^Rename '(.+)' to '(.+)'$/;

export interface Titled {
    title: string;
}

export interface NameChoice<A extends Titled> {
    from: string;
    to: string;
    rank: number;
    action: A;
}

/** The rename suggestions among `actions`, in the server's order. */
export function nameChoices<A extends Titled>(actions: readonly A[]): NameChoice<A>[] {
    const out: NameChoice<A>[] = [];
    for (const action of actions) {
        const m = RENAME.exec(action.title);
        if (m) {
            out.push({ from: m[1], to: m[2], rank: out.length + 1, action });
        }
    }
    return out;
}

/** The "Add inferred type annotations" action, if the server offered one. */
export function annotateAction<A extends Titled>(actions: readonly A[]): A | undefined {
    return actions.find((a) => a.title === ANNOTATE_TITLE);
}
