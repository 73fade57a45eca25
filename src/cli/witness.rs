//! `twinbeat witness`: run the lease arbiter on a third machine (systemd:
//! twinbeat-witness.service). Its config is a small file of its own (`witness::config`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::witness::{self, config::DEFAULT_PATH};

#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// The witness config (listen address, cluster id, the pair's node ids, keys, lease).
    #[arg(long, short, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Check the config and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &WitnessArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging();
    let cfg = match witness::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "twinbeat witness: {} is not valid; not started",
                args.config.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sock = match tokio::net::UdpSocket::bind(cfg.listen).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "twinbeat witness: cannot listen on {}: {e}; check that the address is configured on this host and the port is free",
                    cfg.listen
                );
                return Ok(ExitCode::from(1));
            }
        };
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        witness::server::serve(&cfg, sock, shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}
