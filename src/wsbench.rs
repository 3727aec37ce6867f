//! `fulgur bench ws`: the Binance-compatible WebSocket API measured end to end.
//!
//! A real `fulgur serve` (a child process of this binary, journaled with an fsync per
//! batch, on loopback) and, in this process, clients speaking the WebSocket API exactly as
//! a market maker's bot does (`session.logon` with an Ed25519 key, then `order.place` /
//! `order.cancel`), plus market-data subscribers on `<symbol>@depth@100ms`. Three phases:
//!
//! 1. throughput: `connections` clients, each keeping `window` requests in flight,
//!    alternately placing a resting limit order and cancelling it, for `seconds`;
//! 2. latency: the same clients sending at a fixed total `rate` (open loop: a request's
//!    round trip is measured from when it was due, so a stall counts against the server);
//! 3. during phase 2, `subscribers` depth-stream connections check that every update's `U`
//!    is the previous `u` + 1.
//!
//! Client and server share this machine's cores, so the figures are a floor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// What `fulgur bench ws` takes.
#[derive(Clone, Debug)]
pub struct WsBenchArgs {
    pub connections: usize,
    pub window: usize,
    pub seconds: u64,
    /// Requests per second in the latency phase, all connections together.
    pub rate: u64,
    pub subscribers: usize,
    /// The journal's fsync policy: `batch` (the default: an fsync per batch before any
    /// reply), `interval` (every 5 ms), `never`.
    pub fsync: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct WsReport {
    pub fsync: String,
    pub connections: usize,
    pub window: usize,
    /// Orders placed and acknowledged per second in the throughput phase.
    pub orders_per_s: f64,
    /// Requests (places and cancels) answered per second in the throughput phase.
    pub requests_per_s: f64,
    pub errors: u64,
    /// The first error answer, if any.
    pub first_error: Option<String>,
    pub latency_rate_per_s: u64,
    pub latency_requests: u64,
    pub latency_us_p50: f64,
    pub latency_us_p99: f64,
    pub latency_us_p999: f64,
    pub latency_us_max: f64,
    /// How late the client wrote requests after they were due (its timer, its CPU).
    pub client_lag_us_p50: f64,
    pub client_lag_us_p99: f64,
    pub subscribers: usize,
    pub subscribers_gap_free: usize,
    pub subscribers_disconnected: usize,
    pub depth_updates_received: u64,
}

struct ServerProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// A journaled server with limits high enough for a benchmark.
fn start_server(addr: SocketAddr, fsync: &str) -> Result<ServerProcess, String> {
    if !matches!(fsync, "batch" | "interval" | "never") {
        return Err(format!(
            "--fsync takes batch, interval or never, not '{fsync}'"
        ));
    }
    let dir = std::env::temp_dir().join(format!("fulgur-bench-ws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("fulgur.toml");
    std::fs::write(
        &config,
        format!("[journal]\nfsync = \"{fsync}\"\n[api]\nrequest_weight_per_minute = 1000000000\norders_per_10s = 1000000000\norders_per_day = 1000000000\n"),
    )
    .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Process::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let server = ServerProcess { child, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok()
            && server.dir.join("data").join("admin-token").exists()
        {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("the server did not start".into())
}

/// An Ed25519 key of `account`, registered in the server's key store; funds for it.
fn account_key(
    data: &Path,
    addr: SocketAddr,
    token: &str,
    account: u32,
) -> Result<(String, ed25519_dalek::SigningKey), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = hex::encode(signing.verifying_key().as_bytes());
    let created =
        fulgur_ws_api::auth::create_key(&data.join("api-keys.json"), account, Some(&public))?;
    for (asset, amount) in [("USDT", "100000000"), ("BTC", "1000")] {
        let r = crate::admin_client::deposit(addr, token, account, asset, amount)
            .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("deposit refused: {}", r.body));
        }
    }
    Ok((created.api_key, signing))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the WS API and logs on with the Ed25519 key.
async fn logon(
    addr: SocketAddr,
    api_key: &str,
    key: &ed25519_dalek::SigningKey,
) -> Result<Ws, String> {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let mut ws = connect(format!("ws://{addr}/ws-api/v3")).await?;
    let ts = fulgur_ws_api::now_ms();
    let payload = format!("apiKey={api_key}&timestamp={ts}");
    let sig =
        base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).to_bytes());
    let req = json!({"id": "logon", "method": "session.logon",
                     "params": {"apiKey": api_key, "timestamp": ts, "signature": sig}});
    ws.send(Message::text(req.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["id"] == "logon" {
                    return if v["status"] == 200 {
                        Ok(ws)
                    } else {
                        Err(format!("logon refused: {t}"))
                    };
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("logon: connection ended: {other:?}")),
        }
    }
}

/// One client's request sequence: place, cancel, place, cancel, ... The `n`th place is
/// a buy far below the market, so it rests and never trades. After `session.logon` a
/// request needs no signature, but still its `timestamp`, as on Binance.
///
/// The client formats and scans its JSON by hand: it shares the machine's cores with the
/// server, and a general JSON library on this side took half the CPU.
fn place(id: u64, n: u64) -> String {
    format!(
        r#"{{"id":{id},"method":"order.place","params":{{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","price":"{}","quantity":"0.001","newOrderRespType":"ACK","timestamp":{}}}}}"#,
        50_000 + (n % 1000),
        fulgur_ws_api::now_ms()
    )
}

fn cancel(id: u64, order_id: u64) -> String {
    format!(
        r#"{{"id":{id},"method":"order.cancel","params":{{"symbol":"BTCUSDT","orderId":{order_id},"timestamp":{}}}}}"#,
        fulgur_ws_api::now_ms()
    )
}

/// The unsigned integer after `"key":` in a JSON text.
fn field_u64(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// What the bench needs of an answer: its id, whether it is an error, and for an
/// `order.place` answer the new order's id (a cancel's answer has `origClientOrderId`).
struct Answer {
    id: Option<u64>,
    ok: bool,
    placed: Option<u64>,
}

fn answer(text: &str) -> Answer {
    let ok = text.contains("\"status\":200");
    let placed = if ok && !text.contains("origClientOrderId") {
        field_u64(text, "orderId")
    } else {
        None
    };
    Answer {
        id: field_u64(text, "id"),
        ok,
        placed,
    }
}

async fn connect(url: String) -> Result<Ws, String> {
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(fulgur_ws_api::WS_READ_BUFFER_BYTES);
    tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Subscribers per source address: the server admits 300 stream connections per IP per
/// 5 minutes, as Binance does, so a thousand subscribers come from several loopback
/// addresses (all of 127.0.0.0/8 is this machine), as they would from several machines.
const SUBSCRIBERS_PER_IP: usize = 200;

/// A WebSocket connection from the loopback address `127.0.1.<n>`.
async fn connect_from(n: u8, addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from(([127, 0, 1, n], 0)))
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(fulgur_ws_api::WS_READ_BUFFER_BYTES);
    tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}{path}"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(cfg),
    )
    .await
    .map(|(ws, _)| ws)
    .map_err(|e| e.to_string())
}

#[derive(Default)]
struct Counters {
    placed: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// Closed loop: `window` requests in flight; each place answered is followed by the
/// cancel of its order, each cancel by a new place.
async fn closed_loop(mut ws: Ws, window: usize, stop: Arc<AtomicBool>, c: Arc<Counters>) -> Ws {
    let mut next_id = 1u64;
    let mut in_flight = 0usize;
    for _ in 0..window {
        if ws
            .send(Message::text(place(next_id, next_id)))
            .await
            .is_err()
        {
            return ws;
        }
        next_id += 1;
        in_flight += 1;
    }
    while in_flight > 0 {
        let Some(Ok(first)) = ws.next().await else {
            break;
        };
        // This answer and every other already here, then one write for all that follow.
        let mut msg = Some(first);
        let mut queued = 0;
        while let Some(m) = msg.take() {
            if let Message::Text(t) = m {
                let a = answer(&t);
                in_flight -= 1;
                c.answered.fetch_add(1, Ordering::Relaxed);
                if !a.ok && c.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Ok(mut e) = c.first_error.lock() {
                        *e = Some(t.to_string());
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    let next = match a.placed {
                        Some(order_id) => {
                            c.placed.fetch_add(1, Ordering::Relaxed);
                            cancel(next_id, order_id)
                        }
                        None => place(next_id, next_id),
                    };
                    next_id += 1;
                    if ws.feed(Message::text(next)).await.is_err() {
                        return ws;
                    }
                    in_flight += 1;
                    queued += 1;
                }
            }
            msg = match futures_util::FutureExt::now_or_never(ws.next()) {
                Some(Some(Ok(m))) => Some(m),
                _ => None,
            };
        }
        if queued > 0 && ws.flush().await.is_err() {
            break;
        }
    }
    ws
}

/// Open loop at `per_s` requests a second. A round trip is timed from the moment its
/// request is written; how late the client's timer (1 ms granularity in tokio) wrote it
/// after it was due is recorded apart, in `lag`, so that the client's own lateness is
/// neither hidden nor charged to the server.
async fn open_loop(
    mut ws: Ws,
    per_s: f64,
    until: Instant,
    hist: Arc<std::sync::Mutex<Histogram<u64>>>,
    lag: Arc<std::sync::Mutex<Histogram<u64>>>,
) {
    let period = Duration::from_secs_f64(1.0 / per_s);
    let start = Instant::now();
    let mut due: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut next_id = 1u64;
    let mut open_order: Option<u64> = None;
    let mut local = Histogram::<u64>::new(3).expect("histogram");
    let mut local_lag = Histogram::<u64>::new(3).expect("histogram");
    loop {
        let when = start + period * (next_id as u32);
        if when >= until && due.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(when.into()), if when < until => {
                let text = match open_order.take() {
                    Some(o) => cancel(next_id, o),
                    None => place(next_id, next_id),
                };
                let sent = Instant::now();
                let _ = local_lag.record(sent.saturating_duration_since(when).as_micros() as u64);
                due.insert(next_id, sent);
                next_id += 1;
                if ws.send(Message::text(text)).await.is_err() { break; }
            }
            m = ws.next() => {
                let Some(Ok(Message::Text(t))) = m else {
                    if m.is_none() { break; }
                    continue;
                };
                let a = answer(&t);
                if let Some(at) = a.id.and_then(|id| due.remove(&id)) {
                    let _ = local.record(at.elapsed().as_micros() as u64);
                    if a.placed.is_some() {
                        open_order = a.placed;
                    }
                }
            }
        }
    }
    let _ = hist.lock().map(|mut h| h.add(&local));
    let _ = lag.lock().map(|mut h| h.add(&local_lag));
}

#[derive(Default)]
struct SubResult {
    gap_free: bool,
    disconnected: bool,
    updates: u64,
}

/// A depth subscriber: checks `U == previous u + 1` on every update until `until`.
async fn subscriber(n: usize, addr: SocketAddr, until: Instant) -> SubResult {
    let from = 1 + (n / SUBSCRIBERS_PER_IP) as u8;
    let Ok(mut ws) = connect_from(from, addr, "/ws/btcusdt@depth@100ms").await else {
        return SubResult {
            disconnected: true,
            ..Default::default()
        };
    };
    let mut r = SubResult {
        gap_free: true,
        ..Default::default()
    };
    let mut last_u: Option<u64> = None;
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        match m {
            Some(Ok(Message::Text(t))) => {
                let (Some(u0), Some(u1)) = (field_u64(&t, "U"), field_u64(&t, "u")) else {
                    continue;
                };
                if let Some(prev) = last_u {
                    if u0 != prev + 1 {
                        r.gap_free = false;
                    }
                }
                last_u = Some(u1);
                r.updates += 1;
            }
            Some(Ok(_)) => {}
            _ => {
                r.disconnected = true;
                break;
            }
        }
    }
    r
}

pub fn run(args: &WsBenchArgs) -> Result<WsReport, String> {
    let addr = free_addr()?;
    let server = start_server(addr, &args.fsync)?;
    let data = server.dir.join("data");
    let token = std::fs::read_to_string(data.join("admin-token"))
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    let mut keys = Vec::new();
    for i in 0..args.connections {
        keys.push(account_key(&data, addr, &token, 100 + i as u32)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async move {
        let mut conns = Vec::new();
        for (api_key, key) in &keys {
            conns.push(logon(addr, api_key, key).await?);
        }
        let mut report = WsReport {
            fsync: args.fsync.clone(),
            connections: args.connections,
            window: args.window,
            subscribers: args.subscribers,
            latency_rate_per_s: args.rate,
            ..WsReport::default()
        };

        // Phase 1: throughput.
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let t0 = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|ws| tokio::spawn(closed_loop(ws, args.window, stop.clone(), counters.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.map_err(|e| e.to_string())?);
        }
        report.orders_per_s = counters.placed.load(Ordering::Relaxed) as f64 / elapsed;
        report.requests_per_s = counters.answered.load(Ordering::Relaxed) as f64 / elapsed;
        report.errors = counters.errors.load(Ordering::Relaxed);
        report.first_error = counters.first_error.lock().ok().and_then(|e| e.clone());

        // Phases 2 and 3: latency at a fixed rate, with depth subscribers watching.
        let until = Instant::now() + Duration::from_secs(args.seconds + 1);
        let subs: Vec<_> = (0..args.subscribers)
            .map(|n| tokio::spawn(subscriber(n, addr, until + Duration::from_millis(500))))
            .collect();
        // Let the subscribers connect before the orders start.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hist = Arc::new(std::sync::Mutex::new(
            Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
        ));
        let lag = Arc::new(std::sync::Mutex::new(
            Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
        ));
        let per_conn = args.rate as f64 / conns.len().max(1) as f64;
        let lat: Vec<_> = conns
            .into_iter()
            .map(|ws| tokio::spawn(open_loop(ws, per_conn, until, hist.clone(), lag.clone())))
            .collect();
        for t in lat {
            t.await.map_err(|e| e.to_string())?;
        }
        for s in subs {
            let r = s.await.map_err(|e| e.to_string())?;
            report.subscribers_gap_free +=
                (r.gap_free && !r.disconnected && r.updates > 0) as usize;
            report.subscribers_disconnected += r.disconnected as usize;
            report.depth_updates_received += r.updates;
        }
        let h = hist.lock().map_err(|_| "histogram lock".to_string())?;
        report.latency_requests = h.len();
        report.latency_us_p50 = h.value_at_quantile(0.50) as f64;
        report.latency_us_p99 = h.value_at_quantile(0.99) as f64;
        report.latency_us_p999 = h.value_at_quantile(0.999) as f64;
        report.latency_us_max = h.max() as f64;
        let l = lag.lock().map_err(|_| "histogram lock".to_string())?;
        report.client_lag_us_p50 = l.value_at_quantile(0.50) as f64;
        report.client_lag_us_p99 = l.value_at_quantile(0.99) as f64;
        Ok::<_, String>(report)
    });
    drop(server);
    result
}

impl WsReport {
    pub fn print(&self) {
        println!(
            "bench ws: loopback, journaled (fsync {}), client and server on one machine",
            self.fsync
        );
        println!(
            "throughput: {} connections x {} in flight: {:.0} orders/s acknowledged ({:.0} requests/s incl. cancels), {} errors   [goal >= 200000 orders/s]",
            self.connections, self.window, self.orders_per_s, self.requests_per_s, self.errors
        );
        if let Some(e) = &self.first_error {
            println!("first error: {e}");
        }
        println!(
            "latency at {} requests/s (open loop, {} requests): p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us   [goal p99 < 1000 us]",
            self.latency_rate_per_s,
            self.latency_requests,
            self.latency_us_p50,
            self.latency_us_p99,
            self.latency_us_p999,
            self.latency_us_max
        );
        println!(
            "  (timed from each request's write; the client wrote them p50 {:.0} us / p99 {:.0} us after they were due)",
            self.client_lag_us_p50, self.client_lag_us_p99
        );
        println!(
            "depth subscribers: {} of {} gap-free, {} disconnected, {} updates received   [goal: all gap-free]",
            self.subscribers_gap_free,
            self.subscribers,
            self.subscribers_disconnected,
            self.depth_updates_received
        );
    }
}
