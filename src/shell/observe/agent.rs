//! HAProxy's agent-check: HAProxy connects, may send its `agent-send` string, and reads one
//! line. We answer without waiting for that string, then drain what it sent (bounded): closing
//! with unread bytes would make the kernel reset the connection, and a reset can lose the
//! reply before HAProxy reads it.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::health::Verdict;
use super::{Shared, IO_TIMEOUT};

pub(super) async fn handle(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    // No snapshot (the loop is stuck or shutting down) is not a reason to keep traffic here.
    let line = match shared.snapshots.get().await {
        Some(st) => Verdict::of(&st.core).agent_line(),
        None => "down\n",
    };
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(line.as_bytes()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "agent-check write timed out"))??;
    stream.shutdown().await?;
    let mut sink = [0u8; 512];
    let drain = async {
        let mut total = 0usize;
        while total < 4096 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, drain).await;
    Ok(())
}
