//! Crash test against the real binary: a client drives orders through `fulgur serve` over
//! HTTP while the server is killed with SIGKILL at random moments (at least 20 times) and
//! restarted. At the end:
//! - every acknowledged command is in the journal, at the sequence number it was
//!   acknowledged with, and replaying the journal from scratch gives exactly the events the
//!   client was sent;
//! - recovery (latest snapshot + journal) gives the same state hash as that replay;
//! - a final SIGTERM drains, snapshots and exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulgur_engine::flow::Rng;
use fulgur_engine::journal;
use fulgur_engine::{
    ClientOrderId, Command, EngineConfig, Exchange, OrderRef, OrderType, PlaceOrder, Quantity,
    Side, StpMode, TimeInForce,
};

const KILLS: usize = 22;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &Path, addr: SocketAddr) -> Child {
    let mut child = Process::new(env!("CARGO_BIN_EXE_fulgur"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fulgur serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(addr, "GET", "/health", "", "") {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("fulgur serve did not become healthy on {addr}");
}

/// A minimal HTTP/1.1 client (one request per connection): (status, body).
/// `token`: the data directory's admin token, which the operator endpoints want.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Fulgur-Admin-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {resp:?}")))?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// Commands of the demo market BTCUSDT (market 0; BTC asset 0, USDT asset 2) from a few
/// accounts: deposits, limit orders around 97,000 with client ids, cancels by client id.
fn next_command(rng: &mut Rng, n: u64) -> Command {
    let account = 10 + rng.below(6) as u32;
    match rng.below(10) {
        0 => Command::Deposit {
            account,
            asset: if rng.below(2) == 0 { 0 } else { 2 },
            amount: 1 << (30 + rng.below(8)),
        },
        1..=2 => Command::CancelOrder {
            account,
            market: 0,
            target: OrderRef::Client(
                ClientOrderId::new(&format!("c{}", rng.below(n.max(1)))).unwrap(),
            ),
        },
        _ => Command::PlaceOrder(PlaceOrder {
            account,
            market: 0,
            side: if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            },
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(100 + rng.below(900)),
            price: Some(9_690_000 + rng.below(20_000)),
            client_order_id: ClientOrderId::new(&format!("c{n}")).unwrap(),
            stp: StpMode::None,
        }),
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_command() {
    let data: PathBuf = std::env::temp_dir().join(format!("fulgur-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // (seq, events) of every acknowledged command.
    let acked: Arc<Mutex<Vec<(u64, serde_json::Value)>>> = Arc::default();
    let mut rng = Rng::new(0xC0FFEE);
    let mut sent = 0u64;
    for round in 0..=KILLS {
        let mut child = start(&data, addr);
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (acked, stop) = (acked.clone(), stop.clone());
            let mut rng = Rng::new(round as u64 * 7919 + 1);
            let first = sent;
            let token = std::fs::read_to_string(data.join("admin-token"))
                .expect("the server wrote its admin token");
            let token = token.trim().to_string();
            std::thread::spawn(move || {
                let mut n = first;
                while !stop.load(Ordering::Relaxed) {
                    let c = next_command(&mut rng, n);
                    n += 1;
                    let body = serde_json::to_string(&c).unwrap();
                    // Anything but a 200 (killed mid-request, refused while it dies) is
                    // not acknowledged.
                    if let Ok((200, reply)) =
                        http(addr, "POST", "/fulgur/v1/commands", &token, &body)
                    {
                        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
                        let seq = v["seq"].as_u64().unwrap();
                        acked.lock().unwrap().push((seq, v["events"].clone()));
                    }
                }
                n
            })
        };
        // Let it run a random while (more at the end, for a final clean stop).
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        if round < KILLS {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            stop.store(true, Ordering::Relaxed);
            sent = client.join().unwrap();
        } else {
            stop.store(true, Ordering::Relaxed);
            sent = client.join().unwrap();
            let status = Process::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(
                exit.success(),
                "SIGTERM must drain, snapshot and exit 0: {exit:?}"
            );
        }
    }
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    assert!(
        acked.len() > 100,
        "only {} commands were acknowledged",
        acked.len()
    );

    // Reference: the whole journal replayed from scratch.
    let mut reference = Exchange::new(EngineConfig::default());
    let mut by_seq = std::collections::HashMap::new();
    let mut out = Vec::new();
    let summary = journal::replay(data.join("journal"), 0, |c| {
        out.clear();
        reference.apply(&c, &mut out);
        by_seq.insert(c.seq, serde_json::to_value(&out).unwrap());
    })
    .unwrap();
    for (seq, events) in &acked {
        let replayed = by_seq.get(seq).unwrap_or_else(|| {
            panic!("acknowledged seq {seq} is not in the journal ({summary:?})")
        });
        assert_eq!(
            replayed, events,
            "seq {seq}: the journal replays other events than were acknowledged"
        );
    }
    let traded = acked
        .iter()
        .filter(|(_, e)| e.to_string().contains("\"Trade\""))
        .count();
    assert!(traded > 0, "the flow must trade");
    eprintln!(
        "{KILLS} kills: {} commands acknowledged ({traded} with trades), journal holds {} after replay",
        acked.len(),
        summary.replayed
    );

    // Recovery from the latest snapshot + journal gives the reference state.
    let out = Process::new(env!("CARGO_BIN_EXE_fulgur"))
        .args(["snapshot", "create", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("state hash {:016x}", reference.state_hash());
    assert!(
        text.contains(&want),
        "recovered state differs from the replay: {text} (want {want})"
    );
    std::fs::remove_dir_all(&data).unwrap();
}
