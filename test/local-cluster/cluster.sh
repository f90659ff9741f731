#!/usr/bin/env bash
# Single-node Kubernetes 1.20.2 built from Debian's `kubernetes` source package.
# Usage: cluster.sh up|down|status|env|build   (see docs/local-cluster.md)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${REMEDY_CACHE:-$HOME/.cache/remedy}"
K8S_CACHE="$CACHE/kubernetes"
STATE="${REMEDY_LOCAL_CLUSTER_DIR:-/tmp/remedy-local-cluster}"
API_PORT="${REMEDY_LOCAL_CLUSTER_API_PORT:-16443}"
SERVICE_CIDR="10.96.0.0/24"
PAUSE_IMAGE="k8s.gcr.io/pause:3.2"
IMAGE_BASE="${REMEDY_IMAGE_BASE:-localhost/remedy/debian:bookworm-slim}"
IMAGE_POSTGRES="${REMEDY_IMAGE_POSTGRES:-localhost/remedy/postgres:15}"
IMAGE_REDIS="${REMEDY_IMAGE_REDIS:-localhost/remedy/redis:7}"
IMAGE_BUSYBOX="${REMEDY_IMAGE_BUSYBOX:-localhost/remedy/busybox:latest}"
K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
APT_PACKAGES_BUILD="golang-go dpkg-dev rsync make gcc libc6-dev"
APT_PACKAGES_RUN="etcd-server docker.io runc socat conntrack iptables iproute2 jq curl openssl debootstrap dnsmasq-base busybox-static ca-certificates"

STEP="init"
log() { printf '[local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# fail <fix>: abort, naming the current step and how to fix it.
fail() { printf '[local-cluster] FAILED at step "%s": %s\n' "$STEP" "$*" >&2; exit 1; }
step() { STEP="$1"; log "$1"; }

need_root() {
    [ "$(id -u)" = 0 ] || fail "must run as root (dockerd, kubelet and kube-proxy need it); rerun with sudo"
}

# shellcheck source=../debian-mirror.sh
source "$HERE/../debian-mirror.sh"

# Installs missing Debian packages (by dpkg status).
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "apt-get install ${missing[*]}"
    local out
    if ! out="$( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") 2>&1)"; then
        fail "${missing[*]} not installed and apt-get failed: $(echo "$out" | tail -3 | tr '\n' ' ') -- fix the apt configuration or install them by hand"
    fi
}

# Private apt configuration with a deb-src line; /etc/apt is never edited.
APT_SRC="$K8S_CACHE/apt-src"
apt_src() {
    apt-get -o Dir::Etc::SourceList="$APT_SRC/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_SRC/lists" -o Dir::Cache="$APT_SRC/cache" -o Debug::NoLocking=1 "$@"
}
apt_src_cache() {
    apt-cache -o Dir::Etc::SourceList="$APT_SRC/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_SRC/lists" -o Dir::Cache="$APT_SRC/cache" "$@"
}

# The Debian source version of `kubernetes`; apt-get update on the private lists only when they are missing.
source_version() {
    if [ -n "${REMEDY_K8S_SOURCE_VERSION:-}" ]; then echo "$REMEDY_K8S_SOURCE_VERSION"; return; fi
    if ! ls "$APT_SRC"/lists/*Sources* >/dev/null 2>&1; then
        # Offline reuse: exactly one cached build and no apt lists -> take it.
        local cached
        cached="$(ls -d "$K8S_CACHE"/*/bin/.complete 2>/dev/null | head -2 || true)"
        if [ -n "$cached" ] && [ "$(echo "$cached" | wc -l)" = 1 ]; then
            basename "$(dirname "$(dirname "$cached")")"; return
        fi
        STEP="apt-get update (private deb-src lists)"
        mkdir -p "$APT_SRC/lists/partial" "$APT_SRC/cache/archives/partial"
        echo "deb-src $(debian_mirror) bookworm main" > "$APT_SRC/sources.list"
        local out
        out="$(apt_src update 2>&1)" || fail "apt-get update with $APT_SRC/sources.list failed: $(echo "$out" | tail -2 | tr '\n' ' ') -- check network access to $(debian_mirror) or set REMEDY_DEBIAN_MIRROR"
    fi
    local v
    v="$(apt_src_cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
    [ -n "$v" ] || fail "no 'kubernetes' source package in $APT_SRC/sources.list -- set REMEDY_DEBIAN_MIRROR to a bookworm mirror"
    echo "$v"
}

BIN=""
# Serialises builds into the same cache (fd 8, closed for daemons).
lock_cache() {
    mkdir -p "$K8S_CACHE"
    exec 8>"$K8S_CACHE/.build.lock"
    flock -w 1800 8 || fail "another build holds $K8S_CACHE/.build.lock"
}
resolve_bin() {
    local v; v="$(source_version)"
    K8S_VERSION="$v"
    BIN="$K8S_CACHE/$v/bin"
}

# Bumped whenever the build recipe (patches, flags) changes; stored in bin/.complete.
BUILD_REV=2
cached() { [ "$(cat "$BIN/.complete" 2>/dev/null || true)" = "rev $BUILD_REV" ]; }

# Builds the five binaries and the pause binary once per source version into $BIN.
build() {
    resolve_bin
    if cached; then log "binaries cached in $BIN"; return 0; fi
    lock_cache
    if cached; then log "binaries cached in $BIN"; return 0; fi
    ensure_packages $APT_PACKAGES_BUILD
    local work="$K8S_CACHE/$K8S_VERSION/work"
    local t0=$SECONDS
    step "apt-get source kubernetes=$K8S_VERSION"
    rm -rf "$work"; mkdir -p "$work/debs"
    (cd "$work" && apt_src source --download-only "kubernetes=$K8S_VERSION" >"$work/source.log" 2>&1) \
        || fail "apt-get source failed (see $work/source.log) -- check network access to $(debian_mirror)"
    (cd "$work" && dpkg-source -x ./*.dsc src >>"$work/source.log" 2>&1) \
        || fail "dpkg-source -x failed (see $work/source.log) -- is dpkg-dev installed?"

    step "swap vendored reflect2/json-iterator for Debian's (Go >= 1.18 segfault fix)"
    (cd "$work/debs" && apt-get download golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >"$work/debs.log" 2>&1) \
        || fail "apt-get download of golang-github-modern-go-reflect2-dev/golang-github-json-iterator-go-dev failed (see $work/debs.log) -- run apt-get update"
    local d
    for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/debs/x"; done
    local X="$work/debs/x/usr/share/gocode/src/github.com" V="$work/src/vendor/github.com"
    [ -d "$X/modern-go/reflect2" ] && [ -d "$X/json-iterator/go" ] || fail "unexpected layout of the reflect2/json-iterator packages under $X"
    rm -f "$V"/modern-go/reflect2/*.go "$V"/modern-go/reflect2/*.s
    cp "$X"/modern-go/reflect2/*.go "$V/modern-go/reflect2/"
    cp "$X"/modern-go/reflect2/*.s "$V/modern-go/reflect2/" 2>/dev/null || true
    rm -f "$V"/modern-go/reflect2/*_test.go
    rm -f "$V"/json-iterator/go/*.go
    for f in "$X"/json-iterator/go/*.go; do
        case "$f" in *_test.go) ;; *) cp "$f" "$V/json-iterator/go/" ;; esac
    done

    # Go >= 1.16 makes reflect.Zero share one pointer, so this check treats "" and 0 as null and
    # rejects empty strings in custom resources and CRD defaults (kubernetes#99804). Upstream fix
    # (kube-openapi#230, Kubernetes 1.21): drop the zero-value test.
    step "patch vendored kube-openapi/go-openapi zero-value check (Go >= 1.16 fix)"
    local tf zero='if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {'
    for tf in "$work/src/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go" \
              "$work/src/vendor/github.com/go-openapi/validate/type.go"; do
        [ -f "$tf" ] || continue
        grep -qF "$zero" "$tf" || fail "expected zero-value check not found in $tf"
        sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$tf"
        grep -qF "$zero" "$tf" && fail "could not patch $tf"
    done

    step "make WHAT=cmd/{${K8S_BINARIES// /,}} (Go build, ~6 min on 2 cores; log: $work/make.log)"
    local what="" b
    for b in $K8S_BINARIES; do what="$what cmd/$b"; done
    mkdir -p "$work/home"
    (cd "$work/src" && nice -n 10 env HOME="$work/home" GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
        GOCACHE="$K8S_CACHE/gocache" make WHAT="${what# }" >"$work/make.log" 2>&1) \
        || fail "make failed (last lines: $(tail -3 "$work/make.log" | tr '\n' ' ')) -- see $work/make.log"

    step "build pause binary"
    gcc -Os -static -o "$work/pause" "$work/src/build/pause/linux/pause.c" >"$work/pause.log" 2>&1 \
        || fail "gcc of build/pause/linux/pause.c failed (see $work/pause.log) -- install gcc and libc6-dev"

    rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
    for b in $K8S_BINARIES; do cp "$work/src/_output/local/bin/linux/amd64/$b" "$BIN.tmp/"; done
    cp "$work/pause" "$BIN.tmp/pause"
    echo "rev $BUILD_REV" >"$BIN.tmp/.complete"
    rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
    # The tree and Go caches are ~2.5 GB of small files; delete them in the background.
    local trash="$K8S_CACHE/.trash.$$"
    mkdir -p "$trash"
    mv "$work" "$trash/work"
    [ ! -d "$K8S_CACHE/gocache" ] || mv "$K8S_CACHE/gocache" "$trash/gocache"
    setsid nice -n 10 rm -rf "$trash" </dev/null >/dev/null 2>&1 8>&- 9>&- &
    log "built in $((SECONDS - t0)) s into $BIN"
}

# ---------------------------------------------------------------- runtime

DOCKER="/usr/bin/docker"
DOCKER_SOCK="/var/run/docker.sock"
# Stop order for `down` (reverse start order); dockerd last.
COMPONENTS="dns-sync dnsmasq kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd"
SYSCTLS="net/ipv4/conf/all/route_localnet net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"

docker_cli() { DOCKER_HOST="unix://$DOCKER_SOCK" DOCKER_BUILDKIT=0 "$DOCKER" "$@"; }

# alive <pid>: the process exists and is not a zombie.
alive() {
    local pid="$1" st
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }
running() { alive "$(pid_of "$1")"; }

# start_proc <name> <cmd...>: own session and process group (pgid == pid), logs in $STATE/logs.
start_proc() {
    local name="$1"; shift
    setsid "$@" </dev/null >"$STATE/logs/$name.log" 2>&1 8>&- 9>&- &
    echo $! >"$STATE/pids/$name.pid"
}

# Fails fast when a started component has exited.
check_started() {
    local f n
    for f in "$STATE"/pids/*.pid; do
        [ -e "$f" ] || continue
        n="$(basename "$f" .pid)"
        running "$n" || fail "$n exited: $(grep -E '^[EF][0-9]{4}|level=(error|fatal)|rror' "$STATE/logs/$n.log" 2>/dev/null | tail -2 | tr '\n' ' ') -- see $STATE/logs/$n.log"
    done
}

# wait_for <seconds> <what> <fix> <cmd...>
wait_for() {
    local timeout="$1" what="$2" fix="$3"; shift 3
    local end=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then fail "$what not ready after ${timeout}s -- $fix"; fi
        check_started
        sleep 0.2
    done
}

docker_ping() { curl -sf --max-time 2 --unix-socket "$DOCKER_SOCK" http://docker/_ping >/dev/null 2>&1; }
api() { curl -sf --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(cat "$STATE/pki/token")" -A local-cluster "https://$NODE_IP:$API_PORT$1"; }
node_ready() {
    api /api/v1/nodes/localhost | jq -e '.status.conditions[] | select(.type=="Ready") | .status=="True"' >/dev/null
}
proxy_healthy() { curl -sf --max-time 2 http://127.0.0.1:10256/healthz >/dev/null; }
dns_ready() { busybox nslookup kubernetes.default.svc.cluster.local "$NODE_IP" 2>/dev/null | grep -q 10.96.0.1; }
default_sa() { api /api/v1/namespaces/default/serviceaccounts/default >/dev/null; }

save_sysctls() {
    [ -f "$STATE/sysctls.saved" ] && return 0
    local s
    for s in $SYSCTLS; do
        [ -r "/proc/sys/$s" ] && echo "$s $(cat "/proc/sys/$s")"
    done >"$STATE/sysctls.saved.tmp" || true
    mv "$STATE/sysctls.saved.tmp" "$STATE/sysctls.saved"
}
restore_sysctls() {
    [ -f "$STATE/sysctls.saved" ] || return 0
    local s v cur
    while read -r s v; do
        cur="$(cat "/proc/sys/$s" 2>/dev/null || true)"
        if [ -n "$cur" ] && [ "$cur" != "$v" ]; then
            echo "$v" >"/proc/sys/$s" 2>/dev/null || log "warning: could not restore sysctl $s=$v"
        fi
    done <"$STATE/sysctls.saved"
    rm -f "$STATE/sysctls.saved"
}

write_env() {
    cat <<EOT
export REMEDY_KUBECONFIG=$STATE/kubeconfig
export REMEDY_IMAGE_BASE=$IMAGE_BASE
export REMEDY_IMAGE_POSTGRES=$IMAGE_POSTGRES
export REMEDY_IMAGE_REDIS=$IMAGE_REDIS
export REMEDY_IMAGE_BUSYBOX=$IMAGE_BUSYBOX
EOT
}

# ---------------------------------------------------------------- images

image_exists() { docker_cli image inspect "$1" >/dev/null 2>&1; }

build_images() {
    local tmp; tmp="$(mktemp -d)"
    if ! image_exists "$PAUSE_IMAGE"; then
        step "image $PAUSE_IMAGE (pause.c from the kubernetes source tree)"
        cp "$BIN/pause" "$tmp/pause"
        printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$tmp/Dockerfile"
        docker_cli build -q -t "$PAUSE_IMAGE" "$tmp" >"$STATE/logs/image-pause.log" 2>&1 \
            || fail "docker build of the pause image failed (see $STATE/logs/image-pause.log)"
        rm -rf "${tmp:?}"/*
    fi
    if ! image_exists "$IMAGE_BUSYBOX"; then
        step "image $IMAGE_BUSYBOX (busybox-static, docker import)"
        [ -x /bin/busybox ] || fail "/bin/busybox missing -- apt-get install busybox-static"
        mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev"
        cp /bin/busybox "$tmp/rootfs/bin/busybox"
        local a
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/rootfs/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
        chmod 1777 "$tmp/rootfs/tmp"
        tar -C "$tmp/rootfs" -cf - . | docker_cli import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$IMAGE_BUSYBOX" >"$STATE/logs/image-busybox.log" 2>&1 \
            || fail "docker import of busybox failed (see $STATE/logs/image-busybox.log)"
        rm -rf "${tmp:?}"/*
    fi
    if ! image_exists "$IMAGE_BASE"; then
        step "image $IMAGE_BASE (debootstrap --variant=minbase bookworm, ~40 s)"
        local root="$tmp/rootfs"
        debootstrap --variant=minbase bookworm "$root" "$(debian_mirror)" >"$STATE/logs/image-base.log" 2>&1 \
            || fail "debootstrap failed (see $STATE/logs/image-base.log) -- check access to $(debian_mirror) or set REMEDY_DEBIAN_MIRROR"
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
            rm -f "$root/etc/apt/sources.list"
        fi
        printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
            >"$root/etc/dpkg/dpkg.cfg.d/remedy-slim"
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90remedy-slim"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/tmp/*
        find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
        tar -C "$root" -cf - . | docker_cli import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IMAGE_BASE" >>"$STATE/logs/image-base.log" 2>&1 \
            || fail "docker import of the debootstrapped rootfs failed (see $STATE/logs/image-base.log)"
        rm -rf "$root"
    fi
    # Rebuilt when the files in images/<name> or the base image change (hash kept in a label).
    local name dir ref hash
    for name in postgres redis; do
        if [ $name = postgres ]; then ref="$IMAGE_POSTGRES"; else ref="$IMAGE_REDIS"; fi
        dir="$HERE/images/$name"
        hash="$( (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum; docker_cli image inspect -f '{{.Id}}' "$IMAGE_BASE") | sha256sum | cut -c1-16)"
        [ "$(docker_cli image inspect -f '{{index .Config.Labels "remedy.local-cluster.hash"}}' "$ref" 2>/dev/null || true)" = "$hash" ] && continue
        step "image $ref (Debian packages on $IMAGE_BASE; $dir)"
        docker_cli build -t "$ref" --label "remedy.local-cluster.hash=$hash" --build-arg "BASE=$IMAGE_BASE" "$dir" >"$STATE/logs/image-$name.log" 2>&1 \
            || fail "docker build of $ref failed (see $STATE/logs/image-$name.log) -- containers need access to $(debian_mirror)"
        docker_cli image prune -f --filter "label=remedy.local-cluster.hash" >/dev/null 2>&1 || true
    done
    rm -rf "$tmp"
}

# ---------------------------------------------------------------- up

write_pki() {
    local p="$STATE/pki"
    mkdir -p "$p"
    (
        cd "$p"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -subj "/CN=remedy-local-cluster-ca" -days 3650 -out ca.crt
        openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key
        openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
        printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' "$NODE_IP" >ext.cnf
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile ext.cnf -out apiserver.crt
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >token
        echo "$(cat token),admin,admin,system:masters" >tokens.csv
        chmod 600 ./*.key token tokens.csv
    ) >"$STATE/logs/pki.log" 2>&1 || fail "openssl failed (see $STATE/logs/pki.log) -- apt-get install openssl"
    cat >"$STATE/kubeconfig" <<EOT
apiVersion: v1
kind: Config
clusters:
- name: remedy-local
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: admin
  user:
    token: $(cat "$p/token")
contexts:
- name: remedy-local
  context:
    cluster: remedy-local
    user: admin
current-context: remedy-local
EOT
    chmod 600 "$STATE/kubeconfig"
}

start_dockerd() {
    if running dockerd && docker_ping; then return 0; fi
    step "start dockerd"
    if docker_ping; then
        fail "a Docker daemon that cluster.sh did not start answers on $DOCKER_SOCK; the cluster needs its own dockerd (runc-clamp runtime, --userland-proxy=false). Stop that daemon (e.g. 'systemctl stop docker docker.socket' or kill the dockerd in /var/run/docker.pid) and rerun"
    fi
    command -v dockerd >/dev/null || fail "dockerd missing -- apt-get install docker.io"
    start_proc dockerd dockerd --host "unix://$DOCKER_SOCK" --pidfile "$STATE/dockerd.pidfile" \
        --add-runtime "runc-clamp=$HERE/runc-clamp" --default-runtime runc-clamp \
        --userland-proxy=false --exec-opt native.cgroupdriver=cgroupfs
    wait_for 30 dockerd "see $STATE/logs/dockerd.log" docker_ping
}

node_ip() {
    local ip
    ip="$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)"
    [ -n "$ip" ] || ip="$(docker_cli network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null || true)"
    [ -n "$ip" ] || fail "cannot find the docker0 address -- see $STATE/logs/dockerd.log"
    echo "$ip"
}

# systemd-resolved's stub (127.0.0.53) is unreachable from pods; use its upstream list then.
host_resolv_conf() {
    if grep -q '^nameserver 127\.0\.0\.53' /etc/resolv.conf 2>/dev/null && [ -f /run/systemd/resolve/resolv.conf ]; then
        echo /run/systemd/resolve/resolv.conf
    else
        echo /etc/resolv.conf
    fi
}

all_running() {
    local c
    for c in dockerd $COMPONENTS; do running "$c" || return 1; done
}

up() {
    need_root
    local t0=$SECONDS
    if all_running && [ -f "$STATE/kubeconfig" ]; then
        NODE_IP="$(cat "$STATE/node-ip")"
        if node_ready; then
            log "already up; kubeconfig: $STATE/kubeconfig"
            echo "$STATE/kubeconfig"
            return 0
        fi
    fi
    if [ -d "$STATE/pids" ] && ls "$STATE"/pids/*.pid >/dev/null 2>&1; then
        log "cleaning up a previous or partial cluster first"
        down_inner
    fi
    ensure_packages $APT_PACKAGES_RUN
    build
    step "prepare state dir $STATE"
    assert_no_mounts
    rm -rf "$STATE"
    mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/dns-hosts"
    save_sysctls
    start_dockerd
    build_images
    NODE_IP="$(node_ip)"
    echo "$NODE_IP" >"$STATE/node-ip"
    write_pki
    local p="$STATE/pki" kc="$STATE/kubeconfig"

    step "start etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy"
    start_proc etcd etcd --name remedy --data-dir "$STATE/etcd" \
        --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
        --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
        --initial-cluster remedy=http://127.0.0.1:12380
    start_proc kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:12379 \
        --secure-port="$API_PORT" --bind-address="$NODE_IP" --advertise-address="$NODE_IP" \
        --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
        --token-auth-file="$p/tokens.csv" --authorization-mode=RBAC --allow-privileged=true \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --kubelet-preferred-address-types=Hostname,InternalIP \
        --profiling=false
    start_proc kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$kc" \
        --leader-elect=false --bind-address=127.0.0.1 --port=0 --controllers='*,-nodeipam' \
        --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
        --use-service-account-credentials=false --profiling=false
    start_proc kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$kc" --leader-elect=false \
        --bind-address=127.0.0.1 --port=0 --profiling=false
    mkdir -p "$STATE/kubelet"
    start_proc kubelet "$BIN/kubelet" --kubeconfig="$kc" --container-runtime=docker \
        --pod-infra-container-image="$PAUSE_IMAGE" --cgroup-driver=cgroupfs --cgroups-per-qos=false \
        --enforce-node-allocatable= --fail-swap-on=false --hostname-override=localhost \
        --address=127.0.0.1 --read-only-port=0 --healthz-port=10248 --healthz-bind-address=127.0.0.1 \
        --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
        --volume-plugin-dir="$STATE/kubelet-plugins" \
        --authentication-token-webhook=false --authorization-mode=AlwaysAllow \
        --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
        --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
        --cluster-dns="$NODE_IP" --cluster-domain=cluster.local --resolv-conf="$(host_resolv_conf)" \
        --node-status-update-frequency=1s
    start_proc kube-proxy "$BIN/kube-proxy" --kubeconfig="$kc" --proxy-mode=iptables \
        --hostname-override=localhost --cluster-cidr="$(docker_cli network inspect bridge -f '{{(index .IPAM.Config 0).Subnet}}')" \
        --bind-address="$NODE_IP" --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
        --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
        --conntrack-tcp-timeout-close-wait=0 --oom-score-adj=0

    step "wait for kube-apiserver /readyz"
    wait_for 60 kube-apiserver "see $STATE/logs/kube-apiserver.log and $STATE/logs/etcd.log" api /readyz

    step "start cluster DNS (dnsmasq on $NODE_IP:53 fed by dns-sync)"
    command -v dnsmasq >/dev/null || fail "dnsmasq missing -- apt-get install dnsmasq-base"
    : >"$STATE/dns-hosts/services"
    rm -f "$STATE/dnsmasq.pidfile"
    start_proc dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --user=root \
        --pid-file="$STATE/dnsmasq.pidfile" --listen-address="$NODE_IP" --bind-interfaces --no-hosts \
        --addn-hosts="$STATE/dns-hosts/services" --local=/cluster.local/ --domain-needed --log-facility=-
    start_proc dns-sync "$HERE/dns-sync.sh" "https://$NODE_IP:$API_PORT" "$p/ca.crt" "$p/token" "$STATE/dns-hosts/services" \
        "$STATE/dnsmasq.pidfile"

    step "wait for node Ready, kube-proxy, DNS and the default service account"
    wait_for 60 "node localhost" "see $STATE/logs/kubelet.log" node_ready
    wait_for 30 kube-proxy "see $STATE/logs/kube-proxy.log" proxy_healthy
    wait_for 30 "cluster DNS" "see $STATE/logs/dnsmasq.log and $STATE/logs/dns-sync.log" dns_ready
    wait_for 30 "default service account" "see $STATE/logs/kube-controller-manager.log" default_sa
    local c
    for c in $COMPONENTS; do running "$c" || fail "$c exited (see $STATE/logs/$c.log)"; done

    write_env >"$STATE/env"
    log "up in $((SECONDS - t0)) s; API https://$NODE_IP:$API_PORT; kubeconfig: $STATE/kubeconfig; env: $STATE/env"
    echo "$STATE/kubeconfig"
}

# ---------------------------------------------------------------- down

# stop_group <seconds> <name...>: SIGTERM the process groups, wait, then SIGKILL.
stop_group() {
    local timeout="$1"; shift
    local n pid pids=()
    for n in "$@"; do
        pid="$(pid_of "$n")"
        if alive "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    local end=$((SECONDS + timeout)) left
    while :; do
        left=()
        for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
        [ ${#left[@]} -eq 0 ] && break
        if [ $SECONDS -ge $end ]; then
            for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    for n in "$@"; do pid="$(pid_of "$n")"; [ -z "$pid" ] || kill -KILL -- "-$pid" 2>/dev/null || true; done
}

state_mounts() { awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r; }
assert_no_mounts() {
    local m; m="$(state_mounts)"
    [ -z "$m" ] || fail "mounts left under $STATE: $m -- run 'cluster.sh down' or umount them"
}

# Processes started from the cache bin dir, whatever their pid files say.
sweep_bin_processes() {
    local d exe
    for d in /proc/[0-9]*; do
        exe="$(readlink "$d/exe" 2>/dev/null || true)"
        case "$exe" in "$K8S_CACHE"/*/bin/*) kill -KILL "${d#/proc/}" 2>/dev/null || true ;; esac
    done
}

# Removes the KUBE-* chains of kubelet and kube-proxy and the jumps to them from built-in chains.
cleanup_iptables() {
    local ipt="$1" t line chain
    command -v "$ipt-save" >/dev/null || return 0
    for t in nat filter mangle; do
        "$ipt-save" -t "$t" 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' |
        while IFS= read -r line; do
            eval "\"\$ipt\" -w 5 -t \"\$t\" -D ${line#-A }" 2>/dev/null || true
        done || true
        for chain in $("$ipt-save" -t "$t" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
            "$ipt" -w 5 -t "$t" -F "$chain" 2>/dev/null || true
        done
        for chain in $("$ipt-save" -t "$t" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
            "$ipt" -w 5 -t "$t" -X "$chain" 2>/dev/null || true
        done
    done
}

down_inner() {
    local t0=$SECONDS
    # kubelet first so it does not restart pod containers, then the rest of the control plane.
    stop_group 5 dns-sync dnsmasq kubelet kube-proxy
    if running dockerd && docker_ping; then
        local ids
        ids="$(docker_cli ps -aq --filter label=io.kubernetes.docker.type 2>/dev/null || true)"
        [ -z "$ids" ] || docker_cli rm -f $ids >/dev/null 2>&1 || log "warning: could not remove some pod containers"
    fi
    stop_group 10 kube-scheduler kube-controller-manager kube-apiserver
    stop_group 5 etcd
    cleanup_iptables iptables
    cleanup_iptables ip6tables
    stop_group 10 dockerd
    sweep_bin_processes
    local m
    for m in $(state_mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"; done
    restore_sysctls
    if [ -f "$STATE/pids/dockerd.pid" ]; then
        # Container log links the kubelet would have garbage-collected; all ours (dockerd was ours).
        rm -rf /var/log/pods/* /var/log/containers/* 2>/dev/null || true
    fi
    rm -f "$STATE"/pids/*.pid
    log "down in $((SECONDS - t0)) s"
}

down() {
    need_root
    mkdir -p "$STATE/pids"
    down_inner
}

status() {
    local c pid rc=0 any=0
    for c in dockerd $COMPONENTS; do
        pid="$(pid_of "$c")"
        if alive "$pid"; then printf '%-24s running (pid %s)\n' "$c" "$pid"; any=1
        else printf '%-24s stopped\n' "$c"; rc=3; fi
    done
    if [ -f "$STATE/node-ip" ]; then echo "api server:  https://$(cat "$STATE/node-ip"):$API_PORT"; fi
    echo "kubeconfig:  $STATE/kubeconfig"
    echo "logs:        $STATE/logs"
    echo "binaries:    $(ls -d "$K8S_CACHE"/*/bin 2>/dev/null | tr '\n' ' ')"
    if [ $rc = 3 ] && [ $any = 1 ]; then echo "state:       partial (run 'cluster.sh down')"; return 1; fi
    [ $rc = 0 ] && echo "state:       up" || echo "state:       down"
    return $rc
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        up|down)
            need_root
            mkdir -p "$(dirname "$STATE")"
            exec 9>"$STATE.lock"
            flock -w 900 9 || fail "another cluster.sh up/down holds $STATE.lock"
            "$cmd" ;;
        build) need_root; build ;;
        status) status ;;
        env) write_env ;;
        *) echo "usage: $0 up|down|status|env|build" >&2; exit 2 ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
