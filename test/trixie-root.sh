#!/usr/bin/env bash
# A minimal Debian trixie (glibc 2.41) root whose binaries the xtask's ELF check must refuse for
# a bookworm (glibc 2.36) base image: the ignored test `refuses_a_trixie_binary` reads it.
#   eval "$(test/trixie-root.sh)"   make it once (needs root and debootstrap), then export it
# It lives in ${REMEDY_CACHE:-$HOME/.cache/remedy}/trixie-root; an existing one is reused.
set -euo pipefail

CACHE="${REMEDY_CACHE:-$HOME/.cache/remedy}"
ROOT="$CACHE/trixie-root"

log() { echo "trixie-root: $*" >&2; }
# fail <cause and fix>: abort with one line.
fail() { echo "trixie-root: FAILED: $*" >&2; exit 1; }

# shellcheck source=debian-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"

if [ ! -e "$ROOT/usr/bin/ls" ]; then
    [ "$(id -u)" = 0 ] || fail "debootstrap must run as root; rerun with sudo"
    command -v debootstrap >/dev/null || fail "debootstrap is not installed; run: apt-get install -y debootstrap"
    mirror="$(debian_mirror)"
    # Built beside the root and renamed when complete, so an interrupted run is never reused.
    partial="$ROOT.partial"
    rm -rf "$partial"
    mkdir -p "$CACHE"
    log "debootstrap --variant=minbase trixie from $mirror (a few minutes; log in $CACHE/trixie-root.log)"
    debootstrap --variant=minbase trixie "$partial" "$mirror" >"$CACHE/trixie-root.log" 2>&1 \
        || fail "debootstrap failed: $(tail -1 "$CACHE/trixie-root.log") -- see $CACHE/trixie-root.log; check access to $mirror or set REMEDY_DEBIAN_MIRROR (a missing trixie key needs a newer debian-archive-keyring)"
    mv "$partial" "$ROOT"
fi
echo "export REMEDY_TRIXIE_ROOT=$ROOT"
