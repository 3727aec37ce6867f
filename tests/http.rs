//! The HTTP endpoints of `fulgur serve` answer as docs/api.md promises: health, metrics,
//! commands answered after durability, and clear errors for bad input that leave the
//! server serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
    data: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn start() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = std::env::temp_dir().join(format!("fulgur-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let child = Process::new(env!("CARGO_BIN_EXE_fulgur"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, addr, data };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = request(addr, "GET", "/health", b"") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("fulgur serve did not become healthy");
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

#[test]
fn endpoints_answer_as_documented() {
    let s = start();
    let (status, body) = request(s.addr, "GET", "/health", b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    // The demo setup of a new data directory: 22 commands.
    assert_eq!(v["last_seq"].as_u64(), Some(22));

    // A command is answered with its sequence number and events.
    let (status, body) = request(
        s.addr,
        "POST",
        "/fulgur/v1/commands",
        br#"{"Deposit":{"account":7,"asset":2,"amount":500}}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["seq"].as_u64(), Some(23));
    assert_eq!(
        v["events"][0]["BalanceChanged"]["free"].as_u64(),
        Some(500),
        "{body}"
    );

    // A refusal by the engine is an event of a journaled command, not an HTTP error.
    let (status, body) = request(
        s.addr,
        "POST",
        "/fulgur/v1/commands",
        br#"{"Deposit":{"account":7,"asset":99,"amount":500}}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("UnknownAsset"), "{body}");

    // Malformed input: -1100 naming what is wrong; nothing is journaled.
    for bad in [
        &b"{not json"[..],
        br#"{"Deposit":{"account":7}}"#,
        br#"{"Launch":{}}"#,
    ] {
        let (status, body) = request(s.addr, "POST", "/fulgur/v1/commands", bad).unwrap();
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"].as_i64(), Some(-1100), "{body}");
        assert!(
            v["msg"].as_str().unwrap().starts_with("Illegal command"),
            "{body}"
        );
    }
    let (status, _) = request(s.addr, "POST", "/fulgur/v1/commands", &vec![b' '; 100_000]).unwrap();
    assert_eq!(status, 413);

    // The server still serves, and nothing of the bad requests reached the journal.
    let (_, body) = request(s.addr, "GET", "/health", b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_seq"].as_u64(), Some(24));

    let (status, metrics) = request(s.addr, "GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    for name in [
        "fulgur_commands_total 2",
        "fulgur_last_seq 24",
        "fulgur_queue_depth 0",
        "fulgur_busy_rejections_total 0",
        "fulgur_journal_fsync_seconds_bucket{le=\"+Inf\"}",
        "fulgur_http_connections_total",
        "# TYPE fulgur_journal_fsync_seconds histogram",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}
