#!/usr/bin/env bash
# The Python environment of the ccxt compatibility test (tests/ccxt.rs): a virtualenv with a
# pinned ccxt under ${FULGUR_CACHE:-$HOME/.cache/fulgur}. Idempotent: once the pinned version
# is installed a run only checks it (no pip, no network). The last line of stdout is the
# venv's python; pip's chatter goes to stderr.
set -euo pipefail

# Pinned so that a new ccxt release cannot change what CI checks; bump it deliberately.
CCXT_VERSION=4.5.90

cache="${FULGUR_CACHE:-$HOME/.cache/fulgur}"
venv="$cache/venv-ccxt-$CCXT_VERSION"
py="$venv/bin/python"

installed() {
    # importlib.metadata reads the installed version without importing ccxt (which is slow).
    [ -x "$py" ] && "$py" -c 'import sys, importlib.metadata as m; sys.exit(m.version("ccxt") != sys.argv[1])' \
        "$CCXT_VERSION" 2>/dev/null
}

# Debian's python3 comes without venv/ensurepip (package python3-venv): install what is
# missing, as root or through sudo, once.
need_python() {
    ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null
}
if ! installed && need_python; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "python-env: installing python3 and python3-venv (apt)" >&2
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq python3 python3-venv >&2
fi

if ! installed; then
    mkdir -p "$cache"
    # Two test runs may set up at once (CI's setup step and cargo test): one installs, the
    # other waits and then finds it installed.
    exec 9>"$venv.lock"
    if command -v flock >/dev/null; then flock 9; fi
    if ! installed; then
        # A half-made venv (an interrupted install) is started over rather than repaired.
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$py" -m pip install --quiet --disable-pip-version-check --no-input \
            "ccxt==$CCXT_VERSION" >&2
        installed
    fi
fi
echo "$py"
