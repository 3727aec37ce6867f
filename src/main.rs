//! `fulgur`: the exchange binary. `fulgur --help` is the manual.

use clap::{Args, Parser, Subcommand};
use fulgur::{alloc, bench, demo, flows, pipebench};
use fulgur_engine::journal::FsyncPolicy;

#[global_allocator]
static GLOBAL: alloc::CountingMimalloc = alloc::CountingMimalloc;

/// Fulgur: a deterministic in-memory exchange engine for stablecoin, crypto and tokenized
/// real-world-asset pairs.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the exchange: recover the data directory (snapshot + journal), then serve HTTP on
    /// --listen until SIGTERM (stop accepting, drain, snapshot, exit 0). A new data
    /// directory starts with the demo assets and markets.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// `serve` plus a built-in flow (a market maker and a taker on every demo market:
    /// BTCUSDT, ETHUSDT, USDCUSDT and the RWA pair TBILLUSDC), so the books are live at once,
    /// and the trading page at http://<listen>/ trading as a funded web account. Writes the
    /// demo accounts' credentials (maker, taker, web) to <data dir>/demo-credentials.json.
    Demo {
        #[command(flatten)]
        server: ServerArgs,
        /// Stop (as on SIGTERM) after this many seconds (default: run until stopped).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Measure the engine on replayed order flow.
    Bench {
        #[command(subcommand)]
        kind: BenchCmd,
    },
    /// Order-flow files.
    Flow {
        #[command(subcommand)]
        kind: FlowCmd,
    },
    /// The journal of a data directory.
    Journal {
        #[command(subcommand)]
        kind: JournalCmd,
    },
    /// Snapshots of a data directory.
    Snapshot {
        #[command(subcommand)]
        kind: SnapshotCmd,
    },
    /// API keys of the Binance-compatible API, kept in <data dir>/api-keys.json.
    Keys {
        #[command(subcommand)]
        kind: KeysCmd,
    },
    /// Operator actions on a running server, authorized by the token in <data dir>/admin-token.
    Admin {
        #[command(subcommand)]
        kind: AdminCmd,
    },
    /// The custody service (on-chain bitcoin) of a running server, and offline PSBT signing.
    Custody {
        #[command(subcommand)]
        kind: CustodyCmd,
    },
    /// The Lightning node of a running server (`[lightning]`): status, funding, channels.
    Lightning {
        #[command(subcommand)]
        kind: LightningCmd,
    },
    /// Settlement epochs of a running server: what each epoch netted and paid.
    Settlement {
        #[command(subcommand)]
        kind: SettlementCmd,
    },
}

#[derive(Subcommand)]
enum LightningCmd {
    /// The node id, listening addresses, balances, channels (with each one's next HTLC
    /// limit), the epoch cursor, payouts in flight and the last settlement error.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A new on-chain address of the node's wallet (fund it to open channels).
    Address {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Connects to a peer.
    Connect {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        node_id: String,
        /// host:port
        #[arg(long)]
        addr: String,
    },
    /// Opens an unannounced channel to a peer (the exchange's side accepts HTLCs up to 100%
    /// of the channel in flight); --push-msat gives the peer a starting balance.
    OpenChannel {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        node_id: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        capacity_sat: u64,
        #[arg(long, default_value_t = 0)]
        push_msat: u64,
    },
}

#[derive(Subcommand)]
enum SettlementCmd {
    /// Epoch reports, newest first: the fills' Merkle root, every account's net, the
    /// payouts (parts, fees, failures).
    Report {
        #[command(flatten)]
        server: ServerArgs,
        /// One epoch.
        #[arg(long)]
        epoch: Option<u64>,
        /// How many epochs (without --epoch).
        #[arg(long, default_value_t = 10)]
        last: u64,
    },
}

#[derive(Subcommand)]
enum CustodyCmd {
    /// Wallet balances, chain height and the last chain error.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Sends the withdrawal batch now instead of at the end of its window.
    Batch {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Makes both proofs (reserves: a BIP-127-style proof per wallet; liabilities: a
    /// Merkle-sum tree over the BTC balances), verifies them, and writes them to
    /// <data dir>/custody/proofs/. The cold wallet is in the proof when two cold keys are
    /// given (an offline ceremony); otherwise its balance is listed as unproven.
    Proof {
        #[command(flatten)]
        server: ServerArgs,
        /// The message the proof commits to (a challenge from the auditor).
        #[arg(long, default_value = "Fulgur proof of reserves")]
        message: String,
        /// A cold signer's key file (give two).
        #[arg(long = "cold-key")]
        cold_keys: Vec<std::path::PathBuf>,
    },
    /// A PSBT spending from the cold wallet (2-of-3), printed as base64 for the signers.
    ColdPsbt {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        address: String,
        #[arg(long)]
        amount_sat: u64,
    },
    /// Finalises a signed PSBT (every input checked by libbitcoinconsensus) and broadcasts it.
    Broadcast {
        #[command(flatten)]
        server: ServerArgs,
        /// The PSBT, base64 (default: read from stdin).
        #[arg(long)]
        psbt: Option<String>,
    },
    /// PSBTs, offline.
    Psbt {
        #[command(subcommand)]
        kind: PsbtCmd,
    },
}

#[derive(Subcommand)]
enum PsbtCmd {
    /// Adds the signatures of one key (a BIP32 master key file, as `custody/cold-N.xprv`) to a
    /// base64 PSBT read from stdin (or --psbt); prints the PSBT. Needs no server and no
    /// network: an air-gapped signer runs just this.
    Sign {
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        psbt: Option<String>,
    },
}

fn read_psbt(arg: Option<String>) -> String {
    arg.unwrap_or_else(|| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .unwrap_or_else(|e| fail(&format!("stdin: {e}")));
        s.trim().to_string()
    })
}

/// `POST /fulgur/v1/admin/custody/<action>` to the running server; prints the answer.
fn custody_admin(server: &ServerArgs, action: &str, body: serde_json::Value) {
    operator(server, "custody", action, body)
}

/// `POST /fulgur/v1/admin/<area>/<action>` to the running server; prints the answer.
fn operator(server: &ServerArgs, area: &str, action: &str, body: serde_json::Value) {
    let cfg = server.config();
    let token = fulgur_ws_api::auth::admin_token(&cfg.data_dir).unwrap_or_else(|e| fail(&e));
    match fulgur::admin_client::post_json(
        fulgur::admin_client::connect_addr(cfg.listen),
        &format!("/fulgur/v1/admin/{area}/{action}"),
        &[("X-Fulgur-Admin-Token", &token)],
        &body.to_string(),
        std::time::Duration::from_secs(120),
    ) {
        Ok(r) if r.is_success() => println!("{}", r.body.trim_end()),
        Ok(r) => fail(&format!(
            "the server answered {}: {}",
            r.status,
            r.body.trim_end()
        )),
        Err(e) => fail(&e.to_string()),
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Creates an API key for an account and adds it to <data dir>/api-keys.json (mode 0600;
    /// made, with the data directory, if missing). A running server accepts the new key
    /// within a second: no restart. Without --ed25519 the key is HMAC-SHA256: its secret key
    /// is printed here (stdout only) and kept in the keys file, which the server reads. With
    /// --ed25519 the client signs with its own Ed25519 private key and only the public key
    /// is kept. Only the data directory of the server options is used.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The account the key trades for.
        #[arg(long)]
        account: u32,
        /// An Ed25519 public key, as Binance takes it (PEM, -----BEGIN PUBLIC KEY-----), or
        /// base64 or hex of its 32 bytes; @FILE reads it from FILE.
        #[arg(long, value_name = "PUBKEY|@FILE")]
        ed25519: Option<String>,
        /// Print one JSON line, {"apiKey":..,"secretKey":..} (no secretKey for Ed25519).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Credits an account on the running server: POST http://<listen>/fulgur/v1/admin/deposit
    /// with the token of <data dir>/admin-token (made, mode 0600, if missing). Give the
    /// server's own --config, or its --listen and --data-dir. Prints the server's answer;
    /// exits 1 if it refuses or is not running.
    Deposit {
        #[command(flatten)]
        server: ServerArgs,
        /// The account to credit.
        #[arg(long)]
        account: u32,
        /// The asset's symbol, e.g. USDT.
        #[arg(long)]
        asset: String,
        /// The amount, a decimal number, e.g. 1000.5.
        #[arg(long, value_parser = decimal)]
        amount: String,
    },
}

fn decimal(s: &str) -> Result<String, String> {
    s.parse::<rust_decimal::Decimal>()
        .map(|_| s.to_string())
        .map_err(|_| format!("not a decimal number: '{s}'"))
}

/// `keys create`: the secret goes to stdout only, never to a log.
fn keys_create(server: &ServerArgs, account: u32, ed25519: Option<&str>, json: bool) {
    let data_dir = server.config().data_dir;
    let public_key = ed25519.map(|v| match v.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("{file}: {e}")))
        }
        None => v.to_string(),
    });
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    let path = data_dir.join("api-keys.json");
    let created = fulgur_ws_api::auth::create_key(&path, account, public_key.as_deref())
        .unwrap_or_else(|e| fail(&e));
    if json {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            api_key: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            secret_key: Option<&'a str>,
        }
        let out = Out {
            api_key: &created.api_key,
            secret_key: created.secret_key.as_deref(),
        };
        println!(
            "{}",
            serde_json::to_string(&out).expect("strings serialize")
        );
        return;
    }
    println!("API key:    {}", created.api_key);
    match &created.secret_key {
        Some(secret) => {
            println!("Secret key: {secret}");
            println!("Account {account}, HMAC-SHA256. Keep the secret key safe.");
        }
        None => println!(
            "Account {account}, Ed25519: sign requests with the private key of the public key given."
        ),
    }
    println!(
        "Saved in {}; a running server accepts it within a second, without a restart.",
        path.display()
    );
}

fn admin_deposit(server: &ServerArgs, account: u32, asset: &str, amount: &str) {
    let cfg = server.config();
    if !cfg.data_dir.is_dir() {
        fail(&format!(
            "{}: no such data directory; give the server's --data-dir or --config",
            cfg.data_dir.display()
        ));
    }
    let token = fulgur_ws_api::auth::admin_token(&cfg.data_dir).unwrap_or_else(|e| fail(&e));
    match fulgur::admin_client::deposit(cfg.listen, &token, account, asset, amount) {
        Ok(r) if r.is_success() => println!("{}", r.body.trim_end()),
        Ok(r) => fail(&format!(
            "the server answered {}: {}",
            r.status,
            r.body.trim_end()
        )),
        Err(e) => fail(&e.to_string()),
    }
}

#[derive(Subcommand)]
enum JournalCmd {
    /// Reads and checks every record (CRC, sequence) without changing anything; exits 1 on
    /// corruption, naming the segment and offset, and reports a torn tail.
    Verify {
        /// The data directory (its journal/ folder is read).
        #[arg(long, default_value = "./data")]
        data_dir: std::path::PathBuf,
    },
    /// Prints the records: segment, offset, seq, time, command.
    Inspect {
        #[arg(long, default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// Only records with a sequence number above this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Recovers the state of a data directory (latest snapshot + journal; a torn journal
    /// tail is cut) and writes a new snapshot of it. Not while a server uses the directory.
    Create {
        #[arg(long, default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// Snapshots kept; older ones are deleted.
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// A TOML config file (docs/config.md); without one, the embedded defaults.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Listen address (overrides the config).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the config).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

impl ServerArgs {
    fn config(&self) -> fulgur::config::Config {
        let mut cfg = match &self.config {
            Some(p) => fulgur::config::Config::load(p).unwrap_or_else(|e| fail(&e)),
            None => fulgur::config::Config::default(),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        cfg
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[derive(Args)]
struct FlowArgs {
    /// The flow: KIND or KIND:PATH. lobster and bitfinex read the real files in
    /// ../shared/orderflow/ unless a PATH is given; liquibook (generated: --orders, --seed,
    /// --accounts);
    /// synthetic (generated: --orders commands after filling --book orders in each of
    /// --markets markets, --accounts, --seed); native:FILE.fcmd (see `fulgur flow convert`).
    #[arg(long, default_value = "liquibook")]
    flow: String,
    /// Orders (liquibook) or commands after the fill (synthetic) of a generated flow.
    #[arg(long, default_value_t = 1_000_000)]
    orders: usize,
    /// Markets of a synthetic flow.
    #[arg(long, default_value_t = 10)]
    markets: u32,
    /// Resting orders per market a synthetic flow keeps its book near.
    #[arg(long, default_value_t = 1_000)]
    book: usize,
    /// Seed of a generated flow.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accounts a generated flow spreads its orders over.
    #[arg(long, default_value_t = 1_000)]
    accounts: u32,
    /// Replays, each into fresh markets of the same exchange.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum FlowCmd {
    /// Write a flow as a native `.fcmd` file (fixed-size records: no parsing in timed loops).
    Convert {
        #[command(flatten)]
        flow: FlowArgs,
        /// The file to write.
        #[arg(long)]
        out: String,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The flow is built in memory first, then applied in a tight loop; prints the median
    /// commands/s of the replays.
    Throughput {
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Open loop: command i is due at t0 + i/rate; latency = completion - due time, so a
    /// stall counts against every command behind it. Percentiles overall and per kind.
    Latency {
        #[command(flatten)]
        flow: FlowArgs,
        /// Offered load, commands per second.
        #[arg(long, default_value_t = 1_000_000.0)]
        rate: f64,
    },
    /// Commands through a gateway queue, the journal and the engine thread to a reader (no
    /// network): throughput, latency from arrival to published events, the part the
    /// pipeline adds without the fsync wait, and fsync times on their own. The flow's
    /// first replay only (--repeat is ignored).
    Pipeline {
        #[command(flatten)]
        flow: FlowArgs,
        /// Offered load in commands per second; without it, a flood.
        #[arg(long)]
        rate: Option<f64>,
        /// batch (an fsync per batch), never, or a number of milliseconds between fsyncs.
        #[arg(long, default_value = "batch")]
        fsync: String,
        /// Journal directory (default: a new one under the system's temp dir, removed after).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// No journal at all: what the queues, threads and engine cost without the disk.
        #[arg(long)]
        no_journal: bool,
    },
    /// The Binance WebSocket API end to end: a journaled `fulgur serve` on loopback (a
    /// child process), clients logged on with Ed25519 keys placing and cancelling orders
    /// (closed loop for throughput, then open loop at --rate for round-trip latency), and
    /// --subscribers depth-stream connections checking every update follows the last.
    /// Settlement: netting one epoch of synthetic fills (on_trade for every fill, then
    /// close; the fills' Merkle root alone), then payouts per second over a real Lightning
    /// channel on regtest (a private bitcoind: --bitcoind or BITCOIND_EXE, as
    /// scripts/bitcoind.sh prints; without one that half is skipped).
    Settlement {
        #[arg(long, default_value_t = 100_000)]
        fills: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: u32,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Payouts in each payout phase (0: no payout phase).
        #[arg(long, default_value_t = 200)]
        payouts: usize,
        /// Payouts in flight at once in the pipelined phase.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long)]
        bitcoind: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    Ws {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Requests each connection keeps in flight in the throughput phase.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Length of each phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second, all connections together, in the latency phase.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// The server's journal fsync: batch (an fsync before each batch is answered),
        /// interval (every 5 ms; a crash may lose the last 5 ms of acknowledged orders) or
        /// never.
        #[arg(long, default_value = "batch")]
        fsync: String,
        #[arg(long)]
        json: bool,
    },
}

fn load(a: &FlowArgs) -> fulgur_engine::flow::Flow {
    let opts = flows::FlowOpts {
        orders: a.orders,
        seed: a.seed,
        accounts: a.accounts,
        markets: a.markets,
        book: a.book,
    };
    flows::load(&a.flow, &opts).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    })
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { server } => {
            init_logs();
            let cfg = server.config();
            if let Err(e) = fulgur::server::serve(cfg, demo::setup_commands(), None, None, |_| {}) {
                fail(&e);
            }
        }
        Cmd::Demo { server, seconds } => {
            init_logs();
            let cfg = server.config();
            let listen = cfg.listen;
            let run_for = seconds.map(std::time::Duration::from_secs);
            let (credentials, web_key) =
                demo::write_credentials(&cfg.data_dir).unwrap_or_else(|e| fail(&e));
            let result = fulgur::server::serve(
                cfg,
                demo::demo_commands(),
                run_for,
                Some(web_key),
                move |ex| {
                    tracing::info!(
                        "trading page on http://{listen}/; Binance-compatible API on \
                         http://{listen}/api/v3 (streams ws://{listen}/ws, WebSocket API \
                         ws://{listen}/ws-api/v3); demo accounts' API keys in {}",
                        credentials.display()
                    );
                    let ex = ex.clone();
                    std::thread::spawn(move || demo::run_flow(ex));
                },
            );
            if let Err(e) = result {
                fail(&e);
            }
        }
        Cmd::Journal {
            kind: JournalCmd::Verify { data_dir },
        } => {
            let dir = fulgur::recovery::journal_dir(&data_dir);
            match fulgur_engine::journal::verify(&dir) {
                Ok(s) => {
                    println!(
                        "{}: {} segments, {} records, seq {} to {}, {} bytes",
                        dir.display(),
                        s.segments,
                        s.records,
                        s.first_seq.map_or("-".into(), |x| x.to_string()),
                        s.last_seq.map_or("-".into(), |x| x.to_string()),
                        s.bytes
                    );
                    if let Some(t) = s.torn_tail {
                        println!(
                            "torn tail: {} at offset {} ({} bytes, {:?}); the next start cuts it",
                            t.segment.display(),
                            t.offset,
                            t.bytes,
                            t.defect
                        );
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Journal {
            kind:
                JournalCmd::Inspect {
                    data_dir,
                    after,
                    limit,
                },
        } => {
            let dir = fulgur::recovery::journal_dir(&data_dir);
            // Without --after, read from wherever the journal starts.
            let reader = if after == 0 {
                fulgur_engine::journal::JournalReader::open(&dir)
            } else {
                fulgur_engine::journal::JournalReader::open_after(&dir, after)
            };
            let reader = reader.unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1);
            });
            for entry in reader.take(limit) {
                match entry {
                    Ok(e) => println!(
                        "{} @{} seq {} ts {} {:?}",
                        e.segment.display(),
                        e.offset,
                        e.command.seq,
                        e.command.ts_ns,
                        e.command.command
                    ),
                    Err(e) => {
                        eprintln!("error: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        Cmd::Snapshot {
            kind: SnapshotCmd::Create { data_dir, keep },
        } => {
            let cfg = fulgur::config::Config::default();
            let _lock = fulgur::recovery::lock_data_dir(&data_dir).unwrap_or_else(|e| fail(&e));
            let recovered = fulgur::recovery::recover(
                &data_dir,
                cfg.engine.engine_config(),
                fulgur_engine::journal::JournalConfig::default(),
            );
            let (ex, seq, _journal, report) = recovered.unwrap_or_else(|e| {
                eprintln!("error: {}: {e}", data_dir.display());
                std::process::exit(1);
            });
            println!("recovered: {report}");
            let s = fulgur::recovery::FileSnapshotter { data_dir, keep };
            match s.write(&ex, seq) {
                Ok(path) => println!(
                    "wrote {} (seq {seq}, state hash {:016x})",
                    path.display(),
                    ex.state_hash()
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Keys {
            kind:
                KeysCmd::Create {
                    server,
                    account,
                    ed25519,
                    json,
                },
        } => keys_create(&server, account, ed25519.as_deref(), json),
        Cmd::Admin {
            kind:
                AdminCmd::Deposit {
                    server,
                    account,
                    asset,
                    amount,
                },
        } => admin_deposit(&server, account, &asset, &amount),
        Cmd::Lightning { kind } => match kind {
            LightningCmd::Status { server } => {
                operator(&server, "lightning", "status", serde_json::json!({}))
            }
            LightningCmd::Address { server } => {
                operator(&server, "lightning", "address", serde_json::json!({}))
            }
            LightningCmd::Connect {
                server,
                node_id,
                addr,
            } => operator(
                &server,
                "lightning",
                "connect",
                serde_json::json!({"node_id": node_id, "addr": addr}),
            ),
            LightningCmd::OpenChannel {
                server,
                node_id,
                addr,
                capacity_sat,
                push_msat,
            } => operator(
                &server,
                "lightning",
                "open-channel",
                serde_json::json!({"node_id": node_id, "addr": addr,
                                   "capacity_sat": capacity_sat, "push_msat": push_msat}),
            ),
        },
        Cmd::Settlement { kind } => match kind {
            SettlementCmd::Report {
                server,
                epoch,
                last,
            } => operator(
                &server,
                "lightning",
                "report",
                match epoch {
                    Some(e) => serde_json::json!({"epoch": e}),
                    None => serde_json::json!({"limit": last}),
                },
            ),
        },
        Cmd::Custody { kind } => match kind {
            CustodyCmd::Status { server } => {
                custody_admin(&server, "status", serde_json::json!({}))
            }
            CustodyCmd::Batch { server } => custody_admin(&server, "batch", serde_json::json!({})),
            CustodyCmd::Proof {
                server,
                message,
                cold_keys,
            } => {
                let keys: Vec<String> = cold_keys
                    .iter()
                    .map(|k| {
                        std::fs::canonicalize(k)
                            .unwrap_or_else(|e| fail(&format!("{}: {e}", k.display())))
                            .display()
                            .to_string()
                    })
                    .collect();
                custody_admin(
                    &server,
                    "proof",
                    serde_json::json!({"message": message, "cold_keys": keys}),
                )
            }
            CustodyCmd::ColdPsbt {
                server,
                address,
                amount_sat,
            } => custody_admin(
                &server,
                "cold-psbt",
                serde_json::json!({"address": address, "amount_sat": amount_sat}),
            ),
            CustodyCmd::Broadcast { server, psbt } => custody_admin(
                &server,
                "broadcast",
                serde_json::json!({"psbt": read_psbt(psbt)}),
            ),
            CustodyCmd::Psbt {
                kind: PsbtCmd::Sign { key, psbt },
            } => match fulgur_custody::service::sign_psbt_with_file(&read_psbt(psbt), &key) {
                Ok((p, n)) => {
                    eprintln!("signed {n} input(s)");
                    println!("{p}");
                }
                Err(e) => fail(&e),
            },
        },
        Cmd::Flow {
            kind: FlowCmd::Convert { flow, out },
        } => {
            let f = load(&flow);
            if let Err(e) = flows::convert(&f, &out) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            println!(
                "wrote {} commands of flow '{}' to {out}",
                f.commands.len(),
                f.name
            );
        }
        Cmd::Bench {
            kind:
                BenchCmd::Pipeline {
                    flow,
                    rate,
                    fsync,
                    dir,
                    no_journal,
                },
        } => {
            let policy = match fsync.as_str() {
                "batch" => FsyncPolicy::EveryBatch,
                "never" => FsyncPolicy::Never,
                ms => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => FsyncPolicy::EveryMillis(ms),
                    _ => {
                        eprintln!("error: --fsync takes batch, never or a number of milliseconds, not '{ms}'");
                        std::process::exit(2);
                    }
                },
            };
            let f = load(&flow);
            let temp = dir.is_none();
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("fulgur-bench-pipeline-{}", std::process::id()))
            });
            let report = pipebench::run(&f, rate, policy, &dir, !no_journal);
            if temp {
                let _ = std::fs::remove_dir_all(&dir);
            }
            match report {
                Ok(r) if flow.json => println!("{}", r.json()),
                Ok(r) => print!("{}", r.table()),
                Err(e) => {
                    eprintln!("error: {}: {e}", dir.display());
                    std::process::exit(1);
                }
            }
        }
        Cmd::Bench {
            kind:
                BenchCmd::Settlement {
                    fills,
                    accounts,
                    runs,
                    payouts,
                    window,
                    bitcoind,
                    json,
                },
        } => {
            let netting = fulgur::settlebench::netting(fills, accounts, runs.max(1));
            let exe = bitcoind.or_else(|| std::env::var_os("BITCOIND_EXE").map(Into::into));
            let payout = match (payouts, exe) {
                (0, _) => None,
                (_, None) => {
                    eprintln!("payouts: skipped (no bitcoind: give --bitcoind or BITCOIND_EXE; scripts/bitcoind.sh builds one)");
                    None
                }
                (n, Some(exe)) => Some(
                    fulgur::payoutbench::payouts(&exe, n, window.max(1))
                        .unwrap_or_else(|e| fail(&format!("payouts: {e}"))),
                ),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"netting": netting, "payouts": payout})
                );
            } else {
                println!("{netting}");
                if let Some(p) = payout {
                    println!("{p}");
                }
            }
        }
        Cmd::Bench {
            kind:
                BenchCmd::Ws {
                    connections,
                    window,
                    seconds,
                    rate,
                    subscribers,
                    fsync,
                    json,
                },
        } => {
            let args = fulgur::wsbench::WsBenchArgs {
                connections,
                window,
                seconds,
                rate,
                subscribers,
                fsync,
            };
            match fulgur::wsbench::run(&args) {
                Ok(r) if json => println!("{}", serde_json::to_string(&r).expect("report")),
                Ok(r) => r.print(),
                Err(e) => fail(&e),
            }
        }
        Cmd::Bench { kind } => {
            let (report, json) = match kind {
                BenchCmd::Throughput { flow } => {
                    (bench::throughput(&load(&flow), flow.repeat), flow.json)
                }
                BenchCmd::Latency { flow, rate } => {
                    (bench::latency(&load(&flow), flow.repeat, rate), flow.json)
                }
                BenchCmd::Pipeline { .. } | BenchCmd::Ws { .. } | BenchCmd::Settlement { .. } => {
                    unreachable!("handled above")
                }
            };
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
        }
    }
}
