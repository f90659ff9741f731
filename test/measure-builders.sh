#!/usr/bin/env bash
# Cold and warm gateway runs with each builder on the local cluster, one after another, as in
# docs/performance.md ("Each builder, cold and warm"). Cold: a fresh copy of the workspace (no
# target/); for the container builder cold only when the engine's build caches are empty (the
# first container build on the machine: this script never prunes them). Warm: after a one-line
# change to services/gateway/src/main.rs in the copy.
#   bash test/local-cluster/cluster.sh up && eval "$(bash test/builder-image.sh)" && bash test/measure-builders.sh
set -uo pipefail
cd "$(dirname "$0")/.."
eval "$(bash test/local-cluster/cluster.sh env)"
: "${REMEDY_BUILDER_IMAGE:?run eval \"\$(bash test/builder-image.sh)\" first}"
OUT="${1:-/tmp/remedy-measure-builders}"
COPY="${REMEDY_CACHE:-$HOME/.cache/remedy}/measure-workspace"
cargo build --quiet --locked --package xtask
XTASK="$PWD/target/debug/xtask"
rm -rf "$COPY" "$OUT"
mkdir -p "$COPY" "$OUT"
git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- . "$COPY/"

# field <run> <python expression of r, the run's report>
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$OUT/$1/report.json" 2>/dev/null; }
run() { # <name> <xtask flags...>
    local name=$1; shift
    # Debian's docker client first: a newer one without buildx cannot use BuildKit.
    (cd "$COPY" && env CARGO_MANIFEST_DIR="$COPY/xtask" PATH="/usr/bin:$PATH" REMEDY_HISTORY_DIR="$OUT/history" \
        "$XTASK" e2e gateway "$@" --cluster existing --kubeconfig "$REMEDY_KUBECONFIG" --report-dir "$OUT/$name" \
        >"$OUT/$name.log" 2>&1) || { echo "$name: FAILED (see $OUT/$name.log)"; return; }
    echo "$name: makespan $(field "$name" "r['makespan_s']") s, build-binaries" \
        "$(field "$name" "[t['duration_s'] for t in r['tasks'] if t['id']=='build-binaries'][0]") s"
}
edit() { sed -i "s/\"starting gateway[^\"]*\"/\"starting gateway, $1\"/" "$COPY/services/gateway/src/main.rs"; }

for builder in host zig container; do
    extra=()
    [ "$builder" = container ] && extra=(--builder-image "$REMEDY_BUILDER_IMAGE")
    run "$builder-cold" --builder "$builder" "${extra[@]}"
    edit "$builder-warm"
    run "$builder-warm" --builder "$builder" "${extra[@]}"
done
