# Sourced by the scripts that fetch from Debian (debootstrap, deb-src): `debian_mirror` prints
# $REMEDY_DEBIAN_MIRROR, else the mirror apt uses here, else deb.debian.org.
debian_mirror() {
    if [ -n "${REMEDY_DEBIAN_MIRROR:-}" ]; then echo "$REMEDY_DEBIAN_MIRROR"; return; fi
    local m
    m="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    if [ -z "$m" ]; then
        m="$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}
