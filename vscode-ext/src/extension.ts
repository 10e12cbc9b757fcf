/**
 * The Infill extension: a thin client of `infill-lsp` (lsp/, docs/lsp.md).
 *
 * Rules:
 * - Every model feature is the server's: ghost text comes from the language client's own LSP inline
 *   completion provider (the only one registered), hints, hovers and code actions likewise. The
 *   commands below only ask the server for its code actions and apply the edits it returns.
 * - Settings map one to one onto the server's options (`settings.ts`); the server command is chosen
 *   with the workspace-trust rules there, and finding it follows `server.ts`.
 * - A crashed server restarts after a growing delay; its stderr goes to the "Infill Server" channel.
 * - Acceptance records: the server's `infill.accepted` item command reports a full acceptance (the
 *   language client forwards it); the middleware below reports what was shown (`records.ts`).
 */
import * as fs from "fs";
import * as vscode from "vscode";
import {
    CloseAction, CodeActionRequest, CodeActionTriggerKind, DidChangeConfigurationNotification, ErrorAction,
    LanguageClient, State, type CodeAction as LspCodeAction, type Command as LspCommand,
    type LanguageClientOptions,
} from "vscode-languageclient/node";
import { annotateAction, fillAction, nameChoices } from "./actions";
import { DID_SHOW, recordedItems } from "./records";
import { Backoff, LANGUAGES, resolveCommand } from "./server";
import {
    decidingScope, effective, isRestricted, serverOptions, withApprovedModel, type ServerKey,
} from "./settings";
import { statusView, type ServerStatus } from "./status";

const SECTION = "infill";
/** globalState key: the origins the user allowed an `openai:` model to send code to. */
const ALLOWED_ORIGINS = "infill.allowedOrigins";

let infill: Infill | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
    infill = new Infill(context);
    context.subscriptions.push(
        vscode.commands.registerCommand("infill.suggestNames", () => infill?.suggestNames()),
        vscode.commands.registerCommand("infill.addTypeAnnotations", () => infill?.addTypeAnnotations()),
        vscode.commands.registerCommand("infill.fillHoles", () => infill?.fillHoles()),
        vscode.commands.registerCommand("infill.toggleCompletions", () => infill?.toggleCompletions()),
        vscode.commands.registerCommand("infill.restartServer", () => infill?.restart()),
        vscode.commands.registerCommand("infill.showLog", () => infill?.log.show(true)),
        vscode.workspace.onDidChangeConfiguration((e) => infill?.configurationChanged(e)),
        vscode.workspace.onDidGrantWorkspaceTrust(() => infill?.restart()),
    );
    await infill.start();
}

export async function deactivate(): Promise<void> {
    await infill?.dispose();
    infill = undefined;
}

class Infill {
    readonly log = vscode.window.createOutputChannel("Infill Server", { log: true });
    private readonly item = vscode.window.createStatusBarItem("infill.status", vscode.StatusBarAlignment.Right, 100);
    private readonly backoff = new Backoff();
    private client: LanguageClient | undefined;
    private stopping = false;
    private settings: Record<ServerKey, unknown> | undefined;
    private readonly asking = new Map<string, Promise<boolean>>();

    constructor(private readonly context: vscode.ExtensionContext) {
        this.item.name = "Infill";
        this.item.command = "infill.toggleCompletions";
        this.showStatus(undefined);
        this.item.show();
        context.subscriptions.push(this.log, this.item);
    }

    private config(): vscode.WorkspaceConfiguration {
        return vscode.workspace.getConfiguration(SECTION);
    }

    /** A restricted setting's value under the workspace-trust rules. */
    private restricted<T>(key: string): T | undefined {
        return effective(this.config().inspect<T>(key), vscode.workspace.isTrusted);
    }

    /** The server's options, restricted ones under the trust rules, a remote model only once allowed. */
    private async serverSettings(): Promise<Record<ServerKey, unknown>> {
        const config = this.config();
        const settings = serverOptions((key) => (isRestricted(key) ? this.restricted(key) : config.get(key)));
        const approved = this.context.globalState.get<string[]>(ALLOWED_ORIGINS, []);
        const gated = await withApprovedModel(settings, approved, (origin) => this.ask(origin));
        if (gated.allowed !== undefined) {
            const now = this.context.globalState.get<string[]>(ALLOWED_ORIGINS, []);
            await this.context.globalState.update(ALLOWED_ORIGINS, [...new Set([...now, gated.allowed])]);
        } else if (gated.refused !== undefined) {
            void vscode.window.showWarningMessage(
                `Infill: not sending code to ${gated.refused}; the server uses its default model.`);
        }
        return gated.settings;
    }

    /** Whether the user lets an `openai:` model send code to `origin` (one question at a time per origin). */
    private ask(origin: string): Promise<boolean> {
        let pending = this.asking.get(origin);
        if (pending === undefined) {
            pending = Promise.resolve(vscode.window.showWarningMessage(
                `Infill: the model setting sends the code around your cursor to ${origin} with every request. Allow it?`,
                { modal: true, detail: "Your answer is remembered. Restricted Mode workspaces cannot set the model." },
                "Allow")).then((answer) => answer === "Allow");
            this.asking.set(origin, pending);
            void pending.finally(() => this.asking.delete(origin));
        }
        return pending;
    }

    private command(): { command: string; args: string[] } {
        const python = vscode.workspace.getConfiguration("python").inspect<string>("defaultInterpreterPath");
        const command = resolveCommand({
            command: this.restricted<string>("server.command") ?? "",
            workspaceFolders: (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
            interpreter: effective(python, vscode.workspace.isTrusted),
            pathEnv: process.env.PATH ?? "",
            trusted: vscode.workspace.isTrusted,
            isExecutable: (file) => {
                try {
                    fs.accessSync(file, fs.constants.X_OK);
                    return fs.statSync(file).isFile();
                } catch {
                    return false;
                }
            },
        });
        const args = [...(this.restricted<string[]>("server.args") ?? [])];
        const level = this.restricted<string>("server.logLevel");
        if (level) {
            args.push("--log-level", level);
        }
        return { command, args };
    }

    async start(): Promise<void> {
        const { command, args } = this.command();
        this.settings = await this.serverSettings();
        this.log.info(`starting ${command} ${args.join(" ")}`.trim());
        const selector = LANGUAGES.flatMap((language) => [
            { scheme: "file", language }, { scheme: "untitled", language },
        ]);
        const options: LanguageClientOptions = {
            documentSelector: selector,
            outputChannel: this.log,
            initializationOptions: () => this.settings,
            // Repository context follows the workspace's files (workspace/didChangeWatchedFiles).
            synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*") },
            errorHandler: {
                error: () => ({ action: ErrorAction.Continue }),
                closed: async () => {
                    if (this.stopping) {
                        return { action: CloseAction.DoNotRestart };
                    }
                    const delay = this.backoff.nextDelay();
                    this.log.warn(`the server stopped; restarting in ${delay / 1000} s`);
                    this.showStatus({ state: "starting", message: `the server stopped; restarting in ${delay / 1000} s` });
                    await new Promise((resolve) => setTimeout(resolve, delay));
                    return { action: this.stopping ? CloseAction.DoNotRestart : CloseAction.Restart, handled: true };
                },
            },
            middleware: {
                provideInlineCompletionItems: async (document, position, context, token, next) => {
                    if (!this.config().get<boolean>("completion", true)) {
                        return undefined;
                    }
                    const result = await next(document, position, context, token);
                    if (!token.isCancellationRequested) { // acceptance records: shown (records.ts)
                        for (const shown of recordedItems(result)) {
                            void this.client?.sendNotification(DID_SHOW, shown);
                        }
                    }
                    return result;
                },
                // The server also answers textDocument/completion; VS Code shows ghost text instead.
                provideCompletionItem: (document, position, context, token, next) =>
                    this.config().get<boolean>("completionItems", false)
                        ? next(document, position, context, token) : undefined,
            },
        };
        const client = new LanguageClient("infill", "Infill", { command, args }, options);
        this.client = client;
        client.onDidChangeState((e) => {
            if (e.newState === State.Running) {
                this.backoff.started();
            }
        });
        client.onNotification("infill/status", (status: ServerStatus) => this.showStatus(status));
        try {
            await client.start();
        } catch (error) {
            // The client has shown the error already; the status bar keeps the way out.
            this.showStatus({ state: "stopped", message: `could not start ${command} (${error}); set "infill.server.command"` });
        }
    }

    async stop(): Promise<void> {
        const client = this.client;
        this.client = undefined;
        if (client === undefined) {
            return;
        }
        this.stopping = true;
        try {
            await client.dispose(2000);
        } catch (error) {
            this.log.warn(`stopping the server: ${error}`);
        } finally {
            this.stopping = false;
        }
    }

    /** A new server with the current settings (the command may have changed). */
    async restart(): Promise<void> {
        await this.stop();
        this.showStatus(undefined);
        await this.start();
    }

    async dispose(): Promise<void> {
        await this.stop();
    }

    configurationChanged(e: vscode.ConfigurationChangeEvent): void {
        if (e.affectsConfiguration(`${SECTION}.server`)) {
            void this.restart();
        } else if (e.affectsConfiguration(SECTION) && this.client?.isRunning()) {
            void this.serverSettings().then((settings) => {
                this.settings = settings;
                return this.client?.sendNotification(DidChangeConfigurationNotification.type, { settings });
            });
        }
    }

    private showStatus(status: ServerStatus | undefined): void {
        const view = statusView(status);
        this.item.text = view.text;
        this.item.tooltip = view.tooltip;
        this.item.backgroundColor = view.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
    }

    async toggleCompletions(): Promise<void> {
        const config = this.config();
        const on = config.get<boolean>("completion", true);
        const scope = decidingScope(config.inspect("completion"));
        const target = scope === "workspaceFolder" ? vscode.ConfigurationTarget.WorkspaceFolder
            : scope === "workspace" ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
        await config.update("completion", !on, target);
        vscode.window.setStatusBarMessage(`Infill: inline completions ${on ? "off" : "on"}`, 3000);
    }

    /** The server's refactor.rewrite code actions for `range`, computed now (triggerKind Invoked). */
    private async rewrites(editor: vscode.TextEditor, range: vscode.Range, token?: vscode.CancellationToken
    ): Promise<LspCodeAction[]> {
        const client = this.client;
        if (client === undefined || !client.isRunning()) {
            throw new Error("the language server is not running");
        }
        const c2p = client.code2ProtocolConverter;
        const result = await client.sendRequest(CodeActionRequest.type, {
            textDocument: c2p.asTextDocumentIdentifier(editor.document),
            range: c2p.asRange(range),
            context: { diagnostics: [], only: ["refactor.rewrite"], triggerKind: CodeActionTriggerKind.Invoked },
        }, token);
        return (result ?? []).filter((a): a is LspCodeAction => !isCommand(a));
    }

    private async apply(action: LspCodeAction): Promise<boolean> {
        if (this.client === undefined || action.edit === undefined) {
            return false;
        }
        const edit = await this.client.protocol2CodeConverter.asWorkspaceEdit(action.edit);
        return vscode.workspace.applyEdit(edit);
    }

    async suggestNames(): Promise<void> {
        const editor = vscode.window.activeTextEditor;
        if (editor === undefined) {
            return;
        }
        const at = editor.selection.active;
        try {
            const actions = await vscode.window.withProgress(
                { location: vscode.ProgressLocation.Window, title: "Infill: suggesting names" },
                (_, token) => this.rewrites(editor, new vscode.Range(at, at), token));
            const choices = nameChoices(actions);
            if (choices.length === 0) {
                void vscode.window.showInformationMessage("Infill: no name suggestions here (put the cursor on a variable).");
                return;
            }
            const picked = await vscode.window.showQuickPick(
                choices.map((c) => ({ label: c.to, description: `#${c.rank}, for ${c.from}`, choice: c })),
                { title: `Infill: rename '${choices[0].from}'`, placeHolder: "Pick a name (ranked by the model)" });
            if (picked !== undefined && !(await this.apply(picked.choice.action))) {
                void vscode.window.showWarningMessage("Infill: the rename could not be applied.");
            }
        } catch (error) {
            void vscode.window.showErrorMessage(`Infill: ${error instanceof Error ? error.message : error}`);
        }
    }

    async addTypeAnnotations(): Promise<void> {
        const editor = vscode.window.activeTextEditor;
        if (editor === undefined) {
            return;
        }
        const doc = editor.document;
        const range = editor.selection.isEmpty
            ? new vscode.Range(new vscode.Position(0, 0), doc.lineAt(doc.lineCount - 1).range.end)
            : editor.selection;
        try {
            const actions = await vscode.window.withProgress(
                { location: vscode.ProgressLocation.Window, title: "Infill: inferring types" },
                (_, token) => this.rewrites(editor, range, token));
            const action = annotateAction(actions);
            if (action === undefined) {
                void vscode.window.showInformationMessage("Infill: no type annotation to add with enough confidence.");
            } else if (!(await this.apply(action))) {
                void vscode.window.showWarningMessage("Infill: the annotations could not be applied.");
            }
        } catch (error) {
            void vscode.window.showErrorMessage(`Infill: ${error instanceof Error ? error.message : error}`);
        }
    }

    /** Fill every hole of the function under the cursor (or of the selection), through the refactor preview. */
    async fillHoles(): Promise<void> {
        const editor = vscode.window.activeTextEditor;
        if (editor === undefined) {
            return;
        }
        try {
            const actions = await vscode.window.withProgress(
                { location: vscode.ProgressLocation.Notification, title: "Infill: filling holes", cancellable: true },
                (_, token) => this.rewrites(editor, editor.selection, token));
            const action = fillAction(actions);
            if (action === undefined) {
                void vscode.window.showInformationMessage(
                    "Infill: no holes here (put the cursor in a function with ..., TODO or todo!() in it).");
            } else if (!(await this.apply(action))) {
                void vscode.window.showWarningMessage("Infill: the fills were not applied.");
            }
        } catch (error) {
            void vscode.window.showErrorMessage(`Infill: ${error instanceof Error ? error.message : error}`);
        }
    }
}

function isCommand(a: LspCodeAction | LspCommand): a is LspCommand {
    return typeof (a as LspCommand).command === "string";
}
