//! Pure parsers for DRBD's own reports of one resource's state: `drbdsetup events2` (one-shot
//! `--now` and streamed lines) and, as a fallback, plain `drbdadm status`.
//!
//! Owns: turning text into a `DrbdState`. Must not touch: processes, time, the core's decisions.
//! Written against the real output recorded from DRBD 8.4.11 with drbd-utils 9.22
//! (`shared/fixtures/drbd-8.4/`), and tolerant of what DRBD 9 adds: several peers with real
//! `peer-node-id`s and host names in `conn-name`, `path` objects, `call`/`response` helper lines,
//! extra keys (quorum, statistics). Unknown objects and keys are ignored; garbage never panics.
//!
//! `events2` is the primary source because drbd-utils keeps its format stable across 8.4 and 9
//! (`drbdsetup status --json` does not exist on 8.4; plain `status` changes shape between them).

use std::collections::BTreeMap;

use crate::core::DiskState;

/// A node's role for one DRBD resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    /// Not reported, or DRBD itself does not know (e.g. the peer while disconnected).
    #[default]
    Unknown,
}

impl Role {
    pub fn parse(s: &str) -> Role {
        match s {
            "Primary" => Role::Primary,
            "Secondary" => Role::Secondary,
            _ => Role::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
            Role::Unknown => "Unknown",
        }
    }
}

/// Maps DRBD's disk-state names (8.4 and 9) onto the core's `DiskState`.
pub fn disk_state(s: &str) -> DiskState {
    match s {
        "UpToDate" => DiskState::UpToDate,
        "Consistent" => DiskState::Consistent,
        "Outdated" => DiskState::Outdated,
        "Inconsistent" => DiskState::Inconsistent,
        "Negotiating" => DiskState::Negotiating,
        "Failed" => DiskState::Failed,
        "Attaching" => DiskState::Attaching,
        // DRBD 9's `Detaching` is on its way to `Diskless`: no usable local data either way.
        "Diskless" | "Detaching" => DiskState::Diskless,
        // `DUnknown` and anything newer than this code.
        _ => DiskState::Unknown,
    }
}

/// DRBD's name for a disk state, for messages.
pub fn disk_name(d: DiskState) -> &'static str {
    match d {
        DiskState::Unknown => "DUnknown",
        DiskState::NotReplicated => "NotReplicated",
        DiskState::Diskless => "Diskless",
        DiskState::Attaching => "Attaching",
        DiskState::Failed => "Failed",
        DiskState::Negotiating => "Negotiating",
        DiskState::Inconsistent => "Inconsistent",
        DiskState::Outdated => "Outdated",
        DiskState::Consistent => "Consistent",
        DiskState::UpToDate => "UpToDate",
    }
}

/// What twinbeat needs to know about one DRBD resource on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdState {
    /// Whether the resource is up in the kernel (`drbdadm up` was run).
    pub exists: bool,
    pub role: Role,
    /// The local disk; with several volumes, the least usable one (promotion needs all).
    pub disk: DiskState,
    /// `Connected`, `Connecting`, `StandAlone`, `NetworkFailure`, ...; `None` when no peer is
    /// configured or reported.
    pub connection: Option<String>,
    pub peer_role: Role,
    pub peer_disk: DiskState,
    /// `Established`, `SyncSource`, `SyncTarget`, `Off`, ...; `None` when not reported.
    pub replication: Option<String>,
}

impl DrbdState {
    /// A resource that is not up.
    pub fn absent() -> DrbdState {
        DrbdState {
            exists: false,
            role: Role::Unknown,
            disk: DiskState::Unknown,
            connection: None,
            peer_role: Role::Unknown,
            peer_disk: DiskState::Unknown,
            replication: None,
        }
    }

    /// One line for logs and messages, in DRBD's own words.
    pub fn summary(&self) -> String {
        if !self.exists {
            return "not up".to_string();
        }
        format!(
            "role {}, disk {}, connection {}, peer role {}, peer disk {}, replication {}",
            self.role.as_str(),
            disk_name(self.disk),
            self.connection.as_deref().unwrap_or("none"),
            self.peer_role.as_str(),
            disk_name(self.peer_disk),
            self.replication.as_deref().unwrap_or("none"),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no drbd events2 line in the output{}", quote(.first))]
    NoEvents { first: Option<String> },
    #[error("the events2 output ends before its `exists -` marker (truncated output?)")]
    Truncated,
    #[error("no `{resource}` resource block in the drbdadm status output{}", quote(.first))]
    NoStatus {
        resource: String,
        first: Option<String>,
    },
}

fn quote(first: &Option<String>) -> String {
    match first {
        Some(l) => {
            let l: String = l.chars().take(120).collect();
            format!(" (first line: {l:?})")
        }
        None => " (it is empty)".to_string(),
    }
}

/// What one events2 line did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Updated the state.
    Applied,
    /// `exists -`: the end of the initial dump; what follows are live changes.
    EndOfInitial,
    /// A well-formed events2 line that does not concern us (another resource, a helper call,
    /// an object or event type we do not track).
    Ignored,
    /// Not an events2 line at all.
    Unrecognized,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    connection: Option<String>,
    role: Role,
}

#[derive(Clone, Debug, Default)]
struct PeerDevice {
    replication: Option<String>,
    disk: Option<DiskState>,
}

/// Folds `drbdsetup events2` lines (with or without `--timestamps`) into one resource's state.
/// Feed it the `--now` dump, or a stream line by line.
#[derive(Clone, Debug)]
pub struct Events2 {
    resource: String,
    exists: bool,
    role: Role,
    volumes: BTreeMap<u32, DiskState>,
    /// Keyed by `peer-node-id` (DRBD 8.4 always says 0), else by `conn-name`.
    peers: BTreeMap<String, Peer>,
    peer_devices: BTreeMap<(String, u32), PeerDevice>,
    initial_done: bool,
}

impl Events2 {
    pub fn new(resource: &str) -> Events2 {
        Events2 {
            resource: resource.to_string(),
            exists: false,
            role: Role::Unknown,
            volumes: BTreeMap::new(),
            peers: BTreeMap::new(),
            peer_devices: BTreeMap::new(),
            initial_done: false,
        }
    }

    /// Whether the `exists -` marker has been seen.
    pub fn initial_done(&self) -> bool {
        self.initial_done
    }

    pub fn apply(&mut self, line: &str) -> Line {
        let mut tokens = line.split_whitespace().peekable();
        // `--timestamps` prefixes an RFC 3339 time; skip anything that looks like one.
        if let Some(t) = tokens.peek() {
            if t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('T') {
                tokens.next();
            }
        }
        let Some(event) = tokens.next() else {
            return Line::Unrecognized;
        };
        if !matches!(
            event,
            "exists" | "create" | "change" | "destroy" | "call" | "response" | "rename"
        ) {
            return Line::Unrecognized;
        }
        let Some(object) = tokens.next() else {
            return Line::Unrecognized;
        };
        if object == "-" {
            if event == "exists" {
                self.initial_done = true;
                return Line::EndOfInitial;
            }
            return Line::Ignored;
        }
        if matches!(event, "call" | "response" | "rename") {
            // Helper invocations (before-resync-source, fence-peer, ...) change no state.
            return Line::Ignored;
        }
        let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
        for t in tokens {
            if let Some((k, v)) = t.split_once(':') {
                keys.insert(k, v);
            }
        }
        if keys.get("name") != Some(&self.resource.as_str()) {
            return Line::Ignored;
        }
        let destroy = event == "destroy";
        let volume = match keys.get("volume") {
            None => 0,
            Some(v) => match v.parse::<u32>() {
                Ok(v) => v,
                Err(_) => return Line::Ignored,
            },
        };
        let peer_key = keys
            .get("peer-node-id")
            .or_else(|| keys.get("conn-name"))
            .copied()
            .unwrap_or("")
            .to_string();
        match object {
            "resource" => {
                if destroy {
                    *self = Events2 {
                        initial_done: self.initial_done,
                        ..Events2::new(&self.resource)
                    };
                    return Line::Applied;
                }
                self.exists = true;
                if let Some(r) = keys.get("role") {
                    self.role = Role::parse(r);
                }
            }
            "device" => {
                if destroy {
                    self.volumes.remove(&volume);
                    return Line::Applied;
                }
                self.exists = true;
                let slot = self.volumes.entry(volume).or_insert(DiskState::Unknown);
                if let Some(d) = keys.get("disk") {
                    *slot = disk_state(d);
                }
            }
            "connection" => {
                if destroy {
                    self.peers.remove(&peer_key);
                    self.peer_devices.retain(|(p, _), _| *p != peer_key);
                    return Line::Applied;
                }
                self.exists = true;
                let peer = self.peers.entry(peer_key).or_default();
                if let Some(c) = keys.get("connection") {
                    peer.connection = Some((*c).to_string());
                }
                if let Some(r) = keys.get("role") {
                    peer.role = Role::parse(r);
                }
            }
            "peer-device" => {
                if destroy {
                    self.peer_devices.remove(&(peer_key, volume));
                    return Line::Applied;
                }
                self.exists = true;
                let pd = self.peer_devices.entry((peer_key, volume)).or_default();
                if let Some(r) = keys.get("replication") {
                    pd.replication = Some((*r).to_string());
                }
                if let Some(d) = keys.get("peer-disk") {
                    pd.disk = Some(disk_state(d));
                }
            }
            // DRBD 9 `path` objects and anything newer.
            _ => return Line::Ignored,
        }
        Line::Applied
    }

    pub fn state(&self) -> DrbdState {
        if !self.exists {
            return DrbdState::absent();
        }
        // Promotion needs every volume UpToDate, so the least usable one speaks for all.
        let disk = self
            .volumes
            .values()
            .copied()
            .min_by_key(|d| d.code())
            .unwrap_or(DiskState::Unknown);
        // With several peers (DRBD 9), a Primary one is what blocks our promotion: report it.
        let peer = self
            .peers
            .iter()
            .find(|(_, p)| p.role == Role::Primary)
            .or_else(|| self.peers.iter().next());
        let (connection, peer_role, peer_disk, replication) = match peer {
            None => (None, Role::Unknown, DiskState::Unknown, None),
            Some((key, p)) => {
                let devices: Vec<&PeerDevice> = self
                    .peer_devices
                    .iter()
                    .filter(|((k, _), _)| k == key)
                    .map(|(_, d)| d)
                    .collect();
                let peer_disk = devices
                    .iter()
                    .filter_map(|d| d.disk)
                    .min_by_key(|d| d.code())
                    .unwrap_or(DiskState::Unknown);
                let replication = devices.iter().find_map(|d| d.replication.clone());
                (p.connection.clone(), p.role, peer_disk, replication)
            }
        };
        DrbdState {
            exists: true,
            role: self.role,
            disk,
            connection,
            peer_role,
            peer_disk,
            replication,
        }
    }
}

/// Parses the output of `drbdsetup events2 --now RESOURCE` (or `--now all`, keeping only
/// `resource`). Only `exists -` means the resource is not up.
pub fn parse_events2_now(resource: &str, text: &str) -> Result<DrbdState, ParseError> {
    let mut ev = Events2::new(resource);
    let mut recognized = false;
    for line in text.lines() {
        match ev.apply(line) {
            Line::Unrecognized => {}
            Line::EndOfInitial => {
                recognized = true;
                // `--now` stops here; anything after belongs to another command.
                break;
            }
            Line::Applied | Line::Ignored => recognized = true,
        }
    }
    if !recognized {
        return Err(ParseError::NoEvents {
            first: first_line(text),
        });
    }
    if !ev.initial_done() {
        return Err(ParseError::Truncated);
    }
    Ok(ev.state())
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Removes ANSI colour sequences (`ESC [ ... letter`): `drbdadm status` colours its output when
/// stdout is a terminal, and a recorded or piped-through-a-pty output may carry them.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses plain `drbdadm status RESOURCE` output (8.4 via drbd-utils 9, and DRBD 9, with or
/// without `--verbose`, coloured or not). The fallback when events2 cannot be read.
///
/// Shape: the resource line at column 0 (`r0 role:Primary`), local volumes at indent 2
/// (`disk:UpToDate` or `volume:0 minor:0 disk:...`), one line per peer at indent 2 starting with
/// its connection name (`peer` on 8.4, the host name on 9) and peer volumes below it. `status`
/// leaves out `connection:Connected` and, on DRBD 9, `replication:Established`: absent means so.
pub fn parse_status(resource: &str, text: &str) -> Result<DrbdState, ParseError> {
    let clean = strip_ansi(text);
    let mut st = DrbdState::absent();
    let mut in_block = false;
    let mut found = false;
    // Whether indented lines below belong to a peer (true) or to a local volume (false).
    let mut under_peer = false;
    // Whether the peer above is the one reported (with several peers, only one is).
    let mut reported_peer = false;
    let mut volumes: Vec<DiskState> = Vec::new();
    let mut peer_disks: Vec<DiskState> = Vec::new();
    for raw in clean.lines() {
        if raw.trim().is_empty() {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        let mut tokens = raw.split_whitespace();
        if indent == 0 {
            if in_block {
                break;
            }
            if tokens.next() == Some(resource) {
                in_block = true;
                found = true;
                st.exists = true;
                for (k, v) in tokens.filter_map(|t| t.split_once(':')) {
                    if k == "role" {
                        st.role = Role::parse(v);
                    }
                }
            }
            continue;
        }
        if !in_block {
            continue;
        }
        if indent <= 3 {
            let first = tokens.clone().next().unwrap_or("");
            if first.contains(':') {
                under_peer = false;
                for (k, v) in tokens.filter_map(|t| t.split_once(':')) {
                    if k == "disk" {
                        volumes.push(disk_state(v));
                    }
                }
            } else {
                under_peer = true;
                tokens.next();
                // Report the first peer, or a Primary one (what blocks promotion) over it.
                let mut role = Role::Unknown;
                let mut connection = "Connected".to_string();
                for (k, v) in tokens.filter_map(|t| t.split_once(':')) {
                    match k {
                        "role" => role = Role::parse(v),
                        "connection" => connection = v.to_string(),
                        _ => {}
                    }
                }
                reported_peer =
                    st.connection.is_none() || (role == Role::Primary && st.peer_role != role);
                if reported_peer {
                    st.connection = Some(connection);
                    st.peer_role = role;
                    st.replication = None;
                    peer_disks.clear();
                }
            }
            continue;
        }
        if under_peer && reported_peer {
            for (k, v) in tokens.filter_map(|t| t.split_once(':')) {
                match k {
                    "replication" if st.replication.is_none() => {
                        st.replication = Some(v.to_string())
                    }
                    "peer-disk" => peer_disks.push(disk_state(v)),
                    _ => {}
                }
            }
        }
    }
    if !found {
        if clean.contains("No such resource") {
            return Ok(DrbdState::absent());
        }
        return Err(ParseError::NoStatus {
            resource: resource.to_string(),
            first: first_line(&clean),
        });
    }
    st.disk = volumes
        .into_iter()
        .min_by_key(|d| d.code())
        .unwrap_or(DiskState::Unknown);
    st.peer_disk = peer_disks
        .into_iter()
        .min_by_key(|d| d.code())
        .unwrap_or(DiskState::Unknown);
    if st.replication.is_none() && st.connection.as_deref() == Some("Connected") {
        st.replication = Some("Established".to_string());
    }
    Ok(st)
}
