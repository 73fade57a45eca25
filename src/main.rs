//! The `twinbeat` binary: parse the command line and hand over to `cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = twinbeat::cli::Cli::parse();
    match twinbeat::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("twinbeat: {e:#}");
            ExitCode::from(1)
        }
    }
}
