#!/usr/bin/env bash
# The trading page's tools (web/): Node.js and the npm packages of web/package-lock.json,
# the page's build, and the browser its tests drive. Idempotent: once done, a run only
# checks (no apt, no npm, no network).
#
#   scripts/web.sh deps          Node.js >= 20 and web/node_modules; prints the node binary
#   scripts/web.sh build OUT     deps, then the page into OUT (index.html, assets/)
#   scripts/web.sh chromium      Debian's chromium; prints its path
#
# Debian packages (nodejs, npm, chromium) are installed when missing, as root or through
# sudo. npm's download cache stays in ~/.npm, outside the repository; web/node_modules is
# installed again only when package-lock.json changes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
web="$root/web"

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "web: installing $* (apt)" >&2
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

node_major() {
    node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

need_node() {
    if ! command -v npm >/dev/null || [ "$(node_major)" -lt 20 ]; then
        apt_install nodejs npm
    fi
    if [ "$(node_major)" -lt 20 ]; then
        echo "web: Node.js 20 or newer is needed (found $(node --version 2>/dev/null || echo none))" >&2
        exit 1
    fi
}

# The lockfile's digest, recorded in node_modules once `npm ci` has finished.
stamp() {
    cat "$web/package.json" "$web/package-lock.json" | sha256sum | cut -d' ' -f1
}

deps() {
    need_node
    local want
    want="$(stamp)"
    if [ "$(cat "$web/node_modules/.fulgur-stamp" 2>/dev/null)" != "$want" ]; then
        # cargo may run the build script of two profiles at once: one installs, the other
        # waits and then finds it installed.
        exec 9>"$web/.install.lock"
        if command -v flock >/dev/null; then flock 9; fi
        if [ "$(cat "$web/node_modules/.fulgur-stamp" 2>/dev/null)" != "$want" ]; then
            (cd "$web" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >&2)
            echo "$want" >"$web/node_modules/.fulgur-stamp"
        fi
        exec 9>&-
    fi
}

case "${1:-}" in
deps)
    deps
    command -v node
    ;;
build)
    out="${2:?usage: scripts/web.sh build OUT}"
    deps
    (cd "$web" && node build.mjs "$out")
    ;;
chromium)
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
    echo /usr/bin/chromium
    ;;
*)
    echo "usage: scripts/web.sh deps | build OUT | chromium" >&2
    exit 2
    ;;
esac
