/**
 * Finding the `infill-lsp` command, and the restart backoff.
 *
 * Rules:
 * - An explicit `infill.server.command` (anything but the bare default name) is used as it is.
 * - The default name is looked up in order: the workspace's `.venv/bin` (trusted workspaces only, since
 *   a workspace could ship any program there), the bin folder of `python.defaultInterpreterPath`,
 *   then PATH. Not found anywhere: the bare name, so the spawn error names what is missing.
 * - A server that keeps crashing is restarted after 1, 2, 4, ... seconds, at most `MAX_DELAY_MS`;
 *   one that ran for `STABLE_MS` starts again from the shortest delay.
 */
import * as path from "path";

export const DEFAULT_COMMAND = "infill-lsp";

/** VS Code languageIds the server completes (lsp/syntax.py); Python alone gets types and names. */
export const LANGUAGES = [
    "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "c", "cpp", "cuda-cpp",
    "java", "go", "rust", "shellscript", "ruby", "lua", "kotlin", "swift", "csharp", "php", "scala",
] as const;

export interface Lookup {
    command: string;
    workspaceFolders: string[];
    /** `python.defaultInterpreterPath` (already reduced to the scopes that count), if set. */
    interpreter?: string;
    pathEnv: string;
    trusted: boolean;
    isExecutable: (file: string) => boolean;
}

/** The folders searched for the default command, in order. */
export function candidateDirs(lookup: Lookup): string[] {
    const dirs: string[] = [];
    if (lookup.trusted) {
        for (const folder of lookup.workspaceFolders) {
            dirs.push(path.join(folder, ".venv", "bin"));
        }
    }
    if (lookup.interpreter && path.isAbsolute(lookup.interpreter)) {
        dirs.push(path.dirname(lookup.interpreter));
    }
    dirs.push(...lookup.pathEnv.split(path.delimiter).filter((d) => d !== ""));
    return dirs;
}

/** The program to start (see the module rules). */
export function resolveCommand(lookup: Lookup): string {
    const command = lookup.command.trim() || DEFAULT_COMMAND;
    if (command !== DEFAULT_COMMAND) {
        return command;
    }
    for (const dir of candidateDirs(lookup)) {
        const file = path.join(dir, DEFAULT_COMMAND);
        if (lookup.isExecutable(file)) {
            return file;
        }
    }
    return DEFAULT_COMMAND;
}

export const FIRST_DELAY_MS = 1000;
export const MAX_DELAY_MS = 60_000;
export const STABLE_MS = 120_000;

/** Restart delays for a crashing server. */
export class Backoff {
    private failures = 0;
    private startedAt: number;

    constructor(private readonly now: () => number = Date.now) {
        this.startedAt = now();
    }

    /** The server (re)started now. */
    started(): void {
        this.startedAt = this.now();
    }

    /** The server died now: how long to wait before the next start. */
    nextDelay(): number {
        if (this.now() - this.startedAt >= STABLE_MS) {
            this.failures = 0;
        }
        const delay = Math.min(FIRST_DELAY_MS * 2 ** this.failures, MAX_DELAY_MS);
        this.failures += 1;
        return delay;
    }
}
