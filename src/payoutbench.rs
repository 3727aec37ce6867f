//! The payout half of `fulgur bench settlement`: payouts per second over a real Lightning
//! channel on regtest. A private bitcoind (regtest, its own temporary directory and ports),
//! two in-process Lightning nodes (the exchange's and a user's, both `LightningNode`, over
//! loopback TCP), one unannounced channel; then payout parts as the settlement service
//! sends them (keysend, a derived preimage each), one at a time (each waits for its
//! success: latency) and then `window` at a time (throughput).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulgur_settlement::node::{LightningNode, NodeConfig};
use fulgur_settlement::{Destination, PartRequest, PartStatus, PayoutRail};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Serialize)]
pub struct PayoutReport {
    pub payouts: usize,
    pub amount_sat: u64,
    pub channel_sat: u64,
    /// One at a time: each part sent after the previous one succeeded.
    pub sequential_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    /// `window` parts in flight at once.
    pub window: usize,
    pub pipelined_per_sec: f64,
    /// Setting up: bitcoind, two nodes, funding, the channel.
    pub setup_secs: f64,
}

impl std::fmt::Display for PayoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "settlement payouts over one regtest channel ({} sat), {} payouts of {} sat each:",
            self.channel_sat, self.payouts, self.amount_sat
        )?;
        writeln!(
            f,
            "  one at a time: {:.1} payouts/s; latency p50 {:.2} ms, p99 {:.2} ms",
            self.sequential_per_sec, self.latency_ms_p50, self.latency_ms_p99
        )?;
        write!(
            f,
            "  {} in flight:   {:.1} payouts/s   (setup {:.1} s)",
            self.window, self.pipelined_per_sec, self.setup_secs
        )
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A regtest bitcoind in a temporary directory, killed on drop.
struct Bitcoind {
    child: Child,
    dir: PathBuf,
    rpc: std::net::SocketAddr,
}

const RPC_USER: &str = "fulgur";
const RPC_PASSWORD: &str = "bench";

impl Bitcoind {
    fn start(exe: &Path, dir: PathBuf) -> Result<Bitcoind, String> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let rpc: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let child = Command::new(exe)
            .arg("-regtest")
            .arg(format!("-datadir={}", dir.display()))
            .arg(format!("-rpcport={}", rpc.port()))
            .arg(format!("-port={}", free_port()?))
            .arg(format!("-rpcuser={RPC_USER}"))
            .arg(format!("-rpcpassword={RPC_PASSWORD}"))
            .args([
                "-listen=0",
                "-server=1",
                "-fallbackfee=0.0002",
                "-printtoconsole=0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let b = Bitcoind { child, dir, rpc };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.call("getblockchaininfo", json!([])).is_err() {
            if Instant::now() > deadline {
                return Err("bitcoind did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(b)
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        use base64::Engine;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{RPC_USER}:{RPC_PASSWORD}"));
        let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
        let r = crate::admin_client::post_json(
            self.rpc,
            "/",
            &[("Authorization", &format!("Basic {auth}"))],
            &body.to_string(),
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
        match &v["error"] {
            Value::Null => Ok(v["result"].clone()),
            e => Err(format!("{method}: {e}")),
        }
    }

    fn mine(&self, n: u64, address: &str) -> Result<(), String> {
        self.call("generatetoaddress", json!([n, address]))
            .map(|_| ())
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn node(b: &Bitcoind, dir: &Path, name: &str) -> Result<LightningNode, String> {
    LightningNode::start(&NodeConfig {
        data_dir: dir.join(name),
        network: fulgur_custody::bitcoin::Network::Regtest,
        listen: vec![format!("127.0.0.1:{}", free_port()?)],
        alias: Some(name.into()),
        rpc_host: "127.0.0.1".into(),
        rpc_port: b.rpc.port(),
        rpc_user: RPC_USER.into(),
        rpc_password: RPC_PASSWORD.into(),
    })
}

/// Drops the nodes' events (the bench reads payment states, not events).
fn drain(nodes: &[&LightningNode]) {
    for n in nodes {
        while n.next_event().is_some() {
            let _ = n.event_handled();
        }
    }
}

fn part(i: usize, amount_sat: u64, to: &Destination) -> PartRequest {
    let tag = format!("fulgur:bench:{i}:0");
    PartRequest {
        preimage: Sha256::digest(tag.as_bytes()).into(),
        tag,
        amount_msat: amount_sat * 1000,
        destination: to.clone(),
    }
}

fn settled(x: &LightningNode, p: &PartRequest) -> Result<bool, String> {
    match x.status(p) {
        PartStatus::Succeeded { .. } => Ok(true),
        PartStatus::Failed(e) => Err(format!("payout {} failed: {e}", p.tag)),
        _ => Ok(false),
    }
}

/// Runs the payout bench with the bitcoind at `exe`.
pub fn payouts(exe: &Path, count: usize, window: usize) -> Result<PayoutReport, String> {
    let setup = Instant::now();
    let dir = std::env::temp_dir().join(format!("fulgur-bench-payouts-{}", std::process::id()));
    let b = Bitcoind::start(exe, dir.join("bitcoind"))?;
    let x = node(&b, &dir, "exchange")?;
    let u = node(&b, &dir, "user")?;
    let result = (|| {
        // The user's node keeps an anchor reserve to accept the channel; the exchange's
        // coinbase matures after 100 blocks.
        b.mine(1, &u.new_onchain_address()?)?;
        b.mine(101, &x.new_onchain_address()?)?;
        wait("the nodes' funds", 60, || {
            let _ = x.sync_wallets();
            let _ = u.sync_wallets();
            x.onchain_balance_sat().1 > 10_000_000 && u.onchain_balance_sat().1 > 100_000
        })?;
        let channel_sat = 5_000_000;
        let addr = u.listen_addresses().first().cloned().ok_or("no address")?;
        x.open_channel(&u.node_id(), &addr, channel_sat, 0)?;
        wait("the funding transaction", 60, || {
            b.call("getrawmempool", json!([]))
                .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false)
        })?;
        b.mine(6, &x.new_onchain_address()?)?;
        wait("a usable channel", 60, || {
            let _ = x.sync_wallets();
            let _ = u.sync_wallets();
            drain(&[&x, &u]);
            x.channels().iter().any(|c| c.is_usable)
        })?;
        let setup_secs = setup.elapsed().as_secs_f64();
        let to = Destination::Node(u.node_id());
        let amount_sat = 1_000;
        let mut latencies = Vec::with_capacity(count);
        let t = Instant::now();
        for i in 0..count {
            let p = part(i, amount_sat, &to);
            let t0 = Instant::now();
            x.send(&p)?;
            while !settled(&x, &p)? {
                std::thread::sleep(Duration::from_micros(200));
            }
            latencies.push(t0.elapsed());
            drain(&[&x, &u]);
        }
        let sequential = t.elapsed();
        latencies.sort_unstable();
        let pct = |q: f64| {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
        };
        let t = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        for i in count..2 * count {
            while in_flight.len() >= window {
                let front: &PartRequest = in_flight.front().expect("non-empty");
                if settled(&x, front)? {
                    in_flight.pop_front();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            let p = part(i, amount_sat, &to);
            x.send(&p)?;
            in_flight.push_back(p);
            drain(&[&x, &u]);
        }
        for p in &in_flight {
            while !settled(&x, p)? {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let pipelined = t.elapsed();
        Ok(PayoutReport {
            payouts: count,
            amount_sat,
            channel_sat,
            sequential_per_sec: count as f64 / sequential.as_secs_f64(),
            latency_ms_p50: pct(0.5),
            latency_ms_p99: pct(0.99),
            window,
            pipelined_per_sec: count as f64 / pipelined.as_secs_f64(),
            setup_secs,
        })
    })();
    x.stop();
    u.stop();
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
