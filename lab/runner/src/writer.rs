//! The lab's client: one INSERT every `interval` through the VIP, on a kept connection as an
//! application's pool would hold it, with an increasing id.
//!
//! - `acked.log`   "ID EPOCH_MS": the server acknowledged it; it must never be lost.
//! - `indoubt.log` "ID EPOCH_MS ERROR": the statement was sent but no acknowledgement came back;
//!   during a failover such a write may still have committed (LAB.md: 8 of 10 did), so it is
//!   in doubt, and its id is never reused. A failed connect sends nothing and uses no id.
//! - `vip.log`     "EPOCH_MS up|down": when the VIP started or stopped answering ICMP echo
//!   (probed every 20 ms on a thread of its own, so a stuck write does not hide an outage).
//!
//! Short timeouts (connect 400 ms, statement 1 s) let it notice a new primary within a few
//! hundred ms, so sub-second write gaps can be measured.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;

use crate::clientlog;
use crate::icmp::Pinger;
use crate::lab::now_ms;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);
const WRITE_TIMEOUT: Duration = Duration::from_millis(1000);
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_WAIT: Duration = Duration::from_millis(100);

pub fn main(logdir: &Path, stopfile: &Path, max_seconds: u64, interval_ms: u64) -> Result<bool> {
    let vip: Ipv4Addr = std::env::var("VIP")
        .context("VIP must be set")?
        .parse()
        .context("VIP must be an IPv4 address")?;
    let password =
        std::env::var("MYSQL_PWD").context("MYSQL_PWD must be set (the writer password)")?;
    let open = |name: &str| -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(logdir.join(name))
            .with_context(|| format!("cannot open {}", logdir.join(name).display()))
    };
    let mut acked = open("acked.log")?;
    let mut indoubt = open("indoubt.log")?;
    let viplog = open("vip.log")?;
    // Continue after the highest id ever tried, so a restarted writer never reuses an id.
    let mut id = clientlog::highest_id(logdir)? + 1;
    let deadline = Instant::now() + Duration::from_secs(max_seconds);

    let stop = stopfile.to_path_buf();
    let prober = std::thread::spawn(move || probe_vip(vip, viplog, &stop, deadline));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(vip.to_string())
            .tcp_port(3306)
            .user(Some("writer"))
            .pass(Some(password))
            .prefer_socket(false)
            .stmt_cache_size(0);
        let mut conn: Option<mysql_async::Conn> = None;
        while !stopfile.exists() && Instant::now() < deadline {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    match tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        mysql_async::Conn::new(opts.clone()),
                    )
                    .await
                    {
                        Ok(Ok(c)) => conn.insert(c),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                            continue;
                        }
                    }
                }
            };
            let sql = format!("INSERT INTO lab.writes (id, at) VALUES ({id}, NOW(6))");
            match tokio::time::timeout(WRITE_TIMEOUT, c.query_drop(sql)).await {
                Ok(Ok(())) => writeln!(acked, "{id} {}", now_ms())?,
                Ok(Err(e)) => {
                    let e = e.to_string().replace('\n', " ");
                    writeln!(indoubt, "{id} {} {e}", now_ms())?;
                    conn = None;
                }
                Err(_) => {
                    writeln!(
                        indoubt,
                        "{id} {} no answer within {WRITE_TIMEOUT:?}",
                        now_ms()
                    )?;
                    conn = None;
                }
            }
            id += 1;
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let _ = prober.join();
    Ok(true)
}

fn probe_vip(vip: Ipv4Addr, mut log: File, stop: &Path, deadline: Instant) {
    let mut pinger = match Pinger::new(vip) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("writer: no VIP prober (raw ICMP socket: {e}); vip.log stays empty");
            return;
        }
    };
    let mut last = None;
    while !stop.exists() && Instant::now() < deadline {
        let t = Instant::now();
        // The send time, not the verdict's: a lost reply is only known PROBE_WAIT later.
        let at = now_ms();
        let up = pinger.ping(PROBE_WAIT);
        if last != Some(up) {
            last = Some(up);
            let _ = writeln!(log, "{at} {}", if up { "up" } else { "down" });
        }
        std::thread::sleep(PROBE_EVERY.saturating_sub(t.elapsed()));
    }
}
