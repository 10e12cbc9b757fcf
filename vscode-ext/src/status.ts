/**
 * The status bar item's text, drawn from the server's `infill/status` notification (docs/lsp.md).
 */

export interface ServerStatus {
    /** The server's states, and the extension's own: starting (no server yet), stopped (none could start). */
    state: "loading" | "ready" | "failed" | "off" | "starting" | "stopped";
    model?: string | null;
    device?: string | null;
    message?: string;
    latencyMs?: number | null;
    ttftMs?: number | null;
    promptTokens?: number | null;
    cachedTokens?: number | null;
    contextTokens?: number | null;
    contextFiles?: string[] | null;
    /** Open documents over maxDocumentMb (uri -> why): every feature is off for them. */
    tooLarge?: Record<string, string> | null;
}

export interface StatusView {
    text: string;
    tooltip: string;
    /** True when the item should look like a warning (the model failed to load). */
    error: boolean;
}

/** The last folder of a model path: what a person calls the model. */
export function modelName(model: string | null | undefined): string {
    if (!model) {
        return "default model";
    }
    const parts = model.replace(/[\\/]+$/, "").split(/[\\/]/);
    return parts[parts.length - 1] || model;
}

/** Text and tooltip of the status bar item for `status`, or for a server not started yet. */
export function statusView(status: ServerStatus | undefined): StatusView {
    if (status === undefined || status.state === "starting") {
        return { text: "$(sync~spin) infill: starting", tooltip: status?.message || "starting the server", error: false };
    }
    if (status.state === "stopped") {
        return { text: "$(error) infill: no server", tooltip: status.message || "the server is not running", error: true };
    }
    const model = modelName(status.model);
    const device = status.device ?? "auto";
    const lines = [`model: ${status.model ?? "default"}`, `device: ${device}`];
    if (typeof status.latencyMs === "number") {
        lines.push(`last completion: ${Math.round(status.latencyMs)} ms` +
            (typeof status.ttftMs === "number" ? ` (first token ${Math.round(status.ttftMs)} ms)` : ""));
    }
    if (typeof status.promptTokens === "number") {
        lines.push(`prompt tokens: ${status.promptTokens}` +
            (typeof status.cachedTokens === "number" ? ` (${status.cachedTokens} cached)` : ""));
    }
    if (typeof status.contextTokens === "number" && status.contextTokens > 0) {
        const files = status.contextFiles ?? [];
        lines.push(`context: ${status.contextTokens} tokens from ${files.length} ` +
            `${files.length === 1 ? "file" : "files"}` + (files.length ? ` (${files.join(", ")})` : ""));
    }
    if (status.message) {
        lines.push(status.message);
    }
    for (const [uri, why] of Object.entries(status.tooLarge ?? {})) {
        lines.push(`${uri.split("/").pop()}: ${why}`);
    }
    lines.push("Click to toggle inline completions");
    const tooltip = lines.join("\n");
    switch (status.state) {
        case "loading":
            return { text: `$(sync~spin) infill: loading ${model}`, tooltip, error: false };
        case "failed":
            return { text: "$(error) infill: no model", tooltip, error: true };
        case "off":
            return { text: `$(circle-slash) infill: off`, tooltip, error: false };
        default: {
            const latency = typeof status.latencyMs === "number" ? ` · ${Math.round(status.latencyMs)} ms` : "";
            return { text: `$(sparkle) infill: ${model} · ${device}${latency}`, tooltip, error: false };
        }
    }
}
