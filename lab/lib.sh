# shellcheck shell=bash
# shellcheck disable=SC2034  # the names below are used by the scripts that source this file
# Shared names and helpers for the namespace lab (sourced by demo.sh, down.sh, ctl.sh).
#
# Layout:
#   /run/twinbeat-lab (RUN)     the lab's state: namespace file, pid files, sockets, keys, the
#                               disk symlink and the shared mount point. Fixed path on purpose:
#                               the committed configs under lab/conf/ refer to it, so they stay
#                               valid wherever the repository is checked out.
#   RUN/conf, RUN/bin, RUN/logs symlinks into the repository (lab/conf, lab/bin, lab/build/logs)
#   lab/build (BUILD)           the data: disk image, replica datadir, logs (gitignored)
#
# Topology (documentation ranges only, same addressing as tests/netns/mod.rs):
#   a ──hb0── b                  dedicated heartbeat link 192.0.2.1 / 192.0.2.2
#   a, b, r, c ──lan0── br0      LAN bridge in its own namespace:
#                                a .11, b .12, client c .20, replica r .30, VIP .100 (198.51.100.0/24),
#                                the bridge itself .1 (the tie-breaker's ping target)

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$LAB")
BUILD=$LAB/build
LOGS=$BUILD/logs
RUN=/run/twinbeat-lab
MNTNS=$RUN/mnt-ns              # bind-mounted mount-namespace file both node daemons join
DATA=$RUN/data                 # mount point of the shared ext4 (inside MNTNS only)
IMAGE=$BUILD/disk.img          # the ext4 image standing in for the DRBD device
# disk_link a|b: that node's stable symlink to the loop device it attached (per node: see
# lab/conf/twinbeat-a.toml for why a shared link is wrong in a shared mount table).
disk_link() { echo "$RUN/node-$1/disk"; }
BIN=$REPO/target/release/twinbeat
# A process left in the host's namespaces for the lab's whole life: the fence agent
# (lab/bin/fence-standin) runs inside a node's namespaces and enters this one's to reach the
# peer "out of band", as a fence agent reaches a power switch over a management network.
# (PID 1's namespaces are not ours to enter on every machine.)
OOB_PID=$RUN/oob.pid
# The lab's own tools: the client writer, the power-cut helper, the scenario runner (lab/runner).
LABBIN=$REPO/target/release/twinbeat-lab
NS_PREFIX=tblab
VIP=198.51.100.100
# The LAN's "gateway": an address on the bridge itself, the nodes' tie-breaker ping target.
LAN_GW=198.51.100.1
LAN_A=198.51.100.11
LAN_B=198.51.100.12
LAN_C=198.51.100.20
LAN_R=198.51.100.30
# The optional witness (LAB_WITNESS=1, doc/witness.md): `twinbeat witness` in its own namespace
# tblab-w on the LAN bridge. Its pid file also tells the lab's tools that this lab has one.
LAN_W=198.51.100.40
WITNESS_PORT=694
WITNESS_PID=$RUN/witness.pid
HB_A=192.0.2.1
HB_B=192.0.2.2
# Lab-only credentials: the VIP lives in a namespace nobody else can reach.
REPL_PASS=repl-lab-secret
WRITER_PASS=writer-lab-secret
PROBE_PASS=probe-lab-secret
DRILL_PASS=drill-lab-secret

ns() { echo "$NS_PREFIX-$1"; }
node_dir() { echo "$RUN/node-$1"; }
ctl_socket() { echo "$RUN/node-$1/control.sock"; }

log() { printf '%s lab: %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# in_ns WHO CMD...: network namespace only (LAB.md: never `ip netns exec` for node processes,
# it gives them a private copy of the mount table).
in_ns() { local who=$1; shift; nsenter --net="/run/netns/$(ns "$who")" "$@"; }
# in_node WHO CMD...: a node's network namespace plus the lab's shared mount namespace.
in_node() { local who=$1; shift; nsenter --net="/run/netns/$(ns "$who")" --mount="$MNTNS" "$@"; }

# wait_until SECONDS WHAT CMD...: polls CMD every 0.2 s; fails loudly with WHAT after SECONDS.
wait_until() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            log "timed out after ${limit}s waiting for: $what"
            return 1
        fi
        sleep 0.2
    done
}

# pid_alive PIDFILE [COMM]: the pid file names a live process (with this comm, if given).
# Checking comm keeps us from signalling an unrelated process that reused a stale pid.
pid_alive() {
    local f=$1 want=${2:-} pid
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && ! pid_gone "$pid" || return 1
    [[ -z $want ]] || [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$want" ]]
}

# stop_pid PIDFILE COMM SECONDS: SIGTERM, wait bounded, then SIGKILL; only that one pid.
stop_pid() {
    local f=$1 want=$2 limit=$3 pid
    pid_alive "$f" "$want" || { rm -f "$f"; return 0; }
    pid=$(<"$f")
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$limit" "$want (pid $pid) to exit after SIGTERM" pid_gone "$pid"; then
        log "sending SIGKILL to $want (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 "$want (pid $pid) to exit after SIGKILL" pid_gone "$pid" || true
    fi
    rm -f "$f"
}
# pid_gone PID: exited. A zombie counts as gone: our detached processes are reparented to PID 1,
# which may reap late (on the lab machine a zombie twinbeat lingered ~2 s after exiting).
pid_gone() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat%% *} == Z ]]
}

# sql_vip SQL: a query through the VIP from the client namespace, as the writer user.
sql_vip() {
    in_ns c mariadb -h "$VIP" -u writer -p"$WRITER_PASS" --connect-timeout=2 -N -B -e "$1"
}
# sql_replica SQL: a query on the replica over its local socket, as root.
sql_replica() {
    mariadb -S "$RUN/replica/mysqld.sock" -u root --connect-timeout=2 -N -B -e "$1"
}

# start_daemon a|b: twinbeat for that node, in its network namespace and the lab's mount
# namespace, detached (own session), logging to lab/build/logs/twinbeat-X.log.
# The pid file holds twinbeat's own pid: bash writes $$ and then execs nsenter, which execs
# twinbeat (nsenter forks only for a pid namespace), so the pid never changes.
start_daemon() {
    local who=$1 pidf
    pidf=$(node_dir "$who")/twinbeat.pid
    pid_alive "$pidf" twinbeat && die "daemon $who already runs (pid $(<"$pidf"))"
    [[ -x $BIN ]] || die "$BIN missing; run: cargo build --release"
    # shellcheck disable=SC2016  # $$ and $1 belong to the inner bash
    TWINBEAT_LOG=info setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidf" \
        nsenter --net="/run/netns/$(ns "$who")" --mount="$MNTNS" \
        "$BIN" run --config "$RUN/conf/twinbeat-$who.toml" --node "lab-$who" \
        </dev/null >>"$LOGS/twinbeat-$who.log" 2>&1 &
    wait_until 10 "daemon $who to answer on $(ctl_socket "$who") (log: $LOGS/twinbeat-$who.log)" \
        "$BIN" status --socket "$(ctl_socket "$who")" ||
        die "daemon $who did not come up; tail of its log:$(printf '\n'; tail -n 20 "$LOGS/twinbeat-$who.log")"
    log "daemon $who runs (pid $(<"$pidf"))"
}

# start_witness: `twinbeat witness` in the witness namespace (network only: it touches no file
# system state), detached, logging to lab/build/logs/witness.log. Same pid-file trick as
# start_daemon. Waits for its "witness started" line.
start_witness() {
    pid_alive "$WITNESS_PID" twinbeat && die "the witness already runs (pid $(<"$WITNESS_PID"))"
    [[ -x $BIN ]] || die "$BIN missing; run: cargo build --release"
    local before=0
    [[ -f $LOGS/witness.log ]] && before=$(wc -l <"$LOGS/witness.log")
    # shellcheck disable=SC2016  # $$ and $1 belong to the inner bash
    TWINBEAT_LOG=info setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$WITNESS_PID" \
        nsenter --net="/run/netns/$(ns w)" "$BIN" witness --config "$RUN/conf/witness.toml" \
        </dev/null >>"$LOGS/witness.log" 2>&1 &
    # Captured, not piped into grep -q: with pipefail, grep -q's early exit fails the pipe.
    # shellcheck disable=SC2317  # called through wait_until
    witness_started() { [[ $(tail -n "+$((before + 1))" "$LOGS/witness.log") == *"witness started"* ]]; }
    wait_until 10 "the witness to start (log: $LOGS/witness.log)" witness_started ||
        die "the witness did not come up; tail of its log:$(printf '\n'; tail -n 20 "$LOGS/witness.log")"
    log "witness runs on $LAN_W:$WITNESS_PORT (pid $(<"$WITNESS_PID"))"
}

# holds_vip a|b: the VIP is configured on that node's lan0.
holds_vip() {
    local out
    out=$(ip -n "$(ns "$1")" -o -4 addr show dev lan0 2>/dev/null) || return 1
    [[ $out == *" $VIP/"* ]]
}

# start_writer: the client (twinbeat-lab writer, lab/runner/src/writer.rs) in the client
# namespace: an INSERT every 20 ms through the VIP, every acknowledged and in-doubt write logged,
# and an ICMP prober logging the VIP's outages. Bounded to WRITER_HOURS (default 4).
start_writer() {
    local pidf=$RUN/writer.pid
    pid_alive "$pidf" twinbeat-lab && die "writer already runs (pid $(<"$pidf"))"
    rm -f "$RUN/writer.stop"
    # shellcheck disable=SC2016  # $$ and $1 belong to the inner bash
    VIP=$VIP MYSQL_PWD=$WRITER_PASS setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidf" \
        nsenter --net="/run/netns/$(ns c)" "$LABBIN" writer "$LOGS" "$RUN/writer.stop" \
        "$((${WRITER_HOURS:-4} * 3600))" </dev/null >>"$LOGS/writer.log" 2>&1 &
}
# replica_status: SHOW SLAVE STATUS, vertical, with the field names (-N would drop them).
replica_status() {
    mariadb -S "$RUN/replica/mysqld.sock" -u root --connect-timeout=2 -e 'SHOW SLAVE STATUS\G'
}
