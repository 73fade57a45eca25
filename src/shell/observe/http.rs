//! The smallest HTTP/1.x server that serves `GET /metrics` and `GET /health`: one request per
//! connection (`Connection: close`), the request head parsed by `httparse` from at most
//! `MAX_REQUEST` bytes read within `IO_TIMEOUT`. No bodies are read, no keep-alive.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::health::{describe, Verdict};
use super::render::{render, Extra};
use super::{Shared, IO_TIMEOUT, MAX_REQUEST};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a request head asks for, or why it cannot be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Need,
    Request { method: String, path: String },
    Bad(&'static str),
}

/// Parses a request head from `buf` (everything read so far).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Need,
        Ok(httparse::Status::Complete(_)) => Parsed::Request {
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or_default().to_string(),
        },
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad("too many headers"),
        Err(_) => Parsed::Bad("malformed request"),
    }
}

async fn read_head(stream: &mut TcpStream) -> Result<Parsed, u16> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let read = async {
        loop {
            if len == buf.len() {
                return Err(431);
            }
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return Err(0),
                Ok(n) => len += n,
            }
            match parse(&buf[..len]) {
                Parsed::Need => continue,
                done => return Ok(done),
            }
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(408),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "http write timed out"))?
}

pub(super) async fn handle(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let (method, path) = match read_head(&mut stream).await {
        Ok(Parsed::Request { method, path }) => (method, path),
        Ok(Parsed::Bad(why)) => {
            return respond(&mut stream, 400, TEXT, &format!("{why}\n"), false).await;
        }
        Ok(Parsed::Need) | Err(0) => return Ok(()),
        Err(code) => {
            let body = match code {
                408 => format!("no complete request within {} ms\n", IO_TIMEOUT.as_millis()),
                _ => format!("request head larger than {MAX_REQUEST} bytes\n"),
            };
            return respond(&mut stream, code, TEXT, &body, false).await;
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, TEXT, "only GET and HEAD\n", false).await;
    }
    // HAProxy and Prometheus may add a query string; it selects nothing here.
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => match shared.snapshots.get().await {
            Some(st) => {
                let (announce_frames, refresh_rounds) = crate::net::announce::sent_totals();
                let body = render(
                    &st,
                    &shared.recorder,
                    Extra {
                        announce_frames,
                        refresh_rounds,
                    },
                );
                respond(&mut stream, 200, OPENMETRICS, &body, head_only).await
            }
            None => {
                let body = "the daemon did not answer within 1 s (busy or shutting down)\n";
                respond(&mut stream, 503, TEXT, body, head_only).await
            }
        },
        "/health" => match shared.snapshots.get().await {
            Some(st) => {
                let v = Verdict::of(&st.core);
                let body = describe(&st.core, v);
                respond(&mut stream, v.http_status(), TEXT, &body, head_only).await
            }
            None => {
                let body = "no status from the daemon within 1 s: not serving\n";
                respond(&mut stream, 503, TEXT, body, head_only).await
            }
        },
        _ => {
            respond(
                &mut stream,
                404,
                TEXT,
                "try /metrics or /health\n",
                head_only,
            )
            .await
        }
    }
}
