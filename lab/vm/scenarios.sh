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
active_node_is_set() { [[ -n $(active_node) ]]; }
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
# fence_peer_result G: the last answer of twinbeat's fence-peer handler in G's kernel log
# (DRBD 8.4: "fence-peer helper returned 4 (peer was fenced)"), or "not called".
fence_peer_result() {
    local line
    line=$(drbd_kernel "$1" 'fence-peer helper (returned|broken)' | tail -n 1)
    [[ -n $line ]] || { echo "not called"; return 0; }
    echo "${line#*fence-peer helper }"
}
# power_fence_since MS: what the lab's power switch (oob_serve) did since MS, from fence.log.
power_fence_since() {
    awk -v s="$1" '$1 + 0 >= s + 0 {
            if (/ asks to power /) { n++; if (!first) first = $1 - s }
            if (/ powered off /) { done = $1 - s; took = $(NF - 1) }
        }
        END {
            if (!n) { print "no fence requested"; exit }
            sub(/^\(/, "", took)
            printf "%d request(s); first +%d ms after, powered off at +%d ms (switch %s ms)\n", n, first, done, took
        }' "$LOGS/fence.log" 2>/dev/null || echo "no fence log"
}
rel_ms() { if [[ -n $1 ]]; then echo "+$(($1 - $2)) ms"; else echo "not seen"; fi; }
# fence_timeline N X Y CUT_MS: from the daemons' logs, when X's fence-peer handler reached its
# daemon, when Y ran `drbdadm outdate` and when X's handler had its answer (ms after the cut).
fence_timeline() {
    local n=$1 x=$2 y=$3 cut=$4 asked out answered
    asked=$(ev "$x" "$cut" "DRBD's fence-peer handler asks to outdate the peer")
    out=$(ev "$y" "$cut" 'drbd disk is Outdated')
    answered=$(ev "$x" "$cut" 'fence-peer request finished')
    fig "$n fence-peer timeline (after cut)" "handler at $x's daemon $(rel_ms "$asked" "$cut"), $y outdated $(rel_ms "$out" "$cut"), answer $(rel_ms "$answered" "$cut")"
}
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

# node_start G: DRBD and twinbeat on a (re)booted node, in the run's order (DRBD_FIRST, run.sh).
node_start() {
    if [[ ${DRBD_FIRST:-1} == 1 ]]; then
        vmq "$1" 30 'tbctl drbd-up'
        vmq "$1" 30 'tbctl tb-start'
    else
        vmq "$1" 30 'tbctl tb-start'
        vmq "$1" 30 'tbctl drbd-up'
    fi
}

# ---- 1: the active guest is killed ----------------------------------------------------------
scenario_1() {
    log "=== scenario 1: the active guest is killed (qemu SIGKILL) ==="
    local k s t_kill t_vip t_resume t_det t_prom t_act attempts last_before
    k=$(active_node)
    [[ -n $k ]] || fail "1: no active node before the kill"
    s=$(other "$k")
    sleep 3  # a few seconds of steady writes before the kill, for the gap figure
    last_before=$(vmc c 10 'tbctl acked-count') || last_before="?"
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
    fig "1 fence-peer on $s (promotion)" "$(fence_peer_result "$s")"
    fig "1 $s fenced the dead peer" "$(power_fence_since "$t_kill")"
    fig "1 writes acked before the kill" "$last_before"
    client_check "1"
}

# ---- 2: twinbeat standby both ways ----------------------------------------------------------
standby_once() {  # standby_once FROM [SCENARIO]
    local x=$1 n=${2:-2} y t0 t1 t_resume out
    y=$(other "$x")
    t0=$(now_ms)
    out=$(vmc "$x" 200 'tbctl standby --timeout 180') || fail "$n: twinbeat standby on $x failed: $out"
    t1=$(now_ms)
    printf '%s\n' "$out" | sed "s/^/    [$x] /" >&2
    wait_for 60 "node $y to hold the VIP" has_vip "$y" || fail "$n: VIP not on $y after standby on $x"
    has_vip "$x" >/dev/null 2>&1 && fail "$n: VIP on both $x and $y"
    [[ $(vmc "$x" 10 'tbctl role') == Secondary/Primary ]] || fail "$n: DRBD on $x is not Secondary/Primary"
    wait_acks_resume "$t1" 60 || fail "$n: writes did not resume after standby $x -> $y"
    t_resume=$(first_ack_after "$t1")
    sleep 2
    log "node $x (handing off) and $y (taking over), ms after the standby command:"
    timeline "$x" "$t0" "$t1"
    timeline "$y" "$t0" "$t1"
    fig "$n standby $x->$y command duration" "$(secs $((t1 - t0)))"
    fig "$n standby $x->$y release steps" "$(vmc "$x" 10 'tbctl status' | grep -E '^ +-' | tail -n 1 | sed 's/^ *//')"
    fig "$n standby $x->$y acquire steps" "$(vmc "$y" 10 'tbctl status' | grep -E '^ +\+r0' | tail -n 1 | sed 's/^ *//')"
    fig "$n standby $x->$y client write gap" "$(secs "$(write_gap $((t0 - 5000)) $((t_resume + 5000)))")"
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
    t_up=$(now_ms)
    node_start "$k"
    end=$((SECONDS + 240))
    while :; do
        d=$(peer_disk "$s") || d="?"  # a slow console answer is no state change
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

# uptodate_returns X Y N: X (killed; the only UpToDate disk) boots and starts while Y (up, its
# disk Outdated) waits; the service must come back (on X, unless Y resynced from X first) and Y
# must resync from X to UpToDate; every acknowledged write is read back. Scenario N's figures.
uptodate_returns() {
    local x=$1 y=$2 n=$3 paused=0 t_x t_vip on t_sync0 t_resume
    # Keep y Inconsistent (resync paused) until x has taken over: otherwise a fast resync can
    # make y UpToDate before x's initdead ends, and y (if preferred) would take the service,
    # which is safe but not what this shows.
    if vmc "$y" 15 'drbdadm pause-sync r0' >/dev/null; then paused=1; else log "note: pause-sync on $y refused; the resync runs at once"; fi
    log "bringing $x (the UpToDate disk) back"
    boot "$x"
    wait_ready "$x"
    guest_clock_sync "$x"
    t_x=$(now_ms)
    node_start "$x"
    wait_for 180 "a node to hold the VIP" active_node_is_set || fail "$n: no node took over within 180 s of $x's start"
    t_vip=$(now_ms)
    on=$(active_node)
    has_vip "$(other "$on")" >/dev/null 2>&1 && fail "$n: VIP on both $x and $y"
    if [[ $on != "$x" ]]; then
        ((paused == 0)) || fail "$n: $y took over while its resync was paused (Inconsistent)"
        log "note: $y resynced before $x's initdead ended and took over (UpToDate by then)"
    fi
    ((paused == 0)) || vmq "$y" 15 'drbdadm resume-sync r0'
    t_sync0=$(now_ms)
    wait_for 240 "$y to resync from $x (UpToDate/UpToDate)" \
        vmc "$y" 10 '[[ $(drbdadm dstate r0) == UpToDate/UpToDate ]]' ||
        fail "$n: $y did not resync from $x within 240 s ($(vmc "$y" 10 'tbctl snap'))"
    [[ $(vmc "$(other "$on")" 10 'tbctl role') == Secondary/Primary ]] || fail "$n: $(other "$on") is not Secondary/Primary after the resync"
    wait_acks_resume "$t_vip" 60 || fail "$n: the client's writes did not resume on $on"
    t_resume=$(first_ack_after "$t_vip")
    log "$x's twinbeat log from its start (ms after the start):"
    timeline "$x" "$t_x" "$t_vip"
    fig "$n reboot of $x to a ready shell" "${BOOT_S[$x]} s"
    fig "$n $x start -> VIP on $on" "$(secs $((t_vip - t_x)))"
    fig "$n $x start -> first write acked" "$(secs $((t_resume - t_x)))"
    fig "$n $y resync done after VIP" "$(secs $(($(now_ms) - t_sync0)))"
    fig "$n writes acked in the whole run" "$(vmc c 10 'tbctl acked-count')"
    KILLED=
    check_ok "$n: the service returned on $on; $y resynced from $x to UpToDate"
    client_check "$n"
}

# never_promoted Y N WATCH_S SINCE_MS: Y (alone, disk Outdated, twinbeat running) is watched
# for WATCH_S seconds: DRBD stays Secondary and no VIP on every sample; from SINCE_MS on its log
# shows no takeover attempt, no promotion, no drbdadm command and no more disk-state reads than
# the once-a-second poll; its status shows the Outdated disk as the reason. Scenario N's checks.
never_promoted() {
    local y=$1 n=$2 watch=$3 since=$4 end snap st blocked n_state n_acq n_prom n_poll n_drbd n_cmd
    log "watching $y for ${watch} s: it must not promote, nor hold the VIP"
    end=$((SECONDS + watch))
    while ((SECONDS < end)); do
        snap=$(vmc "$y" 15 'tbctl snap') || fail "$n: cannot read $y's state"
        [[ $snap == Secondary/* ]] || fail "$n: $y's DRBD left Secondary with an Outdated disk ($snap)"
        [[ $snap == *" -" ]] || fail "$n: $y holds the VIP with an Outdated disk ($snap)"
        sleep 1
    done
    st=$(vmc "$y" 15 'tbctl status') || fail "$n: twinbeat status on $y failed"
    printf '%s\n' "$st" | sed "s/^/    [$y] /" >&2
    blocked=$(printf '%s\n' "$st" | grep -E '^ +blocked' | sed 's/^ *blocked *//')
    grep -qE '^ +disk +Outdated' <<<"$st" || fail "$n: $y's status does not show its disk as Outdated"
    grep -q 'local disk is Outdated; only an UpToDate disk is ever promoted' <<<"$st" ||
        fail "$n: $y's status does not name the Outdated disk as the reason (blocked: ${blocked:-none})"
    n_state=$(ev_count "$y" "$since" 'state change')
    n_acq=$(ev_count "$y" "$since" 'state change .*to=acquiring')
    n_prom=$(ev_count "$y" "$since" 'promoting drbd resource')
    # twinbeat reads the disk state once a second (drbdsetup events2 --now): that is the normal
    # poll, not an attempt. Its actions (primary, secondary) and its fallback read are drbdadm.
    n_poll=$(ev_count "$y" "$since" 'ran command argv=drbdsetup events2 --now')
    n_drbd=$(ev_count "$y" "$since" 'ran command argv=drbdadm ')
    n_cmd=$(ev_count "$y" "$since" 'ran command')
    log "$y's twinbeat log while watched (ms after the watch began):"
    timeline "$y" "$since" "$(now_ms)"
    fig "$n $y alone, Outdated: watched" "${watch} s"
    fig "$n takeover attempts (to=acquiring)" "$n_acq (state changes: $n_state)"
    fig "$n drbd promotions tried" "$n_prom"
    fig "$n drbdadm commands" "$n_drbd (disk-state reads: $n_poll, all commands: $n_cmd)"
    fig "$n status names the reason" "blocked: $blocked"
    ((n_acq == 0 && n_prom == 0)) || fail "$n: $y tried to take over with an Outdated disk"
    ((n_drbd == 0)) || fail "$n: $n_drbd drbdadm commands on $y while it may not promote: a retry loop?"
    # A retry storm would also show as more reads than the once-a-second poll (+ start-up).
    ((n_poll <= watch * 3 / 2 + 10)) || fail "$n: $n_poll disk-state reads in ~${watch} s: a loop?"
    check_ok "$n: $y (Outdated, alone) never promoted; status says why; no drbdadm command, $n_poll state reads"
}

# ---- 4: an Outdated disk on the only node up is never promoted -------------------------------
# The standby y is stopped and its disk outdated offline (its metadata says "stale"); the active
# x goes on writing alone for a while (so y really is behind), then x is killed. y comes up
# alone: twinbeat must refuse the takeover, say why, and not retry in a loop. Then x comes back
# and the service returns there; y resyncs from it.
S4_WATCH_S=${S4_WATCH_S:-40}  # > initdead (20 s) + deadtime (2 s) + a margin for TCG stalls
scenario_4() {
    log "=== scenario 4: an Outdated disk on the only node up is never promoted ==="
    local x y t_alone t_kill t_start snap acked_alone
    if ! qemu_alive a || ! qemu_alive b; then fail "4 needs both nodes up"; fi
    x=$(active_node)
    [[ -n $x ]] || fail "4: no active node"
    y=$(other "$x")
    vmq "$y" 120 'tbctl tb-stop'
    vmq "$y" 30 'tbctl drbd-down'
    vmq "$y" 30 'tbctl drbd-outdate'
    # x writes alone for a few seconds: these writes exist on x's disk only.
    t_alone=$(now_ms)
    sleep 3
    acked_alone=$(acks_between "$t_alone" 99999999999999 | wc -l)
    ((acked_alone > 0)) || fail "4: no write acknowledged by $x while $y was down"
    t_kill=$(now_ms)
    kill_guest "$x"
    KILLED=$x
    log "killed $x (active, the only UpToDate disk); $y is Outdated, $acked_alone writes acked on $x alone"
    vmq "$y" 30 'tbctl drbd-up'
    snap=$(vmc "$y" 15 'tbctl snap') || fail "4: cannot read $y's state"
    log "  $y alone: $snap"
    [[ $snap == "Secondary/Unknown WFConnection Outdated/DUnknown -" ]] ||
        fail "4: $y's DRBD is not Secondary, WFConnection, Outdated after the outdate ($snap)"
    t_start=$(now_ms)
    vmq "$y" 30 'tbctl tb-start'
    never_promoted "$y" 4 "$S4_WATCH_S" "$t_start"

    uptodate_returns "$x" "$y" 4
}

# ---- 5: DRBD's replication link cut, heartbeats up ------------------------------------------
# repl0 (DRBD only) is switched off on both qemus (HMP set_link); hb0 and lan0 stay up, so
# twinbeat sees a healthy peer. The primary goes on writing with the peer disconnected. With
# DRBD's fencing policy (the default, DRBD_FENCING=1) the primary's DRBD runs twinbeat's
# fence-peer handler, which asks the standby's daemon over the heartbeat links to outdate its
# disk: the standby's disk must read Outdated during the cut and the handler must return 4.
# Without it (DRBD_FENCING=0) the standby keeps calling its stale disk UpToDate. The checks:
# never two writable primaries (DRBD Primary or VIP on both), no takeover, and every write the
# client saw acknowledged during the cut survives the reconnection's resync, also on the other
# node (a standby to it after the resync reads them there).
S5_CUT_S=${S5_CUT_S:-20}
s5_sample() {  # s5_sample: one "a-snap | b-snap" line; fails on two primaries or two VIPs
    local sa sb
    sa=$(vmc a 15 'tbctl snap') || sa="? ? ? ?"
    sb=$(vmc b 15 'tbctl snap') || sb="? ? ? ?"
    echo "a: $sa | b: $sb"
    [[ $sa == Primary/* && $sb == Primary/* ]] && fail "5: both nodes are DRBD Primary (a: $sa, b: $sb)"
    [[ $sa == *" vip" && $sb == *" vip" ]] && fail "5: both nodes hold the VIP (a: $sa, b: $sb)"
    return 0
}
scenario_5() {
    log "=== scenario 5: DRBD's replication link is cut, the heartbeat links stay up ==="
    local x y t_cut t_on end line last="" seen=() t_nf t_conn n_acked_cut gap st_x st_y n_y t_outdated="" fp
    if ! qemu_alive a || ! qemu_alive b; then fail "5 needs both nodes up"; fi
    x=$(active_node)
    [[ -n $x ]] || fail "5: no active node"
    y=$(other "$x")
    [[ $(vmc "$x" 10 'drbdadm dstate r0') == UpToDate/UpToDate ]] || fail "5: DRBD not UpToDate/UpToDate before the cut"
    sleep 2
    t_cut=$(now_ms)
    monitor a 'set_link repl off'
    monitor b 'set_link repl off'
    log "repl0 off on both guests (hb0, lan0 up); sampling both nodes for ${S5_CUT_S} s"
    end=$((SECONDS + S5_CUT_S))
    while ((SECONDS < end)); do
        line=$(s5_sample) || exit 1
        if [[ $line != "$last" ]]; then
            seen+=("+$(($(now_ms) - t_cut))ms $line")
            log "  +$(($(now_ms) - t_cut)) ms  $line"
            last=$line
        fi
        [[ -z $t_outdated && $line == *"$y: Secondary/"*" Outdated/"* ]] && t_outdated=$(now_ms)
        sleep 0.5
    done
    st_x=$(vmc "$x" 15 'tbctl status') || st_x="(no answer)"
    st_y=$(vmc "$y" 15 'tbctl status') || st_y="(no answer)"
    printf '%s\n' "$st_x" | sed "s/^/    [$x] /" >&2
    printf '%s\n' "$st_y" | sed "s/^/    [$y] /" >&2
    t_on=$(now_ms)
    n_acked_cut=$(acks_between "$t_cut" "$t_on" | wc -l)
    gap=$(write_gap "$t_cut" "$t_on")
    log "$x's kernel (DRBD) during the cut:"
    drbd_kernel "$x" 'drbd r0: (PingAck|conn\( |peer\( |pdsk|susp|fence|helper)' | tail -n 8 | sed 's/^/    /' >&2
    t_nf=$(vmc "$x" 15 "dmesg --time-format iso | grep -E 'drbd r0: .*conn\\( Connected -> (NetworkFailure|Timeout|BrokenPipe)' | tail -n 1 | cut -d' ' -f1" || true)
    n_y=$(ev_count "$y" "$t_cut" 'state change')
    monitor a 'set_link repl on'
    monitor b 'set_link repl on'
    log "repl0 on again; waiting for DRBD to reconnect and resync"
    wait_for 240 "DRBD Connected and UpToDate/UpToDate on $y" \
        vmc "$y" 10 '[[ $(drbdadm cstate r0) == Connected && $(drbdadm dstate r0) == UpToDate/UpToDate ]]' ||
        fail "5: DRBD did not reconnect and resync within 240 s ($(s5_sample))"
    t_conn=$(now_ms)
    s5_sample >/dev/null
    log "$y's kernel (DRBD) on reconnection:"
    drbd_kernel "$y" 'drbd r0: (conn\( |Began resync|Resync done|pdsk|disk\(|Split-Brain|uuid)' | tail -n 8 | sed 's/^/    /' >&2
    fig "5 states seen during the cut" "${#seen[@]} distinct samples (log above)"
    fig "5 DRBD noticed the cut (x kernel)" "$(if [[ -n $t_nf ]]; then secs $(($(date -d "${t_nf/,/.}" +%s%3N) - t_cut)); echo " after the cut"; else echo "not seen"; fi)"
    fig "5 writes acked during the cut" "$n_acked_cut in $(secs $((t_on - t_cut))) (on $x only)"
    fig "5 client write gap during the cut" "$(secs "$gap")"
    fig "5 $y state changes during the cut" "$n_y"
    fig "5 $x status: disk, peer" "$(grep -E '^ +(disk|peer) ' <<<"$st_x" | sed 's/^ *//' | tr -s ' ' | paste -sd';')"
    fig "5 $y status: disk, peer" "$(grep -E '^ +(disk|peer) ' <<<"$st_y" | sed 's/^ *//' | tr -s ' ' | paste -sd';')"
    fig "5 link on -> Connected UpToDate" "$(secs $((t_conn - t_on)))"
    fp=$(fence_peer_result "$x")
    fig "5 fence-peer on $x (link lost)" "$fp"
    fence_timeline 5 "$x" "$y" "$t_cut"
    fig "5 $y disk Outdated (sampled)" "$(if [[ -n $t_outdated ]]; then echo "$(secs $((t_outdated - t_cut))) after the cut"; else echo "never"; fi)"
    ((n_y == 0)) || fail "5: $y changed state during the cut (heartbeats were up)"
    if [[ ${DRBD_FENCING:-1} == 1 ]]; then
        # The samples are only a view (on a starved host one round of console reads can take
        # 15 s); the evidence is DRBD's handler answer, y's daemon log and y's status.
        [[ $fp == "returned 4 "* ]] || fail "5: $x's fence-peer handler did not outdate $y (DRBD: $fp)"
        [[ -n $(ev "$y" "$t_cut" 'drbd disk is Outdated') ]] || fail "5: $y's daemon never outdated its disk during the cut"
        grep -qE '^ +disk +Outdated' <<<"$st_y" || fail "5: $y's twinbeat status does not show its disk Outdated during the cut"
        check_ok "5: DRBD's fence-peer went through twinbeat: $y outdated over the heartbeat links (exit 4)"
    fi
    has_vip "$y" >/dev/null 2>&1 && fail "5: $y holds the VIP"
    check_ok "5: one writable primary throughout ($x); $y stayed standby; DRBD reconnected and resynced"
    client_check "5 (on $x)"
    # The writes acknowledged during the cut were on x's disk only; after the resync they must be
    # on y's too: hand the service to y and read them there.
    standby_once "$x" 5
    client_check "5 (on $y after the resync)"
}

# ---- 6: the replication link cut, then the primary dies -------------------------------------
# As 5, but before the link comes back the primary x is killed. The standby y holds a disk that
# misses every write of the cut. With DRBD fencing through twinbeat, y's disk was outdated at
# the cut, so y must never promote it (the writes acknowledged on x alone would be lost); the
# service waits for x, which comes back, takes over, and y resyncs from it. With
# DRBD_FENCING=0 this scenario fails on purpose: y promotes its stale disk after deadtime, and
# the check that follows counts the acknowledged writes it lost.
S6_WATCH_S=${S6_WATCH_S:-30}  # deadtime (2 s) + DRBD's ping timeout + margins for TCG stalls
scenario_6() {
    log "=== scenario 6: the replication link is cut, then the primary dies ==="
    local x y t_cut t_out t_kill acked_cut
    if ! qemu_alive a || ! qemu_alive b; then fail "6 needs both nodes up"; fi
    x=$(active_node)
    [[ -n $x ]] || fail "6: no active node"
    y=$(other "$x")
    [[ $(vmc "$x" 10 'drbdadm dstate r0') == UpToDate/UpToDate ]] || fail "6: DRBD not UpToDate/UpToDate before the cut"
    t_cut=$(now_ms)
    monitor a 'set_link repl off'
    monitor b 'set_link repl off'
    log "repl0 off on both guests (hb0, lan0 up)"
    if [[ ${DRBD_FENCING:-1} == 1 ]]; then
        wait_for 60 "$y's disk to be Outdated (fence-peer through twinbeat)" \
            vmc "$y" 10 '[[ $(drbdadm dstate r0) == Outdated/* ]]' ||
            fail "6: $y's disk was not outdated within 60 s of the cut ($(vmc "$y" 10 'tbctl snap'))"
        t_out=$(now_ms)
        fig "6 cut -> $y Outdated (polled)" "$(secs $((t_out - t_cut)))"
        fence_timeline 6 "$x" "$y" "$t_cut"
    else
        log "DRBD_FENCING=0: nobody outdates $y; waiting 5 s for DRBD to notice the cut"
        sleep 5
    fi
    # A few more seconds of writes that exist on x's disk only.
    sleep 3
    acked_cut=$(acks_between "$t_cut" 99999999999999 | wc -l)
    ((acked_cut > 0)) || fail "6: no write acknowledged by $x during the cut"
    t_kill=$(now_ms)
    kill_guest "$x"
    KILLED=$x
    log "killed $x (the only disk with the cut's $acked_cut acknowledged writes); $y: $(vmc "$y" 10 'tbctl snap')"
    fig "6 writes acked on $x alone" "$acked_cut"
    if [[ ${DRBD_FENCING:-1} == 0 ]]; then
        # The negative control: say how much the stale promotion lost, then fail.
        wait_for 60 "$y to take over with its stale disk" has_vip "$y" ||
            fail "6 (DRBD_FENCING=0): $y did not take over within 60 s either ($(vmc "$y" 10 'tbctl snap'))"
        fig "6 kill -> stale $y active" "$(secs $(($(now_ms) - t_kill)))"
        fail "6 (DRBD_FENCING=0): $y promoted its stale disk: $(vmc c 30 'tbctl check' || true)"
    fi
    never_promoted "$y" 6 "$S6_WATCH_S" "$t_kill"
    monitor "$y" 'set_link repl on'
    uptodate_returns "$x" "$y" 6
}
