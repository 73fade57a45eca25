#!/bin/bash
# run.sh — the tier-2 lab: real DRBD 8.4 (the stock Debian kernel's module) in QEMU guests.
#
#   sudo lab/vm/run.sh [SCENARIO...]      default: 1 3 2 4 5 6 (in that order)
#
# Builds the guest image if its inputs changed (build-image.sh), brings up two node guests and a
# client, sets up DRBD r0 and the database, starts twinbeat on both nodes, starts the client's
# writer through the VIP, then runs the scenarios and prints their figures. Scenarios:
#   up  only bring everything up and print the state (then tear down, unless KEEP=1)
#   1   the active guest is killed (qemu SIGKILL): the survivor takes over
#   2   `twinbeat standby` both ways
#   3   the killed node comes back: Secondary, resync, no automatic failback
#   4   an Outdated disk on the only node up is never promoted; the good node brings it back
#   5   DRBD's replication link is cut while the heartbeat links stay up
#   6   the same cut, then the primary dies: the cut-off (Outdated) standby is never promoted
#
#   sudo lab/vm/run.sh campaign --seed S [--runs N] [--only R] [--plan]
# instead runs the nemesis (lab/vm/campaign.sh): N randomized fault schedules from seed S (R:
# replay one run), a table of runs, faults, violations and figures at the end (--plan: print
# the schedules and start nothing).
# Scenario 3 reboots the node scenario 1 killed (without 1 it kills the standby first). Everything is torn down at
# the end, also on failure (KEEP=1 leaves the guests running for inspection; run.sh down later).
# Env: TWINBEAT_BIN (default <repo>/target/release/twinbeat, built if missing); DRBD_FIRST=0 starts
# twinbeat before `drbdadm up` (the default, 1, is DRBD first, as with drbd.service ordered before
# twinbeat). DRBD_FENCING=0 drops DRBD's fencing policy and twinbeat's fence-peer handler from
# r0.res (the default, 1, keeps them), to show what happens without (scenario 6 then fails: the
# stale standby is promoted and the writes of the cut are lost).
set -euo pipefail
# shellcheck source=lab/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=lab/vm/scenarios.sh
source "$VM/scenarios.sh"
# shellcheck source=lab/vm/campaign.sh
source "$VM/campaign.sh"
[[ $EUID -eq 0 ]] || die "run as root: sudo $0"

if [[ ${1:-} == down ]]; then
    teardown
    log "torn down"
    exit 0
fi
CAMPAIGN=0
if [[ ${1:-} == campaign ]]; then
    CAMPAIGN=1 CAMP_SEED="" CAMP_RUNS=10 CAMP_ONLY=""
    shift
    while (($#)); do
        case $1 in
            --seed) CAMP_SEED=${2:-} ;;
            --runs) CAMP_RUNS=${2:-} ;;
            --only) CAMP_ONLY=${2:-} ;;
            --plan) CAMP_PLAN_ONLY=1; shift; continue ;;
            *) die "campaign: unknown option '$1' (--seed S [--runs N] [--only R] [--plan])" ;;
        esac
        shift 2 || die "campaign: $1 needs a value"
    done
    [[ $CAMP_SEED =~ ^[0-9]+$ ]] || die "campaign: --seed S (a number) is required"
    [[ $CAMP_RUNS =~ ^[1-9][0-9]*$ ]] || die "campaign: --runs must be a positive number"
    [[ -z $CAMP_ONLY || $CAMP_ONLY =~ ^[1-9][0-9]*$ ]] || die "campaign: --only must be a run number"
    if [[ ${CAMP_PLAN_ONLY:-0} == 1 ]]; then  # the schedules only: nothing is started
        campaign_plans "$CAMP_SEED" "$CAMP_RUNS" "$CAMP_ONLY"
        exit 0
    fi
    set -- up
fi
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(1 3 2 4 5 6)
for s in "${SCENARIOS[@]}"; do
    [[ $s =~ ^(up|[1-6])$ ]] || die "unknown scenario '$s' (up, 1, 2, 3, 4, 5, 6)"
done
DRBD_FIRST=${DRBD_FIRST:-1}
[[ $DRBD_FIRST =~ ^[01]$ ]] || die "DRBD_FIRST must be 0 or 1"
DRBD_FENCING=${DRBD_FENCING:-1}
[[ $DRBD_FENCING =~ ^[01]$ ]] || die "DRBD_FENCING must be 0 or 1"

need_cmds qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs \
    ip:iproute2 nsenter:util-linux
T_START=$SECONDS

# ---- image, binary, payload, disks, network ---------------------------------------------------
t=$SECONDS
IMG=$("$VM/build-image.sh") || die "the image build failed (its error is above)"
[[ -f $IMG/base.img && -f $IMG/vmlinuz && -f $IMG/initrd.img ]] ||
    die "build-image.sh answered '$IMG', which is not an image directory (base.img, vmlinuz, initrd.img)"
IMAGE_S=$((SECONDS - t))
TWINBEAT_BIN=${TWINBEAT_BIN:-$REPO/target/release/twinbeat}
if [[ ! -x $TWINBEAT_BIN ]]; then
    log "$TWINBEAT_BIN missing: building it (cargo build --release)"
    (cd "$REPO" && nice -n 19 cargo build --release) || die "cargo build failed"
    TWINBEAT_BIN=$REPO/target/release/twinbeat
fi

teardown  # leftovers of an interrupted run
on_exit() {
    local rc=$?
    # A failing command in here must not end the trap early (that once left two guests and the
    # namespace behind after a passing run, with exit status 1 and no message).
    set +e
    ((rc == 0)) || log "run FAILED (exit status $rc); figures so far: $LOGS/figures.txt, logs: $LOGS"
    if [[ ${KEEP:-0} == 1 ]]; then
        log "KEEP=1: guests left running; tear down with: sudo $0 down"
    elif ! teardown; then
        log "teardown incomplete (see above)"
        ((rc == 0)) && rc=1
    else
        log "torn down: no guest, console reader or namespace left"
        # The disks are kept for inspection only after a failure (they are ~300 MiB in /run).
        if ((rc == 0)); then rm -rf "$RUN"; fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
mkdir -p "$RUN" "$LOGS"
rm -rf "$LOGS.prev"
mv "$LOGS" "$LOGS.prev"
mkdir -p "$LOGS"

stage=$RUN/payload.d
rm -rf "$stage"
mkdir -p "$stage"/{bin,guest,conf}
install -m 0755 "$TWINBEAT_BIN" "$stage/bin/twinbeat"
install -m 0755 "$LAB/bin/mariadb-stop" "$stage/bin/mariadb-stop"
install -m 0755 "$VM"/guest/* "$stage/guest/"
install -m 0644 "$VM"/conf/* "$stage/conf/"
[[ $DRBD_FENCING == 1 ]] || sed -i '/# fencing$/d' "$stage/conf/r0.res"
(
    umask 077
    echo "1 $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$stage/conf/authkey"
    echo "probe-lab-secret" >"$stage/conf/probe-password"
)
rm -f "$RUN/payload.img"
nice -n 19 mkfs.ext4 -q -F -L tbpayload -d "$stage" "$RUN/payload.img" \
    "$(($(du -sm "$stage" | cut -f1) + 16))M" >/dev/null
for g in a b; do
    rm -f "$RUN/data-$g.img" "$RUN/state-$g.img"
    truncate -s 256M "$RUN/data-$g.img"
    nice -n 19 mkfs.ext4 -q -F -L tbstate "$RUN/state-$g.img" 16M >/dev/null
done

ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
ip -n "$NETNS" link add br0 type bridge
ip -n "$NETNS" link set br0 up
# The LAN's "gateway", the nodes' tie-breaker ping target (conf/twinbeat.toml [tiebreaker]).
ip -n "$NETNS" addr add 198.51.100.1/24 dev br0
for g in a b c; do
    ip -n "$NETNS" tuntap add dev "tap-$g" mode tap
    ip -n "$NETNS" link set "tap-$g" master br0 up
done

# ---- bring-up ------------------------------------------------------------------------------
t=$SECONDS
for g in a b c; do boot "$g"; done
for g in a b c; do wait_ready "$g"; done
BOOTALL_S=$((SECONDS - t))
for g in a b c; do guest_clock_sync "$g"; done

log "DRBD r0: create metadata, connect, skip the initial sync"
t0=$(now_ms)
vmq a 60 'tbctl drbd-create'
vmq b 60 'tbctl drbd-create'
vmq a 60 'tbctl wait-connected 60'
vmq a 30 'tbctl skip-sync'
vmq b 30 'tbctl wait-dstate UpToDate/UpToDate 30'
log "DRBD connected and UpToDate/UpToDate in $(($(now_ms) - t0)) ms"
t0=$(now_ms)
vmq a 300 'tbctl db-init'
log "database initialised in $(($(now_ms) - t0)) ms"
vmq a 30 'tbctl tb-check'
vmq b 30 'tbctl tb-check'
# By default twinbeat starts on an already connected, UpToDate DRBD (drbd.service before
# twinbeat). DRBD_FIRST=0 takes DRBD down first and starts twinbeat before `drbdadm up`, as on a
# node where both start together. (DRBD first used to leave twinbeat's disk state Unknown for
# good: the first disk report was dropped during the start-up probe; fixed in 2d33862.)
if [[ $DRBD_FIRST == 0 ]]; then
    vmq a 30 'tbctl drbd-down'
    vmq b 30 'tbctl drbd-down'
fi
# Both daemons at once, as two servers booting together. Started one after the other, a
# starved host once took longer than initdead for the second: the first, alone after initdead
# and with fencing required, then powered the second off (startup fencing, as it should).
pids=()
for g in a b; do
    vmq "$g" 30 'tbctl tb-start' &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "twinbeat did not start on both nodes"; done
if [[ $DRBD_FIRST == 0 ]]; then
    vmq a 30 'tbctl drbd-up'
    vmq b 30 'tbctl drbd-up'
    vmq a 60 'tbctl wait-connected 60'
fi
t0=$(now_ms)
end=$((SECONDS + 120))
until vmc a 10 'tbctl has-vip' >/dev/null 2>&1; do
    ((SECONDS < end)) || die "node a did not become active within 120 s; logs: $LOGS/a-ttyS1.log"
    sleep 0.5
done
log "node a active (VIP) $(($(now_ms) - t0)) ms after both daemons started"
vmq a 10 'tbctl status'
vmq c 10 'tbctl writer-start 1800'
end=$((SECONDS + 60))
until (($(vmc c 10 'tbctl acked-count' 2>/dev/null || echo 0) >= 5)); do
    ((SECONDS < end)) || die "the client's writes through the VIP are not acknowledged; $LOGS/c-ttyS1.log"
    sleep 0.5
done
log "client writes through the VIP: $(vmc c 10 'tbctl acked-count') acknowledged"

KILLED=
for s in "${SCENARIOS[@]}"; do
    [[ $s == up ]] && continue
    t=$SECONDS
    "scenario_$s"
    fig "scenario $s took" "$((SECONDS - t)) s"
done
if ((CAMPAIGN)); then
    campaign_main "$CAMP_SEED" "$CAMP_RUNS" "$CAMP_ONLY" || die "campaign: some runs failed (table above; logs: $LOGS)"
    printf 'PASS campaign seed %s in %s s\n' "$CAMP_SEED" "$((SECONDS - T_START))" | tee -a "$LOGS/figures.txt" >&2
else
    printf 'PASS all scenarios (%s) in %s s\n' "${SCENARIOS[*]}" "$((SECONDS - T_START))" | tee -a "$LOGS/figures.txt" >&2
fi
log "SUMMARY DRBD_FIRST=$DRBD_FIRST DRBD_FENCING=$DRBD_FENCING image ${IMAGE_S}s, boot (3 guests in parallel) ${BOOTALL_S}s [a ${BOOT_S[a]} b ${BOOT_S[b]} c ${BOOT_S[c]}], total $((SECONDS - T_START))s"
