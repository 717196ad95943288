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
    for pkg in systemd-container lintian curl dpkg-dev procps adduser util-linux postgresql; do
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

# cargo-deny with the policy in deny.toml. bans, licenses and sources need nothing but Cargo.lock and are
# always checked, strictly. advisories need the RustSec database, a git repository on GitHub, which this
# project's machines cannot reach: `cargo deny fetch db` fails there at once (DNS), and without a copy
# `cargo deny check advisories` fails ("failed to fetch advisory database"), so the check runs when a
# copy could be fetched now or was fetched before (then against that copy, whose date is printed), and
# is otherwise reported as SKIPPED, here and in the closing lines; CRYPTOBOT_REQUIRE_ADVISORIES=1 makes
# that a failure instead.
skipped=()
if ! cargo deny --version >/dev/null 2>&1; then
    log "installing cargo-deny (cargo install cargo-deny --locked)"
    t0=$(date +%s)
    cargo install cargo-deny --locked --quiet
    echo "cargo-deny installed in $(($(date +%s) - t0)) s"
fi
log "cargo deny check bans licenses sources"
cargo deny --locked --offline check --hide-inclusion-graph bans licenses sources
log "cargo deny check advisories"
advisory_db() { # the local copy of the RustSec database, if there is one
    local d
    for d in "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/; do
        [[ -d $d/crates ]] && { printf '%s' "$d"; return 0; }
    done
    return 1
}
if timeout 120 cargo deny --locked fetch db; then
    cargo deny --locked --offline check --hide-inclusion-graph advisories
elif db=$(advisory_db); then
    echo "cargo deny: could not update the RustSec advisory database; checking against the copy of" \
        "$(git -C "$db" log -1 --format=%cs 2>/dev/null || echo 'an unknown date') in $db"
    cargo deny --locked --offline check --hide-inclusion-graph advisories
else
    why="the RustSec advisory database (github.com/RustSec/advisory-db) cannot be fetched from this machine and no copy is cached"
    if [ "${CRYPTOBOT_REQUIRE_ADVISORIES:-}" = 1 ]; then
        echo "tests/run-all.sh: CRYPTOBOT_REQUIRE_ADVISORIES=1: $why" >&2
        exit 1
    fi
    echo "SKIPPED: cargo deny check advisories: $why"
    skipped+=("cargo deny check advisories ($why)")
fi

if [ "$(id -u)" = 0 ]; then
    log "building the .deb and the fake Bot API for the e2e tests"
    packaging/build-deb
    cargo build --quiet -p fake-bot-api
    CRYPTOBOT_DEB=$(ls -t target/debian/cryptobot_*.deb | head -n 1)
    export CRYPTOBOT_DEB
    export FAKE_BOT_API_BIN="$PWD/target/debug/fake-bot-api"
    log "lintian on the .deb (packaging/lintian-check: no E: or W: tag that the package does not override)"
    packaging/lintian-check "$CRYPTOBOT_DEB"
fi

log "cargo nextest run"
# bench_* are benchmarks (bench/), ignored like the root-only tests but never part of the test run.
cargo nextest run --workspace --no-fail-fast "${run_ignored[@]}" -E 'not test(/^bench_/)'

for what in "${skipped[@]}"; do
    echo "SKIPPED: $what"
done
log "all tests done in $(( $(date +%s) - start )) s"
