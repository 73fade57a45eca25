#!/bin/bash
# scenarios.sh — the failover scenarios of the namespace lab, with checks and figures.
# Usage: sudo lab/scenarios.sh [--scenarios 1,3,5] [--trials N] [--json FILE]
#   1 power cut of the active node          5 standby and takeover switchovers
#   2 kill -9 of the active daemon only     6 mysqld crashes on the active node
#   3 dedicated heartbeat link cut          7 active daemon paused past deadtime
#   4 active node cut off from the peer and the LAN
# Brings a fresh lab up (demo.sh), runs the scenarios (twinbeat-lab run, lab/runner), and
# always tears the lab down again (down.sh), also on failure. Exit 0 only if every scenario
# passed. Human summary on stdout, JSON in lab/build/scenarios.json (or --json FILE).
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"

"$LAB/down.sh"
trap '"$LAB/down.sh" || log "down.sh failed; inspect by hand"' EXIT
"$LAB/demo.sh" >/dev/null
cd "$REPO"
"$LABBIN" run "$@"
