//! Shared by the operator commands: finding the daemon's control socket and talking to it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{self, Config};
use crate::shell::control::{self, Request, Response};

#[derive(Debug, Args)]
pub struct Target {
    /// The daemon's control socket (default: `control-socket` from the config, else
    /// /run/twinbeat/control.sock).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// The config file naming the control socket.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl Target {
    pub fn socket(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        let file = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
        // Any node's view names the same socket path; `check` reports config problems.
        let node = config::hostname().ok();
        match Config::load(&file, node.as_deref()) {
            Ok(c) => c.control_socket,
            Err(_) => PathBuf::from(config::DEFAULT_CONTROL_SOCKET),
        }
    }
}

pub fn ask(target: &Target, req: Request, timeout: Duration) -> Result<Response, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(control::request(&target.socket(), req, timeout))
}
