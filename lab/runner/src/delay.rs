//! The link-delay fault: a node's outgoing heartbeats on one interface held back for a fixed
//! time, in order, then sent on.
//!
//! This kernel has no netem qdisc (the usual way to delay a link), but it has NFQUEUE: an
//! iptables rule in the node's namespace hands each heartbeat to a netlink queue, and a thread
//! of this process, moved into that namespace, gives the verdict "accept" once the packet is
//! `delay` old. The rule carries `--queue-bypass`, so if the thread is gone (a crashed runner)
//! the packets pass undelayed instead of being dropped; the rule dies with the namespace.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::lab::{run_in_netns, Node};

/// The NFQUEUE number; queues are per network namespace, so both nodes can use the same one.
const QUEUE: u16 = 694;

/// A running delay; `stop` (or drop) removes the rule and sends every held packet on when due.
pub struct Delay {
    node: Node,
    rules: Vec<Vec<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl Delay {
    /// Starts holding `n`'s outgoing heartbeats (UDP 694) on each of `ifaces` for `delay`. One
    /// queue per namespace: a second reader could not bind it.
    pub fn start(n: Node, ifaces: &[&str], delay: Duration) -> Result<Delay> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = format!("/run/netns/{}", n.ns());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || hold(&ns, delay, &flag, ready_tx));
        // The queue is bound before a rule exists: no heartbeat meets a rule without a reader.
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                bail!("delay on {n}: {e}");
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                bail!("delay on {n}: the queue thread did not bind NFQUEUE {QUEUE} in 5 s");
            }
        }
        let queue = QUEUE.to_string();
        let rules: Vec<Vec<String>> = ifaces
            .iter()
            .map(|iface| {
                [
                    "OUTPUT",
                    "-o",
                    iface,
                    "-p",
                    "udp",
                    "--dport",
                    "694",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                    "--queue-bypass",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            })
            .collect();
        let mut d = Delay {
            node: n,
            rules: Vec::new(),
            stop,
            thread: Some(thread),
        };
        for rule in rules {
            iptables(n, "-A", &rule).with_context(|| {
                format!("delay on {n}: cannot add the NFQUEUE rule (is the iptables package installed?)")
            })?;
            d.rules.push(rule);
        }
        Ok(d)
    }

    /// Removes the rule, waits until every held packet went out, and says how many were delayed.
    pub fn stop(mut self) -> Result<u64> {
        self.finish()
    }

    fn finish(&mut self) -> Result<u64> {
        let Some(thread) = self.thread.take() else {
            return Ok(0);
        };
        let mut removed = Ok(());
        for rule in std::mem::take(&mut self.rules) {
            let r = iptables(self.node, "-D", &rule).or_else(|e| {
                // A node powered off and on during the delay has a fresh namespace, no rule.
                match iptables(self.node, "-C", &rule) {
                    Err(_) => Ok(()),
                    Ok(()) => Err(e),
                }
            });
            removed = removed.and(r);
        }
        self.stop.store(true, Ordering::Relaxed);
        let held = thread
            .join()
            .map_err(|_| anyhow!("delay on {}: the queue thread panicked", self.node))?;
        removed?;
        held
    }
}

fn iptables(n: Node, op: &str, rule: &[String]) -> Result<()> {
    let mut argv = vec!["iptables", "-w", "5", op];
    argv.extend(rule.iter().map(String::as_str));
    run_in_netns(n, &argv, 10)
}

impl Drop for Delay {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.finish() {
                eprintln!("twinbeat-lab: ending the delay on {}: {e:#}", self.node);
            }
        }
    }
}

/// The queue thread: enter the namespace, bind the queue, hold each packet for `delay`.
fn hold(
    ns: &str,
    delay: Duration,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<u64> {
    let bound = (|| -> Result<nfq::Queue> {
        let f = std::fs::File::open(ns).with_context(|| format!("cannot open {ns}"))?;
        // SAFETY: setns on a namespace fd we hold open; it moves only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {ns}: {}", std::io::Error::last_os_error());
        }
        let mut q = nfq::Queue::open().context("cannot open a netfilter queue socket")?;
        q.bind(QUEUE)
            .with_context(|| format!("cannot bind NFQUEUE {QUEUE}"))?;
        q.set_fail_open(QUEUE, true)?;
        q.set_nonblocking(true);
        Ok(q)
    })();
    let mut q = match bound {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut delayed = 0u64;
    let mut stopped_at: Option<Instant> = None;
    loop {
        loop {
            match q.recv() {
                Ok(m) => held.push_back((Instant::now() + delay, m)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut m) = held.pop_front().expect("front exists");
            m.set_verdict(nfq::Verdict::Accept);
            q.verdict(m).context("accepting a delayed packet")?;
            delayed += 1;
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stopped_at.get_or_insert(now);
            // Held packets leave when due; a packet queued after the rule went is in that bound.
            if held.is_empty() && now >= since + Duration::from_millis(50) {
                return Ok(delayed);
            }
        }
        // The packets' due times are the fault itself; 1 ms is the delay's resolution.
        std::thread::sleep(Duration::from_millis(1));
    }
}
