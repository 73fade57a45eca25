#!/bin/bash
# demo.sh — bring the whole namespace lab up: two twinbeat nodes serving MariaDB on a shared
# (DRBD stand-in) ext4 image, a replica following the VIP, and a client writing through it.
# Usage: sudo lab/demo.sh        (tear down with: sudo lab/down.sh)
# Env: WRITER_HOURS (default 4) bounds the client writer; LAB_DEADTIME_MS / LAB_WARNTIME_MS run
#      the pair with other timings than lab/conf's (e.g. the reference config's 1000 / 500);
#      LAB_WITNESS=1 adds a witness (`twinbeat witness`, doc/witness.md) in namespace tblab-w on
#      the LAN at 198.51.100.40, and the witness lease (3 x deadtime) to both nodes' [tiebreaker].
set -euo pipefail
# shellcheck source=lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
[[ -e $RUN ]] && die "$RUN exists: the lab is up (or half up); run lab/down.sh first"
case ${LAB_WITNESS:-0} in
0 | 1) ;;
*) die "LAB_WITNESS=${LAB_WITNESS} : use 1 (with a witness) or 0 (without)" ;;
esac
WITNESS=${LAB_WITNESS:-0}

STEP="checking prerequisites"
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        log "bring-up FAILED while $STEP (exit $rc); logs are in $LOGS; cleaning up with down.sh"
        "$LAB/down.sh" || log "down.sh failed too; inspect by hand"
    fi
}
trap on_exit EXIT

# --- 1. packages and the binary -------------------------------------------------------------
missing=()
for pair in mariadbd:mariadb-server mariadb:mariadb-client ip:iproute2 losetup:mount \
    nsenter:util-linux unshare:util-linux mkfs.ext4:e2fsprogs ping:iputils-ping; do
    command -v "${pair%%:*}" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "${pair%%:*}" >/dev/null ||
        missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    STEP="installing ${missing[*]}"
    log "$STEP"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
# The packaged mariadb service must not hold port 3306 or /run/mysqld on the host; the lab never
# uses it, but it does not need to be stopped either (every lab mariadbd is in a namespace).
STEP="building twinbeat"
if ! command -v cargo >/dev/null; then
    for c in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}" /root/.cargo/bin; do
        [[ -n $c && -x $c/cargo ]] && PATH=$PATH:$c && break
    done
fi
command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.85 (https://rustup.rs)"
log "$STEP (cargo build --release --workspace: the daemon and the lab tools)"
(cd "$REPO" && cargo build --release --workspace -q)

# --- 2. run dir, secrets, the shared mount namespace ----------------------------------------
STEP="creating the run dir $RUN"
# Fresh logs for a fresh lab: the writer numbers its ids after the highest one in its logs, and
# ctl.sh check compares them with this lab's database. The previous run's logs stay one run.
if [[ -d $LOGS ]]; then
    rm -rf "$LOGS.prev"
    mv "$LOGS" "$LOGS.prev"
fi
mkdir -p "$RUN" "$LOGS"
# A private bind of the run dir onto itself: the mount-namespace file below must live on a
# private mount, or binding a namespace to it fails / propagates (same trick as /run/netns).
mount --bind "$RUN" "$RUN"
mount --make-private "$RUN"
mkdir -p "$RUN/secrets" "$DATA" "$RUN/replica" "$(node_dir a)/state" "$(node_dir b)/state"
if [[ -n ${LAB_DEADTIME_MS:-}${LAB_WARNTIME_MS:-} || $WITNESS == 1 ]]; then
    # Other timings or a witness for this run only: copies of the committed configs with the
    # [timing] values replaced and the witness lease added to [tiebreaker].
    mkdir "$RUN/conf"
    cp "$LAB/conf/"* "$RUN/conf/"
    for f in "$RUN"/conf/twinbeat-*.toml; do
        [[ -z ${LAB_DEADTIME_MS:-} ]] || sed -i "s/^deadtime-ms = .*/deadtime-ms = $LAB_DEADTIME_MS/" "$f"
        [[ -z ${LAB_WARNTIME_MS:-} ]] || sed -i "s/^warntime-ms = .*/warntime-ms = $LAB_WARNTIME_MS/" "$f"
    done
    log "timings for this run: $(grep -h -E '^(deadtime|warntime)-ms' "$RUN/conf/twinbeat-a.toml" | tr '\n' ' ')"
    if [[ $WITNESS == 1 ]]; then
        # A lease of three deadtimes (doc/witness.md: "3 x is usual"); the guard stays at its
        # default 300 ms, which fits the lab's warntime and deadtime (twinbeat check proves it).
        deadtime=$(sed -n 's/^deadtime-ms = \([0-9]*\).*/\1/p' "$RUN/conf/twinbeat-a.toml")
        [[ $deadtime =~ ^[0-9]+$ ]] || die "no deadtime-ms in $RUN/conf/twinbeat-a.toml"
        LEASE_MS=$((3 * deadtime))
        for f in "$RUN"/conf/twinbeat-*.toml; do
            sed -i "/^\[tiebreaker\]\$/a # LAB_WITNESS=1 (lab/demo.sh): the witness lease, doc/witness.md.\\
witness = \"$LAN_W:$WITNESS_PORT\"\\
lease-ms = $LEASE_MS" "$f"
            grep -q "^witness = " "$f" || die "could not add the witness to $f"
        done
        cat >"$RUN/conf/witness.toml" <<TOML
# twinbeat witness of the namespace lab (written by lab/demo.sh for LAB_WITNESS=1; etc/witness.toml
# is the commented reference). Namespace tblab-w, on the LAN bridge beside the client.
listen = "$LAN_W:$WITNESS_PORT"
cluster-id = 42
nodes = [1, 2]
lease-ms = $LEASE_MS

[auth]
algorithm = "hmac-sha256"
key-file = "$RUN/secrets/authkey"
keys = [1]
send-key = 1
TOML
        log "witness for this run: $LAN_W:$WITNESS_PORT, lease $LEASE_MS ms"
    fi
else
    ln -s "$LAB/conf" "$RUN/conf"
fi
ln -s "$LAB/bin" "$RUN/bin"
# The out-of-band handle (lib.sh, OOB_PID): bounded like the writer.
setsid sleep "$((${WRITER_HOURS:-4} * 3600 + 600))" </dev/null >/dev/null 2>&1 &
echo $! >"$OOB_PID"
ln -s "$LOGS" "$RUN/logs"
ln -s "$IMAGE" "$RUN/disk.img"
ln -s "$BUILD/replica-data" "$RUN/replica-data"
chown mysql:mysql "$RUN/node-a" "$RUN/node-b" "$RUN/replica"
chmod 0755 "$RUN/node-a" "$RUN/node-b" "$RUN/replica"
# mariadbd (user mysql) writes its error logs there.
chown mysql:mysql "$LOGS"
# twinbeat appends mariadbd's stdout/stderr next to the pid file (in the run dir, which down.sh
# removes): keep it with the other logs.
for who in a b; do
    ln -s "$LOGS/mariadb-$who.out" "$(node_dir "$who")/twinbeat-mysql-mysql.log"
done
(
    umask 077
    echo "1 $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$RUN/secrets/authkey"
    printf '%s\n' "$PROBE_PASS" >"$RUN/secrets/probe-password"
    printf '%s\n' "$DRILL_PASS" >"$RUN/secrets/drill-password"
)

STEP="creating the lab mount namespace $MNTNS"
touch "$MNTNS"
# One private mount namespace for the shared filesystem: both node daemons join it, so they see
# the same mount table (only one can mount the disk) and the host never sees the mount.
unshare --mount="$MNTNS" --propagation private true

# --- 3. topology ----------------------------------------------------------------------------
STEP="building the network topology"
lan_members=("a:$LAN_A" "b:$LAN_B" "c:$LAN_C" "r:$LAN_R")
[[ $WITNESS == 1 ]] && lan_members+=("w:$LAN_W")
for who in a b r c br $([[ $WITNESS == 1 ]] && echo w); do
    ip netns add "$(ns "$who")"
    ip -n "$(ns "$who")" link set lo up
done
ip -n "$(ns br)" link add br0 type bridge
ip -n "$(ns br)" link set br0 up
ip -n "$(ns br)" addr add "$LAN_GW/24" dev br0
for pair in "${lan_members[@]}"; do
    who=${pair%%:*} addr=${pair#*:}
    ip link add lan0 netns "$(ns "$who")" type veth peer name "$who-lan" netns "$(ns br)"
    ip -n "$(ns br)" link set "$who-lan" master br0 up
    ip -n "$(ns "$who")" addr add "$addr/24" dev lan0
    ip -n "$(ns "$who")" link set lan0 up
done
ip link add hb0 netns "$(ns a)" type veth peer name hb0 netns "$(ns b)"
ip -n "$(ns a)" addr add "$HB_A/24" dev hb0
ip -n "$(ns b)" addr add "$HB_B/24" dev hb0
ip -n "$(ns a)" link set hb0 up
ip -n "$(ns b)" link set hb0 up
wait_until 10 "node a to reach node b over hb0" in_ns a ping -n -q -c 1 -W 1 "$HB_B"
wait_until 10 "the client to reach node a over the LAN bridge" in_ns c ping -n -q -c 1 -W 1 "$LAN_A"
log "topology up: a, b, replica r, client c on bridge br0; hb0 between a and b"

# --- 4. the shared disk and the primary's initial datadir -----------------------------------
STEP="creating the disk image $IMAGE"
rm -f "$IMAGE"
truncate -s 512M "$IMAGE"
mkfs.ext4 -q -F -L twinbeat-lab "$IMAGE"

STEP="initialising the primary datadir on the shared disk (node a, by hand)"
in_node a "$LAB/bin/disk-standin" start "$IMAGE" "$(disk_link a)"
in_node a mount -t ext4 -o noatime "$(disk_link a)" "$DATA"
in_node a mkdir -p "$DATA/mysql"
in_node a chown mysql:mysql "$DATA/mysql"
in_node a mariadb-install-db --no-defaults --user=mysql --datadir="$DATA/mysql" \
    --auth-root-authentication-method=normal --skip-test-db >"$LOGS/install-db-primary.log" 2>&1
# A setup-only server: no network, same defaults file the node uses.
setsid nsenter --net="/run/netns/$(ns a)" --mount="$MNTNS" \
    mariadbd --defaults-file="$RUN/conf/mariadb-a.cnf" --skip-networking </dev/null \
    >>"$LOGS/mariadb-setup.log" 2>&1 &
sock_a=$(node_dir a)/mysqld.sock
wait_until 60 "the setup mariadbd to answer on $sock_a (see $LOGS/mariadb-a.err)" \
    mariadb -S "$sock_a" -u root -e 'SELECT 1'
# The replica starts from here: everything after this position (users, schema, rows) reaches
# it through replication, so replica and primary agree from the first row on.
read -r BINLOG_FILE BINLOG_POS _ < <(mariadb -S "$sock_a" -u root -N -B -e 'SHOW MASTER STATUS')
[[ -n $BINLOG_FILE && -n $BINLOG_POS ]] || die "no binlog position from the setup server"
mariadb -S "$sock_a" -u root <<SQL
CREATE USER 'repl'@'198.51.100.%' IDENTIFIED BY '$REPL_PASS';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'198.51.100.%';
CREATE USER 'writer'@'198.51.100.%' IDENTIFIED BY '$WRITER_PASS';
CREATE USER 'probe'@'localhost' IDENTIFIED BY '$PROBE_PASS';
CREATE DATABASE lab;
GRANT SELECT, INSERT ON lab.* TO 'writer'@'198.51.100.%';
CREATE USER 'drill'@'198.51.100.%' IDENTIFIED BY '$DRILL_PASS';
GRANT CREATE, INSERT, SELECT, DELETE ON twinbeat_drill.* TO 'drill'@'198.51.100.%';
GRANT REPLICA MONITOR ON *.* TO 'drill'@'198.51.100.%';
CREATE TABLE lab.writes (id BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL) ENGINE=InnoDB;
SQL
stop_pid "$(node_dir a)/mysqld.pid" mariadbd 60
in_node a umount "$DATA"
in_node a "$LAB/bin/disk-standin" stop "$IMAGE" "$(disk_link a)"
log "primary datadir ready; replica will start at $BINLOG_FILE:$BINLOG_POS"

# --- 5. the replica ---------------------------------------------------------------------------
STEP="initialising and starting the replica"
rm -rf "$BUILD/replica-data"
mkdir -p "$BUILD/replica-data"
chown mysql:mysql "$BUILD/replica-data"
mariadb-install-db --no-defaults --user=mysql --datadir="$BUILD/replica-data" \
    --auth-root-authentication-method=normal --skip-test-db >"$LOGS/install-db-replica.log" 2>&1
# Network namespace only: the replica's datadir is on the host's filesystem.
setsid nsenter --net="/run/netns/$(ns r)" mariadbd --defaults-file="$RUN/conf/mariadb-replica.cnf" \
    </dev/null >>"$LOGS/mariadb-replica.out" 2>&1 &
wait_until 60 "the replica mariadbd to answer (see $LOGS/mariadb-replica.err)" sql_replica 'SELECT 1'
# ONE statement with file and position (without them it would start from the first binlog).
sql_replica "CHANGE MASTER TO MASTER_HOST='$VIP', MASTER_PORT=3306, MASTER_USER='repl',
    MASTER_PASSWORD='$REPL_PASS', MASTER_LOG_FILE='$BINLOG_FILE', MASTER_LOG_POS=$BINLOG_POS,
    MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.5; START SLAVE;"

# --- 6. the two daemons -----------------------------------------------------------------------
STEP="checking the twinbeat configs"
for who in a b; do
    "$BIN" check "$RUN/conf/twinbeat-$who.toml" --node "lab-$who" >/dev/null ||
        { "$BIN" check "$RUN/conf/twinbeat-$who.toml" --node "lab-$who" || true; die "config $who invalid"; }
done
if [[ $WITNESS == 1 ]]; then
    STEP="checking and starting the witness"
    "$BIN" witness --config "$RUN/conf/witness.toml" --check >/dev/null ||
        { "$BIN" witness --config "$RUN/conf/witness.toml" --check || true; die "witness config invalid"; }
    wait_until 10 "the witness namespace to reach node a over the LAN" in_ns w ping -n -q -c 1 -W 1 "$LAN_A"
    start_witness
fi
STEP="starting the daemons"
start_daemon a
start_daemon b
STEP="waiting for one node to become active"
any_vip() { holds_vip a || holds_vip b; }
wait_until 60 "one node to hold the VIP (twinbeat status --socket $(ctl_socket a))" any_vip
wait_until 30 "the database to answer through the VIP $VIP" sql_vip 'SELECT 1'
active=a; holds_vip a || active=b
log "node $active is active"

# --- 7. the client, and proof that data flows --------------------------------------------------
STEP="starting the client writer"
start_writer
wait_until 20 "the first acknowledged write in $LOGS/acked.log" test -s "$LOGS/acked.log"
replica_running() {
    # Captured, not piped into grep -q: with pipefail, grep -q's early exit fails the pipe.
    local st
    st=$(replica_status) || return 1
    [[ $st == *"Slave_IO_Running: Yes"* && $st == *"Slave_SQL_Running: Yes"* ]] &&
        (($(sql_replica 'SELECT COUNT(*) FROM lab.writes') > 0))
}
STEP="waiting for the replica to replicate"
wait_until 30 "the replica to run both threads and hold rows (see $LOGS/mariadb-replica.err)" replica_running
trap - EXIT

cat <<MSG

twinbeat lab is up. Node $active is active; the client writes through $VIP; the replica follows it.

  Node views:    $BIN status --socket $(ctl_socket a)
                 $BIN status --socket $(ctl_socket b)
                 (or: lab/ctl.sh status)
  Write rate:    lab/ctl.sh rate          (acknowledged writes in the last 10 s, in-doubt count)
  Consistency:   lab/ctl.sh check         (every acknowledged write on the primary; replica = primary)
  Hand over:     lab/ctl.sh standby $active      / lab/ctl.sh takeover $active
  Fail a node:   lab/ctl.sh kill-daemon a|b   (kill -9 of the daemon only; mariadbd stays up!)
                 lab/ctl.sh start-daemon a|b
  Write gaps:    lab/ctl.sh gaps
  Logs:          $LOGS/ (twinbeat-a.log, twinbeat-b.log, mariadb-*.err, acked.log, indoubt.log)
  Tear down:     sudo lab/down.sh
MSG
