#!/usr/bin/env bash
# Runs every test of cryptobot: formatting and lints, unit and integration tests against the fake Bot
# API, (as root) the end-to-end scenarios on a booted systemd with the .deb installed, and a bounded run
# of every fuzz target (fuzz/README.md).
#
# As root it first installs what the tests need (Debian packages, cargo-deb). Without root the e2e tests
# are reported as skipped by the test runner (never as passed); under CI=true, missing root is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's line says when it began (seconds since the start): where a slow run spends its time.
log() { printf '\n== [%4d s] %s\n' "$(($(date +%s) - start))" "$*"; }
start=$(date +%s)
# "In CI": CI=true or CI=1, the one definition (tests/support's in_ci): nothing may be skipped there.
in_ci() { [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; }
# Tests that cannot run here append their SKIPPED line to this file (tests/support's skip); nextest hides
# a passing test's output, so the closing lines list them from here.
CRYPTOBOT_SKIP_LOG=$(mktemp -t cryptobot-skips.XXXXXX)
export CRYPTOBOT_SKIP_LOG
trap 'rm -f "$CRYPTOBOT_SKIP_LOG"' EXIT

if [ "$(id -u)" = 0 ]; then
    log "installing test dependencies"
    need=()
    # g++: libfuzzer-sys compiles libFuzzer (the fuzz crate's tests and fuzz/run). debootstrap: the
    # Debian 12 and 13 roots of the e2e containers (tests/e2e/debian-root.sh).
    for pkg in systemd-container lintian curl dpkg-dev procps adduser util-linux postgresql g++ debootstrap; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
    # promtool checks the shipped Prometheus rules (tests/operations_examples.rs). It is in Debian's
    # prometheus package, whose installation would start a Prometheus server here: only promtool is
    # unpacked from it, once, into a cache.
    promtool_dir=/var/cache/cryptobot-tests/prometheus
    if [[ ! -x $promtool_dir/usr/bin/promtool ]]; then
        log "unpacking promtool from Debian's prometheus package"
        pkg_dir=$(mktemp -d)
        (cd "$pkg_dir" && { apt-get -q -o APT::Sandbox::User=root download prometheus \
            || { apt-get update -qq && apt-get -q -o APT::Sandbox::User=root download prometheus; }; })
        rm -rf "$promtool_dir.new" && mkdir -p "$promtool_dir.new"
        dpkg-deb -x "$pkg_dir"/prometheus_*.deb "$promtool_dir.new"
        rm -rf "$pkg_dir" "$promtool_dir" && mv "$promtool_dir.new" "$promtool_dir"
    fi
    export PROMTOOL=$promtool_dir/usr/bin/promtool
    promtool_version=$("$PROMTOOL" --version 2>&1)
    echo "${promtool_version%%$'\n'*}"
    command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked --quiet
    run_ignored=(--run-ignored all)
    # The e2e scenarios run on minimal roots of Debian 12 and 13, cached in /var/cache/cryptobot-e2e
    # (tests/e2e/debian-root.sh). A machine without them builds them here, beside the compilation below
    # (mostly downloads and unpacking: about 1.5 min each on 2 cores); the e2e tests find them ready.
    roots_log=$(mktemp -t cryptobot-roots.XXXXXX)
    # On any exit the script waits for the builds (killed in the middle, debootstrap would leave a half
    # root with /proc mounted in it).
    trap 'wait "${roots_pid:-}" 2>/dev/null; rm -f "$CRYPTOBOT_SKIP_LOG" "$roots_log"' EXIT
    (tests/e2e/debian-root.sh bookworm && tests/e2e/debian-root.sh trixie) >"$roots_log" 2>&1 &
    roots_pid=$!
elif in_ci; then
    echo "tests/run-all.sh: CI=${CI} needs root (the e2e tests boot systemd-nspawn); run it as root" >&2
    exit 1
else
    echo "tests/run-all.sh: not root: the systemd e2e tests will be reported as skipped" >&2
    run_ignored=()
fi

log "cargo fmt --check"
cargo fmt --all -- --check
# fuzz/ is a crate of its own (its own [workspace]): `--all` does not reach it.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
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
# cargo deny reads `cargo metadata`, which needs the crates of every platform in Cargo.lock (windows-sys
# too), not only those a Linux build downloads: fetch them first, or a fresh machine's cache fails the
# check under --offline.
log "cargo fetch --locked (every platform's crates, for cargo deny)"
cargo fetch --locked --quiet
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
    # The build directory, as cargo and packaging/build-deb see it: CARGO_TARGET_DIR (a relative one is
    # relative to the repository root, where this script runs), else target/.
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
    # build-deb prints the path of the package it built (under $target_dir/debian, or CRYPTOBOT_DEB_DIR)
    # and nothing else on stdout: no guessing with `ls -t`, which could pick an older or another .deb.
    CRYPTOBOT_DEB=$(packaging/build-deb)
    [[ $CRYPTOBOT_DEB == /* ]] || CRYPTOBOT_DEB=$PWD/$CRYPTOBOT_DEB # a relative CARGO_TARGET_DIR's
    [[ -f $CRYPTOBOT_DEB ]] || { echo "tests/run-all.sh: packaging/build-deb made no .deb ($CRYPTOBOT_DEB)" >&2; exit 1; }
    export CRYPTOBOT_DEB
    cargo build --quiet -p fake-bot-api
    export FAKE_BOT_API_BIN="$target_dir/debug/fake-bot-api"
    [[ -x $FAKE_BOT_API_BIN ]] || { echo "tests/run-all.sh: no fake Bot API at $FAKE_BOT_API_BIN" >&2; exit 1; }
    log "lintian on the .deb (packaging/lintian-check: no E: or W: tag that the package does not override)"
    packaging/lintian-check "$CRYPTOBOT_DEB"
fi

if [[ -n ${roots_pid:-} ]]; then
    log "the Debian 12 and 13 roots of the e2e containers"
    roots_status=0
    wait "$roots_pid" || roots_status=$?
    sed 's/^/    /' "$roots_log"
    ((roots_status == 0)) || { echo "tests/run-all.sh: tests/e2e/debian-root.sh failed (above)" >&2; exit 1; }
fi

log "cargo nextest run"
# bench_* are benchmarks (bench/), ignored like the root-only tests but never part of the test run;
# child_* are the child side of a test that kills a process of its own (tests/harness.rs), run by it.
cargo nextest run --workspace --no-fail-fast "${run_ignored[@]}" -E 'not test(/^bench_/) and not test(/^child_/)'
while IFS= read -r line; do
    skipped+=("${line#SKIPPED: }")
done <"$CRYPTOBOT_SKIP_LOG"
if [ "${#run_ignored[@]}" = 0 ]; then
    skipped+=("the ignored tests (the systemd e2e scenarios): not root; nextest's summary counts them")
fi

# Fuzzing (fuzz/README.md): the fuzz crate's own tests replay every committed input (fuzz/corpus/ and
# fuzz/regressions/) without libFuzzer, then fuzz/run builds every cargo-fuzz target instrumented and
# fuzzes each for FUZZ_SECONDS, starting from its corpus and its saved crashes; a crash fails the run.
# fuzz/run installs cargo-fuzz when it is missing, and g++ (for libFuzzer) when root; without root and
# without a C++ compiler, fuzzing is reported as SKIPPED (never under CI=true: CI runs as root).
# Longer runs: FUZZ_SECONDS=3600 fuzz/run (fuzz/README.md).
#
# CI builds the targets without ASan (FUZZ_SANITIZER=none; one from the environment wins), the fastest
# setting that still catches every panic. Cold builds of the four targets on this project's 2-core
# machine (empty FUZZ_TARGET_DIR, `nice -n 19 fuzz/run` with FUZZ_SECONDS=5), once beside other builds
# and once with the machine to itself (other builds came and went: the figures are rough):
#                                                        beside other builds        alone
#   address sanitizer, codegen-units 1 (fuzz/run's default)  27.6 min (22.4 CPU-min)  11.8 min (20.4)
#   no sanitizer, codegen-units 1                            13.2 min (14.9 CPU-min)   6.7 min (12.2)
#   no sanitizer, codegen-units 16                           10.9 min (14.0 CPU-min)   8.3 min (13.4)
# so no ASan halves the build, and 16 codegen units gain nothing (FUZZ_CODEGEN_UNITS stays unset).
# After a change in src/ the build takes 2-4 min. Without ASan a panic or a failed assertion still aborts
# the target and fails the run (checked with a planted bug in webhook::decode: the committed corpus
# caught it at once), debug assertions and overflow checks stay on, and it fuzzes 3-5 times faster
# (update_decode about 68,000 exec/s against 12,800). What it gives up is ASan's detection of memory
# errors in unsafe code and C, which these targets barely reach (no SQLite); fuzz/run's default, for the
# longer runs of fuzz/README.md, keeps ASan. Fuzzing adds 10-20 min to CI: the build, 4 x FUZZ_SECONDS
# and the fuzz crate's tests (a debug build of its own).
log "cargo test --manifest-path fuzz/Cargo.toml (the fuzz corpus and regressions, replayed)"
cargo test --manifest-path fuzz/Cargo.toml --quiet
if [ "$(id -u)" = 0 ] || command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null; then
    log "fuzz/run (every target, ${FUZZ_SECONDS:-20} s each)"
    FUZZ_SECONDS=${FUZZ_SECONDS:-20} FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} fuzz/run
else
    why="no C++ compiler for libFuzzer and not root to install g++"
    echo "SKIPPED: fuzz/run: $why"
    skipped+=("fuzz/run ($why)")
fi

log "all tests done in $(( $(date +%s) - start )) s; ${#skipped[@]} skipped"
for what in "${skipped[@]}"; do
    echo "SKIPPED: $what"
done
