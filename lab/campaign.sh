#!/bin/bash
# campaign.sh — the nemesis: randomized fault schedules against a fresh namespace lab.
# Usage: sudo lab/campaign.sh --seed S [--runs N] [--only R] [--max-faults K] [--json FILE]
# Every run's schedule follows from the seed and its number, so `--seed S --only R` replays run
# R. Each run checks: never two VIP holders or two writable databases, no acknowledged write
# lost, the replica equal to the primary, the service back within 30 s of the last heal.
# Brings the lab up (demo.sh) and always tears it down (down.sh). Exit 0 only if every run passed.
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
command -v nft >/dev/null || {
    log "installing nftables (one-way heartbeat drops and loss)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables
}

"$LAB/down.sh"
trap '"$LAB/down.sh" || log "down.sh failed; inspect by hand"' EXIT
"$LAB/demo.sh" >/dev/null
cd "$REPO"
"$LABBIN" campaign "$@"
