#!/usr/bin/env bash
# A minimal Debian root for the e2e containers: `debian-root.sh RELEASE` prints the path of a
# `debootstrap --variant=minbase` root of RELEASE (bookworm = Debian 12, trixie = Debian 13) with systemd,
# from Debian's archive, building it when the machine has none yet and caching it between runs.
#
# Why minbase: it is what minimal VPS and container images are (no procps, no man-db, no adduser on
# trixie), so a dependency the package forgets to declare fails here as it would for a user; the host's
# own root, which has everything a developer installed, hides that.
#
# The cache: ${CRYPTOBOT_E2E_ROOTS:-/var/cache/cryptobot-e2e}/RELEASE-KEY, KEY a hash of what the root is
# made from (release, variant, packages, this recipe's version), so a changed recipe builds a new root.
# A root older than CRYPTOBOT_E2E_ROOT_MAX_DAYS (default 30) is built again, so the tests keep up with
# the point releases. Builds take a lock: two runs at once build it once. The root is only ever the
# read-only lower layer of a container's overlay (container.sh, CT_ROOT): no test writes into it.
#
# The mirror is the host's (the first URIs of /etc/apt/sources.list.d/debian.sources or the first deb
# line of /etc/apt/sources.list), else CRYPTOBOT_E2E_MIRROR, else http://deb.debian.org/debian.
# Needs root and debootstrap (apt-get install debootstrap); measured on a 2-core machine: 1.5-2.5 min and
# about 250 MB per release, once.
set -euo pipefail

# Bump when the recipe changes in a way the key below does not see.
RECIPE=1
PACKAGES=systemd,systemd-sysv,dbus

die() {
    echo "debian-root.sh: $*" >&2
    exit 1
}

release=${1:-}
case $release in
    bookworm | trixie) ;;
    *) die "usage: debian-root.sh bookworm|trixie (got '${release}')" ;;
esac
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, and the cache in /var/cache)"

host_mirror() {
    local uri=
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    printf '%s' "$uri"
}
mirror=${CRYPTOBOT_E2E_MIRROR:-$(host_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

cache=${CRYPTOBOT_E2E_ROOTS:-/var/cache/cryptobot-e2e}
max_days=${CRYPTOBOT_E2E_ROOT_MAX_DAYS:-30}
key=$(printf '%s\n' "$release" minbase "$PACKAGES" "$RECIPE" | sha256sum | cut -c1-12)
root="$cache/$release-$key"
mkdir -p "$cache"

exec 9>"$cache/.lock-$release"
flock 9

if [[ -f $root/.cryptobot-e2e-complete ]]; then
    if [[ -z $(find "$root/.cryptobot-e2e-complete" -mtime "+$max_days") ]]; then
        printf '%s\n' "$root"
        exit 0
    fi
    echo "debian-root.sh: $root is older than $max_days days: building it again" >&2
fi

command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
build="$cache/.build-$release-$$"
rm -rf "$build"
trap 'rm -rf "$build"' EXIT
t0=$SECONDS
echo "debian-root.sh: debootstrap --variant=minbase --include=$PACKAGES $release from $mirror (once; cached in $cache)" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$release" "$build" "$mirror" >"$build.log" 2>&1; then
    tail -n 20 "$build.log" | sed 's/^/    /' >&2
    rm -f "$build.log"
    die "debootstrap of $release from $mirror failed (see above); CRYPTOBOT_E2E_MIRROR names another mirror"
fi
rm -f "$build.log"
# A booted container gets its machine id from systemd-nspawn; an empty file lets it (a file that reads
# "uninitialized" would have systemd run first-boot units). apt's caches are not needed.
: >"$build/etc/machine-id"
rm -rf "$build/var/cache/apt/archives"/*.deb "$build/var/lib/apt/lists"/*_Packages
printf '%s %s %s\n' "$release" "$mirror" "$(date -u +%FT%TZ)" >"$build/.cryptobot-e2e-complete"

# Replace the root only now that the new one is whole; drop this release's roots of other recipes.
rm -rf "$root"
mv "$build" "$root"
trap - EXIT
for old in "$cache/$release"-*; do
    [[ $old == "$root" ]] || rm -rf "$old"
done
echo "debian-root.sh: $release root ready in $((SECONDS - t0)) s: $root ($(du -sh "$root" | cut -f1))" >&2
printf '%s\n' "$root"
