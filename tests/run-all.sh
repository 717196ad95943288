#!/usr/bin/env bash
# Runs every test of cryptobot: formatting and lints, unit and integration tests against the fake Bot
# API, and (as root) the end-to-end scenarios on a booted systemd with the .deb installed.
#
# As root it first installs what the tests need (Debian packages, cargo-deb). Without root the e2e tests
# are reported as skipped by the test runner (never as passed); under CI=true, missing root is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

if [ "$(id -u)" = 0 ]; then
    log "installing test dependencies"
    need=()
    for pkg in systemd-container lintian curl dpkg-dev procps adduser util-linux; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
    command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked --quiet
    run_ignored=(--run-ignored all)
elif [ "${CI:-}" = "true" ]; then
    echo "tests/run-all.sh: CI=true needs root (the e2e tests boot systemd-nspawn); run it as root" >&2
    exit 1
else
    echo "tests/run-all.sh: not root: the systemd e2e tests will be reported as skipped" >&2
    run_ignored=()
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if [ "$(id -u)" = 0 ]; then
    log "building the .deb and the fake Bot API for the e2e tests"
    packaging/build-deb
    cargo build --quiet -p fake-bot-api
    CRYPTOBOT_DEB=$(ls -t target/debian/cryptobot_*.deb | head -n 1)
    export CRYPTOBOT_DEB
    export FAKE_BOT_API_BIN="$PWD/target/debug/fake-bot-api"
fi

log "cargo nextest run"
cargo nextest run --workspace --no-fail-fast "${run_ignored[@]}"

log "all tests done in $(( $(date +%s) - start )) s"
