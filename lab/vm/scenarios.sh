# shellcheck shell=bash
# shellcheck disable=SC2016  # single-quoted commands run in the guest shell
# The tier-2 scenarios (sourced by run.sh once everything is up: a active, b standby, the
# client writing through the VIP). Each one is bounded, checks its outcome (FAIL ends the run)
# and prints its figures as "FIG name value" lines, collected in $LOGS/figures.txt.

other() { [[ $1 == a ]] && echo b || echo a; }
fig() { printf 'FIG %-34s %s\n' "$1" "$2" | tee -a "$LOGS/figures.txt" >&2; }
check_ok() { printf 'PASS %s\n' "$1" | tee -a "$LOGS/figures.txt" >&2; }
fail() { printf 'FAIL %s\n' "$1" | tee -a "$LOGS/figures.txt" >&2; die "scenario failed: $1"; }
ms_since() { echo $(($2 - $1)); }
secs() { awk -v m="$1" 'BEGIN { printf "%.2f s", m / 1000 }'; }

# active_node: the node guest that holds the VIP (empty if none).
active_node() {
    local g
    for g in a b; do
        qemu_alive "$g" && vmc "$g" 10 'tbctl has-vip' >/dev/null 2>&1 && { echo "$g"; return 0; }
    done
    return 0
}
# wait_for SECONDS WHAT CMD...: poll CMD every 0.3 s, bounded.
wait_for() {
    local limit=$1 what=$2 end; shift 2
    end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || { log "timed out after ${limit}s waiting for: $what"; return 1; }
        sleep 0.3
    done
}
has_vip() { vmc "$1" 10 'tbctl has-vip'; }
# ev G AFTER_MS REGEX: epoch ms of the first line of G's twinbeat log (ttyS1) at or after
# AFTER_MS that matches REGEX (twinbeat prints UTC ISO timestamps); empty if none.
ev() {
    local g=$1 after=$2 re=$3 ts rest ms
    while read -r ts rest; do
        [[ $ts == 20*Z ]] || continue
        ms=$(date -d "$ts" +%s%3N) || continue
        if ((ms >= after)); then echo "$ms"; return 0; fi
    done < <(grep -a -E -- "$re" "$LOGS/$g-ttyS1.log")
    return 0
}
# ev_count G AFTER_MS REGEX: how many matching lines at or after AFTER_MS.
ev_count() {
    local g=$1 after=$2 re=$3 ts rest n=0
    while read -r ts rest; do
        [[ $ts == 20*Z ]] || continue
        (($(date -d "$ts" +%s%3N) >= after)) && n=$((n + 1))
    done < <(grep -a -E -- "$re" "$LOGS/$g-ttyS1.log")
    echo "$n"
}
# timeline G FROM_MS TO_MS: G's twinbeat log between the two (without the once-a-second
# command lines), each line prefixed with its offset from FROM_MS.
timeline() {
    local g=$1 from=$2 to=$3 ts rest ms
    while read -r ts rest; do
        [[ $ts == 20*Z ]] || continue
        ms=$(date -d "$ts" +%s%3N) || continue
        ((ms >= from && ms <= to)) || continue
        printf '    %+8d ms  %s\n' $((ms - from)) "${rest:0:170}"
    done < <(grep -a -v -E 'ran command|announced address' "$LOGS/$g-ttyS1.log") >&2
}
# acks_between FROM_MS TO_MS: the client's acknowledged-write timestamps in that window.
acks_between() {
    # ttyS1 is a terminal in the guest: lines end in CR LF.
    awk -v f="$1" -v t="$2" '{ sub(/\r$/, "") } $1 == "ACK" && $3 + 0 >= f + 0 && $3 + 0 <= t + 0 { print $3 }' \
        "$LOGS/c-ttyS1.log"
}
# write_gap FROM_MS TO_MS: the longest pause between consecutive acknowledged writes.
write_gap() {
    acks_between "$1" "$2" | awk 'NR > 1 && $1 - p > m { m = $1 - p } { p = $1 } END { print m + 0 }'
}
first_ack_after() { acks_between "$1" 99999999999999 | head -n 1; }
# drbd_kernel G REGEX: the guest kernel's DRBD lines (ISO times) matching REGEX.
drbd_kernel() { vmc "$1" 15 "dmesg --time-format iso | grep -E '$2'" || true; }
# client_check WHAT: every acknowledged write is in the table, read through the VIP.
client_check() {
    local out
    if out=$(vmc c 30 'tbctl check'); then
        check_ok "$1: every acknowledged write is present ($out)"
    else
        fail "$1: acknowledged writes missing ($out)"
    fi
}
wait_acks_resume() {  # wait_acks_resume AFTER_MS SECONDS
    local end=$((SECONDS + $2))
    until [[ -n $(first_ack_after "$1") ]]; do
        ((SECONDS < end)) || return 1
        sleep 0.3
    done
}

# ---- 1: the active guest is killed ----------------------------------------------------------
scenario_1() {
    log "=== scenario 1: the active guest is killed (qemu SIGKILL) ==="
    local k s t_kill t_vip t_resume t_det t_prom t_act attempts last_before
    k=$(active_node)
    [[ -n $k ]] || fail "1: no active node before the kill"
    s=$(other "$k")
    sleep 3  # a few seconds of steady writes before the kill, for the gap figure
    last_before=$(vmc c 10 'tbctl acked-count')
    t_kill=$(now_ms)
    kill_guest "$k"
    KILLED=$k
    log "killed guest $k (qemu SIGKILL); survivor $s"
    wait_for 120 "node $s to hold the VIP" has_vip "$s" || fail "1: $s did not take over within 120 s"
    t_vip=$(now_ms)
    wait_acks_resume "$t_kill" 60 || fail "1: the client's writes did not resume within 60 s"
    t_resume=$(first_ack_after "$t_kill")
    sleep 2
    log "survivor $s's twinbeat log from the kill on (ms after the kill):"
    timeline "$s" "$t_kill" "$t_vip"
    log "survivor $s's kernel (DRBD):"
    drbd_kernel "$s" 'drbd r0: (PingAck|conn\( |peer\( |role\( |susp|pdsk)' | tail -n 12 | sed 's/^/    /' >&2
    vmq "$s" 10 'tbctl status'
    t_det=$(ev "$s" "$t_kill" 'state change from=standby')
    t_prom=$(ev "$s" "$t_kill" 'drbd resource is Primary')
    t_act=$(ev "$s" "$t_kill" 'state change from=acquiring to=active')
    attempts=$(grep -a 'drbd resource is Primary' "$LOGS/$s-ttyS1.log" | tail -n 1 | sed -n 's/.*attempts=\([0-9]*\).*/\1/p')
    fig "1 detection (kill -> standby leaves)" "$(secs $((t_det - t_kill)))"
    fig "1 kill -> DRBD allowed promotion" "$(secs $((t_prom - t_kill))) (drbdadm primary attempts: ${attempts:-?})"
    fig "1 takeover steps" "$(vmc "$s" 10 'tbctl status' | grep -E '^ +\+r0' | tail -n 1 | sed 's/^ *//')"
    fig "1 kill -> active (daemon log)" "$(secs $((t_act - t_kill)))"
    fig "1 kill -> VIP seen by the host" "$(secs $((t_vip - t_kill)))"
    fig "1 kill -> first write acked" "$(secs $((t_resume - t_kill)))"
    fig "1 client write gap" "$(secs "$(write_gap $((t_kill - 5000)) $((t_resume + 5000)))")"
    fig "1 writes acked before the kill" "$last_before"
    client_check "1"
}

# ---- 2: twinbeat standby both ways ----------------------------------------------------------
standby_once() {  # standby_once FROM
    local x=$1 y t0 t1 t_resume out
    y=$(other "$x")
    t0=$(now_ms)
    out=$(vmc "$x" 200 'tbctl standby --timeout 180') || fail "2: twinbeat standby on $x failed: $out"
    t1=$(now_ms)
    printf '%s\n' "$out" | sed "s/^/    [$x] /" >&2
    wait_for 60 "node $y to hold the VIP" has_vip "$y" || fail "2: VIP not on $y after standby on $x"
    has_vip "$x" >/dev/null 2>&1 && fail "2: VIP on both $x and $y"
    [[ $(vmc "$x" 10 'tbctl role') == Secondary/Primary ]] || fail "2: DRBD on $x is not Secondary/Primary"
    wait_acks_resume "$t1" 60 || fail "2: writes did not resume after standby $x -> $y"
    t_resume=$(first_ack_after "$t1")
    sleep 2
    log "node $x (handing off) and $y (taking over), ms after the standby command:"
    timeline "$x" "$t0" "$t1"
    timeline "$y" "$t0" "$t1"
    fig "2 standby $x->$y command duration" "$(secs $((t1 - t0)))"
    fig "2 standby $x->$y release steps" "$(vmc "$x" 10 'tbctl status' | grep -E '^ +-' | tail -n 1 | sed 's/^ *//')"
    fig "2 standby $x->$y acquire steps" "$(vmc "$y" 10 'tbctl status' | grep -E '^ +\+r0' | tail -n 1 | sed 's/^ *//')"
    fig "2 standby $x->$y client write gap" "$(secs "$(write_gap $((t0 - 5000)) $((t_resume + 5000)))")"
}
scenario_2() {
    log "=== scenario 2: twinbeat standby both ways ==="
    local x
    if ! qemu_alive a || ! qemu_alive b; then fail "2 needs both nodes up"; fi
    x=$(active_node)
    [[ -n $x ]] || fail "2: no active node"
    standby_once "$x"
    standby_once "$(other "$x")"
    client_check "2"
}

# ---- 3: the killed node comes back ------------------------------------------------------------
peer_disk() {  # peer_disk G: the peer's disk state as G's twinbeat reports it
    vmc "$1" 10 'tbctl status' | sed -n 's/^ *peer .*, disk \([A-Za-z]*\).*/\1/p'
}
scenario_3() {
    log "=== scenario 3: the old primary comes back ==="
    local k=${KILLED:-} s t0 t_up t_conn seen=() last="" d end t_sync_start="" t_sync_end="" act
    [[ -n $k ]] || { k=$(active_node); k=$(other "$k"); kill_guest "$k"; }
    s=$(other "$k")
    has_vip "$s" >/dev/null || fail "3: $s is not active"
    t0=$(now_ms)
    boot "$k"
    wait_ready "$k"
    guest_clock_sync "$k"
    fig "3 reboot of $k to a ready shell" "${BOOT_S[$k]} s"
    # As at a node's boot: twinbeat, then DRBD (see run.sh for why in that order).
    vmq "$k" 30 'tbctl tb-start'
    t_up=$(now_ms)
    vmq "$k" 30 'tbctl drbd-up'
    end=$((SECONDS + 240))
    while :; do
        d=$(peer_disk "$s")
        if [[ $d != "$last" ]]; then
            seen+=("$d@+$(($(now_ms) - t_up))ms")
            log "  $s's twinbeat sees the peer's disk: $d"
            [[ $d == Inconsistent ]] && t_sync_start=$(now_ms)
            [[ $d == UpToDate && -n $t_sync_start ]] && t_sync_end=$(now_ms)
            last=$d
        fi
        [[ $d == UpToDate && $(vmc "$k" 10 'tbctl role') == Secondary/Primary ]] && break
        ((SECONDS < end)) || fail "3: $k did not rejoin UpToDate within 240 s (last seen: $d)"
        sleep 0.3
    done
    t_conn=$(now_ms)
    log "$k's kernel (DRBD resync):"
    drbd_kernel "$k" 'drbd r0: (conn\( |Began resync|Resync done|pdsk|disk\()' | tail -n 10 | sed 's/^/    /' >&2
    fig "3 peer disk as seen by $s" "${seen[*]}"
    fig "3 drbdadm up -> UpToDate/Secondary" "$(secs $((t_conn - t_up)))"
    [[ -n $t_sync_end ]] && fig "3 resync (Inconsistent seen -> UpToDate)" "$(secs $((t_sync_end - t_sync_start)))"
    [[ -n $t_sync_start ]] || log "note: no Inconsistent state was sampled (resync shorter than the 0.3 s poll?)"
    log "watching 15 s for an automatic failback (must not happen; auto-failback = false)"
    sleep 15
    act=$(active_node)
    [[ $act == "$s" ]] || fail "3: the service moved to '${act:-nobody}' (automatic failback?)"
    [[ $(vmc "$k" 10 'tbctl role') == Secondary/Primary ]] || fail "3: $k is not Secondary"
    check_ok "3: $k rejoined as Secondary, UpToDate; no failback ($s still active)"
    vmq "$k" 10 'tbctl status'
    KILLED=
    client_check "3"
}
