#!/usr/bin/env bash
# A builder image for `--builder container` (services/Dockerfile.build) made offline, since no
# official Rust image can be pulled here: a Debian bookworm root from debootstrap (minbase with
# gcc, libc6-dev and ca-certificates, from the mirror apt uses here) and this machine's default
# Rust toolchain (rustc --print sysroot: bin/ and lib/ only, no docs), laid out as the official
# image is: the toolchain under /usr/local/rustup/toolchains/<name>, cargo, rustc and rustdoc in
# /usr/local/cargo/bin (on PATH), CARGO_HOME=/usr/local/cargo. It trusts the certificate
# authorities this machine trusts (its /etc/ssl/certs/ca-certificates.crt, a TLS-intercepting
# proxy's among them), so cargo in the build reaches crates.io as cargo here does.
#   eval "$(bash test/builder-image.sh)"                  docker, then export REMEDY_BUILDER_IMAGE
#   eval "$(bash test/builder-image.sh --engine podman)"  the same in podman's image store
# The root is cached in ${REMEDY_CACHE:-$HOME/.cache/remedy}/builder-root; the image is made again
# only when the toolchain, the root, the certificates or this script change (a label holds their
# hash). Progress and timings go to stderr, the export line to stdout.
set -euo pipefail

ENGINE="${ENGINE:-docker}"
while [ $# -gt 0 ]; do
    case "$1" in
        --engine) [ $# -ge 2 ] || { echo "builder-image: FAILED: --engine needs docker or podman" >&2; exit 1; }
                  ENGINE="$2"; shift 2 ;;
        --engine=*) ENGINE="${1#--engine=}"; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "builder-image: FAILED: unknown argument $1 (usage: builder-image.sh [--engine docker|podman])" >&2; exit 1 ;;
    esac
done

IMAGE="${REMEDY_BUILDER_IMAGE:-localhost/remedy/rust:bookworm}"
CACHE="${REMEDY_CACHE:-$HOME/.cache/remedy}"
ROOT="$CACHE/builder-root"
STAGING="$CACHE/builder-image.staging"
LOG="$CACHE/builder-image.log"
PACKAGES="gcc,libc6-dev,ca-certificates"
LABEL="remedy.builder-image.hash"
# Bumped when the root's recipe changes, so a cached root made by an older one is made again.
ROOT_REV=1

log() { echo "builder-image: $*" >&2; }
# fail <cause -- fix>: abort with one line.
fail() { echo "builder-image: FAILED: $*" >&2; exit 1; }
# timed <what> <cmd...>: runs it, then says how long it took.
timed() {
    local what="$1" started=$SECONDS; shift
    "$@"
    log "$what: $((SECONDS - started)) s"
}

case "$ENGINE" in
    docker) CLI="${DOCKER:-docker}" ;;
    podman) CLI=podman ;;
    *) fail "unknown engine '$ENGINE' -- pass --engine docker or --engine podman" ;;
esac

# shellcheck source=debian-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"

command -v "$CLI" >/dev/null || fail "$CLI is not installed -- install it (Debian: apt-get install -y ${ENGINE/docker/docker.io}) or pass --engine"
"$CLI" image ls >/dev/null 2>&1 \
    || fail "$CLI does not answer ($("$CLI" image ls 2>&1 | tail -1)) -- start its daemon (the local cluster's: bash test/local-cluster/cluster.sh up)"
command -v rustc >/dev/null || fail "rustc not found -- install Rust with rustup"
SYSROOT="$(rustc --print sysroot)"
TOOLCHAIN="$(basename "$SYSROOT")"
if [ ! -x "$SYSROOT/bin/cargo" ] || [ ! -x "$SYSROOT/bin/rustc" ]; then
    fail "$SYSROOT (rustc --print sysroot) has no bin/cargo and bin/rustc -- install a whole toolchain: rustup toolchain install stable"
fi
CA=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA" ] || fail "$CA is missing -- apt-get install -y ca-certificates"

# One at a time (CI's `cargo xtask test` and a developer may both run it): they share the root.
mkdir -p "$CACHE"
exec 9>"$CACHE/.builder-image.lock"
flock -w 900 9 || fail "another test/builder-image.sh held $CACHE/.builder-image.lock for 15 min -- wait for it to finish, or end it"

# The root's recipe: a cached root is used while it matches.
MIRROR="$(debian_mirror)"
ROOT_RECIPE="rev $ROOT_REV; bookworm minbase; include $PACKAGES; mirror $MIRROR"

make_root() {
    [ "$(id -u)" = 0 ] || fail "debootstrap must run as root -- rerun with sudo"
    command -v debootstrap >/dev/null || fail "debootstrap is not installed -- apt-get install -y debootstrap"
    local partial="$ROOT.partial"
    rm -rf "$partial" "$ROOT"
    mkdir -p "$CACHE"
    log "debootstrap --variant=minbase --include=$PACKAGES bookworm from $MIRROR (a few minutes; log: $LOG)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$partial" "$MIRROR" >"$LOG" 2>&1 \
        || fail "debootstrap failed: $(tail -1 "$LOG") -- see $LOG; check access to $MIRROR or set REMEDY_DEBIAN_MIRROR"
    # apt in the image uses this machine's sources, as the local cluster's base image does.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources "$partial/etc/apt/sources.list.d/debian.sources"
        rm -f "$partial/etc/apt/sources.list"
    fi
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$partial/etc/apt/apt.conf.d/90remedy-slim"
    # What compiling does not read: the downloaded packages, apt's lists, docs and translations.
    rm -rf "$partial"/var/cache/apt/archives/*.deb "$partial"/var/lib/apt/lists/* "$partial"/var/log/*.log \
        "$partial"/usr/share/doc/* "$partial"/usr/share/man/* "$partial"/usr/share/info/* "$partial"/tmp/*
    find "$partial/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    echo "$ROOT_RECIPE" >"$partial/.remedy-builder-root"
    mv "$partial" "$ROOT"
}

if [ "$(cat "$ROOT/.remedy-builder-root" 2>/dev/null || true)" != "$ROOT_RECIPE" ]; then
    timed "debootstrap of $ROOT" make_root
else
    log "root cached in $ROOT"
fi

hash="$( (echo "$ROOT_RECIPE"; rustc -vV; echo "$TOOLCHAIN"; ls "$SYSROOT/bin" "$SYSROOT/lib/rustlib";
          sha256sum "$0" "$CA" "$ROOT/var/lib/dpkg/status" | cut -d' ' -f1) | sha256sum | cut -c1-16)"
have="$("$CLI" image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$hash" ]; then
    log "$IMAGE is up to date in $ENGINE ($LABEL=$hash)"
    echo "export REMEDY_BUILDER_IMAGE=$IMAGE"
    exit 0
fi

# The image's tree: hard links to the root and the toolchain where the filesystem allows (no copy).
stage() {
    rm -rf "$STAGING"
    mkdir -p "$STAGING"
    cp -al "$ROOT/." "$STAGING/" 2>/dev/null || { rm -rf "$STAGING"; mkdir -p "$STAGING"; cp -a "$ROOT/." "$STAGING/"; }
    rm -f "$STAGING/.remedy-builder-root"
    local tc="$STAGING/usr/local/rustup/toolchains/$TOOLCHAIN"
    mkdir -p "$tc" "$STAGING/usr/local/cargo/bin"
    # What compiling needs: the compilers and the standard library (lib/rustlib also holds the
    # rust-lld that rustc links with), not share/ (docs, man pages) nor libexec/.
    cp -al "$SYSROOT/bin" "$SYSROOT/lib" "$tc/" 2>/dev/null || { rm -rf "${tc:?}"/*; cp -a "$SYSROOT/bin" "$SYSROOT/lib" "$tc/"; }
    local b
    for b in "$tc"/bin/*; do
        ln -s "../../rustup/toolchains/$TOOLCHAIN/bin/$(basename "$b")" "$STAGING/usr/local/cargo/bin/$(basename "$b")"
    done
    # Replaced, never written through: the staged file is a hard link to the cached root's.
    rm -f "$STAGING/etc/ssl/certs/ca-certificates.crt"
    cp "$CA" "$STAGING/etc/ssl/certs/ca-certificates.crt"
}

import() {
    local out
    out="$(tar -C "$STAGING" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . \
        | "$CLI" import \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENV CARGO_HOME=/usr/local/cargo' \
            --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change "LABEL $LABEL=$hash" \
            --change 'CMD ["/bin/bash"]' \
            - "$IMAGE" 2>&1)" || fail "$CLI import failed: $(echo "$out" | tail -1) -- check free disk (df -h) and that $CLI works"
}

old="$("$CLI" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
log "making $IMAGE in $ENGINE: $(rustc --version) on bookworm ($LABEL=$hash)"
timed "staging the root and $TOOLCHAIN" stage
timed "$CLI import of $IMAGE ($(du -sh "$STAGING" 2>/dev/null | cut -f1))" import
rm -rf "$STAGING"
# The image this one replaces, unless something else still uses it.
[ -z "$old" ] || "$CLI" rmi "$old" >/dev/null 2>&1 || true
run_flags=()
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    # podman asks runc for rlimits above what a sandboxed VM lets a container set (EPERM on
    # nofile, then nproc): ask for ones it may (as xtask/tests/on_local_cluster.rs does).
    nproc="$(ulimit -Hu)"; [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
    nofile="$(ulimit -Hn)"; [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
    run_flags=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
fi
out="$("$CLI" run --rm "${run_flags[@]}" "$IMAGE" sh -c 'cargo --version && rustc --version && cc --version | head -1' 2>&1)" \
    || fail "$IMAGE does not run cargo: $(echo "$out" | tail -1) -- try: $CLI run --rm ${run_flags[*]} $IMAGE cargo --version"
log "$IMAGE: $(echo "$out" | tr '\n' ';')"
echo "export REMEDY_BUILDER_IMAGE=$IMAGE"
