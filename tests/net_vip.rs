//! The vip resource against real netlink and a real Ethernet segment, in network namespaces.
//!
//! Needs root (creates namespaces) and `ip` (iproute2) and `ping` (iputils-ping). Each test
//! builds its own namespaces named `tbvip-<pid>-<test>-<node>`, joined by a veth pair
//! `lan0`(A) <-> `lan0`(C), and a guard deletes them even when the test fails (deleting a
//! namespace deletes its veth end, and with it the pair). Code under test runs on a thread that
//! has `setns`-ed into the namespace, with its own current-thread tokio runtime, like the
//! daemon's. Only documentation address ranges are used.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use twinbeat::config::{Resource as ResourceConfig, ResourceKind};
use twinbeat::net::announce::{announce_burst, Burst};
use twinbeat::net::netlink;
use twinbeat::proto::announce::{ArpFrame, ArpOp, Mac, NaFrame, ALL_NODES, ALL_NODES_MAC};
use twinbeat::resources::vip::Vip;
use twinbeat::resources::{Context, Resource};

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Two namespaces A and C on one segment; deleted on drop.
struct Lab {
    a: String,
    c: String,
}

impl Lab {
    fn new(test: &str) -> Lab {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "tests/net_vip.rs needs root: it creates network namespaces (run `sudo ./test.sh`)"
        );
        let pid = std::process::id();
        let lab = Lab {
            a: format!("tbvip-{pid}-{test}-a"),
            c: format!("tbvip-{pid}-{test}-c"),
        };
        // The guard exists before anything is created, so a failure half-way still cleans up.
        for ns in [&lab.a, &lab.c] {
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link", "add", "lan0", "netns", &lab.a, "type", "veth", "peer", "name", "lan0",
            "netns", &lab.c,
        ]);
        for ns in [&lab.a, &lab.c] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "lan0", "up"]);
        }
        // C is the client on the segment. nodad: usable at once (no sleep waiting for DAD).
        ip(&["-n", &lab.c, "addr", "add", "192.0.2.2/24", "dev", "lan0"]);
        ip(&[
            "-n",
            &lab.c,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "lan0",
            "nodad",
        ]);
        lab
    }

    fn mac(&self, ns: &str) -> Mac {
        in_netns(ns, || {
            rt().block_on(netlink::link_info("lan0"))
                .expect("lan0 exists")
                .mac
                .expect("veth has a MAC")
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn run(argv: &[&str]) -> Output {
    // `timeout` bounds every child: a hung tool fails the test instead of hanging it.
    Command::new("timeout")
        .arg("10")
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

fn ip(args: &[&str]) -> String {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let out = run(&argv);
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(ns: &str, target: &str) -> bool {
    run(&["ip", "netns", "exec", ns, "ping", "-c1", "-W1", target])
        .status
        .success()
}

/// Runs `f` on a fresh thread that has joined namespace `ns`, and returns its result.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        // Only this thread moves; the test's other threads stay where they are.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread inside the namespace panicked")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn vip_config(address: &str, prefix: u8, interface: &str, label: Option<&str>) -> ResourceConfig {
    ResourceConfig {
        name: "service-ip".into(),
        start_timeout_ms: 5_000,
        stop_timeout_ms: 5_000,
        kind: ResourceKind::Vip {
            address: address.parse().unwrap(),
            prefix,
            interface: interface.into(),
            label: label.map(str::to_string),
            garp_refresh_ms: 0,
        },
    }
}

/// Starts capturing every frame on C's lan0; returns once the socket is open (so nothing sent
/// afterwards is missed). The capture ends when `done` says so or after CAPTURE_TIMEOUT.
fn capture(
    ns: &str,
    done: impl Fn(&[Vec<u8>]) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let path = format!("/run/netns/{ns}");
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = File::open(&path).expect("namespace file");
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let all = i32::from((libc::ETH_P_ALL as u16).to_be());
        let socket =
            Socket::new(Domain::PACKET, Type::RAW, Some(all.into())).expect("packet socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + CAPTURE_TIMEOUT;
        let mut frames = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        while Instant::now() < deadline && !done(&frames) {
            match socket.recv(&mut buf) {
                Ok(n) => frames.push(
                    buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect(),
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("capture on {path}: {e}"),
            }
        }
        frames
    });
    ready_rx
        .recv_timeout(CAPTURE_TIMEOUT)
        .expect("capture socket did not open in time");
    handle
}

fn garps(frames: &[Vec<u8>], vip: IpAddr) -> Vec<ArpFrame> {
    frames
        .iter()
        .filter_map(|f| ArpFrame::parse(f).ok())
        .filter(|a| IpAddr::V4(a.sender_ip) == vip && a.is_gratuitous())
        .collect()
}

fn nas(frames: &[Vec<u8>], vip: IpAddr) -> Vec<NaFrame> {
    frames
        .iter()
        .filter_map(|f| NaFrame::parse(f).ok())
        .filter(|n| IpAddr::V6(n.target) == vip)
        .collect()
}

#[test]
fn add_and_remove_are_idempotent_and_probed() {
    let lab = Lab::new("addrm");
    let a = lab.a.clone();
    in_netns(&lab.a.clone(), move || {
        rt().block_on(async {
            for (addr, prefix, label) in [(VIP4, 24, Some("lan0:db")), (VIP6, 64, None)] {
                let vip =
                    Vip::new(&vip_config(addr, prefix, "lan0", label), &Context::system()).unwrap();
                let ip: IpAddr = addr.parse().unwrap();
                assert!(!vip.probe().await.unwrap(), "{addr} present before acquire");

                vip.acquire().await.unwrap();
                vip.acquire().await.expect("acquiring twice is fine");
                assert!(vip.probe().await.unwrap(), "probe false after acquire");
                let listed = netlink::list_addresses("lan0").await.unwrap();
                let entry = listed
                    .iter()
                    .find(|e| e.address == ip)
                    .unwrap_or_else(|| panic!("{addr} not in netlink list {listed:?}"));
                assert_eq!(entry.prefix, prefix);
                if let Some(l) = label {
                    assert_eq!(entry.label.as_deref(), Some(l));
                }
                let shown = ip_addr_show(&a);
                let line = shown
                    .lines()
                    .find(|l| l.contains(&format!(" {addr}/{prefix} ")))
                    .unwrap_or_else(|| panic!("{addr}/{prefix} not in `ip -o addr`:\n{shown}"));
                if let Some(l) = label {
                    assert!(line.contains(l), "label {l} missing: {line}");
                } else {
                    assert!(!line.contains("tentative"), "nodad not applied: {line}");
                }

                vip.release().await.unwrap();
                vip.release().await.expect("releasing twice is fine");
                assert!(!vip.probe().await.unwrap(), "probe true after release");
                assert!(!ip_addr_show(&a).contains(&format!(" {addr}/")));
            }
        })
    });
}

fn ip_addr_show(ns: &str) -> String {
    ip(&["-n", ns, "-o", "addr", "show", "dev", "lan0"])
}

#[test]
fn acquire_announces_both_arp_forms_and_an_na() {
    let lab = Lab::new("garp");
    let mac_a = lab.mac(&lab.a);
    let vip4: IpAddr = VIP4.parse().unwrap();
    let vip6: IpAddr = VIP6.parse().unwrap();

    // Acquire sends the first round before it returns: one ARP request, one ARP reply.
    let cap = capture(&lab.c, move |f| {
        let g = garps(f, vip4);
        g.iter().any(|a| a.op == ArpOp::Request) && g.iter().any(|a| a.op == ArpOp::Reply)
    });
    in_netns(&lab.a, || {
        rt().block_on(async {
            let vip = Vip::new(&vip_config(VIP4, 24, "lan0", None), &Context::system()).unwrap();
            vip.acquire().await.unwrap();
        })
    });
    let frames = cap.join().unwrap();
    let g = garps(&frames, vip4);
    let request = g
        .iter()
        .find(|a| a.op == ArpOp::Request)
        .unwrap_or_else(|| panic!("no gratuitous ARP request for {VIP4} seen on C within {CAPTURE_TIMEOUT:?} ({} frames captured)", frames.len()));
    let reply = g.iter().find(|a| a.op == ArpOp::Reply).unwrap_or_else(|| {
        panic!("no gratuitous ARP reply for {VIP4} seen on C within {CAPTURE_TIMEOUT:?}")
    });
    for a in [request, reply] {
        assert_eq!(a.sender_mac, mac_a, "sender MAC is A's");
        assert_eq!(a.eth_src, mac_a);
        assert_eq!(a.target_ip, a.sender_ip);
    }
    assert_eq!(request.target_mac, [0; 6]);
    assert_eq!(reply.target_mac, mac_a);

    // IPv6: the unsolicited NA.
    let cap = capture(&lab.c, move |f| !nas(f, vip6).is_empty());
    in_netns(&lab.a, || {
        rt().block_on(async {
            let vip = Vip::new(&vip_config(VIP6, 64, "lan0", None), &Context::system()).unwrap();
            vip.acquire().await.unwrap();
        })
    });
    let frames = cap.join().unwrap();
    let na = *nas(&frames, vip6).first().unwrap_or_else(|| {
        panic!("no neighbour advertisement for {VIP6} seen on C within {CAPTURE_TIMEOUT:?}")
    });
    assert_eq!(na.hop_limit, 255);
    assert!(na.override_flag && !na.solicited && !na.router, "{na:?}");
    assert_eq!(na.target_mac, Some(mac_a));
    assert_eq!(na.eth_src, mac_a);
    assert_eq!((na.eth_dst, na.dst), (ALL_NODES_MAC, ALL_NODES));

    // A whole burst: count rounds, each with both ARP forms.
    let cap = capture(&lab.c, move |f| garps(f, vip4).len() >= 6);
    let sent = in_netns(&lab.a, move || {
        rt().block_on(announce_burst(
            "lan0",
            vip4,
            Burst {
                count: 3,
                spacing: Duration::from_millis(20),
            },
        ))
    })
    .unwrap();
    assert_eq!((sent.frames, sent.dropped), (6, 0));
    let g = garps(&cap.join().unwrap(), vip4);
    assert_eq!(
        g.len(),
        6,
        "expected 3 rounds of request + reply, saw {g:?}"
    );
}

#[test]
fn client_reaches_the_vip_only_while_held() {
    let lab = Lab::new("ping");
    let vip4 = Vip::new(
        &vip_config(VIP4, 24, "lan0", Some("lan0:db")),
        &Context::system(),
    );
    let vip6 = Vip::new(&vip_config(VIP6, 64, "lan0", None), &Context::system());
    let (vip4, vip6) = (vip4.unwrap(), vip6.unwrap());
    let c = lab.c.clone();
    in_netns(&lab.a, move || {
        rt().block_on(async {
            assert!(!ping(&c, VIP4), "{VIP4} answered before acquire");
            vip4.acquire().await.unwrap();
            vip6.acquire().await.unwrap();
            assert!(ping(&c, VIP4), "C cannot ping {VIP4} after acquire");
            assert!(ping(&c, VIP6), "C cannot ping {VIP6} after acquire");
            vip4.release().await.unwrap();
            vip6.release().await.unwrap();
            assert!(!ping(&c, VIP4), "{VIP4} still answers after release");
            assert!(!ping(&c, VIP6), "{VIP6} still answers after release");
        })
    });
}

#[test]
fn missing_interface_is_a_clear_error() {
    let lab = Lab::new("noif");
    in_netns(&lab.a, || {
        rt().block_on(async {
            let vip = Vip::new(&vip_config(VIP4, 24, "nosuch0", None), &Context::system()).unwrap();
            let e = vip.acquire().await.unwrap_err().to_string();
            assert_eq!(
                e,
                "cannot add 192.0.2.10/24 to nosuch0: no interface nosuch0 in this network \
                 namespace; check `interface` in the vip resource"
            );
            let e = vip.release().await.unwrap_err().to_string();
            assert!(
                e.starts_with("cannot remove 192.0.2.10/24 from nosuch0: no interface nosuch0"),
                "{e}"
            );
            let e = vip.probe().await.unwrap_err().to_string();
            assert!(e.contains("no interface nosuch0"), "{e}");
            let e = vip.announce().unwrap().await.unwrap_err().to_string();
            assert!(e.contains("no interface nosuch0"), "{e}");
            // A name the kernel could never accept is the same mistake, not a crash.
            let e = netlink::link_info("a-name-far-too-long-for-linux")
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("no interface a-name-far-too-long-for-linux"),
                "{e}"
            );
        })
    });
}

#[test]
fn announce_refuses_an_address_not_held() {
    let lab = Lab::new("notheld");
    in_netns(&lab.a, || {
        rt().block_on(async {
            let vip = Vip::new(&vip_config(VIP4, 24, "lan0", None), &Context::system()).unwrap();
            let e = vip.announce().unwrap().await.unwrap_err().to_string();
            assert_eq!(
                e,
                "cannot announce 192.0.2.10 on lan0: the address is not on the interface; \
                 acquire the vip first"
            );
        })
    });
}

/// The failover case end to end: C still maps the VIP to the old owner's MAC; after A
/// acquires, C's own kernel has switched both entries to A's MAC. This checks the frames
/// against a real stack (checksum, hop limit, flags), not only against our parser.
#[test]
fn client_caches_follow_the_new_owner() {
    let lab = Lab::new("neigh");
    let mac_a = lab.mac(&lab.a);
    let old = "02:00:00:00:00:99";
    // A real entry is older than ARP's locktime (1 s), which blocks overrides of entries
    // updated more recently; locktime 0 stands in for that age instead of a sleep.
    ip(&[
        "-n",
        &lab.c,
        "ntable",
        "change",
        "name",
        "arp_cache",
        "dev",
        "lan0",
        "locktime",
        "0",
    ]);
    for vip in [VIP4, VIP6] {
        ip(&[
            "-n", &lab.c, "neigh", "replace", vip, "lladdr", old, "dev", "lan0", "nud", "stale",
        ]);
    }
    in_netns(&lab.a, || {
        rt().block_on(async {
            for (addr, prefix) in [(VIP4, 24), (VIP6, 64)] {
                let vip = Vip::new(&vip_config(addr, prefix, "lan0", None), &Context::system());
                vip.unwrap().acquire().await.unwrap();
            }
        })
    });
    let want = mac_a
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    for vip in [VIP4, VIP6] {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let entry = ip(&["-n", &lab.c, "neigh", "show", vip, "dev", "lan0"]);
            if entry.contains(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "C still maps {vip} to {entry:?} 2 s after A acquired it; expected lladdr {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The background schedule: acquire sends 1 round, then 2 more, then after
/// SECOND_BURST_DELAY another burst; release cancels whatever is still pending. Tokio's
/// paused clock makes the delays instant, and a marker frame sent last (the segment keeps
/// order) proves nothing else was coming, without waiting out a capture window.
#[test]
fn second_burst_follows_and_release_cancels_it() {
    use twinbeat::net::announce::{FIRST_BURST, SECOND_BURST, SECOND_BURST_DELAY};
    let lab = Lab::new("sched");
    let vip4: IpAddr = VIP4.parse().unwrap();
    let marker: IpAddr = "192.0.2.99".parse().unwrap();
    let saw_marker = move |f: &[Vec<u8>]| !garps(f, marker).is_empty();
    let paused_rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let send_marker = move || async move {
        let once = Burst {
            count: 1,
            spacing: Duration::ZERO,
        };
        announce_burst("lan0", marker, once).await.unwrap();
    };
    let wait_all = SECOND_BURST_DELAY + FIRST_BURST.spacing * 10 + SECOND_BURST.spacing * 10;

    let cap = capture(&lab.c, saw_marker);
    in_netns(&lab.a, move || {
        paused_rt().block_on(async move {
            let vip = Vip::new(&vip_config(VIP4, 24, "lan0", None), &Context::system()).unwrap();
            vip.acquire().await.unwrap();
            tokio::time::sleep(wait_all).await;
            send_marker().await;
        })
    });
    let rounds = FIRST_BURST.count + SECOND_BURST.count;
    let g = garps(&cap.join().unwrap(), vip4);
    assert_eq!(
        g.len() as u32,
        2 * rounds,
        "expected {rounds} rounds of request + reply, saw {g:?}"
    );

    let cap = capture(&lab.c, saw_marker);
    in_netns(&lab.a, move || {
        paused_rt().block_on(async move {
            let vip = Vip::new(&vip_config(VIP4, 24, "lan0", None), &Context::system()).unwrap();
            vip.acquire().await.unwrap();
            vip.release().await.unwrap();
            tokio::time::sleep(wait_all).await;
            send_marker().await;
        })
    });
    let g = garps(&cap.join().unwrap(), vip4);
    assert_eq!(
        g.len(),
        2,
        "after release only the first round (sent inside acquire) may appear, saw {g:?}"
    );
}
