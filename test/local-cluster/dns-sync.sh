#!/bin/bash
# Feeds dnsmasq (--hostsdir) with <svc>.<ns>.svc.cluster.local records from the API server.
# Usage: dns-sync.sh <api-url> <ca.crt> <token-file> <hosts-file>
# Re-syncs on every watch event of services/endpoints (bursts coalesced) and at least every 30 s.
set -uo pipefail
API="$1" CA="$2" TOKEN="$(cat "$3")" OUT="$4"
DOMAIN="cluster.local"

get() { curl -sf --max-time 10 -A dns-sync --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$API$1"; }

sync_once() {
    local tmp="$OUT.tmp.$BASHPID"
    get /api/v1/services >"$tmp.svc" && get /api/v1/endpoints >"$tmp.ep" || { rm -f "$tmp".*; return 1; }
    jq -rn --slurpfile s "$tmp.svc" --slurpfile e "$tmp.ep" --arg d "$DOMAIN" '
        ($s[0].items | map(select(.spec.clusterIP == "None") | "\(.metadata.namespace)/\(.metadata.name)")) as $headless
        | ($s[0].items[] | select((.spec.clusterIP // "") != "" and .spec.clusterIP != "None")
            | "\(.spec.clusterIP) \(.metadata.name).\(.metadata.namespace).svc.\($d)"),
          ($e[0].items[] | . as $ep | ($ep.subsets // [])[] | (.addresses // [])[]
            | (if ($headless | index("\($ep.metadata.namespace)/\($ep.metadata.name)")) != null
               then "\(.ip) \($ep.metadata.name).\($ep.metadata.namespace).svc.\($d)" else empty end),
              (if .hostname then "\(.ip) \(.hostname).\($ep.metadata.name).\($ep.metadata.namespace).svc.\($d)" else empty end))
    ' >"$tmp" && mv "$tmp" "$OUT"
    rm -f "$tmp.svc" "$tmp.ep"
}

# watch_loop <resource>: a sync after each burst of events; the watch times out after 30 s.
watch_loop() {
    while :; do
        sync_once || sleep 1
        curl -sfN -A dns-sync --cacert "$CA" -H "Authorization: Bearer $TOKEN" \
            "$API/api/v1/$1?watch=1&timeoutSeconds=30" 2>/dev/null |
        while IFS= read -r _; do
            while IFS= read -r -t 0.05 _; do :; done
            sync_once
        done
    done
}

watch_loop services &
watch_loop endpoints &
wait
