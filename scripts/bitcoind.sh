#!/usr/bin/env bash
# A real Bitcoin Core bitcoind + bitcoin-cli for regtest tests (the custody tests to come).
# No reachable registry ships a bitcoind binary, but the crates.io crate libbitcoinkernel-sys
# vendors the whole Bitcoin Core tree (bitcoin/), so we build the two executables from it once,
# into ${FULGUR_CACHE:-$HOME/.cache/fulgur}/bitcoind/<crate version>/bin/. Idempotent: once
# built, a run only checks that the binaries start. The last line of stdout is the absolute path
# of bitcoind (tests take it as BITCOIND_EXE); all chatter goes to stderr.
#
# Usage: scripts/bitcoind.sh [--check]
#   --check  also start bitcoind on regtest in a temp datadir and talk to it with bitcoin-cli.
set -euo pipefail

# Pinned so that a new crate release cannot change the node under test; bump it deliberately.
# 0.4.1 carries Bitcoin Core's master branch as of its release (CLIENT_VERSION 31.99).
CRATE=libbitcoinkernel-sys
CRATE_VERSION=0.4.1

check=0
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        *) echo "usage: $0 [--check]" >&2; exit 2 ;;
    esac
done

log() { echo "bitcoind.sh: $*" >&2; }

cache="${FULGUR_CACHE:-$HOME/.cache/fulgur}/bitcoind"
dest="$cache/$CRATE_VERSION"
bitcoind="$dest/bin/bitcoind"
cli="$dest/bin/bitcoin-cli"

built() {
    [ -x "$bitcoind" ] && [ -x "$cli" ] && "$bitcoind" -version >/dev/null 2>&1 \
        && "$cli" -version >/dev/null 2>&1
}

build() {
    # Debian packages Bitcoin Core's CMake build needs (headers only for boost). apt only when
    # something is actually missing, so a built-once machine never needs root.
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=(g++)
    [ -e /usr/include/boost/multi_index_container.hpp ] || missing+=(libboost-dev)
    pkg-config --exists libevent 2>/dev/null || missing+=(libevent-dev)
    if [ "${#missing[@]}" -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        log "installing ${missing[*]} (apt)"
        # Try without an update first: a fresh container's lists may simply be absent.
        $sudo apt-get install -y -qq "${missing[@]}" >&2 \
            || { $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "${missing[@]}" >&2; }
    fi

    # Everything half-made lives in one temp dir next to the destination (same filesystem, so
    # the final mv is atomic); an interrupted build leaves only this, which the trap removes.
    # A build killed outright (no trap) leaves it behind: we hold the lock, so any such dir is
    # stale and goes now.
    rm -rf "$cache/.build-$CRATE_VERSION".*
    tmp="$(mktemp -d "$cache/.build-$CRATE_VERSION.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT

    # The crate source through cargo itself (the registry protocol is all we may assume): a
    # throwaway project depending on the pinned version, `cargo fetch`, then the unpacked source
    # in CARGO_HOME. fetch downloads without building (building it would build the kernel lib).
    log "fetching $CRATE $CRATE_VERSION with cargo"
    mkdir -p "$tmp/fetch/src"
    cat >"$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-bitcoinkernel"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = "=$CRATE_VERSION"

[workspace]
EOF
    echo "fn main() {}" >"$tmp/fetch/src/main.rs"
    (cd "$tmp/fetch" && cargo fetch -q) >&2
    local src="" d
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$CRATE-$CRATE_VERSION"; do
        if [ -d "$d" ]; then src="$d"; break; fi
    done
    if [ -z "$src" ]; then
        log "cargo fetch did not unpack $CRATE-$CRATE_VERSION under ${CARGO_HOME:-$HOME/.cargo}/registry/src"
        exit 1
    fi
    if [ ! -f "$src/bitcoin/CMakeLists.txt" ] || [ ! -f "$src/bitcoin/src/bitcoind.cpp" ] \
        || [ ! -f "$src/bitcoin/src/bitcoin-cli.cpp" ]; then
        log "$src does not carry Bitcoin Core's bitcoin/CMakeLists.txt, src/bitcoind.cpp and src/bitcoin-cli.cpp"
        exit 1
    fi

    # Only what a regtest node needs. The wallet is off (it would pull in sqlite); tests can
    # still mine with generatetoaddress, a mining RPC that needs only an address, no wallet.
    # IPC off avoids capnproto; embedded asmap off avoids a data file; BUILD_BITCOIN_BIN off
    # skips the `bitcoin` wrapper. All these flags are accepted by this Bitcoin Core version.
    log "configuring Bitcoin Core from $src/bitcoin"
    cmake -S "$src/bitcoin" -B "$tmp/build" \
        -DENABLE_WALLET=OFF -DWITH_EMBEDDED_ASMAP=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF \
        -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_GUI=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF \
        -DBUILD_BITCOIN_BIN=OFF -DENABLE_EXTERNAL_SIGNER=OFF -DINSTALL_MAN=OFF \
        -DWITH_CCACHE=OFF -DCMAKE_BUILD_TYPE=Release >&2

    log "building bitcoind and bitcoin-cli (measured: about 6 minutes on 2 cores)"
    local start=$SECONDS
    cmake --build "$tmp/build" --target bitcoind bitcoin-cli -j"$(nproc)" >&2
    log "built in $((SECONDS - start)) s"

    mkdir -p "$tmp/out/bin"
    cp "$tmp/build/bin/bitcoind" "$tmp/build/bin/bitcoin-cli" "$tmp/out/bin/"
    strip "$tmp/out/bin/bitcoind" "$tmp/out/bin/bitcoin-cli" 2>/dev/null || true
    # A stale or broken destination (built() said no) is replaced, not repaired.
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    # The build tree is some hundreds of MB; --check below sets its own trap, so go now.
    rm -rf "$tmp"
    trap - EXIT
}

if ! built; then
    mkdir -p "$cache"
    # Two runs may start at once (CI's setup step and a test): one builds, the other waits on
    # the lock and then finds the binaries.
    exec 9>"$cache/$CRATE_VERSION.lock"
    flock 9
    built || build
    exec 9>&-
fi

if [ "$check" = 1 ]; then
    # A free port: bind port 0 and read back what the kernel chose (racy in theory, fine here).
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    rpcport="$(free_port)"
    p2pport="$(free_port)"
    datadir="$(mktemp -d)"
    cli_=("$cli" -regtest -datadir="$datadir" -rpcport="$rpcport")
    "$bitcoind" -regtest -daemon=0 -datadir="$datadir" -rpcport="$rpcport" -port="$p2pport" \
        -listen=0 -printtoconsole=0 >&2 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true; rm -rf "$datadir"' EXIT
    # -rpcwait blocks until the RPC server answers (warm-up included), bounded by the timeout.
    "${cli_[@]}" -rpcwait -rpcwaittimeout=60 getblockchaininfo >&2
    count="$("${cli_[@]}" getblockcount)"
    [ "$count" = 0 ] || { log "check: getblockcount is $count, want 0"; exit 1; }
    "${cli_[@]}" stop >&2
    wait "$pid"
    log "check: ok (regtest node answered, getblockcount 0, stopped cleanly)"
fi

echo "$bitcoind"
