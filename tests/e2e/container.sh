#!/usr/bin/env bash
# Boots a throwaway container running a real systemd (systemd-nspawn) for cryptobot's end-to-end tests,
# runs commands inside it, and tears everything down again (see shared/design/systemd-e2e.md).
#
# The container's root is an overlay: a read-only root below, a private tmpfs above, mounted in a private
# mount namespace, so dpkg and /etc writes vanish with the container and no mount is ever visible on the
# host. The root below is the host's / (every package of the host is there), or with CT_RELEASE a minimal
# Debian root of that release (debian-root.sh: debootstrap minbase, cached), as on a minimal VPS. It
# shares the host's network (a fake Bot API on the host's 127.0.0.1 is reachable). Needs root,
# systemd-nspawn (package systemd-container) and nsenter; with CT_RELEASE, debootstrap the first time.
#
# As a library (source it):
#     ct_boot NAME              boot; sets CT_PID1; waits until `systemctl is-system-running` is running/degraded
#     ct_exec CMD ARG...        run a command inside (clean environment), exit status passed through
#     ct_sh 'SCRIPT'            run a sh script inside
#     ct_copy_in SRC DEST [MODE]  copy a host file in (through `cat >`)
#     ct_stop                   power off and remove everything (also done by the EXIT trap ct_boot sets)
#     ct_at_exit 'CMD'          register more cleanup for the EXIT trap (runs before ct_stop)
#     ct_none_running NAME      status 0 when no process inside is called NAME, else 1 (PIDs on stderr)
#     ct_release                what the container runs: "Debian 13 (trixie), systemd 257" and the like
#     ct_now / ct_since START   timing helpers (seconds, 2 decimals)
# Settings (environment): CT_RELEASE (bookworm or trixie: a minimal root of that Debian release instead
#     of the host's /), CT_BOOT_TIMEOUT (s, default 60), CT_STOP_TIMEOUT (s, default 15),
#     CT_MASK (extra units to mask, space separated), CT_KEEP_LOGS=1 (leave the console log on failure).
# The scenarios' own helpers (tracer-bullet.sh, lifecycle.sh), below ct_*: one scenario per script.
#     e2e_scenario TAG NAME     set up: log prefix "[TAG HH:MM:SS]", "NAME: N passed/1 failed" lines,
#                               WORK (temp dir), FAKE_PID, FAKE_LOG, API, cleanup on exit
#     e2e_token BOT_ID          a new test token in Telegram's shape
#     log MSG / step NAME / ok [NOTE] / fail MSG / summary [NOTE] / passed
#     poll_until SECONDS CMD... / wait_for SECONDS WHAT CMD...
#     preflight_step TOOL...    the "preflight" step: ct_preflight and the host tools the scenario needs
#     package_under_test        sets DEB: CRYPTOBOT_DEB, else built with packaging/build-deb
#     fake_bot_api_step         the "fake Bot API on the host" step: TOKEN in $WORK/token, sets API
#     unit_prop / service_is / control / sent_pongs / pongs_at_least / inject_ping  (cryptobot.service,
#                               the fake API's control API; need BOT_ID, CHAT_ID, API)
# As a script:
#     container.sh selftest [N]   boot, check and stop N containers one after another (default 2), check leftovers
#     container.sh run CMD...     boot a container, run CMD inside, stop it; exit status of CMD

CT_HARNESS=cryptobot-e2e
CT_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CT_PATH_INSIDE=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CT_BOOT_TIMEOUT=${CT_BOOT_TIMEOUT:-60}
CT_STOP_TIMEOUT=${CT_STOP_TIMEOUT:-15}
CT_NAME=
CT_DIR=
CT_NSPAWN_PID=
CT_PID1=
CT_CGROUPS=()
CT_EXIT_HOOKS=()
CT_SEQ=0
CT_MADE_DIRS=()

# The test process that runs a scenario (tests/e2e_systemd.rs) starts it in a process group of its own
# with stdin a pipe whose write end only that process holds, and never writes to it. If the process dies
# without waiting for the scenario (killed at a nextest timeout), the pipe ends: the watcher then stops
# the script as a SIGTERM does, so its EXIT trap powers the container off and removes everything, and no
# signal to the test's process group can cut that cleanup short. Run by hand (stdin a terminal or
# /dev/null), there is no watcher.
if [[ -p /dev/stdin && -z ${CT_WATCHED:-} ]]; then
    CT_WATCHED=1
    (cat >/dev/null; kill -TERM "$$" 2>/dev/null) </dev/stdin >/dev/null 2>&1 &
    exec </dev/null
fi

ct_log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ct_die() { ct_log "FAILED: $*"; exit 1; }

ct_now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
# Seconds since START, two decimals.
ct_since() { awk -v a="$1" -v b="$(ct_now)" 'BEGIN { printf "%.2f", b - a }'; }

# Checks what the harness needs; prints the first thing missing and returns 1.
ct_preflight() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "needs root (systemd-nspawn, mounts, cgroups)"
        return 1
    fi
    local tool
    for tool in systemd-nspawn nsenter unshare mount; do
        if ! command -v "$tool" >/dev/null; then
            echo "$tool not found (apt-get install systemd-container util-linux mount)"
            return 1
        fi
    done
    if [[ ! -d /sys/fs/cgroup ]]; then
        echo "no /sys/fs/cgroup"
        return 1
    fi
    return 0
}

# The cgroup hierarchies the launcher must be moved in: systemd's named v1 hierarchy and the unified one
# on a hybrid host, or the single cgroup2 root.
ct__cgroup_roots() {
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        echo /sys/fs/cgroup
        return
    fi
    [[ -d /sys/fs/cgroup/systemd ]] && echo /sys/fs/cgroup/systemd
    [[ -d /sys/fs/cgroup/unified ]] && echo /sys/fs/cgroup/unified
    return 0
}

# Units enabled on the host that must not start in the container (they would clash on ports, run timers,
# or fail there): everything the host's administrator enabled for multi-user, timers and sockets, plus the
# fixed list and CT_MASK. systemd's own units (in /lib) are not touched.
ct__masks() {
    local masks=(postgresql.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
        e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer logrotate.timer
        systemd-timesyncd.service docker.service docker.socket containerd.service ssh.service ssh.socket)
    local link unit
    for link in /etc/systemd/system/{multi-user,timers,sockets,default}.target.wants/*; do
        [[ -e $link || -L $link ]] || continue
        unit=${link##*/}
        case $unit in
            cryptobot*) ;;
            *.service | *.timer | *.socket) masks+=("$unit") ;;
        esac
    done
    # shellcheck disable=SC2206 # CT_MASK is a space-separated list on purpose
    masks+=(${CT_MASK:-})
    printf '%s\n' "${masks[@]}" | sort -u
}

# The container's PID 1 as seen on the host: the descendant of nspawn whose NSpid line ends in 1
# (/proc/PID/task/*/children is not there on every kernel, so the parent links are read from status).
ct__find_pid1() {
    awk -v root="$1" '
        FNR == 1 { pid = ""; ppid = ""; nspid = "" }
        /^Pid:/ { pid = $2 }
        /^PPid:/ { ppid = $2 }
        /^NSpid:/ { if (NF == 3 && $3 == 1) inner[pid] = 1; parent[pid] = ppid }
        END {
            for (p in inner) {
                for (q = parent[p]; q != "" && q != 0; q = parent[q]) if (q == root) { print p; exit 0 }
            }
            exit 1
        }' /proc/[0-9]*/status 2>/dev/null
}

ct__exit_trap() {
    local status=$? hook
    for hook in "${CT_EXIT_HOOKS[@]}"; do
        eval "$hook" || true
    done
    CT_EXIT_HOOKS=()
    ct_stop || true
    exit "$status"
}

ct_at_exit() { CT_EXIT_HOOKS+=("$1"); }

# ct_boot NAME: boots a container and waits until its systemd is up.
ct_boot() {
    local base=${1:?ct_boot NAME} why
    [[ -z $CT_NSPAWN_PID ]] || ct_die "ct_boot: container $CT_NAME is still running; ct_stop it first"
    why=$(ct_preflight) || ct_die "container: $why"
    CT_SEQ=$((CT_SEQ + 1))
    CT_NAME="$base-$$-$CT_SEQ"
    CT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$CT_HARNESS.XXXXXX")
    mkdir "$CT_DIR/rw" "$CT_DIR/root"
    trap ct__exit_trap EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # The read-only lower layer: the host's /, or a minimal root of CT_RELEASE. systemd 253 and later
    # inside want a pure cgroup v2 view, which nspawn gives on this hybrid host when asked.
    local lower=/ unified=
    if [[ -n ${CT_RELEASE:-} ]]; then
        lower=$("$CT_HERE/debian-root.sh" "$CT_RELEASE") || ct_die "no $CT_RELEASE root (debian-root.sh failed)"
        [[ $CT_RELEASE == bookworm ]] || unified=1
    fi

    local root cg
    CT_CGROUPS=()
    while read -r root; do
        cg="$root/$CT_HARNESS/$CT_NAME"
        mkdir -p "$cg" || ct_die "cannot create cgroup $cg"
        CT_CGROUPS+=("$cg")
    done < <(ct__cgroup_roots)

    local boot_args=(systemd.firstboot=off) unit
    while read -r unit; do
        boot_args+=("systemd.mask=$unit")
    done < <(ct__masks)

    # The launcher runs in its own mount namespace: its mounts vanish with it. It moves itself into the
    # container's cgroups first, because with --keep-unit and no host systemd nspawn uses its own cgroup
    # as the container's root.
    # shellcheck disable=SC2016 # expanded by the launcher's bash
    local launcher='
        set -eu
        dir=$1; name=$2; lower=$3; shift 3
        cgroups=$1; shift
        for cg in $cgroups; do echo $$ > "$cg/cgroup.procs"; done
        mount -t tmpfs -o mode=0755 tmpfs "$dir/rw"
        mkdir "$dir/rw/upper" "$dir/rw/work"
        mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/rw/upper,workdir=$dir/rw/work" "$dir/root"
        mount -t tmpfs tmpfs /run/systemd/nspawn
        exec systemd-nspawn -D "$dir/root" -M "$name" --register=no --keep-unit --link-journal=no \
            --console=passive --boot "$@"'

    # nspawn wants a tmpfs on /run/systemd/nspawn; the launcher mounts one, but the mount point itself is
    # made on the host's /run (not a tmpfs here): remember what we made, to remove it again.
    local d
    for d in /run/systemd /run/systemd/nspawn; do
        if [[ ! -d $d ]]; then
            mkdir "$d"
            CT_MADE_DIRS=("$d" "${CT_MADE_DIRS[@]}")
        fi
    done

    local t0
    t0=$(ct_now)
    # (Set to 0, nspawn would force the legacy hierarchy: unset is its own choice, as before.)
    local env=()
    [[ -z $unified ]] || env=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
    env "${env[@]}" unshare --mount --propagation private -- bash -c "$launcher" launcher \
        "$CT_DIR" "$CT_NAME" "$lower" "${CT_CGROUPS[*]}" "${boot_args[@]}" >"$CT_DIR/console.log" 2>&1 &
    CT_NSPAWN_PID=$!

    local deadline=$((SECONDS + CT_BOOT_TIMEOUT))
    CT_PID1=
    until CT_PID1=$(ct__find_pid1 "$CT_NSPAWN_PID"); do
        if ! kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
            ct__show_console
            ct_die "container $CT_NAME: systemd-nspawn exited before the container's PID 1 appeared"
        fi
        ((SECONDS < deadline)) || ct_die "container $CT_NAME: no PID 1 after ${CT_BOOT_TIMEOUT}s"
        sleep 0.02
    done
    ct_log "container $CT_NAME: launch -> PID 1 ($CT_PID1) in $(ct_since "$t0") s"

    local t1 state=
    t1=$(ct_now)
    while :; do
        state=$(ct_exec systemctl is-system-running 2>/dev/null) || true
        case $state in
            running | degraded) break ;;
        esac
        if ! kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
            ct__show_console
            ct_die "container $CT_NAME: exited while booting"
        fi
        if ((SECONDS >= deadline)); then
            ct__show_console
            ct_exec systemctl list-jobs --no-pager >&2 || true
            ct_die "container $CT_NAME: systemd not up after ${CT_BOOT_TIMEOUT}s (is-system-running: ${state:-no answer})"
        fi
        sleep 0.05
    done
    ct_log "container $CT_NAME: boot -> $state in $(ct_since "$t1") s"
    # A policy-rc.d inherited from the host (image builds use one that answers 101) would keep the
    # maintainer scripts from starting or stopping services; this container is a booted system.
    if ct_exec test -e /usr/sbin/policy-rc.d; then
        ct_exec rm -f /usr/sbin/policy-rc.d
        ct_log "container $CT_NAME: removed the host's /usr/sbin/policy-rc.d inside the container"
    fi
    if [[ $state == degraded ]]; then
        ct_log "container $CT_NAME: failed units (not ours; mask them with CT_MASK if they get in the way):"
        ct_exec systemctl --failed --no-legend --plain --no-pager >&2 || true
    fi
}

ct__show_console() {
    [[ -n $CT_DIR && -f $CT_DIR/console.log ]] || return 0
    ct_log "last lines of the container's console ($CT_DIR/console.log):"
    tail -n 30 "$CT_DIR/console.log" | sed 's/^/    /' >&2
}

# ct_exec CMD ARG...: runs CMD inside the container, in a clean environment.
ct_exec() {
    [[ -n $CT_PID1 ]] || ct_die "ct_exec: no container running"
    nsenter --target "$CT_PID1" --all --root --wd -- \
        env -i PATH="$CT_PATH_INSIDE" LANG=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive "$@"
}

# ct_sh 'SCRIPT' [ARG...]: runs a POSIX sh script inside.
ct_sh() {
    local script=$1
    shift
    ct_exec sh -c "$script" sh "$@"
}

# ct_none_running NAME: status 0 when no process inside is called NAME (/proc/PID/comm), else 1 with
# their PIDs on stderr; a failure to look is fatal (never read as "none"). With the shell alone: a
# minimal root has no procps (pgrep).
ct_none_running() {
    local status=0
    # shellcheck disable=SC2016 # expanded by the shell inside
    ct_sh 'found=0
        for f in /proc/[0-9]*/comm; do
            read -r c 2>/dev/null <"$f" || continue
            [ "$c" = "$1" ] || continue
            p=${f#/proc/}; echo "process $1 running inside: PID ${p%/comm}" >&2; found=1
        done
        [ "$found" = 0 ] || exit 10' "$1" || status=$?
    case $status in
        0) return 0 ;;
        10) return 1 ;;
        *) ct_die "ct_none_running: cannot list the processes inside (status $status)" ;;
    esac
}

# ct_release: the container's Debian release and systemd version, in one line.
ct_release() {
    local name systemd
    # shellcheck disable=SC2016 # expanded by the shell inside
    name=$(ct_sh '. /etc/os-release && printf "%s" "$PRETTY_NAME"') || name=unknown
    systemd=$(ct_exec systemctl --version | awk 'NR == 1 { print $2 }') || systemd=unknown
    printf '%s, systemd %s' "$name" "$systemd"
}

# ct_copy_in SRC DEST [MODE]: copies a host file into the container.
ct_copy_in() {
    local src=$1 dest=$2 mode=${3:-0644}
    [[ -f $src ]] || ct_die "ct_copy_in: $src is not a file"
    # shellcheck disable=SC2016 # expanded by the shell inside
    ct_sh 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"' "$dest" "$mode" <"$src" \
        || ct_die "ct_copy_in: cannot write $dest in the container"
}

# ct_stop: powers the container off and removes its cgroups and temporary directory.
ct_stop() {
    [[ -n $CT_DIR ]] || return 0
    local t0 name=$CT_NAME deadline
    t0=$(ct_now)
    if [[ -n $CT_NSPAWN_PID ]] && kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
        # SIGTERM makes nspawn ask the container's systemd to power off.
        kill -TERM "$CT_NSPAWN_PID" 2>/dev/null || true
        deadline=$((SECONDS + CT_STOP_TIMEOUT))
        while kill -0 "$CT_NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        if kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
            ct_log "container $name: no clean power-off after ${CT_STOP_TIMEOUT}s; killing its PID 1"
            [[ -n $CT_PID1 ]] && kill -KILL "$CT_PID1" 2>/dev/null
            deadline=$((SECONDS + 5))
            while kill -0 "$CT_NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
            kill -KILL "$CT_NSPAWN_PID" 2>/dev/null || true
        fi
    fi
    if [[ -n $CT_NSPAWN_PID ]]; then
        wait "$CT_NSPAWN_PID" 2>/dev/null || true
    fi
    CT_NSPAWN_PID=
    CT_PID1=

    # Leftover cgroups: the container's own subtree first (deepest first), then ours. A cgroup whose last
    # process just died can refuse rmdir for a moment.
    local cg leftovers=0
    for cg in "${CT_CGROUPS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            [[ -d $cg ]] || break
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $cg ]] && sleep 0.1
        done
        if [[ -d $cg ]]; then
            ct_log "container $name: cannot remove cgroup $cg (processes left: $(tr '\n' ' ' <"$cg/cgroup.procs" 2>/dev/null))"
            leftovers=1
        fi
        rmdir "${cg%/*}" 2>/dev/null || true # the harness directory, once no container uses it
    done
    CT_CGROUPS=()
    local d
    for d in "${CT_MADE_DIRS[@]}"; do
        rmdir "$d" 2>/dev/null || true # still in use by another container: its stop removes it
    done
    CT_MADE_DIRS=()

    if grep -qF "$CT_DIR" /proc/self/mountinfo; then
        ct_log "container $name: mounts leaked to the host namespace; unmounting"
        umount -R -l "$CT_DIR/root" "$CT_DIR/rw" 2>/dev/null || true
        leftovers=1
    fi
    if [[ ${CT_KEEP_LOGS:-} == 1 ]]; then
        ct_log "container $name: console log kept in $CT_DIR/console.log"
        rmdir "$CT_DIR/root" "$CT_DIR/rw" 2>/dev/null || true
    else
        rm -rf "$CT_DIR"
    fi
    CT_DIR=
    ct_log "container $name: stop in $(ct_since "$t0") s"
    return "$leftovers"
}

# What a previous run could have left on the host: our cgroups, temp dirs, mounts. Prints them.
ct_leftovers() {
    local root found=1
    while read -r root; do
        if [[ -d $root/$CT_HARNESS ]]; then
            echo "cgroup $root/$CT_HARNESS"
            found=0
        fi
    done < <(ct__cgroup_roots)
    if grep -q "$CT_HARNESS" /proc/self/mountinfo; then
        echo "mounts: $(grep "$CT_HARNESS" /proc/self/mountinfo | awk '{print $5}' | tr '\n' ' ')"
        found=0
    fi
    local d
    for d in "${TMPDIR:-/tmp}/$CT_HARNESS".*; do
        [[ -e $d ]] || continue
        echo "directory $d"
        found=0
    done
    return "$found"
}

ct__selftest() {
    local n=${1:-2} i t0 left
    left=$(ct_leftovers) && ct_die "leftovers before the self-test: $left"
    for ((i = 1; i <= n; i++)); do
        t0=$(ct_now)
        ct_boot selftest
        [[ $(ct_exec cat /proc/1/comm) == systemd ]] || ct_die "PID 1 inside is not systemd"
        ct_exec systemctl is-active --quiet systemd-journald.service || ct_die "journald is not active inside"
        ct_sh 'touch /etc/cryptobot-e2e-marker' || ct_die "cannot write inside"
        [[ ! -e /etc/cryptobot-e2e-marker ]] || ct_die "a write inside the container reached the host"
        ct_stop || ct_die "container $i left something behind"
        left=$(ct_leftovers) && ct_die "leftovers after container $i: $left"
        ct_log "container $i of $n: ok in $(ct_since "$t0") s, no leftovers"
    done
    echo "container self-test: $n containers booted and removed without leftovers"
}

# --- the scenarios' helpers (tracer-bullet.sh, lifecycle.sh) ---------------------------------------------
# A scenario is a list of steps: `step NAME`, its checks (each `|| fail WHAT`), `ok [NOTE]`. Every step
# prints its time; a failure names the step, shows diagnostics and exits 1; the summary lists the steps.

E2E_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E_TAG=e2e
E2E_NAME=e2e
# The one line the package prints on its first installation.
# shellcheck disable=SC2034 # used by the scenarios
HINT='cryptobot: installed; write the bot token to /etc/cryptobot/token (mode 600) and run: systemctl start cryptobot'
STEP=
STEP_T0=
STEPS_DONE=()
WORK=
FAKE_PID=
FAKE_LOG=
API=

# e2e_scenario TAG NAME: starts a scenario (see the header).
e2e_scenario() {
    E2E_TAG=$1
    E2E_NAME=$2
    # cargo test and nextest run the scripts with the test crate's CARGO_MANIFEST_DIR, CARGO_PKG_*, ...
    # in their environment. A cargo run from here would take them as its own environment, and ring's
    # build script tracks CARGO_MANIFEST_DIR: ring and everything above it would compile again.
    local var
    for var in $(compgen -e); do
        case $var in
            CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | CARGO_BIN_*)
                unset "$var"
                ;;
        esac
    done
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/cryptobot-$E2E_TAG.XXXXXX")
    FAKE_PID=
    FAKE_LOG="$WORK/fake-bot-api.log"
    API=
    # The fake API and the work directory go on any exit; ct_boot keeps this trap and stops the
    # container too.
    ct_at_exit e2e__cleanup_host
    trap ct__exit_trap EXIT
}

e2e__cleanup_host() {
    if [[ -n $FAKE_PID ]] && kill -0 "$FAKE_PID" 2>/dev/null; then
        kill -TERM "$FAKE_PID" 2>/dev/null || true
        wait "$FAKE_PID" 2>/dev/null || true
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
}

# e2e_token BOT_ID: a test token in the shape Telegram uses (<bot id>:<30-64 of A-Z a-z 0-9 _ ->), new
# for every run.
e2e_token() { printf '%s:e2e_%s' "$1" "$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"; }

log() { printf '[%s %s] %s\n' "$E2E_TAG" "$(date +%H:%M:%S)" "$*" >&2; }

step() {
    STEP=$1
    STEP_T0=$(ct_now)
    log "--- $STEP"
}

ok() {
    local took
    took=$(ct_since "$STEP_T0")
    log "ok: $STEP ($took s)${1:+ — $1}"
    STEPS_DONE+=("$(printf '%7s s  %s' "$took" "$STEP")")
}

# What helps to understand a failure; never the token (the journal is checked not to contain it).
diagnostics() {
    if [[ -n $CT_PID1 ]]; then
        log "systemctl status cryptobot:"
        ct_exec systemctl status --no-pager --lines=0 cryptobot.service 2>&1 | sed 's/^/    /' >&2 || true
        log "journalctl -u cryptobot (last 40 lines):"
        ct_exec journalctl -u cryptobot.service --no-pager -n 40 2>&1 | sed 's/^/    /' >&2 || true
        log "dpkg -l cryptobot:"
        ct_exec dpkg -l cryptobot 2>&1 | tail -n 1 | sed 's/^/    /' >&2 || true
    fi
    if [[ -s $FAKE_LOG ]]; then
        log "fake Bot API log (last 20 lines):"
        tail -n 20 "$FAKE_LOG" | sed 's/^/    /' >&2
    fi
}

fail() {
    log "FAILED step '$STEP': $*"
    diagnostics
    log "$E2E_NAME: 1 failed (step '$STEP'), ${#STEPS_DONE[@]} steps passed before it"
    exit 1
}

# summary [NOTE...]: the steps that passed, with their times (stderr).
# shellcheck disable=SC2120 # NOTE is optional
summary() {
    log "summary${*:+ ($*)}:"
    printf '    %s\n' "${STEPS_DONE[@]}" >&2
}

# passed: the scenario's last line (stdout).
passed() { echo "$E2E_NAME: ${#STEPS_DONE[@]} passed, 0 failed"; }

# poll_until SECONDS CMD...: runs CMD every 0.1 s until it succeeds (0) or SECONDS have passed (1).
poll_until() {
    local limit=$1 deadline
    shift
    deadline=$(awk -v a="$(ct_now)" -v l="$limit" 'BEGIN { printf "%.3f", a + l }')
    until "$@"; do
        if awk -v d="$deadline" -v n="$(ct_now)" 'BEGIN { exit !(n > d) }'; then
            return 1
        fi
        sleep 0.1
    done
}

# wait_for SECONDS WHAT CMD...: poll_until, failing the step with WHAT after SECONDS.
wait_for() {
    local limit=$1 what=$2
    shift 2
    poll_until "$limit" "$@" || fail "$what: not within ${limit} s"
}

# preflight_step TOOL...: the "preflight" step: the harness's needs, then TOOLs on the host.
preflight_step() {
    local why tool
    step "preflight"
    if why=$(ct_preflight); then :; else
        log "FAILED step 'preflight': $why"
        exit 1
    fi
    for tool in "$@"; do
        command -v "$tool" >/dev/null || fail "$tool not found on the host"
    done
    ok
}

# The Cargo target directory of the tree.
cargo_target_dir() {
    (cd "$E2E_REPO" && cargo metadata --format-version 1 --no-deps) \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# package_under_test: sets DEB, the package to test: CRYPTOBOT_DEB, else built with packaging/build-deb.
package_under_test() {
    if [[ -n ${CRYPTOBOT_DEB:-} ]]; then
        DEB=$CRYPTOBOT_DEB
    else
        DEB=$("$E2E_REPO/packaging/build-deb" | tail -n 1) || fail "packaging/build-deb failed"
    fi
    [[ -f $DEB ]] || fail "no package at '$DEB'"
}

# fake_bot_api_step: the step that starts the fake Bot API (FAKE_BOT_API_BIN, else built) on a free
# port of the host's loopback, knowing the bot of TOKEN (written to $WORK/token); sets API.
fake_bot_api_step() {
    local fake attempt port deadline
    step "fake Bot API on the host"
    if [[ -n ${FAKE_BOT_API_BIN:-} ]]; then
        fake=$FAKE_BOT_API_BIN
    else
        (cd "$E2E_REPO" && cargo build -p fake-bot-api >&2) || fail "cargo build -p fake-bot-api failed"
        fake="$(cargo_target_dir)/debug/fake-bot-api"
    fi
    [[ -x $fake ]] || fail "fake Bot API binary '$fake' is not executable"
    (umask 077 && printf '%s\n' "$TOKEN" >"$WORK/token")
    # A free port: not listed in /proc/net/tcp{,6}; retried if another process takes it first.
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        if grep -qi ":$(printf '%04X' "$port") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            continue
        fi
        "$fake" --listen "127.0.0.1:$port" --token-file "$WORK/token" >"$FAKE_LOG" 2>&1 &
        FAKE_PID=$!
        deadline=$((SECONDS + 10))
        while ! grep -q "listening on http://127.0.0.1:$port" "$FAKE_LOG"; do
            kill -0 "$FAKE_PID" 2>/dev/null || break
            ((SECONDS < deadline)) || fail "fake Bot API did not say it was listening within 10 s"
            sleep 0.05
        done
        if kill -0 "$FAKE_PID" 2>/dev/null; then
            API="http://127.0.0.1:$port"
            break
        fi
        wait "$FAKE_PID" 2>/dev/null || true
        FAKE_PID=
        log "fake Bot API exited on port $port (attempt $attempt): $(tail -n 1 "$FAKE_LOG")"
    done
    [[ -n $API ]] || fail "fake Bot API could not start"
    control "$API/control/bots/$BOT_ID/stats" >/dev/null || fail "fake Bot API does not know bot $BOT_ID"
    ok "$API, bot $BOT_ID"
}

unit_prop() { ct_exec systemctl show -P "$1" cryptobot.service; }
service_is() { [[ $(unit_prop ActiveState) == "$1" ]]; }

# Host side of the fake Bot API's control API.
control() { curl -fsS --max-time 5 "$@"; }
# How many "pong"s the bot sent (0 too: grep finding none is no failure here).
sent_pongs() { control "$API/control/bots/$BOT_ID/sent" | { grep -o '"text":"pong"' || true; } | wc -l; }
pongs_at_least() { (($(sent_pongs) >= $1)); }
inject_ping() {
    control -H 'Content-Type: application/json' \
        -d "{\"chat_id\":$CHAT_ID,\"text\":\"/ping\"}" "$API/control/bots/$BOT_ID/messages" >/dev/null \
        || fail "cannot inject /ping through $API/control/bots/$BOT_ID/messages"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
        selftest) ct__selftest "${2:-2}" ;;
        run)
            shift
            (($#)) || ct_die "usage: container.sh run CMD..."
            ct_boot run
            status=0
            ct_exec "$@" || status=$?
            ct_stop
            exit "$status"
            ;;
        *)
            echo "usage: $0 selftest [N] | run CMD..." >&2
            exit 64
            ;;
    esac
fi
