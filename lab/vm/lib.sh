# shellcheck shell=bash
# shellcheck disable=SC2034  # names used by the scripts that source this file
# Shared names and helpers for the QEMU/DRBD lab (tier 2), sourced by build-image.sh and run.sh.
#
# Everything the lab creates lives in lab/vm/build (BUILD, gitignored) and in one network
# namespace (NETNS) that holds the LAN bridge and the guests' tap devices. Nothing is put on the
# host's own network; addresses are documentation ranges only (RFC 5737):
#   hb   192.0.2.0/24     a .1, b .2                     heartbeat link (qemu dgram, a<->b)
#   repl 203.0.113.0/24   a .1, b .2                     DRBD replication link (qemu dgram, a<->b)
#   lan  198.51.100.0/24  a .11, b .12, client c .20     bridge in NETNS, VIP .100

VM=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$(dirname "$VM")
REPO=$(dirname "$LAB")
BUILD=$VM/build
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
NETNS=tbvm
VIP=198.51.100.100

log() { printf '%s vm: %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need_cmds CMD:PKG...: apt-get install the Debian packages whose command is missing (a fresh
# machine has neither qemu nor debootstrap).
need_cmds() {
    local pair cmd pkg missing=()
    for pair in "$@"; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing host packages: ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

# now_ms: wall clock in epoch milliseconds.
now_ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:-3}"; }
