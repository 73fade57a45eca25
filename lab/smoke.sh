#!/bin/bash
# smoke.sh — the lab's end-to-end smoke test: bring-up, a planned handoff each way with the
# consistency check after each, tear-down, and proof that nothing is left behind.
# Usage: sudo lab/smoke.sh [ROUNDS]   (default 1; each round is a full demo.sh .. down.sh cycle)
# Prints the service gaps (from twinbeat standby/takeover) and the client's write gaps.
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
rounds=${1:-1}

last_ack_ms() { tail -n1 "$LOGS/acked.log" | awk '{ print $2 }'; }
# acked_after MS: the client has an acknowledged write later than MS (epoch ms).
acked_after() { (($(last_ack_ms) > $1)); }
now_ms() { date +%s%3N; }

# handoff VERB NODE NEW_ACTIVE: run it, then wait until the VIP is on NEW_ACTIVE and the client
# writes again; then the consistency check must pass.
handoff() {
    local verb=$1 who=$2 new=$3 t
    t=$(now_ms)
    "$LAB/ctl.sh" "$verb" "$who"
    wait_until 30 "the VIP on node $new after $verb $who" holds_vip "$new"
    wait_until 30 "an acknowledged client write after $verb $who" acked_after "$t"
    log "mariadbd now: $(pgrep -a mariadbd | grep -v replica | sed 's/.*conf\///' | tr '\n' ' ')"
    "$LAB/ctl.sh" check
}

leftovers() {
    local left=""
    [[ -z $(ip netns list | grep "^$NS_PREFIX-" || true) ]] || left+=" namespaces"
    [[ -z $(losetup -j "$IMAGE" 2>/dev/null || true) ]] || left+=" loop-devices"
    [[ -z $(findmnt -rn | grep twinbeat-lab || true) ]] || left+=" mounts"
    [[ ! -e $RUN ]] || left+=" run-dir"
    # Zombies (exited, not yet reaped by PID 1) do not count.
    [[ -z $(ps -eo stat=,comm= | awk '$1 !~ /^Z/ && ($2 == "mariadbd" || $2 == "twinbeat")') ]] ||
        left+=" processes"
    [[ -z $left ]] || { log "left behind after down.sh:$left"; return 1; }
}

"$LAB/down.sh"
for ((round = 1; round <= rounds; round++)); do
    log "=== round $round of $rounds"
    "$LAB/demo.sh" >/dev/null
    "$LAB/ctl.sh" status a
    wait_until 30 "the replica to hold rows" bash -c "(( \$(mariadb -S $RUN/replica/mysqld.sock -u root -N -B -e 'SELECT COUNT(*) FROM lab.writes') > 20 ))"
    handoff standby a b
    handoff takeover a a
    "$LAB/ctl.sh" rate
    "$LAB/ctl.sh" gaps 3
    "$LAB/down.sh"
    wait_until 10 "nothing of the lab to be left" leftovers
    log "round $round: PASS"
done
