//! The `vip` resource kind: a service address that follows the active node.
//!
//! Owns: putting the address on the configured interface (`acquire`), taking it off
//! (`release`), telling whether it is there (`probe`), and announcing it to the segment
//! (gratuitous ARP / unsolicited NA) so that clients and replicas stop sending to the old
//! owner's MAC. Must not touch: other addresses, routes, the interface's state, or any
//! decision about when to move the address — the core decides, this only executes.
//!
//! Announcement schedule: `acquire` and `announce` send the first round of frames before
//! they return (so a finished step means the segment has already been told), then spawn one
//! task on the current tokio runtime that sends the rest of the first burst and, after
//! [`SECOND_BURST_DELAY`], a second burst. `release` (and a newer announce, and dropping the
//! `Vip`) aborts that task first: a node must never announce an address it has given away,
//! or it would pull the traffic back from the new owner.
//!
//! With `garp-refresh-ms` set, the same task then sends one round every period for as long as
//! the address is held (keepalived's `garp_master_refresh`), for switches and hosts that age
//! out entries of an address that rarely talks first. A round that comes due much later than
//! planned is skipped: the process was paused or starved, and until the core has looked at the
//! peer again this node may no longer be the owner.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::{Context, Resource, StepError, StepResult};
use crate::config;
use crate::exec::BoxFuture;
use crate::net::announce::{
    announce_burst, refresh_round, AnnounceError, Burst, FIRST_BURST, SECOND_BURST,
    SECOND_BURST_DELAY,
};
use crate::net::netlink;

pub struct Vip {
    name: String,
    address: IpAddr,
    prefix: u8,
    interface: String,
    label: Option<String>,
    /// 0 = no periodic refresh.
    refresh: Duration,
    /// The background part of the latest announce, if still running.
    pending: Mutex<Option<AbortHandle>>,
}

impl Vip {
    pub fn new(r: &config::Resource, _ctx: &Context) -> StepResult<Vip> {
        let config::ResourceKind::Vip {
            address,
            prefix,
            interface,
            label,
            garp_refresh_ms,
        } = &r.kind
        else {
            return Err(StepError::Failed(format!(
                "resource {} is a {}, not a vip",
                r.name,
                r.kind.name()
            )));
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        if *prefix > max {
            return Err(StepError::Failed(format!(
                "vip {address}/{prefix} in resource {}: the prefix must be at most {max}",
                r.name
            )));
        }
        if address.is_ipv6() && label.is_some() {
            return Err(StepError::Failed(format!(
                "vip {address} in resource {}: `label` is IPv4 only; remove it",
                r.name
            )));
        }
        Ok(Vip {
            name: r.name.clone(),
            address: *address,
            prefix: *prefix,
            interface: interface.clone(),
            label: label.clone(),
            refresh: Duration::from_millis(*garp_refresh_ms),
            pending: Mutex::new(None),
        })
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }

    fn abort_pending(&self) {
        // A poisoned lock only means a panic elsewhere while holding it; the handle inside
        // is still the one to abort.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = pending.take() {
            task.abort();
        }
    }

    /// First round now; the rest of the first burst and the second burst in the background.
    async fn start_announce(&self) -> Result<(), AnnounceError> {
        self.abort_pending();
        let now = Burst {
            count: 1,
            ..FIRST_BURST
        };
        announce_burst(&self.interface, self.address, now).await?;
        let (interface, address, refresh) = (self.interface.clone(), self.address, self.refresh);
        let task = tokio::spawn(async move {
            if FIRST_BURST.count > 1 {
                tokio::time::sleep(FIRST_BURST.spacing).await;
                let rest = Burst {
                    count: FIRST_BURST.count - 1,
                    ..FIRST_BURST
                };
                if let Err(e) = announce_burst(&interface, address, rest).await {
                    tracing::warn!(%address, %interface, error = %e, "announce (rest of first burst) failed");
                }
            }
            tokio::time::sleep(SECOND_BURST_DELAY).await;
            if let Err(e) = announce_burst(&interface, address, SECOND_BURST).await {
                tracing::warn!(%address, %interface, error = %e, "announce (second burst) failed");
            }
            if !refresh.is_zero() {
                refresh_forever(&interface, address, refresh).await;
            }
        });
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }
}

/// Refreshes every `period` until aborted (by `release`, a newer announce, or drop).
async fn refresh_forever(interface: &str, address: IpAddr, period: Duration) {
    // Half a period, at least a second: normal timer jitter never trips it, a pause does.
    let slack = (period / 2).max(Duration::from_secs(1));
    let mut due = tokio::time::Instant::now() + period;
    loop {
        tokio::time::sleep_until(due).await;
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        due = tokio::time::Instant::now() + period;
        if late > slack {
            tracing::warn!(%address, %interface, late_ms = late.as_millis() as u64, "skipping a late gratuitous ARP refresh: this process was paused or starved, and the core decides first whether it still owns the address");
            continue;
        }
        if let Err(e) = refresh_round(interface, address).await {
            tracing::warn!(%address, %interface, error = %e, "gratuitous ARP refresh failed; retrying next period");
        }
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        self.abort_pending();
    }
}

impl Resource for Vip {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(async move {
            let started = Instant::now();
            let added = netlink::add_address(
                &self.interface,
                self.address,
                self.prefix,
                self.label.as_deref(),
            )
            .await
            .map_err(|e| {
                StepError::Failed(format!(
                    "cannot add {} to {}: {e}",
                    self.cidr(),
                    self.interface
                ))
            })?;
            tracing::info!(
                resource = %self.name,
                address = %self.cidr(),
                interface = %self.interface,
                label = self.label.as_deref().unwrap_or(""),
                result = if added { "added" } else { "already present" },
                elapsed_ms = started.elapsed().as_millis() as u64,
                "vip address add"
            );
            // The address is in place and serves whoever already has our MAC. A failed
            // announce only leaves other hosts' caches stale until they expire, so it is
            // logged rather than failing (and rolling back) the whole takeover; the core can
            // re-announce through `announce()`, which does report errors.
            if let Err(e) = self.start_announce().await {
                tracing::warn!(
                    resource = %self.name,
                    address = %self.address,
                    interface = %self.interface,
                    "cannot announce {} on {}: {e}",
                    self.address,
                    self.interface
                );
            }
            Ok(())
        })
    }

    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(async move {
            let started = Instant::now();
            self.abort_pending();
            let removed = netlink::del_address(&self.interface, self.address)
                .await
                .map_err(|e| {
                    StepError::Failed(format!(
                        "cannot remove {} from {}: {e}",
                        self.cidr(),
                        self.interface
                    ))
                })?;
            tracing::info!(
                resource = %self.name,
                address = %self.cidr(),
                interface = %self.interface,
                result = if removed { "removed" } else { "already absent" },
                elapsed_ms = started.elapsed().as_millis() as u64,
                "vip address remove"
            );
            Ok(())
        })
    }

    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(async move {
            netlink::has_address(&self.interface, self.address)
                .await
                .map_err(|e| {
                    StepError::Failed(format!(
                        "cannot check for {} on {}: {e}",
                        self.address, self.interface
                    ))
                })
        })
    }

    fn announce(&self) -> Option<BoxFuture<'_, StepResult>> {
        Some(Box::pin(async move {
            let fail = |why: String| {
                StepError::Failed(format!(
                    "cannot announce {} on {}: {why}",
                    self.address, self.interface
                ))
            };
            // Announcing an address we do not hold would steal it from its owner.
            let held = netlink::has_address(&self.interface, self.address)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !held {
                return Err(fail(
                    "the address is not on the interface; acquire the vip first".into(),
                ));
            }
            self.start_announce().await.map_err(|e| fail(e.to_string()))
        }))
    }
}
