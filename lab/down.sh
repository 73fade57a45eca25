#!/bin/bash
# down.sh — tear the namespace lab down. Idempotent: safe when nothing (or half of it) is up.
# Only touches what the lab started: processes named by the pid files under /run/twinbeat-lab,
# loop devices backed by the lab's image, the lab's namespaces and mounts.
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"

# 1. The client first (so it does not log a burst of failures), then the replica.
if [[ -d $RUN ]]; then
    log "stopping the client writer and the replica"
    touch "$RUN/writer.stop"
    stop_pid "$RUN/writer.pid" twinbeat-lab 10
    stop_pid "$RUN/replica/mysqld.pid" mariadbd 60
fi

# 2. The daemons: the standby first, so the active one's SIGTERM (which releases everything in
#    reverse: VIP, mariadbd, umount, disk) does not make the other take over.
order=(a b)
holds_vip a && order=(b a)
for who in "${order[@]}"; do
    pid_alive "$(node_dir "$who")/twinbeat.pid" twinbeat && log "stopping daemon $who (SIGTERM: it releases what it holds)"
    stop_pid "$(node_dir "$who")/twinbeat.pid" twinbeat 60
done

# 3. Any mariadbd the lab started that is still running (a killed daemon leaves its server up).
for who in a b; do
    stop_pid "$(node_dir "$who")/mysqld.pid" mariadbd 60
done

# The witness (LAB_WITNESS=1), after the daemons: they released with their lease still valid.
if [[ -d $RUN ]]; then
    pid_alive "$WITNESS_PID" twinbeat && log "stopping the witness"
    stop_pid "$WITNESS_PID" twinbeat 10
fi

# The out-of-band handle the fence agent enters (started by demo.sh).
if [[ -d $RUN ]]; then stop_pid "$OOB_PID" sleep 5; fi

# 4. The shared filesystem, inside the lab mount namespace only (the host never mounted it).
if [[ -e $MNTNS ]] && findmnt -n "$MNTNS" >/dev/null 2>&1; then
    for _ in 1 2 3 4 5; do
        nsenter --mount="$MNTNS" findmnt -n "$DATA" >/dev/null 2>&1 || break
        nsenter --mount="$MNTNS" umount "$DATA" ||
            { log "umount $DATA failed (busy?); retrying"; sleep 1; }
    done
    if nsenter --mount="$MNTNS" findmnt -n "$DATA" >/dev/null 2>&1; then
        die "$DATA is still mounted in the lab mount namespace; find the holder with: nsenter --mount=$MNTNS fuser -vm $DATA"
    fi
    umount "$MNTNS"
fi
rm -f "$MNTNS"

# 5. Loop devices backed by the lab image (also those of a deleted older image: "(deleted)").
losetup -l -n -O NAME,BACK-FILE 2>/dev/null | while read -r dev back; do
    case $back in
    "$IMAGE" | "$IMAGE (deleted)") losetup -d "$dev" && log "detached $dev" ;;
    esac
done

# 6. Namespaces, then the run dir (a private bind mount of itself).
for who in a b r c br w; do
    if ip netns list | grep -qw "$(ns "$who")"; then
        ip netns del "$(ns "$who")"
    fi
done
if [[ -d $RUN ]]; then
    if findmnt -n "$RUN" >/dev/null 2>&1; then umount "$RUN"; fi
    rm -rf "$RUN"
fi
log "lab is down"
