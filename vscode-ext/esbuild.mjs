// Bundles src/extension.ts and the language client into dist/extension.js (the `vscode` module is the editor's).
import * as esbuild from "esbuild";

await esbuild.build({
    entryPoints: ["src/extension.ts"],
    bundle: true,
    outfile: "dist/extension.js",
    external: ["vscode"],
    format: "cjs",
    platform: "node",
    target: "node20",
    sourcemap: true,
    minify: process.argv.includes("--minify"),
    logLevel: "warning",
});
