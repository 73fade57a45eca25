# shellcheck shell=bash
# shellcheck disable=SC2016  # single-quoted commands run in the guest shell
# The nemesis on real DRBD (sourced by run.sh: `sudo lab/vm/run.sh campaign --seed S --runs N`).
#
# Each run draws one to CAMP_MAX_FAULTS faults from its seed and applies them one after another
# with random gaps, each held for its drawn length and then healed, while the client writes
# through the VIP: a power cut of a guest (qemu SIGKILL, booted again at the heal), a whole
# guest frozen (qemu `stop`/`cont`: kernel, DRBD and twinbeat together), kill -9 of a daemon
# (restarted), a paused daemon or database (SIGSTOP), the heartbeat cable, DRBD's replication
# link or the LAN cut (both guests' NICs down), one node isolated (all three links), and
# `twinbeat standby`/`takeover` fired in the background. Then it checks:
#   - the service is back (one node holds the VIP and a write is acknowledged) within
#     CAMP_RECOVERY_S of the last heal, and the pair settles (one active, one standby, DRBD
#     Connected and UpToDate/UpToDate on both) within CAMP_SETTLE_S;
#   - no acknowledged write is missing (read through the VIP at the end);
#   - one writer at a time as the client saw it: the node that acknowledged each write (the
#     writer asks `@@hostname` on the same connection) changes no more often than takeovers
#     completed in the run (a client that went back to a node it had left wrote to two
#     writable databases);
#   - DRBD split brains (both nodes Primary while disconnected, found by DRBD on reconnection)
#     are counted and must have been resolved by r0.res's after-sb policies (see there).
# Schedules come from a generator seeded with (seed, run), so `--seed S --only R` replays run R.
# Nothing here decides anything about twinbeat: sleeps are the faults' drawn lengths.

CAMP_RECOVERY_S=${CAMP_RECOVERY_S:-180}
CAMP_SETTLE_S=${CAMP_SETTLE_S:-420}
CAMP_MAX_FAULTS=${CAMP_MAX_FAULTS:-3}

# A counter-based generator (a Weyl sequence through murmur3's 32-bit finalizer), in plain bash
# arithmetic: bash's own $RANDOM changed its generator in 5.1, this one replays the same anywhere.
# Products are masked back to 32 bits (bash's 64-bit arithmetic keeps the low bits exact).
mix32() {
    local x=$(($1 & 0xffffffff))
    x=$((x ^ (x >> 16)))
    x=$(((x * 0x85ebca6b) & 0xffffffff))
    x=$((x ^ (x >> 13)))
    x=$(((x * 0xc2b2ae35) & 0xffffffff))
    MIX=$((x ^ (x >> 16)))
}
rng_seed() {
    mix32 "$1"
    mix32 $((MIX ^ (($2 * 0x9e3779b9) & 0xffffffff)))
    RNG_S=$MIX
}
# rng_range LO HI: RN in LO..HI.
rng_range() {
    RNG_S=$(((RNG_S + 0x9e3779b9) & 0xffffffff))
    mix32 "$RNG_S"
    RN=$(($1 + MIX % ($2 - $1 + 1)))
}

# camp_schedule SEED RUN: fills PLAN with "GAP_MS KIND TARGET PARAM" lines.
camp_schedule() {
    local n i gap kind target param
    PLAN=()
    rng_seed "$1" "$2"
    rng_range 1 "$CAMP_MAX_FAULTS"
    n=$RN
    for ((i = 0; i < n; i++)); do
        rng_range 0 3000; gap=$RN
        rng_range 0 2; target=$([[ $RN -lt 2 ]] && echo active || echo standby)
        rng_range 0 9; kind=$RN
        case $kind in
            0) kind=power-cut; rng_range 2000 8000 ;;
            1) kind=freeze; rng_range 300 6000 ;;
            2) kind=kill-daemon; rng_range 300 4000 ;;
            3) kind=pause-daemon; rng_range 500 5000 ;;
            4) kind=cut-hb; rng_range 500 8000 ;;
            5) kind=cut-repl; rng_range 2000 15000 ;;
            6) kind=cut-lan; rng_range 500 6000 ;;
            7) kind=isolate; rng_range 1000 8000 ;;
            8) kind=operator; rng_range 0 1 ;;
            9) kind=pause-db; rng_range 300 3000 ;;
        esac
        param=$RN
        [[ $kind == operator ]] && param=$([[ $param == 0 ]] && echo standby || echo takeover)
        PLAN+=("$gap $kind $target $param")
    done
}

camp_target() {  # camp_target active|standby: the guest letter, resolved when applied
    local act
    act=$(active_node)
    [[ -n $act ]] || act=a
    if [[ $1 == active ]]; then echo "$act"; else other "$act"; fi
}
links() {  # links on|off GUEST NIC...
    local state=$1 g=$2 nic
    shift 2
    # A guest fenced meanwhile has no monitor any more: nothing to switch.
    for nic in "$@"; do
        if qemu_alive "$g"; then monitor "$g" "set_link $nic $state" || true; fi
    done
}
# off_target KIND G: G was switched off by its peer's fence earlier in the run; the fault has
# nothing to hit (said in WHAT). Fails when G is up.
off_target() {
    qemu_alive "$2" && return 1
    WHAT="$1 on $2 not done: $2 is off (fenced earlier in this run)"
    return 0
}
hold() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }

# camp_apply KIND TARGET PARAM: applies one fault and heals it; WHAT says what it did. Runs in
# the campaign's shell (no subshell): a lab failure in here (a guest that does not boot) ends the
# campaign through die, with the run's log saying why.
camp_apply() {
    local kind=$1 t=$2 p=$3 g
    case $kind in
        power-cut)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            kill_guest "$g" || die "campaign: cannot power-cut guest $g"
            hold "$p"
            power_on "$g"
            WHAT="power cut $g for $p ms (booted again)"
            ;;
        freeze)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            monitor "$g" stop || true
            hold "$p"
            WHAT="froze guest $g for $p ms"
            if qemu_alive "$g"; then
                monitor "$g" cont || true
                # A stopped TCG guest's clock stands still: set it again so log times stay
                # comparable.
                guest_clock_sync "$g" || true
            else
                WHAT+=" (fenced while frozen)"
            fi
            ;;
        kill-daemon)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            vmq "$g" 30 'tbctl tb-kill'
            hold "$p"
            WHAT="kill -9 daemon $g, restarted after $p ms"
            vm_try "$g" 30 'tbctl tb-start'
            ;;
        pause-daemon)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            vmq "$g" 15 'tbctl tb-signal STOP'
            hold "$p"
            WHAT="SIGSTOP daemon $g for $p ms"
            vm_try "$g" 15 'tbctl tb-signal CONT'
            ;;
        cut-hb | cut-repl | cut-lan)
            local nic=${kind#cut-}
            links off a "$nic"
            links off b "$nic"
            hold "$p"
            links on a "$nic"
            links on b "$nic"
            WHAT="cut $nic (both ends) for $p ms"
            ;;
        isolate)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            links off "$g" hb repl lan
            hold "$p"
            links on "$g" hb repl lan
            WHAT="isolated $g (hb, repl, lan) for $p ms"
            ;;
        operator)
            g=$(camp_target "$t")
            off_target "$kind" "$g" && return 0
            vmq "$g" 15 "tbctl op $p"
            WHAT="twinbeat $p on $g (in the background)"
            ;;
        pause-db)
            g=$(camp_target active)
            if ! vmc "$g" 15 'tbctl db-signal STOP' >/dev/null 2>&1; then
                WHAT="SIGSTOP mariadbd on $g: none running, skipped"
                return 0
            fi
            hold "$p"
            WHAT="SIGSTOP mariadbd on $g for $p ms"
            # twinbeat may have replaced it meanwhile: resume whatever runs now.
            vmc "$g" 15 'tbctl db-signal CONT' >/dev/null 2>&1 || true
            ;;
        *) die "campaign: unknown fault '$kind'" ;;
    esac
}
# vm_try G SECONDS CMD: the second half of a fault; the guest may have been powered off by its
# peer's fence meanwhile, which is said in WHAT instead of ending the campaign.
vm_try() {
    local out rc=0
    if ! qemu_alive "$1"; then
        WHAT+=" (not done: $1 was fenced meanwhile)"
        return 0
    fi
    out=$(vmc "$@") || rc=$?
    [[ -z $out ]] || printf '%s\n' "$out" | sed "s/^/    [$1] /" >&2
    # 125: the guest died while the command ran (its peer's fence landed just then).
    if ((rc == 125)) && ! qemu_alive "$1"; then
        WHAT+=" (cut short: $1 was fenced meanwhile)"
        return 0
    fi
    ((rc == 0)) || die "guest $1: '$3' failed (status $rc)"
}
# revive_fenced: power on every node guest that is down (its peer's fence switched it off);
# notes it in the caller's `notes`. Always succeeds.
revive_fenced() {
    local g
    for g in a b; do
        qemu_alive "$g" && continue
        log "  guest $g was fenced: powering it on again"
        power_on "$g"
        notes+=("fenced $g: powered on again")
    done
    return 0
}
# power_on G: boot guest G and start DRBD and twinbeat on it, as after a power cut.
power_on() {
    boot "$1"
    wait_ready "$1"
    guest_clock_sync "$1"
    node_start "$1"
}

# settled: both guests up, one daemon active and one standby, DRBD Connected and
# UpToDate/UpToDate on both. Sets SETTLE_WHY to what is missing.
settled() {
    local g st=() dr
    for g in a b; do
        qemu_alive "$g" || { SETTLE_WHY="guest $g is down"; return 1; }
        st+=("$(vmc "$g" 10 'tbctl state' 2>/dev/null || echo '?')")
        dr=$(vmc "$g" 10 'echo "$(drbdadm cstate r0) $(drbdadm dstate r0)"' 2>/dev/null || echo '?')
        [[ $dr == "Connected UpToDate/UpToDate" ]] || { SETTLE_WHY="DRBD on $g: $dr"; return 1; }
    done
    [[ "${st[*]}" == "active standby" || "${st[*]}" == "standby active" ]] ||
        { SETTLE_WHY="daemons: a ${st[0]}, b ${st[1]}"; return 1; }
}
service_back_after() {  # service_back_after MS: a node holds the VIP and a write was acked after MS
    [[ -n $(active_node) && -n $(first_ack_after "$1") ]]
}
# ack_hosts FROM TO: the hosts that acknowledged the client's writes in that window, in order.
ack_hosts() {
    awk -v f="$1" -v t="$2" '{ sub(/\r$/, "") } $1 == "ACK" && $3 + 0 >= f + 0 && $3 + 0 <= t + 0 && NF >= 4 { print $4 }' \
        "$LOGS/c-ttyS1.log"
}
# kernel_since_mark G REGEX: lines of G's kernel log after the campaign's last mark (a guest
# booted since has no mark: its whole log counts).
kernel_since_mark() {
    vmc "$1" 15 "dmesg | awk '/TB-CAMPAIGN-MARK/ { n = 0; delete l; next } { l[n++] = \$0 } END { for (i = 0; i < n; i++) print l[i] }' | grep -E '$2'" || true
}

# camp_run SEED RUN: one schedule, its checks; appends a row to CAMP_ROWS and a JSON line.
camp_run() {
    local seed=$1 run=$2 line gap kind t p notes=() start healed back_ms="-" settle_ms="-"
    local verdict=PASS why=() out missing sb sb_lines hosts switches takeovers g outage avail end fences
    camp_schedule "$seed" "$run"
    log "=== campaign seed $seed run $run (replay: run.sh campaign --seed $seed --only $run): ${#PLAN[@]} fault(s) ==="
    for g in a b; do vmc "$g" 10 "echo 'TB-CAMPAIGN-MARK run $run' >/dev/kmsg" >/dev/null || true; done
    start=$(now_ms)
    for line in "${PLAN[@]}"; do
        read -r gap kind t p <<<"$line"
        hold "$gap"
        camp_apply "$kind" "$t" "$p"
        log "  +$(($(now_ms) - start)) ms  $WHAT"
        notes+=("$WHAT")
    done
    # A guest that is down was powered off by its peer's fence: power it on again, as an
    # operator would once the cause is found. A fence can land after the last heal (the switch
    # is slow, the survivor decided before the heal), so this is checked while waiting too.
    revive_fenced
    healed=$(now_ms)
    local end_back=$((SECONDS + CAMP_RECOVERY_S))
    until service_back_after "$healed" >/dev/null 2>&1; do
        revive_fenced
        if ((SECONDS >= end_back)); then
            log "timed out after ${CAMP_RECOVERY_S}s waiting for: the service back after the last heal"
            verdict=FAIL why+=("service not back within ${CAMP_RECOVERY_S} s of the last heal")
            break
        fi
        sleep 0.3
    done
    [[ $verdict == FAIL ]] || back_ms=$(($(now_ms) - healed))
    local t0 end_settle=$((SECONDS + CAMP_SETTLE_S))
    t0=$(now_ms)
    until revive_fenced && settled; do
        if ((SECONDS >= end_settle)); then
            verdict=FAIL why+=("not settled within ${CAMP_SETTLE_S} s: $SETTLE_WHY")
            t0=
            break
        fi
        sleep 1
    done
    [[ -z $t0 ]] || settle_ms=$(($(now_ms) - t0))
    end=$(now_ms)
    # Every acknowledged write, read through the VIP.
    if out=$(vmc c 60 'tbctl check'); then :; else
        verdict=FAIL why+=("acknowledged writes missing: $out")
    fi
    missing=$(sed -n 's/.*missing=\([0-9]*\).*/\1/p' <<<"$out")
    # One writer at a time, as the client saw it.
    hosts=$(ack_hosts "$start" "$end" | uniq | paste -sd' ')
    switches=$(($(wc -w <<<"$hosts") - 1))
    ((switches < 0)) && switches=0
    takeovers=$(($(ev_count a "$start" 'state change from=acquiring to=active') + $(ev_count b "$start" 'state change from=acquiring to=active')))
    if ((switches > takeovers)); then
        verdict=FAIL why+=("the client's writes were acknowledged by $hosts: $switches switches but $takeovers takeovers")
    fi
    # DRBD's own verdict on two primaries.
    sb=0 sb_lines=""
    for g in a b; do
        qemu_alive "$g" || continue
        local l n
        l=$(kernel_since_mark "$g" 'Split-Brain|split-brain')
        [[ -z $l ]] && continue
        sb_lines+="$g: ${l//$'\n'/ | } "
        # Both sides log the same split brain: count the node that saw more.
        n=$(grep -c 'Split-Brain detected' <<<"$l" || true)
        ((n > sb)) && sb=$n
    done
    ((sb == 0)) || log "  DRBD split brain(s): $sb_lines"
    fences=$(awk -v s="$start" '$1 + 0 >= s + 0 && / asks to power / { n++ } END { print n + 0 }' "$LOGS/fence.log" 2>/dev/null || echo 0)
    # Figures: longest pause between acknowledged writes, time with writes flowing. The client
    # starts one `mariadb` per write in an emulated guest (0.3-3 s apart on a busy host), so
    # only pauses of CAMP_OUTAGE_MS or more count as the service being down.
    read -r outage avail < <(acks_between "$start" "$end" | awk -v s="$start" -v e="$end" -v o="${CAMP_OUTAGE_MS:-4000}" '
        NR == 1 { first = $1 } NR > 1 { g = $1 - p; if (g > m) m = g; if (g >= o) down += g } { p = $1 }
        END {
            if (NR == 0) { printf "%d 0.0\n", e - s; exit }
            # the stretches before the first and after the last acknowledged write count too
            if (first - s > m) m = first - s; if (e - p > m) m = e - p
            if (first - s >= o) down += first - s; if (e - p >= o) down += e - p
            printf "%d %.1f\n", m, 100 - 100 * down / (e - s)
        }')
    log "  run $run $verdict: back ${back_ms} ms, settled ${settle_ms} ms, longest outage ${outage} ms, writes flowing ${avail} %, acked by: ${hosts:-nobody} (takeovers $takeovers), fences $fences, DRBD split brains $sb${why:+; ${why[*]}}"
    CAMP_ROWS+=("$(printf '%3d  %-4s  %-58s  %6s  %6s  %7s  %5s  %5s  %3s  %s' "$run" "$verdict" \
        "$(printf '%s; ' "${notes[@]}" | cut -c1-58)" "$back_ms" "$outage" "$avail" "${missing:-?}" "$fences" "$sb" "${why[*]}")")
    printf '{"seed":%s,"run":%s,"verdict":"%s","faults":[%s],"back_ms":"%s","settle_ms":"%s","longest_outage_ms":%s,"writes_flowing_pct":%s,"missing":"%s","fences":%s,"drbd_split_brains":%s,"acked_by":"%s","takeovers":%s,"why":"%s"}\n' \
        "$seed" "$run" "$verdict" "$(printf '"%s",' "${notes[@]}" | sed 's/,$//')" "$back_ms" "$settle_ms" \
        "$outage" "$avail" "${missing:-?}" "$fences" "$sb" "$hosts" "$takeovers" "${why[*]//\"/\'}" >>"$LOGS/campaign.jsonl"
    [[ $verdict == PASS ]]
}

# campaign_plans SEED RUNS ONLY: every run's schedule, one line per fault (nothing is started).
campaign_plans() {
    local r list=() line
    if [[ -n $3 ]]; then list=("$3"); else mapfile -t list < <(seq 1 "$2"); fi
    for r in "${list[@]}"; do
        camp_schedule "$1" "$r"
        for line in "${PLAN[@]}"; do printf 'seed %s run %s: %s\n' "$1" "$r" "$line"; done
    done
}

# campaign_main SEED RUNS ONLY: the runs (all, or only ONLY), then the table. Fails if any failed.
campaign_main() {
    local seed=$1 runs=$2 only=$3 r list=() failed=0
    if [[ -n $only ]]; then list=("$only"); else mapfile -t list < <(seq 1 "$runs"); fi
    CAMP_ROWS=()
    : >"$LOGS/campaign.jsonl"
    for r in "${list[@]}"; do
        camp_run "$seed" "$r" || failed=$((failed + 1))
        if ! settled; then
            log "the pair is not settled after run $r ($SETTLE_WHY): asking node a to take over once"
            vmc a 60 'tbctl takeover' >/dev/null 2>&1 || true
            wait_for 240 "the pair to settle" settled ||
                { log "still not settled ($SETTLE_WHY): stopping the campaign"; break; }
        fi
    done
    {
        printf '\nnemesis on real DRBD, seed %s: %d run(s), %d failed\n' "$seed" "${#CAMP_ROWS[@]}" "$failed"
        printf '%3s  %-4s  %-58s  %6s  %6s  %7s  %5s  %5s  %3s  %s\n' run res faults back-ms outage flowing% lost fence split why
        printf '%s\n' "${CAMP_ROWS[@]}"
    } | tee -a "$LOGS/figures.txt" >&2
    ((failed == 0 && ${#CAMP_ROWS[@]} == ${#list[@]}))
}
