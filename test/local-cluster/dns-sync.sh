#!/bin/bash
# Feeds dnsmasq (--addn-hosts) with <svc>.<ns>.svc.cluster.local records from the API server.
# Usage: dns-sync.sh <api-url> <ca.crt> <token-file> <hosts-file> <dnsmasq-pidfile>
# Re-syncs on every watch event of services/endpoints (bursts coalesced) and at least every 30 s.
# On a change dnsmasq gets SIGHUP, which re-reads the file and forgets the old records: with
# --hostsdir it would only ever add them, so a Service re-created under the same name (a
# namespace deleted and made again) would resolve to its old address as well as the new one.
set -uo pipefail
API="$1" CA="$2" TOKEN="$(cat "$3")" OUT="$4" DNSMASQ_PIDFILE="$5"
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
    ' >"$tmp" || { rm -f "$tmp".*; return 1; }
    rm -f "$tmp.svc" "$tmp.ep"
    if cmp -s "$tmp" "$OUT"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$OUT"
        [ -s "$DNSMASQ_PIDFILE" ] && kill -HUP "$(cat "$DNSMASQ_PIDFILE")" 2>/dev/null
    fi
    return 0
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

# dnsmasq starts first; its pid is needed to signal it.
for _ in $(seq 100); do [ -s "$DNSMASQ_PIDFILE" ] && break; sleep 0.1; done

watch_loop services &
watch_loop endpoints &
wait
