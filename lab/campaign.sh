#!/bin/bash
# campaign.sh — the nemesis: randomized fault schedules against a fresh namespace lab.
# Usage: sudo lab/campaign.sh --seed S [--runs N] [--only R] [--max-faults K] [--json FILE]
#                             [--witness] [--delay] [--fence power-off]
# Every run's schedule follows from the seed and its number, so `--seed S --only R` replays run
# R (with the same options). Each run checks: never two VIP holders or two writable databases,
# no acknowledged write lost, the replica equal to the primary, the service back within 30 s of
# the last heal.
#   --witness           the lab gets a witness (LAB_WITNESS=1, see demo.sh) and runs also draw
#                       witness faults; LAB_WITNESS=1 in the environment implies it
#   --delay             runs also draw a heartbeat delay (NFQUEUE through iptables; this kernel
#                       has no netem): both nodes' heartbeats on a link held back 0.1-3 s
#   --fence power-off   the lab's fence agent is armed: a takeover from a silent peer powers it
#                       off first; the campaign powers it on again when the step heals
# Brings the lab up (demo.sh) and always tears it down (down.sh). Exit 0 only if every run passed.
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
command -v nft >/dev/null && command -v iptables >/dev/null || {
    log "installing nftables (one-way heartbeat drops and loss) and iptables (heartbeat delay)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables iptables
}

args=("$@")
witness=${LAB_WITNESS:-0}
for a in "$@"; do [[ $a == --witness ]] && witness=1; done
if [[ $witness == 1 ]]; then
    export LAB_WITNESS=1
    [[ " $* " == *" --witness "* ]] || args+=(--witness)
fi

"$LAB/down.sh"
trap '"$LAB/down.sh" || log "down.sh failed; inspect by hand"' EXIT
"$LAB/demo.sh" >/dev/null
cd "$REPO"
"$LABBIN" campaign "${args[@]}"
