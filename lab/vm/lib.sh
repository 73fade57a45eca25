# shellcheck shell=bash
# shellcheck disable=SC2034  # names used by the scripts that source this file
# shellcheck disable=SC2016  # many single-quoted strings are run by an inner or the guest shell
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

# ---- run-time state (run.sh) --------------------------------------------------------------
# Sockets, fifos, disks and pid files of the current run: in /run, like the namespace lab's
# state, not in the checkout.
RUN=${TBVM_RUN:-/run/twinbeat-vm}
LOGS=$BUILD/logs               # console and ttyS1 logs (previous run: logs.prev)
QEMU_MAX_S=${QEMU_MAX_S:-3600} # hard upper bound on any guest's life (timeout(1) around qemu)
BOOT_TIMEOUT_S=${BOOT_TIMEOUT_S:-240}
IMG=                           # the image directory (build-image.sh's answer)
declare -A MEM=([a]=768 [b]=768 [c]=384)

qemu_pid() { local f=$RUN/$1.qemu.pid; [[ -s $f ]] && cat "$f"; }
# qemu_alive G: the pid file names a live qemu (checked by comm: never signal a reused pid).
qemu_alive() {
    local pid
    pid=$(qemu_pid "$1") || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == qemu-system-x86 ]] &&
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# boot G: start guest G (a, b: nodes; c: client) in the background.
#   root: the base image (snapshot=on: the image is never written), payload (read-only, label
#   tbpayload), nodes only: tbdata (DRBD backing disk) and tbstate (twinbeat's state dir, so a
#   rebooted node keeps its boot generation and term).
#   NICs: hb0 and repl0 are qemu dgram links between a and b over unix sockets (no host
#   networking; killing one qemu is a pulled cable, a restarted one re-attaches); lan0 is a tap
#   on the bridge in namespace NETNS. Console: ttyS0 on a fifo pair (commands), ttyS1 to a file
#   (twinbeat and writer logs), HMP monitor on a fifo pair (set_link).
boot() {
    local g=$1 peer n args=() oob=()
    case $g in a) peer=b n=1 ;; b) peer=a n=2 ;; c) n=3 ;; esac
    qemu_alive "$g" && die "guest $g already runs (qemu pid $(qemu_pid "$g"))"
    rm -f "$RUN/$g".{con,mon,oob}.{in,out} "$RUN/hb-$g.sock" "$RUN/repl-$g.sock" "$RUN/$g.qemu.pid"
    mkfifo "$RUN/$g.con.in" "$RUN/$g.con.out" "$RUN/$g.mon.in" "$RUN/$g.mon.out"
    # Disks are found by label (root, payload) or qemu serial (data, state), never by vdX order:
    # qemu places -device disks before -drive if=virtio ones on the PCI bus.
    # shellcheck disable=SC2054  # commas belong to qemu options
    args+=(-drive "file=$IMG/base.img,if=none,id=root,format=raw,snapshot=on"
        -device virtio-blk-pci,drive=root,serial=tbroot
        -drive "file=$RUN/payload.img,if=none,id=payload,format=raw,readonly=on"
        -device virtio-blk-pci,drive=payload,serial=tbpayload)
    if [[ $g != c ]]; then
        # shellcheck disable=SC2054  # commas belong to qemu options
        args+=(-drive "file=$RUN/data-$g.img,if=none,id=data,format=raw,aio=threads"
            -device virtio-blk-pci,drive=data,serial=tbdata
            -drive "file=$RUN/state-$g.img,if=none,id=state,format=raw"
            -device virtio-blk-pci,drive=state,serial=tbstate)
        # ttyS2 (after ttyS0 and ttyS1 below): the out-of-band line to the lab's power switch
        # (oob_serve), for fence-oob.
        mkfifo "$RUN/$g.oob.in" "$RUN/$g.oob.out"
        oob=(-chardev "pipe,id=oob,path=$RUN/$g.oob" -serial chardev:oob)
        local l i=1
        for l in hb repl; do
            args+=(-netdev "dgram,id=$l,local.type=unix,local.path=$RUN/$l-$g.sock,remote.type=unix,remote.path=$RUN/$l-$peer.sock"
                -device "virtio-net-pci,netdev=$l,mac=52:54:00:00:0$n:0$i")
            i=$((i + 1))
        done
    fi
    args+=(-netdev "tap,id=lan,ifname=tap-$g,script=no,downscript=no"
        -device "virtio-net-pci,netdev=lan,mac=52:54:00:00:0$n:03")
    : >>"$LOGS/$g-ttyS1.log"
    # A fresh console log per boot: the ready and command markers of an earlier boot must not
    # match (the ttyS1 log is kept whole: the scenarios read it across reboots).
    [[ ! -e $LOGS/$g-console.log ]] || mv "$LOGS/$g-console.log" "$LOGS/$g-console.$(date +%s).log"
    # shellcheck disable=SC2016  # $$ belongs to the inner shell
    setsid nice -n 19 timeout --signal=KILL "$QEMU_MAX_S" \
        nsenter --net="/run/netns/$NETNS" \
        qemu-system-x86_64 -name "tbvm-$g" -accel tcg -m "${MEM[$g]}" -smp 1 \
        -nodefaults -display none -vga none -no-reboot -rtc base=utc \
        -pidfile "$RUN/$g.qemu.pid" \
        -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
        -append "root=LABEL=tbroot rw console=ttyS0 quiet loglevel=3 init=/sbin/tb-init tb.node=$g" \
        "${args[@]}" \
        -chardev "pipe,id=con,path=$RUN/$g.con" -serial chardev:con \
        -chardev "file,id=log,path=$LOGS/$g-ttyS1.log,append=on" -serial chardev:log \
        "${oob[@]}" \
        -chardev "pipe,id=mon,path=$RUN/$g.mon" -mon chardev=mon,mode=readline \
        </dev/null >>"$LOGS/$g-qemu.log" 2>&1 &
    local starter=$!
    disown  # a guest killed on purpose is no job for bash to report ("Killed ...")
    # The console and monitor outputs are drained into files (a full fifo would stall the guest).
    # cat ends by itself when qemu exits (last writer gone).
    setsid cat "$RUN/$g.con.out" >>"$LOGS/$g-console.log" 2>/dev/null &
    echo $! >"$RUN/$g.concat.pid"
    setsid cat "$RUN/$g.mon.out" >>"$LOGS/$g-monitor.log" 2>/dev/null &
    echo $! >"$RUN/$g.moncat.pid"
    if [[ $g != c ]]; then
        # Ends by itself when this qemu exits (end of file on its line).
        oob_serve "$g" </dev/null >/dev/null 2>>"$LOGS/fence.log" &
        disown
    fi
    BOOT_T0[$g]=$(now_ms)
    local end=$((SECONDS + 60))
    until [[ -s $RUN/$g.qemu.pid ]]; do
        if ((SECONDS >= end)) || ! kill -0 "$starter" 2>/dev/null; then
            log "qemu for guest $g did not start; the end of $LOGS/$g-qemu.log:"
            tail -n 20 "$LOGS/$g-qemu.log" >&2
            die "qemu for guest $g did not start (its error is above)"
        fi
        sleep 0.1
    done
}
declare -A BOOT_T0 BOOT_S

# wait_ready G: the guest's init printed its ready marker (bounded by BOOT_TIMEOUT_S).
wait_ready() {
    local g=$1 end=$((SECONDS + BOOT_TIMEOUT_S)) host
    case $g in a) host=node-a ;; b) host=node-b ;; c) host=client ;; esac
    until grep -aq "TB-READY $host" "$LOGS/$g-console.log" 2>/dev/null; do
        qemu_alive "$g" || die "guest $g died while booting; console: $LOGS/$g-console.log"
        ((SECONDS < end)) || die "guest $g not ready after ${BOOT_TIMEOUT_S}s; console: $LOGS/$g-console.log"
        sleep 0.2
    done
    BOOT_S[$g]=$(awk -v a="${BOOT_T0[$g]}" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    log "guest $g ready after ${BOOT_S[$g]} s"
}

# vmc G SECONDS CMD: run CMD (one line of bash) in guest G over its console; prints its output,
# returns its exit status. Fails (status 124) when no end marker arrives within SECONDS times
# VMC_SCALE (default 3: on a loaded 2-core host a TCG guest's console can stall for > 10 s; a
# healthy answer takes 0.1-0.5 s, so the scale only stretches the failure case).
VMC_SCALE=${VMC_SCALE:-3}
vmc() {
    local g=$1 limit=$(($2 * VMC_SCALE)) cmd=$3 id end rc
    # Unique per call even in a $(...) subshell (a counter would be lost there).
    id="$(date +%s%N)-$BASHPID"
    qemu_alive "$g" || { log "vmc $g: guest is not running: $cmd"; return 125; }
    # The fifo is held open by qemu (O_RDWR), so this open cannot block; timeout guards anyway.
    timeout 5 bash -c 'printf "%s\n" "$1" >"$2"' _ \
        "printf '\\n__TB_BEG_%s__\\n' $id; { $cmd ; } 2>&1; printf '\\n__TB_END_%s_%s__\\n' $id \$?" \
        "$RUN/$g.con.in" || { log "vmc $g: cannot write to the console fifo"; return 125; }
    end=$(($(date +%s%N) / 1000000 + limit * 1000))
    until grep -aq "__TB_END_${id}_" "$LOGS/$g-console.log"; do
        if (($(date +%s%N) / 1000000 > end)); then
            log "vmc $g: no answer within ${limit}s to: $cmd"
            return 124
        fi
        qemu_alive "$g" || { log "vmc $g: guest died during: $cmd"; return 125; }
        sleep 0.05
    done
    awk -v b="__TB_BEG_${id}__" -v e="__TB_END_${id}_" '
        { sub(/\r$/, "") }
        index($0, e) == 1 { exit } on && !(NR == start + 1 && $0 == "") { print }
        $0 == b { on = 1; start = NR }' "$LOGS/$g-console.log" | sed '${/^$/d}'
    rc=$(grep -ao "__TB_END_${id}_[0-9]*" "$LOGS/$g-console.log" | head -n 1)
    return "${rc##*_}"
}
# vmq G SECONDS CMD: vmc, and fail the run loudly when CMD fails.
vmq() {
    local out rc=0
    out=$(vmc "$@") || rc=$?
    [[ -z $out ]] || printf '%s\n' "$out" | sed "s/^/    [$1] /" >&2
    ((rc == 0)) || die "guest $1: '$3' failed (status $rc)"
}

# guest_clock_sync G: set the guest clock to the host's (ms), then report the residual offset,
# so figures that combine host and guest timestamps (detection after a kill) are comparable.
guest_clock_sync() {
    local g=$1 t1 t2 gt off=0 pass
    vmc "$g" 10 "date -s @$(date +%s.%N) >/dev/null" >/dev/null
    # The first set lands half a console round trip late: measure and correct once.
    for pass in 1 2; do
        t1=$(now_ms)
        gt=$(vmc "$g" 10 'echo $(($(date +%s%N) / 1000000))')
        t2=$(now_ms)
        off=$((gt - (t1 + t2) / 2))
        [[ $pass == 2 ]] ||
            vmc "$g" 10 "t=\$((\$(date +%s%N) / 1000000 - $off)); date -s @\$((t / 1000)).\$(printf %03d \$((t % 1000))) >/dev/null" >/dev/null
    done
    log "guest $g clock offset after sync: $off ms (console round trip $((t2 - t1)) ms)"
}
# kill_guest G: SIGKILL its qemu (a pulled power cord), wait until it is gone. Returns 1 with a
# message (never exits: teardown must go on to the other guests) when it outlives 30 s; a qemu
# blocked in uncached disk I/O on a starved host can take seconds to die.
kill_guest() {
    local g=$1 pid end=$((SECONDS + 30))
    qemu_alive "$g" || return 0
    pid=$(qemu_pid "$g")
    kill -KILL "$pid" 2>/dev/null || true
    while qemu_alive "$g"; do
        ((SECONDS < end)) || { log "qemu $pid (guest $g) survives SIGKILL for 30 s (state $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null))"; return 1; }
        sleep 0.05
    done
    rm -f "$RUN/$g.qemu.pid"
}
# stop_pidfile F: SIGTERM the process named by F (ours: a console/monitor cat), if it is alive.
stop_pidfile() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == cat ]]; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}
# teardown: every guest, console reader, the namespace (and with it bridge and taps), the
# sockets and fifos. Idempotent; the disks and logs stay for inspection (run.sh removes the
# disks after a passing run). Every step is tried whatever the earlier ones did (errexit is off
# inside, as it is in an EXIT trap that calls it after an error); returns 1 and names what is
# left when something could not be removed.
teardown() {
    local g left=() errexit=0
    [[ $- == *e* ]] && errexit=1
    set +e
    for g in a b c; do
        kill_guest "$g" || left+=("qemu of guest $g (pid $(qemu_pid "$g"))")
        stop_pidfile "$RUN/$g.concat.pid"
        stop_pidfile "$RUN/$g.moncat.pid"
        rm -f "$RUN/$g".{con,mon,oob}.{in,out} "$RUN/hb-$g.sock" "$RUN/repl-$g.sock"
    done
    if ip netns list | grep -qx "$NETNS\( (id: [0-9]*)\)\?"; then
        ip netns del "$NETNS" || left+=("network namespace $NETNS")
    fi
    ((errexit)) && set -e
    ((${#left[@]} == 0)) && return 0
    log "teardown left: ${left[*]}; run 'sudo lab/vm/run.sh down' again, or end them by pid"
    return 1
}
# oob_serve G: the lab's out-of-band power switch for node guest G (the IPMI/Redfish of a
# real pair): reads G's ttyS2; "FENCE X ID" powers guest X (the other node) off like a pulled
# cord (kill_guest) and answers "FENCED X ID", or "FAILED X ID why". Every request and answer
# goes to $LOGS/fence.log with epoch ms. The guest stays off: whoever runs the lab boots it.
oob_serve() {
    local g=$1 verb target id t0
    while read -r verb target id; do
        target=${target%$'\r'} id=${id%$'\r'}
        [[ $verb == FENCE && $target =~ ^[ab]$ && $target != "$g" ]] || continue
        t0=$(now_ms)
        printf '%s %s %s asks to power %s off\n' "$t0" "$(date +%T.%3N)" "$g" "$target" >>"$LOGS/fence.log"
        if kill_guest "$target" 2>>"$LOGS/fence.log"; then
            printf 'FENCED %s %s\n' "$target" "$id" >"$RUN/$g.oob.in"
            printf '%s %s %s powered off (%s ms)\n' "$(now_ms)" "$(date +%T.%3N)" "$target" "$(($(now_ms) - t0))" >>"$LOGS/fence.log"
        else
            printf 'FAILED %s %s qemu survives SIGKILL\n' "$target" "$id" >"$RUN/$g.oob.in"
            printf '%s %s %s could not be powered off\n' "$(now_ms)" "$(date +%T.%3N)" "$target" >>"$LOGS/fence.log"
        fi
    done <"$RUN/$g.oob.out"
}
# monitor G CMD: one HMP command to guest G's qemu (e.g. "set_link repl off").
monitor() {
    timeout 5 bash -c 'printf "%s\n" "$1" >"$2"' _ "$2" "$RUN/$1.mon.in"
}
