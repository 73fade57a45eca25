//! Two real `twinbeat run` daemons and a real `twinbeat witness` in network namespaces (the
//! witness on the client namespace `c`, on the LAN bridge), over real UDP: the lease holder is
//! the active node; cutting the active's heartbeat links and its path to the witness makes it
//! release the VIP before the other node takes over (sampled: never both); forged and replayed
//! datagrams to the witness are rejected and counted by reason.
//! Needs root (network namespaces).

mod netns;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Lab, LAN};
use twinbeat::core::NodeState;
use twinbeat::proto::lease::{self, Kind, LeaseCounters, Msg};
use twinbeat::proto::{Algorithm, Keyring};

const WITNESS_PORT: u16 = 7694;
const LEASE_MS: u64 = 3_000;

/// The witness process, killed by its PID when dropped (declared after the lab, so it goes
/// first and the namespaces are still there).
struct Witness {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Witness {
    fn start(lab: &Lab) -> Witness {
        let cfg = lab.dir.join("witness.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"{}:{WITNESS_PORT}\"\ncluster-id = 7\nnodes = [1, 2]\nlease-ms = {LEASE_MS}\n[auth]\nkey-file = \"{}\"\nkeys = [1]\n",
                LAN[2],
                lab.dir.join("authkey").display()
            ),
        )
        .expect("witness config");
        let log = lab.dir.join("witness.log");
        let out = std::fs::File::create(&log).expect("witness log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.ns("c")))
            .arg(env!("CARGO_BIN_EXE_twinbeat"))
            .args(["witness", "--config"])
            .arg(&cfg)
            .env("TWINBEAT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("nsenter starts the witness");
        let w = Witness {
            child: Some(child),
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !w.text().contains("witness started") {
            assert!(
                Instant::now() < end,
                "the witness did not start within 10 s:\n{}",
                w.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn state(lab: &Lab, who: &str) -> Option<NodeState> {
    lab.status(who).map(|s| s.core.state)
}

/// Both daemons started with the witness as tie-breaker (lease-guard 300 ms), and the witness;
/// None (test skipped) without root.
fn witness_pair(name: &str) -> Option<(Lab, Witness)> {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return None;
    }
    let mut lab = Lab::new(name);
    lab.write_configs(&format!(
        "[tiebreaker]\nwitness = \"{}:{WITNESS_PORT}\"\nlease-ms = {LEASE_MS}\nlease-guard-ms = 300\n",
        LAN[2]
    ));
    let witness = Witness::start(&lab);
    lab.start("a");
    lab.start("b");
    Some((lab, witness))
}

fn lease_holder(lab: &Lab, who: &str) -> Option<u16> {
    lab.status(who)?.witness?.holder
}

#[test]
fn the_witness_lease_decides_who_is_active_and_rejects_forged_and_replayed_requests() {
    let Some((lab, witness)) = witness_pair("w") else {
        return;
    };
    let dump = |lab: &Lab, w: &Witness| {
        format!(
            "--- a ---\n{}\n--- b ---\n{}\n--- witness ---\n{}",
            lab.log("a"),
            lab.log("b"),
            w.text()
        )
    };

    // After initdead (2 s) and the witness's quiet period (one lease), a takes over with the lease.
    lab.wait_for("a active holding the lease", Duration::from_secs(20), |l| {
        state(l, "a") == Some(NodeState::Active)
            && state(l, "b") == Some(NodeState::Standby)
            && lease_holder(l, "a") == Some(1)
    });
    let st = lab.status("a").expect("status a");
    let lease = st.core.lease.expect("a has a lease status");
    assert!(lease.valid_for_ms.is_some_and(|v| v > 300), "{lease:?}");
    assert!(st.witness.as_ref().is_some_and(|w| w.reachable));
    // b only queries (once a second): it sees the witness and a as the holder.
    lab.wait_for("b sees a holding the lease", Duration::from_secs(5), |l| {
        l.status("b")
            .and_then(|s| s.witness)
            .is_some_and(|w| w.reachable && w.holder == Some(1))
    });
    assert!(lab.has_vip("a") && !lab.has_vip("b"));

    // Forged (wrong key) and replayed (an old sequence of node 1) requests, sent from c.
    let forged_keys = Keyring::new(
        Algorithm::HmacSha256,
        [(1u8, b"not-the-real-key-0123".to_vec())],
    )
    .unwrap();
    let real_keys = Keyring::new(
        Algorithm::HmacSha256,
        [(1u8, b"0123456789abcdef0123456789abcdef".to_vec())],
    )
    .unwrap();
    let gen_a = st.generation;
    let msg = |seq: u64| Msg {
        key_id: 1,
        kind: Kind::Request,
        cluster_id: 7,
        sender: 1,
        generation: gen_a,
        seq,
        subject: 1,
        echo_generation: 0,
        echo_seq: 0,
        ms: 0,
        holder: 0,
    };
    let forged = lease::encode(&msg(1_000_000), &forged_keys).unwrap();
    let replayed = lease::encode(&msg(1), &real_keys).unwrap();
    let target = format!("{}:{WITNESS_PORT}", LAN[2]);
    lab.in_netns("c", move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket in c");
        for d in [&forged, &replayed, &forged[..40].to_vec()] {
            s.send_to(d, &target).expect("send to the witness");
        }
    });
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        witness.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        let counters = witness
            .text()
            .lines()
            .rev()
            .find(|l| l.contains("witness status (SIGUSR1)"))
            .and_then(|l| l.split("counters=").nth(1))
            .and_then(|j| j.split_whitespace().next())
            .and_then(|j| serde_json::from_str::<LeaseCounters>(j).ok());
        if let Some(c) = counters.filter(|c| c.wire.bad_mac >= 1) {
            assert_eq!(c.wire.bad_mac, 1, "{c:?}");
            assert_eq!(c.wire.stale, 1, "the replayed request: {c:?}");
            assert_eq!(c.wire.too_short, 1, "{c:?}");
            assert!(c.accepted > 3, "{c:?}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the witness did not count the forged and replayed datagrams:\n{}",
            dump(&lab, &witness)
        );
    }
    assert!(witness.text().contains("rejected lease datagram"));
    // The forgeries changed nothing.
    assert_eq!(state(&lab, "a"), Some(NodeState::Active));

    // Isolate a: heartbeat link down, LAN (the path to b and to the witness) down.
    let sampler_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let both = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let samples = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (stop, both, samples) = (sampler_stop.clone(), both.clone(), samples.clone());
        let (na, nb) = (lab.ns("a"), lab.ns("b"));
        std::thread::spawn(move || {
            let has = |ns: &str| {
                let out = Command::new("ip")
                    .args(["-n", ns, "-o", "-4", "addr", "show", "dev", "lan0"])
                    .output()
                    .expect("ip runs");
                String::from_utf8_lossy(&out.stdout).contains(netns::VIP)
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a = has(&na);
                let b = has(&nb);
                samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if a && b {
                    both.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let cut = Instant::now();
    let out = lab.run_in("a", &["ip", "link", "set", "hb0", "down"]);
    assert!(out.status.success());
    let out = lab.run_in("a", &["ip", "link", "set", "lan0", "down"]);
    assert!(out.status.success());
    lab.wait_for("a demotes", Duration::from_secs(10), |l| {
        state(l, "a") == Some(NodeState::Standby)
    });
    let demoted = cut.elapsed();
    lab.wait_for("b takes over", Duration::from_secs(15), |l| {
        state(l, "b") == Some(NodeState::Active)
    });
    let took_over = cut.elapsed();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    let n = samples.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "isolation: a standby after {demoted:?}, b active after {took_over:?}, {n} VIP samples"
    );
    assert!(n > 10, "too few samples ({n}) to say anything");
    assert_eq!(
        both.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "both nodes held the VIP\n{}",
        dump(&lab, &witness)
    );
    assert!(demoted < took_over);
    assert!(!lab.has_vip("a") && lab.has_vip("b"));
    assert!(
        lab.log("a").contains("witness lease is running out"),
        "{}",
        lab.log("a")
    );
    lab.wait_for("b holds the lease", Duration::from_secs(5), |l| {
        lease_holder(l, "b") == Some(2)
    });
    assert!(witness.text().contains("lease holder changed"));
    drop(witness);
}

/// The witness stops answering while the pair is healthy: the active node's lease runs out, and
/// it keeps the service only because b echoes its beats' stamps (wire version 2): an echo bounds
/// when b could take over. Without echoes on the wire it would release as its lease ran out.
#[test]
fn with_the_witness_silent_a_healthy_pair_keeps_the_service_on_the_peers_echoes() {
    let Some((lab, witness)) = witness_pair("e") else {
        return;
    };
    lab.wait_for("a active holding the lease", Duration::from_secs(20), |l| {
        state(l, "a") == Some(NodeState::Active)
            && state(l, "b") == Some(NodeState::Standby)
            && lease_holder(l, "a") == Some(1)
    });

    // Frozen, not killed: it neither answers nor releases anything.
    witness.signal(libc::SIGSTOP);
    lab.wait_for(
        "a's lease runs out and a keeps the service on b's echoes",
        Duration::from_secs(2 * LEASE_MS / 1_000 + 5),
        |l| {
            l.log("a")
                .contains("keeping the service because peer tb-b stands by and confirms")
        },
    );
    let st = lab.status("a").expect("status a");
    // The lapse rule acts `lease-guard-ms` before the lease ends.
    assert!(
        st.core
            .lease
            .as_ref()
            .is_some_and(|l| l.valid_for_ms.unwrap_or(0) <= 300),
        "a's lease should be within its guard: {:?}",
        st.core.lease
    );
    // Two more lease periods without a witness: a stays active with the VIP at every look.
    let end = Instant::now() + Duration::from_millis(2 * LEASE_MS);
    let mut looks = 0;
    while Instant::now() < end {
        assert_eq!(
            state(&lab, "a"),
            Some(NodeState::Active),
            "{}",
            lab.log("a")
        );
        assert_eq!(
            state(&lab, "b"),
            Some(NodeState::Standby),
            "{}",
            lab.log("b")
        );
        assert!(lab.has_vip("a") && !lab.has_vip("b"));
        looks += 1;
    }
    assert!(looks > 10, "too few looks ({looks}) to say anything");
    assert!(
        !lab.log("a").contains("witness lease is running out"),
        "{}",
        lab.log("a")
    );

    // The witness answers again: a gets the lease back.
    witness.signal(libc::SIGCONT);
    lab.wait_for("a holds the lease again", Duration::from_secs(10), |l| {
        l.status("a")
            .and_then(|s| s.core.lease)
            .is_some_and(|l| l.valid_for_ms.is_some_and(|v| v > 0))
    });
    assert_eq!(state(&lab, "a"), Some(NodeState::Active));
    drop(witness);
}
