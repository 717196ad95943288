#!/usr/bin/env bash
# The package's life on a booted systemd (issue 8, item 7): install version N with a token (started by the
# install, answers /ping), edit the conffile, upgrade to a rebuilt N+1 → the service restarted exactly
# once and running the new binary, the edited conffile kept, the state kept, nothing answered twice;
# remove → stopped, state and configuration kept; purge → state, configuration, user and group gone;
# install again → answers /ping.
#
# N+1 is built for real unless given: the working tree is copied to a temporary directory, its version
# bumped (0.1.0 → 0.1.1, with a changelog entry), one comment line added to the shipped
# /etc/cryptobot/cryptobot.toml (so that dpkg has a conffile conflict to resolve), and packed with its
# packaging/build-deb into the same Cargo target directory (only the cryptobot crate is compiled again).
# The upgrade is non-interactive and keeps the administrator's conffile:
#     DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Options::=--force-confold ./N+1.deb
# (dpkg then writes the package's new version beside it as cryptobot.toml.dpkg-dist).
#
# Usage (as root): tests/e2e/lifecycle.sh
# Environment:
#   CRYPTOBOT_DEB        version N (default: built with packaging/build-deb)
#   CRYPTOBOT_DEB_NEXT   version N+1 (default: rebuilt from a copy of the tree with the version bumped)
#   FAKE_BOT_API_BIN     the fake Bot API binary (default: cargo build -p fake-bot-api)
#   and container.sh's CT_* settings.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=container.sh
source "$here/container.sh"

(($# == 0)) || {
    echo "usage: $0   (no arguments; see the header for the environment)" >&2
    exit 64
}

BOT_ID=7001002004
TOKEN=$(e2e_token "$BOT_ID")
SECRET=${TOKEN#*:}
CHAT_ID=4343
CONF=/etc/cryptobot/cryptobot.toml
STATE_DB=/var/lib/cryptobot/state.db
EDIT='conflict_max = 11 # edited by the lifecycle e2e: an upgrade must keep this line'
# systemd's catalog ids of "Started UNIT" and "Stopped UNIT" journal entries.
MSG_STARTED=39f53479d3a045ac8e11786248231fbf
MSG_STOPPED=9d1aaa27d60140bd96365438aad20286

e2e_scenario lifecycle lifecycle

# --- helpers ---------------------------------------------------------------------------------------------

deb_field() { dpkg-deb -f "$1" "$2"; }

# ping_pong WHAT: one /ping → exactly one more "pong" (a second one within 2 s would be a replay).
ping_pong() {
    local before
    before=$(sent_pongs)
    inject_ping
    wait_for 15 "a \"pong\" $1" pongs_at_least $((before + 1))
    sleep 2
    (($(sent_pongs) == before + 1)) || fail "$(($(sent_pongs) - before)) pongs for one /ping $1"
}

apt_in() { # apt_in WHAT ARGS...: runs apt-get inside, shows its output indented, fails the step on error.
    local what=$1 out
    shift
    if ! out=$(ct_exec timeout 120 apt-get "$@" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    | /' >&2
        fail "$what: apt-get $* failed"
    fi
    out=${out//$'\r'/} # apt runs dpkg on a pty: CRLF line ends
    printf '%s\n' "$out" | sed 's/^/    | /' >&2
    APT_OUT=$out
}

journal_cursor() { ct_exec journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
# unit_events MESSAGE_ID CURSOR: how many such systemd entries about cryptobot.service came after CURSOR.
# (systemd 252's journalctl finds nothing when --after-cursor meets matches on two fields: match one.)
unit_events() {
    ct_exec journalctl -q --no-pager --after-cursor="$2" -o json --output-fields=MESSAGE_ID UNIT=cryptobot.service \
        | { grep -cF "\"MESSAGE_ID\":\"$1\"" || true; }
}
# The process's executable, as the kernel sees it: " (deleted)" when the file was replaced under it.
exe_of() { ct_exec readlink "/proc/$1/exe"; }
inode_of() { ct_exec stat -c %i "$1"; }
# shellcheck disable=SC2016 # dpkg-query formats, not shell expansions
pkg_version() { ct_exec dpkg-query -W -f='${Version}' cryptobot; }
# shellcheck disable=SC2016
pkg_status() { ct_exec dpkg-query -W -f='${db:Status-Abbrev}' cryptobot 2>/dev/null; }

# build_next: builds N+1 (sets DEB_NEXT, and NEXT_VERSION) from a copy of the tree, into target_dir.
build_next() {
    local src current next DEB_ORIG CFLAGS
    src="$WORK/src"
    mkdir "$src"
    tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$src" -xf -
    current=$(sed -n 's/^version = "\([0-9]*\.[0-9]*\.[0-9]*\)"$/\1/p' "$src/Cargo.toml" | head -n 1)
    [[ -n $current ]] || fail "no version = \"X.Y.Z\" line in Cargo.toml"
    next=$(awk -F. -v v="$current" 'BEGIN { split(v, p, "."); printf "%d.%d.%d", p[1], p[2], p[3] + 1 }')
    sed -i "0,/^version = \"$current\"\$/s//version = \"$next\"/" "$src/Cargo.toml"
    {
        printf 'cryptobot (%s-1) unstable; urgency=medium\n\n' "$next"
        printf '  * Rebuilt by tests/e2e/lifecycle.sh as the upgrade target N+1.\n\n'
        printf ' -- cryptobot developers <cryptobot@example.invalid>  %s\n\n' "$(date -R)"
        cat "$repo/debian/changelog"
    } >"$src/debian/changelog"
    printf '\n# Shipped by the N+1 build of tests/e2e/lifecycle.sh (a changed conffile for dpkg to resolve).\n' \
        >>"$src/packaging/cryptobot.toml"
    # The C code's flags as the tree's own build-deb computes them (dpkg-buildflags maps the source
    # directory into them): other flags would compile SQLite and ring again.
    CFLAGS=$(cd "$repo" && echo "$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)")
    # cargo-deb deletes every other cryptobot_*.deb in <target>/debian, wherever its --output goes: keep
    # a copy of N and put it back afterwards (CRYPTOBOT_DEB may be there, and later tests use it).
    mkdir "$WORK/n"
    cp -p "$DEB" "$WORK/n/"
    DEB_ORIG=$DEB
    DEB="$WORK/n/$(basename "$DEB")"
    DEB_NEXT=$(cd "$src" && CARGO_TARGET_DIR=$target_dir CFLAGS=$CFLAGS CRYPTOBOT_DEB_DIR="$WORK/deb" \
        packaging/build-deb | tail -n 1) || fail "packaging/build-deb of the N+1 copy failed"
    if [[ ! -e $DEB_ORIG ]]; then
        cp -p "$DEB" "$DEB_ORIG"
        log "put $DEB_ORIG back (cargo-deb removed it while building N+1)"
    fi
    # The copy's build left its binary and assets at target/release: put the tree's own back, so that a
    # later `cargo deb --no-build` there does not pack N+1 (cargo only links its fresh build again).
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir CFLAGS=$CFLAGS cargo build --quiet --release --package cryptobot --bin cryptobot \
        && rm -rf "$target_dir/release/assets" \
        && "$target_dir/release/cryptobot" generate-assets "$target_dir/release/assets" >/dev/null \
        && gzip -9nf "$target_dir/release/assets/cryptobot.8") \
        || fail "cannot restore the tree's own release build in $target_dir"
    NEXT_VERSION=$next
}

# --- steps -----------------------------------------------------------------------------------------------

preflight_step curl od awk dpkg-deb tar

step "package N"
package_under_test
V_N=$(deb_field "$DEB" Version)
ok "$V_N: $DEB"

step "package N+1"
if [[ -n ${CRYPTOBOT_DEB_NEXT:-} ]]; then
    DEB_NEXT=$CRYPTOBOT_DEB_NEXT
    [[ -f $DEB_NEXT ]] || fail "no package at CRYPTOBOT_DEB_NEXT='$DEB_NEXT'"
    how="given"
else
    # The same target directory as the tree's own builds: only the cryptobot crate is compiled again.
    target_dir=$(cargo_target_dir)
    [[ -n $target_dir ]] || fail "cannot find the Cargo target directory of $repo"
    # N+1 is kept for the same N (by its hash): the scenario's run on the other Debian release in the
    # same test run uses it instead of compiling again.
    next_cache="$target_dir/e2e-next/$(sha256sum "$DEB" | cut -c1-16)"
    DEB_NEXT=
    if [[ -d $next_cache ]]; then
        DEB_NEXT=$(find "$next_cache" -name 'cryptobot_*.deb' -print -quit)
    fi
    if [[ -n $DEB_NEXT ]]; then
        how="rebuilt earlier for the same N, kept in $next_cache"
    else
        build_next
        rm -rf "$target_dir/e2e-next"
        mkdir -p "$next_cache"
        cp -p "$DEB_NEXT" "$next_cache/"
        how="rebuilt from a copy with version $NEXT_VERSION"
    fi
fi
V_NEXT=$(deb_field "$DEB_NEXT" Version)
dpkg --compare-versions "$V_NEXT" gt "$V_N" || fail "N+1 ($V_NEXT) is not newer than N ($V_N)"
# Does N+1 ship a different default conffile? Then dpkg has a conflict to resolve on the upgrade.
conf_of() { dpkg-deb --fsys-tarfile "$1" | tar -xOf - ".$CONF" | md5sum; }
CONF_CHANGED=0
[[ $(conf_of "$DEB") == "$(conf_of "$DEB_NEXT")" ]] || CONF_CHANGED=1
ok "$V_NEXT ($how; default conffile changed: $CONF_CHANGED)"

fake_bot_api_step

step "boot container"
ct_boot lifecycle
ct_copy_in "$DEB" /tmp/cryptobot-n.deb 0644
ct_copy_in "$DEB_NEXT" /tmp/cryptobot-n1.deb 0644
printf '[Service]\nEnvironment=CRYPTOBOT_API_URL=%s\n' "$API" >"$WORK/test.conf"
ok "$(ct_release)"

# The token and the drop-in are there before the package: its postinst starts the service at once.
put_token_and_dropin() {
    ct_copy_in "$WORK/token" /etc/cryptobot/token 0600
    ct_copy_in "$WORK/test.conf" /etc/systemd/system/cryptobot.service.d/test.conf 0644
}

step "install N with a token → enabled, started by the install, answers /ping"
put_token_and_dropin
t0=$(ct_now)
apt_in "install N" install -y -q --no-install-recommends /tmp/cryptobot-n.deb
took=$(ct_since "$t0")
[[ $(pkg_version) == "$V_N" ]] || fail "installed version is not $V_N"
[[ $(ct_exec systemctl is-enabled cryptobot.service || true) == enabled ]] || fail "cryptobot.service is not enabled"
wait_for 30 "cryptobot.service active after the install" service_is active
ping_pong "from version N"
ok "apt-get install in $took s, MainPID $(unit_prop MainPID)"

step "edit the conffile; note MainPID, InvocationID, NRestarts, state.db"
# shellcheck disable=SC2016 # expanded by the shell inside
ct_sh 'printf "\n%s\n" "$1" >>"$2"' "$EDIT" "$CONF"
conf_before=$(ct_exec md5sum "$CONF" | cut -d' ' -f1)
ct_exec test -s "$STATE_DB" || fail "$STATE_DB is missing or empty after /ping was handled"
state_inode=$(inode_of "$STATE_DB")
pid_n=$(unit_prop MainPID)
inv_n=$(unit_prop InvocationID)
restarts_n=$(unit_prop NRestarts)
[[ $pid_n -gt 0 && -n $inv_n ]] || fail "no MainPID/InvocationID ($pid_n/$inv_n)"
ok "MainPID $pid_n, NRestarts $restarts_n, $STATE_DB inode $state_inode"

step "upgrade N → N+1 (apt-get, --force-confold) → restarted exactly once, new binary running"
cursor=$(journal_cursor)
[[ -n $cursor ]] || fail "no journal cursor"
t0=$(ct_now)
apt_in "upgrade" install -y -q -o Dpkg::Options::=--force-confold /tmp/cryptobot-n1.deb
took=$(ct_since "$t0")
[[ $(pkg_version) == "$V_NEXT" ]] || fail "installed version is not $V_NEXT"
wait_for 30 "cryptobot.service active after the upgrade" service_is active
pid_n1=$(unit_prop MainPID)
inv_n1=$(unit_prop InvocationID)
[[ $pid_n1 != "$pid_n" ]] || fail "MainPID unchanged ($pid_n): the service was not restarted"
[[ $inv_n1 != "$inv_n" ]] || fail "InvocationID unchanged: the service was not restarted"
[[ $(unit_prop NRestarts) == "$restarts_n" ]] || fail "NRestarts $restarts_n → $(unit_prop NRestarts): a failure restart"
# journald may take a moment to store systemd's own entries.
starts_are_one() { [[ $(unit_events "$MSG_STARTED" "$cursor") == 1 ]]; }
poll_until 5 starts_are_one || fail "$(unit_events "$MSG_STARTED" "$cursor") 'Started' entries during the upgrade, expected 1"
stops=$(unit_events "$MSG_STOPPED" "$cursor")
[[ $stops == 1 ]] || fail "$stops 'Stopped' entries during the upgrade, expected 1"
exe=$(exe_of "$pid_n1")
[[ $exe == /usr/bin/cryptobot ]] || fail "the new MainPID runs '$exe', not the upgraded /usr/bin/cryptobot"
running=$(ct_exec /usr/bin/cryptobot --version)
[[ $running == "cryptobot ${V_NEXT%-*}" ]] || fail "/usr/bin/cryptobot --version says '$running', expected ${V_NEXT%-*}"
ok "apt-get install in $took s; MainPID $pid_n → $pid_n1 ($running), 1 start, 1 stop, NRestarts $restarts_n"

step "upgrade kept the edited conffile and the state"
ct_exec grep -qxF "$EDIT" "$CONF" || fail "the administrator's edit of $CONF is gone"
[[ $(ct_exec md5sum "$CONF" | cut -d' ' -f1) == "$conf_before" ]] || fail "$CONF changed during the upgrade"
if ((CONF_CHANGED)); then
    ct_exec test -f "$CONF.dpkg-dist" || fail "no $CONF.dpkg-dist: dpkg did not keep the edited file as --force-confold does"
    note="the new default is $CONF.dpkg-dist"
else
    note="N and N+1 ship the same default, so dpkg had nothing to ask"
fi
[[ $(inode_of "$STATE_DB") == "$state_inode" ]] || fail "$STATE_DB was replaced during the upgrade"
ping_pong "from version N+1 (and no update answered twice)"
ok "$note"

step "remove → stopped; state, configuration, token and user kept"
# An administrator's enablement of the (not started) socket unit: purge below must remove it.
ct_exec systemctl enable --quiet cryptobot.socket || fail "systemctl enable cryptobot.socket failed"
ct_exec test -L /etc/systemd/system/sockets.target.wants/cryptobot.socket || fail "enable made no link"
t0=$(ct_now)
apt_in "remove" remove -y -q cryptobot
took=$(ct_since "$t0")
service_is inactive || fail "still $(unit_prop ActiveState) after apt-get remove"
ct_none_running cryptobot || fail "a cryptobot process survived apt-get remove"
ct_exec test ! -e /usr/bin/cryptobot || fail "/usr/bin/cryptobot is still there after remove"
[[ $(inode_of "$STATE_DB") == "$state_inode" ]] || fail "$STATE_DB is gone or replaced after remove"
ct_exec grep -qxF "$EDIT" "$CONF" || fail "remove lost the edited $CONF"
ct_exec test -e /etc/cryptobot/token || fail "remove deleted the token (only purge may)"
ct_exec getent passwd cryptobot >/dev/null || fail "remove deleted the user cryptobot (only purge may)"
[[ $(pkg_status) == "rc " ]] || fail "dpkg status after remove is '$(pkg_status)', expected 'rc'"
ok "apt-get remove in $took s"

step "purge → state, configuration, user and group gone"
t0=$(ct_now)
apt_in "purge" purge -y -q cryptobot
took=$(ct_since "$t0")
if grep -q '^dpkg: warning' <<<"$APT_OUT"; then
    fail "the purge printed a dpkg warning: $(grep '^dpkg: warning' <<<"$APT_OUT" | head -n 1)"
fi
for path in /etc/cryptobot /var/lib/cryptobot /run/cryptobot /etc/systemd/system/cryptobot.service.d \
    /etc/systemd/system/multi-user.target.wants/cryptobot.service /usr/share/man/man8/cryptobot.8.gz \
    /etc/systemd/system/sockets.target.wants/cryptobot.socket; do
    if ct_exec test -e "$path" || ct_exec test -L "$path"; then
        fail "$path is still there after purge"
    fi
done
! ct_exec getent passwd cryptobot >/dev/null || fail "user cryptobot is still there after purge"
! ct_exec getent group cryptobot >/dev/null || fail "group cryptobot is still there after purge"
! pkg_status | grep -q '^.i' || fail "dpkg still lists cryptobot as installed"
[[ $(unit_prop LoadState) == not-found ]] || fail "cryptobot.service is still known to systemd"
ok "apt-get purge in $took s"

step "install again → first-install hint; with a token → answers /ping"
t0=$(ct_now)
apt_in "reinstall" install -y -q --no-install-recommends /tmp/cryptobot-n1.deb
took=$(ct_since "$t0")
[[ $(printf '%s\n' "$APT_OUT" | grep -cxF "$HINT" || true) == 1 ]] || fail "no first-install hint after a purge"
service_is inactive || fail "started without a token after a purge (ActiveState=$(unit_prop ActiveState))"
ct_exec grep -qxF "$EDIT" "$CONF" && fail "the purged conffile edit came back"
put_token_and_dropin
ct_exec systemctl daemon-reload
ct_exec timeout 60 systemctl start cryptobot.service || fail "systemctl start failed"
service_is active || fail "not active after start"
ping_pong "after purge and reinstall"
ok "apt-get install in $took s, MainPID $(unit_prop MainPID)"

step "the token never appears in the journal"
if ct_exec journalctl -o export --no-pager | grep -qaF "$SECRET"; then
    fail "the token's secret part is in the journal"
fi
ok

step "stop container"
ct_stop || fail "the container left something behind"
ok

summary "$V_N → $V_NEXT"
passed
