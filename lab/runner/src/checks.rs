//! The data checks every scenario ends with: no acknowledged write lost, the replica holding
//! exactly the primary's rows with no replication error, and the VIP answering the client.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::clientlog;
use crate::lab::{now_ms, run_quiet, Lab, VIP};

#[derive(Debug, Clone, Serialize)]
pub struct DataCheck {
    pub acked: usize,
    pub missing: Vec<u64>,
    pub indoubt: usize,
    pub indoubt_committed: usize,
    pub primary_rows: usize,
    pub replica_rows: i64,
    pub replica_running: bool,
    pub replica_error: String,
}

impl DataCheck {
    pub fn no_write_lost(&self) -> bool {
        self.missing.is_empty()
    }
    pub fn replica_consistent(&self) -> bool {
        self.replica_running
            && self.replica_error.is_empty()
            && self.replica_rows == self.primary_rows as i64
    }
}

/// Compares the client's acknowledged writes with the primary (through the VIP), then waits
/// (bounded) for the replica to hold the same rows.
pub fn data(lab: &Lab) -> Result<DataCheck> {
    // The acknowledged list is read BEFORE the primary is queried, so every id in it must
    // already be on the primary.
    let acked = clientlog::acked(&lab.logs)?;
    let indoubt = clientlog::indoubt(&lab.logs)?;
    let primary: BTreeSet<u64> = lab
        .sql_vip("SELECT id FROM lab.writes")
        .context("cannot read lab.writes through the VIP")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let missing: Vec<u64> = acked
        .iter()
        .map(|w| w.id)
        .filter(|id| !primary.contains(id))
        .collect();
    let p_max = primary.last().copied().unwrap_or(0);
    let indoubt_committed = indoubt.iter().filter(|w| primary.contains(&w.id)).count();
    // The writer keeps going: compare the replica on the primary's snapshot.
    let mut replica_rows = -1;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        replica_rows = lab
            .sql_replica(&format!(
                "SELECT COUNT(*) FROM lab.writes WHERE id <= {p_max}"
            ))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1);
        if replica_rows == primary.len() as i64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = replica_status().unwrap_or_default();
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    let replica_running = get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes";
    let replica_error = match get("Last_SQL_Errno").as_str() {
        "0" | "" if replica_running => String::new(),
        _ => format!(
            "IO {} / SQL {}: {} {}",
            get("Slave_IO_Running"),
            get("Slave_SQL_Running"),
            get("Last_SQL_Errno"),
            get("Last_SQL_Error")
        ),
    };
    Ok(DataCheck {
        acked: acked.len(),
        missing,
        indoubt: indoubt.len(),
        indoubt_committed,
        primary_rows: primary.len(),
        replica_rows,
        replica_running,
        replica_error,
    })
}

/// SHOW SLAVE STATUS as field → value.
pub fn replica_status() -> Result<HashMap<String, String>> {
    // With field names: the vertical format without -N.
    let out = crate::lab::replica_query(&["-e", "SHOW SLAVE STATUS\\G"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect())
}

/// How long after `since` (epoch ms) the replica first holds row `id`; bounded.
pub fn replica_catchup(lab: &Lab, id: u64, since: i64) -> Option<i64> {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let n = lab
            .sql_replica(&format!("SELECT COUNT(*) FROM lab.writes WHERE id = {id}"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        if n == Some(1) {
            return Some(now_ms() - since);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The VIP answers a ping from the client namespace.
pub fn vip_answers() -> bool {
    run_quiet(
        &[
            "nsenter",
            "--net=/run/netns/tblab-c",
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            VIP,
        ],
        5,
    )
    .is_ok_and(|o| o.status.success())
}
