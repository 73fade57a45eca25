#!/bin/bash
# ctl.sh — drive the running lab.
#   status [a|b]        twinbeat status of one node, or both
#   standby a|b         planned handoff: that node gives the service to its peer
#   takeover a|b        planned handoff: that node takes the service from its peer
#   kill-daemon a|b     kill -9 of the twinbeat daemon only (its mariadbd, mount, VIP stay!)
#   start-daemon a|b    start that node's daemon again
#   kill-witness        kill -9 of the witness (a lab brought up with LAB_WITNESS=1)
#   start-witness       start the witness again (it grants nothing for one lease)
#   rate                acknowledged writes in the last 10 s, and the in-doubt count
#   gaps [N]            the N (default 5) longest pauses between acknowledged writes
#   check               every acknowledged write is on the primary (via the VIP); the replica
#                       holds exactly the primary's rows; prints PASS/FAIL with numbers
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
node_arg() { [[ ${1:-} == a || ${1:-} == b ]] || usage; }
[[ -d $RUN ]] || die "the lab is not up ($RUN missing); start it with: sudo lab/demo.sh"

cmd=${1:-}
shift || true
case $cmd in
status)
    if [[ $# -eq 0 ]]; then set -- a b; fi
    for who in "$@"; do
        node_arg "$who"
        echo "== node $who: $BIN status --socket $(ctl_socket "$who")"
        "$BIN" status --socket "$(ctl_socket "$who")" || echo "(node $who does not answer)"
    done
    ;;
standby | takeover)
    node_arg "${1:-}"
    exec "$BIN" "$cmd" --socket "$(ctl_socket "$1")"
    ;;
kill-daemon)
    node_arg "${1:-}"
    pidf=$(node_dir "$1")/twinbeat.pid
    pid_alive "$pidf" twinbeat || die "daemon $1 is not running"
    kill -KILL "$(<"$pidf")"
    wait_until 5 "daemon $1 to die" pid_gone "$(<"$pidf")"
    rm -f "$pidf"
    log "daemon $1 killed (-9); whatever it held (mariadbd, mount, VIP) is still in place"
    ;;
start-daemon)
    node_arg "${1:-}"
    start_daemon "$1"
    ;;
kill-witness)
    [[ -f $RUN/conf/witness.toml ]] || die "this lab has no witness (bring it up with LAB_WITNESS=1)"
    pid_alive "$WITNESS_PID" twinbeat || die "the witness is not running"
    kill -KILL "$(<"$WITNESS_PID")"
    wait_until 5 "the witness to die" pid_gone "$(<"$WITNESS_PID")"
    rm -f "$WITNESS_PID"
    log "witness killed (-9)"
    ;;
start-witness)
    [[ -f $RUN/conf/witness.toml ]] || die "this lab has no witness (bring it up with LAB_WITNESS=1)"
    start_witness
    ;;
rate)
    now=$(($(date +%s%3N)))
    acked=$(awk -v from=$((now - 10000)) '$2 >= from' "$LOGS/acked.log" | wc -l)
    indoubt=$(wc -l <"$LOGS/indoubt.log")
    total=$(wc -l <"$LOGS/acked.log")
    last=$(tail -n1 "$LOGS/acked.log" | awk -v now="$now" '{ d = (now - $2) / 1000; printf "%.1f", d < 0 ? 0 : d }')
    echo "acknowledged in the last 10 s: $acked ($(awk -v n="$acked" 'BEGIN { printf "%.1f", n / 10 }')/s); total acknowledged: $total; in doubt: $indoubt; last ack ${last}s ago"
    ;;
gaps)
    n=${1:-5}
    echo "longest pauses between consecutive acknowledged writes (ms, after id, at):"
    awk 'NR > 1 { printf "%d %d %s\n", $2 - prev, pid, strftime("%T", int(prev / 1000)) } { prev = $2; pid = $1 }' \
        "$LOGS/acked.log" | sort -rn | head -n "$n"
    ;;
check)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Order matters: the acknowledged list is read BEFORE the primary is queried, so every id in
    # it must already be on the primary.
    sort -n -k1,1 "$LOGS/acked.log" | awk '{ print $1 }' | sort >"$tmp/acked"
    awk '{ print $1 }' "$LOGS/indoubt.log" | sort >"$tmp/indoubt"
    sql_vip 'SELECT id FROM lab.writes' | sort >"$tmp/primary" ||
        die "cannot read lab.writes through the VIP $VIP"
    missing=$(comm -23 "$tmp/acked" "$tmp/primary" | wc -l)
    p_count=$(wc -l <"$tmp/primary")
    p_max=$(sort -n "$tmp/primary" | tail -n1)
    indoubt_committed=$(comm -12 "$tmp/indoubt" "$tmp/primary" | wc -l)
    # The writer keeps going, so compare the replica on the primary's snapshot: every row the
    # primary had (ids <= p_max) must reach the replica, and nothing else below p_max.
    r_count=-1
    end=$((SECONDS + 30))
    while ((SECONDS < end)); do
        r_count=$(sql_replica "SELECT COUNT(*) FROM lab.writes WHERE id <= ${p_max:-0}" || echo -1)
        ((r_count == p_count)) && break
        sleep 0.5
    done
    echo "acknowledged: $(wc -l <"$tmp/acked"), missing on primary: $missing"
    echo "in doubt: $(wc -l <"$tmp/indoubt") (of which committed: $indoubt_committed)"
    echo "primary rows (ids <= ${p_max:-0}): $p_count; replica rows in the same range: $r_count"
    if ((missing == 0 && r_count == p_count)); then
        echo PASS
    else
        ((missing == 0)) || { echo "missing ids (first 20):"; comm -23 "$tmp/acked" "$tmp/primary" | sort -n | head -n 20; }
        ((r_count == p_count)) || echo "replica did not reach the primary's row count within 30 s"
        replica_status | grep -E 'Running|Error|Behind' || true
        echo FAIL
        exit 1
    fi
    ;;
*) usage ;;
esac
