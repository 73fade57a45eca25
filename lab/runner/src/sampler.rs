//! The split-brain watch: every 50 ms, which nodes hold the VIP and which have a writable
//! database (mariadbd answering on the node's own socket with read_only off). Two at once is a
//! violation, whatever the scenario.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::lab::{now_ms, Node, VIP};

const EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub count: u64,
    /// Sample times (epoch ms) at which both nodes held the VIP.
    pub both_vip: Vec<i64>,
    /// Sample times at which both databases were writable.
    pub both_writable: Vec<i64>,
    /// Per sample: (time, VIP holders, writable nodes) as bit sets (a = 1, b = 2).
    pub timeline: Vec<(i64, u8, u8)>,
}

impl Samples {
    /// The node that held the VIP at every sample, if one did.
    pub fn sole_vip_holder(&self) -> Option<Node> {
        let first = self.timeline.first()?.1;
        let n = match first {
            1 => Node::A,
            2 => Node::B,
            _ => return None,
        };
        self.timeline.iter().all(|s| s.1 == first).then_some(n)
    }
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Samples>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(sample(s))
        });
        Sampler { stop, handle }
    }

    pub fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

async fn sample(stop: Arc<AtomicBool>) -> Samples {
    let mut out = Samples::default();
    let mut conns: [Option<mysql_async::Conn>; 2] = [None, None];
    while !stop.load(Ordering::Relaxed) {
        let tick = tokio::time::Instant::now();
        let at = now_ms();
        let (va, vb) = tokio::join!(holds_vip(Node::A), holds_vip(Node::B));
        let [ca, cb] = &mut conns;
        let (wa, wb) = tokio::join!(writable(Node::A, ca), writable(Node::B, cb));
        let vip = u8::from(va) | (u8::from(vb) << 1);
        let w = u8::from(wa) | (u8::from(wb) << 1);
        out.count += 1;
        if vip == 3 {
            out.both_vip.push(at);
        }
        if w == 3 {
            out.both_writable.push(at);
        }
        out.timeline.push((at, vip, w));
        tokio::time::sleep_until(tick + EVERY).await;
    }
    out
}

async fn holds_vip(n: Node) -> bool {
    let ns = n.ns();
    let out = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::process::Command::new("ip")
            .args(["-n", &ns, "-o", "-4", "addr", "show", "dev", "lan0"])
            .output(),
    )
    .await;
    matches!(out, Ok(Ok(o)) if String::from_utf8_lossy(&o.stdout).contains(&format!(" {VIP}/")))
}

/// mariadbd answers on this node's socket and is not read-only. The connection is kept between
/// samples; any error drops it and counts as not writable.
async fn writable(n: Node, conn: &mut Option<mysql_async::Conn>) -> bool {
    if conn.is_none() {
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(n.mysqld_socket().to_string_lossy().into_owned()))
            .user(Some("root"))
            .stmt_cache_size(0);
        match tokio::time::timeout(Duration::from_millis(300), mysql_async::Conn::new(opts)).await {
            Ok(Ok(c)) => *conn = Some(c),
            _ => return false,
        }
    }
    let Some(c) = conn.as_mut() else { return false };
    let q = c.query_first::<i64, _>("SELECT @@global.read_only");
    match tokio::time::timeout(Duration::from_millis(300), q).await {
        Ok(Ok(Some(0))) => true,
        Ok(Ok(_)) => false,
        _ => {
            *conn = None;
            false
        }
    }
}
