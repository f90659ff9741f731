#!/usr/bin/env bash
# A builder image for `--builder container` made offline, since no official Rust image can be
# pulled here: the local cluster's Debian bookworm base (test/local-cluster/cluster.sh) with gcc
# and libc6-dev from Debian's packages and this machine's Rust toolchain, laid out as the official
# image is (cargo and rustc on PATH, CARGO_HOME=/usr/local/cargo), trusting the certificate
# authorities this machine trusts (its /etc/ssl/certs/ca-certificates.crt: a TLS-intercepting
# proxy's among them, so cargo in the build reaches crates.io as cargo here does).
#   eval "$(bash test/builder-image.sh)"   build it once (docker), then export REMEDY_BUILDER_IMAGE
# Rebuilt only when the toolchain, the base image or this script change (a label holds their hash).
set -euo pipefail

IMAGE="${REMEDY_BUILDER_IMAGE:-localhost/remedy/rust:bookworm}"
BASE="${REMEDY_IMAGE_BASE:-localhost/remedy/debian:bookworm-slim}"
CONTEXT="${REMEDY_CACHE:-$HOME/.cache/remedy}/builder-image"
DOCKER="${DOCKER:-docker}"

log() { echo "builder-image: $*" >&2; }
fail() { echo "builder-image: FAILED: $*" >&2; exit 1; }

command -v rustc >/dev/null || fail "rustc not found: install Rust with rustup"
"$DOCKER" image inspect "$BASE" >/dev/null 2>&1 \
    || fail "the base image $BASE is missing: run \`bash test/local-cluster/cluster.sh up\`, or set REMEDY_IMAGE_BASE"
sysroot="$(rustc --print sysroot)"
hash="$( (rustc -vV; sha256sum "$0" /etc/ssl/certs/ca-certificates.crt; "$DOCKER" image inspect --format '{{.Id}}' "$BASE") | sha256sum | cut -c1-16)"
have="$("$DOCKER" image inspect --format '{{index .Config.Labels "remedy.builder-image.hash"}}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" != "$hash" ]; then
    started=$SECONDS
    rm -rf "$CONTEXT"
    mkdir -p "$CONTEXT/rust"
    # What compiling needs: the compilers and the standard library, not the docs.
    cp -a "$sysroot/bin" "$sysroot/lib" "$CONTEXT/rust/"
    cp /etc/ssl/certs/ca-certificates.crt "$CONTEXT/"
    cat >"$CONTEXT/Dockerfile" <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
    log "building $IMAGE from $BASE with $(rustc --version) (log: $CONTEXT.log)"
    "$DOCKER" build --tag "$IMAGE" --build-arg "BASE=$BASE" --label "remedy.builder-image.hash=$hash" "$CONTEXT" \
        >"$CONTEXT.log" 2>&1 || fail "docker build failed: $(tail -1 "$CONTEXT.log") -- see $CONTEXT.log"
    rm -rf "$CONTEXT"
    log "built $IMAGE in $((SECONDS - started)) s"
fi
echo "export REMEDY_BUILDER_IMAGE=$IMAGE"
